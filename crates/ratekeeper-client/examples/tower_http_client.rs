//! The tower layer in front of an HTTP client: every request through the
//! service holds one of 2 global slots and takes one of 50 turns per
//! second, however many tasks send requests.
//!
//! ```text
//! cargo run --release -p ratekeeper-client --example tower_http_client
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ratekeeper_client::{Client, LimitLayer};
use ratekeeper_core::LimitSpec;
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[tokio::main]
async fn main() -> Result<(), ratekeeper_client::BoxError> {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let vendor = local_endpoint(in_flight.clone(), most.clone()).await?;

    let client = Client::connect("memory://")?;
    client
        .create_limit(LimitSpec::concurrency("vendor", 2))
        .await?;
    client
        .create_limit(LimitSpec::rate("vendor-rps", 50.0, 5))
        .await?;

    let http = reqwest::Client::new();
    let fetch = service_fn(move |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await?.text().await }
    });
    let limited = ServiceBuilder::new()
        .layer(
            LimitLayer::new(client)
                .concurrency("vendor")
                .rate("vendor-rps"),
        )
        .service(fetch);

    let started = Instant::now();
    let requests: Vec<_> = (0..40)
        .map(|i| tokio::spawn(limited.clone().oneshot(format!("{vendor}/item/{i}"))))
        .collect();
    for request in requests {
        request.await??;
    }
    println!(
        "40 requests from 40 tasks in {:.3} s; at most {} in flight at the vendor (limit 2)",
        started.elapsed().as_secs_f64(),
        most.load(Ordering::SeqCst)
    );
    Ok(())
}

/// A vendor endpoint that takes 20 ms and counts requests in flight.
async fn local_endpoint(
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
) -> std::io::Result<String> {
    let handler = move || {
        let (in_flight, most) = (in_flight.clone(), most.clone());
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            "{}"
        }
    };
    let app = axum::Router::new().route("/item/{id}", axum::routing::get(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}
