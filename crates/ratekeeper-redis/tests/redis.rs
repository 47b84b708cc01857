//! The Redis backend against a real `redis-server` (started here, on a
//! Unix socket in a temporary directory): the behaviour every backend
//! shares, then two or three instances sharing one Redis as separate
//! servers would.

use std::time::{Duration, Instant};

use ratekeeper_backend::conformance::{hand_over, lease_of, lease_on, until_waiting};
use ratekeeper_backend::{AcquireSpec, Backend, Event};
use ratekeeper_core::{LeaseError, LimitSpec};
use ratekeeper_redis::RedisBackend;
use ratekeeper_redis::testing::RedisServer;

async fn instance(redis: &RedisServer) -> RedisBackend {
    RedisBackend::connect(&redis.url()).await.unwrap()
}

#[tokio::test]
async fn a_release_on_one_instance_grants_a_waiter_parked_on_another() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    let (second, handoff) = hand_over(&a, &b).await;
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
    let holder = instances[0].acquire(lease_on(&["db"], 1)).await.unwrap();
    let (order, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..9usize {
        let instance = instances[i % 3].clone();
        let order = order.clone();
        tokio::spawn(async move {
            let granted = instance.acquire(lease_on(&["db"], 1)).await.unwrap();
            order.send(i).unwrap();
            instance.release(lease_of(&granted)).await.unwrap();
        });
        until_waiting(&instances[0], "db", i + 1).await;
    }
    instances[1].release(lease_of(&holder)).await.unwrap();
    let mut served = Vec::new();
    for _ in 0..9 {
        served.push(receiver.recv().await.unwrap());
    }
    assert_eq!(served, (0..9).collect::<Vec<_>>());
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
        ..lease_on(&["db"], 1)
    };
    let forgotten = a.acquire(short).await.unwrap();
    drop(a); // the instance that granted it is gone
    let started = Instant::now();
    let next = b.acquire(lease_on(&["db"], 1)).await.unwrap();
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

/// Instances of two releases may share a store while it is upgraded: what
/// one stores, the other's functions read. Leases and queued requests keep
/// their limits as JSON lists, as 0.1.0 does.
#[tokio::test]
async fn leases_and_queued_requests_keep_their_limits_as_0_1_0_reads_them() {
    let redis = RedisServer::start();
    let a = instance(&redis).await;
    a.create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    a.create_limit(LimitSpec::concurrency("api.v2:x-y_z", 5))
        .await
        .unwrap();
    let held = a
        .acquire(lease_on(&["db", "api.v2:x-y_z"], 1))
        .await
        .unwrap();
    let queued = tokio::spawn(a.acquire(lease_on(&["db"], 1)));
    until_waiting(&a, "db", 1).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let lease_key = format!("{{ratekeeper}}:lease:{}", lease_of(&held));
    let (names, uids): (String, String) = redis::cmd("HMGET")
        .arg(&lease_key)
        .arg("names")
        .arg("uids")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Byte for byte what cjson writes (the functions write these lists
    // without it): every version reads them.
    assert_eq!(names, r#"["db","api.v2:x-y_z"]"#);
    let cjson: String = redis::cmd("EVAL")
        .arg("return cjson.encode(cjson.decode(ARGV[1]))")
        .arg(0)
        .arg(&uids)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(uids, cjson);
    let uids: Vec<u64> = serde_json::from_str(&uids).unwrap();
    assert_eq!(uids.len(), 2);
    let tokens: Vec<String> = redis::cmd("ZRANGE")
        .arg("{ratekeeper}:q:db")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let waiting: String = redis::cmd("HGET")
        .arg(format!("{{ratekeeper}}:r:{}", tokens[0]))
        .arg("names")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(waiting, r#"["db"]"#);
    a.release(lease_of(&held)).await.unwrap();
    queued.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_store_laid_out_by_another_release_is_refused_and_left_alone() {
    let redis = RedisServer::start();
    let a = instance(&redis).await;
    a.create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let recorded: String = redis::cmd("GET")
        .arg("{ratekeeper}:layout")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(recorded, ratekeeper_redis::KEY_LAYOUT.to_string());
    let _: () = redis::cmd("SET")
        .arg("{ratekeeper}:layout")
        .arg("2")
        .query_async(&mut conn)
        .await
        .unwrap();
    let Err(refused) = RedisBackend::connect(&redis.url()).await else {
        panic!("a store of layout 2 was opened");
    };
    assert_eq!(refused.code(), "misconfigured");
    let reason = refused.to_string();
    assert!(reason.contains("key layout 2"), "{reason}");
    assert!(reason.contains("another prefix"), "{reason}");
    let kept: String = redis::cmd("GET")
        .arg("{ratekeeper}:layout")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, "2");
}

/// How many connections listen to the published changes.
async fn change_listeners(redis: &RedisServer) -> i64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("{ratekeeper}:events")
        .query_async(&mut conn)
        .await
        .unwrap();
    count
}

#[tokio::test]
async fn changes_are_published_only_while_someone_watches() {
    let redis = RedisServer::start();
    let a = instance(&redis).await;
    assert_eq!(change_listeners(&redis).await, 0);
    let events = a.events().await.unwrap();
    assert_eq!(change_listeners(&redis).await, 1);
    drop(events);
    // The feed looks for receivers every second; wait for it to go.
    let dropped = Instant::now();
    while change_listeners(&redis).await > 0 {
        assert!(
            dropped.elapsed() < Duration::from_secs(10),
            "still subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new watcher starts the feed again and sees the next change.
    let mut events = a.events().await.unwrap();
    a.create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(event, Event::Limit(view) if view.name == "db"));
}

#[tokio::test]
async fn functions_lost_by_redis_are_loaded_again() {
    let redis = RedisServer::start();
    let a = instance(&redis).await;
    a.create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    // As a Redis restarted without persistence would have it.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let granted = a.acquire(lease_on(&["db"], 1)).await.unwrap();
    a.release(lease_of(&granted)).await.unwrap();
}

#[tokio::test]
async fn every_instance_sees_the_changes() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    let mut events = b.events().await.unwrap();
    a.create_limit(LimitSpec::concurrency("db", 2))
        .await
        .unwrap();
    let granted = a.acquire(lease_on(&["db"], 1)).await.unwrap();
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
async fn changes_missed_while_redis_was_away_are_announced() {
    let mut redis = RedisServer::start();
    let a = instance(&redis).await;
    let mut events = a.events().await.unwrap();
    redis.restart();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("word of missed changes within 10 s")
            .unwrap();
        if matches!(event, Event::Missed) {
            break;
        }
    }
    // And the feed carries on.
    a.create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("the new limit's event")
            .unwrap();
        if matches!(event, Event::Limit(view) if view.name == "db") {
            break;
        }
    }
}

#[tokio::test]
async fn instances_can_reach_redis_over_tls() {
    let redis = RedisServer::start_tls();
    let backend = RedisBackend::connect(&redis.tls_url()).await.unwrap();
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let granted = backend.acquire(lease_on(&["db"], 1)).await.unwrap();
    // Seen through the plain socket too: it is the same Redis.
    let plain = instance(&redis).await;
    assert_eq!(plain.limit("db").await.unwrap().limit.held, 1);
    backend.release(lease_of(&granted)).await.unwrap();
}

/// The behaviour every backend shares, each case on a fresh Redis.
mod conformance {
    use ratekeeper_redis::RedisBackend;
    use ratekeeper_redis::testing::RedisServer;

    ratekeeper_backend::conformance_tests!(async {
        let redis = RedisServer::start();
        let backend = RedisBackend::connect(&redis.url()).await.unwrap();
        (redis, backend)
    });
}
