//! The Redis backend on a real Redis Cluster of three primaries: the
//! behaviour every backend shares, and instances that find the cluster
//! from one node or from all of them.

use std::time::Duration;

use ratekeeper_backend::conformance::{self, hand_over, lease_of};
use ratekeeper_backend::{Backend, Event};
use ratekeeper_redis::testing::RedisCluster;
use ratekeeper_redis::{Options, RedisBackend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_case_holds_on_a_cluster() {
    let cluster = RedisCluster::start();
    // Spread over the default 16 partitions. (The multi-limit case's `a`
    // and `b` land in different ones, `b` first: see `partitions.rs` for
    // what differs when the first partition is the one that waits.)
    conformance::all_cases(|case| async {
        RedisBackend::connect_with_prefix(&cluster.urls(), case)
            .await
            .unwrap()
    })
    .await;
    // In one partition: each case's whole state in one hash slot, the
    // cases under their own prefixes on different nodes.
    let urls = cluster.urls();
    conformance::all_cases(|case| {
        let options = Options {
            prefix: Some(format!("{case}.whole")),
            partitions: Some(1),
            ..Options::default()
        };
        let urls = &urls;
        async move { RedisBackend::connect_with(urls, options).await.unwrap() }
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
