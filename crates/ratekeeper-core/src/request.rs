//! Acquire requests, their outcomes, and the queue entries they become.

use std::time::Duration;

use smallvec::SmallVec;

use crate::error::AcquireError;
use crate::lease::{LeaseGrant, Permit, check_ttl};
use crate::limit::LimitId;
use crate::time::Timestamp;

/// The most limits one request may name.
pub const MAX_NAMES_PER_REQUEST: usize = 32;
/// The longest holder label allowed, in characters.
pub const MAX_HOLDER_LEN: usize = 256;

/// A request's place in the global arrival order: every acquire gets the next
/// number, and every queue is ordered by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Whether a grant holds slots until released or occupies decaying slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Hold slots until released (or the lease expires).
    Concurrency,
    /// Occupy slots that decay by themselves; nothing is released.
    RateLimit,
}

/// What a request asks to hold once granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim<'a> {
    /// Concurrency mode with a lease: an id and a TTL, for holders that live
    /// in another process and may crash.
    Lease {
        /// The lease's TTL.
        ttl: Duration,
        /// A label for people (host, pid, task).
        holder: Option<&'a str>,
    },
    /// Concurrency mode with a permit: held by a guard in this process.
    Permit,
    /// Rate mode: occupy decaying slots.
    Rate,
}

impl Claim<'_> {
    /// The mode this claim acquires in.
    pub fn mode(&self) -> Mode {
        match self {
            Claim::Lease { .. } | Claim::Permit => Mode::Concurrency,
            Claim::Rate => Mode::RateLimit,
        }
    }
}

/// A request for slots on one or more limits, all at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquireRequest<'a> {
    /// The limits, each at most once.
    pub names: &'a [&'a str],
    /// How many slots to occupy on each; at least 1.
    pub occupy: u64,
    /// What to hold once granted.
    pub claim: Claim<'a>,
    /// How long to wait at most: `None` waits forever, zero tries once.
    pub timeout: Option<Duration>,
    /// Create missing limits (inactive) instead of failing.
    pub create_if_missing: bool,
}

impl<'a> AcquireRequest<'a> {
    /// A request for one slot on each of `names`, waiting forever.
    pub fn new(names: &'a [&'a str], claim: Claim<'a>) -> Self {
        AcquireRequest {
            names,
            occupy: 1,
            claim,
            timeout: None,
            create_if_missing: false,
        }
    }

    /// Checks what does not depend on any limit: how many names, `occupy`,
    /// and a lease's TTL and holder. (The engine checks each name as it
    /// looks it up, [`check_repeat`](Self::check_repeat) first;
    /// [`check_names`](Self::check_names) checks them all, for a store that
    /// cannot look them up first.)
    pub fn check(&self) -> Result<(), AcquireError> {
        let names = self.names;
        if names.is_empty() || names.len() > MAX_NAMES_PER_REQUEST {
            return Err(AcquireError::NameCount { count: names.len() });
        }
        if self.occupy == 0 {
            return Err(AcquireError::InvalidOccupy);
        }
        if let Claim::Lease { ttl, holder } = self.claim {
            check_ttl(ttl).map_err(|_| AcquireError::InvalidLeaseTtl {
                millis: ttl.as_millis(),
            })?;
            let len = holder.map_or(0, |h| h.chars().count());
            if len > MAX_HOLDER_LEN {
                return Err(AcquireError::HolderTooLong { len });
            }
        }
        Ok(())
    }
}

impl AcquireRequest<'_> {
    /// Refuses the `i`-th name if an earlier one is the same.
    pub fn check_repeat(&self, i: usize) -> Result<(), AcquireError> {
        let name = self.names[i];
        if self.names[..i].contains(&name) {
            return Err(AcquireError::DuplicateName { name: name.into() });
        }
        Ok(())
    }

    /// [`check`](Self::check), then each name in turn: not repeated, and
    /// of the allowed form (what the engine checks as it looks names up).
    pub fn check_names(&self) -> Result<(), AcquireError> {
        self.check()?;
        for (i, name) in self.names.iter().enumerate() {
            self.check_repeat(i)?;
            crate::name::validate(name)?;
        }
        Ok(())
    }
}

/// What a granted request holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// Nothing to give back: a rate-mode grant.
    Nothing,
    /// A lease to renew and release.
    Lease(LeaseGrant),
    /// A permit to release.
    Permit(Permit),
}

/// A granted request.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    /// The request.
    pub request: RequestId,
    /// When it was granted.
    pub granted_at: Timestamp,
    /// How long it waited in the queue.
    pub waited: Duration,
    /// What it holds.
    pub held: Held,
}

/// The immediate answer to an acquire.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Granted at once.
    Granted(Grant),
    /// Queued: a [`Wake`] for this request will come out of the engine later,
    /// unless it is cancelled first.
    Queued(RequestId),
}

/// The end of a queued request's wait, to be delivered to whoever waits.
#[derive(Debug, PartialEq, Eq)]
pub struct Wake {
    /// The request.
    pub request: RequestId,
    /// Granted, or why not (timed out, limit deleted, limit changed so the
    /// request can never fit).
    pub outcome: Result<Grant, AcquireError>,
}

/// A read-only picture of a queued request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaiterView {
    /// The request.
    pub request: RequestId,
    /// The limits it waits on.
    pub limits: Vec<String>,
    /// Slots it asks for on each.
    pub occupy: u64,
    /// Its mode.
    pub mode: Mode,
    /// The holder's label, for lease requests.
    pub holder: Option<String>,
    /// When it arrived.
    pub enqueued_at: Timestamp,
    /// When it gives up, if ever.
    pub deadline: Option<Timestamp>,
}

/// What a queued request will hold once granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PendingClaim {
    Lease {
        ttl: Duration,
        holder: Option<Box<str>>,
    },
    Permit,
    Rate,
}

impl PendingClaim {
    pub fn from_claim(claim: &Claim<'_>) -> Self {
        match *claim {
            Claim::Lease { ttl, holder } => PendingClaim::Lease {
                ttl,
                holder: holder.map(Into::into),
            },
            Claim::Permit => PendingClaim::Permit,
            Claim::Rate => PendingClaim::Rate,
        }
    }

    pub fn mode(&self) -> Mode {
        match self {
            PendingClaim::Lease { .. } | PendingClaim::Permit => Mode::Concurrency,
            PendingClaim::Rate => Mode::RateLimit,
        }
    }
}

/// A request: queued, or being granted at once.
#[derive(Debug)]
pub(crate) struct Waiter {
    /// Every limit named, active or not, in the order given.
    pub limits: SmallVec<[LimitId; 2]>,
    pub occupy: u64,
    pub claim: PendingClaim,
    pub enqueued_at: Timestamp,
    pub deadline: Option<Timestamp>,
    /// The instant of this waiter's pending decay timer, if one is set. Set
    /// only while it heads every active queue it is in and waits for nothing
    /// but decay, so at most one timer per limit is ever pending.
    pub ready_timer: Option<Timestamp>,
}
