//! The fuzz targets in `fuzz/` (cargo-fuzz, nightly; run for real by `scripts/fuzz.sh`)
//! built and run on stable with the suite: each target's own body over seeded inputs,
//! grown from a few well-formed answers by flips, cuts and splices. The fuzzer finds
//! the inputs; this keeps every target compiling against the library as it changes
//! (the fuzz crate is not built by the test command) and its assertions true.

// The targets say `use libfuzzer_sys::fuzz_target;`: here that names this crate, whose
// `fuzz_target!` turns the target's body into a plain function.
extern crate self as libfuzzer_sys;

mod common;
use common::Seeded;

#[macro_export]
macro_rules! fuzz_target {
    (|$data:ident: &[u8]| $body:block) => {
        pub fn run($data: &[u8]) $body
    };
}

// Each file starts with `#![no_main]`, meant for the fuzz crate's root.
#[allow(unused_attributes, unused_imports)]
#[path = "../fuzz/fuzz_targets/archive_index.rs"]
mod archive_index;
#[allow(unused_attributes, unused_imports)]
#[path = "../fuzz/fuzz_targets/folder_names.rs"]
mod folder_names;
#[allow(unused_attributes, unused_imports)]
#[path = "../fuzz/fuzz_targets/imap_response.rs"]
mod imap_response;
#[allow(unused_attributes, unused_imports)]
#[path = "../fuzz/fuzz_targets/mbox_reader.rs"]
mod mbox_reader;
#[allow(unused_attributes, unused_imports)]
#[path = "../fuzz/fuzz_targets/pop3_response.rs"]
mod pop3_response;

/// `n` inputs: the seeds themselves, then each mutated by a few flips, a cut, an
/// inserted byte from a small alphabet of protocol characters, or a splice of two.
fn inputs(seeds: &[&[u8]], n: usize, salt: u64) -> Vec<Vec<u8>> {
    const ALPHABET: &[u8] = b"\r\n{}()[]\"\\ *+-.0123456789&~%\x00\xff";
    let mut rng = Seeded(0x9e37_79b9_7f4a_7c15 ^ salt);
    let mut out: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    while out.len() < n {
        let mut b = seeds[rng.within(0, seeds.len())].to_vec();
        for _ in 0..1 + rng.within(0, 4) {
            match rng.within(0, 5) {
                0 if !b.is_empty() => {
                    let i = rng.within(0, b.len());
                    b[i] ^= 1 << rng.within(0, 8);
                }
                1 if !b.is_empty() => b.truncate(rng.within(0, b.len())),
                2 => {
                    let at = rng.within(0, b.len() + 1);
                    b.insert(at, ALPHABET[rng.within(0, ALPHABET.len())]);
                }
                3 => {
                    let other = seeds[rng.within(0, seeds.len())];
                    let from = rng.within(0, other.len() + 1);
                    let at = rng.within(0, b.len() + 1);
                    b.splice(at..at, other[from..].iter().copied());
                }
                _ => {
                    let len = rng.within(0, 64);
                    b.extend((0..len).map(|_| rng.next() as u8));
                }
            }
        }
        out.push(b);
    }
    out
}

/// Runs `target` over each input, naming the input that failed.
fn each(target: fn(&[u8]), seeds: &[&[u8]], salt: u64) {
    for (i, input) in inputs(seeds, 20_000, salt).iter().enumerate() {
        if std::panic::catch_unwind(|| target(input)).is_err() {
            panic!(
                "input {i} (salt {salt}) failed: {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn imap_response() {
    each(
        imap_response::run,
        &[
            b"* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n",
            b"* 1 FETCH (UID 7 RFC822.SIZE 5 BODY[] {5}\r\nhello FLAGS (\\Seen))\r\nA1 OK done\r\n",
            b"* LIST (\\HasNoChildren \\Sent) \"/\" \"&MEwwsDDVMKEwpDDr-\"\r\n",
            b"* STATUS INBOX (MESSAGES 3 UIDNEXT 9 UIDVALIDITY 1)\r\n+ go ahead\r\n",
            b"* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\nA2 NO [TRYCREATE] no\r\n",
            b"* 3 EXISTS\r\n* 1 EXPUNGE\r\nA3 BAD {999999999999}\r\n",
        ],
        1,
    );
}

#[test]
fn pop3_response() {
    each(
        pop3_response::run,
        &[
            b"+OK 2 320\r\n",
            b"+OK\r\n1 120\r\n2 200\r\n.\r\n",
            b"+OK\r\n1 abc\r\n2 de.f\r\n.\r\n",
            b"+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN\r\n.\r\n",
            b"+OK\r\n..dotted\r\nline\r\n.\r\n",
            b"-ERR [IN-USE] locked\r\n",
        ],
        2,
    );
}

#[test]
fn mbox_reader() {
    each(
        mbox_reader::run,
        &[
            b"From a@b Mon Jan  1 00:00:00 2024\nSubject: x\n\nbody\n>From quoted\n\n",
            b"From a@b Mon Jan  1 00:00:00 2024\r\nX: y\r\n\r\n>>From two\r\n",
            b"From \nFrom \n\n",
        ],
        3,
    );
}

#[test]
fn folder_names() {
    each(
        folder_names::run,
        &[
            "受信箱/2024".as_bytes(),
            b"&MEwwsDDVMKEwpDDr-",
            b"Projects.sBd/..//%2E",
            b"INBOX.Sent Items",
            b"\xff\xfe&-&AGE-",
        ],
        4,
    );
}

#[test]
fn archive_index() {
    // The spec's own example index (formats/archive-v1.md §5.5) and a bare trailer.
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/formats/archive-v1.md"
    ))
    .unwrap();
    let example: String = spec
        .lines()
        .skip_while(|l| !l.starts_with("### 5.5"))
        .filter(|l| l.starts_with("{\"type\""))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        example.contains("\"type\":\"end\""),
        "the spec's example moved"
    );
    let mut trailer = b"MAILARK1".to_vec();
    trailer.resize(72, 0);
    each(
        archive_index::run,
        &[example.as_bytes(), &trailer, &example.as_bytes()[..200]],
        5,
    );
}
