//! Folder names → safe, reversible on-disk names (spec §4). Every member path an archive
//! writes is built here, so this is the one place that decides what can reach a disk.
//! The index keeps the real name next to the directory, so readers never need to
//! reverse the escaping; it is reversible anyway so that a person can read it.

use std::collections::{HashMap, HashSet};

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
    String::from_utf8(escape_bytes(name.as_bytes()))
        .expect("escaping valid UTF-8 cuts only at character boundaries")
}

/// [`escape_component`] over raw bytes: a level that is not UTF-8 (a folder name an old
/// host wrote in Latin-1) gets the same escaping and keeps its other bytes as they are,
/// so `extract` can write the name back byte for byte.
pub fn escape_bytes(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for (i, &b) in name.iter().enumerate() {
        let esc =
            matches!(b, b'%' | b'/' | b'\\' | b':' | 0x7f) || b < 0x20 || (b == b'.' && i == 0);
        if esc {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    if out.is_empty() {
        return b"%00empty".to_vec();
    }
    let lower = out.to_ascii_lowercase();
    if lower == b"cur" || lower == b"new" || lower == b"tmp" {
        let mut v = format!("%{:02X}", out[0]).into_bytes();
        v.extend_from_slice(&out[1..]);
        out = v;
    }
    if lower.ends_with(b".sbd") && out.len() > 4 {
        // Only the dot is escaped: the letters keep their case, so percent-decoding
        // gives the name back.
        let letters = out.split_off(out.len() - 3);
        out.pop();
        out.extend_from_slice(b"%2E");
        out.extend_from_slice(&letters);
    }
    if out.len() > MAX_COMPONENT {
        let digest = crate::archive::sha256_hex(name);
        let mut cut = MAX_COMPONENT - 18;
        // Never inside a UTF-8 sequence (continuation bytes are 10xxxxxx)...
        while cut > 0 && out[cut] & 0xC0 == 0x80 {
            cut -= 1;
        }
        // ...nor inside a '%XX', which would not decode.
        if let Some(p) = out[..cut].iter().rposition(|&b| b == b'%') {
            if p + 3 > cut {
                cut = p;
            }
        }
        out.truncate(cut);
        out.push(b'~');
        out.extend_from_slice(&digest.as_bytes()[..16]);
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
/// a cut for length): the later level gets `~2`, `~3`, …, and the folders below it go
/// under the renamed directory, so a child never lands in another folder's directory.
#[derive(Default)]
pub struct DirAllocator {
    /// Every directory handed out, case-folded (`fold_case`), parents included.
    used: HashSet<Vec<u8>>,
    /// Level prefix (raw) → its directory, without the parent suffix.
    prefixes: HashMap<Vec<Vec<u8>>, Vec<u8>>,
    /// Directories that are some folder's own.
    folders: HashSet<Vec<u8>>,
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
        let levels: Vec<&[u8]> = split_folder(folder, delimiter)
            .into_iter()
            .map(str::as_bytes)
            .collect();
        String::from_utf8(self.allocate_raw(&levels, parent_suffix))
            .expect("escaped UTF-8 levels stay UTF-8")
    }

    /// [`allocate`](Self::allocate) for levels given as raw bytes (a name that is not
    /// UTF-8 is written back as the bytes it had).
    pub fn allocate_raw<L: AsRef<[u8]>>(&mut self, levels: &[L], parent_suffix: &str) -> Vec<u8> {
        let mut parent: Vec<u8> = Vec::new();
        let mut key: Vec<Vec<u8>> = Vec::new();
        for (i, level) in levels.iter().enumerate() {
            key.push(level.as_ref().to_vec());
            let last = i + 1 == levels.len();
            let known = self.prefixes.get(&key).cloned();
            let dir = match known {
                Some(d) if !(last && self.folders.contains(&d)) => d,
                _ => {
                    let mut base = parent.clone();
                    if i > 0 {
                        base.push(b'/');
                    }
                    base.extend_from_slice(&escape_bytes(level.as_ref()));
                    let d = self.unused(base);
                    self.prefixes
                        .entry(key.clone())
                        .or_insert_with(|| d.clone());
                    d
                }
            };
            if last {
                self.folders.insert(dir.clone());
                return dir;
            }
            parent = dir;
            parent.extend_from_slice(parent_suffix.as_bytes());
        }
        unreachable!("a folder has at least one level")
    }

    fn unused(&mut self, base: Vec<u8>) -> Vec<u8> {
        if self.used.insert(fold_case(&base)) {
            return base;
        }
        for k in 2.. {
            let mut cand = base.clone();
            cand.extend_from_slice(format!("~{k}").as_bytes());
            if self.used.insert(fold_case(&cand)) {
                return cand;
            }
        }
        unreachable!()
    }
}

/// The key two paths collide under: equal after Unicode lower-casing of their UTF-8
/// parts (what case-insensitive file systems compare); bytes that are not UTF-8 are
/// compared as they are.
fn fold_case(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for chunk in path.utf8_chunks() {
        out.extend_from_slice(chunk.valid().to_lowercase().as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// One folder as its source names it: each hierarchy level's raw bytes and the same
/// level decoded for people.
#[derive(Debug, Clone)]
pub struct SourceName {
    pub raw: Vec<Vec<u8>>,
    pub decoded: Vec<String>,
    pub delimiter: Option<char>,
}

/// Gives every folder a display name no other folder has. Names are decoded per level;
/// where two different raw levels decode to the same text (Latin-1 `Caf\xe9`, UTF-8
/// `Café` and modified UTF-7 `Caf&AOk-`), or two folders have the same raw name (a
/// Maildir root and its `INBOX` directory), the later level gets `~2`, `~3`, …, and
/// its children follow it, so distinct folders stay distinct and the tree stays a tree.
/// A name spelled on disk exactly as it reads keeps it; decoded spellings yield.
pub fn distinct_names(folders: &[SourceName]) -> Vec<String> {
    let mut prefix_of: HashMap<&[Vec<u8>], String> = HashMap::new();
    let mut owner: HashMap<String, &[Vec<u8>]> = HashMap::new();
    let mut finals: HashSet<String> = HashSet::new();
    let mut out = vec![String::new(); folders.len()];
    let literal = |f: &SourceName| {
        f.raw.len() == f.decoded.len()
            && f.raw.iter().zip(&f.decoded).all(|(r, d)| r == d.as_bytes())
    };
    let mut order: Vec<usize> = (0..folders.len()).collect();
    order.sort_by_key(|&i| !literal(&folders[i]));
    for i in order {
        let f = &folders[i];
        let mut disp = String::new();
        for i in 0..f.raw.len() {
            let raw = &f.raw[..=i];
            let last = i + 1 == f.raw.len();
            if let Some(d) = prefix_of.get(raw) {
                if !(last && finals.contains(d)) {
                    disp = d.clone();
                    continue;
                }
            }
            let mut base = disp.clone();
            if i > 0 {
                base.push(f.delimiter.unwrap_or('/'));
            }
            base.push_str(f.decoded.get(i).map_or("", String::as_str));
            let mut cand = base.clone();
            let mut k = 2;
            while owner.get(&cand).is_some_and(|r| *r != raw) || (last && finals.contains(&cand)) {
                cand = format!("{base}~{k}");
                k += 1;
            }
            owner.entry(cand.clone()).or_insert(raw);
            prefix_of.entry(raw).or_insert_with(|| cand.clone());
            disp = cand;
        }
        finals.insert(disp.clone());
        out[i] = disp;
    }
    out
}

/// Splits a raw name at an ASCII delimiter.
pub fn split_raw(raw: &[u8], delimiter: Option<char>) -> Vec<Vec<u8>> {
    match delimiter {
        Some(d) if d.is_ascii() => raw.split(|&b| b == d as u8).map(<[u8]>::to_vec).collect(),
        Some(d) => {
            let mut buf = [0u8; 4];
            let d = d.encode_utf8(&mut buf).as_bytes();
            let mut out = Vec::new();
            let mut rest = raw;
            while let Some(p) = rest.windows(d.len()).position(|w| w == d) {
                out.push(rest[..p].to_vec());
                rest = &rest[p + d.len()..];
            }
            out.push(rest.to_vec());
            out
        }
        None => vec![raw.to_vec()],
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
            ("x.SBD", "x%2ESBD"),
            // Found by fuzzing: the suffix is matched in any case and must keep it.
            ("tmp.sBd", "tmp%2EsBd"),
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
        assert_eq!(al.allocate("A/B", Some('/'), ""), "A~2/B");
        assert_eq!(al.allocate("A", Some('/'), ""), "A~2");
        assert_eq!(al.allocate("a", Some('/'), ""), "a");
        assert_eq!(al.allocate("A/B/C", Some('/'), ""), "A~2/B/C");
        let mut al = DirAllocator::default();
        assert_eq!(al.allocate("x.b", Some('.'), ".sbd"), "x.sbd/b");
        assert_eq!(al.allocate("x", Some('.'), ".sbd"), "x");
        assert_eq!(al.allocate("X.c", Some('.'), ".sbd"), "X~2.sbd/c");
    }

    #[test]
    fn raw_levels_are_escaped_like_text_and_keep_their_bytes() {
        assert_eq!(escape_bytes(b"Caf\xe9"), b"Caf\xe9");
        assert_eq!(escape_bytes(b".x/\xe9"), b"%2Ex%2F\xe9");
        assert_eq!(escape_bytes("日本語".as_bytes()), "日本語".as_bytes());
    }

    #[test]
    fn colliding_names_become_distinct_and_children_follow() {
        let f = |raw: &[&[u8]], dec: &[&str]| SourceName {
            raw: raw.iter().map(|r| r.to_vec()).collect(),
            decoded: dec.iter().map(|d| d.to_string()).collect(),
            delimiter: Some('.'),
        };
        let got = distinct_names(&[
            f(&[b"INBOX"], &["INBOX"]),
            f(&[b"Caf\xe9", b"Sub"], &["Café", "Sub"]),
            f(&["Café".as_bytes()], &["Café"]),
            f(&[b"Caf\xe9"], &["Café"]),
            f(&[b"Caf&AOk-"], &["Café"]),
            f(&[b"INBOX"], &["INBOX"]),
            f(&[b"Caf\xe9~2"], &["Café~2"]),
        ]);
        assert_eq!(
            got,
            [
                "INBOX",
                "Café~2.Sub",
                "Café",
                "Café~2",
                "Café~3",
                "INBOX~2",
                "Café~2~2"
            ]
        );
    }

    #[test]
    fn member_path_safety() {
        assert!(is_safe_member_path("maildir/INBOX/cur/1.x:2,S"));
        for bad in ["../x", "/etc/passwd", "a/../../b", "a//b", "a/./b", "a\\b"] {
            assert!(!is_safe_member_path(bad), "{bad}");
        }
    }
}
