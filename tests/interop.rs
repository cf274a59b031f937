//! The shared interop corpus (290 real-world messages, `MAILARK_INTEROP_CORPUS`) must
//! round-trip byte-exact through the `maildir:` and `mbox:` sources → archive →
//! extract. The mbox files' known limits (a final newline mbox cannot store; mboxo's
//! ambiguous `>From `) are taken from the corpus's own INDEX.tsv, not assumed.

mod common;
use common::*;
use std::collections::HashMap;
use std::path::Path;

struct IndexRow {
    file: String,
    added_eol: Option<Vec<u8>>,
    inserted: String,
}

fn mbox_index(corpus: &Path, mbox: &str) -> Vec<IndexRow> {
    let text = std::fs::read_to_string(corpus.join("mbox/INDEX.tsv")).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap();
    let (cm, cf, ce, ci) = (
        col("mbox"),
        col("corpus_file"),
        col("added_eol"),
        col("inserted"),
    );
    lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|r| r[cm] == mbox)
        .map(|r| IndexRow {
            file: r[cf].to_string(),
            added_eol: match r[ce] {
                "-" => None,
                e => Some(e.replace("\\r", "\r").replace("\\n", "\n").into_bytes()),
            },
            inserted: r[ci].to_string(),
        })
        .collect()
}

fn extract_eml(archive: &Path, dir: &Path) -> Vec<Vec<u8>> {
    run_ok(&[
        "extract",
        archive.to_str().unwrap(),
        "--to",
        &format!("eml:{}", dir.display()),
    ]);
    // eml files are numbered in archive order within a folder.
    read_tree(dir).into_iter().map(|(_, b)| b).collect()
}

fn sorted_shas<'a>(it: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut v: Vec<String> = it.map(sha256_hex).collect();
    v.sort();
    v
}

#[test]
fn corpus_through_maildir_both_layouts() {
    let t = tempfile::tempdir().unwrap();
    let msgs = corpus_messages(t.path());
    let md = t.path().join("md");
    let named: Vec<(String, Vec<u8>)> = msgs
        .iter()
        .enumerate()
        .map(|(i, (_, b))| (format!("{}.M{i}.corpus:2,S", 1_600_000_000 + i), b.clone()))
        .collect();
    write_maildir_folder(&md.join("INBOX"), &named);
    let want = sorted_shas(msgs.iter().map(|(_, b)| b.as_slice()));
    for layout in ["maildir", "mbox"] {
        let ar = t.path().join(format!("{layout}.tar.zst"));
        run_ok(&[
            "export",
            &format!("maildir:{}", md.display()),
            "-o",
            ar.to_str().unwrap(),
            "--layout",
            layout,
        ]);
        run_ok(&["verify", ar.to_str().unwrap()]);
        let ls = ls_json(&[&ar]);
        assert_eq!(ls.len(), 290);
        let mut idx: Vec<String> = ls
            .iter()
            .map(|r| r["sha256"].as_str().unwrap().to_string())
            .collect();
        idx.sort();
        assert_eq!(idx, want, "index hashes ({layout})");
        let got = extract_eml(&ar, &t.path().join(format!("eml-{layout}")));
        assert_eq!(
            sorted_shas(got.iter().map(Vec::as_slice)),
            want,
            "extracted bytes ({layout})"
        );
    }
    // Maildir extraction of the same archive: every file byte-exact.
    let mdx = t.path().join("mdx");
    run_ok(&[
        "extract",
        t.path().join("maildir.tar.zst").to_str().unwrap(),
        "--to",
        &format!("maildir:{}", mdx.display()),
    ]);
    let files: Vec<Vec<u8>> = read_tree(&mdx.join("cur"))
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(sorted_shas(files.iter().map(Vec::as_slice)), want);
}

/// Reads an mbox of the corpus through the mbox source and compares every message with
/// the corpus file it came from, in order.
fn mbox_case(
    mbox: &str,
    format: &str,
    expect: impl Fn(&IndexRow, &[u8]) -> Vec<u8>,
) -> (usize, Vec<String>) {
    let corpus = corpus_dir();
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("a.tar.zst");
    let src = corpus.join("mbox").join(mbox);
    run_ok(&[
        "export",
        &format!("mbox:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
        "--mbox-format",
        format,
    ]);
    run_ok(&["verify", ar.to_str().unwrap()]);
    let rows = mbox_index(&corpus, mbox);
    let got = extract_eml(&ar, &t.path().join("eml"));
    assert_eq!(got.len(), rows.len(), "{mbox}: message count");
    let mut exact = 0;
    let mut bad = Vec::new();
    for (row, bytes) in rows.iter().zip(&got) {
        let orig = std::fs::read(corpus.join(&row.file)).unwrap();
        if *bytes == orig {
            exact += 1;
        } else if *bytes != expect(row, &orig) {
            bad.push(row.file.clone());
        }
    }
    (exact, bad)
}

fn with_eol(row: &IndexRow, orig: &[u8]) -> Vec<u8> {
    let mut v = orig.to_vec();
    if let Some(e) = &row.added_eol {
        v.extend_from_slice(e);
    }
    v
}

#[test]
fn corpus_mboxrd_exact_but_for_documented_final_newlines() {
    let (exact, bad) = mbox_case("corpus.mboxrd", "mboxrd", with_eol);
    assert!(
        bad.is_empty(),
        "messages that differ beyond an added final EOL: {bad:?}"
    );
    // All but the ones that gain a newline mbox cannot avoid (29 per the corpus README).
    let gain = mbox_index(&corpus_dir(), "corpus.mboxrd")
        .iter()
        .filter(|r| r.added_eol.is_some())
        .count();
    assert_eq!(gain, 29);
    assert_eq!(exact, 288 - gain);
}

#[test]
fn corpus_thunderbird_mbox_strips_mozilla_headers() {
    let (exact, bad) = mbox_case("thunderbird-linux.mbox", "mboxrd", with_eol);
    assert!(
        bad.is_empty(),
        "messages that differ beyond an added final EOL: {bad:?}"
    );
    let gain = mbox_index(&corpus_dir(), "thunderbird-linux.mbox")
        .iter()
        .filter(|r| r.added_eol.is_some())
        .count();
    assert_eq!(exact, 288 - gain);
    // X-Mozilla-Status: 0001 is \Seen.
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("tb.tar.zst");
    let src = corpus_dir().join("mbox/thunderbird-linux.mbox");
    run_ok(&[
        "export",
        &format!("mbox:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    let ls = ls_json(&[&ar]);
    assert!(ls
        .iter()
        .all(|r| r["flags"] == serde_json::json!(["\\Seen"])));
}

#[test]
fn corpus_mboxcl_uses_content_length() {
    let corpus = corpus_dir();
    let lossy: HashMap<String, bool> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            // mboxo cannot tell a real ">From " from a quoted "From ".
            let l = b
                .windows(6)
                .enumerate()
                .any(|(i, w)| w == b">From " && (i == 0 || b[i - 1] == b'\n'))
                || b.windows(7).enumerate().any(|(i, w)| {
                    w.starts_with(b">") && &w[1..] == b">From " && (i == 0 || b[i - 1] == b'\n')
                });
            (p.file_name().unwrap().to_string_lossy().into_owned(), l)
        })
        .collect();
    // CR-only messages: their framing header ends in CR, which a reader that splits
    // lines at LF (as every mbox reader does) cannot see; documented limitation.
    let manifest = std::fs::read_to_string(corpus.join("MANIFEST.tsv")).unwrap();
    let cr_only: Vec<String> = manifest
        .lines()
        .filter(|l| l.split('\t').nth(3) == Some("CR"))
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    let (exact, bad) = mbox_case("corpus.mboxcl", "mboxcl", |row, orig| {
        let mut v = with_eol(row, orig);
        // A message with no header/body separator is stored as header + Content-Length: 0
        // + blank line, the same bytes as an empty body: it comes back with the blank line.
        if row.inserted.starts_with("EOL + Content-Length: 0")
            || row.inserted.starts_with("Content-Length: 0 + empty")
        {
            v.extend_from_slice(b"\n");
        }
        v
    });
    let unexpected: Vec<&String> = bad
        .iter()
        .filter(|f| !lossy.get(*f).copied().unwrap_or(false) && !cr_only.contains(f))
        .collect();
    assert!(
        unexpected.is_empty(),
        "mboxcl mismatches beyond mboxo's known losses: {unexpected:?}"
    );
    // Every message that needs no documented change comes back byte-exact.
    let rows = mbox_index(&corpus, "corpus.mboxcl");
    let plain = rows
        .iter()
        .filter(|r| r.added_eol.is_none() && !r.inserted.starts_with("Content-Length: 0 + empty"))
        .filter(|r| !lossy.get(&r.file).copied().unwrap_or(false) && !cr_only.contains(&r.file))
        .count();
    assert!(
        exact >= plain,
        "{exact} byte-exact, expected at least {plain}"
    );
}
