//! The trailer (spec §3): a zstd skippable frame at the very end of the file that points
//! at the index frame, so `ls` reads ~72 bytes plus the index instead of the whole
//! archive. zstd and `tar --zstd` skip it; it is ours alone.

use super::index::FORMAT_VERSION;

/// zstd skippable-frame magic (0x184D2A50..=0x184D2A5F are reserved for this use).
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
pub const PAYLOAD_MAGIC: &[u8; 8] = b"MAILARK\0";
pub const PAYLOAD_LEN: usize = 64;
pub const FOOTER_LEN: usize = 8 + PAYLOAD_LEN;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub version: u32,
    /// Byte offset of the index frame from the start of the file.
    pub index_offset: u64,
    /// Length in bytes of the (compressed) index frame.
    pub index_length: u64,
    /// SHA-256 of the compressed index frame bytes.
    pub index_frame_sha256: [u8; 32],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FooterError {
    #[error("file is too short to be a mailark archive")]
    TooShort,
    #[error("no mailark trailer at the end of the file (not a mailark archive, or truncated)")]
    Missing,
    #[error("trailer points outside the file (truncated or damaged)")]
    OutOfRange,
    #[error("the trailer says format version {0}; this mailark reads version {FORMAT_VERSION}")]
    Version(u32),
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..4].copy_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&(PAYLOAD_LEN as u32).to_le_bytes());
        b[8..16].copy_from_slice(PAYLOAD_MAGIC);
        b[16..20].copy_from_slice(&self.version.to_le_bytes());
        // 20..24 reserved (flags), zero.
        b[24..32].copy_from_slice(&self.index_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.index_length.to_le_bytes());
        b[40..72].copy_from_slice(&self.index_frame_sha256);
        b
    }

    /// Decodes the last `FOOTER_LEN` bytes of a file of `file_len` bytes.
    pub fn decode(b: &[u8], file_len: u64) -> Result<Footer, FooterError> {
        if b.len() < FOOTER_LEN || file_len < FOOTER_LEN as u64 {
            return Err(FooterError::TooShort);
        }
        let b = &b[b.len() - FOOTER_LEN..];
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        if u32_at(0) != SKIPPABLE_MAGIC
            || u32_at(4) as usize != PAYLOAD_LEN
            || &b[8..16] != PAYLOAD_MAGIC
        {
            return Err(FooterError::Missing);
        }
        let f = Footer {
            version: u32_at(16),
            index_offset: u64_at(24),
            index_length: u64_at(32),
            index_frame_sha256: b[40..72].try_into().unwrap(),
        };
        // Another version may put the index elsewhere or hash it differently.
        if f.version != FORMAT_VERSION {
            return Err(FooterError::Version(f.version));
        }
        let end = f
            .index_offset
            .checked_add(f.index_length)
            .ok_or(FooterError::OutOfRange)?;
        if end + FOOTER_LEN as u64 != file_len {
            return Err(FooterError::OutOfRange);
        }
        Ok(f)
    }

    /// Whether `digest`, the SHA-256 of the index frame read in pieces, is the one the
    /// trailer names.
    pub fn frame_digest_matches(&self, digest: &[u8]) -> bool {
        digest == self.index_frame_sha256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_range_checks() {
        let f = Footer {
            version: 1,
            index_offset: 100,
            index_length: 50,
            index_frame_sha256: [7; 32],
        };
        let b = f.encode();
        assert_eq!(Footer::decode(&b, 222).unwrap(), f);
        assert_eq!(Footer::decode(&b, 221), Err(FooterError::OutOfRange));
        let mut bad = b;
        bad[9] ^= 1;
        assert_eq!(Footer::decode(&bad, 222), Err(FooterError::Missing));
        let v2 = Footer { version: 2, ..f }.encode();
        assert_eq!(Footer::decode(&v2, 222), Err(FooterError::Version(2)));
    }
}
