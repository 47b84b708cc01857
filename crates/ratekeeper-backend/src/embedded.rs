//! The embedded backend: the engine in this process, on the driver, with
//! its state in a durable file (or, by choice, only in memory). The file
//! needs the `durable` feature; without it, only [`Embedded::in_memory`]
//! exists and no database is linked.

#[cfg(feature = "durable")]
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ratekeeper_core::{
    Change, Engine, Held, InstanceQuery, LeaseGrant, LeaseId, LeaseView, LimitPatch, LimitSpec,
    LimitView, PauseSpec, ThrottleReport,
};
use ratekeeper_driver::Driver;
use tokio::sync::broadcast;

use crate::backend::{AcquireSpec, Backend, Error, Event, Granted, LimitDetail, Waiting};
#[cfg(feature = "durable")]
use crate::store::{Store, StoreError};

/// Without the `durable` feature there is no store: a type without values,
/// so that every use of one is code that cannot run.
#[cfg(not(feature = "durable"))]
enum Store {}

#[cfg(not(feature = "durable"))]
impl Store {
    async fn durable(&self) -> Result<(), String> {
        match *self {}
    }

    fn writable(&self) -> Result<(), String> {
        match *self {}
    }

    fn health(&self) -> Result<(), String> {
        match *self {}
    }
}

/// How many events a slow live view may fall behind before it is told to
/// read the state afresh.
const EVENT_BUFFER: usize = 4096;

/// The engine of this process as a [`Backend`].
#[derive(Clone)]
pub struct Embedded {
    driver: Driver,
    /// `None` with `--durability memory`: nothing survives a restart.
    store: Option<Arc<Store>>,
    events: broadcast::Sender<Event>,
}

impl Embedded {
    /// Keeps the state in `dir`, restoring whatever it holds: limits, live
    /// leases and decaying slots. Leases that expired while the server was
    /// down expire at once.
    #[cfg(feature = "durable")]
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let (store, records) = Store::open(dir)?;
        let engine = Engine::restore(
            random_seed(),
            records,
            ratekeeper_driver::Clock::new().now(),
        )
        .map_err(|e| StoreError::Corrupt {
            path: dir.join(crate::store::DB_FILE),
            reason: e.to_string(),
        })?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let journal_store = Arc::clone(&store);
        let journal_events = events.clone();
        let driver = Driver::with_journal(
            engine,
            Box::new(move |engine, changes| {
                publish(&journal_events, engine, &changes);
                journal_store.record(changes);
            }),
        );
        Ok(Embedded {
            driver,
            store: Some(store),
            events,
        })
    }

    /// Keeps the state in memory only: faster, and forgotten on restart.
    pub fn in_memory() -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let journal_events = events.clone();
        let driver = Driver::with_journal(
            Engine::new(random_seed()),
            Box::new(move |engine, changes| publish(&journal_events, engine, &changes)),
        );
        Embedded {
            driver,
            store: None,
            events,
        }
    }

    /// Runs the engine's timer as a task of `runtime` rather than on a
    /// thread of its own: grants then wake their waiters without waking a
    /// parked worker first. For a server, whose backend lives no longer
    /// than its runtime; see [`Driver::run_timer_on`].
    pub fn run_timer_on(&self, runtime: tokio::runtime::Handle) {
        self.driver.run_timer_on(runtime);
    }

    /// Waits until every change made so far is durable; `then` says what
    /// became of the caller's change if the store failed to write it.
    async fn durable(&self, then: &str) -> Result<(), Error> {
        match &self.store {
            Some(store) => store.durable().await.map_err(|reason| Error::Unavailable {
                reason: format!("{reason}; {then}"),
            }),
            None => Ok(()),
        }
    }

    /// Refuses a change before it is made while the store cannot write, so
    /// that being refused means nothing changed.
    fn writable(&self) -> Result<(), Error> {
        match &self.store {
            Some(store) => store.writable().map_err(|reason| Error::Unavailable {
                reason: format!("{reason}; nothing was changed"),
            }),
            None => Ok(()),
        }
    }

    /// Runs a changing operation and answers once its change is durable.
    async fn change<T, E>(
        &self,
        operation: impl FnOnce(&mut Engine, ratekeeper_core::Timestamp) -> Result<T, E>,
    ) -> Result<T, Error>
    where
        Error: From<E>,
    {
        self.writable()?;
        let value = self.driver.apply(operation)?;
        // Not undone: it stays in memory and is written once the store can
        // write again, and its caller is told so.
        self.durable(
            "the change is not stored yet: it is written once the store can write again, \
             and lost if the server stops first",
        )
        .await?;
        Ok(value)
    }
}

impl Backend for Embedded {
    async fn create_limit(&self, spec: LimitSpec) -> Result<LimitView, Error> {
        self.change(|engine, now| engine.create_limit(now, &spec))
            .await
    }

    async fn update_limit(&self, name: &str, patch: LimitPatch) -> Result<LimitView, Error> {
        self.change(|engine, now| engine.update_limit(now, name, &patch))
            .await
    }

    async fn delete_limit(&self, name: &str) -> Result<(), Error> {
        self.change(|engine, now| engine.delete_limit(now, name))
            .await
    }

    async fn reset_limit(&self, name: &str) -> Result<LimitView, Error> {
        self.change(|engine, now| engine.reset_limit(now, name))
            .await
    }

    async fn pause_limit(&self, name: &str, pause: PauseSpec) -> Result<LimitView, Error> {
        self.change(|engine, now| engine.pause(now, name, &pause))
            .await
    }

    async fn report_throttled(
        &self,
        name: &str,
        report: ThrottleReport,
    ) -> Result<LimitView, Error> {
        self.change(|engine, now| engine.report_throttled(now, name, &report))
            .await
    }

    async fn resume_limit(&self, name: &str) -> Result<LimitView, Error> {
        self.change(|engine, now| engine.resume(now, name)).await
    }

    async fn limits(&self) -> Result<Vec<LimitView>, Error> {
        Ok(self.driver.apply(|engine, now| {
            engine.advance(now);
            engine.limits()
        }))
    }

    async fn limits_named(&self, names: &[String]) -> Result<Vec<LimitView>, Error> {
        Ok(self.driver.apply(|engine, now| {
            engine.advance(now);
            names
                .iter()
                .filter_map(|name| engine.limit(name).ok())
                .collect()
        }))
    }

    async fn instances(
        &self,
        template: &str,
        query: InstanceQuery<'_>,
    ) -> Result<Vec<LimitView>, Error> {
        Ok(self.driver.apply(|engine, now| {
            engine.advance(now);
            engine.instances(template, &query)
        })?)
    }

    async fn limit(&self, name: &str) -> Result<LimitDetail, Error> {
        let detail = self.driver.apply(|engine, now| {
            engine.advance(now);
            Ok::<_, ratekeeper_core::LimitError>(LimitDetail {
                limit: engine.limit(name)?,
                leases: engine.leases_on(name)?,
                waiters: engine.waiters_on(name)?,
            })
        })?;
        Ok(detail)
    }

    async fn leases(&self, on: Option<&str>) -> Result<Vec<LeaseView>, Error> {
        let leases = self.driver.apply(|engine, now| {
            engine.advance(now);
            match on {
                Some(name) => engine.leases_on(name),
                None => Ok(engine.leases()),
            }
        })?;
        Ok(leases)
    }

    fn acquire(&self, spec: AcquireSpec) -> Waiting {
        if let Err(refused) = self.writable() {
            return Box::pin(std::future::ready(Err(refused)));
        }
        let names: Vec<&str> = spec.names.iter().map(String::as_str).collect();
        let request = spec.request(&names);
        let pending = self.driver.acquire(&request);
        let backend = self.clone();
        Box::pin(async move {
            let grant = pending.await?;
            let lease = match grant.held {
                Held::Lease(lease) => Some(lease),
                _ => None,
            };
            // Dropped while the grant is being made durable, the request
            // gives its lease back rather than leaving it to expire.
            let give_back = GiveBackOnDrop {
                driver: &backend.driver,
                lease,
            };
            backend
                .durable("the grant could not be stored and was given back; ask again")
                .await?;
            give_back.defuse();
            Ok(Granted {
                lease,
                granted_at: grant.granted_at,
                waited: grant.waited,
            })
        })
    }

    async fn renew(&self, id: LeaseId, ttl: Option<Duration>) -> Result<LeaseGrant, Error> {
        self.change(|engine, now| engine.renew(now, id, ttl)).await
    }

    /// Answers before the release is on disk. That is safe: if the server
    /// dies first, the lease comes back on restart and holds its slots until
    /// it is released again or its TTL ends — capacity is lost for a while,
    /// but nothing is ever over-admitted. A release that let someone in is
    /// the exception: that waiter is answered only once its own grant, and
    /// so this release, is durable, and the release writes it.
    async fn release(&self, id: LeaseId) -> Result<(), Error> {
        let (released, woke) = self
            .driver
            .apply_waking(|engine, now| engine.release(now, id));
        released?;
        if woke && let Some(store) = &self.store {
            // The slots went to a waiter, whose answer waits for its grant
            // to be stored: this task, running already, writes that frame
            // now rather than after its own answer has gone out (see
            // BENCHMARKS.md, durable handoff). The release is made whatever
            // becomes of the write; the waiter hears of a failed one from
            // its own wait. Then the waiter, ready on this thread, is let
            // answer first: the releaser is done with the slots, the
            // waiter is waiting for them.
            let _ = store.durable().await;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    async fn events(&self) -> Result<broadcast::Receiver<Event>, Error> {
        Ok(self.events.subscribe())
    }

    async fn flush(&self) -> Result<(), Error> {
        self.durable("changes made since the last write are not stored")
            .await
    }

    async fn health(&self) -> Result<(), Error> {
        match &self.store {
            Some(store) => store
                .health()
                .map_err(|reason| Error::Unavailable { reason }),
            None => Ok(()),
        }
    }
}

struct GiveBackOnDrop<'a> {
    driver: &'a Driver,
    lease: Option<LeaseGrant>,
}

impl GiveBackOnDrop<'_> {
    /// The lease is in safe hands: keep it.
    fn defuse(mut self) {
        self.lease = None;
    }
}

impl Drop for GiveBackOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.driver.give_back(Held::Lease(lease));
        }
    }
}

/// Turns journal changes into events, only when someone listens: views are
/// built under the engine's lock, which is not free.
fn publish(events: &broadcast::Sender<Event>, engine: &Engine, changes: &[Change]) {
    if events.receiver_count() == 0 {
        return;
    }
    for change in changes {
        let event = match change {
            Change::Limit(record) => match engine.limit(&record.name) {
                Ok(view) => Event::Limit(view),
                Err(_) => continue,
            },
            Change::LimitDeleted(name) => Event::LimitDeleted(name.clone()),
            Change::Lease(record) => match engine.lease(record.id) {
                Some(view) => Event::Lease(view),
                None => continue,
            },
            Change::LeaseDeleted(id) => Event::LeaseEnded(*id),
        };
        // Fails only when every receiver has gone since the check.
        let _ = events.send(event);
    }
}

fn random_seed() -> [u8; 32] {
    let mut seed = [0; 32];
    getrandom::fill(&mut seed).expect("the OS random source is available");
    seed
}
