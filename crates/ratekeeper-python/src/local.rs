//! Local limiters: the engine in this process, for single-process code
//! that would otherwise hand-roll a token bucket or a semaphore. Exact:
//! the rate is kept by the same engine and timer as everything else.
//!
//! Arguments are checked, in the caller's words, by the Python classes
//! (`ratekeeper/local.py`, `ratekeeper/aiolimiter.py`) that wrap these.

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};

use pyo3::prelude::*;
use ratekeeper_core::{AcquireError, LimitSpec};
use ratekeeper_driver::{Acquire, Admitted, Kind, Limiter, Rate, SlotGuard, Slots};
use tokio::runtime::Runtime;

use crate::bridge::{Mailbox, Pending};
use crate::{FORKS, error, invalid, seconds, wait_interruptibly};

/// The runtime that runs the local limiters' waits: made again in a forked
/// child, where the parent's has no threads (the old one is leaked: it
/// cannot be shut down from there).
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Mutex<(u64, &'static Runtime)>> = OnceLock::new();
    let make = || -> &'static Runtime {
        Box::leak(Box::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("ratekeeper-local")
                .enable_all()
                .build()
                .expect("the local limiters' runtime starts"),
        ))
    };
    let forks = FORKS.load(Ordering::SeqCst);
    let cell = RUNTIME.get_or_init(|| Mutex::new((forks, make())));
    let mut current = cell.lock().unwrap_or_else(|p| p.into_inner());
    if current.0 != forks {
        *current = (forks, make());
    }
    current.1
}

/// The one limit of a local limiter.
const NAME: &str = "local";

fn to_py(py: Python<'_>, err: AcquireError) -> PyErr {
    let code = err.code();
    match err {
        AcquireError::TimedOut | AcquireError::WouldBlock => {
            error(py, &[code], err.to_string(), code, None)
        }
        AcquireError::OccupyExceedsSlots { occupy, slots, .. } => invalid(
            py,
            "occupy",
            format!(
                "occupy {occupy} is more than this limiter admits at once ({slots}); \
                 it could never be admitted"
            ),
        ),
        AcquireError::InvalidOccupy => invalid(py, "occupy", "occupy must be at least 1".into()),
        other => invalid(py, "occupy", other.to_string()),
    }
}

fn limiter(py: Python<'_>, spec: LimitSpec) -> PyResult<Limiter> {
    let limiter = Limiter::new();
    limiter
        .create(spec)
        .map_err(|e| invalid(py, e.field().unwrap_or("slots"), e.to_string()))?;
    Ok(limiter)
}

/// Whether `occupy` more slots fit now, with nobody waiting ahead.
fn has_capacity(limiter: &Limiter, occupy: u64) -> bool {
    limiter
        .has_room(NAME, occupy)
        .expect("the local limit exists")
}

/// How a local limiter asks its one limit: rate turns or held slots.
trait Local: Kind + Sized + 'static
where
    Self::Output: Send,
{
    fn ask(limiter: &Limiter) -> Acquire<'_, Self>;
}

impl Local for Rate {
    fn ask(limiter: &Limiter) -> Acquire<'_, Self> {
        limiter.rate_limit(NAME)
    }
}

impl Local for Slots {
    fn ask(limiter: &Limiter) -> Acquire<'_, Self> {
        limiter.concurrency(NAME)
    }
}

/// Waits (without the GIL) for `occupy` on `limiter`'s limit.
fn wait<K: Local>(
    py: Python<'_>,
    limiter: &Limiter,
    occupy: u64,
    timeout_seconds: Option<f64>,
) -> PyResult<K::Output>
where
    K::Output: Send,
{
    let timeout = seconds(py, "timeout_seconds", timeout_seconds)?;
    let request = K::ask(limiter).occupy(occupy).timeout(timeout);
    let instead = "await limiter.acquire_async(...)` or `async with limiter";
    wait_interruptibly(py, runtime(), instead, request.into_future())?.map_err(|e| to_py(py, e))
}

/// `wait` for asyncio: polled on the event loop's own thread (see the
/// bridge), its outcome turned into Python by `settle`.
fn wait_async<K: Local>(
    py: Python<'_>,
    mailbox: &Mailbox,
    limiter: &Limiter,
    occupy: u64,
    timeout_seconds: Option<f64>,
    settle: fn(Python<'_>, K::Output) -> PyResult<Py<PyAny>>,
) -> PyResult<Pending>
where
    K::Output: Send,
{
    let timeout = seconds(py, "timeout_seconds", timeout_seconds)?;
    let limiter = limiter.clone();
    let wait = async move { K::ask(&limiter).occupy(occupy).timeout(timeout).await };
    Ok(mailbox.poll_here(wait, move |py, outcome| {
        settle(py, outcome.map_err(|e| to_py(py, e))?)
    }))
}

/// Takes `occupy` now if it fits; `None` if it would have to wait.
fn try_take<K: Local>(py: Python<'_>, limiter: &Limiter, occupy: u64) -> PyResult<Option<K::Output>>
where
    K::Output: Send,
{
    match K::ask(limiter).occupy(occupy).try_acquire() {
        Ok(output) => Ok(Some(output)),
        Err(AcquireError::WouldBlock) => Ok(None),
        Err(err) => Err(to_py(py, err)),
    }
}

fn waited(py: Python<'_>, admitted: Admitted) -> PyResult<Py<PyAny>> {
    Ok(admitted
        .waited
        .as_secs_f64()
        .into_pyobject(py)?
        .into_any()
        .unbind())
}

fn held(py: Python<'_>, guard: SlotGuard) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, permit(guard))?.into_any())
}

/// At most `slots` admissions at once, decaying at `per_second`: a bucket
/// of `slots` that drains at `per_second`.
#[pyclass(frozen, module = "ratekeeper._native")]
pub struct RateLimiter {
    limiter: Limiter,
}

#[pymethods]
impl RateLimiter {
    #[new]
    fn new(py: Python<'_>, slots: u64, per_second: f64) -> PyResult<Self> {
        Ok(RateLimiter {
            limiter: limiter(py, LimitSpec::rate(NAME, per_second, slots))?,
        })
    }

    /// Waits (without the GIL) until `occupy` more admissions are allowed;
    /// returns the seconds waited.
    #[pyo3(signature = (occupy=1, timeout_seconds=None))]
    fn acquire(&self, py: Python<'_>, occupy: u64, timeout_seconds: Option<f64>) -> PyResult<f64> {
        wait::<Rate>(py, &self.limiter, occupy, timeout_seconds).map(|a| a.waited.as_secs_f64())
    }

    /// Like `acquire`, for asyncio (see `Client.acquire_async`).
    #[pyo3(signature = (mailbox, occupy=1, timeout_seconds=None))]
    fn acquire_async(
        &self,
        py: Python<'_>,
        mailbox: &Mailbox,
        occupy: u64,
        timeout_seconds: Option<f64>,
    ) -> PyResult<Pending> {
        wait_async::<Rate>(py, mailbox, &self.limiter, occupy, timeout_seconds, waited)
    }

    /// Takes `occupy` admissions if allowed now; never waits.
    #[pyo3(signature = (occupy=1))]
    fn try_acquire(&self, py: Python<'_>, occupy: u64) -> PyResult<bool> {
        Ok(try_take::<Rate>(py, &self.limiter, occupy)?.is_some())
    }

    /// Whether `occupy` admissions would be allowed now.
    #[pyo3(signature = (occupy=1))]
    fn has_capacity(&self, occupy: u64) -> bool {
        has_capacity(&self.limiter, occupy)
    }
}

/// At most `slots` holders at once.
#[pyclass(frozen, module = "ratekeeper._native")]
pub struct ConcurrencyLimiter {
    limiter: Limiter,
}

/// Slots held from a `ConcurrencyLimiter` until released.
#[pyclass(frozen, module = "ratekeeper._native")]
pub struct Permit {
    guard: Mutex<Option<SlotGuard>>,
}

#[pymethods]
impl Permit {
    /// Gives the slots back; releasing twice does nothing.
    fn release(&self) {
        let guard = self.guard.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(guard);
    }
}

fn permit(guard: SlotGuard) -> Permit {
    Permit {
        guard: Mutex::new(Some(guard)),
    }
}

#[pymethods]
impl ConcurrencyLimiter {
    #[new]
    fn new(py: Python<'_>, slots: u64) -> PyResult<Self> {
        Ok(ConcurrencyLimiter {
            limiter: limiter(py, LimitSpec::concurrency(NAME, slots))?,
        })
    }

    /// Waits (without the GIL) for `occupy` slots.
    #[pyo3(signature = (occupy=1, timeout_seconds=None))]
    fn acquire(
        &self,
        py: Python<'_>,
        occupy: u64,
        timeout_seconds: Option<f64>,
    ) -> PyResult<Permit> {
        wait::<Slots>(py, &self.limiter, occupy, timeout_seconds).map(permit)
    }

    /// Like `acquire`, for asyncio (see `Client.acquire_async`).
    #[pyo3(signature = (mailbox, occupy=1, timeout_seconds=None))]
    fn acquire_async(
        &self,
        py: Python<'_>,
        mailbox: &Mailbox,
        occupy: u64,
        timeout_seconds: Option<f64>,
    ) -> PyResult<Pending> {
        wait_async::<Slots>(py, mailbox, &self.limiter, occupy, timeout_seconds, held)
    }

    /// Takes `occupy` slots if free now; `None` otherwise. Never waits.
    #[pyo3(signature = (occupy=1))]
    fn try_acquire(&self, py: Python<'_>, occupy: u64) -> PyResult<Option<Permit>> {
        Ok(try_take::<Slots>(py, &self.limiter, occupy)?.map(permit))
    }

    /// Whether `occupy` slots are free now.
    #[pyo3(signature = (occupy=1))]
    fn has_capacity(&self, occupy: u64) -> bool {
        has_capacity(&self.limiter, occupy)
    }
}
