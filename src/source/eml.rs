//! `eml:DIR`: mail that is already a folder tree of `.eml` files (Outlook and Windows
//! Mail drag-outs, webmail "download" buttons, many hand-offs). Each directory holding
//! `.eml` files is a folder named by its path below DIR (`/` levels); files directly in
//! DIR are INBOX. A file is one message, its bytes as they are. INTERNALDATE is the
//! delivery time the message itself records (topmost `Received:`, else `Date:`), else
//! the file's mtime, which a drag-out sets to the time of the drag.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, Utc};

use super::local::{guess_special_use, io_err, LocalError, LocalSource};
use crate::archive::names::{distinct_names, split_raw, SourceName};
use crate::archive::{FolderInfo, MessageInfo, SourceRef, WriteError};
use crate::mail::headers::delivery_date;

/// Message files of one folder: path and size.
type Files = Vec<(PathBuf, u64)>;

struct Folder {
    info: FolderInfo,
    files: Files,
}

pub struct EmlSource {
    root: PathBuf,
    folders: Vec<Folder>,
}

fn is_eml(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"eml"))
}

impl EmlSource {
    pub fn open(root: &Path) -> Result<EmlSource, LocalError> {
        let meta = fs::metadata(root).map_err(io_err(root))?;
        if !meta.is_dir() {
            return Err(LocalError::NoEml {
                path: root.display().to_string(),
            });
        }
        // (raw name, files) per directory holding .eml files, in name order.
        let mut found: Vec<(Vec<u8>, Files)> = Vec::new();
        for e in walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
        {
            let e = e.map_err(|e| LocalError::Io {
                path: root.display().to_string(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("walk failed")),
            })?;
            if !e.file_type().is_file() || !is_eml(e.path()) {
                continue;
            }
            let dir = e.path().parent().unwrap_or(root);
            let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
            let raw = if rel.as_os_str().is_empty() {
                b"INBOX".to_vec()
            } else {
                rel.as_os_str().as_bytes().to_vec()
            };
            let size = e.metadata().map_or(0, |m| m.len());
            match found.iter_mut().find(|(r, _)| *r == raw) {
                Some((_, files)) => files.push((e.path().to_path_buf(), size)),
                None => found.push((raw, vec![(e.path().to_path_buf(), size)])),
            }
        }
        if found.is_empty() {
            return Err(LocalError::NoEml {
                path: root.display().to_string(),
            });
        }
        let names = distinct_names(
            &found
                .iter()
                .map(|(raw, _)| {
                    let raw = split_raw(raw, Some('/'));
                    SourceName {
                        decoded: raw.iter().map(|l| crate::text::display_bytes(l)).collect(),
                        raw,
                        delimiter: Some('/'),
                    }
                })
                .collect::<Vec<_>>(),
        );
        let folders = found
            .into_iter()
            .zip(names)
            .map(|((raw, files), name)| Folder {
                info: FolderInfo {
                    special_use: guess_special_use(&name, Some('/')),
                    source_count: Some(files.len() as u64),
                    raw_name: String::from_utf8_lossy(&raw).into_owned(),
                    raw_bytes: std::str::from_utf8(&raw).is_err().then(|| raw.clone()),
                    ..FolderInfo::simple(&name, Some('/'))
                },
                files,
            })
            .collect();
        Ok(EmlSource {
            root: root.to_path_buf(),
            folders,
        })
    }
}

impl LocalSource for EmlSource {
    fn describe(&self) -> String {
        let abs = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("eml:{}", abs.display())
    }

    fn folders(&self) -> Vec<FolderInfo> {
        self.folders.iter().map(|f| f.info.clone()).collect()
    }

    fn folder_bytes(&self, folder: &str) -> u64 {
        let f = self.folders.iter().find(|f| f.info.name == folder);
        f.map_or(0, |f| f.files.iter().map(|(_, n)| n).sum())
    }

    fn messages(
        &self,
        folder: &str,
        each: &mut super::local::MessageSink<'_>,
    ) -> Result<(), WriteError> {
        let Some(f) = self.folders.iter().find(|f| f.info.name == folder) else {
            return Ok(());
        };
        for (path, _) in &f.files {
            let item = (|| {
                let bytes = fs::read(path).map_err(io_err(path))?;
                let mtime = fs::metadata(path).ok().and_then(|m| m.modified().ok());
                let internaldate = delivery_date(&bytes).or_else(|| {
                    mtime.map(|t| {
                        DateTime::<Utc>::from(t).with_timezone(&FixedOffset::east_opt(0).unwrap())
                    })
                });
                let rel = path
                    .strip_prefix(&self.root)
                    .unwrap_or(path)
                    .to_string_lossy()
                    .into_owned();
                Ok((
                    MessageInfo {
                        folder: folder.to_string(),
                        flags: vec!["\\Seen".to_string()],
                        internaldate,
                        source: SourceRef::Local { path: rel },
                        source_size: Some(bytes.len() as u64),
                    },
                    bytes,
                ))
            })();
            each(item)?;
        }
        Ok(())
    }
}
