//! One limit: its definition, its occupancy and the capacity check.

use std::collections::{BTreeSet, HashSet};

use crate::adaptive::{Adaptive, AdaptiveView, MIN_SCALE};
use crate::error::LimitError;
use crate::journal::LimitRecord;
use crate::lease::LeaseId;
use crate::name::LimitName;
use crate::pause::Pause;
use crate::request::RequestId;
use crate::time::Timestamp;

/// The largest number of slots a limit may have. Slot arithmetic is done in
/// `f64` for decay, which is exact for integers well beyond this.
pub const MAX_SLOTS: u64 = 1_000_000_000_000_000;
/// The fastest decay allowed, in slots per second: one slot per nanosecond.
pub const MAX_DECAY: f64 = 1e9;
/// The longest a rate limit's full load may take to decay, in seconds (100
/// years): `slots / slot_decay_per_second` may be at most this. Instants
/// are nanoseconds in a `u64`, which a slower drain would run past (a
/// decaying level that can no longer be told apart would admit too much).
pub const MAX_DRAIN_SECONDS: f64 = 100.0 * 365.0 * 86_400.0;
/// The longest description allowed, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// How many instances a template keeps at most unless told otherwise.
pub const DEFAULT_MAX_INSTANCES: u64 = 100_000;
/// The most instances a template may be allowed.
pub const MAX_INSTANCES: u64 = 10_000_000;

const NANOS_PER_SEC: f64 = 1e9;

/// What a new limit should look like.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSpec {
    /// Its name.
    pub name: String,
    /// How many slots may be occupied at once; 0 closes the limit.
    pub slots: u64,
    /// How fast rate-mode slots free themselves, per second; 0 for a pure
    /// concurrency limit.
    pub slot_decay_per_second: f64,
    /// Whether it enforces anything.
    pub active: bool,
    /// Free text for people.
    pub description: Option<String>,
    /// For a template (a name ending in `*`): how many instances it may
    /// have at once (default [`DEFAULT_MAX_INSTANCES`]).
    pub max_instances: Option<u64>,
    /// Adapt to throttling reports (see [`crate::Adaptive`]); `None`: a
    /// fixed limit.
    pub adaptive: Option<Adaptive>,
}

impl LimitSpec {
    /// An active concurrency limit: at most `slots` holders at once.
    pub fn concurrency(name: impl Into<String>, slots: u64) -> Self {
        LimitSpec {
            name: name.into(),
            slots,
            slot_decay_per_second: 0.0,
            active: true,
            description: None,
            max_instances: None,
            adaptive: None,
        }
    }

    /// An active rate limit: `per_second` admissions per second on average,
    /// with bursts of up to `burst`.
    pub fn rate(name: impl Into<String>, per_second: f64, burst: u64) -> Self {
        LimitSpec {
            slot_decay_per_second: per_second,
            ..LimitSpec::concurrency(name, burst)
        }
    }
}

impl LimitSpec {
    /// Checks every field as creating the limit does, for a backend that
    /// keeps its limits elsewhere.
    pub fn check(&self) -> Result<(), LimitError> {
        let name = LimitName::new(&self.name)?;
        check_max_instances(self.max_instances, name.template_prefix().is_some())?;
        check_slots(self.slots)?;
        check_decay(self.slot_decay_per_second)?;
        check_drain(self.slots, self.slot_decay_per_second)?;
        self.adaptive.as_ref().map(Adaptive::check).transpose()?;
        check_description(self.description.as_deref())
    }
}

impl LimitPatch {
    /// Checks every field that is set, as changing the limit does.
    pub fn check(&self) -> Result<(), LimitError> {
        self.slots.map(check_slots).transpose()?;
        self.slot_decay_per_second.map(check_decay).transpose()?;
        check_max_instances(self.max_instances, true)?;
        if let Some(Some(adaptive)) = &self.adaptive {
            adaptive.check()?;
        }
        if let Some(description) = &self.description {
            check_description(description.as_deref())?;
        }
        Ok(())
    }
}

/// A change to an existing limit; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitPatch {
    /// New slot count.
    pub slots: Option<u64>,
    /// New decay rate.
    pub slot_decay_per_second: Option<f64>,
    /// Activate or deactivate.
    pub active: Option<bool>,
    /// New description; `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// New `max_instances`, for a template.
    pub max_instances: Option<u64>,
    /// Make it adaptive (with these settings), or `Some(None)` fixed.
    pub adaptive: Option<Option<Adaptive>>,
}

/// Running totals of what happened on a limit. Only requests that found the
/// limit active are counted: an inactive limit does nothing, so it counts
/// nothing either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Counters {
    /// Requests granted.
    pub granted_total: u64,
    /// Slots granted (the sum of `occupy` over granted requests).
    pub granted_slots_total: u64,
    /// Requests that had to queue.
    pub waited_total: u64,
    /// Leases that expired instead of being released.
    pub expired_total: u64,
    /// Requests refused for lack of capacity: try-once requests that would
    /// have blocked, and waits that timed out.
    pub denied_total: u64,
}

/// A read-only picture of a limit at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitView {
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
    /// Slots held by leases and permits.
    pub held: u64,
    /// Rate-mode slots not yet decayed (fractional).
    pub decaying: f64,
    /// Requests queued on it.
    pub waiting: u64,
    /// The sum of `occupy` over queued requests.
    pub waiting_slots: u64,
    /// Running totals.
    pub counters: Counters,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its definition last changed.
    pub updated_at: Timestamp,
    /// The pause that holds it, if one does at this instant.
    pub paused: Option<Pause>,
    /// For a template: its instances. Its `held`, `decaying`, `waiting`
    /// and `waiting_slots` are then the sums over its instances, and its
    /// counters the totals of every instance it ever had.
    pub template: Option<TemplateView>,
    /// For an instance: the template it follows.
    pub instance_of: Option<String>,
    /// For an adaptive limit: its settings and the value in force now.
    pub adaptive: Option<AdaptiveView>,
}

/// What a template has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateView {
    /// Instances alive now.
    pub instances: u64,
    /// How many it may have at once.
    pub max_instances: u64,
}

/// What a limit holds and is asked for: held slots, queued requests and
/// the slots they ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Occupancy {
    pub held: u64,
    pub waiting: u64,
    pub waiting_slots: u64,
}

impl Occupancy {
    /// `self - before + after`, for a sum over instances as one changes.
    pub fn moved(self, before: Occupancy, after: Occupancy) -> Occupancy {
        Occupancy {
            held: self.held - before.held + after.held,
            waiting: self.waiting - before.waiting + after.waiting,
            waiting_slots: self.waiting_slots - before.waiting_slots + after.waiting_slots,
        }
    }
}

/// What a limit is to templates.
#[derive(Debug)]
pub(crate) enum Role {
    /// A limit of its own.
    Plain,
    /// A template: a name ending in `*`, whose keys get instances.
    Template {
        max_instances: u64,
        /// Boxed, as is a limit's pause: every limit pays for the room its
        /// rarely used parts take inline (40 bytes here, 8 boxed).
        #[allow(
            clippy::box_collection,
            reason = "the set's inline size is paid by every limit, templates are few"
        )]
        instances: Box<HashSet<LimitId, foldhash::fast::RandomState>>,
        /// The sums over its instances, kept as they change, so that
        /// showing a template does not visit every instance.
        sums: Occupancy,
    },
    /// An instance, made on demand for a key of this template.
    Instance(LimitId),
}

/// Whether a request fits into a limit now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    /// It fits now.
    Now,
    /// It will fit at this instant, once enough decaying slots have decayed
    /// (unless something else changes first).
    At(Timestamp),
    /// Only a release, an expiry or a change of the limit can make it fit.
    Blocked,
}

/// A limit's internal identity. Never reused, so that leases and permits on a
/// deleted limit cannot touch a new limit of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct LimitId(pub u64);

/// A limit's internal state.
#[derive(Debug)]
pub(crate) struct Limit {
    pub name: LimitName,
    pub slots: u64,
    /// Slots per second; finite, `0..=MAX_DECAY`.
    pub decay: f64,
    /// The rate decaying slots drain at now: `decay`, times `scale` for an
    /// adaptive limit.
    pub rate: f64,
    /// How it adapts, if it does.
    pub adaptive: Option<Adaptive>,
    /// The share of its configured rate or slots in force (1 unless
    /// adaptive and lowered).
    pub scale: f64,
    /// When it was last lowered.
    pub lowered_at: Option<Timestamp>,
    /// When it next climbs back, while it is below its configured value.
    pub recover_at: Option<Timestamp>,
    pub active: bool,
    pub description: Option<String>,
    /// Slots held by live leases and permits. May exceed `slots` only after
    /// `slots` was lowered below it.
    pub held: u64,
    /// The instant at which every decaying slot will have decayed. Keeping the
    /// drain instant instead of a fractional count means nothing is rounded
    /// away when slots are added: the level at `t` is `(drained_at - t) ×
    /// decay`. Never after `now` while `decay` is 0.
    pub drained_at: Timestamp,
    /// Bumped by every reset, so that permits granted before it are ignored
    /// when they are released.
    pub generation: u64,
    /// Waiting requests, in global arrival order; the first is the head.
    pub queue: BTreeSet<RequestId>,
    /// The sum of `occupy` over `queue`.
    pub queued_slots: u64,
    /// Live leases that hold slots here.
    pub leases: HashSet<LeaseId, foldhash::fast::RandomState>,
    pub counters: Counters,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The latest pause; it holds only until its end (see [`Pause::holds_at`]).
    pub pause: Option<Box<Pause>>,
    pub role: Role,
}

impl Limit {
    pub fn new(spec: &LimitSpec, now: Timestamp) -> Result<Self, LimitError> {
        spec.check()?;
        let name = LimitName::new(&spec.name)?;
        let role = match name.template_prefix() {
            Some(_) => Role::Template {
                max_instances: spec.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES),
                instances: Box::default(),
                sums: Occupancy::default(),
            },
            None => Role::Plain,
        };
        Ok(Limit {
            name,
            slots: spec.slots,
            decay: spec.slot_decay_per_second + 0.0, // -0.0 is stored as 0
            rate: spec.slot_decay_per_second + 0.0,
            adaptive: spec.adaptive,
            scale: 1.0,
            lowered_at: None,
            recover_at: None,
            active: spec.active,
            description: spec.description.clone(),
            held: 0,
            drained_at: now,
            generation: 0,
            queue: BTreeSet::new(),
            queued_slots: 0,
            leases: HashSet::default(),
            counters: Counters::default(),
            created_at: now,
            updated_at: now,
            pause: None,
            role,
        })
    }

    /// Whether `occupy` more slots fit: `held + decaying + occupy <= slots`,
    /// and not before a pause ends.
    pub fn room(&self, occupy: u64, now: Timestamp) -> Room {
        let room = self.capacity(occupy, now);
        match &self.pause {
            Some(pause) if pause.holds_at(now) => match room {
                Room::Blocked => Room::Blocked,
                Room::Now => Room::At(pause.until),
                Room::At(at) => Room::At(at.max(pause.until)),
            },
            _ => room,
        }
    }

    /// The capacity check alone.
    fn capacity(&self, occupy: u64, now: Timestamp) -> Room {
        let slots = self.effective_slots();
        let Some(free) = slots.checked_sub(self.held.saturating_add(occupy)) else {
            return Room::Blocked;
        };
        if self.drained_at <= now {
            return Room::Now;
        }
        let ready_at = self.drained_at.sub_nanos(self.slack_nanos(free));
        if ready_at <= now {
            Room::Now
        } else {
            Room::At(ready_at)
        }
    }

    /// How long before the drain instant `occupy` more slots fit when
    /// `free` slots are left after them: the decaying level may be at most
    /// `free`, i.e. the drain instant at most `free / rate` seconds away.
    /// Rounded down: never admit early.
    pub fn slack_nanos(&self, free: u64) -> u64 {
        nanos_for(free as f64, self.rate, f64::floor)
    }

    /// How long `occupy` decaying slots take to decay. Rounded up: a slot
    /// never decays sooner than its rate allows.
    pub fn drain_nanos(&self, occupy: u64) -> u64 {
        nanos_for(occupy as f64, self.rate, f64::ceil)
    }

    /// Adds `occupy` decaying slots at `now`.
    pub fn add_decaying(&mut self, occupy: u64, now: Timestamp) {
        self.drained_at = self.drained_at.max(now).add_nanos(self.drain_nanos(occupy));
    }

    /// Rate-mode slots not yet decayed at `now`.
    pub fn decaying(&self, now: Timestamp) -> f64 {
        decaying_level(self.drained_at, self.rate, now)
    }

    /// Changes the decay rate, keeping the current decaying level. With a rate
    /// of 0 nothing would ever decay again, so decaying slots are dropped.
    pub fn set_decay(&mut self, decay: f64, now: Timestamp) {
        self.decay = decay + 0.0; // -0.0 is stored as 0
        self.set_rate(now);
    }

    /// The slots in force: a lowered adaptive concurrency limit has fewer
    /// than its configured slots (at least 1 of a nonzero count).
    pub fn effective_slots(&self) -> u64 {
        if self.scale >= 1.0 || self.decay > 0.0 || self.slots == 0 {
            return self.slots;
        }
        ((self.slots as f64 * self.scale).floor() as u64).max(1)
    }

    /// Sets the share of the configured value in force, keeping the
    /// decaying level.
    pub fn set_scale(&mut self, scale: f64, now: Timestamp) {
        // Never so low that a full load would drain past what instants
        // can hold (see `MAX_DRAIN_SECONDS`).
        let floor = if self.decay > 0.0 {
            (self.slots as f64 / (self.decay * MAX_DRAIN_SECONDS)).max(MIN_SCALE)
        } else {
            MIN_SCALE
        };
        // Steps of 1/recovery_seconds add up to 1 only up to rounding.
        let scale = if scale > 1.0 - 1e-9 { 1.0 } else { scale };
        self.scale = scale.clamp(floor.min(1.0), 1.0);
        self.set_rate(now);
    }

    /// Recomputes the draining rate from the decay and the scale, keeping
    /// the decaying level. At a rate of 0 nothing would ever decay again,
    /// so decaying slots are dropped.
    fn set_rate(&mut self, now: Timestamp) {
        let level = self.decaying(now);
        let scale = if self.adaptive.is_some() {
            self.scale
        } else {
            1.0
        };
        self.rate = self.decay * scale;
        self.drained_at = if self.rate > 0.0 {
            now.add_nanos(nanos_for(level, self.rate, f64::ceil))
        } else {
            now
        };
    }

    /// Its adaptive settings and the value in force.
    pub fn adaptive_view(&self) -> Option<AdaptiveView> {
        let adaptive = self.adaptive?;
        Some(AdaptiveView {
            adaptive,
            scale: self.scale,
            effective: if self.decay > 0.0 {
                self.rate
            } else {
                self.effective_slots() as f64
            },
        })
    }

    pub fn record(&self) -> LimitRecord {
        LimitRecord {
            name: self.name.to_string(),
            slots: self.slots,
            slot_decay_per_second: self.decay,
            active: self.active,
            description: self.description.clone(),
            drained_at: self.drained_at,
            counters: self.counters,
            created_at: self.created_at,
            updated_at: self.updated_at,
            pause: self.pause.as_deref().cloned(),
            max_instances: match &self.role {
                Role::Template { max_instances, .. } => Some(*max_instances),
                _ => None,
            },
            instance_of: None,
            adaptive: self.adaptive,
            scale: (self.scale < 1.0).then_some(self.scale),
        }
    }

    /// What it holds and is asked for now.
    pub fn occupancy(&self) -> Occupancy {
        Occupancy {
            held: self.held,
            waiting: self.queue.len() as u64,
            waiting_slots: self.queued_slots,
        }
    }

    pub fn is_template(&self) -> bool {
        matches!(self.role, Role::Template { .. })
    }

    pub fn template_of(&self) -> Option<LimitId> {
        match self.role {
            Role::Instance(template) => Some(template),
            _ => None,
        }
    }

    /// The pause that holds the limit at `now`.
    pub fn paused(&self, now: Timestamp) -> Option<&Pause> {
        self.pause.as_deref().filter(|pause| pause.holds_at(now))
    }

    pub fn view(&self, now: Timestamp) -> LimitView {
        LimitView {
            name: self.name.to_string(),
            slots: self.slots,
            slot_decay_per_second: self.decay,
            active: self.active,
            description: self.description.clone(),
            held: self.held,
            decaying: self.decaying(now),
            waiting: self.queue.len() as u64,
            waiting_slots: self.queued_slots,
            counters: self.counters,
            created_at: self.created_at,
            updated_at: self.updated_at,
            paused: self.paused(now).cloned(),
            template: match &self.role {
                Role::Template {
                    max_instances,
                    instances,
                    ..
                } => Some(TemplateView {
                    instances: instances.len() as u64,
                    max_instances: *max_instances,
                }),
                _ => None,
            },
            instance_of: None,
            adaptive: self.adaptive_view(),
        }
    }
}

/// The slots not yet decayed at `now` of a limit draining at `rate` slots
/// per second until `drained_at`.
pub(crate) fn decaying_level(drained_at: Timestamp, rate: f64, now: Timestamp) -> f64 {
    let remaining = drained_at
        .as_unix_nanos()
        .saturating_sub(now.as_unix_nanos());
    remaining as f64 * rate / NANOS_PER_SEC
}

/// How many nanoseconds `slots` slots take to decay at `rate` per second,
/// rounded with `round` and saturated to `u64`.
fn nanos_for(slots: f64, rate: f64, round: fn(f64) -> f64) -> u64 {
    if slots <= 0.0 {
        return 0;
    }
    // `as` saturates for floats out of range (and maps NaN to 0, which cannot
    // happen here: rate > 0 whenever there is anything to drain).
    round(slots * NANOS_PER_SEC / rate) as u64
}

pub(crate) fn check_slots(slots: u64) -> Result<(), LimitError> {
    if slots > MAX_SLOTS {
        return Err(LimitError::InvalidSlots { slots });
    }
    Ok(())
}

pub(crate) fn check_decay(value: f64) -> Result<(), LimitError> {
    if !(value.is_finite() && (0.0..=MAX_DECAY).contains(&value)) {
        return Err(LimitError::InvalidDecay { value });
    }
    Ok(())
}

/// Whether a rate limit of `slots` decaying at `decay` per second drains
/// within [`MAX_DRAIN_SECONDS`]: the rule for every combination of the two,
/// on creation and on every change.
pub fn check_drain(slots: u64, decay: f64) -> Result<(), LimitError> {
    if decay > 0.0 && slots as f64 / decay > MAX_DRAIN_SECONDS {
        return Err(LimitError::DecayTooSlow {
            slots,
            value: decay,
        });
    }
    Ok(())
}

fn check_max_instances(max: Option<u64>, template: bool) -> Result<(), LimitError> {
    let Some(max) = max else { return Ok(()) };
    let reason = if !template {
        "is only for a template (a name ending in '*')".to_owned()
    } else if !(1..=MAX_INSTANCES).contains(&max) {
        format!("must be between 1 and {MAX_INSTANCES}, got {max}")
    } else {
        return Ok(());
    };
    Err(LimitError::InvalidMaxInstances { reason })
}

pub(crate) fn check_description(description: Option<&str>) -> Result<(), LimitError> {
    let len = description.map_or(0, |d| d.chars().count());
    if len > MAX_DESCRIPTION_LEN {
        return Err(LimitError::DescriptionTooLong { len });
    }
    Ok(())
}
