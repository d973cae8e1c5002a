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

#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled by the first SIGINT/SIGTERM (or `down`); every task selects
    /// on a child of it.
    token: CancellationToken,
    /// Every long-lived task; closed and awaited by [`Shutdown::wait`].
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

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

/// Waits for SIGINT/SIGTERM: the first cancels `token`, each later one calls
/// `force` (skip the grace). Returns when `token` is cancelled by someone
/// else and no signal came (normal end).
pub async fn watch_signals(token: CancellationToken, force: impl Fn()) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut received = 0u32;
    loop {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            _ = token.cancelled(), if received == 0 => return Ok(()),
        }
        received += 1;
        if received == 1 {
            tracing::info!("stop requested: stopping agents (send it again to skip the grace)");
            token.cancel();
        } else {
            force();
        }
    }
}
