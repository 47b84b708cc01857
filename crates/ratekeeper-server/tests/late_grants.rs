//! A grant answered late (the server held up between granting and
//! answering) is never answered with an expiry already past: the lease is
//! renewed first, and if it is gone, the client is told to retry.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratekeeper_backend::{AcquireSpec, Backend, Embedded, Error, Event, LimitDetail, Waiting};
use ratekeeper_core::{
    LeaseGrant, LeaseId, LeaseView, LimitPatch, LimitSpec, LimitView, Timestamp,
};
use ratekeeper_server::ServerConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The embedded backend, answering each acquire as a server held up
/// between grant and answer would: with an expiry already past. With
/// `lose`, the lease is also gone meanwhile; with `nearly_spent`, its
/// expiry is 100 ms ahead of a grant 9.9 s back instead (a 10 s lease
/// granted at the instant it fell due during a pause).
struct Late {
    inner: Arc<Embedded>,
    lose: bool,
    nearly_spent: bool,
}

impl Backend for Late {
    async fn create_limit(&self, spec: LimitSpec) -> Result<LimitView, Error> {
        self.inner.create_limit(spec).await
    }
    async fn update_limit(&self, name: &str, patch: LimitPatch) -> Result<LimitView, Error> {
        self.inner.update_limit(name, patch).await
    }
    async fn delete_limit(&self, name: &str) -> Result<(), Error> {
        self.inner.delete_limit(name).await
    }
    async fn reset_limit(&self, name: &str) -> Result<LimitView, Error> {
        self.inner.reset_limit(name).await
    }
    async fn pause_limit(
        &self,
        name: &str,
        pause: ratekeeper_core::PauseSpec,
    ) -> Result<LimitView, Error> {
        self.inner.pause_limit(name, pause).await
    }
    async fn report_throttled(
        &self,
        name: &str,
        report: ratekeeper_core::ThrottleReport,
    ) -> Result<LimitView, Error> {
        self.inner.report_throttled(name, report).await
    }
    async fn resume_limit(&self, name: &str) -> Result<LimitView, Error> {
        self.inner.resume_limit(name).await
    }
    async fn instances(
        &self,
        template: &str,
        query: ratekeeper_core::InstanceQuery<'_>,
    ) -> Result<Vec<LimitView>, Error> {
        self.inner.instances(template, query).await
    }
    async fn limits(&self) -> Result<Vec<LimitView>, Error> {
        self.inner.limits().await
    }
    async fn limit(&self, name: &str) -> Result<LimitDetail, Error> {
        self.inner.limit(name).await
    }
    async fn leases(&self, on: Option<&str>) -> Result<Vec<LeaseView>, Error> {
        self.inner.leases(on).await
    }
    fn acquire(&self, spec: AcquireSpec) -> Waiting {
        let (inner, lose, nearly_spent) = (Arc::clone(&self.inner), self.lose, self.nearly_spent);
        Box::pin(async move {
            let mut granted = inner.acquire(spec).await?;
            if let Some(lease) = &mut granted.lease {
                if lose {
                    inner.release(lease.id).await?;
                }
                lease.expires_at = Timestamp::from_unix_millis(now_ms() - 500);
                if nearly_spent {
                    lease.expires_at = Timestamp::from_unix_millis(now_ms() + 100);
                    granted.granted_at = Timestamp::from_unix_millis(now_ms() - 9_900);
                }
            }
            Ok(granted)
        })
    }
    async fn renew(&self, id: LeaseId, ttl: Option<Duration>) -> Result<LeaseGrant, Error> {
        self.inner.renew(id, ttl).await
    }
    async fn release(&self, id: LeaseId) -> Result<(), Error> {
        self.inner.release(id).await
    }
    async fn events(&self) -> Result<broadcast::Receiver<Event>, Error> {
        self.inner.events().await
    }
    async fn flush(&self) -> Result<(), Error> {
        self.inner.flush().await
    }
    async fn health(&self) -> Result<(), Error> {
        self.inner.health().await
    }
}

async fn serve(lose: bool) -> String {
    serve_late(lose, false).await
}

async fn serve_late(lose: bool, nearly_spent: bool) -> String {
    let backend = Arc::new(Late {
        inner: Arc::new(Embedded::in_memory()),
        lose,
        nearly_spent,
    });
    backend
        .create_limit(LimitSpec::concurrency("db", 1))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ratekeeper_server::serve(
        listener,
        backend,
        ServerConfig::default(),
        std::future::pending(),
    ));
    url
}

async fn acquire(url: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/acquire"))
        .json(&json!({"names": ["db"], "lease_seconds": 10}))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_grant_answered_after_its_expiry_is_renewed_first() {
    let url = serve(false).await;
    let (status, answer) = acquire(&url).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let expires_at = answer["expires_at"].as_u64().unwrap();
    assert!(
        expires_at > now_ms(),
        "answered an expiry {} ms in the past",
        now_ms() - expires_at
    );
}

#[tokio::test]
async fn a_grant_lost_before_it_could_be_answered_is_a_retryable_error() {
    let url = serve(true).await;
    let (status, answer) = acquire(&url).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "grant_expired");
}

#[tokio::test]
async fn a_grant_nearly_spent_when_answered_is_renewed_to_its_whole_ttl() {
    let url = serve_late(false, true).await;
    let (status, answer) = acquire(&url).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let left = answer["expires_at"]
        .as_u64()
        .unwrap()
        .saturating_sub(now_ms());
    assert!(left > 9_000, "answered with {left} ms left of a 10 s lease");
}
