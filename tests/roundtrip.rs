//! Local round trips with the team's fixtures: Maildir and mbox sources → archive
//! (both layouts) → ls / verify / extract, byte-exact, plus the plain-tools hand-off
//! (`tar --zstd -xf` and `sha256sum -c`).

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn shas(msgs: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut v: Vec<String> = msgs.iter().map(|(_, b)| sha256_hex(b)).collect();
    v.sort();
    v
}

/// A Dovecot LAYOUT=fs tree: INBOX with the fixtures (some flagged), a Japanese nested
/// folder and a folder whose name needs escaping.
fn fixture_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let fx = fixtures();
    let named: Vec<(String, Vec<u8>)> = fx
        .iter()
        .enumerate()
        .map(|(i, (_, b))| {
            let flags = match i % 3 {
                0 => "S",
                1 => "RSa",
                _ => "",
            };
            (
                format!("{}.M{i}.host:2,{flags}", 1_700_000_000 + i),
                b.clone(),
            )
        })
        .collect();
    write_maildir_folder(&root.join("INBOX"), &named);
    std::fs::write(root.join("INBOX/dovecot-keywords"), "0 $Label1\n").unwrap();
    write_maildir_folder(
        &root.join("日本語/サブ"),
        &[("1.x:2,S".into(), fx[7].1.clone())],
    );
    write_maildir_folder(&root.join(".hidden dir"), &[]);
    fx
}

#[test]
fn maildir_fixtures_round_trip_byte_exact() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let fx = fixture_tree(&src);
    let ar = t.path().join("a.tar.zst");
    let out = run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
        "--json",
    ]);
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["messages"], fx.len() as u64 + 1);

    let ls = ls_json(&[&ar]);
    assert_eq!(ls.len(), fx.len() + 1);
    let by_folder: BTreeMap<String, usize> = ls.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["folder"].as_str().unwrap().to_string())
            .or_default() += 1;
        m
    });
    assert_eq!(by_folder.get("INBOX"), Some(&fx.len()));
    assert_eq!(by_folder.get("日本語/サブ"), Some(&1));
    let inbox_shas: Vec<String> = {
        let mut v: Vec<String> = ls
            .iter()
            .filter(|r| r["folder"] == "INBOX")
            .map(|r| r["sha256"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(inbox_shas, shas(&fx));
    // Flags: letters and the dovecot-keywords table.
    let labelled = ls
        .iter()
        .filter(|r| {
            r["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "$Label1")
        })
        .count();
    assert_eq!(labelled, fx.len() / 3 + usize::from(fx.len() % 3 >= 2));
    assert!(ls
        .iter()
        .any(|r| r["flags"] == serde_json::json!(["\\Answered", "\\Seen", "$Label1"])));
    // Japanese subjects decoded in the index.
    let subjects: Vec<&str> = ls.iter().filter_map(|r| r["subject"].as_str()).collect();
    for want in [
        "会議のお知らせ",
        "生のJISの件名",
        "シフトJISの件名",
        "8ビット生UTF-8の件名",
        "EUC-JPの件名",
    ] {
        assert!(
            subjects.contains(&want),
            "subject {want} missing from {subjects:?}"
        );
    }
    let empty = ls
        .iter()
        .find(|r| r["size"] == 0)
        .expect("the empty message is archived");
    assert_eq!(empty["message_id"], serde_json::Value::Null);
    for r in &ls {
        for k in [
            "folder",
            "path",
            "size",
            "sha256",
            "flags",
            "internaldate",
            "message_id",
        ] {
            assert!(r.get(k).is_some(), "ls --json lacks {k}: {r}");
        }
    }
    // INTERNALDATE comes from the file mtime, which we did not set: it must still be a date.
    assert!(ls
        .iter()
        .all(|r| r["internaldate"].as_str().is_some_and(|d| d.len() >= 20)));

    run_ok(&["verify", ar.to_str().unwrap()]);

    // eml extraction gives every message back, byte for byte.
    let eml = t.path().join("eml");
    run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("eml:{}", eml.display()),
    ]);
    let got = read_tree(&eml);
    assert_eq!(got.len(), fx.len() + 1);
    let inbox: Vec<(String, Vec<u8>)> = got
        .into_iter()
        .filter(|(p, _)| p.starts_with("INBOX/"))
        .collect();
    assert_eq!(shas(&inbox), shas(&fx));

    // Plain tools: tar + sha256sum, and the index checksum with head | sha256sum.
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .args(["--zstd", "-xf"])
        .arg(&ar)
        .current_dir(&x)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&x)
        .status()
        .unwrap();
    assert!(st.success(), "sha256sum -c failed on the extracted archive");
    let sums = std::fs::read_to_string(x.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), fx.len() + 1);
    let index = std::fs::read(x.join("index.jsonl")).unwrap();
    let last_nl = index[..index.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap();
    let end: serde_json::Value = serde_json::from_slice(&index[last_nl + 1..]).unwrap();
    assert_eq!(end["type"], "end");
    assert_eq!(end["index_sha256"], sha256_hex(&index[..last_nl + 1]));
    // The extracted Maildir files carry INTERNALDATE as mtime.
    let sample = ls.iter().find(|r| r["folder"] == "INBOX").unwrap();
    let p = x.join(sample["path"].as_str().unwrap());
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    let secs = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let want = chrono::DateTime::parse_from_rfc3339(sample["internaldate"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(secs, want);
}

#[test]
fn mbox_layout_keeps_every_byte() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let fx = fixture_tree(&src);
    let ar = t.path().join("m.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
        "--layout",
        "mbox",
    ]);
    let out = run_ok(&["verify", ar.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["messages"], fx.len() as u64 + 1);
    assert_eq!(v["findings"].as_array().unwrap().len(), 0);
    let eml = t.path().join("eml");
    run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("eml:{}", eml.display()),
        "--folder",
        "INBOX",
    ]);
    let got = read_tree(&eml);
    assert_eq!(shas(&got), shas(&fx));
    // The mbox member itself is a real mboxrd file.
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    assert!(Command::new("tar")
        .args(["--zstd", "-xf"])
        .arg(&ar)
        .current_dir(&x)
        .status()
        .unwrap()
        .success());
    let mbox = std::fs::read(x.join("mbox/INBOX")).unwrap();
    assert!(mbox.starts_with(b"From MAILER-DAEMON "));
    assert!(mbox.windows(17).any(|w| w == b"\n>>From quoted on"));
}

#[test]
fn mbox_source_reads_what_extract_wrote() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let fx = fixture_tree(&src);
    let ar = t.path().join("a.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    let mb = t.path().join("mb");
    run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("mbox:{}", mb.display()),
    ]);
    assert!(mb.join("INBOX").is_file() && mb.join("日本語.sbd/サブ").is_file());
    let ar2 = t.path().join("b.tar.zst");
    run_ok(&[
        "export",
        &format!("mbox:{}", mb.display()),
        "-o",
        ar2.to_str().unwrap(),
    ]);
    let ls = ls_json(&[&ar2]);
    assert!(ls.iter().any(|r| r["folder"] == "日本語/サブ"));
    let got: Vec<String> = {
        let mut v: Vec<String> = ls
            .iter()
            .filter(|r| r["folder"] == "INBOX")
            .map(|r| r["sha256"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    // mbox cannot store a missing final newline: exactly those messages gain one LF.
    let mut want: Vec<String> = fx
        .iter()
        .map(|(_, b)| {
            if b.ends_with(b"\n") {
                sha256_hex(b)
            } else {
                let mut c = b.clone();
                c.push(b'\n');
                sha256_hex(&c)
            }
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    // Flags survive too (mbox extract writes none, so all come back unflagged) and the
    // envelope date is the INTERNALDATE.
    let a1 = ls_json(&[&ar]);
    let d1: Vec<&str> = a1
        .iter()
        .filter(|r| r["folder"] == "INBOX")
        .map(|r| &r["internaldate"].as_str().unwrap()[..19])
        .collect();
    let d2: Vec<&str> = ls
        .iter()
        .filter(|r| r["folder"] == "INBOX")
        .map(|r| &r["internaldate"].as_str().unwrap()[..19])
        .collect();
    assert_eq!(d1, d2);
}

#[test]
fn maildir_plus_plus_tree_with_keywords() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("Maildir");
    let fx = fixtures();
    write_maildir_folder(&root, &[("1.a:2,S".into(), fx[0].1.clone())]);
    write_maildir_folder(&root.join(".Sent"), &[("2.b:2,Sa".into(), fx[1].1.clone())]);
    std::fs::write(root.join(".Sent/dovecot-keywords"), "0 Important\n").unwrap();
    write_maildir_folder(
        &root.join(".Work.&ZeVnLIqe-"),
        &[("3.c".into(), fx[2].1.clone())],
    );
    // new/ counts as unseen whatever its name says.
    std::fs::write(root.join(".Sent/new/4.d:2,S"), &fx[3].1).unwrap();
    let ar = t.path().join("a.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", root.display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    let ls = ls_json(&[&ar]);
    let folders: std::collections::BTreeSet<&str> =
        ls.iter().map(|r| r["folder"].as_str().unwrap()).collect();
    assert_eq!(
        folders,
        ["INBOX", "Sent", "Work.日本語"].into_iter().collect()
    );
    let sent: Vec<_> = ls.iter().filter(|r| r["folder"] == "Sent").collect();
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .any(|r| r["flags"] == serde_json::json!(["\\Seen", "Important"])));
    assert!(sent.iter().any(|r| r["flags"] == serde_json::json!([])));
    // The folder records carry the delimiter and the guessed special-use role.
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    assert!(Command::new("tar")
        .args(["--zstd", "-xf"])
        .arg(&ar)
        .current_dir(&x)
        .status()
        .unwrap()
        .success());
    let index = std::fs::read_to_string(x.join("index.jsonl")).unwrap();
    let sent_rec: serde_json::Value = index
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["type"] == "folder" && r["name"] == "Sent")
        .unwrap();
    assert_eq!(sent_rec["special_use"], "\\Sent");
    assert_eq!(sent_rec["delimiter"], ".");
    assert_eq!(sent_rec["keywords"], serde_json::json!(["Important"]));
}

fn os(b: &[u8]) -> &std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b)
}

fn message(i: usize) -> (String, Vec<u8>) {
    (
        format!("{}.M{i}.host:2,S", 1_700_000_000 + i),
        format!("From: a@example.com\nSubject: m{i}\n\nbody {i}\n").into_bytes(),
    )
}

/// The folders of an archive's index: (raw name bytes, display name) → sorted SHA-256s.
fn folders_by_raw(ar: &Path) -> BTreeMap<Vec<u8>, (String, Vec<String>)> {
    let out = Command::new("tar")
        .args(["--zstd", "-xOf"])
        .arg(ar)
        .arg("index.jsonl")
        .output()
        .unwrap();
    let recs: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut by_name: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut map = BTreeMap::new();
    for f in recs.iter().filter(|r| r["type"] == "folder") {
        let raw = match f["raw_name_hex"].as_str() {
            Some(h) => hex::decode(h).unwrap(),
            None => f["raw_name"].as_str().unwrap().as_bytes().to_vec(),
        };
        // A LAYOUT=fs tree names levels with '/', Maildir++ with '.'.
        let raw: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'/' { b'.' } else { b })
            .collect();
        let name = f["name"].as_str().unwrap().to_string();
        assert!(
            by_name.insert(name.clone(), raw.clone()).is_none(),
            "{name} twice"
        );
        map.insert(raw, (name, Vec::new()));
    }
    for m in recs.iter().filter(|r| r["type"] == "message") {
        let raw = &by_name[m["folder"].as_str().unwrap()];
        map.get_mut(raw)
            .unwrap()
            .1
            .push(m["sha256"].as_str().unwrap().to_string());
    }
    for v in map.values_mut() {
        v.1.sort();
    }
    map
}

/// Folder names as old hosts wrote them: Latin-1 bytes, and names that decode to the
/// same string (Latin-1, UTF-8 and modified UTF-7 spellings of "Café"). Every folder
/// stays a folder of its own with all its mail, the raw bytes are kept, and extract
/// writes them back: exporting the extracted tree gives the same folders and mail.
#[test]
fn non_utf8_and_colliding_folder_names_stay_distinct() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let mut n = 0;
    let mut folder = |dir: &Path, count: usize| {
        let msgs: Vec<_> = (n..n + count).map(message).collect();
        n += count;
        write_maildir_folder(dir, &msgs);
    };
    folder(&src, 1);
    let names: [(&[u8], usize); 4] = [
        (b".Caf\xe9", 2),
        (".Café".as_bytes(), 3),
        (b".Caf&AOk-", 4),
        (b".Caf\xe9.Sub", 1),
    ];
    for (raw, count) in names {
        folder(&src.join(os(raw)), count);
    }
    let ar = t.path().join("a.tar.zst");
    let out = run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
        "--json",
    ]);
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["messages"], 11, "{rep:#}");
    let folders = rep["folders"].as_array().unwrap();
    assert_eq!(folders.len(), 5, "{rep:#}");
    for f in folders {
        assert_eq!(f["source_count"], f["archived"], "{f:#}");
    }
    let got = folders_by_raw(&ar);
    let raws: Vec<&[u8]> = got.keys().map(Vec::as_slice).collect();
    let mut want: Vec<&[u8]> = vec![b"INBOX"];
    want.extend(names.iter().map(|(r, _)| &r[1..]));
    want.sort();
    assert_eq!(raws, want);
    for (raw, count) in names {
        assert_eq!(got[&raw[1..]].1.len(), count, "{:?}", got[&raw[1..]]);
    }
    run_ok(&["verify", ar.to_str().unwrap()]);
    // The table says the same.
    let out = run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        t.path().join("b.tar.zst").to_str().unwrap(),
    ]);
    let table = stdout(&out);
    assert!(table.contains("(11 messages"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains("Caf")).count(),
        4,
        "{table}"
    );

    let x = t.path().join("x");
    run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("maildir-fs:{}", x.display()),
    ]);
    let cur = x.join(os(b"Caf\xe9")).join("cur");
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(&cur)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    files.sort();
    assert_eq!(files, [message(1).1, message(2).1]);
    let again = t.path().join("again.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", x.display()),
        "-o",
        again.to_str().unwrap(),
    ]);
    let back = folders_by_raw(&again);
    let latin1: &[u8] = b"Caf\xe9";
    assert_eq!(back[latin1], got[latin1]);
    assert_eq!(back[&b"Caf\xe9.Sub"[..]].1, got[&b"Caf\xe9.Sub"[..]].1);
    let shas = |m: &BTreeMap<Vec<u8>, (String, Vec<String>)>| {
        let mut v: Vec<String> = m.values().flat_map(|f| f.1.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(shas(&back), shas(&got));
    assert_eq!(back.len(), got.len());
    // Maildir++ holds modified UTF-7 names only: the index's distinct UTF-8 names are
    // written, and each folder keeps its own messages.
    let pp = t.path().join("pp");
    run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("maildir:{}", pp.display()),
    ]);
    let again = t.path().join("pp.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", pp.display()),
        "-o",
        again.to_str().unwrap(),
    ]);
    let back = folders_by_raw(&again);
    assert!(
        back.keys().all(|k| k.is_ascii()),
        "{:?}",
        back.keys()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>()
    );
    assert_eq!(back.len(), got.len());
    let per_folder = |m: &BTreeMap<Vec<u8>, (String, Vec<String>)>| {
        let mut v: Vec<Vec<String>> = m
            .values()
            .map(|f| {
                let mut s = f.1.clone();
                s.sort();
                s
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(per_folder(&back), per_folder(&got));
}

/// mbox files whose names are Latin-1 bytes or map to the same folder (`Inbox` and
/// `mbox` are both INBOX) are distinct folders, every message counted and archived.
#[test]
fn mbox_files_with_colliding_names_stay_distinct() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("mb");
    std::fs::create_dir_all(&src).unwrap();
    let mbox = |i: usize| format!("From a@b Sat Jan  1 00:00:00 2000\nSubject: {i}\n\nx{i}\n\n");
    let files: [(&[u8], usize); 5] = [
        (b"Inbox", 1),
        (b"mbox", 2),
        (b"Caf\xe9", 3),
        ("Café".as_bytes(), 4),
        (b"Caf\xe9.sbd/Sub", 5),
    ];
    std::fs::create_dir_all(src.join(os(b"Caf\xe9.sbd"))).unwrap();
    for (name, count) in files {
        let text: String = (0..count).map(mbox).collect();
        std::fs::write(src.join(os(name)), text).unwrap();
    }
    let ar = t.path().join("m.tar.zst");
    let out = run_ok(&[
        "export",
        &format!("mbox:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
        "--json",
    ]);
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["messages"], 15, "{rep:#}");
    assert_eq!(rep["folders"].as_array().unwrap().len(), 5, "{rep:#}");
    let got = folders_by_raw(&ar);
    // The raw name is the folder's, without Thunderbird's `.sbd`.
    for (name, count) in files {
        let raw: &[u8] = if name.ends_with(b"Sub") {
            b"Caf\xe9.Sub"
        } else {
            name
        };
        assert_eq!(got[raw].1.len(), count, "{got:?}");
    }
    run_ok(&["verify", ar.to_str().unwrap()]);
    // extract writes the Latin-1 names back, Thunderbird style.
    let x = t.path().join("x");
    run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("mbox:{}", x.display()),
    ]);
    assert!(x.join(os(b"Caf\xe9")).is_file());
    assert!(x.join(os(b"Caf\xe9.sbd/Sub")).is_file());
}
