//! The root cancellation token and the tracker of every spawned task.
//!
//! `cli::up` creates one [`Shutdown`]; the supervisor and every task it
//! spawns get a child of [`Shutdown::token`] and are spawned on
//! [`Shutdown::tracker`], so [`Shutdown::wait`] returns only when all of them
//! finished. Cancelling the root token means "stop everything gracefully".
//! Does not own agent processes (the supervisor stops those before its task
//! ends).

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The root token and the task tracker, cloned cheaply (both are shared
/// handles): every clone cancels and waits on the same ones.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled by the first SIGINT/SIGTERM (or `down`); every task selects
    /// on a child of it.
    token: CancellationToken,
    /// Every long-lived task; closed and awaited by [`Shutdown::wait`].
    tracker: TaskTracker,
}

impl Shutdown {
    /// A token not yet cancelled and an empty, open tracker.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// The root token: give tasks `token().child_token()` so they can be
    /// cancelled alone too.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Where long-lived tasks are spawned, so [`Shutdown::wait`] waits
    /// for them.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Asks everything to stop.
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// Waits for every tracked task to finish.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// What each signal does to a running supervisor, as daemons do; no
/// signal a user can send ends it without stopping its agents:
///
/// | signal | effect |
/// |---|---|
/// | `SIGINT`, `SIGTERM`, `SIGQUIT` | graceful stop; a second one skips the grace |
/// | `SIGHUP` | reload the manifests (like `supervisor reload`) |
/// | `SIGUSR1`, `SIGUSR2`, `SIGALRM` | ignored (logged) |
/// | `SIGPIPE` | ignored (by Rust's runtime: a closed console is a write error) |
///
/// Only `SIGKILL` (and `SIGSTOP`) cannot be handled; the keeper then kills
/// the agents (`crate::process::keeper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    /// Graceful stop; a second stop signal skips the grace.
    Stop,
    /// Reload the manifests.
    Reload,
    /// Log it and carry on.
    Ignore,
}

/// The signals [`Signals`] handles and what each does.
pub const HANDLED_SIGNALS: [(libc::c_int, SignalAction); 7] = [
    (libc::SIGINT, SignalAction::Stop),
    (libc::SIGTERM, SignalAction::Stop),
    (libc::SIGQUIT, SignalAction::Stop),
    (libc::SIGHUP, SignalAction::Reload),
    (libc::SIGUSR1, SignalAction::Ignore),
    (libc::SIGUSR2, SignalAction::Ignore),
    (libc::SIGALRM, SignalAction::Ignore),
];

/// The signals of [`HANDLED_SIGNALS`], caught from [`Signals::listen`] on
/// (so one that arrives while agents are being started is not a silent
/// death) and acted on by [`Signals::watch`].
pub struct Signals {
    /// Sent to by one forwarding task per signal; dropped with this value.
    arrivals: tokio::sync::mpsc::UnboundedReceiver<libc::c_int>,
    /// The forwarding tasks, aborted on drop.
    _forwarders: tokio::task::JoinSet<()>,
}

impl Signals {
    /// Installs the handlers. Call it inside the runtime, before anything starts.
    pub fn listen() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel::<libc::c_int>();
        let mut forwarders = tokio::task::JoinSet::new();
        for (number, _) in HANDLED_SIGNALS {
            let mut stream = signal(SignalKind::from_raw(number))?;
            let arrived = arrived.clone();
            forwarders.spawn(async move {
                while stream.recv().await.is_some() {
                    if arrived.send(number).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Signals {
            arrivals,
            _forwarders: forwarders,
        })
    }

    /// The first stop signal cancels `token`, each later one calls `force`
    /// (skip the grace); `SIGHUP` calls `reload`; the others are logged.
    /// Returns when `token` is cancelled by someone else and no stop signal
    /// came (normal end).
    pub async fn watch(mut self, token: CancellationToken, force: impl Fn(), reload: impl Fn()) {
        let arrivals = &mut self.arrivals;
        let mut received = 0u32;
        loop {
            let number = tokio::select! {
                Some(number) = arrivals.recv() => number,
                _ = token.cancelled(), if received == 0 => return,
            };
            let name = nix::sys::signal::Signal::try_from(number)
                .map(|signal| signal.as_str())
                .unwrap_or("?");
            let action = HANDLED_SIGNALS
                .iter()
                .find(|(handled, _)| *handled == number)
                .map(|(_, action)| *action)
                .unwrap_or(SignalAction::Ignore);
            match action {
                SignalAction::Stop => {
                    received += 1;
                    if received == 1 {
                        tracing::info!(
                            signal = name,
                            "stop requested: stopping agents (send it again to skip the grace)"
                        );
                        token.cancel();
                    } else {
                        force();
                    }
                }
                SignalAction::Reload => {
                    tracing::info!(signal = name, "reload requested");
                    reload();
                }
                SignalAction::Ignore => {
                    tracing::info!(
                        signal = name,
                        "signal ignored (SIGINT, SIGTERM or SIGQUIT stop, SIGHUP reloads)"
                    );
                }
            }
        }
    }
}
