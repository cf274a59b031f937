//! `mailark migrate` and `mailark status` against real servers: an old Dovecot and a new
//! one (and Cyrus as a destination that refuses a message), several accounts from a CSV,
//! passes that bring exactly the new mail, an account that fails alone, a POP3 source,
//! shards sharing one directory, and `safe-to-cancel` only after observed quiet and a
//! clean verification. Server state is read with the raw test client.

mod common;
mod imap_common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use imap_common::msg;
use support::cyrus::Cyrus;
use support::raw::RawImap;
use support::{Dovecot, DovecotOptions};

fn users(names: &[&str], tag: &str) -> DovecotOptions {
    DovecotOptions {
        users: names
            .iter()
            .map(|u| (u.to_string(), format!("{u}-{tag}-pw")))
            .collect(),
        ..Default::default()
    }
}

/// The two sides of a move.
struct Move {
    old: Dovecot,
    new: Dovecot,
    dir: tempfile::TempDir,
}

impl Move {
    fn start(names: &[&str]) -> Move {
        Move {
            old: Dovecot::start_with(users(names, "old")),
            new: Dovecot::start_with(users(names, "new")),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("move")
    }

    /// accounts.csv for `names` (IMAPS to IMAPS), with a wrong source password for
    /// the names in `bad`.
    fn csv(&self, names: &[&str], bad: &[&str]) -> PathBuf {
        let mut s = String::from(
            "name,source,destination,source_password_file,destination_password_file\n",
        );
        for n in names {
            let src_pw = if bad.contains(n) {
                let p = self.dir.path().join(format!("{n}-wrong"));
                std::fs::write(&p, "not-the-password\n").unwrap();
                p
            } else {
                self.old.password_file(n)
            };
            s.push_str(&format!(
                "{n},{},{},{},{}\n",
                self.old.imaps_url(n),
                self.new.imaps_url(n),
                src_pw.display(),
                self.new.password_file(n).display()
            ));
        }
        let p = self.dir.path().join("accounts.csv");
        std::fs::write(&p, s).unwrap();
        p
    }

    fn migrate(&self, extra: &[&str]) -> Output {
        let dir = self.state_dir();
        let old_ca = self.old.ca_file();
        let new_ca = self.new.ca_file();
        let mut args = vec![
            "migrate",
            "--dir",
            dir.to_str().unwrap(),
            "--from-tls-ca-file",
            old_ca.to_str().unwrap(),
            "--to-tls-ca-file",
            new_ca.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        println!(
            "migrate {extra:?}: exit {:?}\nstderr: {}",
            o.status.code(),
            stderr(&o)
        );
        o
    }

    fn status(&self, quiet_for: &str) -> (i32, Vec<serde_json::Value>) {
        let dir = self.state_dir();
        let o = run(&[
            "status",
            "--dir",
            dir.to_str().unwrap(),
            "--quiet-for",
            quiet_for,
            "--json",
        ]);
        (o.status.code().unwrap(), rows(&o))
    }
}

/// The `accounts` of a `migrate --json` or `status --json` document (schema 1).
fn rows(o: &Output) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)));
    check_json_scheme("migrate/status", &v, &["accounts"]);
    v["accounts"]
        .as_array()
        .unwrap_or_else(|| panic!("no accounts list: {v:#}"))
        .clone()
}

fn row<'a>(rows: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {rows:#?}"))
}

fn subjects(c: &mut RawImap, folder: &str) -> Vec<String> {
    let mut v: Vec<String> = c
        .fetch_all(folder)
        .into_iter()
        .map(|(_, _, b)| {
            let s = String::from_utf8_lossy(&b).into_owned();
            s.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
                .unwrap_or_default()
        })
        .collect();
    v.sort();
    v
}

fn seed(d: &Dovecot, user: &str, folder: &str, subjects: &[&str]) {
    let msgs: Vec<(Vec<u8>, &str, i64)> = subjects
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                msg(&format!("{user} {s}"), "body"),
                "S",
                1_546_300_800 + i as i64,
            )
        })
        .collect();
    d.seed_maildir(user, folder, &msgs);
}

fn chain(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.zst"))
        .collect();
    v.sort();
    v
}

#[test]
fn csv_batch_passes_bring_exactly_the_new_mail_then_safe_to_cancel() {
    let m = Move::start(&["alice", "bob"]);
    seed(&m.old, "alice", "INBOX", &["one", "two", "three"]);
    seed(&m.old, "alice", "Archive/2019", &["old-a", "old-b"]);
    seed(&m.old, "alice", "送信済みメール", &["sent-1"]);
    seed(&m.old, "bob", "INBOX", &["b1", "b2"]);
    let csv = m.csv(&["alice", "bob"], &[]);
    let csv_s = csv.to_str().unwrap();

    let o = m.migrate(&["--accounts", csv_s]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let r = rows(&o);
    let alice = row(&r, "alice");
    assert_eq!(alice["state"], "verified", "{alice:#}");
    assert_eq!(alice["pass"]["new_messages"], 6);
    assert_eq!(alice["pass"]["imported"], 6);
    assert_eq!(alice["source_messages"], 6);
    assert_eq!(alice["destination_messages"], 6);
    assert_eq!(alice["missing"], 0);
    assert_eq!(row(&r, "bob")["pass"]["imported"], 2);
    let mut c = m.new.raw("alice");
    assert_eq!(
        subjects(&mut c, "INBOX"),
        ["alice one", "alice three", "alice two"]
    );
    assert_eq!(
        subjects(&mut c, "Archive/2019"),
        ["alice old-a", "alice old-b"]
    );

    // New mail reaches the old server during the MX change.
    let mut oc = m.old.raw("alice");
    assert!(oc
        .append("INBOX", "", None, &msg("alice late", "arrived late"))
        .ok());
    let o = m.migrate(&["--accounts", csv_s]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let r = rows(&o);
    let (alice, bob) = (row(&r, "alice"), row(&r, "bob"));
    assert_eq!(alice["pass"]["new_messages"], 1, "{alice:#}");
    assert_eq!(alice["pass"]["imported"], 1);
    assert_eq!(alice["pass"]["already_there"], 6);
    assert_eq!(alice["destination_messages"], 7);
    assert_eq!(bob["pass"]["new_messages"], 0);
    assert_eq!(bob["pass"]["imported"], 0);
    assert!(
        bob["pass"]["archive"].is_null(),
        "an empty delta is not kept"
    );
    let alice_dir = m.state_dir().join("alice");
    assert_eq!(
        chain(&alice_dir),
        ["pass-0001.tar.zst", "pass-0002.tar.zst"]
    );
    assert_eq!(chain(&m.state_dir().join("bob")), ["pass-0001.tar.zst"]);
    assert_eq!(
        subjects(&mut c, "INBOX"),
        ["alice late", "alice one", "alice three", "alice two"]
    );
    // The account's directory is an ordinary chain.
    let a1 = alice_dir.join("pass-0001.tar.zst");
    let a2 = alice_dir.join("pass-0002.tar.zst");
    run_ok(&["verify", a1.to_str().unwrap(), a2.to_str().unwrap()]);

    // Not quiet long enough yet: verified, not safe (exit 1).
    let (code, st) = m.status("1h");
    assert_eq!(code, 1);
    assert_eq!(row(&st, "alice")["state"], "verified");
    // A later pass that sees no new mail makes the observed quiet period long enough.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let o = m.migrate(&["--accounts", csv_s, "--quiet-for", "2s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let (code, st) = m.status("2s");
    assert_eq!(code, 0, "{st:#?}");
    for n in ["alice", "bob"] {
        assert_eq!(row(&st, n)["state"], "safe-to-cancel", "{st:#?}");
    }
    // Quiet is what passes observed, not time since the last pass.
    let (code, st) = m.status("1h");
    assert_eq!((code, &row(&st, "alice")["state"]), (1, &"verified".into()));
    // The state files are for people too.
    let text = std::fs::read_to_string(alice_dir.join("state.json")).unwrap();
    assert!(text.contains("\"last_new_mail\""), "{text}");
    assert!(
        !text.contains(m.old.password("alice")),
        "no secret in the state"
    );
    let table = run(&[
        "status",
        "--dir",
        m.state_dir().to_str().unwrap(),
        "--quiet-for",
        "2s",
    ]);
    assert!(
        stdout(&table).contains("safe-to-cancel"),
        "{}",
        stdout(&table)
    );
}

#[test]
fn an_account_with_a_wrong_password_fails_alone() {
    let m = Move::start(&["alice", "bob"]);
    seed(&m.old, "alice", "INBOX", &["one"]);
    seed(&m.old, "bob", "INBOX", &["b1"]);
    let csv = m.csv(&["alice", "bob"], &["bob"]);
    let o = m.migrate(&["--accounts", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let r = rows(&o);
    assert_eq!(row(&r, "alice")["state"], "verified");
    let bob = row(&r, "bob");
    assert_eq!(bob["state"], "failed");
    let err = bob["error"].as_str().unwrap();
    assert!(err.starts_with("export: "), "{err}");
    assert!(
        err.to_lowercase().contains("auth") || err.contains("login"),
        "{err}"
    );
    assert!(!stderr(&o).contains("not-the-password"));
    let (code, st) = m.status("0s");
    assert_eq!(code, 1);
    assert_eq!(row(&st, "bob")["state"], "failed");
    assert_eq!(row(&st, "alice")["state"], "safe-to-cancel");

    // Only failures everywhere: nothing could run.
    let csv = m.csv(&["bob"], &["bob"]);
    let o = m.migrate(&["--accounts", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
}

#[test]
fn single_account_from_pop3_lands_in_inbox() {
    let m = Move::start(&["alice"]);
    seed(&m.old, "alice", "INBOX", &["p1", "p2", "p3"]);
    std::env::set_var("MAILARK_TEST_OLD_PW", m.old.password("alice"));
    let dir = m.state_dir();
    let (old_ca, new_ca) = (m.old.ca_file(), m.new.ca_file());
    let from = m.old.pop3s_url("alice");
    let to = m.new.imaps_url("alice");
    let new_pw = m.new.password_file("alice");
    let o = run(&[
        "migrate",
        "--from",
        &from,
        "--to",
        &to,
        "--name",
        "alice-pop",
        "--from-password-env",
        "MAILARK_TEST_OLD_PW",
        "--to-password-file",
        new_pw.to_str().unwrap(),
        "--from-tls-ca-file",
        old_ca.to_str().unwrap(),
        "--to-tls-ca-file",
        new_ca.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let r = rows(&o);
    assert_eq!(row(&r, "alice-pop")["pass"]["imported"], 3);
    let mut c = m.new.raw("alice");
    assert_eq!(
        subjects(&mut c, "INBOX"),
        ["alice p1", "alice p2", "alice p3"]
    );
    // The old server's mail is untouched by the move.
    let mut oc = m.old.raw("alice");
    assert_eq!(oc.fetch_all("INBOX").len(), 3);
}

#[test]
fn shards_on_one_directory_take_every_account_exactly_once() {
    let names = ["a1", "a2", "a3", "a4", "a5"];
    let m = Move::start(&names);
    for n in names {
        seed(&m.old, n, "INBOX", &["x", "y"]);
    }
    let csv = m.csv(&names, &[]);
    let csv_s = csv.to_str().unwrap().to_string();
    let (o0, o1) = std::thread::scope(|s| {
        let h0 = s.spawn(|| m.migrate(&["--accounts", &csv_s, "--shard", "0/2"]));
        let h1 = s.spawn(|| m.migrate(&["--accounts", &csv_s, "--shard", "1/2"]));
        (h0.join().unwrap(), h1.join().unwrap())
    });
    assert_eq!((o0.status.code(), o1.status.code()), (Some(0), Some(0)));
    let mut taken: Vec<String> = rows(&o0)
        .iter()
        .chain(rows(&o1).iter())
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rows(&o0).len(), 3, "rows 0, 2, 4");
    taken.sort();
    assert_eq!(taken, names);
    for n in names {
        let st: serde_json::Value = serde_json::from_slice(
            &std::fs::read(m.state_dir().join(n).join("state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(st["passes"].as_array().unwrap().len(), 1, "{n}: {st:#}");
        let mut c = m.new.raw(n);
        assert_eq!(c.fetch_all("INBOX").len(), 2, "{n}");
    }
    let (_, st) = m.status("72h");
    assert_eq!(st.len(), names.len());
}

#[test]
fn never_safe_while_the_destination_lacks_a_message() {
    // Cyrus refuses a header line without a colon: the chain can never be verified there.
    let old = Dovecot::start_with(users(&["alice"], "old"));
    let new = Cyrus::start();
    let dir = tempfile::tempdir().unwrap();
    let bad =
        b"From: t@example.com\r\nSubject: no colon below\r\nthis line is no header\r\n\r\nbody\r\n"
            .to_vec();
    old.seed_maildir(
        "alice",
        "INBOX",
        &[
            (bad, "", 1_546_300_800),
            (msg("fine", "ok"), "", 1_546_300_801),
        ],
    );
    let state = dir.path().join("move");
    let (old_ca, new_ca) = (old.ca_file(), new.ca_file());
    let (from, to) = (old.imaps_url("alice"), new.imaps_url("alice"));
    let (old_pw, new_pw) = (old.password_file("alice"), new.password_file("alice"));
    let args = [
        "migrate",
        "--from",
        &from,
        "--to",
        &to,
        "--from-password-file",
        old_pw.to_str().unwrap(),
        "--to-password-file",
        new_pw.to_str().unwrap(),
        "--from-tls-ca-file",
        old_ca.to_str().unwrap(),
        "--to-tls-ca-file",
        new_ca.to_str().unwrap(),
        "--dir",
        state.to_str().unwrap(),
        "--quiet-for",
        "0s",
        "--json",
    ];
    for _ in 0..2 {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
        let r = rows(&o);
        let a = row(&r, "alice");
        assert_eq!(a["state"], "failed", "{a:#}");
        assert_eq!(a["missing"], 1);
        assert_eq!(a["destination_messages"], 1);
    }
    let o = run(&[
        "status",
        "--dir",
        state.to_str().unwrap(),
        "--quiet-for",
        "0s",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(row(&rows(&o), "alice")["state"], "failed");
}

#[test]
fn bad_csv_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("acc.csv");
    std::fs::write(
        &csv,
        "name,source,destination,source_password_file,destination_password_file\n\
         ok,imaps://a@h,imaps://a@g,f,g\n\
         bad,imaps://b@h,pop3s://b@g,f,g\n",
    )
    .unwrap();
    let state = dir.path().join("m");
    let o = run(&[
        "migrate",
        "--accounts",
        csv.to_str().unwrap(),
        "--dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("acc.csv, line 3: destination"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn watch_repeats_passes_until_interrupted_and_ends_cleanly() {
    let m = Move::start(&["alice"]);
    seed(&m.old, "alice", "INBOX", &["one"]);
    let csv = m.csv(&["alice"], &[]);
    let dir = m.state_dir();
    let (old_ca, new_ca) = (m.old.ca_file(), m.new.ca_file());
    let child = bin()
        .args(["migrate", "--accounts", csv.to_str().unwrap(), "--dir"])
        .arg(&dir)
        .arg("--from-tls-ca-file")
        .arg(&old_ca)
        .arg("--to-tls-ca-file")
        .arg(&new_ca)
        .args(["--watch", "1s", "--quiet-for", "1s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let state = dir.join("alice").join("state.json");
    let passes = || -> usize {
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map_or(0, |v| v["passes"].as_array().map_or(0, |a| a.len()))
    };
    let t0 = std::time::Instant::now();
    while passes() < 1 {
        assert!(t0.elapsed().as_secs() < 60, "no first pass");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Mail arriving while the watch runs is picked up by a later pass.
    let mut oc = m.old.raw("alice");
    assert!(oc.append("INBOX", "", None, &msg("alice late", "x")).ok());
    let mut c = m.new.raw("alice");
    while subjects(&mut c, "INBOX").len() < 2 {
        assert!(t0.elapsed().as_secs() < 60, "the late mail never arrived");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    while passes() < 4 {
        assert!(t0.elapsed().as_secs() < 90, "passes stopped");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // SAFETY: the child's PID, still running.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("safe-to-cancel"));
    let leftovers: Vec<String> = std::fs::read_dir(dir.join("alice"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(subjects(&mut c, "INBOX"), ["alice late", "alice one"]);
}

#[test]
fn the_example_accounts_csv_parses() {
    // `--shard 0/1` with a DIR that cannot be created stops after the CSV is read, so a
    // broken example would show as a CSV error instead of the directory error.
    let csv = fixtures_dir().join("../accounts.example.csv");
    let o = run(&[
        "migrate",
        "--accounts",
        csv.to_str().unwrap(),
        "--dir",
        "/proc/mailark-no-such-dir/x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("cannot create /proc/mailark-no-such-dir/x"),
        "{e}"
    );
}

#[test]
fn dual_deliveries_land_once_and_different_mail_sharing_a_message_id_lands_twice() {
    let m = Move::start(&["alice"]);
    let mail = |received: &str, id: &str, subject: &str, body: &str| {
        format!(
            "Received: {received}\r\nReturn-Path: <s@example.com>\r\nMessage-ID: {id}\r\n\
             From: s@example.com\r\nSubject: {subject}\r\nDate: Mon, 01 Jan 2024 09:00:00 +0900\r\n\r\n{body}\r\n"
        )
        .into_bytes()
    };
    let old_hop = "from mx.partner by mail.old-host.example.jp; Mon, 1 Jan 2024 09:00:05 +0900";
    let new_hop = "from mx.partner by imap.new.example.net; Mon, 1 Jan 2024 09:00:07 +0900";
    // The same mail, delivered to both servers while the MX change spread.
    let dual_old = mail(old_hop, "<dual@x>", "quote", "the same text");
    let mut dual_new = b"Authentication-Results: imap.new.example.net; spf=pass\r\n".to_vec();
    dual_new.extend(mail(new_hop, "<dual@x>", "quote", "the same text"));
    // Different mail that happens to share a Message-ID: both stay.
    let clash_old = mail(old_hop, "<clash@x>", "invoice", "old server's invoice");
    let clash_new = mail(new_hop, "<clash@x>", "invoice", "a different invoice");
    // Two different messages on the old server sharing one Message-ID: both land.
    let twin_a = mail(old_hop, "<twin@x>", "twin", "first");
    let twin_b = mail(old_hop, "<twin@x>", "twin", "second");
    let mut oc = m.old.raw("alice");
    // Each server dates its delivery by its own clock.
    for b in [&dual_old, &clash_old, &twin_a, &twin_b] {
        assert!(oc
            .append("INBOX", "", Some("01-Jan-2024 09:00:05 +0900"), b)
            .ok());
    }
    let mut nc = m.new.raw("alice");
    for b in [&dual_new, &clash_new] {
        assert!(nc
            .append("INBOX", "", Some("01-Jan-2024 09:00:07 +0900"), b)
            .ok());
    }
    let csv = m.csv(&["alice"], &[]);
    let o = m.migrate(&["--accounts", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let r = rows(&o);
    let a = row(&r, "alice");
    assert_eq!(a["pass"]["same_mail_other_delivery"], 1, "{a:#}");
    assert_eq!(a["pass"]["imported"], 3, "{a:#}");
    assert_eq!(a["state"], "verified");
    let bodies = |c: &mut RawImap| -> Vec<String> {
        let mut v: Vec<String> = c
            .fetch_all("INBOX")
            .into_iter()
            .map(|(_, _, b)| {
                let s = String::from_utf8_lossy(&b).into_owned();
                s.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        bodies(&mut nc),
        [
            "a different invoice",
            "first",
            "old server's invoice",
            "second",
            "the same text"
        ]
    );
    // The copy kept is the destination's own delivery.
    let kept = nc
        .fetch_all("INBOX")
        .into_iter()
        .find(|(_, _, b)| String::from_utf8_lossy(b).contains("<dual@x>"))
        .unwrap();
    assert_eq!(kept.2, dual_new);
    // A second pass changes nothing.
    let o = m.migrate(&["--accounts", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let r = rows(&o);
    assert_eq!(row(&r, "alice")["pass"]["imported"], 0);
    assert_eq!(bodies(&mut nc).len(), 5);
}
