//! The `--json` documents of every command share one scheme (docs/json.md): `schema`
//! 1 at the top, `messages` and `bytes` for counts, `folders` a list, `failed` a count
//! beside its `failures` list, dates in UTC with `Z`. Each command's document is walked
//! here so a field that drifts from the scheme fails a test. Also: `ls` through a pipe
//! closed early, tables aligned by terminal width, `--folder`/`--exclude` on every
//! command that reads archives or servers, and a repeatable `--since`.

mod common;
mod support;

use std::io::Read;
use std::path::Path;
use std::process::Stdio;

use common::*;
use serde_json::Value;
use support::{Dovecot, DovecotOptions};

/// The document `o` printed. Every field name in it must be in docs/json.md, so a new
/// field cannot go undocumented.
fn doc(o: &std::process::Output) -> Value {
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(o), stderr(o)));
    let spec = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.md"))
        .unwrap();
    let mut missing = Vec::new();
    undocumented(&v, &spec, &mut missing);
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "not in docs/json.md: {missing:?}");
    v
}

fn undocumented(v: &Value, spec: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if !spec.contains(&format!("`{k}`")) && !spec.contains(&format!("`{k}[]`")) {
                    out.push(k.clone());
                }
                undocumented(x, spec, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| undocumented(x, spec, out)),
        _ => {}
    }
}

fn message(subject: &str, date: &str) -> Vec<u8> {
    format!(
        "From: 山田 <yamada@example.jp>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@x>\r\n\
         Date: {date}\r\n\r\nbody of {subject}\r\n"
    )
    .into_bytes()
}

/// An eml: tree with Japanese and nested folder names, dated in +09:00.
fn eml_tree(root: &Path) {
    for (folder, n) in [
        ("INBOX", 2),
        ("受信箱", 2),
        ("プロジェクト/会議", 1),
        ("Trash", 1),
    ] {
        let dir = root.join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let subject = format!("{}-{i}", folder.replace('/', "-"));
            std::fs::write(
                dir.join(format!("{i}.eml")),
                message(&subject, "Mon, 2 Mar 2026 10:00:00 +0900"),
            )
            .unwrap();
        }
    }
}

fn export_eml(t: &Path) -> std::path::PathBuf {
    eml_tree(&t.join("src"));
    let ar = t.join("a.tar.zst");
    let src = format!("eml:{}", t.join("src").display());
    run_ok(&["export", &src, "-o", ar.to_str().unwrap()]);
    ar
}

#[test]
fn local_commands_share_the_scheme() {
    let t = tempfile::tempdir().unwrap();
    eml_tree(&t.path().join("src"));
    let ar = t.path().join("a.tar.zst");
    let a = ar.to_str().unwrap();
    let src = format!("eml:{}", t.path().join("src").display());
    let exp = doc(&run_ok(&["export", &src, "-o", a, "--json"]));
    check_json_scheme("export", &exp, &["messages", "bytes", "folders", "archive"]);
    assert_eq!(exp["messages"], 6);

    let ls = doc(&run_ok(&["ls", a, "--json"]));
    check_json_scheme("ls", &ls, &["messages"]);
    let msgs = ls["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 6);
    // 10:00 in Tokyo is 01:00 UTC.
    assert_eq!(msgs[0]["internaldate"], "2026-03-02T01:00:00Z", "{ls:#}");

    let ver = doc(&run_ok(&["verify", a, "--json"]));
    check_json_scheme("verify", &ver, &["messages", "bytes", "findings"]);
    assert_eq!(ver["messages"], 6);
    assert_eq!(ver["bytes"], exp["bytes"]);

    let out = format!("maildir:{}", t.path().join("out").display());
    let ext = doc(&run_ok(&["extract", a, "--to", &out, "--json"]));
    check_json_scheme(
        "extract",
        &ext,
        &["messages", "bytes", "folders", "failed", "failures"],
    );
    assert_eq!(ext["failed"], 0);
    assert_eq!(ext["folders"].as_array().unwrap().len(), 4, "{ext:#}");
}

#[test]
fn a_document_that_breaks_the_scheme_is_caught() {
    // The checker itself must be able to fail.
    let bad = [
        serde_json::json!({"messages": 1}),
        serde_json::json!({"schema": 1, "message_bytes": 1}),
        serde_json::json!({"schema": 1, "folders": 3}),
        serde_json::json!({"schema": 1, "failed": []}),
        serde_json::json!({"schema": 1, "failed": 2, "failures": [1]}),
        serde_json::json!({"schema": 1, "failures": [1]}),
        serde_json::json!({"schema": 1, "x": {"when": "2026-03-02T10:00:00+09:00"}}),
    ];
    for v in bad {
        let r = std::panic::catch_unwind(|| check_json_scheme("test", &v, &[]));
        assert!(r.is_err(), "accepted {v}");
    }
}

/// `mailark ARGS | head -c 100`: the reader goes away while mailark still writes.
fn through_closed_pipe(args: &[&str]) -> std::process::Output {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 100];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn ls_into_a_pipe_closed_early_ends_quietly() {
    let t = tempfile::tempdir().unwrap();
    // Far more than a pipe buffer (64 KiB) of listing.
    let msgs: Vec<(String, Vec<u8>)> = (0..1500)
        .map(|i| {
            let subject = format!("message number {i} with a long enough subject line");
            (
                format!("{i}.x:2,S"),
                message(&subject, "Mon, 2 Mar 2026 10:00:00 +0900"),
            )
        })
        .collect();
    write_maildir_folder(&t.path().join("md"), &msgs);
    let ar = t.path().join("a.tar.zst");
    let src = format!("maildir:{}", t.path().join("md").display());
    run_ok(&["export", &src, "-o", ar.to_str().unwrap()]);
    let full = run_ok(&["ls", ar.to_str().unwrap(), "--json"]);
    assert!(full.stdout.len() > 256 << 10, "{}", full.stdout.len());
    for args in [
        vec!["ls", ar.to_str().unwrap(), "--json"],
        vec!["ls", ar.to_str().unwrap()],
    ] {
        let o = through_closed_pipe(&args);
        // 141 is 128 + SIGPIPE, what a shell reports for tools killed by it.
        assert!(
            matches!(o.status.code(), Some(0) | Some(141) | None),
            "{args:?}: {:?}: {}",
            o.status,
            stderr(&o)
        );
        assert_eq!(stderr(&o), "", "{args:?}");
    }
}

/// Terminal columns, as a terminal draws them (CJK: two).
fn columns(s: &str) -> usize {
    s.chars()
        .map(|c| match c as u32 {
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xAC00..=0xD7A3
            | 0xFF00..=0xFF60 => 2,
            _ => 1,
        })
        .sum()
}

/// The terminal column where `needle` starts in `line`.
fn column_of(line: &str, needle: &str) -> usize {
    let at = line
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {line:?}"));
    columns(&line[..at])
}

#[test]
fn tables_line_up_with_japanese_folder_names() {
    let t = tempfile::tempdir().unwrap();
    eml_tree(&t.path().join("src"));
    let ar = t.path().join("a.tar.zst");
    let src = format!("eml:{}", t.path().join("src").display());
    let exp = stdout(&run_ok(&["export", &src, "-o", ar.to_str().unwrap()]));
    // Export: the right edge of the `source` column is the same on every row.
    let rows: Vec<&str> = exp
        .lines()
        .take_while(|l| !l.starts_with("wrote"))
        .collect();
    assert_eq!(rows.len(), 5, "{exp}");
    let edges: Vec<usize> = rows
        .iter()
        .map(|l| {
            let head = l.split_whitespace().next().unwrap();
            let rest = &l[l.find(head).unwrap() + head.len()..];
            let after = rest.trim_start();
            let word = after.split_whitespace().next().unwrap();
            columns(&l[..l.len() - rest.len()])
                + columns(&rest[..rest.find(word).unwrap()])
                + columns(word)
        })
        .collect();
    assert!(edges.windows(2).all(|w| w[0] == w[1]), "{edges:?}\n{exp}");

    // ls: a header, and the folder, from and subject columns start at one column.
    let ls = stdout(&run_ok(&["ls", ar.to_str().unwrap()]));
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 7, "{ls}");
    assert!(lines[0].starts_with("date"), "{ls}");
    for col in ["folder", "from", "subject"] {
        let want = column_of(lines[0], col);
        for l in &lines[1..] {
            let cell = match col {
                "folder" => ["INBOX", "受信箱", "プロジェクト/会議", "Trash"]
                    .into_iter()
                    .find(|f| l.contains(&format!("  {f}  ")))
                    .unwrap_or_else(|| panic!("no folder in {l:?}")),
                "from" => "山田",
                _ => l.rsplit("  ").next().unwrap(),
            };
            assert_eq!(column_of(l, cell), want, "{col} in {l:?}\n{ls}");
        }
    }
    // The flags column shows the archived flags (an .eml file counts as seen).
    assert!(lines[1..].iter().all(|l| l.contains("  S  ")), "{ls}");
}

fn folders_of(ls: &Value) -> Vec<String> {
    let mut f: Vec<String> = ls["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["folder"].as_str().unwrap().to_string())
        .collect();
    f.dedup();
    f.sort();
    f
}

#[test]
fn ls_takes_folder_and_exclude() {
    let t = tempfile::tempdir().unwrap();
    let ar = export_eml(t.path());
    let a = ar.to_str().unwrap();
    let v = doc(&run_ok(&[
        "ls",
        a,
        "--json",
        "--exclude",
        "Trash",
        "--exclude",
        "受信箱",
    ]));
    assert_eq!(folders_of(&v), ["INBOX", "プロジェクト/会議"]);
    let v = doc(&run_ok(&["ls", a, "--json", "--folder", "プロジェクト*"]));
    assert_eq!(folders_of(&v), ["プロジェクト/会議"]);
    let text = stdout(&run_ok(&["ls", a, "--exclude", "*"]));
    assert_eq!(text.lines().count(), 1, "only the header: {text}");
}

#[test]
fn export_takes_folder_and_exclude() {
    let t = tempfile::tempdir().unwrap();
    eml_tree(&t.path().join("src"));
    let src = format!("eml:{}", t.path().join("src").display());
    let ar = t.path().join("f.tar.zst");
    let a = ar.to_str().unwrap();
    let rep = doc(&run_ok(&[
        "export",
        &src,
        "-o",
        a,
        "--json",
        "--folder",
        "*",
        "--exclude",
        "受信箱",
        "--exclude",
        "Trash",
    ]));
    let mut got: Vec<&str> = rep["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["folder"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["INBOX", "プロジェクト/会議"], "{rep:#}");
    assert_eq!(folders_of(&doc(&run_ok(&["ls", a, "--json"]))), got);
}

#[test]
fn since_takes_one_archive_per_flag() {
    let t = tempfile::tempdir().unwrap();
    let ar = export_eml(t.path());
    let a = ar.to_str().unwrap();
    let src = format!("eml:{}", t.path().join("src").display());
    let out = t.path().join("b.tar.zst");
    // The word after --since's archive is the SOURCE again, not a second archive.
    let o = run(&["export", "--since", a, &src, "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--since is for server sources"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "export",
        &src,
        "-o",
        out.to_str().unwrap(),
        "--since",
        a,
        "--since",
        a,
    ]);
    assert!(
        stderr(&o).contains("--since is for server sources"),
        "{}",
        stderr(&o)
    );
}

/// A Dovecot account with mail in INBOX, 受信箱 and Trash, and a chain archived from it.
fn server_with_archive(t: &Path) -> (Dovecot, std::path::PathBuf) {
    // No special-use folders: the account holds exactly the three below.
    let d = Dovecot::start_with(DovecotOptions {
        special: vec![],
        ..Default::default()
    });
    for (folder, n) in [("INBOX", 2), ("受信箱", 2), ("Trash", 1)] {
        let msgs: Vec<(Vec<u8>, &str, i64)> = (0..n)
            .map(|i| {
                let s = format!("{folder}-{i}");
                (
                    message(&s, "Mon, 2 Mar 2026 10:00:00 +0900"),
                    "S",
                    1_772_413_200,
                )
            })
            .collect();
        d.seed_maildir("alice", folder, &msgs);
    }
    let ar = t.join("server.tar.zst");
    let o = net(
        &d,
        "alice",
        &[
            "export",
            &d.imaps_url("alice"),
            "-o",
            ar.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = doc(&o);
    check_json_scheme("export imap", &v, &["messages", "bytes", "folders"]);
    assert_eq!(v["messages"], 5, "{v:#}");
    (d, ar)
}

fn net(d: &Dovecot, user: &str, args: &[&str]) -> std::process::Output {
    bin()
        .args(args)
        .arg("--tls-ca-file")
        .arg(d.ca_file())
        .arg("--password-file")
        .arg(d.password_file(user))
        .output()
        .unwrap()
}

#[test]
fn server_commands_share_the_scheme_and_take_folder_filters() {
    let t = tempfile::tempdir().unwrap();
    let (d, ar) = server_with_archive(t.path());
    let a = ar.to_str().unwrap();

    let f = doc(&net(
        &d,
        "alice",
        &["folders", &d.imaps_url("alice"), "--json"],
    ));
    check_json_scheme("folders", &f, &["messages", "bytes", "folders"]);

    let pop = t.path().join("pop.tar.zst");
    let o = net(
        &d,
        "alice",
        &[
            "export",
            &d.pop3s_url("alice"),
            "-o",
            pop.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    check_json_scheme("export pop3", &doc(&o), &["messages", "bytes", "folders"]);

    // verify --against: the whole account matches; without Trash on either side too.
    let o = net(
        &d,
        "alice",
        &["verify", a, "--against", &d.imaps_url("alice"), "--json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let v = doc(&o);
    check_json_scheme(
        "verify --against",
        &v,
        &["messages", "bytes", "findings", "against"],
    );
    assert_eq!(v["against"]["folders_compared"], 3, "{v:#}");
    let o = net(
        &d,
        "alice",
        &[
            "verify",
            a,
            "--against",
            &d.imaps_url("alice"),
            "--json",
            "--exclude",
            "Trash",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(doc(&o)["against"]["folders_compared"], 2, "{}", stdout(&o));
    let o = net(
        &d,
        "alice",
        &[
            "verify",
            a,
            "--against",
            &d.imaps_url("alice"),
            "--json",
            "--folder",
            "受信箱",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let v = doc(&o);
    assert_eq!(v["against"]["folders_compared"], 1, "{v:#}");
    assert_eq!(v["against"]["server_messages"], 2, "{v:#}");

    // import into bob: only what --folder/--exclude leave.
    let o = net(
        &d,
        "bob",
        &[
            "import",
            a,
            "--to",
            &d.imaps_url("bob"),
            "--json",
            "--exclude",
            "Trash",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let v = doc(&o);
    check_json_scheme("import", &v, &["folders", "failed"]);
    let mut got: Vec<&str> = v["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["folder"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["INBOX", "受信箱"], "{v:#}");
    assert_eq!(v["appended"], 4, "{v:#}");
    let census = doc(&net(&d, "bob", &["folders", &d.imaps_url("bob"), "--json"]));
    let trash = census["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Trash")
        .map_or(0, |f| f["messages"].as_u64().unwrap());
    assert_eq!(trash, 0, "Trash was excluded: {census:#}");
    let o = net(
        &d,
        "bob",
        &[
            "import",
            a,
            "--to",
            &d.imaps_url("bob"),
            "--json",
            "--folder",
            "Trash",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert_eq!(doc(&o)["appended"], 1, "{}", stdout(&o));
}

#[test]
fn a_failure_answers_with_one_error_object_in_the_scheme() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("missing.tar.zst");
    for args in [
        vec!["ls", missing.to_str().unwrap(), "--json"],
        vec![
            "verify",
            missing.to_str().unwrap(),
            "--json",
            "--no-such-flag",
        ],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        // One schema field, not one from the report and one from the error.
        assert_eq!(
            stdout(&o).matches("\"schema\"").count(),
            1,
            "{}",
            stdout(&o)
        );
        let v = doc(&o);
        check_json_scheme("error", &v, &["error", "exit"]);
        assert_eq!(v["exit"], 2);
    }
}
