//! `mailark folders URL`: the account's folders as a table or JSON.

use clap::Args;
use indicatif::BinaryBytes;
use unicode_width::UnicodeWidthStr;

use super::{print_json, Fatal, NetArgs};
use crate::source::net::{Endpoint, Scheme};

pub(super) const HELP: &str = "Examples:
  mailark folders imaps://alice@mail.example.com --password-file pw
  mailark folders imaps://alice@mail.example.com --password-env PW --json | jq '.folders[].name'

Logs in, lists every folder with its messages, size, role (SPECIAL-USE, or the role
its name says on servers without it: Sent Items, 送信済みメール, ...) and subscription.
Nothing on the server changes (folders are opened read-only with EXAMINE).
Exit 0 listed, 2 could not log in or list.";

#[derive(Args, Debug)]
pub(super) struct FoldersArgs {
    /// imaps://USER@HOST[:PORT] or imap://USER@HOST (STARTTLS).
    url: String,
    /// Print the census as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    net: NetArgs,
}

pub(super) fn run(quiet: bool, a: &FoldersArgs) -> Result<u8, Fatal> {
    let ep = Endpoint::parse(&a.url)?;
    if !matches!(ep.scheme, Scheme::Imap | Scheme::Imaps) {
        return Err(Fatal(format!(
            "{ep}: folders lists IMAP accounts (imaps:// or imap://); a POP3 maildrop has \
             one folder, which `mailark export` reports"
        )));
    }
    let creds = a.net.credentials(&ep)?;
    let tls = a.net.tls();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let c = rt.block_on(crate::census::imap_census(
        &ep,
        &creds,
        &tls,
        a.net
            .step_timeout(crate::source::imap::session::DEFAULT_TIMEOUT),
    ))?;
    if a.json {
        print_json(&c)?;
        return Ok(0);
    }
    if quiet {
        return Ok(0);
    }
    let names: Vec<String> = c
        .folders
        .iter()
        .map(|f| crate::text::printable(&f.name))
        .collect();
    let w = names
        .iter()
        .map(|n| n.width())
        .chain([6])
        .max()
        .unwrap_or(6);
    let pad = |s: &str| format!("{s}{}", " ".repeat(w.saturating_sub(s.width())));
    say!(
        "{}  {:>8} {:>10}  {:<18} subscribed",
        pad("folder"),
        "messages",
        "size",
        "role"
    );
    for (f, name) in c.folders.iter().zip(&names) {
        let role = match (&f.role, f.role_from) {
            (Some(r), Some("name")) => format!("{r} (by name)"),
            (Some(r), _) => r.clone(),
            _ => "-".into(),
        };
        let (msgs, size) = if f.selectable {
            (f.messages.to_string(), BinaryBytes(f.bytes).to_string())
        } else {
            ("-".into(), "\\Noselect".into())
        };
        say!(
            "{}  {msgs:>8} {size:>10}  {role:<18} {}",
            pad(name),
            if f.subscribed { "yes" } else { "no" }
        );
    }
    let ns = c
        .namespace
        .as_ref()
        .map(|(p, d)| {
            format!(
                "namespace {p:?} delimiter {:?}",
                d.map(String::from).unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "no NAMESPACE".into());
    say!(
        "{}: {} folder(s), {} message(s), {}; {}, {}",
        c.server,
        c.folders.len(),
        c.messages,
        BinaryBytes(c.bytes),
        ns,
        if c.tls { "TLS" } else { "no TLS" }
    );
    Ok(0)
}
