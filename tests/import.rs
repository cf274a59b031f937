//! `mailark import` against real servers (Dovecot's second user, and Cyrus 3.6): the
//! fixtures with odd folder names, special-use mapping, keywords and `\Deleted`, a `.`
//! delimiter with an `INBOX.` prefix, `--dry-run`, reruns that append nothing, a run
//! killed mid-import and resumed, the interop corpus, and a message over APPENDLIMIT.
//! Archives are built with `mailark export maildir:` from files written here; server
//! state is read back with the raw test client, not with mailark's own IMAP code.

mod common;
mod support;

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
        .flat_map(|f| f["failed"].as_array().unwrap().iter())
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

/// Dovecot's form of a message with mixed line ends: bare LF made CRLF, bare CR kept.
fn lf_crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + 64);
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
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
    let names = ["INBOX", "受信箱/取引先", "a.b", "with space", "Q&A [x]", "Sent", "Trash"];
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
        folders[i % names.len()]
            .msgs
            .push((format!("{}.M{i}.x:2,{info}", 1_500_000_000 + i * 3600), b.clone()));
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
    let ar = make_archive(t.path(), &fixture_folders(), &["INBOX", "受信箱/取引先", "Sent"]);
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

    let (out, rep) = dest.import(&[&ar], &[]);
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
    assert_eq!(folder(&rep, "受信箱/取引先")["destination"], "受信箱/取引先");

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
        let (want, want2) = (crlf(bytes), lf_crlf(bytes));
        let copies: Vec<&(String, Vec<u8>)> = got
            .iter()
            .filter(|(_, b)| *b == want || *b == want2)
            .collect();
        assert!(!copies.is_empty(), "{f}: {} missing", m["path"]);
        let flags = m["flags"].as_array().unwrap();
        assert!(
            copies.iter().any(|(fl, _)| flags
                .iter()
                .all(|x| flags_have(fl, x.as_str().unwrap()))),
            "{f}: {} flags {flags:?} not on the server: {copies:?}",
            m["path"]
        );
    }
    // Same message twice in INBOX: two copies; and once more in "with space".
    let first = crlf(&fixtures()[0].1);
    assert_eq!(state["INBOX"].iter().filter(|(_, b)| *b == first).count(), 2);
    assert_eq!(
        state["with space"].iter().filter(|(_, b)| *b == first).count(),
        1
    );
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
    let state2 = server_state(&mut c);
    assert_eq!(state2.values().map(Vec::len).sum::<usize>(), total);

    // A dry run plans nothing to append.
    let (out3, rep3) = dest.import(&[&ar], &["--dry-run"]);
    // Exit 1: the plan says one message (the empty one) cannot be imported.
    assert_eq!(out3.status.code(), Some(1), "{}", stderr(&out3));
    assert_eq!(failures(&rep3).len(), 1, "{rep3}");
    assert_eq!(n(&rep3, "to_append"), 0, "{rep3}");
    assert_eq!(n(&rep3, "already_there"), index.len() as u64 - 1);
    c.logout();
}
