//! Platform tuning of the supervisor process itself: glibc's allocator set
//! up for a long-running process with many small, long-lived connections,
//! freed heap memory handed back to the system, and the open-files limit
//! raised for hundreds of agents (and given back to them). No-ops elsewhere.
//!
//! Owns these process-wide settings, nothing else.

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

/// The open-files limit `up` was started with, kept when
/// [`raise_open_files`] raised it: every agent gets it back.
static STARTED_WITH: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Raises the soft limit on open files to the hard one. The supervisor
/// holds five or six descriptors per agent (output pipes, pidfd, log file,
/// `/proc` files, a kept probe connection): 500 agents need about 3,500,
/// and the usual soft limit is 1,024. Agents get the limit the supervisor
/// was started with back ([`agents_open_files`]), as if started from the
/// same shell (a program using `select` breaks on descriptors past 1,024).
/// Call once, early.
pub fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read the struct on this stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            let _ = STARTED_WITH.set(limit);
        }
    }
}

/// The open-files limit agents start with: `None` when the supervisor's
/// own was not raised (they inherit it unchanged).
pub fn agents_open_files() -> Option<libc::rlimit> {
    STARTED_WITH.get().copied()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_raised_limit_is_given_back_to_agents() {
        let mut before = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct on this stack.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) },
            0
        );
        super::raise_open_files();
        let mut after = before;
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut after) },
            0
        );
        assert_eq!(after.rlim_cur, after.rlim_max);
        if before.rlim_cur < before.rlim_max {
            let given = super::agents_open_files().expect("raised, so kept");
            assert_eq!(given.rlim_cur, before.rlim_cur);
        }
    }
}
