//! Waiting for local TCP ports to start listening, for every agent at once.
//!
//! Owns one thread that, while anyone waits, lists the LISTEN sockets of
//! this machine (netlink `sock_diag`, [`crate::check::bound::listening`])
//! every tick and wakes the waiters whose port appeared. One listing serves
//! every waiter, so a port is seen within a tick of the agent's `listen()`
//! whether one agent waits or five hundred; the tick grows with the cost of
//! a listing (ten times it, at least [`TICK`]), which bounds the thread to
//! about a tenth of a core while agents start and to nothing otherwise.
//!
//! Does not own the readiness verdict: a wake-up only says "probe now"
//! (`watch_readiness` then connects and checks who listens). Without
//! netlink (not Linux, a restricted container), [`listening`] answers
//! `false` at once and callers probe on their schedule alone.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The shortest time between two listings.
pub const TICK: Duration = Duration::from_millis(1);

/// The ports waited for, each with its waiters.
#[derive(Default)]
struct Waiters {
    ports: HashMap<u16, Vec<oneshot::Sender<()>>>,
}

struct Watcher {
    waiters: Mutex<Waiters>,
    /// Signalled when a waiter is added.
    added: Condvar,
}

/// The process's watcher, its thread started on first use; `None` when
/// netlink cannot list sockets here.
fn watcher() -> Option<&'static Watcher> {
    static WATCHER: OnceLock<Option<&'static Watcher>> = OnceLock::new();
    *WATCHER.get_or_init(|| {
        crate::check::bound::listening().ok()?;
        let watcher: &'static Watcher = Box::leak(Box::new(Watcher {
            waiters: Mutex::new(Waiters::default()),
            added: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("listen-watch".into())
            .spawn(move || watch(watcher))
            .ok()?;
        Some(watcher)
    })
}

/// Whether sockets can be listed here, so [`listening`] wakes its waiters
/// (starts the thread if it was not running).
pub fn available() -> bool {
    watcher().is_some()
}

/// Resolves once a socket listens on TCP `port` (either address family):
/// at once if one does now, else within a tick of one appearing. `false`
/// at once when sockets cannot be listed here. Dropping the future stops
/// the wait.
pub async fn listening(port: u16) -> bool {
    let Some(watcher) = watcher() else {
        return false;
    };
    let (sender, receiver) = oneshot::channel();
    watcher
        .waiters
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .ports
        .entry(port)
        .or_default()
        .push(sender);
    watcher.added.notify_one();
    receiver.await.is_ok()
}

/// The thread's body: sleeps while nobody waits; otherwise lists the
/// listening ports every tick and wakes their waiters (and drops waiters
/// that gave up).
fn watch(watcher: &Watcher) {
    loop {
        {
            let mut waiters = watcher
                .waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            while waiters.ports.is_empty() {
                waiters = watcher
                    .added
                    .wait(waiters)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        let started = Instant::now();
        let listed = crate::check::bound::listening();
        let took = started.elapsed();
        {
            let mut waiters = watcher
                .waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match &listed {
                Ok(sockets) => {
                    for (port, _) in sockets {
                        if let Some(woken) = waiters.ports.remove(port) {
                            for waiter in woken {
                                let _ = waiter.send(());
                            }
                        }
                    }
                }
                // Netlink stopped answering: release everyone to their
                // schedules (`listening` then reads a dropped sender).
                Err(_) => waiters.ports.clear(),
            }
            waiters.ports.retain(|_, list| {
                list.retain(|waiter| !waiter.is_closed());
                !list.is_empty()
            });
        }
        std::thread::sleep(TICK.max(took * 10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_is_seen_soon_after_it_listens() {
        if watcher().is_none() {
            // No netlink here: the documented answer, at once.
            assert!(!listening(1).await);
            return;
        }
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let waiting = tokio::spawn(listening(port));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "woken before anything listened");
        let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let woken = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("not woken within 5 s")
            .unwrap();
        assert!(woken);
        // Already listening: at once.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), listening(port))
                .await
                .expect("not woken within 5 s")
        );
    }
}
