//! The classic job: 30 calls to an API that allows at most 3 at once, each
//! call taking 1 s. With slots handed over the instant they free up, the
//! whole job takes 10 s, the ideal, plus about 1 ms a round: tokio's timer
//! rounds each simulated call up to the next millisecond. The handoff itself
//! takes microseconds. A poll-and-retry limiter, whose waiters sleep for a
//! suggested interval and try again, leaves slots idle between polls; this
//! is the job its users measured at about 16 s.
//!
//! Run it with `cargo run --release -p ratekeeper-driver --example classic_job`.

use std::time::{Duration, Instant};

use ratekeeper_core::LimitSpec;
use ratekeeper_driver::Limiter;

const CALLS: usize = 30;
const IN_FLIGHT: u64 = 3;
const CALL_TAKES: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() {
    let limiter = Limiter::new();
    limiter
        .create(LimitSpec::concurrency("vendor-api", IN_FLIGHT))
        .expect("a valid limit");
    println!("{CALLS} calls of {CALL_TAKES:?} each, at most {IN_FLIGHT} in flight");

    let start = Instant::now();
    let calls: Vec<_> = (0..CALLS)
        .map(|call| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let slot = limiter
                    .concurrency("vendor-api")
                    .await
                    .expect("the limit exists");
                let began = start.elapsed();
                tokio::time::sleep(CALL_TAKES).await; // the API call
                let ended = start.elapsed();
                drop(slot);
                (call, began, ended)
            })
        })
        .collect();

    let mut timeline = Vec::new();
    for call in calls {
        timeline.push(call.await.expect("the call task does not panic"));
    }
    let total = start.elapsed();
    timeline.sort_by_key(|&(_, began, _)| began);
    for round in timeline.chunks(IN_FLIGHT as usize) {
        let line: Vec<String> = round
            .iter()
            .map(|(call, began, _)| format!("call {call:>2} at {:>6.3}s", began.as_secs_f64()))
            .collect();
        println!("  {}", line.join("   "));
    }
    // Slots go to waiters in order: the k-th slot freed is the one the
    // (k + IN_FLIGHT)-th call starts on. The gap between the two is the handoff.
    let mut ends: Vec<Duration> = timeline.iter().map(|&(_, _, ended)| ended).collect();
    ends.sort();
    let mut handoffs: Vec<Duration> = timeline[IN_FLIGHT as usize..]
        .iter()
        .zip(&ends)
        .map(|(&(_, began, _), &freed)| began.saturating_sub(freed))
        .collect();
    handoffs.sort();
    let ideal = CALL_TAKES * (CALLS as u32).div_ceil(IN_FLIGHT as u32);
    let view = limiter.limit("vendor-api").expect("the limit exists");
    println!(
        "done in {:.3}s (ideal {:.0}s); slot handoff median {:?}, max {:?}; {} granted, {} held now",
        total.as_secs_f64(),
        ideal.as_secs_f64(),
        handoffs[handoffs.len() / 2],
        handoffs[handoffs.len() - 1],
        view.counters.granted_total,
        view.held,
    );
}
