//! The importer: archives (or a chain) → a destination IMAP account, idempotent and
//! resumable, checked message by message on the destination afterwards.
//!
//! Correctness never depends on local state: before appending into a folder the
//! importer learns what the folder already holds (`plan::FolderState`) and skips those
//! messages, so a rerun after success appends nothing and a rerun after a crash or a cut
//! connection appends only what is missing. Messages stream from the archive one at a
//! time into a bounded queue; `--jobs` connections drain it with pipelined APPENDs.

pub mod plan;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use serde::Serialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::archive::reader::Member;
use crate::archive::{Archive, FolderRecord, MessageRecord, ReadError};
use crate::progress::Progress;
use crate::source::imap::dest::{AppendRequest, DestCaps};
use crate::source::imap::{parse_internaldate, ImapError, ImapSession};
use crate::source::net::{Credentials, Endpoint, TlsOptions};
use plan::{DestLayout, Existing, FolderState, MsgKey, Plan, PlanOptions, Reason};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Every message present with equal size, flags and INTERNALDATE; bytes compared for
    /// the messages servers are known to rewrite (NUL, 8-bit header bytes).
    #[default]
    Quick,
    /// As quick, and every message's bytes compared (SHA-256 of the CRLF form).
    Full,
    None,
}

impl std::str::FromStr for VerifyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "quick" => Ok(VerifyMode::Quick),
            "full" => Ok(VerifyMode::Full),
            "none" => Ok(VerifyMode::None),
            _ => Err(format!("--verify {s:?}: use quick, full or none")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub dest: Endpoint,
    pub creds: Credentials,
    pub tls: TlsOptions,
    pub plan: PlanOptions,
    pub dry_run: bool,
    pub jobs: usize,
    pub verify: VerifyMode,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("{endpoint}: cannot create folder {folder:?}: {status} {text}")]
    Create {
        endpoint: String,
        folder: String,
        status: String,
        text: String,
    },
    #[error("reading what destination folder {folder:?} holds failed {tries} times: {source}")]
    Learn {
        folder: String,
        tries: u32,
        source: ImapError,
    },
    #[error("the archives hold no folder to import")]
    Empty,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failure {
    /// The message: its source identity and archive member, and its Message-ID.
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct FolderReport {
    /// Source folder (UTF-8).
    pub folder: String,
    /// Destination folder (UTF-8).
    pub destination: String,
    /// Why it goes there: `name`, `special_use`, `map`, `prefix`.
    pub placed_by: Option<Reason>,
    pub created: bool,
    pub archived: u64,
    pub already_there: u64,
    pub appended: u64,
    /// `--dry-run`: messages that would be appended.
    pub to_append: u64,
    pub verified: u64,
    pub failed: Vec<Failure>,
    /// Keywords the destination folder does not keep (PERMANENTFLAGS), with counts.
    pub dropped_keywords: Vec<(String, u64)>,
    /// Levels renamed because they held the destination's delimiter.
    pub renamed_levels: Vec<String>,
    /// Messages sent with CRLF line ends because the server refused their bare LF/CR.
    pub sent_as_crlf: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ImportReport {
    pub destination: String,
    pub archives: Vec<String>,
    pub dry_run: bool,
    pub verify: VerifyMode,
    /// Parent folders created (or, in a dry run, to create).
    pub parents_created: Vec<String>,
    pub folders: Vec<FolderReport>,
    pub archived: u64,
    pub already_there: u64,
    pub appended: u64,
    pub to_append: u64,
    pub verified: u64,
    pub failed: u64,
    pub bytes_appended: u64,
    pub notes: Vec<String>,
    /// Wall-clock seconds of each phase (connect and plan, learn what the destination
    /// holds, append, verify), so a slow import shows where its time went.
    pub seconds: PhaseSeconds,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct PhaseSeconds {
    pub prepare: f64,
    pub learn: f64,
    pub append: f64,
    pub verify: f64,
}

impl ImportReport {
    /// Every archived message is verified on the destination (or, without
    /// verification or in a dry run, nothing failed or is planned to fail).
    pub fn clean(&self) -> bool {
        if self.failed > 0 {
            return false;
        }
        match (self.dry_run, self.verify) {
            (true, _) | (false, VerifyMode::None) => true,
            _ => self.verified == self.archived,
        }
    }
}

/// Orders a chain root first (by parent links); unrelated archives keep their order.
pub fn order_chain(mut archives: Vec<Archive>) -> Vec<Archive> {
    let mut out: Vec<Archive> = Vec::new();
    while !archives.is_empty() {
        let ids: HashSet<String> = archives
            .iter()
            .map(|a| a.index.header.archive_id.clone())
            .collect();
        // The first archive whose parent is not among those left goes next.
        let i = archives
            .iter()
            .position(|a| {
                a.index
                    .header
                    .parent
                    .as_ref()
                    .is_none_or(|p| !ids.contains(&p.archive_id))
            })
            .unwrap_or(0);
        out.push(archives.remove(i));
    }
    out
}

/// Per archived message: where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum St {
    /// Not met yet in the archive stream.
    Pending,
    /// Already on the destination under this UID.
    There(u32),
    /// Queued for APPEND (or, in a dry run, would be).
    Queued,
    /// Appended; the server's `APPENDUID` (UIDVALIDITY, UID) when it sent one.
    Appended(Option<(u32, u32)>),
    Failed(String),
}

struct Rec {
    arch: usize,
    idx: usize,
    /// Index into the plan's folders.
    folder: usize,
    /// Index into the destination folder list.
    dest: usize,
    st: St,
    key: Option<MsgKey>,
    crlf_sha: [u8; 32],
    raw_sha: [u8; 32],
    lf_sha: [u8; 32],
    at_risk: bool,
    /// For a message whose only risk is 8-bit header bytes: SHA-256 of its header
    /// section (with the blank line) as archived, in CRLF form, and with bare LF made
    /// CRLF, so quick verification can fetch the header instead of the whole message.
    head: Option<[[u8; 32]; 3]>,
    flags: Vec<String>,
    size: u64,
    verified: Option<Result<(), String>>,
    /// Sent in CRLF form (the server refused the archived bare line ends).
    crlf_sent: bool,
}

/// A destination folder (several source folders may land in one).
struct DestState {
    raw: String,
    ambiguous: HashSet<String>,
    state: FolderState,
    permanent: Option<Vec<String>>,
    broken: Option<String>,
}

struct Job {
    gid: usize,
    mailbox: Arc<str>,
    flags: Vec<String>,
    date: Option<String>,
    bytes: Vec<u8>,
    binary: bool,
    key: MsgKey,
    dest: usize,
    /// The bytes were turned into CRLF form after the server refused bare line ends.
    crlf: bool,
    /// Sent in an APPEND of its own (a MULTIAPPEND holding it was refused).
    alone: bool,
    _permit: OwnedSemaphorePermit,
}

enum Outcome {
    /// Appended: bytes sent, and whether in CRLF form.
    /// Bytes sent, whether as the CRLF form, and the `APPENDUID` answer if any.
    Appended(u64, bool, Option<(u32, u32)>),
    Failed(String),
}

/// Memory allowed for messages waiting to be appended, in KiB (a message larger than
/// this waits for the queue to empty and goes alone).
const QUEUE_BUDGET_KIB: u32 = 24 * 1024;
/// Per connection: APPENDs in flight before waiting for an answer.
const WINDOW_MSGS: usize = 64;
const WINDOW_BYTES: usize = 8 << 20;
/// A MULTIAPPEND holds at most this many messages, or bytes (a message over it goes
/// alone): two batches fit the window, so the server always has the next one.
const BATCH_MSGS: usize = 32;
const BATCH_BYTES: usize = 4 << 20;
/// Attempts for an APPEND the server asked us to retry later.
const RETRIES: u32 = 4;

fn imap_date(rfc3339: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|d| d.format("%d-%b-%Y %H:%M:%S %z").to_string())
}

fn msg_id(a: &Archive, idx: usize) -> String {
    let m = &a.index.messages[idx];
    let mut s = crate::verify::message_identity(m);
    if let Some(mid) = &m.message_id {
        s.push_str(&format!(", Message-ID {mid}"));
    }
    s
}

/// Connects `n` sessions (at least one).
async fn connect_many(opts: &ImportOptions, n: usize) -> Result<Vec<ImapSession>, ImapError> {
    let futs = (0..n.max(1)).map(|_| ImapSession::connect(&opts.dest, &opts.creds, &opts.tls));
    let res = futures::future::join_all(futs).await;
    let mut out = Vec::new();
    let mut first_err = None;
    for r in res {
        match r {
            Ok(s) => out.push(s),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    // Fewer connections than asked is fine (a per-user connection limit); none is not.
    if out.is_empty() {
        return Err(first_err.expect("at least one attempt"));
    }
    Ok(out)
}

/// Learns what one destination folder holds.
async fn learn(
    s: &mut ImapSession,
    raw: &str,
    ambiguous: &HashSet<String>,
    read_only: bool,
) -> Result<(FolderState, Option<Vec<String>>), ImapError> {
    let st = if read_only {
        s.examine(raw).await?
    } else {
        s.select(raw).await?
    };
    let state = folder_state(s, st.exists, ambiguous, true).await?;
    if !read_only {
        s.unselect().await?;
    }
    // An empty list means the server did not say: every flag is taken.
    let permanent = (!st.permanent_flags.is_empty()).then_some(st.permanent_flags);
    Ok((state, permanent))
}

/// What verification needs of a folder (read-only): its messages, with or without
/// each one's Message-ID, and its UIDVALIDITY.
async fn learn_for_verify(
    s: &mut ImapSession,
    raw: &str,
    ambiguous: &HashSet<String>,
    with_ids: bool,
) -> Result<(FolderState, Option<u32>), ImapError> {
    let st = s.examine(raw).await?;
    let state = folder_state(s, st.exists, ambiguous, with_ids).await?;
    Ok((state, st.uidvalidity))
}

/// The messages of the open folder (`exists` of them). `with_ids` reads each one's
/// Message-ID, and the bytes of those that must be compared by bytes; without, only
/// what the server keeps in its index (UID, size, flags, INTERNALDATE).
async fn folder_state(
    s: &mut ImapSession,
    exists: u32,
    ambiguous: &HashSet<String>,
    with_ids: bool,
) -> Result<FolderState, ImapError> {
    let ids = if with_ids {
        s.identities(exists).await?
    } else {
        s.metadata(exists).await?
    };
    let msgs: Vec<Existing> = ids
        .into_iter()
        .filter_map(|m| {
            Some(Existing {
                uid: m.uid?,
                size: m.size.unwrap_or(0) as u64,
                message_id: m.header_fields.as_deref().and_then(plan::message_id_of),
                flags: m.flags.unwrap_or_default(),
                date: m
                    .internaldate
                    .as_deref()
                    .and_then(parse_internaldate)
                    .map(|d| d.timestamp()),
                internaldate: m.internaldate,
                loose: None,
                head_loose: None,
            })
        })
        .collect();
    let mut state = FolderState::new(msgs);
    if with_ids {
        let need = state.need_bytes(ambiguous);
        s.fetch_bodies(&need, |uid, b| state.set_bytes(uid, b))
            .await?;
    }
    Ok(state)
}

/// Connections a folder's learning or verification may use before its loss is fatal.
const FOLDER_TRIES: u32 = 4;

/// Runs `f` over destination folders one after the other on one session (Dovecot 2.3
/// panics on a lock when several sessions of one user open freshly created folders at
/// once). A folder whose connection is lost is tried once more on a new connection.
async fn over_folders<T, F, Fut>(
    opts: &ImportOptions,
    mut sessions: Vec<ImapSession>,
    folders: Vec<usize>,
    f: F,
) -> (Vec<ImapSession>, Vec<(usize, Result<T, ImapError>)>)
where
    F: Fn(ImapSession, usize) -> Fut,
    Fut: std::future::Future<Output = (ImapSession, Result<T, ImapError>)>,
{
    let mut results = Vec::new();
    let mut cur = sessions.pop();
    for i in folders {
        let mut tries = 0;
        loop {
            let s = match cur.take() {
                Some(s) => s,
                None => match ImapSession::connect(&opts.dest, &opts.creds, &opts.tls).await {
                    Ok(s) => s,
                    Err(e) => {
                        results.push((i, Err(e)));
                        break;
                    }
                },
            };
            let (s, r) = f(s, i).await;
            match r {
                Err(e) if e.is_connection_lost() => {
                    tries += 1;
                    if tries >= FOLDER_TRIES {
                        results.push((i, Err(e)));
                        break;
                    }
                    // A busy server (or Dovecot's lock panic) drops a session now and
                    // then; give it a moment before the fresh connection.
                    tokio::time::sleep(std::time::Duration::from_millis(250 << tries)).await;
                }
                r => {
                    cur = Some(s);
                    results.push((i, r));
                    break;
                }
            }
        }
    }
    sessions.extend(cur);
    (sessions, results)
}

/// Imports `archives` (a chain is ordered root first) into the destination. `progress`
/// counts message bytes (sized by the caller: the archives' `message_bytes`).
pub async fn import(
    archives: Vec<Archive>,
    opts: &ImportOptions,
    progress: &Progress,
) -> Result<ImportReport, ImportError> {
    let started = std::time::Instant::now();
    let archives = Arc::new(order_chain(archives));
    // Folders across the chain, first record wins; subscriptions add up.
    let mut folders: Vec<FolderRecord> = Vec::new();
    for a in archives.iter() {
        for f in &a.index.folders {
            match folders.iter_mut().find(|x| x.name == f.name) {
                Some(x) => x.subscribed |= f.subscribed,
                None => folders.push(f.clone()),
            }
        }
    }
    if folders.is_empty() {
        return Err(ImportError::Empty);
    }
    let mut rep = ImportReport {
        destination: opts.dest.to_string(),
        archives: archives
            .iter()
            .map(|a| a.path.display().to_string())
            .collect(),
        dry_run: opts.dry_run,
        verify: opts.verify,
        ..Default::default()
    };

    let mut sessions = connect_many(opts, opts.jobs).await?;
    if sessions.len() < opts.jobs.max(1) {
        rep.notes.push(format!(
            "{} of {} connections opened (the server limits connections); continuing with fewer",
            sessions.len(),
            opts.jobs.max(1)
        ));
    }
    if !sessions[0].is_tls() {
        rep.notes.push(format!(
            "{}: the session ran in clear text (--allow-plaintext; the server offers no STARTTLS)",
            opts.dest
        ));
    }
    let caps: DestCaps = sessions[0].dest_caps();
    let list = sessions[0].list().await?;
    let ns = sessions[0].namespace().await?;
    let layout = DestLayout::from_listing(&list, ns, caps.create_special_use);
    let plan: Plan = plan::plan_folders(&folders, &layout, &opts.plan)?;

    // Destination folders (distinct), and the records that go into each.
    let mut dests: Vec<DestState> = Vec::new();
    let mut folder_dest: Vec<usize> = Vec::new();
    for fp in &plan.folders {
        let i = match dests.iter().position(|d| d.raw == fp.dest_raw) {
            Some(i) => i,
            None => {
                dests.push(DestState {
                    raw: fp.dest_raw.clone(),
                    ambiguous: HashSet::new(),
                    state: FolderState::default(),
                    permanent: None,
                    broken: None,
                });
                dests.len() - 1
            }
        };
        folder_dest.push(i);
    }
    let folder_ix: HashMap<&str, usize> = plan
        .folders
        .iter()
        .enumerate()
        .map(|(i, f)| (f.source.as_str(), i))
        .collect();
    let mut recs: Vec<Rec> = Vec::new();
    let mut gid_of: HashMap<(usize, usize), usize> = HashMap::new();
    for (ai, a) in archives.iter().enumerate() {
        for (mi, m) in a.index.messages.iter().enumerate() {
            let Some(&fi) = folder_ix.get(m.folder.as_str()) else {
                continue;
            };
            gid_of.insert((ai, mi), recs.len());
            let mut raw_sha = [0u8; 32];
            let _ = hex::decode_to_slice(&m.sha256, &mut raw_sha);
            recs.push(Rec {
                arch: ai,
                idx: mi,
                folder: fi,
                dest: folder_dest[fi],
                st: St::Pending,
                key: None,
                crlf_sha: [0; 32],
                raw_sha,
                lf_sha: [0; 32],
                at_risk: false,
                head: None,
                flags: Vec::new(),
                size: m.size,
                verified: None,
                crlf_sent: false,
            });
        }
    }
    for (di, d) in dests.iter_mut().enumerate() {
        d.ambiguous = plan::ambiguous_ids(recs.iter().filter(|r| r.dest == di).map(|r| {
            let m = &archives[r.arch].index.messages[r.idx];
            (m.message_id.as_deref(), m.sha256.as_str())
        }));
    }

    // Folders: parents first, then each planned folder; subscriptions as the source had.
    let mut created: HashSet<usize> = HashSet::new();
    for p in &plan.parents {
        rep.parents_created.push(p.dest.clone());
        if !opts.dry_run {
            let c = sessions[0].create_folder(&p.dest_raw, None).await?;
            if !c.ok && !c.already_exists() {
                rep.notes.push(format!(
                    "cannot create parent folder {:?}: {} {}",
                    p.dest, c.status, c.text
                ));
            }
        }
    }
    for (fi, fp) in plan.folders.iter().enumerate() {
        if fp.create && !opts.dry_run {
            let c = sessions[0]
                .create_folder(&fp.dest_raw, fp.create_role.as_deref())
                .await?;
            if !c.ok && !c.already_exists() {
                dests[folder_dest[fi]].broken = Some(format!(
                    "cannot create folder {:?}: {} {}",
                    fp.dest, c.status, c.text
                ));
            }
        }
        if fp.create {
            created.insert(fi);
        }
        if fp.subscribe && !opts.dry_run {
            let c = sessions[0].subscribe(&fp.dest_raw).await?;
            if !c.ok {
                rep.notes.push(format!(
                    "cannot subscribe {:?}: {} {}",
                    fp.dest, c.status, c.text
                ));
            }
        }
    }

    let mut seconds = PhaseSeconds {
        prepare: started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let phase = std::time::Instant::now();
    // What each destination folder already holds.
    let to_learn: Vec<usize> = (0..dests.len())
        .filter(|&di| {
            dests[di].broken.is_none()
                && !(opts.dry_run
                    && plan
                        .folders
                        .iter()
                        .enumerate()
                        .any(|(fi, f)| folder_dest[fi] == di && f.create))
        })
        .collect();
    let shared: Arc<Vec<(String, HashSet<String>)>> = Arc::new(
        dests
            .iter()
            .map(|d| (d.raw.clone(), d.ambiguous.clone()))
            .collect(),
    );
    let dry = opts.dry_run;
    let sh = shared.clone();
    let (s2, learned) = over_folders(opts, sessions, to_learn, move |mut s, di| {
        let sh = sh.clone();
        async move {
            let r = learn(&mut s, &sh[di].0, &sh[di].1, dry).await;
            (s, r)
        }
    })
    .await;
    sessions = s2;
    for (di, r) in learned {
        match r {
            Ok((state, perm)) => {
                dests[di].state = state;
                dests[di].permanent = perm;
            }
            Err(e) if e.is_connection_lost() => {
                return Err(ImportError::Learn {
                    folder: dests[di].raw.clone(),
                    tries: FOLDER_TRIES,
                    source: e,
                })
            }
            Err(e) => dests[di].broken = Some(e.to_string()),
        }
    }

    seconds.learn = phase.elapsed().as_secs_f64();
    let phase = std::time::Instant::now();
    // Stream the archives: decide each message, queue the missing ones.
    let verify_mode = opts.verify;
    let budget = Arc::new(Semaphore::new(QUEUE_BUDGET_KIB as usize));
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<(usize, Outcome)>();
    let ctx = Arc::new(WorkerCtx {
        opts: opts.clone(),
        literal_plus: caps.literal_plus,
        multiappend: caps.multiappend,
    });
    let mut workers = Vec::new();
    let mut queues = Vec::new();
    if !opts.dry_run {
        for s in sessions.drain(..) {
            let (tx, rx) = mpsc::channel::<Job>(1024);
            queues.push(tx);
            workers.push(tokio::spawn(worker(
                s,
                rx,
                out_tx.clone(),
                ctx.clone(),
                progress.clone(),
            )));
        }
    }
    drop(out_tx);
    // Only the router holds the queues' senders and only the workers their receivers:
    // if every connection is lost, sending fails and the archive reader stops instead
    // of waiting forever.
    let mut router = Router::new(queues, dests.len());
    // Folders to verify while others still append (see `Sealer`).
    let (seal_tx, mut seal_rx) = mpsc::unbounded_channel::<Sealed>();
    let early_on = !opts.dry_run && opts.verify != VerifyMode::None;
    let mut sealer = Sealer::new(&recs, dests.len(), early_on.then_some(seal_tx));
    let gid_dest: Vec<usize> = recs.iter().map(|r| r.dest).collect();
    let dest_raw: Vec<Arc<str>> = dests.iter().map(|d| Arc::from(d.raw.as_str())).collect();
    let streamer = {
        let archives = archives.clone();
        let budget = budget.clone();
        let progress = progress.clone();
        let plan_names: Vec<String> = plan.folders.iter().map(|f| f.source.clone()).collect();
        let mut dests = std::mem::take(&mut dests);
        let mut recs = std::mem::take(&mut recs);
        let caps = caps.clone();
        tokio::task::spawn_blocking(move || {
            let mut dropped: HashMap<(usize, String), u64> = HashMap::new();
            let mut err = None;
            // The record the previous member decided: counted when the next one comes
            // (or the archive ends), so every way a decision returns is counted once.
            let mut deciding: Option<usize> = None;
            for (ai, a) in archives.iter().enumerate() {
                let r = a.stream(|member| -> Result<(), ReadError> {
                    if let Some(g) = deciding.take() {
                        sealer.decided(g, &recs, &archives, verify_mode);
                    }
                    let Member::Message { record, bytes } = member else {
                        return Ok(());
                    };
                    let Some(&gid) = gid_of.get(&(ai, record)) else {
                        return Ok(());
                    };
                    let rec = &mut recs[gid];
                    if rec.st != St::Pending {
                        return Ok(());
                    }
                    deciding = Some(gid);
                    let m = &a.index.messages[record];
                    progress.set_message(plan_names[rec.folder].clone());
                    let d = &mut dests[rec.dest];
                    if let Some(b) = &d.broken {
                        rec.st = St::Failed(b.clone());
                        progress.inc(rec.size);
                        return Ok(());
                    }
                    if crate::archive::sha256_hex(bytes) != m.sha256 {
                        rec.st = St::Failed("damaged in the archive (SHA-256 differs from the index)".into());
                        progress.inc(rec.size);
                        return Ok(());
                    }
                    let date = m
                        .internaldate
                        .as_deref()
                        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
                        .map(|d| d.timestamp());
                    let key = MsgKey::of(bytes, &d.ambiguous, date);
                    if key.sizes[1] == bytes.len() as u64 {
                        // No bare line ends: every server form is the archived bytes.
                        rec.crlf_sha = rec.raw_sha;
                        rec.lf_sha = rec.raw_sha;
                    } else {
                        rec.crlf_sha = plan::crlf_sha256(bytes);
                        rec.lf_sha = plan::lf_crlf_sha256(bytes);
                    }
                    rec.at_risk = key.at_risk;
                    let binary = memchr::memchr(0, bytes).is_some();
                    if rec.at_risk && verify_mode == VerifyMode::Quick && !binary {
                        rec.head = plan::header_forms(bytes);
                    }
                    let (keep, drop) = plan::split_flags(&m.flags, d.permanent.as_deref());
                    rec.flags = keep;
                    let flags = &rec.flags;
                    if let Some(e) = d.state.claim_pref(&key, |e| plan::same_flags(flags, &e.flags)) {
                        rec.st = St::There(e.uid);
                        rec.key = Some(key);
                        progress.inc(rec.size);
                        return Ok(());
                    }
                    for k in drop {
                        *dropped.entry((rec.folder, k)).or_default() += 1;
                    }
                    if binary && !caps.binary {
                        rec.st = St::Failed(
                            "holds NUL bytes and the server offers no BINARY: not importable without altering it".into(),
                        );
                        progress.inc(rec.size);
                        return Ok(());
                    }
                    if let Some(lim) = caps.appendlimit {
                        if bytes.len() as u64 > lim {
                            rec.st = St::Failed(format!(
                                "{} bytes is over the server's APPENDLIMIT of {lim}",
                                bytes.len()
                            ));
                            progress.inc(rec.size);
                            return Ok(());
                        }
                    }
                    if bytes.is_empty() {
                        rec.st = St::Failed("an empty message cannot be appended".into());
                        progress.inc(rec.size);
                        return Ok(());
                    }
                    rec.st = St::Queued;
                    rec.key = Some(key.clone());
                    if dry {
                        progress.inc(rec.size);
                        return Ok(());
                    }
                    let kib = ((bytes.len() >> 10) as u32 + 1).min(QUEUE_BUDGET_KIB);
                    let permit = futures::executor::block_on(budget.clone().acquire_many_owned(kib))
                        .expect("budget semaphore never closes");
                    let job = Job {
                        gid,
                        mailbox: dest_raw[rec.dest].clone(),
                        flags: rec.flags.clone(),
                        date: m.internaldate.as_deref().and_then(imap_date),
                        bytes: bytes.to_vec(),
                        binary,
                        key,
                        dest: rec.dest,
                        crlf: false,
                        alone: false,
                        _permit: permit,
                    };
                    if !router.send(rec.dest, job) {
                        rec.st = St::Failed("not sent: every connection to the server was lost".into());
                    }
                    Ok(())
                });
                if let Some(g) = deciding.take() {
                    sealer.decided(g, &recs, &archives, verify_mode);
                }
                if let Err(e) = r {
                    err = Some(e);
                    break;
                }
            }
            drop(router);
            drop(sealer);
            (recs, dests, dropped, err)
        })
    };
    // Outcomes arrive while the archive streams; a folder whose records are all decided
    // and answered goes to early verification.
    let (verify_tx, verify_rx) = mpsc::unbounded_channel::<(usize, Vec<VerifyItem>)>();
    let verifier = tokio::spawn(early_verify(verify_rx, opts.clone(), shared.clone()));
    let mut outcomes: Vec<(usize, Outcome)> = Vec::new();
    // gid → the APPENDUID of an appended message; `None` inside: no UID; absent: failed.
    let mut answered: HashMap<usize, Option<Option<(u32, u32)>>> = HashMap::new();
    // Sealed folders still waiting for answers: their items and how many answers.
    let mut waiting: HashMap<usize, (Vec<(VerifyItem, bool)>, usize)> = HashMap::new();
    let ready = |items: Vec<(VerifyItem, bool)>,
                 answered: &HashMap<usize, Option<Option<(u32, u32)>>>|
     -> Vec<VerifyItem> {
        items
            .into_iter()
            .filter_map(|(mut it, queued)| {
                if queued {
                    let (v, u) = answered.get(&it.gid)?.as_ref()?.unzip();
                    it.uid = u;
                    it.uidvalidity = v;
                }
                Some(it)
            })
            .collect()
    };
    let mut seals_open = true;
    loop {
        tokio::select! {
            o = out_rx.recv() => {
                let Some((gid, o)) = o else { break };
                answered.insert(gid, match &o {
                    Outcome::Appended(_, _, uid) => Some(*uid),
                    Outcome::Failed(_) => None,
                });
                let d = gid_dest[gid];
                if let Some((_, n)) = waiting.get_mut(&d) {
                    *n -= 1;
                    if *n == 0 {
                        let (items, _) = waiting.remove(&d).expect("present");
                        let _ = verify_tx.send((d, ready(items, &answered)));
                    }
                }
                outcomes.push((gid, o));
            }
            sealed = seal_rx.recv(), if seals_open => {
                let Some(Sealed { dest, items }) = sealed else {
                    seals_open = false;
                    continue;
                };
                let n = items
                    .iter()
                    .filter(|(it, queued)| *queued && !answered.contains_key(&it.gid))
                    .count();
                if n == 0 {
                    let _ = verify_tx.send((dest, ready(items, &answered)));
                } else {
                    waiting.insert(dest, (items, n));
                }
            }
        }
    }
    drop(verify_tx);
    let (early, early_session) = verifier.await.expect("early verification panicked");
    let (mut recs, mut dests, dropped, err) = streamer.await.expect("archive reader panicked");
    for w in workers {
        if let Some(s) = w.await.expect("append worker panicked") {
            sessions.push(s);
        }
    }
    sessions.extend(early_session);
    for (gid, res) in early.values().flatten() {
        recs[*gid].verified = Some(res.clone());
    }
    if let Some(e) = err {
        return Err(e.into());
    }
    for (gid, o) in outcomes {
        match o {
            Outcome::Appended(n, crlf, uid) => {
                recs[gid].st = St::Appended(uid);
                recs[gid].crlf_sent = crlf;
                rep.bytes_appended += n;
            }
            Outcome::Failed(r) => recs[gid].st = St::Failed(r),
        }
    }
    for r in recs.iter_mut() {
        match r.st {
            St::Pending => r.st = St::Failed("not found in the archive's data".into()),
            St::Queued if !opts.dry_run => {
                r.st = St::Failed("queued but never answered by the server".into())
            }
            _ => {}
        }
    }
    progress.finish();

    seconds.append = phase.elapsed().as_secs_f64();
    let phase = std::time::Instant::now();
    // Verification on the destination.
    if !opts.dry_run && opts.verify != VerifyMode::None {
        if sessions.is_empty() {
            sessions = connect_many(opts, 1).await?;
        }
        let to_check: Vec<usize> = (0..dests.len())
            .filter(|&di| dests[di].broken.is_none() && !early.contains_key(&di))
            .collect();
        let mut per_dest: Vec<Vec<VerifyItem>> = vec![Vec::new(); dests.len()];
        for (gid, r) in recs.iter().enumerate() {
            if matches!(r.st, St::There(_) | St::Appended(_)) && !early.contains_key(&r.dest) {
                let m = &archives[r.arch].index.messages[r.idx];
                per_dest[r.dest].push(verify_item(gid, r, m, opts.verify));
            }
        }
        let input: Arc<VerifyInput> = Arc::new(
            dests
                .iter()
                .zip(per_dest)
                .map(|(d, v)| (d.raw.clone(), d.ambiguous.clone(), v))
                .collect(),
        );
        let inp = input.clone();
        let (s2, checked) = over_folders(
            opts,
            std::mem::take(&mut sessions),
            to_check,
            move |mut s, di| {
                let inp = inp.clone();
                async move {
                    let (raw, amb, items) = &inp[di];
                    let r = verify_folder(&mut s, raw, amb, items).await;
                    (s, r)
                }
            },
        )
        .await;
        sessions = s2;
        for (di, r) in checked {
            match r {
                Ok(v) => {
                    for (gid, res) in v {
                        recs[gid].verified = Some(res);
                    }
                }
                Err(e) => {
                    for it in &input[di].2 {
                        recs[it.gid].verified = Some(Err(format!("cannot verify: {e}")));
                    }
                    dests[di].broken.get_or_insert(e.to_string());
                }
            }
        }
    }

    seconds.verify = phase.elapsed().as_secs_f64();
    rep.seconds = seconds;
    // The report, per source folder.
    for (fi, fp) in plan.folders.iter().enumerate() {
        let mut fr = FolderReport {
            folder: fp.source.clone(),
            destination: fp.dest.clone(),
            placed_by: Some(fp.reason.clone()),
            created: created.contains(&fi),
            renamed_levels: fp.renamed_levels.clone(),
            ..Default::default()
        };
        let mut kws: Vec<(String, u64)> = dropped
            .iter()
            .filter(|((f, _), _)| *f == fi)
            .map(|((_, k), n)| (k.clone(), *n))
            .collect();
        kws.sort();
        fr.dropped_keywords = kws;
        for r in recs.iter().filter(|r| r.folder == fi) {
            fr.archived += 1;
            let id = || msg_id(&archives[r.arch], r.idx);
            match &r.st {
                St::There(_) => fr.already_there += 1,
                St::Appended(_) => {
                    fr.appended += 1;
                    if r.crlf_sent {
                        fr.sent_as_crlf += 1;
                    }
                }
                St::Queued => fr.to_append += 1,
                St::Failed(reason) => {
                    fr.failed.push(Failure {
                        id: id(),
                        reason: reason.clone(),
                    });
                    continue;
                }
                St::Pending => {}
            }
            match &r.verified {
                Some(Ok(())) => fr.verified += 1,
                Some(Err(reason)) => fr.failed.push(Failure {
                    id: id(),
                    reason: reason.clone(),
                }),
                None => {}
            }
        }
        rep.archived += fr.archived;
        rep.already_there += fr.already_there;
        rep.appended += fr.appended;
        rep.to_append += fr.to_append;
        rep.verified += fr.verified;
        rep.failed += fr.failed.len() as u64;
        rep.folders.push(fr);
    }
    for s in sessions {
        let _ = s.logout().await;
    }
    Ok(rep)
}

/// What verification checks of one decided record (`There` or `Appended`; a `Queued`
/// one gets its UID from the APPEND's answer later).
fn verify_item(gid: usize, r: &Rec, m: &MessageRecord, mode: VerifyMode) -> VerifyItem {
    let (uid, uidvalidity) = match r.st {
        St::There(u) => (Some(u), None),
        St::Appended(Some((v, u))) => (Some(u), Some(v)),
        _ => (None, None),
    };
    VerifyItem {
        gid,
        uid,
        uidvalidity,
        key: r.key.clone().expect("decided messages have a key"),
        flags: r.flags.clone(),
        date: m
            .internaldate
            .as_deref()
            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.timestamp()),
        crlf_sha: r.crlf_sha,
        raw_sha: r.raw_sha,
        lf_sha: r.lf_sha,
        bytes_too: mode == VerifyMode::Full || (r.at_risk && r.head.is_none()),
        head: if mode == VerifyMode::Full {
            None
        } else {
            r.head
        },
    }
}

/// A destination folder whose every archived message the reader has decided: what to
/// verify there once the queued ones are answered (`bool`: queued, UID unknown yet).
struct Sealed {
    dest: usize,
    items: Vec<(VerifyItem, bool)>,
}

/// Counts the records of each destination folder as the reader decides them, and hands
/// a folder to verification when its last one is decided. Folders usually lie one after
/// the other in an archive, so the first ones are verified while the rest append.
struct Sealer {
    left: Vec<usize>,
    gids: Vec<Vec<usize>>,
    tx: Option<mpsc::UnboundedSender<Sealed>>,
}

impl Sealer {
    fn new(recs: &[Rec], dests: usize, tx: Option<mpsc::UnboundedSender<Sealed>>) -> Sealer {
        let mut gids = vec![Vec::new(); dests];
        for (g, r) in recs.iter().enumerate() {
            gids[r.dest].push(g);
        }
        Sealer {
            left: gids.iter().map(Vec::len).collect(),
            gids,
            tx,
        }
    }

    /// Record `gid` has just been decided.
    fn decided(&mut self, gid: usize, recs: &[Rec], archives: &[Archive], mode: VerifyMode) {
        let d = recs[gid].dest;
        self.left[d] -= 1;
        let Some(tx) = self.tx.as_ref().filter(|_| self.left[d] == 0) else {
            return;
        };
        let items = self.gids[d]
            .iter()
            .filter(|&&g| matches!(recs[g].st, St::There(_) | St::Queued))
            .map(|&g| {
                let r = &recs[g];
                let m = &archives[r.arch].index.messages[r.idx];
                (verify_item(g, r, m, mode), r.st == St::Queued)
            })
            .collect();
        let _ = tx.send(Sealed { dest: d, items });
    }
}

/// Verifies the folders handed over while the import still appends into others, on
/// its own connection. A folder it cannot settle (no connection, an error) is left to
/// the verification after the appends, which retries.
async fn early_verify(
    mut rx: mpsc::UnboundedReceiver<(usize, Vec<VerifyItem>)>,
    opts: ImportOptions,
    folders: Arc<Vec<(String, HashSet<String>)>>,
) -> (VerifiedFolders, Option<ImapSession>) {
    let mut s: Option<ImapSession> = None;
    let mut gave_up = false;
    let mut done = HashMap::new();
    while let Some((di, items)) = rx.recv().await {
        if items.is_empty() {
            // Nothing arrived there to check: no reason to open a connection.
            done.insert(di, Vec::new());
            continue;
        }
        if s.is_none() && !gave_up {
            match ImapSession::connect(&opts.dest, &opts.creds, &opts.tls).await {
                Ok(c) => s = Some(c),
                Err(_) => gave_up = true,
            }
        }
        let Some(sess) = s.as_mut() else {
            continue;
        };
        match verify_folder(sess, &folders[di].0, &folders[di].1, &items).await {
            Ok(v) => {
                done.insert(di, v);
            }
            Err(e) if e.is_connection_lost() => s = None,
            Err(_) => {}
        }
    }
    (done, s)
}

/// Per destination folder verified early: each record's result.
type VerifiedFolders = HashMap<usize, Vec<(usize, Result<(), String>)>>;

/// Per destination folder: wire name, ambiguous Message-IDs, messages to check.
type VerifyInput = Vec<(String, HashSet<String>, Vec<VerifyItem>)>;

#[derive(Clone)]
struct VerifyItem {
    gid: usize,
    /// Where the message is, when known: learned before appending, or the server's
    /// `APPENDUID` answer.
    uid: Option<u32>,
    /// The UIDVALIDITY an `APPENDUID` named; the UID holds only while it is unchanged.
    uidvalidity: Option<u32>,
    key: MsgKey,
    flags: Vec<String>,
    date: Option<i64>,
    crlf_sha: [u8; 32],
    raw_sha: [u8; 32],
    lf_sha: [u8; 32],
    bytes_too: bool,
    /// Compare the header section only (see `Rec::head`); a mismatch falls back to the
    /// whole message.
    head: Option<[[u8; 32]; 3]>,
}

/// Checks each archived message of one destination folder against what it holds now.
async fn verify_folder(
    s: &mut ImapSession,
    raw: &str,
    ambiguous: &HashSet<String>,
    items: &[VerifyItem],
) -> Result<Vec<(usize, Result<(), String>)>, ImapError> {
    // When the server named every message's UID (APPENDUID, or learned before), the
    // folder's metadata is enough and the server reads no message file; reading each
    // one's Message-ID was most of the check's time. A UID that is not there sends the
    // check round again, matching by Message-ID and size.
    if items.iter().all(|i| i.uid.is_some()) {
        if let Some(done) = verify_folder_by(s, raw, ambiguous, items, false).await? {
            return Ok(done);
        }
    }
    Ok(verify_folder_by(s, raw, ambiguous, items, true)
        .await?
        .expect("matching by Message-ID always decides"))
}

/// One round of [`verify_folder`]; `None` when, without Message-IDs (`with_ids`
/// false), a message was not at its UID.
async fn verify_folder_by(
    s: &mut ImapSession,
    raw: &str,
    ambiguous: &HashSet<String>,
    items: &[VerifyItem],
    with_ids: bool,
) -> Result<Option<Vec<(usize, Result<(), String>)>>, ImapError> {
    let (mut state, uidvalidity) = learn_for_verify(s, raw, ambiguous, with_ids).await?;
    let mut out = Vec::new();
    let mut body_check: HashMap<u32, &VerifyItem> = HashMap::new();
    let mut head_check: HashMap<u32, &VerifyItem> = HashMap::new();
    // Known UIDs first, so a claim by key cannot take a message another record owns.
    let mut order: Vec<&VerifyItem> = items.iter().filter(|i| i.uid.is_some()).collect();
    order.extend(items.iter().filter(|i| i.uid.is_none()));
    for it in order {
        let uid = it
            .uid
            .filter(|_| it.uidvalidity.is_none() || it.uidvalidity == uidvalidity);
        let found = match uid {
            Some(u) => state.claim_uid(u).cloned(),
            None => None,
        };
        if found.is_none() && !with_ids {
            return Ok(None);
        }
        let found = found.or_else(|| {
            state
                .claim_pref(&it.key, |e| plan::same_flags(&it.flags, &e.flags))
                .cloned()
        });
        let Some(e) = found else {
            let near: Vec<String> = state
                .msgs
                .iter()
                .filter(|m| it.key.message_id.is_some() && m.message_id == it.key.message_id)
                .map(|m| format!("UID {} with {} bytes", m.uid, m.size))
                .collect();
            let mut why = "missing on the destination after the import".to_string();
            if !near.is_empty() {
                why.push_str(&format!(
                    " (the folder holds this Message-ID as {}; archived size {}, CRLF form {})",
                    near.join(", "),
                    it.key.sizes[0],
                    it.key.sizes[1]
                ));
            }
            out.push((it.gid, Err(why)));
            continue;
        };
        let mut problems = Vec::new();
        if !it.key.sizes.contains(&e.size) {
            problems.push(format!(
                "the server stores it altered: size differs (archived {} bytes, CRLF form {}, server {})",
                it.key.sizes[0], it.key.sizes[1], e.size
            ));
        }
        if !plan::same_flags(&it.flags, &e.flags) {
            problems.push(format!(
                "flags differ: archived ({}), server ({})",
                it.flags.join(" "),
                e.flags
                    .iter()
                    .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        if let Some(want) = it.date {
            let got = e.internaldate.as_deref().and_then(parse_internaldate);
            if got.map(|g| g.timestamp()) != Some(want) {
                problems.push(format!(
                    "INTERNALDATE differs: server {}",
                    e.internaldate.as_deref().unwrap_or("none")
                ));
            }
        }
        if !problems.is_empty() {
            out.push((it.gid, Err(problems.join("; "))));
            continue;
        }
        if it.bytes_too {
            body_check.insert(e.uid, it);
        } else if it.head.is_some() {
            head_check.insert(e.uid, it);
        } else {
            out.push((it.gid, Ok(())));
        }
    }
    if !head_check.is_empty() {
        // Servers that rewrite 8-bit header bytes (Cyrus) do it in the header: when the
        // stored header is the archived one, the message is. Anything else is settled
        // by the whole message below.
        let uids: Vec<u32> = head_check.keys().copied().collect();
        let mut same: HashSet<u32> = HashSet::new();
        s.fetch_section(&uids, "HEADER", |uid, head| {
            if let Some(want) = head_check.get(&uid).and_then(|it| it.head) {
                if want.contains(&sha2_raw(head)) {
                    same.insert(uid);
                }
            }
        })
        .await?;
        for (uid, it) in head_check {
            if same.contains(&uid) {
                out.push((it.gid, Ok(())));
            } else {
                body_check.insert(uid, it);
            }
        }
    }
    if !body_check.is_empty() {
        let uids: Vec<u32> = body_check.keys().copied().collect();
        let mut seen: HashSet<u32> = HashSet::new();
        s.fetch_bodies(&uids, |uid, body| {
            let Some(it) = body_check.get(&uid) else {
                return;
            };
            seen.insert(uid);
            let crlf = plan::crlf_sha256(body);
            let res = if crlf == it.crlf_sha
                || sha2_raw(body) == it.raw_sha
                || sha2_raw(body) == it.lf_sha
            {
                Ok(())
            } else if Some(plan::loose_sha256(body)) == it.key.loose {
                Err("the server altered the message: NUL or 8-bit bytes were rewritten (SHA-256 of the stored bytes differs)".into())
            } else {
                Err("bytes differ: SHA-256 of the server's copy (CRLF form) is not the archived one".into())
            };
            out.push((it.gid, res));
        })
        .await?;
        for (uid, it) in &body_check {
            if !seen.contains(uid) {
                out.push((it.gid, Err("the server returned no body to compare".into())));
            }
        }
    }
    Ok(Some(out))
}

fn sha2_raw(b: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(b).into()
}

struct WorkerCtx {
    opts: ImportOptions,
    literal_plus: bool,
    multiappend: bool,
}

/// Why an APPEND failed, and whether trying again later can help.
fn classify(text: &str) -> (String, bool) {
    let t = text.to_ascii_uppercase();
    if t.contains("[TOOBIG]") {
        (format!("too big for the server: {text}"), false)
    } else if t.contains("[OVERQUOTA]") {
        (format!("over the account's quota: {text}"), false)
    } else if crate::source::imap::session::is_throttle_text(text) || t.contains("[INUSE]") {
        (format!("the server asked to slow down: {text}"), true)
    } else {
        (format!("refused by the server: {text}"), false)
    }
}

/// One connection's APPEND loop: takes jobs from the shared queue, keeps a window of
/// Which connection appends into which destination folder. Dovecot appends more slowly
/// when two sessions append into one folder at once (each waits for the folder's lock
/// and re-reads what the other added): measured on 10,000 messages in 3 folders, one
/// connection took 0.90× the time of four sharing every folder. So a folder stays with
/// one connection, and a folder met for the first time goes to the connection with
/// the fewest folders; archives whose folders interleave then append in parallel.
struct Router {
    queues: Vec<Option<mpsc::Sender<Job>>>,
    of_dest: Vec<Option<usize>>,
    folders: Vec<usize>,
}

impl Router {
    fn new(queues: Vec<mpsc::Sender<Job>>, dests: usize) -> Router {
        Router {
            folders: vec![0; queues.len()],
            queues: queues.into_iter().map(Some).collect(),
            of_dest: vec![None; dests],
        }
    }

    /// Queues `job` for destination folder `dest` (blocking: called from the archive
    /// reader's thread). False when no connection is left.
    fn send(&mut self, dest: usize, mut job: Job) -> bool {
        loop {
            let w = match self.of_dest[dest] {
                Some(w) if self.queues[w].is_some() => w,
                _ => {
                    let Some(w) = (0..self.queues.len())
                        .filter(|&w| self.queues[w].is_some())
                        .min_by_key(|&w| self.folders[w])
                    else {
                        return false;
                    };
                    self.of_dest[dest] = Some(w);
                    self.folders[w] += 1;
                    w
                }
            };
            match self.queues[w]
                .as_ref()
                .expect("live queue")
                .blocking_send(job)
            {
                Ok(()) => return true,
                // That connection is gone for good: another takes its folders.
                Err(mpsc::error::SendError(j)) => {
                    job = j;
                    self.queues[w] = None;
                }
            }
        }
    }
}

/// APPENDs in flight, retries what the server asked to retry, and on a lost connection
/// reconnects and checks which in-flight messages arrived before sending them again.
async fn worker(
    session: ImapSession,
    mut rx: mpsc::Receiver<Job>,
    out: mpsc::UnboundedSender<(usize, Outcome)>,
    ctx: Arc<WorkerCtx>,
    progress: Progress,
) -> Option<ImapSession> {
    let mut s = Some(session);
    // Commands in flight, oldest first: a tag and its messages (several for a
    // MULTIAPPEND), with their attempt numbers.
    let mut inflight: VecDeque<(String, Vec<(Job, u32)>)> = VecDeque::new();
    let (mut inflight_msgs, mut inflight_bytes) = (0usize, 0usize);
    let mut retry: VecDeque<(Job, u32)> = VecDeque::new();
    let mut lost: Vec<(Job, u32)> = Vec::new();
    // Taken from the queue while filling a batch, but for another folder.
    let mut held: Option<Job> = None;
    let mut selected: Option<Arc<str>> = None;
    let mut drain = false;
    loop {
        if s.is_none() {
            selected = None;
            retry.extend(held.take().map(|j| (j, 0)));
            // What was in flight may or may not have reached the server.
            match reconnect(&ctx, &mut lost, &out, &progress).await {
                Some((sess, again)) => {
                    s = Some(sess);
                    retry.extend(again);
                }
                None => {
                    for (j, _) in lost.drain(..).chain(retry.drain(..)) {
                        let _ = out.send((
                            j.gid,
                            Outcome::Failed(
                                "connection to the server lost; rerun the import to finish".into(),
                            ),
                        ));
                    }
                    // What is still queued here fails too; the router sends the rest
                    // of these folders to the other connections.
                    rx.close();
                    while let Ok(j) = rx.try_recv() {
                        let _ = out.send((
                            j.gid,
                            Outcome::Failed(
                                "connection to the server lost; rerun the import to finish".into(),
                            ),
                        ));
                    }
                    return None;
                }
            }
        }
        let sess = s.as_mut().expect("connected");
        let full = drain
            || inflight_msgs >= WINDOW_MSGS
            || inflight_bytes >= WINDOW_BYTES
            || (!ctx.literal_plus && !inflight.is_empty());
        if inflight.is_empty() {
            drain = false;
        }
        let next = if full && !inflight.is_empty() {
            None
        } else if let Some(r) = retry.pop_front() {
            Some(r)
        } else if let Some(j) = held.take() {
            Some((j, 0))
        } else if inflight.is_empty() {
            rx.recv().await.map(|j| (j, 0))
        } else {
            // Never wait for the queue with answers pending: the reader may be
            // waiting for this connection's memory to free up.
            rx.try_recv().ok().map(|j| (j, 0))
        };
        let Some((job, attempt)) = next else {
            if inflight.is_empty() {
                return s;
            }
            match sess.wait_append().await {
                Ok(c) => {
                    if let Some(p) = inflight.iter().position(|(t, _)| *t == c.tag) {
                        let (_, jobs) = inflight.remove(p).expect("valid position");
                        inflight_msgs -= jobs.len();
                        inflight_bytes -= jobs.iter().map(|(j, _)| j.bytes.len()).sum::<usize>();
                        settle_command(jobs, c.ok, &c.text, &out, &mut retry, &progress).await;
                    }
                }
                Err(_) => {
                    lost.extend(inflight.drain(..).flat_map(|(_, jobs)| jobs));
                    (inflight_msgs, inflight_bytes) = (0, 0);
                    s = None;
                }
            }
            continue;
        };
        if selected.as_deref() != Some(&*job.mailbox) {
            // Dovecot appends several times faster into the folder the session has
            // open (it keeps the mailbox and its index open between APPENDs). Switch
            // only with nothing in flight, so every answer is an APPEND's.
            if !inflight.is_empty() {
                retry.push_front((job, attempt));
                drain = true;
                continue;
            }
            match sess.select(&job.mailbox).await {
                Ok(_) => selected = Some(job.mailbox.clone()),
                Err(e) if e.is_connection_lost() => {
                    lost.push((job, attempt));
                    s = None;
                    continue;
                }
                // APPEND works on an unselectable folder too; just go on.
                Err(_) => selected = Some(job.mailbox.clone()),
            }
        }
        // With MULTIAPPEND (and LITERAL+), the messages already queued for this folder
        // join this one's APPEND: the server saves them as one transaction. Dovecot
        // saved 10,000 messages about 4× faster in batches of 50 than one by one.
        let mut batch = vec![(job, attempt)];
        let batchable = |j: &Job| !j.alone && !j.binary;
        if ctx.literal_plus && ctx.multiappend && batchable(&batch[0].0) {
            let mut bytes = batch[0].0.bytes.len();
            while batch.len() < BATCH_MSGS && bytes < BATCH_BYTES {
                let Ok(j) = rx.try_recv() else { break };
                if j.mailbox != batch[0].0.mailbox || !batchable(&j) {
                    held = Some(j);
                    break;
                }
                bytes += j.bytes.len();
                batch.push((j, 0));
            }
        }
        let sent = {
            let reqs: Vec<AppendRequest> = batch
                .iter()
                .map(|(j, _)| AppendRequest {
                    mailbox_raw: &j.mailbox,
                    flags: &j.flags,
                    internaldate: j.date.as_deref(),
                    bytes: &j.bytes,
                    binary: j.binary,
                })
                .collect();
            if reqs.len() > 1 {
                sess.send_multiappend(&batch[0].0.mailbox, &reqs)
                    .await
                    .map(Ok)
            } else {
                sess.send_append(&reqs[0], ctx.literal_plus).await
            }
        };
        match sent {
            Ok(Ok(tag)) => {
                inflight_msgs += batch.len();
                inflight_bytes += batch.iter().map(|(j, _)| j.bytes.len()).sum::<usize>();
                inflight.push_back((tag, batch));
            }
            Ok(Err(c)) => settle_command(batch, c.ok, &c.text, &out, &mut retry, &progress).await,
            Err(_) => {
                lost.extend(inflight.drain(..).flat_map(|(_, jobs)| jobs));
                lost.extend(batch);
                (inflight_msgs, inflight_bytes) = (0, 0);
                s = None;
            }
        }
    }
}

/// Settles the messages of one answered APPEND command. A refused MULTIAPPEND saved
/// none of its messages (RFC 3502): each goes again in an APPEND of its own, so a
/// refusal (too big, over quota) stays with the message it is about.
async fn settle_command(
    mut jobs: Vec<(Job, u32)>,
    ok: bool,
    text: &str,
    out: &mpsc::UnboundedSender<(usize, Outcome)>,
    retry: &mut VecDeque<(Job, u32)>,
    progress: &Progress,
) {
    if jobs.len() == 1 {
        let (job, attempt) = jobs.pop().expect("one job");
        return settle(job, attempt, ok, text, out, retry, progress).await;
    }
    if !ok {
        for (mut job, attempt) in jobs.into_iter().rev() {
            job.alone = true;
            retry.push_front((job, attempt));
        }
        return;
    }
    let uids = crate::source::imap::dest::appenduid(text).filter(|(_, u)| u.len() == jobs.len());
    for (i, (job, _)) in jobs.into_iter().enumerate() {
        progress.inc(job.bytes.len() as u64);
        let uid = uids.as_ref().map(|(v, u)| (*v, u[i]));
        let _ = out.send((
            job.gid,
            Outcome::Appended(job.bytes.len() as u64, job.crlf, uid),
        ));
    }
}

async fn settle(
    job: Job,
    attempt: u32,
    ok: bool,
    text: &str,
    out: &mpsc::UnboundedSender<(usize, Outcome)>,
    retry: &mut VecDeque<(Job, u32)>,
    progress: &Progress,
) {
    if ok {
        progress.inc(job.bytes.len() as u64);
        let uid = crate::source::imap::dest::appenduid(text)
            .and_then(|(v, u)| (u.len() == 1).then(|| (v, u[0])));
        let _ = out.send((
            job.gid,
            Outcome::Appended(job.bytes.len() as u64, job.crlf, uid),
        ));
        return;
    }
    let t = text.to_ascii_lowercase();
    let bare = plan::crlf_len(&job.bytes) != job.bytes.len() as u64;
    if !job.crlf
        && bare
        && (t.contains("bare") || t.contains("newline") || t.contains("invalid header"))
    {
        // The server wants CRLF line ends (Cyrus: "Message contains bare newlines"):
        // send the CRLF form, which is what a server serves and verification compares.
        let mut job = job;
        let mut v = Vec::with_capacity(job.bytes.len() + 1024);
        plan::crlf_form(&job.bytes, &mut v);
        job.bytes = v;
        job.crlf = true;
        retry.push_front((job, attempt));
        return;
    }
    let (reason, again) = classify(text);
    if again && attempt + 1 < RETRIES {
        // Back off before the retry: 1 s, 2 s, 4 s.
        tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
        retry.push_back((job, attempt + 1));
        return;
    }
    progress.inc(job.bytes.len() as u64);
    let _ = out.send((job.gid, Outcome::Failed(reason)));
}

/// After a lost connection: connects again and sorts the jobs that were in flight into
/// those that reached the server (reported appended) and those to send again.
async fn reconnect(
    ctx: &WorkerCtx,
    lost: &mut Vec<(Job, u32)>,
    out: &mpsc::UnboundedSender<(usize, Outcome)>,
    progress: &Progress,
) -> Option<(ImapSession, Vec<(Job, u32)>)> {
    for attempt in 0..3u32 {
        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        let Ok(mut s) = ImapSession::connect(&ctx.opts.dest, &ctx.opts.creds, &ctx.opts.tls).await
        else {
            continue;
        };
        let mut again = Vec::new();
        let mut by_dest: HashMap<usize, Vec<(Job, u32)>> = HashMap::new();
        for (j, a) in lost.drain(..) {
            by_dest.entry(j.dest).or_default().push((j, a));
        }
        let mut failed = false;
        for (_, jobs) in by_dest {
            if failed {
                again.extend(jobs);
                continue;
            }
            // Compare by bytes: only what this run sent is in question.
            let amb: HashSet<String> = jobs
                .iter()
                .filter_map(|(j, _)| j.key.message_id.clone())
                .collect();
            match learn(&mut s, &jobs[0].0.mailbox, &amb, false).await {
                Ok((mut st, _)) => {
                    for (j, a) in jobs {
                        let mut k = j.key.clone();
                        k.by_bytes = true;
                        k.loose = Some(plan::loose_sha256(&j.bytes));
                        if st.claim(&k).is_some() {
                            progress.inc(j.bytes.len() as u64);
                            let _ = out.send((
                                j.gid,
                                Outcome::Appended(j.bytes.len() as u64, j.crlf, None),
                            ));
                        } else {
                            again.push((j, a));
                        }
                    }
                }
                Err(_) => {
                    failed = true;
                    again.extend(jobs);
                }
            }
        }
        if failed {
            lost.extend(again);
            continue;
        }
        return Some((s, again));
    }
    None
}
