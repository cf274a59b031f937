//! Reading archives: the fast path (trailer → index frame, no mail decompressed) for
//! `ls`, and a streaming pass over every member for `verify`, `extract` and `import`,
//! which hands each message to a visitor as a reader of its exact bytes, together with
//! its index record: memory does not follow a message's size.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use super::footer::{Footer, FooterError, FOOTER_LEN};
use super::index::{Index, IndexError, Layout, MessageRecord};
use super::messages::Messages;
use super::names::is_safe_member_path;
use super::padding::{PaddingCheck, PaddingFault};
use super::seal::{self, FileHash, Identities, SealError};
use crate::mail::mboxrd;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Footer { path: PathBuf, source: FooterError },
    #[error("{path}: index frame is damaged ({detail})")]
    IndexFrame { path: PathBuf, detail: String },
    #[error("{path}: no index.jsonl member found")]
    NoIndex { path: PathBuf },
    #[error("{path}: {source}")]
    Index { path: PathBuf, source: IndexError },
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("{path}: the archive data is damaged after {members} members: {detail}")]
    Data {
        path: PathBuf,
        members: u64,
        detail: String,
    },
}

/// An opened archive: its path and checked index.
#[derive(Debug, Clone)]
pub struct Archive {
    pub path: PathBuf,
    pub index: Index,
    /// Total size of the archive's bytes (the plaintext of an encrypted file).
    pub file_len: u64,
    /// The keys that opened it, to open it again for a full pass.
    pub keys: Identities,
    /// When set, the next full pass also hashes the file's bytes (a signature check).
    pub tap: Option<FileHash>,
    /// Which records name a member, made by the first pass and kept for the next ones
    /// (import and `verify --against` read an archive once a pass): making it parses
    /// every index record.
    pub(crate) by_path: OnceLock<Arc<ByPath>>,
}

/// Names of members that carry metadata, not mail.
pub fn is_meta_member(path: &str) -> bool {
    matches!(path, "index.jsonl" | "SHA256SUMS" | "README.txt")
        || path.ends_with("/dovecot-keywords")
}

/// One thing met while streaming an archive.
#[derive(Debug)]
pub enum Member<'a> {
    /// A message: a reader of its exact bytes (already un-quoted for the mbox layout).
    /// Its length is the record's `size` unless the archive is damaged: readers compare
    /// the length and SHA-256 they see with the index.
    Message {
        record: usize,
        body: MessageBody<'a>,
    },
    /// Metadata or a directory the format defines.
    Meta { path: String },
    /// A member the index does not name.
    Unknown { path: String, size: u64 },
    /// A member whose name could write outside a target directory.
    Unsafe { path: String },
    /// A second member under a name already seen.
    Duplicate { path: String },
    /// An mbox member could not give the record's bytes (offsets outside it).
    MboxDamaged { record: usize, detail: String },
    /// A record naming a Maildir-layout member an earlier record already names: one
    /// file is one message, so extracting both would write it twice.
    Shared { record: usize, path: String },
    /// A member that is not a file or directory (a link, device or FIFO): it holds no
    /// message, and extracting it would create something other than a file.
    NotAFile { path: String, kind: &'static str },
    /// Bytes the format fills with zeros that are not (only from
    /// [`Archive::stream_checking_padding`]): the member whose padding holds them, none
    /// for the end-of-archive blocks. No mail is in them.
    Padding {
        path: Option<String>,
        fault: PaddingFault,
    },
}

/// The bytes of one message, read from the archive as they are asked for.
pub struct MessageBody<'a>(&'a mut (dyn Read + 'a));

impl Read for MessageBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::fmt::Debug for MessageBody<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageBody")
    }
}

/// A member's bytes being read: counts them and keeps the first error, which the
/// stream reports once the visitor is done (the visitor may have swallowed it).
struct Tracked<R> {
    inner: R,
    read: u64,
    failed: Option<io::Error>,
}

impl<R: Read> Tracked<R> {
    fn new(inner: R) -> Tracked<R> {
        Tracked {
            inner,
            read: 0,
            failed: None,
        }
    }

    /// Reads what the visitor left, and returns the first error met on the way.
    fn drain(&mut self) -> io::Result<()> {
        if self.failed.is_none() {
            let _ = io::copy(self, &mut io::sink());
        }
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.read += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.failed = Some(io::Error::new(e.kind(), e.to_string()));
                Err(e)
            }
        }
    }
}

/// The name of a tar entry type no archive of ours holds, or None for files and
/// directories (and the headers tar uses to extend them).
fn special_kind(t: tar::EntryType) -> Option<&'static str> {
    match t {
        tar::EntryType::Symlink => Some("symbolic link"),
        tar::EntryType::Link => Some("hard link"),
        tar::EntryType::Char => Some("character device"),
        tar::EntryType::Block => Some("block device"),
        tar::EntryType::Fifo => Some("FIFO"),
        _ => None,
    }
}

/// What a full pass saw, beyond what the visitor was told.
#[derive(Debug, Default)]
pub struct StreamOutcome {
    /// Per index record: whether its bytes were found.
    pub seen: Vec<bool>,
    pub members: u64,
}

impl Archive {
    /// Opens a plain archive through its trailer: reads only the index frame.
    pub fn open(path: &Path) -> Result<Archive, ReadError> {
        Archive::open_with(path, &Identities::none())
    }

    /// Opens an archive, plain or encrypted to one of `keys`, through its trailer.
    pub fn open_with(path: &Path, keys: &Identities) -> Result<Archive, ReadError> {
        let io_err = |source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let src = seal::open(path, keys, None)?;
        let mut f = src.reader;
        let Some(file_len) = src.len else {
            // Not an Io error: the reader may still scan what comes before.
            return Err(ReadError::IndexFrame {
                path: path.to_path_buf(),
                detail: format!(
                    "the end of the encrypted file does not decrypt: {}",
                    src.end_damage.map_or_else(String::new, |e| e.to_string())
                ),
            });
        };
        let footer = read_footer(f.as_mut(), file_len).map_err(|e| match e {
            Either::Io(source) => ReadError::Io {
                path: path.to_path_buf(),
                source,
            },
            Either::Footer(source) => ReadError::Footer {
                path: path.to_path_buf(),
                source,
            },
        })?;
        // The frame is checked, then read again to decode: a million messages make a
        // frame of over 100 MB, which is not held.
        f.seek(SeekFrom::Start(footer.index_offset))
            .map_err(io_err)?;
        let mut frame = (&mut f).take(footer.index_length);
        let mut hash = Sha256::new();
        let n = io::copy(&mut frame, &mut hash).map_err(io_err)?;
        if n < footer.index_length {
            return Err(io_err(io::ErrorKind::UnexpectedEof.into()));
        }
        if !footer.frame_digest_matches(&hash.finalize()) {
            return Err(ReadError::IndexFrame {
                path: path.to_path_buf(),
                detail: "checksum in the trailer does not match".into(),
            });
        }
        f.seek(SeekFrom::Start(footer.index_offset))
            .map_err(io_err)?;
        let frame = BufReader::with_capacity(1 << 16, f.take(footer.index_length));
        let dec = zstd::stream::read::Decoder::with_buffer(frame).map_err(io_err)?;
        let index = find_index(dec, path)?;
        Ok(Archive {
            path: path.to_path_buf(),
            index,
            file_len,
            keys: keys.clone(),
            tap: None,
            by_path: OnceLock::new(),
        })
    }

    /// Finds the index by reading the whole stream: the slow path when the trailer is
    /// missing or damaged.
    pub fn scan(path: &Path, keys: &Identities) -> Result<Archive, ReadError> {
        let io_err = |source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let src = seal::open(path, keys, None)?;
        let file_len = src.len.unwrap_or_default();
        let dec = zstd::stream::read::Decoder::new(BufReader::new(src.reader)).map_err(io_err)?;
        let index = find_index(dec, path)?;
        Ok(Archive {
            path: path.to_path_buf(),
            index,
            file_len,
            keys: keys.clone(),
            tap: None,
            by_path: OnceLock::new(),
        })
    }

    /// Opens through the trailer, falling back to a scan; the first error is returned
    /// alongside so a verifier can report it. A file that cannot be opened at all (or
    /// decrypted) is not scanned.
    pub fn open_or_scan(
        path: &Path,
        keys: &Identities,
    ) -> (Result<Archive, ReadError>, Option<ReadError>) {
        match Archive::open_with(path, keys) {
            Ok(a) => (Ok(a), None),
            Err(e @ (ReadError::Io { .. } | ReadError::Seal(_))) => (Err(e), None),
            Err(first) => (Archive::scan(path, keys), Some(first)),
        }
    }

    pub fn layout(&self) -> Layout {
        self.index.header.layout
    }

    /// Streams every member, handing each message to `visit` as a reader of its exact
    /// bytes (un-quoted for the mbox layout) straight out of the decompressor: memory
    /// does not follow the size of a message. What the visitor leaves unread is read
    /// past here. When the archive data fails under a message the stream ends with
    /// [`ReadError::Data`] after the visit (the visitor saw a read error), and that
    /// record is not counted as seen.
    pub fn stream<E: From<ReadError>>(
        &self,
        visit: impl FnMut(Member<'_>) -> Result<(), E>,
    ) -> Result<StreamOutcome, E> {
        self.walk(false, visit)
    }

    /// [`Archive::stream`], also checking the bytes between members and the end of the
    /// tar stream (`verify`): each fault is handed to `visit` as [`Member::Padding`],
    /// and the stream is read to its end.
    pub fn stream_checking_padding<E: From<ReadError>>(
        &self,
        visit: impl FnMut(Member<'_>) -> Result<(), E>,
    ) -> Result<StreamOutcome, E> {
        self.walk(true, visit)
    }

    fn walk<E: From<ReadError>>(
        &self,
        padding: bool,
        mut visit: impl FnMut(Member<'_>) -> Result<(), E>,
    ) -> Result<StreamOutcome, E> {
        let path = &self.path;
        let io_err = |source| ReadError::Io {
            path: path.clone(),
            source,
        };
        let f = seal::open(path, &self.keys, self.tap.as_ref())
            .map_err(ReadError::from)?
            .reader;
        let dec = zstd::stream::read::Decoder::new(BufReader::with_capacity(1 << 20, f))
            .map_err(io_err)?;
        let msgs = &self.index.messages;
        let by_path = self.by_path.get_or_init(|| Arc::new(ByPath::new(msgs)));
        let mut out = StreamOutcome {
            seen: vec![false; msgs.len()],
            members: 0,
        };
        // Names met so far: those the index names by their first record (a bit each),
        // the few others (directories, metadata, strays) by name.
        let mut named_seen = vec![false; msgs.len()];
        let mut other_seen: HashSet<String> = HashSet::new();
        let mut check = PaddingCheck::new(padding);
        let mut ar = tar::Archive::new(check.watch(dec));
        let data_err = |members: u64, e: io::Error| ReadError::Data {
            path: path.clone(),
            members,
            detail: e.to_string(),
        };
        let entries = ar.entries().map_err(|e| data_err(0, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| data_err(out.members, e))?;
            out.members += 1;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let size = entry.size();
            if padding {
                let data_end = entry.raw_file_position().saturating_add(size);
                if let Some((path, fault)) =
                    check.member(&name, entry.raw_header_position(), data_end)
                {
                    visit(Member::Padding { path, fault })?;
                }
            }
            if !is_safe_member_path(&name) {
                visit(Member::Unsafe { path: name })?;
                continue;
            }
            let recs = by_path.records(&name);
            let met_before = match recs.first() {
                Some(&r) => std::mem::replace(&mut named_seen[r], true),
                None => !other_seen.insert(name.clone()),
            };
            if met_before && !entry.header().entry_type().is_dir() {
                visit(Member::Duplicate { path: name })?;
                continue;
            }
            if let Some(kind) = special_kind(entry.header().entry_type()) {
                visit(Member::NotAFile { path: name, kind })?;
                continue;
            }
            if entry.header().entry_type().is_dir() || is_meta_member(&name) {
                visit(Member::Meta { path: name })?;
                continue;
            }
            if recs.is_empty() {
                visit(Member::Unknown { path: name, size })?;
                continue;
            }
            match self.layout() {
                Layout::Maildir => {
                    let mut body = Tracked::new(&mut entry);
                    visit(Member::Message {
                        record: recs[0],
                        body: MessageBody(&mut body),
                    })?;
                    body.drain().map_err(|e| data_err(out.members, e))?;
                    out.seen[recs[0]] = true;
                    for &r in &recs[1..] {
                        out.seen[r] = true;
                        visit(Member::Shared {
                            record: r,
                            path: name.clone(),
                        })?;
                    }
                }
                Layout::Mbox => {
                    let mut recs: Vec<(usize, MessageRecord)> =
                        recs.into_iter().map(|r| (r, msgs.get(r))).collect();
                    recs.sort_by_key(|(_, m)| m.mbox.as_ref().map_or(0, |l| l.offset));
                    let mut pos = 0u64;
                    for (r, m) in recs {
                        let Some(loc) = m.mbox.as_ref() else {
                            visit(Member::MboxDamaged {
                                record: r,
                                detail: "record has no mbox offsets".into(),
                            })?;
                            continue;
                        };
                        if loc.offset < pos || loc.offset + loc.length > size {
                            visit(Member::MboxDamaged {
                                record: r,
                                detail: format!(
                                    "offsets {}+{} outside the member ({size} bytes)",
                                    loc.offset, loc.length
                                ),
                            })?;
                            continue;
                        }
                        io::copy(&mut (&mut entry).take(loc.offset - pos), &mut io::sink())
                            .map_err(|e| data_err(out.members, e))?;
                        let mut span = Tracked::new((&mut entry).take(loc.length));
                        visit(Member::Message {
                            record: r,
                            body: MessageBody(&mut mboxrd::Unquote::new(&mut span)),
                        })?;
                        span.drain().map_err(|e| data_err(out.members, e))?;
                        pos = loc.offset + span.read;
                        // The offsets were checked against the member's size: a span
                        // that ends early is a member whose data ended early. The
                        // visitor saw fewer bytes than the index's size.
                        out.seen[r] = true;
                    }
                }
            }
        }
        if padding {
            // The parser stops at the first end block; the rest is read here.
            io::copy(&mut ar.into_inner(), &mut io::sink())
                .map_err(|e| data_err(out.members, e))?;
            if let Some((path, fault)) = check.end() {
                visit(Member::Padding { path, fault })?;
            }
        }
        Ok(out)
    }

    pub fn record(&self, i: usize) -> MessageRecord {
        self.index.messages.get(i)
    }
}

/// Which records name each member path: (hash of the path, record) sorted, 16 bytes a
/// record where a map of the paths would hold every path again. A hash names
/// candidates; each is confirmed against its record's path.
/// The records naming each member path, found by two independent 64- and 32-bit hashes
/// of the path under a key chosen per process: a false match takes 96 equal bits, so a
/// member's records are found without parsing any record (a pass met every record of
/// the index once a member, for its path).
#[derive(Debug)]
pub(crate) struct ByPath {
    keys: Vec<(u64, u32, u32)>,
    state: std::collections::hash_map::RandomState,
}

impl ByPath {
    fn new(msgs: &Messages) -> ByPath {
        let state = std::collections::hash_map::RandomState::new();
        let mut keys: Vec<(u64, u32, u32)> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (h, check) = Self::hash(&state, &m.path);
                (h, check, u32::try_from(i).expect("under 4G records"))
            })
            .collect();
        keys.sort_unstable();
        ByPath { keys, state }
    }

    fn hash(state: &std::collections::hash_map::RandomState, path: &str) -> (u64, u32) {
        (state.hash_one(path), state.hash_one((path, 1u8)) as u32)
    }

    /// The records naming `path`, in index order.
    fn records(&self, path: &str) -> Vec<usize> {
        let (h, check) = Self::hash(&self.state, path);
        let from = self.keys.partition_point(|&(k, c, _)| (k, c) < (h, check));
        self.keys[from..]
            .iter()
            .take_while(|&&(k, c, _)| (k, c) == (h, check))
            .map(|&(_, _, i)| i as usize)
            .collect()
    }
}

enum Either {
    Io(io::Error),
    Footer(FooterError),
}

fn read_footer(f: &mut dyn seal::ReadSeek, file_len: u64) -> Result<Footer, Either> {
    if file_len < FOOTER_LEN as u64 {
        return Err(Either::Footer(FooterError::TooShort));
    }
    f.seek(SeekFrom::Start(file_len - FOOTER_LEN as u64))
        .map_err(Either::Io)?;
    let mut b = [0u8; FOOTER_LEN];
    f.read_exact(&mut b).map_err(Either::Io)?;
    Footer::decode(&b, file_len).map_err(Either::Footer)
}

/// Reads tar members from `r` until `index.jsonl`, and parses it.
fn find_index<R: Read>(r: R, path: &Path) -> Result<Index, ReadError> {
    let mut ar = tar::Archive::new(r);
    let frame_err = |e: io::Error| ReadError::IndexFrame {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let mut found = None;
    for entry in ar.entries().map_err(frame_err)? {
        let entry = entry.map_err(frame_err)?;
        if &*entry.path_bytes() == b"index.jsonl" {
            found =
                Some(
                    Index::parse(BufReader::new(entry)).map_err(|source| ReadError::Index {
                        path: path.to_path_buf(),
                        source,
                    })?,
                );
            break;
        }
    }
    found.ok_or_else(|| ReadError::NoIndex {
        path: path.to_path_buf(),
    })
}
