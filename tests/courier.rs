//! mailark against a real Courier-IMAP 5.0 + Courier POP3 (Debian 12's packages, run by
//! `tests/support/courier.rs`): the harness itself (logins on all four ports, Maildir++
//! seeding, nothing left behind), then export, verify, import and rerun end to end
//! through the real binary. Courier facts the tests expect are in `docs/servers.md`.

mod common;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use support::courier::{session_members, Courier, CourierOptions};
use support::raw::mutf7;

/// One line-by-line session: each command is sent only after the previous answer
/// arrived (Courier's login process hands the connection to the mail process, so
/// anything pipelined after LOGIN or PASS would be lost), and the answers are returned.
/// An IMAP command's answer ends with its tag (the command's first word); a POP3 one is
/// a single line.
fn converse(r: &mut impl BufRead, w: &mut impl Write, imap: bool, cmds: &[String]) -> String {
    let mut out = String::new();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    out.push_str(&line);
    for cmd in cmds {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        w.flush().unwrap();
        let tag = cmd.split(' ').next().unwrap();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap() == 0 {
                return out;
            }
            out.push_str(&line);
            if !imap || line.starts_with(&format!("{tag} ")) {
                break;
            }
        }
    }
    out
}

/// `converse` over TLS with `openssl s_client`, trusting only the harness's certificate.
fn tls_converse(c: &Courier, port: u16, imap: bool, cmds: &[String]) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(c.ca_file())
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    let mut w = child.stdin.take().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let out = converse(&mut r, &mut w, imap, cmds);
    drop(w);
    let _ = child.kill();
    let _ = child.wait();
    out
}

fn tcp_converse(port: u16, imap: bool, cmds: &[String]) -> String {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    converse(&mut r, &mut w, imap, cmds)
}

/// Processes whose mount table names `needle` (a path only an instance's mounts hold).
fn mounting(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("mountinfo")).is_ok_and(|m| m.contains(needle))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn harness_logs_in_on_all_four_ports_and_leaves_nothing_behind() {
    let c = Courier::start();
    c.seed_maildir(
        "alice",
        "Archive.2019",
        &[(b"Subject: a\r\n\r\none\r\n".to_vec(), "S", 1_500_000_000)],
    );
    c.seed_maildir(
        "alice",
        "INBOX",
        &[(b"Subject: b\r\n\r\ntwo\r\n".to_vec(), "", 1_500_000_000)],
    );
    let mut imap = c.raw("alice");
    let list = imap.must("LIST \"\" \"*\"").text();
    assert!(list.contains("\"INBOX.Archive.2019\""), "{list}");
    let lsub = imap.must("LSUB \"\" \"*\"").text();
    assert!(lsub.contains("\"INBOX.Archive.2019\""), "{lsub}");
    let got = imap.fetch_all("INBOX.Archive.2019");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, b"Subject: a\r\n\r\none\r\n");
    assert!(got[0].1.contains("\\Seen"), "{}", got[0].1);
    imap.logout();

    let pw = c.password("alice");
    let imaps = tls_converse(
        &c,
        c.imaps_port,
        true,
        &[
            format!("a LOGIN alice {}", support::raw::quote(pw)),
            "b SELECT INBOX".into(),
            "c LOGOUT".into(),
        ],
    );
    assert!(imaps.contains("a OK LOGIN"), "{imaps}");
    assert!(imaps.contains("* 1 EXISTS"), "{imaps}");
    let script = [
        "USER alice".to_string(),
        format!("PASS {pw}"),
        "STAT".into(),
        "QUIT".into(),
    ];
    let pop3 = tcp_converse(c.pop3_port, false, &script);
    assert!(pop3.contains("+OK 1 "), "{pop3}");
    let pop3s = tls_converse(&c, c.pop3s_port, false, &script);
    assert!(pop3s.contains("+OK 1 "), "{pop3s}");

    let sid = c.session_id();
    assert!(session_members(sid).len() >= 6, "{}", c.log());
    // The instance's overlays and bind mount are seen by its processes only.
    let dir = c.dir.path().to_path_buf();
    let needle = dir.to_string_lossy().into_owned();
    // Members first: processes may end meanwhile, none starts (no connection is open).
    let members: Vec<String> = session_members(sid).iter().map(i32::to_string).collect();
    let seen_by = mounting(&needle);
    assert!(!seen_by.is_empty());
    assert!(seen_by.iter().all(|p| members.contains(p)), "{seen_by:?}");
    drop(c);
    assert_eq!(session_members(sid), Vec::<i32>::new());
    assert!(!dir.exists());
    assert_eq!(mounting(&needle), Vec::<String>::new());
}

// ---- helpers for the end-to-end tests ----

/// Every message file of an archive, read with plain `tar --zstd` (not mailark), sorted.
fn archived_messages(archive: &Path) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "tar --zstd -xf {}", archive.display());
    let mut v: Vec<Vec<u8>> = read_tree(&dir.path().join("maildir"))
        .into_iter()
        .filter(|(p, _)| p.contains("/cur/"))
        .map(|(_, b)| b)
        .collect();
    v.sort();
    v
}

/// `mailark export URL -o OUT` as `user`, trusting the harness's certificate.
fn export(c: &Courier, url: &str, user: &str, out: &Path, extra: &[&str]) -> Output {
    let pw = c.password_file(user);
    let ca = c.ca_file();
    let mut args = vec![
        "export",
        url,
        "-o",
        out.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// A message whose headers are raw UTF-8 (RFC 6532), as mail from an SMTPUTF8 sender
/// is stored.
fn utf8_header_message() -> Vec<u8> {
    "From: Jörg Müller <jörg@bücher.example>\r\n\
     To: 山田太郎 <山田@例え.jp>\r\n\
     Subject: 日本語の件名とÜmlaute\r\n\
     Date: Tue, 05 Mar 2024 10:00:00 +0900\r\n\
     Message-ID: <utf8-1@bücher.example>\r\n\
     MIME-Version: 1.0\r\n\
     Content-Type: text/plain; charset=utf-8\r\n\
     Content-Transfer-Encoding: 8bit\r\n\
     \r\n\
     本文です。\r\n\
     .a line with a leading dot\r\n"
        .as_bytes()
        .to_vec()
}

// ---- POP3: the mail, not a stand-in (issue 9, defect 3) ----

/// Courier's pop3d replaces a message with raw UTF-8 headers by a generated notice
/// unless the client sends `UTF8` (RFC 6856). Over POP3 (STLS) and POP3S the archive
/// must hold the mail as it was delivered, byte for byte.
#[test]
fn pop3_export_of_raw_utf8_headers_is_byte_exact() {
    let c = Courier::start();
    let ascii =
        b"From: a@example.org\r\nSubject: plain\r\nMessage-ID: <a-1@example.org>\r\n\r\nhello\r\n"
            .to_vec();
    let seeded = vec![utf8_header_message(), ascii];
    let mut imap = c.raw("alice");
    for m in &seeded {
        let r = imap.append("INBOX", "", None, m);
        assert!(r.ok(), "APPEND: {}", r.status);
    }
    imap.logout();
    let mut want = seeded.clone();
    want.sort();
    let scratch = tempfile::tempdir().unwrap();
    for (name, url) in [
        ("pop3", c.pop3_url("alice")),
        ("pop3s", c.pop3s_url("alice")),
    ] {
        let out = scratch.path().join(format!("{name}.tar.zst"));
        let o = export(&c, &url, "alice", &out, &["--json"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{name}: {}\n{}",
            stdout(&o),
            stderr(&o)
        );
        let j = json(&o);
        assert_eq!(j["messages"], 2, "{name}: {j}");
        assert_eq!(j["server"]["utf8"], true, "{name}: {j}");
        assert_eq!(j["size_differences"], serde_json::json!([]), "{name}: {j}");
        let got = archived_messages(&out);
        assert!(
            !got.iter()
                .any(|m| String::from_utf8_lossy(m).contains("Cannot display Unicode content")),
            "{name}: the archive holds Courier's stand-in"
        );
        assert_eq!(
            got, want,
            "{name}: archived bytes differ from the seeded mail"
        );
        run_ok(&["verify", out.to_str().unwrap()]);
    }
}

// ---- IMAP export, verify, verify --against the source ----

/// The seeded account's folders: UTF-8 names under `INBOX.` with `.` levels.
const FOLDERS: [&str; 4] = ["INBOX", "受信箱", "受信箱.取引先", "Archive.2019"];

/// A folder's name as Courier lists it (and as the archive records it).
fn listed_name(f: &str) -> String {
    if f == "INBOX" {
        f.into()
    } else {
        format!("INBOX.{f}")
    }
}

/// The fixture messages spread over `FOLDERS` as Courier stores mail (Maildir++ files),
/// with flags and dates varying. `keep` picks fixtures by file name.
fn seed_fixtures(c: &Courier, user: &str, keep: impl Fn(&str) -> bool) -> usize {
    let mut per_folder: Vec<Vec<(Vec<u8>, &str, i64)>> = vec![Vec::new(); FOLDERS.len()];
    let flags = ["S", "", "FS", "R", "S", "DS"];
    let mut n = 0;
    for (i, (name, bytes)) in fixtures().into_iter().enumerate() {
        if !keep(&name) {
            continue;
        }
        per_folder[i % FOLDERS.len()].push((
            bytes,
            flags[i % flags.len()],
            1_500_000_000 + i as i64 * 3600,
        ));
        n += 1;
    }
    for (f, msgs) in FOLDERS.iter().zip(&per_folder) {
        c.seed_maildir(user, f, msgs);
    }
    n
}

/// (folder, SHA-256, flags without \Recent) of every message of `folders` (names as
/// in `FOLDERS`), as the server serves it to a plain IMAP client, sorted.
fn server_messages(
    c: &Courier,
    user: &str,
    folders: &[&str],
) -> Vec<(String, String, Vec<String>)> {
    let mut imap = c.raw(user);
    let mut out = Vec::new();
    for &f in folders {
        let wire = if f == "INBOX" {
            f.to_string()
        } else {
            format!("INBOX.{}", mutf7(f))
        };
        for (_, flags, body) in imap.fetch_all(&wire) {
            out.push((
                listed_name(f),
                sha256_hex(&body),
                flag_list(flags.split_whitespace()),
            ));
        }
    }
    imap.logout();
    out.sort();
    out
}

fn flag_list<'a>(it: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = it
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The same triple for every message of an archive, from `mailark ls --json`.
fn archived_index(archives: &[&Path]) -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<_> = ls_json(archives)
        .iter()
        .map(|m| {
            (
                m["folder"].as_str().unwrap().to_string(),
                m["sha256"].as_str().unwrap().to_string(),
                flag_list(
                    m["flags"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f.as_str().unwrap()),
                ),
            )
        })
        .collect();
    out.sort();
    out
}

/// `mailark verify ARCHIVES --against URL --json` as `user`.
fn verify_against(c: &Courier, archives: &[&Path], url: &str, user: &str) -> Output {
    let pw = c.password_file(user);
    let ca = c.ca_file();
    let mut args: Vec<&str> = vec!["verify"];
    args.extend(archives.iter().map(|p| p.to_str().unwrap()));
    args.extend([
        "--against",
        url,
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
        "--json",
    ]);
    run(&args)
}

/// Export over IMAP (STARTTLS) and IMAPS of an account with Japanese folder names and
/// every edge fixture (the two that share a Message-ID kept in different folders; see
/// the test below for them together): the archive holds what the server serves, with
/// its flags, and verifies alone and against the source.
#[test]
fn imap_export_verify_and_verify_against_the_source() {
    let c = Courier::start();
    let n = seed_fixtures(&c, "alice", |_| true);
    let want = server_messages(&c, "alice", &FOLDERS);
    assert_eq!(want.len(), n);
    let scratch = tempfile::tempdir().unwrap();
    for (name, url) in [
        ("imap", c.imap_url("alice")),
        ("imaps", c.imaps_url("alice")),
    ] {
        let ar = scratch.path().join(format!("{name}.tar.zst"));
        let o = export(&c, &url, "alice", &ar, &["--json"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{name}: {}\n{}",
            stdout(&o),
            stderr(&o)
        );
        assert_eq!(json(&o)["messages"], n as u64, "{name}");
        assert_eq!(archived_index(&[&ar]), want, "{name}");
        run_ok(&["verify", ar.to_str().unwrap()]);
        let v = verify_against(&c, &[&ar], &url, "alice");
        assert_eq!(findings(&v), vec![], "{name}: {}", stdout(&v));
        assert_eq!(v.status.code(), Some(0), "{name}: {}", stderr(&v));
    }
}

/// Two different messages sharing one Message-ID in one folder: the archive holds both
/// and `verify --against` the unchanged source finds nothing. Fails about 1 run in 5
/// today: run it repeatedly.
#[test]
fn verify_against_the_source_with_a_shared_message_id() {
    let c = Courier::start();
    let pair: Vec<(Vec<u8>, &str, i64)> = fixtures()
        .into_iter()
        .filter(|(n, _)| n.contains("same-msgid"))
        .map(|(_, b)| (b, "S", 1_500_000_000))
        .collect();
    assert_eq!(pair.len(), 2);
    c.seed_maildir("alice", "INBOX", &pair);
    let want = server_messages(&c, "alice", &["INBOX"]);
    assert_eq!(want.len(), 2);
    let scratch = tempfile::tempdir().unwrap();
    let ar = scratch.path().join("a.tar.zst");
    let url = c.imaps_url("alice");
    let o = export(&c, &url, "alice", &ar, &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert_eq!(archived_index(&[&ar]), want);
    let v = verify_against(&c, &[&ar], &url, "alice");
    assert_eq!(findings(&v), vec![], "{}", stdout(&v));
    assert_eq!(v.status.code(), Some(0), "{}", stderr(&v));
}

// ---- POP3 export of the edge fixtures ----

/// What POP3 must deliver for a message IMAP serves as `imap`: the same bytes, plus the
/// CRLF POP3 cannot do without when the message has no final newline.
fn pop3_form(imap: &[u8]) -> Vec<u8> {
    let mut v = imap.to_vec();
    if !v.ends_with(b"\n") {
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Every fixture in the maildrop, exported over POP3 (STLS) and POP3S: the archive
/// holds what Courier serves (as IMAP shows it, plus a final CRLF where it lacks one,
/// which the report explains). The one exception is the message with bare CRs and no
/// LF at all: Courier's LIST announces 190 octets for it but POP3 sends the 191 stored
/// bytes and a CRLF. The archive holds what was sent, the report names that message
/// alone as an unexplained size difference, and the exit code is 1.
#[test]
fn pop3_export_of_every_fixture() {
    let c = Courier::start();
    let fx = fixtures();
    let msgs: Vec<(Vec<u8>, &str, i64)> = fx
        .iter()
        .enumerate()
        .map(|(i, (_, b))| (b.clone(), "", 1_500_000_000 + i as i64 * 60))
        .collect();
    c.seed_maildir("alice", "INBOX", &msgs);
    let bare_cr = &fx.iter().find(|(n, _)| n.contains("bare-cr")).unwrap().1;
    assert!(!bare_cr.contains(&b'\n'));
    let mut imap = c.raw("alice");
    let mut want: Vec<Vec<u8>> = imap
        .fetch_all("INBOX")
        .into_iter()
        .map(|(_, _, b)| {
            if b.windows(9).any(|w| w == b"<bare-cr@") {
                [&bare_cr[..], b"\r\n"].concat()
            } else {
                pop3_form(&b)
            }
        })
        .collect();
    imap.logout();
    want.sort();
    assert_eq!(want.len(), msgs.len());
    let scratch = tempfile::tempdir().unwrap();
    for (name, url) in [
        ("pop3", c.pop3_url("alice")),
        ("pop3s", c.pop3s_url("alice")),
    ] {
        let out = scratch.path().join(format!("{name}.tar.zst"));
        let o = export(&c, &url, "alice", &out, &["--json"]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        let j = json(&o);
        assert_eq!(j["messages"], msgs.len() as u64, "{name}: {j}");
        let unexplained: Vec<&serde_json::Value> = j["size_differences"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["explanation"].is_null())
            .collect();
        assert_eq!(unexplained.len(), 1, "{name}: {j}");
        assert_eq!(
            unexplained[0]["retr_size"],
            bare_cr.len() as u64 + 2,
            "{name}: {j}"
        );
        assert_eq!(archived_messages(&out), want, "{name}");
        run_ok(&["verify", out.to_str().unwrap()]);
    }
}

// ---- import into Courier, rerun, verify --against the destination ----

/// A source folder: name (`/` levels) and (file name with `:2,` flags, bytes) pairs.
type SrcFolder<'a> = (&'a str, Vec<(String, Vec<u8>)>);

/// An archive made with `mailark export maildir:` from a Maildir tree (`/` levels)
/// holding `folders`, every folder subscribed.
fn maildir_archive(dir: &Path, folders: &[SrcFolder]) -> std::path::PathBuf {
    let src = dir.join("src");
    for (name, msgs) in folders {
        write_maildir_folder(&src.join(name), msgs);
    }
    let subs: String = folders.iter().map(|(n, _)| format!("{n}\n")).collect();
    std::fs::write(src.join("subscriptions"), subs).unwrap();
    let ar = dir.join("a.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    ar
}

/// `mailark import ARCHIVES --to URL --json` as `user`: the output and its report.
fn import(c: &Courier, archives: &[&Path], url: &str, user: &str) -> (Output, serde_json::Value) {
    let pw = c.password_file(user);
    let ca = c.ca_file();
    let mut args: Vec<&str> = vec!["import"];
    args.extend(archives.iter().map(|p| p.to_str().unwrap()));
    args.extend([
        "--to",
        url,
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
        "--json",
    ]);
    let o = run(&args);
    let rep = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}), exit {:?}\n{}\n{}",
            o.status.code(),
            stdout(&o),
            stderr(&o)
        )
    });
    (o, rep)
}

/// (message, reason) of every failure in an import report.
fn import_failures(rep: &serde_json::Value) -> Vec<(String, String)> {
    rep["folders"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["failures"].as_array().unwrap().iter())
        .map(|x| {
            (
                x["id"].as_str().unwrap().to_string(),
                x["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The fixtures holding a CR not followed by LF.
fn has_bare_cr(name: &str) -> bool {
    name.contains("bare-cr") || name.contains("mixed-endings")
}

/// Messages Courier cannot take unaltered or at all, by a word of their Message-ID or
/// name: an empty message (no APPEND of nothing), NUL bytes (no BINARY), and no final
/// newline (Courier adds CRLF, which the verification sees).
fn expected_import_failures(fails: &[(String, String)]) {
    let find = |what: &str| {
        fails
            .iter()
            .filter(|(id, _)| id.contains(what))
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(fails.len(), 3, "{fails:#?}");
    assert!(
        fails.iter().any(|(_, r)| r.contains("empty message")),
        "{fails:#?}"
    );
    assert!(
        find("<nul@").iter().all(|r| r.contains("NUL")) && find("<nul@").len() == 1,
        "{fails:#?}"
    );
    assert!(
        find("<no-eol@").len() == 1 && find("<no-eol@")[0].contains("altered"),
        "{fails:#?}"
    );
}

/// A Courier-to-Courier move: alice's account (every fixture but the two with bare CRs,
/// which Courier deletes on APPEND; see `import_rerun_of_messages_courier_altered`) exported, imported into bob's, a rerun
/// appends nothing, and `verify --against` bob's account finds every message.
#[test]
fn import_from_courier_into_courier_rerun_and_verify_against_the_destination() {
    let c = Courier::start();
    let n = seed_fixtures(&c, "alice", |name| !has_bare_cr(name));
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("alice.tar.zst");
    let o = export(&c, &c.imaps_url("alice"), "alice", &ar, &["-vv"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let archived = archived_index(&[&ar]);
    assert_eq!(archived.len(), n);
    // Courier has no LIST-EXTENDED: LSUB and NAMESPACE go with LIST, one round trip.
    for later in ["LSUB", "NAMESPACE"] {
        assert!(
            support::pipelined_in_trace(&stderr(&o), "LIST", later),
            "{later} waited for LIST's answer:\n{}",
            stderr(&o)
        );
    }

    let url = c.imaps_url("bob");
    let (o, rep) = import(&c, &[&ar], &url, "bob");
    expected_import_failures(&import_failures(&rep));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // Empty and NUL are not sent; the one without final newline is, and stays.
    assert_eq!(rep["appended"], n as u64 - 2, "{rep}");
    assert_eq!(rep["verified"], n as u64 - 3, "{rep}");
    // Bob holds every other message byte for byte, in the same folder, same flags.
    let on_bob = server_messages(&c, "bob", &FOLDERS);
    let failed_sha: Vec<&String> = archived
        .iter()
        .filter(|(_, sha, _)| !on_bob.iter().any(|(_, s, _)| s == sha))
        .map(|(_, sha, _)| sha)
        .collect();
    assert_eq!(failed_sha.len(), 3, "{on_bob:#?}");
    for m in &archived {
        if !failed_sha.contains(&&m.1) {
            assert!(
                on_bob.contains(m),
                "{m:?} not on bob's account: {on_bob:#?}"
            );
        }
    }

    let (o, rep2) = import(&c, &[&ar], &url, "bob");
    assert_eq!(rep2["appended"], 0, "{rep2}");
    assert_eq!(o.status.code(), Some(1), "the same problems remain");
    assert_eq!(server_messages(&c, "bob", &FOLDERS), on_bob);

    // What verify finds is what the import reported: the two messages Courier could
    // not take are not there, and the one it took with a final CRLF added is there as
    // Courier alters it (a known server form, found by its size: a warning).
    let v = verify_against(&c, &[&ar], &url, "bob");
    assert_eq!(v.status.code(), Some(1), "{}", stderr(&v));
    let mut f = findings(&v);
    f.sort();
    let pair = |c: &str, l: &str| (c.to_string(), l.to_string());
    assert_eq!(
        f,
        vec![
            pair("gone-from-server", "error"),
            pair("gone-from-server", "error"),
            pair("server-altered", "warning")
        ],
        "{}",
        stdout(&v)
    );
    let fails = import_failures(&rep);
    for g in json(&v)["findings"].as_array().unwrap() {
        let member = g["message"]
            .as_str()
            .unwrap()
            .split("member ")
            .nth(1)
            .unwrap();
        let member = member.split(',').next().unwrap();
        assert!(
            fails.iter().any(|(id, _)| id.contains(member)),
            "{member} was not reported by the import: {fails:#?}"
        );
    }
}

/// An archive from a Maildir tree (`/` levels, no prefix) imported into Courier: every
/// folder lands under `INBOX.` with `.` levels, the messages arrive, a rerun appends
/// nothing.
#[test]
fn import_of_a_slash_named_archive_lands_under_the_inbox_prefix() {
    let c = Courier::start();
    let t = tempfile::tempdir().unwrap();
    let (ar, n) = slash_archive(t.path());
    let url = c.imaps_url("bob");
    let (o, rep) = import(&c, &[&ar], &url, "bob");
    expected_import_failures(&import_failures(&rep));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(rep["verified"], n as u64 - 3, "{rep}");
    let dest: Vec<(String, String)> = rep["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["folder"].as_str().unwrap().to_string(),
                f["destination"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (src, want) in [
        ("INBOX", "INBOX"),
        ("受信箱", "INBOX.受信箱"),
        ("受信箱/取引先", "INBOX.受信箱.取引先"),
        ("Archive/2019", "INBOX.Archive.2019"),
    ] {
        assert!(dest.contains(&(src.into(), want.into())), "{dest:?}");
    }
    let on_bob = server_messages(&c, "bob", &FOLDERS);
    assert_eq!(on_bob.len(), n - 2, "{on_bob:#?}");
    let (_, rep2) = import(&c, &[&ar], &url, "bob");
    assert_eq!(rep2["appended"], 0, "{rep2}");
    assert_eq!(server_messages(&c, "bob", &FOLDERS), on_bob);
}

/// The fixtures without bare CRs in a Maildir tree with `/` levels, exported: the
/// archive and its message count.
fn slash_archive(dir: &Path) -> (std::path::PathBuf, usize) {
    let names = ["INBOX", "受信箱", "受信箱/取引先", "Archive/2019"];
    let mut folders: Vec<SrcFolder> = names.iter().map(|n| (*n, Vec::new())).collect();
    let mut n = 0;
    for (i, (name, b)) in fixtures().into_iter().enumerate() {
        if has_bare_cr(&name) {
            continue;
        }
        let flags = if i % 2 == 0 { "S" } else { "FS" };
        folders[i % names.len()]
            .1
            .push((format!("{}.M{i}.x:2,{flags}", 1_500_000_000 + i * 3600), b));
        n += 1;
    }
    (maildir_archive(dir, &folders), n)
}

/// `verify --against` the Courier account an archive with `/` names was imported into
/// pairs each archived folder with the one import put it in (`Archive/2019` with
/// `INBOX.Archive.2019`), instead of calling every folder missing.
#[test]
fn verify_against_a_courier_destination_of_a_slash_named_archive() {
    let c = Courier::start();
    let t = tempfile::tempdir().unwrap();
    let (ar, _) = slash_archive(t.path());
    let url = c.imaps_url("bob");
    import(&c, &[&ar], &url, "bob");
    let v = verify_against(&c, &[&ar], &url, "bob");
    assert_eq!(json(&v)["against"]["folders_compared"], 4, "{}", stdout(&v));
    // Left: the two messages import could not take (errors), and the message Courier
    // stored with a final CRLF added (a server-altered warning, found by its size).
    let f = findings(&v);
    let errors: Vec<&String> = f
        .iter()
        .filter(|(_, l)| l == "error")
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        errors,
        ["gone-from-server", "gone-from-server"],
        "{}",
        stdout(&v)
    );
    assert!(
        f.iter().all(|(c, l)| l == "error" || c == "server-altered"),
        "{}",
        stdout(&v)
    );
}

/// Messages with bare CRs, which Courier deletes on APPEND: the import reports them
/// altered, and a rerun must not append them again.
#[test]
fn import_rerun_of_messages_courier_altered() {
    let c = Courier::start();
    let msgs: Vec<(Vec<u8>, &str, i64)> = fixtures()
        .into_iter()
        .filter(|(n, _)| has_bare_cr(n))
        .map(|(_, b)| (b, "S", 1_500_000_000))
        .collect();
    assert_eq!(msgs.len(), 2);
    c.seed_maildir("alice", "INBOX", &msgs);
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("a.tar.zst");
    let o = export(&c, &c.imaps_url("alice"), "alice", &ar, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let url = c.imaps_url("bob");
    let (_, rep) = import(&c, &[&ar], &url, "bob");
    let fails = import_failures(&rep);
    assert_eq!(fails.len(), 2, "{fails:#?}");
    assert!(
        fails.iter().all(|(_, r)| r.contains("altered")),
        "{fails:#?}"
    );
    let on_bob = server_messages(&c, "bob", &["INBOX"]);
    assert_eq!(on_bob.len(), 2);
    let (_, rep2) = import(&c, &[&ar], &url, "bob");
    assert_eq!(rep2["appended"], 0, "{rep2}");
    assert_eq!(server_messages(&c, "bob", &["INBOX"]), on_bob);
}

/// Two different messages sharing one Message-ID moved from one Courier account to
/// another: both arrive once, and a rerun appends nothing. Returns the Courier, the
/// archive (in `t`) and bob's URL.
fn move_shared_message_id_pair(t: &Path) -> (Courier, std::path::PathBuf, String) {
    let c = Courier::start();
    let pair: Vec<(Vec<u8>, &str, i64)> = fixtures()
        .into_iter()
        .filter(|(n, _)| n.contains("same-msgid"))
        .map(|(_, b)| (b, "S", 1_500_000_000))
        .collect();
    c.seed_maildir("alice", "INBOX", &pair);
    let ar = t.join("a.tar.zst");
    let o = export(&c, &c.imaps_url("alice"), "alice", &ar, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let url = c.imaps_url("bob");
    let (o, rep) = import(&c, &[&ar], &url, "bob");
    assert_eq!(o.status.code(), Some(0), "{rep}");
    assert_eq!(rep["appended"], 2, "{rep}");
    assert_eq!(
        server_messages(&c, "bob", &["INBOX"]),
        server_messages(&c, "alice", &["INBOX"])
    );
    let (_, rep2) = import(&c, &[&ar], &url, "bob");
    assert_eq!(rep2["appended"], 0, "{rep2}");
    (c, ar, url)
}

#[test]
fn import_of_a_shared_message_id_pair_and_rerun() {
    let t = tempfile::tempdir().unwrap();
    move_shared_message_id_pair(t.path());
}

/// `verify --against` the destination of that move (other UIDVALIDITY, so compared by
/// content) finds nothing. Fails about 1 run in 5 today: run it repeatedly.
#[test]
fn verify_against_the_destination_with_a_shared_message_id() {
    let t = tempfile::tempdir().unwrap();
    let (c, ar, url) = move_shared_message_id_pair(t.path());
    let v = verify_against(&c, &[&ar], &url, "bob");
    assert_eq!(findings(&v), vec![], "{}", stdout(&v));
    assert_eq!(v.status.code(), Some(0));
}

/// Leaving Courier for a server without a namespace prefix (Dovecot, `/` levels):
/// Courier's `INBOX.` is its personal namespace, not a folder, so `INBOX.受信箱.取引先`
/// must become `受信箱/取引先`, not a folder nested under INBOX.
#[test]
fn import_from_courier_into_dovecot_leaves_the_inbox_prefix_behind() {
    let c = Courier::start();
    seed_fixtures(&c, "alice", |name| !has_bare_cr(name));
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("alice.tar.zst");
    let o = export(&c, &c.imaps_url("alice"), "alice", &ar, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let d = support::Dovecot::start();
    let pw = d.password_file("bob");
    let ca = d.ca_file();
    let url = d.imaps_url("bob");
    let o = run(&[
        "import",
        ar.to_str().unwrap(),
        "--to",
        &url,
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
        "--json",
    ]);
    let rep = json(&o);
    let dest: Vec<(String, String)> = rep["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["folder"].as_str().unwrap().to_string(),
                f["destination"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (src, want) in [
        ("INBOX", "INBOX"),
        ("INBOX.受信箱", "受信箱"),
        ("INBOX.受信箱.取引先", "受信箱/取引先"),
        ("INBOX.Archive.2019", "Archive/2019"),
    ] {
        assert!(dest.contains(&(src.into(), want.into())), "{dest:?}");
    }
}

// ---- Courier's limits: no keywords (IMAP_KEYWORDS=0), MAXPERIP ----

/// With `IMAP_KEYWORDS=0` Courier refuses any APPEND that carries a keyword. The
/// messages must still arrive (system flags kept), the keywords reported as dropped,
/// and a rerun append nothing.
#[test]
fn import_into_courier_without_keywords() {
    let c = Courier::start_with(CourierOptions {
        extra_imapd: "IMAP_KEYWORDS=0\n".into(),
        ..Default::default()
    });
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let msgs: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!(
                    "{}.M{i}.x:2,{}",
                    1_500_000_000 + i,
                    if i % 2 == 0 { "aS" } else { "bF" }
                ),
                format!("Subject: kw {i}\r\nMessage-ID: <kw-{i}@test>\r\n\r\nbody {i}\r\n")
                    .into_bytes(),
            )
        })
        .collect();
    write_maildir_folder(&src.join("INBOX"), &msgs);
    std::fs::write(src.join("INBOX/dovecot-keywords"), "0 $Label1\n1 Work\n").unwrap();
    let ar = t.path().join("a.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    let url = c.imaps_url("bob");
    let (o, rep) = import(&c, &[&ar], &url, "bob");
    assert_eq!(o.status.code(), Some(0), "{rep}\n{}", stderr(&o));
    assert_eq!(rep["appended"], 4, "{rep}");
    assert_eq!(rep["verified"], 4, "{rep}");
    let dropped = rep["folders"][0]["dropped_keywords"].to_string();
    assert!(
        dropped.contains("$Label1") && dropped.contains("Work"),
        "{rep}"
    );
    let on_bob = server_messages(&c, "bob", &["INBOX"]);
    let flags: Vec<&Vec<String>> = on_bob.iter().map(|m| &m.2).collect();
    assert_eq!(
        flags
            .iter()
            .filter(|f| f.contains(&"\\Seen".to_string()))
            .count(),
        2
    );
    assert_eq!(
        flags
            .iter()
            .filter(|f| f.contains(&"\\Flagged".to_string()))
            .count(),
        2
    );
    let (_, rep2) = import(&c, &[&ar], &url, "bob");
    assert_eq!(rep2["appended"], 0, "{rep2}");
}

/// More connections asked for than Courier's MAXPERIP allows from one address: the
/// import goes on with the ones it got and says so.
#[test]
fn import_with_more_jobs_than_maxperip() {
    let c = Courier::start_with(CourierOptions {
        extra_imapd: "MAXPERIP=3\n".into(),
        ..Default::default()
    });
    let t = tempfile::tempdir().unwrap();
    let (ar, n) = slash_archive(t.path());
    let url = c.imaps_url("bob");
    let pw = c.password_file("bob");
    let ca = c.ca_file();
    let o = run(&[
        "import",
        ar.to_str().unwrap(),
        "--to",
        &url,
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
        "--json",
        "--jobs",
        "6",
    ]);
    let rep = json(&o);
    assert_eq!(rep["verified"], n as u64 - 3, "{rep}\n{}", stderr(&o));
    expected_import_failures(&import_failures(&rep));
    assert!(
        rep["notes"].to_string().contains("connections opened"),
        "{rep}"
    );
}

/// IMAP has no stand-in: Courier serves raw UTF-8 headers to a client that did not
/// ENABLE UTF8=ACCEPT, and the archive holds the message as delivered.
#[test]
fn imap_export_of_raw_utf8_headers_is_byte_exact() {
    let c = Courier::start();
    c.seed_maildir(
        "alice",
        "INBOX",
        &[(utf8_header_message(), "", 1_500_000_000)],
    );
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("a.tar.zst");
    let o = export(&c, &c.imaps_url("alice"), "alice", &ar, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(archived_messages(&ar), vec![utf8_header_message()]);
}
