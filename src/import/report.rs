//! The report phase: per source folder, what became of each archived message.

use std::collections::HashMap;

use super::plan::Plan;
use super::{Differing, Failure, FolderReport, ImportReport, Rec, St};
use crate::archive::Archive;

/// How a message is named in the report: its source identity and archive member, and
/// its Message-ID.
fn msg_id(a: &Archive, idx: usize) -> String {
    let m = &a.index.messages.get(idx);
    let mut s = crate::verify::message_identity(m);
    if let Some(mid) = &m.message_id {
        s.push_str(&format!(", Message-ID {mid}"));
    }
    s
}

/// Reports the messages whose folder their index does not list, one folder entry per
/// such name, every message failed.
pub(super) fn report_unplaced(
    rep: &mut ImportReport,
    archives: &[Archive],
    unplaced: &[super::prepare::MemberRef],
) {
    let mut by_folder: std::collections::BTreeMap<String, Vec<Failure>> = Default::default();
    for r in unplaced {
        let m = archives[r.archive].index.messages.get(r.record);
        by_folder
            .entry(m.folder.clone())
            .or_default()
            .push(Failure {
                id: msg_id(&archives[r.archive], r.record),
                reason: format!(
                    "names folder {:?}, which its archive's index does not list: not imported",
                    m.folder
                ),
            });
    }
    for (folder, failed) in by_folder {
        rep.add_folder(FolderReport {
            folder,
            archived: failed.len() as u64,
            failed,
            ..Default::default()
        });
    }
}

/// The report of each planned folder of `in_pass` (with its index), from the pass's
/// records. `dropped` counts keywords per (planned folder, keyword).
pub(super) fn fill_report(
    plan: &Plan,
    in_pass: &[usize],
    recs: &[Rec],
    archives: &[Archive],
    dropped: &HashMap<(usize, String), u64>,
) -> Vec<(usize, FolderReport)> {
    let mut out = Vec::new();
    for &fi in in_pass {
        let fp = &plan.folders[fi];
        let mut fr = FolderReport {
            folder: fp.source.clone(),
            destination: fp.dest.clone(),
            placed_by: Some(fp.reason.clone()),
            renamed_levels: fp.renamed_levels.clone(),
            ..Default::default()
        };
        let mut kws: Vec<(String, u64)> = dropped
            .iter()
            .filter(|((f, _), _)| *f == fi)
            .map(|((_, k), n)| (k.clone(), *n))
            .collect();
        kws.sort();
        fr.dropped_keywords = kws;
        for r in recs.iter().filter(|r| r.folder == fi) {
            fr.archived += 1;
            let id = || msg_id(&archives[r.arch as usize], r.idx as usize);
            match &r.st {
                St::There(_) => {
                    fr.already_there += 1;
                    if r.other_delivery {
                        fr.other_deliveries += 1;
                    }
                }
                St::Appended(_) => {
                    fr.appended += 1;
                    if r.crlf_sent {
                        fr.sent_as_crlf += 1;
                    }
                }
                St::Queued => fr.to_append += 1,
                St::Failed(reason) => {
                    fr.failed.push(Failure {
                        id: id(),
                        reason: reason.clone(),
                    });
                    continue;
                }
                St::Pending => {}
            }
            match &r.verified {
                Some(Ok(notes)) => {
                    fr.verified += 1;
                    fr.differing.extend(notes.iter().map(|n| Differing {
                        id: id(),
                        detail: n.clone(),
                    }));
                }
                Some(Err(reason)) => fr.failed.push(Failure {
                    id: id(),
                    reason: reason.clone(),
                }),
                None => {}
            }
        }
        out.push((fi, fr));
    }
    out
}
