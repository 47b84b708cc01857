//! Crash safety: the server binary under concurrent load, killed with
//! SIGKILL and restarted on the same data directory, several times.
//!
//! The checker is independent of the server (`common/checker.rs`): at no
//! instant may more clients count on a slot than the limit has, across
//! restarts too. After each restart, every limit ever created
//! must be back, and every lease acknowledged before the kill must still be
//! live and still count: its limit refuses a second holder, and its release
//! succeeds rather than saying `lease_expired`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::ServerProcess;
use common::checker::Checker;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SLOTS: usize = 3;
const CLIENTS: usize = 12;

/// Kill-and-restart rounds: 4 in the suite; `scripts/torture` runs 100
/// (`RATEKEEPER_CRASH_ROUNDS`).
fn rounds() -> usize {
    common::rounds("RATEKEEPER_CRASH_ROUNDS", 4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_never_loses_or_over_admits() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let log = Checker::default();
    // One lease per round held across the kill, on a limit of one slot.
    let mut kept: Vec<(String, String)> = Vec::new();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let created = post(
        &http,
        &server.url,
        "/v1/limits",
        json!({"name": "shared", "slots": SLOTS}),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED);

    let rounds = rounds();
    for round in 0..rounds {
        let url = server.url.clone();
        let name = format!("round-{round}");
        let (status, _) = post(&http, &url, "/v1/limits", json!({"name": name, "slots": 1})).await;
        assert_eq!(status, StatusCode::CREATED);

        let acquire = json!({"names": [name], "lease_seconds": 300, "timeout_seconds": 0});
        let (status, lease) = post(&http, &url, "/v1/acquire", acquire).await;
        assert_eq!(status, StatusCode::OK, "{lease}");
        kept.push((name, lease["lease_id"].as_str().unwrap().to_owned()));

        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(client(url.clone(), log.clone(), Arc::clone(&stop))))
            .collect();
        // Let them work, then kill the server under their feet.
        let grants_before = granted_total(&http, &url).await;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if granted_total(&http, &url).await >= grants_before + 200 {
                break;
            }
        }
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.await.unwrap();
        }

        server = ServerProcess::start(dir.path(), &[]);
        let url = server.url.clone();
        for (name, lease) in &kept {
            let (status, detail) = get(&http, &url, &format!("/v1/limits/{name}")).await;
            assert_eq!(status, StatusCode::OK, "limit {name} lost");
            assert_eq!(
                detail["leases"][0]["id"],
                lease.as_str(),
                "lease on {name} lost"
            );
            let again = json!({"names": [name], "timeout_seconds": 0});
            assert_eq!(
                post(&http, &url, "/v1/acquire", again).await.0,
                StatusCode::TOO_MANY_REQUESTS
            );
        }
        let (_, shared) = get(&http, &url, "/v1/limits/shared").await;
        assert_eq!(shared["slots"], SLOTS);
        let live = shared["leases"].as_array().unwrap();
        assert!(
            live.len() <= SLOTS,
            "restored {} leases on {SLOTS} slots",
            live.len()
        );
        // Leases whose holders died with the connection (their release or
        // their grant's answer was lost) are cleared, as an operator would;
        // the checker already closed their intervals when release began.
        for lease in live {
            let id = lease["id"].as_str().unwrap();
            let response = http
                .delete(format!("{url}/v1/leases/{id}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
        }
    }
    for (_, lease) in kept {
        let response = http
            .delete(format!("{}/v1/leases/{lease}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "kept lease {lease} was lost"
        );
    }

    let (most, checked) = log.check(SLOTS);
    assert!(checked > rounds * 200, "too little load: {checked} events");
    eprintln!(
        "{rounds} kill -9 restarts: {checked} grant and release events checked, \
         at most {most} holders on {SLOTS} slots, {} leases kept across kills",
        rounds
    );
}

/// Acquires and releases until stopped or the server dies.
async fn client(url: String, log: Checker, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    while !stop.load(Ordering::SeqCst) {
        let acquire = json!({"names": ["shared"], "lease_seconds": 300, "holder": "crash-test"});
        let Ok(response) = http
            .post(format!("{url}/v1/acquire"))
            .json(&acquire)
            .send()
            .await
        else {
            return;
        };
        let Ok(body) = response.json::<Value>().await else {
            return;
        };
        // Waits in this test are short; a ticket would mean a slow machine.
        let Some(lease) = body["lease_id"].as_str() else {
            assert_eq!(body["status"], "waiting", "{body}");
            continue;
        };
        log.granted();
        tokio::task::yield_now().await;
        log.releasing();
        let released = http.delete(format!("{url}/v1/leases/{lease}")).send().await;
        match released {
            Ok(response) if response.status() == StatusCode::NO_CONTENT => {}
            Ok(response) => panic!("release answered {}", response.status()),
            Err(_) => return,
        }
    }
}

async fn post(http: &reqwest::Client, url: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let response = http
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn get(http: &reqwest::Client, url: &str, path: &str) -> (StatusCode, Value) {
    let response = http.get(format!("{url}{path}")).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn granted_total(http: &reqwest::Client, url: &str) -> u64 {
    let (_, shared) = get(http, url, "/v1/limits/shared").await;
    shared["counters"]["granted_total"].as_u64().unwrap()
}
