//! The engine on a real clock: one timer for the engine's next call-back
//! instant, and parked waiters woken by the engine's results. The timer is
//! a thread of its own, or, for a server whose waiters are tasks of one
//! tokio runtime, a task of that runtime ([`Driver::run_timer_on`]): a
//! grant made there wakes its waiter on the same worker, where a grant made
//! on the timer thread must wake a parked worker first.
//!
//! Everything happens under one lock: an operation runs on the engine, the
//! wakes it produced are delivered to their parked waiters, and the timer is
//! re-armed, all before the lock is released. So a wake can never be lost
//! between "queued" and "parked", and a cancelled waiter always finds out
//! under the same lock whether it was granted in the meantime.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use ratekeeper_core::{
    AcquireError, AcquireRequest, Admission, Change, Engine, Grant, Held, RequestId, Timestamp,
};

use crate::clock::Clock;

/// How a queued request ended.
pub type Outcome = Result<Grant, AcquireError>;

/// Receives the engine's changes after every operation, under the engine's
/// lock and before any waiter hears of a grant they contain; see
/// [`Driver::with_journal`].
pub type Journal = Box<dyn FnMut(&Engine, Vec<Change>) + Send>;

/// A handle to one engine running on a real clock. Clones share the engine.
///
/// The timer thread starts with the first timer the engine asks for (a lease
/// expiry, a timeout, a decay wait) and stops once every handle, pending
/// request and guard is gone.
#[derive(Clone)]
pub struct Driver {
    inner: Arc<Inner>,
}

/// Owned by the handles only, so that dropping the last one stops the timer
/// thread (which holds `Shared`, not `Inner`).
struct Inner {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the timer thread must wake before it planned to.
    timer_changed: Condvar,
    /// The same, for a timer task. Outside `Shared`'s own count, so that
    /// the sleeping task keeps nothing alive.
    #[cfg(feature = "tokio")]
    timer_task_changed: Arc<tokio::sync::Notify>,
    clock: Clock,
}

struct State {
    engine: Engine,
    /// Queued requests whose waiter is still waiting. A request is here from
    /// the moment it is queued until its wake is delivered or it is cancelled.
    parked: HashMap<RequestId, oneshot::Sender<Outcome>>,
    timer: TimerState,
    journal: Option<Journal>,
}

#[derive(Default)]
struct TimerState {
    started: bool,
    /// The timer thread, once started: joined when the driver is dropped,
    /// so that whatever it holds (a store's files) is released by then.
    thread: Option<std::thread::JoinHandle<()>>,
    /// When the timer thread will wake by itself; `None` while it is awake
    /// (it looks at the engine again before sleeping) or already signalled.
    sleeping_until: Option<Timestamp>,
    shutdown: bool,
    /// The runtime to run the timer on as a task, if not on a thread.
    #[cfg(feature = "tokio")]
    runtime: Option<tokio::runtime::Handle>,
    /// The timer runs as a task.
    #[cfg(feature = "tokio")]
    task: bool,
}

impl Driver {
    /// A driver for a new, empty engine whose lease ids come from OS entropy.
    pub fn new() -> Self {
        Driver::on_clock(Clock::new())
    }

    /// Like [`new`](Self::new), on `clock` (an in-process limiter's runs on
    /// [`Clock::counter`]).
    pub fn on_clock(clock: Clock) -> Self {
        let mut seed = [0; 32];
        getrandom::fill(&mut seed).expect("the OS random source is available");
        Driver::build(Engine::new(seed), None, clock)
    }

    /// A driver for an existing engine.
    pub fn from_engine(engine: Engine) -> Self {
        Driver::build(engine, None, Clock::new())
    }

    /// A driver that hands every change of the engine's state to `journal`
    /// (journaling is turned on). The journal sees an operation's changes
    /// before the operation returns and before any waiter it granted is
    /// woken, so whatever a caller learns is already in the journal: a
    /// store can make it durable before the caller answers anyone.
    pub fn with_journal(mut engine: Engine, journal: Journal) -> Self {
        engine.enable_journal();
        let driver = Driver::build(engine, Some(journal), Clock::new());
        // Changes made before the driver existed (a restore's expiries).
        driver.apply(|_, _| ());
        driver
    }

    fn build(engine: Engine, journal: Option<Journal>, clock: Clock) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                engine,
                parked: HashMap::new(),
                timer: TimerState::default(),
                journal,
            }),
            timer_changed: Condvar::new(),
            #[cfg(feature = "tokio")]
            timer_task_changed: Arc::default(),
            clock,
        });
        Driver {
            inner: Arc::new(Inner { shared }),
        }
    }

    /// Runs the timer as a task of `runtime` instead of on a thread of its
    /// own, if it has not started yet: for a driver whose waiters are tasks
    /// of that runtime, and that lives no longer than it (a task stops with
    /// its runtime; a driver used after that would never wake a waiter
    /// again, so a library's driver keeps its thread).
    #[cfg(feature = "tokio")]
    pub fn run_timer_on(&self, runtime: tokio::runtime::Handle) {
        let mut state = self.inner.shared.lock();
        if !state.timer.started {
            state.timer.runtime = Some(runtime);
        }
    }

    /// The clock the engine runs on.
    pub fn clock(&self) -> &Clock {
        &self.inner.shared.clock
    }

    /// Runs `operation` on the engine at the current instant, then delivers
    /// the wakes it caused and re-arms the timer. This is the seam for every
    /// operation other than acquire: limit changes, renewals, releases,
    /// reads.
    pub fn apply<R>(&self, operation: impl FnOnce(&mut Engine, Timestamp) -> R) -> R {
        self.apply_waking(operation).0
    }

    /// [`apply`](Self::apply), also telling whether the operation woke a
    /// parked request (granted it, or ended its wait): whoever answers the
    /// operation may then want that outcome stored first.
    pub fn apply_waking<R>(
        &self,
        operation: impl FnOnce(&mut Engine, Timestamp) -> R,
    ) -> (R, bool) {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        let now = shared.catch_up(&mut state.engine);
        let result = operation(&mut state.engine, now);
        let woke = shared.after_operation(&mut state, now);
        (result, woke)
    }

    /// Asks for slots. The answer is a [`Pending`] that is either decided
    /// already or waits, pushed by the engine, for the request's turn.
    pub fn acquire(&self, request: &AcquireRequest<'_>) -> Pending {
        self.acquire_around(request, |_, _| (), |_, _, _| ())
    }

    /// [`acquire`](Self::acquire), with `before` run on the engine first and
    /// `after` told whether the request was granted at once, both under the
    /// same lock: for a caller that keeps state beside the engine's (the
    /// in-process limiter's lock-free path).
    pub fn acquire_around(
        &self,
        request: &AcquireRequest<'_>,
        before: impl FnOnce(&mut Engine, Timestamp),
        after: impl FnOnce(&mut Engine, Timestamp, bool),
    ) -> Pending {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        let now = shared.catch_up(&mut state.engine);
        before(&mut state.engine, now);
        let answer = state.engine.acquire(now, request);
        after(
            &mut state.engine,
            now,
            matches!(answer, Ok(Admission::Granted(_))),
        );
        let pending = match answer {
            Ok(Admission::Granted(grant)) => Pending::ready(Ok(grant)),
            Err(err) => Pending::ready(Err(err)),
            Ok(Admission::Queued(request)) => {
                let (sender, receiver) = oneshot::channel();
                state.parked.insert(request, sender);
                Pending {
                    state: PendingState::Queued(Queued {
                        driver: self.clone(),
                        request,
                        receiver: Receiver::Blocking(receiver),
                    }),
                }
            }
        };
        shared.after_operation(&mut state, now);
        pending
    }

    /// Gives back whatever a grant holds.
    pub fn give_back(&self, held: Held) {
        if !matches!(held, Held::Nothing) {
            self.apply(|engine, now| give_back(engine, now, held));
        }
    }

    /// Withdraws a parked request. Returns false if its wake was delivered
    /// already, so the caller must give back what the wake granted.
    fn cancel(&self, request: RequestId) -> bool {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        if state.parked.remove(&request).is_none() {
            return false;
        }
        let now = shared.catch_up(&mut state.engine);
        // Granted by this very advance, the wake finds nobody parked and
        // `after_operation` gives it back.
        state.engine.cancel(now, request);
        shared.after_operation(&mut state, now);
        true
    }
}

impl Default for Driver {
    fn default() -> Self {
        Driver::new()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.timer.shutdown = true;
        self.shared.wake_timer(&state.timer);
        let thread = state.timer.thread.take();
        #[cfg(feature = "tokio")]
        let task = state.timer.task;
        drop(state);
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
        // A timer task holds the engine only while it works, never across
        // an await: once it lets go (it stops at its next look), this handle
        // is the last, and whatever the engine holds (a store's files) is
        // released when this returns, as with a thread.
        #[cfg(feature = "tokio")]
        while task && Arc::strong_count(&self.shared) > 1 {
            std::thread::yield_now();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock means an engine invariant broke;
        // carrying on with that state could over-admit, so it propagates.
        self.state
            .lock()
            .expect("the engine lock was poisoned by a panic")
    }

    /// Reads the clock, after taking the engine through every timer due by
    /// then at the timer's own instant. The timer thread wakes a little
    /// after the instant it asked for; acting at the late instant would add
    /// that delay to every rate-limited grant (a rate of 100/s ran at
    /// 98.4/s), acting at the timer's instant keeps the schedule exact. The
    /// engine never runs ahead of the clock, so nothing is granted early.
    fn catch_up(&self, engine: &mut Engine) -> Timestamp {
        let now = self.clock.now();
        while let Some(at) = engine.next_wakeup().filter(|&at| at <= now) {
            engine.advance(at);
        }
        now
    }

    /// Journals changes, delivers wakes (true if there were any) and re-arms
    /// the timer; called before every unlock.
    fn after_operation(self: &Arc<Self>, state: &mut State, now: Timestamp) -> bool {
        let mut woke = false;
        loop {
            state.record_changes();
            let wakes = state.engine.take_wakes();
            if wakes.is_empty() {
                break;
            }
            woke = true;
            for wake in wakes {
                let undelivered = match state.parked.remove(&wake.request) {
                    Some(sender) => sender.send(wake.outcome).err().map(|e| e.into_inner()),
                    None => Some(wake.outcome),
                };
                // Nobody waits for it any more: hand its slots on.
                if let Some(Ok(grant)) = undelivered {
                    give_back(&mut state.engine, now, grant.held);
                }
            }
        }
        self.rearm_timer(state);
        woke
    }

    fn rearm_timer(self: &Arc<Self>, state: &mut State) {
        let Some(next) = state.engine.next_wakeup() else {
            return;
        };
        if !state.timer.started {
            state.timer.started = true;
            #[cfg(feature = "tokio")]
            if let Some(runtime) = state.timer.runtime.take() {
                state.timer.task = true;
                runtime.spawn(run_timer_task(
                    Arc::downgrade(self),
                    Arc::clone(&self.timer_task_changed),
                ));
                return;
            }
            let shared = Arc::clone(self);
            let thread = std::thread::Builder::new()
                .name("ratekeeper-timer".into())
                .spawn(move || shared.run_timer())
                .expect("the timer thread can be started");
            state.timer.thread = Some(thread);
        } else if state.timer.sleeping_until.is_some_and(|until| next < until) {
            state.timer.sleeping_until = None;
            self.wake_timer(&state.timer);
        }
    }

    /// Wakes the timer before the instant it sleeps until.
    fn wake_timer(&self, timer: &TimerState) {
        // Kept if the task is not waiting yet: it then does not sleep.
        #[cfg(feature = "tokio")]
        if timer.task {
            self.timer_task_changed.notify_one();
            return;
        }
        let _ = timer;
        self.timer_changed.notify_one();
    }

    /// One look of the timer: takes the engine through what fell due,
    /// then says how long the timer may sleep. `None` once it must stop.
    fn timer_look(self: &Arc<Self>, state: &mut State) -> Option<Timestamp> {
        state.timer.sleeping_until = None;
        if state.timer.shutdown {
            return None;
        }
        let now = self.catch_up(&mut state.engine);
        self.after_operation(state, now);
        let next = state.engine.next_wakeup().unwrap_or(Timestamp::MAX);
        state.timer.sleeping_until = Some(next);
        Some(next)
    }

    /// The timer thread: sleeps until the engine's next wake-up instant and
    /// advances the engine then.
    fn run_timer(self: Arc<Self>) {
        let mut state = self.lock();
        while let Some(next) = self.timer_look(&mut state) {
            state = self
                .timer_changed
                .wait_timeout(state, self.clock.until(next))
                .expect("the engine lock was poisoned by a panic")
                .0;
        }
    }
}

/// How much later than its instant the timer task may look, so that what
/// falls due close together is handled in one look: at a paced rate of
/// 1 000/s, two or three admissions share a wake-up and a store's sync
/// instead of one each. Grants are still made at the instants they fell due
/// (the schedule does not move), and answered at most this much later.
#[cfg(feature = "tokio")]
const TIMER_TASK_SLACK: std::time::Duration = std::time::Duration::from_millis(1);

/// The timer as a task: as the thread, but it holds the engine only while
/// it looks, and stops when the engine is gone.
#[cfg(feature = "tokio")]
async fn run_timer_task(shared: std::sync::Weak<Shared>, changed: Arc<tokio::sync::Notify>) {
    loop {
        let sleep = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut state = shared.lock();
            let Some(next) = shared.timer_look(&mut state) else {
                return;
            };
            shared.clock.until(next)
        };
        tokio::select! {
            () = tokio::time::sleep(sleep.saturating_add(TIMER_TASK_SLACK)) => {}
            () = changed.notified() => {}
        }
    }
}

impl State {
    fn record_changes(&mut self) {
        if let Some(journal) = self.journal.as_mut() {
            let changes = self.engine.take_changes();
            if !changes.is_empty() {
                journal(&self.engine, changes);
            }
        }
    }
}

fn give_back(engine: &mut Engine, now: Timestamp, held: Held) {
    match held {
        Held::Nothing => {}
        // The lease can only be gone if it expired or was revoked; either
        // way its slots are free already.
        Held::Lease(lease) => drop(engine.release(now, lease.id)),
        Held::Permit(permit) => engine.release_permit(now, permit),
    }
}

/// The answer to an acquire: decided already, or waiting for its turn.
///
/// Await it, or [`wait`](Pending::wait) for it on a thread. Dropping it
/// while it waits withdraws the request from every queue; if it was granted
/// in the meantime, what it was granted is given back.
#[must_use = "dropping a pending request withdraws it"]
pub struct Pending {
    state: PendingState,
}

enum PendingState {
    Ready(Option<Outcome>),
    Queued(Queued),
}

struct Queued {
    driver: Driver,
    request: RequestId,
    receiver: Receiver,
}

enum Receiver {
    Blocking(oneshot::Receiver<Outcome>),
    Async(oneshot::AsyncReceiver<Outcome>),
    Done,
}

impl Pending {
    pub(crate) fn ready(outcome: Outcome) -> Self {
        Pending {
            state: PendingState::Ready(Some(outcome)),
        }
    }

    /// Blocks the calling thread until the request is decided.
    pub fn wait(mut self) -> Outcome {
        match &mut self.state {
            PendingState::Ready(outcome) => outcome.take().expect("decided once"),
            PendingState::Queued(queued) => {
                match std::mem::replace(&mut queued.receiver, Receiver::Done) {
                    Receiver::Blocking(receiver) => receiver.recv().expect(DELIVERED),
                    // Polled once as a future, then waited for on a thread:
                    // block on the future itself.
                    Receiver::Async(receiver) => block_on(receiver).expect(DELIVERED),
                    Receiver::Done => panic!("a decided request is not waited for again"),
                }
            }
        }
    }
}

const DELIVERED: &str = "a parked request is answered before its sender is dropped";

impl Future for Pending {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match &mut self.get_mut().state {
            PendingState::Ready(outcome) => {
                Poll::Ready(outcome.take().expect("polled after completion"))
            }
            PendingState::Queued(queued) => {
                if let Receiver::Blocking(_) = queued.receiver {
                    let Receiver::Blocking(receiver) =
                        std::mem::replace(&mut queued.receiver, Receiver::Done)
                    else {
                        unreachable!()
                    };
                    queued.receiver = Receiver::Async(receiver.into_future());
                }
                let Receiver::Async(receiver) = &mut queued.receiver else {
                    panic!("polled after completion");
                };
                let outcome = std::task::ready!(Pin::new(receiver).poll(cx)).expect(DELIVERED);
                queued.receiver = Receiver::Done;
                Poll::Ready(outcome)
            }
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        let receiver = std::mem::replace(&mut self.receiver, Receiver::Done);
        if matches!(receiver, Receiver::Done) || self.driver.cancel(self.request) {
            return;
        }
        // The wake was delivered before we could withdraw: give it back.
        let delivered = match receiver {
            Receiver::Blocking(receiver) => receiver.try_recv().ok(),
            Receiver::Async(mut receiver) => {
                match Pin::new(&mut receiver).poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(outcome) => outcome.ok(),
                    Poll::Pending => None,
                }
            }
            Receiver::Done => None,
        };
        if let Some(Ok(grant)) = delivered {
            self.driver.give_back(grant.held);
        }
    }
}

/// Blocks on a future with the current thread as its waker.
fn block_on<F: Future + Unpin>(mut future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl std::task::Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = Pin::new(&mut future).poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

#[cfg(all(test, feature = "tokio"))]
mod timer_task_tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use ratekeeper_core::{Claim, LimitSpec};

    use super::*;

    /// Set when the engine's journal, and so the engine, is dropped.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timer_task_admits_on_schedule_and_lets_go_of_the_engine_with_the_driver() {
        let dropped = Arc::new(AtomicBool::new(false));
        let sentinel = Dropped(Arc::clone(&dropped));
        let driver = Driver::with_journal(
            Engine::new([7; 32]),
            Box::new(move |_, _| {
                let _ = &sentinel;
            }),
        );
        driver.run_timer_on(tokio::runtime::Handle::current());
        driver
            .apply(|engine, now| engine.create_limit(now, &LimitSpec::rate("api", 200.0, 1)))
            .unwrap();
        let names = ["api"];
        let request = AcquireRequest::new(&names, Claim::Rate);
        let pending: Vec<_> = (0..20).map(|_| driver.acquire(&request)).collect();
        let mut grants = Vec::new();
        for pending in pending {
            grants.push(pending.await.unwrap().granted_at);
        }
        // Due every 5 ms exactly, however late the task woke.
        for pair in grants.windows(2) {
            assert_eq!(
                pair[1].saturating_duration_since(pair[0]),
                Duration::from_millis(5)
            );
        }
        {
            let state = driver.inner.shared.lock();
            assert!(state.timer.started && state.timer.thread.is_none());
        }
        drop(driver);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the engine outlived its last handle"
        );
    }
}
