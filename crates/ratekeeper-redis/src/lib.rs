//! The Redis backend: every ratekeeper server pointed at the same Redis
//! serves the same limits, leases and one fair queue. Redis is the engine;
//! an instance holds no authoritative state.
//!
//! Each [`Backend`](ratekeeper_backend::Backend) operation is one Lua script (see `src/lua/`), run
//! atomically by Redis on Redis's own clock (`TIME`), so instances never
//! need agreeing clocks. A release that lets a waiter in grants it inside
//! the same script, stores the outcome and publishes it on a channel; the
//! instance that parks that waiter hears it within milliseconds and answers
//! its client. Nothing polls in the normal course: each instance sleeps
//! until the next instant something is due (a lease expiry, a head that
//! fits once decay has made room), which the scripts announce. Two checks
//! exist only as backstops against lost messages: a parked waiter looks up
//! its outcome every [`STATUS_BACKSTOP`], and every instance runs the due
//! work at least every [`TICK_BACKSTOP`].
//!
//! Each instance heart-beats a key that expires after [`INSTANCE_TTL`];
//! the queued requests of an instance that stopped (killed, cut off) are
//! withdrawn by the others, and its clients' leases expire by their TTL.
//!
//! The state is split into partitions (see `layout.rs`): each is one hash
//! tag, so one Redis Cluster slot, and each operation on it one atomic
//! call. A single Redis keeps one partition; on a cluster each limit lives
//! in the partition its name hashes to, and the channels are sharded
//! (`SPUBLISH`), so a message stays on the node of its partition. A
//! request on limits of several partitions takes them one partition after
//! the other (see `across.rs`).
//!
//! The modules, each using only those listed before it or none:
//! - `options`: how an instance uses its store; the scripts' clock in tests.
//! - `layout`: partitions, key prefixes and lease ids.
//! - `connection`: one Redis or a Cluster, and subscriptions.
//! - `scripts`, `lua/`: the function library and its calls; `reply`: their
//!   answers.
//! - `markers`: the layout version and partition count a store records.
//! - `instance`: an instance's connections, parked requests and function
//!   calls, one per operation and partition.
//! - `parked`: requests an instance waits for.
//! - `across`: requests on limits of several partitions.
//! - `tasks`: listening, due work, the event feed, the heartbeat.
//! - `backend`: [`RedisBackend`]: connecting, and the `Backend` operations.

mod across;
mod backend;
mod connection;
mod instance;
mod layout;
mod markers;
mod options;
mod parked;
mod reply;
mod scripts;
mod tasks;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

pub use crate::backend::RedisBackend;
pub use crate::layout::MAX_PARTITIONS;
pub use crate::markers::KEY_LAYOUT;
pub use crate::options::{ManualClock, Options};

/// How often a parked waiter looks up its outcome, in case the message
/// announcing it was lost.
pub const STATUS_BACKSTOP: Duration = Duration::from_secs(2);
/// The longest an instance goes without doing the due work, in case the
/// message announcing it was lost.
pub const TICK_BACKSTOP: Duration = Duration::from_secs(1);
/// How long an instance counts as alive after its last heartbeat.
pub const INSTANCE_TTL: Duration = Duration::from_secs(3);
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// How many partitions a new store on a Redis Cluster gets unless told.
pub const DEFAULT_CLUSTER_PARTITIONS: u32 = 16;
