//! A deliberately small synchronous IMAP client for tests: it sends commands exactly as
//! written and returns the untagged lines (with literals inline), so tests can seed a
//! server (CREATE, APPEND, STORE, SUBSCRIBE) and look at it (LIST, FETCH) without any of
//! mailark's own IMAP code.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct RawImap {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
    tag: u32,
}

/// One tagged command's result: untagged response data (literals inline as bytes) and
/// the tagged status line.
#[derive(Debug)]
pub struct Reply {
    pub data: Vec<Vec<u8>>,
    pub status: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.status.starts_with("OK")
    }
    pub fn text(&self) -> String {
        self.data
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl RawImap {
    pub fn connect(port: u16) -> RawImap {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to test IMAP");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut c = RawImap {
            rd: BufReader::new(s.try_clone().unwrap()),
            wr: s,
            tag: 0,
        };
        let g = c.line();
        assert!(
            g.starts_with(b"* OK"),
            "greeting: {}",
            String::from_utf8_lossy(&g)
        );
        c
    }

    fn line(&mut self) -> Vec<u8> {
        let mut l = Vec::new();
        self.rd.read_until(b'\n', &mut l).unwrap();
        assert!(!l.is_empty(), "server closed the connection");
        l
    }

    /// Reads one response line with its literals appended.
    fn response(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let l = self.line();
            all.extend_from_slice(&l);
            let t = trim_crlf(&l);
            if let Some(n) = literal_len(t) {
                let mut lit = vec![0u8; n];
                self.rd.read_exact(&mut lit).unwrap();
                all.extend_from_slice(&lit);
                continue;
            }
            return all;
        }
    }

    /// Sends `cmd` (without tag or CRLF) and collects the reply.
    pub fn cmd(&mut self, cmd: &str) -> Reply {
        self.tag += 1;
        let tag = format!("r{}", self.tag);
        write!(self.wr, "{tag} {cmd}\r\n").unwrap();
        self.finish(&tag)
    }

    fn finish(&mut self, tag: &str) -> Reply {
        let mut data = Vec::new();
        loop {
            let r = self.response();
            if let Some(rest) = r.strip_prefix(format!("{tag} ").as_bytes()) {
                return Reply {
                    data,
                    status: String::from_utf8_lossy(trim_crlf(rest)).into_owned(),
                };
            }
            data.push(r);
        }
    }

    pub fn must(&mut self, cmd: &str) -> Reply {
        let r = self.cmd(cmd);
        assert!(r.ok(), "{cmd}: {}", r.status);
        r
    }

    pub fn login(&mut self, user: &str, pass: &str) {
        self.must(&format!("LOGIN {} {}", quote(user), quote(pass)));
    }

    /// APPEND with a synchronising literal; `mailbox` is already in wire form (modified
    /// UTF-7). Returns the tagged status (OK [APPENDUID ...] or the refusal).
    pub fn append(&mut self, mailbox: &str, flags: &str, date: Option<&str>, msg: &[u8]) -> Reply {
        self.tag += 1;
        let tag = format!("r{}", self.tag);
        let date = date.map(|d| format!(" \"{d}\"")).unwrap_or_default();
        write!(
            self.wr,
            "{tag} APPEND {} ({flags}){date} {{{}}}\r\n",
            quote(mailbox),
            msg.len()
        )
        .unwrap();
        let l = self.line();
        if !l.starts_with(b"+") {
            return Reply {
                data: vec![],
                status: String::from_utf8_lossy(trim_crlf(
                    l.strip_prefix(format!("{tag} ").as_bytes()).unwrap_or(&l),
                ))
                .into_owned(),
            };
        }
        self.wr.write_all(msg).unwrap();
        self.wr.write_all(b"\r\n").unwrap();
        self.finish(&tag)
    }

    /// `UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])` of one folder:
    /// (uid, flags line, body bytes) in UID order.
    pub fn fetch_all(&mut self, mailbox: &str) -> Vec<(u32, String, Vec<u8>)> {
        self.must(&format!("EXAMINE {}", quote(mailbox)));
        let r = self.must("UID FETCH 1:* (UID FLAGS BODY.PEEK[])");
        let mut out = Vec::new();
        for d in r.data {
            if !d.starts_with(b"* ") || !contains(&d, b" FETCH (") {
                continue;
            }
            let head_end = d.iter().position(|&b| b == b'\n').unwrap();
            let head = String::from_utf8_lossy(&d[..head_end]).into_owned();
            let n = literal_len(trim_crlf(&d[..=head_end])).unwrap();
            let body = d[head_end + 1..head_end + 1 + n].to_vec();
            let uid: u32 = head
                .split("UID ")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|s| s.parse().ok())
                .unwrap();
            let flags = head
                .split("FLAGS (")
                .nth(1)
                .and_then(|s| s.split(')').next())
                .unwrap_or("")
                .to_string();
            out.push((uid, flags, body));
        }
        out.sort_by_key(|m| m.0);
        out
    }

    /// What `STATUS mailbox (MESSAGES)` counts (`mailbox` as on the wire); `None` when
    /// the server refuses or gives no count.
    pub fn status_messages(&mut self, mailbox: &str) -> Option<u64> {
        let r = self.cmd(&format!("STATUS {mailbox} (MESSAGES)"));
        if !r.ok() {
            return None;
        }
        r.text()
            .split("MESSAGES ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
    }

    pub fn logout(mut self) {
        let _ = self.cmd("LOGOUT");
    }
}

pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn trim_crlf(l: &[u8]) -> &[u8] {
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let n = std::str::from_utf8(&l[open + 1..]).ok()?;
    n.trim_end_matches('+').parse().ok()
}

fn contains(h: &[u8], n: &[u8]) -> bool {
    h.windows(n.len()).any(|w| w == n)
}

/// Modified UTF-7 (RFC 3501 §5.1.3) for seeding folder names, written here from the RFC
/// so tests do not check mailark's codec with itself.
pub fn mutf7(s: &str) -> String {
    let mut out = String::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
        out.push('&');
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out.push('-');
        pending.clear();
    };
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}
