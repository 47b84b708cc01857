//! The independent checker of the fault tests: every client records, on
//! its own clock, the instant a grant was acknowledged and the instant it
//! started releasing. Those intervals lie inside the server's holding
//! intervals, so at no instant may more of them overlap than the limit has
//! slots, whatever happened to the server in between.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the clients saw: (instant, +1 for an acknowledged grant, -1 for
/// the start of a release).
#[derive(Clone, Default)]
pub struct Checker(Arc<Mutex<Vec<(Instant, i32)>>>);

impl Checker {
    /// A grant was acknowledged, now.
    pub fn granted(&self) {
        self.0.lock().unwrap().push((Instant::now(), 1));
    }

    /// A release starts, now: the holder no longer counts on its slots.
    pub fn releasing(&self) {
        self.0.lock().unwrap().push((Instant::now(), -1));
    }

    /// How many grants were seen.
    pub fn grants(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, d)| *d > 0)
            .count()
    }

    /// Panics if more than `slots` ever held at once; returns the most
    /// that did and how many events were checked.
    pub fn check(&self, slots: usize) -> (i32, usize) {
        let mut events = self.0.lock().unwrap().clone();
        // At equal instants, count releases first: they started before.
        events.sort();
        let (mut holding, mut most) = (0, 0);
        for (at, delta) in &events {
            holding += delta;
            most = most.max(holding);
            assert!(holding <= slots as i32, "{holding} holders at {at:?}");
        }
        (most, events.len())
    }
}
