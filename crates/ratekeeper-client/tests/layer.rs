//! The tower layer in front of a service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ratekeeper_client::{Client, Error, HttpThrottling, LimitLayer};
use ratekeeper_core::LimitSpec;
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[tokio::test]
async fn calls_through_the_layer_respect_both_limits() {
    let client = Client::connect("memory://layer-test").unwrap();
    client
        .create_limit(LimitSpec::concurrency("vendor", 2))
        .await
        .unwrap();
    client
        .create_limit(LimitSpec::rate("vendor-rps", 200.0, 1))
        .await
        .unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let service = {
        let (inside, most) = (inside.clone(), most.clone());
        service_fn(move |n: u32| {
            let (inside, most) = (inside.clone(), most.clone());
            async move {
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(n * 2)
            }
        })
    };
    let limited = ServiceBuilder::new()
        .layer(
            LimitLayer::new(client.clone())
                .concurrency("vendor")
                .rate("vendor-rps"),
        )
        .service(service);
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|n| tokio::spawn(limited.clone().oneshot(n)))
        .collect();
    for (n, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), n as u32 * 2);
    }
    assert_eq!(most.load(Ordering::SeqCst), 2);
    // Ten turns at 200/s with a burst of 1: at least 45 ms.
    assert!(started.elapsed() >= Duration::from_millis(45));
    assert_eq!(client.limit("vendor").await.unwrap().held, 0);
}

#[tokio::test]
async fn limit_errors_come_out_of_the_service() {
    let client = Client::connect("memory://layer-errors").unwrap();
    let service = service_fn(|()| async { Ok::<_, std::io::Error>(()) });
    let limited = ServiceBuilder::new()
        .layer(LimitLayer::new(client).concurrency("missing"))
        .service(service);
    let err = limited.oneshot(()).await.unwrap_err();
    let err = err.downcast::<Error>().unwrap();
    assert!(matches!(*err, Error::LimitNotFound(_)), "{err}");
}

#[tokio::test]
async fn a_429_with_retry_after_pauses_the_layers_limits_for_every_worker() {
    let client = Client::connect("memory://layer-throttled").unwrap();
    client
        .create_limit(LimitSpec::concurrency("vendor", 4))
        .await
        .unwrap();
    client
        .create_limit(LimitSpec::rate("vendor-rps", 100.0, 10))
        .await
        .unwrap();
    let vendor = service_fn(|status: u16| async move {
        let response = http::Response::builder()
            .status(status)
            .header("retry-after", "120")
            .body(())
            .unwrap();
        Ok::<_, std::io::Error>(response)
    });
    let limited = ServiceBuilder::new()
        .layer(
            LimitLayer::new(client.clone())
                .concurrency("vendor")
                .rate("vendor-rps")
                .report_throttling(HttpThrottling),
        )
        .service(vendor);
    let ok = limited.clone().oneshot(200).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(client.limit("vendor").await.unwrap().paused.is_none());
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let throttled = limited.clone().oneshot(429).await.unwrap();
    assert_eq!(throttled.status(), 429, "the answer is handed on as it is");
    for name in ["vendor", "vendor-rps"] {
        let pause = client.limit(name).await.unwrap().paused.expect("paused");
        assert!(pause.until >= before + 119_000, "{pause:?}");
        assert!(pause.reason.unwrap().contains("120"));
        assert!(pause.reporter.unwrap().contains("pid"));
    }
    // The next call, from this worker or any other, waits for the pause.
    let next = tokio::time::timeout(Duration::from_millis(200), limited.oneshot(200)).await;
    assert!(next.is_err(), "a call went through a paused limit");
}
