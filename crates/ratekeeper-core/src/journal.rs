//! What must survive a restart, as records, and the changes to them.
//!
//! A store that wants to persist an engine turns journaling on
//! ([`Engine::enable_journal`](crate::Engine::enable_journal)), takes the
//! [`Change`]s after every operation, writes them in order, and later
//! rebuilds the engine with [`Engine::restore`](crate::Engine::restore).
//! Only what an acknowledged answer depends on is recorded: limit
//! definitions with their decaying slots and counters, and live leases
//! (stored as their [`LeaseView`]).
//! Queued requests are not: their callers have not been answered, and they
//! lose their connection with the server anyway.

use crate::lease::{LeaseId, LeaseView};
use crate::limit::Counters;
use crate::pause::Pause;
use crate::time::Timestamp;

/// A limit as it is stored.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LimitRecord {
    /// Its name.
    pub name: String,
    /// Its slot count.
    pub slots: u64,
    /// Its decay rate, in slots per second.
    pub slot_decay_per_second: f64,
    /// Whether it enforces.
    pub active: bool,
    /// Its description.
    pub description: Option<String>,
    /// The instant its decaying slots will have decayed.
    pub drained_at: Timestamp,
    /// Its running totals.
    pub counters: Counters,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its definition last changed.
    pub updated_at: Timestamp,
    /// Its latest pause (absent in records written before pauses existed).
    #[cfg_attr(feature = "serde", serde(default))]
    pub pause: Option<Pause>,
    /// For a template: how many instances it may have.
    #[cfg_attr(feature = "serde", serde(default))]
    pub max_instances: Option<u64>,
    /// For an instance: its template's name.
    #[cfg_attr(feature = "serde", serde(default))]
    pub instance_of: Option<String>,
    /// How it adapts to throttling reports, if it does.
    #[cfg_attr(feature = "serde", serde(default))]
    pub adaptive: Option<crate::Adaptive>,
    /// The share of its configured value in force, if lowered.
    #[cfg_attr(feature = "serde", serde(default))]
    pub scale: Option<f64>,
}

/// One change to the stored state. Applied in order, the changes taken after
/// each operation keep a copy equal to [`Engine::records`](crate::Engine::records).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Change {
    /// A limit was created or changed: store this record under its name.
    Limit(LimitRecord),
    /// A limit was deleted.
    LimitDeleted(String),
    /// A lease was granted or renewed, or lost a deleted limit: store it
    /// whole under its id.
    Lease(LeaseView),
    /// A lease was released, expired or revoked.
    LeaseDeleted(LeaseId),
}

/// Everything an engine persists, as of one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Records {
    /// Every limit, ordered by name.
    pub limits: Vec<LimitRecord>,
    /// Every live lease, ordered by id.
    pub leases: Vec<LeaseView>,
}

/// A record could not be restored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// A stored limit breaks a rule of limits (name, slots, decay,
    /// description) or its name appears twice.
    #[error("stored limit {name:?} is invalid: {reason}")]
    InvalidLimit {
        /// The stored name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored lease holds no slots or appears twice.
    #[error("stored lease {id} is invalid: {reason}")]
    InvalidLease {
        /// Its id.
        id: LeaseId,
        /// What is wrong.
        reason: String,
    },
}
