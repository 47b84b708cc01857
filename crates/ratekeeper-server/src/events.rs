//! `/v1/events`: changes of state as server-sent events, for live views.
//!
//! The stream opens with a `snapshot` of every limit, then carries `limit`
//! (a limit's new state), `limit_deleted`, `lease` (granted or renewed) and
//! `lease_ended` events. A client too slow to keep up gets `resync` and
//! should read `/v1/limits` afresh. The stream ends when the server stops.
//!
//! Every change is serialized once, however many watch: one [`Feed`] task
//! reads the backend's changes while anyone watches, turns each into its
//! event text, and broadcasts that to every subscriber. A subscriber that
//! does not read falls behind by at most [`BACKLOG`] events, then is told
//! to resync. Each subscriber still costs a wake-up and a write per change
//! until its connection's buffers fill (about 1 µs), so their number is
//! capped (`max_event_subscribers`, 256 by default): one more is answered
//! `503 too_many_subscribers`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use ratekeeper_backend::{Backend, Event};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{Mutex, watch};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};

use crate::api::{Lease, Limit, redacted_id};
use crate::error::ApiError;
use crate::routes::AppState;
use ratekeeper_api::ErrorCode;

/// How many events a subscriber may fall behind before it is told to
/// resync.
pub const BACKLOG: usize = 256;

/// One change, serialized: its event name and JSON data, and the data a
/// client token sees where that differs (a lease's id, cut short).
#[derive(Debug)]
pub struct Serialized {
    kind: &'static str,
    data: String,
    for_clients: Option<String>,
}

fn json(data: &impl serde::Serialize) -> String {
    serde_json::to_string(data).expect("API types always serialize")
}

impl Serialized {
    fn of(kind: &'static str, data: &impl serde::Serialize) -> Arc<Self> {
        Arc::new(Serialized {
            kind,
            data: json(data),
            for_clients: None,
        })
    }

    fn event(&self, whole: bool) -> SseEvent {
        let data = match (&self.for_clients, whole) {
            (Some(redacted), false) => redacted,
            _ => &self.data,
        };
        SseEvent::default().event(self.kind).data(data)
    }
}

fn serialize(event: Event) -> Arc<Serialized> {
    match event {
        Event::Limit(view) => Serialized::of("limit", &Limit::from(view)),
        Event::LimitDeleted(name) => {
            Serialized::of("limit_deleted", &serde_json::json!({ "name": name }))
        }
        Event::Lease(view) => {
            let lease = Lease::from(view);
            Arc::new(Serialized {
                kind: "lease",
                data: json(&lease),
                for_clients: Some(json(&lease.redacted())),
            })
        }
        Event::LeaseEnded(id) => {
            let whole = id.to_string();
            Arc::new(Serialized {
                kind: "lease_ended",
                data: json(&serde_json::json!({ "id": whole })),
                for_clients: Some(json(&serde_json::json!({ "id": redacted_id(&whole) }))),
            })
        }
        Event::Missed => resync(),
    }
}

fn resync() -> Arc<Serialized> {
    Arc::new(Serialized {
        kind: "resync",
        data: "{}".into(),
        for_clients: None,
    })
}

/// The serialized changes, broadcast to every subscriber; running only
/// while someone subscribes (a backend may do work for each receiver of
/// its changes: Redis describes changes only while someone listens).
pub struct Feed {
    sender: Mutex<Option<broadcast::Sender<Arc<Serialized>>>>,
    /// The most subscribers at once.
    max_subscribers: usize,
}

impl Feed {
    /// A feed for at most `max_subscribers` at once.
    pub fn new(max_subscribers: usize) -> Self {
        Feed {
            sender: Mutex::new(None),
            max_subscribers,
        }
    }

    /// A receiver of every change from now on.
    async fn subscribe<B: Backend>(
        self: &Arc<Self>,
        backend: &Arc<B>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<broadcast::Receiver<Arc<Serialized>>, ApiError> {
        let mut sender = self.sender.lock().await;
        if let Some(sender) = sender.as_ref() {
            if sender.receiver_count() >= self.max_subscribers {
                return Err(ApiError::new(
                    ErrorCode::TooManySubscribers,
                    format!(
                        "the event stream has its {} subscribers already; try again later",
                        self.max_subscribers
                    ),
                ));
            }
            return Ok(sender.subscribe());
        }
        let changes = backend.events().await?;
        let (tx, rx) = broadcast::channel(BACKLOG);
        *sender = Some(tx.clone());
        tokio::spawn(Arc::clone(self).forward(changes, tx, shutdown.clone()));
        Ok(rx)
    }

    /// Serializes each change once and passes it on, until nobody listens
    /// or the server stops.
    async fn forward(
        self: Arc<Self>,
        mut changes: broadcast::Receiver<Event>,
        tx: broadcast::Sender<Arc<Serialized>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let serialized = tokio::select! {
                change = changes.recv() => match change {
                    Ok(event) => serialize(event),
                    Err(RecvError::Lagged(_)) => resync(),
                    Err(RecvError::Closed) => break,
                },
                _ = shutdown.wait_for(|stopping| *stopping) => break,
            };
            if tx.send(serialized).is_err() {
                // Nobody listens: stop, unless someone subscribed meanwhile
                // (they do so under the lock).
                let mut sender = self.sender.lock().await;
                if tx.receiver_count() == 0 {
                    *sender = None;
                    return;
                }
            }
        }
        *self.sender.lock().await = None;
    }
}

/// Changes of state as they happen.
#[utoipa::path(get, path = "/v1/events", tag = "service",
    responses((status = 200, description = "text/event-stream of snapshot, limit, limit_deleted, lease, lease_ended and resync events")))]
pub async fn events<B: Backend>(
    State(state): State<AppState<B>>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let whole = crate::auth::Caller::scope(&caller) == crate::Scope::Admin;
    // Subscribe before the snapshot, so that nothing falls between them.
    let changes = state
        .feed
        .subscribe(&state.backend, &state.shutdown)
        .await?;
    let limits: Vec<Limit> = state
        .backend
        .limits()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    let snapshot = Serialized::of("snapshot", &limits);
    // The feed closes when the server stops, which ends the stream.
    let stream = tokio_stream::once(snapshot)
        .chain(BroadcastStream::new(changes).map(|change| match change {
            Ok(serialized) => serialized,
            Err(BroadcastStreamRecvError::Lagged(_)) => resync(),
        }))
        .map(move |serialized| Ok(serialized.event(whole)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
