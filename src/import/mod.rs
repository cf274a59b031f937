//! The importer: archives (or a chain) → a destination IMAP account, idempotent and
//! resumable, checked message by message on the destination afterwards.
//!
//! Correctness never depends on local state: before appending into a folder the
//! importer learns what the folder already holds (`reconcile::Census`) and skips those
//! messages, so a rerun after success appends nothing and a rerun after a crash or a cut
//! connection appends only what is missing. Messages stream from the archive one at a
//! time into a bounded queue; `--jobs` connections drain it with pipelined APPENDs.
//!
//! [`import`] runs the phases, one file each: `prepare` (connections, the destination's
//! layout, the plan, a record per archived message, folders), `learn` (what each
//! destination folder holds), `decide` (per message, with no I/O: there, append, or
//! why not), `append` (the APPEND connections), `verify` (each message checked on the
//! destination, early where a folder is done), `report`. Whether an archived message
//! is a server message is decided by [`crate::reconcile`] on the forms of
//! [`crate::mail::identity`], as `verify --against` does.

mod append;
mod decide;
mod learn;
pub mod plan;
mod prepare;
mod report;
mod stream;
mod verify;

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use crate::archive::{Archive, Chain, ReadError};
use crate::mail::flags::FlagSet;
use crate::mail::identity::{IdHash, MsgKey};
use crate::progress::Progress;
use crate::reconcile::Census;
use crate::source::imap::dest::DestCaps;
use crate::source::imap::{ImapError, ImapSession};
use crate::source::net::{Credentials, Endpoint, TlsOptions};
use append::{apply_outcomes, start_workers, AppendUid, Workers, QUEUE_BUDGET_KIB};
use learn::{census_for_part, learn_all};
use plan::{Plan, PlanOptions, Reason};
use prepare::{
    chain_folders, connect_many, dest_layout, dest_states, make_folders, open_sessions, passes,
    placement, records, Dests, Pass, Placement,
};
use report::{fill_report, report_unplaced};
use stream::{ArchiveReader, Decided, PassRead, Reader};
use verify::{
    add_missing_flags, early_verify, route_answers, verify_late, Checked, Sealed, Sealer,
    VerifiedFolders, VerifyItem,
};

pub(crate) use learn::census_of;

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
    /// `--folder`/`--exclude`: archived folders left out are not imported.
    pub filter: crate::export::FolderFilter,
    /// A message the destination holds as another delivery of the same mail (same
    /// Message-ID, header and body; only trace fields such as `Received` differ) counts
    /// as already there (dual delivery while an MX change spreads).
    pub other_deliveries: bool,
    /// The step timeout of every connection (`--timeout`).
    pub timeout: std::time::Duration,
    /// At most this many archived messages are worked on at once (one pass over the
    /// archive each; a folder holding more in parts of this many): `--messages-per-pass`.
    pub messages_per_pass: usize,
}

/// The default of [`ImportOptions::messages_per_pass`]: one pass for most accounts; at
/// a million messages (6 folders) 100 passes, reading the archive once between them,
/// against a peak RSS bounded by a pass and the census of the folder it imports (see
/// the README's *A million messages*). A pass costs little more than its round trips
/// now that neither the archive nor a folder is read again for it; its records, keys
/// and verification items (~850 bytes a message) sit beside the census of a folder
/// imported in parts, 53 bytes for each message of it on the server.
pub const MESSAGES_PER_PASS: usize = 10_000;

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
    #[error("the archives hold no folder to import (or none matches --folder/--exclude)")]
    Empty,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failure {
    /// The message: its source identity and archive member, and its Message-ID.
    pub id: String,
    pub reason: String,
}

/// A message that is on the destination but whose metadata differs there in a way the
/// import does not change (a later INTERNALDATE, flags beyond the archived ones).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Differing {
    pub id: String,
    pub detail: String,
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
    /// Of those, messages there as another delivery of the same mail (only trace
    /// fields differ; `--other-deliveries`).
    pub other_deliveries: u64,
    pub appended: u64,
    /// `--dry-run`: messages that would be appended.
    pub to_append: u64,
    pub verified: u64,
    /// In JSON: `failed` (how many) and `failures` (each with why), as in every report.
    #[serde(flatten, serialize_with = "crate::json::count_and_list")]
    pub failed: Vec<Failure>,
    /// Present messages whose metadata differs (notes, not failures).
    pub differing: Vec<Differing>,
    /// Keywords the destination folder does not keep (PERMANENTFLAGS), with counts.
    pub dropped_keywords: Vec<(String, u64)>,
    /// Levels renamed because they held the destination's delimiter.
    pub renamed_levels: Vec<String>,
    /// Messages sent with CRLF line ends because the server refused their bare LF/CR.
    pub sent_as_crlf: u64,
}

impl FolderReport {
    /// Adds the report of another part of the same folder.
    fn absorb(&mut self, o: FolderReport) {
        self.archived += o.archived;
        self.already_there += o.already_there;
        self.other_deliveries += o.other_deliveries;
        self.appended += o.appended;
        self.to_append += o.to_append;
        self.verified += o.verified;
        self.failed.extend(o.failed);
        self.differing.extend(o.differing);
        for (k, n) in o.dropped_keywords {
            match self.dropped_keywords.iter_mut().find(|(x, _)| *x == k) {
                Some((_, m)) => *m += n,
                None => self.dropped_keywords.push((k, n)),
            }
        }
        self.dropped_keywords.sort();
        self.sent_as_crlf += o.sent_as_crlf;
    }
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
    pub other_deliveries: u64,
    pub appended: u64,
    pub to_append: u64,
    pub verified: u64,
    pub failed: u64,
    /// Notes on present messages whose metadata differs.
    pub differing: u64,
    pub bytes_appended: u64,
    pub notes: Vec<String>,
    /// `--map` rules that matched no archived folder (`SRC=DST`).
    pub unmatched_maps: Vec<String>,
    /// Wall-clock seconds of each phase (connect and plan, learn what the destination
    /// holds, append, verify), so a slow import shows where its time went.
    pub seconds: PhaseSeconds,
    /// Passes over the archives (runs of destination folders, see `--messages-per-pass`).
    pub passes: u64,
    /// Readings of the archive chain from its start: a pass that begins past where the
    /// previous one stopped reads on from there (1 when the folders lie in the archive
    /// in the order of the passes).
    pub archive_readings: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct PhaseSeconds {
    pub prepare: f64,
    pub learn: f64,
    pub append: f64,
    pub verify: f64,
}

impl ImportReport {
    /// Adds one folder's report and its counts to the totals.
    fn add_folder(&mut self, fr: FolderReport) {
        self.archived += fr.archived;
        self.already_there += fr.already_there;
        self.other_deliveries += fr.other_deliveries;
        self.appended += fr.appended;
        self.to_append += fr.to_append;
        self.verified += fr.verified;
        self.failed += fr.failed.len() as u64;
        self.differing += fr.differing.len() as u64;
        self.folders.push(fr);
    }

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
    Appended(Option<AppendUid>),
    Failed(String),
}

struct Rec {
    /// Its archive in the chain and its record there (u32: a record a million times).
    arch: u32,
    idx: u32,
    /// Index into the plan's folders.
    folder: usize,
    /// Index into the destination folder list.
    dest: usize,
    st: St,
    /// Its identity, once its bytes were read (see `decide`).
    /// Shared with the verification item and the APPEND job made from it (a folder's
    /// items are held at once; a copy each was ~200 bytes a message).
    key: Option<Arc<MsgKey>>,
    /// SHA-256 of the archived bytes, from the index.
    raw_sha: [u8; 32],
    /// For a message whose only risk is 8-bit header bytes: SHA-256 of its header
    /// section (with the blank line) as archived, in CRLF form, and with bare LF made
    /// CRLF, so quick verification can fetch the header instead of the whole message.
    head: Option<Box<[[u8; 32]; 3]>>,
    flags: FlagSet,
    /// Flags the destination's copy of a message already there lacks: added with
    /// `UID STORE` before verification (flags are never removed).
    fix_flags: FlagSet,
    size: u64,
    verified: Option<Checked>,
    /// Sent in CRLF form (the server refused the archived bare line ends).
    crlf_sent: bool,
    /// Found on the destination as another delivery of the same mail.
    other_delivery: bool,
}

/// What a task needs to read one destination folder: its wire name, and the
/// Message-IDs its archived messages share (compared by bytes).
#[derive(Debug, Clone)]
struct DestRef {
    raw: String,
    ambiguous: HashSet<String>,
    /// See [`DestState::sizes_by_id`].
    sizes_by_id: std::collections::HashMap<IdHash, Vec<u64>>,
    /// See [`PartsSeen::taken`] (sorted; empty unless the folder is imported in parts).
    taken: Vec<u32>,
    /// A later part of a folder imported in parts: its census is the one the earlier
    /// parts kept (see `learn::census_for_part`); only the folder's status is read.
    status_only: bool,
}

/// A destination folder (several source folders may land in one).
struct DestState {
    raw: String,
    ambiguous: HashSet<String>,
    /// With `--other-deliveries`: the archived sizes of each Message-ID of the folder's
    /// archived messages. A server copy with that Message-ID at another size may be
    /// another delivery of the same mail; its bytes are read to tell (empty otherwise).
    sizes_by_id: std::collections::HashMap<IdHash, Vec<u64>>,
    /// Another delivery of the same mail stands for an archived message.
    other_deliveries: bool,
    state: Census,
    permanent: Option<Vec<String>>,
    /// As the census was learned.
    uidvalidity: Option<u32>,
    /// A folder imported in parts: what the parts share (see `learn::census_for_part`).
    parts: Option<PartsSeen>,
    broken: Option<String>,
}

/// What the parts of one destination folder's import share (the census itself is
/// kept in `DestState::state` from part to part).
struct PartsSeen {
    /// UIDVALIDITY when the first part learned the folder.
    uidvalidity: Option<u32>,
    /// UIDs of the server messages earlier parts found there already or verified
    /// (sorted at the end of each part): verification keeps off them.
    taken: Vec<u32>,
}

/// Imports `chain` (root first) into the destination. `progress` counts message bytes
/// (sized by the caller: the archives' `message_bytes`).
///
/// The destination folders are taken in passes of at most `messages_per_pass` archived
/// messages (a bigger folder in parts), each pass learning, deciding, appending and
/// verifying its folders end to end, so what is held per message is bounded by a
/// pass, not by the account. One thread reads the archive for every pass
/// ([`crate::archive::readings`]): once, when its folders lie in the order of the passes.
pub async fn import(
    chain: Chain,
    opts: &ImportOptions,
    progress: &Progress,
) -> Result<ImportReport, ImportError> {
    let started = std::time::Instant::now();
    let archives = Arc::new(chain.into_archives());
    let mut folders = chain_folders(&archives);
    folders.retain(|f| opts.filter.matches(&f.name));
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

    let mut sessions = open_sessions(opts, &mut rep.notes).await?;
    let caps: DestCaps = sessions[0].dest_caps();
    let layout = dest_layout(&mut sessions[0], &caps).await?;
    let source_ns = plan::source_namespace(
        archives
            .iter()
            .find_map(|a| a.index.header.namespace.as_ref()),
        &folders,
    );
    let plan: Plan = plan::plan_folders(&folders, &source_ns, &layout, &opts.plan)?;
    rep.unmatched_maps = plan.unmatched_maps.clone();

    let Dests {
        mut dests,
        folder_dest,
    } = dest_states(&plan, opts.other_deliveries);
    let placed = placement(&archives, &plan, &folder_dest, dests.len());
    let created = make_folders(
        &mut sessions[0],
        &plan,
        &mut dests,
        &folder_dest,
        opts.dry_run,
        &mut rep,
    )
    .await?;
    rep.seconds.prepare = started.elapsed().as_secs_f64();

    let passes = passes(&placed.counts, opts.messages_per_pass.max(1) as u64);
    rep.passes = passes.len() as u64;
    let ctx = Ctx {
        opts,
        archives: &archives,
        plan: &plan,
        folder_dest: &folder_dest,
        placed: &placed,
        caps: &caps,
        progress,
        reader: &ArchiveReader::start(archives.clone()),
    };
    let mut done = Done::default();
    for pass in passes {
        sessions = run_pass(&ctx, sessions, &mut dests, pass, &mut done).await?;
    }
    rep.archive_readings = ctx.reader.readings_from_start();
    progress.finish();

    rep.notes.extend(done.damage_notes());
    rep.notes.append(&mut done.notes);
    rep.bytes_appended = done.bytes_appended;
    rep.seconds.learn = done.seconds.learn;
    rep.seconds.append = done.seconds.append;
    rep.seconds.verify = done.seconds.verify;
    // A folder imported in parts has a report from each, in archive order.
    done.folders.sort_by_key(|(fi, _)| *fi);
    let mut merged: Vec<(usize, FolderReport)> = Vec::new();
    for (fi, fr) in done.folders {
        match merged.last_mut() {
            Some((last, into)) if *last == fi => into.absorb(fr),
            _ => merged.push((fi, fr)),
        }
    }
    for (fi, mut fr) in merged {
        fr.created = created.contains(&fi);
        rep.add_folder(fr);
    }
    report_unplaced(&mut rep, &archives, &placed.unplaced);
    // Every session logs out at once: one round trip, not one per connection.
    futures::future::join_all(sessions.into_iter().map(|s| s.logout())).await;
    Ok(rep)
}

/// What every pass reads and none changes.
struct Ctx<'a> {
    opts: &'a ImportOptions,
    archives: &'a Arc<Vec<Archive>>,
    plan: &'a Plan,
    folder_dest: &'a [usize],
    placed: &'a Placement,
    caps: &'a DestCaps,
    progress: &'a Progress,
    reader: &'a ArchiveReader,
}

/// What the passes have settled so far.
#[derive(Default)]
struct Done {
    /// Per planned folder, its report (each planned folder is in exactly one pass).
    folders: Vec<(usize, FolderReport)>,
    /// Per archive whose data could not be read to the end: why, and the messages past
    /// the damage, over every pass.
    damaged: std::collections::BTreeMap<usize, (String, u64)>,
    bytes_appended: u64,
    notes: Vec<String>,
    seconds: PhaseSeconds,
}

impl Done {
    fn damage_notes(&self) -> Vec<String> {
        self.damaged
            .values()
            .map(|(e, lost)| format!("{e} ({lost} message(s) after the damage not imported)"))
            .collect()
    }
}

/// One pass: the destination folders of `pass` (or its part of one) learned, their
/// messages decided and appended while the archive streams, then verified; what they
/// held is dropped before the next pass.
async fn run_pass(
    ctx: &Ctx<'_>,
    sessions: Vec<ImapSession>,
    dests: &mut Vec<DestState>,
    pass: Pass,
    done: &mut Done,
) -> Result<Vec<ImapSession>, ImportError> {
    let Ctx {
        opts,
        archives,
        plan,
        folder_dest,
        placed,
        ..
    } = *ctx;
    let slice = pass.dests.clone();
    let phase = std::time::Instant::now();
    let recs = records(archives, placed, folder_dest, dests, &pass);
    let (sessions, folders) = learn_pass(ctx, sessions, dests, &pass).await?;
    done.seconds.learn += phase.elapsed().as_secs_f64();

    let phase = std::time::Instant::now();
    let split = pass.split_dest();
    // The census the next part of the folder goes on with.
    let keep_census = split.filter(|_| !pass.ends_its_folders(&placed.counts));
    let (
        mut sessions,
        Appended {
            mut recs,
            early,
            dropped,
        },
    ) = append_pass(ctx, sessions, dests, recs, &folders, keep_census, done).await?;
    if let Some(p) = split.and_then(|di| dests[di].parts.as_mut()) {
        p.taken.extend(early.values().flat_map(|f| &f.uids));
        p.taken.extend(recs.iter().filter_map(|r| match r.st {
            St::There(uid) => Some(uid),
            _ => None,
        }));
    }
    done.seconds.append += phase.elapsed().as_secs_f64();

    let phase = std::time::Instant::now();
    if !opts.dry_run && opts.verify != VerifyMode::None {
        // The pass's folders that early verification did not settle.
        let to_check: Vec<usize> = slice
            .clone()
            .filter(|di| dests[*di].broken.is_none() && !early.contains_key(di))
            .collect();
        sessions = verify_late(
            opts, sessions, &mut recs, dests, archives, &folders, to_check,
        )
        .await?;
    }
    done.seconds.verify += phase.elapsed().as_secs_f64();

    let in_pass: Vec<usize> = (0..plan.folders.len())
        .filter(|&fi| slice.contains(&folder_dest[fi]))
        .collect();
    done.folders
        .extend(fill_report(plan, &in_pass, &recs, archives, &dropped));
    // What the pass learned of its folders served only it (a folder's Message-IDs
    // serve its every part, its census the next part).
    if let Some(p) = split.and_then(|di| dests[di].parts.as_mut()) {
        p.taken.sort_unstable();
    }
    let last_part = pass.ends_its_folders(&placed.counts);
    for di in slice {
        let d = &mut dests[di];
        if keep_census != Some(di) {
            d.state = Default::default();
        }
        if last_part {
            d.ambiguous = Default::default();
            d.sizes_by_id = Default::default();
        }
    }
    drop(recs);
    crate::alloc::give_back();
    Ok(sessions)
}

/// The learn step of a pass: what each of its destination folders already holds.
/// Returns the sessions and what the later steps need to read the folders again.
async fn learn_pass(
    ctx: &Ctx<'_>,
    sessions: Vec<ImapSession>,
    dests: &mut [DestState],
    pass: &Pass,
) -> Result<(Vec<ImapSession>, Arc<Vec<DestRef>>), ImportError> {
    let Ctx {
        opts,
        plan,
        folder_dest,
        ..
    } = *ctx;
    // A folder a dry run would create holds nothing yet.
    let to_learn: Vec<usize> = pass
        .dests
        .clone()
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
    let folders: Arc<Vec<DestRef>> = Arc::new(
        dests
            .iter()
            .map(|d| DestRef {
                raw: d.raw.clone(),
                ambiguous: d.ambiguous.clone(),
                sizes_by_id: d.sizes_by_id.clone(),
                taken: d
                    .parts
                    .as_ref()
                    .map(|p| p.taken.clone())
                    .unwrap_or_default(),
                status_only: d.parts.is_some(),
            })
            .collect(),
    );
    let split = pass.split_dest();
    // A later part decides against the census the earlier parts learned and claimed
    // from: reading the folder again for each part made a rerun's learning grow with
    // the square of the folder.
    let kept = split.map(|di| std::mem::take(&mut dests[di].state));
    let sessions = learn_all(opts, sessions, dests, to_learn, &folders).await?;
    if let Some(di) = split.filter(|&di| dests[di].broken.is_none()) {
        census_for_part(&mut dests[di], kept.unwrap_or_default());
    }
    Ok((sessions, folders))
}

/// What the append step of a pass settled.
struct Appended {
    recs: Vec<Rec>,
    /// The folders early verification settled.
    early: VerifiedFolders,
    /// Keywords dropped per (planned folder, keyword).
    dropped: std::collections::HashMap<(usize, String), u64>,
}

/// The append step of a pass: the archive streams, each message is decided and the
/// missing ones appended; a folder whose messages are all answered is verified at once,
/// while others still append; flags the copies already there lack are added.
async fn append_pass(
    ctx: &Ctx<'_>,
    mut sessions: Vec<ImapSession>,
    dests: &mut Vec<DestState>,
    recs: Vec<Rec>,
    folders: &Arc<Vec<DestRef>>,
    keep_census: Option<usize>,
    done: &mut Done,
) -> Result<(Vec<ImapSession>, Appended), ImportError> {
    let Ctx {
        opts,
        plan,
        caps,
        progress,
        reader: archive_reader,
        ..
    } = *ctx;
    // An earlier pass's early-verification connection serves this pass's too: the
    // append workers get `--jobs` connections, as in the first pass.
    let early_session = (sessions.len() > opts.jobs.max(1))
        .then(|| sessions.pop())
        .flatten();
    let dry = opts.dry_run;
    let budget = Arc::new(Semaphore::new(QUEUE_BUDGET_KIB as usize));
    let Workers {
        router,
        handles: workers,
        answers: out_rx,
    } = start_workers(
        if dry {
            Vec::new()
        } else {
            std::mem::take(&mut sessions)
        },
        opts,
        caps,
        dests.len(),
        progress,
    );
    // Folders to verify while others still append (see `Sealer`).
    let (seal_tx, seal_rx) = mpsc::unbounded_channel::<Sealed>();
    let early_on = !opts.dry_run && opts.verify != VerifyMode::None;
    let sealer = Sealer::new(&recs, dests.len(), early_on.then_some(seal_tx));
    let gid_dest: Vec<usize> = recs.iter().map(|r| r.dest).collect();
    let dest_raw: Vec<Arc<str>> = dests.iter().map(|d| Arc::from(d.raw.as_str())).collect();
    let streamer = archive_reader.read(PassRead::new(Reader {
        recs,
        dests: std::mem::take(dests),
        plan_names: plan.folders.iter().map(|f| f.source.clone()).collect(),
        dest_raw,
        caps: caps.clone(),
        mode: opts.verify,
        dry,
        budget,
        router,
        sealer,
        progress: progress.clone(),
        keep_census,
    }));
    // Outcomes arrive while the archive streams; a folder whose records are all decided
    // and answered goes to early verification.
    let (verify_tx, verify_rx) = mpsc::unbounded_channel::<(usize, Vec<VerifyItem>)>();
    let verifier = tokio::spawn(early_verify(
        verify_rx,
        opts.clone(),
        folders.clone(),
        early_on,
        early_session,
    ));
    let outcomes = route_answers(out_rx, seal_rx, &verify_tx, &gid_dest).await;
    drop(verify_tx);
    let (early, early_session) = verifier.await.expect("early verification panicked");
    let Decided {
        mut recs,
        dests: decided,
        dropped,
        damaged,
    } = streamer.await;
    *dests = decided;
    for w in workers {
        if let Some(s) = w.await.expect("append worker panicked") {
            sessions.push(s);
        }
    }
    sessions.extend(early_session);
    for (gid, res) in early.values().flat_map(|f| &f.results) {
        recs[*gid].verified = Some(res.clone());
    }
    for (ai, e, lost) in damaged {
        done.damaged.entry(ai).or_insert((e, 0)).1 += lost;
    }
    done.bytes_appended += apply_outcomes(&mut recs, outcomes, opts.dry_run);
    if !opts.dry_run && recs.iter().any(|r| !r.fix_flags.is_empty()) {
        if sessions.is_empty() {
            sessions = connect_many(opts, 1).await?;
        }
        add_missing_flags(&mut sessions[0], &recs, dests, &mut done.notes).await?;
    }
    Ok((
        sessions,
        Appended {
            recs,
            early,
            dropped,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `Rec` a message for the whole run: its size is per-message memory (the key
    /// is shared and counted once, see `Rec::key`).
    #[test]
    fn rec_stays_compact() {
        assert!(
            std::mem::size_of::<Rec>() <= 192,
            "{}",
            std::mem::size_of::<Rec>()
        );
        assert!(std::mem::size_of::<MsgKey>() <= 128);
    }
}
