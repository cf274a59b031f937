//! `mailark receipt ARCHIVE... -o receipt.html`: verify the archives, then write the
//! page `crate::receipt` renders from that report.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::seal::{load_signers, IdentityArgs};
use super::{print_json, Fatal};
use crate::archive::seal::{self as sealed, Kind};
use crate::archive::{Archive, Chain, Completeness};
use crate::progress::Progress;
use crate::receipt::{self, Part};
use crate::verify::{self, VerifyInputs};

pub(super) const HELP: &str = "Examples:
  mailark receipt tanaka.tar.zst -o receipt.html
  mailark receipt full.tar.zst.age d1.tar.zst.age -i key.txt --signer allowed_signers -o receipt.html

Checks every message as `verify` does, then writes one HTML page (no script, no
network, no other file) with the source, dates, the chain, per-folder counts, sizes
and date ranges, the verification result with each index hash, the signature status
and a chart of messages per month. The page is written even when problems are found.
Exit 0 clean, 1 problems found (the page lists them), 2 unusable input.";

#[derive(Args, Debug)]
pub(super) struct ReceiptArgs {
    /// Archives (a chain: full + deltas).
    #[arg(required = true)]
    archives: Vec<PathBuf>,
    /// Where to write the page.
    #[arg(short, long)]
    output: PathBuf,
    /// Check each archive's signature A.sig against these public keys (allowed_signers
    /// or SSH public key lines).
    #[arg(long, value_name = "PUBKEY_OR_ALLOWED_SIGNERS")]
    signer: Option<PathBuf>,
    /// Replace an existing page.
    #[arg(long)]
    force: bool,
    /// Print verify's report, and `receipt` (the page written), as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    ids: IdentityArgs,
}

pub(super) fn run(quiet: bool, a: &ReceiptArgs) -> Result<u8, Fatal> {
    if a.output.exists() && !a.force {
        return Err(Fatal(format!(
            "{} already exists (use --force to replace it)",
            a.output.display()
        )));
    }
    let inputs = VerifyInputs {
        keys: a.ids.load()?,
        signers: load_signers(a.signer.as_ref())?,
    };
    let progress = Progress::bytes(0, !quiet && !a.json);
    let rep = verify::verify_archives_with(&a.archives, &inputs, &progress);
    progress.finish();
    // The page shows what the indexes hold; archives that would not open are in the
    // report's findings.
    let opened: Vec<Archive> = a
        .archives
        .iter()
        .filter_map(|p| Archive::open_or_scan(p, &inputs.keys).0.ok())
        .collect();
    let archives = match Chain::new(opened.clone(), Completeness::Whole) {
        Ok(c) => c.archives().to_vec(),
        Err(_) => opened,
    };
    let parts: Vec<Part<'_>> = archives
        .iter()
        .map(|ar| Part {
            archive: ar,
            encrypted: sealed::kind(&ar.path).is_ok_and(|k| k == Kind::Age),
            file_bytes: std::fs::metadata(&ar.path).map_or(0, |m| m.len()),
        })
        .collect();
    let html = receipt::render(&parts, &rep, chrono::Utc::now());
    write_page(&a.output, html.as_bytes(), a.force)?;
    if a.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            receipt: String,
            #[serde(flatten)]
            rep: &'a verify::VerifyReport,
        }
        print_json(&Out {
            receipt: a.output.display().to_string(),
            rep: &rep,
        })?;
    } else if !quiet {
        say!(
            "wrote {}: {} archive(s), {} messages checked, {} problem(s)",
            a.output.display(),
            rep.archives.len(),
            rep.messages_checked,
            rep.errors()
        );
    }
    Ok(if rep.unusable {
        2
    } else if rep.errors() > 0 {
        1
    } else {
        0
    })
}

/// Temp file beside the target, then rename: never a half-written page.
fn write_page(path: &std::path::Path, bytes: &[u8], force: bool) -> Result<(), Fatal> {
    let err = |e: std::io::Error| Fatal(format!("writing {}: {e}", path.display()));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".receipt.")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    if force {
        tmp.persist(path).map_err(|e| err(e.error))?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| err(e.error))?;
    }
    Ok(())
}
