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
