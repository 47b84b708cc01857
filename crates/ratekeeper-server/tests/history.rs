//! `/v1/limits/{name}/history`: the server samples every limit once a
//! second, so a page opened late still sees the last minutes.

mod common;

use std::time::Duration;

use common::{TestServer, code};
use ratekeeper_server::{HistoryConfig, ServerConfig};
use reqwest::StatusCode;
use serde_json::Value;

/// The history of `name` once `ready` says it is complete.
async fn until_history(server: &TestServer, name: &str, ready: impl Fn(&[Value]) -> bool) -> Value {
    for _ in 0..400 {
        let (status, history) = server.get(&format!("/v1/limits/{name}/history")).await;
        assert_eq!(status, StatusCode::OK, "{history}");
        if ready(history["samples"].as_array().unwrap()) {
            return history;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name}'s history never became what was waited for");
}

async fn until_samples(server: &TestServer, name: &str, count: usize) -> Value {
    until_history(server, name, |samples| samples.len() >= count).await
}

fn granted(samples: &[Value]) -> u64 {
    samples.iter().map(|s| s["granted"].as_u64().unwrap()).sum()
}

#[tokio::test]
async fn a_limit_has_its_past_seconds_with_what_was_held_and_granted() {
    let server = TestServer::start().await;
    server.create("db", 3).await;
    let history = until_samples(&server, "db", 1).await;
    assert_eq!(history["tracked"], true);
    assert_eq!(history["interval_seconds"], 1);
    assert_eq!(history["window_seconds"], 900);
    assert_eq!(history["samples"][0]["occupancy"], 0.0);
    let first = server.lease("db").await;
    let _second = server.lease("db").await;
    let history = until_history(&server, "db", |samples| {
        samples.last().unwrap()["occupancy"] == 2.0
    })
    .await;
    assert_eq!(granted(history["samples"].as_array().unwrap()), 2);
    server.release(&first).await;
    let _third = server.lease("db").await;
    let history = until_history(&server, "db", |samples| granted(samples) == 3).await;
    let samples = history["samples"].as_array().unwrap();
    assert_eq!(samples.last().unwrap()["occupancy"], 2.0);
    assert_eq!(samples.last().unwrap()["waiting"], 0);
    let times: Vec<u64> = samples.iter().map(|s| s["at"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}

#[tokio::test]
async fn a_limit_beyond_what_is_sampled_says_so_and_an_unknown_one_is_not_found() {
    let server = TestServer::with_config(ServerConfig {
        history: HistoryConfig {
            max_limits: 1,
            ..HistoryConfig::default()
        },
        ..ServerConfig::default()
    })
    .await;
    server.create("a", 1).await;
    until_samples(&server, "a", 1).await;
    server.create("b", 1).await;
    let (status, history) = server.get("/v1/limits/b/history").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history["tracked"], false);
    assert_eq!(history["samples"].as_array().unwrap().len(), 0);
    let (status, body) = server.get("/v1/limits/nobody/history").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "limit_not_found");
}

#[tokio::test]
async fn history_can_be_turned_off() {
    let server = TestServer::with_config(ServerConfig {
        history: HistoryConfig {
            window: Duration::ZERO,
            ..HistoryConfig::default()
        },
        ..ServerConfig::default()
    })
    .await;
    server.create("a", 1).await;
    let (status, history) = server.get("/v1/limits/a/history").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history["tracked"], false);
    assert_eq!(history["window_seconds"], 0);
}
