//! The mailark archive (format v1, `formats/archive-v1.md`): one `.tar.zst` file holding
//! every message byte-exact, an index of every message with its SHA-256, and a trailer
//! that lets `ls` find the index without decompressing the mail. This module knows
//! files and bytes only — never the network.

pub mod chain;
pub mod footer;
pub mod index;
pub mod messages;
pub mod names;
pub mod padding;
pub mod reader;
pub(crate) mod readings;
pub mod seal;
pub mod sign;
pub mod tarfmt;
pub mod writer;

pub use chain::{Chain, ChainError, Completeness};
pub use index::{
    ArchiveHeader, EndRecord, FolderRecord, Layout, MboxLoc, MessageRecord, Namespace, ParentRef,
    Record, SourceRef,
};
pub use reader::{Archive, MessageBody, ReadError};
pub use writer::{ArchiveWriter, FolderInfo, MessageInfo, WriteError, WriteSummary, WriterOptions};

use sha2::{Digest, Sha256};

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Where copying a message's bytes failed: reading them or writing them out.
#[derive(Debug)]
pub enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies `r` to `w` through a fixed buffer, returning the length and SHA-256 of what
/// went through: a message is checked against its index record as it is written, so
/// memory does not follow its size.
pub fn copy_hashed(
    r: &mut (impl std::io::Read + ?Sized),
    w: &mut (impl std::io::Write + ?Sized),
) -> Result<(u64, [u8; 32]), CopyError> {
    let mut buf = vec![0u8; 256 << 10];
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok((n, h.finalize().into())),
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        h.update(&buf[..k]);
        w.write_all(&buf[..k]).map_err(CopyError::Write)?;
        n += k as u64;
    }
}
