//! `verify --against URL`: an archive chain compared with a live IMAP server, read-only
//! (EXAMINE, `BODY.PEEK`). Folders pair up by name, else by special-use role, else by
//! the name `import` gives them on this server (another delimiter, an `INBOX.` prefix,
//! as on Courier), so a restored destination pairs up as it was filled. Where the
//! server folder still has the UIDVALIDITY the archive recorded, messages pair up by UID
//! (the source account); otherwise — a restored destination, a recreated folder — by
//! identity, through [`crate::reconcile`], the engine the importer uses: Message-ID and
//! size where the Message-ID tells messages apart, the bytes where it does not (shared
//! or missing Message-IDs), and with `--full` the bytes of every message.
//!
//! Levels: a server message the archive lacks is always an error (the archive has a
//! gap). An archived message the server lacks is a warning on the source (mail deleted
//! after the export; nothing lost) and an error on a content-matched folder (the
//! destination lacks archived mail). Flag differences are warnings; size or SHA-256
//! differences are errors, except where the server holds a form of the message a server
//! is known to produce (NUL, 8-bit header bytes, line ends: a warning).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{message_identity, Finding, Level};
use crate::archive::reader::MessageBody;
use crate::archive::readings::{Reading, Readings};
use crate::archive::{Archive, FolderRecord, MessageRecord, SourceRef};
use crate::import::plan::{plan_folders, source_namespace, DestLayout, PlanOptions};
use crate::mail::flags;
use crate::mail::identity::{self, MsgKey};
use crate::progress::Progress;
use crate::reconcile::{self, Census, Held, Match};
use crate::source::imap::session::{FolderRead, FolderReadOut};
use crate::source::imap::{FetchWhat, FolderStatus, ImapError, ImapSession, MailboxInfo};
use crate::source::net::{Credentials, Endpoint, TlsOptions};

#[derive(Debug, Clone)]
pub struct AgainstOptions {
    /// Download every message again and compare SHA-256.
    pub full: bool,
    pub timeout: Duration,
    /// Most announced bytes per `UID FETCH` when downloading.
    pub batch_bytes: u64,
    /// `--folder`/`--exclude`: folders compared, by archive name and by server name.
    pub filter: crate::export::FolderFilter,
    /// Most archived messages keyed at once (`--messages-per-pass`, see [`KEYS_PER_PASS`]).
    pub keys_per_pass: usize,
}

impl Default for AgainstOptions {
    fn default() -> Self {
        AgainstOptions {
            full: false,
            timeout: crate::source::imap::session::DEFAULT_TIMEOUT,
            batch_bytes: 16 << 20,
            filter: Default::default(),
            keys_per_pass: KEYS_PER_PASS,
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

/// One archived message: the archive holding it and its record's place there (read
/// again when needed, so a million records are not held parsed).
struct Rec<'a> {
    archive: &'a Archive,
    idx: usize,
    key: MsgKey,
}

impl Rec<'_> {
    fn m(&self) -> MessageRecord {
        self.archive.record(self.idx)
    }

    fn archive_name(&self) -> String {
        self.archive.path.display().to_string()
    }
}

/// One archive folder as the chain knows it.
struct ArchFolder<'a> {
    name: String,
    special_use: Option<String>,
    uidvalidity: Option<u32>,
    /// Its messages: (archive in the chain, record).
    members: Vec<(u32, u32)>,
    /// Their keys, made only while the folder is compared ([`key_folders`]): a
    /// million keys at once were most of this command's memory.
    recs: Vec<Rec<'a>>,
    /// The server is the account the archive was made from: only there can equal
    /// UIDVALIDITYs mean the same folder (another account may have one by chance:
    /// Dovecot and Courier derive them from the clock).
    at_source: bool,
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
    chain: Arc<Vec<Archive>>,
    ep: &Endpoint,
    creds: &Credentials,
    tls: &TlsOptions,
    opts: &AgainstOptions,
    progress: &Progress,
) -> Result<(Vec<Finding>, AgainstSummary), ImapError> {
    let archives: &[Archive] = &chain;
    // Keys are made on a thread of their own, folder after folder, part after part.
    let readings = Readings::start(chain.clone());
    let server = ep.to_string();
    let mut sum = AgainstSummary {
        server: server.clone(),
        ..Default::default()
    };
    let mut out = Vec::new();
    let at_source = archives
        .iter()
        .any(|a| Endpoint::parse(&a.index.header.source).is_ok_and(|s| s.same_account(ep)));
    // The chain's folders, newest facts last.
    let mut folders: Vec<ArchFolder> = Vec::new();
    let mut records: Vec<FolderRecord> = Vec::new();
    for a in archives {
        for f in a
            .index
            .folders
            .iter()
            .filter(|f| f.selectable && opts.filter.matches(&f.name))
        {
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
                    members: Vec::new(),
                    recs: Vec::new(),
                    at_source,
                }),
            }
        }
    }
    for (ai, a) in archives.iter().enumerate() {
        for (i, m) in a.index.messages.iter().enumerate() {
            if let Some(f) = folders.iter_mut().find(|f| f.name == m.folder) {
                f.members.push((ai as u32, i as u32));
            }
        }
    }
    sum.archive_messages = folders.iter().map(|f| f.members.len() as u64).sum();

    let mut s = ImapSession::connect_with_timeout(ep, creds, tls, opts.timeout).await?;
    let all = s.list().await?;
    let namespace = s.namespace().await?;
    let listed: Vec<MailboxInfo> = all
        .iter()
        .filter(|m| m.selectable && opts.filter.matches(&m.name))
        .cloned()
        .collect();
    // Pair folders: by name first, then by role for what is left.
    let mut pairs: Vec<(usize, Option<MailboxInfo>)> = Vec::new();
    let mut used: HashSet<String> = HashSet::new();
    let mut planned: HashMap<usize, String> = HashMap::new();
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
        let source_ns = source_namespace(
            archives
                .iter()
                .find_map(|a| a.index.header.namespace.as_ref()),
            &records,
        );
        if let Ok(plan) = plan_folders(&records, &source_ns, &layout, &PlanOptions::default()) {
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
                } else {
                    planned.insert(*i, fp.dest.clone());
                }
            }
        }
    }
    // A listing is not the last word: Dovecot's LIST can leave out a folder another
    // session has just made (its mailbox list index catches up later; seen in the test
    // suite right after an export). A folder still unpaired is opened read-only by the
    // name it would have here before it counts as missing: EXAMINE answers from the
    // folder itself.
    // All of them in one pipeline: one round trip, not one per folder.
    let delimiter = all.iter().find_map(|m| m.delimiter);
    let mut look: Vec<(usize, String, String)> = Vec::new();
    for (i, _) in pairs.iter().filter(|(_, p)| p.is_none()) {
        let name = planned
            .remove(i)
            .unwrap_or_else(|| folders[*i].name.clone());
        let raw_name = crate::mail::utf7::encode(&name);
        if !used.contains(&raw_name) && !look.iter().any(|l| l.2 == raw_name) {
            look.push((*i, name, raw_name));
        }
    }
    let reqs: Vec<FolderRead> = look.iter().map(|l| examine_only(&l.2)).collect();
    for ((i, name, raw_name), opened) in look.into_iter().zip(s.read_folders(&reqs).await?) {
        match opened.status {
            Ok(_) => {
                crate::log::event!("{name}: not in the server's LIST, but EXAMINE opens it");
                used.insert(raw_name.clone());
                pairs[i].1 = Some(MailboxInfo {
                    raw_name,
                    name,
                    delimiter,
                    selectable: true,
                    subscribed: false,
                    special_use: folders[i].special_use.clone(),
                });
            }
            Err(ImapError::Folder { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let last = archives
        .last()
        .map(|a| a.path.display().to_string())
        .unwrap_or_default();
    // Folders go in runs of at most KEYS_PER_PASS archived messages: keyed in one pass
    // over the archives, opened and read in one pipeline, compared, dropped.
    let counts: Vec<u64> = pairs
        .iter()
        .map(|(i, p)| p.as_ref().map_or(0, |_| folders[*i].members.len() as u64))
        .collect();
    let cap = opts.keys_per_pass.max(1);
    for run in crate::census::pipelines(&counts, cap as u64) {
        let group: Vec<(usize, &MailboxInfo)> = pairs[run.clone()]
            .iter()
            .filter_map(|(i, p)| p.as_ref().map(|m| (*i, m)))
            .collect();
        // A folder over the cap (it runs alone) is compared in parts of the cap: each
        // part's keys against the folder less what earlier parts paired, the server
        // messages nothing paired reported by the last. Not with --full, whose
        // downloads would then be repeated for every part.
        if let [(i, m)] = group[..] {
            let n = folders[i].members.len();
            if n > cap && !opts.full {
                progress.set_message(folders[i].name.clone());
                // The folder is read once: each part claims from the census the earlier
                // parts claimed from (reading it again for each part made the time
                // grow with the square of the folder).
                let req = FolderRead {
                    what: Some(FetchWhat::MetaMessageId),
                    ..examine_only(&m.raw_name)
                };
                let ambiguous = ambiguous_of(archives, &folders, &[(i, 0..n)]);
                let opened = s.read_folders_as::<Held>(&[req]).await?.remove(0);
                let st = opened.status?;
                let mut census = crate::import::census_of(opened.messages?);
                for lo in (0..n).step_by(cap) {
                    let hi = (lo + cap).min(n);
                    let group = [(i, lo..hi)];
                    key_folders(&readings, archives, &mut folders, &group, ambiguous.clone()).await;
                    let f = &folders[i];
                    read_bytes(&mut s, m, &mut census, &f.recs, opts, progress, &mut sum).await?;
                    let part = Part {
                        first: lo == 0,
                        last: hi == n,
                    };
                    compare_folder(
                        f,
                        m,
                        &st,
                        &mut census,
                        part,
                        false,
                        &server,
                        &mut out,
                        &mut sum,
                    );
                    folders[i].recs = Vec::new();
                    crate::alloc::give_back();
                }
                sum.folders_compared += 1;
                continue;
            }
        }
        let ids: Vec<usize> = group.iter().map(|g| g.0).collect();
        if ids.iter().any(|&i| !folders[i].members.is_empty()) {
            let whole: Vec<(usize, Range<usize>)> = ids
                .iter()
                .map(|&i| (i, 0..folders[i].members.len()))
                .collect();
            let ambiguous = ambiguous_of(archives, &folders, &whole);
            key_folders(&readings, archives, &mut folders, &whole, ambiguous).await;
        }
        let reqs: Vec<FolderRead> = group
            .iter()
            .map(|(_, m)| FolderRead {
                what: Some(FetchWhat::MetaMessageId),
                ..examine_only(&m.raw_name)
            })
            .collect();
        let mut read = s.read_folders_as::<Held>(&reqs).await?.into_iter();
        for (i, p) in &pairs[run] {
            let f = &folders[*i];
            let Some(m) = p else {
                if let Some(&(ai, _)) = f.members.first() {
                    out.push(finding(
                    Level::Error,
                    "folder-missing-on-server",
                    &archives[ai as usize].path.display().to_string(),
                    &f.name,
                    None,
                    format!(
                        "{server} has no folder {:?} (nor one with its role); its {} archived messages are not there",
                        f.name,
                        f.members.len()
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
            let f = &folders[*i];
            progress.set_message(f.name.clone());
            crate::log::event!(
                "{}: comparing {} archived message(s) with {} on {server}",
                f.name,
                f.recs.len(),
                m.raw_name
            );
            let opened = read.next().expect("a read per paired folder");
            let (st, mut census) =
                census(&mut s, m, opened, &f.recs, opts, progress, &mut sum).await?;
            compare_folder(
                f,
                m,
                &st,
                &mut census,
                WHOLE,
                opts.full,
                &server,
                &mut out,
                &mut sum,
            );
            folders[*i].recs = Vec::new();
            crate::alloc::give_back();
            sum.folders_compared += 1;
        }
    }
    // Server folders the archive does not know (counted in one pipeline).
    let unknown: Vec<&MailboxInfo> = listed
        .iter()
        .filter(|m| !used.contains(&m.raw_name))
        .collect();
    let reqs: Vec<FolderRead> = unknown.iter().map(|m| examine_only(&m.raw_name)).collect();
    for (m, opened) in unknown.into_iter().zip(s.read_folders(&reqs).await?) {
        let st = opened.status?;
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

/// Most archived messages keyed at once (a folder larger than this is compared in
/// parts, read from the server once): ~200 bytes a key, beside the census of the folder
/// compared in parts (~180 bytes a message of it on the server).
pub const KEYS_PER_PASS: usize = 50_000;

/// Makes the keys of the members `range` of each folder of `group`, each key put
/// straight in its place (a map of them beside the folder's keys held both at once).
/// One reading of the chain, going on from where the previous one stopped.
async fn key_folders<'a>(
    readings: &Readings<KeyRun>,
    archives: &'a [Archive],
    folders: &mut [ArchFolder<'a>],
    group: &[(usize, Range<usize>)],
    ambiguous: Ambiguous,
) {
    let keys = readings.read(KeyRun::new(folders, group, ambiguous)).await;
    for ((i, range), keys) in group.iter().zip(keys) {
        let f = &mut folders[*i];
        f.recs = f.members[range.clone()]
            .iter()
            .zip(keys)
            .map(|(&(ai, idx), key)| {
                let (a, idx) = (&archives[ai as usize], idx as usize);
                Rec {
                    archive: a,
                    idx,
                    key: key.unwrap_or_else(|| key_from_index(&a.record(idx))),
                }
            })
            .collect();
    }
}

/// The reading that keys a group's members.
struct KeyRun {
    /// ((archive, record), (folder of the group, position in its range)), sorted.
    wanted: Vec<((u32, u32), (u32, u32))>,
    keys: Vec<Vec<Option<MsgKey>>>,
    ambiguous: Ambiguous,
    left: usize,
}

/// Per archive, the ambiguous Message-IDs of each folder of a group.
type Ambiguous = Vec<HashMap<String, HashSet<String>>>;

/// The ambiguous Message-IDs of the folders of `group`: read from the index before
/// the group's census (for a folder in parts, once for all of them), as finding them
/// holds a hash of every archived message of the folder for a moment.
fn ambiguous_of(
    archives: &[Archive],
    folders: &[ArchFolder<'_>],
    group: &[(usize, Range<usize>)],
) -> Ambiguous {
    let names: HashSet<&str> = group
        .iter()
        .map(|(i, _)| folders[*i].name.as_str())
        .collect();
    archives
        .iter()
        .map(|a| ambiguous_by_folder(a, &names))
        .collect()
}

impl KeyRun {
    fn new(
        folders: &[ArchFolder<'_>],
        group: &[(usize, Range<usize>)],
        ambiguous: Ambiguous,
    ) -> KeyRun {
        let mut wanted: Vec<((u32, u32), (u32, u32))> = group
            .iter()
            .enumerate()
            .flat_map(|(gi, (i, range))| {
                folders[*i].members[range.clone()]
                    .iter()
                    .enumerate()
                    .map(move |(pos, &at)| (at, (gi as u32, pos as u32)))
            })
            .collect();
        wanted.sort_unstable();
        KeyRun {
            keys: group.iter().map(|(_, r)| vec![None; r.len()]).collect(),
            left: wanted.len(),
            wanted,
            ambiguous,
        }
    }
}

impl Reading for KeyRun {
    type Output = Vec<Vec<Option<MsgKey>>>;

    fn first(&self) -> Option<(usize, usize)> {
        self.wanted
            .first()
            .map(|&((a, r), _)| (a as usize, r as usize))
    }

    fn left(&self) -> usize {
        self.left
    }

    fn message(
        &mut self,
        archives: &[Archive],
        ai: usize,
        record: usize,
        mut body: MessageBody<'_>,
    ) {
        let at = (ai as u32, record as u32);
        let Ok(w) = self.wanted.binary_search_by_key(&at, |x| x.0) else {
            return;
        };
        let (gi, pos) = self.wanted[w].1;
        let slot = &mut self.keys[gi as usize][pos as usize];
        if slot.is_some() {
            return;
        }
        self.left = self.left.saturating_sub(1);
        let m = &archives[ai].record(record);
        let mut sha = [0u8; 32];
        if hex::decode_to_slice(&m.sha256, &mut sha).is_err() {
            return;
        }
        let none = HashSet::new();
        let amb = self.ambiguous[ai].get(m.folder.as_str()).unwrap_or(&none);
        let date = m.internaldate_secs();
        // A message that cannot be read is keyed from the index.
        *slot = key_of_body(&mut body, m.size, sha, amb, date).ok();
    }

    /// What is left unkeyed is keyed from the index.
    fn damaged(&mut self, _: usize, _: crate::archive::ReadError) {}

    fn finish(self) -> Self::Output {
        self.keys
    }
}

/// Message-IDs shared by different archived messages of each folder of `names` (see
/// [`identity::ambiguous_ids`]), by folder name.
fn ambiguous_by_folder(a: &Archive, names: &HashSet<&str>) -> HashMap<String, HashSet<String>> {
    let mut by: HashMap<String, identity::AmbiguousIds> = HashMap::new();
    for m in a.index.messages.iter() {
        if names.contains(m.folder.as_str()) {
            by.entry(m.folder)
                .or_default()
                .add(m.message_id.as_deref(), &m.sha256);
        }
    }
    by.into_iter().map(|(f, a)| (f, a.finish())).collect()
}

/// The key of a message streamed out of the archive: in memory when small, else
/// hashed as it streams so memory does not follow its size.
fn key_of_body(
    body: &mut impl std::io::Read,
    size: u64,
    sha: [u8; 32],
    amb: &HashSet<String>,
    date: Option<i64>,
) -> std::io::Result<MsgKey> {
    if size <= identity::IN_MEMORY_MAX {
        let mut v = Vec::with_capacity(size as usize);
        body.read_to_end(&mut v)?;
        return Ok(MsgKey::of(&v, sha, amb, date));
    }
    let mut ks = identity::KeyStream::new(false);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match body.read(&mut buf)? {
            0 => return Ok(ks.finish(amb, date).key),
            n => ks.feed(&buf[..n]),
        }
    }
}

/// A key from the index alone, for a record whose bytes could not be read (the
/// archive's own verification reports why): Message-ID, size and SHA-256.
fn key_from_index(m: &MessageRecord) -> MsgKey {
    let mut sha = [0u8; 32];
    let _ = hex::decode_to_slice(&m.sha256, &mut sha);
    let message_id = m.message_id.as_deref().and_then(identity::norm_message_id);
    identity::KeyParts {
        by_bytes: message_id.is_none(),
        message_id,
        sizes: [m.size; 3],
        exact: [sha; 3],
        forms: Vec::new(),
        altered_sizes: Vec::new(),
        head_loose: [0; 32],
        date: None,
        at_risk: false,
        trace_free: None,
    }
    .into()
}

fn norm_flags(v: &[String]) -> Vec<String> {
    let mut f = flags::normalize(v);
    f.sort();
    f
}

/// A folder read-only, nothing fetched (its status alone).
fn examine_only(raw_name: &str) -> FolderRead {
    FolderRead {
        raw_name: raw_name.to_string(),
        read_only: true,
        what: None,
        unselect: false,
        uids: None,
    }
}

/// What one server folder holds, from its pipelined EXAMINE and `UID FETCH 1:*`: every
/// message's UID, size, flags, INTERNALDATE and Message-ID, and the bytes of those that
/// reconciling must compare by bytes (every message with `--full`), fetched after the
/// folder is opened again (the pipeline left another open).
async fn census(
    s: &mut ImapSession,
    m: &MailboxInfo,
    opened: FolderReadOut<Held>,
    recs: &[Rec<'_>],
    opts: &AgainstOptions,
    progress: &Progress,
    sum: &mut AgainstSummary,
) -> Result<(FolderStatus, Census), ImapError> {
    let st = opened.status?;
    let mut census = crate::import::census_of(opened.messages?);
    read_bytes(s, m, &mut census, recs, opts, progress, sum).await?;
    Ok((st, census))
}

/// Reads the bytes of the messages of `census` that pairing `recs` must compare by
/// bytes (every message with `--full`) and not yet read.
async fn read_bytes(
    s: &mut ImapSession,
    m: &MailboxInfo,
    census: &mut Census,
    recs: &[Rec<'_>],
    opts: &AgainstOptions,
    progress: &Progress,
    sum: &mut AgainstSummary,
) -> Result<(), ImapError> {
    let ambiguous: HashSet<String> = recs
        .iter()
        .filter(|r| r.key.by_bytes)
        .filter_map(|r| r.key.message_id.as_deref().map(String::from))
        .collect();
    let need = census.need_bytes(&ambiguous, &Default::default());
    if need.is_empty() && !opts.full {
        return Ok(());
    }
    s.examine(&m.raw_name).await?;
    if !need.is_empty() {
        s.fetch_bodies(&need, |uid, b| census.set_bytes(uid, b))
            .await?;
    }
    if opts.full {
        let want: Vec<(u32, u64)> = census
            .msgs
            .iter()
            .filter(|m| m.read().is_none())
            .map(|m| (m.uid, m.size()))
            .collect();
        progress.inc_length(want.iter().map(|w| w.1).sum());
        let mut i = 0;
        while i < want.len() {
            let mut j = i;
            let mut bytes = 0;
            while j < want.len() && (j == i || bytes + want[j].1 <= opts.batch_bytes) {
                bytes += want[j].1;
                j += 1;
            }
            let uids: Vec<u32> = want[i..j].iter().map(|w| w.0).collect();
            s.fetch_bodies(&uids, |uid, body| {
                progress.inc(body.len() as u64);
                census.set_bytes(uid, body);
            })
            .await?;
            i = j;
        }
        sum.bodies_compared += census.msgs.iter().filter(|m| m.read().is_some()).count() as u64;
    }
    Ok(())
}

/// Which part of a folder's archived messages a comparison holds: all of them, or one of
/// several (earlier parts have then claimed from the census what they paired).
#[derive(Debug, Clone, Copy)]
struct Part {
    first: bool,
    last: bool,
}

const WHOLE: Part = Part {
    first: true,
    last: true,
};

/// Pairs one archive folder's messages (or `part` of them) with the unclaimed messages
/// of the server folder's census, claiming them, and reports the differences. A server
/// message no archived one pairs with is reported by the last part only.
#[allow(clippy::too_many_arguments)]
fn compare_folder(
    f: &ArchFolder<'_>,
    m: &MailboxInfo,
    st: &FolderStatus,
    census: &mut Census,
    part: Part,
    full: bool,
    server: &str,
    out: &mut Vec<Finding>,
    sum: &mut AgainstSummary,
) {
    if part.first {
        sum.server_messages += census.msgs.len() as u64;
    }
    let uv = st.uidvalidity.unwrap_or(0);
    let by_uid_recs: HashMap<u32, usize> = f
        .recs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.m().source {
            SourceRef::Imap { uidvalidity, uid } if uidvalidity == uv => Some((uid, i)),
            _ => None,
        })
        .collect();
    // Equal UIDVALIDITYs can be a coincidence (Dovecot derives them from the clock): UIDs
    // only pair messages when every pair agrees on its Message-ID.
    // What earlier parts claimed is theirs (they left it out of the census before).
    let uids_agree = census.unclaimed().all(|x| {
        by_uid_recs
            .get(&x.uid)
            .is_none_or(|&i| x.message_id == f.recs[i].key.id_hash())
    });
    let source_mode = f.at_source
        && st.uidvalidity.is_some()
        && uids_agree
        && (!by_uid_recs.is_empty() || (f.recs.is_empty() && f.uidvalidity == st.uidvalidity));
    if !source_mode && !sum.content_matched_folders.contains(&f.name) {
        sum.content_matched_folders.push(f.name.clone());
    }
    let label = if m.name == f.name {
        f.name.clone()
    } else {
        format!("{} (server {})", f.name, m.name)
    };
    let mut pairs: Vec<(usize, u32, Match)> = Vec::new();
    let mut rest: Vec<usize> = (0..f.recs.len()).collect();
    if source_mode {
        let uids: Vec<u32> = census.unclaimed().map(|x| x.uid).collect();
        for uid in uids {
            if let Some(&i) = by_uid_recs.get(&uid) {
                if census.claim_uid(uid).is_some() {
                    pairs.push((i, uid, Match::Uid));
                }
            }
        }
        let paired: HashSet<usize> = pairs.iter().map(|p| p.0).collect();
        rest.retain(|i| !paired.contains(i));
    }
    // What UIDs could not pair (all of it on a restored folder), by identity.
    let keys: Vec<&MsgKey> = rest.iter().map(|&i| &f.recs[i].key).collect();
    let r = reconcile::reconcile(&keys, census, |ri, h| {
        norm_flags(&h.flags.to_vec()) == norm_flags(&f.recs[rest[ri]].m().flags)
    });
    pairs.extend(r.pairs.iter().map(|p| (rest[p.rec], p.uid, p.how)));
    // Looked up in the census (a map of a folder's every message cost ~9 MB at 400,000).
    let held = |uid: &u32| {
        census
            .held(*uid)
            .expect("a paired or unpaired UID is in the census")
    };
    for (i, uid, how) in &pairs {
        compare_pair(&f.recs[*i], held(uid), *how, full, &label, out);
    }
    let extra = if part.last { &r.extra[..] } else { &[] };
    for uid in extra {
        let x = held(uid);
        out.push(finding(
            Level::Error,
            "missing-from-archive",
            server,
            &label,
            Some(format!("server UID {uid}")),
            // The census holds Message-IDs as hashes: the server message is named by
            // its UID (above), size and arrival.
            format!(
                "on the server ({} bytes{}), not in the archive",
                x.size(),
                x.internaldate()
                    .map(|d| format!(", arrived {d}"))
                    .unwrap_or_default()
            ),
        ));
    }
    for &ri in &r.missing {
        let rec = &f.recs[rest[ri]];
        out.push(finding(
            if source_mode {
                Level::Warning
            } else {
                Level::Error
            },
            "gone-from-server",
            &rec.archive_name(),
            &label,
            Some(message_identity(&rec.m())),
            if source_mode {
                "archived, no longer on the server (deleted after the export?)".into()
            } else {
                "archived, not on the server".into()
            },
        ));
    }
}

/// Compares one archived message with the server message paired with it.
fn compare_pair(r: &Rec, h: &Held, how: Match, full: bool, folder: &str, out: &mut Vec<Finding>) {
    let m = &r.m();
    compare_flags(&h.flags.to_vec(), r, m, folder, out);
    let who = || Some(format!("{}; server UID {}", message_identity(m), h.uid));
    let exact = h.sha().is_some_and(|s| r.key.is_exact(&s));
    // A form a server is known to produce: found by it, or (with the bytes) one of them.
    let altered = !exact
        && (how == Match::Altered
            || (how == Match::Rewritten && r.key.at_risk)
            || h.canonical().is_some_and(|c| r.key.is_form(&c)));
    let mut push = |level, code, detail: String| {
        out.push(finding(
            level,
            code,
            &r.archive_name(),
            folder,
            who(),
            detail,
        ))
    };
    if how == Match::Uid && h.size() != m.size {
        push(
            Level::Error,
            "size-differs",
            format!(
                "the server says {} bytes, the archive holds {}",
                h.size(),
                m.size
            ),
        );
    }
    if full && h.read().is_none() {
        push(
            Level::Error,
            "not-fetched",
            "the server did not send this message when asked again".into(),
        );
    } else if altered {
        push(
            Level::Warning,
            "server-altered",
            format!(
                "the server holds it as servers rewrite NUL, 8-bit header bytes or line ends ({} bytes, archived {})",
                h.size(), m.size
            ),
        );
    } else if full && !exact {
        push(
            Level::Error,
            "content-differs",
            format!(
                "the server's copy hashes to {}, the archive's to {}",
                hex::encode(h.sha().unwrap_or_default()),
                m.sha256
            ),
        );
    } else if how == Match::Rewritten && !r.key.sizes().contains(&h.size()) {
        push(
            Level::Error,
            "size-differs",
            format!(
                "the server holds {} bytes, the archive {}",
                h.size(),
                m.size
            ),
        );
    }
}

fn compare_flags(
    server_flags: &[String],
    r: &Rec,
    m: &MessageRecord,
    folder: &str,
    out: &mut Vec<Finding>,
) {
    let (a, b) = (norm_flags(server_flags), norm_flags(&m.flags));
    if a != b {
        out.push(finding(
            Level::Warning,
            "flags-differ",
            &r.archive_name(),
            folder,
            Some(message_identity(m)),
            format!("server flags ({}), archived ({})", a.join(" "), b.join(" ")),
        ));
    }
}
