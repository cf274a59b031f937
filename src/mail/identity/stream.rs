//! [`MsgKey::of`] for a message read in pieces: every hash and size the key needs is
//! carried along as the bytes go by, so a message of any size is keyed in fixed
//! memory (a copy of its first [`MAX_HEADER`] bytes, where every header-derived part
//! of the key is found).
//!
//! The whole-message functions in the parent module stay the reference (and the fast
//! path for messages held in memory): each form here is the same rewrite expressed on
//! runs of line-end bytes, and the tests check that both give the same key for every
//! message of a corpus of line-end and 8-bit cases cut at every piece size.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use super::{message_id_of, without_trace_fields, MsgKey};
use crate::mail::headers::{header_section, MAX_HEADER};

/// Messages up to this size are read into memory and keyed by [`MsgKey::of`] (the
/// fast path, which computes only the forms a key needs); larger ones are keyed by
/// [`KeyStream`] as they stream (and an import spools them to a temporary file to
/// append them), so memory does not follow a message's size.
pub const IN_MEMORY_MAX: u64 = 16 << 20;

/// How a run of CR and LF bytes becomes line ends (each written as CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// CRLF stays, bare CR and bare LF each become CRLF ([`super::crlf_form`]).
    Plain,
    /// A run of CRs ended by LF is one line end (Dovecot), then as `Plain`.
    Collapse,
    /// Bare CRs are deleted (Courier), then as `Plain`.
    Courier,
}

/// One server form of the message, hashed as it streams: line ends rewritten per
/// `ends`, the line ends at the very end dropped from the hash when `strip`, and NUL and
/// 8-bit bytes made `X` when `xmap` (the canonical hash).
#[derive(Clone)]
struct Form {
    ends: Ends,
    strip: bool,
    xmap: bool,
    h: Sha256,
    /// CRs of the current line-end run whose fate the next byte decides.
    crs: u64,
    /// Line ends decided but not written: held back because they may be the last.
    pending: u64,
    /// Length of the form with its final line ends (not stripped).
    len: u64,
    bare_cr: bool,
    /// A run of two or more CRs ended by LF was seen (Dovecot would collapse it).
    collapses: bool,
    tmp: Vec<u8>,
}

const CRLFS: [u8; 4096] = {
    let mut a = [b'\n'; 4096];
    let mut i = 0;
    while i < 4096 {
        a[i] = b'\r';
        i += 2;
    }
    a
};

impl Form {
    fn new(ends: Ends, strip: bool, xmap: bool) -> Form {
        Form {
            ends,
            strip,
            xmap,
            h: Sha256::new(),
            crs: 0,
            pending: 0,
            len: 0,
            bare_cr: false,
            collapses: false,
            tmp: Vec::new(),
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match memchr::memchr2(b'\r', b'\n', data) {
                Some(0) => {
                    self.line_byte(data[0]);
                    data = &data[1..];
                }
                Some(i) => {
                    self.text(&data[..i]);
                    data = &data[i..];
                }
                None => {
                    self.text(data);
                    data = &[];
                }
            }
        }
    }

    fn line_byte(&mut self, b: u8) {
        if b == b'\r' {
            self.crs += 1;
            return;
        }
        if self.crs >= 2 {
            self.bare_cr = true;
            self.collapses = true;
        }
        self.pending += match self.ends {
            Ends::Plain => self.crs.max(1),
            Ends::Collapse | Ends::Courier => 1,
        };
        self.crs = 0;
    }

    /// CRs not followed by LF are bare.
    fn resolve_bare(&mut self) {
        if self.crs > 0 {
            self.bare_cr = true;
            if self.ends != Ends::Courier {
                self.pending += self.crs;
            }
            self.crs = 0;
        }
    }

    fn write_pending(&mut self) {
        self.len += 2 * self.pending;
        while self.pending > 0 {
            let k = self.pending.min(CRLFS.len() as u64 / 2) as usize;
            self.h.update(&CRLFS[..2 * k]);
            self.pending -= k as u64;
        }
    }

    fn text(&mut self, t: &[u8]) {
        self.resolve_bare();
        self.write_pending();
        self.len += t.len() as u64;
        if !self.xmap {
            self.h.update(t);
            return;
        }
        for part in t.chunks(8192) {
            self.tmp.clear();
            self.tmp.extend(
                part.iter()
                    .map(|&x| if x == 0 || x >= 0x80 { b'X' } else { x }),
            );
            self.h.update(&self.tmp);
        }
    }

    /// The hash, the form's full length, and whether it ends with a line end.
    fn finish(mut self) -> ([u8; 32], u64, bool) {
        self.resolve_bare();
        let ends_with_line_end = self.pending > 0;
        if self.strip {
            self.len += 2 * self.pending;
        } else {
            self.write_pending();
        }
        (self.h.finalize().into(), self.len, ends_with_line_end)
    }
}

/// Bare LF made CRLF, bare CR kept ([`super::lf_crlf_sha256`]).
#[derive(Clone, Default)]
struct LfForm {
    h: Sha256,
    len: u64,
    after_cr: bool,
}

impl LfForm {
    fn feed(&mut self, data: &[u8]) {
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', data) {
            let prev_cr = if i == 0 {
                self.after_cr
            } else {
                data[i - 1] == b'\r'
            };
            if !prev_cr {
                self.h.update(&data[start..i]);
                self.h.update(b"\r");
                self.len += 1;
                start = i;
            }
        }
        self.h.update(&data[start..]);
        self.len += data.len() as u64;
        if let Some(&b) = data.last() {
            self.after_cr = b == b'\r';
        }
    }
}

/// The canonical hash of a stream, as [`super::canonical_sha256`] decides it: of the
/// Dovecot-collapsed form when collapsing changes the message, else of the message.
#[derive(Clone)]
struct Canonical {
    plain: Form,
    collapsed: Form,
}

impl Canonical {
    fn new() -> Canonical {
        Canonical {
            plain: Form::new(Ends::Plain, true, true),
            collapsed: Form::new(Ends::Collapse, true, true),
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.plain.feed(data);
        self.collapsed.feed(data);
    }

    fn finish(self) -> ([u8; 32], Form) {
        let collapses = self.plain.collapses;
        let (plain, _, _) = self.plain.finish();
        if collapses {
            (self.collapsed.clone().finish().0, self.collapsed)
        } else {
            (plain, self.collapsed)
        }
    }
}

/// What the streaming pass learnt of a message besides its key.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub key: MsgKey,
    /// SHA-256 and length of the bytes fed (compare them with the index).
    pub sha256: [u8; 32],
    pub len: u64,
    /// Holds NUL (goes as a `literal8`).
    pub nul: bool,
    /// [`super::header_forms`] of the message.
    pub head: Option<[[u8; 32]; 3]>,
    /// [`super::trace_free_sha256`], when asked for.
    pub trace_free: Option<[u8; 32]>,
    /// [`super::altered_forms`] (the key holds them only where they can be needed; a
    /// message whose APPEND went unanswered is compared by them).
    pub all_forms: Vec<[u8; 32]>,
}

/// Keys a message fed in pieces of any size ([`KeyStream::feed`]).
pub struct KeyStream {
    sha: Sha256,
    len: u64,
    /// The first bytes: the header section lies within them (it is cut at
    /// [`MAX_HEADER`]), and two more say how it ends.
    prefix: Vec<u8>,
    nul: bool,
    last: Option<u8>,
    crlf: Form,
    lf: LfForm,
    canonical: Canonical,
    courier: Form,
    /// With trace fields wanted: the canonical hash of the message without them,
    /// started once the header section is known.
    trace: Option<Option<Canonical>>,
}

const PREFIX: usize = MAX_HEADER + 2;

impl KeyStream {
    pub fn new(want_trace_free: bool) -> KeyStream {
        KeyStream {
            sha: Sha256::new(),
            len: 0,
            prefix: Vec::new(),
            nul: false,
            last: None,
            crlf: Form::new(Ends::Plain, false, false),
            lf: LfForm::default(),
            canonical: Canonical::new(),
            courier: Form::new(Ends::Courier, true, true),
            trace: want_trace_free.then_some(None),
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.sha.update(data);
        self.len += data.len() as u64;
        self.nul |= memchr::memchr(0, data).is_some();
        self.last = data.last().copied();
        self.crlf.feed(data);
        self.lf.feed(data);
        self.canonical.feed(data);
        self.courier.feed(data);
        let room = PREFIX.saturating_sub(self.prefix.len()).min(data.len());
        self.prefix.extend_from_slice(&data[..room]);
        match &mut self.trace {
            Some(Some(t)) => t.feed(data),
            Some(None) if self.prefix.len() == PREFIX => {
                // The header section is known: what came after it so far is in
                // the prefix, and from now on every byte is fed as it comes.
                self.trace = Some(Some(self.trace_start()));
                if let Some(Some(t)) = &mut self.trace {
                    t.feed(&data[room..]);
                }
            }
            _ => {}
        }
    }

    fn trace_start(&self) -> Canonical {
        let head = header_section(&self.prefix);
        let mut t = Canonical::new();
        t.feed(&without_trace_fields(head));
        t.feed(&self.prefix[head.len()..]);
        t
    }

    /// The key, as [`MsgKey::of`] gives it for the same bytes.
    pub fn finish(mut self, ambiguous_ids: &HashSet<String>, date: Option<i64>) -> Streamed {
        let trace_free = match self.trace.take() {
            Some(Some(t)) => Some(t.finish().0),
            Some(None) => Some(self.trace_start().finish().0),
            None => None,
        };
        let sha: [u8; 32] = self.sha.finalize().into();
        let head = header_section(&self.prefix);
        let message_id = message_id_of(&self.prefix);
        let by_bytes = message_id
            .as_ref()
            .is_none_or(|m| ambiguous_ids.contains(m));
        let at_risk = self.nul || head.iter().any(|&x| x >= 0x80);
        let head_loose = super::canonical_sha256(head);
        let head_forms = super::header_forms(&self.prefix);
        let (crlf_sha, crlf_len, _) = self.crlf.finish();
        let bare = crlf_len != self.len;
        let bare_cr = self.canonical.plain.bare_cr || self.canonical.plain.crs > 0;
        let (canonical, collapsed) = self.canonical.finish();
        let (dovecot_sha, dovecot_len, _) = collapsed.finish();
        let (courier_sha, courier_len, courier_ends) = self.courier.finish();
        let courier_len = courier_len + if courier_ends { 0 } else { 2 };
        let mut forms = vec![canonical];
        if bare_cr {
            for h in [courier_sha, dovecot_sha] {
                if !forms.contains(&h) {
                    forms.push(h);
                }
            }
        }
        let ends_lf = self.last == Some(b'\n');
        let mut altered_sizes = Vec::new();
        if bare || !ends_lf {
            if bare_cr {
                altered_sizes.extend([courier_len, dovecot_len]);
            }
            if self.len > 0 && !ends_lf {
                altered_sizes.push(courier_len);
            }
            altered_sizes.sort_unstable();
            altered_sizes.dedup();
        }
        let key: MsgKey = super::KeyParts {
            sizes: [
                self.len,
                crlf_len,
                if bare { self.lf.len } else { crlf_len },
            ],
            exact: if bare {
                [sha, crlf_sha, self.lf.h.finalize().into()]
            } else {
                [sha; 3]
            },
            forms: if by_bytes || bare || at_risk {
                forms.clone()
            } else {
                Vec::new()
            },
            altered_sizes,
            head_loose,
            date,
            by_bytes,
            at_risk,
            message_id,
            trace_free: None,
        }
        .into();
        Streamed {
            key,
            sha256: sha,
            len: self.len,
            nul: self.nul,
            head: head_forms,
            trace_free,
            all_forms: forms,
        }
    }
}

/// [`super::crlf_form`] from a reader to a writer: bare CR and bare LF become CRLF.
/// Returns the length written.
pub fn crlf_stream(r: &mut impl Read, w: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut out = Vec::with_capacity(buf.len() * 2 + 2);
    let mut after_cr = false;
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        for &b in &buf[..k] {
            match b {
                b'\n' if after_cr => out.push(b'\n'),
                b'\n' => out.extend_from_slice(b"\r\n"),
                _ => {
                    if after_cr {
                        out.push(b'\n');
                    }
                    out.push(b);
                }
            }
            after_cr = b == b'\r';
        }
        w.write_all(&out)?;
        n += out.len() as u64;
    }
    if after_cr {
        w.write_all(b"\n")?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<Vec<u8>> {
        let parts: [&[u8]; 14] = [
            b"\r",
            b"\n",
            b"\r\n",
            b"\r\r\n",
            b"x",
            b"\0",
            b"\xe3\x81\x82",
            b"\r\r",
            b"\n\n",
            b"Message-ID: <a@b>\r\n",
            b"Received: from x\r\n",
            b" cont\r\n",
            b"Subject: s\n",
            b"body line\r\n",
        ];
        let mut out: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"Message-ID: <d@x>\r\nSubject: s\r\n\r\nbody\r\n".to_vec(),
            b"Received: a\r\n\tb\r\nMessage-ID: <d@x>\r\n\r\nbody".to_vec(),
            b"Subject: \xe3\x81\x82\rMessage-ID: <m@x>\r\r\rbody\r".to_vec(),
        ];
        let mut seed = 11u64;
        for _ in 0..400 {
            let mut m = Vec::new();
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for _ in 0..(seed >> 58) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                m.extend_from_slice(parts[(seed >> 33) as usize % parts.len()]);
            }
            out.push(m);
        }
        // A header section longer than the prefix: the key sees only its start.
        let mut long = b"Message-ID: <long@x>\r\nX-Pad: ".to_vec();
        long.resize(MAX_HEADER + 100, b'a');
        long.extend_from_slice(b"\r\n\r\nbody\rmore\n");
        out.push(long);
        out
    }

    #[test]
    fn streaming_key_is_the_whole_message_key_at_every_piece_size() {
        let mut amb = HashSet::new();
        amb.insert("m@x".to_string());
        for m in corpus() {
            let sha: [u8; 32] = Sha256::digest(&m).into();
            let want = MsgKey::of(&m, sha, &amb, Some(5));
            for piece in [1, 2, 3, 5, 64, 1 << 20] {
                let mut ks = KeyStream::new(true);
                for c in m.chunks(piece) {
                    ks.feed(c);
                }
                let got = ks.finish(&amb, Some(5));
                assert_eq!(got.key, want, "{m:?} in pieces of {piece}");
                assert_eq!(got.sha256, sha);
                assert_eq!(got.len, m.len() as u64);
                assert_eq!(got.nul, m.contains(&0));
                assert_eq!(got.trace_free, Some(super::super::trace_free_sha256(&m)));
                assert_eq!(got.all_forms, super::super::altered_forms(&m));
                let mut crlf = Vec::new();
                let n = crlf_stream(&mut &m[..], &mut crlf).unwrap();
                let mut want_crlf = Vec::new();
                super::super::crlf_form(&m, &mut want_crlf);
                assert_eq!((n, crlf), (want_crlf.len() as u64, want_crlf));
                if !m.is_empty() {
                    assert_eq!(got.head, super::super::header_forms(&m), "{m:?}");
                }
            }
        }
    }
}
