//! A small harness that drives the engine with explicit time.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::time::Duration;

use ratekeeper_core::{
    AcquireError, AcquireRequest, Admission, Claim, Engine, Grant, Held, LeaseId, LimitSpec,
    LimitView, Permit, RequestId, Timestamp,
};

/// An engine and the simulated time it is at.
pub struct Sim {
    pub engine: Engine,
    pub now: Timestamp,
}

pub const TTL: Duration = Duration::from_secs(30);

impl Sim {
    pub fn new() -> Self {
        Sim {
            engine: Engine::new([42; 32]),
            now: Timestamp::from_unix_millis(1_700_000_000_000),
        }
    }

    pub fn concurrency(&mut self, name: &str, slots: u64) {
        self.engine
            .create_limit(self.now, &LimitSpec::concurrency(name, slots))
            .unwrap();
    }

    pub fn rate(&mut self, name: &str, per_second: f64, burst: u64) {
        self.engine
            .create_limit(self.now, &LimitSpec::rate(name, per_second, burst))
            .unwrap();
    }

    /// Moves time forward and lets the engine catch up.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now.saturating_add(by);
        self.engine.advance(self.now);
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.advance(Duration::from_millis(ms));
    }

    /// Jumps to the engine's next wake-up instant, if any.
    pub fn advance_to_wakeup(&mut self) -> Option<Timestamp> {
        let at = self.engine.next_wakeup()?;
        self.now = self.now.max(at);
        self.engine.advance(self.now);
        Some(at)
    }

    pub fn acquire(
        &mut self,
        names: &[&str],
        occupy: u64,
        claim: Claim<'_>,
        timeout: Option<Duration>,
    ) -> Result<Admission, AcquireError> {
        let request = AcquireRequest {
            occupy,
            timeout,
            ..AcquireRequest::new(names, claim)
        };
        self.engine.acquire(self.now, &request)
    }

    pub fn lease_claim() -> Claim<'static> {
        Claim::Lease {
            ttl: TTL,
            holder: Some("test"),
        }
    }

    /// A lease request that must be granted at once.
    pub fn lease(&mut self, names: &[&str], occupy: u64) -> LeaseId {
        match self.acquire(names, occupy, Self::lease_claim(), None) {
            Ok(Admission::Granted(grant)) => lease_of(grant),
            other => panic!("expected an immediate lease on {names:?}, got {other:?}"),
        }
    }

    /// A lease request that must queue.
    pub fn queue(&mut self, names: &[&str], occupy: u64) -> RequestId {
        self.queue_with(names, occupy, Self::lease_claim(), None)
    }

    pub fn queue_with(
        &mut self,
        names: &[&str],
        occupy: u64,
        claim: Claim<'_>,
        timeout: Option<Duration>,
    ) -> RequestId {
        match self.acquire(names, occupy, claim, timeout) {
            Ok(Admission::Queued(id)) => id,
            other => panic!("expected {names:?} to queue, got {other:?}"),
        }
    }

    /// A rate-mode request; whether it was granted at once.
    pub fn try_rate(&mut self, names: &[&str], occupy: u64) -> bool {
        match self.acquire(names, occupy, Claim::Rate, Some(Duration::ZERO)) {
            Ok(Admission::Granted(_)) => true,
            Err(AcquireError::WouldBlock) => false,
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// A permit request that must be granted at once.
    pub fn permit(&mut self, names: &[&str], occupy: u64) -> Permit {
        match self.acquire(names, occupy, Claim::Permit, None) {
            Ok(Admission::Granted(Grant {
                held: Held::Permit(permit),
                ..
            })) => permit,
            other => panic!("expected an immediate permit, got {other:?}"),
        }
    }

    /// The wakes since the last call, granted ones with their lease.
    pub fn wakes(&mut self) -> Vec<(RequestId, Result<Held, AcquireError>)> {
        self.engine
            .take_wakes()
            .into_iter()
            .map(|wake| (wake.request, wake.outcome.map(|grant| grant.held)))
            .collect()
    }

    /// The requests granted since the last call; panics on failures.
    pub fn granted(&mut self) -> Vec<RequestId> {
        self.wakes()
            .into_iter()
            .map(|(id, outcome)| match outcome {
                Ok(_) => id,
                Err(err) => panic!("request {id:?} failed: {err}"),
            })
            .collect()
    }

    /// The lease of the single request granted since the last call.
    pub fn granted_lease(&mut self) -> LeaseId {
        let mut wakes = self.wakes();
        assert_eq!(wakes.len(), 1, "expected one grant, got {wakes:?}");
        match wakes.pop().unwrap().1 {
            Ok(Held::Lease(lease)) => lease.id,
            other => panic!("expected a lease, got {other:?}"),
        }
    }

    pub fn view(&self, name: &str) -> LimitView {
        self.engine.limit(name).unwrap()
    }

    pub fn held(&self, name: &str) -> u64 {
        self.view(name).held
    }

    pub fn release(&mut self, lease: LeaseId) {
        self.engine.release(self.now, lease).unwrap();
    }
}

pub fn lease_of(grant: Grant) -> LeaseId {
    match grant.held {
        Held::Lease(lease) => lease.id,
        other => panic!("expected a lease, got {other:?}"),
    }
}
