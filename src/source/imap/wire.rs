//! The IMAP wire, pure: bytes from the server in, frames out. A frame is one whole
//! response as the server sent it: a tagged or untagged line with every literal it
//! announced (`{N}`, `{N+}`, `literal8` `~{N}`) attached, or a `+` continuation request.
//! Every byte a session reads passes through one [`Framer`], so one set of bounds covers
//! the greeting, login, every command and every fetch: a line that never ends, a
//! response whose text outside literals grows without end, or a literal announced
//! larger than anything we could hold is an error at once instead of a growing buffer.
//! Status lines and their response codes are parsed here into data ([`Status`],
//! [`Code`], [`AppendUid`]); what a data response holds is read by `session`.

use std::ops::Range;

/// The longest line taken, before login and after. No response this client asks for
/// comes near it (a LIST line, a FETCH line without its literals).
pub const MAX_LINE: usize = 1 << 20;
/// The most text outside literals in one response (the lines a response spans when it
/// carries literals).
pub const MAX_RESPONSE_TEXT: usize = 4 << 20;
/// The largest literal taken; a server announcing more is refused at once, with the
/// size it announced. No mail server stores a message near it.
pub const MAX_LITERAL: u64 = 64 << 30;
/// The largest literal held in memory. A larger one (a large message's `BODY[]`) is
/// diverted: the frame keeps an empty literal in its place and the session writes the
/// bytes to a spool file as they come ([`Framer::take_diverted`]), so memory does not
/// follow a message's size.
pub const MAX_HELD_LITERAL: u64 = 16 << 20;
/// The most UIDs an `[APPENDUID]` range may stand for: more is no answer to any APPEND
/// we send.
const MAX_APPENDUID_UIDS: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundError {
    #[error("the server sent a line longer than {MAX_LINE} bytes")]
    LongLine,
    #[error(
        "the server sent a response with more than {MAX_RESPONSE_TEXT} bytes outside literals"
    )]
    LongResponse,
    #[error("the server announced a literal of {0} bytes, more than the {MAX_LITERAL} taken")]
    HugeLiteral(u64),
}

/// One response as it came off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The response's bytes, literals included, final CRLF included.
    pub raw: Vec<u8>,
    /// Where each literal's content lies in `raw`, in order.
    pub literals: Vec<Range<usize>>,
    /// Where the `~` of each `literal8` marker lies in `raw`.
    pub literal8: Vec<usize>,
    /// The literals over [`MAX_HELD_LITERAL`] (index in `literals`, announced length):
    /// empty in `raw`, their bytes went to the session's spool.
    pub diverted: Vec<(usize, u64)>,
}

/// What kind of response a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `+ ...`: the server waits for the rest of a command.
    Continuation,
    /// `* ...`.
    Untagged,
    /// The end of the command with this tag.
    Tagged(&'a str),
}

impl Frame {
    /// The first line without its line end.
    pub fn first_line(&self) -> &[u8] {
        let end = memchr::memchr(b'\n', &self.raw).unwrap_or(self.raw.len());
        let l = &self.raw[..end];
        l.strip_suffix(b"\r").unwrap_or(l)
    }

    pub fn kind(&self) -> Kind<'_> {
        match self.raw.first() {
            Some(b'+') => Kind::Continuation,
            Some(b'*') => Kind::Untagged,
            _ => {
                let l = self.first_line();
                let end = memchr::memchr(b' ', l).unwrap_or(l.len());
                Kind::Tagged(std::str::from_utf8(&l[..end]).unwrap_or(""))
            }
        }
    }

    pub fn literal(&self, i: usize) -> Option<&[u8]> {
        self.literals.get(i).map(|r| &self.raw[r.clone()])
    }

    /// The text of a continuation request (after `+ `).
    pub fn continuation_text(&self) -> &[u8] {
        let l = self.first_line();
        let l = l.strip_prefix(b"+").unwrap_or(l);
        l.strip_prefix(b" ").unwrap_or(l)
    }

    /// The frame with every `literal8` marker written as a plain literal, for a parser
    /// that knows only `{N}`: the content is the same bytes either way.
    pub fn plain_literals(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.literal8.is_empty() {
            return std::borrow::Cow::Borrowed(&self.raw);
        }
        let mut out = Vec::with_capacity(self.raw.len());
        let mut from = 0;
        for &t in &self.literal8 {
            out.extend_from_slice(&self.raw[from..t]);
            from = t + 1;
        }
        out.extend_from_slice(&self.raw[from..]);
        std::borrow::Cow::Owned(out)
    }

    /// The status of a tagged response or an untagged `OK`/`NO`/`BAD`/`BYE`/`PREAUTH`;
    /// None for data and continuations.
    pub fn status(&self) -> Option<Status> {
        let line = self.first_line();
        let rest = match self.kind() {
            Kind::Continuation => return None,
            Kind::Untagged => line.strip_prefix(b"* ")?,
            Kind::Tagged(t) => line.get(t.len() + 1..)?,
        };
        let rest = String::from_utf8_lossy(rest);
        let (word, text) = rest.split_once(' ').unwrap_or((&rest, ""));
        let word = match word.to_ascii_uppercase().as_str() {
            "OK" => StatusWord::Ok,
            "NO" => StatusWord::No,
            "BAD" => StatusWord::Bad,
            "BYE" => StatusWord::Bye,
            "PREAUTH" => StatusWord::PreAuth,
            _ => return None,
        };
        let text = text.trim().to_string();
        Some(Status {
            word,
            code: code_of(&text),
            text,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWord {
    Ok,
    No,
    Bad,
    Bye,
    PreAuth,
}

impl StatusWord {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusWord::Ok => "OK",
            StatusWord::No => "NO",
            StatusWord::Bad => "BAD",
            StatusWord::Bye => "BYE",
            StatusWord::PreAuth => "PREAUTH",
        }
    }
}

/// A status response: its word, the response code it carries, and its whole text (the
/// code included, as the server wrote it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub word: StatusWord,
    pub code: Option<Code>,
    pub text: String,
}

/// The response codes the client acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    AppendUid(AppendUid),
    Capability(Vec<String>),
    UidValidity(u32),
    UidNext(u32),
    HighestModSeq(u64),
    PermanentFlags(Vec<String>),
    /// Any other code, upper case, with its arguments.
    Other(String),
}

/// Where an APPEND put its messages (RFC 4315): the folder's UIDVALIDITY and one UID
/// per message, in order (a MULTIAPPEND sends a set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendUid {
    pub uidvalidity: u32,
    pub uids: Vec<u32>,
}

/// The `[...]` code at the start of a status text.
fn code_of(text: &str) -> Option<Code> {
    let inner = text.strip_prefix('[')?;
    let inner = &inner[..inner.find(']')?];
    let (name, args) = inner.split_once(' ').unwrap_or((inner, ""));
    let name = name.to_ascii_uppercase();
    Some(match name.as_str() {
        "APPENDUID" => match append_uid(args) {
            Some(a) => Code::AppendUid(a),
            None => Code::Other(inner.to_ascii_uppercase()),
        },
        "CAPABILITY" => Code::Capability(
            args.split_whitespace()
                .map(str::to_ascii_uppercase)
                .collect(),
        ),
        "UIDVALIDITY" => Code::UidValidity(args.trim().parse().ok()?),
        "UIDNEXT" => Code::UidNext(args.trim().parse().ok()?),
        "HIGHESTMODSEQ" => Code::HighestModSeq(args.trim().parse().ok()?),
        "PERMANENTFLAGS" => {
            let a = args.trim().strip_prefix('(')?.strip_suffix(')')?;
            Code::PermanentFlags(a.split_whitespace().map(str::to_string).collect())
        }
        _ => Code::Other(inner.to_ascii_uppercase()),
    })
}

/// `uidvalidity uid-set`; RFC 4315 allows a range in either order.
fn append_uid(args: &str) -> Option<AppendUid> {
    let (v, set) = args.trim().split_once(' ')?;
    let mut uids = Vec::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                let (lo, hi) = (a.min(b), a.max(b));
                if (hi - lo) as usize >= MAX_APPENDUID_UIDS - uids.len().min(MAX_APPENDUID_UIDS) {
                    return None;
                }
                uids.extend(lo..=hi);
            }
            None => uids.push(part.parse().ok()?),
        }
    }
    Some(AppendUid {
        uidvalidity: v.parse().ok()?,
        uids,
    })
}

/// Cuts the server's byte stream into [`Frame`]s. Pure: fed the same bytes split
/// anywhere, it gives the same frames and the same errors.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where the frame under construction starts in `buf`.
    start: usize,
    /// How far `buf` has been searched for a line end.
    scan: usize,
    /// Where the current line starts.
    line_start: usize,
    /// Where the literal being read ends, while one is.
    literal_end: Option<usize>,
    /// The frame's literals and literal8 markers, relative to `start`.
    literals: Vec<Range<usize>>,
    literal8: Vec<usize>,
    /// Bytes outside literals in the frame so far (completed lines).
    text: usize,
    /// Bytes of literals announced in the frame so far (held ones).
    literal_bytes: u64,
    /// Bytes of a diverted literal still to come.
    diverting: u64,
    diverted: Vec<(usize, u64)>,
}

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    /// The literal bytes the frame being read has announced so far: what it will take
    /// to read beyond its text.
    pub fn literal_bytes(&self) -> u64 {
        self.literal_bytes
    }

    /// Bytes received and not yet handed out as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            let s = self.start;
            self.buf.drain(..s);
            self.scan -= s;
            self.line_start -= s;
            self.literal_end = self.literal_end.map(|e| e - s);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, None when more bytes are needed. After an error the
    /// stream cannot be trusted: the session ends.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, BoundError> {
        loop {
            if self.diverting > 0 {
                return Ok(None);
            }
            if let Some(end) = self.literal_end {
                if self.buf.len() < end {
                    return Ok(None);
                }
                self.literal_end = None;
                self.scan = end;
                self.line_start = end;
            }
            let Some(p) = memchr::memchr(b'\n', &self.buf[self.scan..]) else {
                self.scan = self.buf.len();
                let partial = self.buf.len() - self.line_start;
                if partial > MAX_LINE {
                    return Err(BoundError::LongLine);
                }
                if self.text + partial > MAX_RESPONSE_TEXT {
                    return Err(BoundError::LongResponse);
                }
                return Ok(None);
            };
            let eol = self.scan + p + 1;
            let line_len = eol - self.line_start;
            if line_len > MAX_LINE {
                return Err(BoundError::LongLine);
            }
            self.text += line_len;
            if self.text > MAX_RESPONSE_TEXT {
                return Err(BoundError::LongResponse);
            }
            let line = &self.buf[self.line_start..eol];
            let continuation = self.line_start == self.start && line.first() == Some(&b'+');
            let marker = if continuation {
                None
            } else {
                literal_at_end(line)
            };
            match marker {
                Some(m) if m.len > MAX_LITERAL => return Err(BoundError::HugeLiteral(m.len)),
                Some(m) if m.len > MAX_HELD_LITERAL => {
                    let eol = self.empty_marker(eol);
                    if let Some(t) = m.tilde {
                        self.literal8.push(self.line_start + t - self.start);
                    }
                    self.literals.push(eol - self.start..eol - self.start);
                    self.diverted.push((self.literals.len() - 1, m.len));
                    self.diverting = m.len;
                    self.scan = eol;
                    self.line_start = eol;
                }
                Some(m) => {
                    if let Some(t) = m.tilde {
                        self.literal8.push(self.line_start + t - self.start);
                    }
                    self.literal_bytes += m.len;
                    let n = m.len as usize;
                    self.literals.push(eol - self.start..eol - self.start + n);
                    self.literal_end = Some(eol + n);
                    self.scan = eol;
                }
                None => return Ok(Some(self.take_frame(eol))),
            }
        }
    }

    /// Bytes of a diverted literal still to come.
    pub fn diverting(&self) -> u64 {
        self.diverting
    }

    /// The bytes of the diverted literal received so far and not yet taken: the caller
    /// writes them to its spool. The frame goes on once all of them were taken.
    pub fn take_diverted(&mut self) -> Vec<u8> {
        let k = (self.buf.len() - self.scan).min(self.diverting as usize);
        self.diverting -= k as u64;
        self.buf.drain(self.scan..self.scan + k).collect()
    }

    /// Rewrites the literal marker ending the line that ends at `eol` as `{0}`;
    /// returns where the line now ends.
    fn empty_marker(&mut self, eol: usize) -> usize {
        let line = &self.buf[self.line_start..eol];
        let close = self.line_start + line.iter().rposition(|&b| b == b'}').expect("a marker");
        let open = self.line_start + line.iter().rposition(|&b| b == b'{').expect("a marker");
        self.buf.splice(open + 1..close, *b"0");
        eol - (close - open - 1) + 1
    }

    fn take_frame(&mut self, end: usize) -> Frame {
        let raw = if self.start == 0 && end == self.buf.len() {
            std::mem::take(&mut self.buf)
        } else {
            self.buf[self.start..end].to_vec()
        };
        if self.buf.is_empty() {
            self.start = 0;
        } else {
            self.start = end;
        }
        self.scan = self.start;
        self.line_start = self.start;
        self.text = 0;
        self.literal_bytes = 0;
        Frame {
            raw,
            literals: std::mem::take(&mut self.literals),
            literal8: std::mem::take(&mut self.literal8),
            diverted: std::mem::take(&mut self.diverted),
        }
    }
}

struct Marker {
    len: u64,
    /// Where a literal8's `~` is in the line.
    tilde: Option<usize>,
}

/// The `{N}`, `{N+}` or `~{N}` marker ending `line` (CRLF or LF included); a number too
/// large for u64 counts as u64::MAX, so it is refused rather than missed.
fn literal_at_end(line: &[u8]) -> Option<Marker> {
    let l = line.strip_suffix(b"\n")?;
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let l = l.strip_suffix(b"}")?;
    let l = l.strip_suffix(b"+").unwrap_or(l);
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = &l[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = std::str::from_utf8(digits)
        .ok()?
        .parse()
        .unwrap_or(u64::MAX);
    let tilde = (open > 0 && l[open - 1] == b'~').then(|| open - 1);
    Some(Marker { len, tilde })
}

/// One session's tags: `A0001`, `A0002`, … Every command of a session, login included, takes
/// its tag here, so no two commands in flight can share one.
#[derive(Debug, Default)]
pub struct Tags(u64);

impl Tags {
    pub fn next_tag(&mut self) -> String {
        self.0 += 1;
        format!("A{:04}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` cut at every point (and byte by byte); every cut must give the same
    /// frames and end the same way.
    fn at_every_split(wire: &[u8]) -> (Vec<Frame>, Option<BoundError>) {
        let whole = run(&[wire]);
        for i in 0..=wire.len() {
            assert_eq!(run(&[&wire[..i], &wire[i..]]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "byte by byte");
        whole
    }

    fn run(chunks: &[&[u8]]) -> (Vec<Frame>, Option<BoundError>) {
        let mut f = Framer::new();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            loop {
                match f.next_frame() {
                    Ok(Some(fr)) => out.push(fr),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    #[test]
    fn a_literal_over_the_held_bound_is_diverted_whole() {
        let n = MAX_HELD_LITERAL as usize + 5;
        let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        for marker in ["{N}", "{N+}", "~{N}"] {
            let marker = marker.replace('N', &n.to_string());
            let mut wire = format!("* 1 FETCH (UID 7 BODY[] {marker}\r\n").into_bytes();
            wire.extend_from_slice(&body);
            wire.extend_from_slice(b")\r\nA1 OK done\r\n");
            for chunk in [1000, 65536, 3 << 20] {
                let mut f = Framer::new();
                let (mut got, mut frames) = (Vec::new(), Vec::new());
                for c in wire.chunks(chunk) {
                    f.push(c);
                    loop {
                        got.extend(f.take_diverted());
                        assert!(
                            f.pending() <= 2 * chunk + 64,
                            "the framer holds the literal"
                        );
                        match f.next_frame().unwrap() {
                            Some(fr) => frames.push(fr),
                            None => break,
                        }
                    }
                }
                assert!(got == body, "{marker} in chunks of {chunk}");
                assert_eq!(frames.len(), 2);
                let tilde = if marker.starts_with('~') { "~" } else { "" };
                let want = format!("* 1 FETCH (UID 7 BODY[] {tilde}{{0}}\r\n)\r\n");
                assert_eq!(frames[0].raw, want.as_bytes());
                assert_eq!(frames[0].diverted, vec![(0, n as u64)]);
                assert_eq!(frames[0].literal(0), Some(&b""[..]));
            }
        }
    }

    fn frames(wire: &[u8]) -> Vec<Frame> {
        let (f, e) = at_every_split(wire);
        assert_eq!(e, None);
        f
    }

    #[test]
    fn dovecot_list_with_modified_utf7_names() {
        let wire = b"* LIST (\\HasNoChildren \\Sent) \"/\" \"&U,BTFw-/&ZeVnLIqe-\"\r\n\
* LIST (\\HasNoChildren) \"/\" {7}\r\nIN\"BOX}\r\n\
A3 OK List completed (0.001 + 0.000 secs).\r\n";
        let f = frames(wire);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].kind(), Kind::Untagged);
        assert!(f[0].literals.is_empty());
        assert_eq!(f[1].literal(0), Some(&b"IN\"BOX}"[..]));
        assert_eq!(f[2].kind(), Kind::Tagged("A3"));
        let st = f[2].status().unwrap();
        assert_eq!(st.word, StatusWord::Ok);
        assert_eq!(st.code, None);
    }

    #[test]
    fn fetch_with_body_literals_and_literal8() {
        let body = b"Subject: x\r\n\r\n{5}\r\nnot a marker\r\n";
        let mut wire = format!(
            "* 1 FETCH (UID 9 RFC822.SIZE {0} BODY[] {{{0}}}\r\n",
            body.len()
        )
        .into_bytes();
        wire.extend_from_slice(body);
        wire.extend_from_slice(b" FLAGS (\\Seen))\r\n");
        wire.extend_from_slice(b"* 2 FETCH (UID 10 BODY[] ~{3}\r\na\0b)\r\n");
        wire.extend_from_slice(b"* 3 FETCH (UID 11 BODY[HEADER] {2+}\r\n\r\n)\r\n");
        wire.extend_from_slice(b"A7 OK Fetch completed.\r\n");
        let f = frames(&wire);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].literal(0), Some(&body[..]));
        assert!(f[0].raw.ends_with(b"FLAGS (\\Seen))\r\n"));
        assert_eq!(f[1].literal(0), Some(&b"a\0b"[..]));
        assert_eq!(f[1].literal8.len(), 1);
        assert_eq!(
            &*f[1].plain_literals(),
            &b"* 2 FETCH (UID 10 BODY[] {3}\r\na\0b)\r\n"[..]
        );
        assert_eq!(f[2].literal(0), Some(&b"\r\n"[..]));
        assert_eq!(f[3].kind(), Kind::Tagged("A7"));
    }

    #[test]
    fn cyrus_append_with_appenduid_and_multiappend_ranges() {
        let wire = b"+ go ahead\r\nA4 OK [APPENDUID 1700000000 42] Completed\r\n\
A5 OK [APPENDUID 7 3:5,9,12:11] Completed\r\n\
A6 NO [TRYCREATE] Mailbox does not exist\r\nA7 BAD Missing required argument\r\n";
        let f = frames(wire);
        assert_eq!(f.len(), 5);
        assert_eq!(f[0].kind(), Kind::Continuation);
        assert_eq!(f[0].continuation_text(), b"go ahead");
        assert_eq!(f[0].status(), None);
        let code = |i: usize| f[i].status().unwrap().code;
        assert_eq!(
            code(1),
            Some(Code::AppendUid(AppendUid {
                uidvalidity: 1_700_000_000,
                uids: vec![42]
            }))
        );
        assert_eq!(
            code(2),
            Some(Code::AppendUid(AppendUid {
                uidvalidity: 7,
                uids: vec![3, 4, 5, 9, 11, 12]
            }))
        );
        let no = f[3].status().unwrap();
        assert_eq!(no.word, StatusWord::No);
        assert_eq!(no.code, Some(Code::Other("TRYCREATE".into())));
        assert_eq!(no.text, "[TRYCREATE] Mailbox does not exist");
        assert_eq!(f[4].status().unwrap().word, StatusWord::Bad);
    }

    #[test]
    fn courier_greeting_select_codes_and_bye() {
        let wire =
            b"* OK [CAPABILITY IMAP4rev1 UIDPLUS CHILDREN NAMESPACE] Courier-IMAP ready.\r\n\
+ \r\n\
* FLAGS (\\Draft \\Answered \\Flagged \\Deleted \\Seen \\Recent)\r\n\
* OK [PERMANENTFLAGS (\\* \\Draft \\Seen)] Limited\r\n\
* 3 EXISTS\r\n* OK [UIDVALIDITY 1699999999] Ok\r\n* OK [UIDNEXT 4] Ok\r\n\
* OK [HIGHESTMODSEQ 12] Ok\r\n\
* BYE Courier-IMAP server shutting down\r\n";
        let f = frames(wire);
        assert_eq!(f.len(), 9);
        let caps = f[0].status().unwrap().code;
        assert!(matches!(caps, Some(Code::Capability(c)) if c.contains(&"UIDPLUS".to_string())));
        assert_eq!(f[1].kind(), Kind::Continuation);
        assert_eq!(f[1].continuation_text(), b"");
        assert_eq!(f[2].status(), None);
        assert_eq!(
            f[3].status().unwrap().code,
            Some(Code::PermanentFlags(vec![
                "\\*".into(),
                "\\Draft".into(),
                "\\Seen".into()
            ]))
        );
        assert_eq!(
            f[5].status().unwrap().code,
            Some(Code::UidValidity(1_699_999_999))
        );
        assert_eq!(f[6].status().unwrap().code, Some(Code::UidNext(4)));
        assert_eq!(f[7].status().unwrap().code, Some(Code::HighestModSeq(12)));
        assert_eq!(f[8].status().unwrap().word, StatusWord::Bye);
    }

    #[test]
    fn appenduid_that_is_not_an_answer() {
        let st = |t: &str| {
            let mut f = Framer::new();
            f.push(t.as_bytes());
            f.next_frame().unwrap().unwrap().status().unwrap().code
        };
        assert_eq!(
            st("A1 OK [APPENDUID 1 x] no\r\n"),
            Some(Code::Other("APPENDUID 1 X".into()))
        );
        assert!(matches!(
            st("A1 OK [APPENDUID 1 1:4000000000] no\r\n"),
            Some(Code::Other(_))
        ));
        assert_eq!(st("A1 OK Append completed.\r\n"), None);
    }

    #[test]
    fn an_endless_line_a_huge_literal_and_endless_text_are_refused() {
        let mut f = Framer::new();
        let chunk = vec![b'x'; 64 * 1024];
        let r = (0..100).try_for_each(|_| {
            f.push(&chunk);
            f.next_frame().map(|_| ())
        });
        assert_eq!(r, Err(BoundError::LongLine));
        let (got, e) = at_every_split(b"* 1 OK\r\n* 1 FETCH (BODY[] {107374182400}\r\nabc");
        assert_eq!(got.len(), 1);
        assert_eq!(e, Some(BoundError::HugeLiteral(107_374_182_400)));
        let (_, e) = at_every_split(b"* 1 FETCH (BODY[] ~{99999999999999999999999}\r\n");
        assert_eq!(e, Some(BoundError::HugeLiteral(u64::MAX)));
        // Text between literals adds up over one response, not across responses.
        let mut f = Framer::new();
        let line = format!("{}{{1}}\r\nx", "a".repeat(1000));
        let r = (0..10_000).try_for_each(|_| {
            f.push(line.as_bytes());
            f.next_frame().map(|_| ())
        });
        assert_eq!(r, Err(BoundError::LongResponse));
        let mut f = Framer::new();
        let line = format!("* {} OK\r\n", "a".repeat(1000));
        for _ in 0..10_000 {
            f.push(line.as_bytes());
            assert!(f.next_frame().unwrap().is_some());
        }
    }

    #[test]
    fn a_literal_content_never_counts_as_text() {
        let mut wire = b"* 1 FETCH (BODY[] {2000000}\r\n".to_vec();
        wire.extend(vec![b'a'; 2_000_000]);
        wire.extend(b")\r\n");
        let mut f = Framer::new();
        f.push(&wire);
        let fr = f.next_frame().unwrap().unwrap();
        assert_eq!(fr.literal(0).map(<[u8]>::len), Some(2_000_000));
        assert_eq!(f.pending(), 0);
    }

    /// A fuzz target's property without a fuzzer (no `fuzz/` on this branch): for
    /// pseudo-random byte soups built from the wire's own tokens, every split gives the
    /// same frames, the frames are the input's prefix, byte for byte, and each literal
    /// range lies inside its frame.
    #[test]
    fn arbitrary_bytes_frame_the_same_at_every_split() {
        let tokens: [&[u8]; 12] = [
            b"* ", b"A1 OK ", b"+ ", b"{3}", b"~{2}", b"{0+}", b"\r\n", b"\n", b"x", b"}", b"{",
            b"\0",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let (mut with_literal, mut with_literal8, mut continuations) = (0, 0, 0);
        for _ in 0..300 {
            let mut wire = Vec::new();
            for _ in 0..24 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                wire.extend_from_slice(tokens[(seed % tokens.len() as u64) as usize]);
            }
            let (frames, err) = at_every_split(&wire);
            assert_eq!(err, None, "{wire:?}");
            let joined: Vec<u8> = frames.iter().flat_map(|f| f.raw.clone()).collect();
            assert!(wire.starts_with(&joined), "{wire:?}");
            for f in &frames {
                assert!(f.raw.ends_with(b"\n"));
                assert!(f.literals.iter().all(|r| r.end <= f.raw.len()));
                assert!(f.literal8.iter().all(|&t| f.raw[t] == b'~'));
                let _ = (f.status(), f.plain_literals());
                with_literal += usize::from(!f.literals.is_empty());
                with_literal8 += usize::from(!f.literal8.is_empty());
                continuations += usize::from(f.kind() == Kind::Continuation);
            }
        }
        // The soups reached the cases they are for.
        assert!(with_literal > 50 && with_literal8 > 10 && continuations > 10);
    }

    #[test]
    fn tags_are_unique_per_session() {
        let mut t = Tags::default();
        assert_eq!(
            (t.next_tag(), t.next_tag()),
            ("A0001".into(), "A0002".into())
        );
    }
}
