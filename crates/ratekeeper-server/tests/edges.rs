//! Input at the edges, each of which an adversary once got through: every
//! one is refused with a JSON error naming the problem, and changes nothing.

mod common;

use std::time::Duration;

use common::TestServer;
use ratekeeper_server::{Scope, ServerConfig, Token, Tokens};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

async fn raw(
    server: &TestServer,
    method: Method,
    path: &str,
    body: &'static str,
) -> (StatusCode, Value) {
    let response = server
        .http
        .request(method, format!("{}{path}", server.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_body_must_be_a_json_object_not_an_array_of_fields() {
    let server = TestServer::start().await;
    server
        .post("/v1/limits", json!({"name": "x", "slots": 3}))
        .await;
    for body in ["[0]", "[\"x\", 1]", "3", "\"x\"", ""] {
        let (status, answer) = raw(&server, Method::PATCH, "/v1/limits/x", body).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            "{body:?}"
        );
    }
    assert_eq!(server.get("/v1/limits/x").await.1["slots"], 3);
}

#[tokio::test]
async fn lease_ids_are_read_only_in_their_canonical_form() {
    let server = TestServer::start().await;
    for id in [
        "+0000000000000000000000000000000",
        "ABCDEF0123456789ABCDEF0123456789",
        "0x000000000000000000000000000000",
    ] {
        let (status, answer) = server
            .call(Method::DELETE, &format!("/v1/leases/{id}"), None)
            .await;
        assert_eq!(code(&answer), "invalid_lease_id", "{id} gave {status}");
    }
}

#[tokio::test]
async fn a_negative_zero_decay_is_stored_as_zero() {
    let server = TestServer::start().await;
    let (status, answer) = raw(
        &server,
        Method::POST,
        "/v1/limits",
        r#"{"name": "z", "slots": 1, "slot_decay_per_second": -0.0}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        answer["slot_decay_per_second"]
            .as_f64()
            .unwrap()
            .is_sign_positive()
    );
    let (_, answer) = raw(
        &server,
        Method::PATCH,
        "/v1/limits/z",
        r#"{"slot_decay_per_second": -0.0}"#,
    )
    .await;
    assert!(
        answer["slot_decay_per_second"]
            .as_f64()
            .unwrap()
            .is_sign_positive()
    );
}

#[tokio::test]
async fn every_error_is_json_even_a_wrong_method() {
    let server = TestServer::start().await;
    let (status, answer) = server.call(Method::PUT, "/v1/limits", None).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn dot_names_are_refused_as_no_url_can_reach_them() {
    let server = TestServer::start().await;
    for name in [".", ".."] {
        let (status, answer) = server
            .post("/v1/limits", json!({"name": name, "slots": 1}))
            .await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_name"),
            "{name}"
        );
    }
    assert_eq!(server.get("/v1/limits").await.1, json!([]));
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let secret = "a-token-of-sixteen-chars";
    let server = TestServer::with_config(ServerConfig {
        tokens: Tokens::new(vec![Token::new(secret, Scope::Admin)]).unwrap(),
        ..ServerConfig::default()
    })
    .await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = server
            .http
            .get(format!("{}/v1/limits", server.url))
            .header("authorization", format!("{scheme} {secret}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }
}

#[test]
fn short_or_blank_tokens_are_refused() {
    for secret in [
        "x",
        "fifteen-chars!!",
        "                    ",
        "has a space in it ok",
    ] {
        let tokens = Tokens::new(vec![Token::new(secret, Scope::Client)]);
        let err = tokens.expect_err(secret).to_string();
        assert!(err.contains("at least 16"), "{err}");
    }
    assert!(Tokens::new(vec![Token::new("0123456789abcdef", Scope::Client)]).is_ok());
}

#[tokio::test]
async fn a_declared_huge_body_is_refused_at_once_without_waiting_for_it() {
    let server = TestServer::start().await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let (answer, read) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(&address).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!(
            "POST /v1/limits HTTP/1.1\r\nHost: {address}\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).unwrap();
        let mut answer = vec![0; 512];
        let read = socket.read(&mut answer).expect("the server answers without waiting for the body");
        (answer, read)
    })
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}

#[tokio::test]
async fn the_api_description_lists_every_status_the_pattern_and_the_bounds() {
    let server = TestServer::start().await;
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let create = &doc["paths"]["/v1/limits"]["post"]["responses"];
    for code in ["201", "401", "403", "409", "413", "415", "422", "503"] {
        assert!(create.get(code).is_some(), "POST /v1/limits lacks {code}");
    }
    let reset = &doc["paths"]["/v1/limits/{name}/reset"]["post"];
    assert!(reset["responses"].get("415").is_some());
    let name = reset["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "name")
        .unwrap();
    assert_eq!(
        name["schema"]["pattern"],
        r"^(?:[A-Za-z0-9._:-]{1,128}|[A-Za-z0-9._:-]{1,127}\*)$"
    );
    assert!(
        doc["paths"]["/healthz"]["get"]["responses"]
            .get("401")
            .is_none()
    );
    let limit = &doc["components"]["schemas"]["CreateLimit"]["properties"];
    assert_eq!(limit["slots"]["maximum"], 1_000_000_000_000_000_u64);
    assert_eq!(limit["slot_decay_per_second"]["maximum"], 1_000_000_000);
    assert_eq!(limit["description"]["maxLength"], 1024);
}

#[tokio::test]
async fn whole_numbers_may_be_written_with_a_zero_fraction_and_nothing_else() {
    let server = TestServer::start().await;
    let (status, created) = server
        .post("/v1/limits", json!({"name": "w", "slots": 3.0}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["slots"], 3);
    for slots in [json!(3.5), json!(-1), json!(-1.0), json!("3"), json!(1e30)] {
        let (status, answer) = server
            .call(
                Method::PATCH,
                "/v1/limits/w",
                Some(json!({ "slots": slots })),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{slots}");
        assert_eq!(answer["error"]["field"], "slots", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("a whole number, 0 or more"), "{message}");
    }
    let (status, _) = server
        .call(Method::PATCH, "/v1/limits/w", Some(json!({"slots": null})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.get("/v1/limits/w").await.1["slots"], 3);
}

#[tokio::test]
async fn durations_past_the_documented_bound_are_refused() {
    let server = TestServer::start().await;
    server.create("d", 1).await;
    let (status, answer) = server
        .post(
            "/v1/acquire",
            json!({"names": ["d"], "timeout_seconds": 1.7e308}),
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_seconds")
    );
    assert_eq!(answer["error"]["field"], "timeout_seconds");
}

#[tokio::test]
async fn the_api_description_marks_open_routes_and_the_shape_of_ids() {
    let server = TestServer::start().await;
    let (_, doc) = server.get("/openapi.json").await;
    for open in ["/livez", "/readyz"] {
        assert_eq!(doc["paths"][open]["get"]["security"], json!([{}]), "{open}");
    }
    let release = &doc["paths"]["/v1/leases/{id}"]["delete"];
    assert_eq!(
        release["parameters"][0]["schema"]["pattern"],
        "^[0-9a-f]{32}$"
    );
    assert!(release["responses"].get("422").is_some());
    let renew = &doc["paths"]["/v1/leases/{id}/renew"]["post"];
    assert_eq!(renew["requestBody"]["required"], false);
    let acquire = &doc["components"]["schemas"]["AcquireBody"]["properties"];
    assert_eq!(acquire["names"]["minItems"], 1);
    assert_eq!(acquire["names"]["maxItems"], 32);
}
