//! What an IMAP server sends, through the one framer every session reads with: however
//! the bytes are split it must give the same frames and the same bound verdict, the
//! frames must be the input's prefix byte for byte, and nothing read from a frame
//! (kind, status and response code, literals, the session's line parsers) may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailark::source::imap::wire::{BoundError, Frame, Framer};

fn frames(parts: &[&[u8]]) -> (Vec<Frame>, Option<BoundError>) {
    let mut f = Framer::new();
    let mut out = Vec::new();
    for p in parts {
        f.push(p);
        loop {
            match f.next_frame() {
                Ok(Some(fr)) => out.push(fr),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let whole = frames(&[data]);
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let (a, b) = data.split_at(cut);
    assert_eq!(frames(&[a, b]), whole, "split at {cut}");
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(frames(&bytes), whole, "byte at a time");
    let joined: Vec<u8> = whole.0.iter().flat_map(|f| f.raw.iter().copied()).collect();
    assert!(data.starts_with(&joined));
    for f in &whole.0 {
        let _ = (
            f.kind(),
            f.status(),
            f.continuation_text(),
            f.plain_literals(),
        );
        for i in 0..f.literals.len() {
            assert!(f.literal(i).is_some());
        }
        mailark::source::imap::session::fuzz_line_parsers(f.first_line());
    }
});
