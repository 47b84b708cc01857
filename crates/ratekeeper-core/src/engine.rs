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

use crate::adaptive::ADAPT_STEP;
use crate::error::{AcquireError, LeaseError, LimitError};
use crate::journal::{Change, LimitRecord, Records, RestoreError};
use crate::lease::{Lease, LeaseGrant, LeaseId, LeaseView, Pacing, Permit, Reservation, check_ttl};
use crate::limit::{Limit, LimitId, LimitPatch, LimitSpec, LimitView, Role, Room, check_drain};
use crate::name::{self, LimitName};
use crate::pause::{Pause, PauseSpec, ThrottleReport};
use crate::request::{
    AcquireRequest, Admission, Grant, Held, Mode, PendingClaim, RequestId, Waiter, WaiterView, Wake,
};
use crate::time::Timestamp;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type LimitIds = SmallVec<[LimitId; 2]>;

/// What a name of a request stands for, before anything is created.
#[derive(Clone, Copy)]
enum Found {
    Limit(LimitId),
    /// A key of this template, without an instance yet.
    Key(LimitId),
    /// Nothing, and the request may create it.
    Missing,
}

/// Which instances of a template to list, and how.
#[derive(Debug, Clone, Copy)]
pub struct InstanceQuery<'a> {
    /// Only those whose name starts with this.
    pub prefix: &'a str,
    /// The order.
    pub order: InstanceOrder,
    /// Start after the instance of this name (the last of the page before).
    pub after: Option<&'a str>,
    /// At most this many.
    pub count: usize,
}

impl InstanceQuery<'_> {
    /// The page this query asks for, out of every instance of a template
    /// (in any order).
    pub fn page(&self, mut views: Vec<LimitView>) -> Vec<LimitView> {
        views.retain(|view| view.name.starts_with(self.prefix));
        match self.order {
            InstanceOrder::Name => views.sort_by(|a, b| a.name.cmp(&b.name)),
            InstanceOrder::Busiest => views.sort_by(|a, b| {
                let load = |v: &LimitView| v.held as f64 + v.decaying + v.waiting_slots as f64;
                load(b)
                    .total_cmp(&load(a))
                    .then_with(|| a.name.cmp(&b.name))
            }),
        }
        let start = match (self.after, self.order) {
            (Some(after), InstanceOrder::Name) => {
                views.partition_point(|v| v.name.as_str() <= after)
            }
            (Some(after), InstanceOrder::Busiest) => views
                .iter()
                .position(|v| v.name == after)
                .map_or(views.len(), |at| at + 1),
            (None, _) => 0,
        };
        views.into_iter().skip(start).take(self.count).collect()
    }
}

/// How instances are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceOrder {
    /// By name.
    Name,
    /// Most occupied first (held, decaying and waiting slots), then by name.
    Busiest,
}

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
    /// An instance's decaying slots have drained or its pause has ended:
    /// it may be idle now.
    Idle(LimitId),
    /// An adaptive limit climbs one step back to its configured value.
    Recover(LimitId),
}

/// The pure limit engine. See the [crate docs](crate) for the rules it keeps.
pub struct Engine {
    /// The latest instant seen. An operation given an earlier one acts at this
    /// one, so time never runs backwards inside the engine.
    now: Timestamp,
    limits: Map<LimitId, Limit>,
    /// Every key names a live entry of `limits`, and every limit is here once.
    by_name: Map<LimitName, LimitId>,
    /// Templates by the prefix their keys start with (`tenant:` for `tenant:*`).
    templates: Map<Box<str>, LimitId>,
    /// Instances that may have become idle, to drop (see `drop_idle`).
    idle: Vec<LimitId>,
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
            templates: Map::default(),
            idle: Vec::new(),
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
        // Templates first, so that their instances find them.
        let (templates, others): (Vec<_>, Vec<_>) = records
            .limits
            .into_iter()
            .partition(|record| record.name.ends_with('*'));
        for record in templates.into_iter().chain(others) {
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
                .filter(|id| self.limits.contains_key(id))
                .map(|&id| Change::Limit(self.record_of(id))),
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
        let mut limits: Vec<LimitRecord> =
            self.limits.keys().map(|&id| self.record_of(id)).collect();
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
                Timer::Idle(id) => self.idle.push(id),
                Timer::Recover(id) => self.recover(id),
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
        self.drop_idle();
    }

    // ----- limits -------------------------------------------------------

    /// Creates a limit. A name ending in `*` makes a template; creating a
    /// limit with the name of a live instance makes that instance a limit
    /// of its own (its holders and queue stay), overriding the template for
    /// that key.
    pub fn create_limit(
        &mut self,
        now: Timestamp,
        spec: &LimitSpec,
    ) -> Result<LimitView, LimitError> {
        self.advance(now);
        let limit = Limit::new(spec, self.now)?;
        if let Some(&id) = self.by_name.get(limit.name.as_str()) {
            if self.limits[&id].template_of().is_none() {
                return Err(LimitError::AlreadyExists {
                    name: spec.name.clone(),
                });
            }
            self.detach_from_template(id);
            let patch = LimitPatch {
                slots: Some(spec.slots),
                slot_decay_per_second: Some(spec.slot_decay_per_second),
                active: Some(spec.active),
                description: Some(spec.description.clone()),
                max_instances: None,
                adaptive: Some(spec.adaptive),
            };
            self.change_definition(id, &patch);
            self.settle();
            let view = self.view_of(id);
            self.drop_idle();
            return Ok(view);
        }
        let id = self.insert_limit(limit);
        Ok(self.view_of(id))
    }

    /// Changes a limit's definition. Raising `slots`, deactivating it or
    /// speeding up its decay lets waiters in at once; lowering `slots` keeps
    /// existing holders. Waiters that the change makes impossible (more
    /// `occupy` than the new nonzero `slots`, or rate mode once decay is 0)
    /// fail rather than block their queue forever. Changing a template
    /// changes every instance of it alike; an instance itself cannot be
    /// changed (its definition is its template's).
    pub fn update_limit(
        &mut self,
        now: Timestamp,
        name: &str,
        patch: &LimitPatch,
    ) -> Result<LimitView, LimitError> {
        patch.check()?;
        self.advance(now);
        let id = self.limit_id(name)?;
        let current = &self.limits[&id];
        if let Some(template) = current.template_of() {
            return Err(LimitError::IsInstance {
                name: name.to_owned(),
                template: self.limits[&template].name.to_string(),
            });
        }
        if patch.max_instances.is_some() && !current.is_template() {
            return Err(LimitError::InvalidMaxInstances {
                reason: "is only for a template (a name ending in '*')".into(),
            });
        }
        check_drain(
            patch.slots.unwrap_or(current.slots),
            patch.slot_decay_per_second.unwrap_or(current.decay),
        )?;
        self.change_definition(id, patch);
        self.settle();
        let view = self.view_of(id);
        self.drop_idle();
        Ok(view)
    }

    /// Deletes a limit. Its waiters fail with `limit_deleted`; leases and
    /// permits that hold it stay valid for their other limits. Deleting a
    /// template deletes every instance of it so.
    pub fn delete_limit(&mut self, now: Timestamp, name: &str) -> Result<(), LimitError> {
        self.advance(now);
        let id = self.limit_id(name)?;
        for instance in self.instances_of(id) {
            self.remove_limit(instance);
        }
        self.remove_limit(id);
        self.settle();
        self.drop_idle();
        Ok(())
    }

    /// Revokes every lease on a limit (their next renew or release says
    /// `lease_revoked`), forgets permits on it and clears its decaying slots;
    /// on a template, on every instance of it.
    pub fn reset_limit(&mut self, now: Timestamp, name: &str) -> Result<LimitView, LimitError> {
        self.advance(now);
        let id = self.limit_id(name)?;
        for instance in self.instances_of(id) {
            self.reset_one(instance);
        }
        self.reset_one(id);
        self.settle();
        let view = self.view_of(id);
        self.drop_idle();
        Ok(view)
    }

    /// Pauses a limit until the pause asked for ends, or keeps a pause
    /// that ends later (with its reason and reporter): a pause is extended,
    /// never shortened. Nothing is granted on the limit until then; queued
    /// requests keep their order and their timeouts. Pausing a template
    /// pauses every instance, and instances made during the pause start
    /// paused; pausing a key of a template pauses that key alone (making
    /// its instance if it has none: the worker that saw the 429 may have
    /// let go of it already).
    pub fn pause(
        &mut self,
        now: Timestamp,
        name: &str,
        spec: &PauseSpec,
    ) -> Result<LimitView, LimitError> {
        let until = spec.until(now.max(self.now))?;
        self.advance(now);
        let id = self.limit_or_key(name)?;
        self.pause_all(id, spec, until);
        self.settle();
        let view = self.view_of(id);
        self.drop_idle();
        Ok(view)
    }

    /// Takes a report that the upstream behind a limit said "slow down"
    /// (see [`ThrottleReport`]): an adaptive limit is lowered, and the
    /// limit paused for the wait the upstream asked for (a fixed limit for
    /// a second when it asked for none). On a template, every instance;
    /// on a key of a template, that key alone.
    pub fn report_throttled(
        &mut self,
        now: Timestamp,
        name: &str,
        report: &ThrottleReport,
    ) -> Result<LimitView, LimitError> {
        // Checked before anything changes.
        if let Some(spec) = report.pause(false) {
            spec.until(now.max(self.now))?;
        }
        self.advance(now);
        let id = self.limit_or_key(name)?;
        let mut lowered = vec![id];
        lowered.extend(self.instances_of(id));
        for &limit in &lowered {
            self.lower(limit);
        }
        if let Some(spec) = report.pause(self.limits[&id].adaptive.is_some()) {
            let until = spec.until(self.now)?;
            self.pause_all(id, &spec, until);
        }
        self.settle();
        let view = self.view_of(id);
        self.drop_idle();
        Ok(view)
    }

    /// A limit, or the instance of a key of a template, made if it has
    /// none: the worker that saw the 429 may have let go of it already.
    fn limit_or_key(&mut self, name: &str) -> Result<LimitId, LimitError> {
        match (self.limit_id(name), self.template_for(name)) {
            (Ok(id), _) => Ok(id),
            (Err(LimitError::NotFound { .. }), Some(template)) => {
                self.check_room_for_instance(template, name, &mut SmallVec::new())
                    .map_err(|err| LimitError::InvalidPause {
                        reason: err.to_string(),
                    })?;
                Ok(self.new_instance(template, name))
            }
            (Err(err), _) => Err(err),
        }
    }

    /// Pauses a limit and, for a template, every instance.
    fn pause_all(&mut self, id: LimitId, spec: &PauseSpec, until: Timestamp) {
        let pause = Pause {
            until,
            since: self.now,
            reason: spec.reason.clone(),
            reporter: spec.reporter.clone(),
        };
        for instance in self.instances_of(id) {
            self.pause_one(instance, &pause);
        }
        self.pause_one(id, &pause);
    }

    /// Ends a limit's pause now, granting its queue from the head (on a
    /// template, every instance's). A limit that is not paused is left as
    /// it is.
    pub fn resume(&mut self, now: Timestamp, name: &str) -> Result<LimitView, LimitError> {
        self.advance(now);
        let id = self.limit_id(name)?;
        for instance in self.instances_of(id) {
            self.resume_one(instance);
        }
        self.resume_one(id);
        self.settle();
        let view = self.view_of(id);
        self.drop_idle();
        Ok(view)
    }

    /// A limit as of the latest instant the engine was given.
    pub fn limit(&self, name: &str) -> Result<LimitView, LimitError> {
        Ok(self.view_of(self.limit_id(name)?))
    }

    /// Whether `occupy` slots of `name` would be granted now, without
    /// asking: nobody is queued and they fit (the same rule an acquire
    /// follows, decaying slots counted exactly), or the limit is inactive.
    /// A key of a template without an instance yet answers as a fresh
    /// instance would.
    pub fn has_room(&self, name: &str, occupy: u64) -> Result<bool, LimitError> {
        let limit = match self.by_name.get(name) {
            Some(id) => &self.limits[id],
            None => match self.template_for(name) {
                Some(template) => {
                    let template = &self.limits[&template];
                    let paused = template.paused(self.now).is_some();
                    return Ok(!template.active || (occupy <= template.slots && !paused));
                }
                None => &self.limits[&self.limit_id(name)?],
            },
        };
        Ok(!limit.active || (limit.queue.is_empty() && limit.room(occupy, self.now) == Room::Now))
    }

    /// Every limit and template, ordered by name; instances are listed by
    /// [`instances`](Self::instances).
    pub fn limits(&self) -> Vec<LimitView> {
        let mut views: Vec<LimitView> = self
            .limits
            .iter()
            .filter(|(_, limit)| limit.template_of().is_none())
            .map(|(&id, _)| self.view_of(id))
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// A page of a template's instances: those whose name starts with
    /// `prefix`, after `after` in `order`, at most `count`.
    pub fn instances(
        &self,
        template: &str,
        query: &InstanceQuery<'_>,
    ) -> Result<Vec<LimitView>, LimitError> {
        let id = self.limit_id(template)?;
        let views = self.instances_of(id).into_iter();
        Ok(query.page(views.map(|instance| self.view_of(instance)).collect()))
    }

    // ----- templates and instances (internals) ---------------------------

    /// A limit as shown: a template with the sums over its instances, an
    /// instance with its template's name.
    fn view_of(&self, id: LimitId) -> LimitView {
        let limit = &self.limits[&id];
        let mut view = limit.view(self.now);
        match &limit.role {
            Role::Instance(template) => {
                view.instance_of = Some(self.limits[template].name.to_string());
            }
            Role::Template {
                instances, sums, ..
            } => {
                view.held = sums.held;
                view.waiting = sums.waiting;
                view.waiting_slots = sums.waiting_slots;
                // Only a rate template's instances have decaying slots.
                if limit.decay > 0.0 {
                    view.decaying = instances
                        .iter()
                        .map(|instance| self.limits[instance].decaying(self.now))
                        .sum();
                }
            }
            Role::Plain => {}
        }
        view
    }

    /// The instances of a template (none for any other limit).
    fn instances_of(&self, id: LimitId) -> Vec<LimitId> {
        match &self.limits[&id].role {
            Role::Template { instances, .. } => instances.iter().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// The template whose prefix is the longest that starts `name`.
    fn template_for(&self, name: &str) -> Option<LimitId> {
        if self.templates.is_empty() {
            return None;
        }
        (1..=name.len())
            .rev()
            .filter(|&end| name.is_char_boundary(end))
            .find_map(|end| self.templates.get(&name[..end]).copied())
    }

    /// A new instance of `template` named `name`, as the template is now.
    fn new_instance(&mut self, template: LimitId, name: &str) -> LimitId {
        let t = &self.limits[&template];
        let spec = LimitSpec {
            name: name.to_owned(),
            slots: t.slots,
            slot_decay_per_second: t.decay,
            active: t.active,
            description: t.description.clone(),
            max_instances: None,
            adaptive: t.adaptive,
        };
        let pause = t.paused(self.now).cloned();
        let mut instance = Limit::new(&spec, self.now).expect("a key of a valid template is valid");
        instance.role = Role::Instance(template);
        instance.pause = pause.map(Box::new);
        let id = self.insert_limit(instance);
        if let Role::Template { instances, .. } = &mut self.limit_mut(template).role {
            instances.insert(id);
        }
        self.maybe_idle(&[id]);
        id
    }

    /// Changes what a limit holds or is asked for, keeping its template's
    /// sums (if it is an instance) in step.
    fn occupy(&mut self, id: LimitId, change: impl FnOnce(&mut Limit)) {
        let limit = self.limit_mut(id);
        let before = limit.occupancy();
        change(limit);
        let after = limit.occupancy();
        if let Some(template) = limit.template_of()
            && let Role::Template { sums, .. } = &mut self.limit_mut(template).role
        {
            *sums = sums.moved(before, after);
        }
    }

    /// Notes limits that may have become idle instances. Without templates
    /// there are no instances, and nothing is noted: the common path pays
    /// nothing for them.
    fn maybe_idle(&mut self, ids: &[LimitId]) {
        if !self.templates.is_empty() {
            self.idle.extend_from_slice(ids);
        }
    }

    /// Drops the instances that hold nothing, have nobody waiting, have no
    /// decaying slots left, are not paused and are not lowered by adapting; one that will be idle once
    /// its slots drain or its pause ends is looked at again then (a rate
    /// instance must not forget admissions it still counts).
    fn drop_idle(&mut self) {
        while let Some(id) = self.idle.pop() {
            let Some(limit) = self.limits.get(&id) else {
                continue;
            };
            // A lowered adaptive instance is kept until it has climbed back
            // (each step looks again): a new one would start at full speed.
            if limit.template_of().is_none()
                || limit.held > 0
                || !limit.queue.is_empty()
                || limit.scale < 1.0
            {
                continue;
            }
            let busy_until = limit
                .drained_at
                .max(limit.paused(self.now).map_or(Timestamp::EPOCH, |p| p.until));
            if busy_until > self.now {
                self.timers.insert((busy_until, Timer::Idle(id)));
            } else {
                self.remove_limit(id);
            }
        }
    }

    /// Changes the definition of a limit and, for a template, of every
    /// instance, then lets the change act: every definition first, so that
    /// no waiter is decided on a half-changed template.
    fn change_definition(&mut self, id: LimitId, patch: &LimitPatch) {
        let mut changed = vec![id];
        changed.extend(self.instances_of(id));
        let deactivated: Vec<bool> = changed
            .iter()
            .map(|&limit| self.apply_patch(limit, patch))
            .collect();
        for (&limit, deactivated) in changed.iter().zip(deactivated) {
            if deactivated {
                // Any waiter in this queue may have been held back by it
                // alone. Its queue no longer orders anything, so look at
                // each directly.
                let queued: Vec<RequestId> = self.limits[&limit].queue.iter().copied().collect();
                for request in queued {
                    if self.waiters.contains_key(&request) {
                        self.examine(request);
                    }
                }
            }
        }
        for &limit in &changed {
            self.fail_impossible_waiters(limit);
            self.dirty.push(limit);
            self.maybe_idle(&[limit]);
        }
    }

    /// Changes one limit's fields; says whether it was deactivated.
    fn apply_patch(&mut self, id: LimitId, patch: &LimitPatch) -> bool {
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
        if let (Some(max), Role::Template { max_instances, .. }) =
            (patch.max_instances, &mut limit.role)
        {
            *max_instances = max;
        }
        if let Some(adaptive) = patch.adaptive {
            limit.adaptive = adaptive;
            // A limit made fixed is back at its configured value.
            let scale = if adaptive.is_some() { limit.scale } else { 1.0 };
            limit.set_scale(scale, now);
        }
        limit.updated_at = now;
        was_active && !limit.active
    }

    /// Removes a limit: its waiters fail with `limit_deleted`, its leases
    /// let go of it.
    fn remove_limit(&mut self, id: LimitId) {
        self.detach_from_template(id);
        let name = self.limits[&id].name.to_string();
        let queued: Vec<RequestId> = self.limits[&id].queue.iter().copied().collect();
        for request in queued {
            self.remove_waiter(request);
            self.fail(request, AcquireError::LimitDeleted { name: name.clone() });
        }
        let limit = self.limits.remove(&id).expect("by_name is consistent");
        self.by_name.remove(&limit.name);
        if let Some(prefix) = limit.name.template_prefix() {
            self.templates.remove(prefix);
        }
        for &lease_id in &limit.leases {
            if let Some(lease) = self.leases.get_mut(&lease_id) {
                lease.limits.retain(|held| *held != id);
                self.touch_lease(lease_id);
            }
        }
        if let Some(journal) = self.journal.as_mut() {
            journal.deleted.push(name);
        }
    }

    /// Takes an instance out of its template, and out of its sums: it is
    /// a limit of its own from then on.
    fn detach_from_template(&mut self, id: LimitId) {
        let limit = self.limit_mut(id);
        let occupancy = limit.occupancy();
        let template = limit.template_of();
        limit.role = Role::Plain;
        if let Some(template) = template
            && let Some(Role::Template {
                instances, sums, ..
            }) = self.limits.get_mut(&template).map(|t| &mut t.role)
        {
            instances.remove(&id);
            *sums = sums.moved(occupancy, Default::default());
            self.touch_limits(&[template]);
        }
    }

    fn reset_one(&mut self, id: LimitId) {
        let leases: Vec<LeaseId> = self.limits[&id].leases.iter().copied().collect();
        for lease_id in leases {
            let lease = self.drop_lease(lease_id).expect("limit leases are live");
            self.revoked.insert(lease_id, lease.expires_at);
            self.timers
                .insert((lease.expires_at, Timer::Forget(lease_id)));
        }
        let now = self.now;
        self.touch_limits(&[id]);
        // What is still held belongs to permits, which are forgotten.
        self.occupy(id, |limit| limit.held = 0);
        let limit = self.limit_mut(id);
        limit.generation += 1;
        limit.drained_at = now;
        self.dirty.push(id);
        self.maybe_idle(&[id]);
    }

    fn pause_one(&mut self, id: LimitId, pause: &Pause) {
        let now = self.now;
        let limit = self.limit_mut(id);
        let current = limit.paused(now).map_or(now, |p| p.until);
        if pause.until > current {
            limit.pause = Some(Box::new(pause.clone()));
            self.touch_limits(&[id]);
            // Its head's decay timer, if any, now waits for the pause.
            self.dirty.push(id);
        }
    }

    /// A throttling report on an adaptive limit: its rate or slots are
    /// multiplied by its `decrease_factor`, at most once per
    /// [`ADAPT_STEP`], and climb back from the next step on.
    fn lower(&mut self, id: LimitId) {
        let now = self.now;
        let limit = self.limit_mut(id);
        let Some(adaptive) = limit.adaptive else {
            return;
        };
        if limit.is_template()
            || limit
                .lowered_at
                .is_some_and(|at| now < at.saturating_add(ADAPT_STEP))
        {
            return;
        }
        limit.set_scale(limit.scale * adaptive.decrease_factor, now);
        limit.lowered_at = Some(now);
        // The climb starts a whole step after the decrease.
        if let Some(at) = limit.recover_at.take() {
            self.timers.remove(&(at, Timer::Recover(id)));
        }
        self.touch_limits(&[id]);
        self.schedule_recovery(id);
    }

    /// One step of an adaptive limit's climb back to its configured value.
    fn recover(&mut self, id: LimitId) {
        let now = self.now;
        let Some(limit) = self.limits.get_mut(&id) else {
            return;
        };
        limit.recover_at = None;
        let Some(adaptive) = limit.adaptive else {
            return;
        };
        limit.set_scale(limit.scale + adaptive.step_increase(), now);
        self.touch_limits(&[id]);
        self.dirty.push(id);
        self.maybe_idle(&[id]);
        self.schedule_recovery(id);
    }

    /// Sets the timer of the next climbing step, while one is due.
    fn schedule_recovery(&mut self, id: LimitId) {
        let now = self.now;
        let limit = self.limit_mut(id);
        if limit.adaptive.is_none() || limit.scale >= 1.0 || limit.recover_at.is_some() {
            return;
        }
        let at = now.saturating_add(ADAPT_STEP);
        limit.recover_at = Some(at);
        self.timers.insert((at, Timer::Recover(id)));
    }

    fn resume_one(&mut self, id: LimitId) {
        if self.limit_mut(id).pause.take().is_some() {
            self.touch_limits(&[id]);
            self.dirty.push(id);
            self.maybe_idle(&[id]);
        }
    }

    /// Updates a limit's counters if it is active, and its template's.
    fn tally(&mut self, id: LimitId, update: &impl Fn(&mut crate::Counters)) {
        let Some(limit) = self.limits.get_mut(&id) else {
            return;
        };
        if !limit.active {
            return;
        }
        update(&mut limit.counters);
        let template = limit.template_of();
        self.touch_limits(&[id]);
        if let Some(template) = template {
            update(&mut self.limit_mut(template).counters);
            self.touch_limits(&[template]);
        }
    }

    // ----- reservations (the in-process limiter's lock-free path) -------

    /// Takes every slot free now on `name` as a [`Reservation`], counting no
    /// grant: its holder hands them out by itself (with atomics) while
    /// nobody waits, and gives back what it no longer needs before the
    /// engine decides anything else about the limit. Only a limit whose
    /// capacity is a plain count qualifies: active, without decay, fixed
    /// (not adaptive), not paused, neither template nor instance, with
    /// nobody queued. `None` if it does not, or if no slot is free.
    pub fn reserve(&mut self, now: Timestamp, name: &str) -> Option<Reservation> {
        self.advance(now);
        let id = *self.by_name.get(name)?;
        let mut reservation = Reservation {
            limit: id,
            generation: self.limits[&id].generation,
            slots: 0,
        };
        (self.top_up(now, &mut reservation) > 0).then_some(reservation)
    }

    /// Adds every slot free now to a reservation, if its limit still
    /// qualifies (see [`reserve`](Self::reserve)) and was not reset since;
    /// answers how many were added.
    pub fn top_up(&mut self, now: Timestamp, reservation: &mut Reservation) -> u64 {
        self.advance(now);
        if !self.reservation_holds(reservation) {
            return 0;
        }
        let limit = &self.limits[&reservation.limit];
        let qualifies = limit.active
            && limit.decay == 0.0
            && limit.adaptive.is_none()
            && matches!(limit.role, Role::Plain)
            && limit.queue.is_empty()
            && limit.paused(self.now).is_none();
        let free = limit.slots.saturating_sub(limit.held);
        if !qualifies || free == 0 {
            return 0;
        }
        let id = reservation.limit;
        self.occupy(id, |limit| limit.held += free);
        self.touch_limits(&[id]);
        reservation.slots += free;
        free
    }

    /// Whether a reservation still holds slots of its limit: the limit was
    /// neither reset nor deleted since it was taken.
    pub fn reservation_holds(&self, reservation: &Reservation) -> bool {
        self.limits
            .get(&reservation.limit)
            .is_some_and(|limit| limit.generation == reservation.generation)
    }

    /// Gives back `slots` of a reservation (at most all it holds), letting
    /// waiters in as a release does.
    pub fn shrink_reservation(
        &mut self,
        now: Timestamp,
        reservation: &mut Reservation,
        slots: u64,
    ) {
        self.advance(now);
        let slots = slots.min(reservation.slots);
        reservation.slots -= slots;
        let id = reservation.limit;
        if self.reservation_holds(reservation) && slots > 0 {
            self.occupy(id, |limit| limit.held -= slots);
            self.dirty.push(id);
            self.touch_limits(&[id]);
        }
        self.settle();
        self.drop_idle();
    }

    /// Hands out the pacing of rate limit `name` (see [`Pacing`]): its
    /// drain instant and what one admission does to it, for a caller that
    /// admits by itself while nobody waits, counting no grant here. Only a
    /// limit whose admissions depend on nothing else qualifies: active,
    /// draining (a rate), fixed (not adaptive), not paused, neither
    /// template nor instance, with nobody queued and room for a slot
    /// besides those held. `None` if it does not.
    pub fn pace(&mut self, now: Timestamp, name: &str) -> Option<Pacing> {
        self.advance(now);
        let id = *self.by_name.get(name)?;
        let limit = &self.limits[&id];
        let qualifies = limit.active
            && limit.decay > 0.0
            && limit.adaptive.is_none()
            && matches!(limit.role, Role::Plain)
            && limit.queue.is_empty()
            && limit.paused(self.now).is_none();
        let free = limit
            .effective_slots()
            .checked_sub(limit.held)?
            .checked_sub(1)?;
        qualifies.then(|| Pacing {
            limit: id,
            generation: limit.generation,
            drained_at: limit.drained_at,
            slack_nanos: limit.slack_nanos(free),
            drain_nanos: limit.drain_nanos(1),
            rate: limit.rate,
        })
    }

    /// Takes back a pacing's drain instant, as its holder moved it, and
    /// counts the `admitted` slots its holder admitted by it (each one
    /// grant), if the limit was neither reset nor deleted since it was
    /// handed out.
    pub fn settle_pacing(
        &mut self,
        now: Timestamp,
        pacing: &Pacing,
        drained_at: Timestamp,
        admitted: u64,
    ) {
        self.advance(now);
        let id = pacing.limit;
        let Some(limit) = self.limits.get_mut(&id) else {
            return;
        };
        if limit.generation != pacing.generation {
            return;
        }
        limit.drained_at = limit.drained_at.max(drained_at);
        self.touch_limits(&[id]);
        self.tally(id, &|counters| {
            counters.granted_total += admitted;
            counters.granted_slots_total += admitted;
        });
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
            let grant = self.grant(id, waiter);
            self.drop_idle();
            return Ok(Admission::Granted(grant));
        }
        if request.timeout == Some(Duration::ZERO) {
            self.count(&waiter.limits, |c| c.denied_total += 1);
            self.maybe_idle(&waiter.limits);
            self.drop_idle();
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
        self.drop_idle();
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
        self.drop_idle();
        Ok(())
    }

    /// Gives a permit's slots back.
    pub fn release_permit(&mut self, now: Timestamp, permit: Permit) {
        self.advance(now);
        for (id, generation) in permit.holds {
            let Some(limit) = self.limits.get(&id) else {
                continue;
            };
            if limit.generation == generation {
                self.occupy(id, |limit| limit.held -= permit.occupy);
                self.dirty.push(id);
                self.maybe_idle(&[id]);
                self.touch_limits(&[id]);
            }
        }
        self.settle();
        self.drop_idle();
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
        if let Some(prefix) = limit.name.template_prefix() {
            self.templates.insert(prefix.into(), id);
        }
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
        let mut found = SmallVec::<[Found; 2]>::new();
        // New instances per template in this request, against its bound.
        let mut new_keys = SmallVec::<[(LimitId, u64); 2]>::new();
        for (i, &name) in names.iter().enumerate() {
            request.check_repeat(i)?;
            let found_here = match self.by_name.get(name).copied() {
                Some(id) if self.limits[&id].is_template() => {
                    return Err(AcquireError::IsTemplate {
                        name: name.into(),
                        example: name::example_key(name),
                    });
                }
                Some(id) => {
                    self.check_possible(id, request.occupy, request.claim.mode())?;
                    Found::Limit(id)
                }
                None => {
                    name::validate(name)?;
                    match self.template_for(name) {
                        Some(template) => {
                            self.check_room_for_instance(template, name, &mut new_keys)?;
                            self.check_possible(template, request.occupy, request.claim.mode())?;
                            Found::Key(template)
                        }
                        None if request.create_if_missing => Found::Missing,
                        None => return Err(AcquireError::LimitNotFound { name: name.into() }),
                    }
                }
            };
            found.push(found_here);
        }
        let now = self.now;
        Ok(found
            .into_iter()
            .zip(names)
            .map(|(found, &name)| match found {
                Found::Limit(id) => id,
                Found::Key(template) => self.new_instance(template, name),
                Found::Missing => {
                    let spec = LimitSpec {
                        active: false,
                        ..LimitSpec::concurrency(name, 1)
                    };
                    self.insert_limit(Limit::new(&spec, now).expect("name was validated"))
                }
            })
            .collect())
    }

    /// Refuses a new key of `template` beyond its `max_instances`,
    /// counting the keys this request adds already.
    fn check_room_for_instance(
        &self,
        template: LimitId,
        name: &str,
        new_keys: &mut SmallVec<[(LimitId, u64); 2]>,
    ) -> Result<(), AcquireError> {
        let limit = &self.limits[&template];
        let Role::Template {
            max_instances,
            instances,
            ..
        } = &limit.role
        else {
            unreachable!("templates map to templates");
        };
        let adding = match new_keys.iter_mut().find(|(id, _)| *id == template) {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => {
                new_keys.push((template, 1));
                1
            }
        };
        if instances.len() as u64 + adding > *max_instances {
            return Err(AcquireError::TooManyInstances {
                name: name.into(),
                template: limit.name.to_string(),
                max: *max_instances,
            });
        }
        Ok(())
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
        for &limit_id in &waiter.limits {
            self.occupy(limit_id, |limit| {
                limit.queue.insert(id);
                limit.queued_slots += waiter.occupy;
            });
            self.tally(limit_id, &|c| c.waited_total += 1);
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
        for &limit_id in &waiter.limits {
            self.occupy(limit_id, |limit| {
                limit.queue.remove(&id);
                limit.queued_slots -= waiter.occupy;
            });
        }
        self.dirty.extend_from_slice(&waiter.limits);
        self.maybe_idle(&waiter.limits);
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
        active.retain(|id| self.limits[id].active);
        for &id in &active {
            self.tally(id, &|c| {
                c.granted_total += 1;
                c.granted_slots_total += occupy;
            });
        }
        let held = match waiter.claim {
            PendingClaim::Rate => {
                for id in &active {
                    self.limit_mut(*id).add_decaying(occupy, now);
                }
                // An instance counts its admissions until they drain.
                self.maybe_idle(&active);
                Held::Nothing
            }
            PendingClaim::Permit => {
                let holds = active
                    .iter()
                    .map(|&id| {
                        self.occupy(id, |limit| limit.held += occupy);
                        (id, self.limits[&id].generation)
                    })
                    .collect();
                Held::Permit(Permit { holds, occupy })
            }
            PendingClaim::Lease { ttl, holder } => {
                let id = self.new_lease_id();
                for &limit_id in &active {
                    self.occupy(limit_id, |limit| {
                        limit.held += occupy;
                        limit.leases.insert(id);
                    });
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
        for &limit_id in &lease.limits {
            self.occupy(limit_id, |limit| {
                limit.held -= lease.occupy;
                limit.leases.remove(&id);
            });
        }
        self.dirty.extend_from_slice(&lease.limits);
        self.maybe_idle(&lease.limits);
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
        for &id in limits {
            self.tally(id, &update);
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
            max_instances: record.max_instances,
            adaptive: record.adaptive,
        };
        let mut limit = Limit::new(&spec, record.created_at).map_err(|e| invalid(e.to_string()))?;
        if self.by_name.contains_key(limit.name.as_str()) {
            return Err(invalid("the name is stored twice".into()));
        }
        let template = match &record.instance_of {
            Some(template) => match self.by_name.get(template.as_str()) {
                Some(&id) if self.limits[&id].is_template() => Some(id),
                _ => {
                    return Err(invalid(format!("its template {template:?} is not stored")));
                }
            },
            None => None,
        };
        if let (Some(scale), Some(_)) = (record.scale, limit.adaptive) {
            limit.set_scale(scale, self.now);
        }
        // A limit that does not decay has nothing decaying (see `drained_at`).
        limit.drained_at = if limit.decay > 0.0 {
            record.drained_at
        } else {
            record.drained_at.min(self.now)
        };
        limit.counters = record.counters;
        limit.updated_at = record.updated_at;
        limit.pause = record.pause.map(Box::new);
        if let Some(template) = template {
            limit.role = Role::Instance(template);
        }
        let id = self.insert_limit(limit);
        self.schedule_recovery(id);
        if let Some(template) = template {
            if let Role::Template { instances, .. } = &mut self.limit_mut(template).role {
                instances.insert(id);
            }
            // Idle ones (it may have been stored just before it was dropped)
            // go on the first step.
            self.maybe_idle(&[id]);
        }
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
        for &limit_id in &limits {
            self.occupy(limit_id, |limit| {
                limit.held = limit.held.saturating_add(record.occupy);
                limit.leases.insert(id);
            });
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

    /// A limit's record, naming its template if it is an instance.
    fn record_of(&self, id: LimitId) -> LimitRecord {
        let limit = &self.limits[&id];
        LimitRecord {
            instance_of: limit
                .template_of()
                .map(|template| self.limits[&template].name.to_string()),
            ..limit.record()
        }
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
