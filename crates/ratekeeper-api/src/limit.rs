//! Limits as the API shows and takes them: a new limit, a change to one,
//! a limit with its state, the leases on it and the requests waiting for
//! it.

use ratekeeper_core::{
    Adaptive, Counters, LeaseView, LimitError, LimitPatch, LimitSpec, LimitView, Pause, PauseEnd,
    PauseSpec, Timestamp, WaiterView,
};
use serde::{Deserialize, Serialize};

use crate::acquire::AcquireMode;
#[cfg(feature = "openapi")]
use crate::names::LimitName;
use crate::names::{whole, whole_or_null};

/// A new limit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateLimit {
    /// 1–128 characters of `A-Z a-z 0-9 . _ - :`, other than `.` and `..`.
    #[cfg_attr(feature = "openapi", schema(value_type = LimitName))]
    pub name: String,
    /// How many slots may be occupied at once; 0 closes the limit.
    #[serde(deserialize_with = "whole")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_000_u64)
    )]
    pub slots: u64,
    /// Slots freed per second in rate mode; 0 for a pure concurrency limit.
    /// A full load must decay within 100 years (`slots / this` at most
    /// 3 153 600 000).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000_000))]
    pub slot_decay_per_second: f64,
    /// Whether it enforces (default true).
    #[serde(default = "yes")]
    pub active: bool,
    /// Free text for people.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: Option<String>,
    /// For a template (a name ending in `*`): how many instances it may
    /// have at once (default 100 000, at most 10 000 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub max_instances: Option<u64>,
    /// Adapt to the upstream's "slow down" reports: `true` (the default
    /// settings), `false`, or the settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveSetting>,
}

/// Whether and how a limit adapts to throttling reports (each report
/// multiplies its rate or slots by `decrease_factor`, which then climbs
/// back to the configured value over `recovery_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum AdaptiveSetting {
    /// `true`: adaptive with the default settings; `false`: fixed.
    Switch(bool),
    /// Adaptive with these settings.
    Settings(AdaptiveSettings),
}

/// An adaptive limit's settings.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSettings {
    /// Each report multiplies the rate or slots in force by this: above 0,
    /// below 1 (default 0.7).
    #[serde(default = "default_factor")]
    pub decrease_factor: f64,
    /// Seconds to climb from nothing back to the configured value: 1 to
    /// 86 400 (default 30).
    #[serde(default = "default_recovery")]
    pub recovery_seconds: f64,
}

fn default_factor() -> f64 {
    Adaptive::default().decrease_factor
}

fn default_recovery() -> f64 {
    Adaptive::default().recovery_seconds
}

impl AdaptiveSetting {
    /// The engine's setting: `None` for a fixed limit.
    pub fn adaptive(self) -> Option<Adaptive> {
        match self {
            AdaptiveSetting::Switch(false) => None,
            AdaptiveSetting::Switch(true) => Some(Adaptive::default()),
            AdaptiveSetting::Settings(s) => Some(Adaptive {
                decrease_factor: s.decrease_factor,
                recovery_seconds: s.recovery_seconds,
            }),
        }
    }

    fn from_engine(adaptive: Option<Adaptive>) -> Self {
        match adaptive {
            None => AdaptiveSetting::Switch(false),
            Some(a) => AdaptiveSetting::Settings(AdaptiveSettings {
                decrease_factor: a.decrease_factor,
                recovery_seconds: a.recovery_seconds,
            }),
        }
    }
}

fn yes() -> bool {
    true
}

impl From<CreateLimit> for LimitSpec {
    fn from(body: CreateLimit) -> Self {
        LimitSpec {
            name: body.name,
            slots: body.slots,
            slot_decay_per_second: body.slot_decay_per_second,
            active: body.active,
            description: body.description,
            max_instances: body.max_instances,
            adaptive: body.adaptive.and_then(AdaptiveSetting::adaptive),
        }
    }
}

/// A change to a limit; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateLimit {
    /// New slot count.
    #[serde(
        default,
        deserialize_with = "whole_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_000_u64)
    )]
    pub slots: Option<u64>,
    /// New decay rate (the same bounds as on creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000_000))]
    pub slot_decay_per_second: Option<f64>,
    /// Activate or deactivate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// New description; an empty string clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: Option<String>,
    /// New `max_instances`, for a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub max_instances: Option<u64>,
    /// Make it adaptive (`true` or settings) or fixed (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveSetting>,
}

impl From<LimitSpec> for CreateLimit {
    fn from(spec: LimitSpec) -> Self {
        CreateLimit {
            name: spec.name,
            slots: spec.slots,
            slot_decay_per_second: spec.slot_decay_per_second,
            active: spec.active,
            description: spec.description,
            max_instances: spec.max_instances,
            adaptive: spec.adaptive.map(|a| AdaptiveSetting::from_engine(Some(a))),
        }
    }
}

impl From<LimitPatch> for UpdateLimit {
    fn from(patch: LimitPatch) -> Self {
        UpdateLimit {
            slots: patch.slots,
            slot_decay_per_second: patch.slot_decay_per_second,
            active: patch.active,
            // Clearing is written as an empty description.
            description: patch.description.map(Option::unwrap_or_default),
            max_instances: patch.max_instances,
            adaptive: patch.adaptive.map(AdaptiveSetting::from_engine),
        }
    }
}

impl From<UpdateLimit> for LimitPatch {
    fn from(body: UpdateLimit) -> Self {
        LimitPatch {
            slots: body.slots,
            slot_decay_per_second: body.slot_decay_per_second,
            active: body.active,
            description: body
                .description
                .map(|d| if d.is_empty() { None } else { Some(d) }),
            max_instances: body.max_instances,
            adaptive: body.adaptive.map(AdaptiveSetting::adaptive),
        }
    }
}

/// Running totals of a limit.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Totals {
    /// Requests granted.
    pub granted_total: u64,
    /// Slots granted.
    pub granted_slots_total: u64,
    /// Requests that had to queue.
    pub waited_total: u64,
    /// Leases that expired instead of being released.
    pub expired_total: u64,
    /// Requests refused for lack of capacity (would block, timed out).
    pub denied_total: u64,
}

impl From<Counters> for Totals {
    fn from(c: Counters) -> Self {
        Totals {
            granted_total: c.granted_total,
            granted_slots_total: c.granted_slots_total,
            waited_total: c.waited_total,
            expired_total: c.expired_total,
            denied_total: c.denied_total,
        }
    }
}

/// A limit and its state.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Limit {
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
    /// Slots held by leases.
    pub held: u64,
    /// Rate-mode slots not yet decayed (fractional).
    pub decaying: f64,
    /// Requests queued.
    pub waiting: u64,
    /// Slots the queued requests ask for.
    pub waiting_slots: u64,
    /// Running totals.
    pub counters: Totals,
    /// When it was created (Unix ms).
    pub created_at: u64,
    /// When its definition last changed (Unix ms).
    pub updated_at: u64,
    /// The pause that holds it now, if one does: it grants nothing until
    /// the pause ends.
    #[serde(default)]
    pub paused: Option<LimitPause>,
    /// For a template (a name ending in `*`): its instances. Its `held`,
    /// `decaying`, `waiting` and `waiting_slots` are the sums over them,
    /// its counters the totals of every instance it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<LimitTemplate>,
    /// For an instance: the template it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_of: Option<String>,
    /// For an adaptive limit: its settings and the value in force now,
    /// beside the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<LimitAdaptive>,
}

/// An adaptive limit's state.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitAdaptive {
    /// Each report multiplies the value in force by this.
    pub decrease_factor: f64,
    /// Seconds to climb from nothing back to the configured value.
    pub recovery_seconds: f64,
    /// The share of the configured value in force now (1: all of it).
    pub scale: f64,
    /// The value in force now: the rate of a rate limit (slots per
    /// second), the slots of a concurrency limit.
    pub effective: f64,
}

/// What a template has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitTemplate {
    /// Instances alive now (idle ones are dropped).
    pub instances: u64,
    /// How many it may have at once.
    pub max_instances: u64,
}

/// A pause that holds a limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitPause {
    /// When it ends (Unix ms).
    pub until: u64,
    /// When it was set or last extended (Unix ms).
    pub since: u64,
    /// Why, as reported.
    pub reason: Option<String>,
    /// Who reported it.
    pub reporter: Option<String>,
}

impl From<Pause> for LimitPause {
    fn from(p: Pause) -> Self {
        LimitPause {
            // Rounded up: a pause is never shown as ending before it does.
            until: p.until.as_unix_nanos().div_ceil(1_000_000),
            since: p.since.as_unix_millis(),
            reason: p.reason,
            reporter: p.reporter,
        }
    }
}

/// A request to pause a limit: give `seconds` or `until`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PauseLimit {
    /// How long from now (e.g. an upstream's `Retry-After`): above 0 and
    /// at most 604 800 (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 604_800))]
    pub seconds: Option<f64>,
    /// Until this instant (Unix ms), at most 7 days away; one already past
    /// pauses nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// Why, for people (e.g. "429 from api.vendor.com").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub reason: Option<String>,
    /// Who reports it (a worker's host name); the server records the
    /// caller's token scope when this is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub reporter: Option<String>,
}

impl TryFrom<PauseLimit> for PauseSpec {
    type Error = LimitError;

    fn try_from(body: PauseLimit) -> Result<Self, LimitError> {
        let end = match (body.seconds, body.until) {
            (Some(seconds), None) => PauseEnd::Seconds(seconds),
            (None, Some(until)) => PauseEnd::Until(Timestamp::from_unix_millis(until)),
            _ => {
                return Err(LimitError::InvalidPause {
                    reason: "give exactly one of seconds and until".into(),
                });
            }
        };
        Ok(PauseSpec {
            end,
            reason: body.reason,
            reporter: body.reporter,
        })
    }
}

impl From<PauseSpec> for PauseLimit {
    fn from(spec: PauseSpec) -> Self {
        let (seconds, until) = match spec.end {
            PauseEnd::Seconds(seconds) => (Some(seconds), None),
            PauseEnd::Until(at) => (None, Some(at.as_unix_millis())),
        };
        PauseLimit {
            seconds,
            until,
            reason: spec.reason,
            reporter: spec.reporter,
        }
    }
}

impl Limit {
    /// Whether `occupy` more slots would have been granted at once when
    /// this was read: the engine's rule (nobody queued, and held plus
    /// decaying plus `occupy` within the slots; or inactive), on figures
    /// that may have changed since.
    pub fn has_room(&self, occupy: u64) -> bool {
        !self.active
            || (self.waiting == 0
                && self.paused.is_none()
                && self.held as f64 + self.decaying + occupy as f64 <= self.slots as f64)
    }
}

impl From<LimitView> for Limit {
    fn from(v: LimitView) -> Self {
        Limit {
            name: v.name,
            slots: v.slots,
            slot_decay_per_second: v.slot_decay_per_second,
            active: v.active,
            description: v.description,
            held: v.held,
            decaying: v.decaying,
            waiting: v.waiting,
            waiting_slots: v.waiting_slots,
            counters: v.counters.into(),
            created_at: v.created_at.as_unix_millis(),
            updated_at: v.updated_at.as_unix_millis(),
            paused: v.paused.map(Into::into),
            template: v.template.map(|t| LimitTemplate {
                instances: t.instances,
                max_instances: t.max_instances,
            }),
            instance_of: v.instance_of,
            adaptive: v.adaptive.map(|a| LimitAdaptive {
                decrease_factor: a.adaptive.decrease_factor,
                recovery_seconds: a.adaptive.recovery_seconds,
                scale: a.scale,
                effective: a.effective,
            }),
        }
    }
}

/// A live lease.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// Its id: 32 hexadecimal digits. Shown to a client token as its first
    /// 8 digits and `…` only: an id is what releases and renews a lease,
    /// so only its holder (who was answered it) and admins know it whole.
    pub id: String,
    /// The limits it holds slots on.
    pub limits: Vec<String>,
    /// Slots held on each.
    pub occupy: u64,
    /// The holder's label.
    pub holder: Option<String>,
    /// When it was granted (Unix ms).
    pub granted_at: u64,
    /// When it expires unless renewed (Unix ms).
    pub expires_at: u64,
    /// What each renewal extends it by.
    pub lease_seconds: f64,
}

impl From<LeaseView> for Lease {
    fn from(v: LeaseView) -> Self {
        Lease {
            id: v.id.to_string(),
            limits: v.limits,
            occupy: v.occupy,
            holder: v.holder,
            granted_at: v.granted_at.as_unix_millis(),
            expires_at: v.expires_at.as_unix_millis(),
            lease_seconds: v.ttl.as_secs_f64(),
        }
    }
}

/// A queued request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Waiter {
    /// Its place in the global arrival order.
    pub request: u64,
    /// The limits it waits on.
    pub limits: Vec<String>,
    /// Slots it asks for on each.
    pub occupy: u64,
    /// Its mode.
    pub mode: AcquireMode,
    /// The holder's label.
    pub holder: Option<String>,
    /// When it arrived (Unix ms).
    pub enqueued_at: u64,
    /// When it gives up (Unix ms), if ever.
    pub deadline: Option<u64>,
}

impl From<WaiterView> for Waiter {
    fn from(v: WaiterView) -> Self {
        Waiter {
            request: v.request.0,
            limits: v.limits,
            occupy: v.occupy,
            mode: v.mode.into(),
            holder: v.holder,
            enqueued_at: v.enqueued_at.as_unix_millis(),
            deadline: v.deadline.map(|d| d.as_unix_millis()),
        }
    }
}

/// A limit with who holds it and who waits for it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitDetails {
    /// The limit.
    #[serde(flatten)]
    pub limit: Limit,
    /// Live leases on it, oldest first.
    pub leases: Vec<Lease>,
    /// Queued requests, in queue order.
    pub waiters: Vec<Waiter>,
}

impl LimitDetails {
    /// A limit's details from the engine's views.
    pub fn new(limit: LimitView, leases: Vec<LeaseView>, waiters: Vec<WaiterView>) -> Self {
        LimitDetails {
            limit: limit.into(),
            leases: leases.into_iter().map(Into::into).collect(),
            waiters: waiters.into_iter().map(Into::into).collect(),
        }
    }
}

impl Lease {
    /// The lease as a client token sees it: its id cut short.
    pub fn redacted(mut self) -> Self {
        self.id = redacted_id(&self.id);
        self
    }
}

/// A lease id as a client token sees it: its first 8 digits and `…`.
pub fn redacted_id(id: &str) -> String {
    format!("{}…", id.get(..8).unwrap_or(id))
}

/// Who the caller is to the server: what its token may do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    /// `admin` (everything; also every caller of a server without
    /// tokens) or `client` (acquire, renew, release and read).
    pub scope: String,
    /// Whether the server requires a token at all.
    pub tokens_required: bool,
}
