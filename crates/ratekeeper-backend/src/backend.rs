//! The operations a server performs, as one trait that every backend
//! implements whole.

use std::future::Future;
use std::time::Duration;

use ratekeeper_core::{
    AcquireError, AcquireRequest, Claim, InstanceQuery, LeaseError, LeaseGrant, LeaseId, LeaseView,
    LimitError, LimitPatch, LimitSpec, LimitView, Mode, PauseSpec, ThrottleReport, Timestamp,
    WaiterView,
};
use tokio::sync::broadcast;

/// An acquire, with owned fields so that it can cross into a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct AcquireSpec {
    /// The limits, each at most once.
    pub names: Vec<String>,
    /// Slots to occupy on each; at least 1.
    pub occupy: u64,
    /// Hold a lease (concurrency) or occupy decaying slots (rate limit).
    pub mode: Mode,
    /// The lease's TTL, in concurrency mode.
    pub lease_ttl: Duration,
    /// A label for people, in concurrency mode.
    pub holder: Option<String>,
    /// How long to wait in all: `None` waits forever, zero tries once.
    pub timeout: Option<Duration>,
    /// Create missing limits (inactive) instead of failing.
    pub create_if_missing: bool,
}

impl AcquireSpec {
    /// The engine's request for this acquire, over `names`: this spec's
    /// names borrowed (`spec.names.iter().map(String::as_str)`).
    pub fn request<'a>(&'a self, names: &'a [&'a str]) -> AcquireRequest<'a> {
        let claim = match self.mode {
            Mode::Concurrency => Claim::Lease {
                ttl: self.lease_ttl,
                holder: self.holder.as_deref(),
            },
            Mode::RateLimit => Claim::Rate,
        };
        AcquireRequest {
            names,
            occupy: self.occupy,
            claim,
            timeout: self.timeout,
            create_if_missing: self.create_if_missing,
        }
    }
}

/// A granted acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// The lease, in concurrency mode.
    pub lease: Option<LeaseGrant>,
    /// When it was granted.
    pub granted_at: Timestamp,
    /// How long it waited in the queue.
    pub waited: Duration,
}

/// One limit with who holds it and who waits for it.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitDetail {
    /// The limit.
    pub limit: LimitView,
    /// Live leases on it, oldest first.
    pub leases: Vec<LeaseView>,
    /// Queued requests, in queue order.
    pub waiters: Vec<WaiterView>,
}

/// A change of state, for live views.
#[derive(Debug, Clone, PartialEq)]
// Most events are limit changes: boxing them would allocate for each to
// save space on the rarer lease events.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A limit was created or its state changed.
    Limit(LimitView),
    /// A limit was deleted.
    LimitDeleted(String),
    /// A lease was granted or renewed.
    Lease(LeaseView),
    /// A lease was released, expired or revoked.
    LeaseEnded(LeaseId),
    /// Changes may have been missed (the backend's own feed of changes was
    /// cut off for a while): whoever mirrors the state reads it afresh.
    Missed,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A limit operation was refused.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// An acquire was refused or its wait failed.
    #[error(transparent)]
    Acquire(#[from] AcquireError),
    /// A renew or release was refused.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The backend cannot serve now (its store failed, or it is stopping).
    #[error("the service is unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The backend does not do this yet.
    #[error("{what} is not supported by this store yet")]
    Unsupported {
        /// What was asked for.
        what: String,
    },
    /// The backend's configuration does not fit its store (another key
    /// layout, another partition count, a value out of range): waiting
    /// does not help, changing the configuration does.
    #[error("the store cannot be used as configured: {reason}")]
    Misconfigured {
        /// What does not fit, and what to do.
        reason: String,
    },
}

impl Error {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Limit(e) => e.code(),
            Error::Acquire(e) => e.code(),
            Error::Lease(e) => e.code(),
            Error::Unavailable { .. } => "unavailable",
            Error::Misconfigured { .. } => "misconfigured",
            Error::Unsupported { .. } => "unsupported",
        }
    }

    /// The request field at fault, if one is: a limit definition's.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Error::Limit(limit) => limit.field(),
            _ => None,
        }
    }
}

/// The answer to an acquire: a future that resolves once the request is
/// granted or fails. Dropping it before then withdraws the request.
pub type Waiting = std::pin::Pin<Box<dyn Future<Output = Result<Granted, Error>> + Send>>;

/// Everything a server asks of its state, one whole operation per method,
/// so that a backend can perform each atomically (under one lock, or as one
/// script on a shared store). An answer that reports a change is given only
/// once the change is as durable as the backend promises.
pub trait Backend: Send + Sync + 'static {
    /// Creates a limit.
    fn create_limit(
        &self,
        spec: LimitSpec,
    ) -> impl Future<Output = Result<LimitView, Error>> + Send;
    /// Changes a limit.
    fn update_limit(
        &self,
        name: &str,
        patch: LimitPatch,
    ) -> impl Future<Output = Result<LimitView, Error>> + Send;
    /// Deletes a limit; its waiters fail with `limit_deleted`.
    fn delete_limit(&self, name: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Revokes every lease on a limit and clears its decaying slots.
    fn reset_limit(&self, name: &str) -> impl Future<Output = Result<LimitView, Error>> + Send;
    /// Pauses a limit until `pause` ends, or keeps a longer pause (see
    /// [`Engine::pause`](ratekeeper_core::Engine::pause)).
    fn pause_limit(
        &self,
        name: &str,
        pause: PauseSpec,
    ) -> impl Future<Output = Result<LimitView, Error>> + Send;
    /// Takes a report that the upstream behind a limit said "slow down"
    /// (see [`Engine::report_throttled`](ratekeeper_core::Engine::report_throttled)).
    fn report_throttled(
        &self,
        name: &str,
        report: ThrottleReport,
    ) -> impl Future<Output = Result<LimitView, Error>> + Send;
    /// Ends a limit's pause now.
    fn resume_limit(&self, name: &str) -> impl Future<Output = Result<LimitView, Error>> + Send;
    /// Every limit, ordered by name.
    fn limits(&self) -> impl Future<Output = Result<Vec<LimitView>, Error>> + Send;
    /// The limits among `names` that exist, as they are now: what a
    /// sampler of a few limits among many reads. By default, the whole list
    /// read and filtered; a backend that can read limits by name does less.
    fn limits_named(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<LimitView>, Error>> + Send {
        async move {
            let mut limits = self.limits().await?;
            limits.retain(|limit| names.contains(&limit.name));
            Ok(limits)
        }
    }
    /// A page of a template's instances.
    fn instances(
        &self,
        template: &str,
        query: InstanceQuery<'_>,
    ) -> impl Future<Output = Result<Vec<LimitView>, Error>> + Send;
    /// One limit with its leases and waiters.
    fn limit(&self, name: &str) -> impl Future<Output = Result<LimitDetail, Error>> + Send;
    /// Live leases, all or those on one limit.
    fn leases(
        &self,
        on: Option<&str>,
    ) -> impl Future<Output = Result<Vec<LeaseView>, Error>> + Send;
    /// Asks for slots; the future resolves when the request is decided.
    fn acquire(&self, spec: AcquireSpec) -> Waiting;
    /// Extends a lease by `ttl` (its own TTL if `None`).
    fn renew(
        &self,
        id: LeaseId,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<LeaseGrant, Error>> + Send;
    /// Releases a lease.
    fn release(&self, id: LeaseId) -> impl Future<Output = Result<(), Error>> + Send;
    /// Changes of state from now on, for live views: every change made
    /// after this returns is delivered. A receiver that falls behind is told
    /// it lagged and should read the state afresh.
    fn events(&self) -> impl Future<Output = Result<broadcast::Receiver<Event>, Error>> + Send;
    /// Waits until every change made so far is durable.
    fn flush(&self) -> impl Future<Output = Result<(), Error>> + Send;
    /// Whether the backend can serve now, checked for real: its store
    /// writable, its Redis answering. `Unavailable` says why not.
    fn health(&self) -> impl Future<Output = Result<(), Error>> + Send;
}
