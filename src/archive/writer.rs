//! The archive writer (spec §6, write order): messages stream into one zstd frame as tar
//! members while their index records spool to a temp file; `finish` appends the index
//! frame and the trailer, fsyncs, and only then renames the temp file to its final name.
//! Memory stays bounded by the largest message held in memory, whatever the mailbox size;
//! a large message is streamed in ([`ArchiveWriter::add_message_from`]).

use crate::scratch::Scratch;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, Utc};
use sha2::{Digest, Sha256};

use super::footer::Footer;
use super::index::*;
use super::names::DirAllocator;
use super::seal::{Output, Recipients};
use super::sign::{self, SigningKey};
use super::tarfmt;
use crate::mail::{flags, headers, mboxrd};

/// What a source knows about a folder.
#[derive(Debug, Clone, Default)]
pub struct FolderInfo {
    pub name: String,
    pub raw_name: String,
    /// The raw name's bytes when they are not UTF-8 (`raw_name` then shows them decoded).
    pub raw_bytes: Option<Vec<u8>>,
    pub delimiter: Option<char>,
    pub special_use: Option<String>,
    pub subscribed: bool,
    pub selectable: bool,
    pub source_count: Option<u64>,
    pub uidvalidity: Option<u32>,
    pub uidnext: Option<u32>,
    pub highestmodseq: Option<u64>,
}

impl FolderInfo {
    pub fn simple(name: &str, delimiter: Option<char>) -> FolderInfo {
        FolderInfo {
            name: name.to_string(),
            raw_name: name.to_string(),
            delimiter,
            subscribed: true,
            selectable: true,
            ..Default::default()
        }
    }
}

/// What a source knows about one message besides its bytes.
#[derive(Debug, Clone)]
pub struct MessageInfo {
    pub folder: String,
    pub flags: Vec<String>,
    pub internaldate: Option<DateTime<FixedOffset>>,
    pub source: SourceRef,
    pub source_size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub layout: Layout,
    /// zstd level (1..=19; 3 is zstd's own default).
    pub level: i32,
    /// zstd worker threads; 0 compresses on the calling thread.
    pub threads: u32,
    /// Where the mail came from, without secrets.
    pub source: String,
    pub parent: Option<ParentRef>,
    /// The source's personal namespace, for the header.
    pub namespace: Option<Namespace>,
    /// Replace an existing file at the destination.
    pub force: bool,
    /// Encrypt the whole file with age to these recipients (spec §10).
    pub encrypt_to: Option<Recipients>,
    /// Write `DEST.sig`, an SSH signature over the file as written (spec §10.3).
    pub sign_with: Option<SigningKey>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            layout: Layout::Maildir,
            level: 3,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            source: String::new(),
            parent: None,
            namespace: None,
            force: false,
            encrypt_to: None,
            sign_with: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0} already exists (use --force to replace it)")]
    Exists(PathBuf),
    #[error("cannot create a temporary file next to {path}: {source}")]
    Temp { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("zstd level {0} is out of range (1..=19, or up to 22 for --ultra use)")]
    Level(i32),
    #[error("{0}")]
    Sign(#[from] sign::SignError),
}

/// Counts bytes and, when asked, hashes them; the trailer needs the index frame's
/// offset, length and checksum without reading the file back.
struct Counting<W> {
    inner: W,
    count: u64,
    hash: Option<Sha256>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        if let Some(h) = self.hash.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Sink = Counting<Output>;

struct FolderState {
    info: FolderInfo,
    dir: String,
    keywords: Vec<String>,
    messages: u64,
    /// mbox layout: the folder's mbox text so far, spooled to disk.
    mbox: Option<BufWriter<Scratch>>,
    mbox_len: u64,
}

/// Totals of a finished archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    pub path: PathBuf,
    pub archive_id: String,
    pub index_sha256: String,
    pub folders: u64,
    pub messages: u64,
    pub message_bytes: u64,
    /// Bytes on disk (with age's header and tags when encrypted).
    pub file_bytes: u64,
    /// `DEST.sig`, when the archive was signed.
    pub signature: Option<PathBuf>,
}

pub struct ArchiveWriter {
    dest: PathBuf,
    opts: WriterOptions,
    tmp: Option<tempfile::NamedTempFile>,
    /// Removes the temp file if the process is interrupted before `finish`.
    _unfinished: crate::interrupt::Unfinished,
    enc: Option<zstd::stream::write::Encoder<'static, Sink>>,
    folders: Vec<FolderState>,
    by_name: HashMap<String, usize>,
    dirs: DirAllocator,
    spool: BufWriter<Scratch>,
    sums: BufWriter<Scratch>,
    seq: u64,
    bytes: u64,
    header: ArchiveHeader,
}

impl ArchiveWriter {
    /// Starts an archive that will appear at `dest` only when [`finish`] succeeds.
    pub fn create(dest: &Path, opts: WriterOptions) -> Result<ArchiveWriter, WriteError> {
        if !(1..=22).contains(&opts.level) {
            return Err(WriteError::Level(opts.level));
        }
        if dest.exists() && !opts.force {
            return Err(WriteError::Exists(dest.to_path_buf()));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let fname = dest
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp_err = |source| WriteError::Temp {
            path: dest.to_path_buf(),
            source,
        };
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{fname}."))
            .suffix(".part")
            .tempfile_in(&dir)
            .map_err(temp_err)?;
        let file = tmp.reopen().map_err(temp_err)?;
        let unfinished = crate::interrupt::Unfinished::new(tmp.path());
        // Offsets (`count`) are of the archive's own bytes, above the age layer: the
        // trailer's offsets are plaintext offsets, as a reader of the plaintext sees.
        let hash = opts.sign_with.as_ref().map(|_| sign::HASH);
        let out = Output::new(file, opts.encrypt_to.as_ref(), hash).map_err(temp_err)?;
        let sink = Counting {
            inner: out,
            count: 0,
            hash: None,
        };
        let enc = new_encoder(sink, &opts).map_err(temp_err)?;
        let spool = BufWriter::new(Scratch::new_in(&dir).map_err(temp_err)?);
        let sums = BufWriter::new(Scratch::new_in(&dir).map_err(temp_err)?);
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|e| temp_err(io::Error::other(e.to_string())))?;
        let header = ArchiveHeader {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            mailark_version: env!("CARGO_PKG_VERSION").to_string(),
            archive_id: hex::encode(id),
            created: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            source: opts.source.clone(),
            layout: opts.layout,
            parent: opts.parent.clone(),
            namespace: opts.namespace.clone(),
        };
        Ok(ArchiveWriter {
            dest: dest.to_path_buf(),
            opts,
            tmp: Some(tmp),
            _unfinished: unfinished,
            enc: Some(enc),
            folders: Vec::new(),
            by_name: HashMap::new(),
            dirs: DirAllocator::default(),
            spool,
            sums,
            seq: 0,
            bytes: 0,
            header,
        })
    }

    pub fn archive_id(&self) -> &str {
        &self.header.archive_id
    }

    fn io_err(&self, source: io::Error) -> WriteError {
        WriteError::Io {
            path: self.dest.clone(),
            source,
        }
    }

    /// Declares a folder (also the ones with no messages, and `\Noselect` parents, so a
    /// restore can recreate the tree). Declaring a name twice updates its facts.
    pub fn add_folder(&mut self, info: FolderInfo) -> Result<(), WriteError> {
        if let Some(&i) = self.by_name.get(&info.name) {
            self.folders[i].info = info;
            return Ok(());
        }
        let (root, suffix) = match self.opts.layout {
            Layout::Maildir => ("maildir", ""),
            Layout::Mbox => ("mbox", ".sbd"),
        };
        let rel = self.dirs.allocate(&info.name, info.delimiter, suffix);
        let dir = format!("{root}/{rel}");
        if self.opts.layout == Layout::Maildir && info.selectable {
            let enc = self.enc.as_mut().unwrap();
            let r: io::Result<()> = (|| {
                for sub in ["cur", "new", "tmp"] {
                    tarfmt::write_dir(enc, &format!("{dir}/{sub}"), 0)?;
                }
                Ok(())
            })();
            r.map_err(|e| WriteError::Io {
                path: self.dest.clone(),
                source: e,
            })?;
        }
        self.by_name.insert(info.name.clone(), self.folders.len());
        self.folders.push(FolderState {
            info,
            dir,
            keywords: Vec::new(),
            messages: 0,
            mbox: None,
            mbox_len: 0,
        });
        Ok(())
    }

    /// Adds one message with its exact bytes. Returns its index record.
    pub fn add_message(
        &mut self,
        info: MessageInfo,
        body: &[u8],
    ) -> Result<MessageRecord, WriteError> {
        let head = &body[..body.len().min(headers::MAX_HEADER)];
        self.add_message_from(info, head, &mut &body[..], body.len() as u64)
    }

    /// Adds one message of `len` bytes read from `body`, whose first bytes are `head`
    /// (at least its header section, or the whole message): the bytes stream into the
    /// archive, so memory does not follow the message's size. A body that gives other
    /// than `len` bytes is an error (the tar header already said `len`).
    pub fn add_message_from(
        &mut self,
        info: MessageInfo,
        head: &[u8],
        body: &mut dyn Read,
        len: u64,
    ) -> Result<MessageRecord, WriteError> {
        if !self.by_name.contains_key(&info.folder) {
            self.add_folder(FolderInfo::simple(&info.folder, Some('/')))?;
        }
        let fi = self.by_name[&info.folder];
        let summary = headers::summarize(head);
        let msg_flags = flags::normalize(&info.flags);
        self.seq += 1;
        let seq = self.seq;
        let mtime = info.internaldate.map_or(0, |d| d.timestamp().max(0) as u64);
        let folder = &mut self.folders[fi];
        for f in &msg_flags {
            if !flags::is_system(f) && flags::letter_of(f).is_none() && !folder.keywords.contains(f)
            {
                folder.keywords.push(f.clone());
            }
        }
        let io_err = |dest: &Path, source| WriteError::Io {
            path: dest.to_path_buf(),
            source,
        };
        let (path, mbox, sha) = match self.opts.layout {
            Layout::Maildir => {
                let info_letters = flags::maildir_info(&msg_flags, &folder.keywords);
                let path = format!("{}/cur/{mtime}.M{seq}.mailark:2,{info_letters}", folder.dir);
                let enc = self.enc.as_mut().unwrap();
                let sha = tarfmt::write_header(enc, &path, len, mtime, tar::EntryType::Regular)
                    .and_then(|_| copy_exact(body, enc, len))
                    .and_then(|sha| tarfmt::write_padding(enc, len).map(|_| sha))
                    .and_then(|sha| {
                        writeln!(self.sums, "{}  {path}", hex::encode(sha)).map(|_| sha)
                    })
                    .map_err(|e| io_err(&self.dest, e))?;
                (path, None, sha)
            }
            Layout::Mbox => {
                let dir = std::env::temp_dir();
                if folder.mbox.is_none() {
                    let spool_dir = self
                        .dest
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(&dir);
                    let f = Scratch::new_in(spool_dir).map_err(|e| io_err(&self.dest, e))?;
                    folder.mbox = Some(BufWriter::new(f));
                }
                let when = info
                    .internaldate
                    .map(|d| d.with_timezone(&Utc))
                    .unwrap_or_default();
                let from_line = format!(
                    "From MAILER-DAEMON {}\n",
                    when.format("%a %b %e %H:%M:%S %Y")
                );
                let offset = folder.mbox_len + from_line.len() as u64;
                let out = folder.mbox.as_mut().unwrap();
                let (length, sha, eol_added) =
                    quote_exact(&from_line, body, out, len).map_err(|e| io_err(&self.dest, e))?;
                let written = from_line.len() as u64 + length + 1 + u64::from(eol_added);
                folder.mbox_len += written;
                (
                    folder.dir.clone(),
                    Some(MboxLoc {
                        offset,
                        length,
                        eol_added,
                    }),
                    sha,
                )
            }
        };
        let sha = hex::encode(sha);
        folder.messages += 1;
        self.bytes += len;
        let rec = MessageRecord {
            folder: info.folder,
            path,
            size: len,
            sha256: sha,
            flags: msg_flags,
            internaldate: info.internaldate.map(|d| d.to_rfc3339()),
            message_id: summary.message_id,
            date: summary.date,
            from: summary.from,
            subject: summary.subject,
            source: info.source,
            source_size: info.source_size,
            mbox,
        };
        serde_json::to_writer(&mut self.spool, &Record::Message(rec.clone()))
            .map_err(io::Error::from)
            .and_then(|_| self.spool.write_all(b"\n"))
            .map_err(|e| self.io_err(e))?;
        Ok(rec)
    }

    /// Writes the index frame and trailer, fsyncs, and renames into place.
    pub fn finish(mut self) -> Result<WriteSummary, WriteError> {
        self.finish_inner().map_err(|e| match e {
            FinishError::Io(source) => WriteError::Io {
                path: self.dest.clone(),
                source,
            },
            FinishError::Write(w) => w,
        })
    }

    fn finish_inner(&mut self) -> Result<WriteSummary, FinishError> {
        let mut enc = self.enc.take().unwrap();
        // mbox members go last in the message frame: a folder's file must be contiguous.
        for f in &mut self.folders {
            if let Some(spool) = f.mbox.take() {
                let mut file = spool.into_inner().map_err(|e| e.into_error())?;
                file.rewind()?;
                tarfmt::write_header(&mut enc, &f.dir, f.mbox_len, 0, tar::EntryType::Regular)?;
                let n = io::copy(&mut (&mut file).take(f.mbox_len), &mut enc)?;
                if n != f.mbox_len {
                    return Err(io::Error::other("mbox spool shrank").into());
                }
                tarfmt::write_padding(&mut enc, f.mbox_len)?;
            }
        }
        let mut sink = enc.finish()?;
        let index_offset = sink.count;
        sink.hash = Some(Sha256::new());

        // The index file is assembled on disk first: a tar header needs its size.
        let mut index_file = Scratch::new_in(self.tmp.as_ref().unwrap().path().parent().unwrap())?;
        let mut iw = IndexWriter::new(BufWriter::new(&mut index_file));
        iw.write(&Record::Archive(self.header.clone()))?;
        for f in &self.folders {
            iw.write(&Record::Folder(FolderRecord {
                name: f.info.name.clone(),
                raw_name: f.info.raw_name.clone(),
                raw_name_hex: f.info.raw_bytes.as_deref().map(hex::encode),
                delimiter: f.info.delimiter.map(|c| c.to_string()),
                dir: f.dir.clone(),
                special_use: f.info.special_use.clone(),
                subscribed: f.info.subscribed,
                selectable: f.info.selectable,
                source_count: f.info.source_count,
                uidvalidity: f.info.uidvalidity,
                uidnext: f.info.uidnext,
                highestmodseq: f.info.highestmodseq,
                keywords: f.keywords.clone(),
                messages: f.messages,
            }))?;
        }
        let mut spool = std::mem::replace(&mut self.spool, BufWriter::new(Scratch::new()?))
            .into_inner()
            .map_err(|e| e.into_error())?;
        spool.rewind()?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = spool.read(&mut buf)?;
            if n == 0 {
                break;
            }
            iw.write_raw(&buf[..n])?;
        }
        let (w, index_sha256) = iw.finish(self.folders.len() as u64, self.seq, self.bytes)?;
        w.into_inner().map_err(|e| e.into_error())?;
        let index_len = index_file.stream_position()?;
        index_file.rewind()?;

        let mut ienc = zstd::stream::write::Encoder::new(sink, self.opts.level)?;
        let now = Utc::now().timestamp().max(0) as u64;
        tarfmt::write_header(
            &mut ienc,
            "index.jsonl",
            index_len,
            now,
            tar::EntryType::Regular,
        )?;
        io::copy(&mut index_file, &mut ienc)?;
        tarfmt::write_padding(&mut ienc, index_len)?;
        if self.opts.layout == Layout::Maildir {
            let mut sums = std::mem::replace(&mut self.sums, BufWriter::new(Scratch::new()?))
                .into_inner()
                .map_err(|e| e.into_error())?;
            let len = sums.stream_position()?;
            sums.rewind()?;
            tarfmt::write_header(&mut ienc, "SHA256SUMS", len, now, tar::EntryType::Regular)?;
            io::copy(&mut sums, &mut ienc)?;
            tarfmt::write_padding(&mut ienc, len)?;
            for f in self
                .folders
                .iter()
                .filter(|f| !f.keywords.is_empty() && f.info.selectable)
            {
                let mut text = String::new();
                for (i, k) in f.keywords.iter().enumerate() {
                    text.push_str(&format!("{i} {k}\n"));
                }
                tarfmt::write_file(
                    &mut ienc,
                    &format!("{}/dovecot-keywords", f.dir),
                    text.as_bytes(),
                    now,
                )?;
            }
        }
        tarfmt::write_file(
            &mut ienc,
            "README.txt",
            readme(self.opts.layout).as_bytes(),
            now,
        )?;
        tarfmt::write_end(&mut ienc)?;
        let mut sink = ienc.finish()?;
        let index_length = sink.count - index_offset;
        let digest: [u8; 32] = sink.hash.take().unwrap().finalize().into();
        let footer = Footer {
            version: FORMAT_VERSION,
            index_offset,
            index_length,
            index_frame_sha256: digest,
        };
        sink.write_all(&footer.encode())?;
        let (file, digest) = sink.inner.finish()?;
        file.sync_all()?;
        let file_bytes = file.metadata()?.len();
        drop(file);
        // Signed before anything gets a final name: a key that cannot sign leaves nothing.
        let signature = match (&self.opts.sign_with, digest) {
            (Some(key), Some(d)) => Some(key.sign(&d).map_err(WriteError::from)?),
            _ => None,
        };

        let tmp = self.tmp.take().unwrap();
        if self.opts.force {
            tmp.persist(&self.dest).map_err(|e| e.error)?;
        } else {
            tmp.persist_noclobber(&self.dest).map_err(|e| {
                if e.error.kind() == io::ErrorKind::AlreadyExists {
                    FinishError::Write(WriteError::Exists(self.dest.clone()))
                } else {
                    FinishError::Io(e.error)
                }
            })?;
        }
        let sig_path = match signature {
            Some(pem) => Some(self.write_signature(&pem)?),
            None => None,
        };
        sync_parent_dir(&self.dest);
        Ok(WriteSummary {
            path: self.dest.clone(),
            archive_id: self.header.archive_id.clone(),
            index_sha256,
            folders: self.folders.len() as u64,
            messages: self.seq,
            message_bytes: self.bytes,
            file_bytes,
            signature: sig_path,
        })
    }

    /// Puts `DEST.sig` in place like the archive (temp file, fsync, rename). If that
    /// fails the archive goes too: an archive asked to be signed is never left unsigned.
    fn write_signature(&self, pem: &str) -> Result<PathBuf, FinishError> {
        let path = sign::sig_path(&self.dest);
        let r = (|| -> io::Result<()> {
            let dir = self.dest.parent().filter(|p| !p.as_os_str().is_empty());
            let mut tmp = tempfile::Builder::new()
                .prefix(".mailark-sig.")
                .suffix(".part")
                .tempfile_in(dir.unwrap_or(Path::new(".")))?;
            tmp.write_all(pem.as_bytes())?;
            tmp.as_file().sync_all()?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = r {
            let _ = std::fs::remove_file(&self.dest);
            return Err(FinishError::Io(io::Error::new(
                e.kind(),
                format!("writing the signature {}: {e}", path.display()),
            )));
        }
        Ok(path)
    }
}

enum FinishError {
    Io(io::Error),
    Write(WriteError),
}

impl From<WriteError> for FinishError {
    fn from(e: WriteError) -> Self {
        FinishError::Write(e)
    }
}

impl From<io::Error> for FinishError {
    fn from(e: io::Error) -> Self {
        FinishError::Io(e)
    }
}

/// Copies exactly `len` bytes of `body` to `w`; returns their SHA-256.
fn copy_exact(body: &mut dyn Read, w: &mut impl Write, len: u64) -> io::Result<[u8; 32]> {
    let (n, sha) = crate::archive::copy_hashed(&mut body.take(len), w).map_err(|e| match e {
        crate::archive::CopyError::Read(e) | crate::archive::CopyError::Write(e) => e,
    })?;
    if n != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the message gave {n} of the {len} bytes announced"),
        ));
    }
    Ok(sha)
}

/// Writes one mbox entry: `from_line`, exactly `len` bytes of `body` mboxrd-quoted, a
/// final LF when the message lacks one, and the blank line. Returns the quoted length,
/// the message's SHA-256 and whether a final LF was added.
fn quote_exact(
    from_line: &str,
    body: &mut dyn Read,
    w: &mut impl Write,
    len: u64,
) -> io::Result<(u64, [u8; 32], bool)> {
    w.write_all(from_line.as_bytes())?;
    let mut q = mboxrd::Quoter::default();
    let mut out = QuotedCount { q: &mut q, w, n: 0 };
    let sha = copy_exact(body, &mut out, len)?;
    let mut n = out.n;
    let mut counted = CountOnly { w, n: 0 };
    q.finish(&mut counted)?;
    n += counted.n;
    let eol_added = q.last != Some(b'\n');
    if eol_added {
        w.write_all(b"\n")?;
    }
    w.write_all(b"\n")?;
    Ok((n, sha, eol_added))
}

/// Quotes what is written to it into `w`, counting the quoted bytes.
struct QuotedCount<'a, W> {
    q: &'a mut mboxrd::Quoter,
    w: &'a mut W,
    n: u64,
}

impl<W: Write> Write for QuotedCount<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut c = CountOnly {
            w: &mut *self.w,
            n: 0,
        };
        self.q.feed(buf, &mut c)?;
        self.n += c.n;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

struct CountOnly<'a, W> {
    w: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountOnly<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.w.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

fn new_encoder(
    sink: Sink,
    opts: &WriterOptions,
) -> io::Result<zstd::stream::write::Encoder<'static, Sink>> {
    let mut enc = zstd::stream::write::Encoder::new(sink, opts.level)?;
    if opts.threads > 0 {
        enc.multithread(opts.threads)?;
    }
    Ok(enc)
}

fn sync_parent_dir(path: &Path) {
    // The rename is only durable once the directory entry is; errors here cannot undo
    // a complete archive, so they are not fatal.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn readme(layout: Layout) -> String {
    let check = match layout {
        Layout::Maildir => "Check every message:   sha256sum -c SHA256SUMS\n",
        Layout::Mbox => "Messages are in mboxrd files under mbox/; index.jsonl gives each one's offset\nand length there (see the format spec).\n",
    };
    format!(
        "This is a mailark archive (format {FORMAT_NAME} v{FORMAT_VERSION}).\n\
         It is a tar stream compressed with zstd: extract it with  tar --zstd -xf FILE\n\n\
         index.jsonl  one JSON object per line: the archive, its folders, every message\n\
         {check}\
         Check the index:       head -n -1 index.jsonl | sha256sum   (equals the last line's index_sha256)\n\
         Maildir folders under maildir/ can be served by Dovecot as they are\n\
         (mail_location = maildir:DIR/maildir:LAYOUT=fs:UTF-8:INBOX=DIR/maildir/INBOX).\n"
    )
}
