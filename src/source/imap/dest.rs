//! Destination-side IMAP for the importer: CREATE (with a special-use role when the
//! server takes one), SUBSCRIBE, pipelined APPEND with flags and INTERNALDATE (LITERAL+
//! non-synchronising literals, `literal8` under BINARY for messages holding NUL), and
//! reading back what a folder holds (identity and bodies). Commands are written straight
//! onto the session's stream so many APPENDs can be in flight, under the session's own
//! tags; every response is read through the session's one reader.

use std::collections::VecDeque;
use std::time::Duration;

use super::session::{
    quote, uid_set, Event, FetchWhat, FetchedMessage, ImapError, ImapSession, SpooledBody,
};
use super::wire::AppendUid;

/// How long writing one APPEND may take before the link counts as dead.
const IO_TIMEOUT: Duration = Duration::from_secs(300);

/// One APPEND to send.
#[derive(Debug, Clone)]
pub struct AppendRequest<'a> {
    pub mailbox_raw: &'a str,
    pub flags: &'a [String],
    /// `dd-Mon-yyyy hh:mm:ss +zzzz`.
    pub internaldate: Option<&'a str>,
    pub body: Literal<'a>,
    /// Send as `literal8` (RFC 3516): the message holds NUL.
    pub binary: bool,
}

/// The bytes of an APPEND literal: in memory, or the first `len` bytes of a file,
/// read as they are sent so that memory does not follow the message's size.
#[derive(Debug, Clone, Copy)]
pub enum Literal<'a> {
    Bytes(&'a [u8]),
    File(&'a crate::scratch::Scratch, u64),
}

impl Literal<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Literal::Bytes(b) => b.len() as u64,
            Literal::File(_, n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a tagged command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub tag: String,
    pub ok: bool,
    pub status: String,
    pub text: String,
    /// Where an APPEND put its messages, when the server said.
    pub appenduid: Option<AppendUid>,
}

impl Completion {
    /// `NO [ALREADYEXISTS]` / "already exists": CREATE of a folder that is there.
    pub fn already_exists(&self) -> bool {
        let t = self.text.to_ascii_lowercase();
        t.contains("alreadyexists") || t.contains("already exists") || t.contains("exists")
    }
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
    part.push_str(&format!(" {tilde}{{{}{plus}}}\r\n", req.body.len()));
    part
}

/// `CREATE name`, with `(USE (\Role))` for a role (RFC 6154).
pub fn create_command(raw: &str, role: Option<&str>) -> String {
    match role {
        Some(r) => format!("CREATE {} (USE ({r}))", quote(raw)),
        None => format!("CREATE {}", quote(raw)),
    }
}

/// `SUBSCRIBE name`.
pub fn subscribe_command(raw: &str) -> String {
    format!("SUBSCRIBE {}", quote(raw))
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
        self.conn.write(parts, IO_TIMEOUT).await
    }

    /// A spooled message read back into memory, for the comparisons that need its
    /// bytes at once (up to the size they always took; larger is an error, as before
    /// large messages were spooled).
    fn spooled_in_memory(&self, sp: &SpooledBody) -> Result<Vec<u8>, ImapError> {
        const LIMIT: u64 = 512 << 20;
        let err = |detail: String| ImapError::Protocol {
            endpoint: self.endpoint().to_string(),
            detail,
        };
        if sp.len > LIMIT {
            return Err(err(format!(
                "a message of {} bytes is more than the {LIMIT} compared in memory",
                sp.len
            )));
        }
        let mut v = vec![0u8; sp.len as usize];
        sp.file
            .read_exact_at(&mut v, 0)
            .map_err(|e| err(format!("cannot read a spooled message: {e}")))?;
        Ok(v)
    }

    /// Writes a literal's bytes and the CRLF after them.
    async fn write_literal(&mut self, lit: Literal<'_>) -> Result<(), ImapError> {
        let (file, len) = match lit {
            Literal::Bytes(b) => return self.write_raw(&[b, b"\r\n"]).await,
            Literal::File(f, len) => (f, len),
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < len {
            let want = (len - at).min(buf.len() as u64) as usize;
            // The spool is a local file the page cache mostly holds: reading it here
            // blocks no longer than the write that follows.
            // A literal cut short leaves the connection unusable: it is dropped, and
            // the APPEND is settled as one whose answer was lost.
            let cut = |detail: String| ImapError::ConnectionLost {
                endpoint: self.endpoint().to_string(),
                detail: format!("the message being sent could not be read: {detail}"),
            };
            let n = file
                .read_at(&mut buf[..want], at)
                .map_err(|e| cut(e.to_string()))?;
            if n == 0 {
                return Err(cut(format!("its spool ends after {at} of {len} bytes")));
            }
            self.write_raw(&[&buf[..n]]).await?;
            at += n as u64;
        }
        self.write_raw(&[b"\r\n"]).await
    }

    /// Reads responses until the tagged end of `tag`.
    pub async fn wait_done(&mut self, tag: &str) -> Result<Completion, ImapError> {
        loop {
            if let Event::Done {
                tag: t,
                ok,
                status,
                text,
                appenduid,
            } = self.next_event().await?
            {
                if t == tag {
                    return Ok(Completion {
                        tag: t,
                        ok,
                        status,
                        text,
                        appenduid,
                    });
                }
            }
        }
    }

    /// Runs a simple command (no literal) to its end.
    pub async fn simple_command(&mut self, cmd: &str) -> Result<Completion, ImapError> {
        let tag = self.conn.send(cmd).await?;
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

    /// Runs simple commands (no literal) sent all at once: one round trip for the lot.
    pub async fn simple_commands(&mut self, cmds: &[String]) -> Result<Vec<Completion>, ImapError> {
        Ok(self
            .pipelined(cmds)
            .await?
            .into_iter()
            .map(|(ok, status, text)| Completion {
                tag: String::new(),
                ok,
                status,
                text,
                appenduid: None,
            })
            .collect())
    }

    /// `CREATE name` (with `(USE (\Role))` when asked and offered). A folder that
    /// already exists is not an error.
    pub async fn create_folder(
        &mut self,
        raw: &str,
        role: Option<&str>,
    ) -> Result<Completion, ImapError> {
        let c = self.simple_command(&create_command(raw, role)).await?;
        if !c.ok && role.is_some() && !c.already_exists() {
            // A server that refuses the role still gets the folder.
            return self.simple_command(&format!("CREATE {}", quote(raw))).await;
        }
        Ok(c)
    }

    pub async fn subscribe(&mut self, raw: &str) -> Result<Completion, ImapError> {
        self.simple_command(&subscribe_command(raw)).await
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
        let tag = self.conn.next_tag();
        let head = format!(
            "{tag} APPEND {}{}",
            quote(req.mailbox_raw),
            message_part(req, literal_plus)
        );
        if literal_plus {
            if let Literal::Bytes(b) = req.body {
                self.write_raw(&[head.as_bytes(), b, b"\r\n"]).await?;
            } else {
                self.write_raw(&[head.as_bytes()]).await?;
                self.write_literal(req.body).await?;
            }
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
                    appenduid,
                } if t == tag => {
                    return Ok(Err(Completion {
                        tag: t,
                        ok,
                        status,
                        text,
                        appenduid,
                    }))
                }
                Event::Continuation => break,
                _ => {}
            }
        }
        self.write_literal(req.body).await?;
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
        let tag = self.conn.next_tag();
        let mut out = Vec::with_capacity(reqs.iter().map(|r| r.body.len() as usize + 80).sum());
        out.extend_from_slice(format!("{tag} APPEND {}", quote(mailbox_raw)).as_bytes());
        for r in reqs {
            out.extend_from_slice(message_part(r, true).as_bytes());
            match r.body {
                Literal::Bytes(b) => out.extend_from_slice(b),
                // The import batches only messages held in memory.
                Literal::File(..) => unreachable!("a spooled message goes alone"),
            }
        }
        out.extend_from_slice(b"\r\n");
        self.write_raw(&[&out]).await?;
        Ok(tag)
    }

    /// Sends `SELECT mailbox` and returns its tag without waiting for the answer: an
    /// importer's APPENDs follow it in the same round trip (the server runs commands in
    /// turn, so they land in the open folder). Its completion comes through
    /// [`wait_append`](Self::wait_append) like theirs.
    pub async fn send_select(&mut self, mailbox_raw: &str) -> Result<String, ImapError> {
        let cmd = self.open_command("SELECT", mailbox_raw);
        self.selected = None;
        self.conn.send(&cmd).await
    }

    /// The next APPEND completion (in order: the server answers commands in turn).
    pub async fn wait_append(&mut self) -> Result<Completion, ImapError> {
        loop {
            if let Event::Done {
                tag,
                ok,
                status,
                text,
                appenduid,
            } = self.next_event().await?
            {
                return Ok(Completion {
                    tag,
                    ok,
                    status,
                    text,
                    appenduid,
                });
            }
        }
    }

    /// What a folder holds: UID, size, flags, INTERNALDATE and the Message-ID field of
    /// every message (read-only: `BODY.PEEK`).
    pub async fn identities<T: From<FetchedMessage>>(
        &mut self,
        exists: u32,
    ) -> Result<Vec<T>, ImapError> {
        if exists == 0 {
            return Ok(Vec::new());
        }
        self.uid_fetch_all("1:*", FetchWhat::MetaMessageId).await
    }

    /// Fetches whole messages of `uids`, handing each (UID, bytes) to `each`; memory
    /// holds one message. A message holding NUL may come as a `literal8` (`~{N}`: Cyrus
    /// does); the wire reads it like any literal.
    pub async fn fetch_bodies(
        &mut self,
        uids: &[u32],
        each: impl FnMut(u32, &[u8]),
    ) -> Result<(), ImapError> {
        self.fetch_section(uids, "", each).await
    }

    /// Like [`fetch_bodies`](Self::fetch_bodies) for one section of each message
    /// (`HEADER`: the header and the blank line after it; empty: the whole message).
    /// The UIDs go in sorted runs of [`SECTION_UIDS`], up to [`SECTIONS_IN_FLIGHT`] of
    /// them sent before the first answer: one round trip for a folder's worth, where
    /// waiting for each run cost one per run. A refused run is reported once every run
    /// in flight has ended, so no answer of this call is left for the next command.
    pub async fn fetch_section(
        &mut self,
        uids: &[u32],
        section: &str,
        mut each: impl FnMut(u32, &[u8]),
    ) -> Result<(), ImapError> {
        let mut sorted = uids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut runs = sorted.chunks(SECTION_UIDS);
        let mut inflight: VecDeque<(String, String)> = VecDeque::new();
        let mut refused: Option<ImapError> = None;
        loop {
            while refused.is_none() && inflight.len() < SECTIONS_IN_FLIGHT {
                let Some(run) = runs.next() else { break };
                let set = uid_set(run);
                let tag = self
                    .conn
                    .send(&format!("UID FETCH {set} (UID BODY.PEEK[{section}])"))
                    .await?;
                inflight.push_back((tag, set));
            }
            let Some((tag, _)) = inflight.front() else {
                return refused.map_or(Ok(()), Err);
            };
            let tag = tag.clone();
            match self.next_event().await? {
                Event::Fetch(m) => {
                    let body = match &m.spooled {
                        Some(sp) => Some(self.spooled_in_memory(sp)?),
                        None => m.body.or(m.header_fields),
                    };
                    if let (Some(uid), Some(b)) = (m.uid, body) {
                        each(uid, &b);
                    }
                }
                Event::Done {
                    tag: t,
                    ok,
                    status,
                    text,
                    ..
                } if t == tag => {
                    let (_, set) = inflight.pop_front().expect("the run just answered");
                    if !ok && refused.is_none() {
                        refused = Some(ImapError::Command {
                            endpoint: self.endpoint().to_string(),
                            command: format!("UID FETCH {set} BODY.PEEK[{section}]"),
                            status,
                            text,
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

/// UIDs one `UID FETCH` of [`ImapSession::fetch_section`] names: its command stays
/// short however scattered the UIDs are.
const SECTION_UIDS: usize = 200;
/// Runs of [`ImapSession::fetch_section`] sent before their answers: a few kilobytes of
/// commands, too few to fill the server's input while it is writing answers to us.
const SECTIONS_IN_FLIGHT: usize = 16;

#[cfg(test)]
mod tests {
    use super::uid_set;

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 9, 11, 12]), "1:3,5,9,11:12");
        assert_eq!(uid_set(&[7]), "7");
    }
}
