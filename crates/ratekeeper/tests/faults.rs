//! Faults under load, checked by the clients' own clocks
//! (`common/checker.rs`): servers paused with SIGSTOP for longer than a
//! lease lives, Redis killed with `kill -9` with its append-only file, and
//! Redis killed without any persistence.
//!
//! The suite runs a few rounds of each; `scripts/torture` runs many
//! (`RATEKEEPER_FAULT_ROUNDS`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::ServerProcess;
use common::checker::Checker;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ratekeeper_redis::testing::RedisServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SLOTS: usize = 3;
const CLIENTS: usize = 8;
/// Short, so that pauses outlast leases.
const LEASE_SECONDS: f64 = 2.0;

fn rounds() -> usize {
    common::rounds("RATEKEEPER_FAULT_ROUNDS", 3)
}

/// Two `ratekeeper serve` on `redis`, with the shared limit made.
async fn two_servers_on(redis: &RedisServer, dir: &tempfile::TempDir) -> Vec<ServerProcess> {
    let servers: Vec<_> = (0..2)
        .map(|_| ServerProcess::start(dir.path(), &["--store", &redis.url()]))
        .collect();
    create_shared(&servers[0].url).await;
    servers
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Option<(StatusCode, Value)> {
    let response = http.post(url).json(&body).send().await.ok()?;
    let status = response.status();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// Clients acquiring and releasing on `shared` through `urls` (spread over
/// them) until `stop`; a refusal or a failed connection is retried after a
/// moment, as a real client would.
fn clients(
    urls: &[String],
    log: &Checker,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            let (log, stop) = (log.clone(), Arc::clone(stop));
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let acquire = json!({"names": ["shared"], "lease_seconds": LEASE_SECONDS,
                    "timeout_seconds": 5, "holder": format!("client-{i}")});
                while !stop.load(Ordering::SeqCst) {
                    let answer = post(&http, &format!("{url}/v1/acquire"), acquire.clone()).await;
                    let Some((StatusCode::OK, lease)) = answer else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    log.granted();
                    tokio::task::yield_now().await;
                    log.releasing();
                    let id = lease["lease_id"].as_str().unwrap();
                    // Whatever the answer (gone, unavailable): the holder
                    // has stopped counting on the slot.
                    let _ = http.delete(format!("{url}/v1/leases/{id}")).send().await;
                }
            })
        })
        .collect()
}

/// Waits until the clients have made `more` grants since `from`.
async fn until_grants(log: &Checker, from: usize, more: usize) {
    let started = Instant::now();
    while log.grants() < from + more {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the clients stopped making progress"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn create_shared(url: &str) {
    let http = reqwest::Client::new();
    let created = post(
        &http,
        &format!("{url}/v1/limits"),
        json!({"name": "shared", "slots": SLOTS}),
    )
    .await;
    assert_eq!(created.map(|c| c.0), Some(StatusCode::CREATED));
}

/// Runs the clients on `urls`, applies `fault` once a round after some
/// progress, then checks that no more than the slots ever held.
async fn under_faults(urls: Vec<String>, what: &str, mut fault: impl AsyncFnMut(usize)) {
    let log = Checker::default();
    let stop = Arc::new(AtomicBool::new(false));
    let running = clients(&urls, &log, &stop);
    let rounds = rounds();
    for round in 0..rounds {
        until_grants(&log, log.grants(), 50).await;
        fault(round).await;
    }
    until_grants(&log, log.grants(), 50).await;
    stop.store(true, Ordering::SeqCst);
    for client in running {
        client.await.unwrap();
    }
    let (most, checked) = log.check(SLOTS);
    eprintln!(
        "{rounds} {what}: {checked} grant and release events checked, at most {most} \
         holders on {SLOTS} slots"
    );
}

fn signal(server: &ServerProcess, signal: Signal) {
    kill(Pid::from_raw(server.child.id() as i32), signal).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_server_paused_past_its_leases_never_over_admits() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    create_shared(&server.url).await;
    under_faults(
        vec![server.url.clone()],
        "SIGSTOP pauses of a durable server, each longer than a lease",
        async |_| {
            signal(&server, Signal::SIGSTOP);
            tokio::time::sleep(Duration::from_secs_f64(LEASE_SECONDS + 0.5)).await;
            signal(&server, Signal::SIGCONT);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_redis_paused_past_their_claims_never_over_admit() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let servers = two_servers_on(&redis, &dir).await;
    under_faults(
        servers.iter().map(|s| s.url.clone()).collect(),
        "SIGSTOP pauses of one of two servers on Redis, each past its 3 s claim",
        async |round| {
            let paused = &servers[round % servers.len()];
            signal(paused, Signal::SIGSTOP);
            tokio::time::sleep(Duration::from_millis(3_500)).await;
            signal(paused, Signal::SIGCONT);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_with_its_append_only_file_never_over_admits() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let servers = two_servers_on(&redis, &dir).await;
    under_faults(
        servers.iter().map(|s| s.url.clone()).collect(),
        "kill -9 of Redis (appendfsync always) under two servers",
        async |_| {
            redis.kill();
            tokio::time::sleep(Duration::from_millis(200)).await;
            redis.restart();
        },
    )
    .await;
}

/// Redis run without persistence forgets everything when killed. Nothing
/// can keep the promise then; what ratekeeper does is fail closed: the
/// limits are gone, so nobody is admitted (404 `limit_not_found`) until an
/// admin makes them again, and the holders of the lost leases are told at
/// their next renewal or release (410) rather than left to believe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_forgot_everything_admits_nobody_and_tells_the_holders() {
    let mut redis = RedisServer::start_without_persistence();
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--store", &redis.url()]);
    let url = server.url.clone();
    create_shared(&url).await;
    let http = reqwest::Client::new();
    let body = json!({"names": ["shared"], "lease_seconds": 60});
    let (status, lease) = post(&http, &format!("{url}/v1/acquire"), body)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let id = lease["lease_id"].as_str().unwrap().to_owned();

    redis.kill();
    redis.restart();
    let (status, answer) = common::try_once_when_back(&http, &url, "shared").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("limit_not_found")),
        "{answer}"
    );
    let renewed = post(&http, &format!("{url}/v1/leases/{id}/renew"), json!({}))
        .await
        .unwrap();
    assert_eq!(renewed.0, StatusCode::GONE, "{}", renewed.1);
    // The instance marks the store with its layout again (so that an
    // instance started now cannot choose another partition count), and
    // the limit made anew works.
    let socket = redis.url().trim_start_matches("redis+unix://").to_owned();
    let marker = |key: &str| {
        let out = std::process::Command::new("redis-cli")
            .args(["-s", &socket, "GET", key])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let started = Instant::now();
    while marker("{ratekeeper}:layout") != "1" || marker("{ratekeeper}:partitions") != "1" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never marked again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    create_shared(&url).await;
    let asked = json!({"names": ["shared"], "timeout_seconds": 0});
    let (status, _) = post(&http, &format!("{url}/v1/acquire"), asked)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}
