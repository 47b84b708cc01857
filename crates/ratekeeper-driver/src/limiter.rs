//! The in-process limiter: the engine for one program, with no server.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ratekeeper_core::{
    AcquireError, AcquireRequest, Claim, Grant, Held, InstanceQuery, LimitError, LimitPatch,
    LimitSpec, LimitView, PauseSpec, Permit, ThrottleReport, Timestamp,
};
use smallvec::SmallVec;

use crate::driver::{Driver, Pending};

/// Concurrency and rate limits shared by every task and thread of this
/// process. Clones share the same limits.
///
/// ```
/// use ratekeeper_driver::Limiter;
/// use ratekeeper_core::LimitSpec;
///
/// let limiter = Limiter::new();
/// limiter.create(LimitSpec::concurrency("db", 2)).unwrap();
/// limiter.create(LimitSpec::rate("api", 100.0, 10)).unwrap();
///
/// let guard = limiter.concurrency("db").wait().unwrap(); // blocks for a slot
/// limiter.rate_limit("api").wait().unwrap();              // blocks for a token
/// drop(guard);                                            // frees the slot
/// ```
#[derive(Clone, Default)]
pub struct Limiter {
    driver: Driver,
}

impl Limiter {
    /// A limiter with no limits yet.
    pub fn new() -> Self {
        Limiter::default()
    }

    /// The driver underneath, for reads and operations this API lacks.
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// Creates a limit.
    pub fn create(&self, spec: LimitSpec) -> Result<LimitView, LimitError> {
        self.driver
            .apply(|engine, now| engine.create_limit(now, &spec))
    }

    /// Changes a limit; waiters it lets in are granted at once.
    pub fn update(&self, name: &str, patch: LimitPatch) -> Result<LimitView, LimitError> {
        self.driver
            .apply(|engine, now| engine.update_limit(now, name, &patch))
    }

    /// Deletes a limit; its waiters fail with `limit_deleted`.
    pub fn delete(&self, name: &str) -> Result<(), LimitError> {
        self.driver
            .apply(|engine, now| engine.delete_limit(now, name))
    }

    /// Clears a limit: forgets its holders and its decaying slots.
    pub fn reset(&self, name: &str) -> Result<LimitView, LimitError> {
        self.driver
            .apply(|engine, now| engine.reset_limit(now, name))
    }

    /// Pauses a limit: nothing is granted until the pause ends (see
    /// [`Engine::pause`](ratekeeper_core::Engine::pause)).
    pub fn pause(&self, name: &str, pause: PauseSpec) -> Result<LimitView, LimitError> {
        self.driver
            .apply(|engine, now| engine.pause(now, name, &pause))
    }

    /// Ends a limit's pause now.
    pub fn resume(&self, name: &str) -> Result<LimitView, LimitError> {
        self.driver.apply(|engine, now| engine.resume(now, name))
    }

    /// Reports that the upstream behind a limit said "slow down" (see
    /// [`Engine::report_throttled`](ratekeeper_core::Engine::report_throttled)).
    pub fn report_throttled(
        &self,
        name: &str,
        report: ThrottleReport,
    ) -> Result<LimitView, LimitError> {
        self.driver
            .apply(|engine, now| engine.report_throttled(now, name, &report))
    }

    /// A page of a template's instances.
    pub fn instances(
        &self,
        template: &str,
        query: InstanceQuery<'_>,
    ) -> Result<Vec<LimitView>, LimitError> {
        self.driver.apply(|engine, now| {
            engine.advance(now);
            engine.instances(template, &query)
        })
    }

    /// A limit as it is now.
    pub fn limit(&self, name: &str) -> Result<LimitView, LimitError> {
        self.driver.apply(|engine, now| {
            engine.advance(now);
            engine.limit(name)
        })
    }

    /// Whether `occupy` slots of `name` would be granted now, without
    /// asking (see [`Engine::has_room`](ratekeeper_core::Engine::has_room)).
    pub fn has_room(&self, name: &str, occupy: u64) -> Result<bool, LimitError> {
        self.driver.apply(|engine, now| {
            engine.advance(now);
            engine.has_room(name, occupy)
        })
    }

    /// Every limit as it is now, by name.
    pub fn limits(&self) -> Vec<LimitView> {
        self.driver.apply(|engine, now| {
            engine.advance(now);
            engine.limits()
        })
    }

    /// Asks for slots on every named limit, held until the guard is dropped.
    /// Await the request, or `wait()` for it on a thread.
    pub fn concurrency<'a>(&'a self, names: impl Into<Names<'a>>) -> Acquire<'a, Slots> {
        Acquire::new(self, names.into())
    }

    /// Asks to be admitted by every named rate limit: waits exactly until
    /// enough slots have decayed, then occupies them (they decay by
    /// themselves; there is nothing to release).
    pub fn rate_limit<'a>(&'a self, names: impl Into<Names<'a>>) -> Acquire<'a, Rate> {
        Acquire::new(self, names.into())
    }
}

/// The names a request is for: one (`"db"`) or several (`["db", "api"]`).
#[derive(Debug, Clone)]
pub struct Names<'a>(SmallVec<[&'a str; 4]>);

impl<'a> From<&'a str> for Names<'a> {
    fn from(name: &'a str) -> Self {
        Names(smallvec::smallvec![name])
    }
}

impl<'a> From<&'a String> for Names<'a> {
    fn from(name: &'a String) -> Self {
        Names::from(name.as_str())
    }
}

impl<'a, const N: usize> From<[&'a str; N]> for Names<'a> {
    fn from(names: [&'a str; N]) -> Self {
        Names(names.into_iter().collect())
    }
}

impl<'a> From<&'a [&'a str]> for Names<'a> {
    fn from(names: &'a [&'a str]) -> Self {
        Names(names.iter().copied().collect())
    }
}

impl<'a> From<&'a [String]> for Names<'a> {
    fn from(names: &'a [String]) -> Self {
        Names(names.iter().map(String::as_str).collect())
    }
}

/// What a kind of request yields once granted.
pub trait Kind {
    /// The grant as the caller sees it.
    type Output;
    /// What the engine is asked to hold.
    const CLAIM: Claim<'static>;
    /// Turns the engine's grant into the caller's value.
    fn finish(driver: &Driver, grant: Grant) -> Self::Output;
}

/// Concurrency mode: slots held by a [`SlotGuard`].
#[derive(Debug)]
pub enum Slots {}

/// Rate mode: decaying slots; the caller gets an [`Admitted`].
#[derive(Debug)]
pub enum Rate {}

impl Kind for Slots {
    type Output = SlotGuard;
    const CLAIM: Claim<'static> = Claim::Permit;

    fn finish(driver: &Driver, grant: Grant) -> SlotGuard {
        let Held::Permit(permit) = grant.held else {
            unreachable!("a permit claim is granted a permit")
        };
        SlotGuard {
            driver: driver.clone(),
            permit: Some(permit),
            waited: grant.waited,
        }
    }
}

impl Kind for Rate {
    type Output = Admitted;
    const CLAIM: Claim<'static> = Claim::Rate;

    fn finish(_: &Driver, grant: Grant) -> Admitted {
        Admitted {
            granted_at: grant.granted_at,
            waited: grant.waited,
        }
    }
}

/// A request being built: set `occupy` and `timeout`, then await it, `wait()`
/// for it, or `try_acquire()` it.
#[must_use = "a request does nothing until it is awaited, waited for or tried"]
pub struct Acquire<'a, K> {
    limiter: &'a Limiter,
    names: Names<'a>,
    occupy: u64,
    timeout: Option<Duration>,
    kind: PhantomData<fn() -> K>,
}

impl<'a, K: Kind> Acquire<'a, K> {
    fn new(limiter: &'a Limiter, names: Names<'a>) -> Self {
        Acquire {
            limiter,
            names,
            occupy: 1,
            timeout: None,
            kind: PhantomData,
        }
    }

    /// How many slots to occupy on each limit (default 1).
    pub fn occupy(mut self, occupy: u64) -> Self {
        self.occupy = occupy;
        self
    }

    /// How long to wait at most (default, or `None`: forever); on expiry the
    /// request fails with [`AcquireError::TimedOut`] and holds nothing.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// Tries once, without waiting: [`AcquireError::WouldBlock`] if the
    /// request cannot be granted right now.
    pub fn try_acquire(self) -> Result<K::Output, AcquireError> {
        self.timeout(Duration::ZERO).wait()
    }

    /// Blocks the calling thread until granted (or failed). Do not call it
    /// on an async runtime's thread: await the request there instead.
    pub fn wait(self) -> Result<K::Output, AcquireError> {
        let driver = &self.limiter.driver;
        self.send().wait().map(|grant| K::finish(driver, grant))
    }

    fn send(&self) -> Pending {
        let request = AcquireRequest {
            names: &self.names.0,
            occupy: self.occupy,
            claim: K::CLAIM,
            timeout: self.timeout,
            create_if_missing: false,
        };
        self.limiter.driver.acquire(&request)
    }
}

impl<'a, K: Kind> IntoFuture for Acquire<'a, K> {
    type Output = Result<K::Output, AcquireError>;
    type IntoFuture = AcquireFuture<'a, K>;

    /// Sends the request; the future resolves when it is granted or fails.
    /// Dropping the future withdraws the request.
    fn into_future(self) -> AcquireFuture<'a, K> {
        AcquireFuture {
            pending: self.send(),
            driver: &self.limiter.driver,
            kind: PhantomData,
        }
    }
}

/// The future of an awaited [`Acquire`].
#[must_use = "dropping the future withdraws the request"]
pub struct AcquireFuture<'a, K> {
    pending: Pending,
    driver: &'a Driver,
    kind: PhantomData<fn() -> K>,
}

impl<K: Kind> Future for AcquireFuture<'_, K> {
    type Output = Result<K::Output, AcquireError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = std::task::ready!(Pin::new(&mut this.pending).poll(cx));
        Poll::Ready(outcome.map(|grant| K::finish(this.driver, grant)))
    }
}

/// Slots held on some limits; dropping the guard frees them.
#[must_use = "dropping the guard frees the slots at once"]
pub struct SlotGuard {
    driver: Driver,
    /// `None` once given back.
    permit: Option<Permit>,
    waited: Duration,
}

impl SlotGuard {
    /// How long the request waited in the queue.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Frees the slots now (dropping the guard does the same).
    pub fn release(mut self) {
        self.give_back();
    }

    fn give_back(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.driver.give_back(Held::Permit(permit));
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl std::fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard")
            .field("occupy", &self.permit.as_ref().map(Permit::occupy))
            .field("waited", &self.waited)
            .finish()
    }
}

/// Admission by a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// When it was admitted.
    pub granted_at: Timestamp,
    /// How long it waited for its turn.
    pub waited: Duration,
}
