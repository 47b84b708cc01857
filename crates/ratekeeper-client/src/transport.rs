//! How the client reaches a limit engine: a server over HTTP (following its
//! ticket protocol), or an engine in this process (`memory://`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ratekeeper_backend::{AcquireSpec, Backend, Embedded, Granted};
use ratekeeper_core::{LeaseGrant, LeaseId, LimitPatch, LimitSpec, Mode, Timestamp};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;

/// The longest pause between retries after a connection error.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a wait keeps retrying while the server cannot be reached: long
/// enough to ride out a restart, short enough not to hang forever.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(10);

/// A limit's state, as the client sees it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LimitState {
    /// Its name.
    pub name: String,
    /// Its slot count.
    pub slots: u64,
    /// Its decay rate, slots per second.
    pub slot_decay_per_second: f64,
    /// Whether it enforces.
    pub active: bool,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Slots held by leases.
    pub held: u64,
    /// Rate-mode slots not yet decayed.
    pub decaying: f64,
    /// Requests queued.
    pub waiting: u64,
}

/// A live lease, as the client sees it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LeaseState {
    /// Its id.
    pub id: String,
    /// The limits it holds slots on.
    pub limits: Vec<String>,
    /// Slots held on each.
    pub occupy: u64,
    /// The holder's label.
    pub holder: Option<String>,
    /// When it was granted (Unix ms).
    pub granted_at: u64,
    /// When it expires unless renewed (Unix ms).
    pub expires_at: u64,
    /// What each renewal extends it by.
    pub lease_seconds: f64,
}

impl From<ratekeeper_core::LeaseView> for LeaseState {
    fn from(v: ratekeeper_core::LeaseView) -> Self {
        LeaseState {
            id: v.id.to_string(),
            limits: v.limits,
            occupy: v.occupy,
            holder: v.holder,
            granted_at: v.granted_at.as_unix_millis(),
            expires_at: v.expires_at.as_unix_millis(),
            lease_seconds: v.ttl.as_secs_f64(),
        }
    }
}

impl From<ratekeeper_core::LimitView> for LimitState {
    fn from(view: ratekeeper_core::LimitView) -> Self {
        LimitState {
            name: view.name,
            slots: view.slots,
            slot_decay_per_second: view.slot_decay_per_second,
            active: view.active,
            description: view.description,
            held: view.held,
            decaying: view.decaying,
            waiting: view.waiting,
        }
    }
}

/// A limit name as a URL path segment or query value. Names are validated
/// by the server; anything outside the allowed characters is
/// percent-encoded so that it reaches the server intact and is refused
/// with a clear message, rather than read as another path.
pub fn encoded_name(name: &str) -> String {
    name.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"._-:".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

fn limit_path(name: &str) -> String {
    format!("/v1/limits/{}", encoded_name(name))
}

#[derive(Clone)]
pub(crate) enum Transport {
    Http(Http),
    Memory(Embedded),
}

#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Engines behind `memory://NAME`, one per name for the whole process, so
/// that every client connecting to the same name shares its limits.
fn memory_engine(name: &str) -> Embedded {
    static ENGINES: OnceLock<Mutex<HashMap<String, Embedded>>> = OnceLock::new();
    let engines = ENGINES.get_or_init(Default::default);
    let mut engines = engines
        .lock()
        .expect("the engine registry is never poisoned");
    engines
        .entry(name.to_owned())
        .or_insert_with(Embedded::in_memory)
        .clone()
}

impl Transport {
    pub fn new(url: &str, token: Option<String>) -> Result<Self, Error> {
        if let Some(name) = url.strip_prefix("memory://") {
            return Ok(Transport::Memory(memory_engine(name)));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::InvalidUrl(url.into()));
        }
        Ok(Transport::Http(Http {
            client: reqwest::Client::new(),
            base: url.trim_end_matches('/').to_owned(),
            token,
        }))
    }

    pub async fn acquire(&self, spec: &AcquireSpec) -> Result<Granted, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.acquire(spec.clone()).await?),
            Transport::Http(http) => http.acquire(spec).await,
        }
    }

    pub async fn renew(&self, id: LeaseId, ttl: Option<Duration>) -> Result<LeaseGrant, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.renew(id, ttl).await?),
            Transport::Http(http) => {
                let body = json!({ "lease_seconds": ttl.map(|t| t.as_secs_f64()) });
                let answer = http
                    .call(Method::POST, &format!("/v1/leases/{id}/renew"), Some(body))
                    .await?;
                let expires_at = answer["expires_at"].as_u64().ok_or_else(|| {
                    Error::Protocol(format!("a renewal without expires_at: {answer}"))
                })?;
                Ok(LeaseGrant {
                    id,
                    expires_at: Timestamp::from_unix_millis(expires_at),
                })
            }
        }
    }

    pub async fn release(&self, id: LeaseId) -> Result<(), Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.release(id).await?),
            Transport::Http(http) => http
                .call(Method::DELETE, &format!("/v1/leases/{id}"), None)
                .await
                .map(drop),
        }
    }

    pub async fn create_limit(&self, spec: LimitSpec) -> Result<(), Error> {
        match self {
            Transport::Memory(backend) => backend
                .create_limit(spec)
                .await
                .map(drop)
                .map_err(Into::into),
            Transport::Http(http) => {
                let body = json!({
                    "name": spec.name,
                    "slots": spec.slots,
                    "slot_decay_per_second": spec.slot_decay_per_second,
                    "active": spec.active,
                    "description": spec.description,
                });
                http.call(Method::POST, "/v1/limits", Some(body))
                    .await
                    .map(drop)
            }
        }
    }

    pub async fn update_limit(&self, name: &str, patch: LimitPatch) -> Result<(), Error> {
        match self {
            Transport::Memory(backend) => backend
                .update_limit(name, patch)
                .await
                .map(drop)
                .map_err(Into::into),
            Transport::Http(http) => {
                let mut body = serde_json::Map::new();
                if let Some(slots) = patch.slots {
                    body.insert("slots".into(), slots.into());
                }
                if let Some(decay) = patch.slot_decay_per_second {
                    body.insert("slot_decay_per_second".into(), decay.into());
                }
                if let Some(active) = patch.active {
                    body.insert("active".into(), active.into());
                }
                if let Some(description) = patch.description {
                    body.insert("description".into(), description.unwrap_or_default().into());
                }
                http.call(Method::PATCH, &limit_path(name), Some(body.into()))
                    .await
                    .map(drop)
            }
        }
    }

    pub async fn delete_limit(&self, name: &str) -> Result<(), Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.delete_limit(name).await?),
            Transport::Http(http) => http
                .call(Method::DELETE, &limit_path(name), None)
                .await
                .map(drop),
        }
    }

    pub async fn reset_limit(&self, name: &str) -> Result<(), Error> {
        match self {
            Transport::Memory(backend) => backend
                .reset_limit(name)
                .await
                .map(drop)
                .map_err(Into::into),
            Transport::Http(http) => http
                .call(Method::POST, &format!("{}/reset", limit_path(name)), None)
                .await
                .map(drop),
        }
    }

    pub async fn limit(&self, name: &str) -> Result<LimitState, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.limit(name).await?.limit.into()),
            Transport::Http(http) => {
                let answer = http.call(Method::GET, &limit_path(name), None).await?;
                serde_json::from_value(answer).map_err(|e| Error::Protocol(e.to_string()))
            }
        }
    }

    pub async fn limits(&self) -> Result<Vec<LimitState>, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend
                .limits()
                .await?
                .into_iter()
                .map(Into::into)
                .collect()),
            Transport::Http(http) => {
                let answer = http.call(Method::GET, "/v1/limits", None).await?;
                serde_json::from_value(answer).map_err(|e| Error::Protocol(e.to_string()))
            }
        }
    }

    pub async fn leases(&self, on: Option<&str>) -> Result<Vec<LeaseState>, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend
                .leases(on)
                .await?
                .into_iter()
                .map(Into::into)
                .collect()),
            Transport::Http(http) => {
                let path = match on {
                    Some(name) => format!("/v1/leases?limit={}", encoded_name(name)),
                    None => "/v1/leases".to_owned(),
                };
                let answer = http.call(Method::GET, &path, None).await?;
                serde_json::from_value(answer).map_err(|e| Error::Protocol(e.to_string()))
            }
        }
    }
}

/// What `POST /v1/acquire` and ticket waits answer.
#[derive(Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Answer {
    Granted {
        lease_id: Option<String>,
        expires_at: Option<u64>,
        granted_at: u64,
        waited_ms: f64,
    },
    Waiting {
        ticket: String,
    },
}

impl Http {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Error> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| self.connect_error(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.connect_error(&e))?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
            Error::Protocol(format!(
                "{status} from {url}: {}",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        if status.is_success() {
            return Ok(value);
        }
        let code = value["error"]["code"].as_str().unwrap_or("unknown");
        let message = value["error"]["message"].as_str().unwrap_or("").to_owned();
        let field = value["error"]["field"].as_str();
        Err(Error::from_code(code, message).in_field(field))
    }

    fn connect_error(&self, err: &reqwest::Error) -> Error {
        let mut cause: &dyn std::error::Error = err;
        while let Some(source) = cause.source() {
            cause = source;
        }
        Error::Connect {
            url: self.base.clone(),
            reason: cause.to_string(),
        }
    }

    /// Acquires through the ticket protocol: the first request may answer
    /// with a ticket, on which the wait continues in the same place in the
    /// queue. Connection errors are retried with backoff until the timeout,
    /// for at most [`RECONNECT_WINDOW`] without hearing from the server (not
    /// at all if it never answered); if the ticket lapsed meanwhile, the
    /// request starts over.
    async fn acquire(&self, spec: &AcquireSpec) -> Result<Granted, Error> {
        let deadline = spec.timeout.map(|t| Instant::now() + t);
        let mut ticket = TicketGuard {
            http: self.clone(),
            ticket: None,
        };
        let mut backoff = Backoff::default();
        // `None` until the server first answers: a server that was never
        // reached is reported at once rather than retried.
        let mut last_contact: Option<Instant> = None;
        loop {
            let answer = match &ticket.ticket {
                None => {
                    let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                    self.call(
                        Method::POST,
                        "/v1/acquire",
                        Some(acquire_body(spec, remaining)),
                    )
                    .await
                }
                Some(id) => {
                    self.call(
                        Method::POST,
                        &format!("/v1/tickets/{id}/wait"),
                        Some(json!({})),
                    )
                    .await
                }
            };
            let answer = match answer {
                Ok(answer) => answer,
                Err(Error::Invalid { code, .. }) if code == "ticket_not_found" => {
                    // It lapsed while we could not reach the server.
                    ticket.ticket = None;
                    continue;
                }
                Err(err) if err.is_transient() => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::Timeout);
                    }
                    if last_contact.is_none_or(|at| at.elapsed() >= RECONNECT_WINDOW) {
                        return Err(err);
                    }
                    tracing::debug!(%err, "acquire: retrying after a transient error");
                    backoff.wait().await;
                    continue;
                }
                Err(err) => {
                    ticket.ticket = None;
                    return Err(err);
                }
            };
            backoff = Backoff::default();
            last_contact = Some(Instant::now());
            match serde_json::from_value(answer).map_err(|e| Error::Protocol(e.to_string()))? {
                Answer::Waiting { ticket: id } => ticket.ticket = Some(id),
                Answer::Granted {
                    lease_id,
                    expires_at,
                    granted_at,
                    waited_ms,
                } => {
                    ticket.ticket = None;
                    let lease = match (lease_id, expires_at) {
                        (Some(id), Some(at)) => Some(LeaseGrant {
                            id: id
                                .parse()
                                .map_err(|_| Error::Protocol(format!("bad lease id {id:?}")))?,
                            expires_at: Timestamp::from_unix_millis(at),
                        }),
                        _ => None,
                    };
                    return Ok(Granted {
                        lease,
                        granted_at: Timestamp::from_unix_millis(granted_at),
                        waited: Duration::from_secs_f64(waited_ms.max(0.0) / 1e3),
                    });
                }
            }
        }
    }
}

fn acquire_body(spec: &AcquireSpec, timeout: Option<Duration>) -> Value {
    let mode = match spec.mode {
        Mode::Concurrency => "concurrency",
        Mode::RateLimit => "rate_limit",
    };
    json!({
        "names": spec.names,
        "occupy": spec.occupy,
        "mode": mode,
        "timeout_seconds": timeout.map(|t| t.as_secs_f64()),
        "lease_seconds": spec.lease_ttl.as_secs_f64(),
        "holder": spec.holder,
        "create_if_missing": spec.create_if_missing,
    })
}

/// Gives up a ticket's place in the queue if the wait is dropped.
struct TicketGuard {
    http: Http,
    ticket: Option<String>,
}

impl Drop for TicketGuard {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // The ticket lapses on the server by itself.
        };
        let http = self.http.clone();
        runtime.spawn(async move {
            let _ = http
                .call(Method::DELETE, &format!("/v1/tickets/{ticket}"), None)
                .await;
        });
    }
}

/// Exponential backoff from 50 ms to [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(50))
    }
}

impl Backoff {
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}
