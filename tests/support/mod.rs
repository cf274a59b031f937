//! Test support for the network tests: a real Dovecot (`dovecot`) and a real Cyrus
//! (`cyrus`) started per test in a temp dir, a fault-injecting proxy (`proxy`), and a tiny
//! synchronous IMAP client (`raw`) for seeding and inspecting a server without any of
//! mailark's own code. What the server harnesses share (ports, certificate, stopping a
//! server by its PID) is here.
#![allow(dead_code)]

pub mod cyrus;
pub mod dovecot;
pub mod proxy;
pub mod raw;
pub mod stall;

#[allow(unused_imports)]
pub use dovecot::{Dovecot, DovecotOptions};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 right now (the harnesses retry if it is taken meanwhile).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A self-signed certificate for `localhost` and 127.0.0.1 (`cert.pem`, `key.pem` in
/// `root`), marked as a CA so clients can trust it with `--tls-ca-file`.
pub fn make_cert(root: &Path) {
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
        ])
        .arg(root.join("key.pem"))
        .arg("-out")
        .arg(root.join("cert.pem"))
        .output()
        .expect("openssl (Debian package openssl) to make a test certificate");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The servers read the key as an unprivileged user.
    std::fs::set_permissions(root.join("key.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Whether our child `pid` still runs (reaps it if it ended).
/// `user`'s password in a server harness's user list.
pub fn password_of<'a>(users: &'a [(String, String)], user: &str) -> &'a str {
    &users.iter().find(|(u, _)| u == user).expect("known user").1
}

/// Writes `user`'s password and a trailing newline to `dir/USER.pw`, for
/// `--password-file`.
pub fn password_file_in(dir: &Path, users: &[(String, String)], user: &str) -> PathBuf {
    let p = dir.join(format!("{user}.pw"));
    std::fs::write(&p, format!("{}\n", password_of(users, user))).unwrap();
    p
}

pub fn child_alive(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on our own child.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) == 0 }
}

/// Stops a server we started: SIGTERM, up to 10 s to exit, then SIGKILL; always reaped.
pub fn stop_child(pid: u32) {
    // SAFETY: signalling and reaping our own child by PID.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while child_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid as i32, &mut status, 0);
    }
}
