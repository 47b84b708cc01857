//! The JSON shapes of the HTTP API. Times are Unix milliseconds; durations
//! are seconds (requests) or milliseconds (answers), as their names say.

use std::time::Duration;

use ratekeeper_backend::{Granted, LimitDetail};
use ratekeeper_core::{Counters, LeaseView, LimitPatch, LimitSpec, LimitView, Mode, WaiterView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a limit name looks like (`.` and `..` are refused besides).
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9._:-]{1,128}$";
/// What a lease id and a ticket look like.
pub const ID_PATTERN: &str = "^[0-9a-f]{32}$";

/// A new limit.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLimit {
    /// 1–128 characters of `A-Z a-z 0-9 . _ - :`, other than `.` and `..`.
    #[schema(value_type = LimitName)]
    pub name: String,
    /// How many slots may be occupied at once; 0 closes the limit.
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_u64)]
    pub slots: u64,
    /// Slots freed per second in rate mode; 0 for a pure concurrency limit.
    /// A full load must decay within 100 years (`slots / this` at most
    /// 3 153 600 000).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub slot_decay_per_second: f64,
    /// Whether it enforces (default true).
    #[serde(default = "yes")]
    pub active: bool,
    /// Free text for people.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: Option<String>,
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
        }
    }
}

/// A change to a limit; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLimit {
    /// New slot count.
    #[serde(
        default,
        deserialize_with = "whole_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_u64)]
    pub slots: Option<u64>,
    /// New decay rate (the same bounds as on creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub slot_decay_per_second: Option<f64>,
    /// Activate or deactivate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// New description; an empty string clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1024)]
    pub description: Option<String>,
}

/// Reads a whole number of at least 0, also written with a zero fraction
/// (`3.0`), as JSON Schema's `integer` allows; anything else is refused
/// in words a person reads.
struct Whole;

impl serde::de::Visitor<'_> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a whole number, 0 or more")
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u64, E> {
        Ok(n)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u64, E> {
        u64::try_from(n).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<u64, E> {
        // 2^64 is the first float past u64::MAX.
        if n >= 0.0 && n.fract() == 0.0 && n < 18_446_744_073_709_551_616.0 {
            Ok(n as u64)
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Float(n), &self))
        }
    }
}

fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Whole)
}

fn whole_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct OrNull;
    impl<'de> serde::de::Visitor<'de> for OrNull {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number, 0 or more, or null")
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            whole(d).map(Some)
        }
    }
    d.deserialize_option(OrNull)
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
        }
    }
}

/// Running totals of a limit.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
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
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
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
        }
    }
}

/// A live lease.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
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

/// Concurrency (hold a lease) or rate limit (occupy decaying slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AcquireMode {
    /// Hold slots until the lease is released or expires.
    #[default]
    Concurrency,
    /// Occupy slots that decay by themselves.
    RateLimit,
}

impl From<AcquireMode> for Mode {
    fn from(mode: AcquireMode) -> Self {
        match mode {
            AcquireMode::Concurrency => Mode::Concurrency,
            AcquireMode::RateLimit => Mode::RateLimit,
        }
    }
}

impl From<Mode> for AcquireMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Concurrency => AcquireMode::Concurrency,
            Mode::RateLimit => AcquireMode::RateLimit,
        }
    }
}

/// A queued request.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
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
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct LimitDetails {
    /// The limit.
    #[serde(flatten)]
    pub limit: Limit,
    /// Live leases on it, oldest first.
    pub leases: Vec<Lease>,
    /// Queued requests, in queue order.
    pub waiters: Vec<Waiter>,
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

impl From<LimitDetail> for LimitDetails {
    fn from(d: LimitDetail) -> Self {
        LimitDetails {
            limit: d.limit.into(),
            leases: d.leases.into_iter().map(Into::into).collect(),
            waiters: d.waiters.into_iter().map(Into::into).collect(),
        }
    }
}

/// A request for slots on one or more limits, all at once.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// The limits (1–32 distinct names).
    #[schema(value_type = Vec<LimitName>, min_items = 1, max_items = 32)]
    pub names: Vec<String>,
    /// Slots to occupy on each (default 1).
    #[serde(default = "one", deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_u64)]
    pub occupy: u64,
    /// `concurrency` (default) or `rate_limit`.
    #[serde(default)]
    pub mode: AcquireMode,
    /// How long to wait in all: absent waits forever, 0 tries once.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1e12)]
    pub timeout_seconds: Option<f64>,
    /// The lease's TTL, 1–86400 (default 30); concurrency mode only.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub lease_seconds: Option<f64>,
    /// A label for people (host, pid, task); concurrency mode only.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub holder: Option<String>,
    /// Create missing limits, inactive, instead of failing.
    #[serde(default)]
    pub create_if_missing: bool,
    /// How long this HTTP request may wait before it answers with a ticket
    /// (default and maximum: the server's `max_wait`).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1e12)]
    pub wait_seconds: Option<f64>,
}

/// The schema of a limit name, in bodies and paths: 1–128 characters of
/// `A-Z a-z 0-9 . _ - :`, other than `.` and `..` (the rule itself lives in
/// the engine).
pub struct LimitName;

impl utoipa::PartialSchema for LimitName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        id_like(NAME_PATTERN, "a limit name, other than `.` and `..`")
    }
}

impl ToSchema for LimitName {}

/// The schema of a lease id or a ticket, in paths.
pub struct LeaseIdText;

impl utoipa::PartialSchema for LeaseIdText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        id_like(ID_PATTERN, "32 lowercase hexadecimal digits")
    }
}

impl ToSchema for LeaseIdText {}

fn id_like(
    pattern: &str,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

fn one() -> u64 {
    1
}

/// Where a wait stands: granted, or still queued with a ticket.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AcquireAnswer {
    /// Granted: in concurrency mode, the lease to renew and release.
    Granted {
        /// The lease, in concurrency mode.
        lease_id: Option<String>,
        /// When the lease expires unless renewed (Unix ms).
        expires_at: Option<u64>,
        /// When it was granted (Unix ms).
        granted_at: u64,
        /// How long it waited in the queue.
        waited_ms: f64,
    },
    /// Still queued: continue the wait with `POST /v1/tickets/{ticket}/wait`
    /// within the lapse time, or the place in the queue is given up.
    Waiting {
        /// The ticket that keeps the place in the queue.
        ticket: String,
        /// Seconds the ticket lives without anyone waiting on it.
        lapse_seconds: f64,
    },
}

impl From<Granted> for AcquireAnswer {
    fn from(g: Granted) -> Self {
        AcquireAnswer::Granted {
            lease_id: g.lease.map(|l| l.id.to_string()),
            expires_at: g.lease.map(|l| l.expires_at.as_unix_millis()),
            granted_at: g.granted_at.as_unix_millis(),
            waited_ms: g.waited.as_secs_f64() * 1e3,
        }
    }
}

/// Continue waiting on a ticket.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitBody {
    /// How long this HTTP request may wait (default and maximum: the
    /// server's `max_wait`).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1e12)]
    pub wait_seconds: Option<f64>,
}

/// Renew a lease.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// A new TTL, 1–86400 seconds (default: the lease's own).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub lease_seconds: Option<f64>,
}

/// A renewed lease.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Renewed {
    /// The lease.
    pub lease_id: String,
    /// When it now expires unless renewed again (Unix ms).
    pub expires_at: u64,
}

/// An error.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `limit_not_found`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// The request field at fault, when one is (e.g. `slots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Seconds from a request field, refusing what is not a finite, non-negative
/// number of seconds that fits a `Duration`.
pub fn seconds(field: &'static str, value: f64) -> Result<Duration, crate::error::ApiError> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if value <= MAX_SECONDS => Ok(duration),
        _ => Err(crate::error::ApiError::invalid(
            "invalid_seconds",
            format!("{field} must be a number of seconds from 0 to {MAX_SECONDS:e}, not {value}"),
        )
        .in_field(field)),
    }
}

/// The longest duration a request may name, in seconds (about 31 700
/// years): anything longer is a mistake, and would not fit a clock.
pub const MAX_SECONDS: f64 = 1e12;
