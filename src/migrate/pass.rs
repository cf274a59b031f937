//! One pass of one account: archive first (export what the chain lacks into a new file
//! in the account's directory), then import the whole chain into the destination (what is
//! already there is recognised and skipped) with its verification of every chain message,
//! then count what the destination holds. Each step reuses the command that does it
//! alone; this file only sequences them and records the counts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use crate::archive::{Archive, Chain, Completeness, WriterOptions};
use crate::export::{self, FolderFilter};
use crate::import::{self, plan::PlanOptions, ImportOptions, ImportReport, VerifyMode};
use crate::progress::Progress;
use crate::source::imap::ImapSession;
use crate::source::net::{Credentials, Endpoint, Scheme, TlsOptions};

use super::accounts::Account;
use super::state::{AccountState, FolderCounts, PassRecord};

/// What every pass of a batch shares.
#[derive(Debug, Clone)]
pub struct PassOptions {
    pub source_tls: TlsOptions,
    pub destination_tls: TlsOptions,
    /// Connections per account and side.
    pub connections: usize,
}

/// The chain's archives in the account's directory, oldest first. An archive appears
/// under its final name only when complete, so every `pass-*.tar.zst` here is whole.
pub fn chain_files(dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(n) = name
            .strip_prefix("pass-")
            .and_then(|r| r.strip_suffix(".tar.zst"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            v.push((n, p));
        }
    }
    v.sort();
    Ok(v)
}

/// The step a pass was in when it stopped, for the one-line error.
#[derive(Debug, Clone, Copy)]
enum Step {
    Secrets,
    Export,
    Import,
    Count,
}

impl Step {
    fn label(self) -> &'static str {
        match self {
            Step::Secrets => "secrets",
            Step::Export => "export",
            Step::Import => "import",
            Step::Count => "counting the destination",
        }
    }
}

/// Runs one pass and returns its record; a pass that cannot finish returns a record with
/// the error, so one account's failure never stops the batch.
pub fn run_pass(
    acct: &Account,
    dir: &Path,
    state: &AccountState,
    opts: &PassOptions,
    log: &dyn Fn(&str),
) -> PassRecord {
    let existing = chain_files(dir).unwrap_or_default();
    let number = state
        .next_pass_number()
        .max(existing.last().map_or(1, |(n, _)| n + 1));
    let mut rec = PassRecord {
        pass: number,
        started: Utc::now(),
        ..Default::default()
    };
    let chain: Vec<PathBuf> = existing.into_iter().map(|(_, p)| p).collect();
    if let Err((step, e)) = passes_steps(acct, dir, &chain, opts, &mut rec, log) {
        rec.clean = false;
        rec.error = Some(format!("{}: {e}", step.label()));
    }
    rec.finished = Utc::now();
    rec
}

fn passes_steps(
    acct: &Account,
    dir: &Path,
    chain: &[PathBuf],
    opts: &PassOptions,
    rec: &mut PassRecord,
    log: &dyn Fn(&str),
) -> Result<(), (Step, String)> {
    let src_creds = acct
        .source_secret
        .credentials(&acct.source)
        .map_err(|e| (Step::Secrets, e))?;
    let dst_creds = acct
        .destination_secret
        .credentials(&acct.destination)
        .map_err(|e| (Step::Secrets, e))?;

    let out = dir.join(format!("pass-{:04}.tar.zst", rec.pass));
    let exported =
        export_pass(acct, &src_creds, chain, &out, opts).map_err(|e| (Step::Export, e))?;
    rec.source_messages = exported.folders.iter().map(|f| f.source_messages).sum();
    rec.new_messages = exported.folders.iter().map(|f| f.new).sum();
    rec.new_bytes = exported.bytes;
    let mut problems = exported.problems.clone();

    let mut archives: Vec<Archive> = chain
        .iter()
        .map(|p| Archive::open(p).map_err(|e| (Step::Import, e.to_string())))
        .collect::<Result<_, _>>()?;
    let new = Archive::open(&out).map_err(|e| (Step::Export, e.to_string()))?;
    let known: std::collections::HashSet<&str> = archives
        .iter()
        .flat_map(|a| a.index.folders.iter().map(|f| f.name.as_str()))
        .collect();
    let new_folder = new
        .index
        .folders
        .iter()
        .any(|f| !known.contains(f.name.as_str()));
    if new.index.end.messages == 0 && !archives.is_empty() && !new_folder {
        // Nothing new: an empty delta would only lengthen the chain.
        std::fs::remove_file(&out)
            .map_err(|e| (Step::Export, format!("{}: {e}", out.display())))?;
    } else {
        rec.archive = out.file_name().map(|n| n.to_string_lossy().into_owned());
        archives.push(new);
    }
    rec.chain_messages = archives.iter().map(|a| a.index.end.messages).sum();
    log(&format!(
        "pass {}: {} on the source, {} new{}",
        rec.pass,
        rec.source_messages,
        rec.new_messages,
        rec.archive
            .as_deref()
            .map(|a| format!(", archived in {a}"))
            .unwrap_or_default()
    ));

    let imp = import_chain(archives, acct, &dst_creds, opts).map_err(|e| (Step::Import, e))?;
    rec.imported = imp.appended;
    rec.already_there = imp.already_there;
    rec.same_mail_other_delivery = imp.other_deliveries;
    rec.verified = imp.verified;
    rec.missing = imp.archived.saturating_sub(imp.verified);
    if imp.failed > 0 {
        problems.push(format!("{} message(s) could not be imported", imp.failed));
    }
    if !imp.clean() {
        problems.push(format!(
            "{} of {} chain message(s) verified on the destination",
            imp.verified, imp.archived
        ));
    }
    let other = if imp.other_deliveries > 0 {
        format!(
            " ({} as another delivery of the same mail)",
            imp.other_deliveries
        )
    } else {
        String::new()
    };
    log(&format!(
        "pass {}: imported {}, {} already there{other}, {} of {} verified",
        rec.pass, imp.appended, imp.already_there, imp.verified, imp.archived
    ));

    let census = count_destination(&acct.destination, &dst_creds, &opts.destination_tls, &imp)
        .map_err(|e| (Step::Count, e))?;
    rec.folders = merge_counts(exported.folders, &imp, &census);
    rec.destination_messages = census.values().sum();
    rec.clean = problems.is_empty();
    rec.error = (!problems.is_empty()).then(|| problems.join("; "));
    Ok(())
}

struct Exported {
    folders: Vec<FolderCounts>,
    bytes: u64,
    /// Messages or folders the export could not archive, as sentences.
    problems: Vec<String>,
}

fn export_pass(
    acct: &Account,
    creds: &Credentials,
    chain: &[PathBuf],
    out: &Path,
    opts: &PassOptions,
) -> Result<Exported, String> {
    let filter = FolderFilter::default();
    let wopts = WriterOptions::default();
    let ep = &acct.source;
    match ep.scheme {
        Scheme::Imap | Scheme::Imaps => {
            let eo = export::imap::ImapExportOptions {
                jobs: opts.connections,
                since: chain.to_vec(),
                ..Default::default()
            };
            let rep = export::imap::export_imap(
                ep,
                creds,
                &opts.source_tls,
                out,
                wopts,
                &filter,
                eo,
                &Progress::hidden(),
            )
            .map_err(|e| e.to_string())?;
            let folders = rep
                .folders
                .iter()
                .filter(|f| f.selectable)
                .map(|f| FolderCounts {
                    folder: f.folder.clone(),
                    source_messages: f.source_count.unwrap_or(f.listed),
                    new: f.archived,
                    ..Default::default()
                })
                .collect();
            let problems = (rep.problems() > 0)
                .then(|| format!("{} message(s) or folder(s) not archived", rep.problems()))
                .into_iter()
                .collect();
            Ok(Exported {
                folders,
                bytes: rep.message_bytes,
                problems,
            })
        }
        Scheme::Pop3 | Scheme::Pop3s => {
            let job = export::pop3::Pop3Job {
                endpoint: ep.clone(),
                creds: creds.clone(),
                tls: opts.source_tls.clone(),
                client: Default::default(),
                retry: Default::default(),
                since: chain.to_vec(),
                since_keys: Default::default(),
            };
            let rep = export::pop3::export_pop3(&job, out, wopts, &filter, false)
                .map_err(|e| e.to_string())?;
            let folders = rep
                .export
                .folders
                .iter()
                .map(|f| FolderCounts {
                    folder: f.folder.clone(),
                    source_messages: f.source_count.unwrap_or(rep.server.stat_messages),
                    new: f.archived,
                    ..Default::default()
                })
                .collect();
            let mut problems: Vec<String> = rep.count_differences.clone();
            if rep.export.skipped() > 0 {
                problems.push(format!("{} message(s) not archived", rep.export.skipped()));
            }
            Ok(Exported {
                folders,
                bytes: rep.export.message_bytes,
                problems,
            })
        }
    }
}

fn import_chain(
    archives: Vec<Archive>,
    acct: &Account,
    creds: &Credentials,
    opts: &PassOptions,
) -> Result<ImportReport, String> {
    let io = ImportOptions {
        dest: acct.destination.clone(),
        creds: creds.clone(),
        tls: opts.destination_tls.clone(),
        plan: PlanOptions::default(),
        dry_run: false,
        jobs: opts.connections,
        verify: VerifyMode::Quick,
        filter: Default::default(),
        // Mail that reached both servers during the MX change is imported once.
        other_deliveries: true,
        timeout: crate::source::imap::session::DEFAULT_TIMEOUT,
        messages_per_pass: import::MESSAGES_PER_PASS,
    };
    // The account's files must form one chain (full first, each delta on the one
    // before); anything else is refused here, before the destination is touched.
    let chain = Chain::new(archives, Completeness::Whole).map_err(|e| e.to_string())?;
    runtime()?
        .block_on(import::import(chain, &io, &Progress::hidden()))
        .map_err(|e| e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// What each destination folder the import used holds now (EXAMINE's EXISTS).
fn count_destination(
    ep: &Endpoint,
    creds: &Credentials,
    tls: &TlsOptions,
    imp: &ImportReport,
) -> Result<HashMap<String, u64>, String> {
    runtime()?.block_on(async {
        let mut s = ImapSession::connect_with_timeout(ep, creds, tls, Duration::from_secs(120))
            .await
            .map_err(|e| e.to_string())?;
        let listed = s.list().await.map_err(|e| e.to_string())?;
        let mut out = HashMap::new();
        for f in &imp.folders {
            if out.contains_key(&f.destination) {
                continue;
            }
            let Some(m) = listed.iter().find(|m| m.name == f.destination) else {
                continue;
            };
            let st = s.examine(&m.raw_name).await.map_err(|e| e.to_string())?;
            out.insert(f.destination.clone(), u64::from(st.exists));
        }
        let _ = s.logout().await;
        Ok(out)
    })
}

fn merge_counts(
    mut folders: Vec<FolderCounts>,
    imp: &ImportReport,
    census: &HashMap<String, u64>,
) -> Vec<FolderCounts> {
    for f in &imp.folders {
        let i = match folders.iter().position(|x| x.folder == f.folder) {
            Some(i) => i,
            None => {
                // A folder only older passes held.
                folders.push(FolderCounts {
                    folder: f.folder.clone(),
                    ..Default::default()
                });
                folders.len() - 1
            }
        };
        let x = &mut folders[i];
        x.destination = f.destination.clone();
        x.imported = f.appended;
        x.verified = f.verified;
        x.destination_messages = census.get(&f.destination).copied().unwrap_or(0);
    }
    folders
}
