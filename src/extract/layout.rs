//! Where each folder goes below the target directory, per output layout.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::Target;
use crate::archive::names::{split_folder, split_raw, DirAllocator};
use crate::archive::{Archive, FolderRecord};
use crate::mail::utf7;

/// A folder's place: its directory (or mbox file) below the root, and the name
/// Dovecot's `subscriptions` file knows it by.
pub(crate) struct Place {
    pub(crate) rel: PathBuf,
    pub(crate) subscription: String,
}

pub(crate) struct Dirs {
    maildirpp: bool,
    /// Levels of the source's personal namespace (`INBOX.` on Courier is `["INBOX"]`):
    /// Maildir++ holds the folders below it, as Courier's own tree does.
    namespace: Vec<String>,
    suffix: &'static str,
    alloc: DirAllocator,
    used: HashSet<String>,
}

impl Dirs {
    pub(crate) fn new(target: &Target, archives: &[Archive]) -> Dirs {
        let namespace = archives
            .first()
            .map(|a| {
                let ns = crate::import::plan::source_namespace(
                    a.index.header.namespace.as_ref(),
                    &a.index.folders,
                );
                crate::import::plan::prefix_levels(&ns.prefix, ns.delimiter)
                    .into_iter()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Dirs {
            maildirpp: matches!(target, Target::Maildir(_)),
            namespace,
            suffix: if matches!(target, Target::Mbox(_)) {
                ".sbd"
            } else {
                ""
            },
            alloc: DirAllocator::default(),
            used: HashSet::new(),
        }
    }

    pub(crate) fn allocate(&mut self, f: &FolderRecord) -> Place {
        let delimiter = f.delimiter.as_deref().and_then(|d| d.chars().next());
        if self.maildirpp {
            let levels = split_folder(&f.name, delimiter);
            let mut name = maildirpp_name(below(&levels, &self.namespace));
            let base = name.clone();
            let mut n = 1;
            while !self.used.insert(name.to_ascii_lowercase()) {
                n += 1;
                name = format!("{base}~{n}");
            }
            let rel = if name == "INBOX" {
                PathBuf::new()
            } else {
                PathBuf::from(format!(".{name}"))
            };
            return Place {
                rel,
                subscription: name,
            };
        }
        // A name that was not UTF-8 at the source goes back as the bytes it had.
        let rel = match f.raw_name_hex.as_deref().and_then(|h| hex::decode(h).ok()) {
            Some(raw) => self
                .alloc
                .allocate_raw(&split_raw(&raw, delimiter), self.suffix),
            None => self
                .alloc
                .allocate(&f.name, delimiter, self.suffix)
                .into_bytes(),
        };
        Place {
            rel: PathBuf::from(OsStr::from_bytes(&rel)),
            subscription: f.name.clone(),
        }
    }
}

/// A folder's Maildir++ name (the directory name without its leading `.`): INBOX is
/// `INBOX` (the root itself), every other folder its levels in modified UTF-7 joined by
/// `.`. A `.`, `/` or `\` inside a level is written `\2e`, `\2f`, `\5c`, the escaping of
/// Dovecot's listescape plugin: a default Dovecot lists such a level as spelled
/// (`a\2eb`, one folder, not `a` and `b`), one with `mail_plugins = listescape` as `a.b`.
/// A name that was not UTF-8 at the source is written from its UTF-8 `name`: Dovecot
/// never lists a Maildir++ name that is not valid modified UTF-7.
pub(crate) fn maildirpp_name(levels: &[&str]) -> String {
    if let [one] = levels {
        if one.eq_ignore_ascii_case("INBOX") {
            return "INBOX".into();
        }
    }
    levels
        .iter()
        .map(|l| {
            utf7::encode(l)
                .chars()
                .map(|c| match c {
                    '.' => "\\2e".to_string(),
                    '/' => "\\2f".to_string(),
                    '\\' => "\\5c".to_string(),
                    c => c.to_string(),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The levels of a name below the namespace (`INBOX.Archive.2019` below `INBOX.` is
/// `Archive/2019`); INBOX itself and names outside it keep every level.
fn below<'a, 'b>(levels: &'b [&'a str], namespace: &[String]) -> &'b [&'a str] {
    if crate::import::plan::inside_namespace(levels, namespace) {
        &levels[namespace.len()..]
    } else {
        levels
    }
}

#[cfg(test)]
mod tests {
    use super::{below, maildirpp_name};

    #[test]
    fn maildirpp_names() {
        let name = |n: &str, d: char| maildirpp_name(&n.split(d).collect::<Vec<_>>());
        assert_eq!(name("INBOX", '/'), "INBOX");
        assert_eq!(name("Inbox", '/'), "INBOX");
        assert_eq!(name("INBOX/Sub", '/'), "INBOX.Sub");
        assert_eq!(name("受信箱/取引先", '/'), "&U9dP4Xux-.&U9ZfFVFI-");
        assert_eq!(name("a.b/c", '/'), "a\\2eb.c");
        assert_eq!(name("x/y", '.'), "x\\2fy");
        assert_eq!(name("a\\b", '/'), "a\\5cb");
        assert_eq!(name("R&D", '/'), "R&-D");
    }

    #[test]
    fn courier_namespace_is_taken_off() {
        let ns = vec!["INBOX".to_string()];
        let l = ["INBOX", "Archive", "2019"];
        assert_eq!(below(&l, &ns), &["Archive", "2019"]);
        assert_eq!(below(&["INBOX"], &ns), &["INBOX"]);
        assert_eq!(below(&["Other", "x"], &ns), &["Other", "x"]);
        assert_eq!(below(&l, &[]), &l);
    }
}
