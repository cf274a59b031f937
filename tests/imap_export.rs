//! `mailark export imaps://…` against a real Dovecot: every folder (nested, Japanese,
//! `&`, dotted, spaces, special-use, `\Noselect` parents), exact bytes, flags with
//! keywords and `\Deleted`, INTERNALDATEs in several zones, a source left unchanged, the
//! per-folder report, and a password that appears nowhere.

mod common;
mod imap_common;
mod support;
use support::dovecot::served_form;

use common::*;
use imap_common::*;
use support::raw::mutf7;
use support::{Dovecot, DovecotOptions};

const NAMES: &[&str] = &[
    "INBOX",
    "Sent",
    "Drafts",
    "Trash",
    "Junk",
    "受信箱/取引先",
    "a&b",
    "dotted.name",
    "with space",
    "Archive/2019/Q1",
];

fn seed(d: &Dovecot, sep: char) {
    let mut c = d.raw("alice");
    for n in &NAMES[5..] {
        let n = n.replace('/', &sep.to_string());
        if sep == '.' && n.contains("dotted") {
            continue;
        }
        c.must(&format!("CREATE \"{}\"", mutf7(&n)));
    }
    let zones = ["+0900", "-0500", "+0000", "+0530"];
    let flags = [
        "\\Seen $Label1",
        "\\Deleted",
        "\\Answered \\Flagged NonJunk",
        "\\Draft $Forwarded Work",
        "",
    ];
    let mut k = 0;
    for n in NAMES {
        if sep == '.' && n.contains("dotted") {
            continue;
        }
        let wire = mutf7(&n.replace('/', &sep.to_string()));
        for j in 0..3 {
            let date = format!("0{}-Mar-2020 1{j}:{k:02}:00 {}", 1 + j, zones[k % 4]);
            let m = msg(&format!("{n} {j}"), &format!("body {k} of {n}"));
            let r = c.append(&wire, flags[k % flags.len()], Some(&date), &m);
            assert!(r.ok(), "{n}: {}", r.status);
            k += 1;
        }
    }
    c.logout();
}

fn check_export(d: &Dovecot, sep: char) {
    seed(d, sep);
    let names: Vec<String> = NAMES
        .iter()
        .filter(|n| !(sep == '.' && n.contains("dotted")))
        .map(|n| n.replace('/', &sep.to_string()))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = server_state(d, "alice", &names);
    let disk = d.mail_snapshot("alice");
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("alice.tar.zst");
    let out = export(d, "alice", &ar, &["--json", "--jobs", "3"]);
    d.assert_mail_unchanged("alice", &disk, "export");
    assert!(
        out.status.success(),
        "export failed: {} {}",
        stdout(&out),
        stderr(&out)
    );
    let rep = json(&out);
    let index = ls_json(&[&ar]);
    let mut total = 0;
    for n in &names {
        let f = folder(&rep, n);
        let want = &before[*n];
        assert_eq!(f["source_count"], want.len(), "{n}: {f:#}");
        assert_eq!(f["archived"], want.len(), "{n}");
        assert_eq!(f["complete"], true, "{n}");
        assert_eq!(f["failed"], 0);
        assert!(f["failures"].as_array().unwrap().is_empty());
        assert!(f["uidvalidity"].as_u64().is_some());
        for m in want {
            let rec = index
                .iter()
                .find(|r| r["folder"] == *n && r["source"]["uid"] == m.uid)
                .unwrap_or_else(|| panic!("{n} UID {} not archived", m.uid));
            assert_eq!(rec["sha256"], sha256_hex(&m.body), "{n} UID {}", m.uid);
            assert_eq!(rec["size"], m.body.len());
            assert_eq!(rec["source_size"], m.body.len());
            let got: Vec<String> = rec["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(flag_set(&got), flag_set(&m.flags), "{n} UID {}", m.uid);
            // The same instant, whatever zone the server reports it in.
            let when = chrono::DateTime::parse_from_rfc3339(rec["internaldate"].as_str().unwrap())
                .unwrap()
                .timestamp();
            assert_eq!(
                when,
                internaldate_secs(&m.internaldate),
                "{n} UID {}",
                m.uid
            );
            total += 1;
        }
    }
    assert_eq!(total, names.len() * 3);
    assert_eq!(rep["messages"], total);
    // Keywords and \Deleted survived.
    assert!(index.iter().any(|r| r["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "\\Deleted")));
    assert!(index
        .iter()
        .any(|r| r["flags"].as_array().unwrap().iter().any(|f| f == "Work")));
    // Folder records: roles, delimiters and the \Noselect parents.
    let idx = archive_index(&ar);
    let rec = |n: &str| {
        idx.iter()
            .find(|r| r["type"] == "folder" && r["name"] == n)
            .unwrap_or_else(|| panic!("no folder record {n}"))
            .clone()
    };
    assert_eq!(rec("Sent")["special_use"], "\\Sent");
    assert_eq!(rec("Junk")["special_use"], "\\Junk");
    assert_eq!(rec("INBOX")["delimiter"], sep.to_string());
    let jp = format!("受信箱{sep}取引先");
    assert_eq!(rec(&jp)["raw_name"], mutf7(&jp));
    assert_eq!(rec("受信箱")["selectable"], false);
    assert_eq!(rec(&format!("Archive{sep}2019"))["selectable"], false);
    // Nothing changed on the server: EXAMINE and BODY.PEEK only.
    let after = server_state(d, "alice", &names);
    for n in &names {
        let (b, a) = (&before[*n], &after[*n]);
        assert_eq!(b.len(), a.len(), "{n}");
        for (x, y) in b.iter().zip(a) {
            assert_eq!(
                (x.uid, flag_set(&x.flags)),
                (y.uid, flag_set(&y.flags)),
                "{n}"
            );
        }
    }
    // The password is nowhere: output, report, archive.
    let pw = d.password("alice").as_bytes();
    assert!(!contains(&out.stdout, pw) && !contains(&out.stderr, pw));
    let bytes = archive_bytes(&ar);
    assert!(bytes.len() > 10_000);
    assert!(!contains(&bytes, pw));
    // The archive checks out by itself.
    run_ok(&["verify", ar.to_str().unwrap()]);
}

/// The raw index records of an archive (folder records included).
fn archive_index(ar: &std::path::Path) -> Vec<serde_json::Value> {
    let t = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(ar)
        .arg("-C")
        .arg(t.path())
        .arg("index.jsonl")
        .output()
        .unwrap();
    assert!(st.status.success() || t.path().join("index.jsonl").exists());
    std::fs::read_to_string(t.path().join("index.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn exports_every_folder_exactly() {
    let d = Dovecot::start();
    check_export(&d, '/');
}

#[test]
fn exports_with_dot_separator() {
    let d = Dovecot::start_with(DovecotOptions {
        separator: '.',
        ..Default::default()
    });
    check_export(&d, '.');
}

#[test]
fn interop_corpus_and_a_large_message_round_trip() {
    let d = Dovecot::start();
    let t = tempfile::tempdir().unwrap();
    let corpus = corpus_messages(t.path());
    // Dovecot alters a NUL byte and refuses an empty message (servers.md); the rest go
    // in as Maildir files, as a server would hold them.
    let mut seeded: Vec<(Vec<u8>, &str, i64)> = corpus
        .iter()
        .filter(|(_, b)| !b.is_empty() && !b.contains(&0))
        .enumerate()
        .map(|(i, (_, b))| {
            (
                b.clone(),
                if i % 3 == 0 { "S" } else { "" },
                1_500_000_000 + i as i64,
            )
        })
        .collect();
    // One message well over 20 MB.
    let mut big = b"From: big@example.com\nSubject: big\nMessage-ID: <big@test>\n\n".to_vec();
    while big.len() < 21 << 20 {
        big.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/\n",
        );
    }
    seeded.push((big, "", 1_600_000_000));
    d.seed_maildir("alice", "INBOX", &seeded);
    let ar = t.path().join("c.tar.zst");
    let out = export(&d, "alice", &ar, &["--json"]);
    assert!(out.status.success(), "{} {}", stdout(&out), stderr(&out));
    let rep = json(&out);
    assert_eq!(folder(&rep, "INBOX")["archived"], seeded.len());
    assert!(folder(&rep, "INBOX")["size_mismatches"]
        .as_array()
        .unwrap()
        .is_empty());
    // Extract to .eml and compare with what the server serves (its CRLF form).
    let eml = t.path().join("eml");
    run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("eml:{}", eml.display()),
    ]);
    let files: Vec<Vec<u8>> = read_tree(&eml).into_iter().map(|(_, b)| b).collect();
    assert_eq!(files.len(), seeded.len());
    let mut c = d.raw("alice");
    let served = c.fetch_all("INBOX");
    assert_eq!(served.len(), seeded.len());
    let mut have: std::collections::HashMap<String, usize> = Default::default();
    for f in &files {
        *have.entry(sha256_hex(f)).or_default() += 1;
    }
    for (uid, _, body) in &served {
        let k = sha256_hex(body);
        let n = have
            .get_mut(&k)
            .unwrap_or_else(|| panic!("UID {uid} not extracted byte-exact"));
        assert!(*n > 0, "UID {uid} extracted fewer times than served");
        *n -= 1;
    }
    let served_shas: std::collections::HashSet<String> =
        served.iter().map(|s| sha256_hex(&s.2)).collect();
    for (b, _, _) in &seeded {
        assert!(
            served_shas.contains(&sha256_hex(&served_form(b))),
            "a seeded message is not served as its CRLF form"
        );
    }
    assert!(served.iter().any(|s| s.2.len() > 20 << 20));
}

#[test]
fn starttls_wrong_password_and_untrusted_certificate() {
    let d = Dovecot::start();
    let mut c = d.raw("bob");
    assert!(c.append("INBOX", "", None, &msg("hello", "x")).ok());
    c.logout();
    let t = tempfile::tempdir().unwrap();
    let pw = d.password_file("bob");
    let ca = d.ca_file();
    // STARTTLS on imap://.
    let ar = t.path().join("s.tar.zst");
    let url = d.imap_url("bob");
    let out = run(&[
        "export",
        &url,
        "-o",
        ar.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ls_json(&[&ar]).len(), 1);
    assert!(
        d.log_when(|l| l.contains("TLS")).contains("TLS"),
        "Dovecot saw no TLS session"
    );

    // A wrong password: exit 2, one line naming the server, no archive, no secret.
    let bad = t.path().join("bad.pw");
    std::fs::write(&bad, "Wrong-Secret-42\n").unwrap();
    let ar = t.path().join("w.tar.zst");
    let url = d.imaps_url("bob");
    let out = run(&[
        "export",
        &url,
        "-o",
        ar.to_str().unwrap(),
        "--password-file",
        bad.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("127.0.0.1") && err.contains("refused"),
        "{err}"
    );
    assert!(!err.contains("Wrong-Secret-42") && !stdout(&out).contains("Wrong-Secret-42"));
    assert!(leftovers(t.path(), "w.tar.zst").is_empty());

    // An untrusted certificate (no --tls-ca-file).
    let ar = t.path().join("u.tar.zst");
    let out = run(&[
        "export",
        &url,
        "-o",
        ar.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
    assert!(leftovers(t.path(), "u.tar.zst").is_empty());
    // --insecure gets through, with a warning.
    let out = run(&[
        "export",
        &url,
        "-o",
        ar.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"));
}

/// A server that offers no STARTTLS (Dovecot always does, so a tiny scripted one): the
/// password must not be sent unless --allow-plaintext says so.
#[test]
fn plaintext_is_refused_without_allow_plaintext() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut rd = BufReader::new(s.try_clone().unwrap());
            let _ = s.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] plain only\r\n");
            let mut line = String::new();
            while rd.read_line(&mut line).unwrap_or(0) > 0 {
                seen2.lock().unwrap().push(line.clone());
                let tag = line.split(' ').next().unwrap_or("*").to_string();
                let reply = if line.contains("AUTHENTICATE") {
                    "+ \r\n".to_string()
                } else if !line.contains(' ') {
                    format!("{} NO [AUTHENTICATIONFAILED] nope\r\n", "A0001")
                } else {
                    format!("{tag} BAD unexpected\r\n")
                };
                let _ = s.write_all(reply.as_bytes());
                line.clear();
            }
        }
    });
    let t = tempfile::tempdir().unwrap();
    let pw = t.path().join("pw");
    std::fs::write(&pw, "Plain-Secret-7\n").unwrap();
    let ar = t.path().join("p.tar.zst");
    let url = format!("imap://alice@127.0.0.1:{port}");
    let out = run(&[
        "export",
        &url,
        "-o",
        ar.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--allow-plaintext"),
        "{}",
        stderr(&out)
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "sent before refusing: {:?}",
        seen.lock().unwrap()
    );
    assert!(leftovers(t.path(), "p.tar.zst").is_empty());
    // With the flag the credentials go out (and this server refuses them).
    let out = run(&[
        "export",
        &url,
        "-o",
        ar.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "--allow-plaintext",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let sent = seen.lock().unwrap().join("");
    assert!(sent.contains("AUTHENTICATE PLAIN"), "{sent}");
    assert!(!stderr(&out).contains("Plain-Secret-7"));
}

/// Dovecot logs what each session fetched; the counts are the server's, not ours.
fn log_opts() -> DovecotOptions {
    DovecotOptions {
        extra_conf: "imap_logout_format = in=%i out=%o bodies=%{fetch_body_count} bodybytes=%{fetch_body_bytes}\n".into(),
        ..Default::default()
    }
}

/// Sum of `bodies=` over the logout lines of sessions that ended after `from` bytes of
/// log, once every session that logged in since then has logged its end.
fn bodies_served(d: &Dovecot, from: usize) -> (u64, usize) {
    let log = d.log_when(|l| {
        let l = &l[from..];
        let ends = l.lines().filter(|l| l.contains("bodies=")).count();
        let logins = l
            .lines()
            .filter(|l| l.contains("imap-login") && l.contains("Login: user="))
            .count();
        ends >= 1 && ends >= logins
    });
    let mut n = 0;
    let mut sessions = 0;
    for l in log[from..].lines().filter(|l| l.contains("bodies=")) {
        sessions += 1;
        n += l
            .split("bodies=")
            .nth(1)
            .unwrap()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap();
    }
    (n, sessions)
}

#[test]
fn incremental_takes_only_new_mail() {
    let d = Dovecot::start_with(log_opts());
    let mut c = d.raw("alice");
    c.must("CREATE \"Work\"");
    for i in 0..5 {
        assert!(c
            .append("INBOX", "", None, &msg(&format!("old {i}"), "x"))
            .ok());
        assert!(c
            .append("Work", "\\Seen", None, &msg(&format!("work {i}"), "y"))
            .ok());
    }
    let t = tempfile::tempdir().unwrap();
    let full = t.path().join("full.tar.zst");
    let out = export(&d, "alice", &full, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["messages"], 10);

    // Nothing new: an empty delta, and not one message body read from the server.
    let mark = d.log().len();
    let d0 = t.path().join("d0.tar.zst");
    let full_s = full.to_str().unwrap();
    let out = export(&d, "alice", &d0, &["--json", "--since", full_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rep = json(&out);
    assert_eq!(rep["messages"], 0);
    assert_eq!(folder(&rep, "INBOX")["already_archived"], 5);
    assert_eq!(folder(&rep, "INBOX")["complete"], true);
    let (bodies, sessions) = bodies_served(&d, mark);
    assert!(sessions >= 1, "no logout line logged: {}", &d.log()[mark..]);
    assert_eq!(bodies, 0, "bodies were downloaded: {}", &d.log()[mark..]);

    // Three new messages: a delta with just those, naming its parent.
    let mut c = d.raw("alice");
    for i in 0..2 {
        assert!(c
            .append("INBOX", "$New", None, &msg(&format!("new {i}"), "z"))
            .ok());
    }
    assert!(c.append("Work", "", None, &msg("new work", "w")).ok());
    c.logout();
    let mark = d.log().len();
    let d1 = t.path().join("d1.tar.zst");
    let d0_s = d0.to_str().unwrap();
    let out = export(
        &d,
        "alice",
        &d1,
        &["--json", "--since", full_s, "--since", d0_s],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rep = json(&out);
    assert_eq!(rep["messages"], 3);
    assert_eq!(folder(&rep, "INBOX")["archived"], 2);
    assert_eq!(folder(&rep, "Work")["archived"], 1);
    assert_eq!(bodies_served(&d, mark).0, 3, "{}", &d.log()[mark..]);
    let subjects: Vec<String> = ls_json(&[&d1])
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_string())
        .collect();
    assert!(
        subjects.iter().all(|s| s.starts_with("new")),
        "{subjects:?}"
    );
    // The delta names the newest archive of the chain as its parent, and the chain
    // verifies as a whole.
    let d0_id = json(&run_ok(&["ls", d0_s, "--json"]))["messages"]
        .as_array()
        .map(|_| ())
        .is_some();
    assert!(d0_id);
    assert_eq!(
        rep["parent"]["archive_id"],
        archive_id(&d0),
        "parent should be d0: {rep:#}"
    );
    run_ok(&["verify", full_s, d0_s, d1.to_str().unwrap()]);
    assert_eq!(ls_json(&[&full, &d0, &d1]).len(), 13);
}

fn archive_id(p: &std::path::Path) -> String {
    let idx = std::process::Command::new("tar")
        .args(["--zstd", "-xOf"])
        .arg(p)
        .arg("index.jsonl")
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&idx.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    v["archive_id"].as_str().unwrap().to_string()
}

#[test]
fn changed_uidvalidity_matches_by_content() {
    let d = Dovecot::start();
    let mut c = d.raw("alice");
    c.must("CREATE \"Old\"");
    let (a, b) = (msg("first", "1"), msg("second", "2"));
    assert!(c.append("Old", "", None, &a).ok());
    assert!(c.append("Old", "", None, &b).ok());
    c.logout();
    let t = tempfile::tempdir().unwrap();
    let full = t.path().join("full.tar.zst");
    assert!(export(&d, "alice", &full, &[]).status.success());
    // The folder is recreated (a new UIDVALIDITY) with the same two and one new message.
    let mut c = d.raw("alice");
    c.must("DELETE \"Old\"");
    c.must("CREATE \"Old\"");
    assert!(c.append("Old", "", None, &b).ok());
    assert!(c.append("Old", "", None, &a).ok());
    assert!(c.append("Old", "", None, &msg("third", "3")).ok());
    c.logout();
    let delta = t.path().join("delta.tar.zst");
    let out = export(
        &d,
        "alice",
        &delta,
        &["--json", "--since", full.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rep = json(&out);
    let f = folder(&rep, "Old");
    assert_eq!(f["uidvalidity_changed"], true);
    assert_eq!(f["already_archived"], 2);
    assert_eq!(f["archived"], 1);
    assert_eq!(f["complete"], true);
    let recs = ls_json(&[&delta]);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["subject"], "third");
    // The human table says so too.
    let out = export(
        &d,
        "alice",
        &t.path().join("d2.tar.zst"),
        &["--since", full.to_str().unwrap()],
    );
    assert!(
        stdout(&out).contains("UIDVALIDITY changed"),
        "{}",
        stdout(&out)
    );
}

/// A message Dovecot cannot read (its file made unreadable for the mail process): Dovecot
/// answers its FETCH with `* BYE FETCH failed` and hangs up. The message is isolated,
/// reported with the server's words, exit 1, and every other message is still archived.
#[test]
fn an_unreadable_message_is_reported_and_the_rest_archived() {
    use std::os::unix::fs::PermissionsExt;
    let d = Dovecot::start();
    let msgs: Vec<(Vec<u8>, &str, i64)> = (0..6)
        .map(|i| {
            (
                format!("Subject: m{i}\n\nbody {i}\n").into_bytes(),
                "",
                1_600_000_000 + i,
            )
        })
        .collect();
    d.seed_maildir("alice", "INBOX", &msgs);
    let cur = d.maildir("alice").join("INBOX/cur");
    let mut files: Vec<_> = std::fs::read_dir(&cur)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let victim = files
        .iter()
        .find(|p| std::fs::read(p).unwrap().starts_with(b"Subject: m3"))
        .unwrap()
        .clone();
    // Let Dovecot index the folder first, then take the file away from it.
    let mut c = d.raw("alice");
    c.must("EXAMINE INBOX");
    c.logout();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o000)).unwrap();
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("a.tar.zst");
    let out = export(&d, "alice", &ar, &["--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    let rep = json(&out);
    let f = folder(&rep, "INBOX");
    assert_eq!(f["archived"], 5, "{f:#}");
    let sk = f["failures"].as_array().unwrap();
    assert_eq!(sk.len(), 1, "{f:#}");
    assert!(
        sk[0]["reason"].as_str().unwrap().contains("FETCH failed"),
        "{f:#}"
    );
    assert!(sk[0]["id"].as_str().unwrap().starts_with("UID "));
    assert_eq!(f["complete"], false);
    // The archive is still written, with every other message.
    let subjects: Vec<String> = ls_json(&[&ar])
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(subjects.len(), 5);
    assert!(!subjects.contains(&"m3".to_string()));
    // The human report names the folder and UID.
    let out = export(&d, "alice", &t.path().join("b.tar.zst"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("not archived: UID") && text.contains("PROBLEMS"),
        "{text}"
    );
}

#[test]
fn a_cut_connection_resumes_where_it_stopped() {
    let d = Dovecot::start();
    let msgs: Vec<(Vec<u8>, &str, i64)> = (0..300)
        .map(|i| {
            let mut m = format!("Subject: m{i}\nMessage-ID: <m{i}@t>\n\n").into_bytes();
            m.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, 4000));
            m.push(b'\n');
            (m, if i % 2 == 0 { "S" } else { "" }, 1_600_000_000 + i)
        })
        .collect();
    d.seed_maildir("alice", "INBOX", &msgs);
    let before = server_state(&d, "alice", &["INBOX"]);
    let disk = d.mail_snapshot("alice");
    // The first two connections drop after ~300 KB from the server: mid-fetch.
    let proxy = support::proxy::FaultProxy::start(d.imap_port, 300_000, 2);
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("a.tar.zst");
    let pw = d.password_file("alice");
    let ca = d.ca_file();
    let url = format!("imap://alice@127.0.0.1:{}", proxy.port);
    let out = run(&[
        "export",
        &url,
        "-o",
        ar.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
        "--jobs",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{} {}", stdout(&out), stderr(&out));
    let rep = json(&out);
    assert!(
        proxy.connections() >= 3,
        "connections: {}",
        proxy.connections()
    );
    let f = folder(&rep, "INBOX");
    assert!(f["reconnects"].as_u64().unwrap() >= 2, "{f:#}");
    assert_eq!(f["archived"], 300);
    assert_eq!(f["complete"], true);
    // Resumed, not restarted: no message body was taken twice.
    assert_eq!(rep["bodies_fetched"], 300);
    let idx = ls_json(&[&ar]);
    let mut uids: Vec<u64> = idx
        .iter()
        .map(|m| m["source"]["uid"].as_u64().unwrap())
        .collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 300);
    for m in &before["INBOX"] {
        assert!(idx.iter().any(|r| r["sha256"] == sha256_hex(&m.body)));
    }
    d.assert_mail_unchanged("alice", &disk, "export through cut connections");
    // \Seen untouched on the server.
    let after = server_state(&d, "alice", &["INBOX"]);
    let seen = |v: &Vec<ServerMsg>| {
        v.iter()
            .filter(|m| m.flags.iter().any(|f| f == "\\Seen"))
            .count()
    };
    assert_eq!(seen(&before["INBOX"]), 150);
    assert_eq!(seen(&after["INBOX"]), 150);
}

/// A Courier-style account: everything under the `INBOX.` namespace prefix with `.` as
/// the separator. Names are archived as the server lists them.
#[test]
fn exports_a_prefixed_namespace() {
    let d = Dovecot::start_with(DovecotOptions {
        separator: '.',
        prefix: "INBOX.".into(),
        ..Default::default()
    });
    let mut c = d.raw("alice");
    c.must("CREATE \"INBOX.Work.2024\"");
    assert!(c
        .append("INBOX.Work.2024", "\\Seen", None, &msg("w", "1"))
        .ok());
    assert!(c.append("INBOX", "", None, &msg("i", "2")).ok());
    assert!(c.append("INBOX.Sent", "", None, &msg("s", "3")).ok());
    c.logout();
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("a.tar.zst");
    let out = export(&d, "alice", &ar, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rep = json(&out);
    assert_eq!(folder(&rep, "INBOX.Work.2024")["archived"], 1);
    assert_eq!(folder(&rep, "INBOX.Sent")["special_use"], "\\Sent");
    assert_eq!(rep["messages"], 3);
    let idx = ls_json(&[&ar]);
    assert!(idx.iter().any(|m| m["folder"] == "INBOX.Work.2024"));
    // --folder picks by the UTF-8 name.
    let ar2 = t.path().join("b.tar.zst");
    let out = export(&d, "alice", &ar2, &["--json", "--folder", "INBOX.Work*"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["messages"], 1);
}

/// `--since` trusts only a whole chain: a delta without its full archive, or two
/// unrelated full archives, is refused before anything is read, naming the file; the
/// order of the `--since` arguments does not matter.
#[test]
fn since_takes_only_a_whole_chain_in_any_order() {
    let d = Dovecot::start();
    let mut c = d.raw("alice");
    assert!(c.append("INBOX", "", None, &msg("old", "1")).ok());
    c.logout();
    let t = tempfile::tempdir().unwrap();
    let path = |n: &str| t.path().join(n);
    let (full, d0) = (path("full.tar.zst"), path("d0.tar.zst"));
    assert!(export(&d, "alice", &full, &[]).status.success());
    let mut c = d.raw("alice");
    assert!(c.append("INBOX", "", None, &msg("new", "2")).ok());
    c.logout();
    let full_s = full.to_str().unwrap();
    let out = export(&d, "alice", &d0, &["--since", full_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d0_s = d0.to_str().unwrap();

    // Only the delta: it would re-archive the old message as a delta of d0.
    let lone = path("lone.tar.zst");
    let out = export(&d, "alice", &lone, &["--since", d0_s]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(d0_s) && err.contains("parent"), "{err}");
    assert!(!lone.exists());

    // Two full archives of the account are not one chain.
    let other = path("other.tar.zst");
    assert!(export(&d, "alice", &other, &[]).status.success());
    let two = path("two.tar.zst");
    let out = export(
        &d,
        "alice",
        &two,
        &["--since", full_s, "--since", other.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(other.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    assert!(!two.exists());

    // Newest first works as well as oldest first: the parent is the chain's tip.
    let d1 = path("d1.tar.zst");
    let out = export(
        &d,
        "alice",
        &d1,
        &["--json", "--since", d0_s, "--since", full_s],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["parent"]["archive_id"], archive_id(&d0));
    assert_eq!(json(&out)["messages"], 0);
    // The same rules hold for reading the chain back.
    for cmd in ["verify", "extract"] {
        let mut args = vec![cmd, d0_s];
        let to = format!("maildir:{}", path("x").display());
        if cmd == "extract" {
            args.extend(["--to", &to]);
        }
        let out = run(&args);
        assert_ne!(out.status.code(), Some(0), "{cmd}: {}", stdout(&out));
        assert!(
            format!("{}{}", stdout(&out), stderr(&out)).contains(d0_s),
            "{cmd}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let out = run(&["verify", full_s, other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(other.to_str().unwrap()),
        "{}",
        stdout(&out)
    );
    run_ok(&["verify", d1.to_str().unwrap(), full_s, d0_s]);
}

/// On a terminal, the export shows a bar whose total is the account's count from the
/// start (every folder opened in one pipeline), and still archives every message.
#[test]
fn on_a_terminal_the_bar_counts_the_whole_account() {
    let d = Dovecot::start();
    let mut c = d.raw("alice");
    c.must("CREATE \"Work\"");
    c.must("CREATE \"Work/2024\"");
    for (i, f) in ["INBOX", "Work", "Work/2024"]
        .iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        assert!(c.append(f, "", None, &msg(&format!("m {i}"), "x")).ok());
    }
    c.logout();
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("a.tar.zst");
    let cmd = format!(
        "{} export {} -o {} --password-file {} --tls-ca-file {}",
        env!("CARGO_BIN_EXE_mailark"),
        d.imaps_url("alice"),
        ar.display(),
        d.password_file("alice").display(),
        d.ca_file().display()
    );
    // util-linux `script` gives the command a terminal and copies what it drew.
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux) is needed");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("/30 messages"), "{screen}");
    let ls = run(&["ls", ar.to_str().unwrap(), "--json"]);
    assert_eq!(json(&ls)["messages"].as_array().unwrap().len(), 30);
}
