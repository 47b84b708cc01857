//! Requests and leases on limits of several partitions.
//!
//! Limits in different partitions live in different Redis Cluster slots,
//! so no one call can take them together. A request across partitions is
//! taken in parts, one per partition, in partition order: each part is an
//! ordinary request of that partition (it queues, fairly, behind whoever
//! came first there), and once granted it holds its slots while the next
//! part waits.
//!
//! - Never over a limit: every part is an ordinary grant.
//! - No deadlock: every request takes partitions in the same order and a
//!   waiting part holds nothing in its own partition or later ones, so no
//!   two requests can wait for each other in a cycle.
//! - The price: while a later part waits, the slots of the earlier parts
//!   are held and unused; and in rate mode, the budget an earlier part
//!   spent is not given back if a later part is refused or times out.
//! - Bad input changes nothing: every part is checked before any is taken.
//!   A request that fails once some parts are taken (it times out, its
//!   client leaves, a limit changed meanwhile) gives them back.
//!
//! The parts share one lease id, which names their partitions, so renew
//! and release reach every part, and views show the whole lease.

use std::sync::Arc;
use std::time::Duration;

use ratekeeper_backend::{AcquireSpec, Error, Granted};
use ratekeeper_core::{LeaseError, LeaseGrant, LeaseId, LeaseView, Mode, Timestamp};
use tokio::time::Instant;

use crate::instance::{Inner, PartRequest};
use crate::reply;

/// Takes `spec` on limits spread over `parts` (partition order, each with
/// its names), as lease `id`.
pub(crate) async fn acquire(
    inner: Arc<Inner>,
    spec: &AcquireSpec,
    parts: &[(usize, Vec<&str>)],
    id: LeaseId,
    deadline: Option<Instant>,
) -> Result<Granted, Error> {
    let token = id.to_string();
    let mut request = PartRequest::new(spec, &spec.names, &token);
    request.whole = request.names.clone();
    for (part, names) in parts {
        inner.check_part(*part, request.on(names)).await?;
    }
    let mut taken = TakenParts {
        inner: Arc::clone(&inner),
        token: token.clone(),
        parts: Vec::new(),
        lease_ttl: (spec.mode == Mode::Concurrency).then_some(spec.lease_ttl),
        grants: Vec::new(),
    };
    for (part, names) in parts {
        let waiting = Arc::clone(&inner).acquire_part(*part, request.on(names), deadline);
        match taken.keep_alive_while(waiting).await {
            Ok(granted) => {
                taken.parts.push(*part);
                taken.grants.push(granted);
            }
            Err(err) => {
                taken.give_back().await;
                return Err(err);
            }
        }
    }
    Ok(taken.into_granted(id))
}

/// The parts of a request taken so far. Dropped before the whole request
/// is granted (its client went away), it gives them back.
struct TakenParts {
    inner: Arc<Inner>,
    token: String,
    /// The partitions taken, in order.
    parts: Vec<usize>,
    /// The grant of each part taken, in the same order.
    grants: Vec<Granted>,
    /// The TTL of a lease's parts; `None` in rate mode, where a part holds
    /// nothing that could be given back or kept alive.
    lease_ttl: Option<Duration>,
}

impl TakenParts {
    /// Waits for `waiting` (the next part), renewing the parts taken so
    /// that they outlive a long wait. A part that cannot be renewed (its
    /// limit was reset, or Redis is unreachable) ends the wait.
    async fn keep_alive_while(
        &self,
        waiting: impl Future<Output = Result<Granted, Error>>,
    ) -> Result<Granted, Error> {
        let Some(ttl) = self.lease_ttl.filter(|_| !self.parts.is_empty()) else {
            return waiting.await;
        };
        tokio::pin!(waiting);
        let mut renewal = tokio::time::interval(ttl / 3);
        renewal.tick().await;
        loop {
            tokio::select! {
                granted = &mut waiting => return granted,
                _ = renewal.tick() => {
                    for &part in &self.parts {
                        self.inner.renew_part(part, &self.token, None).await.map_err(|err| {
                            Error::Unavailable {
                                reason: format!(
                                    "a part of the request already taken was lost while \
                                     it waited for the rest ({err}); ask again"
                                ),
                            }
                        })?;
                    }
                }
            }
        }
    }

    /// Gives back the parts taken (in lease mode).
    async fn give_back(&mut self) {
        let parts = std::mem::take(&mut self.parts);
        if self.lease_ttl.is_some() {
            release_parts(&self.inner, &self.token, parts).await;
        }
    }

    /// The whole request's grant: the lease expires with its first part;
    /// it was granted when its last part was and waited as long as its
    /// parts did together.
    fn into_granted(mut self, id: LeaseId) -> Granted {
        self.parts.clear();
        let grants = std::mem::take(&mut self.grants);
        let lease = grants
            .iter()
            .filter_map(|granted| granted.lease.as_ref())
            .map(|lease| lease.expires_at)
            .min()
            .map(|expires_at| LeaseGrant { id, expires_at });
        Granted {
            lease,
            granted_at: grants
                .iter()
                .map(|g| g.granted_at)
                .max()
                .unwrap_or_default(),
            waited: grants.iter().map(|g| g.waited).sum(),
        }
    }
}

impl Drop for TakenParts {
    fn drop(&mut self) {
        if self.lease_ttl.is_none() || self.parts.is_empty() {
            return;
        }
        let (inner, token) = (Arc::clone(&self.inner), self.token.clone());
        let parts = std::mem::take(&mut self.parts);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release_parts(&inner, &token, parts).await });
        }
    }
}

/// Releases the parts of `token` taken in `parts`; a part that cannot be
/// released expires by its TTL.
async fn release_parts(inner: &Inner, token: &str, parts: Vec<usize>) {
    for part in parts {
        if let Err(err) = inner.release_part(part, token).await {
            tracing::warn!(%err, "giving back part of a request failed; it expires by its TTL");
        }
    }
}

/// Renews every part of lease `id`; answers when the first part expires.
/// A lease with a part gone (expired, revoked) is gone: its other parts
/// are given back.
pub(crate) async fn renew(
    inner: &Inner,
    id: LeaseId,
    ttl: Option<Duration>,
) -> Result<Timestamp, Error> {
    let parts = inner.layout.parts_of(id);
    let token = id.to_string();
    let renewals = parts
        .iter()
        .map(|&part| inner.renew_part(part, &token, ttl));
    let mut renewed = futures_util::future::join_all(renewals).await;
    // A lease's being gone says more than a part's being unreachable.
    if let Some(gone) = renewed
        .iter()
        .position(|r| matches!(r, Err(Error::Lease(_))))
    {
        let alive = parts.iter().zip(&renewed).filter(|(_, r)| r.is_ok());
        let alive: Vec<usize> = alive.map(|(&part, _)| part).collect();
        release_parts(inner, &token, alive).await;
        return renewed.swap_remove(gone);
    }
    let expiries = renewed.into_iter().collect::<Result<Vec<_>, _>>()?;
    expiries
        .into_iter()
        .min()
        .ok_or_else(|| LeaseError::Expired.into())
}

/// Releases every part of lease `id`; refused if any part was gone.
pub(crate) async fn release(inner: &Inner, id: LeaseId) -> Result<(), Error> {
    let parts = inner.layout.parts_of(id);
    if parts.is_empty() {
        return Err(LeaseError::Expired.into());
    }
    let token = id.to_string();
    let releases = parts.iter().map(|&part| inner.release_part(part, &token));
    futures_util::future::join_all(releases)
        .await
        .into_iter()
        .collect()
}

/// `found` (leases read in some partitions, with the partition each was
/// read in) as whole leases: a lease's parts are joined into one view,
/// parts not among `found` read from their partitions.
pub(crate) async fn whole_leases(
    inner: &Inner,
    found: Vec<(usize, reply::Lease)>,
) -> Result<Vec<LeaseView>, Error> {
    let mut leases: Vec<Vec<(usize, reply::Lease)>> = Vec::new();
    for (part, lease) in found {
        match leases
            .iter_mut()
            .find(|parts| parts[0].1.id() == lease.id())
        {
            Some(parts) => parts.push((part, lease)),
            None => leases.push(vec![(part, lease)]),
        }
    }
    let mut views = Vec::with_capacity(leases.len());
    for mut parts in leases {
        let Ok(id) = parts[0].1.id().parse::<LeaseId>() else {
            continue;
        };
        for part in inner.layout.parts_of(id) {
            if parts.iter().any(|(seen, _)| *seen == part) {
                continue;
            }
            let rest: reply::Leases = inner
                .read(
                    part,
                    &[("what", "lease"), ("name", &id.to_string()), ("query", "")],
                )
                .await?;
            parts.extend(rest.leases.into_iter().map(|lease| (part, lease)));
        }
        views.extend(whole(parts.into_iter().map(|(_, lease)| lease).collect()));
    }
    views.sort_by_key(|view| view.granted_at);
    Ok(views)
}

/// One view of a lease's parts: its limits in the request's order, granted
/// when its last part was, expiring with its first.
fn whole(parts: Vec<reply::Lease>) -> Option<LeaseView> {
    let order = parts
        .iter()
        .find_map(|part| part.whole())
        .map(<[String]>::to_vec);
    let mut views = parts.into_iter().filter_map(reply::Lease::view);
    let mut whole = views.next()?;
    for part in views {
        whole.limits.extend(part.limits);
        whole.granted_at = whole.granted_at.max(part.granted_at);
        whole.expires_at = whole.expires_at.min(part.expires_at);
    }
    if let Some(order) = order {
        whole
            .limits
            .sort_by_key(|name| order.iter().position(|n| n == name));
    }
    Some(whole)
}
