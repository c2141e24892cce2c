//! Handing the heap's free pages back to the kernel after a compile.
//!
//! Compiling a large component (a 13–18 MB Python or JavaScript handler)
//! allocates a few hundred MiB of short-lived compiler state, on wasmtime's
//! compile threads. jemalloc keeps freed pages for reuse and returns them
//! only as the arenas that hold them are used again, which an idle host
//! never does: measured, such a first start stayed at ~400 MiB PSS while a
//! start from the compile cache held ~60 MiB. Purging every arena once a
//! compile is done brings the two together, at the cost of one pass over
//! the arenas (about a millisecond) per compile.

/// jemalloc's `MALLCTL_ARENAS_ALL`: the pseudo-index for "every arena".
const ALL_ARENAS: &str = "arena.4096.purge\0";

/// Returns the free pages of every jemalloc arena to the kernel. A no-op
/// (jemalloc answers an error, which is ignored) when the process's
/// allocator is another one, as in the unit tests.
pub fn release_free_pages() {
    // SAFETY: `mallctl` with a NUL-terminated name and null old/new
    // pointers is the documented way to run a void control such as
    // `arena.<i>.purge`; it reads and writes no caller memory.
    #[allow(unsafe_code)]
    let status = unsafe {
        tikv_jemalloc_sys::mallctl(
            ALL_ARENAS.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if status != 0 {
        tracing::debug!(status, "jemalloc arena purge failed");
    }
}
