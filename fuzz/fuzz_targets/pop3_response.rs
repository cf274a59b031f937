//! POP3 answers: status lines, CAPA/LIST/UIDL/STAT bodies and the dot-unstuffer. Nothing
//! may panic, and the unstuffer must give the same bytes and stop at the same place
//! however its input is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailark::source::pop3::proto::{self, BodyLimit, Capabilities, Unstuffer};

fn unstuff(parts: &[&[u8]]) -> (Vec<u8>, Option<usize>) {
    let mut u = Unstuffer::new();
    let mut out = Vec::new();
    let mut base = 0;
    for p in parts {
        if let Some(n) = u.feed(p, |c| out.extend_from_slice(c)) {
            return (out, Some(base + n));
        }
        base += p.len();
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let _ = proto::parse_response(data);
    let _ = proto::parse_list(data);
    let _ = proto::parse_uidl(data);
    let _ = proto::parse_stat(&String::from_utf8_lossy(data));
    let caps = Capabilities::parse(data);
    let _ = (caps.sasl_mechanisms(), caps.implementation(), caps.top());
    if let Some(ts) = proto::apop_timestamp(&String::from_utf8_lossy(data)) {
        assert!(ts.starts_with('<') && ts.ends_with('>'));
    }

    let whole = unstuff(&[data]);
    assert!(whole.0.len() <= data.len() + 2);
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let (a, b) = data.split_at(cut);
    assert_eq!(unstuff(&[a, b]), whole, "split at {cut}");
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(unstuff(&bytes), whole, "byte at a time");

    let list_size = u64::from_le_bytes(data.get(..8).map_or([0; 8], |b| b.try_into().unwrap()));
    let lim = BodyLimit::Message {
        msgno: 1,
        list_size: Some(list_size),
    };
    assert!(lim.check(lim.max()).is_ok());
    if lim.max() < u64::MAX {
        assert!(lim.check(lim.max() + 1).is_err());
    }
});
