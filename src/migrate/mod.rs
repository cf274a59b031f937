//! `migrate` and `status`: the move of a company's mailboxes from an old host to a new
//! one while the MX change spreads. Each account gets passes (archive first, import the
//! chain, verify) until the old server has been quiet long enough; its directory
//! `DIR/<name>/` holds an ordinary archive chain (`pass-0001.tar.zst`, deltas after it)
//! and `state.json`. Accounts run `jobs` at a time; one failing account never stops the
//! others.

pub mod accounts;
pub mod pass;
pub mod state;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use accounts::Account;
use pass::PassOptions;
use state::{AccountState, PassRecord, State};

#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub dir: PathBuf,
    pub pass: PassOptions,
    /// Accounts migrated side by side.
    pub jobs: usize,
    pub quiet_for: Duration,
}

/// One account as `status` shows it (and `migrate` after its passes).
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub name: String,
    pub state: State,
    /// Why the account is not yet safe to cancel, or since when it is quiet.
    pub why: String,
    pub last_pass: Option<DateTime<Utc>>,
    pub last_new_mail: Option<DateTime<Utc>>,
    pub passes: u32,
    pub source_messages: u64,
    pub destination_messages: u64,
    pub chain_messages: u64,
    pub missing: u64,
    pub error: Option<String>,
}

impl StatusRow {
    pub fn of(name: &str, st: Option<&AccountState>, quiet_for: Duration) -> StatusRow {
        let v = state::verdict(st, quiet_for);
        let last = st.and_then(|s| s.last());
        StatusRow {
            name: name.to_string(),
            state: v.state,
            error: (v.state == State::Failed).then(|| v.why.clone()),
            why: v.why,
            last_pass: last.map(|p| p.finished),
            last_new_mail: st.and_then(|s| s.last_new_mail),
            passes: last.map_or(0, |p| p.pass),
            source_messages: last.map_or(0, |p| p.source_messages),
            destination_messages: last.map_or(0, |p| p.destination_messages),
            chain_messages: last.map_or(0, |p| p.chain_messages),
            missing: last.map_or(0, |p| p.missing),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
}

/// What one account's pass did, for the batch summary.
#[derive(Debug, Clone, Serialize)]
pub struct AccountOutcome {
    #[serde(flatten)]
    pub status: StatusRow,
    /// This run's pass; `None` when the account could not start one.
    pub pass: Option<PassRecord>,
}

/// Where a batch reports as it goes: log lines, or live lines on a terminal.
pub trait Reporter: Sync {
    fn started(&self, name: &str);
    fn line(&self, name: &str, msg: &str);
    fn finished(&self, name: &str, outcome: &AccountOutcome);
}

/// One pass of every account, `jobs` at a time. `stop` ends the batch after the passes
/// already running (Ctrl-C in `--watch`).
pub fn run_batch(
    accounts: &[Account],
    opts: &BatchOptions,
    stop: &(dyn Fn() -> bool + Sync),
    rep: &dyn Reporter,
) -> Vec<AccountOutcome> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<(usize, AccountOutcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.clamp(1, accounts.len().max(1)) {
            s.spawn(|| loop {
                if stop() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(a) = accounts.get(i) else { break };
                rep.started(&a.name);
                let o = run_account(a, opts, &|m: &str| rep.line(&a.name, m));
                rep.finished(&a.name, &o);
                out.lock().unwrap().push((i, o));
            });
        }
    });
    let mut v = out.into_inner().unwrap();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, o)| o).collect()
}

fn run_account(a: &Account, opts: &BatchOptions, log: &dyn Fn(&str)) -> AccountOutcome {
    let dir = opts.dir.join(&a.name);
    let fail = |msg: String, st: Option<&AccountState>| {
        let mut status = StatusRow::of(&a.name, st, opts.quiet_for);
        status.state = State::Failed;
        status.why = msg.clone();
        status.error = Some(msg);
        AccountOutcome { status, pass: None }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return fail(format!("cannot create {}: {e}", dir.display()), None);
    }
    let _lock = match AccountLock::take(&dir) {
        Ok(l) => l,
        Err(e) => return fail(e, None),
    };
    let mut st = match AccountState::load(&dir) {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => return fail(format!("cannot read the state: {e}"), None),
    };
    st.name = a.name.clone();
    st.source = a.source.to_string();
    st.destination = a.destination.to_string();
    let rec = pass::run_pass(a, &dir, &st, &opts.pass, log);
    st.record(rec.clone());
    if let Err(e) = st.save(&dir) {
        return fail(
            format!(
                "cannot write {}: {e}",
                dir.join(state::STATE_FILE).display()
            ),
            Some(&st),
        );
    }
    AccountOutcome {
        status: StatusRow::of(&a.name, Some(&st), opts.quiet_for),
        pass: Some(rec),
    }
}

/// An exclusive `flock` on `DIR/<name>/lock` for the length of a pass: two processes
/// (a stray second shard, a second `--watch`) never run one account at once.
struct AccountLock(#[allow(dead_code)] std::fs::File);

impl AccountLock {
    fn take(dir: &Path) -> Result<AccountLock, String> {
        let p = dir.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| format!("cannot open {}: {e}", p.display()))?;
        // SAFETY: flock on a descriptor this function owns; released when it is closed.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            return Err(format!(
                "{}: another mailark process is migrating this account",
                p.display()
            ));
        }
        Ok(AccountLock(f))
    }
}

/// Every account directory under `dir` with its state, by name.
pub fn read_status(dir: &Path, quiet_for: Duration) -> Result<Vec<StatusRow>, MigrateError> {
    let err = |e| MigrateError::Dir {
        path: dir.display().to_string(),
        source: e,
    };
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).map_err(err)? {
        let p = e.map_err(err)?.path();
        if !p.is_dir() {
            continue;
        }
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let row = match AccountState::load(&p) {
            Ok(Some(st)) => StatusRow::of(&name, Some(&st), quiet_for),
            Ok(None) => continue,
            Err(e) => {
                let mut r = StatusRow::of(&name, None, quiet_for);
                r.state = State::Failed;
                r.why = format!("unreadable state: {e}");
                r.error = Some(r.why.clone());
                r
            }
        };
        rows.push(row);
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}
