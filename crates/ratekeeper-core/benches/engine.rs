//! The engine alone, with explicit time: acquire and release beside 100 000
//! queued waiters, and a handoff through a queue that long. Run with
//! `cargo bench -p ratekeeper-core --bench engine`.

use std::time::Duration;

use divan::{Bencher, black_box};
use ratekeeper_core::{
    AcquireRequest, Admission, Claim, Engine, Held, LeaseId, LimitSpec, Timestamp,
};

fn main() {
    divan::main();
}

const QUEUED: usize = 100_000;
const LEASE: Claim<'static> = Claim::Lease {
    ttl: Duration::from_secs(30),
    holder: None,
};

fn now() -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000)
}

/// An engine with `QUEUED` waiters on "busy" behind one lease, and an
/// uncontended limit "free".
fn crowded() -> (Engine, LeaseId) {
    let mut engine = Engine::new([1; 32]);
    engine
        .create_limit(now(), &LimitSpec::concurrency("busy", 1))
        .unwrap();
    engine
        .create_limit(now(), &LimitSpec::concurrency("free", 1_000))
        .unwrap();
    let holder = lease(
        engine
            .acquire(now(), &AcquireRequest::new(&["busy"], LEASE))
            .unwrap(),
    );
    for _ in 0..QUEUED {
        engine
            .acquire(now(), &AcquireRequest::new(&["busy"], LEASE))
            .unwrap();
    }
    (engine, holder)
}

fn lease(admission: Admission) -> LeaseId {
    match admission {
        Admission::Granted(grant) => match grant.held {
            Held::Lease(lease) => lease.id,
            _ => unreachable!(),
        },
        Admission::Queued(_) => panic!("expected a grant"),
    }
}

/// Acquire + release of a lease on an uncontended limit, beside 100 000
/// waiters elsewhere.
#[divan::bench]
fn lease_acquire_release_beside_100k_waiters(bencher: Bencher) {
    let (mut engine, _) = crowded();
    bencher.bench_local(|| {
        let admission = engine.acquire(now(), &AcquireRequest::new(&["free"], LEASE));
        engine.release(now(), lease(admission.unwrap())).unwrap();
    });
}

/// Acquire + release of a permit (the in-process limiter's path).
#[divan::bench]
fn permit_acquire_release(bencher: Bencher) {
    let mut engine = Engine::new([1; 32]);
    engine
        .create_limit(now(), &LimitSpec::concurrency("free", 1_000))
        .unwrap();
    bencher.bench_local(|| {
        let admission = engine.acquire(now(), &AcquireRequest::new(&["free"], Claim::Permit));
        let Ok(Admission::Granted(grant)) = admission else {
            unreachable!()
        };
        let Held::Permit(permit) = grant.held else {
            unreachable!()
        };
        engine.release_permit(now(), permit);
    });
}

/// Release the head lease of a 100 000-long queue: the next waiter is
/// granted, and one more joins the back to keep the length.
#[divan::bench]
fn handoff_through_100k_queue(bencher: Bencher) {
    let (mut engine, mut holder) = crowded();
    bencher.bench_local(|| {
        engine.release(now(), holder).unwrap();
        let wake = engine.take_wakes().pop().unwrap();
        let Held::Lease(next) = wake.outcome.unwrap().held else {
            unreachable!()
        };
        holder = next.id;
        black_box(
            engine
                .acquire(now(), &AcquireRequest::new(&["busy"], LEASE))
                .unwrap(),
        );
    });
}

/// Join and cancel at the back of a 100 000-long queue.
#[divan::bench]
fn enqueue_cancel_behind_100k(bencher: Bencher) {
    let (mut engine, _) = crowded();
    bencher.bench_local(|| {
        let Admission::Queued(id) = engine
            .acquire(now(), &AcquireRequest::new(&["busy"], LEASE))
            .unwrap()
        else {
            unreachable!()
        };
        assert!(engine.cancel(now(), id));
    });
}
