//! The IMAP export workflow: every folder of a live account → one archive (or a delta
//! on top of a chain with `--since`). Folders are spread over `--jobs` connections; in
//! each, a metadata pass fixes the UID set at EXAMINE time, then bodies come in batched,
//! pipelined `UID FETCH BODY.PEEK[]` requests. Hashing, compression and writing happen on
//! a writer thread behind a bounded queue with a byte budget, so the network never waits
//! on zstd and memory stays bounded by a few large messages.
//!
//! Every folder is accounted for: the server's count at EXAMINE, what was archived, what
//! was already in the chain, what vanished or arrived during the run, size differences
//! against RFC822.SIZE, and every message that could not be archived with the server's
//! words. A dropped connection reconnects with backoff and resumes with the UIDs still
//! missing, never from the start of the folder.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use super::pending::Pending;
use super::spool::Body;
use super::{FolderFilter, PatternError, Skipped};
use crate::archive::names::{distinct_names, split_raw, SourceName};
use crate::archive::{
    ArchiveWriter, Chain, ChainError, Completeness, FolderInfo, MessageInfo, Namespace, ParentRef,
    SourceRef, WriteError, WriteSummary, WriterOptions,
};
use crate::log::event;
use crate::progress::Progress;
use crate::source::imap::session::{uid_set, FolderRead, Listed};
use crate::source::imap::{
    parse_internaldate, Event, FetchWhat, FetchedMessage, FolderStatus, ImapError, ImapSession,
    MailboxInfo,
};
use crate::source::net::{Credentials, Endpoint, TlsOptions};

#[derive(Debug, Clone)]
pub struct ImapExportOptions {
    /// Parallel connections (folders are fetched side by side).
    pub jobs: usize,
    /// Archives already holding this account's mail (a chain): only what they lack is
    /// archived.
    pub since: Vec<PathBuf>,
    /// Keys for `since` archives that are encrypted.
    pub since_keys: crate::archive::seal::Identities,
    /// Most messages in one `UID FETCH`.
    pub batch_messages: usize,
    /// Most announced bytes in one `UID FETCH`.
    pub batch_bytes: u64,
    /// `UID FETCH` commands in flight per connection.
    pub in_flight: usize,
    /// Reconnects in a row without progress before a folder is given up.
    pub max_retries: u32,
    /// First backoff pause; it doubles with every retry.
    pub backoff: Duration,
    /// Per-read timeout.
    pub timeout: Duration,
    /// Message bytes that may wait for the writer.
    pub memory_budget: u64,
}

impl Default for ImapExportOptions {
    fn default() -> Self {
        ImapExportOptions {
            jobs: 4,
            since: Vec::new(),
            since_keys: Default::default(),
            batch_messages: 500,
            batch_bytes: 16 << 20,
            in_flight: 3,
            max_retries: 5,
            backoff: Duration::from_millis(500),
            timeout: crate::source::imap::session::DEFAULT_TIMEOUT,
            memory_budget: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SizeMismatch {
    pub uid: u32,
    /// RFC822.SIZE as the server announced it.
    pub announced: u64,
    /// Bytes actually served and archived.
    pub archived: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ImapFolderReport {
    pub folder: String,
    pub raw_name: String,
    pub special_use: Option<String>,
    pub selectable: bool,
    pub uidvalidity: Option<u32>,
    pub uidnext: Option<u32>,
    pub highestmodseq: Option<u64>,
    /// EXISTS when the folder was opened.
    pub source_count: Option<u64>,
    /// UIDs the server listed at the start of the run.
    pub listed: u64,
    /// Messages EXAMINE counted that `UID FETCH 1:*` never listed (still counted on a
    /// second EXAMINE): they cannot be archived, so the folder is reported incomplete.
    pub unlisted: u64,
    /// Messages written to this archive.
    pub archived: u64,
    pub bytes: u64,
    /// Messages the `--since` chain already holds (not downloaded again).
    pub already_archived: u64,
    /// The folder's UIDVALIDITY differs from the chain's: matched by SHA-256 instead.
    pub uidvalidity_changed: bool,
    /// Messages that could not be archived, with the reason. In JSON: `failed` (how
    /// many) and `failures` (each with why), as in every report.
    #[serde(flatten, serialize_with = "crate::json::count_and_list")]
    pub skipped: Vec<Skipped>,
    /// UIDs expunged on the server while the run was reading the folder.
    pub vanished: Vec<u32>,
    /// Messages that arrived after the folder was opened (left for the next `--since`).
    pub arrived: u64,
    pub size_mismatches: Vec<SizeMismatch>,
    /// Reconnects and retries this folder needed, and why (the first few).
    pub reconnects: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reconnect_reasons: Vec<String>,
    /// The folder could not be read (fully); the message names the server's answer.
    pub error: Option<String>,
    /// Every listed UID is archived, was already archived, or vanished: nothing is
    /// missing.
    pub complete: bool,
}

impl ImapFolderReport {
    pub fn problems(&self) -> usize {
        // An incomplete folder without a named reason is still a gap.
        let unexplained =
            self.selectable && !self.complete && self.error.is_none() && self.skipped.is_empty();
        self.skipped.len() + usize::from(self.error.is_some()) + usize::from(unexplained)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ImapExportReport {
    pub archive: String,
    pub archive_id: String,
    pub index_sha256: String,
    pub source: String,
    pub parent: Option<ParentRef>,
    pub messages: u64,
    /// Bytes of mail archived (`bytes` in JSON, as in every report).
    #[serde(rename = "bytes")]
    pub message_bytes: u64,
    pub file_bytes: u64,
    /// Message bodies downloaded (0 on an incremental run with no new mail).
    pub bodies_fetched: u64,
    pub reconnects: u64,
    /// Things worth knowing that lost nothing (e.g. fewer connections than --jobs).
    pub notes: Vec<String>,
    pub folders: Vec<ImapFolderReport>,
}

impl ImapExportReport {
    /// Messages not archived and folders not read: any of these means exit 1.
    pub fn problems(&self) -> usize {
        self.folders.iter().map(|f| f.problems()).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImapExportError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("--since: {0}")]
    Since(#[from] ChainError),
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("{0}: no folder matches the --folder/--exclude patterns")]
    NoFolders(String),
    #[error("cannot start the network runtime: {0}")]
    Runtime(std::io::Error),
}

enum Item {
    Folder(FolderInfo),
    /// A message with its bytes (in memory, or spooled by the session when too large
    /// to hold), and the budget permits it holds.
    Message(MessageInfo, Body, u32),
}

/// Shared by every connection of one run.
struct Ctx {
    ep: Endpoint,
    creds: Credentials,
    tls: TlsOptions,
    opts: ImapExportOptions,
    prev: Option<Chain>,
    tx: mpsc::Sender<Item>,
    budget: Arc<Semaphore>,
    budget_permits: u32,
    writer_failed: Arc<AtomicBool>,
    bodies: AtomicU64,
    progress: Progress,
}

/// The folders to read, each counted with EXAMINE when a progress bar is shown (all in
/// one pipeline: one round trip), so it can give messages n/N and an ETA from the
/// start (a folder's census corrects its count later).
async fn count_folders(
    s: &mut ImapSession,
    selected: &[MailboxInfo],
    progress: &Progress,
) -> Vec<Plan> {
    let mut counts = vec![0u64; selected.len()];
    if progress.is_shown() {
        let reqs: Vec<FolderRead> = selected
            .iter()
            .map(|m| FolderRead {
                raw_name: m.raw_name.clone(),
                read_only: true,
                what: None,
                unselect: false,
                uids: None,
            })
            .collect();
        // A failure here is met again, and handled, when the folder is read.
        if let Ok(outs) = s.read_folders(&reqs).await {
            for (c, out) in counts.iter_mut().zip(outs) {
                *c = out.status.map_or(0, |st| u64::from(st.exists));
            }
        }
    }
    let plans: Vec<Plan> = selected
        .iter()
        .zip(counts)
        .map(|(m, expected)| Plan {
            info: m.clone(),
            expected,
        })
        .collect();
    progress.set_totals(plans.iter().map(|p| p.expected).sum(), plans.len() as u64);
    plans
}

/// A folder to read, in LIST order.
#[derive(Debug, Clone)]
struct Plan {
    info: MailboxInfo,
    /// Messages the folder held when counted for the progress bar.
    expected: u64,
}

/// Exports an IMAP account into `dest`.
#[allow(clippy::too_many_arguments)]
pub fn export_imap(
    ep: &Endpoint,
    creds: &Credentials,
    tls: &TlsOptions,
    dest: &Path,
    mut wopts: WriterOptions,
    filter: &FolderFilter,
    opts: ImapExportOptions,
    progress: &Progress,
) -> Result<ImapExportReport, ImapExportError> {
    let prev = if opts.since.is_empty() {
        None
    } else {
        Some(Chain::open_with(
            &opts.since,
            Completeness::Whole,
            &opts.since_keys,
        )?)
    };
    wopts.source = ep.to_string();
    wopts.parent = prev.as_ref().map(Chain::tip);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ImapExportError::Runtime)?;
    rt.block_on(run(
        ep, creds, tls, dest, wopts, filter, opts, prev, progress,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    ep: &Endpoint,
    creds: &Credentials,
    tls: &TlsOptions,
    dest: &Path,
    mut wopts: WriterOptions,
    filter: &FolderFilter,
    opts: ImapExportOptions,
    prev: Option<Chain>,
    progress: &Progress,
) -> Result<ImapExportReport, ImapExportError> {
    // Log in and list before the archive file exists: a refused login leaves nothing.
    let mut first = ImapSession::connect_with_timeout(ep, creds, tls, opts.timeout).await?;
    let plaintext = !first.is_tls();
    let mut listed = first.list().await?;
    // The other connections log in while this one goes on (namespace, archive, counts):
    // each login is several round trips, which over a WAN were paid twice in a row.
    // Only after the first LIST: Dovecot writes its auto-subscribed folders on the first
    // listing, and sessions starting alongside it left that file short of one.
    let mut extra: Vec<tokio::task::JoinHandle<Result<ImapSession, ImapError>>> =
        (1..opts.jobs.max(1))
            .map(|_| {
                let (ep, creds, tls, t) = (ep.clone(), creds.clone(), tls.clone(), opts.timeout);
                tokio::spawn(async move {
                    ImapSession::connect_with_timeout(&ep, &creds, &tls, t).await
                })
            })
            .collect();
    distinct_imap_names(&mut listed);
    wopts.namespace = first
        .namespace()
        .await?
        .map(|(prefix, delimiter)| Namespace {
            prefix,
            delimiter: delimiter.map(String::from),
        });
    let selected: Vec<MailboxInfo> = listed
        .iter()
        .filter(|m| m.selectable && filter.matches(&m.name))
        .cloned()
        .collect();
    if selected.is_empty() {
        return Err(ImapExportError::NoFolders(ep.to_string()));
    }
    // \Noselect parents of chosen folders (and chosen \Noselect names) are recorded so a
    // restore can rebuild the tree.
    let parents: Vec<MailboxInfo> = listed
        .iter()
        .filter(|m| !m.selectable)
        .filter(|m| {
            filter.matches(&m.name)
                || selected.iter().any(|s| {
                    m.delimiter
                        .is_some_and(|d| s.name.starts_with(&format!("{}{d}", m.name)))
                })
        })
        .cloned()
        .collect();

    let writer = ArchiveWriter::create(dest, wopts)?;
    let budget_permits = (opts.memory_budget / 1024).clamp(1024, u32::MAX as u64 / 2) as u32;
    let budget = Arc::new(Semaphore::new(budget_permits as usize));
    let (tx, rx) = mpsc::channel::<Item>(1024);
    let writer_failed = Arc::new(AtomicBool::new(false));
    let writer_thread = {
        let budget = budget.clone();
        let failed = writer_failed.clone();
        std::thread::spawn(move || write_all(writer, rx, budget, failed))
    };
    for m in listed
        .iter()
        .filter(|m| parents.contains(m) || selected.contains(m))
    {
        let _ = tx.send(Item::Folder(folder_info(m, None))).await;
    }

    let ctx = Arc::new(Ctx {
        ep: ep.clone(),
        creds: creds.clone(),
        tls: tls.clone(),
        opts: opts.clone(),
        prev,
        tx,
        budget,
        budget_permits,
        writer_failed: writer_failed.clone(),
        bodies: AtomicU64::new(0),
        progress: progress.clone(),
    });
    let plans = count_folders(&mut first, &selected, progress).await;
    let queue: Arc<Mutex<VecDeque<Plan>>> = Arc::new(Mutex::new(plans.into()));
    let results: Arc<Mutex<Vec<ImapFolderReport>>> = Arc::new(Mutex::new(Vec::new()));
    let jobs = opts.jobs.clamp(1, selected.len().max(1));
    // Connections beyond what the folders need leave at once.
    for h in extra.split_off((jobs - 1).min(extra.len())) {
        tokio::spawn(async move {
            if let Ok(Ok(s)) = h.await {
                let _ = s.logout().await;
            }
        });
    }
    let mut extra = extra.into_iter();
    let mut handles = Vec::new();
    let mut first = Some(first);
    let notes: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    for n in 0..jobs {
        let sess = first.take();
        let login = if sess.is_none() { extra.next() } else { None };
        let (ctx, queue, results) = (ctx.clone(), queue.clone(), results.clone());
        let notes = notes.clone();
        handles.push(tokio::spawn(async move {
            let mut sess = sess;
            if let Some(login) = login {
                // An extra connection the server will not give (per-user connection
                // limits are common) is not a failure: fewer connections do the work.
                match login.await.expect("login task panicked") {
                    Ok(s) => sess = Some(s),
                    Err(e) => {
                        notes.lock().unwrap().push(format!(
                            "connection {} of {jobs} not opened, carried on with fewer: {e}",
                            n + 1
                        ));
                        return None;
                    }
                }
            }
            loop {
                let plan = queue.lock().unwrap().pop_front();
                let Some(plan) = plan else { break };
                ctx.progress.folder_started(&plan.info.name);
                let rep = export_folder(&ctx, &mut sess, &plan).await;
                results.lock().unwrap().push(rep);
            }
            sess
        }));
    }
    let mut logouts = Vec::new();
    for h in handles {
        match h.await {
            // Logging out is a round trip the archive does not wait for.
            Ok(Some(s)) => logouts.push(tokio::spawn(async move {
                let _ = s.logout().await;
            })),
            Ok(None) => {}
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    let mut reports = std::mem::take(&mut *results.lock().unwrap());
    // Final folder facts (counts, UIDVALIDITY...) go into the index.
    for r in &reports {
        if let Some(m) = selected.iter().find(|m| m.name == r.folder) {
            let _ = ctx.tx.send(Item::Folder(folder_info(m, Some(r)))).await;
        }
    }
    let mut notes = std::mem::take(&mut *notes.lock().unwrap());
    if plaintext {
        notes.insert(
            0,
            "the server offers no TLS: the password and all mail crossed the network in clear text (--allow-plaintext)".into(),
        );
    }
    let bodies = ctx.bodies.load(Ordering::Relaxed);
    let parent = ctx.prev.as_ref().map(Chain::tip);
    drop(ctx);
    let summary: WriteSummary = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .expect("join writer")
        .expect("archive writer thread panicked")?;
    for l in logouts {
        let _ = l.await;
    }
    progress.finish();
    for p in &parents {
        reports.push(ImapFolderReport {
            folder: p.name.clone(),
            raw_name: p.raw_name.clone(),
            special_use: p.special_use.clone(),
            selectable: false,
            complete: true,
            ..Default::default()
        });
    }
    // INBOX first, then the tree by name: stable from run to run, whatever order the
    // server lists in.
    reports.sort_by(|a, b| (a.folder != "INBOX", &a.folder).cmp(&(b.folder != "INBOX", &b.folder)));
    let reconnects = reports.iter().map(|r| r.reconnects).sum();
    Ok(ImapExportReport {
        archive: summary.path.display().to_string(),
        archive_id: summary.archive_id,
        index_sha256: summary.index_sha256,
        source: ep.to_string(),
        parent,
        messages: summary.messages,
        message_bytes: summary.message_bytes,
        file_bytes: summary.file_bytes,
        bodies_fetched: bodies,
        reconnects,
        notes,
        folders: reports,
    })
}

/// Names that are not valid modified UTF-7 are shown as they are, so they can meet a
/// decoded name (`Café` sent raw and `Caf&AOk-`): each folder keeps a name of its own.
fn distinct_imap_names(listed: &mut [MailboxInfo]) {
    let names: Vec<SourceName> = listed
        .iter()
        .map(|m| {
            let raw = split_raw(m.raw_name.as_bytes(), m.delimiter);
            let decoded = raw
                .iter()
                .map(|l| {
                    let l = String::from_utf8_lossy(l);
                    crate::mail::utf7::decode(&l).unwrap_or_else(|_| l.into_owned())
                })
                .collect();
            SourceName {
                raw,
                decoded,
                delimiter: m.delimiter,
            }
        })
        .collect();
    for (m, name) in listed.iter_mut().zip(distinct_names(&names)) {
        m.name = name;
    }
}

fn folder_info(m: &MailboxInfo, r: Option<&ImapFolderReport>) -> FolderInfo {
    FolderInfo {
        name: m.name.clone(),
        raw_name: m.raw_name.clone(),
        raw_bytes: None,
        delimiter: m.delimiter,
        special_use: m.special_use.clone(),
        subscribed: m.subscribed,
        selectable: m.selectable,
        source_count: r.and_then(|r| r.source_count),
        uidvalidity: r.and_then(|r| r.uidvalidity),
        uidnext: r.and_then(|r| r.uidnext),
        highestmodseq: r.and_then(|r| r.highestmodseq),
    }
}

/// The writer thread: adds folders and messages in arrival order, gives the memory
/// budget back after each message, and finishes the archive when every sender is gone.
/// After a write error it keeps draining (so senders never block) and reports it.
fn write_all(
    mut w: ArchiveWriter,
    mut rx: mpsc::Receiver<Item>,
    budget: Arc<Semaphore>,
    failed: Arc<AtomicBool>,
) -> Result<WriteSummary, WriteError> {
    let mut err = None;
    while let Some(item) = rx.blocking_recv() {
        let r = match item {
            Item::Folder(f) if err.is_none() => w.add_folder(f),
            Item::Message(info, body, permits) => {
                let r = if err.is_none() {
                    body.add_to(&mut w, info)
                } else {
                    Ok(())
                };
                drop(body);
                budget.add_permits(permits as usize);
                r
            }
            Item::Folder(_) => Ok(()),
        };
        if let Err(e) = r {
            failed.store(true, Ordering::SeqCst);
            err.get_or_insert(e);
        }
    }
    match err {
        Some(e) => Err(e),
        None => w.finish(),
    }
}

/// How a folder run is going, kept across reconnects.
struct FolderRun {
    rep: ImapFolderReport,
    status: Option<FolderStatus>,
    /// UIDs still to fetch, with the sizes the listing announced.
    pending: Pending,
    /// UIDs a batch answered OK for without returning them: expunged, or lost.
    missing: Vec<u32>,
    /// UIDs to fetch one by one after their batch failed.
    isolate: HashSet<u32>,
    /// Highest UID seen in the metadata pass.
    max_uid: u32,
    /// The chain's SHA-256 set, when this folder's UIDVALIDITY changed.
    match_by_sha: bool,
    started: bool,
    failures: u32,
    /// The census lost its connection this many times (a server that hangs up on a
    /// message it cannot read); from 2 on it asks for UIDs alone.
    census_failures: u32,
    /// EXAMINE answered NO this many times.
    examine_failures: u32,
    /// UID → times the connection died while that UID was being fetched on its own.
    /// Twice means the message itself kills the session: it is skipped and reported.
    killers: HashMap<u32, (u32, Vec<String>)>,
    /// Messages this folder stands for in the progress bar's total, and how many of
    /// them the bar has counted.
    bar_len: u64,
    bar_pos: u64,
}

enum Step {
    Done,
    /// The connection is gone; reconnect and carry on.
    Reconnect(ImapError),
    /// Wait, then try again on the same connection.
    Retry(ImapError),
    /// The folder cannot be read; stop with this error.
    Fail(String),
}

async fn export_folder(ctx: &Ctx, sess: &mut Option<ImapSession>, plan: &Plan) -> ImapFolderReport {
    let m = &plan.info;
    let mut run = FolderRun {
        rep: ImapFolderReport {
            folder: m.name.clone(),
            raw_name: m.raw_name.clone(),
            special_use: m.special_use.clone(),
            selectable: true,
            ..Default::default()
        },
        status: None,
        pending: Pending::default(),
        missing: Vec::new(),
        isolate: HashSet::new(),
        max_uid: 0,
        match_by_sha: false,
        started: false,
        failures: 0,
        census_failures: 0,
        examine_failures: 0,
        killers: HashMap::new(),
        bar_len: plan.expected,
        bar_pos: 0,
    };
    loop {
        if ctx.writer_failed.load(Ordering::SeqCst) {
            run.rep.error = Some("the archive writer failed".into());
            break;
        }
        if sess.is_none() {
            match ImapSession::connect_with_timeout(&ctx.ep, &ctx.creds, &ctx.tls, ctx.opts.timeout)
                .await
            {
                Ok(s) => *sess = Some(s),
                Err(e) if (e.is_connection_lost() || e.is_throttled()) => {
                    if !backoff(ctx, &mut run, &e).await {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    run.rep.error = Some(e.to_string());
                    break;
                }
            }
        }
        let s = sess.as_mut().unwrap();
        match folder_pass(ctx, s, &mut run).await {
            Step::Done => break,
            Step::Reconnect(e) => {
                *sess = None;
                if !backoff(ctx, &mut run, &e).await {
                    break;
                }
            }
            Step::Retry(e) => {
                if !backoff(ctx, &mut run, &e).await {
                    break;
                }
            }
            Step::Fail(msg) => {
                run.rep.error = Some(msg);
                break;
            }
        }
    }
    let r = &mut run.rep;
    let accounted =
        r.archived + r.already_archived + r.skipped.len() as u64 + r.vanished.len() as u64;
    r.complete = r.error.is_none()
        && r.skipped.is_empty()
        && run.pending.is_empty()
        && accounted == r.listed;
    // Whatever was not fetched (gone, skipped, the folder given up) is settled, so the
    // bar ends at its total.
    if run.bar_pos <= run.bar_len {
        ctx.progress.messages_settled(run.bar_len - run.bar_pos);
    } else {
        ctx.progress
            .adjust_total((run.bar_pos - run.bar_len) as i64);
    }
    ctx.progress.folder_done();
    match &r.error {
        None => event!(
            "{}: done, {} archived, {} not archived",
            r.folder,
            r.archived,
            r.skipped.len()
        ),
        Some(e) => event!("{}: stopped: {e}", r.folder),
    }
    if r.error.is_some() {
        for (uid, _) in run.pending.iter() {
            r.skipped.push(Skipped {
                id: format!("UID {uid}"),
                reason: "not fetched: the folder could not be read to the end".into(),
            });
        }
    }
    run.rep
}

/// Waits before the next attempt; false when the retries are used up (the error is
/// then recorded).
async fn backoff(ctx: &Ctx, run: &mut FolderRun, e: &ImapError) -> bool {
    run.failures += 1;
    run.rep.reconnects += 1;
    if run.rep.reconnect_reasons.len() < 10 {
        run.rep.reconnect_reasons.push(e.to_string());
    }
    if run.failures > ctx.opts.max_retries {
        run.rep.error = Some(format!(
            "gave up after {} attempts: {e}",
            ctx.opts.max_retries + 1
        ));
        return false;
    }
    let pause = ctx.opts.backoff * 2u32.pow(run.failures.min(6) - 1);
    event!(
        "{}: {e}; reconnecting in {:.1} s (attempt {} of {})",
        run.rep.folder,
        pause.as_secs_f64(),
        run.failures + 1,
        ctx.opts.max_retries + 1
    );
    tokio::time::sleep(pause).await;
    true
}

/// One connection's go at a folder: open it, learn its UIDs (first time), fetch what is
/// pending, then account for vanished and arrived messages.
async fn folder_pass(ctx: &Ctx, s: &mut ImapSession, run: &mut FolderRun) -> Step {
    let raw = run.rep.raw_name.clone();
    // Sizes need the server to read each message; one it cannot read must not hide
    // the rest, so a refused census falls back to UIDs alone.
    let what = if run.census_failures >= 2 {
        FetchWhat::Uids
    } else {
        FetchWhat::Sizes
    };
    // On the first pass the census travels with EXAMINE: one round trip for both.
    let (st, census) = if run.started {
        (s.examine(&raw).await, None)
    } else {
        let req = FolderRead {
            raw_name: raw.clone(),
            read_only: true,
            what: Some(what),
            unselect: false,
            uids: None,
        };
        match s.read_folders_as::<Listed>(&[req]).await {
            Ok(mut v) => {
                let out = v.pop().expect("one folder read");
                (out.status, Some(out.messages))
            }
            // The session broke in EXAMINE or in the census; the census is what a
            // server dies on (a message it cannot read), so it counts as the census's
            // failure: after two, the census asks for UIDs alone.
            Err(e) => {
                if e.is_connection_lost() {
                    run.census_failures += 1;
                }
                (Err(e), None)
            }
        }
    };
    let st = match st {
        Ok(st) => st,
        Err(e) if e.is_connection_lost() => return Step::Reconnect(e),
        Err(e) if e.is_throttled() => return Step::Retry(e),
        // A listed folder refused once may be a passing state (Dovecot answers
        // `[ALREADYEXISTS]` while another session auto-creates it); ask again.
        Err(e) if run.examine_failures < 2 => {
            run.examine_failures += 1;
            return Step::Retry(e);
        }
        Err(e) => return Step::Fail(e.to_string()),
    };
    if let Some(old) = &run.status {
        if old.uidvalidity != st.uidvalidity {
            return Step::Fail(format!(
                "UIDVALIDITY changed from {:?} to {:?} during the run; run the export again",
                old.uidvalidity, st.uidvalidity
            ));
        }
    } else {
        run.rep.uidvalidity = st.uidvalidity;
        run.rep.uidnext = st.uidnext;
        run.rep.highestmodseq = st.highestmodseq;
        run.rep.source_count = Some(st.exists as u64);
        run.status = Some(st.clone());
    }
    if !run.started {
        // The metadata pass fixes the UID set this run is accountable for.
        let metas = if st.exists == 0 {
            Vec::new()
        } else {
            let census = census.expect("the first pass reads the census with EXAMINE");
            let r = match census {
                Err(e) if !e.is_connection_lost() && what == FetchWhat::Sizes => {
                    s.uid_fetch_all::<Listed>("1:*", FetchWhat::Uids).await
                }
                r => r,
            };
            match r {
                Ok(v) => v,
                Err(e) if e.is_connection_lost() => {
                    run.census_failures += 1;
                    return Step::Reconnect(e);
                }
                Err(e) => return Step::Fail(e.to_string()),
            }
        };
        let uv = st.uidvalidity.unwrap_or(0);
        let known = ctx
            .prev
            .as_ref()
            .and_then(|c| c.holdings(&run.rep.folder))
            .map(|h| &h.imap);
        let have: Option<&HashSet<u32>> = known.and_then(|k| k.get(&uv));
        run.match_by_sha = known.is_some_and(|k| !k.is_empty() && have.is_none());
        run.rep.uidvalidity_changed = run.match_by_sha;
        // The listing becomes the pending set in place: no second copy of it.
        let mut metas = metas;
        metas.retain(|l| l.uid != 0);
        metas.sort_unstable_by_key(|l| l.uid);
        metas.dedup_by_key(|l| l.uid);
        run.rep.listed = metas.len() as u64;
        run.max_uid = metas.last().map_or(0, |l| l.uid);
        metas.retain(|l| !have.is_some_and(|h| h.contains(&l.uid)));
        run.rep.already_archived += run.rep.listed - metas.len() as u64;
        let bytes: u64 = metas.iter().map(|l| u64::from(l.size)).sum();
        run.pending = Pending::new(metas);
        let listed = u64::from(st.exists);
        ctx.progress
            .adjust_total(listed as i64 - run.bar_len as i64);
        run.bar_len = listed;
        ctx.progress.messages_settled(run.rep.already_archived);
        run.bar_pos += run.rep.already_archived;
        run.started = true;
        event!(
            "{}: {} messages on the server, {} to fetch ({}), {} already archived",
            run.rep.folder,
            st.exists,
            run.pending.len(),
            indicatif::BinaryBytes(bytes),
            run.rep.already_archived
        );
        if run.rep.listed < u64::from(st.exists) {
            // Messages expunged during the census are no gap: a second count tells.
            let recount = s.examine(&raw).await.map_or(st.exists, |n| n.exists);
            run.rep.unlisted = u64::from(recount.min(st.exists)).saturating_sub(run.rep.listed);
        }
    }
    if let Err(e) = fetch_pending(ctx, s, run).await {
        return e;
    }
    // UIDs a batch did not return: still there (fetch alone) or expunged.
    if !run.missing.is_empty() {
        let missing = std::mem::take(&mut run.missing);
        let set = uid_set(&missing);
        let still = match s.uid_fetch_all::<Listed>(&set, FetchWhat::Uids).await {
            Ok(v) => v,
            Err(e) if e.is_connection_lost() => {
                run.missing = missing;
                return Step::Reconnect(e);
            }
            Err(e) => return Step::Fail(e.to_string()),
        };
        let present: HashSet<u32> = still.iter().map(|m| m.uid).filter(|&u| u != 0).collect();
        for uid in missing {
            if present.contains(&uid) {
                run.isolate.insert(uid);
            } else if run.pending.remove(uid).is_some() {
                run.rep.vanished.push(uid);
            }
        }
        if !run.isolate.is_empty() {
            if let Err(e) = fetch_pending(ctx, s, run).await {
                return e;
            }
            // Present but still not served: each one is a reported failure.
            for uid in std::mem::take(&mut run.missing) {
                if run.pending.remove(uid).is_some() {
                    run.rep.skipped.push(Skipped {
                        id: format!("UID {uid}"),
                        reason: "the server answered OK but sent no message".into(),
                    });
                }
            }
        }
    }
    // Arrivals since EXAMINE: counted, left for the next incremental run.
    let from = run.max_uid.max(st.uidnext.unwrap_or(1).saturating_sub(1)) + 1;
    if let Ok(v) = s
        .uid_fetch_all::<Listed>(&format!("{from}:*"), FetchWhat::Uids)
        .await
    {
        run.rep.arrived = v.iter().filter(|m| m.uid >= from).count() as u64;
    }
    if run.rep.unlisted > 0 {
        return Step::Fail(format!(
            "EXAMINE counted {} messages but UID FETCH 1:* listed {}: {} the server holds \
             could not be archived",
            run.rep.source_count.unwrap_or(0),
            run.rep.listed,
            run.rep.unlisted
        ));
    }
    Step::Done
}

/// Splits the pending UIDs into batches by count and announced size; isolated UIDs
/// (from a failed batch) go alone.
fn batches(run: &FolderRun, opts: &ImapExportOptions) -> VecDeque<Vec<u32>> {
    let mut out = VecDeque::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for (uid, size) in run.pending.iter() {
        if run.isolate.contains(&uid) {
            if !cur.is_empty() {
                out.push_back(std::mem::take(&mut cur));
                bytes = 0;
            }
            out.push_back(vec![uid]);
            continue;
        }
        if !cur.is_empty() && (cur.len() >= opts.batch_messages || bytes + size > opts.batch_bytes)
        {
            out.push_back(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        cur.push(uid);
    }
    if !cur.is_empty() {
        out.push_back(cur);
    }
    out
}

/// Fetches every pending UID with several batches in flight. A tagged NO/BAD splits its
/// batch into single UIDs; a single UID refused is recorded with the server's words; a
/// throttling answer waits and tries again.
async fn fetch_pending(ctx: &Ctx, s: &mut ImapSession, run: &mut FolderRun) -> Result<(), Step> {
    let mut todo = batches(run, &ctx.opts);
    let mut inflight: VecDeque<(String, Vec<u32>)> = VecDeque::new();
    loop {
        while inflight.len() < ctx.opts.in_flight.max(1) {
            let Some(b) = todo.pop_front() else { break };
            let tag = match s.send_uid_fetch(&uid_set(&b), FetchWhat::Full).await {
                Ok(t) => t,
                Err(e) => return Err(lost(run, inflight.front(), e)),
            };
            inflight.push_back((tag, b));
        }
        if inflight.is_empty() {
            return Ok(());
        }
        let ev = match s.next_event().await {
            Ok(ev) => ev,
            Err(e) => return Err(lost(run, inflight.front(), e)),
        };
        match ev {
            Event::Fetch(m) => {
                let Some(uid) = m.uid else { continue };
                if !run.pending.contains(uid) || m.body.is_none() {
                    // Unsolicited flag updates, or a message this run already has.
                    continue;
                }
                archive_message(ctx, run, m).await?;
            }
            Event::Done {
                tag,
                ok,
                status,
                text,
                ..
            } => {
                let Some(pos) = inflight.iter().position(|(t, _)| *t == tag) else {
                    continue;
                };
                let (_, batch) = inflight.remove(pos).unwrap();
                let left: Vec<u32> = batch
                    .into_iter()
                    .filter(|&u| run.pending.contains(u))
                    .collect();
                if ok {
                    run.missing.extend(left);
                    continue;
                }
                if crate::source::imap::session::is_throttle_text(&text) {
                    run.failures += 1;
                    if run.failures > ctx.opts.max_retries {
                        return Err(Step::Fail(format!(
                            "UID FETCH answered {status} {text} (still throttled after {} tries)",
                            ctx.opts.max_retries
                        )));
                    }
                    tokio::time::sleep(ctx.opts.backoff * 2u32.pow(run.failures.min(6) - 1)).await;
                    todo.push_back(left);
                } else if left.len() > 1 {
                    // Find the bad message(s): every UID on its own.
                    for u in left {
                        run.isolate.insert(u);
                        todo.push_back(vec![u]);
                    }
                } else {
                    for u in left {
                        run.pending.remove(u);
                        run.rep.skipped.push(Skipped {
                            id: format!("UID {u}"),
                            reason: format!("UID FETCH answered {status} {text}"),
                        });
                    }
                }
            }
            Event::Notice { text, .. } if crate::source::imap::session::is_throttle_text(&text) => {
                tokio::time::sleep(ctx.opts.backoff).await;
            }
            _ => {}
        }
    }
}

/// A failed read during fetching. When the connection died, the batch being answered
/// is suspect: its UIDs are fetched one by one next time, and a UID that kills the
/// connection twice on its own is skipped with the server's last words.
fn lost(run: &mut FolderRun, front: Option<&(String, Vec<u32>)>, e: ImapError) -> Step {
    if !e.is_connection_lost() {
        return Step::Fail(e.to_string());
    }
    if let Some((_, batch)) = front {
        let left: Vec<u32> = batch
            .iter()
            .copied()
            .filter(|&u| run.pending.contains(u))
            .collect();
        if let [uid] = left[..] {
            let (n, texts) = run.killers.entry(uid).or_default();
            *n += 1;
            let text = e.to_string();
            if !texts.contains(&text) {
                texts.push(text);
            }
            if *n >= 2 {
                let reason = format!(
                    "the connection fails whenever this message is fetched: {}",
                    texts.join("; then: ")
                );
                run.pending.remove(uid);
                run.isolate.remove(&uid);
                run.failures = 0;
                run.rep.skipped.push(Skipped {
                    id: format!("UID {uid}"),
                    reason,
                });
            }
        } else {
            run.isolate.extend(left);
        }
    }
    Step::Reconnect(e)
}

async fn archive_message(ctx: &Ctx, run: &mut FolderRun, m: FetchedMessage) -> Result<(), Step> {
    let uid = m.uid.unwrap_or(0);
    let listed_size = run.pending.remove(uid).expect("pending checked by caller");
    run.isolate.remove(&uid);
    run.failures = 0;
    let body = match m.spooled {
        Some(s) => Body::Spooled(s.file, s.len),
        None => Body::Mem(m.body.unwrap_or_default()),
    };
    ctx.bodies.fetch_add(1, Ordering::Relaxed);
    let len = body.len();
    ctx.progress.message_done(len);
    run.bar_pos += 1;
    let announced = m.size.map(u64::from).unwrap_or(listed_size);
    if announced != len {
        run.rep.size_mismatches.push(SizeMismatch {
            uid,
            announced,
            archived: len,
        });
    }
    if run.match_by_sha {
        let sha = body
            .sha256_hex()
            .map_err(|e| Step::Fail(format!("cannot read a spooled message: {e}")))?;
        if ctx
            .prev
            .as_ref()
            .is_some_and(|c| c.has_sha(&run.rep.folder, &sha))
        {
            run.rep.already_archived += 1;
            return Ok(());
        }
    }
    let info = MessageInfo {
        folder: run.rep.folder.clone(),
        flags: m.flags.unwrap_or_default(),
        internaldate: m.internaldate.as_deref().and_then(parse_internaldate),
        source: SourceRef::Imap {
            uidvalidity: run.rep.uidvalidity.unwrap_or(0),
            uid,
        },
        source_size: Some(announced),
    };
    // A spooled message holds no memory.
    let permits = (body.held().div_ceil(1024) as u32).clamp(1, ctx.budget_permits);
    match ctx.budget.acquire_many(permits).await {
        Ok(p) => p.forget(),
        Err(_) => return Err(Step::Fail("the archive writer stopped".into())),
    }
    if ctx
        .tx
        .send(Item::Message(info, body, permits))
        .await
        .is_err()
        || ctx.writer_failed.load(Ordering::SeqCst)
    {
        return Err(Step::Fail("the archive writer failed".into()));
    }
    run.rep.archived += 1;
    run.rep.bytes += len;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dovecot only ever lists valid modified UTF-7 (it escapes other bytes itself), so
    /// a server sending `Café` raw beside `Caf&AOk-` is checked here, not against it.
    #[test]
    fn names_that_are_not_modified_utf7_stay_distinct() {
        let mb = |raw: &str| MailboxInfo {
            raw_name: raw.into(),
            name: String::new(),
            delimiter: Some('/'),
            selectable: true,
            subscribed: false,
            special_use: None,
        };
        let mut listed = vec![
            mb("Caf&AOk-"),
            mb("Caf&AOk-/Sub"),
            mb("Café"),
            mb("Bad&name"),
            mb("INBOX"),
        ];
        distinct_imap_names(&mut listed);
        let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["Café~2", "Café~2/Sub", "Café", "Bad&name", "INBOX"]);
    }

    fn run_with(pending: &[(u32, u32)], isolate: &[u32]) -> FolderRun {
        FolderRun {
            rep: ImapFolderReport::default(),
            status: None,
            pending: Pending::new(
                pending
                    .iter()
                    .map(|&(uid, size)| Listed { uid, size })
                    .collect(),
            ),
            missing: Vec::new(),
            isolate: isolate.iter().copied().collect(),
            max_uid: 0,
            match_by_sha: false,
            started: true,
            failures: 0,
            census_failures: 0,
            examine_failures: 0,
            killers: HashMap::new(),
            bar_len: 0,
            bar_pos: 0,
        }
    }

    #[test]
    fn batches_split_by_count_and_size_and_isolate() {
        let opts = ImapExportOptions {
            batch_messages: 3,
            batch_bytes: 100,
            ..Default::default()
        };
        let run = run_with(
            &[
                (1, 10),
                (2, 10),
                (3, 10),
                (4, 10),
                (5, 90),
                (6, 500),
                (7, 1),
            ],
            &[4],
        );
        let b: Vec<Vec<u32>> = batches(&run, &opts).into_iter().collect();
        assert_eq!(b, vec![vec![1, 2, 3], vec![4], vec![5], vec![6], vec![7]]);
    }

    #[test]
    fn a_message_that_kills_the_connection_twice_is_skipped() {
        let mut run = run_with(&[(1, 10), (2, 10), (3, 10)], &[]);
        let e = || ImapError::ConnectionLost {
            endpoint: "imaps://a@h:993".into(),
            detail: "boom".into(),
        };
        // In a batch: the batch is isolated, nothing skipped.
        let front = ("A1".to_string(), vec![1, 2, 3]);
        assert!(matches!(
            lost(&mut run, Some(&front), e()),
            Step::Reconnect(_)
        ));
        assert_eq!(run.isolate.len(), 3);
        // Alone, once: kept; twice: skipped with the reason.
        let front = ("A2".to_string(), vec![2]);
        lost(&mut run, Some(&front), e());
        assert!(run.pending.contains(2));
        lost(&mut run, Some(&front), e());
        assert!(!run.pending.contains(2));
        assert_eq!(run.rep.skipped[0].id, "UID 2");
        assert!(run.rep.skipped[0].reason.contains("boom"));
    }

    #[test]
    fn uid_sets_compress_runs() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 9, 10, 12]), "1:3,5,9:10,12");
        assert_eq!(uid_set(&[7]), "7");
        assert_eq!(uid_set(&[]), "");
    }
}
