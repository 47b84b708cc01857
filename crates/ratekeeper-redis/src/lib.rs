//! The Redis backend: every ratekeeper server pointed at the same Redis
//! serves the same limits, leases and one fair queue. Redis is the engine;
//! an instance holds no authoritative state.
//!
//! Each [`Backend`] operation is one Lua script (see `src/lua/`), run
//! atomically by Redis on Redis's own clock (`TIME`), so instances never
//! need agreeing clocks. A release that lets a waiter in grants it inside
//! the same script, stores the outcome and publishes it on a channel; the
//! instance that parks that waiter hears it within milliseconds and answers
//! its client. Nothing polls in the normal course: each instance sleeps
//! until the next instant something is due (a lease expiry, a head that
//! fits once decay has made room), which the scripts announce. Two checks
//! exist only as backstops against lost messages: a parked waiter looks up
//! its outcome every [`STATUS_BACKSTOP`], and every instance runs the due
//! work at least every [`TICK_BACKSTOP`].
//!
//! Each instance heart-beats a key that expires after [`INSTANCE_TTL`];
//! the queued requests of an instance that stopped (killed, cut off) are
//! withdrawn by the others, and its clients' leases expire by their TTL.
//!
//! The state is split into partitions (see `layout.rs`): each is one hash
//! tag, so one Redis Cluster slot, and each operation on it one atomic
//! call. A single Redis keeps one partition; on a cluster each limit lives
//! in the partition its name hashes to, and the channels are sharded
//! (`SPUBLISH`), so a message stays on the node of its partition. A
//! request on limits of several partitions takes them one partition after
//! the other (see `across.rs`).

mod across;
mod connection;
mod layout;
mod reply;
mod scripts;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratekeeper_backend::{AcquireSpec, Backend, Error, Event, Granted, LimitDetail, Waiting};
use ratekeeper_core::{
    AcquireError, LeaseGrant, LeaseId, LeaseView, LimitPatch, LimitSpec, LimitView, Mode, Timestamp,
};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use crate::connection::{Connection, Subscriber, Subscription};
use crate::layout::Layout;
pub use crate::layout::MAX_PARTITIONS;
use crate::reply::{Outcome, Reply};
use crate::scripts::{Function, Scripts};

/// How often a parked waiter looks up its outcome, in case the message
/// announcing it was lost.
pub const STATUS_BACKSTOP: Duration = Duration::from_secs(2);
/// The longest an instance goes without doing the due work, in case the
/// message announcing it was lost.
pub const TICK_BACKSTOP: Duration = Duration::from_secs(1);
/// How long an instance counts as alive after its last heartbeat.
pub const INSTANCE_TTL: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How many partitions a new store on a Redis Cluster gets unless told.
pub const DEFAULT_CLUSTER_PARTITIONS: u32 = 16;

/// A clock for tests that compare the scripts with the engine: while one
/// is given, every script acts at its instant instead of Redis's `TIME`.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Sets the instant the scripts act at (kept in microseconds).
    pub fn set(&self, at: Timestamp) {
        self.0.store(at.as_unix_nanos() / 1000, Ordering::SeqCst);
    }

    fn micros(&self) -> String {
        self.0.load(Ordering::SeqCst).to_string()
    }
}

/// How an instance uses its store.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The key prefix: instances share state only with those of the same
    /// prefix. `None`: `ratekeeper`.
    pub prefix: Option<String>,
    /// How many partitions (1 to [`MAX_PARTITIONS`]) a new store is split
    /// into; a store keeps the count it was first given, and an instance
    /// asking for another is refused. `None`: whatever the store has, and
    /// for a new store 1 on a single Redis, [`DEFAULT_CLUSTER_PARTITIONS`]
    /// on a cluster.
    pub partitions: Option<u32>,
    /// The scripts' clock, for tests that compare them with the engine at
    /// explicit instants; `None`: Redis's own.
    pub clock: Option<ManualClock>,
}

/// A backend whose state is in Redis, shared with every other instance on
/// the same Redis and key prefix.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// Makes the subscriptions to the channels.
    subscriber: Subscriber,
    conn: Connection,
    scripts: Scripts,
    /// The partitions' key prefixes.
    layout: Layout,
    /// This instance's id, for its heartbeat and the requests it parks.
    instance: String,
    /// Requests this instance waits for, by partition and token. A request
    /// is here from before its acquire script runs until its outcome is
    /// delivered or it is withdrawn, so a grant published in between is
    /// not missed.
    parked: Mutex<HashMap<(usize, String), oneshot::Sender<Outcome>>>,
    events: broadcast::Sender<Event>,
    /// Whether a task forwards the published changes to `events`. It runs
    /// only while someone holds a receiver: the scripts skip describing
    /// changes that no instance subscribes to.
    event_feed: tokio::sync::Mutex<bool>,
    /// Per partition, the next instant (Redis time, microseconds)
    /// something is due there, as announced; wakes its ticker early.
    due: Vec<watch::Sender<Option<u64>>>,
    /// The background tasks: subscriber, tickers, heartbeat, event feed.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The scripts' clock in tests; `None`: Redis's own.
    clock: Option<ManualClock>,
    /// The store's key prefix, as configured.
    store_prefix: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

fn unavailable(err: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        reason: format!("Redis: {err}"),
    }
}

fn micros(duration: Duration) -> String {
    duration.as_micros().to_string()
}

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

fn local_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl RedisBackend {
    /// Connects to `url` (`redis://host:port/db`, `rediss://...` for TLS
    /// verified against the system's roots, `redis+unix:///path`) with the
    /// key prefix `ratekeeper`.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, Options::default()).await
    }

    /// Connects with the keys under `prefix`; instances share state only
    /// with those of the same prefix.
    pub async fn connect_with_prefix(url: &str, prefix: &str) -> Result<Self, Error> {
        let options = Options {
            prefix: Some(prefix.into()),
            ..Options::default()
        };
        Self::connect_with(url, options).await
    }

    /// How many partitions the store is split into.
    pub fn partitions(&self) -> usize {
        self.inner.layout.count()
    }

    /// The partition a limit of this name lives in.
    pub fn partition_of(&self, name: &str) -> usize {
        self.inner.layout.of(name)
    }

    /// The Redis key of limit `name`'s definition: on a cluster, its slot
    /// is the one that holds the limit, its queue and its leases.
    pub fn key_of(&self, name: &str) -> String {
        let layout = &self.inner.layout;
        format!("{}l:{name}", layout.prefix(layout.of(name)))
    }

    /// Does whatever is due now (expiries, heads that decay has let in,
    /// the requests of dead instances), as every instance does by itself
    /// when it is due; returns when the next thing is due.
    pub async fn tick(&self) -> Result<Option<Timestamp>, Error> {
        let inner = &self.inner;
        let ticks = (0..inner.layout.count()).map(|part| inner.tick(part));
        let due = futures_util::future::try_join_all(ticks).await?;
        let next = due.into_iter().flatten().min();
        Ok(next.map(|at| reply::Int(at).micros()))
    }

    /// Connects to `url` as `options` say.
    pub async fn connect_with(url: &str, options: Options) -> Result<Self, Error> {
        if url.starts_with("rediss://") {
            // Two TLS providers are linked in (one for the HTTP client, one
            // for Redis), so rustls needs to be told which to use. Whoever
            // installs one first wins; either is fine.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let (conn, subscriber) = Connection::open(url).await.map_err(unavailable)?;
        let prefix = options.prefix.as_deref().unwrap_or("ratekeeper");
        check_layout(&conn, prefix).await?;
        let count = partition_count(&conn, prefix, options.partitions).await?;
        let layout = Layout::new(prefix, count);
        let inner = Arc::new(Inner {
            scripts: Scripts::new(subscriber.sharded()),
            subscriber,
            conn,
            due: (0..layout.count())
                .map(|_| watch::channel(None).0)
                .collect(),
            layout,
            instance: layout::random_id().to_string(),
            parked: Mutex::new(HashMap::new()),
            events: broadcast::channel(4096).0,
            event_feed: tokio::sync::Mutex::new(false),
            tasks: Mutex::new(Vec::new()),
            clock: options.clock,
            store_prefix: prefix.to_owned(),
        });
        inner.load_library().await?;
        inner.heartbeat().await?;
        let subscribed = inner.subscribe(&inner.channels(LISTENED)).await?;
        let weak = Arc::downgrade(&inner);
        let mut tasks = vec![
            tokio::spawn(listen(Weak::clone(&weak), subscribed)),
            tokio::spawn(heartbeat_loop(Weak::clone(&weak))),
        ];
        for part in 0..inner.layout.count() {
            tasks.push(tokio::spawn(tick_loop(Weak::clone(&weak), part)));
        }
        *inner.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(RedisBackend { inner })
    }
}

/// The version of the key layout (the keys, their types and what the
/// functions keep in them) this release reads and writes. Version 1 is the
/// layout of 0.1.0, which recorded no version.
pub const KEY_LAYOUT: u32 = 1;

/// Refuses a store under `prefix` whose keys were laid out by another
/// release; records [`KEY_LAYOUT`] on a new store (or one of 0.1.0, whose
/// layout it is).
async fn check_layout(conn: &Connection, prefix: &str) -> Result<(), Error> {
    let record = redis::cmd("SET")
        .arg(format!("{{{prefix}}}:layout"))
        .arg(KEY_LAYOUT)
        .arg("NX")
        .arg("GET")
        .to_owned();
    let recorded: Option<String> = conn.query(&record).await.map_err(unavailable)?;
    match recorded {
        None => Ok(()),
        Some(found) if found == KEY_LAYOUT.to_string() => Ok(()),
        Some(found) => Err(Error::Unavailable {
            reason: format!(
                "the store under prefix {prefix:?} has key layout {found}, and this release of \
                 ratekeeper reads layout {KEY_LAYOUT} only: run the release that wrote it (or a \
                 newer one), or use another prefix; its keys were left as they are"
            ),
        }),
    }
}

/// How many partitions the store under `prefix` has: the count recorded
/// with it, or `wanted` (or the default) recorded now for a new store.
async fn partition_count(
    conn: &Connection,
    prefix: &str,
    wanted: Option<u32>,
) -> Result<u32, Error> {
    if let Some(count) = wanted
        && !(1..=MAX_PARTITIONS).contains(&count)
    {
        return Err(Error::Unavailable {
            reason: format!("a store has 1 to {MAX_PARTITIONS} partitions, not {count}"),
        });
    }
    let default = if conn.is_cluster() {
        DEFAULT_CLUSTER_PARTITIONS
    } else {
        1
    };
    // Recorded once, by whichever instance comes first; SET NX GET
    // answers what was there before.
    let record = redis::cmd("SET")
        .arg(format!("{{{prefix}}}:partitions"))
        .arg(wanted.unwrap_or(default))
        .arg("NX")
        .arg("GET")
        .to_owned();
    let recorded: Option<u32> = conn.query(&record).await.map_err(unavailable)?;
    match (recorded, wanted) {
        (Some(recorded), Some(wanted)) if recorded != wanted => Err(Error::Unavailable {
            reason: format!(
                "the store under prefix {prefix:?} is split into {recorded} partitions, not \
                 {wanted}; a store keeps its first count (leave the count out to use it, or \
                 choose another prefix)"
            ),
        }),
        (Some(recorded), _) if !(1..=MAX_PARTITIONS).contains(&recorded) => Err(unavailable(
            format!("the store under prefix {prefix:?} records {recorded} partitions"),
        )),
        (recorded, wanted) => Ok(recorded.or(wanted).unwrap_or(default)),
    }
}

impl Inner {
    /// Each partition's `kind` channel.
    fn channels(&self, kinds: &[&str]) -> Vec<String> {
        (0..self.layout.count())
            .flat_map(|part| kinds.iter().map(move |kind| (part, kind)))
            .map(|(part, kind)| format!("{}{kind}", self.layout.prefix(part)))
            .collect()
    }

    /// Runs an operation's function in partition `part` and returns its
    /// JSON answer: the prefix and the clock ('' for Redis's own) come
    /// first, then `args`.
    async fn call<T: DeserializeOwned>(
        &self,
        part: usize,
        function: &Function,
        args: &[&str],
    ) -> Result<T, Error> {
        let prefix = self.layout.prefix(part);
        let mut call = redis::cmd("FCALL");
        // The one declared key routes the call to the partition's slot.
        let now = self.clock.as_ref().map(ManualClock::micros);
        call.arg(function.name())
            .arg(1)
            .arg(format!("{prefix}seq"))
            .arg(prefix)
            .arg(now.unwrap_or_default())
            .arg(args);
        let text: String = match self.conn.query(&call).await {
            // A Redis restarted without persistence, or flushed, lost the
            // library: load it again. Loading is idempotent, so whichever
            // instance gets there first does not matter.
            Err(err)
                if err
                    .detail()
                    .is_some_and(|d| d.starts_with("Function not found")) =>
            {
                self.load_library().await?;
                self.conn.query(&call).await
            }
            answer => answer,
        }
        .map_err(unavailable)?;
        serde_json::from_str(&text).map_err(|err| Error::Unavailable {
            reason: format!("the Redis backend answered {text:?}, which does not parse: {err}"),
        })
    }

    /// Runs an operation's function in partition `part`.
    async fn run<T: DeserializeOwned>(
        &self,
        part: usize,
        function: &Function,
        args: &[&str],
    ) -> Result<Reply<T>, Error> {
        self.call(part, function, args).await
    }

    /// Does what is due in partition `part`; answers when the next thing
    /// is due there (microseconds).
    async fn tick(&self, part: usize) -> Result<Option<u64>, Error> {
        match self
            .run::<reply::Due>(part, &self.scripts.tick, &[])
            .await?
        {
            Reply::Ok { ok } => Ok(ok.next.map(|at| at.0)),
            other => Err(unexpected(&other)),
        }
    }

    /// Loads the functions (Redis 7 or later; Valkey).
    async fn load_library(&self) -> Result<(), Error> {
        let load = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(&self.scripts.library)
            .to_owned();
        self.conn
            .query::<String>(&load)
            .await
            .map(drop)
            .map_err(|err| {
                unavailable(format!(
                    "loading ratekeeper's functions (Redis 7 or later is needed): {err}"
                ))
            })
    }

    /// Sets `key` in every partition to expire after `ttl`.
    async fn set_expiring(&self, key: &str, ttl: Duration) -> Result<(), Error> {
        let sets = (0..self.layout.count()).map(|part| {
            let set = redis::cmd("SET")
                .arg(format!("{}{key}", self.layout.prefix(part)))
                .arg(1)
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .to_owned();
            async move { self.conn.query::<()>(&set).await }
        });
        futures_util::future::try_join_all(sets)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn heartbeat(&self) -> Result<(), Error> {
        self.set_expiring(&format!("inst:{}", self.instance), INSTANCE_TTL)
            .await?;
        self.check_markers().await
    }

    /// Checks that the store is still laid out as this instance uses it,
    /// recording the layout and partition count again if Redis lost them
    /// (a Redis without persistence that restarted), so that an instance
    /// started later cannot choose another count.
    async fn check_markers(&self) -> Result<(), Error> {
        check_layout(&self.conn, &self.store_prefix).await?;
        let count = self.layout.count() as u32;
        partition_count(&self.conn, &self.store_prefix, Some(count)).await?;
        Ok(())
    }

    /// Tells the functions that someone watches the changes, for a while.
    async fn mark_watched(&self) -> Result<(), Error> {
        self.set_expiring("watched", WATCHED_TTL).await
    }

    /// A connection subscribed to `channels`; it returns once Redis has
    /// confirmed them.
    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, Error> {
        self.subscriber
            .subscribe(channels)
            .await
            .map_err(unavailable)
    }

    fn parked(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(usize, String), oneshot::Sender<Outcome>>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliver(&self, part: usize, outcome: Outcome) {
        if let Some(waiter) = self.parked().remove(&(part, outcome.token.clone())) {
            let _ = waiter.send(outcome);
        }
    }

    /// After a gap in the subscription: looks up the outcome of every
    /// request parked here and runs every partition's due work, rather
    /// than leave what was published meanwhile to the backstops.
    async fn catch_up(&self) {
        for due in &self.due {
            due.send_replace(Some(0));
        }
        let parked: Vec<(usize, String)> = self.parked().keys().cloned().collect();
        for (part, token) in parked {
            let status = self
                .run::<serde_json::Value>(part, &self.scripts.status, &[&token])
                .await;
            if let Ok(Reply::Settled { settled }) = status {
                self.deliver(part, settled);
            }
        }
    }

    fn publish_change(&self, change: reply::Change) {
        let event = match change {
            reply::Change::Limit(limit) => Event::Limit(limit.into()),
            reply::Change::LimitDeleted(name) => Event::LimitDeleted(name),
            reply::Change::Lease(lease) => match lease.view() {
                Some(view) => Event::Lease(view),
                None => return,
            },
            reply::Change::LeaseEnded(id) => match id.parse() {
                Ok(id) => Event::LeaseEnded(id),
                Err(_) => return,
            },
        };
        let _ = self.events.send(event);
    }

    async fn acquire(self: Arc<Self>, spec: AcquireSpec) -> Result<Granted, Error> {
        check_acquire(&spec)?;
        let parts = self.layout.split(&spec.names);
        let token = self.layout.new_id(parts.iter().map(|(part, _)| *part));
        let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
        if let [(part, _)] = parts[..] {
            let token = token.to_string();
            let request = PartRequest::new(&spec, &spec.names, &token);
            return Arc::clone(&self)
                .acquire_part(part, request, deadline)
                .await;
        }
        across::acquire(self, &spec, &parts, token, deadline).await
    }

    /// Takes `request` in partition `part`, waiting (if it may) until
    /// `deadline`.
    async fn acquire_part(
        self: Arc<Self>,
        part: usize,
        request: PartRequest<'_>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Granted, Error> {
        let (sender, receiver) = oneshot::channel();
        let token = request.token.to_owned();
        let mut parked = ParkedRequest::new(Arc::clone(&self), part, token, sender);
        let reply = self.run_acquire::<reply::Grant>(part, &request).await;
        match reply {
            Ok(Reply::Ok { ok }) => {
                parked.settle();
                granted(ok)
            }
            Ok(Reply::Queued { .. }) => parked.wait(receiver, deadline).await,
            Ok(Reply::Refused(refusal)) => {
                parked.settle();
                Err(refusal.error())
            }
            Ok(other) => Err(unexpected(&other)),
            // Unknown whether it was queued: the drop of `parked`
            // withdraws it if so.
            Err(err) => Err(err),
        }
    }

    /// Runs the acquire function for `request` in partition `part`.
    async fn run_acquire<T: DeserializeOwned>(
        &self,
        part: usize,
        request: &PartRequest<'_>,
    ) -> Result<Reply<T>, Error> {
        let args = request.args(&self.instance);
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        self.run(part, &self.scripts.acquire, &args).await
    }

    /// Checks `request` in partition `part` as its acquire would, changing
    /// nothing.
    async fn check_part(&self, part: usize, mut request: PartRequest<'_>) -> Result<(), Error> {
        request.check_only = true;
        match self.run_acquire::<bool>(part, &request).await? {
            Reply::Ok { .. } => Ok(()),
            Reply::Refused(refusal) => Err(refusal.error()),
            other => Err(unexpected(&other)),
        }
    }

    async fn cancel(
        &self,
        part: usize,
        token: &str,
        reason: &str,
    ) -> Result<Reply<serde_json::Value>, Error> {
        self.run(part, &self.scripts.cancel, &[token, reason]).await
    }

    /// Renews a lease's part in partition `part`; answers its new expiry.
    async fn renew_part(
        &self,
        part: usize,
        id: &str,
        ttl: Option<Duration>,
    ) -> Result<Timestamp, Error> {
        let ttl = ttl.map(micros).unwrap_or_default();
        match self
            .run::<reply::Renewed>(part, &self.scripts.renew, &[id, &ttl])
            .await?
        {
            Reply::Ok { ok } => Ok(ok.expires.micros()),
            Reply::Refused(refusal) => Err(refusal.error()),
            other => Err(unexpected(&other)),
        }
    }

    /// Releases a lease's part in partition `part`.
    async fn release_part(&self, part: usize, id: &str) -> Result<(), Error> {
        match self.run::<bool>(part, &self.scripts.release, &[id]).await? {
            Reply::Ok { .. } => Ok(()),
            Reply::Refused(refusal) => Err(refusal.error()),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs the read function in partition `part`: a limit that does not
    /// exist is refused.
    async fn read<T: DeserializeOwned>(&self, part: usize, args: &[&str]) -> Result<T, Error> {
        let value: serde_json::Value = self.call(part, &self.scripts.read, args).await?;
        if let Ok(refusal) = serde_json::from_value::<reply::Refusal>(value.clone()) {
            return Err(refusal.limit_error());
        }
        serde_json::from_value(value).map_err(unavailable)
    }

    /// Reads every partition's share, concurrently.
    async fn read_all<T: DeserializeOwned>(&self, args: &[&str]) -> Result<Vec<T>, Error> {
        let reads = (0..self.layout.count()).map(|part| self.read(part, args));
        futures_util::future::try_join_all(reads).await
    }
}

/// What the acquire function is told about (a part of) a request.
struct PartRequest<'a> {
    spec: &'a AcquireSpec,
    /// The names it takes in this partition.
    names: String,
    token: &'a str,
    /// Try once and refuse rather than wait.
    try_once: bool,
    /// When its waiter gives up (local clock, microseconds); shown in views.
    deadline_at: String,
    /// Only check it: refuse what would be refused, change nothing.
    check_only: bool,
    /// For a part of a request across partitions: all of its names (JSON);
    /// else empty.
    whole: String,
}

impl<'a> PartRequest<'a> {
    fn new(spec: &'a AcquireSpec, names: &[impl serde::Serialize], token: &'a str) -> Self {
        let try_once = spec.timeout == Some(Duration::ZERO);
        let deadline_at = spec
            .timeout
            .filter(|_| !try_once)
            .map(|t| (local_micros() + t.as_micros() as u64).to_string())
            .unwrap_or_default();
        PartRequest {
            spec,
            names: serde_json::to_string(names).expect("names serialize"),
            token,
            try_once,
            deadline_at,
            check_only: false,
            whole: String::new(),
        }
    }

    /// The same request, on `names`.
    fn on(&self, names: &[impl serde::Serialize]) -> PartRequest<'a> {
        PartRequest {
            names: serde_json::to_string(names).expect("names serialize"),
            deadline_at: self.deadline_at.clone(),
            whole: self.whole.clone(),
            ..*self
        }
    }

    fn args<'s>(&'s self, instance: &'s str) -> [std::borrow::Cow<'s, str>; 13] {
        let spec = self.spec;
        let mode = match spec.mode {
            Mode::Concurrency => "lease",
            Mode::RateLimit => "rate",
        };
        [
            self.names.as_str().into(),
            spec.occupy.to_string().into(),
            mode.into(),
            micros(spec.lease_ttl).into(),
            flag(spec.holder.is_some()).into(),
            spec.holder.as_deref().unwrap_or("").into(),
            flag(spec.create_if_missing).into(),
            self.token.into(),
            flag(self.try_once).into(),
            instance.into(),
            self.deadline_at.as_str().into(),
            flag(self.check_only).into(),
            self.whole.as_str().into(),
        ]
    }
}

fn unexpected<T: std::fmt::Debug>(reply: &Reply<T>) -> Error {
    Error::Unavailable {
        reason: format!("the Redis backend answered unexpectedly: {reply:?}"),
    }
}

/// Checks what the engine checks before looking at any limit.
/// The engine's own checks of a request, made before any script runs: the
/// names cannot be looked up first here.
fn check_acquire(spec: &AcquireSpec) -> Result<(), Error> {
    let names: Vec<&str> = spec.names.iter().map(String::as_str).collect();
    Ok(spec.request(&names).check_names()?)
}

fn granted(grant: reply::Grant) -> Result<Granted, Error> {
    let lease = match grant.lease {
        Some(id) => Some(LeaseGrant {
            id: reply::lease_id(&id)?,
            expires_at: grant.expires.unwrap_or_default().micros(),
        }),
        None => None,
    };
    Ok(Granted {
        lease,
        granted_at: grant.granted_at.micros(),
        waited: grant.waited.duration(),
    })
}

/// A queued request's outcome. A lease granted while queued is only
/// claimed for a few seconds (so that a dead instance's grant comes back
/// soon); renewing it to its own TTL confirms it.
async fn settled(inner: &Inner, part: usize, outcome: Outcome) -> Result<Granted, Error> {
    match (outcome.ok, outcome.refusal) {
        (Some(grant), _) => {
            let mut granted = granted(grant)?;
            if let Some(lease) = &mut granted.lease {
                // A claim that lapsed (this instance was held up past it)
                // gave the slots back: for the caller that is a request to
                // make again, not a lease it held and lost.
                lease.expires_at = inner
                    .renew_part(part, &lease.id.to_string(), None)
                    .await
                    .map_err(|err| match err {
                        Error::Lease(_) => unavailable(
                            "the grant lapsed before this instance could claim it \
                             (it was held up for longer than the claim); ask again",
                        ),
                        other => other,
                    })?;
            }
            Ok(granted)
        }
        (None, Some(refusal)) => Err(refusal.error()),
        (None, None) => Err(unavailable("an outcome with neither grant nor refusal")),
    }
}

/// A request this instance parks. Dropped before it is settled (its client
/// went away), it withdraws the request, giving back a grant that arrived
/// meanwhile.
struct ParkedRequest {
    inner: Arc<Inner>,
    /// The partition it waits in.
    part: usize,
    token: String,
    settled: bool,
}

impl ParkedRequest {
    fn new(
        inner: Arc<Inner>,
        part: usize,
        token: String,
        sender: oneshot::Sender<Outcome>,
    ) -> Self {
        inner.parked().insert((part, token.clone()), sender);
        ParkedRequest {
            inner,
            part,
            token,
            settled: false,
        }
    }

    fn settle(&mut self) {
        self.settled = true;
        self.inner.parked().remove(&(self.part, self.token.clone()));
    }

    async fn wait(
        mut self,
        mut receiver: oneshot::Receiver<Outcome>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Granted, Error> {
        let mut backstop = tokio::time::interval(STATUS_BACKSTOP);
        backstop.tick().await;
        let timeout = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                outcome = &mut receiver => {
                    self.settle();
                    return match outcome {
                        Ok(outcome) => settled(&self.inner, self.part, outcome).await,
                        Err(_) => Err(unavailable("the wake channel closed")),
                    };
                }
                () = &mut timeout => {
                    let reply = self.inner.cancel(self.part, &self.token, "timeout").await?;
                    self.settle();
                    return match reply {
                        Reply::Settled { settled: outcome } => {
                            settled(&self.inner, self.part, outcome).await
                        }
                        _ => Err(AcquireError::TimedOut.into()),
                    };
                }
                _ = backstop.tick() => {
                    let status = &self.inner.scripts.status;
                    let reply: Reply<serde_json::Value> =
                        self.inner.run(self.part, status, &[&self.token]).await?;
                    match reply {
                        Reply::Settled { settled: outcome } => {
                            self.settle();
                            return settled(&self.inner, self.part, outcome).await;
                        }
                        Reply::Gone { .. } => {
                            self.settle();
                            return Err(unavailable(
                                "the request was withdrawn (this instance was taken for dead); ask again",
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

impl Drop for ParkedRequest {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.inner.parked().remove(&(self.part, self.token.clone()));
        let (inner, part, token) = (Arc::clone(&self.inner), self.part, self.token.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = inner.cancel(part, &token, "abandon").await {
                    tracing::warn!(%err, "withdrawing an abandoned request failed; it is withdrawn when this instance is taken for dead");
                }
            });
        }
    }
}

/// The channels every instance listens to: outcomes of queued requests
/// and announced instants.
const LISTENED: &[&str] = &["wake", "timer"];

/// Delivers published outcomes to parked waiters and announced instants to
/// the ticker. Re-subscribes after a lost connection (the backstops cover
/// what was missed meanwhile).
async fn listen(weak: Weak<Inner>, mut subscription: Subscription) {
    loop {
        {
            while let Some(message) = subscription.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                let channel = message.get_channel_name();
                if let Some(part) = inner.layout.part_of_channel(channel, "wake") {
                    if let Ok(outcome) = serde_json::from_str::<Outcome>(&payload) {
                        inner.deliver(part, outcome);
                    }
                } else if let Some(part) = inner.layout.part_of_channel(channel, "timer")
                    && let Ok(at) = payload.parse::<u64>()
                {
                    inner.due[part].send_replace(Some(at));
                }
            }
        }
        match resubscribe(&weak, LISTENED, async |_| true).await {
            Some(fresh) => subscription = fresh,
            None => return,
        }
        if let Some(inner) = weak.upgrade() {
            inner.catch_up().await;
        }
    }
}

/// After a lost connection: subscribes to every partition's `kinds` of
/// channel again, trying every 200 ms; `None` once the backend is gone or
/// `keep_trying` says no.
async fn resubscribe(
    weak: &Weak<Inner>,
    kinds: &[&str],
    keep_trying: impl AsyncFn(&Inner) -> bool,
) -> Option<Subscription> {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let inner = weak.upgrade()?;
        if !keep_trying(&inner).await {
            return None;
        }
        if let Ok(fresh) = inner.subscribe(&inner.channels(kinds)).await {
            return Some(fresh);
        }
    }
}

/// Runs partition `part`'s due work when it is due: at the instant the
/// last tick or an announcement named, and at least every
/// [`TICK_BACKSTOP`].
async fn tick_loop(weak: Weak<Inner>, part: usize) {
    let mut due = match weak.upgrade() {
        Some(inner) => inner.due[part].subscribe(),
        None => return,
    };
    loop {
        let next = {
            let Some(inner) = weak.upgrade() else { return };
            inner.tick(part).await.ok().flatten()
        };
        let mut wait = next.map_or(TICK_BACKSTOP, |at| {
            Duration::from_micros(at.saturating_sub(local_micros())).min(TICK_BACKSTOP)
        });
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => break,
                changed = due.changed() => {
                    if changed.is_err() { return; }
                    let Some(at) = *due.borrow_and_update() else { continue };
                    let until = Duration::from_micros(at.saturating_sub(local_micros()));
                    if until >= wait { continue; }
                    wait = until;
                }
            }
        }
    }
}

/// How often the event feed checks whether anyone still receives it, and
/// tells the functions that someone does.
const FEED_CHECK: Duration = Duration::from_secs(1);
/// How long the functions keep describing changes after the last word
/// that someone watches them.
const WATCHED_TTL: Duration = Duration::from_secs(3);

/// Forwards published changes to this instance's event receivers until
/// none is left; then it unsubscribes, and the scripts stop describing
/// changes once no instance listens.
async fn feed_events(weak: Weak<Inner>, mut subscription: Subscription) {
    let mut check = tokio::time::interval(FEED_CHECK);
    loop {
        {
            loop {
                tokio::select! {
                    message = subscription.next() => {
                        let Some(message) = message else { break };
                        let Some(inner) = weak.upgrade() else { return };
                        let payload: String = message.get_payload().unwrap_or_default();
                        if let Ok(change) = serde_json::from_str(&payload) {
                            inner.publish_change(change);
                        }
                    }
                    _ = check.tick() => {
                        let Some(inner) = weak.upgrade() else { return };
                        if stop_feed_if_unwatched(&inner).await {
                            return;
                        }
                        if let Err(err) = inner.mark_watched().await {
                            tracing::warn!(%err, "telling Redis that changes are watched failed");
                        }
                    }
                }
            }
        }
        // The connection was lost: changes published until it is back are
        // missed, which the receivers are told once it is.
        let watched = async |inner: &Inner| !stop_feed_if_unwatched(inner).await;
        match resubscribe(&weak, &["events"], watched).await {
            Some(fresh) => subscription = fresh,
            None => return,
        }
        if let Some(inner) = weak.upgrade() {
            let _ = inner.events.send(Event::Missed);
        }
    }
}

/// Marks the event feed stopped if nobody receives it; true if so.
async fn stop_feed_if_unwatched(inner: &Inner) -> bool {
    let mut feeding = inner.event_feed.lock().await;
    if inner.events.receiver_count() > 0 {
        return false;
    }
    *feeding = false;
    true
}

async fn heartbeat_loop(weak: Weak<Inner>) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Some(inner) = weak.upgrade() else { return };
        // A heartbeat stuck on a node that died (a failover is under way)
        // must not hold up the next one, which reaches its successor.
        match tokio::time::timeout(HEARTBEAT, inner.heartbeat()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "heartbeat to Redis failed"),
            Err(_) => tracing::warn!("heartbeat to Redis timed out"),
        }
    }
}

fn check_ttl(ttl: Option<Duration>) -> Result<(), Error> {
    Ok(ttl.map(ratekeeper_core::check_ttl).transpose().map(drop)?)
}

impl Backend for RedisBackend {
    async fn create_limit(&self, spec: LimitSpec) -> Result<LimitView, Error> {
        spec.check()?;
        let inner = &self.inner;
        let reply = inner
            .run::<reply::Limit>(
                inner.layout.of(&spec.name),
                &inner.scripts.create,
                &[
                    &spec.name,
                    &spec.slots.to_string(),
                    &spec.slot_decay_per_second.to_string(),
                    flag(spec.active),
                    flag(spec.description.is_some()),
                    spec.description.as_deref().unwrap_or(""),
                ],
            )
            .await?;
        limit_reply(reply)
    }

    async fn update_limit(&self, name: &str, patch: LimitPatch) -> Result<LimitView, Error> {
        patch.check()?;
        let inner = &self.inner;
        let (description_mode, description) = match &patch.description {
            None => ("", ""),
            Some(None) => ("clear", ""),
            Some(Some(text)) => ("set", text.as_str()),
        };
        let reply = inner
            .run::<reply::Limit>(
                inner.layout.of(name),
                &inner.scripts.update,
                &[
                    name,
                    &patch.slots.map(|s| s.to_string()).unwrap_or_default(),
                    &patch
                        .slot_decay_per_second
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    patch.active.map(flag).unwrap_or(""),
                    description_mode,
                    description,
                ],
            )
            .await?;
        limit_reply(reply)
    }

    async fn delete_limit(&self, name: &str) -> Result<(), Error> {
        let inner = &self.inner;
        let part = inner.layout.of(name);
        match inner
            .run::<bool>(part, &inner.scripts.delete, &[name])
            .await?
        {
            Reply::Ok { .. } => Ok(()),
            Reply::Refused(refusal) => Err(refusal.limit_error()),
            other => Err(unexpected(&other)),
        }
    }

    async fn reset_limit(&self, name: &str) -> Result<LimitView, Error> {
        let inner = &self.inner;
        let part = inner.layout.of(name);
        limit_reply(inner.run(part, &inner.scripts.reset, &[name]).await?)
    }

    async fn limits(&self) -> Result<Vec<LimitView>, Error> {
        let shares: Vec<reply::Limits> = self.inner.read_all(&["limits", ""]).await?;
        let mut limits: Vec<LimitView> = shares
            .into_iter()
            .flat_map(|share| share.limits)
            .map(Into::into)
            .collect();
        limits.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(limits)
    }

    async fn limit(&self, name: &str) -> Result<LimitDetail, Error> {
        let inner = &self.inner;
        let part = inner.layout.of(name);
        let detail: reply::Detail = inner.read(part, &["limit", name]).await?;
        Ok(LimitDetail {
            limit: detail.limit.into(),
            leases: across::whole_leases(inner, parted(part, detail.leases)).await?,
            waiters: detail.waiters.into_iter().map(Into::into).collect(),
        })
    }

    async fn leases(&self, on: Option<&str>) -> Result<Vec<LeaseView>, Error> {
        let inner = &self.inner;
        let leases = match on {
            Some(name) => {
                let part = inner.layout.of(name);
                let share: reply::Leases = inner.read(part, &["leases", name]).await?;
                parted(part, share.leases)
            }
            None => {
                let shares: Vec<reply::Leases> = inner.read_all(&["leases", ""]).await?;
                let parts = shares.into_iter().enumerate();
                parts
                    .flat_map(|(part, share)| parted(part, share.leases))
                    .collect()
            }
        };
        across::whole_leases(inner, leases).await
    }

    fn acquire(&self, spec: AcquireSpec) -> Waiting {
        Box::pin(Arc::clone(&self.inner).acquire(spec))
    }

    async fn renew(&self, id: LeaseId, ttl: Option<Duration>) -> Result<LeaseGrant, Error> {
        check_ttl(ttl)?;
        let expires_at = across::renew(&self.inner, id, ttl).await?;
        Ok(LeaseGrant { id, expires_at })
    }

    async fn release(&self, id: LeaseId) -> Result<(), Error> {
        across::release(&self.inner, id).await
    }

    async fn events(&self) -> Result<broadcast::Receiver<Event>, Error> {
        let inner = &self.inner;
        let mut feeding = inner.event_feed.lock().await;
        // Subscribed before the feed is looked at, so a feed about to stop
        // for want of receivers sees this one.
        let receiver = inner.events.subscribe();
        inner.mark_watched().await?;
        if !*feeding {
            let subscription = inner.subscribe(&inner.channels(&["events"])).await?;
            let task = tokio::spawn(feed_events(Arc::downgrade(inner), subscription));
            let mut tasks = inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.retain(|task| !task.is_finished());
            tasks.push(task);
            *feeding = true;
        }
        Ok(receiver)
    }

    /// Every answer is given once its script has run in Redis; how durable
    /// that is depends on Redis's own persistence (AOF, replicas).
    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    /// A round trip to Redis (every primary's partitions, by touching the
    /// first partition: one `PING` through the same connection).
    /// A round trip that also checks the store is laid out as this
    /// instance uses it.
    async fn health(&self) -> Result<(), Error> {
        match tokio::time::timeout(Duration::from_secs(2), self.inner.check_markers()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Error::Unavailable { reason })) => Err(unavailable(format!(
                "Redis does not answer as expected: {reason}"
            ))),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(unavailable("Redis did not answer within 2 s")),
        }
    }
}

/// Leases read in partition `part`, each with it.
fn parted(part: usize, leases: Vec<reply::Lease>) -> Vec<(usize, reply::Lease)> {
    leases.into_iter().map(|lease| (part, lease)).collect()
}

fn limit_reply(reply: Reply<reply::Limit>) -> Result<LimitView, Error> {
    match reply {
        Reply::Ok { ok } => Ok(ok.into()),
        Reply::Refused(refusal) => Err(refusal.limit_error()),
        other => Err(unexpected(&other)),
    }
}
