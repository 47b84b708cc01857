//! How an asyncio wait gets its answer without Python ever being touched
//! from one of ratekeeper's own threads.
//!
//! A wait runs as a task on a tokio runtime. When it ends, the task puts its
//! Rust outcome in the loop's [`Mailbox`] and, if the mailbox was empty,
//! writes one byte to a pipe that the event loop watches
//! (`loop.add_reader`). The loop's reader callback then drains the mailbox
//! on the loop's own thread, turning outcomes into Python objects and
//! settling futures: many outcomes per wake-up when they come together.
//!
//! So no foreign thread ever attaches to the interpreter, takes the GIL or
//! drops a Python object. That is what makes exit safe: the interpreter may
//! finalise while tasks are still running, and a task that ends afterwards
//! only writes to a pipe that it keeps open itself.

use std::future::Future;
use std::io::{ErrorKind, PipeReader, PipeWriter, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use pyo3::prelude::*;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

/// Turns a finished wait's Rust outcome into the Python value (or
/// exception) of its future; called on the event loop's thread.
type Settle = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// What tasks share with the loop: finished outcomes, and the pipe's
/// writing end to wake the loop with.
struct Shared {
    ready: Mutex<Vec<(u64, Settle)>>,
    wake: PipeWriter,
}

impl Shared {
    fn deliver(&self, id: u64, settle: Settle) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = ready.is_empty();
        ready.push((id, settle));
        drop(ready);
        if was_empty {
            // One byte per batch: the loop drains everything that is ready
            // when it wakes. The pipe is non-blocking, and a full pipe
            // already means a wake-up is on its way.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// One event loop's inbox of finished waits.
#[pyclass(frozen, module = "ratekeeper._native")]
pub struct Mailbox {
    shared: Arc<Shared>,
    reader: PipeReader,
    next_id: AtomicU64,
}

fn non_blocking(fd: impl AsFd) -> std::io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(std::io::Error::from)?;
    Ok(())
}

#[pymethods]
impl Mailbox {
    #[new]
    fn new() -> PyResult<Self> {
        let (reader, wake) = std::io::pipe()?;
        non_blocking(&reader)?;
        non_blocking(&wake)?;
        Ok(Mailbox {
            shared: Arc::new(Shared {
                ready: Mutex::new(Vec::new()),
                wake,
            }),
            reader,
            next_id: AtomicU64::new(0),
        })
    }

    /// The file descriptor for `loop.add_reader`. It belongs to the
    /// mailbox: do not close it.
    fn fileno(&self) -> i32 {
        self.reader.as_raw_fd()
    }

    /// Every finished wait, as `(id, ok, value)`: `value` is the result if
    /// `ok`, else the exception to raise.
    fn drain(&self, py: Python<'_>) -> Vec<(u64, bool, Py<PyAny>)> {
        let mut sink = [0u8; 64];
        loop {
            match (&self.reader).read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: the pipe is empty.
            }
        }
        let ready =
            std::mem::take(&mut *self.shared.ready.lock().unwrap_or_else(|p| p.into_inner()));
        ready
            .into_iter()
            .map(|(id, settle)| match settle(py) {
                Ok(value) => (id, true, value),
                Err(err) => (id, false, err.into_value(py).into_any()),
            })
            .collect()
    }
}

impl Mailbox {
    /// Runs `future` on `runtime`; its outcome, turned into Python by
    /// `settle` on the loop's thread, arrives in this mailbox under the
    /// returned [`Pending`]'s id.
    pub fn spawn<T, F, S>(&self, runtime: &Handle, future: F, settle: S) -> Pending
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
        S: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        let task = runtime.spawn(async move {
            let outcome = future.await;
            shared.deliver(id, Box::new(move |py| settle(py, outcome)));
        });
        Pending {
            id,
            abort: task.abort_handle(),
        }
    }
}

/// A wait in progress: cancelling it drops its future inside the runtime,
/// which withdraws a queued request at once.
#[pyclass(frozen, module = "ratekeeper._native")]
pub struct Pending {
    id: u64,
    abort: AbortHandle,
}

#[pymethods]
impl Pending {
    /// The id its outcome arrives under.
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// Gives up the wait. An outcome already in the mailbox is dropped
    /// there (a lease is then released in the background).
    fn cancel(&self) {
        self.abort.abort();
    }
}
