//! The command line: parses arguments, runs a workflow, prints its report for people
//! or as JSON, and maps the outcome to an exit code. Errors become one line here.
//!
//! Exit codes: 0 done and clean; 1 done, but problems were found (verify findings,
//! messages that could not be archived); 2 could not do the job (bad arguments,
//! unusable input, connection or login failure); 130 interrupted.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::BinaryBytes;
use unicode_width::UnicodeWidthStr;

/// Prints one line for people. Everything such a line shows may come from a server, a
/// message or an archive (folder names, subjects, ids, server words), so any control
/// character in it is escaped ([`printable`]): it cannot drive the terminal.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", crate::text::printable(&format!($($arg)*)))
    };
}

/// [`say!`] on stderr.
macro_rules! say_err {
    ($($arg:tt)*) => {
        eprintln!("{}", crate::text::printable(&format!($($arg)*)))
    };
}

mod folders;
mod ls;
mod migrate;
mod receipt;
mod seal;
mod table;

use table::{column_width, pad};

use crate::archive::{Archive, Chain, Completeness, Layout, WriterOptions};
use crate::export::{self, FolderFilter};
use crate::extract::{self, Target};
use crate::progress::Progress;
use crate::source::local::LocalSource;
use crate::source::net::{Auth, Credentials, Endpoint, Scheme, Secret, TlsOptions};
use crate::source::{maildir::MaildirSource, mbox::MboxSource, mbox::Quoting, SourceSpec};
use crate::text::printable;
use crate::verify::{self, Level};

const EXAMPLES: &str = "\
Examples:
  mailark export maildir:~/Maildir -o alice.tar.zst
  mailark export mbox:~/.thunderbird/xxxx.default/Mail/Local\\ Folders -o tb.tar.zst
  mailark ls alice.tar.zst
  mailark verify alice.tar.zst
  mailark extract alice.tar.zst --to maildir:/srv/restore/alice
  mailark import alice.tar.zst --to imaps://alice@new.example.net --password-file pw

Exit codes: 0 clean, 1 problems found, 2 could not do the job, 130 interrupted.
Archives open without mailark: tar --zstd -xf alice.tar.zst && sha256sum -c SHA256SUMS";

#[derive(Parser, Debug)]
#[command(name = "mailark", version, about = "Save a whole mailbox into a portable archive and put it back, byte-exact.", after_help = EXAMPLES)]
pub struct Cli {
    /// More detail on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// No progress bar and no summary; errors only.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Archive every folder of a mailbox into one .tar.zst file.
    #[command(after_help = "Examples:
  mailark export imaps://alice@mail.example.com -o alice.tar.zst --password-file pw
  mailark export imap://alice@mail.example.com -o alice.tar.zst       # STARTTLS, asks
  mailark export imaps://alice@host -o delta1.tar.zst --since alice.tar.zst --password-env PW
  mailark export pop3s://alice@mail.example.com -o alice.tar.zst --password-file pw
  mailark export maildir:/var/mail/alice/Maildir -o alice.tar.zst
  mailark export mbox:Inbox -o inbox.tar.zst --layout mbox
  mailark export eml:\"Outlook export\" -o saved.tar.zst
  mailark export maildir:Maildir -o a.tar.zst --folder 'INBOX*' --exclude Trash --json

SOURCE is imaps://USER@HOST[:PORT], imap:// (STARTTLS), pop3s://, pop3:// (STLS),
maildir:PATH (Maildir, Maildir++ or Dovecot LAYOUT=fs tree), mbox:PATH (one mbox
file or a Thunderbird-style tree) or eml:PATH (a folder tree of .eml files).
Passwords come from --password-file, --password-env, --password-command or a
prompt, never from the command line. Nothing on a server is changed. The archive appears under its final
name only when it is complete.

Exit 0: every message archived. 1: the archive was written but something is missing
(each one listed). 2: nothing was written (bad input, login, TLS, connection).")]
    Export(ExportArgs),
    /// List the messages of archives (reads only the index).
    #[command(after_help = "Examples:
  mailark ls alice.tar.zst
  mailark ls full.tar.zst delta1.tar.zst --json | jq '.messages[].subject'")]
    Ls(LsArgs),
    /// Check archives: every hash, index against members, index checksum, chain.
    #[command(after_help = "Examples:
  mailark verify alice.tar.zst
  mailark verify full.tar.zst delta1.tar.zst --json
  mailark verify alice.tar.zst --against imaps://alice@mail.example.com --password-file pw
  mailark verify alice.tar.zst --against imaps://alice@new.example.net --full --password-env PW

--against compares with a live IMAP account: by UID where the folder's UIDVALIDITY is
the archive's, else by Message-ID + size (SHA-256 with --full), so the same command
checks the old server before shut-off and the new one after import.
Exit 0 clean, 1 problems found (each one listed), 2 unusable input.")]
    Verify(VerifyArgs),
    /// Write the messages of archives out as Maildir, mbox or .eml files.
    #[command(after_help = "Examples:
  mailark extract alice.tar.zst --to maildir:/srv/mail/alice
  mailark extract full.tar.zst delta1.tar.zst --to maildir:Maildir --exclude 'Trash*'
  mailark extract alice.tar.zst --to eml:out --folder 'INBOX*' --json
  mailark extract alice.tar.zst --to mbox:out
  mailark extract alice.tar.zst --to maildir-fs:/srv/mail/alice

maildir:DIR is Maildir++ (INBOX in DIR itself, .Folder.Sub in modified UTF-7), read as
is by Dovecot's and Courier's default maildir:~/Maildir, mbsync and mutt. maildir-fs:DIR
is a Dovecot LAYOUT=fs tree that keeps names that are not UTF-8 as their bytes:
  mail_location = maildir:DIR:LAYOUT=fs:UTF-8:INBOX=DIR/INBOX

Files appear only whole (written under a temporary name, then moved). A rerun keeps the
files an earlier run wrote and writes the rest; a file with other content is never
overwritten. Exit 0: every message extracted. 1: some could not be read (each one
listed; all others extracted). 2: the job could not be done (e.g. disk full).")]
    Extract(ExtractArgs),
    /// Put archived mail into an IMAP account, skipping what is already there, then
    /// check every message on the server.
    #[command(after_help = "Examples:
  mailark import alice.tar.zst --to imaps://alice@mail.example.net --password-file pw
  mailark import full.tar.zst delta1.tar.zst --to imaps://a@host --dry-run
  mailark import a.tar.zst --to imap://a@host --map 'Old/*=Archive/*' --prefix Imported
  mailark import a.tar.zst --to imaps://a@host --verify full --json
  mailark import a.tar.zst --to imaps://a@host --folder 'INBOX*' --exclude 'INBOX/Old*'

Folder names use '/' between levels in --map and --prefix, whatever the server's
delimiter. Special-use folders (Sent, Drafts, Trash, Junk, Archive) go to the
destination's own folder for that role unless --map or --prefix says otherwise.
Rerunning is safe: messages already on the server are recognised and skipped.
Exit 0 when every message is verified on the server, 1 when any is missing or
differs, 2 when the import could not run.")]
    Import(ImportArgs),
    /// Move accounts from an old server to a new one: archive first, import, verify,
    /// in passes until the old server is quiet.
    #[command(after_help = migrate::MIGRATE_HELP)]
    Migrate(migrate::MigrateArgs),
    /// Show where each account of a migration stands (safe-to-cancel or why not).
    #[command(after_help = migrate::STATUS_HELP)]
    Status(migrate::StatusArgs),
    /// Log in and list an IMAP account's folders: messages, size, role, subscription.
    #[command(after_help = folders::HELP)]
    Folders(folders::FoldersArgs),
    /// Check archives and write a self-contained HTML page about them for the person
    /// who receives them: source, chain, folders, verification, signature, a chart.
    #[command(after_help = receipt::HELP)]
    Receipt(receipt::ReceiptArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(after_help = "Examples:
  mailark completions bash > /etc/bash_completion.d/mailark
  mailark completions zsh > \"${fpath[1]}/_mailark\"
  mailark completions fish > ~/.config/fish/completions/mailark.fish")]
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (mailark.1 and one per command) into a directory.
    #[command(after_help = "Examples:
  mailark man /usr/local/share/man/man1 && man mailark-migrate")]
    Man {
        /// Where the .1 files go (created if missing).
        dir: PathBuf,
    },
}

impl Cmd {
    fn name(&self) -> &'static str {
        match self {
            Cmd::Export(_) => "export",
            Cmd::Ls(_) => "ls",
            Cmd::Verify(_) => "verify",
            Cmd::Extract(_) => "extract",
            Cmd::Import(_) => "import",
            Cmd::Migrate(_) => "migrate",
            Cmd::Status(_) => "status",
            Cmd::Folders(_) => "folders",
            Cmd::Receipt(_) => "receipt",
            Cmd::Completions { .. } => "completions",
            Cmd::Man { .. } => "man",
        }
    }

    /// Whether the report goes to stdout as JSON (an error then does too).
    fn json(&self) -> bool {
        match self {
            Cmd::Export(a) => a.json,
            Cmd::Ls(a) => a.json,
            Cmd::Verify(a) => a.json,
            Cmd::Extract(a) => a.json,
            Cmd::Import(a) => a.json,
            Cmd::Migrate(a) => a.json,
            Cmd::Status(a) => a.json,
            Cmd::Folders(a) => a.json,
            Cmd::Receipt(a) => a.json,
            Cmd::Completions { .. } | Cmd::Man { .. } => false,
        }
    }
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// Archives to import; a chain (full + deltas) is ordered root first.
    #[arg(required = true)]
    archives: Vec<PathBuf>,
    /// The destination account: imaps://USER@HOST[:PORT] or imap://USER@HOST (STARTTLS).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Put source folders matching the glob SRC at DST; each `*` in DST takes what the
    /// matching `*` of SRC matched. Levels are joined by `/` on both sides. Repeatable;
    /// the first match wins. Glob: `*` any characters, levels included; `?` one; `[a-z]`, `[!a-z]`; case-sensitive.
    #[arg(long = "map", value_name = "SRC=DST")]
    maps: Vec<String>,
    /// Put every folder under this folder.
    #[arg(long, value_name = "FOLDER")]
    prefix: Option<String>,
    /// Only archived folders matching this glob (repeatable).
    #[arg(long = "folder", value_name = "GLOB")]
    folders: Vec<String>,
    /// Leave out archived folders matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Print the plan (folders to create, messages to append or skip); change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Parallel connections to the server.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// After the import: quick (size, flags, INTERNALDATE; bytes of messages servers
    /// tend to rewrite), full (every message's bytes too), none.
    #[arg(long, default_value = "quick", value_name = "quick|full|none")]
    verify: String,
    /// Count a message the destination already holds as another delivery of the same
    /// mail (same Message-ID, header and body; only trace fields such as Received
    /// differ) as there: mail that reached both servers during an MX change is not
    /// doubled. Reads the bytes of the server copies it must compare. (migrate: always.)
    #[arg(long)]
    other_deliveries: bool,
    /// Work on destination folders holding at most N archived messages at a time (a
    /// bigger folder in parts of N, learned once): bounds memory on large accounts (about
    /// 600 bytes a message of the run, beside the census of the folder being imported).
    /// The archive is read once when its folders lie in the order of the runs.
    #[arg(long, value_name = "N", default_value_t = crate::import::MESSAGES_PER_PASS)]
    messages_per_pass: usize,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    ids: seal::IdentityArgs,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// imaps://USER@HOST[:PORT], imap://, pop3s://, pop3://, maildir:PATH, mbox:PATH or
    /// eml:PATH.
    source: String,
    /// The archive to write (conventionally NAME.tar.zst).
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value = "maildir")]
    layout: LayoutArg,
    /// zstd compression level (1-19).
    #[arg(long, default_value_t = 3)]
    level: i32,
    /// zstd worker threads (default: all cores).
    #[arg(long)]
    threads: Option<u32>,
    /// Replace an existing archive.
    #[arg(long)]
    force: bool,
    /// Only folders matching this glob (repeatable). Glob: `*` any characters, levels included; `?` one; `[a-z]`, `[!a-z]`; case-sensitive.
    #[arg(long = "folder", value_name = "GLOB")]
    folders: Vec<String>,
    /// Skip folders matching this glob (repeatable; the glob of --folder).
    #[arg(long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// How the mbox source quoted `From ` lines: mboxrd, mboxo, mboxcl, mboxcl2.
    #[arg(long, default_value = "mboxrd")]
    mbox_format: String,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Parallel server connections (IMAP: folders fetched side by side).
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Incremental: archive only messages not already in this archive; repeat for each
    /// archive of a chain (`--since full.tar.zst --since delta1.tar.zst`).
    #[arg(long, value_name = "PREV.tar.zst")]
    since: Vec<PathBuf>,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    seal: seal::SealArgs,
    /// Keys for --since archives that are encrypted (repeatable).
    #[command(flatten)]
    ids: seal::IdentityArgs,
}

/// How to log in to a server and how to secure the link; shared by every command that
/// talks to one. Secrets come from files, the environment or a terminal prompt, never
/// from the command line.
#[derive(Args, Debug, Clone, Default)]
pub struct NetArgs {
    /// Read the password from FILE (one trailing newline is not part of it); `-` reads
    /// standard input.
    #[arg(long, value_name = "FILE", env = "MAILARK_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Read the password from the environment variable VAR.
    #[arg(long, value_name = "VAR", env = "MAILARK_PASSWORD_ENV")]
    pub password_env: Option<String>,
    /// Run CMD with sh -c and use what it prints as the password (e.g. `pass show mail`).
    #[arg(long, value_name = "CMD", env = "MAILARK_PASSWORD_COMMAND")]
    pub password_command: Option<String>,
    /// Log in with the OAuth2 access token in FILE (SASL XOAUTH2 or OAUTHBEARER).
    #[arg(long, value_name = "FILE", env = "MAILARK_OAUTH2_TOKEN_FILE")]
    pub oauth2_token_file: Option<PathBuf>,
    /// Trust the CA certificate(s) in this PEM file besides the system's.
    #[arg(long, value_name = "PEM", env = "MAILARK_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Do not verify the server's certificate (a warning is printed).
    #[arg(long)]
    pub insecure: bool,
    /// Allow a password to cross an unencrypted link when the server offers no STARTTLS.
    #[arg(long)]
    pub allow_plaintext: bool,
    /// Give up on a connection when the server has not finished one step (a response,
    /// the login, a write) within SECS seconds; the run reconnects or reports what is
    /// left. Default 120 for IMAP, 60 for POP3.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
}

impl NetArgs {
    /// The step timeout: `--timeout`, else the protocol's `default`.
    pub fn step_timeout(&self, default: std::time::Duration) -> std::time::Duration {
        self.timeout.map_or(default, std::time::Duration::from_secs)
    }

    pub fn tls(&self) -> TlsOptions {
        if self.insecure {
            say_err!("mailark: warning: --insecure: the server's certificate is not checked");
        }
        TlsOptions {
            ca_file: self.tls_ca_file.clone(),
            insecure: self.insecure,
            allow_plaintext: self.allow_plaintext,
        }
    }

    /// The login for `ep`: token file, password file, environment, or a prompt on a TTY.
    pub fn credentials(&self, ep: &Endpoint) -> Result<Credentials, Fatal> {
        let read = |p: &PathBuf, what: &str| {
            Secret::from_file(p)
                .map_err(|e| Fatal(format!("cannot read {what} {}: {e}", p.display())))
        };
        let given = [
            self.oauth2_token_file.is_some(),
            self.password_file.is_some(),
            self.password_env.is_some(),
            self.password_command.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(Fatal(
                "give one of --password-file, --password-env, --password-command, \
                 --oauth2-token-file (or their MAILARK_* variables)"
                    .into(),
            ));
        }
        let auth = if let Some(p) = &self.oauth2_token_file {
            Auth::OAuth2(read(p, "OAuth2 token file")?)
        } else if self.password_file.as_deref() == Some(std::path::Path::new("-")) {
            Auth::Password(
                Secret::from_reader(std::io::stdin().lock())
                    .map_err(|e| Fatal(format!("cannot read the password from stdin: {e}")))?,
            )
        } else if let Some(p) = &self.password_file {
            Auth::Password(read(p, "password file")?)
        } else if let Some(c) = &self.password_command {
            Auth::Password(Secret::from_command(c).map_err(Fatal)?)
        } else if let Some(v) = &self.password_env {
            let s = std::env::var(v).map_err(|_| {
                Fatal(format!(
                    "environment variable {v} (--password-env) is not set"
                ))
            })?;
            Auth::Password(Secret::new(s))
        } else if std::io::stdin().is_terminal() {
            let s = rpassword::prompt_password(format!("Password for {ep}: "))?;
            Auth::Password(Secret::new(s))
        } else {
            return Err(Fatal(format!(
                "{ep}: no password: give --password-file, --password-env, --password-command or \
                 --oauth2-token-file (or run on a terminal to be asked)"
            )));
        };
        if matches!(&auth, Auth::Password(s) | Auth::OAuth2(s) if s.expose().is_empty()) {
            return Err(Fatal(format!("{ep}: the password or token is empty")));
        }
        Ok(Credentials {
            user: ep.user.clone(),
            auth,
        })
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LayoutArg {
    Maildir,
    Mbox,
}

#[derive(Args, Debug)]
struct LsArgs {
    /// Archives to list (a chain lists every part).
    #[arg(required = true)]
    archives: Vec<PathBuf>,
    /// Only folders matching this glob (repeatable). Glob: `*` any characters, levels included; `?` one; `[a-z]`, `[!a-z]`; case-sensitive.
    #[arg(long = "folder", value_name = "GLOB")]
    folders: Vec<String>,
    /// Leave out folders matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Print `{"schema":1,"messages":[...]}` on stdout (docs/json.md).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ids: seal::IdentityArgs,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Archives to check; several form a chain (full + deltas).
    #[arg(required = true)]
    archives: Vec<PathBuf>,
    /// Print the findings as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also compare with a live IMAP account (imaps://USER@HOST): messages missing on
    /// either side, flag changes, sizes.
    #[arg(long, value_name = "URL")]
    against: Option<String>,
    /// With --against: download every message again and compare SHA-256.
    #[arg(long, requires = "against")]
    full: bool,
    /// With --against: compare only folders matching this glob (repeatable).
    #[arg(long = "folder", value_name = "GLOB", requires = "against")]
    folders: Vec<String>,
    /// With --against: leave out folders matching this glob (repeatable).
    #[arg(long, value_name = "GLOB", requires = "against")]
    exclude: Vec<String>,
    /// With --against: compare folders holding at most N archived messages at a time (a
    /// bigger folder in parts of N, read from the server once, except with --full):
    /// bounds memory on large accounts.
    #[arg(long, value_name = "N", requires = "against", default_value_t = verify::against::KEYS_PER_PASS)]
    messages_per_pass: usize,
    /// Check each archive's signature A.sig against these public keys: an
    /// allowed_signers file or SSH public key lines. A missing or bad signature is an error.
    #[arg(long, value_name = "PUBKEY_OR_ALLOWED_SIGNERS")]
    signer: Option<PathBuf>,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    ids: seal::IdentityArgs,
}

#[derive(Args, Debug)]
struct ExtractArgs {
    /// Archives to extract; a chain (full + deltas) is extracted together.
    #[arg(required = true)]
    archives: Vec<PathBuf>,
    /// maildir:DIR (Maildir++), maildir-fs:DIR (Dovecot LAYOUT=fs), mbox:DIR or eml:DIR.
    #[arg(long)]
    to: String,
    /// Only folders matching this glob (repeatable). Glob: `*` any characters, levels included; `?` one; `[a-z]`, `[!a-z]`; case-sensitive.
    #[arg(long = "folder", value_name = "GLOB")]
    folders: Vec<String>,
    /// Leave out folders matching this glob (repeatable; the glob of --folder).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ids: seal::IdentityArgs,
}

/// A failure that ends the command: printed as one line, exit code 2.
#[derive(Debug)]
pub struct Fatal(pub String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    crate::log::set_level(cli.verbose);
    // Before any thread starts: they inherit the blocked signals.
    crate::interrupt::install(cli.cmd.name());
    let res = match &cli.cmd {
        Cmd::Export(a) => run_export(&cli, a),
        Cmd::Ls(a) => ls::run_ls(a),
        Cmd::Verify(a) => run_verify(&cli, a),
        Cmd::Extract(a) => run_extract(&cli, a),
        Cmd::Import(a) => run_import(&cli, a),
        Cmd::Migrate(a) => migrate::run_migrate(cli.quiet, a),
        Cmd::Status(a) => migrate::run_status(a),
        Cmd::Folders(a) => folders::run(cli.quiet, a),
        Cmd::Receipt(a) => receipt::run(cli.quiet, a),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "mailark", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Man { dir } => write_man_pages(dir),
    };
    match res {
        Ok(code) => ExitCode::from(code),
        Err(Fatal(msg)) => {
            say_err!("mailark: error: {msg}");
            if cli.cmd.json() {
                // A script reading stdout gets an answer it can parse, not nothing.
                let _ = print_json(&serde_json::json!({
                    "error": printable(&msg),
                    "exit": 2,
                }));
            }
            ExitCode::from(2)
        }
    }
}

/// A command line clap refuses: its message on stderr, exit 2, and with `--json` the
/// same JSON error object every other exit-2 failure prints (help and version are not
/// errors and print as usual).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let _ = e.print();
    if std::env::args().any(|a| a == "--json") {
        // clap's message up to its usage block, as one line.
        let text = e.to_string();
        let first = text
            .lines()
            .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
            .trim_start_matches("error: ")
            .to_string();
        let _ = print_json(&serde_json::json!({
            "error": printable(&first),
            "exit": 2,
        }));
    }
    ExitCode::from(2)
}

fn write_man_pages(dir: &std::path::Path) -> Result<u8, Fatal> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)
        .map_err(|e| Fatal(format!("cannot create {}: {e}", dir.display())))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .map_err(|e| Fatal(format!("cannot write man pages to {}: {e}", dir.display())))?;
    Ok(0)
}

/// The version of every `--json` document (docs/json.md). It changes when a field
/// changes meaning or goes away; new fields keep it.
pub(crate) const JSON_SCHEMA: u32 = 1;

/// A `--json` document: `schema` first, then the report's own fields.
#[derive(serde::Serialize)]
struct JsonDoc<'a, T: serde::Serialize> {
    schema: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// Prints `v` (a struct: its fields join `schema`) as the command's JSON document. A
/// reader that stops early (`| head`) is not an error: the rest is not wanted.
fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Fatal> {
    let doc = JsonDoc {
        schema: JSON_SCHEMA,
        body: v,
    };
    let mut out = std::io::stdout().lock();
    let res = serde_json::to_writer_pretty(&mut out, &doc)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    match res {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// A folder pattern that selected nothing is most likely a typo: said on stderr, one
/// line each, after a run that got as far as listing folders.
fn warn_unmatched(patterns: Vec<String>) {
    for p in patterns {
        say_err!("mailark: warning: {p} matches no folder");
    }
}

fn run_export(cli: &Cli, a: &ExportArgs) -> Result<u8, Fatal> {
    let filter = FolderFilter::new(&a.folders, &a.excludes)?;
    let code = export_filtered(cli, a, &filter)?;
    warn_unmatched(filter.unmatched());
    if !cli.quiet && !a.json {
        seal::say_sealed(&a.seal, &a.output);
    }
    Ok(code)
}

fn export_filtered(cli: &Cli, a: &ExportArgs, filter: &FolderFilter) -> Result<u8, Fatal> {
    let spec: SourceSpec = a.source.parse()?;
    let mut wopts = WriterOptions {
        layout: match a.layout {
            LayoutArg::Maildir => Layout::Maildir,
            LayoutArg::Mbox => Layout::Mbox,
        },
        level: a.level,
        force: a.force,
        ..Default::default()
    };
    if let Some(t) = a.threads {
        wopts.threads = t;
    }
    a.seal.apply(&mut wopts)?;
    let src: Box<dyn LocalSource + Sync> = match &spec {
        SourceSpec::Maildir(p) => Box::new(MaildirSource::open(p)?),
        SourceSpec::Mbox(p) => Box::new(MboxSource::open(p, a.mbox_format.parse::<Quoting>()?)?),
        SourceSpec::Eml(p) => Box::new(crate::source::eml::EmlSource::open(p)?),
        SourceSpec::Net(ep) => {
            return match ep.scheme {
                Scheme::Imap | Scheme::Imaps => run_export_imap(cli, a, ep, wopts, filter),
                Scheme::Pop3 | Scheme::Pop3s => run_export_pop3(cli, a, ep, wopts, filter),
            }
        }
    };
    if !a.since.is_empty() {
        return Err(Fatal(
            "--since is for server sources (imap, pop3); a local export always takes everything"
                .into(),
        ));
    }
    let total = export::bytes_to_read(src.as_ref(), filter);
    let progress = Progress::bytes(total, !cli.quiet);
    let rep = export::export_local(src.as_ref(), &a.output, wopts, filter, &progress)?;
    let problems = rep.skipped() > 0 || !rep.count_mismatches().is_empty();
    if a.json {
        print_json(&rep)?;
    } else if !cli.quiet {
        let w = column_width(rep.folders.iter().map(|f| f.folder.as_str()), 40);
        say!(
            "{} {:>8} {:>9} {:>8}",
            pad("folder", w),
            "source",
            "archived",
            "skipped"
        );
        for f in &rep.folders {
            let src = f.source_count.map_or("-".to_string(), |c| c.to_string());
            say!(
                "{} {:>8} {:>9} {:>8}",
                pad(&f.folder, w),
                src,
                f.archived,
                f.skipped.len()
            );
            for s in &f.skipped {
                say!("    skipped {}: {}", s.id, s.reason);
            }
        }
        say!(
            "wrote {} ({} messages, {} of mail, {} on disk)",
            rep.archive,
            rep.messages,
            BinaryBytes(rep.message_bytes),
            BinaryBytes(rep.file_bytes)
        );
    }
    Ok(if problems { 1 } else { 0 })
}

fn run_export_imap(
    cli: &Cli,
    a: &ExportArgs,
    ep: &Endpoint,
    wopts: WriterOptions,
    filter: &FolderFilter,
) -> Result<u8, Fatal> {
    let creds = a.net.credentials(ep)?;
    let tls = a.net.tls();
    let opts = export::imap::ImapExportOptions {
        jobs: a.jobs.max(1),
        since: a.since.clone(),
        timeout: a
            .net
            .step_timeout(crate::source::imap::session::DEFAULT_TIMEOUT),
        since_keys: a.ids.load()?,
        ..Default::default()
    };
    let progress = Progress::messages(!cli.quiet && !a.json);
    let rep =
        export::imap::export_imap(ep, &creds, &tls, &a.output, wopts, filter, opts, &progress)?;
    if a.json {
        print_json(&rep)?;
    } else if !cli.quiet {
        print_imap_report(&rep);
    } else {
        for f in &rep.folders {
            for s in &f.skipped {
                say_err!(
                    "mailark: folder {:?}: {} not archived: {}",
                    f.folder,
                    s.id,
                    s.reason
                );
            }
            if let Some(e) = &f.error {
                say_err!("mailark: folder {:?}: {e}", f.folder);
            }
        }
    }
    Ok(if rep.problems() > 0 { 1 } else { 0 })
}

fn print_imap_report(rep: &export::imap::ImapExportReport) {
    let w = column_width(rep.folders.iter().map(|f| f.folder.as_str()), 34);
    say!(
        "{} {:>8} {:>9} {:>8} {:>8}  notes",
        pad("folder", w),
        "server",
        "archived",
        "before",
        "skipped"
    );
    for f in &rep.folders {
        if !f.selectable {
            say!(
                "{} {:>8} {:>9} {:>8} {:>8}  no messages (\\Noselect)",
                pad(&f.folder, w),
                "-",
                "-",
                "-",
                "-"
            );
            continue;
        }
        let mut notes = Vec::new();
        if let Some(role) = &f.special_use {
            notes.push(role.clone());
        }
        if f.uidvalidity_changed {
            notes.push("UIDVALIDITY changed: matched by SHA-256".into());
        }
        if !f.vanished.is_empty() {
            notes.push(format!("{} expunged during the run", f.vanished.len()));
        }
        if f.arrived > 0 {
            notes.push(format!(
                "{} arrived during the run (next --since)",
                f.arrived
            ));
        }
        if !f.size_mismatches.is_empty() {
            notes.push(format!(
                "{} differ from RFC822.SIZE",
                f.size_mismatches.len()
            ));
        }
        if f.reconnects > 0 {
            notes.push(format!("{} reconnect(s)", f.reconnects));
        }
        say!(
            "{} {:>8} {:>9} {:>8} {:>8}  {}",
            pad(&f.folder, w),
            f.source_count.map_or("-".to_string(), |c| c.to_string()),
            f.archived,
            f.already_archived,
            f.skipped.len(),
            notes.join("; ")
        );
        for s in &f.skipped {
            say!("    not archived: {}: {}", s.id, s.reason);
        }
        for m in &f.size_mismatches {
            say!(
                "    UID {}: RFC822.SIZE {} but {} bytes served (archived as served)",
                m.uid,
                m.announced,
                m.archived
            );
        }
        if let Some(e) = &f.error {
            say!("    error: {e}");
        }
    }
    say!(
        "wrote {} ({} messages, {} of mail, {} on disk){}",
        rep.archive,
        rep.messages,
        BinaryBytes(rep.message_bytes),
        BinaryBytes(rep.file_bytes),
        rep.parent
            .as_ref()
            .map(|p| format!(
                ", a delta on {}",
                p.file_name.as_deref().unwrap_or(&p.archive_id)
            ))
            .unwrap_or_default()
    );
    for n in &rep.notes {
        say!("note: {n}");
    }
    let problems = rep.problems();
    if problems > 0 {
        say!("PROBLEMS: {problems} message(s) or folder(s) not archived (listed above)");
    }
}

fn run_export_pop3(
    cli: &Cli,
    a: &ExportArgs,
    ep: &Endpoint,
    wopts: WriterOptions,
    filter: &FolderFilter,
) -> Result<u8, Fatal> {
    use crate::export::pop3::{export_pop3, Pop3Job, RetryPolicy};
    use crate::source::pop3::Pop3Options;
    // RFC 2384 POP URLs name the login method after the user: `;AUTH=+APOP` asks for
    // APOP, `;AUTH=*` for whatever the server offers.
    let mut ep = ep.clone();
    let mut client = Pop3Options {
        timeout: a.net.step_timeout(crate::source::pop3::DEFAULT_TIMEOUT),
        ..Default::default()
    };
    if let Some(i) = ep.user.to_ascii_uppercase().rfind(";AUTH=") {
        let how = ep.user[i + ";AUTH=".len()..].to_string();
        ep.user.truncate(i);
        match how.to_ascii_uppercase().as_str() {
            "+APOP" => client.apop = true,
            "*" => {}
            _ => {
                return Err(Fatal(format!(
                    "{ep}: unknown ;AUTH={how} in the URL (use ;AUTH=+APOP or ;AUTH=*)"
                )))
            }
        }
    }
    let creds = a.net.credentials(&ep)?;
    let job = Pop3Job {
        endpoint: ep.clone(),
        creds,
        tls: a.net.tls(),
        client,
        retry: RetryPolicy::default(),
        since: a.since.clone(),
        since_keys: a.ids.load()?,
    };
    let rep = export_pop3(&job, &a.output, wopts, filter, !cli.quiet && !a.json)?;
    if a.json {
        print_json(&rep)?;
    } else if !cli.quiet {
        let s = &rep.server;
        say!(
            "{ep}: STAT {} messages ({}), UIDL {}, PIPELINING {}, TOP {}, {}, login {}",
            s.stat_messages,
            BinaryBytes(s.stat_octets),
            if s.uidl { "yes" } else { "no" },
            if s.pipelining { "yes" } else { "no" },
            if s.top { "yes" } else { "no" },
            if s.tls { "TLS" } else { "no TLS" },
            s.login
        );
        let w = column_width(rep.export.folders.iter().map(|f| f.folder.as_str()), 40);
        say!(
            "{} {:>8} {:>9} {:>8} {:>8}",
            pad("folder", w),
            "source",
            "archived",
            "skipped",
            "earlier"
        );
        let earlier = rep
            .incremental
            .as_ref()
            .map_or("-".to_string(), |i| i.already_archived.to_string());
        for f in &rep.export.folders {
            let src = f.source_count.map_or("-".to_string(), |c| c.to_string());
            say!(
                "{} {:>8} {:>9} {:>8} {:>8}",
                pad(&f.folder, w),
                src,
                f.archived,
                f.skipped.len(),
                earlier
            );
            for sk in &f.skipped {
                say!("    skipped {}: {}", sk.id, sk.reason);
            }
        }
        for d in &rep.count_differences {
            say!("    count difference: {d}");
        }
        for d in &rep.size_differences {
            let id = d
                .uidl
                .as_ref()
                .map_or(String::new(), |u| format!(" (UIDL {u})"));
            say!(
                "    size: message {}{id}: LIST said {}, the server sent {}{}",
                d.msgno,
                d.list_size,
                d.retr_size,
                d.explanation
                    .as_ref()
                    .map_or(String::new(), |e| format!(" — {e}"))
            );
        }
        for f in &rep.read_with_retr {
            let id = f
                .uidl
                .as_ref()
                .map_or(String::new(), |u| format!(" (UIDL {u})"));
            say!("    read with RETR: message {}{id}: {}", f.msgno, f.reason);
        }
        if let Some(i) = &rep.incremental {
            say!(
                "incremental: {} already archived ({} by UIDL, {} by content); {} downloaded to compare by content",
                i.already_archived, i.matched_by_uidl, i.matched_by_content, i.downloaded_to_compare
            );
        }
        for n in &rep.notes {
            say!("note: {n}");
        }
        say!(
            "wrote {} ({} messages, {} of mail, {} on disk)",
            rep.export.archive,
            rep.export.messages,
            BinaryBytes(rep.export.message_bytes),
            BinaryBytes(rep.export.file_bytes)
        );
    }
    Ok(if rep.problems() { 1 } else { 0 })
}

fn open_chain(
    paths: &[PathBuf],
    completeness: Completeness,
    ids: &seal::IdentityArgs,
) -> Result<Chain, Fatal> {
    Ok(Chain::open_with(paths, completeness, &ids.load()?)?)
}

/// The whole chain for the commands that restore mail (extract, import): a damaged
/// trailer or index frame must not keep mail locked in, so an archive whose trailer
/// fails is read through to its index (with a warning); each message is still checked
/// against the index's SHA-256 as it is read.
fn open_chain_recovering(paths: &[PathBuf], ids: &seal::IdentityArgs) -> Result<Chain, Fatal> {
    let mut archives = Vec::new();
    let keys = ids.load()?;
    for p in paths {
        let (res, first) = Archive::open_or_scan(p, &keys);
        if let Some(e) = first {
            say_err!("mailark: warning: {e}; found the index by reading the whole archive");
        }
        archives.push(res?);
    }
    Ok(Chain::new(archives, Completeness::Whole)?)
}

fn run_verify(cli: &Cli, a: &VerifyArgs) -> Result<u8, Fatal> {
    // Ask for the password before the long archive check, not after it.
    let remote = match &a.against {
        Some(url) => {
            let ep = Endpoint::parse(url)?;
            if !matches!(ep.scheme, Scheme::Imap | Scheme::Imaps) {
                return Err(Fatal(format!(
                    "{ep}: --against compares with an IMAP account (imaps:// or imap://)"
                )));
            }
            let creds = a.net.credentials(&ep)?;
            Some((ep, creds, a.net.tls()))
        }
        None => None,
    };
    let inputs = verify::VerifyInputs {
        keys: a.ids.load()?,
        signers: seal::load_signers(a.signer.as_ref())?,
    };
    let progress = Progress::bytes(0, !cli.quiet && !a.json);
    let mut rep = verify::verify_archives_with(&a.archives, &inputs, &progress);
    let mut against = None;
    if let Some((ep, creds, tls)) = remote {
        if rep.unusable {
            return Err(Fatal(
                "cannot compare with the server: an archive is unusable (see above)".into(),
            ));
        }
        let chain = open_chain(&a.archives, Completeness::Whole, &a.ids)?;
        let opts = verify::against::AgainstOptions {
            full: a.full,
            keys_per_pass: a.messages_per_pass.max(1),
            filter: FolderFilter::new(&a.folders, &a.exclude)?,
            timeout: a
                .net
                .step_timeout(crate::source::imap::session::DEFAULT_TIMEOUT),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (findings, summary) = rt.block_on(verify::against::verify_against(
            std::sync::Arc::new(chain.into_archives()),
            &ep,
            &creds,
            &tls,
            &opts,
            &progress,
        ))?;
        rep.findings.extend(findings);
        against = Some(summary);
        warn_unmatched(opts.filter.unmatched());
    }
    progress.finish();
    if a.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            rep: &'a verify::VerifyReport,
            against: Option<verify::against::AgainstSummary>,
        }
        print_json(&Out {
            rep: &rep,
            against: against.clone(),
        })?;
        // The report says why the job could not be done; stderr says it too, as for
        // every other command that cannot do its job.
        for f in rep.findings.iter().filter(|_| rep.unusable) {
            if matches!(f.level, Level::Error) {
                say_err!("mailark: error: {}: [{}]: {}", f.archive, f.code, f.detail);
            }
        }
    } else {
        for f in &rep.findings {
            let lvl = match f.level {
                Level::Error => "error",
                Level::Warning => "warning",
            };
            let mut line = format!("{lvl}: {}: [{}]", f.archive, f.code);
            if let Some(folder) = &f.folder {
                line.push_str(&format!(" folder {folder:?}"));
            }
            if let Some(m) = &f.message {
                line.push_str(&format!(" {m}"));
            }
            line.push_str(&format!(": {}", f.detail));
            if rep.unusable && matches!(f.level, Level::Error) {
                say_err!("mailark: {line}");
            } else {
                say!("{line}");
            }
        }
        for s in &rep.signatures {
            if let crate::archive::sign::SigStatus::Good {
                signer,
                fingerprint,
            } = &s.status
            {
                say!(
                    "signature: {}: good, by {signer} ({fingerprint})",
                    s.signature
                );
            }
        }
        if !cli.quiet {
            let state = if rep.errors() == 0 {
                "OK"
            } else {
                "PROBLEMS FOUND"
            };
            say!(
                "{state}: {} archive(s), {} messages ({}) checked, {} problem(s)",
                rep.archives.len(),
                rep.messages_checked,
                BinaryBytes(rep.bytes_checked),
                rep.errors()
            );
            if let Some(s) = &against {
                say!(
                    "compared with {}: {} folders, {} messages on the server, {} in the archive{}",
                    s.server,
                    s.folders_compared,
                    s.server_messages,
                    s.archive_messages,
                    if s.bodies_compared > 0 {
                        format!(", {} re-downloaded and hashed", s.bodies_compared)
                    } else {
                        String::new()
                    }
                );
                for f in &s.content_matched_folders {
                    say!("  {f}: UIDVALIDITY differs from the archive's; matched by content");
                }
            }
        }
    }
    Ok(if rep.unusable {
        2
    } else if rep.errors() > 0 {
        1
    } else {
        0
    })
}

fn run_extract(cli: &Cli, a: &ExtractArgs) -> Result<u8, Fatal> {
    let target: Target = a.to.parse()?;
    let chain = open_chain_recovering(&a.archives, &a.ids)?;
    let filter = FolderFilter::new(&a.folders, &a.exclude)?;
    let progress = Progress::bytes(0, !cli.quiet && !a.json);
    let rep = extract::extract(chain.archives(), &target, &filter, &progress)?;
    progress.finish();
    warn_unmatched(filter.unmatched());
    for u in &rep.unreadable {
        say_err!(
            "mailark: {}: {:?}: {}: not extracted: {}",
            u.archive,
            u.folder,
            u.id,
            u.reason
        );
    }
    if a.json {
        print_json(&rep)?;
    } else if !cli.quiet {
        print_extract_summary(&rep, &a.to);
    }
    Ok(if rep.unreadable.is_empty() { 0 } else { 1 })
}

fn print_extract_summary(rep: &extract::ExtractReport, to: &str) {
    say!(
        "extracted {} messages ({}) in {} folders to {to} ({})",
        rep.messages,
        BinaryBytes(rep.bytes),
        rep.folders.len(),
        rep.layout
    );
    if rep.already_present > 0 {
        say!(
            "{} messages were already there, identical, from an earlier run",
            rep.already_present
        );
    }
    if rep.eol_added > 0 {
        say!(
            "note: {} messages had no final newline; mbox stores them with one added",
            rep.eol_added
        );
    }
    if !rep.unreadable.is_empty() {
        say!(
            "{} messages could not be read and were not extracted (listed above)",
            rep.unreadable.len()
        );
    }
}

fn run_import(cli: &Cli, a: &ImportArgs) -> Result<u8, Fatal> {
    use crate::import::{self, plan, ImportOptions, VerifyMode};
    let dest = Endpoint::parse(&a.to)?;
    if !matches!(dest.scheme, Scheme::Imap | Scheme::Imaps) {
        return Err(Fatal(format!(
            "--to {dest}: the destination must be imaps:// or imap://"
        )));
    }
    let verify: VerifyMode = a.verify.parse().map_err(Fatal)?;
    let maps = a
        .maps
        .iter()
        .map(|m| m.parse::<plan::MapRule>())
        .collect::<Result<Vec<_>, _>>()?;
    if a.jobs == 0 {
        return Err(Fatal("--jobs must be at least 1".into()));
    }
    let chain = open_chain_recovering(&a.archives, &a.ids)?;
    let creds = a.net.credentials(&dest)?;
    let opts = ImportOptions {
        tls: a.net.tls(),
        creds,
        plan: plan::PlanOptions {
            maps,
            prefix: a.prefix.clone(),
        },
        dry_run: a.dry_run,
        jobs: a.jobs,
        verify,
        dest,
        filter: FolderFilter::new(&a.folders, &a.exclude)?,
        other_deliveries: a.other_deliveries,
        messages_per_pass: a.messages_per_pass.max(1),
        timeout: a
            .net
            .step_timeout(crate::source::imap::session::DEFAULT_TIMEOUT),
    };
    let total: u64 = chain
        .archives()
        .iter()
        .map(|x| x.index.end.message_bytes)
        .sum();
    let progress = Progress::bytes(total, !cli.quiet && !a.json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rep = rt.block_on(import::import(chain, &opts, &progress))?;
    progress.finish();
    warn_unmatched(
        rep.unmatched_maps
            .iter()
            .map(|m| format!("--map {m:?}"))
            .chain(opts.filter.unmatched())
            .collect(),
    );
    if a.json {
        print_json(&rep)?;
    } else if !cli.quiet {
        print_import(&rep);
    } else {
        for f in &rep.folders {
            for x in &f.failed {
                say!(
                    "failed: {:?} → {:?}: {}: {}",
                    f.folder,
                    f.destination,
                    x.id,
                    x.reason
                );
            }
        }
    }
    Ok(if rep.clean() { 0 } else { 1 })
}

fn print_import(rep: &crate::import::ImportReport) {
    use crate::import::VerifyMode;
    if rep.dry_run {
        say!("DRY RUN: nothing was changed on {}", rep.destination);
        for p in &rep.parents_created {
            say!("would create parent folder {p:?}");
        }
    }
    let names: Vec<String> = rep
        .folders
        .iter()
        .map(|f| {
            let mut name = format!("{} → {}", f.folder, f.destination);
            if f.created {
                name.push_str(if rep.dry_run { " (new)" } else { " (created)" });
            }
            name
        })
        .collect();
    let w = names
        .iter()
        .map(|n| n.width())
        .chain([20])
        .max()
        .unwrap_or(20);
    let pad = |s: &str| format!("{s}{}", " ".repeat(w.saturating_sub(s.width())));
    if rep.dry_run {
        say!(
            "{} {:>8} {:>8} {:>9} {:>6}",
            pad("folder → destination"),
            "archived",
            "already",
            "to append",
            "cannot"
        );
    } else {
        say!(
            "{} {:>8} {:>8} {:>8} {:>8} {:>6}",
            pad("folder → destination"),
            "archived",
            "already",
            "appended",
            "verified",
            "failed"
        );
    }
    for (f, name) in rep.folders.iter().zip(&names) {
        if rep.dry_run {
            say!(
                "{} {:>8} {:>8} {:>9} {:>6}",
                pad(name),
                f.archived,
                f.already_there,
                f.to_append,
                f.failed.len()
            );
        } else {
            let verified = if rep.verify == VerifyMode::None {
                "-".to_string()
            } else {
                f.verified.to_string()
            };
            say!(
                "{} {:>8} {:>8} {:>8} {:>8} {:>6}",
                pad(name),
                f.archived,
                f.already_there,
                f.appended,
                verified,
                f.failed.len()
            );
        }
        if f.other_deliveries > 0 {
            say!(
                "    {} of those already there as another delivery of the same mail (only Received and similar trace fields differ)",
                f.other_deliveries
            );
        }
        if f.sent_as_crlf > 0 {
            say!(
                "    {} message(s) sent with CRLF line ends: the server refuses bare LF/CR",
                f.sent_as_crlf
            );
        }
        for l in &f.renamed_levels {
            say!("    renamed level {l} (it held the server's delimiter)");
        }
        for (k, n) in &f.dropped_keywords {
            say!("    keyword {k} dropped on {n} message(s): the folder does not keep it (PERMANENTFLAGS)");
        }
        for x in &f.failed {
            say!("    failed {}: {}", x.id, x.reason);
        }
        for x in &f.differing {
            say!("    present, differs {}: {}", x.id, x.detail);
        }
    }
    for n in &rep.notes {
        say!("note: {n}");
    }
    let state = if rep.dry_run {
        "PLAN"
    } else if rep.clean() {
        "OK"
    } else {
        "PROBLEMS FOUND"
    };
    if rep.dry_run {
        say!(
            "{state}: {} archived, {} already on the server, {} to append, {} cannot be imported",
            rep.archived,
            rep.already_there,
            rep.to_append,
            rep.failed
        );
    } else {
        let verified = if rep.verify == VerifyMode::None {
            "not verified (--verify none)".to_string()
        } else {
            format!("{} verified", rep.verified)
        };
        say!(
            "{state}: {} archived, {} already on the server, {} appended ({}), {verified}, {} failed",
            rep.archived,
            rep.already_there,
            rep.appended,
            BinaryBytes(rep.bytes_appended),
            rep.failed
        );
    }
}
