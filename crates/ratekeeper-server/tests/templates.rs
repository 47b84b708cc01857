//! Templates over real HTTP: per-key instances on demand, listed apart,
//! bounded, and every refusal named.

mod common;

use common::{TestServer, code};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_template_makes_an_instance_per_key_shown_under_it_and_listed_a_page_at_a_time() {
    let server = TestServer::start().await;
    let (status, created) = server
        .post(
            "/v1/limits",
            json!({"name": "tenant:*", "slots": 2, "max_instances": 3, "description": "per tenant"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["template"],
        json!({"instances": 0, "max_instances": 3})
    );
    let acme = server.lease("tenant:acme").await;
    server.lease("tenant:acme").await;
    server.lease("tenant:globex").await;

    let (status, template) = server.get("/v1/limits/tenant:*").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(template["template"]["instances"], 2);
    assert_eq!(template["held"], 3, "the sum over its instances");
    let (_, instance) = server.get("/v1/limits/tenant:acme").await;
    assert_eq!(
        (instance["instance_of"].as_str(), instance["held"].as_u64()),
        (Some("tenant:*"), Some(2))
    );
    assert_eq!(instance["description"], "per tenant");
    let (_, list) = server.get("/v1/limits").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["tenant:*"],
        "instances are not in the list of limits"
    );

    let (_, page) = server.get("/v1/limits/tenant:*/instances?count=1").await;
    assert_eq!(page["instances"][0]["name"], "tenant:acme");
    assert_eq!(page["next_after"], "tenant:acme");
    let (_, page) = server
        .get("/v1/limits/tenant:*/instances?count=1&after=tenant:acme")
        .await;
    assert_eq!(page["instances"][0]["name"], "tenant:globex");
    let (_, busiest) = server
        .get("/v1/limits/tenant:*/instances?order=busiest")
        .await;
    assert_eq!(busiest["instances"][0]["name"], "tenant:acme");
    let (_, filtered) = server
        .get("/v1/limits/tenant:*/instances?prefix=tenant:g")
        .await;
    assert_eq!(filtered["instances"].as_array().unwrap().len(), 1);
    assert!(filtered["next_after"].is_null());

    // Changing the template changes its instances.
    let (status, _) = server
        .call(
            Method::PATCH,
            "/v1/limits/tenant:*",
            Some(json!({"slots": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.get("/v1/limits/tenant:globex").await.1["slots"], 5);
    server.release(&acme).await;
}

#[tokio::test]
async fn every_refusal_about_templates_is_named_and_changes_nothing() {
    let server = TestServer::start().await;
    server
        .post(
            "/v1/limits",
            json!({"name": "tenant:*", "slots": 1, "max_instances": 1}),
        )
        .await;
    server.lease("tenant:a").await;
    let cases = [
        (
            "POST",
            "/v1/limits",
            json!({"name": "a*b", "slots": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            "POST",
            "/v1/limits",
            json!({"name": "plain", "slots": 1, "max_instances": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_max_instances",
        ),
        (
            "POST",
            "/v1/limits",
            json!({"name": "t:*", "slots": 1, "max_instances": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_max_instances",
        ),
        (
            "POST",
            "/v1/acquire",
            json!({"names": ["tenant:*"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit_is_template",
        ),
        (
            "POST",
            "/v1/acquire",
            json!({"names": ["tenant:b"], "timeout_seconds": 0}),
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_instances",
        ),
        (
            "POST",
            "/v1/acquire",
            json!({"names": ["tenant:a"], "occupy": 2}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "occupy_exceeds_slots",
        ),
        (
            "PATCH",
            "/v1/limits/tenant:a",
            json!({"slots": 9}),
            StatusCode::CONFLICT,
            "limit_is_instance",
        ),
        (
            "GET",
            "/v1/limits/nothing:*/instances",
            json!(null),
            StatusCode::NOT_FOUND,
            "limit_not_found",
        ),
        (
            "GET",
            "/v1/limits/tenant:*/instances?order=loudest",
            json!(null),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "GET",
            "/v1/limits/tenant:*/instances?count=0",
            json!(null),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "GET",
            "/v1/limits/tenant:*/instances?colour=red",
            json!(null),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
    ];
    for (method, path, body, status, expected) in cases {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (!body.is_null()).then_some(body);
        let (got, answer) = server.call(method, path, body).await;
        assert_eq!(got, status, "{path}: {answer}");
        assert_eq!(code(&answer), expected, "{path}: {answer}");
    }
    let (_, template) = server.get("/v1/limits/tenant:*").await;
    assert_eq!(
        (
            template["slots"].as_u64(),
            template["template"]["instances"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        server.get("/v1/limits/tenant:b").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn deleting_a_template_fails_the_waiters_of_its_instances() {
    let server = TestServer::start().await;
    server
        .post("/v1/limits", json!({"name": "tenant:*", "slots": 1}))
        .await;
    server.lease("tenant:a").await;
    let waiting = {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/acquire", server.url);
        tokio::spawn(async move {
            let answer = http
                .post(url)
                .json(&json!({"names": ["tenant:a"], "timeout_seconds": 30}))
                .send()
                .await
                .unwrap();
            (
                answer.status(),
                answer.json::<serde_json::Value>().await.unwrap(),
            )
        })
    };
    server.until_waiters("tenant:a", 1).await;
    let (status, _) = server
        .call(Method::DELETE, "/v1/limits/tenant:*", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = waiting.await.unwrap();
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "limit_deleted")
    );
}
