//! Resource sampling of agent process trees by reading `/proc` directly
//! (cheaper than sysinfo; see `shared/notes/crates.md`): for each agent pid,
//! the agent and all its descendants, summed CPU time and resident memory.
//!
//! Three things keep a sample cheap with hundreds of agents: each process's
//! `/proc/<pid>/statm` and `/proc/<pid>/stat` stay open between samples and
//! are read again with `pread` (no path lookup; an open file also stays tied
//! to its process, so a recycled pid is never mistaken for it); memory comes
//! from `statm` (a quarter of the cost of `stat`, which sums every thread's
//! CPU time) on every sample and CPU time from `stat` only on every
//! [`CPU_EVERY`]th; and descendants are looked for only on every
//! [`RESCAN_EVERY`]th sample and when a new tree appears, by one pass over
//! `/proc` that reads the parent of each process not already in a tree (so
//! its cost grows with the machine's other processes, not with the agents).
//! A child started in between is counted from the next rescan on.
//!
//! Owns the open stat files and the previous CPU times needed for a
//! percentage, and what an agent's process tree is ([`process_tree`], also
//! used by readiness to tell the agent's listener from a foreign one), and
//! the sampling task ([`sample_every`]). Blocking file reads: callers run
//! [`TreeSampler::sample`] off the async runtime (`spawn_blocking`). Does not
//! decide anything about limits (the supervisor's lifecycle does).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

/// Descendants are looked for on every this many samples.
pub const RESCAN_EVERY: u64 = 10;

/// CPU time is read on every this many samples (the first included).
pub const CPU_EVERY: u64 = 5;

/// Processes whose files are kept open at most (two each); processes
/// beyond are read by path.
const MAX_OPEN: usize = 2048;

/// Resource use of one agent's process tree (the agent and its descendants).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceSample {
    /// The agent's own pid (the root of the tree).
    pub pid: u32,
    /// Since the previous CPU reading, in percent of one core (0 on the
    /// first); `None` in samples that read memory only.
    pub cpu_percent: Option<f64>,
    /// Resident memory of the whole tree, in bytes (shared pages counted
    /// once per process).
    pub rss_bytes: u64,
}

/// One process of a sampled tree.
#[derive(Debug)]
struct Tracked {
    /// `/proc/<pid>/stat` and `/proc/<pid>/statm`, open; `None` past [`MAX_OPEN`].
    files: Option<(File, File)>,
    /// CPU ticks (user + system) at the last CPU reading, and when; `None`
    /// before the first.
    ticks: Option<(u64, Instant)>,
}

/// Samples process trees; keeps each process's stat file and CPU time
/// between calls.
#[derive(Debug)]
pub struct TreeSampler {
    /// `sysconf(CLK_TCK)`: the unit of `utime`/`stime` in `/proc/<pid>/stat`.
    ticks_per_second: f64,
    /// `sysconf(PAGE_SIZE)` in bytes: the unit of `statm`'s resident pages.
    page_size: u64,
    /// Every process of every tree being watched, by pid: its open `/proc`
    /// files and its last CPU reading.
    processes: HashMap<u32, Tracked>,
    /// The members of each root's tree (root first) as of the last rescan.
    trees: HashMap<u32, Vec<u32>>,
    /// Samples taken so far; decides which ones read CPU and rescan the trees.
    samples: u64,
}

/// [`TreeSampler::new`].
impl Default for TreeSampler {
    fn default() -> Self {
        TreeSampler::new()
    }
}

impl TreeSampler {
    /// A sampler with no history (the first CPU reading of each tree is 0).
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
        }
    }

    /// One sample per root pid that still exists. CPU is read on every
    /// [`CPU_EVERY`]th sample and for a tree seen for the first time; a
    /// process's first reading adds no CPU (its earlier time is not in this
    /// interval), so a new tree starts at 0 %.
    pub fn sample(&mut self, roots: &[u32]) -> Vec<ResourceSample> {
        let now = Instant::now();
        let cpu_due = self.samples.is_multiple_of(CPU_EVERY);
        let rescan = self.samples.is_multiple_of(RESCAN_EVERY);
        self.samples += 1;
        let new_roots: HashSet<u32> = roots
            .iter()
            .copied()
            .filter(|root| !self.trees.contains_key(root))
            .collect();
        if rescan || !new_roots.is_empty() {
            self.trees = find_trees(roots, &self.trees);
        }
        let mut trees = HashMap::with_capacity(roots.len());
        let mut samples = Vec::with_capacity(roots.len());
        for root in roots {
            let members = self.trees.remove(root).unwrap_or_else(|| vec![*root]);
            let cpu = cpu_due || new_roots.contains(root);
            // CPU seconds per second, summed over the tree's processes.
            let mut cores = 0.0;
            let mut rss_pages = 0u64;
            let mut alive = Vec::with_capacity(members.len());
            for pid in members {
                let Some(reading) = self.read(pid, cpu, now) else {
                    continue;
                };
                cores += reading.cores.unwrap_or(0.0);
                rss_pages += reading.rss_pages;
                alive.push(pid);
            }
            if alive.first() != Some(root) {
                continue; // the agent itself is gone
            }
            samples.push(ResourceSample {
                pid: *root,
                cpu_percent: cpu.then_some(cores * 100.0),
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

    /// Reads one process's memory (and with `cpu` its CPU time), opening
    /// and keeping its files the first time; `None` (and forgotten) once it
    /// is gone or a zombie.
    fn read(&mut self, pid: u32, cpu: bool, now: Instant) -> Option<Reading> {
        let open = self.processes.len();
        let tracked = self.processes.entry(pid).or_insert_with(|| Tracked {
            files: (open < MAX_OPEN)
                .then(|| {
                    let stat = File::open(proc_path(pid, "stat")).ok()?;
                    let statm = File::open(proc_path(pid, "statm")).ok()?;
                    Some((stat, statm))
                })
                .flatten(),
            ticks: None,
        });
        let files = tracked.files.as_ref();
        let reading = if cpu {
            read_proc(files.map(|files| &files.0), pid, "stat", parse_stat)
                .map(|stat| (Some(stat.ticks), stat.rss_pages))
        } else {
            read_proc(files.map(|files| &files.1), pid, "statm", parse_statm)
                .map(|rss_pages| (None, rss_pages))
        };
        let Some((ticks, rss_pages)) = reading else {
            self.processes.remove(&pid);
            return None;
        };
        let ticks_per_second = self.ticks_per_second;
        let cores = ticks.map(|ticks| {
            let before = tracked.ticks.replace((ticks, now));
            match before {
                Some((before, at)) if now > at => {
                    let seconds = now.duration_since(at).as_secs_f64();
                    ticks.saturating_sub(before) as f64 / ticks_per_second / seconds
                }
                _ => 0.0,
            }
        });
        Some(Reading { cores, rss_pages })
    }
}

/// One process's figures from one sample.
struct Reading {
    /// CPU seconds per second since the process's previous CPU reading (0
    /// at its first); `None` when only memory was read.
    cores: Option<f64>,
    /// Resident memory in pages.
    rss_pages: u64,
}

/// What is read from `/proc/<pid>/stat`.
struct Stat {
    /// User plus system CPU time in clock ticks.
    ticks: u64,
    /// Resident memory in pages.
    rss_pages: u64,
}

/// Parses `/proc/<pid>/<name>`, read again from its open `file` into a
/// stack buffer (no allocation), or by path when it is not kept open.
fn read_proc<T>(
    file: Option<&File>,
    pid: u32,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<T> {
    match file {
        Some(file) => {
            let mut buffer = [0u8; 2048];
            let count = file.read_at(&mut buffer, 0).ok()?;
            parse(std::str::from_utf8(&buffer[..count]).ok()?)
        }
        None => parse(&std::fs::read_to_string(proc_path(pid, name)).ok()?),
    }
}

/// `/proc/<pid>/<file>`.
fn proc_path(pid: u32, file: &str) -> String {
    format!("/proc/{pid}/{file}")
}

/// Resident pages, the second field of `/proc/<pid>/statm`.
fn parse_statm(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
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

/// `root` and all its descendants (root first), from one pass over `/proc`.
/// Blocking: run it off the async runtime.
pub fn process_tree(root: u32) -> Vec<u32> {
    find_trees(&[root], &HashMap::new())
        .remove(&root)
        .unwrap_or_else(|| vec![root])
}

/// Each root with all its descendants (root first). Processes already in
/// `known` keep their tree without being read; every other process on the
/// machine is read once for its parent and joins the tree its ancestors
/// lead to, if any.
pub(crate) fn find_trees(roots: &[u32], known: &HashMap<u32, Vec<u32>>) -> HashMap<u32, Vec<u32>> {
    let mut tree_of: HashMap<u32, u32> = HashMap::new();
    for root in roots {
        tree_of.insert(*root, *root);
        for member in known.get(root).into_iter().flatten() {
            tree_of.insert(*member, *root);
        }
    }
    let mut parent_of: HashMap<u32, u32> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if tree_of.contains_key(&pid) {
            continue;
        }
        if let Some(parent) = std::fs::read_to_string(proc_path(pid, "stat"))
            .ok()
            .as_deref()
            .and_then(parse_parent)
        {
            parent_of.insert(pid, parent);
        }
    }
    let mut trees: HashMap<u32, Vec<u32>> = roots
        .iter()
        .map(|root| {
            let members = known.get(root).cloned().unwrap_or_else(|| vec![*root]);
            (*root, members)
        })
        .collect();
    let mut chain = Vec::new();
    for pid in parent_of.keys() {
        // Walk up until a process whose tree is known (or the chain ends
        // outside every tree), then settle the whole chain at once.
        chain.clear();
        let mut current = *pid;
        let root = loop {
            if let Some(root) = tree_of.get(&current) {
                break Some(*root);
            }
            chain.push(current);
            match parent_of.get(&current) {
                Some(parent) if chain.len() <= parent_of.len() => current = *parent,
                _ => break None,
            }
        };
        if let Some(root) = root {
            for member in chain.drain(..) {
                tree_of.insert(member, root);
                if let Some(members) = trees.get_mut(&root) {
                    members.push(member);
                }
            }
        } else {
            // Outside every tree: remember that too (as `u32::MAX`), so a
            // later walk through these processes stops at once.
            for member in chain.drain(..) {
                tree_of.insert(member, u32::MAX);
            }
        }
    }
    trees
}

/// The parent pid (field 4) of a `/proc/<pid>/stat` text.
fn parse_parent(text: &str) -> Option<u32> {
    let (_, rest) = text.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every this many samples, freed heap memory is given back to the system.
const TRIM_EVERY: u64 = 15;

/// Every `interval`, samples the process trees of the pids `pids` returns
/// (the agents that have one) in `spawn_blocking`, and hands the figures to
/// `send`; when the number of pids changed, and every `TRIM_EVERY` (15)
/// samples, it also gives freed memory back. Ends when `token` is cancelled
/// or `send` returns `false` (its receiver is gone).
pub async fn sample_every(
    interval: std::time::Duration,
    pids: impl Fn() -> Vec<u32>,
    send: impl Fn(Vec<ResourceSample>) -> bool,
    token: tokio_util::sync::CancellationToken,
) {
    let mut sampler = Some(TreeSampler::new());
    let mut sampled: u64 = 0;
    let mut last_count = 0;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let pids = pids();
        let Some(mut owned) = sampler.take() else {
            return;
        };
        // Agents starting or stopping free memory in bursts: trim after
        // those, and now and then anyway.
        sampled += 1;
        let trim = sampled.is_multiple_of(TRIM_EVERY) || pids.len() != last_count;
        last_count = pids.len();
        let Ok((back, samples)) = tokio::task::spawn_blocking(move || {
            let samples = owned.sample(&pids);
            if trim {
                crate::platform::release_free_memory();
            }
            (owned, samples)
        })
        .await
        else {
            return;
        };
        sampler = Some(back);
        if !send(samples) {
            return;
        }
    }
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
        assert_eq!(first[0].cpu_percent, Some(0.0), "no interval yet");
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
        // Memory only until the next CPU reading.
        for _ in 1..CPU_EVERY {
            let between = sampler.sample(&[me]);
            assert_eq!(between[0].cpu_percent, None);
            assert!(between[0].rss_bytes > 1024 * 1024, "{between:?}");
        }
        let second = sampler.sample(&[me]);
        assert!(second[0].cpu_percent.unwrap() > 10.0, "{second:?}");
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
    fn grandchildren_are_part_of_the_tree() {
        // `sh` waits for `sleep`, its child and our grandchild.
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 5; exit 0"])
            .spawn()
            .expect("spawn sh");
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let grandchild = loop {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", shell.id()))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                break pid.parse::<u32>().expect("pid");
            }
            assert!(Instant::now() < deadline, "sh started no child");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let mut sampler = TreeSampler::new();
        sampler.sample(&[std::process::id()]);
        let tree = sampler.trees[&std::process::id()].clone();
        let alone = process_tree(std::process::id());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = shell.wait();
        assert!(tree.contains(&shell.id()), "{tree:?}");
        assert!(tree.contains(&grandchild), "{tree:?}");
        assert_eq!(tree[0], std::process::id(), "root first");
        assert!(
            alone.contains(&grandchild) && alone[0] == std::process::id(),
            "{alone:?}"
        );
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
