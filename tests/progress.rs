//! The progress bar's total for a local export is what the export will read: only the
//! folders chosen with --folder / --exclude count (a bar for two folders of three once
//! stopped at 67 %).

mod common;

use common::*;
use mailark::export::{bytes_to_read, FolderFilter};
use mailark::source::maildir::MaildirSource;

#[test]
fn a_local_exports_total_counts_only_the_chosen_folders() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("Maildir");
    let msg = |n: usize| (format!("m{n}"), vec![b'x'; 1000 * n]);
    write_maildir_folder(&root, &[msg(1), msg(2)]);
    write_maildir_folder(&root.join(".Work"), &[msg(3)]);
    write_maildir_folder(&root.join(".Lists"), &[msg(4), msg(5)]);
    let src = MaildirSource::open(&root).unwrap();
    let total = |inc: &[&str], exc: &[&str]| {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        bytes_to_read(&src, &FolderFilter::new(&s(inc), &s(exc)).unwrap())
    };
    assert_eq!(total(&[], &[]), 15_000);
    assert_eq!(total(&["Work", "Lists"], &[]), 12_000);
    assert_eq!(total(&[], &["Lists"]), 6_000);
}
