//! The Redis backend against a real `redis-server` (started here, on a
//! Unix socket in a temporary directory), with two or three backend
//! instances sharing it as separate servers would.

use std::time::{Duration, Instant};

use ratekeeper_backend::{AcquireSpec, Backend, Error, Event, Granted};
use ratekeeper_core::{
    AcquireError, DEFAULT_LEASE_TTL, LeaseError, LimitError, LimitPatch, LimitSpec, Mode,
};
use ratekeeper_redis::RedisBackend;
use ratekeeper_redis::testing::RedisServer;

async fn instance(redis: &RedisServer) -> RedisBackend {
    RedisBackend::connect(&redis.url()).await.unwrap()
}

fn lease(names: &[&str]) -> AcquireSpec {
    AcquireSpec {
        names: names.iter().map(|n| n.to_string()).collect(),
        occupy: 1,
        mode: Mode::Concurrency,
        lease_ttl: DEFAULT_LEASE_TTL,
        holder: None,
        timeout: None,
        create_if_missing: false,
    }
}

fn rate(name: &str) -> AcquireSpec {
    AcquireSpec {
        mode: Mode::RateLimit,
        ..lease(&[name])
    }
}

async fn waiting(backend: &RedisBackend, name: &str) -> u64 {
    backend.limit(name).await.unwrap().limit.waiting
}

/// Waits until `name` has `count` waiters, checking every few milliseconds.
async fn until_waiting(backend: &RedisBackend, name: &str, count: u64) {
    let started = Instant::now();
    while waiting(backend, name).await != count {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} never had {count} waiters"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn lease_of(granted: &Granted) -> ratekeeper_core::LeaseId {
    granted.lease.expect("a concurrency grant has a lease").id
}

#[tokio::test]
async fn limits_are_created_listed_changed_reset_and_deleted() {
    let redis = RedisServer::start();
    let backend = instance(&redis).await;
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
    let names: Vec<String> = backend
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

    let held = backend.acquire(lease(&["db"])).await.unwrap();
    assert_eq!(backend.limit("db").await.unwrap().limit.held, 1);
    backend.reset_limit("db").await.unwrap();
    assert_eq!(backend.limit("db").await.unwrap().limit.held, 0);
    assert_eq!(
        backend.release(lease_of(&held)).await,
        Err(LeaseError::Revoked.into())
    );

    backend.delete_limit("db").await.unwrap();
    assert_eq!(
        backend.delete_limit("db").await,
        Err(LimitError::NotFound { name: "db".into() }.into())
    );
    assert!(matches!(
        backend.limit("db").await,
        Err(Error::Limit(LimitError::NotFound { .. }))
    ));
}

#[tokio::test]
async fn a_release_on_one_instance_grants_a_waiter_parked_on_another() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    a.create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let first = a.acquire(lease(&["db"])).await.unwrap();
    let waiter = tokio::spawn(b.acquire(lease(&["db"])));
    until_waiting(&a, "db", 1).await;

    let released = Instant::now();
    a.release(lease_of(&first)).await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    let handoff = released.elapsed();
    assert!(
        handoff < Duration::from_millis(500),
        "handoff took {handoff:?}"
    );
    assert!(second.waited > Duration::ZERO);
    let detail = a.limit("db").await.unwrap();
    assert_eq!((detail.limit.held, detail.limit.waiting), (1, 0));
    assert_eq!(detail.leases[0].id, lease_of(&second));
}

#[tokio::test]
async fn waiters_on_three_instances_are_served_in_arrival_order() {
    let redis = RedisServer::start();
    let instances = [
        instance(&redis).await,
        instance(&redis).await,
        instance(&redis).await,
    ];
    instances[0]
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let holder = instances[0].acquire(lease(&["db"])).await.unwrap();
    let (order, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..9usize {
        let instance = instances[i % 3].clone();
        let order = order.clone();
        tokio::spawn(async move {
            let granted = instance.acquire(lease(&["db"])).await.unwrap();
            order.send(i).unwrap();
            instance.release(lease_of(&granted)).await.unwrap();
        });
        until_waiting(&instances[0], "db", i as u64 + 1).await;
    }
    instances[1].release(lease_of(&holder)).await.unwrap();
    let mut served = Vec::new();
    for _ in 0..9 {
        served.push(receiver.recv().await.unwrap());
    }
    assert_eq!(served, (0..9).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_multi_limit_request_is_granted_on_all_at_once() {
    let redis = RedisServer::start();
    let backend = instance(&redis).await;
    backend
        .create_limit(LimitSpec::concurrency("a", 1))
        .await
        .unwrap();
    backend
        .create_limit(LimitSpec::concurrency("b", 1))
        .await
        .unwrap();
    let on_b = backend.acquire(lease(&["b"])).await.unwrap();
    let both = tokio::spawn(backend.acquire(lease(&["a", "b"])));
    until_waiting(&backend, "b", 1).await;
    // It holds nothing on `a` while it waits for `b`.
    assert_eq!(backend.limit("a").await.unwrap().limit.held, 0);
    backend.release(lease_of(&on_b)).await.unwrap();
    let granted = both.await.unwrap().unwrap();
    for name in ["a", "b"] {
        assert_eq!(backend.limit(name).await.unwrap().limit.held, 1, "{name}");
    }
    backend.release(lease_of(&granted)).await.unwrap();
}

#[tokio::test]
async fn timeouts_try_once_and_dropped_waits_leave_the_queue() {
    let redis = RedisServer::start();
    let backend = instance(&redis).await;
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let _held = backend.acquire(lease(&["db"])).await.unwrap();

    let try_once = AcquireSpec {
        timeout: Some(Duration::ZERO),
        ..lease(&["db"])
    };
    assert_eq!(
        backend.acquire(try_once).await,
        Err(AcquireError::WouldBlock.into())
    );
    let timed = AcquireSpec {
        timeout: Some(Duration::from_millis(150)),
        ..lease(&["db"])
    };
    assert_eq!(
        backend.acquire(timed).await,
        Err(AcquireError::TimedOut.into())
    );
    assert_eq!(waiting(&backend, "db").await, 0);
    assert_eq!(
        backend
            .limit("db")
            .await
            .unwrap()
            .limit
            .counters
            .denied_total,
        2
    );

    let abandoned = tokio::spawn(backend.acquire(lease(&["db"])));
    until_waiting(&backend, "db", 1).await;
    abandoned.abort();
    until_waiting(&backend, "db", 0).await;
}

#[tokio::test]
async fn a_rate_limit_admits_at_its_rate() {
    let redis = RedisServer::start();
    let backend = instance(&redis).await;
    backend
        .create_limit(LimitSpec::rate("api", 50.0, 1))
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..26 {
        backend.acquire(rate("api")).await.unwrap();
    }
    let elapsed = started.elapsed();
    // The first is admitted at once, the other 25 one every 20 ms.
    assert!(elapsed >= Duration::from_millis(495), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
    let limit = backend.limit("api").await.unwrap().limit;
    assert_eq!(limit.counters.granted_total, 26);
    assert!(
        limit.decaying > 0.0 && limit.decaying <= 1.0,
        "{}",
        limit.decaying
    );
    assert!(matches!(
        backend.acquire(rate("nothing")).await,
        Err(Error::Acquire(AcquireError::LimitNotFound { .. }))
    ));
}

#[tokio::test]
async fn an_unrenewed_lease_expires_and_its_slot_goes_to_the_next_waiter() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    a.create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let short = AcquireSpec {
        lease_ttl: Duration::from_secs(1),
        ..lease(&["db"])
    };
    let forgotten = a.acquire(short).await.unwrap();
    drop(a); // the instance that granted it is gone
    let started = Instant::now();
    let next = b.acquire(lease(&["db"])).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    assert_eq!(b.limit("db").await.unwrap().limit.counters.expired_total, 1);
    assert_eq!(
        b.release(lease_of(&forgotten)).await,
        Err(LeaseError::Expired.into())
    );
    b.release(lease_of(&next)).await.unwrap();
}

#[tokio::test]
async fn renewal_extends_a_lease() {
    let redis = RedisServer::start();
    let backend = instance(&redis).await;
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let granted = backend.acquire(lease(&["db"])).await.unwrap();
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
        backend.renew(lease_of(&granted), None).await,
        Err(LeaseError::Expired.into())
    );
}

#[tokio::test]
async fn every_instance_sees_the_changes() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    let mut events = b.events();
    a.create_limit(LimitSpec::concurrency("db", 2))
        .await
        .unwrap();
    let granted = a.acquire(lease(&["db"])).await.unwrap();
    let mut seen_held = false;
    let mut seen_lease = false;
    while !(seen_held && seen_lease) {
        match tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Limit(view) if view.held == 1 => seen_held = true,
            Event::Lease(view) if view.id == lease_of(&granted) => seen_lease = true,
            _ => {}
        }
    }
    a.delete_limit("db").await.unwrap();
    loop {
        if let Event::LimitDeleted(name) = events.recv().await.unwrap() {
            assert_eq!(name, "db");
            break;
        }
    }
}

#[tokio::test]
async fn create_if_missing_creates_an_inactive_pass_through_limit() {
    let redis = RedisServer::start();
    let backend = instance(&redis).await;
    let spec = AcquireSpec {
        create_if_missing: true,
        ..lease(&["new"])
    };
    backend.acquire(spec.clone()).await.unwrap();
    backend.acquire(spec).await.unwrap();
    let limit = backend.limit("new").await.unwrap().limit;
    assert_eq!((limit.active, limit.slots, limit.held), (false, 1, 0));
}
