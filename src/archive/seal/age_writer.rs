//! Writes an age v1 file (<https://age-encryption.org/v1>) for [`super::Output`]. The
//! age crate still wraps the file key for each recipient (its stanzas) and reads every
//! age file; what is ours is laying out the header, as the age crate does (stanzas, a
//! grease stanza, the header MAC), and the payload STREAM, sealed with OpenSSL's
//! ChaCha20-Poly1305, which takes 2.5× less CPU than the age crate's here (README,
//! Benchmarks): on two busy cores an encrypted export's extra CPU is extra wall time,
//! against a target of 1.10× a plain export's.

use std::collections::HashSet;
use std::io::{self, Write};

use age::secrecy::{ExposeSecret, SecretBox};
use age_core::format::{FileKey, Stanza};
use age_core::primitives::hkdf;
use base64::prelude::{Engine, BASE64_STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use sha2::Sha256;

/// Plaintext bytes in each payload chunk, and the tag each sealed chunk carries.
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AgeWriteError {
    #[error("no recipient to encrypt to")]
    NoRecipients,
    #[error("recipient: {0}")]
    Recipient(#[from] age::EncryptError),
    #[error(
        "these recipients cannot be encrypted to together (their labels differ: {0:?} and {1:?})"
    )]
    IncompatibleRecipients(HashSet<String>, HashSet<String>),
    #[error("a recipient gave labels that are not valid age strings: {0:?}")]
    BadLabels(HashSet<String>),
    #[error("the system's random source failed: {0}")]
    Random(getrandom::Error),
    #[error("OpenSSL ChaCha20-Poly1305: {0}")]
    Cipher(#[from] openssl::error::ErrorStack),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<AgeWriteError> for io::Error {
    fn from(e: AgeWriteError) -> io::Error {
        match e {
            AgeWriteError::Io(e) => e,
            other => io::Error::other(format!("age: {other}")),
        }
    }
}

/// An age v1 writer: the header is written at once, the plaintext sealed in 64 KiB
/// chunks as it comes, the last chunk by [`AgeWriter::finish`].
pub(crate) struct AgeWriter<W: Write> {
    inner: W,
    aead: CipherCtx,
    counter: u64,
    /// Plaintext not sealed yet: at most one chunk, held back until more bytes show it
    /// is not the last.
    pending: Vec<u8>,
    /// Sealed chunks waiting to go to `inner`, its first `filled` bytes: one write per
    /// `write` call, not per chunk. It only grows (zeroing 64 KiB for every chunk would
    /// cost more than a copy).
    sealed: Vec<u8>,
    filled: usize,
}

impl<W: Write> AgeWriter<W> {
    /// Starts an age file to `recipients` on `inner`, with a fresh random file key and
    /// payload nonce.
    pub(crate) fn new<'a>(
        recipients: impl Iterator<Item = &'a dyn age::Recipient>,
        inner: W,
    ) -> Result<AgeWriter<W>, AgeWriteError> {
        let file_key = FileKey::try_init_with_mut(|k| getrandom::getrandom(k))
            .map_err(AgeWriteError::Random)?;
        let mut stanzas = wrap(&file_key, recipients)?;
        // As the age crate does: an unknown stanza in every header keeps readers honest
        // about skipping stanzas they do not know.
        stanzas.push(age_core::format::grease_the_joint());
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce).map_err(AgeWriteError::Random)?;
        AgeWriter::with_keys(&file_key, &stanzas, nonce, inner)
    }

    /// Writes the header for `stanzas` and the payload `nonce`, and keys the STREAM
    /// from `file_key` and `nonce`; the tests fix both to compare with age's own.
    fn with_keys(
        file_key: &FileKey,
        stanzas: &[Stanza],
        nonce: [u8; 16],
        mut inner: W,
    ) -> Result<AgeWriter<W>, AgeWriteError> {
        let mut head = header(file_key, stanzas);
        head.extend_from_slice(&nonce);
        inner.write_all(&head)?;
        let payload_key =
            SecretBox::new(Box::new(hkdf(&nonce, b"payload", file_key.expose_secret())));
        let mut aead = CipherCtx::new()?;
        aead.encrypt_init(
            Some(Cipher::chacha20_poly1305()),
            Some(payload_key.expose_secret()),
            None,
        )?;
        Ok(AgeWriter {
            inner,
            aead,
            counter: 0,
            pending: Vec::with_capacity(CHUNK),
            sealed: Vec::new(),
            filled: 0,
        })
    }

    /// Seals what is left as the last chunk (empty only if the whole plaintext was) and
    /// gives back the writer underneath.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        let last = std::mem::take(&mut self.pending);
        self.seal(&last, true)?;
        self.inner.write_all(&self.sealed[..self.filled])?;
        Ok(self.inner)
    }

    /// Appends `chunk` sealed to `self.sealed`: ChaCha20-Poly1305 under the nonce
    /// counter (11 bytes, big-endian) || last-chunk flag, tag after the ciphertext.
    fn seal(&mut self, chunk: &[u8], last: bool) -> io::Result<()> {
        let mut nonce = [0u8; 12];
        nonce[..11].copy_from_slice(&u128::from(self.counter).to_be_bytes()[5..]);
        nonce[11] = u8::from(last);
        // 2^64 chunks of 64 KiB is past any file, but a wrapped counter would reuse
        // a nonce: refuse rather than risk it.
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| io::Error::other("age: the chunk counter overflowed"))?;
        let (at, end) = (self.filled, self.filled + chunk.len() + TAG);
        if self.sealed.len() < end {
            self.sealed.resize(end, 0);
        }
        self.filled = end;
        chacha20_poly1305(&mut self.aead, &nonce, chunk, &mut self.sealed[at..end])
            .map_err(|e| io::Error::other(format!("age: OpenSSL ChaCha20-Poly1305: {e}")))
    }
}

/// `out` (the chunk's length plus the tag) gets `chunk` encrypted under `nonce`, then
/// the tag.
fn chacha20_poly1305(
    aead: &mut CipherCtx,
    nonce: &[u8; 12],
    chunk: &[u8],
    out: &mut [u8],
) -> Result<(), openssl::error::ErrorStack> {
    let (text, tag) = out.split_at_mut(chunk.len());
    aead.encrypt_init(None, None, Some(nonce))?;
    let n = aead.cipher_update(chunk, Some(text))?;
    debug_assert_eq!(n, chunk.len());
    aead.cipher_final(&mut [])?;
    aead.tag(tag)
}

impl<W: Write> Write for AgeWriter<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let given = buf.len();
        while !buf.is_empty() {
            // A full chunk with bytes after it is not the last: seal it.
            if self.pending.len() == CHUNK {
                let full = std::mem::take(&mut self.pending);
                self.seal(&full, false)?;
                self.pending = full;
                self.pending.clear();
            }
            // Whole chunks straight from the caller's buffer, sparing a copy.
            if self.pending.is_empty() && buf.len() > CHUNK {
                self.seal(&buf[..CHUNK], false)?;
                buf = &buf[CHUNK..];
                continue;
            }
            let n = buf.len().min(CHUNK - self.pending.len());
            self.pending.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
        }
        self.inner.write_all(&self.sealed[..self.filled])?;
        self.filled = 0;
        Ok(given)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Wraps the file key for every recipient; as the age crate does, refuses recipients
/// whose label sets differ (a recipient that must stand alone, say).
fn wrap<'a>(
    file_key: &FileKey,
    recipients: impl Iterator<Item = &'a dyn age::Recipient>,
) -> Result<Vec<Stanza>, AgeWriteError> {
    let mut stanzas = Vec::new();
    let mut labels: Option<HashSet<String>> = None;
    for r in recipients {
        let (mut s, l) = r.wrap_file_key(file_key)?;
        match &labels {
            Some(first) if *first != l => {
                return Err(AgeWriteError::IncompatibleRecipients(first.clone(), l))
            }
            Some(_) => {}
            None if !l.iter().all(age_core::format::is_arbitrary_string) => {
                return Err(AgeWriteError::BadLabels(l))
            }
            None => labels = Some(l),
        }
        stanzas.append(&mut s);
    }
    if labels.is_none() {
        return Err(AgeWriteError::NoRecipients);
    }
    Ok(stanzas)
}

/// The age v1 header: version line, stanzas, and `---` with the MAC over everything
/// before it (HMAC-SHA-256 keyed by HKDF(file key, "header")).
fn header(file_key: &FileKey, stanzas: &[Stanza]) -> Vec<u8> {
    let mut h = b"age-encryption.org/v1\n".to_vec();
    for s in stanzas {
        h.extend_from_slice(b"-> ");
        h.extend_from_slice(s.tag.as_bytes());
        for a in &s.args {
            h.push(b' ');
            h.extend_from_slice(a.as_bytes());
        }
        h.push(b'\n');
        // Body lines of 64 columns; the last is always shorter, empty if need be.
        let body = BASE64_STANDARD_NO_PAD.encode(&s.body);
        let mut rest = body.as_bytes();
        while rest.len() >= 64 {
            h.extend_from_slice(&rest[..64]);
            h.push(b'\n');
            rest = &rest[64..];
        }
        h.extend_from_slice(rest);
        h.push(b'\n');
    }
    h.extend_from_slice(b"---");
    let mac_key = SecretBox::new(Box::new(hkdf(&[], b"header", file_key.expose_secret())));
    let mut mac = <Hmac<Sha256>>::new_from_slice(mac_key.expose_secret())
        .expect("HMAC takes a key of any length");
    mac.update(&h);
    h.push(b' ');
    h.extend_from_slice(
        BASE64_STANDARD_NO_PAD
            .encode(mac.finalize().into_bytes())
            .as_bytes(),
    );
    h.push(b'\n');
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn x25519() -> (age::x25519::Identity, age::x25519::Recipient) {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        (id, r)
    }

    fn encrypt(to: &[&dyn age::Recipient], data: &[u8]) -> Vec<u8> {
        let mut w = AgeWriter::new(to.iter().copied(), Vec::new()).unwrap();
        // Odd-sized writes, so chunks are built across calls as well as within one.
        for piece in data.chunks(40_000) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn decrypt(file: &[u8], id: &dyn age::Identity) -> Result<Vec<u8>, String> {
        let d = age::Decryptor::new(file).map_err(|e| format!("{e:?}"))?;
        let mut r = d
            .decrypt(std::iter::once(id))
            .map_err(|e| format!("{e:?}"))?;
        let mut back = Vec::new();
        r.read_to_end(&mut back)
            .map_err(|e| format!("{:?}", e.kind()))?;
        Ok(back)
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// The file's size is fixed by the format: header, nonce, then each chunk plus its
    /// tag, with a full last chunk marked last (no empty chunk after it).
    fn payload_len(n: usize) -> usize {
        let chunks = n.div_ceil(CHUNK).max(1);
        n + chunks * TAG
    }

    #[test]
    fn the_age_crate_decrypts_every_chunk_boundary_with_one_recipient_or_several() {
        let dir = tempfile::tempdir().unwrap();
        let (id, r) = x25519();
        let (id2, r2) = x25519();
        let ssh = dir.path().join("id_ed25519");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
            .arg(&ssh)
            .status()
            .expect("ssh-keygen (openssh-client) is needed");
        assert!(made.success());
        let ssh_pub: age::ssh::Recipient = std::fs::read_to_string(ssh.with_extension("pub"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let ssh_id = age::ssh::Identity::from_buffer(
            &std::fs::read(&ssh).unwrap()[..],
            Some("id_ed25519".into()),
        )
        .unwrap()
        .with_callbacks(age::NoCallbacks);

        for n in [0, 1, 65535, 65536, 65537, 2 * 65536, 200 * 1024] {
            let data = sample(n);
            let one = encrypt(&[&r], &data);
            assert_eq!(
                decrypt(&one, &id).unwrap(),
                data,
                "{n} bytes, one recipient"
            );
            let start = one.len() - payload_len(n);
            assert_eq!(&one[start - 16 - 1..start - 16], b"\n", "{n}: header end");

            let many = encrypt(&[&r, &ssh_pub, &r2], &data);
            for (who, id) in [
                ("x25519", &id as &dyn age::Identity),
                ("ssh-ed25519", &ssh_id),
                ("second x25519", &id2),
            ] {
                assert_eq!(decrypt(&many, id).unwrap(), data, "{n} bytes, {who}");
            }
        }
    }

    /// `at` changed to another base64 letter, so the header still parses.
    fn other_letter(file: &[u8], at: usize) -> Vec<u8> {
        let mut bad = file.to_vec();
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        bad
    }

    #[test]
    fn a_changed_byte_in_the_mac_a_stanza_or_the_payload_fails_to_decrypt() {
        let (id, r) = x25519();
        let data = sample(150_000);
        let file = encrypt(&[&r], &data);
        let mac_at = file.windows(4).position(|w| w == b"\n---").unwrap() + 5;
        // The X25519 stanza's body: the wrapped file key.
        let body_at = 1 + file
            .split(|&b| b == b'\n')
            .take(2)
            .map(|l| l.len() + 1)
            .sum::<usize>();
        let e = decrypt(&other_letter(&file, mac_at), &id).unwrap_err();
        assert_eq!(e, "InvalidMac", "header MAC");
        let e = decrypt(&other_letter(&file, body_at), &id).unwrap_err();
        assert_eq!(e, "NoMatchingKeys", "stanza body");
        let mut bad = file.clone();
        bad[file.len() - payload_len(data.len()) + 70_000] ^= 0x01;
        let e = decrypt(&bad, &id).unwrap_err();
        assert_eq!(e, "InvalidData", "payload chunk");
        assert_eq!(decrypt(&file, &id).unwrap(), data);
    }

    #[test]
    fn debians_age_decrypts_whole_and_partial_last_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (id, r) = x25519();
        let key = dir.path().join("key.txt");
        std::fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
        for n in [0, 65536, 2 * 65536, 200 * 1024 + 1] {
            let data = sample(n);
            let file = dir.path().join(format!("{n}.age"));
            std::fs::write(&file, encrypt(&[&r], &data)).unwrap();
            let out = std::process::Command::new("age")
                .arg("-d")
                .arg("-i")
                .arg(&key)
                .arg(&file)
                .output()
                .expect("Debian's age is needed (scripts/test.sh installs it)");
            assert!(
                out.status.success(),
                "{n} bytes: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.stdout == data, "{n} bytes: age -d gave other bytes");
        }
    }

    /// A recipient that puts the file key in its stanza as it is, so a test can learn
    /// the key the age crate picked; an identity that takes it back.
    struct Bare;
    impl age::Recipient for Bare {
        fn wrap_file_key(
            &self,
            k: &FileKey,
        ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
            let stanza = Stanza {
                tag: "mailark-test".into(),
                args: vec![],
                body: k.expose_secret().to_vec(),
            };
            Ok((vec![stanza], HashSet::new()))
        }
    }
    impl age::Identity for Bare {
        fn unwrap_stanza(&self, s: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
            (s.tag == "mailark-test").then(|| {
                let mut k = [0u8; 16];
                k.copy_from_slice(&s.body);
                Ok(FileKey::new(Box::new(k)))
            })
        }
    }

    #[test]
    fn the_payload_is_byte_for_byte_what_the_age_crate_writes_for_the_same_key_and_nonce() {
        for n in [0, 65536, 200 * 1024 + 3] {
            let data = sample(n);
            let mut theirs = Vec::new();
            let enc = age::Encryptor::with_recipients(std::iter::once(&Bare as _)).unwrap();
            let mut w = enc.wrap_output(&mut theirs).unwrap();
            w.write_all(&data).unwrap();
            w.finish().unwrap();

            // Their header names the file key and ends before the 16-byte nonce.
            let head_end = theirs.windows(4).position(|w| w == b"\n---").unwrap() + 1;
            let head_end =
                head_end + theirs[head_end..].iter().position(|&b| b == b'\n').unwrap() + 1;
            let stanza_line = theirs.split(|&b| b == b'\n').nth(2).unwrap();
            let key: [u8; 16] = BASE64_STANDARD_NO_PAD.decode(stanza_line).unwrap()[..]
                .try_into()
                .unwrap();
            let nonce: [u8; 16] = theirs[head_end..head_end + 16].try_into().unwrap();

            let file_key = FileKey::new(Box::new(key));
            let stanzas = age::Recipient::wrap_file_key(&Bare, &file_key).unwrap().0;
            let mut ours = AgeWriter::with_keys(&file_key, &stanzas, nonce, Vec::new()).unwrap();
            ours.write_all(&data).unwrap();
            let ours = ours.finish().unwrap();
            let our_head = ours.len() - payload_len(n) - 16;
            assert!(
                ours[our_head..] == theirs[head_end..],
                "{n} bytes: the nonce and payload differ from the age crate's"
            );
            // Our header (without their grease stanza) is one the age crate accepts.
            assert_eq!(decrypt(&ours, &Bare).unwrap(), data);
        }
    }

    #[test]
    fn recipients_whose_labels_differ_are_refused() {
        struct Alone;
        impl age::Recipient for Alone {
            fn wrap_file_key(
                &self,
                k: &FileKey,
            ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
                Ok((
                    age::Recipient::wrap_file_key(&Bare, k)?.0,
                    HashSet::from(["alone".to_string()]),
                ))
            }
        }
        let (_, r) = x25519();
        let e = AgeWriter::new([&r as &dyn age::Recipient, &Alone].into_iter(), Vec::new())
            .err()
            .unwrap();
        assert!(
            matches!(e, AgeWriteError::IncompatibleRecipients(..)),
            "{e}"
        );
        let e = AgeWriter::new(std::iter::empty(), Vec::new())
            .err()
            .unwrap();
        assert!(matches!(e, AgeWriteError::NoRecipients), "{e}");
    }

    /// Throughput against the age crate's StreamWriter, 256 MiB in memory to a sink, in
    /// 1 MiB writes as `Output` gives them; CPU time of this thread as well as wall time,
    /// since a shared machine's wall time says more about the neighbours:
    /// `cargo test --profile bench --lib age_writer::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput_against_the_age_crate() {
        fn cpu() -> f64 {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime only writes the timespec it is given.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
        }
        fn time(f: impl FnOnce()) -> (f64, f64) {
            let (w, c) = (std::time::Instant::now(), cpu());
            f();
            (w.elapsed().as_secs_f64(), cpu() - c)
        }
        let data = sample(256 << 20);
        let (_, r) = x25519();
        let mib = data.len() as f64 / (1 << 20) as f64;
        for round in 0..5 {
            let (ours_wall, ours) = time(|| {
                let mut w = AgeWriter::new(std::iter::once(&r as _), io::sink()).unwrap();
                data.chunks(1 << 20).for_each(|b| w.write_all(b).unwrap());
                w.finish().unwrap();
            });
            let (theirs_wall, theirs) = time(|| {
                let enc = age::Encryptor::with_recipients(std::iter::once(&r as _)).unwrap();
                let mut w = enc.wrap_output(io::sink()).unwrap();
                data.chunks(1 << 20).for_each(|b| w.write_all(b).unwrap());
                w.finish().unwrap();
            });
            println!(
                "round {round}: CPU ours {ours:.3} s ({:.0} MiB/s), age crate {theirs:.3} s ({:.0} MiB/s), {:.1}x; wall {ours_wall:.3} s vs {theirs_wall:.3} s",
                mib / ours,
                mib / theirs,
                theirs / ours
            );
        }
    }
}
