//! `maildir:PATH` — a single Maildir, a Maildir++ tree (`.Folder.Sub`) or a Dovecot
//! `LAYOUT=fs` tree. Flags come from `:2,` names, keywords from `dovecot-keywords`,
//! INTERNALDATE from the file's mtime (as Dovecot does); `new/` messages are unseen.
//! Nothing here writes to the source.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, Utc};

use super::local::{guess_special_use, io_err, LocalError, LocalSource};
use crate::archive::names::{distinct_names, split_raw, SourceName};
use crate::archive::{FolderInfo, MessageInfo, SourceRef, WriteError};
use crate::mail::flags;
use std::os::unix::ffi::OsStrExt;

#[derive(Debug, Clone)]
struct Folder {
    info: FolderInfo,
    dir: PathBuf,
    bytes: u64,
}

pub struct MaildirSource {
    root: PathBuf,
    folders: Vec<Folder>,
}

fn is_maildir(p: &Path) -> bool {
    p.join("cur").is_dir()
}

/// One level of a folder name on disk, for people. Levels are modified UTF-7 unless
/// Dovecot's `UTF-8` option was used, and old hosts wrote Latin-1: decode only what is
/// valid modified UTF-7 and differs from the raw level; show the rest as UTF-8 or, when
/// it is not UTF-8, as Latin-1.
fn decode_level(raw: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(raw) {
        if s.contains('&') {
            if let Ok(d) = crate::mail::utf7::decode(s) {
                return d;
            }
        }
    }
    crate::text::display_bytes(raw)
}

impl MaildirSource {
    pub fn open(root: &Path) -> Result<MaildirSource, LocalError> {
        let root_s = root.display().to_string();
        let meta = fs::metadata(root).map_err(io_err(root))?;
        if !meta.is_dir() {
            return Err(LocalError::NotMaildir { path: root_s });
        }
        let subscriptions = read_subscriptions(root);
        // Names are bytes: a folder whose name is not UTF-8 is still a folder.
        let mut found: Vec<(Vec<u8>, Option<char>, PathBuf)> = Vec::new();
        let mut dotted: Vec<PathBuf> = fs::read_dir(root)
            .map_err(io_err(root))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| n.as_bytes())
                    .is_some_and(|n| n.starts_with(b".") && n.len() > 1 && n != b"..")
                    && is_maildir(p)
            })
            .collect();
        dotted.sort();
        if !dotted.is_empty() && is_maildir(root) {
            // Maildir++: INBOX is the root, every other folder a `.A.B` directory beside it.
            found.push((b"INBOX".to_vec(), Some('.'), root.to_path_buf()));
            for p in dotted {
                let raw = p.file_name().unwrap().as_bytes()[1..].to_vec();
                found.push((raw, Some('.'), p));
            }
        } else {
            // A plain Maildir or a LAYOUT=fs tree: every directory with cur/ is a folder.
            for e in walkdir::WalkDir::new(root)
                .follow_links(false)
                .sort_by_file_name()
            {
                let e = e.map_err(|e| LocalError::Io {
                    path: root_s.clone(),
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("walk failed")),
                })?;
                if !e.file_type().is_dir() || !is_maildir(e.path()) {
                    continue;
                }
                let rel = e.path().strip_prefix(root).unwrap();
                if rel
                    .components()
                    .any(|c| matches!(c.as_os_str().to_str(), Some("cur" | "new" | "tmp")))
                {
                    continue;
                }
                let raw = if rel.as_os_str().is_empty() {
                    b"INBOX".to_vec()
                } else {
                    rel.as_os_str().as_bytes().to_vec()
                };
                found.push((raw, Some('/'), e.path().to_path_buf()));
            }
        }
        if found.is_empty() {
            return Err(LocalError::NotMaildir { path: root_s });
        }
        // Every directory is a folder of its own, even where names meet (Dovecot LAYOUT=fs
        // with INBOX=…/INBOX and a root maildir both say INBOX).
        let names = distinct_names(
            &found
                .iter()
                .map(|(raw, delim, _)| {
                    let raw = split_raw(raw, *delim);
                    SourceName {
                        decoded: raw.iter().map(|l| decode_level(l)).collect(),
                        raw,
                        delimiter: *delim,
                    }
                })
                .collect::<Vec<_>>(),
        );
        let mut folders = Vec::new();
        for ((raw_bytes, delim, dir), name) in found.into_iter().zip(names) {
            let raw = String::from_utf8_lossy(&raw_bytes).into_owned();
            let files = list_messages(&dir)?;
            folders.push(Folder {
                bytes: files.iter().map(|f| f.2).sum::<u64>(),
                info: FolderInfo {
                    special_use: guess_special_use(&name, delim),
                    subscribed: subscriptions
                        .as_ref()
                        .is_none_or(|s| s.contains(&raw) || s.contains(&name) || name == "INBOX"),
                    selectable: true,
                    source_count: Some(files.len() as u64),
                    raw_bytes: std::str::from_utf8(&raw_bytes)
                        .is_err()
                        .then_some(raw_bytes),
                    raw_name: raw,
                    name,
                    delimiter: delim,
                    ..Default::default()
                },
                dir,
            });
        }
        Ok(MaildirSource {
            root: root.to_path_buf(),
            folders,
        })
    }
}

/// Dovecot's `subscriptions` or Courier's `courierimapsubscribed`, when present.
fn read_subscriptions(root: &Path) -> Option<Vec<String>> {
    for name in ["subscriptions", "courierimapsubscribed"] {
        if let Ok(text) = fs::read_to_string(root.join(name)) {
            return Some(
                text.lines()
                    .filter(|l| !l.is_empty() && !l.starts_with("V\t"))
                    .map(|l| l.trim_start_matches("INBOX.").replace('\t', "/"))
                    .collect(),
            );
        }
    }
    None
}

/// (path, is_new, size, file name) of every message file in cur/ and new/, in name order.
fn list_messages(dir: &Path) -> Result<Vec<(PathBuf, bool, u64, String)>, LocalError> {
    let mut out = Vec::new();
    for (sub, is_new) in [("cur", false), ("new", true)] {
        let d = dir.join(sub);
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&d)(e)),
        };
        for e in rd {
            let e = e.map_err(io_err(&d))?;
            let ft = e.file_type().map_err(io_err(e.path()))?;
            if !ft.is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((e.path(), is_new, size, name));
        }
    }
    // Maildir names start with the delivery time, so name order is close to arrival order.
    out.sort_by(|a, b| {
        natural_key(&a.3)
            .cmp(&natural_key(&b.3))
            .then(a.3.cmp(&b.3))
    });
    Ok(out)
}

fn natural_key(name: &str) -> (u64, &str) {
    let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
    (digits.parse().unwrap_or(u64::MAX), name)
}

fn read_keywords(dir: &Path) -> HashMap<char, String> {
    let mut map = HashMap::new();
    if let Ok(text) = fs::read_to_string(dir.join("dovecot-keywords")) {
        for line in text.lines() {
            if let Some((n, kw)) = line.split_once(' ') {
                if let Ok(i) = n.parse::<u8>() {
                    if i < 26 {
                        map.insert((b'a' + i) as char, kw.to_string());
                    }
                }
            }
        }
    }
    map
}

/// Flags from a Maildir file name: the letters after `:2,` (Dovecot also uses `,` extra
/// fields such as `,S=1234` before the colon; they are not flags).
pub fn flags_from_name(name: &str, keywords: &HashMap<char, String>) -> Vec<String> {
    let Some((_, info)) = name.rsplit_once(":2,") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in info.chars() {
        if let Some(f) = flags::from_letter(c) {
            out.push(f.to_string());
        } else if let Some(k) = keywords.get(&c) {
            out.push(k.clone());
        }
    }
    out
}

impl LocalSource for MaildirSource {
    fn describe(&self) -> String {
        let abs = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("maildir:{}", abs.display())
    }

    fn folders(&self) -> Vec<FolderInfo> {
        self.folders.iter().map(|f| f.info.clone()).collect()
    }

    fn folder_bytes(&self, folder: &str) -> u64 {
        let f = self.folders.iter().find(|f| f.info.name == folder);
        f.map_or(0, |f| f.bytes)
    }

    fn messages(
        &self,
        folder: &str,
        each: &mut super::local::MessageSink<'_>,
    ) -> Result<(), WriteError> {
        let Some(f) = self.folders.iter().find(|f| f.info.name == folder) else {
            return Ok(());
        };
        let keywords = read_keywords(&f.dir);
        let files = match list_messages(&f.dir) {
            Ok(files) => files,
            Err(e) => return each(Err(e)),
        };
        for (path, is_new, _, name) in files {
            let item = (|| {
                let file = fs::File::open(&path).map_err(io_err(&path))?;
                let meta = file.metadata().map_err(io_err(&path))?;
                let mut bytes = Vec::with_capacity(meta.len() as usize);
                use std::io::Read;
                (&file).read_to_end(&mut bytes).map_err(io_err(&path))?;
                let internaldate = meta.modified().ok().map(|t| {
                    DateTime::<Utc>::from(t).with_timezone(&FixedOffset::east_opt(0).unwrap())
                });
                let flags = if is_new {
                    Vec::new()
                } else {
                    flags_from_name(&name, &keywords)
                };
                let rel = path
                    .strip_prefix(&self.root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                Ok((
                    MessageInfo {
                        folder: folder.to_string(),
                        flags,
                        internaldate,
                        source: SourceRef::Local { path: rel },
                        source_size: Some(meta.len()),
                    },
                    bytes,
                ))
            })();
            each(item)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_from_names() {
        let mut kw = HashMap::new();
        kw.insert('a', "$Label1".to_string());
        assert_eq!(
            flags_from_name("123.M1P2.host,S=10,W=12:2,RSa", &kw),
            vec!["\\Answered", "\\Seen", "$Label1"]
        );
        assert!(flags_from_name("123.host", &kw).is_empty());
    }
}
