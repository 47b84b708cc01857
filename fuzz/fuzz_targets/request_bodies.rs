//! Any request body on every endpoint that takes one, through the whole
//! server (routing, auth, origin checks, JSON parsing, the engine): never a
//! panic, never a 500, and every error answered as a JSON error body.

#![no_main]

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use ratekeeper_backend::Embedded;
use ratekeeper_server::ServerConfig;
use tower::ServiceExt;

struct Server {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    /// Kept so that the server never sees itself told to stop.
    _running: tokio::sync::watch::Sender<bool>,
}

/// Inputs served by one server before a fresh one: the limits that
/// inputs create would otherwise grow without end over a long run.
const INPUTS_PER_SERVER: u32 = 20_000;

thread_local! {
    static SERVER: RefCell<(u32, Option<Server>)> = const { RefCell::new((0, None)) };
}

fn start() -> Server {
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = ServerConfig {
            max_wait: Duration::from_millis(1),
            ticket_lapse: Duration::from_millis(50),
            max_tickets: 1_000,
            ..ServerConfig::default()
        };
        let (running, stopping) = tokio::sync::watch::channel(false);
        let router = runtime.block_on(async {
            let backend = Arc::new(Embedded::in_memory());
            // Something to act on: a concurrency limit and a rate limit.
            let (router, ..) = ratekeeper_server::router(Arc::clone(&backend), &config, stopping);
            use ratekeeper_backend::Backend;
            let _ = backend.create_limit(ratekeeper_core::LimitSpec::concurrency("c", 2)).await;
            let mut rate = ratekeeper_core::LimitSpec::concurrency("r", 5);
            rate.slot_decay_per_second = 10.0;
            let _ = backend.create_limit(rate).await;
            router
        });
        Server {
            runtime,
            router,
            _running: running,
        }
    }
}

const ENDPOINTS: &[(Method, &str)] = &[
    (Method::POST, "/v1/limits"),
    (Method::PATCH, "/v1/limits/c"),
    (Method::PATCH, "/v1/limits/r"),
    (Method::POST, "/v1/acquire"),
    (Method::POST, "/v1/tickets/00000000000000000000000000000000/wait"),
    (Method::POST, "/v1/leases/00000000000000000000000000000000/renew"),
    (Method::POST, "/v1/limits/c/reset"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let (method, path) = &ENDPOINTS[usize::from(which) % ENDPOINTS.len()];
    let request = Request::builder()
        .method(method.clone())
        .uri(*path)
        .header("host", "127.0.0.1:7171")
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    let (status, answer) = SERVER.with_borrow_mut(|(served, server)| {
        *served += 1;
        if *served % INPUTS_PER_SERVER == 0 {
            *server = None;
        }
        let server = server.get_or_insert_with(start);
        server.runtime.block_on(async {
            let response = server.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            (status, bytes)
        })
    });
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{}", String::from_utf8_lossy(&answer));
    if status.is_client_error() || status.is_server_error() {
        let error: serde_json::Value = serde_json::from_slice(&answer)
            .unwrap_or_else(|_| panic!("a {status} without a JSON body: {answer:?}"));
        assert!(error["error"]["code"].is_string(), "{error}");
    }
});
