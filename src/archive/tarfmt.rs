//! Writing tar members by hand (POSIX ustar, with a PAX `path` record for long or
//! non-ASCII names). The `tar` crate's Builder always ends the stream with the two zero
//! blocks, but a mailark archive must continue the tar stream in a second zstd frame,
//! so members are framed here and the end blocks are written once, at the very end.

use std::io::{self, Write};

pub const BLOCK: usize = 512;

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // A PAX record is "LEN KEY=VALUE\n" where LEN counts its own digits.
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn header(
    path: &[u8],
    size: u64,
    mtime: u64,
    kind: tar::EntryType,
    mode: u32,
) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    // Only the first 100 bytes fit; the PAX record before it carries the full name.
    let cut = path.len().min(99);
    h.as_ustar_mut().unwrap().name[..cut].copy_from_slice(&path[..cut]);
    h.set_cksum();
    Ok(h)
}

fn padding(len: u64) -> usize {
    (BLOCK - (len % BLOCK as u64) as usize) % BLOCK
}

/// Writes a member's header(s); the caller writes `size` data bytes and then
/// [`write_padding`].
pub fn write_header<W: Write>(
    w: &mut W,
    path: &str,
    size: u64,
    mtime: u64,
    kind: tar::EntryType,
) -> io::Result<()> {
    let p = path.as_bytes();
    if p.len() > 99 || !path.is_ascii() {
        let rec = pax_record("path", p);
        let ph = header(
            b"PaxHeaders/x",
            rec.len() as u64,
            mtime,
            tar::EntryType::XHeader,
            0o644,
        )?;
        w.write_all(ph.as_bytes())?;
        w.write_all(&rec)?;
        w.write_all(&[0u8; BLOCK][..padding(rec.len() as u64)])?;
    }
    let mode = if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    };
    let h = header(p, size, mtime, kind, mode)?;
    w.write_all(h.as_bytes())
}

pub fn write_padding<W: Write>(w: &mut W, size: u64) -> io::Result<()> {
    w.write_all(&[0u8; BLOCK][..padding(size)])
}

pub fn write_file<W: Write>(w: &mut W, path: &str, data: &[u8], mtime: u64) -> io::Result<()> {
    write_header(w, path, data.len() as u64, mtime, tar::EntryType::Regular)?;
    w.write_all(data)?;
    write_padding(w, data.len() as u64)
}

pub fn write_dir<W: Write>(w: &mut W, path: &str, mtime: u64) -> io::Result<()> {
    let p = if path.ends_with('/') {
        path.to_string()
    } else {
        format!("{path}/")
    };
    write_header(w, &p, 0, mtime, tar::EntryType::Directory)
}

/// The end-of-archive marker: two zero blocks.
pub fn write_end<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_crate_reads_our_members() {
        let long = format!("maildir/{}/cur/1.x:2,S", "日本語".repeat(20));
        let mut buf = Vec::new();
        write_dir(&mut buf, "maildir/INBOX/cur", 5).unwrap();
        write_file(&mut buf, &long, b"hello", 1_700_000_000).unwrap();
        write_file(&mut buf, "short", b"", 0).unwrap();
        write_end(&mut buf).unwrap();
        let mut ar = tar::Archive::new(&buf[..]);
        let names: Vec<(String, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("maildir/INBOX/cur/".to_string(), 5),
                (long, 1_700_000_000),
                ("short".to_string(), 0)
            ]
        );
        assert_eq!(pax_record("path", b"abc").len(), 12);
        assert_eq!(&pax_record("path", b"abc")[..3], b"12 ");
    }
}
