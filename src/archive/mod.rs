//! The mailark archive (format v1, `formats/archive-v1.md`): one `.tar.zst` file holding
//! every message byte-exact, an index of every message with its SHA-256, and a trailer
//! that lets `ls` find the index without decompressing the mail. This module knows
//! files and bytes only — never the network.

pub mod chain;
pub mod footer;
pub mod index;
pub mod names;
pub mod reader;
pub mod tarfmt;
pub mod writer;

pub use chain::{Chain, ChainError, Completeness};
pub use index::{
    ArchiveHeader, EndRecord, FolderRecord, Layout, MboxLoc, MessageRecord, Namespace, ParentRef,
    Record, SourceRef,
};
pub use reader::{Archive, ReadError};
pub use writer::{ArchiveWriter, FolderInfo, MessageInfo, WriteError, WriteSummary, WriterOptions};

use sha2::{Digest, Sha256};

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
