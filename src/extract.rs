//! Extraction: archives (or a chain) → a Maildir++ tree a default Dovecot, Courier,
//! mbsync or mutt read as is, a Dovecot `LAYOUT=fs` tree, mboxrd files, or one `.eml`
//! per message. Output paths are built from the index, never from member names, so
//! nothing can be written outside the target.
//!
//! Every file appears under its final name only when it is whole: it is written under a
//! temporary name (registered with [`crate::interrupt::Unfinished`]) and linked into
//! place, and removed if writing fails. A file already there with the same bytes is kept
//! and counted (`already_present`), so a rerun after a failure completes the job; one
//! with other bytes is never overwritten.
//!
//! A message that cannot be read (its bytes fail the index SHA-256, its member is
//! missing, the archive data is damaged before it) is listed and the rest are extracted.

mod files;
mod layout;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::archive::reader::Member;
use crate::archive::{Archive, FolderRecord, MessageRecord, ReadError};
use crate::export::FolderFilter;
use crate::mail::flags;
use files::{write_whole, Copied, MboxOut, Written};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Maildir++: INBOX at the root, `.Folder.Sub` in modified UTF-7.
    Maildir(PathBuf),
    /// Dovecot `LAYOUT=fs:UTF-8` with INBOX in a subfolder; raw names keep their bytes.
    MaildirFs(PathBuf),
    Mbox(PathBuf),
    Eml(PathBuf),
}

const TARGETS: &str = "use maildir:DIR, maildir-fs:DIR, mbox:DIR or eml:DIR";

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, dir) = s
            .split_once(':')
            .ok_or_else(|| format!("bad target {s:?}: {TARGETS}"))?;
        let dir = PathBuf::from(dir);
        match kind {
            "maildir" => Ok(Target::Maildir(dir)),
            "maildir-fs" => Ok(Target::MaildirFs(dir)),
            "mbox" => Ok(Target::Mbox(dir)),
            "eml" => Ok(Target::Eml(dir)),
            _ => Err(format!("bad target {s:?}: {TARGETS}")),
        }
    }
}

impl Target {
    fn root(&self) -> &Path {
        match self {
            Target::Maildir(d) | Target::MaildirFs(d) | Target::Mbox(d) | Target::Eml(d) => d,
        }
    }

    /// The name the report gives the output layout.
    pub fn layout(&self) -> &'static str {
        match self {
            Target::Maildir(_) => "maildir++",
            Target::MaildirFs(_) => "maildir-fs",
            Target::Mbox(_) => "mbox",
            Target::Eml(_) => "eml",
        }
    }

    fn is_maildir(&self) -> bool {
        matches!(self, Target::Maildir(_) | Target::MaildirFs(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} already exists with other content; extraction never overwrites")]
    Exists { path: PathBuf },
}

/// A message the archive names but whose bytes could not be had.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    pub archive: String,
    pub folder: String,
    pub id: String,
    pub reason: String,
}

/// A folder of the archive and the directory (or mbox file) it was written to.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractedFolder {
    pub folder: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ExtractReport {
    /// `maildir++`, `maildir-fs`, `mbox` or `eml`.
    pub layout: &'static str,
    /// Messages written by this run.
    pub messages: u64,
    /// Messages whose file was already there with the same bytes (an earlier run).
    pub already_present: u64,
    pub bytes: u64,
    /// The folders written, each with where it went.
    pub folders: Vec<ExtractedFolder>,
    /// mbox output only: messages that gained a final LF (mbox cannot store their last byte).
    pub eol_added: u64,
    /// In JSON: `failed` (how many) and `failures` (each with why), as in every report.
    #[serde(flatten, serialize_with = "crate::json::count_and_list")]
    pub unreadable: Vec<Unreadable>,
}

pub(crate) fn ioe(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct OutFolder {
    dir: PathBuf,
    subscription: String,
    keywords: Vec<String>,
    mbox: Option<MboxOut>,
    /// Messages of the folder met so far, readable or not, so names stay the same on a
    /// rerun whatever was damaged.
    count: u64,
}

pub fn extract(
    archives: &[Archive],
    target: &Target,
    filter: &FolderFilter,
    progress: &crate::progress::Progress,
) -> Result<ExtractReport, ExtractError> {
    let root = target.root();
    fs::create_dir_all(root).map_err(ioe(root))?;
    let (mut outs, records) = plan_folders(archives, target, filter);
    collect_keywords(archives, &mut outs);
    make_folders(target, &records, &outs)?;
    let mut rep = ExtractReport {
        layout: target.layout(),
        folders: records
            .iter()
            .map(|f| ExtractedFolder {
                folder: f.name.clone(),
                path: outs[&f.name].dir.display().to_string(),
            })
            .collect(),
        ..Default::default()
    };
    for a in archives {
        extract_archive(a, target, &mut outs, &mut rep, progress)?;
    }
    for o in outs.values_mut() {
        if let Some(m) = o.mbox.take() {
            let n = m.messages;
            if m.finish()? == Written::AlreadyThere {
                rep.messages -= n;
                rep.already_present += n;
            }
        }
    }
    Ok(rep)
}

/// One output folder per folder name across the whole chain.
fn plan_folders<'a>(
    archives: &'a [Archive],
    target: &Target,
    filter: &FolderFilter,
) -> (HashMap<String, OutFolder>, Vec<&'a FolderRecord>) {
    let mut dirs = layout::Dirs::new(target, archives);
    let mut outs = HashMap::new();
    let mut records = Vec::new();
    for a in archives {
        for f in &a.index.folders {
            if !filter.matches(&f.name) || outs.contains_key(&f.name) {
                continue;
            }
            let place = dirs.allocate(f);
            outs.insert(
                f.name.clone(),
                OutFolder {
                    dir: target.root().join(place.rel),
                    subscription: place.subscription,
                    keywords: Vec::new(),
                    mbox: None,
                    count: 0,
                },
            );
            records.push(f);
        }
    }
    (outs, records)
}

/// Keyword letters must be known before the first file name is made.
fn collect_keywords(archives: &[Archive], outs: &mut HashMap<String, OutFolder>) {
    for a in archives {
        for m in a.index.messages.iter() {
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
}

fn make_folders(
    target: &Target,
    records: &[&FolderRecord],
    outs: &HashMap<String, OutFolder>,
) -> Result<(), ExtractError> {
    let mkdir = |d: &Path| fs::create_dir_all(d).map_err(ioe(d));
    for f in records {
        let o = &outs[&f.name];
        match target {
            Target::Maildir(_) | Target::MaildirFs(_) if f.selectable => {
                for sub in ["cur", "new", "tmp"] {
                    mkdir(&o.dir.join(sub))?;
                }
                if !o.keywords.is_empty() {
                    let text: String = o
                        .keywords
                        .iter()
                        .enumerate()
                        .map(|(i, k)| format!("{i} {k}\n"))
                        .collect();
                    write_whole(&o.dir.join("dovecot-keywords"), text.as_bytes(), None)?;
                }
            }
            // A Maildir++ parent exists through its children's names alone.
            Target::Maildir(_) => {}
            Target::MaildirFs(_) | Target::Eml(_) => mkdir(&o.dir)?,
            Target::Mbox(_) => {
                if let Some(parent) = o.dir.parent() {
                    mkdir(parent)?;
                }
            }
        }
    }
    if target.is_maildir() {
        // Dovecot reads its subscriptions from this file at the root of the tree.
        let subs: String = records
            .iter()
            .filter(|f| f.subscribed)
            .map(|f| format!("{}\n", outs[&f.name].subscription))
            .collect();
        if !subs.is_empty() {
            write_whole(&target.root().join("subscriptions"), subs.as_bytes(), None)?;
        }
    }
    Ok(())
}

fn extract_archive(
    a: &Archive,
    target: &Target,
    outs: &mut HashMap<String, OutFolder>,
    rep: &mut ExtractReport,
    progress: &crate::progress::Progress,
) -> Result<(), ExtractError> {
    progress.inc_length(a.index.end.message_bytes);
    let archive = a.path.display().to_string();
    let mut seen = vec![false; a.index.messages.len()];
    let mut seq = 0u64;
    let streamed = a.stream(|member| -> Result<(), ExtractError> {
        let (record, body) = match member {
            Member::Message { record, body } => (record, Ok(body)),
            Member::MboxDamaged { record, detail } => (record, Err(detail)),
            _ => return Ok(()),
        };
        let m = &a.index.messages.get(record);
        let Some(o) = outs.get_mut(&m.folder) else {
            seen[record] = true;
            return Ok(());
        };
        let mut body = match body {
            Ok(b) => b,
            Err(detail) => {
                seen[record] = true;
                o.count += 1;
                rep.unreadable.push(unreadable(&archive, m, &detail));
                return Ok(());
            }
        };
        seq += 1;
        o.count += 1;
        match write_message(target, o, m, &mut body, seq, rep)? {
            Copied::Done { written, len } => {
                progress.inc(len);
                rep.bytes += len;
                match written {
                    Written::New => rep.messages += 1,
                    Written::AlreadyThere => rep.already_present += 1,
                }
            }
            Copied::Damaged => {
                rep.unreadable
                    .push(unreadable(&archive, m, "does not match its index SHA-256"))
            }
            // The archive data failed under it: the stream ends with that damage, and
            // this message is listed with what was not reached.
            Copied::Unread => return Ok(()),
        }
        seen[record] = true;
        Ok(())
    });
    // Damaged archive data ends the stream; what was not reached yet is unreadable.
    let cut = match streamed {
        Ok(_) => None,
        Err(ExtractError::Read(ReadError::Data {
            members, detail, ..
        })) => Some(format!(
            "the archive data is damaged after {members} members ({detail})"
        )),
        Err(e) => return Err(e),
    };
    for (i, m) in a.index.messages.iter().enumerate() {
        if seen[i] || !outs.contains_key(&m.folder) {
            continue;
        }
        let why = match &cut {
            Some(e) => format!("not reached: {e}"),
            None => format!("member {} is missing from the archive", m.path),
        };
        rep.unreadable.push(unreadable(&archive, &m, &why));
    }
    Ok(())
}

fn unreadable(archive: &str, m: &MessageRecord, reason: &str) -> Unreadable {
    Unreadable {
        archive: archive.to_string(),
        folder: m.folder.clone(),
        id: crate::verify::message_identity(m),
        reason: reason.to_string(),
    }
}

fn internaldate(m: &MessageRecord) -> Option<DateTime<Utc>> {
    m.internaldate
        .as_deref()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&Utc))
}

/// Writes one message where the target wants it, streaming its bytes from the archive.
fn write_message(
    target: &Target,
    o: &mut OutFolder,
    m: &MessageRecord,
    body: &mut dyn io::Read,
    seq: u64,
    rep: &mut ExtractReport,
) -> Result<Copied, ExtractError> {
    let when = internaldate(m);
    match target {
        Target::Maildir(_) | Target::MaildirFs(_) => {
            let info = flags::maildir_info(&m.flags, &o.keywords);
            let t = when.map_or(0, |w| w.timestamp().max(0));
            let name = format!("{t}.M{seq}C{}.mailark:2,{info}", o.count);
            files::deliver_maildir(&o.dir, &name, body, &m.sha256, when)
        }
        Target::Eml(_) => files::stream_whole(
            &o.dir.join(format!("{:06}.eml", o.count)),
            body,
            &m.sha256,
            when,
        ),
        Target::Mbox(_) => {
            if o.mbox.is_none() {
                o.mbox = Some(MboxOut::create(&o.dir)?);
            }
            let from = format!(
                "From MAILER-DAEMON {}\n",
                when.unwrap_or_default().format("%a %b %e %H:%M:%S %Y")
            );
            let mbox = o.mbox.as_mut().expect("created above");
            let (copied, eol_added) = mbox.append_message(from.as_bytes(), body, &m.sha256)?;
            if eol_added {
                rep.eol_added += 1;
            }
            Ok(copied)
        }
    }
}
