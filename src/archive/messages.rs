//! The message records of an opened index, kept as their index lines instead of parsed
//! structs: in memory while they are few, spilled to an unnamed temp file past
//! [`SPILL_AT`]. A million records parsed whole would hold about 1 KB each (a dozen
//! Strings per record); kept as lines on disk they cost 8 bytes each here (the line's
//! offset), and a record is parsed again when it is asked for. Pages of the temp file
//! are read with `pread`, not mapped, so they never count in the process's RSS.

use crate::scratch::Scratch;
use std::fmt;
use std::io::{self, BufWriter, Write};
use std::sync::Arc;

use super::index::MessageRecord;

/// Bytes of index lines kept in memory before they go to a temp file.
pub(crate) const SPILL_AT: usize = 8 << 20;

/// How many bytes of lines an iterator reads at once.
const CHUNK: u64 = 1 << 20;

#[derive(Clone)]
enum Lines {
    Mem(Arc<Vec<u8>>),
    File(Arc<Scratch>),
}

/// The message records of one index, in index order.
#[derive(Clone)]
pub struct Messages {
    lines: Lines,
    /// Start of each record's line; one more entry holds the end of the last.
    starts: Vec<u64>,
}

/// Collects index lines (each one already checked to be a message record) into
/// [`Messages`].
pub(crate) struct MessagesBuilder {
    mem: Vec<u8>,
    file: Option<BufWriter<Scratch>>,
    starts: Vec<u64>,
    len: u64,
}

impl MessagesBuilder {
    pub(crate) fn new() -> Self {
        MessagesBuilder {
            mem: Vec::new(),
            file: None,
            starts: vec![0],
            len: 0,
        }
    }

    /// Adds one whole line (its newline included).
    pub(crate) fn push_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.file.is_none() && self.mem.len() + line.len() > SPILL_AT {
            let mut f = BufWriter::with_capacity(1 << 20, Scratch::new()?);
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(line)?,
            None => self.mem.extend_from_slice(line),
        }
        self.len += line.len() as u64;
        self.starts.push(self.len);
        Ok(())
    }

    pub(crate) fn finish(self) -> io::Result<Messages> {
        let lines = match self.file {
            Some(f) => Lines::File(Arc::new(f.into_inner().map_err(|e| e.into_error())?)),
            None => Lines::Mem(Arc::new(self.mem)),
        };
        let mut starts = self.starts;
        starts.shrink_to_fit();
        Ok(Messages { lines, starts })
    }
}

impl Messages {
    /// Records already parsed (tests and tools that build an index in memory).
    pub fn from_records(records: &[MessageRecord]) -> Messages {
        let mut b = MessagesBuilder::new();
        for r in records {
            let mut line = serde_json::to_vec(r).expect("a record serialises");
            line.push(b'\n');
            b.push_line(&line).expect("lines in memory");
        }
        b.finish().expect("lines in memory")
    }

    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record `i`, parsed from its line. Panics if `i` is out of range, or if the temp
    /// file this process wrote moments ago cannot be read back (the machine failing).
    pub fn get(&self, i: usize) -> MessageRecord {
        let (a, b) = (self.starts[i], self.starts[i + 1]);
        let mut buf = Vec::new();
        self.read(a, b, &mut buf);
        parse(&buf)
    }

    /// Every record in index order, read in chunks.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            msgs: self,
            next: 0,
            chunk: Vec::new(),
            chunk_first: 0,
            chunk_end: 0,
        }
    }

    fn read(&self, a: u64, b: u64, buf: &mut Vec<u8>) {
        buf.clear();
        match &self.lines {
            Lines::Mem(m) => buf.extend_from_slice(&m[a as usize..b as usize]),
            Lines::File(f) => {
                buf.resize((b - a) as usize, 0);
                f.read_exact_at(buf, a)
                    .expect("reading back the index records spooled to a temp file");
            }
        }
    }
}

/// Lines pushed were checked by the index parser, so a line that no longer parses is
/// the temp file changing under us.
fn parse(line: &[u8]) -> MessageRecord {
    serde_json::from_slice(line).expect("a message record the index parser accepted")
}

impl fmt::Debug for Messages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Messages({} records)", self.len())
    }
}

pub struct Iter<'a> {
    msgs: &'a Messages,
    next: usize,
    /// Lines of records `chunk_first..chunk_end`.
    chunk: Vec<u8>,
    chunk_first: usize,
    chunk_end: usize,
}

impl Iterator for Iter<'_> {
    type Item = MessageRecord;

    fn next(&mut self) -> Option<MessageRecord> {
        let starts = &self.msgs.starts;
        if self.next >= self.msgs.len() {
            return None;
        }
        if self.next >= self.chunk_end {
            // As many whole lines as fit in a chunk, at least one.
            let first = self.next;
            let mut end = first + 1;
            while end < self.msgs.len() && starts[end + 1] - starts[first] <= CHUNK {
                end += 1;
            }
            let mut chunk = std::mem::take(&mut self.chunk);
            self.msgs.read(starts[first], starts[end], &mut chunk);
            self.chunk = chunk;
            self.chunk_first = first;
            self.chunk_end = end;
        }
        let base = starts[self.chunk_first];
        let (a, b) = (starts[self.next] - base, starts[self.next + 1] - base);
        self.next += 1;
        Some(parse(&self.chunk[a as usize..b as usize]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.msgs.len() - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::index::SourceRef;

    fn rec(i: usize) -> MessageRecord {
        MessageRecord {
            folder: format!("F{}", i % 3),
            path: format!("maildir/F{}/cur/{i}:2,S", i % 3),
            size: i as u64,
            sha256: format!("{i:064x}"),
            flags: vec!["\\Seen".into()],
            internaldate: None,
            message_id: Some(format!("<{i}@x>")),
            date: None,
            from: None,
            subject: Some("件名".repeat(i % 50)),
            source: SourceRef::Imap {
                uidvalidity: 1,
                uid: i as u32,
            },
            source_size: None,
            mbox: None,
        }
    }

    /// Records read back equal the records pushed, by index and in order, in memory
    /// and past the spill to a temp file, across chunk boundaries.
    #[test]
    fn records_come_back_in_memory_and_from_the_spill() {
        for n in [0, 1, 5, 40_000] {
            let recs: Vec<MessageRecord> = (0..n).map(rec).collect();
            let m = Messages::from_records(&recs);
            assert_eq!(m.len(), n);
            assert_eq!(matches!(m.lines, Lines::File(_)), n == 40_000, "n={n}");
            let back: Vec<MessageRecord> = m.iter().collect();
            assert_eq!(back, recs, "n={n}");
            for i in (0..n).step_by(997) {
                assert_eq!(m.get(i), recs[i]);
            }
            if n > 0 {
                assert_eq!(m.get(n - 1), recs[n - 1]);
            }
            let copy = m.clone();
            assert_eq!(copy.iter().count(), n);
        }
    }

    /// One line larger than a chunk is read whole.
    #[test]
    fn a_line_longer_than_a_chunk_is_read_whole() {
        let mut big = rec(1);
        big.subject = Some("x".repeat(CHUNK as usize + 10));
        let recs = vec![rec(0), big, rec(2)];
        let m = Messages::from_records(&recs);
        assert_eq!(m.iter().collect::<Vec<_>>(), recs);
    }
}
