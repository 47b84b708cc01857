//! The embedded backend: operations, durability across a crash image of its
//! file, and events.

use std::path::Path;
use std::time::Duration;

use ratekeeper_backend::{AcquireSpec, Backend, DB_FILE, Embedded, LOG_FILE};
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
async fn a_release_that_hands_its_slot_to_a_waiter_is_stored_when_it_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let backend = std::sync::Arc::new(Embedded::open(dir.path()).unwrap());
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
    let waiter = tokio::spawn({
        let backend = backend.clone();
        async move {
            let wait = AcquireSpec {
                timeout: Some(Duration::from_secs(60)),
                ..lease_on("db", 1)
            };
            backend.acquire(wait).await.unwrap().lease.unwrap()
        }
    });
    while backend.limit("db").await.unwrap().limit.waiting == 0 {
        tokio::task::yield_now().await;
    }
    backend.release(first.id).await.unwrap();
    // Nothing else runs on this runtime before the image is taken: what
    // the files hold now is what the release's answer vouches for.
    let image = crash_image(dir.path());
    let second = waiter.await.unwrap();
    let restored = Embedded::open(image.path()).unwrap();
    let leases: Vec<_> = restored
        .limit("db")
        .await
        .unwrap()
        .leases
        .into_iter()
        .map(|lease| lease.id)
        .collect();
    assert_eq!(leases, [second.id]);
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
async fn a_pause_survives_a_crash_with_its_reason_and_reporter() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Embedded::open(dir.path()).unwrap();
    backend
        .create_limit(LimitSpec::concurrency("vendor", 1))
        .await
        .unwrap();
    let pause = ratekeeper_core::PauseSpec {
        reason: Some("429 from the vendor".into()),
        reporter: Some("worker-3".into()),
        ..ratekeeper_core::PauseSpec::for_seconds(600.0)
    };
    let paused = backend.pause_limit("vendor", pause).await.unwrap().paused;
    let image = crash_image(dir.path());
    let restored = Embedded::open(image.path()).unwrap();
    let limit = restored.limit("vendor").await.unwrap().limit;
    assert_eq!(limit.paused, paused);
    let try_once = AcquireSpec {
        timeout: Some(Duration::ZERO),
        ..lease_on("vendor", 1)
    };
    assert_eq!(
        restored.acquire(try_once).await.unwrap_err().code(),
        "would_block"
    );
}

/// The behaviour every backend shares, in memory and on disk.
mod in_memory {
    use ratekeeper_backend::Embedded;
    ratekeeper_backend::conformance_tests!(async { ((), Embedded::in_memory()) });
}

mod on_disk {
    use ratekeeper_backend::Embedded;
    ratekeeper_backend::conformance_tests!(async {
        let dir = tempfile::tempdir().unwrap();
        let backend = Embedded::open(dir.path()).unwrap();
        (dir, backend)
    });
}
