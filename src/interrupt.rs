//! Ctrl-C and SIGTERM, decided in one place. The signals are blocked in every thread
//! ([`install`] runs before the first thread starts, and threads inherit the mask) and
//! one thread takes them with `sigwait`, so nothing runs in signal context.
//!
//! On a signal, every file registered as unfinished is removed, one line says what was
//! interrupted and what is kept, and the process exits 130 (SIGINT) or 143 (SIGTERM). A
//! command that can stop between units of work (`migrate --watch`) asks for [`graceful`]
//! instead: the first signal only sets a flag it polls, the second exits as above.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;

struct Entry {
    id: u64,
    path: PathBuf,
}

static UNFINISHED: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static GRACEFUL: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A file being written under a temporary name; removed if the process is interrupted
/// before the guard is dropped (drop it once the file is complete or renamed).
#[must_use]
pub struct Unfinished(u64);

impl Unfinished {
    pub fn new(path: &Path) -> Unfinished {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        lock().push(Entry {
            id,
            path: path.to_path_buf(),
        });
        Unfinished(id)
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        lock().retain(|e| e.id != self.0);
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    UNFINISHED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first signal sets a flag ([`stop_requested`]) instead of ending the process.
pub fn graceful() {
    GRACEFUL.store(true, Ordering::SeqCst);
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The exit code a gracefully stopped command ends with: 130 after SIGINT, 143 after
/// SIGTERM, as if the signal had ended it.
pub fn stop_exit_code() -> Option<u8> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGTERM => Some(143),
        _ => Some(130),
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set they are given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread it starts) and
/// starts the thread that handles them. `what` names the command for the message.
pub fn install(what: &'static str) {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let set = signal_set();
    // SAFETY: a valid, initialised set; the old mask is not needed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    std::thread::spawn(move || loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: the set is valid and `sig` receives the signal number.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        if GRACEFUL.load(Ordering::SeqCst) && !STOP.swap(true, Ordering::SeqCst) {
            STOP_SIGNAL.store(sig, Ordering::SeqCst);
            eprintln!(
                "mailark: {what}: interrupted: finishing the passes that are running \
                 (interrupt again to stop at once)"
            );
            continue;
        }
        exit_now(what, sig);
    });
}

fn exit_now(what: &str, sig: libc::c_int) -> ! {
    let removed: Vec<PathBuf> = lock()
        .iter()
        .filter(|e| std::fs::remove_file(&e.path).is_ok())
        .map(|e| e.path.clone())
        .collect();
    let name = if sig == libc::SIGTERM {
        "SIGTERM"
    } else {
        "SIGINT"
    };
    let kept = "everything finished before it is complete and kept";
    if removed.is_empty() {
        eprintln!("mailark: {what} interrupted by {name}; {kept}");
    } else {
        let list: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "mailark: {what} interrupted by {name}: removed the unfinished {}; {kept}",
            list.join(", ")
        );
    }
    std::process::exit(if sig == libc::SIGTERM { 143 } else { 130 });
}

/// Lets a child process get SIGINT and SIGTERM again (it inherits the blocked mask that
/// [`install`] set, and e.g. a password helper must die with Ctrl-C).
pub fn unblock_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let set = signal_set();
    // SAFETY: pthread_sigmask is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}
