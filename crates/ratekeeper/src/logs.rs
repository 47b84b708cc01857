//! Standard error written a batch at a time by a thread of its own.
//!
//! Lines are formatted where they happen and appended to a buffer; the
//! thread writes what gathered once [`LINGER`] has passed since the first
//! line of a batch, or at once past [`FULL`] bytes. So an access line costs
//! a copy, never a wake-up of another thread per line: with a thread woken
//! for every line (tracing-appender's non-blocking writer), a server
//! admitting 1 000 paced requests a second paid two context switches for
//! each one's access line. Never lossy: past [`MOST`] bytes waiting, a
//! logger waits for the thread. The buffer is written out when the
//! [`Logs`] guard is dropped; a process killed meanwhile loses at most the
//! last [`LINGER`] of lines.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long the first line of a batch may wait to be written.
const LINGER: Duration = Duration::from_millis(10);
/// A batch this large is written without lingering.
const FULL: usize = 64 << 10;
/// Past this many bytes waiting, loggers wait for the writer.
const MOST: usize = 8 << 20;

/// Writes the lines out when dropped, and ends the thread.
pub struct Logs {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where the lines go: a `tracing_subscriber` writer.
#[derive(Clone)]
pub struct Writer(Arc<Shared>);

struct Shared {
    buffer: Mutex<Buffer>,
    /// Wakes the thread: a first line, a full batch, or closing.
    wake: Condvar,
    /// Wakes loggers waiting for room.
    drained: Condvar,
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// The thread waits for a first line.
    idle: bool,
    closing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts the writing thread.
pub fn stderr() -> (Writer, Logs) {
    let shared = Arc::new(Shared {
        buffer: Mutex::default(),
        wake: Condvar::new(),
        drained: Condvar::new(),
    });
    let writer = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("ratekeeper-logs".into())
        .spawn(move || write_out(&writer))
        .expect("the log thread can be started");
    (
        Writer(Arc::clone(&shared)),
        Logs {
            shared,
            thread: Some(thread),
        },
    )
}

fn write_out(shared: &Shared) {
    let mut stderr = std::io::stderr();
    loop {
        let mut buffer = shared.lock();
        while buffer.bytes.is_empty() && !buffer.closing {
            buffer.idle = true;
            buffer = shared.wake.wait(buffer).unwrap_or_else(|p| p.into_inner());
        }
        buffer.idle = false;
        if !buffer.closing && buffer.bytes.len() < FULL {
            // Woken early by a full batch or closing: written at once.
            buffer = shared
                .wake
                .wait_timeout(buffer, LINGER)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let bytes = std::mem::take(&mut buffer.bytes);
        let closing = buffer.closing;
        drop(buffer);
        shared.drained.notify_all();
        // Nowhere to say that standard error cannot be written.
        let _ = stderr.write_all(&bytes);
        if closing && shared.lock().bytes.is_empty() {
            return;
        }
    }
}

impl Write for Writer {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.0.lock();
        while buffer.bytes.len() >= MOST && !buffer.closing {
            buffer = self
                .0
                .drained
                .wait(buffer)
                .unwrap_or_else(|p| p.into_inner());
        }
        let before = buffer.bytes.len();
        buffer.bytes.extend_from_slice(line);
        // Once per batch: when the thread starts waiting for the first
        // line, and when the batch grows full (a thread that finds it full
        // already does not linger).
        if buffer.idle || (before < FULL && buffer.bytes.len() >= FULL) {
            buffer.idle = false;
            self.0.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writer {
    type Writer = Writer;

    fn make_writer(&'a self) -> Writer {
        self.clone()
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
