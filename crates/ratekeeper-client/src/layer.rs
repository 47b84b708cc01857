//! A tower layer that puts global limits in front of any service: every
//! call waits for its turn on the named limits first, and holds its
//! concurrency slots until the call's response is ready.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use crate::client::Client;

/// The error of a limited service: the inner service's error, or the
/// limit's ([`crate::Error`]), boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Puts a concurrency limit and/or a rate limit in front of a service.
///
/// ```no_run
/// # async fn example() -> Result<(), ratekeeper_client::BoxError> {
/// use ratekeeper_client::{Client, LimitLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// let client = Client::connect("http://127.0.0.1:7171")?;
/// let fetch = service_fn(|url: String| async move { Ok::<_, std::io::Error>(url.len()) });
/// let limited = ServiceBuilder::new()
///     .layer(LimitLayer::new(client).concurrency(["vendor-api"]).rate(["vendor-rps"]))
///     .service(fetch);
/// let len = limited.oneshot("https://example.com".to_string()).await?;
/// # Ok(()) }
/// ```
///
/// With [`report_throttling`](Self::report_throttling), a response in which
/// the upstream says "slow down" pauses the layer's limits for its
/// `Retry-After`, so every worker sharing them waits, not only this one.
#[derive(Clone, Debug)]
pub struct LimitLayer<T = NoReports> {
    client: Client,
    concurrency: Vec<String>,
    rate: Vec<String>,
    timeout: Option<Duration>,
    throttling: T,
}

impl LimitLayer {
    /// A layer using `client`; name its limits with
    /// [`concurrency`](Self::concurrency) and [`rate`](Self::rate).
    pub fn new(client: Client) -> Self {
        LimitLayer {
            client,
            concurrency: Vec::new(),
            rate: Vec::new(),
            timeout: None,
            throttling: NoReports,
        }
    }
}

impl<T> LimitLayer<T> {
    /// Reads every response with `signal` ([`HttpThrottling`] for HTTP
    /// services); when it says the upstream asked to slow down, the layer's
    /// limits (concurrency and rate) are paused for as long as it asked,
    /// before the response is handed on.
    pub fn report_throttling<U>(self, signal: U) -> LimitLayer<U> {
        LimitLayer {
            client: self.client,
            concurrency: self.concurrency,
            rate: self.rate,
            timeout: self.timeout,
            throttling: signal,
        }
    }

    /// Each call holds a slot on each of these limits until it completes.
    pub fn concurrency<N: crate::Names>(mut self, names: N) -> Self {
        self.concurrency = names.into_names();
        self
    }

    /// Each call waits for its turn on each of these rate limits.
    pub fn rate<N: crate::Names>(mut self, names: N) -> Self {
        self.rate = names.into_names();
        self
    }

    /// A call that waits longer than this for its turn fails with
    /// [`crate::Error::Timeout`] (each limit kind waits at most this long);
    /// `None` (the default) waits forever.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }
}

impl<S, T: Clone> Layer<S> for LimitLayer<T> {
    type Service = Limited<S, T>;

    fn layer(&self, inner: S) -> Limited<S, T> {
        Limited {
            inner,
            limits: self.clone(),
        }
    }
}

/// A service behind global limits; see [`LimitLayer`].
#[derive(Clone, Debug)]
pub struct Limited<S, T = NoReports> {
    inner: S,
    limits: LimitLayer<T>,
}

impl<S, T, Request> Service<Request> for Limited<S, T>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Into<BoxError>,
    T: ThrottleSignal<S::Response> + Clone + Send + Sync + 'static,
    Request: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone is ready only in the sense of tower's usual idiom: the
        // ready original runs this call, the clone takes its place.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let limits = self.limits.clone();
        Box::pin(async move {
            let client = &limits.client;
            let lease = if limits.concurrency.is_empty() {
                None
            } else {
                let acquire = client
                    .concurrency(limits.concurrency.clone())
                    .timeout(limits.timeout);
                Some(acquire.await?)
            };
            if !limits.rate.is_empty() {
                client
                    .rate_limit(limits.rate.clone())
                    .timeout(limits.timeout)
                    .await?;
            }
            let response = inner.call(request).await.map_err(Into::into);
            if let Ok(answer) = &response
                && let Some(wait) = limits.throttling.throttled(answer)
            {
                for name in limits.concurrency.iter().chain(&limits.rate) {
                    let reason = match wait {
                        Some(wait) => format!("upstream asked to wait {:.3} s", wait.as_secs_f64()),
                        None => "upstream said slow down".to_owned(),
                    };
                    if let Err(err) = client.report_throttled(name, wait, reason).await {
                        tracing::warn!(limit = %name, error = %err, "could not report throttling");
                    }
                }
            }
            if let Some(lease) = lease {
                // A release that fails leaves the lease to expire; the
                // call itself succeeded.
                let _ = lease.release().await;
            }
            response
        })
    }
}

/// Tells whether a service's response says the upstream asked to slow
/// down, and for how long.
pub trait ThrottleSignal<R> {
    /// `None` if the upstream did not say "slow down"; else the wait it
    /// asked for, if it asked for one.
    fn throttled(&self, response: &R) -> Option<Option<Duration>>;
}

/// Reports nothing: the layer's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReports;

impl<R> ThrottleSignal<R> for NoReports {
    fn throttled(&self, _: &R) -> Option<Option<Duration>> {
        None
    }
}

/// HTTP responses, by the rules of [`ratekeeper_api::throttled_for`]: a
/// 429 (with its `Retry-After`, if any), a 503 with a `Retry-After`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpThrottling;

impl HttpThrottling {
    fn read(status: u16, headers: &http::HeaderMap) -> Option<Option<Duration>> {
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok());
        ratekeeper_api::throttled_for(status, retry_after, std::time::SystemTime::now())
    }
}

impl<B> ThrottleSignal<http::Response<B>> for HttpThrottling {
    fn throttled(&self, response: &http::Response<B>) -> Option<Option<Duration>> {
        Self::read(response.status().as_u16(), response.headers())
    }
}

impl ThrottleSignal<reqwest::Response> for HttpThrottling {
    fn throttled(&self, response: &reqwest::Response) -> Option<Option<Duration>> {
        Self::read(response.status().as_u16(), response.headers())
    }
}
