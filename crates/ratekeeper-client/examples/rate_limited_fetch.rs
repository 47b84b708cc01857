//! A fetch loop held to 20 requests per second by a global rate limit:
//! every process running this loop against the same limit shares the 20.
//!
//! ```text
//! cargo run --release -p ratekeeper-client --example rate_limited_fetch
//! ```
//!
//! Uses `memory://` and a local HTTP endpoint, so it runs anywhere; point
//! `Client::connect` at a server to share the limit between processes.

use std::time::Instant;

use ratekeeper_client::Client;
use ratekeeper_core::LimitSpec;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let vendor = local_endpoint().await?;
    let client = Client::connect("memory://")?;
    client
        .create_limit(LimitSpec::rate("vendor-rps", 20.0, 1))
        .await?;

    let http = reqwest::Client::new();
    let started = Instant::now();
    for page in 0..40 {
        client.rate_limit("vendor-rps").await?; // waits for this call's turn
        let body = http
            .get(format!("{vendor}/items?page={page}"))
            .send()
            .await?
            .text()
            .await?;
        if page % 10 == 0 {
            println!(
                "{:>6.3} s  page {page}: {body}",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // One at once, then one every 50 ms: 39 gaps.
    println!(
        "40 requests in {elapsed:.3} s: {:.2}/s after the first (limit 20/s)",
        39.0 / elapsed
    );
    Ok(())
}

/// A stand-in for the vendor's API on a local port.
async fn local_endpoint() -> std::io::Result<String> {
    let app = axum::Router::new().route("/items", axum::routing::get(|| async { "[...]" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}
