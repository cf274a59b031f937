//! The one place in mailark that knows which IMAP crate is used (async-imap on tokio).
//! It logs in (implicit TLS, STARTTLS, or plaintext only when allowed; LOGIN, AUTHENTICATE
//! PLAIN, XOAUTH2, OAUTHBEARER), lists and opens folders, and streams `UID FETCH`
//! responses as plain events. It checks every tagged status itself, because async-imap's
//! own fetch stream drops a tagged `NO`/`BAD` and a failed fetch would look like an empty
//! folder. Nothing here changes mail: folders are opened with EXAMINE and bodies are read
//! with `BODY.PEEK[]`.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::time::Duration;

use async_imap::imap_proto::{
    AttributeValue, MailboxDatum, NameAttribute, Response, ResponseCode, Status, UidSetMember,
};
use chrono::{DateTime, FixedOffset};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use super::bounds::{BoundError, Bounded, MAX_LINE};
use crate::source::net::{self, Auth, Credentials, Endpoint, NetError, Stream, TlsOptions};

/// The byte stream of a logged-in session: every read is checked against the bounds.
pub(super) type Wire = Bounded<Stream>;

/// How long one read or write may take before the link is considered dead.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{endpoint}: connection lost: {detail}")]
    ConnectionLost { endpoint: String, detail: String },
    #[error("{endpoint}: no answer from the server within {secs} s")]
    Timeout { endpoint: String, secs: u64 },
    #[error("{endpoint}: the server offers no STARTTLS; refusing to send credentials in clear text (--allow-plaintext allows it)")]
    PlaintextRefused { endpoint: String },
    #[error("{endpoint}: login as {user:?} refused: {text}")]
    Login {
        endpoint: String,
        user: String,
        text: String,
    },
    #[error("{endpoint}: {detail}")]
    Unsupported { endpoint: String, detail: String },
    #[error("{endpoint}: folder {folder:?}: {command} answered {status} {text}")]
    Folder {
        endpoint: String,
        folder: String,
        command: String,
        status: String,
        text: String,
    },
    #[error("{endpoint}: folder {folder:?}, UID {uid}: {detail}")]
    Message {
        endpoint: String,
        folder: String,
        uid: u32,
        detail: String,
    },
    #[error("{endpoint}: {command} answered {status} {text}")]
    Command {
        endpoint: String,
        command: String,
        status: String,
        text: String,
    },
    #[error("{endpoint}: unreadable server response: {detail}")]
    Protocol { endpoint: String, detail: String },
    #[error("{endpoint}: the server closed the session: {text}")]
    Bye { endpoint: String, text: String },
}

impl ImapError {
    /// The session is unusable and a new connection may succeed: the link dropped, timed
    /// out, the server said BYE, or a response could not be parsed (the parser cannot
    /// resynchronise on the same connection).
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            ImapError::ConnectionLost { .. }
                | ImapError::Timeout { .. }
                | ImapError::Bye { .. }
                | ImapError::Protocol { .. }
                | ImapError::Net(NetError::Connect { .. })
        )
    }

    /// The server asked us to slow down (Gmail `[THROTTLED]`, RFC 5530 `[LIMIT]`,
    /// `[UNAVAILABLE]`, or words to that effect).
    pub fn is_throttled(&self) -> bool {
        let text = match self {
            ImapError::Folder { text, .. }
            | ImapError::Command { text, .. }
            | ImapError::Bye { text, .. }
            | ImapError::Login { text, .. } => text,
            ImapError::Message { detail, .. } => detail,
            _ => return false,
        };
        is_throttle_text(text)
    }
}

pub fn is_throttle_text(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "throttl",
        "[limit]",
        "[unavailable]",
        "too many",
        "rate limit",
        "try again later",
        "temporar",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// A mailbox as LIST reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    /// The name on the wire (modified UTF-7), for commands.
    pub raw_name: String,
    /// The name decoded to UTF-8; `raw_name` itself when it is not valid modified UTF-7.
    pub name: String,
    pub delimiter: Option<char>,
    pub selectable: bool,
    pub subscribed: bool,
    /// `\Sent`, `\Drafts`, `\Trash`, `\Junk`, `\Archive`, `\All`, `\Flagged`.
    pub special_use: Option<String>,
}

/// What EXAMINE/SELECT reported about a folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderStatus {
    pub exists: u32,
    pub uidvalidity: Option<u32>,
    pub uidnext: Option<u32>,
    pub highestmodseq: Option<u64>,
    pub permanent_flags: Vec<String>,
}

/// Which data items a `UID FETCH` asks for. Every variant reads without side effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchWhat {
    /// UID, FLAGS, INTERNALDATE, RFC822.SIZE and the whole message (`BODY.PEEK[]`).
    Full,
    /// UID, FLAGS, INTERNALDATE, RFC822.SIZE.
    Meta,
    /// As `Meta`, plus the Message-ID, Date, From and Subject header fields.
    MetaMessageId,
    /// UID and RFC822.SIZE only (a cheap census of a folder).
    Sizes,
    /// UID only.
    Uids,
}

impl FetchWhat {
    fn items(self, condstore: bool) -> String {
        let base = "UID FLAGS INTERNALDATE RFC822.SIZE";
        let modseq = if condstore { " MODSEQ" } else { "" };
        match self {
            FetchWhat::Full => format!("({base}{modseq} BODY.PEEK[])"),
            FetchWhat::Meta => format!("({base}{modseq})"),
            FetchWhat::MetaMessageId => {
                format!("({base}{modseq} BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)])")
            }
            FetchWhat::Sizes => "(UID RFC822.SIZE)".to_string(),
            FetchWhat::Uids => "(UID)".to_string(),
        }
    }
}

/// One FETCH response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchedMessage {
    pub seq: u32,
    pub uid: Option<u32>,
    pub flags: Option<Vec<String>>,
    /// INTERNALDATE as the server wrote it.
    pub internaldate: Option<String>,
    pub size: Option<u32>,
    pub modseq: Option<u64>,
    /// The message bytes (`BODY[]`).
    pub body: Option<Vec<u8>>,
    /// A header section that was asked for (`BODY[HEADER.FIELDS (...)]`).
    pub header_fields: Option<Vec<u8>>,
}

/// Something the server said while commands were in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Fetch(FetchedMessage),
    /// The end of a tagged command. `ok` is false for NO and BAD; `status` and `text`
    /// keep the server's words.
    Done {
        tag: String,
        ok: bool,
        status: String,
        text: String,
    },
    Exists(u32),
    Expunge(u32),
    Vanished(Vec<RangeInclusive<u32>>),
    /// An untagged `OK`/`NO`/`BAD` (warnings, alerts, throttling notices).
    Notice {
        status: String,
        text: String,
    },
    Other,
}

/// A logged-in IMAP connection.
pub struct ImapSession {
    pub(super) inner: async_imap::Session<Wire>,
    caps: HashSet<String>,
    endpoint: String,
    timeout: Duration,
    namespace: Option<(String, Option<char>)>,
    selected: Option<String>,
    tls: bool,
}

impl std::fmt::Debug for ImapSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSession")
            .field("endpoint", &self.endpoint)
            .field("selected", &self.selected)
            .finish()
    }
}

/// Reads one CRLF-terminated line straight off the stream (before async-imap owns it),
/// a byte at a time so nothing past the line is consumed.
async fn raw_line<S: AsyncRead + Unpin>(
    s: &mut S,
    ep: &str,
    t: Duration,
) -> Result<Vec<u8>, ImapError> {
    let mut line = Vec::with_capacity(128);
    loop {
        let b = match timeout(t, s.read_u8()).await {
            Err(_) => {
                return Err(ImapError::Timeout {
                    endpoint: ep.to_string(),
                    secs: t.as_secs(),
                })
            }
            Ok(Err(e)) => return Err(lost(ep, e)),
            Ok(Ok(b)) => b,
        };
        line.push(b);
        if b == b'\n' {
            return Ok(line);
        }
        if line.len() > MAX_LINE {
            return Err(ImapError::Protocol {
                endpoint: ep.to_string(),
                detail: BoundError::LongLine.to_string(),
            });
        }
    }
}

async fn raw_send<S: AsyncWrite + Unpin>(
    s: &mut S,
    ep: &str,
    t: Duration,
    line: &str,
) -> Result<(), ImapError> {
    let fut = async {
        s.write_all(line.as_bytes()).await?;
        s.write_all(b"\r\n").await?;
        s.flush().await
    };
    match timeout(t, fut).await {
        Err(_) => Err(ImapError::Timeout {
            endpoint: ep.to_string(),
            secs: t.as_secs(),
        }),
        Ok(r) => r.map_err(|e| lost(ep, e)),
    }
}

/// Sends a tagged command on the raw stream and returns the untagged lines and the
/// tagged status line (without the tag).
async fn raw_command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    ep: &str,
    t: Duration,
    tag: &str,
    cmd: &str,
) -> Result<(Vec<Vec<u8>>, String), ImapError> {
    raw_send(s, ep, t, &format!("{tag} {cmd}")).await?;
    let mut data = Vec::new();
    loop {
        let l = raw_line(s, ep, t).await?;
        if let Some(rest) = l.strip_prefix(format!("{tag} ").as_bytes()) {
            return Ok((data, String::from_utf8_lossy(rest).trim_end().to_string()));
        }
        if l.starts_with(b"* BYE") {
            return Err(ImapError::Bye {
                endpoint: ep.to_string(),
                text: printable(&String::from_utf8_lossy(&l[5..])),
            });
        }
        data.push(l);
    }
}

/// A failed read or write; one that broke a [`bounds`](super::bounds) limit is the
/// server's protocol error, not a lost link.
pub(super) fn lost(ep: &str, e: std::io::Error) -> ImapError {
    if let Some(b) = e.get_ref().and_then(|i| i.downcast_ref::<BoundError>()) {
        return ImapError::Protocol {
            endpoint: ep.to_string(),
            detail: b.to_string(),
        };
    }
    ImapError::ConnectionLost {
        endpoint: ep.to_string(),
        detail: e.to_string(),
    }
}

/// Server text for a message: control characters dropped, length capped (a parse error
/// can quote a whole buffer of mail).
fn printable(s: &str) -> String {
    let t: String = s
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    t
}

/// The session's pure line parsers on one arbitrary line: the fuzz targets' only way
/// in (they must not panic, whatever a server sends).
#[doc(hidden)]
pub fn fuzz_line_parsers(line: &[u8]) {
    let _ = caps_from_line(line);
    let _ = parse_namespace(line);
    let s = String::from_utf8_lossy(line);
    let _ = unescape(&s);
    let _ = printable(&s);
    let _ = parse_internaldate(&s);
}

fn caps_from_line(line: &[u8]) -> Option<HashSet<String>> {
    let s = String::from_utf8_lossy(line);
    let up = s.to_ascii_uppercase();
    let start = if let Some(i) = up.find("[CAPABILITY ") {
        i + "[CAPABILITY ".len()
    } else if up.starts_with("* CAPABILITY ") {
        "* CAPABILITY ".len()
    } else {
        return None;
    };
    let rest = &up[start..];
    let end = rest.find(']').unwrap_or(rest.len());
    Some(
        rest[..end]
            .split_whitespace()
            .map(|c| c.to_string())
            .collect(),
    )
}

/// Cleans async-imap's `code: Some(..), info: Some("...")` error strings into the
/// server's own words.
fn server_words(s: &str) -> String {
    if let Some(i) = s.find("info: Some(\"") {
        let rest = &s[i + "info: Some(\"".len()..];
        let end = rest.rfind("\")").unwrap_or(rest.len());
        return printable(&rest[..end].replace("\\\"", "\""));
    }
    printable(s)
}

/// Quotes a mailbox name (or any string) for a command.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Undoes the backslash escapes of a quoted string (imap-proto leaves them in).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut esc = false;
    for c in s.chars() {
        if esc {
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// SASL initial responses; each carries a secret.
struct Sasl(Vec<u8>, bool);

impl async_imap::Authenticator for &mut Sasl {
    type Response = Vec<u8>;
    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        // The first continuation gets the credentials; a second one is the OAuth error
        // document, which must be answered with an empty response to get the tagged NO.
        if self.1 {
            return Vec::new();
        }
        self.1 = true;
        std::mem::take(&mut self.0)
    }
}

fn no_ctl(s: &str) -> bool {
    !s.bytes().any(|b| b == 0 || b == 1)
}

/// Parses `INTERNALDATE` (`17-Jul-1996 02:44:25 -0700`, day possibly space-padded).
pub fn parse_internaldate(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_str(s.trim(), "%d-%b-%Y %H:%M:%S %z").ok()
}

impl ImapSession {
    /// Connects and logs in.
    pub async fn connect(
        ep: &Endpoint,
        creds: &Credentials,
        tls: &TlsOptions,
    ) -> Result<ImapSession, ImapError> {
        ImapSession::connect_with_timeout(ep, creds, tls, DEFAULT_TIMEOUT).await
    }

    pub async fn connect_with_timeout(
        ep: &Endpoint,
        creds: &Credentials,
        tls: &TlsOptions,
        t: Duration,
    ) -> Result<ImapSession, ImapError> {
        let epn = ep.to_string();
        let tcp = match timeout(t, net::tcp_connect(ep)).await {
            Err(_) => {
                return Err(ImapError::Timeout {
                    endpoint: epn,
                    secs: t.as_secs(),
                })
            }
            Ok(r) => r?,
        };
        let mut stream = if ep.scheme.implicit_tls() {
            let conn = net::tls_connector(tls)?;
            Stream::Tls(Box::new(
                timeout(t, net::tls_handshake(&conn, ep, tcp))
                    .await
                    .map_err(|_| ImapError::Timeout {
                        endpoint: epn.clone(),
                        secs: t.as_secs(),
                    })??,
            ))
        } else {
            Stream::Plain(tcp)
        };
        let greeting = raw_line(&mut stream, &epn, t).await?;
        let g = String::from_utf8_lossy(&greeting).to_string();
        if let Some(rest) = g.strip_prefix("* BYE") {
            return Err(ImapError::Bye {
                endpoint: epn,
                text: printable(rest),
            });
        }
        if g.to_ascii_uppercase().starts_with("* PREAUTH") {
            return Err(ImapError::Unsupported {
                endpoint: epn,
                detail: "the server logged us in before authentication (PREAUTH); refusing an unauthenticated session".into(),
            });
        }
        if !g.starts_with("* OK") {
            return Err(ImapError::Protocol {
                endpoint: epn,
                detail: format!("not an IMAP greeting: {}", printable(&g)),
            });
        }
        let mut caps = match caps_from_line(&greeting) {
            Some(c) => c,
            None => Self::raw_caps(&mut stream, &epn, t, "m0").await?,
        };
        if !stream.is_tls() {
            if caps.contains("STARTTLS") {
                let (_, st) = raw_command(&mut stream, &epn, t, "m1", "STARTTLS").await?;
                if !st.to_ascii_uppercase().starts_with("OK") {
                    return Err(ImapError::Command {
                        endpoint: epn,
                        command: "STARTTLS".into(),
                        status: st.split(' ').next().unwrap_or("").to_string(),
                        text: printable(st.split_once(' ').map_or("", |x| x.1)),
                    });
                }
                let Stream::Plain(tcp) = stream else {
                    unreachable!("checked is_tls above")
                };
                let conn = net::tls_connector(tls)?;
                stream = Stream::Tls(Box::new(
                    timeout(t, net::tls_handshake(&conn, ep, tcp))
                        .await
                        .map_err(|_| ImapError::Timeout {
                            endpoint: epn.clone(),
                            secs: t.as_secs(),
                        })??,
                ));
                // Capabilities learnt in clear text may have been tampered with.
                caps = Self::raw_caps(&mut stream, &epn, t, "m2").await?;
            } else if !tls.allow_plaintext {
                return Err(ImapError::PlaintextRefused { endpoint: epn });
            }
        }
        let tls_used = stream.is_tls();
        let client = async_imap::Client::new(Bounded::new(stream, &epn));
        let login_err = |e: async_imap::error::Error| match e {
            async_imap::error::Error::No(s) | async_imap::error::Error::Bad(s) => {
                ImapError::Login {
                    endpoint: epn.clone(),
                    user: creds.user.clone(),
                    text: server_words(&s),
                }
            }
            async_imap::error::Error::Io(e) => lost(&epn, e),
            async_imap::error::Error::ConnectionLost => ImapError::ConnectionLost {
                endpoint: epn.clone(),
                detail: "during login".into(),
            },
            other => ImapError::Login {
                endpoint: epn.clone(),
                user: creds.user.clone(),
                // Validation and parse errors never quote the secret, only a character
                // or the server's bytes.
                text: printable(&other.to_string()),
            },
        };
        let user = creds.user.as_str();
        let login = async {
            match &creds.auth {
                Auth::OAuth2(tok) => {
                    let tok = tok.expose();
                    if !no_ctl(user) || !no_ctl(tok) {
                        return Err(ImapError::Unsupported {
                            endpoint: epn.clone(),
                            detail: "the user name or token holds a control character".into(),
                        });
                    }
                    let (mech, payload) = if caps.contains("AUTH=OAUTHBEARER") {
                        let u = user.replace('=', "=3D").replace(',', "=2C");
                        (
                            "OAUTHBEARER",
                            format!(
                                "n,a={u},\x01host={}\x01port={}\x01auth=Bearer {tok}\x01\x01",
                                ep.host, ep.port
                            ),
                        )
                    } else if caps.contains("AUTH=XOAUTH2") {
                        (
                            "XOAUTH2",
                            format!("user={user}\x01auth=Bearer {tok}\x01\x01"),
                        )
                    } else {
                        return Err(ImapError::Unsupported {
                            endpoint: epn.clone(),
                            detail: "the server offers neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2 for an OAuth2 token".into(),
                        });
                    };
                    let mut sasl = Sasl(payload.into_bytes(), false);
                    client
                        .authenticate(mech, &mut sasl)
                        .await
                        .map_err(|(e, _)| login_err(e))
                }
                Auth::Password(pw) => {
                    let pw = pw.expose();
                    if caps.contains("AUTH=PLAIN") && no_ctl(user) && no_ctl(pw) {
                        let mut sasl = Sasl(format!("\0{user}\0{pw}").into_bytes(), false);
                        client
                            .authenticate("PLAIN", &mut sasl)
                            .await
                            .map_err(|(e, _)| login_err(e))
                    } else if caps.contains("LOGINDISABLED") {
                        Err(ImapError::Unsupported {
                            endpoint: epn.clone(),
                            detail: "the server disables LOGIN and offers no AUTH=PLAIN".into(),
                        })
                    } else {
                        client.login(user, pw).await.map_err(|(e, _)| login_err(e))
                    }
                }
            }
        };
        let inner = match timeout(t, login).await {
            Err(_) => {
                return Err(ImapError::Timeout {
                    endpoint: epn,
                    secs: t.as_secs(),
                })
            }
            Ok(r) => r?,
        };
        let mut s = ImapSession {
            inner,
            caps,
            endpoint: epn,
            timeout: t,
            namespace: None,
            selected: None,
            tls: tls_used,
        };
        // Capabilities change after login; NAMESPACE is asked once here because the IMAP
        // parser underneath does not know its response, so it is read off the raw stream
        // while nothing else is pending.
        let (data, st) = raw_command(s.inner.as_mut(), &s.endpoint, t, "m3", "CAPABILITY").await?;
        if st.to_ascii_uppercase().starts_with("OK") {
            if let Some(c) = data.iter().find_map(|l| caps_from_line(l)) {
                s.caps = c;
            }
        }
        if s.caps.contains("NAMESPACE") {
            let (data, st) =
                raw_command(s.inner.as_mut(), &s.endpoint, t, "m4", "NAMESPACE").await?;
            if st.to_ascii_uppercase().starts_with("OK") {
                s.namespace = data.iter().find_map(|l| parse_namespace(l));
            }
        }
        Ok(s)
    }

    async fn raw_caps(
        s: &mut Stream,
        ep: &str,
        t: Duration,
        tag: &str,
    ) -> Result<HashSet<String>, ImapError> {
        let (data, st) = raw_command(s, ep, t, tag, "CAPABILITY").await?;
        if !st.to_ascii_uppercase().starts_with("OK") {
            return Err(ImapError::Command {
                endpoint: ep.to_string(),
                command: "CAPABILITY".into(),
                status: st.split(' ').next().unwrap_or("").to_string(),
                text: printable(st.split_once(' ').map_or("", |x| x.1)),
            });
        }
        Ok(data
            .iter()
            .find_map(|l| caps_from_line(l))
            .unwrap_or_default())
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// False when the session runs in clear text (`--allow-plaintext` on a server
    /// without STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn has_capability(&self, name: &str) -> bool {
        self.caps.contains(&name.to_ascii_uppercase())
    }

    /// Every capability the server announced after login, upper case (for values such
    /// as `APPENDLIMIT=N`).
    pub fn capability_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.caps.iter().cloned().collect();
        v.sort();
        v
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// The folder opened last, if any.
    pub fn selected(&self) -> Option<&str> {
        self.selected.as_deref()
    }

    fn timeout_err(&self) -> ImapError {
        ImapError::Timeout {
            endpoint: self.endpoint.clone(),
            secs: self.timeout.as_secs(),
        }
    }

    /// Sends a tagged command; returns its tag.
    async fn send(&mut self, cmd: &str) -> Result<String, ImapError> {
        match timeout(self.timeout, self.inner.run_command(cmd)).await {
            Err(_) => Err(self.timeout_err()),
            Ok(Ok(id)) => Ok(id.0),
            Ok(Err(e)) => Err(self.map_err(e)),
        }
    }

    fn map_err(&self, e: async_imap::error::Error) -> ImapError {
        match e {
            async_imap::error::Error::Io(e) => self.io_err(e),
            async_imap::error::Error::ConnectionLost => ImapError::ConnectionLost {
                endpoint: self.endpoint.clone(),
                detail: "the server closed the connection".into(),
            },
            other => ImapError::Protocol {
                endpoint: self.endpoint.clone(),
                detail: printable(&other.to_string()),
            },
        }
    }

    fn io_err(&self, e: std::io::Error) -> ImapError {
        let s = e.to_string();
        if s.contains("during parsing of") {
            // The parser quotes the whole buffer; keep only the start.
            ImapError::Protocol {
                endpoint: self.endpoint.clone(),
                detail: printable(&s),
            }
        } else {
            lost(&self.endpoint, e)
        }
    }

    /// One response read with the step timeout (generic because the client crate does
    /// not export its response type): a silent server is a timeout, a closed connection
    /// is `ConnectionLost`.
    fn arrived<T>(
        &self,
        r: Result<Option<std::io::Result<T>>, tokio::time::error::Elapsed>,
    ) -> Result<T, ImapError> {
        match r {
            Err(_) => Err(self.timeout_err()),
            Ok(None) => Err(ImapError::ConnectionLost {
                endpoint: self.endpoint.clone(),
                detail: "the server closed the connection".into(),
            }),
            Ok(Some(Err(e))) => Err(self.io_err(e)),
            Ok(Some(Ok(r))) => Ok(r),
        }
    }

    /// Reads the next response and turns it into an [`Event`].
    pub async fn next_event(&mut self) -> Result<Event, ImapError> {
        let got = timeout(self.timeout, self.inner.read_response()).await;
        let r = self.arrived(got)?;
        Ok(match r.parsed() {
            Response::Fetch(seq, attrs) => Event::Fetch(fetched(*seq, attrs)),
            Response::Done {
                tag,
                status,
                code,
                information,
            } => Event::Done {
                tag: tag.0.clone(),
                ok: *status == Status::Ok,
                status: status_word(status).to_string(),
                text: resp_text(code.as_ref(), information.as_deref()),
            },
            Response::MailboxData(MailboxDatum::Exists(n)) => Event::Exists(*n),
            Response::Expunge(n) => Event::Expunge(*n),
            Response::Vanished { uids, .. } => Event::Vanished(uids.clone()),
            Response::Data {
                status: Status::Bye,
                code,
                information,
            } => {
                return Err(ImapError::Bye {
                    endpoint: self.endpoint.clone(),
                    text: resp_text(code.as_ref(), information.as_deref()),
                })
            }
            Response::Data {
                status,
                code,
                information,
            } => Event::Notice {
                status: status_word(status).to_string(),
                text: resp_text(code.as_ref(), information.as_deref()),
            },
            _ => Event::Other,
        })
    }

    /// Runs a command to its tagged end, handing each untagged response to `each`.
    /// Returns (ok, status, text).
    async fn run<F>(&mut self, cmd: &str, mut each: F) -> Result<(bool, String, String), ImapError>
    where
        F: FnMut(&Response<'_>),
    {
        let tag = self.send(cmd).await?;
        loop {
            let got = timeout(self.timeout, self.inner.read_response()).await;
            let r = self.arrived(got)?;
            match r.parsed() {
                Response::Done {
                    tag: t,
                    status,
                    code,
                    information,
                } if t.0 == tag => {
                    return Ok((
                        *status == Status::Ok,
                        status_word(status).to_string(),
                        resp_text(code.as_ref(), information.as_deref()),
                    ))
                }
                Response::Data {
                    status: Status::Bye,
                    code,
                    information,
                } => {
                    return Err(ImapError::Bye {
                        endpoint: self.endpoint.clone(),
                        text: resp_text(code.as_ref(), information.as_deref()),
                    })
                }
                other => each(other),
            }
        }
    }

    /// Every mailbox: `LIST "" "*"` with SPECIAL-USE and SUBSCRIBED return options when
    /// the server has LIST-EXTENDED, else LIST plus LSUB.
    pub async fn list(&mut self) -> Result<Vec<MailboxInfo>, ImapError> {
        let extended = self.has_capability("LIST-EXTENDED");
        let cmd = if extended {
            let mut opts = vec!["SUBSCRIBED"];
            if self.has_capability("SPECIAL-USE") {
                opts.push("SPECIAL-USE");
            }
            format!("LIST \"\" \"*\" RETURN ({})", opts.join(" "))
        } else {
            "LIST \"\" \"*\"".to_string()
        };
        let mut out: Vec<MailboxInfo> = Vec::new();
        let (ok, status, text) = self
            .run(&cmd, |r| {
                if let Response::MailboxData(MailboxDatum::List {
                    name_attributes,
                    delimiter,
                    name,
                }) = r
                {
                    out.push(mailbox_info(name_attributes, delimiter.as_deref(), name));
                }
            })
            .await?;
        if !ok {
            return Err(ImapError::Command {
                endpoint: self.endpoint.clone(),
                command: cmd,
                status,
                text,
            });
        }
        if !extended {
            let mut subs: HashSet<String> = HashSet::new();
            let (ok, _, _) = self
                .run("LSUB \"\" \"*\"", |r| {
                    if let Response::MailboxData(MailboxDatum::List { name, .. }) = r {
                        subs.insert(unescape(name));
                    }
                })
                .await?;
            if ok {
                for m in &mut out {
                    m.subscribed = subs.contains(&m.raw_name);
                }
            }
        }
        // LIST-EXTENDED may report subscribed names that do not exist (\NonExistent):
        // they are subscriptions, not folders.
        out.retain(|m| !m.raw_name.is_empty());
        let mut seen = HashSet::new();
        out.retain(|m| seen.insert(m.raw_name.clone()));
        Ok(out)
    }

    /// The personal namespace's prefix and delimiter, when the server offers NAMESPACE.
    pub async fn namespace(&mut self) -> Result<Option<(String, Option<char>)>, ImapError> {
        Ok(self.namespace.clone())
    }

    /// Opens a folder read-only.
    pub async fn examine(&mut self, raw_name: &str) -> Result<FolderStatus, ImapError> {
        self.open("EXAMINE", raw_name).await
    }

    /// Opens a folder read-write (for importers; exports use [`examine`]).
    pub async fn select(&mut self, raw_name: &str) -> Result<FolderStatus, ImapError> {
        self.open("SELECT", raw_name).await
    }

    async fn open(&mut self, verb: &str, raw_name: &str) -> Result<FolderStatus, ImapError> {
        let condstore = self.has_capability("CONDSTORE");
        let cmd = format!(
            "{verb} {}{}",
            quote(raw_name),
            if condstore { " (CONDSTORE)" } else { "" }
        );
        self.selected = None;
        let mut st = FolderStatus::default();
        let (ok, status, text) = self
            .run(&cmd, |r| match r {
                Response::MailboxData(MailboxDatum::Exists(n)) => st.exists = *n,
                Response::Data {
                    code: Some(code), ..
                } => match code {
                    ResponseCode::UidValidity(v) => st.uidvalidity = Some(*v),
                    ResponseCode::UidNext(v) => st.uidnext = Some(*v),
                    ResponseCode::HighestModSeq(v) => st.highestmodseq = Some(*v),
                    ResponseCode::PermanentFlags(f) => {
                        st.permanent_flags = f.iter().map(|s| s.to_string()).collect()
                    }
                    _ => {}
                },
                _ => {}
            })
            .await?;
        if !ok {
            return Err(ImapError::Folder {
                endpoint: self.endpoint.clone(),
                folder: crate::mail::utf7::decode(raw_name).unwrap_or_else(|_| raw_name.into()),
                command: verb.to_string(),
                status,
                text,
            });
        }
        self.selected = Some(raw_name.to_string());
        Ok(st)
    }

    /// Starts a `UID FETCH` of `uid_set` (e.g. `1:500` or `3,7,9`) in the open folder and
    /// returns its tag; responses arrive through [`next_event`]. Several may be in flight.
    pub async fn send_uid_fetch(
        &mut self,
        uid_set: &str,
        what: FetchWhat,
    ) -> Result<String, ImapError> {
        let items = what.items(self.has_capability("CONDSTORE"));
        self.send(&format!("UID FETCH {uid_set} {items}")).await
    }

    /// Runs a `UID FETCH` to its end and returns every FETCH response; a tagged NO/BAD
    /// is an error naming the folder.
    pub async fn uid_fetch_all(
        &mut self,
        uid_set: &str,
        what: FetchWhat,
    ) -> Result<Vec<FetchedMessage>, ImapError> {
        let tag = self.send_uid_fetch(uid_set, what).await?;
        let mut out = Vec::new();
        loop {
            match self.next_event().await? {
                Event::Fetch(m) => out.push(m),
                Event::Done {
                    tag: t,
                    ok,
                    status,
                    text,
                } if t == tag => {
                    if ok {
                        return Ok(out);
                    }
                    let folder = self.selected.clone().unwrap_or_default();
                    return Err(ImapError::Folder {
                        endpoint: self.endpoint.clone(),
                        folder: crate::mail::utf7::decode(&folder).unwrap_or(folder),
                        command: format!("UID FETCH {uid_set}"),
                        status,
                        text,
                    });
                }
                _ => {}
            }
        }
    }

    /// A round trip that changes nothing (keeps a session alive, checks it is).
    pub async fn noop(&mut self) -> Result<(), ImapError> {
        let (ok, status, text) = self.run("NOOP", |_| {}).await?;
        if ok {
            Ok(())
        } else {
            Err(ImapError::Command {
                endpoint: self.endpoint.clone(),
                command: "NOOP".into(),
                status,
                text,
            })
        }
    }

    pub async fn logout(mut self) -> Result<(), ImapError> {
        match timeout(self.timeout, self.inner.logout()).await {
            Err(_) => Err(self.timeout_err()),
            Ok(Ok(())) => Ok(()),
            // A server that hangs up right after BYE is doing what LOGOUT asked.
            Ok(Err(async_imap::error::Error::ConnectionLost)) => Ok(()),
            Ok(Err(e)) => Err(self.map_err(e)),
        }
    }
}

fn status_word(s: &Status) -> &'static str {
    match s {
        Status::Ok => "OK",
        Status::No => "NO",
        Status::Bad => "BAD",
        Status::PreAuth => "PREAUTH",
        Status::Bye => "BYE",
    }
}

fn resp_text(code: Option<&ResponseCode<'_>>, info: Option<&str>) -> String {
    let mut t = String::new();
    if let Some(c) = code {
        let c = match c {
            ResponseCode::Alert => "[ALERT] ".to_string(),
            ResponseCode::Parse => "[PARSE] ".to_string(),
            ResponseCode::TryCreate => "[TRYCREATE] ".to_string(),
            ResponseCode::ReadOnly => "[READ-ONLY] ".to_string(),
            ResponseCode::ReadWrite => "[READ-WRITE] ".to_string(),
            // Importers learn where messages went (RFC 4315): one UID per message, in
            // order, for a MULTIAPPEND.
            ResponseCode::AppendUid(v, set) => {
                let set: Vec<String> = set
                    .iter()
                    .map(|m| match m {
                        UidSetMember::Uid(u) => u.to_string(),
                        UidSetMember::UidRange(r) => format!("{}:{}", r.start(), r.end()),
                    })
                    .collect();
                format!("[APPENDUID {v} {}] ", set.join(","))
            }
            _ => String::new(),
        };
        t.push_str(&c);
    }
    t.push_str(info.unwrap_or(""));
    printable(&t)
}

fn fetched(seq: u32, attrs: &[AttributeValue<'_>]) -> FetchedMessage {
    let mut m = FetchedMessage {
        seq,
        ..Default::default()
    };
    for a in attrs {
        match a {
            AttributeValue::Uid(u) => m.uid = Some(*u),
            AttributeValue::Flags(f) => m.flags = Some(f.iter().map(|s| s.to_string()).collect()),
            AttributeValue::InternalDate(d) => m.internaldate = Some(d.to_string()),
            AttributeValue::Rfc822Size(n) => m.size = Some(*n),
            AttributeValue::ModSeq(n) => m.modseq = Some(*n),
            AttributeValue::BodySection {
                section: None,
                data,
                ..
            } => m.body = data.as_ref().map(|d| d.to_vec()),
            AttributeValue::BodySection {
                section: Some(_),
                data,
                ..
            } => m.header_fields = Some(data.as_ref().map(|d| d.to_vec()).unwrap_or_default()),
            AttributeValue::Rfc822(data) => m.body = data.as_ref().map(|d| d.to_vec()),
            _ => {}
        }
    }
    m
}

fn mailbox_info(attrs: &[NameAttribute<'_>], delimiter: Option<&str>, name: &str) -> MailboxInfo {
    let raw_name = unescape(name);
    let delimiter = delimiter.map(unescape).and_then(|d| d.chars().next());
    let mut selectable = true;
    let mut subscribed = false;
    let mut special_use = None;
    for a in attrs {
        match a {
            NameAttribute::NoSelect => selectable = false,
            NameAttribute::All => special_use = Some("\\All".to_string()),
            NameAttribute::Archive => special_use = Some("\\Archive".to_string()),
            NameAttribute::Drafts => special_use = Some("\\Drafts".to_string()),
            NameAttribute::Flagged => special_use = Some("\\Flagged".to_string()),
            NameAttribute::Junk => special_use = Some("\\Junk".to_string()),
            NameAttribute::Sent => special_use = Some("\\Sent".to_string()),
            NameAttribute::Trash => special_use = Some("\\Trash".to_string()),
            NameAttribute::Extension(e) => {
                if e.eq_ignore_ascii_case("\\Subscribed") {
                    subscribed = true;
                } else if e.eq_ignore_ascii_case("\\NonExistent") {
                    selectable = false;
                } else if e.eq_ignore_ascii_case("\\Important") {
                    special_use.get_or_insert_with(|| "\\Important".to_string());
                }
            }
            _ => {}
        }
    }
    let name = crate::mail::utf7::decode(&raw_name).unwrap_or_else(|_| raw_name.clone());
    MailboxInfo {
        raw_name,
        name,
        delimiter,
        selectable,
        subscribed,
        special_use,
    }
}

/// The first personal namespace of `* NAMESPACE (("prefix" "delim") ...) ... ...`.
fn parse_namespace(line: &[u8]) -> Option<(String, Option<char>)> {
    let s = String::from_utf8_lossy(line);
    let rest = s.strip_prefix("* NAMESPACE ")?.trim_start();
    let rest = rest.strip_prefix("((")?;
    let (prefix, rest) = take_quoted(rest)?;
    let rest = rest.trim_start();
    let delim = if rest.starts_with("NIL") {
        None
    } else {
        let (d, _) = take_quoted(rest)?;
        d.chars().next()
    };
    Some((prefix, delim))
}

fn take_quoted(s: &str) -> Option<(String, &str)> {
    let s = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut esc = false;
    for (i, c) in s.char_indices() {
        if esc {
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == '"' {
            return Some((out, &s[i + 1..]));
        } else {
            out.push(c);
        }
    }
    None
}

/// A compact UID set (`1:5,9,11:12`).
pub fn uid_set(uids: &[u32]) -> String {
    let mut v = uids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_lines() {
        assert_eq!(
            parse_namespace(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"),
            Some((String::new(), Some('/')))
        );
        assert_eq!(
            parse_namespace(b"* NAMESPACE ((\"INBOX.\" \".\")) NIL ((\"#shared/\" \"/\"))\r\n"),
            Some(("INBOX.".into(), Some('.')))
        );
        assert_eq!(
            parse_namespace(b"* NAMESPACE ((\"\" NIL)) NIL NIL\r\n"),
            Some((String::new(), None))
        );
        assert_eq!(parse_namespace(b"* NAMESPACE NIL NIL NIL\r\n"), None);
    }

    #[test]
    fn capabilities_from_greeting() {
        let c =
            caps_from_line(b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready\r\n").unwrap();
        assert!(c.contains("STARTTLS") && c.contains("AUTH=PLAIN"));
        let c = caps_from_line(b"* CAPABILITY IMAP4rev1 LITERAL+\r\n").unwrap();
        assert!(c.contains("LITERAL+"));
        assert!(caps_from_line(b"* OK ready\r\n").is_none());
    }

    #[test]
    fn internaldates() {
        let d = parse_internaldate("07-Jan-2019 10:00:00 +0900").unwrap();
        assert_eq!(d.timestamp(), 1546822800);
        let d = parse_internaldate(" 7-Jan-2019 01:00:00 +0000").unwrap();
        assert_eq!(d.timestamp(), 1546822800);
        assert!(parse_internaldate("yesterday").is_none());
    }

    #[test]
    fn server_words_are_extracted() {
        assert_eq!(
            server_words(
                r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")"#
            ),
            "[AUTHENTICATIONFAILED] Authentication failed."
        );
        assert_eq!(unescape(r#"a\"b\\c"#), r#"a"b\c"#);
        assert!(is_throttle_text("[THROTTLED] slow down"));
        assert!(!is_throttle_text("[NONEXISTENT] no such mailbox"));
    }
}
