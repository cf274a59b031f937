//! SSH signatures over an archive file (spec §10.2): `A.sig` beside `A` is an SSHSIG
//! (OpenSSH's `PROTOCOL.sshsig`), namespace `mailark`, hash sha256, over the bytes of
//! `A` exactly as written, so `ssh-keygen -Y verify -n mailark` checks it with nothing
//! but OpenSSH. The writer hashes the file as it goes to disk and the verifier as it
//! reads it, so neither reads the archive a second time: SSHSIG signs H(message), and
//! the signed data is built here from that hash.

use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The SSHSIG namespace of mailark's signatures (`ssh-keygen -Y ... -n mailark`).
pub const NAMESPACE: &str = "mailark";

/// The hash mailark signs with. SSHSIG allows sha256 and sha512; the writer hashes
/// every byte of the archive, and sha256 runs on the CPU's SHA extensions where it has
/// them (sha512 has none on x86-64).
pub const HASH: HashAlg = HashAlg::Sha256;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signing key {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("signers file {path}: {detail}")]
    Signers { path: PathBuf, detail: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The signature file of an archive: `A` → `A.sig`.
pub fn sig_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// An unencrypted OpenSSH private key (`--sign KEY`).
#[derive(Clone)]
pub struct SigningKey {
    key: PrivateKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.key.fingerprint(HashAlg::Sha256))
    }
}

impl SigningKey {
    pub fn load(path: &Path) -> Result<SigningKey, SignError> {
        let bad = |detail: String| SignError::Key {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let key = PrivateKey::from_openssh(&text)
            .map_err(|e| bad(format!("not an OpenSSH private key ({e})")))?;
        if key.is_encrypted() {
            return Err(bad(
                "the key is passphrase-protected; mailark cannot ask for the passphrase".into(),
            ));
        }
        Ok(SigningKey { key })
    }

    /// The SSHSIG (PEM armor) over a file whose [`HASH`] is `digest`.
    pub fn sign(&self, digest: &[u8]) -> Result<String, SignError> {
        use signature::Signer;
        let blob = signed_data(HASH, digest);
        let sig = self
            .key
            .try_sign(&blob)
            .map_err(|e| SignError::Sign(e.to_string()))?;
        SshSig::new(
            self.key.public_key().key_data().clone(),
            NAMESPACE,
            HASH,
            sig,
        )
        .and_then(|s| s.to_pem(LineEnding::LF))
        .map_err(|e| SignError::Sign(e.to_string()))
    }
}

/// PROTOCOL.sshsig's signed data: "SSHSIG", namespace, reserved, hash algorithm and
/// H(message), each but the first an SSH string (u32 length, bytes).
fn signed_data(alg: HashAlg, hash: &[u8]) -> Vec<u8> {
    let mut out = b"SSHSIG".to_vec();
    for field in [NAMESPACE.as_bytes(), b"", alg.as_str().as_bytes(), hash] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// Public keys trusted to sign: an allowed_signers file (`principals [options] key`)
/// or plain public key lines (`ssh-ed25519 AAAA... comment`).
#[derive(Debug, Clone)]
pub struct Signers {
    keys: Vec<(String, PublicKey)>,
}

impl Signers {
    pub fn load(path: &Path) -> Result<Signers, SignError> {
        let bad = |detail: String| SignError::Signers {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_signer_line(line) {
                Some(Ok(k)) => keys.push(k),
                Some(Err(())) => {}
                None => return Err(bad(format!("line {}: no SSH public key on it", i + 1))),
            }
        }
        if keys.is_empty() {
            return Err(bad(format!("no key allowed for namespace {NAMESPACE}")));
        }
        Ok(Signers { keys })
    }
}

/// A key line, or an allowed_signers line: Some(Err) when its `namespaces=` leaves
/// mailark out, None when it holds no key.
fn parse_signer_line(line: &str) -> Option<Result<(String, PublicKey), ()>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| is_key_type(w))?;
    let key = PublicKey::from_openssh(&words[at..].join(" ")).ok()?;
    let principal = if at == 0 {
        key.comment().to_string()
    } else {
        words[0].to_string()
    };
    let ns_ok = words[..at].iter().all(|opt| {
        let Some(v) = opt.strip_prefix("namespaces=") else {
            return true;
        };
        v.trim_matches('"').split(',').any(|n| n == NAMESPACE)
    });
    Some(if ns_ok { Ok((principal, key)) } else { Err(()) })
}

fn is_key_type(w: &str) -> bool {
    w.starts_with("ssh-") || w.starts_with("ecdsa-") || w.starts_with("sk-")
}

/// What a signature check found, for reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SigStatus {
    /// Signed by a trusted key over exactly these bytes.
    Good { signer: String, fingerprint: String },
    /// There is a signature, and it does not hold (changed file, other key, namespace).
    Bad { detail: String },
    /// No `A.sig` beside the archive.
    Missing,
}

/// The hash a signature was made over (the file is hashed with it as it is read);
/// None when the text is not an SSH signature.
pub fn hash_of(sig_pem: &str) -> Option<HashAlg> {
    SshSig::from_pem(sig_pem.trim()).ok().map(|s| s.hash_alg())
}

/// Checks `sig_pem` against a file whose hash (by the signature's own algorithm, see
/// [`hash_of`]) is `digest`.
pub fn check(sig_pem: &str, digest: &[u8], signers: &Signers) -> SigStatus {
    use signature::Verifier;
    let bad = |detail: String| SigStatus::Bad { detail };
    let sig = match SshSig::from_pem(sig_pem.trim()) {
        Ok(s) => s,
        Err(e) => return bad(format!("not an SSH signature ({e})")),
    };
    if sig.namespace() != NAMESPACE {
        return bad(format!(
            "made for namespace {:?}, not {NAMESPACE}",
            sig.namespace()
        ));
    }
    if digest.len() != sig.hash_alg().digest_size() {
        return bad(format!(
            "the file was hashed with another algorithm than the signature's {}",
            sig.hash_alg()
        ));
    }
    let Some((who, key)) = signers
        .keys
        .iter()
        .find(|(_, k)| k.key_data() == sig.public_key())
    else {
        return bad("made by a key the signers file does not hold".into());
    };
    let blob = signed_data(sig.hash_alg(), digest);
    match key.key_data().verify(&blob, sig.signature()) {
        Ok(()) => SigStatus::Good {
            signer: who.clone(),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        },
        Err(_) => {
            bad("does not match the file: the archive was changed after it was signed".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn signs_and_checks_a_prehash_and_refuses_other_bytes() {
        let key = PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[7; 32]));
        let signer = SigningKey { key: key.clone() };
        let msg = b"archive bytes";
        let digest = Sha256::digest(msg);
        let pem = signer.sign(&digest).unwrap();
        // The crate's own whole-message verification agrees with our prehash blob.
        let sig = SshSig::from_pem(&pem).unwrap();
        key.public_key().verify(NAMESPACE, msg, &sig).unwrap();
        let line = format!("tanaka {}", key.public_key().to_openssh().unwrap());
        let (who, pk) = parse_signer_line(&line).unwrap().unwrap();
        assert_eq!(who, "tanaka");
        let signers = Signers {
            keys: vec![(who, pk)],
        };
        assert!(matches!(
            check(&pem, &digest, &signers),
            SigStatus::Good { .. }
        ));
        let other = Sha256::digest(b"archive bytez");
        assert!(matches!(
            check(&pem, &other, &signers),
            SigStatus::Bad { .. }
        ));
        // What `ssh-keygen -Y sign` writes: sha512 over the whole message.
        let s512 = key
            .sign(NAMESPACE, HashAlg::Sha512, msg)
            .unwrap()
            .to_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(hash_of(&s512), Some(HashAlg::Sha512));
        assert!(matches!(
            check(&s512, &sha2::Sha512::digest(msg), &signers),
            SigStatus::Good { .. }
        ));
        let ns = format!(
            "x namespaces=\"git\" {}",
            key.public_key().to_openssh().unwrap()
        );
        assert!(matches!(parse_signer_line(&ns), Some(Err(()))));
    }
}
