//! A held lease: renewed in the background, released on drop, and loud
//! about being lost.

use std::time::Duration;

use ratekeeper_core::{LeaseGrant, LeaseId, Timestamp};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Shared;
use crate::error::Error;
use crate::transport::Transport;

/// Slots held through a lease until the guard is dropped or released.
///
/// The lease is renewed in the background at about a third of its TTL. If it
/// is lost anyway (it expired while the server was unreachable, or a reset
/// revoked it), [`is_lost`](Self::is_lost) turns true and
/// [`lost`](Self::lost) resolves: whatever the lease protected is no longer
/// protected, and the caller should stop.
#[must_use = "dropping the guard releases the slots at once"]
pub struct LeaseGuard {
    shared: std::sync::Arc<Shared>,
    id: LeaseId,
    waited: Duration,
    state: watch::Receiver<LeaseState>,
    renewal: JoinHandle<()>,
    /// False once released explicitly, so that drop does not release again.
    release_on_drop: bool,
}

/// What the renewal task knows about the lease.
#[derive(Debug, Clone)]
enum LeaseState {
    Held { expires_at: Timestamp },
    Lost(Error),
}

impl LeaseGuard {
    pub(crate) fn start(
        shared: std::sync::Arc<Shared>,
        grant: LeaseGrant,
        ttl: Duration,
        waited: Duration,
    ) -> Self {
        let (state_tx, state) = watch::channel(LeaseState::Held {
            expires_at: grant.expires_at,
        });
        let renewal = shared
            .runtime
            .spawn(renew(shared.transport.clone(), grant, ttl, state_tx));
        LeaseGuard {
            shared,
            id: grant.id,
            waited,
            state,
            renewal,
            release_on_drop: true,
        }
    }

    /// The lease's id.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// How long the request waited for its turn.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// When the lease expires unless renewed again (Unix time); `None` once
    /// it is lost.
    pub fn expires_at(&self) -> Option<Timestamp> {
        match &*self.state.borrow() {
            LeaseState::Held { expires_at } => Some(*expires_at),
            LeaseState::Lost(_) => None,
        }
    }

    /// Whether the lease was lost: the slots are no longer held.
    pub fn is_lost(&self) -> bool {
        matches!(*self.state.borrow(), LeaseState::Lost(_))
    }

    /// Resolves when the lease is lost, with why. Race it against the work
    /// the lease protects to stop that work when protection ends.
    pub async fn lost(&self) -> Error {
        let mut state = self.state.clone();
        match state.wait_for(|s| matches!(s, LeaseState::Lost(_))).await {
            Ok(state) => match &*state {
                LeaseState::Lost(err) => err.clone(),
                LeaseState::Held { .. } => unreachable!("waited for a loss"),
            },
            // The renewal task is gone only if the guard is being dropped.
            Err(_) => std::future::pending().await,
        }
    }

    /// Releases the slots now, reporting whether the server still had them
    /// (`LeaseLost` if the lease had already expired or been revoked).
    pub async fn release(mut self) -> Result<(), Error> {
        self.release_on_drop = false;
        self.renewal.abort();
        self.shared.transport.release(self.id).await
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewal.abort();
        if !self.release_on_drop || self.is_lost() {
            return;
        }
        let (transport, id) = (self.shared.transport.clone(), self.id);
        let release = async move {
            if let Err(err) = transport.release(id).await {
                tracing::warn!(%err, lease = %id, "releasing a dropped lease failed; it expires by itself");
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // In async code: release in the background.
            self.shared.runtime.spawn(release);
        } else {
            // On a plain thread: release before going on, so that the slots
            // are free when drop returns and nothing is lost if the client's
            // runtime ends next.
            self.shared.runtime.block_on(release);
        }
    }
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("id", &self.id)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

/// Renews at a third of the TTL. Connection errors are retried every
/// second until the lease would have expired; then it is lost.
async fn renew(
    transport: Transport,
    grant: LeaseGrant,
    ttl: Duration,
    state: watch::Sender<LeaseState>,
) {
    let mut expires_at = grant.expires_at;
    let mut next = ttl / 3;
    loop {
        tokio::time::sleep(next).await;
        match transport.renew(grant.id, None).await {
            Ok(renewed) => {
                expires_at = renewed.expires_at;
                state.send_replace(LeaseState::Held { expires_at });
                next = ttl / 3;
            }
            Err(err) if err.is_transient() && wall_clock() < expires_at => {
                tracing::debug!(%err, lease = %grant.id, "renewal failed; retrying");
                next = Duration::from_secs(1).min(ttl / 3);
            }
            Err(err) => {
                let err = match err {
                    Error::LeaseLost { .. } => err,
                    other => Error::LeaseLost {
                        code: "lease_expired".into(),
                        message: format!("it could not be renewed before it expired: {other}"),
                    },
                };
                tracing::warn!(%err, lease = %grant.id, "lease lost");
                state.send_replace(LeaseState::Lost(err));
                return;
            }
        }
    }
}

/// Wall-clock now, for comparing with lease expiries (which are wall-clock
/// instants from the server).
fn wall_clock() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_unix_nanos(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}
