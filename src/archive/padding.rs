//! The bytes of the tar stream that hold no mail and that no hash covers: the zeros that
//! fill a member's last 512-byte block (its data's, and those of any extended header
//! before it) and the two end-of-archive blocks. The format (§2) has them zero; a byte
//! that is not was damaged or written by something else. The mail is intact, so the
//! reader reports it for `verify` to warn about.
//!
//! [`Watched`] sits under the tar parser and keeps the bytes it reads between one
//! member's data and the next member's header (a few KiB at most), so the check reads
//! no byte twice and holds no more than [`GAP_CAP`].

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use super::tarfmt::BLOCK;

/// The most kept between two members: a member's padding plus the next one's extended
/// headers, which the writer keeps to a name (well under 2 KiB). A larger gap is a
/// crafted stream; it is not checked, so memory stays bounded.
pub const GAP_CAP: usize = 64 << 10;

/// Where a padding byte sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// After the data of the member before the gap.
    AfterData,
    /// After an extended header (PAX or GNU long name) of the member after the gap.
    ExtendedHeader,
    /// In the two end-of-archive blocks.
    EndBlocks,
    /// After the end-of-archive blocks, where the stream should have ended.
    AfterEnd,
}

/// A byte the format has zero that is not, or an end marker of the wrong length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaddingFault {
    /// `byte` at `offset` of the (decompressed) tar stream.
    NonZero { offset: u64, byte: u8, place: Place },
    /// The stream ends `len` bytes after the last member's padding, not 1024.
    EndLength { offset: u64, len: u64 },
}

impl PaddingFault {
    pub fn place(&self) -> Place {
        match self {
            PaddingFault::NonZero { place, .. } => *place,
            PaddingFault::EndLength { .. } => Place::EndBlocks,
        }
    }
}

impl std::fmt::Display for PaddingFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PaddingFault::NonZero {
                offset,
                byte,
                place,
            } => {
                let at = match place {
                    Place::AfterData => "in the zero padding after its data",
                    Place::ExtendedHeader => "in the zero padding of its extended header",
                    Place::EndBlocks => "in the end-of-archive blocks",
                    Place::AfterEnd => "after the end-of-archive blocks",
                };
                write!(
                    f,
                    "byte {offset} of the tar stream is 0x{byte:02x}, {at}, where the format writes zeros"
                )
            }
            PaddingFault::EndLength { offset, len } => write!(
                f,
                "the tar stream ends {len} bytes after offset {offset}, where the format \
                 writes two 512-byte zero blocks"
            ),
        }
    }
}

/// The bytes read from one offset on, up to [`GAP_CAP`].
#[derive(Debug, Default)]
struct Gap {
    from: u64,
    bytes: Vec<u8>,
    /// More than the cap was read: the gap is not checked.
    over: bool,
}

/// Shared between the reader under the tar parser and the loop over its members.
#[derive(Debug, Clone, Default)]
struct Gaps(Rc<RefCell<Gap>>);

impl Gaps {
    /// Keeps what is read from `from` on (the end of a member's data) until the next check.
    fn start(&self, from: u64) {
        let mut g = self.0.borrow_mut();
        g.from = from;
        g.bytes.clear();
        g.over = false;
    }

    /// Checks the kept bytes: up to the next member's header at `next`, or, with `None`,
    /// to the end of the stream (the end-of-archive blocks follow the last padding).
    fn check(&self, next: Option<u64>) -> Option<PaddingFault> {
        let g = self.0.borrow();
        if g.over {
            return None;
        }
        match next {
            Some(next) => {
                let len = next.checked_sub(g.from)? as usize;
                check_between(g.from, g.bytes.get(..len)?)
            }
            None => check_end(g.from, &g.bytes),
        }
    }

    fn saw(&self, pos: u64, buf: &[u8]) {
        let mut g = self.0.borrow_mut();
        let end = pos + buf.len() as u64;
        if g.over || end <= g.from {
            return;
        }
        let skip = g.from.saturating_sub(pos) as usize;
        let room = GAP_CAP - g.bytes.len();
        let take = &buf[skip..];
        if take.len() > room {
            g.over = true;
            g.bytes.clear();
            return;
        }
        g.bytes.extend_from_slice(take);
    }
}

/// Follows a stream's members, checks the gap before each one and the end, and names
/// the member each fault belongs to.
#[derive(Debug, Default)]
pub struct PaddingCheck {
    gaps: Gaps,
    /// The member before the gap being read, whose padding opens it.
    before: Option<String>,
}

impl PaddingCheck {
    /// A check that keeps bytes from the start of the stream when `active`; an inactive
    /// one keeps nothing (its reader only passes bytes through).
    pub fn new(active: bool) -> PaddingCheck {
        let check = PaddingCheck::default();
        check.gaps.start(if active { 0 } else { u64::MAX });
        check
    }

    /// The reader to put under the tar parser.
    pub fn watch<R>(&self, inner: R) -> Watched<R> {
        Watched {
            inner,
            pos: 0,
            gaps: self.gaps.clone(),
        }
    }

    /// At member `name`, whose header the parser read at `header` and whose data ends at
    /// `data_end`: the fault in the gap before it, with the member that holds it.
    pub fn member(
        &mut self,
        name: &str,
        header: u64,
        data_end: u64,
    ) -> Option<(Option<String>, PaddingFault)> {
        let fault = self.gaps.check(Some(header));
        self.gaps.start(data_end);
        let before = self.before.replace(name.to_string());
        let fault = fault?;
        let path = match fault.place() {
            Place::AfterData => before,
            _ => Some(name.to_string()),
        };
        Some((path, fault))
    }

    /// Once the stream was read to its end: the fault after the last member, if any
    /// (named when it is in that member's padding).
    pub fn end(&mut self) -> Option<(Option<String>, PaddingFault)> {
        let fault = self.gaps.check(None)?;
        let path = self
            .before
            .take()
            .filter(|_| fault.place() == Place::AfterData);
        Some((path, fault))
    }
}

/// A reader of the tar stream that counts its offset and hands what it reads to
/// [`Gaps`].
pub struct Watched<R> {
    inner: R,
    pos: u64,
    gaps: Gaps,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.gaps.saw(self.pos, &buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

fn round_up(n: u64) -> u64 {
    n.next_multiple_of(BLOCK as u64)
}

fn first_nonzero(bytes: &[u8], offset: u64, place: Place) -> Option<PaddingFault> {
    let i = bytes.iter().position(|&b| b != 0)?;
    Some(PaddingFault::NonZero {
        offset: offset + i as u64,
        byte: bytes[i],
        place,
    })
}

/// The gap from a member's data end at `from` to the next member's header: the
/// padding, then any extended headers, each its own header block, data and padding.
/// Offsets are of the tar stream (blocks are aligned there, not in the gap).
fn check_between(from: u64, gap: &[u8]) -> Option<PaddingFault> {
    let end = from + gap.len() as u64;
    let bytes = |lo: u64, hi: u64| &gap[(lo - from) as usize..(hi.min(end) - from) as usize];
    let (mut fill, mut place) = (from, Place::AfterData);
    loop {
        let header = round_up(fill);
        if let Some(f) = first_nonzero(bytes(fill.min(end), header), fill, place) {
            return Some(f);
        }
        if header + BLOCK as u64 > end {
            return None;
        }
        // The parser above accepted these headers; one it could not size ends the check.
        let block = bytes(header, header + BLOCK as u64);
        let size = tar::Header::from_byte_slice(block).entry_size().ok()?;
        fill = (header + BLOCK as u64).checked_add(size)?;
        place = Place::ExtendedHeader;
    }
}

/// The last member's padding from `from`, then exactly two zero blocks to the end.
fn check_end(from: u64, rest: &[u8]) -> Option<PaddingFault> {
    let pad = ((round_up(from) - from) as usize).min(rest.len());
    if let Some(f) = first_nonzero(&rest[..pad], from, Place::AfterData) {
        return Some(f);
    }
    let end = &rest[pad..];
    let blocks = end.len().min(2 * BLOCK);
    let start = from + pad as u64;
    first_nonzero(&end[..blocks], start, Place::EndBlocks)
        .or_else(|| first_nonzero(&end[blocks..], start + blocks as u64, Place::AfterEnd))
        .or_else(|| {
            (end.len() != 2 * BLOCK).then_some(PaddingFault::EndLength {
                offset: start,
                len: end.len() as u64,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tarfmt;

    /// A tar stream of our writer's: a short-named member, one with a PAX name, the end.
    fn long_name() -> String {
        format!("maildir/{}/cur/1:2,S", "長い名前".repeat(12))
    }

    fn stream() -> (Vec<u8>, Vec<(u64, u64, u64)>) {
        let mut t = Vec::new();
        let long = long_name();
        tarfmt::write_file(&mut t, "maildir/INBOX/cur/1:2,S", b"hello", 0).unwrap();
        tarfmt::write_file(&mut t, &long, b"world!", 0).unwrap();
        tarfmt::write_end(&mut t).unwrap();
        // (header, data start, size) of each member, as the tar crate reads them.
        let members = tar::Archive::new(&t[..])
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.raw_header_position(), e.raw_file_position(), e.size())
            })
            .collect();
        (t, members)
    }

    /// Runs the check the way the reader does, over `t`: the faults, each with the
    /// member named.
    fn named_faults(t: &[u8]) -> Vec<(Option<String>, PaddingFault)> {
        let mut check = PaddingCheck::new(true);
        let mut ar = tar::Archive::new(check.watch(t));
        let mut found = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let end = e.raw_file_position() + e.size();
            found.extend(check.member(&name, e.raw_header_position(), end));
        }
        io::copy(&mut ar.into_inner(), &mut io::sink()).unwrap();
        found.extend(check.end());
        found
    }

    fn faults(t: &[u8]) -> Vec<PaddingFault> {
        named_faults(t).into_iter().map(|(_, f)| f).collect()
    }

    #[test]
    fn a_fault_names_the_member_whose_padding_holds_it() {
        let (t, m) = stream();
        let names: Vec<Option<String>> = [m[0].1 + m[0].2, 1024 + 512 + 300, m[1].1 + m[1].2]
            .iter()
            .map(|&at| {
                let mut bad = t.clone();
                bad[at as usize] = 1;
                named_faults(&bad)[0].0.clone()
            })
            .collect();
        let long = long_name();
        let first = Some("maildir/INBOX/cur/1:2,S".to_string());
        assert_eq!(names, vec![first, Some(long.clone()), Some(long)]);
        let mut bad = t.clone();
        let end = bad.len() - 1;
        bad[end] = 1;
        assert_eq!(named_faults(&bad)[0].0, None);
    }

    #[test]
    fn our_writer_leaves_no_fault() {
        let (t, members) = stream();
        assert_eq!(members.len(), 2);
        // The second member has a PAX header: its data starts 3 blocks after the first
        // member's padding.
        assert_eq!(members[1].0, 1024 + 1024);
        assert_eq!(faults(&t), vec![]);
    }

    #[test]
    fn a_byte_in_any_padding_is_found_where_it_is() {
        let (t, m) = stream();
        let after_first = m[0].1 + m[0].2 + 7;
        // The PAX header sits in the block after the first member's padding.
        let pax_pad = 1024 + 512 + 300;
        let after_last = m[1].1 + m[1].2 + 1;
        let end = t.len() as u64 - 1024;
        for (at, place) in [
            (after_first, Place::AfterData),
            (pax_pad, Place::ExtendedHeader),
            (after_last, Place::AfterData),
            (end + 3, Place::EndBlocks),
            (end + 1023, Place::EndBlocks),
        ] {
            let mut bad = t.clone();
            bad[at as usize] = 0x41;
            let want = PaddingFault::NonZero {
                offset: at,
                byte: 0x41,
                place,
            };
            // A byte in the first end block makes it a header the parser refuses.
            if at == end + 3 {
                let mut ar = tar::Archive::new(&bad[..]);
                assert!(ar.entries().unwrap().any(|e| e.is_err()));
                continue;
            }
            assert_eq!(faults(&bad), vec![want], "byte {at}");
        }
    }

    #[test]
    fn an_end_marker_short_or_followed_by_bytes_is_found() {
        let (t, _) = stream();
        let end = t.len() as u64 - 1024;
        let short = &t[..t.len() - 512];
        assert_eq!(
            faults(short),
            vec![PaddingFault::EndLength {
                offset: end,
                len: 512
            }]
        );
        let mut long = t.clone();
        long.extend_from_slice(&[0, 0, 9]);
        assert_eq!(
            faults(&long),
            vec![PaddingFault::NonZero {
                offset: end + 1026,
                byte: 9,
                place: Place::AfterEnd
            }]
        );
        long.truncate(t.len() + 2);
        assert_eq!(
            faults(&long),
            vec![PaddingFault::EndLength {
                offset: end,
                len: 1026
            }]
        );
    }

    #[test]
    fn an_inactive_check_keeps_nothing() {
        let (t, _) = stream();
        let check = PaddingCheck::new(false);
        io::copy(&mut check.watch(&t[..]), &mut io::sink()).unwrap();
        assert!(check.gaps.0.borrow().bytes.is_empty());
    }

    #[test]
    fn a_gap_over_the_cap_is_not_kept() {
        let gaps = Gaps::default();
        gaps.start(10);
        gaps.saw(0, &[1u8; 20]);
        assert_eq!(
            gaps.check(Some(20)),
            Some(PaddingFault::NonZero {
                offset: 10,
                byte: 1,
                place: Place::AfterData
            })
        );
        gaps.start(0);
        gaps.saw(0, &vec![1u8; GAP_CAP + 1]);
        assert_eq!(gaps.check(Some(100)), None);
        assert!(gaps.0.borrow().bytes.is_empty());
    }
}
