//! `ratekeeper bench`: named load scenarios against a server or
//! `memory://`, printed as a table (or JSON) beside their targets.
//!
//! Every scenario makes its own limits (named `bench-…`) and deletes them
//! afterwards, so it can run against a server in use.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ratekeeper_client::api::{AcquireAnswer, AcquireBody, AcquireMode};
use ratekeeper_client::{Client, Error};
use ratekeeper_core::LimitSpec;
use serde::Serialize;

use crate::admin::{Connection, Output};
use crate::failure::{EXIT_FAILED, EXIT_UNAVAILABLE, Failure};

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// 30 jobs of 1 s under a limit of 3: total wall time (ideal 10 s).
    Seed,
    /// Release → next waiter granted: p50, p99, max.
    Handoff,
    /// Acquire + release cycles per second with many concurrent clients.
    Churn,
    /// Admitted rate against configured rate at 10, 100, 1 000 and 10 000/s.
    Rate,
    /// Memory with many waiters parked on one limit.
    Park,
    /// Many limits, live leases and parked waiters at once: what each
    /// costs in memory, and churn beside them (a server only).
    Scale,
}

/// The flags of `ratekeeper bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    connection: Connection,
    /// Which scenarios to run (default: all).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Concurrent clients for `churn` and `rate`.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds `churn` runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Handoffs `handoff` measures.
    #[arg(long, default_value_t = 500)]
    handoffs: usize,
    /// Waiters `park` parks.
    #[arg(long, default_value_t = 100_000)]
    parked: usize,
    /// Limits `scale` creates.
    #[arg(long, default_value_t = 10_000)]
    limits: usize,
    /// Live leases `scale` holds (10 minutes each).
    #[arg(long, default_value_t = 100_000)]
    leases: usize,
    /// Waiters `scale` parks.
    #[arg(long, default_value_t = 10_000)]
    waiters: usize,
    /// Leave what `scale` made in place (to time a restart with it).
    #[arg(long)]
    keep: bool,
    /// A second server sharing the first one's state (servers on one
    /// Redis): `handoff` passes the slot between the two, and `churn`
    /// spreads its clients over both.
    #[arg(long)]
    peer_url: Option<String>,
}

/// One measured figure.
#[derive(Debug, Serialize)]
struct Figure {
    scenario: Scenario,
    metric: String,
    value: f64,
    unit: &'static str,
    /// The target, as text ("≤ 10.1"), if the scenario has one.
    target: Option<String>,
    /// Whether the value meets its target.
    met: Option<bool>,
}

impl Figure {
    fn new(scenario: Scenario, metric: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Figure {
            scenario,
            metric: metric.into(),
            value,
            unit,
            target: None,
            met: None,
        }
    }

    fn at_most(mut self, limit: f64) -> Self {
        self.target = Some(format!("≤ {limit}"));
        self.met = Some(self.value <= limit);
        self
    }

    fn at_least(mut self, limit: f64) -> Self {
        self.target = Some(format!("≥ {limit}"));
        self.met = Some(self.value >= limit);
        self
    }

    fn within(mut self, expected: f64, tolerance: f64) -> Self {
        self.target = Some(format!("{expected} ± {}%", tolerance * 100.0));
        self.met = Some((self.value - expected).abs() <= expected * tolerance);
        self
    }
}

/// Runs the chosen scenarios and prints their figures.
pub async fn run(args: BenchArgs) -> Result<(), Failure> {
    let connection = &args.connection;
    let connect = |url: &str| crate::admin::connect(connection, Some(url));
    let client = connect(&connection.url).map_err(failed)?;
    // The clients that `handoff` and `churn` take turns with.
    let mut players = vec![client.clone()];
    if let Some(peer) = &args.peer_url {
        players.push(connect(peer).map_err(failed)?);
    }
    let scenarios = if args.scenarios.is_empty() {
        vec![
            Scenario::Seed,
            Scenario::Handoff,
            Scenario::Churn,
            Scenario::Rate,
            Scenario::Park,
        ]
    } else {
        args.scenarios.clone()
    };
    let mut figures = Vec::new();
    for scenario in scenarios {
        let progress = progress(scenario);
        let result = match scenario {
            Scenario::Seed => seed(&client).await,
            Scenario::Handoff => handoff(&players, args.handoffs).await,
            Scenario::Churn => {
                churn(
                    &players,
                    args.clients,
                    Duration::from_secs_f64(args.seconds),
                )
                .await
            }
            Scenario::Rate => rate(&client, args.clients, &progress).await,
            Scenario::Park => park(&client, connection, args.parked).await,
            Scenario::Scale => scale(&players, connection, &args).await,
        };
        progress.finish_and_clear();
        figures.extend(result.map_err(failed)?);
    }
    match connection.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&figures).expect("serializes")
        ),
        Output::Table => print!("{}", table(&figures)),
    }
    Ok(())
}

fn failed(err: Error) -> Failure {
    Failure {
        exit_code: if err.is_transient() {
            EXIT_UNAVAILABLE
        } else {
            EXIT_FAILED
        },
        message: format!("bench: {err}"),
    }
}

fn progress(scenario: Scenario) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").expect("a valid template"),
    );
    bar.set_message(format!("{scenario:?}").to_lowercase());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn table(figures: &[Figure]) -> String {
    let mut text = format!(
        "{:<8}  {:<24}  {:>14}  {:<12}  {}\n",
        "SCENARIO", "METRIC", "VALUE", "TARGET", "MET"
    );
    for f in figures {
        let value = format!("{:.3} {}", f.value, f.unit);
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        let scenario = format!("{:?}", f.scenario).to_lowercase();
        let target = f.target.clone().unwrap_or_default();
        text.push_str(&format!(
            "{scenario:<8}  {:<24}  {value:>14}  {target:<12}  {met}\n",
            f.metric
        ));
    }
    text
}

/// A limit that exists for one scenario and is deleted after it.
struct BenchLimit<'c> {
    client: &'c Client,
    name: String,
}

impl<'c> BenchLimit<'c> {
    async fn create(client: &'c Client, scenario: &str, spec: LimitSpec) -> Result<Self, Error> {
        let name = format!("bench-{scenario}-{}-{}", std::process::id(), unique());
        client
            .create_limit(LimitSpec {
                name: name.clone(),
                ..spec
            })
            .await?;
        Ok(BenchLimit { client, name })
    }

    async fn delete(self) -> Result<(), Error> {
        self.client.delete_limit(&self.name).await
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn seed(client: &Client) -> Result<Vec<Figure>, Error> {
    let limit = BenchLimit::create(client, "seed", LimitSpec::concurrency("", 3)).await?;
    let started = Instant::now();
    let jobs: Vec<_> = (0..30)
        .map(|_| {
            let (client, name) = (client.clone(), limit.name.clone());
            tokio::spawn(async move {
                let lease = client.concurrency(name).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                lease.release().await
            })
        })
        .collect();
    for job in jobs {
        job.await.expect("a job")?;
    }
    let total = started.elapsed().as_secs_f64();
    limit.delete().await?;
    Ok(vec![
        Figure::new(Scenario::Seed, "30 × 1 s, 3 at once", total, "s").at_most(10.1),
    ])
}

/// Two players pass one slot back and forth, each on its own client of
/// `clients` (taken in turn).
async fn handoff(clients: &[Client], rounds: usize) -> Result<Vec<Figure>, Error> {
    let limit = BenchLimit::create(&clients[0], "handoff", LimitSpec::concurrency("", 1)).await?;
    let released_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let samples: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let players: Vec<_> = (0..2)
        .map(|i| {
            let (client, name) = (clients[i % clients.len()].clone(), limit.name.clone());
            let (released_at, samples) = (released_at.clone(), samples.clone());
            tokio::spawn(async move {
                while samples.lock().expect("not poisoned").len() < rounds {
                    let lease = client.concurrency(name.clone()).await?;
                    if let Some(at) = released_at.lock().expect("not poisoned").take() {
                        samples.lock().expect("not poisoned").push(at.elapsed());
                    }
                    // Let the other player queue behind this holder.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    *released_at.lock().expect("not poisoned") = Some(Instant::now());
                    lease.release().await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for player in players {
        player.await.expect("a player")?;
    }
    limit.delete().await?;
    let mut samples = std::mem::take(&mut *samples.lock().expect("not poisoned"));
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    Ok(vec![
        Figure::new(Scenario::Handoff, "p50", at(0.5), "ms").at_most(1.0),
        Figure::new(Scenario::Handoff, "p99", at(0.99), "ms").at_most(5.0),
        Figure::new(Scenario::Handoff, "max", at(1.0), "ms"),
    ])
}

/// `clients` workers acquire and release as fast as they can, spread over
/// `players` in turn.
async fn churn(
    players: &[Client],
    clients: usize,
    duration: Duration,
) -> Result<Vec<Figure>, Error> {
    let slots = clients as u64;
    let limit = BenchLimit::create(&players[0], "churn", LimitSpec::concurrency("", slots)).await?;
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let (client, name) = (players[i % players.len()].clone(), limit.name.clone());
            tokio::spawn(async move {
                let mut cycles = 0u64;
                while Instant::now() < deadline {
                    client.concurrency(name.clone()).await?.release().await?;
                    cycles += 1;
                }
                Ok::<_, Error>(cycles)
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker.await.expect("a worker")?;
    }
    let per_second = total as f64 / started.elapsed().as_secs_f64();
    limit.delete().await?;
    Ok(vec![
        Figure::new(
            Scenario::Churn,
            format!("cycles/s, {clients} clients"),
            per_second,
            "/s",
        )
        .at_least(20_000.0),
    ])
}

/// For each rate, `clients` callers ask as fast as they can for long enough
/// to be admitted about 100 times (at least 2 s); the admitted rate, burst
/// excluded, must be within 1 % of the configured rate.
async fn rate(
    client: &Client,
    clients: usize,
    progress: &ProgressBar,
) -> Result<Vec<Figure>, Error> {
    let mut figures = Vec::new();
    for per_second in [10.0, 100.0, 1_000.0, 10_000.0] {
        progress.set_message(format!("rate {per_second}/s"));
        let limit = BenchLimit::create(client, "rate", LimitSpec::rate("", per_second, 1)).await?;
        let duration = Duration::from_secs_f64((100.0 / per_second).max(2.0));
        let admitted = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let callers: Vec<_> = (0..clients.min((per_second as usize).max(1)))
            .map(|_| {
                let (client, name, admitted) =
                    (client.clone(), limit.name.clone(), admitted.clone());
                tokio::spawn(async move {
                    while started.elapsed() < duration {
                        client.rate_limit(name.clone()).await?;
                        admitted
                            .lock()
                            .expect("not poisoned")
                            .push(started.elapsed());
                    }
                    Ok::<_, Error>(())
                })
            })
            .collect();
        for caller in callers {
            caller.await.expect("a caller")?;
        }
        limit.delete().await?;
        let mut times = std::mem::take(&mut *admitted.lock().expect("not poisoned"));
        times.sort();
        // The first admission is the burst; the rest arrive at the rate.
        let span = (times[times.len() - 1] - times[0]).as_secs_f64();
        let measured = (times.len() - 1) as f64 / span;
        figures.push(
            Figure::new(
                Scenario::Rate,
                format!("admitted at {per_second}/s"),
                measured,
                "/s",
            )
            .within(per_second, 0.01),
        );
    }
    Ok(figures)
}

/// Parks `count` waiters on a closed limit and reads the resident memory of
/// whoever holds them: the server (from its `/metrics`), or this process for
/// `memory://`. Over HTTP each waiter is an acquire answered with a ticket
/// at once (`wait_seconds: 0`), parked on the server until its ticket lapses.
async fn park(
    client: &Client,
    connection: &Connection,
    count: usize,
) -> Result<Vec<Figure>, Error> {
    let limit = BenchLimit::create(client, "park", LimitSpec::concurrency("", 0)).await?;
    let before = resident(client, connection).await?;
    let started = Instant::now();
    let parked: Vec<tokio::task::JoinHandle<Result<(), Error>>> =
        if connection.url.starts_with("http") {
            park_over_http(client, &limit.name, count).await?;
            Vec::new()
        } else {
            (0..count)
                .map(|_| {
                    let (client, name) = (client.clone(), limit.name.clone());
                    tokio::spawn(async move { client.concurrency(name).await.map(drop) })
                })
                .collect()
        };
    while (client.limit(&limit.name).await?.waiting as usize) < count
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting = client.limit(&limit.name).await?.waiting as f64;
    let after = resident(client, connection).await?;
    limit.delete().await?;
    for waiter in parked {
        let _ = waiter.await; // each fails with limit_deleted
    }
    let mib = after as f64 / f64::from(1 << 20);
    let per_waiter = after.saturating_sub(before) as f64 / waiting.max(1.0);
    Ok(vec![
        Figure::new(Scenario::Park, "waiters parked", waiting, "").at_least(count as f64),
        Figure::new(Scenario::Park, "resident memory", mib, "MiB").at_most(1024.0),
        Figure::new(Scenario::Park, "bytes per parked waiter", per_waiter, "B"),
    ])
}

/// Creates `args.limits` limits, holds `args.leases` leases (on a limit of
/// their own) and parks `args.waiters` waiters, reading the server's
/// resident memory after each; then measures churn beside them all.
async fn scale(
    players: &[Client],
    connection: &Connection,
    args: &BenchArgs,
) -> Result<Vec<Figure>, Error> {
    let client = &players[0];
    if !connection.url.starts_with("http") {
        return Err(Error::InvalidUrl(
            "scale measures a server: give its http:// URL".into(),
        ));
    }
    let run = format!("bench-scale-{}-{}", std::process::id(), unique());
    let mut figures = Vec::new();
    let mut memory = resident(client, connection).await?;
    let mut per_item = |what: &str, count: usize, now: u64, figures: &mut Vec<Figure>| {
        let bytes = now.saturating_sub(memory) as f64 / count.max(1) as f64;
        memory = now;
        figures.push(Figure::new(
            Scenario::Scale,
            format!("bytes per {what}"),
            bytes,
            "B",
        ));
    };

    let started = Instant::now();
    in_parallel(args.limits, |i| {
        let (client, name) = (client.clone(), format!("{run}-{i}"));
        async move {
            client
                .create_limit(LimitSpec::concurrency(name, 1))
                .await
                .map(drop)
        }
    })
    .await?;
    let per_second = args.limits as f64 / started.elapsed().as_secs_f64();
    figures.push(Figure::new(
        Scenario::Scale,
        "limits created",
        args.limits as f64,
        "",
    ));
    figures.push(Figure::new(
        Scenario::Scale,
        "limits created per s",
        per_second,
        "/s",
    ));
    per_item(
        "limit",
        args.limits,
        resident(client, connection).await?,
        &mut figures,
    );

    let held = format!("{run}-held");
    let slots = args.leases.max(1) as u64;
    client
        .create_limit(LimitSpec::concurrency(&held, slots))
        .await?;
    let body = AcquireBody {
        names: vec![held.clone()],
        occupy: 1,
        mode: AcquireMode::Concurrency,
        timeout_seconds: Some(0.0),
        lease_seconds: Some(600.0),
        holder: None,
        create_if_missing: false,
        wait_seconds: None,
    };
    in_parallel(args.leases, |_| {
        let (client, body) = (client.clone(), body.clone());
        async move { client.acquire_once(&body).await.map(drop) }
    })
    .await?;
    figures.push(Figure::new(
        Scenario::Scale,
        "live leases",
        args.leases as f64,
        "",
    ));
    per_item(
        "live lease",
        args.leases,
        resident(client, connection).await?,
        &mut figures,
    );

    let parked = format!("{run}-parked");
    client
        .create_limit(LimitSpec::concurrency(&parked, 0))
        .await?;
    park_over_http(client, &parked, args.waiters).await?;
    let waiting = client.limit(&parked).await?.waiting as usize;
    figures.push(Figure::new(
        Scenario::Scale,
        "parked waiters",
        waiting as f64,
        "",
    ));
    per_item(
        "parked waiter",
        waiting,
        resident(client, connection).await?,
        &mut figures,
    );

    figures.extend(churn(players, args.clients, Duration::from_secs_f64(args.seconds)).await?);
    if !args.keep {
        client.reset_limit(&held).await?;
        for name in [&held, &parked] {
            client.delete_limit(name).await?;
        }
        in_parallel(args.limits, |i| {
            let (client, name) = (client.clone(), format!("{run}-{i}"));
            async move { client.delete_limit(&name).await }
        })
        .await?;
    }
    Ok(figures)
}

/// Runs `task(0)` to `task(count - 1)`, 64 at a time.
async fn in_parallel<F, T>(count: usize, task: T) -> Result<(), Error>
where
    T: Fn(usize) -> F,
    F: Future<Output = Result<(), Error>> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for i in 0..count {
        if running.len() == 64 {
            running
                .join_next()
                .await
                .expect("a task")
                .expect("a task")?;
        }
        running.spawn(task(i));
    }
    while let Some(done) = running.join_next().await {
        done.expect("a task")?;
    }
    Ok(())
}

/// Sends `count` acquires that park at once (`wait_seconds: 0`), 64 at a
/// time.
async fn park_over_http(client: &Client, name: &str, count: usize) -> Result<(), Error> {
    let body = AcquireBody {
        names: vec![name.to_owned()],
        occupy: 1,
        mode: AcquireMode::Concurrency,
        timeout_seconds: None,
        lease_seconds: None,
        holder: None,
        create_if_missing: false,
        wait_seconds: Some(0.0),
    };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders: Vec<_> = (0..64)
        .map(|_| {
            let (client, body, next) = (client.clone(), body.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    match client.acquire_once(&body).await? {
                        AcquireAnswer::Waiting { .. } => {}
                        granted => {
                            return Err(Error::Protocol(format!(
                                "parking on a closed limit was answered {granted:?}"
                            )));
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("a sender")?;
    }
    Ok(())
}

/// The resident memory of whoever holds the waiters, in bytes: the server
/// (its `/metrics`), or this process for `memory://`.
async fn resident(client: &Client, connection: &Connection) -> Result<u64, Error> {
    if !connection.url.starts_with("http") {
        return ratekeeper_server::metrics::resident_bytes()
            .ok_or_else(|| Error::Protocol("this OS does not report resident memory".into()));
    }
    client
        .metrics()
        .await?
        .lines()
        .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| {
            Error::Protocol("the server's /metrics has no process_resident_memory_bytes".into())
        })
}
