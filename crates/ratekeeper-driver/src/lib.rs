//! The ratekeeper engine on a real clock.
//!
//! [`Driver`] runs a [`ratekeeper_core::Engine`] with a real clock: one timer
//! thread sleeps until the engine's next call-back instant (a decay wait, a
//! lease expiry, a timeout), and requests that had to queue are parked until
//! the engine grants or fails them. Nothing polls: a release grants the next
//! waiter in the same step, and a rate-limited waiter is woken at the instant
//! its slots have decayed. The server and `memory://` clients build on it.
//!
//! [`Limiter`] is the in-process API on top: concurrency and rate limits
//! shared by every task and thread of one program, async and blocking.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use ratekeeper_driver::Limiter;
//! use ratekeeper_core::LimitSpec;
//!
//! let limiter = Limiter::new();
//! limiter.create(LimitSpec::concurrency("vendor", 3)).unwrap();
//! limiter.create(LimitSpec::rate("vendor:rps", 100.0, 1)).unwrap();
//!
//! let slot = limiter.concurrency("vendor").await.unwrap(); // at most 3 at once
//! limiter.rate_limit("vendor:rps").await.unwrap();          // at most 100 per second
//! drop(slot);
//! # }
//! ```

mod clock;
mod driver;
mod fast;
mod limiter;

pub use clock::Clock;
pub use driver::{Driver, Journal, Outcome, Pending};
pub use limiter::{
    Acquire, AcquireFuture, Admitted, HandleGuard, Kind, LimitHandle, Limiter, Names, Rate,
    SlotGuard, Slots,
};
