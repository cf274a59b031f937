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
}
