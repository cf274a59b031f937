//! `mailark export pop3s://…` / `pop3://…` end to end against a real Dovecot: exact
//! bytes (dot lines, >1 MB lines, 8-bit and Japanese bodies, a 20+ MB message, the
//! interop corpus) compared with what Dovecot serves; POP3S, STLS, plaintext refused,
//! wrong password, untrusted certificate; incremental runs with 0 and N new messages
//! (nothing read at all when nothing is new, counted in Dovecot's own log); a link cut in
//! the middle of a message; the maildrop left exactly as it was, `\Seen` included (every
//! message is read with TOP, never RETR, which Dovecot would record); the password
//! nowhere in the output or the archive. Small scripted servers stand in only for what
//! Dovecot never does: no UIDL, no CAPA, `-ERR` for one message mid-session, and a TOP
//! that does not give a message whole.

mod common;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use support::dovecot::pop3_form;
use support::proxy::FaultProxy;
use support::{Dovecot, DovecotOptions};

/// Every message file of an archive, read with plain `tar --zstd` (not mailark), sorted.
fn archived_messages(archive: &Path, scratch: &Path) -> Vec<Vec<u8>> {
    let dir = scratch.join(format!(
        "x-{}",
        archive.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let st = std::process::Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success(), "tar --zstd -xf {}", archive.display());
    let mut v: Vec<Vec<u8>> = read_tree(&dir.join("maildir"))
        .into_iter()
        .filter(|(p, _)| p.contains("/cur/"))
        .map(|(_, b)| b)
        .collect();
    v.sort();
    v
}

/// Everything in the archive file after decompression, for secret grepping.
fn decompressed(archive: &Path) -> Vec<u8> {
    zstd::stream::decode_all(std::fs::File::open(archive).unwrap()).unwrap()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The maildrop for "nothing changed" checks: the flags Dovecot reports for every
/// message, then every file with its name (Maildir flag letters included) and bytes.
/// Dovecot records a session's flag changes in its index and renames the files only at
/// a later sync (a RETR'd message can show `\Seen` over IMAP long before its file gets
/// the `S`); `doveadm fetch` reads the index and syncs, so both views are current.
/// A file is named without its `:2,` suffix when it has no flag letter: any session
/// that opens the mailbox moves a message from `new/` (no suffix) to `cur/` (`:2,`),
/// Maildir's own bookkeeping, which changes no flag and no byte.
#[derive(Debug, PartialEq, Eq)]
struct Maildrop {
    flags: Vec<String>,
    files: Vec<(String, usize, String)>,
}

fn maildrop(d: &Dovecot, user: &str) -> Maildrop {
    // \Recent is not stored with a message: it only says which session saw it first.
    let flags = d
        .doveadm(&["fetch", "-u", user, "uid flags", "mailbox", "INBOX", "all"])
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter(|w| *w != "\\Recent")
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| l.starts_with("flags:"))
        .collect();
    let inbox = d.maildir(user).join("INBOX");
    let mut files: Vec<_> = ["cur", "new"]
        .iter()
        .flat_map(|sub| read_tree(&inbox.join(sub)))
        .map(|(name, bytes)| {
            let name = name
                .strip_suffix(":2,")
                .map_or(name.clone(), str::to_string);
            (name, bytes.len(), sha256_hex(&bytes))
        })
        .collect();
    files.sort();
    Maildrop { flags, files }
}

/// Waits until Dovecot has logged the end of `n` POP3 sessions of `user`. Dovecot
/// decides a session's flag changes before it logs this line and commits them just
/// after; the `(top, retr)` counts of [`pop3_sessions`] are what show none was made
/// (it sets `\Seen` only for RETR).
///
/// Dovecot 2.3.19 now and then (about 1 run in 15 of the cut-connection test) leaves
/// a session whose TLS login process was cut while pipelined commands were still
/// queued: the pop3 process stops watching its socket and would sit there until its
/// 10-minute idle timeout. After a few quiet seconds such sessions get SIGTERM, which
/// makes Dovecot end them the ordinary way: flags committed, counts logged.
fn sessions_ended(d: &Dovecot, user: &str, n: usize) {
    let start = std::time::Instant::now();
    // Generous: the machine is shared, and a cut session ends only when Dovecot notices.
    let deadline = start + std::time::Duration::from_secs(60);
    let mut nudged = false;
    while pop3_sessions(d, user).len() < n {
        if !nudged && start.elapsed() > std::time::Duration::from_secs(5) {
            nudged = true;
            for pid in open_pop3_sessions(d, user) {
                // SAFETY: signalling a Dovecot process this test's server started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Dovecot logged {} of {n} session ends:\n{}",
            pop3_sessions(d, user).len(),
            d.log()
                .lines()
                .filter(|l| l.contains("pop3"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// PIDs of `user`'s POP3 sessions that logged in but have not logged their end.
fn open_pop3_sessions(d: &Dovecot, user: &str) -> Vec<i32> {
    let log = d.log();
    let mut open: Vec<i32> = log
        .lines()
        .filter(|l| l.contains("pop3-login") && l.contains(&format!("user=<{user}>")))
        .filter_map(|l| l.split("mpid=").nth(1)?.split(',').next()?.parse().ok())
        .collect();
    for l in log.lines().filter(|l| l.contains("Disconnected")) {
        open.retain(|pid| !l.contains(&format!("<{pid}>")));
    }
    open
}

fn pop3_sessions(d: &Dovecot, user: &str) -> Vec<(u64, u64)> {
    let count = |l: &str, key: &str| -> u64 {
        let v = l.split(key).nth(1).expect("Dovecot's pop3_logout_format");
        v.split('/').next().unwrap().parse().unwrap()
    };
    d.log()
        .lines()
        .filter(|l| l.contains(&format!("pop3({user})")) && l.contains("Disconnected"))
        .map(|l| (count(l, "top="), count(l, "retr=")))
        .collect()
}

/// No session of `user` sent a single RETR.
fn no_retr(d: &Dovecot, user: &str) {
    let s = pop3_sessions(d, user);
    assert!(s.iter().all(|&(_, retr)| retr == 0), "RETR was sent: {s:?}");
}

struct Run<'a> {
    url: String,
    out: PathBuf,
    extra: Vec<&'a str>,
}

fn export(r: &Run, pw_file: &Path, ca: Option<&Path>) -> std::process::Output {
    let mut args: Vec<String> = vec![
        "export".into(),
        r.url.clone(),
        "-o".into(),
        r.out.display().to_string(),
        "--password-file".into(),
        pw_file.display().to_string(),
    ];
    if let Some(ca) = ca {
        args.push("--tls-ca-file".into());
        args.push(ca.display().to_string());
    }
    args.extend(r.extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&a)
}

/// Messages whose every byte-level edge POP3 can break.
fn tricky_messages() -> Vec<(&'static str, Vec<u8>)> {
    let mut long = b"Subject: long line\n\n".to_vec();
    // 1.5 MB on one line, dots inside and after.
    long.extend((0..1_500_000u32).map(|i| {
        if i % 997 == 0 {
            b'.'
        } else {
            b'a' + (i % 26) as u8
        }
    }));
    long.extend_from_slice(b"\n..after the long line\n");
    let mut big = b"Subject: big\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n".to_vec();
    let mut x = 0x9E3779B97F4A7C15u64;
    while big.len() < 21 << 20 {
        // Some lines start with a dot so stuffing happens throughout the big message.
        if big.len() % 5 == 0 {
            big.push(b'.');
        }
        for _ in 0..19 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for k in 0..4 {
                big.push(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                        [((x >> (k * 6)) & 63) as usize],
                );
            }
        }
        big.push(b'\n');
    }
    vec![
        (
            "dots",
            b"Subject: dots\n\n.\n..\n...\n.x\n..y\n. \nend\n".to_vec(),
        ),
        ("ends-with-dot-no-newline", b"Subject: last\n\nbody\n.".to_vec()),
        ("ends-with-dot-line", b"Subject: dot line\n\nbody\n.\n".to_vec()),
        ("headers-only", b"Subject: headers only\nX-Empty: \n".to_vec()),
        ("headers-only-no-newline", b"Subject: headers only, no newline".to_vec()),
        ("header-and-blank-line", b"Subject: no body\n\n".to_vec()),
        ("no-final-newline", b"Subject: nl\n\nno newline at the end".to_vec()),
        (
            "crlf-stored",
            b"Subject: crlf\r\n\r\n.\r\nline\r\n".to_vec(),
        ),
        (
            "8bit",
            b"Subject: 8bit\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\nd\xe9j\xe0 vu \xff\xfe\n.\xe9\n".to_vec(),
        ),
        (
            "iso-2022-jp",
            b"Subject: =?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=\nContent-Type: text/plain; charset=ISO-2022-JP\n\n\x1b$B$3$s$K$A$O\x1b(B\n.\x1b$B$3\x1b(B\n".to_vec(),
        ),
        (
            "shift_jis",
            b"Subject: sjis\nContent-Type: text/plain; charset=Shift_JIS\nContent-Transfer-Encoding: 8bit\n\n\x83\x5c\x83\x74\x83\x67\x95\x5c\r\n.\x82\xa0\x82\xa2\n".to_vec(),
        ),
        ("utf-8-japanese", "Subject: 日本語\nContent-Type: text/plain; charset=UTF-8\n\n日本語の本文です。\n.ドット\n".as_bytes().to_vec()),
        ("long-line", long),
        ("21MB", big),
    ]
}

fn seed(d: &Dovecot, user: &str, msgs: &[Vec<u8>], t0: i64) {
    // Flags on some messages, to see that they survive the export.
    let items: Vec<(Vec<u8>, &str, i64)> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (m.clone(), if i % 3 == 1 { "F" } else { "" }, t0 + i as i64))
        .collect();
    d.seed_maildir(user, "INBOX", &items);
}

#[test]
fn pop3s_export_is_byte_exact_and_leaves_the_maildrop_alone() {
    let d = Dovecot::start();
    let scratch = tempfile::tempdir().unwrap();
    let msgs: Vec<Vec<u8>> = tricky_messages().into_iter().map(|(_, m)| m).collect();
    seed(&d, "alice", &msgs, 1_700_000_000);
    let before = maildrop(&d, "alice");

    // What Dovecot serves, read over IMAP by the test's own client, must equal the
    // independent derivation (up to POP3's added final CRLF).
    let mut imap = d.raw("alice");
    let served = imap.fetch_all("INBOX");
    imap.logout();
    let mut via_imap: Vec<Vec<u8>> = served.into_iter().map(|(_, _, b)| pop3_form(&b)).collect();
    via_imap.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| pop3_form(m)).collect();
    want.sort();
    assert!(
        via_imap == want,
        "the test's model of Dovecot's CRLF form is wrong"
    );

    let out = scratch.path().join("alice.tar.zst");
    let o = export(
        &Run {
            url: d.pop3s_url("alice"),
            out: out.clone(),
            extra: vec!["--json"],
        },
        &d.password_file("alice"),
        Some(&d.ca_file()),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["messages"], msgs.len() as u64);
    assert_eq!(j["server"]["stat_messages"], msgs.len() as u64);
    assert_eq!(j["server"]["tls"], true);
    assert_eq!(j["server"]["uidl"], true);
    assert_eq!(j["server"]["pipelining"], true);
    assert_eq!(j["server"]["top"], true);
    assert_eq!(j["retrieval"], "TOP");
    assert_eq!(j["read_with_retr"].as_array().unwrap().len(), 0, "{j}");
    assert_eq!(j["folders"][0]["folder"], "INBOX");
    assert_eq!(j["folders"][0]["archived"], msgs.len() as u64);
    assert_eq!(j["count_differences"].as_array().unwrap().len(), 0);
    // Exactly the messages stored without a final newline differ from LIST, each by
    // the CRLF Dovecot adds, and the report says why.
    let sizes = j["size_differences"].as_array().unwrap();
    let no_newline = msgs.iter().filter(|m| !m.ends_with(b"\n")).count();
    assert_eq!(no_newline, 3);
    assert_eq!(sizes.len(), no_newline, "{sizes:?}");
    for s in sizes {
        assert_eq!(
            s["retr_size"].as_u64().unwrap(),
            s["list_size"].as_u64().unwrap() + 2
        );
        assert!(s["explanation"].as_str().unwrap().contains("final newline"));
    }

    assert!(
        archived_messages(&out, scratch.path()) == want,
        "archived bytes differ from what Dovecot serves"
    );
    // Index: POP3 identity and LIST size of every message.
    let ls = ls_json(&[&out]);
    assert_eq!(ls.len(), msgs.len());
    let mut uidls = std::collections::HashSet::new();
    for m in &ls {
        assert_eq!(m["folder"], "INBOX");
        assert_eq!(m["source"]["kind"], "pop3");
        assert!(m["source"]["msgno"].as_u64().unwrap() >= 1);
        assert!(uidls.insert(m["source"]["uidl"].as_str().unwrap().to_string()));
        let size = m["size"].as_u64().unwrap();
        let listed = m["source_size"].as_u64().unwrap();
        assert!(size == listed || size == listed + 2, "{m}");
    }
    run_ok(&["verify", out.to_str().unwrap()]);

    // Nothing on the server changed: same files, same bytes, same flags, \Seen too.
    sessions_ended(&d, "alice", 1);
    assert_eq!(pop3_sessions(&d, "alice"), [(msgs.len() as u64, 0)]);
    assert_eq!(maildrop(&d, "alice"), before, "the maildrop changed");
    let pw = d.password("alice");
    assert!(!contains(&o.stdout, pw) && !contains(&o.stderr, pw));
    assert!(
        !contains(&decompressed(&out), pw),
        "password in the archive"
    );
}

#[test]
fn stls_and_refusals() {
    let d = Dovecot::start();
    let scratch = tempfile::tempdir().unwrap();
    seed(
        &d,
        "bob",
        &[b"Subject: one\n\nhello\n".to_vec()],
        1_700_000_000,
    );
    let before = maildrop(&d, "bob");
    let pw = d.password_file("bob");

    // pop3:// upgrades with STLS (Dovecot offers it).
    let out = scratch.path().join("stls.tar.zst");
    let o = export(
        &Run {
            url: d.pop3_url("bob"),
            out: out.clone(),
            extra: vec!["--json"],
        },
        &pw,
        Some(&d.ca_file()),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["server"]["tls"], true);
    assert_eq!(j["messages"], 1);
    let log = d.log_when(|l| l.contains("Login: user=<bob>"));
    let login = log
        .lines()
        .find(|l| l.contains("Login: user=<bob>"))
        .expect("a login in Dovecot's log");
    assert!(login.contains("TLS"), "{login}");

    let no_archive_left = |name: &str| {
        let leftovers: Vec<_> = std::fs::read_dir(scratch.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(name))
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    };

    // Wrong password: one line, exit 2, no archive, the password not echoed.
    let bad = scratch.path().join("bad.pw");
    std::fs::write(&bad, "not-the-password-Zq9\n").unwrap();
    let o = export(
        &Run {
            url: d.pop3s_url("bob"),
            out: scratch.path().join("wrongpw.tar.zst"),
            extra: vec![],
        },
        &bad,
        Some(&d.ca_file()),
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with("mailark: error: ") && e.contains("bob") && e.contains("login"),
        "{e}"
    );
    assert!(!e.contains("not-the-password-Zq9"), "{e}");
    no_archive_left("wrongpw");

    // Untrusted certificate: the self-signed cert is not in the system store.
    let o = export(
        &Run {
            url: d.pop3s_url("bob"),
            out: scratch.path().join("untrusted.tar.zst"),
            extra: vec![],
        },
        &pw,
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("TLS") && e.contains(&d.pop3s_port.to_string()),
        "{e}"
    );
    no_archive_left("untrusted");
    sessions_ended(&d, "bob", 1);
    no_retr(&d, "bob");
    assert_eq!(maildrop(&d, "bob"), before);
}

#[test]
fn plaintext_is_refused_unless_allowed() {
    // A Dovecot without TLS at all: pop3:// cannot upgrade.
    let d = Dovecot::start_with(DovecotOptions {
        extra_conf: "ssl = no\nservice pop3-login {\n  inet_listener pop3s {\n    port = 0\n  }\n}\nservice imap-login {\n  inet_listener imaps {\n    port = 0\n  }\n}\n".into(),
        ..DovecotOptions::default()
    });
    let scratch = tempfile::tempdir().unwrap();
    seed(
        &d,
        "alice",
        &[b"Subject: clear\n\ntext\n".to_vec()],
        1_700_000_000,
    );
    let pw = d.password_file("alice");
    let out = scratch.path().join("clear.tar.zst");
    let r = Run {
        url: d.pop3_url("alice"),
        out: out.clone(),
        extra: vec![],
    };
    let o = export(&r, &pw, None);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("--allow-plaintext") && e.contains("STLS"), "{e}");
    assert!(!out.exists());
    // No login was even tried.
    assert!(!d.log().contains("user=<alice>"), "{}", d.log());

    let o = export(
        &Run {
            extra: vec!["--allow-plaintext", "--json"],
            ..r
        },
        &pw,
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["server"]["tls"], false);
    assert_eq!(j["messages"], 1);

    // An empty maildrop is a clean, empty archive.
    let empty = scratch.path().join("empty.tar.zst");
    let o = export(
        &Run {
            url: d.pop3_url("bob"),
            out: empty.clone(),
            extra: vec!["--allow-plaintext", "--json"],
        },
        &d.password_file("bob"),
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(
        (
            j["messages"].as_u64(),
            j["server"]["stat_messages"].as_u64()
        ),
        (Some(0), Some(0))
    );
    run_ok(&["verify", empty.to_str().unwrap()]);
}

#[test]
fn incremental_with_zero_then_n_new_messages() {
    let d = Dovecot::start();
    let scratch = tempfile::tempdir().unwrap();
    let first: Vec<Vec<u8>> = (0..6)
        .map(|i| format!("Subject: first {i}\n\nbody {i}\n").into_bytes())
        .collect();
    seed(&d, "alice", &first, 1_700_000_000);
    let before = maildrop(&d, "alice");
    let pw = d.password_file("alice");
    let ca = d.ca_file();
    let url = d.pop3s_url("alice");
    let full = scratch.path().join("full.tar.zst");
    let o = export(
        &Run {
            url: url.clone(),
            out: full.clone(),
            extra: vec![],
        },
        &pw,
        Some(&ca),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Nothing new: nothing is RETRieved at all (Dovecot's own count), an empty delta.
    let d0 = scratch.path().join("delta0.tar.zst");
    let o = export(
        &Run {
            url: url.clone(),
            out: d0.clone(),
            extra: vec!["--json", "--since", full.to_str().unwrap()],
        },
        &pw,
        Some(&ca),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["messages"], 0);
    assert_eq!(j["incremental"]["already_archived"], 6);
    assert_eq!(j["incremental"]["matched_by_uidl"], 6);
    sessions_ended(&d, "alice", 2);
    assert_eq!(pop3_sessions(&d, "alice"), [(6, 0), (0, 0)]);
    assert_eq!(maildrop(&d, "alice"), before, "the maildrop changed");

    // N new messages (delivered the IMAP way, so Dovecot gives them new UIDs).
    let mut imap = d.raw("alice");
    for i in 0..3 {
        let m = format!("Subject: new {i}\r\n\r\nnew body {i}\r\n");
        assert!(imap.append("INBOX", "", None, m.as_bytes()).ok());
    }
    imap.logout();
    let before = maildrop(&d, "alice");
    let d1 = scratch.path().join("delta1.tar.zst");
    let o = export(
        &Run {
            url: url.clone(),
            out: d1.clone(),
            extra: vec![
                "--json",
                "--since",
                full.to_str().unwrap(),
                "--since",
                d0.to_str().unwrap(),
            ],
        },
        &pw,
        Some(&ca),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["messages"], 3);
    assert_eq!(j["incremental"]["already_archived"], 6);
    sessions_ended(&d, "alice", 3);
    assert_eq!(pop3_sessions(&d, "alice"), [(6, 0), (0, 0), (3, 0)]);
    assert_eq!(maildrop(&d, "alice"), before, "the maildrop changed");
    let subjects: Vec<String> = ls_json(&[&d1])
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_string())
        .collect();
    let mut subjects = subjects;
    subjects.sort();
    assert_eq!(subjects, ["new 0", "new 1", "new 2"]);
    // The chain verifies as a whole; the delta alone misses its parent.
    run_ok(&[
        "verify",
        full.to_str().unwrap(),
        d0.to_str().unwrap(),
        d1.to_str().unwrap(),
    ]);
    let o = run(&["verify", d1.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("parent"), "{}", stdout(&o));
}

#[test]
fn renumbered_uidls_fall_back_to_content() {
    let d = Dovecot::start();
    let scratch = tempfile::tempdir().unwrap();
    let msgs: Vec<Vec<u8>> = (0..4)
        .map(|i| format!("Subject: keep {i}\n\nbody {i}\n").into_bytes())
        .collect();
    seed(&d, "alice", &msgs, 1_700_000_000);
    let (pw, ca) = (d.password_file("alice"), d.ca_file());
    let full = scratch.path().join("full.tar.zst");
    let r = Run {
        url: d.pop3s_url("alice"),
        out: full.clone(),
        extra: vec![],
    };
    assert_eq!(export(&r, &pw, Some(&ca)).status.code(), Some(0));
    // The server changes its UIDL scheme (as a migration or a config change does).
    let conf = std::fs::read_to_string(d.conf()).unwrap();
    assert!(conf.contains("pop3_uidl_format = %08Xu%08Xv"));
    std::fs::write(d.conf(), conf.replace("%08Xu%08Xv", "renumbered-%u")).unwrap();
    d.doveadm(&["reload"]);
    seed(
        &d,
        "alice",
        &[b"Subject: fresh\n\nnew\n".to_vec()],
        1_800_000_000,
    );
    let delta = scratch.path().join("delta.tar.zst");
    let o = export(
        &Run {
            out: delta.clone(),
            extra: vec!["--json", "--since", full.to_str().unwrap()],
            ..r
        },
        &pw,
        Some(&ca),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["messages"], 1, "{j}");
    assert_eq!(j["incremental"]["matched_by_content"], 4);
    assert_eq!(j["incremental"]["downloaded_to_compare"], 5);
    let ls = ls_json(&[&delta]);
    assert_eq!(ls[0]["subject"], "fresh");
    assert!(ls[0]["source"]["uidl"]
        .as_str()
        .unwrap()
        .starts_with("renumbered-"));
}

#[test]
fn cut_connection_mid_retr_reconnects_and_completes() {
    let d = Dovecot::start();
    let scratch = tempfile::tempdir().unwrap();
    let mut msgs: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("Subject: m{i}\n\n{}\n", "line .\n..\n".repeat(500 + i)).into_bytes())
        .collect();
    let mut big = b"Subject: big\n\n".to_vec();
    while big.len() < 3 << 20 {
        big.extend_from_slice(b".dotted line of the big message\n");
    }
    msgs.insert(7, big);
    seed(&d, "alice", &msgs, 1_700_000_000);
    let before = maildrop(&d, "alice");
    // Cut the first two connections inside the message data (TLS through the proxy).
    let proxy = FaultProxy::start(d.pop3s_port, 400_000, 2);
    let out = scratch.path().join("cut.tar.zst");
    let o = export(
        &Run {
            url: format!("pop3s://alice@127.0.0.1:{}", proxy.port),
            out: out.clone(),
            extra: vec!["--json"],
        },
        &d.password_file("alice"),
        Some(&d.ca_file()),
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let j = json(&o);
    assert_eq!(j["reconnects"], 2, "{j}");
    assert!(proxy.connections() >= 3);
    assert_eq!(j["messages"], msgs.len() as u64);
    assert_eq!(j["folders"][0]["failures"].as_array().unwrap().len(), 0);
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| pop3_form(m)).collect();
    want.sort();
    assert!(
        archived_messages(&out, scratch.path()) == want,
        "archive not exact after reconnects"
    );
    run_ok(&["verify", out.to_str().unwrap()]);
    sessions_ended(&d, "alice", 3);
    no_retr(&d, "alice");
    assert_eq!(maildrop(&d, "alice"), before, "the maildrop changed");
}

#[test]
fn message_that_always_breaks_the_link_is_skipped_not_the_rest() {
    let d = Dovecot::start();
    let scratch = tempfile::tempdir().unwrap();
    let mut msgs: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("Subject: small {i}\n\nbody\n").into_bytes())
        .collect();
    let mut big = b"Subject: doomed\n\n".to_vec();
    while big.len() < 3 << 20 {
        big.extend_from_slice(b"the link breaks inside this message every time\n");
    }
    msgs.push(big);
    seed(&d, "alice", &msgs, 1_700_000_000);
    let before = maildrop(&d, "alice");
    // Every connection but the fourth is cut 1 MB in: always inside the big message.
    let proxy = FaultProxy::start(d.pop3s_port, 1 << 20, 3);
    let out = scratch.path().join("doomed.tar.zst");
    let o = export(
        &Run {
            url: format!("pop3s://alice@127.0.0.1:{}", proxy.port),
            out: out.clone(),
            extra: vec!["--json"],
        },
        &d.password_file("alice"),
        Some(&d.ca_file()),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["reconnects"], 3, "{j}");
    assert_eq!(j["messages"], 10);
    let skipped = j["folders"][0]["failures"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0]["id"].as_str().unwrap().starts_with("message "));
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("connection broke each of 3 times"),
        "{skipped:?}"
    );
    let mut want: Vec<Vec<u8>> = msgs[..10].iter().map(|m| pop3_form(m)).collect();
    want.sort();
    assert!(archived_messages(&out, scratch.path()) == want);
    sessions_ended(&d, "alice", 4);
    no_retr(&d, "alice");
    assert_eq!(maildrop(&d, "alice"), before, "the maildrop changed");
}

#[test]
fn interop_corpus_as_dovecot_serves_it() {
    let d = Dovecot::start();
    let scratch = tempfile::tempdir().unwrap();
    let corpus = corpus_messages(scratch.path());
    let msgs: Vec<Vec<u8>> = corpus.iter().map(|(_, b)| b.clone()).collect();
    seed(&d, "alice", &msgs, 1_600_000_000);
    let before = maildrop(&d, "alice");
    let out = scratch.path().join("corpus.tar.zst");
    let o = export(
        &Run {
            url: d.pop3s_url("alice"),
            out: out.clone(),
            extra: vec!["--json"],
        },
        &d.password_file("alice"),
        Some(&d.ca_file()),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["messages"], corpus.len() as u64);
    // Every corpus message came whole from TOP: none needed RETR.
    assert_eq!(j["retrieval"], "TOP");
    assert_eq!(j["read_with_retr"].as_array().unwrap().len(), 0, "{j}");
    sessions_ended(&d, "alice", 1);
    assert_eq!(pop3_sessions(&d, "alice"), [(corpus.len() as u64, 0)]);
    assert_eq!(maildrop(&d, "alice"), before, "the maildrop changed");
    // Reference: the stored files in POP3 form. Dovecot's IMAP rendering, read by the
    // test's own client, agrees except that IMAP turns NUL into 0x80 where POP3 sends
    // the NUL itself.
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| pop3_form(m)).collect();
    want.sort();
    let mut imap = d.raw("alice");
    let mut via_imap: Vec<Vec<u8>> = imap
        .fetch_all("INBOX")
        .into_iter()
        .map(|(_, _, b)| pop3_form(&b))
        .collect();
    imap.logout();
    via_imap.sort();
    let mut nul_mapped: Vec<Vec<u8>> = want
        .iter()
        .map(|m| m.iter().map(|&b| if b == 0 { 0x80 } else { b }).collect())
        .collect();
    nul_mapped.sort();
    assert!(
        via_imap == nul_mapped,
        "the test's model of Dovecot's rendering is wrong"
    );
    let got = archived_messages(&out, scratch.path());
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want).filter(|(a, b)| a != b) {
        let p = a
            .iter()
            .zip(b.iter())
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        eprintln!(
            "len {} vs {}, first diff at {p}: {:?} vs {:?}",
            a.len(),
            b.len(),
            String::from_utf8_lossy(&a[p.saturating_sub(20)..(p + 20).min(a.len())]),
            String::from_utf8_lossy(&b[p.saturating_sub(20)..(p + 20).min(b.len())])
        );
    }
    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        differ, 0,
        "{differ} corpus messages differ from what Dovecot serves"
    );
}

// ---- a scripted RFC 1939-only server, for what Dovecot never does ----

/// Serves `msgs` with USER/PASS only: no CAPA, no UIDL, no PIPELINING, no STLS; RETR of
/// message `refuse` answers `-ERR`. Every command line received is logged.
struct OldServer {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

/// What a scripted server does beyond RFC 1939's required commands.
#[derive(Clone, Copy, Default)]
struct Extras {
    /// Answers CAPA with TOP, UIDL, PIPELINING and USER, and serves TOP and UIDL. Its
    /// TOP is a sloppy one Dovecot never resembles: it adds a blank line to a message
    /// that has no body, and refuses TOP for message `top_refuse`.
    top: bool,
    top_refuse: Option<u32>,
    /// LIST (and STAT) announce this message 7 bytes longer than what RETR sends, as
    /// a server does that serves something else in its place.
    list_longer: Option<u32>,
}

impl OldServer {
    fn start(msgs: Vec<Vec<u8>>, refuse: Option<u32>) -> OldServer {
        OldServer::start_with(msgs, refuse, Extras::default())
    }

    fn start_with(msgs: Vec<Vec<u8>>, refuse: Option<u32>, extras: Extras) -> OldServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let msgs = Arc::new(msgs);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let (msgs, log) = (msgs.clone(), log2.clone());
                std::thread::spawn(move || serve_old(s, &msgs, refuse, extras, &log));
            }
        });
        OldServer { port, log }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn commands(&self, word: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.split(' ').next() == Some(word))
            .count()
    }
}

/// `msg` dot-stuffed, CRLF-terminated, then the terminator.
fn stuffed(msg: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    for l in msg.split_inclusive(|&b| b == b'\n') {
        if l.starts_with(b".") {
            r.push(b'.');
        }
        r.extend_from_slice(l);
    }
    r.extend_from_slice(b".\r\n");
    r
}

fn serve_old(
    s: TcpStream,
    msgs: &[Vec<u8>],
    refuse: Option<u32>,
    extras: Extras,
    log: &Mutex<Vec<String>>,
) {
    let mut rd = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let _ = w.write_all(b"+OK old POP3 server ready\r\n");
    let listed =
        |n: usize| msgs[n - 1].len() + 7 * usize::from(extras.list_longer == Some(n as u32));
    let mut line = String::new();
    loop {
        line.clear();
        if rd.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        log.lock().unwrap().push(cmd.clone());
        let mut words = cmd.split(' ');
        let reply: Vec<u8> = match words.next().unwrap_or("") {
            "USER" => b"+OK\r\n".to_vec(),
            "PASS" if words.next() == Some("old-pw") => b"+OK maildrop ready\r\n".to_vec(),
            "PASS" => b"-ERR invalid password\r\n".to_vec(),
            "STAT" => format!(
                "+OK {} {}\r\n",
                msgs.len(),
                (1..=msgs.len()).map(listed).sum::<usize>()
            )
            .into_bytes(),
            "LIST" => {
                let mut r = b"+OK\r\n".to_vec();
                for i in 1..=msgs.len() {
                    r.extend(format!("{i} {}\r\n", listed(i)).bytes());
                }
                r.extend_from_slice(b".\r\n");
                r
            }
            "RETR" => {
                let n: u32 = words.next().unwrap().parse().unwrap();
                if Some(n) == refuse {
                    b"-ERR message is corrupt on disk\r\n".to_vec()
                } else {
                    [&b"+OK\r\n"[..], &stuffed(&msgs[n as usize - 1])].concat()
                }
            }
            "CAPA" if extras.top => b"+OK\r\nTOP\r\nUIDL\r\nPIPELINING\r\nUSER\r\n.\r\n".to_vec(),
            "UIDL" if extras.top => {
                let mut r = b"+OK\r\n".to_vec();
                for i in 1..=msgs.len() {
                    r.extend(format!("{i} uid-{i}\r\n").bytes());
                }
                r.extend_from_slice(b".\r\n");
                r
            }
            "TOP" if extras.top => {
                let n: u32 = words.next().unwrap().parse().unwrap();
                let lines: u64 = words.next().unwrap().parse().unwrap();
                assert!(lines >= 1 << 30, "TOP asked for only {lines} lines");
                let m = &msgs[n as usize - 1];
                if Some(n) == extras.top_refuse {
                    b"-ERR TOP is not available for this message\r\n".to_vec()
                } else if !m.windows(4).any(|w| w == b"\r\n\r\n") {
                    // No body: this server puts in the separator line TOP "defines".
                    [&b"+OK\r\n"[..], &stuffed(&[&m[..], b"\r\n"].concat())].concat()
                } else {
                    [&b"+OK\r\n"[..], &stuffed(m)].concat()
                }
            }
            "QUIT" => {
                let _ = w.write_all(b"+OK bye\r\n");
                return;
            }
            _ => b"-ERR unknown command\r\n".to_vec(),
        };
        if w.write_all(&reply).is_err() {
            return;
        }
    }
}

#[test]
fn server_without_uidl_capa_or_pipelining() {
    let scratch = tempfile::tempdir().unwrap();
    let msg = |i: u32| format!("Subject: old {i}\r\n\r\n.dot {i}\r\n..two\r\n").into_bytes();
    let pw = scratch.path().join("pw");
    std::fs::write(&pw, "old-pw\n").unwrap();
    // Message 3 is refused: reported with its number, the others still archived, exit 1.
    let srv = OldServer::start((1..=4).map(msg).collect(), Some(3));
    let url = format!("pop3://u@127.0.0.1:{}", srv.port);
    let full = scratch.path().join("full.tar.zst");
    let r = Run {
        url: url.clone(),
        out: full.clone(),
        extra: vec!["--allow-plaintext", "--json"],
    };
    let o = export(&r, &pw, None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["messages"], 3);
    assert_eq!(j["server"]["uidl"], false);
    assert_eq!(j["server"]["top"], false);
    assert_eq!(j["server"]["login"], "USER/PASS");
    // No CAPA, so no TOP known: RETR, and a note that the server may mark mail seen.
    assert_eq!(j["retrieval"], "RETR");
    assert_eq!(srv.commands("TOP"), 0);
    let notes: Vec<&str> = j["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("no TOP") && n.contains("may mark them as seen")),
        "{notes:?}"
    );
    let skipped = j["folders"][0]["failures"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["id"], "message 3");
    assert!(skipped[0]["reason"]
        .as_str()
        .unwrap()
        .contains("corrupt on disk"));
    assert_eq!(srv.commands("QUIT"), 0, "QUIT would commit the session");
    let ls = ls_json(&[&full]);
    assert!(ls.iter().all(|m| m["source"]["uidl"].is_null()));
    let mut got = archived_messages(&full, scratch.path());
    let mut want: Vec<Vec<u8>> = [1, 2, 4].map(msg).to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // Incremental with no UIDL: identity by content. Messages 1-4 again (3 now readable)
    // plus a new one: everything is downloaded to compare, only 3 and 5 are stored.
    let srv2 = OldServer::start((1..=5).map(msg).collect(), None);
    let delta = scratch.path().join("delta.tar.zst");
    let o = export(
        &Run {
            url: format!("pop3://u@127.0.0.1:{}", srv2.port),
            out: delta.clone(),
            extra: vec!["--allow-plaintext", "--since", full.to_str().unwrap()],
        },
        &pw,
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("no UIDL") && text.contains("downloaded"),
        "{text}"
    );
    assert_eq!(srv2.commands("RETR"), 5);
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("may mark them as seen"))
            .count(),
        1,
        "{text}"
    );
    let mut got = archived_messages(&delta, scratch.path());
    got.sort();
    assert_eq!(got, vec![msg(3), msg(5)]);
}

#[test]
fn top_that_is_not_whole_falls_back_to_retr_for_that_message_only() {
    let scratch = tempfile::tempdir().unwrap();
    let pw = scratch.path().join("pw");
    std::fs::write(&pw, "old-pw\n").unwrap();
    let msgs: Vec<Vec<u8>> = vec![
        b"Subject: one\r\n\r\n.dot\r\n".to_vec(),
        // Headers only: this server's TOP adds a blank line, RETR does not.
        b"Subject: headers only\r\nX-A: b\r\n".to_vec(),
        b"Subject: three\r\n\r\nbody\r\n.\r\n".to_vec(),
        // TOP refused for this one.
        b"Subject: four\r\n\r\n..two dots\r\n".to_vec(),
        b"Subject: five\r\n\r\nlast\r\n".to_vec(),
    ];
    let srv = OldServer::start_with(
        msgs.clone(),
        None,
        Extras {
            top: true,
            top_refuse: Some(4),
            ..Extras::default()
        },
    );
    let out = scratch.path().join("fallback.tar.zst");
    let o = export(
        &Run {
            url: format!("pop3://u@127.0.0.1:{}", srv.port),
            out: out.clone(),
            extra: vec!["--allow-plaintext", "--json"],
        },
        &pw,
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["messages"], 5);
    assert_eq!(
        (j["server"]["top"].as_bool(), j["retrieval"].as_str()),
        (Some(true), Some("TOP"))
    );
    let fb = j["read_with_retr"].as_array().unwrap();
    let fb: Vec<(u64, &str, &str)> = fb
        .iter()
        .map(|f| {
            (
                f["msgno"].as_u64().unwrap(),
                f["uidl"].as_str().unwrap(),
                f["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(fb.len(), 2, "{fb:?}");
    assert_eq!((fb[0].0, fb[0].1), (2, "uid-2"));
    assert!(fb[0].2.contains("LIST announced"), "{fb:?}");
    assert_eq!((fb[1].0, fb[1].1), (4, "uid-4"));
    assert!(fb[1].2.contains("refused TOP"), "{fb:?}");
    let notes = j["notes"].to_string();
    assert!(
        notes.contains("2 (UIDL uid-2), 4 (UIDL uid-4) read with RETR")
            && notes.contains("may mark them as seen"),
        "{notes}"
    );
    // Every message was asked for with TOP; RETR only for the two.
    let lines = srv.lines();
    let retr: Vec<&String> = lines.iter().filter(|l| l.starts_with("RETR")).collect();
    assert_eq!(retr, ["RETR 2", "RETR 4"]);
    assert_eq!(srv.commands("TOP"), 5);
    // The archive holds what RETR gives, not the padded TOP answer.
    let mut want = msgs.clone();
    want.sort();
    assert_eq!(archived_messages(&out, scratch.path()), want);
    assert_eq!(j["size_differences"].as_array().unwrap().len(), 0, "{j}");
}

/// A message that arrives with another size than LIST announced (and not the known
/// final-CRLF case) is archived as it came, but the export says so and exits 1: the
/// server may have sent a stand-in for the mail.
#[test]
fn size_other_than_list_is_an_error() {
    let scratch = tempfile::tempdir().unwrap();
    let pw = scratch.path().join("pw");
    std::fs::write(&pw, "old-pw\n").unwrap();
    let msgs: Vec<Vec<u8>> = (1..=3)
        .map(|i| format!("Subject: m{i}\r\n\r\nbody {i}\r\n").into_bytes())
        .collect();
    let srv = OldServer::start_with(
        msgs.clone(),
        None,
        Extras {
            list_longer: Some(2),
            ..Extras::default()
        },
    );
    let out = scratch.path().join("sizes.tar.zst");
    let o = export(
        &Run {
            url: format!("pop3://u@127.0.0.1:{}", srv.port),
            out: out.clone(),
            extra: vec!["--allow-plaintext", "--json"],
        },
        &pw,
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let j = json(&o);
    let d = j["size_differences"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{j}");
    assert_eq!(d[0]["msgno"], 2);
    assert_eq!(d[0]["list_size"], msgs[1].len() as u64 + 7);
    assert_eq!(d[0]["retr_size"], msgs[1].len() as u64);
    assert!(d[0]["explanation"].is_null(), "{j}");
    let mut want = msgs.clone();
    want.sort();
    assert_eq!(archived_messages(&out, scratch.path()), want);

    // The human report names it as a problem, too.
    let o = export(
        &Run {
            url: format!("pop3://u@127.0.0.1:{}", srv.port),
            out: scratch.path().join("sizes2.tar.zst"),
            extra: vec!["--allow-plaintext"],
        },
        &pw,
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "size: message 2: LIST said {}, the server sent {}",
            msgs[1].len() + 7,
            msgs[1].len()
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn locked_maildrop_is_waited_for() {
    // With pop3_lock_session Dovecot refuses a second session with [IN-USE] while the
    // first holds the maildrop — what a reconnect after a dropped link can meet.
    let d = Dovecot::start_with(DovecotOptions {
        extra_conf: "pop3_lock_session = yes\n".into(),
        ..DovecotOptions::default()
    });
    let scratch = tempfile::tempdir().unwrap();
    let msgs: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("Subject: locked {i}\n\nbody\n").into_bytes())
        .collect();
    seed(&d, "alice", &msgs, 1_700_000_000);
    // Another client holds the maildrop.
    let holder = TcpStream::connect(("127.0.0.1", d.pop3_port)).unwrap();
    let mut rd = BufReader::new(holder.try_clone().unwrap());
    let mut w = holder.try_clone().unwrap();
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    write!(w, "USER alice\r\nPASS {}\r\n", d.password("alice")).unwrap();
    for _ in 0..2 {
        line.clear();
        rd.read_line(&mut line).unwrap();
        assert!(line.starts_with("+OK"), "{line}");
    }
    let out = scratch.path().join("locked.tar.zst");
    let child = common::bin()
        .args(["export", &d.pop3s_url("alice"), "-o"])
        .arg(&out)
        .arg("--password-file")
        .arg(d.password_file("alice"))
        .arg("--tls-ca-file")
        .arg(d.ca_file())
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Release the lock only once Dovecot has turned the export away (after its own
    // 10 s lock wait).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !d.log().contains("Couldn't lock POP3 session") {
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(rd);
    drop(w);
    drop(holder);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["messages"], 5);
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| pop3_form(m)).collect();
    want.sort();
    assert!(archived_messages(&out, scratch.path()) == want);
}

#[test]
fn apop_when_asked_for_in_the_url() {
    // Dovecot offers APOP (a greeting timestamp) once the mechanism is enabled.
    let d = Dovecot::start_with(DovecotOptions {
        extra_conf: "auth_mechanisms = plain login apop\n".into(),
        ..DovecotOptions::default()
    });
    let scratch = tempfile::tempdir().unwrap();
    seed(
        &d,
        "alice",
        &[b"Subject: apop\n\nhi\n".to_vec()],
        1_700_000_000,
    );
    let url = format!("pop3s://alice;AUTH=+APOP@127.0.0.1:{}", d.pop3s_port);
    let out = scratch.path().join("apop.tar.zst");
    let o = export(
        &Run {
            url,
            out: out.clone(),
            extra: vec!["--json"],
        },
        &d.password_file("alice"),
        Some(&d.ca_file()),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["server"]["login"], "APOP");
    assert_eq!(j["messages"], 1);
    // The URL recorded in the archive names the account, not the login method.
    assert_eq!(
        j["source"],
        format!("pop3s://alice@127.0.0.1:{}", d.pop3s_port)
    );
    let log = d.log_when(|l| l.contains("method=APOP"));
    assert!(log.contains("method=APOP"), "{log}");

    // Without the mechanism there is no timestamp: a clear refusal, no archive.
    let plain = Dovecot::start();
    let out = scratch.path().join("no-apop.tar.zst");
    let o = export(
        &Run {
            url: format!("pop3s://alice;AUTH=+APOP@127.0.0.1:{}", plain.pop3s_port),
            out: out.clone(),
            extra: vec![],
        },
        &plain.password_file("alice"),
        Some(&plain.ca_file()),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("APOP"), "{}", stderr(&o));
    assert!(!out.exists());
}

/// The first line of an archive's index, read with plain `tar`.
fn header_of(p: &Path) -> serde_json::Value {
    let idx = std::process::Command::new("tar")
        .args(["--zstd", "-xOf"])
        .arg(p)
        .arg("index.jsonl")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&idx.stdout).into_owned();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

/// The parent of a delta is the newest archive of the `--since` chain, whatever order
/// the archives are given in; a delta without its full archive is refused.
#[test]
fn since_parent_is_the_chain_tip_in_any_order() {
    let d = Dovecot::start();
    let scratch = tempfile::tempdir().unwrap();
    let msgs: Vec<Vec<u8>> = (0..2)
        .map(|i| format!("Subject: m {i}\n\nbody {i}\n").into_bytes())
        .collect();
    seed(&d, "alice", &msgs, 1_700_000_000);
    let (pw, ca, url) = (d.password_file("alice"), d.ca_file(), d.pop3s_url("alice"));
    let go = |out: &Path, extra: Vec<&str>| {
        export(
            &Run {
                url: url.clone(),
                out: out.to_path_buf(),
                extra,
            },
            &pw,
            Some(&ca),
        )
    };
    let full = scratch.path().join("full.tar.zst");
    let d0 = scratch.path().join("d0.tar.zst");
    let d1 = scratch.path().join("d1.tar.zst");
    let (full_s, d0_s) = (full.to_str().unwrap(), d0.to_str().unwrap());
    assert_eq!(go(&full, vec![]).status.code(), Some(0));
    let o = go(&d0, vec!["--since", full_s]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = go(&d1, vec!["--since", d0_s, "--since", full_s]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        header_of(&d1)["parent"]["archive_id"],
        header_of(&d0)["archive_id"]
    );
    run_ok(&["verify", full_s, d0_s, d1.to_str().unwrap()]);

    let lone = scratch.path().join("lone.tar.zst");
    let o = go(&lone, vec!["--since", d0_s]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains(d0_s), "{}", stderr(&o));
    assert!(!lone.exists());
}
