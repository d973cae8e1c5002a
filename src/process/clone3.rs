//! Spawning a child straight into its agent's cgroup with
//! `clone3(CLONE_INTO_CGROUP | CLONE_PIDFD)` (Linux 5.7+).
//!
//! Moving a running process into a cgroup (writing `cgroup.procs` between
//! fork and exec, the [`super::tree::Joiner`] path) takes the kernel's
//! `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace
//! period: ~10 ms per spawn on the test machine, serialised across every
//! spawner thread. A child cloned with `CLONE_INTO_CGROUP` is born in its
//! cgroup and never migrates. The `CLONE_PIDFD` file descriptor becomes
//! readable when the child exits (waited on with tokio's `AsyncFd`, reaped
//! with `waitid(P_PIDFD)`) and signals it without the risk of a reused pid.
//!
//! Everything the child needs (argv, envp, the program's path after a
//! `PATH` search with the child's `PATH`, the working directory, the pipes)
//! is prepared in the parent before `clone3`; between clone and exec the
//! child makes only async-signal-safe system calls (see [`child_after_clone`]).
//! An `exec` failure comes back through a `CLOEXEC` pipe as the errno and
//! the step that failed, as `std::process::Command` does, and is reported
//! when the spawner task reads it, so the spawner thread never blocks on a
//! child's exec.
//!
//! Owns: preparing, cloning and reaping one child. Does not own when to
//! use this path (`super::start` chooses it for cgroup containment and falls
//! back to `tokio::process::Command` when [`Error::Unsupported`]), the
//! process group's signals, or the output pump (`super::log`).

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::Termination;

/// `CLONE_INTO_CGROUP` from `linux/sched.h`: libc 0.2 declares it as a
/// (deprecated, overflowing) `c_int`; `clone_args.flags` is 64 bits.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of `linux/sched.h`, up to `cgroup`
/// (`CLONE_ARGS_SIZE_VER2`, 88 bytes). Declared here because libc only
/// has it for some targets; the layout is the kernel's ABI.
#[repr(C, align(8))]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The step of the child between clone and exec that failed, sent with its
/// errno through the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    /// `setpgid(0, 0)`.
    ProcessGroup = 1,
    /// `prctl(PR_SET_PDEATHSIG)` or the parent died meanwhile.
    DeathSignal = 2,
    /// `dup2` of stdin/stdout/stderr.
    Streams = 3,
    /// `chdir` to the agent's `cwd`.
    Directory = 4,
    /// `execve` itself.
    Exec = 5,
}

impl Step {
    /// The step whose number the child sent.
    fn from_number(number: u32) -> Option<Step> {
        [
            Step::ProcessGroup,
            Step::DeathSignal,
            Step::Streams,
            Step::Directory,
            Step::Exec,
        ]
        .into_iter()
        .find(|step| *step as u32 == number)
    }
}

/// Why a child was not started on this path.
#[derive(Debug)]
pub enum Error {
    /// The kernel cannot clone into a cgroup (`ENOSYS`: no `clone3`;
    /// `EINVAL`/`E2BIG`: no `CLONE_INTO_CGROUP`; `EOPNOTSUPP`/`EBUSY`: not
    /// into this cgroup): the caller falls back to fork, join and exec.
    Unsupported(std::io::Error),
    /// Starting failed for a reason the fallback would meet too (program
    /// not found, bad `cwd`, out of processes): the agent's spawn error.
    Failed(std::io::Error),
}

/// Everything the child needs, prepared in the parent: nothing is
/// allocated after `clone3`.
pub struct Prepared {
    /// The file to exec: `argv[0]` as given when it holds a `/`, else where
    /// the `PATH` search found it.
    path: CString,
    /// `argv`, with `argv[0]` as given.
    argv: Vec<CString>,
    /// `["/bin/sh", path, argv[1..]]`: a file without `#!` that `execve`
    /// refuses with `ENOEXEC` runs through the shell, as `execvp` does.
    shell_argv: Vec<CString>,
    /// `KEY=value` entries: the supervisor's environment with the agent's
    /// additions applied in order.
    envp: Vec<CString>,
    /// The working directory, when the agent has one.
    cwd: Option<CString>,
}

impl Prepared {
    /// Prepares `argv` (never empty) with the supervisor's environment plus
    /// `env`, to run in `cwd`. Fails naming what is wrong: a NUL byte, a
    /// program not found on the child's `PATH`.
    pub fn new(
        argv: &[String],
        env: &[(String, String)],
        cwd: Option<&Path>,
    ) -> std::io::Result<Prepared> {
        let mut environment: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        for (key, value) in env {
            match environment
                .iter_mut()
                .find(|(existing, _)| existing.as_os_str() == OsStr::new(key))
            {
                Some(entry) => entry.1 = value.into(),
                None => environment.push((key.into(), value.into())),
            }
        }
        let child_path = environment
            .iter()
            .find(|(key, _)| key == "PATH")
            .map(|(_, value)| value.clone());
        let program = argv.first().map(String::as_str).unwrap_or_default();
        let path = find_program(program, child_path.as_deref(), cwd)?;
        let argv = argv
            .iter()
            .map(|argument| c_string(argument.as_bytes()))
            .collect::<std::io::Result<Vec<_>>>()?;
        let path = c_string(path.as_os_str().as_bytes())?;
        let mut shell_argv = vec![c_string(b"/bin/sh")?, path.clone()];
        shell_argv.extend(argv.iter().skip(1).cloned());
        let envp = environment
            .into_iter()
            .map(|(key, value)| {
                let mut entry = key.into_vec();
                entry.push(b'=');
                entry.extend(value.into_vec());
                c_string(&entry)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let cwd = cwd
            .map(|cwd| c_string(cwd.as_os_str().as_bytes()))
            .transpose()?;
        Ok(Prepared {
            path,
            argv,
            shell_argv,
            envp,
            cwd,
        })
    }
}

/// A NUL-terminated copy of `bytes`; an inner NUL is an `InvalidInput` error.
fn c_string(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "`{}` contains a NUL byte",
                String::from_utf8_lossy(bytes).replace('\0', "\\0")
            ),
        )
    })
}

/// Where `execvp` would find `program` with `PATH` = `search` (glibc's
/// default `/bin:/usr/bin` when unset): `program` itself when it holds a
/// `/`. Relative entries are relative to `cwd`, where the child will be.
/// Not found is `ENOENT`; found only without execute permission, `EACCES`.
fn find_program(
    program: &str,
    search: Option<&OsStr>,
    cwd: Option<&Path>,
) -> std::io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let search = search.unwrap_or(OsStr::new("/bin:/usr/bin"));
    let mut denied = false;
    for directory in std::env::split_paths(search) {
        // An empty entry is the current directory.
        let candidate = directory.join(program);
        let seen_from_here = match (candidate.is_relative(), cwd) {
            (true, Some(cwd)) => cwd.join(&candidate),
            _ => candidate.clone(),
        };
        let Ok(metadata) = std::fs::metadata(&seen_from_here) else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        if nix::unistd::access(&seen_from_here, nix::unistd::AccessFlags::X_OK).is_ok() {
            return Ok(candidate);
        }
        denied = true;
    }
    Err(std::io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

/// A child started by [`spawn`]. Dropped before it was reaped, it is
/// SIGKILLed and reaped (`kill_on_drop`).
pub struct Child {
    /// Its pid, also its process group id.
    pid: u32,
    /// The `CLONE_PIDFD` descriptor: readable once it exited.
    pidfd: OwnedFd,
    /// The read end of its stdout, until taken for the pump.
    pub stdout: Option<OwnedFd>,
    /// The read end of its stderr, until taken for the pump.
    pub stderr: Option<OwnedFd>,
    /// The read end of the `CLOEXEC` error pipe, until [`Child::exec_result`]
    /// read it: end of file means the exec happened.
    exec_errors: Option<OwnedFd>,
    /// `waitid` collected it: nothing left to kill or reap.
    reaped: bool,
}

impl Child {
    /// Its pid (and process group id).
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits until the child has exec'd (`Ok`) or failed before that
    /// (`Err`: the errno, with the step for a `chdir` failure; the child has
    /// exited with 127 then and is reaped here).
    pub async fn exec_result(&mut self, cwd: Option<&Path>) -> std::io::Result<()> {
        let Some(errors) = self.exec_errors.take() else {
            return Ok(());
        };
        let mut report = [0u8; 8];
        let mut filled = 0;
        let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(errors)?;
        while filled < report.len() {
            pipe.readable().await?;
            match pipe.try_read(&mut report[filled..]) {
                Ok(0) => break,
                Ok(count) => filled += count,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        // The child wrote its report and exits: collect it.
        let _ = self.wait().await;
        let (errno, step) = report.split_at(4);
        let errno = i32::from_ne_bytes(errno.try_into().expect("4 bytes"));
        let step = u32::from_ne_bytes(step.try_into().expect("4 bytes"));
        let error = std::io::Error::from_raw_os_error(errno);
        Err(match (Step::from_number(step), cwd) {
            (Some(Step::Directory), Some(cwd)) => std::io::Error::new(
                error.kind(),
                format!("cannot change to directory {}: {error}", cwd.display()),
            ),
            (Some(Step::DeathSignal), _) => std::io::Error::new(
                error.kind(),
                format!("the supervisor exited during spawn or prctl failed: {error}"),
            ),
            (Some(Step::ProcessGroup), _) => {
                std::io::Error::new(error.kind(), format!("setpgid failed: {error}"))
            }
            (Some(Step::Streams), _) => std::io::Error::new(
                error.kind(),
                format!("cannot set up stdin/stdout/stderr: {error}"),
            ),
            _ => error,
        })
    }

    /// Waits for the child to exit and reaps it. Cancel safe: nothing is
    /// lost if the future is dropped before it completes.
    pub async fn wait(&mut self) -> std::io::Result<Termination> {
        if self.reaped {
            return Err(std::io::Error::other("the child was reaped already"));
        }
        // SAFETY: the pidfd is owned by `self`, which this borrow keeps
        // alive and unchanged until `watched` is dropped at the end of the call.
        let watched = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                self.pidfd.as_raw_fd(),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|error| error.into_parts().1)?;
        loop {
            let mut ready = watched.readable().await?;
            if let Some(termination) = reap(self.pidfd.as_raw_fd(), false)? {
                self.reaped = true;
                return Ok(termination);
            }
            ready.clear_ready();
        }
    }

    /// SIGKILLs the child (not its group) through its pidfd; nothing
    /// happens once it is reaped.
    fn kill(&self) {
        if self.reaped {
            return;
        }
        // SAFETY: a raw system call with a pidfd we own, a signal number and
        // null info; it reads no memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

impl Drop for Child {
    /// Kill on drop: SIGKILL, then reap; when the child has not exited yet
    /// (it cannot take long after SIGKILL, but must not block the spawner
    /// thread), a short-lived thread waits for it.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        self.kill();
        if let Ok(Some(_)) = reap(self.pidfd.as_raw_fd(), false) {
            return;
        }
        let Ok(pidfd) = self.pidfd.try_clone() else {
            return;
        };
        let _ = std::thread::Builder::new()
            .name("agent-reaper".into())
            .spawn(move || {
                let _ = reap(pidfd.as_raw_fd(), true);
            });
    }
}

/// `waitid(P_PIDFD, pidfd, WEXITED)`, without blocking unless `block`:
/// `None` when it has not exited yet.
fn reap(pidfd: RawFd, block: bool) -> std::io::Result<Option<Termination>> {
    loop {
        // SAFETY: zeroed siginfo_t is a valid value; waitid writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
        // SAFETY: `info` is a valid, writable siginfo_t; the pidfd is open.
        let result = unsafe { libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, flags) };
        if result < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        // SAFETY: after a successful waitid the pid and status fields of a
        // SIGCHLD siginfo are set (the pid is 0 when nothing had exited).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => Termination::Code(status),
            _ => Termination::Signaled(status),
        }));
    }
}

/// A `pipe2(O_CLOEXEC)`: (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// Starts `prepared` in its own process group inside the cgroup directory
/// `cgroup`, with stdin `/dev/null`, stdout and stderr piped, and
/// PDEATHSIG SIGKILL. Returns once cloned: whether the exec worked comes
/// from [`Child::exec_result`].
pub fn spawn(prepared: &Prepared, cgroup: &Path) -> Result<Child, Error> {
    let failed = Error::Failed;
    let cgroup_dir = std::fs::File::open(cgroup).map_err(failed)?;
    let null = std::fs::File::open("/dev/null").map_err(failed)?;
    let (stdout_read, stdout_write) = pipe().map_err(failed)?;
    let (stderr_read, stderr_write) = pipe().map_err(failed)?;
    let (errors_read, errors_write) = pipe().map_err(failed)?;
    // Raw pointer arrays for execve, NULL-terminated, built before the clone.
    let argv: Vec<*const libc::c_char> = pointers(&prepared.argv);
    let shell_argv: Vec<*const libc::c_char> = pointers(&prepared.shell_argv);
    let envp: Vec<*const libc::c_char> = pointers(&prepared.envp);
    let mut child = ChildSetup {
        parent: std::process::id() as libc::pid_t,
        null: null.as_raw_fd(),
        stdout: stdout_write.as_raw_fd(),
        stderr: stderr_write.as_raw_fd(),
        errors: errors_write.as_raw_fd(),
        keep_below: None,
        open_files: crate::platform::agents_open_files(),
        cwd: prepared.cwd.as_ref().map(|cwd| cwd.as_ptr()),
        path: prepared.path.as_ptr(),
        argv: argv.as_ptr(),
        shell_argv: shell_argv.as_ptr(),
        envp: envp.as_ptr(),
    };
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64 | CLONE_INTO_CGROUP,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    let pid = clone(&mut args, &mut child);
    if pid < 0 {
        let error = std::io::Error::from_raw_os_error(-pid as i32);
        return Err(match error.raw_os_error() {
            Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EOPNOTSUPP | libc::EBUSY) => {
                Error::Unsupported(error)
            }
            _ => Error::Failed(error),
        });
    }
    // SAFETY: on success the kernel stored a new pidfd, owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // The child holds its own copies; ours must close so end of file comes.
    drop((stdout_write, stderr_write, errors_write, null, cgroup_dir));
    Ok(Child {
        pid: pid as u32,
        pidfd,
        stdout: Some(stdout_read),
        stderr: Some(stderr_read),
        exec_errors: Some(errors_read),
        reaped: false,
    })
}

/// The child's stack on the shared-memory path: the child needs a few KiB
/// (`child_after_clone` and the libc wrappers it calls).
#[cfg(target_arch = "x86_64")]
const CHILD_STACK: usize = 64 * 1024;

/// Descriptor numbers a spawner thread keeps for a child's stdout, stderr
/// and error pipe while it is cloned; in between they hold `/dev/null`
/// (close-on-exec), like `null`, which is the child's stdin. They are low
/// numbers (from 10 up, taken when the thread first spawns), so the child
/// can take a descriptor table of its own holding only the descriptors
/// below them and the slots, instead of a copy of the whole table that
/// exec would then close one by one: with 500 agents the supervisor holds
/// thousands (pipes, logs, `/proc` files), and closing them was about 5 %
/// of all CPU while 500 agents started (`perf`, issue 18).
#[cfg(target_arch = "x86_64")]
struct Slots {
    /// stdin (always `/dev/null`), stdout, stderr, error pipe.
    fds: [OwnedFd; 4],
}

#[cfg(target_arch = "x86_64")]
impl Slots {
    /// Four close-on-exec copies of `/dev/null` at the lowest free numbers
    /// from 10 up (0-2 are the supervisor's own streams, and a few above
    /// stay free for whatever expects them).
    fn reserve() -> std::io::Result<Slots> {
        let null = std::fs::File::open("/dev/null")?;
        let slot = || -> std::io::Result<OwnedFd> {
            // SAFETY: F_DUPFD_CLOEXEC on an open descriptor; the result is
            // a new descriptor owned by nobody else.
            let fd = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: see above.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        Ok(Slots {
            fds: [slot()?, slot()?, slot()?, slot()?],
        })
    }

    /// Puts `setup`'s stdout, stderr and error pipe into the slots and
    /// points `setup` at the slots (`keep_below` past the highest); on an
    /// error `setup` is left as it was.
    fn fill(&self, setup: &mut ChildSetup) -> std::io::Result<()> {
        let [stdin, stdout, stderr, errors] = &self.fds;
        for (from, slot) in [
            (setup.stdout, stdout),
            (setup.stderr, stderr),
            (setup.errors, errors),
        ] {
            dup_into(from, slot)?;
        }
        setup.null = stdin.as_raw_fd();
        setup.stdout = stdout.as_raw_fd();
        setup.stderr = stderr.as_raw_fd();
        setup.errors = errors.as_raw_fd();
        setup.keep_below = self
            .fds
            .iter()
            .map(AsRawFd::as_raw_fd)
            .max()
            .map(|max| max + 1);
        Ok(())
    }

    /// Puts `/dev/null` back into the slots, dropping this side's copies
    /// of the child's pipe ends.
    fn empty(&self) {
        let [stdin, rest @ ..] = &self.fds;
        for slot in rest {
            let _ = dup_into(stdin.as_raw_fd(), slot);
        }
    }
}

/// `dup3(from, slot, O_CLOEXEC)`: `slot` now refers to what `from` does.
#[cfg(target_arch = "x86_64")]
fn dup_into(from: RawFd, slot: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: dup3 on descriptors this thread keeps open; replacing the
    // slot's old file is what the slot is for.
    if unsafe { libc::dup3(from, slot.as_raw_fd(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// This thread's slots; `None` when they could not be made (then the
    /// child gets a copy of the whole table).
    static SLOTS: Option<Slots> = Slots::reserve()
        .inspect_err(|error| tracing::debug!(%error, "no descriptor slots for spawning"))
        .ok();
}

/// Clones the child described by `args` and runs [`child_after_clone`]
/// with `setup` in it. Returns its pid, or `-errno`.
///
/// On x86_64 the child shares this address space (`CLONE_VM |
/// CLONE_VFORK`, as `posix_spawn` does) on a stack of its own, and this
/// thread waits until it has exec'd or exited. Nothing of the supervisor's
/// memory is copied, so a spawn costs the same however large the
/// supervisor is, and the supervisor's next writes to its own memory do
/// not copy pages the child still shared (a fork's cost, measured with
/// `perf` at 500 agents: half the spawner threads' CPU and a fifth of the
/// main threads'). With this thread's [`Slots`] the child also shares the
/// descriptor table until it takes a small one of its own. Elsewhere it is
/// a fork (no `CLONE_VM`).
#[cfg(target_arch = "x86_64")]
fn clone(args: &mut CloneArgs, setup: &mut ChildSetup) -> i64 {
    SLOTS.with(|slots| match slots {
        Some(slots) => match slots.fill(setup) {
            Ok(()) => {
                // The child shares this table until it takes its own.
                args.flags |= libc::CLONE_FILES as u64;
                let result = clone_sharing_memory(args, setup);
                slots.empty();
                result
            }
            // `setup` is unchanged then: the child copies the whole table.
            Err(error) => {
                tracing::debug!(%error, "cannot fill the descriptor slots");
                slots.empty();
                clone_sharing_memory(args, setup)
            }
        },
        None => clone_sharing_memory(args, setup),
    })
}

/// The x86_64 clone itself (see [`clone`]).
#[cfg(target_arch = "x86_64")]
fn clone_sharing_memory(args: &mut CloneArgs, setup: &ChildSetup) -> i64 {
    thread_local! {
        /// The child's stack, 16-byte aligned as the ABI wants it before a
        /// call; one per spawner thread (its children run one at a time,
        /// CLONE_VFORK), so spawning maps and unmaps nothing.
        static STACK: std::cell::RefCell<Vec<u128>> =
            std::cell::RefCell::new(vec![0; CHILD_STACK / 16]);
    }
    STACK.with_borrow_mut(|stack| clone_on_stack(args, setup, stack))
}

/// [`clone_sharing_memory`] with the child on `stack`.
#[cfg(target_arch = "x86_64")]
fn clone_on_stack(args: &mut CloneArgs, setup: &ChildSetup, stack: &mut [u128]) -> i64 {
    args.flags |= (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
    args.stack = stack.as_mut_ptr() as u64;
    args.stack_size = std::mem::size_of_val(stack) as u64;
    // No signal handler of the supervisor may run in the child, which
    // shares its memory: every signal stays blocked from before the clone
    // until the child has set the handlers it inherited back to default.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain signal-mask calls on sets on this stack.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
    }
    let result: i64;
    // SAFETY: the raw `clone3` system call. In the parent it only returns
    // the pid or `-errno` in rax (rcx and r11 are clobbered by `syscall`).
    // The child starts on `stack` (the kernel sets rsp to its top), with
    // rax 0 and the other registers as they were: it calls
    // `child_entry(setup)`, which never returns. `stack` (borrowed
    // mutably, so nothing else uses it), `args` and `setup` stay alive and
    // unmoved until the child has exec'd or exited, since CLONE_VFORK holds
    // this thread until then.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => result,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") setup as *const ChildSetup,
            in("r13") child_entry as extern "C" fn(*const ChildSetup) -> !,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
    }
    result
}

/// The child's first function on its own stack (x86_64).
#[cfg(target_arch = "x86_64")]
extern "C" fn child_entry(setup: *const ChildSetup) -> ! {
    // SAFETY: in the child right after clone3; `setup` points to the
    // parent's `ChildSetup`, alive while the parent waits (CLONE_VFORK).
    unsafe { child_after_clone(&*setup) }
}

/// See the x86_64 version: here the child is a fork (a copy of this
/// address space in which only the calling thread exists).
#[cfg(not(target_arch = "x86_64"))]
fn clone(args: &mut CloneArgs, setup: &mut ChildSetup) -> i64 {
    // SAFETY: `clone3` without CLONE_VM or a stack, i.e. a fork: locks
    // other threads held (the allocator's, stdio's) may stay locked forever
    // in the child, so it runs only `child_after_clone` (see there).
    // `args` outlives the call; the size passed is the struct's.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: see above; in the child, right after clone3.
        unsafe { child_after_clone(setup) }
    }
    if pid < 0 {
        return -i64::from(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL),
        );
    }
    pid
}

/// `strings` as a NULL-terminated array of pointers into them.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|string| string.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// What the child reads between clone and exec: raw fds and pointers only.
struct ChildSetup {
    /// The supervisor's pid, to detect that it died before PDEATHSIG was set.
    parent: libc::pid_t,
    /// `/dev/null`, for stdin.
    null: RawFd,
    /// The write end of the stdout pipe.
    stdout: RawFd,
    /// The write end of the stderr pipe.
    stderr: RawFd,
    /// The write end of the `CLOEXEC` error pipe.
    errors: RawFd,
    /// Set when the child shares the supervisor's descriptor table
    /// (`CLONE_FILES`): it first takes a table of its own with only the
    /// descriptors below this number (among them the four above), and
    /// closes all but the error pipe once 0-2 are set.
    keep_below: Option<RawFd>,
    /// The open-files limit to set ([`crate::platform::agents_open_files`]).
    open_files: Option<libc::rlimit>,
    /// The working directory, when there is one.
    cwd: Option<*const libc::c_char>,
    /// The file to exec.
    path: *const libc::c_char,
    /// NULL-terminated argv.
    argv: *const *const libc::c_char,
    /// NULL-terminated argv for the `ENOEXEC` retry through `/bin/sh`.
    shell_argv: *const *const libc::c_char,
    /// NULL-terminated envp.
    envp: *const *const libc::c_char,
}

/// The child's side, between `clone3` and `execve`: every call here is an
/// async-signal-safe system call wrapper (sigprocmask, sigaction, setpgid,
/// prctl, getppid, close_range, dup2, setrlimit, chdir, execve, write,
/// _exit) and nothing is
/// allocated or written outside its own stack (and errno). Never returns.
///
/// # Safety
///
/// Only in the child right after `clone3`, with `setup`'s pointers valid.
unsafe fn child_after_clone(setup: &ChildSetup) -> ! {
    // SAFETY (whole body): raw system calls on fds and C strings prepared
    // by the parent, which stay valid while it waits (or in this copy of
    // its memory).
    unsafe {
        // A table of its own: the low part only, or (before Linux 5.9,
        // no close_range) a whole copy, whose close-on-exec rest the exec
        // closes.
        if let Some(below) = setup.keep_below
            && libc::syscall(
                libc::SYS_close_range,
                below as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) != 0
            && libc::unshare(libc::CLONE_FILES) != 0
        {
            fail(setup.errors, Step::Streams);
        }
        // Signals are blocked (on x86_64 the parent blocked them all). A
        // handler inherited from the supervisor goes back to default before
        // any is unblocked (exec would reset it too, but a signal before
        // the exec must not run supervisor code); SIGPIPE goes back to
        // default as std's spawn does (Rust ignores it in the supervisor).
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        let mut current: libc::sigaction = std::mem::zeroed();
        for signal in 1..=libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            if libc::sigaction(signal, std::ptr::null(), &mut current) == 0
                && (signal == libc::SIGPIPE || current.sa_sigaction != libc::SIG_IGN)
                && current.sa_sigaction != libc::SIG_DFL
            {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if libc::setpgid(0, 0) != 0 {
            fail(setup.errors, Step::ProcessGroup);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            fail(setup.errors, Step::DeathSignal);
        }
        // The parent may have died before prctl took effect.
        if libc::getppid() != setup.parent {
            *libc::__errno_location() = libc::ESRCH;
            fail(setup.errors, Step::DeathSignal);
        }
        // dup2 clears CLOEXEC on the copies, so 0-2 survive the exec; the
        // originals (>= 3, std keeps 0-2 open) close on exec.
        if libc::dup2(setup.null, 0) < 0
            || libc::dup2(setup.stdout, 1) < 0
            || libc::dup2(setup.stderr, 2) < 0
        {
            fail(setup.errors, Step::Streams);
        }
        // Of the few descriptors the own table holds, only 0-2 and the
        // error pipe (close-on-exec) stay.
        if let Some(below) = setup.keep_below {
            let close = |first: RawFd, last: RawFd| {
                if first <= last {
                    libc::syscall(
                        libc::SYS_close_range,
                        first as libc::c_uint,
                        last as libc::c_uint,
                        0,
                    );
                }
            };
            close(3, setup.errors - 1);
            close(setup.errors + 1, below - 1);
        }
        if let Some(limit) = &setup.open_files {
            // Best effort, like the shell that started the supervisor.
            libc::setrlimit(libc::RLIMIT_NOFILE, limit);
        }
        if let Some(cwd) = setup.cwd
            && libc::chdir(cwd) != 0
        {
            fail(setup.errors, Step::Directory);
        }
        libc::execve(setup.path, setup.argv, setup.envp);
        if *libc::__errno_location() == libc::ENOEXEC {
            libc::execve(c"/bin/sh".as_ptr(), setup.shell_argv, setup.envp);
        }
        fail(setup.errors, Step::Exec)
    }
}

/// Sends errno and `step` through the error pipe and exits with 127.
///
/// # Safety
///
/// Only in the child after `clone3` (it `_exit`s without any cleanup).
unsafe fn fail(errors: RawFd, step: Step) -> ! {
    // SAFETY: reads errno, writes 8 bytes from the stack, exits.
    unsafe {
        let errno = *libc::__errno_location();
        let mut report = [0u8; 8];
        report[..4].copy_from_slice(&errno.to_ne_bytes());
        report[4..].copy_from_slice(&(step as u32).to_ne_bytes());
        libc::write(errors, report.as_ptr().cast(), report.len());
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_found_on_the_childs_path_not_the_parents() {
        let directory = tempfile::tempdir().unwrap();
        let program = directory.path().join("only-here");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        let search = directory.path().as_os_str();
        let missing = find_program("only-here", None, None).unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
        // Not executable: EACCES, like execvp.
        let denied = find_program("only-here", Some(search), None).unwrap_err();
        assert_eq!(denied.raw_os_error(), Some(libc::EACCES));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            find_program("only-here", Some(search), None).unwrap(),
            program
        );
        assert_eq!(
            find_program("./x/y", Some(search), None).unwrap(),
            PathBuf::from("./x/y")
        );
        // A relative PATH entry is looked up from the child's directory.
        assert_eq!(
            find_program("only-here", Some(OsStr::new(".")), Some(directory.path())).unwrap(),
            PathBuf::from("./only-here")
        );
    }

    #[test]
    fn the_agents_environment_overrides_the_supervisors() {
        let prepared = Prepared::new(
            &["sh".into()],
            &[
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("X_ADDED".into(), "1".into()),
            ],
            None,
        )
        .unwrap();
        let entries: Vec<&[u8]> = prepared.envp.iter().map(|entry| entry.as_bytes()).collect();
        assert_eq!(
            entries
                .iter()
                .filter(|entry| entry.starts_with(b"PATH="))
                .count(),
            1
        );
        assert!(entries.contains(&&b"PATH=/usr/bin:/bin"[..]));
        assert!(entries.contains(&&b"X_ADDED=1"[..]));
        assert_eq!(prepared.path.as_bytes(), b"/usr/bin/sh");
    }
}
