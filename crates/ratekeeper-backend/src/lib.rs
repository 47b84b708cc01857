//! What a ratekeeper server does with its state, behind one trait.
//!
//! [`Backend`] lists the whole operations a server performs: limit CRUD,
//! acquire (with its wait), renew, release, reads and a stream of state
//! changes. Each is atomic in the backend, so the server stays thin and a
//! backend can be swapped without touching it.
//!
//! [`Embedded`] is the default backend: the engine in this process on the
//! driver's clock, with every change made durable by a group-commit writer
//! (a change log in front of a redb file) before the answer that depends on
//! it goes out. After a crash and
//! restart on the same directory, limit definitions, live leases and
//! decaying slots are back, so a restart never admits more than a limit
//! allows.

mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
mod embedded;
/// The change log's frame format and its reader, public for the fuzz
/// targets (`fuzz/`).
#[cfg(feature = "durable")]
pub mod log;
#[cfg(feature = "durable")]
mod store;

pub use backend::{AcquireSpec, Backend, Error, Event, Granted, LimitDetail, Waiting};
pub use embedded::Embedded;
#[cfg(feature = "durable")]
pub use store::{CHECKPOINT_BYTES, DB_FILE, FORMAT, LOG_FILE, StoreError};

/// Checking and recovering a damaged store (`ratekeeper store`).
#[cfg(feature = "durable")]
pub mod repair {
    pub use crate::store::{check, recover};
}
