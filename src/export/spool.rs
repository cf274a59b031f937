//! A message's bytes on their way into the archive: in memory, or — when too large to
//! hold — in an unnamed temporary file the session wrote as they arrived, read as the
//! archive writer streams them in. Memory then does not follow a message's size.

use std::io;
use std::sync::Arc;

use crate::archive::{copy_hashed, ArchiveWriter, CopyError, MessageInfo, WriteError};
use crate::mail::headers::MAX_HEADER;
use crate::scratch::Scratch;

/// Messages larger than this are spooled to a temporary file rather than held.
pub(crate) const HOLD_MAX: u64 = 16 << 20;

pub(crate) enum Body {
    Mem(Vec<u8>),
    Spooled(Arc<Scratch>, u64),
}

impl Body {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Body::Mem(b) => b.len() as u64,
            Body::Spooled(_, len) => *len,
        }
    }

    /// Bytes held in memory (what the writer's queue budget counts).
    pub(crate) fn held(&self) -> u64 {
        match self {
            Body::Mem(b) => b.len() as u64,
            Body::Spooled(..) => 0,
        }
    }

    pub(crate) fn sha256_hex(&self) -> io::Result<String> {
        match self {
            Body::Mem(b) => Ok(crate::archive::sha256_hex(b)),
            Body::Spooled(f, _) => {
                let (_, sha) =
                    copy_hashed(&mut f.reader_at(0), &mut io::sink()).map_err(|e| match e {
                        CopyError::Read(e) | CopyError::Write(e) => e,
                    })?;
                Ok(hex::encode(sha))
            }
        }
    }

    /// The first bytes: the header section is within them.
    pub(crate) fn head(&self) -> io::Result<Vec<u8>> {
        let n = self.len().min(MAX_HEADER as u64) as usize;
        match self {
            Body::Mem(b) => Ok(b[..n].to_vec()),
            Body::Spooled(f, _) => {
                let mut head = vec![0u8; n];
                f.read_exact_at(&mut head, 0)?;
                Ok(head)
            }
        }
    }

    /// Adds the message to the archive, reading a spooled one as it is written.
    pub(crate) fn add_to(
        &self,
        w: &mut ArchiveWriter,
        info: MessageInfo,
    ) -> Result<(), WriteError> {
        match self {
            Body::Mem(b) => w.add_message(info, b).map(|_| ()),
            Body::Spooled(f, len) => {
                let head = self.head().map_err(|source| WriteError::Io {
                    path: "(spooled message)".into(),
                    source,
                })?;
                w.add_message_from(info, &head, &mut f.reader_at(0), *len)
                    .map(|_| ())
            }
        }
    }
}
