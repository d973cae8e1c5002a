//! Platform tuning of the supervisor process itself: glibc's allocator set
//! up for a long-running process with many small, long-lived connections,
//! and freed heap memory handed back to the system. No-ops elsewhere.
//!
//! Owns these process-wide allocator settings, nothing else.

/// Allocations of at least this size get their own mapping (see
/// [`tune_allocator`]).
const OWN_MAPPING_BYTES: i32 = 16 * 1024;

/// Threads share at most this many allocator arenas (see [`tune_allocator`]).
const ARENAS: i32 = 2;

/// Sets glibc's allocator up for a long-running supervisor of many agents.
///
/// At most [`ARENAS`] (2) arenas: glibc gives threads up to eight per core,
/// and each keeps its own free fragments; the supervisor's threads (spawners,
/// the blocking pool, libzmq's, the endpoint) mostly wait, so they do not
/// contend for the locks, and with 500 SDK agents the process held about
/// 1 MB less (12 arenas before).
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
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
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
