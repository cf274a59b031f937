//! What an IMAP server sends: the stream bounds (line, response text, literal sizes)
//! must reach the same verdict however the bytes are split, and the session's line
//! parsers must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailark::source::imap::bounds::ResponseScan;

fn scan(parts: &[&[u8]]) -> Result<(), mailark::source::imap::bounds::BoundError> {
    let mut s = ResponseScan::new();
    for p in parts {
        s.feed(p)?;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let whole = scan(&[data]);
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let (a, b) = data.split_at(cut);
    assert_eq!(scan(&[a, b]), whole, "split at {cut}");
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(scan(&bytes), whole, "byte at a time");
    for line in data.split(|&b| b == b'\n') {
        mailark::source::imap::session::fuzz_line_parsers(line);
        mailark::source::imap::dest::fuzz_line_parsers(line);
    }
});
