//! A self-pipe that wakes a thread blocked in `zmq::poll`: other threads put
//! work on a std channel, then [`Waker::wake`]; the poll loop includes
//! [`WakeReceiver::fd`] in its poll set and drains both.
//!
//! Why not an inproc PUSH per sender: a `zmq::Socket` is not `Sync`, so a
//! cloneable, shareable handle would need a `Mutex<Socket>`. A Unix socket
//! pair is `Sync`, and an atomic flag keeps it to one write per burst.
//!
//! Owns only the pipe and the flag; not the channel or the poll loop.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The sending side; cloned into every handle of the thread.
#[derive(Debug, Clone)]
pub(crate) struct Waker {
    /// Read by the [`WakeReceiver`] in the poll loop; when the loop has
    /// ended, writes fail and are ignored.
    stream: Arc<UnixStream>,
    /// True while a wake is pending and not yet consumed by the loop.
    pending: Arc<AtomicBool>,
}

/// The receiving side, owned by the poll loop.
#[derive(Debug)]
pub(crate) struct WakeReceiver {
    /// Polled for readability; drained by `clear`.
    stream: UnixStream,
    /// Shared with the wakers: reset by `clear`, so the next wake writes.
    pending: Arc<AtomicBool>,
}

/// A connected pair.
pub(crate) fn pair() -> std::io::Result<(Waker, WakeReceiver)> {
    let (sender, receiver) = UnixStream::pair()?;
    sender.set_nonblocking(true)?;
    receiver.set_nonblocking(true)?;
    let pending = Arc::new(AtomicBool::new(false));
    Ok((
        Waker {
            stream: Arc::new(sender),
            pending: pending.clone(),
        },
        WakeReceiver {
            stream: receiver,
            pending,
        },
    ))
}

impl Waker {
    /// Wakes the loop. Call after putting the work on the channel: the loop
    /// clears the flag before draining the channel, so work queued before a
    /// wake is always seen.
    pub(crate) fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            // A full pipe already means "wake up"; a closed one means the loop is gone.
            let _ = (&*self.stream).write(&[1]);
        }
    }
}

impl WakeReceiver {
    /// The descriptor to poll for readability.
    pub(crate) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Consumes pending wakes; call before draining the work channel.
    pub(crate) fn clear(&self) {
        let mut buffer = [0u8; 64];
        while let Ok(read) = (&self.stream).read(&mut buffer) {
            if read == 0 {
                break;
            }
        }
        self.pending.store(false, Ordering::SeqCst);
    }
}
