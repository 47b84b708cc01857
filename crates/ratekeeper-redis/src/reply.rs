//! What the scripts answer (JSON), and its translation into the engine's
//! types. Integers arrive as strings: Lua's JSON encoder keeps only 14
//! significant digits of a number, fewer than a time in microseconds has.

use std::time::Duration;

use ratekeeper_backend::Error;
use ratekeeper_core::{
    AcquireError, Adaptive, AdaptiveView, Counters, LeaseError, LeaseId, LeaseView, LimitError,
    LimitView, Mode, Pause, RequestId, TemplateView, Timestamp, WaiterView,
};
use serde::Deserialize;
use serde::de::{Deserializer, Error as _};

/// An integer sent as a string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Int(pub u64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // A negative figure (a counter decremented past zero) would be a
        // bug in a script; it reads as 0 rather than failing the read.
        if text.starts_with('-') {
            return Ok(Int(0));
        }
        text.parse().map(Int).map_err(D::Error::custom)
    }
}

impl Int {
    /// As a timestamp, from microseconds.
    pub fn micros(self) -> Timestamp {
        Timestamp::from_unix_nanos(self.0.saturating_mul(1000))
    }

    /// As a duration, from microseconds.
    pub fn duration(self) -> Duration {
        Duration::from_micros(self.0)
    }
}

/// Lua's JSON encoder writes an empty list as `{}`.
fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrEmpty<T> {
        List(Vec<T>),
        Empty(serde_json::Map<String, serde_json::Value>),
    }
    match ListOrEmpty::deserialize(deserializer)? {
        ListOrEmpty::List(items) => Ok(items),
        ListOrEmpty::Empty(map) if map.is_empty() => Ok(Vec::new()),
        ListOrEmpty::Empty(_) => Err(D::Error::custom("expected a list")),
    }
}

/// A limit as the scripts describe it.
#[derive(Debug, Clone, Deserialize)]
pub struct Limit {
    name: String,
    slots: Int,
    decay: f64,
    active: bool,
    description: Option<String>,
    held: Int,
    decaying: f64,
    waiting: Int,
    waiting_slots: Int,
    granted: Int,
    granted_slots: Int,
    waited: Int,
    expired: Int,
    denied: Int,
    created: Int,
    updated: Int,
    paused: Option<Paused>,
    template: Option<Template>,
    instance_of: Option<String>,
    adaptive: Option<Adapting>,
}

/// An adaptive limit's settings and the share in force.
#[derive(Debug, Clone, Deserialize)]
struct Adapting {
    decrease_factor: f64,
    recovery_seconds: f64,
    scale: f64,
    effective: f64,
}

impl Limit {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is (one partition's copy of) a template.
    pub fn is_template(&self) -> bool {
        self.template.is_some()
    }
}

/// What a template has, in one partition.
#[derive(Debug, Clone, Deserialize)]
struct Template {
    instances: Int,
    max_instances: Int,
}

/// A limit's pause as the scripts describe it (only while it holds).
#[derive(Debug, Clone, Deserialize)]
struct Paused {
    until: Int,
    since: Int,
    reason: Option<String>,
    reporter: Option<String>,
}

impl From<Limit> for LimitView {
    fn from(l: Limit) -> Self {
        LimitView {
            name: l.name,
            slots: l.slots.0,
            slot_decay_per_second: l.decay,
            active: l.active,
            description: l.description,
            held: l.held.0,
            decaying: l.decaying,
            waiting: l.waiting.0,
            waiting_slots: l.waiting_slots.0,
            counters: Counters {
                granted_total: l.granted.0,
                granted_slots_total: l.granted_slots.0,
                waited_total: l.waited.0,
                expired_total: l.expired.0,
                denied_total: l.denied.0,
            },
            created_at: l.created.micros(),
            updated_at: l.updated.micros(),
            paused: l.paused.map(|p| Pause {
                until: p.until.micros(),
                since: p.since.micros(),
                reason: p.reason,
                reporter: p.reporter,
            }),
            template: l.template.map(|t| TemplateView {
                instances: t.instances.0,
                max_instances: t.max_instances.0,
            }),
            instance_of: l.instance_of,
            adaptive: l.adaptive.map(|a| AdaptiveView {
                adaptive: Adaptive {
                    decrease_factor: a.decrease_factor,
                    recovery_seconds: a.recovery_seconds,
                },
                scale: a.scale,
                effective: a.effective,
            }),
        }
    }
}

/// A lease as the scripts describe it.
#[derive(Debug, Clone, Deserialize)]
pub struct Lease {
    id: String,
    #[serde(deserialize_with = "list")]
    limits: Vec<String>,
    occupy: Int,
    holder: Option<String>,
    granted_at: Int,
    expires: Int,
    ttl: Int,
    /// For a part of a lease across partitions: every limit of the whole
    /// request, in its order.
    #[serde(default)]
    whole: Option<Vec<String>>,
}

impl Lease {
    /// Its id, as the script holds it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// For a part of a lease across partitions: the whole request's limits.
    pub fn whole(&self) -> Option<&[String]> {
        self.whole.as_deref()
    }

    /// As the engine's view; `None` for an id that is not a lease id.
    pub fn view(self) -> Option<LeaseView> {
        Some(LeaseView {
            id: self.id.parse().ok()?,
            limits: self.limits,
            occupy: self.occupy.0,
            holder: self.holder,
            granted_at: self.granted_at.micros(),
            expires_at: self.expires.micros(),
            ttl: self.ttl.duration(),
        })
    }
}

/// A queued request as the scripts describe it.
#[derive(Debug, Clone, Deserialize)]
pub struct Waiter {
    seq: Int,
    #[serde(deserialize_with = "list")]
    limits: Vec<String>,
    occupy: Int,
    mode: String,
    holder: Option<String>,
    enq: Int,
    deadline: Option<Int>,
}

impl From<Waiter> for WaiterView {
    fn from(w: Waiter) -> Self {
        WaiterView {
            request: RequestId(w.seq.0),
            limits: w.limits,
            occupy: w.occupy.0,
            mode: if w.mode == "rate" {
                Mode::RateLimit
            } else {
                Mode::Concurrency
            },
            holder: w.holder,
            enqueued_at: w.enq.micros(),
            deadline: w.deadline.map(Int::micros),
        }
    }
}

/// A grant: a lease (concurrency mode) or nothing to give back (rate mode).
#[derive(Debug, Clone, Deserialize)]
pub struct Grant {
    pub lease: Option<String>,
    pub expires: Option<Int>,
    pub granted_at: Int,
    pub waited: Int,
}

/// A renewed lease's new expiry.
#[derive(Debug, Clone, Deserialize)]
pub struct Renewed {
    pub expires: Int,
}

/// A refusal, with what the message needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Refusal {
    pub err: String,
    pub name: Option<String>,
    pub occupy: Option<Int>,
    pub slots: Option<Int>,
    pub decay: Option<f64>,
    /// The template a key or an instance is of.
    pub template: Option<String>,
    /// A template's max_instances.
    pub max: Option<Int>,
    /// A key refused for want of room in its partition's share of its
    /// template's instances: another partition may lend some.
    #[serde(default)]
    pub share: bool,
}

impl Refusal {
    fn name(&self) -> String {
        self.name.clone().unwrap_or_default()
    }

    /// The backend error this refusal stands for.
    pub fn error(&self) -> Error {
        match self.err.as_str() {
            "limit_exists" => LimitError::AlreadyExists { name: self.name() }.into(),
            "limit_not_found" => AcquireError::LimitNotFound { name: self.name() }.into(),
            "occupy_exceeds_slots" => AcquireError::OccupyExceedsSlots {
                name: self.name(),
                occupy: self.occupy.unwrap_or_default().0,
                slots: self.slots.unwrap_or_default().0,
            }
            .into(),
            "rate_mode_needs_decay" => {
                AcquireError::RateModeNeedsDecay { name: self.name() }.into()
            }
            "decay_too_slow" => LimitError::DecayTooSlow {
                slots: self.slots.unwrap_or_default().0,
                value: self.decay.unwrap_or_default(),
            }
            .into(),
            "would_block" => AcquireError::WouldBlock.into(),
            "limit_is_template" => AcquireError::IsTemplate {
                name: self.name(),
                example: ratekeeper_core::example_key(&self.name()),
            }
            .into(),
            "limit_is_instance" => LimitError::IsInstance {
                name: self.name(),
                template: self.template.clone().unwrap_or_default(),
            }
            .into(),
            "too_many_instances" => AcquireError::TooManyInstances {
                name: self.name(),
                template: self.template.clone().unwrap_or_default(),
                max: self.max.unwrap_or_default().0,
            }
            .into(),
            "limit_deleted" => AcquireError::LimitDeleted { name: self.name() }.into(),
            "lease_revoked" => LeaseError::Revoked.into(),
            "lease_expired" => LeaseError::Expired.into(),
            other => Error::Unavailable {
                reason: format!("the Redis backend answered an unknown refusal {other:?}"),
            },
        }
    }

    /// A "not found" about a limit operation rather than an acquire.
    pub fn limit_error(&self) -> Error {
        match self.err.as_str() {
            "limit_not_found" => LimitError::NotFound { name: self.name() }.into(),
            _ => self.error(),
        }
    }
}

/// One script's answer: `ok`, a refusal, or the state of a queued request.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Reply<T> {
    /// Done.
    Ok { ok: T },
    /// Queued, with its place in the arrival order.
    Queued {
        #[serde(rename = "queued")]
        _place: Int,
    },
    /// Withdrawn from its queues.
    Cancelled {
        #[serde(rename = "cancelled")]
        _cancelled: bool,
    },
    /// Decided already: granted or failed.
    Settled { settled: Outcome },
    /// Still queued.
    Pending {
        #[serde(rename = "pending")]
        _pending: bool,
    },
    /// Unknown: never queued, or forgotten.
    Gone {
        #[serde(rename = "gone")]
        _gone: bool,
    },
    /// Refused.
    Refused(Refusal),
}

/// How a queued request ended, as published on the wake channel.
#[derive(Debug, Clone, Deserialize)]
pub struct Outcome {
    /// The request's token.
    #[serde(default)]
    pub token: String,
    /// Granted.
    pub ok: Option<Grant>,
    /// Failed.
    #[serde(flatten)]
    pub refusal: Option<Refusal>,
}

/// The full picture of one limit.
#[derive(Debug, Clone, Deserialize)]
pub struct Detail {
    pub limit: Limit,
    #[serde(deserialize_with = "list")]
    pub leases: Vec<Lease>,
    #[serde(deserialize_with = "list")]
    pub waiters: Vec<Waiter>,
}

/// Every limit.
#[derive(Debug, Clone, Deserialize)]
pub struct Limits {
    #[serde(deserialize_with = "list")]
    pub limits: Vec<Limit>,
}

/// Leases.
#[derive(Debug, Clone, Deserialize)]
pub struct Leases {
    #[serde(deserialize_with = "list")]
    pub leases: Vec<Lease>,
}

/// The answer of a tick: when the next thing is due (microseconds).
#[derive(Debug, Clone, Deserialize)]
pub struct Due {
    pub next: Option<Int>,
}

/// A change published on the events channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A limit's new state.
    Limit(Limit),
    /// A limit was deleted.
    LimitDeleted(String),
    /// A lease was granted or renewed.
    Lease(Lease),
    /// A lease ended.
    LeaseEnded(String),
}

/// Parses a lease id from a script, which only ever holds ids it was given.
pub fn lease_id(text: &str) -> Result<LeaseId, Error> {
    text.parse().map_err(|_| Error::Unavailable {
        reason: format!("the Redis backend holds a malformed lease id {text:?}"),
    })
}
