//! A real server on port 0 with a temporary data directory, and a small
//! JSON client for it.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ratekeeper_backend::Embedded;
use ratekeeper_server::ServerConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub struct TestServer {
    pub url: String,
    pub http: reqwest::Client,
    /// Sent as the bearer token, if set.
    pub token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    pub stopped: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_config(ServerConfig::default()).await
    }

    /// A server with an admin token (`admin-secret-for-tests`) and a
    /// client token (`client-secret-for-tests`), called with neither yet.
    pub async fn with_tokens() -> Self {
        let config = ServerConfig {
            tokens: ratekeeper_server::Tokens::new(vec![
                ratekeeper_server::Token::new(
                    "admin-secret-for-tests",
                    ratekeeper_server::Scope::Admin,
                ),
                ratekeeper_server::Token::new(
                    "client-secret-for-tests",
                    ratekeeper_server::Scope::Client,
                ),
            ])
            .unwrap(),
            ..ServerConfig::default()
        };
        Self::with_config(config).await
    }

    pub async fn with_config(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(Embedded::open(dir.path()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel();
        let server = tokio::spawn(ratekeeper_server::serve(listener, backend, config, async {
            let _ = stopped.await;
        }));
        TestServer {
            url,
            http: reqwest::Client::new(),
            token: None,
            stop: Some(stop),
            stopped: Some(server),
            dir,
        }
    }

    /// Starts shutting the server down.
    pub fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn create(&self, name: &str, slots: u64) {
        let (status, body) = self
            .post("/v1/limits", json!({ "name": name, "slots": slots }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Acquires one slot on `name`, granted at once; returns the lease id.
    pub async fn lease(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/acquire",
                json!({ "names": [name], "timeout_seconds": 0 }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["lease_id"].as_str().unwrap().to_owned()
    }

    pub async fn release(&self, lease: &str) {
        let (status, body) = self
            .call(Method::DELETE, &format!("/v1/leases/{lease}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }

    pub async fn waiters(&self, name: &str) -> usize {
        let (_, body) = self.get(&format!("/v1/limits/{name}")).await;
        body["waiters"].as_array().unwrap().len()
    }

    /// Waits (briefly, checking often) until `name` has `count` waiters.
    pub async fn until_waiters(&self, name: &str, count: usize) {
        for _ in 0..2000 {
            if self.waiters(name).await == count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{name} never had {count} waiters");
    }
}

impl TestServer {
    /// Waiting on `ticket` says it does not exist (any more).
    pub async fn assert_ticket_gone(&self, ticket: &str) {
        let (status, body) = self
            .post(&format!("/v1/tickets/{ticket}/wait"), json!({}))
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "ticket_not_found")
        );
    }
}

/// The error code of an error answer.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}
