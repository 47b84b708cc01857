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
//! All keys share one hash tag, so the whole state lives in one Redis
//! Cluster slot: every operation, multi-limit ones included, stays one
//! atomic script. Spreading limits over slots is not done yet.

mod connection;
mod reply;
mod scripts;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use ratekeeper_backend::{AcquireSpec, Backend, Error, Event, Granted, LimitDetail, Waiting};
use ratekeeper_core::{
    AcquireError, LeaseError, LeaseGrant, LeaseId, LeaseView, LimitName, LimitPatch, LimitSpec,
    LimitView, MAX_LEASE_TTL, MIN_LEASE_TTL, Mode, Timestamp,
};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use crate::connection::Connection;
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

/// A backend whose state is in Redis, shared with every other instance on
/// the same Redis and key prefix.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// One per URL given, for subscriptions.
    clients: Vec<redis::Client>,
    /// How many subscriptions were made: each starts at the next client,
    /// so that one lost with its node is made again on another.
    subscriptions: AtomicUsize,
    conn: Connection,
    scripts: Scripts,
    /// The key prefix, with the hash tag: `{PREFIX}:`.
    prefix: String,
    /// This instance's id, for its heartbeat and the requests it parks.
    instance: String,
    /// Requests this instance waits for, by token. A request is here from
    /// before its acquire script runs until its outcome is delivered or it
    /// is withdrawn, so a grant published in between is not missed.
    parked: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    events: broadcast::Sender<Event>,
    /// Whether a task forwards the published changes to `events`. It runs
    /// only while someone holds a receiver: the scripts skip describing
    /// changes that no instance subscribes to.
    event_feed: tokio::sync::Mutex<bool>,
    /// The next instant (Redis time, microseconds) something is due, as
    /// announced; wakes the ticker early.
    due: watch::Sender<Option<u64>>,
    /// The background tasks: subscriber, ticker, heartbeat, event feed.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The scripts' clock in tests; `None`: Redis's own.
    clock: Option<ManualClock>,
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

fn random_id() -> String {
    let mut bytes = [0; 16];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    LeaseId::from_bytes(bytes).to_string()
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
        Self::connect_with_prefix(url, "ratekeeper").await
    }

    /// Connects with the keys under `{prefix}:`; instances share state only
    /// with those of the same prefix.
    pub async fn connect_with_prefix(url: &str, prefix: &str) -> Result<Self, Error> {
        Self::open(url, prefix, None).await
    }

    /// Connects with the scripts on `clock` instead of Redis's, for tests
    /// that compare them with the engine at explicit instants.
    pub async fn connect_with_clock(
        url: &str,
        prefix: &str,
        clock: ManualClock,
    ) -> Result<Self, Error> {
        Self::open(url, prefix, Some(clock)).await
    }

    /// Does whatever is due now (expiries, heads that decay has let in,
    /// the requests of dead instances), as every instance does by itself
    /// when it is due; returns when the next thing is due.
    pub async fn tick(&self) -> Result<Option<Timestamp>, Error> {
        let inner = &self.inner;
        match inner.run::<reply::Due>(&inner.scripts.tick, &[]).await? {
            Reply::Ok { ok } => Ok(ok.next.map(reply::Int::micros)),
            other => Err(unexpected(&other)),
        }
    }

    async fn open(url: &str, prefix: &str, clock: Option<ManualClock>) -> Result<Self, Error> {
        if url.starts_with("rediss://") {
            // Two TLS providers are linked in (one for the HTTP client, one
            // for Redis), so rustls needs to be told which to use. Whoever
            // installs one first wins; either is fine.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let (conn, clients) = Connection::open(url).await.map_err(unavailable)?;
        let inner = Arc::new(Inner {
            clients,
            subscriptions: AtomicUsize::new(0),
            conn,
            scripts: Scripts::new(),
            prefix: format!("{{{prefix}}}:"),
            instance: random_id(),
            parked: Mutex::new(HashMap::new()),
            events: broadcast::channel(4096).0,
            event_feed: tokio::sync::Mutex::new(false),
            due: watch::channel(None).0,
            tasks: Mutex::new(Vec::new()),
            clock,
        });
        inner.load_library().await?;
        inner.heartbeat().await?;
        let subscribed = inner.subscribe(LISTENED).await?;
        let weak = Arc::downgrade(&inner);
        let tasks = vec![
            tokio::spawn(listen(Weak::clone(&weak), subscribed)),
            tokio::spawn(tick_loop(Weak::clone(&weak))),
            tokio::spawn(heartbeat_loop(weak)),
        ];
        *inner.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(RedisBackend { inner })
    }
}

impl Inner {
    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Runs an operation's function and returns its JSON answer: the
    /// prefix and the clock ('' for Redis's own) come first, then `args`.
    async fn call<T: DeserializeOwned>(
        &self,
        function: &Function,
        args: &[&str],
    ) -> Result<T, Error> {
        let mut call = redis::cmd("FCALL");
        // The one declared key routes the call to the state's slot.
        let now = self.clock.as_ref().map(ManualClock::micros);
        call.arg(function.name())
            .arg(1)
            .arg(self.key("seq"))
            .arg(&self.prefix)
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

    /// Runs an operation's function.
    async fn run<T: DeserializeOwned>(
        &self,
        function: &Function,
        args: &[&str],
    ) -> Result<Reply<T>, Error> {
        self.call(function, args).await
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

    /// Sets `key` (under the prefix) to expire after `ttl`.
    async fn set_expiring(&self, key: &str, ttl: Duration) -> Result<(), Error> {
        let set = redis::cmd("SET")
            .arg(self.key(key))
            .arg(1)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .to_owned();
        self.conn.query::<()>(&set).await.map_err(unavailable)
    }

    async fn heartbeat(&self) -> Result<(), Error> {
        self.set_expiring(&format!("inst:{}", self.instance), INSTANCE_TTL)
            .await
    }

    /// Tells the functions that someone watches the changes, for a while.
    async fn mark_watched(&self) -> Result<(), Error> {
        self.set_expiring("watched", WATCHED_TTL).await
    }

    /// A connection subscribed to `channels`; it returns once Redis has
    /// confirmed them.
    async fn subscribe(&self, channels: &[&str]) -> Result<redis::aio::PubSub, Error> {
        let channels: Vec<String> = channels.iter().map(|c| self.key(c)).collect();
        let first = self.subscriptions.fetch_add(1, Ordering::Relaxed);
        connection::subscribe(&self.clients, first, &channels)
            .await
            .map_err(unavailable)
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Outcome>>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliver(&self, outcome: Outcome) {
        if let Some(waiter) = self.parked().remove(&outcome.token) {
            let _ = waiter.send(outcome);
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
        let token = random_id();
        let try_once = spec.timeout == Some(Duration::ZERO);
        let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
        let (sender, receiver) = oneshot::channel();
        let mut parked = ParkedRequest::new(Arc::clone(&self), token.clone(), sender);
        let names = serde_json::to_string(&spec.names).expect("names serialize");
        let occupy = spec.occupy.to_string();
        let ttl = micros(spec.lease_ttl);
        let deadline_at = spec
            .timeout
            .filter(|_| !try_once)
            .map(|t| (local_micros() + t.as_micros() as u64).to_string())
            .unwrap_or_default();
        let mode = match spec.mode {
            Mode::Concurrency => "lease",
            Mode::RateLimit => "rate",
        };
        let reply = self
            .run::<reply::Grant>(
                &self.scripts.acquire,
                &[
                    &names,
                    &occupy,
                    mode,
                    &ttl,
                    flag(spec.holder.is_some()),
                    spec.holder.as_deref().unwrap_or(""),
                    flag(spec.create_if_missing),
                    &token,
                    flag(try_once),
                    &self.instance,
                    &deadline_at,
                ],
            )
            .await;
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

    async fn cancel(&self, token: &str, reason: &str) -> Result<Reply<serde_json::Value>, Error> {
        self.run(&self.scripts.cancel, &[token, reason]).await
    }
}

fn unexpected<T: std::fmt::Debug>(reply: &Reply<T>) -> Error {
    Error::Unavailable {
        reason: format!("the Redis backend answered unexpectedly: {reply:?}"),
    }
}

/// Checks what the engine checks before looking at any limit.
fn check_acquire(spec: &AcquireSpec) -> Result<(), Error> {
    let names: Vec<&str> = spec.names.iter().map(String::as_str).collect();
    let request = spec.request(&names);
    request.check()?;
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(AcquireError::DuplicateName {
                name: (*name).into(),
            }
            .into());
        }
        LimitName::new(name).map_err(AcquireError::from)?;
    }
    Ok(())
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
async fn settled(inner: &Inner, outcome: Outcome) -> Result<Granted, Error> {
    match (outcome.ok, outcome.refusal) {
        (Some(grant), _) => {
            let mut granted = granted(grant)?;
            if let Some(lease) = &mut granted.lease {
                let reply = inner
                    .run::<reply::Renewed>(&inner.scripts.renew, &[&lease.id.to_string(), ""])
                    .await?;
                match reply {
                    Reply::Ok { ok } => lease.expires_at = ok.expires.micros(),
                    Reply::Refused(refusal) => return Err(refusal.error()),
                    other => return Err(unexpected(&other)),
                }
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
    token: String,
    settled: bool,
}

impl ParkedRequest {
    fn new(inner: Arc<Inner>, token: String, sender: oneshot::Sender<Outcome>) -> Self {
        inner.parked().insert(token.clone(), sender);
        ParkedRequest {
            inner,
            token,
            settled: false,
        }
    }

    fn settle(&mut self) {
        self.settled = true;
        self.inner.parked().remove(&self.token);
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
                        Ok(outcome) => settled(&self.inner, outcome).await,
                        Err(_) => Err(unavailable("the wake channel closed")),
                    };
                }
                () = &mut timeout => {
                    let reply = self.inner.cancel(&self.token, "timeout").await?;
                    self.settle();
                    return match reply {
                        Reply::Settled { settled: outcome } => settled(&self.inner, outcome).await,
                        _ => Err(AcquireError::TimedOut.into()),
                    };
                }
                _ = backstop.tick() => {
                    let reply: Reply<serde_json::Value> =
                        self.inner.run(&self.inner.scripts.status, &[&self.token]).await?;
                    match reply {
                        Reply::Settled { settled: outcome } => {
                            self.settle();
                            return settled(&self.inner, outcome).await;
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
        self.inner.parked().remove(&self.token);
        let (inner, token) = (Arc::clone(&self.inner), self.token.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = inner.cancel(&token, "abandon").await {
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
async fn listen(weak: Weak<Inner>, mut pubsub: redis::aio::PubSub) {
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                let channel = message.get_channel_name();
                if channel.ends_with(":wake") {
                    if let Ok(outcome) = serde_json::from_str::<Outcome>(&payload) {
                        inner.deliver(outcome);
                    }
                } else if let Ok(at) = payload.parse::<u64>() {
                    inner.due.send_replace(Some(at));
                }
            }
        }
        match resubscribe(&weak, LISTENED, async |_| true).await {
            Some(fresh) => pubsub = fresh,
            None => return,
        }
    }
}

/// After a lost connection: subscribes to `channels` again, trying every
/// 200 ms; `None` once the backend is gone or `keep_trying` says no.
async fn resubscribe(
    weak: &Weak<Inner>,
    channels: &[&str],
    keep_trying: impl AsyncFn(&Inner) -> bool,
) -> Option<redis::aio::PubSub> {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let inner = weak.upgrade()?;
        if !keep_trying(&inner).await {
            return None;
        }
        if let Ok(fresh) = inner.subscribe(channels).await {
            return Some(fresh);
        }
    }
}

/// Runs the due work when it is due: at the instant the last tick or an
/// announcement named, and at least every [`TICK_BACKSTOP`].
async fn tick_loop(weak: Weak<Inner>) {
    let mut due = match weak.upgrade() {
        Some(inner) => inner.due.subscribe(),
        None => return,
    };
    loop {
        let next = {
            let Some(inner) = weak.upgrade() else { return };
            match inner.run::<reply::Due>(&inner.scripts.tick, &[]).await {
                Ok(Reply::Ok { ok }) => ok.next.map(|at| at.0),
                _ => None,
            }
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
async fn feed_events(weak: Weak<Inner>, mut pubsub: redis::aio::PubSub) {
    let mut check = tokio::time::interval(FEED_CHECK);
    loop {
        {
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    message = messages.next() => {
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
        // The connection was lost; changes published meanwhile are missed.
        let watched = async |inner: &Inner| !stop_feed_if_unwatched(inner).await;
        match resubscribe(&weak, &["events"], watched).await {
            Some(fresh) => pubsub = fresh,
            None => return,
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
        if let Err(err) = inner.heartbeat().await {
            tracing::warn!(%err, "heartbeat to Redis failed");
        }
    }
}

fn check_ttl(ttl: Option<Duration>) -> Result<(), Error> {
    match ttl {
        Some(ttl) if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl) => {
            Err(LeaseError::InvalidTtl {
                millis: ttl.as_millis(),
            }
            .into())
        }
        _ => Ok(()),
    }
}

impl Backend for RedisBackend {
    async fn create_limit(&self, spec: LimitSpec) -> Result<LimitView, Error> {
        spec.check()?;
        let inner = &self.inner;
        let reply = inner
            .run::<reply::Limit>(
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
        match inner.run::<bool>(&inner.scripts.delete, &[name]).await? {
            Reply::Ok { .. } => Ok(()),
            Reply::Refused(refusal) => Err(refusal.limit_error()),
            other => Err(unexpected(&other)),
        }
    }

    async fn reset_limit(&self, name: &str) -> Result<LimitView, Error> {
        let inner = &self.inner;
        limit_reply(inner.run(&inner.scripts.reset, &[name]).await?)
    }

    async fn limits(&self) -> Result<Vec<LimitView>, Error> {
        let limits: reply::Limits = self.read(&["limits", ""]).await?;
        Ok(limits.limits.into_iter().map(Into::into).collect())
    }

    async fn limit(&self, name: &str) -> Result<LimitDetail, Error> {
        let detail: reply::Detail = self.read(&["limit", name]).await?;
        Ok(LimitDetail {
            limit: detail.limit.into(),
            leases: detail
                .leases
                .into_iter()
                .filter_map(reply::Lease::view)
                .collect(),
            waiters: detail.waiters.into_iter().map(Into::into).collect(),
        })
    }

    async fn leases(&self, on: Option<&str>) -> Result<Vec<LeaseView>, Error> {
        let leases: reply::Leases = self.read(&["leases", on.unwrap_or("")]).await?;
        Ok(leases
            .leases
            .into_iter()
            .filter_map(reply::Lease::view)
            .collect())
    }

    fn acquire(&self, spec: AcquireSpec) -> Waiting {
        Box::pin(Arc::clone(&self.inner).acquire(spec))
    }

    async fn renew(&self, id: LeaseId, ttl: Option<Duration>) -> Result<LeaseGrant, Error> {
        check_ttl(ttl)?;
        let inner = &self.inner;
        let ttl = ttl.map(micros).unwrap_or_default();
        match inner
            .run::<reply::Renewed>(&inner.scripts.renew, &[&id.to_string(), &ttl])
            .await?
        {
            Reply::Ok { ok } => Ok(LeaseGrant {
                id,
                expires_at: ok.expires.micros(),
            }),
            Reply::Refused(refusal) => Err(refusal.error()),
            other => Err(unexpected(&other)),
        }
    }

    async fn release(&self, id: LeaseId) -> Result<(), Error> {
        let inner = &self.inner;
        match inner
            .run::<bool>(&inner.scripts.release, &[&id.to_string()])
            .await?
        {
            Reply::Ok { .. } => Ok(()),
            Reply::Refused(refusal) => Err(refusal.error()),
            other => Err(unexpected(&other)),
        }
    }

    async fn events(&self) -> Result<broadcast::Receiver<Event>, Error> {
        let inner = &self.inner;
        let mut feeding = inner.event_feed.lock().await;
        // Subscribed before the feed is looked at, so a feed about to stop
        // for want of receivers sees this one.
        let receiver = inner.events.subscribe();
        inner.mark_watched().await?;
        if !*feeding {
            let pubsub = inner.subscribe(&["events"]).await?;
            let task = tokio::spawn(feed_events(Arc::downgrade(inner), pubsub));
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
}

impl RedisBackend {
    /// Runs the read script: a limit that does not exist is refused.
    async fn read<T: DeserializeOwned>(&self, args: &[&str]) -> Result<T, Error> {
        let inner = &self.inner;
        let value: serde_json::Value = inner.call(&inner.scripts.read, args).await?;
        if let Ok(refusal) = serde_json::from_value::<reply::Refusal>(value.clone()) {
            return Err(refusal.limit_error());
        }
        serde_json::from_value(value).map_err(unavailable)
    }
}

fn limit_reply(reply: Reply<reply::Limit>) -> Result<LimitView, Error> {
    match reply {
        Reply::Ok { ok } => Ok(ok.into()),
        Reply::Refused(refusal) => Err(refusal.limit_error()),
        other => Err(unexpected(&other)),
    }
}
