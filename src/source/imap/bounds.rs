//! Bounds on what an IMAP server may make us read, applied to the byte stream under
//! every reader of a logged-in session (the IMAP crate's parser and our raw readers), so
//! one check covers them all. A line that never ends, a response whose text outside
//! literals grows without end, or a literal announced larger than anything we could
//! hold ends the session with an error instead of growing a buffer (and re-parsing it)
//! until memory or the timeout runs out.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest line taken, before login and after. No response this client asks for
/// comes near it (a LIST line, a FETCH line without its literals).
pub const MAX_LINE: usize = 1 << 20;
/// The most text outside literals in one response (the lines a response spans when it
/// carries literals).
pub const MAX_RESPONSE_TEXT: u64 = 4 << 20;
/// The largest literal taken: the ceiling the IMAP crate's own buffer has, named here
/// so a server announcing more is refused at once, with the size it announced.
pub const MAX_LITERAL: u64 = 512 << 20;

/// `{` + 20 digits (u64::MAX) + `+}` + CR fit: enough of a line's end to see a literal
/// marker, or that its number is too long for one.
const TAIL: usize = 32;

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

/// Follows the server's byte stream line by line, skipping literals, and says when it
/// breaks a bound. Pure: fed chunks split anywhere, it reaches the same verdict.
#[derive(Debug, Clone, Default)]
pub struct ResponseScan {
    line: usize,
    text: u64,
    literal_left: u64,
    tail: Vec<u8>,
}

impl ResponseScan {
    pub fn new() -> ResponseScan {
        ResponseScan::default()
    }

    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), BoundError> {
        while !input.is_empty() {
            if self.literal_left > 0 {
                let k = self.literal_left.min(input.len() as u64);
                self.literal_left -= k;
                input = &input[k as usize..];
                continue;
            }
            match memchr::memchr(b'\n', input) {
                Some(p) => {
                    self.text_bytes(&input[..p])?;
                    self.end_line()?;
                    input = &input[p + 1..];
                }
                None => {
                    self.text_bytes(input)?;
                    input = &[];
                }
            }
        }
        Ok(())
    }

    fn text_bytes(&mut self, b: &[u8]) -> Result<(), BoundError> {
        self.line += b.len();
        self.text += b.len() as u64;
        if self.line > MAX_LINE {
            return Err(BoundError::LongLine);
        }
        if self.text > MAX_RESPONSE_TEXT {
            return Err(BoundError::LongResponse);
        }
        let keep = b.len().min(TAIL);
        let drop = (self.tail.len() + keep).saturating_sub(TAIL);
        self.tail.drain(..drop);
        self.tail.extend_from_slice(&b[b.len() - keep..]);
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), BoundError> {
        let t = self.tail.strip_suffix(b"\r").unwrap_or(&self.tail);
        let announced = literal_at_end(t);
        self.line = 0;
        self.tail.clear();
        match announced {
            Some(n) if n > MAX_LITERAL => Err(BoundError::HugeLiteral(n)),
            Some(n) => {
                self.literal_left = n;
                Ok(())
            }
            // A line without a literal ends the response.
            None => {
                self.text = 0;
                Ok(())
            }
        }
    }
}

/// The size of a `{N}` or `{N+}` literal marker ending `line`; a number too large for
/// u64 counts as u64::MAX, so it is refused rather than missed.
fn literal_at_end(line: &[u8]) -> Option<u64> {
    let l = line.strip_suffix(b"}")?;
    let l = l.strip_suffix(b"+").unwrap_or(l);
    let digits = match l.iter().rposition(|&b| b == b'{') {
        Some(open) => &l[open + 1..],
        // More digits than the kept tail holds: a number past u64 whatever came first.
        None if l.len() > 20 && l.iter().all(u8::is_ascii_digit) => return Some(u64::MAX),
        None => return None,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        std::str::from_utf8(digits)
            .ok()?
            .parse()
            .unwrap_or(u64::MAX),
    )
}

/// A stream whose reads are checked by a [`ResponseScan`]; a read that breaks a bound
/// fails with `InvalidData` naming the bound.
#[derive(Debug)]
pub struct Bounded<S> {
    inner: S,
    scan: ResponseScan,
    trace: Option<crate::log::WireTrace>,
}

impl<S> Bounded<S> {
    /// `endpoint` names the connection in the `-vv` trace.
    pub fn new(inner: S, endpoint: &str) -> Bounded<S> {
        Bounded {
            inner,
            scan: ResponseScan::new(),
            trace: crate::log::WireTrace::new(crate::log::Protocol::Imap, endpoint),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(t) = &mut this.trace {
                    t.received(&buf.filled()[before..]);
                }
                let r = this.scan.feed(&buf.filled()[before..]);
                Poll::Ready(r.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let (Some(t), Poll::Ready(Ok(n))) = (&mut this.trace, &r) {
            t.sent(&buf[..*n]);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` cut at every point; every cut must give `want`.
    fn at_every_split(wire: &[u8], want: Result<(), BoundError>) {
        for i in 0..=wire.len() {
            let mut s = ResponseScan::new();
            let r = s.feed(&wire[..i]).and_then(|()| s.feed(&wire[i..]));
            assert_eq!(r, want, "split at {i}");
        }
    }

    #[test]
    fn literals_are_skipped_and_lines_end_responses() {
        at_every_split(
            b"* 1 FETCH (UID 1 BODY[] {5}\r\nab\n{}) FLAGS ()\r\n* OK {3+}\r\nxyz\r\n",
            Ok(()),
        );
        // A literal's content never counts as line text.
        let mut wire = b"* 1 FETCH (BODY[] {2000000}\r\n".to_vec();
        wire.extend(vec![b'a'; 2_000_000]);
        wire.extend(b")\r\n");
        let mut s = ResponseScan::new();
        assert_eq!(s.feed(&wire), Ok(()));
    }

    #[test]
    fn an_endless_line_and_a_huge_literal_are_refused() {
        let mut s = ResponseScan::new();
        let chunk = vec![b'x'; 64 * 1024];
        let r = (0..100).try_for_each(|_| s.feed(&chunk));
        assert_eq!(r, Err(BoundError::LongLine));
        at_every_split(
            b"* 1 FETCH (BODY[] {107374182400}\r\n",
            Err(BoundError::HugeLiteral(107_374_182_400)),
        );
        at_every_split(
            b"* 1 FETCH (BODY[] {99999999999999999999999}\r\n",
            Err(BoundError::HugeLiteral(u64::MAX)),
        );
    }

    #[test]
    fn text_between_literals_is_bounded_per_response() {
        let mut s = ResponseScan::new();
        let line = format!("{}{{1}}\r\nx", "a".repeat(1000));
        let r = (0..10_000).try_for_each(|_| s.feed(line.as_bytes()));
        assert_eq!(r, Err(BoundError::LongResponse));
        // The same text spread over many responses is fine.
        let mut s = ResponseScan::new();
        let line = format!("* {} OK\r\n", "a".repeat(1000));
        assert_eq!(
            (0..10_000).try_for_each(|_| s.feed(line.as_bytes())),
            Ok(())
        );
    }
}
