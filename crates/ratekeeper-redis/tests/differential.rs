//! The scripts against the pure engine: random operation sequences at
//! explicit instants, applied to both, must get the same answers and leave
//! the same state after every step. The scripts run on a manual clock, and
//! time moves only when the sequence says so; due work (expiries, decay)
//! is done at each instant either side says something is due.
//!
//! Decay rates divide a million, so that the engine's nanoseconds and the
//! scripts' microseconds round alike.
//!
//! Besides plain limits, the sequences make, change and delete a template
//! `t:*` (with room for one or two instances), ask for its keys `t:x` and
//! `t:y`, pause them and give one a limit of its own. Limits may be
//! adaptive (halved by each throttling report, back in one step a second
//! later: scales stay powers of two, so rates still divide a million).

use std::time::Duration;

use proptest::prelude::*;
use ratekeeper_backend::{AcquireSpec, Backend, Error, Granted};
use ratekeeper_core::{
    AcquireRequest, Adaptive, Admission, Claim, Engine, Held, InstanceOrder, InstanceQuery,
    LeaseId, LimitError, LimitPatch, LimitSpec, LimitView, Mode, PauseSpec, RequestId,
    ThrottleReport, Timestamp,
};
use ratekeeper_redis::testing::RedisServer;
use ratekeeper_redis::{ManualClock, Options, RedisBackend};
use tokio::task::JoinHandle;

/// What requests ask for: limits, or keys of the template.
const NAMES: [&str; 4] = ["a", "b", "t:x", "t:y"];
/// What limit operations act on: those, and the template.
const TARGETS: [&str; 5] = ["a", "b", "t:x", "t:y", "t:*"];
const TEMPLATE: &str = "t:*";
/// Halves the limit on each report and climbs back in one step.
const HALVING: Adaptive = Adaptive {
    decrease_factor: 0.5,
    recovery_seconds: 1.0,
};
const DECAYS: [f64; 4] = [0.0, 10.0, 50.0, 100.0];
const START_MS: u64 = 1_800_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Create {
        limit: usize,
        slots: u64,
        decay: usize,
        max_instances: u64,
        adaptive: bool,
    },
    Acquire {
        limits: Vec<usize>,
        occupy: u64,
        rate: bool,
        ttl_s: u64,
        try_once: bool,
    },
    Release {
        lease: usize,
    },
    Renew {
        lease: usize,
    },
    Update {
        limit: usize,
        slots: Option<u64>,
        active: Option<bool>,
        adaptive: Option<bool>,
    },
    Throttled {
        limit: usize,
    },
    Reset {
        limit: usize,
    },
    Delete {
        limit: usize,
    },
    Advance {
        ms: u64,
    },
    Pause {
        limit: usize,
        ms: u64,
    },
    Resume {
        limit: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let limit = 0..TARGETS.len();
    prop_oneof![
        4 => (limit.clone(), 0..4u64, 0..DECAYS.len(), 1..3u64, proptest::bool::weighted(0.3))
            .prop_map(|(limit, slots, decay, max_instances, adaptive)| Op::Create { limit, slots, decay, max_instances, adaptive }),
        6 => (proptest::sample::subsequence(vec![0, 1, 2, 3], 1..=2), 1..3u64, any::<bool>(), 1..4u64, proptest::bool::weighted(0.2))
            .prop_map(|(limits, occupy, rate, ttl_s, try_once)| Op::Acquire { limits, occupy, rate, ttl_s, try_once }),
        4 => any::<usize>().prop_map(|lease| Op::Release { lease }),
        1 => any::<usize>().prop_map(|lease| Op::Renew { lease }),
        2 => (limit.clone(), proptest::option::of(0..4u64), proptest::option::of(any::<bool>()), proptest::option::weighted(0.2, any::<bool>()))
            .prop_map(|(limit, slots, active, adaptive)| Op::Update { limit, slots, active, adaptive }),
        2 => limit.clone().prop_map(|limit| Op::Throttled { limit }),
        1 => limit.clone().prop_map(|limit| Op::Reset { limit }),
        1 => limit.clone().prop_map(|limit| Op::Delete { limit }),
        4 => prop_oneof![1..200u64, 200..3000u64].prop_map(|ms| Op::Advance { ms }),
        1 => (limit.clone(), 1..3000u64).prop_map(|(limit, ms)| Op::Pause { limit, ms }),
        1 => limit.prop_map(|limit| Op::Resume { limit }),
    ]
}

/// The engine and the scripts side by side.
struct Pair {
    engine: Engine,
    redis: RedisBackend,
    clock: ManualClock,
    now: Timestamp,
    /// Leases granted on both: the engine's id and the scripts'.
    leases: Vec<(LeaseId, LeaseId)>,
    /// Requests queued on both.
    queued: Vec<(RequestId, JoinHandle<Result<Granted, Error>>)>,
}

fn code<E: std::fmt::Debug>(
    result: &Result<impl Sized, E>,
    to_code: impl Fn(&E) -> &'static str,
) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(err) => to_code(err),
    }
}

impl Pair {
    fn set(&mut self, at: Timestamp) {
        self.now = at;
        self.clock.set(at);
    }

    /// Moves both to `target`, stopping at every instant either has
    /// something due.
    async fn advance(&mut self, target: Timestamp) {
        loop {
            let redis_next = self.redis.tick().await.unwrap();
            self.settle_wakes().await;
            let next = [self.engine.next_wakeup(), redis_next]
                .into_iter()
                .flatten()
                .filter(|&at| at > self.now && at <= target)
                .min();
            let Some(at) = next else { break };
            self.set(at);
            self.engine.advance(at);
        }
        self.set(target);
        self.engine.advance(target);
        self.redis.tick().await.unwrap();
        self.settle_wakes().await;
    }

    /// Every request the engine decided must be decided alike by the
    /// scripts.
    async fn settle_wakes(&mut self) {
        for wake in self.engine.take_wakes() {
            let index = self
                .queued
                .iter()
                .position(|(id, _)| *id == wake.request)
                .expect("a wake for a queued request");
            let (_, handle) = self.queued.remove(index);
            let redis = tokio::time::timeout(Duration::from_secs(1), handle)
                .await
                .expect("the scripts decide what the engine decided")
                .unwrap();
            match (wake.outcome, redis) {
                (Ok(grant), Ok(granted)) => self.pair_leases(grant.held, granted),
                (Err(expected), Err(got)) => assert_eq!(got.code(), expected.code()),
                (expected, got) => panic!("engine {expected:?}, scripts {got:?}"),
            }
        }
    }

    fn pair_leases(&mut self, held: Held, granted: Granted) {
        match (held, granted.lease) {
            (Held::Lease(engine), Some(redis)) => {
                assert_eq!(engine.expires_at, redis.expires_at, "lease expiry");
                self.leases.push((engine.id, redis.id));
            }
            (Held::Nothing, None) => {}
            (held, lease) => panic!("engine holds {held:?}, scripts {lease:?}"),
        }
    }

    async fn apply(&mut self, op: &Op) {
        let now = self.now;
        match op {
            Op::Create {
                limit,
                slots,
                decay,
                max_instances,
                adaptive,
            } => {
                let name = TARGETS[*limit];
                let spec = LimitSpec {
                    slot_decay_per_second: DECAYS[*decay],
                    max_instances: (name == TEMPLATE).then_some(*max_instances),
                    adaptive: adaptive.then_some(HALVING),
                    ..LimitSpec::concurrency(name, *slots)
                };
                let expected = self.engine.create_limit(now, &spec);
                let got = self.redis.create_limit(spec).await;
                assert_eq!(code(&got, Error::code), code(&expected, |e| e.code()));
            }
            Op::Acquire {
                limits,
                occupy,
                rate,
                ttl_s,
                try_once,
            } => {
                self.acquire(limits, *occupy, *rate, *ttl_s, *try_once)
                    .await
            }
            Op::Release { lease } | Op::Renew { lease } => {
                if self.leases.is_empty() {
                    return;
                }
                let (engine_id, redis_id) = self.leases[lease % self.leases.len()];
                if matches!(op, Op::Release { .. }) {
                    let expected = self.engine.release(now, engine_id);
                    let got = self.redis.release(redis_id).await;
                    assert_eq!(code(&got, Error::code), code(&expected, |e| e.code()));
                } else {
                    let expected = self.engine.renew(now, engine_id, None);
                    let got = self.redis.renew(redis_id, None).await;
                    assert_eq!(code(&got, Error::code), code(&expected, |e| e.code()));
                    if let (Ok(e), Ok(r)) = (expected, got) {
                        assert_eq!(e.expires_at, r.expires_at);
                    }
                }
            }
            Op::Update {
                limit,
                slots,
                active,
                adaptive,
            } => {
                let patch = LimitPatch {
                    slots: *slots,
                    active: *active,
                    adaptive: adaptive.map(|on| on.then_some(HALVING)),
                    ..LimitPatch::default()
                };
                let expected = self.engine.update_limit(now, TARGETS[*limit], &patch);
                let got = self.redis.update_limit(TARGETS[*limit], patch).await;
                assert_eq!(code(&got, Error::code), code(&expected, |e| e.code()));
            }
            Op::Reset { limit } => {
                let expected = self.engine.reset_limit(now, TARGETS[*limit]);
                let got = self.redis.reset_limit(TARGETS[*limit]).await;
                assert_eq!(code(&got, Error::code), code(&expected, |e| e.code()));
            }
            Op::Delete { limit } => {
                let expected = self.engine.delete_limit(now, TARGETS[*limit]);
                let got = self.redis.delete_limit(TARGETS[*limit]).await;
                assert_eq!(code(&got, Error::code), code(&expected, |e| e.code()));
            }
            Op::Pause { limit, ms } => {
                let spec = PauseSpec::for_seconds(*ms as f64 / 1e3);
                let expected = self.engine.pause(now, TARGETS[*limit], &spec);
                let got = self.redis.pause_limit(TARGETS[*limit], spec).await;
                assert_eq!(
                    got.map(|view| view.paused.map(|p| p.until))
                        .map_err(|e| e.code()),
                    expected
                        .map(|view| view.paused.map(|p| p.until))
                        .map_err(|e| e.code())
                );
            }
            Op::Throttled { limit } => {
                let report = ThrottleReport::default();
                let expected = self.engine.report_throttled(now, TARGETS[*limit], &report);
                let got = self.redis.report_throttled(TARGETS[*limit], report).await;
                let shown = |view: LimitView| {
                    (view.paused.map(|p| p.until), view.adaptive.map(|a| a.scale))
                };
                assert_eq!(
                    got.map(shown).map_err(|e| e.code()),
                    expected.map(shown).map_err(|e| e.code())
                );
            }
            Op::Resume { limit } => {
                let expected = self.engine.resume(now, TARGETS[*limit]);
                let got = self.redis.resume_limit(TARGETS[*limit]).await;
                assert_eq!(code(&got, Error::code), code(&expected, |e| e.code()));
            }
            Op::Advance { ms } => {
                let target = Timestamp::from_unix_millis(now.as_unix_millis() + ms);
                self.advance(target).await;
            }
        }
        self.settle_wakes().await;
    }

    async fn acquire(
        &mut self,
        limits: &[usize],
        occupy: u64,
        rate: bool,
        ttl_s: u64,
        try_once: bool,
    ) {
        let names: Vec<&str> = limits.iter().map(|&i| NAMES[i]).collect();
        let ttl = Duration::from_secs(ttl_s);
        let timeout = try_once.then_some(Duration::ZERO);
        let request = AcquireRequest {
            names: &names,
            occupy,
            claim: if rate {
                Claim::Rate
            } else {
                Claim::Lease { ttl, holder: None }
            },
            timeout,
            create_if_missing: false,
        };
        let expected = self.engine.acquire(self.now, &request);
        let spec = AcquireSpec {
            names: names.iter().map(|n| n.to_string()).collect(),
            occupy,
            mode: if rate {
                Mode::RateLimit
            } else {
                Mode::Concurrency
            },
            lease_ttl: ttl,
            holder: None,
            timeout,
            create_if_missing: false,
        };
        let handle = tokio::spawn(self.redis.acquire(spec));
        match expected {
            Ok(Admission::Granted(grant)) => {
                let granted = handle.await.unwrap().expect("granted by the scripts too");
                self.pair_leases(grant.held, granted);
            }
            Ok(Admission::Queued(id)) => {
                // Queued by the scripts before anything else happens.
                let name = names[0];
                let expected = self.engine.waiters_on(name).unwrap().len();
                loop {
                    assert!(
                        !handle.is_finished(),
                        "the scripts decided a request the engine queued"
                    );
                    // A key's instance is made by the acquire itself.
                    let waiters = match self.redis.limit(name).await {
                        Ok(detail) => detail.waiters.len(),
                        Err(Error::Limit(LimitError::NotFound { .. })) => 0,
                        Err(err) => panic!("{err}"),
                    };
                    if waiters == expected {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                self.queued.push((id, handle));
            }
            Err(expected) => {
                let got = handle.await.unwrap();
                assert_eq!(code(&got, Error::code), expected.code(), "{got:?}");
            }
        }
    }

    async fn assert_same_state(&self, step: usize, op: &Op) {
        let engine: Vec<LimitView> = self.engine.limits();
        let redis = self.redis.limits().await.unwrap();
        assert_eq!(engine.len(), redis.len(), "after step {step} {op:?}");
        for (e, r) in engine.iter().zip(&redis) {
            let context = format!("after step {step} {op:?}: engine {e:?}, scripts {r:?}");
            assert_eq!(
                (
                    &e.name,
                    e.slots,
                    e.active,
                    e.held,
                    e.waiting,
                    e.waiting_slots,
                    e.counters
                ),
                (
                    &r.name,
                    r.slots,
                    r.active,
                    r.held,
                    r.waiting,
                    r.waiting_slots,
                    r.counters
                ),
                "{context}"
            );
            assert!((e.decaying - r.decaying).abs() < 1e-6, "{context}");
            assert_eq!(e.template, r.template, "{context}");
            assert_eq!(e.adaptive, r.adaptive, "{context}");
        }
        let all = InstanceQuery {
            prefix: "",
            order: InstanceOrder::Busiest,
            after: None,
            count: 10,
        };
        if let Ok(engine) = self.engine.instances(TEMPLATE, &all) {
            let redis = self.redis.instances(TEMPLATE, all).await.unwrap();
            let shown = |views: &[LimitView]| {
                let fields = |v: &LimitView| {
                    let scale = v.adaptive.map(|a| a.scale);
                    (v.name.clone(), v.held, v.waiting, v.paused.is_some(), scale)
                };
                views.iter().map(fields).collect::<Vec<_>>()
            };
            assert_eq!(
                shown(&engine),
                shown(&redis),
                "instances after step {step} {op:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_scripts_agree_with_the_engine(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // One Redis per case, stopped with it.
            let server = RedisServer::start();
            let clock = ManualClock::default();
            let start = Timestamp::from_unix_millis(START_MS);
            clock.set(start);
            let options = Options {
                clock: Some(clock.clone()),
                ..Options::default()
            };
            let redis = RedisBackend::connect_with(&server.url(), options)
                .await
                .unwrap();
            let mut pair = Pair {
                engine: Engine::new([7; 32]),
                redis,
                clock,
                now: start,
                leases: Vec::new(),
                queued: Vec::new(),
            };
            pair.engine.advance(start);
            for (step, op) in ops.iter().enumerate() {
                pair.apply(op).await;
                pair.assert_same_state(step, op).await;
            }
            for (_, handle) in pair.queued.drain(..) {
                handle.abort();
            }
        });
    }
}
