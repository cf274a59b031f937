//! Message identity: the forms in which a server may hold an archived message, and the
//! keys that recognise it there. Import dedup, import verification and `verify
//! --against` all decide "is this archived message that server message" from these
//! forms (through [`crate::reconcile`]), so they cannot disagree.
//!
//! A server stores a message byte-exact, in a CRLF form (bare LF and bare CR made CRLF,
//! or only bare LF), or altered by a deterministic rewrite: NUL → 0x80 (Dovecot),
//! 8-bit header bytes → `X` (Cyrus `munge8bit`), bare CR deleted with bare LF made CRLF
//! and a final CRLF added (Courier). The server-altered forms are derived from the
//! archived bytes, not remembered: a rerun recognises what an earlier run appended
//! with no state file and no trust in one, whichever run (or tool) put it there, and
//! the server's answer after an APPEND is not needed. Keeping the server's form instead
//! ("its size and hash are known after the append") would need that record to survive
//! until the next run and would not help a message another tool restored. The cost is
//! one or two extra hashes for the rare message holding bare line ends or bytes
//! servers rewrite.
//!
//! Matching on a canonical hash is looser than byte equality (two messages differing
//! only in 8-bit bytes share it), so a match by form is reported as altered, and the
//! exact forms are tried first ([`crate::reconcile`]).

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

mod stream;
pub use stream::{crlf_stream, KeyStream, Streamed, IN_MEMORY_MAX};

/// Bytes in the form servers serve them: every line ending CRLF (bare LF and bare CR
/// become CRLF), which is what RFC822.SIZE counts and BODY[] returns on Dovecot.
pub fn crlf_len(b: &[u8]) -> u64 {
    (b.len() + bare_line_ends(b).count()) as u64
}

/// Positions of bare CR and bare LF (line ends that are not part of a CRLF pair).
/// Found with memchr: messages are mostly long runs without either byte, and a byte
/// loop over every message was a visible share of an import's CPU.
fn bare_line_ends(b: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr::memchr2_iter(b'\r', b'\n', b).filter(move |&p| match b[p] {
        b'\r' => b.get(p + 1) != Some(&b'\n'),
        _ => p == 0 || b[p - 1] != b'\r',
    })
}

/// Size after turning bare LF into CRLF but keeping bare CR: what Dovecot stores for a
/// message with mixed line endings.
pub fn lf_crlf_len(b: &[u8]) -> u64 {
    let bare_lf = memchr::memchr_iter(b'\n', b)
        .filter(|&i| i == 0 || b[i - 1] != b'\r')
        .count();
    (b.len() + bare_lf) as u64
}

/// SHA-256 of the form with bare LF turned into CRLF and bare CR kept.
pub fn lf_crlf_sha256(b: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', b) {
        if i == 0 || b[i - 1] != b'\r' {
            h.update(&b[start..i]);
            h.update(b"\r");
            start = i;
        }
    }
    h.update(&b[start..]);
    h.finalize().into()
}

/// Feeds the CRLF form of `b` to `sink` in chunks, without copying the whole message.
fn crlf_chunks(b: &[u8], mut sink: impl FnMut(&[u8])) {
    let mut start = 0;
    for p in bare_line_ends(b) {
        sink(&b[start..p]);
        sink(b"\r\n");
        start = p + 1;
    }
    sink(&b[start..]);
}

/// Appends the CRLF form of `b` to `out`.
pub fn crlf_form(b: &[u8], out: &mut Vec<u8>) {
    crlf_chunks(b, |c| out.extend_from_slice(c));
}

/// SHA-256 of the CRLF form: what `--verify full` compares with the server's BODY[].
pub fn crlf_sha256(b: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    crlf_chunks(b, |c| h.update(c));
    h.finalize().into()
}

/// The canonical hash: SHA-256 of the CRLF form with every NUL and 8-bit byte replaced
/// by `X` and the line ends at the very end dropped. It absorbs the rewrites servers
/// apply that keep enough of the message to map it back: line ends made CRLF (all),
/// NUL stored as 0x80 (Dovecot), 8-bit header bytes turned into `X` (Cyrus
/// `munge8bit`), a final bare CR dropped (Dovecot) or a final CRLF added (Courier).
/// Verification still compares the exact bytes and reports the rewrite.
pub fn canonical_sha256(b: &[u8]) -> [u8; 32] {
    if memchr::memmem::find(b, b"\r\r").is_some() {
        // Dovecot stores a run of CRs before a LF as one CRLF.
        let c = collapse_cr_runs(b);
        if c.len() != b.len() {
            return canonical_sha256(&c);
        }
    }
    // Line ends at the very end are not part of the identity: Dovecot drops a final
    // bare CR.
    let end = b.len()
        - b.iter()
            .rev()
            .take_while(|&&c| c == b'\r' || c == b'\n')
            .count();
    let b = &b[..end];
    let mut h = Sha256::new();
    let mut tmp = Vec::with_capacity(8192);
    crlf_chunks(b, |c| {
        for part in c.chunks(8192) {
            tmp.clear();
            tmp.extend(
                part.iter()
                    .map(|&x| if x == 0 || x >= 0x80 { b'X' } else { x }),
            );
            h.update(&tmp);
        }
    });
    h.finalize().into()
}

/// `b` with every run of CRs ending in a LF made one CRLF (what Dovecot stores).
fn collapse_cr_runs(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' {
            let run = b[i..].iter().take_while(|&&c| c == b'\r').count();
            if b.get(i + run) == Some(&b'\n') {
                out.extend_from_slice(b"\r\n");
                i += run + 1;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// What Courier stores for `b`: bare CR bytes deleted, bare LF made CRLF, a final CRLF
/// added.
fn courier_form(b: &[u8]) -> Vec<u8> {
    let kept: Vec<u8> = b
        .iter()
        .enumerate()
        .filter(|&(i, &c)| c != b'\r' || b.get(i + 1) == Some(&b'\n'))
        .map(|(_, &c)| c)
        .collect();
    let mut out = Vec::with_capacity(kept.len() + kept.len() / 32 + 2);
    crlf_form(&kept, &mut out);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The server-altered forms of `b` that keep fewer line breaks than `b` has, when it
/// holds a bare CR: Courier's (every bare CR deleted) and Dovecot's (a run of CRs
/// before a LF made one CRLF). Empty for everything else.
fn cr_altered_forms(b: &[u8]) -> Vec<Vec<u8>> {
    if !bare_line_ends(b).any(|p| b[p] == b'\r') {
        return Vec::new();
    }
    let mut dovecot = Vec::new();
    crlf_form(&collapse_cr_runs(b), &mut dovecot);
    vec![courier_form(b), dovecot]
}

/// Canonical hashes of every form a server may store `b` in. The canonical hash covers
/// the rewrites that keep every line break; the one that does not gets a form of its
/// own: Courier deletes bare CR bytes on APPEND, so a message with CR-only line ends
/// becomes one long line in which the server finds no Message-ID.
pub fn altered_forms(b: &[u8]) -> Vec<[u8; 32]> {
    let mut out = vec![canonical_sha256(b)];
    for f in cr_altered_forms(b) {
        let h = canonical_sha256(&f);
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// Sizes of the server forms whose size the CRLF conversion does not give: the
/// CR-deleting ones (Courier's, Dovecot's), and Courier's final CRLF added to a message
/// that ends without a line end. With them an unambiguous Message-ID finds a message a
/// server altered so without reading its bytes.
pub fn altered_sizes(b: &[u8]) -> Vec<u64> {
    let mut v: Vec<u64> = cr_altered_forms(b).iter().map(|f| f.len() as u64).collect();
    if !b.is_empty() && !b.ends_with(b"\n") {
        v.push(courier_form(b).len() as u64);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Header fields the receiving servers add on delivery. Two deliveries of one mail (to
/// the old server and the new one while the MX change spreads, or a partner's retry)
/// differ only in these.
const TRACE_FIELDS: [&str; 9] = [
    "received",
    "return-path",
    "delivered-to",
    "x-original-to",
    "envelope-to",
    "authentication-results",
    "received-spf",
    "x-envelope-from",
    "x-envelope-to",
];
const TRACE_PREFIXES: [&str; 3] = ["arc-", "x-spam-", "x-virus-"];

fn is_trace_field(name: &[u8]) -> bool {
    let n = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
    TRACE_FIELDS.contains(&n.as_str()) || TRACE_PREFIXES.iter().any(|p| n.starts_with(p))
}

/// Canonical hash ([`canonical_sha256`]) of the message without its trace header
/// fields ([`TRACE_FIELDS`], `ARC-*`, `X-Spam-*`, `X-Virus-*`, each with its
/// continuation lines): equal for two deliveries of the same mail, different as soon as
/// any other header field or the body differs.
pub fn trace_free_sha256(b: &[u8]) -> [u8; 32] {
    let head = crate::mail::headers::header_section(b);
    let mut out = without_trace_fields(head);
    out.extend_from_slice(&b[head.len()..]);
    canonical_sha256(&out)
}

/// A header section without its trace fields and their continuation lines.
fn without_trace_fields(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    let mut skipping = false;
    let mut rest = head;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        rest = &rest[end..];
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            skipping = line
                .iter()
                .position(|&c| c == b':')
                .is_some_and(|i| is_trace_field(&line[..i]));
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out
}

/// SHA-256 of a message's header section including the blank line that ends it, as it
/// is, in CRLF form, and with only bare LF made CRLF (the forms a server may store).
/// `None` when the message has no blank line (no body): such a header cannot be told
/// apart from the whole message, so it is compared whole.
pub fn header_forms(b: &[u8]) -> Option<[[u8; 32]; 3]> {
    let h = crate::mail::headers::header_section(b).len();
    let end = if b[h..].starts_with(b"\r\n") {
        h + 2
    } else if b[h..].starts_with(b"\n") {
        h + 1
    } else {
        return None;
    };
    let head = &b[..end];
    Some([
        Sha256::digest(head).into(),
        crlf_sha256(head),
        lf_crlf_sha256(head),
    ])
}

/// Bytes a server is known to rewrite: NUL anywhere, 8-bit bytes in the header section.
pub fn at_risk(b: &[u8]) -> bool {
    memchr::memchr(0, b).is_some()
        || crate::mail::headers::header_section(b)
            .iter()
            .any(|&x| x >= 0x80)
}

/// Normalises a Message-ID for matching: the part between `<` and `>` when present,
/// else the trimmed value; `None` when empty.
pub fn norm_message_id(v: &str) -> Option<String> {
    let v = v.trim();
    let inner = match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v,
    };
    let inner = inner.trim();
    (!inner.is_empty()).then(|| inner.to_string())
}

/// The first Message-ID field's value of a header block (as `BODY[HEADER.FIELDS
/// (MESSAGE-ID)]` returns it, or a whole message), unfolded.
pub fn message_id_of(head: &[u8]) -> Option<String> {
    let head = crate::mail::headers::header_section(head);
    let mut lines = split_lines(head).into_iter().peekable();
    while let Some(line) = lines.next() {
        if line.len() >= 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
            let mut v = line[11..].to_vec();
            while let Some(c) = lines.peek() {
                if c.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                    v.extend_from_slice(c);
                    lines.next();
                } else {
                    break;
                }
            }
            return norm_message_id(&String::from_utf8_lossy(&v));
        }
    }
    None
}

/// Lines of a header block, ended by CRLF, LF or a bare CR.
fn split_lines(b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\r' if b.get(i + 1) == Some(&b'\n') => {
                out.push(&b[start..i]);
                i += 2;
                start = i;
                continue;
            }
            b'\r' | b'\n' => {
                out.push(&b[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < b.len() {
        out.push(&b[start..]);
    }
    out
}

/// The parts of a [`MsgKey`], as its constructors work them out (see the accessors of
/// [`MsgKey`] for what each means).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts {
    pub message_id: Option<String>,
    pub sizes: [u64; 3],
    pub exact: [[u8; 32]; 3],
    pub forms: Vec<[u8; 32]>,
    pub altered_sizes: Vec<u64>,
    pub head_loose: [u8; 32],
    pub date: Option<i64>,
    pub by_bytes: bool,
    pub at_risk: bool,
    pub trace_free: Option<[u8; 32]>,
}

/// How an archived message is recognised on a server: every form of it a server may
/// hold, reduced to what can be compared without its bytes (Message-ID, sizes) and with
/// them (exact and canonical hashes).
///
/// Held compact, as import and `verify --against` keep one per archived message (a
/// million at a time): the forms most messages do not have (bare line ends, server-
/// altered forms, a trace-free hash) are packed into one allocation of 32-byte slots
/// sized to what the message has, none for a message of CRLF lines compared by
/// Message-ID. A message with 8-bit header bytes (common: one canonical form) costs
/// one slot, where a box of every optional part cost 208 bytes in two allocations. The
/// accessors give the same values the fields gave, so what matches what is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgKey {
    /// Boxed, not a `String`: the capacity word is 8 bytes a key.
    pub message_id: Option<Box<str>>,
    /// Archived size.
    size: u64,
    /// SHA-256 of the archived bytes.
    sha: [u8; 32],
    /// Canonical hash of the header section alone, and the INTERNALDATE given with
    /// APPEND (seconds): together they recognise a message whose body a server
    /// re-encoded (Dovecot turns `binary` parts of a literal8 APPEND into base64).
    pub head_loose: [u8; 32],
    pub date: Option<i64>,
    /// Message-ID + size cannot tell this message apart (shared with another archived
    /// message of the folder that differs): compare bytes.
    pub by_bytes: bool,
    /// Holds bytes servers are known to rewrite (see [`at_risk`]).
    pub at_risk: bool,
    /// Which rare parts `rare` holds; it fits in what would be the key's padding.
    shape: Shape,
    /// The rare parts, in this order: the sizes (little-endian `u64`s, four a slot:
    /// the bare-line-end forms' two, then the altered sizes), the bare-line-end forms'
    /// two hashes, the canonical forms, the trace-free hash. Packing is canonical (a
    /// slot's unused words zero), so equal parts give equal keys.
    rare: Box<[[u8; 32]]>,
}

/// How many of each rare part a key's packed slots hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Shape {
    forms: u16,
    altered_sizes: u16,
    bare: bool,
    trace_free: bool,
}

/// A key's rare parts unpacked, to build or edit the packed slots; each part empty
/// where it is the common case.
#[derive(Debug, Default)]
struct RareForms {
    /// With bare line ends: the CRLF form's size and SHA-256, and the form's with only
    /// bare LF made CRLF (else both are the archived size and SHA-256).
    bare: Option<([u64; 2], [[u8; 32]; 2])>,
    forms: Vec<[u8; 32]>,
    altered_sizes: Vec<u64>,
    trace_free: Option<[u8; 32]>,
}

impl RareForms {
    fn pack(&self) -> (Shape, Box<[[u8; 32]]>) {
        let words: Vec<u64> = self
            .bare
            .iter()
            .flat_map(|b| b.0)
            .chain(self.altered_sizes.iter().copied())
            .collect();
        let hashes = 2 * usize::from(self.bare.is_some())
            + self.forms.len()
            + usize::from(self.trace_free.is_some());
        // Sized exactly up front: the slice is the allocation, with no spare capacity.
        let mut slots = Vec::with_capacity(words.len().div_ceil(4) + hashes);
        slots.extend(words.chunks(4).map(|c| {
            let mut slot = [0u8; 32];
            for (dst, w) in slot.chunks_exact_mut(8).zip(c) {
                dst.copy_from_slice(&w.to_le_bytes());
            }
            slot
        }));
        slots.extend(self.bare.iter().flat_map(|b| b.1));
        slots.extend_from_slice(&self.forms);
        slots.extend(self.trace_free);
        let shape = Shape {
            forms: count(self.forms.len()),
            altered_sizes: count(self.altered_sizes.len()),
            bare: self.bare.is_some(),
            trace_free: self.trace_free.is_some(),
        };
        (shape, slots.into_boxed_slice())
    }
}

/// A part's length as a [`Shape`] holds it. Keys hold at most three forms and three
/// altered sizes (see [`altered_forms`], [`altered_sizes`]).
fn count(n: usize) -> u16 {
    u16::try_from(n).expect("a key holds a few forms, not 65536")
}

impl From<KeyParts> for MsgKey {
    fn from(p: KeyParts) -> MsgKey {
        let [size, crlf_len, lf_len] = p.sizes;
        let [sha, crlf_sha, lf_sha] = p.exact;
        let plain = crlf_len == size && lf_len == size && crlf_sha == sha && lf_sha == sha;
        let (shape, rare) = RareForms {
            bare: (!plain).then_some(([crlf_len, lf_len], [crlf_sha, lf_sha])),
            forms: p.forms,
            altered_sizes: p.altered_sizes,
            trace_free: p.trace_free,
        }
        .pack();
        MsgKey {
            message_id: p.message_id.map(String::into_boxed_str),
            size,
            sha,
            head_loose: p.head_loose,
            date: p.date,
            by_bytes: p.by_bytes,
            at_risk: p.at_risk,
            shape,
            rare,
        }
    }
}

impl MsgKey {
    /// The Message-ID as a census holds it.
    pub fn id_hash(&self) -> Option<IdHash> {
        self.message_id.as_deref().map(IdHash::of)
    }

    /// The key of `bytes`, whose SHA-256 `sha` the caller already has (the archive's
    /// index holds it, checked while reading).
    pub fn of(
        bytes: &[u8],
        sha: [u8; 32],
        ambiguous_ids: &HashSet<String>,
        date: Option<i64>,
    ) -> MsgKey {
        let message_id = message_id_of(bytes);
        let by_bytes = message_id
            .as_ref()
            .is_none_or(|m| ambiguous_ids.contains(m));
        let crlf = crlf_len(bytes);
        let bare = crlf != bytes.len() as u64;
        let at_risk = at_risk(bytes);
        KeyParts {
            sizes: [
                bytes.len() as u64,
                crlf,
                if bare { lf_crlf_len(bytes) } else { crlf },
            ],
            exact: if bare {
                [sha, crlf_sha256(bytes), lf_crlf_sha256(bytes)]
            } else {
                // No bare line ends: every byte-exact server form is the archived bytes.
                [sha; 3]
            },
            forms: if by_bytes || bare || at_risk {
                altered_forms(bytes)
            } else {
                Vec::new()
            },
            altered_sizes: if bare || !bytes.ends_with(b"\n") {
                altered_sizes(bytes)
            } else {
                Vec::new()
            },
            head_loose: canonical_sha256(crate::mail::headers::header_section(bytes)),
            date,
            by_bytes,
            at_risk,
            message_id,
            trace_free: None,
        }
        .into()
    }

    /// Archived size, CRLF-form size, and the size with only bare LF made CRLF: a
    /// server may store any of these.
    pub fn sizes(&self) -> [u64; 3] {
        if self.shape.bare {
            [self.size, self.word(0), self.word(1)]
        } else {
            [self.size; 3]
        }
    }

    /// SHA-256 of the archived bytes, of their CRLF form, and of the form with only
    /// bare LF made CRLF (the byte-exact forms a server stores).
    pub fn exact(&self) -> [[u8; 32]; 3] {
        if self.shape.bare {
            let at = self.size_slots();
            [self.sha, self.rare[at], self.rare[at + 1]]
        } else {
            [self.sha; 3]
        }
    }

    /// Canonical hashes ([`canonical_sha256`]) of the message and of its server-altered
    /// forms ([`altered_forms`]). Computed only where they can be needed: messages
    /// compared by bytes, with bare line ends, or with bytes servers rewrite (hashing
    /// costs time on big imports); empty otherwise.
    pub fn forms(&self) -> &[[u8; 32]] {
        let at = self.size_slots() + 2 * usize::from(self.shape.bare);
        &self.rare[at..at + usize::from(self.shape.forms)]
    }

    /// Sizes of the server-altered forms that delete bytes (see [`altered_sizes`]).
    /// An iterator, as they are packed into bytes with the other rare parts.
    pub fn altered_sizes(&self) -> impl Iterator<Item = u64> + '_ {
        let first = 2 * usize::from(self.shape.bare);
        (first..first + usize::from(self.shape.altered_sizes)).map(|i| self.word(i))
    }

    /// [`trace_free_sha256`], set only where another delivery of the same mail may
    /// stand for this message (import with `--other-deliveries`, migrate).
    pub fn trace_free(&self) -> Option<[u8; 32]> {
        self.rare.last().copied().filter(|_| self.shape.trace_free)
    }

    /// The `i`th packed size.
    fn word(&self, i: usize) -> u64 {
        let slot = &self.rare[i / 4];
        let mut w = [0u8; 8];
        w.copy_from_slice(&slot[i % 4 * 8..][..8]);
        u64::from_le_bytes(w)
    }

    /// Slots the packed sizes take.
    fn size_slots(&self) -> usize {
        (2 * usize::from(self.shape.bare) + usize::from(self.shape.altered_sizes)).div_ceil(4)
    }

    pub fn set_trace_free(&mut self, h: Option<[u8; 32]>) {
        self.edit_rare(|r| r.trace_free = h);
    }

    pub fn set_forms(&mut self, forms: Vec<[u8; 32]>) {
        self.edit_rare(|r| r.forms = forms);
    }

    fn edit_rare(&mut self, f: impl FnOnce(&mut RareForms)) {
        let mut r = self.unpack();
        f(&mut r);
        (self.shape, self.rare) = r.pack();
    }

    fn unpack(&self) -> RareForms {
        let [_, crlf_len, lf_len] = self.sizes();
        let [_, crlf_sha, lf_sha] = self.exact();
        RareForms {
            bare: self
                .shape
                .bare
                .then_some(([crlf_len, lf_len], [crlf_sha, lf_sha])),
            forms: self.forms().to_vec(),
            altered_sizes: self.altered_sizes().collect(),
            trace_free: self.trace_free(),
        }
    }

    /// The parts the key was made of (equal keys, equal parts).
    pub fn parts(&self) -> KeyParts {
        KeyParts {
            message_id: self.message_id.as_deref().map(String::from),
            sizes: self.sizes(),
            exact: self.exact(),
            forms: self.forms().to_vec(),
            altered_sizes: self.altered_sizes().collect(),
            head_loose: self.head_loose,
            date: self.date,
            by_bytes: self.by_bytes,
            at_risk: self.at_risk,
            trace_free: self.trace_free(),
        }
    }

    /// The server's bytes, hashed, are one of this message's byte-exact forms.
    pub fn is_exact(&self, sha: &[u8; 32]) -> bool {
        self.exact().contains(sha)
    }

    /// The server's bytes, canonically hashed, are this message or a form of it a
    /// server altered.
    pub fn is_form(&self, canonical: &[u8; 32]) -> bool {
        self.forms().contains(canonical)
    }
}

/// Message-IDs that several different archived messages of one folder share (different
/// SHA-256): for those, Message-ID + size is not enough to tell which is there.
pub fn ambiguous_ids<M: AsRef<str>, S: AsRef<str>>(
    msgs: impl IntoIterator<Item = (Option<M>, S)>,
) -> HashSet<String> {
    let mut a = AmbiguousIds::default();
    for (mid, sha) in msgs {
        a.add(mid.as_ref().map(|m| m.as_ref()), sha.as_ref());
    }
    a.finish()
}

/// [`ambiguous_ids`] fed one message at a time (one per folder in a single pass). Held
/// compact, as a whole folder is fed at once (400,000 messages): per Message-ID its
/// [`id_hash`] and the first 16 bytes of the SHA-256 first seen with it, where a map of
/// Message-ID Strings to SHA-256s cost ~140 bytes a message. A hash two Message-IDs
/// share can only make one of them ambiguous too (compared by bytes: slower, never
/// wrong); a real ambiguity is always found, as its second message meets the first's
/// entry (or another one it differs from).
#[derive(Debug, Default)]
pub struct AmbiguousIds {
    seen: HashMap<u64, [u8; 16]>,
    out: HashSet<String>,
}

impl AmbiguousIds {
    pub fn add(&mut self, mid: Option<&str>, sha: &str) {
        let Some(m) = mid.and_then(norm_message_id) else {
            return;
        };
        let sha = sha_prefix(sha);
        match self.seen.entry(id_hash(&m)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                if *e.get() != sha {
                    self.out.insert(m);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(sha);
            }
        }
    }

    pub fn finish(self) -> HashSet<String> {
        self.out
    }
}

/// A Message-ID as a server census holds it: the first 16 bytes of its SHA-256. Equal
/// hashes are taken for equal Message-IDs: two that differ share one only by a
/// collision of 128 bits of SHA-256, which no sender can arrange for another's
/// Message-ID. 16 bytes a census entry, `None` included (the first half is never zero),
/// where the text cost about 70 (a pointer pair and its allocation): a census of one
/// folder of a million messages is held whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdHash(std::num::NonZeroU64, u64);

impl IdHash {
    pub fn of(id: &str) -> IdHash {
        let d = Sha256::digest(id.as_bytes());
        let half = |i: usize| u64::from_be_bytes(d[i..i + 8].try_into().expect("8 bytes"));
        // A zero first half (one digest in 2^64) is taken as one: still 127 bits.
        let first = std::num::NonZeroU64::new(half(0)).unwrap_or(std::num::NonZeroU64::MIN);
        IdHash(first, half(8))
    }
}

/// A Message-ID's 64-bit hash, what [`AmbiguousIds`] keys by while a whole folder is fed
/// to it (8 bytes an entry fewer than [`IdHash`]; a collision only makes a Message-ID
/// ambiguous: compared by bytes, never wrong). A census holds [`IdHash`].
pub(crate) fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// The first 16 bytes of a SHA-256 as an index spells it: decoded when it is lowercase
/// hex (as writers write it), else of the text's own digest, so only equal spellings
/// compare equal (as before, when the text itself was kept).
fn sha_prefix(s: &str) -> [u8; 16] {
    let mut p = [0u8; 16];
    let hex64 = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex64 && hex::decode_to_slice(&s[..32], &mut p).is_ok() {
        return p;
    }
    p.copy_from_slice(&Sha256::digest(s.as_bytes())[..16]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_is_ambiguous_when_its_messages_differ() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let amb = ambiguous_ids([
            (Some("<x@h>"), a.as_str()),
            (Some("<x@h>"), b.as_str()),
            (Some("<y@h>"), a.as_str()),
            (Some("<y@h>"), a.as_str()),
            (Some("<z@h>"), a.as_str()),
            (None, b.as_str()),
            // Another spelling of the same digest is another text, as it always was.
            (Some("<w@h>"), a.as_str()),
            (Some("<w@h>"), &a.to_uppercase()),
        ]);
        let mut got: Vec<String> = amb.into_iter().collect();
        got.sort();
        assert_eq!(got, ["w@h", "x@h"]);
    }

    #[test]
    fn crlf_forms() {
        assert_eq!(crlf_len(b"a\nb\r\nc\rd"), 10);
        assert_eq!(crlf_sha256(b"a\nb"), crlf_sha256(b"a\r\nb"));
        assert_eq!(crlf_sha256(b"a\rb"), crlf_sha256(b"a\r\nb"));
        assert_ne!(crlf_sha256(b"a\nb"), crlf_sha256(b"a\n\nb"));
        assert_eq!(
            canonical_sha256(b"S: \xe3\x81\x82\n\nx\0"),
            canonical_sha256(b"S: XXX\r\n\r\nx\x80")
        );
        assert!(at_risk(b"Subject: \xe3\n\nbody"));
        // The header section with its blank line, in the forms a server may store.
        let lf = b"Subject: \xe3\nX: y\n\nbody\n";
        let crlf = b"Subject: \xe3\r\nX: y\r\n\r\n";
        let f = header_forms(lf).unwrap();
        assert_eq!(
            f[0],
            <[u8; 32]>::from(Sha256::digest(b"Subject: \xe3\nX: y\n\n"))
        );
        assert_eq!(f[1], <[u8; 32]>::from(Sha256::digest(crlf)));
        assert_eq!(f[2], f[1]);
        assert_eq!(
            header_forms(b"Subject: a\r\n\r\nb").unwrap()[0],
            <[u8; 32]>::from(Sha256::digest(b"Subject: a\r\n\r\n"))
        );
        assert!(header_forms(b"Subject: no body\r\n").is_none());
        assert!(!at_risk(b"Subject: a\n\n\xe3 body"));
        assert!(at_risk(b"Subject: a\n\nbo\0dy"));
    }

    /// The line-end scans agree with the byte-by-byte definition on every mix of CR, LF
    /// and text, including ends at the first and last byte.
    #[test]
    fn line_end_scans_match_the_definition() {
        fn naive_crlf(b: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'\r' if b.get(i + 1) == Some(&b'\n') => {
                        out.extend_from_slice(b"\r\n");
                        i += 2;
                        continue;
                    }
                    b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
                    c => out.push(c),
                }
                i += 1;
            }
            out
        }
        fn naive_lf_crlf(b: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            for (i, &c) in b.iter().enumerate() {
                if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
                    out.push(b'\r');
                }
                out.push(c);
            }
            out
        }
        let alphabet = [b'\r', b'\n', b'a', 0x80];
        let mut seed = 0x2545F4914F6CDD1Du64;
        for len in 0..400usize {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut r = seed;
            let b: Vec<u8> = (0..len % 40)
                .map(|_| {
                    r = r.rotate_left(2);
                    alphabet[(r & 3) as usize]
                })
                .collect();
            let crlf = naive_crlf(&b);
            assert_eq!(crlf_len(&b), crlf.len() as u64, "{b:?}");
            let mut formed = Vec::new();
            crlf_form(&b, &mut formed);
            assert_eq!(formed, crlf, "{b:?}");
            let lf = naive_lf_crlf(&b);
            assert_eq!(lf_crlf_len(&b), lf.len() as u64, "{b:?}");
            assert_eq!(lf_crlf_sha256(&b), <[u8; 32]>::from(Sha256::digest(&lf)));
        }
    }

    #[test]
    fn message_ids() {
        assert_eq!(
            message_id_of(b"Subject: x\r\nMessage-Id:\r\n  <a@b> (c)\r\n\r\nbody"),
            Some("a@b".into())
        );
        assert_eq!(
            message_id_of(b"Subject: x\r\n\r\nMessage-ID: <no@x>\r\n"),
            None
        );
        assert_eq!(norm_message_id(" <> "), None);
        assert_eq!(
            message_id_of(b"Subject: x\rMessage-ID: <cr@x>\r\rbody"),
            Some("cr@x".into())
        );
        assert_eq!(lf_crlf_len(b"a\nb\rc\r\n"), 8);
        let want: [u8; 32] = Sha256::digest(b"a\r\nb\r").into();
        assert_eq!(lf_crlf_sha256(b"a\nb\r"), want);
    }

    /// The server-altered forms are the transformations the servers apply.
    #[test]
    fn another_delivery_differs_only_in_trace_fields() {
        let a = b"Received: from mx1 by old.example.jp; Mon, 1 Jan 2024 09:00:00 +0900\r\n\
Return-Path: <s@example.com>\r\nDelivered-To: t@example.jp\r\nX-Spam-Score: 0.1\r\n\
Message-ID: <m@x>\r\nSubject: hello\r\nARC-Seal: i=1;\r\n a=rsa-sha256\r\n\r\nbody\r\n";
        let b = b"Received: from mx9 by new.example.net; Mon, 1 Jan 2024 09:00:03 +0900\r\n\
Received: from relay; Mon, 1 Jan 2024 09:00:02 +0900\r\n\
Authentication-Results: new.example.net; spf=pass\r\n\
Message-ID: <m@x>\r\nSubject: hello\r\n\r\nbody\r\n";
        assert_eq!(trace_free_sha256(a), trace_free_sha256(b));
        let other_subject = b"Message-ID: <m@x>\r\nSubject: hello again\r\n\r\nbody\r\n";
        assert_ne!(trace_free_sha256(a), trace_free_sha256(other_subject));
        let other_body = b"Message-ID: <m@x>\r\nSubject: hello\r\n\r\nbody!\r\n";
        assert_ne!(trace_free_sha256(a), trace_free_sha256(other_body));
        // A "Received" line in the body is body, not trace.
        let in_body = b"Message-ID: <m@x>\r\nSubject: hello\r\n\r\nReceived: x\r\nbody\r\n";
        assert_ne!(
            trace_free_sha256(in_body),
            trace_free_sha256(b"Message-ID: <m@x>\r\nSubject: hello\r\n\r\nbody\r\n")
        );
    }

    /// The compact key gives the forms the old fields held, for every kind of message,
    /// and only messages with rare forms carry an allocation.
    #[test]
    fn compact_key_keeps_every_form() {
        let msgs: [&[u8]; 7] = [
            b"Message-ID: <a@x>\r\n\r\nplain\r\n",
            b"Message-ID: <b@x>\n\nlf only\n",
            b"Message-ID: <c@x>\r\n\r\nmixed\nends\r\r\n",
            b"Subject: cr\rMessage-ID: <d@x>\r\rbody\rline",
            b"Message-ID: <e@x>\r\n\r\nnul\0byte\r\n",
            b"Subject: \xe3\x81\x82\r\n\r\nno id\r\n",
            b"Message-ID: <f@x>\r\n\r\nno final line end",
        ];
        for m in msgs {
            let sha: [u8; 32] = Sha256::digest(m).into();
            let k = MsgKey::of(m, sha, &HashSet::new(), Some(7));
            let bare = crlf_len(m) != m.len() as u64;
            let (sizes, exact) = if bare {
                (
                    [m.len() as u64, crlf_len(m), lf_crlf_len(m)],
                    [sha, crlf_sha256(m), lf_crlf_sha256(m)],
                )
            } else {
                ([m.len() as u64; 3], [sha; 3])
            };
            assert_eq!(k.sizes(), sizes, "{m:?}");
            assert_eq!(k.exact(), exact, "{m:?}");
            let forms = if k.by_bytes || bare || k.at_risk {
                altered_forms(m)
            } else {
                Vec::new()
            };
            assert_eq!(k.forms(), forms.as_slice(), "{m:?}");
            let sizes = if bare || !m.ends_with(b"\n") {
                altered_sizes(m)
            } else {
                Vec::new()
            };
            assert_eq!(k.altered_sizes().collect::<Vec<_>>(), sizes, "{m:?}");
            assert_eq!(MsgKey::from(k.parts()), k, "{m:?}");
            let mut t = k.clone();
            t.set_trace_free(Some(trace_free_sha256(m)));
            assert_eq!(t.trace_free(), Some(trace_free_sha256(m)));
            assert_ne!(t, k);
            t.set_trace_free(None);
            assert_eq!(t, k, "clearing a part gives the same key back");
        }
        let plain = MsgKey::of(msgs[0], [1; 32], &HashSet::new(), None);
        assert!(
            plain.rare.is_empty(),
            "a plain message carries no allocation"
        );
        assert!(plain.forms().is_empty() && plain.altered_sizes().next().is_none());
        // Keys differing in any form differ.
        let mut other = plain.clone();
        other.set_forms(vec![[2; 32]]);
        assert_ne!(other, plain);
    }

    /// What a key costs: the key itself, and the packed slots of a message with 8-bit
    /// header bytes (one canonical form: every message of the scale benchmark) and of
    /// one with bare LF line ends. A regression here multiplies by a million.
    #[test]
    fn key_sizes() {
        assert_eq!(std::mem::size_of::<MsgKey>(), 128);
        let eight_bit = b"Message-ID: <g@x>\r\nSubject: \xe3\x81\x82\r\n\r\nbody\r\n";
        let k = MsgKey::of(eight_bit, [3; 32], &HashSet::new(), None);
        assert_eq!(std::mem::size_of_val(&*k.rare), 32, "one form, one slot");
        let lf = b"Message-ID: <h@x>\n\nlf only\n";
        let k = MsgKey::of(lf, [3; 32], &HashSet::new(), None);
        assert_eq!(
            k.rare.len(),
            4,
            "a size slot, two exact forms, one canonical"
        );
    }

    /// Keys of a message with 8-bit header bytes and of one with bare LF line ends give
    /// the values the forms' own functions compute, as the unpacked key gave them.
    #[test]
    fn packed_keys_give_the_forms_values() {
        let eight_bit = b"Message-ID: <g@x>\r\nSubject: \xe3\x81\x82\r\n\r\nbody\r\n";
        let sha: [u8; 32] = Sha256::digest(eight_bit).into();
        let k = MsgKey::of(eight_bit, sha, &HashSet::new(), Some(9));
        let len = eight_bit.len() as u64;
        assert_eq!(k.message_id.as_deref(), Some("g@x"));
        assert_eq!((k.sizes(), k.exact()), ([len; 3], [sha; 3]));
        assert_eq!(k.forms(), [canonical_sha256(eight_bit)]);
        assert!(k.is_form(&canonical_sha256(
            b"Message-ID: <g@x>\r\nSubject: XXX\r\n\r\nbody"
        )));
        assert!(k.is_exact(&sha) && !k.is_exact(&[0; 32]));
        assert_eq!((k.altered_sizes().count(), k.trace_free()), (0, None));
        assert!(k.at_risk && !k.by_bytes);

        let lf = b"Message-ID: <h@x>\n\nlf only\n";
        let sha: [u8; 32] = Sha256::digest(lf).into();
        let k = MsgKey::of(lf, sha, &HashSet::new(), None);
        assert_eq!(k.sizes(), [27, 30, 30]);
        let crlf: [u8; 32] = Sha256::digest(b"Message-ID: <h@x>\r\n\r\nlf only\r\n").into();
        assert_eq!(k.exact(), [sha, crlf, crlf]);
        assert!(k.is_exact(&crlf));
        assert_eq!(k.forms(), [canonical_sha256(lf)]);
        assert_eq!((k.altered_sizes().count(), k.trace_free()), (0, None));
        assert!(!k.at_risk && !k.by_bytes);
    }

    /// Every part packs and unpacks, sizes spilling into a second slot included.
    #[test]
    fn every_part_round_trips_through_the_packing() {
        let p = KeyParts {
            message_id: None,
            sizes: [10, 12, 11],
            exact: [[1; 32], [2; 32], [3; 32]],
            forms: vec![[4; 32], [5; 32]],
            altered_sizes: vec![7, 8, 9],
            head_loose: [6; 32],
            date: Some(-1),
            by_bytes: true,
            at_risk: true,
            trace_free: Some([9; 32]),
        };
        let k = MsgKey::from(p.clone());
        assert_eq!(k.parts(), p);
        assert_eq!(k.rare.len(), 2 + 2 + 2 + 1);
        assert!(k.altered_sizes().eq([7, 8, 9]));
        let mut t = k.clone();
        t.set_forms(Vec::new());
        t.set_forms(p.forms.clone());
        assert_eq!(t, k);
    }

    #[test]
    fn courier_adds_a_final_crlf_to_a_message_without_one() {
        let m = b"Subject: x\r\nMessage-ID: <n@t>\r\n\r\nlast line";
        assert_eq!(altered_sizes(m), vec![m.len() as u64 + 2]);
        let k = MsgKey::of(m, [0; 32], &HashSet::new(), None);
        assert!(k.altered_sizes().eq([m.len() as u64 + 2]));
        assert!(altered_sizes(b"Subject: x\r\n\r\nends\r\n").is_empty());
        // LF-only and unterminated: the CRLF form plus the final CRLF.
        let lf = b"Subject: x\n\nlast";
        assert_eq!(altered_sizes(lf), vec![crlf_len(lf) + 2]);
    }

    #[test]
    fn server_altered_forms() {
        // Courier: bare CR deleted, bare LF made CRLF, a final CRLF added.
        assert_eq!(courier_form(b"a\rb\nc\r\nd"), b"ab\r\nc\r\nd\r\n");
        assert_eq!(courier_form(b"x\r\n"), b"x\r\n");
        // Dovecot: a run of CRs before a LF is one CRLF; other bare CRs stay.
        assert_eq!(collapse_cr_runs(b"a\r\r\nb\r\rc"), b"a\r\nb\r\rc");
        let m = b"S: x\r\r\n\r\nbody\rmore";
        assert_eq!(altered_sizes(m), vec![18]);
        assert_eq!(
            altered_forms(m),
            vec![
                canonical_sha256(m),
                canonical_sha256(b"S: x\r\n\r\nbodymore\r\n")
            ]
        );
        // Dovecot's collapsed form is absorbed by the canonical hash itself.
        assert_eq!(
            canonical_sha256(b"S: x\r\n\r\nbody\r\nmore"),
            canonical_sha256(m)
        );
        // Nothing to alter: no extra forms, no extra sizes.
        assert_eq!(altered_forms(b"S: x\r\n\r\nb\n").len(), 1);
        assert!(altered_sizes(b"S: x\n\nb\n").is_empty());
        // NUL → 0x80 and 8-bit header bytes → X share the canonical hash.
        assert_eq!(
            canonical_sha256(b"S: \xe3\r\n\r\na\0b"),
            canonical_sha256(b"S: X\r\n\r\na\x80b\r\n")
        );
    }
}
