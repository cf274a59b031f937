//! A real Dovecot 2.3 (Debian `dovecot-imapd dovecot-pop3d`) for one test: config, users,
//! self-signed certificate and mail all live in a temp dir; it listens on 127.0.0.1 on
//! free ports (IMAP, IMAPS, POP3, POP3S) and is stopped by its PID when dropped.
//! Facts it relies on are in `docs/servers.md`. A missing Dovecot is a test
//! failure with a clear message, never a silent pass.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the account's folders are named on the wire.
#[derive(Debug, Clone)]
pub struct DovecotOptions {
    /// Users and their passwords.
    pub users: Vec<(String, String)>,
    /// Hierarchy separator of the personal namespace.
    pub separator: char,
    /// Personal namespace prefix (e.g. `INBOX.` for a Courier-style server).
    pub prefix: String,
    /// Special-use folders created for every user: (name, role), e.g. ("Sent", "\\Sent").
    pub special: Vec<(String, String)>,
    /// Extra lines appended to dovecot.conf.
    pub extra_conf: String,
}

impl Default for DovecotOptions {
    fn default() -> Self {
        DovecotOptions {
            users: vec![
                ("alice".into(), "alice-pw-Ω1".into()),
                ("bob".into(), "bob-pw-Ω2".into()),
            ],
            separator: '/',
            prefix: String::new(),
            special: vec![
                ("Sent".into(), "\\Sent".into()),
                ("Drafts".into(), "\\Drafts".into()),
                ("Trash".into(), "\\Trash".into()),
                ("Junk".into(), "\\Junk".into()),
            ],
            extra_conf: String::new(),
        }
    }
}

pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub pop3_port: u16,
    pub pop3s_port: u16,
    pub opts: DovecotOptions,
    pid: u32,
}

fn require(bin: &str) -> PathBuf {
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(d).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{bin} not found: install Debian's dovecot-imapd and dovecot-pop3d (scripts/test.sh does)"
    );
}

impl Dovecot {
    pub fn start() -> Dovecot {
        Dovecot::start_with(DovecotOptions::default())
    }

    pub fn start_with(opts: DovecotOptions) -> Dovecot {
        // Ports are picked free and then released, so another process may grab one in
        // between: try a few times before giving up.
        let mut last = String::new();
        for _ in 0..5 {
            match Dovecot::try_start(opts.clone()) {
                Ok(d) => return d,
                Err(e) => last = e,
            }
        }
        panic!("dovecot did not start: {last}");
    }

    fn try_start(opts: DovecotOptions) -> Result<Dovecot, String> {
        let dovecot = require("dovecot");
        let dir = tempfile::Builder::new()
            .prefix("mailark-dovecot.")
            .tempdir()
            .unwrap();
        let root = dir.path();
        // Auth and mail processes run as other users and must pass through the dir.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["run", "state", "mail", "home"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        super::make_cert(root);
        let mut passwd = String::new();
        for (u, p) in &opts.users {
            passwd.push_str(&format!("{u}:{{PLAIN}}{p}::::::\n"));
            for d in [root.join("mail").join(u), root.join("home").join(u)] {
                std::fs::create_dir_all(&d).unwrap();
            }
        }
        std::fs::write(root.join("passwd"), passwd).unwrap();
        chown_nobody(&root.join("mail"));
        chown_nobody(&root.join("home"));

        let (imap, imaps, pop3, pop3s) = (
            super::free_port(),
            super::free_port(),
            super::free_port(),
            super::free_port(),
        );
        let r = root.display();
        let mut mailboxes = String::new();
        for (name, role) in &opts.special {
            mailboxes.push_str(&format!(
                "  mailbox \"{name}\" {{\n    special_use = {role}\n    auto = subscribe\n  }}\n"
            ));
        }
        let conf = format!(
            r#"base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
info_log_path = {r}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{r}/cert.pem
ssl_key = <{r}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
mail_fsync = never
mail_max_userip_connections = 100
mail_location = maildir:{r}/mail/%u:LAYOUT=fs:UTF-8:INBOX={r}/mail/%u/INBOX
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {r}/passwd
  default_fields = uid=nobody gid=nogroup home={r}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s}
    ssl = yes
  }}
}}
namespace inbox {{
  inbox = yes
  separator = {sep}
  prefix = {prefix}
{mailboxes}}}
{extra}
"#,
            sep = opts.separator,
            prefix = opts.prefix,
            extra = opts.extra_conf,
        );
        let conf_path = root.join("dovecot.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(&dovecot)
            // Its own process group, so stopping it can sweep up every child.
            .process_group(0)
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(root.join("dovecot.stderr")).unwrap(),
            ))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", dovecot.display()))?;
        let d = Dovecot {
            pid: child.id(),
            dir,
            imap_port: imap,
            imaps_port: imaps,
            pop3_port: pop3,
            pop3s_port: pop3s,
            opts,
        };
        // The child is reaped in Drop (waitpid on the PID); forget the handle.
        std::mem::forget(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // A test may turn the TLS listeners off (port = 0); a port Dovecot could
            // not bind stops it altogether.
            let ours = [imap, pop3]
                .iter()
                .all(|&p| super::listens_in(&[d.pid as i32], p));
            if ours && d.greets(imap) && d.greets(pop3) {
                // Dovecot 2.3.19 can panic (fcntl EDEADLK) when several sessions of a
                // fresh account auto-create the special-use folders at once; and a
                // folder is only made on disk, and added to the `subscriptions` file,
                // when first opened, so sessions opening them at once rewrite that
                // file with some of them only (seen: a parallel export left "Sent,
                // Trash" where four were due). One LIST and an EXAMINE of each per
                // user here make and subscribe them serially, so tests start from an
                // account as a real server would have it.
                for (u, _) in &d.opts.users {
                    let mut c = d.raw(u);
                    let listed = c.must("LIST \"\" \"*\"");
                    for line in &listed.data {
                        let line = String::from_utf8_lossy(line);
                        let special = d.opts.special.iter().any(|(_, role)| {
                            line.split(')')
                                .next()
                                .is_some_and(|a| a.contains(role.as_str()))
                        });
                        if let Some(name) = special.then(|| listed_name(&line)).flatten() {
                            c.must(&format!("EXAMINE {name}"));
                        }
                    }
                    c.logout();
                }
                // Tests read the log to see what the server did for them; the
                // warm-up sessions are not theirs. Dovecot appends (O_APPEND), so
                // truncating keeps later lines intact.
                let log = d.dir.path().join("dovecot.log");
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline
                    && d.log().matches("Logged out").count() < d.opts.users.len()
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&log) {
                    let _ = f.set_len(0);
                }
                return Ok(d);
            }
            if !d.alive() {
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        Err(format!(
            "no greeting on 127.0.0.1:{imap}: {} {}",
            std::fs::read_to_string(d.dir.path().join("dovecot.stderr")).unwrap_or_default(),
            d.log()
        ))
    }

    fn greets(&self, port: u16) -> bool {
        use std::io::Read;
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut b = [0u8; 4];
        matches!(s.read(&mut b), Ok(n) if n > 0)
    }

    fn alive(&self) -> bool {
        super::child_alive(self.pid)
    }

    /// The master process (benchmarks read the CPU time of its process tree).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// The log once `holds` is true of it. Dovecot's log process writes what the login
    /// and mail processes send it a moment later, so a line can still be on its way when
    /// the client has finished: a test looking for a line that must be there waits for
    /// it (up to 20 s) instead of reading once.
    pub fn log_when(&self, holds: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let log = self.log();
            if holds(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
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

    /// What mailark needs to log in as `user` here: `--password-file` with the user's
    /// password and `--tls-ca-file` with the server's certificate.
    pub fn login_args(&self, user: &str) -> [String; 4] {
        [
            "--password-file".into(),
            self.password_file(user).display().to_string(),
            "--tls-ca-file".into(),
            self.ca_file().display().to_string(),
        ]
    }

    /// The user's mail root: a Dovecot `LAYOUT=fs` Maildir tree with UTF-8 names
    /// (`INBOX/`, `Sent/`, `a/b/`).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
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

    /// Runs `doveadm -c CONF ARGS` and returns stdout; panics on failure.
    pub fn doveadm(&self, args: &[&str]) -> String {
        let out = Command::new(require("doveadm"))
            .arg("-c")
            .arg(self.conf())
            .args(args)
            .output()
            .expect("run doveadm");
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes messages straight into a folder's Maildir `cur/` (UTF-8 folder path with
    /// `/` levels), each with its `:2,` flags and mtime (= INTERNALDATE). The folder
    /// appears to IMAP at its next LIST. For big seeds this is far faster than APPEND.
    pub fn seed_maildir(&self, user: &str, folder: &str, msgs: &[(Vec<u8>, &str, i64)]) {
        let dir = self.maildir(user).join(folder);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for (i, (bytes, flags, mtime)) in msgs.iter().enumerate() {
            let p = dir.join("cur").join(format!(
                "{mtime}.M{i}P{}.seed:2,{flags}",
                std::process::id()
            ));
            std::fs::write(&p, bytes).unwrap();
            let t = libc::timespec {
                tv_sec: *mtime as libc::time_t,
                tv_nsec: 0,
            };
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C path and two timespecs.
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0) };
        }
        chown_nobody(&self.maildir(user));
    }
}

/// A user's mail as it lies on disk: every file below the Maildir tree but Dovecot's own
/// indexes and caches (which any session may rewrite), path → bytes. Two snapshots
/// equal means no message, flag (a `:2,` name), keyword list or folder changed.
pub type MailSnapshot = std::collections::BTreeMap<String, Vec<u8>>;

impl Dovecot {
    pub fn mail_snapshot(&self, user: &str) -> MailSnapshot {
        let root = self.maildir(user);
        walkdir::WalkDir::new(&root)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .filter(|e| {
                let n = e.file_name().to_string_lossy();
                !(n.starts_with("dovecot.")
                    || n.starts_with("dovecot-uidlist")
                    || n.starts_with("dovecot-uidvalidity"))
            })
            .map(|e| {
                let rel = e.path().strip_prefix(&root).unwrap();
                (
                    rel.to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    /// Panics, naming the first difference, unless `user`'s mail is still `before`.
    /// One file may appear: Dovecot writes the folders its config subscribes
    /// (`auto = subscribe`) to `subscriptions` the first time a client asks which folders
    /// are subscribed; the set a client sees is the same before and after.
    pub fn assert_mail_unchanged(&self, user: &str, before: &MailSnapshot, what: &str) {
        let mut now = self.mail_snapshot(user);
        if !before.contains_key("subscriptions") {
            let mut auto: Vec<String> = self.opts.special.iter().map(|s| s.0.clone()).collect();
            auto.sort();
            let listed = now.get("subscriptions").map(|b| {
                let text = String::from_utf8_lossy(b).into_owned();
                let mut names: Vec<String> = text
                    .strip_prefix("V\t2\n\n")
                    .unwrap_or("?")
                    .lines()
                    .map(str::to_string)
                    .collect();
                names.sort();
                names
            });
            if listed == Some(auto) {
                now.remove("subscriptions");
            }
        }
        for (p, b) in before {
            match now.get(p) {
                None => panic!("{what}: {p} is gone from {user}'s mail"),
                Some(n) => assert!(n == b, "{what}: {p} changed in {user}'s mail"),
            }
        }
        for (p, b) in &now {
            assert!(
                before.contains_key(p),
                "{what}: {p} appeared in {user}'s mail: {:?}",
                String::from_utf8_lossy(&b[..b.len().min(200)])
            );
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        super::stop_child(self.pid);
        // A session process the master did not take down with it (a stuck POP3
        // session outlives the master) would linger for its idle timeout.
        // SAFETY: the group is the one this harness created for this server.
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
    }
}

pub fn chown_nobody(p: &Path) {
    let st = Command::new("chown")
        .arg("-R")
        .arg("nobody:nogroup")
        .arg(p)
        .status()
        .expect("chown");
    assert!(st.success(), "chown -R nobody:nogroup {}", p.display());
}

/// Dovecot's form of a stored message on the wire (IMAP `BODY[]`, and what it stores
/// from an APPEND with mixed line ends): every LF not after a CR becomes CRLF; a bare CR
/// stays as it is.
pub fn served_form(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 40 + 2);
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

/// What Dovecot's POP3 delivers for a stored message: the served form, plus a CRLF when
/// the message has no final newline (POP3 cannot end a message without one).
pub fn pop3_form(stored: &[u8]) -> Vec<u8> {
    let mut out = served_form(stored);
    if !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The mailbox name of a `* LIST (attributes) delimiter name` line, as on the wire
/// (quoted or not): what follows the attributes and the delimiter (`NIL` or quoted).
fn listed_name(line: &str) -> Option<&str> {
    let rest = line.trim_end().strip_prefix("* LIST (")?;
    let rest = rest.split_once(") ")?.1;
    let rest = match rest.strip_prefix("NIL ") {
        Some(r) => r,
        None => {
            let inner = rest.strip_prefix('"')?;
            let end = if inner.starts_with("\\") { 2 } else { 1 };
            inner.get(end + 1..)?.strip_prefix(' ')?
        }
    };
    (!rest.is_empty()).then_some(rest)
}
