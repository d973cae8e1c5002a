//! Platform tuning of the supervisor process itself: glibc's allocator set
//! up for a long-running process with many small, long-lived connections,
//! and freed heap memory handed back to the system. No-ops elsewhere.
//!
//! Owns these process-wide allocator settings, nothing else.

/// Allocations of at least this size get their own mapping (see
/// [`tune_allocator`]).
const OWN_MAPPING_BYTES: i32 = 16 * 1024;

/// Sets glibc's allocator up for a long-running supervisor of many agents.
///
/// (The number of arenas is left alone: capping it at 2 saved no memory
/// worth measuring with 500 SDK agents, 0.2 MB, and cost about 0.1 % of a
/// core, measured in `bench idle` with `GLIBC_TUNABLES=glibc.malloc.arena_max=2`.)
///
/// Allocations of 16 KiB and more get their own mapping, so their untouched
/// pages are never resident; in the shared heap they sit on pages that
/// earlier allocations had already dirtied. Measured as about 1 MB less
/// resident memory with 500 agents when libzmq's message-pipe chunks were
/// 16 KiB; they are 1 KiB now (`vendor/zmq-sys/build/zmq_config.hpp`: two
/// 16 KiB chunks per pipe became fully resident within minutes anyway), so
/// what is left above the threshold are passing buffers (the sampler's
/// directory reads). Call once, early.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters, under the
    // allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_MAPPING_BYTES);
    }
}

/// Returns free heap pages to the system. glibc keeps memory that bursts
/// (hundreds of agents starting, a reload) allocated and freed, in the
/// middle of its heaps where it never trims on its own; for a long-running
/// supervisor that is megabytes of resident memory doing nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's own free
    // lists; it takes the allocator's locks like any malloc call.
    unsafe {
        libc::malloc_trim(0);
    }
}
