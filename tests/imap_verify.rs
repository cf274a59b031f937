//! `mailark verify A… --against URL [--full]` against a real Dovecot: a clean match,
//! then each kind of drift on the source (new mail, deleted mail, changed flags), and a
//! second account standing in for a restored destination (other UIDVALIDITYs) compared by
//! content, where a lost message is an error.

mod common;
mod imap_common;
mod support;

use common::*;
use imap_common::*;
use support::Dovecot;

/// `mailark verify ARCHIVES --against URL` logged in as `user`, then `extra`.
fn verify_at(
    d: &Dovecot,
    user: &str,
    url: &str,
    archives: &[&std::path::Path],
    extra: &[&str],
) -> std::process::Output {
    let pw = d.password_file(user);
    let mut args: Vec<String> = vec!["verify".into()];
    args.extend(archives.iter().map(|p| p.display().to_string()));
    args.extend(["--against", url, "--password-file", pw.to_str().unwrap()].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&a)
}

/// `verify_at` the account over IMAPS, trusting the test CA, with `--json`.
fn verify(
    d: &Dovecot,
    user: &str,
    archives: &[&std::path::Path],
    extra: &[&str],
) -> std::process::Output {
    let ca = d.ca_file();
    let mut e = vec!["--tls-ca-file", ca.to_str().unwrap(), "--json"];
    e.extend_from_slice(extra);
    verify_at(d, user, &d.imaps_url(user), archives, &e)
}

/// Appends `msgs` (seen) to `user`'s INBOX.
fn fill_inbox(d: &Dovecot, user: &str, msgs: &[Vec<u8>]) {
    let mut c = d.raw(user);
    for m in msgs {
        assert!(c.append("INBOX", "\\Seen", None, m).ok());
    }
    c.logout();
}

/// Gives `user`'s INBOX another UIDVALIDITY, as a new server's would have: accounts
/// made within a second can share one (Dovecot derives it from the clock).
fn other_uidvalidity(d: &Dovecot, user: &str) {
    d.doveadm(&[
        "mailbox",
        "update",
        "-u",
        user,
        "--uid-validity",
        "12345",
        "INBOX",
    ]);
}

/// Exports alice's account to `dir`/a.tar.zst and returns that path.
fn export_alice(d: &Dovecot, dir: &std::path::Path) -> std::path::PathBuf {
    let ar = dir.join("a.tar.zst");
    assert!(export(d, "alice", &ar, &[]).status.success());
    ar
}

/// The JSON report of a `verify --against` that found nothing (exit 0, no findings).
fn clean(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(out), stderr(out));
    assert!(findings(out).is_empty(), "{}", stdout(out));
    json(out)
}

/// Fills alice's INBOX with `inbox` unread messages and a new "Projects/2024" with
/// `projects` seen ones, exports the account to `dir`/a.tar.zst and returns that path.
fn seed_and_export(
    d: &Dovecot,
    inbox: usize,
    projects: usize,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let mut c = d.raw("alice");
    c.must("CREATE \"Projects/2024\"");
    for i in 0..inbox {
        assert!(c
            .append("INBOX", "", None, &msg(&format!("in {i}"), "x"))
            .ok());
    }
    for i in 0..projects {
        assert!(c
            .append(
                "Projects/2024",
                "\\Seen",
                None,
                &msg(&format!("p {i}"), "y")
            )
            .ok());
    }
    c.logout();
    let ar = dir.join("a.tar.zst");
    assert!(export(d, "alice", &ar, &[]).status.success());
    ar
}

#[test]
fn against_the_source_finds_every_drift() {
    let d = Dovecot::start();
    let t = tempfile::tempdir().unwrap();
    let ar = seed_and_export(&d, 4, 4, t.path());

    let out = verify(&d, "alice", &[&ar], &["--full"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let v = json(&out);
    assert_eq!(v["against"]["bodies_compared"], 8);
    assert_eq!(v["against"]["server_messages"], 8);
    assert!(findings(&out).is_empty(), "{}", stdout(&out));

    // Drift: one new message, one expunged, one flag change.
    let mut c = d.raw("alice");
    assert!(c.append("INBOX", "", None, &msg("late", "z")).ok());
    c.must("SELECT \"Projects/2024\"");
    c.must("UID STORE 1 +FLAGS (\\Deleted)");
    c.must("EXPUNGE");
    c.must("UID STORE 2 +FLAGS (\\Flagged)");
    c.logout();
    let out = verify(&d, "alice", &[&ar], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let cs = findings(&out);
    assert!(
        cs.contains(&("missing-from-archive".into(), "error".into())),
        "{cs:?}"
    );
    assert!(
        cs.contains(&("gone-from-server".into(), "warning".into())),
        "{cs:?}"
    );
    assert!(
        cs.contains(&("flags-differ".into(), "warning".into())),
        "{cs:?}"
    );
    assert_eq!(cs.len(), 3, "{cs:?}");
    // The human form names folder and message.
    let ca = d.ca_file();
    let out = verify_at(
        &d,
        "alice",
        &d.imaps_url("alice"),
        &[&ar],
        &["--tls-ca-file", ca.to_str().unwrap()],
    );
    let text = stdout(&out);
    assert!(
        text.contains("missing-from-archive") && text.contains("INBOX"),
        "{text}"
    );
    assert!(!text.contains(d.password("alice")));
    // An incremental export closes the gap; the chain then matches (warnings only).
    let delta = t.path().join("d.tar.zst");
    assert!(
        export(&d, "alice", &delta, &["--since", ar.to_str().unwrap()])
            .status
            .success()
    );
    let out = verify(&d, "alice", &[&ar, &delta], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn against_a_restored_destination_matches_by_content() {
    let d = Dovecot::start();
    let mut c = d.raw("alice");
    let msgs: Vec<Vec<u8>> = (0..5)
        .map(|i| msg(&format!("m {i}"), &format!("b{i}")))
        .collect();
    for m in &msgs {
        assert!(c.append("INBOX", "\\Seen", None, m).ok());
    }
    assert!(c.append("Sent", "\\Seen", None, &msg("sent one", "s")).ok());
    c.logout();
    let t = tempfile::tempdir().unwrap();
    let ar = export_alice(&d, t.path());
    // bob stands in for the new server: same mail, other UIDs/UIDVALIDITY, in another
    // order, and his sent folder is named differently but has the \Sent role... here
    // Dovecot gives every user the same "Sent", so the name matches.
    let mut b = d.raw("bob");
    for m in msgs.iter().rev() {
        assert!(b.append("INBOX", "\\Seen", None, m).ok());
    }
    assert!(b.append("Sent", "\\Seen", None, &msg("sent one", "s")).ok());
    b.logout();
    // Both accounts were made within a second: make sure the UIDVALIDITYs differ, as
    // they do on a real new server.
    other_uidvalidity(&d, "bob");
    let out = verify(&d, "bob", &[&ar], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let v = json(&out);
    let cm = v["against"]["content_matched_folders"].as_array().unwrap();
    assert!(cm.iter().any(|f| f == "INBOX"), "{v:#}");
    let out = verify(&d, "bob", &[&ar], &["--full"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // The destination lost one message: an error, even without --full.
    let mut b = d.raw("bob");
    b.must("SELECT INBOX");
    b.must("UID STORE 2 +FLAGS (\\Deleted)");
    b.must("EXPUNGE");
    b.logout();
    let out = verify(&d, "bob", &[&ar], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        findings(&out),
        vec![("gone-from-server".to_string(), "error".to_string())]
    );
    // Altered bytes with the same Message-ID and size are caught by --full only.
    let mut b = d.raw("bob");
    let mut changed = msgs[1].clone();
    let n = changed.len();
    changed[n - 3] = b'X';
    b.must("SELECT INBOX");
    b.must("UID STORE 1:* +FLAGS (\\Deleted)");
    b.must("EXPUNGE");
    for (i, m) in msgs.iter().enumerate() {
        let m = if i == 1 { &changed } else { m };
        assert!(b.append("INBOX", "\\Seen", None, m).ok());
    }
    b.logout();
    let out = verify(&d, "bob", &[&ar], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Paired by Message-ID and size, then told apart by their bytes.
    let out = verify(&d, "bob", &[&ar], &["--full"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        findings(&out),
        vec![("content-differs".to_string(), "error".to_string())]
    );
}

/// A destination whose sent folder has another name but the `\Sent` role: the folders
/// pair up by role, and the archived mail is found there.
#[test]
fn folders_pair_up_by_special_use_role() {
    let src = Dovecot::start();
    let mut c = src.raw("alice");
    assert!(c.append("Sent", "\\Seen", None, &msg("sent a", "1")).ok());
    assert!(c.append("Sent", "\\Seen", None, &msg("sent b", "2")).ok());
    c.logout();
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("a.tar.zst");
    assert!(export(&src, "alice", &ar, &[]).status.success());
    let dst = Dovecot::start_with(support::DovecotOptions {
        special: vec![
            ("Sent Items".into(), "\\Sent".into()),
            ("Drafts".into(), "\\Drafts".into()),
            ("Trash".into(), "\\Trash".into()),
            ("Junk".into(), "\\Junk".into()),
        ],
        ..Default::default()
    });
    let mut c = dst.raw("alice");
    assert!(c
        .append("Sent Items", "\\Seen", None, &msg("sent b", "2"))
        .ok());
    assert!(c
        .append("Sent Items", "\\Seen", None, &msg("sent a", "1"))
        .ok());
    c.logout();
    let out = verify(&dst, "alice", &[&ar], &["--full"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let v = json(&out);
    assert_eq!(v["against"]["bodies_compared"], 2, "{v:#}");
    assert!(findings(&out).is_empty(), "{}", stdout(&out));
}

/// An archive made from a local Maildir (LF line ends) checked against a server that
/// received the same mail and serves it as CRLF: by Message-ID (sizes differ only by
/// line ends), and with --full by the CRLF form's SHA-256: clean both ways.
#[test]
fn a_maildir_archive_checks_against_a_crlf_server() {
    let d = Dovecot::start();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("md");
    let msgs: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            let id = if i == 3 {
                String::new()
            } else {
                format!("Message-ID: <lf{i}@t>\n")
            };
            (
                format!("{}.M{i}.x:2,S", 1_600_000_000 + i),
                format!("From: a@b\n{id}Subject: lf {i}\n\nline one\nline two {i}\n").into_bytes(),
            )
        })
        .collect();
    write_maildir_folder(&src.join("INBOX"), &msgs);
    let ar = t.path().join("m.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    let folders: Vec<String> = ls_json(&[&ar])
        .iter()
        .map(|m| m["folder"].as_str().unwrap().to_string())
        .collect();
    assert!(folders.iter().all(|f| f == "INBOX"), "{folders:?}");
    let mut c = d.raw("alice");
    for (_, m) in &msgs {
        assert!(c.append("INBOX", "\\Seen", None, m).ok());
    }
    c.logout();
    // Matched by Message-ID and the size of the CRLF form (the one without a
    // Message-ID by its bytes): nothing to report.
    let out = verify(&d, "alice", &[&ar], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(findings(&out).is_empty(), "{}", stdout(&out));
    let out = verify(&d, "alice", &[&ar], &["--full"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(findings(&out).is_empty(), "{}", stdout(&out));
    assert_eq!(json(&out)["against"]["bodies_compared"], 4);
}

/// Defect 1: messages that share a Message-ID, and messages without one that share
/// Date/From/Subject, restored under other UIDs: each pairs with its own copy (by its
/// bytes), so a clean restore is clean, with and without --full.
#[test]
fn shared_and_missing_message_ids_pair_with_their_own_copies() {
    let d = Dovecot::start();
    let head = "From: a@example.com\r\nSubject: same\r\nDate: Mon, 07 Jan 2019 10:00:00 +0900\r\n";
    let msgs: Vec<Vec<u8>> = vec![
        format!("{head}Message-ID: <dup@test>\r\n\r\nshort\r\n").into_bytes(),
        format!("{head}Message-ID: <dup@test>\r\n\r\na longer body\r\n").into_bytes(),
        format!("{head}\r\nno id, one\r\n").into_bytes(),
        format!("{head}\r\nno id, and two\r\n").into_bytes(),
    ];
    fill_inbox(&d, "alice", &msgs);
    let t = tempfile::tempdir().unwrap();
    let ar = export_alice(&d, t.path());
    let mut b = d.raw("bob");
    for m in &msgs {
        assert!(b.append("INBOX", "\\Seen", None, m).ok());
    }
    b.logout();
    other_uidvalidity(&d, "bob");
    for extra in [&[][..], &["--full"][..]] {
        let out = verify(&d, "bob", &[&ar], extra);
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {}", stdout(&out));
        assert!(findings(&out).is_empty(), "{extra:?}: {:?}", findings(&out));
    }
}

/// A server whose LIST leaves out folders it has (Dovecot's listing can lag behind a
/// folder another session has just made): the archived folders are looked for by name
/// before they count as missing, so verify neither cries wolf nor skips their messages.
#[test]
fn folders_the_listing_leaves_out_are_looked_for_by_name() {
    let d = Dovecot::start();
    let t = tempfile::tempdir().unwrap();
    let ar = seed_and_export(&d, 0, 3, t.path());

    let proxy = support::hide::HideProxy::start(d.imap_port, &["Projects/2024", "Junk"]);
    let url = format!("imap://alice@127.0.0.1:{}", proxy.port);
    let out = verify_at(&d, "alice", &url, &[&ar], &["--allow-plaintext", "--json"]);
    let v = clean(&out);
    assert_eq!(v["against"]["archive_messages"], 3);
    assert_eq!(v["against"]["server_messages"], 3);
    // Both hidden folders were compared: neither is missing, and their messages count.
    assert!(v["against"]["folders_compared"].as_u64().unwrap() >= 2);
}

/// `verify --against` opens and reads the folders it compares in pipelines, proven on
/// the wire: a proxy holds back every server answer once the client has sent 4 KiB
/// (past login and LIST) and lets them through only when it has sent 8 KiB more. The
/// EXAMINE and `UID FETCH` of 80 folders are about 16 KiB; a client that waited for each
/// folder's answer would stall at the proxy's deadline instead (the test then fails).
#[test]
fn folders_are_opened_and_read_in_pipelines() {
    let d = Dovecot::start();
    let t = tempfile::tempdir().unwrap();
    let mut c = d.raw("alice");
    let names: Vec<String> = (0..80)
        .map(|i| format!("Pipelined/folder {i:02} with a name long enough to fill a pipeline"))
        .collect();
    for (i, n) in names.iter().enumerate() {
        c.must(&format!("CREATE \"{n}\""));
        assert!(c
            .append(n, "\\Seen", None, &msg(&format!("f {i}"), "z"))
            .ok());
    }
    c.logout();
    let ar = export_alice(&d, t.path());

    let proxy = support::withhold::WithholdProxy::start(
        d.imaps_port,
        4 << 10,
        8 << 10,
        std::time::Duration::from_secs(10),
    );
    let url = format!("imaps://alice@127.0.0.1:{}", proxy.port);
    let ca = d.ca_file();
    let extra = ["--tls-ca-file", ca.to_str().unwrap(), "--json"];
    let out = verify_at(&d, "alice", &url, &[&ar], &extra);
    let v = clean(&out);
    assert_eq!(v["against"]["archive_messages"], 80);
    assert_eq!(v["against"]["server_messages"], 80);
    assert_eq!(
        (proxy.released_by_bytes(), proxy.released_by_deadline()),
        (1, 0),
        "verify must send 8 KiB of folder commands without an answer"
    );
}

/// `--messages-per-pass`: a folder holding more archived messages than a pass is
/// compared in parts, and finds exactly what one comparison of the whole folder finds:
/// on the source (new, expunged and re-flagged mail) and on a destination compared by
/// content that lost one of two identical copies (a later part must not pair its copy
/// with the server message an earlier part paired).
#[test]
fn a_folder_compared_in_parts_finds_what_a_whole_comparison_finds() {
    let d = Dovecot::start();
    let mut inbox: Vec<Vec<u8>> = (0..7)
        .map(|i| msg(&format!("m {i}"), &format!("b{i}")))
        .collect();
    // The same message twice, first and last (so in different parts).
    inbox.insert(0, msg("twice", "same"));
    inbox.push(msg("twice", "same"));
    fill_inbox(&d, "alice", &inbox);
    fill_inbox(&d, "bob", &inbox);
    let t = tempfile::tempdir().unwrap();
    let ar = export_alice(&d, t.path());
    let full = |out: &std::process::Output| {
        let mut f: Vec<String> = json(out)["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.to_string())
            .collect();
        f.sort();
        f
    };
    let both = |user: &str| {
        let whole = verify(&d, user, &[&ar], &[]);
        let parts = verify(&d, user, &[&ar], &["--messages-per-pass", "2"]);
        assert_eq!(
            whole.status.code(),
            parts.status.code(),
            "{}",
            stdout(&parts)
        );
        assert_eq!(full(&whole), full(&parts));
        assert_eq!(
            json(&whole)["against"]["server_messages"],
            json(&parts)["against"]["server_messages"]
        );
        parts
    };
    clean(&both("alice"));

    // The source drifts: one new message, one expunged, one flag change.
    let mut c = d.raw("alice");
    assert!(c.append("INBOX", "", None, &msg("late", "z")).ok());
    c.must("SELECT INBOX");
    c.must("UID STORE 3 +FLAGS (\\Deleted)");
    c.must("EXPUNGE");
    c.must("UID STORE 5 -FLAGS (\\Seen)");
    c.logout();
    let mut cs = findings(&both("alice"));
    cs.sort();
    assert_eq!(
        cs,
        [
            ("flags-differ", "warning"),
            ("gone-from-server", "warning"),
            ("missing-from-archive", "error"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // bob, compared by content, lost the second copy of the duplicate.
    other_uidvalidity(&d, "bob");
    let mut b = d.raw("bob");
    b.must("SELECT INBOX");
    b.must(&format!("UID STORE {} +FLAGS (\\Deleted)", inbox.len()));
    b.must("EXPUNGE");
    b.logout();
    let out = both("bob");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        findings(&out),
        vec![("gone-from-server".to_string(), "error".to_string())]
    );
}
