//! Encrypted archives (spec §10): an archive may be wrapped whole in a standard age
//! file. This module is the one place that decides whether a file is age-encrypted and
//! gives a plaintext `Read + Seek` over it, so every reader (trailer, index frame,
//! full stream) sees the same plaintext offsets it sees in a plain archive. age's
//! payload is in 64 KiB chunks, each authenticated, so seeking to the trailer and the
//! index frame decrypts only the chunks they live in (`ls` stays fast) and any changed
//! byte fails the chunk that holds it.
//!
//! The writing side is here too ([`Output`]): the archive's bytes go through our age
//! writer (`age_writer.rs`), and the bytes that reach the disk through a hashing tap
//! (the signature's hash, `sign::HASH`), so a signature (`sign.rs`) covers the file
//! exactly as written without reading it back.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256, Sha512};

mod age_writer;
use age_writer::AgeWriter;

/// What every age file begins with (the age v1 header's version line).
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// What an ASCII-armored age file begins with.
const AGE_ARMOR: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is encrypted with age: give the key with --identity FILE")]
    NeedsIdentity { path: PathBuf },
    #[error("{path} is encrypted with age to other recipients: none of the keys given ({tried}) opens it")]
    WrongIdentity { path: PathBuf, tried: String },
    #[error("{path}: the age header does not authenticate (its MAC does not match): the file was altered")]
    HeaderTampered { path: PathBuf },
    #[error("{path}: not a readable age file ({detail})")]
    Header { path: PathBuf, detail: String },
    #[error("{path} is ASCII-armored age; decrypt it with `age -d` first (an armored file cannot be read in place)")]
    Armored { path: PathBuf },
    #[error("identity file {path}: {detail}")]
    Identity { path: PathBuf, detail: String },
    #[error("recipient {what}: {detail}")]
    Recipient { what: String, detail: String },
}

/// What a file is, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A zstd stream: a plain archive (or something else compressed).
    Zstd,
    /// An age file (binary).
    Age,
    /// ASCII-armored age.
    Armored,
    Other,
}

/// Sniffs `path`'s first bytes.
pub fn kind(path: &Path) -> io::Result<Kind> {
    let mut head = [0u8; 34];
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    Ok(if head.starts_with(&ZSTD_MAGIC) {
        Kind::Zstd
    } else if head.starts_with(AGE_MAGIC) {
        Kind::Age
    } else if head.starts_with(AGE_ARMOR) {
        Kind::Armored
    } else {
        Kind::Other
    })
}

type BoxedIdentity = Box<dyn age::Identity + Send + Sync>;

/// The keys that may open encrypted archives (`--identity`, repeatable): age identity
/// files (`AGE-SECRET-KEY-1...` lines) and unencrypted OpenSSH private keys. Cheap to
/// clone; an opened [`super::Archive`] keeps them so it can open its file again.
#[derive(Clone, Default)]
pub struct Identities {
    files: Arc<Vec<(PathBuf, Vec<BoxedIdentity>)>>,
}

impl fmt::Debug for Identities {
    // Never the key material: only where the keys came from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.files.iter().map(|(p, _)| p))
            .finish()
    }
}

impl Identities {
    pub fn none() -> Identities {
        Identities::default()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Reads each identity file; a file that holds no usable key is an error naming it.
    pub fn load(paths: &[PathBuf]) -> Result<Identities, SealError> {
        let mut files = Vec::new();
        for p in paths {
            files.push((p.clone(), load_identity_file(p)?));
        }
        Ok(Identities {
            files: Arc::new(files),
        })
    }

    fn names(&self) -> String {
        self.files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn all(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.files
            .iter()
            .flat_map(|(_, ids)| ids.iter().map(|b| b.as_ref() as &dyn age::Identity))
    }
}

fn load_identity_file(path: &Path) -> Result<Vec<BoxedIdentity>, SealError> {
    let bad = |detail: String| SealError::Identity {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let name = Some(path.display().to_string());
    if text.starts_with(b"-----BEGIN") {
        let id =
            age::ssh::Identity::from_buffer(&text[..], name).map_err(|e| bad(e.to_string()))?;
        return match id {
            age::ssh::Identity::Unencrypted(_) => {
                Ok(vec![Box::new(id.with_callbacks(age::NoCallbacks))])
            }
            age::ssh::Identity::Encrypted(_) => Err(bad(
                "the SSH key is passphrase-protected; mailark cannot ask for the passphrase \
                 (use an unprotected copy on a safe disk, or an age identity)"
                    .into(),
            )),
            age::ssh::Identity::Unsupported(_) => Err(bad(
                "this kind of SSH key cannot decrypt age files (use ssh-ed25519 or ssh-rsa)".into(),
            )),
        };
    }
    let ids = age::IdentityFile::from_buffer(&text[..])
        .map_err(|e| bad(e.to_string()))?
        .into_identities()
        .map_err(|e| bad(e.to_string()))?;
    if ids.is_empty() {
        return Err(bad("holds no age identity (AGE-SECRET-KEY-1...)".into()));
    }
    Ok(ids)
}

/// The recipients an archive is encrypted to (`--encrypt-to`, `--encrypt-to-file`).
#[derive(Clone, Default)]
pub struct Recipients {
    list: Arc<Vec<Box<dyn age::Recipient + Send + Sync>>>,
    shown: Vec<String>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.shown).finish()
    }
}

impl Recipients {
    /// Parses recipients given on the command line and recipients files (one a line,
    /// `#` comments and blank lines skipped, as `age -R`).
    pub fn parse(given: &[String], files: &[PathBuf]) -> Result<Recipients, SealError> {
        let mut lines: Vec<(String, String)> = given
            .iter()
            .map(|r| (format!("{r:?}"), r.trim().to_string()))
            .collect();
        for f in files {
            let text = std::fs::read_to_string(f).map_err(|e| SealError::Recipient {
                what: format!("file {}", f.display()),
                detail: e.to_string(),
            })?;
            for (i, l) in text.lines().enumerate() {
                let l = l.trim();
                if !l.is_empty() && !l.starts_with('#') {
                    lines.push((format!("{}, line {}", f.display(), i + 1), l.to_string()));
                }
            }
        }
        let mut list: Vec<Box<dyn age::Recipient + Send + Sync>> = Vec::new();
        let mut shown = Vec::new();
        for (what, line) in lines {
            list.push(
                parse_recipient(&line).map_err(|detail| SealError::Recipient {
                    what: what.clone(),
                    detail,
                })?,
            );
            shown.push(line);
        }
        Ok(Recipients {
            list: Arc::new(list),
            shown,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

fn parse_recipient(line: &str) -> Result<Box<dyn age::Recipient + Send + Sync>, String> {
    if line.starts_with("age1") {
        return line
            .parse::<age::x25519::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| format!("not an age X25519 recipient: {e}"));
    }
    if line.starts_with("ssh-") {
        return line
            .parse::<age::ssh::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| format!("not a usable SSH public key: {e:?}"));
    }
    Err("expected an age recipient (age1...) or an SSH public key line (ssh-ed25519 ..., ssh-rsa ...)".into())
}

/// Read + Seek for the plaintext of an archive file, whatever wraps it.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// An archive file opened for reading.
pub struct Plain {
    pub reader: Box<dyn ReadSeek>,
    /// Length of the plaintext (the archive's own bytes); not known for a tapped age
    /// file, since finding it reads the file's end out of order.
    pub len: Option<u64>,
    pub encrypted: bool,
    /// Why the end of an age file could not be read (so its length is unknown).
    pub end_damage: Option<io::Error>,
}

/// Opens `path` for reading its archive bytes: the file itself, or the plaintext of an
/// age file decrypted with `ids`. With `tap`, every byte read from the file is hashed
/// (verify checks a signature in the same pass as the archive).
pub fn open(path: &Path, ids: &Identities, tap: Option<&FileHash>) -> Result<Plain, SealError> {
    let io_err = |source| SealError::Io {
        path: path.to_path_buf(),
        source,
    };
    let kind = kind(path).map_err(io_err)?;
    let file = File::open(path).map_err(io_err)?;
    let file = Tapped {
        inner: file,
        tap: tap.cloned(),
    };
    match kind {
        Kind::Armored => Err(SealError::Armored {
            path: path.to_path_buf(),
        }),
        Kind::Age => {
            if ids.is_empty() {
                return Err(SealError::NeedsIdentity {
                    path: path.to_path_buf(),
                });
            }
            let mut reader = decrypting(path, ids, file)?;
            if tap.is_some() {
                return Ok(Plain {
                    reader: Box::new(reader),
                    len: None,
                    encrypted: true,
                    end_damage: None,
                });
            }
            // Finding the length decrypts (and so authenticates) the last chunk. When
            // that fails the chunks before it may still be read (a scan recovers them),
            // from a fresh reader: age's is left mid-seek.
            let (reader, len, end_damage) = match reader.seek(SeekFrom::End(0)) {
                Ok(len) => {
                    reader.rewind().map_err(io_err)?;
                    (reader, Some(len), None)
                }
                Err(e) => {
                    let file = Tapped {
                        inner: File::open(path).map_err(io_err)?,
                        tap: None,
                    };
                    (decrypting(path, ids, file)?, None, Some(e))
                }
            };
            Ok(Plain {
                reader: Box::new(reader),
                len,
                encrypted: true,
                end_damage,
            })
        }
        Kind::Zstd | Kind::Other => {
            let len = Some(file.inner.metadata().map_err(io_err)?.len());
            Ok(Plain {
                reader: Box::new(file),
                len,
                end_damage: None,
                encrypted: false,
            })
        }
    }
}

fn decrypting(
    path: &Path,
    ids: &Identities,
    file: Tapped,
) -> Result<Authenticated<Tapped>, SealError> {
    let dec = age::Decryptor::new(file).map_err(|e| decrypt_error(path, ids, e))?;
    let stream = dec
        .decrypt(ids.all())
        .map_err(|e| decrypt_error(path, ids, e))?;
    Ok(Authenticated(stream))
}

fn decrypt_error(path: &Path, ids: &Identities, e: age::DecryptError) -> SealError {
    let path = path.to_path_buf();
    match e {
        age::DecryptError::NoMatchingKeys => SealError::WrongIdentity {
            path,
            tried: ids.names(),
        },
        age::DecryptError::InvalidMac => SealError::HeaderTampered { path },
        age::DecryptError::Io(source) => SealError::Io { path, source },
        other => SealError::Header {
            path,
            detail: other.to_string(),
        },
    }
}

/// Names age's chunk failures for what they are: a chunk whose tag does not match was
/// changed (or damaged) after it was written.
struct Authenticated<R>(age::stream::StreamReader<R>);

fn name_failure(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::InvalidData => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("age authentication failed: the encrypted file was altered or damaged ({e})"),
        ),
        io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the encrypted file is truncated ({e})"),
        ),
        _ => e,
    }
}

impl<R: Read + Seek> Read for Authenticated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(name_failure)
    }
}

impl<R: Read + Seek> Seek for Authenticated<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos).map_err(name_failure)
    }
}

/// The hash of a signature: SSHSIG allows sha256 and sha512.
pub use ssh_key::HashAlg;

/// A running SHA-256 or SHA-512.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(alg: HashAlg) -> Hasher {
        match alg {
            HashAlg::Sha256 => Hasher::Sha256(Sha256::new()),
            _ => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// The hash of a file's bytes, fed by a reader as it reads them in order. Shared, so
/// an opened archive's reader can feed it while its owner keeps a handle.
#[derive(Clone)]
pub struct FileHash(Arc<Mutex<HashState>>);

struct HashState {
    hash: Option<Hasher>,
    /// Bytes hashed, all from the start of the file; None once a read was out of order.
    pos: Option<u64>,
}

impl fmt::Debug for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileHash")
    }
}

impl FileHash {
    pub fn new(alg: HashAlg) -> FileHash {
        FileHash(Arc::new(Mutex::new(HashState {
            hash: Some(Hasher::new(alg)),
            pos: Some(0),
        })))
    }

    /// Hashes what the reader did not reach (the trailer, the end of an age file) and
    /// returns the digest of the whole file. None when the reads were not one pass
    /// from the start.
    pub fn finish(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let mut st = self.0.lock().unwrap();
        let (Some(pos), Some(mut hash)) = (st.pos, st.hash.take()) else {
            return Ok(None);
        };
        st.pos = None;
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(pos))?;
        let mut rest = BufReader::new(f);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = rest.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        Ok(Some(hash.finish()))
    }
}

/// The file under every reader; feeds a [`FileHash`] when one is attached.
struct Tapped {
    inner: File,
    tap: Option<FileHash>,
}

impl Read for Tapped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(t) = &self.tap {
            let mut st = t.0.lock().unwrap();
            if let (Some(p), Some(h)) = (st.pos, st.hash.as_mut()) {
                h.update(&buf[..n]);
                st.pos = Some(p + n as u64);
            }
        }
        Ok(n)
    }
}

impl Seek for Tapped {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let to = self.inner.seek(pos)?;
        if let Some(t) = &self.tap {
            let mut st = t.0.lock().unwrap();
            // A jump breaks the one-pass hash; a no-op seek (stream_position) does not.
            if st.pos.is_some_and(|p| p != to) {
                st.pos = None;
            }
        }
        Ok(to)
    }
}

/// Where the writer's bytes go: the file, optionally through age, with the bytes that
/// reach the file optionally hashed (for a signature over the file as written). When
/// it encrypts or hashes, that work runs on a thread of its own behind a bounded queue
/// of buffers, so it overlaps with compression instead of adding to it.
pub struct Output {
    inner: OutputInner,
}

enum OutputInner {
    Plain(io::BufWriter<File>),
    Sealed {
        buf: Vec<u8>,
        tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
        /// Buffers the sealing thread is done with, to be filled again: a fresh 1 MiB
        /// buffer a time would cost the kernel a page fault every 4 KiB.
        spent: std::sync::mpsc::Receiver<Vec<u8>>,
        worker: Option<Sealer>,
    },
}

/// The sealing thread: it ends with the file and the hash of what it wrote.
type Sealer = std::thread::JoinHandle<io::Result<(File, Option<Vec<u8>>)>>;

/// Bytes handed to the sealing thread at a time, and buffers that may wait for it.
const SEAL_BUF: usize = 1 << 20;
const SEAL_QUEUE: usize = 4;

/// Hashes the bytes it passes on to the file, exactly as written. It writes straight
/// to the file: what reaches it comes in 1 MiB buffers, sealed or not, already.
struct HashingWriter {
    inner: File,
    hash: Option<Hasher>,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = self.hash.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Layer {
    Hashed(HashingWriter),
    Age(AgeWriter<HashingWriter>),
}

impl Layer {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Layer::Hashed(w) => w.write_all(b),
            Layer::Age(w) => w.write_all(b),
        }
    }

    fn finish(self) -> io::Result<(File, Option<Vec<u8>>)> {
        let w = match self {
            Layer::Hashed(w) => w,
            Layer::Age(s) => s.finish()?,
        };
        Ok((w.inner, w.hash.map(Hasher::finish)))
    }
}

impl Output {
    /// Starts writing `file`: encrypted to `to` when given, the written bytes hashed
    /// with `hash` when given.
    pub fn new(file: File, to: Option<&Recipients>, hash: Option<HashAlg>) -> io::Result<Output> {
        if to.is_none() && hash.is_none() {
            return Ok(Output {
                inner: OutputInner::Plain(io::BufWriter::with_capacity(1 << 20, file)),
            });
        }
        let w = HashingWriter {
            inner: file,
            hash: hash.map(Hasher::new),
        };
        let mut layer = match to {
            None => Layer::Hashed(w),
            Some(r) => {
                let recipients = r.list.iter().map(|b| b.as_ref() as &dyn age::Recipient);
                Layer::Age(AgeWriter::new(recipients, w)?)
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(SEAL_QUEUE);
        let (spent_tx, spent) = std::sync::mpsc::sync_channel::<Vec<u8>>(SEAL_QUEUE + 2);
        let worker = std::thread::Builder::new()
            .name("mailark-seal".into())
            .spawn(move || {
                for mut b in rx {
                    layer.write_all(&b)?;
                    b.clear();
                    // The writer may have enough already; then the buffer is freed.
                    let _ = spent_tx.try_send(b);
                }
                layer.finish()
            })?;
        Ok(Output {
            inner: OutputInner::Sealed {
                buf: Vec::with_capacity(SEAL_BUF),
                tx: Some(tx),
                spent,
                worker: Some(worker),
            },
        })
    }

    /// Ends the age stream (its last chunk), flushes, and gives back the file and the
    /// hash of every byte written to it.
    pub fn finish(self) -> io::Result<(File, Option<Vec<u8>>)> {
        match self.inner {
            OutputInner::Plain(f) => Ok((f.into_inner().map_err(|e| e.into_error())?, None)),
            OutputInner::Sealed {
                buf, tx, worker, ..
            } => {
                let sent = tx.as_ref().map(|t| t.send(buf));
                drop(tx);
                let joined = worker
                    .ok_or_else(|| io::Error::other("the sealing thread stopped"))?
                    .join()
                    .map_err(|_| io::Error::other("the sealing thread panicked"))?;
                // The thread's own error says more than a closed queue does.
                let out = joined?;
                if let Some(Err(_)) = sent {
                    return Err(io::Error::other("the sealing thread stopped early"));
                }
                Ok(out)
            }
        }
    }

    /// Hands a full buffer to the sealing thread and takes an empty one back (one it
    /// is done with, else a new one); if the thread stopped, its error.
    fn send(
        buf: &mut Vec<u8>,
        tx: &Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
        spent: &std::sync::mpsc::Receiver<Vec<u8>>,
        worker: &mut Option<Sealer>,
    ) -> io::Result<()> {
        let next = spent
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(SEAL_BUF));
        let full = std::mem::replace(buf, next);
        if tx.as_ref().is_some_and(|t| t.send(full).is_ok()) {
            return Ok(());
        }
        match worker.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => Err(e),
            _ => Err(io::Error::other("the sealing thread stopped")),
        }
    }
}

impl Write for Output {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            OutputInner::Plain(w) => w.write(b),
            OutputInner::Sealed {
                buf,
                tx,
                spent,
                worker,
            } => {
                let n = b.len().min(SEAL_BUF - buf.len());
                buf.extend_from_slice(&b[..n]);
                if buf.len() == SEAL_BUF {
                    Output::send(buf, tx, spent, worker)?;
                }
                Ok(n)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            OutputInner::Plain(w) => w.flush(),
            // Durability comes from finish's fsync; a flush need not wait for the thread.
            OutputInner::Sealed { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn key_file(dir: &Path) -> (PathBuf, String) {
        let id = age::x25519::Identity::generate();
        let p = dir.join("key.txt");
        std::fs::write(&p, format!("{}\n", id.to_string().expose_secret())).unwrap();
        (p, id.to_public().to_string())
    }

    fn write(path: &Path, to: Option<&Recipients>, data: &[u8]) -> Vec<u8> {
        let mut out = Output::new(File::create(path).unwrap(), to, Some(HashAlg::Sha512)).unwrap();
        out.write_all(data).unwrap();
        let (_, h) = out.finish().unwrap();
        h.unwrap()
    }

    #[test]
    fn seeks_in_plaintext_offsets_and_hashes_the_file_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = key_file(dir.path());
        let to = Recipients::parse(&[public], &[]).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("a.age");
        let digest = write(&path, Some(&to), &data);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(digest.as_slice(), Sha512::digest(&on_disk).as_slice());
        assert!(on_disk.starts_with(AGE_MAGIC));

        let ids = Identities::load(&[key]).unwrap();
        let mut p = open(&path, &ids, None).unwrap();
        assert!(p.encrypted);
        assert_eq!(p.len, Some(data.len() as u64));
        p.reader.seek(SeekFrom::Start(200_000)).unwrap();
        let mut b = [0u8; 100];
        p.reader.read_exact(&mut b).unwrap();
        assert_eq!(&b[..], &data[200_000..200_100]);
        p.reader.seek(SeekFrom::End(-72)).unwrap();
        let mut tail = Vec::new();
        p.reader.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, &data[data.len() - 72..]);
    }

    #[test]
    fn a_flipped_byte_is_an_authentication_failure_and_a_stranger_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = key_file(dir.path());
        let to = Recipients::parse(&[public], &[]).unwrap();
        let data = vec![7u8; 200_000];
        let path = dir.path().join("a.age");
        write(&path, Some(&to), &data);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100_000] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let ids = Identities::load(&[key]).unwrap();
        let mut p = open(&path, &ids, None).unwrap();
        let err = io::copy(&mut p.reader, &mut io::sink()).unwrap_err();
        assert!(
            err.to_string().contains("age authentication failed"),
            "{err}"
        );

        let other = tempfile::tempdir().unwrap();
        let (stranger, _) = key_file(other.path());
        let e = open(&path, &Identities::load(&[stranger]).unwrap(), None)
            .err()
            .unwrap();
        assert!(matches!(e, SealError::WrongIdentity { .. }), "{e}");
        let e = open(&path, &Identities::none(), None).err().unwrap();
        assert!(matches!(e, SealError::NeedsIdentity { .. }), "{e}");
    }

    #[test]
    fn a_damaged_last_chunk_leaves_the_earlier_chunks_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = key_file(dir.path());
        let to = Recipients::parse(&[public], &[]).unwrap();
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
        let path = dir.path().join("a.age");
        write(&path, Some(&to), &data);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let mut p = open(&path, &Identities::load(&[key]).unwrap(), None).unwrap();
        assert_eq!(p.len, None);
        assert!(p.end_damage.unwrap().to_string().contains("authentication"));
        let mut first = vec![0u8; 100_000];
        p.reader.read_exact(&mut first).unwrap();
        assert_eq!(first, &data[..100_000]);
    }

    #[test]
    fn the_read_tap_hashes_a_one_pass_read_plus_what_it_did_not_reach() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let tap = FileHash::new(HashAlg::Sha256);
        let mut p = open(&path, &Identities::none(), Some(&tap)).unwrap();
        let mut half = vec![0u8; 60_000];
        p.reader.read_exact(&mut half).unwrap();
        drop(p);
        let h = tap.finish(&path).unwrap().unwrap();
        assert_eq!(h.as_slice(), Sha256::digest(&data).as_slice());
    }

    /// An SSH key pair made by OpenSSH's own ssh-keygen: (private key file, public line).
    fn ssh_key(dir: &Path, kind: &str, passphrase: &str) -> (PathBuf, String) {
        let p = dir.join(format!("id_{kind}"));
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", passphrase, "-C", "", "-f"])
            .arg(&p)
            .status()
            .expect("ssh-keygen (openssh-client) is needed");
        assert!(ok.success());
        let public = std::fs::read_to_string(p.with_extension("pub")).unwrap();
        (p, public.trim().to_string())
    }

    #[test]
    fn ssh_rsa_and_ed25519_keys_from_ssh_keygen_round_trip_and_a_protected_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 241) as u8).collect();
        for kind in ["rsa", "ed25519"] {
            let (key, public) = ssh_key(dir.path(), kind, "");
            assert!(public.starts_with(&format!("ssh-{kind} ")), "{public}");
            let to = Recipients::parse(&[public], &[]).unwrap();
            let path = dir.path().join(format!("{kind}.age"));
            write(&path, Some(&to), &data);
            let mut p = open(&path, &Identities::load(&[key]).unwrap(), None).unwrap();
            let mut back = Vec::new();
            p.reader.read_to_end(&mut back).unwrap();
            assert!(back == data, "{kind}: the plaintext differs");
        }
        let (ecdsa, _) = ssh_key(dir.path(), "ecdsa", "");
        let e = Identities::load(&[ecdsa]).unwrap_err().to_string();
        assert!(e.contains("cannot decrypt age files"), "{e}");
        let sub = dir.path().join("p");
        std::fs::create_dir(&sub).unwrap();
        let (protected, _) = ssh_key(&sub, "ed25519", "a passphrase");
        let e = Identities::load(std::slice::from_ref(&protected))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("passphrase-protected") && e.contains(protected.to_str().unwrap()),
            "{e}"
        );
    }

    #[test]
    fn recipients_are_age_or_ssh_and_a_bad_one_is_named() {
        let e = Recipients::parse(&["bogus".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("\"bogus\""), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("recips");
        std::fs::write(&f, "# team\n\nage1nope\n").unwrap();
        let e = Recipients::parse(&[], &[f]).unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
    }
}
