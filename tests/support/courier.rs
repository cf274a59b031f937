//! A real Courier-IMAP 5.0 + Courier POP3 (Debian 12's packages, unpacked, never
//! installed: they conflict with Dovecot's) for one test: IMAP, IMAPS, POP3 and POP3S on
//! free 127.0.0.1 ports, users in a userdb, Maildir++ homes in a temp dir.
//!
//! The binaries have their config paths compiled in (`/etc/courier/...`,
//! `/usr/lib/courier-authlib`, `/run/courier/authdaemon`), so every instance runs in its
//! own mount namespace (`unshare -m`) where read-only overlays put the unpacked `/usr`
//! and the instance's own `etc/` over `/usr` and `/etc`, and its `run/` is bind-mounted
//! on `/run`. Nothing is mounted outside that namespace; its mounts vanish with its last
//! process. Every process of an instance shares one session, which `Drop` ends by session
//! id. Facts it relies on are in `docs/servers.md` (section Courier). A missing package
//! is a failing test with a clear message, never a skip.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEBS: [&str; 11] = [
    "courier-base",
    "courier-imap",
    "courier-pop",
    "courier-authlib",
    "courier-authdaemon",
    "courier-authlib-userdb",
    "libcourier-unicode4",
    "libgamin0",
    "gamin",
    "libidn12",
    "libltdl7",
];

/// Mail processes run as nobody, like the Dovecot and Cyrus harnesses.
const MAIL_UID: u32 = 65534;

#[derive(Debug, Clone)]
pub struct CourierOptions {
    pub users: Vec<(String, String)>,
    /// Lines appended to Debian's stock `/etc/courier/imapd` (e.g. `IMAP_KEYWORDS=0`).
    pub extra_imapd: String,
    /// Lines appended to Debian's stock `/etc/courier/pop3d`.
    pub extra_pop3d: String,
}

impl Default for CourierOptions {
    fn default() -> Self {
        CourierOptions {
            users: vec![
                ("alice".into(), "alice-pw-Ω1".into()),
                ("bob".into(), "bob-pw-Ω2".into()),
            ],
            extra_imapd: String::new(),
            extra_pop3d: String::new(),
        }
    }
}

pub struct Courier {
    pub dir: tempfile::TempDir,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub pop3_port: u16,
    pub pop3s_port: u16,
    pub opts: CourierOptions,
    /// The session leader (the launcher shell): its PID is the session id.
    sid: u32,
}

/// The unpacked Courier root (`usr/`, `etc/courier/`). `MAILARK_COURIER_ROOT` may point
/// at one; else the .debs are downloaded and unpacked under `target/courier-debs/root`.
pub fn courier_root() -> PathBuf {
    if let Some(p) = std::env::var_os("MAILARK_COURIER_ROOT") {
        return PathBuf::from(p);
    }
    super::unpacked_debs("courier-debs", &DEBS, "usr/lib/courier/courier/imaplogin")
}

fn require(bin: &str) -> PathBuf {
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(d).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} not found: install Debian's util-linux and openssl (scripts/test.sh does)");
}

impl Courier {
    pub fn start() -> Courier {
        Courier::start_with(CourierOptions::default())
    }

    pub fn start_with(opts: CourierOptions) -> Courier {
        let root = courier_root();
        // Ports are picked free and then released: another process may take one in
        // between, so try a few times.
        let mut last = String::new();
        for _ in 0..5 {
            match Courier::try_start(&root, opts.clone()) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("courier did not start: {last}");
    }

    fn try_start(croot: &Path, opts: CourierOptions) -> Result<Courier, String> {
        let dir = tempfile::Builder::new()
            .prefix("mailark-courier.")
            .tempdir()
            .unwrap();
        let t = dir.path();
        // Mail processes run as nobody and must pass through the dir.
        std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["etc/courier", "run/courier/authdaemon", "home", "log"] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        let ports = [
            super::free_port(),
            super::free_port(),
            super::free_port(),
            super::free_port(),
        ];
        write_tls_files(t);
        write_config(t, croot, &opts, ports);
        write_userdb(t, &opts.users);
        for (u, _) in &opts.users {
            make_maildir(&t.join("home").join(u).join("Maildir"));
        }
        super::dovecot::chown_nobody(&t.join("home"));
        let gam_id = format!("mailark-{}", t.file_name().unwrap().to_string_lossy());
        let script = launcher(t, croot, &gam_id);
        std::fs::write(t.join("start.sh"), script).unwrap();
        let mut cmd = Command::new(require("unshare"));
        cmd.args(["-m", "--propagation", "private", "/bin/sh"])
            .arg(t.join("start.sh"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("GAM_CLIENT_ID", &gam_id)
            .current_dir(t)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(t.join("log/start.err")).unwrap(),
            ));
        // SAFETY: setsid is async-signal-safe; it makes the child lead a new session
        // whose id is its PID, so every server process can be found and ended by it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let c = Courier {
            sid: child.id(),
            dir,
            imap_port: ports[0],
            imaps_port: ports[1],
            pop3_port: ports[2],
            pop3s_port: ports[3],
            opts,
        };
        // Reaped in Drop by PID.
        std::mem::forget(child);
        let gam_socket = format!("@/tmp/fam-nobody-{gam_id}");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            // A couriertcpd that could not bind its port (taken since free_port) exits at
            // once, and a connect would then reach whoever holds the port: count them.
            let listeners = c.processes_named("couriertcpd");
            if listeners == 4
                && c.run_dir().join("courier/authdaemon/socket").exists()
                && abstract_socket_listens(&gam_socket)
                && ports.iter().all(|&p| greets(p))
                && ports
                    .iter()
                    .all(|&p| super::listens_in(&session_members(c.sid as i32), p))
            {
                return Ok(c);
            }
            if !super::child_alive(c.sid)
                || (listeners < 4 && started.elapsed() > Duration::from_secs(5))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no greeting on 127.0.0.1:{ports:?}: {}", c.log()))
    }

    /// How many of the instance's processes run `comm`.
    fn processes_named(&self, comm: &str) -> usize {
        session_members(self.sid as i32)
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() == comm)
            })
            .count()
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Everything the instance's processes wrote to stderr (Courier logs there when not
    /// run under courierlogger), one file after the other.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for n in [
            "start",
            "gam",
            "authdaemond",
            "imap",
            "imaps",
            "pop3",
            "pop3s",
        ] {
            let s = std::fs::read_to_string(self.dir.path().join(format!("log/{n}.err")))
                .unwrap_or_default();
            out.push_str(&format!("--- {n}\n{s}"));
        }
        out
    }

    /// The PEM of the server's self-signed certificate (trust it with `--tls-ca-file`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn password(&self, user: &str) -> &str {
        super::password_of(&self.opts.users, user)
    }

    /// A file holding `user`'s password and a trailing newline, for `--password-file`.
    pub fn password_file(&self, user: &str) -> PathBuf {
        super::password_file_in(self.dir.path(), &self.opts.users, user)
    }

    pub fn imap_url(&self, user: &str) -> String {
        format!("imap://{user}@127.0.0.1:{}", self.imap_port)
    }
    pub fn imaps_url(&self, user: &str) -> String {
        format!("imaps://{user}@127.0.0.1:{}", self.imaps_port)
    }
    pub fn pop3_url(&self, user: &str) -> String {
        format!("pop3://{user}@127.0.0.1:{}", self.pop3_port)
    }
    pub fn pop3s_url(&self, user: &str) -> String {
        format!("pop3s://{user}@127.0.0.1:{}", self.pop3s_port)
    }

    /// A logged-in raw IMAP connection (plain TCP, LOGIN) for seeding and inspection.
    pub fn raw(&self, user: &str) -> super::raw::RawImap {
        let mut c = super::raw::RawImap::connect(self.imap_port);
        c.login(user, self.password(user));
        c
    }

    /// The user's Maildir++ root (its INBOX; folders are `.NAME` dirs inside it).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("home").join(user).join("Maildir")
    }

    /// Writes messages straight into a Maildir++ folder and subscribes it. `folder` is
    /// the name under `INBOX.` in UTF-8 with `.` between levels (`Archive.2019`), or
    /// `INBOX` itself. Courier 5 keeps folder names in UTF-8 on disk and in
    /// `courierimapsubscribed` (it speaks modified UTF-7 only on the wire), and makes
    /// no directory for a level above a folder (LIST shows it `\Noselect`). Messages
    /// are stored as Courier stores them (LF line ends; it serves CRLF), each with its
    /// `:2,` flags and mtime (= INTERNALDATE).
    pub fn seed_maildir(&self, user: &str, folder: &str, msgs: &[(Vec<u8>, &str, i64)]) {
        let root = self.maildir(user);
        let dir = if folder == "INBOX" {
            root.clone()
        } else {
            let dir = root.join(format!(".{folder}"));
            make_maildir(&dir);
            std::fs::write(dir.join("maildirfolder"), b"").unwrap();
            subscribe(&root, &format!("INBOX.{folder}"));
            dir
        };
        for (i, (bytes, flags, mtime)) in msgs.iter().enumerate() {
            let stored = stored_form(bytes);
            let p = dir.join("cur").join(format!(
                "{mtime}.M{i}P{}.seed,S={}:2,{flags}",
                std::process::id(),
                stored.len()
            ));
            std::fs::write(&p, stored).unwrap();
            let t = libc::timespec {
                tv_sec: *mtime as libc::time_t,
                tv_nsec: 0,
            };
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C path and two timespecs.
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0) };
        }
        super::dovecot::chown_nobody(&root);
    }

    /// The session every process of the instance belongs to (see `session_members`).
    pub fn session_id(&self) -> i32 {
        self.sid as i32
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        let sid = self.sid as i32;
        // couriertcpd may fork a connection's process while we sweep, so sweep until
        // a pass finds nobody. The mail store is a throwaway: SIGKILL is safe and fast.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = session_members(sid);
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                // SAFETY: signalling processes of the session this harness created.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        super::stop_child(self.sid);
    }
}

/// Processes (not zombies) whose session id is `sid`, read from /proc.
pub fn session_members(sid: i32) -> Vec<i32> {
    super::processes_with(3, sid)
}

fn abstract_socket_listens(name: &str) -> bool {
    std::fs::read_to_string("/proc/net/unix").is_ok_and(|s| {
        // Abstract names are shown with their NUL padding as '@'.
        s.lines().any(|l| {
            l.split_whitespace()
                .last()
                .is_some_and(|n| n.trim_end_matches('@') == name)
        })
    })
}

fn greets(port: u16) -> bool {
    // Both TLS ports answer only after a handshake; an accepted connection is enough
    // there, since couriertcpd listens only once it is ready.
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// `cert.pem` (trusted by clients), `tls.pem` (key + cert, as couriertls wants it) and
/// `dh.pem` (fixed RFC 7919 group: generating parameters would take seconds).
fn write_tls_files(t: &Path) {
    super::make_cert(t);
    let key = std::fs::read(t.join("key.pem")).unwrap();
    let cert = std::fs::read(t.join("cert.pem")).unwrap();
    std::fs::write(t.join("tls.pem"), [key, cert].concat()).unwrap();
    let out = Command::new(require("openssl"))
        .args([
            "genpkey",
            "-genparam",
            "-algorithm",
            "DH",
            "-pkeyopt",
            "dh_param:ffdhe2048",
            "-out",
        ])
        .arg(t.join("dh.pem"))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl genpkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's stock config files with this instance's addresses, ports and TLS files
/// appended (later assignments win when the launcher sources them).
fn write_config(t: &Path, croot: &Path, opts: &CourierOptions, ports: [u16; 4]) {
    let [imap, imaps, pop3, pop3s] = ports;
    let r = t.display();
    let tls = format!(
        "TLS_CERTFILE={r}/tls.pem\nTLS_DHPARAMS={r}/dh.pem\nTLS_CACHEFILE=\n\
         TLS_TRUSTCERTS={r}/cert.pem\n"
    );
    let files = [
        (
            "imapd",
            format!("ADDRESS=127.0.0.1\nPORT={imap}\n{}\n", opts.extra_imapd),
        ),
        (
            "imapd-ssl",
            format!("SSLADDRESS=127.0.0.1\nSSLPORT={imaps}\n{tls}"),
        ),
        (
            "pop3d",
            format!("ADDRESS=127.0.0.1\nPORT={pop3}\n{}\n", opts.extra_pop3d),
        ),
        (
            "pop3d-ssl",
            format!("SSLADDRESS=127.0.0.1\nSSLPORT={pop3s}\n{tls}"),
        ),
        (
            "authdaemonrc",
            "authmodulelist=\"authuserdb\"\n".to_string(),
        ),
    ];
    for (name, extra) in files {
        let stock = std::fs::read_to_string(croot.join("etc/courier").join(name))
            .unwrap_or_else(|e| panic!("{}/etc/courier/{name}: {e}", croot.display()));
        std::fs::write(
            t.join("etc/courier").join(name),
            format!("{stock}\n# mailark test instance\n{extra}"),
        )
        .unwrap();
    }
    // couriertls drops to user `courier` (STARTTLS and the TLS ports): give the
    // namespace a passwd and group that have one.
    for (name, line) in [
        (
            "passwd",
            format!("courier:x:{MAIL_UID}:{MAIL_UID}::/nonexistent:/usr/sbin/nologin\n"),
        ),
        ("group", format!("courier:x:{MAIL_UID}:\n")),
    ] {
        let mut s = std::fs::read_to_string(Path::new("/etc").join(name)).unwrap();
        if !s.lines().any(|l| l.starts_with("courier:")) {
            s.push_str(&line);
        }
        std::fs::write(t.join("etc").join(name), s).unwrap();
    }
}

/// `etc/courier/userdb` (SHA-512 crypt hashes in `systempw=`); the launcher compiles
/// it into `userdb.dat` with `makeuserdb`.
fn write_userdb(t: &Path, users: &[(String, String)]) {
    let mut db = String::new();
    for (u, p) in users {
        let mut child = Command::new(require("openssl"))
            .args(["passwd", "-6", "-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(p.as_bytes()).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "openssl passwd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hash = String::from_utf8(out.stdout).unwrap();
        db.push_str(&format!(
            "{u}\tuid={MAIL_UID}|gid={MAIL_UID}|home={}|systempw={}\n",
            t.join("home").join(u).display(),
            hash.trim()
        ));
    }
    let p = t.join("etc/courier/userdb");
    std::fs::write(&p, db).unwrap();
    // makeuserdb refuses a userdb that others may read.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The shell that runs inside the new mount namespace: mounts, then every daemon in the
/// background (each in its own subshell that sources its stock config, as Debian's
/// init scripts do, without courierlogger, which would leave the session), then waits.
fn launcher(t: &Path, croot: &Path, gam_id: &str) -> String {
    let r = t.display();
    let c = croot.display();
    let tcpd = "couriertcpd -address=$ADDRESS -maxprocs=$MAXDAEMONS -maxperip=$MAXPERIP \
                -nodnslookup -noidentlookup";
    let tcpd_ssl = "couriertcpd -address=$SSLADDRESS -maxprocs=$MAXDAEMONS \
                    -maxperip=$MAXPERIP -nodnslookup -noidentlookup";
    let imapd = "/usr/lib/courier/courier/imaplogin /usr/bin/imapd Maildir";
    let pop3d = "/usr/lib/courier/courier/courierpop3login \
                 /usr/lib/courier/courier/courierpop3d Maildir";
    format!(
        r#"set -e
mount -t overlay overlay -o lowerdir={c}/usr:/usr /usr
makeuserdb -f {r}/etc/courier/userdb
mount -t overlay overlay -o lowerdir={r}/etc:{c}/etc:/etc /etc
mount --bind {r}/run /run
setpriv --reuid={MAIL_UID} --regid={MAIL_UID} --clear-groups \
  /usr/libexec/gam_server --notimeout {gam_id} 2>log/gam.err &
(set -a; . /etc/courier/authdaemonrc; exec /usr/lib/courier/courier-authlib/authdaemond) \
  2>log/authdaemond.err &
(set -a; . /etc/courier/imapd; . /etc/courier/imapd-ssl; IMAP_STARTTLS=$IMAPDSTARTTLS
 ulimit -v $IMAP_ULIMITD; exec {tcpd} $PORT {imapd}) 2>log/imap.err &
(set -a; . /etc/courier/imapd; . /etc/courier/imapd-ssl; IMAP_TLS=1
 ulimit -v $IMAP_ULIMITD; exec {tcpd_ssl} $SSLPORT $COURIERTLS -server -tcpd -user=courier {imapd}) \
  2>log/imaps.err &
(set -a; . /etc/courier/pop3d; . /etc/courier/pop3d-ssl; exec {tcpd} $PORT {pop3d}) \
  2>log/pop3.err &
(set -a; . /etc/courier/pop3d; . /etc/courier/pop3d-ssl; POP3_TLS=1; POP3_STARTTLS=NO
 POP3_TLS_REQUIRED=0; exec {tcpd_ssl} $SSLPORT $COURIERTLS -server -tcpd -user=courier {pop3d}) \
  2>log/pop3s.err &
wait
"#
    )
}

fn make_maildir(d: &Path) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
}

fn subscribe(root: &Path, name: &str) {
    let p = root.join("courierimapsubscribed");
    let mut s = std::fs::read_to_string(&p).unwrap_or_default();
    if !s.lines().any(|l| l == name) {
        s.push_str(name);
        s.push('\n');
        std::fs::write(p, s).unwrap();
    }
}

/// Courier's stored form of a message: LF line ends (it turns them back into CRLF when
/// serving).
pub fn stored_form(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        if c == b'\r' && b.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(c);
    }
    out
}
