//! `/metrics` in the OpenMetrics text format: per-limit state read at scrape
//! time, plus histograms of waits and of request latency.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use ratekeeper_core::LimitView;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The server's own measurements.
pub struct Metrics {
    registry: Registry,
    /// What the state collector reads on the scrape under way.
    scrape: Arc<Mutex<Scrape>>,
    /// Held for a whole scrape, so that scrapes do not mix their states.
    turn: Mutex<()>,
    requests: Family<RouteLabels, Histogram>,
    waits: Histogram,
    acquires: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    /// Empty measurements, registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~26 s.
            Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
        });
        registry.register(
            "ratekeeper_http_request_duration_seconds",
            "Time to answer an HTTP request, by route (acquires include their wait)",
            requests.clone(),
        );
        // 10 µs .. ~10 min.
        let waits = Histogram::new(exponential_buckets(0.000_01, 3.0, 17));
        registry.register(
            "ratekeeper_acquire_wait_seconds",
            "Time granted acquires spent queued",
            waits.clone(),
        );
        let acquires = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "ratekeeper_acquires",
            "Acquires decided, by outcome (granted or an error code)",
            acquires.clone(),
        );
        registry.register(
            "ratekeeper_build",
            "The running release",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let scrape = Arc::new(Mutex::new(Scrape::default()));
        registry.register_collector(Box::new(StateCollector(Arc::clone(&scrape))));
        Arc::new(Metrics {
            registry,
            scrape,
            turn: Mutex::new(()),
            requests,
            waits,
            acquires,
        })
    }

    /// Counts a decided acquire.
    pub fn acquired(&self, outcome: Result<Duration, &str>) {
        let outcome = match outcome {
            Ok(waited) => {
                self.waits.observe(waited.as_secs_f64());
                "granted"
            }
            Err(code) => code,
        };
        self.acquires
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The whole exposition: these measurements, the limits' state, the
    /// parked tickets and the process's own figures, read now.
    pub fn render(&self, limits: Vec<LimitView>, tickets: usize) -> String {
        // Scrapes take turns, from setting the state to encoding it, so that
        // the collector reads the state of this scrape.
        let _turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        *self.scrape.lock().unwrap_or_else(|p| p.into_inner()) = Scrape { limits, tickets };
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// What a scrape reads besides the registered measurements.
#[derive(Debug, Default)]
struct Scrape {
    limits: Vec<LimitView>,
    tickets: usize,
}

/// A per-limit metric: its name, its help text and how to read it.
type PerLimit = (&'static str, &'static str, fn(&LimitView) -> f64);

const GAUGES: [PerLimit; 8] = [
    ("slots", "Slots of the limit", |l| l.slots as f64),
    ("held", "Slots held by leases", |l| l.held as f64),
    ("decaying", "Rate-mode slots not yet decayed", |l| {
        l.decaying
    }),
    ("waiting", "Requests queued", |l| l.waiting as f64),
    ("waiting_slots", "Slots asked for by queued requests", |l| {
        l.waiting_slots as f64
    }),
    ("active", "1 if the limit enforces, else 0", |l| {
        u8::from(l.active).into()
    }),
    (
        "effective",
        "The rate (rate limit) or slots (concurrency limit) in force: lower than configured while an adaptive limit is lowered",
        |l| match &l.adaptive {
            Some(a) => a.effective,
            None if l.slot_decay_per_second > 0.0 => l.slot_decay_per_second,
            None => l.slots as f64,
        },
    ),
    (
        "paused_seconds",
        "Seconds until the limit's pause ends; 0 when not paused",
        |l| {
            l.paused.as_ref().map_or(0.0, |pause| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let left = pause
                    .until
                    .as_unix_nanos()
                    .saturating_sub(now.as_nanos() as u64);
                left as f64 / 1e9
            })
        },
    ),
];

const COUNTERS: [PerLimit; 5] = [
    ("granted", "Requests granted", |l| {
        l.counters.granted_total as f64
    }),
    ("granted_slots", "Slots granted", |l| {
        l.counters.granted_slots_total as f64
    }),
    ("waited", "Requests that had to queue", |l| {
        l.counters.waited_total as f64
    }),
    ("expired", "Leases that expired", |l| {
        l.counters.expired_total as f64
    }),
    ("denied", "Requests refused for lack of capacity", |l| {
        l.counters.denied_total as f64
    }),
];

/// The state read at scrape time: one family per limit figure (labelled
/// by limit name, which needs no escaping), the parked tickets, and the
/// process's memory, CPU and file descriptors where the OS tells them.
#[derive(Debug)]
struct StateCollector(Arc<Mutex<Scrape>>);

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let scrape = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let kinds: [(MetricType, &[PerLimit]); 2] = [
            (MetricType::Gauge, &GAUGES),
            (MetricType::Counter, &COUNTERS),
        ];
        for (kind, figures) in kinds {
            for (name, help, value) in figures.iter() {
                let name = format!("ratekeeper_limit_{name}");
                let mut metric = encoder.encode_descriptor(&name, help, None, kind)?;
                for limit in &scrape.limits {
                    let labels = [("limit", limit.name.as_str())];
                    let family = metric.encode_family(&labels)?;
                    // Counts print as the integers they are.
                    let value = value(limit);
                    let whole =
                        (value.fract() == 0.0 && value.abs() < 9e15).then_some(value as i64);
                    match (kind, whole) {
                        (MetricType::Counter, Some(n)) => {
                            ConstCounter::new(n.unsigned_abs()).encode(family)?
                        }
                        (MetricType::Counter, None) => ConstCounter::new(value).encode(family)?,
                        (_, Some(n)) => ConstGauge::new(n).encode(family)?,
                        (_, None) => ConstGauge::new(value).encode(family)?,
                    }
                }
            }
        }
        let parked = encoder.encode_descriptor(
            "ratekeeper_tickets_parked",
            "Queued acquires waiting for their client to come back",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(scrape.tickets as i64).encode(parked)?;
        let whole: [(&str, &str, Option<i64>); 3] = [
            (
                "process_resident_memory_bytes",
                "Resident memory of the server process",
                resident_bytes().and_then(|b| i64::try_from(b).ok()),
            ),
            (
                "process_open_fds",
                "File descriptors the server process has open",
                open_fds().and_then(|n| i64::try_from(n).ok()),
            ),
            (
                "process_max_fds",
                "The most file descriptors the server process may open",
                max_fds().and_then(|n| i64::try_from(n).ok()),
            ),
        ];
        for (name, help, value) in whole {
            let Some(value) = value else { continue };
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)?;
        }
        if let Some(seconds) = cpu_seconds() {
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "CPU time the server process used, user and system",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(seconds).encode(metric)?;
        }
        Ok(())
    }
}

/// The process's resident memory, where the OS tells it (Linux).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User and system CPU time of the process, in seconds (Linux: `utime`
/// and `stime` of `/proc/self/stat`, in USER_HZ ticks, which Linux fixes at
/// 100 a second for this file).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is the first, utime the 12th, stime the 13th.
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Times every request, by its route pattern.
pub async fn time_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let response = next.run(request).await;
    metrics
        .requests
        .get_or_create(&RouteLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}
