//! `ls`: every archived message, one line each (or `--json`). Records are read from the
//! index one at a time and printed as they come, so a million messages list in the
//! memory of a few: the table makes one pass to size its columns and a second to
//! print; the JSON document is written item by item, as `print_json` would have
//! written it whole.

use std::io::Write;

use super::table::{Align, Table};
use super::{open_chain, warn_unmatched, Fatal, LsArgs, JSON_SCHEMA};
use crate::archive::{Archive, Completeness, MessageRecord};
use crate::export::FolderFilter;

#[derive(serde::Serialize)]
struct LsItem {
    archive: String,
    #[serde(flatten)]
    m: MessageRecord,
}

pub(super) fn run_ls(a: &LsArgs) -> Result<u8, Fatal> {
    // Listing shows what the files hold, so a delta may be listed without its parent.
    let chain = open_chain(&a.archives, Completeness::Tail, &a.ids)?;
    let filter = FolderFilter::new(&a.folders, &a.exclude)?;
    // Patterns are judged against the folders (empty ones too), not the messages.
    for f in chain.archives().iter().flat_map(|ar| &ar.index.folders) {
        filter.matches(&f.name);
    }
    warn_unmatched(filter.unmatched());
    let listed = || {
        chain.archives().iter().flat_map(|ar| {
            ar.index
                .messages
                .iter()
                .filter(|m| filter.matches(&m.folder))
                .map(move |m| (ar, m))
        })
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        match write_json(&mut out, listed().map(|(ar, m)| ls_item(ar, m))) {
            // A reader that stops early (`| head`) is not an error, as in `print_json`.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => return Ok(0),
        }
    }
    // A closed pipe (`| head`) ends the listing quietly: the rest is not wanted.
    let _ = write_table(&mut out, || listed().map(|(_, m)| row(&m)));
    Ok(0)
}

fn ls_item(ar: &Archive, mut m: MessageRecord) -> LsItem {
    m.internaldate = m.internaldate.map(|d| utc_rfc3339(&d));
    m.date = m.date.map(|d| utc_rfc3339(&d));
    LsItem {
        archive: ar.path.display().to_string(),
        m,
    }
}

const HEADER: [&str; 6] = ["date", "size", "flags", "folder", "from", "subject"];

fn row(m: &MessageRecord) -> [String; 6] {
    let date = m
        .internaldate
        .as_deref()
        .map(|d| d.get(..16).unwrap_or(d).replace('T', " "))
        .unwrap_or_else(|| "-".into());
    [
        date,
        m.size.to_string(),
        flag_letters(&m.flags),
        m.folder.clone(),
        m.from.clone().unwrap_or_else(|| "-".into()),
        m.subject.clone().unwrap_or_else(|| "-".into()),
    ]
}

fn table() -> Table {
    Table::new(&[
        Align::Left,
        Align::Right,
        Align::Left,
        Align::Left,
        Align::Left,
        Align::Left,
    ])
    .max_width(4, 32)
}

/// The rows as `Table::render` lays them out, from two passes over `rows()`.
fn write_table<I: Iterator<Item = [String; 6]>>(
    out: &mut impl Write,
    rows: impl Fn() -> I,
) -> std::io::Result<()> {
    let t = table();
    let header = HEADER.map(String::from);
    let mut widths = vec![0; 6];
    t.measure(&mut widths, &header);
    for r in rows() {
        t.measure(&mut widths, &r);
    }
    let mut out = std::io::BufWriter::new(out);
    writeln!(out, "{}", t.line(&header, &widths))?;
    for r in rows() {
        writeln!(out, "{}", t.line(&r, &widths))?;
    }
    out.flush()
}

/// `{"schema": 1, "messages": [...]}` exactly as `serde_json::to_writer_pretty` writes
/// it (and a final newline), one item at a time: each item is written pretty on its
/// own and indented to its depth (JSON strings hold no raw newline, so every line
/// break in an item is the formatter's).
fn write_json(out: &mut impl Write, items: impl Iterator<Item = LsItem>) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(out);
    write!(out, "{{\n  \"schema\": {JSON_SCHEMA},\n  \"messages\": [")?;
    let mut any = false;
    let mut buf = Vec::new();
    for item in items {
        buf.clear();
        serde_json::to_writer_pretty(&mut buf, &item)?;
        out.write_all(if any { b",\n" } else { b"\n" })?;
        any = true;
        for (i, line) in buf.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                out.write_all(b"\n")?;
            }
            out.write_all(b"    ")?;
            out.write_all(line)?;
        }
    }
    out.write_all(if any { b"\n  ]\n}\n" } else { b"]\n}\n" })?;
    out.flush()
}

/// An RFC 3339 date in UTC with `Z`, as every `--json` date is; a value that is not
/// RFC 3339 is shown as stored (verify reports it).
fn utc_rfc3339(d: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(d)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        })
        .unwrap_or_else(|_| d.to_string())
}

/// IMAP flags as mutt shows them: D(raft) F(lagged) R(eplied) S(een) T(rashed), then
/// keywords; `-` for none.
fn flag_letters(flags: &[String]) -> String {
    let mut letters = String::new();
    for (flag, l) in [
        ("\\Draft", 'D'),
        ("\\Flagged", 'F'),
        ("\\Answered", 'R'),
        ("\\Seen", 'S'),
        ("\\Deleted", 'T'),
    ] {
        if flags.iter().any(|f| f.eq_ignore_ascii_case(flag)) {
            letters.push(l);
        }
    }
    let keywords: Vec<&str> = flags
        .iter()
        .filter(|f| !f.starts_with('\\'))
        .map(String::as_str)
        .collect();
    if !keywords.is_empty() {
        if !letters.is_empty() {
            letters.push(' ');
        }
        letters.push_str(&keywords.join(","));
    }
    if letters.is_empty() {
        letters.push('-');
    }
    letters
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::SourceRef;

    fn rec(i: u32, subject: &str) -> MessageRecord {
        MessageRecord {
            folder: if i % 2 == 0 { "INBOX" } else { "送信済み" }.into(),
            path: format!("maildir/x/cur/{i}"),
            size: u64::from(i) * 1000,
            sha256: "ab".repeat(32),
            flags: vec!["\\Seen".into(), "$label".into()],
            internaldate: Some("2024-01-01T09:00:00+09:00".into()),
            message_id: None,
            date: Some("not a date".into()),
            from: Some("a \"quoted\" \u{1b} sender".into()),
            subject: Some(subject.into()),
            source: SourceRef::Imap {
                uidvalidity: 1,
                uid: i,
            },
            source_size: Some(7),
            mbox: None,
        }
    }

    fn items(n: u32) -> Vec<LsItem> {
        (0..n)
            .map(|i| LsItem {
                archive: format!("a{i}.tar.zst"),
                m: rec(i, "件名\nwith a newline"),
            })
            .collect()
    }

    /// The streamed document is byte for byte what printing it whole gave.
    #[test]
    fn json_streamed_equals_json_whole() {
        #[derive(serde::Serialize)]
        struct LsDoc {
            messages: Vec<LsItem>,
        }
        for n in [0, 1, 3] {
            let doc = super::super::JsonDoc {
                schema: JSON_SCHEMA,
                body: &LsDoc { messages: items(n) },
            };
            let mut whole = serde_json::to_vec_pretty(&doc).unwrap();
            whole.push(b'\n');
            let mut streamed = Vec::new();
            write_json(&mut streamed, items(n).into_iter()).unwrap();
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                String::from_utf8(whole).unwrap(),
                "n={n}"
            );
        }
    }

    /// Two passes give the lines `Table::render` gives for the rows held at once.
    #[test]
    fn table_streamed_equals_table_whole() {
        let recs: Vec<MessageRecord> = (0..5)
            .map(|i| rec(i, &"長い件名".repeat(i as usize)))
            .collect();
        let rows: Vec<[String; 6]> = recs.iter().map(row).collect();
        let mut whole = table().render(&HEADER.map(String::from), &rows).join("\n");
        whole.push('\n');
        let mut streamed = Vec::new();
        write_table(&mut streamed, || recs.iter().map(row)).unwrap();
        assert_eq!(String::from_utf8(streamed).unwrap(), whole);
    }
}
