//! The decide phase, with no I/O: what becomes of one archived message, given its bytes
//! and what its destination folder holds — already there (and which flags its copy
//! lacks), to append, or not importable and why.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::DateTime;
use tokio::sync::Semaphore;

use crate::scratch::Scratch;
use std::io::{self, Read as _, Write};

use super::append::{Job, Payload, Router, QUEUE_BUDGET_KIB};
use super::prepare::gid_of;
use super::verify::Sealer;
use super::{plan, DestState, Rec, St, VerifyMode};
use crate::archive::reader::{Member, MessageBody};
use crate::archive::{Archive, MessageRecord, ReadError};
use crate::mail::identity::{self, KeyStream, MsgKey, Streamed};
use crate::progress::Progress;
use crate::source::imap::dest::DestCaps;

/// What becomes of one archived message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The destination holds it under this UID; `fix_flags` are the archived flags its
    /// copy lacks.
    There {
        uid: u32,
        fix_flags: Vec<String>,
        /// It is there as another delivery of the same mail (see `Match::OtherDelivery`).
        other_delivery: bool,
    },
    Append,
    Fail(String),
}

/// The decision on one message, and what the later phases need of its bytes.
#[derive(Debug)]
pub(super) struct Decision {
    pub(super) verdict: Verdict,
    /// The message's identity (absent when it was not read: broken folder, damage).
    pub(super) key: Option<MsgKey>,
    /// Flags to send with APPEND (and to find on the server), and the keywords the
    /// folder does not keep (counted for messages that are appended).
    pub(super) flags: Vec<String>,
    pub(super) dropped: Vec<String>,
    /// See `Rec::head`.
    pub(super) head: Option<[[u8; 32]; 3]>,
    /// Holds NUL: goes as a `literal8` (BINARY).
    pub(super) binary: bool,
}

impl Decision {
    fn fail(reason: impl Into<String>) -> Decision {
        Decision {
            verdict: Verdict::Fail(reason.into()),
            key: None,
            flags: Vec::new(),
            dropped: Vec::new(),
            head: None,
            binary: false,
        }
    }
}

/// A message as decide sees it: its bytes, or (for a message too large to hold) what
/// streaming it learnt.
pub(super) enum Msg<'a> {
    Bytes(&'a [u8]),
    Streamed(&'a Streamed),
}

/// Decides `m` (its bytes, whose index SHA-256 is `sha`) against destination folder
/// `d`, claiming the server copy it finds there.
pub(super) fn decide(
    m: &MessageRecord,
    msg: Msg<'_>,
    sha: [u8; 32],
    d: &mut DestState,
    caps: &DestCaps,
    mode: VerifyMode,
) -> Decision {
    if let Some(b) = &d.broken {
        return Decision::fail(b.clone());
    }
    let sha_ok = match msg {
        Msg::Bytes(b) => crate::archive::sha256_hex(b) == m.sha256,
        Msg::Streamed(s) => s.sha256 == sha && hex::encode(sha) == m.sha256,
    };
    if !sha_ok {
        return Decision::fail("damaged in the archive (SHA-256 differs from the index)");
    }
    if let Err(e) = m.parsed_internaldate() {
        return Decision::fail(e);
    }
    let date = m
        .internaldate
        .as_deref()
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.timestamp());
    let (mut key, len, binary) = match msg {
        Msg::Bytes(b) => (
            MsgKey::of(b, sha, &d.ambiguous, date),
            b.len() as u64,
            memchr::memchr(0, b).is_some(),
        ),
        Msg::Streamed(s) => (s.key.clone(), s.len, s.nul),
    };
    if d.other_deliveries && key.message_id.is_some() {
        key.set_trace_free(Some(match msg {
            Msg::Bytes(b) => identity::trace_free_sha256(b),
            Msg::Streamed(s) => s.trace_free.expect("streamed with trace fields wanted"),
        }));
    }
    let head = if key.at_risk && mode == VerifyMode::Quick && !binary {
        match msg {
            Msg::Bytes(b) => identity::header_forms(b),
            Msg::Streamed(s) => s.head,
        }
    } else {
        None
    };
    let (flags, dropped) = plan::split_flags(&m.flags, d.permanent.as_deref());
    let there = d
        .state
        .claim_pref(&key, |e| plan::same_flags(&flags, &e.flags.to_vec()))
        .map(|(how, e)| Verdict::There {
            other_delivery: how == crate::reconcile::Match::OtherDelivery,
            uid: e.uid,
            fix_flags: crate::reconcile::flag_gap(&flags, &e.flags.to_vec()).0,
        });
    let verdict = there.unwrap_or_else(|| {
        if binary && !caps.binary {
            Verdict::Fail(
                "holds NUL bytes and the server offers no BINARY: not importable without altering it".into(),
            )
        } else if caps.appendlimit.is_some_and(|l| len > l) {
            Verdict::Fail(format!(
                "{len} bytes is over the server's APPENDLIMIT of {}",
                caps.appendlimit.unwrap_or_default()
            ))
        } else if len == 0 {
            Verdict::Fail("an empty message cannot be appended".into())
        } else {
            Verdict::Append
        }
    });
    Decision {
        verdict,
        key: Some(key),
        flags,
        dropped,
        head,
        binary,
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

/// What the archive reader needs: the chain, where each member's record is, the
/// records and destination folders it decides, and where decided messages go (the
/// append queue, bounded by `budget` KiB; the sealer for early verification).
pub(super) struct Reader {
    pub(super) archives: Arc<Vec<Archive>>,
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

/// Why the archive stream stopped before its end.
enum Halt {
    Read(ReadError),
    /// Every record of the pass was met.
    AllMet,
}

impl From<ReadError> for Halt {
    fn from(e: ReadError) -> Halt {
        Halt::Read(e)
    }
}

/// Streams the archives one message at a time (blocking: run on a blocking thread),
/// decides each, and queues the ones to append.
pub(super) fn read_and_decide(r: Reader) -> Decided {
    let Reader {
        archives,
        mut recs,
        mut dests,
        plan_names,
        dest_raw,
        caps,
        mode: verify_mode,
        dry,
        budget,
        mut router,
        mut sealer,
        progress,
    } = r;
    let mut dropped: HashMap<(usize, String), u64> = HashMap::new();
    let mut damaged = Vec::new();
    // The record the previous member decided: counted when the next one comes
    // (or the archive ends), so every way a decision returns is counted once.
    let mut deciding: Option<usize> = None;
    // Records not met yet: once none is left, the rest of the chain is not read (a pass
    // over the first folders, or a part of one, ends where its last message is).
    let mut left = recs.len();
    for (ai, a) in archives.iter().enumerate() {
        if left == 0 {
            break;
        }
        let r = a.stream(|member| -> Result<(), Halt> {
            if let Some(g) = deciding.take() {
                if sealer.decided(g, &recs, &archives, verify_mode) {
                    // Every record of the folder is decided: its census served only that
                    // (verification reads the folder again).
                    dests[recs[g].dest].state = Default::default();
                }
            }
            if left == 0 {
                return Err(Halt::AllMet);
            }
            let Member::Message { record, mut body } = member else {
                return Ok(());
            };
            let Some(gid) = gid_of(&recs, ai, record) else {
                return Ok(());
            };
            if recs[gid].st != St::Pending {
                return Ok(());
            }
            let m = &a.index.messages.get(record);
            let d = &dests[recs[gid].dest];
            // A read error is damaged archive data: the stream ends with it and what
            // is left pending fails with it below.
            let Ok(payload) = read_payload(m, &mut body, d, dry) else {
                return Ok(());
            };
            left -= 1;
            let rec = &mut recs[gid];
            deciding = Some(gid);
            progress.set_message(plan_names[rec.folder].clone());
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
                    progress.inc(rec.size);
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
                &mut dests[rec.dest],
                &caps,
                verify_mode,
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
                        *dropped.entry((rec.folder, k)).or_default() += 1;
                    }
                    rec.st = match v {
                        Verdict::Fail(reason) => St::Failed(reason),
                        _ => St::Queued,
                    };
                }
            }
            if rec.st != St::Queued || dry {
                progress.inc(rec.size);
                return Ok(());
            }
            let binary = dec.binary;
            let key = rec.key.clone().expect("a message to append has a key");
            let kib = payload.budget_kib().min(QUEUE_BUDGET_KIB);
            let permit = futures::executor::block_on(budget.clone().acquire_many_owned(kib))
                .expect("budget semaphore never closes");
            let job = Job {
                gid,
                mailbox: dest_raw[rec.dest].clone(),
                flags: rec.flags.to_vec(),
                date: m.internaldate.as_deref().and_then(imap_date),
                body: payload,
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
            if sealer.decided(g, &recs, &archives, verify_mode) {
                dests[recs[g].dest].state = Default::default();
            }
        }
        if let Err(Halt::Read(e)) = r {
            // What the damage keeps out of reach fails, each message named; the other
            // archives and what was read before it go on.
            let why = format!("could not be read from the archive: {e}");
            let mut lost = 0;
            for rec in recs
                .iter_mut()
                .filter(|r| r.arch as usize == ai && r.st == St::Pending)
            {
                rec.st = St::Failed(why.clone());
                progress.inc(rec.size);
                lost += 1;
            }
            damaged.push((ai, e.to_string(), lost));
        }
    }
    drop(router);
    drop(sealer);
    Decided {
        recs,
        dests,
        dropped,
        damaged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::SourceRef;
    use crate::reconcile::{Census, Held};
    use std::collections::HashSet;

    fn record(bytes: &[u8], flags: &[&str]) -> (MessageRecord, [u8; 32]) {
        use sha2::{Digest, Sha256};
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        let m = MessageRecord {
            folder: "INBOX".into(),
            path: "m".into(),
            size: bytes.len() as u64,
            sha256: hex::encode(sha),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            internaldate: Some("2020-09-13T12:26:40+00:00".into()),
            message_id: None,
            date: None,
            from: None,
            subject: None,
            source: SourceRef::Local { path: "m".into() },
            source_size: None,
            mbox: None,
        };
        (m, sha)
    }

    fn dest(held: Vec<Held>) -> DestState {
        DestState {
            raw: "INBOX".into(),
            ambiguous: HashSet::new(),
            sizes_by_id: Default::default(),
            other_deliveries: false,
            state: Census::new(held),
            permanent: None,
            uidvalidity: None,
            parts: None,
            broken: None,
        }
    }

    fn held(uid: u32, b: &[u8], flags: &[&str]) -> Held {
        Held::new(
            uid,
            b.len() as u64,
            identity::message_id_of(b).map(String::into_boxed_str),
            flags.iter().map(|s| s.to_string()).collect(),
        )
    }

    const MSG: &[u8] = b"Message-ID: <d@x>\r\nSubject: s\r\n\r\nbody\r\n";

    #[test]
    fn there_with_the_flags_its_copy_lacks() {
        let (m, sha) = record(MSG, &["\\Seen", "\\Flagged"]);
        let mut d = dest(vec![held(7, MSG, &["\\Seen", "$Other"])]);
        let dec = decide(
            &m,
            Msg::Bytes(MSG),
            sha,
            &mut d,
            &DestCaps::default(),
            VerifyMode::Quick,
        );
        assert_eq!(
            dec.verdict,
            Verdict::There {
                uid: 7,
                fix_flags: vec!["\\Flagged".into()],
                other_delivery: false,
            }
        );
        // The one server copy is taken: the same message again is appended.
        let dec = decide(
            &m,
            Msg::Bytes(MSG),
            sha,
            &mut d,
            &DestCaps::default(),
            VerifyMode::Quick,
        );
        assert_eq!(dec.verdict, Verdict::Append);
    }

    #[test]
    fn what_cannot_be_appended_says_why() {
        let caps = DestCaps {
            appendlimit: Some(10),
            ..Default::default()
        };
        let cases: [(&[u8], &str); 3] = [
            (b"Subject: a\r\n\r\nx\0y\r\n", "BINARY"),
            (MSG, "APPENDLIMIT of 10"),
            (b"", "empty"),
        ];
        for (bytes, why) in cases {
            let (m, sha) = record(bytes, &[]);
            let dec = decide(
                &m,
                Msg::Bytes(bytes),
                sha,
                &mut dest(vec![]),
                &caps,
                VerifyMode::Quick,
            );
            assert!(
                matches!(&dec.verdict, Verdict::Fail(r) if r.contains(why)),
                "{why}: {:?}",
                dec.verdict
            );
        }
        // Damaged bytes and a folder that could not be made fail before anything else.
        let (m, sha) = record(MSG, &[]);
        let dec = decide(
            &m,
            Msg::Bytes(b"other"),
            sha,
            &mut dest(vec![]),
            &caps,
            VerifyMode::Quick,
        );
        assert!(matches!(&dec.verdict, Verdict::Fail(r) if r.contains("damaged")));
        let mut d = dest(vec![held(1, MSG, &[])]);
        d.broken = Some("cannot create folder".into());
        let dec = decide(&m, Msg::Bytes(MSG), sha, &mut d, &caps, VerifyMode::Quick);
        assert_eq!(dec.verdict, Verdict::Fail("cannot create folder".into()));
    }

    #[test]
    fn keywords_the_folder_does_not_keep_are_dropped() {
        let (m, sha) = record(MSG, &["\\Seen", "$Label"]);
        let mut d = dest(vec![]);
        d.permanent = Some(vec!["\\Seen".into()]);
        let dec = decide(
            &m,
            Msg::Bytes(MSG),
            sha,
            &mut d,
            &DestCaps::default(),
            VerifyMode::Quick,
        );
        assert_eq!(dec.verdict, Verdict::Append);
        assert_eq!(dec.flags, vec!["\\Seen"]);
        assert_eq!(dec.dropped, vec!["$Label"]);
    }
}
