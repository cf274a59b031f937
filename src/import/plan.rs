//! Import planning, with no I/O: where each archived folder goes on the destination
//! (delimiter, personal namespace prefix, modified UTF-7, parents, special-use roles,
//! `--map` and `--prefix`), and how an archived message is recognised among the
//! messages a destination folder already holds (the dedup keys that make import
//! idempotent and resumable).

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::archive::FolderRecord;
use crate::mail::utf7;

/// What the destination told us about itself.
#[derive(Debug, Clone, Default)]
pub struct DestLayout {
    /// Hierarchy delimiter of the personal namespace.
    pub delimiter: Option<char>,
    /// Personal namespace prefix (`""`, or `INBOX.` on Courier-style servers).
    pub prefix: String,
    /// Folders that exist: UTF-8 name, wire name, special-use role.
    pub folders: Vec<DestFolder>,
    /// The server takes `CREATE name (USE (\Role))` (RFC 6154).
    pub create_special_use: bool,
}

impl DestLayout {
    /// The layout of a logged-in account from its LIST and NAMESPACE answers. Import
    /// plans with it, and `verify --against` pairs archived folders with it, so both
    /// name a folder the same way.
    pub fn from_listing(
        list: &[crate::source::imap::MailboxInfo],
        namespace: Option<(String, Option<char>)>,
        create_special_use: bool,
    ) -> DestLayout {
        // A server that names no delimiter gets '/': levels must not run together.
        let delimiter = namespace
            .as_ref()
            .and_then(|n| n.1)
            .or_else(|| list.iter().find_map(|m| m.delimiter))
            .or(Some('/'));
        DestLayout {
            delimiter,
            prefix: namespace.map(|n| n.0).unwrap_or_default(),
            folders: list
                .iter()
                .map(|m| DestFolder {
                    name: m.name.clone(),
                    raw_name: m.raw_name.clone(),
                    special_use: m.special_use.clone(),
                    selectable: m.selectable,
                })
                .collect(),
            create_special_use,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestFolder {
    pub name: String,
    pub raw_name: String,
    pub special_use: Option<String>,
    /// `\Noselect` names (a parent the server made on its own) still need a CREATE
    /// before mail can go in.
    pub selectable: bool,
}

/// `--map SRC=DST`: globs over source names (`/` separates levels, `*` matches any run of
/// characters, levels included); each `*` of DST takes what the matching `*` of SRC
/// matched, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRule {
    pub src: String,
    pub dst: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("bad --map {0:?}: expected SRC=DST")]
    BadMap(String),
    #[error("bad --map {0:?}: DST has more '*' than SRC")]
    MapStars(String),
    #[error("--prefix must not be empty")]
    EmptyPrefix,
}

impl std::str::FromStr for MapRule {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<MapRule, PlanError> {
        let (src, dst) = s
            .split_once('=')
            .ok_or_else(|| PlanError::BadMap(s.to_string()))?;
        let (src, dst) = (src.trim(), dst.trim());
        if src.is_empty() || dst.is_empty() {
            return Err(PlanError::BadMap(s.to_string()));
        }
        if dst.matches('*').count() > src.matches('*').count() {
            return Err(PlanError::MapStars(s.to_string()));
        }
        Ok(MapRule {
            src: src.to_string(),
            dst: dst.to_string(),
        })
    }
}

/// Matches `pat` (with `*`) against `s`, returning what each `*` matched.
pub fn glob_captures(pat: &str, s: &str) -> Option<Vec<String>> {
    fn go(p: &[char], s: &[char], caps: &mut Vec<String>) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => {
                // Shortest match first, so `a*b*` splits at the first `b`.
                for i in 0..=s.len() {
                    caps.push(s[..i].iter().collect());
                    if go(rest, &s[i..], caps) {
                        return true;
                    }
                    caps.pop();
                }
                false
            }
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..], caps),
        }
    }
    let p: Vec<char> = pat.chars().collect();
    let sc: Vec<char> = s.chars().collect();
    let mut caps = Vec::new();
    go(&p, &sc, &mut caps).then_some(caps)
}

impl MapRule {
    /// The destination (levels joined by `/`) for a source name in `/` form, if it matches.
    pub fn apply(&self, src_slash: &str) -> Option<String> {
        let caps = glob_captures(&self.src, src_slash)?;
        let mut out = String::new();
        let mut it = caps.into_iter();
        for c in self.dst.chars() {
            if c == '*' {
                out.push_str(&it.next().unwrap_or_default());
            } else {
                out.push(c);
            }
        }
        Some(out)
    }
}

/// Options that shape the folder plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub maps: Vec<MapRule>,
    /// Put everything under this folder (`/` separates levels).
    pub prefix: Option<String>,
}

/// Why a folder goes where it goes (shown in the plan).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Same name, translated to the destination's hierarchy.
    Name,
    /// The source's special-use role found on the destination under another name.
    SpecialUse(String),
    /// A `--map` rule.
    Map(String),
    /// Under `--prefix`.
    Prefix,
}

/// Where one archived folder goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderPlan {
    /// Source folder name (UTF-8, source delimiter).
    pub source: String,
    /// Destination name, UTF-8, destination delimiter and prefix.
    pub dest: String,
    /// Destination wire name (modified UTF-7).
    pub dest_raw: String,
    pub reason: Reason,
    /// The folder must be created.
    pub create: bool,
    /// Role to give a folder created here (when the server takes CREATE USE).
    pub create_role: Option<String>,
    pub subscribe: bool,
    /// Levels renamed because they held the destination's delimiter.
    pub renamed_levels: Vec<String>,
}

/// A parent folder that must exist before its children can be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentPlan {
    pub dest: String,
    pub dest_raw: String,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Parents to create first, outermost first.
    pub parents: Vec<ParentPlan>,
    pub folders: Vec<FolderPlan>,
}

impl Plan {
    pub fn for_source(&self, source: &str) -> Option<&FolderPlan> {
        self.folders.iter().find(|f| f.source == source)
    }
}

fn is_inbox(level: &str) -> bool {
    level.eq_ignore_ascii_case("INBOX")
}

/// Source levels of a folder name.
fn source_levels(f: &FolderRecord) -> Vec<String> {
    let d = f.delimiter.as_deref().and_then(|d| d.chars().next());
    crate::archive::names::split_folder(&f.name, d)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Roles are mapped onto the destination's own folders only for folders at the top (or
/// directly under INBOX): a `Projects/Sent` is a project's folder, not the mailbox's.
fn role_applies(levels: &[String]) -> bool {
    levels.len() == 1 || (levels.len() == 2 && is_inbox(&levels[0]))
}

/// Joins destination levels into a full destination name (UTF-8).
fn dest_name(levels: &[String], dest: &DestLayout) -> String {
    let delim = dest.delimiter.map(String::from).unwrap_or_default();
    if levels.len() == 1 && is_inbox(&levels[0]) {
        return "INBOX".to_string();
    }
    let prefix_levels: Vec<&str> = match dest.delimiter {
        Some(d) => dest.prefix.split(d).filter(|s| !s.is_empty()).collect(),
        None => Vec::new(),
    };
    let mut levels: Vec<String> = levels.to_vec();
    if is_inbox(&levels[0]) {
        levels[0] = "INBOX".to_string();
    }
    // A name already inside the personal prefix (INBOX.x on an INBOX. server) keeps it.
    let inside = !prefix_levels.is_empty()
        && levels.len() >= prefix_levels.len()
        && levels
            .iter()
            .zip(&prefix_levels)
            .all(|(a, b)| a.eq_ignore_ascii_case(b));
    let joined = levels.join(&delim);
    if inside || dest.prefix.is_empty() {
        joined
    } else {
        format!("{}{joined}", dest.prefix)
    }
}

/// Splits a `/`-separated user-given name (`--map` DST, `--prefix`) into levels.
fn user_levels(s: &str) -> Vec<String> {
    s.split('/')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A level may not hold the destination's delimiter; it is replaced by `_` and reported.
fn clean_levels(levels: Vec<String>, dest: &DestLayout, renamed: &mut Vec<String>) -> Vec<String> {
    let Some(d) = dest.delimiter else {
        return levels;
    };
    levels
        .into_iter()
        .map(|l| {
            if l.contains(d) {
                let n = l.replace(d, "_");
                renamed.push(format!("{l} -> {n}"));
                n
            } else {
                l
            }
        })
        .collect()
}

fn find_existing<'a>(dest: &'a DestLayout, name: &str) -> Option<&'a DestFolder> {
    dest.folders.iter().find(|f| {
        f.name == name || (is_inbox(name) && is_inbox(&f.name)) || f.raw_name == utf7::encode(name)
    })
}

/// Plans where every archived folder goes.
pub fn plan_folders(
    folders: &[FolderRecord],
    dest: &DestLayout,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    if let Some(p) = &opts.prefix {
        if user_levels(p).is_empty() {
            return Err(PlanError::EmptyPrefix);
        }
    }
    let mut plan = Plan::default();
    let mut roles_taken: HashSet<String> = HashSet::new();
    let mut planned: HashSet<String> = HashSet::new();
    for f in folders {
        let src_levels = source_levels(f);
        let src_slash = src_levels.join("/");
        let mut renamed = Vec::new();
        let mut create_role = None;
        let (levels, reason) = if let Some((rule, to)) = opts
            .maps
            .iter()
            .find_map(|r| r.apply(&src_slash).map(|t| (r, t)))
        {
            (
                user_levels(&to),
                Reason::Map(format!("{}={}", rule.src, rule.dst)),
            )
        } else if let Some(p) = &opts.prefix {
            let mut l = user_levels(p);
            l.extend(src_levels.iter().cloned());
            (l, Reason::Prefix)
        } else {
            let role = f
                .special_use
                .as_deref()
                .filter(|_| role_applies(&src_levels));
            let existing = role.and_then(|r| {
                dest.folders.iter().find(|d| {
                    d.special_use
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case(r))
                })
            });
            match (role, existing) {
                (Some(r), Some(d)) if roles_taken.insert(r.to_ascii_lowercase()) => {
                    // Already in destination form: no prefix or cleaning again.
                    plan.folders.push(FolderPlan {
                        source: f.name.clone(),
                        dest: d.name.clone(),
                        dest_raw: d.raw_name.clone(),
                        reason: Reason::SpecialUse(r.to_string()),
                        create: false,
                        create_role: None,
                        subscribe: f.subscribed,
                        renamed_levels: vec![],
                    });
                    planned.insert(d.name.clone());
                    continue;
                }
                (Some(r), None) => {
                    if dest.create_special_use && roles_taken.insert(r.to_ascii_lowercase()) {
                        create_role = Some(r.to_string());
                    }
                    (src_levels.clone(), Reason::Name)
                }
                _ => (src_levels.clone(), Reason::Name),
            }
        };
        let levels = if levels.is_empty() {
            vec!["INBOX".to_string()]
        } else {
            levels
        };
        let levels = clean_levels(levels, dest, &mut renamed);
        let name = dest_name(&levels, dest);
        let existing = find_existing(dest, &name);
        let create = existing.is_none_or(|e| !e.selectable) && !planned.contains(&name);
        let raw = existing
            .map(|e| e.raw_name.clone())
            .unwrap_or_else(|| utf7::encode(&name));
        // Parents: every proper ancestor not already there.
        if let Some(d) = dest.delimiter {
            let parts: Vec<&str> = name.split(d).collect();
            for i in 1..parts.len() {
                let pname = parts[..i].join(&d.to_string());
                let as_prefix = format!("{pname}{d}");
                if as_prefix == dest.prefix
                    || is_inbox(&pname)
                    || find_existing(dest, &pname).is_some()
                    || planned.contains(&pname)
                    || plan.parents.iter().any(|p| p.dest == pname)
                {
                    continue;
                }
                plan.parents.push(ParentPlan {
                    dest_raw: utf7::encode(&pname),
                    dest: pname,
                });
            }
        }
        planned.insert(name.clone());
        plan.folders.push(FolderPlan {
            source: f.name.clone(),
            dest: name,
            dest_raw: raw,
            reason,
            create,
            create_role,
            subscribe: f.subscribed,
            renamed_levels: renamed,
        });
    }
    // A parent that is itself an archived folder is created as that folder, in order.
    let folder_names: HashSet<&str> = plan
        .folders
        .iter()
        .filter(|f| f.create)
        .map(|f| f.dest.as_str())
        .collect();
    plan.parents
        .retain(|p| !folder_names.contains(p.dest.as_str()));
    Ok(plan)
}

/// Bytes in the form servers serve them: every line ending CRLF (bare LF and bare CR
/// become CRLF), which is what RFC822.SIZE counts and BODY[] returns on Dovecot.
pub fn crlf_len(b: &[u8]) -> u64 {
    (b.len() + bare_line_ends(b).count()) as u64
}

/// Positions of bare CR and bare LF (line ends that are not part of a CRLF pair).
/// Found with memchr: messages are mostly long runs without either byte, and a byte
/// loop over every message was a visible share of an import's CPU.
fn bare_line_ends(b: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr::memchr2_iter(b'\r', b'\n', b).filter(move |&p| match b[p] {
        b'\r' => b.get(p + 1) != Some(&b'\n'),
        _ => p == 0 || b[p - 1] != b'\r',
    })
}

/// Size after turning bare LF into CRLF but keeping bare CR: what Dovecot stores for a
/// message with mixed line endings.
pub fn lf_crlf_len(b: &[u8]) -> u64 {
    let bare_lf = memchr::memchr_iter(b'\n', b)
        .filter(|&i| i == 0 || b[i - 1] != b'\r')
        .count();
    (b.len() + bare_lf) as u64
}

/// SHA-256 of the form with bare LF turned into CRLF and bare CR kept.
pub fn lf_crlf_sha256(b: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', b) {
        if i == 0 || b[i - 1] != b'\r' {
            h.update(&b[start..i]);
            h.update(b"\r");
            start = i;
        }
    }
    h.update(&b[start..]);
    h.finalize().into()
}

/// Feeds the CRLF form of `b` to `sink` in chunks, without copying the whole message.
fn crlf_chunks(b: &[u8], mut sink: impl FnMut(&[u8])) {
    let mut start = 0;
    for p in bare_line_ends(b) {
        sink(&b[start..p]);
        sink(b"\r\n");
        start = p + 1;
    }
    sink(&b[start..]);
}

/// Appends the CRLF form of `b` to `out`.
pub fn crlf_form(b: &[u8], out: &mut Vec<u8>) {
    crlf_chunks(b, |c| out.extend_from_slice(c));
}

/// SHA-256 of the CRLF form: what `--verify full` compares with the server's BODY[].
pub fn crlf_sha256(b: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    crlf_chunks(b, |c| h.update(c));
    h.finalize().into()
}

/// SHA-256 of the CRLF form with every NUL and 8-bit byte replaced by `X`: the identity
/// of a message that survives servers rewriting those bytes (Dovecot stores NUL as 0x80,
/// Cyrus turns 8-bit header bytes into `X`) or its line ends, so a rerun recognises
/// what such a server holds. Verification still compares the exact bytes and reports the rewrite.
pub fn loose_sha256(b: &[u8]) -> [u8; 32] {
    // Line ends at the very end are not part of the identity: Dovecot drops a final
    // bare CR.
    let end = b.len()
        - b.iter()
            .rev()
            .take_while(|&&c| c == b'\r' || c == b'\n')
            .count();
    let b = &b[..end];
    let mut h = Sha256::new();
    let mut tmp = Vec::with_capacity(8192);
    crlf_chunks(b, |c| {
        for part in c.chunks(8192) {
            tmp.clear();
            tmp.extend(
                part.iter()
                    .map(|&x| if x == 0 || x >= 0x80 { b'X' } else { x }),
            );
            h.update(&tmp);
        }
    });
    h.finalize().into()
}

/// SHA-256 of a message's header section including the blank line that ends it, as it
/// is, in CRLF form, and with only bare LF made CRLF (the forms a server may store).
/// `None` when the message has no blank line (no body): such a header cannot be told
/// apart from the whole message, so it is compared whole.
pub fn header_forms(b: &[u8]) -> Option<[[u8; 32]; 3]> {
    let h = crate::mail::headers::header_section(b).len();
    let end = if b[h..].starts_with(b"\r\n") {
        h + 2
    } else if b[h..].starts_with(b"\n") {
        h + 1
    } else {
        return None;
    };
    let head = &b[..end];
    Some([
        Sha256::digest(head).into(),
        crlf_sha256(head),
        lf_crlf_sha256(head),
    ])
}

/// Bytes a server is known to rewrite: NUL anywhere, 8-bit bytes in the header section.
pub fn at_risk(b: &[u8]) -> bool {
    memchr::memchr(0, b).is_some()
        || crate::mail::headers::header_section(b)
            .iter()
            .any(|&x| x >= 0x80)
}

/// Normalises a Message-ID for matching: the part between `<` and `>` when present,
/// else the trimmed value; `None` when empty.
pub fn norm_message_id(v: &str) -> Option<String> {
    let v = v.trim();
    let inner = match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v,
    };
    let inner = inner.trim();
    (!inner.is_empty()).then(|| inner.to_string())
}

/// The first Message-ID field's value of a header block (as `BODY[HEADER.FIELDS
/// (MESSAGE-ID)]` returns it, or a whole message), unfolded.
pub fn message_id_of(head: &[u8]) -> Option<String> {
    let head = crate::mail::headers::header_section(head);
    let mut lines = split_lines(head).into_iter().peekable();
    while let Some(line) = lines.next() {
        if line.len() >= 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
            let mut v = line[11..].to_vec();
            while let Some(c) = lines.peek() {
                if c.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                    v.extend_from_slice(c);
                    lines.next();
                } else {
                    break;
                }
            }
            return norm_message_id(&String::from_utf8_lossy(&v));
        }
    }
    None
}

/// Lines of a header block, ended by CRLF, LF or a bare CR.
fn split_lines(b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\r' if b.get(i + 1) == Some(&b'\n') => {
                out.push(&b[start..i]);
                i += 2;
                start = i;
                continue;
            }
            b'\r' | b'\n' => {
                out.push(&b[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < b.len() {
        out.push(&b[start..]);
    }
    out
}

/// How an archived message is recognised on the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgKey {
    pub message_id: Option<String>,
    /// Archived size, CRLF-form size, and the size with only bare LF made CRLF: a
    /// server may store any of these.
    pub sizes: [u64; 3],
    /// Computed only where it can be needed: messages compared by bytes, with bare line
    /// ends, or with bytes servers rewrite (hashing costs time on big imports).
    pub loose: Option<[u8; 32]>,
    /// Loose hash of the header section alone, and the INTERNALDATE given with APPEND
    /// (seconds): together they recognise a message whose body a server re-encoded
    /// (Dovecot turns `binary` parts of a literal8 APPEND into base64).
    pub head_loose: [u8; 32],
    pub date: Option<i64>,
    /// Message-ID + size cannot tell this message apart (shared with another archived
    /// message of the folder that differs): compare bytes.
    pub by_bytes: bool,
    /// Holds bytes servers are known to rewrite (see [`at_risk`]).
    pub at_risk: bool,
}

impl MsgKey {
    pub fn of(bytes: &[u8], ambiguous_ids: &HashSet<String>, date: Option<i64>) -> MsgKey {
        let message_id = message_id_of(bytes);
        let by_bytes = message_id
            .as_ref()
            .is_none_or(|m| ambiguous_ids.contains(m));
        let crlf = crlf_len(bytes);
        let bare = crlf != bytes.len() as u64;
        let at_risk = at_risk(bytes);
        MsgKey {
            sizes: [
                bytes.len() as u64,
                crlf,
                if bare { lf_crlf_len(bytes) } else { crlf },
            ],
            loose: (by_bytes || bare || at_risk).then(|| loose_sha256(bytes)),
            head_loose: loose_sha256(crate::mail::headers::header_section(bytes)),
            date,
            by_bytes,
            at_risk,
            message_id,
        }
    }
}

/// Message-IDs that several different archived messages of one folder share (different
/// SHA-256): for those, Message-ID + size is not enough to tell which is there.
pub fn ambiguous_ids<'a>(
    msgs: impl IntoIterator<Item = (Option<&'a str>, &'a str)>,
) -> HashSet<String> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut out = HashSet::new();
    for (mid, sha) in msgs {
        let Some(m) = mid.and_then(norm_message_id) else {
            continue;
        };
        match seen.get(&m) {
            Some(s) if *s != sha => {
                out.insert(m);
            }
            Some(_) => {}
            None => {
                seen.insert(m, sha);
            }
        }
    }
    out
}

/// One message a destination folder holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub uid: u32,
    pub size: u64,
    pub message_id: Option<String>,
    pub flags: Vec<String>,
    pub internaldate: Option<String>,
    /// Filled for the messages that must be compared by bytes.
    pub loose: Option<[u8; 32]>,
    pub head_loose: Option<[u8; 32]>,
    /// INTERNALDATE in seconds.
    pub date: Option<i64>,
}

/// What a destination folder holds, and which of its messages are already accounted for
/// (each one stands for at most one archived message, so two copies in the archive need
/// two on the server).
#[derive(Debug, Default)]
pub struct FolderState {
    pub msgs: Vec<Existing>,
    claimed: Vec<bool>,
    by_id: HashMap<String, Vec<usize>>,
    by_uid: HashMap<u32, usize>,
}

impl FolderState {
    pub fn new(msgs: Vec<Existing>) -> FolderState {
        let mut by_id: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_uid = HashMap::new();
        for (i, m) in msgs.iter().enumerate() {
            if let Some(id) = &m.message_id {
                by_id.entry(id.clone()).or_default().push(i);
            }
            by_uid.insert(m.uid, i);
        }
        FolderState {
            claimed: vec![false; msgs.len()],
            msgs,
            by_id,
            by_uid,
        }
    }

    /// UIDs whose bytes must be fetched (their loose hash) before `claim` can decide:
    /// messages without a Message-ID and those with an ambiguous one.
    pub fn need_bytes(&self, ambiguous: &HashSet<String>) -> Vec<u32> {
        self.msgs
            .iter()
            .filter(|m| {
                m.loose.is_none()
                    && m.message_id
                        .as_ref()
                        .is_none_or(|id| ambiguous.contains(id))
            })
            .map(|m| m.uid)
            .collect()
    }

    /// Records the loose hashes of a message's bytes (see [`loose_sha256`]).
    pub fn set_bytes(&mut self, uid: u32, bytes: &[u8]) {
        if let Some(&i) = self.by_uid.get(&uid) {
            self.msgs[i].loose = Some(loose_sha256(bytes));
            self.msgs[i].head_loose =
                Some(loose_sha256(crate::mail::headers::header_section(bytes)));
        }
    }

    /// Claims a known UID (from APPENDUID or an earlier claim) if it is still there.
    pub fn claim_uid(&mut self, uid: u32) -> Option<&Existing> {
        let &i = self.by_uid.get(&uid)?;
        if self.claimed[i] {
            return None;
        }
        self.claimed[i] = true;
        Some(&self.msgs[i])
    }

    /// Finds an unclaimed message that is this one, and claims it.
    pub fn claim(&mut self, k: &MsgKey) -> Option<&Existing> {
        self.claim_pref(k, |_| true)
    }

    /// As [`claim`], preferring a copy for which `pref` holds (e.g. equal flags, when a
    /// folder holds the same message twice with different flags).
    pub fn claim_pref(
        &mut self,
        k: &MsgKey,
        pref: impl Fn(&Existing) -> bool,
    ) -> Option<&Existing> {
        let size_ok = |m: &Existing| k.sizes.contains(&m.size);
        let free = |i: usize| !self.claimed[i];
        let mut cands: Vec<usize> = match (&k.message_id, k.by_bytes) {
            (Some(id), false) => self.by_id.get(id).map_or(Vec::new(), |v| {
                v.iter()
                    .copied()
                    .filter(|&i| free(i) && size_ok(&self.msgs[i]))
                    .collect()
            }),
            (Some(id), true) => self.by_id.get(id).map_or(Vec::new(), |v| {
                v.iter()
                    .copied()
                    .filter(|&i| free(i) && k.loose.is_some() && self.msgs[i].loose == k.loose)
                    .collect()
            }),
            (None, _) => Vec::new(),
        };
        if cands.is_empty() {
            // A server may not see a Message-ID we see (a header with bare-CR line
            // ends): compare bytes with its messages that have none.
            cands = (0..self.msgs.len())
                .filter(|&i| {
                    free(i)
                        && k.loose.is_some()
                        && self.msgs[i].message_id.is_none()
                        && self.msgs[i].loose == k.loose
                })
                .collect();
        }
        if cands.is_empty() && k.date.is_some() {
            // Last: a message the server rewrote. Same INTERNALDATE (we set it) and the
            // same Message-ID, or, without one, the same header section.
            cands = (0..self.msgs.len())
                .filter(|&i| {
                    let m = &self.msgs[i];
                    free(i)
                        && m.date == k.date
                        && match (&m.message_id, &k.message_id) {
                            (Some(a), Some(b)) => a == b,
                            _ => m.head_loose == Some(k.head_loose),
                        }
                })
                .collect();
        }
        let idx = cands
            .iter()
            .copied()
            .find(|&i| pref(&self.msgs[i]))
            .or_else(|| cands.first().copied())?;
        self.claimed[idx] = true;
        Some(&self.msgs[idx])
    }
}

/// Flags to send with APPEND: `\Recent` never; keywords only where the folder's
/// PERMANENTFLAGS allow them (`\*`, or listed); the rest are returned as dropped.
pub fn split_flags(flags: &[String], permanent: Option<&[String]>) -> (Vec<String>, Vec<String>) {
    let mut keep = Vec::new();
    let mut dropped = Vec::new();
    for f in crate::mail::flags::normalize(flags) {
        let system = f.starts_with('\\');
        let valid = if system {
            ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"].contains(&f.as_str())
        } else {
            is_atom(&f)
        };
        let allowed = match permanent {
            None => true,
            Some(p) => {
                p.iter().any(|x| x.eq_ignore_ascii_case(&f))
                    || (!system && p.iter().any(|x| x == "\\*"))
                    || (system && p.is_empty())
            }
        };
        if valid && allowed {
            keep.push(f);
        } else {
            dropped.push(f);
        }
    }
    (keep, dropped)
}

/// An IMAP atom (a keyword must be one).
pub fn is_atom(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b))
}

/// Flags compared as sets, case-insensitively, `\Recent` ignored.
pub fn same_flags(a: &[String], b: &[String]) -> bool {
    let norm = |v: &[String]| -> Vec<String> {
        let mut x: Vec<String> = crate::mail::flags::normalize(v)
            .into_iter()
            .map(|f| f.to_ascii_lowercase())
            .collect();
        x.sort();
        x
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str, delim: Option<&str>, role: Option<&str>, sub: bool) -> FolderRecord {
        FolderRecord {
            name: name.into(),
            raw_name: name.into(),
            delimiter: delim.map(String::from),
            dir: String::new(),
            special_use: role.map(String::from),
            subscribed: sub,
            selectable: true,
            source_count: None,
            uidvalidity: None,
            uidnext: None,
            highestmodseq: None,
            keywords: vec![],
            messages: 0,
        }
    }

    fn dest(delim: char, prefix: &str, folders: &[(&str, Option<&str>)]) -> DestLayout {
        DestLayout {
            delimiter: Some(delim),
            prefix: prefix.into(),
            folders: folders
                .iter()
                .map(|(n, r)| DestFolder {
                    name: n.to_string(),
                    raw_name: utf7::encode(n),
                    special_use: r.map(String::from),
                    selectable: true,
                })
                .collect(),
            create_special_use: false,
        }
    }

    #[test]
    fn translates_delimiter_prefix_and_utf7() {
        let src = [
            folder("INBOX", Some("/"), None, true),
            folder("受信箱/取引先", Some("/"), None, true),
            folder("a.b/c", Some("/"), None, false),
            folder("INBOX/sub", Some("/"), None, false),
        ];
        let d = dest('.', "INBOX.", &[("INBOX", None)]);
        let p = plan_folders(&src, &d, &PlanOptions::default()).unwrap();
        let names: Vec<&str> = p.folders.iter().map(|f| f.dest.as_str()).collect();
        assert_eq!(
            names,
            ["INBOX", "INBOX.受信箱.取引先", "INBOX.a_b.c", "INBOX.sub"]
        );
        assert!(!p.folders[0].create);
        assert_eq!(p.folders[1].dest_raw, "INBOX.&U9dP4Xux-.&U9ZfFVFI-");
        assert_eq!(p.folders[2].renamed_levels, vec!["a.b -> a_b"]);
        // Parents created first, the namespace prefix itself never.
        let parents: Vec<&str> = p.parents.iter().map(|x| x.dest.as_str()).collect();
        assert_eq!(parents, ["INBOX.受信箱", "INBOX.a_b"]);
        assert!(p.folders[1].subscribe && !p.folders[2].subscribe);
    }

    #[test]
    fn special_use_maps_to_destination_folder() {
        let src = [
            folder("Sent", Some("/"), Some("\\Sent"), true),
            folder("Trash", Some("/"), Some("\\Trash"), true),
            folder("Projects/Sent", Some("/"), Some("\\Sent"), false),
            folder("Drafts", Some("/"), Some("\\Drafts"), false),
        ];
        let d = dest(
            '/',
            "",
            &[
                ("INBOX", None),
                ("送信済みメール", Some("\\Sent")),
                ("Deleted Items", Some("\\Trash")),
            ],
        );
        let p = plan_folders(&src, &d, &PlanOptions::default()).unwrap();
        assert_eq!(p.folders[0].dest, "送信済みメール");
        assert_eq!(p.folders[0].reason, Reason::SpecialUse("\\Sent".into()));
        assert!(!p.folders[0].create);
        assert_eq!(p.folders[1].dest, "Deleted Items");
        assert_eq!(p.folders[2].dest, "Projects/Sent");
        assert!(p.folders[2].create);
        // No Drafts role on the destination: created by name.
        assert_eq!(p.folders[3].dest, "Drafts");
        assert!(p.folders[3].create);
        assert_eq!(p.parents[0].dest, "Projects");
    }

    #[test]
    fn map_and_prefix() {
        let src = [
            folder("INBOX", Some("/"), None, true),
            folder("Old/2019/Q1", Some("/"), None, true),
            folder("Sent", Some("/"), Some("\\Sent"), true),
        ];
        let d = dest('.', "", &[("INBOX", None), ("Sent Items", Some("\\Sent"))]);
        let opts = PlanOptions {
            maps: vec![
                "Old/*=Archive/*".parse().unwrap(),
                "Sent=Sent".parse().unwrap(),
            ],
            prefix: None,
        };
        let p = plan_folders(&src, &d, &opts).unwrap();
        assert_eq!(p.folders[1].dest, "Archive.2019.Q1");
        assert_eq!(p.folders[2].dest, "Sent", "--map beats the role mapping");
        let opts = PlanOptions {
            maps: vec![],
            prefix: Some("Imported/2024".into()),
        };
        let p = plan_folders(&src, &d, &opts).unwrap();
        let names: Vec<&str> = p.folders.iter().map(|f| f.dest.as_str()).collect();
        assert_eq!(
            names,
            [
                "Imported.2024.INBOX",
                "Imported.2024.Old.2019.Q1",
                "Imported.2024.Sent"
            ]
        );
        assert!("nothing".parse::<MapRule>().is_err());
        assert!("a=*".parse::<MapRule>().is_err());
        assert_eq!(glob_captures("a*b*", "axxbyyb").unwrap(), vec!["xx", "yyb"]);
    }

    #[test]
    fn crlf_forms() {
        assert_eq!(crlf_len(b"a\nb\r\nc\rd"), 10);
        assert_eq!(crlf_sha256(b"a\nb"), crlf_sha256(b"a\r\nb"));
        assert_eq!(crlf_sha256(b"a\rb"), crlf_sha256(b"a\r\nb"));
        assert_ne!(crlf_sha256(b"a\nb"), crlf_sha256(b"a\n\nb"));
        assert_eq!(
            loose_sha256(b"S: \xe3\x81\x82\n\nx\0"),
            loose_sha256(b"S: XXX\r\n\r\nx\x80")
        );
        assert!(at_risk(b"Subject: \xe3\n\nbody"));
        // The header section with its blank line, in the forms a server may store.
        let lf = b"Subject: \xe3\nX: y\n\nbody\n";
        let crlf = b"Subject: \xe3\r\nX: y\r\n\r\n";
        let f = header_forms(lf).unwrap();
        assert_eq!(
            f[0],
            <[u8; 32]>::from(Sha256::digest(b"Subject: \xe3\nX: y\n\n"))
        );
        assert_eq!(f[1], <[u8; 32]>::from(Sha256::digest(crlf)));
        assert_eq!(f[2], f[1]);
        assert_eq!(
            header_forms(b"Subject: a\r\n\r\nb").unwrap()[0],
            <[u8; 32]>::from(Sha256::digest(b"Subject: a\r\n\r\n"))
        );
        assert!(header_forms(b"Subject: no body\r\n").is_none());
        assert!(!at_risk(b"Subject: a\n\n\xe3 body"));
        assert!(at_risk(b"Subject: a\n\nbo\0dy"));
    }

    /// The line-end scans agree with the byte-by-byte definition on every mix of CR, LF
    /// and text, including ends at the first and last byte.
    #[test]
    fn line_end_scans_match_the_definition() {
        fn naive_crlf(b: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'\r' if b.get(i + 1) == Some(&b'\n') => {
                        out.extend_from_slice(b"\r\n");
                        i += 2;
                        continue;
                    }
                    b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
                    c => out.push(c),
                }
                i += 1;
            }
            out
        }
        fn naive_lf_crlf(b: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            for (i, &c) in b.iter().enumerate() {
                if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
                    out.push(b'\r');
                }
                out.push(c);
            }
            out
        }
        let alphabet = [b'\r', b'\n', b'a', 0x80];
        let mut seed = 0x2545F4914F6CDD1Du64;
        for len in 0..400usize {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut r = seed;
            let b: Vec<u8> = (0..len % 40)
                .map(|_| {
                    r = r.rotate_left(2);
                    alphabet[(r & 3) as usize]
                })
                .collect();
            let crlf = naive_crlf(&b);
            assert_eq!(crlf_len(&b), crlf.len() as u64, "{b:?}");
            let mut formed = Vec::new();
            crlf_form(&b, &mut formed);
            assert_eq!(formed, crlf, "{b:?}");
            let lf = naive_lf_crlf(&b);
            assert_eq!(lf_crlf_len(&b), lf.len() as u64, "{b:?}");
            assert_eq!(lf_crlf_sha256(&b), <[u8; 32]>::from(Sha256::digest(&lf)));
        }
    }

    #[test]
    fn message_ids() {
        assert_eq!(
            message_id_of(b"Subject: x\r\nMessage-Id:\r\n  <a@b> (c)\r\n\r\nbody"),
            Some("a@b".into())
        );
        assert_eq!(
            message_id_of(b"Subject: x\r\n\r\nMessage-ID: <no@x>\r\n"),
            None
        );
        assert_eq!(norm_message_id(" <> "), None);
        assert_eq!(
            message_id_of(b"Subject: x\rMessage-ID: <cr@x>\r\rbody"),
            Some("cr@x".into())
        );
        assert_eq!(lf_crlf_len(b"a\nb\rc\r\n"), 8);
        let want: [u8; 32] = Sha256::digest(b"a\r\nb\r").into();
        assert_eq!(lf_crlf_sha256(b"a\nb\r"), want);
    }

    fn ex(uid: u32, size: u64, mid: Option<&str>, loose: Option<[u8; 32]>) -> Existing {
        Existing {
            uid,
            size,
            message_id: mid.map(String::from),
            flags: vec![],
            internaldate: None,
            loose,
            head_loose: None,
            date: None,
        }
    }

    #[test]
    fn dedup_claims() {
        let a = b"Message-ID: <same@x>\r\n\r\nfirst\r\n".to_vec();
        let b = b"Message-ID: <same@x>\r\n\r\nother\r\n".to_vec();
        let n = b"Subject: none\r\n\r\nx\r\n".to_vec();
        let amb = ambiguous_ids([
            (Some("<same@x>"), "h1"),
            (Some("<same@x>"), "h2"),
            (Some("<u@x>"), "h3"),
            (Some("<u@x>"), "h3"),
        ]);
        assert_eq!(amb, HashSet::from(["same@x".to_string()]));
        let ka = MsgKey::of(&a, &amb, None);
        let kb = MsgKey::of(&b, &amb, None);
        let kn = MsgKey::of(&n, &amb, None);
        assert!(ka.by_bytes && kn.by_bytes);
        // The server holds `a` and the message without Message-ID; `b` is missing.
        let mut st = FolderState::new(vec![
            ex(1, a.len() as u64, Some("same@x"), None),
            ex(2, n.len() as u64, None, None),
        ]);
        assert_eq!(st.need_bytes(&amb), vec![1, 2]);
        st.set_bytes(1, &a);
        st.set_bytes(2, &n);
        assert!(
            st.claim(&kb).is_none(),
            "a different message sharing the id"
        );
        assert_eq!(st.claim(&ka).map(|e| e.uid), Some(1));
        assert!(
            st.claim(&ka).is_none(),
            "one server copy stands for one archived copy"
        );
        assert_eq!(st.claim(&kn).map(|e| e.uid), Some(2));
        // Unambiguous ids go by Message-ID + size; LF archives match CRLF servers.
        let lf = b"Message-ID: <u@x>\n\nbody\n".to_vec();
        let k = MsgKey::of(&lf, &amb, None);
        assert!(!k.by_bytes);
        let mut st = FolderState::new(vec![ex(7, crlf_len(&lf), Some("u@x"), None)]);
        assert_eq!(st.claim(&k).map(|e| e.uid), Some(7));
        let mut st = FolderState::new(vec![ex(7, 3, Some("u@x"), None)]);
        assert!(
            st.claim(&k).is_none(),
            "same id, other size: not this message"
        );
        // A body the server re-encoded: found by header and INTERNALDATE.
        let bin = b"Subject: b\r\n\r\nraw\0bytes\r\n".to_vec();
        let reenc = b"Subject: b\r\n\r\ncmF3AGJ5dGVz\r\n".to_vec();
        let k = MsgKey::of(&bin, &amb, Some(1000));
        let mut e = ex(9, reenc.len() as u64, None, None);
        e.date = Some(1000);
        let mut st = FolderState::new(vec![e]);
        st.set_bytes(9, &reenc);
        assert_eq!(st.claim(&k).map(|e| e.uid), Some(9));
    }

    #[test]
    fn flags_split_by_permanentflags() {
        let f: Vec<String> = ["\\Seen", "\\Recent", "$Label1", "bad kw", "\\Deleted"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (k, d) = split_flags(&f, Some(&["\\Seen".into(), "\\Deleted".into()]));
        assert_eq!(k, vec!["\\Seen", "\\Deleted"]);
        assert_eq!(d, vec!["$Label1", "bad kw"]);
        let (k, d) = split_flags(
            &f,
            Some(&["\\Seen".into(), "\\Deleted".into(), "\\*".into()]),
        );
        assert_eq!(k, vec!["\\Seen", "$Label1", "\\Deleted"]);
        assert_eq!(d, vec!["bad kw"]);
        assert!(same_flags(
            &["\\seen".into(), "$A".into()],
            &["$a".into(), "\\Seen".into(), "\\Recent".into()]
        ));
    }
}
