//! Progress for long work: a bar with rate and ETA on a terminal (indicatif), nothing
//! when stderr is not a terminal or `-q` was given, so scripts and logs stay clean.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    /// For a bar that counts messages: folders and bytes, shown in its message.
    counts: Option<Arc<Counts>>,
}

#[derive(Default)]
struct Counts {
    folders: AtomicU64,
    folders_done: AtomicU64,
    bytes: AtomicU64,
    folder: Mutex<String>,
}

impl Progress {
    pub fn hidden() -> Progress {
        Progress {
            bar: None,
            counts: None,
        }
    }

    /// A bar counting messages, with folders n/N, bytes and an ETA; totals are set
    /// with [`Progress::set_totals`] once known. It ticks on its own, so a wait on the
    /// server still shows time passing.
    pub fn messages(enabled: bool) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = ProgressBar::new(0);
        bar.set_draw_target(ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} messages ETA {eta} {msg}",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        crate::log::show_bar(Some(bar.clone()));
        Progress {
            bar: Some(bar),
            counts: Some(Arc::default()),
        }
    }

    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// `messages` more messages and `folders` more folders to go.
    pub fn set_totals(&self, messages: u64, folders: u64) {
        if let (Some(b), Some(c)) = (&self.bar, &self.counts) {
            b.set_length(messages);
            c.folders.store(folders, Ordering::Relaxed);
            self.show_counts(c);
        }
    }

    /// One message done, `bytes` long.
    pub fn message_done(&self, bytes: u64) {
        if let (Some(b), Some(c)) = (&self.bar, &self.counts) {
            c.bytes.fetch_add(bytes, Ordering::Relaxed);
            b.inc(1);
            // The message line is rebuilt now and then, not for every message.
            if b.position() % 32 == 0 {
                self.show_counts(c);
            }
        }
    }

    /// Messages accounted for without being fetched (already archived, gone).
    pub fn messages_settled(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Corrects the message total by `by` (a folder changed since it was counted).
    pub fn adjust_total(&self, by: i64) {
        if let Some(b) = &self.bar {
            let len = b.length().unwrap_or(0);
            b.set_length(len.saturating_add_signed(by).max(b.position()));
        }
    }

    pub fn folder_started(&self, name: &str) {
        if let Some(c) = &self.counts {
            if let Ok(mut f) = c.folder.lock() {
                *f = name.to_string();
            }
            self.show_counts(c);
        } else {
            self.set_message(name.to_string());
        }
    }

    pub fn folder_done(&self) {
        if let Some(c) = &self.counts {
            c.folders_done.fetch_add(1, Ordering::Relaxed);
            self.show_counts(c);
        }
    }

    fn show_counts(&self, c: &Counts) {
        let folder = c.folder.lock().map(|f| f.clone()).unwrap_or_default();
        let bytes = c.bytes.load(Ordering::Relaxed);
        let secs = self.bar.as_ref().map_or(0.0, |b| b.elapsed().as_secs_f64());
        let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
        self.set_message(format!(
            "folders {}/{} {} ({}/s) {}",
            c.folders_done.load(Ordering::Relaxed),
            c.folders.load(Ordering::Relaxed),
            HumanBytes(bytes),
            HumanBytes(rate as u64),
            crate::text::printable(&folder)
        ));
    }

    /// A byte-counting bar; `total` 0 means unknown (a spinner with a rate).
    pub fn bytes(total: u64, enabled: bool) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = if total > 0 {
            ProgressBar::new(total)
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let tmpl = if total > 0 {
            "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}"
        } else {
            "{spinner} [{elapsed_precise}] {bytes} {binary_bytes_per_sec} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(tmpl) {
            bar.set_style(style);
        }
        // While the caller waits (on zstd workers, a server) the clock still moves.
        bar.enable_steady_tick(Duration::from_millis(200));
        crate::log::show_bar(Some(bar.clone()));
        Progress {
            bar: Some(bar),
            counts: None,
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn inc_length(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc_length(n);
        }
    }

    pub fn set_message(&self, msg: impl Into<String>) {
        if let Some(b) = &self.bar {
            b.set_message(msg.into());
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            crate::log::show_bar(None);
        }
    }
}
