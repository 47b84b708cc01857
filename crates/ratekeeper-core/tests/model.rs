//! Random operations run against the engine and against a deliberately naive
//! reference model, which keeps plain lists and recomputes everything from
//! scratch at every step: who is granted (one pass over all waiters in
//! arrival order), decaying levels (a replay of every rate grant since the
//! last reset). Answers, wakes, occupancy, queues and counters must agree,
//! and the engine's invariants are checked after every step.
//!
//! Decay rates are chosen so that one slot decays in a whole number of
//! nanoseconds; the model then computes in exact integers, and any
//! disagreement is a real one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use ratekeeper_core::{
    AcquireError, AcquireRequest, Admission, Change, Claim, Counters, Engine, Grant, Held,
    InstanceOrder, InstanceQuery, LeaseId, LeaseView, LimitPatch, LimitRecord, LimitSpec,
    LimitView, Pacing, PauseSpec, Records, RequestId, Timestamp,
};

const NAMES: [&str; 3] = ["a", "b", "c"];
/// The template, and the keys requests name (indices 3 and 4 of a request).
const TEMPLATE: &str = "t:*";
const KEYS: [&str; 2] = ["t:1", "t:2"];

/// A request's name by index: a limit of `NAMES`, then a key of `KEYS`.
fn name_of(i: usize) -> &'static str {
    if i < NAMES.len() {
        NAMES[i]
    } else {
        KEYS[i - NAMES.len()]
    }
}
/// Decay rates (slots per second); each slot decays in a whole number of ns.
const RATES: [f64; 5] = [0.0, 1.0, 4.0, 5.0, 10.0];
const START: u64 = 1_700_000_000 * 1_000_000_000;

// ----- the reference model ---------------------------------------------------

#[derive(Debug, Clone)]
struct ModelLimit {
    id: u64,
    slots: u64,
    /// Nanoseconds one slot takes to decay; `None` without decay.
    interval: Option<u64>,
    active: bool,
    held: u64,
    /// Every rate grant since the last reset: (instant, occupy).
    rate_grants: Vec<(u64, u64)>,
    counters: Counters,
    /// Nothing fits before this instant (0: never paused).
    paused_until: u64,
    /// An instance of the template.
    instance: bool,
    /// Resets so far: a reservation taken before one frees nothing.
    resets: u64,
}

impl ModelLimit {
    /// Nanoseconds until every decaying slot has decayed, by replaying every
    /// rate grant from the start.
    fn drain_ns(&self, now: u64) -> u64 {
        let Some(interval) = self.interval else {
            return 0;
        };
        let (mut level, mut last) = (0u64, 0u64);
        for &(at, occupy) in &self.rate_grants {
            level = level.saturating_sub(at - last) + occupy * interval;
            last = at;
        }
        level.saturating_sub(now - last)
    }

    fn decaying(&self, now: u64) -> f64 {
        self.interval
            .map_or(0.0, |i| self.drain_ns(now) as f64 / i as f64)
    }

    fn fits(&self, occupy: u64, now: u64) -> bool {
        if now < self.paused_until {
            return false;
        }
        let Some(free) = self.slots.checked_sub(self.held + occupy) else {
            return false;
        };
        self.interval
            .is_none_or(|interval| self.drain_ns(now) <= free * interval)
    }
}

#[derive(Debug, Clone)]
struct ModelWaiter {
    /// Limit ids, as resolved at arrival.
    limits: Vec<u64>,
    occupy: u64,
    rate: bool,
    ttl: u64,
    deadline: Option<u64>,
}

#[derive(Debug, Clone)]
struct ModelLease {
    limits: Vec<u64>,
    occupy: u64,
    ttl: u64,
    expires_at: u64,
}

/// How a request or lease operation ended, in the terms both sides share.
type Outcome = Result<(), &'static str>;

#[derive(Debug, Default)]
struct Model {
    now: u64,
    next_limit: u64,
    limits: BTreeMap<String, ModelLimit>,
    next_request: u64,
    waiters: BTreeMap<u64, ModelWaiter>,
    /// Keyed by the request that was granted the lease.
    leases: BTreeMap<u64, ModelLease>,
    /// Revoked leases and the instant their tombstone goes.
    revoked: BTreeMap<u64, u64>,
    /// Wakes since the last step: (request, outcome).
    wakes: Vec<(u64, Outcome)>,
    /// Requests granted in the current step (for the FIFO check).
    granted_now: Vec<u64>,
    /// Rate grants, as (limit id, instant, occupy), not yet collected.
    rate_log: Vec<(u64, u64, u64)>,
    /// The template `t:*`: its definition, kept as a limit that nobody
    /// acquires on (its `held` stays 0), and its bound.
    template: Option<(ModelLimit, u64)>,
    /// Reservations by limit index: the limit's id and resets when taken,
    /// and the slots held.
    reservations: HashMap<usize, (u64, u64, u64)>,
}

impl Model {
    fn by_id(&mut self, id: u64) -> Option<&mut ModelLimit> {
        self.limits.values_mut().find(|l| l.id == id)
    }

    fn create(&mut self, name: &str, slots: u64, rate: f64, active: bool) {
        self.limits.insert(
            name.into(),
            ModelLimit {
                id: self.next_limit,
                slots,
                interval: (rate > 0.0).then(|| (1e9 / rate) as u64),
                active,
                held: 0,
                rate_grants: Vec::new(),
                counters: Counters::default(),
                paused_until: 0,
                instance: false,
                resets: 0,
            },
        );
        self.next_limit += 1;
    }

    fn count(&mut self, limits: &[u64], update: impl Fn(&mut Counters)) {
        for &id in limits {
            if let Some(limit) = self.by_id(id).filter(|l| l.active) {
                update(&mut limit.counters);
                if limit.instance {
                    update(&mut self.template.as_mut().unwrap().0.counters);
                }
            }
        }
    }

    /// The stable key a rate history is filed under: an instance's key
    /// outlives the instance, and the window bound must hold across it.
    fn history_key(&self, id: u64) -> u64 {
        match self.limits.iter().find(|(_, l)| l.id == id) {
            Some((name, l)) if l.instance => {
                1_000_000 + KEYS.iter().position(|k| k == name).unwrap() as u64
            }
            _ => id,
        }
    }

    /// A new instance of the template for `key`: its definition, its pause
    /// if one holds, fresh counters.
    fn new_instance(&mut self, key: &str) {
        let (template, _) = self.template.as_ref().unwrap();
        let mut instance = template.clone();
        instance.id = self.next_limit;
        instance.instance = true;
        instance.counters = Counters::default();
        if instance.paused_until <= self.now {
            instance.paused_until = 0;
        }
        self.next_limit += 1;
        self.limits.insert(key.into(), instance);
    }

    /// Drops every instance that holds nothing, has nobody waiting, has no
    /// decaying slots left and is not paused.
    fn drop_idle(&mut self) {
        let now = self.now;
        let waiting: Vec<u64> = self
            .waiters
            .values()
            .flat_map(|w| w.limits.clone())
            .collect();
        self.limits.retain(|_, l| {
            !l.instance
                || l.held > 0
                || waiting.contains(&l.id)
                || l.drain_ns(now) > 0
                || l.paused_until > now
        });
    }

    /// Brings the model to `now`: expiries, then grants, then deadlines.
    fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
        let now = self.now;
        self.revoked.retain(|_, until| *until > now);
        let expired: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_at <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let lease = self.free_lease(id);
            self.count(&lease.limits, |c| c.expired_total += 1);
        }
        self.grant_pass();
        let timed_out: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.deadline.is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in timed_out {
            let waiter = self.waiters.remove(&id).unwrap();
            self.count(&waiter.limits, |c| c.denied_total += 1);
            self.wakes.push((id, Err("timeout")));
        }
        self.grant_pass();
    }

    fn free_lease(&mut self, id: u64) -> ModelLease {
        let lease = self.leases.remove(&id).unwrap();
        for &limit in &lease.limits {
            if let Some(limit) = self.by_id(limit) {
                limit.held -= lease.occupy;
            }
        }
        lease
    }

    fn is_active(&self, id: u64) -> bool {
        self.limits.values().any(|l| l.id == id && l.active)
    }

    fn active_of(&self, limits: &[u64]) -> Vec<u64> {
        limits
            .iter()
            .copied()
            .filter(|&l| self.is_active(l))
            .collect()
    }

    fn fits(&self, id: u64, occupy: u64) -> bool {
        let limit = self.limits.values().find(|l| l.id == id).unwrap();
        limit.fits(occupy, self.now)
    }

    /// One pass over every waiter in arrival order: a waiter is granted when
    /// no earlier waiter still waits on any of its active limits and it fits
    /// on all of them.
    fn grant_pass(&mut self) {
        let mut blocked: Vec<u64> = Vec::new();
        let ids: Vec<u64> = self.waiters.keys().copied().collect();
        for id in ids {
            let waiter = self.waiters[&id].clone();
            let active = self.active_of(&waiter.limits);
            let fits = active
                .iter()
                .all(|&l| !blocked.contains(&l) && self.fits(l, waiter.occupy));
            if fits {
                self.waiters.remove(&id);
                self.grant(id, &waiter, &active);
                self.wakes.push((id, Ok(())));
            } else {
                blocked.extend(active);
            }
        }
    }

    fn grant(&mut self, id: u64, waiter: &ModelWaiter, active: &[u64]) {
        let now = self.now;
        for &l in active {
            let key = self.history_key(l);
            let limit = self.by_id(l).unwrap();
            if waiter.rate {
                limit.rate_grants.push((now, waiter.occupy));
                self.rate_log.push((key, now, waiter.occupy));
            } else {
                limit.held += waiter.occupy;
            }
            self.count(&[l], |c| {
                c.granted_total += 1;
                c.granted_slots_total += waiter.occupy;
            });
        }
        self.granted_now.push(id);
        if !waiter.rate {
            self.leases.insert(
                id,
                ModelLease {
                    limits: active.to_vec(),
                    occupy: waiter.occupy,
                    ttl: waiter.ttl,
                    expires_at: now + waiter.ttl,
                },
            );
        }
    }

    /// The model's answer to an acquire: `Ok(true)` granted, `Ok(false)`
    /// queued, or an error code.
    fn acquire(&mut self, now: u64, req: &Acquire) -> Result<bool, &'static str> {
        self.advance(now);
        let names: Vec<&str> = req.names.iter().map(|&i| name_of(i)).collect();
        if req.occupy == 0 {
            return Err("invalid_occupy");
        }
        let possible = |limit: &ModelLimit| {
            if limit.active {
                if limit.slots > 0 && req.occupy > limit.slots {
                    return Err("occupy_exceeds_slots");
                }
                if req.rate && limit.interval.is_none() {
                    return Err("rate_mode_needs_decay");
                }
            }
            Ok(())
        };
        let live = self.limits.values().filter(|l| l.instance).count() as u64;
        let mut new_keys = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err("duplicate_name");
            }
            match (self.limits.get(*name), &self.template) {
                (Some(limit), _) => possible(limit)?,
                (None, Some((template, max))) if name.starts_with("t:") => {
                    if live + new_keys.len() as u64 + 1 > *max {
                        return Err("too_many_instances");
                    }
                    possible(template)?;
                    new_keys.push(*name);
                }
                _ => return Err("limit_not_found"),
            }
        }
        for key in new_keys {
            self.new_instance(key);
        }
        let limits: Vec<u64> = names.iter().map(|name| self.limits[*name].id).collect();
        let id = self.next_request;
        self.next_request += 1;
        let waiter = ModelWaiter {
            limits,
            occupy: req.occupy,
            rate: req.rate,
            ttl: req.ttl_ms * 1_000_000,
            deadline: req.timeout_ms.map(|t| self.now + t * 1_000_000),
        };
        // Every waiter is earlier, so any waiter on an active limit blocks.
        let active = self.active_of(&waiter.limits);
        let queue_free = !self
            .waiters
            .values()
            .any(|w| w.limits.iter().any(|l| active.contains(l)));
        let fits = active.iter().all(|&l| self.fits(l, req.occupy));
        if queue_free && fits {
            self.grant(id, &waiter, &active);
            return Ok(true);
        }
        if req.timeout_ms == Some(0) {
            self.count(&waiter.limits, |c| c.denied_total += 1);
            return Err("would_block");
        }
        self.count(&waiter.limits, |c| c.waited_total += 1);
        self.waiters.insert(id, waiter);
        Ok(false)
    }

    fn lease_outcome(&self, id: u64) -> Outcome {
        if self.revoked.contains_key(&id) {
            Err("lease_revoked")
        } else {
            Err("lease_expired")
        }
    }

    fn release(&mut self, now: u64, id: u64) -> Outcome {
        self.advance(now);
        if !self.leases.contains_key(&id) {
            return self.lease_outcome(id);
        }
        self.free_lease(id);
        self.grant_pass();
        Ok(())
    }

    fn renew(&mut self, now: u64, id: u64) -> Outcome {
        self.advance(now);
        let now = self.now;
        match self.leases.get_mut(&id) {
            Some(lease) => {
                lease.expires_at = now + lease.ttl;
                Ok(())
            }
            None => self.lease_outcome(id),
        }
    }

    fn cancel(&mut self, now: u64, id: u64) -> bool {
        self.advance(now);
        let found = self.waiters.remove(&id).is_some();
        self.grant_pass();
        found
    }

    fn update(&mut self, now: u64, name: &str, slots: Option<u64>, active: Option<bool>) {
        self.advance(now);
        let limit = self.limits.get_mut(name).unwrap();
        limit.slots = slots.unwrap_or(limit.slots);
        limit.active = active.unwrap_or(limit.active);
        let limit = limit.clone();
        self.fail_impossible(&limit);
        self.grant_pass();
    }

    /// Waiters this limit can now never grant fail.
    fn fail_impossible(&mut self, limit: &ModelLimit) {
        let impossible: Vec<(u64, &'static str)> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.limits.contains(&limit.id) && limit.active)
            .filter_map(|(&id, w)| {
                if limit.slots > 0 && w.occupy > limit.slots {
                    Some((id, "occupy_exceeds_slots"))
                } else if w.rate && limit.interval.is_none() {
                    Some((id, "rate_mode_needs_decay"))
                } else {
                    None
                }
            })
            .collect();
        for (id, code) in impossible {
            self.waiters.remove(&id);
            self.wakes.push((id, Err(code)));
        }
    }

    fn create_template(&mut self, now: u64, slots: u64, rate: f64, max: u64) {
        self.advance(now);
        self.create(TEMPLATE, slots, rate, true);
        let template = self.limits.remove(TEMPLATE).unwrap();
        self.template = Some((template, max));
    }

    /// Every definition first, then the impossible waiters, then grants.
    fn update_template(&mut self, now: u64, slots: Option<u64>, active: Option<bool>) {
        self.advance(now);
        let (template, _) = self.template.as_mut().unwrap();
        template.slots = slots.unwrap_or(template.slots);
        template.active = active.unwrap_or(template.active);
        let mut changed = Vec::new();
        for limit in self.limits.values_mut().filter(|l| l.instance) {
            limit.slots = slots.unwrap_or(limit.slots);
            limit.active = active.unwrap_or(limit.active);
            changed.push(limit.clone());
        }
        for limit in &changed {
            self.fail_impossible(limit);
        }
        self.grant_pass();
    }

    fn delete_template(&mut self, now: u64) {
        self.advance(now);
        let instances: Vec<String> = self
            .limits
            .iter()
            .filter(|(_, l)| l.instance)
            .map(|(name, _)| name.clone())
            .collect();
        for name in instances {
            self.remove(&name);
        }
        self.template = None;
        self.grant_pass();
    }

    /// Pausing the template pauses every instance, and new ones start
    /// paused; pausing a key without an instance makes one.
    fn pause_template(&mut self, now: u64, ms: u64) {
        self.advance(now);
        let until = self.now + ms * 1_000_000;
        let (template, _) = self.template.as_mut().unwrap();
        template.paused_until = template.paused_until.max(until);
        for limit in self.limits.values_mut().filter(|l| l.instance) {
            limit.paused_until = limit.paused_until.max(until);
        }
        self.grant_pass();
    }

    fn pause_key(&mut self, now: u64, key: &str, ms: u64) -> Result<(), &'static str> {
        self.advance(now);
        if !self.limits.contains_key(key) {
            let Some((_, max)) = &self.template else {
                return Err("limit_not_found");
            };
            let live = self.limits.values().filter(|l| l.instance).count() as u64;
            if live + 1 > *max {
                return Err("invalid_pause");
            }
            self.new_instance(key);
        }
        let until = self.now + ms * 1_000_000;
        let limit = self.limits.get_mut(key).unwrap();
        limit.paused_until = limit.paused_until.max(until);
        self.grant_pass();
        Ok(())
    }

    fn delete(&mut self, now: u64, name: &str) {
        self.advance(now);
        self.remove(name);
        self.grant_pass();
    }

    fn remove(&mut self, name: &str) {
        let limit = self.limits.remove(name).unwrap();
        let doomed: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.limits.contains(&limit.id))
            .map(|(&id, _)| id)
            .collect();
        for id in doomed {
            self.waiters.remove(&id);
            self.wakes.push((id, Err("limit_deleted")));
        }
        for lease in self.leases.values_mut() {
            lease.limits.retain(|&l| l != limit.id);
        }
    }

    /// A pause only ever moves the end later.
    fn pause(&mut self, now: u64, name: &str, ms: u64) {
        self.advance(now);
        let limit = self.limits.get_mut(name).unwrap();
        limit.paused_until = limit.paused_until.max(self.now + ms * 1_000_000);
        self.grant_pass();
    }

    fn resume(&mut self, now: u64, name: &str) {
        self.advance(now);
        self.limits.get_mut(name).unwrap().paused_until = 0;
        self.grant_pass();
    }

    fn reset(&mut self, now: u64, name: &str) {
        self.advance(now);
        let id = self.limits[name].id;
        let revoked: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.limits.contains(&id))
            .map(|(&lease, _)| lease)
            .collect();
        for lease in revoked {
            let lease_state = self.free_lease(lease);
            self.revoked.insert(lease, lease_state.expires_at);
        }
        let limit = self.limits.get_mut(name).unwrap();
        limit.held = 0;
        limit.resets += 1;
        limit.rate_grants.clear();
        self.grant_pass();
    }

    /// Whether the reservation of limit `i` still holds its slots there.
    fn reservation_live(&self, i: usize) -> bool {
        let Some(&(id, resets, _)) = self.reservations.get(&i) else {
            return false;
        };
        self.limits
            .get(NAMES[i])
            .is_some_and(|l| l.id == id && l.resets == resets)
    }

    /// Takes (or adds to a live reservation) every free slot of a limit
    /// that qualifies: a plain count, nobody queued. Answers the slots
    /// added.
    fn reserve(&mut self, now: u64, i: usize) -> u64 {
        self.advance(now);
        if self.reservations.contains_key(&i) && !self.reservation_live(i) {
            return 0;
        }
        let Some(limit) = self.limits.get(NAMES[i]) else {
            return 0;
        };
        let queued = self.waiters.values().any(|w| w.limits.contains(&limit.id));
        let qualifies = limit.active
            && limit.interval.is_none()
            && limit.paused_until <= now
            && !limit.instance
            && !queued;
        let free = limit.slots.saturating_sub(limit.held);
        if !qualifies || free == 0 {
            return 0;
        }
        let (id, resets) = (limit.id, limit.resets);
        self.limits.get_mut(NAMES[i]).unwrap().held += free;
        self.reservations.entry(i).or_insert((id, resets, 0)).2 += free;
        free
    }

    /// Gives back `slots` of the reservation of limit `i`.
    fn shrink_reservation(&mut self, now: u64, i: usize, slots: u64) {
        self.advance(now);
        let live = self.reservation_live(i);
        let Some(reservation) = self.reservations.get_mut(&i) else {
            return;
        };
        let slots = slots.min(reservation.2);
        reservation.2 -= slots;
        if live {
            self.limits.get_mut(NAMES[i]).unwrap().held -= slots;
        }
        self.grant_pass();
    }
}

// ----- operations ------------------------------------------------------------

#[derive(Debug, Clone)]
struct Acquire {
    names: Vec<usize>,
    occupy: u64,
    rate: bool,
    ttl_ms: u64,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Clone)]
enum Op {
    Acquire(Acquire),
    /// Release one of the leases ever granted (live or not), by index.
    Release(usize),
    Renew(usize),
    /// Cancel one of the requests ever queued, by index.
    Cancel(usize),
    Advance(u64),
    AdvanceToWakeup,
    SetSlots(usize, u64),
    SetActive(usize, bool),
    Reset(usize),
    Delete(usize),
    Create(usize, u64, usize),
    /// Pause a limit for this many milliseconds.
    Pause(usize, u64),
    Resume(usize),
    /// Create the template `t:*`: slots, a rate of `RATES`, max instances.
    CreateTemplate(u64, usize, u64),
    UpdateTemplate(Option<u64>, Option<bool>),
    DeleteTemplate,
    PauseTemplate(u64),
    /// Pause one key of the template.
    PauseKey(usize, u64),
    /// Reserve every free slot of a limit (or add to its reservation).
    Reserve(usize),
    /// Give back this many slots of a limit's reservation.
    ShrinkReservation(usize, u64),
    /// Hand out a rate limit's pacing (the in-process limiter's lock-free
    /// rate path), if it has none out and qualifies.
    Pace(usize),
    /// Admit one slot of a limit by its pacing, as the lock-free path
    /// does; without a pacing, or if the slot does not fit by it, the
    /// pacing is settled and the request tried on the engine instead.
    PacedAdmit(usize),
    /// Move time to the instant the next slot fits by a limit's pacing, or
    /// to 1 ns before it: the boundary a lock-free admission must get
    /// exactly right.
    AdvanceToPaced(usize, bool),
}

fn acquire_strategy() -> impl Strategy<Value = Acquire> {
    (
        proptest::sample::subsequence(vec![0usize, 1, 2, 3, 4], 1..=3).prop_shuffle(),
        prop_oneof![4 => 1u64..=2, 1 => 0u64..=4],
        prop::bool::weighted(0.4),
        1_000u64..=5_000,
        prop_oneof![Just(None), Just(Some(0)), (1u64..4_000).prop_map(Some)],
        prop::bool::weighted(0.05),
    )
        .prop_map(|(mut names, occupy, rate, ttl_ms, timeout_ms, dup)| {
            if dup {
                names.push(names[0]);
            }
            Acquire {
                names,
                occupy,
                rate,
                ttl_ms,
                timeout_ms,
            }
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => acquire_strategy().prop_map(Op::Acquire),
        5 => any::<usize>().prop_map(Op::Release),
        2 => any::<usize>().prop_map(Op::Renew),
        1 => any::<usize>().prop_map(Op::Cancel),
        5 => (0u64..1_500).prop_map(Op::Advance),
        3 => Just(Op::AdvanceToWakeup),
        1 => (0usize..3, 0u64..=4).prop_map(|(l, s)| Op::SetSlots(l, s)),
        1 => (0usize..3, prop::bool::weighted(0.7)).prop_map(|(l, a)| Op::SetActive(l, a)),
        1 => (0usize..3).prop_map(Op::Reset),
        1 => (0usize..3).prop_map(Op::Delete),
        1 => (0usize..3, 0u64..=4, 0usize..RATES.len()).prop_map(|(l, s, r)| Op::Create(l, s, r)),
        1 => (0usize..3, 1u64..3_000).prop_map(|(l, ms)| Op::Pause(l, ms)),
        1 => (0usize..3).prop_map(Op::Resume),
        1 => (0u64..=4, 0usize..RATES.len(), 1u64..=3).prop_map(|(s, r, m)| Op::CreateTemplate(s, r, m)),
        1 => (proptest::option::of(0u64..=4), proptest::option::of(prop::bool::weighted(0.7)))
            .prop_map(|(s, a)| Op::UpdateTemplate(s, a)),
        1 => Just(Op::DeleteTemplate),
        1 => (1u64..3_000).prop_map(Op::PauseTemplate),
        1 => (0usize..2, 1u64..3_000).prop_map(|(k, ms)| Op::PauseKey(k, ms)),
        2 => (0usize..3).prop_map(Op::Reserve),
        2 => (0usize..3, 1u64..=3).prop_map(|(l, s)| Op::ShrinkReservation(l, s)),
        2 => (0usize..3).prop_map(Op::Pace),
        6 => (0usize..3).prop_map(Op::PacedAdmit),
        2 => (0usize..3, any::<bool>()).prop_map(|(l, early)| Op::AdvanceToPaced(l, early)),
    ]
}

/// Mostly the lock-free rate path (see `Op::Pace`).
fn paced_op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..3).prop_map(Op::PacedAdmit),
        4 => (0usize..3, any::<bool>()).prop_map(|(l, early)| Op::AdvanceToPaced(l, early)),
        3 => (0u64..300).prop_map(Op::Advance),
        2 => (0usize..3).prop_map(Op::Pace),
        2 => acquire_strategy().prop_map(Op::Acquire),
        1 => Just(Op::AdvanceToWakeup),
        1 => (0usize..3, 0u64..=4).prop_map(|(l, s)| Op::SetSlots(l, s)),
        1 => (0usize..3).prop_map(Op::Reset),
        1 => (0usize..3, 1u64..3_000).prop_map(|(l, ms)| Op::Pause(l, ms)),
        1 => (0usize..3).prop_map(Op::Resume),
        1 => (0usize..3).prop_map(Op::Delete),
        1 => (0usize..3, 0u64..=4, 0usize..RATES.len()).prop_map(|(l, s, r)| Op::Create(l, s, r)),
    ]
}

// ----- running both side by side --------------------------------------------

struct Run {
    engine: Engine,
    model: Model,
    now: u64,
    /// Every lease ever granted: model request id → engine lease id.
    leases: Vec<(u64, LeaseId)>,
    /// Every request ever queued.
    queued: Vec<u64>,
    /// Limits that a change of definition left holding more than their
    /// slots: the safety bound waits until holders leave.
    overcommitted: HashMap<String, bool>,
    /// Rate grants per limit id since its definition last changed.
    rate_history: HashMap<u64, Vec<(u64, u64)>>,
    /// What a store would hold: the engine's journal applied step by step.
    replica: Replica,
    /// The engine's reservations, by limit index.
    reservations: HashMap<usize, ratekeeper_core::Reservation>,
    /// Pacings handed out, by limit index: each with its drain instant and
    /// the admissions made by it, as the lock-free path keeps them.
    pacings: HashMap<usize, (Pacing, Timestamp, u64)>,
}

/// A copy of the engine's records kept only from its journal.
#[derive(Default)]
struct Replica {
    limits: BTreeMap<String, LimitRecord>,
    leases: BTreeMap<LeaseId, LeaseView>,
}

impl Replica {
    fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Limit(limit) => {
                    self.limits.insert(limit.name.clone(), limit);
                }
                Change::LimitDeleted(name) => {
                    self.limits.remove(&name);
                }
                Change::Lease(lease) => {
                    self.leases.insert(lease.id, lease);
                }
                Change::LeaseDeleted(id) => {
                    self.leases.remove(&id);
                }
            }
        }
    }

    fn records(&self) -> Records {
        Records {
            limits: self.limits.values().cloned().collect(),
            leases: self.leases.values().cloned().collect(),
        }
    }
}

fn ts(nanos: u64) -> Timestamp {
    Timestamp::from_unix_nanos(nanos)
}

fn code<T>(result: &Result<T, AcquireError>) -> Result<(), &'static str> {
    result.as_ref().map(|_| ()).map_err(|e| e.code())
}

impl Run {
    fn new(limits: &[(u64, usize, bool)]) -> Self {
        let mut engine = Engine::new([3; 32]);
        engine.enable_journal();
        let mut run = Run {
            engine,
            model: Model::default(),
            now: START,
            leases: Vec::new(),
            queued: Vec::new(),
            overcommitted: HashMap::new(),
            rate_history: HashMap::new(),
            replica: Replica::default(),
            reservations: HashMap::new(),
            pacings: HashMap::new(),
        };
        run.model.now = START;
        for (i, &(slots, rate, active)) in limits.iter().enumerate() {
            run.create(i, slots, rate, active);
        }
        run
    }

    fn create(&mut self, i: usize, slots: u64, rate: usize, active: bool) {
        let name = NAMES[i];
        let spec = LimitSpec {
            active,
            ..LimitSpec::rate(name, RATES[rate], slots)
        };
        let engine = self.engine.create_limit(ts(self.now), &spec);
        if self.model.limits.contains_key(name) {
            assert_eq!(engine.unwrap_err().code(), "limit_exists");
            return;
        }
        engine.unwrap();
        self.model.advance(self.now);
        self.model.create(name, slots, RATES[rate], active);
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.model.granted_now.clear();
        let mut engine_grants: Vec<Grant> = Vec::new();
        // The lock-free path is closed (its pacing settled) before the
        // engine decides anything else; time passing and the timer's work
        // leave it open.
        if !matches!(
            op,
            Op::Pace(_)
                | Op::PacedAdmit(_)
                | Op::AdvanceToPaced(..)
                | Op::Advance(_)
                | Op::AdvanceToWakeup
        ) {
            self.settle_pacings();
        }
        match op {
            Op::Pace(i) => {
                if !self.pacings.contains_key(i)
                    && let Some(pacing) = self.engine.pace(ts(self.now), NAMES[*i])
                {
                    let drained_at = pacing.drained_at;
                    self.pacings.insert(*i, (pacing, drained_at, 0));
                }
            }
            Op::PacedAdmit(i) => {
                let req = Acquire {
                    names: vec![*i],
                    occupy: 1,
                    rate: true,
                    ttl_ms: 1_000,
                    timeout_ms: Some(0),
                };
                let paced = self.pacings.get_mut(i).and_then(|(pacing, drained_at, n)| {
                    *drained_at = pacing.admit(*drained_at, ts(self.now))?;
                    *n += 1;
                    Some(())
                });
                if paced.is_some() {
                    let model = self.model.acquire(self.now, &req);
                    prop_assert_eq!(model, Ok(true), "paced admission on {}", NAMES[*i]);
                    // The lock-free path sends no request: the engine's
                    // request ids go on from where they were.
                    self.model.next_request -= 1;
                } else {
                    // The slow path: closed, then on the engine; granted at
                    // once, it opens again.
                    self.settle_pacings();
                    let grants = engine_grants.len();
                    self.acquire(&req, &mut engine_grants)?;
                    if engine_grants.len() > grants
                        && let Some(pacing) = self.engine.pace(ts(self.now), NAMES[*i])
                    {
                        let drained_at = pacing.drained_at;
                        self.pacings.insert(*i, (pacing, drained_at, 0));
                    }
                }
            }
            Op::AdvanceToPaced(i, early) => {
                if let Some((pacing, drained_at, _)) = self.pacings.get(i) {
                    let ready = drained_at
                        .as_unix_nanos()
                        .saturating_sub(pacing.slack_nanos);
                    let to = ready - u64::from(*early);
                    if to > self.now {
                        self.now = to;
                        self.engine.advance(ts(self.now));
                        self.model.advance(self.now);
                    }
                }
            }
            Op::Acquire(req) => self.acquire(req, &mut engine_grants)?,
            Op::Release(i) | Op::Renew(i) if !self.leases.is_empty() => {
                let (model_id, lease) = self.leases[i % self.leases.len()];
                let (engine, model) = if matches!(op, Op::Release(_)) {
                    (
                        self.engine.release(ts(self.now), lease),
                        self.model.release(self.now, model_id),
                    )
                } else {
                    (
                        self.engine.renew(ts(self.now), lease, None).map(|_| ()),
                        self.model.renew(self.now, model_id),
                    )
                };
                prop_assert_eq!(engine.map_err(|e| e.code()), model, "{:?}", op);
            }
            Op::Cancel(i) if !self.queued.is_empty() => {
                let id = self.queued[i % self.queued.len()];
                let engine = self.engine.cancel(ts(self.now), RequestId(id));
                let model = self.model.cancel(self.now, id);
                prop_assert_eq!(engine, model, "cancel {}", id);
            }
            Op::Advance(ms) => {
                self.now += ms * 1_000_000;
                self.engine.advance(ts(self.now));
                self.model.advance(self.now);
            }
            Op::AdvanceToWakeup => {
                if let Some(at) = self.engine.next_wakeup() {
                    self.now = self.now.max(at.as_unix_nanos());
                    self.engine.advance(ts(self.now));
                    self.model.advance(self.now);
                }
            }
            Op::SetSlots(i, _)
            | Op::SetActive(i, _)
            | Op::Reset(i)
            | Op::Delete(i)
            | Op::Pause(i, _)
            | Op::Resume(i)
                if !self.model.limits.contains_key(NAMES[*i]) =>
            {
                let engine = self.engine.reset_limit(ts(self.now), NAMES[*i]);
                prop_assert_eq!(engine.unwrap_err().code(), "limit_not_found");
            }
            Op::SetSlots(i, slots) => self.update(*i, Some(*slots), None),
            Op::SetActive(i, active) => self.update(*i, None, Some(*active)),
            Op::Reset(i) => {
                self.engine.reset_limit(ts(self.now), NAMES[*i]).unwrap();
                self.model.reset(self.now, NAMES[*i]);
            }
            Op::Delete(i) => {
                self.engine.delete_limit(ts(self.now), NAMES[*i]).unwrap();
                self.model.delete(self.now, NAMES[*i]);
            }
            Op::Create(i, slots, rate) => self.create(*i, *slots, *rate, true),
            Op::Pause(i, ms) => {
                let spec = PauseSpec::for_seconds(*ms as f64 / 1e3);
                let view = self.engine.pause(ts(self.now), NAMES[*i], &spec).unwrap();
                self.model.pause(self.now, NAMES[*i], *ms);
                let until = self.model.limits[NAMES[*i]].paused_until;
                prop_assert_eq!(view.paused.map(|p| p.until.as_unix_nanos()), Some(until));
            }
            Op::Resume(i) => {
                let view = self.engine.resume(ts(self.now), NAMES[*i]).unwrap();
                self.model.resume(self.now, NAMES[*i]);
                prop_assert_eq!(view.paused, None);
            }
            Op::CreateTemplate(slots, rate, max) => {
                let spec = LimitSpec {
                    max_instances: Some(*max),
                    ..LimitSpec::rate(TEMPLATE, RATES[*rate], *slots)
                };
                let engine = self.engine.create_limit(ts(self.now), &spec);
                if self.model.template.is_some() {
                    prop_assert_eq!(engine.unwrap_err().code(), "limit_exists");
                } else {
                    engine.unwrap();
                    self.model
                        .create_template(self.now, *slots, RATES[*rate], *max);
                }
            }
            Op::UpdateTemplate(..) | Op::DeleteTemplate | Op::PauseTemplate(_)
                if self.model.template.is_none() =>
            {
                let engine = self.engine.reset_limit(ts(self.now), TEMPLATE);
                prop_assert_eq!(engine.unwrap_err().code(), "limit_not_found");
            }
            Op::UpdateTemplate(slots, active) => {
                let patch = LimitPatch {
                    slots: *slots,
                    active: *active,
                    ..LimitPatch::default()
                };
                self.engine
                    .update_limit(ts(self.now), TEMPLATE, &patch)
                    .unwrap();
                self.model.update_template(self.now, *slots, *active);
            }
            Op::DeleteTemplate => {
                self.engine.delete_limit(ts(self.now), TEMPLATE).unwrap();
                self.model.delete_template(self.now);
            }
            Op::PauseTemplate(ms) => {
                let spec = PauseSpec::for_seconds(*ms as f64 / 1e3);
                self.engine.pause(ts(self.now), TEMPLATE, &spec).unwrap();
                self.model.pause_template(self.now, *ms);
            }
            Op::PauseKey(k, ms) => {
                let spec = PauseSpec::for_seconds(*ms as f64 / 1e3);
                let engine = self.engine.pause(ts(self.now), KEYS[*k], &spec);
                let model = self.model.pause_key(self.now, KEYS[*k], *ms);
                prop_assert_eq!(engine.map(|_| ()).map_err(|e| e.code()), model);
            }
            Op::Reserve(i) => {
                let engine = match self.reservations.get_mut(i) {
                    Some(reservation) => self.engine.top_up(ts(self.now), reservation),
                    None => match self.engine.reserve(ts(self.now), NAMES[*i]) {
                        Some(reservation) => {
                            let slots = reservation.slots();
                            self.reservations.insert(*i, reservation);
                            slots
                        }
                        None => 0,
                    },
                };
                let model = self.model.reserve(self.now, *i);
                prop_assert_eq!(engine, model, "{:?}", op);
            }
            Op::ShrinkReservation(i, slots) => {
                if let Some(reservation) = self.reservations.get_mut(i) {
                    self.engine
                        .shrink_reservation(ts(self.now), reservation, *slots);
                    self.model.shrink_reservation(self.now, *i, *slots);
                    let held = self.model.reservations[i].2;
                    prop_assert_eq!(reservation.slots(), held, "{:?}", op);
                }
            }
            Op::Release(_) | Op::Renew(_) | Op::Cancel(_) => {}
        }
        self.model.drop_idle();
        self.compare_wakes(engine_grants)?;
        self.compare_state()?;
        self.check_journal()?;
        let redefined = match op {
            Op::SetSlots(i, _) | Op::SetActive(i, _) | Op::Reset(i) | Op::Create(i, ..) => {
                Some(NAMES[*i])
            }
            Op::CreateTemplate(..) | Op::UpdateTemplate(..) | Op::DeleteTemplate => Some(TEMPLATE),
            _ => None,
        };
        self.collect_rate_grants(redefined);
        self.check_invariants(redefined)
    }

    /// Sends an acquire to both and compares what they answer.
    fn acquire(&mut self, req: &Acquire, grants: &mut Vec<Grant>) -> Result<(), TestCaseError> {
        let names: Vec<&str> = req.names.iter().map(|&i| name_of(i)).collect();
        let claim = if req.rate {
            Claim::Rate
        } else {
            Claim::Lease {
                ttl: Duration::from_millis(req.ttl_ms),
                holder: None,
            }
        };
        let request = AcquireRequest {
            occupy: req.occupy,
            timeout: req.timeout_ms.map(Duration::from_millis),
            ..AcquireRequest::new(&names, claim)
        };
        let engine = self.engine.acquire(ts(self.now), &request);
        let model = self.model.acquire(self.now, req);
        let engine_kind = match &engine {
            Ok(Admission::Granted(_)) => Ok(true),
            Ok(Admission::Queued(_)) => Ok(false),
            Err(err) => Err(err.code()),
        };
        prop_assert_eq!(engine_kind, model, "acquire {:?}", req);
        match engine {
            Ok(Admission::Granted(grant)) => grants.push(grant),
            Ok(Admission::Queued(id)) => {
                prop_assert_eq!(id.0, self.model.next_request - 1);
                self.queued.push(id.0);
            }
            Err(_) => {}
        }
        Ok(())
    }

    /// Gives every pacing's drain instant back to the engine.
    fn settle_pacings(&mut self) {
        for (_, (pacing, drained_at, admitted)) in self.pacings.drain() {
            self.engine
                .settle_pacing(ts(self.now), &pacing, drained_at, admitted);
        }
    }

    fn update(&mut self, i: usize, slots: Option<u64>, active: Option<bool>) {
        let patch = LimitPatch {
            slots,
            active,
            ..LimitPatch::default()
        };
        self.engine
            .update_limit(ts(self.now), NAMES[i], &patch)
            .unwrap();
        self.model.update(self.now, NAMES[i], slots, active);
    }

    /// Files this step's rate grants by limit; a redefined limit starts a
    /// new history, since the window bound changed with it.
    fn collect_rate_grants(&mut self, redefined: Option<&str>) {
        if let Some(limit) = redefined.and_then(|name| self.model.limits.get(name)) {
            self.rate_history.remove(&limit.id);
        }
        if redefined == Some(TEMPLATE) {
            for k in 0..KEYS.len() as u64 {
                self.rate_history.remove(&(1_000_000 + k));
            }
        }
        for (limit, at, occupy) in self.model.rate_log.drain(..) {
            self.rate_history
                .entry(limit)
                .or_default()
                .push((at, occupy));
        }
    }

    /// The wakes must agree; grants also teach us the new leases' ids.
    fn compare_wakes(&mut self, mut grants: Vec<Grant>) -> Result<(), TestCaseError> {
        let mut engine: Vec<(u64, Outcome)> = Vec::new();
        for wake in self.engine.take_wakes() {
            engine.push((wake.request.0, code(&wake.outcome)));
            if let Ok(grant) = wake.outcome {
                grants.push(grant);
            }
        }
        let mut model = std::mem::take(&mut self.model.wakes);
        engine.sort();
        model.sort();
        prop_assert_eq!(engine, model, "wakes");
        for grant in grants {
            if let Held::Lease(lease) = grant.held {
                self.leases.push((grant.request.0, lease.id));
                let model_lease = &self.model.leases[&grant.request.0];
                prop_assert_eq!(lease.expires_at.as_unix_nanos(), model_lease.expires_at);
            }
        }
        Ok(())
    }

    /// Every limit, template and instance, as the engine shows them.
    fn engine_views(&self) -> Vec<LimitView> {
        let mut views = self.engine.limits();
        if let Ok(instances) = self.engine.instances(
            TEMPLATE,
            &InstanceQuery {
                prefix: "",
                order: InstanceOrder::Name,
                after: None,
                count: usize::MAX,
            },
        ) {
            views.extend(instances);
        }
        // As the limiter shows a limit with its lock-free rate path open.
        for (i, (pacing, drained_at, admitted)) in &self.pacings {
            let view = views.iter_mut().find(|v| v.name == NAMES[*i]).unwrap();
            view.decaying = pacing.decaying(*drained_at, ts(self.now));
            view.counters.granted_total += admitted;
            view.counters.granted_slots_total += admitted;
        }
        views
    }

    /// The template as the model would show it: sums over its instances.
    fn model_template(&self) -> Option<ModelLimit> {
        let (template, _) = self.model.template.as_ref()?;
        let mut shown = template.clone();
        shown.held = self
            .model
            .limits
            .values()
            .filter(|l| l.instance)
            .map(|l| l.held)
            .sum();
        Some(shown)
    }

    fn compare_state(&self) -> Result<(), TestCaseError> {
        let views = self.engine_views();
        let template = self.model_template();
        prop_assert_eq!(
            views.len(),
            self.model.limits.len() + usize::from(template.is_some())
        );
        for view in &views {
            let model = match self.model.limits.get(&view.name) {
                Some(model) => model,
                None => template.as_ref().expect("only the template is apart"),
            };
            if let Some(shown) = view.template {
                let decaying: f64 = self
                    .model
                    .limits
                    .values()
                    .filter(|l| l.instance)
                    .map(|l| l.decaying(self.now))
                    .sum();
                prop_assert_eq!(view.held, model.held, "held on the template");
                let instance_ids: Vec<u64> = self
                    .model
                    .limits
                    .values()
                    .filter(|l| l.instance)
                    .map(|l| l.id)
                    .collect();
                let (waiting, waiting_slots) = self
                    .model
                    .waiters
                    .values()
                    .flat_map(|w| w.limits.iter().map(move |l| (l, w.occupy)))
                    .filter(|(l, _)| instance_ids.contains(l))
                    .fold((0, 0), |(n, slots), (_, occupy)| (n + 1, slots + occupy));
                prop_assert_eq!(
                    (view.waiting, view.waiting_slots),
                    (waiting, waiting_slots),
                    "waiting on the template"
                );
                prop_assert!((view.decaying - decaying).abs() < 1e-6);
                prop_assert_eq!(view.counters, model.counters, "template totals");
                let live = self.model.limits.values().filter(|l| l.instance).count();
                prop_assert_eq!(shown.instances, live as u64);
                continue;
            }
            prop_assert_eq!(view.held, model.held, "held on {}", view.name);
            prop_assert!(
                (view.decaying - model.decaying(self.now)).abs() < 1e-9,
                "decaying on {}: engine {} model {}",
                view.name,
                view.decaying,
                model.decaying(self.now)
            );
            prop_assert_eq!(view.counters, model.counters, "counters on {}", view.name);
            prop_assert_eq!(
                view.paused.as_ref().map(|p| p.until.as_unix_nanos()),
                (model.paused_until > self.now).then_some(model.paused_until),
                "pause of {}",
                view.name
            );
            let queue: Vec<u64> = self
                .engine
                .waiters_on(&view.name)
                .unwrap()
                .into_iter()
                .map(|w| w.request.0)
                .collect();
            let model_queue: Vec<u64> = self
                .model
                .waiters
                .iter()
                .filter(|(_, w)| w.limits.contains(&model.id))
                .map(|(&id, _)| id)
                .collect();
            prop_assert_eq!(queue, model_queue, "queue of {}", view.name);
        }
        prop_assert_eq!(self.engine.lease_count(), self.model.leases.len());
        prop_assert_eq!(self.engine.waiting(), self.model.waiters.len());
        Ok(())
    }

    /// The journal keeps a store equal to the engine's records, and an
    /// engine restored from that store holds exactly what this one holds.
    fn check_journal(&mut self) -> Result<(), TestCaseError> {
        self.replica.apply(self.engine.take_changes());
        let records = self.engine.records();
        prop_assert_eq!(&self.replica.records(), &records, "journal replica");
        let mut restored = Engine::restore([4; 32], self.replica.records(), ts(self.now)).unwrap();
        // Queues are not stored, so an instance that only had waiters is
        // idle after a restart, and dropped.
        let now = ts(self.now);
        let idle_after_restart = |r: &LimitRecord| {
            r.instance_of.is_some()
                && !records.leases.iter().any(|l| l.limits.contains(&r.name))
                && r.drained_at <= now
                && r.pause.as_ref().is_none_or(|p| p.until <= now)
        };
        for change in restored.take_changes() {
            match change {
                Change::Limit(_) => {}
                Change::LimitDeleted(name) => {
                    let record = records.limits.iter().find(|r| r.name == name).unwrap();
                    prop_assert!(idle_after_restart(record), "{} dropped on restore", name);
                }
                other => prop_assert!(false, "restoring changed {:?}", other),
            }
        }
        let records = Records {
            limits: records
                .limits
                .iter()
                .filter(|r| !idle_after_restart(r))
                .cloned()
                .collect(),
            leases: records.leases.clone(),
        };
        prop_assert_eq!(&restored.records(), &records, "restored records");
        for (view, restored) in self.engine.limits().iter().zip(restored.limits()) {
            // Reservations, like permits, live in their process only.
            let reserved: u64 = (0..NAMES.len())
                .filter(|&i| NAMES[i] == view.name && self.model.reservation_live(i))
                .map(|i| self.model.reservations[&i].2)
                .sum();
            prop_assert_eq!(view.held - reserved, restored.held, "held after restore");
            prop_assert_eq!(view.decaying, restored.decaying, "decaying after restore");
        }
        Ok(())
    }

    fn check_invariants(&mut self, redefined: Option<&str>) -> Result<(), TestCaseError> {
        let views: Vec<LimitView> = self
            .engine_views()
            .into_iter()
            .filter(|v| v.template.is_none())
            .collect();
        // Safety: an active limit is never over its slots, except after a
        // change of definition put it there, until holders leave.
        for view in &views {
            let over = view.held as f64 + view.decaying > view.slots as f64 + 1e-9;
            let flag = self.overcommitted.entry(view.name.clone()).or_insert(false);
            let of_template = view.instance_of.as_deref() == redefined;
            if redefined == Some(view.name.as_str()) || of_template {
                *flag = over;
            } else if !over {
                *flag = false;
            }
            prop_assert!(
                !view.active || !over || *flag,
                "{} over its limit: {:?}",
                view.name,
                view
            );
        }
        // Liveness: a waiter that heads every active queue it is in does not fit.
        let mut heads: HashMap<u64, usize> = HashMap::new();
        let mut active_queues: HashMap<u64, usize> = HashMap::new();
        for view in views.iter().filter(|v| v.active) {
            let queue = self.engine.waiters_on(&view.name).unwrap();
            for w in &queue {
                *active_queues.entry(w.request.0).or_default() += 1;
            }
            if let Some(head) = queue.first() {
                *heads.entry(head.request.0).or_default() += 1;
            }
        }
        for (request, count) in heads {
            if active_queues[&request] != count {
                continue;
            }
            let waiter = &self.model.waiters[&request];
            let fits_everywhere = views.iter().filter(|v| v.active).all(|v| {
                let id = self.model.limits[&v.name].id;
                !waiter.limits.contains(&id)
                    || v.paused.is_none()
                        && v.held as f64 + v.decaying + waiter.occupy as f64
                            <= v.slots as f64 - 1e-9
            });
            prop_assert!(!fits_everywhere, "request {} fits but waits", request);
        }
        // FIFO: nobody granted this step has an earlier waiter left on one of
        // its active limits.
        for &granted in &self.model.granted_now {
            for (&earlier, waiter) in self.model.waiters.range(..granted) {
                for limit in &waiter.limits {
                    let shared = self
                        .model
                        .leases
                        .get(&granted)
                        .is_some_and(|l| l.limits.contains(limit));
                    prop_assert!(
                        !shared || !self.model.is_active(*limit),
                        "{} granted before earlier waiter {}",
                        granted,
                        earlier
                    );
                }
            }
        }
        Ok(())
    }

    /// Rate mode never admits more than `slots + rate × T` in a window.
    fn check_rate_windows(&self) -> Result<(), TestCaseError> {
        // Each key of the template is checked across its instances, which
        // come and go: forgetting one must never let more through.
        let keys = self.model.template.iter().flat_map(|(template, _)| {
            KEYS.iter()
                .enumerate()
                .map(move |(k, key)| (key.to_string(), 1_000_000 + k as u64, template))
        });
        let limits = self
            .model
            .limits
            .iter()
            .filter(|(_, l)| !l.instance)
            .map(|(name, l)| (name.clone(), l.id, l));
        for (name, history, limit) in limits.chain(keys) {
            let (Some(interval), Some(grants)) = (limit.interval, self.rate_history.get(&history))
            else {
                continue;
            };
            for (i, &(start, _)) in grants.iter().enumerate() {
                let mut admitted = 0u64;
                for &(at, occupy) in &grants[i..] {
                    admitted += occupy;
                    // admitted ≤ slots + (at − start) / interval
                    prop_assert!(
                        admitted * interval <= limit.slots * interval + (at - start),
                        "{} admitted {} in {} ns",
                        name,
                        admitted,
                        at - start
                    );
                }
            }
        }
        Ok(())
    }
}

/// Runs `ops` on the engine and the model from `limits`, comparing them at
/// every step and the rate windows at the end.
fn agree(limits: &[(u64, usize, bool)], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut run = Run::new(limits);
    for op in ops {
        run.step(op)?;
    }
    run.check_rate_windows()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_reference_model(
        limits in prop::collection::vec((0u64..=4, 0usize..RATES.len(), prop::bool::weighted(0.85)), 3),
        ops in prop::collection::vec(op_strategy(), 1..120),
    ) {
        agree(&limits, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The same comparison, with most steps on the lock-free rate path:
    /// pacings handed out, admissions by them at and around the instants
    /// slots fit, and now and then a request or a change that settles them.
    #[test]
    fn the_lock_free_rate_path_agrees_with_the_reference_model(
        limits in prop::collection::vec((1u64..=4, 1usize..RATES.len(), prop::bool::weighted(0.9)), 3),
        ops in prop::collection::vec(paced_op_strategy(), 1..120),
    ) {
        agree(&limits, &ops)?;
    }
}

#[test]
fn a_paced_admission_one_nanosecond_early_is_refused_as_the_engine_would() {
    // 10 per second, one at a time: the next slot fits 100 ms after the first.
    let mut run = Run::new(&[(1, 4, true), (1, 4, true), (1, 4, true)]);
    for op in [Op::Pace(0), Op::PacedAdmit(0), Op::AdvanceToPaced(0, true)] {
        run.step(&op).unwrap();
    }
    assert_eq!(run.pacings[&0].2, 1, "the first was admitted by the pacing");
    run.step(&Op::PacedAdmit(0)).unwrap();
    assert!(
        run.pacings.is_empty(),
        "refused, so settled and tried on the engine"
    );
    let counters = run.engine.limit("a").unwrap().counters;
    assert_eq!(
        (counters.granted_total, counters.denied_total),
        (1, 1),
        "which refused it too"
    );
}
