//! How much mailark says on stderr beyond its report: set once from `-v` (events: a
//! folder begun or done, a reconnect) and `-vv` (a protocol trace). Every such line goes
//! through [`emit`], which escapes control characters and keeps a progress bar intact.
//!
//! The trace ([`WireTrace`]) shows one line per command or response with the direction
//! marked, and never shows what must stay private: the arguments of LOGIN, AUTHENTICATE,
//! PASS, APOP and AUTH, SASL exchanges, and literals and message bodies (shown as
//! `{N bytes}`). It works on what crosses the wire, so it cannot miss a command a
//! library sends on our behalf.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use indicatif::ProgressBar;

use crate::text::printable;

static LEVEL: AtomicU8 = AtomicU8::new(0);
/// When the level was set: trace lines show the time since, so a stall or a round trip
/// waited for is visible in the trace itself.
static STARTED: OnceLock<Instant> = OnceLock::new();
static CONNECTIONS: AtomicU32 = AtomicU32::new(0);
/// The bar on screen, if any: lines are printed around it, not through it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Sets the verbosity: the count of `-v` flags. Called once, by the CLI.
pub fn set_level(v: u8) {
    STARTED.get_or_init(Instant::now);
    LEVEL.store(v, Ordering::Relaxed);
}

/// `-v` or more: per-folder and reconnect events.
pub fn events() -> bool {
    LEVEL.load(Ordering::Relaxed) >= 1
}

/// `-vv` or more: the protocol trace.
pub fn tracing() -> bool {
    LEVEL.load(Ordering::Relaxed) >= 2
}

/// Prints one line on stderr, escaped, above the progress bar if one is shown.
pub fn emit(line: &str) {
    let line = format!("mailark: {}", printable(line));
    let bar = BAR.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(b) => b.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

pub(crate) fn show_bar(bar: Option<ProgressBar>) {
    if let Ok(mut b) = BAR.lock() {
        *b = bar;
    }
}

/// An event line at `-v`: `event!("{folder}: {n} messages")`.
macro_rules! event {
    ($($arg:tt)*) => {
        if $crate::log::events() {
            $crate::log::emit(&format!($($arg)*))
        }
    };
}
pub(crate) use event;

/// Longest part of one line shown in the trace.
const SHOWN: usize = 300;
/// Enough of a line's end to see an IMAP literal marker `{N}` or `{N+}`.
const TAIL: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Imap,
    Pop3,
}

/// The trace of one connection. Created only at `-vv` ([`WireTrace::new`] gives `None`
/// otherwise), so without it nothing is inspected.
#[derive(Debug)]
pub struct WireTrace {
    label: String,
    proto: Protocol,
    sent: Lines,
    received: Lines,
    /// Between an AUTHENTICATE / AUTH command and its final answer: every client line and
    /// every server challenge is a SASL blob.
    in_auth: bool,
}

impl WireTrace {
    pub fn new(proto: Protocol, endpoint: &str) -> Option<WireTrace> {
        if !tracing() {
            return None;
        }
        let n = CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1;
        let name = match proto {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
        };
        Some(WireTrace {
            label: format!("{name}#{n} {endpoint}"),
            proto,
            sent: Lines::default(),
            received: Lines::default(),
            in_auth: false,
        })
    }

    /// Bytes written to the server, in any pieces.
    pub fn sent(&mut self, bytes: &[u8]) {
        let imap = self.proto == Protocol::Imap;
        for line in self.sent.feed(bytes, imap) {
            let shown = self.redact_sent(&line);
            emit(&format!("{} {} C: {shown}", since_start(), self.label));
        }
    }

    /// Bytes read from the server, in any pieces. For POP3 only status lines come here;
    /// a multi-line body is reported by [`WireTrace::received_body`].
    pub fn received(&mut self, bytes: &[u8]) {
        let imap = self.proto == Protocol::Imap;
        for line in self.received.feed(bytes, imap) {
            let shown = self.redact_received(&line);
            emit(&format!("{} {} S: {shown}", since_start(), self.label));
        }
    }

    /// A POP3 multi-line answer of `n` bytes (a message or a listing), not shown.
    pub fn received_body(&mut self, n: u64) {
        emit(&format!(
            "{} {} S: {{{n} bytes}}",
            since_start(),
            self.label
        ));
    }

    fn redact_sent(&mut self, line: &Shown) -> String {
        if self.in_auth {
            return "***".into();
        }
        let text = line.text();
        let mut words = text.splitn(3, ' ');
        let (first, second) = (words.next().unwrap_or(""), words.next());
        let (verb, args, prefix) = match self.proto {
            // tag VERB args
            Protocol::Imap => (second.unwrap_or(""), words.next(), format!("{first} ")),
            // VERB args
            Protocol::Pop3 => (first, text.split_once(' ').map(|(_, a)| a), String::new()),
        };
        let upper = verb.to_ascii_uppercase();
        match upper.as_str() {
            "LOGIN" | "PASS" | "APOP" => format!("{prefix}{verb} ***"),
            "AUTHENTICATE" | "AUTH" => {
                self.in_auth = true;
                let mut a = args.unwrap_or("").splitn(2, ' ');
                let mech = a.next().unwrap_or("");
                match a.next() {
                    Some(_) => format!("{prefix}{verb} {mech} ***"),
                    None => format!("{prefix}{verb} {mech}"),
                }
            }
            _ => text,
        }
    }

    fn redact_received(&mut self, line: &Shown) -> String {
        let text = line.text();
        if self.in_auth {
            if text.starts_with('+') && !text.starts_with("+OK") {
                return "+ ***".into();
            }
            // The final answer (a tagged IMAP status, POP3 +OK / -ERR) ends the exchange.
            if !text.starts_with('*') {
                self.in_auth = false;
            }
        }
        text
    }
}

/// Seconds since the level was set, to the millisecond: `12.345s`.
fn since_start() -> String {
    let t = STARTED.get_or_init(Instant::now).elapsed();
    format!("{}.{:03}s", t.as_secs(), t.subsec_millis())
}

/// A line as shown: its first [`SHOWN`] bytes with literals replaced, and how many more
/// there were.
#[derive(Debug, Default)]
struct Shown {
    bytes: Vec<u8>,
    more: u64,
}

impl Shown {
    fn push(&mut self, b: &[u8]) {
        let room = SHOWN.saturating_sub(self.bytes.len()).min(b.len());
        self.bytes.extend_from_slice(&b[..room]);
        self.more += (b.len() - room) as u64;
    }

    fn text(&self) -> String {
        let s = String::from_utf8_lossy(&self.bytes);
        match self.more {
            0 => s.into_owned(),
            n => format!("{s}… (+{n} bytes)"),
        }
    }
}

/// Cuts one direction's byte stream into lines. For IMAP a line ending in a literal
/// marker goes on after the literal (one command or response, one line), and the
/// literal's bytes are skipped, never kept.
#[derive(Debug, Default)]
struct Lines {
    line: Shown,
    /// The last bytes of the current physical line, to see a literal marker.
    tail: Vec<u8>,
    literal_left: u64,
}

impl Lines {
    fn feed(&mut self, mut input: &[u8], imap: bool) -> Vec<Shown> {
        let mut done = Vec::new();
        while !input.is_empty() {
            if self.literal_left > 0 {
                let k = self.literal_left.min(input.len() as u64);
                self.literal_left -= k;
                input = &input[k as usize..];
                continue;
            }
            let Some(p) = input.iter().position(|&c| c == b'\n') else {
                self.take(input);
                break;
            };
            self.take(&input[..p]);
            input = &input[p + 1..];
            if self.line.bytes.last() == Some(&b'\r') && self.line.more == 0 {
                self.line.bytes.pop();
            }
            let literal = if imap {
                literal_at_end(&self.tail)
            } else {
                None
            };
            self.tail.clear();
            match literal {
                Some(n) => {
                    if self.line.more == 0 {
                        if let Some(open) = self.line.bytes.iter().rposition(|&c| c == b'{') {
                            self.line.bytes.truncate(open);
                        }
                        self.line
                            .bytes
                            .extend_from_slice(format!("{{{n} bytes}}").as_bytes());
                    }
                    self.literal_left = n;
                }
                None => done.push(std::mem::take(&mut self.line)),
            }
        }
        done
    }

    fn take(&mut self, b: &[u8]) {
        self.line.push(b);
        self.tail
            .extend_from_slice(&b[b.len().saturating_sub(TAIL)..]);
        let extra = self.tail.len().saturating_sub(TAIL);
        self.tail.drain(..extra);
    }
}

/// `{N}` or `{N+}` (optionally followed by CR) at the end of `l`.
fn literal_at_end(l: &[u8]) -> Option<u64> {
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let l = l.strip_suffix(b"}")?;
    let l = l.strip_suffix(b"+").unwrap_or(l);
    let open = l.iter().rposition(|&c| c == b'{')?;
    let digits = &l[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(proto: Protocol) -> WireTrace {
        WireTrace {
            label: "t".into(),
            proto,
            sent: Lines::default(),
            received: Lines::default(),
            in_auth: false,
        }
    }

    fn lines(l: &mut Lines, wire: &[u8]) -> Vec<String> {
        // Fed one byte at a time: the result must not depend on how reads split.
        wire.iter()
            .flat_map(|b| l.feed(std::slice::from_ref(b), true))
            .map(|s| s.text())
            .collect()
    }

    #[test]
    fn literals_become_sizes_and_lines_go_on_after_them() {
        let mut l = Lines::default();
        let got = lines(
            &mut l,
            b"* 1 FETCH (UID 7 BODY[] {11}\r\nsecret body)\r\na1 OK done\r\n",
        );
        assert_eq!(got, ["* 1 FETCH (UID 7 BODY[] {11 bytes})", "a1 OK done"]);
    }

    #[test]
    fn login_and_sasl_are_hidden() {
        let mut t = trace(Protocol::Imap);
        let login = Shown {
            bytes: b"a1 LOGIN alice {8}".to_vec(),
            more: 0,
        };
        assert_eq!(t.redact_sent(&login), "a1 LOGIN ***");
        let auth = Shown {
            bytes: b"a2 AUTHENTICATE PLAIN".to_vec(),
            more: 0,
        };
        assert_eq!(t.redact_sent(&auth), "a2 AUTHENTICATE PLAIN");
        let plus = Shown {
            bytes: b"+ ".to_vec(),
            more: 0,
        };
        assert_eq!(t.redact_received(&plus), "+ ***");
        let blob = Shown {
            bytes: b"AGFsaWNlAHNlY3JldA==".to_vec(),
            more: 0,
        };
        assert_eq!(t.redact_sent(&blob), "***");
        let ok = Shown {
            bytes: b"a2 OK Logged in".to_vec(),
            more: 0,
        };
        assert_eq!(t.redact_received(&ok), "a2 OK Logged in");
        let list = Shown {
            bytes: b"a3 LIST \"\" *".to_vec(),
            more: 0,
        };
        assert_eq!(t.redact_sent(&list), "a3 LIST \"\" *");
    }

    #[test]
    fn pop3_secrets_are_hidden() {
        let mut t = trace(Protocol::Pop3);
        let mut l = Lines::default();
        let sent: Vec<String> = l
            .feed(
                b"USER alice\r\nPASS s3cr3t\r\nAPOP alice 0123abcd\r\n",
                false,
            )
            .iter()
            .map(|s| t.redact_sent(s))
            .collect();
        assert_eq!(sent, ["USER alice", "PASS ***", "APOP ***"]);
    }
}
