//! The index (`index.jsonl`, spec §5): one JSON object per line — an `archive` header,
//! `folder` records, `message` records, and an `end` record whose `index_sha256` covers
//! every byte before it, so a damaged or truncated index is detected even by a reader
//! that only has `tar` and `sha256sum` (`head -n -1 index.jsonl | sha256sum`).

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::messages::{Messages, MessagesBuilder};

pub const FORMAT_NAME: &str = "mailark-archive";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    #[default]
    Maildir,
    Mbox,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Archive(ArchiveHeader),
    Folder(FolderRecord),
    Message(MessageRecord),
    End(EndRecord),
    /// A record type a later revision of v1 added (spec §9): readers skip it.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveHeader {
    pub format: String,
    pub version: u32,
    pub mailark_version: String,
    /// 32 hex digits, random; what a delta archive's `parent` names.
    pub archive_id: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// Where the mail came from: a URL without any secret, or `maildir:PATH` / `mbox:PATH`.
    pub source: String,
    pub layout: Layout,
    pub parent: Option<ParentRef>,
    /// The source's personal namespace (IMAP NAMESPACE), so an import can take folder
    /// names out of it (spec §5.1). Absent for local and POP3 sources and in archives
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Namespace>,
}

/// A personal namespace as the source server named it: `{"prefix":"INBOX.","delimiter":"."}`
/// on Courier, `{"prefix":"","delimiter":"/"}` on a default Dovecot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub prefix: String,
    pub delimiter: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub archive_id: String,
    pub index_sha256: String,
    /// The parent's file name when it was read, for people; not used to match.
    pub file_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderRecord {
    /// The folder name decoded to UTF-8, levels joined by `delimiter`.
    pub name: String,
    /// The name as the source had it (modified UTF-7 on IMAP; a path for local sources).
    pub raw_name: String,
    /// The raw name's exact bytes (hex) when they are not UTF-8; `raw_name` and `name`
    /// then show them decoded (spec §5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_name_hex: Option<String>,
    pub delimiter: Option<String>,
    /// Member directory of this folder (`maildir/…` or the mbox member `mbox/…`).
    pub dir: String,
    pub special_use: Option<String>,
    pub subscribed: bool,
    pub selectable: bool,
    /// Messages the source said the folder held when it was read.
    pub source_count: Option<u64>,
    pub uidvalidity: Option<u32>,
    pub uidnext: Option<u32>,
    pub highestmodseq: Option<u64>,
    /// Keyword table of this folder: keyword `i` is Maildir letter `a + i` (for i < 26).
    pub keywords: Vec<String>,
    /// Message records of this folder in this archive.
    pub messages: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceRef {
    Imap { uidvalidity: u32, uid: u32 },
    Pop3 { uidl: Option<String>, msgno: u32 },
    Local { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MboxLoc {
    /// Offset in the folder's mbox member of the first byte after the `From ` line.
    pub offset: u64,
    /// Bytes of the quoted message from `offset`, not counting an added final LF.
    pub length: u64,
    /// The writer added an LF because the message did not end with one.
    pub eol_added: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub folder: String,
    /// Member path: the message file (Maildir layout) or the folder's mbox file.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub flags: Vec<String>,
    pub internaldate: Option<String>,
    pub message_id: Option<String>,
    pub date: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub source: SourceRef,
    /// The size the source announced (RFC822.SIZE, POP3 LIST), when it did.
    pub source_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbox: Option<MboxLoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRecord {
    pub folders: u64,
    pub messages: u64,
    pub message_bytes: u64,
    /// SHA-256 (hex) of every byte of `index.jsonl` before this line.
    pub index_sha256: String,
}

/// Writes index lines, hashing as it goes, so the end record can seal them.
pub struct IndexWriter<W: Write> {
    out: W,
    hash: Sha256,
    line: Vec<u8>,
}

impl MessageRecord {
    /// The INTERNALDATE as a date. A value that is not RFC 3339 is an error, not a
    /// missing date: read leniently, an import would date the message "now".
    pub fn parsed_internaldate(
        &self,
    ) -> Result<Option<chrono::DateTime<chrono::FixedOffset>>, String> {
        match self.internaldate.as_deref() {
            None => Ok(None),
            Some(d) => chrono::DateTime::parse_from_rfc3339(d)
                .map(Some)
                .map_err(|e| format!("INTERNALDATE {d:?} is not an RFC 3339 date: {e}")),
        }
    }

    /// INTERNALDATE in seconds, when the record has one that parses (what identity keys
    /// and verification compare).
    pub fn internaldate_secs(&self) -> Option<i64> {
        self.parsed_internaldate()
            .ok()
            .flatten()
            .map(|d| d.timestamp())
    }
}

impl<W: Write> IndexWriter<W> {
    pub fn new(out: W) -> Self {
        IndexWriter {
            out,
            hash: Sha256::new(),
            line: Vec::with_capacity(1024),
        }
    }

    pub fn write(&mut self, rec: &Record) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        serde_json::to_writer(&mut line, rec)?;
        line.push(b'\n');
        let r = self.write_raw(&line);
        self.line = line;
        r
    }

    /// Copies already-serialised lines (the writer spools message records to disk).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)
    }

    /// Writes the end record and returns the sink and the index checksum.
    pub fn finish(
        mut self,
        folders: u64,
        messages: u64,
        message_bytes: u64,
    ) -> io::Result<(W, String)> {
        let sum = hex::encode(self.hash.clone().finalize());
        let end = Record::End(EndRecord {
            folders,
            messages,
            message_bytes,
            index_sha256: sum.clone(),
        });
        let mut line = serde_json::to_vec(&end)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        Ok((self.out, sum))
    }
}

/// A parsed and checked index.
#[derive(Debug, Clone)]
pub struct Index {
    pub header: ArchiveHeader,
    pub folders: Vec<FolderRecord>,
    /// Kept as index lines (on disk when many): see [`Messages`].
    pub messages: Messages,
    pub end: EndRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index line {line}: {detail}")]
    Syntax { line: usize, detail: String },
    #[error("index does not start with an archive record")]
    NoHeader,
    #[error("index is not {FORMAT_NAME} (format {0:?})")]
    WrongFormat(String),
    #[error("index is format version {0}; this mailark reads version {FORMAT_VERSION}")]
    UnsupportedVersion(u64),
    #[error("index has no end record (truncated?)")]
    NoEnd,
    #[error(
        "index checksum mismatch: end record says {expected}, lines hash to {actual} (damaged)"
    )]
    Checksum { expected: String, actual: String },
    #[error("index end record counts {what} {expected}, the index holds {actual}")]
    Count {
        what: &'static str,
        expected: u64,
        actual: u64,
    },
    #[error("index: {0}")]
    Io(#[from] io::Error),
}

impl Index {
    /// Parses and checks an index: the header's format and version, the end record's
    /// checksum and counts.
    pub fn parse<R: BufRead>(mut r: R) -> Result<Index, IndexError> {
        let mut hash = Sha256::new();
        let mut header = None;
        let mut folders = Vec::new();
        let mut messages = MessagesBuilder::new();
        let mut bytes = 0u64;
        let mut end = None;
        let mut buf = Vec::new();
        let mut lineno = 0;
        loop {
            buf.clear();
            if r.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            lineno += 1;
            if end.is_some() {
                return Err(IndexError::Syntax {
                    line: lineno,
                    detail: "data after the end record".into(),
                });
            }
            let syntax = |e: serde_json::Error| IndexError::Syntax {
                line: lineno,
                detail: e.to_string(),
            };
            if lineno == 1 {
                // Format and version first: a later version may change what the other
                // keys hold, and its reader deserves "unsupported version", not a
                // syntax error.
                let v: serde_json::Value = serde_json::from_slice(&buf).map_err(syntax)?;
                if v["type"] != "archive" {
                    return Err(IndexError::NoHeader);
                }
                let format = v["format"].as_str().unwrap_or_default();
                if format != FORMAT_NAME {
                    return Err(IndexError::WrongFormat(format.to_string()));
                }
                match v["version"].as_u64() {
                    Some(n) if n == u64::from(FORMAT_VERSION) => {}
                    n => return Err(IndexError::UnsupportedVersion(n.unwrap_or(0))),
                }
            }
            let rec: Record = serde_json::from_slice(&buf).map_err(syntax)?;
            match rec {
                Record::Archive(h) if lineno == 1 => header = Some(h),
                _ if lineno == 1 => return Err(IndexError::NoHeader),
                Record::Archive(_) => {
                    return Err(IndexError::Syntax {
                        line: lineno,
                        detail: "second archive record".into(),
                    })
                }
                Record::Folder(f) => folders.push(f),
                Record::Message(m) => {
                    bytes = bytes.saturating_add(m.size);
                    messages.push_line(&buf)?;
                }
                Record::Unknown => {}
                Record::End(e) => {
                    end = Some(e);
                    continue;
                }
            }
            hash.update(&buf);
        }
        let header = header.ok_or(IndexError::NoHeader)?;
        let end = end.ok_or(IndexError::NoEnd)?;
        let actual = hex::encode(hash.finalize());
        if actual != end.index_sha256 {
            return Err(IndexError::Checksum {
                expected: end.index_sha256,
                actual,
            });
        }
        let messages = messages.finish()?;
        for (what, expected, actual) in [
            ("folders", end.folders, folders.len() as u64),
            ("messages", end.messages, messages.len() as u64),
            ("message bytes", end.message_bytes, bytes),
        ] {
            if expected != actual {
                return Err(IndexError::Count {
                    what,
                    expected,
                    actual,
                });
            }
        }
        Ok(Index {
            header,
            folders,
            messages,
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD_HEADER: &str = r#"{"type":"archive","format":"mailark-archive","version":1,"mailark_version":"0.1.0","archive_id":"5f0c8e1ad2b64cc0a1d7a2f1e3b4c5d6","created":"2026-11-24T09:00:00Z","source":"imaps://a@h:993","layout":"maildir","parent":null}"#;

    /// Archives written before the namespace record read as having none; the record
    /// round-trips; keys a reader does not know are ignored (spec §5), which is what
    /// lets an older mailark read archives that carry the record.
    #[test]
    fn namespace_record_is_optional() {
        let Record::Archive(h) = serde_json::from_str(OLD_HEADER).unwrap() else {
            panic!("not an archive record");
        };
        assert_eq!(h.namespace, None);
        let mut with = h.clone();
        with.namespace = Some(Namespace {
            prefix: "INBOX.".into(),
            delimiter: Some(".".into()),
        });
        let line = serde_json::to_string(&Record::Archive(with.clone())).unwrap();
        assert!(
            line.contains(r#""namespace":{"prefix":"INBOX.","delimiter":"."}"#),
            "{line}"
        );
        assert_eq!(
            serde_json::from_str::<Record>(&line).unwrap(),
            Record::Archive(with)
        );
        let none = serde_json::to_string(&Record::Archive(h)).unwrap();
        assert!(!none.contains("namespace"), "{none}");
        let future = OLD_HEADER.replace(r#""parent":null"#, r#""parent":null,"later":{"x":1}"#);
        assert!(serde_json::from_str::<Record>(&future).is_ok());
    }

    /// Seals `lines` with an end record as a writer would.
    fn sealed(lines: &[&str], folders: u64) -> Vec<u8> {
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        let sum = hex::encode(Sha256::digest(text.as_bytes()));
        text.push_str(&format!(
            "{{\"type\":\"end\",\"folders\":{folders},\"messages\":0,\"message_bytes\":0,\"index_sha256\":\"{sum}\"}}\n"
        ));
        text.into_bytes()
    }

    const HEADER: &str = r#"{"type":"archive","format":"mailark-archive","version":1,"mailark_version":"9","archive_id":"x","created":"","source":"","layout":"maildir","parent":null}"#;
    const FOLDER: &str = r#"{"type":"folder","name":"INBOX","raw_name":"INBOX","delimiter":"/","dir":"maildir/INBOX","special_use":null,"subscribed":true,"selectable":true,"source_count":0,"uidvalidity":null,"uidnext":null,"highestmodseq":null,"keywords":[],"messages":0}"#;

    #[test]
    fn unknown_keys_and_record_types_are_skipped() {
        let header = HEADER.replace("\"parent\":null", "\"parent\":null,\"future\":{\"a\":1}");
        let folder = FOLDER.replace("\"messages\":0", "\"messages\":0,\"colour\":\"red\"");
        let future = r#"{"type":"namespace","prefix":"INBOX.","delimiter":"."}"#;
        let idx = Index::parse(&sealed(&[&header, future, &folder], 1)[..]).unwrap();
        assert_eq!(idx.folders.len(), 1);
        // Skipped records still count in the checksum: dropping one is damage.
        let mut short = sealed(&[&header, future, &folder], 1);
        let text = String::from_utf8(short.clone()).unwrap();
        short = text.replace(&format!("{future}\n"), "").into_bytes();
        assert!(matches!(
            Index::parse(&short[..]),
            Err(IndexError::Checksum { .. })
        ));
    }

    #[test]
    fn another_version_is_refused_before_its_keys_are_read() {
        let v2 =
            r#"{"type":"archive","format":"mailark-archive","version":2,"layout":{"new":true}}"#;
        assert!(matches!(
            Index::parse(&sealed(&[v2], 0)[..]),
            Err(IndexError::UnsupportedVersion(2))
        ));
        let other = HEADER.replace("mailark-archive", "other");
        assert!(matches!(
            Index::parse(&sealed(&[&other], 0)[..]),
            Err(IndexError::WrongFormat(_))
        ));
        assert!(matches!(
            Index::parse(&sealed(&[FOLDER], 1)[..]),
            Err(IndexError::NoHeader)
        ));
    }
}
