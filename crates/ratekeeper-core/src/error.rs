//! What can go wrong, as small enums with stable codes.
//!
//! Each error has a `code()`: a short, stable identifier the HTTP API and the
//! client libraries use, so that callers can match on it without parsing
//! messages. Messages are for people and name the offending value.

use thiserror::Error;

/// Why a limit name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name has no characters.
    #[error("limit name is empty")]
    Empty,
    /// The name is longer than 128 characters.
    #[error("limit name is {len} characters long; at most 128 are allowed")]
    TooLong {
        /// Its length in characters.
        len: usize,
    },
    /// The name contains a character outside `A-Z a-z 0-9 . _ - :`.
    #[error(
        "limit name {name:?} contains {ch:?} at position {position}; \
         only letters, digits, '.', '_', '-' and ':' are allowed"
    )]
    BadChar {
        /// The whole name as given.
        name: String,
        /// The first offending character.
        ch: char,
        /// Its position, counted in characters from 0.
        position: usize,
    },
    /// A `*` anywhere but at the end, or a name that is only `*`: a
    /// trailing `*` makes a template (`tenant:*`), nothing else may have one.
    #[error(
        "limit name {name:?} has '*' at position {position}; a '*' may only end a name, \
         after at least one other character, where it makes a template (like \"tenant:*\")"
    )]
    Star {
        /// The whole name as given.
        name: String,
        /// Where the misplaced `*` is, counted in characters from 0.
        position: usize,
    },
    /// The name is `.` or `..`, which URL paths treat as steps, so no
    /// HTTP client could name the limit.
    #[error("limit name {name:?} is reserved: URLs read it as a path step")]
    PathStep {
        /// The name given.
        name: String,
    },
}

/// Why creating, changing or looking up a limit failed.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The name is not a valid limit name.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// `slots` is above [`crate::MAX_SLOTS`].
    #[error("slots must be between 0 and {max}, got {slots}", max = crate::MAX_SLOTS)]
    InvalidSlots {
        /// The value given.
        slots: u64,
    },
    /// `slot_decay_per_second` is negative, not a number, infinite or too large.
    #[error(
        "slot_decay_per_second must be a finite number from 0 to {max}, got {value}",
        max = crate::MAX_DECAY
    )]
    InvalidDecay {
        /// The value given.
        value: f64,
    },
    /// `slot_decay_per_second` is so slow that `slots` would take more than
    /// [`crate::MAX_DRAIN_SECONDS`] to decay.
    #[error(
        "slot_decay_per_second {value} is too slow for {slots} slots: they would take more than \
         100 years to decay; use at least {min} per second",
        min = *slots as f64 / crate::MAX_DRAIN_SECONDS
    )]
    DecayTooSlow {
        /// The limit's slots.
        slots: u64,
        /// The decay given.
        value: f64,
    },
    /// The description is longer than [`crate::MAX_DESCRIPTION_LEN`].
    #[error("description is {len} characters long; at most {max} are allowed", max = crate::MAX_DESCRIPTION_LEN)]
    DescriptionTooLong {
        /// Its length in characters.
        len: usize,
    },
    /// A pause asked for is not possible (see [`crate::PauseSpec::until`]).
    #[error("invalid pause: {reason}")]
    InvalidPause {
        /// What is wrong with it.
        reason: String,
    },
    /// An adaptive limit's parameters are out of range.
    #[error("invalid adaptive settings: {reason}")]
    InvalidAdaptive {
        /// What is wrong.
        reason: String,
    },
    /// `max_instances` given for a limit that is not a template, or out
    /// of range.
    #[error("max_instances {reason}")]
    InvalidMaxInstances {
        /// What is wrong.
        reason: String,
    },
    /// The limit is an instance of a template: its definition is the
    /// template's.
    #[error(
        "{name:?} is an instance of template {template:?}: change the template, or create \
         {name:?} as a limit of its own to override it for this key"
    )]
    IsInstance {
        /// The instance.
        name: String,
        /// Its template.
        template: String,
    },
    /// No limit has this name.
    #[error("no limit is named {name:?}")]
    NotFound {
        /// The name looked up.
        name: String,
    },
    /// A limit with this name exists already.
    #[error("a limit named {name:?} exists already")]
    AlreadyExists {
        /// The name given.
        name: String,
    },
}

impl LimitError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            LimitError::InvalidName(_) => "invalid_name",
            LimitError::InvalidSlots { .. } => "invalid_slots",
            LimitError::InvalidDecay { .. } | LimitError::DecayTooSlow { .. } => "invalid_decay",
            LimitError::DescriptionTooLong { .. } => "invalid_description",
            LimitError::InvalidPause { .. } => "invalid_pause",
            LimitError::InvalidMaxInstances { .. } => "invalid_max_instances",
            LimitError::InvalidAdaptive { .. } => "invalid_adaptive",
            LimitError::IsInstance { .. } => "limit_is_instance",
            LimitError::NotFound { .. } => "limit_not_found",
            LimitError::AlreadyExists { .. } => "limit_exists",
        }
    }

    /// The field of a limit definition this refusal is about, if one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            LimitError::InvalidName(_) | LimitError::AlreadyExists { .. } => Some("name"),
            LimitError::InvalidSlots { .. } => Some("slots"),
            LimitError::InvalidDecay { .. } | LimitError::DecayTooSlow { .. } => {
                Some("slot_decay_per_second")
            }
            LimitError::DescriptionTooLong { .. } => Some("description"),
            LimitError::InvalidMaxInstances { .. } => Some("max_instances"),
            LimitError::InvalidAdaptive { .. } => Some("adaptive"),
            LimitError::InvalidPause { .. }
            | LimitError::IsInstance { .. }
            | LimitError::NotFound { .. } => None,
        }
    }
}

/// Why an acquire was refused or ended without a grant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// The request names no limit, or more than [`crate::MAX_NAMES_PER_REQUEST`].
    #[error("a request must name between 1 and {max} limits, got {count}", max = crate::MAX_NAMES_PER_REQUEST)]
    NameCount {
        /// How many names it gave.
        count: usize,
    },
    /// The request names the same limit twice.
    #[error("limit {name:?} is named twice in one request")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A name in the request is not a valid limit name.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A named limit does not exist (and `create_if_missing` was not set).
    #[error("no limit is named {name:?}")]
    LimitNotFound {
        /// The missing name.
        name: String,
    },
    /// `occupy` is 0.
    #[error("occupy must be at least 1")]
    InvalidOccupy,
    /// `occupy` is larger than the slots of an active limit: it could never be granted.
    #[error(
        "occupy {occupy} is more than the {slots} slots of limit {name:?}; it could never be granted"
    )]
    OccupyExceedsSlots {
        /// The limit.
        name: String,
        /// The weight asked for.
        occupy: u64,
        /// The limit's slots.
        slots: u64,
    },
    /// Rate mode on an active limit whose slots do not decay.
    #[error(
        "limit {name:?} has slot_decay_per_second 0, so it is not a rate limit; \
         use concurrency mode or give it a decay rate"
    )]
    RateModeNeedsDecay {
        /// The limit.
        name: String,
    },
    /// The lease TTL is outside 1 s – 24 h.
    #[error("lease TTL must be between 1 s and 24 h, got {millis} ms")]
    InvalidLeaseTtl {
        /// The TTL given, in milliseconds.
        millis: u128,
    },
    /// The holder label is longer than [`crate::MAX_HOLDER_LEN`].
    #[error("holder is {len} characters long; at most {max} are allowed", max = crate::MAX_HOLDER_LEN)]
    HolderTooLong {
        /// Its length in characters.
        len: usize,
    },
    /// A try-once request (timeout 0) could not be granted at once.
    #[error("the request could not be granted without waiting")]
    WouldBlock,
    /// The request's timeout passed before it could be granted.
    #[error("timed out waiting for the limit")]
    TimedOut,
    /// A limit the request waited on was deleted.
    #[error("limit {name:?} was deleted while the request waited for it")]
    LimitDeleted {
        /// The deleted limit.
        name: String,
    },
    /// The request names a template itself, which holds nothing.
    #[error("{name:?} is a template: acquire on one of its keys, such as {example:?}")]
    IsTemplate {
        /// The template.
        name: String,
        /// A name that would use it.
        example: String,
    },
    /// A new key of a template would make more instances than it allows.
    #[error(
        "template {template:?} has {max} instances, its max_instances: {name:?} would be one \
         more (idle instances are dropped; raise max_instances to allow more keys)"
    )]
    TooManyInstances {
        /// The new key.
        name: String,
        /// Its template.
        template: String,
        /// The template's `max_instances`.
        max: u64,
    },
}

impl AcquireError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            AcquireError::NameCount { .. } => "invalid_names",
            AcquireError::DuplicateName { .. } => "duplicate_name",
            AcquireError::InvalidName(_) => "invalid_name",
            AcquireError::LimitNotFound { .. } => "limit_not_found",
            AcquireError::InvalidOccupy => "invalid_occupy",
            AcquireError::OccupyExceedsSlots { .. } => "occupy_exceeds_slots",
            AcquireError::RateModeNeedsDecay { .. } => "rate_mode_needs_decay",
            AcquireError::InvalidLeaseTtl { .. } => "invalid_lease_ttl",
            AcquireError::HolderTooLong { .. } => "invalid_holder",
            AcquireError::WouldBlock => "would_block",
            AcquireError::TimedOut => "timeout",
            AcquireError::LimitDeleted { .. } => "limit_deleted",
            AcquireError::IsTemplate { .. } => "limit_is_template",
            AcquireError::TooManyInstances { .. } => "too_many_instances",
        }
    }
}

/// Why renewing or releasing a lease failed.
///
/// Both failures are loud on purpose: a silent no-op would hide from the
/// holder that it is no longer protected by the limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The lease expired, was released already, or never existed.
    #[error("the lease has expired or does not exist")]
    Expired,
    /// The lease was revoked by a reset of one of its limits.
    #[error("the lease was revoked by a reset of its limit")]
    Revoked,
    /// The requested TTL is outside 1 s – 24 h.
    #[error("lease TTL must be between 1 s and 24 h, got {millis} ms")]
    InvalidTtl {
        /// The TTL given, in milliseconds.
        millis: u128,
    },
}

impl LeaseError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            LeaseError::Expired => "lease_expired",
            LeaseError::Revoked => "lease_revoked",
            LeaseError::InvalidTtl { .. } => "invalid_lease_ttl",
        }
    }
}
