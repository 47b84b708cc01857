//! The native core of the `ratekeeper` Python package: the Rust client,
//! with every wait made outside the GIL.
//!
//! The Python layer (`python/ratekeeper`) builds the public API on these
//! few classes: context managers, configuration, typed exceptions and
//! objects.
//!
//! - [`bridge`]: how asyncio waits get their answers, without ever touching
//!   Python from ratekeeper's own threads;
//! - [`local`]: the local limiters (the engine in this process);
//! - this file: the client, its leases, errors and blocking waits.

mod bridge;
mod local;
mod throttle;

use std::future::{Future, IntoFuture};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use ratekeeper_client::api::{InstanceOrder, InstancePage, Lease as LeaseInfo, Limit};
use ratekeeper_client::{Client as RustClient, Error, LeaseGuard};
use ratekeeper_core::{Adaptive, LimitPatch, LimitSpec, PauseSpec, ThrottleReport};

use bridge::{Mailbox, Pending};

/// The exception classes, defined in Python (`ratekeeper/errors.py`) so
/// that they can also be `TimeoutError`, `LookupError`, ... and registered
/// here once at import, by the error code each stands for.
static ERRORS: OnceLock<Vec<(String, Py<PyType>)>> = OnceLock::new();

/// Registers the Python exception classes, by error code.
#[pyfunction]
fn register_errors(classes: Vec<(String, Py<PyType>)>) {
    let _ = ERRORS.set(classes);
}

/// The family class of a client error, by the code of that class: what a
/// code without a class of its own raises.
fn family(err: &Error) -> &'static str {
    match err {
        Error::Timeout => "timeout",
        Error::WouldBlock => "would_block",
        Error::LimitNotFound(_) => "limit_not_found",
        Error::LimitDeleted(_) => "limit_deleted",
        Error::LeaseLost { .. } => "lease_lost",
        Error::Invalid { .. } | Error::InvalidUrl(_) => "invalid",
        Error::Unauthorized { .. } => "unauthorized",
        Error::QuotaExceeded(_) => "quota_exceeded",
        Error::Unavailable(_) | Error::Connect { .. } | Error::Protocol(_) => "unavailable",
        // A kind of error newer than this table: by its code's class, or
        // InvalidRequest.
        _ => "invalid",
    }
}

/// Every error code of the API: its text, the code of its family's class,
/// its HTTP status and whether a retry can help. `ratekeeper.errors`
/// makes a class for each code from it, under its family's class.
#[pyfunction]
fn error_codes() -> Vec<(&'static str, &'static str, u16, bool)> {
    ratekeeper_client::api::ErrorCode::ALL
        .iter()
        .map(|code| {
            let err = Error::from_code(code.as_str(), String::new());
            (code.as_str(), family(&err), code.status(), code.retryable())
        })
        .collect()
}

/// The Python exception for a client error: of the class of its exact
/// code, else of its family's; its message, with `code` (the server's
/// stable code) and `field` (the request field at fault, or `None`) as
/// attributes.
fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let code = err.code().to_owned();
    let field = match &err {
        Error::Invalid { field, .. } => field.clone(),
        _ => None,
    };
    error(py, &[&code, family(&err)], err.to_string(), &code, field)
}

/// A Python exception of the first class registered for one of `classes`
/// (the `InvalidRequest` class if none is).
fn error(
    py: Python<'_>,
    classes: &[&str],
    message: String,
    code: &str,
    field: Option<String>,
) -> PyErr {
    let registered = ERRORS.get();
    let find = |wanted: &str| {
        registered.and_then(|all| all.iter().find(|(c, _)| c == wanted).map(|(_, k)| k))
    };
    let found = classes.iter().find_map(|wanted| find(wanted));
    let Some(class) = found.or_else(|| find("invalid")) else {
        return PyRuntimeError::new_err(message);
    };
    let made = class.bind(py).call1((message.clone(),)).and_then(|exc| {
        exc.setattr("code", code)?;
        exc.setattr("field", field)?;
        Ok(exc)
    });
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => PyRuntimeError::new_err(message),
    }
}

/// An `InvalidRequest` about argument `field`, in the caller's words.
fn invalid(py: Python<'_>, field: &str, message: String) -> PyErr {
    error(
        py,
        &["invalid"],
        message,
        "invalid_argument",
        Some(field.to_owned()),
    )
}

fn seconds(py: Python<'_>, name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                invalid(
                    py,
                    name,
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

/// Refuses a blocking call on a thread that runs an asyncio event loop: it
/// would stall every task of that loop. `instead` names the call to await.
fn refuse_in_event_loop(py: Python<'_>, instead: &str) -> PyResult<()> {
    static RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let running = RUNNING_LOOP
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncio")?.getattr("_get_running_loop")?.unbind())
        })?
        .call0(py)?;
    if running.is_none(py) {
        return Ok(());
    }
    Err(error(
        py,
        &["blocking_call_in_event_loop"],
        format!(
            "this call would block the running asyncio event loop while it waits; \
             use `{instead}` instead"
        ),
        "blocking_call_in_event_loop",
        None,
    ))
}

/// Waits for `future` without the GIL, looking up every [`SIGNAL_CHECK`]
/// to run Python's signal handlers. If one raises (`KeyboardInterrupt`),
/// the future is dropped, which withdraws a queued request, and the
/// exception propagates. Refused on a thread running an event loop.
fn wait_interruptibly<F>(
    py: Python<'_>,
    runtime: &(impl BlockOn + Sync),
    instead: &str,
    future: F,
) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    refuse_in_event_loop(py, instead)?;
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

/// Bumped in a forked child (see `after_fork`): runtimes made before the
/// fork have no threads there and are replaced.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Called by `os.register_at_fork(after_in_child=...)`.
#[pyfunction]
fn after_fork() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

/// A connection to ratekeeper: `http://host:port` or `memory://`.
#[pyclass(frozen, module = "ratekeeper._native")]
struct Client {
    inner: RustClient,
}

/// What `acquire` and `acquire_async` ask for, checked once where it is
/// made.
#[pyclass(frozen, module = "ratekeeper._native")]
struct LeaseRequest {
    names: Vec<String>,
    occupy: u64,
    timeout: Option<Duration>,
    ttl: Duration,
    holder: Option<String>,
    create_if_missing: bool,
}

#[pymethods]
impl LeaseRequest {
    #[new]
    #[pyo3(signature = (names, occupy=1, timeout_seconds=None, lease_seconds=30.0, holder=None, create_if_missing=false))]
    fn new(
        py: Python<'_>,
        names: Vec<String>,
        occupy: u64,
        timeout_seconds: Option<f64>,
        lease_seconds: f64,
        holder: Option<String>,
        create_if_missing: bool,
    ) -> PyResult<Self> {
        Ok(LeaseRequest {
            names,
            occupy,
            timeout: seconds(py, "timeout_seconds", timeout_seconds)?,
            ttl: seconds(py, "lease_seconds", Some(lease_seconds))?.expect("given"),
            holder,
            create_if_missing,
        })
    }
}

impl LeaseRequest {
    /// The request, to await on `client`.
    fn on<'c>(&self, client: &'c RustClient) -> ratekeeper_client::Concurrency<'c> {
        let mut request = client
            .concurrency(self.names.clone())
            .occupy(self.occupy)
            .lease(self.ttl)
            .timeout(self.timeout);
        if let Some(holder) = &self.holder {
            request = request.holder(holder.clone());
        }
        if self.create_if_missing {
            request = request.create_if_missing();
        }
        request
    }
}

fn limit_dict(py: Python<'_>, state: Limit) -> PyResult<Py<PyAny>> {
    let dict = PyDict::new(py);
    dict.set_item("name", state.name)?;
    dict.set_item("slots", state.slots)?;
    dict.set_item("slot_decay_per_second", state.slot_decay_per_second)?;
    dict.set_item("active", state.active)?;
    dict.set_item("description", state.description)?;
    dict.set_item("held", state.held)?;
    dict.set_item("decaying", state.decaying)?;
    dict.set_item("waiting", state.waiting)?;
    let paused = state
        .paused
        .map(|pause| {
            let dict = PyDict::new(py);
            dict.set_item("until", pause.until as f64 / 1e3)?;
            dict.set_item("since", pause.since as f64 / 1e3)?;
            dict.set_item("reason", pause.reason)?;
            dict.set_item("reporter", pause.reporter)?;
            PyResult::Ok(dict)
        })
        .transpose()?;
    dict.set_item("paused", paused)?;
    let template = state
        .template
        .map(|t| {
            let dict = PyDict::new(py);
            dict.set_item("instances", t.instances)?;
            dict.set_item("max_instances", t.max_instances)?;
            PyResult::Ok(dict)
        })
        .transpose()?;
    dict.set_item("template", template)?;
    dict.set_item("instance_of", state.instance_of)?;
    let adaptive = state
        .adaptive
        .map(|a| {
            let dict = PyDict::new(py);
            dict.set_item("decrease_factor", a.decrease_factor)?;
            dict.set_item("recovery_seconds", a.recovery_seconds)?;
            dict.set_item("scale", a.scale)?;
            dict.set_item("effective", a.effective)?;
            PyResult::Ok(dict)
        })
        .transpose()?;
    dict.set_item("adaptive", adaptive)?;
    Ok(dict.into_any().unbind())
}

/// An adaptive limit's settings from Python's `(decrease_factor, recovery_seconds)`.
fn adaptive_settings((decrease_factor, recovery_seconds): (f64, f64)) -> Adaptive {
    Adaptive {
        decrease_factor,
        recovery_seconds,
    }
}

fn lease_dict(py: Python<'_>, state: LeaseInfo) -> PyResult<Py<PyAny>> {
    let dict = PyDict::new(py);
    dict.set_item("id", state.id)?;
    dict.set_item("limits", state.limits)?;
    dict.set_item("occupy", state.occupy)?;
    dict.set_item("holder", state.holder)?;
    dict.set_item("granted_at", state.granted_at as f64 / 1e3)?;
    dict.set_item("expires_at", state.expires_at as f64 / 1e3)?;
    dict.set_item("lease_seconds", state.lease_seconds)?;
    Ok(dict.into_any().unbind())
}

impl Client {
    /// Runs an admin call to completion without the GIL.
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        call: impl Future<Output = Result<T, Error>> + Send,
    ) -> PyResult<T> {
        py.detach(|| self.inner.block_on(call))
            .map_err(|e| to_py(py, e))
    }
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (url, token=None))]
    fn new(py: Python<'_>, url: &str, token: Option<&str>) -> PyResult<Self> {
        let inner = RustClient::connect_blocking(url, token).map_err(|e| to_py(py, e))?;
        Ok(Client { inner })
    }

    /// Waits (without the GIL) for a lease on every named limit.
    fn acquire(&self, py: Python<'_>, request: &LeaseRequest) -> PyResult<Lease> {
        let future = request.on(&self.inner).into_future();
        let instead = "async with ratekeeper.asyncio.concurrency(...)";
        let guard =
            wait_interruptibly(py, &self.inner, instead, future)?.map_err(|e| to_py(py, e))?;
        Ok(Lease::holding(guard, self.inner.clone()))
    }

    /// Like `acquire`, for asyncio: the wait runs on ratekeeper's own
    /// threads and its outcome arrives in `mailbox` under the returned
    /// `Pending`'s id. Cancelling it withdraws the request.
    fn acquire_async(&self, mailbox: &Mailbox, request: Py<LeaseRequest>) -> Pending {
        let client = self.inner.clone();
        let wait = async move {
            let granted = request.get().on(&client).await;
            (granted, client)
        };
        mailbox.spawn(self.inner.runtime(), wait, |py, (granted, client)| {
            let guard = granted.map_err(|e| to_py(py, e))?;
            Ok(Py::new(py, Lease::holding(guard, client))?.into_any())
        })
    }

    /// Waits (without the GIL) for a rate-limited turn; returns the seconds
    /// waited.
    #[pyo3(signature = (names, occupy=1, timeout_seconds=None))]
    fn rate_limit(
        &self,
        py: Python<'_>,
        names: Vec<String>,
        occupy: u64,
        timeout_seconds: Option<f64>,
    ) -> PyResult<f64> {
        let timeout = seconds(py, "timeout_seconds", timeout_seconds)?;
        let request = self.inner.rate_limit(names).occupy(occupy).timeout(timeout);
        let instead = "await ratekeeper.asyncio.rate_limit(...)";
        wait_interruptibly(py, &self.inner, instead, request.into_future())?
            .map(|waited| waited.as_secs_f64())
            .map_err(|e| to_py(py, e))
    }

    /// Like `rate_limit`, for asyncio (see `acquire_async`).
    #[pyo3(signature = (mailbox, names, occupy=1, timeout_seconds=None))]
    fn rate_limit_async(
        &self,
        py: Python<'_>,
        mailbox: &Mailbox,
        names: Vec<String>,
        occupy: u64,
        timeout_seconds: Option<f64>,
    ) -> PyResult<Pending> {
        let timeout = seconds(py, "timeout_seconds", timeout_seconds)?;
        let client = self.inner.clone();
        let wait = async move {
            let request = client.rate_limit(names).occupy(occupy).timeout(timeout);
            request.await
        };
        Ok(mailbox.spawn(self.inner.runtime(), wait, |py, waited| {
            let waited = waited.map_err(|e| to_py(py, e))?;
            Ok(waited.as_secs_f64().into_pyobject(py)?.into_any().unbind())
        }))
    }

    /// Creates a limit; returns its state as a dict.
    #[pyo3(signature = (name, slots, slot_decay_per_second=0.0, active=true, description=None, max_instances=None, adaptive=None))]
    #[allow(clippy::too_many_arguments)]
    fn create_limit(
        &self,
        py: Python<'_>,
        name: String,
        slots: u64,
        slot_decay_per_second: f64,
        active: bool,
        description: Option<String>,
        max_instances: Option<u64>,
        adaptive: Option<(f64, f64)>,
    ) -> PyResult<Py<PyAny>> {
        let spec = LimitSpec {
            name: name.clone(),
            slots,
            slot_decay_per_second,
            active,
            description,
            max_instances,
            adaptive: adaptive.map(adaptive_settings),
        };
        let created = self.call(py, self.inner.create_limit(spec))?;
        limit_dict(py, created)
    }

    /// Changes any of a limit's fields; `description=""` clears it.
    #[pyo3(signature = (name, slots=None, slot_decay_per_second=None, active=None, description=None, max_instances=None, adaptive=None))]
    #[allow(clippy::too_many_arguments)]
    fn update_limit(
        &self,
        py: Python<'_>,
        name: &str,
        slots: Option<u64>,
        slot_decay_per_second: Option<f64>,
        active: Option<bool>,
        description: Option<String>,
        max_instances: Option<u64>,
        adaptive: Option<(bool, f64, f64)>,
    ) -> PyResult<Py<PyAny>> {
        let patch = LimitPatch {
            slots,
            slot_decay_per_second,
            active,
            description: description.map(|d| Some(d).filter(|d| !d.is_empty())),
            max_instances,
            adaptive: adaptive
                .map(|(on, factor, recovery)| on.then(|| adaptive_settings((factor, recovery)))),
        };
        let changed = self.call(py, self.inner.update_limit(name, patch))?;
        limit_dict(py, changed)
    }

    /// Deletes a limit.
    fn delete_limit(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.call(py, self.inner.delete_limit(name))
    }

    /// Revokes every lease on a limit and clears its decaying slots.
    fn reset_limit(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let reset = self.call(py, self.inner.reset_limit(name))?;
        limit_dict(py, reset)
    }

    /// Pauses a limit for `seconds` (a longer pause already set is kept).
    #[pyo3(signature = (name, seconds, reason=None, reporter=None))]
    fn pause_limit(
        &self,
        py: Python<'_>,
        name: &str,
        seconds: f64,
        reason: Option<String>,
        reporter: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let pause = PauseSpec {
            reason,
            reporter: Some(reporter.unwrap_or_else(ratekeeper_client::reporter)),
            ..PauseSpec::for_seconds(seconds)
        };
        let paused = self.call(py, self.inner.pause_limit(name, pause))?;
        limit_dict(py, paused)
    }

    /// Reports that the upstream behind a limit said "slow down".
    #[pyo3(signature = (name, retry_after=None, reason=None, reporter=None))]
    fn report_throttled(
        &self,
        py: Python<'_>,
        name: &str,
        retry_after: Option<f64>,
        reason: Option<String>,
        reporter: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let report = ThrottleReport {
            retry_after,
            reason,
            reporter: Some(reporter.unwrap_or_else(ratekeeper_client::reporter)),
        };
        let reported = self.call(py, self.inner.report(name, report))?;
        limit_dict(py, reported)
    }

    /// Ends a limit's pause now.
    fn resume_limit(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let resumed = self.call(py, self.inner.resume_limit(name))?;
        limit_dict(py, resumed)
    }

    /// A limit's state, as a dict.
    fn limit(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let state = self.call(py, self.inner.limit(name))?;
        limit_dict(py, state)
    }

    /// Whether `occupy` slots of `name` would be granted at once now, as
    /// far as the server's figures say (the rule of `Limit::has_room`).
    fn has_room(&self, py: Python<'_>, name: &str, occupy: u64) -> PyResult<bool> {
        let state = self.call(py, self.inner.limit(name))?;
        Ok(state.has_room(occupy))
    }

    /// Every limit's state, ordered by name.
    fn limits(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let states = self.call(py, self.inner.limits())?;
        states.into_iter().map(|s| limit_dict(py, s)).collect()
    }

    /// A page of a template's instances: `(states, next_after)`.
    #[pyo3(signature = (template, prefix=String::new(), busiest=false, after=None, count=100))]
    #[allow(clippy::too_many_arguments)]
    fn instances(
        &self,
        py: Python<'_>,
        template: &str,
        prefix: String,
        busiest: bool,
        after: Option<String>,
        count: usize,
    ) -> PyResult<(Vec<Py<PyAny>>, Option<String>)> {
        let page = InstancePage {
            prefix,
            order: InstanceOrder::busiest_first(busiest),
            after,
            count,
        };
        let found = self.call(py, self.inner.instances(template, &page))?;
        let states = found
            .instances
            .into_iter()
            .map(|s| limit_dict(py, s))
            .collect::<PyResult<_>>()?;
        Ok((states, found.next_after))
    }

    /// Live leases, all or those on one limit.
    #[pyo3(signature = (limit=None))]
    fn leases(&self, py: Python<'_>, limit: Option<&str>) -> PyResult<Vec<Py<PyAny>>> {
        let states = self.call(py, self.inner.leases(limit))?;
        states.into_iter().map(|s| lease_dict(py, s)).collect()
    }
}

/// Slots held until released; renewed in the background meanwhile.
#[pyclass(frozen, module = "ratekeeper._native")]
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

    /// Like `release`, for asyncio (see `Client.acquire_async`).
    fn release_async(&self, mailbox: &Mailbox) -> Pending {
        let guard = self.lock().take();
        let release = async move {
            match guard {
                Some(guard) => guard.release().await,
                None => Ok(()),
            }
        };
        mailbox.spawn(self.client.runtime(), release, |py, released| {
            released.map_err(|e| to_py(py, e))?;
            Ok(py.None())
        })
    }

    /// Releases the slots in the background, without waiting for the
    /// server's answer (nor reporting a lost lease): for code that cannot
    /// wait, such as a callback.
    fn release_nowait(&self) {
        let guard = self.lock().take();
        self.release_in_background(guard);
    }

    /// Releases the slots; raises `LeaseLost` if they were lost meanwhile.
    /// Releasing twice does nothing.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let Some(guard) = self.lock().take() else {
            return Ok(());
        };
        py.detach(|| self.client.block_on(guard.release()))
            .map_err(|e| to_py(py, e))
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

impl Lease {
    /// Drops `guard` inside the client's runtime, where a guard's drop
    /// releases its lease in the background.
    fn release_in_background(&self, guard: Option<LeaseGuard>) {
        if let Some(guard) = guard {
            let _inside = self.client.runtime().enter();
            drop(guard);
        }
    }
}

impl Drop for Lease {
    /// A lease dropped unreleased (its future was cancelled after the
    /// grant, say) is released in the background rather than by a blocking
    /// call on whichever Python thread drops it.
    fn drop(&mut self) {
        let guard = self.lock().take();
        self.release_in_background(guard);
    }
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Client>()?;
    m.add_class::<Lease>()?;
    m.add_class::<LeaseRequest>()?;
    m.add_class::<Mailbox>()?;
    m.add_class::<Pending>()?;
    m.add_class::<local::RateLimiter>()?;
    m.add_class::<local::ConcurrencyLimiter>()?;
    m.add_class::<local::Permit>()?;
    m.add_function(wrap_pyfunction!(register_errors, m)?)?;
    m.add_function(wrap_pyfunction!(throttle::throttled_for, m)?)?;
    m.add_function(wrap_pyfunction!(error_codes, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
