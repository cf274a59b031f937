//! Folder-name codecs: modified UTF-7 (RFC 3501) both ways, and the on-disk escaping of
//! names (spec §4), whose output must always be one safe path component that reverses
//! to the name when it was not cut for length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailark::archive::names::{
    escape_component, is_safe_member_path, unescape_component, MAX_COMPONENT,
};
use mailark::mail::utf7;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    // Any name encodes to ASCII that decodes back to it.
    let enc = utf7::encode(&s);
    assert!(enc.is_ascii());
    assert_eq!(utf7::decode(&enc).as_deref(), Ok(&*s));
    // A server's name that decodes is the one encoding of what it decodes to: two raw
    // names can never decode to one folder.
    if let Ok(d) = utf7::decode(&s) {
        assert_eq!(utf7::encode(&d), s, "{s:?} decodes to {d:?}");
    }

    let c = escape_component(&s);
    assert!(c.len() <= MAX_COMPONENT, "{} bytes", c.len());
    // Spec §4 escapes C0 controls and DEL (C1 controls are ordinary characters there).
    let c0 = |ch: char| (ch as u32) < 0x20 || ch == '\u{7f}';
    assert!(!c.contains('/') && !c.chars().any(c0), "{c:?}");
    assert!(
        is_safe_member_path(&format!("maildir/{c}/cur/1:2,S")),
        "{c:?}"
    );
    // The spec's one name that does not reverse: an empty level is `%00empty`.
    if s.is_empty() {
        assert_eq!(c, "%00empty");
    } else if s.len() * 3 < MAX_COMPONENT - 20 {
        assert_eq!(unescape_component(&c), s, "{c:?}");
    }
});
