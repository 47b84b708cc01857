//! The in-process limiter under real threads and tokio tasks. Each test
//! checks what it cares about itself (counters it owns, the engine's own
//! grant instants); none sleeps to synchronise. The last ones are about a
//! limit handle's lock-free path beside the engine's: never over the limit
//! under threads mixing both paths and changes of the limit, never past a
//! waiter, and counted in every view.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ratekeeper_core::{
    AcquireError, AcquireRequest, Claim, Held, LimitPatch, LimitSpec, Timestamp,
};
use ratekeeper_driver::Limiter;

/// Counts how many are inside at once and remembers the most.
#[derive(Default)]
struct Occupancy {
    inside: AtomicUsize,
    most: AtomicUsize,
}

impl Occupancy {
    fn enter(&self, weight: usize) {
        let now = self.inside.fetch_add(weight, Ordering::SeqCst) + weight;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self, weight: usize) {
        self.inside.fetch_sub(weight, Ordering::SeqCst);
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

fn limiter_with(specs: &[LimitSpec]) -> Limiter {
    let limiter = Limiter::new();
    for spec in specs {
        limiter.create(spec.clone()).unwrap();
    }
    limiter
}

#[test]
fn sixty_four_threads_never_exceed_the_limit() {
    let limiter = limiter_with(&[LimitSpec::concurrency("db", 4)]);
    let occupancy = Arc::new(Occupancy::default());
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (limiter, occupancy) = (limiter.clone(), occupancy.clone());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let _slot = limiter.concurrency("db").wait().unwrap();
                    occupancy.enter(1);
                    std::thread::yield_now();
                    occupancy.leave(1);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(occupancy.most() <= 4, "{} inside at once", occupancy.most());
    let view = limiter.limit("db").unwrap();
    assert_eq!((view.held, view.waiting), (0, 0));
    assert_eq!(view.counters.granted_total, 64 * 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_never_exceed_the_limit() {
    let limiter = limiter_with(&[LimitSpec::concurrency("db", 3)]);
    let occupancy = Arc::new(Occupancy::default());
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (limiter, occupancy) = (limiter.clone(), occupancy.clone());
            tokio::spawn(async move {
                for _ in 0..100 {
                    let _slot = limiter.concurrency("db").await.unwrap();
                    occupancy.enter(1);
                    tokio::task::yield_now().await;
                    occupancy.leave(1);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(occupancy.most() <= 3, "{} inside at once", occupancy.most());
    assert_eq!(occupancy.most(), 3, "the tasks did contend for the slots");
    assert_eq!(limiter.limit("db").unwrap().held, 0);
}

#[test]
fn weighted_multi_limit_requests_from_threads_respect_every_limit() {
    let limiter = limiter_with(&[
        LimitSpec::concurrency("a", 5),
        LimitSpec::concurrency("b", 3),
    ]);
    let (on_a, on_b) = (
        Arc::new(Occupancy::default()),
        Arc::new(Occupancy::default()),
    );
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let (limiter, on_a, on_b) = (limiter.clone(), on_a.clone(), on_b.clone());
            std::thread::spawn(move || {
                for j in 0..100 {
                    let weight = 1 + (i + j) % 3;
                    let names: &[&str] = match (i + j) % 3 {
                        0 => &["a"],
                        1 => &["b", "a"],
                        _ => &["a", "b"],
                    };
                    let _slot = limiter
                        .concurrency(names)
                        .occupy(weight as u64)
                        .wait()
                        .unwrap();
                    on_a.enter(weight);
                    if names.contains(&"b") {
                        on_b.enter(weight);
                    }
                    std::thread::yield_now();
                    on_a.leave(weight);
                    if names.contains(&"b") {
                        on_b.leave(weight);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(
        on_a.most() <= 5 && on_b.most() <= 3,
        "{} {}",
        on_a.most(),
        on_b.most()
    );
    assert_eq!(limiter.limit("a").unwrap().held, 0);
}

#[tokio::test]
async fn a_release_wakes_the_parked_waiter() {
    let limiter = limiter_with(&[LimitSpec::concurrency("db", 1)]);
    let first = limiter.concurrency("db").await.unwrap();
    let waiter = {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.concurrency("db").await.map(|g| g.waited()) })
    };
    // Wait until it is queued, by the engine's own account.
    while limiter.limit("db").unwrap().waiting == 0 {
        tokio::task::yield_now().await;
    }
    drop(first);
    let waited = waiter.await.unwrap().unwrap();
    assert!(waited > Duration::ZERO);
    assert_eq!(
        limiter.limit("db").unwrap().held,
        0,
        "the waiter's guard was dropped"
    );
}

#[tokio::test]
async fn dropping_a_waiting_future_leaves_the_queue() {
    let limiter = limiter_with(&[LimitSpec::concurrency("db", 1)]);
    let held = limiter.concurrency("db").await.unwrap();
    let mut future = Box::pin(limiter.concurrency("db").into_future());
    assert!(futures_poll_once(future.as_mut()).is_none());
    assert_eq!(limiter.limit("db").unwrap().waiting, 1);
    drop(future);
    assert_eq!(limiter.limit("db").unwrap().waiting, 0);
    drop(held);
    assert_eq!(
        limiter.limit("db").unwrap().held,
        0,
        "nothing was granted to it"
    );
}

#[tokio::test]
async fn a_grant_that_races_a_cancellation_is_given_back() {
    let limiter = limiter_with(&[LimitSpec::concurrency("db", 1)]);
    let held = limiter.concurrency("db").await.unwrap();
    let mut future = Box::pin(limiter.concurrency("db").into_future());
    assert!(futures_poll_once(future.as_mut()).is_none());
    drop(held); // grants the queued request, which nobody will collect
    assert_eq!(limiter.limit("db").unwrap().held, 1);
    drop(future);
    assert_eq!(limiter.limit("db").unwrap().held, 0);
}

#[test]
fn a_timeout_fails_the_wait_and_holds_nothing() {
    let limiter = limiter_with(&[LimitSpec::concurrency("db", 1)]);
    let _held = limiter.concurrency("db").wait().unwrap();
    let err = limiter
        .concurrency("db")
        .timeout(Duration::from_millis(30))
        .wait()
        .unwrap_err();
    assert_eq!(err, AcquireError::TimedOut);
    let view = limiter.limit("db").unwrap();
    assert_eq!(
        (view.waiting, view.held, view.counters.denied_total),
        (0, 1, 1)
    );
}

#[test]
fn try_acquire_never_waits() {
    let limiter = limiter_with(&[LimitSpec::concurrency("db", 1)]);
    let held = limiter.concurrency("db").try_acquire().unwrap();
    assert_eq!(
        limiter.concurrency("db").try_acquire().unwrap_err(),
        AcquireError::WouldBlock
    );
    drop(held);
    limiter.concurrency("db").try_acquire().unwrap().release();
}

#[test]
fn bad_requests_fail_with_the_engine_errors() {
    let limiter = limiter_with(&[LimitSpec::concurrency("db", 2)]);
    let cases = [
        (
            limiter.concurrency("nope").wait().unwrap_err(),
            "limit_not_found",
        ),
        (
            limiter.concurrency("db").occupy(3).wait().unwrap_err(),
            "occupy_exceeds_slots",
        ),
        (
            limiter.rate_limit("db").wait().unwrap_err(),
            "rate_mode_needs_decay",
        ),
        (
            limiter.concurrency("a/b").wait().unwrap_err(),
            "invalid_name",
        ),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code);
    }
}

#[test]
fn a_panicking_holder_frees_its_slot() {
    let limiter = limiter_with(&[LimitSpec::concurrency("db", 1)]);
    let holder = limiter.clone();
    let result = std::thread::spawn(move || {
        let _slot = holder.concurrency("db").wait().unwrap();
        panic!("the work failed");
    })
    .join();
    assert!(result.is_err());
    assert_eq!(limiter.limit("db").unwrap().held, 0);
}

#[test]
fn rate_limited_threads_are_never_admitted_faster_than_the_rate() {
    // 200/s with no burst: every admission is at least 5 ms after the one
    // before, by the engine's clock, whoever asks.
    let limiter = limiter_with(&[LimitSpec::rate("api", 200.0, 1)]);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let limiter = limiter.clone();
            std::thread::spawn(move || {
                (0..15)
                    .map(|_| limiter.rate_limit("api").wait().unwrap().granted_at)
                    .collect::<Vec<Timestamp>>()
            })
        })
        .collect();
    let mut grants: Vec<Timestamp> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    grants.sort();
    assert_eq!(grants.len(), 60);
    for pair in grants.windows(2) {
        let gap = pair[1].saturating_duration_since(pair[0]);
        assert!(gap >= Duration::from_millis(5), "admitted {gap:?} apart");
    }
}

#[test]
fn queued_rate_limited_requests_are_admitted_exactly_on_schedule() {
    // All 60 requests are queued before the first wait, so the queue is
    // never empty and each admission is due exactly 5 ms after the one
    // before. The timer thread wakes late by however long the machine
    // takes; the schedule must not move by a nanosecond (a late wake-up
    // acted on as "now" would add its delay to every gap). Nothing here
    // depends on how the threads are scheduled.
    let limiter = limiter_with(&[LimitSpec::rate("api", 200.0, 1)]);
    let driver = limiter.driver();
    let names = ["api"];
    let request = AcquireRequest::new(&names, Claim::Rate);
    let pending: Vec<_> = (0..60).map(|_| driver.acquire(&request)).collect();
    let grants: Vec<Timestamp> = pending
        .into_iter()
        .map(|p| p.wait().unwrap().granted_at)
        .collect();
    for pair in grants.windows(2) {
        assert_eq!(
            pair[1].saturating_duration_since(pair[0]),
            Duration::from_millis(5)
        );
    }
}

#[tokio::test]
async fn rate_limited_tasks_wait_for_their_turn_without_polling() {
    let limiter = limiter_with(&[LimitSpec::rate("api", 1000.0, 10)]);
    let start = limiter.driver().clock().now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.rate_limit("api").await.unwrap().granted_at })
        })
        .collect();
    let mut last = start;
    for task in tasks {
        last = last.max(task.await.unwrap());
    }
    // 10 at once, then 40 more at 1 per ms: at least 40 ms by the engine's clock.
    assert!(last.saturating_duration_since(start) >= Duration::from_millis(40));
    assert_eq!(limiter.limit("api").unwrap().counters.granted_total, 50);
}

#[test]
fn raising_a_limit_wakes_blocked_threads() {
    let limiter = limiter_with(&[LimitSpec::concurrency("db", 0)]);
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let limiter = limiter.clone();
            std::thread::spawn(move || limiter.concurrency("db").wait().map(|g| g.release()))
        })
        .collect();
    while limiter.limit("db").unwrap().waiting < 3 {
        std::thread::yield_now();
    }
    limiter
        .update(
            "db",
            LimitPatch {
                slots: Some(1),
                ..LimitPatch::default()
            },
        )
        .unwrap();
    for waiter in waiters {
        waiter.join().unwrap().unwrap();
    }
}

#[test]
fn the_timer_thread_expires_leases_and_wakes_the_next_holder() {
    let limiter = limiter_with(&[LimitSpec::concurrency("db", 1)]);
    let driver = limiter.driver();
    let lease = Claim::Lease {
        ttl: Duration::from_secs(1),
        holder: Some("crashed"),
    };
    let held = driver
        .acquire(&AcquireRequest::new(&["db"], lease))
        .wait()
        .unwrap();
    assert!(matches!(held.held, Held::Lease(_)));
    // Nobody releases it: the next request gets in once the TTL runs out.
    let next = limiter.concurrency("db").wait().unwrap();
    assert!(next.waited() >= Duration::from_millis(900));
    assert_eq!(limiter.limit("db").unwrap().counters.expired_total, 1);
}

/// Polls a future once with a no-op waker.
fn futures_poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test]
async fn a_paused_limit_holds_waiting_tasks_until_it_is_resumed_and_a_template_gives_each_key_its_slots()
 {
    let limiter = limiter_with(&[
        LimitSpec::concurrency("vendor", 1),
        LimitSpec::concurrency("tenant:*", 1),
    ]);
    limiter
        .pause("vendor", ratekeeper_core::PauseSpec::for_seconds(600.0))
        .unwrap();
    assert_eq!(
        limiter.concurrency("vendor").try_acquire().unwrap_err(),
        AcquireError::WouldBlock
    );
    let waiting = tokio::spawn({
        let limiter = limiter.clone();
        async move { limiter.concurrency("vendor").await.map(drop) }
    });
    while limiter.limit("vendor").unwrap().waiting == 0 {
        tokio::task::yield_now().await;
    }
    limiter.resume("vendor").unwrap();
    waiting.await.unwrap().unwrap();

    let acme = limiter.concurrency("tenant:acme").try_acquire().unwrap();
    let globex = limiter.concurrency("tenant:globex").try_acquire().unwrap();
    assert!(limiter.concurrency("tenant:acme").try_acquire().is_err());
    let all = ratekeeper_core::InstanceQuery {
        prefix: "",
        order: ratekeeper_core::InstanceOrder::Name,
        after: None,
        count: 10,
    };
    let keys: Vec<String> = limiter
        .instances("tenant:*", all)
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(keys, ["tenant:acme", "tenant:globex"]);
    drop((acme, globex));
    assert!(limiter.instances("tenant:*", all).unwrap().is_empty());
}

// ----- a limit's handle --------------------------------------------------

#[test]
fn threads_mixing_the_fast_path_the_engine_and_changes_never_exceed_the_limit() {
    let limiter = Limiter::new();
    limiter.create(LimitSpec::concurrency("db", 3)).unwrap();
    let occupancy = Arc::new(Occupancy::default());
    let taken = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (limiter, occupancy, taken) =
                (limiter.clone(), Arc::clone(&occupancy), Arc::clone(&taken));
            std::thread::spawn(move || {
                let db = limiter.handle("db").unwrap();
                for i in 0..10_000u64 {
                    let weight = 1 + (i % 2) * (t % 2); // some take 2 slots
                    let guard = match (t + i) % 10 {
                        // The engine's path for a share of the requests.
                        0 => Err(limiter.concurrency("db").occupy(weight).wait().unwrap()),
                        1 => match db.try_acquire_many(weight) {
                            Ok(guard) => Ok(guard),
                            Err(AcquireError::WouldBlock) => continue,
                            Err(err) => panic!("{err}"),
                        },
                        _ if weight == 1 => Ok(db.wait().unwrap()),
                        _ => Ok(futures_lite_block_on(db.acquire_many(weight)).unwrap()),
                    };
                    occupancy.enter(weight as usize);
                    taken.fetch_add(weight, Ordering::Relaxed);
                    for _ in 0..200 {
                        std::hint::spin_loop(); // hold it a moment: more overlap
                    }
                    if i % 997 == 0 {
                        // A read through the engine closes the fast path.
                        assert!(limiter.limit("db").unwrap().held >= weight);
                    }
                    occupancy.leave(weight as usize);
                    drop(guard);
                }
            })
        })
        .collect();
    // Meanwhile the limit changes under them, and comes back.
    for slots in [2, 3, 2, 3] {
        std::thread::sleep(Duration::from_millis(20));
        let patch = LimitPatch {
            slots: Some(slots),
            ..LimitPatch::default()
        };
        limiter.update("db", patch).unwrap();
    }
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(
        occupancy.most() <= 3,
        "never more than the most slots it had"
    );
    let view = limiter.limit("db").unwrap();
    assert_eq!(view.held, 0, "everything given back");
    assert_eq!(
        view.counters.granted_slots_total,
        taken.load(Ordering::Relaxed),
        "every grant counted, fast or not"
    );
}

/// Polls a future to completion on this thread.
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_never_passed_by_the_fast_path() {
    let limiter = Limiter::new();
    limiter.create(LimitSpec::concurrency("db", 1)).unwrap();
    let db = limiter.handle("db").unwrap();
    let first = db.try_acquire().unwrap();
    let waiter = {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.concurrency("db").await.map(drop) })
    };
    while limiter.limit("db").unwrap().waiting == 0 {
        tokio::task::yield_now().await;
    }
    drop(first);
    // The slot went to the waiter, not to whoever asks on the fast path.
    waiter.await.unwrap().unwrap();
    let again = db.try_acquire().unwrap();
    let view = limiter.limit("db").unwrap();
    assert_eq!((view.held, view.waiting), (1, 0));
    drop(again);
}

#[test]
fn views_show_the_slots_taken_on_the_fast_path() {
    let limiter = Limiter::new();
    limiter.create(LimitSpec::concurrency("db", 5)).unwrap();
    let db = limiter.handle("db").unwrap();
    let _warm = db.try_acquire().unwrap(); // through the engine: opens the path
    let fast: Vec<_> = (0..3).map(|_| db.try_acquire().unwrap()).collect();
    let listed = limiter.limits();
    let shown = limiter.limit("db").unwrap();
    assert_eq!(shown.held, 4);
    assert_eq!(listed[0].held, 4);
    assert_eq!(shown.counters.granted_total, 4);
    assert!(!limiter.has_room("db", 2).unwrap());
    assert!(limiter.has_room("db", 1).unwrap());
    drop(fast);
    assert_eq!(limiter.limit("db").unwrap().held, 1);
}

#[test]
fn after_a_reset_or_a_delete_the_fast_path_never_lets_more_in_than_the_engine() {
    let limiter = Limiter::new();
    limiter.create(LimitSpec::concurrency("db", 2)).unwrap();
    let db = limiter.handle("db").unwrap();
    drop(db.try_acquire().unwrap()); // through the engine: opens the path
    let a = db.try_acquire().unwrap();
    let b = db.try_acquire().unwrap();
    limiter.reset("db").unwrap();
    // The engine forgot both, as a reset forgets every holder (`b` went
    // through it); the slot `a` took on the fast path still counts until
    // it is given back.
    let c = db.try_acquire().unwrap();
    assert!(db.try_acquire().is_err());
    drop(a);
    let d = db.try_acquire().unwrap();
    assert!(db.try_acquire().is_err());
    drop((b, c, d));
    let both = (db.try_acquire().unwrap(), db.try_acquire().unwrap());
    assert!(db.try_acquire().is_err(), "two slots, whichever path");
    assert_eq!(limiter.limit("db").unwrap().held, 2);
    drop(both);

    let held = db.try_acquire().unwrap();
    limiter.delete("db").unwrap();
    assert!(matches!(
        db.try_acquire(),
        Err(AcquireError::LimitNotFound { .. })
    ));
    drop(held);
    limiter.create(LimitSpec::concurrency("db", 1)).unwrap();
    let again = db.try_acquire().unwrap();
    assert!(db.try_acquire().is_err(), "the new limit has one slot");
    drop(again);
    let again = db.try_acquire().unwrap();
    assert!(db.try_acquire().is_err(), "and on the fast path too");
    drop(again);
    let view = limiter.limit("db").unwrap();
    assert_eq!(
        (view.held, view.counters.granted_total),
        (0, 2),
        "a new limit, new counts"
    );
}

// ----- a rate limit's handle -------------------------------------------------

/// Fails if some window of admissions holds more than `burst` plus what
/// `per_second` lets through in its length.
fn assert_never_faster(mut admitted: Vec<Timestamp>, per_second: f64, burst: u64) {
    admitted.sort();
    for (j, last) in admitted.iter().enumerate() {
        for (i, first) in admitted[..=j].iter().enumerate().rev() {
            let span = last.saturating_duration_since(*first).as_secs_f64();
            let most = burst as f64 + span * per_second;
            assert!(
                (j - i + 1) as f64 <= most + 1e-6,
                "{} admitted within {span} s, at most {most}",
                j - i + 1
            );
            if span * per_second > admitted.len() as f64 {
                break;
            }
        }
    }
}

#[test]
fn threads_mixing_the_lock_free_rate_path_the_engine_and_changes_never_exceed_the_rate() {
    const PER_SECOND: f64 = 20_000.0;
    const BURST: u64 = 5;
    let limiter = Limiter::new();
    limiter
        .create(LimitSpec::rate("api", PER_SECOND, BURST))
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let limiter = limiter.clone();
            std::thread::spawn(move || {
                let api = limiter.handle("api").unwrap();
                let mut admitted = Vec::new();
                for i in 0..1_500u64 {
                    let at = match (t + i) % 10 {
                        // The engine's path for a share of the requests.
                        0 => limiter.rate_limit("api").wait().unwrap().granted_at,
                        1 => match api.try_admit() {
                            Ok(admission) => admission.granted_at,
                            Err(AcquireError::WouldBlock) => continue,
                            Err(err) => panic!("{err}"),
                        },
                        2 => futures_lite_block_on(api.admit()).unwrap().granted_at,
                        3 => match limiter.rate_limit("api").try_acquire() {
                            Ok(admission) => admission.granted_at,
                            Err(AcquireError::WouldBlock) => continue,
                            Err(err) => panic!("{err}"),
                        },
                        _ => api.wait_admit().unwrap().granted_at,
                    };
                    admitted.push(at);
                    if i % 97 == 0 {
                        // Reads through the engine: one closes the path.
                        assert!(limiter.limit("api").unwrap().decaying <= BURST as f64);
                        let _ = limiter.has_room("api", 1).unwrap();
                    }
                }
                admitted
            })
        })
        .collect();
    // Meanwhile the limit changes under them (not its rate).
    for n in 0..4 {
        std::thread::sleep(Duration::from_millis(20));
        let patch = LimitPatch {
            description: Some(Some(format!("change {n}"))),
            ..LimitPatch::default()
        };
        limiter.update("api", patch).unwrap();
    }
    let admitted: Vec<Timestamp> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let count = admitted.len() as u64;
    assert_never_faster(admitted, PER_SECOND, BURST);
    let view = limiter.limit("api").unwrap();
    assert_eq!(
        view.counters.granted_total, count,
        "every admission counted, fast or not"
    );
    assert!(view.decaying <= BURST as f64 + 1e-9);
}

#[test]
fn a_rate_limit_handle_admits_at_once_what_the_engine_would_and_views_show_it() {
    let limiter = Limiter::new();
    limiter.create(LimitSpec::rate("api", 1.0, 3)).unwrap();
    let api = limiter.handle("api").unwrap();
    // The first through the engine (it opens the path), then two by it.
    let admitted: Vec<_> = (0..3).map(|_| api.try_admit().unwrap()).collect();
    assert!(admitted.iter().all(|a| a.waited == Duration::ZERO));
    assert!(matches!(api.try_admit(), Err(AcquireError::WouldBlock)));
    let view = limiter.limit("api").unwrap();
    assert_eq!(view.counters.granted_total, 3);
    assert!(
        view.decaying > 2.9 && view.decaying <= 3.0,
        "{}",
        view.decaying
    );
    assert_eq!(
        view.counters.denied_total, 1,
        "the refusal went through the engine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_waiter_is_never_passed_by_the_lock_free_path() {
    // 20 per second, one at a time: each admission 50 ms after the last.
    let limiter = Limiter::new();
    limiter.create(LimitSpec::rate("api", 20.0, 1)).unwrap();
    let api = limiter.handle("api").unwrap();
    api.try_admit().unwrap(); // through the engine: opens the path
    let waiter = {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.rate_limit("api").await })
    };
    while limiter.limit("api").unwrap().waiting == 0 {
        tokio::task::yield_now().await;
    }
    // Until the waiter is admitted, nobody else is, on any path.
    let mut refused = 0;
    while !waiter.is_finished() {
        match api.try_admit() {
            Err(AcquireError::WouldBlock) => refused += 1,
            other => panic!("admitted before the waiter: {other:?}"),
        }
        tokio::task::yield_now().await;
    }
    let first = waiter.await.unwrap().unwrap();
    assert!(first.waited > Duration::ZERO);
    assert!(refused > 0);
    let view = limiter.limit("api").unwrap();
    assert_eq!((view.waiting, view.counters.granted_total), (0, 2));
}

#[test]
fn a_guard_taken_by_name_frees_its_slot_after_its_path_closed_and_outlives_its_limiter() {
    let limiter = Limiter::new();
    limiter.create(LimitSpec::concurrency("db", 2)).unwrap();
    drop(limiter.concurrency("db").try_acquire().unwrap()); // opens the path
    let fast = limiter.concurrency("db").try_acquire().unwrap();
    assert!(
        limiter.has_room("db", 1).unwrap(),
        "a read that closes the path"
    );
    drop(fast); // given back to the engine, the path being closed
    let view = limiter.limit("db").unwrap();
    assert_eq!((view.held, view.counters.granted_total), (0, 2));
    let both = (
        limiter.concurrency("db").try_acquire().unwrap(),
        limiter.concurrency("db").try_acquire().unwrap(),
    );
    assert!(limiter.concurrency("db").try_acquire().is_err());
    drop(both);

    // Guards of both kinds outlive every handle on their limiter.
    let fast = limiter.concurrency("db").try_acquire().unwrap();
    assert!(limiter.has_room("db", 1).unwrap());
    let slow = limiter.concurrency("db").try_acquire().unwrap();
    drop(limiter);
    drop((fast, slow));
}
