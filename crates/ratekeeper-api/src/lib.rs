//! The wire types of the ratekeeper HTTP API: what a server answers and
//! what a client sends, one type per shape, shared by both so that they
//! cannot drift apart. Times are Unix milliseconds; durations are seconds
//! in requests and milliseconds in answers, as their names say.
//!
//! - [`limit`]: limits, their leases and waiters; creating and changing one.
//! - [`acquire`]: asking for slots, the answer, tickets, renewing.
//! - [`history`]: a limit's recent past, sampled by the server.
//! - [`error`]: the error body.
//! - [`names`]: patterns of names and ids, whole numbers, paths.
//!
//! With the `openapi` feature every type also describes itself for the
//! server's `/openapi.json` (`utoipa::ToSchema`).

pub mod acquire;
pub mod error;
pub mod history;
pub mod instances;
pub mod limit;
pub mod names;
pub mod throttle;

pub use acquire::{AcquireAnswer, AcquireBody, AcquireMode, RenewBody, Renewed, WaitBody};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use history::{HistorySample, LimitHistory};
pub use instances::{InstanceOrder, InstancePage, Instances, MAX_PAGE};
pub use limit::{
    AdaptiveSetting, AdaptiveSettings, CreateLimit, Lease, Limit, LimitAdaptive, LimitDetails,
    LimitPause, LimitTemplate, PauseLimit, Totals, UpdateLimit, Waiter, WhoAmI, redacted_id,
};
pub use names::{ID_PATTERN, MAX_SECONDS, NAME_PATTERN, encoded_name, limit_path};
#[cfg(feature = "openapi")]
pub use names::{LeaseIdText, LimitName};
pub use throttle::{ThrottledBody, parse_retry_after, throttled_for};
