//! Reading the archive for the passes: one thread streams the chain and decides each
//! message of the pass at hand ([`super::decide`]), queueing those to append. A pass
//! that begins after what the stream has read goes on from there, so a chain whose
//! folders lie in the order of the passes is read once for the whole import, not once
//! a pass (at 1,000,000 messages in 25 passes, re-reading made import's CPU time a
//! message twice that at 100,000). A pass whose messages the stream has already gone
//! past reads the chain again from its start.

use std::collections::HashMap;
use std::io::{self, Read as _, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};

use chrono::DateTime;
use tokio::sync::{oneshot, Semaphore};

use super::append::{Job, Payload, Router, QUEUE_BUDGET_KIB};
use super::decide::{decide, Msg, Verdict};
use super::prepare::gid_of;
use super::verify::Sealer;
use super::{DestState, Rec, St, VerifyMode};
use crate::archive::reader::{Member, MessageBody};
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
pub(super) struct ArchiveReader {
    passes: std_mpsc::Sender<(Reader, oneshot::Sender<Decided>)>,
    /// Readings of the chain begun at its start so far.
    readings: Arc<AtomicU64>,
}

impl ArchiveReader {
    /// Starts the reading thread; it ends when the reader is dropped.
    pub(super) fn start(archives: Arc<Vec<Archive>>) -> ArchiveReader {
        let (tx, rx) = std_mpsc::channel();
        let readings = Arc::new(AtomicU64::new(0));
        let counted = readings.clone();
        std::thread::Builder::new()
            .name("archive-reader".into())
            .spawn(move || serve(&archives, &rx, &counted))
            .expect("start the archive reading thread");
        ArchiveReader {
            passes: tx,
            readings,
        }
    }

    /// How many times the chain was read from its start so far.
    pub(super) fn readings(&self) -> u64 {
        self.readings.load(Ordering::Relaxed)
    }

    /// Starts reading and deciding the messages of one pass (at once, not when the
    /// answer is awaited).
    pub(super) fn read(&self, r: Reader) -> impl std::future::Future<Output = Decided> {
        let (tx, rx) = oneshot::channel();
        let sent = self.passes.send((r, tx));
        async move {
            sent.expect("the archive reading thread ended");
            rx.await.expect("archive reader panicked")
        }
    }
}

/// Why the archive stream stopped before its end.
enum Halt {
    Read(ReadError),
    /// The next pass begins before what the stream has read: read from the start.
    Again,
    /// No pass is left.
    Done,
}

impl From<ReadError> for Halt {
    fn from(e: ReadError) -> Halt {
        Halt::Read(e)
    }
}

/// One pass being read: its reader and where its answer goes.
struct Current {
    pass: PassRead,
    reply: oneshot::Sender<Decided>,
}

/// The next pass to read, once `done` (if any) is answered; `None` when none is left.
/// A pass without records is answered at once.
fn next_pass(
    done: Option<Current>,
    passes: &std_mpsc::Receiver<(Reader, oneshot::Sender<Decided>)>,
) -> Option<Current> {
    if let Some(c) = done {
        let _ = c.reply.send(c.pass.finish());
    }
    loop {
        let (r, reply) = passes.recv().ok()?;
        let pass = PassRead::new(r);
        if pass.left > 0 {
            return Some(Current { pass, reply });
        }
        let _ = reply.send(pass.finish());
    }
}

/// Streams the chain for each pass that arrives on `passes`, going on from where the
/// previous pass stopped when the new one begins past it.
fn serve(
    archives: &[Archive],
    passes: &std_mpsc::Receiver<(Reader, oneshot::Sender<Decided>)>,
    readings: &AtomicU64,
) {
    let mut cur = next_pass(None, passes);
    while let Some(c) = cur.as_mut() {
        readings.fetch_add(1, Ordering::Relaxed);
        // This reading of the chain starts at its beginning: nothing of the pass is
        // behind it.
        c.pass.from_start = true;
        // The last message member read, as (archive, record).
        let mut last: Option<(usize, usize)> = None;
        let mut again = false;
        for (ai, a) in archives.iter().enumerate() {
            let r = a.stream(|member| -> Result<(), Halt> {
                let c = cur.as_mut().expect("a pass is being read");
                c.pass.settle(archives);
                if c.pass.left == 0 {
                    let next = next_pass(cur.take(), passes).ok_or(Halt::Done)?;
                    let behind = match (next.pass.first(), last) {
                        (Some(first), Some(last)) => first <= last,
                        _ => false,
                    };
                    cur = Some(next);
                    if behind {
                        return Err(Halt::Again);
                    }
                    cur.as_mut().expect("just set").pass.from_start = false;
                }
                let Member::Message { record, body } = member else {
                    return Ok(());
                };
                last = Some((ai, record));
                cur.as_mut()
                    .expect("a pass is being read")
                    .pass
                    .member(archives, ai, record, body)
            });
            let Some(c) = cur.as_mut() else {
                return;
            };
            c.pass.settle(archives);
            match r {
                Ok(_) => {}
                Err(Halt::Done) => return,
                Err(Halt::Again) => {
                    again = true;
                    break;
                }
                // Damage fails what lies past it only for a pass that read the archive
                // from its start; another reads the chain again to get there.
                Err(Halt::Read(e)) if c.pass.from_start => c.pass.damaged(ai, e),
                Err(Halt::Read(_)) => {
                    again = true;
                    break;
                }
            }
        }
        let c = cur.as_ref().expect("a pass is being read");
        // A pass that began mid-chain and still misses records (the index lists them
        // in another order than the members) reads the chain again from its start.
        if again || (c.pass.left > 0 && !c.pass.from_start) {
            continue;
        }
        cur = next_pass(cur.take(), passes);
    }
}

/// What one pass's reading holds.
struct PassRead {
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
    /// The current reading of the chain began at its start.
    from_start: bool,
}

impl PassRead {
    fn new(r: Reader) -> PassRead {
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
            from_start: false,
        }
    }

    /// Where its first message is, as (archive, record).
    fn first(&self) -> Option<(usize, usize)> {
        self.recs.first().map(|r| (r.arch as usize, r.idx as usize))
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

    /// Decides the message of `record` in archive `ai`, if it is one of the pass's, and
    /// queues it when it is to be appended.
    fn member(
        &mut self,
        archives: &[Archive],
        ai: usize,
        record: usize,
        mut body: MessageBody<'_>,
    ) -> Result<(), Halt> {
        let Some(gid) = gid_of(&self.recs, ai, record) else {
            return Ok(());
        };
        if self.recs[gid].st != St::Pending {
            return Ok(());
        }
        let m = &archives[ai].index.messages.get(record);
        let d = &self.dests[self.recs[gid].dest];
        // A read error is damaged archive data: the stream ends with it and what is
        // left pending fails with it.
        let Ok(payload) = read_payload(m, &mut body, d, self.dry) else {
            return Ok(());
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
                return Ok(());
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
            return Ok(());
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
        Ok(())
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
    let date = m
        .internaldate
        .as_deref()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.timestamp());
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
