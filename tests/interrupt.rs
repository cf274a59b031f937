//! Ctrl-C and SIGTERM: an interrupted export leaves no `.part` file and no archive, says
//! what was interrupted in one line and exits 130 (SIGINT) or 143 (SIGTERM); so does an
//! interrupted extract, whose finished messages stay and whose unfinished one goes.
//! The export is held mid-FETCH by a proxy that stops forwarding (a real Dovecot
//! behind it), so the signal always lands while the archive is being written.

mod common;
mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use support::stall::StallProxy;
use support::Dovecot;

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn signal(child: Child, sig: i32) -> (Option<i32>, String) {
    // SAFETY: the PID of a child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, sig) };
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn interrupted_export_leaves_nothing_and_says_so() {
    let d = Dovecot::start();
    let msgs: Vec<(Vec<u8>, &str, i64)> = (0..40)
        .map(|i| {
            let mut m = format!("Subject: m{i}\r\nMessage-ID: <m{i}@t>\r\n\r\n").into_bytes();
            m.extend(std::iter::repeat_n(b'x', 20_000));
            m.extend_from_slice(b"\r\n");
            (m, "S", 1_600_000_000 + i)
        })
        .collect();
    d.seed_maildir("alice", "INBOX", &msgs);
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        // Past the greeting, login, LIST and SELECT, into the message bodies.
        let proxy = StallProxy::start(d.imaps_port, 60_000);
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("alice.tar.zst");
        let child = bin()
            .args([
                "export",
                &format!("imaps://alice@127.0.0.1:{}", proxy.port),
                "-o",
            ])
            .arg(&out)
            .arg("--password-file")
            .arg(d.password_file("alice"))
            .arg("--tls-ca-file")
            .arg(d.ca_file())
            .args(["--jobs", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the .part file", || {
            names(out_dir.path()).iter().any(|n| n.ends_with(".part"))
        });
        // Give the export a moment to be deep in the stalled FETCH.
        std::thread::sleep(Duration::from_millis(300));
        let (got, err) = signal(child, sig);
        assert_eq!(got, Some(code), "{err}");
        assert_eq!(names(out_dir.path()), Vec::<String>::new(), "debris left");
        let line = err.lines().last().unwrap_or_default();
        assert!(
            line.starts_with("mailark: export interrupted by SIG"),
            "{err}"
        );
        assert!(line.contains("removed the unfinished"), "{err}");
        assert!(line.contains(".alice.tar.zst."), "{err}");
    }
}

#[test]
fn interrupted_extract_keeps_finished_messages_only() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("md");
    let msgs: Vec<(String, Vec<u8>)> = (0..20_000)
        .map(|i| {
            (
                format!("{i}.M{i}.x:2,S"),
                format!("Subject: m{i}\r\nMessage-ID: <m{i}@t>\r\n\r\nbody {i}\r\n").into_bytes(),
            )
        })
        .collect();
    write_maildir_folder(&md.join("INBOX"), &msgs);
    let ar = dir.path().join("a.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", md.display()),
        "-o",
        ar.to_str().unwrap(),
        "-q",
    ]);
    let out = dir.path().join("out");
    let child = bin()
        .args(["extract", ar.to_str().unwrap(), "--to"])
        .arg(format!("maildir:{}", out.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cur = |o: &Path| -> Vec<std::path::PathBuf> {
        walkdir::WalkDir::new(o)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.path().to_path_buf())
            .collect()
    };
    wait_for("the first extracted message", || {
        out.exists() && !cur(&out).is_empty()
    });
    let (got, err) = signal(child, libc::SIGINT);
    assert_eq!(got, Some(130), "{err}");
    assert!(err.contains("extract interrupted by SIGINT"), "{err}");
    let files = cur(&out);
    assert!(
        files.len() < 20_000,
        "the extract finished before the signal"
    );
    for f in &files {
        let rel = f.strip_prefix(&out).unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = rel.split('/').collect();
        assert!(!parts.contains(&"tmp"), "unfinished file left: {rel}");
        if !parts.contains(&"cur") {
            continue;
        }
        let b = std::fs::read(f).unwrap();
        assert!(
            b.ends_with(b"\r\n") && b.starts_with(b"Subject: m"),
            "{rel} is cut"
        );
    }
}
