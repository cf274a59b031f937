//! Server behaviour Dovecot does not show on demand, from a tiny scripted IMAP server:
//! a tagged `NO` on `UID FETCH` for one message (reported with folder, UID and the
//! server's words; the other messages archived; exit 1), and a throttling `NO [LIMIT]`
//! that is waited out, and a server that refuses connections beyond the first (a
//! per-user limit), and responses queued after a STARTTLS OK before the handshake.
//! Everything a real server does is tested against Dovecot elsewhere.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::*;

fn body(uid: u32) -> Vec<u8> {
    format!("Subject: scripted {uid}\r\nMessage-ID: <s{uid}@t>\r\n\r\nbody {uid}\r\n").into_bytes()
}

fn parse_set(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                let a: u32 = a.parse().unwrap();
                let b: u32 = if b == "*" { 3 } else { b.parse().unwrap() };
                out.extend(a.min(b)..=a.max(b).min(3));
            }
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

/// Serves INBOX with UIDs 1..=3. `bad_uid` is refused with a tagged NO; the first
/// `throttles` body fetches are answered `NO [LIMIT]`.
/// A server of `folders` folders (INBOX, F1, F2, ...) of three messages each. A UID
/// FETCH of bodies including `bad_uid` gets a tagged NO; the first `throttles` get
/// `NO [LIMIT]`; connections after the first `max_conns` get Dovecot's greeting BYE.
fn scripted(
    bad_uid: Option<u32>,
    throttles: u32,
    folders: usize,
    max_conns: usize,
) -> (u16, Arc<AtomicU32>) {
    scripted_exists(3, bad_uid, throttles, folders, max_conns)
}

/// [`scripted`] with EXAMINE announcing `exists` messages whatever UID FETCH lists.
fn scripted_exists(
    exists: u32,
    bad_uid: Option<u32>,
    throttles: u32,
    folders: usize,
    max_conns: usize,
) -> (u16, Arc<AtomicU32>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let fetches = Arc::new(AtomicU32::new(0));
    let f2 = fetches.clone();
    std::thread::spawn(move || {
        for (n, s) in l.incoming().enumerate() {
            let Ok(mut s) = s else { continue };
            if n >= max_conns {
                let _ = s.write_all(
                    b"* BYE Maximum number of connections from user+IP exceeded (mail_max_userip_connections=1)\r\n",
                );
                continue;
            }
            let f2 = f2.clone();
            std::thread::spawn(move || {
                let mut rd = BufReader::new(s.try_clone().unwrap());
                let mut w = |b: &[u8]| {
                    let _ = s.write_all(b);
                };
                w(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted\r\n");
                let mut line = String::new();
                let mut auth_tag = None;
                while rd.read_line(&mut line).unwrap_or(0) > 0 {
                    let l = line.trim_end().to_string();
                    line.clear();
                    if let Some(t) = auth_tag.take() {
                        w(format!("{t} OK logged in\r\n").as_bytes());
                        continue;
                    }
                    let (tag, cmd) = l.split_once(' ').unwrap_or((&l, ""));
                    let up = cmd.to_ascii_uppercase();
                    if up.starts_with("AUTHENTICATE") {
                        auth_tag = Some(tag.to_string());
                        w(b"+ \r\n");
                    } else if up.starts_with("CAPABILITY") {
                        w(format!("* CAPABILITY IMAP4rev1\r\n{tag} OK\r\n").as_bytes());
                    } else if up.starts_with("LIST") {
                        let mut out = "* LIST () \"/\" INBOX\r\n".to_string();
                        for f in 1..folders {
                            out.push_str(&format!("* LIST () \"/\" F{f}\r\n"));
                        }
                        w(format!("{out}{tag} OK\r\n").as_bytes());
                    } else if up.starts_with("EXAMINE") {
                        w(format!("* {exists} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 4] ok\r\n{tag} OK [READ-ONLY] done\r\n").as_bytes());
                    } else if up.starts_with("UID FETCH") {
                        let set = cmd.split(' ').nth(2).unwrap();
                        let uids = parse_set(set);
                        let mut out = Vec::new();
                        if up.contains("BODY.PEEK[]") {
                            let n = f2.fetch_add(1, Ordering::SeqCst);
                            if n < throttles {
                                w(format!("{tag} NO [LIMIT] Too many commands, throttled; try again later\r\n").as_bytes());
                                continue;
                            }
                            for u in &uids {
                                if Some(*u) == bad_uid {
                                    continue;
                                }
                                let b = body(*u);
                                out.extend(format!("* {u} FETCH (UID {u} FLAGS (\\Seen) INTERNALDATE \"01-Feb-2021 10:00:00 +0100\" RFC822.SIZE {} BODY[] {{{}}}\r\n", b.len(), b.len()).as_bytes());
                                out.extend(&b);
                                out.extend(b")\r\n");
                            }
                            if bad_uid.is_some_and(|b| uids.contains(&b)) {
                                out.extend(
                                    format!(
                                        "{tag} NO [SERVERBUG] cannot read message {}\r\n",
                                        bad_uid.unwrap()
                                    )
                                    .as_bytes(),
                                );
                            } else {
                                out.extend(format!("{tag} OK done\r\n").as_bytes());
                            }
                        } else {
                            for u in &uids {
                                out.extend(
                                    format!(
                                        "* {u} FETCH (UID {u} RFC822.SIZE {})\r\n",
                                        body(*u).len()
                                    )
                                    .as_bytes(),
                                );
                            }
                            out.extend(format!("{tag} OK done\r\n").as_bytes());
                        }
                        w(&out);
                    } else if up.starts_with("LOGOUT") {
                        w(format!("* BYE bye\r\n{tag} OK\r\n").as_bytes());
                        break;
                    } else {
                        w(format!("{tag} BAD unknown\r\n").as_bytes());
                    }
                }
            });
        }
    });
    (port, fetches)
}

fn export_from(port: u16, out: &std::path::Path) -> std::process::Output {
    let t = out.parent().unwrap();
    let pw = t.join("pw");
    std::fs::write(&pw, "scripted-pw\n").unwrap();
    let url = format!("imap://alice@127.0.0.1:{port}");
    run(&[
        "export",
        &url,
        "-o",
        out.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "--allow-plaintext",
        "--json",
    ])
}

#[test]
fn a_tagged_no_on_fetch_is_a_reported_error() {
    let (port, _) = scripted(Some(2), 0, 1, usize::MAX);
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("a.tar.zst");
    let out = export_from(port, &ar);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rep["notes"][0].as_str().unwrap().contains("clear text"),
        "{rep:#}"
    );
    let f = &rep["folders"][0];
    assert_eq!(f["folder"], "INBOX");
    assert_eq!(f["source_count"], 3);
    assert_eq!(f["archived"], 2, "{f:#}");
    assert_eq!(f["complete"], false);
    let sk = &f["failures"][0];
    assert_eq!(sk["id"], "UID 2");
    let reason = sk["reason"].as_str().unwrap();
    assert!(
        reason.contains("NO") && reason.contains("cannot read message 2"),
        "{reason}"
    );
    let idx = ls_json(&[&ar]);
    let uids: Vec<u64> = idx
        .iter()
        .map(|m| m["source"]["uid"].as_u64().unwrap())
        .collect();
    assert_eq!(uids.len(), 2);
    assert!(!uids.contains(&2));
    for m in &idx {
        let uid = m["source"]["uid"].as_u64().unwrap() as u32;
        assert_eq!(m["sha256"], sha256_hex(&body(uid)));
    }
}

#[test]
fn throttling_is_waited_out() {
    let (port, fetches) = scripted(None, 2, 1, usize::MAX);
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("a.tar.zst");
    let out = export_from(port, &ar);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    assert!(fetches.load(Ordering::SeqCst) >= 3);
    assert_eq!(ls_json(&[&ar]).len(), 3);
}

/// OAuth2: OAUTHBEARER is preferred when offered (else XOAUTH2), the payload is the
/// RFC 7628 one, the server's error document is answered so the tagged NO arrives, and
/// the token appears nowhere in mailark's output.
#[test]
fn oauth2_login_payloads_and_a_refused_token() {
    use base64::Engine;
    for (caps, mech) in [
        ("AUTH=XOAUTH2 AUTH=OAUTHBEARER", "OAUTHBEARER"),
        ("AUTH=XOAUTH2", "XOAUTH2"),
    ] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen2 = seen.clone();
        let caps = caps.to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut rd = BufReader::new(s.try_clone().unwrap());
            let _ = s.write_all(format!("* OK [CAPABILITY IMAP4rev1 {caps}] hi\r\n").as_bytes());
            let mut line = String::new();
            let mut tag = String::new();
            let mut step = 0;
            while rd.read_line(&mut line).unwrap_or(0) > 0 {
                seen2.lock().unwrap().push(line.trim_end().to_string());
                match step {
                    0 => {
                        tag = line.split(' ').next().unwrap().to_string();
                        let _ = s.write_all(b"+ \r\n");
                    }
                    1 => {
                        // The error document, as Gmail sends it.
                        let _ =
                            s.write_all(b"+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiQmVhcmVyIn0=\r\n");
                    }
                    _ => {
                        let _ = s.write_all(
                            format!("{tag} NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")
                                .as_bytes(),
                        );
                        break;
                    }
                }
                step += 1;
                line.clear();
            }
        });
        let t = tempfile::tempdir().unwrap();
        let tok = t.path().join("token");
        std::fs::write(&tok, "ya29.Secret-Token-9\n").unwrap();
        let url = format!("imap://alice@example.com@127.0.0.1:{port}");
        let ar = t.path().join("o.tar.zst");
        let out = run(&[
            "export",
            &url,
            "-o",
            ar.to_str().unwrap(),
            "--oauth2-token-file",
            tok.to_str().unwrap(),
            "--allow-plaintext",
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("Invalid credentials"), "{err}");
        assert!(!err.contains("Secret-Token") && !stdout(&out).contains("Secret-Token"));
        let lines = seen.lock().unwrap().clone();
        assert!(
            lines[0].ends_with(&format!("AUTHENTICATE {mech}")),
            "{lines:?}"
        );
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&lines[1])
            .unwrap();
        let want = if mech == "OAUTHBEARER" {
            format!("n,a=alice@example.com,\x01host=127.0.0.1\x01port={port}\x01auth=Bearer ya29.Secret-Token-9\x01\x01")
        } else {
            "user=alice@example.com\x01auth=Bearer ya29.Secret-Token-9\x01\x01".to_string()
        };
        assert_eq!(String::from_utf8(payload).unwrap(), want);
        assert_eq!(
            lines[2], "",
            "the error document is answered with an empty response"
        );
        assert!(!ar.exists());
    }
}

#[test]
fn connections_beyond_the_servers_limit_are_done_without() {
    let t = tempfile::tempdir().unwrap();
    let (port, _) = scripted(None, 0, 3, 1);
    let out = t.path().join("a.tar.zst");
    let o = export_from(port, &out);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["messages"], 9, "{rep}");
    let notes = rep["notes"].to_string();
    assert!(notes.contains("not opened, carried on with fewer"), "{rep}");
    assert!(notes.contains("Maximum number of connections"), "{rep}");
    run_ok(&["verify", out.to_str().unwrap()]);
}

#[test]
fn messages_examine_counts_but_fetch_never_lists_are_a_reported_gap() {
    let (port, _) = scripted_exists(5, None, 0, 1, usize::MAX);
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("a.tar.zst");
    let out = export_from(port, &ar);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &rep["folders"][0];
    assert_eq!(f["source_count"], 5);
    assert_eq!(f["listed"], 3);
    assert_eq!(f["archived"], 3, "{f:#}");
    assert_eq!(f["unlisted"], 2, "{f:#}");
    assert_eq!(f["complete"], false);
    let e = f["error"].as_str().unwrap();
    assert!(e.contains("5") && e.contains("3"), "{e}");
    assert_eq!(ls_json(&[&ar]).len(), 3);
}

/// Bytes a server sends after its STARTTLS OK, before the handshake, would be read as if
/// TLS protected them (a command-injection of responses): the session ends there, and
/// no credentials are sent.
#[test]
fn responses_queued_before_the_tls_handshake_end_the_session() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut rd = BufReader::new(s.try_clone().unwrap());
            let _ = s.write_all(b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] hi\r\n");
            let mut line = String::new();
            while rd.read_line(&mut line).unwrap_or(0) > 0 {
                seen2.lock().unwrap().push(line.clone());
                let tag = line.split(' ').next().unwrap_or("*").to_string();
                // One write: the OK and a forged capability line arrive together.
                let _ = s.write_all(
                    format!("{tag} OK Begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n")
                        .as_bytes(),
                );
                line.clear();
            }
        }
    });
    let t = tempfile::tempdir().unwrap();
    let out = export_from(port, &t.path().join("a.tar.zst"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("after its STARTTLS answer"),
        "{}",
        stderr(&out)
    );
    let seen = seen.lock().unwrap().join("");
    assert!(
        seen.contains("STARTTLS") && !seen.contains("AUTHENTICATE"),
        "{seen}"
    );
}
