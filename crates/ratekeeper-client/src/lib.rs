//! The Rust client for ratekeeper: global concurrency limits and rate limits
//! shared by every thread, process and machine that asks.
//!
//! The same code works against a server (`http://host:port`) and against an
//! engine in this process (`memory://`), so tests and single-process tools
//! need no server.
//!
//! ```no_run
//! # async fn example() -> Result<(), ratekeeper_client::Error> {
//! use std::time::Duration;
//! use ratekeeper_client::Client;
//!
//! let client = Client::connect("http://127.0.0.1:7171")?;
//! // At most `slots` holders at once, across every process using "vendor-api".
//! let lease = client.concurrency("vendor-api").holder("worker-1").timeout(Duration::from_secs(60)).await?;
//! // ... call the vendor; the lease is renewed in the background ...
//! lease.release().await?;
//!
//! // At most N per second, across every process using "vendor-rps".
//! client.rate_limit("vendor-rps").await?;
//! # Ok(()) }
//! ```
//!
//! Waiting follows the server's ticket protocol: a long wait continues on a
//! ticket that keeps its place in the queue, connection errors are retried
//! with backoff, and dropping the future gives up the place. A
//! [`LeaseGuard`] renews its lease at about a third of its TTL, releases it
//! when dropped, and says so if the lease is ever lost. [`LimitLayer`] puts
//! the same limits in front of any tower service, an HTTP client say.

mod client;
mod error;
mod guard;
mod layer;
mod transport;

pub use client::{Client, Concurrency, Names, RateLimit, host_name, reporter};
pub use error::Error;
pub use guard::LeaseGuard;
pub use layer::{BoxError, HttpThrottling, LimitLayer, Limited, NoReports, ThrottleSignal};
pub use ratekeeper_api as api;
pub use ratekeeper_api::{Lease, Limit, encoded_name};
pub use transport::{RECONNECT_WINDOW, Tls};
