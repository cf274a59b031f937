//! Links that die slowly and disks that fill up, against a real Dovecot: a proxy in
//! front of it goes silent (after the server or the client has sent so many bytes) or
//! trickles a byte a second, on export (IMAP and POP3) and on import; a small tmpfs
//! fills up under an export. Every run must end within its `--timeout`s with a clear
//! word, leave no file under a final name that is not whole and no temporary file, and
//! leave the source as it was; an import rerun over a good link then brings every
//! message exactly once.

mod common;
mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use support::stall::StallProxy;
use support::{Dovecot, DovecotOptions};

/// The step timeout the runs below are given (`--timeout`), in seconds.
const STEP: &str = "2";

/// A run through a faulty link must end within this, or it hangs: `timeout` kills it
/// (exit 124) and the assertions name the case.
const HANG: &str = "150";

fn server() -> Dovecot {
    let users = ["alice", "bob", "carol", "dave", "erin"]
        .iter()
        .map(|u| (u.to_string(), format!("{u}-pw-Ω")))
        .collect();
    Dovecot::start_with(DovecotOptions {
        users,
        ..Default::default()
    })
}

/// `n` messages of about 24 KiB of text noise (what zstd cannot shrink much), each with
/// its own Message-ID.
fn noise_messages(tag: &str, n: usize) -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|i| {
            let mut b = format!("Subject: {tag} {i}\r\nMessage-ID: <{tag}.{i}@faults>\r\n\r\n")
                .into_bytes();
            for _ in 0..330 {
                b.extend((0..72).map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b'A' + (x % 26) as u8
                }));
                b.extend_from_slice(b"\r\n");
            }
            b
        })
        .collect()
}

fn seed(d: &Dovecot, user: &str, folder: &str, msgs: &[Vec<u8>]) {
    let rows: Vec<(Vec<u8>, &str, i64)> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (m.clone(), "S", 1_600_000_000 + i as i64))
        .collect();
    d.seed_maildir(user, folder, &rows);
}

/// mailark with `args` under `timeout HANG`, logged in as `user`: no crash, no hang.
fn bounded(d: &Dovecot, user: &str, args: &[&str]) -> (Output, Duration) {
    let g = guarded(
        std::process::Command::new("timeout")
            .arg(HANG)
            .arg(env!("CARGO_BIN_EXE_mailark"))
            .args(args)
            .args(d.login_args(user))
            .args(["--timeout", STEP]),
        &format!("{args:?}"),
    );
    (g.out, g.took)
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// After an export through a faulty link: the directory holds the archive (exit 0 or 1)
/// or nothing (exit 2), never a temporary file; an archive there verifies and holds
/// exactly the messages the report says were archived, each an intact source message.
fn check_export(label: &str, o: &Output, dir: &Path, sent: &[Vec<u8>]) {
    let code = o.status.code().unwrap();
    let err = stderr(o);
    match code {
        0 | 1 => {
            assert_eq!(names(dir), vec!["a.tar.zst"], "{label}: {err}");
            let ar = dir.join("a.tar.zst");
            run_ok(&["verify", ar.to_str().unwrap()]);
            let want: std::collections::HashSet<String> =
                sent.iter().map(|m| sha256_hex(m)).collect();
            let listed = ls_json(&[&ar]);
            for m in &listed {
                assert!(
                    want.contains(m["sha256"].as_str().unwrap()),
                    "{label}: archived a message the server does not hold"
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let not_archived = sent.len() - listed.len();
            assert_eq!(code == 0, not_archived == 0, "{label}: {v:#}");
        }
        2 => {
            assert!(names(dir).is_empty(), "{label}: left {:?}", names(dir));
            assert_eq!(err.trim().lines().count(), 1, "{label}: {err}");
            assert!(err.contains(&format!("within {STEP} s")), "{label}: {err}");
        }
        c => panic!("{label}: exit {c}: {err}"),
    }
}

#[test]
fn imap_and_pop3_export_through_a_stalled_or_trickling_link_end_and_harm_nothing() {
    let d = server();
    let sent = noise_messages("exp", 12);
    seed(&d, "alice", "INBOX", &sent);
    let before = d.mail_snapshot("alice");
    // Cases: where the link fails, how, and the URL scheme.
    let cases: Vec<(&str, StallProxy, &str)> = vec![
        (
            "IMAP, silent mid-greeting",
            StallProxy::start(d.imaps_port, 40),
            "imaps",
        ),
        (
            "IMAP, silent mid-message",
            StallProxy::start(d.imaps_port, 60_000),
            "imaps",
        ),
        (
            "IMAP, trickling mid-message",
            StallProxy::trickle(d.imaps_port, 60_000),
            "imaps",
        ),
        (
            "POP3, silent mid-greeting",
            StallProxy::start(d.pop3s_port, 10),
            "pop3s",
        ),
        (
            "POP3, silent mid-message",
            StallProxy::start(d.pop3s_port, 60_000),
            "pop3s",
        ),
        (
            "POP3, trickling mid-message",
            StallProxy::trickle(d.pop3s_port, 60_000),
            "pop3s",
        ),
    ];
    for (label, proxy, scheme) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.tar.zst");
        let url = format!("{scheme}://alice@127.0.0.1:{}", proxy.port);
        let (o, took) = bounded(
            &d,
            "alice",
            &[
                "export",
                &url,
                "-o",
                out.to_str().unwrap(),
                "--jobs",
                "1",
                "--json",
            ],
        );
        eprintln!("{label}: exit {:?} in {took:?}", o.status.code());
        check_export(label, &o, dir.path(), &sent);
        d.assert_mail_unchanged("alice", &before, label);
    }
}

/// Every message of `msgs` is in `user`'s INBOX exactly once (by Message-ID and bytes).
fn exactly_once(d: &Dovecot, user: &str, msgs: &[Vec<u8>], label: &str) {
    let mut held: Vec<String> = d
        .raw(user)
        .fetch_all("INBOX")
        .into_iter()
        .map(|(_, _, b)| sha256_hex(&b))
        .collect();
    held.sort();
    let mut want: Vec<String> = msgs.iter().map(|m| sha256_hex(m)).collect();
    want.sort();
    assert_eq!(held, want, "{label}: not every message exactly once");
}

#[test]
fn import_through_a_stalled_or_trickling_link_ends_and_a_rerun_brings_each_message_once() {
    let d = server();
    let t = tempfile::tempdir().unwrap();
    let msgs = noise_messages("imp", 30);
    let src = t.path().join("src");
    let rows: Vec<(String, Vec<u8>)> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("{}.i{i}:2,S", 1_600_000_000 + i), m.clone()))
        .collect();
    write_maildir_folder(&src.join("INBOX"), &rows);
    let ar = t.path().join("a.tar.zst");
    export_maildir(&src, &ar, &["-q"]);
    let archive_before = std::fs::read(&ar).unwrap();
    let cases: Vec<(&str, StallProxy, &str)> = vec![
        // In the middle of an APPEND's literal: the client's writes block.
        (
            "silent mid-upload",
            StallProxy::start_upload(d.imaps_port, 200_000),
            "bob",
        ),
        // After login and the first answers: responses stop coming.
        (
            "silent mid-answers",
            StallProxy::start(d.imaps_port, 3_000),
            "carol",
        ),
        (
            "trickling answers",
            StallProxy::trickle(d.imaps_port, 3_000),
            "dave",
        ),
        (
            "silent mid-greeting",
            StallProxy::start(d.imaps_port, 30),
            "erin",
        ),
    ];
    for (label, proxy, user) in cases {
        let url = format!("imaps://{user}@127.0.0.1:{}", proxy.port);
        let (o, took) = bounded(
            &d,
            user,
            &[
                "import",
                ar.to_str().unwrap(),
                "--to",
                &url,
                "--jobs",
                "1",
                "--json",
            ],
        );
        let err = stderr(&o);
        eprintln!("{label}: exit {:?} in {took:?}", o.status.code());
        match o.status.code().unwrap() {
            // Each new connection gets further, so the run may finish: then every
            // message is there once, verified.
            0 => exactly_once(&d, user, &msgs, label),
            1 => {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                assert!(v["failed"].as_u64().unwrap() > 0, "{label}: {v:#}");
                let reasons = v["folders"][0]["failures"].to_string();
                // Why: the connection was lost, because the server did not answer in time
                // (while appending, or, when the appends got through before the stall,
                // while verifying them).
                assert!(
                    (reasons.contains("connection to the server lost")
                        || reasons.contains("cannot verify"))
                        && reasons.contains(&format!("within {STEP} s")),
                    "{label}: {reasons}"
                );
            }
            2 => {
                assert_eq!(err.trim().lines().count(), 1, "{label}: {err}");
                assert!(err.contains(&format!("within {STEP} s")), "{label}: {err}");
            }
            c => panic!("{label}: exit {c} through a dead link: {err}"),
        }
        // The rerun over a good link brings the rest, and nothing twice.
        let o = run_logged_in(
            &[
                "import",
                ar.to_str().unwrap(),
                "--to",
                &d.imaps_url(user),
                "--json",
            ],
            &d.login_args(user),
        );
        assert_eq!(o.status.code(), Some(0), "{label}: rerun: {}", stderr(&o));
        exactly_once(&d, user, &msgs, label);
        assert!(
            std::fs::read(&ar).unwrap() == archive_before,
            "{label}: the archive changed"
        );
    }
}

#[test]
fn export_onto_a_full_disk_fails_clearly_and_leaves_nothing() {
    let d = server();
    let sent = noise_messages("full", 40);
    seed(&d, "alice", "INBOX", &sent);
    let before = d.mail_snapshot("alice");
    let t = tempfile::tempdir().unwrap();
    let local = t.path().join("local");
    let rows: Vec<(String, Vec<u8>)> = sent
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("{}.f{i}:2,S", 1_600_000_000 + i), m.clone()))
        .collect();
    write_maildir_folder(&local.join("INBOX"), &rows);
    let local_before = read_tree(&local);
    // About 1 MiB of archive into 256 KiB.
    let fs = Tmpfs::mount(&t.path().join("small"), "256k");
    for (label, source, user) in [
        ("IMAP", d.imaps_url("alice"), "alice"),
        ("POP3", d.pop3s_url("alice"), "alice"),
        ("maildir", format!("maildir:{}", local.display()), "alice"),
    ] {
        let out = fs.0.join("a.tar.zst");
        let (o, _) = bounded(&d, user, &["export", &source, "-o", out.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{label}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{label}: {err}");
        assert!(
            lines[0].contains("No space left on device"),
            "{label}: {err}"
        );
        assert!(lines[0].contains(fs.0.to_str().unwrap()), "{label}: {err}");
        assert!(names(&fs.0).is_empty(), "{label}: left {:?}", names(&fs.0));
        d.assert_mail_unchanged("alice", &before, label);
        assert!(
            read_tree(&local) == local_before,
            "{label}: the Maildir changed"
        );
    }
}
