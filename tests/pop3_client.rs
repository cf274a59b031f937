//! The POP3 client end to end: against a real Dovecot for byte-exact retrieval over
//! POP3S and STLS, its capabilities and its refusals; against scripted TCP servers only
//! for the behaviour a real server will not show on demand (refusals mid-batch, broken
//! links, silent peers, hostile STLS, no CAPA, OAuth challenges).

mod support;
use support::dovecot::pop3_form;

use std::future::Future;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use mailark::source::net::{Auth, Credentials, Endpoint, Secret, TlsOptions};
use mailark::source::pop3::{
    judge_top, Pop3Client, Pop3Error, Pop3Options, RespCode, RetrInfo, RetrSink, Retrieve,
    TopVerdict,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

fn password(p: &str) -> Credentials {
    Credentials {
        user: "alice".into(),
        auth: Auth::Password(Secret::new(p)),
    }
}

fn token(t: &str) -> Credentials {
    Credentials {
        user: "alice".into(),
        auth: Auth::OAuth2(Secret::new(t)),
    }
}

fn plaintext_ok() -> TlsOptions {
    TlsOptions {
        allow_plaintext: true,
        ..TlsOptions::default()
    }
}

fn quick(timeout_secs: u64) -> Pop3Options {
    Pop3Options {
        timeout: Duration::from_secs(timeout_secs),
        ..Pop3Options::default()
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// The server side of one scripted connection. Every line the client sends is kept in
/// `got`, so tests can assert what did (and did not) cross the wire.
struct Peer {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    got: Vec<String>,
}

impl Peer {
    async fn send(&mut self, s: impl AsRef<[u8]>) {
        self.wr.write_all(s.as_ref()).await.unwrap();
        self.wr.flush().await.unwrap();
    }

    /// Sends `s` a few bytes at a time with pauses, so the client sees it split at
    /// arbitrary places rather than in one read.
    async fn trickle(&mut self, s: &[u8], piece: usize) {
        for c in s.chunks(piece) {
            self.send(c).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The next line from the client (without CRLF), or None at EOF.
    async fn next_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), self.rd.read_until(b'\n', &mut buf))
            .await
            .expect("client went silent")
            .unwrap();
        if n == 0 {
            return None;
        }
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        self.got.push(line.clone());
        Some(line)
    }

    async fn line(&mut self) -> String {
        self.next_line().await.expect("client closed early")
    }

    async fn expect(&mut self, want: &str) {
        let got = self.line().await;
        assert_eq!(got, want, "client sent {got:?}, script wanted {want:?}");
    }

    /// Greeting plus the first CAPA.
    async fn hello(&mut self, caps: &str) {
        self.send("+OK scripted POP3 ready\r\n").await;
        self.expect("CAPA").await;
        self.send(format!("+OK\r\n{caps}.\r\n")).await;
    }

    /// USER/PASS, then the post-login CAPA.
    async fn user_pass(&mut self, pw: &str, caps: &str) {
        self.expect("USER alice").await;
        self.send("+OK\r\n").await;
        self.expect(&format!("PASS {pw}")).await;
        self.send("+OK logged in\r\n").await;
        self.expect("CAPA").await;
        self.send(format!("+OK\r\n{caps}.\r\n")).await;
    }

    /// Reads until the client hangs up (or sends QUIT, which is answered).
    async fn drain(&mut self) {
        while let Some(l) = self.next_line().await {
            if l == "QUIT" {
                self.send("+OK bye\r\n").await;
            }
        }
    }

    /// True when the client sends nothing for `ms`: proves it waits for our answer.
    async fn silent_for(&mut self, ms: u64) -> bool {
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_millis(ms), self.rd.read(&mut b))
            .await
            .is_err()
    }
}

/// Starts a one-connection server on 127.0.0.1 running `script`; the handle yields
/// every line the client sent.
async fn serve<F, Fut>(script: F) -> (Endpoint, JoinHandle<Vec<String>>)
where
    F: FnOnce(Peer) -> Fut + Send + 'static,
    Fut: Future<Output = Peer> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, w) = s.into_split();
        let peer = script(Peer {
            rd: BufReader::new(r),
            wr: w,
            got: Vec::new(),
        })
        .await;
        peer.got
    });
    let ep = Endpoint::parse(&format!("pop3://alice@127.0.0.1:{port}")).unwrap();
    (ep, h)
}

/// Only commands that leave the maildrop as it was may ever be sent.
fn assert_read_only(got: &[String]) {
    const ALLOWED: &[&str] = &[
        "CAPA", "STLS", "UTF8", "USER", "PASS", "AUTH", "STAT", "LIST", "UIDL", "RETR", "TOP",
        "NOOP", "QUIT",
    ];
    for l in got {
        let word = l.split(' ').next().unwrap();
        let sasl_reply = l.is_empty() || l == "*" || B64.decode(l).is_ok();
        assert!(ALLOWED.contains(&word) || sasl_reply, "client sent {l:?}");
    }
}

#[test]
fn source_never_names_a_deleting_command() {
    // Built at run time so this file does not contain the word it looks for.
    let forbidden = ["DE", "LE"].concat();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("src/source/pop3");
    let mut files = 0;
    let paths = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain([root.join("src/export/pop3.rs")]);
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        files += 1;
        let upper = text.to_ascii_uppercase();
        let bytes = upper.as_bytes();
        for (i, _) in upper.match_indices(&forbidden) {
            let before = i.checked_sub(1).map(|j| bytes[j]);
            let after = bytes.get(i + forbidden.len()).copied();
            let word = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
            assert!(
                word(before) || word(after),
                "{} mentions the {forbidden} command at byte {i}",
                path.display()
            );
        }
        assert!(!upper.contains("RSET"), "{} mentions RSET", path.display());
    }
    assert!(
        files >= 5,
        "expected mod.rs, proto.rs, sasl.rs, client.rs in {} and src/export/pop3.rs",
        dir.display()
    );
}

#[tokio::test]
async fn refuses_plaintext_login_without_stls() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\nSASL PLAIN\r\nUIDL\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let err = Pop3Client::connect(&ep, &password("hunter2"), &TlsOptions::default())
        .await
        .unwrap_err();
    let got = h.await.unwrap();
    assert!(matches!(err, Pop3Error::PlaintextRefused { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("pop3s://") && msg.contains("--allow-plaintext"),
        "{msg}"
    );
    assert_eq!(got, ["CAPA", "QUIT"]);
}

#[tokio::test]
async fn tries_stls_when_capa_is_missing_then_refuses() {
    let (ep, h) = serve(|mut p| async move {
        p.send("+OK old server\r\n").await;
        p.expect("CAPA").await;
        p.send("-ERR unknown command\r\n").await;
        p.expect("STLS").await;
        p.send("-ERR unknown command\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let err = Pop3Client::connect(&ep, &password("hunter2"), &TlsOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::PlaintextRefused { .. }), "{err:?}");
    assert_eq!(h.await.unwrap(), ["CAPA", "STLS", "QUIT"]);
}

#[tokio::test]
async fn refuses_data_injected_before_the_tls_handshake() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("STLS\r\nUSER\r\n").await;
        p.expect("STLS").await;
        // One write: the forged second answer arrives with the real one.
        p.send("+OK Begin TLS\r\n+OK forged\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let err = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::Tls { .. }), "{err:?}");
    let got = h.await.unwrap();
    assert!(!got.iter().any(|l| l.contains("pw")), "{got:?}");
}

/// The whole read-only session over USER/PASS, with a message trickled in pieces.
#[tokio::test]
async fn user_pass_session_streams_exact_bytes() {
    let wire: &[u8] =
        b"+OK 52 octets\r\nSubject: dots\r\n\r\n..\r\n...\r\n....\r\n..x\r\n.\rcr\r\nend\r\n.\r\n";
    let want: &[u8] = b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n.x\r\n.\rcr\r\nend\r\n";
    let (ep, h) = serve(move |mut p| async move {
        p.hello("USER\r\nUIDL\r\nTOP\r\n").await;
        p.expect("USER alice").await;
        p.send("+OK\r\n").await;
        p.expect("PASS pa ss").await;
        p.send("+OK logged in\r\n").await;
        p.expect("CAPA").await;
        p.send("-ERR not now\r\n").await;
        p.expect("STAT").await;
        p.send("+OK 2 300\r\n").await;
        p.expect("LIST").await;
        p.send("+OK 2 messages\r\n1 100\r\n2 200\r\n.\r\n").await;
        p.expect("UIDL").await;
        p.send("-ERR no UIDL here\r\n").await;
        p.expect("RETR 1").await;
        p.trickle(wire, 3).await;
        p.expect("RETR 2").await;
        p.trickle(b"+OK\r\n.\r\n", 1).await;
        p.expect("QUIT").await;
        p.send("+OK bye\r\n").await;
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pa ss"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    assert!(!c.is_tls());
    assert_eq!(c.auth_mechanism(), "USER/PASS");
    // Pre-login capabilities stay when the post-login CAPA fails.
    assert!(c.capabilities().has("TOP"));
    assert_eq!(c.stat().await.unwrap(), (2, 300));
    assert_eq!(c.list().await.unwrap(), [(1, 100), (2, 200)]);
    assert_eq!(c.uidl().await.unwrap(), None);
    let mut out = Vec::new();
    let info = c.retr(1, &mut out).await.unwrap();
    assert_eq!(out, want);
    assert_eq!(
        info,
        RetrInfo {
            msgno: 1,
            bytes: want.len() as u64,
            sha256: sha(want)
        }
    );
    let mut empty = Vec::new();
    let info = c.retr(2, &mut empty).await.unwrap();
    assert_eq!((empty.len(), info.bytes), (0, 0));
    assert_eq!(info.sha256_hex(), hex::encode(sha(b"")));
    c.quit().await.unwrap();
    assert_read_only(&h.await.unwrap());
}

/// RFC 6856: UTF8 is asked for before login when CAPA offers it (Courier serves a
/// stand-in for raw UTF-8 mail otherwise); a refusal is not fatal, and a server that
/// does not offer it never sees the command.
#[tokio::test]
async fn asks_for_utf8_before_login_only_when_offered() {
    for accept in [true, false] {
        let (ep, h) = serve(move |mut p| async move {
            p.hello("USER\r\nUTF8 USER\r\n").await;
            p.expect("UTF8").await;
            p.send(if accept {
                "+OK UTF8 enabled\r\n"
            } else {
                "-ERR not now\r\n"
            })
            .await;
            p.user_pass("secret", "USER\r\nUTF8 USER\r\n").await;
            p.drain().await;
            p
        })
        .await;
        let c = Pop3Client::connect_with(&ep, &password("secret"), &plaintext_ok(), &quick(5))
            .await
            .unwrap();
        assert_eq!(c.utf8_mode(), accept);
        drop(c);
        assert_read_only(&h.await.unwrap());
    }
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\n").await;
        p.user_pass("secret", "USER\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let c = Pop3Client::connect_with(&ep, &password("secret"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    assert!(!c.utf8_mode());
    drop(c);
    assert!(!h.await.unwrap().iter().any(|l| l == "UTF8"));
}

#[tokio::test]
async fn sasl_plain_is_preferred_when_offered() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\nSASL PLAIN LOGIN\r\n").await;
        let ir = B64.encode("\0alice\0secret");
        p.expect(&format!("AUTH PLAIN {ir}")).await;
        p.send("+OK Logged in.\r\n").await;
        p.expect("CAPA").await;
        p.send("+OK\r\nUIDL\r\n.\r\n").await;
        p.expect("UIDL").await;
        p.send("+OK\r\n1 abc\r\n2 d:e\r\n.\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("secret"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    assert_eq!(c.auth_mechanism(), "PLAIN");
    assert_eq!(
        c.uidl().await.unwrap().unwrap(),
        [(1, "abc".to_string()), (2, "d:e".to_string())]
    );
    c.quit().await.unwrap();
    h.await.unwrap();
}

#[tokio::test]
async fn wrong_password_is_auth_failed_without_the_password() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\n").await;
        p.expect("USER alice").await;
        p.send("+OK\r\n").await;
        p.expect("PASS hunter2").await;
        // A careless server that echoes what it got.
        p.send("-ERR [AUTH] bad password hunter2\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let err = Pop3Client::connect_with(&ep, &password("hunter2"), &plaintext_ok(), &quick(5))
        .await
        .unwrap_err();
    h.await.unwrap();
    match &err {
        Pop3Error::AuthFailed { code, .. } => assert_eq!(code, &Some(RespCode::Auth)),
        other => panic!("{other:?}"),
    }
    assert!(!err.is_transient());
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("alice"), "{text}");
    }
}

#[tokio::test]
async fn user_name_cannot_smuggle_a_command() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let creds = Credentials {
        user: "alice\r\nSTAT".into(),
        auth: Auth::Password(Secret::new("pw")),
    };
    let err = Pop3Client::connect_with(&ep, &creds, &plaintext_ok(), &quick(5))
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::Unsendable { .. }), "{err:?}");
    drop(err);
    assert_eq!(h.await.unwrap(), ["CAPA"]);
}

#[tokio::test]
async fn xoauth2_long_token_and_error_challenge() {
    let tok = "ya29.".to_string() + &"t".repeat(400);
    let expect_ir = B64.encode(format!("user=alice\x01auth=Bearer {tok}\x01\x01"));
    let (ep, h) = serve(move |mut p| async move {
        p.hello("SASL PLAIN XOAUTH2 OAUTHBEARER\r\n").await;
        // Too long for one 255-octet command line: RFC 5034 sends it after a "+".
        p.expect("AUTH XOAUTH2").await;
        p.send("+ \r\n").await;
        p.expect(&expect_ir).await;
        p.send(format!(
            "+ {}\r\n",
            B64.encode(r#"{"status":"401","schemes":"bearer"}"#)
        ))
        .await;
        p.expect("").await;
        p.send("-ERR [AUTH] Invalid credentials\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let err = Pop3Client::connect_with(&ep, &token(&tok), &plaintext_ok(), &quick(5))
        .await
        .unwrap_err();
    h.await.unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Pop3Error::AuthFailed { ref mechanism, .. } if mechanism == "XOAUTH2"));
    assert!(msg.contains("401"), "{msg}");
    assert!(
        !msg.contains("ya29") && !format!("{err:?}").contains("ya29"),
        "{msg}"
    );
}

#[tokio::test]
async fn oauthbearer_when_only_it_is_offered() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("SASL OAUTHBEARER\r\n").await;
        let line = p.line().await;
        let ir = line
            .strip_prefix("AUTH OAUTHBEARER ")
            .expect("inline initial response");
        let decoded = String::from_utf8(B64.decode(ir).unwrap()).unwrap();
        assert!(
            decoded.starts_with("n,a=alice,\x01host=127.0.0.1\x01port="),
            "{decoded:?}"
        );
        assert!(
            decoded.ends_with("\x01auth=Bearer tok123\x01\x01"),
            "{decoded:?}"
        );
        p.send("+OK\r\n").await;
        p.expect("CAPA").await;
        p.send("+OK\r\n.\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let c = Pop3Client::connect_with(&ep, &token("tok123"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    assert_eq!(c.auth_mechanism(), "OAUTHBEARER");
    c.quit().await.unwrap();
    h.await.unwrap();
}

#[tokio::test]
async fn oauth2_without_a_mechanism_is_unsupported() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\nSASL PLAIN\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let err = Pop3Client::connect_with(&ep, &token("tok"), &plaintext_ok(), &quick(5))
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::AuthUnsupported { .. }), "{err:?}");
    drop(err);
    assert_eq!(h.await.unwrap(), ["CAPA"]);
}

#[tokio::test]
async fn greeting_error_keeps_its_response_code() {
    let (ep, h) = serve(|mut p| async move {
        p.send("-ERR [SYS/TEMP] too many connections\r\n").await;
        p
    })
    .await;
    let err = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap_err();
    h.await.unwrap();
    match &err {
        Pop3Error::Server { code, text, .. } => {
            assert_eq!(code, &Some(RespCode::SysTemp));
            assert_eq!(text, "too many connections");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_transient());
}

/// Records the calls a sink receives.
#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    current: Vec<u8>,
    messages: Vec<(u32, Vec<u8>, RetrInfo)>,
    skip_refused: bool,
}

impl RetrSink for Recorder {
    fn begin(&mut self, msgno: u32) -> std::io::Result<()> {
        self.events.push(format!("begin {msgno}"));
        self.current.clear();
        Ok(())
    }
    fn data(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(chunk);
        Ok(())
    }
    fn end(&mut self, info: &RetrInfo) -> std::io::Result<()> {
        self.events.push(format!("end {}", info.msgno));
        self.messages
            .push((info.msgno, std::mem::take(&mut self.current), info.clone()));
        Ok(())
    }
    fn refused(&mut self, error: Pop3Error) -> Result<(), Pop3Error> {
        self.events
            .push(format!("refused {}", error.msgno().unwrap()));
        if self.skip_refused {
            Ok(())
        } else {
            Err(error)
        }
    }
}

fn body(n: u32) -> String {
    format!("Subject: {n}\r\n\r\n..dot {n}\r\n")
}

fn unstuffed(n: u32) -> Vec<u8> {
    format!("Subject: {n}\r\n\r\n.dot {n}\r\n").into_bytes()
}

#[tokio::test]
async fn pipelines_retr_when_offered_and_stays_in_step_after_refusals() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\nPIPELINING\r\n").await;
        p.user_pass("pw", "USER\r\nPIPELINING\r\nUIDL\r\n").await;
        // Nothing is answered until three RETRs are in: a client that waits for each
        // answer would stall here and time out.
        for n in 1..=3 {
            p.expect(&format!("RETR {n}")).await;
        }
        for n in 1..=3 {
            p.send(format!("+OK\r\n{}.\r\n", body(n))).await;
        }
        // Second batch: message 5 is refused.
        for n in 4..=6 {
            p.expect(&format!("RETR {n}")).await;
        }
        p.send(format!("+OK\r\n{}.\r\n", body(4))).await;
        p.send("-ERR [SYS/PERM] cannot read message\r\n").await;
        p.send(format!("+OK\r\n{}.\r\n", body(6))).await;
        p.expect("NOOP").await;
        p.send("+OK\r\n").await;
        // Third batch with a sink that skips refusals.
        p.expect("RETR 7").await;
        p.expect("RETR 8").await;
        p.send("-ERR [IN-USE] busy\r\n").await;
        p.send(format!("+OK\r\n{}.\r\n", body(8))).await;
        p.drain().await;
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(3))
        .await
        .unwrap();
    assert!(c.capabilities().pipelining());

    let mut rec = Recorder::default();
    c.retr_many(&[1, 2, 3], &mut rec).await.unwrap();
    assert_eq!(
        rec.events,
        ["begin 1", "end 1", "begin 2", "end 2", "begin 3", "end 3"]
    );
    for (n, bytes, info) in &rec.messages {
        assert_eq!(bytes, &unstuffed(*n));
        assert_eq!(info.sha256, sha(&unstuffed(*n)));
    }

    let mut rec = Recorder::default();
    let err = c.retr_many(&[4, 5, 6], &mut rec).await.unwrap_err();
    match &err {
        Pop3Error::Server { msgno, code, .. } => {
            assert_eq!((*msgno, code), (Some(5), &Some(RespCode::SysPerm)));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("message 5"), "{err}");
    // Message 6 was already asked for: read and dropped, never handed to the sink.
    assert_eq!(rec.events, ["begin 4", "end 4", "refused 5"]);
    c.noop().await.unwrap();

    let mut rec = Recorder {
        skip_refused: true,
        ..Recorder::default()
    };
    c.retr_many(&[7, 8], &mut rec).await.unwrap();
    assert_eq!(rec.events, ["refused 7", "begin 8", "end 8"]);
    assert_eq!(rec.messages[0].1, unstuffed(8));
    c.quit().await.unwrap();
    assert_read_only(&h.await.unwrap());
}

#[tokio::test]
async fn pipelines_whole_message_top_when_offered() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\nTOP\r\nPIPELINING\r\n").await;
        p.user_pass("pw", "USER\r\nTOP\r\nPIPELINING\r\nUIDL\r\n")
            .await;
        for n in 1..=3 {
            p.expect(&format!("TOP {n} 2147483647")).await;
        }
        p.send(format!("+OK\r\n{}.\r\n", body(1))).await;
        p.send("-ERR [SYS/PERM] no TOP for this one\r\n").await;
        p.trickle(format!("+OK\r\n{}.\r\n", body(3)).as_bytes(), 3)
            .await;
        p.drain().await;
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    assert_eq!(c.whole_message_command(), Retrieve::Top);
    let mut rec = Recorder {
        skip_refused: true,
        ..Recorder::default()
    };
    c.fetch_many(&[1, 2, 3], Retrieve::Top, &mut rec)
        .await
        .unwrap();
    assert_eq!(
        rec.events,
        ["begin 1", "end 1", "refused 2", "begin 3", "end 3"]
    );
    for (n, bytes, info) in &rec.messages {
        assert_eq!(bytes, &unstuffed(*n));
        assert_eq!(info.sha256, sha(&unstuffed(*n)));
    }
    c.close().await;
    let got = h.await.unwrap();
    assert_read_only(&got);
    assert!(!got.iter().any(|l| l.starts_with("RETR")), "{got:?}");
}

#[tokio::test]
async fn without_top_in_capa_whole_messages_are_read_with_retr() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\n").await;
        p.user_pass("pw", "USER\r\nUIDL\r\n").await;
        p.expect("RETR 1").await;
        p.send("-ERR [SYS/PERM] gone\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    let how = c.whole_message_command();
    assert_eq!(how, Retrieve::Retr);
    let err = c.fetch(1, how, &mut Vec::new()).await.unwrap_err();
    assert!(err.to_string().contains("RETR of message 1"), "{err}");
    c.close().await;
    h.await.unwrap();
}

#[tokio::test]
async fn waits_for_each_answer_without_pipelining() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\n").await;
        p.user_pass("pw", "USER\r\n").await;
        for n in 1..=3 {
            p.expect(&format!("RETR {n}")).await;
            assert!(
                p.silent_for(200).await,
                "second RETR sent before the first answer"
            );
            p.send(format!("+OK\r\n{}.\r\n", body(n))).await;
        }
        p.drain().await;
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    let mut rec = Recorder::default();
    c.retr_many(&[1, 2, 3], &mut rec).await.unwrap();
    assert_eq!(rec.messages.len(), 3);
    c.quit().await.unwrap();
    h.await.unwrap();
}

#[tokio::test]
async fn dropped_connection_mid_retr_is_connection_lost() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\n").await;
        p.user_pass("pw", "USER\r\n").await;
        p.expect("RETR 3").await;
        p.send("+OK 100000 octets\r\n").await;
        p.send(vec![b'a'; 5000]).await;
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    let mut out = Vec::new();
    let err = c.retr(3, &mut out).await.unwrap_err();
    h.await.unwrap();
    match &err {
        Pop3Error::ConnectionLost {
            msgno, received, ..
        } => assert_eq!((*msgno, *received), (Some(3), 5000)),
        other => panic!("{other:?}"),
    }
    assert!(err.is_connection_lost() && err.msgno() == Some(3));
    assert_eq!(out.len(), 5000);
    // The session is known broken: later calls fail at once instead of misreading.
    let later = c.stat().await.unwrap_err();
    assert!(later.is_connection_lost(), "{later:?}");
}

#[tokio::test]
async fn silent_server_times_out_instead_of_hanging() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\n").await;
        p.user_pass("pw", "USER\r\n").await;
        p.expect("RETR 1").await;
        p.send("+OK\r\nSubject: half\r\n").await;
        // Hold the connection open and say nothing more.
        tokio::time::sleep(Duration::from_secs(30)).await;
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    c.set_timeout(Duration::from_secs(1));
    let err = c.retr(1, &mut Vec::new()).await.unwrap_err();
    h.abort();
    assert!(
        matches!(err, Pop3Error::Timeout { msgno: Some(1), .. }),
        "{err:?}"
    );
    assert!(err.is_connection_lost());
}

#[tokio::test]
async fn failing_sink_is_reported_and_session_stays_usable() {
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\n").await;
        p.user_pass("pw", "USER\r\n").await;
        p.expect("RETR 1").await;
        p.send(format!("+OK\r\n{}.\r\n", body(1))).await;
        p.expect("STAT").await;
        p.send("+OK 1 30\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    let err = c.retr(1, &mut Full).await.unwrap_err();
    assert!(matches!(err, Pop3Error::Sink { msgno: 1, .. }), "{err:?}");
    assert_eq!(c.stat().await.unwrap(), (1, 30));
    c.quit().await.unwrap();
    h.await.unwrap();
}

// ---- against a real Dovecot ----

/// `user`'s login on `d`, with `pw` instead of the real password when given.
fn dovecot_creds(d: &support::Dovecot, user: &str, pw: Option<&str>) -> Credentials {
    Credentials {
        user: user.into(),
        auth: Auth::Password(Secret::new(pw.unwrap_or(d.password(user)))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn dovecot_pop3s_and_stls_retrieve_exact_bytes() {
    let d = tokio::task::spawn_blocking(support::Dovecot::start)
        .await
        .unwrap();
    let msgs: Vec<Vec<u8>> = vec![
        b"Subject: dots\n\n.\n..\n...\n.x\nend\n".to_vec(),
        b"Subject: no newline\n\n.".to_vec(),
        b"Subject: sjis\n\n\x83\x5c\x95\x5c\r\n.\x82\xa0\n".to_vec(),
        "Subject: 日本語\n\n本文\n".as_bytes().to_vec(),
    ];
    let items: Vec<(Vec<u8>, &str, i64)> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (m.clone(), "", 1_700_000_000 + i as i64))
        .collect();
    d.seed_maildir("alice", "INBOX", &items);
    let tls = TlsOptions {
        ca_file: Some(d.ca_file()),
        ..TlsOptions::default()
    };
    let creds = dovecot_creds(&d, "alice", None);
    for url in [d.pop3s_url("alice"), d.pop3_url("alice")] {
        let ep = Endpoint::parse(&url).unwrap();
        let mut c = Pop3Client::connect(&ep, &creds, &tls).await.unwrap();
        assert!(c.is_tls(), "{url}");
        assert_eq!(c.auth_mechanism(), "PLAIN");
        let caps = c.capabilities();
        assert!(
            caps.pipelining() && caps.uidl() && caps.resp_codes(),
            "{caps:?}"
        );
        assert_eq!(c.stat().await.unwrap().0, msgs.len() as u32);
        let list = c.list().await.unwrap();
        let uidl = c.uidl().await.unwrap().expect("Dovecot has UIDL");
        assert_eq!(list.len(), msgs.len());
        assert_eq!(uidl.len(), msgs.len());
        let mut rec = Recorder::default();
        let nos: Vec<u32> = list.iter().map(|(n, _)| *n).collect();
        c.retr_many(&nos, &mut rec).await.unwrap();
        let mut got: Vec<Vec<u8>> = rec.messages.iter().map(|(_, b, _)| b.clone()).collect();
        for (_, b, info) in &rec.messages {
            assert_eq!(info.sha256, sha(b));
        }
        let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| pop3_form(m)).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{url}");
        c.close().await;
    }
}

/// `user`'s INBOX flags as Dovecot reports them, then every message file name (with
/// its Maildir flag letters), sorted. Dovecot records a session's flag changes in its
/// index and renames the files only at a later sync; `doveadm fetch` reads the index
/// and syncs, so both views are current.
fn maildir_names(d: &support::Dovecot, user: &str) -> Vec<String> {
    // \Recent is not stored with a message: it only says which session saw it first.
    let flags = d
        .doveadm(&["fetch", "-u", user, "uid flags", "mailbox", "INBOX", "all"])
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter(|w| *w != "\\Recent")
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut v: Vec<String> = ["cur", "new"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(d.maildir(user).join("INBOX").join(sub)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v.insert(0, flags);
    v
}

/// `(top, retr)` message counts of each POP3 session of `user` Dovecot logged as ended.
fn pop3_sessions(d: &support::Dovecot, user: &str) -> Vec<(u64, u64)> {
    let count = |l: &str, key: &str| -> u64 {
        let v = l.split(key).nth(1).expect("Dovecot's pop3_logout_format");
        v.split('/').next().unwrap().parse().unwrap()
    };
    d.log()
        .lines()
        .filter(|l| l.contains(&format!("pop3({user})")) && l.contains("Disconnected"))
        .map(|l| (count(l, "top="), count(l, "retr=")))
        .collect()
}

/// Waits for Dovecot to log the end of `n` POP3 sessions. Dovecot decides the flag
/// changes of a session before it logs this line but commits them just after, so a
/// change can still be on its way; the `(top, retr)` counts are what prove none is.
fn pop3_sessions_ended(d: &support::Dovecot, user: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pop3_sessions(d, user).len() < n {
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The premise of reading with TOP, checked on the real server: Dovecot's TOP with
/// `TOP_WHOLE` lines sends exactly what RETR sends, headers-only messages, a missing
/// final newline and a last `.` line included, and leaves every flag as it was, while a
/// RETR session sets `\Seen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn dovecot_top_gives_retr_bytes_and_leaves_seen_alone() {
    let d = tokio::task::spawn_blocking(support::Dovecot::start)
        .await
        .unwrap();
    let msgs: Vec<Vec<u8>> = vec![
        b"Subject: headers only\nX-Empty: \n".to_vec(),
        b"Subject: headers only, no newline".to_vec(),
        b"Subject: header and blank line\n\n".to_vec(),
        b"Subject: dot line\n\nbody\n.\n".to_vec(),
        b"Subject: dot, no newline\n\nbody\n.".to_vec(),
        b"Subject: no newline\n\nlast line".to_vec(),
        b"Subject: dots\n\n.\n..\n...\n.x\n\n\n".to_vec(),
        b"Subject: crlf\r\n\r\nline\r\n".to_vec(),
        "Subject: 日本語\n\n本文\n.本文\n".as_bytes().to_vec(),
    ];
    let items: Vec<(Vec<u8>, &str, i64)> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (m.clone(), ["", "F", "FR"][i % 3], 1_700_000_000 + i as i64))
        .collect();
    d.seed_maildir("alice", "INBOX", &items);
    let before = maildir_names(&d, "alice");
    let tls = TlsOptions {
        ca_file: Some(d.ca_file()),
        ..TlsOptions::default()
    };
    let ep = Endpoint::parse(&d.pop3s_url("alice")).unwrap();
    let creds = dovecot_creds(&d, "alice", None);

    let read_all = |how: Retrieve| {
        let (ep, creds, tls) = (ep.clone(), creds.clone(), tls.clone());
        async move {
            let mut c = Pop3Client::connect(&ep, &creds, &tls).await.unwrap();
            let list = c.list().await.unwrap();
            let nos: Vec<u32> = list.iter().map(|(n, _)| *n).collect();
            let mut rec = Recorder::default();
            c.fetch_many(&nos, how, &mut rec).await.unwrap();
            c.close().await;
            (list, rec.messages)
        }
    };

    let c = Pop3Client::connect(&ep, &creds, &tls).await.unwrap();
    assert_eq!(c.whole_message_command(), Retrieve::Top);
    c.close().await;
    let (list, by_top) = read_all(Retrieve::Top).await;
    pop3_sessions_ended(&d, "alice", 2);
    assert_eq!(pop3_sessions(&d, "alice"), [(0, 0), (9, 0)]);
    assert_eq!(
        maildir_names(&d, "alice"),
        before,
        "a TOP session changed flags"
    );

    let (_, by_retr) = read_all(Retrieve::Retr).await;
    pop3_sessions_ended(&d, "alice", 3);
    assert_eq!(pop3_sessions(&d, "alice"), [(0, 0), (9, 0), (0, 9)]);
    // The control: a RETR session does set \Seen, on every message it sent.
    let seen_all = |v: &[String]| {
        v[1..]
            .iter()
            .all(|n| n.rsplit_once(":2,").unwrap().1.contains('S'))
            && v[0].matches("\\Seen").count() == msgs.len()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut after_retr = maildir_names(&d, "alice");
    while !seen_all(&after_retr) {
        assert!(
            std::time::Instant::now() < deadline,
            "RETR left \\Seen alone, so TOP would not be needed: {after_retr:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
        after_retr = maildir_names(&d, "alice");
    }
    // RETR changes nothing but \Seen.
    let strip = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|n| n.replace(" \\Seen", "").replace('S', ""))
            .collect()
    };
    assert_eq!(strip(&after_retr), strip(&before));

    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| pop3_form(m)).collect();
    want.sort();
    for got in [&by_top, &by_retr] {
        let mut bytes: Vec<Vec<u8>> = got.iter().map(|(_, b, _)| b.clone()).collect();
        bytes.sort();
        assert_eq!(bytes, want);
    }
    for ((n, top, _), (_, retr, _)) in by_top.iter().zip(&by_retr) {
        assert_eq!(top, retr, "message {n}");
        let size = list.iter().find(|(m, _)| m == n).unwrap().1;
        let verdict = judge_top(size, top.len() as u64, top);
        let stored = msgs.iter().find(|m| pop3_form(m) == *top).unwrap();
        let no_newline = !stored.ends_with(b"\n");
        let expect = if no_newline {
            TopVerdict::AddedFinalNewline
        } else {
            TopVerdict::Whole
        };
        assert_eq!(verdict, expect, "message {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn dovecot_refusals_are_typed() {
    let d = tokio::task::spawn_blocking(support::Dovecot::start)
        .await
        .unwrap();
    let ep = Endpoint::parse(&d.pop3s_url("bob")).unwrap();
    let trusted = TlsOptions {
        ca_file: Some(d.ca_file()),
        ..TlsOptions::default()
    };
    // Wrong password: Dovecot answers with the [AUTH] code, never transient.
    let err = Pop3Client::connect(&ep, &dovecot_creds(&d, "bob", Some("wrong-Zq9")), &trusted)
        .await
        .unwrap_err();
    match &err {
        Pop3Error::AuthFailed { code, .. } => assert_eq!(code, &Some(RespCode::Auth)),
        other => panic!("{other:?}"),
    }
    assert!(!err.is_transient() && !err.to_string().contains("wrong-Zq9"));
    // The self-signed certificate is not trusted without --tls-ca-file.
    let err = Pop3Client::connect(&ep, &dovecot_creds(&d, "bob", None), &TlsOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::Tls { .. }), "{err:?}");
    // APOP asked for, but Dovecot's greeting carries no timestamp by default.
    let opts = Pop3Options {
        apop: true,
        ..Pop3Options::default()
    };
    let err = Pop3Client::connect_with(&ep, &dovecot_creds(&d, "bob", None), &trusted, &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::AuthUnsupported { .. }), "{err:?}");
}

#[tokio::test]
async fn apop_login_when_asked_and_offered() {
    let digest = "c4c9334bac560ecc979e58001b3e22fb";
    let (ep, h) = serve(move |mut p| async move {
        p.send("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n")
            .await;
        p.expect("CAPA").await;
        p.send("-ERR\r\n").await;
        p.expect("STLS").await;
        p.send("-ERR\r\n").await;
        p.expect(&format!("APOP alice {digest}")).await;
        p.send("+OK maildrop has 0 messages\r\n").await;
        p.expect("CAPA").await;
        p.send("-ERR\r\n").await;
        p.drain().await;
        p
    })
    .await;
    let opts = Pop3Options {
        apop: true,
        ..quick(5)
    };
    let c = Pop3Client::connect_with(&ep, &password("tanstaaf"), &plaintext_ok(), &opts)
        .await
        .unwrap();
    assert_eq!(c.auth_mechanism(), "APOP");
    c.close().await;
    let got = h.await.unwrap();
    assert!(!got.iter().any(|l| l.contains("tanstaaf")), "{got:?}");
}

#[tokio::test]
async fn endless_status_line_is_a_protocol_error_not_a_memory_sink() {
    let (ep, h) = serve(|mut p| async move {
        p.send(vec![b'+'; 1]).await;
        // A "greeting" that never ends its line.
        for _ in 0..64 {
            p.send(vec![b'x'; 1024]).await;
        }
        p
    })
    .await;
    let err = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap_err();
    h.await.unwrap();
    match &err {
        Pop3Error::Protocol { detail, .. } => assert!(detail.contains("longer than"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

/// Writes `line` until the client stops reading (or `cap` bytes went out) and returns
/// how many bytes went out: a client that bounds the answer stops it early.
async fn flood(p: &mut Peer, line: &[u8], cap: u64) -> u64 {
    let chunk: Vec<u8> = line.iter().copied().cycle().take(64 * 1024).collect();
    let mut sent = 0u64;
    while sent < cap {
        let w = tokio::time::timeout(Duration::from_secs(2), p.wr.write_all(&chunk)).await;
        match w {
            Ok(Ok(())) => sent += chunk.len() as u64,
            _ => break,
        }
    }
    sent
}

/// Flooding stops at 1 GiB, far past any bound the client may keep.
const FLOOD_CAP: u64 = 1 << 30;

/// The test process's peak resident set (VmHWM) in bytes: it covers every test of this
/// binary, so a flood that grew memory shows here whichever test checks.
fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = s.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap();
    kb.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Above the 64 MiB a listing may hold (twice, while its buffer grows), far below the
/// gigabyte the floods send.
const PEAK_LIMIT: u64 = 400 << 20;

#[tokio::test]
async fn a_message_that_never_ends_is_cut_at_twice_its_list_size() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\n").await;
        p.user_pass("pw", "USER\r\n").await;
        p.expect("LIST").await;
        p.send("+OK\r\n1 100\r\n.\r\n").await;
        p.expect("RETR 1").await;
        p.send("+OK\r\n").await;
        let _ = tx.send(flood(&mut p, b"endless line of a message\r\n", FLOOD_CAP).await);
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    assert_eq!(c.list().await.unwrap(), vec![(1, 100)]);
    let mut rec = Recorder::default();
    let t0 = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), c.retr_many(&[1], &mut rec))
        .await
        .expect("the client kept reading an endless message")
        .unwrap_err();
    drop(c);
    let sent = rx.await.unwrap();
    h.abort();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(
        matches!(err, Pop3Error::TooLong { msgno: Some(1), .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("LIST announced 100"), "{err}");
    assert!(
        rec.current.len() as u64 <= 200 + (64 << 10) + (64 << 10),
        "{}",
        rec.current.len()
    );
    // What the client took in is bounded by its limit plus socket buffers.
    assert!(
        sent < 16 << 20,
        "the client read {sent} bytes of one message"
    );
    assert!(peak_rss() < PEAK_LIMIT, "peak RSS {} bytes", peak_rss());
}

#[tokio::test]
async fn a_listing_that_never_ends_is_cut() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\n").await;
        p.user_pass("pw", "USER\r\n").await;
        p.expect("LIST").await;
        p.send("+OK\r\n").await;
        let _ = tx.send(flood(&mut p, b"1 100\r\n", FLOOD_CAP).await);
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(60), c.list())
        .await
        .expect("the client kept reading an endless LIST")
        .unwrap_err();
    drop(c);
    let sent = rx.await.unwrap();
    h.abort();
    assert!(matches!(err, Pop3Error::TooLong { .. }), "{err:?}");
    assert!(err.to_string().contains("listing passed"), "{err}");
    assert!(
        sent < (64 << 20) + (16 << 20),
        "the client read {sent} bytes of LIST"
    );
    assert!(peak_rss() < PEAK_LIMIT, "peak RSS {} bytes", peak_rss());
}

#[tokio::test]
async fn a_status_line_trickled_a_byte_at_a_time_times_out() {
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\n").await;
        p.user_pass("pw", "USER\r\n").await;
        p.expect("STAT").await;
        for _ in 0..600 {
            p.send("+").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    c.set_timeout(Duration::from_secs(1));
    let t0 = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), c.stat())
        .await
        .expect("a trickled status line held the client")
        .unwrap_err();
    h.abort();
    assert!(matches!(err, Pop3Error::Timeout { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

/// A LIST answer for `n` messages of the sizes `body(k)` unstuffs to.
fn list_answer(n: u32) -> String {
    let mut s = String::from("+OK\r\n");
    for k in 1..=n {
        s.push_str(&format!("{k} {}\r\n", unstuffed(k).len()));
    }
    s.push_str(".\r\n");
    s
}

#[tokio::test]
async fn pipelines_hundreds_of_retrs_before_the_first_answer() {
    // Nothing is answered until every one of 300 RETRs has arrived: a window of a few
    // dozen commands (or lock-step) would stall here and time out.
    const N: u32 = 300;
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\nPIPELINING\r\n").await;
        p.user_pass("pw", "USER\r\nPIPELINING\r\nUIDL\r\n").await;
        p.expect("LIST").await;
        p.send(list_answer(N)).await;
        for n in 1..=N {
            p.expect(&format!("RETR {n}")).await;
        }
        let mut all = String::new();
        for n in 1..=N {
            all.push_str(&format!("+OK\r\n{}.\r\n", body(n)));
        }
        p.send(all).await;
        p.drain().await;
        p
    })
    .await;
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &quick(5))
        .await
        .unwrap();
    c.list().await.unwrap();
    let msgnos: Vec<u32> = (1..=N).collect();
    let mut rec = Recorder::default();
    c.retr_many(&msgnos, &mut rec).await.unwrap();
    // Every message, whole and in order.
    assert_eq!(rec.messages.len(), N as usize);
    for (k, (n, bytes, info)) in rec.messages.iter().enumerate() {
        assert_eq!(*n, k as u32 + 1);
        assert_eq!(bytes, &unstuffed(*n));
        assert_eq!(info.sha256, sha(&unstuffed(*n)));
    }
    c.quit().await.unwrap();
    assert_read_only(&h.await.unwrap());
}

#[tokio::test]
async fn the_pipeline_window_is_bounded_by_listed_bytes() {
    // Each message is 22 bytes by LIST; a window of 50 bytes holds two of them, so
    // the third RETR waits for the first answer, and so on down the list.
    let (ep, h) = serve(|mut p| async move {
        p.hello("USER\r\nPIPELINING\r\n").await;
        p.user_pass("pw", "USER\r\nPIPELINING\r\nUIDL\r\n").await;
        p.expect("LIST").await;
        p.send(list_answer(5)).await;
        p.expect("RETR 1").await;
        p.expect("RETR 2").await;
        for n in 1..=5 {
            assert!(
                p.silent_for(200).await,
                "more than 50 listed bytes asked for while message {n} was unanswered"
            );
            p.send(format!("+OK\r\n{}.\r\n", body(n))).await;
            if n + 2 <= 5 {
                p.expect(&format!("RETR {}", n + 2)).await;
            }
        }
        p.drain().await;
        p
    })
    .await;
    let opts = Pop3Options {
        pipeline_bytes: 50,
        ..quick(5)
    };
    let mut c = Pop3Client::connect_with(&ep, &password("pw"), &plaintext_ok(), &opts)
        .await
        .unwrap();
    let sizes = c.list().await.unwrap();
    assert!(sizes.iter().all(|&(_, s)| s == 22), "{sizes:?}");
    let mut rec = Recorder::default();
    c.retr_many(&[1, 2, 3, 4, 5], &mut rec).await.unwrap();
    assert_eq!(rec.messages.len(), 5);
    for (n, bytes, _) in &rec.messages {
        assert_eq!(bytes, &unstuffed(*n));
    }
    c.quit().await.unwrap();
    h.await.unwrap();
}
