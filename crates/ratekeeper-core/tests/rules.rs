//! One test per rule of DESIGN §1, each named after its rule, all with
//! explicit time.

mod common;

use std::time::Duration;

use common::{Sim, TTL};
use ratekeeper_core::{
    AcquireError, AcquireRequest, Admission, Claim, Held, LeaseError, LimitError, LimitPatch,
    LimitSpec, NameError, PauseSpec, Timestamp,
};

fn patch() -> LimitPatch {
    LimitPatch::default()
}

// ----- limit definitions -------------------------------------------------

#[test]
fn a_name_with_a_bad_character_is_rejected_naming_the_character() {
    let mut sim = Sim::new();
    for bad in ["a/b", "a%b", "a&b", "a>b", "a<b", "a b", ""] {
        let err = sim
            .engine
            .create_limit(sim.now, &LimitSpec::concurrency(bad, 1))
            .unwrap_err();
        assert_eq!(err.code(), "invalid_name", "{bad:?}");
        if let Some(ch) = bad.chars().find(|c| !c.is_ascii_alphanumeric()) {
            assert!(err.to_string().contains(&format!("{ch:?}")), "{err}");
        }
    }
    let err = sim
        .engine
        .create_limit(sim.now, &LimitSpec::concurrency("x".repeat(129), 1))
        .unwrap_err();
    assert_eq!(
        err,
        LimitError::InvalidName(NameError::TooLong { len: 129 })
    );
    assert!(sim.engine.limits().is_empty(), "nothing was created");
}

#[test]
fn slots_decay_and_description_out_of_range_are_rejected() {
    let mut sim = Sim::new();
    let cases = [
        (
            LimitSpec::concurrency("a", ratekeeper_core::MAX_SLOTS + 1),
            "invalid_slots",
        ),
        (LimitSpec::rate("a", -1.0, 1), "invalid_decay"),
        (LimitSpec::rate("a", f64::NAN, 1), "invalid_decay"),
        (LimitSpec::rate("a", f64::INFINITY, 1), "invalid_decay"),
        (LimitSpec::rate("a", 2e9, 1), "invalid_decay"),
        (
            LimitSpec {
                description: Some("d".repeat(1025)),
                ..LimitSpec::concurrency("a", 1)
            },
            "invalid_description",
        ),
    ];
    for (spec, code) in cases {
        let err = sim.engine.create_limit(sim.now, &spec).unwrap_err();
        assert_eq!(err.code(), code, "{spec:?}");
    }
    assert!(sim.engine.limits().is_empty());
}

#[test]
fn creating_a_limit_twice_fails_and_keeps_the_first() {
    let mut sim = Sim::new();
    sim.concurrency("db", 3);
    let err = sim
        .engine
        .create_limit(sim.now, &LimitSpec::concurrency("db", 9))
        .unwrap_err();
    assert_eq!(err.code(), "limit_exists");
    assert_eq!(sim.view("db").slots, 3);
}

#[test]
fn an_invalid_update_changes_nothing() {
    let mut sim = Sim::new();
    sim.rate("api", 10.0, 5);
    let before = sim.view("api");
    let bad = LimitPatch {
        slots: Some(4),
        slot_decay_per_second: Some(f64::NAN),
        ..patch()
    };
    let err = sim.engine.update_limit(sim.now, "api", &bad).unwrap_err();
    assert_eq!(err.code(), "invalid_decay");
    assert_eq!(sim.view("api"), before);
}

#[test]
fn limits_are_listed_by_name() {
    let mut sim = Sim::new();
    for name in ["b", "c", "a"] {
        sim.concurrency(name, 1);
    }
    let names: Vec<String> = sim.engine.limits().into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

// ----- capacity ----------------------------------------------------------

#[test]
fn capacity_counts_held_plus_decaying_plus_occupy() {
    let mut sim = Sim::new();
    sim.rate("mixed", 1.0, 4);
    sim.lease(&["mixed"], 2);
    assert!(sim.try_rate(&["mixed"], 1));
    // held 2 + decaying 1 + occupy 2 > 4
    let err = sim
        .acquire(&["mixed"], 2, Sim::lease_claim(), Some(Duration::ZERO))
        .unwrap_err();
    assert_eq!(err, AcquireError::WouldBlock);
    // held 2 + decaying 1 + occupy 1 == 4
    sim.lease(&["mixed"], 1);
    assert_eq!(sim.held("mixed"), 3);
}

#[test]
fn zero_slots_closes_the_limit_and_every_acquire_waits() {
    let mut sim = Sim::new();
    sim.concurrency("gate", 0);
    let waiter = sim.queue(&["gate"], 1);
    assert_eq!(sim.view("gate").waiting, 1);
    sim.engine
        .update_limit(
            sim.now,
            "gate",
            &LimitPatch {
                slots: Some(1),
                ..patch()
            },
        )
        .unwrap();
    assert_eq!(sim.granted(), [waiter]);
}

#[test]
fn a_concurrency_grant_is_a_lease_holding_occupy_slots_on_every_named_limit() {
    let mut sim = Sim::new();
    sim.concurrency("a", 5);
    sim.concurrency("b", 5);
    let lease = sim.lease(&["a", "b"], 3);
    assert_eq!((sim.held("a"), sim.held("b")), (3, 3));
    let view = sim.engine.lease(lease).unwrap();
    assert_eq!(view.limits, ["a", "b"]);
    assert_eq!(view.occupy, 3);
    assert_eq!(view.holder.as_deref(), Some("test"));
    assert_eq!(view.expires_at, sim.now.saturating_add(TTL));
    sim.release(lease);
    assert_eq!((sim.held("a"), sim.held("b")), (0, 0));
}

#[test]
fn rate_mode_occupies_decaying_slots_that_free_themselves() {
    let mut sim = Sim::new();
    sim.rate("api", 2.0, 2);
    assert!(sim.try_rate(&["api"], 2));
    let view = sim.view("api");
    assert_eq!((view.held, view.decaying), (0, 2.0));
    sim.advance_ms(250);
    assert_eq!(sim.view("api").decaying, 1.5);
    assert!(!sim.try_rate(&["api"], 1), "1.5 + 1 > 2");
    sim.advance_ms(250);
    assert!(sim.try_rate(&["api"], 1), "1.0 + 1 <= 2");
    sim.advance_ms(10_000);
    assert_eq!(sim.view("api").decaying, 0.0);
}

#[test]
fn rate_mode_on_an_active_limit_without_decay_is_rejected_not_queued() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    let err = sim.acquire(&["db"], 1, Claim::Rate, None).unwrap_err();
    assert_eq!(err.code(), "rate_mode_needs_decay");
    assert_eq!(sim.view("db").waiting, 0);
}

#[test]
fn fractional_decay_is_kept_across_many_small_grants() {
    // 3 per second: each slot takes a third of a second to decay, which no
    // whole number of nanoseconds is. Over 3 000 grants at the exact wake-up
    // instants, rounding must not drift by even one grant.
    let mut sim = Sim::new();
    sim.rate("thirds", 3.0, 1);
    let start = sim.now;
    let mut admitted = 0;
    while sim.now.saturating_duration_since(start) < Duration::from_secs(1_000) {
        if sim.try_rate(&["thirds"], 1) {
            admitted += 1;
        } else {
            sim.queue_with(&["thirds"], 1, Claim::Rate, None);
            sim.advance_to_wakeup();
            assert_eq!(sim.granted().len(), 1);
            admitted += 1;
        }
    }
    assert!((3000..=3001).contains(&admitted), "admitted {admitted}");
}

// ----- all-or-nothing and fairness ----------------------------------------

#[test]
fn a_multi_name_acquire_is_all_or_nothing() {
    let mut sim = Sim::new();
    sim.concurrency("a", 1);
    sim.concurrency("b", 1);
    let b_holder = sim.lease(&["b"], 1);
    sim.queue(&["a", "b"], 1);
    // It waits for b without holding a: a is free for nobody else only
    // because of FIFO, but its slot is not occupied.
    assert_eq!((sim.held("a"), sim.held("b")), (0, 1));
    sim.release(b_holder);
    sim.granted_lease();
    assert_eq!((sim.held("a"), sim.held("b")), (1, 1));
}

#[test]
fn waiters_are_served_first_come_first_served() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    let holder = sim.lease(&["db"], 1);
    let order: Vec<_> = (0..5).map(|_| sim.queue(&["db"], 1)).collect();
    let positions: Vec<_> = sim
        .engine
        .waiters_on("db")
        .unwrap()
        .into_iter()
        .map(|w| w.request)
        .collect();
    assert_eq!(positions, order);
    let mut lease = holder;
    for expected in order {
        sim.release(lease);
        let granted = sim.wakes();
        assert_eq!(granted.len(), 1);
        assert_eq!(granted[0].0, expected);
        let Ok(Held::Lease(next)) = &granted[0].1 else {
            panic!("{granted:?}")
        };
        lease = next.id;
    }
}

#[test]
fn a_heavy_request_is_not_starved_by_a_stream_of_light_ones() {
    let mut sim = Sim::new();
    sim.concurrency("db", 4);
    let mut light: Vec<_> = (0..3).map(|_| sim.lease(&["db"], 1)).collect();
    let heavy = sim.queue(&["db"], 4);
    // Light requests keep arriving; each must queue behind the heavy one
    // even though a slot is free.
    for _ in 0..3 {
        sim.queue(&["db"], 1);
    }
    assert_eq!(sim.held("db"), 3);
    for lease in light.drain(..) {
        sim.release(lease);
    }
    let first = sim.wakes();
    assert_eq!(first[0].0, heavy, "the heavy request goes first");
    assert_eq!(first.len(), 1, "nothing fits beside it");
    assert_eq!(sim.held("db"), 4);
}

#[test]
fn one_global_order_keeps_multi_name_requests_from_deadlocking() {
    let mut sim = Sim::new();
    sim.concurrency("a", 1);
    sim.concurrency("b", 1);
    let a = sim.lease(&["a"], 1);
    let b = sim.lease(&["b"], 1);
    // Opposite name orders: with per-limit locking these would deadlock.
    let ab = sim.queue(&["a", "b"], 1);
    let ba = sim.queue(&["b", "a"], 1);
    sim.release(a);
    assert!(sim.wakes().is_empty(), "ab must still wait for b");
    assert_eq!(sim.held("a"), 0, "and does not hold a meanwhile");
    sim.release(b);
    let first = sim.granted_lease();
    assert_eq!(sim.engine.lease(first).unwrap().limits, ["a", "b"]);
    sim.release(first);
    assert_eq!(sim.granted(), [ba]);
    let _ = ab;
}

#[test]
fn a_request_behind_an_earlier_waiter_waits_even_if_it_fits() {
    let mut sim = Sim::new();
    sim.concurrency("a", 2);
    sim.concurrency("b", 1);
    let b_holder = sim.lease(&["b"], 1);
    sim.queue(&["a", "b"], 1);
    // One slot of a is free, but the earlier waiter on a comes first.
    let later = sim.queue(&["a"], 1);
    sim.release(b_holder);
    let granted = sim.granted();
    assert_eq!(granted.len(), 2);
    assert_eq!(granted[1], later, "granted right after the earlier one");
}

// ----- pushed waking -------------------------------------------------------

#[test]
fn a_release_grants_the_next_waiter_in_the_same_step() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    let lease = sim.lease(&["db"], 1);
    let waiter = sim.queue(&["db"], 1);
    assert!(sim.engine.take_wakes().is_empty());
    sim.release(lease);
    assert_eq!(sim.granted(), [waiter]);
}

#[test]
fn a_release_wakes_only_waiters_that_now_fit() {
    let mut sim = Sim::new();
    sim.concurrency("db", 3);
    let small = sim.lease(&["db"], 1);
    let _big = sim.lease(&["db"], 2);
    let needs_two = sim.queue(&["db"], 2);
    sim.queue(&["db"], 1);
    sim.release(small);
    assert!(
        sim.wakes().is_empty(),
        "one free slot fits nobody at the head"
    );
    assert_eq!(sim.view("db").waiting, 2);
    let _ = needs_two;
}

#[test]
fn decay_wakes_a_waiter_at_the_exact_instant_it_fits() {
    let mut sim = Sim::new();
    sim.rate("api", 4.0, 1);
    assert!(sim.try_rate(&["api"], 1));
    let start = sim.now;
    let waiter = sim.queue_with(&["api"], 1, Claim::Rate, None);
    let due = sim.engine.next_wakeup().unwrap();
    assert_eq!(
        due.saturating_duration_since(start),
        Duration::from_millis(250)
    );
    // One nanosecond early: nothing.
    sim.engine
        .advance(Timestamp::from_unix_nanos(due.as_unix_nanos() - 1));
    assert!(sim.engine.take_wakes().is_empty());
    sim.advance_to_wakeup();
    assert_eq!(sim.granted(), [waiter]);
}

#[test]
fn the_engine_asks_to_be_called_back_only_when_something_is_due() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    assert_eq!(sim.engine.next_wakeup(), None);
    let lease = sim.lease(&["db"], 1);
    assert_eq!(sim.engine.next_wakeup(), Some(sim.now.saturating_add(TTL)));
    sim.release(lease);
    assert_eq!(sim.engine.next_wakeup(), None);
}

// ----- leases --------------------------------------------------------------

#[test]
fn lease_ttl_must_be_between_one_second_and_one_day() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    for ttl in [Duration::from_millis(999), Duration::from_secs(86_401)] {
        let claim = Claim::Lease { ttl, holder: None };
        let err = sim.acquire(&["db"], 1, claim, None).unwrap_err();
        assert_eq!(err.code(), "invalid_lease_ttl");
    }
    let lease = sim.lease(&["db"], 1);
    let err = sim
        .engine
        .renew(sim.now, lease, Some(Duration::from_millis(10)))
        .unwrap_err();
    assert_eq!(err.code(), "invalid_lease_ttl");
    assert_eq!(sim.held("db"), 1);
}

#[test]
fn lease_ids_are_unguessable_128_bit_values() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1000);
    let ids: std::collections::HashSet<_> = (0..1000).map(|_| sim.lease(&["db"], 1)).collect();
    assert_eq!(ids.len(), 1000);
    let ones: u32 = ids
        .iter()
        .map(|id| u128::from_le_bytes(id.to_bytes()).count_ones())
        .sum();
    let mean = f64::from(ones) / 1000.0;
    assert!((60.0..68.0).contains(&mean), "bits look random: {mean}");
}

#[test]
fn renewing_a_lease_extends_its_expiry() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    let lease = sim.lease(&["db"], 1);
    sim.advance_ms(20_000);
    let renewed = sim.engine.renew(sim.now, lease, None).unwrap();
    assert_eq!(renewed.expires_at, sim.now.saturating_add(TTL));
    sim.advance_ms(20_000); // 40 s after the grant, 20 s after the renewal
    assert_eq!(sim.held("db"), 1);
    let longer = sim
        .engine
        .renew(sim.now, lease, Some(Duration::from_secs(120)))
        .unwrap();
    assert_eq!(
        longer.expires_at,
        sim.now.saturating_add(Duration::from_secs(120))
    );
    assert_eq!(
        sim.engine.lease(lease).unwrap().ttl,
        Duration::from_secs(120)
    );
}

#[test]
fn an_expired_lease_frees_its_slots_like_a_release_and_is_counted() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    sim.lease(&["db"], 1);
    let waiter = sim.queue(&["db"], 1);
    sim.advance(TTL - Duration::from_nanos(1));
    assert!(sim.wakes().is_empty());
    sim.advance(Duration::from_nanos(1));
    assert_eq!(sim.granted(), [waiter]);
    assert_eq!(sim.view("db").counters.expired_total, 1);
}

#[test]
fn renewing_or_releasing_an_expired_or_unknown_lease_says_lease_expired() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    let lease = sim.lease(&["db"], 1);
    sim.advance(TTL);
    assert_eq!(
        sim.engine.renew(sim.now, lease, None),
        Err(LeaseError::Expired)
    );
    assert_eq!(sim.engine.release(sim.now, lease), Err(LeaseError::Expired));
    let other = sim.lease(&["db"], 1);
    sim.release(other);
    assert_eq!(sim.engine.release(sim.now, other), Err(LeaseError::Expired));
    assert_eq!(LeaseError::Expired.code(), "lease_expired");
}

// ----- inactive and missing limits -----------------------------------------

#[test]
fn an_inactive_limit_passes_requests_through_and_occupies_nothing() {
    let mut sim = Sim::new();
    sim.engine
        .create_limit(
            sim.now,
            &LimitSpec {
                active: false,
                ..LimitSpec::concurrency("off", 1)
            },
        )
        .unwrap();
    for _ in 0..3 {
        sim.lease(&["off"], 1);
    }
    // Even rate mode and oversized requests pass an inactive limit.
    assert!(sim.try_rate(&["off"], 5));
    let view = sim.view("off");
    assert_eq!(
        (view.held, view.decaying, view.counters.granted_total),
        (0, 0.0, 0)
    );
}

#[test]
fn activating_a_limit_makes_it_enforce_again() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    let off = LimitPatch {
        active: Some(false),
        ..patch()
    };
    let on = LimitPatch {
        active: Some(true),
        ..patch()
    };
    sim.engine.update_limit(sim.now, "db", &off).unwrap();
    sim.lease(&["db"], 1);
    sim.engine.update_limit(sim.now, "db", &on).unwrap();
    sim.lease(&["db"], 1);
    sim.queue(&["db"], 1);
    assert_eq!(sim.held("db"), 1);
}

#[test]
fn deactivating_a_limit_wakes_its_waiters_at_once() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    sim.concurrency("other", 5);
    sim.lease(&["db"], 1);
    let w1 = sim.queue(&["db"], 1);
    let w2 = sim.queue(&["db", "other"], 1);
    sim.engine
        .update_limit(
            sim.now,
            "db",
            &LimitPatch {
                active: Some(false),
                ..patch()
            },
        )
        .unwrap();
    let mut granted = sim.granted();
    granted.sort();
    assert_eq!(granted, [w1, w2]);
    assert_eq!(sim.held("other"), 1);
}

#[test]
fn a_missing_limit_fails_with_limit_not_found() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    let err = sim
        .acquire(&["db", "nope"], 1, Sim::lease_claim(), None)
        .unwrap_err();
    assert_eq!(
        err,
        AcquireError::LimitNotFound {
            name: "nope".into()
        }
    );
    assert_eq!(
        sim.held("db"),
        0,
        "nothing was taken on the limit that exists"
    );
    let err = sim
        .acquire(&["bad/name"], 1, Sim::lease_claim(), None)
        .unwrap_err();
    assert_eq!(err.code(), "invalid_name");
}

#[test]
fn create_if_missing_creates_the_limit_inactive_and_passes_through() {
    let mut sim = Sim::new();
    let request = AcquireRequest {
        create_if_missing: true,
        ..AcquireRequest::new(&["new"], Sim::lease_claim())
    };
    let answer = sim.engine.acquire(sim.now, &request).unwrap();
    assert!(matches!(answer, Admission::Granted(_)));
    let view = sim.view("new");
    assert!(!view.active);
    assert_eq!(view.held, 0);
    // A bad name is still refused, and creates nothing.
    let bad = AcquireRequest {
        create_if_missing: true,
        ..AcquireRequest::new(&["ok", "no way"], Sim::lease_claim())
    };
    assert_eq!(
        sim.engine.acquire(sim.now, &bad).unwrap_err().code(),
        "invalid_name"
    );
    assert!(sim.engine.limit("ok").is_err());
}

// ----- changing limits while in use ------------------------------------------

#[test]
fn raising_slots_wakes_waiters_at_once() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    sim.lease(&["db"], 1);
    let waiters: Vec<_> = (0..3).map(|_| sim.queue(&["db"], 1)).collect();
    sim.engine
        .update_limit(
            sim.now,
            "db",
            &LimitPatch {
                slots: Some(3),
                ..patch()
            },
        )
        .unwrap();
    assert_eq!(sim.granted(), waiters[..2]);
}

#[test]
fn lowering_slots_below_held_keeps_leases_and_new_grants_wait() {
    let mut sim = Sim::new();
    sim.concurrency("db", 3);
    let leases: Vec<_> = (0..3).map(|_| sim.lease(&["db"], 1)).collect();
    sim.engine
        .update_limit(
            sim.now,
            "db",
            &LimitPatch {
                slots: Some(1),
                ..patch()
            },
        )
        .unwrap();
    assert_eq!(sim.held("db"), 3);
    for lease in &leases {
        sim.engine.renew(sim.now, *lease, None).unwrap();
    }
    let waiter = sim.queue(&["db"], 1);
    sim.release(leases[0]);
    sim.release(leases[1]);
    assert!(sim.wakes().is_empty(), "held 1 of 1");
    sim.release(leases[2]);
    assert_eq!(sim.granted(), [waiter]);
}

#[test]
fn a_change_that_makes_a_waiter_impossible_fails_it_instead_of_blocking_the_queue() {
    let mut sim = Sim::new();
    sim.rate("api", 1.0, 5);
    sim.lease(&["api"], 5);
    let heavy = sim.queue(&["api"], 4);
    let rate = sim.queue_with(&["api"], 1, Claim::Rate, None);
    let light = sim.queue(&["api"], 1);
    sim.engine
        .update_limit(
            sim.now,
            "api",
            &LimitPatch {
                slots: Some(3),
                slot_decay_per_second: Some(0.0),
                ..patch()
            },
        )
        .unwrap();
    let wakes = sim.wakes();
    let failed: Vec<_> = wakes
        .iter()
        .map(|(id, outcome)| (*id, outcome.as_ref().unwrap_err().code()))
        .collect();
    assert_eq!(
        failed,
        [
            (heavy, "occupy_exceeds_slots"),
            (rate, "rate_mode_needs_decay")
        ]
    );
    let queued: Vec<_> = sim
        .engine
        .waiters_on("api")
        .unwrap()
        .iter()
        .map(|w| w.request)
        .collect();
    assert_eq!(queued, [light]);
}

#[test]
fn changing_the_decay_rate_keeps_the_decaying_level() {
    let mut sim = Sim::new();
    sim.rate("api", 1.0, 10);
    assert!(sim.try_rate(&["api"], 8));
    sim.engine
        .update_limit(
            sim.now,
            "api",
            &LimitPatch {
                slot_decay_per_second: Some(4.0),
                ..patch()
            },
        )
        .unwrap();
    assert_eq!(sim.view("api").decaying, 8.0);
    sim.advance_ms(1_000);
    assert_eq!(sim.view("api").decaying, 4.0);
}

#[test]
fn deleting_a_limit_fails_its_waiters_and_leases_become_no_ops_for_it() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    sim.concurrency("other", 2);
    let lease = sim.lease(&["db", "other"], 1);
    let waiter = sim.queue(&["db", "other"], 1);
    sim.engine.delete_limit(sim.now, "db").unwrap();
    let wakes = sim.wakes();
    assert_eq!(wakes.len(), 1);
    assert_eq!(wakes[0].0, waiter);
    assert_eq!(
        wakes[0].1,
        Err(AcquireError::LimitDeleted { name: "db".into() })
    );
    assert_eq!(sim.view("other").waiting, 0, "it left every queue");
    // The lease still holds `other`, and releasing it still works.
    assert_eq!(sim.engine.lease(lease).unwrap().limits, ["other"]);
    sim.engine.renew(sim.now, lease, None).unwrap();
    // A new limit of the same name is not touched by the old lease.
    sim.concurrency("db", 1);
    sim.lease(&["db"], 1);
    sim.release(lease);
    assert_eq!((sim.held("db"), sim.held("other")), (1, 0));
    assert_eq!(
        sim.engine.delete_limit(sim.now, "gone").unwrap_err().code(),
        "limit_not_found"
    );
}

#[test]
fn reset_revokes_every_lease_and_clears_decaying_slots() {
    let mut sim = Sim::new();
    sim.rate("api", 1.0, 5);
    sim.concurrency("other", 5);
    let lease = sim.lease(&["api", "other"], 2);
    assert!(sim.try_rate(&["api"], 3));
    let waiter = sim.queue(&["api"], 5);
    let view = sim.engine.reset_limit(sim.now, "api").unwrap();
    // Everything was cleared, so the waiter for all 5 slots got in at once.
    assert_eq!((view.held, view.decaying), (5, 0.0));
    assert_eq!(sim.held("other"), 0, "the whole lease is revoked");
    assert_eq!(sim.granted(), [waiter]);
    assert_eq!(
        sim.engine.renew(sim.now, lease, None),
        Err(LeaseError::Revoked)
    );
    assert_eq!(sim.engine.release(sim.now, lease), Err(LeaseError::Revoked));
    // After its TTL would have ended, the tombstone goes; it is simply gone.
    sim.advance(TTL);
    assert_eq!(
        sim.engine.renew(sim.now, lease, None),
        Err(LeaseError::Expired)
    );
}

// ----- requests that can never succeed ---------------------------------------

#[test]
fn requests_that_can_never_succeed_fail_at_once_and_change_nothing() {
    let mut sim = Sim::new();
    sim.concurrency("db", 2);
    let long_holder = "h".repeat(257);
    let cases: Vec<(&[&str], u64, Claim<'_>, &str)> = vec![
        (&["db"], 3, Sim::lease_claim(), "occupy_exceeds_slots"),
        (&["db"], 0, Sim::lease_claim(), "invalid_occupy"),
        (&["db"], 1, Claim::Rate, "rate_mode_needs_decay"),
        (&[], 1, Sim::lease_claim(), "invalid_names"),
        (&["db", "db"], 1, Sim::lease_claim(), "duplicate_name"),
        (
            &["db"],
            1,
            Claim::Lease {
                ttl: TTL,
                holder: Some(&long_holder),
            },
            "invalid_holder",
        ),
    ];
    for (names, occupy, claim, code) in cases {
        let err = sim.acquire(names, occupy, claim, None).unwrap_err();
        assert_eq!(err.code(), code, "{names:?} occupy {occupy}");
        assert!(!err.to_string().is_empty());
    }
    let view = sim.view("db");
    assert_eq!(
        (view.held, view.waiting, view.counters.denied_total),
        (0, 0, 0)
    );
}

// ----- timeouts and cancellation ------------------------------------------

#[test]
fn a_zero_timeout_tries_once_and_says_would_block() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    sim.lease(&["db"], 1);
    let err = sim
        .acquire(&["db"], 1, Sim::lease_claim(), Some(Duration::ZERO))
        .unwrap_err();
    assert_eq!(err, AcquireError::WouldBlock);
    let view = sim.view("db");
    assert_eq!((view.waiting, view.counters.denied_total), (0, 1));
}

#[test]
fn a_timeout_bounds_the_whole_wait_and_the_request_leaves_the_queue() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    let lease = sim.lease(&["db"], 1);
    let waiter = sim.queue_with(&["db"], 1, Sim::lease_claim(), Some(Duration::from_secs(2)));
    let behind = sim.queue(&["db"], 1);
    assert_eq!(
        sim.engine.next_wakeup(),
        Some(sim.now.saturating_add(Duration::from_secs(2)))
    );
    sim.advance_ms(2_000);
    assert_eq!(sim.wakes(), [(waiter, Err(AcquireError::TimedOut))]);
    assert_eq!(sim.view("db").counters.denied_total, 1);
    sim.release(lease);
    assert_eq!(sim.granted(), [behind], "the timed-out one holds nothing");
}

#[test]
fn a_cancelled_request_leaves_the_queue_and_holds_nothing() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    let lease = sim.lease(&["db"], 1);
    let cancelled = sim.queue(&["db"], 1);
    let behind = sim.queue(&["db"], 1);
    assert!(sim.engine.cancel(sim.now, cancelled));
    assert!(!sim.engine.cancel(sim.now, cancelled), "only once");
    sim.release(lease);
    assert_eq!(sim.granted(), [behind]);
}

#[test]
fn cancelling_the_head_lets_the_next_waiter_in() {
    let mut sim = Sim::new();
    sim.concurrency("db", 2);
    sim.lease(&["db"], 1);
    let heavy = sim.queue(&["db"], 2);
    let light = sim.queue(&["db"], 1);
    sim.engine.cancel(sim.now, heavy);
    assert_eq!(sim.granted(), [light]);
}

#[test]
fn capacity_is_granted_before_a_deadline_due_in_the_same_step() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    sim.lease(&["db"], 1); // expires at TTL
    let waiter = sim.queue_with(&["db"], 1, Sim::lease_claim(), Some(TTL));
    sim.advance(TTL);
    assert_eq!(sim.granted(), [waiter]);
}

// ----- permits ---------------------------------------------------------------

#[test]
fn permits_hold_slots_until_given_back() {
    let mut sim = Sim::new();
    sim.concurrency("db", 2);
    let permit = sim.permit(&["db"], 2);
    assert_eq!(permit.occupy(), 2);
    let waiter = sim.queue(&["db"], 1);
    assert_eq!(sim.engine.next_wakeup(), None, "a permit never expires");
    sim.engine.release_permit(sim.now, permit);
    assert_eq!(sim.granted(), [waiter]);
}

#[test]
fn a_permit_from_before_a_reset_frees_nothing_after_it() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    sim.concurrency("other", 1);
    let old = sim.permit(&["db", "other"], 1);
    sim.engine.reset_limit(sim.now, "db").unwrap();
    let new = sim.permit(&["db"], 1);
    sim.engine.release_permit(sim.now, old);
    assert_eq!(sim.held("db"), 1, "the new permit still holds db");
    assert_eq!(sim.held("other"), 0, "the old permit freed other");
    sim.engine.release_permit(sim.now, new);
    assert_eq!(sim.held("db"), 0);
}

// ----- counters and time ---------------------------------------------------

#[test]
fn counters_record_grants_waits_expiries_and_denials() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    sim.lease(&["db"], 1);
    sim.queue_with(&["db"], 1, Sim::lease_claim(), Some(Duration::from_secs(1)));
    sim.queue(&["db"], 1);
    let _ = sim.acquire(&["db"], 1, Sim::lease_claim(), Some(Duration::ZERO));
    sim.advance_ms(1_000); // one times out
    sim.advance(TTL); // the first lease expires, the queued one is granted
    let counters = sim.view("db").counters;
    assert_eq!(counters.granted_total, 2);
    assert_eq!(counters.granted_slots_total, 2);
    assert_eq!(counters.waited_total, 2);
    assert_eq!(counters.expired_total, 1);
    assert_eq!(counters.denied_total, 2);
}

#[test]
fn time_given_out_of_order_never_runs_backwards() {
    let mut sim = Sim::new();
    sim.rate("api", 1.0, 1);
    assert!(sim.try_rate(&["api"], 1));
    sim.advance_ms(1_000);
    let earlier = Timestamp::from_unix_nanos(sim.now.as_unix_nanos() - 500_000_000);
    // Given an earlier instant, the engine acts at the latest one it has seen.
    let answer = sim
        .engine
        .acquire(earlier, &AcquireRequest::new(&["api"], Claim::Rate))
        .unwrap();
    assert!(matches!(answer, Admission::Granted(_)));
    assert_eq!(sim.engine.now(), sim.now);
}

#[test]
fn waited_time_is_reported_with_the_grant() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    let lease = sim.lease(&["db"], 1);
    sim.queue(&["db"], 1);
    sim.advance_ms(1_500);
    sim.release(lease);
    let wake = sim.engine.take_wakes().pop().unwrap();
    assert_eq!(wake.outcome.unwrap().waited, Duration::from_millis(1_500));
}

// ----- clock steps across a restart --------------------------------------

/// The engine restored from `sim`'s records at `at`.
fn restored_at(sim: &Sim, at: Timestamp) -> ratekeeper_core::Engine {
    ratekeeper_core::Engine::restore([9; 32], sim.engine.records(), at).unwrap()
}

fn held_on(engine: &ratekeeper_core::Engine, name: &str) -> u64 {
    engine
        .limits()
        .iter()
        .find(|l| l.name == name)
        .unwrap()
        .held
}

#[test]
fn a_clock_stepped_forward_across_a_restart_does_not_take_a_live_holders_slots() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    sim.lease(&["db"], 1);
    // Restarted with the wall clock two hours ahead: the lease looks long
    // expired, but its holder may be alive and renewing.
    let stepped = sim.now.saturating_add(Duration::from_secs(7_200));
    let mut engine = restored_at(&sim, stepped);
    assert_eq!(held_on(&engine, "db"), 1);
    let request = AcquireRequest {
        timeout: Some(Duration::ZERO),
        ..AcquireRequest::new(&["db"], Sim::lease_claim())
    };
    assert_eq!(
        engine.acquire(stepped, &request),
        Err(AcquireError::WouldBlock)
    );
    // Not renewed, it lapses one TTL later.
    engine.advance(stepped.saturating_add(TTL));
    assert_eq!(held_on(&engine, "db"), 0);
}

#[test]
fn a_clock_stepped_back_across_a_restart_holds_a_dead_lease_at_most_one_ttl() {
    let mut sim = Sim::new();
    sim.concurrency("db", 1);
    sim.lease(&["db"], 1);
    let back = Timestamp::from_unix_millis(sim.now.as_unix_millis() - 3_600_000);
    let mut engine = restored_at(&sim, back);
    assert_eq!(held_on(&engine, "db"), 1);
    engine.advance(back.saturating_add(TTL));
    assert_eq!(
        held_on(&engine, "db"),
        0,
        "held for the hour the clock went back"
    );
}

#[test]
fn has_room_answers_what_a_try_would_and_takes_nothing() {
    let mut sim = Sim::new();
    // 3 a second, burst 1: every third of a second one more fits, to the
    // nanosecond; a check in floats would say yes a little early.
    sim.rate("api", 3.0, 1);
    for _ in 0..30 {
        let before = sim.view("api");
        let said = sim.engine.has_room("api", 1).unwrap();
        assert_eq!(sim.view("api"), before, "asking takes nothing");
        let granted = sim.try_rate(&["api"], 1);
        assert_eq!(said, granted, "at {:?}", sim.now);
        sim.advance(Duration::from_nanos(111_111_111));
    }
    sim.concurrency("db", 1);
    let lease = sim.lease(&["db"], 1);
    assert!(!sim.engine.has_room("db", 1).unwrap());
    let waiter = sim.queue(&["db"], 1);
    sim.release(lease);
    // Granted to the waiter: still no room for anyone else.
    assert_eq!(sim.granted(), [waiter]);
    assert!(!sim.engine.has_room("db", 1).unwrap());
    assert!(!sim.engine.has_room("db", 2).unwrap());
    assert!(sim.engine.has_room("nobody", 1).is_err());
}

// ----- pauses ----------------------------------------------------------------

fn pause(sim: &mut Sim, name: &str, seconds: f64, reason: &str) -> ratekeeper_core::LimitView {
    let spec = PauseSpec {
        reason: Some(reason.into()),
        reporter: Some("worker-7".into()),
        ..PauseSpec::for_seconds(seconds)
    };
    sim.engine.pause(sim.now, name, &spec).unwrap()
}

#[test]
fn a_paused_limit_grants_nothing_and_grants_its_queue_in_order_the_instant_the_pause_ends() {
    let mut sim = Sim::new();
    sim.concurrency("vendor", 3);
    let view = pause(&mut sim, "vendor", 30.0, "429 from vendor");
    let paused = view.paused.expect("paused");
    assert_eq!(
        paused.until,
        sim.now.saturating_add(Duration::from_secs(30))
    );
    assert_eq!(paused.reason.as_deref(), Some("429 from vendor"));
    assert_eq!(paused.reporter.as_deref(), Some("worker-7"));
    let try_once = sim.acquire(&["vendor"], 1, Sim::lease_claim(), Some(Duration::ZERO));
    assert_eq!(try_once.unwrap_err(), AcquireError::WouldBlock);
    let first = sim.queue(&["vendor"], 1);
    let second = sim.queue(&["vendor"], 1);
    assert!(!sim.engine.has_room("vendor", 1).unwrap());
    sim.advance_ms(29_999);
    assert!(sim.granted().is_empty(), "nothing before the pause ends");
    assert_eq!(
        sim.advance_to_wakeup(),
        Some(paused.until),
        "the engine wakes exactly when the pause ends"
    );
    assert_eq!(sim.granted(), [first, second]);
    assert_eq!(
        sim.view("vendor").paused,
        None,
        "an ended pause is not shown"
    );
}

#[test]
fn a_later_shorter_pause_does_not_shorten_a_pause_and_a_longer_one_extends_it() {
    let mut sim = Sim::new();
    sim.rate("api", 10.0, 10);
    let until = pause(&mut sim, "api", 30.0, "first").paused.unwrap().until;
    let kept = pause(&mut sim, "api", 5.0, "shorter").paused.unwrap();
    assert_eq!((kept.until, kept.reason.as_deref()), (until, Some("first")));
    sim.advance_ms(1_000);
    let longer = pause(&mut sim, "api", 60.0, "longer").paused.unwrap();
    assert_eq!(
        longer.until,
        sim.now.saturating_add(Duration::from_secs(60))
    );
    assert_eq!(longer.reason.as_deref(), Some("longer"));
}

#[test]
fn resuming_ends_a_pause_at_once_and_grants_the_head() {
    let mut sim = Sim::new();
    sim.concurrency("vendor", 1);
    pause(&mut sim, "vendor", 600.0, "maintenance");
    let waiter = sim.queue(&["vendor"], 1);
    let view = sim.engine.resume(sim.now, "vendor").unwrap();
    assert_eq!(view.paused, None);
    assert_eq!(sim.granted(), [waiter]);
}

#[test]
fn a_pause_on_one_limit_of_a_multi_limit_request_holds_the_whole_request() {
    let mut sim = Sim::new();
    sim.concurrency("tenant", 2);
    sim.concurrency("vendor", 2);
    pause(&mut sim, "vendor", 10.0, "429");
    let waiter = sim.queue(&["tenant", "vendor"], 1);
    assert_eq!((sim.held("tenant"), sim.held("vendor")), (0, 0));
    sim.advance_ms(10_000);
    assert_eq!(sim.granted(), [waiter]);
    assert_eq!((sim.held("tenant"), sim.held("vendor")), (1, 1));
}

#[test]
fn an_inactive_limit_passes_requests_through_even_while_paused() {
    let mut sim = Sim::new();
    sim.concurrency("off", 1);
    pause(&mut sim, "off", 10.0, "429");
    let deactivate = LimitPatch {
        active: Some(false),
        ..patch()
    };
    sim.engine
        .update_limit(sim.now, "off", &deactivate)
        .unwrap();
    sim.lease(&["off"], 1);
}

#[test]
fn a_bad_pause_is_refused_and_changes_nothing() {
    let mut sim = Sim::new();
    sim.concurrency("vendor", 1);
    for seconds in [-1.0, 0.0, f64::NAN, 1e12] {
        let err = sim
            .engine
            .pause(sim.now, "vendor", &PauseSpec::for_seconds(seconds))
            .unwrap_err();
        assert_eq!(err.code(), "invalid_pause", "{seconds}");
    }
    assert_eq!(sim.view("vendor").paused, None);
    let err = sim
        .engine
        .pause(sim.now, "nope", &PauseSpec::for_seconds(1.0))
        .unwrap_err();
    assert_eq!(err.code(), "limit_not_found");
}

#[test]
fn a_pause_survives_a_restore_from_records() {
    let mut sim = Sim::new();
    sim.concurrency("vendor", 1);
    let paused = pause(&mut sim, "vendor", 30.0, "429").paused;
    let records = sim.engine.records();
    let restored = ratekeeper_core::Engine::restore([1; 32], records, sim.now).unwrap();
    assert_eq!(restored.limit("vendor").unwrap().paused, paused);
}

// ----- templates -------------------------------------------------------------

fn template(sim: &mut Sim, name: &str, slots: u64, decay: f64) {
    let spec = LimitSpec {
        slot_decay_per_second: decay,
        ..LimitSpec::concurrency(name, slots)
    };
    sim.engine.create_limit(sim.now, &spec).unwrap();
}

#[test]
fn a_key_of_a_template_gets_an_active_instance_on_demand_that_behaves_like_a_limit() {
    let mut sim = Sim::new();
    template(&mut sim, "tenant:*", 2, 0.0);
    let a = sim.lease(&["tenant:acme"], 1);
    sim.lease(&["tenant:acme"], 1);
    let waiter = sim.queue(&["tenant:acme"], 1);
    // Another key has its own slots.
    sim.lease(&["tenant:globex"], 2);
    let acme = sim.view("tenant:acme");
    assert_eq!((acme.held, acme.waiting, acme.slots), (2, 1, 2));
    assert_eq!(acme.instance_of.as_deref(), Some("tenant:*"));
    let t = sim.view("tenant:*");
    assert_eq!(t.template.unwrap().instances, 2);
    assert_eq!((t.held, t.waiting), (4, 1), "a template shows the sums");
    assert_eq!(t.counters.granted_total, 3, "and every instance's totals");
    sim.release(a);
    assert_eq!(sim.granted(), [waiter]);
    let listed: Vec<String> = sim.engine.limits().into_iter().map(|l| l.name).collect();
    assert_eq!(listed, ["tenant:*"], "instances are listed apart");
}

#[test]
fn the_longest_matching_template_wins_and_an_explicit_limit_overrides_it() {
    let mut sim = Sim::new();
    template(&mut sim, "host:*", 5, 0.0);
    template(&mut sim, "host:api.*", 1, 0.0);
    sim.lease(&["host:api.vendor.com"], 1);
    assert_eq!(
        sim.view("host:api.vendor.com").instance_of.as_deref(),
        Some("host:api.*")
    );
    sim.lease(&["host:cdn.vendor.com"], 1);
    assert_eq!(
        sim.view("host:cdn.vendor.com").instance_of.as_deref(),
        Some("host:*")
    );
    // Creating the key as a limit takes over the instance, holders and all.
    let own = sim
        .engine
        .create_limit(sim.now, &LimitSpec::concurrency("host:api.vendor.com", 3))
        .unwrap();
    assert_eq!((own.slots, own.held, own.instance_of), (3, 1, None));
    assert_eq!(sim.view("host:api.*").template.unwrap().instances, 0);
}

#[test]
fn changing_a_template_changes_every_instance_and_an_instance_cannot_be_changed_alone() {
    let mut sim = Sim::new();
    template(&mut sim, "tenant:*", 1, 0.0);
    sim.lease(&["tenant:a"], 1);
    sim.lease(&["tenant:b"], 1);
    let waiter = sim.queue(&["tenant:a"], 1);
    let raise = LimitPatch {
        slots: Some(2),
        ..patch()
    };
    sim.engine
        .update_limit(sim.now, "tenant:*", &raise)
        .unwrap();
    assert_eq!(
        sim.granted(),
        [waiter],
        "raising the template lets waiters in"
    );
    assert_eq!(sim.view("tenant:b").slots, 2);
    let err = sim
        .engine
        .update_limit(sim.now, "tenant:a", &raise)
        .unwrap_err();
    assert_eq!(err.code(), "limit_is_instance");
    assert!(err.to_string().contains("tenant:*"), "{err}");
}

#[test]
fn deleting_a_template_fails_its_instances_waiters() {
    let mut sim = Sim::new();
    template(&mut sim, "tenant:*", 1, 0.0);
    sim.lease(&["tenant:a"], 1);
    let waiter = sim.queue(&["tenant:a"], 1);
    sim.engine.delete_limit(sim.now, "tenant:*").unwrap();
    let wakes = sim.engine.take_wakes();
    assert_eq!(wakes.len(), 1);
    assert_eq!(wakes[0].request, waiter);
    assert_eq!(
        wakes[0].outcome.as_ref().unwrap_err().code(),
        "limit_deleted"
    );
    assert_eq!(
        sim.engine.limit("tenant:a").unwrap_err().code(),
        "limit_not_found"
    );
}

#[test]
fn an_idle_instance_is_dropped_but_a_rate_instance_only_once_its_admissions_have_drained() {
    let mut sim = Sim::new();
    template(&mut sim, "tenant:*", 1, 0.0);
    let lease = sim.lease(&["tenant:a"], 1);
    sim.release(lease);
    assert!(sim.engine.limit("tenant:a").is_err(), "dropped once idle");
    assert_eq!(
        sim.view("tenant:*").counters.granted_total,
        1,
        "its totals stay"
    );

    template(&mut sim, "api:*", 2, 1.0); // 1 per second, bursts of 2
    assert!(sim.try_rate(&["api:k"], 1));
    assert!(sim.try_rate(&["api:k"], 1));
    assert!(!sim.try_rate(&["api:k"], 1), "the bucket is empty");
    sim.advance_ms(1_500);
    assert!(
        sim.engine.limit("api:k").is_ok(),
        "kept while it still counts admissions"
    );
    assert!(sim.try_rate(&["api:k"], 1));
    assert!(
        !sim.try_rate(&["api:k"], 1),
        "dropping it never lets more through"
    );
    sim.advance_to_wakeup();
    sim.advance_ms(3_000);
    assert!(sim.engine.limit("api:k").is_err(), "dropped once drained");
}

#[test]
fn a_template_allows_at_most_max_instances_keys_and_refusing_one_changes_nothing() {
    let mut sim = Sim::new();
    let spec = LimitSpec {
        max_instances: Some(2),
        ..LimitSpec::concurrency("tenant:*", 1)
    };
    sim.engine.create_limit(sim.now, &spec).unwrap();
    sim.lease(&["tenant:a"], 1);
    sim.lease(&["tenant:b"], 1);
    sim.concurrency("db", 1);
    let err = sim
        .acquire(&["db", "tenant:c"], 1, Sim::lease_claim(), None)
        .unwrap_err();
    assert_eq!(err.code(), "too_many_instances");
    assert!(err.to_string().contains("max_instances"), "{err}");
    assert_eq!(sim.held("db"), 0, "nothing else changed");
    assert_eq!(sim.view("tenant:*").template.unwrap().instances, 2);
    let two_new = sim.acquire(
        &["tenant:a", "tenant:d"],
        1,
        Sim::lease_claim(),
        Some(Duration::ZERO),
    );
    assert_eq!(two_new.unwrap_err().code(), "too_many_instances");
}

#[test]
fn templates_and_stars_are_named_by_the_rules() {
    let mut sim = Sim::new();
    template(&mut sim, "tenant:*", 1, 0.0);
    let err = sim
        .acquire(&["tenant:*"], 1, Sim::lease_claim(), None)
        .unwrap_err();
    assert_eq!(err.code(), "limit_is_template");
    assert!(err.to_string().contains("tenant:acme"), "{err}");
    for bad in ["a*b", "*"] {
        let err = sim
            .engine
            .create_limit(sim.now, &LimitSpec::concurrency(bad, 1))
            .unwrap_err();
        assert_eq!(err.code(), "invalid_name", "{bad}");
    }
    let not_template = LimitSpec {
        max_instances: Some(5),
        ..LimitSpec::concurrency("plain", 1)
    };
    let err = sim.engine.create_limit(sim.now, &not_template).unwrap_err();
    assert_eq!(err.code(), "invalid_max_instances");
    let occupy = sim
        .acquire(&["tenant:x"], 2, Sim::lease_claim(), None)
        .unwrap_err();
    assert_eq!(occupy.code(), "occupy_exceeds_slots");
    assert!(
        sim.engine.limit("tenant:x").is_err(),
        "a refused key makes no instance"
    );
}

#[test]
fn pausing_a_key_pauses_that_key_alone_and_pausing_the_template_pauses_every_key() {
    let mut sim = Sim::new();
    template(&mut sim, "host:*", 2, 0.0);
    // The key has no instance yet: pausing makes one, kept while paused.
    pause(&mut sim, "host:a", 10.0, "429");
    sim.advance_ms(1);
    assert!(sim.view("host:a").paused.is_some());
    sim.queue(&["host:a"], 1);
    sim.lease(&["host:b"], 1);
    pause(&mut sim, "host:*", 5.0, "all down");
    sim.queue(&["host:b"], 1);
    sim.queue(&["host:c"], 1);
    sim.advance_ms(5_000);
    assert_eq!(
        sim.granted().len(),
        2,
        "b and c when the template's pause ends"
    );
    sim.advance_ms(5_000);
    assert_eq!(sim.granted().len(), 1, "a when its own pause ends");
}

#[test]
fn templates_and_their_instances_survive_a_restore() {
    let mut sim = Sim::new();
    template(&mut sim, "tenant:*", 3, 0.0);
    let lease = sim.lease(&["tenant:a"], 2);
    let restored =
        ratekeeper_core::Engine::restore([1; 32], sim.engine.records(), sim.now).unwrap();
    let a = restored.limit("tenant:a").unwrap();
    assert_eq!((a.held, a.instance_of.as_deref()), (2, Some("tenant:*")));
    assert_eq!(
        restored
            .limit("tenant:*")
            .unwrap()
            .template
            .unwrap()
            .instances,
        1
    );
    assert!(restored.lease(lease).is_some());
}

// ----- adaptive limits ---------------------------------------------------------

fn adaptive(sim: &mut Sim, spec: LimitSpec) {
    let spec = LimitSpec {
        adaptive: Some(ratekeeper_core::Adaptive {
            decrease_factor: 0.5,
            recovery_seconds: 10.0,
        }),
        ..spec
    };
    sim.engine.create_limit(sim.now, &spec).unwrap();
}

/// A report of a 429 without `Retry-After`.
fn report(sim: &mut Sim, name: &str) -> ratekeeper_core::LimitView {
    let report = ratekeeper_core::ThrottleReport {
        reason: Some("429".into()),
        ..Default::default()
    };
    sim.engine.report_throttled(sim.now, name, &report).unwrap()
}

fn effective(sim: &Sim, name: &str) -> f64 {
    sim.view(name).adaptive.unwrap().effective
}

#[test]
fn a_report_halves_an_adaptive_rate_once_per_second_and_it_climbs_back_in_steps() {
    let mut sim = Sim::new();
    adaptive(&mut sim, LimitSpec::rate("vendor", 100.0, 1));
    assert_eq!(effective(&sim, "vendor"), 100.0);
    report(&mut sim, "vendor");
    assert_eq!(effective(&sim, "vendor"), 50.0);
    // The rest of the fleet reporting the same burst lowers nothing more.
    report(&mut sim, "vendor");
    assert_eq!(effective(&sim, "vendor"), 50.0);
    sim.advance_ms(1_000);
    assert_eq!(
        effective(&sim, "vendor"),
        60.0,
        "10 s from 0 to 100: +10 a second"
    );
    report(&mut sim, "vendor");
    assert_eq!(effective(&sim, "vendor"), 30.0);
    for _ in 0..7 {
        sim.advance_ms(1_000);
    }
    assert_eq!(
        effective(&sim, "vendor"),
        100.0,
        "back to the configured rate, no further"
    );
    sim.advance_ms(5_000);
    assert_eq!(effective(&sim, "vendor"), 100.0);
    assert_eq!(
        sim.view("vendor").slot_decay_per_second,
        100.0,
        "the configuration stays"
    );
}

#[test]
fn a_lowered_rate_admits_at_the_lowered_rate_exactly() {
    let mut sim = Sim::new();
    adaptive(&mut sim, LimitSpec::rate("vendor", 10.0, 1));
    report(&mut sim, "vendor");
    sim.advance_ms(1);
    assert!(sim.try_rate(&["vendor"], 1));
    // At 5/s the next turn is 200 ms later, not 100.
    sim.advance_ms(199);
    assert!(!sim.try_rate(&["vendor"], 1));
    sim.advance_ms(1);
    assert!(sim.try_rate(&["vendor"], 1));
}

#[test]
fn an_adaptive_concurrency_limit_lowers_its_slots_and_keeps_at_least_one() {
    let mut sim = Sim::new();
    adaptive(&mut sim, LimitSpec::concurrency("pool", 4));
    report(&mut sim, "pool");
    assert_eq!(effective(&sim, "pool"), 2.0);
    sim.advance_ms(1);
    sim.lease(&["pool"], 1);
    sim.lease(&["pool"], 1);
    let waiter = sim.queue(&["pool"], 1);
    for _ in 0..3 {
        sim.advance_ms(1_000);
        report(&mut sim, "pool");
    }
    assert_eq!(effective(&sim, "pool"), 1.0);
    // Climbing back lets the waiter in once a third slot is in force.
    let mut granted = Vec::new();
    for _ in 0..10 {
        sim.advance_ms(1_000);
        granted.extend(sim.granted());
    }
    assert_eq!(granted, [waiter]);
    assert_eq!(effective(&sim, "pool"), 4.0);
}

#[test]
fn adaptive_settings_out_of_range_are_refused_and_a_fixed_limit_is_not_lowered() {
    let mut sim = Sim::new();
    let bad = LimitSpec {
        adaptive: Some(ratekeeper_core::Adaptive {
            decrease_factor: 1.5,
            recovery_seconds: 10.0,
        }),
        ..LimitSpec::rate("vendor", 10.0, 1)
    };
    let err = sim.engine.create_limit(sim.now, &bad).unwrap_err();
    assert_eq!(err.code(), "invalid_adaptive");
    sim.rate("fixed", 10.0, 1);
    report(&mut sim, "fixed");
    assert_eq!(sim.view("fixed").adaptive, None);
}

#[test]
fn an_adaptive_limit_keeps_its_lowered_value_across_a_restore() {
    let mut sim = Sim::new();
    adaptive(&mut sim, LimitSpec::rate("vendor", 100.0, 1));
    report(&mut sim, "vendor");
    let mut restored =
        ratekeeper_core::Engine::restore([1; 32], sim.engine.records(), sim.now).unwrap();
    assert_eq!(
        restored
            .limit("vendor")
            .unwrap()
            .adaptive
            .unwrap()
            .effective,
        50.0
    );
    let later = sim.now.saturating_add(Duration::from_secs(1));
    restored.advance(later);
    assert_eq!(
        restored
            .limit("vendor")
            .unwrap()
            .adaptive
            .unwrap()
            .effective,
        60.0
    );
}

#[test]
fn a_report_pauses_a_fixed_limit_a_second_without_retry_after_and_every_limit_for_its_retry_after()
{
    let mut sim = Sim::new();
    sim.rate("fixed", 10.0, 1);
    adaptive(&mut sim, LimitSpec::rate("adaptive", 10.0, 1));
    let fixed = report(&mut sim, "fixed")
        .paused
        .expect("a fixed limit pauses");
    assert_eq!(fixed.until, sim.now.saturating_add(Duration::from_secs(1)));
    let adapting = report(&mut sim, "adaptive");
    assert_eq!(
        adapting.paused, None,
        "an adaptive limit slows down instead"
    );
    assert_eq!(adapting.adaptive.unwrap().effective, 5.0);
    sim.advance_ms(1_000);
    let asked = ratekeeper_core::ThrottleReport {
        retry_after: Some(30.0),
        ..Default::default()
    };
    let both = sim
        .engine
        .report_throttled(sim.now, "adaptive", &asked)
        .unwrap();
    assert_eq!(
        both.paused.unwrap().until,
        sim.now.saturating_add(Duration::from_secs(30))
    );
    assert!(both.adaptive.unwrap().effective < 5.0);
    let bad = ratekeeper_core::ThrottleReport {
        retry_after: Some(-1.0),
        ..Default::default()
    };
    let err = sim
        .engine
        .report_throttled(sim.now, "fixed", &bad)
        .unwrap_err();
    assert_eq!(err.code(), "invalid_pause");
}
