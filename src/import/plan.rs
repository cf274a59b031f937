//! Import planning, with no I/O: where each archived folder goes on the destination
//! (out of the source's personal namespace into the destination's: delimiter, prefix,
//! modified UTF-7, parents; special-use roles, by flag or by name; `--map` and
//! `--prefix`), and which flags an APPEND may carry. How an archived message is
//! recognised on the destination lives in `mail::identity` and `reconcile`.

use std::collections::{HashMap, HashSet};

use crate::archive::{FolderRecord, Namespace};
use crate::mail::glob::{Glob, PatternError};
use crate::mail::{roles, utf7};

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

/// `--map SRC=DST`: SRC is a glob (the dialect of `mail::glob`) over source names with
/// `/` between levels; each `*` of DST takes what the matching `*` of SRC matched, in
/// order.
#[derive(Debug, Clone)]
pub struct MapRule {
    pub src: String,
    pub dst: String,
    glob: Glob,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("bad --map {0:?}: expected SRC=DST")]
    BadMap(String),
    #[error("bad --map {0:?}: DST has more '*' than SRC")]
    MapStars(String),
    #[error("bad --map: {0}")]
    MapPattern(#[from] PatternError),
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
        let glob = Glob::new(src)?;
        if dst.matches('*').count() > glob.stars() {
            return Err(PlanError::MapStars(s.to_string()));
        }
        Ok(MapRule {
            src: src.to_string(),
            dst: dst.to_string(),
            glob,
        })
    }
}

impl MapRule {
    /// The destination (levels joined by `/`) for a source name in `/` form, if it matches.
    pub fn apply(&self, src_slash: &str) -> Option<String> {
        let caps = self.glob.captures(src_slash)?;
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

/// The source's personal namespace: what the archive recorded at export, or what import
/// assumes without a record (see [`source_namespace`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceNamespace {
    pub prefix: String,
    pub delimiter: Option<char>,
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
    /// The role the source folder's name says (a source without SPECIAL-USE), found on
    /// the destination.
    RoleName(String),
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
    /// `--map` rules whose SRC matched no archived folder, as given (`SRC=DST`).
    pub unmatched_maps: Vec<String>,
}

impl Plan {
    pub fn for_source(&self, source: &str) -> Option<&FolderPlan> {
        self.folders.iter().find(|f| f.source == source)
    }
}

fn is_inbox(level: &str) -> bool {
    level.eq_ignore_ascii_case("INBOX")
}

/// Two levels name the same folder: INBOX whatever its case, any other level exactly.
fn same_level(a: &str, b: &str) -> bool {
    a == b || (is_inbox(a) && is_inbox(b))
}

fn first_char(d: Option<&str>) -> Option<char> {
    d.and_then(|d| d.chars().next())
}

/// Source levels of a folder name.
fn source_levels(f: &FolderRecord) -> Vec<String> {
    crate::archive::names::split_folder(&f.name, first_char(f.delimiter.as_deref()))
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Levels of a namespace prefix: `INBOX.` is `["INBOX"]`, `""` none.
pub(crate) fn prefix_levels(prefix: &str, delimiter: Option<char>) -> Vec<&str> {
    match delimiter {
        Some(d) => prefix.split(d).filter(|s| !s.is_empty()).collect(),
        None if prefix.is_empty() => Vec::new(),
        None => vec![prefix],
    }
}

/// A name (its levels) lies below the namespace `prefix` (its levels): INBOX itself and
/// a name outside the namespace do not. The one rule import, `verify --against` and
/// extract's Maildir++ names follow.
pub(crate) fn inside_namespace<L: AsRef<str>, P: AsRef<str>>(levels: &[L], prefix: &[P]) -> bool {
    !prefix.is_empty()
        && levels.len() > prefix.len()
        && levels
            .iter()
            .zip(prefix)
            .all(|(a, b)| same_level(a.as_ref(), b.as_ref()))
}

/// The levels of a name below a namespace: `INBOX.Archive.2019` below `INBOX.` is
/// `Archive/2019`. INBOX itself, and a name outside the namespace, keep every level.
fn below_namespace(levels: Vec<String>, prefix: &[&str]) -> Vec<String> {
    if inside_namespace(&levels, prefix) {
        levels[prefix.len()..].to_vec()
    } else {
        levels
    }
}

/// A source folder's levels below the source's personal namespace: the form `--map`,
/// `--prefix` and the role rules see, and what goes below the destination's namespace.
fn relative_levels(f: &FolderRecord, ns: &SourceNamespace) -> Vec<String> {
    let delim = ns.delimiter.or(first_char(f.delimiter.as_deref()));
    below_namespace(source_levels(f), &prefix_levels(&ns.prefix, delim))
}

/// The source's namespace for planning: the archive's record when it has one. Without
/// one (local stores, POP3, archives written before the record existed) a listing where
/// every folder but INBOX lies under `INBOX.` is taken as coming from a server whose
/// personal namespace is `INBOX.` (Courier, Cyrus without altnamespace); anything else as
/// names from the root (prefix `""`).
pub fn source_namespace(recorded: Option<&Namespace>, folders: &[FolderRecord]) -> SourceNamespace {
    if let Some(n) = recorded {
        return SourceNamespace {
            prefix: n.prefix.clone(),
            delimiter: first_char(n.delimiter.as_deref()),
        };
    }
    let delimiter = folders
        .iter()
        .find_map(|f| first_char(f.delimiter.as_deref()));
    let levels: Vec<Vec<String>> = folders.iter().map(source_levels).collect();
    let under_inbox = delimiter == Some('.')
        && levels.iter().any(|l| l.len() > 1)
        && levels
            .iter()
            .all(|l| l.first().is_some_and(|x| is_inbox(x)));
    SourceNamespace {
        prefix: if under_inbox { "INBOX." } else { "" }.to_string(),
        delimiter,
    }
}

/// The role a source folder brings, and whether its name (not a SPECIAL-USE flag) says
/// it. Only folders at the top get one — a `Projects/Sent` is a project's folder, not the
/// mailbox's; a flag is also taken directly under INBOX (a child of INBOX on a server
/// whose namespace is the root).
fn source_role(f: &FolderRecord, rel: &[String]) -> Option<(String, bool)> {
    let top = rel.len() == 1 && !is_inbox(&rel[0]);
    if let Some(r) = &f.special_use {
        return (top || (rel.len() == 2 && is_inbox(&rel[0]))).then(|| (r.clone(), false));
    }
    top.then(|| roles::role_by_name(&rel[0]))
        .flatten()
        .map(|r| (r.to_string(), true))
}

/// The destination's folder for `role`: the one flagged with it; else, for servers
/// without SPECIAL-USE, one directly under the destination's namespace whose name says
/// it, the one named like the source folder (`leaf`) first.
fn dest_for_role<'a>(dest: &'a DestLayout, role: &str, leaf: &str) -> Option<&'a DestFolder> {
    let flagged = dest.folders.iter().find(|d| {
        d.special_use
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(role))
    });
    if flagged.is_some() {
        return flagged;
    }
    let prefix = prefix_levels(&dest.prefix, dest.delimiter);
    let named: Vec<(&DestFolder, String)> = dest
        .folders
        .iter()
        .filter(|d| d.special_use.is_none() && d.selectable)
        .filter_map(|d| {
            let levels = crate::archive::names::split_folder(&d.name, dest.delimiter)
                .into_iter()
                .map(str::to_string)
                .collect();
            match &below_namespace(levels, &prefix)[..] {
                [one] if roles::role_by_name(one).is_some_and(|r| r.eq_ignore_ascii_case(role)) => {
                    Some((d, one.to_lowercase()))
                }
                _ => None,
            }
        })
        .collect();
    let leaf = leaf.to_lowercase();
    named
        .iter()
        .find(|(_, l)| *l == leaf)
        .or(named.first())
        .map(|(d, _)| *d)
}

/// The destination folder (name, wire name) chosen for `role` already: the destination's
/// own, else the one planned for an earlier source folder of the role (`role_folder`).
fn chosen_for_role(
    dest: &DestLayout,
    plan: &Plan,
    role_folder: &HashMap<String, usize>,
    role: &str,
    leaf: &str,
) -> Option<(String, String)> {
    if let Some(d) = dest_for_role(dest, role, leaf) {
        return Some((d.name.clone(), d.raw_name.clone()));
    }
    let p = &plan.folders[*role_folder.get(&role.to_ascii_lowercase())?];
    Some((p.dest.clone(), p.dest_raw.clone()))
}

/// Joins levels below the destination's namespace into a full destination name (UTF-8).
fn dest_name(levels: &[String], dest: &DestLayout) -> String {
    let delim = dest.delimiter.map(String::from).unwrap_or_default();
    if levels.len() == 1 && is_inbox(&levels[0]) {
        return "INBOX".to_string();
    }
    let prefix_levels = prefix_levels(&dest.prefix, dest.delimiter);
    let mut levels: Vec<String> = levels.to_vec();
    if is_inbox(&levels[0]) {
        levels[0] = "INBOX".to_string();
    }
    // A child of INBOX from a root-namespace server (INBOX/x) lands at INBOX.x on an
    // INBOX. server: the one place such a server keeps INBOX's children.
    let inside = !prefix_levels.is_empty()
        && levels.len() >= prefix_levels.len()
        && levels
            .iter()
            .zip(&prefix_levels)
            .all(|(a, b)| same_level(a, b));
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

/// Plans where every archived folder goes: out of the source's namespace
/// (`source_ns`), through `--map`/`--prefix` or the role rules, into the destination's.
pub fn plan_folders(
    folders: &[FolderRecord],
    source_ns: &SourceNamespace,
    dest: &DestLayout,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    if let Some(p) = &opts.prefix {
        if user_levels(p).is_empty() {
            return Err(PlanError::EmptyPrefix);
        }
    }
    let mut plan = Plan::default();
    // Role (lower case) → the plan entry that creates the folder for it, so every
    // source folder of one role goes to one destination folder.
    let mut role_folder: HashMap<String, usize> = HashMap::new();
    let mut planned: HashSet<String> = HashSet::new();
    let mut map_used = vec![false; opts.maps.len()];
    for f in folders {
        let rel = relative_levels(f, source_ns);
        let rel_slash = rel.join("/");
        // Every rule is tried, not just up to the first match, so each one's use is known.
        for (used, r) in map_used.iter_mut().zip(&opts.maps) {
            *used |= r.glob.is_match(&rel_slash);
        }
        let mut renamed = Vec::new();
        let mut create_role = None;
        let (levels, reason) = if let Some((rule, to)) = opts
            .maps
            .iter()
            .find_map(|r| r.apply(&rel_slash).map(|t| (r, t)))
        {
            (
                user_levels(&to),
                Reason::Map(format!("{}={}", rule.src, rule.dst)),
            )
        } else if let Some(p) = &opts.prefix {
            let mut l = user_levels(p);
            l.extend(rel.iter().cloned());
            (l, Reason::Prefix)
        } else if let Some((role, by_name)) = source_role(f, &rel) {
            let key = role.to_ascii_lowercase();
            let leaf = &rel[rel.len() - 1];
            if let Some((name, raw)) = chosen_for_role(dest, &plan, &role_folder, &role, leaf) {
                let reason = if by_name {
                    Reason::RoleName(role)
                } else {
                    Reason::SpecialUse(role)
                };
                // Already in destination form: no prefix or cleaning again.
                plan.folders.push(FolderPlan {
                    source: f.name.clone(),
                    dest: name.clone(),
                    dest_raw: raw,
                    reason,
                    create: false,
                    create_role: None,
                    subscribe: f.subscribed,
                    renamed_levels: vec![],
                });
                planned.insert(name);
                continue;
            }
            role_folder.insert(key, plan.folders.len());
            if dest.create_special_use {
                create_role = Some(role);
            }
            (rel.clone(), Reason::Name)
        } else {
            (rel.clone(), Reason::Name)
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
        plan_parents(&mut plan, dest, &name, &planned);
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
    plan.unmatched_maps = (opts.maps.iter().zip(&map_used))
        .filter(|(_, &used)| !used)
        .map(|(r, _)| format!("{}={}", r.src, r.dst))
        .collect();
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

/// Adds every proper ancestor of `name` not already there (or planned) to the parents.
fn plan_parents(plan: &mut Plan, dest: &DestLayout, name: &str, planned: &HashSet<String>) {
    let Some(d) = dest.delimiter else {
        return;
    };
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
            raw_name_hex: None,
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
        let p = plan_folders(
            &src,
            &SourceNamespace::default(),
            &d,
            &PlanOptions::default(),
        )
        .unwrap();
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
        let p = plan_folders(
            &src,
            &SourceNamespace::default(),
            &d,
            &PlanOptions::default(),
        )
        .unwrap();
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
        let p = plan_folders(&src, &SourceNamespace::default(), &d, &opts).unwrap();
        assert_eq!(p.folders[1].dest, "Archive.2019.Q1");
        assert_eq!(p.folders[2].dest, "Sent", "--map beats the role mapping");
        assert!(p.unmatched_maps.is_empty());
        let opts = PlanOptions {
            maps: vec![
                "*=Everything/*".parse().unwrap(),
                "Old/*=Archive/*".parse().unwrap(),
                "old/*=x/*".parse().unwrap(),
            ],
            prefix: None,
        };
        let p = plan_folders(&src, &SourceNamespace::default(), &d, &opts).unwrap();
        assert_eq!(
            p.unmatched_maps,
            ["old/*=x/*"],
            "a rule shadowed by an earlier one still matched; case counts"
        );
        let opts = PlanOptions {
            maps: vec![],
            prefix: Some("Imported/2024".into()),
        };
        let p = plan_folders(&src, &SourceNamespace::default(), &d, &opts).unwrap();
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
        assert!(matches!(
            "Old/[x=Archive".parse::<MapRule>(),
            Err(PlanError::MapPattern(_))
        ));
    }

    fn ns(prefix: &str, delim: char) -> SourceNamespace {
        SourceNamespace {
            prefix: prefix.into(),
            delimiter: Some(delim),
        }
    }

    fn dests(p: &Plan) -> Vec<&str> {
        p.folders.iter().map(|f| f.dest.as_str()).collect()
    }

    /// A Courier account (everything under `INBOX.`, no SPECIAL-USE) into a default
    /// Dovecot: names leave the source's namespace, roles come from the names.
    #[test]
    fn courier_source_into_root_namespace() {
        let src = [
            folder("INBOX", Some("."), None, true),
            folder("INBOX.Archive", Some("."), None, true),
            folder("INBOX.Archive.2019", Some("."), None, true),
            folder("INBOX.Sent Items", Some("."), None, true),
            folder("INBOX.送信済みメール", Some("."), None, false),
            folder("INBOX.drafts", Some("."), None, false),
            folder("INBOX.Projects.Sent", Some("."), None, false),
        ];
        let d = dest(
            '/',
            "",
            &[
                ("INBOX", None),
                ("Sent", Some("\\Sent")),
                ("Drafts", Some("\\Drafts")),
            ],
        );
        let p = plan_folders(&src, &ns("INBOX.", '.'), &d, &PlanOptions::default()).unwrap();
        assert_eq!(
            dests(&p),
            [
                "INBOX",
                "Archive",
                "Archive/2019",
                "Sent",
                "Sent",
                "Drafts",
                "Projects/Sent"
            ]
        );
        assert_eq!(p.folders[3].reason, Reason::RoleName("\\Sent".into()));
        assert_eq!(p.folders[4].reason, Reason::RoleName("\\Sent".into()));
        assert!(!p.folders[3].create && !p.folders[4].create && !p.folders[5].create);
        assert!(p.folders[1].create && p.folders[2].create && p.folders[6].create);
        let parents: Vec<&str> = p.parents.iter().map(|x| x.dest.as_str()).collect();
        assert_eq!(
            parents,
            ["Projects"],
            "no INBOX parent, Archive made as itself"
        );
    }

    /// A default Dovecot account into a Courier-style server: names go under `INBOX.`
    /// with `.`, roles land on the destination's folders found by name.
    #[test]
    fn root_namespace_into_courier_destination() {
        let src = [
            folder("INBOX", Some("/"), None, true),
            folder("Archive/2019", Some("/"), None, true),
            folder("Sent", Some("/"), Some("\\Sent"), true),
            folder("Trash", Some("/"), Some("\\Trash"), true),
            folder("INBOX/sub", Some("/"), None, true),
            folder("Spam", Some("/"), None, true),
        ];
        let d = dest(
            '.',
            "INBOX.",
            &[
                ("INBOX", None),
                ("INBOX.送信済みメール", None),
                ("INBOX.Deleted Items", None),
                ("INBOX.Work.Junk", None),
            ],
        );
        let p = plan_folders(&src, &ns("", '/'), &d, &PlanOptions::default()).unwrap();
        assert_eq!(
            dests(&p),
            [
                "INBOX",
                "INBOX.Archive.2019",
                "INBOX.送信済みメール",
                "INBOX.Deleted Items",
                "INBOX.sub",
                "INBOX.Spam"
            ]
        );
        assert_eq!(p.folders[2].reason, Reason::SpecialUse("\\Sent".into()));
        assert!(!p.folders[2].create && !p.folders[3].create);
        assert!(p.folders[5].create, "a nested Junk is no role folder");
        let parents: Vec<&str> = p.parents.iter().map(|x| x.dest.as_str()).collect();
        assert_eq!(parents, ["INBOX.Archive"]);
    }

    /// Names say roles only directly under the personal namespace; English names match
    /// whatever their case; a destination folder of the same name is preferred.
    #[test]
    fn role_names_top_level_only_and_same_name_first() {
        let src = [
            folder("INBOX.SENT ITEMS", Some("."), None, true),
            folder("INBOX.Sent", Some("."), None, true),
            folder("INBOX.Work.Trash", Some("."), None, true),
            folder("INBOX.ゴミ箱", Some("."), None, true),
        ];
        let d = dest(
            '.',
            "INBOX.",
            &[
                ("INBOX", None),
                ("INBOX.Sent", None),
                ("INBOX.Sent Items", None),
                ("INBOX.Trash", Some("\\Junk")),
                ("INBOX.Deleted Messages", None),
            ],
        );
        let p = plan_folders(&src, &ns("INBOX.", '.'), &d, &PlanOptions::default()).unwrap();
        assert_eq!(
            dests(&p),
            [
                "INBOX.Sent Items",
                "INBOX.Sent",
                "INBOX.Work.Trash",
                "INBOX.Deleted Messages"
            ]
        );
        assert!(p.folders[2].create);
    }

    /// Without the role on the destination, every source folder of one role goes to the
    /// folder made for the first (with the role, where the server takes CREATE USE).
    #[test]
    fn one_folder_per_role_when_the_destination_has_none() {
        let src = [
            folder("Sent Messages", Some("/"), None, true),
            folder("送信済み", Some("/"), None, true),
            folder("Sent", Some("/"), Some("\\Sent"), true),
        ];
        let mut d = dest('/', "", &[("INBOX", None)]);
        d.create_special_use = true;
        let p = plan_folders(&src, &ns("", '/'), &d, &PlanOptions::default()).unwrap();
        assert_eq!(dests(&p), ["Sent Messages"; 3]);
        assert!(p.folders[0].create && !p.folders[1].create && !p.folders[2].create);
        assert_eq!(p.folders[0].create_role.as_deref(), Some("\\Sent"));
        assert_eq!(p.folders[1].create_role, None);
    }

    /// `--map` and `--prefix` see names below the source's namespace, levels joined by `/`.
    #[test]
    fn map_and_prefix_see_names_below_the_namespace() {
        let src = [
            folder("INBOX", Some("."), None, true),
            folder("INBOX.Old.2019", Some("."), None, true),
        ];
        let d = dest('/', "", &[("INBOX", None)]);
        let opts = PlanOptions {
            maps: vec!["Old/*=Archive/*".parse().unwrap()],
            prefix: None,
        };
        let p = plan_folders(&src, &ns("INBOX.", '.'), &d, &opts).unwrap();
        assert_eq!(dests(&p), ["INBOX", "Archive/2019"]);
        let opts = PlanOptions {
            maps: vec![],
            prefix: Some("Imported".into()),
        };
        let p = plan_folders(&src, &ns("INBOX.", '.'), &d, &opts).unwrap();
        assert_eq!(dests(&p), ["Imported/INBOX", "Imported/Old/2019"]);
    }

    /// The recorded namespace wins; without one, an IMAP listing where everything but
    /// INBOX sits under `INBOX.` is taken as that namespace, anything else as the root.
    #[test]
    fn namespace_assumed_without_a_record() {
        let rec = crate::archive::Namespace {
            prefix: "INBOX.".into(),
            delimiter: Some(".".into()),
        };
        let root = [
            folder("INBOX", Some("/"), None, true),
            folder("Sent", Some("/"), None, true),
        ];
        assert_eq!(source_namespace(Some(&rec), &root), ns("INBOX.", '.'));
        let courier = [
            folder("INBOX", Some("."), None, true),
            folder("INBOX.Sent", Some("."), None, true),
            folder("INBOX.a.b", Some("."), None, true),
        ];
        assert_eq!(source_namespace(None, &courier), ns("INBOX.", '.'));
        assert_eq!(source_namespace(None, &root), ns("", '/'));
        let mixed = [
            folder("INBOX.Sent", Some("."), None, true),
            folder("Other", Some("."), None, true),
        ];
        assert_eq!(source_namespace(None, &mixed), ns("", '.'));
        let only_inbox = [folder("INBOX", Some("."), None, true)];
        assert_eq!(source_namespace(None, &only_inbox), ns("", '.'));
        let slash_children = [
            folder("INBOX", Some("/"), None, true),
            folder("INBOX/a", Some("/"), None, true),
        ];
        assert_eq!(source_namespace(None, &slash_children), ns("", '/'));
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
