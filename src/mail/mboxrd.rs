//! mboxrd quoting: a line (at offset 0 or after LF) matching `>*From ` gets one more `>`
//! when written and loses one when read. Unlike mboxo this is reversible for every
//! message, which is why the archive's mbox layout uses it.

use std::io::{self, Read, Write};

/// True when `data[i..]` is at a line start and matches `>*From `.
fn needs_quote(data: &[u8], i: usize) -> bool {
    let mut j = i;
    while j < data.len() && data[j] == b'>' {
        j += 1;
    }
    data[j..].starts_with(b"From ")
}

/// Appends `msg` to `out` with mboxrd quoting.
pub fn quote_into(msg: &[u8], out: &mut Vec<u8>) {
    let mut line_start = true;
    for (i, &b) in msg.iter().enumerate() {
        if line_start && needs_quote(msg, i) {
            out.push(b'>');
        }
        out.push(b);
        line_start = b == b'\n';
    }
}

/// Removes one level of mboxrd quoting.
pub fn unquote(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut line_start = true;
    let mut i = 0;
    while i < data.len() {
        if line_start && data[i] == b'>' && needs_quote(data, i) {
            i += 1; // drop one '>'
        }
        let b = data[i];
        out.push(b);
        line_start = b == b'\n';
        i += 1;
    }
    out
}

/// Removes mboxo quoting: only `>From ` (exactly one `>`) loses its `>`.
pub fn unquote_mboxo(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut line_start = true;
    let mut i = 0;
    while i < data.len() {
        if line_start && data[i..].starts_with(b">From ") {
            i += 1;
        }
        let b = data[i];
        out.push(b);
        line_start = b == b'\n';
        i += 1;
    }
    out
}

/// The start of a line that may need a `>` added or removed: a run of `>` (counted, so
/// a line of a billion `>` costs no memory) and how much of `From ` followed it.
#[derive(Debug, Clone, Copy)]
enum LineStart {
    /// Not at a line start, or the line start was decided.
    Decided {
        line_start: bool,
    },
    Open {
        gts: u64,
        from: usize,
    },
}

const FROM: &[u8; 5] = b"From ";

fn write_gts(w: &mut impl Write, mut n: u64) -> io::Result<()> {
    const GTS: [u8; 4096] = [b'>'; 4096];
    while n > 0 {
        let k = n.min(GTS.len() as u64) as usize;
        w.write_all(&GTS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// mboxrd quoting as a stream: [`quote_into`] for a message fed in pieces of any size,
/// written to `w` as it comes, so memory does not follow the message's size.
#[derive(Debug)]
pub struct Quoter {
    state: LineStart,
    /// The last byte of the message fed so far.
    pub last: Option<u8>,
}

impl Default for Quoter {
    fn default() -> Self {
        Quoter {
            state: LineStart::Decided { line_start: true },
            last: None,
        }
    }
}

impl Quoter {
    pub fn feed(&mut self, mut data: &[u8], w: &mut impl Write) -> io::Result<()> {
        if let Some(&b) = data.last() {
            self.last = Some(b);
        }
        while let Some(&b) = data.first() {
            match self.state {
                LineStart::Decided { line_start: true } if b == b'>' || b == b'F' => {
                    self.state = LineStart::Open { gts: 0, from: 0 };
                }
                LineStart::Decided { .. } => {
                    let end = memchr::memchr(b'\n', data).map_or(data.len(), |i| i + 1);
                    w.write_all(&data[..end])?;
                    self.state = LineStart::Decided {
                        line_start: data[end - 1] == b'\n',
                    };
                    data = &data[end..];
                }
                LineStart::Open { gts, from } => {
                    if from == 0 && b == b'>' {
                        self.state = LineStart::Open { gts: gts + 1, from };
                    } else if b == FROM[from] {
                        if from + 1 == FROM.len() {
                            write_gts(w, gts + 1)?;
                            w.write_all(FROM)?;
                            self.state = LineStart::Decided { line_start: false };
                        } else {
                            self.state = LineStart::Open {
                                gts,
                                from: from + 1,
                            };
                        }
                    } else {
                        // Not a From line: what was held goes out as it was, and this
                        // byte is no longer at a line start.
                        write_gts(w, gts)?;
                        w.write_all(&FROM[..from])?;
                        self.state = LineStart::Decided { line_start: false };
                        continue;
                    }
                    data = &data[1..];
                }
            }
        }
        Ok(())
    }

    /// Writes what is held at the end of the message.
    pub fn finish(&mut self, w: &mut impl Write) -> io::Result<()> {
        if let LineStart::Open { gts, from } = self.state {
            write_gts(w, gts)?;
            w.write_all(&FROM[..from])?;
        }
        self.state = LineStart::Decided { line_start: true };
        Ok(())
    }
}

/// [`unquote`] as a reader over the quoted bytes `inner`: memory is one buffer whatever
/// the message's size.
pub struct Unquote<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    state: LineStart,
    /// Output decided but not yet handed out: `>` bytes, then a piece of `From `.
    out_gts: u64,
    out_from: &'static [u8],
}

impl<R: Read> Unquote<R> {
    pub fn new(inner: R) -> Unquote<R> {
        Unquote {
            inner,
            buf: vec![0; 64 << 10],
            pos: 0,
            len: 0,
            eof: false,
            state: LineStart::Decided { line_start: true },
            out_gts: 0,
            out_from: b"",
        }
    }

    /// One step on the next input byte `b`, at a line start being decided.
    fn open_step(&mut self, b: u8, gts: u64, from: usize) {
        if from == 0 && b == b'>' {
            self.state = LineStart::Open { gts: gts + 1, from };
            self.pos += 1;
        } else if b == FROM[from] {
            self.pos += 1;
            if from + 1 == FROM.len() {
                // A quoted From line: one `>` less.
                self.out_gts = gts - 1;
                self.out_from = FROM;
                self.state = LineStart::Decided { line_start: false };
            } else {
                self.state = LineStart::Open {
                    gts,
                    from: from + 1,
                };
            }
        } else {
            self.out_gts = gts;
            self.out_from = &FROM[..from];
            self.state = LineStart::Decided { line_start: false };
        }
    }
}

impl<R: Read> Read for Unquote<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            if self.out_gts > 0 {
                let k = self.out_gts.min((out.len() - n) as u64) as usize;
                out[n..n + k].fill(b'>');
                self.out_gts -= k as u64;
                n += k;
                continue;
            }
            if !self.out_from.is_empty() {
                let k = self.out_from.len().min(out.len() - n);
                out[n..n + k].copy_from_slice(&self.out_from[..k]);
                self.out_from = &self.out_from[k..];
                n += k;
                continue;
            }
            if self.pos == self.len {
                if n > 0 || self.eof {
                    break;
                }
                self.len = self.inner.read(&mut self.buf)?;
                self.pos = 0;
                if self.len == 0 {
                    self.eof = true;
                    if let LineStart::Open { gts, from } = self.state {
                        self.out_gts = gts;
                        self.out_from = &FROM[..from];
                        self.state = LineStart::Decided { line_start: false };
                    }
                }
                continue;
            }
            let b = self.buf[self.pos];
            match self.state {
                LineStart::Decided { line_start: true } if b == b'>' => {
                    self.state = LineStart::Open { gts: 0, from: 0 };
                }
                LineStart::Decided { .. } => {
                    let avail = &self.buf[self.pos..self.len];
                    let room = avail.len().min(out.len() - n);
                    let k = memchr::memchr(b'\n', &avail[..room]).map_or(room, |i| i + 1);
                    out[n..n + k].copy_from_slice(&avail[..k]);
                    self.state = LineStart::Decided {
                        line_start: avail[k - 1] == b'\n',
                    };
                    self.pos += k;
                    n += k;
                }
                LineStart::Open { gts, from } => self.open_step(b, gts, from),
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = b"From x\n>From y\n>>From z\nFrom\nA From b\n\nFrom ";
        let mut q = Vec::new();
        quote_into(m, &mut q);
        assert_eq!(q, b">From x\n>>From y\n>>>From z\nFrom\nA From b\n\n>From ");
        assert_eq!(unquote(&q), m);
        assert_eq!(unquote_mboxo(b">From a\n>>From b\n"), b"From a\n>>From b\n");
    }

    /// Hands out at most `.1` bytes per read.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let k = self.1.min(out.len()).min(self.0.len());
            out[..k].copy_from_slice(&self.0[..k]);
            self.0 = &self.0[k..];
            Ok(k)
        }
    }

    /// Pieces of every size, and lines made of what the quoting looks at.
    fn samples() -> Vec<Vec<u8>> {
        let parts: [&[u8]; 8] = [b"From ", b">", b">>", b"\n", b"x", b"Fro", b"F", b"\r\n"];
        let mut out = vec![b"From x\n>From y\n>>From z\nFrom\nA From b\n\nFrom ".to_vec()];
        let mut seed = 7u64;
        for _ in 0..300 {
            let mut m = Vec::new();
            for _ in 0..(seed % 40) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                m.extend_from_slice(parts[(seed >> 33) as usize % parts.len()]);
            }
            out.push(m);
        }
        out
    }

    #[test]
    fn streaming_quote_and_unquote_match_the_whole_message_forms() {
        for m in samples() {
            let mut whole = Vec::new();
            quote_into(&m, &mut whole);
            for piece in [1, 2, 3, 7, 64] {
                let mut q = Quoter::default();
                let mut streamed = Vec::new();
                for c in m.chunks(piece) {
                    q.feed(c, &mut streamed).unwrap();
                }
                q.finish(&mut streamed).unwrap();
                assert_eq!(streamed, whole, "quote {m:?} in pieces of {piece}");
                // Unquoting through reads of every size.
                let mut u = Unquote::new(Trickle(&whole, piece));
                let mut back = Vec::new();
                let mut b = vec![0u8; piece];
                loop {
                    let n = u.read(&mut b).unwrap();
                    if n == 0 {
                        break;
                    }
                    back.extend_from_slice(&b[..n]);
                }
                assert_eq!(back, m, "unquote {whole:?} in reads of {piece}");
                assert_eq!(unquote(&whole), m);
            }
        }
    }
}
