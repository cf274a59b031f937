//! Files that appear under their final name only when whole: written under a temporary
//! name, registered as unfinished (Ctrl-C removes it), then linked into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{ioe, ExtractError};
use crate::archive::{copy_hashed, CopyError};
use crate::interrupt::Unfinished;
use crate::mail::mboxrd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    New,
    /// An identical file was already there (an earlier run wrote it).
    AlreadyThere,
}

/// Writes `data` to `path` through `path.mailark-part`.
pub(crate) fn write_whole(
    path: &Path,
    data: &[u8],
    mtime: Option<DateTime<Utc>>,
) -> Result<Written, ExtractError> {
    match write_via(&part_name(path), path, &mut &data[..], None, mtime)? {
        Copied::Done { written, .. } => Ok(written),
        // Nothing is checked and a slice cannot fail to read.
        Copied::Damaged | Copied::Unread => unreachable!("a slice reads whole"),
    }
}

/// Streams a message to `path` through `path.mailark-part`, checking it against
/// `want` (its index SHA-256) as it goes.
pub(crate) fn stream_whole(
    path: &Path,
    body: &mut dyn Read,
    want: &str,
    mtime: Option<DateTime<Utc>>,
) -> Result<Copied, ExtractError> {
    write_via(&part_name(path), path, body, Some(want), mtime)
}

/// Delivers a message into a Maildir folder the way Maildir readers expect: written in
/// `tmp/`, then linked into `cur/`.
pub(crate) fn deliver_maildir(
    dir: &Path,
    name: &str,
    body: &mut dyn Read,
    want: &str,
    mtime: Option<DateTime<Utc>>,
) -> Result<Copied, ExtractError> {
    write_via(
        &dir.join("tmp").join(name),
        &dir.join("cur").join(name),
        body,
        Some(want),
        mtime,
    )
}

/// What became of a message streamed out of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copied {
    Done {
        written: Written,
        len: u64,
    },
    /// Its bytes do not match the index SHA-256: nothing was kept.
    Damaged,
    /// The archive data failed under it (the stream reports the damage).
    Unread,
}

fn part_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".mailark-part");
    path.with_file_name(name)
}

/// Writes `body` to `tmp` (checking it against `want`), then gives it its final name
/// unless a file with the same bytes is there already; `tmp` never outlives the call.
fn write_via(
    tmp: &Path,
    path: &Path,
    body: &mut dyn Read,
    want: Option<&str>,
    mtime: Option<DateTime<Utc>>,
) -> Result<Copied, ExtractError> {
    let _unfinished = Unfinished::new(tmp);
    let res = write_checked(tmp, path, body, want, mtime);
    // Placed or not, the temporary name goes (a placed file is already gone from it).
    let _ = fs::remove_file(tmp);
    res
}

fn write_checked(
    tmp: &Path,
    path: &Path,
    body: &mut dyn Read,
    want: Option<&str>,
    mtime: Option<DateTime<Utc>>,
) -> Result<Copied, ExtractError> {
    // The temporary name is ours: a leftover from a killed run is replaced.
    let mut f = File::create(tmp).map_err(ioe(path))?;
    let (len, sha) = match copy_hashed(body, &mut f) {
        Ok(v) => v,
        Err(CopyError::Read(_)) => return Ok(Copied::Unread),
        Err(CopyError::Write(e)) => return Err(ioe(path)(e)),
    };
    if want.is_some_and(|w| hex::encode(sha) != w) {
        return Ok(Copied::Damaged);
    }
    if let Some(t) = mtime {
        // Dovecot takes INTERNALDATE from the file's mtime.
        let st =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64);
        f.set_modified(st).map_err(ioe(path))?;
    }
    drop(f);
    let written = match fs::symlink_metadata(path) {
        Ok(_) if same_content(tmp, path).map_err(ioe(path))? => Written::AlreadyThere,
        Ok(_) => {
            return Err(ExtractError::Exists {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            place(tmp, path)?;
            Written::New
        }
        Err(e) => return Err(ioe(path)(e)),
    };
    Ok(Copied::Done { written, len })
}

/// Moves a whole file to its final name without ever replacing one: a link refuses an
/// existing name where a rename would overwrite it.
fn place(tmp: &Path, path: &Path) -> Result<(), ExtractError> {
    match fs::hard_link(tmp, path) {
        Ok(()) => fs::remove_file(tmp).map_err(ioe(tmp)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(ExtractError::Exists {
            path: path.to_path_buf(),
        }),
        // A file system without hard links: rename, having checked the name is free.
        Err(_) if !path.exists() => fs::rename(tmp, path).map_err(ioe(path)),
        Err(e) => Err(ioe(path)(e)),
    }
}

/// One mbox file being written; removed unless [`finish`](MboxOut::finish) placed it.
pub(crate) struct MboxOut {
    path: PathBuf,
    tmp: PathBuf,
    w: Option<BufWriter<File>>,
    _unfinished: Unfinished,
    pub(crate) messages: u64,
    /// Bytes written so far: where a message that turns out damaged is cut off again.
    len: u64,
}

impl MboxOut {
    pub(crate) fn create(path: &Path) -> Result<MboxOut, ExtractError> {
        let tmp = part_name(path);
        let unfinished = Unfinished::new(&tmp);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(ioe(path))?;
        Ok(MboxOut {
            path: path.to_path_buf(),
            tmp,
            w: Some(BufWriter::new(f)),
            _unfinished: unfinished,
            messages: 0,
            len: 0,
        })
    }

    /// Appends one message: the `from` line, `body` mboxrd-quoted as it streams (checked
    /// against `want`, its index SHA-256), a final LF if it lacks one, and the blank
    /// line. A message that fails the check or cannot be read is taken off again.
    /// Returns what became of it and whether a final LF was added.
    pub(crate) fn append_message(
        &mut self,
        from: &[u8],
        body: &mut dyn Read,
        want: &str,
    ) -> Result<(Copied, bool), ExtractError> {
        let start = self.len;
        let w = self.w.as_mut().expect("append after finish");
        let mut out = Counted { w, n: 0 };
        let res = quote_checked(from, body, &mut out);
        let n = out.n;
        let (len, sha, eol) = match res {
            Ok(v) => v,
            Err(CopyError::Write(e)) => return Err(ioe(&self.path)(e)),
            Err(CopyError::Read(_)) => {
                self.cut(start)?;
                return Ok((Copied::Unread, false));
            }
        };
        if hex::encode(sha) != want {
            self.cut(start)?;
            return Ok((Copied::Damaged, false));
        }
        self.len = start + n;
        self.messages += 1;
        let written = Written::New;
        Ok((Copied::Done { written, len }, eol))
    }

    /// Takes the file back to `len` bytes.
    fn cut(&mut self, len: u64) -> Result<(), ExtractError> {
        let w = self.w.as_mut().expect("cut before finish");
        let res = w.flush().and_then(|()| {
            let f = w.get_mut();
            f.set_len(len)?;
            f.seek(SeekFrom::Start(len)).map(|_| ())
        });
        res.map_err(ioe(&self.path))
    }

    pub(crate) fn finish(mut self) -> Result<Written, ExtractError> {
        let w = self.w.take().expect("finish once");
        let f = w
            .into_inner()
            .map_err(|e| ioe(&self.path)(e.into_error()))?;
        f.sync_all().map_err(ioe(&self.path))?;
        drop(f);
        if self.path.exists() {
            if same_content(&self.tmp, &self.path).map_err(ioe(&self.path))? {
                return Ok(Written::AlreadyThere);
            }
            return Err(ExtractError::Exists {
                path: self.path.clone(),
            });
        }
        place(&self.tmp, &self.path)?;
        Ok(Written::New)
    }
}

impl Drop for MboxOut {
    fn drop(&mut self) {
        // Placed files are gone from the temporary name; anything else is unfinished.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Counts what goes through to `w`.
struct Counted<'a, W> {
    w: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.w.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Writes one mbox entry for `body` to `out`; returns the message's length and
/// SHA-256 and whether a final LF was added.
fn quote_checked(
    from: &[u8],
    body: &mut dyn Read,
    out: &mut impl Write,
) -> Result<(u64, [u8; 32], bool), CopyError> {
    out.write_all(from).map_err(CopyError::Write)?;
    let mut q = mboxrd::Quoter::default();
    let mut quoting = QuoteWriter { q: &mut q, out };
    let (len, sha) = copy_hashed(body, &mut quoting)?;
    q.finish(out).map_err(CopyError::Write)?;
    let eol = q.last != Some(b'\n');
    let tail: &[u8] = if eol { b"\n\n" } else { b"\n" };
    out.write_all(tail).map_err(CopyError::Write)?;
    Ok((len, sha, eol))
}

/// Quotes what is written to it into `out`.
struct QuoteWriter<'a, W> {
    q: &'a mut mboxrd::Quoter,
    out: &'a mut W,
}

impl<W: Write> Write for QuoteWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.q.feed(buf, self.out)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}
