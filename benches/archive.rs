//! Archive benchmark (issue: archive format and local sources), peers measured in the
//! same run:
//! - write throughput: `mailark export maildir:` vs `tar --zstd -cf` of the same Maildir
//!   (zstd level 3 both; mailark also hashes and indexes every message);
//! - peak RSS of the export, which must not grow with the mailbox;
//! - `mailark ls` latency on the resulting archive (index frame only) vs `tar --zstd -tf`.
//!
//! Run: `cargo bench --bench archive` (MAILARK_BENCH_MB sets the mailbox size, default
//! 2048; MAILARK_BENCH_DIR the scratch directory, default a temp dir).

mod common;
use common::*;

use std::process::{Command, Stdio};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --all-targets` runs this binary without `--bench`: a small smoke run
    // then proves the benchmark still works without taking CI's time.
    let mb: u64 = bench_size("MAILARK_BENCH_MB", 2048, 8);
    let scratch = match std::env::var_os("MAILARK_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let md = scratch.path().join("Maildir");
    let bin = env!("CARGO_BIN_EXE_mailark");
    let half = mb / 2;
    let mut rows = Vec::new();
    for size_mb in [half, mb] {
        let _ = std::fs::remove_dir_all(&md);
        let (n, bytes) = make_maildir(&md, size_mb << 20);
        // Warm the page cache for both contenders alike.
        let _ = Command::new("tar")
            .arg("-cf")
            .arg("/dev/null")
            .arg(&md)
            .status();
        let ar = scratch.path().join(format!("bench-{size_mb}.tar.zst"));
        let _ = std::fs::remove_file(&ar);
        let mk = measure(
            Command::new(bin)
                .args([
                    "export",
                    &format!("maildir:{}", md.display()),
                    "-o",
                    ar.to_str().unwrap(),
                    "-q",
                ])
                .stdout(Stdio::null()),
        );
        assert!(mk.ok, "mailark export failed");
        let tz = scratch.path().join("peer.tar.zst");
        let _ = std::fs::remove_file(&tz);
        let tr = measure(
            Command::new("tar")
                .arg("--zstd")
                .arg("-cf")
                .arg(&tz)
                .arg("-C")
                .arg(&md)
                .arg(".")
                .env("ZSTD_CLEVEL", "3")
                .env("ZSTD_NBTHREADS", "0"),
        );
        assert!(tr.ok, "tar --zstd failed");
        let ls: Vec<_> = (0..5)
            .map(|_| {
                measure(
                    Command::new(bin)
                        .arg("ls")
                        .arg(&ar)
                        .arg("--json")
                        .stdout(Stdio::null()),
                )
            })
            .collect();
        let mut ls_ms: Vec<f64> = ls.iter().map(|m| m.wall.as_secs_f64() * 1000.0).collect();
        ls_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let tlist = measure(
            Command::new("tar")
                .arg("--zstd")
                .arg("-tf")
                .arg(&ar)
                .stdout(Stdio::null()),
        );
        let ar_len = std::fs::metadata(&ar).unwrap().len();
        let tz_len = std::fs::metadata(&tz).unwrap().len();
        rows.push(format!(
            "| {:>6.0} MiB | {n:>6} | {:>6.1} MB/s ({:.2} s) | {:>6.1} MB/s ({:.2} s) | {:>5.2} | {:>6.1} MiB | {:>6.1} MiB / {:.1} MiB | {:>6.1} ms | {:>7.0} ms |",
            mib(bytes),
            bytes as f64 / 1e6 / mk.wall.as_secs_f64(),
            mk.wall.as_secs_f64(),
            bytes as f64 / 1e6 / tr.wall.as_secs_f64(),
            tr.wall.as_secs_f64(),
            tr.wall.as_secs_f64() / mk.wall.as_secs_f64(),
            mk.peak_rss_kib as f64 / 1024.0,
            mib(ar_len),
            mib(tz_len),
            ls_ms[2],
            tlist.wall.as_secs_f64() * 1000.0,
        ));
        let _ = std::fs::remove_file(&tz);
    }
    println!(
        "\n## mailark archive benchmark ({} cores)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| mailbox | msgs | mailark export | tar --zstd -cf | speed ratio (mailark/tar) | export peak RSS | archive / tar size | mailark ls (median of 5) | tar --zstd -tf |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
