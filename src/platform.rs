//! Platform tuning of the supervisor process itself: glibc's allocator set
//! up for a long-running process with many small, long-lived connections,
//! freed heap memory handed back to the system, the pages of code that
//! only start-up ran unmapped once it is over, and the open-files limit
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

/// Unmaps the pages of program code and read-only data that start-up
/// touched, once start-up is over (every agent ready, or given up on), and
/// returns how many bytes of mappings were advised.
///
/// Why: start-up runs code that idle never runs again (the manifest reader,
/// checks, planning, spawning hundreds of agents), and the kernel maps code
/// in 64 KiB runs around each page touched, so nearly the whole 8 MB text
/// of the binary stays resident for good: measured, 7.2 MiB of its 7.6 MiB
/// with 500 SDK agents, of which about 1.9 MiB is touched while idle.
/// `MADV_DONTNEED` on these mappings drops only this process's page-table
/// entries; the file pages stay in the page cache (shared, reclaimable), and
/// code that runs again is mapped back on its next use by a minor fault.
/// The kernel does the same under memory pressure, so nothing can break
/// that could not break then.
///
/// Only private, non-writable mappings of a file whose pages are all still
/// the file's (`Anonymous: 0` in `/proc/self/smaps`) are advised: a page
/// that was written (relocations in a RELRO segment, a debugger's
/// breakpoint) is a private copy that `MADV_DONTNEED` would throw away.
pub fn release_start_up_pages() -> std::io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let mut released = 0;
        for (start, length) in unchanged_file_mappings(&smaps) {
            // SAFETY: the range is one whole mapping of this process, read
            // from smaps just now; it is private, not writable and holds no
            // private copy of a page, so dropping its pages loses nothing:
            // the next access reads them from the file again.
            let result =
                unsafe { libc::madvise(start as *mut libc::c_void, length, libc::MADV_DONTNEED) };
            if result == 0 {
                released += length;
            }
        }
        Ok(released)
    }
    #[cfg(not(target_os = "linux"))]
    Ok(0)
}

/// `(start, length)` of each mapping in `smaps` text that is a private,
/// non-writable mapping of a file with no page of its own (`Anonymous: 0`).
fn unchanged_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    // The current mapping's range, if it is a candidate so far.
    let mut candidate = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some(value) = line.strip_prefix("Anonymous:") {
            if let Some(range) = candidate.take()
                && value.trim() == "0 kB"
            {
                found.push(range);
            }
            continue;
        }
        // A header: `start-end perms offset device inode [path]`. Field
        // lines (`Rss:`, `VmFlags:`) have no `-` range in their first field.
        let Some((start, end)) = first.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let perms = fields.next().unwrap_or("");
        let inode = fields.nth(2).unwrap_or("0");
        let path = fields.next().unwrap_or("");
        candidate = (perms.len() == 4
            && !perms.contains('w')
            && perms.ends_with('p')
            && inode != "0"
            && path.starts_with('/'))
        .then_some((start, end - start));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

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
        raise_open_files();
        let mut after = before;
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut after) },
            0
        );
        assert_eq!(after.rlim_cur, after.rlim_max);
        if before.rlim_cur < before.rlim_max {
            let given = agents_open_files().expect("raised, so kept");
            assert_eq!(given.rlim_cur, before.rlim_cur);
        }
    }

    const SMAPS: &str = "\
55b4305b9000-55b430813000 r--p 00000000 fe:01 1234 /usr/bin/supervisor
Rss:                1152 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
55b430813000-55b430fa9000 r-xp 0025a000 fe:01 1234 /usr/bin/supervisor
Anonymous:             0 kB
55b430fa9000-55b430fe2000 r--p 009f0000 fe:01 1234 /usr/bin/supervisor
Anonymous:           228 kB
55b430fe2000-55b430fe4000 rw-p 00a29000 fe:01 1234 /usr/bin/supervisor
Anonymous:             8 kB
7f1cd8164000-7f1cd82ba000 r-xs 00028000 fe:01 99 /dev/shm/shared
Anonymous:             0 kB
7f1cb4000000-7f1cb457a000 rw-p 00000000 00:00 0
Anonymous:          5608 kB
7ffc5e915000-7ffc5e936000 r--p 00000000 00:00 0                          [vvar]
Anonymous:             0 kB
";

    #[test]
    fn only_private_read_only_file_mappings_without_own_pages_are_chosen() {
        assert_eq!(
            unchanged_file_mappings(SMAPS),
            vec![
                (0x55b4305b9000, 0x55b430813000 - 0x55b4305b9000),
                (0x55b430813000, 0x55b430fa9000 - 0x55b430813000),
            ]
        );
    }

    /// The running test binary: its code pages are released, a written
    /// private copy in a read-only mapping (what a RELRO segment is) is
    /// kept, and code runs on afterwards.
    #[cfg(target_os = "linux")]
    #[test]
    fn start_up_pages_are_released_and_written_pages_kept() {
        use std::io::Write;
        let page = 4096;
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(&vec![b'f'; 2 * page])
            .expect("write temp file");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: a fresh private mapping of two pages of our own file.
        let mapping = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                fd,
                0,
            )
        };
        assert_ne!(mapping, libc::MAP_FAILED, "mmap the temp file");
        let bytes = mapping.cast::<u8>();
        // SAFETY: both pages are mapped and writable; the first gets a
        // private copy, then the whole mapping becomes read-only.
        unsafe {
            bytes.write_volatile(b'w');
            assert_eq!(libc::mprotect(mapping, 2 * page, libc::PROT_READ), 0);
            assert_eq!(bytes.add(page).read_volatile(), b'f');
        }
        let before = resident_kib_of_unchanged_file_mappings();
        let released = release_start_up_pages().expect("read /proc/self/smaps");
        let after = resident_kib_of_unchanged_file_mappings();
        // SAFETY: still mapped, read-only reads.
        let (written, unwritten) =
            unsafe { (bytes.read_volatile(), bytes.add(page).read_volatile()) };
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(mapping, 2 * page) };
        assert_eq!(written, b'w', "the written private copy was kept");
        assert_eq!(unwritten, b'f', "the unwritten page reads the file again");
        assert!(released >= 64 * 1024, "advised only {released} bytes");
        // Other tests run meanwhile and map some code back, never all of it.
        assert!(
            after < before,
            "resident file pages {before} KiB before, {after} KiB after"
        );
        assert_eq!(format!("{}", 2 + 2), "4", "code still runs");
    }

    /// `Rss` summed over the mappings `release_start_up_pages` would advise.
    #[cfg(target_os = "linux")]
    fn resident_kib_of_unchanged_file_mappings() -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let chosen = unchanged_file_mappings(&smaps);
        let mut total = 0;
        let mut current = None;
        for line in smaps.lines() {
            if let Some((start, _)) = line
                .split_whitespace()
                .next()
                .and_then(|f| f.split_once('-'))
            {
                current = usize::from_str_radix(start, 16).ok();
            } else if let Some(value) = line.strip_prefix("Rss:")
                && current.is_some_and(|start| chosen.iter().any(|(chosen, _)| *chosen == start))
            {
                total += value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
        total
    }
}
