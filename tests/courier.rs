//! mailark against a real Courier-IMAP 5.0 + Courier POP3 (Debian 12's packages, run by
//! `tests/support/courier.rs`): the harness itself (logins on all four ports, Maildir++
//! seeding, nothing left behind), then export, verify, import and rerun end to end
//! through the real binary. Courier facts the tests expect are in `docs/servers.md`.

mod common;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use support::courier::{session_members, Courier};

/// One line-by-line session: each command is sent only after the previous answer
/// arrived (Courier's login process hands the connection to the mail process, so
/// anything pipelined after LOGIN or PASS would be lost), and the answers are returned.
/// An IMAP command's answer ends with its tag; a POP3 one is a single line.
fn converse(r: &mut impl BufRead, w: &mut impl Write, cmds: &[String]) -> String {
    let mut out = String::new();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    out.push_str(&line);
    for cmd in cmds {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        w.flush().unwrap();
        let tag = cmd.split(' ').next().unwrap();
        let imap = tag.len() == 1;
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap() == 0 {
                return out;
            }
            out.push_str(&line);
            if !imap || line.starts_with(&format!("{tag} ")) {
                break;
            }
        }
    }
    out
}

/// `converse` over TLS with `openssl s_client`, trusting only the harness's certificate.
fn tls_converse(c: &Courier, port: u16, cmds: &[String]) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(c.ca_file())
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    let mut w = child.stdin.take().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let out = converse(&mut r, &mut w, cmds);
    drop(w);
    let _ = child.kill();
    let _ = child.wait();
    out
}

fn tcp_converse(port: u16, cmds: &[String]) -> String {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    converse(&mut r, &mut w, cmds)
}

#[test]
fn harness_logs_in_on_all_four_ports_and_leaves_nothing_behind() {
    let c = Courier::start();
    let sid;
    {
        c.seed_maildir(
            "alice",
            "Archive.2019",
            &[(b"Subject: a\r\n\r\none\r\n".to_vec(), "S", 1_500_000_000)],
        );
        c.seed_maildir(
            "alice",
            "INBOX",
            &[(b"Subject: b\r\n\r\ntwo\r\n".to_vec(), "", 1_500_000_000)],
        );
        let mut imap = c.raw("alice");
        let list = imap.must("LIST \"\" \"*\"").text();
        assert!(list.contains("\"INBOX.Archive.2019\""), "{list}");
        let lsub = imap.must("LSUB \"\" \"*\"").text();
        assert!(lsub.contains("\"INBOX.Archive.2019\""), "{lsub}");
        let got = imap.fetch_all("INBOX.Archive.2019");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].2, b"Subject: a\r\n\r\none\r\n");
        assert!(got[0].1.contains("\\Seen"), "{}", got[0].1);
        imap.logout();

        let pw = c.password("alice");
        let imaps = tls_converse(
            &c,
            c.imaps_port,
            &[
                format!("a LOGIN alice {}", support::raw::quote(pw)),
                "b SELECT INBOX".into(),
                "c LOGOUT".into(),
            ],
        );
        assert!(imaps.contains("a OK LOGIN"), "{imaps}");
        assert!(imaps.contains("* 1 EXISTS"), "{imaps}");
        let script = [
            "USER alice".to_string(),
            format!("PASS {pw}"),
            "STAT".into(),
            "QUIT".into(),
        ];
        let pop3 = tcp_converse(c.pop3_port, &script);
        assert!(pop3.contains("+OK 1 "), "{pop3}");
        let pop3s = tls_converse(&c, c.pop3s_port, &script);
        assert!(pop3s.contains("+OK 1 "), "{pop3s}");
        sid = c.session_id();
        assert!(session_members(sid).len() >= 6, "{}", c.log());
    }
    let dir = c.dir.path().to_path_buf();
    drop(c);
    assert_eq!(session_members(sid), Vec::<i32>::new());
    assert!(!dir.exists());
    // Its mounts lived only in its namespace; no process anywhere still sees them.
    let needle = dir.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(m) = std::fs::read_to_string(e.path().join("mountinfo")) {
            assert!(
                !m.contains(&needle),
                "{} still mounts {needle}",
                e.path().display()
            );
        }
    }
}
