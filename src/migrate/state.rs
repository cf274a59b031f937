//! What a move knows about one account between passes: `DIR/<name>/state.json`, pretty
//! JSON a person can read, written whole to a temp name and renamed, and written only by
//! the process that holds the account's lock. Shards on one volume never share an
//! account, so they never write the same file.
//!
//! The account's state (`failed`, `in-progress`, `verified`, `safe-to-cancel`) is derived
//! here from the recorded passes, and only here: `migrate` and `status` both ask.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";
/// Passes kept in `state.json`; a `--watch` run of days would otherwise grow it forever.
const HISTORY: usize = 200;

/// Counts of one source folder in one pass.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct FolderCounts {
    pub folder: String,
    /// Where the import put it (empty when the pass did not get that far).
    pub destination: String,
    /// What the old server said the folder holds.
    pub source_messages: u64,
    /// Archived by this pass (new on the source since the last one).
    pub new: u64,
    /// Appended to the destination by this pass.
    pub imported: u64,
    /// The chain's messages of this folder found on the destination.
    pub verified: u64,
    /// What the destination folder holds (its own mail included).
    pub destination_messages: u64,
}

/// One pass: export (archive first), import, verify.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct PassRecord {
    pub pass: u32,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// The archive this pass wrote; `None` when the source had nothing new (the empty
    /// delta is not kept).
    pub archive: Option<String>,
    pub source_messages: u64,
    pub new_messages: u64,
    /// Bytes of those messages.
    #[serde(default)]
    pub new_bytes: u64,
    /// Messages in the whole chain after this pass.
    pub chain_messages: u64,
    pub imported: u64,
    pub already_there: u64,
    /// Messages the destination already held as another delivery of the same mail
    /// (same Message-ID, header and body but the receiving servers' trace headers).
    #[serde(default)]
    pub same_mail_other_delivery: u64,
    pub verified: u64,
    pub destination_messages: u64,
    /// Chain messages not found on the destination by the verification.
    pub missing: u64,
    pub folders: Vec<FolderCounts>,
    /// Every chain message verified on the destination and nothing went wrong.
    pub clean: bool,
    /// Why the pass is not clean, in one line.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct AccountState {
    pub name: String,
    pub source: String,
    pub destination: String,
    /// The start of the last pass that found mail on the source not yet archived (the
    /// first pass counts): mail reached the old server before then.
    pub last_new_mail: Option<DateTime<Utc>>,
    /// Oldest first; the last is the latest pass.
    pub passes: Vec<PassRecord>,
}

impl AccountState {
    pub fn load(dir: &Path) -> std::io::Result<Option<AccountState>> {
        let p = dir.join(STATE_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", p.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the state under a temp name and renames it, so a reader (another shard's
    /// `status`, a person) never sees half a file.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp: PathBuf = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, dir.join(STATE_FILE))
    }

    pub fn record(&mut self, pass: PassRecord) {
        // The first archive starts the clock (the mail in it reached the server before
        // then); a pass that could not look at the server observed nothing.
        if pass.new_messages > 0 || (self.last_new_mail.is_none() && pass.archive.is_some()) {
            self.last_new_mail = Some(pass.started);
        }
        self.passes.push(pass);
        if self.passes.len() > HISTORY {
            let cut = self.passes.len() - HISTORY;
            self.passes.drain(..cut);
        }
    }

    pub fn last(&self) -> Option<&PassRecord> {
        self.passes.last()
    }

    pub fn next_pass_number(&self) -> u32 {
        self.last().map_or(1, |p| p.pass + 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Failed,
    InProgress,
    Verified,
    SafeToCancel,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Failed => "failed",
            State::InProgress => "in-progress",
            State::Verified => "verified",
            State::SafeToCancel => "safe-to-cancel",
        }
    }
}

/// An account's state and, unless it is safe to cancel, what it still waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub state: State,
    pub why: String,
}

/// Safe to cancel needs both: the last pass verified the whole chain on the destination,
/// and passes have watched the old server receive nothing for `quiet_for`. Quiet is only
/// what was observed: from the last new mail to the start of the latest clean pass, not
/// to now, because nobody looked since.
pub fn verdict(st: Option<&AccountState>, quiet_for: Duration) -> Verdict {
    let v = |state, why: String| Verdict { state, why };
    let Some(last) = st.and_then(|s| s.last()) else {
        return v(State::InProgress, "no pass has finished yet".into());
    };
    if !last.clean {
        let why = last
            .error
            .clone()
            .unwrap_or_else(|| format!("{} message(s) missing on the destination", last.missing));
        return v(State::Failed, why);
    }
    let since = st.and_then(|s| s.last_new_mail).unwrap_or(last.started);
    let quiet = (last.started - since).to_std().unwrap_or_default();
    if quiet >= quiet_for {
        v(
            State::SafeToCancel,
            format!(
                "no new mail on the source for {} (verified {})",
                human_duration(quiet),
                last.finished.format("%Y-%m-%d %H:%M UTC")
            ),
        )
    } else {
        v(
            State::Verified,
            format!(
                "destination verified; source quiet for {} of {}",
                human_duration(quiet),
                human_duration(quiet_for)
            ),
        )
    }
}

/// `30s`, `15m`, `72h`, `3d`, or a combination (`1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("duration {s:?}: use a number with s, m, h or d (30s, 15m, 72h)");
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() || s.trim().is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m", s / 60),
        _ if s % 3600 == 0 || s >= 48 * 3600 => format!("{}h", s / 3600),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(sec: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + sec, 0).unwrap()
    }

    fn pass(n: u32, at: i64, new: u64, clean: bool) -> PassRecord {
        PassRecord {
            archive: (n == 1).then(|| "pass-0001.tar.zst".to_string()),
            pass: n,
            started: t(at),
            finished: t(at + 5),
            new_messages: new,
            clean,
            error: (!clean).then(|| "cannot log in".to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("72h").unwrap(), Duration::from_secs(259_200));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        for bad in ["", "72", "h", "3x", "-1h", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(human_duration(Duration::from_secs(259_200)), "72h");
        assert_eq!(human_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn safe_only_after_observed_quiet_and_clean_verification() {
        let q = Duration::from_secs(3600);
        assert_eq!(verdict(None, q).state, State::InProgress);
        let mut st = AccountState::default();
        st.record(pass(1, 0, 10, true));
        // First pass: mail just seen.
        assert_eq!(verdict(Some(&st), q).state, State::Verified);
        st.record(pass(2, 1800, 0, true));
        assert_eq!(verdict(Some(&st), q).state, State::Verified);
        st.record(pass(3, 3600, 0, true));
        let v = verdict(Some(&st), q);
        assert_eq!(v.state, State::SafeToCancel, "{v:?}");
        // New mail resets the clock.
        st.record(pass(4, 4000, 2, true));
        assert_eq!(verdict(Some(&st), q).state, State::Verified);
        st.record(pass(5, 8000, 0, true));
        assert_eq!(verdict(Some(&st), q).state, State::SafeToCancel);
        // A failed verification is never safe, however quiet.
        st.record(pass(6, 90_000, 0, false));
        let v = verdict(Some(&st), q);
        assert_eq!((v.state, v.why.as_str()), (State::Failed, "cannot log in"));
    }

    #[test]
    fn a_pass_that_could_not_look_starts_no_clock() {
        let mut st = AccountState::default();
        let mut failed = pass(1, 0, 0, false);
        failed.archive = None;
        st.record(failed);
        assert_eq!(st.last_new_mail, None);
        let mut first = pass(2, 100, 0, true);
        first.archive = Some("pass-0002.tar.zst".into());
        st.record(first);
        assert_eq!(st.last_new_mail, Some(t(100)));
    }

    #[test]
    fn state_file_round_trip_and_history_bound() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(AccountState::load(dir.path()).unwrap(), None);
        let mut st = AccountState {
            name: "alice".into(),
            ..Default::default()
        };
        for i in 0..(HISTORY as u32 + 5) {
            st.record(pass(i + 1, i as i64, 0, true));
        }
        assert_eq!(st.passes.len(), HISTORY);
        assert_eq!(st.next_pass_number(), HISTORY as u32 + 6);
        st.save(dir.path()).unwrap();
        assert_eq!(AccountState::load(dir.path()).unwrap(), Some(st));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(STATE_FILE)]);
    }
}
