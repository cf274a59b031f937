//! The one place in mailark that knows which IMAP crate is used: imap-proto parses the
//! data responses the client acts on (FETCH, LIST, EXISTS, ...); every byte read comes
//! through the [`wire`](super::wire) framer, which bounds it and parses status lines and
//! their codes. It logs in (implicit TLS, STARTTLS, or plaintext only when allowed;
//! LOGIN, AUTHENTICATE PLAIN, XOAUTH2, OAUTHBEARER), lists and opens folders, and
//! streams `UID FETCH` responses as plain events, checking every tagged status itself so
//! a failed fetch never looks like an empty folder. Nothing here changes mail: folders
//! are opened with EXAMINE and bodies are read with `BODY.PEEK[]`.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use imap_proto::{AttributeValue, MailboxDatum, NameAttribute, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::wire::{AppendUid, Code, Frame, Framer, Kind, Status, StatusWord, Tags};
use crate::source::net::{self, Auth, Credentials, Endpoint, NetError, Stream, TlsOptions};

/// How long one read or write may take before the link is considered dead.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The slowest rate, in bytes per second, at which a literal's time is granted on top
/// of the step timeout.
const SLOWEST_LITERAL_RATE: u64 = 1 << 20;

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
    /// The message bytes (`BODY[]`); empty when they were spooled.
    pub body: Option<Vec<u8>>,
    /// A `BODY[]` too large to hold ([`super::wire::MAX_HELD_LITERAL`]): its bytes, in
    /// an unnamed temporary file.
    pub spooled: Option<SpooledBody>,
    /// A header section that was asked for (`BODY[HEADER.FIELDS (...)]`).
    pub header_fields: Option<Vec<u8>>,
}

/// A literal the session wrote to an unnamed temporary file as it came.
#[derive(Debug, Clone)]
pub struct SpooledBody {
    pub file: std::sync::Arc<crate::scratch::Scratch>,
    pub len: u64,
}

impl PartialEq for SpooledBody {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.file, &other.file)
    }
}

impl Eq for SpooledBody {}

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
        /// Where an APPEND put its messages, when the server said (`[APPENDUID]`).
        appenduid: Option<AppendUid>,
    },
    /// A `+` continuation request: the server waits for a literal.
    Continuation,
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

/// One folder for [`ImapSession::read_folders`].
#[derive(Debug, Clone)]
pub struct FolderRead {
    pub raw_name: String,
    /// EXAMINE; SELECT when false (an importer appending there next).
    pub read_only: bool,
    /// The census to read with it; `None` opens the folder only (its status).
    pub what: Option<FetchWhat>,
    /// Leave the folder afterwards (UNSELECT, when the server has it).
    pub unselect: bool,
    /// Read only the messages whose UIDs lie in this range (`UID FETCH a:b`), not all.
    pub uids: Option<(u32, u32)>,
}

/// What [`ImapSession::read_folders`] found in one folder.
#[derive(Debug)]
pub struct FolderReadOut<T = FetchedMessage> {
    pub status: Result<FolderStatus, ImapError>,
    /// Every FETCH response (empty when the folder could not be opened).
    pub messages: Result<Vec<T>, ImapError>,
}

/// A message as a listing of UIDs and sizes keeps it: 8 bytes where a
/// [`FetchedMessage`] takes about 150, for listings of whole folders (hundreds of
/// thousands of messages) held while they are worked through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub uid: u32,
    /// RFC822.SIZE; 0 when it was not asked for or not given.
    pub size: u32,
}

impl From<FetchedMessage> for Listed {
    fn from(m: FetchedMessage) -> Self {
        Listed {
            // A FETCH without a UID lists nothing; 0 is no UID (RFC 3501: they start at 1).
            uid: m.uid.unwrap_or(0),
            size: m.size.unwrap_or(0),
        }
    }
}

/// Entries a folder's census reserves up front (EXISTS, capped: a server may claim any
/// count; past the cap the listing grows as answers come).
fn census_reserve<T>(exists: u32, uids: Option<(u32, u32)>) -> usize {
    let cap = (64 << 20) / std::mem::size_of::<T>().max(1);
    // A UID range holds at most as many messages as it has UIDs: import's verification
    // of a part reads its own range of a folder of 400,000, and reserving for the
    // folder held 35 MB beside the census the next part goes on with.
    let most = uids.map_or(u32::MAX, |(a, b)| a.abs_diff(b).saturating_add(1));
    (exists.min(most) as usize).min(cap)
}

/// Adds what one untagged answer to EXAMINE/SELECT says to `st`.
fn fold_status(st: &mut FolderStatus, r: &Untagged<'_>) {
    match r {
        Untagged::Data(Response::MailboxData(MailboxDatum::Exists(n))) => st.exists = *n,
        Untagged::Status(Status {
            code: Some(code), ..
        }) => match code {
            Code::UidValidity(v) => st.uidvalidity = Some(*v),
            Code::UidNext(v) => st.uidnext = Some(*v),
            Code::HighestModSeq(v) => st.highestmodseq = Some(*v),
            Code::PermanentFlags(f) => st.permanent_flags = f.clone(),
            _ => {}
        },
        _ => {}
    }
}

/// A logged-in IMAP connection.
pub struct ImapSession {
    pub(super) conn: Conn,
    caps: HashSet<String>,
    /// Asked once, on first use.
    namespace: Option<Option<(String, Option<char>)>>,
    pub(super) selected: Option<String>,
    tls: bool,
}

impl std::fmt::Debug for ImapSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSession")
            .field("endpoint", &self.conn.endpoint)
            .field("selected", &self.selected)
            .finish()
    }
}

/// The thin I/O loop around the [`wire`](super::wire) framer: the stream, the one
/// framer every byte read goes through, and the session's one tag generator. Used from
/// the greeting on, so the bounds hold before login as after.
pub(super) struct Conn {
    stream: Stream,
    framer: Framer,
    tags: Tags,
    pub(super) endpoint: String,
    pub(super) timeout: Duration,
    /// The `-vv` protocol trace (redacted), when asked for: fed every byte read and
    /// written, here where all of them pass.
    trace: Option<crate::log::WireTrace>,
    /// The diverted literal being written, and those of the frame being read.
    spool: Option<std::io::BufWriter<crate::scratch::Scratch>>,
    spooled: Vec<SpooledBody>,
}

impl Conn {
    fn new(stream: Stream, endpoint: String, timeout: Duration) -> Conn {
        Conn {
            stream,
            framer: Framer::new(),
            tags: Tags::default(),
            trace: crate::log::WireTrace::new(crate::log::Protocol::Imap, &endpoint),
            endpoint,
            timeout,
            spool: None,
            spooled: Vec::new(),
        }
    }

    pub(super) fn next_tag(&mut self) -> String {
        self.tags.next_tag()
    }

    fn timeout_err(&self, t: Duration) -> ImapError {
        ImapError::Timeout {
            endpoint: self.endpoint.clone(),
            secs: t.as_secs(),
        }
    }

    /// The next whole response. The step timeout covers the whole of it, so a server
    /// trickling bytes without ever finishing a response still times out; each literal
    /// it announces adds the time it takes at [`SLOWEST_LITERAL_RATE`], so a large
    /// message on a slow but working link is still read.
    pub(super) async fn frame(&mut self) -> Result<Frame, ImapError> {
        let t = self.timeout;
        let start = tokio::time::Instant::now();
        self.spooled.clear();
        // Bytes of diverted literals read: a literal over the held bound gets time at
        // the slowest rate for what arrived, so a trickle still times out.
        let mut diverted = 0u64;
        // Allocated only when the framer needs bytes: most frames of a pipelined fetch
        // are already in its buffer.
        let mut chunk = Vec::new();
        loop {
            match self.framer.next_frame() {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => {
                    return Err(ImapError::Protocol {
                        endpoint: self.endpoint.clone(),
                        detail: e.to_string(),
                    })
                }
            }
            if self.framer.diverting() > 0 {
                let before = self.framer.diverting();
                self.spool_diverted()?;
                diverted += before - self.framer.diverting();
                if self.framer.diverting() == 0 {
                    continue;
                }
            }
            chunk.resize(64 * 1024, 0);
            let allowance = Duration::from_secs(
                (self.framer.literal_bytes() + diverted) / SLOWEST_LITERAL_RATE,
            );
            let n =
                match tokio::time::timeout_at(start + t + allowance, self.stream.read(&mut chunk))
                    .await
                {
                    Err(_) => return Err(self.timeout_err(t)),
                    Ok(r) => r.map_err(|e| lost(&self.endpoint, e))?,
                };
            if n == 0 {
                return Err(ImapError::ConnectionLost {
                    endpoint: self.endpoint.clone(),
                    detail: "the server closed the connection".into(),
                });
            }
            if let Some(tr) = &mut self.trace {
                tr.received(&chunk[..n]);
            }
            self.framer.push(&chunk[..n]);
        }
    }

    /// Writes what the framer holds of a diverted literal to the spool (made at its
    /// first bytes); a whole literal's spool joins the frame's.
    fn spool_diverted(&mut self) -> Result<(), ImapError> {
        let spool_err = |e: std::io::Error| ImapError::Protocol {
            endpoint: self.endpoint.clone(),
            detail: format!("cannot spool a large message to a temporary file: {e}"),
        };
        let w = match &mut self.spool {
            Some(w) => w,
            None => self.spool.insert(std::io::BufWriter::with_capacity(
                1 << 20,
                crate::scratch::Scratch::new().map_err(spool_err)?,
            )),
        };
        std::io::Write::write_all(w, &self.framer.take_diverted()).map_err(spool_err)?;
        if self.framer.diverting() == 0 {
            let w = self.spool.take().expect("spool in use");
            let mut file = w.into_inner().map_err(|e| spool_err(e.into_error()))?;
            let len = std::io::Seek::stream_position(&mut file).map_err(spool_err)?;
            self.spooled.push(SpooledBody {
                file: std::sync::Arc::new(file),
                len,
            });
        }
        Ok(())
    }

    /// Writes `parts` and flushes, within `t`. The stream is unbuffered: each write
    /// becomes its own TLS record and syscall. An APPEND is a 60-byte head, the message
    /// and a CRLF; written apart, the server decrypts three records per message. Up to
    /// 1 MiB the parts go as one write.
    pub(super) async fn write(&mut self, parts: &[&[u8]], t: Duration) -> Result<(), ImapError> {
        if let Some(tr) = &mut self.trace {
            for p in parts {
                tr.sent(p);
            }
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let joined = (parts.len() > 1 && total <= 1 << 20).then(|| parts.concat());
        let s = &mut self.stream;
        let fut = async {
            match &joined {
                Some(j) => s.write_all(j).await?,
                None => {
                    for p in parts {
                        s.write_all(p).await?;
                    }
                }
            }
            s.flush().await
        };
        match timeout(t, fut).await {
            Err(_) => Err(self.timeout_err(t)),
            Ok(r) => r.map_err(|e| lost(&self.endpoint, e)),
        }
    }

    /// Sends `cmd` under a new tag; returns the tag.
    pub(super) async fn send(&mut self, cmd: &str) -> Result<String, ImapError> {
        let tag = self.next_tag();
        let t = self.timeout;
        self.write(&[tag.as_bytes(), b" ", cmd.as_bytes(), b"\r\n"], t)
            .await?;
        Ok(tag)
    }

    /// Runs a command that takes no literal to its end: the untagged responses and the
    /// tagged status. An untagged BYE ends the session.
    async fn simple(&mut self, cmd: &str) -> Result<(Vec<Frame>, Status), ImapError> {
        let tag = self.send(cmd).await?;
        self.answer(&tag).await
    }

    /// The answer to the command tagged `tag`, already sent: its untagged responses and
    /// its tagged status. An untagged BYE ends the session.
    async fn answer(&mut self, tag: &str) -> Result<(Vec<Frame>, Status), ImapError> {
        let mut data = Vec::new();
        loop {
            let f = self.frame().await?;
            if let Some(st) = self.ending(&f, tag)? {
                return Ok((data, st));
            }
            data.push(f);
        }
    }

    /// The status of `f` when it ends the command tagged `tag`; an untagged BYE is the
    /// server closing the session.
    fn ending(&self, f: &Frame, tag: &str) -> Result<Option<Status>, ImapError> {
        let st = f.status();
        match (f.kind(), st) {
            (Kind::Tagged(t), Some(st)) if t == tag => Ok(Some(st)),
            (Kind::Tagged(t), None) if t == tag => Err(unreadable(&self.endpoint, f)),
            (Kind::Untagged, Some(st)) if st.word == StatusWord::Bye => Err(ImapError::Bye {
                endpoint: self.endpoint.clone(),
                text: printable(&st.text),
            }),
            _ => Ok(None),
        }
    }

    /// CAPABILITY, whose answer replaces what was known.
    async fn capabilities(&mut self) -> Result<HashSet<String>, ImapError> {
        let (data, st) = self.simple("CAPABILITY").await?;
        if st.word != StatusWord::Ok {
            return Err(self.command_err("CAPABILITY", &st));
        }
        Ok(data
            .iter()
            .find_map(|f| caps_from_line(f.first_line()))
            .unwrap_or_default())
    }

    fn command_err(&self, command: &str, st: &Status) -> ImapError {
        ImapError::Command {
            endpoint: self.endpoint.clone(),
            command: command.into(),
            status: st.word.as_str().into(),
            text: printable(&st.text),
        }
    }

    /// STARTTLS, then the handshake on the same connection. Bytes the server sent after
    /// its OK would be read as if protected by TLS (an injection): they end the session.
    async fn starttls(mut self, ep: &Endpoint, tls: &TlsOptions) -> Result<Conn, ImapError> {
        let (_, st) = self.simple("STARTTLS").await?;
        if st.word != StatusWord::Ok {
            return Err(self.command_err("STARTTLS", &st));
        }
        if self.framer.pending() > 0 {
            return Err(ImapError::Protocol {
                endpoint: self.endpoint,
                detail: "the server sent data after its STARTTLS answer, before TLS".into(),
            });
        }
        let Stream::Plain(tcp) = self.stream else {
            unreachable!("STARTTLS is sent only on a clear-text stream")
        };
        let conn = net::tls_connector(tls)?;
        let tls = timeout(self.timeout, net::tls_handshake(&conn, ep, tcp))
            .await
            .map_err(|_| ImapError::Timeout {
                endpoint: self.endpoint.clone(),
                secs: self.timeout.as_secs(),
            })??;
        Ok(Conn {
            stream: Stream::Tls(Box::new(tls)),
            ..self
        })
    }

    /// LOGIN or AUTHENTICATE to its end: a refusal is a login error in the server's
    /// words. `sasl` answers the first continuation with the initial response and any
    /// later one (an OAuth error document) with an empty line, which gets the tagged NO.
    async fn authenticate(
        &mut self,
        cmd: &str,
        mut sasl: Option<Vec<u8>>,
        user: &str,
    ) -> Result<Option<HashSet<String>>, ImapError> {
        use base64::Engine as _;
        let tag = self.send(cmd).await?;
        loop {
            let f = self.frame().await?;
            if f.kind() == Kind::Continuation {
                let answer = match sasl.take() {
                    Some(r) => base64::engine::general_purpose::STANDARD.encode(r),
                    None => String::new(),
                };
                let t = self.timeout;
                self.write(&[answer.as_bytes(), b"\r\n"], t).await?;
                continue;
            }
            if let Some(st) = self.ending(&f, &tag)? {
                if st.word == StatusWord::Ok {
                    // Most servers name their capabilities in the OK (RFC 3501 §7.1):
                    // no CAPABILITY round trip after login then.
                    return Ok(caps_from_line(f.first_line()));
                }
                return Err(ImapError::Login {
                    endpoint: self.endpoint.clone(),
                    user: user.to_string(),
                    text: printable(&st.text),
                });
            }
        }
    }
}

/// A response the parser cannot read: the stream can no longer be trusted.
fn unreadable(ep: &str, f: &Frame) -> ImapError {
    ImapError::Protocol {
        endpoint: ep.to_string(),
        detail: printable(&String::from_utf8_lossy(f.first_line())),
    }
}

/// A failed read or write.
fn lost(ep: &str, e: std::io::Error) -> ImapError {
    ImapError::ConnectionLost {
        endpoint: ep.to_string(),
        detail: e.to_string(),
    }
}

/// An untagged response as the session's commands see it.
enum Untagged<'a> {
    Status(Status),
    Data(Response<'a>),
    /// A response this client never acts on (NAMESPACE, ENABLED, ...), kept unparsed.
    Other,
}

/// Reads an untagged frame as the commands see it: status responses from the wire
/// module, the data responses this client acts on through the IMAP parser.
fn untagged<'a>(ep: &str, f: &Frame, bytes: &'a [u8]) -> Result<Untagged<'a>, ImapError> {
    if let Some(st) = f.status() {
        if st.word == StatusWord::Bye {
            return Err(ImapError::Bye {
                endpoint: ep.to_string(),
                text: printable(&st.text),
            });
        }
        return Ok(Untagged::Status(st));
    }
    if !parsed_keyword(f.first_line()) {
        return Ok(Untagged::Other);
    }
    match imap_proto::parser::parse_response(bytes) {
        Ok((&[], r)) => Ok(Untagged::Data(r)),
        _ => Err(unreadable(ep, f)),
    }
}

/// What a response means to a command in flight.
fn event(ep: &str, f: &Frame) -> Result<Event, ImapError> {
    match f.kind() {
        Kind::Continuation => return Ok(Event::Continuation),
        Kind::Tagged(tag) => {
            let st = f.status().ok_or_else(|| unreadable(ep, f))?;
            let appenduid = match st.code {
                Some(Code::AppendUid(a)) => Some(a),
                _ => None,
            };
            return Ok(Event::Done {
                tag: tag.to_string(),
                ok: st.word == StatusWord::Ok,
                status: st.word.as_str().to_string(),
                text: printable(&st.text),
                appenduid,
            });
        }
        Kind::Untagged => {}
    }
    let bytes = f.plain_literals();
    Ok(match untagged(ep, f, &bytes)? {
        Untagged::Status(st) => match st.word {
            StatusWord::PreAuth => Event::Other,
            w => Event::Notice {
                status: w.as_str().to_string(),
                text: printable(&st.text),
            },
        },
        Untagged::Data(Response::Fetch(seq, attrs)) => Event::Fetch(fetched(seq, &attrs)),
        Untagged::Data(Response::MailboxData(MailboxDatum::Exists(n))) => Event::Exists(n),
        Untagged::Data(Response::Expunge(n)) => Event::Expunge(n),
        Untagged::Data(Response::Vanished { uids, .. }) => Event::Vanished(uids),
        _ => Event::Other,
    })
}

/// Which untagged data responses are parsed: those the client acts on. Anything else is
/// passed over, so a response the parser does not know cannot end a session.
fn parsed_keyword(line: &[u8]) -> bool {
    let mut words = line.split(|&b| b == b' ').skip(1);
    let w = match words.next() {
        Some(w) if w.iter().all(u8::is_ascii_digit) && !w.is_empty() => words.next(),
        w => w,
    };
    let w = w.unwrap_or_default().to_ascii_uppercase();
    [
        &b"FETCH"[..],
        b"EXISTS",
        b"EXPUNGE",
        b"VANISHED",
        b"LIST",
        b"LSUB",
    ]
    .contains(&&w[..])
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
        let stream = if ep.scheme.implicit_tls() {
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
        let mut conn = Conn::new(stream, epn, t);
        let mut caps = Self::greeting(&mut conn).await?;
        if !conn.stream.is_tls() {
            if caps.contains("STARTTLS") {
                conn = conn.starttls(ep, tls).await?;
                // Capabilities learnt in clear text may have been tampered with.
                caps = conn.capabilities().await?;
            } else if !tls.allow_plaintext {
                return Err(ImapError::PlaintextRefused {
                    endpoint: conn.endpoint,
                });
            }
        }
        let after = Self::login(&mut conn, ep, creds, &caps).await?;
        let tls_used = conn.stream.is_tls();
        let mut s = ImapSession {
            conn,
            caps,
            namespace: None,
            selected: None,
            tls: tls_used,
        };
        // Capabilities change after login: from the login's OK when it named them,
        // else asked for.
        match after {
            Some(c) => s.caps = c,
            None => {
                let (data, st) = s.conn.simple("CAPABILITY").await?;
                if st.word == StatusWord::Ok {
                    if let Some(c) = data.iter().find_map(|f| caps_from_line(f.first_line())) {
                        s.caps = c;
                    }
                }
            }
        }
        Ok(s)
    }

    /// Reads the greeting; returns the capabilities it names, or asks for them.
    async fn greeting(conn: &mut Conn) -> Result<HashSet<String>, ImapError> {
        let g = conn.frame().await?;
        let word = g
            .status()
            .filter(|_| g.kind() == Kind::Untagged)
            .map(|s| (s.word, s.text));
        match word {
            Some((StatusWord::Ok, _)) => {}
            Some((StatusWord::Bye, text)) => {
                return Err(ImapError::Bye {
                    endpoint: conn.endpoint.clone(),
                    text: printable(&text),
                })
            }
            Some((StatusWord::PreAuth, _)) => {
                return Err(ImapError::Unsupported {
                    endpoint: conn.endpoint.clone(),
                    detail: "the server logged us in before authentication (PREAUTH); refusing an unauthenticated session".into(),
                })
            }
            _ => {
                return Err(ImapError::Protocol {
                    endpoint: conn.endpoint.clone(),
                    detail: format!(
                        "not an IMAP greeting: {}",
                        printable(&String::from_utf8_lossy(g.first_line()))
                    ),
                })
            }
        }
        match caps_from_line(g.first_line()) {
            Some(c) => Ok(c),
            None => conn.capabilities().await,
        }
    }

    /// AUTHENTICATE OAUTHBEARER / XOAUTH2 for a token; AUTHENTICATE PLAIN, else LOGIN,
    /// for a password. The whole login shares the step timeout.
    async fn login(
        conn: &mut Conn,
        ep: &Endpoint,
        creds: &Credentials,
        caps: &HashSet<String>,
    ) -> Result<Option<HashSet<String>>, ImapError> {
        let user = creds.user.as_str();
        let unsupported = |detail: &str| ImapError::Unsupported {
            endpoint: conn.endpoint.clone(),
            detail: detail.into(),
        };
        let (cmd, sasl) = match &creds.auth {
            Auth::OAuth2(tok) => {
                let tok = tok.expose();
                if !no_ctl(user) || !no_ctl(tok) {
                    return Err(unsupported(
                        "the user name or token holds a control character",
                    ));
                }
                if caps.contains("AUTH=OAUTHBEARER") {
                    let u = user.replace('=', "=3D").replace(',', "=2C");
                    let p = format!(
                        "n,a={u},\x01host={}\x01port={}\x01auth=Bearer {tok}\x01\x01",
                        ep.host, ep.port
                    );
                    ("AUTHENTICATE OAUTHBEARER".to_string(), Some(p.into_bytes()))
                } else if caps.contains("AUTH=XOAUTH2") {
                    let p = format!("user={user}\x01auth=Bearer {tok}\x01\x01");
                    ("AUTHENTICATE XOAUTH2".to_string(), Some(p.into_bytes()))
                } else {
                    return Err(unsupported("the server offers neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2 for an OAuth2 token"));
                }
            }
            Auth::Password(pw) => {
                let pw = pw.expose();
                if caps.contains("AUTH=PLAIN") && no_ctl(user) && no_ctl(pw) {
                    let p = format!("\0{user}\0{pw}").into_bytes();
                    ("AUTHENTICATE PLAIN".to_string(), Some(p))
                } else if caps.contains("LOGINDISABLED") {
                    return Err(unsupported(
                        "the server disables LOGIN and offers no AUTH=PLAIN",
                    ));
                } else if [user, pw].iter().any(|s| s.contains(['\r', '\n', '\0'])) {
                    return Err(unsupported(
                        "the user name or password holds a line break or NUL, which LOGIN cannot send",
                    ));
                } else {
                    (format!("LOGIN {} {}", quote(user), quote(pw)), None)
                }
            }
        };
        // SASL-IR (RFC 4959): the initial response goes on the command line, saving
        // the round trip of the empty challenge.
        let (cmd, sasl) = match sasl {
            Some(ir) if caps.contains("SASL-IR") => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(ir);
                (format!("{cmd} {b64}"), None)
            }
            sasl => (cmd, sasl),
        };
        let t = conn.timeout;
        match timeout(t, conn.authenticate(&cmd, sasl, user)).await {
            Err(_) => Err(conn.timeout_err(t)),
            Ok(r) => r,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.conn.endpoint
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
        self.conn.timeout = t;
    }

    /// The folder opened last, if any.
    pub fn selected(&self) -> Option<&str> {
        self.selected.as_deref()
    }

    /// Sends a tagged command; returns its tag.
    async fn send(&mut self, cmd: &str) -> Result<String, ImapError> {
        self.conn.send(cmd).await
    }

    /// Reads the next response and turns it into an [`Event`].
    pub async fn next_event(&mut self) -> Result<Event, ImapError> {
        let f = self.conn.frame().await?;
        let mut ev = event(&self.conn.endpoint, &f)?;
        // A diverted literal of a FETCH is its BODY[]: no other item comes near the
        // bound.
        if let Event::Fetch(m) = &mut ev {
            m.spooled = self.conn.spooled.pop();
        }
        Ok(ev)
    }

    /// Runs a command to its tagged end, handing each untagged response to `each`.
    /// Returns (ok, status, text).
    async fn run<F>(&mut self, cmd: &str, each: F) -> Result<(bool, String, String), ImapError>
    where
        F: FnMut(&Untagged<'_>),
    {
        let tag = self.send(cmd).await?;
        self.finish(&tag, each).await
    }

    /// Reads the command tagged `tag`, already sent, to its end, handing each untagged
    /// response to `each`. Returns (ok, status, text).
    async fn finish<F>(
        &mut self,
        tag: &str,
        mut each: F,
    ) -> Result<(bool, String, String), ImapError>
    where
        F: FnMut(&Untagged<'_>),
    {
        loop {
            let f = self.conn.frame().await?;
            if let Some(st) = self.conn.ending(&f, tag)? {
                return Ok((
                    st.word == StatusWord::Ok,
                    st.word.as_str().to_string(),
                    printable(&st.text),
                ));
            }
            if f.kind() == Kind::Untagged {
                let bytes = f.plain_literals();
                each(&untagged(&self.conn.endpoint, &f, &bytes)?);
            }
        }
    }

    /// Every mailbox: `LIST "" "*"` with SPECIAL-USE and SUBSCRIBED return options when
    /// the server has LIST-EXTENDED, else LIST plus LSUB. NAMESPACE, when not known yet,
    /// goes in the same pipeline (every caller asks for both): one round trip for all.
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
        let list_tag = self.send(&cmd).await?;
        let lsub_tag = match extended {
            false => Some(self.send("LSUB \"\" \"*\"").await?),
            true => None,
        };
        let ns_tag = match self.namespace.is_none() && self.caps.contains("NAMESPACE") {
            true => Some(self.send("NAMESPACE").await?),
            false => None,
        };
        let mut out: Vec<MailboxInfo> = Vec::new();
        let (ok, status, text) = self
            .finish(&list_tag, |r| {
                if let Untagged::Data(Response::MailboxData(MailboxDatum::List {
                    name_attributes,
                    delimiter,
                    name,
                })) = r
                {
                    out.push(mailbox_info(name_attributes, delimiter.as_deref(), name));
                }
            })
            .await?;
        let mut subs: HashSet<String> = HashSet::new();
        let lsub_ok = match lsub_tag {
            Some(tag) => {
                self.finish(&tag, |r| {
                    if let Untagged::Data(Response::MailboxData(MailboxDatum::List {
                        name, ..
                    })) = r
                    {
                        subs.insert(unescape(name));
                    }
                })
                .await?
                .0
            }
            None => false,
        };
        if let Some(tag) = ns_tag {
            let ns = self.namespace_answer(&tag).await?;
            self.namespace = Some(ns);
        }
        if !ok {
            return Err(ImapError::Command {
                endpoint: self.conn.endpoint.clone(),
                command: cmd,
                status,
                text,
            });
        }
        if lsub_ok {
            for m in &mut out {
                m.subscribed = subs.contains(&m.raw_name);
            }
        }
        // LIST-EXTENDED may report subscribed names that do not exist (\NonExistent):
        // they are subscriptions, not folders.
        out.retain(|m| !m.raw_name.is_empty());
        let mut seen = HashSet::new();
        out.retain(|m| seen.insert(m.raw_name.clone()));
        Ok(out)
    }

    /// The personal namespace's prefix and delimiter, when the server offers NAMESPACE
    /// (asked on first use, or along with [`list`](Self::list)).
    pub async fn namespace(&mut self) -> Result<Option<(String, Option<char>)>, ImapError> {
        if let Some(ns) = &self.namespace {
            return Ok(ns.clone());
        }
        let mut ns = None;
        if self.caps.contains("NAMESPACE") {
            let tag = self.send("NAMESPACE").await?;
            ns = self.namespace_answer(&tag).await?;
        }
        self.namespace = Some(ns.clone());
        Ok(ns)
    }

    /// The answer to the NAMESPACE command tagged `tag`: the personal namespace, if the
    /// server said OK and named one.
    async fn namespace_answer(
        &mut self,
        tag: &str,
    ) -> Result<Option<(String, Option<char>)>, ImapError> {
        let (data, st) = self.conn.answer(tag).await?;
        Ok(data
            .iter()
            .find_map(|f| parse_namespace(f.first_line()))
            .filter(|_| st.word == StatusWord::Ok))
    }

    /// Opens a folder read-only.
    pub async fn examine(&mut self, raw_name: &str) -> Result<FolderStatus, ImapError> {
        self.open("EXAMINE", raw_name).await
    }

    /// Opens a folder read-write (for importers; exports use [`examine`]).
    pub async fn select(&mut self, raw_name: &str) -> Result<FolderStatus, ImapError> {
        self.open("SELECT", raw_name).await
    }

    /// `EXAMINE name` or `SELECT name`, with CONDSTORE when offered.
    pub(super) fn open_command(&self, verb: &str, raw_name: &str) -> String {
        let condstore = self.has_capability("CONDSTORE");
        format!(
            "{verb} {}{}",
            quote(raw_name),
            if condstore { " (CONDSTORE)" } else { "" }
        )
    }

    fn folder_err(
        &self,
        raw_name: &str,
        command: String,
        status: String,
        text: String,
    ) -> ImapError {
        ImapError::Folder {
            endpoint: self.conn.endpoint.clone(),
            folder: crate::mail::utf7::decode(raw_name).unwrap_or_else(|_| raw_name.into()),
            command,
            status,
            text,
        }
    }

    async fn open(&mut self, verb: &str, raw_name: &str) -> Result<FolderStatus, ImapError> {
        let cmd = self.open_command(verb, raw_name);
        self.selected = None;
        let mut st = FolderStatus::default();
        let (ok, status, text) = self.run(&cmd, |r| fold_status(&mut st, r)).await?;
        if !ok {
            return Err(self.folder_err(raw_name, verb.to_string(), status, text));
        }
        self.selected = Some(raw_name.to_string());
        Ok(st)
    }

    /// Opens and reads several folders with every command sent at once, so the whole
    /// list costs one round trip instead of two or three per folder: for each folder
    /// EXAMINE (or SELECT), `UID FETCH 1:*` of `what`, and UNSELECT when asked and
    /// offered. The server runs them in turn, so each answer belongs to the oldest
    /// command still open. A folder that cannot be opened gets its error (and its
    /// FETCH, run with no folder open, is passed over); a FETCH refused in an empty
    /// folder is an empty folder. `Err` only when the session itself failed.
    pub async fn read_folders(
        &mut self,
        reqs: &[FolderRead],
    ) -> Result<Vec<FolderReadOut>, ImapError> {
        self.read_folders_as(reqs).await
    }

    /// [`read_folders`](Self::read_folders) keeping each FETCH response as `T` (e.g.
    /// [`Listed`]), the listing sized once from the folder's EXISTS.
    pub async fn read_folders_as<T: From<FetchedMessage>>(
        &mut self,
        reqs: &[FolderRead],
    ) -> Result<Vec<FolderReadOut<T>>, ImapError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        enum Step {
            Open,
            Fetch,
            Unselect,
        }
        let condstore = self.has_capability("CONDSTORE");
        let unselect = self.has_capability("UNSELECT");
        let mut steps: Vec<(String, usize, Step)> = Vec::new();
        let mut out = String::new();
        for (i, r) in reqs.iter().enumerate() {
            let verb = if r.read_only { "EXAMINE" } else { "SELECT" };
            let mut cmds = vec![(self.open_command(verb, &r.raw_name), Step::Open)];
            if let Some(what) = r.what {
                let set = match r.uids {
                    Some((a, b)) => format!("{a}:{b}"),
                    None => "1:*".into(),
                };
                cmds.push((
                    format!("UID FETCH {set} {}", what.items(condstore)),
                    Step::Fetch,
                ));
            }
            if r.unselect && unselect {
                cmds.push(("UNSELECT".to_string(), Step::Unselect));
            }
            for (cmd, step) in cmds {
                let tag = self.conn.next_tag();
                out.push_str(&format!("{tag} {cmd}\r\n"));
                steps.push((tag, i, step));
            }
        }
        let t = self.conn.timeout;
        self.conn.write(&[out.as_bytes()], t).await?;
        let mut res: Vec<FolderReadOut<T>> = reqs
            .iter()
            .map(|_| FolderReadOut {
                status: Ok(FolderStatus::default()),
                messages: Ok(Vec::new()),
            })
            .collect();
        for (tag, i, step) in &steps {
            let r = &reqs[*i];
            loop {
                let f = self.conn.frame().await?;
                if let Some(st) = self.conn.ending(&f, tag)? {
                    let ok = st.word == StatusWord::Ok;
                    let (word, text) = (st.word.as_str().to_string(), printable(&st.text));
                    match step {
                        Step::Open if ok => {
                            self.selected = Some(r.raw_name.clone());
                            let o = &mut res[*i];
                            if let (Ok(st), Ok(v), Some(_)) = (&o.status, &mut o.messages, r.what) {
                                v.reserve_exact(census_reserve::<T>(st.exists, r.uids));
                            }
                        }
                        Step::Open => {
                            self.selected = None;
                            let verb = if r.read_only { "EXAMINE" } else { "SELECT" };
                            res[*i].status =
                                Err(self.folder_err(&r.raw_name, verb.into(), word, text));
                        }
                        Step::Fetch => {
                            let opened = res[*i].status.as_ref().is_ok_and(|s| s.exists > 0);
                            if !ok && opened {
                                res[*i].messages = Err(self.folder_err(
                                    &r.raw_name,
                                    "UID FETCH 1:*".into(),
                                    word,
                                    text,
                                ));
                            }
                        }
                        Step::Unselect if ok => self.selected = None,
                        Step::Unselect => {}
                    }
                    break;
                }
                if f.kind() != Kind::Untagged {
                    continue;
                }
                match step {
                    Step::Open => {
                        let bytes = f.plain_literals();
                        let u = untagged(&self.conn.endpoint, &f, &bytes)?;
                        if let Ok(st) = res[*i].status.as_mut() {
                            fold_status(st, &u);
                        }
                    }
                    Step::Fetch => {
                        if let (Event::Fetch(m), Ok(v)) =
                            (event(&self.conn.endpoint, &f)?, res[*i].messages.as_mut())
                        {
                            v.push(m.into());
                        }
                    }
                    Step::Unselect => {}
                }
            }
        }
        Ok(res)
    }

    /// Runs `cmds` (no literals) with all of them sent at once; their completions in
    /// order. One round trip for the lot, where each alone would cost one.
    pub async fn pipelined(
        &mut self,
        cmds: &[String],
    ) -> Result<Vec<(bool, String, String)>, ImapError> {
        let mut out = String::new();
        let mut tags = Vec::new();
        for c in cmds {
            let tag = self.conn.next_tag();
            out.push_str(&format!("{tag} {c}\r\n"));
            tags.push(tag);
        }
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let t = self.conn.timeout;
        self.conn.write(&[out.as_bytes()], t).await?;
        let mut res = Vec::new();
        for tag in &tags {
            loop {
                let f = self.conn.frame().await?;
                if let Some(st) = self.conn.ending(&f, tag)? {
                    res.push((
                        st.word == StatusWord::Ok,
                        st.word.as_str().to_string(),
                        printable(&st.text),
                    ));
                    break;
                }
            }
        }
        Ok(res)
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

    /// Runs a `UID FETCH` to its end and returns every FETCH response, each made a `T`
    /// as it arrives (a census of a large folder is never held as raw responses, ~150
    /// bytes a message before their strings); a tagged NO/BAD is an error naming the
    /// folder.
    pub async fn uid_fetch_all<T: From<FetchedMessage>>(
        &mut self,
        uid_set: &str,
        what: FetchWhat,
    ) -> Result<Vec<T>, ImapError> {
        let tag = self.send_uid_fetch(uid_set, what).await?;
        let mut out = Vec::new();
        loop {
            match self.next_event().await? {
                Event::Fetch(m) => out.push(T::from(m)),
                Event::Done {
                    tag: t,
                    ok,
                    status,
                    text,
                    ..
                } if t == tag => {
                    if ok {
                        return Ok(out);
                    }
                    let folder = self.selected.clone().unwrap_or_default();
                    return Err(ImapError::Folder {
                        endpoint: self.conn.endpoint.clone(),
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
                endpoint: self.conn.endpoint.clone(),
                command: "NOOP".into(),
                status,
                text,
            })
        }
    }

    pub async fn logout(mut self) -> Result<(), ImapError> {
        let tag = self.send("LOGOUT").await?;
        loop {
            let f = match self.conn.frame().await {
                Ok(f) => f,
                // A server that hangs up right after BYE is doing what LOGOUT asked.
                Err(ImapError::ConnectionLost { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            if f.kind() == Kind::Tagged(&tag) {
                return Ok(());
            }
        }
    }
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
    fn a_census_reserves_for_its_uid_range_not_the_folder() {
        assert_eq!(census_reserve::<[u8; 88]>(400_000, None), 400_000);
        assert_eq!(
            census_reserve::<[u8; 88]>(400_000, Some((1_001, 41_000))),
            40_000
        );
        assert_eq!(census_reserve::<[u8; 88]>(10, Some((1, u32::MAX))), 10);
        // IMAP reads 5:1 as 1:5.
        assert_eq!(census_reserve::<[u8; 88]>(10, Some((5, 1))), 5);
        // Never more than 64 MiB ahead of what arrives.
        assert_eq!(census_reserve::<[u8; 64]>(u32::MAX, None), 1 << 20);
    }

    /// The events of a transcript, each frame read as the session reads it.
    fn events(wire: &[u8]) -> Vec<Result<Event, ImapError>> {
        let mut f = Framer::new();
        f.push(wire);
        std::iter::from_fn(|| f.next_frame().unwrap())
            .map(|fr| event("test", &fr))
            .collect()
    }

    #[test]
    fn fetches_with_literal8_codes_and_unknown_responses() {
        let ev = events(
            b"* 1 FETCH (UID 9 FLAGS (\\Seen) BODY[] ~{4}\r\na\0\r\n RFC822.SIZE 4)\r\n\
* 2 FETCH (UID 10 BODY[HEADER] {2}\r\n\r\n)\r\n\
* ENABLED UTF8=ACCEPT\r\n* ID (\"name\" \"x\" {3}\r\n)(\r\n* OK [LIMIT] slow down\r\n+ Ready\r\n\
A5 OK [APPENDUID 7 3:4] Completed\r\n",
        );
        let ev: Vec<Event> = ev.into_iter().map(Result::unwrap).collect();
        let Event::Fetch(m) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!((m.uid, m.size), (Some(9), Some(4)));
        assert_eq!(m.body.as_deref(), Some(&b"a\0\r\n"[..]));
        assert_eq!(m.flags, Some(vec!["\\Seen".to_string()]));
        let Event::Fetch(m) = &ev[1] else {
            panic!("{ev:?}")
        };
        assert_eq!(m.header_fields.as_deref(), Some(&b"\r\n"[..]));
        assert_eq!(ev[2], Event::Other);
        assert_eq!(ev[3], Event::Other);
        assert!(matches!(&ev[4], Event::Notice { text, .. } if is_throttle_text(text)));
        assert_eq!(ev[5], Event::Continuation);
        assert_eq!(
            ev[6],
            Event::Done {
                tag: "A5".into(),
                ok: true,
                status: "OK".into(),
                text: "[APPENDUID 7 3:4] Completed".into(),
                appenduid: Some(AppendUid {
                    uidvalidity: 7,
                    uids: vec![3, 4]
                }),
            }
        );
    }

    #[test]
    fn a_broken_fetch_and_a_bye_end_the_session() {
        let ev = events(b"* 1 FETCH (UID x)\r\n* BYE going away\r\n");
        assert!(
            matches!(&ev[0], Err(ImapError::Protocol { detail, .. }) if detail.contains("UID x"))
        );
        assert!(matches!(&ev[1], Err(ImapError::Bye { text, .. }) if text == "going away"));
    }

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
    fn quoted_names_and_throttling() {
        assert_eq!(unescape(r#"a\"b\\c"#), r#"a"b\c"#);
        assert!(is_throttle_text("[THROTTLED] slow down"));
        assert!(!is_throttle_text("[NONEXISTENT] no such mailbox"));
    }
}
