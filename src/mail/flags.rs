//! IMAP flags and the Maildir info letters (`:2,FLAGS`) they map to, as Dovecot and
//! the Maildir spec use them. Keywords have no letter of their own in the standard; Dovecot
//! gives them `a`..`z` through a per-folder `dovecot-keywords` file.

/// System flags in the order of their Maildir letters (the spec wants letters sorted).
pub const SYSTEM: [(char, &str); 6] = [
    ('D', "\\Draft"),
    ('F', "\\Flagged"),
    ('P', "$Forwarded"),
    ('R', "\\Answered"),
    ('S', "\\Seen"),
    ('T', "\\Deleted"),
];

/// Maps a Maildir info letter to its flag; lowercase letters are keywords and need the
/// folder's keyword table.
pub fn from_letter(c: char) -> Option<&'static str> {
    SYSTEM.iter().find(|(l, _)| *l == c).map(|(_, f)| *f)
}

pub fn letter_of(flag: &str) -> Option<char> {
    SYSTEM
        .iter()
        .find(|(_, f)| f.eq_ignore_ascii_case(flag))
        .map(|(l, _)| *l)
}

/// True for `\Seen`-style system flags (and `\Recent`, which is session state, never stored).
pub fn is_system(flag: &str) -> bool {
    flag.starts_with('\\')
}

/// Normalises a flag list: canonical case for system flags, `\Recent` dropped (it is a
/// property of a session, not of a message), duplicates removed, order kept.
pub fn normalize<I: IntoIterator<Item = S>, S: AsRef<str>>(flags: I) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in flags {
        let f = f.as_ref().trim();
        if f.is_empty() || f.eq_ignore_ascii_case("\\Recent") {
            continue;
        }
        let canon = SYSTEM
            .iter()
            .map(|(_, s)| *s)
            .chain(["\\Draft"])
            .find(|s| s.eq_ignore_ascii_case(f))
            .map(str::to_string)
            .unwrap_or_else(|| f.to_string());
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&canon)) {
            out.push(canon);
        }
    }
    out
}

/// The `:2,` info letters for `flags`, given the folder's keyword table (index = letter
/// offset from `a`). Keywords beyond 26 get no letter; the index still has them.
pub fn maildir_info(flags: &[String], keywords: &[String]) -> String {
    let mut letters: Vec<char> = flags.iter().filter_map(|f| letter_of(f)).collect();
    for f in flags {
        if let Some(i) = keywords.iter().position(|k| k == f) {
            if i < 26 {
                letters.push((b'a' + i as u8) as char);
            }
        }
    }
    letters.sort_unstable();
    letters.dedup();
    letters.into_iter().collect()
}

/// The system flags a [`FlagSet`] holds as bits, in the spelling RFC 3501 gives them;
/// any other spelling is kept as written, as a keyword.
const BITS: [&str; 6] = [
    "\\Seen",
    "\\Answered",
    "\\Flagged",
    "\\Deleted",
    "\\Draft",
    "\\Recent",
];

/// A message's flags held compact, for the per-message state of import and `verify
/// --against` (a million at a time): 4 bytes, no allocation. The system flags are its
/// low 6 bits; every other flag (keywords, odd spellings) is in a list, and the rest
/// of the value is that list's number in a process-wide table of the distinct lists
/// seen (0: none), as each flag is a number in a table of distinct spellings. A folder
/// uses a handful of keyword lists, so a million messages cost 4 MB, where a
/// `Vec<String>` of `\Seen` each costs about 90. [`FlagSet::to_vec`] gives back every
/// flag as it was written: the system flags first (in the order of [`BITS`]), then the
/// others in their order; a repeated system flag comes back once.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FlagSet(u32);

/// Bits of a [`FlagSet`] taken by the system flags, one each of [`BITS`].
const SYSTEM_BITS: u32 = BITS.len() as u32;

/// The tables [`FlagSet`] numbers its other flags by: one entry per distinct spelling,
/// and one per distinct list of them.
#[derive(Default)]
struct Interned {
    names: Vec<std::sync::Arc<str>>,
    ids: std::collections::HashMap<std::sync::Arc<str>, u32>,
    lists: Vec<std::sync::Arc<[u32]>>,
    list_ids: std::collections::HashMap<std::sync::Arc<[u32]>, u32>,
}

impl Interned {
    fn name(&mut self, f: &str) -> u32 {
        if let Some(&id) = self.ids.get(f) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("under 4G distinct flags");
        let name: std::sync::Arc<str> = f.into();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    /// The number of a list of flags (from 1), as it fits above the system bits.
    fn list(&mut self, l: Vec<u32>) -> u32 {
        if let Some(&n) = self.list_ids.get(l.as_slice()) {
            return n;
        }
        let n = u32::try_from(self.lists.len() + 1)
            .ok()
            .filter(|n| *n < 1 << (32 - SYSTEM_BITS))
            // Each list is a distinct combination some message carries: 67 million of
            // them would take gigabytes before this.
            .expect("under 2^26 distinct keyword lists");
        let l: std::sync::Arc<[u32]> = l.into();
        self.lists.push(l.clone());
        self.list_ids.insert(l, n);
        n
    }
}

static INTERNED: std::sync::LazyLock<std::sync::Mutex<Interned>> =
    std::sync::LazyLock::new(Default::default);

fn interned() -> std::sync::MutexGuard<'static, Interned> {
    // The tables are only ever added to: one a panic left behind is still whole.
    INTERNED.lock().unwrap_or_else(|e| e.into_inner())
}

impl FlagSet {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(flags: I) -> FlagSet {
        let mut bits = 0u32;
        let mut others = Vec::new();
        for f in flags {
            let f = f.as_ref();
            match BITS.iter().position(|b| *b == f) {
                Some(i) => bits |= 1 << i,
                None => others.push(interned().name(f)),
            }
        }
        let list = if others.is_empty() {
            0
        } else {
            interned().list(others)
        };
        FlagSet(list << SYSTEM_BITS | bits)
    }

    fn list(self) -> u32 {
        self.0 >> SYSTEM_BITS
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Every flag, as written (see [`FlagSet`] for the order).
    pub fn to_vec(&self) -> Vec<String> {
        let mut out: Vec<String> = BITS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, b)| b.to_string())
            .collect();
        if self.list() != 0 {
            let t = interned();
            let l = &t.lists[self.list() as usize - 1];
            out.extend(l.iter().map(|&id| t.names[id as usize].to_string()));
        }
        out
    }
}

impl std::fmt::Debug for FlagSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for FlagSet {
    fn from_iter<I: IntoIterator<Item = S>>(flags: I) -> FlagSet {
        FlagSet::new(flags)
    }
}

impl From<&[String]> for FlagSet {
    fn from(v: &[String]) -> FlagSet {
        FlagSet::new(v)
    }
}

impl From<Vec<String>> for FlagSet {
    fn from(v: Vec<String>) -> FlagSet {
        FlagSet::new(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_letters_sorted() {
        let f = normalize(["\\seen", "\\Answered", "$Label1", "\\Recent", "\\Deleted"]);
        assert_eq!(f, vec!["\\Seen", "\\Answered", "$Label1", "\\Deleted"]);
        let kw = vec!["$Label1".to_string()];
        assert_eq!(maildir_info(&f, &kw), "RSTa");
    }

    #[test]
    fn flag_sets_round_trip() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(FlagSet::new(Vec::<String>::new()).is_empty());
        assert_eq!(std::mem::size_of::<FlagSet>(), 4);
        // System flags as bits, in their fixed order; the rest as written, in order,
        // non-ASCII and odd spellings included.
        let f = FlagSet::new([
            "$Label1",
            "\\Seen",
            "caf\u{e9}",
            "\\seen",
            "\\Draft",
            "\\Recent",
        ]);
        assert_eq!(
            f.to_vec(),
            v(&[
                "\\Seen",
                "\\Draft",
                "\\Recent",
                "$Label1",
                "caf\u{e9}",
                "\\seen"
            ])
        );
        let all = v(&[
            "\\Seen",
            "\\Answered",
            "\\Flagged",
            "\\Deleted",
            "\\Draft",
            "\\Recent",
        ]);
        assert_eq!(FlagSet::from(all.clone()).to_vec(), all);
        assert!(
            FlagSet::from(all).list() == 0,
            "system flags take no table entry"
        );
        // One table entry per distinct spelling: equal sets are equal values.
        assert_eq!(
            FlagSet::new(["$Junk", "\\Seen"]),
            FlagSet::new(["\\Seen", "$Junk"])
        );
        assert_ne!(FlagSet::new(["$Junk"]), FlagSet::new(["$junk"]));
        assert_ne!(FlagSet::new(["\\Seen"]), FlagSet::new(["\\Seen", "$Junk"]));
        let a = FlagSet::new(["\u{65e5}\u{672c}"]);
        let b = FlagSet::new(["\u{65e5}\u{672c}"]);
        assert_eq!(a.list(), b.list());
        assert_ne!(a.list(), 0);
        assert_eq!(a.to_vec(), v(&["\u{65e5}\u{672c}"]));
        // The comparisons made on flags give what they gave on the strings.
        let orig = v(&["$A", "\\Seen", "\\flagged"]);
        assert_eq!(
            normalize(FlagSet::from(orig.clone()).to_vec()).len(),
            normalize(&orig).len()
        );
    }
}
