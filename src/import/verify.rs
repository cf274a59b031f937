//! The verify phase: every archived message checked on the destination, folder by
//! folder (early, while other folders still append, or after the appends), and the
//! flags a message already there lacks added before that.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::append::{AppendUid, Outcome};
use super::learn::{learn_for_verify, over_folders};
use super::prepare::connect_many;
use super::{plan, DestRef, DestState, ImportError, ImportOptions, Rec, St, VerifyMode};
use crate::archive::{Archive, MessageRecord};
use crate::mail::flags::FlagSet;
use crate::mail::identity::{self, MsgKey};
use crate::reconcile::Held;
use crate::source::imap::{ImapError, ImapSession};

/// Adds the flags that messages already on the destination lack (`UID STORE +FLAGS`;
/// flags the server has beyond the archived ones stay). A refusal is a note;
/// verification then reports the flags still missing.
pub(super) async fn add_missing_flags(
    s: &mut ImapSession,
    recs: &[Rec],
    dests: &[DestState],
    notes: &mut Vec<String>,
) -> Result<(), ImapError> {
    let mut by_dest: std::collections::BTreeMap<usize, Vec<(u32, Vec<String>)>> =
        Default::default();
    for r in recs.iter().filter(|r| !r.fix_flags.is_empty()) {
        if let St::There(uid) = r.st {
            by_dest
                .entry(r.dest)
                .or_default()
                .push((uid, r.fix_flags.to_vec()));
        }
    }
    for (di, fixes) in by_dest {
        let raw = &dests[di].raw;
        match s.select(raw).await {
            Ok(_) => {}
            Err(e) if e.is_connection_lost() => return Err(e),
            Err(e) => {
                notes.push(format!("cannot open {raw:?} to add missing flags: {e}"));
                continue;
            }
        }
        for (uid, flags) in fixes {
            let c = s
                .simple_command(&format!(
                    "UID STORE {uid} +FLAGS.SILENT ({})",
                    flags.join(" ")
                ))
                .await?;
            if !c.ok {
                notes.push(format!(
                    "cannot add flags ({}) to UID {uid} of {raw:?}: {} {}",
                    flags.join(" "),
                    c.status,
                    c.text
                ));
            }
        }
        s.unselect().await?;
    }
    Ok(())
}

/// What verification checks of one decided record (`There` or `Appended`; a `Queued`
/// one gets its UID from the APPEND's answer later).
pub(super) fn verify_item(gid: usize, r: &Rec, m: &MessageRecord, mode: VerifyMode) -> VerifyItem {
    let (uid, uidvalidity) = match r.st {
        St::There(u) => (Some(u), None),
        St::Appended(Some(a)) => (Some(a.uid), Some(a.uidvalidity)),
        _ => (None, None),
    };
    let key = r.key.clone().expect("decided messages have a key");
    // Another delivery differs in its trace fields: decide matched it by bytes already,
    // and its own bytes are not the archived ones.
    let bytes_too =
        !r.other_delivery && (mode == VerifyMode::Full || (key.at_risk && r.head.is_none()));
    VerifyItem {
        gid,
        uid,
        uidvalidity,
        key,
        flags: r.flags,
        date: m.internaldate_secs(),
        present: matches!(r.st, St::There(_)),
        other_delivery: r.other_delivery,
        date_text: m.internaldate.clone(),
        bytes_too,
        head: if mode == VerifyMode::Full {
            None
        } else {
            r.head.clone()
        },
    }
}

/// A destination folder whose every archived message the reader has decided: what to
/// verify there once the queued ones are answered.
pub(super) struct Sealed {
    pub(super) dest: usize,
    pub(super) items: Vec<SealedItem>,
}

pub(super) struct SealedItem {
    pub(super) item: VerifyItem,
    /// Queued for APPEND: its UID is known once the server answers.
    pub(super) queued: bool,
}

/// Counts the records of each destination folder as the reader decides them, and hands
/// a folder to verification when its last one is decided. Folders usually lie one after
/// the other in an archive, so the first ones are verified while the rest append.
pub(super) struct Sealer {
    pub(super) left: Vec<usize>,
    pub(super) gids: Vec<Vec<usize>>,
    pub(super) tx: Option<mpsc::UnboundedSender<Sealed>>,
}

impl Sealer {
    pub(super) fn new(
        recs: &[Rec],
        dests: usize,
        tx: Option<mpsc::UnboundedSender<Sealed>>,
    ) -> Sealer {
        let mut gids = vec![Vec::new(); dests];
        for (g, r) in recs.iter().enumerate() {
            gids[r.dest].push(g);
        }
        Sealer {
            left: gids.iter().map(Vec::len).collect(),
            gids,
            tx,
        }
    }

    /// Record `gid` has just been decided; true when it was the last of its destination
    /// folder.
    pub(super) fn decided(
        &mut self,
        gid: usize,
        recs: &[Rec],
        archives: &[Archive],
        mode: VerifyMode,
    ) -> bool {
        let d = recs[gid].dest;
        self.left[d] -= 1;
        let Some(tx) = self.tx.as_ref().filter(|_| self.left[d] == 0) else {
            return self.left[d] == 0;
        };
        // Flags are added to messages already there after the appends: such a folder is
        // verified after that.
        if self.gids[d].iter().any(|&g| !recs[g].fix_flags.is_empty()) {
            return true;
        }
        let items = self.gids[d]
            .iter()
            .filter(|&&g| matches!(recs[g].st, St::There(_) | St::Queued))
            .map(|&g| {
                let r = &recs[g];
                let m = &archives[r.arch as usize].index.messages.get(r.idx as usize);
                SealedItem {
                    item: verify_item(g, r, m, mode),
                    queued: r.st == St::Queued,
                }
            })
            .collect();
        let _ = tx.send(Sealed { dest: d, items });
        true
    }
}

/// Verifies the folders handed over while the import still appends into others, on
/// its own connection (`given`, one left from an earlier pass, or its own). A folder it
/// cannot settle (no connection, an error) is left to the verification after the
/// appends, which retries. With `connect_now` its connection logs in while the appends
/// begin, not when the first folder is done (where its round trips would delay that
/// folder's check).
pub(super) async fn early_verify(
    mut rx: mpsc::UnboundedReceiver<(usize, Vec<VerifyItem>)>,
    opts: ImportOptions,
    folders: Arc<Vec<DestRef>>,
    connect_now: bool,
    given: Option<ImapSession>,
) -> (VerifiedFolders, Option<ImapSession>) {
    let mut login = (connect_now && given.is_none()).then(|| {
        let o = opts.clone();
        tokio::spawn(async move {
            ImapSession::connect_with_timeout(&o.dest, &o.creds, &o.tls, o.timeout).await
        })
    });
    let mut s: Option<ImapSession> = given;
    let mut gave_up = false;
    let mut done = HashMap::new();
    while let Some((di, items)) = rx.recv().await {
        if items.is_empty() {
            // Nothing arrived there to check: no reason to open a connection.
            done.insert(di, FolderChecked::default());
            continue;
        }
        if s.is_none() && !gave_up {
            let r = match login.take() {
                Some(h) => h.await.expect("login task panicked"),
                None => {
                    ImapSession::connect_with_timeout(
                        &opts.dest,
                        &opts.creds,
                        &opts.tls,
                        opts.timeout,
                    )
                    .await
                }
            };
            match r {
                Ok(c) => s = Some(c),
                Err(_) => gave_up = true,
            }
        }
        let Some(sess) = s.as_mut() else {
            continue;
        };
        match verify_folder(sess, &folders[di], &items).await {
            Ok(v) => {
                done.insert(di, v);
            }
            Err(e) if e.is_connection_lost() => s = None,
            Err(_) => {}
        }
    }
    if let (None, Some(h)) = (&s, login) {
        // Logged in for folders that never needed it: handed back to log out.
        s = h.await.ok().and_then(Result::ok);
    }
    (done, s)
}

/// Per destination folder verified early: what was found.
pub(super) type VerifiedFolders = HashMap<usize, FolderChecked>;

/// One destination folder's check: each record's result, and the UIDs of the server
/// messages that stood for them (an import in parts keeps later parts off them).
#[derive(Debug, Default)]
pub(super) struct FolderChecked {
    pub(super) results: Vec<(usize, Checked)>,
    pub(super) uids: Vec<u32>,
}

/// A record's verification: present, with notes on metadata that differs on a message
/// that was already there (nothing to fix; not a failure), or why it failed.
pub(super) type Checked = Result<Vec<String>, String>;

/// One destination folder's messages to check after the appends.
struct FolderCheck {
    folder: DestRef,
    items: Vec<VerifyItem>,
}

#[derive(Clone)]
pub(super) struct VerifyItem {
    pub(super) gid: usize,
    /// Where the message is, when known: learned before appending, or the server's
    /// `APPENDUID` answer.
    pub(super) uid: Option<u32>,
    /// The UIDVALIDITY an `APPENDUID` named; the UID holds only while it is unchanged.
    pub(super) uidvalidity: Option<u32>,
    pub(super) key: Arc<MsgKey>,
    pub(super) flags: FlagSet,
    pub(super) date: Option<i64>,
    pub(super) bytes_too: bool,
    /// Already on the destination before this run: flags the server has beyond the
    /// archived ones and another INTERNALDATE are notes, not failures (an APPEND sets
    /// both; a message found there keeps its own).
    pub(super) present: bool,
    /// INTERNALDATE as archived, for the note when it differs.
    pub(super) date_text: Option<String>,
    /// Compare the header section only (see `Rec::head`); a mismatch falls back to the
    /// whole message.
    pub(super) head: Option<Box<[[u8; 32]; 3]>>,
    /// Already there as another delivery of the same mail: its size is its own.
    pub(super) other_delivery: bool,
}

/// Checks each archived message of one destination folder against what it holds now.
pub(super) async fn verify_folder(
    s: &mut ImapSession,
    folder: &DestRef,
    items: &[VerifyItem],
) -> Result<FolderChecked, ImapError> {
    // When the server named every message's UID (APPENDUID, or learned before), the
    // folder's metadata is enough and the server reads no message file; reading each
    // one's Message-ID was most of the check's time. Only the UIDs between the least
    // and the greatest named are read (a folder far larger than what was imported, or
    // a part of one). A UID that is not there sends the check round again, matching by
    // Message-ID and size over the whole folder.
    let named: Option<Vec<u32>> = items.iter().map(|i| i.uid).collect();
    if let Some(uids) = named.filter(|u| !u.is_empty()) {
        let range = (
            *uids.iter().min().expect("not empty"),
            *uids.iter().max().expect("not empty"),
        );
        if let Some(done) = verify_folder_by(s, folder, items, Some(range)).await? {
            return Ok(done);
        }
    }
    Ok(verify_folder_by(s, folder, items, None)
        .await?
        .expect("matching by Message-ID always decides"))
}

/// One round of [`verify_folder`]: with `uids`, matching by UID alone within that
/// range, `None` when a message was not at its UID; without, by UID and Message-ID
/// over the whole folder.
async fn verify_folder_by(
    s: &mut ImapSession,
    folder: &DestRef,
    items: &[VerifyItem],
    uids: Option<(u32, u32)>,
) -> Result<Option<FolderChecked>, ImapError> {
    let with_ids = uids.is_none();
    let (mut state, uidvalidity) = learn_for_verify(s, folder, uids, with_ids).await?;
    let mut found_uids = Vec::new();
    let mut out = Vec::new();
    let mut body_check: HashMap<u32, &VerifyItem> = HashMap::new();
    let mut head_check: HashMap<u32, &VerifyItem> = HashMap::new();
    // Notes of the messages whose bytes are still to be compared.
    let mut pending: HashMap<usize, Vec<String>> = HashMap::new();
    // Known UIDs first, so a claim by key cannot take a message another record owns.
    let mut order: Vec<&VerifyItem> = items.iter().filter(|i| i.uid.is_some()).collect();
    order.extend(items.iter().filter(|i| i.uid.is_none()));
    for it in order {
        let uid = it
            .uid
            .filter(|_| it.uidvalidity.is_none() || it.uidvalidity == uidvalidity);
        let found = match uid {
            Some(u) => state.claim_uid(u).cloned(),
            None => None,
        };
        if found.is_none() && !with_ids {
            return Ok(None);
        }
        let found = found.or_else(|| {
            state
                .claim_pref(&it.key, |e| {
                    plan::same_flags(&it.flags.to_vec(), &e.flags.to_vec())
                })
                .map(|(_, e)| e.clone())
        });
        let Some(e) = found else {
            let near: Vec<String> = state
                .msgs
                .iter()
                .filter(|m| m.message_id.is_some() && m.message_id == it.key.id_hash())
                .map(|m| format!("UID {} with {} bytes", m.uid, m.size()))
                .collect();
            let mut why = "missing on the destination after the import".to_string();
            if !near.is_empty() {
                why.push_str(&format!(
                    " (the folder holds this Message-ID as {}; archived size {}, CRLF form {})",
                    near.join(", "),
                    it.key.sizes()[0],
                    it.key.sizes()[1]
                ));
            }
            out.push((it.gid, Err(why)));
            continue;
        };
        found_uids.push(e.uid);
        let Metadata { problems, notes } = compare_metadata(it, &e);
        if !problems.is_empty() {
            out.push((it.gid, Err(problems.join("; "))));
            continue;
        }
        if it.bytes_too {
            body_check.insert(e.uid, it);
            pending.insert(it.gid, notes);
        } else if it.head.is_some() {
            head_check.insert(e.uid, it);
            pending.insert(it.gid, notes);
        } else {
            out.push((it.gid, Ok(notes)));
        }
    }
    if !head_check.is_empty() {
        // Servers that rewrite 8-bit header bytes (Cyrus) do it in the header: when the
        // stored header is the archived one, the message is. Anything else is settled
        // by the whole message below.
        let uids: Vec<u32> = head_check.keys().copied().collect();
        let mut same: HashSet<u32> = HashSet::new();
        s.fetch_section(&uids, "HEADER", |uid, head| {
            if let Some(want) = head_check.get(&uid).and_then(|it| it.head.as_deref()) {
                if want.contains(&sha2_raw(head)) {
                    same.insert(uid);
                }
            }
        })
        .await?;
        for (uid, it) in head_check {
            if same.contains(&uid) {
                out.push((it.gid, Ok(pending.remove(&it.gid).unwrap_or_default())));
            } else {
                body_check.insert(uid, it);
            }
        }
    }
    if !body_check.is_empty() {
        let uids: Vec<u32> = body_check.keys().copied().collect();
        let mut seen: HashSet<u32> = HashSet::new();
        s.fetch_bodies(&uids, |uid, body| {
            let Some(it) = body_check.get(&uid) else {
                return;
            };
            seen.insert(uid);
            // The server's copy in CRLF form against the archived CRLF form covers a
            // server that keeps some bare line ends and converts others.
            let res = if it.key.is_exact(&sha2_raw(body))
                || identity::crlf_sha256(body) == it.key.exact()[1]
            {
                Ok(pending.remove(&it.gid).unwrap_or_default())
            } else if it.key.is_form(&identity::canonical_sha256(body)) {
                Err("the server altered the message: NUL, 8-bit or line-end bytes were rewritten (SHA-256 of the stored bytes differs)".into())
            } else {
                Err("bytes differ: SHA-256 of the server's copy (CRLF form) is not the archived one".into())
            };
            out.push((it.gid, res));
        })
        .await?;
        for (uid, it) in &body_check {
            if !seen.contains(uid) {
                out.push((it.gid, Err("the server returned no body to compare".into())));
            }
        }
    }
    Ok(Some(FolderChecked {
        results: out,
        uids: found_uids,
    }))
}

/// How a server copy's metadata compares with the archived message: `problems` fail
/// the message, `notes` are what a message already there may differ in (the import
/// adds missing flags and never removes any; IMAP cannot change a stored date).
#[derive(Debug, Default, PartialEq, Eq)]
struct Metadata {
    problems: Vec<String>,
    notes: Vec<String>,
}

fn compare_metadata(it: &VerifyItem, e: &Held) -> Metadata {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    if it.other_delivery {
        notes.push(format!(
            "another delivery of the same mail ({} bytes; archived {}): only trace fields such as Received differ",
            e.size(), it.key.sizes()[0]
        ));
    } else if !it.key.sizes().contains(&e.size()) {
        problems.push(format!(
            "the server stores it altered: size differs (archived {} bytes, CRLF form {}, server {})",
            it.key.sizes()[0], it.key.sizes()[1], e.size()
        ));
    }
    let (missing, extra) = crate::reconcile::flag_gap(&it.flags.to_vec(), &e.flags.to_vec());
    if it.present {
        if !missing.is_empty() {
            problems.push(format!(
                "flags missing on the server: ({})",
                missing.join(" ")
            ));
        }
        if !extra.is_empty() {
            notes.push(format!(
                "the server's copy also has flags ({}) the archive lacks; left as they are",
                extra.join(" ")
            ));
        }
    } else if !missing.is_empty() || !extra.is_empty() {
        problems.push(format!(
            "flags differ: archived ({}), server ({})",
            it.flags.to_vec().join(" "),
            e.flags
                .to_vec()
                .iter()
                .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if let Some(want) = it.date {
        // `e.date` is the server's text parsed (`Held::with_internaldate`).
        let server = e.internaldate();
        let server = server.as_deref().unwrap_or("none");
        let archived = it.date_text.as_deref().unwrap_or("none");
        if e.date() == Some(want) {
        } else if it.present {
            notes.push(format!(
                "INTERNALDATE differs: archived {archived}, server {server} (IMAP cannot change the date of a message already there)"
            ));
        } else {
            problems.push(format!(
                "INTERNALDATE differs: archived {archived}, server {server}"
            ));
        }
    }
    Metadata { problems, notes }
}

fn sha2_raw(b: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(b).into()
}

/// Verifies the folders early verification did not settle, after the appends.
pub(super) async fn verify_late(
    opts: &ImportOptions,
    mut sessions: Vec<ImapSession>,
    recs: &mut [Rec],
    dests: &mut [DestState],
    archives: &[Archive],
    folders: &Arc<Vec<DestRef>>,
    to_check: Vec<usize>,
) -> Result<Vec<ImapSession>, ImportError> {
    if to_check.is_empty() {
        return Ok(sessions);
    }
    if sessions.is_empty() {
        sessions = connect_many(opts, 1).await?;
    }
    let checked_here: HashSet<usize> = to_check.iter().copied().collect();
    let mut per_dest: Vec<Vec<VerifyItem>> = vec![Vec::new(); dests.len()];
    for (gid, r) in recs.iter().enumerate() {
        if matches!(r.st, St::There(_) | St::Appended(_)) && checked_here.contains(&r.dest) {
            let m = &archives[r.arch as usize].index.messages.get(r.idx as usize);
            per_dest[r.dest].push(verify_item(gid, r, m, opts.verify));
        }
    }
    let input: Arc<Vec<FolderCheck>> = Arc::new(
        folders
            .iter()
            .zip(per_dest)
            .map(|(f, items)| FolderCheck {
                folder: f.clone(),
                items,
            })
            .collect(),
    );
    let inp = input.clone();
    let (s2, checked) = over_folders(
        opts,
        std::mem::take(&mut sessions),
        to_check,
        move |mut s, di| {
            let inp = inp.clone();
            async move {
                let c = &inp[di];
                let r = verify_folder(&mut s, &c.folder, &c.items).await;
                (s, r)
            }
        },
    )
    .await;
    sessions = s2;
    for (di, r) in checked {
        match r {
            Ok(v) => {
                for (gid, res) in v.results {
                    recs[gid].verified = Some(res);
                }
                if let Some(p) = &mut dests[di].parts {
                    p.taken.extend(v.uids);
                }
            }
            Err(e) => {
                for it in &input[di].items {
                    recs[it.gid].verified = Some(Err(format!("cannot verify: {e}")));
                }
                dests[di].broken.get_or_insert(e.to_string());
            }
        }
    }
    Ok(sessions)
}

/// The answer to one message's APPEND, as early verification needs it.
enum Answer {
    Appended(Option<AppendUid>),
    Failed,
}

/// A sealed folder whose queued messages are not all answered yet.
struct Waiting {
    items: Vec<SealedItem>,
    answers_left: usize,
}

/// Collects the APPEND answers while the archive streams, and hands each sealed folder
/// to early verification (`to_verify`) once every queued message of it is answered,
/// with the UIDs the answers named. Returns every answer, by record.
pub(super) async fn route_answers(
    mut answers: mpsc::UnboundedReceiver<(usize, Outcome)>,
    mut seals: mpsc::UnboundedReceiver<Sealed>,
    to_verify: &mpsc::UnboundedSender<(usize, Vec<VerifyItem>)>,
    gid_dest: &[usize],
) -> Vec<(usize, Outcome)> {
    let mut outcomes: Vec<(usize, Outcome)> = Vec::new();
    // gid → the answer to its APPEND (by index: every record may have one).
    let mut answered: Vec<Option<Answer>> = Vec::new();
    answered.resize_with(gid_dest.len(), || None);
    // Sealed folders still waiting for answers.
    let mut waiting: HashMap<usize, Waiting> = HashMap::new();
    // What to verify of a sealed folder: a queued message once appended, with its UID.
    let ready = |items: Vec<SealedItem>, answered: &[Option<Answer>]| -> Vec<VerifyItem> {
        items
            .into_iter()
            .filter_map(|SealedItem { mut item, queued }| {
                if queued {
                    let Answer::Appended(uid) = answered[item.gid].as_ref()? else {
                        return None;
                    };
                    item.uid = uid.map(|u| u.uid);
                    item.uidvalidity = uid.map(|u| u.uidvalidity);
                }
                Some(item)
            })
            .collect()
    };
    let mut seals_open = true;
    loop {
        tokio::select! {
            o = answers.recv() => {
                let Some((gid, o)) = o else { break };
                answered[gid] = Some(match &o {
                    Outcome::Appended { uid, .. } => Answer::Appended(*uid),
                    Outcome::Failed(_) => Answer::Failed,
                });
                let d = gid_dest[gid];
                if let Some(w) = waiting.get_mut(&d) {
                    w.answers_left -= 1;
                    if w.answers_left == 0 {
                        let w = waiting.remove(&d).expect("present");
                        let _ = to_verify.send((d, ready(w.items, &answered)));
                    }
                }
                outcomes.push((gid, o));
            }
            sealed = seals.recv(), if seals_open => {
                let Some(Sealed { dest, items }) = sealed else {
                    seals_open = false;
                    continue;
                };
                let answers_left = items
                    .iter()
                    .filter(|it| it.queued && answered[it.item.gid].is_none())
                    .count();
                if answers_left == 0 {
                    let _ = to_verify.send((dest, ready(items, &answered)));
                } else {
                    waiting.insert(dest, Waiting { items, answers_left });
                }
            }
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn item(present: bool) -> VerifyItem {
        let b = b"Message-ID: <m@x>\r\n\r\nbody\r\n";
        VerifyItem {
            gid: 0,
            uid: Some(1),
            uidvalidity: None,
            key: Arc::new(MsgKey::of(b, [0; 32], &HashSet::new(), Some(1_600_000_000))),
            flags: FlagSet::new(["\\Seen", "\\Flagged"]),
            date: Some(1_600_000_000),
            bytes_too: false,
            present,
            date_text: Some("2020-09-13T12:26:40+00:00".into()),
            head: None,
            other_delivery: false,
        }
    }

    fn held(flags: &[&str], date: &str) -> Held {
        held_sized(27, flags, date)
    }

    fn held_sized(size: u32, flags: &[&str], date: &str) -> Held {
        Held::new(
            1,
            size,
            Some("m@x"),
            flags.iter().map(|f| f.to_string()).collect(),
        )
        .with_internaldate(Some(date))
    }

    const SAME: &str = "13-Sep-2020 12:26:40 +0000";
    const OTHER: &str = "01-Jan-2001 00:00:00 +0000";

    #[test]
    fn appended_messages_must_match_exactly() {
        let it = item(false);
        assert_eq!(
            compare_metadata(&it, &held(&["\\Seen", "\\Flagged", "\\Recent"], SAME)),
            Metadata::default()
        );
        let m = compare_metadata(&it, &held(&["\\Seen", "\\Flagged", "$X"], OTHER));
        assert_eq!(m.problems.len(), 2, "{m:?}");
        assert!(m.notes.is_empty());
    }

    #[test]
    fn a_failure_names_both_values() {
        let it = item(false);
        let h = held_sized(99, &["\\Seen", "\\Flagged"], OTHER);
        let m = compare_metadata(&it, &h);
        let date = m.problems.iter().find(|p| p.contains("INTERNALDATE"));
        assert!(
            date.is_some_and(|p| p.contains("2001") && p.contains("2020")),
            "{m:?}"
        );
        let size = m.problems.iter().find(|p| p.contains("size"));
        assert!(
            size.is_some_and(|p| p.contains("99") && p.contains(&it.key.sizes()[0].to_string())),
            "{m:?}"
        );
    }

    #[test]
    fn present_messages_differ_in_notes_but_miss_no_flag() {
        let it = item(true);
        let m = compare_metadata(&it, &held(&["\\Seen", "\\Flagged", "$X"], OTHER));
        assert!(m.problems.is_empty(), "{m:?}");
        assert_eq!(m.notes.len(), 2, "{m:?}");
        assert!(m
            .notes
            .iter()
            .any(|n| n.contains("2001") && n.contains("2020")));
        let m = compare_metadata(&it, &held(&["\\Seen"], SAME));
        assert_eq!(m.problems, vec!["flags missing on the server: (\\Flagged)"]);
    }
}
