//! The engine: every limit, lease and waiter, and the rules that move them.
//!
//! Every operation takes the current time and returns what happened as
//! values. Waiters that were granted or failed *because of* an operation (a
//! release letting the next waiter in, a timeout, a deleted limit) are not the
//! caller's answer; they are collected as [`Wake`]s, which the caller takes
//! with [`Engine::take_wakes`] and delivers. [`Engine::next_wakeup`] says when
//! the engine must be called back ([`Engine::advance`]) for a lease expiry, a
//! timeout, or decaying slots making room.
//!
//! Cost: every step touches only the requests and leases involved, each in
//! `O(log n)`. A release looks at the head of each queue it frees room on,
//! grants it if it now fits, and moves on to the new head only after a grant:
//! the queue behind a head that does not fit is never scanned.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use smallvec::SmallVec;

use crate::error::{AcquireError, LeaseError, LimitError};
use crate::journal::{Change, LimitRecord, Records, RestoreError};
use crate::lease::{Lease, LeaseGrant, LeaseId, LeaseView, Permit, check_ttl};
use crate::limit::{Limit, LimitId, LimitPatch, LimitSpec, LimitView, Room, check_drain};
use crate::name::{self, LimitName};
use crate::pause::{Pause, PauseSpec};
use crate::request::{
    AcquireRequest, Admission, Grant, Held, Mode, PendingClaim, RequestId, Waiter, WaiterView, Wake,
};
use crate::time::Timestamp;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type LimitIds = SmallVec<[LimitId; 2]>;

/// Something the engine must do at an instant. The variant order is the
/// order of timers due at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The lease expires.
    Expire(LeaseId),
    /// The tombstone of a revoked lease is dropped (its TTL would have ended).
    Forget(LeaseId),
    /// Enough decaying slots have decayed for this head waiter to fit.
    Ready(RequestId),
    /// The waiter's timeout ends.
    Deadline(RequestId),
}

/// The pure limit engine. See the [crate docs](crate) for the rules it keeps.
pub struct Engine {
    /// The latest instant seen. An operation given an earlier one acts at this
    /// one, so time never runs backwards inside the engine.
    now: Timestamp,
    limits: Map<LimitId, Limit>,
    /// Every key names a live entry of `limits`, and every limit is here once.
    by_name: Map<LimitName, LimitId>,
    next_limit: u64,
    next_request: u64,
    /// Queued requests. Each is in the queue of every limit it names.
    waiters: Map<RequestId, Waiter>,
    leases: Map<LeaseId, Lease>,
    /// Revoked leases, until the instant they would have expired, so that
    /// their holders hear `lease_revoked` rather than `lease_expired`.
    revoked: Map<LeaseId, Timestamp>,
    /// Everything that must happen at a later instant; each live lease,
    /// tombstone, deadline and decay wait has exactly one entry.
    timers: BTreeSet<(Timestamp, Timer)>,
    /// Limits whose queue head may have become grantable.
    dirty: Vec<LimitId>,
    /// Outcomes of queued requests not yet taken by the caller.
    wakes: Vec<Wake>,
    /// The source of lease ids; seeded from OS entropy in production.
    rng: StdRng,
    /// While journaling: what changed since the changes were last taken.
    journal: Option<Journal>,
}

/// What changed since [`Engine::take_changes`] was last called. Entries may
/// repeat; they are deduplicated when taken.
#[derive(Default)]
struct Journal {
    limits: Vec<LimitId>,
    deleted: Vec<String>,
    leases: Vec<LeaseId>,
}

impl Engine {
    /// An empty engine. `seed` feeds the generator of lease ids: give it 32
    /// random bytes in production (ids must be unguessable), anything fixed
    /// in tests.
    pub fn new(seed: [u8; 32]) -> Self {
        Engine {
            now: Timestamp::EPOCH,
            limits: Map::default(),
            by_name: Map::default(),
            next_limit: 0,
            next_request: 0,
            waiters: Map::default(),
            leases: Map::default(),
            revoked: Map::default(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            wakes: Vec::new(),
            rng: StdRng::from_seed(seed),
            journal: None,
        }
    }

    /// Rebuilds an engine from stored records at `now`, journaling from the
    /// start. Lease limits no longer stored are dropped from the lease.
    ///
    /// Stored instants are wall-clock time, and the wall clock may have
    /// been stepped while nothing ran; a step must not decide who holds
    /// what. So every lease comes back with at most one TTL left from
    /// `now` (a step back cannot stretch a dead holder's lease), and a
    /// lease whose expiry has passed by `now` gets one TTL from `now` to be
    /// renewed (a step forward cannot take a live holder's slots; if its
    /// holder is gone, it lapses a TTL later). What this costs: after a
    /// real outage longer than a TTL, dead holders' slots stay taken for
    /// one TTL more. (Decaying slots are left as stored: a step back makes
    /// a bucket drain later, which admits less, never more.)
    pub fn restore(seed: [u8; 32], records: Records, now: Timestamp) -> Result<Self, RestoreError> {
        let mut engine = Engine::new(seed);
        engine.now = now;
        engine.enable_journal();
        for record in records.limits {
            engine.restore_limit(record)?;
        }
        for mut record in records.leases {
            let renewable = now.saturating_add(record.ttl);
            record.expires_at = if record.expires_at <= now {
                renewable
            } else {
                record.expires_at.min(renewable)
            };
            engine.restore_lease(record)?;
        }
        engine.advance(now);
        Ok(engine)
    }

    /// Starts recording what changes, for [`take_changes`](Self::take_changes).
    pub fn enable_journal(&mut self) {
        self.journal.get_or_insert_with(Journal::default);
    }

    /// The changes to [`records`](Self::records) since the last call, in the
    /// order they must be applied; empty unless journaling.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let Some(journal) = self.journal.as_mut() else {
            return Vec::new();
        };
        let mut journal = std::mem::take(journal);
        let mut changes: Vec<Change> = journal
            .deleted
            .into_iter()
            .map(Change::LimitDeleted)
            .collect();
        journal.limits.sort_unstable();
        journal.limits.dedup();
        changes.extend(
            journal
                .limits
                .iter()
                .filter_map(|id| self.limits.get(id))
                .map(|limit| Change::Limit(limit.record())),
        );
        journal.leases.sort_unstable();
        journal.leases.dedup();
        changes.extend(journal.leases.iter().map(|&id| match self.leases.get(&id) {
            Some(lease) => Change::Lease(self.lease_view(id, lease)),
            None => Change::LeaseDeleted(id),
        }));
        changes
    }

    /// Everything that survives a restart, as records.
    pub fn records(&self) -> Records {
        let mut limits: Vec<LimitRecord> = self.limits.values().map(Limit::record).collect();
        limits.sort_by(|a, b| a.name.cmp(&b.name));
        let mut leases: Vec<LeaseView> = self
            .leases
            .iter()
            .map(|(&id, lease)| self.lease_view(id, lease))
            .collect();
        leases.sort_by_key(|lease| lease.id);
        Records { limits, leases }
    }

    /// The latest instant the engine has been given.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// When the engine next needs [`advance`](Self::advance): a lease
    /// expiring, a timeout ending, or decay making room for a waiter.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Takes the outcomes of queued requests decided since the last call.
    pub fn take_wakes(&mut self) -> Vec<Wake> {
        std::mem::take(&mut self.wakes)
    }

    /// Brings the engine to `now`: expires leases, grants waiters that decay
    /// made room for, and times out waiters whose deadline passed. Capacity is
    /// handed out before deadlines are enforced, so a waiter whose turn and
    /// deadline come in the same step is granted.
    pub fn advance(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        let mut deadlines = Vec::new();
        while let Some(&(at, timer)) = self.timers.first() {
            if at > self.now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Expire(id) => self.expire(id),
                Timer::Forget(id) => {
                    self.revoked.remove(&id);
                }
                Timer::Ready(id) => {
                    if let Some(waiter) = self.waiters.get_mut(&id) {
                        waiter.ready_timer = None;
                        self.dirty.extend_from_slice(&waiter.limits);
                    }
                }
                Timer::Deadline(id) => deadlines.push(id),
            }
        }
        self.settle();
        for id in deadlines {
            if self.waiters.contains_key(&id) {
                let waiter = self.remove_waiter(id);
                self.count(&waiter.limits, |c| c.denied_total += 1);
                self.fail(id, AcquireError::TimedOut);
            }
        }
        self.settle();
    }

    // ----- limits -------------------------------------------------------

    /// Creates a limit.
    pub fn create_limit(
        &mut self,
        now: Timestamp,
        spec: &LimitSpec,
    ) -> Result<LimitView, LimitError> {
        self.advance(now);
        let limit = Limit::new(spec, self.now)?;
        if self.by_name.contains_key(limit.name.as_str()) {
            return Err(LimitError::AlreadyExists {
                name: spec.name.clone(),
            });
        }
        let view = limit.view(self.now);
        self.insert_limit(limit);
        Ok(view)
    }

    /// Changes a limit's definition. Raising `slots`, deactivating it or
    /// speeding up its decay lets waiters in at once; lowering `slots` keeps
    /// existing holders. Waiters that the change makes impossible (more
    /// `occupy` than the new nonzero `slots`, or rate mode once decay is 0)
    /// fail rather than block their queue forever.
    pub fn update_limit(
        &mut self,
        now: Timestamp,
        name: &str,
        patch: &LimitPatch,
    ) -> Result<LimitView, LimitError> {
        patch.check()?;
        let id = self.limit_id(name)?;
        let current = &self.limits[&id];
        check_drain(
            patch.slots.unwrap_or(current.slots),
            patch.slot_decay_per_second.unwrap_or(current.decay),
        )?;
        self.advance(now);
        let now = self.now;
        self.touch_limits(&[id]);
        let limit = self.limits.get_mut(&id).expect("by_name is consistent");
        let was_active = limit.active;
        if let Some(slots) = patch.slots {
            limit.slots = slots;
        }
        if let Some(decay) = patch.slot_decay_per_second {
            limit.set_decay(decay, now);
        }
        if let Some(active) = patch.active {
            limit.active = active;
        }
        if let Some(description) = &patch.description {
            limit.description.clone_from(description);
        }
        limit.updated_at = now;
        let now_active = limit.active;
        if was_active && !now_active {
            // Any waiter in this queue may have been held back by it alone.
            // Its queue no longer orders anything, so look at each directly.
            let queued: Vec<RequestId> = limit.queue.iter().copied().collect();
            for request in queued {
                if self.waiters.contains_key(&request) {
                    self.examine(request);
                }
            }
        }
        self.fail_impossible_waiters(id);
        self.dirty.push(id);
        self.settle();
        Ok(self.limits[&id].view(now))
    }

    /// Deletes a limit. Its waiters fail with `limit_deleted`; leases and
    /// permits that hold it stay valid for their other limits.
    pub fn delete_limit(&mut self, now: Timestamp, name: &str) -> Result<(), LimitError> {
        let id = self.limit_id(name)?;
        self.advance(now);
        let queued: Vec<RequestId> = self.limits[&id].queue.iter().copied().collect();
        for request in queued {
            self.remove_waiter(request);
            self.fail(
                request,
                AcquireError::LimitDeleted {
                    name: name.to_owned(),
                },
            );
        }
        let limit = self.limits.remove(&id).expect("by_name is consistent");
        self.by_name.remove(&limit.name);
        for &lease_id in &limit.leases {
            if let Some(lease) = self.leases.get_mut(&lease_id) {
                lease.limits.retain(|held| *held != id);
                self.touch_lease(lease_id);
            }
        }
        if let Some(journal) = self.journal.as_mut() {
            journal.deleted.push(limit.name.to_string());
        }
        self.settle();
        Ok(())
    }

    /// Revokes every lease on a limit (their next renew or release says
    /// `lease_revoked`), forgets permits on it and clears its decaying slots.
    pub fn reset_limit(&mut self, now: Timestamp, name: &str) -> Result<LimitView, LimitError> {
        let id = self.limit_id(name)?;
        self.advance(now);
        let leases: Vec<LeaseId> = self.limits[&id].leases.iter().copied().collect();
        for lease_id in leases {
            let lease = self.drop_lease(lease_id).expect("limit leases are live");
            self.revoked.insert(lease_id, lease.expires_at);
            self.timers
                .insert((lease.expires_at, Timer::Forget(lease_id)));
        }
        let now = self.now;
        self.touch_limits(&[id]);
        let limit = self.limits.get_mut(&id).expect("by_name is consistent");
        // What is still held belongs to permits, which are forgotten.
        limit.held = 0;
        limit.generation += 1;
        limit.drained_at = now;
        self.dirty.push(id);
        self.settle();
        Ok(self.limits[&id].view(now))
    }

    /// Pauses a limit until the pause asked for ends, or keeps a pause
    /// that ends later (with its reason and reporter): a pause is extended,
    /// never shortened. Nothing is granted on the limit until then; queued
    /// requests keep their order and their timeouts.
    pub fn pause(
        &mut self,
        now: Timestamp,
        name: &str,
        spec: &PauseSpec,
    ) -> Result<LimitView, LimitError> {
        let id = self.limit_id(name)?;
        let until = spec.until(now.max(self.now))?;
        self.advance(now);
        let now = self.now;
        let limit = self.limit_mut(id);
        let current = limit.paused(now).map_or(now, |pause| pause.until);
        if until > current {
            limit.pause = Some(Pause {
                until,
                since: now,
                reason: spec.reason.clone(),
                reporter: spec.reporter.clone(),
            });
            self.touch_limits(&[id]);
            // Its head's decay timer, if any, now waits for the pause.
            self.dirty.push(id);
            self.settle();
        }
        Ok(self.limits[&id].view(now))
    }

    /// Ends a limit's pause now, granting its queue from the head. A limit
    /// that is not paused is left as it is.
    pub fn resume(&mut self, now: Timestamp, name: &str) -> Result<LimitView, LimitError> {
        let id = self.limit_id(name)?;
        self.advance(now);
        let now = self.now;
        if self.limit_mut(id).pause.take().is_some() {
            self.touch_limits(&[id]);
            self.dirty.push(id);
            self.settle();
        }
        Ok(self.limits[&id].view(now))
    }

    /// A limit as of the latest instant the engine was given.
    pub fn limit(&self, name: &str) -> Result<LimitView, LimitError> {
        let id = self.limit_id(name)?;
        Ok(self.limits[&id].view(self.now))
    }

    /// Whether `occupy` slots of `name` would be granted now, without
    /// asking: nobody is queued and they fit (the same rule an acquire
    /// follows, decaying slots counted exactly), or the limit is inactive.
    pub fn has_room(&self, name: &str, occupy: u64) -> Result<bool, LimitError> {
        let limit = &self.limits[&self.limit_id(name)?];
        Ok(!limit.active || (limit.queue.is_empty() && limit.room(occupy, self.now) == Room::Now))
    }

    /// Every limit, ordered by name.
    pub fn limits(&self) -> Vec<LimitView> {
        let mut views: Vec<LimitView> = self.limits.values().map(|l| l.view(self.now)).collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    // ----- acquire ------------------------------------------------------

    /// Asks for slots on every named limit at once.
    ///
    /// Granted at once if, on every active named limit, nobody is queued and
    /// the slots fit; otherwise queued (or refused with `would_block` for a
    /// timeout of zero). A queued request's outcome comes later as a [`Wake`].
    /// Requests that could never be granted are refused at once and change
    /// nothing.
    pub fn acquire(
        &mut self,
        now: Timestamp,
        request: &AcquireRequest<'_>,
    ) -> Result<Admission, AcquireError> {
        self.advance(now);
        let now = self.now;
        let limits = self.resolve(request)?;
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let waiter = Waiter {
            limits,
            occupy: request.occupy,
            claim: PendingClaim::from_claim(&request.claim),
            enqueued_at: now,
            deadline: request.timeout.map(|t| now.saturating_add(t)),
            ready_timer: None,
        };
        let fits_now = waiter.limits.iter().all(|id| {
            let limit = &self.limits[id];
            !limit.active || (limit.queue.is_empty() && limit.room(waiter.occupy, now) == Room::Now)
        });
        if fits_now {
            return Ok(Admission::Granted(self.grant(id, waiter)));
        }
        if request.timeout == Some(Duration::ZERO) {
            self.count(&waiter.limits, |c| c.denied_total += 1);
            return Err(AcquireError::WouldBlock);
        }
        self.enqueue(id, waiter);
        // It cannot fit yet, but it may head every queue and wait only for
        // decay: examining it sets that timer.
        self.examine(id);
        Ok(Admission::Queued(id))
    }

    /// Withdraws a queued request; it holds nothing afterwards. Returns
    /// false if it was not queued (any more): it may have been granted or
    /// failed, in which case its [`Wake`] is (or was) among the wakes.
    pub fn cancel(&mut self, now: Timestamp, request: RequestId) -> bool {
        self.advance(now);
        if !self.waiters.contains_key(&request) {
            return false;
        }
        self.remove_waiter(request);
        self.settle();
        true
    }

    // ----- leases and permits -------------------------------------------

    /// Extends a lease to `now + ttl` (its own TTL if `ttl` is `None`; a
    /// given TTL becomes the lease's TTL from then on).
    pub fn renew(
        &mut self,
        now: Timestamp,
        id: LeaseId,
        ttl: Option<Duration>,
    ) -> Result<LeaseGrant, LeaseError> {
        ttl.map(check_ttl).transpose()?;
        self.advance(now);
        let now = self.now;
        let Some(lease) = self.leases.get_mut(&id) else {
            return Err(self.lease_gone(id));
        };
        let ttl = ttl.unwrap_or(lease.ttl);
        self.timers.remove(&(lease.expires_at, Timer::Expire(id)));
        lease.ttl = ttl;
        lease.expires_at = now.saturating_add(ttl);
        let expires_at = lease.expires_at;
        self.timers.insert((expires_at, Timer::Expire(id)));
        self.touch_lease(id);
        Ok(LeaseGrant { id, expires_at })
    }

    /// Releases a lease, freeing its slots for the next waiters.
    pub fn release(&mut self, now: Timestamp, id: LeaseId) -> Result<(), LeaseError> {
        self.advance(now);
        if self.drop_lease(id).is_none() {
            return Err(self.lease_gone(id));
        }
        self.settle();
        Ok(())
    }

    /// Gives a permit's slots back.
    pub fn release_permit(&mut self, now: Timestamp, permit: Permit) {
        self.advance(now);
        for (id, generation) in permit.holds {
            let Some(limit) = self.limits.get_mut(&id) else {
                continue;
            };
            if limit.generation == generation {
                limit.held -= permit.occupy;
                self.dirty.push(id);
                self.touch_limits(&[id]);
            }
        }
        self.settle();
    }

    /// A live lease.
    pub fn lease(&self, id: LeaseId) -> Option<LeaseView> {
        self.leases.get(&id).map(|lease| self.lease_view(id, lease))
    }

    /// Every live lease, oldest first.
    pub fn leases(&self) -> Vec<LeaseView> {
        let mut views: Vec<LeaseView> = self
            .leases
            .iter()
            .map(|(&id, lease)| self.lease_view(id, lease))
            .collect();
        views.sort_by_key(|v| (v.granted_at, v.id));
        views
    }

    /// The live leases holding slots on one limit, oldest first.
    pub fn leases_on(&self, name: &str) -> Result<Vec<LeaseView>, LimitError> {
        let id = self.limit_id(name)?;
        let mut views: Vec<LeaseView> = self.limits[&id]
            .leases
            .iter()
            .map(|&lease| self.lease_view(lease, &self.leases[&lease]))
            .collect();
        views.sort_by_key(|v| (v.granted_at, v.id));
        Ok(views)
    }

    /// The requests queued on one limit, in queue order.
    pub fn waiters_on(&self, name: &str) -> Result<Vec<WaiterView>, LimitError> {
        let id = self.limit_id(name)?;
        Ok(self.limits[&id]
            .queue
            .iter()
            .map(|&request| self.waiter_view(request))
            .collect())
    }

    /// How many requests are queued.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// How many leases are live.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    // ----- internals ----------------------------------------------------

    fn limit_id(&self, name: &str) -> Result<LimitId, LimitError> {
        match self.by_name.get(name) {
            Some(&id) => Ok(id),
            None => {
                name::validate(name)?;
                Err(LimitError::NotFound {
                    name: name.to_owned(),
                })
            }
        }
    }

    fn insert_limit(&mut self, limit: Limit) -> LimitId {
        let id = LimitId(self.next_limit);
        self.next_limit += 1;
        self.by_name.insert(limit.name.clone(), id);
        self.limits.insert(id, limit);
        self.touch_limits(&[id]);
        id
    }

    /// Checks a request completely and maps its names to limits, creating
    /// missing ones only once nothing else can fail.
    fn resolve(&mut self, request: &AcquireRequest<'_>) -> Result<LimitIds, AcquireError> {
        let names = request.names;
        request.check()?;
        let mut found = SmallVec::<[Option<LimitId>; 2]>::new();
        for (i, &name) in names.iter().enumerate() {
            request.check_repeat(i)?;
            let id = self.by_name.get(name).copied();
            if id.is_none() {
                name::validate(name)?;
                if !request.create_if_missing {
                    return Err(AcquireError::LimitNotFound { name: name.into() });
                }
            }
            if let Some(id) = id {
                self.check_possible(id, request.occupy, request.claim.mode())?;
            }
            found.push(id);
        }
        let now = self.now;
        Ok(found
            .into_iter()
            .zip(names)
            .map(|(id, &name)| {
                id.unwrap_or_else(|| {
                    let spec = LimitSpec {
                        active: false,
                        ..LimitSpec::concurrency(name, 1)
                    };
                    self.insert_limit(Limit::new(&spec, now).expect("name was validated"))
                })
            })
            .collect())
    }

    /// Refuses a request that this limit, as it is, could never grant.
    fn check_possible(&self, id: LimitId, occupy: u64, mode: Mode) -> Result<(), AcquireError> {
        let limit = &self.limits[&id];
        if !limit.active {
            return Ok(());
        }
        // A closed limit (0 slots) is a pause, not an impossibility.
        if limit.slots > 0 && occupy > limit.slots {
            return Err(AcquireError::OccupyExceedsSlots {
                name: limit.name.to_string(),
                occupy,
                slots: limit.slots,
            });
        }
        if mode == Mode::RateLimit && limit.decay == 0.0 {
            return Err(AcquireError::RateModeNeedsDecay {
                name: limit.name.to_string(),
            });
        }
        Ok(())
    }

    fn fail_impossible_waiters(&mut self, id: LimitId) {
        let impossible: Vec<(RequestId, AcquireError)> = self.limits[&id]
            .queue
            .iter()
            .filter_map(|request| {
                let waiter = &self.waiters[request];
                self.check_possible(id, waiter.occupy, waiter.claim.mode())
                    .err()
                    .map(|err| (*request, err))
            })
            .collect();
        for (request, err) in impossible {
            self.remove_waiter(request);
            self.fail(request, err);
        }
    }

    fn enqueue(&mut self, id: RequestId, waiter: Waiter) {
        for limit_id in &waiter.limits {
            let limit = self.limits.get_mut(limit_id).expect("resolved");
            limit.queue.insert(id);
            limit.queued_slots += waiter.occupy;
            if limit.active {
                limit.counters.waited_total += 1;
            }
        }
        if let Some(deadline) = waiter.deadline {
            self.timers.insert((deadline, Timer::Deadline(id)));
        }
        self.touch_limits(&waiter.limits);
        self.waiters.insert(id, waiter);
    }

    /// Takes a waiter out of every queue and timer. The limits it was queued
    /// on may have a new head, so they are marked dirty.
    fn remove_waiter(&mut self, id: RequestId) -> Waiter {
        let waiter = self.waiters.remove(&id).expect("waiter is queued");
        for limit_id in &waiter.limits {
            let limit = self
                .limits
                .get_mut(limit_id)
                .expect("queued on live limits");
            limit.queue.remove(&id);
            limit.queued_slots -= waiter.occupy;
        }
        self.dirty.extend_from_slice(&waiter.limits);
        self.touch_limits(&waiter.limits);
        if let Some(deadline) = waiter.deadline {
            self.timers.remove(&(deadline, Timer::Deadline(id)));
        }
        if let Some(at) = waiter.ready_timer {
            self.timers.remove(&(at, Timer::Ready(id)));
        }
        waiter
    }

    /// Grants the heads of dirty limits until none fits any more. The queue
    /// of an inactive limit orders nothing, so it is skipped: its waiters are
    /// reached through their active limits (or examined directly when it is
    /// deactivated).
    fn settle(&mut self) {
        while let Some(id) = self.dirty.pop() {
            while let Some(&head) = self
                .limits
                .get(&id)
                .filter(|l| l.active)
                .and_then(|l| l.queue.first())
            {
                if !self.examine(head) {
                    break;
                }
            }
        }
    }

    /// Grants a queued request if it heads every active queue it is in and
    /// fits everywhere. If only decay stands in its way, sets a timer for the
    /// instant it will fit. Returns whether it was granted.
    fn examine(&mut self, id: RequestId) -> bool {
        let waiter = &self.waiters[&id];
        let mut ready_at = None;
        for limit_id in &waiter.limits {
            let limit = &self.limits[limit_id];
            if !limit.active {
                continue;
            }
            if limit.queue.first() != Some(&id) {
                self.set_ready_timer(id, None);
                return false;
            }
            match limit.room(waiter.occupy, self.now) {
                Room::Now => {}
                Room::At(at) => ready_at = ready_at.max(Some(at)),
                Room::Blocked => {
                    self.set_ready_timer(id, None);
                    return false;
                }
            }
        }
        if ready_at.is_some() {
            self.set_ready_timer(id, ready_at);
            return false;
        }
        let waiter = self.remove_waiter(id);
        let grant = self.grant(id, waiter);
        self.wakes.push(Wake {
            request: id,
            outcome: Ok(grant),
        });
        true
    }

    fn set_ready_timer(&mut self, id: RequestId, at: Option<Timestamp>) {
        let waiter = self.waiters.get_mut(&id).expect("waiter is queued");
        if waiter.ready_timer == at {
            return;
        }
        if let Some(old) = waiter.ready_timer {
            self.timers.remove(&(old, Timer::Ready(id)));
        }
        if let Some(at) = at {
            self.timers.insert((at, Timer::Ready(id)));
        }
        waiter.ready_timer = at;
    }

    /// Occupies the slots of a request that is in no queue (any more).
    fn grant(&mut self, request: RequestId, waiter: Waiter) -> Grant {
        let now = self.now;
        let occupy = waiter.occupy;
        // Only active limits are occupied and counted.
        self.touch_limits(&waiter.limits);
        let mut active = waiter.limits;
        active.retain(|id| {
            let limit = self.limits.get_mut(id).expect("resolved");
            if limit.active {
                limit.counters.granted_total += 1;
                limit.counters.granted_slots_total += occupy;
            }
            limit.active
        });
        let held = match waiter.claim {
            PendingClaim::Rate => {
                for id in &active {
                    self.limit_mut(*id).add_decaying(occupy, now);
                }
                Held::Nothing
            }
            PendingClaim::Permit => {
                let holds = active
                    .iter()
                    .map(|&id| {
                        let limit = self.limit_mut(id);
                        limit.held += occupy;
                        (id, limit.generation)
                    })
                    .collect();
                Held::Permit(Permit { holds, occupy })
            }
            PendingClaim::Lease { ttl, holder } => {
                let id = self.new_lease_id();
                for limit_id in &active {
                    let limit = self.limit_mut(*limit_id);
                    limit.held += occupy;
                    limit.leases.insert(id);
                }
                let expires_at = now.saturating_add(ttl);
                self.timers.insert((expires_at, Timer::Expire(id)));
                self.touch_lease(id);
                self.leases.insert(
                    id,
                    Lease {
                        limits: active,
                        occupy,
                        holder,
                        ttl,
                        granted_at: now,
                        expires_at,
                    },
                );
                Held::Lease(LeaseGrant { id, expires_at })
            }
        };
        Grant {
            request,
            granted_at: now,
            waited: now.saturating_duration_since(waiter.enqueued_at),
            held,
        }
    }

    fn new_lease_id(&mut self) -> LeaseId {
        loop {
            let mut bytes = [0; 16];
            self.rng.fill_bytes(&mut bytes);
            let id = LeaseId::from_bytes(bytes);
            if !self.leases.contains_key(&id) && !self.revoked.contains_key(&id) {
                return id;
            }
        }
    }

    /// Removes a live lease and frees its slots.
    fn drop_lease(&mut self, id: LeaseId) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.timers.remove(&(lease.expires_at, Timer::Expire(id)));
        for limit_id in &lease.limits {
            let limit = self.limit_mut(*limit_id);
            limit.held -= lease.occupy;
            limit.leases.remove(&id);
        }
        self.dirty.extend_from_slice(&lease.limits);
        self.touch_limits(&lease.limits);
        self.touch_lease(id);
        Some(lease)
    }

    fn expire(&mut self, id: LeaseId) {
        if let Some(lease) = self.drop_lease(id) {
            self.count(&lease.limits, |c| c.expired_total += 1);
        }
    }

    fn lease_gone(&self, id: LeaseId) -> LeaseError {
        if self.revoked.contains_key(&id) {
            LeaseError::Revoked
        } else {
            LeaseError::Expired
        }
    }

    fn fail(&mut self, request: RequestId, err: AcquireError) {
        self.wakes.push(Wake {
            request,
            outcome: Err(err),
        });
    }

    /// Updates the counters of those of `limits` that are active.
    fn count(&mut self, limits: &[LimitId], update: impl Fn(&mut crate::Counters)) {
        self.touch_limits(limits);
        for id in limits {
            if let Some(limit) = self.limits.get_mut(id)
                && limit.active
            {
                update(&mut limit.counters);
            }
        }
    }

    fn touch_limits(&mut self, ids: &[LimitId]) {
        if let Some(journal) = self.journal.as_mut() {
            journal.limits.extend_from_slice(ids);
        }
    }

    fn touch_lease(&mut self, id: LeaseId) {
        if let Some(journal) = self.journal.as_mut() {
            journal.leases.push(id);
        }
    }

    fn restore_limit(&mut self, record: LimitRecord) -> Result<(), RestoreError> {
        let invalid = |reason: String| RestoreError::InvalidLimit {
            name: record.name.clone(),
            reason,
        };
        let spec = LimitSpec {
            name: record.name.clone(),
            slots: record.slots,
            slot_decay_per_second: record.slot_decay_per_second,
            active: record.active,
            description: record.description.clone(),
        };
        let mut limit = Limit::new(&spec, record.created_at).map_err(|e| invalid(e.to_string()))?;
        if self.by_name.contains_key(limit.name.as_str()) {
            return Err(invalid("the name is stored twice".into()));
        }
        // A limit that does not decay has nothing decaying (see `drained_at`).
        limit.drained_at = if limit.decay > 0.0 {
            record.drained_at
        } else {
            record.drained_at.min(self.now)
        };
        limit.counters = record.counters;
        limit.updated_at = record.updated_at;
        limit.pause = record.pause;
        self.insert_limit(limit);
        Ok(())
    }

    fn restore_lease(&mut self, record: LeaseView) -> Result<(), RestoreError> {
        let invalid = |reason: &str| RestoreError::InvalidLease {
            id: record.id,
            reason: reason.into(),
        };
        if record.occupy == 0 {
            return Err(invalid("it holds no slots"));
        }
        if self.leases.contains_key(&record.id) {
            return Err(invalid("the id is stored twice"));
        }
        let id = record.id;
        let limits: LimitIds = record
            .limits
            .iter()
            .filter_map(|name| self.by_name.get(name.as_str()).copied())
            .collect();
        for limit_id in &limits {
            let limit = self.limit_mut(*limit_id);
            limit.held = limit.held.saturating_add(record.occupy);
            limit.leases.insert(id);
        }
        self.timers.insert((record.expires_at, Timer::Expire(id)));
        self.leases.insert(
            id,
            Lease {
                limits,
                occupy: record.occupy,
                holder: record.holder.map(Into::into),
                ttl: record.ttl,
                granted_at: record.granted_at,
                expires_at: record.expires_at,
            },
        );
        Ok(())
    }

    fn limit_mut(&mut self, id: LimitId) -> &mut Limit {
        self.limits.get_mut(&id).expect("limit ids in use are live")
    }

    fn names_of(&self, limits: &[LimitId]) -> Vec<String> {
        limits
            .iter()
            .filter_map(|id| self.limits.get(id))
            .map(|limit| limit.name.to_string())
            .collect()
    }

    fn lease_view(&self, id: LeaseId, lease: &Lease) -> LeaseView {
        LeaseView {
            id,
            limits: self.names_of(&lease.limits),
            occupy: lease.occupy,
            holder: lease.holder.as_deref().map(Into::into),
            granted_at: lease.granted_at,
            expires_at: lease.expires_at,
            ttl: lease.ttl,
        }
    }

    fn waiter_view(&self, id: RequestId) -> WaiterView {
        let waiter = &self.waiters[&id];
        WaiterView {
            request: id,
            limits: self.names_of(&waiter.limits),
            occupy: waiter.occupy,
            mode: waiter.claim.mode(),
            holder: match &waiter.claim {
                PendingClaim::Lease { holder, .. } => holder.as_deref().map(Into::into),
                _ => None,
            },
            enqueued_at: waiter.enqueued_at,
            deadline: waiter.deadline,
        }
    }
}
