//! Modified UTF-7 (RFC 3501 §5.1.3), the wire form of IMAP mailbox names and the on-disk
//! form of Maildir++ folder names: printable ASCII stands for itself except `&`, which is
//! written `&-`; everything else is UTF-16 in a modified base64 (`,` for `/`, no padding)
//! between `&` and `-`. Decoding is strict, so a name that is not valid modified UTF-7
//! can be kept as it is instead of being mangled.

use base64::alphabet::IMAP_MUTF7;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// RFC 3501's base64: `,` for `/`, never padded. Decoding also refuses non-zero leftover
/// bits (the engine's default), which the RFC forbids too.
const MUTF7: GeneralPurpose = GeneralPurpose::new(
    &IMAP_MUTF7,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not valid modified UTF-7: {0:?}")]
pub struct Utf7Error(pub String);

/// Encodes a UTF-8 name for the wire.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run: Vec<u16> = Vec::new();
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut run, &mut out);
    out
}

fn flush(run: &mut Vec<u16>, out: &mut String) {
    if run.is_empty() {
        return;
    }
    let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
    out.push('&');
    MUTF7.encode_string(&bytes, out);
    out.push('-');
    run.clear();
}

/// Decodes a wire name to UTF-8, refusing anything RFC 3501 does not allow (raw 8-bit,
/// bad base64, leftover bits, an encoded printable character, unpaired surrogates).
pub fn decode(s: &str) -> Result<String, Utf7Error> {
    let err = || Utf7Error(s.to_string());
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(0x20..=0x7e).contains(&c) {
            return Err(err());
        }
        if c != b'&' {
            out.push(c as char);
            i += 1;
            continue;
        }
        let end = s[i + 1..].find('-').map(|e| i + 1 + e).ok_or_else(err)?;
        if end == i + 1 {
            out.push('&');
            i = end + 1;
            continue;
        }
        let bytes = MUTF7.decode(&b[i + 1..end]).map_err(|_| err())?;
        // Whole UTF-16 units only: an odd byte means bits were left over.
        if bytes.len() % 2 != 0 {
            return Err(err());
        }
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect();
        let text = String::from_utf16(&units).map_err(|_| err())?;
        if text.chars().any(|c| (' '..='~').contains(&c)) {
            return Err(err());
        }
        out.push_str(&text);
        i = end + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples_and_japanese() {
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        assert_eq!(encode("A&B"), "A&-B");
        assert_eq!(decode("A&-B").unwrap(), "A&B");
        for s in [
            "送信済みメール",
            "迷惑メール",
            "受信箱/取引先 2024",
            "x😀y",
            "&&",
            "é",
        ] {
            assert_eq!(decode(&encode(s)).unwrap(), s, "{s}");
        }
    }

    #[test]
    fn refuses_invalid() {
        // Besides the old cases: odd byte counts (4 and 7 digits), non-zero leftover
        // bits (`&ZeV-`), padding, and `/` from plain base64 instead of `,`.
        for bad in [
            "&",
            "&Jjo",
            "&AGE-",
            "a\u{e9}",
            "&U,BTF-",
            "&ZeVn-",
            "&ZeVnLIq-",
            "&ZeV-",
            "&2D0-",
            "&ZeU=-",
            "&U/BTFw-",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
