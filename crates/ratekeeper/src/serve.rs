//! `ratekeeper serve`: settings from a config file, `RATEKEEPER_*`
//! environment variables and flags (each overriding the one before), then
//! the server until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use figment::Figment;
use figment::providers::Serialized;
use ratekeeper_backend::{Backend, Embedded};
use ratekeeper_redis::{MAX_PARTITIONS, Options, RedisBackend};
use ratekeeper_server::{
    Budget, HistoryConfig, HostPolicy, Scope, ServerConfig, ServerTls, TlsFiles, Token, Tokens,
};
use serde::{Deserialize, Serialize};

use crate::failure::{Context, Failure, fail};

/// Where the state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// A redb file under the data directory; every grant is on disk before
    /// it is acknowledged.
    Disk,
    /// Memory only: faster, and forgotten on restart.
    Memory,
}

/// The settings of `ratekeeper serve`, each defined once: a field here is
/// a flag (`--max-tickets`), an environment variable
/// (`RATEKEEPER_MAX_TICKETS`) and a key of the config file
/// (`max_tickets`). A flag or variable overrides the file; lists
/// (`allowed_hosts`, tokens) add up.
#[derive(Debug, Default, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// Address to listen on, `host:port`: an IP or a name
    /// (`localhost:7171`; default `127.0.0.1:7171`). Port 0 picks a free
    /// port.
    #[arg(long, env = "RATEKEEPER_ADDR")]
    addr: Option<String>,
    /// Directory of the embedded store (default `ratekeeper-data`).
    #[arg(long, env = "RATEKEEPER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// `disk` (default) or `memory`.
    #[arg(long, env = "RATEKEEPER_DURABILITY")]
    durability: Option<Durability>,
    /// Keep the state in Redis instead (`redis://host:port/db`,
    /// `rediss://...` for TLS, `redis+unix:///path`; a Redis Cluster by any
    /// node's URL or several, comma-separated), shared by every server
    /// pointed at it.
    #[arg(long, env = "RATEKEEPER_STORE")]
    store: Option<String>,
    /// With --store: the Redis keys' prefix (default `ratekeeper`). Servers
    /// share state only with those of the same prefix.
    #[arg(long, env = "RATEKEEPER_STORE_PREFIX")]
    store_prefix: Option<String>,
    /// With --store, for a new store: how many partitions (hash slots) its
    /// limits are spread over, 1 to 32 (default: 1 on a single Redis, 16
    /// on a cluster). A store keeps the count it was first given.
    #[arg(long, env = "RATEKEEPER_STORE_PARTITIONS")]
    store_partitions: Option<u32>,
    /// A TOML file with any of these settings (named with underscores:
    /// `max_tickets = 500`), and `[[tokens]]`.
    #[arg(long, env = "RATEKEEPER_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// A token with the admin scope (may be repeated).
    #[arg(long, env = "RATEKEEPER_ADMIN_TOKEN", value_delimiter = ',')]
    #[serde(default)]
    admin_token: Vec<String>,
    /// A token with the client scope: acquire, renew, release, read.
    #[arg(long, env = "RATEKEEPER_CLIENT_TOKEN", value_delimiter = ',')]
    #[serde(default)]
    client_token: Vec<String>,
    /// Allow a non-loopback address without any token.
    #[arg(long, env = "RATEKEEPER_INSECURE")]
    #[serde(default)]
    insecure: bool,
    /// Host names this server is reached by besides localhost, 127.0.0.1
    /// and ::1 (comma-separated), e.g. a reverse proxy's. On a loopback
    /// address other names are refused (DNS rebinding); web pages of other
    /// sites than these and the server itself are refused everywhere.
    #[arg(long, env = "RATEKEEPER_ALLOWED_HOSTS", value_delimiter = ',')]
    #[serde(default)]
    allowed_hosts: Vec<String>,
    /// The longest one HTTP request waits before answering with a ticket
    /// (default 20).
    #[arg(long, env = "RATEKEEPER_MAX_WAIT_SECONDS")]
    max_wait_seconds: Option<f64>,
    /// How long a ticket keeps its place without anyone waiting on it
    /// (default 10).
    #[arg(long, env = "RATEKEEPER_TICKET_LAPSE_SECONDS")]
    ticket_lapse_seconds: Option<f64>,
    /// The largest request body accepted, in bytes (default 65 536).
    #[arg(long, env = "RATEKEEPER_BODY_LIMIT_BYTES")]
    body_limit_bytes: Option<usize>,
    /// Connections open at once (default 10 000); one more is answered 503
    /// and closed. Keep it below the process's file descriptor limit.
    #[arg(long, env = "RATEKEEPER_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// How long a connection may take to send a request's headers, or sit
    /// idle between requests, before it is closed (default 30).
    #[arg(long, env = "RATEKEEPER_HEADER_TIMEOUT_SECONDS")]
    header_timeout_seconds: Option<f64>,
    /// How long a request's body may take to arrive (default 30).
    #[arg(long, env = "RATEKEEPER_BODY_TIMEOUT_SECONDS")]
    body_timeout_seconds: Option<f64>,
    /// How many may watch /v1/events at once (default 256): each costs
    /// about a microsecond per change.
    #[arg(long, env = "RATEKEEPER_MAX_EVENT_SUBSCRIBERS")]
    max_event_subscribers: Option<usize>,
    /// Serve HTTPS with this certificate chain (PEM, the server's own
    /// certificate first); needs --tls-key.
    #[arg(long, env = "RATEKEEPER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "RATEKEEPER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require clients to present a certificate signed by this CA (PEM).
    #[arg(long, env = "RATEKEEPER_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Tickets parked at once on this server, whoever asked (default
    /// 100 000); one more is answered 503 `too_many_tickets`.
    #[arg(long, env = "RATEKEEPER_MAX_TICKETS")]
    max_tickets: Option<usize>,
    /// Tickets one client token may have parked at once (default 10 000);
    /// one more is answered 429 `quota_exceeded`. A token in the config
    /// file may set its own `max_tickets`.
    #[arg(long, env = "RATEKEEPER_MAX_TICKETS_PER_TOKEN")]
    max_tickets_per_token: Option<usize>,
    /// Leases one client token may hold at once (default 100 000); an
    /// acquire beyond is answered 429 `quota_exceeded`. A token in the
    /// config file may set its own `max_leases`.
    #[arg(long, env = "RATEKEEPER_MAX_LEASES_PER_TOKEN")]
    max_leases_per_token: Option<usize>,
    /// How far back each limit's history reaches, for
    /// /v1/limits/NAME/history and the web UI's charts (default 900: 15
    /// minutes, about 18 KB per limit); 0 keeps none.
    #[arg(long, env = "RATEKEEPER_HISTORY_SECONDS")]
    history_seconds: Option<u64>,
    /// How many limits have a history (default 1 000; those sampled first
    /// keep it, then the others by name).
    #[arg(long, env = "RATEKEEPER_HISTORY_LIMITS")]
    history_limits: Option<usize>,
    /// Tokens with their scope and quotas: only in the config file.
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    tokens: Vec<Token>,
}

/// Settings after the file, environment and flags were combined.
struct Settings {
    addr: SocketAddr,
    data_dir: PathBuf,
    durability: Durability,
    /// A Redis URL, if the state lives in Redis.
    store: Option<String>,
    /// The Redis keys' prefix.
    store_prefix: String,
    /// How many partitions a new Redis store gets; `None`: the default.
    store_partitions: Option<u32>,
    insecure: bool,
    /// Where the TLS material is, read again on SIGHUP.
    tls: Option<TlsFiles>,
    server: ServerConfig,
}

/// `args` (flags and environment) over the config file they name, if any.
fn layered(args: ServeArgs) -> Result<ServeArgs, Failure> {
    let Some(path) = args.config.clone() else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let file: toml::Table =
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    // What was not given on the command line or in the environment is
    // null (or false), and must not hide the file's value.
    let mut given = serde_json::to_value(&args).expect("settings serialize");
    if let serde_json::Value::Object(fields) = &mut given {
        fields.retain(|_, value| !value.is_null() && *value != serde_json::Value::Bool(false));
    }
    let mut merged: ServeArgs = Figment::from(Serialized::defaults(file))
        .admerge(Serialized::defaults(given))
        .extract()
        .map_err(|errors| {
            let problems: Vec<String> = errors
                .into_iter()
                .map(|e| match e.path.last() {
                    Some(key) => format!("{key}: {}", e.kind),
                    None => e.kind.to_string(),
                })
                .collect();
            Failure::new(format!(
                "invalid config file {}: {}",
                path.display(),
                problems.join("; ")
            ))
        })?;
    merged.config = Some(path);
    Ok(merged)
}

/// The address to listen on for `host:port`, a name or an IP; of the
/// addresses a name has, the first IPv4 one (what `localhost` is usually
/// reached by), else the first.
fn resolve(asked: &str) -> Result<SocketAddr, Failure> {
    use std::net::ToSocketAddrs;
    let found: Vec<SocketAddr> = asked
        .to_socket_addrs()
        .with_context(|| {
            format!(
                "cannot listen on {asked:?}: expected host:port, such as 127.0.0.1:7171, \
                 [::1]:7171 or localhost:7171"
            )
        })?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| Failure::new(format!("{asked:?} resolves to no address")))
}

fn duration(field: &str, seconds: f64) -> Result<Duration, Failure> {
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => fail!("{field} must be a positive number of seconds, not {seconds}"),
    }
}

impl ServeArgs {
    fn settings(self) -> Result<Settings, Failure> {
        let given = layered(self)?;
        let mut tokens = given.tokens;
        let flag_tokens = |secrets: Vec<String>, scope| {
            secrets
                .into_iter()
                .map(move |secret| Token::new(secret, scope))
        };
        tokens.extend(flag_tokens(given.admin_token, Scope::Admin));
        tokens.extend(flag_tokens(given.client_token, Scope::Client));
        for token in tokens.iter_mut().filter(|t| t.scope == Scope::Client) {
            token.max_tickets = token.max_tickets.or(given.max_tickets_per_token);
            token.max_leases = token.max_leases.or(given.max_leases_per_token);
        }
        let defaults = ServerConfig::default();
        let addr = match &given.addr {
            Some(asked) => resolve(asked)?,
            None => SocketAddr::from(([127, 0, 0, 1], 7171)),
        };
        let mut allowed_hosts = given.allowed_hosts;
        // A server listening by a name is reached by that name.
        if let Some((host, _)) = given.addr.as_deref().and_then(|a| a.rsplit_once(':'))
            && host.parse::<std::net::IpAddr>().is_err()
            && !host.starts_with('[')
        {
            allowed_hosts.push(host.to_owned());
        }
        let hosts = if addr.ip().is_loopback() {
            HostPolicy::loopback(&allowed_hosts)
        } else {
            HostPolicy::any(&allowed_hosts)
        };
        let tls = match (given.tls_cert, given.tls_key, given.tls_client_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            _ => fail!("TLS needs both a certificate and its key (--tls-cert and --tls-key)"),
        };
        let at_least_one = |field: &str, value: Option<usize>, default: usize| match value {
            Some(0) => Err(Failure::new(format!("{field} must be at least 1"))),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let seconds = |field: &str, value: Option<f64>, default: Duration| match value {
            Some(s) => duration(field, s),
            None => Ok(default),
        };
        let server = ServerConfig {
            tls: match &tls {
                Some(files) => Some(ServerTls::new(files.load().map_err(Failure::of)?)),
                None => None,
            },
            tokens: Tokens::new(tokens).map_err(Failure::of)?,
            max_wait: seconds(
                "max_wait_seconds",
                given.max_wait_seconds,
                defaults.max_wait,
            )?,
            ticket_lapse: seconds(
                "ticket_lapse_seconds",
                given.ticket_lapse_seconds,
                defaults.ticket_lapse,
            )?,
            body_limit: at_least_one(
                "body_limit_bytes",
                given.body_limit_bytes,
                defaults.body_limit,
            )?,
            hosts,
            budget: Budget {
                max_connections: at_least_one(
                    "max_connections",
                    given.max_connections,
                    defaults.budget.max_connections,
                )?,
                header_timeout: seconds(
                    "header_timeout_seconds",
                    given.header_timeout_seconds,
                    defaults.budget.header_timeout,
                )?,
                body_timeout: seconds(
                    "body_timeout_seconds",
                    given.body_timeout_seconds,
                    defaults.budget.body_timeout,
                )?,
                ..defaults.budget
            },
            max_event_subscribers: given
                .max_event_subscribers
                .unwrap_or(defaults.max_event_subscribers),
            max_tickets: at_least_one("max_tickets", given.max_tickets, defaults.max_tickets)?,
            history: HistoryConfig {
                window: given
                    .history_seconds
                    .map_or(defaults.history.window, Duration::from_secs),
                max_limits: given.history_limits.unwrap_or(defaults.history.max_limits),
            },
        };
        Ok(Settings {
            addr,
            data_dir: given
                .data_dir
                .unwrap_or_else(|| PathBuf::from("ratekeeper-data")),
            durability: given.durability.unwrap_or(Durability::Disk),
            store: given.store,
            store_prefix: given.store_prefix.unwrap_or_else(|| "ratekeeper".into()),
            store_partitions: given.store_partitions,
            tls,
            insecure: given.insecure,
            server,
        })
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> Result<(), Failure> {
    let settings = args.settings()?;
    if !settings.addr.ip().is_loopback() && !settings.server.tokens.required() && !settings.insecure
    {
        fail!(
            "refusing to listen on {} without a token: anyone who can reach it could change your limits. \
             Configure --admin-token (and --client-token), or pass --insecure",
            settings.addr
        );
    }
    if let Some(url) = &settings.store {
        let shown = redacted(url);
        if let Some(part) = url.split(',').map(str::trim).find(|part| {
            !["redis://", "rediss://", "redis+unix://"]
                .iter()
                .any(|scheme| part.starts_with(scheme))
        }) {
            fail!(
                "--store must be a redis://, rediss:// or redis+unix:// URL, or several redis:// URLs \
                 separated by commas (a cluster's nodes), not {:?}",
                redacted(part)
            );
        }
        let prefix = &settings.store_prefix;
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            fail!("--store-prefix must be non-empty and without braces, not {prefix:?}");
        }
        if let Some(count) = settings.store_partitions
            && !(1..=MAX_PARTITIONS).contains(&count)
        {
            fail!("--store-partitions must be 1 to {MAX_PARTITIONS}, not {count}");
        }
        let options = Options {
            prefix: Some(prefix.clone()),
            partitions: settings.store_partitions,
            ..Options::default()
        };
        let backend = RedisBackend::connect_with(url, options)
            .await
            .with_context(|| format!("cannot use the Redis store at {shown}"))?;
        let store = format!(
            "state in Redis at {shown}, prefix {prefix}, {} partition(s)",
            backend.partitions()
        );
        return serve(settings, backend, &store).await;
    }
    match settings.durability {
        Durability::Disk => {
            let backend = Embedded::open(&settings.data_dir).map_err(Failure::of)?;
            backend.run_timer_on(tokio::runtime::Handle::current());
            let store = format!("store in {}", settings.data_dir.display());
            serve(settings, backend, &store).await
        }
        Durability::Memory => {
            let backend = Embedded::in_memory();
            backend.run_timer_on(tokio::runtime::Handle::current());
            serve(settings, backend, "in memory only (--durability memory)").await
        }
    }
}

async fn serve<B: Backend>(settings: Settings, backend: B, store: &str) -> Result<(), Failure> {
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.addr))?;
    let addr = listener
        .local_addr()
        .context("cannot read the address listened on")?;
    // SIGHUP reloads the certificate; without TLS it is only logged, never
    // the end of the server (`systemctl reload` sends it). Handled from
    // before the startup line, so that nobody can send it too early.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("SIGHUP cannot be handled")?;
    let auth = match (settings.server.tokens.required(), &settings.server.tls) {
        (true, Some(_)) => "TLS, tokens required",
        (true, None) => "tokens required, sent in clear (no TLS)",
        (false, _) => "no tokens: anyone who can connect may change limits",
    };
    let scheme = if settings.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // Tests and scripts read this line to learn the port.
    println!(
        "ratekeeper {} listening on {scheme}://{addr} ({store}; {auth})",
        env!("CARGO_PKG_VERSION")
    );
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), store, auth, "serving");
    let reload = settings.tls.clone().zip(settings.server.tls.clone());
    tokio::spawn(reload_on_hangup(hangups, reload));
    ratekeeper_server::serve(listener, Arc::new(backend), settings.server, stop_signal())
        .await
        .context("the store could not save every change")?;
    tracing::info!("stopped; every change is stored");
    Ok(())
}

/// Reads the certificate and key again on each SIGHUP, for the connections
/// accepted from then on; a file that cannot be used is logged and the
/// certificate in use kept. Without TLS, a SIGHUP is only logged.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    reload: Option<(TlsFiles, ServerTls)>,
) {
    while hangups.recv().await.is_some() {
        let Some((files, tls)) = &reload else {
            tracing::info!("SIGHUP: nothing to reload (no TLS)");
            continue;
        };
        match files.load() {
            Ok(config) => {
                tls.replace(config);
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Err(err) => {
                tracing::error!(%err, "TLS certificate not reloaded; the one in use is kept");
            }
        }
    }
}

async fn stop_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// `url` (or comma-separated URLs) with any password masked, fit to print.
fn redacted(url: &str) -> String {
    let parts: Vec<String> = url
        .split(',')
        .map(|part| match (part.find("://"), part.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                let user_info = &part[scheme_end + 3..at];
                let user = user_info.split(':').next().unwrap_or("");
                format!("{}{user}:***{}", &part[..scheme_end + 3], &part[at..])
            }
            _ => part.to_owned(),
        })
        .collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::{ServeArgs, layered, redacted};
    use clap::{Args, Command, FromArgMatches};

    fn parse(args: &[&str]) -> ServeArgs {
        let command = ServeArgs::augment_args(Command::new("serve"));
        let matches = command.try_get_matches_from(args).unwrap();
        ServeArgs::from_arg_matches(&matches).unwrap()
    }

    #[test]
    fn every_setting_is_a_flag_an_environment_variable_and_a_file_key_of_one_name() {
        let command = ServeArgs::augment_args(Command::new("serve"));
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(
                env,
                Some(format!("RATEKEEPER_{}", id.to_uppercase())),
                "{id}"
            );
            assert_eq!(arg.get_long(), Some(id.replace('_', "-").as_str()), "{id}");
        }
    }

    #[test]
    fn flags_override_the_file_and_lists_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(
            &file,
            "max_tickets = 5\nmax_wait_seconds = 3.0\ninsecure = true\nallowed_hosts = [\"a\"]\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let merged = layered(parse(&[
            "serve",
            "--config",
            config,
            "--max-tickets",
            "7",
            "--allowed-hosts",
            "b",
        ]))
        .unwrap();
        assert_eq!(merged.max_tickets, Some(7));
        assert_eq!(merged.max_wait_seconds, Some(3.0));
        assert!(merged.insecure, "a flag not given does not hide the file's");
        assert_eq!(merged.allowed_hosts, ["a", "b"]);
    }

    #[test]
    fn passwords_in_store_urls_are_masked() {
        assert_eq!(
            redacted("redis://:secret@h:6379/0,rediss://me:pw@g:6380"),
            "redis://:***@h:6379/0,rediss://me:***@g:6380"
        );
        assert_eq!(
            redacted("redis+unix:///run/r.sock"),
            "redis+unix:///run/r.sock"
        );
    }
}
