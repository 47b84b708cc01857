//! The client handle and its request builders.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ratekeeper_backend::AcquireSpec;
use ratekeeper_core::{DEFAULT_LEASE_TTL, LimitPatch, LimitSpec, Mode, PauseSpec, ThrottleReport};
use tokio::runtime::{Handle, Runtime};
use tracing::Instrument;

use crate::error::Error;
use crate::guard::LeaseGuard;
use crate::transport::{Tls, Transport};
use ratekeeper_api::{
    AcquireAnswer, AcquireBody, InstancePage, Instances, Lease, Limit, LimitDetails, LimitHistory,
};

/// What every clone of a client, and every guard it handed out, shares.
pub(crate) struct Shared {
    pub transport: Transport,
    /// Where renewals and releases on drop run.
    pub runtime: Handle,
    /// The runtime of a blocking client, shut down with the last handle
    /// or guard.
    owned: Option<Runtime>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Without waiting: this may run on any thread, even an async one.
        if let Some(runtime) = self.owned.take() {
            runtime.shutdown_background();
        }
    }
}

/// A connection to ratekeeper: a server (`http://host:port`,
/// `https://host:port`) or an engine in this process (`memory://`, or
/// `memory://NAME` for a separate one; every client of one name in a
/// process shares its limits). Clones share connections.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// Connects from async code; background work runs on the current tokio
    /// runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime; use [`connect_blocking`](Self::connect_blocking) there.
    ///
    /// An `https://` server is trusted by the system's roots, and by the CA
    /// in `RATEKEEPER_CA_CERT` if set; `RATEKEEPER_CLIENT_CERT` names a
    /// client certificate to present (see [`Tls`]).
    pub fn connect(url: &str) -> Result<Self, Error> {
        Client::build(url, None, &Tls::from_env(), Handle::current(), None)
    }

    /// Like [`connect`](Self::connect), sending `token` as the bearer token.
    pub fn connect_with_token(url: &str, token: &str) -> Result<Self, Error> {
        Client::build(
            url,
            Some(token.into()),
            &Tls::from_env(),
            Handle::current(),
            None,
        )
    }

    /// Like [`connect`](Self::connect), with an optional token and the TLS
    /// files given rather than taken from the environment.
    pub fn connect_with(url: &str, token: Option<&str>, tls: &Tls) -> Result<Self, Error> {
        Client::build(url, token.map(Into::into), tls, Handle::current(), None)
    }

    /// Connects from plain threads: the client runs its own small runtime
    /// for background renewals, and requests are made with `.wait()`.
    pub fn connect_blocking(url: &str, token: Option<&str>) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ratekeeper-client")
            .enable_all()
            .build()
            .map_err(|e| Error::Connect {
                url: url.into(),
                reason: format!("cannot start the client runtime: {e}"),
            })?;
        let handle = runtime.handle().clone();
        let tls = Tls::from_env();
        Client::build(url, token.map(Into::into), &tls, handle, Some(runtime))
    }

    fn build(
        url: &str,
        token: Option<String>,
        tls: &Tls,
        runtime: Handle,
        owned: Option<Runtime>,
    ) -> Result<Self, Error> {
        let transport = Transport::new(url, token, tls)?;
        Ok(Client {
            shared: Arc::new(Shared {
                transport,
                runtime,
                owned,
            }),
        })
    }

    /// Asks for a lease on every named limit at once: at most `slots` holders
    /// of each. Await it (or `.wait()` on a blocking client).
    pub fn concurrency<N: Names>(&self, names: N) -> Concurrency<'_> {
        Concurrency {
            client: self,
            spec: spec(names, Mode::Concurrency),
        }
    }

    /// Waits until a rate-limited call may go ahead on every named limit.
    pub fn rate_limit<N: Names>(&self, names: N) -> RateLimit<'_> {
        RateLimit {
            client: self,
            spec: spec(names, Mode::RateLimit),
        }
    }

    /// Creates a limit; returns it as created.
    pub async fn create_limit(&self, spec: LimitSpec) -> Result<Limit, Error> {
        self.shared.transport.create_limit(spec).await
    }

    /// Changes a limit; returns it as changed.
    pub async fn update_limit(&self, name: &str, patch: LimitPatch) -> Result<Limit, Error> {
        self.shared.transport.update_limit(name, patch).await
    }

    /// Deletes a limit.
    pub async fn delete_limit(&self, name: &str) -> Result<(), Error> {
        self.shared.transport.delete_limit(name).await
    }

    /// Revokes every lease on a limit: their guards report them lost.
    /// Returns the limit as reset.
    pub async fn reset_limit(&self, name: &str) -> Result<Limit, Error> {
        self.shared.transport.reset_limit(name).await
    }

    /// A page of a template's instances.
    pub async fn instances(&self, template: &str, page: &InstancePage) -> Result<Instances, Error> {
        self.shared.transport.instances(template, page).await
    }

    /// Pauses a limit: it grants nothing until the pause ends (see
    /// [`PauseSpec`]); a pause that ends later is kept. A client token may
    /// pause. [`report_throttled`](Self::report_throttled) is the shortcut
    /// for an upstream's 429.
    pub async fn pause_limit(&self, name: &str, pause: PauseSpec) -> Result<Limit, Error> {
        self.shared.transport.pause_limit(name, pause).await
    }

    /// Ends a limit's pause now (an admin token's right).
    pub async fn resume_limit(&self, name: &str) -> Result<Limit, Error> {
        self.shared.transport.resume_limit(name).await
    }

    /// Tells every user of `name` that the upstream it protects said "slow
    /// down" (a 429, or a 503 with `Retry-After`), so the whole fleet backs
    /// off instead of each worker finding out on its own: the limit pauses
    /// for `retry_after` (a fixed limit for a second without one), and an
    /// adaptive limit slows down. `reason` is kept with the pause and shown.
    pub async fn report_throttled(
        &self,
        name: &str,
        retry_after: Option<Duration>,
        reason: impl Into<String>,
    ) -> Result<Limit, Error> {
        let report = ThrottleReport {
            retry_after: retry_after.map(|wait| wait.as_secs_f64()),
            reason: Some(reason.into()),
            reporter: Some(reporter()),
        };
        self.report(name, report).await
    }

    /// [`report_throttled`](Self::report_throttled) with every field given.
    pub async fn report(&self, name: &str, report: ThrottleReport) -> Result<Limit, Error> {
        self.shared.transport.report_throttled(name, report).await
    }

    /// Sends one acquire request as `body` says and returns the server's
    /// answer as it is: granted, or queued with a ticket (after
    /// `wait_seconds`), without following the ticket. For tools that
    /// manage tickets themselves; [`concurrency`](Self::concurrency) and
    /// [`rate_limit`](Self::rate_limit) wait, renew and release for you.
    /// Over HTTP only.
    pub async fn acquire_once(&self, body: &AcquireBody) -> Result<AcquireAnswer, Error> {
        self.shared.transport.acquire_once(body).await
    }

    /// The server's metrics, in the OpenMetrics text format. Over HTTP
    /// only.
    pub async fn metrics(&self) -> Result<String, Error> {
        self.shared.transport.metrics().await
    }

    /// A limit with its leases and its queue.
    pub async fn limit_details(&self, name: &str) -> Result<LimitDetails, Error> {
        self.shared.transport.limit_details(name).await
    }

    /// What a limit did over the server's last minutes, one sample a
    /// second (`memory://` keeps none: `tracked` is false).
    pub async fn history(&self, name: &str) -> Result<LimitHistory, Error> {
        self.shared.transport.history(name).await
    }

    /// A limit's current state.
    pub async fn limit(&self, name: &str) -> Result<Limit, Error> {
        self.shared.transport.limit(name).await
    }

    /// Every limit, ordered by name.
    pub async fn limits(&self) -> Result<Vec<Limit>, Error> {
        self.shared.transport.limits().await
    }

    /// Live leases: all of them, or those on one limit.
    pub async fn leases(&self, on: Option<&str>) -> Result<Vec<Lease>, Error> {
        self.shared.transport.leases(on).await
    }

    /// The runtime the client's background work (renewals, releases on
    /// drop) runs on; spawn on it to wait without a blocking call.
    pub fn runtime(&self) -> &Handle {
        &self.shared.runtime
    }

    /// Runs `future` to completion from a plain thread, on the client's
    /// runtime.
    ///
    /// # Panics
    ///
    /// When called from inside an async context.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.shared.runtime.block_on(future)
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// One name or several: `"db"`, `["db", "api"]`, `&names[..]`.
pub trait Names {
    /// The names, owned.
    fn into_names(self) -> Vec<String>;
}

impl Names for &str {
    fn into_names(self) -> Vec<String> {
        vec![self.into()]
    }
}

impl Names for String {
    fn into_names(self) -> Vec<String> {
        vec![self]
    }
}

impl<const N: usize> Names for [&str; N] {
    fn into_names(self) -> Vec<String> {
        self.iter().map(|n| (*n).into()).collect()
    }
}

impl Names for &[&str] {
    fn into_names(self) -> Vec<String> {
        self.iter().map(|n| (*n).into()).collect()
    }
}

impl Names for Vec<String> {
    fn into_names(self) -> Vec<String> {
        self
    }
}

fn spec(names: impl Names, mode: Mode) -> AcquireSpec {
    AcquireSpec {
        names: names.into_names(),
        occupy: 1,
        mode,
        lease_ttl: DEFAULT_LEASE_TTL,
        holder: None,
        timeout: None,
        create_if_missing: false,
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A concurrency request being built; await it for a [`LeaseGuard`].
#[must_use = "a request does nothing until awaited"]
pub struct Concurrency<'c> {
    client: &'c Client,
    spec: AcquireSpec,
}

impl Concurrency<'_> {
    /// Slots to hold on each limit (default 1).
    pub fn occupy(mut self, occupy: u64) -> Self {
        self.spec.occupy = occupy;
        self
    }

    /// Gives up after waiting this long in all (`Error::Timeout`); zero
    /// tries once (`Error::WouldBlock`); `None` (the default) waits forever.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.spec.timeout = timeout.into();
        self
    }

    /// The lease's TTL (default 30 s, 1 s – 24 h). The guard renews it at
    /// about a third of this; a crashed holder's slots return within it.
    pub fn lease(mut self, ttl: Duration) -> Self {
        self.spec.lease_ttl = ttl;
        self
    }

    /// A label shown to people: host, pid, task.
    pub fn holder(mut self, holder: impl Into<String>) -> Self {
        self.spec.holder = Some(holder.into());
        self
    }

    /// Creates missing limits (inactive) instead of failing.
    pub fn create_if_missing(mut self) -> Self {
        self.spec.create_if_missing = true;
        self
    }

    /// Waits for the lease on this thread (blocking clients).
    pub fn wait(self) -> Result<LeaseGuard, Error> {
        let client = self.client;
        client.block_on(self.into_future())
    }
}

impl<'c> IntoFuture for Concurrency<'c> {
    type Output = Result<LeaseGuard, Error>;
    type IntoFuture = BoxFuture<'c, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        let span = acquire_span(&self.spec);
        Box::pin(
            async move {
                let shared = &self.client.shared;
                let granted = shared.transport.acquire(&self.spec).await?;
                let lease = granted
                    .lease
                    .ok_or_else(|| Error::Protocol("a concurrency grant without a lease".into()))?;
                tracing::debug!(lease = %lease.id, waited = ?granted.waited, "granted");
                Ok(LeaseGuard::start(
                    Arc::clone(shared),
                    lease,
                    self.spec.lease_ttl,
                    granted.waited,
                ))
            }
            .instrument(span),
        )
    }
}

/// A rate-limit request being built; await it to wait for the turn.
#[must_use = "a request does nothing until awaited"]
pub struct RateLimit<'c> {
    client: &'c Client,
    spec: AcquireSpec,
}

impl RateLimit<'_> {
    /// Slots to occupy on each limit (default 1): a heavier call.
    pub fn occupy(mut self, occupy: u64) -> Self {
        self.spec.occupy = occupy;
        self
    }

    /// Gives up after waiting this long (`Error::Timeout`); zero tries once;
    /// `None` (the default) waits forever.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.spec.timeout = timeout.into();
        self
    }

    /// Waits for the turn on this thread (blocking clients).
    pub fn wait(self) -> Result<Duration, Error> {
        let client = self.client;
        client.block_on(self.into_future())
    }
}

impl<'c> IntoFuture for RateLimit<'c> {
    /// How long the call waited for its turn.
    type Output = Result<Duration, Error>;
    type IntoFuture = BoxFuture<'c, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        let span = acquire_span(&self.spec);
        Box::pin(
            async move {
                let granted = self.client.shared.transport.acquire(&self.spec).await?;
                tracing::debug!(waited = ?granted.waited, "admitted");
                Ok(granted.waited)
            }
            .instrument(span),
        )
    }
}

/// The span every acquire runs in, so that its waits, retries and grant
/// show up together in the caller's traces.
fn acquire_span(spec: &AcquireSpec) -> tracing::Span {
    tracing::debug_span!("ratekeeper.acquire", names = ?spec.names, occupy = spec.occupy, mode = ?spec.mode)
}

/// Who this process is, for the pauses it reports: its host and pid.
pub fn reporter() -> String {
    format!("{} (pid {})", host_name(), std::process::id())
}

/// This machine's name, for labels people read (lease holders, reporters).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
