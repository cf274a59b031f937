//! Reconciliation, with no I/O: archived messages (their [`MsgKey`]s) against the census
//! of a server folder (what it holds) → pairs, archived messages the server lacks, and
//! server messages the archive lacks. Import dedup (one message at a time, as the
//! archive streams), import verification and `verify --against` (a whole folder at
//! once) all pair through [`Census`], so they decide "is this archived message there"
//! the same way.
//!
//! Each server message stands for at most one archived message (two archived copies
//! need two on the server). Pairing goes from the surest evidence to the loosest
//! ([`Match`]), and a whole folder is paired one level at a time, so a loose match can
//! never take a server message that an archived message would have matched exactly.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, FixedOffset, Timelike};

use sha2::{Digest, Sha256};

use crate::mail::flags::FlagSet;
use crate::mail::identity::{canonical_sha256, MsgKey};
use crate::source::imap::parse_internaldate;

/// One message a server folder holds: 48 bytes and no allocation for nearly every
/// message (a census of one folder may list a million).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub uid: u32,
    /// RFC822.SIZE: a 32-bit number in IMAP.
    size: u32,
    /// The Message-ID's hash, not its text (see [`IdHash`]): a report that quotes a
    /// server message names it by UID, size and INTERNALDATE.
    pub message_id: Option<IdHash>,
    /// [`FlagSet::to_vec`] gives them back as the server sent them.
    pub flags: FlagSet,
    /// INTERNALDATE in seconds; [`NO_DATE`] for none ([`Held::date`]).
    date: i64,
    /// With `date`, gives back INTERNALDATE's text ([`Held::internaldate`]): keeping
    /// the text cost 24 bytes and an allocation an entry.
    zone: Option<Zone>,
    /// What few messages have: boxed, so the others carry one word of `None`.
    rare: Option<Box<Rare>>,
}

/// [`Held::date`]'s `None`: no INTERNALDATE renders to it.
const NO_DATE: i64 = i64::MIN;

/// What a [`Held`] holds for few messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Rare {
    /// INTERNALDATE's text where `date` and `zone` do not give it back (not a date, or
    /// spelled otherwise than it renders), so a report quotes the server exactly.
    odd_date: Option<Box<str>>,
    /// Filled for the messages whose bytes were read (see [`Census::need_bytes`]).
    read: Option<ReadHashes>,
}

/// The zone an INTERNALDATE was given in (minutes east of UTC), and whether its day
/// was space-padded (` 1-Jan-2024`, which IMAP allows) rather than zero-padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Zone {
    minutes: i16,
    space_padded: bool,
}

impl Zone {
    /// The zone that renders `d` back as `text`, if one does.
    fn rendering(text: &str, d: &DateTime<FixedOffset>) -> Option<Zone> {
        let z = Zone {
            minutes: i16::try_from(d.offset().local_minus_utc() / 60).ok()?,
            space_padded: text.starts_with(' '),
        };
        // Every census entry is checked: rendered into a buffer, not a String by a
        // format string.
        (z.render_bytes(d.timestamp())?.as_slice() == text.as_bytes()).then_some(z)
    }

    fn render(self, secs: i64) -> Option<String> {
        self.render_bytes(secs)
            .map(|b| b.iter().map(|&c| char::from(c)).collect())
    }

    /// `secs` as an IMAP date-time in this zone (`dd-Mon-yyyy hh:mm:ss +zzzz`, the
    /// day space-padded or zero-padded); `None` for a year of other than four digits.
    fn render_bytes(self, secs: i64) -> Option<[u8; 26]> {
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let zone = FixedOffset::east_opt(i32::from(self.minutes) * 60)?;
        let t = DateTime::from_timestamp(secs, 0)?.with_timezone(&zone);
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        let mut b = *b"dd-Mon-yyyy hh:mm:ss +zzzz";
        let digits = |b: &mut [u8], v: u32| {
            let mut v = v;
            for c in b.iter_mut().rev() {
                *c = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        digits(&mut b[0..2], t.day());
        if self.space_padded && t.day() < 10 {
            b[0] = b' ';
        }
        b[3..6].copy_from_slice(MONTHS[t.month0() as usize]);
        digits(&mut b[7..11], year);
        digits(&mut b[12..14], t.hour());
        digits(&mut b[15..17], t.minute());
        digits(&mut b[18..20], t.second());
        let m = i32::from(self.minutes);
        b[21] = if m < 0 { b'-' } else { b'+' };
        let m = m.unsigned_abs();
        digits(&mut b[22..24], m / 60);
        digits(&mut b[24..26], m % 60);
        Some(b)
    }
}

/// The hashes of a server message's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadHashes {
    /// SHA-256 of the bytes, their canonical hash, and the header section's.
    pub sha: [u8; 32],
    pub canonical: [u8; 32],
    pub head_canonical: [u8; 32],
    /// [`crate::mail::identity::trace_free_sha256`] of the bytes.
    pub trace_free: [u8; 32],
}

impl Held {
    /// A message without an INTERNALDATE (see [`Held::with_internaldate`]).
    pub fn new(uid: u32, size: u32, message_id: Option<&str>, flags: FlagSet) -> Held {
        Held {
            uid,
            size,
            message_id: message_id.map(IdHash::of),
            flags,
            date: NO_DATE,
            zone: None,
            rare: None,
        }
    }

    /// With the INTERNALDATE the server sent (its text): `date` in seconds, and the
    /// text in a form [`Held::internaldate`] gives back exactly.
    pub fn with_internaldate(mut self, text: Option<&str>) -> Held {
        let parsed = text.and_then(parse_internaldate);
        self.date = parsed.map_or(NO_DATE, |d| d.timestamp());
        self.zone = text.zip(parsed).and_then(|(t, d)| Zone::rendering(t, &d));
        let odd = text.filter(|_| self.zone.is_none());
        if odd.is_some() || self.rare.is_some() {
            self.rare_mut().odd_date = odd.map(Into::into);
        }
        self
    }

    /// The box of what few messages have, made on first use.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    pub fn size(&self) -> u64 {
        u64::from(self.size)
    }

    /// INTERNALDATE in seconds.
    pub fn date(&self) -> Option<i64> {
        (self.date != NO_DATE).then_some(self.date)
    }

    /// INTERNALDATE as the server sent it.
    pub fn internaldate(&self) -> Option<Cow<'_, str>> {
        match (self.odd_date(), self.zone, self.date()) {
            (Some(t), ..) => Some(Cow::Borrowed(t)),
            (None, Some(z), Some(secs)) => z.render(secs).map(Cow::Owned),
            _ => None,
        }
    }

    fn odd_date(&self) -> Option<&str> {
        self.rare.as_ref()?.odd_date.as_deref()
    }

    /// The hashes of its bytes, if they were read.
    pub fn read(&self) -> Option<&ReadHashes> {
        self.rare.as_ref()?.read.as_ref()
    }

    pub fn sha(&self) -> Option<[u8; 32]> {
        self.read().map(|r| r.sha)
    }

    pub fn canonical(&self) -> Option<[u8; 32]> {
        self.read().map(|r| r.canonical)
    }

    pub fn head_canonical(&self) -> Option<[u8; 32]> {
        self.read().map(|r| r.head_canonical)
    }

    pub fn trace_free(&self) -> Option<[u8; 32]> {
        self.read().map(|r| r.trace_free)
    }
}

/// Why an archived message and a server message were paired, surest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Match {
    /// The UID the server named for it (APPENDUID, or an earlier pairing).
    Uid,
    /// An unambiguous Message-ID and a size one of its byte-exact forms has.
    MessageId,
    /// The server's bytes are one of its byte-exact forms.
    Exact,
    /// The server's bytes are a form of it a server altered (NUL, 8-bit header bytes,
    /// deleted CR: see [`crate::mail::identity`]).
    Altered,
    /// The same INTERNALDATE and Message-ID (or header section): a message whose body
    /// the server re-encoded.
    Rewritten,
    /// The same Message-ID, header and body but for the trace fields the receiving
    /// servers add: the same mail, delivered to the destination on its own (dual
    /// delivery during an MX change). Tried only for keys that carry a trace-free hash.
    OtherDelivery,
}

/// The levels [`Census::claim`] tries, in order.
const LEVELS: [Match; 5] = [
    Match::MessageId,
    Match::Exact,
    Match::Altered,
    Match::Rewritten,
    Match::OtherDelivery,
];

/// Leaves out of a folder's messages those whose UIDs `taken` (sorted) names: the ones an
/// earlier part of the same folder's import or comparison already paired, so a server
/// copy stands for one archived message across the parts.
pub(crate) fn keep_off(msgs: &mut Vec<Held>, taken: &[u32]) {
    if !taken.is_empty() {
        msgs.retain(|m| taken.binary_search(&m.uid).is_err());
    }
}

/// What a server folder holds, and which of its messages are already accounted for:
/// 53 bytes a message (a [`Held`], its claim and its place in the Message-ID index).
#[derive(Debug, Default)]
pub struct Census {
    /// In UID order (as servers list them): a UID is found by binary search, with no
    /// index of its own.
    pub msgs: Vec<Held>,
    claimed: Vec<bool>,
    /// Indexes in `msgs` of the messages with a Message-ID, sorted by it:
    /// [`Census::with_id`] finds a Message-ID's messages by binary search. 4 bytes a
    /// message, where a map of Message-ID copies cost over 100.
    by_id: Vec<u32>,
    by_sha: HashMap<[u8; 32], Vec<usize>>,
    by_canonical: HashMap<[u8; 32], Vec<usize>>,
}

impl Census {
    pub fn new(mut msgs: Vec<Held>) -> Census {
        // Stable: a UID listed twice keeps its order (the last listed is the one found).
        if !msgs.is_sorted_by_key(|m| m.uid) {
            msgs.sort_by_key(|m| m.uid);
        }
        let mut c = Census {
            claimed: vec![false; msgs.len()],
            ..Default::default()
        };
        for (i, m) in msgs.iter().enumerate() {
            if m.message_id.is_some() {
                c.by_id.push(i as u32);
            }
            if let Some(r) = m.read() {
                c.index_bytes(i, r);
            }
        }
        // Equal Message-IDs in census order, as before.
        c.by_id
            .sort_unstable_by_key(|&i| (msgs[i as usize].message_id, i));
        c.msgs = msgs;
        c
    }

    /// The message with UID `uid` (the last listed, should a server list one twice).
    fn index_of_uid(&self, uid: u32) -> Option<usize> {
        let i = self.msgs.partition_point(|m| m.uid <= uid).checked_sub(1)?;
        (self.msgs[i].uid == uid).then_some(i)
    }

    /// The message with UID `uid`, claimed or not.
    pub fn held(&self, uid: u32) -> Option<&Held> {
        self.index_of_uid(uid).map(|i| &self.msgs[i])
    }

    /// The messages whose Message-ID is `id`, in census order.
    fn with_id(&self, id: IdHash) -> Vec<usize> {
        let id = Some(id);
        let of = |i: u32| self.msgs[i as usize].message_id;
        let start = self.by_id.partition_point(|&i| of(i) < id);
        self.by_id[start..]
            .iter()
            .take_while(|&&i| of(i) == id)
            .map(|&i| i as usize)
            .collect()
    }

    fn index_bytes(&mut self, i: usize, r: &ReadHashes) {
        self.by_sha.entry(r.sha).or_default().push(i);
        self.by_canonical.entry(r.canonical).or_default().push(i);
    }

    /// UIDs whose bytes must be read before `claim` can decide: messages without a
    /// Message-ID and those with an ambiguous one; and, where other deliveries count,
    /// those whose Message-ID an archived message has at a size it cannot be
    /// (`sizes_by_id`: the archived sizes, archived and as the source announced them).
    pub fn need_bytes(
        &self,
        ambiguous: &HashSet<String>,
        sizes_by_id: &HashMap<IdHash, Vec<u64>>,
    ) -> Vec<u32> {
        let ambiguous: HashSet<IdHash> = ambiguous.iter().map(|id| IdHash::of(id)).collect();
        self.msgs
            .iter()
            .filter(|m| {
                m.read().is_none()
                    && match &m.message_id {
                        None => true,
                        Some(id) => {
                            ambiguous.contains(id)
                                || sizes_by_id.get(id).is_some_and(|s| !s.contains(&m.size()))
                        }
                    }
            })
            .map(|m| m.uid)
            .collect()
    }

    /// Records the hashes of a message's bytes.
    pub fn set_bytes(&mut self, uid: u32, bytes: &[u8]) {
        let Some(i) = self.index_of_uid(uid) else {
            return;
        };
        if self.msgs[i].read().is_some() {
            return;
        }
        let r = ReadHashes {
            sha: Sha256::digest(bytes).into(),
            canonical: canonical_sha256(bytes),
            head_canonical: canonical_sha256(crate::mail::headers::header_section(bytes)),
            trace_free: crate::mail::identity::trace_free_sha256(bytes),
        };
        self.index_bytes(i, &r);
        self.msgs[i].rare_mut().read = Some(r);
    }

    /// Claims a known UID (from APPENDUID or an earlier claim) if it is still there.
    pub fn claim_uid(&mut self, uid: u32) -> Option<&Held> {
        let i = self.index_of_uid(uid)?;
        if self.claimed[i] {
            return None;
        }
        self.claimed[i] = true;
        Some(&self.msgs[i])
    }

    /// Finds an unclaimed message that is this one, and claims it.
    pub fn claim(&mut self, k: &MsgKey) -> Option<(Match, &Held)> {
        self.claim_pref(k, |_| true)
    }

    /// As [`claim`](Self::claim), preferring a copy for which `pref` holds (e.g. equal
    /// flags, when a folder holds the same message twice with different flags).
    pub fn claim_pref(
        &mut self,
        k: &MsgKey,
        pref: impl Fn(&Held) -> bool,
    ) -> Option<(Match, &Held)> {
        let id = k.id_hash();
        let (how, i) = LEVELS
            .iter()
            .find_map(|&how| self.find(k, id, how, &pref).map(|i| (how, i)))?;
        self.claimed[i] = true;
        Some((how, &self.msgs[i]))
    }

    /// An unclaimed message that is `k` (whose Message-ID hashes to `kid`) by evidence
    /// `how`, preferring one `pref` likes.
    fn find(
        &self,
        k: &MsgKey,
        kid: Option<IdHash>,
        how: Match,
        pref: &impl Fn(&Held) -> bool,
    ) -> Option<usize> {
        let free = |i: &usize| !self.claimed[*i];
        let msgs = &self.msgs;
        let cands: Vec<usize> = match how {
            Match::Uid => Vec::new(),
            Match::MessageId => match (kid, k.by_bytes) {
                (Some(id), false) => self
                    .with_id(id)
                    .into_iter()
                    .filter(|i| free(i) && k.sizes().contains(&msgs[*i].size()))
                    .collect(),
                _ => Vec::new(),
            },
            Match::Exact => k
                .exact()
                .iter()
                .filter_map(|s| self.by_sha.get(s))
                .flatten()
                .copied()
                .filter(free)
                .collect(),
            // A server may not see a Message-ID we see (a header with bare-CR line
            // ends, which Courier joins into one line): its messages without one count.
            Match::Altered => {
                let by_id = match (kid, k.by_bytes) {
                    (Some(id), false) => self.with_id(id),
                    _ => Vec::new(),
                };
                let sized = by_id
                    .iter()
                    .filter(|i| k.altered_sizes().any(|s| s == msgs[**i].size()));
                k.forms()
                    .iter()
                    .filter_map(|s| self.by_canonical.get(s))
                    .flatten()
                    .filter(|i| msgs[**i].message_id.is_none() || msgs[**i].message_id == kid)
                    .chain(sized)
                    .copied()
                    .filter(free)
                    .collect()
            }
            // Same INTERNALDATE (we set it) and the same Message-ID, or, without one,
            // the same header section.
            Match::Rewritten if k.date.is_some() => (0..msgs.len())
                .filter(|i| {
                    let m = &msgs[*i];
                    free(i)
                        && m.date() == k.date
                        && match (m.message_id, kid) {
                            (Some(a), Some(b)) => a == b,
                            _ => m.head_canonical() == Some(k.head_loose),
                        }
                })
                .collect(),
            Match::Rewritten => Vec::new(),
            Match::OtherDelivery => match (kid, k.trace_free()) {
                (Some(id), Some(tf)) => self
                    .with_id(id)
                    .into_iter()
                    .filter(|i| free(i) && msgs[*i].trace_free() == Some(tf))
                    .collect(),
                _ => Vec::new(),
            },
        };
        cands
            .iter()
            .copied()
            .find(|&i| pref(&msgs[i]))
            .or_else(|| cands.first().copied())
    }

    /// Server messages no archived message has claimed.
    pub fn unclaimed(&self) -> impl Iterator<Item = &Held> {
        self.msgs
            .iter()
            .zip(&self.claimed)
            .filter(|(_, c)| !**c)
            .map(|(m, _)| m)
    }
}

use crate::mail::identity::IdHash;

/// An archived message (by its index in the caller's list) and the server message that
/// holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub rec: usize,
    pub uid: u32,
    pub how: Match,
}

/// The outcome of [`reconcile`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub pairs: Vec<Pair>,
    /// Archived messages the server lacks (indexes into the caller's list).
    pub missing: Vec<usize>,
    /// Server messages the archive lacks (UIDs).
    pub extra: Vec<u32>,
}

/// Pairs every archived message in `keys` with a message of `census`, one level of
/// evidence at a time over the whole folder. `pref(rec, held)` picks among equal
/// candidates (equal flags, say).
pub fn reconcile(
    keys: &[&MsgKey],
    census: &mut Census,
    pref: impl Fn(usize, &Held) -> bool,
) -> Reconciliation {
    let mut paired: Vec<Option<(Match, usize)>> = vec![None; keys.len()];
    let ids: Vec<Option<IdHash>> = keys.iter().map(|k| k.id_hash()).collect();
    for how in LEVELS {
        for (r, k) in keys.iter().enumerate() {
            if paired[r].is_some() {
                continue;
            }
            if let Some(i) = census.find(k, ids[r], how, &|h: &Held| pref(r, h)) {
                census.claimed[i] = true;
                paired[r] = Some((how, i));
            }
        }
    }
    let mut out = Reconciliation::default();
    for (rec, p) in paired.into_iter().enumerate() {
        match p {
            Some((how, i)) => out.pairs.push(Pair {
                rec,
                uid: census.msgs[i].uid,
                how,
            }),
            None => out.missing.push(rec),
        }
    }
    out.extra = census.unclaimed().map(|m| m.uid).collect();
    out
}

/// Flags compared as sets, case-insensitively, `\Recent` ignored: those archived that
/// the server lacks, and those the server has that were not archived.
pub fn flag_gap(archived: &[String], server: &[String]) -> (Vec<String>, Vec<String>) {
    let norm = |v: &[String]| -> Vec<String> { crate::mail::flags::normalize(v) };
    let (a, s) = (norm(archived), norm(server));
    let has = |v: &[String], f: &str| v.iter().any(|x| x.eq_ignore_ascii_case(f));
    let missing = a.iter().filter(|f| !has(&s, f)).cloned().collect();
    let extra = s.iter().filter(|f| !has(&a, f)).cloned().collect();
    (missing, extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::identity::{ambiguous_ids, crlf_len};

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    fn key(b: &[u8], amb: &HashSet<String>, date: Option<i64>) -> MsgKey {
        MsgKey::of(b, sha(b), amb, date)
    }

    fn ex(uid: u32, size: u32, mid: Option<&str>) -> Held {
        Held::new(uid, size, mid, FlagSet::default())
    }

    fn held(uid: u32, b: &[u8]) -> Held {
        ex(
            uid,
            b.len() as u32,
            crate::mail::identity::message_id_of(b).as_deref(),
        )
    }

    #[test]
    fn another_delivery_is_claimed_only_when_asked_and_only_by_its_bytes() {
        let archived = b"Received: from a by old; Mon, 1 Jan 2024 09:00:05 +0900\r\nMessage-ID: <d@x>\r\nSubject: s\r\n\r\ntext\r\n";
        let there = b"Received: from a by new; Mon, 1 Jan 2024 09:00:07 +0900\r\nReceived: from b by new; Mon, 1 Jan 2024 09:00:06 +0900\r\nMessage-ID: <d@x>\r\nSubject: s\r\n\r\ntext\r\n";
        let other = b"Received: from a by new; Mon, 1 Jan 2024 09:00:07 +0900\r\nMessage-ID: <d@x>\r\nSubject: s\r\n\r\nother text\r\n";
        let amb = HashSet::new();
        let mut sizes = HashMap::new();
        sizes.insert(IdHash::of("d@x"), vec![archived.len() as u64]);
        let mut c = Census::new(vec![held(1, other), held(2, there)]);
        // Both server copies have the Message-ID at another size: their bytes are read.
        assert_eq!(c.need_bytes(&amb, &sizes), vec![1, 2]);
        assert!(c.need_bytes(&amb, &HashMap::new()).is_empty());
        c.set_bytes(1, other);
        c.set_bytes(2, there);
        let mut k = key(archived, &amb, None);
        assert!(
            c.claim(&k).is_none(),
            "without the trace-free hash nothing matches"
        );
        k.set_trace_free(Some(crate::mail::identity::trace_free_sha256(archived)));
        let (how, m) = c.claim(&k).unwrap();
        assert_eq!((how, m.uid), (Match::OtherDelivery, 2));
        assert!(c.claim(&k).is_none(), "the other text is other mail");
    }

    #[test]
    fn dedup_claims() {
        let a = b"Message-ID: <same@x>\r\n\r\nfirst\r\n".to_vec();
        let b = b"Message-ID: <same@x>\r\n\r\nother\r\n".to_vec();
        let n = b"Subject: none\r\n\r\nx\r\n".to_vec();
        let amb = ambiguous_ids([
            (Some("<same@x>"), "h1"),
            (Some("<same@x>"), "h2"),
            (Some("<u@x>"), "h3"),
            (Some("<u@x>"), "h3"),
        ]);
        assert_eq!(amb, HashSet::from(["same@x".to_string()]));
        let ka = key(&a, &amb, None);
        let kb = key(&b, &amb, None);
        let kn = key(&n, &amb, None);
        assert!(ka.by_bytes && kn.by_bytes);
        // The server holds `a` and the message without Message-ID; `b` is missing.
        let mut st = Census::new(vec![
            ex(1, a.len() as u32, Some("same@x")),
            ex(2, n.len() as u32, None),
        ]);
        assert_eq!(st.need_bytes(&amb, &HashMap::new()), vec![1, 2]);
        st.set_bytes(1, &a);
        st.set_bytes(2, &n);
        assert!(
            st.claim(&kb).is_none(),
            "a different message sharing the id"
        );
        assert_eq!(st.claim(&ka).map(|(_, e)| e.uid), Some(1));
        assert!(
            st.claim(&ka).is_none(),
            "one server copy stands for one archived copy"
        );
        assert_eq!(st.claim(&kn).map(|(_, e)| e.uid), Some(2));
        // Unambiguous ids go by Message-ID + size; LF archives match CRLF servers.
        let lf = b"Message-ID: <u@x>\n\nbody\n".to_vec();
        let k = key(&lf, &amb, None);
        assert!(!k.by_bytes);
        let mut st = Census::new(vec![ex(7, crlf_len(&lf) as u32, Some("u@x"))]);
        assert_eq!(st.claim(&k).map(|(_, e)| e.uid), Some(7));
        let mut st = Census::new(vec![ex(7, 3, Some("u@x"))]);
        assert!(
            st.claim(&k).is_none(),
            "same id, other size: not this message"
        );
        // A body the server re-encoded: found by header and INTERNALDATE.
        let bin = b"Subject: b\r\n\r\nraw\0bytes\r\n".to_vec();
        let reenc = b"Subject: b\r\n\r\ncmF3AGJ5dGVz\r\n".to_vec();
        let k = key(&bin, &amb, Some(1000));
        let e =
            ex(9, reenc.len() as u32, None).with_internaldate(Some("01-Jan-1970 00:16:40 +0000"));
        let mut st = Census::new(vec![e]);
        st.set_bytes(9, &reenc);
        assert_eq!(st.claim(&k).map(|(_, e)| e.uid), Some(9));
    }

    /// Three messages share a Message-ID, two have none and share their headers: each
    /// archived copy pairs with its own server copy, whatever the order.
    #[test]
    fn collisions_pair_each_with_its_own() {
        let msgs: Vec<Vec<u8>> = vec![
            b"Message-ID: <s@x>\r\n\r\none\r\n".to_vec(),
            b"Message-ID: <s@x>\r\n\r\ntwo two\r\n".to_vec(),
            b"Message-ID: <s@x>\r\n\r\nthree 3\r\n".to_vec(),
            b"Subject: same\r\n\r\nA\r\n".to_vec(),
            b"Subject: same\r\n\r\nBB\r\n".to_vec(),
        ];
        let shas: Vec<String> = msgs.iter().map(|m| hex::encode(sha(m))).collect();
        let amb = ambiguous_ids(msgs.iter().zip(&shas).map(|(m, s)| {
            (
                if m.starts_with(b"Message") {
                    Some("<s@x>")
                } else {
                    None
                },
                s.as_str(),
            )
        }));
        let keys: Vec<MsgKey> = msgs.iter().map(|m| key(m, &amb, None)).collect();
        // The server holds them in another order, under other UIDs.
        let order = [4usize, 2, 0, 3, 1];
        let mut c = Census::new(
            order
                .iter()
                .enumerate()
                .map(|(u, &i)| held(u as u32 + 10, &msgs[i]))
                .collect(),
        );
        for uid in c.need_bytes(&amb, &HashMap::new()) {
            let i = order[(uid - 10) as usize];
            c.set_bytes(uid, &msgs[i]);
        }
        let refs: Vec<&MsgKey> = keys.iter().collect();
        let r = reconcile(&refs, &mut c, |_, _| true);
        assert!(r.missing.is_empty() && r.extra.is_empty(), "{r:?}");
        for p in &r.pairs {
            assert_eq!(order[(p.uid - 10) as usize], p.rec, "{r:?}");
            assert_eq!(p.how, Match::Exact);
        }
    }

    /// What the server lacks and what the archive lacks come out as such.
    #[test]
    fn missing_and_extra() {
        let amb = HashSet::new();
        let a = b"Message-ID: <a@x>\r\n\r\na\r\n".to_vec();
        let b = b"Message-ID: <b@x>\r\n\r\nb\r\n".to_vec();
        let z = b"Message-ID: <z@x>\r\n\r\nz\r\n".to_vec();
        let (ka, kb) = (key(&a, &amb, None), key(&b, &amb, None));
        let mut c = Census::new(vec![held(1, &a), held(2, &z)]);
        let r = reconcile(&[&ka, &kb], &mut c, |_, _| true);
        assert_eq!(
            r,
            Reconciliation {
                pairs: vec![Pair {
                    rec: 0,
                    uid: 1,
                    how: Match::MessageId
                }],
                missing: vec![1],
                extra: vec![2],
            }
        );
    }

    /// A loose match never takes the server copy an archived message matches exactly:
    /// two messages without Message-ID that differ only in an 8-bit byte share their
    /// canonical hash.
    #[test]
    fn exact_beats_altered_across_the_folder() {
        let amb = HashSet::new();
        let e1 = "Subject: s\r\n\r\ncaf\u{e9}\r\n".as_bytes().to_vec();
        let e2 = "Subject: s\r\n\r\ncaf\u{e8}\r\n".as_bytes().to_vec();
        let (k1, k2) = (key(&e1, &amb, None), key(&e2, &amb, None));
        assert_eq!(k1.forms(), k2.forms());
        let mut c = Census::new(vec![held(1, &e1), held(2, &e2)]);
        c.set_bytes(1, &e1);
        c.set_bytes(2, &e2);
        let r = reconcile(&[&k2, &k1], &mut c, |_, _| true);
        assert_eq!(r.pairs[0].uid, 2);
        assert_eq!(r.pairs[1].uid, 1);
        assert!(r.pairs.iter().all(|p| p.how == Match::Exact));
    }

    /// The server altered the bytes: CRs before a LF collapsed, NUL stored as 0x80
    /// (Dovecot), 8-bit header bytes
    /// as `X` (Cyrus), bare CR deleted and a final CRLF added (Courier, on a CR-only
    /// message whose Message-ID the server then cannot see). Each is found by form.
    #[test]
    fn altered_bytes_are_recognised() {
        let amb = HashSet::new();
        let cases: [(&[u8], &[u8]); 4] = [
            (
                b"Message-ID: <d@x>\r\n\r\nline\r\r\nnext\r\n",
                b"Message-ID: <d@x>\r\n\r\nline\r\nnext\r\n",
            ),
            (
                b"Message-ID: <n@x>\r\n\r\nbin\0ary\r\n",
                b"Message-ID: <n@x>\r\n\r\nbin\x80ary\r\n",
            ),
            (
                b"Subject: \xe3\x81\x82\r\n\r\nbody\r\n",
                b"Subject: XXX\r\n\r\nbody\r\n",
            ),
            (
                b"Subject: cr\rMessage-ID: <cr@x>\r\rbody\rline",
                b"Subject: crMessage-ID: <cr@x>bodyline\r\n",
            ),
        ];
        for (archived, stored) in cases {
            let k = key(archived, &amb, None);
            let mut c = Census::new(vec![held(5, stored)]);
            for uid in c.need_bytes(&amb, &HashMap::new()) {
                c.set_bytes(uid, stored);
            }
            // Dovecot and Cyrus see the Message-ID (same size): no bytes needed; the
            // Courier form hides it, so its bytes are read and compared by form.
            let got = c.claim(&k).map(|(how, e)| (how, e.uid));
            assert!(
                matches!(got, Some((Match::MessageId | Match::Altered, 5))),
                "{archived:?}: {got:?}"
            );
        }
        // The Courier form is its own: without it the CR-only message is not found.
        let cr = b"Subject: cr\rMessage-ID: <cr@x>\r\rbody\rline";
        let courier = b"Subject: crMessage-ID: <cr@x>bodyline\r\n";
        assert_ne!(canonical_sha256(cr), canonical_sha256(courier));
        assert!(key(cr, &amb, None).is_form(&canonical_sha256(courier)));
        // Different bytes are not a form.
        let mut c = Census::new(vec![held(6, b"Subject: other\r\n\r\nx\r\n")]);
        c.set_bytes(6, b"Subject: other\r\n\r\nx\r\n");
        assert!(c.claim(&key(cr, &amb, None)).is_none());
    }

    /// Message-IDs are held and indexed as hashes: among many, a Message-ID finds its
    /// own messages only, in census (UID) order, and a claim takes them one by one.
    #[test]
    fn message_ids_find_their_own_messages_only() {
        let amb = HashSet::new();
        let a = b"Message-ID: <a@x>\r\n\r\na\r\n".to_vec();
        let b = b"Message-ID: <b@x>\r\n\r\na\r\n".to_vec();
        let mut msgs = vec![held(1, &b), held(2, &a)];
        msgs.extend((10..500).map(|u| ex(u, 9, Some(&format!("{u}@x")))));
        msgs.push(held(3, &a));
        msgs.push(ex(4, 9, None));
        let mut c = Census::new(msgs);
        // In UID order: 1, 2, 3, 4, then 10 to 499.
        assert_eq!(c.with_id(IdHash::of("a@x")), vec![1, 2]);
        assert_eq!(c.with_id(IdHash::of("77@x")), vec![71]);
        assert!(c.with_id(IdHash::of("nope@x")).is_empty());
        let ka = key(&a, &amb, None);
        assert_eq!(
            c.claim(&ka).map(|(h, e)| (h, e.uid)),
            Some((Match::MessageId, 2))
        );
        assert_eq!(
            c.claim(&ka).map(|(h, e)| (h, e.uid)),
            Some((Match::MessageId, 3))
        );
        assert!(c.claim(&ka).is_none(), "b@x is not a@x");
    }

    /// A census listed in any order is held in UID order and its UIDs found by binary
    /// search; a UID listed twice is its last listing, as the map it replaced had it.
    #[test]
    fn uids_are_found_in_any_order() {
        let m = |u, size| ex(u, size, None);
        let mut c = Census::new(vec![m(9, 1), m(3, 2), m(7, 3), m(3, 4)]);
        let listed: Vec<(u32, u64)> = c.msgs.iter().map(|h| (h.uid, h.size())).collect();
        assert_eq!(listed, [(3, 2), (3, 4), (7, 3), (9, 1)]);
        assert_eq!(c.index_of_uid(9), Some(3));
        assert_eq!(c.index_of_uid(7), Some(2));
        assert_eq!(c.held(3).map(|h| h.size()), Some(4));
        assert_eq!(c.index_of_uid(1), None);
        assert_eq!(c.index_of_uid(8), None);
        assert_eq!(c.index_of_uid(10), None);
        assert!(c.claim_uid(7).is_some());
        assert!(c.claim_uid(7).is_none(), "claimed once");
        assert!(Census::default().index_of_uid(0).is_none());
    }

    #[test]
    fn flag_gaps() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (missing, extra) = flag_gap(&v(&["\\Seen", "$A"]), &v(&["\\seen", "\\Recent", "$B"]));
        assert_eq!(missing, v(&["$A"]));
        assert_eq!(extra, v(&["$B"]));
    }

    /// A census entry's cost, times every message of the biggest folder.
    #[test]
    fn held_stays_compact() {
        assert_eq!(std::mem::size_of::<Option<IdHash>>(), 16);
        assert_eq!(std::mem::size_of::<Held>(), 48);
    }

    /// INTERNALDATE's text comes back exactly as the server sent it, held compact
    /// where it renders back and as text where it does not.
    #[test]
    fn internaldate_text_comes_back_as_sent() {
        let h = |t: Option<&str>| Held::new(1, 1, None, FlagSet::default()).with_internaldate(t);
        for (text, date, compact) in [
            ("01-Jan-2024 09:00:00 +0900", Some(1_704_067_200), true),
            (" 1-Jan-2024 09:00:00 +0900", Some(1_704_067_200), true),
            ("31-Dec-1969 23:59:59 -0130", Some(5_399), true),
            ("1-Jan-2024 09:00:00 +0900", Some(1_704_067_200), false),
            ("01-JAN-2024 09:00:00 +0900", Some(1_704_067_200), false),
            ("01-Jan-2024 00:00:00 -0000", Some(1_704_067_200), false),
            ("yesterday", None, false),
        ] {
            let e = h(Some(text));
            assert_eq!(e.internaldate().as_deref(), Some(text));
            assert_eq!(e.date(), date, "{text}");
            assert_eq!(e.odd_date().is_none(), compact, "{text}");
        }
        assert_eq!(h(None).internaldate(), None);
        assert_eq!((h(None).date(), h(None).odd_date()), (None, None));
        assert!(h(None).rare.is_none(), "no box without an odd date");
    }

    /// The hand-written rendering is chrono's `%d-%b-%Y %H:%M:%S %z` (`%e` when
    /// space-padded), over years, days, hours and zones both sides of UTC.
    #[test]
    fn a_zone_renders_as_the_format_string_does() {
        for secs in (-62_000_000_000i64..253_000_000_000)
            .step_by(7_777_777_777)
            .chain([0, -1, 1_704_067_200, 951_782_400, 253_402_300_799])
        {
            for minutes in [-720i16, -330, -90, -1, 0, 1, 345, 540, 840] {
                for space_padded in [false, true] {
                    let z = Zone {
                        minutes,
                        space_padded,
                    };
                    let zone = FixedOffset::east_opt(i32::from(minutes) * 60).unwrap();
                    let t = DateTime::from_timestamp(secs, 0)
                        .unwrap()
                        .with_timezone(&zone);
                    let f = if space_padded { "%e" } else { "%d" };
                    let want = t.format(&format!("{f}-%b-%Y %H:%M:%S %z")).to_string();
                    let got = z.render(secs);
                    if (0..=9999).contains(&t.year()) {
                        assert_eq!(got.as_deref(), Some(want.as_str()), "{secs} {minutes}");
                    } else {
                        assert_eq!(got, None, "{want}");
                    }
                }
            }
        }
    }
}
