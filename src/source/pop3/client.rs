//! The POP3 session: connecting (implicit TLS or STLS), logging in, and the read-only
//! transaction commands, as a thin loop of tokio reads and writes around `proto`. It owns
//! transport policy (no credential ever crosses an unencrypted link unless the caller
//! allowed it), timeouts on every step so a dead server cannot hang an export, and error
//! typing precise enough for the caller to reconnect and resume after a dropped link.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::proto::{
    self, BodyLimit, Capabilities, Command, ProtoError, RespCode, Response, Retrieve, Status,
    MAX_STATUS_LINE,
};
use super::sasl;
use crate::log::{Protocol, WireTrace};
use crate::source::net::{self, Auth, Credentials, Endpoint, Scheme, Stream, TlsOptions};

/// How long any single step (connect, handshake, one read, one write) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

const READ_BUF: usize = 64 * 1024;
/// RFC 5034 §4: a command line is at most 255 octets, CRLF included.
const MAX_COMMAND_LINE: usize = 255;

#[derive(Debug, Clone)]
pub struct Pop3Options {
    /// Longest wait for one step. It restarts with every read, so a slow but live transfer
    /// of a big message is never cut, while a silent server is.
    pub timeout: Duration,
    /// Most RETR/TOP commands sent ahead of their answers when the server offers
    /// PIPELINING.
    pub pipeline_window: usize,
    /// Most message bytes (by the last LIST's sizes) asked for and not yet read, when
    /// the server offers PIPELINING; one command always goes.
    pub pipeline_bytes: u64,
    /// Log in with APOP (RFC 1939 §7) when a password is given; an error if the greeting
    /// offers no APOP timestamp. Asked for with `;AUTH=+APOP` in the URL (RFC 2384).
    pub apop: bool,
}

impl Default for Pop3Options {
    fn default() -> Self {
        Pop3Options {
            timeout: DEFAULT_TIMEOUT,
            // Deep enough for a 50 ms link at a few hundred MB/s: the answers wait in
            // the socket buffers (the server blocks on writing), not in our memory, and
            // the commands are ~20 bytes each, so they never fill a send buffer.
            pipeline_window: 1024,
            pipeline_bytes: 16 << 20,
            apop: false,
        }
    }
}

/// What one RETR (or whole-message TOP) delivered: the exact unstuffed bytes, counted
/// and hashed in passing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrInfo {
    pub msgno: u32,
    pub bytes: u64,
    pub sha256: [u8; 32],
}

impl RetrInfo {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Receives the messages of `Pop3Client::fetch_many` as they stream in: `begin`, any
/// number of `data` chunks, then `end`. A message cut short by a dropped connection gets
/// no `end`, so the sink knows to throw its partial bytes away.
pub trait RetrSink {
    fn begin(&mut self, msgno: u32) -> io::Result<()>;
    fn data(&mut self, chunk: &[u8]) -> io::Result<()>;
    fn end(&mut self, info: &RetrInfo) -> io::Result<()>;
    /// The server answered `-ERR` for one message (`Pop3Error::Server` with its number).
    /// Returning `Err` stops the batch with that error; returning `Ok` skips the message.
    fn refused(&mut self, error: Pop3Error) -> Result<(), Pop3Error> {
        Err(error)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    #[error("{0} is not a pop3:// or pop3s:// URL")]
    WrongScheme(String),
    #[error(transparent)]
    Connect(net::NetError),
    #[error("{endpoint}: TLS failed: {detail}")]
    Tls { endpoint: String, detail: String },
    #[error(
        "{endpoint}: the server offers no STLS, so the password would cross the network \
         unencrypted; use pop3s:// or pass --allow-plaintext"
    )]
    PlaintextRefused { endpoint: String },
    /// `server` is the server's own words, with any echo of the secret masked.
    #[error("{endpoint}: login as {user} with {mechanism} failed{}: {server}", code_suffix(.code))]
    AuthFailed {
        endpoint: String,
        user: String,
        mechanism: String,
        code: Option<RespCode>,
        server: String,
    },
    #[error("{endpoint}: the server offers no way to log in with {what}")]
    AuthUnsupported { endpoint: String, what: String },
    /// A command refused with `-ERR` in an established session.
    #[error("{endpoint}: {command}{} refused{}: {text}", msg_suffix(.msgno), code_suffix(.code))]
    Server {
        endpoint: String,
        command: String,
        msgno: Option<u32>,
        code: Option<RespCode>,
        text: String,
    },
    /// The link broke. `received` counts the message bytes already handed out for
    /// `msgno`, which the caller should discard before reconnecting and continuing.
    #[error(
        "{endpoint}: connection lost during {during}{}: {source}",
        received_suffix(.msgno, *.received)
    )]
    ConnectionLost {
        endpoint: String,
        during: String,
        msgno: Option<u32>,
        received: u64,
        source: io::Error,
    },
    #[error("{endpoint}: no answer within {} s during {during}", .after.as_secs_f32())]
    Timeout {
        endpoint: String,
        during: String,
        msgno: Option<u32>,
        after: Duration,
    },
    /// An answer longer than its bound ([`proto::BodyLimit`]): the client stopped
    /// reading it, so the session is gone; the same message will be as long next time.
    #[error("{endpoint}: {during}: {detail}")]
    TooLong {
        endpoint: String,
        during: String,
        msgno: Option<u32>,
        detail: String,
    },
    #[error("{endpoint}: protocol error during {during}: {detail}")]
    Protocol {
        endpoint: String,
        during: String,
        detail: String,
    },
    /// A value we were asked to send cannot be carried by POP3 (names the field only).
    #[error("{endpoint}: {source}")]
    Unsendable {
        endpoint: String,
        source: ProtoError,
    },
    /// The caller's sink failed; the session itself is still in step.
    #[error("writing message {msgno}: {source}")]
    Sink { msgno: u32, source: io::Error },
}

fn code_suffix(code: &Option<RespCode>) -> String {
    code.as_ref().map(|c| format!(" [{c}]")).unwrap_or_default()
}

fn msg_suffix(msgno: &Option<u32>) -> String {
    msgno
        .map(|n| format!(" of message {n}"))
        .unwrap_or_default()
}

fn received_suffix(msgno: &Option<u32>, received: u64) -> String {
    match msgno {
        Some(n) => format!(" of message {n} after {received} bytes"),
        None => String::new(),
    }
}

impl Pop3Error {
    /// The link is gone: reconnecting and carrying on from `msgno()` may succeed.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Pop3Error::ConnectionLost { .. } | Pop3Error::Timeout { .. }
        )
    }

    /// The server said (through a response code) that trying again later may work.
    pub fn is_transient(&self) -> bool {
        match self {
            Pop3Error::AuthFailed { code: Some(c), .. }
            | Pop3Error::Server { code: Some(c), .. } => c.is_transient(),
            _ => self.is_connection_lost(),
        }
    }

    /// The message the error is about, when there is one.
    pub fn msgno(&self) -> Option<u32> {
        match self {
            Pop3Error::Server { msgno, .. }
            | Pop3Error::ConnectionLost { msgno, .. }
            | Pop3Error::Timeout { msgno, .. }
            | Pop3Error::TooLong { msgno, .. } => *msgno,
            Pop3Error::Sink { msgno, .. } => Some(*msgno),
            _ => None,
        }
    }
}

/// A low-level failure before it is given its context.
enum Fail {
    Lost(io::Error),
    Timeout,
    Protocol(String),
    TooLong(String),
}

/// The byte stream with a read buffer. Only this touches the socket.
struct Conn {
    stream: Stream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    timeout: Duration,
    trace: Option<WireTrace>,
}

impl Conn {
    fn new(stream: Stream, timeout: Duration, trace: Option<WireTrace>) -> Conn {
        Conn {
            stream,
            trace,
            buf: vec![0; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            timeout,
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        if let Some(t) = &mut self.trace {
            t.sent(bytes);
        }
        let io = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match timeout(self.timeout, io).await {
            Err(_) => Err(Fail::Timeout),
            Ok(Err(e)) => Err(Fail::Lost(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn fill(&mut self) -> Result<(), Fail> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < READ_BUF / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        debug_assert!(self.end < self.buf.len());
        match timeout(self.timeout, self.stream.read(&mut self.buf[self.end..])).await {
            Err(_) => Err(Fail::Timeout),
            Ok(Err(e)) => Err(Fail::Lost(e)),
            Ok(Ok(0)) => Err(Fail::Lost(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ))),
            Ok(Ok(n)) => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// One status line, which must arrive whole within one timeout: a server trickling
    /// a byte at a time would otherwise hold the session for hours within the line cap.
    async fn read_line(&mut self) -> Result<Vec<u8>, Fail> {
        let t = self.timeout;
        timeout(t, self.read_line_untimed())
            .await
            .unwrap_or(Err(Fail::Timeout))
    }

    async fn read_line_untimed(&mut self) -> Result<Vec<u8>, Fail> {
        // Remember how far we looked, so a line arriving in many pieces is scanned once.
        let mut scanned = 0;
        loop {
            let window = &self.buf[self.start + scanned..self.end];
            if let Some(p) = window.iter().position(|&b| b == b'\n') {
                let stop = self.start + scanned + p + 1;
                let line = self.buf[self.start..stop].to_vec();
                self.start = stop;
                if let Some(t) = &mut self.trace {
                    t.received(&line);
                }
                return Ok(line);
            }
            scanned = self.end - self.start;
            if scanned >= MAX_STATUS_LINE {
                return Err(Fail::Protocol(format!(
                    "status line longer than {MAX_STATUS_LINE} bytes"
                )));
            }
            self.fill().await?;
        }
    }

    /// Streams one multi-line body through the unstuffer, leaving whatever follows its
    /// terminator (a pipelined answer) in the buffer. Stops with an error as soon as the
    /// body is longer than `limit` allows, so an answer that never ends is not read on.
    async fn read_body(
        &mut self,
        limit: BodyLimit,
        mut emit: impl FnMut(&[u8]),
    ) -> Result<(), Fail> {
        let mut unstuffer = proto::Unstuffer::new();
        let mut received = 0u64;
        loop {
            if self.start < self.end {
                let fed = unstuffer.feed(&self.buf[self.start..self.end], |chunk| {
                    received += chunk.len() as u64;
                    emit(chunk)
                });
                limit
                    .check(received)
                    .map_err(|e| Fail::TooLong(e.to_string()))?;
                match fed {
                    Some(n) => {
                        self.start += n;
                        if let Some(t) = &mut self.trace {
                            t.received_body(received);
                        }
                        return Ok(());
                    }
                    None => self.start = self.end,
                }
            }
            self.fill().await?;
        }
    }
}

/// A logged-in POP3 session. It can list and read messages and nothing else: no command
/// that changes the maildrop exists in `proto::Command`.
pub struct Pop3Client {
    conn: Conn,
    caps: Capabilities,
    endpoint: String,
    mechanism: &'static str,
    opts: Pop3Options,
    /// The greeting's APOP timestamp, when it had one.
    apop_timestamp: Option<String>,
    /// The sizes of the last LIST, which bound how much a message's answer may bring.
    list_sizes: HashMap<u32, u64>,
    /// Set once the stream is out of step (I/O failure, timeout, garbage): every later
    /// call fails fast instead of misreading the next answer.
    dead: bool,
    /// The server agreed to RFC 6856 UTF-8 mode.
    utf8: bool,
}

impl std::fmt::Debug for Pop3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pop3Client")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.is_tls())
            .field("mechanism", &self.mechanism)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

impl Pop3Client {
    /// Connects and logs in with the default options.
    pub async fn connect(
        ep: &Endpoint,
        creds: &Credentials,
        tls: &TlsOptions,
    ) -> Result<Pop3Client, Pop3Error> {
        Self::connect_with(ep, creds, tls, &Pop3Options::default()).await
    }

    /// `pop3s://` is TLS from the first byte. `pop3://` asks CAPA and upgrades with STLS
    /// (RFC 2595); without it, no credential is sent unless `tls.allow_plaintext`.
    pub async fn connect_with(
        ep: &Endpoint,
        creds: &Credentials,
        tls: &TlsOptions,
        opts: &Pop3Options,
    ) -> Result<Pop3Client, Pop3Error> {
        let endpoint = ep.to_string();
        if !matches!(ep.scheme, Scheme::Pop3 | Scheme::Pop3s) {
            return Err(Pop3Error::WrongScheme(endpoint));
        }
        let tls_err = |detail: String| Pop3Error::Tls {
            endpoint: endpoint.clone(),
            detail,
        };
        let connector = net::tls_connector(tls).map_err(|e| tls_err(e.to_string()))?;
        let tcp = match timeout(opts.timeout, net::tcp_connect(ep)).await {
            Err(_) => {
                return Err(Pop3Error::Timeout {
                    endpoint,
                    during: "connect".into(),
                    msgno: None,
                    after: opts.timeout,
                })
            }
            Ok(r) => r.map_err(Pop3Error::Connect)?,
        };
        let stream = if ep.scheme.implicit_tls() {
            Self::handshake(&connector, ep, tcp, opts.timeout, &endpoint).await?
        } else {
            Stream::Plain(tcp)
        };
        let mut c = Pop3Client {
            conn: Conn::new(
                stream,
                opts.timeout,
                WireTrace::new(Protocol::Pop3, &endpoint),
            ),
            caps: Capabilities::default(),
            endpoint,
            mechanism: "",
            opts: opts.clone(),
            apop_timestamp: None,
            list_sizes: HashMap::new(),
            dead: false,
            utf8: false,
        };
        let greeting = c.read_response("greeting", None).await?;
        let greeting = c.expect_ok(greeting, "greeting", None)?;
        c.apop_timestamp = proto::apop_timestamp(&greeting.text).map(str::to_string);
        let mut caps = c.capa().await?;
        if !c.conn.stream.is_tls() {
            // A server without CAPA may still know STLS (RFC 2595 predates RFC 2449).
            let offered = caps.as_ref().is_none_or(|c| c.stls());
            let upgraded = offered && c.command(Command::Stls, None).await?.is_ok();
            if upgraded {
                c = c.upgrade(&connector, ep).await?;
                // RFC 2595 §4: what was said before TLS may have been forged.
                caps = c.capa().await?;
            } else if !tls.allow_plaintext {
                let endpoint = c.endpoint.clone();
                let _ = c.quit().await;
                return Err(Pop3Error::PlaintextRefused { endpoint });
            }
        }
        c.caps = caps.unwrap_or_default();
        if c.caps.utf8() {
            // RFC 6856 asks for UTF-8 mode before login. A refusal is not fatal: a
            // stand-in served in its place shows as a size difference from LIST.
            c.utf8 = c.command(Command::Utf8, None).await?.is_ok();
        }
        c.login(creds, ep).await?;
        // Capabilities may differ once logged in (RFC 2449 §5); PIPELINING and UIDL
        // matter only from here on.
        if let Some(after) = c.capa().await? {
            c.caps = after;
        }
        Ok(c)
    }

    async fn handshake(
        connector: &tokio_native_tls::TlsConnector,
        ep: &Endpoint,
        tcp: tokio::net::TcpStream,
        limit: Duration,
        endpoint: &str,
    ) -> Result<Stream, Pop3Error> {
        match timeout(limit, net::tls_handshake(connector, ep, tcp)).await {
            Err(_) => Err(Pop3Error::Timeout {
                endpoint: endpoint.to_string(),
                during: "TLS handshake".into(),
                msgno: None,
                after: limit,
            }),
            Ok(Err(net::NetError::Handshake { detail, .. })) => Err(Pop3Error::Tls {
                endpoint: endpoint.to_string(),
                detail: format!("handshake failed: {detail}"),
            }),
            Ok(Err(e)) => Err(Pop3Error::Tls {
                endpoint: endpoint.to_string(),
                detail: e.to_string(),
            }),
            Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
        }
    }

    async fn upgrade(
        self,
        connector: &tokio_native_tls::TlsConnector,
        ep: &Endpoint,
    ) -> Result<Pop3Client, Pop3Error> {
        // Bytes that arrived before the handshake were sent in clear by someone who could
        // be an attacker; treating them as post-TLS answers is the STARTTLS injection bug.
        if self.conn.start != self.conn.end {
            return Err(Pop3Error::Tls {
                endpoint: self.endpoint,
                detail: "the server sent data after agreeing to STLS".into(),
            });
        }
        let Pop3Client {
            conn,
            endpoint,
            opts,
            apop_timestamp,
            ..
        } = self;
        let Stream::Plain(tcp) = conn.stream else {
            unreachable!("STLS is only tried on a plain stream")
        };
        let stream = Self::handshake(connector, ep, tcp, opts.timeout, &endpoint).await?;
        Ok(Pop3Client {
            conn: Conn::new(stream, opts.timeout, conn.trace),
            caps: Capabilities::default(),
            endpoint,
            mechanism: "",
            opts,
            apop_timestamp,
            list_sizes: HashMap::new(),
            dead: false,
            utf8: false,
        })
    }

    async fn login(&mut self, creds: &Credentials, ep: &Endpoint) -> Result<(), Pop3Error> {
        let user = creds.user.as_str();
        let secret = creds.secret();
        match &creds.auth {
            Auth::Password(_) if self.opts.apop => {
                let Some(ts) = self.apop_timestamp.clone() else {
                    return Err(Pop3Error::AuthUnsupported {
                        endpoint: self.endpoint.clone(),
                        what: "APOP (its greeting has no APOP timestamp)".into(),
                    });
                };
                let digest = sasl::apop_digest(&ts, secret);
                let cmd = Command::Apop {
                    user,
                    digest: &digest,
                };
                let r = self.command(cmd, None).await?;
                if !r.is_ok() {
                    return Err(self.auth_failed("APOP", user, r, &[secret, &digest]));
                }
                self.mechanism = "APOP";
                Ok(())
            }
            Auth::Password(_) => {
                if self.caps.has_sasl("PLAIN") {
                    let ir = sasl::plain(user, secret).map_err(|e| self.unsendable(e))?;
                    self.sasl("PLAIN", &ir, user, secret).await
                } else {
                    self.user_pass(user, secret).await
                }
            }
            Auth::OAuth2(_) => {
                let caps = &self.caps;
                // With no CAPA at all we cannot know; XOAUTH2 is the one most deployed.
                let mech = if caps.has_sasl("XOAUTH2") || caps.is_empty() {
                    "XOAUTH2"
                } else if caps.has_sasl("OAUTHBEARER") {
                    "OAUTHBEARER"
                } else {
                    return Err(Pop3Error::AuthUnsupported {
                        endpoint: self.endpoint.clone(),
                        what: "an OAuth2 token (no SASL XOAUTH2 or OAUTHBEARER)".into(),
                    });
                };
                let ir = if mech == "XOAUTH2" {
                    sasl::xoauth2(user, secret)
                } else {
                    sasl::oauthbearer(user, &ep.host, ep.port, secret)
                }
                .map_err(|e| self.unsendable(e))?;
                self.sasl(mech, &ir, user, secret).await
            }
        }
    }

    async fn user_pass(&mut self, user: &str, password: &str) -> Result<(), Pop3Error> {
        let r = self.command(Command::User(user), None).await?;
        if !r.is_ok() {
            return Err(self.auth_failed("USER/PASS", user, r, &[password]));
        }
        let r = self.command(Command::Pass(password), None).await?;
        if !r.is_ok() {
            return Err(self.auth_failed("USER/PASS", user, r, &[password]));
        }
        self.mechanism = "USER/PASS";
        Ok(())
    }

    async fn sasl(
        &mut self,
        mech: &'static str,
        ir: &str,
        user: &str,
        secret: &str,
    ) -> Result<(), Pop3Error> {
        let hide = [secret, ir];
        let inline = "AUTH ".len() + mech.len() + 1 + ir.len() + 2 <= MAX_COMMAND_LINE;
        let mut r = if inline {
            let cmd = Command::Auth {
                mechanism: mech,
                initial: Some(ir),
            };
            self.command(cmd, None).await?
        } else {
            let cmd = Command::Auth {
                mechanism: mech,
                initial: None,
            };
            let r = self.command(cmd, None).await?;
            if r.status != Status::Continue {
                return Err(self.auth_failed(mech, user, r, &hide));
            }
            self.command(Command::SaslResponse(ir), None).await?
        };
        let mut detail = String::new();
        if r.status == Status::Continue {
            // OAuth servers explain a refusal in a challenge and wait for a dummy reply.
            detail = sasl::challenge_text(&r.text);
            r = self
                .command(Command::SaslResponse(sasl::abort_reply(mech)), None)
                .await?;
        }
        match r.status {
            Status::Ok => {
                self.mechanism = mech;
                Ok(())
            }
            Status::Err => {
                if !detail.is_empty() {
                    r.text = format!("{} ({detail})", r.text);
                }
                Err(self.auth_failed(mech, user, r, &hide))
            }
            Status::Continue => Err(self.fail(
                Fail::Protocol("endless SASL challenges".into()),
                &format!("AUTH {mech}"),
                None,
                0,
            )),
        }
    }

    fn auth_failed(&self, mech: &str, user: &str, r: Response, hide: &[&str]) -> Pop3Error {
        let mut server = r.text;
        for h in hide.iter().filter(|h| !h.is_empty()) {
            server = server.replace(h, "***");
        }
        Pop3Error::AuthFailed {
            endpoint: self.endpoint.clone(),
            user: user.to_string(),
            mechanism: mech.to_string(),
            code: r.code,
            server,
        }
    }

    fn unsendable(&self, source: ProtoError) -> Pop3Error {
        Pop3Error::Unsendable {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// Gives a low-level failure its context and marks the session unusable.
    fn fail(&mut self, f: Fail, during: &str, msgno: Option<u32>, received: u64) -> Pop3Error {
        self.dead = true;
        let endpoint = self.endpoint.clone();
        let during = during.to_string();
        match f {
            Fail::Lost(source) => Pop3Error::ConnectionLost {
                endpoint,
                during,
                msgno,
                received,
                source,
            },
            Fail::Timeout => Pop3Error::Timeout {
                endpoint,
                during,
                msgno,
                after: self.conn.timeout,
            },
            Fail::Protocol(detail) => Pop3Error::Protocol {
                endpoint,
                during,
                detail,
            },
            Fail::TooLong(detail) => Pop3Error::TooLong {
                endpoint,
                during,
                msgno,
                detail,
            },
        }
    }

    fn check_alive(&self, during: &str) -> Result<(), Pop3Error> {
        if self.dead {
            return Err(Pop3Error::ConnectionLost {
                endpoint: self.endpoint.clone(),
                during: during.to_string(),
                msgno: None,
                received: 0,
                source: io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the session failed earlier; reconnect",
                ),
            });
        }
        Ok(())
    }

    async fn send(&mut self, cmd: Command<'_>, msgno: Option<u32>) -> Result<(), Pop3Error> {
        let during = cmd.to_string();
        self.check_alive(&during)?;
        let bytes = cmd.encode().map_err(|e| self.unsendable(e))?;
        let r = self.conn.send(&bytes).await;
        r.map_err(|f| self.fail(f, &during, msgno, 0))
    }

    async fn read_response(
        &mut self,
        during: &str,
        msgno: Option<u32>,
    ) -> Result<Response, Pop3Error> {
        let line = match self.conn.read_line().await {
            Ok(l) => l,
            Err(f) => return Err(self.fail(f, during, msgno, 0)),
        };
        proto::parse_response(&line)
            .map_err(|e| self.fail(Fail::Protocol(e.to_string()), during, msgno, 0))
    }

    async fn command(
        &mut self,
        cmd: Command<'_>,
        msgno: Option<u32>,
    ) -> Result<Response, Pop3Error> {
        self.send(cmd, msgno).await?;
        self.read_response(&cmd.to_string(), msgno).await
    }

    fn expect_ok(
        &mut self,
        r: Response,
        during: &str,
        msgno: Option<u32>,
    ) -> Result<Response, Pop3Error> {
        match r.status {
            Status::Ok => Ok(r),
            Status::Err => Err(Pop3Error::Server {
                endpoint: self.endpoint.clone(),
                command: during.to_string(),
                msgno,
                code: r.code,
                text: r.text,
            }),
            Status::Continue => Err(self.fail(
                Fail::Protocol("unexpected SASL challenge".into()),
                during,
                msgno,
                0,
            )),
        }
    }

    async fn read_listing(&mut self, during: &str) -> Result<Vec<u8>, Pop3Error> {
        let mut body = Vec::new();
        let r = self
            .conn
            .read_body(BodyLimit::Listing, |chunk| body.extend_from_slice(chunk))
            .await;
        match r {
            Ok(()) => Ok(body),
            Err(f) => Err(self.fail(f, during, None, 0)),
        }
    }

    fn malformed(&mut self, e: ProtoError, during: &str) -> Pop3Error {
        // The answer was read to its end, so the session stays usable.
        Pop3Error::Protocol {
            endpoint: self.endpoint.clone(),
            during: during.to_string(),
            detail: e.to_string(),
        }
    }

    /// `None` when the server has no CAPA (RFC 1939-only servers).
    async fn capa(&mut self) -> Result<Option<Capabilities>, Pop3Error> {
        let r = self.command(Command::Capa, None).await?;
        match r.status {
            Status::Ok => Ok(Some(Capabilities::parse(&self.read_listing("CAPA").await?))),
            _ => Ok(None),
        }
    }

    /// What the server advertised after login (empty when it has no CAPA).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Whether the session is in RFC 6856 UTF-8 mode.
    pub fn utf8_mode(&self) -> bool {
        self.utf8
    }

    /// How the login was made: `PLAIN`, `USER/PASS`, `APOP`, `XOAUTH2` or `OAUTHBEARER`.
    pub fn auth_mechanism(&self) -> &'static str {
        self.mechanism
    }

    pub fn is_tls(&self) -> bool {
        self.conn.stream.is_tls()
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.opts.timeout = t;
        self.conn.timeout = t;
    }

    /// `(message count, total octets)`.
    pub async fn stat(&mut self) -> Result<(u32, u64), Pop3Error> {
        self.send(Command::Stat, None).await?;
        self.stat_answer().await
    }

    async fn stat_answer(&mut self) -> Result<(u32, u64), Pop3Error> {
        let r = self.read_response("STAT", None).await?;
        let r = self.expect_ok(r, "STAT", None)?;
        proto::parse_stat(&r.text).map_err(|e| self.malformed(e, "STAT"))
    }

    /// `(msgno, octets)` for every message; octets are the server's CRLF count, which
    /// may differ slightly from what RETR delivers.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, Pop3Error> {
        self.send(Command::List, None).await?;
        self.list_answer().await
    }

    async fn list_answer(&mut self) -> Result<Vec<(u32, u64)>, Pop3Error> {
        let r = self.read_response("LIST", None).await?;
        self.expect_ok(r, "LIST", None)?;
        let body = self.read_listing("LIST").await?;
        let list = proto::parse_list(&body).map_err(|e| self.malformed(e, "LIST"))?;
        self.list_sizes = list.iter().copied().collect();
        Ok(list)
    }

    /// STAT, LIST and UIDL: all three sent at once when the server offers PIPELINING
    /// (one round trip instead of three), else one after the other. Every answer is
    /// read before an error is returned, so the session stays in step.
    #[allow(clippy::type_complexity)]
    pub async fn stat_list_uidl(
        &mut self,
    ) -> Result<((u32, u64), Vec<(u32, u64)>, Option<Vec<(u32, String)>>), Pop3Error> {
        if !self.caps.pipelining() {
            return Ok((self.stat().await?, self.list().await?, self.uidl().await?));
        }
        self.check_alive("STAT")?;
        let mut out = Vec::new();
        for c in [Command::Stat, Command::List, Command::Uidl] {
            out.extend(c.encode().map_err(|e| self.unsendable(e))?);
        }
        let r = self.conn.send(&out).await;
        r.map_err(|f| self.fail(f, "STAT", None, 0))?;
        let stat = self.stat_answer().await;
        if self.dead {
            return Err(stat.err().unwrap_or_else(|| self.lost_step("STAT")));
        }
        let list = self.list_answer().await;
        if self.dead {
            return Err(list.err().unwrap_or_else(|| self.lost_step("LIST")));
        }
        let uidl = self.uidl_answer().await;
        Ok((stat?, list?, uidl?))
    }

    /// The error for a session found dead after an answer that itself was fine.
    fn lost_step(&self, during: &str) -> Pop3Error {
        self.check_alive(during).expect_err("the session is dead")
    }

    /// `(msgno, unique id)` for every message, or `None` when the server has no UIDL.
    pub async fn uidl(&mut self) -> Result<Option<Vec<(u32, String)>>, Pop3Error> {
        self.send(Command::Uidl, None).await?;
        self.uidl_answer().await
    }

    async fn uidl_answer(&mut self) -> Result<Option<Vec<(u32, String)>>, Pop3Error> {
        let r = self.read_response("UIDL", None).await?;
        match r.status {
            Status::Err => return Ok(None),
            _ => self.expect_ok(r, "UIDL", None)?,
        };
        let body = self.read_listing("UIDL").await?;
        proto::parse_uidl(&body)
            .map(Some)
            .map_err(|e| self.malformed(e, "UIDL"))
    }

    pub async fn noop(&mut self) -> Result<(), Pop3Error> {
        let r = self.command(Command::Noop, None).await?;
        self.expect_ok(r, "NOOP", None).map(drop)
    }

    /// The command that reads a whole message without the server recording it as read:
    /// TOP when CAPA offers it, RETR otherwise.
    pub fn whole_message_command(&self) -> Retrieve {
        if self.caps.top() {
            Retrieve::Top
        } else {
            Retrieve::Retr
        }
    }

    /// Streams message `msgno` into `sink` exactly as stored (dot-stuffing removed, the
    /// terminator not included), hashing it on the way.
    pub async fn retr<W: Write + ?Sized>(
        &mut self,
        msgno: u32,
        sink: &mut W,
    ) -> Result<RetrInfo, Pop3Error> {
        self.fetch(msgno, Retrieve::Retr, sink).await
    }

    /// [`retr`](Self::retr) with the command chosen by `how`. With `Retrieve::Top` the
    /// caller checks the result against the LIST size ([`proto::judge_top`]).
    pub async fn fetch<W: Write + ?Sized>(
        &mut self,
        msgno: u32,
        how: Retrieve,
        sink: &mut W,
    ) -> Result<RetrInfo, Pop3Error> {
        struct One<'a, W: ?Sized> {
            w: &'a mut W,
            info: Option<RetrInfo>,
        }
        impl<W: Write + ?Sized> RetrSink for One<'_, W> {
            fn begin(&mut self, _: u32) -> io::Result<()> {
                Ok(())
            }
            fn data(&mut self, chunk: &[u8]) -> io::Result<()> {
                self.w.write_all(chunk)
            }
            fn end(&mut self, info: &RetrInfo) -> io::Result<()> {
                self.info = Some(info.clone());
                Ok(())
            }
        }
        let mut one = One {
            w: sink,
            info: None,
        };
        self.fetch_many(&[msgno], how, &mut one).await?;
        Ok(one
            .info
            .expect("fetch_many ends every message it returns Ok for"))
    }

    /// [`fetch_many`](Self::fetch_many) with RETR.
    pub async fn retr_many<S: RetrSink + ?Sized>(
        &mut self,
        msgnos: &[u32],
        sink: &mut S,
    ) -> Result<(), Pop3Error> {
        self.fetch_many(msgnos, Retrieve::Retr, sink).await
    }

    /// Streams several whole messages into `sink`, in order, each asked for with RETR or
    /// with `TOP n` [`proto::TOP_WHOLE`] as `how` says (the answers have the same form).
    /// With PIPELINING (RFC 2449) commands are sent ahead up to `pipeline_window` of
    /// them and `pipeline_bytes` of LIST sizes, so a round trip is paid per window, not
    /// per message; without it, one command at a time.
    ///
    /// On a sink error or a refusal the sink does not accept, no further command is
    /// sent, the answers already asked for are read and discarded (keeping the session
    /// in step), and the error is returned.
    pub async fn fetch_many<S: RetrSink + ?Sized>(
        &mut self,
        msgnos: &[u32],
        how: Retrieve,
        sink: &mut S,
    ) -> Result<(), Pop3Error> {
        self.check_alive(how.name())?;
        let (window, window_bytes) = if self.caps.pipelining() {
            (self.opts.pipeline_window.max(1), self.opts.pipeline_bytes)
        } else {
            (1, 0)
        };
        let sizes: Vec<u64> = msgnos
            .iter()
            .map(|n| self.list_sizes.get(n).copied().unwrap_or(0))
            .collect();
        let mut sent = 0;
        // LIST sizes of the messages asked for and not yet read.
        let mut ahead = 0u64;
        let mut abort: Option<Pop3Error> = None;
        for (done, &msgno) in msgnos.iter().enumerate() {
            let during = how.command(msgno).to_string();
            if abort.is_none() {
                let mut out = Vec::new();
                while sent < msgnos.len()
                    && sent < done + window
                    && (sent == done || ahead + sizes[sent] <= window_bytes)
                {
                    ahead += sizes[sent];
                    out.extend(how.command(msgnos[sent]).encode().expect("no free text"));
                    sent += 1;
                }
                if !out.is_empty() {
                    let r = self.conn.send(&out).await;
                    r.map_err(|f| self.fail(f, &during, Some(msgno), 0))?;
                }
            }
            if done >= sent {
                break;
            }
            ahead -= sizes[done];
            let r = self.read_response(&during, Some(msgno)).await?;
            if !r.is_ok() {
                let err = self.expect_ok(r, how.name(), Some(msgno)).unwrap_err();
                if err.is_connection_lost() || matches!(err, Pop3Error::Protocol { .. }) {
                    return Err(err);
                }
                if abort.is_none() {
                    if let Err(e) = sink.refused(err) {
                        abort = Some(e);
                    }
                }
                continue;
            }
            let live = abort.is_none();
            let mut hasher = Sha256::new();
            let mut bytes = 0u64;
            let mut sink_err = None;
            if live {
                sink_err = sink.begin(msgno).err();
            }
            let limit = BodyLimit::Message {
                msgno,
                list_size: self.list_sizes.get(&msgno).copied(),
            };
            let r = self
                .conn
                .read_body(limit, |chunk| {
                    bytes += chunk.len() as u64;
                    if live && sink_err.is_none() {
                        hasher.update(chunk);
                        sink_err = sink.data(chunk).err();
                    }
                })
                .await;
            if let Err(f) = r {
                return Err(self.fail(f, &during, Some(msgno), bytes));
            }
            if live {
                if sink_err.is_none() {
                    let info = RetrInfo {
                        msgno,
                        bytes,
                        sha256: hasher.finalize().into(),
                    };
                    sink_err = sink.end(&info).err();
                }
                if let Some(source) = sink_err {
                    abort = Some(Pop3Error::Sink { msgno, source });
                }
            }
        }
        match abort {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Ends the session with QUIT. Beware: QUIT enters the UPDATE state (RFC 1939 §6),
    /// where servers commit what the session did. A client that must leave the maildrop
    /// as it was calls [`close`](Self::close) instead.
    pub async fn quit(mut self) -> Result<(), Pop3Error> {
        let r = self.command(Command::Quit, None).await?;
        let _ = timeout(self.conn.timeout, self.conn.stream.shutdown()).await;
        self.expect_ok(r, "QUIT", None).map(drop)
    }

    /// Ends the session without QUIT, so the server never enters the UPDATE state
    /// (RFC 1939 §6: a session that ends otherwise does not update the maildrop). TLS is
    /// closed cleanly; the server just sees the client leave. (Dovecot still sets `\Seen`
    /// on the messages it sent by RETR, at the end of any session; not for TOP.)
    pub async fn close(mut self) {
        let _ = timeout(self.conn.timeout, self.conn.stream.shutdown()).await;
    }
}
