//! Local limiters: the engine in this process, for single-process code
//! that would otherwise hand-roll a token bucket or a semaphore. Exact:
//! the rate is kept by the same engine and timer as everything else.

use std::future::IntoFuture;
use std::sync::Mutex;

use pyo3::prelude::*;
use ratekeeper_core::{AcquireError, LimitSpec};
use ratekeeper_driver::{Limiter, SlotGuard};

use crate::{error, seconds, wait_interruptibly};

/// The runtime that runs the local limiters' blocking waits (and every
/// asyncio wait).
fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// The one limit of a local limiter.
const NAME: &str = "local";

fn to_py(err: AcquireError) -> PyErr {
    let class = match err {
        AcquireError::TimedOut => "AcquireTimeout",
        AcquireError::WouldBlock => "WouldBlock",
        _ => "InvalidRequest",
    };
    error(class, err.to_string())
}

fn limiter(spec: LimitSpec) -> PyResult<Limiter> {
    let limiter = Limiter::new();
    limiter
        .create(spec)
        .map_err(|e| error("InvalidRequest", e.to_string()))?;
    Ok(limiter)
}

/// Whether `weight` more slots fit now, with nobody waiting ahead.
fn has_capacity(limiter: &Limiter, weight: u64) -> bool {
    let view = limiter.limit(NAME).expect("the local limit exists");
    view.waiting == 0 && view.held as f64 + view.decaying + weight as f64 <= view.slots as f64
}

/// At most `rate` admissions per `period` seconds, with bursts of `burst`.
#[pyclass(frozen, module = "ratekeeper._native")]
pub struct RateLimiter {
    limiter: Limiter,
}

#[pymethods]
impl RateLimiter {
    #[new]
    #[pyo3(signature = (rate, period=1.0, burst=1))]
    fn new(rate: f64, period: f64, burst: u64) -> PyResult<Self> {
        if !(period.is_finite() && period > 0.0) {
            return Err(error(
                "InvalidRequest",
                format!("period must be a positive number of seconds, not {period}"),
            ));
        }
        Ok(RateLimiter {
            limiter: limiter(LimitSpec::rate(NAME, rate / period, burst))?,
        })
    }

    /// Waits (without the GIL) until `weight` more admissions are allowed;
    /// returns the seconds waited.
    #[pyo3(signature = (weight=1, timeout=None))]
    fn acquire(&self, py: Python<'_>, weight: u64, timeout: Option<f64>) -> PyResult<f64> {
        let timeout = seconds("timeout", timeout)?;
        let request = self
            .limiter
            .rate_limit(NAME)
            .occupy(weight)
            .timeout(timeout);
        wait_interruptibly(py, runtime(), request.into_future())?
            .map(|admitted| admitted.waited.as_secs_f64())
            .map_err(to_py)
    }

    /// Like `acquire`, as an awaitable for asyncio.
    #[pyo3(signature = (weight=1, timeout=None))]
    fn acquire_async<'py>(
        &self,
        py: Python<'py>,
        weight: u64,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let timeout = seconds("timeout", timeout)?;
        let limiter = self.limiter.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            limiter
                .rate_limit(NAME)
                .occupy(weight)
                .timeout(timeout)
                .await
                .map(|a| a.waited.as_secs_f64())
                .map_err(to_py)
        })
    }

    /// Takes `weight` admissions if allowed now; never waits.
    #[pyo3(signature = (weight=1))]
    fn try_acquire(&self, weight: u64) -> PyResult<bool> {
        match self.limiter.rate_limit(NAME).occupy(weight).try_acquire() {
            Ok(_) => Ok(true),
            Err(AcquireError::WouldBlock) => Ok(false),
            Err(err) => Err(to_py(err)),
        }
    }

    /// Whether `weight` admissions would be allowed now.
    #[pyo3(signature = (weight=1))]
    fn has_capacity(&self, weight: u64) -> bool {
        has_capacity(&self.limiter, weight)
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
    fn new(slots: u64) -> PyResult<Self> {
        Ok(ConcurrencyLimiter {
            limiter: limiter(LimitSpec::concurrency(NAME, slots))?,
        })
    }

    /// Waits (without the GIL) for `weight` slots.
    #[pyo3(signature = (weight=1, timeout=None))]
    fn acquire(&self, py: Python<'_>, weight: u64, timeout: Option<f64>) -> PyResult<Permit> {
        let timeout = seconds("timeout", timeout)?;
        let request = self
            .limiter
            .concurrency(NAME)
            .occupy(weight)
            .timeout(timeout);
        wait_interruptibly(py, runtime(), request.into_future())?
            .map(permit)
            .map_err(to_py)
    }

    /// Like `acquire`, as an awaitable for asyncio.
    #[pyo3(signature = (weight=1, timeout=None))]
    fn acquire_async<'py>(
        &self,
        py: Python<'py>,
        weight: u64,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let timeout = seconds("timeout", timeout)?;
        let limiter = self.limiter.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            limiter
                .concurrency(NAME)
                .occupy(weight)
                .timeout(timeout)
                .await
                .map(permit)
                .map_err(to_py)
        })
    }

    /// Takes `weight` slots if free now; `None` otherwise. Never waits.
    #[pyo3(signature = (weight=1))]
    fn try_acquire(&self, weight: u64) -> PyResult<Option<Permit>> {
        match self.limiter.concurrency(NAME).occupy(weight).try_acquire() {
            Ok(guard) => Ok(Some(permit(guard))),
            Err(AcquireError::WouldBlock) => Ok(None),
            Err(err) => Err(to_py(err)),
        }
    }

    /// Whether `weight` slots are free now.
    #[pyo3(signature = (weight=1))]
    fn has_capacity(&self, weight: u64) -> bool {
        has_capacity(&self.limiter, weight)
    }
}
