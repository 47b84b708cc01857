//! One instance's side of the store: its connections, its parked
//! requests, and the calls of the store's functions, one per operation and
//! partition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratekeeper_backend::{AcquireSpec, Error, Event, Granted};
use ratekeeper_core::{LeaseGrant, LimitView, Mode, Timestamp};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use crate::INSTANCE_TTL;
use crate::connection::{Connection, Subscriber, Subscription};
use crate::layout::Layout;
use crate::markers::{check_layout, partition_count};
use crate::options::ManualClock;
use crate::parked::ParkedRequest;
use crate::reply::{Outcome, Reply};
use crate::scripts::{Function, Scripts};
use crate::tasks::WATCHED_TTL;
use crate::{across, reply};

pub(crate) struct Inner {
    /// Makes the subscriptions to the channels.
    pub(crate) subscriber: Subscriber,
    pub(crate) conn: Connection,
    pub(crate) scripts: Scripts,
    /// The partitions' key prefixes.
    pub(crate) layout: Layout,
    /// This instance's id, for its heartbeat and the requests it parks.
    pub(crate) instance: String,
    /// Requests this instance waits for, by partition and token. A request
    /// is here from before its acquire script runs until its outcome is
    /// delivered or it is withdrawn, so a grant published in between is
    /// not missed.
    pub(crate) parked: Mutex<HashMap<(usize, String), oneshot::Sender<Outcome>>>,
    pub(crate) events: broadcast::Sender<Event>,
    /// Whether a task forwards the published changes to `events`. It runs
    /// only while someone holds a receiver: the scripts skip describing
    /// changes that no instance subscribes to.
    pub(crate) event_feed: tokio::sync::Mutex<bool>,
    /// Per partition, the next instant (Redis time, microseconds)
    /// something is due there, as announced; wakes its ticker early.
    pub(crate) due: Vec<watch::Sender<Option<u64>>>,
    /// The background tasks: subscriber, tickers, heartbeat, event feed.
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The scripts' clock in tests; `None`: Redis's own.
    pub(crate) clock: Option<ManualClock>,
    /// The store's key prefix, as configured.
    pub(crate) store_prefix: String,
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

pub(crate) fn unavailable(err: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        reason: format!("Redis: {err}"),
    }
}

pub(crate) fn micros(duration: Duration) -> String {
    duration.as_micros().to_string()
}

pub(crate) fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

pub(crate) fn local_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Inner {
    /// Each partition's `kind` channel.
    pub(crate) fn channels(&self, kinds: &[&str]) -> Vec<String> {
        (0..self.layout.count())
            .flat_map(|part| kinds.iter().map(move |kind| (part, kind)))
            .map(|(part, kind)| format!("{}{kind}", self.layout.prefix(part)))
            .collect()
    }

    /// Runs an operation's function in partition `part` and returns its
    /// JSON answer: the prefix and the clock ('' for Redis's own) come
    /// first, then `args`, each named as the function names it.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        part: usize,
        function: &Function,
        args: &[(&str, &str)],
    ) -> Result<T, Error> {
        function.check_args(args);
        let prefix = self.layout.prefix(part);
        let mut call = redis::cmd("FCALL");
        // The one declared key routes the call to the partition's slot.
        let now = self.clock.as_ref().map(ManualClock::micros);
        call.arg(function.name())
            .arg(1)
            .arg(format!("{prefix}seq"))
            .arg(prefix)
            .arg(now.unwrap_or_default());
        for (_, value) in args {
            call.arg(*value);
        }
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
    pub(crate) async fn run<T: DeserializeOwned>(
        &self,
        part: usize,
        function: &Function,
        args: &[(&str, &str)],
    ) -> Result<Reply<T>, Error> {
        self.call(part, function, args).await
    }

    /// Does what is due in partition `part`; answers when the next thing
    /// is due there (microseconds).
    pub(crate) async fn tick(&self, part: usize) -> Result<Option<u64>, Error> {
        match self
            .run::<reply::Due>(part, &self.scripts.tick, &[])
            .await?
        {
            Reply::Ok { ok } => Ok(ok.next.map(|at| at.0)),
            other => Err(unexpected(&other)),
        }
    }

    /// Loads the functions (Redis 7 or later; Valkey).
    pub(crate) async fn load_library(&self) -> Result<(), Error> {
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
    pub(crate) async fn set_expiring(&self, key: &str, ttl: Duration) -> Result<(), Error> {
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

    pub(crate) async fn heartbeat(&self) -> Result<(), Error> {
        self.set_expiring(&format!("inst:{}", self.instance), INSTANCE_TTL)
            .await?;
        self.check_markers().await
    }

    /// Checks that the store is still laid out as this instance uses it,
    /// recording the layout and partition count again if Redis lost them
    /// (a Redis without persistence that restarted), so that an instance
    /// started later cannot choose another count.
    pub(crate) async fn check_markers(&self) -> Result<(), Error> {
        check_layout(&self.conn, &self.store_prefix).await?;
        let count = self.layout.count() as u32;
        partition_count(&self.conn, &self.store_prefix, Some(count)).await?;
        Ok(())
    }

    /// Tells the functions that someone watches the changes, for a while.
    pub(crate) async fn mark_watched(&self) -> Result<(), Error> {
        self.set_expiring("watched", WATCHED_TTL).await
    }

    /// A connection subscribed to `channels`; it returns once Redis has
    /// confirmed them.
    pub(crate) async fn subscribe(&self, channels: &[String]) -> Result<Subscription, Error> {
        self.subscriber
            .subscribe(channels)
            .await
            .map_err(unavailable)
    }

    pub(crate) fn parked(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(usize, String), oneshot::Sender<Outcome>>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn deliver(&self, part: usize, outcome: Outcome) {
        if let Some(waiter) = self.parked().remove(&(part, outcome.token.clone())) {
            let _ = waiter.send(outcome);
        }
    }

    /// After a gap in the subscription: looks up the outcome of every
    /// request parked here and runs every partition's due work, rather
    /// than leave what was published meanwhile to the backstops.
    pub(crate) async fn catch_up(&self) {
        for due in &self.due {
            due.send_replace(Some(0));
        }
        let parked: Vec<(usize, String)> = self.parked().keys().cloned().collect();
        for (part, token) in parked {
            let status = self
                .run::<serde_json::Value>(part, &self.scripts.status, &[("token", &token)])
                .await;
            if let Ok(Reply::Settled { settled }) = status {
                self.deliver(part, settled);
            }
        }
    }

    pub(crate) fn publish_change(&self, change: reply::Change) {
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

    pub(crate) async fn acquire(self: Arc<Self>, spec: AcquireSpec) -> Result<Granted, Error> {
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
    pub(crate) async fn acquire_part(
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

    /// Runs the acquire function for `request` in partition `part`; a
    /// new key refused for want of room in the partition's share of its
    /// template's instances is asked again once another partition has
    /// lent room.
    pub(crate) async fn run_acquire<T: DeserializeOwned>(
        &self,
        part: usize,
        request: &PartRequest<'_>,
    ) -> Result<Reply<T>, Error> {
        let args = request.args(&self.instance);
        let args: Vec<(&str, &str)> = args
            .iter()
            .map(|(name, value)| (*name, value.as_ref()))
            .collect();
        loop {
            let reply = self.run(part, &self.scripts.acquire, &args).await?;
            if let Reply::Refused(refusal) = &reply
                && self.borrow_room(part, refusal).await?
            {
                continue;
            }
            return Ok(reply);
        }
    }

    /// For a refusal for want of room in partition `part`'s share of a
    /// template's instances: moves one instance's room there from another
    /// partition that has some to spare; false if none has (or the
    /// refusal is another). The room is taken from the lender before it
    /// is given, so the shares never add up to more than the template's
    /// `max_instances`; room lost in between (this instance stopped) is
    /// found again by the next change of `max_instances`.
    pub(crate) async fn borrow_room(
        &self,
        part: usize,
        refusal: &reply::Refusal,
    ) -> Result<bool, Error> {
        let (true, Some(template)) = (refusal.share, &refusal.template) else {
            return Ok(false);
        };
        for lender in (0..self.layout.count()).filter(|&p| p != part) {
            let lent = self.share(lender, template, -1).await?;
            if lent > 0 {
                self.share(part, template, lent).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Checks `request` in partition `part` as its acquire would, changing
    /// nothing.
    pub(crate) async fn check_part(
        &self,
        part: usize,
        mut request: PartRequest<'_>,
    ) -> Result<(), Error> {
        request.check_only = true;
        match self.run_acquire::<bool>(part, &request).await? {
            Reply::Ok { .. } => Ok(()),
            Reply::Refused(refusal) => Err(refusal.error()),
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn cancel(
        &self,
        part: usize,
        token: &str,
        reason: &str,
    ) -> Result<Reply<serde_json::Value>, Error> {
        self.run(
            part,
            &self.scripts.cancel,
            &[("token", token), ("reason", reason)],
        )
        .await
    }

    /// Renews a lease's part in partition `part`; answers its new expiry.
    pub(crate) async fn renew_part(
        &self,
        part: usize,
        id: &str,
        ttl: Option<Duration>,
    ) -> Result<Timestamp, Error> {
        let ttl = ttl.map(micros).unwrap_or_default();
        match self
            .run::<reply::Renewed>(part, &self.scripts.renew, &[("id", id), ("ttl_us", &ttl)])
            .await?
        {
            Reply::Ok { ok } => Ok(ok.expires.micros()),
            Reply::Refused(refusal) => Err(refusal.error()),
            other => Err(unexpected(&other)),
        }
    }

    /// Releases a lease's part in partition `part`.
    pub(crate) async fn release_part(&self, part: usize, id: &str) -> Result<(), Error> {
        match self
            .run::<bool>(part, &self.scripts.release, &[("id", id)])
            .await?
        {
            Reply::Ok { .. } => Ok(()),
            Reply::Refused(refusal) => Err(refusal.error()),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs the read function in partition `part`: a limit that does not
    /// exist is refused.
    pub(crate) async fn read<T: DeserializeOwned>(
        &self,
        part: usize,
        args: &[(&str, &str)],
    ) -> Result<T, Error> {
        let value: serde_json::Value = self.call(part, &self.scripts.read, args).await?;
        if let Ok(refusal) = serde_json::from_value::<reply::Refusal>(value.clone()) {
            return Err(refusal.limit_error());
        }
        serde_json::from_value(value).map_err(unavailable)
    }

    /// Moves room for instances of `template` in or out of partition
    /// `part` (see `share.lua`); answers how much moved.
    async fn share(&self, part: usize, template: &str, change: i64) -> Result<i64, Error> {
        let args = [("template", template), ("change", &change.to_string())];
        match self
            .run::<reply::Int>(part, &self.scripts.share, &args)
            .await?
        {
            Reply::Ok { ok } => Ok(ok.0 as i64),
            other => Err(unexpected(&other)),
        }
    }

    /// The partitions holding limit `name`: its own, then, for a template
    /// (kept in every partition), every other one.
    pub(crate) fn parts_of(&self, name: &str) -> Vec<usize> {
        let home = self.layout.of(name);
        let mut parts = vec![home];
        if ratekeeper_core::template_prefix(name).is_some() {
            parts.extend((0..self.layout.count()).filter(|&part| part != home));
        }
        parts
    }

    /// [`parts_of`](Self::parts_of), each with its share of `max`
    /// instances: split evenly, the first partitions in order taking one
    /// more each while some are left over (0 for a limit that is no
    /// template, or when no `max` is given).
    pub(crate) fn shares(&self, name: &str, max: Option<u64>) -> Vec<(usize, u64)> {
        let count = self.layout.count() as u64;
        let max = max.unwrap_or_default();
        let share = |part: usize| max / count + u64::from((part as u64) < max % count);
        self.parts_of(name)
            .into_iter()
            .map(|part| (part, share(part)))
            .collect()
    }

    /// A limit as its home partition shows it; for a template on a store
    /// of several partitions, with every other partition's copy added (its
    /// sums over that partition's instances, and its counters).
    pub(crate) async fn with_copies(&self, mut limit: LimitView) -> Result<LimitView, Error> {
        if limit.template.is_none() {
            return Ok(limit);
        }
        for part in self.parts_of(&limit.name).into_iter().skip(1) {
            let args = [
                ("what", "limit"),
                ("name", limit.name.as_str()),
                ("query", ""),
            ];
            let copy: reply::Detail = self.read(part, &args).await?;
            add_template_copy(&mut limit, copy.limit.into());
        }
        Ok(limit)
    }

    /// A template as every partition's copy shows it together.
    pub(crate) async fn template_view(&self, name: &str) -> Result<LimitView, Error> {
        let args = [("what", "limit"), ("name", name), ("query", "")];
        let home: reply::Detail = self.read(self.layout.of(name), &args).await?;
        self.with_copies(home.limit.into()).await
    }

    /// Reads every partition's share, concurrently.
    pub(crate) async fn read_all<T: DeserializeOwned>(
        &self,
        args: &[(&str, &str)],
    ) -> Result<Vec<T>, Error> {
        let reads = (0..self.layout.count()).map(|part| self.read(part, args));
        futures_util::future::try_join_all(reads).await
    }
}

/// Adds a template's copy in another partition to its view: its sums over
/// that partition's instances, and its counters.
pub(crate) fn add_template_copy(template: &mut LimitView, copy: LimitView) {
    template.held += copy.held;
    template.decaying += copy.decaying;
    template.waiting += copy.waiting;
    template.waiting_slots += copy.waiting_slots;
    let (sum, other) = (&mut template.counters, copy.counters);
    sum.granted_total += other.granted_total;
    sum.granted_slots_total += other.granted_slots_total;
    sum.waited_total += other.waited_total;
    sum.expired_total += other.expired_total;
    sum.denied_total += other.denied_total;
    if let (Some(sum), Some(other)) = (&mut template.template, copy.template) {
        sum.instances += other.instances;
    }
}

/// Names as the scripts take and store them: a JSON list, which every
/// version of the functions reads.
fn listed(names: &[impl AsRef<str>]) -> String {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&names).expect("names serialize")
}

/// What the acquire function is told about (a part of) a request.
pub(crate) struct PartRequest<'a> {
    pub(crate) spec: &'a AcquireSpec,
    /// The names it takes in this partition (JSON).
    pub(crate) names: String,
    pub(crate) token: &'a str,
    /// Try once and refuse rather than wait.
    pub(crate) try_once: bool,
    /// When its waiter gives up (local clock, microseconds); shown in views.
    pub(crate) deadline_at: String,
    /// Only check it: refuse what would be refused, change nothing.
    pub(crate) check_only: bool,
    /// For a part of a request across partitions: all of its names (JSON);
    /// else empty.
    pub(crate) whole: String,
}

impl<'a> PartRequest<'a> {
    pub(crate) fn new(spec: &'a AcquireSpec, names: &[impl AsRef<str>], token: &'a str) -> Self {
        let try_once = spec.timeout == Some(Duration::ZERO);
        let deadline_at = spec
            .timeout
            .filter(|_| !try_once)
            .map(|t| (local_micros() + t.as_micros() as u64).to_string())
            .unwrap_or_default();
        PartRequest {
            spec,
            names: listed(names),
            token,
            try_once,
            deadline_at,
            check_only: false,
            whole: String::new(),
        }
    }

    /// The same request, on `names`.
    pub(crate) fn on(&self, names: &[impl AsRef<str>]) -> PartRequest<'a> {
        PartRequest {
            names: listed(names),
            deadline_at: self.deadline_at.clone(),
            whole: self.whole.clone(),
            ..*self
        }
    }

    pub(crate) fn args<'s>(
        &'s self,
        instance: &'s str,
    ) -> [(&'static str, std::borrow::Cow<'s, str>); 13] {
        let spec = self.spec;
        let mode = match spec.mode {
            Mode::Concurrency => "lease",
            Mode::RateLimit => "rate",
        };
        [
            ("names", self.names.as_str().into()),
            ("occupy", spec.occupy.to_string().into()),
            ("mode", mode.into()),
            ("ttl_us", micros(spec.lease_ttl).into()),
            ("has_holder", flag(spec.holder.is_some()).into()),
            ("holder", spec.holder.as_deref().unwrap_or("").into()),
            ("create_if_missing", flag(spec.create_if_missing).into()),
            ("token", self.token.into()),
            ("try_once", flag(self.try_once).into()),
            ("instance", instance.into()),
            ("deadline_at", self.deadline_at.as_str().into()),
            ("check_only", flag(self.check_only).into()),
            ("whole", self.whole.as_str().into()),
        ]
    }
}

pub(crate) fn unexpected<T: std::fmt::Debug>(reply: &Reply<T>) -> Error {
    Error::Unavailable {
        reason: format!("the Redis backend answered unexpectedly: {reply:?}"),
    }
}

/// The engine's own checks of a request, made before any script runs: the
/// names cannot be looked up first here.
pub(crate) fn check_acquire(spec: &AcquireSpec) -> Result<(), Error> {
    let names: Vec<&str> = spec.names.iter().map(String::as_str).collect();
    Ok(spec.request(&names).check_names()?)
}

pub(crate) fn granted(grant: reply::Grant) -> Result<Granted, Error> {
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
pub(crate) async fn settled(
    inner: &Inner,
    part: usize,
    outcome: Outcome,
) -> Result<Granted, Error> {
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
