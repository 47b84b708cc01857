//! The Redis backend on a real Redis Cluster of three primaries: the
//! behaviour every backend shares, and instances that find the cluster
//! from one node or from all of them.

use std::time::Duration;

use ratekeeper_backend::conformance::{self, hand_over, lease_of};
use ratekeeper_backend::{Backend, Event};
use ratekeeper_redis::RedisBackend;
use ratekeeper_redis::testing::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_case_holds_on_a_cluster() {
    let cluster = RedisCluster::start();
    // Each case under its own prefix, so its own hash slot: the cases
    // land on different nodes.
    conformance::all_cases(|case| async {
        RedisBackend::connect_with_prefix(&cluster.urls(), case)
            .await
            .unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_a_cluster_hand_over_and_see_the_changes() {
    let cluster = RedisCluster::start();
    let a = RedisBackend::connect(&cluster.urls()).await.unwrap();
    // One node is enough: it says it is part of a cluster.
    let b = RedisBackend::connect(&cluster.node_url()).await.unwrap();
    let mut events = b.events().await.unwrap();
    let (second, handoff) = hand_over(&a, &b).await;
    assert!(
        handoff < Duration::from_secs(1),
        "the waiter on the other instance is answered at once, not after {handoff:?}"
    );
    assert_eq!(a.limit("db").await.unwrap().limit.held, 1);
    b.release(lease_of(&second)).await.unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("a change within 5 s")
            .unwrap();
        if matches!(event, Event::LeaseEnded(id) if id == lease_of(&second)) {
            break;
        }
    }
}
