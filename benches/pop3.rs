//! POP3 export benchmark (issue 4), peers measured in the same run against the same
//! local Dovecot (POP3S, the harness's self-signed CA):
//! - `mailark export pop3s://…` (pipelined whole-message TOP, which Dovecot does not
//!   record as reading the way it does RETR; unstuffing, hashing, zstd, index);
//! - a raw Python `poplib` RETR loop over TLS (`_MAXLINE` raised), keeping nothing: the
//!   floor for one POP3 connection in an interpreted client;
//! - `getmail6` delivering to a Maildir (run as nobody: getmail refuses root);
//! - `fetchmail` delivering through a one-line shell MDA into a Maildir.
//!
//! Dovecot's caches are warmed first (one untimed poplib pass, which also sets the
//! `\Seen` flag Dovecot records for RETR, so no timed run of the RETR peers pays for that).
//!
//! mailark and the poplib loop run three times, interleaved, and the median is reported
//! (the machine is shared); getmail and fetchmail, far slower, run once.
//!
//! Run: `cargo bench --bench pop3` (MAILARK_BENCH_POP3_MSGS sets the count, default
//! 5000). Under `cargo test --all-targets` it is a smoke run of a few dozen messages.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

const POPLIB: &str = r#"
import poplib, ssl, sys
poplib._MAXLINE = 1 << 30
port, user, pwfile, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
p = poplib.POP3_SSL("127.0.0.1", port, context=ctx)
p.user(user)
p.pass_(open(pwfile, encoding="utf-8").read().rstrip("\n"))
n, _ = p.stat()
total = 0
for i in range(1, n + 1):
    _, lines, octets = p.retr(i)
    total += octets
p.sock.close()
print(n, total)
"#;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = bench_mode();
    let count: usize = bench_size("MAILARK_BENCH_POP3_MSGS", 5000, 40);
    let d = support::Dovecot::start();
    let scratch = tempfile::tempdir().unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut rng = Seeded(0x9E3779B97F4A7C15);
    let mut bytes = 0u64;
    // Seeded in small batches: this process's own size would otherwise be inherited
    // into every child's peak RSS as wait4 reports it.
    for start in (0..count).step_by(250) {
        let batch: Vec<(Vec<u8>, &str, i64)> = (start..(start + 250).min(count))
            .map(|i| {
                let size = match i % 20 {
                    0 => 200_000,
                    1..=4 => 50_000,
                    _ => 8_000,
                };
                let m = message(&mut rng, i, size);
                bytes += m.len() as u64;
                (m, "", 1_700_000_000 + i as i64)
            })
            .collect();
        d.seed_maildir("alice", "INBOX", &batch);
    }
    let pw = d.password_file("alice");
    let ca = d.ca_file();
    let script = scratch.path().join("poplib_loop.py");
    std::fs::write(&script, POPLIB).unwrap();
    let poplib = |port: u16| {
        let mut c = Command::new("python3");
        c.arg(&script)
            .arg(port.to_string())
            .arg("alice")
            .arg(&pw)
            .arg(&ca)
            .stdout(Stdio::piped());
        c
    };
    // Warm-up: Dovecot builds its index and caches, and records \Seen once.
    let warm = poplib(d.pop3s_port).output().expect("python3");
    assert!(warm.status.success(), "poplib warm-up failed");
    let seen = String::from_utf8_lossy(&warm.stdout);
    assert_eq!(
        seen.split_whitespace().next(),
        Some(count.to_string().as_str())
    );

    let bin = &mailark_bin();
    let out = scratch.path().join("pop3.tar.zst");
    let mailark = |port: u16| {
        let _ = std::fs::remove_file(&out);
        let m = measure_with_server(
            Command::new(bin)
                .args(["export", &format!("pop3s://alice@127.0.0.1:{port}"), "-o"])
                .arg(&out)
                .arg("--password-file")
                .arg(&pw)
                .arg("--tls-ca-file")
                .arg(&ca)
                .arg("-q")
                .stdout(Stdio::null()),
            d.pid(),
            "pop3",
        );
        assert!(m.ok, "mailark export failed");
        let archived = mailark::archive::Archive::open(&out)
            .unwrap()
            .index
            .messages
            .len();
        assert_eq!(archived, count, "mailark archived {archived} of {count}");
        m
    };
    // The machine is shared: mailark and the raw loop run interleaved, three times each,
    // and the median counts.
    let runs: usize = bench_size("MAILARK_BENCH_RUNS", 3, 1).max(1);
    let (mut mks, mut pys) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        mks.push(mailark(d.pop3s_port));
        let py = measure_with_server(poplib(d.pop3s_port).stdout(Stdio::null()), d.pid(), "pop3");
        assert!(py.ok, "poplib loop failed");
        pys.push(py);
    }
    mks.sort_by_key(|m| m.wall);
    pys.sort_by_key(|m| m.wall);
    let (mk, py) = (mks.swap_remove(runs / 2), pys.swap_remove(runs / 2));

    // getmail and fetchmail take ~30 s each at full size; tuning runs may leave them out
    // (and the lock-step poplib loop at RTT, which takes a round trip per message).
    let slow = std::env::var_os("MAILARK_BENCH_NO_SLOW_PEERS").is_none();
    let left_out = "left out (MAILARK_BENCH_NO_SLOW_PEERS)";
    let getmail = if slow {
        run_getmail(&d, scratch.path(), count)
    } else {
        Err(left_out.to_string())
    };
    let fetchmail = if slow {
        run_fetchmail(&d, scratch.path(), count)
    } else {
        Err(left_out.to_string())
    };

    println!(
        "\n## POP3 export benchmark: {count} messages, {:.1} MiB, Dovecot POP3S on 127.0.0.1 ({} cores)\n",
        mib(bytes),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| client | wall{} | throughput | wall vs mailark | peak RSS |",
        if runs > 1 {
            format!(" (median of {runs}; getmail, fetchmail once)")
        } else {
            String::new()
        }
    );
    println!("|---|---|---|---|---|");
    let row = |name: &str, m: &Measured| {
        println!(
            "| {name} | {:.2} s | {:.1} MB/s | {:.2}× | {:.1} MiB |",
            m.wall.as_secs_f64(),
            bytes as f64 / 1e6 / m.wall.as_secs_f64(),
            m.wall.as_secs_f64() / mk.wall.as_secs_f64(),
            m.peak_rss_kib as f64 / 1024.0
        )
    };
    row(
        "mailark export pop3s:// (TOP, unstuff, SHA-256, zstd -3, index)",
        &mk,
    );
    row("Python poplib RETR loop (keeps nothing)", &py);
    match &getmail {
        Ok((m, 0)) => row("getmail6 → Maildir (as nobody)", m),
        Ok((m, n)) => row(
            &format!(
                "getmail6 → Maildir (as nobody; first complete run after {n} attempt(s) lost to its own child-wait race)"
            ),
            m,
        ),
        Err(why) => println!("| getmail6 | failed: {why} | | | |"),
    }
    match &fetchmail {
        Ok(m) => row("fetchmail → shell MDA → Maildir", m),
        Err(why) => println!("| fetchmail | failed: {why} | | | |"),
    }
    println!(
        "\nArchive: {:.1} MiB for {:.1} MiB of mail.",
        mib(std::fs::metadata(&out).unwrap().len()),
        mib(bytes)
    );
    big_message(&d, scratch.path(), if full { 200 } else { 4 });
    wan(&d, &mk, &py, runs, &mailark, &poplib);
    println!("\nReproduce: `cargo bench --bench pop3`.");
}

/// mailark (median of `runs`) and the poplib loop (once: lock-step RETR pays a round
/// trip per message) over a link with a round trip of MAILARK_BENCH_RTT_MS, beside
/// their loopback figures. getmail and fetchmail, lock-step too, are left out here.
fn wan(
    d: &support::Dovecot,
    mk: &Measured,
    py: &Measured,
    runs: usize,
    mailark: &dyn Fn(u16) -> Measured,
    poplib: &dyn Fn(u16) -> Command,
) {
    let rtt = bench_rtt();
    if rtt.is_zero() {
        return;
    }
    let proxy = DelayProxy::start(d.pop3s_port, rtt);
    let mut wks: Vec<Measured> = (0..runs).map(|_| mailark(proxy.port)).collect();
    wks.sort_by_key(|m| m.wall);
    let wk = wks.swap_remove(runs / 2);
    let wp = if std::env::var_os("MAILARK_BENCH_NO_SLOW_PEERS").is_none() {
        let wp = measure_with_server(poplib(proxy.port).stdout(Stdio::null()), d.pid(), "pop3");
        assert!(wp.ok, "poplib loop over the delay proxy failed");
        Some(wp)
    } else {
        None
    };
    let ms = rtt.as_millis();
    println!("\nOver a {ms} ms round trip (delay proxy); mailark median of {runs}, poplib once:\n");
    latency_table_head("client", rtt);
    for (name, l, w) in [
        ("mailark export pop3s://", mk, Some(&wk)),
        ("Python poplib RETR loop", py, wp.as_ref()),
    ] {
        let Some(w) = w else {
            println!(
                "| {name} | {:.2} | left out (MAILARK_BENCH_NO_SLOW_PEERS) | | | | |",
                l.wall.as_secs_f64()
            );
            continue;
        };
        latency_row(name, l, w, rtt);
    }
}

/// Memory is bounded by the largest message, not the mailbox: one message of `mb` MiB
/// (dot-stuffed lines throughout) in bob's maildrop, exported alone.
fn big_message(d: &support::Dovecot, scratch: &Path, mb: usize) {
    let mut m = b"Subject: one big message\nContent-Type: text/plain\n\n".to_vec();
    let mut rng = Seeded(7);
    while m.len() < mb << 20 {
        if rng.next() % 4 == 0 {
            m.push(b'.');
        }
        for _ in 0..18 {
            let r = rng.next();
            for k in 0..4 {
                m.push(b'a' + ((r >> (k * 8)) % 26) as u8);
            }
        }
        m.push(b'\n');
    }
    let size = m.len() as u64;
    d.seed_maildir("bob", "INBOX", &[(m, "", 1_700_000_000)]);
    let out = scratch.join("big.tar.zst");
    let mk = measure(
        Command::new(mailark_bin())
            .args(["export", &d.pop3s_url("bob"), "-o"])
            .arg(&out)
            .arg("--password-file")
            .arg(d.password_file("bob"))
            .arg("--tls-ca-file")
            .arg(d.ca_file())
            .arg("-q")
            .stdout(Stdio::null()),
    );
    assert!(mk.ok, "mailark export of the big message failed");
    let rec = &mailark::archive::Archive::open(&out)
        .unwrap()
        .index
        .messages
        .get(0);
    // Dovecot serves CRLF: one more byte per line than stored.
    assert!(rec.size > size, "archived {} of {size} bytes", rec.size);
    println!(
        "\nOne {:.0} MiB message: mailark export {:.2} s, peak RSS {:.1} MiB ({:.2}× the message).",
        mib(rec.size),
        mk.wall.as_secs_f64(),
        mk.peak_rss_kib as f64 / 1024.0,
        mk.peak_rss_kib as f64 * 1024.0 / rec.size as f64
    );
}

/// getmail6 into a Maildir owned by nobody; its own rc file holds the password (0600,
/// in the bench's temp dir), as getmail has no other non-interactive way. getmail has a
/// lost-wakeup race when it waits for its delivery child ("waiting child pid N timed
/// out" after its socket `timeout`), more likely on a loaded machine; when it strikes,
/// the attempt is thrown away and getmail runs again from scratch (up to 3 attempts).
/// Returns the first complete run and the number of failed attempts before it.
fn run_getmail(
    d: &support::Dovecot,
    scratch: &Path,
    count: usize,
) -> Result<(Measured, u32), String> {
    if !Path::new("/usr/bin/getmail").exists() {
        return Err("/usr/bin/getmail missing (Debian getmail6)".into());
    }
    let mut last_err = String::new();
    for failed in 0..3 {
        let home = scratch.join("getmail");
        let _ = std::fs::remove_dir_all(&home);
        let md = home.join("Maildir");
        for s in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(md.join(s)).unwrap();
        }
        let rc = home.join("getmailrc");
        std::fs::write(
            &rc,
            format!(
                "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\nport = {}\n\
                 username = alice\npassword = {}\nca_certs = {}\ntimeout = 20\n\n\
                 [destination]\ntype = Maildir\npath = {}/\n\n\
                 [options]\nread_all = true\ndelete = false\nverbose = 0\n",
                d.pop3s_port,
                d.password("alice"),
                d.ca_file().display(),
                md.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
        support::dovecot::chown_nobody(&home);
        let errf = scratch.join("getmail.stderr");
        let m = measure(
            Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--reset-env",
                    "getmail",
                    "--rcfile",
                ])
                .arg(&rc)
                .arg("--getmaildir")
                .arg(&home)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&errf).unwrap()),
        );
        let got = std::fs::read_dir(md.join("new")).map_or(0, |r| r.count());
        if m.ok && got == count {
            return Ok((m, failed));
        }
        let err = std::fs::read_to_string(&errf).unwrap_or_default();
        last_err = format!(
            "delivered {got} of {count}: {}",
            err.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
        );
        if !err.contains("timed out") {
            break;
        }
    }
    Err(last_err)
}

/// fetchmail handing each message to a one-line shell MDA that writes a Maildir file
/// (fetchmail's usual local delivery without an SMTP server).
fn run_fetchmail(d: &support::Dovecot, scratch: &Path, count: usize) -> Result<Measured, String> {
    if !Path::new("/usr/bin/fetchmail").exists() {
        return Err("/usr/bin/fetchmail missing (Debian fetchmail)".into());
    }
    let home = scratch.join("fetchmail");
    let md = home.join("Maildir");
    for s in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(s)).unwrap();
    }
    let rc = home.join("fetchmailrc");
    // The certificate names localhost (fetchmail checks names, not IP addresses).
    std::fs::write(
        &rc,
        format!(
            "set no bouncemail\n\
             poll localhost protocol POP3 port {port}\n\
             \tuser \"alice\" there with password \"{pw}\" is root here\n\
             \tssl sslcertck sslcertfile \"{ca}\" keep fetchall\n\
             \tmda \"/bin/sh -c 'cat > {md}/tmp/$$ && mv {md}/tmp/$$ {md}/new/$$.$(date +%s%N)'\"\n",
            port = d.pop3s_port,
            pw = d.password("alice"),
            ca = d.ca_file().display(),
            md = md.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let errf = home.join("stderr");
    let m = measure(
        Command::new("fetchmail")
            .arg("-f")
            .arg(&rc)
            .args(["--nodetach", "--nosyslog", "-s"])
            .env("FETCHMAILHOME", &home)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&errf).unwrap()),
    );
    let got = std::fs::read_dir(md.join("new")).map_or(0, |r| r.count());
    if !m.ok || got != count {
        let err = std::fs::read_to_string(&errf).unwrap_or_default();
        return Err(format!(
            "delivered {got} of {count}: {}",
            err.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
        ));
    }
    Ok(m)
}
