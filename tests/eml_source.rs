//! `eml:DIR`, mail already saved as `.eml` files: every directory holding them is a
//! folder (the top is INBOX), every file one message kept byte-exact, dated by the
//! delivery time it records (else its mtime); other files are left alone.

mod common;

use std::path::Path;

use common::*;

fn ls(ar: &Path) -> Vec<serde_json::Value> {
    ls_json(&[ar])
}

#[test]
fn a_tree_of_eml_files_is_archived_byte_exact_with_folders_and_dates() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("drag-out");
    let sub = root.join("Projects").join("見積");
    std::fs::create_dir_all(&sub).unwrap();
    let received = b"Received: from mx by mailhost; Tue, 2 Jan 2024 10:00:00 +0900\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: r\r\n\r\nbody\r\n";
    std::fs::write(root.join("a.eml"), received).unwrap();
    std::fs::write(root.join("B.EML"), b"Subject: no dates\n\nlf only\n").unwrap();
    std::fs::write(root.join("notes.txt"), b"not mail").unwrap();
    std::fs::write(
        sub.join("q.eml"),
        b"Date: Wed, 3 Jan 2024 12:00:00 +0900\r\nSubject: q\r\n\r\nx",
    )
    .unwrap();
    let ar = t.path().join("a.tar.zst");
    let o = run_ok(&[
        "export",
        &format!("eml:{}", root.display()),
        "-o",
        ar.to_str().unwrap(),
        "--json",
    ]);
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["messages"], 3, "{rep:#}");
    let msgs = ls(&ar);
    let by_folder = |f: &str| msgs.iter().filter(|m| m["folder"] == f).count();
    assert_eq!(
        (by_folder("INBOX"), by_folder("Projects/見積")),
        (2, 1),
        "{msgs:#?}"
    );
    let date_of = |subject: &str| {
        msgs.iter()
            .find(|m| m["subject"] == subject)
            .unwrap_or_else(|| panic!("{subject}: {msgs:#?}"))["internaldate"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The topmost Received: wins over Date:; without it, Date:. (`ls --json` shows
    // dates in UTC; the index keeps the +09:00 they were given with.)
    assert_eq!(date_of("r"), "2024-01-02T01:00:00Z");
    assert_eq!(date_of("q"), "2024-01-03T03:00:00Z");
    run_ok(&["verify", ar.to_str().unwrap()]);
    let out = t.path().join("out");
    run_ok(&[
        "extract",
        ar.to_str().unwrap(),
        "--to",
        &format!("eml:{}", out.display()),
    ]);
    let mut got: Vec<Vec<u8>> = read_tree(&out)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".eml"))
        .map(|(_, b)| b)
        .collect();
    got.sort();
    let mut want = vec![
        received.to_vec(),
        b"Subject: no dates\n\nlf only\n".to_vec(),
        b"Date: Wed, 3 Jan 2024 12:00:00 +0900\r\nSubject: q\r\n\r\nx".to_vec(),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn the_interop_corpus_as_eml_files_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("eml");
    std::fs::create_dir_all(&root).unwrap();
    let corpus = corpus_messages(t.path());
    for (name, bytes) in &corpus {
        std::fs::write(root.join(name), bytes).unwrap();
    }
    let ar = t.path().join("c.tar.zst");
    run_ok(&[
        "export",
        &format!("eml:{}", root.display()),
        "-o",
        ar.to_str().unwrap(),
        "-q",
    ]);
    let msgs = ls(&ar);
    assert_eq!(msgs.len(), corpus.len());
    let mut want: Vec<String> = corpus.iter().map(|(_, b)| sha256_hex(b)).collect();
    let mut got: Vec<String> = msgs
        .iter()
        .map(|m| m["sha256"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn a_directory_without_eml_files_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("x.txt"), b"x").unwrap();
    let o = run(&[
        "export",
        &format!("eml:{}", t.path().display()),
        "-o",
        t.path().join("a.tar.zst").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no .eml files"), "{}", stderr(&o));
}
