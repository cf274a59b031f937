//! `mailark folders URL`: logs in and lists every folder with its messages, bytes, role
//! and subscription, changing nothing; roles come from SPECIAL-USE or, on a server that
//! flags none, from the name (English and Japanese), and only at the top level.

mod common;
mod support;

use common::*;
use support::{Dovecot, DovecotOptions};

#[test]
fn lists_counts_sizes_roles_and_subscriptions() {
    let d = Dovecot::start_with(DovecotOptions {
        separator: '.',
        prefix: "INBOX.".into(),
        special: vec![],
        ..Default::default()
    });
    let m = |s: &str| format!("Subject: {s}\r\n\r\nbody\r\n").into_bytes();
    let mut c = d.raw("alice");
    for f in [
        "INBOX.送信済みメール",
        "INBOX.Archive",
        "INBOX.Archive.Sent",
        "INBOX.Trash",
    ] {
        c.must(&format!(
            "CREATE {}",
            support::raw::quote(&support::raw::mutf7(f))
        ));
    }
    c.must(&format!(
        "SUBSCRIBE {}",
        support::raw::quote(&support::raw::mutf7("INBOX.送信済みメール"))
    ));
    for (f, n) in [
        ("INBOX", 3),
        ("INBOX.送信済みメール", 2),
        ("INBOX.Archive.Sent", 1),
    ] {
        for i in 0..n {
            assert!(c
                .append(&support::raw::mutf7(f), "", None, &m(&format!("{f}{i}")))
                .ok());
        }
    }
    let before = d.doveadm(&[
        "-f",
        "flow",
        "mailbox",
        "status",
        "-u",
        "alice",
        "messages unseen",
        "*",
    ]);
    let o = bin()
        .args(["folders", &d.imaps_url("alice"), "--json", "--tls-ca-file"])
        .arg(d.ca_file())
        .arg("--password-file")
        .arg(d.password_file("alice"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    check_json_scheme("folders", &v, &["folders", "messages", "bytes"]);
    let f = |name: &str| {
        v["folders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {v:#}"))
            .clone()
    };
    assert_eq!(v["messages"], 6);
    let inbox = f("INBOX");
    assert_eq!(inbox["messages"], 3);
    let bytes: u64 = (0..3).map(|i| m(&format!("INBOX{i}")).len() as u64).sum();
    assert_eq!(inbox["bytes"], bytes);
    let sent = f("INBOX.送信済みメール");
    assert_eq!(
        (sent["role"].as_str(), sent["role_from"].as_str()),
        (Some("\\Sent"), Some("name"))
    );
    assert_eq!(sent["subscribed"], true);
    assert_eq!(sent["messages"], 2);
    assert_eq!(f("INBOX.Trash")["role"], "\\Trash");
    // Only top-level names say a role.
    assert!(f("INBOX.Archive.Sent")["role"].is_null());
    assert_eq!(f("INBOX.Archive")["subscribed"], false);
    assert_eq!(v["namespace"][0], "INBOX.");
    // Read-only: nothing was marked seen.
    let after = d.doveadm(&[
        "-f",
        "flow",
        "mailbox",
        "status",
        "-u",
        "alice",
        "messages unseen",
        "*",
    ]);
    assert_eq!(before, after);
    // The table pads Japanese names by display width.
    let o = bin()
        .args(["folders", &d.imaps_url("alice"), "--tls-ca-file"])
        .arg(d.ca_file())
        .arg("--password-file")
        .arg(d.password_file("alice"))
        .output()
        .unwrap();
    let table = stdout(&o);
    let col = |line: &str| {
        let i = line.find("  ").unwrap();
        line[..i]
            .chars()
            .map(|c| if c.is_ascii() { 1 } else { 2 })
            .sum::<usize>()
            + line[i..].find(|c: char| c != ' ').unwrap()
    };
    let lines: Vec<&str> = table.lines().filter(|l| l.starts_with("INBOX")).collect();
    assert!(lines.len() >= 4, "{table}");
    let first = col(lines[0]);
    for l in &lines {
        assert_eq!(col(l), first, "columns do not line up:\n{table}");
    }
    assert!(table.contains("\\Sent (by name)"), "{table}");
}
