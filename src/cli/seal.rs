//! The hand-off flags: `--encrypt-to`, `--encrypt-to-file` and `--sign` of export,
//! `--identity` of every command that reads archives, `--signer` of verify and receipt.

use std::path::PathBuf;

use clap::Args;

use super::Fatal;
use crate::archive::seal::{Identities, Recipients};
use crate::archive::sign::{Signers, SigningKey};
use crate::archive::WriterOptions;

#[derive(Args, Debug, Clone, Default)]
pub(crate) struct SealArgs {
    /// Encrypt the archive with age to RECIPIENT: an age public key (age1...) or an SSH
    /// public key line (ssh-ed25519 ..., ssh-rsa ...). Repeatable; any one of them can
    /// open it. The output is a standard age file (conventionally NAME.tar.zst.age).
    #[arg(long = "encrypt-to", value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// Encrypt to every recipient in FILE, one a line (as `age -R`; # comments).
    #[arg(long = "encrypt-to-file", value_name = "FILE")]
    pub encrypt_to_file: Vec<PathBuf>,
    /// Sign the archive with this SSH private key: writes OUTPUT.sig (SSHSIG, namespace
    /// mailark), checked by `ssh-keygen -Y verify -n mailark` or `verify --signer`.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
}

impl SealArgs {
    /// Puts the recipients and the signing key into the writer's options. Both are
    /// read before the export starts, so a bad key costs no download.
    pub(crate) fn apply(&self, w: &mut WriterOptions) -> Result<(), Fatal> {
        if !self.encrypt_to.is_empty() || !self.encrypt_to_file.is_empty() {
            let r = Recipients::parse(&self.encrypt_to, &self.encrypt_to_file)?;
            if r.is_empty() {
                return Err(Fatal(
                    "--encrypt-to-file: the files name no recipient".into(),
                ));
            }
            w.encrypt_to = Some(r);
        }
        if let Some(k) = &self.sign {
            w.sign_with = Some(SigningKey::load(k)?);
        }
        Ok(())
    }
}

#[derive(Args, Debug, Clone, Default)]
pub(crate) struct IdentityArgs {
    /// A key for age-encrypted archives: an age identity file (AGE-SECRET-KEY-1...) or
    /// an unencrypted SSH private key. Repeatable.
    #[arg(long = "identity", short = 'i', value_name = "FILE")]
    pub identity: Vec<PathBuf>,
}

impl IdentityArgs {
    pub(crate) fn load(&self) -> Result<Identities, Fatal> {
        Ok(Identities::load(&self.identity)?)
    }
}

/// `--signer`: who may have signed the archives.
pub(crate) fn load_signers(path: Option<&PathBuf>) -> Result<Option<Signers>, Fatal> {
    Ok(path.map(|p| Signers::load(p)).transpose()?)
}

/// After an export: what protects the file, for the person who hands it over.
pub(crate) fn say_sealed(args: &SealArgs, output: &std::path::Path) {
    let n = args.encrypt_to.len() + args.encrypt_to_file.len();
    if n > 0 {
        say!(
            "encrypted with age ({} recipient argument(s)); open it with --identity, or: age -d -i KEY {} | tar --zstd -x",
            n,
            output.display()
        );
    }
    if args.sign.is_some() {
        say!(
            "signed: {} (ssh-keygen -Y verify -n mailark, or mailark verify --signer)",
            crate::archive::sign::sig_path(output).display()
        );
    }
}
