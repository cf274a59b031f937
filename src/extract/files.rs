//! Files that appear under their final name only when whole: written under a temporary
//! name, registered as unfinished (Ctrl-C removes it), then linked into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{ioe, ExtractError};
use crate::interrupt::Unfinished;

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
    write_via(&part_name(path), path, data, mtime)
}

/// Delivers a message into a Maildir folder the way Maildir readers expect: written in
/// `tmp/`, then linked into `cur/`.
pub(crate) fn deliver_maildir(
    dir: &Path,
    name: &str,
    data: &[u8],
    mtime: Option<DateTime<Utc>>,
) -> Result<Written, ExtractError> {
    write_via(
        &dir.join("tmp").join(name),
        &dir.join("cur").join(name),
        data,
        mtime,
    )
}

fn part_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".mailark-part");
    path.with_file_name(name)
}

fn write_via(
    tmp: &Path,
    path: &Path,
    data: &[u8],
    mtime: Option<DateTime<Utc>>,
) -> Result<Written, ExtractError> {
    match fs::read(path) {
        Ok(old) if old == data => return Ok(Written::AlreadyThere),
        Ok(_) => {
            return Err(ExtractError::Exists {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ioe(path)(e)),
    }
    let _unfinished = Unfinished::new(tmp);
    let res = write_file(tmp, data, mtime)
        .map_err(ioe(path))
        .and_then(|()| place(tmp, path));
    if res.is_err() {
        let _ = fs::remove_file(tmp);
    }
    res.map(|()| Written::New)
}

fn write_file(tmp: &Path, data: &[u8], mtime: Option<DateTime<Utc>>) -> io::Result<()> {
    // The temporary name is ours: a leftover from a killed run is replaced.
    let mut f = File::create(tmp)?;
    f.write_all(data)?;
    if let Some(t) = mtime {
        // Dovecot takes INTERNALDATE from the file's mtime.
        let st =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64);
        f.set_modified(st)?;
    }
    Ok(())
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
        })
    }

    pub(crate) fn append(&mut self, data: &[u8]) -> Result<(), ExtractError> {
        let w = self.w.as_mut().expect("append after finish");
        w.write_all(data).map_err(ioe(&self.path))?;
        self.messages += 1;
        Ok(())
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
