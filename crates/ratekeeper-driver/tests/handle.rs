//! A limit handle's lock-free path beside the engine's: never over the
//! limit under threads mixing both paths and changes of the limit, never
//! past a waiter, and counted in every view.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ratekeeper_core::{AcquireError, LimitPatch, LimitSpec};
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
}

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
        occupancy.most.load(Ordering::SeqCst) <= 3,
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
