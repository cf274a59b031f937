//! The SASL initial responses this client can send (PLAIN, XOAUTH2, OAUTHBEARER) and the
//! APOP digest (RFC 1939 §7), built without I/O so their exact bytes are testable. Every value returned here carries a
//! secret: callers send it and never print it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::proto::ProtoError;

fn no_nul(what: &'static str, s: &str) -> Result<(), ProtoError> {
    // NUL separates the fields of PLAIN and ^A those of the OAuth mechanisms; either in a
    // value would let it rewrite the fields after it.
    if s.bytes().any(|b| b == 0 || b == 1) {
        Err(ProtoError::BadArgument(what))
    } else {
        Ok(())
    }
}

/// RFC 4616 PLAIN with an empty authorization identity, base64-encoded.
pub fn plain(user: &str, password: &str) -> Result<String, ProtoError> {
    no_nul("user name", user)?;
    no_nul("password", password)?;
    Ok(STANDARD.encode(format!("\0{user}\0{password}")))
}

/// Google/Microsoft XOAUTH2, base64-encoded.
pub fn xoauth2(user: &str, token: &str) -> Result<String, ProtoError> {
    no_nul("user name", user)?;
    no_nul("token", token)?;
    Ok(STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01")))
}

/// RFC 7628 OAUTHBEARER, base64-encoded. The user goes in the GS2 header, where `,` and
/// `=` must be escaped.
pub fn oauthbearer(user: &str, host: &str, port: u16, token: &str) -> Result<String, ProtoError> {
    no_nul("user name", user)?;
    no_nul("token", token)?;
    let user = user.replace('=', "=3D").replace(',', "=2C");
    Ok(STANDARD.encode(format!(
        "n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    )))
}

/// The APOP digest: lower-case hex MD5 of the greeting's timestamp and the password.
/// MD5 is what RFC 1939 fixes; it is computed here because nothing else in mailark
/// needs it, which does not justify a dependency.
pub fn apop_digest(timestamp: &str, password: &str) -> String {
    let mut data = Vec::with_capacity(timestamp.len() + password.len());
    data.extend_from_slice(timestamp.as_bytes());
    data.extend_from_slice(password.as_bytes());
    hex::encode(md5(&data))
}

/// RFC 1321 MD5.
fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    // K[i] = floor(abs(sin(i + 1)) * 2^32), as the RFC defines the table.
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let mut h: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    let mut msg = input.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((input.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in msg.chunks(64) {
        let m: Vec<u32> = block
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, w) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// What to answer to a `+` challenge after the initial response: OAuth servers send an
/// error document and wait for a dummy reply before their `-ERR`; for anything else the
/// exchange is cancelled with `*` (RFC 5034 §4).
pub fn abort_reply(mechanism: &str) -> &'static str {
    match mechanism {
        "XOAUTH2" => "",
        "OAUTHBEARER" => "AQ==",
        _ => "*",
    }
}

/// Decodes a server challenge for an error message; only printable text is kept, since
/// it comes from the server and may be anything.
pub fn challenge_text(b64: &str) -> String {
    match STANDARD.decode(b64.trim()) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Vec<u8> {
        STANDARD.decode(s).unwrap()
    }

    #[test]
    fn initial_responses() {
        assert_eq!(decode(&plain("alice", "pw d").unwrap()), b"\0alice\0pw d");
        assert_eq!(
            decode(&xoauth2("a@x.org", "ya29.T").unwrap()),
            b"user=a@x.org\x01auth=Bearer ya29.T\x01\x01"
        );
        assert_eq!(
            decode(&oauthbearer("a,b=c@x", "mail.x", 995, "T").unwrap()),
            b"n,a=a=2Cb=3Dc@x,\x01host=mail.x\x01port=995\x01auth=Bearer T\x01\x01"
        );
        let e = plain("alice", "bad\0pw").unwrap_err();
        assert!(!e.to_string().contains("bad"));
        assert!(xoauth2("a\x01auth=x", "T").is_err());
    }

    #[test]
    fn md5_and_apop() {
        // RFC 1321 appendix A.5 test suite.
        let cases: [(&str, &str); 4] = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(hex::encode(md5(input.as_bytes())), want, "{input:?}");
        }
        // The example of RFC 1939 §7.
        assert_eq!(
            apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    #[test]
    fn challenges() {
        assert_eq!(
            challenge_text("eyJzdGF0dXMiOiI0MDEifQ=="),
            r#"{"status":"401"}"#
        );
        assert_eq!(challenge_text("not base64!"), "");
        assert_eq!(abort_reply("OAUTHBEARER"), "AQ==");
        assert_eq!(abort_reply("PLAIN"), "*");
    }
}
