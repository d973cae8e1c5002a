//! SIGTERM/SIGINT handling for agents: the signal handler only sets a flag
//! and writes one byte to a pipe (both async-signal-safe); a small watcher
//! thread reads the pipe and wakes everyone waiting on the [`ShutdownSignal`].
//!
//! Owns the process-wide handler (installed once) and the signal state. Does
//! not decide what the agent does on shutdown: it polls
//! [`ShutdownSignal::is_requested`] or blocks in [`ShutdownSignal::wait`] and
//! finishes in-flight work within the supervisor's grace period.

use std::io::Read;
use std::os::fd::{BorrowedFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// Set by the handler; read by [`ShutdownSignal::is_requested`].
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Write end of the signal pipe; -1 until installed.
static PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_signal: nix::libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
    let fd = PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: the fd was leaked from a UnixStream at install time and is
        // never closed, so it stays valid for the life of the process.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = nix::unistd::write(borrowed, &[1]);
    }
}

/// A shareable view of "the supervisor (or the user) asked this agent to
/// stop". Clones share the state; hand one to each worker thread.
///
/// ```
/// let signal = supervisor::sdk::ShutdownSignal::new();
/// assert!(!signal.is_requested());
/// signal.request();
/// assert!(signal.wait(Some(std::time::Duration::from_millis(1))));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ShutdownSignal {
    /// Shared by every clone; the signal watcher thread holds a clone of the
    /// process-wide one.
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Set once, never cleared.
    requested: Mutex<bool>,
    /// Threads in [`ShutdownSignal::wait`] block on it.
    condvar: Condvar,
    /// Tasks in [`ShutdownSignal::wait_async`] wait on it.
    #[cfg(feature = "async")]
    notify: tokio::sync::Notify,
}

impl ShutdownSignal {
    /// A signal not tied to any OS signal (tests, or an agent's own stop
    /// condition). [`process_signal`] gives the one SIGTERM sets.
    pub fn new() -> ShutdownSignal {
        ShutdownSignal::default()
    }

    /// Marks shutdown requested and wakes every waiter.
    pub fn request(&self) {
        *self.flag() = true;
        self.state.condvar.notify_all();
        #[cfg(feature = "async")]
        self.state.notify.notify_waiters();
    }

    /// True once shutdown was requested (never resets).
    pub fn is_requested(&self) -> bool {
        *self.flag()
    }

    fn flag(&self) -> std::sync::MutexGuard<'_, bool> {
        self.state
            .requested
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Blocks until shutdown is requested or `timeout` passes (`None`: no
    /// limit). Returns whether it was requested.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let condvar = &self.state.condvar;
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut requested = self.flag();
        while !*requested {
            requested = match deadline {
                None => condvar
                    .wait(requested)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    condvar
                        .wait_timeout(requested, deadline - now)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|poisoned| poisoned.into_inner().0)
                }
            };
        }
        true
    }

    /// [`ShutdownSignal::wait`] for async code: waits without holding a
    /// thread. Must run inside a Tokio runtime with time enabled.
    ///
    /// ```
    /// # #[cfg(feature = "async")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let signal = supervisor::sdk::ShutdownSignal::new();
    /// let waiter = tokio::spawn({
    ///     let signal = signal.clone();
    ///     async move { signal.wait_async(None).await }
    /// });
    /// signal.request();
    /// assert!(waiter.await.unwrap());
    /// # }
    /// # #[cfg(not(feature = "async"))]
    /// # fn main() {}
    /// ```
    #[cfg(feature = "async")]
    pub async fn wait_async(&self, timeout: Option<Duration>) -> bool {
        let requested = async {
            loop {
                // Registered before the check, so a request in between is not missed.
                let notified = self.state.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.is_requested() {
                    return;
                }
                notified.await;
            }
        };
        match timeout {
            None => {
                requested.await;
                true
            }
            Some(timeout) => tokio::time::timeout(timeout, requested).await.is_ok(),
        }
    }
}

/// The process-wide signal set by SIGTERM and SIGINT. The first call installs
/// the handlers and starts the watcher thread; if that fails (no threads, no
/// pipe), the returned signal still works for [`ShutdownSignal::request`]
/// and the failure is logged.
///
/// ```no_run
/// let signal = supervisor::sdk::process_signal();
/// while !signal.is_requested() {
///     // do one unit of work
/// #   break;
/// }
/// ```
pub fn process_signal() -> ShutdownSignal {
    static SIGNAL: OnceLock<ShutdownSignal> = OnceLock::new();
    SIGNAL
        .get_or_init(|| {
            let signal = ShutdownSignal::new();
            if let Err(error) = install(signal.clone()) {
                tracing::warn!(%error, "cannot install the SIGTERM handler; shutdown_requested() only sees explicit requests");
            }
            signal
        })
        .clone()
}

/// Installs the SIGTERM/SIGINT handler and the watcher thread that turns
/// the handler's pipe byte into `signal.request()`. Called once per
/// process.
fn install(signal: ShutdownSignal) -> std::io::Result<()> {
    let (writer, mut reader) = UnixStream::pair()?;
    writer.set_nonblocking(true)?;
    PIPE.store(writer.into_raw_fd(), Ordering::SeqCst);
    std::thread::Builder::new()
        .name("agent-signals".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            // Blocks until the handler writes; one wake is all it takes.
            if matches!(reader.read(&mut byte), Ok(1)) || REQUESTED.load(Ordering::SeqCst) {
                signal.request();
            }
        })?;
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for kind in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only touches atomics and write(2), which are
        // async-signal-safe.
        unsafe { sigaction(kind, &action) }.map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// True if SIGTERM/SIGINT arrived (without taking any lock; usable anywhere).
pub(crate) fn signal_arrived() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_wake_on_request() {
        let signal = ShutdownSignal::new();
        let waiter = {
            let signal = signal.clone();
            std::thread::spawn(move || signal.wait(Some(Duration::from_secs(10))))
        };
        std::thread::sleep(Duration::from_millis(20));
        signal.request();
        assert!(waiter.join().unwrap());
        assert!(signal.is_requested());
    }

    #[test]
    fn wait_times_out() {
        assert!(!ShutdownSignal::new().wait(Some(Duration::from_millis(10))));
    }

    #[cfg(feature = "async")]
    #[tokio::test]
    async fn async_waiters_wake_on_request_and_time_out() {
        let signal = ShutdownSignal::new();
        assert!(!signal.wait_async(Some(Duration::from_millis(10))).await);
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.wait_async(Some(Duration::from_secs(10))).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // From a plain thread, as the signal watcher does.
        std::thread::spawn(move || signal.request()).join().unwrap();
        let woken = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter wakes within 10 s");
        assert!(woken.unwrap());
    }
}
