//! The decide phase, with no I/O: what becomes of one archived message, given its bytes
//! and what its destination folder holds — already there (and which flags its copy
//! lacks), to append, or not importable and why.

use super::{plan, DestState, VerifyMode};
use crate::archive::MessageRecord;
use crate::mail::identity::{self, MsgKey, Streamed};
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
    let date = m.internaldate_secs();
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
            b.len() as u32,
            identity::message_id_of(b).as_deref(),
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
