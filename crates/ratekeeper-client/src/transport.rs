//! How the client reaches a limit engine: a server over HTTP (following its
//! ticket protocol), or an engine in this process (`memory://`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ratekeeper_api::{
    AcquireAnswer, AcquireBody, CreateLimit, ErrorBody, ErrorCode, InstanceOrder, InstancePage,
    Instances, Lease, Limit, LimitDetails, LimitHistory, PauseLimit, RenewBody, Renewed,
    ThrottledBody, UpdateLimit, WaitBody, encoded_name, limit_path,
};
use ratekeeper_backend::{AcquireSpec, Backend, Embedded, Granted};
use ratekeeper_core::{
    LeaseGrant, LeaseId, LimitPatch, LimitSpec, PauseSpec, ThrottleReport, Timestamp,
};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// The longest pause between retries after a connection error.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a wait keeps retrying while the server cannot be reached: long
/// enough to ride out a restart, short enough not to hang forever.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(10);

/// How the client trusts an `https://` server and proves itself to one
/// that asks for a client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// Also trust server certificates this CA (PEM) signed, besides the
    /// system's roots.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Present this certificate and its private key (one PEM file holding
    /// both) to a server that requires client certificates.
    pub identity: Option<std::path::PathBuf>,
}

impl Tls {
    /// From `RATEKEEPER_CA_CERT` and `RATEKEEPER_CLIENT_CERT` (paths of
    /// PEM files), where set.
    pub fn from_env() -> Self {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from)
        };
        Tls {
            ca_cert: path("RATEKEEPER_CA_CERT"),
            identity: path("RATEKEEPER_CLIENT_CERT"),
        }
    }

    /// An HTTP client configured by these files.
    fn http_client(&self, url: &str) -> Result<reqwest::Client, Error> {
        let unreadable =
            |path: &std::path::Path, what: &str, err: &dyn std::fmt::Display| Error::Connect {
                url: url.to_owned(),
                reason: format!("{what} {}: {err}", path.display()),
            };
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| unreadable(path, "cannot read the CA certificate", &e))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| unreadable(path, "no PEM certificate in", &e))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(path) = &self.identity {
            let pem = std::fs::read(path)
                .map_err(|e| unreadable(path, "cannot read the client certificate", &e))?;
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| unreadable(path, "no client certificate and key (PEM) in", &e))?;
            builder = builder.identity(identity);
        }
        builder.build().map_err(|e| Error::Connect {
            url: url.to_owned(),
            reason: e.to_string(),
        })
    }
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
    pub fn new(url: &str, token: Option<String>, tls: &Tls) -> Result<Self, Error> {
        if let Some(name) = url.strip_prefix("memory://") {
            return Ok(Transport::Memory(memory_engine(name)));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::InvalidUrl(url.into()));
        }
        Ok(Transport::Http(Http {
            client: tls.http_client(url)?,
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
                let body = RenewBody {
                    lease_seconds: ttl.map(|t| t.as_secs_f64()),
                };
                let renewed: Renewed = http
                    .call(Method::POST, &format!("/v1/leases/{id}/renew"), Some(&body))
                    .await?;
                Ok(LeaseGrant {
                    id,
                    expires_at: Timestamp::from_unix_millis(renewed.expires_at),
                })
            }
        }
    }

    pub async fn release(&self, id: LeaseId) -> Result<(), Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.release(id).await?),
            Transport::Http(http) => http.send(Method::DELETE, &format!("/v1/leases/{id}")).await,
        }
    }

    pub async fn create_limit(&self, spec: LimitSpec) -> Result<Limit, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.create_limit(spec).await?.into()),
            Transport::Http(http) => {
                let body = CreateLimit::from(spec);
                http.call(Method::POST, "/v1/limits", Some(&body)).await
            }
        }
    }

    pub async fn update_limit(&self, name: &str, patch: LimitPatch) -> Result<Limit, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.update_limit(name, patch).await?.into()),
            Transport::Http(http) => {
                let body = UpdateLimit::from(patch);
                http.call(Method::PATCH, &limit_path(name), Some(&body))
                    .await
            }
        }
    }

    pub async fn delete_limit(&self, name: &str) -> Result<(), Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.delete_limit(name).await?),
            Transport::Http(http) => http.send(Method::DELETE, &limit_path(name)).await,
        }
    }

    pub async fn reset_limit(&self, name: &str) -> Result<Limit, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.reset_limit(name).await?.into()),
            Transport::Http(http) => {
                let path = format!("{}/reset", limit_path(name));
                http.call(Method::POST, &path, None::<&()>).await
            }
        }
    }

    pub async fn instances(&self, template: &str, page: &InstancePage) -> Result<Instances, Error> {
        match self {
            Transport::Memory(backend) => {
                let found = backend.instances(template, page.query()).await?;
                Ok(Instances::new(
                    found.into_iter().map(Into::into).collect(),
                    page,
                ))
            }
            Transport::Http(http) => {
                let mut path = format!("{}/instances?count={}", limit_path(template), page.count);
                if !page.prefix.is_empty() {
                    path.push_str(&format!("&prefix={}", encoded_name(&page.prefix)));
                }
                if page.order == InstanceOrder::Busiest {
                    path.push_str("&order=busiest");
                }
                if let Some(after) = &page.after {
                    path.push_str(&format!("&after={}", encoded_name(after)));
                }
                http.get(&path).await
            }
        }
    }

    pub async fn pause_limit(&self, name: &str, pause: PauseSpec) -> Result<Limit, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.pause_limit(name, pause).await?.into()),
            Transport::Http(http) => {
                let path = format!("{}/pause", limit_path(name));
                http.call(Method::POST, &path, Some(&PauseLimit::from(pause)))
                    .await
            }
        }
    }

    pub async fn report_throttled(
        &self,
        name: &str,
        report: ThrottleReport,
    ) -> Result<Limit, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.report_throttled(name, report).await?.into()),
            Transport::Http(http) => {
                let path = format!("{}/throttled", limit_path(name));
                http.call(Method::POST, &path, Some(&ThrottledBody::from(report)))
                    .await
            }
        }
    }

    pub async fn resume_limit(&self, name: &str) -> Result<Limit, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.resume_limit(name).await?.into()),
            Transport::Http(http) => {
                let path = format!("{}/resume", limit_path(name));
                http.call(Method::POST, &path, None::<&()>).await
            }
        }
    }

    pub async fn limit_details(&self, name: &str) -> Result<LimitDetails, Error> {
        match self {
            Transport::Memory(backend) => {
                let found = backend.limit(name).await?;
                Ok(LimitDetails::new(found.limit, found.leases, found.waiters))
            }
            Transport::Http(http) => http.get(&limit_path(name)).await,
        }
    }

    pub async fn history(&self, name: &str) -> Result<LimitHistory, Error> {
        match self {
            // Only a server samples: in process there is no history.
            Transport::Memory(backend) => {
                backend.limit(name).await?;
                Ok(LimitHistory {
                    name: name.to_owned(),
                    interval_seconds: 1,
                    window_seconds: 0,
                    tracked: false,
                    samples: Vec::new(),
                })
            }
            Transport::Http(http) => http.get(&format!("{}/history", limit_path(name))).await,
        }
    }

    pub async fn limit(&self, name: &str) -> Result<Limit, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend.limit(name).await?.limit.into()),
            Transport::Http(http) => http.get(&limit_path(name)).await,
        }
    }

    pub async fn limits(&self) -> Result<Vec<Limit>, Error> {
        match self {
            Transport::Memory(backend) => Ok(backend
                .limits()
                .await?
                .into_iter()
                .map(Into::into)
                .collect()),
            Transport::Http(http) => http.get("/v1/limits").await,
        }
    }

    pub async fn leases(&self, on: Option<&str>) -> Result<Vec<Lease>, Error> {
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
                http.get(&path).await
            }
        }
    }
}

impl Transport {
    /// One `POST /v1/acquire` as `body` says, without following a ticket:
    /// the server's answer as it is.
    pub async fn acquire_once(&self, body: &AcquireBody) -> Result<AcquireAnswer, Error> {
        match self {
            Transport::Http(http) => http.call(Method::POST, "/v1/acquire", Some(body)).await,
            Transport::Memory(_) => Err(Error::InvalidUrl(
                "memory:// (tickets are a server's; use acquire)".into(),
            )),
        }
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> Result<String, Error> {
        match self {
            Transport::Http(http) => {
                let (_, _, bytes) = http.exchange(Method::GET, "/metrics", None::<&()>).await?;
                String::from_utf8(bytes.to_vec()).map_err(|e| Error::Protocol(e.to_string()))
            }
            Transport::Memory(_) => Err(Error::InvalidUrl(
                "memory:// (an engine in this process has no /metrics)".into(),
            )),
        }
    }
}

impl Http {
    /// Sends a request and reads its answer as `T`; an error answer
    /// becomes the [`Error`] of its code.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, Error> {
        let (url, status, bytes) = self.exchange(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Protocol(format!(
                "{status} from {url} ({e}): {}",
                String::from_utf8_lossy(&bytes)
            ))
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// Sends a request whose answer has no body (204).
    async fn send(&self, method: Method, path: &str) -> Result<(), Error> {
        self.exchange(method, path, None::<&()>).await.map(drop)
    }

    /// One round trip: the URL, status and body of a successful answer.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<(String, StatusCode, bytes::Bytes), Error> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.connect_error(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.connect_error(&e))?;
        if status.is_success() {
            return Ok((url, status, bytes));
        }
        let error: ErrorBody = serde_json::from_slice(&bytes).map_err(|_| {
            Error::Protocol(format!(
                "{status} from {url}: {}",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        let detail = error.error;
        Err(Error::from_code(&detail.code, detail.message).in_field(detail.field.as_deref()))
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
            let answer: Result<AcquireAnswer, Error> = match &ticket.ticket {
                None => {
                    let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                    let body = acquire_body(spec, remaining);
                    self.call(Method::POST, "/v1/acquire", Some(&body)).await
                }
                Some(id) => {
                    let path = format!("/v1/tickets/{id}/wait");
                    self.call(Method::POST, &path, Some(&WaitBody::default()))
                        .await
                }
            };
            let answer = match answer {
                Ok(answer) => answer,
                Err(Error::Invalid { code, .. }) if code == ErrorCode::TicketNotFound.as_str() => {
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
            match answer {
                AcquireAnswer::Waiting { ticket: id, .. } => ticket.ticket = Some(id),
                AcquireAnswer::Granted {
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

fn acquire_body(spec: &AcquireSpec, timeout: Option<Duration>) -> AcquireBody {
    AcquireBody {
        names: spec.names.clone(),
        occupy: spec.occupy,
        mode: spec.mode.into(),
        timeout_seconds: timeout.map(|t| t.as_secs_f64()),
        lease_seconds: Some(spec.lease_ttl.as_secs_f64()),
        holder: spec.holder.clone(),
        create_if_missing: spec.create_if_missing,
        wait_seconds: None,
    }
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
                .send(Method::DELETE, &format!("/v1/tickets/{ticket}"))
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
