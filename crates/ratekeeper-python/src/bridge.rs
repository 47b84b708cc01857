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
//! A wait that needs no runtime (a local limiter's, woken by the engine's
//! own timer) is not spawned at all: its waker only puts its id in the
//! mailbox, and the loop polls it on its own thread, so an admission costs
//! one wake-up of the loop and no other thread hop.
//!
//! So no foreign thread ever attaches to the interpreter, takes the GIL or
//! drops a Python object. That is what makes exit safe: the interpreter may
//! finalise while tasks are still running, and a task that ends afterwards
//! only writes to a pipe that it keeps open itself.

use std::collections::HashMap;
use std::future::Future;
use std::io::{ErrorKind, PipeReader, PipeWriter, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use pyo3::prelude::*;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

/// Turns a finished wait's Rust outcome into the Python value (or
/// exception) of its future; called on the event loop's thread.
type Settle = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// A wait the loop polls itself, resolving to its settling step.
type Polled = Pin<Box<dyn Future<Output = Settle> + Send>>;

/// The waits the loop polls itself, by id.
type PolledWaits = Arc<Mutex<HashMap<u64, Polled>>>;

/// What the loop has to do when it wakes.
#[derive(Default)]
struct Ready {
    /// Finished waits.
    settled: Vec<(u64, Settle)>,
    /// Polled waits whose wakers fired: poll them again.
    woken: Vec<u64>,
}

/// What tasks share with the loop: work for it, and the pipe's writing
/// end to wake it with.
struct Shared {
    ready: Mutex<Ready>,
    wake: PipeWriter,
}

impl Shared {
    fn deliver(&self, id: u64, settle: Settle) {
        self.notify(|ready| ready.settled.push((id, settle)));
    }

    fn notify(&self, add: impl FnOnce(&mut Ready)) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = ready.settled.is_empty() && ready.woken.is_empty();
        add(&mut ready);
        drop(ready);
        if was_empty {
            // One byte per batch: the loop drains everything that is ready
            // when it wakes. The pipe is non-blocking, and a full pipe
            // already means a wake-up is on its way.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// Wakes the loop to poll wait `id` again.
struct WakeLoop {
    id: u64,
    shared: Arc<Shared>,
}

impl Wake for WakeLoop {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let id = self.id;
        self.shared.notify(|ready| ready.woken.push(id));
    }
}

/// One event loop's inbox of finished waits.
#[pyclass(frozen, module = "ratekeeper._native")]
pub struct Mailbox {
    shared: Arc<Shared>,
    reader: PipeReader,
    next_id: AtomicU64,
    polled: PolledWaits,
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
                ready: Mutex::new(Ready::default()),
                wake,
            }),
            reader,
            next_id: AtomicU64::new(0),
            polled: PolledWaits::default(),
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
        let Ready { mut settled, woken } =
            std::mem::take(&mut *self.shared.ready.lock().unwrap_or_else(|p| p.into_inner()));
        for id in woken {
            if let Some(settle) = self.poll(id) {
                settled.push((id, settle));
            }
        }
        settled
            .into_iter()
            .map(|(id, settle)| match settle(py) {
                Ok(value) => (id, true, value),
                Err(err) => (id, false, err.into_value(py).into_any()),
            })
            .collect()
    }
}

impl Mailbox {
    /// Polls wait `id` once, if it is still waiting; its settling step if
    /// it finished. Not under the lock: a poll may wake itself.
    fn poll(&self, id: u64) -> Option<Settle> {
        let wait = self
            .polled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)?;
        self.poll_wait(id, wait)
    }

    /// Polls `wait` once; keeps it under `id` if it is still waiting.
    /// Runs on the loop's thread, so its waker cannot be drained before
    /// the wait is back in the map.
    fn poll_wait(&self, id: u64, mut wait: Polled) -> Option<Settle> {
        let waker = Waker::from(Arc::new(WakeLoop {
            id,
            shared: self.shared.clone(),
        }));
        match wait.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(settle) => Some(settle),
            Poll::Pending => {
                self.polled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, wait);
                None
            }
        }
    }

    /// Waits for `future` on the loop's own thread: it needs no runtime,
    /// only a waker (an engine's wait, woken by the engine's timer). Its
    /// outcome arrives as a spawned one's does.
    pub fn poll_here<T, F, S>(&self, future: F, settle: S) -> Pending
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
        S: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let wait: Polled = Box::pin(async move {
            let outcome = future.await;
            Box::new(move |py: Python<'_>| settle(py, outcome)) as Settle
        });
        if let Some(settle) = self.poll_wait(id, wait) {
            self.shared.deliver(id, settle);
        }
        Pending {
            id,
            cancel: Cancel::Poll(self.polled.clone()),
        }
    }

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
            cancel: Cancel::Abort(task.abort_handle()),
        }
    }
}

/// How a wait is given up.
enum Cancel {
    /// A spawned task: abort it (its future is dropped in the runtime).
    Abort(AbortHandle),
    /// A wait the loop polls: drop it.
    Poll(PolledWaits),
}

/// A wait in progress: cancelling it drops its future inside the runtime,
/// which withdraws a queued request at once.
#[pyclass(frozen, module = "ratekeeper._native")]
pub struct Pending {
    id: u64,
    cancel: Cancel,
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
        match &self.cancel {
            Cancel::Abort(task) => task.abort(),
            Cancel::Poll(polled) => {
                let wait = polled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.id);
                drop(wait); // outside the lock: dropping withdraws the request
            }
        }
    }
}
