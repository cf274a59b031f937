//! Reading the archive for the passes: each pass is a [`Reading`] of the chain that
//! decides each of its messages ([`super::decide`]) and queues those to append. The
//! chain is read once for passes that follow its order (see [`crate::archive::readings`]).

use std::collections::HashMap;
use std::io::{self, Read as _, Write};
use std::sync::Arc;

use chrono::DateTime;
use tokio::sync::Semaphore;

use super::append::{Job, Payload, Router, QUEUE_BUDGET_KIB};
use super::decide::{decide, Msg, Verdict};
use super::prepare::gid_of;
use super::verify::Sealer;
use super::{DestState, Rec, St, VerifyMode};
use crate::archive::reader::MessageBody;
use crate::archive::readings::{Reading, Readings};
use crate::archive::{Archive, MessageRecord, ReadError};
use crate::mail::identity::{self, KeyStream, Streamed};
use crate::progress::Progress;
use crate::scratch::Scratch;
use crate::source::imap::dest::DestCaps;

/// What the archive reader needs for one pass: the records and destination folders it
/// decides, and where decided messages go (the append queue, bounded by `budget` KiB;
/// the sealer for early verification).
pub(super) struct Reader {
    pub(super) recs: Vec<Rec>,
    pub(super) dests: Vec<DestState>,
    /// Source name of each planned folder (for progress).
    pub(super) plan_names: Vec<String>,
    /// Wire name of each destination folder.
    pub(super) dest_raw: Vec<Arc<str>>,
    pub(super) caps: DestCaps,
    pub(super) mode: VerifyMode,
    pub(super) dry: bool,
    pub(super) budget: Arc<Semaphore>,
    pub(super) router: Router,
    pub(super) sealer: Sealer,
    pub(super) progress: Progress,
    /// A destination folder whose census outlives the pass (a part other than its
    /// last: the next part goes on with it).
    pub(super) keep_census: Option<usize>,
}

/// What the reader hands back: the decided records and folders, keywords dropped per
/// (planned folder, keyword), and the error that stopped the reading, if any.
pub(super) struct Decided {
    pub(super) recs: Vec<Rec>,
    pub(super) dests: Vec<DestState>,
    pub(super) dropped: HashMap<(usize, String), u64>,
    /// Archives whose data could not be read to the end: which, why, and how many
    /// messages past the damage were failed (the rest of the import goes on).
    pub(super) damaged: Vec<(usize, String, u64)>,
}

/// The thread reading the chain for every pass of one import.
pub(super) type ArchiveReader = Readings<PassRead>;

impl Reading for PassRead {
    type Output = Decided;

    fn first(&self) -> Option<(usize, usize)> {
        self.recs.first().map(|r| (r.arch as usize, r.idx as usize))
    }

    fn left(&self) -> usize {
        self.left
    }

    fn message(&mut self, archives: &[Archive], ai: usize, record: usize, body: MessageBody<'_>) {
        self.decide_message(archives, ai, record, body);
    }

    /// Settles the message decided last.
    fn settle(&mut self, archives: &[Archive]) {
        if let Some(g) = self.deciding.take() {
            let dest = self.recs[g].dest;
            if self.sealer.decided(g, &self.recs, archives, self.mode)
                && self.keep_census != Some(dest)
            {
                // Every record of the folder is decided: its census served only that
                // (verification reads the folder again).
                self.dests[dest].state = Default::default();
            }
        }
    }

    /// What the damage in archive `ai` keeps out of reach fails, each message named;
    /// the other archives and what was read before it go on.
    fn damaged(&mut self, ai: usize, e: ReadError) {
        let why = format!("could not be read from the archive: {e}");
        let mut lost = 0;
        for rec in self
            .recs
            .iter_mut()
            .filter(|r| r.arch as usize == ai && r.st == St::Pending)
        {
            rec.st = St::Failed(why.clone());
            self.progress.inc(rec.size);
            lost += 1;
        }
        self.left -= lost as usize;
        self.damaged.push((ai, e.to_string(), lost));
    }

    /// The pass's answer; the append queue and the sealer close with it.
    fn finish(self) -> Decided {
        drop(self.router);
        drop(self.sealer);
        Decided {
            recs: self.recs,
            dests: self.dests,
            dropped: self.dropped,
            damaged: self.damaged,
        }
    }
}

/// What one pass's reading holds.
pub(super) struct PassRead {
    recs: Vec<Rec>,
    dests: Vec<DestState>,
    plan_names: Vec<String>,
    dest_raw: Vec<Arc<str>>,
    caps: DestCaps,
    mode: VerifyMode,
    dry: bool,
    budget: Arc<Semaphore>,
    router: Router,
    sealer: Sealer,
    progress: Progress,
    keep_census: Option<usize>,
    dropped: HashMap<(usize, String), u64>,
    damaged: Vec<(usize, String, u64)>,
    /// The record the previous member decided: settled when the next one comes (or the
    /// archive ends), so every way a decision returns is counted once.
    deciding: Option<usize>,
    /// Records not met yet.
    left: usize,
}

impl PassRead {
    pub(super) fn new(r: Reader) -> PassRead {
        let left = r.recs.len();
        PassRead {
            recs: r.recs,
            dests: r.dests,
            plan_names: r.plan_names,
            dest_raw: r.dest_raw,
            caps: r.caps,
            mode: r.mode,
            dry: r.dry,
            budget: r.budget,
            router: r.router,
            sealer: r.sealer,
            progress: r.progress,
            keep_census: r.keep_census,
            dropped: HashMap::new(),
            damaged: Vec::new(),
            deciding: None,
            left,
        }
    }

    /// Decides the message of `record` in archive `ai`, if it is one of the pass's, and
    /// queues it when it is to be appended.
    fn decide_message(
        &mut self,
        archives: &[Archive],
        ai: usize,
        record: usize,
        mut body: MessageBody<'_>,
    ) {
        let Some(gid) = gid_of(&self.recs, ai, record) else {
            return;
        };
        if self.recs[gid].st != St::Pending {
            return;
        }
        let m = &archives[ai].index.messages.get(record);
        let d = &self.dests[self.recs[gid].dest];
        // A read error is damaged archive data: the stream ends with it and what is
        // left pending fails with it.
        let Ok(payload) = read_payload(m, &mut body, d, self.dry) else {
            return;
        };
        self.left -= 1;
        let rec = &mut self.recs[gid];
        self.deciding = Some(gid);
        self.progress
            .set_message(self.plan_names[rec.folder].clone());
        let (payload, streamed) = match payload {
            Read::Bytes(b) => (Payload::Mem(b), None),
            Read::Streamed(s, file) => {
                let p = file.map(|f| Payload::spooled(f, &s));
                (p.unwrap_or(Payload::Mem(Vec::new())), Some(s))
            }
            Read::SpoolFailed(e) => {
                rec.st = St::Failed(format!(
                    "too large to hold in memory, and it could not be written to a temporary file: {e}"
                ));
                self.progress.inc(rec.size);
                return;
            }
        };
        let msg = match (&payload, &streamed) {
            (_, Some(s)) => Msg::Streamed(s),
            (Payload::Mem(b), None) => Msg::Bytes(b),
            (Payload::Spooled { .. }, None) => unreachable!("a spooled message was streamed"),
        };
        let dec = decide(
            m,
            msg,
            rec.raw_sha,
            &mut self.dests[rec.dest],
            &self.caps,
            self.mode,
        );
        rec.head = dec.head.map(Box::new);
        rec.flags = dec.flags.into();
        rec.key = dec.key.map(Arc::new);
        // Keywords count as dropped for every message not already there.
        match dec.verdict {
            Verdict::There {
                uid,
                fix_flags,
                other_delivery,
            } => {
                rec.st = St::There(uid);
                rec.fix_flags = fix_flags.into();
                rec.other_delivery = other_delivery;
            }
            v => {
                for k in dec.dropped {
                    *self.dropped.entry((rec.folder, k)).or_default() += 1;
                }
                rec.st = match v {
                    Verdict::Fail(reason) => St::Failed(reason),
                    _ => St::Queued,
                };
            }
        }
        if rec.st != St::Queued || self.dry {
            self.progress.inc(rec.size);
            return;
        }
        let kib = payload.budget_kib().min(QUEUE_BUDGET_KIB);
        let permit = futures::executor::block_on(self.budget.clone().acquire_many_owned(kib))
            .expect("budget semaphore never closes");
        let job = Job {
            gid,
            mailbox: self.dest_raw[rec.dest].clone(),
            flags: rec.flags.to_vec(),
            date: m.internaldate.as_deref().and_then(imap_date),
            body: payload,
            binary: dec.binary,
            key: rec.key.clone().expect("a message to append has a key"),
            dest: rec.dest,
            crlf: false,
            alone: false,
            _permit: permit,
        };
        if !self.router.send(rec.dest, job) {
            rec.st = St::Failed("not sent: every connection to the server was lost".into());
        }
    }
}

/// A message read out of the archive for deciding.
enum Read {
    Bytes(Vec<u8>),
    /// Keyed while streaming; the spool holding it when it may be appended.
    Streamed(Box<Streamed>, Option<Scratch>),
    SpoolFailed(io::Error),
}

/// Reads one message: into memory when small, else streamed through [`KeyStream`]
/// into a temporary file (or nowhere, in a dry run). Err is an archive read error.
fn read_payload(
    m: &MessageRecord,
    body: &mut MessageBody<'_>,
    d: &DestState,
    dry: bool,
) -> io::Result<Read> {
    if m.size <= identity::IN_MEMORY_MAX {
        let mut v = Vec::with_capacity(m.size as usize);
        body.read_to_end(&mut v)?;
        return Ok(Read::Bytes(v));
    }
    let mut ks = KeyStream::new(d.other_deliveries);
    let mut spool = if dry {
        None
    } else {
        match Scratch::new() {
            Ok(f) => Some(io::BufWriter::with_capacity(1 << 20, f)),
            Err(e) => return Ok(Read::SpoolFailed(e)),
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ks.feed(&buf[..n]);
        if let Some(w) = &mut spool {
            if let Err(e) = w.write_all(&buf[..n]) {
                return Ok(Read::SpoolFailed(e));
            }
        }
    }
    let file = match spool.map(|w| w.into_inner()) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => return Ok(Read::SpoolFailed(e.into_error())),
    };
    let date = m.internaldate_secs();
    Ok(Read::Streamed(
        Box::new(ks.finish(&d.ambiguous, date)),
        file,
    ))
}

/// An RFC 3339 time as an IMAP date-time (for APPEND).
fn imap_date(rfc3339: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|d| d.format("%d-%b-%Y %H:%M:%S %z").to_string())
}
