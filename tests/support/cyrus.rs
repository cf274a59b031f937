//! A real Cyrus IMAP 3.6 (Debian's packages, unpacked, never installed: `cyrus-imapd`
//! conflicts with `dovecot-imapd`) for one test: config, users (sasldb), certificate and
//! mail spool in a temp dir, IMAP and IMAPS on free 127.0.0.1 ports, `master` run as
//! nobody and stopped by its PID when dropped. The .debs are fetched with `apt-get
//! download` into `target/cyrus-debs` once (scripts/test.sh does it beforehand). A
//! missing Cyrus or library is a failing test with a clear message, never a skip.
//! Facts it relies on are in `docs/servers.md`.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEBS: [&str; 3] = ["cyrus-imapd", "cyrus-common", "cyrus-admin"];

#[derive(Debug, Clone)]
pub struct CyrusOptions {
    pub users: Vec<(String, String)>,
    /// `maxmessagesize` in bytes (Cyrus then announces `APPENDLIMIT=N`).
    pub max_message_size: Option<u64>,
    /// Extra imapd.conf lines.
    pub extra_conf: String,
}

impl Default for CyrusOptions {
    fn default() -> Self {
        CyrusOptions {
            users: vec![
                ("alice".into(), "alice-pw-Ω1".into()),
                ("bob".into(), "bob-pw-Ω2".into()),
            ],
            max_message_size: None,
            extra_conf: String::new(),
        }
    }
}

pub struct Cyrus {
    pub dir: tempfile::TempDir,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub opts: CyrusOptions,
    pid: u32,
}

/// The unpacked Cyrus root (`usr/lib/cyrus/bin/master`, `usr/lib/x86_64-linux-gnu`).
/// `MAILARK_CYRUS_ROOT` may point at one; else the .debs are downloaded (apt-get
/// download, no install) and unpacked under `target/cyrus-debs/root`.
pub fn cyrus_root() -> PathBuf {
    if let Some(p) = std::env::var_os("MAILARK_CYRUS_ROOT") {
        return PathBuf::from(p);
    }
    super::unpacked_debs("cyrus-debs", &DEBS, "usr/lib/cyrus/bin/master")
}

fn require(bin: &str) -> PathBuf {
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(d).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} not found: install Debian's sasl2-bin and util-linux (scripts/test.sh does)");
}

impl Cyrus {
    pub fn start() -> Cyrus {
        Cyrus::start_with(CyrusOptions::default())
    }

    pub fn start_with(opts: CyrusOptions) -> Cyrus {
        let root = cyrus_root();
        let mut last = String::new();
        for _ in 0..5 {
            match Cyrus::try_start(&root, opts.clone()) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("cyrus did not start: {last}");
    }

    fn try_start(croot: &Path, opts: CyrusOptions) -> Result<Cyrus, String> {
        let dir = tempfile::Builder::new()
            .prefix("mailark-cyrus.")
            .tempdir()
            .unwrap();
        let t = dir.path();
        std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["conf", "part", "var/lib/socket", "run"] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        super::make_cert(t);
        let (imap, imaps) = (super::free_port(), super::free_port());
        let bin = croot.join("usr/lib/cyrus/bin");
        let r = t.display();
        let mut conf = format!(
            "configdirectory: {r}/conf
partition-default: {r}/part
cyrus_user: nobody
admins: cyrusadmin
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {r}/sasldb2
sasl_mech_list: PLAIN LOGIN
allowplaintext: yes
altnamespace: yes
unixhierarchysep: yes
autocreate_quota: 0
idlesocket: {r}/var/lib/socket/idle
notifysocket: {r}/var/lib/socket/notify
lmtpsocket: {r}/var/lib/socket/lmtp
tls_server_cert: {r}/cert.pem
tls_server_key: {r}/key.pem
syslog_prefix: mailark-test
"
        );
        if let Some(n) = opts.max_message_size {
            conf.push_str(&format!("maxmessagesize: {n}\n"));
        }
        conf.push_str(&opts.extra_conf);
        let imapd_conf = t.join("imapd.conf");
        std::fs::write(&imapd_conf, conf).unwrap();
        let c = imapd_conf.display();
        let b = bin.display();
        std::fs::write(
            t.join("cyrus.conf"),
            format!(
                "START {{
  recover cmd=\"{b}/ctl_cyrusdb -C {c} -r\"
}}
SERVICES {{
  imap cmd=\"{b}/imapd -C {c}\" listen=\"127.0.0.1:{imap}\" prefork=0
  imaps cmd=\"{b}/imapd -s -C {c}\" listen=\"127.0.0.1:{imaps}\" prefork=0
}}
EVENTS {{
}}
DAEMON {{
}}
"
            ),
        )
        .unwrap();
        let saslpasswd = require("saslpasswd2");
        for (u, p) in &opts.users {
            let mut child = Command::new(&saslpasswd)
                .arg("-f")
                .arg(t.join("sasldb2"))
                .args(["-c", "-p", u])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("saslpasswd2 (Debian package sasl2-bin)");
            {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(p.as_bytes()).unwrap();
            }
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "saslpasswd2: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        super::dovecot::chown_nobody(t);
        let libs = croot.join("usr/lib/x86_64-linux-gnu");
        let child = Command::new(require("setpriv"))
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin.join("master"))
            .arg("-C")
            .arg(&imapd_conf)
            .arg("-M")
            .arg(t.join("cyrus.conf"))
            .arg("-p")
            .arg(t.join("run/master.pid"))
            .arg("-D")
            .env("LD_LIBRARY_PATH", &libs)
            // Cyrus's master ends with a SIGTERM to its whole process group: in the test
            // binary's group that took down the other tests' Cyrus instances (seen in
            // syslog as "graceful shutdown initiated by unexpected process"). Its own
            // group keeps each instance to itself.
            .process_group(0)
            .current_dir(t)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(t.join("master.stderr")).unwrap(),
            ))
            .spawn()
            .map_err(|e| format!("cannot run Cyrus master: {e}"))?;
        let c = Cyrus {
            pid: child.id(),
            dir,
            imap_port: imap,
            imaps_port: imaps,
            opts,
        };
        std::mem::forget(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            // The master stays up when a port it was given is taken meanwhile.
            let group = super::processes_with(2, c.pid as i32);
            let ours = [imap, imaps].iter().all(|&p| super::listens_in(&group, p));
            if ours && c.greets(imap) && c.greets(imaps) {
                return Ok(c);
            }
            if !c.alive() {
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        // Dropping `c` stops this master before the next try.
        Err(format!(
            "no greeting on 127.0.0.1:{imap}/{imaps} from its own master: {}",
            std::fs::read_to_string(c.dir.path().join("master.stderr")).unwrap_or_default()
        ))
    }

    fn greets(&self, port: u16) -> bool {
        use std::io::Read;
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        if port == self.imaps_port {
            // TLS: an accepted connection that stays open is enough.
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut b = [0u8; 4];
        matches!(s.read(&mut b), Ok(n) if n > 0)
    }

    fn alive(&self) -> bool {
        super::child_alive(self.pid)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn password(&self, user: &str) -> &str {
        super::password_of(&self.opts.users, user)
    }

    pub fn password_file(&self, user: &str) -> PathBuf {
        super::password_file_in(self.dir.path(), &self.opts.users, user)
    }

    pub fn imap_url(&self, user: &str) -> String {
        format!("imap://{user}@127.0.0.1:{}", self.imap_port)
    }
    pub fn imaps_url(&self, user: &str) -> String {
        format!("imaps://{user}@127.0.0.1:{}", self.imaps_port)
    }

    /// A logged-in raw IMAP connection (plain TCP; Cyrus allows plaintext here).
    pub fn raw(&self, user: &str) -> super::raw::RawImap {
        let mut c = super::raw::RawImap::connect(self.imap_port);
        c.login(user, self.password(user));
        c
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        super::stop_child(self.pid);
        // Any imapd the master left behind goes with its group.
        // SAFETY: the group is the one this harness created for this server.
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
    }
}
