//! Extraction: archives (or a chain) → a Maildir tree Dovecot can serve as is, mboxrd
//! files, or one `.eml` per message. Output paths are built from the index by
//! `archive::names`, never from member names, so nothing can be written outside the
//! target; existing files are never overwritten.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::archive::names::{split_raw, DirAllocator};
use crate::archive::reader::Member;
use crate::archive::{Archive, FolderRecord, MessageRecord, ReadError};
use crate::export::FolderFilter;
use crate::mail::{flags, mboxrd};
use std::os::unix::ffi::OsStrExt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Maildir(PathBuf),
    Mbox(PathBuf),
    Eml(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, dir) = s
            .split_once(':')
            .ok_or_else(|| format!("bad target {s:?}: use maildir:DIR, mbox:DIR or eml:DIR"))?;
        let dir = PathBuf::from(dir);
        match kind {
            "maildir" => Ok(Target::Maildir(dir)),
            "mbox" => Ok(Target::Mbox(dir)),
            "eml" => Ok(Target::Eml(dir)),
            _ => Err(format!(
                "bad target {s:?}: use maildir:DIR, mbox:DIR or eml:DIR"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} already exists; extraction never overwrites")]
    Exists { path: PathBuf },
    #[error(
        "{archive}: message {id} does not match its index SHA-256; nothing damaged is extracted"
    )]
    Damaged { archive: String, id: String },
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ExtractReport {
    pub messages: u64,
    pub bytes: u64,
    pub folders: u64,
    /// mbox output only: messages that gained a final LF (mbox cannot store their last byte).
    pub eol_added: u64,
}

fn ioe(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct OutFolder {
    dir: PathBuf,
    keywords: Vec<String>,
    mbox: Option<BufWriter<File>>,
    count: u64,
}

pub fn extract(
    archives: &[Archive],
    target: &Target,
    filter: &FolderFilter,
    progress: &crate::progress::Progress,
) -> Result<ExtractReport, ExtractError> {
    let (root, suffix) = match target {
        Target::Maildir(d) | Target::Eml(d) => (d, ""),
        Target::Mbox(d) => (d, ".sbd"),
    };
    fs::create_dir_all(root).map_err(ioe(root))?;
    // One output folder per folder name across the whole chain.
    let mut alloc = DirAllocator::default();
    let mut outs: HashMap<String, OutFolder> = HashMap::new();
    let mut records: Vec<&FolderRecord> = Vec::new();
    for a in archives {
        for f in &a.index.folders {
            if !filter.matches(&f.name) || outs.contains_key(&f.name) {
                continue;
            }
            let delimiter = f.delimiter.as_deref().and_then(|d| d.chars().next());
            // A name that was not UTF-8 at the source goes back as the bytes it had.
            let rel = match f.raw_name_hex.as_deref().and_then(|h| hex::decode(h).ok()) {
                Some(raw) => alloc.allocate_raw(&split_raw(&raw, delimiter), suffix),
                None => alloc.allocate(&f.name, delimiter, suffix).into_bytes(),
            };
            let dir = root.join(std::ffi::OsStr::from_bytes(&rel));
            outs.insert(
                f.name.clone(),
                OutFolder {
                    dir,
                    keywords: Vec::new(),
                    mbox: None,
                    count: 0,
                },
            );
            records.push(f);
        }
    }
    // Keyword letters must be known before the first file name is made.
    for a in archives {
        for m in &a.index.messages {
            if let Some(o) = outs.get_mut(&m.folder) {
                for fl in &m.flags {
                    if !flags::is_system(fl)
                        && flags::letter_of(fl).is_none()
                        && !o.keywords.contains(fl)
                    {
                        o.keywords.push(fl.clone());
                    }
                }
            }
        }
    }
    for f in &records {
        let o = &outs[&f.name];
        match target {
            Target::Maildir(_) => {
                if f.selectable {
                    for sub in ["cur", "new", "tmp"] {
                        let d = o.dir.join(sub);
                        fs::create_dir_all(&d).map_err(ioe(&d))?;
                    }
                    if !o.keywords.is_empty() {
                        let p = o.dir.join("dovecot-keywords");
                        let text: String = o
                            .keywords
                            .iter()
                            .enumerate()
                            .map(|(i, k)| format!("{i} {k}\n"))
                            .collect();
                        write_new(&p, text.as_bytes(), None)?;
                    }
                } else {
                    fs::create_dir_all(&o.dir).map_err(ioe(&o.dir))?;
                }
            }
            Target::Eml(_) => fs::create_dir_all(&o.dir).map_err(ioe(&o.dir))?,
            Target::Mbox(_) => {
                if let Some(parent) = o.dir.parent() {
                    fs::create_dir_all(parent).map_err(ioe(parent))?;
                }
            }
        }
    }
    if let Target::Maildir(_) = target {
        // Dovecot reads its subscriptions from this file at the root of the tree.
        let subs: String = records
            .iter()
            .filter(|f| f.subscribed)
            .map(|f| format!("{}\n", f.name))
            .collect();
        let p = root.join("subscriptions");
        if !subs.is_empty() && !p.exists() {
            write_new(&p, subs.as_bytes(), None)?;
        }
    }
    let mut rep = ExtractReport {
        folders: records.len() as u64,
        ..Default::default()
    };
    for a in archives {
        progress.inc_length(a.index.end.message_bytes);
        let mut seq = 0u64;
        a.stream(|member| -> Result<(), ExtractError> {
            let Member::Message { record, bytes } = member else {
                return Ok(());
            };
            let m = &a.index.messages[record];
            let Some(o) = outs.get_mut(&m.folder) else {
                return Ok(());
            };
            if crate::archive::sha256_hex(bytes) != m.sha256 {
                return Err(ExtractError::Damaged {
                    archive: a.path.display().to_string(),
                    id: crate::verify::message_identity(m),
                });
            }
            seq += 1;
            o.count += 1;
            rep.messages += 1;
            rep.bytes += bytes.len() as u64;
            progress.inc(bytes.len() as u64);
            write_message(target, o, m, bytes, seq, &mut rep)
        })?;
    }
    for o in outs.values_mut() {
        if let Some(w) = o.mbox.take() {
            let f = w.into_inner().map_err(|e| ExtractError::Io {
                path: o.dir.clone(),
                source: e.into_error(),
            })?;
            f.sync_all().map_err(ioe(&o.dir))?;
        }
    }
    Ok(rep)
}

fn internaldate(m: &MessageRecord) -> Option<DateTime<Utc>> {
    m.internaldate
        .as_deref()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&Utc))
}

fn write_message(
    target: &Target,
    o: &mut OutFolder,
    m: &MessageRecord,
    bytes: &[u8],
    seq: u64,
    rep: &mut ExtractReport,
) -> Result<(), ExtractError> {
    let when = internaldate(m);
    match target {
        Target::Maildir(_) => {
            let info = flags::maildir_info(&m.flags, &o.keywords);
            let t = when.map_or(0, |w| w.timestamp().max(0));
            let name = format!("{t}.M{seq}C{}.mailark:2,{info}", o.count);
            // Deliver through tmp/ as Maildir readers expect: a file appears in cur/ whole.
            let tmp = o.dir.join("tmp").join(&name);
            let cur = o.dir.join("cur").join(&name);
            if cur.exists() {
                return Err(ExtractError::Exists { path: cur });
            }
            let _unfinished = crate::interrupt::Unfinished::new(&tmp);
            write_new(&tmp, bytes, when)?;
            fs::rename(&tmp, &cur).map_err(ioe(&cur))?;
        }
        Target::Eml(_) => {
            let p = o.dir.join(format!("{:06}.eml", o.count));
            write_new(&p, bytes, when)?;
        }
        Target::Mbox(_) => {
            if o.mbox.is_none() {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&o.dir)
                    .map_err(|e| {
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            ExtractError::Exists {
                                path: o.dir.clone(),
                            }
                        } else {
                            ExtractError::Io {
                                path: o.dir.clone(),
                                source: e,
                            }
                        }
                    })?;
                o.mbox = Some(BufWriter::new(f));
            }
            let w = o.mbox.as_mut().unwrap();
            let from = format!(
                "From MAILER-DAEMON {}\n",
                when.unwrap_or_default().format("%a %b %e %H:%M:%S %Y")
            );
            let mut out = from.into_bytes();
            mboxrd::quote_into(bytes, &mut out);
            if !bytes.ends_with(b"\n") {
                out.push(b'\n');
                rep.eol_added += 1;
            }
            out.push(b'\n');
            w.write_all(&out).map_err(ioe(&o.dir))?;
        }
    }
    Ok(())
}

fn write_new(path: &Path, data: &[u8], mtime: Option<DateTime<Utc>>) -> Result<(), ExtractError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                ExtractError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                ExtractError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
    f.write_all(data).map_err(ioe(path))?;
    if let Some(t) = mtime {
        // Dovecot takes INTERNALDATE from the file's mtime.
        let st =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64);
        f.set_modified(st).map_err(ioe(path))?;
    }
    Ok(())
}
