//! The append phase: connections draining the queue of messages to APPEND, with
//! pipelining, MULTIAPPEND batches, retries, and recovery from a lost connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::scratch::Scratch;

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::learn::learn;
use super::{ImportOptions, Rec, St};
use crate::mail::identity::{self, MsgKey};
use crate::progress::Progress;
use crate::source::imap::dest::{AppendRequest, Completion, DestCaps, Literal};
use crate::source::imap::{ImapError, ImapSession};

/// One message to APPEND.
pub(super) struct Job {
    pub(super) gid: usize,
    pub(super) mailbox: Arc<str>,
    pub(super) flags: Vec<String>,
    pub(super) date: Option<String>,
    pub(super) body: Payload,
    pub(super) binary: bool,
    pub(super) key: Arc<MsgKey>,
    pub(super) dest: usize,
    /// The bytes were turned into CRLF form after the server refused bare line ends.
    pub(super) crlf: bool,
    /// Sent in an APPEND of its own (a MULTIAPPEND holding it was refused).
    pub(super) alone: bool,
    pub(super) _permit: OwnedSemaphorePermit,
}

/// A message's bytes on their way to the server: in memory, or (over
/// [`identity::IN_MEMORY_MAX`]) in an unnamed temporary file the literal is read
/// from as it is sent, so memory does not follow the message's size.
pub(super) enum Payload {
    Mem(Vec<u8>),
    Spooled {
        file: Scratch,
        len: u64,
        /// Holds bare line ends (see [`identity::crlf_len`]).
        bare: bool,
        /// [`identity::altered_forms`], computed while it streamed.
        forms: Vec<[u8; 32]>,
    },
}

impl Payload {
    pub(super) fn spooled(file: Scratch, s: &identity::Streamed) -> Payload {
        Payload::Spooled {
            file,
            len: s.len,
            bare: s.key.sizes()[1] != s.len,
            forms: s.all_forms.clone(),
        }
    }

    pub(super) fn len(&self) -> u64 {
        match self {
            Payload::Mem(b) => b.len() as u64,
            Payload::Spooled { len, .. } => *len,
        }
    }

    /// What it takes of the queue's budget: its size for a spooled message too, so
    /// large messages wait their turn and the spools on disk stay few.
    pub(super) fn budget_kib(&self) -> u32 {
        (self.len() >> 10).min(u32::MAX as u64 - 1) as u32 + 1
    }

    fn literal(&self) -> Literal<'_> {
        match self {
            Payload::Mem(b) => Literal::Bytes(b),
            Payload::Spooled { file, len, .. } => Literal::File(file, *len),
        }
    }

    fn bare(&self) -> bool {
        match self {
            Payload::Mem(b) => identity::crlf_len(b) != b.len() as u64,
            Payload::Spooled { bare, .. } => *bare,
        }
    }

    fn altered_forms(&self) -> Vec<[u8; 32]> {
        match self {
            Payload::Mem(b) => identity::altered_forms(b),
            Payload::Spooled { forms, .. } => forms.clone(),
        }
    }

    /// The CRLF form (what a server refusing bare line ends takes).
    fn to_crlf(&self) -> std::io::Result<Payload> {
        match self {
            Payload::Mem(b) => {
                let mut v = Vec::with_capacity(b.len() + 1024);
                identity::crlf_form(b, &mut v);
                Ok(Payload::Mem(v))
            }
            Payload::Spooled { file, forms, .. } => {
                let mut out = std::io::BufWriter::new(Scratch::new()?);
                let len = identity::crlf_stream(
                    &mut std::io::BufReader::new(file.reader_at(0)),
                    &mut out,
                )?;
                Ok(Payload::Spooled {
                    file: out.into_inner().map_err(|e| e.into_error())?,
                    len,
                    bare: false,
                    forms: forms.clone(),
                })
            }
        }
    }
}

/// Where the server put an appended message (`APPENDUID`, RFC 4315).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AppendUid {
    pub(super) uidvalidity: u32,
    pub(super) uid: u32,
}

/// How one message's APPEND ended.
pub(super) enum Outcome {
    Appended {
        /// Bytes sent.
        bytes: u64,
        /// Sent in CRLF form (the server refused the archived bare line ends).
        crlf: bool,
        uid: Option<AppendUid>,
    },
    Failed(String),
}

impl Outcome {
    fn appended(job: &Job, uid: Option<AppendUid>) -> Outcome {
        Outcome::Appended {
            bytes: job.body.len(),
            crlf: job.crlf,
            uid,
        }
    }
}

/// Memory allowed for messages waiting to be appended, in KiB (a message larger than
/// this waits for the queue to empty and goes alone).
pub(super) const QUEUE_BUDGET_KIB: u32 = 24 * 1024;
/// Per connection: APPENDs in flight before waiting for an answer. A window of a few
/// batches cost one round trip per window: 64 messages (two batches) per 50 ms made an
/// import of 6,000 messages 4 s slower over a WAN than on loopback. The window is now
/// as deep as the memory budget allows (every message in flight holds its share of
/// [`QUEUE_BUDGET_KIB`] until answered), so the link, not the round trip, sets the pace.
const WINDOW_MSGS: usize = 4096;
const WINDOW_BYTES: usize = 16 << 20;
/// A MULTIAPPEND holds at most this many messages, or bytes (a message over it goes
/// alone): two batches fit the window, so the server always has the next one.
const BATCH_MSGS: usize = 32;
const BATCH_BYTES: usize = 4 << 20;
/// Attempts for an APPEND the server asked us to retry later.
const RETRIES: u32 = 4;
/// Connections lost one after another with no APPEND answered in between: past this a
/// link that dies at the same step every time (a server or proxy that stops answering
/// after login) would be reconnected for ever, so the connection's messages fail instead.
const LOSSES_WITHOUT_PROGRESS: u32 = 3;

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
    } else if t.contains("I/O ERROR") || t.contains("[SERVERBUG]") {
        // A NO stored nothing, so the APPEND may go again. Cyrus 3.6 answers "System I/O
        // error" now and then to an APPEND into a folder another session created a
        // moment before (about one import in twenty in the test suite); it takes the
        // same message a second later.
        (format!("the server failed to store it: {text}"), true)
    } else {
        (format!("refused by the server: {text}"), false)
    }
}

/// Which connection appends into which destination folder. Dovecot appends more slowly
/// when two sessions append into one folder at once (each waits for the folder's lock
/// and re-reads what the other added): measured on 10,000 messages in 3 folders, one
/// connection took 0.90× the time of four sharing every folder. So a folder stays with
/// one connection, and a folder met for the first time goes to the connection with
/// the fewest folders; archives whose folders interleave then append in parallel.
pub(super) struct Router {
    pub(super) queues: Vec<Option<mpsc::Sender<Job>>>,
    pub(super) of_dest: Vec<Option<usize>>,
    pub(super) folders: Vec<usize>,
}

impl Router {
    pub(super) fn new(queues: Vec<mpsc::Sender<Job>>, dests: usize) -> Router {
        Router {
            folders: vec![0; queues.len()],
            queues: queues.into_iter().map(Some).collect(),
            of_dest: vec![None; dests],
        }
    }

    /// Queues `job` for destination folder `dest` (blocking: called from the archive
    /// reader's thread). False when no connection is left.
    pub(super) fn send(&mut self, dest: usize, mut job: Job) -> bool {
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

/// One connection's APPEND loop: takes jobs from the shared queue, keeps a window of
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
    // The tag of a SELECT sent ahead of APPENDs, whose answer is not an APPEND's.
    let mut selecting: Option<String> = None;
    // Losses since an APPEND was last answered, and why the last one happened.
    let (mut losses, mut last_loss) = (0u32, String::new());
    // The queue's senders are gone: only answers are left to wait for.
    let mut closed = false;
    // An answer read while a batch was being filled, to settle next.
    let mut answer: Option<Result<Completion, ImapError>> = None;
    loop {
        if s.is_none() {
            selected = None;
            selecting = None;
            // An answer read from the lost session settles nothing: what was in
            // flight is checked on the server below.
            answer = None;
            retry.extend(held.take().map(|j| (j, 0)));
            losses += 1;
            // What was in flight may or may not have reached the server.
            let again = if losses > LOSSES_WITHOUT_PROGRESS {
                None
            } else {
                reconnect(&ctx, &mut lost, &out, &progress).await
            };
            match again {
                Some((sess, again)) => {
                    s = Some(sess);
                    retry.extend(again);
                }
                None => {
                    let reason = format!(
                        "connection to the server lost ({last_loss}); rerun the import to finish"
                    );
                    for (j, _) in lost.drain(..).chain(retry.drain(..)) {
                        let _ = out.send((j.gid, Outcome::Failed(reason.clone())));
                    }
                    // What is still queued here fails too; the router sends the rest
                    // of these folders to the other connections.
                    rx.close();
                    while let Ok(j) = rx.try_recv() {
                        let _ = out.send((j.gid, Outcome::Failed(reason.clone())));
                    }
                    return None;
                }
            }
        }
        let sess = s.as_mut().expect("connected");
        let full = inflight_msgs >= WINDOW_MSGS
            || inflight_bytes >= WINDOW_BYTES
            || (!ctx.literal_plus && !inflight.is_empty());
        let next = if answer.is_some() || (full && !inflight.is_empty()) {
            None
        } else if let Some(r) = retry.pop_front() {
            Some(r)
        } else if let Some(j) = held.take() {
            Some((j, 0))
        } else if inflight.is_empty() {
            rx.recv().await.map(|j| (j, 0))
        } else if let Ok(j) = rx.try_recv() {
            Some((j, 0))
        } else if closed {
            None
        } else {
            // Answers pending and nothing queued: whichever comes first. Waiting for
            // the answer alone would leave the link idle for a round trip whenever the
            // queue ran dry; waiting for the queue alone could wait forever (the reader
            // may be waiting for this connection's memory to free up). Reading an
            // answer is cancel-safe: the framer keeps what it has, the socket the rest.
            tokio::select! {
                biased;
                j = rx.recv() => {
                    closed = j.is_none();
                    j.map(|j| (j, 0))
                }
                a = sess.wait_append() => {
                    answer = Some(a);
                    None
                }
            }
        };
        let Some((job, attempt)) = next else {
            if inflight.is_empty() {
                return s;
            }
            let a = match answer.take() {
                Some(a) => a,
                None => sess.wait_append().await,
            };
            match a {
                Ok(c) if selecting.as_ref() == Some(&c.tag) => {
                    // Refused or not, the APPENDs behind it go on: APPEND works on an
                    // unselectable folder too, only slower on Dovecot.
                    selecting = None;
                }
                Ok(c) => {
                    losses = 0;
                    if let Some(p) = inflight.iter().position(|(t, _)| *t == c.tag) {
                        let (_, jobs) = inflight.remove(p).expect("valid position");
                        inflight_msgs -= jobs.len();
                        inflight_bytes -= jobs
                            .iter()
                            .map(|(j, _)| j.body.len() as usize)
                            .sum::<usize>();
                        settle_command(jobs, &c, &out, &mut retry, &progress).await;
                    }
                }
                Err(e) => {
                    last_loss = e.to_string();
                    lost.extend(inflight.drain(..).flat_map(|(_, jobs)| jobs));
                    (inflight_msgs, inflight_bytes) = (0, 0);
                    s = None;
                }
            }
            continue;
        };
        if selected.as_deref() != Some(&*job.mailbox) {
            // Dovecot appends several times faster into the folder the session has
            // open (it keeps the mailbox and its index open between APPENDs). The
            // SELECT goes ahead of the APPENDs without waiting for its answer, with
            // other folders' APPENDs still in flight (APPEND names its folder, and the
            // server runs commands in turn): a folder switch costs no round trip.
            match sess.send_select(&job.mailbox).await {
                Ok(tag) => selecting = Some(tag),
                Err(e) => {
                    last_loss = e.to_string();
                    lost.extend(inflight.drain(..).flat_map(|(_, jobs)| jobs));
                    lost.push((job, attempt));
                    (inflight_msgs, inflight_bytes) = (0, 0);
                    s = None;
                    continue;
                }
            }
            selected = Some(job.mailbox.clone());
        }
        // With MULTIAPPEND (and LITERAL+), the messages already queued for this folder
        // join this one's APPEND: the server saves them as one transaction. Dovecot
        // saved 10,000 messages about 4× faster in batches of 50 than one by one.
        let mut batch = vec![(job, attempt)];
        let batchable = |j: &Job| !j.alone && !j.binary && matches!(j.body, Payload::Mem(_));
        if ctx.literal_plus && ctx.multiappend && batchable(&batch[0].0) {
            let mut bytes = batch[0].0.body.len() as usize;
            while batch.len() < BATCH_MSGS && bytes < BATCH_BYTES {
                let j = match rx.try_recv() {
                    Ok(j) => j,
                    // With the server busy on earlier commands, a fuller batch is worth
                    // waiting for (Dovecot saves a batch as one transaction: batches of
                    // one or two cost it twice the CPU), until an answer arrives.
                    Err(_) if !inflight.is_empty() && !closed => {
                        tokio::select! {
                            biased;
                            j = rx.recv() => match j {
                                Some(j) => j,
                                None => {
                                    closed = true;
                                    break;
                                }
                            },
                            a = sess.wait_append() => {
                                answer = Some(a);
                                break;
                            }
                        }
                    }
                    Err(_) => break,
                };
                if j.mailbox != batch[0].0.mailbox || !batchable(&j) {
                    held = Some(j);
                    break;
                }
                bytes += j.body.len() as usize;
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
                    body: j.body.literal(),
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
                inflight_bytes += batch
                    .iter()
                    .map(|(j, _)| j.body.len() as usize)
                    .sum::<usize>();
                inflight.push_back((tag, batch));
            }
            Ok(Err(c)) => {
                losses = 0;
                settle_command(batch, &c, &out, &mut retry, &progress).await
            }
            Err(e) => {
                last_loss = e.to_string();
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
    c: &Completion,
    out: &mpsc::UnboundedSender<(usize, Outcome)>,
    retry: &mut VecDeque<(Job, u32)>,
    progress: &Progress,
) {
    if jobs.len() == 1 {
        let (job, attempt) = jobs.pop().expect("one job");
        return settle(job, attempt, c, out, retry, progress).await;
    }
    if !c.ok {
        for (mut job, attempt) in jobs.into_iter().rev() {
            job.alone = true;
            retry.push_front((job, attempt));
        }
        return;
    }
    let uids = c.appenduid.as_ref().filter(|a| a.uids.len() == jobs.len());
    for (i, (job, _)) in jobs.into_iter().enumerate() {
        progress.inc(job.body.len());
        let uid = uids.map(|a| AppendUid {
            uidvalidity: a.uidvalidity,
            uid: a.uids[i],
        });
        let _ = out.send((job.gid, Outcome::appended(&job, uid)));
    }
}

async fn settle(
    job: Job,
    attempt: u32,
    c: &Completion,
    out: &mpsc::UnboundedSender<(usize, Outcome)>,
    retry: &mut VecDeque<(Job, u32)>,
    progress: &Progress,
) {
    let text = c.text.as_str();
    if c.ok {
        progress.inc(job.body.len());
        let uid = c.appenduid.as_ref().and_then(|a| {
            (a.uids.len() == 1).then(|| AppendUid {
                uidvalidity: a.uidvalidity,
                uid: a.uids[0],
            })
        });
        let _ = out.send((job.gid, Outcome::appended(&job, uid)));
        return;
    }
    let t = text.to_ascii_lowercase();
    if !job.crlf
        && job.body.bare()
        && (t.contains("bare") || t.contains("newline") || t.contains("invalid header"))
    {
        // The server wants CRLF line ends (Cyrus: "Message contains bare newlines"):
        // send the CRLF form, which is what a server serves and verification compares.
        let mut job = job;
        match job.body.to_crlf() {
            Ok(b) => job.body = b,
            Err(e) => {
                let why = format!(
                    "the server wants CRLF line ends and the CRLF form could not be spooled: {e}"
                );
                progress.inc(job.body.len());
                let _ = out.send((job.gid, Outcome::Failed(why)));
                return;
            }
        }
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
    progress.inc(job.body.len());
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
        crate::log::event!(
            "{}: connection lost with {} message(s) in flight; reconnecting (attempt {} of 3)",
            ctx.opts.dest,
            lost.len(),
            attempt + 1
        );
        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        let Ok(mut s) = ImapSession::connect_with_timeout(
            &ctx.opts.dest,
            &ctx.opts.creds,
            &ctx.opts.tls,
            ctx.opts.timeout,
        )
        .await
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
                .filter_map(|(j, _)| j.key.message_id.as_deref().map(String::from))
                .collect();
            match learn(
                &mut s,
                &jobs[0].0.mailbox,
                &amb,
                &Default::default(),
                false,
                false,
            )
            .await
            {
                Ok((mut st, _, _)) => {
                    for (j, a) in jobs {
                        let mut k = (*j.key).clone();
                        k.by_bytes = true;
                        k.set_forms(j.body.altered_forms());
                        if st.claim(&k).is_some() {
                            progress.inc(j.body.len());
                            let _ = out.send((j.gid, Outcome::appended(&j, None)));
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

/// Records the APPEND answers in the records, and settles what never got one. Returns
/// the bytes appended.
pub(super) fn apply_outcomes(
    recs: &mut [Rec],
    outcomes: Vec<(usize, Outcome)>,
    dry_run: bool,
) -> u64 {
    let mut appended = 0;
    for (gid, o) in outcomes {
        match o {
            Outcome::Appended { bytes, crlf, uid } => {
                recs[gid].st = St::Appended(uid);
                recs[gid].crlf_sent = crlf;
                appended += bytes;
            }
            Outcome::Failed(r) => recs[gid].st = St::Failed(r),
        }
    }
    for r in recs.iter_mut() {
        match r.st {
            St::Pending => r.st = St::Failed("not found in the archive's data".into()),
            St::Queued if !dry_run => {
                r.st = St::Failed("queued but never answered by the server".into())
            }
            _ => {}
        }
    }
    appended
}

/// The append connections, running: the router that queues messages to them, their
/// tasks (each hands its session back), and the stream of their answers.
pub(super) struct Workers {
    pub(super) router: Router,
    pub(super) handles: Vec<tokio::task::JoinHandle<Option<ImapSession>>>,
    pub(super) answers: mpsc::UnboundedReceiver<(usize, Outcome)>,
}

/// Starts one append worker per session (none in a dry run: no sessions given).
pub(super) fn start_workers(
    sessions: Vec<ImapSession>,
    opts: &ImportOptions,
    caps: &DestCaps,
    dests: usize,
    progress: &Progress,
) -> Workers {
    let (out_tx, answers) = mpsc::unbounded_channel::<(usize, Outcome)>();
    let ctx = Arc::new(WorkerCtx {
        opts: opts.clone(),
        literal_plus: caps.literal_plus,
        multiappend: caps.multiappend,
    });
    let mut handles = Vec::new();
    let mut queues = Vec::new();
    for s in sessions {
        let (tx, rx) = mpsc::channel::<Job>(1024);
        queues.push(tx);
        handles.push(tokio::spawn(worker(
            s,
            rx,
            out_tx.clone(),
            ctx.clone(),
            progress.clone(),
        )));
    }
    // Only the router holds the queues' senders and only the workers their receivers:
    // if every connection is lost, sending fails and the archive reader stops instead
    // of waiting forever.
    Workers {
        router: Router::new(queues, dests),
        handles,
        answers,
    }
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn what_a_later_append_may_cure_is_retried_and_nothing_else() {
        for (text, again) in [
            ("System I/O error", true),
            ("[SERVERBUG] oops", true),
            ("[UNAVAILABLE] try later", true),
            ("[INUSE] mailbox locked", true),
            ("[OVERQUOTA] quota exceeded", false),
            ("[TOOBIG] too large", false),
            ("Message contains invalid header", false),
        ] {
            assert_eq!(classify(text).1, again, "{text}");
        }
    }
}
