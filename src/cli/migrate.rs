//! `mailark migrate` and `mailark status`: arguments, the live display, the tables.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use unicode_width::UnicodeWidthStr;

use super::{print_json, Fatal};
use crate::migrate::accounts::{self, Account, SecretRef, Shard};
use crate::migrate::pass::PassOptions;
use crate::migrate::state::{parse_duration, State};
use crate::migrate::{self, AccountOutcome, BatchOptions, Reporter, StatusRow};
use crate::source::net::TlsOptions;

pub(super) const MIGRATE_HELP: &str = "Examples:
  mailark migrate --from imaps://alice@old.example.com --to imaps://alice@new.example.net \\
      --from-password-file old.pw --to-password-file new.pw --dir move
  mailark migrate --accounts accounts.csv --dir move --jobs 8 --watch 30m
  mailark migrate --accounts accounts.csv --dir /shared/move --shard 3/20
  mailark status --dir move

Each pass exports what the account's chain in DIR/NAME/ lacks into a new archive
(archive first: every message is on disk before it touches the new server), imports the
whole chain (what the destination holds is recognised and skipped) and verifies every
chain message on the destination. --watch repeats passes until Ctrl-C, which lets the
running passes finish. An account is safe-to-cancel when passes saw no new mail on the
old server for --quiet-for and the last verification was clean.

accounts.csv has a header row: name,source,destination,source_password_file,
destination_password_file (or source_password_env / destination_password_env).

Exit 0: every account verified. 1: some account failed (each one listed). 2: nothing
could run (bad arguments, unreadable CSV, every account failed before archiving).";

pub(super) const STATUS_HELP: &str = "Examples:
  mailark status --dir move
  mailark status --dir move --quiet-for 48h --json | jq '.accounts[] | select(.state != \"safe-to-cancel\")'

States: failed (the last pass found a problem, shown), in-progress (no pass finished yet),
verified (the destination holds the whole chain; the old server is not yet quiet for
--quiet-for), safe-to-cancel.
Exit 0 when every account is safe to cancel, 1 otherwise, 2 when DIR cannot be read.";

#[derive(Args, Debug)]
pub(super) struct MigrateArgs {
    /// The old account (imaps://, imap://, pop3s://, pop3://), for a single account.
    #[arg(long, value_name = "URL", requires = "to", conflicts_with = "accounts")]
    from: Option<String>,
    /// The new account (imaps:// or imap://), for a single account.
    #[arg(long, value_name = "URL", requires = "from")]
    to: Option<String>,
    /// Name of the single account's directory under --dir (default: the source user).
    #[arg(long, requires = "from")]
    name: Option<String>,
    /// Many accounts: a CSV file (see below).
    #[arg(long, value_name = "CSV", required_unless_present = "from")]
    accounts: Option<PathBuf>,
    /// Where each account's chain and state live (DIR/NAME/).
    #[arg(long)]
    dir: PathBuf,
    /// Accounts migrated side by side.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Connections per account to each server.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Repeat passes every INTERVAL (30s, 15m, 1h) until interrupted.
    #[arg(long, value_name = "INTERVAL")]
    watch: Option<String>,
    /// How long the old server must have received nothing before an account is
    /// safe to cancel.
    #[arg(long, value_name = "DURATION", default_value = "72h")]
    quiet_for: String,
    /// Take only the accounts whose row index is K modulo N (0-based data rows).
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
    #[arg(long, value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    #[arg(long, value_name = "VAR")]
    from_password_env: Option<String>,
    #[arg(long, value_name = "FILE")]
    from_oauth2_token_file: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    #[arg(long, value_name = "VAR")]
    to_password_env: Option<String>,
    #[arg(long, value_name = "FILE")]
    to_oauth2_token_file: Option<PathBuf>,
    /// Trust the CA certificate(s) in this PEM file on both sides.
    #[arg(long, value_name = "PEM")]
    tls_ca_file: Option<PathBuf>,
    /// Trust this PEM for the old server only.
    #[arg(long, value_name = "PEM")]
    from_tls_ca_file: Option<PathBuf>,
    /// Trust this PEM for the new server only.
    #[arg(long, value_name = "PEM")]
    to_tls_ca_file: Option<PathBuf>,
    /// Do not verify either server's certificate (a warning is printed).
    #[arg(long)]
    insecure: bool,
    /// Allow a password to cross an unencrypted link when a server offers no STARTTLS.
    #[arg(long)]
    allow_plaintext: bool,
}

#[derive(Args, Debug)]
pub(super) struct StatusArgs {
    /// The directory `migrate --dir` wrote.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, value_name = "DURATION", default_value = "72h")]
    quiet_for: String,
    /// One JSON array, one object per account.
    #[arg(long)]
    pub(super) json: bool,
}

fn side_secret(
    side: &str,
    file: &Option<PathBuf>,
    env: &Option<String>,
    token: &Option<PathBuf>,
) -> Result<SecretRef, Fatal> {
    match (file, env, token) {
        (Some(f), None, None) => Ok(SecretRef::PasswordFile(f.clone())),
        (None, Some(v), None) => Ok(SecretRef::PasswordEnv(v.clone())),
        (None, None, Some(t)) => Ok(SecretRef::OAuth2TokenFile(t.clone())),
        (None, None, None) => Err(Fatal(format!(
            "no secret for the {side} side: give --{side}-password-file, --{side}-password-env \
             or --{side}-oauth2-token-file"
        ))),
        _ => Err(Fatal(format!(
            "give one of --{side}-password-file, --{side}-password-env, --{side}-oauth2-token-file"
        ))),
    }
}

fn load_accounts(a: &MigrateArgs) -> Result<Vec<Account>, Fatal> {
    if let Some(csv) = &a.accounts {
        let text =
            std::fs::read(csv).map_err(|e| Fatal(format!("cannot read {}: {e}", csv.display())))?;
        return Ok(accounts::parse_csv(csv, &text)?);
    }
    let (Some(from), Some(to)) = (&a.from, &a.to) else {
        return Err(Fatal(
            "give --accounts CSV, or --from URL and --to URL".into(),
        ));
    };
    let source = accounts::source_endpoint(from).map_err(Fatal)?;
    let destination = accounts::destination_endpoint(to).map_err(Fatal)?;
    let name = a.name.clone().unwrap_or_else(|| source.user.clone());
    accounts::check_name(&name).map_err(|e| Fatal(format!("{e} (choose one with --name)")))?;
    Ok(vec![Account {
        name,
        index: 0,
        source,
        destination,
        source_secret: side_secret(
            "from",
            &a.from_password_file,
            &a.from_password_env,
            &a.from_oauth2_token_file,
        )?,
        destination_secret: side_secret(
            "to",
            &a.to_password_file,
            &a.to_password_env,
            &a.to_oauth2_token_file,
        )?,
    }])
}

pub(super) fn run_migrate(quiet: bool, a: &MigrateArgs) -> Result<u8, Fatal> {
    let quiet_for = parse_duration(&a.quiet_for).map_err(|e| Fatal(format!("--quiet-for {e}")))?;
    let watch = a
        .watch
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| Fatal(format!("--watch {e}")))?;
    if a.jobs == 0 || a.connections == 0 {
        return Err(Fatal("--jobs and --connections must be at least 1".into()));
    }
    let mut accounts = load_accounts(a)?;
    if let Some(s) = &a.shard {
        let shard: Shard = s.parse().map_err(Fatal)?;
        accounts.retain(|x| shard.takes(x));
    }
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| Fatal(format!("cannot create {}: {e}", a.dir.display())))?;
    if a.insecure {
        say_err!("mailark: warning: --insecure: the servers' certificates are not checked");
    }
    let tls = |side: &Option<PathBuf>| TlsOptions {
        ca_file: side.clone().or_else(|| a.tls_ca_file.clone()),
        insecure: a.insecure,
        allow_plaintext: a.allow_plaintext,
    };
    let opts = BatchOptions {
        dir: a.dir.clone(),
        pass: PassOptions {
            source_tls: tls(&a.from_tls_ca_file),
            destination_tls: tls(&a.to_tls_ca_file),
            connections: a.connections,
        },
        jobs: a.jobs,
        quiet_for,
    };
    crate::interrupt::graceful();
    let live = !quiet && !a.json && std::io::stderr().is_terminal();
    let mut round = 0u32;
    loop {
        round += 1;
        let outcomes = {
            let rep: Box<dyn Reporter> = if live {
                Box::new(LiveReporter::new(accounts.len()))
            } else {
                Box::new(LogReporter { quiet })
            };
            migrate::run_batch(
                &accounts,
                &opts,
                &crate::interrupt::stop_requested,
                rep.as_ref(),
            )
        };
        let last_round = watch.is_none() || crate::interrupt::stop_requested();
        if last_round {
            if crate::interrupt::stop_requested() {
                say_err!(
                    "mailark: interrupted after round {round}: every finished pass is recorded \
                     in {}",
                    a.dir.display()
                );
            }
            let code = finish(a, quiet, &outcomes)?;
            return Ok(crate::interrupt::stop_exit_code().unwrap_or(code));
        }
        if !quiet && !a.json {
            print_outcomes(&outcomes);
        }
        if sleep_unless_stopped(watch.unwrap_or_default()) {
            say_err!(
                "mailark: migrate interrupted between rounds: the passes of {} round(s) are recorded in {}",
                round,
                a.dir.display()
            );
            finish(a, quiet, &outcomes)?;
            return Ok(crate::interrupt::stop_exit_code().unwrap_or(130));
        }
    }
}

/// `migrate --json` and `status --json`: one object per account (docs/json.md).
#[derive(serde::Serialize)]
struct Accounts<'a, T: serde::Serialize> {
    accounts: &'a [T],
}

fn finish(a: &MigrateArgs, quiet: bool, outcomes: &[AccountOutcome]) -> Result<u8, Fatal> {
    if a.json {
        print_json(&Accounts { accounts: outcomes })?;
    } else if !quiet {
        print_outcomes(outcomes);
    } else {
        for o in outcomes.iter().filter(|o| o.status.state == State::Failed) {
            say_err!("mailark: {}: {}", o.status.name, o.status.why);
        }
    }
    let nothing_ran = outcomes.iter().all(|o| {
        o.pass
            .as_ref()
            .is_none_or(|p| p.error.is_some() && p.chain_messages == 0)
    });
    if nothing_ran {
        return Ok(2);
    }
    let all_good = outcomes
        .iter()
        .all(|o| matches!(o.status.state, State::Verified | State::SafeToCancel));
    Ok(if all_good { 0 } else { 1 })
}

fn sleep_unless_stopped(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if crate::interrupt::stop_requested() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
    }
    crate::interrupt::stop_requested()
}

pub(super) fn run_status(a: &StatusArgs) -> Result<u8, Fatal> {
    let quiet_for = parse_duration(&a.quiet_for).map_err(|e| Fatal(format!("--quiet-for {e}")))?;
    let rows = migrate::read_status(&a.dir, quiet_for)?;
    if rows.is_empty() {
        return Err(Fatal(format!(
            "{}: no account state here (run mailark migrate --dir {} first)",
            a.dir.display(),
            a.dir.display()
        )));
    }
    if a.json {
        print_json(&Accounts { accounts: &rows })?;
    } else {
        print_rows(&rows);
    }
    Ok(if rows.iter().all(|r| r.state == State::SafeToCancel) {
        0
    } else {
        1
    })
}

fn print_outcomes(outcomes: &[AccountOutcome]) {
    let rows: Vec<StatusRow> = outcomes.iter().map(|o| o.status.clone()).collect();
    print_rows(&rows);
    let imported: u64 = outcomes
        .iter()
        .filter_map(|o| o.pass.as_ref())
        .map(|p| p.imported)
        .sum();
    let new: u64 = outcomes
        .iter()
        .filter_map(|o| o.pass.as_ref())
        .map(|p| p.new_messages)
        .sum();
    let failed = rows.iter().filter(|r| r.state == State::Failed).count();
    say!(
        "{} account(s): {new} new message(s) archived, {imported} imported; {failed} failed",
        rows.len()
    );
}

fn print_rows(rows: &[StatusRow]) {
    let w = rows
        .iter()
        .map(|r| r.name.width())
        .chain([7])
        .max()
        .unwrap_or(7);
    let pad = |s: &str| format!("{s}{}", " ".repeat(w.saturating_sub(s.width())));
    say!(
        "{}  {:<14} {:>7} {:>8} {:>8} {:>7}  {:<16}  {:<16}  note",
        pad("account"),
        "state",
        "passes",
        "source",
        "dest",
        "missing",
        "last pass",
        "last new mail"
    );
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string())
    };
    for r in rows {
        say!(
            "{}  {:<14} {:>7} {:>8} {:>8} {:>7}  {:<16}  {:<16}  {}",
            pad(&crate::text::printable(&r.name)),
            r.state.as_str(),
            r.passes,
            r.source_messages,
            r.destination_messages,
            r.missing,
            when(r.last_pass),
            when(r.last_new_mail),
            crate::text::printable(&r.why)
        );
    }
}

/// Plain lines on stderr, for logs and cron.
struct LogReporter {
    quiet: bool,
}

impl Reporter for LogReporter {
    fn started(&self, name: &str) {
        if !self.quiet {
            say_err!("mailark: {name}: pass started");
        }
    }
    fn line(&self, name: &str, msg: &str) {
        if !self.quiet {
            say_err!("mailark: {name}: {msg}");
        }
    }
    fn finished(&self, name: &str, o: &AccountOutcome) {
        if !self.quiet {
            say_err!(
                "mailark: {name}: {}: {}",
                o.status.state.as_str(),
                o.status.why
            );
        }
    }
}

/// One line per running account and an overall line with rates and an ETA.
struct LiveReporter {
    multi: MultiProgress,
    overall: ProgressBar,
    lines: Mutex<Vec<(String, ProgressBar)>>,
    started: Instant,
    /// Messages and bytes archived so far, for the rates.
    moved: Mutex<(u64, u64)>,
}

impl LiveReporter {
    fn new(total: usize) -> LiveReporter {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(total as u64));
        if let Ok(s) = ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:20} {pos}/{len} accounts done  {msg}  ETA {eta}",
        ) {
            overall.set_style(s);
        }
        overall.enable_steady_tick(Duration::from_millis(500));
        LiveReporter {
            multi,
            overall,
            lines: Mutex::new(Vec::new()),
            started: Instant::now(),
            moved: Mutex::new((0, 0)),
        }
    }
}

impl Reporter for LiveReporter {
    fn started(&self, name: &str) {
        let bar = self
            .multi
            .insert_before(&self.overall, ProgressBar::new_spinner());
        if let Ok(s) = ProgressStyle::with_template("  {spinner} {prefix}: {msg}") {
            bar.set_style(s);
        }
        bar.set_prefix(crate::text::printable(name));
        bar.set_message("exporting");
        bar.enable_steady_tick(Duration::from_millis(200));
        self.lines.lock().unwrap().push((name.to_string(), bar));
    }
    fn line(&self, name: &str, msg: &str) {
        if let Some((_, b)) = self.lines.lock().unwrap().iter().find(|(n, _)| n == name) {
            b.set_message(crate::text::printable(msg));
        }
    }
    fn finished(&self, name: &str, o: &AccountOutcome) {
        let mut lines = self.lines.lock().unwrap();
        if let Some(i) = lines.iter().position(|(n, _)| n == name) {
            let (_, b) = lines.remove(i);
            b.finish_and_clear();
            self.multi.remove(&b);
        }
        let _ = self.multi.println(format!(
            "{}: {}: {}",
            crate::text::printable(name),
            o.status.state.as_str(),
            crate::text::printable(&o.status.why)
        ));
        let mut m = self.moved.lock().unwrap();
        if let Some(p) = &o.pass {
            m.0 += p.new_messages;
            m.1 += p.new_bytes;
        }
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        self.overall.set_message(format!(
            "{:.0} messages/s, {:.1} MB/s",
            m.0 as f64 / secs,
            m.1 as f64 / secs / 1e6
        ));
        self.overall.inc(1);
    }
}
