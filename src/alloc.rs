//! The process's use of glibc's allocator: a command that holds little per message for
//! a while, then frees it (an import pass, a folder's comparison), should give that
//! memory back rather than keep its high-water mark for the rest of the run.

/// Called once, before any other thread starts. One arena instead of glibc's up to 8
/// a core: memory freed into one thread's arena was not reused by another's (an import's
/// reader thread and the runtime's workers each kept their own high-water mark); at
/// 200,000 messages one arena took import's peak RSS from 231 to 193 MiB and its
/// rerun's from 239 to 190 MiB at the same CPU time (`cargo bench --bench scale`). A
/// fixed mmap threshold keeps large blocks (a pass's records, a folder's census) in
/// their own mappings, returned whole when freed, where glibc's sliding threshold
/// moved them into the heap after the first was freed. Fixing it also fixes the trim
/// threshold at its 128 KiB default, so the heap's top was given back and taken again
/// message after message; it is set as glibc's sliding rule would (twice the mmap
/// threshold), and [`give_back`] trims between passes.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Returns the free pages of the heap to the system (after a pass freed what it held).
pub(crate) fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
