//! The classic job across processes: 30 calls of 1 s to an API that allows
//! 3 at once, made by 3 worker processes that share one limit through a
//! server.
//!
//! ```text
//! cargo run --release -p ratekeeper-client --example classic_job_processes
//! ```
//!
//! It starts a server in this process (port 0, a temporary store), then
//! itself three times as workers, each making 10 calls. Set RATEKEEPER_URL
//! to use a server of your own instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratekeeper_client::Client;
use ratekeeper_core::LimitSpec;

const WORKERS: usize = 3;
const CALLS_PER_WORKER: usize = 10;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(url) = std::env::args()
        .nth(2)
        .filter(|_| std::env::args().nth(1).as_deref() == Some("worker"))
    {
        return worker(&url).await;
    }
    let _store = tempfile::tempdir()?;
    let url = match std::env::var("RATEKEEPER_URL") {
        Ok(url) => url,
        Err(_) => serve(_store.path()).await?,
    };
    let client = Client::connect(&url)?;
    let _ = client.delete_limit("classic-api").await;
    client
        .create_limit(LimitSpec::concurrency("classic-api", 3))
        .await?;

    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            std::process::Command::new(std::env::current_exe()?)
                .args(["worker", &url])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut most = 0;
    let mut running = workers;
    while !running.is_empty() {
        most = most.max(client.limit("classic-api").await?.held);
        running.retain_mut(|w| w.try_wait().ok().flatten().is_none());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{} calls of 1 s by {WORKERS} processes, at most 3 at once: {:.3} s (ideal 10 s); \
         most slots seen held at once: {most}",
        WORKERS * CALLS_PER_WORKER,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One worker process: its share of the calls, each holding a slot.
async fn worker(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(url)?;
    let calls: Vec<_> = (0..CALLS_PER_WORKER)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let holder = format!("pid {} call {i}", std::process::id());
                let lease = client.concurrency("classic-api").holder(holder).await?;
                tokio::time::sleep(Duration::from_secs(1)).await; // the API call
                lease.release().await
            })
        })
        .collect();
    for call in calls {
        call.await??;
    }
    Ok(())
}

/// A server on port 0 with its store in `dir`; its URL.
async fn serve(dir: &std::path::Path) -> std::io::Result<String> {
    let backend = ratekeeper_backend::Embedded::open(dir).map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let config = ratekeeper_server::ServerConfig::default();
    tokio::spawn(ratekeeper_server::serve(
        listener,
        Arc::new(backend),
        config,
        std::future::pending(),
    ));
    Ok(url)
}
