//! The receipt: one self-contained HTML page (inline CSS and SVG, no script, no
//! external URL) for the person who receives an archive. It shows what `verify`
//! found — this module decides nothing about the archive, it only presents the
//! verification report and the indexes — plus who made the archive, from where, the
//! chain, per-folder counts, sizes and date ranges, and messages per month.
//! Everything that came from mail or a server is HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Utc};

use crate::archive::sign::SigStatus;
use crate::archive::Archive;
use crate::verify::{Level, VerifyReport};

/// One archive as the page shows it.
pub struct Part<'a> {
    pub archive: &'a Archive,
    /// Whether the file on disk is age-encrypted.
    pub encrypted: bool,
    /// Bytes of the file on disk.
    pub file_bytes: u64,
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters from a hostile name: shown, never acted on.
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[derive(Default)]
struct FolderRow {
    messages: u64,
    bytes: u64,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    role: Option<String>,
}

fn when(m: &crate::archive::MessageRecord) -> Option<DateTime<Utc>> {
    m.internaldate
        .as_deref()
        .or(m.date.as_deref())
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&Utc))
}

fn human_bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

fn day(d: Option<DateTime<Utc>>) -> String {
    d.map_or("-".into(), |d| d.format("%Y-%m-%d").to_string())
}

/// Renders the page. `generated` is the time printed on it.
pub fn render(parts: &[Part<'_>], rep: &VerifyReport, generated: DateTime<Utc>) -> String {
    let mut folders: BTreeMap<String, FolderRow> = BTreeMap::new();
    let mut months: BTreeMap<(i32, u32), u64> = BTreeMap::new();
    let mut undated = 0u64;
    let mut newest: Vec<(DateTime<Utc>, crate::archive::MessageRecord)> = Vec::new();
    for p in parts {
        for f in &p.archive.index.folders {
            let row = folders.entry(f.name.clone()).or_default();
            if row.role.is_none() {
                row.role = f.special_use.clone();
            }
        }
        for m in p.archive.index.messages.iter() {
            let row = folders.entry(m.folder.clone()).or_default();
            row.messages += 1;
            row.bytes += m.size;
            match when(&m) {
                Some(t) => {
                    row.first = Some(row.first.map_or(t, |f| f.min(t)));
                    row.last = Some(row.last.map_or(t, |l| l.max(t)));
                    *months.entry((t.year(), t.month())).or_default() += 1;
                    keep_newest(&mut newest, t, &m);
                }
                None => undated += 1,
            }
        }
    }
    let total: u64 = folders.values().map(|f| f.messages).sum();
    let total_bytes: u64 = folders.values().map(|f| f.bytes).sum();

    let mut h = String::new();
    h.push_str(HEAD);
    let ok = rep.errors() == 0 && !rep.unusable;
    let _ = write!(
        h,
        "<h1>Mail archive receipt</h1>\n<p class=\"lead\">{} message(s), {} of mail, in {} folder(s) and {} archive file(s).</p>\n",
        total,
        esc(&human_bytes(total_bytes)),
        folders.len(),
        parts.len()
    );
    let _ = write!(
        h,
        "<section class=\"verdict {}\"><h2>Verification: {}</h2>\n<p>Every message's SHA-256 was recomputed and compared with the index; the index checksum, the trailer, the member names and the chain links were checked. <b id=\"checked\">{}</b> message(s) ({}) checked, <b id=\"problems\">{}</b> problem(s).</p>\n",
        if ok { "ok" } else { "bad" },
        if ok { "OK" } else { "PROBLEMS FOUND" },
        rep.messages_checked,
        esc(&human_bytes(rep.bytes_checked)),
        rep.errors()
    );
    if !rep.findings.is_empty() {
        h.push_str("<ul class=\"findings\">\n");
        for f in &rep.findings {
            let lvl = match f.level {
                Level::Error => "error",
                Level::Warning => "warning",
            };
            let _ = writeln!(
                h,
                "<li class=\"{lvl}\">{lvl} [{}] {}{}{}: {}</li>",
                esc(f.code),
                esc(&f.archive),
                f.folder
                    .as_deref()
                    .map(|x| format!(" folder {}", esc(x)))
                    .unwrap_or_default(),
                f.message
                    .as_deref()
                    .map(|x| format!(" {}", esc(x)))
                    .unwrap_or_default(),
                esc(&f.detail)
            );
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</section>\n");
    signatures(&mut h, rep);
    chain(&mut h, parts);
    folder_table(&mut h, &folders, total, total_bytes);
    latest(&mut h, &newest);
    h.push_str("<h2>Messages per month</h2>\n");
    h.push_str(&chart(&months));
    if undated > 0 {
        let _ = writeln!(
            h,
            "<p class=\"note\">{undated} message(s) carry no date and are not in the chart.</p>"
        );
    }
    let _ = write!(
        h,
        "<footer>Made by mailark {} on {} from the archives' indexes and a full verification. Check it yourself without mailark: <code>tar --zstd -xf ARCHIVE &amp;&amp; sha256sum -c SHA256SUMS</code> (encrypted: <code>age -d -i KEY ARCHIVE | tar --zstd -x</code>).</footer>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        generated.format("%Y-%m-%d %H:%M UTC")
    );
    h
}

const NEWEST: usize = 10;

/// Keeps the [`NEWEST`] latest messages, newest first, without sorting them all.
fn keep_newest(
    v: &mut Vec<(DateTime<Utc>, crate::archive::MessageRecord)>,
    t: DateTime<Utc>,
    m: &crate::archive::MessageRecord,
) {
    if v.len() == NEWEST && v.last().is_some_and(|l| l.0 >= t) {
        return;
    }
    let at = v.partition_point(|x| x.0 >= t);
    v.insert(at, (t, m.clone()));
    v.truncate(NEWEST);
}

/// The last mail archived: what a receiver recognises the mailbox by.
fn latest(h: &mut String, newest: &[(DateTime<Utc>, crate::archive::MessageRecord)]) {
    if newest.is_empty() {
        return;
    }
    let _ = writeln!(h, "<h2>Latest messages ({} newest)</h2>\n<table id=\"latest\">\n<tr><th>date (UTC)</th><th>folder</th><th>from</th><th>subject</th></tr>", newest.len());
    for (t, m) in newest {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.format("%Y-%m-%d %H:%M"),
            esc(&m.folder),
            esc(m.from.as_deref().unwrap_or("")),
            esc(m.subject.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>\n");
}

fn signatures(h: &mut String, rep: &VerifyReport) {
    h.push_str("<h2>Signature</h2>\n");
    if rep.signatures.is_empty() {
        h.push_str(
            "<p id=\"signature\">Not checked: no signer was given (<code>--signer</code>).</p>\n",
        );
        return;
    }
    h.push_str("<ul id=\"signature\">\n");
    for s in &rep.signatures {
        let text = match &s.status {
            SigStatus::Good {
                signer,
                fingerprint,
            } => format!("good: signed by {} ({})", esc(signer), esc(fingerprint)),
            SigStatus::Bad { detail } => format!("BAD: {}", esc(detail)),
            SigStatus::Missing => "MISSING: no signature file".into(),
        };
        let _ = writeln!(h, "<li><code>{}</code>: {text}</li>", esc(&s.signature));
    }
    h.push_str("</ul>\n");
}

fn chain(h: &mut String, parts: &[Part<'_>]) {
    h.push_str("<h2>Archives (chain, oldest first)</h2>\n<table>\n<tr><th>file</th><th>source</th><th>created</th><th>parent</th><th>messages</th><th>size on disk</th><th>protection</th><th>index SHA-256</th></tr>\n");
    for p in parts {
        let a = p.archive;
        let hd = &a.index.header;
        let parent = hd
            .parent
            .as_ref()
            .map(|p| p.file_name.clone().unwrap_or_else(|| p.archive_id.clone()))
            .unwrap_or_else(|| "none (full archive)".into());
        let name = a
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td><code class=\"hash\">{}</code></td></tr>",
            esc(&name),
            esc(&hd.source),
            esc(&hd.created),
            esc(&parent),
            a.index.end.messages,
            esc(&human_bytes(p.file_bytes)),
            if p.encrypted { "age-encrypted" } else { "not encrypted" },
            esc(&a.index.end.index_sha256)
        );
    }
    h.push_str("</table>\n");
}

fn folder_table(h: &mut String, folders: &BTreeMap<String, FolderRow>, total: u64, bytes: u64) {
    h.push_str("<h2>Folders</h2>\n<table id=\"folders\">\n<tr><th>folder</th><th>role</th><th>messages</th><th>size</th><th>first</th><th>last</th></tr>\n");
    for (name, f) in folders {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            esc(f.role.as_deref().unwrap_or("")),
            f.messages,
            esc(&human_bytes(f.bytes)),
            day(f.first),
            day(f.last)
        );
    }
    let _ = writeln!(
        h,
        "<tr class=\"total\"><td>total</td><td></td><td class=\"n\" id=\"total\">{total}</td><td class=\"n\">{}</td><td></td><td></td></tr>\n</table>",
        esc(&human_bytes(bytes))
    );
}

/// A bar per month from the first to the last (empty months included), as SVG.
fn chart(months: &BTreeMap<(i32, u32), u64>) -> String {
    let (Some(&(y0, m0)), Some(&(y1, m1))) = (months.keys().next(), months.keys().last()) else {
        return "<p>No dated messages.</p>\n".into();
    };
    let mut bars = Vec::new();
    let (mut y, mut m) = (y0, m0);
    while (y, m) <= (y1, m1) {
        bars.push(((y, m), months.get(&(y, m)).copied().unwrap_or(0)));
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    let max = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    let (w, ht, left, right, bottom) = (960.0_f64, 220.0_f64, 40.0_f64, 30.0_f64, 30.0_f64);
    let step = (w - left - right) / bars.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg viewBox=\"0 0 {w} {}\" width=\"100%\" role=\"img\" aria-label=\"messages per month\">",
        ht + bottom
    );
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{ht}\" x2=\"{}\" y2=\"{ht}\" stroke=\"#444\"/><text x=\"{}\" y=\"12\" text-anchor=\"end\" class=\"ax\">{max}</text>",
        w - right,
        left - 4.0
    );
    let label_every = (bars.len() / 12).max(1);
    for (i, ((y, m), n)) in bars.iter().enumerate() {
        let bh = (*n as f64 / max as f64) * (ht - 10.0);
        let x = left + i as f64 * step;
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#3a6ea5\"><title>{y}-{m:02}: {n}</title></rect>",
            x + step * 0.1,
            ht - bh,
            (step * 0.8).max(0.5),
            bh
        );
        if i % label_every == 0 {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" class=\"ax\">{y}-{m:02}</text>",
                x + step / 2.0,
                ht + 18.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

const HEAD: &str = "<!DOCTYPE html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>Mail archive receipt</title>
<style>
body { font-family: \"Noto Sans\", \"DejaVu Sans\", \"Liberation Sans\", sans-serif, \"Noto Sans CJK JP\", \"IPAGothic\", \"IPAexGothic\"; margin: 2em auto; max-width: 70em; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.lead { font-size: 1.1em; }
.verdict { padding: 0.6em 1em; border-radius: 6px; }
.verdict.ok { background: #e5f5e5; border: 1px solid #5a5; }
.verdict.bad { background: #fbe5e5; border: 1px solid #c44; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; }
code.hash { font-size: 0.8em; word-break: break-all; }
.findings li.error { color: #a00; }
.ax { font-size: 11px; fill: #444; }
footer { margin-top: 2em; font-size: 0.85em; color: #555; }
</style>
</head>
<body>
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_controls() {
        assert_eq!(
            esc("<script>\"x\" & 'y'\u{1b}"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;\\u{1b}"
        );
        assert_eq!(esc("送信済みメール"), "送信済みメール");
    }

    #[test]
    fn keeps_the_ten_newest_newest_first() {
        let recs: Vec<crate::archive::MessageRecord> = (0..25)
            .map(|i| {
                serde_json::from_value(serde_json::json!({
                    "folder": "INBOX", "path": format!("p{i}"), "size": 1, "sha256": "",
                    "flags": [], "internaldate": null, "message_id": null, "date": null,
                    "from": null, "subject": format!("s{i}"),
                    "source": {"kind": "local", "path": "x"}, "source_size": null
                }))
                .unwrap()
            })
            .collect();
        let mut v = Vec::new();
        for (i, m) in recs.iter().enumerate() {
            // Out of order: 0, 7, 14, 21, 3, ...
            let k = (i * 7) % 25;
            keep_newest(
                &mut v,
                DateTime::from_timestamp(k as i64 * 1000, 0).unwrap(),
                m,
            );
        }
        let times: Vec<i64> = v.iter().map(|x| x.0.timestamp() / 1000).collect();
        assert_eq!(times, (15..25).rev().collect::<Vec<i64>>());
    }

    #[test]
    fn the_chart_has_a_bar_for_every_month_between_first_and_last() {
        let mut m = BTreeMap::new();
        m.insert((2023, 11), 3);
        m.insert((2024, 2), 5);
        let svg = chart(&m);
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("<title>2023-12: 0</title>"));
        assert!(svg.contains("<title>2024-02: 5</title>"));
    }
}
