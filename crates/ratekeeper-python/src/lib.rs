//! The native core of the `ratekeeper` Python package: the Rust client,
//! with every wait made outside the GIL.
//!
//! The Python layer (`python/ratekeeper`) builds the public API on these
//! few classes: context managers, configuration, typed exceptions.

mod local;

use std::future::{Future, IntoFuture};
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;
use ratekeeper_client::{Client as RustClient, Error, LeaseGuard};
use ratekeeper_core::{LimitPatch, LimitSpec};

/// The exception classes, defined in Python (`ratekeeper/errors.py`) so
/// that they can also be `TimeoutError`, `LookupError`, ... and registered
/// here once at import.
static ERRORS: OnceLock<Vec<(String, Py<PyType>)>> = OnceLock::new();

/// Registers the Python exception classes, by name.
#[pyfunction]
fn register_errors(classes: Vec<(String, Py<PyType>)>) {
    let _ = ERRORS.set(classes);
}

/// The Python exception for a client error, with its message.
fn to_py(err: Error) -> PyErr {
    let class = match &err {
        Error::Timeout => "AcquireTimeout",
        Error::WouldBlock => "WouldBlock",
        Error::LimitNotFound(_) => "LimitNotFound",
        Error::LimitDeleted(_) => "LimitDeleted",
        Error::LeaseLost { .. } => "LeaseLost",
        Error::Invalid { .. } | Error::InvalidUrl(_) => "InvalidRequest",
        Error::Unauthorized { .. } => "Unauthorized",
        Error::Unavailable(_) | Error::Connect { .. } | Error::Protocol(_) => "Unavailable",
    };
    error(class, err.to_string())
}

fn error(class: &str, message: String) -> PyErr {
    let registered = ERRORS
        .get()
        .and_then(|errors| errors.iter().find(|(name, _)| name == class));
    match registered {
        Some((_, class)) => Python::attach(|py| PyErr::from_type(class.bind(py).clone(), message)),
        None => PyRuntimeError::new_err(message),
    }
}

fn seconds(name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                error(
                    "InvalidRequest",
                    format!("{name} must be a non-negative number of seconds, not {s}"),
                )
            })
        })
        .transpose()
}

/// How often a blocking wait looks up from waiting to run Python's signal
/// handlers, so that Ctrl-C interrupts it.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Something that runs a future to completion on the calling thread.
trait BlockOn {
    fn block_on<F: Future>(&self, future: F) -> F::Output;
}

impl BlockOn for RustClient {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        RustClient::block_on(self, future)
    }
}

impl BlockOn for tokio::runtime::Runtime {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        tokio::runtime::Runtime::block_on(self, future)
    }
}

/// Waits for `future` without the GIL, looking up every [`SIGNAL_CHECK`]
/// to run Python's signal handlers. If one raises (`KeyboardInterrupt`),
/// the future is dropped, which withdraws a queued request, and the
/// exception propagates.
fn wait_interruptibly<F>(
    py: Python<'_>,
    runtime: &(impl BlockOn + Sync),
    future: F,
) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let mut future = Box::pin(future);
    loop {
        let slice = py.detach(|| {
            runtime.block_on(async {
                tokio::time::timeout(SIGNAL_CHECK, future.as_mut())
                    .await
                    .ok()
            })
        });
        if let Some(output) = slice {
            return Ok(output);
        }
        if let Err(interrupted) = py.check_signals() {
            // Dropped inside the runtime, so that a server-side ticket is
            // deleted at once rather than left to lapse.
            py.detach(|| runtime.block_on(async move { drop(future) }));
            return Err(interrupted);
        }
    }
}

/// A connection to ratekeeper: `http://host:port` or `memory://`.
#[pyclass(frozen)]
struct Client {
    inner: RustClient,
}

/// What `acquire` and `acquire_async` ask for, checked.
struct LeaseRequest {
    names: Vec<String>,
    occupy: u64,
    timeout: Option<Duration>,
    ttl: Duration,
    holder: Option<String>,
    create_if_missing: bool,
}

impl LeaseRequest {
    fn new(
        names: Vec<String>,
        occupy: u64,
        timeout: Option<f64>,
        lease_seconds: f64,
        holder: Option<String>,
        create_if_missing: bool,
    ) -> PyResult<Self> {
        Ok(LeaseRequest {
            names,
            occupy,
            timeout: seconds("timeout_seconds", timeout)?,
            ttl: seconds("lease_seconds", Some(lease_seconds))?.expect("given"),
            holder,
            create_if_missing,
        })
    }

    /// The request, to await on `client`.
    fn on(self, client: &RustClient) -> ratekeeper_client::Concurrency<'_> {
        let mut request = client
            .concurrency(self.names)
            .occupy(self.occupy)
            .lease(self.ttl)
            .timeout(self.timeout);
        if let Some(holder) = self.holder {
            request = request.holder(holder);
        }
        if self.create_if_missing {
            request = request.create_if_missing();
        }
        request
    }
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (url, token=None))]
    fn new(url: &str, token: Option<&str>) -> PyResult<Self> {
        let inner = RustClient::connect_blocking(url, token).map_err(to_py)?;
        Ok(Client { inner })
    }

    /// Waits (without the GIL) for a lease on every named limit.
    #[pyo3(signature = (names, occupy=1, timeout=None, lease_seconds=30.0, holder=None, create_if_missing=false))]
    #[allow(clippy::too_many_arguments)]
    fn acquire(
        &self,
        py: Python<'_>,
        names: Vec<String>,
        occupy: u64,
        timeout: Option<f64>,
        lease_seconds: f64,
        holder: Option<String>,
        create_if_missing: bool,
    ) -> PyResult<Lease> {
        let request = LeaseRequest::new(
            names,
            occupy,
            timeout,
            lease_seconds,
            holder,
            create_if_missing,
        )?;
        let future = request.on(&self.inner).into_future();
        let guard = wait_interruptibly(py, &self.inner, future)?.map_err(to_py)?;
        Ok(Lease::holding(guard, self.inner.clone()))
    }

    /// Like `acquire`, as an awaitable for asyncio: the wait runs on
    /// ratekeeper's own threads, never on the event loop. Cancelling the
    /// awaiting task withdraws the request from the queue.
    #[pyo3(signature = (names, occupy=1, timeout=None, lease_seconds=30.0, holder=None, create_if_missing=false))]
    #[allow(clippy::too_many_arguments)]
    fn acquire_async<'py>(
        &self,
        py: Python<'py>,
        names: Vec<String>,
        occupy: u64,
        timeout: Option<f64>,
        lease_seconds: f64,
        holder: Option<String>,
        create_if_missing: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = LeaseRequest::new(
            names,
            occupy,
            timeout,
            lease_seconds,
            holder,
            create_if_missing,
        )?;
        let client = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let guard = request.on(&client).await.map_err(to_py)?;
            Ok(Lease::holding(guard, client.clone()))
        })
    }

    /// Like `rate_limit`, as an awaitable for asyncio.
    #[pyo3(signature = (names, occupy=1, timeout=None))]
    fn rate_limit_async<'py>(
        &self,
        py: Python<'py>,
        names: Vec<String>,
        occupy: u64,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let timeout = seconds("timeout_seconds", timeout)?;
        let client = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let request = client.rate_limit(names).occupy(occupy).timeout(timeout);
            request
                .await
                .map(|waited| waited.as_secs_f64())
                .map_err(to_py)
        })
    }

    /// Waits (without the GIL) for a rate-limited turn; returns the seconds
    /// waited.
    #[pyo3(signature = (names, occupy=1, timeout=None))]
    fn rate_limit(
        &self,
        py: Python<'_>,
        names: Vec<String>,
        occupy: u64,
        timeout: Option<f64>,
    ) -> PyResult<f64> {
        let timeout = seconds("timeout_seconds", timeout)?;
        let request = self.inner.rate_limit(names).occupy(occupy).timeout(timeout);
        wait_interruptibly(py, &self.inner, request.into_future())?
            .map(|waited| waited.as_secs_f64())
            .map_err(to_py)
    }

    /// Creates a limit.
    #[pyo3(signature = (name, slots, slot_decay_per_second=0.0, active=true, description=None))]
    fn create_limit(
        &self,
        py: Python<'_>,
        name: String,
        slots: u64,
        slot_decay_per_second: f64,
        active: bool,
        description: Option<String>,
    ) -> PyResult<()> {
        let spec = LimitSpec {
            name,
            slots,
            slot_decay_per_second,
            active,
            description,
        };
        py.detach(|| self.inner.block_on(self.inner.create_limit(spec)))
            .map_err(to_py)
    }

    /// Changes a limit's slots or activity.
    #[pyo3(signature = (name, slots=None, active=None))]
    fn update_limit(
        &self,
        py: Python<'_>,
        name: &str,
        slots: Option<u64>,
        active: Option<bool>,
    ) -> PyResult<()> {
        let patch = LimitPatch {
            slots,
            active,
            ..LimitPatch::default()
        };
        py.detach(|| self.inner.block_on(self.inner.update_limit(name, patch)))
            .map_err(to_py)
    }

    /// Deletes a limit.
    fn delete_limit(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        py.detach(|| self.inner.block_on(self.inner.delete_limit(name)))
            .map_err(to_py)
    }

    /// Revokes every lease on a limit.
    fn reset_limit(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        py.detach(|| self.inner.block_on(self.inner.reset_limit(name)))
            .map_err(to_py)
    }

    /// A limit's state: `(slots, held, decaying, waiting, active)`.
    fn limit(&self, py: Python<'_>, name: &str) -> PyResult<(u64, u64, f64, u64, bool)> {
        let state = py
            .detach(|| self.inner.block_on(self.inner.limit(name)))
            .map_err(to_py)?;
        Ok((
            state.slots,
            state.held,
            state.decaying,
            state.waiting,
            state.active,
        ))
    }
}

/// Slots held until released; renewed in the background meanwhile.
#[pyclass(frozen)]
struct Lease {
    guard: std::sync::Mutex<Option<LeaseGuard>>,
    client: RustClient,
}

#[pymethods]
impl Lease {
    /// The lease's id.
    #[getter]
    fn id(&self) -> Option<String> {
        self.lock().as_ref().map(|g| g.id().to_string())
    }

    /// Whether the lease was lost (expired unrenewed, or revoked).
    #[getter]
    fn lost(&self) -> bool {
        self.lock().as_ref().is_some_and(LeaseGuard::is_lost)
    }

    /// Seconds the acquire waited for its turn.
    #[getter]
    fn waited(&self) -> f64 {
        self.lock()
            .as_ref()
            .map_or(0.0, |g| g.waited().as_secs_f64())
    }

    /// Like `release`, as an awaitable for asyncio.
    fn release_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let guard = self.lock().take();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match guard {
                Some(guard) => guard.release().await.map_err(to_py),
                None => Ok(()),
            }
        })
    }

    /// Releases the slots; raises `LeaseLost` if they were lost meanwhile.
    /// Releasing twice does nothing.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let Some(guard) = self.lock().take() else {
            return Ok(());
        };
        py.detach(|| self.client.block_on(guard.release()))
            .map_err(to_py)
    }
}

impl Lease {
    fn holding(guard: LeaseGuard, client: RustClient) -> Self {
        Lease {
            guard: std::sync::Mutex::new(Some(guard)),
            client,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<LeaseGuard>> {
        self.guard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Client>()?;
    m.add_class::<Lease>()?;
    m.add_class::<local::RateLimiter>()?;
    m.add_class::<local::ConcurrencyLimiter>()?;
    m.add_class::<local::Permit>()?;
    m.add_function(wrap_pyfunction!(register_errors, m)?)?;
    Ok(())
}
