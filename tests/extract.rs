//! `mailark extract`: a Maildir++ tree a default Dovecot serves and mbsync reads as is
//! (a Courier account's included), damaged archives whose intact mail is all extracted,
//! a full disk that leaves no cut file behind, and the folder globs.

mod common;
mod support;

use common::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use support::dovecot::{chown_nobody, served_form, DovecotOptions};
use support::raw::{mutf7, quote};
use support::Dovecot;

/// A message unique to (folder, i), `pad` bytes of body.
fn message(folder: &str, i: usize, pad: usize) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.com\nSubject: {folder} {i}\nMessage-ID: <{i}.{}@x>\n\n",
        folder.len()
    )
    .into_bytes();
    // Lines that do not repeat, so the archive's zstd data spans many blocks.
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ folder.len() as u64;
    while m.len() < pad {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        m.extend_from_slice(format!("{folder} {i} {x:016x}\n").as_bytes());
    }
    m.extend_from_slice(b"end\n");
    m
}

fn set_mtime(p: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

/// A Dovecot LAYOUT=fs source: folder → messages with `:2,` infos; keywords `$Label1`
/// (a) and `Work` (b) in every folder; every file's mtime distinct.
fn source_tree(root: &Path, folders: &[(&str, usize)], pad: usize) -> Vec<(String, Vec<u8>)> {
    let infos = ["S", "Sa", "FS", "Rb", "", "DSab"];
    let mut all = Vec::new();
    for (fi, (folder, n)) in folders.iter().enumerate() {
        let msgs: Vec<(String, Vec<u8>)> = (0..*n)
            .map(|i| {
                (
                    format!(
                        "{}.M{i}.src:2,{}",
                        1_600_000_000 + i,
                        infos[i % infos.len()]
                    ),
                    message(folder, i, pad),
                )
            })
            .collect();
        let dir = root.join(folder);
        write_maildir_folder(&dir, &msgs);
        std::fs::write(dir.join("dovecot-keywords"), "0 $Label1\n1 Work\n").unwrap();
        for (i, (name, _)) in msgs.iter().enumerate() {
            set_mtime(
                &dir.join("cur").join(name),
                1_500_000_000 + (fi * 1000 + i) as u64 * 3601,
            );
        }
        all.extend(msgs.into_iter().map(|(_, b)| (folder.to_string(), b)));
    }
    all
}

fn export(src: &Path, ar: &Path) {
    run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
}

/// `UID FETCH 1:* (UID INTERNALDATE)` of an examined folder: uid → INTERNALDATE string.
fn internaldates(c: &mut support::raw::RawImap, mailbox: &str) -> BTreeMap<u32, String> {
    c.must(&format!("EXAMINE {}", quote(mailbox)));
    let text = c.must("UID FETCH 1:* (UID INTERNALDATE)").text();
    text.lines()
        .filter(|l| l.contains(" FETCH ("))
        .map(|l| {
            let uid = l.split("UID ").nth(1).unwrap();
            let uid: u32 = uid
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let date = l.split("INTERNALDATE \"").nth(1).unwrap();
            (uid, date.split('"').next().unwrap().to_string())
        })
        .collect()
}

/// Every message of the index is served in its folder byte-exact (Dovecot's CRLF form),
/// with its flags, keywords and INTERNALDATE.
fn check_served(
    c: &mut support::raw::RawImap,
    imap_name: &str,
    rows: &[&serde_json::Value],
    all: &[Vec<u8>],
) {
    let list = c.must("LIST \"\" \"*\"").text();
    assert!(
        list.contains(imap_name) || list.contains(&quote(imap_name)),
        "{imap_name} not listed: {list}"
    );
    let got = c.fetch_all(imap_name);
    let dates = internaldates(c, imap_name);
    assert_eq!(got.len(), rows.len(), "{imap_name}: message count");
    for w in rows {
        let size = w["size"].as_u64().unwrap();
        let sha = w["sha256"].as_str().unwrap();
        let file = all
            .iter()
            .find(|b| sha256_hex(b) == sha)
            .unwrap_or_else(|| panic!("{sha} is no source message"));
        assert_eq!(file.len() as u64, size);
        // Dovecot serves CRLF whatever the file holds; compare in that form.
        let g = got
            .iter()
            .find(|g| g.2 == served_form(file))
            .unwrap_or_else(|| panic!("{imap_name}: {sha} not served byte-exact"));
        for fl in w["flags"].as_array().unwrap() {
            let fl = fl.as_str().unwrap();
            assert!(
                g.1.contains(fl),
                "{imap_name}: flag {fl} missing in ({})",
                g.1
            );
        }
        let want =
            chrono::DateTime::parse_from_rfc3339(w["internaldate"].as_str().unwrap()).unwrap();
        let served = chrono::DateTime::parse_from_str(&dates[&g.0], "%d-%b-%Y %H:%M:%S %z")
            .unwrap_or_else(|e| panic!("{:?}: {e}", dates[&g.0]));
        assert_eq!(served, want, "{imap_name}: INTERNALDATE of UID {}", g.0);
    }
}

#[test]
fn maildir_is_maildirpp_served_by_a_default_dovecot() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let folders = [
        ("INBOX", 6),
        ("受信箱", 3),
        ("受信箱/取引先", 4),
        ("a.b", 3),
        ("Archive/2019", 2),
        ("with space", 2),
    ];
    let all: Vec<Vec<u8>> = source_tree(&src, &folders, 200)
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    std::fs::write(src.join("subscriptions"), "INBOX\n受信箱/取引先\na.b\n").unwrap();
    let ar = t.path().join("a.tar.zst");
    export(&src, &ar);
    let index = ls_json(&[&ar]);
    assert!(index
        .iter()
        .any(|m| m["flags"].as_array().unwrap().iter().any(|f| f == "Work")));

    let out = t.path().join("Maildir");
    let rep = json(&run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("maildir:{}", out.display()),
        "--json",
    ]));
    assert_eq!(rep["layout"], "maildir++");
    assert_eq!(rep["messages"], index.len() as u64);
    // The Maildir++ shape itself: INBOX at the root, dotted mUTF-7 folders beside it.
    let japanese = format!(".{}/cur", mutf7("受信箱"));
    let nested = format!(".{}.{}/cur", mutf7("受信箱"), mutf7("取引先"));
    for d in [
        "cur",
        &japanese,
        &nested,
        ".a\\2eb/cur",
        ".Archive.2019/cur",
        ".with space/cur",
    ] {
        assert!(out.join(d).is_dir(), "{d} missing");
    }
    assert!(out.join("dovecot-keywords").is_file());
    chown_nobody(&out);

    // A user whose mail is the extracted tree with nothing but `maildir:DIR`.
    let carol = carol_conf(t.path(), &out);
    let d = Dovecot::start_with(DovecotOptions {
        extra_conf: carol.clone(),
        ..Default::default()
    });
    let mut c = login_carol(&d);
    for (folder, _) in folders {
        let rows: Vec<&serde_json::Value> =
            index.iter().filter(|m| m["folder"] == folder).collect();
        // '.' cannot be a Maildir++ name's own character in a default Dovecot: the level
        // is listed as it is spelled on disk.
        let imap = if folder == "a.b" {
            "a\\2eb".to_string()
        } else {
            mutf7(folder)
        };
        check_served(&mut c, &imap, &rows, &all);
    }
    let subs = c.must("LSUB \"\" \"*\"").text();
    for s in ["INBOX", &mutf7("受信箱/取引先"), "a\\\\2eb"] {
        assert!(subs.contains(s), "{s} not subscribed: {subs}");
    }
    assert!(!subs.contains("with space"), "{subs}");
    c.logout();

    // With Dovecot's listescape plugin the same tree shows the name as it was.
    let d2 = Dovecot::start_with(DovecotOptions {
        extra_conf: format!("{carol}mail_plugins = $mail_plugins listescape\n"),
        ..Default::default()
    });
    let mut c = login_carol(&d2);
    let rows: Vec<&serde_json::Value> = index.iter().filter(|m| m["folder"] == "a.b").collect();
    check_served(&mut c, "a.b", &rows, &all);
}

/// Dovecot configuration for a user `carol` (password `carol-pw`) whose mail is `mail`
/// with nothing but `maildir:DIR`, through a passwd-file of its own (userdb_mail).
fn carol_conf(dir: &Path, mail: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let home = dir.join("carol-home");
    std::fs::create_dir_all(&home).unwrap();
    chown_nobody(&home);
    // The mail processes run as nobody and must pass through the temp dir.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let passwd = dir.join("carol-passwd");
    std::fs::write(
        &passwd,
        format!(
            "carol:{{PLAIN}}carol-pw::::::userdb_mail=maildir:{}\n",
            mail.display()
        ),
    )
    .unwrap();
    let p = passwd.display();
    format!(
        "passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {p}\n}}\n\
         userdb {{\n  driver = passwd-file\n  args = username_format=%u {p}\n  \
         default_fields = uid=nobody gid=nogroup home={}\n}}\n",
        home.display()
    )
}

fn login_carol(d: &Dovecot) -> support::raw::RawImap {
    let mut c = support::raw::RawImap::connect(d.imap_port);
    c.login("carol", "carol-pw");
    c
}

/// Rewrites an archive's tar: `edit` gets each member's path and data and returns the
/// data to keep (None drops the member). The trailer is not kept, so extract finds the
/// index by reading the archive, as it must for any damaged archive.
fn rewrite(ar: &Path, out: &Path, mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>) {
    let mut tar = Vec::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(ar).unwrap())
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    let mut a = tar::Archive::new(&tar[..]);
    let mut b = tar::Builder::new(Vec::new());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let header = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if let Some(d) = edit(&path, data) {
            let mut h = header;
            h.set_size(d.len() as u64);
            h.set_cksum();
            b.append(&h, &d[..]).unwrap();
        }
    }
    let tar = b.into_inner().unwrap();
    let mut e = zstd::stream::write::Encoder::new(std::fs::File::create(out).unwrap(), 3).unwrap();
    std::io::Write::write_all(&mut e, &tar).unwrap();
    e.finish().unwrap();
}

#[test]
fn damaged_and_missing_messages_are_listed_and_the_rest_extracted() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let all = source_tree(&src, &[("INBOX", 8), ("Work", 5)], 100);
    let ar = t.path().join("a.tar.zst");
    export(&src, &ar);
    let index = ls_json(&[&ar]);
    let member = |folder: &str, nth: usize| -> String {
        index
            .iter()
            .filter(|m| m["folder"] == folder)
            .nth(nth)
            .unwrap()["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // One message of INBOX early in the archive has a flipped byte; one of Work is gone.
    let (flipped, missing) = (member("INBOX", 1), member("Work", 2));
    let bad = t.path().join("bad.tar.zst");
    rewrite(&ar, &bad, |path, mut data| {
        if path == flipped {
            data[30] ^= 0x01;
        }
        (path != missing).then_some(data)
    });
    for target in ["maildir", "eml", "mbox"] {
        let out = t.path().join(format!("out-{target}"));
        let res = run(&[
            "extract",
            bad.to_str().unwrap(),
            "--to",
            &format!("{target}:{}", out.display()),
            "--json",
        ]);
        assert_eq!(res.status.code(), Some(1), "{target}: {}", stderr(&res));
        let rep = json(&res);
        assert_eq!(rep["messages"], all.len() as u64 - 2, "{target}: {rep}");
        assert_eq!(rep["failed"], 2, "{target}: {rep}");
        let un = rep["failures"].as_array().unwrap();
        assert_eq!(un.len(), 2, "{target}: {rep}");
        let find = |m: &str| {
            un.iter()
                .find(|u| u["id"].as_str().unwrap().contains(m))
                .unwrap_or_else(|| panic!("{m} not listed: {rep}"))
        };
        let f = find(&flipped);
        assert_eq!(f["folder"], "INBOX");
        assert!(f["reason"].as_str().unwrap().contains("SHA-256"), "{f}");
        assert_eq!(f["archive"], bad.to_str().unwrap());
        let m = find(&missing);
        assert_eq!(m["folder"], "Work");
        assert!(m["reason"].as_str().unwrap().contains("missing"), "{m}");
        // One stderr line each, naming archive, folder, message and why.
        let err = stderr(&res);
        for (who, folder) in [(&flipped, "INBOX"), (&missing, "Work")] {
            let line = err
                .lines()
                .find(|l| l.contains(who.as_str()))
                .unwrap_or_else(|| panic!("{who} not on stderr: {err}"));
            assert!(
                line.contains(bad.to_str().unwrap()) && line.contains(folder),
                "{line}"
            );
        }
        // Everything else is there, byte-exact.
        if target == "mbox" {
            continue;
        }
        let got: Vec<Vec<u8>> = read_tree(&out)
            .into_iter()
            .filter(|(p, _)| p.contains("cur/") || p.ends_with(".eml"))
            .map(|(_, b)| b)
            .collect();
        let want: Vec<&[u8]> = all
            .iter()
            .map(|(_, b)| b.as_slice())
            .filter(|b| {
                let sha = sha256_hex(b);
                index.iter().any(|m| {
                    m["sha256"] == sha.as_str() && m["path"] != flipped && m["path"] != missing
                })
            })
            .collect();
        assert_eq!(want.len(), all.len() - 2);
        let mut got_s: Vec<String> = got.iter().map(|b| sha256_hex(b)).collect();
        let mut want_s: Vec<String> = want.iter().map(|b| sha256_hex(b)).collect();
        got_s.sort();
        want_s.sort();
        assert_eq!(got_s, want_s, "{target}");
    }
    // Text mode says it too.
    let res = run(&[
        "extract",
        bad.to_str().unwrap(),
        "--to",
        &format!("eml:{}", t.path().join("text").display()),
    ]);
    assert_eq!(res.status.code(), Some(1));
    assert!(
        stdout(&res).contains("2 messages could not be read"),
        "{}",
        stdout(&res)
    );
}

/// Files under `dir` that are not whole copies of a wanted message, or that sit under a
/// temporary name.
fn debris(dir: &Path, want: &[String]) -> Vec<String> {
    read_tree(dir)
        .into_iter()
        .filter(|(p, b)| {
            let meta = p.ends_with("dovecot-keywords") || p.ends_with("subscriptions");
            p.contains("mailark-part")
                || p.split('/').any(|c| c == "tmp")
                || (!meta && !want.contains(&sha256_hex(b)))
        })
        .map(|(p, _)| p)
        .collect()
}

#[test]
fn full_disk_leaves_no_cut_file_and_a_rerun_completes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    // 40 messages of ~64 KiB: 2.5 MiB into a 1 MiB file system.
    let all = source_tree(&src, &[("INBOX", 30), ("Sub", 10)], 64 << 10);
    let want: Vec<String> = all.iter().map(|(_, b)| sha256_hex(b)).collect();
    let ar = t.path().join("a.tar.zst");
    export(&src, &ar);
    let fs = Tmpfs::mount(&t.path().join("small"), "1m");
    for target in ["maildir", "eml", "mbox"] {
        let out = fs.0.join(target);
        let to = format!("{target}:{}", out.display());
        let res = run(&["extract", ar.to_str().unwrap(), "--to", &to]);
        assert_eq!(res.status.code(), Some(2), "{target}: {}", stdout(&res));
        let err = stderr(&res);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{target}: {err}");
        assert!(lines[0].contains("No space left"), "{err}");
        assert!(lines[0].contains(out.to_str().unwrap()), "{err}");
        if target == "mbox" {
            // An mbox file is whole or absent.
            let files = read_tree(&out);
            assert!(
                files.is_empty(),
                "mbox debris: {:?}",
                files.iter().map(|f| &f.0).collect::<Vec<_>>()
            );
        } else {
            assert_eq!(debris(&out, &want), Vec::<String>::new(), "{target}");
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
    // A first, cut run, then more space: the rerun keeps what is there and completes.
    for target in ["maildir", "eml", "mbox"] {
        let out = fs.0.join(target);
        let to = format!("{target}:{}", out.display());
        fs.resize("1m");
        let first = run(&["extract", ar.to_str().unwrap(), "--to", &to, "--json"]);
        assert_eq!(first.status.code(), Some(2), "{target}");
        fs.resize("64m");
        let rep = json(&run_ok(&[
            "extract",
            ar.to_str().unwrap(),
            "--to",
            &to,
            "--json",
        ]));
        assert_eq!(
            rep["messages"].as_u64().unwrap() + rep["already_present"].as_u64().unwrap(),
            all.len() as u64,
            "{target}: {rep}"
        );
        // Once complete, a rerun finds everything there and writes nothing.
        let again = json(&run_ok(&[
            "extract",
            ar.to_str().unwrap(),
            "--to",
            &to,
            "--json",
        ]));
        assert_eq!(again["messages"], 0, "{target}: {again}");
        assert_eq!(
            again["already_present"],
            all.len() as u64,
            "{target}: {again}"
        );
        if target != "mbox" {
            assert!(
                rep["already_present"].as_u64().unwrap() > 0,
                "{target}: {rep}"
            );
            assert_eq!(debris(&out, &want), Vec::<String>::new(), "{target}");
            let n = read_tree(&out)
                .iter()
                .filter(|(p, _)| p.contains("cur/") || p.ends_with(".eml"))
                .count();
            assert_eq!(n, all.len(), "{target}");
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// A Courier-style account (`INBOX.` namespace, `.` separator) extracts as Courier's own
/// Maildir++ tree: `.Archive.2019`, not `.INBOX.Archive.2019`, and a default Dovecot
/// serves the folders under their names below the namespace.
#[test]
fn courier_namespace_is_not_a_maildirpp_level() {
    let t = tempfile::tempdir().unwrap();
    let src = Dovecot::start_with(DovecotOptions {
        separator: '.',
        prefix: "INBOX.".into(),
        special: vec![],
        ..Default::default()
    });
    let folders = [
        "INBOX",
        "INBOX.Archive",
        "INBOX.Archive.2019",
        "INBOX.送信済みメール",
    ];
    let mut c = src.raw("alice");
    for (i, f) in folders.iter().enumerate() {
        if *f != "INBOX" {
            c.must(&format!("CREATE {}", quote(&mutf7(f))));
        }
        let r = c.append(&mutf7(f), "\\Seen", None, &message(f, i, 100));
        assert!(r.ok(), "{f}: {}", r.status);
    }
    c.logout();
    let ar = t.path().join("courier.tar.zst");
    let (pw, ca) = (src.password_file("alice"), src.ca_file());
    run_ok(&[
        "export",
        &src.imaps_url("alice"),
        "-o",
        ar.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
    ]);
    let out = t.path().join("Maildir");
    run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("maildir:{}", out.display()),
    ]);
    let mut dirs: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    dirs.sort();
    let mut want = vec![
        ".Archive".to_string(),
        ".Archive.2019".to_string(),
        format!(".{}", mutf7("送信済みメール")),
    ];
    want.sort();
    assert_eq!(dirs, want);
    assert_eq!(read_tree(&out.join("cur")).len(), 1, "INBOX is the root");
    chown_nobody(&out);
    let d = Dovecot::start_with(DovecotOptions {
        extra_conf: carol_conf(t.path(), &out),
        ..Default::default()
    });
    let mut c = login_carol(&d);
    for (i, f) in folders.iter().enumerate() {
        let name = f.strip_prefix("INBOX.").unwrap_or(f).replace('.', "/");
        let got = c.fetch_all(&mutf7(&name));
        assert_eq!(got.len(), 1, "{name}");
        assert_eq!(got[0].2, served_form(&message(f, i, 100)), "{name}");
    }
}

/// `--folder` and `--exclude` are the globs of `export` (`*` also crosses levels).
#[test]
fn folder_and_exclude_globs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    source_tree(
        &src,
        &[
            ("INBOX", 1),
            ("Trash", 1),
            ("Trash/Old", 1),
            ("Work", 1),
            ("Work/Sub", 1),
        ],
        50,
    );
    let ar = t.path().join("a.tar.zst");
    export(&src, &ar);
    let folders_of = |n: &str, filter: &[&str]| -> Vec<String> {
        let out = t.path().join(n);
        let to = format!("eml:{}", out.display());
        let mut args = vec!["extract", ar.to_str().unwrap(), "--to", &to, "--json"];
        args.extend_from_slice(filter);
        let rep = json(&run_ok(&args));
        let mut dirs: Vec<String> = read_tree(&out)
            .into_iter()
            .map(|(p, _)| p.rsplit_once('/').unwrap().0.to_string())
            .collect();
        dirs.sort();
        assert_eq!(
            rep["folders"].as_array().unwrap().len(),
            dirs.len(),
            "{rep}"
        );
        assert_eq!(rep["messages"], dirs.len() as u64, "{rep}");
        dirs
    };
    assert_eq!(
        folders_of("a", &["--exclude", "Trash*"]),
        ["INBOX", "Work", "Work/Sub"]
    );
    assert_eq!(
        folders_of("b", &["--folder", "Work*", "--exclude", "*/Sub"]),
        ["Work"]
    );
    assert_eq!(
        folders_of("c", &["--folder", "*Old", "--folder", "INBOX"]),
        ["INBOX", "Trash/Old"]
    );
}

/// Lines of `out`'s stderr that warn of a pattern matching no folder.
fn unmatched_warnings(out: &std::process::Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.ends_with("matches no folder"))
        .map(str::to_string)
        .collect()
}

/// One dialect for export and extract (`?`, classes, case-sensitive), and a pattern
/// that selects nothing is one warning line naming it; the run goes on.
#[test]
fn patterns_that_match_nothing_are_warned_about() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    source_tree(
        &src,
        &[("INBOX", 1), ("Trash", 1), ("Work", 1), ("Work/Sub", 1)],
        50,
    );
    let ar = t.path().join("a.tar.zst");
    let from = format!("maildir:{}", src.display());
    let out = run_ok(&[
        "export",
        &from,
        "-o",
        ar.to_str().unwrap(),
        "--json",
        "--folder",
        "W?rk*",
        "--folder",
        "Nothing*",
        "--folder",
        "[ST]rash",
        "--exclude",
        "*/[!x]ub",
        "--exclude",
        "work",
    ]);
    let rep = json(&out);
    let names: Vec<&str> = rep["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["folder"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Trash", "Work"], "{rep}");
    assert_eq!(
        unmatched_warnings(&out),
        [
            "mailark: warning: --folder \"Nothing*\" matches no folder",
            "mailark: warning: --exclude \"work\" matches no folder"
        ],
        "{}",
        stderr(&out)
    );
    let to = format!("eml:{}", t.path().join("x").display());
    let out = run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &to,
        "--exclude",
        "INBOX",
    ]);
    assert_eq!(
        unmatched_warnings(&out),
        ["mailark: warning: --exclude \"INBOX\" matches no folder"]
    );
    // ls judges patterns against the folders too; one that names a folder lists quietly.
    let out = run_ok(&[
        "ls",
        ar.to_str().unwrap(),
        "--folder",
        "Gone*",
        "--folder",
        "Trash",
    ]);
    assert_eq!(
        unmatched_warnings(&out),
        ["mailark: warning: --folder \"Gone*\" matches no folder"]
    );
    assert!(stdout(&out).contains("Trash"), "{}", stdout(&out));
}

/// Compressed data damaged mid-archive: what comes before is extracted, the messages
/// the damage keeps out of reach are listed as not reached, exit 1.
#[test]
fn damaged_compressed_data_lists_what_was_not_reached() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let all = source_tree(&src, &[("INBOX", 40)], 32 << 10);
    let want: Vec<String> = all.iter().map(|(_, b)| sha256_hex(b)).collect();
    let ar = t.path().join("a.tar.zst");
    export(&src, &ar);
    let mut bytes = std::fs::read(&ar).unwrap();
    let at = bytes.len() * 2 / 3;
    for b in &mut bytes[at..at + 8] {
        *b ^= 0x5a;
    }
    let bad = t.path().join("bad.tar.zst");
    std::fs::write(&bad, &bytes).unwrap();
    let out = t.path().join("eml");
    let res = run(&[
        "extract",
        bad.to_str().unwrap(),
        "--to",
        &format!("eml:{}", out.display()),
        "--json",
    ]);
    assert_eq!(res.status.code(), Some(1), "{}", stderr(&res));
    let rep = json(&res);
    let un = rep["failures"].as_array().unwrap();
    assert_eq!(rep["failed"], un.len(), "{rep}");
    let written = rep["messages"].as_u64().unwrap();
    assert!(
        written > 0,
        "nothing before the damage was extracted: {rep}"
    );
    assert_eq!(written + un.len() as u64, all.len() as u64, "{rep}");
    assert!(
        un.iter()
            .any(|u| u["reason"].as_str().unwrap().contains("not reached")),
        "{rep}"
    );
    assert_eq!(debris(&out, &want), Vec::<String>::new());
    assert_eq!(read_tree(&out).len() as u64, written);
}

/// mbsync (`SubFolders Maildir++`) reads the extracted tree as is: pushed into an empty
/// IMAP account, every folder arrives under its name with its messages.
#[test]
fn mbsync_pushes_the_extracted_maildir_as_is() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let folders = [
        ("INBOX", 3),
        ("受信箱", 2),
        ("受信箱/取引先", 2),
        ("Archive/2019", 2),
    ];
    let all = source_tree(&src, &folders, 200);
    let ar = t.path().join("a.tar.zst");
    export(&src, &ar);
    let out = t.path().join("Maildir");
    run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("maildir:{}", out.display()),
    ]);
    let d = Dovecot::start_with(DovecotOptions {
        special: vec![],
        ..Default::default()
    });
    let conf = t.path().join("mbsyncrc");
    std::fs::write(
        &conf,
        format!(
            "IMAPAccount dst\nHost localhost\nPort {port}\nUser bob\nPass {pw}\n\
             SSLType IMAPS\nCertificateFile {ca}\n\n\
             IMAPStore far\nAccount dst\n\n\
             MaildirStore near\nInbox {dir}\nSubFolders Maildir++\n\n\
             Channel push\nFar :far:\nNear :near:\nPatterns *\nCreate Far\nSync Push\n\
             SyncState {state}/\n",
            port = d.imaps_port,
            pw = d.password("bob"),
            ca = d.ca_file().display(),
            dir = out.display(),
            state = t.path().display(),
        ),
    )
    .unwrap();
    let st = std::process::Command::new("mbsync")
        .arg("-c")
        .arg(&conf)
        .arg("push")
        .output()
        .expect("mbsync (Debian isync) must be installed: scripts/test.sh installs it");
    assert!(
        st.status.success(),
        "mbsync: {}{}",
        String::from_utf8_lossy(&st.stdout),
        String::from_utf8_lossy(&st.stderr)
    );
    let mut c = d.raw("bob");
    for (folder, n) in folders {
        let got = c.fetch_all(&mutf7(folder));
        assert_eq!(got.len(), n, "{folder}");
        for g in &got {
            // mbsync adds its own X-TUID header line to what it uploads.
            let text = String::from_utf8(g.2.clone()).unwrap();
            let body: String = text
                .split_inclusive("\r\n")
                .filter(|l| !l.starts_with("X-TUID: "))
                .collect();
            assert!(
                all.iter()
                    .any(|(f, b)| f == folder && served_form(b) == body.as_bytes()),
                "{folder}: a message not byte-exact: {text:?}"
            );
        }
    }
}
