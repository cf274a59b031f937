//! Scratch files: unnamed temporary files for bytes on their way — index lines, SHA256SUMS
//! lines, a folder's mbox text, messages too large to hold in memory. They hold mail, and
//! mail that is sealed on disk (an encrypted export) or read from a sealed archive must
//! not land on disk in the clear. So every scratch file is enciphered with ChaCha20 under
//! a key made for it and kept only in this process's memory: blocks recovered from the
//! disk after the process ends are noise. One rule for every scratch file, whether or not
//! the archive is sealed, so no caller has to decide.
//!
//! The keystream is addressed by position, so a scratch file reads and writes at any
//! offset like a plain file: `Read + Write + Seek` through one cursor, and `read_at` for
//! readers that share it. There is no authentication: the threat is disclosure at rest,
//! and only this process writes and reads the file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;

/// Bytes enciphered per write call (a stack of this much is the only copy made).
const CHUNK: usize = 64 << 10;

pub struct Scratch {
    file: File,
    key: [u8; 32],
    /// The cursor `Read`, `Write` and `Seek` share.
    pos: u64,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Scratch").field("pos", &self.pos).finish()
    }
}

impl Scratch {
    /// A scratch file in the system's temporary directory.
    pub(crate) fn new() -> io::Result<Scratch> {
        Scratch::with_file(tempfile::tempfile()?)
    }

    /// A scratch file in `dir` (beside an output, where its space is).
    pub(crate) fn new_in(dir: &Path) -> io::Result<Scratch> {
        Scratch::with_file(tempfile::tempfile_in(dir)?)
    }

    fn with_file(file: File) -> io::Result<Scratch> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(io::Error::other)?;
        Ok(Scratch { file, key, pos: 0 })
    }

    /// XORs the keystream for offset `at` into `data`. A fresh key per file, so one
    /// fixed nonce is safe.
    fn apply(&self, data: &mut [u8], at: u64) -> io::Result<()> {
        let mut c = ChaCha20::new(&self.key.into(), &[0u8; 12].into());
        c.try_seek(at)
            .map_err(|_| io::Error::other("scratch file past the cipher's 256 GiB"))?;
        c.try_apply_keystream(data)
            .map_err(|_| io::Error::other("scratch file past the cipher's 256 GiB"))
    }

    /// Reads at `offset` without moving the cursor.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = self.file.read_at(buf, offset)?;
        self.apply(&mut buf[..n], offset)?;
        Ok(n)
    }

    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)?;
        self.apply(buf, offset)
    }

    /// A reader from the start that does not move the cursor (several may share one file).
    pub(crate) fn reader_at(&self, offset: u64) -> ScratchReader<'_> {
        ScratchReader {
            scratch: self,
            pos: offset,
        }
    }
}

impl Write for Scratch {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK);
        let mut chunk = buf[..n].to_vec();
        self.apply(&mut chunk, self.pos)?;
        self.file.write_all_at(&chunk, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Scratch {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Scratch {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(n) => {
                self.pos = n;
                return Ok(n);
            }
            SeekFrom::Current(d) => (self.pos, d),
            SeekFrom::End(d) => (self.file.metadata()?.len(), d),
        };
        self.pos = base
            .0
            .checked_add_signed(base.1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

/// Reads a shared scratch file by position, whoever else holds it.
pub struct ScratchReader<'a> {
    scratch: &'a Scratch,
    pos: u64,
}

impl Read for ScratchReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.scratch.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(s: &Scratch) -> Vec<u8> {
        let mut v = Vec::new();
        let mut f = s.file.try_clone().unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn reads_back_what_was_written_and_the_disk_holds_none_of_it() {
        let text: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("Subject: message {i}\r\n").into_bytes())
            .collect();
        let mut s = Scratch::new().unwrap();
        // Writes of odd sizes, across the cipher's 64-byte blocks and the chunk size.
        for piece in text.chunks(CHUNK + 13) {
            s.write_all(piece).unwrap();
        }
        assert_eq!(s.stream_position().unwrap(), text.len() as u64);
        let disk = on_disk(&s);
        assert_eq!(disk.len(), text.len());
        assert!(memchr::memmem::find(&disk, b"Subject: message").is_none());

        s.rewind().unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back, text);

        for at in [0u64, 1, 63, 64, 65, 4095, 65_537, text.len() as u64 - 7] {
            let mut b = vec![0u8; 7];
            s.read_exact_at(&mut b, at).unwrap();
            assert_eq!(b, text[at as usize..at as usize + 7], "at {at}");
            let mut r = Vec::new();
            s.reader_at(at).read_to_end(&mut r).unwrap();
            assert_eq!(r, text[at as usize..], "reader at {at}");
        }
    }

    #[test]
    fn two_files_of_the_same_bytes_look_different_on_disk() {
        let mut a = Scratch::new().unwrap();
        let mut b = Scratch::new().unwrap();
        a.write_all(&[0u8; 4096]).unwrap();
        b.write_all(&[0u8; 4096]).unwrap();
        assert_ne!(on_disk(&a), on_disk(&b));
    }

    #[test]
    fn seeks_and_overwrites_like_a_file() {
        let mut s = Scratch::new().unwrap();
        s.write_all(b"hello world").unwrap();
        s.seek(SeekFrom::Start(6)).unwrap();
        s.write_all(b"there").unwrap();
        assert_eq!(s.seek(SeekFrom::End(0)).unwrap(), 11);
        s.seek(SeekFrom::Current(-11)).unwrap();
        let mut v = String::new();
        s.read_to_string(&mut v).unwrap();
        assert_eq!(v, "hello there");
        assert!(s.seek(SeekFrom::Current(-12)).is_err());
    }

    /// The rule holds only if no module makes an unnamed temporary file of its own.
    #[test]
    fn every_unnamed_temporary_file_is_a_scratch_file() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        for e in walkdir::WalkDir::new(&src) {
            let e = e.unwrap();
            if e.path().extension().is_none_or(|x| x != "rs") || e.path().ends_with("scratch.rs") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.contains("tempfile::tempfile(") || line.contains("tempfile::tempfile_in(") {
                    offenders.push(format!("{}:{}", e.path().display(), i + 1));
                }
            }
        }
        assert!(offenders.is_empty(), "use scratch::Scratch: {offenders:?}");
    }
}
