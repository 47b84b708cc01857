//! The ceiling `scripts/bench-server` measures ratekeeper against: an HTTP
//! server on the same stack as `ratekeeper serve` (axum on hyper, tokio's
//! multi-threaded runtime, mimalloc) whose handlers do no work. An acquire
//! is answered a grant with a fresh lease id, a release 204, creating a
//! limit 201. Acquire+release churn against it is the most the HTTP layer
//! allows on this machine, measured in the same run; ratekeeper's churn
//! divided by it is how close to the hardware the server is.
//!
//! `cargo run --release -p ratekeeper --example ceiling` prints
//! `listening on http://127.0.0.1:PORT`, then serves until killed.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, post};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

static NEXT_LEASE: AtomicU64 = AtomicU64::new(1);

async fn acquire() -> impl IntoResponse {
    let id = NEXT_LEASE.fetch_add(1, Ordering::Relaxed);
    (
        [("content-type", "application/json")],
        format!(
            r#"{{"status":"granted","lease_id":"{id:032x}","expires_at":0,"granted_at":0,"waited_ms":0.0}}"#
        ),
    )
}

async fn release() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn create() -> impl IntoResponse {
    (
        StatusCode::CREATED,
        [("content-type", "application/json")],
        "{}",
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/v1/acquire", post(acquire))
        .route("/v1/leases/{id}", delete(release))
        .route("/v1/limits", post(create));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
