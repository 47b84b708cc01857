//! The admin commands: `ratekeeper limit ...` and `ratekeeper leases`, over
//! the HTTP API.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use ratekeeper_server::api::{CreateLimit, ErrorBody, Lease, Limit, LimitDetails, UpdateLimit};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

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
    },
    /// Lists every limit.
    #[command(alias = "list")]
    Ls,
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
    /// Revokes every lease on a limit and clears its decaying slots.
    Reset {
        /// The limit.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

/// A failed command: printed as one line, with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// The line.
    pub message: String,
    /// 1 when the server refused, 69 (EX_UNAVAILABLE) when it was
    /// unreachable.
    pub exit_code: u8,
}

fn failure(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        exit_code: 1,
    }
}

struct Api {
    http: reqwest::Client,
    connection: Connection,
}

impl Api {
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Option<T>, Failure> {
        let url = format!("{}{path}", self.connection.url.trim_end_matches('/'));
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.connection.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| Failure {
            message: format!(
                "cannot reach the ratekeeper server at {}: {}",
                self.connection.url,
                root_cause(&e)
            ),
            exit_code: 69,
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| failure(format!("reading the answer from {url}: {e}")))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => failure(format!("{} ({})", body.error.message, body.error.code)),
                Err(_) => failure(format!("the server answered {status} for {url}")),
            });
        }
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| failure(format!("unexpected answer from {url}: {e}")))
    }
}

fn root_cause(err: &dyn std::error::Error) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn path_of(name: &str) -> String {
    format!("/v1/limits/{}", ratekeeper_client::encoded_name(name))
}

fn confirm(question: &str) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(failure(format!(
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
        Err(failure("cancelled"))
    }
}

/// Runs a `limit` command.
pub async fn limit(connection: Connection, command: LimitCommand) -> Result<(), Failure> {
    let output = connection.output;
    let api = Api {
        http: reqwest::Client::new(),
        connection,
    };
    let patch = |patch: UpdateLimit| Some(serde_json::to_value(patch).expect("serializes"));
    let changed: Option<Limit> = match command {
        LimitCommand::Create {
            name,
            slots,
            decay,
            inactive,
            description,
        } => {
            let body = CreateLimit {
                name,
                slots,
                slot_decay_per_second: decay,
                active: !inactive,
                description,
            };
            let body = serde_json::to_value(body).expect("serializes");
            api.call(Method::POST, "/v1/limits", Some(body)).await?
        }
        LimitCommand::Ls => {
            let limits: Vec<Limit> = api
                .call(Method::GET, "/v1/limits", None)
                .await?
                .unwrap_or_default();
            print_limits(output, &limits);
            return Ok(());
        }
        LimitCommand::Inspect { name } => {
            let detail: LimitDetails = api
                .call(Method::GET, &path_of(&name), None)
                .await?
                .expect("a limit has a body");
            print_detail(output, &detail);
            return Ok(());
        }
        LimitCommand::Update {
            name,
            slots,
            decay,
            description,
        } => {
            let body = UpdateLimit {
                slots,
                slot_decay_per_second: decay,
                active: None,
                description,
            };
            api.call(Method::PATCH, &path_of(&name), patch(body))
                .await?
        }
        LimitCommand::Enable { name } => {
            let body = UpdateLimit {
                active: Some(true),
                ..UpdateLimit::default()
            };
            api.call(Method::PATCH, &path_of(&name), patch(body))
                .await?
        }
        LimitCommand::Disable { name } => {
            let body = UpdateLimit {
                active: Some(false),
                ..UpdateLimit::default()
            };
            api.call(Method::PATCH, &path_of(&name), patch(body))
                .await?
        }
        LimitCommand::Delete { name, yes } => {
            if !yes {
                confirm(&format!("Delete limit {name:?}? Its waiters will fail."))?;
            }
            api.call::<serde_json::Value>(Method::DELETE, &path_of(&name), None)
                .await?;
            if output == Output::Table {
                out(&format!("deleted {name}\n"));
            } else {
                out(&format!("{}\n", serde_json::json!({ "deleted": name })));
            }
            return Ok(());
        }
        LimitCommand::Reset { name, yes } => {
            if !yes {
                confirm(&format!(
                    "Reset limit {name:?}? Every lease on it is revoked."
                ))?;
            }
            api.call(Method::POST, &format!("{}/reset", path_of(&name)), None)
                .await?
        }
    };
    if let Some(limit) = changed {
        print_limits(output, &[limit]);
    }
    Ok(())
}

/// Runs `ratekeeper leases`.
pub async fn leases(connection: Connection, limit: Option<String>) -> Result<(), Failure> {
    let output = connection.output;
    let api = Api {
        http: reqwest::Client::new(),
        connection,
    };
    let path = match &limit {
        Some(name) => format!("/v1/leases?limit={}", ratekeeper_client::encoded_name(name)),
        None => "/v1/leases".into(),
    };
    let leases: Vec<Lease> = api
        .call(Method::GET, &path, None)
        .await?
        .unwrap_or_default();
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
    let rows = limits.iter().map(|l| {
        vec![
            l.name.clone(),
            l.slots.to_string(),
            if l.slot_decay_per_second > 0.0 {
                format!("{}/s", l.slot_decay_per_second)
            } else {
                "-".into()
            },
            if l.active { "yes" } else { "no" }.into(),
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
