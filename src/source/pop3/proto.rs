//! The POP3 wire format with no I/O: status lines with RFC 2449 response codes, CAPA,
//! STAT, LIST and UIDL bodies, the commands this client may send, and the streaming
//! dot-unstuffer for multi-line responses. Keeping it pure lets every byte-level rule be
//! tested over every split point without a server.

use std::fmt;

/// An RFC 2449 / RFC 3206 response code: the bracketed word after `+OK`/`-ERR`. It is the
/// only machine-readable part of an error, so it decides whether a retry can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespCode {
    /// `[IN-USE]`: another session holds the maildrop lock.
    InUse,
    /// `[LOGIN-DELAY]`: logged in too recently.
    LoginDelay,
    /// `[SYS/TEMP]`: a server-side failure that may go away.
    SysTemp,
    /// `[SYS/PERM]`: a server-side failure that will not go away by itself.
    SysPerm,
    /// `[AUTH]`: the credentials themselves were refused.
    Auth,
    /// Any other code, upper-cased, including extensions we do not interpret.
    Other(String),
}

impl RespCode {
    pub fn parse(s: &str) -> RespCode {
        let up = s.trim().to_ascii_uppercase();
        match up.as_str() {
            "IN-USE" => RespCode::InUse,
            "LOGIN-DELAY" => RespCode::LoginDelay,
            "SYS/TEMP" => RespCode::SysTemp,
            "SYS/PERM" => RespCode::SysPerm,
            "AUTH" => RespCode::Auth,
            _ => RespCode::Other(up),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RespCode::InUse => "IN-USE",
            RespCode::LoginDelay => "LOGIN-DELAY",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
            RespCode::Auth => "AUTH",
            RespCode::Other(s) => s,
        }
    }

    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RespCode::InUse | RespCode::LoginDelay | RespCode::SysTemp
        )
    }
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of the three first-line forms the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Err,
    /// `+ challenge`: a SASL continuation (RFC 5034).
    Continue,
}

/// One parsed status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub code: Option<RespCode>,
    /// The rest of the line after the status and code; for `Continue`, the base64 challenge.
    pub text: String,
}

impl Response {
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("not a POP3 status line: {0:?}")]
    NotAStatus(String),
    #[error("malformed {what} line: {line:?}")]
    Malformed { what: &'static str, line: String },
    /// Names the argument only: its value may be a secret.
    #[error("the {0} contains a character POP3 cannot carry (CR, LF or NUL)")]
    BadArgument(&'static str),
    /// An answer longer than its [`BodyLimit`] allows.
    #[error("{0}")]
    Oversized(String),
}

/// Server text quoted in an error is cut short, so a hostile or broken server cannot
/// make our messages arbitrarily long.
fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        s + "…"
    } else {
        s
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses a status line (with or without its line ending). Case-insensitive, because
/// some servers send `+ok`; anything else is an error rather than a guess.
pub fn parse_response(line: &[u8]) -> Result<Response, ProtoError> {
    let line = trim_eol(line);
    let split = |prefix_len: usize| -> Option<&[u8]> {
        let rest = &line[prefix_len..];
        if rest.is_empty() {
            Some(rest)
        } else if rest[0] == b' ' {
            Some(&rest[1..])
        } else {
            None
        }
    };
    let (status, rest) = if line.len() >= 3 && line[..3].eq_ignore_ascii_case(b"+OK") {
        (Status::Ok, split(3))
    } else if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"-ERR") {
        (Status::Err, split(4))
    } else if line.first() == Some(&b'+') {
        (Status::Continue, split(1))
    } else {
        (Status::Err, None)
    };
    let rest = rest.ok_or_else(|| ProtoError::NotAStatus(excerpt(line)))?;
    let text = String::from_utf8_lossy(rest).into_owned();
    if status == Status::Continue {
        return Ok(Response {
            status,
            code: None,
            text,
        });
    }
    // RFC 2449: the code is the first thing after the status, in brackets.
    if let Some(after) = text.strip_prefix('[') {
        if let Some((code, tail)) = after.split_once(']') {
            if !code.is_empty() && !code.contains(' ') {
                return Ok(Response {
                    status,
                    code: Some(RespCode::parse(code)),
                    text: tail.trim_start().to_string(),
                });
            }
        }
    }
    Ok(Response {
        status,
        code: None,
        text,
    })
}

/// The RFC 1939 §7 APOP timestamp of a greeting (`<...@...>`, brackets included), when
/// the server offers APOP. Only a bracketed word with an `@` counts, as the RFC shows it.
pub fn apop_timestamp(greeting_text: &str) -> Option<&str> {
    let start = greeting_text.find('<')?;
    let len = greeting_text[start..].find('>')? + 1;
    let ts = &greeting_text[start..start + len];
    (ts.contains('@') && !ts.contains(char::is_whitespace)).then_some(ts)
}

/// The lines of a multi-line body that has already been unstuffed, without their line
/// endings. Tolerates bare LF and a missing final newline.
pub fn body_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    let empty = body.is_empty();
    body.split(|&b| b == b'\n')
        .map(trim_eol)
        .filter(move |_| !empty)
}

/// What CAPA (RFC 2449) said. Names are kept upper-cased; arguments as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    entries: Vec<(String, Vec<String>)>,
}

impl Capabilities {
    pub fn parse(body: &[u8]) -> Capabilities {
        let mut entries = Vec::new();
        for line in body_lines(body) {
            let line = String::from_utf8_lossy(line);
            let mut words = line.split_ascii_whitespace();
            if let Some(name) = words.next() {
                entries.push((
                    name.to_ascii_uppercase(),
                    words.map(str::to_string).collect(),
                ));
            }
        }
        Capabilities { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.args(name).is_some()
    }

    pub fn args(&self, name: &str) -> Option<&[String]> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, a)| a.as_slice())
    }

    pub fn sasl_mechanisms(&self) -> &[String] {
        self.args("SASL").unwrap_or(&[])
    }

    pub fn has_sasl(&self, mechanism: &str) -> bool {
        self.sasl_mechanisms()
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    pub fn stls(&self) -> bool {
        self.has("STLS")
    }

    pub fn pipelining(&self) -> bool {
        self.has("PIPELINING")
    }

    pub fn uidl(&self) -> bool {
        self.has("UIDL")
    }

    pub fn user(&self) -> bool {
        self.has("USER")
    }

    /// RFC 6856: the server has a UTF-8 mode. Without it, a server may replace a message
    /// whose headers are raw UTF-8 with a stand-in (Courier does), since such mail is
    /// not for clients that do not ask for UTF8.
    pub fn utf8(&self) -> bool {
        self.has("UTF8")
    }

    pub fn resp_codes(&self) -> bool {
        self.has("RESP-CODES")
    }

    /// TOP is optional in RFC 1939; only CAPA can tell whether a server has it.
    pub fn top(&self) -> bool {
        self.has("TOP")
    }

    pub fn implementation(&self) -> Option<String> {
        self.args("IMPLEMENTATION").map(|a| a.join(" "))
    }
}

fn malformed(what: &'static str, line: &[u8]) -> ProtoError {
    ProtoError::Malformed {
        what,
        line: excerpt(line),
    }
}

/// Splits `msgno rest`, the shape shared by LIST and UIDL lines. Extra words after the
/// value are allowed (RFC 1939 leaves room for them).
fn msgno_and_word<'a>(what: &'static str, line: &'a [u8]) -> Result<(u32, &'a str), ProtoError> {
    let s = std::str::from_utf8(line).map_err(|_| malformed(what, line))?;
    let mut words = s.split_ascii_whitespace();
    let n = words
        .next()
        .and_then(|w| w.parse::<u32>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| malformed(what, line))?;
    let w = words.next().ok_or_else(|| malformed(what, line))?;
    Ok((n, w))
}

/// One LIST scan line (`msgno octets`), also the text of a single-message `+OK` LIST.
pub fn parse_list_line(line: &[u8]) -> Result<(u32, u64), ProtoError> {
    let line = trim_eol(line);
    let (n, size) = msgno_and_word("LIST", line)?;
    let size = size.parse().map_err(|_| malformed("LIST", line))?;
    Ok((n, size))
}

/// A whole LIST body.
pub fn parse_list(body: &[u8]) -> Result<Vec<(u32, u64)>, ProtoError> {
    body_lines(body).map(parse_list_line).collect()
}

/// One UIDL line (`msgno unique-id`). RFC 1939 restricts ids to 0x21..=0x7E; the
/// tokenizer already stops at whitespace, and anything non-ASCII is refused because it
/// could not round-trip through our archive index as text.
pub fn parse_uidl_line(line: &[u8]) -> Result<(u32, String), ProtoError> {
    let line = trim_eol(line);
    let (n, uid) = msgno_and_word("UIDL", line)?;
    if !uid.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(malformed("UIDL", line));
    }
    Ok((n, uid.to_string()))
}

/// A whole UIDL body.
pub fn parse_uidl(body: &[u8]) -> Result<Vec<(u32, String)>, ProtoError> {
    body_lines(body).map(parse_uidl_line).collect()
}

/// The text of a STAT `+OK`: `count octets`.
pub fn parse_stat(text: &str) -> Result<(u32, u64), ProtoError> {
    let mut words = text.split_ascii_whitespace();
    let bad = || malformed("STAT", text.as_bytes());
    let count = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    let octets = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    Ok((count, octets))
}

/// Every command this client can send. Commands are built only from this enum, so a
/// command that changes the maildrop cannot be sent by mistake: there is no variant for
/// one, and no way to send a free-form line.
#[derive(Clone, Copy)]
pub enum Command<'a> {
    Capa,
    Stls,
    /// RFC 6856 UTF-8 mode, asked for before logging in.
    Utf8,
    User(&'a str),
    /// The password: never shown by `Debug`/`Display`.
    Pass(&'a str),
    /// `APOP user digest` (RFC 1939 §7); the digest is derived from the password and is
    /// never shown.
    Apop {
        user: &'a str,
        digest: &'a str,
    },
    /// `AUTH mechanism [initial-response]` (RFC 5034); the response is secret.
    Auth {
        mechanism: &'a str,
        initial: Option<&'a str>,
    },
    /// A line answering a SASL `+` challenge; secret.
    SaslResponse(&'a str),
    Stat,
    List,
    Uidl,
    Retr(u32),
    /// `TOP msg lines`: the header, the blank line and the first `lines` body lines.
    Top {
        msg: u32,
        lines: u64,
    },
    Noop,
    Quit,
}

impl Command<'_> {
    /// The command word, safe to put in errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Utf8 => "UTF8",
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Auth { .. } => "AUTH",
            Command::SaslResponse(_) => "AUTH response",
            Command::Stat => "STAT",
            Command::List => "LIST",
            Command::Uidl => "UIDL",
            Command::Retr(_) => "RETR",
            Command::Top { .. } => "TOP",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
        }
    }

    /// The bytes to send, CRLF included. An argument holding CR, LF or NUL is refused:
    /// it would let a user name smuggle in a second command.
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        fn check(what: &'static str, s: &str) -> Result<(), ProtoError> {
            if s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                Err(ProtoError::BadArgument(what))
            } else {
                Ok(())
            }
        }
        let line = match *self {
            Command::User(u) => {
                check("user name", u)?;
                format!("USER {u}")
            }
            Command::Pass(p) => {
                check("password", p)?;
                format!("PASS {p}")
            }
            Command::Apop { user, digest } => {
                check("user name", user)?;
                check("APOP digest", digest)?;
                format!("APOP {user} {digest}")
            }
            Command::Auth { mechanism, initial } => {
                check("SASL mechanism", mechanism)?;
                match initial {
                    Some(ir) => {
                        check("SASL response", ir)?;
                        format!("AUTH {mechanism} {ir}")
                    }
                    None => format!("AUTH {mechanism}"),
                }
            }
            Command::SaslResponse(r) => {
                check("SASL response", r)?;
                r.to_string()
            }
            Command::Retr(n) => format!("RETR {n}"),
            Command::Top { msg, lines } => format!("TOP {msg} {lines}"),
            other => other.name().to_string(),
        };
        let mut v = line.into_bytes();
        v.extend_from_slice(b"\r\n");
        Ok(v)
    }
}

impl fmt::Display for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::User(u) => write!(f, "USER {u}"),
            Command::Pass(_) => f.write_str("PASS ***"),
            Command::Apop { user, .. } => write!(f, "APOP {user} ***"),
            Command::Auth {
                mechanism,
                initial: Some(_),
            } => write!(f, "AUTH {mechanism} ***"),
            Command::Auth {
                mechanism,
                initial: None,
            } => write!(f, "AUTH {mechanism}"),
            Command::SaslResponse(_) => f.write_str("***"),
            Command::Retr(n) => write!(f, "RETR {n}"),
            Command::Top { msg, lines } => write!(f, "TOP {msg} {lines}"),
            other => f.write_str(other.name()),
        }
    }
}

impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The body line count sent with TOP to get a whole message: as many lines as a message
/// under 4 GiB can have (a CRLF line takes two bytes), and the largest value a server
/// that parses the count as a signed 32-bit number still accepts; a longer message
/// comes back short, which the LIST size check catches. Never 2^64-1: Dovecot (uoff_t) takes exactly
/// that value to mean RETR, and then marks the message `\Seen` as for RETR.
pub const TOP_WHOLE: u64 = i32::MAX as u64;

/// How a whole message is asked for. RETR is the only command RFC 1939 defines to
/// return a message whole, but servers may record that it was read (Dovecot sets
/// `\Seen` at the end of the session, QUIT or not); TOP with [`TOP_WHOLE`] lines
/// returns the same bytes and is not recorded as reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieve {
    Retr,
    Top,
}

impl Retrieve {
    pub fn command(self, msg: u32) -> Command<'static> {
        match self {
            Retrieve::Retr => Command::Retr(msg),
            Retrieve::Top => Command::Top {
                msg,
                lines: TOP_WHOLE,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Retrieve::Retr => "RETR",
            Retrieve::Top => "TOP",
        }
    }
}

/// Whether the answer to `TOP msg TOP_WHOLE` is what RETR would have sent, judged by
/// the LIST size (the size of the message as RETR sends it, before stuffing) and the
/// answer's length and last bytes (`tail`: at least its last four, or all of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopVerdict {
    /// Exactly the LIST size.
    Whole,
    /// The LIST size plus a CRLF ending a last line that is not blank: the stored
    /// message has no final newline and the server added one, as it must for RETR too
    /// (a multi-line answer can only end after a line break).
    AddedFinalNewline,
    /// Anything else. TOP is only defined as "header, blank line, N body lines", so a
    /// server may add a blank line to a message without a body, or cap N; only RETR is
    /// sure to give the message whole.
    Differs,
}

pub fn judge_top(list_size: u64, len: u64, tail: &[u8]) -> TopVerdict {
    if len == list_size {
        TopVerdict::Whole
    } else if len == list_size + 2
        && tail.ends_with(b"\r\n")
        // A blank last line after another line is what a server adding a header/body
        // separator to a message without a body would send; a stored last line without
        // a newline is never blank (it would then end with the newline). An empty
        // message comes back as one CRLF from RETR as well.
        && !tail.ends_with(b"\n\r\n")
    {
        TopVerdict::AddedFinalNewline
    } else {
        TopVerdict::Differs
    }
}

/// The longest status line taken. RFC 2449 allows 512 octets; this is generous for
/// chatty servers yet stops a server that never ends its line from growing our buffer.
pub const MAX_STATUS_LINE: usize = 32 * 1024;

/// CAPA, LIST and UIDL bodies are held in memory (messages never are). A UIDL line is
/// at most 83 bytes (a 10-digit number, a 70-character id, spaces, CRLF), so this is
/// room for 800 000 messages at the longest ids, and for millions with real ones.
pub const MAX_LISTING: u64 = 64 << 20;

/// Added to twice the LIST size: room for a server whose LIST undercounts a tiny
/// message (a missing final CRLF, a lone line).
pub const MESSAGE_SLACK: u64 = 64 * 1024;

/// A message the session has no LIST size for: the largest a POP3 message can be
/// whose size a server can state (see [`TOP_WHOLE`]).
pub const MAX_UNLISTED_MESSAGE: u64 = 4 << 30;

/// How many body bytes one multi-line answer may bring before the client stops reading
/// it: past this a server is not sending what it announced, and would otherwise make
/// the client hold or wait for bytes without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// A CAPA, LIST or UIDL answer.
    Listing,
    /// A whole message, with its LIST size when the session has one. Twice the LIST
    /// size allows a server that counts stored LF line ends but sends CRLF.
    Message { msgno: u32, list_size: Option<u64> },
}

impl BodyLimit {
    pub fn max(&self) -> u64 {
        match *self {
            BodyLimit::Listing => MAX_LISTING,
            BodyLimit::Message {
                list_size: Some(s), ..
            } => s.saturating_mul(2).saturating_add(MESSAGE_SLACK),
            BodyLimit::Message {
                list_size: None, ..
            } => MAX_UNLISTED_MESSAGE,
        }
    }

    /// An error once `received` body bytes are more than this answer may have.
    pub fn check(&self, received: u64) -> Result<(), ProtoError> {
        let max = self.max();
        if received <= max {
            return Ok(());
        }
        Err(ProtoError::Oversized(match *self {
            BodyLimit::Listing => format!("the listing passed {max} bytes without ending"),
            BodyLimit::Message {
                msgno,
                list_size: Some(s),
            } => format!(
                "message {msgno} passed {max} bytes without ending, where LIST announced {s}"
            ),
            BodyLimit::Message {
                msgno,
                list_size: None,
            } => format!("message {msgno} passed {max} bytes without ending"),
        }))
    }
}

/// Where the unstuffer is within the current line. The only bytes ever held back are
/// a leading `.` and a `\r` after it, so memory stays constant whatever the line length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UState {
    LineStart,
    /// Saw `.` at a line start (not yet emitted).
    Dot,
    /// Saw `.\r` at a line start (neither emitted).
    DotCr,
    InLine,
    Done,
}

/// Streaming decoder for a POP3 multi-line body (RFC 1939 §3): removes the stuffed `.`
/// from lines starting with `..` and stops at the `.` line. Feed it chunks split
/// anywhere; it hands out slices of the input (plus at most the held-back `.`/`.\r`),
/// so the work is linear and nothing accumulates.
///
/// Lenient where servers are known to stray: a bare-LF `.` line also ends the body, and
/// a line starting with a single `.` followed by anything else (an unstuffed line from a
/// sloppy server) is passed through unchanged, since a stuffing server could not have
/// produced it.
#[derive(Debug, Clone)]
pub struct Unstuffer {
    state: UState,
}

impl Default for Unstuffer {
    fn default() -> Self {
        Unstuffer::new()
    }
}

impl Unstuffer {
    pub fn new() -> Unstuffer {
        Unstuffer {
            state: UState::LineStart,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == UState::Done
    }

    /// Decodes `input`, passing message bytes to `emit` in order. Returns `Some(n)` when
    /// the terminating line ended at `input[n - 1]` (bytes after it belong to the next
    /// response), `None` when all of `input` was consumed and the body goes on.
    pub fn feed(&mut self, input: &[u8], mut emit: impl FnMut(&[u8])) -> Option<usize> {
        if self.state == UState::Done {
            return Some(0);
        }
        // `run` is the start of input bytes decided to be message bytes but not yet
        // emitted, so contiguous stretches go out as one slice.
        let mut run = 0;
        let mut i = 0;
        let flush = |emit: &mut dyn FnMut(&[u8]), from: usize, to: usize| {
            if to > from {
                emit(&input[from..to]);
            }
        };
        while i < input.len() {
            match self.state {
                UState::InLine => match input[i..].iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        i += p + 1;
                        self.state = UState::LineStart;
                    }
                    None => i = input.len(),
                },
                UState::LineStart => {
                    if input[i] == b'.' {
                        flush(&mut emit, run, i);
                        i += 1;
                        run = i;
                        self.state = UState::Dot;
                    } else {
                        self.state = UState::InLine;
                    }
                }
                UState::Dot => match input[i] {
                    // `..`: the first dot was stuffing; this one is content.
                    b'.' => self.state = UState::InLine,
                    b'\r' => {
                        i += 1;
                        run = i;
                        self.state = UState::DotCr;
                    }
                    b'\n' => {
                        self.state = UState::Done;
                        return Some(i + 1);
                    }
                    _ => {
                        emit(b".");
                        self.state = UState::InLine;
                    }
                },
                UState::DotCr => {
                    if input[i] == b'\n' {
                        self.state = UState::Done;
                        return Some(i + 1);
                    }
                    emit(b".\r");
                    self.state = UState::InLine;
                }
                UState::Done => unreachable!("returned when reaching Done"),
            }
        }
        flush(&mut emit, run, input.len());
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_limits_follow_the_list_size() {
        let m = |s| BodyLimit::Message {
            msgno: 3,
            list_size: s,
        };
        assert_eq!(m(Some(10)).max(), 20 + MESSAGE_SLACK);
        assert!(m(Some(10)).check(20 + MESSAGE_SLACK).is_ok());
        let e = m(Some(10)).check(21 + MESSAGE_SLACK).unwrap_err();
        assert!(
            e.to_string().contains("message 3") && e.to_string().contains("LIST announced 10"),
            "{e}"
        );
        assert_eq!(m(Some(u64::MAX)).max(), u64::MAX);
        assert_eq!(m(None).max(), MAX_UNLISTED_MESSAGE);
        assert!(BodyLimit::Listing.check(MAX_LISTING).is_ok());
        assert!(BodyLimit::Listing.check(MAX_LISTING + 1).is_err());
    }

    fn ok(text: &str, code: Option<RespCode>) -> Response {
        Response {
            status: Status::Ok,
            code,
            text: text.into(),
        }
    }
    fn err(text: &str, code: Option<RespCode>) -> Response {
        Response {
            status: Status::Err,
            code,
            text: text.into(),
        }
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(
            parse_response(b"+OK Dovecot ready.\r\n").unwrap(),
            ok("Dovecot ready.", None)
        );
        assert_eq!(parse_response(b"+OK").unwrap(), ok("", None));
        assert_eq!(parse_response(b"+ok lower\n").unwrap(), ok("lower", None));
        assert_eq!(parse_response(b"-ERR\r\n").unwrap(), err("", None));
        assert_eq!(
            parse_response(b"-ERR [IN-USE] Mailbox locked\r\n").unwrap(),
            err("Mailbox locked", Some(RespCode::InUse))
        );
        assert_eq!(
            parse_response(b"-ERR [AUTH] Authentication failed.\r\n").unwrap(),
            err("Authentication failed.", Some(RespCode::Auth))
        );
        assert_eq!(
            parse_response(b"-ERR [SYS/TEMP] Try again later").unwrap(),
            err("Try again later", Some(RespCode::SysTemp))
        );
        assert_eq!(
            parse_response(b"-ERR [sys/perm] gone").unwrap(),
            err("gone", Some(RespCode::SysPerm))
        );
        assert_eq!(
            parse_response(b"-ERR [LOGIN-DELAY] wait").unwrap(),
            err("wait", Some(RespCode::LoginDelay))
        );
        assert_eq!(
            parse_response(b"+OK [X-FOO/BAR] hi").unwrap(),
            ok("hi", Some(RespCode::Other("X-FOO/BAR".into())))
        );
        // Brackets that are not a code stay in the text.
        assert_eq!(
            parse_response(b"-ERR [not a code] x").unwrap(),
            err("[not a code] x", None)
        );
        assert_eq!(
            parse_response(b"+ \r\n").unwrap(),
            Response {
                status: Status::Continue,
                code: None,
                text: String::new()
            }
        );
        assert_eq!(
            parse_response(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n")
                .unwrap()
                .text,
            "eyJzdGF0dXMiOiI0MDEifQ=="
        );
        // 8-bit text survives as lossy UTF-8 instead of failing the session.
        assert_eq!(
            parse_response(b"-ERR \xff bad\r\n").unwrap().text,
            "\u{fffd} bad"
        );
        for bad in [&b"OK"[..], b"+OKAY", b"-ERRx", b"", b"* OK imap", b"+x"] {
            assert!(parse_response(bad).is_err(), "{:?}", bad);
        }
        assert!(RespCode::InUse.is_transient() && !RespCode::Auth.is_transient());
    }

    /// Recorded from Dovecot 2.3 before and after login, and from a Gmail-like server.
    #[test]
    fn parses_capa() {
        let c = Capabilities::parse(
            b"CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\n\
              USER\r\nSASL PLAIN LOGIN\r\n",
        );
        assert!(c.stls() && c.pipelining() && c.uidl() && c.user() && c.resp_codes());
        assert!(c.has_sasl("plain") && c.has_sasl("LOGIN") && !c.has_sasl("XOAUTH2"));
        assert_eq!(c.sasl_mechanisms(), ["PLAIN", "LOGIN"]);
        assert_eq!(c.implementation(), None);

        let c = Capabilities::parse(
            b"USER\nRESP-CODES\nEXPIRE 0\nLOGIN-DELAY 300\nTOP\nUIDL\nX-GOOGLE-RICO\n\
              SASL PLAIN XOAUTH2 OAUTHBEARER\nIMPLEMENTATION Blurdybloop Server v1",
        );
        assert!(!c.stls() && !c.pipelining());
        assert!(c.has_sasl("xoauth2") && c.has_sasl("OAUTHBEARER"));
        assert_eq!(c.args("expire").unwrap(), ["0"]);
        assert_eq!(c.implementation().unwrap(), "Blurdybloop Server v1");
        assert!(Capabilities::parse(b"").is_empty());
        assert!(!c.utf8());

        // Courier 5.0 (pop3d), before and after login alike.
        let c = Capabilities::parse(
            b"STLS\r\nTOP\r\nUSER\r\nLOGIN-DELAY 10\r\nPIPELINING\r\nUIDL\r\n\
              UTF8 USER\r\nIMPLEMENTATION Courier Mail Server\r\n",
        );
        assert!(c.utf8() && c.top() && c.stls());
        assert_eq!(c.args("utf8").unwrap(), ["USER"]);
        assert_eq!(
            Capabilities::parse(b"top\r\n").names().collect::<Vec<_>>(),
            ["TOP"]
        );
    }

    #[test]
    fn finds_apop_timestamps() {
        assert_eq!(
            apop_timestamp("POP3 server ready <1896.697170952@dbc.mtview.ca.us>"),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
        assert_eq!(apop_timestamp("Dovecot ready."), None);
        assert_eq!(apop_timestamp("ready <no-at-sign>"), None);
        assert_eq!(apop_timestamp("ready <a b@c>"), None);
        assert_eq!(apop_timestamp("ready <x@y"), None);
        let c = Command::Apop {
            user: "mrose",
            digest: "c4c9334bac560ecc979e58001b3e22fb",
        };
        assert_eq!(
            c.encode().unwrap(),
            b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"
        );
        assert_eq!(c.to_string(), "APOP mrose ***");
    }

    #[test]
    fn parses_listings() {
        assert_eq!(
            parse_list(b"1 120\r\n2 200\r\n10 4194304\r\n").unwrap(),
            vec![(1, 120), (2, 200), (10, 4194304)]
        );
        assert_eq!(parse_list(b"").unwrap(), vec![]);
        assert_eq!(parse_list_line(b"3 77 extra").unwrap(), (3, 77));
        assert!(parse_list(b"1 x\r\n").is_err());
        assert!(parse_list(b"0 5\r\n").is_err());
        assert!(parse_list(b"1\r\n").is_err());
        assert!(parse_list(b"-1 5\r\n").is_err());
        assert_eq!(
            parse_uidl(b"1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n").unwrap(),
            vec![
                (1, "whqtswO00WBw418f9t5JxYwZ".into()),
                (2, "QhdPYR:00WBw1Ph7x7".into())
            ]
        );
        assert!(parse_uidl(b"1\r\n").is_err());
        assert!(parse_uidl(b"1 caf\xc3\xa9\r\n").is_err());
        assert_eq!(parse_stat("2 320").unwrap(), (2, 320));
        assert_eq!(parse_stat("0 0 extra").unwrap(), (0, 0));
        assert!(parse_stat("two 320").is_err());
        assert!(parse_stat("2").is_err());
    }

    #[test]
    fn commands_encode_and_hide_secrets() {
        assert_eq!(Command::Retr(42).encode().unwrap(), b"RETR 42\r\n");
        assert_eq!(Command::Capa.encode().unwrap(), b"CAPA\r\n");
        assert_eq!(Command::Utf8.encode().unwrap(), b"UTF8\r\n");
        assert_eq!(Command::User("alice").encode().unwrap(), b"USER alice\r\n");
        assert_eq!(Command::Pass("pw").encode().unwrap(), b"PASS pw\r\n");
        let auth = Command::Auth {
            mechanism: "PLAIN",
            initial: Some("AGFsaWNlAHB3"),
        };
        assert_eq!(auth.encode().unwrap(), b"AUTH PLAIN AGFsaWNlAHB3\r\n");
        assert_eq!(
            format!("{auth} {:?}", Command::Pass("pw")),
            "AUTH PLAIN *** PASS ***"
        );
        assert_eq!(format!("{}", Command::SaslResponse("c2VjcmV0")), "***");
        // A user name must not be able to inject a second command.
        let e = Command::User("alice\r\nSTAT").encode().unwrap_err();
        assert_eq!(e, ProtoError::BadArgument("user name"));
        let e = Command::Pass("hunter2\n").encode().unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn top_encodes_and_asks_for_every_line() {
        let top = Command::Top { msg: 7, lines: 0 };
        assert_eq!(top.encode().unwrap(), b"TOP 7 0\r\n");
        assert_eq!((top.name(), top.to_string()), ("TOP", "TOP 7 0".into()));
        assert_eq!(
            Retrieve::Top.command(42).encode().unwrap(),
            b"TOP 42 2147483647\r\n"
        );
        assert_eq!(
            format!("{:?}", Retrieve::Top.command(1)),
            "TOP 1 2147483647"
        );
        assert_eq!(Retrieve::Retr.command(42).encode().unwrap(), b"RETR 42\r\n");
        assert_eq!(
            (Retrieve::Top.name(), Retrieve::Retr.name()),
            ("TOP", "RETR")
        );
        // Fits a signed 32-bit parser, and is not Dovecot's RETR-meaning 2^64-1.
        assert!(i32::try_from(TOP_WHOLE).is_ok() && TOP_WHOLE != u64::MAX);
        // As many lines as a message under 4 GiB can have (a CRLF line takes 2 bytes).
        assert!(TOP_WHOLE >= u64::from(u32::MAX) / 2);
        let c = Capabilities::parse(b"USER\r\nTOP\r\n");
        assert!(c.top());
        assert!(!Capabilities::parse(b"USER\r\nUIDL\r\n").top());
    }

    #[test]
    fn judges_top_answers_against_the_list_size() {
        let judge = |list: u64, got: &[u8]| judge_top(list, got.len() as u64, got);
        assert_eq!(judge(8, b"A: b\r\n\r\n"), TopVerdict::Whole);
        // Headers only, sent as stored.
        assert_eq!(judge(6, b"A: b\r\n"), TopVerdict::Whole);
        // Stored without a final newline: CRLF added, as RETR does.
        assert_eq!(
            judge(12, b"A: b\r\n\r\nbody\r\n"),
            TopVerdict::AddedFinalNewline
        );
        assert_eq!(judge(4, b"A: b\r\n"), TopVerdict::AddedFinalNewline);
        // The last line is a lone dot (unstuffed already).
        assert_eq!(
            judge(9, b"A: b\r\n\r\n.\r\n"),
            TopVerdict::AddedFinalNewline
        );
        // A bare CR at the very end of the stored message.
        assert_eq!(
            judge(10, b"A: b\r\n\r\nx\r\r\n"),
            TopVerdict::AddedFinalNewline
        );
        // Headers only, with a blank line added by the server: not what RETR sends.
        assert_eq!(judge(6, b"A: b\r\n\r\n"), TopVerdict::Differs);
        assert_eq!(judge(5, b"A: b\n\r\n"), TopVerdict::Differs);
        // An empty stored message: RETR sends one CRLF too.
        assert_eq!(judge(0, b"\r\n"), TopVerdict::AddedFinalNewline);
        assert_eq!(judge(0, b""), TopVerdict::Whole);
        // Cut short (a server capping the line count), or longer than +2.
        assert_eq!(judge(100, b"A: b\r\n\r\nfirst\r\n"), TopVerdict::Differs);
        assert_eq!(judge(4, b"A: b\r\n\r\n"), TopVerdict::Differs);
        // +2 without a CRLF at the end is no added line break.
        assert_eq!(judge(6, b"A: b\r\nxy"), TopVerdict::Differs);
        // Only the tail is needed.
        assert_eq!(
            judge_top(1000, 1002, b"xy\r\n"),
            TopVerdict::AddedFinalNewline
        );
        assert_eq!(judge_top(1000, 1002, b"\n\r\n"), TopVerdict::Differs);
    }

    // ---- Unstuffer ----

    /// Reference stuffing, as a server does it: CRLF lines, `.` doubled at line starts,
    /// then the terminator.
    fn stuff(msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_start = true;
        for &b in msg {
            if at_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_start = b == b'\n';
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    /// Feeds `chunks` and returns (output, bytes consumed from the concatenated input).
    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Option<usize>) {
        let mut u = Unstuffer::new();
        let mut out = Vec::new();
        let mut offset = 0;
        for c in chunks {
            if let Some(n) = u.feed(c, |s| out.extend_from_slice(s)) {
                assert!(u.is_done());
                return (out, Some(offset + n));
            }
            offset += c.len();
        }
        (out, None)
    }

    /// Every one- and two-cut split of `wire` must give `expect` and stop right after the
    /// terminator, leaving `trailer` untouched.
    fn check_all_splits(wire: &[u8], expect: &[u8]) {
        let trailer = b"+OK next\r\n";
        let mut full = wire.to_vec();
        full.extend_from_slice(trailer);
        let end = wire.len();
        let (out, n) = run(&[&full]);
        assert_eq!(out, expect, "whole: {:?}", String::from_utf8_lossy(wire));
        assert_eq!(n, Some(end));
        for i in 0..=full.len() {
            let (out, n) = run(&[&full[..i], &full[i..]]);
            assert_eq!(
                out,
                expect,
                "split at {i} of {:?}",
                String::from_utf8_lossy(wire)
            );
            assert_eq!(n, Some(end), "split at {i}");
            if full.len() <= 64 {
                for j in i..=full.len() {
                    let (out, n) = run(&[&full[..i], &full[i..j], &full[j..]]);
                    assert_eq!(out, expect, "split at {i},{j}");
                    assert_eq!(n, Some(end));
                }
            }
        }
        let bytes: Vec<&[u8]> = full.chunks(1).collect();
        assert_eq!(run(&bytes), (expect.to_vec(), Some(end)));
    }

    #[test]
    fn unstuffs_tricky_lines_at_every_split_point() {
        let cases: &[&[u8]] = &[
            b"",
            b"\r\n",
            b".\r\n",
            b".x\r\n",
            b"..\r\n",
            b"...\r\n",
            b"a\r\n.\r\nb\r\n",
            b"a\r\n.\r\n",
            b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n.x\r\n..y\r\nend\r\n",
            b"x.\r\n. \r\n.\t\r\n",
            b"cr\rinside\r\n\r.\r\n.\r.\r\n",
            b"8bit \xe9\xe8\xff\x00\x80\r\n.\xff\r\n",
            "日本語の本文です。\r\n.日本\r\n".as_bytes(),
            // ISO-2022-JP: escape sequences, ESC is 0x1b.
            b"\x1b$B$3$s$K$A$O\x1b(B\r\n.\x1b$B$3\x1b(B\r\n",
            // Shift_JIS: trail bytes may be 0x5c or 0x2e-like values.
            b"\x83\x5c\x94\x5c\x8e\x9f\r\n.\x82\xa0\r\n",
        ];
        for msg in cases {
            let wire = stuff(msg);
            check_all_splits(&wire, msg);
        }
    }

    #[test]
    fn hand_written_wire_bytes() {
        // Checked independently of `stuff`, so a shared mistake cannot hide.
        check_all_splits(b".\r\n", b"");
        check_all_splits(b"..\r\n.\r\n", b".\r\n");
        check_all_splits(b"...\r\n.\r\n", b"..\r\n");
        check_all_splits(b"....x\r\n.\r\n", b"...x\r\n");
        check_all_splits(b"a\r\n..\r\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n");
        check_all_splits(b"a.\r\n.\r\n", b"a.\r\n");
        // Bare-LF server: LF line ends and a bare-LF terminator.
        check_all_splits(b"a\n..b\n.\n", b"a\n.b\n");
        check_all_splits(b"a\r\n.\n", b"a\r\n");
        // An unstuffed `.x` from a sloppy server is kept as sent.
        check_all_splits(b".x\r\n.\r\n", b".x\r\n");
        check_all_splits(b".\rx\r\n.\r\n", b".\rx\r\n");
        check_all_splits(b".\r\r\n.\r\n", b".\r\r\n");
    }

    #[test]
    fn unterminated_body_asks_for_more() {
        for wire in [
            &b""[..],
            b"abc",
            b"abc\r\n",
            b"abc\r\n.",
            b"abc\r\n.\r",
            b"..\r\n",
        ] {
            let (_, n) = run(&[wire]);
            assert_eq!(n, None, "{:?}", wire);
        }
        let mut u = Unstuffer::new();
        let mut out = Vec::new();
        assert_eq!(u.feed(b"ab\r\n.", |s| out.extend_from_slice(s)), None);
        // The held-back dot is not emitted until it is known not to end the body.
        assert_eq!(out, b"ab\r\n");
        assert_eq!(u.feed(b"\r", |s| out.extend_from_slice(s)), None);
        assert_eq!(out, b"ab\r\n");
        assert_eq!(u.feed(b"\nrest", |s| out.extend_from_slice(s)), Some(1));
        assert_eq!(out, b"ab\r\n");
        assert_eq!(
            u.feed(b"more", |_| panic!("no output after the end")),
            Some(0)
        );
    }

    #[test]
    fn long_line_streams_without_holding_it() {
        // A 3 MB line with dots: output arrives as slices of the input, never assembled.
        let mut msg = b"Subject: long\r\n\r\n".to_vec();
        msg.extend((0..3_000_000u32).map(|i| {
            if i % 1000 == 0 {
                b'.'
            } else {
                b'a' + (i % 26) as u8
            }
        }));
        msg.extend_from_slice(b"\r\n..after\r\n");
        let wire = stuff(&msg);
        for chunk in [1usize, 7, 4096, 65536, 1 << 20, wire.len()] {
            let chunks: Vec<&[u8]> = wire.chunks(chunk).collect();
            let mut u = Unstuffer::new();
            let mut out = Vec::with_capacity(msg.len());
            let mut largest_emit = 0;
            let mut done = None;
            for (k, c) in chunks.iter().enumerate() {
                if let Some(n) = u.feed(c, |s| {
                    largest_emit = largest_emit.max(s.len());
                    out.extend_from_slice(s)
                }) {
                    done = Some((k, n));
                }
            }
            assert_eq!(done, Some((chunks.len() - 1, chunks.last().unwrap().len())));
            assert!(out == msg, "chunk size {chunk}");
            assert!(
                largest_emit <= chunk.max(2),
                "emitted {largest_emit} > {chunk}"
            );
        }
        // Splits around the interesting places of the big input.
        let nl = wire.len() - b"\r\n..after\r\n.\r\n".len();
        for cut in (nl - 3..wire.len()).chain([1, 17, 18, 19, 1000, 1017, 1018]) {
            assert_eq!(run(&[&wire[..cut], &wire[cut..]]).0, msg, "cut {cut}");
        }
    }

    /// A recorded Dovecot RETR answer (status line removed), followed by a pipelined
    /// second answer that must be left for the next read.
    #[test]
    fn recorded_dovecot_exchange() {
        let wire: &[u8] = b"Return-Path: <bob@example.org>\r\n\
Delivered-To: alice@example.org\r\n\
Subject: =?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=\r\n\
\r\n\
..\r\n\
...hidden\r\n\
.\r\n\
+OK 12 octets\r\n\
hello\r\n\
.\r\n";
        let (out, n) = run(&[wire]);
        assert_eq!(
            out,
            b"Return-Path: <bob@example.org>\r\nDelivered-To: alice@example.org\r\n\
Subject: =?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=\r\n\r\n.\r\n..hidden\r\n"
        );
        let rest = &wire[n.unwrap()..];
        assert!(rest.starts_with(b"+OK 12 octets\r\n"));
        let (out2, n2) = run(&[&rest[b"+OK 12 octets\r\n".len()..]]);
        assert_eq!((out2, n2), (b"hello\r\n".to_vec(), Some(10)));
    }
}
