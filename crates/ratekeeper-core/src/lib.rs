//! The ratekeeper engine: global concurrency limits and rate limits as a pure
//! state machine.
//!
//! There is no I/O, no clock and no async here. Every operation on
//! [`Engine`] takes the current [`Timestamp`] and returns what happened as
//! values; the outcomes of queued requests are collected as [`Wake`]s, and
//! [`Engine::next_wakeup`] says when the engine must be called back. The
//! in-process limiter, the server and the tests all drive the same engine,
//! the tests with explicit time.
//!
//! # The rules
//!
//! - A **limit** has `slots` and a `slot_decay_per_second`. Its capacity check
//!   is `held + decaying + occupy <= slots`: *held* slots belong to leases and
//!   permits until released; *decaying* slots, occupied in rate mode, free
//!   themselves continuously at the decay rate (a token bucket of capacity
//!   `slots`). 0 slots closes a limit: everything waits.
//! - An **acquire** names one or more limits and a weight `occupy`, and is
//!   granted on all of them at once or not at all.
//! - **Fairness:** every request gets the next number of one global arrival
//!   order, and is granted only when it heads the queue of every active limit
//!   it names and fits on all of them. One order for every queue means
//!   multi-limit requests cannot deadlock, and a heavy request is never
//!   starved by light ones; the price is that a heavy head makes lighter
//!   requests behind it wait.
//! - **Pushed, not polled:** whatever frees capacity (a release, an expiry,
//!   decay, a raised or deactivated limit) grants the eligible heads in the
//!   same step. For decay the engine computes the exact instant enough slots
//!   will have decayed and sets one timer.
//! - **Exact decay:** a limit stores the instant its decaying slots will have
//!   drained rather than a fractional count, so nothing is rounded away when
//!   slots are added; the only rounding is a nanosecond, and always against
//!   admitting. Rate mode admits at most `slots + rate × T` in any window of
//!   length `T`.
//! - **Leases** carry an unguessable id and a TTL (1 s – 24 h, default
//!   30 s). An expired lease frees its slots like a release. Renewing or
//!   releasing a lease that expired says `lease_expired`, one revoked by a
//!   reset says `lease_revoked`: never a silent no-op.
//! - **Permits** are leases without id or TTL, for holders in the same
//!   process (the in-process limiter's guards), which release on drop.
//! - A **pause** ("nothing until then", when the upstream says slow down)
//!   is part of the capacity check: while it lasts nothing fits, the queue
//!   keeps its order, and its head is granted the instant it ends. A later
//!   pause extends it, never shortens it; only a resume ends it early.
//! - **Inactive** limits pass requests through and occupy nothing. Unknown
//!   names fail with `limit_not_found` unless the request sets
//!   `create_if_missing`, which creates them inactive.
//! - **Impossible requests fail at once** and change nothing: `occupy` of 0,
//!   `occupy` above an active limit's nonzero `slots`, rate mode on an active
//!   limit without decay, bad names, bad TTLs.
//! - **Timeouts** bound the whole wait; zero means try once (`would_block`).
//!   A timed-out or cancelled request leaves every queue at once.
//!
//! ```
//! use std::time::Duration;
//! use ratekeeper_core::{AcquireRequest, Admission, Claim, Engine, LimitSpec, Timestamp};
//!
//! let mut engine = Engine::new([7; 32]);
//! let t0 = Timestamp::from_unix_millis(1_000);
//! engine.create_limit(t0, &LimitSpec::concurrency("db", 1)).unwrap();
//!
//! let lease = Claim::Lease { ttl: Duration::from_secs(30), holder: Some("worker-1") };
//! let first = engine.acquire(t0, &AcquireRequest::new(&["db"], lease)).unwrap();
//! let second = engine.acquire(t0, &AcquireRequest::new(&["db"], lease)).unwrap();
//! assert!(matches!(second, Admission::Queued(_)));
//!
//! // Releasing the first lease grants the second request in the same step.
//! let Admission::Granted(grant) = first else { unreachable!() };
//! let ratekeeper_core::Held::Lease(held) = grant.held else { unreachable!() };
//! engine.release(t0, held.id).unwrap();
//! let wakes = engine.take_wakes();
//! assert_eq!(wakes.len(), 1);
//! assert!(wakes[0].outcome.is_ok());
//! ```

mod adaptive;
mod engine;
mod error;
mod journal;
mod lease;
mod limit;
mod name;
mod pause;
mod request;
mod time;

pub use adaptive::{ADAPT_STEP, Adaptive, AdaptiveView, MAX_RECOVERY_SECONDS, MIN_SCALE};
pub use engine::{Engine, InstanceOrder, InstanceQuery};
pub use error::{AcquireError, LeaseError, LimitError, NameError};
pub use journal::{Change, LimitRecord, Records, RestoreError};
pub use lease::{
    DEFAULT_LEASE_TTL, LeaseGrant, LeaseId, LeaseView, MAX_LEASE_TTL, MIN_LEASE_TTL, Pacing,
    ParseLeaseIdError, Permit, Reservation, check_ttl,
};
pub use limit::{
    Counters, DEFAULT_MAX_INSTANCES, LimitPatch, LimitSpec, LimitView, MAX_DECAY,
    MAX_DESCRIPTION_LEN, MAX_DRAIN_SECONDS, MAX_INSTANCES, MAX_SLOTS, TemplateView, check_drain,
};
pub use name::{LimitName, MAX_NAME_LEN, example_key, template_prefix};
pub use pause::{
    DEFAULT_THROTTLE_PAUSE, MAX_PAUSE, MAX_PAUSE_TEXT_LEN, Pause, PauseEnd, PauseSpec,
    ThrottleReport,
};
pub use request::{
    AcquireRequest, Admission, Claim, Grant, Held, MAX_HOLDER_LEN, MAX_NAMES_PER_REQUEST, Mode,
    RequestId, WaiterView, Wake,
};
pub use time::Timestamp;
