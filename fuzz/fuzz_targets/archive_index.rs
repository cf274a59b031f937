//! The archive's index and trailer readers on arbitrary bytes: errors, never panics;
//! a trailer that decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailark::archive::footer::{Footer, FOOTER_LEN};
use mailark::archive::index::Index;

fuzz_target!(|data: &[u8]| {
    if let Ok(idx) = Index::parse(data) {
        // A parsed index is self-consistent in what parsing promises.
        assert_eq!(idx.end.messages, idx.messages.len() as u64);
        for m in idx.messages.iter() {
            let _ = m.parsed_internaldate();
        }
    }
    let file_len = data.len() as u64;
    if let Ok(f) = Footer::decode(data, file_len) {
        assert_eq!(&f.encode()[..], &data[data.len() - FOOTER_LEN..]);
        assert!(f.index_offset + f.index_length + FOOTER_LEN as u64 == file_len);
    }
});
