//! The few header fields the index carries (Message-ID, Date, From, Subject), decoded to
//! UTF-8 for people: RFC 2047 words through mail-parser, and the raw ISO-2022-JP,
//! Shift_JIS and EUC-JP that Japanese mailers put in headers without encoding them.
//! Only the header section is parsed, so a 20 MB attachment costs nothing here.

use chrono::{DateTime, FixedOffset};
use mail_parser::MessageParser;

/// What the index shows of a message. All fields are best effort; a message with no
/// header at all gives all `None`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub message_id: Option<String>,
    /// The Date header as RFC 3339 when it parses, else its raw text.
    pub date: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
}

/// A header section larger than this is cut for summary purposes only (the message bytes
/// are never touched).
pub(crate) const MAX_HEADER: usize = 256 * 1024;

/// Returns the header section: up to and including the first empty line (CRLF, LF or CR
/// line ends), or the whole message when it has no body.
pub fn header_section(msg: &[u8]) -> &[u8] {
    let lim = &msg[..msg.len().min(MAX_HEADER)];
    let mut i = 0;
    while i < lim.len() {
        if lim[i] == b'\n' {
            if lim[i + 1..].starts_with(b"\n") || lim[i + 1..].starts_with(b"\r\n") {
                return &lim[..i + 1];
            }
        } else if lim[i] == b'\r' && lim.get(i + 1) == Some(&b'\r') {
            // bare-CR line ends (classic Mac mail)
            return &lim[..i + 1];
        }
        i += 1;
    }
    lim
}

pub fn summarize(msg: &[u8]) -> Summary {
    let head = header_section(msg);
    let mut s = Summary::default();
    let Some(parsed) = MessageParser::default().parse_headers(head) else {
        return s;
    };
    s.message_id = parsed.message_id().map(|m| format!("<{m}>"));
    s.date = parsed.date().map(|d| d.to_rfc3339());
    s.subject = raw_field(head, b"subject")
        .and_then(|raw| decode_raw(&raw))
        .or_else(|| parsed.subject().map(str::to_string));
    s.from = raw_field(head, b"from")
        .and_then(|raw| decode_raw(&raw))
        .or_else(|| {
            parsed
                .from()
                .and_then(|a| a.first())
                .map(|a| match (a.name(), a.address()) {
                    (Some(n), Some(e)) => format!("{n} <{e}>"),
                    (None, Some(e)) => e.to_string(),
                    (Some(n), None) => n.to_string(),
                    (None, None) => String::new(),
                })
        });
    s
}

/// The unfolded raw value of the first field named `name` (case-insensitive).
fn raw_field(head: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    while let Some(line) = lines.next() {
        if line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
        {
            let mut v = line[name.len() + 1..].to_vec();
            for cont in lines.by_ref() {
                if cont.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                    v.extend_from_slice(cont);
                } else {
                    break;
                }
            }
            return Some(v);
        }
    }
    None
}

/// Decodes a raw header value that carries no RFC 2047 words; `None` leaves the job to
/// mail-parser (encoded words, or plain ASCII it handles the same way).
fn decode_raw(raw: &[u8]) -> Option<String> {
    if raw.windows(2).any(|w| w == b"=?") {
        return None;
    }
    let trimmed = trim(raw);
    if trimmed.contains(&0x1b) {
        let (s, _, _) = encoding_rs::ISO_2022_JP.decode(trimmed);
        return Some(s.into_owned());
    }
    if trimmed.is_ascii() {
        return None;
    }
    if let Ok(s) = std::str::from_utf8(trimmed) {
        return Some(s.to_string());
    }
    for enc in [encoding_rs::SHIFT_JIS, encoding_rs::EUC_JP] {
        let (s, had_errors) = enc.decode_without_bom_handling(trimmed);
        if !had_errors {
            return Some(s.into_owned());
        }
    }
    Some(String::from_utf8_lossy(trimmed).into_owned())
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// The time a message reached its mailbox, for sources without INTERNALDATE (POP3,
/// `.eml` files): the delivery time in the topmost `Received:`
/// field is the closest (a restore then sorts mail by arrival), the `Date:` field the
/// fallback.
pub fn delivery_date(msg: &[u8]) -> Option<DateTime<FixedOffset>> {
    let head = header_section(msg);
    let text = String::from_utf8_lossy(head);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let parse = |s: &str| {
        // Drop comments such as "(JST)"; chrono wants the bare RFC 5322 date.
        let mut out = String::new();
        let mut depth = 0;
        for c in s.chars() {
            match c {
                '(' => depth += 1,
                ')' if depth > 0 => depth -= 1,
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        DateTime::parse_from_rfc2822(out.split_whitespace().collect::<Vec<_>>().join(" ").trim())
            .ok()
    };
    let received = fields
        .iter()
        .find(|(n, _)| n == "received")
        .and_then(|(_, v)| v.rsplit_once(';'))
        .and_then(|(_, d)| parse(d));
    received.or_else(|| {
        fields
            .iter()
            .find(|(n, _)| n == "date")
            .and_then(|(_, v)| parse(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_date_prefers_the_topmost_received() {
        let m = b"Received: from b by c;\r\n\tTue, 2 Jan 2024 10:00:00 +0900 (JST)\r\n\
Received: from a by b; Mon, 1 Jan 2024 09:00:00 +0000\r\n\
Date: Sun, 31 Dec 2023 23:00:00 -0500\r\n\r\nbody\r\n";
        let d = delivery_date(m).unwrap();
        assert_eq!(d.to_rfc3339(), "2024-01-02T10:00:00+09:00");
        let m = b"Date: Sun, 31 Dec 2023 23:00:00 -0500\nSubject: x\n\nReceived: no; 1 Jan 2020\n";
        assert_eq!(
            delivery_date(m).unwrap().to_rfc3339(),
            "2023-12-31T23:00:00-05:00"
        );
        assert_eq!(delivery_date(b"Subject: none\r\n\r\n"), None);
        assert_eq!(
            delivery_date(b"Received: garbage\r\nDate: nonsense\r\n\r\n"),
            None
        );
    }

    #[test]
    fn japanese_subjects() {
        let m = b"Subject: =?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=\r\nMessage-ID: <a@b>\r\n\r\nbody";
        let s = summarize(m);
        assert_eq!(s.subject.as_deref(), Some("日本語"));
        assert_eq!(s.message_id.as_deref(), Some("<a@b>"));
        let raw = b"Subject: \x1b$BF|K\\8l\x1b(B\n\n";
        assert_eq!(summarize(raw).subject.as_deref(), Some("日本語"));
        let sjis = b"Subject: \x93\xfa\x96\x7b\x8c\xea\n\n";
        assert_eq!(summarize(sjis).subject.as_deref(), Some("日本語"));
    }

    #[test]
    fn empty_and_headerless() {
        assert_eq!(summarize(b""), Summary::default());
        assert_eq!(header_section(b"A: b\r\n\r\nc"), b"A: b\r\n");
    }
}
