//! Migration batch benchmark (issue 8): 20 accounts moved from one Dovecot to another
//! (both `mail_fsync = never`, IMAPS both sides), measured three ways in the same run,
//! each into fresh empty destination accounts:
//! - `mailark migrate --accounts CSV --jobs 4` (the default) and `--jobs 10`;
//! - the same 20 accounts one after another as single-account `mailark migrate --from
//!   --to` runs, whose wall times are summed (what a shell loop over accounts costs).
//!
//! Wall time, client CPU and peak RSS of each. Run: `cargo bench --bench migrate`
//! (MAILARK_BENCH_ACCOUNTS, default 20; MAILARK_BENCH_MSGS per account, default 400;
//! MAILARK_BENCH_DIR the scratch directory).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One account's Maildir: `n` messages, mostly small, in three folders.
fn seed(root: &Path, n: usize, seed: u64) -> u64 {
    let folders = ["INBOX", "Sent", "Archive/2023"];
    for f in folders {
        for s in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(root.join(f).join(s)).unwrap();
        }
    }
    let mut rng = Seeded(seed | 1);
    let mut bytes = 0;
    for i in 0..n {
        let size = if i % 40 == 0 { 200_000 } else { 10_000 };
        let m = message(&mut rng, i, size);
        std::fs::write(
            root.join(folders[i % 3])
                .join("cur")
                .join(format!("{}.M{i}.bench:2,S", 1_700_000_000 + i)),
            &m,
        )
        .unwrap();
        bytes += m.len() as u64;
    }
    bytes
}

fn main() {
    let accounts: usize = bench_size("MAILARK_BENCH_ACCOUNTS", 20, 3);
    let per: usize = bench_size("MAILARK_BENCH_MSGS", 400, 20);
    let scratch = match std::env::var_os("MAILARK_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let src_users: Vec<String> = (0..accounts).map(|i| format!("u{i:02}")).collect();
    let ways = ["j4", "j10", "seq"];
    let old = support::Dovecot::start_with(support::DovecotOptions {
        users: src_users
            .iter()
            .map(|u| (u.clone(), format!("{u}-old")))
            .collect(),
        special: vec![],
        ..Default::default()
    });
    let new = support::Dovecot::start_with(support::DovecotOptions {
        users: ways
            .iter()
            .flat_map(|w| src_users.iter().map(move |u| format!("{w}{u}")))
            .map(|u| (u.clone(), format!("{u}-new")))
            .collect(),
        special: vec![],
        ..Default::default()
    });
    let mut bytes = 0;
    for (i, u) in src_users.iter().enumerate() {
        bytes += seed(&old.maildir(u), per, 0x9E37_79B9 + i as u64);
    }
    support::dovecot::chown_nobody(old.maildir(&src_users[0]).parent().unwrap());
    let bin = env!("CARGO_BIN_EXE_mailark");
    let csv = |way: &str| {
        let mut s = String::from(
            "name,source,destination,source_password_file,destination_password_file\n",
        );
        for u in &src_users {
            let d = format!("{way}{u}");
            s.push_str(&format!(
                "{u},{},{},{},{}\n",
                old.imaps_url(u),
                new.imaps_url(&d),
                old.password_file(u).display(),
                new.password_file(&d).display()
            ));
        }
        let p = scratch.path().join(format!("{way}.csv"));
        std::fs::write(&p, s).unwrap();
        p
    };
    let common_args = |c: &mut Command| {
        c.arg("--from-tls-ca-file")
            .arg(old.ca_file())
            .arg("--to-tls-ca-file")
            .arg(new.ca_file())
            .arg("-q")
            .stdout(Stdio::null());
    };
    let batch = |way: &str, jobs: &str| {
        let mut c = wrapped(bin);
        c.args(["migrate", "--accounts"])
            .arg(csv(way))
            .arg("--dir")
            .arg(scratch.path().join(way))
            .args(["--jobs", jobs]);
        common_args(&mut c);
        let m = measure(&mut c);
        assert!(m.ok, "mailark migrate --jobs {jobs} failed");
        m
    };
    let j4 = batch("j4", "4");
    let j10 = batch("j10", "10");
    let (mut seq_wall, mut seq_cpu, mut seq_rss) = (Duration::ZERO, Duration::ZERO, 0);
    for u in &src_users {
        let d = format!("seq{u}");
        let mut c = Command::new(bin);
        c.args([
            "migrate",
            "--from",
            &old.imaps_url(u),
            "--to",
            &new.imaps_url(&d),
        ])
        .arg("--from-password-file")
        .arg(old.password_file(u))
        .arg("--to-password-file")
        .arg(new.password_file(&d))
        .arg("--dir")
        .arg(scratch.path().join("seq"));
        common_args(&mut c);
        let m = measure(&mut c);
        assert!(m.ok, "single-account migrate of {u} failed");
        seq_wall += m.wall;
        seq_cpu += m.cpu;
        seq_rss = seq_rss.max(m.peak_rss_kib);
    }
    // Every way moved every message.
    for w in ways {
        for u in &src_users {
            let mut c = new.raw(&format!("{w}{u}"));
            let n: usize = ["INBOX", "Sent", "Archive/2023"]
                .iter()
                .map(|f| c.fetch_all(f).len())
                .sum();
            assert_eq!(n, per, "{w}{u}: messages on the destination");
        }
    }
    let base = seq_wall.as_secs_f64();
    println!(
        "\nmigrate benchmark: {accounts} accounts × {per} messages ({:.0} MiB in all), Dovecot → Dovecot over IMAPS, one pass (export, import, verify)\n",
        mib(bytes)
    );
    println!("| way | wall (s) | msgs/s | client CPU (s) | peak RSS (MiB) | wall vs sequential |");
    println!("|---|---:|---:|---:|---:|---:|");
    let total = (accounts * per) as f64;
    for (name, wall, cpu, rss) in [
        (
            "migrate --accounts, --jobs 4",
            j4.wall,
            j4.cpu,
            j4.peak_rss_kib,
        ),
        (
            "migrate --accounts, --jobs 10",
            j10.wall,
            j10.cpu,
            j10.peak_rss_kib,
        ),
        (
            "single-account runs one after another (sum)",
            seq_wall,
            seq_cpu,
            seq_rss,
        ),
    ] {
        let w = wall.as_secs_f64();
        println!(
            "| {name} | {w:.2} | {:.0} | {:.2} | {:.1} | {:.2}× |",
            total / w,
            cpu.as_secs_f64(),
            rss as f64 / 1024.0,
            w / base
        );
    }
}
