//! `/v1/events`: changes of state as server-sent events, for live views.
//!
//! The stream opens with a `snapshot` of every limit, then carries `limit`
//! (a limit's new state), `limit_deleted`, `lease` (granted or renewed) and
//! `lease_ended` events. A client too slow to keep up gets `resync` and
//! should read `/v1/limits` afresh. The stream ends when the server stops.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use ratekeeper_backend::{Backend, Event};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::{Lease, Limit};
use crate::error::ApiError;
use crate::routes::AppState;

fn sse(kind: &str, data: &impl serde::Serialize) -> SseEvent {
    SseEvent::default()
        .event(kind)
        .json_data(data)
        .expect("API types always serialize")
}

fn to_sse(event: Event) -> SseEvent {
    match event {
        Event::Limit(view) => sse("limit", &Limit::from(view)),
        Event::LimitDeleted(name) => sse("limit_deleted", &serde_json::json!({ "name": name })),
        Event::Lease(view) => sse("lease", &Lease::from(view)),
        Event::LeaseEnded(id) => sse("lease_ended", &serde_json::json!({ "id": id.to_string() })),
        Event::Missed => SseEvent::default().event("resync").data("{}"),
    }
}

/// Changes of state as they happen.
#[utoipa::path(get, path = "/v1/events", tag = "service",
    responses((status = 200, description = "text/event-stream of snapshot, limit, limit_deleted, lease, lease_ended and resync events")))]
pub async fn events<B: Backend>(
    State(state): State<AppState<B>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Subscribe before the snapshot, so that nothing falls between them.
    let mut changes = state.backend.events().await?;
    let limits: Vec<Limit> = state
        .backend
        .limits()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    let (sender, receiver) = mpsc::channel(64);
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        if sender.send(Ok(sse("snapshot", &limits))).await.is_err() {
            return;
        }
        loop {
            let event = tokio::select! {
                change = changes.recv() => match change {
                    Ok(event) => to_sse(event),
                    Err(RecvError::Lagged(_)) => to_sse(Event::Missed),
                    Err(RecvError::Closed) => return,
                },
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            };
            // The client went away.
            if sender.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(receiver)).keep_alive(KeepAlive::default()))
}
