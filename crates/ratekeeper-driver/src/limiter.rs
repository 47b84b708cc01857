//! The in-process limiter: the engine for one program, with no server.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ratekeeper_core::{
    AcquireError, AcquireRequest, Claim, Engine, Grant, Held, InstanceQuery, LimitError,
    LimitPatch, LimitSpec, LimitView, PauseSpec, Permit, ThrottleReport, Timestamp,
};
use smallvec::SmallVec;

use crate::Clock;
use crate::driver::{Driver, Pending};
use crate::fast::{FastPaths, FastSlot};

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
#[derive(Clone)]
pub struct Limiter {
    driver: Driver,
    /// The lock-free paths of the handles made (see `fast.rs`).
    fast: Arc<FastPaths>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new()
    }
}

impl Limiter {
    /// A limiter with no limits yet, on the CPU's cycle counter (see
    /// [`Clock::counter`]: a rate request reads the clock).
    pub fn new() -> Self {
        let driver = Driver::on_clock(Clock::counter());
        Limiter {
            fast: FastPaths::new(driver.clone()),
            driver,
        }
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

    /// Runs a change of limit `name` on the engine, its fast path closed
    /// first (see `fast.rs`); answers the limit as callers see it.
    fn change(
        &self,
        name: &str,
        change: impl FnOnce(&mut Engine, Timestamp) -> Result<LimitView, LimitError>,
    ) -> Result<LimitView, LimitError> {
        self.driver.apply(|engine, now| {
            self.fast.close(engine, now, &[name]);
            let mut view = change(engine, now)?;
            self.fast.fold(&mut view, now);
            Ok(view)
        })
    }

    /// Changes a limit; waiters it lets in are granted at once.
    pub fn update(&self, name: &str, patch: LimitPatch) -> Result<LimitView, LimitError> {
        self.change(name, |engine, now| engine.update_limit(now, name, &patch))
    }

    /// Deletes a limit; its waiters fail with `limit_deleted`.
    pub fn delete(&self, name: &str) -> Result<(), LimitError> {
        self.driver.apply(|engine, now| {
            self.fast.close(engine, now, &[name]);
            engine.delete_limit(now, name)?;
            self.fast.forget_counts(name);
            Ok(())
        })
    }

    /// Clears a limit: forgets its holders and its decaying slots.
    pub fn reset(&self, name: &str) -> Result<LimitView, LimitError> {
        self.change(name, |engine, now| engine.reset_limit(now, name))
    }

    /// Pauses a limit: nothing is granted until the pause ends (see
    /// [`Engine::pause`](ratekeeper_core::Engine::pause)).
    pub fn pause(&self, name: &str, pause: PauseSpec) -> Result<LimitView, LimitError> {
        self.change(name, |engine, now| engine.pause(now, name, &pause))
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
        self.change(name, |engine, now| {
            engine.report_throttled(now, name, &report)
        })
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
            let mut view = engine.limit(name)?;
            self.fast.fold(&mut view, now);
            Ok(view)
        })
    }

    /// Whether `occupy` slots of `name` would be granted now, without
    /// asking (see [`Engine::has_room`](ratekeeper_core::Engine::has_room)).
    pub fn has_room(&self, name: &str, occupy: u64) -> Result<bool, LimitError> {
        self.driver.apply(|engine, now| {
            self.fast.close(engine, now, &[name]);
            engine.has_room(name, occupy)
        })
    }

    /// Every limit as it is now, by name.
    pub fn limits(&self) -> Vec<LimitView> {
        self.driver.apply(|engine, now| {
            engine.advance(now);
            let mut views = engine.limits();
            views.iter_mut().for_each(|view| self.fast.fold(view, now));
            views
        })
    }

    /// A handle on one limit, for the requests a program makes on it most:
    /// while nobody waits on the limit, its handle takes and gives back a
    /// concurrency limit's slots, or is admitted by a rate limit, with one
    /// atomic operation each, without the lock every other request takes
    /// (see [`LimitHandle`]).
    pub fn handle(&self, name: &str) -> Result<LimitHandle, LimitError> {
        self.limit(name)?;
        let slot = self.fast.slot(name);
        Ok(LimitHandle {
            limiter: self.clone(),
            name: Arc::clone(&slot.name),
            slot,
        })
    }

    /// Sends a request to the engine, closing the fast paths of its limits
    /// first and, when it is granted at once, opening them again.
    fn send(&self, request: &AcquireRequest<'_>) -> Pending {
        let fast = &self.fast;
        self.driver.acquire_around(
            request,
            |engine, now| fast.close(engine, now, request.names),
            |engine, now, granted| {
                if granted {
                    for name in request.names {
                        fast.open(engine, now, name);
                    }
                }
            },
        )
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
    type Output: Unpin;
    /// What the engine is asked to hold.
    const CLAIM: Claim<'static>;
    /// Turns the engine's grant into the caller's value.
    fn finish(driver: &Driver, grant: Grant) -> Self::Output;

    /// Takes `occupy` on the lock-free path of the one limit named, if it
    /// has one open with room (see [`Limiter::handle`]); `None` sends the
    /// request to the engine.
    #[doc(hidden)]
    fn fast(_limiter: &Limiter, _names: &[&str], _occupy: u64) -> Option<Self::Output> {
        None
    }
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
            permit: Some((driver.clone(), permit)),
            fast: None,
            waited: grant.waited,
        }
    }

    #[inline]
    fn fast(limiter: &Limiter, names: &[&str], occupy: u64) -> Option<SlotGuard> {
        let [name] = names else { return None };
        let slot = limiter.fast.find(name)?;
        slot.try_take(occupy).then(|| SlotGuard {
            permit: None,
            fast: Some(FastHeld { slot, occupy }),
            waited: Duration::ZERO,
        })
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

    #[inline]
    fn fast(limiter: &Limiter, names: &[&str], occupy: u64) -> Option<Admitted> {
        let ([name], 1) = (names, occupy) else {
            return None;
        };
        let clock = limiter.driver.clock();
        limiter
            .fast
            .with(name, |slot| slot.try_admit(clock))?
            .map(Admitted::at_once)
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
        if let Some(taken) = K::fast(self.limiter, &self.names.0, self.occupy) {
            return Ok(taken);
        }
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
        self.limiter.send(&request)
    }
}

impl<'a, K: Kind> IntoFuture for Acquire<'a, K> {
    type Output = Result<K::Output, AcquireError>;
    type IntoFuture = AcquireFuture<'a, K>;

    /// Sends the request; the future resolves when it is granted or fails.
    /// Dropping the future withdraws the request.
    fn into_future(self) -> AcquireFuture<'a, K> {
        let fast = K::fast(self.limiter, &self.names.0, self.occupy);
        AcquireFuture {
            pending: match fast {
                Some(_) => Pending::ready(Err(AcquireError::WouldBlock)),
                None => self.send(),
            },
            fast,
            driver: &self.limiter.driver,
            kind: PhantomData,
        }
    }
}

/// The future of an awaited [`Acquire`].
#[must_use = "dropping the future withdraws the request"]
pub struct AcquireFuture<'a, K: Kind> {
    pending: Pending,
    /// Taken on the lock-free path already.
    fast: Option<K::Output>,
    driver: &'a Driver,
    kind: PhantomData<fn() -> K>,
}

impl<K: Kind> Future for AcquireFuture<'_, K> {
    type Output = Result<K::Output, AcquireError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(taken) = this.fast.take() {
            return Poll::Ready(Ok(taken));
        }
        let outcome = std::task::ready!(Pin::new(&mut this.pending).poll(cx));
        Poll::Ready(outcome.map(|grant| K::finish(this.driver, grant)))
    }
}

/// Slots held on some limits; dropping the guard frees them.
#[must_use = "dropping the guard frees the slots at once"]
pub struct SlotGuard {
    /// Slots granted by the engine, and the driver to give them back to;
    /// `None` once given back.
    permit: Option<(Driver, Permit)>,
    /// Slots taken on a limit's lock-free path; `None` once given back.
    fast: Option<FastHeld>,
    waited: Duration,
}

/// Slots a [`SlotGuard`] took on a limit's lock-free path.
struct FastHeld {
    slot: Arc<FastSlot>,
    occupy: u64,
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
        if let Some((driver, permit)) = self.permit.take() {
            driver.give_back(Held::Permit(permit));
        }
        if let Some(fast) = self.fast.take() {
            fast.slot.give_back(fast.occupy);
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
            .field(
                "occupy",
                &(self.permit.as_ref().map(|(_, permit)| permit.occupy()))
                    .or(self.fast.as_ref().map(|fast| fast.occupy)),
            )
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

impl Admitted {
    fn at_once(granted_at: Timestamp) -> Self {
        Admitted {
            granted_at,
            waited: Duration::ZERO,
        }
    }
}

/// A handle on one limit of a [`Limiter`] (see [`Limiter::handle`]).
/// While nobody waits on the limit, a request of its handle takes a
/// concurrency limit's slots with one atomic operation and its guard gives
/// them back with one, and an admission by a rate limit is one atomic
/// operation and one read of the limiter's clock, all without the
/// limiter's lock: about as cheap as a `tokio::sync::Semaphore` or a
/// `governor` rate limiter, yet the limit stays one limit, shared with
/// every other request on it, first come first served, its counts in
/// every view. Once someone waits (or anything else about the limit is
/// asked or changed), requests go through the engine as any other until
/// one is granted at once again. Slots are taken with `try_acquire`,
/// `wait` and `acquire`; admissions with `try_admit`, `wait_admit` and
/// `admit`.
///
/// ```
/// use ratekeeper_driver::Limiter;
/// use ratekeeper_core::LimitSpec;
///
/// let limiter = Limiter::new();
/// limiter.create(LimitSpec::concurrency("db", 2)).unwrap();
/// let db = limiter.handle("db").unwrap();
/// let first = db.try_acquire().unwrap();
/// let second = db.wait().unwrap();
/// assert!(db.try_acquire().is_err()); // both slots are taken
/// drop((first, second));
/// assert_eq!(limiter.limit("db").unwrap().counters.granted_total, 2);
///
/// limiter.create(LimitSpec::rate("api", 10.0, 3)).unwrap(); // 10/s, bursts of 3
/// let api = limiter.handle("api").unwrap();
/// for _ in 0..3 {
///     api.try_admit().unwrap();
/// }
/// assert!(api.try_admit().is_err()); // the next is due in 0.1 s
/// ```
#[derive(Clone)]
pub struct LimitHandle {
    limiter: Limiter,
    name: Arc<str>,
    slot: Arc<FastSlot>,
}

impl LimitHandle {
    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes one slot now, or fails with [`AcquireError::WouldBlock`]
    /// without waiting.
    pub fn try_acquire(&self) -> Result<HandleGuard<'_>, AcquireError> {
        self.try_acquire_many(1)
    }

    /// Takes `occupy` slots now, or fails without waiting.
    pub fn try_acquire_many(&self, occupy: u64) -> Result<HandleGuard<'_>, AcquireError> {
        if self.slot.try_take(occupy) {
            return Ok(self.fast_guard(occupy));
        }
        let slow = self.slow(occupy).try_acquire()?;
        Ok(self.slow_guard(slow))
    }

    /// Waits for one slot (on a thread; await [`acquire`](Self::acquire)
    /// on an async runtime).
    pub fn wait(&self) -> Result<HandleGuard<'_>, AcquireError> {
        if self.slot.try_take(1) {
            return Ok(self.fast_guard(1));
        }
        Ok(self.slow_guard(self.slow(1).wait()?))
    }

    /// Waits for one slot.
    pub async fn acquire(&self) -> Result<HandleGuard<'_>, AcquireError> {
        self.acquire_many(1).await
    }

    /// Waits for `occupy` slots.
    pub async fn acquire_many(&self, occupy: u64) -> Result<HandleGuard<'_>, AcquireError> {
        if self.slot.try_take(occupy) {
            return Ok(self.fast_guard(occupy));
        }
        Ok(self.slow_guard(self.slow(occupy).await?))
    }

    /// Admits one slot of a rate limit now, or fails with
    /// [`AcquireError::WouldBlock`] without waiting.
    pub fn try_admit(&self) -> Result<Admitted, AcquireError> {
        match self.admit_fast() {
            Some(admitted) => Ok(admitted),
            None => self.limiter.rate_limit(&*self.name).try_acquire(),
        }
    }

    /// Waits to be admitted by a rate limit (on a thread; await
    /// [`admit`](Self::admit) on an async runtime).
    pub fn wait_admit(&self) -> Result<Admitted, AcquireError> {
        match self.admit_fast() {
            Some(admitted) => Ok(admitted),
            None => self.limiter.rate_limit(&*self.name).wait(),
        }
    }

    /// Waits to be admitted by a rate limit.
    pub async fn admit(&self) -> Result<Admitted, AcquireError> {
        match self.admit_fast() {
            Some(admitted) => Ok(admitted),
            None => self.limiter.rate_limit(&*self.name).await,
        }
    }

    /// Admits one slot on the lock-free rate path, if it is open and the
    /// slot fits.
    #[inline]
    fn admit_fast(&self) -> Option<Admitted> {
        let at = self.slot.try_admit(self.limiter.driver.clock())?;
        Some(Admitted::at_once(at))
    }

    fn slow(&self, occupy: u64) -> Acquire<'_, Slots> {
        self.limiter.concurrency(&*self.name).occupy(occupy)
    }

    fn fast_guard(&self, occupy: u64) -> HandleGuard<'_> {
        HandleGuard {
            handle: self,
            held: Taken::Fast(occupy),
        }
    }

    fn slow_guard(&self, guard: SlotGuard) -> HandleGuard<'_> {
        HandleGuard {
            handle: self,
            held: Taken::Slow(guard),
        }
    }

    /// Gives back slots taken on the fast path.
    fn give_back(&self, occupy: u64) {
        self.slot.give_back(occupy);
    }
}

impl std::fmt::Debug for LimitHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitHandle")
            .field("name", &self.name)
            .finish()
    }
}

/// Slots taken through a [`LimitHandle`]; dropping the guard gives them
/// back.
#[must_use = "dropping the guard frees the slots at once"]
pub struct HandleGuard<'a> {
    handle: &'a LimitHandle,
    held: Taken,
}

/// How a handle's slots were taken.
enum Taken {
    /// On the fast path: this many.
    Fast(u64),
    /// Through the engine.
    Slow(SlotGuard),
    /// Given back.
    Nothing,
}

impl HandleGuard<'_> {
    /// Frees the slots now (dropping the guard does the same).
    pub fn release(self) {}
}

impl Drop for HandleGuard<'_> {
    fn drop(&mut self) {
        if let Taken::Fast(occupy) = std::mem::replace(&mut self.held, Taken::Nothing) {
            self.handle.give_back(occupy);
        }
    }
}

impl std::fmt::Debug for HandleGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let occupy = match &self.held {
            Taken::Fast(occupy) => Some(*occupy),
            Taken::Slow(guard) => guard.permit.as_ref().map(|(_, permit)| permit.occupy()),
            Taken::Nothing => None,
        };
        f.debug_struct("HandleGuard")
            .field("limit", &self.handle.name)
            .field("occupy", &occupy)
            .finish()
    }
}
