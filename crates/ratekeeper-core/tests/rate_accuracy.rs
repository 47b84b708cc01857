//! Rate accuracy with explicit time: a client that always wants more is
//! admitted exactly `burst + rate × T` times over a long run, and no window
//! of any length ever sees more than `burst + rate × T`.

mod common;

use std::time::Duration;

use common::Sim;
use ratekeeper_core::{Claim, Timestamp};

/// Runs a greedy client (one request always queued) for `seconds` of
/// simulated time; returns the grant instants.
fn greedy_run(rate: f64, burst: u64, seconds: u64) -> Vec<Timestamp> {
    let mut sim = Sim::new();
    sim.rate("api", rate, burst);
    let end = sim.now.saturating_add(Duration::from_secs(seconds));
    let mut grants = Vec::new();
    while sim.now <= end {
        if sim.try_rate(&["api"], 1) {
            grants.push(sim.now);
            continue;
        }
        sim.queue_with(&["api"], 1, Claim::Rate, None);
        let at = sim.engine.next_wakeup().expect("a decay timer is set");
        if at > end {
            break;
        }
        sim.advance_to_wakeup();
        assert_eq!(sim.granted().len(), 1);
        grants.push(sim.now);
    }
    grants
}

/// The largest `count − (burst + rate × T)` over all windows of the run,
/// in O(n): for a window from grant i to grant j it is
/// `(j − i + 1) − burst − rate (t_j − t_i)`.
fn worst_window_excess(grants: &[Timestamp], rate: f64, burst: u64) -> f64 {
    let start = grants[0];
    let secs = |t: Timestamp| t.saturating_duration_since(start).as_secs_f64();
    let mut best_start = f64::NEG_INFINITY; // max over i of rate·t_i − i
    let mut worst = f64::NEG_INFINITY;
    for (j, &t) in grants.iter().enumerate() {
        best_start = best_start.max(rate * secs(t) - j as f64);
        worst = worst.max((j as f64 + 1.0) - rate * secs(t) + best_start - burst as f64);
    }
    worst
}

fn check(rate: f64, burst: u64, seconds: u64) {
    let grants = greedy_run(rate, burst, seconds);
    let ideal = burst as f64 + rate * seconds as f64;
    let admitted = grants.len() as f64;
    assert!(
        (admitted - ideal).abs() <= 1.0,
        "{rate}/s burst {burst}: admitted {admitted}, ideal {ideal}"
    );
    let excess = worst_window_excess(&grants, rate, burst);
    assert!(
        excess <= 1e-6,
        "{rate}/s burst {burst}: a window saw {excess} more than allowed"
    );
}

#[test]
fn ten_per_second() {
    check(10.0, 1, 1_000);
    check(10.0, 50, 1_000);
}

#[test]
fn a_hundred_per_second() {
    check(100.0, 1, 200);
    check(100.0, 500, 200);
}

#[test]
fn a_thousand_per_second() {
    check(1_000.0, 1, 50);
    check(1_000.0, 5_000, 50);
}

#[test]
fn ten_thousand_per_second() {
    check(10_000.0, 1, 10);
    check(10_000.0, 20_000, 10);
}

#[test]
fn rates_that_are_no_whole_number_of_nanoseconds_apart() {
    check(3.0, 1, 1_000);
    check(7.0, 3, 1_000);
    check(333.0, 10, 100);
}

#[test]
fn irregular_arrivals_never_exceed_any_window() {
    // Arrivals at pseudo-random instants, some bunched, some sparse.
    let (rate, burst) = (50.0, 5);
    let mut sim = Sim::new();
    sim.rate("api", rate, burst);
    let mut grants = Vec::new();
    let mut x: u64 = 12345;
    for _ in 0..20_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let gap_us = (x >> 33) % 40_000; // 0–40 ms
        sim.advance(Duration::from_micros(gap_us));
        if sim.try_rate(&["api"], 1) {
            grants.push(sim.now);
        }
    }
    assert!(worst_window_excess(&grants, rate, burst) <= 1e-6);
    // And the limiter was busy enough for that to mean something.
    let span = grants.last().unwrap().saturating_duration_since(grants[0]);
    assert!(grants.len() as f64 > 0.9 * rate * span.as_secs_f64());
}
