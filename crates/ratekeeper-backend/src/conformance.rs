//! The behaviour every [`Backend`] must have, as test cases that any
//! backend's tests run (feature `conformance`):
//!
//! ```ignore
//! ratekeeper_backend::conformance_tests!(async { ((), Embedded::in_memory()) });
//! ```
//!
//! The expression gives a fresh backend per case, with whatever must stay
//! alive beside it (a server process, a directory). Waiting for a queued
//! request is done by watching the backend's own account of its queue.

use std::future::Future;
use std::time::{Duration, Instant};

use ratekeeper_core::{
    AcquireError, Adaptive, DEFAULT_LEASE_TTL, InstanceOrder, InstanceQuery, LeaseError, LeaseId,
    LimitError, LimitPatch, LimitSpec, Mode, PauseSpec, ThrottleReport,
};

use crate::{AcquireSpec, Backend, Error, Event, Granted};

/// A request for `occupy` slots on `names` with a lease, waiting forever.
pub fn lease_on(names: &[&str], occupy: u64) -> AcquireSpec {
    AcquireSpec {
        names: names.iter().map(|n| n.to_string()).collect(),
        occupy,
        mode: Mode::Concurrency,
        lease_ttl: DEFAULT_LEASE_TTL,
        holder: None,
        timeout: None,
        create_if_missing: false,
    }
}

/// The lease of a concurrency grant.
pub fn lease_of(granted: &Granted) -> LeaseId {
    granted.lease.expect("a concurrency grant has a lease").id
}

/// Waits until `name` has `count` waiters, by the backend's own account.
pub async fn until_waiting<B: Backend>(backend: &B, name: &str, count: usize) {
    let started = Instant::now();
    while backend.limit(name).await.unwrap().waiters.len() != count {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} never had {count} waiters"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// For two instances sharing one state: `a` takes the only slot of a new
/// limit `db`, a request on `b` queues for it, and `a` releases. Returns
/// the grant `b` answered with and how long after the release it came.
pub async fn hand_over<B: Backend>(a: &B, b: &B) -> (Granted, Duration) {
    a.create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let first = a.acquire(lease_on(&["db"], 1)).await.unwrap();
    let waiter = tokio::spawn(b.acquire(lease_on(&["db"], 1)));
    until_waiting(a, "db", 1).await;
    let released = Instant::now();
    a.release(lease_of(&first)).await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    (second, released.elapsed())
}

/// Spawns `future` and returns its handle once `name` has `count` waiters.
async fn queued<B, F>(
    backend: &B,
    name: &str,
    count: usize,
    future: F,
) -> tokio::task::JoinHandle<F::Output>
where
    B: Backend,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = tokio::spawn(future);
    until_waiting(backend, name, count).await;
    handle
}

/// Limits are created, listed by name, changed, reset and deleted; bad
/// definitions and missing names are refused.
pub async fn limit_lifecycle<B: Backend>(backend: &B) {
    let created = backend
        .create_limit(LimitSpec::concurrency("db", 3))
        .await
        .unwrap();
    assert_eq!(
        (created.name.as_str(), created.slots, created.active),
        ("db", 3, true)
    );
    backend
        .create_limit(LimitSpec::rate("api", 10.0, 2))
        .await
        .unwrap();
    assert_eq!(
        backend.create_limit(LimitSpec::concurrency("db", 1)).await,
        Err(LimitError::AlreadyExists { name: "db".into() }.into())
    );
    assert!(matches!(
        backend.create_limit(LimitSpec::concurrency("a b", 1)).await,
        Err(Error::Limit(LimitError::InvalidName(_)))
    ));
    let names: Vec<_> = backend
        .limits()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["api", "db"]);

    let patch = LimitPatch {
        slots: Some(5),
        description: Some(Some("five".into())),
        ..LimitPatch::default()
    };
    let updated = backend.update_limit("db", patch).await.unwrap();
    assert_eq!(
        (updated.slots, updated.description.as_deref()),
        (5, Some("five"))
    );
    let cleared = LimitPatch {
        description: Some(None),
        ..LimitPatch::default()
    };
    assert_eq!(
        backend
            .update_limit("db", cleared)
            .await
            .unwrap()
            .description,
        None
    );

    backend.delete_limit("db").await.unwrap();
    let missing = Err(LimitError::NotFound { name: "db".into() }.into());
    assert_eq!(backend.delete_limit("db").await, missing);
    assert_eq!(
        backend
            .update_limit("db", LimitPatch::default())
            .await
            .map(|_| ()),
        missing
    );
    assert_eq!(backend.limit("db").await.map(|_| ()), missing);
}

/// A release grants the head waiter in the same step; it holds the lease.
pub async fn release_grants_the_next_waiter<B: Backend>(backend: &B) {
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let first = backend.acquire(lease_on(&["db"], 1)).await.unwrap();
    let waiter = queued(backend, "db", 1, backend.acquire(lease_on(&["db"], 1))).await;
    backend.release(lease_of(&first)).await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    let detail = backend.limit("db").await.unwrap();
    assert_eq!((detail.limit.held, detail.limit.waiting), (1, 0));
    assert_eq!(detail.leases[0].id, lease_of(&second));
    assert_eq!(detail.limit.counters.waited_total, 1);
}

/// First come, first served: a light request never overtakes a heavy one
/// queued before it, and the heavy one is granted once it fits.
pub async fn queues_are_first_come_first_served<B: Backend>(backend: &B) {
    backend
        .create_limit(LimitSpec::concurrency("db", 2))
        .await
        .unwrap();
    let a = backend.acquire(lease_on(&["db"], 1)).await.unwrap();
    let b = backend.acquire(lease_on(&["db"], 1)).await.unwrap();
    let heavy = queued(backend, "db", 1, backend.acquire(lease_on(&["db"], 2))).await;
    let light = queued(backend, "db", 2, backend.acquire(lease_on(&["db"], 1))).await;
    backend.release(lease_of(&a)).await.unwrap();
    // One slot is free, but the heavy head does not fit, so nobody passes.
    assert_eq!(backend.limit("db").await.unwrap().limit.held, 1);
    assert_eq!(backend.limit("db").await.unwrap().waiters.len(), 2);
    backend.release(lease_of(&b)).await.unwrap();
    let heavy = heavy.await.unwrap().unwrap();
    assert_eq!(backend.limit("db").await.unwrap().limit.held, 2);
    backend.release(lease_of(&heavy)).await.unwrap();
    light.await.unwrap().unwrap();
}

/// A request on several limits holds all of them or none.
pub async fn multi_limit_requests_are_all_or_nothing<B: Backend>(backend: &B) {
    backend
        .create_limit(LimitSpec::concurrency("a", 1))
        .await
        .unwrap();
    backend
        .create_limit(LimitSpec::concurrency("b", 1))
        .await
        .unwrap();
    let on_b = backend.acquire(lease_on(&["b"], 1)).await.unwrap();
    let both = queued(backend, "b", 1, backend.acquire(lease_on(&["a", "b"], 1))).await;
    assert_eq!(backend.limit("a").await.unwrap().limit.held, 0);
    backend.release(lease_of(&on_b)).await.unwrap();
    let granted = both.await.unwrap().unwrap();
    for name in ["a", "b"] {
        assert_eq!(backend.limit(name).await.unwrap().limit.held, 1, "{name}");
    }
    let leases = backend.leases(Some("a")).await.unwrap();
    assert_eq!(leases[0].limits, ["a", "b"]);
    backend.release(lease_of(&granted)).await.unwrap();
}

/// Try-once and timed-out requests are refused and counted; a dropped wait
/// leaves the queue.
pub async fn refusals_timeouts_and_withdrawals<B: Backend>(backend: &B) {
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let _held = backend.acquire(lease_on(&["db"], 1)).await.unwrap();
    let try_once = AcquireSpec {
        timeout: Some(Duration::ZERO),
        ..lease_on(&["db"], 1)
    };
    assert_eq!(
        backend.acquire(try_once).await,
        Err(AcquireError::WouldBlock.into())
    );
    let timed = AcquireSpec {
        timeout: Some(Duration::from_millis(100)),
        ..lease_on(&["db"], 1)
    };
    assert_eq!(
        backend.acquire(timed).await,
        Err(AcquireError::TimedOut.into())
    );
    let limit = backend.limit("db").await.unwrap().limit;
    assert_eq!((limit.waiting, limit.counters.denied_total), (0, 2));

    let abandoned = queued(backend, "db", 1, backend.acquire(lease_on(&["db"], 1))).await;
    abandoned.abort();
    until_waiting(backend, "db", 0).await;

    assert!(matches!(
        backend.acquire(lease_on(&["db"], 2)).await,
        Err(Error::Acquire(AcquireError::OccupyExceedsSlots {
            occupy: 2,
            slots: 1,
            ..
        }))
    ));
    assert!(matches!(
        backend.acquire(lease_on(&["nothing"], 1)).await,
        Err(Error::Acquire(AcquireError::LimitNotFound { .. }))
    ));
}

/// Raising the slots or deactivating a limit lets its waiters in at once;
/// an inactive limit holds nothing.
pub async fn changes_to_a_limit_wake_its_waiters<B: Backend>(backend: &B) {
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let _held = backend.acquire(lease_on(&["db"], 1)).await.unwrap();
    let raised = queued(backend, "db", 1, backend.acquire(lease_on(&["db"], 1))).await;
    let more = LimitPatch {
        slots: Some(2),
        ..LimitPatch::default()
    };
    backend.update_limit("db", more).await.unwrap();
    raised.await.unwrap().unwrap();

    let passed = queued(backend, "db", 1, backend.acquire(lease_on(&["db"], 1))).await;
    let off = LimitPatch {
        active: Some(false),
        ..LimitPatch::default()
    };
    backend.update_limit("db", off).await.unwrap();
    let granted = passed.await.unwrap().unwrap();
    assert_eq!(backend.limit("db").await.unwrap().limit.held, 2);
    let lease = backend.leases(None).await.unwrap();
    let pass_through = lease.iter().find(|l| l.id == lease_of(&granted)).unwrap();
    assert!(pass_through.limits.is_empty(), "{pass_through:?}");
}

/// Deleting a limit fails its waiters.
pub async fn deleting_a_limit_fails_its_waiters<B: Backend>(backend: &B) {
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let _held = backend.acquire(lease_on(&["db"], 1)).await.unwrap();
    let waiter = queued(backend, "db", 1, backend.acquire(lease_on(&["db"], 1))).await;
    backend.delete_limit("db").await.unwrap();
    assert_eq!(
        waiter.await.unwrap(),
        Err(AcquireError::LimitDeleted { name: "db".into() }.into())
    );
}

/// Leases renew, release once, and say why they are gone.
pub async fn leases_renew_release_and_are_revoked_by_reset<B: Backend>(backend: &B) {
    backend
        .create_limit(LimitSpec::concurrency("db", 2))
        .await
        .unwrap();
    let granted = backend.acquire(lease_on(&["db"], 1)).await.unwrap();
    let renewed = backend
        .renew(lease_of(&granted), Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert!(renewed.expires_at > granted.lease.unwrap().expires_at);
    assert!(matches!(
        backend
            .renew(lease_of(&granted), Some(Duration::from_millis(10)))
            .await,
        Err(Error::Lease(LeaseError::InvalidTtl { .. }))
    ));
    backend.release(lease_of(&granted)).await.unwrap();
    assert_eq!(
        backend.release(lease_of(&granted)).await,
        Err(LeaseError::Expired.into())
    );
    assert_eq!(
        backend.renew(lease_of(&granted), None).await,
        Err(LeaseError::Expired.into())
    );

    let revoked = backend.acquire(lease_on(&["db"], 2)).await.unwrap();
    let reset = backend.reset_limit("db").await.unwrap();
    assert_eq!(reset.held, 0);
    assert_eq!(
        backend.release(lease_of(&revoked)).await,
        Err(LeaseError::Revoked.into())
    );
}

/// A lease that is not renewed expires and frees its slots for a waiter.
pub async fn unrenewed_leases_expire<B: Backend>(backend: &B) {
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let short = AcquireSpec {
        lease_ttl: Duration::from_secs(1),
        ..lease_on(&["db"], 1)
    };
    let forgotten = backend.acquire(short).await.unwrap();
    let started = Instant::now();
    let next = backend.acquire(lease_on(&["db"], 1)).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert_eq!(
        backend
            .limit("db")
            .await
            .unwrap()
            .limit
            .counters
            .expired_total,
        1
    );
    assert_eq!(
        backend.release(lease_of(&forgotten)).await,
        Err(LeaseError::Expired.into())
    );
    backend.release(lease_of(&next)).await.unwrap();
}

/// Rate mode admits at the configured rate and needs a decaying limit.
pub async fn rate_mode_admits_at_its_rate<B: Backend>(backend: &B) {
    backend
        .create_limit(LimitSpec::rate("api", 50.0, 1))
        .await
        .unwrap();
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let rate = |name: &str| AcquireSpec {
        mode: Mode::RateLimit,
        ..lease_on(&[name], 1)
    };
    assert!(matches!(
        backend.acquire(rate("db")).await,
        Err(Error::Acquire(AcquireError::RateModeNeedsDecay { .. }))
    ));
    let started = Instant::now();
    for _ in 0..26 {
        let granted = backend.acquire(rate("api")).await.unwrap();
        assert!(granted.lease.is_none());
    }
    // The first at once, then one every 20 ms.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(495), "{elapsed:?}");
    let limit = backend.limit("api").await.unwrap().limit;
    assert_eq!(limit.counters.granted_total, 26);
    // At most the last grant's slot is still decaying (none if this read
    // came 20 ms or more after it, as on a loaded machine).
    assert!((0.0..=1.0).contains(&limit.decaying), "{}", limit.decaying);
}

/// A rate limit's full load must decay within 100 years: slower ones are
/// refused, on creation and on change, changing nothing; and at the
/// extremes that are allowed, try-once requests never get more than the
/// burst (the drain instant once saturated and admitted everyone).
pub async fn slow_decay_is_bounded_and_never_over_admits<B: Backend>(backend: &B) {
    let too_slow = |answer: Result<ratekeeper_core::LimitView, Error>| {
        matches!(answer, Err(Error::Limit(LimitError::DecayTooSlow { .. })))
    };
    assert!(too_slow(
        backend
            .create_limit(LimitSpec::rate("slow", 1e-12, 2))
            .await
    ));
    assert!(too_slow(
        backend
            .create_limit(LimitSpec::rate("huge", 1.0, 1_000_000_000_000_000))
            .await
    ));
    assert!(backend.limits().await.unwrap().is_empty());
    let slowest = 2.0 / ratekeeper_core::MAX_DRAIN_SECONDS * 1.000_001;
    backend
        .create_limit(LimitSpec::rate("slow", slowest, 2))
        .await
        .unwrap();
    let raise = LimitPatch {
        slots: Some(1_000),
        ..LimitPatch::default()
    };
    assert!(too_slow(backend.update_limit("slow", raise).await));
    let slower = LimitPatch {
        slot_decay_per_second: Some(slowest / 2.0),
        ..LimitPatch::default()
    };
    assert!(too_slow(backend.update_limit("slow", slower).await));
    let limit = backend.limit("slow").await.unwrap().limit;
    assert_eq!(limit.slots, 2);
    assert!(
        (limit.slot_decay_per_second / slowest - 1.0).abs() < 1e-12,
        "{limit:?}"
    );
    backend
        .create_limit(LimitSpec::rate("huge", 1e7, 1_000_000_000_000_000))
        .await
        .unwrap();
    let try_once = |name: &str, occupy| AcquireSpec {
        mode: Mode::RateLimit,
        timeout: Some(Duration::ZERO),
        ..lease_on(&[name], occupy)
    };
    let mut granted = 0;
    for _ in 0..20 {
        granted += u32::from(backend.acquire(try_once("slow", 1)).await.is_ok());
    }
    assert_eq!(granted, 2);
    let mut granted = 0;
    for _ in 0..3 {
        let answer = backend.acquire(try_once("huge", 999_980_000_000_000)).await;
        granted += u32::from(answer.is_ok());
    }
    assert_eq!(granted, 1);
}

/// A missing limit named with `create_if_missing` is created inactive and
/// passes through.
pub async fn create_if_missing_passes_through<B: Backend>(backend: &B) {
    let spec = AcquireSpec {
        create_if_missing: true,
        ..lease_on(&["new"], 1)
    };
    backend.acquire(spec.clone()).await.unwrap();
    backend.acquire(spec).await.unwrap();
    let limit = backend.limit("new").await.unwrap().limit;
    assert_eq!((limit.active, limit.slots, limit.held), (false, 1, 0));
}

/// Changes come out as events: limits, leases, their end, deletion.
pub async fn events_report_changes<B: Backend>(backend: &B) {
    let mut events = backend.events().await.unwrap();
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let lease = lease_of(&backend.acquire(lease_on(&["db"], 1)).await.unwrap());
    backend.release(lease).await.unwrap();
    backend.delete_limit("db").await.unwrap();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("deleted db") {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event within 5 s")
            .expect("no lag");
        seen.push(match event {
            Event::Limit(view) => format!("limit {} held {}", view.name, view.held),
            Event::LimitDeleted(name) => format!("deleted {name}"),
            Event::Lease(view) => format!("lease on {:?}", view.limits),
            Event::LeaseEnded(id) => {
                assert_eq!(id, lease);
                "lease ended".into()
            }
            Event::Missed => "missed".into(),
        });
    }
    // Within one operation, backends may order a lease's event and its
    // limit's differently; across operations the order is kept.
    let position = |text: &str| seen.iter().position(|s| s == text).unwrap();
    assert_eq!(seen[0], "limit db held 0");
    assert!(
        position("limit db held 1") < position("lease ended"),
        "{seen:?}"
    );
    assert!(
        position("lease on [\"db\"]") < position("lease ended"),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|s| *s == "lease ended").count(), 1);
}

/// A paused limit grants nothing until the pause ends, then grants its
/// queue from the head; a shorter pause does not shorten it, a resume ends
/// it at once, and a bad pause changes nothing.
pub async fn pauses_hold_the_queue_until_they_end<B: Backend>(backend: &B) {
    backend
        .create_limit(LimitSpec::concurrency("vendor", 2))
        .await
        .unwrap();
    let spec = PauseSpec {
        reason: Some("429 from the vendor".into()),
        reporter: Some("worker-7".into()),
        ..PauseSpec::for_seconds(0.3)
    };
    let paused = backend.pause_limit("vendor", spec).await.unwrap();
    let pause = paused.paused.expect("the limit is paused");
    assert_eq!(pause.reason.as_deref(), Some("429 from the vendor"));
    assert_eq!(pause.reporter.as_deref(), Some("worker-7"));
    let detail = backend.limit("vendor").await.unwrap();
    assert_eq!(
        detail.limit.paused.as_ref().map(|p| p.until),
        Some(pause.until)
    );
    let try_once = AcquireSpec {
        timeout: Some(Duration::ZERO),
        ..lease_on(&["vendor"], 1)
    };
    assert_eq!(
        backend.acquire(try_once).await,
        Err(AcquireError::WouldBlock.into())
    );
    let first = queued(
        backend,
        "vendor",
        1,
        backend.acquire(lease_on(&["vendor"], 2)),
    )
    .await;
    let second = queued(
        backend,
        "vendor",
        2,
        backend.acquire(lease_on(&["vendor"], 1)),
    )
    .await;
    let first = first.await.unwrap().unwrap();
    assert!(
        first.granted_at >= pause.until,
        "{first:?} before {pause:?}"
    );
    assert_eq!(backend.limit("vendor").await.unwrap().limit.paused, None);
    // The head took both slots; the one behind it waits its turn.
    assert_eq!(backend.limit("vendor").await.unwrap().waiters.len(), 1);
    backend.release(lease_of(&first)).await.unwrap();
    let second = second.await.unwrap().unwrap();
    backend.release(lease_of(&second)).await.unwrap();

    let long = backend
        .pause_limit("vendor", PauseSpec::for_seconds(600.0))
        .await
        .unwrap()
        .paused
        .unwrap();
    let shorter = backend
        .pause_limit("vendor", PauseSpec::for_seconds(1.0))
        .await
        .unwrap()
        .paused
        .unwrap();
    assert_eq!(
        shorter.until, long.until,
        "a shorter pause does not shorten"
    );
    let waiter = queued(
        backend,
        "vendor",
        1,
        backend.acquire(lease_on(&["vendor"], 1)),
    )
    .await;
    let resumed = backend.resume_limit("vendor").await.unwrap();
    assert_eq!(resumed.paused, None);
    waiter.await.unwrap().unwrap();

    for seconds in [-1.0, 0.0, f64::NAN, 1e9] {
        assert!(
            matches!(
                backend
                    .pause_limit("vendor", PauseSpec::for_seconds(seconds))
                    .await,
                Err(Error::Limit(LimitError::InvalidPause { .. }))
            ),
            "{seconds}"
        );
    }
    assert_eq!(backend.limit("vendor").await.unwrap().limit.paused, None);
    assert!(matches!(
        backend
            .pause_limit("nothing", PauseSpec::for_seconds(1.0))
            .await,
        Err(Error::Limit(LimitError::NotFound { .. }))
    ));
    assert!(matches!(
        backend.resume_limit("nothing").await,
        Err(Error::Limit(LimitError::NotFound { .. }))
    ));
}

/// A throttling report pauses a fixed limit for the wait asked, or a
/// second without one.
pub async fn throttling_reports_pause_a_fixed_limit<B: Backend>(backend: &B) {
    backend
        .create_limit(LimitSpec::concurrency("vendor", 1))
        .await
        .unwrap();
    let report = ThrottleReport {
        reason: Some("429".into()),
        ..ThrottleReport::default()
    };
    let paused = backend.report_throttled("vendor", report).await.unwrap();
    let pause = paused.paused.expect("paused");
    let length = pause.until.saturating_duration_since(pause.since);
    assert!(
        (Duration::from_millis(999)..=Duration::from_millis(1001)).contains(&length),
        "{pause:?}"
    );
    let asked = ThrottleReport {
        retry_after: Some(30.0),
        ..ThrottleReport::default()
    };
    let longer = backend.report_throttled("vendor", asked).await.unwrap();
    assert!(longer.paused.unwrap().until > pause.until);
}

/// Throttling reports on an adaptive limit: each lowers the rate in force
/// (at most once a second) without pausing, unless a wait was asked; a
/// limit made fixed again is back at its configured rate.
pub async fn throttling_reports_lower_an_adaptive_limit<B: Backend>(backend: &B) {
    let spec = LimitSpec {
        adaptive: Some(Adaptive::default()),
        ..LimitSpec::rate("vendor", 100.0, 10)
    };
    let created = backend.create_limit(spec).await.unwrap();
    assert_eq!(created.adaptive.unwrap().effective, 100.0);
    let lowered = backend
        .report_throttled("vendor", ThrottleReport::default())
        .await
        .unwrap();
    let adapting = lowered.adaptive.unwrap();
    assert!((adapting.scale - 0.7).abs() < 1e-9, "{adapting:?}");
    assert!((adapting.effective - 70.0).abs() < 1e-6, "{adapting:?}");
    assert!(lowered.paused.is_none(), "no wait was asked: no pause");
    let asked = ThrottleReport {
        retry_after: Some(5.0),
        ..ThrottleReport::default()
    };
    let again = backend.report_throttled("vendor", asked).await.unwrap();
    assert!(
        (again.adaptive.unwrap().scale - 0.7).abs() < 1e-9,
        "lowered once a second at most"
    );
    assert!(again.paused.is_some(), "the wait asked for is kept");
    let fixed = LimitPatch {
        adaptive: Some(None),
        ..LimitPatch::default()
    };
    let fixed = backend.update_limit("vendor", fixed).await.unwrap();
    assert!(fixed.adaptive.is_none());
    let shown = backend.limit("vendor").await.unwrap().limit;
    assert_eq!(shown.adaptive, None);
}

/// Templates: an instance per key on demand, at most `max_instances` of
/// them, shown on the template and dropped once idle.
pub async fn templates_make_an_instance_per_key<B: Backend>(backend: &B) {
    let template = LimitSpec {
        max_instances: Some(2),
        ..LimitSpec::concurrency("tenant:*", 1)
    };
    let created = backend.create_limit(template).await.unwrap();
    assert_eq!(created.template.unwrap().instances, 0);
    let a = backend.acquire(lease_on(&["tenant:a"], 1)).await.unwrap();
    let waiter = queued(
        backend,
        "tenant:a",
        1,
        backend.acquire(lease_on(&["tenant:a"], 1)),
    )
    .await;
    let b = backend.acquire(lease_on(&["tenant:b"], 1)).await.unwrap();
    let refused = backend.acquire(lease_on(&["tenant:c"], 1)).await;
    assert!(
        matches!(
            refused,
            Err(Error::Acquire(AcquireError::TooManyInstances { .. }))
        ),
        "{refused:?}"
    );
    let shown = backend.limit("tenant:*").await.unwrap().limit;
    assert_eq!(
        (shown.held, shown.waiting, shown.template.unwrap().instances),
        (2, 1, 2)
    );
    let names: Vec<String> = backend
        .limits()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["tenant:*"]);
    let all = InstanceQuery {
        prefix: "",
        order: InstanceOrder::Name,
        after: None,
        count: 10,
    };
    let instances: Vec<String> = backend
        .instances("tenant:*", all)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(instances, ["tenant:a", "tenant:b"]);
    backend.release(lease_of(&a)).await.unwrap();
    let handed = waiter.await.unwrap().unwrap();
    backend.release(lease_of(&handed)).await.unwrap();
    backend.release(lease_of(&b)).await.unwrap();
    assert_eq!(
        backend
            .limit("tenant:*")
            .await
            .unwrap()
            .limit
            .template
            .unwrap()
            .instances,
        0,
        "idle instances are dropped"
    );
}

/// Every case in turn, each on a fresh backend from `make(case name)`: one
/// test for backends too costly to start once per case (a Redis Cluster).
pub async fn all_cases<B: Backend, F: Future<Output = B>>(mut make: impl FnMut(&'static str) -> F) {
    limit_lifecycle(&make("limit_lifecycle").await).await;
    release_grants_the_next_waiter(&make("release_grants_the_next_waiter").await).await;
    queues_are_first_come_first_served(&make("queues_are_first_come_first_served").await).await;
    multi_limit_requests_are_all_or_nothing(&make("multi_limit_requests_are_all_or_nothing").await)
        .await;
    refusals_timeouts_and_withdrawals(&make("refusals_timeouts_and_withdrawals").await).await;
    changes_to_a_limit_wake_its_waiters(&make("changes_to_a_limit_wake_its_waiters").await).await;
    deleting_a_limit_fails_its_waiters(&make("deleting_a_limit_fails_its_waiters").await).await;
    leases_renew_release_and_are_revoked_by_reset(
        &make("leases_renew_release_and_are_revoked_by_reset").await,
    )
    .await;
    unrenewed_leases_expire(&make("unrenewed_leases_expire").await).await;
    rate_mode_admits_at_its_rate(&make("rate_mode_admits_at_its_rate").await).await;
    slow_decay_is_bounded_and_never_over_admits(
        &make("slow_decay_is_bounded_and_never_over_admits").await,
    )
    .await;
    create_if_missing_passes_through(&make("create_if_missing_passes_through").await).await;
    events_report_changes(&make("events_report_changes").await).await;
    pauses_hold_the_queue_until_they_end(&make("pauses_hold_the_queue_until_they_end").await).await;
    throttling_reports_pause_a_fixed_limit(&make("throttling_reports_pause_a_fixed_limit").await)
        .await;
    throttling_reports_lower_an_adaptive_limit(
        &make("throttling_reports_lower_an_adaptive_limit").await,
    )
    .await;
    templates_make_an_instance_per_key(&make("templates_make_an_instance_per_key").await).await;
}

/// One test per case, each with a fresh backend from `$make` (an async
/// expression giving `(anything to keep alive, backend)`).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            limit_lifecycle,
            release_grants_the_next_waiter,
            queues_are_first_come_first_served,
            multi_limit_requests_are_all_or_nothing,
            refusals_timeouts_and_withdrawals,
            changes_to_a_limit_wake_its_waiters,
            deleting_a_limit_fails_its_waiters,
            leases_renew_release_and_are_revoked_by_reset,
            unrenewed_leases_expire,
            rate_mode_admits_at_its_rate,
            slow_decay_is_bounded_and_never_over_admits,
            create_if_missing_passes_through,
            events_report_changes,
            pauses_hold_the_queue_until_they_end,
            throttling_reports_pause_a_fixed_limit,
            throttling_reports_lower_an_adaptive_limit,
            templates_make_an_instance_per_key,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (_keep, backend) = $make.await;
                $crate::conformance::$case(&backend).await;
            }
        )*
    };
}
