//! Folder names → safe, reversible on-disk names (spec §4). Every member path an archive
//! writes is built here, so this is the one place that decides what can reach a disk.
//! The index keeps the real name next to the directory, so readers never need to
//! reverse the escaping; it is reversible anyway so that a person can read it.

use std::collections::HashSet;

/// Longest escaped component we write; longer ones are cut and get a hash suffix.
/// 255 bytes is the usual file-name limit; leave room for `.sbd` and collision suffixes.
pub const MAX_COMPONENT: usize = 200;

/// Escapes one hierarchy level of a folder name into a file-system-safe component.
///
/// `%`, `/`, `\`, NUL, C0 controls and DEL become `%XX`; a leading `.` becomes `%2E`
/// (so `.`, `..` and hidden names cannot appear); the component names `cur`, `new`,
/// `tmp` (any case) get their first letter escaped, since Maildir uses them; a trailing
/// `.sbd` gets its dot escaped, since the mbox layout uses it; `:` becomes `%3A` for
/// portability. Everything else, UTF-8 included, stays as it is.
pub fn escape_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, ch) in name.char_indices() {
        let esc = match ch {
            '%' | '/' | '\\' | ':' | '\u{7f}' => true,
            c if (c as u32) < 0x20 => true,
            '.' if i == 0 => true,
            _ => false,
        };
        if esc {
            out.push_str(&format!("%{:02X}", ch as u32));
        } else {
            out.push(ch);
        }
    }
    if out.is_empty() {
        out.push_str("%00empty");
        return out;
    }
    let lower = out.to_ascii_lowercase();
    if lower == "cur" || lower == "new" || lower == "tmp" {
        out = format!("%{:02X}{}", out.as_bytes()[0], &out[1..]);
    }
    if lower.ends_with(".sbd") && out.len() > 4 {
        let cut = out.len() - 4;
        out = format!("{}%2E{}", &out[..cut], &out[cut + 1..]);
    }
    if out.len() > MAX_COMPONENT {
        let digest = crate::archive::sha256_hex(name.as_bytes());
        let mut cut = MAX_COMPONENT - 18;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        // A '%XX' cut in half would not decode; back up over it.
        if let Some(p) = out[..cut].rfind('%') {
            if p + 3 > cut {
                cut = p;
            }
        }
        out = format!("{}~{}", &out[..cut], &digest[..16]);
    }
    out
}

/// Reverses [`escape_component`] for names that were not cut for length, except the
/// empty name, which is written `%00empty` (spec §4) so that a level is never empty.
pub fn unescape_component(s: &str) -> String {
    crate::text::percent_decode(s)
}

/// Splits a folder name at its delimiter into hierarchy levels. An empty level (as in
/// `a//b`) is kept and escaped, never dropped, so two folders cannot merge.
pub fn split_folder(name: &str, delimiter: Option<char>) -> Vec<&str> {
    match delimiter {
        Some(d) => name.split(d).collect(),
        None => vec![name],
    }
}

/// Allocates relative directory paths for folders, unique within one archive even when
/// escaping or cutting makes two names meet (e.g. on case-insensitive copies, or after
/// a cut for length): the later one gets `~2`, `~3`, ….
#[derive(Default)]
pub struct DirAllocator {
    used: HashSet<String>,
}

impl DirAllocator {
    /// `suffix` is appended to every non-final level (`.sbd` for the mbox layout, empty
    /// for Maildir).
    pub fn allocate(
        &mut self,
        folder: &str,
        delimiter: Option<char>,
        parent_suffix: &str,
    ) -> String {
        let parts = split_folder(folder, delimiter);
        let n = parts.len();
        let mut path = String::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                path.push('/');
            }
            path.push_str(&escape_component(p));
            if i + 1 < n {
                path.push_str(parent_suffix);
            }
        }
        let key = path.to_lowercase();
        if self.used.insert(key) {
            return path;
        }
        for k in 2.. {
            let cand = format!("{path}~{k}");
            if self.used.insert(cand.to_lowercase()) {
                return cand;
            }
        }
        unreachable!()
    }
}

/// Checks that a member path from an archive is safe to create under a target
/// directory: relative, no `..`, no empty or `.` levels, no NUL or backslash.
pub fn is_safe_member_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\0')
        && !p.contains('\\')
        && p.trim_end_matches('/')
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_names_are_neutralised() {
        for (raw, want) in [
            ("..", "%2E."),
            (".hidden", "%2Ehidden"),
            ("a/b", "a%2Fb"),
            ("cur", "%63ur"),
            ("New", "%4Eew"),
            ("x.sbd", "x%2Esbd"),
            // Found by fuzzing: the suffix is matched in any case and must keep it.
            ("tmp.sBd", "tmp%2EsBd"),
            ("X.SBD", "X%2ESBD"),
            ("100%", "100%25"),
            ("tab\there", "tab%09here"),
            ("日本語", "日本語"),
            ("", "%00empty"),
        ] {
            assert_eq!(escape_component(raw), want, "{raw:?}");
            if !raw.is_empty() {
                assert_eq!(unescape_component(want), raw);
            }
        }
    }

    #[test]
    fn long_names_are_cut_with_a_hash() {
        let a = "あ".repeat(200);
        let b = format!("{}い", "あ".repeat(199));
        let (ea, eb) = (escape_component(&a), escape_component(&b));
        assert!(ea.len() <= MAX_COMPONENT && eb.len() <= MAX_COMPONENT);
        assert_ne!(ea, eb);
    }

    #[test]
    fn allocator_keeps_paths_unique() {
        let mut al = DirAllocator::default();
        assert_eq!(al.allocate("a/b", Some('/'), ""), "a/b");
        assert_eq!(al.allocate("A/B", Some('/'), ""), "A/B~2");
        assert_eq!(al.allocate("a.b", Some('.'), ".sbd"), "a.sbd/b");
    }

    #[test]
    fn member_path_safety() {
        assert!(is_safe_member_path("maildir/INBOX/cur/1.x:2,S"));
        for bad in ["../x", "/etc/passwd", "a/../../b", "a//b", "a/./b", "a\\b"] {
            assert!(!is_safe_member_path(bad), "{bad}");
        }
    }
}
