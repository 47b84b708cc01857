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
#[derive(Clone, Debug)]
pub struct LimitLayer {
    client: Client,
    concurrency: Vec<String>,
    rate: Vec<String>,
    timeout: Option<Duration>,
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

impl<S> Layer<S> for LimitLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            limits: self.clone(),
        }
    }
}

/// A service behind global limits; see [`LimitLayer`].
#[derive(Clone, Debug)]
pub struct Limited<S> {
    inner: S,
    limits: LimitLayer,
}

impl<S, Request> Service<Request> for Limited<S>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Into<BoxError>,
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
            if let Some(lease) = lease {
                // A release that fails leaves the lease to expire; the
                // call itself succeeded.
                let _ = lease.release().await;
            }
            response
        })
    }
}
