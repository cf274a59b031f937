//! The export workflow: a source's folders and messages → one archive, with a
//! per-folder account of what the source reported, what was archived and what was
//! skipped and why. Reading runs on its own thread so the disk never waits on zstd.

pub mod imap;
mod pending;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use serde::Serialize;

use crate::archive::{
    ArchiveWriter, FolderInfo, MessageInfo, WriteError, WriteSummary, WriterOptions,
};
use crate::mail::glob::Glob;
use crate::progress::Progress;
use crate::source::local::LocalSource;

pub mod pop3;
mod spool;

pub use crate::mail::glob::PatternError;

/// `--folder` / `--exclude` over UTF-8 folder names, in the dialect of `mail::glob`
/// (`*` also crosses levels). It remembers which patterns matched some folder, so a
/// pattern that matched none can be reported after the run.
#[derive(Debug, Clone, Default)]
pub struct FolderFilter {
    include: Vec<Glob>,
    exclude: Vec<Glob>,
    /// One per pattern, include then exclude; shared by clones (the reader thread's).
    hit: Arc<Vec<AtomicBool>>,
}

impl FolderFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<FolderFilter, PatternError> {
        let compile = |v: &[String]| {
            v.iter()
                .map(|p| Glob::new(p))
                .collect::<Result<Vec<_>, _>>()
        };
        let (include, exclude) = (compile(include)?, compile(exclude)?);
        let hit = (0..include.len() + exclude.len())
            .map(|_| AtomicBool::new(false))
            .collect();
        Ok(FolderFilter {
            include,
            exclude,
            hit: Arc::new(hit),
        })
    }

    /// Whether `glob` (pattern `i` of the filter) matches, noting a match.
    fn test(&self, i: usize, glob: &Glob, folder: &str) -> bool {
        let yes = glob.is_match(folder);
        if yes {
            self.hit[i].store(true, Ordering::Relaxed);
        }
        yes
    }

    pub fn matches(&self, folder: &str) -> bool {
        // Every pattern is tried, not just up to the first match, so each one's use is known.
        let n = self.include.len();
        let inc = self
            .include
            .iter()
            .enumerate()
            .fold(self.include.is_empty(), |acc, (i, g)| {
                self.test(i, g, folder) | acc
            });
        let exc = self
            .exclude
            .iter()
            .enumerate()
            .fold(false, |acc, (i, g)| self.test(n + i, g, folder) | acc);
        inc && !exc
    }

    /// The patterns that have matched no folder so far, as the flags that gave them
    /// (`--folder "x"`).
    pub fn unmatched(&self) -> Vec<String> {
        let flags = self.include.iter().map(|g| ("--folder", g));
        let flags = flags.chain(self.exclude.iter().map(|g| ("--exclude", g)));
        flags
            .zip(self.hit.iter())
            .filter(|(_, hit)| !hit.load(Ordering::Relaxed))
            .map(|((flag, g), _)| format!("{flag} {:?}", g.as_str()))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    /// The message's identity at the source.
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct FolderReport {
    pub folder: String,
    /// What the source said the folder held.
    pub source_count: Option<u64>,
    pub archived: u64,
    pub bytes: u64,
    /// Messages not archived. In JSON: `failed` (how many) and `failures` (each with
    /// why), as in every report.
    #[serde(flatten, serialize_with = "crate::json::count_and_list")]
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub archive: String,
    pub archive_id: String,
    pub index_sha256: String,
    pub source: String,
    pub messages: u64,
    /// Bytes of mail archived (`bytes` in JSON, as in every report).
    #[serde(rename = "bytes")]
    pub message_bytes: u64,
    pub file_bytes: u64,
    pub folders: Vec<FolderReport>,
}

impl ExportReport {
    pub fn skipped(&self) -> usize {
        self.folders.iter().map(|f| f.skipped.len()).sum()
    }

    /// Archived differs from what the source reported in some folder.
    pub fn count_mismatches(&self) -> Vec<&FolderReport> {
        self.folders
            .iter()
            .filter(|f| {
                f.source_count
                    .is_some_and(|c| c != f.archived + f.skipped.len() as u64)
            })
            .collect()
    }

    fn from_summary(s: WriteSummary, source: String, folders: Vec<FolderReport>) -> ExportReport {
        ExportReport {
            archive: s.path.display().to_string(),
            archive_id: s.archive_id,
            index_sha256: s.index_sha256,
            source,
            messages: s.messages,
            message_bytes: s.message_bytes,
            file_bytes: s.file_bytes,
            folders,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Source(#[from] crate::source::local::LocalError),
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("no folder matches the --folder/--exclude patterns")]
    NoFolders,
}

enum Item {
    Folder(FolderInfo),
    Message(MessageInfo, Vec<u8>),
    Skip(String, Skipped),
}

fn chosen_folders(src: &(dyn LocalSource + Sync), filter: &FolderFilter) -> Vec<FolderInfo> {
    let all = src.folders().into_iter();
    all.filter(|f| filter.matches(&f.name)).collect()
}

/// The bytes [`export_local`] will read: the progress bar's total. Only the chosen
/// folders count, or a bar for two folders of three would stop at 67 %.
pub fn bytes_to_read(src: &(dyn LocalSource + Sync), filter: &FolderFilter) -> u64 {
    let chosen = chosen_folders(src, filter);
    chosen.iter().map(|f| src.folder_bytes(&f.name)).sum()
}

/// Exports a local source into `dest`.
pub fn export_local(
    src: &(dyn LocalSource + Sync),
    dest: &Path,
    mut wopts: WriterOptions,
    filter: &FolderFilter,
    progress: &Progress,
) -> Result<ExportReport, ExportError> {
    wopts.source = src.describe();
    let folders = chosen_folders(src, filter);
    if folders.is_empty() {
        return Err(ExportError::NoFolders);
    }
    let mut writer = ArchiveWriter::create(dest, wopts)?;
    let mut reports: Vec<FolderReport> = folders
        .iter()
        .map(|f| FolderReport {
            folder: f.name.clone(),
            source_count: f.source_count,
            ..Default::default()
        })
        .collect();
    // A bounded queue: memory holds at most a few messages in flight.
    let (tx, rx) = mpsc::sync_channel::<Item>(16);
    let result: Result<(), ExportError> = std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<(), WriteError> {
            for f in &folders {
                if tx.send(Item::Folder(f.clone())).is_err() {
                    return Ok(());
                }
                src.messages(&f.name, &mut |item| {
                    let msg = match item {
                        Ok((info, bytes)) => Item::Message(info, bytes),
                        Err(e) => Item::Skip(
                            f.name.clone(),
                            Skipped {
                                id: f.name.clone(),
                                reason: e.to_string(),
                            },
                        ),
                    };
                    // A closed channel means the writer failed and reports why; stop reading.
                    tx.send(msg).map_err(|_| WriteError::Io {
                        path: dest.to_path_buf(),
                        source: std::io::Error::other("archive writer stopped"),
                    })
                })?;
            }
            Ok(())
        });
        for item in rx {
            match item {
                Item::Folder(f) => {
                    crate::log::event!(
                        "{}: reading {} message(s)",
                        f.name,
                        f.source_count.map_or("?".into(), |n| n.to_string())
                    );
                    progress.set_message(f.name.clone());
                    writer.add_folder(f)?;
                }
                Item::Message(info, bytes) => {
                    let n = bytes.len() as u64;
                    let folder = info.folder.clone();
                    writer.add_message(info, &bytes)?;
                    if let Some(r) = reports.iter_mut().find(|r| r.folder == folder) {
                        r.archived += 1;
                        r.bytes += n;
                    }
                    progress.inc(n);
                }
                Item::Skip(folder, sk) => {
                    if let Some(r) = reports.iter_mut().find(|r| r.folder == folder) {
                        r.skipped.push(sk);
                    }
                }
            }
        }
        reader.join().expect("source reader thread panicked")?;
        Ok(())
    });
    result?;
    progress.finish();
    let summary = writer.finish()?;
    Ok(ExportReport::from_summary(summary, src.describe(), reports))
}
