//! Test support for the network tests: a real Dovecot (`dovecot`), Cyrus (`cyrus`) and
//! Courier (`courier`) started per test in a temp dir, a fault-injecting proxy
//! (`proxy`), and a tiny synchronous IMAP client (`raw`) for seeding and inspecting a
//! server without any of mailark's own code. What the server harnesses share (ports, certificate, stopping a
//! server by its PID, unpacking Debian packages that cannot be installed) is here.
#![allow(dead_code)]

pub mod courier;
pub mod cyrus;
pub mod dovecot;
pub mod hide;
pub mod proxy;
pub mod raw;
pub mod stall;
pub mod withhold;

#[allow(unused_imports)]
pub use dovecot::{Dovecot, DovecotOptions};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The accepting half of the test proxies: listens on a free port of 127.0.0.1 and,
/// for each client, connects to 127.0.0.1:`target` and hands both streams to `each`
/// (which starts the threads that carry the bytes). A client the server will not take
/// is dropped. Returns the port.
pub fn relay(
    target: u16,
    each: impl Fn(std::net::TcpStream, std::net::TcpStream) + Send + 'static,
) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            each(client, server);
        }
    });
    port
}

/// A port free on 127.0.0.1 right now, and never handed out before in this process.
/// The kernel may give a port just released to the next `bind(0)`: two harnesses of
/// one test binary starting at once were both given 45511, and the Cyrus that lost
/// the race was tested through the Dovecot that won it ("TLS handshake failed: wrong
/// version number"). Another process may still take the port meanwhile; each
/// harness checks that its own server listens ([`listens_in`]).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The processes whose `/proc/PID/stat` field `which` (after the command name: 0
/// state, 1 ppid, 2 process group, 3 session) is `id`, zombies left out.
pub fn processes_with(which: usize, id: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if f.len() > which && f[which].parse() == Ok(id) && f[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

/// Whether one of `pids` holds the socket listening on 127.0.0.1:`port`: a connect
/// alone would also reach whoever else took the port since [`free_port`].
pub fn listens_in(pids: &[i32], port: u16) -> bool {
    // /proc/net/tcp: "sl local rem st ... uid timeout inode"; 0100007F is 127.0.0.1,
    // state 0A is LISTEN.
    let want = format!("0100007F:{port:04X}");
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1] == want && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    pids.iter().any(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
            })
        })
    })
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

/// `target/DIR/root`: Debian packages that conflict with the installed Dovecot, fetched
/// with `apt-get download` into `target/DIR` (scripts/test.sh does it beforehand) and
/// unpacked there, never installed. `marker` (a path inside the root) says the unpacking
/// is complete.
pub fn unpacked_debs(dir: &str, debs: &[&str], marker: &str) -> PathBuf {
    use std::process::Command;
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(dir);
    let root = base.join("root");
    if root.join(marker).exists() {
        return root;
    }
    // Several test binaries may race here: unpack into a private dir, then rename.
    std::fs::create_dir_all(&base).unwrap();
    let have_debs = |dir: &Path| {
        debs.iter().all(|d| {
            std::fs::read_dir(dir).is_ok_and(|rd| {
                rd.flatten().any(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(&format!("{d}_")) && n.ends_with(".deb")
                })
            })
        })
    };
    if !have_debs(&base) {
        let out = Command::new("apt-get")
            .arg("download")
            .args(debs)
            .current_dir(&base)
            .output()
            .expect("apt-get (Debian) to download packages");
        assert!(
            out.status.success() && have_debs(&base),
            "apt-get download {debs:?} failed (run scripts/test.sh, which fetches them): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("unpack.")
        .tempdir_in(&base)
        .unwrap();
    for e in std::fs::read_dir(&base).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "deb") {
            let st = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&p)
                .arg(tmp.path())
                .status()
                .expect("dpkg-deb");
            assert!(st.success(), "dpkg-deb -x {}", p.display());
        }
    }
    let unpacked = tmp.keep();
    if std::fs::rename(&unpacked, &root).is_err() {
        // Another test won the race; its copy is as good.
        let _ = std::fs::remove_dir_all(&unpacked);
    }
    assert!(
        root.join(marker).exists(),
        "{marker} not found under {}",
        root.display()
    );
    root
}

/// Whether a `-vv` trace shows, on some connection, a command whose verb is `later` sent
/// before the server answered the command whose verb is `first`: both went in one
/// pipeline, one round trip for the two.
pub fn pipelined_in_trace(trace: &str, first: &str, later: &str) -> bool {
    // connection → (tag of `first`, answered yet)
    let mut open: std::collections::HashMap<&str, (&str, bool)> = Default::default();
    for line in trace.lines() {
        let mut w = line.split_whitespace();
        // "mailark: 0.123s imap#2 imaps://u@host:port C: A0002 LIST ..."
        let (Some(_), Some(_), Some(conn), Some(_), Some(dir), Some(tag)) =
            (w.next(), w.next(), w.next(), w.next(), w.next(), w.next())
        else {
            continue;
        };
        let verb = w.next().unwrap_or("");
        match dir {
            "C:" if verb.eq_ignore_ascii_case(first) => {
                open.insert(conn, (tag, false));
            }
            "C:" if verb.eq_ignore_ascii_case(later) => {
                if matches!(open.get(conn), Some((_, false))) {
                    return true;
                }
            }
            "S:" => {
                if let Some((t, answered)) = open.get_mut(conn) {
                    if *t == tag {
                        *answered = true;
                    }
                }
            }
            _ => {}
        }
    }
    false
}
