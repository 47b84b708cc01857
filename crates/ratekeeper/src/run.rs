//! `ratekeeper run`: hold slots while a command runs.
//!
//! The lease is taken before the command starts and renewed while it runs;
//! it is released however the command ends. Signals sent to `ratekeeper`
//! are passed on to the command, and `ratekeeper` exits with the command's
//! status (128 + N if a signal N ended it). If the slots are not granted,
//! the command does not run: a timeout exits 75 (`EX_TEMPFAIL`), an
//! unreachable server 69 (`EX_UNAVAILABLE`), anything else the server
//! refused 1.

use std::io::IsTerminal;
use std::process::ExitStatus;
use std::time::Duration;

use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ratekeeper_client::{Client, Error, LeaseGuard};
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::Connection;
use crate::failure::{EXIT_CANNOT_RUN, EXIT_FAILED, EXIT_TIMED_OUT, EXIT_UNAVAILABLE, Failure};

/// The flags of `ratekeeper run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    connection: Connection,
    /// A concurrency limit to hold while the command runs, with the slots
    /// to hold (default 1). May be repeated; all are taken at once.
    #[arg(long = "limit", value_name = "NAME[:N]")]
    limits: Vec<String>,
    /// A rate limit to pass before the command starts (N slots, default 1).
    /// May be repeated.
    #[arg(long = "rate", value_name = "NAME[:N]")]
    rates: Vec<String>,
    /// Give up after waiting this many seconds in all.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// A label for the lease, shown by `ratekeeper leases` (default: host
    /// and pid).
    #[arg(long)]
    holder: Option<String>,
    /// The lease's TTL in seconds; it is renewed while the command runs, and
    /// a crashed `ratekeeper run` frees its slots within it.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    lease_seconds: f64,
    /// The exit code by which the command says its upstream answered "slow
    /// down" (a 429). Every `--limit` and `--rate` is then reported
    /// throttled, so that every other `ratekeeper run` on them backs off
    /// too: paused for the `Retry-After` the command wrote (seconds or an
    /// HTTP date) to the file named by `$RATEKEEPER_RETRY_AFTER_FILE`
    /// (without one, a fixed limit pauses a second and an adaptive one
    /// slows down). `ratekeeper` still exits with the command's code.
    #[arg(long, value_name = "CODE")]
    throttled_exit_code: Option<u8>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `NAME[:N]` split into its name and slots.
fn parse_claim(text: &str) -> Result<(String, u64), Failure> {
    match text.rsplit_once(':') {
        Some((name, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let n = n
                .parse()
                .map_err(|_| usage(format!("{text:?}: too many slots")))?;
            Ok((name.to_owned(), n))
        }
        _ => Ok((text.to_owned(), 1)),
    }
}

fn usage(message: String) -> Failure {
    Failure::usage(message)
}

/// The requests to make for `claims`. With one slot count for all names,
/// one request takes them all at once. With different counts (which one
/// request cannot express), each name is its own request, taken in name
/// order: every `ratekeeper run` then takes limits in the same order, so
/// two of them can never each hold what the other waits for.
fn requests(claims: &[String]) -> Result<Vec<(Vec<String>, u64)>, Failure> {
    let mut parsed = claims
        .iter()
        .map(|claim| parse_claim(claim))
        .collect::<Result<Vec<_>, _>>()?;
    parsed.sort();
    let Some(&(_, first)) = parsed.first() else {
        return Ok(Vec::new());
    };
    if parsed.iter().all(|&(_, n)| n == first) {
        return Ok(vec![(
            parsed.into_iter().map(|(name, _)| name).collect(),
            first,
        )]);
    }
    Ok(parsed
        .into_iter()
        .map(|(name, n)| (vec![name], n))
        .collect())
}

fn refused(err: Error, what: &str, timeout: Option<f64>) -> Failure {
    match err {
        Error::Timeout | Error::WouldBlock => Failure {
            message: format!(
                "not running the command: {what} not granted within {} s",
                timeout.unwrap_or(0.0)
            ),
            exit_code: EXIT_TIMED_OUT,
        },
        err if err.is_transient() => Failure {
            message: format!("not running the command: {err}"),
            exit_code: EXIT_UNAVAILABLE,
        },
        err => Failure {
            message: format!("not running the command: {err}"),
            exit_code: EXIT_FAILED,
        },
    }
}

/// Runs `ratekeeper run`; returns the exit code.
pub async fn run(args: RunArgs) -> Result<u8, Failure> {
    let client = crate::admin::connect(&args.connection, None).map_err(|e| usage(e.to_string()))?;
    if args.limits.is_empty() && args.rates.is_empty() {
        return Err(usage("give at least one --limit or --rate".into()));
    }
    let ttl = Duration::try_from_secs_f64(args.lease_seconds).map_err(|_| {
        usage(format!(
            "--lease-seconds {}: not a number of seconds",
            args.lease_seconds
        ))
    })?;
    let holder = args.holder.clone().unwrap_or_else(|| {
        format!(
            "{}:{} ({})",
            ratekeeper_client::host_name(),
            std::process::id(),
            args.command[0]
        )
    });
    let report = args.throttled_exit_code.map(ThrottleReport::new);
    let mut leases: Vec<LeaseGuard> = Vec::new();
    let granted = take_slots(&client, &args, ttl, &holder, &mut leases).await;
    let status = match granted {
        Ok(()) => supervise(&args.command, &leases, report.as_ref()).await,
        Err(failure) => Err(failure),
    };
    if let (Some(report), Ok(status)) = (&report, &status) {
        report.after(&client, &args, *status).await;
    }
    // Released here, not on drop: a drop would release in the background,
    // and this process is about to end.
    for lease in leases {
        if let Err(err) = lease.release().await {
            eprintln!("ratekeeper run: releasing the slots: {err}");
        }
    }
    status.map(exit_code)
}

/// Takes every lease (into `leases`, so that the caller releases whatever
/// was taken even on failure) and passes every rate limit.
async fn take_slots(
    client: &Client,
    args: &RunArgs,
    ttl: Duration,
    holder: &str,
    leases: &mut Vec<LeaseGuard>,
) -> Result<(), Failure> {
    let timeout = args
        .timeout
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| usage(format!("--timeout {s}: not a number of seconds")))
        })
        .transpose()?;
    let started = tokio::time::Instant::now();
    let remaining = || timeout.map(|t| t.saturating_sub(started.elapsed()));
    for (names, occupy) in requests(&args.limits)? {
        let request = client
            .concurrency(names.clone())
            .occupy(occupy)
            .lease(ttl)
            .holder(holder)
            .timeout(remaining());
        let what = format!("{} slot(s) on {}", occupy, names.join(", "));
        leases.push(request.await.map_err(|e| refused(e, &what, args.timeout))?);
    }
    for (names, occupy) in requests(&args.rates)? {
        let request = client
            .rate_limit(names.clone())
            .occupy(occupy)
            .timeout(remaining());
        let what = format!("rate of {}", names.join(", "));
        request.await.map_err(|e| refused(e, &what, args.timeout))?;
    }
    Ok(())
}

/// Runs the command, passing signals on, until it exits. Says so on stderr
/// if a lease is lost meanwhile: the command is then no longer protected.
async fn supervise(
    command: &[String],
    leases: &[LeaseGuard],
    report: Option<&ThrottleReport>,
) -> Result<ExitStatus, Failure> {
    let mut child = tokio::process::Command::new(&command[0]);
    child.args(&command[1..]);
    if let Some(report) = report {
        child.env(RETRY_AFTER_FILE, &report.file);
    }
    let mut child = child.spawn().map_err(|e| Failure {
        message: format!("cannot run {:?}: {e}", command[0]),
        exit_code: EXIT_CANNOT_RUN,
    })?;
    let pid = Pid::from_raw(child.id().expect("a running child has a pid") as i32);
    let mut signals = Forwarded::new().map_err(|e| usage(format!("cannot handle signals: {e}")))?;
    let lost = async {
        match leases.first() {
            Some(_) => first_of(leases.iter().map(|l| Box::pin(l.lost()))).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lost);
    let mut warned = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                return status.map_err(|e| usage(format!("waiting for the command: {e}")));
            }
            signal = signals.next() => {
                let _ = kill(pid, signal);
            }
            err = &mut lost, if !warned => {
                warned = true;
                eprintln!("ratekeeper run: WARNING: the command's slots were lost ({err}); it is no longer limited");
            }
        }
    }
}

/// The output of whichever future finishes first.
async fn first_of<F: std::future::Future + Unpin>(
    futures: impl IntoIterator<Item = F>,
) -> F::Output {
    let mut futures: Vec<F> = futures.into_iter().collect();
    std::future::poll_fn(|cx| {
        for future in &mut futures {
            if let std::task::Poll::Ready(output) = std::pin::Pin::new(future).poll(cx) {
                return std::task::Poll::Ready(output);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The signals passed on to the command. A Ctrl-C typed in a terminal
/// reaches the command directly (it is in the terminal's foreground process
/// group), so SIGINT is passed on only when stdin is not a terminal.
struct Forwarded {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Forwarded {
    fn new() -> std::io::Result<Self> {
        let mut kinds = vec![
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
        ];
        if !std::io::stdin().is_terminal() {
            kinds.push(Signal::SIGINT);
        }
        let mut streams = Vec::new();
        for kind in kinds {
            streams.push((kind, signal(SignalKind::from_raw(kind as i32))?));
        }
        if std::io::stdin().is_terminal() {
            // Still handled, so that Ctrl-C does not kill us before the
            // command ends and the slots are released.
            streams.push((Signal::SIGINT, signal(SignalKind::interrupt())?));
        }
        Ok(Forwarded { streams })
    }

    /// The next signal to pass on.
    async fn next(&mut self) -> Signal {
        let interactive = std::io::stdin().is_terminal();
        loop {
            let received = std::future::poll_fn(|cx| {
                for (kind, stream) in &mut self.streams {
                    if stream.poll_recv(cx).is_ready() {
                        return std::task::Poll::Ready(*kind);
                    }
                }
                std::task::Poll::Pending
            })
            .await;
            if !(interactive && received == Signal::SIGINT) {
                return received;
            }
        }
    }
}

fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128 + signal as u8,
        (None, None) => 1,
    }
}

/// Where the command may write its upstream's `Retry-After`.
const RETRY_AFTER_FILE: &str = "RATEKEEPER_RETRY_AFTER_FILE";

/// `--throttled-exit-code`: which exit means "the upstream said slow
/// down", and the file the command may write its `Retry-After` to.
struct ThrottleReport {
    code: u8,
    file: std::path::PathBuf,
}

impl ThrottleReport {
    fn new(code: u8) -> Self {
        let file =
            std::env::temp_dir().join(format!("ratekeeper-run-{}.retry-after", std::process::id()));
        let _ = std::fs::remove_file(&file);
        ThrottleReport { code, file }
    }

    /// Reports every limit of the run throttled if the command exited with
    /// the code.
    async fn after(&self, client: &Client, args: &RunArgs, status: ExitStatus) {
        let written = std::fs::read_to_string(&self.file).ok();
        let _ = std::fs::remove_file(&self.file);
        if status.code() != Some(i32::from(self.code)) {
            return;
        }
        let wait = written
            .as_deref()
            .and_then(|v| {
                ratekeeper_client::api::parse_retry_after(v, std::time::SystemTime::now())
            })
            .filter(|wait| !wait.is_zero());
        let reason = format!(
            "{:?} exited {} (throttled by its upstream)",
            args.command[0], self.code
        );
        for claim in args.limits.iter().chain(&args.rates) {
            let Ok((name, _)) = parse_claim(claim) else {
                continue;
            };
            if let Err(err) = client.report_throttled(&name, wait, reason.clone()).await {
                eprintln!("ratekeeper run: reporting throttling on {name}: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(texts: &[&str]) -> Vec<(Vec<String>, u64)> {
        let owned: Vec<String> = texts.iter().map(|t| (*t).into()).collect();
        requests(&owned).unwrap()
    }

    #[test]
    fn one_slot_count_makes_one_all_or_nothing_request() {
        assert_eq!(
            claims(&["vendor:api:2", "db:2"]),
            [(vec!["db".into(), "vendor:api".into()], 2)]
        );
        assert_eq!(claims(&["db"]), [(vec!["db".into()], 1)]);
        assert!(claims(&[]).is_empty());
    }

    #[test]
    fn mixed_slot_counts_take_one_name_at_a_time_in_name_order() {
        assert_eq!(
            claims(&["zeta:1", "alpha:3", "tag:x"]),
            [
                (vec!["alpha".into()], 3),
                (vec!["tag:x".into()], 1),
                (vec!["zeta".into()], 1)
            ]
        );
    }
}
