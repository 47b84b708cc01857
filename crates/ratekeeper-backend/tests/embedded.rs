//! The embedded backend: operations, durability across a crash image of its
//! file, and events.

use std::path::Path;
use std::time::Duration;

use ratekeeper_backend::{AcquireSpec, Backend, DB_FILE, Embedded, Event, LOG_FILE};
use ratekeeper_core::{LimitSpec, Mode};

fn lease_on(name: &str, occupy: u64) -> AcquireSpec {
    AcquireSpec {
        names: vec![name.into()],
        occupy,
        mode: Mode::Concurrency,
        lease_ttl: Duration::from_secs(60),
        holder: Some("test".into()),
        timeout: Some(Duration::ZERO),
        create_if_missing: false,
    }
}

/// What a crash would leave: the file as it is, copied while the backend
/// still runs, without any shutdown.
fn crash_image(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for file in [DB_FILE, LOG_FILE] {
        std::fs::copy(from.join(file), to.path().join(file)).unwrap();
    }
    to
}

#[tokio::test]
async fn acknowledged_state_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Embedded::open(dir.path()).unwrap();
    backend
        .create_limit(LimitSpec::concurrency("db", 3))
        .await
        .unwrap();
    backend
        .create_limit(LimitSpec::rate("api", 1.0, 5))
        .await
        .unwrap();
    let kept = backend
        .acquire(lease_on("db", 2))
        .await
        .unwrap()
        .lease
        .unwrap();
    let released = backend
        .acquire(lease_on("db", 1))
        .await
        .unwrap()
        .lease
        .unwrap();
    backend.release(released.id).await.unwrap();
    let rate = AcquireSpec {
        mode: Mode::RateLimit,
        ..lease_on("api", 5)
    };
    backend.acquire(rate.clone()).await.unwrap();

    let image = crash_image(dir.path());
    let restored = Embedded::open(image.path()).unwrap();
    let db = restored.limit("db").await.unwrap();
    assert_eq!(db.limit.held, 2);
    assert_eq!(db.leases.len(), 1);
    assert_eq!(db.leases[0].id, kept.id);
    assert_eq!(db.leases[0].holder.as_deref(), Some("test"));
    assert_eq!(db.limit.counters.granted_total, 2);
    // The restored lease still counts: only one slot is left.
    let err = restored.acquire(lease_on("db", 2)).await.unwrap_err();
    assert_eq!(err.code(), "would_block");
    restored.renew(kept.id, None).await.unwrap();
    assert_eq!(
        restored.release(released.id).await.unwrap_err().code(),
        "lease_expired"
    );
    // The decaying slots came back too: the bucket is still (nearly) full.
    let api = restored.limit("api").await.unwrap().limit;
    assert!(api.decaying > 4.0, "decaying {}", api.decaying);
    assert_eq!(
        restored.acquire(rate).await.unwrap_err().code(),
        "would_block"
    );
}

#[tokio::test]
async fn deleted_limits_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Embedded::open(dir.path()).unwrap();
    backend
        .create_limit(LimitSpec::concurrency("a", 1))
        .await
        .unwrap();
    backend
        .create_limit(LimitSpec::concurrency("b", 1))
        .await
        .unwrap();
    backend.delete_limit("a").await.unwrap();
    let image = crash_image(dir.path());
    let names: Vec<String> = Embedded::open(image.path())
        .unwrap()
        .limits()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["b"]);
}

#[tokio::test]
async fn a_waiter_is_granted_when_a_lease_is_released() {
    let backend = Embedded::in_memory();
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let first = backend
        .acquire(lease_on("db", 1))
        .await
        .unwrap()
        .lease
        .unwrap();
    let waiting = backend.acquire(AcquireSpec {
        timeout: None,
        ..lease_on("db", 1)
    });
    let waiter = tokio::spawn(waiting);
    // Wait until it is queued, by the backend's own account.
    while backend.limit("db").await.unwrap().waiters.is_empty() {
        tokio::task::yield_now().await;
    }
    backend.release(first.id).await.unwrap();
    let granted = waiter.await.unwrap().unwrap();
    assert!(granted.lease.is_some());
}

#[tokio::test]
async fn dropping_a_wait_leaves_the_queue() {
    let backend = Embedded::in_memory();
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    backend.acquire(lease_on("db", 1)).await.unwrap();
    let mut waiting = backend.acquire(AcquireSpec {
        timeout: None,
        ..lease_on("db", 1)
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(5), &mut waiting)
            .await
            .is_err()
    );
    assert_eq!(backend.limit("db").await.unwrap().waiters.len(), 1);
    drop(waiting);
    assert_eq!(backend.limit("db").await.unwrap().waiters.len(), 0);
}

#[tokio::test]
async fn events_report_changes() {
    let backend = Embedded::in_memory();
    let mut events = backend.events();
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let lease = backend
        .acquire(lease_on("db", 1))
        .await
        .unwrap()
        .lease
        .unwrap();
    backend.release(lease.id).await.unwrap();
    backend.delete_limit("db").await.unwrap();
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(match event {
            Event::Limit(view) => format!("limit {} held {}", view.name, view.held),
            Event::LimitDeleted(name) => format!("deleted {name}"),
            Event::Lease(view) => format!("lease on {:?}", view.limits),
            Event::LeaseEnded(id) => {
                assert_eq!(id, lease.id);
                "lease ended".into()
            }
        });
    }
    assert_eq!(
        seen,
        [
            "limit db held 0",
            "limit db held 1",
            "lease on [\"db\"]",
            "limit db held 0",
            "lease ended",
            "deleted db",
        ]
    );
}
