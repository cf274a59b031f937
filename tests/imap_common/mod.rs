//! Helpers for the IMAP export and verify tests: run `mailark` against the harness
//! Dovecot, read its JSON, and look at the server with the raw test client only (never
//! with mailark's own IMAP code).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use crate::common::*;
use crate::support::raw::{mutf7, RawImap};
use crate::support::Dovecot;

/// `mailark export imaps://user@... -o out` with the password file and the test CA.
pub fn export(d: &Dovecot, user: &str, out: &Path, extra: &[&str]) -> Output {
    let pw = d.password_file(user);
    let ca = d.ca_file();
    let url = d.imaps_url(user);
    let mut args = vec![
        "export",
        url.as_str(),
        "-o",
        out.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    if !out.status.success() {
        // Shown only when the test fails.
        println!(
            "mailark {args:?} exited {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        );
    }
    out
}

pub fn folder<'a>(rep: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    rep["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["folder"] == name)
        .unwrap_or_else(|| panic!("folder {name} not in the report: {rep:#}"))
}

/// One message as the server holds it.
#[derive(Debug, Clone)]
pub struct ServerMsg {
    pub uid: u32,
    pub flags: Vec<String>,
    pub internaldate: String,
    pub body: Vec<u8>,
}

/// UID, flags, INTERNALDATE and bytes of every message in a folder (wire name).
pub fn server_folder(c: &mut RawImap, wire: &str) -> Vec<ServerMsg> {
    let bodies = c.fetch_all(wire);
    let r = c.must("UID FETCH 1:* (UID INTERNALDATE)");
    let mut dates = BTreeMap::new();
    for l in r.data {
        let t = String::from_utf8_lossy(&l).into_owned();
        let (Some(u), Some(d)) = (t.split("UID ").nth(1), t.split("INTERNALDATE \"").nth(1)) else {
            continue;
        };
        let uid: u32 = u
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        dates.insert(uid, d.split('"').next().unwrap().to_string());
    }
    bodies
        .into_iter()
        .map(|(uid, flags, body)| ServerMsg {
            uid,
            flags: flags.split_whitespace().map(str::to_string).collect(),
            internaldate: dates.get(&uid).cloned().unwrap_or_default(),
            body,
        })
        .collect()
}

/// Every folder's messages, by UTF-8 name (the test knows which names it made).
pub fn server_state(d: &Dovecot, user: &str, names: &[&str]) -> BTreeMap<String, Vec<ServerMsg>> {
    let mut c = d.raw(user);
    let mut out = BTreeMap::new();
    for n in names {
        out.insert(n.to_string(), server_folder(&mut c, &mutf7(n)));
    }
    c.logout();
    out
}

/// Parses an IMAP INTERNALDATE to seconds since the epoch (the test's own parser).
pub fn internaldate_secs(s: &str) -> i64 {
    chrono::DateTime::parse_from_str(s.trim(), "%d-%b-%Y %H:%M:%S %z")
        .unwrap_or_else(|e| panic!("bad INTERNALDATE {s:?}: {e}"))
        .timestamp()
}

/// Flags without `\Recent`, sorted, for comparing sets.
pub fn flag_set(v: &[String]) -> Vec<String> {
    let mut f: Vec<String> = v
        .iter()
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .cloned()
        .collect();
    f.sort();
    f
}

/// The decompressed tar stream of an archive, for grepping.
pub fn archive_bytes(p: &Path) -> Vec<u8> {
    let f = std::fs::File::open(p).unwrap();
    let mut out = Vec::new();
    let mut dec = zstd::stream::read::Decoder::new(f).unwrap();
    // The trailer after the last frame is not zstd; keep what decoded.
    let _ = std::io::Read::read_to_end(&mut dec, &mut out);
    out
}

pub fn contains(h: &[u8], n: &[u8]) -> bool {
    h.windows(n.len()).any(|w| w == n)
}

/// Files in `dir` whose name starts with `prefix` (leftover archives or temp files).
pub fn leftovers(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix) || n.starts_with(&format!(".{prefix}")))
        .collect()
}

/// A message with the given subject and body, CRLF line ends (as Dovecot serves).
pub fn msg(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Tester <t@example.com>\r\nTo: a@example.com\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\nDate: Mon, 07 Jan 2019 10:00:00 +0900\r\n\r\n{body}\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}
