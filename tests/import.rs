//! `mailark import` against real servers (Dovecot's second user, and Cyrus 3.6): the
//! fixtures with odd folder names, special-use mapping, keywords and `\Deleted`, a `.`
//! delimiter with an `INBOX.` prefix, `--dry-run`, reruns that append nothing, a run
//! killed mid-import and resumed, the interop corpus, and a message over APPENDLIMIT.
//! Archives are built with `mailark export maildir:` from files written here; server
//! state is read back with the raw test client, not with mailark's own IMAP code.

mod common;
mod support;
use support::dovecot::served_form;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use support::cyrus::{Cyrus, CyrusOptions};
use support::raw::{mutf7, RawImap};
use support::{Dovecot, DovecotOptions};

/// A source folder for an archive: name (`/` levels) and (file name with `:2,` info,
/// bytes) pairs, and the keyword table of the folder.
struct SrcFolder {
    name: &'static str,
    msgs: Vec<(String, Vec<u8>)>,
    keywords: &'static str,
}

/// Writes a LAYOUT=fs Maildir tree and exports it.
fn make_archive(dir: &Path, folders: &[SrcFolder], subscribed: &[&str]) -> PathBuf {
    let src = dir.join("src");
    for f in folders {
        write_maildir_folder(&src.join(f.name), &f.msgs);
        if !f.keywords.is_empty() {
            std::fs::write(src.join(f.name).join("dovecot-keywords"), f.keywords).unwrap();
        }
    }
    let subs: String = subscribed.iter().map(|s| format!("{s}\n")).collect();
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

struct Dest {
    url: String,
    pw: PathBuf,
    ca: PathBuf,
}

impl Dest {
    fn dovecot(d: &Dovecot, user: &str) -> Dest {
        Dest {
            url: d.imaps_url(user),
            pw: d.password_file(user),
            ca: d.ca_file(),
        }
    }
    fn cyrus(c: &Cyrus, user: &str) -> Dest {
        Dest {
            url: c.imaps_url(user),
            pw: c.password_file(user),
            ca: c.ca_file(),
        }
    }

    fn args(&self, archives: &[&Path], extra: &[&str]) -> Vec<String> {
        let mut a = vec!["import".to_string()];
        a.extend(archives.iter().map(|p| p.display().to_string()));
        a.extend(
            [
                "--to",
                &self.url,
                "--password-file",
                self.pw.to_str().unwrap(),
                "--tls-ca-file",
                self.ca.to_str().unwrap(),
                "--json",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Runs `verify ARCHIVES --against` this destination.
    fn verify_against(&self, archives: &[&Path], extra: &[&str]) -> Output {
        let mut a = self.args(archives, extra);
        a[0] = "verify".into();
        a[archives.len() + 1] = "--against".into();
        bin().args(&a).output().unwrap()
    }

    /// Runs an import; returns the process output and the JSON report.
    fn import(&self, archives: &[&Path], extra: &[&str]) -> (Output, serde_json::Value) {
        let args = self.args(archives, extra);
        let out = bin().args(&args).output().unwrap();
        let rep = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}), exit {:?}\nstdout: {}\nstderr: {}",
                out.status.code(),
                stdout(&out),
                stderr(&out)
            )
        });
        (out, rep)
    }
}

fn n(rep: &serde_json::Value, k: &str) -> u64 {
    rep[k].as_u64().unwrap_or_else(|| panic!("{k} in {rep}"))
}

fn folder<'a>(rep: &'a serde_json::Value, src: &str) -> &'a serde_json::Value {
    rep["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["folder"] == src)
        .unwrap_or_else(|| panic!("folder {src} not in report: {rep}"))
}

/// (message file, reason) of every failure in a report.
fn failures(rep: &serde_json::Value) -> Vec<(String, String)> {
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

/// What the server's copy of a message must be: every line ending CRLF.
fn crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + 64);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\r' if b.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Every message of every folder: wire folder name → (flags, body).
fn server_state(c: &mut RawImap) -> HashMap<String, Vec<(String, Vec<u8>)>> {
    let list = c.must("LIST \"\" \"*\"");
    let mut out = HashMap::new();
    for l in list.data {
        let l = String::from_utf8_lossy(&l).trim_end().to_string();
        if l.contains("\\Noselect") || l.contains("\\NonExistent") {
            continue;
        }
        let name = match l.rsplit_once(" \"") {
            Some((_, n)) if l.ends_with('"') => n.trim_end_matches('"').replace("\\\"", "\""),
            _ => l.rsplit(' ').next().unwrap().to_string(),
        };
        let msgs = c
            .fetch_all(&name)
            .into_iter()
            .map(|(_, f, b)| (f, b))
            .collect();
        out.insert(name, msgs);
    }
    out
}

fn flags_have(flags: &str, f: &str) -> bool {
    flags.split_whitespace().any(|x| x.eq_ignore_ascii_case(f))
}

/// The fixtures spread over odd folder names, with flags, keywords and `\Deleted`; the
/// same message twice in INBOX and once more in another folder.
fn fixture_folders() -> Vec<SrcFolder> {
    let names = [
        "INBOX",
        "受信箱/取引先",
        "a.b",
        "with space",
        "Q&A [x]",
        "Sent",
        "Trash",
    ];
    let fx = fixtures();
    let mut folders: Vec<SrcFolder> = names
        .iter()
        .map(|n| SrcFolder {
            name: n,
            msgs: Vec::new(),
            keywords: "0 $Label1\n1 Work\n",
        })
        .collect();
    for (i, (_, b)) in fx.iter().enumerate() {
        let mut info = String::new();
        if i % 5 == 0 {
            info.push('T');
        }
        if i % 2 == 0 {
            info.push('S');
        }
        if i % 3 == 0 {
            info.push('a');
        }
        if i % 4 == 1 {
            info.push('b');
        }
        let mut letters: Vec<char> = info.chars().collect();
        letters.sort();
        let info: String = letters.into_iter().collect();
        folders[i % names.len()].msgs.push((
            format!("{}.M{i}.x:2,{info}", 1_500_000_000 + i * 3600),
            b.clone(),
        ));
    }
    // Two different messages sharing one Message-ID, in one folder: both must arrive.
    for (k, (_, b)) in fx
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| n.contains("same-msgid"))
    {
        folders[1]
            .msgs
            .push((format!("1600000100.Msame{k}.x:2,S"), b.clone()));
    }
    let first = fx[0].1.clone();
    folders[0]
        .msgs
        .push(("1600000000.Mdup1.x:2,S".into(), first.clone()));
    folders[3]
        .msgs
        .push(("1600000001.Mdup2.x:2,F".into(), first));
    folders
}

#[test]
fn dovecot_fixtures_special_use_keywords_and_reruns() {
    let t = tempfile::tempdir().unwrap();
    let ar = make_archive(
        t.path(),
        &fixture_folders(),
        &["INBOX", "受信箱/取引先", "Sent"],
    );
    let index = ls_json(&[&ar]);
    let d = Dovecot::start_with(DovecotOptions {
        special: vec![
            ("送信済みメール".into(), "\\Sent".into()),
            ("Deleted Items".into(), "\\Trash".into()),
            ("Drafts".into(), "\\Drafts".into()),
        ],
        ..Default::default()
    });
    let dest = Dest::dovecot(&d, "bob");

    let (out, rep) = {
        let args = dest.args(&[&ar], &[]);
        let out = bin().args(&args).output().unwrap();
        if !out.status.success() && out.stdout.is_empty() {
            panic!("{}\n{}", stderr(&out), d.log());
        }
        let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out, rep)
    };
    let fails = failures(&rep);
    // The empty fixture cannot be APPENDed anywhere. Dovecot rewrites NUL to 0x80 even
    // in a literal8 and drops the final bare CR of the bare-CR message: verification
    // must catch both and say the server altered them.
    assert_eq!(fails.len(), 3, "{fails:#?}");
    assert!(fails.iter().any(|(_, r)| r.contains("empty")), "{fails:#?}");
    assert!(
        fails
            .iter()
            .any(|(id, r)| id.contains("nul@fixtures") && r.contains("altered")),
        "{fails:#?}"
    );
    assert!(
        fails
            .iter()
            .any(|(id, r)| id.contains("a.b/cur") && r.contains("altered")),
        "{fails:#?}"
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(n(&rep, "archived"), index.len() as u64);
    assert_eq!(n(&rep, "appended"), index.len() as u64 - 1);
    assert_eq!(n(&rep, "verified"), index.len() as u64 - 3);
    assert_eq!(folder(&rep, "Sent")["destination"], "送信済みメール");
    assert_eq!(folder(&rep, "Trash")["destination"], "Deleted Items");
    assert_eq!(
        folder(&rep, "受信箱/取引先")["destination"],
        "受信箱/取引先"
    );

    // The server holds every archived message byte-exact (CRLF form), with its flags.
    let mut c = d.raw("bob");
    let state = server_state(&mut c);
    let dest_of = |f: &str| match f {
        "Sent" => "送信済みメール".to_string(),
        "Trash" => "Deleted Items".to_string(),
        other => other.to_string(),
    };
    let fx: Vec<Vec<u8>> = {
        let mut v: Vec<Vec<u8>> = fixtures().into_iter().map(|x| x.1).collect();
        v.push(Vec::new());
        v
    };
    for m in &index {
        let f = m["folder"].as_str().unwrap();
        let sha = m["sha256"].as_str().unwrap();
        let bytes = fx.iter().find(|b| sha256_hex(b) == sha).unwrap();
        if bytes.is_empty() || bytes.contains(&0) || bytes.ends_with(b"two\r") {
            continue;
        }
        let got = &state[&mutf7(&dest_of(f))];
        let (want, want2) = (crlf(bytes), served_form(bytes));
        let copies: Vec<&(String, Vec<u8>)> = got
            .iter()
            .filter(|(_, b)| *b == want || *b == want2)
            .collect();
        assert!(!copies.is_empty(), "{f}: {} missing", m["path"]);
        let flags = m["flags"].as_array().unwrap();
        assert!(
            copies
                .iter()
                .any(|(fl, _)| flags.iter().all(|x| flags_have(fl, x.as_str().unwrap()))),
            "{f}: {} flags {flags:?} not on the server: {copies:?}",
            m["path"]
        );
    }
    // Same message twice in INBOX: two copies; and once more in "with space".
    let first = crlf(&fixtures()[0].1);
    assert_eq!(
        state["INBOX"].iter().filter(|(_, b)| *b == first).count(),
        2
    );
    assert_eq!(
        state["with space"]
            .iter()
            .filter(|(_, b)| *b == first)
            .count(),
        1
    );
    let shared: Vec<Vec<u8>> = fixtures()
        .into_iter()
        .filter(|(n, _)| n.contains("same-msgid"))
        .map(|(_, b)| crlf(&b))
        .collect();
    assert_eq!(shared.len(), 2);
    for b in &shared {
        assert_eq!(
            state[&mutf7("受信箱/取引先")]
                .iter()
                .filter(|(_, x)| x == b)
                .count(),
            1,
            "both messages sharing a Message-ID arrive"
        );
    }
    // Keywords and \Deleted arrived.
    let all: Vec<&String> = state.values().flatten().map(|(f, _)| f).collect();
    assert!(all.iter().any(|f| flags_have(f, "$Label1")));
    assert!(all.iter().any(|f| flags_have(f, "Work")));
    assert!(all.iter().any(|f| flags_have(f, "\\Deleted")));
    let subs = c.must("LSUB \"\" \"*\"").text();
    assert!(subs.contains(&mutf7("受信箱/取引先")), "{subs}");
    let total: usize = state.values().map(Vec::len).sum();

    // A rerun appends nothing and changes nothing.
    let (out2, rep2) = dest.import(&[&ar], &[]);
    assert_eq!(n(&rep2, "appended"), 0, "{rep2}");
    assert_eq!(n(&rep2, "already_there"), index.len() as u64 - 1);
    assert_eq!(out2.status.code(), Some(1), "the same two problems remain");
    // A fresh connection: Dovecot 2.3 can panic on a list-index lock in an idle
    // session of the same user while another one works.
    let mut c = d.raw("bob");
    let state2 = server_state(&mut c);
    assert_eq!(state2.values().map(Vec::len).sum::<usize>(), total);
    c.logout();

    // A dry run plans nothing to append.
    let (out3, rep3) = dest.import(&[&ar], &["--dry-run"]);
    // Exit 1: the plan says one message (the empty one) cannot be imported.
    assert_eq!(out3.status.code(), Some(1), "{}", stderr(&out3));
    assert_eq!(failures(&rep3).len(), 1, "{rep3}");
    assert_eq!(n(&rep3, "to_append"), 0, "{rep3}");
    assert_eq!(n(&rep3, "already_there"), index.len() as u64 - 1);
}

/// The fixtures a server keeps as they are (no NUL, not empty, no bare CR).
fn plain_fixtures() -> Vec<(String, Vec<u8>)> {
    fixtures()
        .into_iter()
        .filter(|(n, b)| !b.is_empty() && !b.contains(&0) && !n.contains("bare-cr"))
        .collect()
}

#[test]
fn dovecot_dot_delimiter_inbox_prefix_map_and_dry_run() {
    let t = tempfile::tempdir().unwrap();
    let fx = plain_fixtures();
    let names = ["INBOX", "受信箱/取引先", "a.b", "Sent", "Old/2019"];
    let folders: Vec<SrcFolder> = names
        .iter()
        .enumerate()
        .map(|(k, name)| SrcFolder {
            name,
            msgs: fx
                .iter()
                .enumerate()
                .filter(|(i, _)| i % names.len() == k)
                .map(|(i, (_, b))| (format!("{}.M{i}.x:2,S", 1_500_000_000 + i), b.clone()))
                .collect(),
            keywords: "",
        })
        .collect();
    let ar = make_archive(t.path(), &folders, &["受信箱/取引先"]);
    let d = Dovecot::start_with(DovecotOptions {
        separator: '.',
        prefix: "INBOX.".into(),
        ..Default::default()
    });
    let dest = Dest::dovecot(&d, "bob");
    let mut c = d.raw("bob");
    let before = c.must("LIST \"\" \"*\"").text();
    assert!(before.contains("INBOX.Sent"), "{before}");

    // The dry run plans everything and changes nothing.
    let (out, rep) = dest.import(
        &[&ar],
        &[
            "--dry-run",
            "--map",
            "Old/*=Archive/*",
            "--map",
            "old/*=x/*",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Patterns are case-sensitive: the second rule matches nothing, which is said once.
    let err = stderr(&out);
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.ends_with("matches no folder"))
        .collect();
    assert_eq!(
        warned,
        ["mailark: warning: --map \"old/*=x/*\" matches no folder"]
    );
    assert_eq!(rep["unmatched_maps"], serde_json::json!(["old/*=x/*"]));
    assert_eq!(n(&rep, "to_append"), fx.len() as u64, "{rep}");
    assert_eq!(n(&rep, "appended"), 0);
    assert_eq!(
        folder(&rep, "受信箱/取引先")["destination"],
        "INBOX.受信箱.取引先"
    );
    assert_eq!(folder(&rep, "a.b")["destination"], "INBOX.a_b");
    assert_eq!(
        folder(&rep, "Old/2019")["destination"],
        "INBOX.Archive.2019"
    );
    assert_eq!(folder(&rep, "Sent")["destination"], "INBOX.Sent");
    assert_eq!(folder(&rep, "INBOX")["destination"], "INBOX");
    assert_eq!(
        c.must("LIST \"\" \"*\"").text(),
        before,
        "dry run changed folders"
    );
    let st = c.must("STATUS INBOX (MESSAGES)").text();
    assert!(st.contains("MESSAGES 0"), "{st}");
    let subs = c.must("LSUB \"\" \"*\"").text();
    assert!(!subs.contains(&mutf7("受信箱")), "{subs}");

    // The import puts everything there, under the prefix, with the map applied.
    c.logout();
    let (out, rep) = dest.import(&[&ar], &["--map", "Old/*=Archive/*", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(0), "{rep}\n{}", stderr(&out));
    let mut c = d.raw("bob");
    assert_eq!(n(&rep, "verified"), fx.len() as u64);
    let state = server_state(&mut c);
    for (name, f) in [
        ("INBOX", "INBOX"),
        ("INBOX.受信箱.取引先", "受信箱/取引先"),
        ("INBOX.a_b", "a.b"),
        ("INBOX.Sent", "Sent"),
        ("INBOX.Archive.2019", "Old/2019"),
    ] {
        let want = &folders.iter().find(|x| x.name == f).unwrap().msgs;
        let got = state
            .get(&mutf7(name))
            .unwrap_or_else(|| panic!("{name} not on the server: {:?}", state.keys()));
        assert_eq!(got.len(), want.len(), "{name}");
        for (_, b) in want {
            assert!(got
                .iter()
                .any(|(fl, g)| *g == served_form(b) && flags_have(fl, "\\Seen")));
        }
    }
    let subs = c.must("LSUB \"\" \"*\"").text();
    assert!(subs.contains(&mutf7("INBOX.受信箱.取引先")), "{subs}");
    c.logout();
}

/// A message of about `size` bytes; every tenth has no Message-ID.
fn generated(i: usize, size: usize) -> Vec<u8> {
    let mut m = String::new();
    m.push_str(&format!(
        "From: Sender {i} <s{i}@example.jp>\r\nTo: bob@example.jp\r\nSubject: message {i}\r\nDate: Mon, 01 Jan 2024 09:00:00 +0900\r\n"
    ));
    if i % 10 != 0 {
        m.push_str(&format!("Message-ID: <gen-{i}@import.test>\r\n"));
    }
    m.push_str("\r\n");
    let mut k = 0;
    while m.len() < size {
        m.push_str(&format!(
            "line {k} of message {i}: 会議の資料を確認してください\r\n"
        ));
        k += 1;
    }
    m.into_bytes()
}

fn status_messages(c: &mut RawImap, mailbox: &str) -> u64 {
    c.status_messages(mailbox)
        .unwrap_or_else(|| panic!("STATUS {mailbox}: no count"))
}

#[test]
fn dovecot_killed_mid_import_then_resumed() {
    let t = tempfile::tempdir().unwrap();
    const N: usize = 3000;
    let msgs: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            (
                format!("{}.M{i}.x:2,S", 1_600_000_000 + i),
                generated(i, 12_000),
            )
        })
        .collect();
    let ar = make_archive(
        t.path(),
        &[SrcFolder {
            name: "INBOX",
            msgs: msgs.clone(),
            keywords: "",
        }],
        &[],
    );
    let d = Dovecot::start();
    let dest = Dest::dovecot(&d, "bob");
    let mut c = d.raw("bob");
    // Killed at several points: at once (connecting, learning), then with some mail in
    // and APPENDs surely in flight, three times over; each kill resumes the last.
    let mut after_kill = 0;
    for target in [0, 300, 1200, 2100] {
        let mut child = bin()
            .args(dest.args(&[&ar], &["--jobs", "2"]))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut at_kill = 0;
        if target == 0 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for _ in 0..100_000 {
            at_kill = status_messages(&mut c, "INBOX");
            if at_kill >= target {
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The server goes on with APPENDs whose literal it had already read when the
        // client died; the rerun starts once the count stops moving, as a person would
        // rerun later (if it started earlier those would arrive twice: no client can
        // know about commands still running in another session).
        after_kill = status_messages(&mut c, "INBOX");
        let mut same = 0;
        while same < 20 {
            std::thread::sleep(std::time::Duration::from_millis(25));
            let now = status_messages(&mut c, "INBOX");
            same = if now == after_kill { same + 1 } else { 0 };
            after_kill = now;
        }
        assert!(
            after_kill < N as u64,
            "the import finished before it could be killed ({at_kill} at the kill)"
        );
    }

    c.logout();
    let (out, rep) = dest.import(&[&ar], &["--jobs", "2"]);
    assert_eq!(out.status.code(), Some(0), "{rep}\n{}", stderr(&out));
    let mut c = d.raw("bob");
    // Dovecot finishes APPENDs whose literal it had read when the client died: those
    // are found and skipped like the rest.
    assert!(n(&rep, "already_there") >= after_kill, "{rep}");
    assert_eq!(n(&rep, "appended") + n(&rep, "already_there"), N as u64);
    assert_eq!(n(&rep, "verified"), N as u64);
    // Every message exactly once: nothing missing, nothing doubled.
    let got = c.fetch_all("INBOX");
    assert_eq!(got.len(), N);
    let mut bodies: Vec<&Vec<u8>> = got.iter().map(|g| &g.2).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), N, "a message arrived twice");
    for (_, b) in &msgs {
        assert!(got.iter().any(|g| g.2 == *b), "a message is missing");
    }
    // And once more: nothing to do.
    let (out, rep) = dest.import(&[&ar], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(n(&rep, "appended"), 0);
    c.logout();
}

/// MANIFEST.tsv of the corpus: file → (line endings, has NUL, has 8-bit).
fn manifest() -> HashMap<String, (String, bool, bool)> {
    let text = std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (
                c[0].to_string(),
                (c[3].to_string(), c[5] == "yes", c[6] == "yes"),
            )
        })
        .collect()
}

fn corpus_archive(dir: &Path) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    corpus_archive_of(dir, corpus_messages(dir))
}

fn corpus_archive_of(
    dir: &Path,
    corpus: Vec<(String, Vec<u8>)>,
) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let mut inbox = Vec::new();
    let mut other = Vec::new();
    for (i, (name, b)) in corpus.iter().enumerate() {
        let flags = if i % 3 == 0 { "FS" } else { "S" };
        let f = format!(
            "{}.M{i}.{}:2,{flags}",
            1_400_000_000 + i * 60,
            name.replace('.', "_")
        );
        if i % 4 == 0 {
            other.push((f, b.clone()));
        } else {
            inbox.push((f, b.clone()));
        }
    }
    let ar = make_archive(
        dir,
        &[
            SrcFolder {
                name: "INBOX",
                msgs: inbox,
                keywords: "",
            },
            SrcFolder {
                name: "アーカイブ/2023",
                msgs: other,
                keywords: "",
            },
        ],
        &[],
    );
    (ar, corpus)
}

/// The file name of a failure's message (corpus names are kept in the Maildir names).
fn corpus_file(id: &str) -> String {
    let i = id.find(".M").unwrap();
    let rest = &id[i..];
    let start = rest.find('.').unwrap() + 1;
    let rest = &rest[start..];
    let rest = &rest[rest.find('.').unwrap() + 1..];
    rest.split(':').next().unwrap().replace('_', ".")
}

#[test]
fn dovecot_interop_corpus_verified_in_full() {
    let t = tempfile::tempdir().unwrap();
    let (ar, corpus) = corpus_archive(t.path());
    let man = manifest();
    let d = Dovecot::start();
    let dest = Dest::dovecot(&d, "bob");
    let (out, rep) = dest.import(&[&ar], &["--verify", "full"]);
    assert_eq!(n(&rep, "archived"), corpus.len() as u64);
    // Whatever fails must be the empty message (no server takes it) or one Dovecot is
    // known to alter: NUL (→ 0x80, `binary` parts re-encoded) or bare CR line ends.
    let fails = failures(&rep);
    eprintln!("{fails:#?}");
    for (id, reason) in &fails {
        let file = corpus_file(id);
        let (eol, nul, _) = man
            .get(&file)
            .cloned()
            .unwrap_or_else(|| ("?".into(), false, false));
        let empty = corpus.iter().any(|(n, b)| *n == file && b.is_empty());
        assert!(
            (empty && reason.contains("empty"))
                || ((nul || eol.contains("CR") && eol != "CRLF") && reason.contains("altered")),
            "{file} ({eol}, nul {nul}): {reason}"
        );
    }
    let failed = n(&rep, "failed");
    assert_eq!(n(&rep, "verified") + failed, corpus.len() as u64);
    assert_eq!(out.status.code(), Some(if failed > 0 { 1 } else { 0 }));
    // A rerun recognises every message, altered ones included.
    let (_, rep) = dest.import(&[&ar], &["--verify", "none"]);
    assert_eq!(n(&rep, "appended"), 0, "{rep}");
    assert_eq!(n(&rep, "already_there"), corpus.len() as u64 - 1);
}

/// Defect 1: after a restore the import verified, `verify --against` must agree. The
/// corpus has Message-IDs shared by different messages and many messages without one
/// that share Date/From/Subject; pairing by those alone reported `size-differs`.
#[test]
fn dovecot_restored_corpus_verifies_against_clean() {
    let t = tempfile::tempdir().unwrap();
    // The empty message is the one no server takes: a restore cannot hold it.
    let mut corpus = corpus_messages(t.path());
    corpus.retain(|(_, b)| !b.is_empty());
    let (ar, corpus) = corpus_archive_of(t.path(), corpus);
    let d = Dovecot::start();
    let dest = Dest::dovecot(&d, "bob");
    let (_, rep) = dest.import(&[&ar], &[]);
    assert_eq!(n(&rep, "archived"), corpus.len() as u64);
    assert_eq!(n(&rep, "appended"), corpus.len() as u64, "{rep}");
    for extra in [&[][..], &["--full"][..]] {
        let out = dest.verify_against(&[&ar], extra);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let errors: Vec<&serde_json::Value> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["level"] == "error")
            .collect();
        assert!(errors.is_empty(), "{extra:?}: {errors:#?}");
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        // What Dovecot altered is named as such, not hidden.
        let altered = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] == "server-altered")
            .count();
        assert!(altered > 0, "{extra:?}: {v:#}");
    }
}

#[test]
fn cyrus_fixtures_appendlimit_special_use_and_rerun() {
    let t = tempfile::tempdir().unwrap();
    let mut folders = fixture_folders();
    // One message over the server's limit; the rest must still arrive.
    folders[0]
        .msgs
        .push(("1700000000.Mbig.x:2,S".into(), generated(7, 150_000)));
    let ar = make_archive(t.path(), &folders, &["INBOX", "Sent"]);
    let index = ls_json(&[&ar]);
    let cy = Cyrus::start_with(CyrusOptions {
        max_message_size: Some(100_000),
        ..Default::default()
    });
    let dest = Dest::cyrus(&cy, "bob");
    let (out, rep) = dest.import(&[&ar], &[]);
    let fails = failures(&rep);
    // Every archived message is accounted for by what it is: over the limit (the big
    // one and two fixtures), rewritten by Cyrus (8-bit header bytes become X), empty.
    let all: Vec<Vec<u8>> = folders
        .iter()
        .flat_map(|f| f.msgs.iter().map(|m| m.1.clone()))
        .collect();
    let head8 = |b: &Vec<u8>| {
        let end = b
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .or_else(|| b.windows(2).position(|w| w == b"\n\n"))
            .unwrap_or(b.len());
        b[..end].iter().any(|&c| c >= 0x80)
    };
    let over = all.iter().filter(|b| b.len() > 100_000).count();
    let munged = all
        .iter()
        .filter(|b| b.len() <= 100_000 && head8(b))
        .count();
    let limit_fails = fails
        .iter()
        .filter(|(_, r)| r.contains("APPENDLIMIT"))
        .count();
    let altered = fails.iter().filter(|(_, r)| r.contains("altered")).count();
    let empty = fails.iter().filter(|(_, r)| r.contains("empty")).count();
    assert_eq!(
        (limit_fails, altered, empty),
        (over, munged, 1),
        "{fails:#?}"
    );
    assert_eq!(fails.len(), over + munged + 1, "{fails:#?}");
    assert!(munged >= 2 && over >= 2);
    assert!(
        fails
            .iter()
            .any(|(id, r)| id.contains("Mbig") && r.contains("APPENDLIMIT")),
        "{fails:#?}"
    );
    assert_eq!(out.status.code(), Some(1));
    // Cyrus refuses bare LF: those went in CRLF form and verified.
    let crlf_sent: u64 = rep["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["sent_as_crlf"].as_u64().unwrap())
        .sum();
    assert!(crlf_sent >= 2, "{rep}");
    let mut c = cy.raw("bob");
    let list = c.must("LIST \"\" \"*\" RETURN (SPECIAL-USE)").text();
    assert!(
        list.lines()
            .any(|l| l.contains("\\Sent") && l.contains("Sent")),
        "Sent created with its role: {list}"
    );
    assert!(list.contains(&mutf7("受信箱/取引先")), "{list}");
    let verified = n(&rep, "verified");
    assert_eq!(verified + fails.len() as u64, index.len() as u64);
    let state = server_state(&mut c);
    let total: usize = state.values().map(Vec::len).sum();
    // The NUL message went as literal8 and Cyrus kept it byte for byte.
    let nul = fixtures().into_iter().find(|f| f.1.contains(&0)).unwrap().1;
    assert!(
        state.values().flatten().any(|(_, b)| *b == nul),
        "the NUL message is not on the server byte-exact"
    );
    let (_, rep2) = dest.import(&[&ar], &[]);
    assert_eq!(n(&rep2, "appended"), 0, "{rep2}");
    assert_eq!(
        server_state(&mut c).values().map(Vec::len).sum::<usize>(),
        total
    );
    c.logout();
}

#[test]
fn dovecot_cut_connection_mid_import_is_finished_without_doubles() {
    let t = tempfile::tempdir().unwrap();
    const N: usize = 600;
    let msgs: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            (
                format!("{}.M{i}.x:2,S", 1_600_000_000 + i),
                generated(i, 4_000),
            )
        })
        .collect();
    let ar = make_archive(
        t.path(),
        &[SrcFolder {
            name: "INBOX",
            msgs: msgs.clone(),
            keywords: "",
        }],
        &[],
    );
    let d = Dovecot::start();
    // The first connection is cut once the client has sent 600 KB (of 2.4 MB), with
    // APPENDs in flight, or the server 12 KB, whichever comes first.
    let proxy = support::proxy::FaultProxy::start_both(d.imaps_port, 12_000, Some(600_000), 1);
    let dest = Dest {
        url: format!("imaps://bob@127.0.0.1:{}", proxy.port),
        pw: d.password_file("bob"),
        ca: d.ca_file(),
    };
    let (out, rep) = dest.import(&[&ar], &["--jobs", "1"]);
    assert_eq!(out.status.code(), Some(0), "{rep}\n{}", stderr(&out));
    assert_eq!(proxy.cuts(), 1, "the connection was never cut");
    assert!(proxy.connections() >= 2);
    assert_eq!(n(&rep, "appended"), N as u64, "{rep}");
    assert_eq!(n(&rep, "verified"), N as u64);
    // Whatever the cut connection had sent is stored or dropped by now: a late copy
    // would show as a double.
    proxy.wait_settled();
    let mut c = d.raw("bob");
    let got = c.fetch_all("INBOX");
    assert_eq!(
        got.len(),
        N,
        "every message once: nothing missing, nothing doubled"
    );
    let mut bodies: Vec<&Vec<u8>> = got.iter().map(|g| &g.2).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), N);
    c.logout();
}

#[test]
fn cyrus_interop_corpus_and_rerun() {
    let t = tempfile::tempdir().unwrap();
    let (ar, corpus) = corpus_archive(t.path());
    let man = manifest();
    let cy = Cyrus::start();
    let dest = Dest::cyrus(&cy, "bob");
    let (out, rep) = dest.import(&[&ar], &[]);
    assert_eq!(n(&rep, "archived"), corpus.len() as u64);
    // Cyrus refuses or rewrites some mail; each failure must say which and why:
    // 8-bit header bytes rewritten to X, `binary` parts of a literal8 re-encoded, no
    // valid header, the empty message.
    let fails = failures(&rep);
    for (id, reason) in &fails {
        let file = corpus_file(id);
        let (eol, nul, eight) = man
            .get(&file)
            .cloned()
            .unwrap_or_else(|| ("?".into(), false, false));
        let empty = corpus.iter().any(|(n, b)| *n == file && b.is_empty());
        let odd_eol = eol.contains("CR") && eol != "CRLF";
        assert!(
            (empty && reason.contains("empty"))
                || ((eight || nul || odd_eol) && reason.contains("altered"))
                || reason.contains("refused by the server"),
            "{file}: {reason}"
        );
    }
    let failed = fails.len() as u64;
    assert!(failed < corpus.len() as u64 / 4, "{fails:#?}");
    assert_eq!(n(&rep, "verified") + failed, corpus.len() as u64);
    assert_eq!(out.status.code(), Some(if failed > 0 { 1 } else { 0 }));
    // The rerun appends nothing, rewritten messages included.
    let refused = fails
        .iter()
        .filter(|(_, r)| r.contains("refused") || r.contains("empty"))
        .count() as u64;
    let (_, rep2) = dest.import(&[&ar], &["--verify", "none"]);
    assert_eq!(n(&rep2, "appended"), 0, "{rep2}");
    assert_eq!(n(&rep2, "already_there"), corpus.len() as u64 - refused);
}

/// Defect 6: a message the destination already holds (same bytes) with another
/// INTERNALDATE or fewer flags is present: reported so, its missing flags added, the
/// date that cannot be changed a warning with both values; exit 0, every run.
#[test]
fn dovecot_present_message_with_other_date_or_fewer_flags_is_present() {
    let t = tempfile::tempdir().unwrap();
    let d = Dovecot::start();
    let msg = |i: usize| {
        format!("From: a@example.jp\r\nSubject: here {i}\r\nMessage-ID: <here-{i}@t>\r\n\r\nbody {i}\r\n")
            .into_bytes()
    };
    let seed: Vec<(Vec<u8>, &str, i64)> = (0..3)
        .map(|i| (msg(i), "FS", 1_600_000_000 + i as i64))
        .collect();
    d.seed_maildir("alice", "INBOX", &seed);
    let a = Dest::dovecot(&d, "alice");
    let ar = t.path().join("a.tar.zst");
    run_ok(&[
        "export",
        &a.url,
        "-o",
        ar.to_str().unwrap(),
        "--password-file",
        a.pw.to_str().unwrap(),
        "--tls-ca-file",
        a.ca.to_str().unwrap(),
    ]);
    // bob holds message 0 with another date, message 1 without \Flagged (and with a
    // keyword the archive lacks, which stays); message 2 is not there.
    let mut c = d.raw("bob");
    assert!(c
        .append(
            "INBOX",
            "\\Seen \\Flagged",
            Some("01-Jan-2001 00:00:00 +0000"),
            &msg(0)
        )
        .ok());
    assert!(c
        .append(
            "INBOX",
            "\\Seen $Extra",
            Some("13-Sep-2020 12:26:41 +0000"),
            &msg(1)
        )
        .ok());
    c.logout();
    let dest = Dest::dovecot(&d, "bob");
    for run in 0..2 {
        let (out, rep) = dest.import(&[&ar], &[]);
        assert_eq!(out.status.code(), Some(0), "run {run}: {rep:#}");
        assert_eq!(n(&rep, "failed"), 0, "{rep:#}");
        assert_eq!(n(&rep, "verified"), 3, "{rep:#}");
        assert_eq!(n(&rep, "already_there"), 2 + run, "{rep:#}");
        assert_eq!(n(&rep, "appended"), 1 - run, "{rep:#}");
        let notes: Vec<String> = folder(&rep, "INBOX")["differing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["detail"].as_str().unwrap().to_string())
            .collect();
        assert!(
            notes
                .iter()
                .any(|x| x.contains("INTERNALDATE") && x.contains("2001") && x.contains("2020")),
            "{notes:?}"
        );
        assert!(notes.iter().any(|x| x.contains("$Extra")), "{notes:?}");
    }
    let mut c = d.raw("bob");
    let held = c.fetch_all("INBOX");
    assert_eq!(held.len(), 3);
    for (_, flags, body) in &held {
        assert!(
            flags_have(flags, "\\Flagged"),
            "{flags} {}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(held.iter().any(|(_, f, _)| flags_have(f, "$Extra")));
    c.logout();
}

/// Defect 4 on the servers at hand: messages Dovecot alters (NUL stored as 0x80, a run
/// of CRs before a LF stored as one CRLF), without a Message-ID or sharing one, are
/// recognised on a rerun by their altered forms: nothing is appended twice.
#[test]
fn dovecot_rerun_recognises_altered_messages() {
    let t = tempfile::tempdir().unwrap();
    let msgs: Vec<(String, Vec<u8>)> = [
        &b"Subject: nul\n\nbin\0ary\n"[..],
        b"Message-ID: <s@t>\nSubject: a\n\nx\0y\n",
        b"Message-ID: <s@t>\nSubject: b\n\nxx\0yy\n",
        b"Message-ID: <c@t>\r\nSubject: c\r\n\r\nline\r\r\nnext\r\n",
        b"Subject: c\r\n\r\nno id\r\r\nnext\r\n",
    ]
    .iter()
    .enumerate()
    .map(|(i, b)| (format!("{}.M{i}.x:2,S", 1_600_000_000 + i), b.to_vec()))
    .collect();
    let ar = make_archive(
        t.path(),
        &[SrcFolder {
            name: "INBOX",
            msgs: msgs.clone(),
            keywords: "",
        }],
        &[],
    );
    let d = Dovecot::start();
    let dest = Dest::dovecot(&d, "bob");
    let (_, rep) = dest.import(&[&ar], &[]);
    assert_eq!(n(&rep, "appended"), msgs.len() as u64, "{rep:#}");
    for run in 0..2 {
        let (_, rep) = dest.import(&[&ar], &["--verify", "none"]);
        assert_eq!(n(&rep, "appended"), 0, "run {run}: {rep:#}");
        assert_eq!(n(&rep, "already_there"), msgs.len() as u64, "{rep:#}");
    }
    let mut c = d.raw("bob");
    assert_eq!(c.fetch_all("INBOX").len(), msgs.len());
    c.logout();
}

/// Defect 4 on Cyrus: 8-bit header bytes rewritten to `X` (`munge8bit`) in messages
/// without a Message-ID or sharing one are recognised on a rerun: nothing doubles.
#[test]
fn cyrus_rerun_recognises_munged_headers() {
    let t = tempfile::tempdir().unwrap();
    let msgs: Vec<(String, Vec<u8>)> = [
        "Subject: \u{3042}\u{3044}\r\n\r\nno id\r\n",
        "Message-ID: <s@t>\r\nSubject: \u{3042}\r\n\r\none\r\n",
        "Message-ID: <s@t>\r\nSubject: \u{3044}\r\n\r\ntwo\r\n",
        "Message-ID: <u@t>\r\nSubject: caf\u{e9}\r\n\r\nunique\r\n",
    ]
    .iter()
    .enumerate()
    .map(|(i, b)| {
        (
            format!("{}.M{i}.x:2,S", 1_600_000_000 + i),
            b.as_bytes().to_vec(),
        )
    })
    .collect();
    let ar = make_archive(
        t.path(),
        &[SrcFolder {
            name: "INBOX",
            msgs: msgs.clone(),
            keywords: "",
        }],
        &[],
    );
    let cy = Cyrus::start();
    let dest = Dest::cyrus(&cy, "bob");
    let (_, rep) = dest.import(&[&ar], &[]);
    assert_eq!(n(&rep, "appended"), msgs.len() as u64, "{rep:#}");
    // Cyrus did rewrite them: verification says so.
    let fails = failures(&rep);
    assert_eq!(fails.len(), msgs.len(), "{fails:#?}");
    assert!(
        fails.iter().all(|(_, r)| r.contains("altered")),
        "{fails:#?}"
    );
    for run in 0..2 {
        let (_, rep) = dest.import(&[&ar], &["--verify", "none"]);
        assert_eq!(n(&rep, "appended"), 0, "run {run}: {rep:#}");
        assert_eq!(n(&rep, "already_there"), msgs.len() as u64, "{rep:#}");
    }
    let mut c = cy.raw("bob");
    assert_eq!(c.fetch_all("INBOX").len(), msgs.len());
    c.logout();
}

#[test]
fn chain_full_and_delta_from_imap_export_is_imported_root_first() {
    let t = tempfile::tempdir().unwrap();
    let d = Dovecot::start();
    let msg = |i: usize| {
        format!("From: a@example.jp\r\nSubject: chain {i}\r\nMessage-ID: <chain-{i}@t>\r\n\r\nbody {i}\r\n")
            .into_bytes()
    };
    let first: Vec<(Vec<u8>, &str, i64)> = (0..3)
        .map(|i| (msg(i), "S", 1_600_000_000 + i as i64))
        .collect();
    d.seed_maildir("alice", "INBOX", &first);
    let work: Vec<(Vec<u8>, &str, i64)> = (10..13)
        .map(|i| (msg(i), "", 1_600_000_000 + i as i64))
        .collect();
    d.seed_maildir("alice", "Work", &work);
    let a = Dest::dovecot(&d, "alice");
    let full = t.path().join("full.tar.zst");
    let delta = t.path().join("delta.tar.zst");
    let export = |out: &Path, since: Option<&Path>| {
        let mut args = vec![
            "export".to_string(),
            a.url.clone(),
            "-o".into(),
            out.display().to_string(),
            "--password-file".into(),
            a.pw.display().to_string(),
            "--tls-ca-file".into(),
            a.ca.display().to_string(),
        ];
        if let Some(s) = since {
            args.push("--since".into());
            args.push(s.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok(&args);
    };
    export(&full, None);
    let more: Vec<(Vec<u8>, &str, i64)> = (3..5)
        .map(|i| (msg(i), "F", 1_600_000_000 + i as i64))
        .collect();
    d.seed_maildir("alice", "INBOX", &more);
    d.seed_maildir("alice", "Work", &[(msg(13), "", 1_600_000_013)]);
    export(&delta, Some(&full));
    assert_eq!(
        ls_json(&[&delta]).len(),
        3,
        "the delta holds only the new mail"
    );

    // Given delta first, the chain is still imported root first, all of it once.
    let b = Dest::dovecot(&d, "bob");
    let (out, rep) = b.import(&[&delta, &full], &["--verify", "full"]);
    assert_eq!(out.status.code(), Some(0), "{rep}\n{}", stderr(&out));
    assert_eq!(n(&rep, "appended"), 9);
    assert_eq!(n(&rep, "verified"), 9);
    assert_eq!(n(&rep, "archive_readings"), 1, "{rep}");
    assert_eq!(
        rep["archives"][0].as_str().unwrap(),
        full.display().to_string()
    );
    let state = |d: &Dovecot| {
        let mut c = d.raw("bob");
        let got = c.fetch_all("INBOX");
        assert_eq!(got.len(), 5);
        for i in 0..5 {
            let g = got.iter().find(|g| g.2 == msg(i)).expect("message arrived");
            assert!(flags_have(&g.1, if i < 3 { "\\Seen" } else { "\\Flagged" }));
        }
        let mut s = server_state(&mut c);
        c.logout();
        s.values_mut().for_each(|m| m.sort());
        s
    };
    let one = state(&d);

    // In passes of two, the last part of the first folder is in the delta; the next
    // folder's first part, in the root, lies behind it: that pass reads the chain again
    // from its start, the rest read on, and the import ends as in one pass.
    let d2 = Dovecot::start();
    let (out, rep2) = Dest::dovecot(&d2, "bob").import(
        &[&delta, &full],
        &["--verify", "full", "--messages-per-pass", "2"],
    );
    assert_eq!(out.status.code(), Some(0), "{rep2}\n{}", stderr(&out));
    assert_eq!(n(&rep2, "archive_readings"), 2, "{rep2}");
    assert_eq!(rep2["folders"], rep["folders"]);
    assert_eq!(n(&rep2, "verified"), 9);
    assert_eq!(state(&d2), one);
}

#[test]
fn dovecot_every_connection_cut_reports_and_rerun_finishes() {
    let t = tempfile::tempdir().unwrap();
    const N: usize = 400;
    let msgs: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            (
                format!("{}.M{i}.x:2,S", 1_600_000_000 + i),
                generated(i, 4_000),
            )
        })
        .collect();
    let ar = make_archive(
        t.path(),
        &[SrcFolder {
            name: "INBOX",
            msgs: msgs.clone(),
            keywords: "",
        }],
        &[],
    );
    let d = Dovecot::start();
    // Every connection dies after 100 KB from the client (the first during the
    // APPENDs, which Dovecot answers a batch at a time) or 20 KB from the server (the
    // reconnections, while reading back what arrived). The run must end, report, and
    // leave nothing doubled.
    let proxy = support::proxy::FaultProxy::start_both(d.imaps_port, 20_000, Some(100_000), 1_000);
    let cut = Dest {
        url: format!("imaps://bob@127.0.0.1:{}", proxy.port),
        pw: d.password_file("bob"),
        ca: d.ca_file(),
    };
    let (out, rep) = cut.import(&[&ar], &["--jobs", "1"]);
    assert_eq!(out.status.code(), Some(1), "{rep}\n{}", stderr(&out));
    assert!(n(&rep, "failed") > 0, "{rep}");
    assert!(proxy.cuts() >= 2, "the import and a reconnection were cut");
    assert!(proxy.connections() >= 2);
    // Dovecot may still be storing what the cut connections had sent (seen: 21
    // messages counted here, 24 found by the rerun).
    proxy.wait_settled();
    let count_unique = |d: &Dovecot| {
        let mut c = d.raw("bob");
        let got = c.fetch_all("INBOX");
        c.logout();
        let mut b: Vec<Vec<u8>> = got.into_iter().map(|g| g.2).collect();
        let all = b.len();
        b.sort();
        b.dedup();
        (all, b.len())
    };
    let (all, unique) = count_unique(&d);
    assert_eq!(all, unique, "a message arrived twice");
    assert!(all < N, "everything arrived despite the cuts");

    // The rerun, on a good link, appends only what is missing.
    let (out, rep) = Dest::dovecot(&d, "bob").import(&[&ar], &[]);
    assert_eq!(out.status.code(), Some(0), "{rep}\n{}", stderr(&out));
    assert_eq!(n(&rep, "already_there"), all as u64);
    assert_eq!(n(&rep, "appended"), (N - all) as u64);
    assert_eq!(count_unique(&d), (N, N));
}

/// Folders whose names meet once decoded (Latin-1 `Caf\xe9`, UTF-8 `Café`, modified
/// UTF-7 `Caf&AOk-` on an old host's disk) are imported into distinct folders, each with
/// exactly its own mail.
#[test]
fn colliding_source_names_get_distinct_destinations() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let m = |i: usize| {
        (
            format!("{}.M{i}.h:2,S", 1_700_000_000 + i),
            format!(
                "From: a@example.com\r\nSubject: c{i}\r\nMessage-ID: <c{i}@t>\r\n\r\nbody {i}\r\n"
            )
            .into_bytes(),
        )
    };
    write_maildir_folder(&src, &[m(0)]);
    let dirs: [(&[u8], std::ops::Range<usize>); 3] = [
        (b".Caf\xe9", 1..3),
        (".Café".as_bytes(), 3..6),
        (b".Caf&AOk-", 6..10),
    ];
    for (raw, r) in dirs.clone() {
        let msgs: Vec<_> = r.map(m).collect();
        write_maildir_folder(&src.join(std::ffi::OsStr::from_bytes(raw)), &msgs);
    }
    let ar = t.path().join("a.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", src.display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    let d = Dovecot::start();
    let dest = Dest::dovecot(&d, "bob");
    let (out, rep) = dest.import(&[&ar], &[]);
    assert_eq!(out.status.code(), Some(0), "{rep:#}");
    let folders = rep["folders"].as_array().unwrap();
    assert_eq!(folders.len(), 4, "{rep:#}");
    let mut dests: Vec<&str> = folders
        .iter()
        .map(|f| f["destination"].as_str().unwrap())
        .collect();
    dests.sort();
    dests.dedup();
    assert_eq!(dests.len(), 4, "{rep:#}");
    let mut c = d.raw("bob");
    let mut counts: Vec<u64> = folders
        .iter()
        .filter(|f| f["folder"] != "INBOX")
        .map(|f| {
            let dest = f["destination"].as_str().unwrap();
            let n = status_messages(&mut c, &format!("\"{}\"", mutf7(dest)));
            assert_eq!(n, n_of(f, "archived"), "{f:#}");
            n
        })
        .collect();
    counts.sort();
    assert_eq!(counts, [2, 3, 4]);
}

fn n_of(f: &serde_json::Value, k: &str) -> u64 {
    f[k].as_u64().unwrap()
}

/// `--messages-per-pass`: an import that works on a few destination folders at a time,
/// or on a part of a folder bigger than a pass (each pass learning, appending and
/// verifying, then dropping what it held), ends exactly where one pass over everything
/// ends: the same report, folder by folder, and the same mail on the server; and its
/// rerun appends nothing. The server already holds one copy of a message INBOX's
/// archive holds twice, in different parts: one part finds it there, the other must
/// still append the second copy (a later part must not count a copy an earlier one
/// took).
#[test]
fn dovecot_import_in_passes_ends_as_one_pass() {
    let t = tempfile::tempdir().unwrap();
    let ar = make_archive(t.path(), &fixture_folders(), &["INBOX", "Sent"]);
    let d = Dovecot::start_with(DovecotOptions {
        special: vec![("送信済みメール".into(), "\\Sent".into())],
        ..Default::default()
    });
    let first = crlf(&fixtures()[0].1);
    // One date for both copies: the server's clock would give them each their own
    // second, and a date differing from the archived one is reported (CI saw it for
    // one user only).
    for user in ["alice", "bob"] {
        let mut c = d.raw(user);
        let date = Some("01-Jan-2020 00:00:00 +0000");
        assert!(c.append("INBOX", "\\Seen", date, &first).ok());
        c.logout();
    }
    let (one, many) = (Dest::dovecot(&d, "alice"), Dest::dovecot(&d, "bob"));
    let (out1, rep1) = one.import(&[&ar], &[]);
    let (out2, rep2) = many.import(&[&ar], &["--messages-per-pass", "3"]);
    assert_eq!(n(&rep1, "passes"), 1, "{rep1}");
    // Every folder holds more than three messages: each is cut into parts of three.
    let parts: u64 = rep1["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| n(f, "archived").div_ceil(3))
        .sum();
    assert!(n(folder(&rep1, "INBOX"), "archived") > 3, "{rep1}");
    assert_eq!(n(&rep2, "passes"), parts, "{rep2}");
    assert_eq!(out1.status.code(), out2.status.code(), "{}", stderr(&out2));
    let same = |r: &serde_json::Value| {
        let mut r = r.clone();
        let o = r.as_object_mut().unwrap();
        for k in ["passes", "archive_readings", "seconds", "destination"] {
            o.remove(k);
        }
        r
    };
    // The fixture archive holds its folders one after the other, in the order of the
    // passes: every part reads on where the previous one stopped.
    assert_eq!(n(&rep1, "archive_readings"), 1, "{rep1}");
    assert_eq!(n(&rep2, "archive_readings"), 1, "{rep2}");
    assert_eq!(same(&rep1), same(&rep2));
    assert_eq!(n(folder(&rep2, "INBOX"), "already_there"), 1, "{rep2}");
    assert!(n(&rep2, "appended") > 20, "{rep2}");

    let state = |user: &str| {
        let mut c = d.raw(user);
        let mut s = server_state(&mut c);
        c.logout();
        for msgs in s.values_mut() {
            msgs.sort();
        }
        s
    };
    let bob = state("bob");
    assert_eq!(
        bob.get("INBOX")
            .unwrap()
            .iter()
            .filter(|(_, b)| *b == first)
            .count(),
        2
    );
    assert_eq!(state("alice"), bob);

    let (_, again) = many.import(&[&ar], &["--messages-per-pass", "3"]);
    assert_eq!(n(&again, "appended"), 0, "{again}");
    assert_eq!(
        n(&again, "already_there"),
        n(&rep1, "appended") + 1,
        "{again}"
    );
    assert_eq!(n(&again, "passes"), parts);
}
