//! Small text helpers shared by modules that must not depend on each other.

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is.
/// Invalid UTF-8 after decoding is replaced, never panics.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A name's bytes for people: UTF-8 when they are UTF-8, otherwise each byte read as
/// Latin-1 (what old hosts wrote, and a reading that keeps distinct bytes distinct).
/// The bytes themselves are kept elsewhere; this is only how they are shown.
pub fn display_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.iter().map(|&c| c as char).collect(),
    }
}

/// `s` safe to print on a terminal: control characters (ESC, BEL, CR, ...) become
/// `\u{..}` escapes, so a name from a server cannot drive the terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_escapes_controls_only() {
        assert_eq!(super::printable("送信済み Sent"), "送信済み Sent");
        assert_eq!(super::printable("a\x1b[31mb\x07"), "a\\u{1b}[31mb\\u{7}");
    }
}
