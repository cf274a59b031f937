//! `verify --against URL`: an archive chain compared with a live IMAP server, read-only
//! (EXAMINE, `BODY.PEEK`). Folders pair up by name, else by special-use role, else by
//! the name `import` gives them on this server (another delimiter, an `INBOX.` prefix,
//! as on Courier), so a restored destination pairs up as it was filled. Where the
//! server folder still has the UIDVALIDITY the archive recorded, messages pair up by UID
//! (the source account); otherwise — a restored destination, a recreated folder — by
//! content: Message-ID + size, or SHA-256 with `--full`.
//!
//! Levels: a server message the archive lacks is always an error (the archive has a
//! gap). An archived message the server lacks is a warning on the source (mail deleted
//! after the export; nothing lost) and an error on a content-matched folder (the
//! destination lacks archived mail). Flag differences are warnings; size or SHA-256
//! differences are errors.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::{message_identity, Finding, Level};
use crate::archive::{Archive, FolderRecord, MessageRecord, SourceRef};
use crate::import::plan::{plan_folders, DestLayout, PlanOptions};
use crate::mail::{flags, headers};
use crate::progress::Progress;
use crate::source::imap::{FetchWhat, FetchedMessage, ImapError, ImapSession, MailboxInfo};
use crate::source::net::{Credentials, Endpoint, TlsOptions};

#[derive(Debug, Clone)]
pub struct AgainstOptions {
    /// Download every message again and compare SHA-256.
    pub full: bool,
    pub timeout: Duration,
    /// Most announced bytes per `UID FETCH` when downloading.
    pub batch_bytes: u64,
}

impl Default for AgainstOptions {
    fn default() -> Self {
        AgainstOptions {
            full: false,
            timeout: crate::source::imap::session::DEFAULT_TIMEOUT,
            batch_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct AgainstSummary {
    pub server: String,
    pub folders_compared: u64,
    pub server_messages: u64,
    pub archive_messages: u64,
    /// Messages whose bytes were downloaded and hashed (`--full`).
    pub bodies_compared: u64,
    /// Folders compared by content because their UIDVALIDITY differs from the archive's.
    pub content_matched_folders: Vec<String>,
}

/// One archived message with the archive holding it.
struct Rec<'a> {
    archive: String,
    m: &'a MessageRecord,
    /// SHA-256 of the message with every bare LF made CRLF, when that differs: what a
    /// server that stores CRLF (Dovecot, Cyrus) serves back after an import of mail
    /// archived from Maildir or mbox.
    crlf_sha: Option<String>,
}

/// One archive folder as the chain knows it.
struct ArchFolder<'a> {
    name: String,
    special_use: Option<String>,
    uidvalidity: Option<u32>,
    recs: Vec<Rec<'a>>,
}

fn finding(
    level: Level,
    code: &'static str,
    archive: &str,
    folder: &str,
    message: Option<String>,
    detail: String,
) -> Finding {
    Finding {
        level,
        code,
        archive: archive.to_string(),
        folder: Some(folder.to_string()),
        message,
        detail,
    }
}

/// Compares the chain `archives` with the account at `ep`.
pub async fn verify_against(
    archives: &[Archive],
    ep: &Endpoint,
    creds: &Credentials,
    tls: &TlsOptions,
    opts: &AgainstOptions,
    progress: &Progress,
) -> Result<(Vec<Finding>, AgainstSummary), ImapError> {
    let server = ep.to_string();
    let mut sum = AgainstSummary {
        server: server.clone(),
        ..Default::default()
    };
    let mut out = Vec::new();
    // The chain's folders, newest facts last.
    let mut folders: Vec<ArchFolder> = Vec::new();
    let mut records: Vec<FolderRecord> = Vec::new();
    for a in archives {
        for f in a.index.folders.iter().filter(|f| f.selectable) {
            if !records.iter().any(|r| r.name == f.name) {
                records.push(f.clone());
            }
            match folders.iter_mut().find(|x| x.name == f.name) {
                Some(x) => {
                    if f.uidvalidity.is_some() {
                        x.uidvalidity = f.uidvalidity;
                    }
                    x.special_use = x.special_use.take().or(f.special_use.clone());
                }
                None => folders.push(ArchFolder {
                    name: f.name.clone(),
                    special_use: f.special_use.clone(),
                    uidvalidity: f.uidvalidity,
                    recs: Vec::new(),
                }),
            }
        }
    }
    for a in archives {
        let name = a.path.display().to_string();
        let crlf = if opts.full {
            crlf_shas(a)
        } else {
            HashMap::new()
        };
        for (i, m) in a.index.messages.iter().enumerate() {
            if let Some(f) = folders.iter_mut().find(|f| f.name == m.folder) {
                f.recs.push(Rec {
                    archive: name.clone(),
                    m,
                    crlf_sha: crlf.get(&i).cloned(),
                });
            }
        }
    }
    sum.archive_messages = folders.iter().map(|f| f.recs.len() as u64).sum();

    let mut s = ImapSession::connect_with_timeout(ep, creds, tls, opts.timeout).await?;
    let all = s.list().await?;
    let namespace = s.namespace().await?;
    let listed: Vec<MailboxInfo> = all.iter().filter(|m| m.selectable).cloned().collect();
    // Pair folders: by name first, then by role for what is left.
    let mut pairs: Vec<(usize, Option<MailboxInfo>)> = Vec::new();
    let mut used: HashSet<String> = HashSet::new();
    for (i, f) in folders.iter().enumerate() {
        if let Some(m) = listed.iter().find(|m| m.name == f.name) {
            used.insert(m.raw_name.clone());
            pairs.push((i, Some(m.clone())));
        } else {
            pairs.push((i, None));
        }
    }
    for (i, p) in pairs.iter_mut() {
        if p.is_some() {
            continue;
        }
        let Some(role) = &folders[*i].special_use else {
            continue;
        };
        if let Some(m) = listed.iter().find(|m| {
            !used.contains(&m.raw_name)
                && m.special_use
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(role))
        }) {
            used.insert(m.raw_name.clone());
            *p = Some(m.clone());
        }
    }
    if pairs.iter().any(|(_, p)| p.is_none()) {
        let layout = DestLayout::from_listing(&all, namespace, false);
        // A plan that cannot be made (a name no server could hold) pairs nothing more;
        // those folders are reported missing below.
        if let Ok(plan) = plan_folders(&records, &layout, &PlanOptions::default()) {
            for (i, p) in pairs.iter_mut().filter(|(_, p)| p.is_none()) {
                let Some(fp) = plan.for_source(&folders[*i].name) else {
                    continue;
                };
                if let Some(m) = listed
                    .iter()
                    .find(|m| !used.contains(&m.raw_name) && m.name == fp.dest)
                {
                    used.insert(m.raw_name.clone());
                    *p = Some(m.clone());
                }
            }
        }
    }
    let last = archives
        .last()
        .map(|a| a.path.display().to_string())
        .unwrap_or_default();
    for (i, p) in &pairs {
        let f = &folders[*i];
        let Some(m) = p else {
            if !f.recs.is_empty() {
                out.push(finding(
                    Level::Error,
                    "folder-missing-on-server",
                    &f.recs[0].archive,
                    &f.name,
                    None,
                    format!(
                        "{server} has no folder {:?} (nor one with its role); its {} archived messages are not there",
                        f.name,
                        f.recs.len()
                    ),
                ));
            } else {
                out.push(finding(
                    Level::Warning,
                    "folder-missing-on-server",
                    &last,
                    &f.name,
                    None,
                    format!("{server} has no folder {:?} (it was empty)", f.name),
                ));
            }
            continue;
        };
        progress.set_message(f.name.clone());
        compare_folder(&mut s, f, m, opts, &server, progress, &mut out, &mut sum).await?;
        sum.folders_compared += 1;
    }
    // Server folders the archive does not know.
    for m in listed.iter().filter(|m| !used.contains(&m.raw_name)) {
        let st = s.examine(&m.raw_name).await?;
        sum.server_messages += st.exists as u64;
        if st.exists > 0 {
            out.push(finding(
                Level::Error,
                "folder-not-archived",
                &server,
                &m.name,
                None,
                format!(
                    "the server folder holds {} messages and the archive has no such folder",
                    st.exists
                ),
            ));
        }
    }
    let _ = s.logout().await;
    Ok((out, sum))
}

/// The content key without `--full`: the Message-ID; for a message without one, its
/// Date, From and Subject; failing all, its size. Sizes of matches are compared
/// afterwards, because mail archived from Maildir or mbox (LF line ends) comes back from
/// a CRLF server larger.
fn content_key(s: &headers::Summary, size: u64) -> String {
    match (&s.message_id, &s.date, &s.from, &s.subject) {
        (Some(id), ..) => format!("id:{id}"),
        (None, None, None, None) => format!("size:{size}"),
        (None, d, f, subj) => format!(
            "hdr:{}\u{0}{}\u{0}{}",
            d.as_deref().unwrap_or(""),
            f.as_deref().unwrap_or(""),
            subj.as_deref().unwrap_or("")
        ),
    }
}

/// Record index → SHA-256 of the CRLF form, for records whose bytes hold a bare LF.
fn crlf_shas(a: &Archive) -> HashMap<usize, String> {
    let mut out = HashMap::new();
    let _ = a.stream(|member| -> Result<(), crate::archive::ReadError> {
        if let crate::archive::reader::Member::Message { record, bytes } = member {
            let bare_lf = bytes
                .iter()
                .enumerate()
                .any(|(i, &c)| c == b'\n' && (i == 0 || bytes[i - 1] != b'\r'));
            if bare_lf {
                let mut v = Vec::with_capacity(bytes.len() + bytes.len() / 32);
                for (i, &c) in bytes.iter().enumerate() {
                    if c == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
                        v.push(b'\r');
                    }
                    v.push(c);
                }
                out.insert(record, crate::archive::sha256_hex(&v));
            }
        }
        Ok(())
    });
    out
}

fn norm_flags(v: &[String]) -> Vec<String> {
    let mut f = flags::normalize(v);
    f.sort();
    f
}

#[allow(clippy::too_many_arguments)]
async fn compare_folder(
    s: &mut ImapSession,
    f: &ArchFolder<'_>,
    m: &MailboxInfo,
    opts: &AgainstOptions,
    server: &str,
    progress: &Progress,
    out: &mut Vec<Finding>,
    sum: &mut AgainstSummary,
) -> Result<(), ImapError> {
    let st = s.examine(&m.raw_name).await?;
    let msgs: Vec<FetchedMessage> = if st.exists == 0 {
        Vec::new()
    } else {
        s.uid_fetch_all("1:*", FetchWhat::MetaMessageId).await?
    };
    let msgs: Vec<FetchedMessage> = msgs.into_iter().filter(|x| x.uid.is_some()).collect();
    sum.server_messages += msgs.len() as u64;
    let uv = st.uidvalidity.unwrap_or(0);
    let by_uid_recs: HashMap<u32, &Rec> = f
        .recs
        .iter()
        .filter_map(|r| match r.m.source {
            SourceRef::Imap { uidvalidity, uid } if uidvalidity == uv => Some((uid, r)),
            _ => None,
        })
        .collect();
    let mid_of = |x: &FetchedMessage| {
        x.header_fields
            .as_deref()
            .and_then(|h| headers::summarize(h).message_id)
    };
    // Equal UIDVALIDITYs can be a coincidence (Dovecot derives them from the clock): UIDs
    // only pair messages when every pair agrees on its Message-ID.
    let uids_agree = msgs.iter().all(|x| {
        by_uid_recs
            .get(&x.uid.unwrap())
            .is_none_or(|r| mid_of(x) == r.m.message_id)
    });
    let source_mode = st.uidvalidity.is_some()
        && uids_agree
        && (!by_uid_recs.is_empty() || (f.recs.is_empty() && f.uidvalidity == st.uidvalidity));
    if !source_mode {
        sum.content_matched_folders.push(f.name.clone());
    }
    let folder_label = if m.name == f.name {
        f.name.clone()
    } else {
        format!("{} (server {})", f.name, m.name)
    };
    let server_id = |x: &FetchedMessage| format!("server UID {}", x.uid.unwrap_or(0));
    let mut to_hash: Vec<(u32, &Rec)> = Vec::new();
    let mut leftover_server: Vec<&FetchedMessage> = Vec::new();
    let mut matched_recs: HashSet<*const MessageRecord> = HashSet::new();
    if source_mode {
        for x in &msgs {
            let uid = x.uid.unwrap();
            let Some(r) = by_uid_recs.get(&uid) else {
                leftover_server.push(x);
                continue;
            };
            matched_recs.insert(r.m as *const _);
            let size = x.size.map(u64::from);
            if size.is_some_and(|n| n != r.m.size) {
                out.push(finding(
                    Level::Error,
                    "size-differs",
                    &r.archive,
                    &folder_label,
                    Some(message_identity(r.m)),
                    format!(
                        "the server says {} bytes, the archive holds {}",
                        size.unwrap(),
                        r.m.size
                    ),
                ));
            }
            compare_flags(x, r, &folder_label, out);
            if opts.full {
                to_hash.push((uid, r));
            }
        }
    } else {
        leftover_server = msgs.iter().collect();
    }
    // Content matching for what UIDs could not pair (all of it on a restored folder).
    let rest_recs: Vec<&Rec> = f
        .recs
        .iter()
        .filter(|r| !matched_recs.contains(&(r.m as *const _)))
        .collect();
    let server_shas: HashMap<u32, String> = if opts.full {
        let mut want: Vec<(u32, u64)> = to_hash
            .iter()
            .map(|(u, r)| (*u, r.m.size))
            .chain(
                leftover_server
                    .iter()
                    .map(|x| (x.uid.unwrap(), x.size.unwrap_or(0) as u64)),
            )
            .collect();
        want.sort_unstable();
        hash_bodies(s, &want, opts, progress, sum).await?
    } else {
        HashMap::new()
    };
    for (uid, r) in &to_hash {
        match server_shas.get(uid) {
            Some(sha) if *sha == r.m.sha256 || Some(sha) == r.crlf_sha.as_ref() => {}
            Some(sha) => out.push(finding(
                Level::Error,
                "content-differs",
                &r.archive,
                &folder_label,
                Some(message_identity(r.m)),
                format!(
                    "the server's copy hashes to {sha}, the archive's to {}",
                    r.m.sha256
                ),
            )),
            None => out.push(finding(
                Level::Error,
                "not-fetched",
                &r.archive,
                &folder_label,
                Some(message_identity(r.m)),
                "the server did not send this message when asked again".into(),
            )),
        }
    }
    let keys_of_rec = |r: &Rec| -> Vec<String> {
        if opts.full {
            std::iter::once(r.m.sha256.clone())
                .chain(r.crlf_sha.clone())
                .collect()
        } else {
            let sum = headers::Summary {
                message_id: r.m.message_id.clone(),
                date: r.m.date.clone(),
                from: r.m.from.clone(),
                subject: r.m.subject.clone(),
            };
            vec![content_key(&sum, r.m.size)]
        }
    };
    let key_of_server = |x: &FetchedMessage| {
        if opts.full {
            server_shas
                .get(&x.uid.unwrap())
                .cloned()
                .unwrap_or_default()
        } else {
            let sum = x
                .header_fields
                .as_deref()
                .map(headers::summarize)
                .unwrap_or_default();
            content_key(&sum, x.size.unwrap_or(0) as u64)
        }
    };
    // A record may sit under two keys (its bytes and their CRLF form); `claimed` keeps
    // it from matching twice.
    let mut pool: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in rest_recs.iter().enumerate() {
        for k in keys_of_rec(r) {
            pool.entry(k).or_default().push(i);
        }
    }
    let mut claimed = vec![false; rest_recs.len()];
    for x in &leftover_server {
        let k = key_of_server(x);
        let hit = pool.get_mut(&k).and_then(|v| {
            while let Some(i) = v.pop() {
                if !claimed[i] {
                    return Some(i);
                }
            }
            None
        });
        match hit {
            Some(i) => {
                claimed[i] = true;
                let r = rest_recs[i];
                compare_flags(x, r, &folder_label, out);
                let size = x.size.unwrap_or(0) as u64;
                if !opts.full && size != r.m.size {
                    // Mail archived from an IMAP server is already CRLF: a size change is
                    // an altered message. From Maildir/mbox it may be line ends.
                    let imap = matches!(r.m.source, SourceRef::Imap { .. });
                    out.push(finding(
                        if imap { Level::Error } else { Level::Warning },
                        "size-differs",
                        &r.archive,
                        &folder_label,
                        Some(format!("{}; {}", message_identity(r.m), server_id(x))),
                        if imap {
                            format!("the server holds {size} bytes, the archive {}", r.m.size)
                        } else {
                            format!(
                                "the server holds {size} bytes, the archive {} (line ends converted to CRLF? --full tells)",
                                r.m.size
                            )
                        },
                    ));
                }
            }
            None => out.push(finding(
                Level::Error,
                "missing-from-archive",
                server,
                &folder_label,
                Some(server_id(x)),
                format!(
                    "on the server ({} bytes{}), not in the archive",
                    x.size.unwrap_or(0),
                    x.header_fields
                        .as_deref()
                        .and_then(|h| headers::summarize(h).message_id)
                        .map(|id| format!(", Message-ID {id}"))
                        .unwrap_or_default()
                ),
            )),
        }
    }
    let gone_level = if source_mode {
        Level::Warning
    } else {
        Level::Error
    };
    // Whatever no server message claimed, by UID or by content.
    for r in rest_recs
        .iter()
        .zip(&claimed)
        .filter(|(_, c)| !**c)
        .map(|(r, _)| *r)
    {
        out.push(finding(
            gone_level,
            "gone-from-server",
            &r.archive,
            &folder_label,
            Some(message_identity(r.m)),
            if source_mode {
                "archived, no longer on the server (deleted after the export?)".into()
            } else {
                "archived, not on the server".into()
            },
        ));
    }
    Ok(())
}

fn compare_flags(x: &FetchedMessage, r: &Rec, folder: &str, out: &mut Vec<Finding>) {
    let Some(server_flags) = &x.flags else { return };
    let (a, b) = (norm_flags(server_flags), norm_flags(&r.m.flags));
    if a != b {
        out.push(finding(
            Level::Warning,
            "flags-differ",
            &r.archive,
            folder,
            Some(message_identity(r.m)),
            format!("server flags ({}), archived ({})", a.join(" "), b.join(" ")),
        ));
    }
}

/// Downloads the given UIDs (batched by size) and returns their SHA-256.
async fn hash_bodies(
    s: &mut ImapSession,
    want: &[(u32, u64)],
    opts: &AgainstOptions,
    progress: &Progress,
    sum: &mut AgainstSummary,
) -> Result<HashMap<u32, String>, ImapError> {
    let mut out = HashMap::new();
    let mut i = 0;
    progress.inc_length(want.iter().map(|w| w.1).sum());
    while i < want.len() {
        let mut j = i;
        let mut bytes = 0;
        while j < want.len() && (j == i || bytes + want[j].1 <= opts.batch_bytes) && j - i < 500 {
            bytes += want[j].1;
            j += 1;
        }
        let set: Vec<String> = want[i..j].iter().map(|w| w.0.to_string()).collect();
        for x in s.uid_fetch_all(&set.join(","), FetchWhat::Full).await? {
            if let (Some(uid), Some(body)) = (x.uid, x.body) {
                progress.inc(body.len() as u64);
                sum.bodies_compared += 1;
                out.insert(uid, crate::archive::sha256_hex(&body));
            }
        }
        i = j;
    }
    Ok(out)
}
