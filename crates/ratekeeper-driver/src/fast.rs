//! The lock-free paths of a [`LimitHandle`](crate::LimitHandle): slots of a
//! concurrency limit taken and given back, and admissions by a rate limit,
//! each with one atomic operation, without the engine's lock, while nobody
//! waits on the limit.
//!
//! How the concurrency path stays exact:
//! - While the path is **open**, the engine holds a
//!   [`Reservation`] of `budget` slots for it (every slot that was free when
//!   it opened), so the engine sees them as held and decides nothing else
//!   with them. The handle's word counts the slots `in_use` out of the
//!   budget; a take that would exceed it fails over to the engine.
//! - Anything else about the limit (a request that is not a handle's fast
//!   take, a change, a pause, a reset, a read that needs the engine's own
//!   answer) first **closes** the path, under the engine's lock: one atomic
//!   operation sets the closed bit and reads `in_use` at that same instant,
//!   and the reservation gives back every slot not in use. From then on the
//!   engine's count is exact again: the reservation holds exactly the slots
//!   taken on the fast path, and each one given back while closed is given
//!   back to the engine (under its lock), which lets waiters in as any
//!   release does.
//! - A closed path **reopens** only from the engine's side, under its lock,
//!   after a request on the limit was granted at once: nobody is queued
//!   then, so the fast path never passes anyone in line (FIFO holds).
//!
//! A reset or a delete makes the engine forget what was held, as it forgets
//! permits; slots taken on the fast path before it still count against the
//! fast path's budget here until given back (the fast path admits fewer
//! meanwhile, never more than the engine would).
//!
//! The rate path works the same way with the limit's drain instant instead
//! of slots: while it is open the engine has handed out its
//! [`Pacing`] (the instant, and what one admission does to it) and keeps
//! the instant as it was; an admission is one compare-and-swap of the
//! instant by the engine's own rule, at an instant read from the
//! limiter's clock. Closing sets the closed bit and reads the instant in
//! the same atomic operation, and gives it back to the engine
//! ([`Engine::settle_pacing`]), which is exact again from then on. It
//! opens, like the other, only after a request was granted at once.
//!
//! The rate path's word also carries a tally, one more at every opening
//! and every admission (and admissions per opening are bounded, so that it
//! counts them). It counts the admissions without another atomic
//! operation, and it guards what an admission reads beside the word (set
//! by the opening: where the instant is counted from, the rule's two
//! spans): an admission that read them and then finds its word unchanged
//! in its compare-and-swap knows they are the ones of its word's opening.
//! (An admission stalled for 2^19 openings and admissions that then finds
//! the same tally and the same instant, to the nanosecond, could use stale
//! ones.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use ratekeeper_core::{Engine, LimitView, Pacing, Reservation, Timestamp};

use crate::{Clock, Driver};

/// The word's closed bit.
const CLOSED: u64 = 1 << 63;
/// Where the budget starts in the word, and its largest value.
const BUDGET_SHIFT: u32 = 32;
const BUDGET_MAX: u64 = (1 << 31) - 1;
/// The slots in use: the word's low half.
const IN_USE: u64 = (1 << 32) - 1;

/// The rate path's word: `closed (1 bit) | tally (19 bits) | instant (44
/// bits)`, the instant in nanoseconds after the opening's `base` (up to
/// about 4.9 hours). An admission that would move the instant further, or
/// be the 2^19 - 1st of its opening, fails over to the engine, and the
/// path reopens from a new base.
const OFFSET: u64 = (1 << 44) - 1;
const TALLY_SHIFT: u32 = 44;
const TALLY: u64 = (1 << 19) - 1;

/// One limit's fast path.
#[derive(Debug)]
pub(crate) struct FastSlot {
    /// The limit's name.
    pub(crate) name: Arc<str>,
    /// `closed (1 bit) | budget (31 bits) | in_use (32 bits)`.
    word: AtomicU64,
    /// Grants made here, and their slots beyond the first of each: the
    /// engine never counts them, so views add them.
    granted: AtomicU64,
    extra_slots: AtomicU64,
    /// The rate path.
    pace: Pace,
    /// The paths it is one of, for giving slots back while it is closed
    /// (a guard holds only its slot).
    paths: Weak<FastPaths>,
}

/// A rate limit's lock-free path (see the module).
#[derive(Debug)]
struct Pace {
    /// `closed | tally | instant after base`.
    word: AtomicU64,
    /// Set by an opening, before its word: the instant the word's counts
    /// from (in nanoseconds since the epoch), the pacing's two spans, and
    /// the tally it opened with.
    base: AtomicU64,
    slack: AtomicU64,
    drain: AtomicU64,
    opened: AtomicU64,
}

impl Pace {
    /// The drain instant a word of the current opening stands for.
    fn drained_at(&self, word: u64) -> Timestamp {
        Timestamp::from_unix_nanos(self.base.load(Ordering::Relaxed) + (word & OFFSET))
    }

    /// The admissions a word of the current opening counts.
    fn admitted(&self, word: u64) -> u64 {
        tally(word).wrapping_sub(self.opened.load(Ordering::Relaxed)) & TALLY
    }
}

fn tally(word: u64) -> u64 {
    (word >> TALLY_SHIFT) & TALLY
}

impl FastSlot {
    fn new(name: Arc<str>, paths: Weak<FastPaths>) -> Self {
        FastSlot {
            name,
            paths,
            word: AtomicU64::new(CLOSED),
            granted: AtomicU64::new(0),
            extra_slots: AtomicU64::new(0),
            pace: Pace {
                word: AtomicU64::new(CLOSED),
                base: AtomicU64::new(0),
                slack: AtomicU64::new(0),
                drain: AtomicU64::new(0),
                opened: AtomicU64::new(0),
            },
        }
    }

    /// Admits one slot of a rate limit at the instant read from `clock`,
    /// if the rate path is open and the slot fits by the engine's rule;
    /// answers that instant.
    #[inline]
    pub(crate) fn try_admit(&self, clock: &Clock) -> Option<Timestamp> {
        let pace = &self.pace;
        let mut word = pace.word.load(Ordering::Acquire);
        if word & CLOSED != 0 {
            return None;
        }
        let at = clock.now();
        let now = at.as_unix_nanos();
        // After a failed swap the word may be a later opening's, whose base
        // is after `now`: the rule at an earlier instant is only stricter,
        // and every window of admissions stays within the rate by the
        // instants they were decided at (the ones answered).
        loop {
            if word & CLOSED != 0 {
                return None;
            }
            let base = pace.base.load(Ordering::Relaxed);
            let next = Pacing::admit_nanos(
                base + (word & OFFSET),
                now,
                pace.slack.load(Ordering::Relaxed),
                pace.drain.load(Ordering::Relaxed),
            )?;
            let offset = next - base;
            let tally = (tally(word) + 1) & TALLY;
            if offset > OFFSET || tally == pace.opened.load(Ordering::Relaxed) {
                return None;
            }
            // Release: what was read above happens before a closing that
            // reads this word, so it cannot be an opening's after that.
            match pace.word.compare_exchange_weak(
                word,
                (tally << TALLY_SHIFT) | offset,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(at),
                Err(now) => word = now,
            }
        }
    }

    /// Takes `slots` if the path is open and they fit its budget.
    #[inline]
    pub(crate) fn try_take(&self, slots: u64) -> bool {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let in_use = word & IN_USE;
            let budget = (word >> BUDGET_SHIFT) & BUDGET_MAX;
            if word & CLOSED != 0 || in_use + slots > budget {
                return false;
            }
            match self.word.compare_exchange_weak(
                word,
                word + slots,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => word = now,
            }
        }
        self.granted.fetch_add(1, Ordering::Relaxed);
        if slots > 1 {
            self.extra_slots.fetch_add(slots - 1, Ordering::Relaxed);
        }
        true
    }

    /// Gives back `slots` taken here: with one atomic operation while the
    /// path is open, else to the engine under its lock (nothing, if the
    /// limiter is gone).
    #[inline]
    pub(crate) fn give_back(&self, slots: u64) {
        if !self.try_give_back(slots) {
            self.give_back_to_engine(slots);
        }
    }

    #[cold]
    fn give_back_to_engine(&self, slots: u64) {
        if let Some(paths) = self.paths.upgrade() {
            paths
                .driver
                .apply(|engine, now| paths.give_back_closed(engine, now, self, slots));
        }
    }

    /// Gives back `slots` taken here if the path is open; false if it is
    /// closed, and they must be given back under the engine's lock.
    #[inline]
    pub(crate) fn try_give_back(&self, slots: u64) -> bool {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if word & CLOSED != 0 {
                return false;
            }
            match self.word.compare_exchange_weak(
                word,
                word - slots,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }
}

/// A limit's fast path and the reservation behind it.
struct Entry {
    slot: Arc<FastSlot>,
    /// While open: holds the budget. While closed: exactly the slots in use
    /// (none once given back), or `None`.
    reservation: Option<Reservation>,
    /// While the rate path is open: the pacing it was opened with.
    pacing: Option<Pacing>,
}

/// Every fast path of one limiter, by limit name: a handle's, or one a
/// request by name opened (for a limit that qualified). `entries` is locked
/// only while the engine's lock is held (or for making a new entry), in
/// that order; `index` is what a request by name looks its path up in,
/// without either lock.
pub(crate) struct FastPaths {
    entries: Mutex<HashMap<Arc<str>, Entry>>,
    index: RwLock<HashMap<Arc<str>, Arc<FastSlot>, foldhash::fast::RandomState>>,
    /// The limiter's driver, for slots given back while a path is closed.
    driver: Driver,
    /// These paths, for their slots to reach them.
    this: Weak<FastPaths>,
}

impl FastPaths {
    /// The paths of a limiter on `driver`, none made yet.
    pub(crate) fn new(driver: Driver) -> Arc<Self> {
        Arc::new_cyclic(|this| FastPaths {
            entries: Mutex::default(),
            index: RwLock::default(),
            driver,
            this: Weak::clone(this),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fast path of `name`, made (closed) if it has none.
    pub(crate) fn slot(&self, name: &str) -> Arc<FastSlot> {
        let mut entries = self.lock();
        Arc::clone(&self.entry(&mut entries, name).slot)
    }

    /// The fast path of `name`, if it has one: without any lock but the
    /// index's (shared) one.
    #[inline]
    pub(crate) fn find(&self, name: &str) -> Option<Arc<FastSlot>> {
        self.with(name, Arc::clone)
    }

    /// `f` of the fast path of `name`, if it has one, looked up as
    /// [`find`](Self::find) does but without taking a reference to it.
    #[inline]
    pub(crate) fn with<R>(&self, name: &str, f: impl FnOnce(&Arc<FastSlot>) -> R) -> Option<R> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index.get(name).map(f)
    }

    fn entry<'e>(&self, entries: &'e mut HashMap<Arc<str>, Entry>, name: &str) -> &'e mut Entry {
        if !entries.contains_key(name) {
            let key: Arc<str> = name.into();
            let slot = Arc::new(FastSlot::new(Arc::clone(&key), Weak::clone(&self.this)));
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            index.insert(Arc::clone(&key), Arc::clone(&slot));
            let (reservation, pacing) = (None, None);
            entries.insert(
                key,
                Entry {
                    slot,
                    reservation,
                    pacing,
                },
            );
        }
        entries.get_mut(name).expect("just made")
    }

    /// Closes the fast paths of `names` (see the module). Under the engine's
    /// lock.
    pub(crate) fn close(&self, engine: &mut Engine, now: Timestamp, names: &[&str]) {
        let mut entries = self.lock();
        for name in names {
            if let Some(entry) = entries.get_mut(*name) {
                close(entry, engine, now);
            }
        }
    }

    /// Forgets what the fast path of `name` counted (its limit is gone).
    /// Under the engine's lock, after closing it.
    pub(crate) fn forget_counts(&self, name: &str) {
        if let Some(entry) = self.lock().get(name) {
            entry.slot.granted.store(0, Ordering::Relaxed);
            entry.slot.extra_slots.store(0, Ordering::Relaxed);
        }
    }

    /// Opens the fast path of `name`: after a request on it was granted at
    /// once, so nobody waits. A concurrency limit's holds every slot free
    /// now, a rate limit's its pacing. A limit without one gets one if it
    /// qualifies (see `Engine::reserve` and `Engine::pace`): only plain
    /// limits, so never one per key of a template. Under the engine's
    /// lock.
    pub(crate) fn open(&self, engine: &mut Engine, now: Timestamp, name: &str) {
        let mut entries = self.lock();
        if !entries.contains_key(name) {
            if let Some(reservation) = engine.reserve(now, name) {
                self.entry(&mut entries, name).reservation = Some(reservation);
            } else if let Some(pacing) = engine.pace(now, name) {
                open_pace(self.entry(&mut entries, name), pacing, now);
                return;
            } else {
                return;
            }
        }
        let entry = entries.get_mut(name).expect("made above");
        open(entry, engine, now, name);
        if entry.slot.pace.word.load(Ordering::Relaxed) & CLOSED != 0
            && let Some(pacing) = engine.pace(now, name)
        {
            open_pace(entry, pacing, now);
        }
    }

    /// Gives back `slots` taken on a path found closed. Under the engine's
    /// lock, where the path cannot open or close meanwhile.
    pub(crate) fn give_back_closed(
        &self,
        engine: &mut Engine,
        now: Timestamp,
        slot: &FastSlot,
        slots: u64,
    ) {
        let name = &*slot.name;
        if slot.try_give_back(slots) {
            return; // reopened since
        }
        slot.word.fetch_sub(slots, Ordering::Release);
        let mut entries = self.lock();
        if let Some(reservation) = entries
            .get_mut(name)
            .and_then(|entry| entry.reservation.as_mut())
        {
            engine.shrink_reservation(now, reservation, slots);
        }
    }

    /// `view` as the limiter's callers see it at `now`: the slots in use on
    /// the fast path instead of its whole reservation, the decaying slots
    /// by its drain instant, and its grants counted.
    pub(crate) fn fold(&self, view: &mut LimitView, now: Timestamp) {
        let entries = self.lock();
        let Some(entry) = entries.get(view.name.as_str()) else {
            return;
        };
        if let Some(pacing) = &entry.pacing {
            let word = entry.slot.pace.word.load(Ordering::Acquire);
            if word & CLOSED == 0 {
                view.decaying = pacing.decaying(entry.slot.pace.drained_at(word), now);
                let admitted = entry.slot.pace.admitted(word);
                view.counters.granted_total += admitted;
                view.counters.granted_slots_total += admitted;
            }
        }
        let word = entry.slot.word.load(Ordering::Acquire);
        if let Some(reservation) = &entry.reservation {
            // A reservation from before a reset is no longer in the engine's
            // count; what it covered still counts here (see the module).
            view.held = view.held.saturating_sub(reservation.slots()) + (word & IN_USE);
        }
        let granted = entry.slot.granted.load(Ordering::Relaxed);
        let extra = entry.slot.extra_slots.load(Ordering::Relaxed);
        view.counters.granted_total += granted;
        view.counters.granted_slots_total += granted + extra;
    }
}

fn close(entry: &mut Entry, engine: &mut Engine, now: Timestamp) {
    let pace = &entry.slot.pace;
    let before = pace.word.fetch_or(CLOSED, Ordering::AcqRel);
    if let Some(pacing) = entry.pacing.take()
        && before & CLOSED == 0
    {
        let admitted = pace.admitted(before);
        engine.settle_pacing(now, &pacing, pace.drained_at(before), admitted);
    }
    let before = entry.slot.word.fetch_or(CLOSED, Ordering::AcqRel);
    if before & CLOSED != 0 {
        return;
    }
    if let Some(reservation) = &mut entry.reservation {
        let unused = reservation.slots().saturating_sub(before & IN_USE);
        engine.shrink_reservation(now, reservation, unused);
    }
}

fn open(entry: &mut Entry, engine: &mut Engine, now: Timestamp, name: &str) {
    let word = entry.slot.word.load(Ordering::Acquire);
    if word & CLOSED == 0 {
        return;
    }
    let in_use = word & IN_USE;
    // A reservation from before a reset or a delete holds nothing in the
    // engine: a fresh one takes its place, if the limit qualifies.
    if let Some(mut stale) = entry
        .reservation
        .take_if(|reservation| !engine.reservation_holds(reservation))
    {
        let slots = stale.slots();
        engine.shrink_reservation(now, &mut stale, slots);
    }
    match &mut entry.reservation {
        Some(reservation) => {
            engine.top_up(now, reservation);
        }
        None => entry.reservation = engine.reserve(now, name),
    }
    let Some(reservation) = &mut entry.reservation else {
        return;
    };
    let budget = reservation.slots();
    if budget <= in_use || budget > BUDGET_MAX {
        // Stays closed, holding exactly what is in use.
        let unused = budget.saturating_sub(in_use);
        engine.shrink_reservation(now, reservation, unused);
        return;
    }
    entry
        .slot
        .word
        .store((budget << BUDGET_SHIFT) | in_use, Ordering::Release);
}

/// Opens the rate path with `pacing`, from `now` as its base; it stays
/// closed if the limit drains further ahead than the word can count.
fn open_pace(entry: &mut Entry, pacing: Pacing, now: Timestamp) {
    let pace = &entry.slot.pace;
    let word = pace.word.load(Ordering::Relaxed);
    let base = now.as_unix_nanos();
    // An instant before the base stands for the base: at or before now,
    // either admits and moves to `now + drain`.
    let offset = pacing.drained_at.as_unix_nanos().saturating_sub(base);
    if word & CLOSED == 0 || offset > OFFSET {
        return;
    }
    pace.base.store(base, Ordering::Relaxed);
    pace.slack.store(pacing.slack_nanos, Ordering::Relaxed);
    pace.drain.store(pacing.drain_nanos, Ordering::Relaxed);
    let tally = (tally(word) + 1) & TALLY;
    pace.opened.store(tally, Ordering::Relaxed);
    pace.word
        .store((tally << TALLY_SHIFT) | offset, Ordering::Release);
    entry.pacing = Some(pacing);
}
