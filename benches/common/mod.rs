//! Bench helpers: realistic synthetic mail, running a command while measuring its wall
//! time and peak RSS (wait4 rusage), and a small table printer.
#![allow(dead_code)]

mod delay;
pub use delay::*;
#[path = "../../tests/common/seeded.rs"]
mod seeded;
pub use seeded::Seeded;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Measured {
    pub wall: Duration,
    pub peak_rss_kib: i64,
    /// The child's user + system CPU time (its own, not the server's).
    pub cpu: Duration,
    pub ok: bool,
    /// CPU the server's processes used meanwhile (see [`measure_with_server`]), else zero.
    pub server_cpu: Duration,
}

/// Runs `cmd` to completion, returning wall time and the child's peak RSS.
pub fn measure(cmd: &mut Command) -> Measured {
    let start = Instant::now();
    reap(cmd.spawn().expect("spawn"), start)
}

/// Waits for `child`, started at `start`: wall time, and from `wait4` the child's own
/// peak RSS and CPU time.
pub fn reap(child: std::process::Child, start: Instant) -> Measured {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // wait4 reaps the child and reports its own resource use, not ours.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4 failed");
    std::mem::forget(child);
    Measured {
        wall: start.elapsed(),
        peak_rss_kib: ru.ru_maxrss,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        server_cpu: Duration::ZERO,
    }
}

/// [`measure`], also reading the CPU time the server's process tree (master `pid`)
/// used over the run, once its `session` processes (Dovecot's `imap`, `pop3`) ended.
pub fn measure_with_server(cmd: &mut Command, pid: u32, session: &str) -> Measured {
    let before = tree_cpu(pid);
    let mut m = measure(cmd);
    wait_gone(pid, session, Duration::from_secs(10));
    m.server_cpu = tree_cpu(pid).saturating_sub(before);
    m
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

const WORDS: &[&str] = &[
    "meeting",
    "invoice",
    "schedule",
    "project",
    "report",
    "please",
    "review",
    "attached",
    "thanks",
    "regards",
    "会議",
    "資料",
    "確認",
    "お願いします",
    "予定",
    "報告",
    "見積",
    "請求書",
    "よろしく",
    "担当",
];

/// One message of roughly `size` bytes: headers, text, and (for larger sizes) a base64
/// attachment of noise, as real mailboxes mix them.
pub fn message(rng: &mut Seeded, i: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Sender {i} <s{i}@example.co.jp>\r\nTo: team@example.co.jp\r\nSubject: {} {i}\r\nDate: Mon, 01 Jan 2024 09:00:00 +0900\r\nMessage-ID: <{i}.{}@bench.invalid>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n",
        WORDS[i % WORDS.len()],
        rng.next()
    )
    .into_bytes();
    let text_len = (size / 3).max(200);
    while m.len() < text_len {
        for _ in 0..12 {
            m.extend_from_slice(WORDS[(rng.next() % WORDS.len() as u64) as usize].as_bytes());
            m.push(b' ');
        }
        m.extend_from_slice(b"\r\n");
    }
    if size > text_len + 200 {
        m.extend_from_slice(b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        while m.len() < size {
            for _ in 0..19 {
                let r = rng.next();
                for k in 0..4 {
                    m.push(B64[((r >> (k * 6)) & 63) as usize]);
                }
            }
            m.extend_from_slice(b"\r\n");
        }
    }
    m.extend_from_slice(b"--b--\r\n");
    m
}

/// Writes a Maildir (LAYOUT=fs: INBOX, Sent, Archive/2023) of about `total` bytes.
/// Returns (messages, bytes). Sizes follow a mix: many small, some medium, few large.
pub fn make_maildir(root: &Path, total: u64) -> (usize, u64) {
    let folders = ["INBOX", "Sent", "Archive/2023"];
    for f in folders {
        for s in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(root.join(f).join(s)).unwrap();
        }
    }
    let mut rng = Seeded(0x2545F4914F6CDD1D);
    let (mut n, mut bytes) = (0usize, 0u64);
    while bytes < total {
        let size = match n % 20 {
            0 => 2_000_000,
            1..=4 => 120_000,
            _ => 8_000,
        };
        let m = message(&mut rng, n, size);
        let f = folders[n % folders.len()];
        std::fs::write(
            root.join(f)
                .join("cur")
                .join(format!("{}.M{n}.bench:2,S", 1_700_000_000 + n)),
            &m,
        )
        .unwrap();
        bytes += m.len() as u64;
        n += 1;
    }
    (n, bytes)
}

pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// True under `cargo bench` (which passes `--bench`); false when `cargo test
/// --all-targets` runs the benchmark binary as a smoke test.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A command running `bin`, prefixed by `MAILARK_BENCH_WRAP` when set (for profiling
/// runs, e.g. "perf record -g -o run.data --" or "/usr/bin/time -v").
pub fn wrapped(bin: &str) -> Command {
    let wrap: Vec<String> = std::env::var("MAILARK_BENCH_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    match wrap.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// The benchmark's size: `var` (or `full`) under `cargo bench`, `smoke` when `cargo test
/// --all-targets` runs the binary to prove it still works.
pub fn bench_size<T: std::str::FromStr>(var: &str, full: T, smoke: T) -> T {
    if !bench_mode() {
        return smoke;
    }
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(full)
}

/// The mailark binary a benchmark runs: this build's, or `MAILARK_BENCH_BIN` (to measure
/// an older build against the same peers, e.g. before and after a change).
pub fn mailark_bin() -> String {
    std::env::var("MAILARK_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mailark").into())
}

/// Messages in a Maildir tree: the files in its `cur/` and `new/` directories.
pub fn count_files(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type().is_file()
                && e.path()
                    .parent()
                    .and_then(|p| p.file_name())
                    .is_some_and(|n| n == "cur" || n == "new")
        })
        .count()
}

/// The column heads of a loopback-against-RTT table (its title is the caller's).
pub fn latency_table_head(first: &str, rtt: Duration) {
    let ms = rtt.as_millis();
    println!("| {first} | loopback (s) | RTT {ms} ms (s) | cost of the latency (s) | in round trips | client CPU at RTT (s) | Dovecot CPU at RTT (s) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
}

/// One row of that table: the wall on loopback (`l`) and at `rtt` (`w`), what the
/// latency cost, that cost in round trips, and the CPU of client and server at RTT.
pub fn latency_row(name: &str, l: &Measured, w: &Measured, rtt: Duration) {
    let cost = w.wall.as_secs_f64() - l.wall.as_secs_f64();
    println!(
        "| {name} | {:.2} | {:.2} | {cost:+.2} | {:.0} | {:.2} | {:.2} |",
        l.wall.as_secs_f64(),
        w.wall.as_secs_f64(),
        cost / rtt.as_secs_f64(),
        w.cpu.as_secs_f64(),
        w.server_cpu.as_secs_f64()
    );
}
