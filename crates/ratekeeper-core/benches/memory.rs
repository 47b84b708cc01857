//! Bytes per limit, per queued waiter and per live lease, counted by a
//! counting allocator: 100 000 limits (names of 16 characters), 100 000
//! waiters and 1 000 000 leases in one engine. Run with
//! `cargo bench -p ratekeeper-core --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use ratekeeper_core::{AcquireRequest, Admission, Claim, Engine, LimitSpec, Timestamp};

/// The system allocator, counting the bytes live at any moment.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const LIMITS: u64 = 100_000;
const WAITERS: u64 = 100_000;
const LEASES: u64 = 1_000_000;

fn main() {
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    let lease = Claim::Lease {
        ttl: Duration::from_secs(30),
        holder: Some("worker-17:pid-4242"),
    };
    let mut engine = Engine::new([9; 32]);
    engine
        .create_limit(now, &LimitSpec::concurrency("closed", 0))
        .unwrap();
    engine
        .create_limit(now, &LimitSpec::concurrency("open", LEASES))
        .unwrap();

    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    for i in 0..LIMITS {
        let spec = LimitSpec::concurrency(format!("tenant-{i:09}"), 10);
        engine.create_limit(now, &spec).unwrap();
    }
    let per_limit = (LIVE.load(Ordering::Relaxed) - before) as f64 / LIMITS as f64;
    let limits_took = started.elapsed();

    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    for _ in 0..WAITERS {
        let admission = engine
            .acquire(now, &AcquireRequest::new(&["closed"], lease))
            .unwrap();
        assert!(matches!(admission, Admission::Queued(_)));
    }
    let per_waiter = (LIVE.load(Ordering::Relaxed) - before) as f64 / WAITERS as f64;
    let waiters_took = started.elapsed();

    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    for _ in 0..LEASES {
        let admission = engine
            .acquire(now, &AcquireRequest::new(&["open"], lease))
            .unwrap();
        assert!(matches!(admission, Admission::Granted(_)));
    }
    let per_lease = (LIVE.load(Ordering::Relaxed) - before) as f64 / LEASES as f64;
    let leases_took = started.elapsed();

    assert_eq!(engine.waiting() as u64, WAITERS);
    assert_eq!(engine.lease_count() as u64, LEASES);
    println!("engine memory (heap bytes, holder label of 18 characters)");
    println!(
        "  per limit:         {per_limit:>6.0} B  ({LIMITS} limits created in {limits_took:.2?})"
    );
    println!(
        "  per queued waiter: {per_waiter:>6.0} B  ({WAITERS} waiters queued in {waiters_took:.2?})"
    );
    println!(
        "  per live lease:    {per_lease:>6.0} B  ({LEASES} leases granted in {leases_took:.2?})"
    );
    println!(
        "  total:             {:>6.1} MiB",
        LIVE.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
    );
}
