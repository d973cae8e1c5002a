//! The console copy of agent output: one bounded queue per process and the
//! thread that writes it to stdout, so a console that stops reading (a
//! paused terminal, `up | less` left open) never slows or blocks an agent,
//! its log file or the control plane.
//!
//! Output pumps ([`super::log`]) [`ConsoleSink::push`] whole batches of
//! formatted lines and never wait: when the queue holds
//! [`CAPACITY_BYTES`], a batch is dropped and its lines counted. Once the
//! console takes output again, the writer prints
//! `[supervisor: N lines dropped from the console; logs are complete]`
//! where the lines are missing. A console that went away (a closed pipe) is
//! drained and discarded.
//!
//! The same kind of queue carries `up`'s own lines to stderr (log lines,
//! progress, summary: [`print_stderr`], and the tracing writer of `up`), so
//! a paused terminal, which stops both streams, blocks nothing either.
//! [`drain`] gives both a bounded time to empty before `up` exits.
//!
//! Owns the queues, their writer threads and the dropped-line count
//! ([`dropped_lines`]). Does not own the line format (`name | text`, in
//! [`super::log`]) nor the log files, which are always complete.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// How much console output may wait for a slow console. At 4 MiB a console
/// that keeps up on average absorbs bursts; one that stalls costs at most
/// twice this (the queue, and the batches its writer is stuck on).
pub const CAPACITY_BYTES: usize = 4 * 1024 * 1024;

/// The queue between the pumps and the writer thread.
pub struct ConsoleSink {
    /// The lines waiting for the writer, with their size and drop count.
    queue: Mutex<Queue>,
    /// Signalled on each push; the writer thread waits on it.
    filled: Condvar,
    /// Every line dropped since the process started.
    dropped_total: AtomicU64,
    /// The queue's size limit in bytes.
    capacity: usize,
}

/// What waits for the console writer thread.
#[derive(Default)]
struct Queue {
    /// Complete lines, in the order pushed.
    batches: VecDeque<Vec<u8>>,
    /// Their total size, bounded by the sink's capacity.
    bytes: usize,
    /// Lines dropped since the last notice.
    dropped: u64,
    /// The writer took batches and has not finished writing them.
    writing: bool,
}

/// Agent output on stdout, once something was shown.
static STDOUT: OnceLock<&'static ConsoleSink> = OnceLock::new();
/// The supervisor's own lines on stderr (`up`: log lines, progress,
/// summary), once something was shown.
static STDERR: OnceLock<&'static ConsoleSink> = OnceLock::new();

/// Which stream a sink writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Agent output lines.
    Stdout,
    /// The supervisor's own lines.
    Stderr,
}

/// The sink of agent output (stdout); its writer thread starts on first use.
pub fn sink() -> &'static ConsoleSink {
    sink_of(Stream::Stdout)
}

/// The sink of `stream`; its writer thread starts on first use.
pub fn sink_of(stream: Stream) -> &'static ConsoleSink {
    let cell = match stream {
        Stream::Stdout => &STDOUT,
        Stream::Stderr => &STDERR,
    };
    cell.get_or_init(|| {
        let sink: &'static ConsoleSink = Box::leak(Box::new(ConsoleSink::new(CAPACITY_BYTES)));
        let started = std::thread::Builder::new()
            .name(format!("console-{stream:?}").to_lowercase())
            .spawn(move || match stream {
                Stream::Stdout => sink.run(&mut std::io::stdout()),
                Stream::Stderr => sink.run(&mut std::io::stderr()),
            });
        if let Err(error) = started {
            // Without a writer the queue fills and every line is counted as dropped.
            eprintln!("warning: cannot start the console writer ({error}); agent output goes to the log files only");
        }
        sink
    })
}

/// Queues `text` for stderr, never blocking on it (for `up`'s own lines).
pub fn print_stderr(text: &str) {
    let lines = text.bytes().filter(|byte| *byte == b'\n').count() as u64;
    sink_of(Stream::Stderr).push(text.as_bytes().to_vec(), lines.max(1));
}

/// Agent output lines dropped from the console so far (0 when nothing was
/// ever shown).
pub fn dropped_lines() -> u64 {
    STDOUT
        .get()
        .map_or(0, |sink| sink.dropped_total.load(Ordering::Relaxed))
}

/// Waits until both queues are written out, at most `timeout` (a stalled
/// console is not waited for): `up` calls it before it exits, so the last
/// lines are shown.
pub fn drain(timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    for sink in [STDOUT.get(), STDERR.get()].into_iter().flatten() {
        while !sink.is_idle() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl ConsoleSink {
    /// An empty sink holding at most `capacity` bytes.
    fn new(capacity: usize) -> ConsoleSink {
        ConsoleSink {
            queue: Mutex::new(Queue::default()),
            filled: Condvar::new(),
            dropped_total: AtomicU64::new(0),
            capacity,
        }
    }

    /// Queues `batch` (`lines` complete lines) or, when the queue is full,
    /// drops and counts it. Never blocks on the console.
    pub fn push(&self, batch: Vec<u8>, lines: u64) {
        if batch.is_empty() {
            return;
        }
        let mut queue = self.lock();
        if queue.bytes + batch.len() > self.capacity && queue.bytes > 0 {
            queue.dropped += lines;
            self.dropped_total.fetch_add(lines, Ordering::Relaxed);
            return;
        }
        queue.bytes += batch.len();
        queue.batches.push_back(batch);
        drop(queue);
        self.filled.notify_one();
    }

    /// Takes everything queued (waiting for something), with the notice of
    /// dropped lines at its end.
    fn take(&self) -> Vec<Vec<u8>> {
        let mut queue = self.lock();
        while queue.batches.is_empty() && queue.dropped == 0 {
            queue = self
                .filled
                .wait(queue)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let mut batches: Vec<Vec<u8>> = queue.batches.drain(..).collect();
        queue.bytes = 0;
        queue.writing = true;
        if queue.dropped > 0 {
            batches.push(
                format!(
                    "[supervisor: {} lines dropped from the console; logs are complete]\n",
                    queue.dropped
                )
                .into_bytes(),
            );
            queue.dropped = 0;
        }
        batches
    }

    /// The writer thread's body: writes batches to `console` for ever; after
    /// a write error (the reader went away) it keeps draining the queue.
    fn run(&self, console: &mut impl Write) {
        let mut open = true;
        loop {
            for batch in self.take() {
                if open {
                    open = console.write_all(&batch).is_ok();
                }
            }
            if open {
                open = console.flush().is_ok();
            }
            self.lock().writing = false;
        }
    }

    /// Nothing queued and nothing being written.
    fn is_idle(&self) -> bool {
        let queue = self.lock();
        queue.batches.is_empty() && queue.dropped == 0 && !queue.writing
    }

    /// The queue, even after a thread panicked while holding it: console
    /// output keeps flowing rather than every later push panicking too.
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_then_says_so() {
        let sink = ConsoleSink::new(12);
        sink.push(b"a | 1\n".to_vec(), 1);
        sink.push(b"a | 2\na | 3\n".to_vec(), 2);
        sink.push(b"a | 4\n".to_vec(), 1);
        assert_eq!(sink.dropped_total.load(Ordering::Relaxed), 2);
        let text: Vec<u8> = sink.take().concat();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "a | 1\na | 4\n[supervisor: 2 lines dropped from the console; logs are complete]\n"
        );
        sink.push(b"a | 5\n".to_vec(), 1);
        assert_eq!(sink.take().concat(), b"a | 5\n");
    }

    #[test]
    fn one_batch_larger_than_the_queue_still_goes_through() {
        let sink = ConsoleSink::new(4);
        sink.push(b"a | long line\n".to_vec(), 1);
        assert_eq!(sink.take().concat(), b"a | long line\n");
    }
}
