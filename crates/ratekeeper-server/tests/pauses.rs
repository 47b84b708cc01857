//! Pausing and resuming limits over real HTTP: who may, what the answer
//! shows, and what a paused limit does to acquires.

mod common;

use common::{TestServer, code};
use reqwest::StatusCode;
use serde_json::json;

async fn with_tokens() -> TestServer {
    let mut server = TestServer::with_tokens().await;
    server.token = Some("admin-secret-for-tests".into());
    server
}

#[tokio::test]
async fn a_client_token_pauses_a_limit_and_a_waiting_acquire_is_granted_when_it_ends() {
    let mut server = with_tokens().await;
    server.create("vendor", 2).await;
    server.token = Some("client-secret-for-tests".into());
    let (status, paused) = server
        .post(
            "/v1/limits/vendor/pause",
            json!({"seconds": 0.5, "reason": "429 from api.vendor.test"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    let until = paused["paused"]["until"].as_u64().unwrap();
    assert_eq!(paused["paused"]["reason"], "429 from api.vendor.test");
    assert_eq!(paused["paused"]["reporter"], "client token");
    let (_, detail) = server.get("/v1/limits/vendor").await;
    assert_eq!(detail["paused"]["until"], until);

    let (status, body) = server
        .post(
            "/v1/acquire",
            json!({"names": ["vendor"], "timeout_seconds": 0}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "would_block")
    );
    let (status, granted) = server
        .post(
            "/v1/acquire",
            json!({"names": ["vendor"], "timeout_seconds": 30}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    assert!(
        granted["granted_at"].as_u64().unwrap() >= until - 1,
        "{granted}"
    );
    let (_, detail) = server.get("/v1/limits/vendor").await;
    assert!(detail["paused"].is_null(), "{detail}");
}

#[tokio::test]
async fn only_an_admin_resumes_and_resuming_grants_the_queue_at_once() {
    let mut server = with_tokens().await;
    server.create("vendor", 1).await;
    let (status, _) = server
        .post(
            "/v1/limits/vendor/pause",
            json!({"seconds": 3600, "reporter": "ops"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let metrics = server
        .http
        .get(format!("{}/metrics", server.url))
        .bearer_auth("admin-secret-for-tests")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let left: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ratekeeper_limit_paused_seconds{limit=\"vendor\"} "))
        .expect("a paused_seconds gauge")
        .parse()
        .unwrap();
    assert!(left > 3500.0 && left <= 3600.0, "{left}");
    let waiting = {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/acquire", server.url);
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth("client-secret-for-tests")
                .json(&json!({"names": ["vendor"], "timeout_seconds": 30}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    server.until_waiters("vendor", 1).await;
    server.token = Some("client-secret-for-tests".into());
    let (status, _) = server.post("/v1/limits/vendor/resume", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    server.token = Some("admin-secret-for-tests".into());
    let (status, resumed) = server.post("/v1/limits/vendor/resume", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(resumed["paused"].is_null());
    assert_eq!(waiting.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn a_bad_pause_is_refused_naming_the_problem_and_changes_nothing() {
    let server = with_tokens().await;
    server.create("vendor", 1).await;
    let cases = [
        (json!({"seconds": -1}), "invalid_pause"),
        (json!({"seconds": 0}), "invalid_pause"),
        (json!({"seconds": 1e9}), "invalid_pause"),
        (json!({}), "invalid_pause"),
        (json!({"seconds": 1, "until": 1}), "invalid_pause"),
        (
            json!({"seconds": 1, "reason": "x".repeat(257)}),
            "invalid_pause",
        ),
        (json!({"seconds": "soon"}), "invalid_field"),
        (json!({"seconds": 1, "colour": "red"}), "invalid_field"),
    ];
    for (body, expected) in cases {
        let (status, answer) = server.post("/v1/limits/vendor/pause", body.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNPROCESSABLE_ENTITY, expected),
            "{body}"
        );
        assert!(
            answer["error"]["message"].as_str().unwrap().len() > 10,
            "{answer}"
        );
    }
    let (_, detail) = server.get("/v1/limits/vendor").await;
    assert!(detail["paused"].is_null());
    let (status, body) = server
        .post("/v1/limits/nothing/pause", json!({"seconds": 1}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "limit_not_found")
    );
}

#[tokio::test]
async fn a_throttled_report_pauses_a_fixed_limit_and_slows_an_adaptive_one() {
    let mut server = with_tokens().await;
    server
        .post(
            "/v1/limits",
            json!({"name": "vendor", "slots": 1, "slot_decay_per_second": 100, "adaptive": true}),
        )
        .await;
    server.create("fixed", 1).await;
    server.token = Some("client-secret-for-tests".into());
    let (status, adaptive) = server
        .post("/v1/limits/vendor/throttled", json!({"reason": "429"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{adaptive}");
    assert!(adaptive["paused"].is_null(), "{adaptive}");
    assert_eq!(adaptive["adaptive"]["effective"], 70.0);
    assert_eq!(adaptive["slot_decay_per_second"], 100.0);
    let (_, fixed) = server.post("/v1/limits/fixed/throttled", json!({})).await;
    let pause = &fixed["paused"];
    let left = pause["until"].as_u64().unwrap() - pause["since"].as_u64().unwrap();
    assert!((999..=1001).contains(&left), "{fixed}");
    let (_, asked) = server
        .post(
            "/v1/limits/vendor/throttled",
            json!({"retry_after_seconds": 30}),
        )
        .await;
    assert!(!asked["paused"].is_null(), "{asked}");
    let (status, body) = server
        .post(
            "/v1/limits/vendor/throttled",
            json!({"retry_after_seconds": -1}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_pause")
    );
    let (status, body) = server
        .post(
            "/v1/limits",
            json!({"name": "bad", "slots": 1, "adaptive": {"decrease_factor": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    server.token = Some("admin-secret-for-tests".into());
    let (status, body) = server
        .post(
            "/v1/limits",
            json!({"name": "bad", "slots": 1, "adaptive": {"decrease_factor": 2}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_adaptive")
    );
}
