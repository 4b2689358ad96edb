//! Allocator settings of the daemon process.

/// Each passphrase check allocates Argon2id's 19 MiB block. With glibc's default *dynamic* mmap
/// threshold, the first such block freed raises the threshold above its size, so later blocks come
/// from the heap arenas of the blocking threads and stay resident once freed: measured with
/// `scripts/bench.sh`, the idle daemon grew from 10 MiB to 48 MiB after four wrong passphrases
/// (docs/PERFORMANCE.md). A fixed threshold keeps every allocation of 1 MiB or more on its own
/// mapping, returned to the kernel when freed. Nothing on the RPC path allocates that much.
///
/// Call first thing in `main`, before any other thread exists.
#[allow(unsafe_code)]
pub fn keep_large_allocations_off_the_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
