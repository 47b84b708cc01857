//! Quotas: how much one token may keep on the server at once — parked
//! tickets and live leases — so that a client token cannot fill the
//! server's memory, and the server-wide bound on parked tickets that also
//! holds on a server without tokens.
//!
//! Counted by this server process: with several servers on one Redis
//! store, each counts what was asked of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ratekeeper_core::LeaseId;
use serde::Deserialize;

use crate::error::ApiError;

/// The longest a lease lives without renewal, in milliseconds: a lease
/// granted now expiring at `t` tells that every lease expiring before
/// `t - MAX_TTL_MILLIS` is over.
const MAX_TTL_MILLIS: u64 = ratekeeper_core::MAX_LEASE_TTL.as_millis() as u64;
use ratekeeper_api::ErrorCode;

/// How much one token may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct QuotaLimits {
    /// Tickets parked at once (acquires still queued after their request's
    /// wait).
    pub max_tickets: usize,
    /// Leases held at once, until released or expired.
    pub max_leases: usize,
}

impl QuotaLimits {
    /// No bound but the server's own.
    pub const UNBOUNDED: QuotaLimits = QuotaLimits {
        max_tickets: usize::MAX,
        max_leases: usize::MAX,
    };
}

impl Default for QuotaLimits {
    /// What a client token may hold unless configured otherwise.
    fn default() -> Self {
        QuotaLimits {
            max_tickets: 10_000,
            max_leases: 100_000,
        }
    }
}

/// What one token holds now, against its limits.
#[derive(Debug)]
pub struct Quota {
    limits: QuotaLimits,
    tickets: AtomicUsize,
    /// The leases this token was granted, with their expiry (Unix
    /// milliseconds) as last answered; expired ones are forgotten when
    /// the count reaches the limit.
    leases: Mutex<HashMap<LeaseId, u64>>,
}

impl Quota {
    /// Nothing held yet.
    pub fn new(limits: QuotaLimits) -> Arc<Self> {
        Arc::new(Quota {
            limits,
            tickets: AtomicUsize::new(0),
            leases: Mutex::new(HashMap::new()),
        })
    }

    /// Refuses a new acquire while the token holds its quota of leases or
    /// of tickets; `now` in Unix milliseconds.
    pub fn check(&self, now: u64) -> Result<(), ApiError> {
        if self.tickets.load(Ordering::Relaxed) >= self.limits.max_tickets {
            return Err(exceeded(
                self.limits.max_tickets,
                "tickets",
                "wait on or cancel",
            ));
        }
        let mut leases = self.lock();
        if leases.len() >= self.limits.max_leases {
            leases.retain(|_, expires| *expires > now);
            if leases.len() >= self.limits.max_leases {
                return Err(exceeded(self.limits.max_leases, "leases", "release"));
            }
        }
        Ok(())
    }

    /// Counts a ticket parked for this token, until the hold is dropped.
    pub fn park(self: &Arc<Self>) -> Result<TicketHold, ApiError> {
        let parked = self.tickets.fetch_add(1, Ordering::Relaxed);
        let hold = TicketHold(Arc::clone(self));
        if parked >= self.limits.max_tickets {
            return Err(exceeded(
                self.limits.max_tickets,
                "tickets",
                "wait on or cancel",
            ));
        }
        Ok(hold)
    }

    /// Counts a lease granted to this token, until `expires_at`. A token
    /// without a lease quota keeps no count (which would only grow).
    pub fn granted(&self, id: LeaseId, expires_at: u64) {
        if self.limits.max_leases == usize::MAX {
            return;
        }
        let mut leases = self.lock();
        // Forget expired ones now and then, so that the count stays near
        // what is held even when nobody asks for more.
        if leases.len() >= 1024 && leases.len().is_power_of_two() {
            leases.retain(|_, expires| *expires > expires_at.saturating_sub(MAX_TTL_MILLIS));
        }
        leases.insert(id, expires_at);
    }

    /// Moves the expiry of one of this token's leases.
    pub fn renewed(&self, id: LeaseId, expires_at: u64) {
        if let Some(expires) = self.lock().get_mut(&id) {
            *expires = expires_at;
        }
    }

    /// A lease released (or found gone) no longer counts.
    pub fn ended(&self, id: LeaseId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseId, u64>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn exceeded(limit: usize, what: &str, remedy: &str) -> ApiError {
    ApiError::new(
        ErrorCode::QuotaExceeded,
        format!(
            "this token holds {limit} {what}, its quota (max_{what}): {remedy} some before \
             asking for more"
        ),
    )
}

/// One parked ticket counted against a token; dropping it gives the count
/// back.
#[derive(Debug)]
pub struct TicketHold(Arc<Quota>);

impl TicketHold {
    /// The token's quota.
    pub fn quota(&self) -> &Arc<Quota> {
        &self.0
    }
}

impl Drop for TicketHold {
    fn drop(&mut self) {
        self.0.tickets.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratekeeper_api::ErrorCode;

    fn id(n: u128) -> LeaseId {
        LeaseId::from_bytes(n.to_be_bytes())
    }

    #[test]
    fn tickets_count_until_their_hold_is_dropped() {
        let quota = Quota::new(QuotaLimits {
            max_tickets: 2,
            max_leases: 10,
        });
        let first = quota.park().unwrap();
        let _second = quota.park().unwrap();
        assert_eq!(quota.park().unwrap_err().code, ErrorCode::QuotaExceeded);
        assert!(quota.check(0).is_err());
        drop(first);
        assert!(quota.check(0).is_ok());
        assert!(quota.park().is_ok());
    }

    #[test]
    fn a_token_without_a_lease_quota_keeps_no_count() {
        let quota = Quota::new(QuotaLimits::UNBOUNDED);
        for n in 0..10_000 {
            quota.granted(id(n), 1_000);
        }
        assert!(quota.lock().is_empty());
    }

    #[test]
    fn leases_count_until_released_or_expired() {
        let quota = Quota::new(QuotaLimits {
            max_tickets: 10,
            max_leases: 2,
        });
        quota.granted(id(1), 1_000);
        quota.granted(id(2), 5_000);
        assert!(quota.check(500).is_err());
        // The first expired at 1 000: it no longer counts.
        assert!(quota.check(1_000).is_ok());
        quota.granted(id(3), 5_000);
        assert!(quota.check(2_000).is_err());
        quota.ended(id(3));
        assert!(quota.check(2_000).is_ok());
        // A renewal keeps a lease counted past its first expiry.
        quota.granted(id(4), 3_000);
        quota.renewed(id(4), 9_000);
        assert!(quota.check(4_000).is_err());
    }
}
