//! The mbox reader on arbitrary files in every quoting, and mboxrd quoting round trips.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use mailark::mail::mboxrd;
use mailark::source::mbox::{MboxReader, Quoting};

fuzz_target!(|data: &[u8]| {
    for q in [Quoting::Rd, Quoting::O, Quoting::None] {
        let mut r = MboxReader::new(Cursor::new(data), q);
        let mut total = 0usize;
        // Every message consumes input, so the loop ends; a bound guards a reader that
        // would return messages forever.
        for _ in 0..=data.len() + 1 {
            match r.next_message() {
                Ok(Some(m)) => {
                    total += m.bytes.len();
                    assert!(m.offset <= data.len() as u64);
                }
                Ok(None) | Err(_) => break,
            }
        }
        assert!(
            total <= data.len() * 2 + 64,
            "{total} bytes out of {}",
            data.len()
        );
    }
    let mut quoted = Vec::new();
    mboxrd::quote_into(data, &mut quoted);
    assert_eq!(mboxrd::unquote(&quoted), data);
});
