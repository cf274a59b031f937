//! The `mailark` binary: everything lives in the library; this only hands over.

fn main() -> std::process::ExitCode {
    fewer_malloc_arenas();
    mailark::cli::main()
}

/// glibc gives each thread that allocates its own arena (up to 8 a core); memory freed
/// into one is not reused by another, so an import's reader thread and the runtime's
/// workers each kept their own high-water mark. Two arenas: at 200,000 messages one
/// arena took import's peak RSS from 231 to 193 MiB and its rerun's from 239 to 190
/// MiB, at the same CPU time (`cargo bench --bench scale`).
fn fewer_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
