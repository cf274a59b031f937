//! The command line as people meet it: one-line errors naming the thing at fault,
//! documented exit codes, `--help` with examples, and archives that appear under their
//! final name only when complete.

mod common;
use common::*;
use std::path::Path;

fn small_maildir(root: &Path) {
    let msgs: Vec<(String, Vec<u8>)> = fixtures()
        .into_iter()
        .take(5)
        .enumerate()
        .map(|(i, (_, b))| (format!("{i}.x:2,S"), b))
        .collect();
    write_maildir_folder(&root.join("INBOX"), &msgs);
}

fn one_line_error(out: &std::process::Output, code: i32, must_name: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    let err = stderr(out);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("mailark: error: "), "{err}");
    assert!(
        err.contains(must_name),
        "{err:?} does not name {must_name:?}"
    );
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect()
}

#[test]
fn never_overwrites_without_force() {
    let t = tempfile::tempdir().unwrap();
    small_maildir(&t.path().join("md"));
    let src = format!("maildir:{}", t.path().join("md").display());
    let ar = t.path().join("a.tar.zst");
    std::fs::write(&ar, b"precious").unwrap();
    let out = run(&["export", &src, "-o", ar.to_str().unwrap()]);
    one_line_error(&out, 2, ar.to_str().unwrap());
    assert_eq!(std::fs::read(&ar).unwrap(), b"precious");
    run_ok(&["export", &src, "-o", ar.to_str().unwrap(), "--force"]);
    run_ok(&["verify", ar.to_str().unwrap()]);
    assert!(leftovers(t.path()).is_empty());
}

#[test]
fn bad_inputs_get_one_line_and_exit_2() {
    let t = tempfile::tempdir().unwrap();
    let ar = t.path().join("out.tar.zst");
    let missing = t.path().join("no-such-maildir");
    let out = run(&[
        "export",
        &format!("maildir:{}", missing.display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    one_line_error(&out, 2, "no-such-maildir");
    assert!(!ar.exists());
    assert!(leftovers(t.path()).is_empty());

    let out = run(&["export", "ftp://x@y", "-o", ar.to_str().unwrap()]);
    one_line_error(&out, 2, "ftp://x@y");
    let out = run(&[
        "export",
        "imaps://alice:hunter2@example.com",
        "-o",
        ar.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !stderr(&out).contains("hunter2"),
        "password echoed: {}",
        stderr(&out)
    );

    small_maildir(&t.path().join("md"));
    let src = format!("maildir:{}", t.path().join("md").display());
    let out = run(&["export", &src, "-o", ar.to_str().unwrap(), "--level", "99"]);
    one_line_error(&out, 2, "99");
    let out = run(&[
        "export",
        &src,
        "-o",
        ar.to_str().unwrap(),
        "--folder",
        "[bad",
    ]);
    one_line_error(&out, 2, "[bad");
    let out = run(&[
        "export",
        &src,
        "-o",
        ar.to_str().unwrap(),
        "--folder",
        "Nothing*",
    ]);
    one_line_error(&out, 2, "no folder matches");
    assert!(!ar.exists());

    let out = run(&["ls", t.path().join("nope.tar.zst").to_str().unwrap()]);
    one_line_error(&out, 2, "nope.tar.zst");
    let out = run(&[
        "extract",
        t.path().join("nope.tar.zst").to_str().unwrap(),
        "--to",
        "zip:x",
    ]);
    one_line_error(&out, 2, "zip:x");
}

#[test]
fn extract_never_overwrites() {
    let t = tempfile::tempdir().unwrap();
    small_maildir(&t.path().join("md"));
    let ar = t.path().join("a.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", t.path().join("md").display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    let out_dir = t.path().join("eml");
    let extract = || {
        run(&[
            "extract",
            ar.to_str().unwrap(),
            "--to",
            &format!("eml:{}", out_dir.display()),
            "--json",
        ])
    };
    let first = extract();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let before = read_tree(&out_dir);
    // A rerun finds every file there, identical, and writes nothing.
    let again = extract();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["messages"], 0, "{v}");
    assert_eq!(v["already_present"], before.len() as u64, "{v}");
    assert_eq!(read_tree(&out_dir), before);
    // A file with other content is never overwritten.
    let (victim, _) = &before[0];
    std::fs::write(out_dir.join(victim), b"changed by hand\n").unwrap();
    let changed = read_tree(&out_dir);
    let out = extract();
    one_line_error(&out, 2, "already exists");
    assert_eq!(read_tree(&out_dir), changed);
}

#[test]
fn killed_export_leaves_no_archive() {
    let t = tempfile::tempdir().unwrap();
    // Incompressible mail at zstd level 19 on one thread: slow enough to kill mid-way.
    let mut state = 0x9e3779b97f4a7c15u64;
    let msgs: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| {
            let mut b = b"Subject: noise\r\n\r\n".to_vec();
            for _ in 0..(2 << 20) / 8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b.extend_from_slice(&state.to_le_bytes());
            }
            (format!("{i}.x:2,"), b)
        })
        .collect();
    write_maildir_folder(&t.path().join("md/INBOX"), &msgs);
    let ar = t.path().join("a.tar.zst");
    let mut child = bin()
        .args([
            "export",
            &format!("maildir:{}", t.path().join("md").display()),
            "-o",
            ar.to_str().unwrap(),
        ])
        .args(["--level", "19", "--threads", "1", "-q"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "export finished before it could be killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !ar.exists(),
        "a killed export left a file under the final name"
    );
}

#[test]
fn help_has_examples_and_exit_codes() {
    let out = run_ok(&["--help"]);
    let s = stdout(&out);
    assert!(s.contains("Examples:") && s.contains("Exit codes"), "{s}");
    for cmd in ["export", "ls", "verify", "extract"] {
        let out = run_ok(&[cmd, "--help"]);
        assert!(
            stdout(&out).contains("Examples:"),
            "{cmd} --help lacks examples"
        );
    }
    let out = run(&["export"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn ls_human_output_shows_japanese_subjects() {
    let t = tempfile::tempdir().unwrap();
    let fx = fixtures();
    let jp: Vec<(String, Vec<u8>)> = fx
        .iter()
        .filter(|(n, _)| n.starts_with("08-"))
        .map(|(_, b)| ("1.x:2,S".into(), b.clone()))
        .collect();
    write_maildir_folder(&t.path().join("md/INBOX"), &jp);
    let ar = t.path().join("a.tar.zst");
    run_ok(&[
        "export",
        &format!("maildir:{}", t.path().join("md").display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    let out = run_ok(&["ls", ar.to_str().unwrap()]);
    assert!(stdout(&out).contains("会議のお知らせ"), "{}", stdout(&out));
}

#[test]
fn man_pages_and_completions_come_from_the_clap_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    run_ok(&["man", man.to_str().unwrap()]);
    for cmd in ["", "-export", "-import", "-migrate", "-status", "-verify"] {
        let page = std::fs::read_to_string(man.join(format!("mailark{cmd}.1")))
            .unwrap_or_else(|e| panic!("mailark{cmd}.1: {e}"));
        assert!(
            page.starts_with(".ie"),
            "not roff: {}",
            &page[..40.min(page.len())]
        );
        assert!(
            page.contains(&format!(".TH mailark{cmd} 1")),
            "mailark{cmd}.1"
        );
    }
    let migrate = std::fs::read_to_string(man.join("mailark-migrate.1")).unwrap();
    assert!(migrate.contains("quiet\\-for"), "{migrate}");
    let bash = stdout(&run_ok(&["completions", "bash"]));
    assert!(bash.contains("migrate") && bash.contains("--password-file"));
    let f = dir.path().join("mailark.bash");
    std::fs::write(&f, &bash).unwrap();
    let st = std::process::Command::new("bash")
        .arg("-n")
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success(), "bash cannot parse the completion script");
    for sh in ["zsh", "fish"] {
        assert!(
            stdout(&run_ok(&["completions", sh])).contains("migrate"),
            "{sh}"
        );
    }
    let bad = run(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// Two full archives are not a chain: `verify` says so (naming the second) instead of
/// passing them, and `import`/`extract` refuse them.
#[test]
fn unrelated_full_archives_are_not_a_chain() {
    let t = tempfile::tempdir().unwrap();
    small_maildir(&t.path().join("md"));
    let src = format!("maildir:{}", t.path().join("md").display());
    let (a, b) = (t.path().join("a.tar.zst"), t.path().join("b.tar.zst"));
    run_ok(&["export", &src, "-o", a.to_str().unwrap()]);
    run_ok(&["export", &src, "-o", b.to_str().unwrap()]);
    let out = run(&["verify", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(b.to_str().unwrap()),
        "{}",
        stdout(&out)
    );
    let to = format!("maildir:{}", t.path().join("x").display());
    let out = run(&[
        "extract",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--to",
        &to,
    ]);
    one_line_error(&out, 2, b.to_str().unwrap());
    // The same archive twice is not a chain either.
    let out = run(&["verify", a.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

/// A trailer of another format version is refused with one line (spec §9), not read as
/// if it were version 1.
#[test]
fn a_later_trailer_version_is_refused() {
    let t = tempfile::tempdir().unwrap();
    small_maildir(&t.path().join("md"));
    let src = format!("maildir:{}", t.path().join("md").display());
    let ar = t.path().join("a.tar.zst");
    run_ok(&["export", &src, "-o", ar.to_str().unwrap()]);
    let mut bytes = std::fs::read(&ar).unwrap();
    let at = bytes.len() - 72 + 16;
    bytes[at..at + 4].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&ar, &bytes).unwrap();
    let out = run(&["ls", ar.to_str().unwrap()]);
    one_line_error(&out, 2, "version 2");
    assert!(
        stderr(&out).contains(ar.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn control_characters_from_folders_and_headers_are_escaped_in_human_output() {
    let t = tempfile::tempdir().unwrap();
    let hostile = "Red\x1b[31m\x07";
    let msg = b"From: =?utf-8?q?Eve=1B]0;pwned=07?= <e@x>\r\nSubject: =?utf-8?q?hi=1B[2J?=\r\n\r\nbody\r\n".to_vec();
    write_maildir_folder(
        &t.path().join("md").join(hostile),
        &[("1.x:2,S".to_string(), msg)],
    );
    let ar = t.path().join("a.tar.zst");
    let exp = run_ok(&[
        "export",
        &format!("maildir:{}", t.path().join("md").display()),
        "-o",
        ar.to_str().unwrap(),
    ]);
    let ls = run_ok(&["ls", ar.to_str().unwrap()]);
    for (what, o) in [("export", &exp), ("ls", &ls)] {
        let text = format!("{}{}", stdout(o), stderr(o));
        assert!(
            !text.contains('\x1b') && !text.contains('\x07'),
            "{what} printed a control character: {text:?}"
        );
        assert!(text.contains("Red\\u{1b}[31m\\u{7}"), "{what}: {text:?}");
    }
    assert!(stdout(&ls).contains("\\u{1b}[2J"), "{}", stdout(&ls));
}
