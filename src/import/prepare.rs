//! The prepare phase: the chain's folders, connections, the destination's layout, the
//! records of every archived message, and the folders created on the destination.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use super::plan::{DestLayout, Plan};
use super::{DestState, ImportOptions, ImportReport, Rec, St};
use crate::archive::{Archive, FolderRecord};
use crate::mail::identity::{self, IdHash};
use crate::reconcile::Census;
use crate::source::imap::dest::{create_command, subscribe_command, DestCaps};
use crate::source::imap::{ImapError, ImapSession};

/// Folders across the chain, first record wins; subscriptions add up.
pub(super) fn chain_folders(archives: &[Archive]) -> Vec<FolderRecord> {
    let mut folders: Vec<FolderRecord> = Vec::new();
    for a in archives {
        for f in &a.index.folders {
            match folders.iter_mut().find(|x| x.name == f.name) {
                Some(x) => x.subscribed |= f.subscribed,
                None => folders.push(f.clone()),
            }
        }
    }
    folders
}

/// Connects `n` sessions (at least one).
pub(super) async fn connect_many(
    opts: &ImportOptions,
    n: usize,
) -> Result<Vec<ImapSession>, ImapError> {
    let futs = (0..n.max(1)).map(|_| {
        ImapSession::connect_with_timeout(&opts.dest, &opts.creds, &opts.tls, opts.timeout)
    });
    let res = futures::future::join_all(futs).await;
    let mut out = Vec::new();
    let mut first_err = None;
    for r in res {
        match r {
            Ok(s) => out.push(s),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    // Fewer connections than asked is fine (a per-user connection limit); none is not.
    if out.is_empty() {
        return Err(first_err.expect("at least one attempt"));
    }
    Ok(out)
}

/// Connects `--jobs` sessions (fewer when the server limits connections, at least
/// one), noting what the user should know about them.
pub(super) async fn open_sessions(
    opts: &ImportOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<ImapSession>, ImapError> {
    let sessions = connect_many(opts, opts.jobs).await?;
    if sessions.len() < opts.jobs.max(1) {
        notes.push(format!(
            "{} of {} connections opened (the server limits connections); continuing with fewer",
            sessions.len(),
            opts.jobs.max(1)
        ));
    }
    if !sessions[0].is_tls() {
        notes.push(format!(
            "{}: the session ran in clear text (--allow-plaintext; the server offers no STARTTLS)",
            opts.dest
        ));
    }
    Ok(sessions)
}

/// What the destination says about its folders and hierarchy.
pub(super) async fn dest_layout(
    s: &mut ImapSession,
    caps: &DestCaps,
) -> Result<DestLayout, ImapError> {
    let list = s.list().await?;
    let ns = s.namespace().await?;
    let layout = DestLayout::from_listing(&list, ns, caps.create_special_use);
    Ok(layout)
}

/// One message of the chain: its archive and its index record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct MemberRef {
    pub(super) archive: usize,
    pub(super) record: usize,
}

/// The record (its index in `recs`, kept in chain order) of a member of the chain.
pub(super) fn gid_of(recs: &[Rec], archive: usize, record: usize) -> Option<usize> {
    recs.binary_search_by_key(&(archive, record), |r| (r.arch as usize, r.idx as usize))
        .ok()
}

/// The destination folders (distinct: several source folders may land in one) and the
/// destination folder of each planned folder.
pub(super) struct Dests {
    pub(super) dests: Vec<DestState>,
    pub(super) folder_dest: Vec<usize>,
}

pub(super) fn dest_states(plan: &Plan, other_deliveries: bool) -> Dests {
    let mut dests: Vec<DestState> = Vec::new();
    let mut folder_dest: Vec<usize> = Vec::new();
    for fp in &plan.folders {
        let i = match dests.iter().position(|d| d.raw == fp.dest_raw) {
            Some(i) => i,
            None => {
                dests.push(DestState {
                    raw: fp.dest_raw.clone(),
                    ambiguous: HashSet::new(),
                    sizes_by_id: HashMap::new(),
                    other_deliveries,
                    state: Census::default(),
                    permanent: None,
                    uidvalidity: None,
                    parts: None,
                    broken: None,
                });
                dests.len() - 1
            }
        };
        folder_dest.push(i);
    }
    Dests { dests, folder_dest }
}

/// The planned folder of each source folder name.
fn folder_index(plan: &Plan) -> HashMap<&str, usize> {
    plan.folders
        .iter()
        .enumerate()
        .map(|(i, f)| (f.source.as_str(), i))
        .collect()
}

/// Where the chain's messages go: the planned folder of each record (per archive, in
/// index order; [`NOT_PLANNED`] for none), read once so that a pass parses only its own
/// records; how many go into each destination folder; and the messages naming a folder
/// their index does not list (they cannot be placed, and are reported as failed rather
/// than left out unseen).
pub(super) struct Placement {
    pub(super) folder_of: Vec<Vec<u32>>,
    pub(super) counts: Vec<u64>,
    pub(super) unplaced: Vec<MemberRef>,
}

pub(super) const NOT_PLANNED: u32 = u32::MAX;

pub(super) fn placement(
    archives: &[Archive],
    plan: &Plan,
    folder_dest: &[usize],
    dests: usize,
) -> Placement {
    let folder_ix = folder_index(plan);
    let mut p = Placement {
        folder_of: Vec::new(),
        counts: vec![0u64; dests],
        unplaced: Vec::new(),
    };
    for (ai, a) in archives.iter().enumerate() {
        let mut of = Vec::with_capacity(a.index.messages.len());
        for (mi, m) in a.index.messages.iter().enumerate() {
            let fi = folder_ix.get(m.folder.as_str()).copied();
            of.push(fi.map_or(NOT_PLANNED, |fi| fi as u32));
            match fi {
                Some(fi) => p.counts[folder_dest[fi]] += 1,
                None if !a.index.folders.iter().any(|f| f.name == m.folder) => {
                    p.unplaced.push(MemberRef {
                        archive: ai,
                        record: mi,
                    })
                }
                None => {}
            }
        }
        p.folder_of.push(of);
    }
    p
}

/// One pass of the import: a run of whole destination folders, or one part of a folder
/// holding more than a pass may (its records numbered `part` among the folder's, in
/// chain order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pass {
    pub(super) dests: Range<usize>,
    pub(super) part: Option<Range<u64>>,
}

impl Pass {
    /// The folder this pass works on a part of.
    pub(super) fn split_dest(&self) -> Option<usize> {
        self.part.as_ref().map(|_| self.dests.start)
    }

    /// Archived messages in the pass (`counts`: per destination folder).
    pub(super) fn messages(&self, counts: &[u64]) -> u64 {
        match &self.part {
            Some(p) => p.end - p.start,
            None => counts[self.dests.clone()].iter().sum(),
        }
    }

    /// The pass is the last to work on its folders (whole, or the last part).
    pub(super) fn ends_its_folders(&self, counts: &[u64]) -> bool {
        self.part
            .as_ref()
            .is_none_or(|p| p.end == counts[self.dests.start])
    }
}

/// The passes over destination folders holding `counts` archived messages: runs of at
/// most `cap` (`census::pipelines`), a folder over it cut into parts of `cap`.
pub(super) fn passes(counts: &[u64], cap: u64) -> Vec<Pass> {
    let mut out = Vec::new();
    for run in crate::census::pipelines(counts, cap) {
        let n: u64 = counts[run.clone()].iter().sum();
        if n <= cap {
            out.push(Pass {
                dests: run,
                part: None,
            });
            continue;
        }
        let mut lo = 0;
        while lo < n {
            let hi = (lo + cap).min(n);
            out.push(Pass {
                dests: run.clone(),
                part: Some(lo..hi),
            });
            lo = hi;
        }
    }
    out
}

/// A record per archived message of `pass` (its destination folders, or its part), in
/// chain order (archive, then record: [`gid_of`] finds one by binary search, where a
/// map of a million `MemberRef`s cost ~40 MB). The first pass over a folder also sets
/// its ambiguous Message-IDs (and, with `--other-deliveries`, archived sizes by
/// Message-ID) from all its records; its later parts keep them.
pub(super) fn records(
    archives: &[Archive],
    placed: &Placement,
    folder_dest: &[usize],
    dests: &mut [DestState],
    pass: &Pass,
) -> Vec<Rec> {
    let slice = &pass.dests;
    let learn_ids = |d: &DestState| pass.part.is_none() || d.parts.is_none();
    let mut ambiguous: Vec<Option<identity::AmbiguousIds>> = dests[slice.clone()]
        .iter()
        .map(|d| learn_ids(d).then(Default::default))
        .collect();
    // A part's records are numbered among its folder's (a part is of one folder).
    let mut ordinal = 0u64;
    // Sized once: grown by doubling, the records' Vec was up to twice their size.
    let mut recs: Vec<Rec> = Vec::with_capacity(pass.messages(&placed.counts) as usize);
    for (ai, a) in archives.iter().enumerate() {
        for (mi, &fi) in placed.folder_of[ai].iter().enumerate() {
            if fi == NOT_PLANNED || !slice.contains(&folder_dest[fi as usize]) {
                continue;
            }
            let (fi, dest) = (fi as usize, folder_dest[fi as usize]);
            ordinal += 1;
            let in_pass = pass
                .part
                .as_ref()
                .is_none_or(|p| p.contains(&(ordinal - 1)));
            let amb = &mut ambiguous[dest - slice.start];
            if !in_pass && amb.is_none() {
                continue;
            }
            let m = a.index.messages.get(mi);
            if let Some(amb) = amb {
                amb.add(m.message_id.as_deref(), &m.sha256);
                let d = &mut dests[dest];
                if d.other_deliveries {
                    if let Some(id) = m.message_id.as_deref().and_then(identity::norm_message_id) {
                        let sizes = d.sizes_by_id.entry(IdHash::of(&id)).or_default();
                        sizes.push(m.size);
                        sizes.extend(m.source_size);
                    }
                }
            }
            if !in_pass {
                continue;
            }
            let mut raw_sha = [0u8; 32];
            let _ = hex::decode_to_slice(&m.sha256, &mut raw_sha);
            recs.push(Rec {
                arch: u32::try_from(ai).expect("under 4G archives"),
                idx: u32::try_from(mi).expect("under 4G records"),
                folder: fi,
                dest,
                st: St::Pending,
                key: None,
                raw_sha,
                head: None,
                flags: Default::default(),
                fix_flags: Default::default(),
                size: m.size,
                verified: None,
                crlf_sent: false,
                other_delivery: false,
            });
        }
    }
    for (d, a) in dests[slice.clone()].iter_mut().zip(ambiguous) {
        if let Some(a) = a {
            d.ambiguous = a.finish();
        }
    }
    recs
}

/// Creates the parents, then each planned folder, and subscribes as the source had. A
/// folder that cannot be created is marked broken (its messages fail); returns the
/// planned folders created (or, in a dry run, to create).
pub(super) async fn make_folders(
    s: &mut ImapSession,
    plan: &Plan,
    dests: &mut [DestState],
    folder_dest: &[usize],
    dry_run: bool,
    rep: &mut ImportReport,
) -> Result<HashSet<usize>, ImapError> {
    // Folders: parents first, then each planned folder; subscriptions as the source had.
    // Every CREATE and SUBSCRIBE goes in one pipeline, in that order (the server runs
    // them in turn): one round trip instead of one or two per folder.
    let mut cmds = Vec::new();
    if !dry_run {
        for p in &plan.parents {
            cmds.push(create_command(&p.dest_raw, None));
        }
        for fp in &plan.folders {
            if fp.create {
                cmds.push(create_command(&fp.dest_raw, fp.create_role.as_deref()));
            }
            if fp.subscribe {
                cmds.push(subscribe_command(&fp.dest_raw));
            }
        }
    }
    let mut answers = s.simple_commands(&cmds).await?.into_iter();
    let mut created: HashSet<usize> = HashSet::new();
    for p in &plan.parents {
        rep.parents_created.push(p.dest.clone());
        if !dry_run {
            let c = answers.next().expect("an answer per command");
            if !c.ok && !c.already_exists() {
                rep.notes.push(format!(
                    "cannot create parent folder {:?}: {} {}",
                    p.dest, c.status, c.text
                ));
            }
        }
    }
    for (fi, fp) in plan.folders.iter().enumerate() {
        // A server that refuses the role still gets the folder (then subscribed
        // again, as the pipelined SUBSCRIBE may have come too early for it).
        let mut retried = false;
        if fp.create && !dry_run {
            let mut c = answers.next().expect("an answer per command");
            if !c.ok && fp.create_role.is_some() && !c.already_exists() {
                c = s.create_folder(&fp.dest_raw, None).await?;
                retried = true;
            }
            if !c.ok && !c.already_exists() {
                dests[folder_dest[fi]].broken = Some(format!(
                    "cannot create folder {:?}: {} {}",
                    fp.dest, c.status, c.text
                ));
            }
        }
        crate::log::event!(
            "folder {:?}{}",
            fp.dest,
            match (fp.create, dry_run) {
                (true, true) => " would be created",
                (true, false) => " created",
                (false, _) => " exists on the server",
            }
        );
        if fp.create {
            created.insert(fi);
        }
        if fp.subscribe && !dry_run {
            let mut c = answers.next().expect("an answer per command");
            if !c.ok && retried {
                c = s.subscribe(&fp.dest_raw).await?;
            }
            if !c.ok {
                rep.notes.push(format!(
                    "cannot subscribe {:?}: {} {}",
                    fp.dest, c.status, c.text
                ));
            }
        }
    }

    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::{passes, Pass};

    fn whole(r: std::ops::Range<usize>) -> Pass {
        Pass {
            dests: r,
            part: None,
        }
    }

    #[test]
    fn passes_run_whole_folders_up_to_the_cap_and_cut_a_bigger_one_into_parts() {
        assert!(passes(&[], 10).is_empty());
        assert_eq!(passes(&[3, 4, 3], 10), vec![whole(0..3)]);
        let part = |r| Pass {
            dests: 1..2,
            part: Some(r),
        };
        assert_eq!(
            passes(&[4, 25, 10, 0], 10),
            vec![
                whole(0..1),
                part(0..10),
                part(10..20),
                part(20..25),
                whole(2..4)
            ]
        );
        // Every archived message is in exactly one pass.
        for cap in 1..12 {
            let counts = [7, 0, 23, 1, 1, 11];
            let n: u64 = passes(&counts, cap)
                .iter()
                .map(|p| match &p.part {
                    Some(r) => r.end - r.start,
                    None => counts[p.dests.clone()].iter().sum(),
                })
                .sum();
            assert_eq!(n, counts.iter().sum::<u64>(), "cap {cap}");
        }
    }
}
