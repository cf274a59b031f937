//! `mailark export imaps://…` against a real Dovecot: every folder (nested, Japanese,
//! `&`, dotted, spaces, special-use, `\Noselect` parents), exact bytes, flags with
//! keywords and `\Deleted`, INTERNALDATEs in several zones, a source left unchanged, the
//! per-folder report, and a password that appears nowhere.

mod common;
mod imap_common;
mod support;

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
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("alice.tar.zst");
    let out = export(d, "alice", &ar, &["--json", "--jobs", "3"]);
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
        assert!(f["skipped"].as_array().unwrap().is_empty());
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
