//! [`RedisBackend`]: connecting, and the [`Backend`] operations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ratekeeper_backend::{AcquireSpec, Backend, Error, Event, LimitDetail, Waiting};
use ratekeeper_core::{
    Adaptive, DEFAULT_MAX_INSTANCES, InstanceOrder, InstanceQuery, LeaseGrant, LeaseId, LeaseView,
    LimitError, LimitPatch, LimitSpec, LimitView, PauseEnd, PauseSpec, ThrottleReport, Timestamp,
    template_prefix,
};
use tokio::sync::{broadcast, watch};

use crate::connection::Connection;
use crate::instance::{Inner, flag, local_micros, unavailable, unexpected};
use crate::layout::Layout;
use crate::markers::{check_layout, partition_count};
use crate::options::Options;
use crate::reply::Reply;
use crate::scripts::{Function, Scripts};
use crate::tasks::{LISTENED, feed_events, heartbeat_loop, listen, tick_loop};
use crate::{across, layout, reply};

/// A backend whose state is in Redis, shared with every other instance on
/// the same Redis and key prefix.
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) inner: Arc<Inner>,
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

pub(crate) fn check_ttl(ttl: Option<Duration>) -> Result<(), Error> {
    Ok(ttl.map(ratekeeper_core::check_ttl).transpose().map(drop)?)
}

impl Backend for RedisBackend {
    async fn create_limit(&self, spec: LimitSpec) -> Result<LimitView, Error> {
        spec.check()?;
        let inner = &self.inner;
        let definition = Definition {
            slots: spec.slots.to_string(),
            decay: spec.slot_decay_per_second.to_string(),
            active: flag(spec.active),
            description_change: if spec.description.is_some() {
                "set"
            } else {
                "clear"
            },
            description: spec.description.clone().unwrap_or_default(),
            max: Some(spec.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES)),
            adaptive: spec.adaptive.map(adaptive_arg).unwrap_or_default(),
        };
        let mut created = None;
        // A template is kept in every partition, its home one first (which
        // refuses a name in use); a copy left by a delete that failed
        // half-way is set to this definition.
        for (part, share) in inner.shares(&spec.name, definition.max) {
            let args = definition.create(&spec.name, share);
            let mut reply = inner
                .run(part, &inner.scripts.create, &borrowed(&args))
                .await?;
            if created.is_some() && matches!(&reply, Reply::Refused(r) if r.err == "limit_exists") {
                let args = definition.update(&spec.name, share);
                reply = inner
                    .run(part, &inner.scripts.update, &borrowed(&args))
                    .await?;
            }
            let view = limit_reply(reply)?;
            created.get_or_insert(view);
        }
        self.merged(created.expect("a store has a partition")).await
    }

    async fn update_limit(&self, name: &str, patch: LimitPatch) -> Result<LimitView, Error> {
        patch.check()?;
        if patch.max_instances.is_some() && template_prefix(name).is_none() {
            return Err(LimitError::InvalidMaxInstances {
                reason: "is only for a template (a name ending in '*')".into(),
            }
            .into());
        }
        let inner = &self.inner;
        let definition = Definition {
            slots: patch.slots.map(|s| s.to_string()).unwrap_or_default(),
            decay: patch
                .slot_decay_per_second
                .map(|d| d.to_string())
                .unwrap_or_default(),
            active: patch.active.map(flag).unwrap_or(""),
            description_change: match &patch.description {
                None => "",
                Some(None) => "clear",
                Some(Some(_)) => "set",
            },
            description: patch.description.clone().flatten().unwrap_or_default(),
            max: patch.max_instances,
            adaptive: match patch.adaptive {
                None => String::new(),
                Some(None) => "off".into(),
                Some(Some(adaptive)) => adaptive_arg(adaptive),
            },
        };
        let mut updated = None;
        // A template's home partition first: it refuses what is refused.
        for (part, share) in inner.shares(name, definition.max) {
            let args = definition.update(name, share);
            let reply = inner
                .run(part, &inner.scripts.update, &borrowed(&args))
                .await?;
            let view = limit_reply(reply)?;
            updated.get_or_insert(view);
        }
        self.merged(updated.expect("a store has a partition")).await
    }

    async fn delete_limit(&self, name: &str) -> Result<(), Error> {
        let inner = &self.inner;
        // A template's home partition last, so that a delete that failed
        // half-way is found and finished by doing it again.
        for part in inner.parts_of(name).into_iter().rev() {
            match inner
                .run::<bool>(part, &inner.scripts.delete, &[("name", name)])
                .await?
            {
                Reply::Ok { .. } => {}
                Reply::Refused(refusal)
                    if refusal.err == "limit_not_found" && part != inner.layout.of(name) => {}
                Reply::Refused(refusal) => return Err(refusal.limit_error()),
                other => return Err(unexpected(&other)),
            }
        }
        Ok(())
    }

    async fn reset_limit(&self, name: &str) -> Result<LimitView, Error> {
        self.on_every_copy(name, &self.inner.scripts.reset, &[("name", name)])
            .await
    }

    async fn pause_limit(&self, name: &str, pause: PauseSpec) -> Result<LimitView, Error> {
        pause.until(local_now())?;
        let (kind, micros) = match pause.end {
            // As the engine counts it (to the nanosecond), then up to
            // Redis's microseconds: never a shorter pause.
            PauseEnd::Seconds(seconds) => (
                "for",
                Duration::from_secs_f64(seconds)
                    .as_nanos()
                    .div_ceil(1000)
                    .try_into()
                    .unwrap_or(u64::MAX),
            ),
            PauseEnd::Until(at) => ("until", at.as_unix_nanos().div_ceil(1000)),
        };
        let args = [
            ("name", name),
            ("end_kind", kind),
            ("end_us", &micros.to_string()),
            ("reason", pause.reason.as_deref().unwrap_or("")),
            ("reporter", pause.reporter.as_deref().unwrap_or("")),
        ];
        self.on_limit_or_key(name, &self.inner.scripts.pause, &args)
            .await
    }

    async fn report_throttled(
        &self,
        name: &str,
        report: ThrottleReport,
    ) -> Result<LimitView, Error> {
        // Checked before anything changes.
        if let Some(pause) = report.pause(false) {
            pause.until(local_now())?;
        }
        let lowered = self
            .on_limit_or_key(name, &self.inner.scripts.lower, &[("name", name)])
            .await?;
        match report.pause(lowered.adaptive.is_some()) {
            Some(pause) => self.pause_limit(name, pause).await,
            None => Ok(lowered),
        }
    }

    async fn resume_limit(&self, name: &str) -> Result<LimitView, Error> {
        self.on_every_copy(name, &self.inner.scripts.resume, &[("name", name)])
            .await
    }

    async fn limits(&self) -> Result<Vec<LimitView>, Error> {
        let shares: Vec<reply::Limits> = self
            .inner
            .read_all(&[("what", "limits"), ("name", ""), ("query", "")])
            .await?;
        let mut limits: Vec<LimitView> = Vec::new();
        // A template's copies, one per partition, show as one: where each
        // template's first copy went.
        let mut templates: HashMap<String, usize> = HashMap::new();
        for limit in shares.into_iter().flat_map(|share| share.limits) {
            let limit = LimitView::from(limit);
            if limit.template.is_some() {
                if let Some(&first) = templates.get(&limit.name) {
                    crate::instance::add_template_copy(&mut limits[first], limit);
                    continue;
                }
                templates.insert(limit.name.clone(), limits.len());
            }
            limits.push(limit);
        }
        limits.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(limits)
    }

    async fn instances(
        &self,
        template: &str,
        query: InstanceQuery<'_>,
    ) -> Result<Vec<LimitView>, Error> {
        // By name, each partition gives at most a page after `after`; by
        // load, every instance (a partition cannot know the others' loads).
        let paged = query.order == InstanceOrder::Name;
        let asked = serde_json::json!({
            "prefix": query.prefix,
            "after": query.after.filter(|_| paged),
            "count": paged.then_some(query.count),
        })
        .to_string();
        let args = [
            ("what", "instances"),
            ("name", template),
            ("query", asked.as_str()),
        ];
        let shares: Vec<reply::Limits> = self.inner.read_all(&args).await?;
        let views = shares.into_iter().flat_map(|share| share.limits);
        Ok(query.page(views.map(Into::into).collect()))
    }

    async fn limit(&self, name: &str) -> Result<LimitDetail, Error> {
        let inner = &self.inner;
        let part = inner.layout.of(name);
        let args = [("what", "limit"), ("name", name), ("query", "")];
        let detail: reply::Detail = inner.read(part, &args).await?;
        Ok(LimitDetail {
            limit: inner.with_copies(detail.limit.into()).await?,
            leases: across::whole_leases(inner, parted(part, detail.leases)).await?,
            waiters: detail.waiters.into_iter().map(Into::into).collect(),
        })
    }

    async fn leases(&self, on: Option<&str>) -> Result<Vec<LeaseView>, Error> {
        let inner = &self.inner;
        let leases = match on {
            Some(name) => {
                let part = inner.layout.of(name);
                let share: reply::Leases = inner
                    .read(part, &[("what", "leases"), ("name", name), ("query", "")])
                    .await?;
                parted(part, share.leases)
            }
            None => {
                let shares: Vec<reply::Leases> = inner
                    .read_all(&[("what", "leases"), ("name", ""), ("query", "")])
                    .await?;
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
pub(crate) fn parted(part: usize, leases: Vec<reply::Lease>) -> Vec<(usize, reply::Lease)> {
    leases.into_iter().map(|lease| (part, lease)).collect()
}

/// This machine's clock: pauses are checked against it (the scripts run on
/// Redis's, which can only differ by far less than the week a pause may
/// last).
fn local_now() -> Timestamp {
    reply::Int(local_micros()).micros()
}

impl RedisBackend {
    /// Runs a limit operation on `name`: on a template, on every copy of
    /// it; on a key of a template without an instance, on the instance it
    /// makes (refused with `invalid_pause` when the template has no room
    /// for another, as the engine refuses it).
    async fn on_limit_or_key(
        &self,
        name: &str,
        function: &Function,
        args: &[(&str, &str)],
    ) -> Result<LimitView, Error> {
        if template_prefix(name).is_some() {
            return self.on_every_copy(name, function, args).await;
        }
        let inner = &self.inner;
        let part = inner.layout.of(name);
        loop {
            match inner.run(part, function, args).await? {
                Reply::Refused(refusal) if refusal.err == "too_many_instances" => {
                    if !inner.borrow_room(part, &refusal).await? {
                        return Err(LimitError::InvalidPause {
                            reason: refusal.error().to_string(),
                        }
                        .into());
                    }
                }
                reply => return limit_reply(reply),
            }
        }
    }

    /// Runs a limit operation on `name` and, for a template, on its copy in
    /// every partition (its home one first, which says whether it exists);
    /// answers the limit as it is then.
    async fn on_every_copy(
        &self,
        name: &str,
        function: &Function,
        args: &[(&str, &str)],
    ) -> Result<LimitView, Error> {
        let inner = &self.inner;
        let mut first = None;
        for part in inner.parts_of(name) {
            let view = limit_reply(inner.run(part, function, args).await?)?;
            first.get_or_insert(view);
        }
        self.merged(first.expect("a store has a partition")).await
    }

    /// A limit as one partition showed it, with the other copies of a
    /// template added.
    async fn merged(&self, view: LimitView) -> Result<LimitView, Error> {
        self.inner.with_copies(view).await
    }
}

/// An adaptive limit's settings as the create and update functions take
/// them: `FACTOR RECOVERY_SECONDS`.
fn adaptive_arg(adaptive: Adaptive) -> String {
    format!("{} {}", adaptive.decrease_factor, adaptive.recovery_seconds)
}

/// A limit's definition as the create and update functions take it, each
/// field as text; for an update, '' keeps a field as it is.
struct Definition {
    slots: String,
    decay: String,
    active: &'static str,
    /// '' (keep), `set` or `clear`.
    description_change: &'static str,
    description: String,
    /// A template's `max_instances`; `None` keeps it.
    max: Option<u64>,
    /// '' (keep, or fixed for a new limit), `off`, or the settings.
    adaptive: String,
}

impl Definition {
    /// The create function's arguments, with partition `share` of the
    /// instances.
    fn create(&self, name: &str, share: u64) -> Vec<(&'static str, String)> {
        let has_description = flag(self.description_change == "set");
        vec![
            ("name", name.to_owned()),
            ("slots", self.slots.clone()),
            ("decay", self.decay.clone()),
            ("active", self.active.to_owned()),
            ("has_description", has_description.to_owned()),
            ("description", self.description.clone()),
            ("max_share", share.to_string()),
            ("max_all", self.max.unwrap_or_default().to_string()),
            ("adaptive", self.adaptive.clone()),
        ]
    }

    /// The update function's arguments, with partition `share` of the
    /// instances.
    fn update(&self, name: &str, share: u64) -> Vec<(&'static str, String)> {
        let shown = |value: u64| self.max.map(|_| value.to_string()).unwrap_or_default();
        vec![
            ("name", name.to_owned()),
            ("slots", self.slots.clone()),
            ("decay", self.decay.clone()),
            ("active", self.active.to_owned()),
            ("description_change", self.description_change.to_owned()),
            ("description", self.description.clone()),
            ("max_share", shown(share)),
            ("max_all", shown(self.max.unwrap_or_default())),
            ("adaptive", self.adaptive.clone()),
        ]
    }
}

/// Arguments as a call takes them.
fn borrowed<'a>(args: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    args.iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect()
}

pub(crate) fn limit_reply(reply: Reply<reply::Limit>) -> Result<LimitView, Error> {
    match reply {
        Reply::Ok { ok } => Ok(ok.into()),
        Reply::Refused(refusal) => Err(refusal.limit_error()),
        other => Err(unexpected(&other)),
    }
}
