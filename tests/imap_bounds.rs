//! A logged-in IMAP session against scripted servers that misbehave in ways no real
//! server does on demand: a line that never ends, a literal announcing 100 GB, folder
//! names that are not valid modified UTF-7, a server that stalls and one that trickles
//! a byte at a time. Each must end in a clear error within a few seconds, and the whole
//! test process must stay small while the servers flood it (its peak RSS is checked).
//! A large literal arriving slowly but steadily is read past the step timeout.

use std::time::{Duration, Instant};

use mailark::source::imap::{ImapError, ImapSession};
use mailark::source::net::{Auth, Credentials, Endpoint, Secret, TlsOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone, Copy)]
enum Script {
    EndlessListLine,
    HugeLiteral,
    BadUtf7Names,
    Stall,
    Trickle,
    SlowLiteral,
}

/// Writes `pattern` repeatedly until the client stops reading; returns the bytes sent.
async fn flood(w: &mut tokio::net::tcp::OwnedWriteHalf, pattern: &[u8]) -> u64 {
    let chunk: Vec<u8> = pattern.iter().copied().cycle().take(64 * 1024).collect();
    let mut sent = 0u64;
    while sent < 1 << 30 {
        match tokio::time::timeout(Duration::from_secs(2), w.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len() as u64,
            _ => break,
        }
    }
    sent
}

/// One connection: greeting, AUTHENTICATE PLAIN, CAPABILITY, then `script` for LIST.
/// The handle yields how many bytes the LIST answer pushed out.
async fn serve(script: Script) -> (Endpoint, tokio::task::JoinHandle<u64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut rd = BufReader::new(r);
        w.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted\r\n")
            .await
            .unwrap();
        let mut line = String::new();
        let mut auth_tag: Option<String> = None;
        loop {
            line.clear();
            if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                return 0;
            }
            if let Some(t) = auth_tag.take() {
                w.write_all(format!("{t} OK logged in\r\n").as_bytes())
                    .await
                    .unwrap();
                continue;
            }
            let l = line.trim_end().to_string();
            let (tag, cmd) = l.split_once(' ').unwrap_or((&l, ""));
            let up = cmd.to_ascii_uppercase();
            let out = if up.starts_with("AUTHENTICATE") {
                auth_tag = Some(tag.to_string());
                "+ \r\n".to_string()
            } else if up.starts_with("CAPABILITY") {
                format!("* CAPABILITY IMAP4rev1\r\n{tag} OK\r\n")
            } else if up.starts_with("LIST") {
                break_list(script, tag, &mut w).await;
                continue;
            } else if up.starts_with("LSUB") {
                format!("{tag} OK\r\n")
            } else if up.starts_with("LOGOUT") {
                format!("* BYE\r\n{tag} OK\r\n")
            } else {
                format!("{tag} BAD unknown\r\n")
            };
            // The client may be gone (it gave up on the LIST, with LSUB behind it in
            // its pipeline): that ends the script, not a panic (whose backtrace alone
            // would take the test process past its memory bound).
            if w.write_all(out.as_bytes()).await.is_err() {
                return 0;
            }
        }
    });
    let h = tokio::spawn(async move { h.await.unwrap_or(0) });
    let ep = Endpoint::parse(&format!("imap://alice@127.0.0.1:{port}")).unwrap();
    (ep, h)
}

async fn break_list(script: Script, tag: &str, w: &mut tokio::net::tcp::OwnedWriteHalf) {
    match script {
        Script::EndlessListLine => {
            w.write_all(b"* LIST () \"/\" ").await.unwrap();
            flood(w, b"a").await;
        }
        Script::HugeLiteral => {
            w.write_all(b"* LIST () \"/\" {107374182400}\r\n")
                .await
                .unwrap();
            flood(w, b"0123456789").await;
        }
        Script::BadUtf7Names => {
            let names = ["INBOX", "&Jjo", "&-&", "a&AGE-b", "&2DQ-", "&ZeVnLIqe-"];
            let mut out = String::new();
            for n in names {
                out.push_str(&format!("* LIST () \"/\" \"{n}\"\r\n"));
            }
            out.push_str(&format!("{tag} OK\r\n"));
            w.write_all(out.as_bytes()).await.unwrap();
        }
        Script::Stall => tokio::time::sleep(Duration::from_secs(60)).await,
        Script::SlowLiteral => {
            // 3 MiB at about 1.5 MiB/s: a large message on a slow link, which takes
            // longer than the step timeout but keeps coming at a useful rate.
            let n = 3 << 20;
            w.write_all(format!("* LIST () \"/\" {{{n}}}\r\n").as_bytes())
                .await
                .unwrap();
            for _ in 0..n / (64 << 10) {
                w.write_all(&[b'a'; 64 << 10]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            w.write_all(format!("\r\n{tag} OK\r\n").as_bytes())
                .await
                .unwrap();
        }
        Script::Trickle => {
            for b in b"* LIST () \"/\" INBOX\r\n".iter().cycle().take(120) {
                if w.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn login(ep: &Endpoint, t: Duration) -> ImapSession {
    let creds = Credentials {
        user: "alice".into(),
        auth: Auth::Password(Secret::new("pw")),
    };
    let tls = TlsOptions {
        allow_plaintext: true,
        ..TlsOptions::default()
    };
    ImapSession::connect_with_timeout(ep, &creds, &tls, t)
        .await
        .unwrap()
}

/// The test process's peak resident set (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Far below what the floods would make an unbounded reader hold (they go on to 1 GiB
/// each), far above what the bounded one needs.
const PEAK_LIMIT: u64 = 200 << 20;

/// Runs LIST against `script` with a 2 s step timeout; the error, how long it took and
/// how many bytes the server pushed.
async fn list_against(script: Script) -> (ImapError, Duration, u64) {
    let (ep, h) = serve(script).await;
    let mut s = login(&ep, Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(60), s.list())
        .await
        .expect("LIST was not bounded in time");
    let took = t0.elapsed();
    drop(s);
    let err = r.unwrap_err();
    let sent = tokio::time::timeout(Duration::from_secs(10), h)
        .await
        .map(|r| r.unwrap())
        .unwrap_or(0);
    assert!(peak_rss() < PEAK_LIMIT, "peak RSS {} bytes", peak_rss());
    (err, took, sent)
}

#[tokio::test]
async fn a_list_line_that_never_ends_is_cut_at_the_line_limit() {
    let (err, took, sent) = list_against(Script::EndlessListLine).await;
    assert!(matches!(err, ImapError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("line longer than"), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(sent < 32 << 20, "the client read {sent} bytes of one line");
}

#[tokio::test]
async fn a_literal_announcing_100_gb_is_refused_at_once() {
    let (err, took, sent) = list_against(Script::HugeLiteral).await;
    assert!(matches!(err, ImapError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("107374182400"), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        sent < 32 << 20,
        "the client read {sent} bytes of the literal"
    );
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    let (err, took, _) = list_against(Script::Stall).await;
    assert!(matches!(err, ImapError::Timeout { .. }), "{err:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_server_trickling_a_byte_at_a_time_times_out() {
    // Bytes keep coming, but no response completes within the step timeout.
    let (err, took, _) = list_against(Script::Trickle).await;
    assert!(matches!(err, ImapError::Timeout { .. }), "{err:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_literal_arriving_slowly_but_steadily_is_read_past_the_step_timeout() {
    let (ep, _h) = serve(Script::SlowLiteral).await;
    let mut s = login(&ep, Duration::from_secs(1)).await;
    let t0 = Instant::now();
    let got = s.list().await.unwrap();
    assert!(t0.elapsed() > Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].raw_name.len(), 3 << 20);
}

#[tokio::test]
async fn folder_names_that_are_not_modified_utf7_are_kept_as_sent() {
    let (ep, _h) = serve(Script::BadUtf7Names).await;
    let mut s = login(&ep, Duration::from_secs(5)).await;
    let got: Vec<(String, String)> = s
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.raw_name, m.name))
        .collect();
    let want = [
        ("INBOX", "INBOX"),
        ("&Jjo", "&Jjo"),
        ("&-&", "&-&"),
        ("a&AGE-b", "a&AGE-b"),
        ("&2DQ-", "&2DQ-"),
        ("&ZeVnLIqe-", "日本語"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(peak_rss() < PEAK_LIMIT);
}
