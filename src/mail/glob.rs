//! The one glob dialect of folder patterns (`--folder`, `--exclude`, `--map`), matched
//! against a whole UTF-8 folder name, case-sensitively:
//!
//! - `*` matches any run of characters, none included, and crosses levels: `Work*` takes
//!   `Work/2019/Q1`. `**` is the same as `*`.
//! - `?` matches exactly one character, a delimiter included.
//! - `[abc]`, `[a-z]` match one character of the class; `[!a-z]` or `[^a-z]` one outside it.
//! - `\` takes the next character literally (`\*`, `\[`); everything else, `{` and `}`
//!   included, stands for itself.
//!
//! Each `*` captures what it matched, shortest first (`a*b*` splits `axxbyyb` at the first
//! `b`), for `--map`'s DST. Patterns become anchored regular expressions run by
//! regex-automata, so no pattern can take exponential time.

use std::fmt::Write;

use regex_automata::meta::Regex;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad folder pattern {pattern:?}: {detail}")]
pub struct PatternError {
    pub pattern: String,
    pub detail: String,
}

/// One compiled folder pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    pattern: String,
    stars: usize,
    re: Regex,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, PatternError> {
        let err = |detail: String| PatternError {
            pattern: pattern.to_string(),
            detail,
        };
        let (src, stars) = to_regex(pattern).map_err(|d| err(d.to_string()))?;
        let re = Regex::new(&src).map_err(|e| err(e.to_string()))?;
        Ok(Glob {
            pattern: pattern.to_string(),
            stars,
            re,
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// How many `*` capture (`**` counts once).
    pub fn stars(&self) -> usize {
        self.stars
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.re.is_match(name)
    }

    /// What each `*` matched, in order, if the whole name matches.
    pub fn captures(&self, name: &str) -> Option<Vec<String>> {
        let mut caps = self.re.create_captures();
        self.re.captures(name, &mut caps);
        if !caps.is_match() {
            return None;
        }
        Some(
            (1..=self.stars)
                .map(|i| {
                    caps.get_group(i)
                        .map_or("", |s| &name[s.range()])
                        .to_string()
                })
                .collect(),
        )
    }
}

/// A character for the regex, never read as syntax.
fn literal(c: char, out: &mut String) {
    if c.is_alphanumeric() {
        out.push(c);
    } else {
        let _ = write!(out, "\\x{{{:X}}}", c as u32);
    }
}

/// The regex for a pattern and how many capture groups (`*`) it has.
fn to_regex(pattern: &str) -> Result<(String, usize), &'static str> {
    let mut out = String::from("(?s)^");
    let mut stars = 0;
    let mut it = pattern.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '*' => {
                while it.peek() == Some(&'*') {
                    it.next();
                }
                out.push_str("(.*?)");
                stars += 1;
            }
            '?' => out.push('.'),
            '\\' => literal(it.next().ok_or("ends in a lone '\\'")?, &mut out),
            '[' => class(&mut it, &mut out)?,
            c => literal(c, &mut out),
        }
    }
    out.push('$');
    Ok((out, stars))
}

/// A `[...]` class, its `[` already read. A `]` first in the class stands for itself.
fn class(
    it: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut String,
) -> Result<(), &'static str> {
    out.push('[');
    if matches!(it.peek(), Some('!' | '^')) {
        it.next();
        out.push('^');
    }
    let mut first = true;
    loop {
        let c = it.next().ok_or("'[' without its ']'")?;
        match c {
            ']' if !first => break,
            '-' if !first && it.peek().is_some_and(|&n| n != ']') => out.push('-'),
            '\\' => literal(it.next().ok_or("ends in a lone '\\'")?, out),
            c => literal(c, out),
        }
        first = false;
    }
    out.push(']');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().is_match(s)
    }

    #[test]
    fn star_crosses_levels_and_question_mark_takes_one() {
        assert!(m("Work*", "Work"));
        assert!(m("Work*", "Work/2019/Q1"));
        assert!(m("*/Sub", "Work/Deep/Sub"));
        assert!(m("INBOX.Work*", "INBOX.Work.Old"));
        assert!(!m("Work*", "Old/Work"), "anchored at the start");
        assert!(!m("*Old", "Old/x"), "anchored at the end");
        assert!(m("a**b", "a/x/b"));
        assert!(m("Q?", "Q1") && m("a?b", "a/b") && !m("Q?", "Q") && !m("Q?", "Q10"));
        assert!(m("受信箱/*", "受信箱/取引先 2024"));
        assert!(m("??", "受信"), "? is one character, not one byte");
    }

    #[test]
    fn case_sensitive_and_literal_syntax() {
        assert!(!m("inbox", "INBOX"));
        assert!(m("a.b+c(d)|e$^{f,g}", "a.b+c(d)|e$^{f,g}"));
        assert!(!m("a.b", "axb"));
        assert!(!m("{a,b}", "a"), "no brace alternation: '{{' is itself");
        assert!(m(r"\*\?\[x]", "*?[x]"));
        assert!(!m(r"\*", "anything"));
    }

    #[test]
    fn classes() {
        assert!(m("Q[1-4]", "Q3") && !m("Q[1-4]", "Q5"));
        assert!(m("Q[!1-4]", "Q5") && m("Q[^1-4]", "Q5") && !m("Q[!1-4]", "Q2"));
        assert!(m("[]x]", "]") && m("[]x]", "x"));
        assert!(m("[a-]", "-") && m("[.*]", "*") && !m("[.*]", "x"));
        assert!(m("[あ-ん]", "か"));
    }

    #[test]
    fn bad_patterns_name_themselves() {
        for bad in ["Q[1-4", "x\\", "[z-a]"] {
            let e = Glob::new(bad).unwrap_err();
            assert_eq!(e.pattern, bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn captures_shortest_first() {
        let g = Glob::new("a*b*").unwrap();
        assert_eq!(g.captures("axxbyyb").unwrap(), ["xx", "yyb"]);
        assert_eq!(g.stars(), 2);
        let g = Glob::new("Old/**/Q?").unwrap();
        assert_eq!(g.stars(), 1);
        assert_eq!(g.captures("Old/2019/x/Q1").unwrap(), ["2019/x"]);
        assert_eq!(g.captures("Old/Q1"), None, "both slashes are literal");
        assert_eq!(
            Glob::new("Sent").unwrap().captures("Sent").unwrap().len(),
            0
        );
        assert_eq!(Glob::new("*").unwrap().captures("").unwrap(), [""]);
    }
}
