//! `mbox:PATH` — one mbox file or a tree of them (Thunderbird: `Inbox`, `Sent`,
//! `Folder.sbd/Sub`). Reads mboxrd (default), mboxo, and mboxcl/mboxcl2 framing by
//! `Content-Length` when the header is consistent with the file. The envelope `From `
//! line, the blank separator line, Thunderbird's leading `X-Mozilla-*` bookkeeping
//! headers and a framing `Content-Length` line are not part of the message; flags are
//! read from `X-Mozilla-Status`/`-Keys` and `Status`/`X-Status`. Streams one message at a
//! time, so a 4 GB mbox costs the memory of its largest message.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{FixedOffset, NaiveDateTime, TimeZone};

use super::local::{guess_special_use, io_err, LocalError, LocalSource};
use crate::archive::names::{distinct_names, SourceName};
use crate::archive::{FolderInfo, MessageInfo, SourceRef, WriteError};
use std::os::unix::ffi::OsStrExt;

use crate::mail::mboxrd;

/// How `>From ` lines were quoted by the program that wrote the mbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quoting {
    /// mboxrd: `>*From ` lines carry one extra `>`.
    #[default]
    Rd,
    /// mboxo (and mboxcl): only `From ` lines were quoted, to `>From `.
    O,
    /// mboxcl2: no quoting at all (messages are framed by Content-Length).
    None,
}

impl std::str::FromStr for Quoting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mboxrd" | "rd" => Ok(Quoting::Rd),
            "mboxo" | "o" | "mboxcl" => Ok(Quoting::O),
            "mboxcl2" | "none" => Ok(Quoting::None),
            _ => Err(format!(
                "unknown mbox quoting {s:?} (mboxrd, mboxo, mboxcl, mboxcl2)"
            )),
        }
    }
}

struct MboxFile {
    name: String,
    path: PathBuf,
    rel: String,
    /// The folder's name as the source has it: `rel` without Thunderbird's `.sbd`
    /// suffixes, levels joined by `/`.
    raw: Vec<u8>,
}

pub struct MboxSource {
    root: PathBuf,
    files: Vec<MboxFile>,
    quoting: Quoting,
}

/// Names mail clients give their sidecar files, which sit beside mbox files.
fn is_sidecar(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".msf")
        || lower.ends_with(".dat")
        || lower.ends_with(".json")
        || lower.ends_with(".sqlite")
        || lower.ends_with(".html")
        || lower.starts_with('.')
}

fn starts_like_mbox(path: &Path) -> std::io::Result<bool> {
    let mut b = [0u8; 5];
    let mut f = File::open(path)?;
    let n = f.read(&mut b)?;
    Ok(n == 0 || &b[..n] == b"From ")
}

fn folder_name_for_file(stem: &[u8]) -> String {
    if [&b"inbox"[..], b"mbox"].contains(&stem.to_ascii_lowercase().as_slice()) {
        "INBOX".to_string()
    } else {
        crate::text::display_bytes(stem)
    }
}

/// A folder's levels from a file's path below the root: Thunderbird keeps the children
/// of folder X in directory X.sbd; a lone file `Inbox` or `mbox` is INBOX.
fn source_name(rel: &Path) -> SourceName {
    let raw: Vec<Vec<u8>> = rel
        .iter()
        .map(|c| {
            let c = c.as_bytes();
            c.strip_suffix(b".sbd").unwrap_or(c).to_vec()
        })
        .collect();
    let decoded = if raw.len() == 1 {
        vec![folder_name_for_file(&raw[0])]
    } else {
        raw.iter().map(|l| crate::text::display_bytes(l)).collect()
    };
    SourceName {
        raw,
        decoded,
        delimiter: Some('/'),
    }
}

impl MboxSource {
    pub fn open(path: &Path, quoting: Quoting) -> Result<MboxSource, LocalError> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        let mut files = Vec::new();
        if meta.is_file() {
            if !starts_like_mbox(path).map_err(io_err(path))? {
                return Err(LocalError::NotMbox {
                    path: path.display().to_string(),
                });
            }
            let stem = path.file_stem().unwrap_or_default().as_bytes();
            let rel = Path::new(path.file_name().unwrap_or_default());
            files.push(MboxFile {
                name: folder_name_for_file(stem),
                path: path.to_path_buf(),
                rel: rel.to_string_lossy().into_owned(),
                raw: rel.as_os_str().as_bytes().to_vec(),
            });
        } else {
            let mut names = Vec::new();
            for e in walkdir::WalkDir::new(path).sort_by_file_name() {
                let e = e.map_err(|e| LocalError::Io {
                    path: path.display().to_string(),
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("walk failed")),
                })?;
                let fname = e.file_name().to_string_lossy();
                if !e.file_type().is_file() || is_sidecar(&fname) {
                    continue;
                }
                if !starts_like_mbox(e.path()).map_err(io_err(e.path()))? {
                    continue;
                }
                let rel = e.path().strip_prefix(path).unwrap();
                let name = source_name(rel);
                files.push(MboxFile {
                    name: String::new(),
                    path: e.path().to_path_buf(),
                    rel: rel.to_string_lossy().into_owned(),
                    raw: name.raw.join(&b'/'),
                });
                names.push(name);
            }
            if files.is_empty() {
                return Err(LocalError::NoMbox {
                    path: path.display().to_string(),
                });
            }
            // Files whose names meet (`Inbox` and `mbox`, Latin-1 and UTF-8 spellings)
            // stay folders of their own.
            for (f, name) in files.iter_mut().zip(distinct_names(&names)) {
                f.name = name;
            }
        }
        Ok(MboxSource {
            root: path.to_path_buf(),
            files,
            quoting,
        })
    }
}

impl LocalSource for MboxSource {
    fn describe(&self) -> String {
        let abs = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("mbox:{}", abs.display())
    }

    fn folders(&self) -> Vec<FolderInfo> {
        self.files
            .iter()
            .map(|f| FolderInfo {
                special_use: guess_special_use(&f.name, Some('/')),
                raw_name: String::from_utf8_lossy(&f.raw).into_owned(),
                raw_bytes: std::str::from_utf8(&f.raw).is_err().then(|| f.raw.clone()),
                ..FolderInfo::simple(&f.name, Some('/'))
            })
            .collect()
    }

    fn folder_bytes(&self, folder: &str) -> u64 {
        let f = self.files.iter().find(|f| f.name == folder);
        f.and_then(|f| fs::metadata(&f.path).ok())
            .map_or(0, |m| m.len())
    }

    fn messages(
        &self,
        folder: &str,
        each: &mut super::local::MessageSink<'_>,
    ) -> Result<(), WriteError> {
        let Some(f) = self.files.iter().find(|f| f.name == folder) else {
            return Ok(());
        };
        let file = match File::open(&f.path) {
            Ok(file) => file,
            Err(e) => return each(Err(io_err(&f.path)(e))),
        };
        let mut rd = MboxReader::new(BufReader::with_capacity(1 << 20, file), self.quoting);
        loop {
            match rd.next_message() {
                Ok(Some(m)) => {
                    let info = MessageInfo {
                        folder: folder.to_string(),
                        flags: m.flags,
                        internaldate: m.envelope_date,
                        source: SourceRef::Local {
                            path: format!("{}@{}", f.rel, m.offset),
                        },
                        source_size: None,
                    };
                    each(Ok((info, m.bytes)))?;
                }
                Ok(None) => return Ok(()),
                Err(e) => return each(Err(io_err(&f.path)(e))),
            }
        }
    }
}

/// One message read out of an mbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxMessage {
    /// Offset of the envelope line in the file.
    pub offset: u64,
    pub envelope_date: Option<chrono::DateTime<FixedOffset>>,
    pub flags: Vec<String>,
    pub bytes: Vec<u8>,
}

/// A streaming mbox reader over any seekable buffered input.
pub struct MboxReader<R> {
    r: R,
    quoting: Quoting,
    /// The next envelope line, already read.
    pending_from: Option<(u64, Vec<u8>)>,
    started: bool,
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\n" || line == b"\r\n"
}

impl<R: BufRead + Seek> MboxReader<R> {
    pub fn new(r: R, quoting: Quoting) -> Self {
        MboxReader {
            r,
            quoting,
            pending_from: None,
            started: false,
        }
    }

    fn read_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        buf.clear();
        self.r.read_until(b'\n', buf)
    }

    pub fn next_message(&mut self) -> std::io::Result<Option<MboxMessage>> {
        let mut line = Vec::new();
        if !self.started {
            self.started = true;
            let pos = self.r.stream_position()?;
            if self.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            if !line.starts_with(b"From ") {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "does not start with a \"From \" line",
                ));
            }
            self.pending_from = Some((pos, line.clone()));
        }
        let Some((offset, from_line)) = self.pending_from.take() else {
            return Ok(None);
        };
        let envelope_date = parse_envelope_date(&from_line);

        // Header section, line by line, so Content-Length framing can be tried.
        let mut head: Vec<u8> = Vec::new();
        let mut sep: Vec<u8> = Vec::new();
        loop {
            let pos = self.r.stream_position()?;
            if self.read_line(&mut line)? == 0 {
                break;
            }
            if is_blank(&line) {
                sep = line.clone();
                break;
            }
            if line.starts_with(b"From ") && head.is_empty() {
                // An empty message: the next envelope follows at once.
                self.r.seek(SeekFrom::Start(pos))?;
                break;
            }
            head.extend_from_slice(&line);
        }
        let body_start = self.r.stream_position()?;
        let mut body = None;
        if let Some((n, line_start, line_len)) = last_content_length(&head) {
            if let Some(b) = self.try_framed_body(n)? {
                // The framing header is the mbox writer's, not the message's, when it is the
                // last header line (mutt, Solaris mail and the mboxcl writers put it there).
                if line_start + line_len == head.len() {
                    head.truncate(line_start);
                }
                body = Some(b);
            } else {
                self.r.seek(SeekFrom::Start(body_start))?;
            }
        }
        let mut msg = head;
        match body {
            Some(b) => {
                msg.extend_from_slice(&sep);
                msg.extend_from_slice(&b);
            }
            None => msg.extend_from_slice(&self.scan_tail(&sep)?),
        }
        let msg = match self.quoting {
            Quoting::Rd => mboxrd::unquote(&msg),
            Quoting::O => mboxrd::unquote_mboxo(&msg),
            Quoting::None => msg,
        };
        let (flags, msg) = take_client_flags(msg, from_line.starts_with(b"From - "));
        Ok(Some(MboxMessage {
            offset,
            envelope_date,
            flags,
            bytes: msg,
        }))
    }

    /// Reads `n` body bytes and checks that an envelope line or EOF follows after one
    /// blank line; on success the next envelope is pending.
    fn try_framed_body(&mut self, n: u64) -> std::io::Result<Option<Vec<u8>>> {
        let mut body = Vec::with_capacity(n.min(64 << 20) as usize);
        (&mut self.r).take(n).read_to_end(&mut body)?;
        if (body.len() as u64) < n {
            return Ok(None);
        }
        let mut line = Vec::new();
        let after = self.r.stream_position()?;
        let got = self.read_line(&mut line)?;
        if got == 0 {
            return Ok(Some(body));
        }
        if !is_blank(&line) {
            self.r.seek(SeekFrom::Start(after))?;
            return Ok(None);
        }
        let pos = self.r.stream_position()?;
        let got = self.read_line(&mut line)?;
        if got == 0 {
            return Ok(Some(body));
        }
        if line.starts_with(b"From ") {
            self.pending_from = Some((pos, line));
            return Ok(Some(body));
        }
        Ok(None)
    }

    /// Reads lines up to the next envelope line that follows a blank line, or EOF,
    /// starting with the header's blank line (if any) as the first line. The blank line
    /// before the envelope is the writer's separator and is dropped — which is also why a
    /// message with no header/body separator comes back without one.
    fn scan_tail(&mut self, sep: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut tail = sep.to_vec();
        let mut line = Vec::new();
        let mut prev_blank = !sep.is_empty();
        let mut last_line_start = 0usize;
        loop {
            let pos = self.r.stream_position()?;
            if self.read_line(&mut line)? == 0 {
                break;
            }
            if prev_blank && line.starts_with(b"From ") {
                tail.truncate(last_line_start);
                self.pending_from = Some((pos, line.clone()));
                return Ok(tail);
            }
            prev_blank = is_blank(&line);
            last_line_start = tail.len();
            tail.extend_from_slice(&line);
        }
        // At EOF the writer's final blank line is still a separator.
        if prev_blank {
            tail.truncate(last_line_start);
        }
        Ok(tail)
    }
}

/// The last `Content-Length:` header: (value, line start, line length).
fn last_content_length(head: &[u8]) -> Option<(u64, usize, usize)> {
    let mut found = None;
    let mut start = 0;
    for line in head.split_inclusive(|&b| b == b'\n') {
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            let v = String::from_utf8_lossy(&line[15..]);
            if let Ok(n) = v.trim().parse::<u64>() {
                found = Some((n, start, line.len()));
            }
        }
        start += line.len();
    }
    found
}

/// Reads client status headers into IMAP flags. Thunderbird's own bookkeeping lines
/// (`X-Mozilla-Status`, `-Status2`, `-Keys`, in that order, first in the header) are
/// removed — but only under a Thunderbird envelope (`From - `), because a message saved
/// from Thunderbird and mailed on carries such lines as part of its real bytes.
fn take_client_flags(msg: Vec<u8>, thunderbird: bool) -> (Vec<String>, Vec<u8>) {
    let mut flags = Vec::new();
    let mut cut = 0;
    if thunderbird {
        for name in ["x-mozilla-status:", "x-mozilla-status2:", "x-mozilla-keys:"] {
            let Some(end) = msg[cut..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| cut + i + 1)
            else {
                break;
            };
            let line = &msg[cut..end];
            if !line.to_ascii_lowercase().starts_with(name.as_bytes()) {
                break;
            }
            let value = String::from_utf8_lossy(&line[name.len()..]);
            if name == "x-mozilla-status:" {
                if let Ok(bits) = u32::from_str_radix(value.trim(), 16) {
                    for (bit, f) in [
                        (0x1, "\\Seen"),
                        (0x2, "\\Answered"),
                        (0x4, "\\Flagged"),
                        (0x8, "\\Deleted"),
                        (0x1000, "$Forwarded"),
                    ] {
                        if bits & bit != 0 {
                            flags.push(f.to_string());
                        }
                    }
                }
            } else if name == "x-mozilla-keys:" {
                flags.extend(value.split_whitespace().map(str::to_string));
            }
            cut = end;
        }
    }
    let head = crate::mail::headers::header_section(&msg[cut..]);
    for line in head.split(|&b| b == b'\n') {
        let lower = String::from_utf8_lossy(line).to_ascii_lowercase();
        let value = lower
            .split_once(':')
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        if lower.starts_with("status:") && value.contains('r') {
            flags.push("\\Seen".into());
        } else if lower.starts_with("x-status:") {
            for (c, f) in [
                ('a', "\\Answered"),
                ('f', "\\Flagged"),
                ('t', "\\Draft"),
                ('d', "\\Deleted"),
            ] {
                if value.contains(c) {
                    flags.push(f.to_string());
                }
            }
        }
    }
    let flags = crate::mail::flags::normalize(flags);
    if cut > 0 {
        (flags, msg[cut..].to_vec())
    } else {
        (flags, msg)
    }
}

/// `From sender Mon Jan  1 00:00:00 2001` → UTC instant (asctime is local time of the
/// writer; mbox carries no zone, so UTC is the honest reading).
fn parse_envelope_date(line: &[u8]) -> Option<chrono::DateTime<FixedOffset>> {
    let s = String::from_utf8_lossy(line);
    let s = s.trim_end();
    let words: Vec<&str> = s.split_whitespace().collect();
    // Find "Www Mmm d hh:mm:ss yyyy" anywhere after the sender.
    for i in 2..words.len().saturating_sub(3) {
        let cand = words[i..i + 5.min(words.len() - i)].join(" ");
        if let Ok(dt) = NaiveDateTime::parse_from_str(&cand, "%a %b %e %H:%M:%S %Y") {
            return FixedOffset::east_opt(0)
                .unwrap()
                .from_local_datetime(&dt)
                .single();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read_all(data: &[u8], q: Quoting) -> Vec<MboxMessage> {
        let mut r = MboxReader::new(Cursor::new(data.to_vec()), q);
        let mut out = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn mboxrd_basic() {
        let data = b"From a Mon Jan  1 00:00:00 2001\nSubject: x\n\n>From y\nFrom z\n\nFrom b Mon Jan  1 00:01:00 2001\nA: b\n\nbody";
        let m = read_all(data, Quoting::Rd);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].bytes, b"Subject: x\n\nFrom y\nFrom z\n");
        assert_eq!(m[1].bytes, b"A: b\n\nbody");
        assert_eq!(
            m[0].envelope_date.unwrap().to_rfc3339(),
            "2001-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn content_length_framing_and_thunderbird() {
        let data = b"From a Mon Jan  1 00:00:00 2001\nA: b\nContent-Length: 13\n\nx\n\nFrom fake\n\nFrom b Mon Jan  1 00:00:00 2001\nB: c\n\ny\n";
        let m = read_all(data, Quoting::None);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].bytes, b"A: b\n\nx\n\nFrom fake\n");
        let tb = b"From - Mon Jan 01 00:00:00 2001\r\nX-Mozilla-Status: 0003\nX-Mozilla-Status2: 00000000\nX-Mozilla-Keys: $label1   \nSubject: s\r\n\r\nbody\r\n\r\n";
        let m = read_all(tb, Quoting::Rd);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].bytes, b"Subject: s\r\n\r\nbody\r\n");
        assert_eq!(m[0].flags, vec!["\\Seen", "\\Answered", "$label1"]);
    }
}
