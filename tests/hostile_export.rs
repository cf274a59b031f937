//! `mailark export` as a child process against scripted servers that never end an
//! answer: the export must stop within seconds, report the message as not archived
//! (exit 1) naming the fault, and the child's peak RSS (its `wait4` maxrss) must stay far below what the
//! server pushed at it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

/// Peak RSS the child may reach: well above an export's own needs, far below the
/// gigabyte each flood offers.
const CHILD_PEAK_LIMIT: u64 = 300 << 20;

/// Writes `pattern` until the peer stops reading or 1 GiB went out.
fn flood(w: &mut std::net::TcpStream, pattern: &[u8]) {
    let chunk: Vec<u8> = pattern.iter().copied().cycle().take(64 * 1024).collect();
    w.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent = 0u64;
    while sent < 1 << 30 && w.write_all(&chunk).is_ok() {
        sent += chunk.len() as u64;
    }
}

/// A POP3 server whose one message (LIST size 100) never ends.
fn endless_pop3() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut rd = BufReader::new(s.try_clone().unwrap());
                let _ = s.write_all(b"+OK scripted\r\n");
                let mut line = String::new();
                while rd.read_line(&mut line).unwrap_or(0) > 0 {
                    let cmd = line.trim_end().to_ascii_uppercase();
                    line.clear();
                    let out: &[u8] = match cmd.split(' ').next().unwrap_or("") {
                        "CAPA" => b"+OK\r\nUSER\r\nUIDL\r\n.\r\n",
                        "STAT" => b"+OK 1 100\r\n",
                        "LIST" => b"+OK\r\n1 100\r\n.\r\n",
                        "UIDL" => b"+OK\r\n1 endless\r\n.\r\n",
                        "RETR" | "TOP" => {
                            let _ = s.write_all(b"+OK\r\n");
                            flood(&mut s, b"Subject: more and more\r\n");
                            return;
                        }
                        _ => b"+OK\r\n",
                    };
                    if s.write_all(out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Runs mailark with `args`, killing it after `limit`; (exit code, stdout+stderr, peak
/// RSS in bytes, wall time).
// The child is reaped by `wait4` (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str], limit: Duration) -> (Option<i32>, String, u64, Duration) {
    let t0 = Instant::now();
    let child = bin()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child; status and rusage are valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        if t0.elapsed() > limit {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    let mut text = String::new();
    for mut p in [
        Box::new(child.stdout.unwrap()) as Box<dyn std::io::Read>,
        Box::new(child.stderr.unwrap()),
    ] {
        let _ = p.read_to_string(&mut text);
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, text, ru.ru_maxrss as u64 * 1024, took)
}

#[test]
fn a_pop3_message_that_never_ends_stops_the_export_with_bounded_memory() {
    let port = endless_pop3();
    let t = tempfile::tempdir().unwrap();
    let pw = t.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    let ar = t.path().join("a.tar.zst");
    let (code, text, peak, took) = run_measured(
        &[
            "export",
            &format!("pop3://alice@127.0.0.1:{port}"),
            "-o",
            ar.to_str().unwrap(),
            "--password-file",
            pw.to_str().unwrap(),
            "--allow-plaintext",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("LIST announced 100"), "{text}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(peak < CHILD_PEAK_LIMIT, "child peak RSS {peak} bytes");
}

/// An IMAP server that logs in, then answers LIST with `list` and floods `flood_with`.
fn hostile_imap(list: &'static [u8], flood_with: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut rd = BufReader::new(s.try_clone().unwrap());
                let _ = s.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted\r\n");
                let mut line = String::new();
                let mut auth_tag: Option<String> = None;
                while rd.read_line(&mut line).unwrap_or(0) > 0 {
                    let l = line.trim_end().to_string();
                    line.clear();
                    if let Some(t) = auth_tag.take() {
                        let _ = s.write_all(format!("{t} OK logged in\r\n").as_bytes());
                        continue;
                    }
                    let (tag, cmd) = l.split_once(' ').unwrap_or((&l, ""));
                    let up = cmd.to_ascii_uppercase();
                    if up.starts_with("AUTHENTICATE") {
                        auth_tag = Some(tag.to_string());
                        let _ = s.write_all(b"+ \r\n");
                    } else if up.starts_with("CAPABILITY") {
                        let _ = s.write_all(
                            format!("* CAPABILITY IMAP4rev1\r\n{tag} OK\r\n").as_bytes(),
                        );
                    } else if up.starts_with("LIST") {
                        let _ = s.write_all(list);
                        flood(&mut s, flood_with);
                        return;
                    } else {
                        let _ = s.write_all(format!("{tag} OK\r\n").as_bytes());
                    }
                }
            });
        }
    });
    port
}

#[test]
fn an_endless_imap_line_or_a_100_gb_literal_stops_the_export_with_bounded_memory() {
    for (list, flood_with, want) in [
        (&b"* LIST () \"/\" "[..], &b"a"[..], "line longer than"),
        (
            &b"* LIST () \"/\" {107374182400}\r\n"[..],
            &b"0123456789"[..],
            "107374182400",
        ),
    ] {
        let port = hostile_imap(list, flood_with);
        let t = tempfile::tempdir().unwrap();
        let pw = t.path().join("pw");
        std::fs::write(&pw, "pw\n").unwrap();
        let ar = t.path().join("a.tar.zst");
        let (code, text, peak, took) = run_measured(
            &[
                "export",
                &format!("imap://alice@127.0.0.1:{port}"),
                "-o",
                ar.to_str().unwrap(),
                "--password-file",
                pw.to_str().unwrap(),
                "--allow-plaintext",
            ],
            Duration::from_secs(90),
        );
        assert!(matches!(code, Some(1) | Some(2)), "exit {code:?}: {text}");
        assert!(text.contains(want), "{text}");
        assert!(took < Duration::from_secs(30), "{took:?}");
        assert!(peak < CHILD_PEAK_LIMIT, "child peak RSS {peak} bytes");
    }
}
