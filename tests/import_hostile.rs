//! Destination behaviour Dovecot and Cyrus do not show on demand, from a tiny scripted
//! IMAP server: APPENDs answered `NO [LIMIT]` (throttling) are backed off and retried,
//! an `NO [OVERQUOTA]` is reported for its message while the rest arrive, and a keyword
//! the folder cannot keep (no `\*` in PERMANENTFLAGS) is dropped and reported, and an
//! `APPENDUID` naming a UID that is not there makes verification match by Message-ID
//! instead of failing or trusting it, and a refused MULTIAPPEND (all or nothing) is
//! retried one message at a time so only the refused message fails; a server without
//! LITERAL+ gets every literal after its go-ahead. Every other
//! import behaviour is tested against the real servers in `tests/import.rs`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;

#[derive(Default)]
struct Store {
    /// (flags, internaldate, bytes)
    msgs: Vec<(String, String, Vec<u8>)>,
    appends: u32,
    /// `UID FETCH` commands that asked for Message-IDs.
    id_fetches: u32,
    /// Messages in the largest APPEND command.
    largest_append: usize,
    /// Literals the client waited for the server's `+` to send.
    sync_literals: u32,
    throttled: u32,
}

/// How the scripted server behaves.
#[derive(Clone, Copy, Default)]
struct Script {
    /// The first `throttle` APPENDs get `NO [LIMIT]`.
    throttle: u32,
    /// `APPENDUID` answers name the message's UID plus this (0: the truth).
    uid_lie: usize,
    /// Offer MULTIAPPEND.
    multi: bool,
    /// Offer no LITERAL+: every literal waits for the server's `+`.
    sync_literals: bool,
}

/// Serves one INBOX as `script` says; an APPEND of a message containing `over-quota`
/// gets `NO [OVERQUOTA]`.
fn scripted(script: Script) -> (u16, Arc<Mutex<Store>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let store = Arc::new(Mutex::new(Store::default()));
    let st = store.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let st = st.clone();
            std::thread::spawn(move || serve(s, st, script));
        }
    });
    (port, store)
}

/// Counts a literal the client sent only after the server's `+`.
fn count_sync_literal(st: &Arc<Mutex<Store>>) {
    st.lock().unwrap().sync_literals += 1;
}

fn serve(s: std::net::TcpStream, st: Arc<Mutex<Store>>, script: Script) {
    let Script {
        throttle,
        uid_lie,
        multi,
        sync_literals,
    } = script;
    let mut rd = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let caps = format!(
        "IMAP4rev1{}{} UIDPLUS AUTH=PLAIN",
        if sync_literals { "" } else { " LITERAL+" },
        if multi { " MULTIAPPEND" } else { "" }
    );
    let _ = write!(w, "* OK [CAPABILITY {caps}] scripted\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        if rd.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end().to_string();
        let (tag, cmd) = l.split_once(' ').unwrap_or((&l, ""));
        let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let out = match verb.as_str() {
            "CAPABILITY" => format!("* CAPABILITY {caps}\r\n{tag} OK done\r\n"),
            "AUTHENTICATE" => {
                if !cmd.contains(' ') || cmd.split(' ').count() < 3 {
                    let _ = write!(w, "+ \r\n");
                    line.clear();
                    let _ = rd.read_line(&mut line);
                }
                format!("{tag} OK logged in\r\n")
            }
            "LOGIN" => format!("{tag} OK logged in\r\n"),
            "LIST" => format!("* LIST (\\HasNoChildren) \"/\" INBOX\r\n{tag} OK done\r\n"),
            "SELECT" | "EXAMINE" => {
                let n = st.lock().unwrap().msgs.len();
                format!(
                    "* {n} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [PERMANENTFLAGS (\\Seen \\Flagged \\Deleted)] ok\r\n{tag} OK [READ-WRITE] done\r\n"
                )
            }
            "APPEND" => {
                // APPEND "INBOX" (flags) "date" {N+}, and with MULTIAPPEND more
                // ` (flags) "date" {N+}` parts, each after the previous literal.
                let mut parts = Vec::new();
                let mut spec = cmd.to_string();
                loop {
                    let flags = spec
                        .split_once('(')
                        .and_then(|(_, r)| r.split_once(')'))
                        .map(|(f, _)| f.to_string())
                        .unwrap_or_default();
                    let date = spec
                        .rsplit_once(" \"")
                        .map(|(_, d)| d.split('"').next().unwrap_or("").to_string())
                        .unwrap_or_default();
                    let n: usize = spec
                        .rsplit_once('{')
                        .and_then(|(_, r)| {
                            r.trim_end_matches('}').trim_end_matches('+').parse().ok()
                        })
                        .unwrap();
                    if !spec.ends_with("+}") {
                        count_sync_literal(&st);
                        let _ = w.write_all(b"+ go ahead\r\n");
                    }
                    let mut b = vec![0u8; n];
                    rd.read_exact(&mut b).unwrap();
                    parts.push((flags, date, b));
                    let mut rest = String::new();
                    let _ = rd.read_line(&mut rest);
                    if rest.trim().is_empty() {
                        break;
                    }
                    spec = rest.trim_end().to_string();
                }
                let mut s = st.lock().unwrap();
                s.appends += 1;
                s.largest_append = s.largest_append.max(parts.len());
                if s.throttled < throttle {
                    s.throttled += 1;
                    format!("{tag} NO [LIMIT] Too many APPENDs, slow down\r\n")
                } else if parts
                    .iter()
                    .any(|(_, _, b)| String::from_utf8_lossy(b).contains("over-quota"))
                {
                    // All or nothing (RFC 3502).
                    format!("{tag} NO [OVERQUOTA] Quota exceeded (mailbox)\r\n")
                } else {
                    let first = s.msgs.len() + 1 + uid_lie;
                    s.msgs.extend(parts);
                    let last = s.msgs.len() + uid_lie;
                    format!("{tag} OK [APPENDUID 7 {first}:{last}] done\r\n")
                }
            }
            "UID" => {
                let mut s = st.lock().unwrap();
                let full = cmd.contains("BODY.PEEK[]");
                let ids = cmd.contains("MESSAGE-ID");
                s.id_fetches += u32::from(ids);
                let mut o = String::new();
                let mut bytes: Vec<u8> = Vec::new();
                for (i, (f, d, b)) in s.msgs.iter().enumerate() {
                    let uid = i + 1;
                    let head = if full {
                        b.clone()
                    } else {
                        b.split(|&c| c == b'\n')
                            .find(|l| l.starts_with(b"Message-ID:"))
                            .map(|l| [l, b"\n\r\n"].concat())
                            .unwrap_or_else(|| b"\r\n".to_vec())
                    };
                    let item = if full {
                        "BODY[]"
                    } else if ids {
                        "BODY[HEADER.FIELDS (MESSAGE-ID)]"
                    } else {
                        ""
                    };
                    let meta = format!(
                        "* {uid} FETCH (UID {uid} FLAGS ({f}) INTERNALDATE \"{d}\" RFC822.SIZE {}",
                        b.len()
                    );
                    if item.is_empty() {
                        bytes.extend_from_slice(format!("{meta})\r\n").as_bytes());
                        continue;
                    }
                    bytes.extend_from_slice(
                        format!("{meta} {item} {{{}}}\r\n", head.len()).as_bytes(),
                    );
                    bytes.extend_from_slice(&head);
                    bytes.extend_from_slice(b")\r\n");
                }
                o.push_str(&format!("{tag} OK done\r\n"));
                let _ = w.write_all(&bytes);
                o
            }
            "LOGOUT" => {
                let _ = write!(w, "* BYE bye\r\n{tag} OK done\r\n");
                return;
            }
            _ => format!("{tag} OK done\r\n"),
        };
        let _ = w.write_all(out.as_bytes());
    }
}

/// An archive of one INBOX of `n` messages `<m{i}@t>`; message `quota` (if any) holds
/// `over-quota`, and message 1 has the keyword `$Label1` when `keyword` is set.
fn inbox_archive(t: &Path, n: usize, quota: Option<usize>, keyword: bool) -> PathBuf {
    let src = t.join("src");
    let msgs: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let extra = if Some(i) == quota {
                "over-quota"
            } else {
                "fine"
            };
            (
                format!(
                    "{}.M{i}.x:2,S{}",
                    1_600_000_000 + i * 60,
                    if keyword && i == 1 { "a" } else { "" }
                ),
                format!("Subject: m{i}\r\nMessage-ID: <m{i}@t>\r\n\r\nbody {i} {extra}\r\n")
                    .into_bytes(),
            )
        })
        .collect();
    write_maildir_folder(&src.join("INBOX"), &msgs);
    if keyword {
        std::fs::write(src.join("INBOX/dovecot-keywords"), "0 $Label1\n").unwrap();
    }
    let ar = t.join("a.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    ar
}

/// `mailark import AR --to imap://bob@127.0.0.1:PORT --json` plus `extra`, in clear
/// text; its output and JSON report.
fn import_to(
    t: &Path,
    ar: &Path,
    port: u16,
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let pw = t.join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let mut args = vec![
        "import".to_string(),
        ar.display().to_string(),
        "--to".into(),
        format!("imap://bob@127.0.0.1:{port}"),
        "--password-file".into(),
        pw.display().to_string(),
        "--allow-plaintext".into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    let rep: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    (out, rep)
}

#[test]
fn throttled_appends_are_retried_and_over_quota_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let ar = inbox_archive(t.path(), 5, Some(3), true);
    let (port, store) = scripted(Script {
        throttle: 2,
        ..Default::default()
    });
    let (out, rep) = import_to(t.path(), &ar, port, &["--jobs", "1"]);
    assert_eq!(out.status.code(), Some(1), "{rep}");
    let s = store.lock().unwrap();
    assert_eq!(s.throttled, 2);
    assert_eq!(
        s.msgs.len(),
        4,
        "every message but the over-quota one arrived once"
    );
    assert_eq!(rep["appended"], 4, "{rep}");
    assert_eq!(rep["verified"], 4, "{rep}");
    assert_eq!(rep["folders"][0]["failed"], 1, "{rep}");
    let failed = &rep["folders"][0]["failures"];
    assert_eq!(failed.as_array().unwrap().len(), 1, "{rep}");
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("quota"),
        "{failed}"
    );
    assert!(
        failed[0]["id"].as_str().unwrap().contains("m3@t"),
        "{failed}"
    );
    // The keyword the folder cannot keep is reported, not sent; the message verifies
    // with the flags the folder keeps.
    assert_eq!(
        rep["folders"][0]["dropped_keywords"],
        serde_json::json!([["$Label1", 1]]),
        "{rep}"
    );
    assert!(s.msgs.iter().all(|(f, _, _)| !f.contains("$Label1")));
    assert!(rep["notes"].to_string().contains("clear text"), "{rep}");
    // Every APPENDUID was true: verification needed no Message-ID.
    assert_eq!(s.id_fetches, 0);
    // The password never appears in what mailark printed.
    assert!(!stdout(&out).contains("secret") && !stderr(&out).contains("secret"));
}

#[test]
fn appenduid_naming_a_missing_uid_is_checked_by_message_id() {
    let t = tempfile::tempdir().unwrap();
    let ar = inbox_archive(t.path(), 3, None, false);
    let (port, store) = scripted(Script {
        uid_lie: 100,
        ..Default::default()
    });
    let (out, rep) = import_to(t.path(), &ar, port, &[]);
    assert_eq!(out.status.code(), Some(0), "{rep}");
    assert_eq!(rep["verified"], 3, "{rep}");
    let s = store.lock().unwrap();
    assert_eq!(s.msgs.len(), 3);
    assert_eq!(s.id_fetches, 1, "one round by UID, then one by Message-ID");
}

#[test]
fn refused_multiappend_is_retried_one_message_at_a_time() {
    let t = tempfile::tempdir().unwrap();
    let ar = inbox_archive(t.path(), 40, Some(7), false);
    let (port, store) = scripted(Script {
        multi: true,
        ..Default::default()
    });
    let (out, rep) = import_to(t.path(), &ar, port, &["--jobs", "1"]);
    assert_eq!(out.status.code(), Some(1), "{rep}");
    let s = store.lock().unwrap();
    assert!(s.largest_append > 1, "messages went in MULTIAPPENDs");
    assert_eq!(s.msgs.len(), 39, "all but the over-quota one, once each");
    let mut bodies: Vec<&Vec<u8>> = s.msgs.iter().map(|m| &m.2).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 39, "nothing doubled");
    assert_eq!(rep["appended"], 39, "{rep}");
    assert_eq!(rep["verified"], 39, "{rep}");
    assert_eq!(rep["folders"][0]["failed"], 1, "{rep}");
    let failed = &rep["folders"][0]["failures"];
    assert_eq!(failed.as_array().unwrap().len(), 1, "{rep}");
    assert!(
        failed[0]["id"].as_str().unwrap().contains("m7@t"),
        "{failed}"
    );
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("quota"),
        "{failed}"
    );
    // The APPENDUID ranges told verification where every message went.
    assert_eq!(s.id_fetches, 0);
}

#[test]
fn server_without_literal_plus_gets_one_append_at_a_time() {
    let t = tempfile::tempdir().unwrap();
    let ar = inbox_archive(t.path(), 6, Some(2), false);
    // MULTIAPPEND is offered but needs LITERAL+ in mailark; without it, each message
    // waits for the server's go-ahead.
    let (port, store) = scripted(Script {
        multi: true,
        sync_literals: true,
        throttle: 1,
        ..Default::default()
    });
    let (out, rep) = import_to(t.path(), &ar, port, &[]);
    assert_eq!(out.status.code(), Some(1), "{rep}");
    let s = store.lock().unwrap();
    assert_eq!(s.largest_append, 1);
    assert_eq!(s.sync_literals, s.appends, "every literal waited for `+`");
    assert_eq!(s.msgs.len(), 5);
    assert_eq!(rep["appended"], 5, "{rep}");
    assert_eq!(rep["verified"], 5, "{rep}");
    assert_eq!(rep["folders"][0]["failed"], 1, "{rep}");
    let failed = &rep["folders"][0]["failures"];
    assert_eq!(failed.as_array().unwrap().len(), 1, "{rep}");
    assert!(
        failed[0]["id"].as_str().unwrap().contains("m2@t"),
        "{failed}"
    );
}

#[test]
fn messages_the_index_cannot_place_or_date_are_failed_not_dropped() {
    let t = tempfile::tempdir().unwrap();
    let good = inbox_archive(t.path(), 4, None, false);
    let ar = t.path().join("bad.tar.zst");
    tampered(
        &good,
        &ar,
        |recs| {
            let mut msgs = recs.iter_mut().filter(|r| r["type"] == "message");
            msgs.next().unwrap()["folder"] = "Ghost".into();
            msgs.next().unwrap()["internaldate"] = "the day before".into();
            let f = recs.iter_mut().find(|r| r["type"] == "folder").unwrap();
            f["messages"] = 3.into();
        },
        &[],
    );
    let (port, store) = scripted(Script::default());
    let (out, rep) = import_to(t.path(), &ar, port, &["--jobs", "1"]);
    assert_eq!(out.status.code(), Some(1), "{rep}");
    assert_eq!(store.lock().unwrap().msgs.len(), 2, "{rep}");
    assert_eq!(rep["failed"], 2, "{rep}");
    let reasons = rep["folders"].to_string();
    assert!(
        reasons.contains("Ghost") && reasons.contains("the day before"),
        "{rep:#}"
    );
}
