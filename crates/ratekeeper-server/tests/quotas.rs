//! Quotas: a client token may park only so many tickets and hold only so
//! many leases at once, and the server parks only so many tickets in all;
//! what is refused is withdrawn from the queue, and nothing else changes.

mod common;

use common::{TestServer, code};
use ratekeeper_server::{Scope, ServerConfig, Token, Tokens};
use reqwest::{Method, StatusCode};
use serde_json::json;

const ADMIN: &str = "admin-secret-for-tests";
const CLIENT: &str = "client-secret-for-tests";

async fn with_client_quota(max_tickets: usize, max_leases: usize) -> TestServer {
    let mut client = Token::new(CLIENT, Scope::Client);
    client.max_tickets = Some(max_tickets);
    client.max_leases = Some(max_leases);
    let mut server = TestServer::with_config(ServerConfig {
        tokens: Tokens::new(vec![Token::new(ADMIN, Scope::Admin), client]).unwrap(),
        ..ServerConfig::default()
    })
    .await;
    server.token = Some(ADMIN.into());
    server
}

/// Asks for one slot on `name`, waiting at most an instant inside the
/// request: answered 200 (granted), 202 (queued, with a ticket) or an error.
async fn ask(server: &TestServer, name: &str) -> (StatusCode, serde_json::Value) {
    server
        .post(
            "/v1/acquire",
            json!({"names": [name], "wait_seconds": 0.001, "lease_seconds": 60}),
        )
        .await
}

#[tokio::test]
async fn a_client_token_holds_at_most_its_quota_of_leases() {
    let mut server = with_client_quota(100, 2).await;
    server.create("wide", 10).await;
    server.token = Some(CLIENT.into());
    let first = server.lease("wide").await;
    server.lease("wide").await;
    let (status, body) = ask(&server, "wide").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_leases")
    );
    // Refused before it was asked: the limit holds the two leases only.
    server.token = Some(ADMIN.into());
    let (_, detail) = server.get("/v1/limits/wide").await;
    assert_eq!(detail["held"], 2);
    // Releasing one makes room for one more.
    server.token = Some(CLIENT.into());
    server.release(&first).await;
    server.lease("wide").await;
    let (status, _) = ask(&server, "wide").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_client_token_parks_at_most_its_quota_of_tickets() {
    let mut server = with_client_quota(2, 100).await;
    server.create("busy", 1).await;
    let _held = server.lease("busy").await;
    server.token = Some(CLIENT.into());
    let (status, first) = ask(&server, "busy").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, _) = ask(&server, "busy").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = ask(&server, "busy").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded")
    );
    assert_eq!(server.waiters("busy").await, 2);
    // A ticket given up makes room for another.
    let ticket = first["ticket"].as_str().unwrap();
    let (status, _) = server
        .call(Method::DELETE, &format!("/v1/tickets/{ticket}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = ask(&server, "busy").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The admin token has its own (unbounded) quota.
    server.token = Some(ADMIN.into());
    let (status, _) = ask(&server, "busy").await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_ticket_waited_on_again_keeps_its_place_in_the_quota() {
    let mut server = with_client_quota(1, 100).await;
    server.create("busy", 1).await;
    let held = server.lease("busy").await;
    server.token = Some(CLIENT.into());
    let (_, first) = ask(&server, "busy").await;
    let ticket = first["ticket"].as_str().unwrap();
    // Waiting on it and being parked again does not count it twice.
    let wait = json!({"wait_seconds": 0.001});
    let path = format!("/v1/tickets/{ticket}/wait");
    let (status, again) = server.post(&path, wait.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["ticket"], ticket);
    // Granted through the ticket: the lease counts, the ticket no longer.
    server.token = Some(ADMIN.into());
    server.release(&held).await;
    server.token = Some(CLIENT.into());
    // Answered once the grant is on disk: wait for it, not a millisecond.
    let (status, granted) = server.post(&path, json!({"wait_seconds": 10})).await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    server.token = Some(ADMIN.into());
    let _ = server
        .post("/v1/limits", json!({"name": "other", "slots": 1}))
        .await;
    let _busy = server.lease("other").await;
    server.token = Some(CLIENT.into());
    let (status, _) = ask(&server, "other").await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn the_server_parks_at_most_max_tickets_in_all_even_without_tokens() {
    let server = TestServer::with_config(ServerConfig {
        max_tickets: 3,
        ..ServerConfig::default()
    })
    .await;
    server.create("busy", 1).await;
    let _held = server.lease("busy").await;
    for _ in 0..3 {
        let (status, _) = ask(&server, "busy").await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, body) = ask(&server, "busy").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "too_many_tickets")
    );
    // The refused request left the queue.
    assert_eq!(server.waiters("busy").await, 3);
}

#[test]
fn a_quota_of_zero_is_refused() {
    let mut token = Token::new(CLIENT, Scope::Client);
    token.max_leases = Some(0);
    let err = Tokens::new(vec![token]).unwrap_err();
    assert!(matches!(
        err,
        ratekeeper_server::TokenError::ZeroQuota { .. }
    ));
    assert!(err.to_string().contains("max_leases"), "{err}");
}
