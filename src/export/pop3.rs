//! The POP3 export workflow: one maildrop → folder `INBOX` of an archive, read-only.
//! It owns the plan (STAT, LIST and UIDL cross-checked; with `--since`, which messages
//! the chain already holds), the retrieval loop with reconnect-and-continue after a
//! dropped link, and the report of every difference between what the server announced
//! and what was archived. The network runs on this thread; the archive writer (zstd,
//! hashing, tar) on another, with a byte budget between them so memory stays bounded by
//! a few messages, never by the mailbox.
//!
//! Only read-only commands are ever sent, and the session never ends with QUIT: RFC 1939
//! servers commit in the UPDATE state that QUIT starts, and a session that ends any other
//! way commits nothing there. Reading with RETR is still recorded by some servers:
//! Dovecot marks every message sent by RETR `\Seen` when the session ends, QUIT or not.
//! So when the server offers TOP, each message is read with `TOP n` and a line count no
//! message reaches, which Dovecot does not record. TOP is only defined as "header, blank
//! line, N body lines", so each answer is checked against the LIST size
//! (`proto::judge_top`); a message whose answer is not what RETR would give is read again
//! with RETR, and the report names it, since the server may mark that one seen.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::spool::{Body, HOLD_MAX};
use super::{ExportReport, FolderFilter, FolderReport, Skipped};
use crate::archive::{
    ArchiveWriter, Chain, ChainError, Completeness, FolderInfo, MessageInfo, ParentRef, SourceRef,
    WriteError, WriterOptions,
};
use crate::mail::headers::{delivery_date, MAX_HEADER};
use crate::progress::Progress;
use crate::source::net::{Credentials, Endpoint, TlsOptions};
use crate::source::pop3::{
    judge_top, Pop3Client, Pop3Error, Pop3Options, RetrInfo, RetrSink, Retrieve, TopVerdict,
};

/// The archive folder every POP3 message goes to: POP3 knows only the maildrop.
pub const FOLDER: &str = "INBOX";

/// Bytes of retrieved messages that may wait for the writer. A message larger than this
/// still passes, alone.
const WRITE_BUDGET: u64 = 32 << 20;
/// A LIST size is the server's word; a lying one must not make us allocate gigabytes up
/// front. Bigger messages still arrive whole, the vector just grows.
const MAX_PREALLOC: u64 = 64 << 20;
/// Times one message may break the connection before it is skipped and reported.
const BREAKS_PER_MESSAGE: u32 = 3;

/// How hard to try to get a session back after the link drops or the server says the
/// maildrop is busy (`[IN-USE]`: POP3 servers lock the maildrop per session, and a
/// server may not yet have noticed that the previous session died).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Login attempts per outage, the first included.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Reconnections allowed over the whole export.
    pub max_reconnects: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_reconnects: 20,
        }
    }
}

/// Everything needed to export one POP3 account.
#[derive(Debug, Clone)]
pub struct Pop3Job {
    pub endpoint: Endpoint,
    pub creds: Credentials,
    pub tls: TlsOptions,
    pub client: Pop3Options,
    pub retry: RetryPolicy,
    /// `--since`: the archives already made of this account (a whole chain, in any
    /// order); its newest is the parent of the new delta.
    pub since: Vec<PathBuf>,
    /// Keys for `since` archives that are encrypted.
    pub since_keys: crate::archive::seal::Identities,
}

/// What the server announced.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ServerFacts {
    pub stat_messages: u64,
    pub stat_octets: u64,
    pub list_messages: u64,
    pub list_octets: u64,
    /// The server answered UIDL (otherwise messages are identified by content).
    pub uidl: bool,
    pub pipelining: bool,
    /// The server offers TOP (CAPA), so messages are read without RETR.
    pub top: bool,
    pub tls: bool,
    /// How the login was made (PLAIN, USER/PASS, APOP, XOAUTH2, OAUTHBEARER).
    pub login: String,
    /// The session is in RFC 6856 UTF-8 mode (mail with raw UTF-8 headers as stored).
    pub utf8: bool,
}

/// `--since` bookkeeping.
#[derive(Debug, Clone, Serialize, Default)]
pub struct IncrementalFacts {
    pub since: Vec<String>,
    /// Messages on the server the chain already holds (not stored again).
    pub already_archived: u64,
    pub matched_by_uidl: u64,
    pub matched_by_content: u64,
    /// Messages downloaded only to compare their content (no usable UIDL).
    pub downloaded_to_compare: u64,
}

/// A message whose retrieved length differs from its LIST size.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SizeDifference {
    pub msgno: u32,
    pub uidl: Option<String>,
    pub list_size: u64,
    /// What arrived (by TOP or RETR; the name predates TOP).
    pub retr_size: u64,
    /// Why, when the difference is a known server habit; without one the difference is
    /// a problem (exit 1).
    pub explanation: Option<String>,
}

/// The export report: the shared shape plus what only POP3 has.
#[derive(Debug, Clone, Serialize)]
pub struct Pop3Report {
    #[serde(flatten)]
    pub export: ExportReport,
    pub server: ServerFacts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalFacts>,
    pub size_differences: Vec<SizeDifference>,
    /// Count differences between STAT, LIST, UIDL and what was archived, as sentences.
    pub count_differences: Vec<String>,
    pub reconnects: u32,
    /// The command messages were read with: `TOP` (the server does not record the
    /// message as read) or `RETR` (it may, as Dovecot does with `\Seen`).
    pub retrieval: &'static str,
    /// Messages read with RETR although the server offers TOP, each with why. The
    /// server may mark these (and only these) as seen.
    pub read_with_retr: Vec<RetrFallback>,
    /// Things worth knowing that are not problems.
    pub notes: Vec<String>,
}

/// One message TOP could not be trusted for, so RETR was sent.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RetrFallback {
    pub msgno: u32,
    pub uidl: Option<String>,
    pub reason: String,
}

impl Pop3Report {
    /// Some message on the server is neither in this archive nor in the chain, the
    /// counts do not add up, or a message arrived with another size than LIST announced
    /// for no known reason (the server may have sent something else in its place).
    pub fn problems(&self) -> bool {
        self.export.skipped() > 0
            || !self.count_differences.is_empty()
            || self
                .size_differences
                .iter()
                .any(|d| d.explanation.is_none())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Pop3ExportError {
    #[error(transparent)]
    Pop3(#[from] Pop3Error),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("--since: {0}")]
    Since(#[from] ChainError),
    #[error("POP3 has only the folder INBOX, and the --folder/--exclude patterns leave it out")]
    NoFolders,
    #[error("cannot start the network runtime: {0}")]
    Runtime(std::io::Error),
}

/// One message to retrieve.
#[derive(Debug, Clone)]
struct Plan {
    msgno: u32,
    uidl: Option<String>,
    list_size: u64,
    how: Retrieve,
}

impl Plan {
    fn id(&self) -> String {
        match &self.uidl {
            Some(u) => format!("message {} (UIDL {u})", self.msgno),
            None => format!("message {}", self.msgno),
        }
    }
}

/// What the chain given to `--since` already holds.
#[derive(Default)]
struct Known {
    uidls: HashSet<String>,
    /// SHA-256 → how many copies, of every INBOX message.
    content_all: HashMap<String, u32>,
    /// SHA-256 → copies, of the INBOX messages archived without a UIDL.
    content_unkeyed: HashMap<String, u32>,
}

fn take_one(m: &mut HashMap<String, u32>, sha: &str) -> bool {
    match m.get_mut(sha) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// Bytes handed to the writer and not yet written: the network waits when it is full.
struct Budget {
    state: Mutex<(u64, bool)>,
    cv: Condvar,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            state: Mutex::new((0, false)),
            cv: Condvar::new(),
        }
    }
    /// False when the writer has gone away.
    fn acquire(&self, n: u64) -> bool {
        let mut s = self.state.lock().unwrap();
        while !s.1 && s.0 > 0 && s.0 + n > WRITE_BUDGET {
            s = self.cv.wait(s).unwrap();
        }
        if s.1 {
            return false;
        }
        s.0 += n;
        true
    }
    fn release(&self, n: u64) {
        let mut s = self.state.lock().unwrap();
        s.0 = s.0.saturating_sub(n);
        self.cv.notify_all();
    }
    fn close(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

/// What the retrieval learned, besides the messages themselves.
#[derive(Default)]
struct Tally {
    archived: u64,
    bytes: u64,
    skipped: Vec<Skipped>,
    sizes: Vec<SizeDifference>,
    matched_by_content: u64,
    downloaded_to_compare: u64,
    /// Messages delivered by RETR (the server may have marked them seen).
    by_retr: u64,
    fallbacks: Vec<RetrFallback>,
}

/// The message being received: in memory, or (LIST size over [`HOLD_MAX`]) written to
/// an unnamed temporary file as it comes, keeping its first bytes (its header section)
/// and its last four.
enum Current {
    Mem(Vec<u8>),
    Spool {
        w: std::io::BufWriter<crate::scratch::Scratch>,
        len: u64,
        head: Vec<u8>,
        tail: Vec<u8>,
    },
}

impl Current {
    fn new(list_size: u64) -> std::io::Result<Current> {
        if list_size <= HOLD_MAX {
            return Ok(Current::Mem(Vec::with_capacity(
                list_size.min(MAX_PREALLOC) as usize + 64,
            )));
        }
        Ok(Current::Spool {
            w: std::io::BufWriter::with_capacity(1 << 20, crate::scratch::Scratch::new()?),
            len: 0,
            head: Vec::new(),
            tail: Vec::new(),
        })
    }

    fn push(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match self {
            Current::Mem(v) => v.extend_from_slice(chunk),
            Current::Spool { w, len, head, tail } => {
                std::io::Write::write_all(w, chunk)?;
                *len += chunk.len() as u64;
                let room = MAX_HEADER.saturating_sub(head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..room]);
                tail.extend_from_slice(&chunk[chunk.len().saturating_sub(4)..]);
                let cut = tail.len().saturating_sub(4);
                tail.drain(..cut);
            }
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        match self {
            Current::Mem(v) => v.len() as u64,
            Current::Spool { len, .. } => *len,
        }
    }

    /// The first bytes (the whole message when held) and the last four.
    fn head_and_tail(&self) -> (&[u8], &[u8]) {
        match self {
            Current::Mem(v) => (v, &v[v.len().saturating_sub(4)..]),
            Current::Spool { head, tail, .. } => (head, tail),
        }
    }

    fn into_body(self) -> std::io::Result<Body> {
        match self {
            Current::Mem(v) => Ok(Body::Mem(v)),
            Current::Spool { w, len, .. } => {
                let f = w.into_inner().map_err(|e| e.into_error())?;
                Ok(Body::Spooled(std::sync::Arc::new(f), len))
            }
        }
    }
}

/// Receives TOP or RETR output for one batch and forwards whole messages to the writer.
struct Sink<'a> {
    plans: HashMap<u32, Plan>,
    /// The command of this batch.
    how: Retrieve,
    done: HashSet<u32>,
    /// TOP answers that are not what RETR would give: msgno → why; read again by RETR.
    redo: HashMap<u32, String>,
    cur: Current,
    tx: &'a mpsc::Sender<(MessageInfo, Body)>,
    budget: &'a Budget,
    tally: &'a mut Tally,
    known: &'a mut Known,
    incremental: bool,
    /// Identity by content for every message (no UIDL, or none the chain knows).
    by_content: bool,
    progress: &'a Progress,
}

impl RetrSink for Sink<'_> {
    fn begin(&mut self, msgno: u32) -> std::io::Result<()> {
        let size = self.plans.get(&msgno).map_or(0, |p| p.list_size);
        // A fresh buffer: the previous one went to the writer, or held a message cut
        // short by a dropped link, which must not leak into the next one.
        self.cur = Current::new(size)?;
        Ok(())
    }

    fn data(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.cur.push(chunk)?;
        self.progress.inc(chunk.len() as u64);
        Ok(())
    }

    fn end(&mut self, info: &RetrInfo) -> std::io::Result<()> {
        let Some(plan) = self.plans.get(&info.msgno).cloned() else {
            return Err(std::io::Error::other(format!(
                "the server sent message {} that was not asked for",
                info.msgno
            )));
        };
        let cur = std::mem::replace(&mut self.cur, Current::Mem(Vec::new()));
        let len = cur.len();
        let (head, tail) = cur.head_and_tail();
        if self.how == Retrieve::Top {
            if judge_top(plan.list_size, len, tail) == TopVerdict::Differs {
                // Counted once more when RETR sends it again.
                self.progress.inc_length(len);
                self.redo.insert(
                    info.msgno,
                    format!(
                        "TOP gave {} bytes where LIST announced {}; only RETR is sure to \
                         give the whole message",
                        len, plan.list_size
                    ),
                );
                return Ok(());
            }
        } else {
            self.tally.by_retr += 1;
        }
        self.done.insert(info.msgno);
        if len != plan.list_size {
            let explanation = (len == plan.list_size + 2 && tail.ends_with(b"\r\n")).then(|| {
                "the stored message has no final newline; POP3 cannot send one without, \
                 so the server added CRLF"
                    .to_string()
            });
            self.tally.sizes.push(SizeDifference {
                msgno: plan.msgno,
                uidl: plan.uidl.clone(),
                list_size: plan.list_size,
                retr_size: len,
                explanation,
            });
        }
        if self.incremental {
            let sha = info.sha256_hex();
            let known = if self.by_content {
                self.tally.downloaded_to_compare += 1;
                take_one(&mut self.known.content_all, &sha)
            } else {
                // A message with a UIDL the chain lacks is new, unless the chain holds
                // its content under no UIDL at all.
                take_one(&mut self.known.content_unkeyed, &sha)
            };
            if known {
                self.tally.matched_by_content += 1;
                return Ok(());
            }
        }
        let minfo = MessageInfo {
            folder: FOLDER.to_string(),
            flags: Vec::new(),
            internaldate: delivery_date(head),
            source: SourceRef::Pop3 {
                uidl: plan.uidl.clone(),
                msgno: plan.msgno,
            },
            source_size: Some(plan.list_size),
        };
        let gone = || std::io::Error::other("archive writer stopped");
        let body = cur.into_body()?;
        if !self.budget.acquire(body.held()) {
            return Err(gone());
        }
        self.tx.send((minfo, body)).map_err(|_| gone())?;
        self.tally.archived += 1;
        self.tally.bytes += len;
        Ok(())
    }

    fn refused(&mut self, error: Pop3Error) -> Result<(), Pop3Error> {
        let msgno = error.msgno().unwrap_or(0);
        if self.how == Retrieve::Top && self.plans.contains_key(&msgno) {
            // TOP is optional per message as much as per server; RETR decides.
            self.redo
                .insert(msgno, format!("the server refused TOP: {error}"));
            return Ok(());
        }
        // One unreadable message never stops the rest; it is reported by number.
        let id = self
            .plans
            .get(&msgno)
            .map_or_else(|| format!("message {msgno}"), Plan::id);
        self.done.insert(msgno);
        self.tally.skipped.push(Skipped {
            id,
            reason: error.to_string(),
        });
        Ok(())
    }
}

/// What the `--since` chain holds in the maildrop, the delta's parent, and the sources
/// the chain was made from.
fn load_chain(
    paths: &[PathBuf],
    keys: &crate::archive::seal::Identities,
) -> Result<(Known, Option<ParentRef>, Vec<String>), ChainError> {
    if paths.is_empty() {
        return Ok((Known::default(), None, Vec::new()));
    }
    let chain = Chain::open_with(paths, Completeness::Whole, keys)?;
    let known = chain
        .holdings(FOLDER)
        .map(|h| Known {
            uidls: h.uidls.clone(),
            content_all: h.shas.clone(),
            content_unkeyed: h.shas_without_uidl.clone(),
        })
        .unwrap_or_default();
    let sources = chain.sources().into_iter().map(String::from).collect();
    Ok((known, Some(chain.tip()), sources))
}

/// Exports the maildrop of `job` into `dest`.
pub fn export_pop3(
    job: &Pop3Job,
    dest: &Path,
    mut wopts: WriterOptions,
    filter: &FolderFilter,
    show_progress: bool,
) -> Result<Pop3Report, Pop3ExportError> {
    if !filter.matches(FOLDER) {
        return Err(Pop3ExportError::NoFolders);
    }
    let incremental = !job.since.is_empty();
    let (mut known, parent, since_sources) = load_chain(&job.since, &job.since_keys)?;
    let source = job.endpoint.to_string();
    wopts.source = source.clone();
    wopts.parent = parent;
    // Created before connecting, so a refused target costs no login; dropped unfinished
    // on any error below, which leaves no file under the final name.
    let writer = ArchiveWriter::create(dest, wopts)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Pop3ExportError::Runtime)?;

    let mut notes = Vec::new();
    // Scheme and port may change between runs (pop3s today, pop3 tomorrow) without the
    // account changing; user and host are what identify it.
    let account = |s: &str| {
        let s = s.split_once("://").map_or(s, |(_, r)| r);
        s.rsplit_once(':').map_or(s, |(a, _)| a).to_string()
    };
    if incremental && since_sources.iter().any(|s| account(s) != account(&source)) {
        notes.push(format!(
            "the --since archives were made from {}, this export is from {source}",
            since_sources.join(", ")
        ));
    }

    // Log in and plan before the writer thread exists: an unusable account ends here.
    let (
        mut client,
        server,
        plans,
        mut count_differences,
        mut tally,
        uidl_matched,
        by_content,
        mut reconnects,
    ) = rt
        .block_on(listing(job))
        .map(|(client, stat_n, stat_octets, list, uidl, lost)| {
            let server = ServerFacts {
                stat_messages: stat_n as u64,
                stat_octets,
                list_messages: list.len() as u64,
                list_octets: list.iter().map(|(_, s)| s).sum(),
                uidl: uidl.is_some(),
                pipelining: client.capabilities().pipelining(),
                top: client.capabilities().top(),
                tls: client.is_tls(),
                login: client.auth_mechanism().to_string(),
                utf8: client.utf8_mode(),
            };
            let mut diffs = Vec::new();
            if server.list_messages != server.stat_messages {
                diffs.push(format!(
                    "STAT announced {} messages, LIST {}",
                    server.stat_messages, server.list_messages
                ));
            }
            if server.list_octets != server.stat_octets {
                diffs.push(format!(
                    "STAT announced {} octets, the LIST sizes add up to {}",
                    server.stat_octets, server.list_octets
                ));
            }
            let mut uidl_of: HashMap<u32, String> = HashMap::new();
            if let Some(u) = &uidl {
                let mut seen = HashSet::new();
                for (n, id) in u {
                    if !seen.insert(id.clone()) {
                        diffs.push(format!("UIDL {id} is given to more than one message"));
                    }
                    uidl_of.insert(*n, id.clone());
                }
                let listed: HashSet<u32> = list.iter().map(|(n, _)| *n).collect();
                let missing = list
                    .iter()
                    .filter(|(n, _)| !uidl_of.contains_key(n))
                    .count();
                if missing > 0 {
                    diffs.push(format!("{missing} listed messages have no UIDL"));
                }
                let extra = u.iter().filter(|(n, _)| !listed.contains(n)).count();
                if extra > 0 {
                    diffs.push(format!("UIDL names {extra} messages LIST does not"));
                }
            }
            // No UIDL, or not one the chain knows (a server that renumbered its UIDLs, or a
            // chain made over IMAP): content is the only identity left, and downloading
            // is needed anyway for messages not known by UIDL.
            let by_content = incremental
                && !known.content_all.is_empty()
                && (uidl.is_none() || !uidl_of.values().any(|u| known.uidls.contains(u)));
            let how = client.whole_message_command();
            let mut plans = Vec::new();
            let mut uidl_matched = 0;
            for (msgno, size) in &list {
                let id = uidl_of.get(msgno).cloned();
                if incremental {
                    if let Some(u) = &id {
                        if known.uidls.contains(u) {
                            uidl_matched += 1;
                            continue;
                        }
                    }
                }
                plans.push(Plan {
                    msgno: *msgno,
                    uidl: id,
                    list_size: *size,
                    how,
                });
            }
            (
                client,
                server,
                plans,
                diffs,
                Tally::default(),
                uidl_matched,
                by_content,
                lost,
            )
        })?;

    if incremental && !server.uidl {
        notes.push(
            "the server has no UIDL: every message was downloaded to compare its content \
             with the --since archives"
                .into(),
        );
    } else if by_content {
        notes.push(
            "none of the server's UIDLs is in the --since archives: every message was \
             downloaded to compare its content with them"
                .into(),
        );
    }

    let total: u64 = plans.iter().map(|p| p.list_size).sum();
    crate::log::event!(
        "{FOLDER}: {} messages on the server, {} to fetch ({}), {uidl_matched} already archived",
        server.stat_messages,
        plans.len(),
        indicatif::BinaryBytes(total)
    );
    let progress = &Progress::bytes(total, show_progress);
    progress.set_message(FOLDER);

    let budget = Budget::new();
    let (tx, rx) = mpsc::channel::<(MessageInfo, Body)>();
    let folder = FolderInfo {
        source_count: Some(server.stat_messages),
        ..FolderInfo::simple(FOLDER, Some('/'))
    };
    let outcome: Result<ArchiveWriter, Pop3ExportError> = std::thread::scope(|s| {
        let budget = &budget;
        let writer_thread = s.spawn(move || -> Result<ArchiveWriter, WriteError> {
            let mut writer = writer;
            let r = (|| {
                writer.add_folder(folder)?;
                for (info, body) in rx {
                    let n = body.held();
                    body.add_to(&mut writer, info)?;
                    drop(body);
                    budget.release(n);
                }
                Ok(())
            })();
            budget.close();
            r.map(|_| writer)
        });
        let net = rt.block_on(async {
            let mut pending = plans;
            let mut breaks: HashMap<String, u32> = HashMap::new();
            // TOP first; the messages whose TOP answer cannot be trusted come back
            // marked for RETR and are read in a last batch.
            while !pending.is_empty() {
                let how = if pending.iter().any(|p| p.how == Retrieve::Top) {
                    Retrieve::Top
                } else {
                    Retrieve::Retr
                };
                let batch: Vec<&Plan> = pending.iter().filter(|p| p.how == how).collect();
                let msgnos: Vec<u32> = batch.iter().map(|p| p.msgno).collect();
                let mut sink = Sink {
                    plans: batch.iter().map(|p| (p.msgno, (*p).clone())).collect(),
                    how,
                    done: HashSet::new(),
                    redo: HashMap::new(),
                    cur: Current::Mem(Vec::new()),
                    tx: &tx,
                    budget,
                    tally: &mut tally,
                    known: &mut known,
                    incremental,
                    by_content,
                    progress,
                };
                let r = client.fetch_many(&msgnos, how, &mut sink).await;
                let done = std::mem::take(&mut sink.done);
                let mut redo = std::mem::take(&mut sink.redo);
                pending.retain(|p| !done.contains(&p.msgno));
                for p in &mut pending {
                    if let Some(reason) = redo.remove(&p.msgno) {
                        p.how = Retrieve::Retr;
                        tally.fallbacks.push(RetrFallback {
                            msgno: p.msgno,
                            uidl: p.uidl.clone(),
                            reason,
                        });
                    }
                }
                let err = match r {
                    Ok(()) => {
                        // Every message of the batch is now done or marked for RETR; a
                        // RETR batch leaving one behind would otherwise loop forever.
                        if how == Retrieve::Retr {
                            let (left, rest) = std::mem::take(&mut pending)
                                .into_iter()
                                .partition(|p| p.how == how);
                            pending = rest;
                            let left: Vec<Plan> = left;
                            skip_all(&mut tally, &left, "the server gave no answer for it");
                        }
                        continue;
                    }
                    Err(e @ Pop3Error::Sink { .. }) => return Err(e),
                    Err(e) => e,
                };
                // A message longer than its LIST size allows would be as long again.
                if let Pop3Error::TooLong { msgno: Some(n), .. } = &err {
                    if let Some(i) = pending.iter().position(|p| p.msgno == *n) {
                        let p = pending.remove(i);
                        tally.skipped.push(Skipped {
                            id: p.id(),
                            reason: err.to_string(),
                        });
                    }
                }
                // A message that breaks the link every time it is sent (a server that
                // crashes on it) must not cost the rest: after a few tries it is skipped.
                else if let Some(i) = err
                    .msgno()
                    .and_then(|n| pending.iter().position(|p| p.msgno == n))
                {
                    let tries = breaks.entry(pending[i].id()).or_insert(0);
                    *tries += 1;
                    if *tries >= BREAKS_PER_MESSAGE {
                        let p = pending.remove(i);
                        tally.skipped.push(Skipped {
                            id: p.id(),
                            reason: format!(
                                "the connection broke each of {BREAKS_PER_MESSAGE} times it \
                                 was sent: {err}"
                            ),
                        });
                    }
                }
                // Only a broken session is worth a new one; anything else was per message
                // and already recorded by the sink.
                if reconnects >= job.retry.max_reconnects {
                    skip_all(
                        &mut tally,
                        &pending,
                        &format!("{err}; gave up reconnecting"),
                    );
                    return Ok(());
                }
                reconnects += 1;
                crate::log::event!(
                    "{}: {err}; reconnecting ({reconnects} of at most {})",
                    job.endpoint,
                    job.retry.max_reconnects
                );
                match connect(job, false).await {
                    Ok(c) => client = c,
                    Err(e) => {
                        skip_all(
                            &mut tally,
                            &pending,
                            &format!("{err}; reconnecting failed: {e}"),
                        );
                        return Ok(());
                    }
                }
                if let Err(e) = remap(&mut client, &mut pending, server.uidl, &mut tally).await {
                    skip_all(&mut tally, &pending, &format!("after reconnecting: {e}"));
                    return Ok(());
                }
            }
            client.close().await;
            Ok(())
        });
        drop(tx);
        let written = writer_thread
            .join()
            .expect("archive writer thread panicked");
        match (net, written) {
            // The writer's own error explains a sink failure better than "stopped".
            (_, Err(w)) => Err(w.into()),
            (Err(e), Ok(_)) => Err(e.into()),
            (Ok(()), Ok(w)) => Ok(w),
        }
    });
    let writer = outcome?;
    progress.finish();
    let summary = writer.finish()?;

    let already = uidl_matched + tally.matched_by_content;
    let archived_plus = tally.archived + tally.skipped.len() as u64 + already;
    if archived_plus != server.list_messages {
        count_differences.push(format!(
            "LIST named {} messages; archived {}, skipped {}, already in the chain {}",
            server.list_messages,
            tally.archived,
            tally.skipped.len(),
            already
        ));
    }
    let report = FolderReport {
        folder: FOLDER.to_string(),
        source_count: Some(server.stat_messages),
        archived: tally.archived,
        bytes: tally.bytes,
        skipped: tally.skipped,
    };
    let retrieval = if server.top { "TOP" } else { "RETR" };
    if !server.top && tally.by_retr > 0 {
        notes.push(
            "the server offers no TOP, so messages were read with RETR: the server may \
             mark them as seen (Dovecot does)"
                .into(),
        );
    }
    if !tally.fallbacks.is_empty() {
        // The JSON lists them all; a note naming thousands would be unreadable.
        const NAMED: usize = 10;
        let mut names: Vec<String> = tally
            .fallbacks
            .iter()
            .take(NAMED)
            .map(|f| match &f.uidl {
                Some(u) => format!("{} (UIDL {u})", f.msgno),
                None => f.msgno.to_string(),
            })
            .collect();
        if tally.fallbacks.len() > NAMED {
            names.push(format!("{} more", tally.fallbacks.len() - NAMED));
        }
        notes.push(format!(
            "message(s) {} read with RETR because TOP did not give them whole: the \
             server may mark them as seen",
            names.join(", ")
        ));
    }
    if reconnects > 0 {
        notes.push(format!(
            "the connection was re-established {reconnects} time(s); retrieval continued \
             with the messages not yet archived"
        ));
    }
    Ok(Pop3Report {
        export: ExportReport::from_summary(summary, source, vec![report]),
        incremental: incremental.then(|| IncrementalFacts {
            since: job.since.iter().map(|p| p.display().to_string()).collect(),
            already_archived: already,
            matched_by_uidl: uidl_matched,
            matched_by_content: tally.matched_by_content,
            downloaded_to_compare: tally.downloaded_to_compare,
        }),
        server,
        size_differences: tally.sizes,
        count_differences,
        reconnects,
        retrieval,
        read_with_retr: tally.fallbacks,
        notes,
    })
}

type Listing = (
    Pop3Client,
    u32,
    u64,
    Vec<(u32, u64)>,
    Option<Vec<(u32, String)>>,
    u32,
);

/// Logs in and reads STAT, LIST and UIDL, starting over on a fresh session if the link
/// drops in between (the listings must come from one session to agree).
async fn listing(job: &Pop3Job) -> Result<Listing, Pop3Error> {
    let mut lost = 0;
    loop {
        let mut client = connect(job, lost == 0).await?;
        let r = async {
            let ((n, octets), list, uidl) = client.stat_list_uidl().await?;
            Ok::<_, Pop3Error>((n, octets, list, uidl))
        }
        .await;
        match r {
            Ok((n, octets, list, uidl)) => return Ok((client, n, octets, list, uidl, lost)),
            Err(e) if e.is_connection_lost() && lost < job.retry.max_reconnects => lost += 1,
            Err(e) => return Err(e),
        }
    }
}

fn skip_all(tally: &mut Tally, pending: &[Plan], reason: &str) {
    for p in pending {
        tally.skipped.push(Skipped {
            id: p.id(),
            reason: reason.to_string(),
        });
    }
}

/// Logs in; retries while the failure is one that waiting can cure. On the first
/// connection a refused login or a bad certificate ends the export at once; on a
/// reconnection an unreachable server is also worth waiting for.
async fn connect(job: &Pop3Job, first: bool) -> Result<Pop3Client, Pop3Error> {
    let mut delay = job.retry.first_delay;
    let mut attempt = 1;
    loop {
        let r = Pop3Client::connect_with(&job.endpoint, &job.creds, &job.tls, &job.client).await;
        match r {
            Ok(c) => return Ok(c),
            Err(e) => {
                // A silent server on the first try is not worth minutes of waiting; a
                // link that broke or a busy maildrop is.
                let retry = match &e {
                    Pop3Error::Connect(_) | Pop3Error::Timeout { .. } => !first,
                    other => other.is_transient(),
                };
                if !retry || attempt >= job.retry.attempts {
                    return Err(e);
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(job.retry.max_delay);
        attempt += 1;
    }
}

/// After a reconnect, message numbers may have shifted if someone else changed the
/// maildrop: with UIDL each pending message is found again by its id; without, the
/// numbers are kept as long as the maildrop did not shrink below them.
async fn remap(
    client: &mut Pop3Client,
    pending: &mut Vec<Plan>,
    server_uidl: bool,
    tally: &mut Tally,
) -> Result<(), Pop3Error> {
    // This session's own LIST: it bounds what each of its answers may bring.
    client.list().await?;
    if server_uidl {
        let now: HashMap<String, u32> = client
            .uidl()
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(|(n, u)| (u, n))
            .collect();
        pending.retain_mut(|p| match p.uidl.as_ref().and_then(|u| now.get(u)) {
            Some(&n) => {
                p.msgno = n;
                true
            }
            None => {
                tally.skipped.push(Skipped {
                    id: p.id(),
                    reason: "vanished from the server during the export".into(),
                });
                false
            }
        });
    } else {
        let (count, _) = client.stat().await?;
        pending.retain(|p| {
            let there = p.msgno <= count;
            if !there {
                tally.skipped.push(Skipped {
                    id: p.id(),
                    reason: "vanished from the server during the export".into(),
                });
            }
            there
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn budget_lets_one_big_message_through_and_wakes_on_close() {
        let b = Arc::new(Budget::new());
        assert!(b.acquire(WRITE_BUDGET * 3));
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.acquire(10));
        std::thread::sleep(Duration::from_millis(20));
        b.close();
        assert!(!t.join().unwrap());
    }
}
