//! Spawning, signalling and reaping agent processes.
//!
//! Owns the OS side of an agent run: the [`Spawner`] trait the supervisor
//! calls (so tests can use a fake one with a paused clock), the real
//! [`ProcessSpawner`], and the output pump that writes each agent's
//! stdout/stderr to its rotated log file ([`log`]) and queues it for the
//! console ([`console`], bounded: a stalled console drops lines, counted).
//!
//! Does not own any decision: when to start, restart or stop an agent is the
//! supervisor's (`crate::supervisor`); this module only reports what happened
//! through a [`Reporter`].
//!
//! Every child gets its own process group (so a signal reaches its
//! grandchildren too), `PR_SET_PDEATHSIG(SIGKILL)` (so it dies with the
//! supervisor), `kill_on_drop`, and joins its agent's tree ([`tree`]: a
//! cgroup, else an environment marker), which also holds the processes that
//! leave the group (daemons); signals go to the group and to those, and the
//! whole tree is killed when the leader exits. Children are spawned from a few long-lived
//! threads, never from `spawn_blocking`: PDEATHSIG fires when the *thread* that
//! forked the child exits, and blocking-pool threads idle out (see
//! `shared/notes/crates.md`). When a child's leader exits, the rest of its
//! process group is killed so no grandchild is left behind.
//!
//! With cgroup containment a child is cloned straight into its cgroup
//! ([`clone3`]: no migration, and the spawner thread does not wait for the
//! exec). Moving a process into a cgroup after an idle spell waits for an
//! RCU grace period in the kernel (about 10 ms here, `cargo bench --bench
//! spawn`, "spaced"): a cost every hop of a dependency chain would pay. On
//! kernels without `CLONE_INTO_CGROUP`, with marker containment, or with
//! `SUPERVISOR_SPAWN=fork` ([`SPAWN_VARIABLE`]), a child is forked by
//! `tokio::process::Command` and joins its cgroup between fork and exec
//! ([`tree::Joiner`]). Which one is used is logged at debug level.

pub mod clone3;
pub mod console;
pub mod keeper;
pub mod log;
pub mod ports;
pub mod sample;
pub mod tree;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::mpsc;

pub use log::{Console, LogTarget};
pub use sample::{ResourceSample, TreeSampler};

/// How a process ended.
///
/// ```
/// use supervisor::process::Termination;
///
/// assert_eq!(Termination::Code(1).to_string(), "exited with code 1");
/// assert_eq!(Termination::Signaled(9).to_string(), "killed by SIGKILL");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal (number).
    Signaled(i32),
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Termination::Code(code) => write!(f, "exited with code {code}"),
            Termination::Signaled(number) => match Signal::try_from(*number) {
                Ok(signal) => write!(f, "killed by {}", signal.as_str()),
                Err(_) => write!(f, "killed by signal {number}"),
            },
        }
    }
}

impl From<std::process::ExitStatus> for Termination {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Termination::Code(code),
            (None, Some(signal)) => Termination::Signaled(signal),
            // Neither a code nor a signal cannot happen on Unix for a reaped child.
            (None, None) => Termination::Code(-1),
        }
    }
}

/// What happened to one spawned process, in this order: `Spawned` or
/// `SpawnFailed`, then (after `Spawned`) exactly one `Exited`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    /// The process runs (its `exec` succeeded).
    Spawned {
        /// Its process id, which is also its process group id.
        pid: u32,
    },
    /// The process could not be started; nothing else follows.
    SpawnFailed {
        /// Why, naming the agent and program (from [`SpawnError`]).
        error: String,
    },
    /// Just before `Exited`, when the process printed anything: its last
    /// line (of stderr, else of stdout).
    LastLine {
        /// The line, without its newline.
        line: String,
    },
    /// The process was reaped (and the rest of its group and tree killed).
    Exited {
        /// Its exit code or signal.
        termination: Termination,
    },
}

/// Called from the spawner's thread for each [`ProcessEvent`] of one run.
pub type Reporter = Box<dyn Fn(ProcessEvent) + Send + Sync>;

/// Everything needed to start one run of an agent.
#[derive(Debug, Clone, Default)]
pub struct SpawnSpec {
    /// The agent name (for logs and the console prefix).
    pub name: String,
    /// The program and its arguments; never empty.
    pub argv: Vec<String>,
    /// Run `argv[0]` through `sh -c`.
    pub shell: bool,
    /// The working directory; `None` inherits the supervisor's.
    pub cwd: Option<PathBuf>,
    /// Added to the supervisor's own environment, in order.
    pub env: Vec<(String, String)>,
    /// Where stdout/stderr are written; `None` discards them (unless `console`).
    pub log: Option<LogTarget>,
    /// Copy every output line to the console with a `name |` prefix.
    pub console: Option<Console>,
}

/// What can go wrong starting or signalling a process. An agent that
/// starts and then fails is not an error here: that is a
/// [`ProcessEvent::Exited`].
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// `fork`/`exec` failed (program not found, not executable, bad `cwd`).
    #[error("cannot start agent `{agent}` ({program}): {source}")]
    Start {
        /// The agent's name.
        agent: String,
        /// `argv[0]` as given.
        program: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `killpg` failed; `ESRCH` (the group is gone) is not reported as one.
    #[error("cannot signal process group {pid} with {signal}: {source}")]
    Signal {
        /// The process group (its leader's pid).
        pid: u32,
        /// The signal that was to be sent.
        signal: Signal,
        /// The error of `killpg`.
        source: nix::Error,
    },
    /// The spawner's threads have ended (the spawner is shutting down).
    #[error("the spawner thread is gone")]
    SpawnerGone,
    /// A spawner thread could not be created.
    #[error("cannot start the spawner thread: {0}")]
    Thread(std::io::Error),
}

/// Starts and signals agent processes. The supervisor loop is its only user.
pub trait Spawner: Send + 'static {
    /// Starts a process; everything that happens to it goes to `report`. Must
    /// not block: the real spawner hands the request to its own thread.
    fn spawn(&mut self, spec: SpawnSpec, report: Reporter);

    /// Sends `signal` to the whole process group led by `pid`.
    fn signal_group(&mut self, pid: u32, signal: Signal) -> Result<(), SpawnError>;
}

/// Chooses how children are started: `fork` forks, joins the cgroup and
/// execs; unset or anything else clones them into their cgroup where the
/// kernel can.
pub const SPAWN_VARIABLE: &str = "SUPERVISOR_SPAWN";

/// How a spawner starts children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnMethod {
    /// `clone3(CLONE_INTO_CGROUP)` for cgroup trees, falling back to
    /// [`SpawnMethod::Fork`] when the kernel cannot (and for marker trees).
    Clone3,
    /// `tokio::process::Command`; the child joins its cgroup itself.
    Fork,
}

impl SpawnMethod {
    /// From [`SPAWN_VARIABLE`]: `fork` is [`SpawnMethod::Fork`], anything
    /// else [`SpawnMethod::Clone3`].
    pub fn from_environment() -> SpawnMethod {
        match std::env::var(SPAWN_VARIABLE).as_deref() {
            Ok("fork") => SpawnMethod::Fork,
            _ => SpawnMethod::Clone3,
        }
    }
}

/// Set once `clone3` said it cannot clone into a cgroup on this kernel:
/// every later spawn goes straight to the fallback.
static CLONE3_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// A request for the spawner thread.
struct Request {
    /// What to start.
    spec: SpawnSpec,
    /// Dropped unanswered (the thread is gone), it reports a spawn failure.
    report: RunReport,
}

/// How many spawner threads fork children. `fork`+`exec` of one child blocks
/// its thread until the exec happened (a few ms), so a burst of agents (a
/// whole level becoming startable at once) is spread over several threads.
const SPAWNER_THREADS: usize = 4;

/// The real [`Spawner`]: forks from a few dedicated, long-lived threads,
/// which also reap the children and pump their output.
pub struct ProcessSpawner {
    /// One sender per spawner thread, which holds the receiving end;
    /// dropping them ends the threads, which kill whatever children are
    /// still running.
    requests: Vec<mpsc::UnboundedSender<Request>>,
    /// Round-robin index into `requests`.
    next: usize,
    /// Joined on drop so every child is reaped before the supervisor returns.
    threads: Vec<std::thread::JoinHandle<()>>,
    /// How agent trees are found; its cgroups are removed on drop.
    containment: std::sync::Arc<tree::Containment>,
}

/// What each spawner thread needs besides its requests.
#[derive(Clone)]
struct ThreadContext {
    /// Reports process groups to the keeper, when there is one.
    keeper: Option<keeper::KeeperLink>,
    /// Shared with the spawner: where each child's tree is made.
    containment: std::sync::Arc<tree::Containment>,
    /// How children are started.
    method: SpawnMethod,
}

impl ProcessSpawner {
    /// Starts the spawner threads, without a keeper: if the supervisor is
    /// SIGKILLed, only each child's PDEATHSIG stops it, and the rest of its
    /// process group may outlive it. `up` uses
    /// [`ProcessSpawner::start_with_keeper`].
    pub fn start() -> Result<ProcessSpawner, SpawnError> {
        ProcessSpawner::start_with_keeper(None)
    }

    /// Like [`ProcessSpawner::start`], telling `keeper` about every process
    /// group so it can kill them if the supervisor dies.
    pub fn start_with_keeper(
        keeper: Option<keeper::KeeperLink>,
    ) -> Result<ProcessSpawner, SpawnError> {
        ProcessSpawner::start_with(keeper, SpawnMethod::from_environment())
    }

    /// Like [`ProcessSpawner::start_with_keeper`], starting children by
    /// `method` whatever [`SPAWN_VARIABLE`] says.
    pub fn start_with(
        keeper: Option<keeper::KeeperLink>,
        method: SpawnMethod,
    ) -> Result<ProcessSpawner, SpawnError> {
        let containment = std::sync::Arc::new(tree::Containment::detect());
        tracing::debug!(containment = %containment.describe(), ?method, "agent process trees");
        if let Some(keeper) = &keeper {
            keeper.send(keeper::GroupChanged::Contained((*containment).clone()));
        }
        let context = ThreadContext {
            keeper,
            containment: containment.clone(),
            method,
        };
        let mut spawner = ProcessSpawner {
            requests: Vec::new(),
            next: 0,
            threads: Vec::new(),
            containment,
        };
        for index in 0..SPAWNER_THREADS {
            let (requests, receiver) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(SpawnError::Thread)?;
            let thread = std::thread::Builder::new()
                .name(format!("agent-spawner-{index}"))
                .spawn({
                    let context = context.clone();
                    move || runtime.block_on(run_spawner(receiver, context))
                })
                .map_err(SpawnError::Thread)?;
            spawner.requests.push(requests);
            spawner.threads.push(thread);
        }
        Ok(spawner)
    }
}

/// Ends the spawner threads and waits for them: each kills (group and tree)
/// every child still running and reaps it; then every process of every
/// agent tree is killed and the cgroups are removed. Blocks the dropping
/// thread until then.
impl Drop for ProcessSpawner {
    fn drop(&mut self) {
        // Closing the channels ends each `run_spawner`; the joins wait for them.
        self.requests.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.containment.kill_all();
    }
}

impl Spawner for ProcessSpawner {
    /// Hands the request to the next spawner thread, round-robin; returns at
    /// once. With the threads gone, `report` gets
    /// [`ProcessEvent::SpawnFailed`] ([`SpawnError::SpawnerGone`]) right here.
    fn spawn(&mut self, spec: SpawnSpec, report: Reporter) {
        self.next = (self.next + 1) % self.requests.len();
        let report = RunReport::new(report);
        if let Err(mpsc::error::SendError(request)) =
            self.requests[self.next].send(Request { spec, report })
        {
            request.report.send(ProcessEvent::SpawnFailed {
                error: SpawnError::SpawnerGone.to_string(),
            });
        }
    }

    /// The group, then the processes of the agent's tree that left it.
    fn signal_group(&mut self, pid: u32, signal: Signal) -> Result<(), SpawnError> {
        signal_group(pid, signal)?;
        // Its daemons (processes that left the group): finding them may scan
        // all of /proc (the marker), so not on the caller's (the
        // supervisor loop's) thread.
        let containment = self.containment.clone();
        let reach_escaped = move || {
            if let Some(tree) = tree::Tree::of_process(&containment, pid) {
                for member in escaped(&tree, pid) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(member as i32), signal);
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(reach_escaped)),
            Err(_) => reach_escaped(),
        }
        Ok(())
    }
}

/// The processes of `tree` outside process group `pgid` (daemons).
pub fn escaped(tree: &tree::Tree, pgid: u32) -> Vec<u32> {
    tree.members()
        .into_iter()
        .filter(|member| {
            nix::unistd::getpgid(Some(Pid::from_raw(*member as i32)))
                .is_ok_and(|group| group.as_raw() as u32 != pgid)
        })
        .collect()
}

/// `killpg(pid, signal)`; a group that is already gone is not an error.
pub fn signal_group(pid: u32, signal: Signal) -> Result<(), SpawnError> {
    let group = Pid::from_raw(pid as i32);
    match nix::sys::signal::killpg(group, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(SpawnError::Signal {
            pid,
            signal,
            source,
        }),
    }
}

/// The spawner thread's body: one task per child (wait + output), until the
/// request channel closes and every child has been reaped.
async fn run_spawner(mut requests: mpsc::UnboundedReceiver<Request>, context: ThreadContext) {
    let children = tokio_util::task::TaskTracker::new();
    // Cancelled when the supervisor is gone: children still running then were
    // never stopped (the supervisor unwound from a panic), so they are killed
    // rather than waited for, which would block the supervisor's exit forever.
    let abandoned = tokio_util::sync::CancellationToken::new();
    while let Some(Request { spec, report }) = requests.recv().await {
        // A panic here must not end the thread (its other children would
        // lose their reaper): it becomes this run's spawn failure.
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            start(&spec, &context.containment, context.method)
        }));
        match started {
            Ok(Ok((child, tree))) => {
                let guard = GroupGuard {
                    pid: None,
                    keeper: context.keeper.clone(),
                    tree: Some(tree),
                };
                children.spawn(supervise_child(
                    child,
                    spec,
                    report,
                    guard,
                    abandoned.child_token(),
                ));
            }
            Ok(Err(error)) => report.send(ProcessEvent::SpawnFailed {
                error: error.to_string(),
            }),
            Err(panic) => {
                let error = format!(
                    "the spawner panicked starting it: {}",
                    panic_message(panic.as_ref())
                );
                tracing::error!(agent = %spec.name, "{error}");
                report.send(ProcessEvent::SpawnFailed { error });
            }
        }
    }
    // The supervisor is gone; children it did not stop die with their group.
    abandoned.cancel();
    children.close();
    children.wait().await;
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// One run's [`Reporter`], which keeps the promise of [`ProcessEvent`]: the
/// run ends with `SpawnFailed` or `Exited`, even when the code watching it
/// unwinds from a panic (the task is dropped): then `drop` sends the missing
/// last event, so the supervisor never waits for a run nobody watches.
struct RunReport {
    /// The supervisor's callback for this run.
    report: Reporter,
    /// `Spawned` was sent and the last event was not.
    spawned: bool,
    /// The last event was sent.
    finished: bool,
}

impl RunReport {
    /// A report of a run that has not started.
    fn new(report: Reporter) -> RunReport {
        RunReport {
            report,
            spawned: false,
            finished: false,
        }
    }

    /// Sends the last event of the run (consumes the report, so nothing
    /// can follow it).
    fn send(mut self, event: ProcessEvent) {
        self.send_ref(event);
    }

    /// Sends an event and records how far the run got, for `Drop`.
    fn send_ref(&mut self, event: ProcessEvent) {
        match event {
            ProcessEvent::Spawned { .. } => self.spawned = true,
            ProcessEvent::SpawnFailed { .. } | ProcessEvent::Exited { .. } => self.finished = true,
            ProcessEvent::LastLine { .. } => {}
        }
        (self.report)(event);
    }
}

impl Drop for RunReport {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let event = if self.spawned {
            tracing::error!("an agent's watcher ended without its exit; its group was killed");
            ProcessEvent::Exited {
                termination: Termination::Code(-1),
            }
        } else {
            ProcessEvent::SpawnFailed {
                error: "the spawner ended before starting it".into(),
            }
        };
        self.send_ref(event);
    }
}

/// Kills the process group and the rest of the agent's tree when dropped:
/// after the leader exits (grandchildren and daemons left behind) and when
/// the task is dropped with the child still running. Then tells the keeper
/// the group is gone.
struct GroupGuard {
    /// The group, once the child has a pid.
    pid: Option<u32>,
    /// Told when the group is gone; `None` without a keeper.
    keeper: Option<keeper::KeeperLink>,
    /// The agent's cgroup or marker, for the processes that left the group.
    tree: Option<tree::Tree>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = signal_group(pid, Signal::SIGKILL);
        }
        if let Some(tree) = &self.tree {
            tree.kill();
        }
        if let (Some(pid), Some(keeper)) = (self.pid, &self.keeper) {
            keeper.send(keeper::GroupChanged::Reaped(pid));
        }
    }
}

/// One run, from spawn to the last event: reports `Spawned`, pumps the
/// output to the log and console while waiting for the exit, kills the
/// group and tree (`guard`), then reports the last line and `Exited`. When
/// `abandoned` fires (the spawner is going away with the child still
/// running) the group is SIGKILLed instead of waited for.
async fn supervise_child(
    mut child: Child,
    spec: SpawnSpec,
    mut report: RunReport,
    mut guard: GroupGuard,
    abandoned: tokio_util::sync::CancellationToken,
) {
    if let Err(error) = child.exec_result(&spec).await {
        report.send(ProcessEvent::SpawnFailed {
            error: error.to_string(),
        });
        return;
    }
    let Some(pid) = child.id() else {
        report.send(ProcessEvent::SpawnFailed {
            error: "the child exited before it got a pid".into(),
        });
        return;
    };
    if let Some(keeper) = &guard.keeper {
        keeper.send(keeper::GroupChanged::Started(pid));
    }
    guard.pid = Some(pid);
    report.send_ref(ProcessEvent::Spawned { pid });
    // Drained concurrently with the wait, so a chatty child never blocks on a full pipe.
    let tail = std::sync::Arc::new(std::sync::Mutex::new(log::Tail::default()));
    let (stdout, stderr) = child.take_output();
    let mut output = tokio::spawn(log::pump(stdout, stderr, &spec, tail.clone()));
    let status = tokio::select! {
        status = child.wait() => status,
        () = abandoned.cancelled() => {
            let _ = signal_group(pid, Signal::SIGKILL);
            child.wait().await
        }
    };
    drop(guard);
    let termination = status.unwrap_or(Termination::Code(-1));
    // Its last words: what is still in the pipes comes within moments (the
    // group is dead); a grandchild holding them open costs at most 50 ms.
    let drained = tokio::time::timeout(std::time::Duration::from_millis(50), &mut output)
        .await
        .is_ok();
    if let Some(line) = tail.lock().ok().and_then(|tail| tail.last()) {
        report.send_ref(ProcessEvent::LastLine { line });
    }
    report.send(ProcessEvent::Exited { termination });
    // The group is dead, so the pipes reach end of file soon, unless a
    // grandchild left the group and kept them open: do not wait for it.
    if !drained
        && tokio::time::timeout(std::time::Duration::from_secs(1), &mut output)
            .await
            .is_err()
    {
        output.abort();
    }
}

/// A started child, by either method.
enum Child {
    /// Forked by `tokio::process::Command` (it has exec'd already).
    Forked(tokio::process::Child),
    /// Cloned into its cgroup; whether it exec'd is read by
    /// [`Child::exec_result`].
    Cloned(clone3::Child),
}

impl Child {
    /// Waits until the child exec'd; an error names the agent and program
    /// (the child is reaped then).
    async fn exec_result(&mut self, spec: &SpawnSpec) -> Result<(), SpawnError> {
        match self {
            Child::Forked(_) => Ok(()),
            Child::Cloned(child) => {
                child
                    .exec_result(spec.cwd.as_deref())
                    .await
                    .map_err(|source| SpawnError::Start {
                        agent: spec.name.clone(),
                        program: program(spec).to_string(),
                        source,
                    })
            }
        }
    }

    /// Its pid; `None` once a forked child was reaped.
    fn id(&self) -> Option<u32> {
        match self {
            Child::Forked(child) => child.id(),
            Child::Cloned(child) => Some(child.id()),
        }
    }

    /// The read ends of its stdout and stderr, for the pump.
    fn take_output(&mut self) -> (Option<OwnedFd>, Option<OwnedFd>) {
        /// A tokio pipe end as a plain fd; one that cannot be is not read.
        fn owned(stream: Option<std::io::Result<OwnedFd>>) -> Option<OwnedFd> {
            stream?
                .inspect_err(|error| tracing::warn!(%error, "cannot read agent output"))
                .ok()
        }
        match self {
            Child::Forked(child) => (
                owned(child.stdout.take().map(|stream| stream.into_owned_fd())),
                owned(child.stderr.take().map(|stream| stream.into_owned_fd())),
            ),
            Child::Cloned(child) => (child.stdout.take(), child.stderr.take()),
        }
    }

    /// Waits for it to exit and reaps it.
    async fn wait(&mut self) -> std::io::Result<Termination> {
        match self {
            Child::Forked(child) => child.wait().await.map(Termination::from),
            Child::Cloned(child) => child.wait().await,
        }
    }
}

/// The program that is exec'd: `sh` in shell mode, else `argv[0]`.
fn program(spec: &SpawnSpec) -> &str {
    match spec.shell {
        true => "sh",
        false => spec.argv.first().map(String::as_str).unwrap_or_default(),
    }
}

/// Starts one child with its own process group and PDEATHSIG, in its
/// agent's tree (returned): cloned into its cgroup when `method` and the
/// kernel allow, else forked.
fn start(
    spec: &SpawnSpec,
    containment: &tree::Containment,
    method: SpawnMethod,
) -> Result<(Child, tree::Tree), SpawnError> {
    // Validation rejects an empty command; a spawner must not trust that.
    let Some((first, rest)) = spec
        .argv
        .split_first()
        .filter(|(first, _)| !first.is_empty())
    else {
        return Err(SpawnError::Start {
            agent: spec.name.clone(),
            program: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the command is empty"),
        });
    };
    let program = program(spec);
    let tree = containment.tree(&spec.name);
    if method == SpawnMethod::Clone3
        && let Some(cgroup) = tree.cgroup()
        && !CLONE3_UNSUPPORTED.load(Ordering::Relaxed)
    {
        let failed = |source| SpawnError::Start {
            agent: spec.name.clone(),
            program: program.to_string(),
            source,
        };
        let argv: Vec<String> = match spec.shell {
            true => vec!["sh".into(), "-c".into(), first.clone()],
            false => spec.argv.clone(),
        };
        let prepared =
            clone3::Prepared::new(&argv, &spec.env, spec.cwd.as_deref()).map_err(failed)?;
        match clone3::spawn(&prepared, cgroup) {
            Ok(child) => {
                tracing::debug!(agent = %spec.name, pid = child.id(), "spawned by clone3 into its cgroup");
                return Ok((Child::Cloned(child), tree));
            }
            Err(clone3::Error::Failed(source)) => return Err(failed(source)),
            Err(clone3::Error::Unsupported(error)) => {
                CLONE3_UNSUPPORTED.store(true, Ordering::Relaxed);
                tracing::debug!(%error, "clone3 cannot clone into a cgroup here; forking and joining instead");
            }
        }
    }
    let mut command = tokio::process::Command::new(program);
    if spec.shell {
        command.arg("-c").arg(first);
    } else {
        command.args(rest);
    }
    command
        .envs(spec.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    if let Some((key, value)) = tree.environment() {
        command.env(key, value);
    }
    let joiner = tree.joiner();
    let parent = std::process::id() as i32;
    let open_files = crate::platform::agents_open_files();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid, setrlimit,
    // open/write/close).
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent may have died before prctl took effect.
            if nix::unistd::getppid().as_raw() != parent {
                return Err(std::io::Error::other("the supervisor exited during spawn"));
            }
            if let Some(limit) = &open_files {
                libc::setrlimit(libc::RLIMIT_NOFILE, limit);
            }
            // Before the agent runs, so nothing it starts is outside.
            joiner.join()
        });
    }
    let child = command.spawn().map_err(|source| SpawnError::Start {
        agent: spec.name.clone(),
        program: program.to_string(),
        source,
    })?;
    tracing::debug!(agent = %spec.name, pid = child.id(), "spawned by fork");
    Ok((Child::Forked(child), tree))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A reporter that records every event, and the shared list it records to.
    fn collect() -> (Reporter, Arc<Mutex<Vec<ProcessEvent>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        (
            Box::new(move |event| sink.lock().unwrap().push(event)),
            events,
        )
    }

    /// Polls `events` every 10 ms until at least `count` arrived and returns
    /// them; panics, listing what arrived, after 10 s.
    fn wait_for(events: &Arc<Mutex<Vec<ProcessEvent>>>, count: usize) -> Vec<ProcessEvent> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = events.lock().unwrap().clone();
            if seen.len() >= count {
                return seen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {count} events, got {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Both ways of starting a child; most tests below run on each.
    const METHODS: [SpawnMethod; 2] = [SpawnMethod::Clone3, SpawnMethod::Fork];

    /// Runs `spec` on a spawner using `method` until it exited; returns its
    /// events and the spawner's containment.
    fn run(method: SpawnMethod, spec: SpawnSpec) -> (Vec<ProcessEvent>, tree::Containment) {
        let mut spawner = ProcessSpawner::start_with(None, method).unwrap();
        let containment = (*spawner.containment).clone();
        let (report, events) = collect();
        spawner.spawn(spec, report);
        let mut seen = wait_for(&events, 1);
        if matches!(seen[0], ProcessEvent::Spawned { .. }) {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !seen
                .iter()
                .any(|event| matches!(event, ProcessEvent::Exited { .. }))
            {
                assert!(std::time::Instant::now() < deadline, "{seen:?}");
                std::thread::sleep(Duration::from_millis(10));
                seen = events.lock().unwrap().clone();
            }
        }
        (seen, containment)
    }

    #[test]
    fn a_child_is_spawned_reaped_and_reports_its_code() {
        for method in METHODS {
            let (seen, _) = run(
                method,
                SpawnSpec {
                    name: "t".into(),
                    argv: vec!["exit 7".into()],
                    shell: true,
                    ..Default::default()
                },
            );
            assert!(
                matches!(seen[0], ProcessEvent::Spawned { .. }),
                "{method:?}"
            );
            assert_eq!(
                seen[1],
                ProcessEvent::Exited {
                    termination: Termination::Code(7)
                },
                "{method:?}"
            );
        }
    }

    #[test]
    fn a_missing_program_is_a_spawn_failure() {
        for method in METHODS {
            let (seen, _) = run(
                method,
                SpawnSpec {
                    name: "t".into(),
                    argv: vec!["/nonexistent/x".into()],
                    ..Default::default()
                },
            );
            assert!(
                matches!(&seen[..], [ProcessEvent::SpawnFailed { error }] if error.contains("/nonexistent/x") && error.contains("No such file")),
                "{method:?}: {seen:?}"
            );
            let (seen, _) = run(
                method,
                SpawnSpec {
                    name: "t".into(),
                    argv: vec!["no-such-program-anywhere".into()],
                    ..Default::default()
                },
            );
            assert!(
                matches!(&seen[..], [ProcessEvent::SpawnFailed { error }] if error.contains("no-such-program-anywhere")),
                "{method:?}: {seen:?}"
            );
        }
    }

    #[test]
    fn a_bad_working_directory_is_a_spawn_failure() {
        for method in METHODS {
            let (seen, containment) = run(
                method,
                SpawnSpec {
                    name: "t".into(),
                    argv: vec!["true".into()],
                    cwd: Some("/nonexistent/dir".into()),
                    ..Default::default()
                },
            );
            let [ProcessEvent::SpawnFailed { error }] = &seen[..] else {
                panic!("{method:?}: {seen:?}");
            };
            assert!(error.contains("`t` (true)"), "{error}");
            // Cloned children say which step failed.
            if method == SpawnMethod::Clone3
                && matches!(containment, tree::Containment::Cgroup { .. })
            {
                assert!(error.contains("directory /nonexistent/dir"), "{error}");
            }
        }
    }

    /// Group, stdin, environment, working directory, PATH search with the
    /// child's PATH, signal mask and SIGPIPE, output to the log, and the
    /// cgroup the exec'd program finds itself in: the same both ways.
    #[test]
    fn a_child_gets_the_same_start_both_ways() {
        let directory = tempfile::tempdir().unwrap();
        let bin = directory.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let script = bin.join("report");
        // No `#!`: execve refuses it (ENOEXEC) and it runs through /bin/sh.
        // The signal state is read by the exec'd `grep` itself: the shell
        // blocks every signal for a moment while it forks.
        std::fs::write(
            &script,
            "echo \"pgid $(cut -d' ' -f5 /proc/$$/stat) pid $$\"\n\
             echo \"stdin $(readlink /proc/$$/fd/0)\"\n\
             echo \"value $ADDED_VALUE\"\n\
             echo \"cwd $(pwd)\"\n\
             echo 'to stderr' >&2\n\
             cat /proc/self/cgroup\n\
             exec grep -E '^(SigBlk|SigIgn)' /proc/self/status\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        for method in METHODS {
            let log = directory.path().join(format!("{method:?}.log"));
            let (seen, containment) = run(
                method,
                SpawnSpec {
                    name: "same".into(),
                    argv: vec!["report".into()],
                    env: vec![
                        ("ADDED_VALUE".into(), "forty two".into()),
                        ("PATH".into(), format!("{}:/usr/bin:/bin", bin.display())),
                    ],
                    cwd: Some(directory.path().to_path_buf()),
                    log: Some(LogTarget::new(log.clone())),
                    ..Default::default()
                },
            );
            assert_eq!(
                seen.last(),
                Some(&ProcessEvent::Exited {
                    termination: Termination::Code(0)
                }),
                "{method:?}: {seen:?}"
            );
            let text = std::fs::read_to_string(&log).unwrap();
            let has = |wanted: &str| {
                assert!(
                    text.lines().any(|line| line.ends_with(wanted)),
                    "{method:?}: no line ending with {wanted:?} in\n{text}"
                )
            };
            let ProcessEvent::Spawned { pid } = seen[0] else {
                panic!("{seen:?}")
            };
            has(&format!("pgid {pid} pid {pid}"));
            has("stdin /dev/null");
            has("value forty two");
            has(&format!("cwd {}", directory.path().display()));
            has("SigBlk:\t0000000000000000");
            // SIGPIPE (13, bit 12) back at its default, whatever else the
            // test runner's parent ignores.
            let ignored = text
                .lines()
                .find_map(|line| line.split_once("SigIgn:\t"))
                .and_then(|(_, mask)| u64::from_str_radix(mask.trim(), 16).ok())
                .expect("a SigIgn line");
            assert_eq!(
                ignored & (1 << 12),
                0,
                "{method:?}: SIGPIPE ignored\n{text}"
            );
            has("to stderr");
            match containment {
                tree::Containment::Cgroup { .. } => {
                    has("/agent-same");
                    // A kernel with CLONE_INTO_CGROUP (5.7+) took the
                    // clone3 path, not the fallback.
                    let release = nix::sys::utsname::uname().unwrap();
                    let version: Vec<u32> = release
                        .release()
                        .to_string_lossy()
                        .split(['.', '-'])
                        .take(2)
                        .map(|part| part.parse().unwrap_or(0))
                        .collect();
                    if version >= vec![5, 7] {
                        assert!(!CLONE3_UNSUPPORTED.load(Ordering::Relaxed));
                    }
                }
                tree::Containment::Marker { .. } => {
                    eprintln!("SKIPPED the cgroup check of {method:?}: no cgroup here")
                }
            }
        }
    }

    /// A child cloned into its cgroup holds its three streams and nothing
    /// else, not even a descriptor the supervisor holds without
    /// close-on-exec (as a shell's `exec 7</dev/null` before starting the
    /// supervisor leaves one): it gets a small table of its own. (The fork
    /// fallback passes such descriptors on, as `std::process` does.)
    #[test]
    fn a_cloned_child_holds_only_its_three_streams() {
        use std::os::fd::AsRawFd;
        let directory = tempfile::tempdir().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: F_DUPFD on an open descriptor: a new one, closed below.
        let stray = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD, 40) };
        assert!(stray >= 40);
        let log = directory.path().join("fds.log");
        let (seen, containment) = run(
            SpawnMethod::Clone3,
            SpawnSpec {
                name: "fds".into(),
                argv: vec!["ls".into(), "/proc/self/fd".into()],
                log: Some(LogTarget::new(log.clone())),
                ..Default::default()
            },
        );
        // SAFETY: closes the descriptor made above, which nothing else uses.
        unsafe { libc::close(stray) };
        if !matches!(containment, tree::Containment::Cgroup { .. }) {
            eprintln!("SKIPPED a_cloned_child_holds_only_its_three_streams: no cgroup here");
            return;
        }
        assert_eq!(
            seen.last(),
            Some(&ProcessEvent::Exited {
                termination: Termination::Code(0)
            }),
            "{seen:?}"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        let fds: Vec<&str> = text
            .lines()
            .filter_map(|line| line.rsplit(' ').next())
            .collect();
        // 3 is `ls`'s own handle on the directory it lists.
        assert_eq!(fds, ["0", "1", "2", "3"], "{text}");
    }

    #[test]
    fn an_empty_command_is_a_spawn_failure_not_a_panic() {
        let mut spawner = ProcessSpawner::start().unwrap();
        for (argv, shell) in [
            (vec![], false),
            (vec![String::new()], false),
            (vec![], true),
        ] {
            let (report, events) = collect();
            spawner.spawn(
                SpawnSpec {
                    name: "t".into(),
                    argv,
                    shell,
                    ..Default::default()
                },
                report,
            );
            let seen = wait_for(&events, 1);
            assert!(
                matches!(&seen[0], ProcessEvent::SpawnFailed { error } if error.contains("empty")),
                "{seen:?}"
            );
        }
        // The threads survived: a good command still runs.
        let (report, events) = collect();
        spawner.spawn(
            SpawnSpec {
                name: "t".into(),
                argv: vec!["true".into()],
                ..Default::default()
            },
            report,
        );
        assert_eq!(wait_for(&events, 2).len(), 2);
    }

    #[test]
    fn a_run_dropped_unanswered_still_ends_with_an_event() {
        let (report, events) = collect();
        drop(RunReport::new(report));
        assert!(matches!(
            events.lock().unwrap()[..],
            [ProcessEvent::SpawnFailed { .. }]
        ));
        let (report, events) = collect();
        let mut run = RunReport::new(report);
        run.send_ref(ProcessEvent::Spawned { pid: 1 });
        drop(run);
        assert_eq!(
            events.lock().unwrap()[1],
            ProcessEvent::Exited {
                termination: Termination::Code(-1)
            }
        );
    }

    #[test]
    fn dropping_the_spawner_kills_children_it_was_not_told_to_stop() {
        for method in METHODS {
            dropping_the_spawner_kills(method);
        }
    }

    fn dropping_the_spawner_kills(method: SpawnMethod) {
        let mut spawner = ProcessSpawner::start_with(None, method).unwrap();
        let (report, events) = collect();
        spawner.spawn(
            SpawnSpec {
                name: "t".into(),
                argv: vec!["sleep".into(), "300".into()],
                ..Default::default()
            },
            report,
        );
        wait_for(&events, 1);
        let started = std::time::Instant::now();
        drop(spawner);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            events.lock().unwrap()[1],
            ProcessEvent::Exited {
                termination: Termination::Signaled(9)
            }
        );
    }

    #[test]
    fn a_signal_reaches_the_group() {
        for method in METHODS {
            a_signal_reaches_the_group_by(method);
        }
    }

    fn a_signal_reaches_the_group_by(method: SpawnMethod) {
        let mut spawner = ProcessSpawner::start_with(None, method).unwrap();
        let (report, events) = collect();
        spawner.spawn(
            SpawnSpec {
                name: "t".into(),
                argv: vec!["sleep".into(), "30".into()],
                ..Default::default()
            },
            report,
        );
        let ProcessEvent::Spawned { pid } = wait_for(&events, 1)[0] else {
            panic!("not spawned")
        };
        spawner.signal_group(pid, Signal::SIGTERM).unwrap();
        let seen = wait_for(&events, 2);
        assert_eq!(
            seen[1],
            ProcessEvent::Exited {
                termination: Termination::Signaled(15)
            }
        );
    }
}
