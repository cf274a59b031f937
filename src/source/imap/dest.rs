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

use super::session::{quote, Event, FetchWhat, FetchedMessage, ImapError, ImapSession};

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

/// The destination's capabilities that shape an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestCaps {
    pub literal_plus: bool,
    pub binary: bool,
    pub create_special_use: bool,
    pub unselect: bool,
    pub appendlimit: Option<u64>,
}

impl ImapSession {
    fn io_timeout(&self) -> ImapError {
        ImapError::Timeout {
            endpoint: self.endpoint().to_string(),
            secs: IO_TIMEOUT.as_secs(),
        }
    }

    async fn write_raw(&mut self, parts: &[&[u8]]) -> Result<(), ImapError> {
        let ep = self.endpoint().to_string();
        let s = self.inner.as_mut();
        let fut = async {
            for p in parts {
                s.write_all(p).await?;
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

    async fn next_event_t(&mut self) -> Result<Event, ImapError> {
        match timeout(IO_TIMEOUT, self.next_event()).await {
            Err(_) => Err(self.io_timeout()),
            Ok(r) => r,
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
            } = self.next_event_t().await?
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
        let mut head = format!("{tag} APPEND {} ({})", quote(req.mailbox_raw), req.flags.join(" "));
        if let Some(d) = req.internaldate {
            head.push_str(&format!(" \"{d}\""));
        }
        let plus = if literal_plus { "+" } else { "" };
        let tilde = if req.binary { "~" } else { "" };
        head.push_str(&format!(" {tilde}{{{}{plus}}}\r\n", req.bytes.len()));
        if literal_plus {
            self.write_raw(&[head.as_bytes(), req.bytes, b"\r\n"])
                .await?;
            return Ok(Ok(tag));
        }
        self.write_raw(&[head.as_bytes()]).await?;
        loop {
            match self.next_event_t().await? {
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

    /// The next APPEND completion (in order: the server answers commands in turn).
    pub async fn wait_append(&mut self) -> Result<Completion, ImapError> {
        loop {
            if let Event::Done {
                tag,
                ok,
                status,
                text,
            } = self.next_event_t().await?
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

    /// Fetches whole messages of `uids` one response at a time, handing each to `each`
    /// (memory holds one message).
    pub async fn fetch_bodies(
        &mut self,
        uids: &[u32],
        mut each: impl FnMut(FetchedMessage),
    ) -> Result<(), ImapError> {
        for chunk in uids.chunks(200) {
            let set = uid_set(chunk);
            let tag = self.send_uid_fetch(&set, FetchWhat::Full).await?;
            loop {
                match self.next_event_t().await? {
                    Event::Fetch(m) => each(m),
                    Event::Done {
                        tag: t,
                        ok,
                        status,
                        text,
                    } if t == tag => {
                        if !ok {
                            return Err(ImapError::Command {
                                endpoint: self.endpoint().to_string(),
                                command: format!("UID FETCH {set} BODY.PEEK[]"),
                                status,
                                text,
                            });
                        }
                        break;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// A compact UID set (`1:5,9,11:12`).
pub fn uid_set(uids: &[u32]) -> String {
    let mut v = uids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn uid_sets() {
        assert_eq!(super::uid_set(&[5, 1, 2, 3, 9, 11, 12]), "1:3,5,9,11:12");
        assert_eq!(super::uid_set(&[7]), "7");
    }
}
