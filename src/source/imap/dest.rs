//! Destination-side IMAP for the importer: CREATE (with a special-use role when the
//! server takes one), SUBSCRIBE, pipelined APPEND with flags and INTERNALDATE (LITERAL+
//! non-synchronising literals, `literal8` under BINARY for messages holding NUL), and
//! reading back what a folder holds (identity and bodies). Commands are written straight
//! onto the session's stream so many APPENDs can be in flight; responses are read
//! through the session's own reader, so the two never disagree about the stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::session::{quote, uid_set, Event, FetchWhat, FetchedMessage, ImapError, ImapSession};

/// How long a write or a response may take before the link counts as dead.
const IO_TIMEOUT: Duration = Duration::from_secs(300);

static TAGS: AtomicU64 = AtomicU64::new(1);

/// A tag that cannot meet the session's own (`A0001`…) or login (`m1`…) tags.
fn next_tag() -> String {
    format!("J{}", TAGS.fetch_add(1, Ordering::Relaxed))
}

/// One APPEND to send.
#[derive(Debug, Clone)]
pub struct AppendRequest<'a> {
    pub mailbox_raw: &'a str,
    pub flags: &'a [String],
    /// `dd-Mon-yyyy hh:mm:ss +zzzz`.
    pub internaldate: Option<&'a str>,
    pub bytes: &'a [u8],
    /// Send as `literal8` (RFC 3516): the message holds NUL.
    pub binary: bool,
}

/// How a tagged command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub tag: String,
    pub ok: bool,
    pub status: String,
    pub text: String,
}

impl Completion {
    /// `NO [ALREADYEXISTS]` / "already exists": CREATE of a folder that is there.
    pub fn already_exists(&self) -> bool {
        let t = self.text.to_ascii_lowercase();
        t.contains("alreadyexists") || t.contains("already exists") || t.contains("exists")
    }
}

/// The UIDVALIDITY and the UIDs, in order, of an `[APPENDUID v uid-set]` code at the
/// start of a completion's text (RFC 4315): where the server put the appended messages.
pub fn appenduid(text: &str) -> Option<(u32, Vec<u32>)> {
    let rest = text.strip_prefix("[APPENDUID ")?;
    let (code, _) = rest.split_once(']')?;
    let (v, set) = code.split_once(' ')?;
    let mut uids = Vec::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                // RFC 4315 allows either order; a huge range is not an answer to us.
                let (lo, hi) = (a.min(b), a.max(b));
                if hi - lo > 1 << 20 {
                    return None;
                }
                uids.extend(lo..=hi);
            }
            None => uids.push(part.parse().ok()?),
        }
    }
    Some((v.parse().ok()?, uids))
}

/// One message's part of an APPEND, up to its literal: ` (flags) "date" {N}` and the
/// line end; `{N+}` with LITERAL+, `~{N}` (literal8) for a message holding NUL.
fn message_part(req: &AppendRequest<'_>, literal_plus: bool) -> String {
    let mut part = format!(" ({})", req.flags.join(" "));
    if let Some(d) = req.internaldate {
        part.push_str(&format!(" \"{d}\""));
    }
    let tilde = if req.binary { "~" } else { "" };
    let plus = if literal_plus { "+" } else { "" };
    part.push_str(&format!(" {tilde}{{{}{plus}}}\r\n", req.bytes.len()));
    part
}

/// The destination's capabilities that shape an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestCaps {
    pub literal_plus: bool,
    /// RFC 3502: several messages in one APPEND, saved as one transaction.
    pub multiappend: bool,
    pub binary: bool,
    pub create_special_use: bool,
    pub unselect: bool,
    pub appendlimit: Option<u64>,
}

impl ImapSession {
    async fn write_raw(&mut self, parts: &[&[u8]]) -> Result<(), ImapError> {
        let ep = self.endpoint().to_string();
        let s = self.inner.as_mut();
        // The stream is unbuffered: each write becomes its own TLS record and syscall.
        // An APPEND is a 60-byte head, the message and a CRLF; written apart, the server
        // decrypts three records per message. Up to 1 MiB the parts go as one write.
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let joined = (parts.len() > 1 && total <= 1 << 20).then(|| parts.concat());
        let fut = async {
            match &joined {
                Some(j) => s.write_all(j).await?,
                None => {
                    for p in parts {
                        s.write_all(p).await?;
                    }
                }
            }
            s.flush().await
        };
        match timeout(IO_TIMEOUT, fut).await {
            Err(_) => Err(ImapError::Timeout {
                endpoint: ep,
                secs: IO_TIMEOUT.as_secs(),
            }),
            Ok(r) => r.map_err(|e| ImapError::ConnectionLost {
                endpoint: ep,
                detail: e.to_string(),
            }),
        }
    }

    /// Reads responses until the tagged end of `tag`.
    pub async fn wait_done(&mut self, tag: &str) -> Result<Completion, ImapError> {
        loop {
            if let Event::Done {
                tag: t,
                ok,
                status,
                text,
            } = self.next_event().await?
            {
                if t == tag {
                    return Ok(Completion {
                        tag: t,
                        ok,
                        status,
                        text,
                    });
                }
            }
        }
    }

    /// Runs a simple command (no literal) to its end.
    pub async fn simple_command(&mut self, cmd: &str) -> Result<Completion, ImapError> {
        let tag = next_tag();
        self.write_raw(&[tag.as_bytes(), b" ", cmd.as_bytes(), b"\r\n"])
            .await?;
        self.wait_done(&tag).await
    }

    /// The capabilities an import cares about.
    pub fn dest_caps(&self) -> DestCaps {
        DestCaps {
            literal_plus: self.has_capability("LITERAL+"),
            multiappend: self.has_capability("MULTIAPPEND"),
            binary: self.has_capability("BINARY"),
            create_special_use: self.has_capability("CREATE-SPECIAL-USE"),
            unselect: self.has_capability("UNSELECT"),
            appendlimit: self
                .capability_names()
                .iter()
                .find_map(|c| c.strip_prefix("APPENDLIMIT=")?.parse().ok()),
        }
    }

    /// `CREATE name` (with `(USE (\Role))` when asked and offered). A folder that
    /// already exists is not an error.
    pub async fn create_folder(
        &mut self,
        raw: &str,
        role: Option<&str>,
    ) -> Result<Completion, ImapError> {
        let cmd = match role {
            Some(r) => format!("CREATE {} (USE ({r}))", quote(raw)),
            None => format!("CREATE {}", quote(raw)),
        };
        let c = self.simple_command(&cmd).await?;
        if !c.ok && role.is_some() && !c.already_exists() {
            // A server that refuses the role still gets the folder.
            return self.simple_command(&format!("CREATE {}", quote(raw))).await;
        }
        Ok(c)
    }

    pub async fn subscribe(&mut self, raw: &str) -> Result<Completion, ImapError> {
        self.simple_command(&format!("SUBSCRIBE {}", quote(raw)))
            .await
    }

    /// Leaves the selected folder without expunging anything (never CLOSE: it would
    /// expunge imported `\Deleted` messages).
    pub async fn unselect(&mut self) -> Result<(), ImapError> {
        if self.has_capability("UNSELECT") {
            self.simple_command("UNSELECT").await?;
        }
        Ok(())
    }

    /// Writes one APPEND. With `literal_plus` the literal follows at once and the command
    /// is in flight when this returns (its tag is returned; the answer comes through
    /// [`wait_append`]). Without it, the server's go-ahead is awaited; a refusal then
    /// arrives before the literal and is returned as `Err(completion)`.
    pub async fn send_append(
        &mut self,
        req: &AppendRequest<'_>,
        literal_plus: bool,
    ) -> Result<Result<String, Completion>, ImapError> {
        let tag = next_tag();
        let head = format!(
            "{tag} APPEND {}{}",
            quote(req.mailbox_raw),
            message_part(req, literal_plus)
        );
        if literal_plus {
            self.write_raw(&[head.as_bytes(), req.bytes, b"\r\n"])
                .await?;
            return Ok(Ok(tag));
        }
        self.write_raw(&[head.as_bytes()]).await?;
        loop {
            match self.next_event().await? {
                Event::Done {
                    tag: t,
                    ok,
                    status,
                    text,
                } if t == tag => {
                    return Ok(Err(Completion {
                        tag: t,
                        ok,
                        status,
                        text,
                    }))
                }
                // The continuation request is the only response the parser has no
                // event for while an APPEND waits for its literal.
                Event::Other => break,
                _ => {}
            }
        }
        self.write_raw(&[req.bytes, b"\r\n"]).await?;
        Ok(Ok(tag))
    }

    /// Writes one MULTIAPPEND (RFC 3502) of `reqs` into `mailbox_raw` with
    /// non-synchronising literals (LITERAL+), as one write; the command is in flight
    /// when this returns its tag. The server saves all or none.
    pub async fn send_multiappend(
        &mut self,
        mailbox_raw: &str,
        reqs: &[AppendRequest<'_>],
    ) -> Result<String, ImapError> {
        let tag = next_tag();
        let mut out = Vec::with_capacity(reqs.iter().map(|r| r.bytes.len() + 80).sum());
        out.extend_from_slice(format!("{tag} APPEND {}", quote(mailbox_raw)).as_bytes());
        for r in reqs {
            out.extend_from_slice(message_part(r, true).as_bytes());
            out.extend_from_slice(r.bytes);
        }
        out.extend_from_slice(b"\r\n");
        self.write_raw(&[&out]).await?;
        Ok(tag)
    }

    /// The next APPEND completion (in order: the server answers commands in turn).
    pub async fn wait_append(&mut self) -> Result<Completion, ImapError> {
        loop {
            if let Event::Done {
                tag,
                ok,
                status,
                text,
            } = self.next_event().await?
            {
                return Ok(Completion {
                    tag,
                    ok,
                    status,
                    text,
                });
            }
        }
    }

    /// What a folder holds: UID, size, flags, INTERNALDATE and the Message-ID field of
    /// every message (read-only: `BODY.PEEK`).
    pub async fn identities(&mut self, exists: u32) -> Result<Vec<FetchedMessage>, ImapError> {
        if exists == 0 {
            return Ok(Vec::new());
        }
        self.uid_fetch_all("1:*", FetchWhat::MetaMessageId).await
    }

    /// UID, size, flags and INTERNALDATE of every message of the open folder: what a
    /// server answers from its index, without reading a message.
    pub async fn metadata(&mut self, exists: u32) -> Result<Vec<FetchedMessage>, ImapError> {
        if exists == 0 {
            return Ok(Vec::new());
        }
        self.uid_fetch_all("1:*", FetchWhat::Meta).await
    }

    /// Fetches whole messages of `uids`, handing each (UID, bytes) to `each`; memory
    /// holds one message. Read off the stream by this module's own small reader, because
    /// servers answer a message holding NUL with a `literal8` (`~{N}`) that the session's
    /// parser cannot read (Cyrus does).
    pub async fn fetch_bodies(
        &mut self,
        uids: &[u32],
        each: impl FnMut(u32, &[u8]),
    ) -> Result<(), ImapError> {
        self.fetch_section(uids, "", each).await
    }

    /// Like [`fetch_bodies`](Self::fetch_bodies) for one section of each message
    /// (`HEADER`: the header and the blank line after it; empty: the whole message).
    pub async fn fetch_section(
        &mut self,
        uids: &[u32],
        section: &str,
        mut each: impl FnMut(u32, &[u8]),
    ) -> Result<(), ImapError> {
        let ep = self.endpoint().to_string();
        for chunk in uids.chunks(200) {
            let tag = next_tag();
            let set = uid_set(chunk);
            let cmd = format!("{tag} UID FETCH {set} (UID BODY.PEEK[{section}])\r\n");
            self.write_raw(&[cmd.as_bytes()]).await?;
            let mut rd = RawReader::default();
            loop {
                let (text, lits) = rd.response(self.inner.as_mut(), &ep).await?;
                if let Some(rest) = text.strip_prefix(format!("{tag} ").as_bytes()) {
                    let rest = String::from_utf8_lossy(rest).trim().to_string();
                    if !rest.to_ascii_uppercase().starts_with("OK") {
                        let (status, text) = rest.split_once(' ').unwrap_or((&rest, ""));
                        return Err(ImapError::Command {
                            endpoint: ep,
                            command: format!("UID FETCH {set} BODY.PEEK[{section}]"),
                            status: status.to_string(),
                            text: text.to_string(),
                        });
                    }
                    break;
                }
                if text.starts_with(b"* BYE") {
                    return Err(ImapError::Bye {
                        endpoint: ep,
                        text: String::from_utf8_lossy(&text[5..]).trim().to_string(),
                    });
                }
                let upper = String::from_utf8_lossy(&text).to_ascii_uppercase();
                if !upper.starts_with("* ") || !upper.contains(" FETCH ") {
                    continue;
                }
                let uid = upper
                    .split("UID ")
                    .nth(1)
                    .and_then(|x| x.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|x| x.parse::<u32>().ok());
                if let (Some(uid), Some(body)) = (uid, lits.first()) {
                    each(uid, body);
                }
            }
        }
        Ok(())
    }
}

/// A minimal response reader for [`ImapSession::fetch_bodies`]: lines with their
/// literals (`{N}` and `literal8` `~{N}`) taken out. Used only between two commands, when
/// the session's own reader holds nothing.
#[derive(Default)]
struct RawReader {
    buf: Vec<u8>,
    pos: usize,
}

impl RawReader {
    async fn fill(&mut self, s: &mut super::session::Wire, ep: &str) -> Result<(), ImapError> {
        use tokio::io::AsyncReadExt;
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 65536];
        let n = match timeout(IO_TIMEOUT, s.read(&mut chunk)).await {
            Err(_) => {
                return Err(ImapError::Timeout {
                    endpoint: ep.to_string(),
                    secs: IO_TIMEOUT.as_secs(),
                })
            }
            Ok(Err(e)) => return Err(super::session::lost(ep, e)),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(ImapError::ConnectionLost {
                endpoint: ep.to_string(),
                detail: "the server closed the connection".into(),
            });
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn line(&mut self, s: &mut super::session::Wire, ep: &str) -> Result<Vec<u8>, ImapError> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let l = self.buf[self.pos..self.pos + i + 1].to_vec();
                self.pos += i + 1;
                return Ok(l);
            }
            self.fill(s, ep).await?;
        }
    }

    async fn take(
        &mut self,
        s: &mut super::session::Wire,
        ep: &str,
        n: usize,
    ) -> Result<Vec<u8>, ImapError> {
        while self.buf.len() - self.pos < n {
            self.fill(s, ep).await?;
        }
        let v = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(v)
    }

    /// One response: its text (literals left out) and its literals in order.
    async fn response(
        &mut self,
        s: &mut super::session::Wire,
        ep: &str,
    ) -> Result<(Vec<u8>, Vec<Vec<u8>>), ImapError> {
        let mut text = Vec::new();
        let mut lits = Vec::new();
        loop {
            let l = self.line(s, ep).await?;
            let t = l.strip_suffix(b"\n").unwrap_or(&l);
            let t = t.strip_suffix(b"\r").unwrap_or(t);
            match literal_len(t) {
                Some((n, open)) => {
                    text.extend_from_slice(&t[..open]);
                    lits.push(self.take(s, ep, n).await?);
                }
                None => {
                    text.extend_from_slice(t);
                    return Ok((text, lits));
                }
            }
        }
    }
}

/// The raw reader's pure parsers on one arbitrary line, for the fuzz targets only.
#[doc(hidden)]
pub fn fuzz_line_parsers(line: &[u8]) {
    if let Some((_, start)) = literal_len(line) {
        assert!(start < line.len());
    }
    let _ = appenduid(&String::from_utf8_lossy(line));
}

/// `{N}`, `{N+}` or `~{N}` at the end of a line: (N, where the marker starts).
fn literal_len(line: &[u8]) -> Option<(usize, usize)> {
    let l = line.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let n = std::str::from_utf8(&l[open + 1..]).ok()?;
    let n: usize = n.trim_end_matches('+').parse().ok()?;
    let start = if open > 0 && line[open - 1] == b'~' {
        open - 1
    } else {
        open
    };
    Some((n, start))
}

#[cfg(test)]
mod tests {
    use super::uid_set;

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 9, 11, 12]), "1:3,5,9,11:12");
        assert_eq!(uid_set(&[7]), "7");
        assert_eq!(
            super::literal_len(b"* 1 FETCH (BODY[] ~{12}"),
            Some((12, 18))
        );
        assert_eq!(super::literal_len(b"* 1 FETCH (BODY[] {3+}"), Some((3, 18)));
        assert_eq!(super::literal_len(b"* OK done"), None);
    }

    #[test]
    fn appenduid_codes() {
        use super::appenduid;
        assert_eq!(
            appenduid("[APPENDUID 1700000000 42] Append completed."),
            Some((1_700_000_000, vec![42]))
        );
        assert_eq!(
            appenduid("[APPENDUID 7 3:5,9,12:11] done"),
            Some((7, vec![3, 4, 5, 9, 11, 12]))
        );
        assert_eq!(appenduid("Append completed."), None);
        assert_eq!(appenduid("[APPENDUID 1 x] no"), None);
        assert_eq!(appenduid("[TRYCREATE] no"), None);
    }
}
