//! Every endpoint over real HTTP: the happy paths and the error paths.

mod common;

use common::{TestServer, code};
use ratekeeper_server::{Scope, ServerConfig, Token, Tokens};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn limits_can_be_created_read_changed_reset_and_deleted() {
    let server = TestServer::start().await;
    let (status, created) = server
        .post(
            "/v1/limits",
            json!({"name": "vendor:api", "slots": 5, "slot_decay_per_second": 2.5, "description": "the vendor"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["name"], "vendor:api");
    assert_eq!(created["slots"], 5);
    assert_eq!(created["active"], true);
    assert_eq!(created["description"], "the vendor");
    server.create("db", 2).await;

    let (_, list) = server.get("/v1/limits").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "vendor:api"]);

    let (status, patched) = server
        .call(
            Method::PATCH,
            "/v1/limits/db",
            Some(json!({"slots": 4, "active": false, "description": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (patched["slots"].as_u64(), patched["active"].as_bool()),
        (Some(4), Some(false))
    );
    let (_, cleared) = server
        .call(
            Method::PATCH,
            "/v1/limits/db",
            Some(json!({"description": "", "active": true})),
        )
        .await;
    assert!(cleared["description"].is_null());

    let lease = server.lease("db").await;
    let (status, detail) = server.get("/v1/limits/db").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["held"], 1);
    assert_eq!(detail["leases"][0]["id"], lease.as_str());

    let (status, reset) = server.post("/v1/limits/db/reset", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reset["held"], 0);
    let (status, body) = server
        .post(&format!("/v1/leases/{lease}/renew"), json!({}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::GONE, "lease_revoked"));

    let (status, _) = server.call(Method::DELETE, "/v1/limits/db", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server.get("/v1/limits/db").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "limit_not_found")
    );
}

#[tokio::test]
async fn leases_are_granted_renewed_listed_and_released() {
    let server = TestServer::start().await;
    server.create("db", 2).await;
    let (status, granted) = server
        .post(
            "/v1/acquire",
            json!({"names": ["db"], "occupy": 2, "lease_seconds": 5, "holder": "worker-7"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(granted["status"], "granted");
    let lease = granted["lease_id"].as_str().unwrap();
    let expires = granted["expires_at"].as_u64().unwrap();
    assert!((4_900..=5_100).contains(&(expires - granted["granted_at"].as_u64().unwrap())));

    let (status, renewed) = server
        .post(
            &format!("/v1/leases/{lease}/renew"),
            json!({"lease_seconds": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(renewed["expires_at"].as_u64().unwrap() >= expires + 50_000);
    // A renewal without a body keeps the lease's TTL.
    let (status, _) = server
        .call(Method::POST, &format!("/v1/leases/{lease}/renew"), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    let (_, leases) = server.get("/v1/leases?limit=db").await;
    assert_eq!(leases[0]["holder"], "worker-7");
    assert_eq!(leases[0]["occupy"], 2);
    assert_eq!(leases[0]["lease_seconds"], 60.0);

    server.release(lease).await;
    let (status, body) = server
        .call(Method::DELETE, &format!("/v1/leases/{lease}"), None)
        .await;
    assert_eq!((status, code(&body)), (StatusCode::GONE, "lease_expired"));
    let (_, leases) = server.get("/v1/leases").await;
    assert_eq!(leases, json!([]));
}

#[tokio::test]
async fn rate_mode_admits_the_burst_then_says_would_block() {
    let server = TestServer::start().await;
    server
        .post(
            "/v1/limits",
            json!({"name": "api", "slots": 3, "slot_decay_per_second": 0.001}),
        )
        .await;
    let rate = json!({"names": ["api"], "mode": "rate_limit", "timeout_seconds": 0});
    for _ in 0..3 {
        let (status, body) = server.post("/v1/acquire", rate.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["lease_id"].is_null());
    }
    let (status, body) = server.post("/v1/acquire", rate).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "would_block")
    );
    let (_, limit) = server.get("/v1/limits/api").await;
    assert_eq!(limit["counters"]["denied_total"], 1);
    assert!(limit["decaying"].as_f64().unwrap() > 2.99);
}

#[tokio::test]
async fn missing_limits_fail_unless_created_inactive() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post("/v1/acquire", json!({"names": ["ghost"]}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "limit_not_found")
    );
    let (status, body) = server
        .post(
            "/v1/acquire",
            json!({"names": ["ghost"], "create_if_missing": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, ghost) = server.get("/v1/limits/ghost").await;
    assert_eq!(
        (ghost["active"].as_bool(), ghost["held"].as_u64()),
        (Some(false), Some(0))
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let server = TestServer::start().await;
    server.create("db", 2).await;
    // (body, status, code, the field the error names)
    let cases = [
        (
            json!({"name": "a/b", "slots": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "name",
        ),
        (
            json!({"name": "", "slots": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "name",
        ),
        (
            json!({"name": "x".repeat(129), "slots": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "name",
        ),
        (
            json!({"name": "ok", "slots": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "slots",
        ),
        (
            json!({"name": "ok", "slots": "three"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "slots",
        ),
        (
            json!({"name": "ok"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "slots",
        ),
        (
            json!({"name": "ok", "slots": 1, "slot_decay_per_second": -2}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_decay",
            "slot_decay_per_second",
        ),
        (
            json!({"name": "ok", "slots": 1, "description": "d".repeat(5000)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_description",
            "description",
        ),
        (
            json!({"name": "ok", "slots": 1, "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "colour",
        ),
        (
            json!({"name": "db", "slots": 1}),
            StatusCode::CONFLICT,
            "limit_exists",
            "name",
        ),
    ];
    for (body, status, expected, field) in cases {
        let (got, answer) = server.post("/v1/limits", body.clone()).await;
        assert_eq!((got, code(&answer)), (status, expected), "{body}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            !message.is_empty() && !message.contains("target type"),
            "{answer}"
        );
    }
    let (status, answer) = server
        .call(
            Method::PATCH,
            "/v1/limits/db",
            Some(json!({"slots": 2_000_000_000_000_000_000u64})),
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_slots")
    );
    assert_eq!(answer["error"]["field"], "slots");
    let (_, bad_name) = server
        .post("/v1/limits", json!({"name": "a b", "slots": 1}))
        .await;
    assert!(
        bad_name["error"]["message"]
            .as_str()
            .unwrap()
            .contains("' '"),
        "{bad_name}"
    );

    let acquires = [
        (
            json!({"names": ["db"], "occupy": 3}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "occupy_exceeds_slots",
        ),
        (
            json!({"names": ["db"], "occupy": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_occupy",
        ),
        (
            json!({"names": ["db"], "mode": "rate_limit"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "rate_mode_needs_decay",
        ),
        (
            json!({"names": ["db"], "mode": "sideways"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({"names": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_names",
        ),
        (
            json!({"names": ["db", "db"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "duplicate_name",
        ),
        (
            json!({"names": ["db"], "lease_seconds": 0.5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_lease_ttl",
        ),
        (
            json!({"names": ["db"], "timeout_seconds": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_seconds",
        ),
        (
            json!({"names": ["a%b"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
    ];
    for (body, status, expected) in acquires {
        let (got, answer) = server.post("/v1/acquire", body.clone()).await;
        assert_eq!((got, code(&answer)), (status, expected), "{body}");
    }

    let raw = |body: &'static str| {
        server
            .http
            .post(format!("{}/v1/limits", server.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = raw("{\"name\": \"x\", \"slots\": ").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(code(&body), "invalid_json");

    let huge = json!({"name": "big", "slots": 1, "description": "x".repeat(100_000)});
    let (status, body) = server.post("/v1/limits", huge).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );

    let (status, body) = server
        .call(Method::DELETE, "/v1/leases/not-a-lease", None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_lease_id")
    );
    let (status, body) = server.get("/v1/nothing-here").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // Nothing above changed anything.
    let (_, list) = server.get("/v1/limits").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["held"], 0);
    assert_eq!(list[0]["counters"]["granted_total"], 0);
}

#[tokio::test]
async fn tokens_guard_every_route_by_scope() {
    let mut server = TestServer::with_tokens().await;
    let create = json!({"name": "db", "slots": 1});

    let (status, body) = server.post("/v1/limits", create.clone()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    server.token = Some("wrong".into());
    let (status, body) = server.get("/v1/limits").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );

    server.token = Some("client-secret-for-tests".into());
    let (status, body) = server.post("/v1/limits", create.clone()).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));

    server.token = Some("admin-secret-for-tests".into());
    assert_eq!(
        server.post("/v1/limits", create).await.0,
        StatusCode::CREATED
    );

    server.token = Some("client-secret-for-tests".into());
    let lease = server.lease("db").await;
    assert_eq!(server.get("/v1/limits").await.0, StatusCode::OK);
    // Lease ids are what release and renew leases: a client token sees
    // only the ones it was answered, and others cut short.
    let (status, listed) = server.get("/v1/leases").await;
    assert_eq!(status, StatusCode::OK);
    let shown = listed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(shown, format!("{}…", &lease[..8]));
    let (_, detail) = server.get("/v1/limits/db").await;
    assert_eq!(detail["leases"][0]["id"], shown.as_str());
    let (status, body) = server
        .call(Method::DELETE, &format!("/v1/leases/{shown}"), None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_lease_id")
    );
    server.token = Some("admin-secret-for-tests".into());
    assert_eq!(server.get("/v1/leases").await.1[0]["id"], lease.as_str());
    server.token = Some("client-secret-for-tests".into());
    server.release(&lease).await;
    let (status, _) = server.call(Method::DELETE, "/v1/limits/db", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server.post("/v1/limits/db/reset", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nor may it create limits by acquiring on missing ones.
    let (status, body) = server
        .post(
            "/v1/acquire",
            json!({"names": ["squatted"], "create_if_missing": true}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    assert_eq!(body["error"]["field"], "create_if_missing");
    server.token = Some("admin-secret-for-tests".into());
    assert_eq!(
        server.get("/v1/limits/squatted").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = server
        .post(
            "/v1/acquire",
            json!({"names": ["created"], "create_if_missing": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    server.token = None;
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(server.get("/openapi.json").await.0, StatusCode::OK);
    assert_eq!(server.get("/metrics").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn health_openapi_and_metrics_describe_the_service() {
    let server = TestServer::start().await;
    server.create("db", 3).await;
    server.lease("db").await;
    let (status, health) = server.get("/healthz").await;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));

    let (_, openapi) = server.get("/openapi.json").await;
    let paths = openapi["paths"].as_object().unwrap();
    for path in [
        "/v1/limits",
        "/v1/limits/{name}",
        "/v1/acquire",
        "/v1/tickets/{ticket}/wait",
        "/v1/leases/{id}/renew",
        "/v1/events",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(openapi["components"]["schemas"]["AcquireBody"].is_object());

    let text = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "ratekeeper_limit_held{limit=\"db\"} 1",
        "ratekeeper_limit_slots{limit=\"db\"} 3",
        "ratekeeper_limit_granted_total{limit=\"db\"} 1",
        "ratekeeper_limit_paused_seconds{limit=\"db\"} 0",
        "ratekeeper_acquires_total{outcome=\"granted\"} 1",
        "ratekeeper_acquire_wait_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(text.contains("ratekeeper_http_request_duration_seconds_bucket"));
    let build = format!(
        "ratekeeper_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.lines().any(|l| l == build), "no {build:?}");
    for process in [
        "process_open_fds ",
        "process_max_fds ",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
    ] {
        assert!(text.lines().any(|l| l.starts_with(process)), "no {process}");
    }
    assert_eq!(text.matches("# EOF").count(), 1);
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn events_stream_a_snapshot_then_changes() {
    let server = TestServer::start().await;
    server.create("db", 2).await;
    let mut stream = server
        .http
        .get(format!("{}/v1/events", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let mut next_chunk = async || {
        let chunk = stream.chunk().await.unwrap().unwrap();
        String::from_utf8(chunk.to_vec()).unwrap()
    };
    while !text.contains("event: snapshot") {
        text.push_str(&next_chunk().await);
    }
    assert!(text.contains("\"name\":\"db\""), "{text}");
    let lease = server.lease("db").await;
    while !text.contains("event: lease\n") {
        text.push_str(&next_chunk().await);
    }
    assert!(text.contains(&lease), "{text}");
    assert!(text.contains("event: limit\n"), "{text}");
    assert!(text.contains("\"held\":1"), "{text}");
}

#[tokio::test]
async fn liveness_and_readiness_answer_without_a_token() {
    let server = TestServer::with_config(ServerConfig {
        tokens: Tokens::new(vec![Token::new("admin-secret-for-tests", Scope::Admin)]).unwrap(),
        ..ServerConfig::default()
    })
    .await;
    for path in ["/livez", "/healthz", "/readyz"] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    assert_eq!(server.get("/readyz").await.1["status"], "ready");
}

#[tokio::test]
async fn every_documented_operation_is_served_and_nothing_else_is_routed_by_mistake() {
    let server = TestServer::start().await;
    let (_, openapi) = server.get("/openapi.json").await;
    let paths = openapi["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{paths:?}");
    for (path, item) in paths {
        let concrete = path
            .replace("{name}", "no-such-limit")
            .replace("{ticket}", "no-such-ticket")
            .replace("{id}", &"0".repeat(32));
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // Only the status line: the event stream never ends.
            let answer = server
                .http
                .request(method.clone(), format!("{}{concrete}", server.url))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = answer.status();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if status == StatusCode::NOT_FOUND {
                let body: serde_json::Value = answer.json().await.unwrap();
                assert_ne!(
                    code(&body),
                    "not_found",
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }
    // And a method an operation does not document is not served.
    let (status, _) = server.call(Method::PUT, "/v1/limits", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
