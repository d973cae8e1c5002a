//! The keeper: a small helper process (`supervisor keeper`, hidden) that
//! outlives the supervisor just long enough to kill every agent process
//! group if the supervisor dies without stopping them (SIGKILL, a crash).
//!
//! PDEATHSIG only reaches an agent's direct child; the agent's own children
//! (grandchildren of the supervisor) would survive a SIGKILL of the
//! supervisor. The keeper closes that gap: the supervisor tells it each
//! group it starts (`+PGID`) and each group it has reaped (`-PGID`) over a
//! pipe; when the pipe reaches end of file (the supervisor is gone, however
//! it ended) the keeper SIGKILLs the groups it still knows, then every
//! process of the agents' trees (`=cgroup:..` or `=marker:..`, sent first;
//! see `super::tree`), which reaches daemons that left their group, and exits.
//!
//! Owns the keeper process and the pipe's writing end; the groups
//! themselves are started and killed by the spawner (`super`).

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use nix::sys::signal::Signal;

/// A change to the set of live agent process groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChanged {
    /// How every agent process is found (sent once, first): the keeper
    /// also kills the processes that left their group (`super::tree`).
    Contained(super::tree::Containment),
    /// A process group (its leader's pid) was spawned: kill it if the
    /// supervisor dies.
    Started(u32),
    /// That group was reaped by the spawner: forget it, so a later group
    /// reusing the number is never killed.
    Reaped(u32),
}

/// The supervisor's side of the keeper. Cloning the [`KeeperLink`] is how
/// spawner threads report groups.
pub struct Keeper {
    /// The keeper process; waited for on drop so it never lingers as a zombie.
    child: Child,
    /// The writer thread, which owns the pipe's writing end; it ends (closing
    /// the pipe, so the keeper exits) when every [`KeeperLink`] is dropped.
    writer: Option<std::thread::JoinHandle<()>>,
    /// Our own link, cloned for each spawner thread; dropped first on drop.
    link: Option<KeeperLink>,
}

/// Sends group changes to the keeper's writer thread; the receiving end is
/// held by that thread.
#[derive(Clone)]
pub struct KeeperLink(mpsc::Sender<GroupChanged>);

impl KeeperLink {
    /// Queues a change for the keeper; never blocks, never fails (a gone
    /// keeper has nothing left to kill).
    pub fn send(&self, change: GroupChanged) {
        // If the writer is gone the keeper is gone too: nothing to tell.
        let _ = self.0.send(change);
    }
}

impl Keeper {
    /// Starts `program keeper` (normally this very binary) in its own process
    /// group, so a Ctrl-C at the terminal does not reach it.
    pub fn start(program: &std::path::Path) -> std::io::Result<Keeper> {
        let mut child = Command::new(program)
            .arg("keeper")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let (sender, receiver) = mpsc::channel::<GroupChanged>();
        let writer = std::thread::Builder::new()
            .name("keeper-writer".into())
            .spawn(move || {
                for change in receiver {
                    let line = match change {
                        GroupChanged::Contained(containment) => {
                            format!("={}\n", containment.describe())
                        }
                        GroupChanged::Started(pgid) => format!("+{pgid}\n"),
                        GroupChanged::Reaped(pgid) => format!("-{pgid}\n"),
                    };
                    if stdin
                        .write_all(line.as_bytes())
                        .and_then(|()| stdin.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            })?;
        Ok(Keeper {
            child,
            writer: Some(writer),
            link: Some(KeeperLink(sender)),
        })
    }

    /// A link for a spawner thread.
    pub fn link(&self) -> KeeperLink {
        self.link.clone().expect("the link lives until drop")
    }
}

/// Drops our link and waits for the writer thread (it ends once every
/// spawner's link is gone too, closing the pipe), then reaps the keeper,
/// which exits on the closed pipe. Blocks until both are done.
impl Drop for Keeper {
    fn drop(&mut self) {
        // Our own link goes first; the writer ends once the spawner's are gone too.
        self.link = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let _ = self.child.wait();
    }
}

/// The body of `supervisor keeper`: track groups from stdin until end of
/// file, then kill the ones still alive.
pub fn run_keeper() {
    // Signals meant for the supervisor must not end the keeper early.
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGPIPE,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGALRM,
    ] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe {
            let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn);
        }
    }
    let mut groups: BTreeSet<u32> = BTreeSet::new();
    let mut containment = None;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if let Some(description) = line.strip_prefix('=') {
            containment = super::tree::Containment::parse(description);
            continue;
        }
        let (sign, number) = line.split_at(line.len().min(1));
        let Ok(pgid) = number.trim().parse::<u32>() else {
            continue;
        };
        match sign {
            "+" => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in groups {
        let _ = super::signal_group(pgid, Signal::SIGKILL);
    }
    // Then what left those groups (daemons), and the cgroups.
    if let Some(containment) = containment {
        containment.kill_all();
    }
}
