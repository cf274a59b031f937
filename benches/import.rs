//! Import benchmark (issue 5), peers measured in the same run against the same Dovecot
//! (`mail_fsync = never`), each into its own empty account:
//! - `mailark import` of an archive over IMAPS, with its default `--verify quick`;
//! - `mbsync` (isync) pushing the same mail from a plain Maildir over IMAPS;
//! - a raw baseline: one plain-TCP connection writing pipelined `LITERAL+` APPENDs of
//!   the Maildir files into the selected folder as fast as it can (this binary, re-run
//!   as a child).
//!
//! Wall time, CPU time and peak RSS of each child; mailark (with and without
//! verification) and mbsync run three times, interleaved in rotating order, into fresh
//! accounts, and the medians count. Run: `cargo bench --bench import`
//! (MAILARK_BENCH_MSGS sets the message count, default 10,000 ≈ 260 MB;
//! MAILARK_BENCH_DIR the scratch directory).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const FOLDERS: [&str; 3] = ["INBOX", "Sent", "Archive/2023"];

/// A Dovecot LAYOUT=fs Maildir of `n` messages: mostly ~12 KB, some 60 KB, a few 500 KB.
fn make_mail(root: &Path, n: usize) -> u64 {
    for f in FOLDERS {
        for s in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(root.join(f).join(s)).unwrap();
        }
    }
    let mut rng = Seeded(0x9E3779B97F4A7C15);
    let mut bytes = 0u64;
    // MAILARK_BENCH_MSG_SIZE: every message about that size (small messages show where
    // the time per message goes: client, server or round trips).
    let fixed: Option<usize> = std::env::var("MAILARK_BENCH_MSG_SIZE")
        .ok()
        .and_then(|v| v.parse().ok());
    for i in 0..n {
        let size = fixed.unwrap_or(match i % 50 {
            0 => 500_000,
            1..=5 => 60_000,
            _ => 12_000,
        });
        let m = message(&mut rng, i, size);
        let flags = if i % 3 == 0 { "FS" } else { "S" };
        std::fs::write(
            root.join(FOLDERS[i % 3])
                .join("cur")
                .join(format!("{}.M{i}.bench:2,{flags}", 1_700_000_000 + i)),
            &m,
        )
        .unwrap();
        bytes += m.len() as u64;
    }
    bytes
}

/// The raw baseline (run as a child): LOGIN, CREATE, then every file of every folder as
/// a pipelined `APPEND {N+}`, a reader thread counting the tagged answers.
fn raw_baseline(port: u16, user: &str, pass: &str, root: &Path) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    let mut w = std::io::BufWriter::with_capacity(1 << 20, s);
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    let cmd = |w: &mut std::io::BufWriter<TcpStream>, rd: &mut BufReader<TcpStream>, c: &str| {
        write!(w, "x {c}\r\n").unwrap();
        w.flush().unwrap();
        loop {
            let mut l = String::new();
            rd.read_line(&mut l).unwrap();
            if l.starts_with("x ") {
                return l;
            }
        }
    };
    cmd(&mut w, &mut rd, &format!("LOGIN {user} \"{pass}\""));
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for f in FOLDERS {
        if f != "INBOX" {
            cmd(&mut w, &mut rd, &format!("CREATE \"{f}\""));
        }
        for e in std::fs::read_dir(root.join(f).join("cur")).unwrap() {
            files.push((f.to_string(), e.unwrap().path()));
        }
    }
    let n = files.len();
    let reader = std::thread::spawn(move || {
        let mut done = 0;
        let mut l = String::new();
        while done < n {
            l.clear();
            if rd.read_line(&mut l).unwrap() == 0 {
                panic!("server closed the connection");
            }
            if l.starts_with('a') {
                assert!(l.contains(" OK"), "{l}");
                done += 1;
            }
        }
    });
    let mut open = String::new();
    for (i, (f, p)) in files.iter().enumerate() {
        if *f != open {
            // Appending into the selected folder is what makes Dovecot fast.
            write!(w, "s{i} SELECT \"{f}\"\r\n").unwrap();
            open = f.clone();
        }
        let b = std::fs::read(p).unwrap();
        let flags = if p.to_string_lossy().ends_with("FS") {
            "\\Flagged \\Seen"
        } else {
            "\\Seen"
        };
        write!(w, "a{i} APPEND \"{f}\" ({flags}) {{{}+}}\r\n", b.len()).unwrap();
        w.write_all(&b).unwrap();
        w.write_all(b"\r\n").unwrap();
    }
    w.flush().unwrap();
    reader.join().unwrap();
}

/// The run with the median wall time.
fn median_index(v: &[Measured]) -> usize {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by_key(|&i| v[i].wall);
    order[v.len() / 2]
}

fn count(d: &support::Dovecot, user: &str) -> u64 {
    let mut c = d.raw(user);
    let mut total = 0;
    for f in FOLDERS {
        total += c
            .status_messages(&format!("\"{f}\""))
            .unwrap_or_else(|| panic!("STATUS {f}: no count"));
    }
    c.logout();
    total
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--raw-baseline") {
        let pass = std::fs::read_to_string(&args[i + 3]).unwrap();
        raw_baseline(
            args[i + 1].parse().unwrap(),
            &args[i + 2],
            pass.trim_end(),
            Path::new(&args[i + 4]),
        );
        return;
    }
    // `cargo test --all-targets` runs this without `--bench`: a smoke run of seconds.
    let n: usize = bench_size("MAILARK_BENCH_MSGS", 10_000, 150);
    let scratch = match std::env::var_os("MAILARK_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let md = scratch.path().join("Maildir");
    let bytes = make_mail(&md, n);
    let bin = &mailark_bin();
    let ar = scratch.path().join("bench.tar.zst");
    let st = Command::new(bin)
        .args(["export", &format!("maildir:{}", md.display()), "-o"])
        .arg(&ar)
        .arg("-q")
        .status()
        .unwrap();
    assert!(st.success(), "mailark export failed");

    // The machine is shared: mailark and mbsync, the contenders that decide the target,
    // run interleaved three times, each time into fresh empty accounts; medians count.
    let runs: usize = bench_size("MAILARK_BENCH_RUNS", 3, 1).max(1);
    let mut users: Vec<String> = vec!["dave".into()];
    for r in 0..runs {
        for who in ["mk", "mb", "mn", "wk", "wb", "wr"] {
            users.push(format!("{who}{r}"));
        }
    }
    let d = support::Dovecot::start_with(support::DovecotOptions {
        users: users
            .iter()
            .map(|u| (u.to_string(), format!("{u}-pw")))
            .collect(),
        special: vec![],
        ..Default::default()
    });
    let pid = d.pid();
    // MAILARK_BENCH_TRACE=dir keeps a timed `-vv` trace of each mailark run there, to
    // see which round trips a run waited for (it slows the run: not for figures).
    let trace = std::env::var_os("MAILARK_BENCH_TRACE").map(PathBuf::from);
    let mailark_import = |port: u16, user: &str, extra: &[&str], report: &Path| {
        // A profiling wrapper (MAILARK_BENCH_WRAP) is for the default import only.
        let mut cmd = if extra.is_empty() {
            wrapped(bin)
        } else {
            Command::new(bin)
        };
        let m = measure_with_server(
            cmd.arg("import")
                .arg(&ar)
                .args([
                    "--to",
                    &format!("imaps://{user}@127.0.0.1:{port}"),
                    "--password-file",
                ])
                .arg(d.password_file(user))
                .arg("--tls-ca-file")
                .arg(d.ca_file())
                .args(["-q", "--json"])
                .args(extra)
                .args(
                    std::env::var("MAILARK_BENCH_JOBS")
                        .map(|j| vec!["--jobs".to_string(), j])
                        .unwrap_or_default(),
                )
                .args(trace.as_ref().map(|_| "-vv"))
                .stderr(match &trace {
                    Some(dir) => Stdio::from(
                        std::fs::File::create(dir.join(format!("{user}.trace"))).unwrap(),
                    ),
                    None => Stdio::inherit(),
                })
                .stdout(std::fs::File::create(report).unwrap()),
            pid,
            "imap",
        );
        assert!(m.ok, "mailark import failed");
        assert_eq!(
            count(&d, user),
            n as u64,
            "mailark import: count on the server"
        );
        m
    };
    let mbsync_push = |port: u16, user: &str| {
        let conf = scratch.path().join(format!("mbsyncrc-{user}"));
        let state = scratch.path().join(format!("mbsync-state-{user}"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(
            &conf,
            format!(
                "IMAPAccount bench\nHost localhost\nPort {port}\nUser {user}\nPassCmd \"cat {pw}\"\nSSLType IMAPS\nCertificateFile {ca}\n\n\
IMAPStore far\nAccount bench\n\n\
MaildirStore near\nPath {md}/\nInbox {md}/INBOX\nSubFolders Verbatim\n\n\
Channel push\nFar :far:\nNear :near:\nPatterns *\nCreate Far\nSync Push\nSyncState {state}/\n",
                pw = d.password_file(user).display(),
                ca = d.ca_file().display(),
                md = md.display(),
                state = state.display(),
            ),
        )
        .unwrap();
        let m = measure_with_server(
            Command::new("mbsync")
                .arg("-c")
                .arg(&conf)
                .args(["-q", "push"])
                .stdout(Stdio::null()),
            pid,
            "imap",
        );
        assert!(m.ok, "mbsync failed (Debian package isync)");
        assert_eq!(count(&d, user), n as u64, "mbsync: count on the server");
        m
    };
    let (mut mks, mut mbs, mut mns, mut reports) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        // The order rotates each round: a machine that slows down over the run must
        // not favour whoever goes first.
        for k in 0..3 {
            match (r + k) % 3 {
                0 => {
                    let report = scratch.path().join(format!("report{r}.json"));
                    mks.push(mailark_import(
                        d.imaps_port,
                        &format!("mk{r}"),
                        &[],
                        &report,
                    ));
                    reports.push(report);
                }
                1 => mbs.push(mbsync_push(d.imaps_port, &format!("mb{r}"))),
                _ => mns.push(mailark_import(
                    d.imaps_port,
                    &format!("mn{r}"),
                    &["--verify", "none"],
                    &scratch.path().join(format!("none{r}.json")),
                )),
            }
        }
    }
    let walls = |v: &[Measured]| {
        v.iter()
            .map(|m| format!("{:.2}", m.wall.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let spread = format!(
        "mailark runs (s): {}; mbsync runs (s): {}",
        walls(&mks),
        walls(&mbs)
    );
    let mid = median_index(&mks);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&reports[mid]).unwrap())
        .expect("mailark import --json");
    let phases = report["seconds"].clone();
    let mut rows: Vec<(String, Measured)> = Vec::new();
    rows.push(("mailark import (verify quick)".into(), mks.swap_remove(mid)));
    // The same without verification: what the check costs.
    let mid = median_index(&mns);
    rows.push(("mailark import --verify none".into(), mns.swap_remove(mid)));
    let mid = median_index(&mbs);
    rows.push(("mbsync push (Maildir → IMAPS)".into(), mbs.swap_remove(mid)));

    // Raw pipelined LITERAL+ APPEND baseline, plain TCP.
    let raw = |port: u16, user: &str| {
        let me = std::env::current_exe().unwrap();
        let m = measure_with_server(
            Command::new(me)
                .arg("--raw-baseline")
                .arg(port.to_string())
                .arg(user)
                .arg(d.password_file(user))
                .arg(&md)
                .stdout(Stdio::null()),
            pid,
            "imap",
        );
        assert!(m.ok, "raw baseline failed");
        assert_eq!(
            count(&d, user),
            n as u64,
            "raw baseline: count on the server"
        );
        m
    };
    rows.push((
        "raw pipelined LITERAL+ APPEND (no TLS)".into(),
        raw(d.imap_port, "dave"),
    ));

    let base = rows[0].1.wall.as_secs_f64();
    println!(
        "\nimport benchmark: {n} messages, {:.0} MiB, 3 folders, one Dovecot 2.3 (mail_fsync = never), empty accounts; each of the first three rows the median of {runs} interleaved runs\n",
        mib(bytes)
    );
    println!("| tool | wall (s) | MiB/s | client CPU (s) | Dovecot CPU (s) | peak RSS (MiB) | wall vs mailark |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, m) in &rows {
        let w = m.wall.as_secs_f64();
        println!(
            "| {name} | {w:.2} | {:.1} | {:.2} | {:.2} | {:.1} | {:.2}× |",
            mib(bytes) / w,
            m.cpu.as_secs_f64(),
            m.server_cpu.as_secs_f64(),
            m.peak_rss_kib as f64 / 1024.0,
            w / base
        );
    }
    println!("\n{spread}\nmailark import phases (s), median run: {phases}");
    let mbsync = rows[2].1.wall.as_secs_f64();
    let rss = rows[0].1.peak_rss_kib as f64 / 1024.0;
    println!(
        "\ntargets: mailark wall ≤ mbsync's: {} ({base:.2} s vs {mbsync:.2} s); peak RSS ≤ 150 MiB: {} ({rss:.1} MiB)",
        if base <= mbsync { "met" } else { "NOT met" },
        if rss <= 150.0 { "met" } else { "NOT met" },
    );

    // The same over a link with a round trip of MAILARK_BENCH_RTT_MS (default 50 ms).
    let rtt = bench_rtt();
    if rtt.is_zero() {
        return;
    }
    let imaps = DelayProxy::start(d.imaps_port, rtt);
    let imap = DelayProxy::start(d.imap_port, rtt);
    let (mut wks, mut wbs, mut wrs) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        for k in 0..3 {
            match (r + k) % 3 {
                0 => wks.push(mailark_import(
                    imaps.port,
                    &format!("wk{r}"),
                    &[],
                    &scratch.path().join(format!("wan{r}.json")),
                )),
                1 => wbs.push(mbsync_push(imaps.port, &format!("wb{r}"))),
                _ => wrs.push(raw(imap.port, &format!("wr{r}"))),
            }
        }
    }
    let wan: Vec<Measured> = [wks, wbs, wrs]
        .into_iter()
        .map(|mut v| {
            let i = median_index(&v);
            v.swap_remove(i)
        })
        .collect();
    let lan = [&rows[0].1, &rows[2].1, &rows[3].1];
    wan_table(&lan, &wan, rtt, runs);

    // `verify --against` the destination the first mailark import filled (one account,
    // read only), on loopback and over the proxy, interleaved.
    let verify_against = |port: u16| {
        let m = measure_with_server(
            Command::new(bin)
                .arg("verify")
                .arg(&ar)
                .args([
                    "--against",
                    &format!("imaps://mk0@127.0.0.1:{port}"),
                    "--password-file",
                ])
                .arg(d.password_file("mk0"))
                .arg("--tls-ca-file")
                .arg(d.ca_file())
                .args(["-q", "--json"])
                .stdout(Stdio::null()),
            pid,
            "imap",
        );
        assert!(
            m.ok,
            "mailark verify --against found a difference or failed"
        );
        m
    };
    let (mut vl, mut vw) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        vl.push(verify_against(d.imaps_port));
        vw.push(verify_against(imaps.port));
    }
    let (il, iw) = (median_index(&vl), median_index(&vw));
    latency_row(
        "mailark verify --against (the destination)",
        &vl[il],
        &vw[iw],
        rtt,
    );
}

/// Loopback and WAN side by side: the wall of each, what the latency cost, and that
/// cost in round trips.
fn wan_table(lan: &[&Measured], wan: &[Measured], rtt: std::time::Duration, runs: usize) {
    let names = [
        "mailark import (verify quick)",
        "mbsync push (Maildir → IMAPS)",
        "raw pipelined LITERAL+ APPEND (no TLS)",
    ];
    let ms = rtt.as_millis();
    println!("\nover a {ms} ms round trip (delay proxy), median of {runs}:\n");
    latency_table_head("tool", rtt);
    for ((name, l), w) in names.iter().zip(lan).zip(wan) {
        latency_row(name, l, w, rtt);
    }
}
