//! `/v1/limits/{name}/history`: what each limit did over the last minutes,
//! so that a page shows them the moment it opens.
//!
//! One task reads every limit once a second ([`sample`]) and keeps, per
//! limit, a ring of the last `window` samples. Memory is bounded: a sample
//! takes [`SAMPLE_BYTES`] bytes, a limit at most `window` of them (900 by
//! default: 15 minutes, about 18 KB), and at most `max_limits` limits are
//! sampled (1 000 by default, so about 18 MB at most). Which ones: those
//! already sampled keep their place, and room goes to the others by name.
//! A deleted limit's samples go with it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratekeeper_api::{HistorySample, LimitHistory};
use ratekeeper_backend::Backend;
use ratekeeper_core::LimitView;
use tokio::sync::watch;

/// How much history the server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How far back samples reach; zero turns history off.
    pub window: Duration,
    /// At most this many limits are sampled.
    pub max_limits: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            window: Duration::from_secs(15 * 60),
            max_limits: 1_000,
        }
    }
}

/// Seconds between samples.
pub const INTERVAL_SECONDS: u64 = 1;

/// The bytes one sample takes in memory.
pub const SAMPLE_BYTES: usize = std::mem::size_of::<Sample>();

/// One second of one limit, kept small: figures beyond `u32` saturate.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Which tick of the sampler: seconds since the history began.
    tick: u32,
    occupancy: f32,
    waiting: u32,
    granted: u32,
    granted_slots: u32,
}

impl Sample {
    fn at(self, began_unix_millis: u64) -> HistorySample {
        HistorySample {
            at: began_unix_millis + u64::from(self.tick) * INTERVAL_SECONDS * 1000,
            occupancy: f64::from(self.occupancy),
            waiting: self.waiting.into(),
            granted: self.granted.into(),
            granted_slots: self.granted_slots.into(),
        }
    }
}

/// One limit's samples, and its running totals when last sampled.
struct Track {
    samples: VecDeque<Sample>,
    granted_total: u64,
    granted_slots_total: u64,
}

/// The samples of every tracked limit.
pub struct History {
    config: HistoryConfig,
    /// When tick 0 was, in Unix milliseconds: samples are timed by the
    /// ticks of a monotonic clock, never out of order.
    began_unix_millis: u64,
    tracks: Mutex<HashMap<String, Track>>,
}

fn small(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl History {
    /// Keeps history as `config` says.
    pub fn new(config: HistoryConfig) -> Arc<Self> {
        Arc::new(History {
            config,
            began_unix_millis: unix_millis(),
            tracks: Mutex::new(HashMap::new()),
        })
    }

    /// How many samples a limit keeps.
    fn capacity(&self) -> usize {
        usize::try_from(self.config.window.as_secs() / INTERVAL_SECONDS).unwrap_or(usize::MAX)
    }

    fn enabled(&self) -> bool {
        self.capacity() > 0 && self.config.max_limits > 0
    }

    /// Adds a sample of every limit in `limits` (the store's whole list, as
    /// of `tick` seconds after the history began) and forgets those no
    /// longer in it.
    pub fn record(&self, limits: &[LimitView], tick: u32) {
        let capacity = self.capacity();
        let mut tracks = self.tracks.lock().expect("history lock");
        let present: HashSet<&str> = limits.iter().map(|l| l.name.as_str()).collect();
        tracks.retain(|name, _| present.contains(name.as_str()));
        for limit in limits {
            let counters = &limit.counters;
            let full = tracks.len() >= self.config.max_limits;
            let track = match tracks.entry(limit.name.clone()) {
                Entry::Occupied(tracked) => tracked.into_mut(),
                Entry::Vacant(_) if full => continue,
                Entry::Vacant(new) => new.insert(Track {
                    samples: VecDeque::with_capacity(capacity),
                    granted_total: counters.granted_total,
                    granted_slots_total: counters.granted_slots_total,
                }),
            };
            if track.samples.len() == capacity {
                track.samples.pop_front();
            }
            // A reset limit starts its totals again: no negative grants.
            track.samples.push_back(Sample {
                tick,
                occupancy: (limit.held as f64 + limit.decaying) as f32,
                waiting: small(limit.waiting),
                granted: small(counters.granted_total.saturating_sub(track.granted_total)),
                granted_slots: small(
                    counters
                        .granted_slots_total
                        .saturating_sub(track.granted_slots_total),
                ),
            });
            track.granted_total = counters.granted_total;
            track.granted_slots_total = counters.granted_slots_total;
        }
    }

    /// The names of the limits sampled.
    fn tracked(&self) -> Vec<String> {
        let tracks = self.tracks.lock().expect("history lock");
        tracks.keys().cloned().collect()
    }

    /// The samples of `name`; `tracked` is false when it has none kept
    /// (not sampled, or not yet).
    pub fn of(&self, name: &str) -> LimitHistory {
        let tracks = self.tracks.lock().expect("history lock");
        let track = tracks.get(name);
        LimitHistory {
            name: name.to_owned(),
            interval_seconds: INTERVAL_SECONDS,
            window_seconds: self.config.window.as_secs(),
            tracked: track.is_some(),
            samples: track
                .map(|t| {
                    t.samples
                        .iter()
                        .map(|s| s.at(self.began_unix_millis))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// With more limits than it tracks, the sampler lists every limit only
/// this often (to start tracking new ones); in between it reads the tracked
/// ones by name.
const DISCOVERY_TICKS: u64 = 30;

/// Samples every limit of `backend` each second until `stopping` turns
/// true. A second the store cannot be read is skipped (a gap, not zeros).
/// While every limit is tracked the whole list is read each second; with
/// more limits than `max_limits`, only the tracked ones are, and the whole
/// list every [`DISCOVERY_TICKS`] seconds: a server with 100 000 limits
/// spent a tenth of a core listing them every second.
pub async fn sample<B: Backend>(
    backend: Arc<B>,
    history: Arc<History>,
    mut stopping: watch::Receiver<bool>,
) {
    if !history.enabled() {
        return;
    }
    let interval = Duration::from_secs(INTERVAL_SECONDS);
    let began = tokio::time::Instant::now();
    let (mut every_one_tracked, mut next_listing) = (true, 0);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        // The tick this is, even if some were skipped (a slow store).
        let tick = began.elapsed().as_secs() / INTERVAL_SECONDS;
        let list_all = every_one_tracked || tick >= next_listing;
        let limits = if list_all {
            backend.limits().await
        } else {
            backend.limits_named(&history.tracked()).await
        };
        if let Ok(limits) = limits {
            if list_all {
                every_one_tracked = limits.len() <= history.config.max_limits;
                next_listing = tick + DISCOVERY_TICKS;
            }
            history.record(&limits, small(tick));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratekeeper_core::{Counters, Timestamp};

    fn view(name: &str, held: u64, granted: u64) -> LimitView {
        LimitView {
            name: name.into(),
            slots: 10,
            slot_decay_per_second: 0.0,
            active: true,
            description: None,
            held,
            decaying: 0.0,
            waiting: 0,
            waiting_slots: 0,
            counters: Counters {
                granted_total: granted,
                granted_slots_total: granted * 2,
                ..Counters::default()
            },
            created_at: Timestamp::EPOCH,
            updated_at: Timestamp::EPOCH,
            paused: None,
            template: None,
            instance_of: None,
            adaptive: None,
        }
    }

    fn history(seconds: u64, max_limits: usize) -> Arc<History> {
        History::new(HistoryConfig {
            window: Duration::from_secs(seconds),
            max_limits,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn with_more_limits_than_it_tracks_the_sampler_keeps_sampling_the_tracked_ones() {
        let backend = Arc::new(ratekeeper_backend::Embedded::in_memory());
        for name in ["a", "b", "c"] {
            let spec = ratekeeper_core::LimitSpec::concurrency(name, 1);
            backend.create_limit(spec).await.unwrap();
        }
        let h = history(60, 2);
        let (stop, stopping) = watch::channel(false);
        let sampler = tokio::spawn(sample(Arc::clone(&backend), Arc::clone(&h), stopping));
        tokio::time::sleep(Duration::from_millis(3500)).await;
        backend.delete_limit("b").await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.send(true).unwrap();
        sampler.await.unwrap();
        // Sampled every second (by name after the first listing), two of
        // three; the one deleted meanwhile is forgotten at once.
        assert_eq!(h.of("a").samples.len(), 6);
        assert!(!h.of("b").tracked);
        assert!(!h.of("c").tracked);
    }

    #[test]
    fn each_sample_counts_the_grants_since_the_one_before() {
        let h = history(60, 10);
        h.record(&[view("a", 1, 5)], 100);
        h.record(&[view("a", 2, 8)], 101);
        h.record(&[view("a", 0, 8)], 102);
        let kept = h.of("a");
        assert!(kept.tracked);
        let granted: Vec<u64> = kept.samples.iter().map(|s| s.granted).collect();
        assert_eq!(granted, [0, 3, 0]);
        assert_eq!(kept.samples[1].granted_slots, 6);
        assert_eq!(kept.samples[1].occupancy, 2.0);
        assert_eq!(kept.samples[2].at - kept.samples[0].at, 2_000);
    }

    #[test]
    fn a_limit_keeps_only_the_window_and_a_deleted_one_nothing() {
        let h = history(3, 10);
        for second in 0..10 {
            h.record(&[view("a", 0, second), view("b", 0, 0)], second as u32);
        }
        let kept = h.of("a");
        assert_eq!(kept.samples.len(), 3);
        assert_eq!(kept.samples[0].at, h.began_unix_millis + 7_000);
        h.record(&[view("b", 0, 0)], 11);
        assert!(!h.of("a").tracked);
        assert!(h.of("a").samples.is_empty());
    }

    #[test]
    fn at_most_max_limits_are_sampled_and_those_first_sampled_keep_their_place() {
        let h = history(60, 2);
        h.record(&[view("b", 0, 0), view("c", 0, 0)], 1);
        h.record(&[view("a", 0, 0), view("b", 0, 0), view("c", 0, 0)], 2);
        assert!(!h.of("a").tracked);
        assert_eq!(h.of("b").samples.len(), 2);
        // Room freed by a deleted limit goes to the next one.
        h.record(&[view("a", 0, 0), view("b", 0, 0)], 3);
        assert!(h.of("a").tracked);
    }

    #[test]
    fn a_reset_limit_counts_no_negative_grants() {
        let h = history(60, 10);
        h.record(&[view("a", 0, 50)], 1);
        h.record(&[view("a", 0, 2)], 2);
        h.record(&[view("a", 0, 5)], 3);
        let granted: Vec<u64> = h.of("a").samples.iter().map(|s| s.granted).collect();
        assert_eq!(granted, [0, 0, 3]);
    }

    #[test]
    fn a_sample_is_small() {
        assert_eq!(SAMPLE_BYTES, 20);
    }
}
