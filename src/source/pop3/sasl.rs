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

/// The APOP digest: lower-case hex MD5 of the greeting's timestamp and the password
/// (MD5 is what RFC 1939 fixes). `md-5` shares `digest` with `sha2`, so it adds one small
/// crate and no hand-written hash.
pub fn apop_digest(timestamp: &str, password: &str) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(password.as_bytes());
    hex::encode(h.finalize())
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
    fn apop() {
        // The example of RFC 1939 §7.
        assert_eq!(
            apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
        // RFC 1321 appendix A.5: the timestamp and password are simply concatenated.
        assert_eq!(
            apop_digest(
                "12345678901234567890123456789012345678901234567890",
                "123456789012345678901234567890"
            ),
            "57edf4a22be3c955ac49da2e2107b67a"
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
