//! The harness's real Dovecot, and the promise that an extracted Maildir is served by
//! Dovecot as it is: export → extract → point a Dovecot user at the tree → every message
//! comes back over IMAP byte-exact (in Dovecot's CRLF form), with its flags, keywords
//! and folders, Japanese names included.

mod common;
mod support;

use common::*;
use support::dovecot::served_form;
use support::raw::{mutf7, quote};
use support::Dovecot;

#[test]
fn harness_serves_imap_and_pop3() {
    let d = Dovecot::start();
    let mut c = d.raw("alice");
    let msg = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
    let r = c.append(
        "INBOX",
        "\\Flagged",
        Some("07-Jan-2019 10:00:00 +0900"),
        msg,
    );
    assert!(r.ok(), "{}", r.status);
    let got = c.fetch_all("INBOX");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, msg);
    assert!(got[0].1.contains("\\Flagged"));
    let list = c.must("LIST \"\" \"*\"").text();
    assert!(list.contains("\\Sent"), "special-use folders: {list}");
    c.logout();
    // POP3 answers too, with the same message.
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", d.pop3_port)).unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    assert!(line.starts_with("+OK"), "{line}");
    write!(
        w,
        "USER alice\r\nPASS {}\r\nSTAT\r\nQUIT\r\n",
        d.password("alice")
    )
    .unwrap();
    let mut all = String::new();
    for _ in 0..4 {
        line.clear();
        rd.read_line(&mut line).unwrap();
        all.push_str(&line);
    }
    assert!(all.contains("+OK 1 "), "{all}");
}

#[test]
fn extracted_maildir_fs_is_served_by_dovecot_with_layout_fs() {
    let t = tempfile::tempdir().unwrap();
    // A LAYOUT=fs source tree with nested, Japanese, dotted and space names.
    let src = t.path().join("src");
    let folders = ["INBOX", "受信箱/取引先", "a.b", "with space", "Sent"];
    let fx = fixtures();
    for (i, f) in folders.iter().enumerate() {
        let msgs: Vec<(String, Vec<u8>)> = fx
            .iter()
            .enumerate()
            .filter(|(j, (_, b))| j % folders.len() == i && !b.is_empty() && !b.contains(&0))
            .map(|(j, (_, b))| {
                (
                    format!(
                        "{}.M{j}.x:2,S{}",
                        1_500_000_000 + j,
                        if j % 2 == 0 { "a" } else { "" }
                    ),
                    b.clone(),
                )
            })
            .collect();
        write_maildir_folder(&src.join(f), &msgs);
        std::fs::write(src.join(f).join("dovecot-keywords"), "0 $Label1\n").unwrap();
    }
    let ar = t.path().join("a.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    let index = ls_json(&[&ar]);

    // No auto-created special-use folders: the extracted tree is all alice has (the
    // harness would open them at start, making folders and `subscriptions` there).
    let d = Dovecot::start_with(support::DovecotOptions {
        special: vec![],
        ..Default::default()
    });
    let root = d.maildir("alice");
    run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("maildir-fs:{}", root.display()),
    ]);
    support::dovecot::chown_nobody(&root);
    let mut c = d.raw("alice");
    let list = c.must("LIST \"\" \"*\"").text();
    let mut served = 0;
    for f in folders {
        assert!(list.contains(&mutf7(f)), "{f} not listed: {list}");
        let got = c.fetch_all(&mutf7(f));
        let want: Vec<&serde_json::Value> = index.iter().filter(|m| m["folder"] == f).collect();
        assert_eq!(got.len(), want.len(), "folder {f}");
        for w in want {
            // Dovecot serves CRLF whatever the file holds; compare in that form.
            let sha = w["sha256"].as_str().unwrap();
            let file = fx.iter().find(|(_, b)| sha256_hex(b) == sha).unwrap();
            let crlf = served_form(&file.1);
            assert!(
                got.iter().any(|g| g.2 == crlf),
                "{f}: {} not served byte-exact",
                file.0
            );
            let flags: Vec<&str> = w["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let g = got.iter().find(|g| g.2 == crlf).unwrap();
            for fl in flags {
                assert!(
                    g.1.contains(fl),
                    "{f}/{}: flag {fl} missing in ({})",
                    file.0,
                    g.1
                );
            }
            served += 1;
        }
    }
    assert!(served > 10, "only {served} messages compared");
    let subs = c.must("LSUB \"\" \"*\"").text();
    assert!(
        subs.contains(&mutf7("受信箱/取引先")) || subs.contains(&quote(&mutf7("受信箱/取引先"))),
        "{subs}"
    );
}
