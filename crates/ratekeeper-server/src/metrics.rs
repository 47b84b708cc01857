//! `/metrics` in the OpenMetrics text format: per-limit state read at scrape
//! time, plus histograms of waits and of request latency.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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
        Arc::new(Metrics {
            registry,
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

    /// The whole exposition: these measurements and the limits' state.
    pub fn render(&self, limits: &[LimitView], waiting_tickets: usize) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        let end = text.rfind("# EOF").unwrap_or(text.len());
        text.truncate(end);
        let gauges: [PerLimit; 6] = [
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
        ];
        for (name, help, value) in gauges {
            family(&mut text, name, "gauge", help, "", limits, value);
        }
        let counters: [PerLimit; 5] = [
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
        for (name, help, value) in counters {
            family(&mut text, name, "counter", help, "_total", limits, value);
        }
        let _ = writeln!(text, "# TYPE ratekeeper_tickets_parked gauge");
        let _ = writeln!(
            text,
            "# HELP ratekeeper_tickets_parked Queued acquires waiting for their client to come back"
        );
        let _ = writeln!(text, "ratekeeper_tickets_parked {waiting_tickets}");
        if let Some(bytes) = resident_bytes() {
            let _ = writeln!(text, "# TYPE process_resident_memory_bytes gauge");
            let _ = writeln!(
                text,
                "# HELP process_resident_memory_bytes Resident memory of the server process"
            );
            let _ = writeln!(text, "process_resident_memory_bytes {bytes}");
        }
        text.push_str("# EOF\n");
        text
    }
}

/// The process's resident memory, where the OS tells it (Linux).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A per-limit metric: its name, its help text and how to read it.
type PerLimit = (&'static str, &'static str, fn(&LimitView) -> f64);

/// One per-limit metric family. Limit names are restricted to characters
/// that need no escaping in a label value.
fn family(
    text: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    suffix: &str,
    limits: &[LimitView],
    value: fn(&LimitView) -> f64,
) {
    let _ = writeln!(text, "# TYPE ratekeeper_limit_{name} {kind}");
    let _ = writeln!(text, "# HELP ratekeeper_limit_{name} {help}");
    for limit in limits {
        let _ = writeln!(
            text,
            "ratekeeper_limit_{name}{suffix}{{limit=\"{}\"}} {}",
            limit.name,
            value(limit)
        );
    }
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
