//! Limits spread over partitions on a real Redis Cluster: requests across
//! partitions are taken part by part, never exceed a limit, never
//! deadlock, and give back what they took when they fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ratekeeper_backend::conformance::{lease_of, lease_on, until_waiting};
use ratekeeper_backend::{AcquireSpec, Backend, Error};
use ratekeeper_core::{AcquireError, LeaseError, LimitSpec};
use ratekeeper_redis::testing::RedisCluster;
use ratekeeper_redis::{Options, RedisBackend};

async fn connect(cluster: &RedisCluster, prefix: &str, partitions: Option<u32>) -> RedisBackend {
    let options = Options {
        prefix: Some(prefix.into()),
        partitions,
        ..Options::default()
    };
    RedisBackend::connect_with(&cluster.urls(), options)
        .await
        .unwrap()
}

/// `count` limit names in different partitions, in partition order, each
/// created with `slots`.
async fn limits_in_partitions(backend: &RedisBackend, count: usize, slots: u64) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for i in 0.. {
        let name = format!("limit-{i}");
        let part = backend.partition_of(&name);
        if names.iter().all(|n| backend.partition_of(n) != part) {
            names.push(name);
        }
        if names.len() == count {
            break;
        }
    }
    names.sort_by_key(|name| backend.partition_of(name));
    for name in &names {
        backend
            .create_limit(LimitSpec::concurrency(name, slots))
            .await
            .unwrap();
    }
    names
}

async fn held(backend: &RedisBackend, name: &str) -> u64 {
    backend.limit(name).await.unwrap().limit.held
}

/// Waits until `name` holds `count` slots, by the backend's account.
async fn until_held(backend: &RedisBackend, name: &str, count: u64) {
    let started = Instant::now();
    while held(backend, name).await != count {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} never held {count}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_across_partitions_is_taken_part_by_part() {
    let cluster = RedisCluster::start();
    let backend = connect(&cluster, "parts", None).await;
    assert_eq!(backend.partitions(), 16, "a cluster's default");
    let names = limits_in_partitions(&backend, 2, 1).await;
    let (first, second) = (names[0].as_str(), names[1].as_str());

    // The later partition's slot is taken: the request takes its first
    // part, then waits in the second partition's queue holding it.
    let other = backend.acquire(lease_on(&[second], 1)).await.unwrap();
    let both = tokio::spawn(backend.acquire(lease_on(&[second, first], 1)));
    until_waiting(&backend, second, 1).await;
    assert_eq!(held(&backend, first).await, 1);
    backend.release(lease_of(&other)).await.unwrap();
    let granted = both.await.unwrap().unwrap();

    // One lease, shown whole wherever it is looked at, in the request's
    // order; renewed and released as one.
    let id = lease_of(&granted);
    for on in [Some(first), Some(second), None] {
        let leases = backend.leases(on).await.unwrap();
        assert_eq!(leases.len(), 1, "{on:?}");
        assert_eq!(leases[0].id, id);
        assert_eq!(leases[0].limits, [second, first], "{on:?}");
    }
    let renewed = backend
        .renew(id, Some(Duration::from_secs(90)))
        .await
        .unwrap();
    assert!(renewed.expires_at > granted.lease.unwrap().expires_at);
    backend.release(id).await.unwrap();
    assert_eq!(held(&backend, first).await, 0);
    assert_eq!(held(&backend, second).await, 0);
    assert!(matches!(
        backend.release(id).await,
        Err(Error::Lease(LeaseError::Expired))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_across_partitions_gives_back_its_parts_when_it_fails() {
    let cluster = RedisCluster::start();
    let backend = connect(&cluster, "failing", Some(8)).await;
    let names = limits_in_partitions(&backend, 2, 1).await;
    let (first, second) = (names[0].as_str(), names[1].as_str());
    let _blocker = backend.acquire(lease_on(&[second], 1)).await.unwrap();

    // Timed out waiting for the second part: the first is given back.
    let timed = AcquireSpec {
        timeout: Some(Duration::from_millis(200)),
        ..lease_on(&[first, second], 1)
    };
    assert!(matches!(
        backend.acquire(timed).await,
        Err(Error::Acquire(AcquireError::TimedOut))
    ));
    assert_eq!(held(&backend, first).await, 0);

    // Tried once: the same.
    let once = AcquireSpec {
        timeout: Some(Duration::ZERO),
        ..lease_on(&[first, second], 1)
    };
    assert!(matches!(
        backend.acquire(once).await,
        Err(Error::Acquire(AcquireError::WouldBlock))
    ));
    assert_eq!(held(&backend, first).await, 0);

    // Its client went away while it waited: the same, soon after.
    let abandoned = tokio::spawn(backend.acquire(lease_on(&[first, second], 1)));
    until_waiting(&backend, second, 1).await;
    assert_eq!(held(&backend, first).await, 1);
    abandoned.abort();
    until_held(&backend, first, 0).await;
    until_waiting(&backend, second, 0).await;

    // Refused on the second partition: nothing is taken on the first.
    let too_many = backend.acquire(lease_on(&[first, second], 2)).await;
    assert!(matches!(
        too_many,
        Err(Error::Acquire(AcquireError::OccupyExceedsSlots { .. }))
    ));
    let missing = backend.acquire(lease_on(&[first, "nowhere"], 1)).await;
    assert!(matches!(
        missing,
        Err(Error::Acquire(AcquireError::LimitNotFound { .. }))
    ));
    let first_limit = backend.limit(first).await.unwrap().limit;
    assert_eq!(first_limit.held, 0);
    assert_eq!(
        first_limit.counters.granted_total, 3,
        "only the three first parts taken before the failures above"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_one_partition_ends_the_whole_lease() {
    let cluster = RedisCluster::start();
    let backend = connect(&cluster, "reset", Some(8)).await;
    let names = limits_in_partitions(&backend, 2, 1).await;
    let (first, second) = (names[0].as_str(), names[1].as_str());
    let granted = backend
        .acquire(lease_on(&[first, second], 1))
        .await
        .unwrap();
    backend.reset_limit(first).await.unwrap();
    assert!(matches!(
        backend.renew(lease_of(&granted), None).await,
        Err(Error::Lease(LeaseError::Revoked))
    ));
    assert_eq!(
        held(&backend, second).await,
        0,
        "the other part is given back"
    );
}

/// Tasks on two instances take crossing requests (the same limits in
/// different orders, two or three at a time, and single ones) while each
/// counts, independently of the backend, how many slots its grants hold:
/// no limit is ever over its slots, and every task finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_requests_never_exceed_a_limit_and_never_deadlock() {
    const SLOTS: u64 = 2;
    const TASKS: usize = 24;
    const CYCLES: usize = 15;
    let cluster = RedisCluster::start();
    let a = connect(&cluster, "crossing", Some(8)).await;
    let b = connect(&cluster, "crossing", None).await;
    assert_eq!(b.partitions(), 8, "the store's count");
    let names = limits_in_partitions(&a, 3, SLOTS).await;
    let holding: Arc<Vec<AtomicU64>> = Arc::new(names.iter().map(|_| AtomicU64::new(0)).collect());
    let over = Arc::new(AtomicU64::new(0));
    let shapes: [&[usize]; 6] = [&[0, 1], &[1, 0], &[2, 0, 1], &[1, 2], &[0], &[2, 1, 0]];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let backend = if task % 2 == 0 { a.clone() } else { b.clone() };
        let (names, holding, over) = (names.clone(), Arc::clone(&holding), Arc::clone(&over));
        let shape = shapes[task % shapes.len()];
        tasks.push(tokio::spawn(async move {
            let on: Vec<&str> = shape.iter().map(|&i| names[i].as_str()).collect();
            for _ in 0..CYCLES {
                let granted = backend.acquire(lease_on(&on, 1)).await.unwrap();
                for &i in shape {
                    if holding[i].fetch_add(1, Ordering::SeqCst) + 1 > SLOTS {
                        over.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::task::yield_now().await;
                for &i in shape {
                    holding[i].fetch_sub(1, Ordering::SeqCst);
                }
                backend.release(lease_of(&granted)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("every task finishes: no deadlock")
            .unwrap();
    }
    assert_eq!(over.load(Ordering::SeqCst), 0, "a limit was over its slots");
    for name in &names {
        let limit = a.limit(name).await.unwrap().limit;
        assert_eq!((limit.held, limit.waiting), (0, 0), "{name}");
    }
    eprintln!(
        "{} crossing cycles in {:?}",
        TASKS * CYCLES,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_keeps_the_partition_count_it_was_first_given() {
    let cluster = RedisCluster::start();
    let first = connect(&cluster, "counted", Some(4)).await;
    assert_eq!(first.partitions(), 4);
    let options = |partitions| Options {
        prefix: Some("counted".into()),
        partitions,
        ..Options::default()
    };
    let refused = RedisBackend::connect_with(&cluster.urls(), options(Some(8))).await;
    let Err(Error::Misconfigured { reason }) = refused else {
        panic!("another count is refused as a configuration mistake");
    };
    assert!(
        reason.contains("split into 4 partitions, not 8"),
        "{reason}"
    );
    let adopted = connect(&cluster, "counted", None).await;
    assert_eq!(adopted.partitions(), 4);
    for wrong in [0, 33] {
        let refused = RedisBackend::connect_with(&cluster.urls(), options(Some(wrong))).await;
        assert!(refused.is_err(), "{wrong} partitions");
    }
}

/// `count` keys of `template` (`t:*`) in different partitions, none in the
/// template's own.
fn keys_in_partitions(backend: &RedisBackend, template: &str, count: usize) -> Vec<String> {
    let prefix = template.trim_end_matches('*');
    let mut keys: Vec<String> = Vec::new();
    for i in 0.. {
        let key = format!("{prefix}{i}");
        let part = backend.partition_of(&key);
        if part != backend.partition_of(template)
            && keys.iter().all(|k| backend.partition_of(k) != part)
        {
            keys.push(key);
        }
        if keys.len() == count {
            return keys;
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_spans_every_partition_and_its_bound_holds_in_all() {
    let cluster = RedisCluster::start();
    let backend = connect(&cluster, "templates", Some(8)).await;
    let template = LimitSpec {
        max_instances: Some(3),
        ..LimitSpec::concurrency("t:*", 1)
    };
    backend.create_limit(template).await.unwrap();
    let keys = keys_in_partitions(&backend, "t:*", 5);

    // Three keys in three partitions, whichever partitions' shares of the
    // three they started with: the partitions lend each other room.
    let mut leases = Vec::new();
    for key in &keys[..3] {
        leases.push(backend.acquire(lease_on(&[key], 1)).await.unwrap());
    }
    for key in &keys[3..] {
        let refused = backend.acquire(lease_on(&[key], 1)).await;
        assert!(
            matches!(
                refused,
                Err(Error::Acquire(AcquireError::TooManyInstances {
                    max: 3,
                    ..
                }))
            ),
            "{key}: {refused:?}"
        );
    }

    // Someone waits on a key already made.
    let waiter = tokio::spawn(backend.acquire(lease_on(&[&keys[0]], 1)));
    until_waiting(&backend, &keys[0], 1).await;

    // The template, read or listed, adds up every partition's copy.
    let shown = backend.limit("t:*").await.unwrap().limit;
    let summed = (shown.held, shown.waiting, shown.template.unwrap().instances);
    assert_eq!(summed, (3, 1, 3));
    let listed = backend.limits().await.unwrap();
    assert_eq!(listed.len(), 1, "one template, not one per partition");
    assert_eq!(listed[0].template.unwrap().instances, 3);
    let all = ratekeeper_core::InstanceQuery {
        prefix: "t:",
        order: ratekeeper_core::InstanceOrder::Name,
        after: None,
        count: 2,
    };
    let page = backend.instances("t:*", all).await.unwrap();
    let mut expected: Vec<&String> = keys[..3].iter().collect();
    expected.sort();
    let names: Vec<&String> = page.iter().map(|l| &l.name).collect();
    assert_eq!(names, expected[..2]);
    let rest = ratekeeper_core::InstanceQuery {
        after: Some(&names[1].clone()),
        ..all
    };
    let page = backend.instances("t:*", rest).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(&page[0].name, expected[2]);

    // A change reaches the instances in every partition.
    let patch = ratekeeper_core::LimitPatch {
        slots: Some(2),
        ..Default::default()
    };
    backend.update_limit("t:*", patch).await.unwrap();
    let granted = waiter.await.unwrap().unwrap();
    for key in &keys[..3] {
        assert_eq!(backend.limit(key).await.unwrap().limit.slots, 2, "{key}");
    }

    // Idle instances are dropped, and their room serves other keys.
    backend.release(lease_of(&granted)).await.unwrap();
    for lease in &leases {
        backend.release(lease_of(lease)).await.unwrap();
    }
    let shown = backend.limit("t:*").await.unwrap().limit;
    assert_eq!(shown.template.unwrap().instances, 0);
    for key in &keys[2..] {
        backend.acquire(lease_on(&[key], 1)).await.unwrap();
    }

    // Deleting the template deletes it, and its instances, everywhere.
    backend.delete_limit("t:*").await.unwrap();
    assert!(backend.limits().await.unwrap().is_empty());
    for key in &keys {
        let gone = backend.acquire(lease_on(&[key], 1)).await;
        assert!(
            matches!(
                gone,
                Err(Error::Acquire(AcquireError::LimitNotFound { .. }))
            ),
            "{key}: {gone:?}"
        );
    }
}
