//! Resource sampling of agent process trees by reading `/proc` directly
//! (cheaper than sysinfo; see `shared/notes/crates.md`): for each agent pid,
//! the agent and all its descendants, summed CPU time and resident memory.
//!
//! Two things keep a sample cheap with hundreds of agents: each process's
//! `/proc/<pid>/stat` stays open between samples and is read again with
//! `pread` (no path lookup; the open file also stays tied to that process,
//! so a recycled pid is never mistaken for it), and descendants are looked
//! for (every thread's `children` file) only on every
//! [`RESCAN_EVERY`]th sample and for trees seen for the first time. A
//! child started in between is counted from the next rescan on.
//!
//! Owns the open stat files and the previous CPU times needed for a
//! percentage. Blocking file reads: callers run [`TreeSampler::sample`] off
//! the async runtime (`spawn_blocking`). Does not decide anything about
//! limits (the supervisor's lifecycle does).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

/// Descendants are looked for on every this many samples.
pub const RESCAN_EVERY: u64 = 10;

/// Stat files kept open at most; processes beyond are read by path.
const MAX_OPEN: usize = 4096;

/// Resource use of one agent's process tree (the agent and its descendants).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceSample {
    /// The agent's own pid (the root of the tree).
    pub pid: u32,
    /// Since the previous sample, in percent of one core (0 on the first).
    pub cpu_percent: f64,
    pub rss_bytes: u64,
}

/// One process of a sampled tree.
#[derive(Debug)]
struct Tracked {
    /// `/proc/<pid>/stat`, open; `None` past [`MAX_OPEN`].
    stat: Option<File>,
    /// CPU ticks (user + system) at the last sample; `None` before the first.
    ticks: Option<u64>,
}

/// Samples process trees; keeps each process's stat file and CPU time
/// between calls.
#[derive(Debug)]
pub struct TreeSampler {
    ticks_per_second: f64,
    page_size: u64,
    processes: HashMap<u32, Tracked>,
    /// The members of each root's tree (root first) as of the last rescan.
    trees: HashMap<u32, Vec<u32>>,
    samples: u64,
    last: Option<Instant>,
}

impl Default for TreeSampler {
    fn default() -> Self {
        TreeSampler::new()
    }
}

impl TreeSampler {
    pub fn new() -> TreeSampler {
        use nix::unistd::{SysconfVar, sysconf};
        let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096);
        TreeSampler {
            ticks_per_second: ticks.max(1) as f64,
            page_size: page.max(1) as u64,
            processes: HashMap::new(),
            trees: HashMap::new(),
            samples: 0,
            last: None,
        }
    }

    /// One sample per root pid that still exists. A process first seen in
    /// this sample adds no CPU (its earlier time is not in this interval).
    pub fn sample(&mut self, roots: &[u32]) -> Vec<ResourceSample> {
        let now = Instant::now();
        let elapsed = self
            .last
            .map(|last| now.duration_since(last).as_secs_f64())
            .unwrap_or(0.0);
        self.last = Some(now);
        let rescan = self.samples % RESCAN_EVERY == 0;
        self.samples += 1;
        let mut trees = HashMap::with_capacity(roots.len());
        let mut samples = Vec::with_capacity(roots.len());
        for root in roots {
            let members = match self.trees.remove(root) {
                Some(members) if !rescan => members,
                _ => descendants(*root),
            };
            let mut ticks_delta = 0u64;
            let mut rss_pages = 0u64;
            let mut alive = Vec::with_capacity(members.len());
            for pid in members {
                let Some(stat) = self.read(pid) else {
                    continue;
                };
                if let Some(before) = stat.before {
                    ticks_delta += stat.ticks.saturating_sub(before);
                }
                rss_pages += stat.rss_pages;
                alive.push(pid);
            }
            if alive.first() != Some(root) {
                continue; // the agent itself is gone
            }
            let cpu_percent = if elapsed > 0.0 {
                ticks_delta as f64 / self.ticks_per_second / elapsed * 100.0
            } else {
                0.0
            };
            samples.push(ResourceSample {
                pid: *root,
                cpu_percent,
                rss_bytes: rss_pages * self.page_size,
            });
            trees.insert(*root, alive);
        }
        // Forget (and close) every process no longer in a sampled tree.
        let members: HashSet<u32> = trees.values().flatten().copied().collect();
        self.processes.retain(|pid, _| members.contains(pid));
        self.trees = trees;
        samples
    }

    /// Reads one process's stat, opening and keeping its file the first
    /// time; `None` (and forgotten) once it is gone or a zombie.
    fn read(&mut self, pid: u32) -> Option<Reading> {
        let open = self.processes.len();
        let tracked = self.processes.entry(pid).or_insert_with(|| Tracked {
            stat: (open < MAX_OPEN)
                .then(|| File::open(stat_path(pid)).ok())
                .flatten(),
            ticks: None,
        });
        let stat = match &tracked.stat {
            Some(file) => {
                let mut buffer = [0u8; 2048];
                file.read_at(&mut buffer, 0)
                    .ok()
                    .and_then(|count| std::str::from_utf8(&buffer[..count]).ok())
                    .and_then(parse_stat)
            }
            None => std::fs::read_to_string(stat_path(pid))
                .ok()
                .as_deref()
                .and_then(parse_stat),
        };
        let Some(stat) = stat else {
            self.processes.remove(&pid);
            return None;
        };
        let before = tracked.ticks.replace(stat.ticks);
        Some(Reading {
            ticks: stat.ticks,
            rss_pages: stat.rss_pages,
            before,
        })
    }
}

struct Reading {
    ticks: u64,
    rss_pages: u64,
    /// The ticks at the previous sample, if the process was in it.
    before: Option<u64>,
}

struct Stat {
    ticks: u64,
    rss_pages: u64,
}

fn stat_path(pid: u32) -> String {
    format!("/proc/{pid}/stat")
}

/// utime + stime and rss of a `/proc/<pid>/stat` text; `None` for a zombie.
fn parse_stat(text: &str) -> Option<Stat> {
    // The command name (field 2) may contain spaces and parentheses.
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // Field 3 (state) first; utime is field 14, stime 15, rss 24.
    if matches!(fields.next(), Some("Z") | Some("X")) {
        return None;
    }
    let mut fields = fields.skip(10);
    let mut number = || fields.next()?.parse::<u64>().ok();
    let utime = number()?;
    let stime = number()?;
    let mut rest = fields.skip(8);
    let rss_pages = rest.next()?.parse::<u64>().ok()?;
    Some(Stat {
        ticks: utime + stime,
        rss_pages,
    })
}

/// `root` and all its descendants, root first.
fn descendants(root: u32) -> Vec<u32> {
    let mut members = vec![root];
    let mut index = 0;
    while index < members.len() {
        let pid = members[index];
        for child in children(pid) {
            if !members.contains(&child) {
                members.push(child);
            }
        }
        index += 1;
    }
    members
}

/// Direct children of `pid`, from every thread's `children` file.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            found.extend(
                text.split_whitespace()
                    .filter_map(|pid| pid.parse::<u32>().ok()),
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process_and_its_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let me = std::process::id();
        let mut sampler = TreeSampler::new();
        let first = sampler.sample(&[me, 999_999_999]);
        assert_eq!(first.len(), 1, "a pid that does not exist is skipped");
        assert!(first[0].rss_bytes > 1024 * 1024, "{first:?}");
        assert!(
            sampler.processes.contains_key(&child.id()),
            "the child is part of the tree"
        );
        // Burn some CPU so the second sample sees it.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 200 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let second = sampler.sample(&[me]);
        assert!(second[0].cpu_percent > 10.0, "{second:?}");
        let _ = child.kill();
        let _ = child.wait();
        // Gone (reaped) from the tree: its stat file is closed at the next
        // rescan.
        for _ in 0..RESCAN_EVERY {
            sampler.sample(&[me]);
        }
        assert!(!sampler.processes.contains_key(&child.id()));
    }

    #[test]
    fn a_child_started_later_is_counted_from_the_next_rescan() {
        let me = std::process::id();
        let mut sampler = TreeSampler::new();
        sampler.sample(&[me]);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let mut seen_after = None;
        for sample in 1..=RESCAN_EVERY {
            sampler.sample(&[me]);
            if sampler.processes.contains_key(&child.id()) {
                seen_after = Some(sample);
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(seen_after, Some(RESCAN_EVERY));
    }

    #[test]
    fn stat_fields_are_read_past_a_name_with_spaces_and_parentheses() {
        let text = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 100 1000000 250 18446744073709551615";
        let stat = parse_stat(text).expect("parsed");
        assert_eq!(stat.ticks, 10);
        assert_eq!(stat.rss_pages, 250);
        assert!(
            parse_stat("42 (zombie) Z 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 100 0 0").is_none()
        );
    }
}
