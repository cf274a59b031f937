//! Chains (spec §7): a full archive and the deltas that continue it. This is the one
//! place that decides whether a set of archives is a chain, in which order it is read,
//! and what it already holds — every command (`export --since`, `import`, `verify`,
//! `extract`, `ls`) asks it. The lookups are plain data, so the exporters can ask "is
//! this UID, UIDL or SHA-256 already archived?" without this module knowing a network.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::index::{MessageRecord, ParentRef, SourceRef};
use super::reader::{Archive, ReadError};
use super::seal::Identities;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("no archive given")]
    Empty,
    #[error(
        "{path}: its parent archive {parent_id} ({parent_file}) was not given; pass the whole chain"
    )]
    MissingParent {
        path: PathBuf,
        parent_id: String,
        parent_file: String,
    },
    #[error("{path}: its parent {parent} has a different index than when this delta was made")]
    ParentChanged { path: PathBuf, parent: PathBuf },
    #[error(
        "{second}: not part of the chain of {first} (each starts a chain of its own); give \
         one full archive and its deltas"
    )]
    TwoRoots { first: PathBuf, second: PathBuf },
    #[error("{second}: the same archive as {first} (archive id {id}), given twice")]
    Duplicate {
        first: PathBuf,
        second: PathBuf,
        id: String,
    },
    #[error("{second}: continues {parent} as {first} does; a chain cannot fork")]
    Fork {
        parent: PathBuf,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{path}: its parent links form a loop; no archive is the full one")]
    Loop { path: PathBuf },
}

impl ChainError {
    /// A short stable name of the fault, for scripts (`verify --json`).
    pub fn code(&self) -> &'static str {
        match self {
            ChainError::Read(_) => "unreadable",
            ChainError::Empty => "no-archive",
            ChainError::MissingParent { .. } => "parent-missing",
            ChainError::ParentChanged { .. } => "parent-changed",
            ChainError::TwoRoots { .. } => "not-a-chain",
            ChainError::Duplicate { .. } => "archive-twice",
            ChainError::Fork { .. } => "chain-fork",
            ChainError::Loop { .. } => "chain-loop",
        }
    }

    /// The archive the fault is found in.
    pub fn archive(&self) -> Option<&Path> {
        match self {
            ChainError::Read(_) | ChainError::Empty => None,
            ChainError::MissingParent { path, .. }
            | ChainError::ParentChanged { path, .. }
            | ChainError::Loop { path } => Some(path),
            ChainError::TwoRoots { second, .. }
            | ChainError::Duplicate { second, .. }
            | ChainError::Fork { second, .. } => Some(second),
        }
    }
}

/// Whether the first archive may be a delta whose parent is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// A full archive and its deltas: what anything that builds on the chain needs.
    Whole,
    /// The newest part of a chain (e.g. one delta alone): enough to list what it holds.
    Tail,
}

/// What a chain holds in one folder, by every identity a source may give.
#[derive(Debug, Default, Clone)]
pub struct Holdings {
    /// IMAP UIDVALIDITY → UIDs.
    pub imap: HashMap<u32, HashSet<u32>>,
    /// POP3 UIDLs.
    pub uidls: HashSet<String>,
    /// SHA-256 → copies, of every message.
    pub shas: HashMap<String, u32>,
    /// SHA-256 → copies, of the messages archived without a POP3 UIDL: on a POP3
    /// server only their content can match them.
    pub shas_without_uidl: HashMap<String, u32>,
}

/// A checked chain, root first, with what it holds per folder (worked out when first
/// asked: only `export --since` asks, and at a million messages it is the biggest
/// thing a chain could hold).
#[derive(Debug)]
pub struct Chain {
    archives: Vec<Archive>,
    holdings: OnceLock<HashMap<String, Holdings>>,
}

impl Chain {
    /// Opens plain archives `paths` through their trailers and checks they form one chain.
    pub fn open(paths: &[PathBuf], completeness: Completeness) -> Result<Chain, ChainError> {
        Chain::open_with(paths, completeness, &Identities::none())
    }

    /// [`Chain::open`] for archives that may be encrypted to one of `keys`.
    pub fn open_with(
        paths: &[PathBuf],
        completeness: Completeness,
        keys: &Identities,
    ) -> Result<Chain, ChainError> {
        let archives = paths
            .iter()
            .map(|p| Archive::open_with(p, keys))
            .collect::<Result<Vec<_>, _>>()?;
        Chain::new(archives, completeness)
    }

    /// Checks already opened archives and orders them root first.
    pub fn new(archives: Vec<Archive>, completeness: Completeness) -> Result<Chain, ChainError> {
        let order = order(&archives, completeness)?;
        let mut slots: Vec<Option<Archive>> = archives.into_iter().map(Some).collect();
        let archives: Vec<Archive> = order.iter().map(|&i| slots[i].take().unwrap()).collect();
        Ok(Chain {
            archives,
            holdings: OnceLock::new(),
        })
    }

    fn all_holdings(&self) -> &HashMap<String, Holdings> {
        self.holdings.get_or_init(|| {
            let mut holdings: HashMap<String, Holdings> = HashMap::new();
            for m in self.archives.iter().flat_map(|a| a.index.messages.iter()) {
                let h = match holdings.get_mut(m.folder.as_str()) {
                    Some(h) => h,
                    None => holdings.entry(m.folder.clone()).or_default(),
                };
                *h.shas.entry(m.sha256.clone()).or_default() += 1;
                if let SourceRef::Imap { uidvalidity, uid } = &m.source {
                    h.imap.entry(*uidvalidity).or_default().insert(*uid);
                }
                match m.source {
                    SourceRef::Pop3 { uidl: Some(u), .. } => {
                        h.uidls.insert(u);
                    }
                    _ => *h.shas_without_uidl.entry(m.sha256).or_default() += 1,
                }
            }
            holdings
        })
    }

    /// The archives, root first.
    pub fn archives(&self) -> &[Archive] {
        &self.archives
    }

    pub fn into_archives(self) -> Vec<Archive> {
        self.archives
    }

    /// What the chain holds in `folder` (None: no message of that folder).
    pub fn holdings(&self, folder: &str) -> Option<&Holdings> {
        self.all_holdings().get(folder)
    }

    pub fn has_sha(&self, folder: &str, sha256: &str) -> bool {
        self.holdings(folder)
            .is_some_and(|h| h.shas.contains_key(sha256))
    }

    /// The newest archive, as a new delta names its parent.
    pub fn tip(&self) -> ParentRef {
        let a = self.archives.last().expect("a chain is never empty");
        ParentRef {
            archive_id: a.index.header.archive_id.clone(),
            index_sha256: a.index.end.index_sha256.clone(),
            file_name: a.path.file_name().map(|f| f.to_string_lossy().into_owned()),
        }
    }

    /// The `source` of every archive, root first.
    pub fn sources(&self) -> Vec<&str> {
        self.archives
            .iter()
            .map(|a| a.index.header.source.as_str())
            .collect()
    }

    /// Messages a delta archived again although an older archive of the chain holds
    /// them (same folder and identity), each with the archive that held it first. Two
    /// equal messages in one archive are two messages, not a repeat.
    pub fn duplicates(&self) -> Vec<(&Archive, MessageRecord, &Path)> {
        // Keys are kept for every archive but the newest (nothing comes after it to
        // repeat them): a single archive holds no keys at all.
        let mut seen: HashMap<(String, String), &Path> = HashMap::new();
        let mut out = Vec::new();
        for (k, a) in self.archives.iter().enumerate() {
            let last = k + 1 == self.archives.len();
            if last && seen.is_empty() {
                break;
            }
            let mut this: Vec<((String, String), &Path)> = Vec::new();
            for m in a.index.messages.iter() {
                let key = match &m.source {
                    SourceRef::Imap { uidvalidity, uid } => format!("imap:{uidvalidity}:{uid}"),
                    SourceRef::Pop3 { uidl: Some(u), .. } => format!("pop3:{u}"),
                    _ => format!("sha:{}", m.sha256),
                };
                let key = (m.folder.clone(), key);
                match seen.get(&key) {
                    Some(prev) => out.push((a, m, *prev)),
                    None if !last => this.push((key, &a.path)),
                    None => {}
                }
            }
            seen.extend(this);
        }
        out
    }
}

/// Checks that `archives` form one chain and returns their indices root first.
fn order(archives: &[Archive], completeness: Completeness) -> Result<Vec<usize>, ChainError> {
    if archives.is_empty() {
        return Err(ChainError::Empty);
    }
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (i, a) in archives.iter().enumerate() {
        if let Some(&j) = by_id.get(a.index.header.archive_id.as_str()) {
            return Err(ChainError::Duplicate {
                first: archives[j].path.clone(),
                second: a.path.clone(),
                id: a.index.header.archive_id.clone(),
            });
        }
        by_id.insert(&a.index.header.archive_id, i);
    }
    // child[i]: the archive that continues archive i.
    let mut child: Vec<Option<usize>> = vec![None; archives.len()];
    let mut roots = Vec::new();
    for (i, a) in archives.iter().enumerate() {
        let Some(p) = &a.index.header.parent else {
            roots.push(i);
            continue;
        };
        match by_id.get(p.archive_id.as_str()) {
            None if completeness == Completeness::Tail => roots.push(i),
            None => {
                return Err(ChainError::MissingParent {
                    path: a.path.clone(),
                    parent_id: p.archive_id.clone(),
                    parent_file: p
                        .file_name
                        .clone()
                        .unwrap_or_else(|| "file name unknown".into()),
                })
            }
            Some(&j) => {
                if archives[j].index.end.index_sha256 != p.index_sha256 {
                    return Err(ChainError::ParentChanged {
                        path: a.path.clone(),
                        parent: archives[j].path.clone(),
                    });
                }
                if let Some(k) = child[j] {
                    return Err(ChainError::Fork {
                        parent: archives[j].path.clone(),
                        first: archives[k].path.clone(),
                        second: a.path.clone(),
                    });
                }
                child[j] = Some(i);
            }
        }
    }
    match roots.as_slice() {
        [] => {
            return Err(ChainError::Loop {
                path: archives[0].path.clone(),
            })
        }
        [_] => {}
        [first, second, ..] => {
            return Err(ChainError::TwoRoots {
                first: archives[*first].path.clone(),
                second: archives[*second].path.clone(),
            })
        }
    }
    let mut out = vec![roots[0]];
    while let Some(next) = child[*out.last().unwrap()] {
        out.push(next);
    }
    if out.len() < archives.len() {
        // Every archive has a parent among them and there is one root, so the ones the
        // walk from the root did not reach name each other in a circle.
        let missed = (0..archives.len()).find(|i| !out.contains(i)).unwrap();
        return Err(ChainError::Loop {
            path: archives[missed].path.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::index::{ArchiveHeader, EndRecord, Index, Layout};

    fn ar(name: &str, parent: Option<(&str, &str)>) -> Archive {
        Archive {
            path: PathBuf::from(name),
            index: Index {
                header: ArchiveHeader {
                    format: "mailark-archive".into(),
                    version: 1,
                    mailark_version: "t".into(),
                    archive_id: format!("id-{name}"),
                    created: String::new(),
                    source: format!("src-{name}"),
                    layout: Layout::Maildir,
                    namespace: None,
                    parent: parent.map(|(p, sum)| ParentRef {
                        archive_id: format!("id-{p}"),
                        index_sha256: sum.into(),
                        file_name: Some(p.into()),
                    }),
                },
                folders: Vec::new(),
                messages: crate::archive::messages::Messages::from_records(&[]),
                end: EndRecord {
                    folders: 0,
                    messages: 0,
                    message_bytes: 0,
                    index_sha256: format!("sum-{name}"),
                },
            },
            file_len: 0,
            keys: Default::default(),
            tap: None,
            by_path: Default::default(),
        }
    }

    fn names(c: &Chain) -> Vec<String> {
        c.archives()
            .iter()
            .map(|a| a.path.display().to_string())
            .collect()
    }

    #[test]
    fn orders_root_first_whatever_the_input_order() {
        let v = vec![
            ar("d2", Some(("d1", "sum-d1"))),
            ar("full", None),
            ar("d1", Some(("full", "sum-full"))),
        ];
        let c = Chain::new(v, Completeness::Whole).unwrap();
        assert_eq!(names(&c), ["full", "d1", "d2"]);
        assert_eq!(c.tip().archive_id, "id-d2");
        assert_eq!(c.sources(), ["src-full", "src-d1", "src-d2"]);
    }

    #[test]
    fn refuses_what_is_not_one_chain() {
        let err = |v: Vec<Archive>, c| Chain::new(v, c).unwrap_err();
        let e = err(vec![ar("d1", Some(("full", "x")))], Completeness::Whole);
        assert_eq!(
            (e.code(), e.archive()),
            ("parent-missing", Some(Path::new("d1")))
        );
        let e = err(vec![ar("a", None), ar("b", None)], Completeness::Whole);
        assert_eq!(
            (e.code(), e.archive()),
            ("not-a-chain", Some(Path::new("b")))
        );
        let e = err(
            vec![ar("full", None), ar("d1", Some(("full", "other")))],
            Completeness::Whole,
        );
        assert_eq!(e.code(), "parent-changed");
        let e = err(
            vec![
                ar("full", None),
                ar("d1", Some(("full", "sum-full"))),
                ar("d1b", Some(("full", "sum-full"))),
            ],
            Completeness::Whole,
        );
        assert_eq!(
            (e.code(), e.archive()),
            ("chain-fork", Some(Path::new("d1b")))
        );
        let e = err(vec![ar("a", None), ar("a", None)], Completeness::Whole);
        assert_eq!(e.code(), "archive-twice");
        let e = err(
            vec![
                ar("full", None),
                ar("x", Some(("y", "sum-y"))),
                ar("y", Some(("x", "sum-x"))),
            ],
            Completeness::Whole,
        );
        assert_eq!(e.code(), "chain-loop");
        // A tail may start with a delta, but still only one.
        let c = Chain::new(vec![ar("d1", Some(("full", "x")))], Completeness::Tail).unwrap();
        assert_eq!(names(&c), ["d1"]);
        let e = err(
            vec![
                ar("d1", Some(("full", "x"))),
                ar("e1", Some(("other", "x"))),
            ],
            Completeness::Tail,
        );
        assert_eq!(e.code(), "not-a-chain");
    }
}
