//! The learn phase: what each destination folder holds (its census), read before
//! anything is appended, and again for verification.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use super::{DestRef, DestState, ImportError, ImportOptions, PartsSeen};
use crate::mail::identity::{self, IdHash};
use crate::reconcile::{Census, Held};
use crate::source::imap::session::{FetchWhat, FolderRead};
use crate::source::imap::{FetchedMessage, ImapError, ImapSession};

/// What one destination folder holds, the flags it keeps (`None`: any) and its
/// UIDVALIDITY.
pub(super) type Learned = (Census, Option<Vec<String>>, Option<u32>);

/// Learns what one destination folder holds (with `status_only`, its status alone: a
/// later part of a folder goes on with the census its earlier parts kept).
pub(super) async fn learn(
    s: &mut ImapSession,
    raw: &str,
    ambiguous: &HashSet<String>,
    sizes_by_id: &HashMap<IdHash, Vec<u64>>,
    read_only: bool,
    status_only: bool,
) -> Result<Learned, ImapError> {
    let st = if read_only {
        s.examine(raw).await?
    } else {
        s.select(raw).await?
    };
    let state = if status_only {
        Census::default()
    } else {
        let mut census = census_of(s.identities(st.exists).await?);
        let need = census.need_bytes(ambiguous, sizes_by_id);
        s.fetch_bodies(&need, |uid, b| census.set_bytes(uid, b))
            .await?;
        census
    };
    if !read_only {
        s.unselect().await?;
    }
    // An empty list means the server did not say: every flag is taken.
    let permanent = (!st.permanent_flags.is_empty()).then_some(st.permanent_flags);
    Ok((state, permanent, st.uidvalidity))
}

/// What verification needs of a folder (read-only): its messages (those with UIDs in
/// `uids`, or all), less those an earlier part of the import took (`taken`, sorted),
/// with or without each one's Message-ID, and its UIDVALIDITY.
pub(super) async fn learn_for_verify(
    s: &mut ImapSession,
    folder: &DestRef,
    uids: Option<(u32, u32)>,
    with_ids: bool,
) -> Result<(Census, Option<u32>), ImapError> {
    // EXAMINE and the census in one round trip.
    let what = if with_ids {
        FetchWhat::MetaMessageId
    } else {
        FetchWhat::Meta
    };
    let req = FolderRead {
        raw_name: folder.raw.clone(),
        read_only: true,
        what: Some(what),
        unselect: false,
        uids,
    };
    let out = s
        .read_folders_as::<Held>(&[req])
        .await?
        .pop()
        .expect("one folder read");
    let st = out.status?;
    let mut msgs = out.messages?;
    crate::reconcile::keep_off(&mut msgs, &folder.taken);
    let mut state = census_of(msgs);
    if with_ids {
        let need = state.need_bytes(&folder.ambiguous, &HashMap::new());
        s.fetch_bodies(&need, |uid, b| state.set_bytes(uid, b))
            .await?;
    }
    Ok((state, st.uidvalidity))
}

/// For a folder imported in parts: the first part notes the folder's UIDVALIDITY; a
/// later part goes on with the census the earlier parts `kept`, whose claims keep off
/// the server messages they paired, so a server copy stands for one archived message
/// across the parts, as in one pass. What came after the first part learned the
/// folder is this import's own appends, each checked by the part that sent it.
pub(super) fn census_for_part(d: &mut DestState, kept: Census) {
    let Some(p) = &d.parts else {
        d.parts = Some(PartsSeen {
            uidvalidity: d.uidvalidity,
            taken: Vec::new(),
        });
        return;
    };
    if p.uidvalidity != d.uidvalidity {
        d.broken = Some(format!(
            "its UIDVALIDITY changed while it was imported in parts ({:?}, then {:?}): import again",
            p.uidvalidity, d.uidvalidity
        ));
        return;
    }
    d.state = kept;
}

/// The bytes a census read in a pipeline needs (`need`, from [`Census::need_bytes`]),
/// read with the folder opened again: the census itself is not read twice. Should the
/// folder's UIDVALIDITY have changed in between, its UIDs name other messages: the
/// folder is learned again whole.
async fn complete_census(
    s: &mut ImapSession,
    f: &DestRef,
    learned: Learned,
    need: &[u32],
    read_only: bool,
) -> Result<Learned, ImapError> {
    let (mut census, permanent, uidvalidity) = learned;
    let st = if read_only {
        s.examine(&f.raw).await?
    } else {
        s.select(&f.raw).await?
    };
    if st.uidvalidity != uidvalidity {
        if !read_only {
            s.unselect().await?;
        }
        return learn(s, &f.raw, &f.ambiguous, &f.sizes_by_id, read_only, false).await;
    }
    s.fetch_bodies(need, |uid, b| census.set_bytes(uid, b))
        .await?;
    if !read_only {
        s.unselect().await?;
    }
    Ok((census, permanent, uidvalidity))
}

/// A census of a folder's messages, each kept as a [`Held`] as its FETCH response
/// arrives (`read_folders_as` and `uid_fetch_all` make each one a `Held`): a large
/// folder's responses are never held whole (~150 bytes a message before their
/// strings, where a `Held` takes 48).
pub(crate) fn census_of(mut msgs: Vec<Held>) -> Census {
    // A response without a UID (0 below) names no message.
    msgs.retain(|m| m.uid != 0);
    Census::new(msgs)
}

impl From<FetchedMessage> for Held {
    fn from(m: FetchedMessage) -> Held {
        let message_id = m.header_fields.as_deref().and_then(identity::message_id_of);
        Held::new(
            m.uid.unwrap_or(0),
            m.size.unwrap_or(0),
            message_id.as_deref(),
            m.flags.unwrap_or_default().into(),
        )
        .with_internaldate(m.internaldate.as_deref())
    }
}

/// Learns every folder of `to_learn` on one session in two pipelines: every folder
/// opened (SELECT, or EXAMINE in a dry run, then UNSELECT) for its count and
/// PERMANENTFLAGS, then the census of those holding messages (opened again, read,
/// left): two round trips for the lot, one when every folder is empty (a first
/// import), where one by one cost three per folder. As before, an empty folder's
/// messages are never fetched. A folder holding messages whose bytes must be compared
/// has those bytes read with the folder opened again. `Err` when the session failed:
/// the caller then learns folder by folder (on fresh connections as needed), exactly as
/// without the pipeline.
async fn learn_pipelined(
    s: &mut ImapSession,
    to_learn: &[usize],
    folders: &[DestRef],
    read_only: bool,
) -> Result<Vec<(usize, Result<Learned, ImapError>)>, ImapError> {
    let req = |di: usize, what| FolderRead {
        raw_name: folders[di].raw.clone(),
        read_only,
        what,
        unselect: !read_only,
        uids: None,
    };
    let all: Vec<FolderRead> = to_learn.iter().map(|&di| req(di, None)).collect();
    let opened = s.read_folders_as::<Held>(&all).await?;
    // A later part of a folder goes on with the census its earlier parts kept.
    let full: Vec<usize> = to_learn
        .iter()
        .zip(&opened)
        .filter(|(&di, _)| !folders[di].status_only)
        .filter(|(_, o)| o.status.as_ref().is_ok_and(|st| st.exists > 0))
        .map(|(&di, _)| di)
        .collect();
    let reqs: Vec<FolderRead> = full
        .iter()
        .map(|&di| req(di, Some(FetchWhat::MetaMessageId)))
        .collect();
    let mut read = s.read_folders_as::<Held>(&reqs).await?.into_iter();
    let mut res = Vec::new();
    for (&di, out) in to_learn.iter().zip(opened) {
        let f = &folders[di];
        let out = if full.contains(&di) {
            read.next().expect("a census per folder holding messages")
        } else {
            out
        };
        let r = match (out.status, out.messages) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(st), Ok(msgs)) => {
                let census = census_of(msgs);
                let need = census.need_bytes(&f.ambiguous, &f.sizes_by_id);
                let permanent = (!st.permanent_flags.is_empty()).then_some(st.permanent_flags);
                let learned = (census, permanent, st.uidvalidity);
                if need.is_empty() {
                    Ok(learned)
                } else {
                    complete_census(s, f, learned, &need, read_only).await
                }
            }
        };
        match r {
            Err(e) if e.is_connection_lost() => return Err(e),
            r => res.push((di, r)),
        }
    }
    Ok(res)
}

/// Connections a folder's learning or verification may use before its loss is fatal.
const FOLDER_TRIES: u32 = 4;

/// Runs `f` over destination folders one after the other on one session (Dovecot 2.3
/// panics on a lock when several sessions of one user open freshly created folders at
/// once). A folder whose connection is lost is tried once more on a new connection.
pub(super) async fn over_folders<T, F, Fut>(
    opts: &ImportOptions,
    mut sessions: Vec<ImapSession>,
    folders: Vec<usize>,
    f: F,
) -> (Vec<ImapSession>, Vec<(usize, Result<T, ImapError>)>)
where
    F: Fn(ImapSession, usize) -> Fut,
    Fut: std::future::Future<Output = (ImapSession, Result<T, ImapError>)>,
{
    let mut results = Vec::new();
    let mut cur = sessions.pop();
    for i in folders {
        let mut tries = 0;
        loop {
            let s = match cur.take() {
                Some(s) => s,
                None => match ImapSession::connect_with_timeout(
                    &opts.dest,
                    &opts.creds,
                    &opts.tls,
                    opts.timeout,
                )
                .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        results.push((i, Err(e)));
                        break;
                    }
                },
            };
            let (s, r) = f(s, i).await;
            match r {
                Err(e) if e.is_connection_lost() => {
                    tries += 1;
                    if tries >= FOLDER_TRIES {
                        results.push((i, Err(e)));
                        break;
                    }
                    // A busy server (or Dovecot's lock panic) drops a session now and
                    // then; give it a moment before the fresh connection.
                    tokio::time::sleep(std::time::Duration::from_millis(250 << tries)).await;
                }
                r => {
                    cur = Some(s);
                    results.push((i, r));
                    break;
                }
            }
        }
    }
    sessions.extend(cur);
    (sessions, results)
}

/// [`learn`] over `to_learn`, one folder after the other, each tried on a new
/// connection when its connection was lost.
async fn learn_one_by_one(
    opts: &ImportOptions,
    sessions: Vec<ImapSession>,
    to_learn: Vec<usize>,
    folders: &Arc<Vec<DestRef>>,
) -> (Vec<ImapSession>, Vec<(usize, Result<Learned, ImapError>)>) {
    let dry = opts.dry_run;
    let fs = folders.clone();
    over_folders(opts, sessions, to_learn, move |mut s, di| {
        let fs = fs.clone();
        async move {
            let f = &fs[di];
            let r = learn(
                &mut s,
                &f.raw,
                &f.ambiguous,
                &f.sizes_by_id,
                dry,
                f.status_only,
            )
            .await;
            (s, r)
        }
    })
    .await
}

/// What each folder of `to_learn` already holds, into `dests` (its census and
/// PERMANENTFLAGS); a folder that cannot be read is marked broken. A connection lost
/// [`FOLDER_TRIES`] times is fatal: without knowing what is there, appending could
/// double mail.
pub(super) async fn learn_all(
    opts: &ImportOptions,
    sessions: Vec<ImapSession>,
    dests: &mut [DestState],
    to_learn: Vec<usize>,
    folders: &Arc<Vec<DestRef>>,
) -> Result<Vec<ImapSession>, ImportError> {
    let mut sessions = sessions;
    let piped = match sessions.last_mut() {
        Some(s) if !to_learn.is_empty() => {
            Some(learn_pipelined(s, &to_learn, folders, opts.dry_run).await)
        }
        _ => None,
    };
    let (sessions, learned) = match piped {
        Some(Ok(learned)) => (sessions, learned),
        Some(Err(_)) => {
            // That session is gone; the folders are learned again on fresh ones.
            sessions.pop();
            learn_one_by_one(opts, sessions, to_learn, folders).await
        }
        None => learn_one_by_one(opts, sessions, to_learn, folders).await,
    };
    for (di, r) in learned {
        match r {
            Ok((state, perm, uidvalidity)) => {
                dests[di].state = state;
                dests[di].permanent = perm;
                dests[di].uidvalidity = uidvalidity;
            }
            Err(e) if e.is_connection_lost() => {
                return Err(ImportError::Learn {
                    folder: dests[di].raw.clone(),
                    tries: FOLDER_TRIES,
                    source: e,
                })
            }
            Err(e) => dests[di].broken = Some(e.to_string()),
        }
    }
    Ok(sessions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_response_becomes_a_census_entry_and_one_without_a_uid_is_dropped() {
        let m = FetchedMessage {
            uid: Some(7),
            size: Some(1234),
            flags: Some(vec!["\\Seen".into(), "$Label1".into()]),
            internaldate: Some("01-Jan-2024 09:00:00 +0900".into()),
            header_fields: Some(b"Message-ID: <a@b>\r\nSubject: x\r\n\r\n".to_vec()),
            ..Default::default()
        };
        let c = census_of(vec![
            Held::from(m.clone()),
            Held::from(FetchedMessage { uid: None, ..m }),
        ]);
        assert_eq!(c.msgs.len(), 1);
        let h = &c.msgs[0];
        assert_eq!((h.uid, h.size()), (7, 1234));
        assert_eq!(h.message_id, Some(IdHash::of("a@b")));
        assert_eq!(h.flags.to_vec(), ["\\Seen", "$Label1"]);
        assert_eq!(h.date(), Some(1_704_067_200));
        assert_eq!(
            h.internaldate().as_deref(),
            Some("01-Jan-2024 09:00:00 +0900")
        );
    }
}
