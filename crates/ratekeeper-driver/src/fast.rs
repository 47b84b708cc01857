//! The lock-free path of a [`LimitHandle`](crate::LimitHandle): slots of a
//! concurrency limit taken and given back with one atomic operation, without
//! the engine's lock, while nobody waits on the limit.
//!
//! How it stays exact:
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use ratekeeper_core::{Engine, LimitView, Reservation, Timestamp};

/// The word's closed bit.
const CLOSED: u64 = 1 << 63;
/// Where the budget starts in the word, and its largest value.
const BUDGET_SHIFT: u32 = 32;
const BUDGET_MAX: u64 = (1 << 31) - 1;
/// The slots in use: the word's low half.
const IN_USE: u64 = (1 << 32) - 1;

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
}

impl FastSlot {
    fn new(name: Arc<str>) -> Self {
        FastSlot {
            name,
            word: AtomicU64::new(CLOSED),
            granted: AtomicU64::new(0),
            extra_slots: AtomicU64::new(0),
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
}

/// Every fast path of one limiter, by limit name: a handle's, or one a
/// request by name opened (for a limit that qualified). `entries` is locked
/// only while the engine's lock is held (or for making a new entry), in
/// that order; `index` is what a request by name looks its path up in,
/// without either lock.
#[derive(Default)]
pub(crate) struct FastPaths {
    entries: Mutex<HashMap<Arc<str>, Entry>>,
    index: RwLock<HashMap<Arc<str>, Arc<FastSlot>>>,
}

impl FastPaths {
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
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index.get(name).cloned()
    }

    fn entry<'e>(&self, entries: &'e mut HashMap<Arc<str>, Entry>, name: &str) -> &'e mut Entry {
        if !entries.contains_key(name) {
            let key: Arc<str> = name.into();
            let slot = Arc::new(FastSlot::new(Arc::clone(&key)));
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            index.insert(Arc::clone(&key), Arc::clone(&slot));
            let reservation = None;
            entries.insert(key, Entry { slot, reservation });
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

    /// Opens the fast path of `name` with every slot free now: after a
    /// request on it was granted at once, so nobody waits. A limit without
    /// one gets one if it qualifies (see `Engine::reserve`): only plain
    /// concurrency limits, so never one per key of a template. Under the
    /// engine's lock.
    pub(crate) fn open(&self, engine: &mut Engine, now: Timestamp, name: &str) {
        let mut entries = self.lock();
        if !entries.contains_key(name) {
            let Some(reservation) = engine.reserve(now, name) else {
                return;
            };
            self.entry(&mut entries, name).reservation = Some(reservation);
        }
        let entry = entries.get_mut(name).expect("made above");
        open(entry, engine, now, name);
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

    /// `view` as the limiter's callers see it: the slots in use on the fast
    /// path instead of its whole reservation, and its grants counted.
    pub(crate) fn fold(&self, view: &mut LimitView) {
        let entries = self.lock();
        let Some(entry) = entries.get(view.name.as_str()) else {
            return;
        };
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
