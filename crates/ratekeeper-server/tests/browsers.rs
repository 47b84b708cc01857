//! What a web page may do to a server it can reach: nothing, unless it is
//! the server's own page. DNS rebinding (a foreign `Host`) and cross-site
//! requests (a foreign `Origin`) are refused and change nothing.

mod common;

use common::TestServer;
use ratekeeper_server::{HostPolicy, ServerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn loopback_server(trusted: &[&str]) -> TestServer {
    let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
    TestServer::with_config(ServerConfig {
        hosts: HostPolicy::loopback(&trusted),
        ..ServerConfig::default()
    })
    .await
}

/// A server with limit `db` whose only slot is held.
async fn with_a_held_lease(server: &TestServer) -> String {
    let (status, _) = server
        .post("/v1/limits", json!({"name": "db", "slots": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, grant) = server
        .post("/v1/acquire", json!({"names": ["db"], "holder": "worker"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    grant["lease_id"].as_str().unwrap().to_owned()
}

async fn raw_reset(server: &TestServer, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut request = server
        .http
        .post(format!("{}/v1/limits/db/reset", server.url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn held(server: &TestServer) -> u64 {
    server.get("/v1/limits/db").await.1["held"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_rebound_host_name_is_refused_and_revokes_nothing() {
    let server = loopback_server(&[]).await;
    with_a_held_lease(&server).await;
    let (status, body) = raw_reset(
        &server,
        &[
            ("host", "rebind.evil.example:7171"),
            ("origin", "http://rebind.evil.example:7171"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "host_not_allowed");
    assert_eq!(held(&server).await, 1);
}

#[tokio::test]
async fn a_cross_site_request_is_refused_and_revokes_nothing() {
    let server = loopback_server(&[]).await;
    with_a_held_lease(&server).await;
    for origin in ["https://evil.example", "http://localhost:1", "null"] {
        let (status, body) = raw_reset(&server, &[("origin", origin)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(body["error"]["code"], "origin_not_allowed");
    }
    assert_eq!(held(&server).await, 1);
}

#[tokio::test]
async fn the_servers_own_page_and_programs_are_served() {
    let server = loopback_server(&[]).await;
    with_a_held_lease(&server).await;
    let own = server.url.clone();
    let (status, _) = raw_reset(&server, &[("origin", own.as_str())]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = raw_reset(&server, &[("host", "localhost")]).await;
    assert_eq!(status, StatusCode::OK); // a program: no Origin
}

#[tokio::test]
async fn an_allowed_host_is_answered_and_its_pages_may_call() {
    let server = loopback_server(&["rk.example.com"]).await;
    with_a_held_lease(&server).await;
    let (status, _) = raw_reset(
        &server,
        &[
            ("host", "rk.example.com"),
            ("origin", "https://rk.example.com"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused_even_without_an_origin() {
    let server = TestServer::start().await;
    with_a_held_lease(&server).await;
    for kind in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let response = server
            .http
            .post(format!("{}/v1/limits/db/reset", server.url))
            .header("content-type", kind)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{kind}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unsupported_media_type");
    }
    assert_eq!(held(&server).await, 1);
}
