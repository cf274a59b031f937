//! Where a password can come from besides a file: a command (`--password-command`),
//! standard input (`--password-file -`) and the `MAILARK_*` environment defaults; a
//! failing command is one clear error that never shows what it printed. Each is used to
//! log in to a real Dovecot, and nothing printed holds the secret.

mod common;
mod support;

use std::io::Write;
use std::process::Stdio;

use common::*;
use support::Dovecot;

fn export_args(d: &Dovecot, out: &std::path::Path) -> Vec<String> {
    vec![
        "export".into(),
        d.imaps_url("alice"),
        "-o".into(),
        out.display().to_string(),
        "--json".into(),
    ]
}

fn check(o: &std::process::Output, secret: &str) {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    assert!(!stdout(o).contains(secret) && !stderr(o).contains(secret));
}

#[test]
fn password_command_stdin_and_environment_defaults_log_in() {
    let d = Dovecot::start();
    d.seed_maildir(
        "alice",
        "INBOX",
        &[(b"Subject: a\r\n\r\nx\r\n".to_vec(), "S", 1_600_000_000)],
    );
    let dir = tempfile::tempdir().unwrap();
    let pw = d.password("alice").to_string();
    let ca = d.ca_file();

    // --password-command, with the CA from MAILARK_TLS_CA_FILE.
    let out = dir.path().join("cmd.tar.zst");
    let cmd = format!("cat '{}'", d.password_file("alice").display());
    let o = bin()
        .args(export_args(&d, &out))
        .args(["--password-command", &cmd])
        .env("MAILARK_TLS_CA_FILE", &ca)
        .output()
        .unwrap();
    check(&o, &pw);
    assert!(out.exists());

    // --password-file - reads standard input.
    let out = dir.path().join("stdin.tar.zst");
    let mut child = bin()
        .args(export_args(&d, &out))
        .args(["--password-file", "-", "--tls-ca-file"])
        .arg(&ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{pw}").unwrap();
    let o = child.wait_with_output().unwrap();
    check(&o, &pw);

    // MAILARK_PASSWORD_FILE.
    let out = dir.path().join("env.tar.zst");
    let o = bin()
        .args(export_args(&d, &out))
        .env("MAILARK_PASSWORD_FILE", d.password_file("alice"))
        .env("MAILARK_TLS_CA_FILE", &ca)
        .output()
        .unwrap();
    check(&o, &pw);

    // A failing command: exit 2, its words, never its output; no archive.
    let out = dir.path().join("fail.tar.zst");
    let o = bin()
        .args(export_args(&d, &out))
        .args([
            "--password-command",
            "printf '%s' \"$HIDDEN\"; echo vault is locked >&2; exit 3",
        ])
        .env("HIDDEN", "leaked-output")
        .env("MAILARK_TLS_CA_FILE", &ca)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("failed") && e.contains("vault is locked"), "{e}");
    assert!(!e.contains("leaked-output") && !stdout(&o).contains("leaked-output"));
    assert!(!out.exists());

    // Two sources at once is a mistake, said so.
    let o = bin()
        .args(export_args(&d, &dir.path().join("two.tar.zst")))
        .args(["--password-command", "true"])
        .env("MAILARK_PASSWORD_FILE", d.password_file("alice"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("give one of --password-file"),
        "{}",
        stderr(&o)
    );
}

/// A password no mail, log line or file could hold by chance.
const DISTINCT: &str = "Pw-7Kq2-Zebra-秘密-31";

/// Every form a password could leak in: itself, a distinctive piece of it, and the SASL
/// PLAIN blobs (with and without an authorisation identity) for `user`.
fn secret_forms(user: &str, pw: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        pw.as_bytes().to_vec(),
        "Zebra-秘密".as_bytes().to_vec(),
        b64.encode(format!("\0{user}\0{pw}")).into_bytes(),
        b64.encode(format!("{user}\0{user}\0{pw}")).into_bytes(),
        b64.encode(pw).into_bytes(),
    ]
}

fn holds(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file below `dir`, with archives also decompressed (a secret in an index or a
/// member is compressed out of sight in the raw bytes).
fn files_and_archives(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v = read_tree(dir);
    let archives: Vec<(String, Vec<u8>)> = v
        .iter()
        .filter(|(p, _)| p.ends_with(".zst"))
        .map(|(p, b)| {
            let mut tar = Vec::new();
            let mut d = zstd::stream::read::Decoder::new(&b[..]).unwrap();
            std::io::Read::read_to_end(&mut d, &mut tar).unwrap();
            (format!("{p} (decompressed)"), tar)
        })
        .collect();
    v.extend(archives);
    v
}

/// Every command that logs in, at `-vv` (the wire traced), with distinctive passwords:
/// folders, export over IMAP and POP3, import, verify --against, migrate (twice: a first
/// pass and a delta) and status, plus ls, verify and extract of what they wrote. No
/// output, no file written (archives decompressed, migrate's state.json and lock) holds
/// either password in any form; after each command the source account's Maildir is as
/// it was (names and bytes).
#[test]
fn every_command_at_vv_keeps_the_passwords_out_of_output_and_files() {
    let users: Vec<(String, String)> = ["alice", "bob", "carol"]
        .iter()
        .map(|u| (u.to_string(), format!("{DISTINCT}-{u}")))
        .collect();
    let d = Dovecot::start_with(support::DovecotOptions {
        users: users.clone(),
        ..Default::default()
    });
    d.seed_maildir(
        "alice",
        "INBOX",
        &[
            (
                b"Subject: a\r\nMessage-ID: <a@s>\r\n\r\nx\r\n".to_vec(),
                "S",
                1_600_000_000,
            ),
            (
                b"Subject: b\r\nMessage-ID: <b@s>\r\n\r\ny\r\n".to_vec(),
                "",
                1_600_000_100,
            ),
        ],
    );
    d.seed_maildir(
        "alice",
        "Archive",
        &[(
            b"Subject: c\r\nMessage-ID: <c@s>\r\n\r\nz\r\n".to_vec(),
            "S",
            1_600_000_200,
        )],
    );
    let source_before = d.mail_snapshot("alice");
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n).display().to_string();
    let ca = d.ca_file().display().to_string();
    let pw = |u: &str| d.password_file(u).display().to_string();
    let (alice_pw, carol_pw) = (pw("alice"), pw("carol"));
    let login = |u: &'static str| -> Vec<String> {
        vec![
            "--password-file".into(),
            pw(u),
            "--tls-ca-file".into(),
            ca.clone(),
        ]
    };
    let (imap, pop) = (w("imap.tar.zst"), w("pop.tar.zst"));
    let mut runs: Vec<(&str, Vec<String>, bool)> = vec![
        (
            "folders",
            [vec!["folders".into(), d.imaps_url("alice")], login("alice")].concat(),
            true,
        ),
        (
            "export imap",
            [
                vec![
                    "export".into(),
                    d.imap_url("alice"),
                    "-o".into(),
                    imap.clone(),
                ],
                login("alice"),
            ]
            .concat(),
            true,
        ),
        (
            "export pop3",
            [
                vec![
                    "export".into(),
                    d.pop3_url("alice"),
                    "-o".into(),
                    pop.clone(),
                ],
                login("alice"),
            ]
            .concat(),
            true,
        ),
        (
            "import",
            [
                vec![
                    "import".into(),
                    imap.clone(),
                    "--to".into(),
                    d.imaps_url("bob"),
                ],
                login("bob"),
            ]
            .concat(),
            true,
        ),
        (
            "verify --against",
            [
                vec![
                    "verify".into(),
                    imap.clone(),
                    "--against".into(),
                    d.imaps_url("bob"),
                    "--full".into(),
                ],
                login("bob"),
            ]
            .concat(),
            true,
        ),
        ("ls", vec!["ls".into(), imap.clone()], true),
        ("verify", vec!["verify".into(), imap.clone()], true),
        (
            "extract",
            vec![
                "extract".into(),
                imap.clone(),
                "--to".into(),
                format!("maildir:{}", w("extracted")),
            ],
            true,
        ),
    ];
    let migrate: Vec<String> = vec![
        "migrate".into(),
        "--from".into(),
        d.imap_url("alice"),
        "--to".into(),
        d.imaps_url("carol"),
        "--from-password-file".into(),
        alice_pw.clone(),
        "--to-password-file".into(),
        carol_pw.clone(),
        "--tls-ca-file".into(),
        ca.clone(),
        "--dir".into(),
        w("move"),
    ];
    runs.push(("migrate, first pass", migrate.clone(), true));
    runs.push((
        "migrate, second pass",
        [migrate.clone(), vec!["--json".into()]].concat(),
        true,
    ));
    // Status exits 1: the account is verified, not yet safe to cancel.
    runs.push((
        "status",
        vec!["status".into(), "--dir".into(), w("move")],
        false,
    ));
    runs.push((
        "status --json",
        vec!["status".into(), "--dir".into(), w("move"), "--json".into()],
        false,
    ));

    let forms: Vec<Vec<u8>> = users.iter().flat_map(|(u, p)| secret_forms(u, p)).collect();
    // The search finds a password where one is.
    assert!(holds(
        &std::fs::read(&alice_pw).unwrap(),
        DISTINCT.as_bytes()
    ));
    for (what, args, ok) in &runs {
        let o = bin().arg("-vv").args(args).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(if *ok { 0 } else { 1 }),
            "{what}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        d.assert_mail_unchanged("alice", &source_before, what);
        for f in &forms {
            assert!(
                !holds(&o.stdout, f) && !holds(&o.stderr, f),
                "{what}: a secret form {:?} printed",
                String::from_utf8_lossy(f)
            );
        }
    }
    // The -vv traces were on: the checks above looked at real protocol lines.
    let o = bin()
        .arg("-vv")
        .args([
            "export",
            &d.imaps_url("alice"),
            "-o",
            &w("again.tar.zst"),
            "--password-file",
            &alice_pw,
            "--tls-ca-file",
            &ca,
        ])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(
        err.contains(" C: ") && (err.contains("LOGIN") || err.contains("AUTHENTICATE")),
        "{err}"
    );

    // Every file the runs wrote: archives (raw and decompressed), the extracted tree,
    // migrate's chain, state.json and lock.
    let written = files_and_archives(work.path());
    assert!(
        written.iter().any(|(p, _)| p.ends_with("state.json")),
        "no state.json"
    );
    assert!(written
        .iter()
        .any(|(p, _)| p.contains("pass-") && p.ends_with("(decompressed)")));
    for (p, bytes) in &written {
        for f in &forms {
            assert!(
                !holds(bytes, f),
                "{p} holds a secret form {:?}",
                String::from_utf8_lossy(f)
            );
        }
    }
}
