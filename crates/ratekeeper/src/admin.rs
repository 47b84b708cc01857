//! The admin commands: `ratekeeper limit ...` and `ratekeeper leases`, over
//! the HTTP API.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use ratekeeper_client::Client;
use ratekeeper_client::api::{InstanceOrder, InstancePage, Lease, Limit, LimitDetails};
use ratekeeper_core::{Adaptive, LimitPatch, LimitSpec, PauseSpec};

use crate::failure::Failure;

/// Where the server is and how to talk to it.
#[derive(Debug, Args)]
pub struct Connection {
    /// The server's URL.
    #[arg(
        long,
        env = "RATEKEEPER_URL",
        default_value = "http://127.0.0.1:7171",
        global = true
    )]
    pub url: String,
    /// A bearer token, if the server requires one.
    #[arg(long, env = "RATEKEEPER_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Trust an `https://` server whose certificate this CA (PEM) signed.
    #[arg(long, env = "RATEKEEPER_CA_CERT", global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Present this client certificate and key (one PEM file) to a server
    /// that requires one.
    #[arg(long, env = "RATEKEEPER_CLIENT_CERT", global = true)]
    pub client_cert: Option<std::path::PathBuf>,
    /// `table` for people (default) or `json` for programs.
    #[arg(long, short, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The server's JSON.
    Json,
}

/// `ratekeeper limit ...`
#[derive(Debug, Subcommand)]
pub enum LimitCommand {
    /// Creates a limit.
    Create {
        /// Its name: 1–128 of `A-Z a-z 0-9 . _ - :`.
        name: String,
        /// How many slots may be occupied at once.
        #[arg(long)]
        slots: u64,
        /// Slots freed per second: makes it a rate limit.
        #[arg(long, default_value_t = 0.0)]
        decay: f64,
        /// Create it switched off.
        #[arg(long)]
        inactive: bool,
        /// Free text for people.
        #[arg(long)]
        description: Option<String>,
        /// For a template (a name ending in `*`, like `tenant:*`): how many
        /// keys may have an instance at once (default 100000).
        #[arg(long)]
        max_instances: Option<u64>,
        #[command(flatten)]
        adaptive: AdaptiveArgs,
    },
    /// Lists every limit; each template with its busiest instances under it.
    #[command(alias = "list")]
    Ls,
    /// Lists a template's instances, a page at a time.
    Instances {
        /// The template, like `tenant:*`.
        template: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Most occupied first, instead of by name.
        #[arg(long)]
        busiest: bool,
        /// Start after this instance (the last one of the page before).
        #[arg(long)]
        after: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Shows a limit with its leases and waiters.
    Inspect {
        /// The limit.
        name: String,
    },
    /// Changes a limit.
    Update {
        /// The limit.
        name: String,
        /// New slot count.
        #[arg(long)]
        slots: Option<u64>,
        /// New decay rate.
        #[arg(long)]
        decay: Option<f64>,
        /// New description ("" clears it).
        #[arg(long)]
        description: Option<String>,
        /// New bound on a template's instances.
        #[arg(long)]
        max_instances: Option<u64>,
        #[command(flatten)]
        adaptive: AdaptiveArgs,
        /// Make an adaptive limit fixed again, at its configured value.
        #[arg(long, conflicts_with = "adaptive")]
        fixed: bool,
    },
    /// Makes a limit enforce again.
    Enable {
        /// The limit.
        name: String,
    },
    /// Makes a limit pass everything through.
    Disable {
        /// The limit.
        name: String,
    },
    /// Deletes a limit; its waiters fail.
    Delete {
        /// The limit.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Pauses a limit: nothing is granted on it until the pause ends, then
    /// its queue is served from the head. A longer pause already set is
    /// kept. A client token may pause.
    Pause {
        /// The limit.
        name: String,
        /// How long, in seconds (above 0, at most 604800: 7 days).
        #[arg(long)]
        seconds: f64,
        /// Why, shown with the pause.
        #[arg(long)]
        reason: Option<String>,
        /// Who reports it (default: this host and process).
        #[arg(long)]
        reporter: Option<String>,
    },
    /// Ends a limit's pause now.
    Resume {
        /// The limit.
        name: String,
    },
    /// Revokes every lease on a limit and clears its decaying slots.
    Reset {
        /// The limit.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

/// The client for `connection`, at its URL or at `url`.
pub(crate) fn connect(
    connection: &Connection,
    url: Option<&str>,
) -> Result<Client, ratekeeper_client::Error> {
    let tls = ratekeeper_client::Tls {
        ca_cert: connection.ca_cert.clone(),
        identity: connection.client_cert.clone(),
    };
    let url = url.unwrap_or(&connection.url);
    Client::connect_with(url, connection.token.as_deref(), &tls)
}

/// The client for `connection`.
fn client(connection: &Connection) -> Result<Client, Failure> {
    Ok(connect(connection, None)?)
}

fn confirm(question: &str) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(format!(
            "{question} Refusing without --yes (stdin is not a terminal)"
        )));
    }
    print!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure::new("cancelled"))
    }
}

/// Runs a `limit` command.
pub async fn limit(connection: Connection, command: LimitCommand) -> Result<(), Failure> {
    let output = connection.output;
    let client = client(&connection)?;
    let changed: Limit = match command {
        LimitCommand::Create {
            name,
            slots,
            decay,
            inactive,
            description,
            max_instances,
            adaptive,
        } => {
            let spec = LimitSpec {
                name,
                slots,
                slot_decay_per_second: decay,
                active: !inactive,
                description,
                max_instances,
                adaptive: adaptive.settings(),
            };
            client.create_limit(spec).await?
        }
        LimitCommand::Ls => {
            let limits = client.limits().await?;
            if output == Output::Json {
                print_json(&limits);
                return Ok(());
            }
            // Each template with its busiest few instances under it.
            let mut rows = Vec::new();
            for limit in limits {
                let template = limit.template.is_some().then(|| limit.name.clone());
                rows.push(limit);
                if let Some(template) = template {
                    let busiest = InstancePage {
                        order: InstanceOrder::Busiest,
                        count: LS_INSTANCES,
                        ..InstancePage::default()
                    };
                    rows.extend(client.instances(&template, &busiest).await?.instances);
                }
            }
            print_limits(output, &rows);
            return Ok(());
        }
        LimitCommand::Instances {
            template,
            prefix,
            busiest,
            after,
            count,
        } => {
            let page = InstancePage {
                prefix,
                order: InstanceOrder::busiest_first(busiest),
                after,
                count,
            };
            let found = client.instances(&template, &page).await?;
            if output == Output::Json {
                print_json(&found);
            } else {
                print_limits(output, &found.instances);
                if let Some(next) = found.next_after {
                    out(&format!("\nmore: --after {next}\n"));
                }
            }
            return Ok(());
        }
        LimitCommand::Inspect { name } => {
            print_detail(output, &client.limit_details(&name).await?);
            return Ok(());
        }
        LimitCommand::Update {
            name,
            slots,
            decay,
            description,
            max_instances,
            adaptive,
            fixed,
        } => {
            let patch = LimitPatch {
                slots,
                slot_decay_per_second: decay,
                active: None,
                // "" clears it.
                description: description.map(|d| Some(d).filter(|d| !d.is_empty())),
                max_instances,
                adaptive: if fixed {
                    Some(None)
                } else {
                    adaptive.settings().map(Some)
                },
            };
            client.update_limit(&name, patch).await?
        }
        LimitCommand::Enable { name } => {
            let patch = LimitPatch {
                active: Some(true),
                ..LimitPatch::default()
            };
            client.update_limit(&name, patch).await?
        }
        LimitCommand::Disable { name } => {
            let patch = LimitPatch {
                active: Some(false),
                ..LimitPatch::default()
            };
            client.update_limit(&name, patch).await?
        }
        LimitCommand::Delete { name, yes } => {
            if !yes {
                confirm(&format!("Delete limit {name:?}? Its waiters will fail."))?;
            }
            client.delete_limit(&name).await?;
            if output == Output::Table {
                out(&format!("deleted {name}\n"));
            } else {
                out(&format!("{}\n", serde_json::json!({ "deleted": name })));
            }
            return Ok(());
        }
        LimitCommand::Pause {
            name,
            seconds,
            reason,
            reporter,
        } => {
            let pause = PauseSpec {
                reason,
                reporter: Some(reporter.unwrap_or_else(ratekeeper_client::reporter)),
                ..PauseSpec::for_seconds(seconds)
            };
            client.pause_limit(&name, pause).await?
        }
        LimitCommand::Resume { name } => client.resume_limit(&name).await?,
        LimitCommand::Reset { name, yes } => {
            if !yes {
                confirm(&format!(
                    "Reset limit {name:?}? Every lease on it is revoked."
                ))?;
            }
            client.reset_limit(&name).await?
        }
    };
    print_limits(output, &[changed]);
    Ok(())
}

/// `--adaptive` and its settings.
#[derive(Debug, clap::Args)]
pub struct AdaptiveArgs {
    /// Adapt to throttling reports: each report (a pause) lowers the rate
    /// or slots in force, which climb back to the configured value (AIMD).
    #[arg(long)]
    adaptive: bool,
    /// What each report multiplies the value in force by (default 0.7).
    #[arg(long, requires = "adaptive", value_name = "FACTOR")]
    decrease_factor: Option<f64>,
    /// Seconds to climb from nothing back to the configured value
    /// (default 30).
    #[arg(long, requires = "adaptive", value_name = "SECONDS")]
    recovery_seconds: Option<f64>,
}

impl AdaptiveArgs {
    fn settings(&self) -> Option<Adaptive> {
        let default = Adaptive::default();
        self.adaptive.then(|| Adaptive {
            decrease_factor: self.decrease_factor.unwrap_or(default.decrease_factor),
            recovery_seconds: self.recovery_seconds.unwrap_or(default.recovery_seconds),
        })
    }
}

/// How many instances `limit ls` shows under each template.
const LS_INSTANCES: usize = 5;

/// Runs `ratekeeper leases`.
pub async fn leases(connection: Connection, limit: Option<String>) -> Result<(), Failure> {
    let output = connection.output;
    let leases = client(&connection)?.leases(limit.as_deref()).await?;
    print_leases(output, &leases);
    Ok(())
}

/// Writes to stdout, quietly giving up if the reader went away (`| head`).
fn out(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn print_json(value: &impl serde::Serialize) {
    let json = serde_json::to_string_pretty(value).expect("serializes");
    out(&format!("{json}\n"));
}

fn print_limits(output: Output, limits: &[Limit]) {
    if output == Output::Json {
        return print_json(&limits);
    }
    let now = now_millis();
    let rows = limits.iter().map(|l| {
        vec![
            match (&l.template, &l.instance_of) {
                (Some(t), _) => format!("{} ({} instances)", l.name, t.instances),
                (_, Some(_)) => format!("  {}", l.name),
                _ => l.name.clone(),
            },
            l.slots.to_string(),
            if l.slot_decay_per_second > 0.0 {
                format!("{}/s", l.slot_decay_per_second)
            } else {
                "-".into()
            },
            if l.active { "yes" } else { "no" }.into(),
            l.adaptive.map_or("-".into(), |a| {
                if l.slot_decay_per_second > 0.0 {
                    format!("{:.3}/s", a.effective)
                } else {
                    format!("{} slots", a.effective)
                }
            }),
            l.paused.as_ref().map_or("-".into(), |p| {
                format!("for {}", seconds_between(now, p.until))
            }),
            l.held.to_string(),
            format!("{:.2}", l.decaying),
            l.waiting.to_string(),
            l.counters.granted_total.to_string(),
            l.description.clone().unwrap_or_default(),
        ]
    });
    let header = [
        "NAME",
        "SLOTS",
        "DECAY",
        "ACTIVE",
        "IN FORCE",
        "PAUSED",
        "HELD",
        "DECAYING",
        "WAITING",
        "GRANTED",
        "DESCRIPTION",
    ];
    out(&table(&header, rows));
}

fn print_detail(output: Output, detail: &LimitDetails) {
    if output == Output::Json {
        return print_json(detail);
    }
    print_limits(output, std::slice::from_ref(&detail.limit));
    if let Some(pause) = &detail.limit.paused {
        out(&format!(
            "\npaused for {} more, since {} ago, by {}: {}\n",
            seconds_between(now_millis(), pause.until),
            seconds_between(pause.since, now_millis()),
            pause.reporter.as_deref().unwrap_or("?"),
            pause.reason.as_deref().unwrap_or("no reason given"),
        ));
    }
    let c = &detail.limit.counters;
    out(&format!(
        "\ntotals: granted {} ({} slots), waited {}, expired {}, denied {}\n\nleases:\n",
        c.granted_total, c.granted_slots_total, c.waited_total, c.expired_total, c.denied_total
    ));
    print_leases(output, &detail.leases);
    out("\nwaiting:\n");
    let now = now_millis();
    let rows = detail.waiters.iter().enumerate().map(|(i, w)| {
        vec![
            (i + 1).to_string(),
            w.occupy.to_string(),
            format!("{:?}", w.mode).to_lowercase(),
            w.holder.clone().unwrap_or_default(),
            seconds_between(w.enqueued_at, now),
        ]
    });
    out(&table(
        &["POSITION", "OCCUPY", "MODE", "HOLDER", "WAITING FOR"],
        rows,
    ));
}

fn print_leases(output: Output, leases: &[Lease]) {
    if output == Output::Json {
        return print_json(&leases);
    }
    let now = now_millis();
    let rows = leases.iter().map(|l| {
        vec![
            l.id.clone(),
            l.limits.join(","),
            l.occupy.to_string(),
            l.holder.clone().unwrap_or_default(),
            seconds_between(l.granted_at, now),
            seconds_between(now, l.expires_at),
        ]
    });
    out(&table(
        &["LEASE", "LIMITS", "OCCUPY", "HOLDER", "AGE", "EXPIRES IN"],
        rows,
    ));
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn seconds_between(from_ms: u64, to_ms: u64) -> String {
    format!("{:.1}s", to_ms.saturating_sub(from_ms) as f64 / 1e3)
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}
