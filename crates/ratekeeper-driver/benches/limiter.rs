//! Uncontended acquire + release of the in-process limiter, beside
//! `tokio::sync::Semaphore` (concurrency) and `governor` (rate) in the same
//! run. Run with `cargo bench -p ratekeeper-driver --bench limiter`.

use std::future::{Future, IntoFuture};
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use divan::{Bencher, black_box};
use governor::{Quota, RateLimiter};
use ratekeeper_core::LimitSpec;
use ratekeeper_driver::Limiter;

fn main() {
    divan::main();
}

/// Polls a future that is ready at once (every uncontended acquire is).
fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("uncontended acquires are ready at once"),
    }
}

mod concurrency {
    use super::*;

    #[divan::bench]
    fn ratekeeper_try_acquire(bencher: Bencher) {
        let limiter = Limiter::new();
        limiter.create(LimitSpec::concurrency("db", 8)).unwrap();
        bencher.bench_local(|| drop(black_box(limiter.concurrency("db").try_acquire().unwrap())));
    }

    #[divan::bench]
    fn ratekeeper_await(bencher: Bencher) {
        let limiter = Limiter::new();
        limiter.create(LimitSpec::concurrency("db", 8)).unwrap();
        bencher.bench_local(|| {
            drop(black_box(
                ready(limiter.concurrency("db").into_future()).unwrap(),
            ))
        });
    }

    #[divan::bench]
    fn ratekeeper_handle_try_acquire(bencher: Bencher) {
        let limiter = Limiter::new();
        limiter.create(LimitSpec::concurrency("db", 8)).unwrap();
        let db = limiter.handle("db").unwrap();
        bencher.bench_local(|| drop(black_box(db.try_acquire().unwrap())));
    }

    #[divan::bench]
    fn ratekeeper_handle_await(bencher: Bencher) {
        let limiter = Limiter::new();
        limiter.create(LimitSpec::concurrency("db", 8)).unwrap();
        let db = limiter.handle("db").unwrap();
        bencher.bench_local(|| drop(black_box(ready(db.acquire()).unwrap())));
    }

    #[divan::bench]
    fn tokio_semaphore_try_acquire(bencher: Bencher) {
        let semaphore = tokio::sync::Semaphore::new(8);
        bencher.bench_local(|| drop(black_box(semaphore.try_acquire().unwrap())));
    }

    #[divan::bench]
    fn tokio_semaphore_await_owned(bencher: Bencher) {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(8));
        bencher.bench_local(|| drop(black_box(ready(semaphore.clone().acquire_owned()).unwrap())));
    }
}

mod rate {
    use super::*;

    #[divan::bench]
    fn ratekeeper_try_acquire(bencher: Bencher) {
        let limiter = Limiter::new();
        limiter
            .create(LimitSpec::rate("api", 1e9, 1_000_000_000))
            .unwrap();
        bencher.bench_local(|| black_box(limiter.rate_limit("api").try_acquire().unwrap()));
    }

    #[divan::bench]
    fn ratekeeper_handle_try_admit(bencher: Bencher) {
        let limiter = Limiter::new();
        limiter
            .create(LimitSpec::rate("api", 1e9, 1_000_000_000))
            .unwrap();
        let api = limiter.handle("api").unwrap();
        bencher.bench_local(|| black_box(api.try_admit().unwrap()));
    }

    #[divan::bench]
    fn governor_check(bencher: Bencher) {
        let quota = Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap());
        let limiter = RateLimiter::direct(quota);
        bencher.bench_local(|| black_box(limiter.check()).unwrap());
    }
}
