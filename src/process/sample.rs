//! Resource sampling of agent process trees by reading `/proc` directly
//! (about 30 µs per process, cheaper than sysinfo; see
//! `shared/notes/crates.md`): for each agent pid, the agent and all its
//! descendants (found through `/proc/<pid>/task/<tid>/children`), summed CPU
//! time and resident memory.
//!
//! Owns the previous CPU times needed for a percentage. Blocking file reads:
//! callers run [`TreeSampler::sample`] off the async runtime
//! (`spawn_blocking`). Does not decide anything about limits (the
//! supervisor's lifecycle does).

use std::collections::HashMap;
use std::time::Instant;

/// Resource use of one agent's process tree (the agent and its descendants).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceSample {
    /// The agent's own pid (the root of the tree).
    pub pid: u32,
    /// Since the previous sample, in percent of one core (0 on the first).
    pub cpu_percent: f64,
    pub rss_bytes: u64,
}

/// Samples process trees; keeps each pid's CPU time between calls.
#[derive(Debug)]
pub struct TreeSampler {
    ticks_per_second: f64,
    page_size: u64,
    /// CPU ticks (user + system) of every pid seen at the last sample.
    previous: HashMap<u32, u64>,
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
            previous: HashMap::new(),
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
        let mut seen = HashMap::new();
        let mut samples = Vec::with_capacity(roots.len());
        for root in roots {
            let Some(root_stat) = read_stat(*root) else {
                continue;
            };
            let mut ticks_delta = 0u64;
            let mut rss_pages = 0u64;
            let mut stack = vec![(*root, root_stat)];
            while let Some((pid, stat)) = stack.pop() {
                if seen.insert(pid, stat.ticks).is_some() {
                    continue;
                }
                if let Some(before) = self.previous.get(&pid) {
                    ticks_delta += stat.ticks.saturating_sub(*before);
                }
                rss_pages += stat.rss_pages;
                for child in children(pid) {
                    if let Some(stat) = read_stat(child) {
                        stack.push((child, stat));
                    }
                }
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
        }
        self.previous = seen;
        samples
    }
}

struct Stat {
    ticks: u64,
    rss_pages: u64,
}

/// utime + stime and rss of `/proc/<pid>/stat`; `None` for a gone or zombie process.
fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state); utime is field 14, stime 15, rss 24.
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    let number = |index: usize| fields.get(index)?.parse::<u64>().ok();
    Some(Stat {
        ticks: number(11)? + number(12)?,
        rss_pages: number(21)?,
    })
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
            sampler.previous.contains_key(&child.id()),
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
    }
}
