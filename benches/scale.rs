//! Scale benchmark (issue 11, goal 2): one account of `MAILARK_BENCH_SCALE_MSGS` small
//! messages (default 1,000,000) written straight into a test Dovecot's Maildir and
//! indexed once by Dovecot (untimed); then every command a move runs against it, each as
//! a child process measured for wall time, CPU (user + system, wait4) and peak RSS
//! (maxrss):
//! export over IMAPS, `ls`, `ls --json`, `verify`, `verify --against` the source, import
//! into an empty account, a second import (nothing to do), `verify --against` the
//! destination, `extract`; and mbsync's pull and push of the same account for
//! comparison. The goal each mailark row is held to: peak RSS ≤ 150 MiB.
//!
//! Run: `cargo bench --bench scale` (MAILARK_BENCH_SCALE_MSGS, MAILARK_BENCH_DIR for the
//! scratch directory: 1,000,000 messages need about 20 GB there and in /tmp: five
//! copies of the account, each file of 1–3 KB taking a 4 KB block).
//! `MAILARK_BENCH_SCALE_PEERS=0` leaves out mbsync's pull and push (the push alone took
//! 15 minutes at 225,000 messages); `MAILARK_BENCH_BIN` measures another build and
//! `MAILARK_BENCH_WRAP` runs each command under a wrapper (e.g. valgrind's massif).
//! `MAILARK_BENCH_SCALE_ONLY=export` stops after the export row (to profile or compare
//! export alone); `MAILARK_BENCH_SCALE_ONLY=import` runs export, the two imports and
//! `verify --against` the destination only. `MAILARK_BENCH_SCALE_PASS=N` gives import
//! and `verify --against` `--messages-per-pass N`. `MAILARK_BENCH_SCALE_ONE_FOLDER=1`
//! puts every message in INBOX (the census of one folder is what import and
//! `verify --against` hold whole).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::*;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Folders of the account and the share of the mail each holds (in tenths).
const FOLDERS: [(&str, usize); 6] = [
    ("INBOX", 4),
    ("Sent", 2),
    ("Archive/2023", 1),
    ("Archive/2024", 1),
    ("Archive/2025", 1),
    ("Lists/rust", 1),
];

/// The folders seeded: [`FOLDERS`], or INBOX alone with `MAILARK_BENCH_SCALE_ONE_FOLDER=1`.
fn folders() -> &'static [(&'static str, usize)] {
    match std::env::var("MAILARK_BENCH_SCALE_ONE_FOLDER").as_deref() {
        Ok("1") => &[("INBOX", 10)],
        _ => &FOLDERS,
    }
}

const GOAL_MIB: f64 = 150.0;

/// Writes `n` messages of 1–3 KB into `root` (Dovecot LAYOUT=fs), folder by folder (one
/// in a thousand without a Message-ID: see [`without_message_id`]), each
/// file named as Dovecot names its own (`,S=` size) with `:2,` flags and an mtime that
/// becomes its INTERNALDATE. Returns the bytes written.
fn seed(root: &Path, n: usize) -> u64 {
    let mut rng = Seeded(0x5DEECE66D);
    let (mut i, mut bytes) = (0usize, 0u64);
    let folders = folders();
    for (k, (f, tenths)) in folders.iter().enumerate() {
        let cur = root.join(f).join("cur");
        std::fs::create_dir_all(&cur).unwrap();
        for s in ["new", "tmp"] {
            std::fs::create_dir_all(root.join(f).join(s)).unwrap();
        }
        let end = if k + 1 == folders.len() {
            n
        } else {
            i + n * tenths / 10
        };
        while i < end {
            let mut m = message(&mut rng, i, 1_000 + (i % 5) * 500);
            if i % 1000 == 999 {
                m = without_message_id(&m);
            }
            let flags = if i % 7 == 0 { "FS" } else { "S" };
            let t = 1_600_000_000 + i as i64 * 60;
            let p = cur.join(format!("{t}.M{i}.scale,S={}:2,{flags}", m.len()));
            std::fs::write(&p, &m).unwrap();
            let ts = libc::timespec {
                tv_sec: t as libc::time_t,
                tv_nsec: 0,
            };
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C path and two timespecs.
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [ts, ts].as_ptr(), 0) };
            bytes += m.len() as u64;
            i += 1;
        }
    }
    bytes
}

/// `m` less its Message-ID field. Every thousandth message of the account has none, as
/// drafts and some notices do: whether the destination holds it is told by its bytes,
/// which an import's rerun and `verify --against` then read.
fn without_message_id(m: &[u8]) -> Vec<u8> {
    let at = m
        .windows(13)
        .position(|w| w == b"\r\nMessage-ID:")
        .expect("the bench message has a Message-ID")
        + 2;
    let end = at + m[at..].windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    [&m[..at], &m[end..]].concat()
}

/// Messages Dovecot counts in `user`'s folders (a STATUS pass; on the first call it is
/// what makes Dovecot index the Maildir).
fn count(d: &support::Dovecot, user: &str) -> u64 {
    let mut c = d.raw(user);
    let mut total = 0;
    for (f, _) in folders() {
        total += c.status_messages(&format!("\"{f}\"")).unwrap_or(0);
    }
    c.logout();
    total
}

/// A measured run, plus when its first byte of output arrived (for `ls`).
struct Row {
    what: String,
    m: Measured,
    first_output: Option<Duration>,
}

/// Runs `cmd` (stdout piped and drained), noting when its first output byte came.
fn measure_first(cmd: &mut Command) -> (Measured, Option<Duration>) {
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut first = None;
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => return first,
                Ok(_) => {
                    first.get_or_insert_with(|| start.elapsed());
                }
            }
        }
    });
    let m = reap(child, start);
    (m, reader.join().unwrap())
}

/// An mbsync config syncing `user`'s account with `maildir` one way, its sync state
/// in `state` (not in the Maildir: the push must not read the pull's state).
fn mbsyncrc(
    d: &support::Dovecot,
    user: &str,
    maildir: &Path,
    channel: &str,
    state: &Path,
) -> String {
    std::fs::create_dir_all(state).unwrap();
    // mbsync ignores IP subjectAltNames: connect by name (the cert names localhost).
    let (create, sync) = if channel == "pull" {
        ("Near", "Pull")
    } else {
        ("Far", "Push")
    };
    format!(
        "FSync no\n\n\
         IMAPAccount bench\nHost localhost\nPort {port}\nUser {user}\n\
         PassCmd \"cat {pw}\"\nSSLType IMAPS\nCertificateFile {ca}\n\n\
         IMAPStore far\nAccount bench\n\n\
         MaildirStore near\nPath {m}/\nInbox {m}/INBOX\nSubFolders Verbatim\n\n\
         Channel {channel}\nFar :far:\nNear :near:\nPatterns *\nCreate {create}\n\
         Sync {sync}\nSyncState {st}/\n",
        port = d.imaps_port,
        pw = d.password_file(user).display(),
        ca = d.ca_file().display(),
        m = maildir.display(),
        st = state.display(),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --all-targets` runs this without `--bench`: a smoke run of seconds.
    let n: usize = bench_size("MAILARK_BENCH_SCALE_MSGS", 1_000_000, 300);
    let scratch = match std::env::var_os("MAILARK_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let s = scratch.path();
    let d = support::Dovecot::start_with(support::DovecotOptions {
        users: ["src", "dst", "mbpush"]
            .iter()
            .map(|u| (u.to_string(), format!("{u}-pw")))
            .collect(),
        special: vec![],
        // Dovecot's default vsz_limit (256 MB) is too small for an imap process serving
        // a folder of 400,000 messages: its index cache alone (107 MB, mmapped) and a
        // census of the folder took it past the limit in a 1M run, and the process was
        // killed ("Out of memory (service imap { vsz_limit=256 MB }, you may need to
        // increase it)"), taking `verify --against`'s session with it.
        // 2G: one folder of 1,000,000 (MAILARK_BENCH_SCALE_ONE_FOLDER) holds 2.5 times that.
        extra_conf: "service imap {\n  vsz_limit = 2G\n}\n".into(),
        ..Default::default()
    });

    let t = Instant::now();
    let bytes = seed(&d.maildir("src"), n);
    support::dovecot::chown_nobody(&d.maildir("src"));
    let seeded = t.elapsed();
    let t = Instant::now();
    assert_eq!(count(&d, "src"), n as u64, "Dovecot's count of the seed");
    eprintln!(
        "scale: {n} messages ({:.0} MiB) seeded in {:.1} s, indexed by Dovecot in {:.1} s",
        mib(bytes),
        seeded.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );

    let bin = &mailark_bin();
    let ar = s.join("scale.tar.zst");
    let login = |c: &mut Command, user: &str| {
        c.arg("--password-file")
            .arg(d.password_file(user))
            .arg("--tls-ca-file")
            .arg(d.ca_file());
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut run = |what: &str, mut cmd: Command, first: bool| {
        let errf = s.join("stderr");
        cmd.stderr(std::fs::File::create(&errf).unwrap());
        let (m, first_output) = if first {
            measure_first(&mut cmd)
        } else {
            (measure(cmd.stdout(Stdio::null())), None)
        };
        let err = std::fs::read_to_string(&errf).unwrap_or_default();
        if !m.ok {
            // The server's side of a failure (a killed process, a limit) is in its log,
            // which goes with the scratch directory when the run stops.
            let log = d.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("scale: Dovecot's log, last lines:");
            for l in tail.iter().rev() {
                eprintln!("  {l}");
            }
        }
        assert!(m.ok, "{what} failed: {}", err.trim());
        // Each row as it is measured: a run stopped early still has its figures.
        eprintln!(
            "scale: {what}: {:.1} s, CPU {:.1} s, {:.1} MiB",
            m.wall.as_secs_f64(),
            m.cpu.as_secs_f64(),
            m.peak_rss_kib as f64 / 1024.0
        );
        rows.push(Row {
            what: what.to_string(),
            m,
            first_output,
        });
    };
    let mailark = |args: &[&str]| {
        let mut c = wrapped(bin);
        c.arg(args[0]).arg("-q").args(&args[1..]);
        c
    };
    // `--messages-per-pass` for import and verify --against (their default otherwise).
    let per_pass = std::env::var("MAILARK_BENCH_SCALE_PASS").ok();
    let passes = |c: &mut Command| {
        if let Some(n) = &per_pass {
            c.args(["--messages-per-pass", n]);
        }
    };

    let mut c = mailark(&["export", &d.imaps_url("src"), "-o"]);
    c.arg(&ar);
    login(&mut c, "src");
    run("export imaps://", c, false);
    if std::env::var("MAILARK_BENCH_SCALE_ONLY").as_deref() == Ok("export") {
        eprintln!("scale: MAILARK_BENCH_SCALE_ONLY=export: the other commands not run");
        print_rows(n, bytes, &ar, &rows);
        return;
    }
    let a = ar.to_str().unwrap();
    let import_only = std::env::var("MAILARK_BENCH_SCALE_ONLY").as_deref() == Ok("import");
    if !import_only {
        run("ls", mailark(&["ls", a]), true);
        run("ls --json", mailark(&["ls", a, "--json"]), true);
        run("verify", mailark(&["verify", a]), false);
        let mut c = mailark(&["verify", a, "--against", &d.imaps_url("src")]);
        login(&mut c, "src");
        passes(&mut c);
        run("verify --against source", c, false);
    }
    let mut c = mailark(&["import", a, "--to", &d.imaps_url("dst")]);
    login(&mut c, "dst");
    passes(&mut c);
    run("import into an empty account", c, false);
    assert_eq!(count(&d, "dst"), n as u64, "import: count on the server");
    let mut c = mailark(&["import", a, "--to", &d.imaps_url("dst")]);
    login(&mut c, "dst");
    passes(&mut c);
    run("import again (nothing to do)", c, false);
    assert_eq!(count(&d, "dst"), n as u64, "second import doubled mail");
    let mut c = mailark(&["verify", a, "--against", &d.imaps_url("dst")]);
    login(&mut c, "dst");
    passes(&mut c);
    run("verify --against destination", c, false);
    if import_only {
        eprintln!("scale: MAILARK_BENCH_SCALE_ONLY=import: the other commands not run");
        print_rows(n, bytes, &ar, &rows);
        return;
    }
    let out = s.join("extracted");
    run(
        "extract --to maildir:",
        mailark(&["extract", a, "--to", &format!("maildir:{}", out.display())]),
        false,
    );
    assert_eq!(count_files(&out) as u64, n as u64, "extract: files written");
    let _ = std::fs::remove_dir_all(&out);

    // Peers on the same account: mbsync pulls it to a Maildir, then pushes that Maildir
    // into an empty account.
    if std::env::var("MAILARK_BENCH_SCALE_PEERS").as_deref() == Ok("0") {
        eprintln!("scale: MAILARK_BENCH_SCALE_PEERS=0: mbsync not run");
        print_rows(n, bytes, &ar, &rows);
        return;
    }
    let near = s.join("mbsync-mail");
    std::fs::create_dir_all(&near).unwrap();
    let rc = s.join("mbsyncrc-pull");
    std::fs::write(
        &rc,
        mbsyncrc(&d, "src", &near, "pull", &s.join("state-pull")),
    )
    .unwrap();
    let mut c = Command::new("mbsync");
    c.arg("-c").arg(&rc).args(["-q", "-a"]);
    run("mbsync pull (IMAPS → Maildir)", c, false);
    assert_eq!(
        count_files(&near) as u64,
        n as u64,
        "mbsync pull: files written"
    );
    let rc = s.join("mbsyncrc-push");
    std::fs::write(
        &rc,
        mbsyncrc(&d, "mbpush", &near, "push", &s.join("state-push")),
    )
    .unwrap();
    let mut c = Command::new("mbsync");
    c.arg("-c").arg(&rc).args(["-q", "-a"]);
    run("mbsync push (Maildir → IMAPS)", c, false);
    assert_eq!(
        count(&d, "mbpush"),
        n as u64,
        "mbsync push: count on the server"
    );

    print_rows(n, bytes, &ar, &rows);
}

fn print_rows(n: usize, bytes: u64, ar: &Path, rows: &[Row]) {
    let ar_size = std::fs::metadata(ar).map(|m| m.size()).unwrap_or(0);
    println!(
        "\nscale benchmark: {n} messages ({:.0} MiB, archive {:.0} MiB) in {} folders of one account, one Dovecot 2.3 over IMAPS (mail_fsync = never)\n",
        mib(bytes),
        mib(ar_size),
        folders().len()
    );
    println!("| command | wall (s) | µs/msg | CPU (s) | peak RSS (MiB) | first output (s) | ≤ {GOAL_MIB:.0} MiB |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let w = r.m.wall.as_secs_f64();
        let rss = r.m.peak_rss_kib as f64 / 1024.0;
        let goal = if r.what.starts_with("mbsync") {
            "(peer)"
        } else if rss <= GOAL_MIB {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "| {} | {w:.1} | {:.1} | {:.1} | {rss:.1} | {} | {goal} |",
            r.what,
            w * 1e6 / n as f64,
            r.m.cpu.as_secs_f64(),
            r.first_output
                .map(|f| format!("{:.2}", f.as_secs_f64()))
                .unwrap_or_else(|| "–".into()),
        );
    }
}
