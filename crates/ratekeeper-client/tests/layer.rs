//! The tower layer in front of a service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ratekeeper_client::{Client, Error, LimitLayer};
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
