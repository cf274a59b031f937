//! `-v` and `-vv` against a real Dovecot: `-v` tells per-folder events, `-vv` traces the
//! IMAP and POP3 conversation, and nothing printed at either level holds the password
//! (plain or as a SASL PLAIN blob) or a message body.

mod common;
mod support;

use base64::Engine;
use common::*;
use support::{Dovecot, DovecotOptions};

const SECRET: &str = "Tr4ce-Secret-ZQX-Ω";
const BODY_MARK: &str = "body-mark-7f3a9c";

fn server() -> Dovecot {
    let d = Dovecot::start_with(DovecotOptions {
        users: vec![
            ("alice".into(), SECRET.into()),
            ("bob".into(), format!("{SECRET}-bob")),
        ],
        ..Default::default()
    });
    let msg = |n: u32| {
        (
            format!("Subject: m{n}\r\nMessage-ID: <m{n}@t>\r\n\r\n{BODY_MARK} {n}\r\n")
                .into_bytes(),
            "S",
            1_600_000_000 + n as i64,
        )
    };
    d.seed_maildir("alice", "INBOX", &[msg(1), msg(2)]);
    d.seed_maildir("alice", "Archive", &[msg(3)]);
    d
}

/// Everything the run printed, both streams.
fn all_output(o: &std::process::Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

fn assert_nothing_secret(o: &std::process::Output, what: &str) {
    let out = all_output(o);
    let b64 = base64::engine::general_purpose::STANDARD;
    for user in ["alice", "bob"] {
        let pw = if user == "alice" {
            SECRET.to_string()
        } else {
            format!("{SECRET}-bob")
        };
        let plain = b64.encode(format!("\0{user}\0{pw}"));
        assert!(!out.contains(&pw), "{what}: password shown:\n{out}");
        assert!(!out.contains(&plain), "{what}: SASL blob shown:\n{out}");
    }
    assert!(
        !out.contains(SECRET.split('-').nth(1).unwrap()),
        "{what}: part of the password shown:\n{out}"
    );
    assert!(!out.contains(BODY_MARK), "{what}: a body shown:\n{out}");
}

fn traced(o: &std::process::Output, line_has: &[&str]) {
    let err = stderr(o);
    for want in line_has {
        assert!(
            err.lines().any(|l| l.contains(want)),
            "no trace line with {want:?}:\n{err}"
        );
    }
}

#[test]
fn vv_traces_imap_and_pop3_without_secrets_or_bodies() {
    let d = server();
    let dir = tempfile::tempdir().unwrap();
    let alice = d.login_args("alice");
    let bob = d.login_args("bob");
    let imap_out = dir.path().join("imap.tar.zst").display().to_string();
    let pop_out = dir.path().join("pop.tar.zst").display().to_string();

    // IMAP export over STARTTLS (AUTHENTICATE PLAIN).
    let o = run_logged_in(
        &["-vv", "export", &d.imap_url("alice"), "-o", &imap_out],
        &alice,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_nothing_secret(&o, "imap export");
    traced(
        &o,
        &[
            " C: ",
            " S: ",
            // From the greeting on, STARTTLS included: every byte passes one reader.
            " S: * OK ",
            " C: A0001 STARTTLS",
            "LIST",
            "UID FETCH",
            // Dovecot offers SASL-IR: the initial response rides on the command
            // line (no `+` round trip), and is shown masked there.
            "AUTHENTICATE PLAIN ***",
            " bytes}",
        ],
    );

    // POP3 export (USER/PASS once STLS is up).
    let o = run_logged_in(
        &["-vv", "export", &d.pop3_url("alice"), "-o", &pop_out],
        &alice,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_nothing_secret(&o, "pop3 export");
    // Each trace line carries the seconds since the start, so waits show in the trace;
    // they never run backwards.
    let mut last = 0.0f64;
    for l in stderr(&o).lines().filter(|l| l.contains(" pop3#")) {
        let t = l
            .strip_prefix("mailark: ")
            .and_then(|r| r.split_once("s pop3#"))
            .and_then(|(t, _)| t.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no time on trace line {l:?}"));
        assert!(t >= last, "time ran backwards at {l:?}");
        last = t;
    }
    traced(
        &o,
        &["pop3#", " C: TOP 1 ", " C: UIDL", " S: +OK", " bytes}"],
    );
    let err = stderr(&o);
    assert!(
        err.contains(" C: PASS ***") || err.contains(" C: AUTH PLAIN ***"),
        "no hidden login in the POP3 trace:\n{err}"
    );

    // Import into bob, then verify bob against the archive.
    let o = run_logged_in(
        &[
            "-vv",
            "import",
            &imap_out,
            "--to",
            &d.imaps_url("bob"),
            "--jobs",
            "1",
        ],
        &bob,
    );
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    assert_nothing_secret(&o, "import");
    traced(&o, &["APPEND", "{", " bytes}"]);
    // NAMESPACE rides with LIST: one round trip for the layout of the destination. The
    // one appending connection opens each folder without waiting: its APPENDs follow
    // the SELECT, and the second folder's SELECT follows the first one's APPENDs.
    for (first, later) in [
        ("LIST", "NAMESPACE"),
        ("SELECT", "APPEND"),
        ("APPEND", "SELECT"),
    ] {
        assert!(
            support::pipelined_in_trace(&stderr(&o), first, later),
            "{later} waited for {first}'s answer:\n{}",
            stderr(&o)
        );
    }

    let o = run_logged_in(
        &[
            "-vv",
            "verify",
            &imap_out,
            "--against",
            &d.imaps_url("bob"),
            "--full",
        ],
        &bob,
    );
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    assert_nothing_secret(&o, "verify --against");
    traced(&o, &["FETCH", "EXAMINE"]);
}

#[test]
fn v_tells_folders_but_no_protocol() {
    let d = server();
    let dir = tempfile::tempdir().unwrap();
    let alice = d.login_args("alice");
    let out = dir.path().join("a.tar.zst").display().to_string();
    let o = run_logged_in(&["-v", "export", &d.imaps_url("alice"), "-o", &out], &alice);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_nothing_secret(&o, "-v export");
    let err = stderr(&o);
    assert!(!err.contains(" C: "), "-v must not trace:\n{err}");
    for folder in ["INBOX", "Archive"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("mailark: ") && l.contains(folder)),
            "no event for {folder}:\n{err}"
        );
    }

    // POP3 export, import and verify --against tell their folders too.
    let pop = dir.path().join("p.tar.zst").display().to_string();
    let o = run_logged_in(&["-v", "export", &d.pop3s_url("alice"), "-o", &pop], &alice);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("mailark: INBOX: 2 messages on the server"),
        "{err}"
    );
    let bob = d.login_args("bob");
    let o = run_logged_in(&["-v", "import", &out, "--to", &d.imaps_url("bob")], &bob);
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let err = stderr(&o);
    assert!(err.contains("mailark: folder \"Archive\" created"), "{err}");
    assert!(!err.contains(" C: "), "-v must not trace:\n{err}");
    let o = run_logged_in(
        &["-v", "verify", &out, "--against", &d.imaps_url("bob")],
        &bob,
    );
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let err = stderr(&o);
    assert!(
        err.contains("mailark: INBOX: comparing 2 archived message(s)"),
        "{err}"
    );

    // Without -v: no events at all.
    let out2 = dir.path().join("b.tar.zst").display().to_string();
    let o = run_logged_in(&["export", &d.imaps_url("alice"), "-o", &out2], &alice);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

/// A rerun learns what each destination folder holds from one census read: a folder
/// where some message's bytes must be compared (here one without a Message-ID) has
/// those bytes fetched beside its census, not its whole census read a second time (a
/// folder of a million messages read twice, and held as raw responses the second time).
#[test]
fn a_rerun_reads_each_folders_census_once() {
    let d = server();
    d.seed_maildir(
        "alice",
        "Archive",
        &[(
            b"Subject: no id\r\n\r\nno Message-ID here\r\n".to_vec(),
            "S",
            1_600_000_100,
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let alice = d.login_args("alice");
    let out = dir.path().join("a.tar.zst").display().to_string();
    let o = run_logged_in(&["export", &d.imaps_url("alice"), "-o", &out], &alice);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bob = d.login_args("bob");
    let to = d.imaps_url("bob");
    let o = run_logged_in(&["import", &out, "--to", &to], &bob);
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let o = run_logged_in(&["-vv", "import", &out, "--to", &to], &bob);
    assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
    let err = stderr(&o);
    // Census reads (every message of a folder, with its Message-ID), by the folder the
    // connection had open.
    let mut open: std::collections::HashMap<String, String> = Default::default();
    let mut censuses: std::collections::HashMap<String, usize> = Default::default();
    for l in err.lines().filter(|l| l.contains(" C: ")) {
        let conn = l.split_whitespace().nth(2).unwrap_or("").to_string();
        if let Some(i) = l.find("SELECT \"").or_else(|| l.find("EXAMINE \"")) {
            let name = l[i..].split('"').nth(1).unwrap_or("").to_string();
            open.insert(conn, name);
        } else if l.contains("UID FETCH 1:* ") && l.contains("MESSAGE-ID") {
            *censuses.entry(open[&conn].clone()).or_default() += 1;
        }
    }
    let bodies = err
        .lines()
        .filter(|l| l.contains(" C: ") && l.contains("UID FETCH") && l.contains("BODY.PEEK[]"))
        .count();
    assert!(
        bodies >= 1,
        "the message without a Message-ID was compared by its bytes:\n{err}"
    );
    for folder in ["INBOX", "Archive"] {
        assert_eq!(
            censuses.get(folder),
            Some(&1),
            "census reads of {folder}:\n{err}"
        );
    }
}
