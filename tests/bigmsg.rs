//! Memory does not follow message size: an archive holding one large message (200 MiB
//! by default; `MAILARK_BIGMSG_MIB` sets it) is verified, extracted (Maildir and
//! mbox), imported with `--dry-run` and imported for real into Dovecot, and exported
//! from Dovecot over IMAP and POP3; each child process's peak RSS (its `wait4` maxrss)
//! must stay far below the message's size.
//! The message is generated here, line by line, never stored in the repository; its
//! lines differ, so it compresses well but not to nothing.

mod common;
mod support;

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use common::*;
use sha2::{Digest, Sha256};
use support::Dovecot;

const SMALL: &[u8] = b"Subject: small\nMessage-ID: <small@bigmsg.test>\n\nsmall\n";

/// Peak RSS a command may reach with the large message: what it needs for anything
/// else (decompressor, buffers, TLS), far below the message.
const PEAK_LIMIT: u64 = 160 << 20;

fn big_size() -> u64 {
    std::env::var("MAILARK_BIGMSG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200u64)
        << 20
}

/// Writes the large message to `path` (LF line ends, as a Maildir file holds them);
/// returns its size and SHA-256, and those of its CRLF form (what a server serves).
fn write_big(path: &Path, size: u64) -> (u64, String, u64, String) {
    let mut w = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = Sha256::new();
    let mut crlf = (0u64, Sha256::new());
    let mut put = |b: &[u8], w: &mut BufWriter<std::fs::File>| {
        h.update(b);
        w.write_all(b).unwrap();
        for line in b.split_inclusive(|&c| c == b'\n') {
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            crlf.1.update(text);
            crlf.0 += text.len() as u64;
            if text.len() < line.len() {
                crlf.1.update(b"\r\n");
                crlf.0 += 2;
            }
        }
        b.len() as u64
    };
    let mut n = put(
        b"From: big@example.com\nTo: t@example.com\nSubject: large\nMessage-ID: <big@bigmsg.test>\n\n",
        &mut w,
    );
    let mut i = 0u64;
    while n < size {
        // A quoted From line now and then: the mbox layout must quote it both ways.
        let line = if i % 100_000 == 7 {
            format!("From the line {i}, quoted in mbox\n")
        } else {
            format!("line {i:010} of a large message, every one of them different\n")
        };
        n += put(line.as_bytes(), &mut w);
        i += 1;
    }
    w.flush().unwrap();
    (
        n,
        hex(h.finalize().as_slice()),
        crlf.0,
        hex(crlf.1.finalize().as_slice()),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha_of_file(path: &Path) -> (u64, String) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            return (n, hex(h.finalize().as_slice()));
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

/// Runs `args`, asserting exit 0 and the peak RSS bound (the child's own `wait4`
/// maxrss); returns stdout.
fn run_bounded(what: &str, args: &[&str], size: u64) -> String {
    let (o, peak) = output_and_peak(bin().args(args));
    eprintln!(
        "{what}: peak RSS {} MiB for a {} MiB message",
        peak >> 20,
        size >> 20
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        peak < PEAK_LIMIT && peak < size / 2,
        "{what}: peak RSS {} MiB for a {} MiB message",
        peak >> 20,
        size >> 20
    );
    stdout(&o)
}

/// An archive (in `layout`) of a Maildir holding the large message and a small one.
fn big_archive(dir: &Path, size: u64, layout: &str) -> (PathBuf, u64, String) {
    let src = dir.join("src");
    write_maildir_folder(&src, &[("1.small:2,S".into(), SMALL.to_vec())]);
    let (len, sha, _, _) = write_big(&src.join("cur/2.big:2,"), size);
    let ar = dir.join(format!("{layout}.tar.zst"));
    run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
        "--layout",
        layout,
    ]);
    std::fs::remove_dir_all(&src).unwrap();
    (ar, len, sha)
}

/// The one file under `dir` of at least `min` bytes.
fn the_big_file(dir: &Path, min: u64) -> PathBuf {
    let mut found: Vec<PathBuf> = walk(dir)
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() >= min)
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn read_archive_bounded(layout: &str) {
    let size = big_size();
    let t = tempfile::tempdir().unwrap();
    let (ar, len, sha) = big_archive(t.path(), size, layout);
    let a = ar.to_str().unwrap();
    let out = run_bounded("verify", &["verify", a, "--json"], size);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"], 2, "{v}");
    assert_eq!(v["bytes"].as_u64(), Some(len + SMALL.len() as u64), "{v}");

    let md = t.path().join("md");
    let target = format!("maildir:{}", md.display());
    run_bounded("extract to Maildir", &["extract", a, "--to", &target], size);
    assert_eq!(sha_of_file(&the_big_file(&md, len)), (len, sha.clone()));
    std::fs::remove_dir_all(&md).unwrap();

    let mb = t.path().join("mb");
    let target = format!("mbox:{}", mb.display());
    run_bounded("extract to mbox", &["extract", a, "--to", &target], size);
    // The mbox file holds the message quoted: export it back and compare the bytes.
    let back = t.path().join("back.tar.zst");
    run_ok(&[
        "export",
        &format!("mbox:{}", mb.display()),
        "-o",
        back.to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&mb).unwrap();
    let ls = ls_json(&[&back]);
    assert!(
        ls.iter()
            .any(|m| m["sha256"] == sha.as_str() && m["size"] == len),
        "the message came back from the mbox output changed"
    );
}

#[test]
fn verify_and_extract_a_large_message_in_bounded_memory_maildir_layout() {
    read_archive_bounded("maildir");
}

#[test]
fn verify_and_extract_a_large_message_in_bounded_memory_mbox_layout() {
    read_archive_bounded("mbox");
}

#[test]
fn import_of_a_large_message_into_dovecot_in_bounded_memory() {
    let size = big_size();
    let d = Dovecot::start();
    let t = tempfile::tempdir().unwrap();
    let (ar, len, _) = big_archive(t.path(), size, "maildir");
    let a = ar.to_str().unwrap();
    let url = d.imaps_url("bob");
    let pw = d.password_file("bob");
    let ca = d.ca_file();
    let base = [
        "import",
        a,
        "--to",
        &url,
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
        "--json",
    ];
    let dry: Vec<&str> = base.iter().copied().chain(["--dry-run"]).collect();
    let out = run_bounded("import --dry-run", &dry, size);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["to_append"], 2, "{v}");
    assert!(walk(&d.maildir("bob"))
        .iter()
        .all(|p| std::fs::metadata(p).unwrap().len() < len));

    let out = run_bounded("import", &base, size);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["appended"], 2, "{v}");
    assert_eq!(v["verified"], 2, "{v}");
    // Dovecot stores what it was sent; served in CRLF form, its size is the archived
    // size plus one CR per line.
    let stored = the_big_file(&d.maildir("bob"), len);
    let (n, _) = sha_of_file(&stored);
    assert!(n >= len, "stored {n} bytes of {len}");

    // A rerun recognises it: nothing is appended twice.
    let out = run_bounded("import again", &base, size);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["appended"], 0, "{v}");
    assert_eq!(v["already_there"], 2, "{v}");
    assert_eq!(
        walk(&d.maildir("bob"))
            .iter()
            .filter(|p| std::fs::metadata(p).unwrap().len() >= len)
            .count(),
        1
    );
}

/// Exports a Dovecot account holding only the large message (delivered into its
/// Maildir directly, as the server's own delivery would) over `scheme`, with the peak
/// RSS bound, and checks the archive holds the bytes the server serves.
fn export_of_a_large_message(scheme: &str) {
    let size = big_size();
    let d = Dovecot::start();
    let t = tempfile::tempdir().unwrap();
    let inbox = d.maildir("alice").join("INBOX");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(inbox.join(sub)).unwrap();
    }
    let (_, _, served_len, served_sha) = write_big(&inbox.join("cur/1600000000.M1.big:2,S"), size);
    support::dovecot::chown_nobody(&d.maildir("alice"));
    let ar = t.path().join("a.tar.zst");
    let url = if scheme == "imaps" {
        d.imaps_url("alice")
    } else {
        d.pop3s_url("alice")
    };
    let pw = d.password_file("alice");
    let ca = d.ca_file();
    let args = [
        "export",
        &url,
        "-o",
        ar.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
        "--json",
    ];
    let out = run_bounded(&format!("{scheme} export"), &args, size);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"], 1, "{v}");
    // The archive holds the bytes the server serves, and they verify.
    let ls = ls_json(&[&ar]);
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0]["size"], served_len);
    assert_eq!(ls[0]["sha256"], served_sha.as_str());
    run_bounded("verify", &["verify", ar.to_str().unwrap()], size);
}

#[test]
fn imap_export_of_a_large_message_from_dovecot_in_bounded_memory() {
    export_of_a_large_message("imaps");
}

#[test]
fn pop3_export_of_a_large_message_from_dovecot_in_bounded_memory() {
    export_of_a_large_message("pop3s");
}
