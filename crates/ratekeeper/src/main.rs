//! `ratekeeper`: the server and the admin CLI in one binary.

mod admin;
mod bench;
mod failure;
mod logs;
mod run;
mod serve;
mod store;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::failure::Failure;

/// The server allocates for every request (headers, JSON, records); under
/// load glibc's allocator took a tenth of its CPU time, and mimalloc raised
/// churn throughput by about a third (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Global concurrency limits and rate limits, shared by every thread,
/// process and machine that asks.
#[derive(Debug, Parser)]
#[command(name = "ratekeeper", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// What to log, as a tracing filter: a level (`error`, `warn`, `info`,
    /// `debug`, `trace`) or per module (`info,ratekeeper_server=debug`).
    /// Default: `info` for `serve` (its startup and one line per request
    /// at `info` of `ratekeeper::access`), `warn` otherwise.
    #[arg(long, env = "RATEKEEPER_LOG", global = true)]
    log: Option<String>,
    /// How logs are written to stderr: `text` (colours only on a
    /// terminal) or `json` (one object per line).
    #[arg(long, env = "RATEKEEPER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// For people; coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs to stderr as `format` says, filtered by `filter`. Lines are
/// formatted where they happen and written a batch at a time by a thread of
/// their own (see [`logs`]): a server writing its access log from the
/// request path spent about a tenth of its CPU under churn on one `write`
/// per request. The lines are written out when the returned guard is
/// dropped.
fn init_logs(filter: &str, format: LogFormat) -> Result<logs::Logs, Failure> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| {
        Failure::usage(format!(
            "invalid --log / RATEKEEPER_LOG filter {filter:?}: {e}"
        ))
    })?;
    let (writer, guard) = logs::stderr();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    Ok(guard)
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server (embedded store by default).
    Serve(Box<serve::ServeArgs>),
    /// Creates, lists, inspects, changes and deletes limits.
    Limit {
        #[command(flatten)]
        connection: admin::Connection,
        #[command(subcommand)]
        command: admin::LimitCommand,
    },
    /// Holds slots while a command runs: `ratekeeper run --limit db -- CMD ARGS...`.
    Run(run::RunArgs),
    /// Measures a server (or `memory://`): seed, handoff, churn, rate.
    Bench(bench::BenchArgs),
    /// Checks or recovers the embedded store's files (no server running).
    Store(store::StoreArgs),
    /// Prints a shell completion script: `ratekeeper completions bash >
    /// /etc/bash_completion.d/ratekeeper` (or zsh, fish, elvish,
    /// powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Prints a manual page (roff): `ratekeeper man > ratekeeper.1`, or a
    /// command's: `ratekeeper man serve > ratekeeper-serve.1`.
    Man {
        /// The command whose page to print (`serve`, `limit`, ...).
        command: Option<String>,
    },
    /// Lists live leases: who holds what.
    Leases {
        #[command(flatten)]
        connection: admin::Connection,
        /// Only leases on this limit.
        #[arg(long)]
        limit: Option<String>,
    },
}

/// Writes the manual page of the binary, or of one of its commands, to
/// stdout.
fn manual(command: Option<&str>) -> Result<(), Failure> {
    let mut root = <Cli as clap::CommandFactory>::command();
    root.build();
    let page = match command {
        None => root,
        Some(name) => {
            let found = root
                .get_subcommands()
                .find(|c| c.get_name() == name)
                .cloned()
                .ok_or_else(|| {
                    Failure::usage(format!(
                        "no command is named {name:?}; see `ratekeeper --help`"
                    ))
                })?;
            found.name(format!("ratekeeper-{name}"))
        }
    };
    match clap_mangen::Man::new(page).render(&mut std::io::stdout()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::new(format!("cannot write the manual page: {e}")))
        }
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let logs = match init_logs(cli.log.as_deref().unwrap_or(default), cli.log_format) {
        Ok(guard) => guard,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            return ExitCode::from(failure.exit_code);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Limit {
                connection,
                command,
            } => admin::limit(connection, command).await,
            Command::Leases { connection, limit } => admin::leases(connection, limit).await,
            Command::Run(args) => return run::run(args).await,
            Command::Store(args) => store::run(args),
            Command::Bench(args) => bench::run(args).await,
            Command::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "ratekeeper", &mut std::io::stdout());
                Ok(())
            }
            Command::Man { command } => manual(command.as_deref()),
        }
        .map(|()| 0)
    });
    // Every line logged is out before the last word.
    drop(logs);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.exit_code)
        }
    }
}
