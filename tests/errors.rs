//! How a job that cannot be done says so: one line on stderr naming the thing at fault,
//! exit 2, and with `--json` also one JSON object on stdout; an untrusted certificate
//! names the URL and the flag that fixes it (against Dovecot's self-signed certificate).

mod common;
mod support;

use common::*;
use support::Dovecot;

#[test]
fn an_untrusted_certificate_names_the_url_and_the_fix() {
    let d = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = d.password_file("alice").display().to_string();
    let out = dir.path().join("a.tar.zst").display().to_string();
    for url in [
        d.imaps_url("alice"),
        d.imap_url("alice"),
        d.pop3s_url("alice"),
    ] {
        let o = run(&["export", &url, "-o", &out, "--password-file", &pw]);
        assert_eq!(o.status.code(), Some(2), "{url}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(stdout(&o).is_empty(), "{url}: {}", stdout(&o));
        assert_eq!(err.lines().count(), 1, "{url}: one line:\n{err}");
        assert!(err.contains(&url), "{url} not named:\n{err}");
        assert!(
            err.contains("--tls-ca-file PEM") && err.contains("--insecure"),
            "{url}: no fix named:\n{err}"
        );
    }
}

/// The `--json` error object on stdout, and the same error on stderr.
fn json_error(args: &[&str]) -> serde_json::Value {
    let o = run(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("mailark: error: "), "{args:?}: {err}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not one JSON value ({e}):\n{}",
            stdout(&o)
        )
    });
    assert_eq!(v["exit"], 2, "{v}");
    assert_eq!(v["schema"], 1, "{v}");
    let msg = v["error"].as_str().expect("error is a string");
    assert!(
        err.contains(msg),
        "{args:?}: JSON error {msg:?} is not the stderr line {err:?}"
    );
    v
}

#[test]
fn json_runs_that_cannot_be_done_print_one_error_object() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.tar.zst").display().to_string();
    let out = dir.path().join("o.tar.zst").display().to_string();
    let no_maildir = dir.path().join("nothing-here").display().to_string();

    let v = json_error(&["ls", &missing, "--json"]);
    assert!(
        v["error"].as_str().unwrap().contains("missing.tar.zst"),
        "{v}"
    );
    // verify's own report is the JSON answer (it names the unusable archive as a
    // finding); the error line goes to stderr as for the others.
    let o = run(&["verify", &missing, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON value");
    assert_eq!(v["unusable"], true, "{v}");
    assert!(
        stderr(&o).starts_with("mailark: error: ") && stderr(&o).contains("missing.tar.zst"),
        "{}",
        stderr(&o)
    );
    let o = run(&["verify", &missing]);
    assert!(
        stdout(&o).is_empty() || !stdout(&o).contains("error:"),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("missing.tar.zst"), "{}", stderr(&o));
    json_error(&[
        "import",
        &missing,
        "--to",
        "imaps://a@127.0.0.1:1",
        "--password-env",
        "NO_SUCH_PW_VAR",
        "--json",
    ]);
    json_error(&[
        "export",
        &format!("maildir:{no_maildir}"),
        "-o",
        &out,
        "--json",
    ]);

    // A connection failure, too: nothing listens on port 1.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "x\n").unwrap();
    let v = json_error(&[
        "export",
        "imaps://a@127.0.0.1:1",
        "-o",
        &out,
        "--password-file",
        &pw.display().to_string(),
        "--json",
    ]);
    assert!(v["error"].as_str().unwrap().contains("127.0.0.1:1"), "{v}");

    // Without --json, stdout stays empty.
    let o = run(&["ls", &missing]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
}

#[test]
fn a_refused_command_line_with_json_prints_the_json_error_too() {
    let o = run(&["export", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&o)));
    assert_eq!(v["exit"], 2);
    assert_eq!(v["schema"], 1);
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("required arguments") && msg.contains("--output"),
        "{msg}"
    );
    assert!(stderr(&o).contains("required arguments"), "{}", stderr(&o));
    // Without --json, stdout stays empty; help is not an error.
    assert!(run(&["export"]).stdout.is_empty());
    assert_eq!(run(&["export", "--help"]).status.code(), Some(0));
}
