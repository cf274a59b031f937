//! Namespaces and roles across servers: an account exported over IMAP from a server laid
//! out like Courier (personal namespace `INBOX.`, `.` separator, no SPECIAL-USE) goes
//! into a default Dovecot (namespace `""`, `/`, special-use folders) without an `INBOX/`
//! level and with its Sent folders in the destination's \Sent folder, and the other way
//! round; then into Cyrus. Both ends are real servers; what they hold is read back with
//! the raw test client.

mod common;
mod imap_common;
mod support;

use std::path::Path;
use std::process::Output;

use common::*;
use imap_common::{export, folder, msg};
use support::cyrus::Cyrus;
use support::raw::{mutf7, quote, RawImap};
use support::{Dovecot, DovecotOptions};

/// A Dovecot configured like a Courier account.
fn courier_like() -> Dovecot {
    Dovecot::start_with(DovecotOptions {
        separator: '.',
        prefix: "INBOX.".into(),
        special: vec![],
        ..Default::default()
    })
}

/// `mailark import ARCHIVE --to URL --json` with the password file and the CA.
fn import(url: &str, pw: &Path, ca: &Path, ar: &Path) -> (Output, serde_json::Value) {
    let out = run(&[
        "import",
        ar.to_str().unwrap(),
        "--to",
        url,
        "--password-file",
        pw.to_str().unwrap(),
        "--tls-ca-file",
        ca.to_str().unwrap(),
        "--json",
    ]);
    let rep = json(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{rep:#}\nstderr: {}",
        stderr(&out)
    );
    (out, rep)
}

/// Wire names of every folder the account lists.
fn listed(c: &mut RawImap) -> Vec<String> {
    c.must("LIST \"\" \"*\"")
        .data
        .iter()
        .map(|l| {
            let l = String::from_utf8_lossy(l).trim_end().to_string();
            match l.rsplit_once(" \"") {
                Some((_, n)) if l.ends_with('"') => n.trim_end_matches('"').to_string(),
                _ => l.rsplit(' ').next().unwrap().to_string(),
            }
        })
        .collect()
}

/// Subjects of the messages in a folder (UTF-8 name), sorted.
fn subjects(c: &mut RawImap, name: &str) -> Vec<String> {
    let mut v: Vec<String> = c
        .fetch_all(&mutf7(name))
        .into_iter()
        .map(|(_, _, b)| {
            let s = String::from_utf8_lossy(&b).into_owned();
            s.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// The subject of the message seeded into folder `f`: its name in ASCII (Cyrus rewrites
/// 8-bit header bytes).
fn tag(f: &str) -> String {
    f.chars()
        .map(|c| if c.is_ascii() { c } else { '~' })
        .collect()
}

fn tags(folders: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = folders.iter().map(|f| tag(f)).collect();
    v.sort();
    v
}

/// Creates each folder (UTF-8 name) and appends one message whose subject names it.
fn seed(c: &mut RawImap, folders: &[&str]) {
    for f in folders {
        if !f.eq_ignore_ascii_case("INBOX") {
            c.must(&format!("CREATE {}", quote(&mutf7(f))));
        }
        assert!(
            c.append(&mutf7(f), "\\Seen", None, &msg(&tag(f), "x")).ok(),
            "{f}"
        );
    }
}

fn recorded_namespace(ar: &Path) -> Option<(String, Option<String>)> {
    let a = mailark::archive::Archive::open(ar).unwrap();
    a.index.header.namespace.map(|n| (n.prefix, n.delimiter))
}

const COURIER_FOLDERS: [&str; 7] = [
    "INBOX",
    "INBOX.Archive",
    "INBOX.Archive.2019",
    "INBOX.Sent Items",
    "INBOX.送信済みメール",
    "INBOX.Drafts",
    "INBOX.Projects.Sent",
];

/// Exports the Courier-like account `alice` of `src` and returns the archive.
fn courier_archive(src: &Dovecot, dir: &Path) -> std::path::PathBuf {
    let mut c = src.raw("alice");
    seed(&mut c, &COURIER_FOLDERS);
    let list = c.must("LIST \"\" \"*\" RETURN (SPECIAL-USE)").text();
    assert!(
        !list.contains("\\Sent"),
        "the source must flag no roles: {list}"
    );
    c.logout();
    let ar = dir.join("courier.tar.zst");
    let out = export(src, "alice", &ar, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        recorded_namespace(&ar),
        Some(("INBOX.".to_string(), Some(".".to_string())))
    );
    ar
}

#[test]
fn courier_layout_into_default_dovecot() {
    let t = tempfile::tempdir().unwrap();
    let src = courier_like();
    let ar = courier_archive(&src, t.path());
    let dst = Dovecot::start();
    let (_, rep) = import(
        &dst.imaps_url("bob"),
        &dst.password_file("bob"),
        &dst.ca_file(),
        &ar,
    );
    assert_eq!(rep["verified"], 7, "{rep:#}");
    for (s, want) in [
        ("INBOX", "INBOX"),
        ("INBOX.Archive.2019", "Archive/2019"),
        ("INBOX.Sent Items", "Sent"),
        ("INBOX.送信済みメール", "Sent"),
        ("INBOX.Drafts", "Drafts"),
        ("INBOX.Projects.Sent", "Projects/Sent"),
    ] {
        assert_eq!(folder(&rep, s)["destination"], want, "{s}: {rep:#}");
    }
    let mut c = dst.raw("bob");
    let names = listed(&mut c);
    assert!(
        names.iter().all(|n| !n.starts_with("INBOX/")),
        "nested under INBOX/: {names:?}"
    );
    for (name, want) in [
        ("INBOX", vec!["INBOX"]),
        ("Archive", vec!["INBOX.Archive"]),
        ("Archive/2019", vec!["INBOX.Archive.2019"]),
        ("Sent", vec!["INBOX.Sent Items", "INBOX.送信済みメール"]),
        ("Drafts", vec!["INBOX.Drafts"]),
        ("Projects/Sent", vec!["INBOX.Projects.Sent"]),
    ] {
        assert_eq!(subjects(&mut c, name), tags(&want), "{name}");
    }
    c.logout();
    // Two source folders share the destination's Sent: a rerun still finds every
    // message there and appends nothing.
    let (_, rep) = import(
        &dst.imaps_url("bob"),
        &dst.password_file("bob"),
        &dst.ca_file(),
        &ar,
    );
    assert_eq!(rep["appended"], 0, "{rep:#}");
}

#[test]
fn default_dovecot_into_courier_layout() {
    let t = tempfile::tempdir().unwrap();
    let src = Dovecot::start();
    let mut c = src.raw("alice");
    seed(&mut c, &["INBOX", "Archive", "Archive/2019"]);
    for f in ["Sent", "Trash"] {
        assert!(c.append(f, "", None, &msg(f, "x")).ok(), "{f}");
    }
    c.logout();
    let ar = t.path().join("dovecot.tar.zst");
    let out = export(&src, "alice", &ar, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        recorded_namespace(&ar),
        Some((String::new(), Some("/".to_string())))
    );

    // A Japanese host's account: its Sent folder is named, not flagged.
    let dst = courier_like();
    let mut c = dst.raw("bob");
    c.must(&format!("CREATE {}", quote(&mutf7("INBOX.送信済みメール"))));
    c.logout();
    let (_, rep) = import(
        &dst.imaps_url("bob"),
        &dst.password_file("bob"),
        &dst.ca_file(),
        &ar,
    );
    assert_eq!(rep["verified"], 5, "{rep:#}");
    let mut c = dst.raw("bob");
    let names = listed(&mut c);
    assert!(
        names
            .iter()
            .all(|n| n == "INBOX" || (n.starts_with("INBOX.") && !n.starts_with("INBOX.INBOX"))),
        "{names:?}"
    );
    for (name, want) in [
        ("INBOX", "INBOX"),
        ("INBOX.Archive", "Archive"),
        ("INBOX.Archive.2019", "Archive/2019"),
        ("INBOX.送信済みメール", "Sent"),
        ("INBOX.Trash", "Trash"),
    ] {
        assert_eq!(subjects(&mut c, name), tags(&[want]), "{name}");
    }
    assert!(!names.contains(&"INBOX.Sent".to_string()), "{names:?}");
    c.logout();
}

/// Cyrus (altnamespace, `/`, no Sent folder of its own) as the destination of the Courier
/// layout: one folder is made for \Sent, with the role, and both Sent folders go there.
#[test]
fn courier_layout_into_cyrus() {
    let t = tempfile::tempdir().unwrap();
    let src = courier_like();
    let ar = courier_archive(&src, t.path());
    let cy = Cyrus::start();
    let (_, rep) = import(
        &cy.imaps_url("bob"),
        &cy.password_file("bob"),
        &cy.ca_file(),
        &ar,
    );
    assert_eq!(rep["verified"], 7, "{rep:#}");
    // The folder made for the first Sent folder in the source's order takes both.
    let sent = folder(&rep, "INBOX.Sent Items")["destination"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(folder(&rep, "INBOX.送信済みメール")["destination"], sent);
    assert!(
        ["Sent Items", "送信済みメール"].contains(&sent.as_str()),
        "{sent}"
    );
    let mut c = cy.raw("bob");
    let names = listed(&mut c);
    assert!(
        names.iter().all(|n| !n.starts_with("INBOX/")),
        "nested under INBOX/: {names:?}"
    );
    for (name, want) in [
        ("INBOX", vec!["INBOX"]),
        ("Archive/2019", vec!["INBOX.Archive.2019"]),
        (&sent, vec!["INBOX.Sent Items", "INBOX.送信済みメール"]),
        ("Projects/Sent", vec!["INBOX.Projects.Sent"]),
    ] {
        assert_eq!(subjects(&mut c, name), tags(&want), "{name}");
    }
    let list = c
        .must(&format!(
            "LIST \"\" {} RETURN (SPECIAL-USE)",
            quote(&mutf7(&sent))
        ))
        .text();
    assert!(list.contains("\\Sent"), "made with the role: {list}");
    c.logout();
}
