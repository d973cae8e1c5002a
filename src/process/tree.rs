//! Containment: finding and killing every process an agent started, also
//! the ones that left its process group or session (daemons: `setsid`,
//! `setpgid`, fork-and-exit), which `killpg` alone never reaches.
//!
//! Two mechanisms, chosen once per supervisor ([`Containment::detect`]):
//!
//! - **cgroup v2** (preferred): `<cgroup of the supervisor>/supervisor-<pid>-<n>/agent-<agent>`
//!   per agent, when the supervisor can create it and move a process into it
//!   (root, or a delegated subtree). The child joins its cgroup between fork
//!   and exec ([`Joiner`]) or, where the kernel can, is cloned straight into
//!   it (`clone3(CLONE_INTO_CGROUP)`, `super::clone3`); either way
//!   before the agent's code runs, and no process can leave a
//!   cgroup without write access to another one. Killed with `cgroup.kill`
//!   (Linux 5.14), else by signalling `cgroup.procs` until it is empty. No
//!   controller is enabled, so the "no internal processes" rule never applies.
//! - **marker** (fallback, or `SUPERVISOR_CONTAINMENT=marker`): every agent
//!   gets `SUPERVISOR_AGENT_TAG=<run-id>/<agent>` in its environment, which
//!   its descendants inherit; its tree is every process whose
//!   `/proc/<pid>/environ` holds that tag. A process that clears its
//!   environment, or runs as another user, escapes this one.
//!
//! Owns the cgroup directories (created here, removed when emptied) and the
//! tag. Does not own when to kill (the spawner kills an agent's tree when its
//! leader exits and signals it on the supervisor's request; the keeper
//! kills every tree if the supervisor dies).

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// The environment variable that marks an agent's processes.
pub const TAG_VARIABLE: &str = "SUPERVISOR_AGENT_TAG";

/// Chooses the mechanism: `cgroup`, `marker` or (unset, `auto`) the best available.
pub const CONTAINMENT_VARIABLE: &str = "SUPERVISOR_CONTAINMENT";

/// How this supervisor finds the processes of its agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Containment {
    /// One cgroup per agent under `base` (`.../supervisor-<pid>-<n>`).
    Cgroup {
        /// The cgroup (v2) directory the agent cgroups are created in.
        base: PathBuf,
    },
    /// Processes carry `SUPERVISOR_AGENT_TAG=<run_id>/<agent>`.
    Marker {
        /// Unique per supervisor run, so two supervisors never claim each
        /// other's processes.
        run_id: String,
    },
}

/// Where one agent's processes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree {
    /// The agent's own cgroup directory.
    Cgroup(PathBuf),
    /// The full tag value, `<run-id>/<agent>`.
    Marker(String),
}

impl Containment {
    /// A cgroup when one can be created and joined here (tried once),
    /// else the marker; `SUPERVISOR_CONTAINMENT` can force either.
    pub fn detect() -> Containment {
        let run_id = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|since| since.as_nanos())
                .unwrap_or(0)
        );
        let wanted = std::env::var(CONTAINMENT_VARIABLE).unwrap_or_default();
        if wanted != "marker" {
            match cgroup_base() {
                Ok(base) => return Containment::Cgroup { base },
                // Asked for a cgroup: say why there is none.
                Err(error) if wanted == "cgroup" => {
                    tracing::warn!(%error, "no cgroup for agents; tracking them by an environment marker");
                }
                Err(error) => {
                    tracing::info!(%error, "no cgroup for agents; tracking them by an environment marker");
                }
            }
        }
        Containment::Marker { run_id }
    }

    /// What the keeper is told: `cgroup:<base>` or `marker:<run-id>/`.
    pub fn describe(&self) -> String {
        match self {
            Containment::Cgroup { base } => format!("cgroup:{}", base.display()),
            Containment::Marker { run_id } => format!("marker:{run_id}/"),
        }
    }

    /// Parses [`Containment::describe`].
    pub fn parse(text: &str) -> Option<Containment> {
        if let Some(base) = text.strip_prefix("cgroup:") {
            return Some(Containment::Cgroup { base: base.into() });
        }
        let run_id = text.strip_prefix("marker:")?.strip_suffix('/')?;
        Some(Containment::Marker {
            run_id: run_id.into(),
        })
    }

    /// The tree of `agent`: its cgroup (created empty, after killing what a
    /// previous run left in it) or its tag.
    pub fn tree(&self, agent: &str) -> Tree {
        match self {
            Containment::Cgroup { base } => {
                // Prefixed: an agent may be called `cgroup.procs`.
                let path = base.join(format!("agent-{agent}"));
                if path.exists() {
                    kill_cgroup(&path);
                } else if let Err(error) = std::fs::create_dir(&path) {
                    tracing::warn!(path = %path.display(), %error, "cannot create the agent's cgroup");
                }
                Tree::Cgroup(path)
            }
            Containment::Marker { run_id } => Tree::Marker(format!("{run_id}/{agent}")),
        }
    }

    /// Kills every process of every agent (the keeper, `up` at its end)
    /// and removes the cgroups.
    pub fn kill_all(&self) {
        match self {
            Containment::Cgroup { base } => {
                let Ok(entries) = std::fs::read_dir(base) else {
                    return;
                };
                for entry in entries.flatten() {
                    if entry.path().is_dir() {
                        kill_cgroup(&entry.path());
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
                let _ = std::fs::remove_dir(base);
            }
            Containment::Marker { run_id } => {
                kill_marked(&format!("{run_id}/"), Signal::SIGKILL, true);
            }
        }
    }
}

impl Tree {
    /// What the child does between fork and exec to join this tree.
    pub fn joiner(&self) -> Joiner {
        match self {
            Tree::Cgroup(path) => Joiner {
                procs: CString::new(path.join("cgroup.procs").as_os_str().as_bytes()).ok(),
            },
            Tree::Marker(_) => Joiner { procs: None },
        }
    }

    /// The agent's cgroup directory, for a cgroup tree.
    pub fn cgroup(&self) -> Option<&Path> {
        match self {
            Tree::Cgroup(path) => Some(path),
            Tree::Marker(_) => None,
        }
    }

    /// The environment the child gets for this tree.
    pub fn environment(&self) -> Option<(String, String)> {
        match self {
            Tree::Cgroup(_) => None,
            Tree::Marker(tag) => Some((TAG_VARIABLE.into(), tag.clone())),
        }
    }

    /// The processes in the tree now.
    pub fn members(&self) -> Vec<u32> {
        match self {
            Tree::Cgroup(path) => cgroup_members(path),
            Tree::Marker(tag) => marked(tag, false),
        }
    }

    /// Sends `signal` to every process of the tree.
    pub fn signal(&self, signal: Signal) {
        for pid in self.members() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGKILLs every process of the tree (and removes an emptied cgroup).
    pub fn kill(&self) {
        match self {
            Tree::Cgroup(path) => {
                kill_cgroup(path);
                let _ = std::fs::remove_dir(path);
            }
            Tree::Marker(tag) => kill_marked(tag, Signal::SIGKILL, false),
        }
    }

    /// The tree of the agent whose leader is `pid`, from `/proc/<pid>`
    /// alone (for `status`, which does not know the containment): its
    /// cgroup when that is a `supervisor-*` agent cgroup, else its tag.
    pub fn of_leader(pid: u32) -> Option<Tree> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        if let Some(relative) = text.lines().find_map(|line| line.strip_prefix("0::"))
            && let Some(parent) = Path::new(relative).parent()
            && parent
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("supervisor-"))
            && let Ok(mount) = cgroup2_mount()
        {
            return Some(Tree::Cgroup(mount.join(relative.trim_start_matches('/'))));
        }
        environ_tag(pid).map(Tree::Marker)
    }

    /// The tree `pid` belongs to, read from `/proc/<pid>` (its cgroup under
    /// `containment`'s base, or its tag); `None` for a process of neither.
    pub fn of_process(containment: &Containment, pid: u32) -> Option<Tree> {
        match containment {
            Containment::Cgroup { base } => {
                let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
                let relative = text.lines().find_map(|line| line.strip_prefix("0::"))?;
                let name = base.file_name()?.to_str()?;
                let (_, agent) = relative.split_once(&format!("/{name}/"))?;
                Some(Tree::Cgroup(base.join(agent)))
            }
            Containment::Marker { run_id } => {
                let tag = environ_tag(pid)?;
                tag.starts_with(&format!("{run_id}/"))
                    .then_some(Tree::Marker(tag))
            }
        }
    }
}

/// Joins a cgroup between fork and exec; holds its path ready-made,
/// because nothing may be allocated in the child.
#[derive(Debug, Clone)]
pub struct Joiner {
    /// The agent cgroup's `cgroup.procs` path; `None` for a marker tree
    /// (nothing to join: the marker is in the environment).
    procs: Option<CString>,
}

impl Joiner {
    /// Writes `0` (this process) to the cgroup's `cgroup.procs`. Only
    /// async-signal-safe calls (open, write, close).
    pub fn join(&self) -> std::io::Result<()> {
        let Some(procs) = &self.procs else {
            return Ok(());
        };
        // SAFETY: a valid NUL-terminated path; the fd is closed below.
        let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: writes one byte from a static buffer to an fd we own.
        let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        let error = std::io::Error::last_os_error();
        // SAFETY: closes the fd opened above.
        unsafe { libc::close(fd) };
        if written == 1 { Ok(()) } else { Err(error) }
    }
}

/// Creates `<cgroup2 mount><own cgroup>/supervisor-<pid>-<n>` and checks that a
/// process can be moved into a child of it (this process's own thread is
/// not: a throwaway child is).
fn cgroup_base() -> std::io::Result<PathBuf> {
    let mount = cgroup2_mount()?;
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    let relative = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| std::io::Error::other("no cgroup v2 line in /proc/self/cgroup"))?;
    // A count, so that several spawners of one process (tests) never share one.
    /// Spawners made by this process so far: numbers their base cgroups.
    static SPAWNERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let count = SPAWNERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = mount
        .join(relative.trim_start_matches('/'))
        .join(format!("supervisor-{}-{count}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    // Try it: a short-lived child joins a probe cgroup.
    let probe = base.join("probe");
    let result = (|| {
        std::fs::create_dir_all(&probe)?;
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let moved = std::fs::OpenOptions::new()
            .write(true)
            .open(probe.join("cgroup.procs"))
            .and_then(|mut file| file.write_all(child.id().to_string().as_bytes()));
        let _ = child.kill();
        let _ = child.wait();
        moved
    })();
    let _ = std::fs::remove_dir(&probe);
    if let Err(error) = result {
        let _ = std::fs::remove_dir(&base);
        return Err(error);
    }
    Ok(base)
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid systems).
fn cgroup2_mount() -> std::io::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    mounts
        .lines()
        .find_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            let mount_point = before.split_whitespace().nth(4)?;
            (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .ok_or_else(|| std::io::Error::other("cgroup v2 is not mounted"))
}

/// The pids in the cgroup now (`cgroup.procs`); empty when it is gone.
fn cgroup_members(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Kills everything in the cgroup and waits (bounded) until it is empty.
fn kill_cgroup(path: &Path) {
    let killed = std::fs::write(path.join("cgroup.kill"), "1").is_ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let members = cgroup_members(path);
        if members.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        if !killed {
            // Before Linux 5.14: one by one, again for those forked meanwhile.
            for pid in members {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The value of `SUPERVISOR_AGENT_TAG` in `/proc/<pid>/environ`.
fn environ_tag(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{TAG_VARIABLE}=");
    environ.split(|byte| *byte == 0).find_map(|entry| {
        entry
            .strip_prefix(prefix.as_bytes())
            .and_then(|value| std::str::from_utf8(value).ok())
            .map(str::to_string)
    })
}

/// Live processes whose tag is `tag` (or starts with it, with `prefix`).
fn marked(tag: &str, prefix: bool) -> Vec<u32> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            environ_tag(*pid).is_some_and(|found| match prefix {
                true => found.starts_with(tag),
                false => found == tag,
            })
        })
        .collect()
}

/// Signals the marked processes until none is left (bounded): a process
/// may fork between the scan and the kill.
fn kill_marked(tag: &str, signal: Signal, prefix: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        // Zombies keep their environ readable only until reaped; a killed
        // process that is a zombie is done.
        let members: Vec<u32> = marked(tag, prefix)
            .into_iter()
            .filter(|pid| !is_zombie(*pid))
            .collect();
        if members.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        for pid in members {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), signal);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Exited but not reaped (or already gone): nothing left to kill.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keeper_description_round_trips() {
        for containment in [
            Containment::Cgroup {
                base: "/sys/fs/cgroup/a/supervisor-1".into(),
            },
            Containment::Marker {
                run_id: "12-345".into(),
            },
        ] {
            assert_eq!(
                Containment::parse(&containment.describe()),
                Some(containment)
            );
        }
    }

    #[test]
    fn a_marked_daemon_is_found_and_killed() {
        let containment = Containment::Marker {
            run_id: format!("test-{}", std::process::id()),
        };
        let tree = containment.tree("daemon");
        let (key, value) = tree.environment().unwrap();
        let mut child = std::process::Command::new("setsid")
            .args(["sleep", "60"])
            .env(key, value)
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !tree.members().contains(&pid) {
            assert!(std::time::Instant::now() < deadline, "not found");
            std::thread::sleep(Duration::from_millis(10));
        }
        tree.kill();
        let _ = child.wait();
        assert!(!tree.members().contains(&pid));
    }
}
