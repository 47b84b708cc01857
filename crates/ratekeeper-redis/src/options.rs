//! How an instance uses its store, and the scripts' clock in tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ratekeeper_core::Timestamp;

/// A clock for tests that compare the scripts with the engine: while one
/// is given, every script acts at its instant instead of Redis's `TIME`.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Sets the instant the scripts act at (kept in microseconds).
    pub fn set(&self, at: Timestamp) {
        self.0.store(at.as_unix_nanos() / 1000, Ordering::SeqCst);
    }

    pub(crate) fn micros(&self) -> String {
        self.0.load(Ordering::SeqCst).to_string()
    }
}

/// How an instance uses its store.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The key prefix: instances share state only with those of the same
    /// prefix. `None`: `ratekeeper`.
    pub prefix: Option<String>,
    /// How many partitions (1 to [`MAX_PARTITIONS`](crate::MAX_PARTITIONS)) a new store is split
    /// into; a store keeps the count it was first given, and an instance
    /// asking for another is refused. `None`: whatever the store has, and
    /// for a new store 1 on a single Redis, [`DEFAULT_CLUSTER_PARTITIONS`](crate::DEFAULT_CLUSTER_PARTITIONS)
    /// on a cluster.
    pub partitions: Option<u32>,
    /// The scripts' clock, for tests that compare them with the engine at
    /// explicit instants; `None`: Redis's own.
    pub clock: Option<ManualClock>,
}
