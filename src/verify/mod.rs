//! Integrity checks, returned as data: a list of findings with their level. The CLI
//! decides how to print them and which exit code follows. This module checks archives
//! against themselves and against each other (chains); `against` compares an archive
//! chain with a live IMAP server.

pub mod against;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::reader::Member;
use crate::archive::seal::{self, FileHash, Identities};
use crate::archive::sign::{self, SigStatus, Signers};
use crate::archive::{Archive, Chain, Completeness, MessageRecord, ReadError, SourceRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Something is lost, damaged or inconsistent.
    Error,
    /// Worth a look; nothing is lost.
    Warning,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// Short stable code, for scripts (e.g. `hash-mismatch`).
    pub code: &'static str,
    pub archive: String,
    pub folder: Option<String>,
    /// The message's identity: source id and member path.
    pub message: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct VerifyReport {
    pub archives: Vec<String>,
    /// Messages whose bytes were checked (`messages` in JSON, as in every report).
    #[serde(rename = "messages")]
    pub messages_checked: u64,
    #[serde(rename = "bytes")]
    pub bytes_checked: u64,
    pub findings: Vec<Finding>,
    /// Some input could not be used at all (missing file, not an archive).
    pub unusable: bool,
    /// With `--signer`: each archive's signature (`A.sig`) and what its check found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignatureCheck>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SignatureCheck {
    pub archive: String,
    pub signature: String,
    #[serde(flatten)]
    pub status: SigStatus,
}

/// What opens and vouches for the archives: keys for encrypted ones, and the public
/// keys trusted to have signed them (`A.sig` is then required for each).
#[derive(Debug, Clone, Default)]
pub struct VerifyInputs {
    pub keys: Identities,
    pub signers: Option<Signers>,
}

impl VerifyReport {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Error)
            .count()
    }
}

/// How a message is named in findings: where it came from and where it is stored.
pub fn message_identity(m: &MessageRecord) -> String {
    let src = match &m.source {
        SourceRef::Imap { uidvalidity, uid } => format!("uid {uid} (uidvalidity {uidvalidity})"),
        SourceRef::Pop3 {
            uidl: Some(u),
            msgno,
        } => format!("uidl {u} (msg {msgno})"),
        SourceRef::Pop3 { uidl: None, msgno } => format!("msg {msgno}"),
        SourceRef::Local { path } => format!("source {path}"),
    };
    format!("{src}, member {}", m.path)
}

/// Verifies each archive fully (every hash, index ↔ members both ways, index checksum)
/// and, when several are given, the chain between them.
pub fn verify_archives(paths: &[PathBuf], progress: &crate::progress::Progress) -> VerifyReport {
    verify_archives_with(paths, &VerifyInputs::default(), progress)
}

/// [`verify_archives`] for archives that may be encrypted or signed.
pub fn verify_archives_with(
    paths: &[PathBuf],
    inputs: &VerifyInputs,
    progress: &crate::progress::Progress,
) -> VerifyReport {
    let mut rep = VerifyReport::default();
    let mut opened: Vec<Archive> = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        rep.archives.push(name.clone());
        let mut add = |level, code, detail: String| {
            rep.findings.push(Finding {
                level,
                code,
                archive: name.clone(),
                folder: None,
                message: None,
                detail,
            })
        };
        if !p.is_file() {
            add(Level::Error, "unreadable", format!("{name}: no such file"));
            rep.unusable = true;
            continue;
        }
        if !matches!(seal::kind(p), Ok(seal::Kind::Zstd | seal::Kind::Age)) {
            add(
                Level::Error,
                "not-an-archive",
                format!("{name}: neither a zstd stream nor an age file, so not a mailark archive"),
            );
            rep.unusable = true;
            continue;
        }
        let (res, first) = Archive::open_or_scan(p, &inputs.keys);
        if let Some(e) = first {
            add(
                Level::Error,
                "trailer",
                format!("{e}; the index was looked for by reading the whole archive"),
            );
        }
        // The signature names its hash; the file is hashed with it in the full pass.
        let sig = inputs.signers.as_ref().map(|_| read_signature(p));
        let tap = sig.as_ref().map(|s| {
            let alg = s.as_ref().ok().and_then(|pem| sign::hash_of(pem));
            FileHash::new(alg.unwrap_or(sign::HASH))
        });
        match res {
            Ok(mut a) => {
                progress.inc_length(a.index.end.message_bytes);
                a.tap = tap.clone();
                verify_one(&a, &mut rep, progress);
                a.tap = None;
                opened.push(a);
            }
            Err(ReadError::Seal(e)) => {
                add(Level::Error, seal_code(&e), e.to_string());
                rep.unusable = true;
            }
            Err(e) => add(Level::Error, "no-index", e.to_string()),
        }
        if let (Some(signers), Some(tap), Some(sig)) = (&inputs.signers, tap, sig) {
            check_signature(p, sig, tap, signers, &mut rep);
        }
    }
    verify_chain(opened, &mut rep);
    rep
}

fn seal_code(e: &seal::SealError) -> &'static str {
    match e {
        seal::SealError::HeaderTampered { .. } => "tampered",
        seal::SealError::NeedsIdentity { .. } | seal::SealError::WrongIdentity { .. } => {
            "no-identity"
        }
        _ => "unreadable",
    }
}

/// `A.sig`, read before the pass over `A` (it names the hash to compute).
fn read_signature(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(sign::sig_path(path))
}

/// Checks `A.sig` against the hash of `A`'s bytes: those the full pass read, plus the
/// rest of the file (the whole file when the pass never ran).
fn check_signature(
    path: &Path,
    sig: std::io::Result<String>,
    tap: FileHash,
    signers: &Signers,
    rep: &mut VerifyReport,
) {
    let name = path.display().to_string();
    let sig_path = sign::sig_path(path);
    let status = match sig {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SigStatus::Missing,
        Err(e) => SigStatus::Bad {
            detail: format!("cannot read {}: {e}", sig_path.display()),
        },
        Ok(pem) => match tap.finish(path) {
            Ok(Some(d)) => sign::check(&pem, &d, signers),
            // The pass was not one read from the start: hash the file on its own.
            Ok(None) => {
                let alg = sign::hash_of(&pem).unwrap_or(sign::HASH);
                match FileHash::new(alg).finish(path) {
                    Ok(Some(d)) => sign::check(&pem, &d, signers),
                    Ok(None) => unreachable!("a new hash starts at the start"),
                    Err(e) => SigStatus::Bad {
                        detail: format!("cannot read {name} to check its signature: {e}"),
                    },
                }
            }
            Err(e) => SigStatus::Bad {
                detail: format!("cannot read {name} to check its signature: {e}"),
            },
        },
    };
    let problem = match &status {
        SigStatus::Good { .. } => None,
        SigStatus::Missing => Some(format!(
            "no signature: {} does not exist",
            sig_path.display()
        )),
        SigStatus::Bad { detail } => Some(format!("signature {}: {detail}", sig_path.display())),
    };
    if let Some(detail) = problem {
        rep.findings.push(Finding {
            level: Level::Error,
            code: "signature",
            archive: name.clone(),
            folder: None,
            message: None,
            detail,
        });
    }
    rep.signatures.push(SignatureCheck {
        archive: name,
        signature: sig_path.display().to_string(),
        status,
    });
}

fn verify_one(a: &Archive, rep: &mut VerifyReport, progress: &crate::progress::Progress) {
    let name = a.path.display().to_string();
    let idx = &a.index;
    let mut findings = Vec::new();
    let mk = |level, code, m: Option<&MessageRecord>, detail: String| Finding {
        level,
        code,
        archive: name.clone(),
        folder: m.map(|m| m.folder.clone()),
        message: m.map(message_identity),
        detail,
    };
    // Index self-consistency beyond what parsing checked.
    let folder_names: HashSet<&str> = idx.folders.iter().map(|f| f.name.as_str()).collect();
    let mut per_folder: HashMap<String, u64> = HashMap::new();
    for m in idx.messages.iter() {
        match per_folder.get_mut(m.folder.as_str()) {
            Some(n) => *n += 1,
            None => {
                per_folder.insert(m.folder.clone(), 1);
            }
        }
        let m = &m;
        if let Err(e) = m.parsed_internaldate() {
            findings.push(mk(Level::Error, "bad-internaldate", Some(m), e));
        }
        if !folder_names.contains(m.folder.as_str()) {
            findings.push(mk(
                Level::Error,
                "unknown-folder",
                Some(m),
                format!(
                    "message names folder {:?}, which the index does not list",
                    m.folder
                ),
            ));
        }
    }
    for f in &idx.folders {
        let n = per_folder.get(f.name.as_str()).copied().unwrap_or(0);
        if n != f.messages {
            findings.push(Finding {
                folder: Some(f.name.clone()),
                ..mk(
                    Level::Error,
                    "folder-count",
                    None,
                    format!(
                        "folder record says {} messages, the index holds {n}",
                        f.messages
                    ),
                )
            });
        }
    }
    let mut checked = 0u64;
    let mut bytes = 0u64;
    let outcome = a.stream_checking_padding(|member| -> Result<(), ReadError> {
        match member {
            Member::Message { record, mut body } => {
                let m = &idx.messages.get(record);
                // A read error is damaged archive data: the stream ends with it, and
                // the finding names it.
                let Ok((len, sum)) = crate::archive::copy_hashed(&mut body, &mut io::sink()) else {
                    return Ok(());
                };
                checked += 1;
                bytes += len;
                progress.inc(len);
                if len != m.size {
                    findings.push(mk(
                        Level::Error,
                        "size-mismatch",
                        Some(m),
                        format!("stored {len} bytes, index says {}", m.size),
                    ));
                }
                let sum = hex::encode(sum);
                if sum != m.sha256 {
                    findings.push(mk(
                        Level::Error,
                        "hash-mismatch",
                        Some(m),
                        format!("SHA-256 {sum}, index says {}", m.sha256),
                    ));
                }
            }
            Member::Meta { .. } => {}
            Member::Unknown { path, size } => findings.push(mk(
                Level::Error,
                "extra-member",
                None,
                format!("member {path:?} ({size} bytes) is not in the index"),
            )),
            Member::Unsafe { path } => findings.push(mk(
                Level::Error,
                "unsafe-member",
                None,
                format!("member name {path:?} could write outside a target directory"),
            )),
            Member::Duplicate { path } => findings.push(mk(
                Level::Error,
                "duplicate-member",
                None,
                format!("member {path:?} appears more than once"),
            )),
            Member::MboxDamaged { record, detail } => findings.push(mk(
                Level::Error,
                "mbox-damaged",
                Some(&idx.messages.get(record)),
                detail,
            )),
            Member::Shared { record, path } => findings.push(mk(
                Level::Error,
                "shared-member",
                Some(&idx.messages.get(record)),
                format!("member {path:?} is already the message of another record"),
            )),
            Member::NotAFile { path, kind } => findings.push(mk(
                Level::Error,
                "not-a-file",
                None,
                format!("member {path:?} is a {kind}, not a file"),
            )),
            // No mail is in the padding, and every message is checked by its hash: the
            // archive was written (or changed) by something that does not follow §2.
            Member::Padding { path, fault } => findings.push(mk(
                Level::Warning,
                "tar-padding",
                None,
                match path {
                    Some(path) => format!("member {path:?}: {fault}"),
                    None => fault.to_string(),
                },
            )),
        }
        Ok(())
    });
    match outcome {
        Ok(o) => {
            for (i, seen) in o.seen.iter().enumerate() {
                if !seen {
                    let m = &idx.messages.get(i);
                    findings.push(mk(
                        Level::Error,
                        "missing-member",
                        Some(m),
                        "the index lists it, the archive does not hold it".into(),
                    ));
                }
            }
        }
        Err(e) => findings.push(mk(
            Level::Error,
            "data-damaged",
            None,
            format!("{e}; messages after this point could not be checked"),
        )),
    }
    rep.messages_checked += checked;
    rep.bytes_checked += bytes;
    rep.findings.extend(findings);
}

/// Chain rules (decided by [`Chain`]): the archives form one chain, every parent is
/// given and unchanged, and a message is archived once across it.
fn verify_chain(archives: Vec<Archive>, rep: &mut VerifyReport) {
    if archives.is_empty() {
        return;
    }
    let chain = match Chain::new(archives, Completeness::Whole) {
        Ok(c) => c,
        Err(e) => {
            rep.findings.push(Finding {
                level: Level::Error,
                code: e.code(),
                archive: e
                    .archive()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                folder: None,
                message: None,
                detail: e.to_string(),
            });
            return;
        }
    };
    for (a, m, first) in chain.duplicates() {
        rep.findings.push(Finding {
            level: Level::Warning,
            code: "duplicate-in-chain",
            archive: a.path.display().to_string(),
            folder: Some(m.folder.clone()),
            message: Some(message_identity(&m)),
            detail: format!("also archived in {}", first.display()),
        });
    }
}
