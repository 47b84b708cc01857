//! A load generator for the server: handoff latency and acquire+release
//! churn over real HTTP on loopback.
//!
//! It starts the server in this process on its own runtime (2 worker
//! threads, a fresh data directory, port 0) and drives it from a second
//! runtime with many concurrent HTTP clients, so both share this machine's
//! cores as a server and its clients on one host would.
//!
//! ```text
//! cargo run --release -p ratekeeper --example load -- [CLIENTS] [SECONDS]
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ratekeeper_backend::Embedded;
use ratekeeper_server::ServerConfig;
use serde_json::{Value, json};

/// As in the `ratekeeper` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args
        .next()
        .map_or(64, |a| a.parse().expect("CLIENTS is a number"));
    let seconds: f64 = args
        .next()
        .map_or(5.0, |a| a.parse().expect("SECONDS is a number"));
    let duration = Duration::from_secs_f64(seconds);
    println!("{clients} clients, {seconds} s per churn run, medians of 3 runs\n");
    println!("| store | handoff p50 | handoff p99 | handoff max | churn cycles/s |");
    println!("|---|---|---|---|---|");
    for durable in [true, false] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let backend = if durable {
            Embedded::open(dir.path()).expect("the store opens")
        } else {
            Embedded::in_memory()
        };
        let url = start_server(backend);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (p50, p99, max, churn) = runtime.block_on(async {
            let http = reqwest::Client::new();
            let mut handoffs = handoff(&http, &url, 1000).await;
            handoffs.sort();
            let mut runs = Vec::new();
            for run in 0..3 {
                runs.push(churn(&url, &format!("churn-{run}"), clients, duration).await);
            }
            runs.sort_by(f64::total_cmp);
            let at = |q: f64| handoffs[((handoffs.len() - 1) as f64 * q) as usize];
            (at(0.5), at(0.99), at(1.0), runs[1])
        });
        let store = if durable {
            "durable (change log + redb)"
        } else {
            "memory"
        };
        println!(
            "| {store} | {:.3} ms | {:.3} ms | {:.3} ms | {churn:.0} |",
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Serves `backend` on a runtime of its own; returns its URL.
fn start_server(backend: Embedded) -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            sender
                .send(format!(
                    "http://{}",
                    listener.local_addr().expect("an address")
                ))
                .expect("main waits");
            let config = ServerConfig::default();
            ratekeeper_server::serve(listener, Arc::new(backend), config, std::future::pending())
                .await
                .expect("the server runs");
        });
    });
    receiver.recv().expect("the server starts")
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Value {
    http.post(url)
        .json(&body)
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("JSON")
}

async fn release(http: &reqwest::Client, url: &str, lease: &Value) {
    let lease = lease["lease_id"].as_str().expect("a lease");
    let response = http
        .delete(format!("{url}/v1/leases/{lease}"))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 204);
}

/// Two clients pass one slot back and forth: the time from the holder
/// starting its release to the waiter's grant arriving.
async fn handoff(http: &reqwest::Client, url: &str, rounds: usize) -> Vec<Duration> {
    post(
        http,
        &format!("{url}/v1/limits"),
        json!({"name": "handoff", "slots": 1}),
    )
    .await;
    let acquire = json!({"names": ["handoff"]});
    let released_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let samples: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let player = |http: reqwest::Client| {
        let (url, acquire) = (url.to_owned(), acquire.clone());
        let (released_at, samples) = (Arc::clone(&released_at), Arc::clone(&samples));
        async move {
            while samples.lock().unwrap().len() < rounds {
                let lease = post(&http, &format!("{url}/v1/acquire"), acquire.clone()).await;
                if let Some(at) = released_at.lock().unwrap().take() {
                    samples.lock().unwrap().push(at.elapsed());
                }
                // Give the other player time to queue behind this holder.
                tokio::time::sleep(Duration::from_millis(1)).await;
                *released_at.lock().unwrap() = Some(Instant::now());
                release(&http, &url, &lease).await;
            }
        }
    };
    let a = tokio::spawn(player(http.clone()));
    let b = tokio::spawn(player(reqwest::Client::new()));
    a.await.expect("player a");
    b.await.expect("player b");
    Arc::try_unwrap(samples)
        .expect("players are done")
        .into_inner()
        .unwrap()
}

/// `clients` clients acquire and release one slot each as fast as they can
/// on a limit with as many slots: cycles per second.
async fn churn(url: &str, name: &str, clients: usize, duration: Duration) -> f64 {
    let http = reqwest::Client::new();
    post(
        &http,
        &format!("{url}/v1/limits"),
        json!({"name": name, "slots": clients}),
    )
    .await;
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url) = (http.clone(), url.to_owned());
            let acquire = json!({"names": [name]});
            tokio::spawn(async move {
                let mut cycles = 0u64;
                while Instant::now() < deadline {
                    let lease = post(&http, &format!("{url}/v1/acquire"), acquire.clone()).await;
                    release(&http, &url, &lease).await;
                    cycles += 1;
                }
                cycles
            })
        })
        .collect();
    let started = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("a client");
    }
    total as f64 / started.elapsed().as_secs_f64()
}
