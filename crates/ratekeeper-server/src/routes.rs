//! The handlers of the HTTP API. Each turns JSON into one backend operation
//! and its answer back into JSON; no limit logic lives here.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ratekeeper_backend::{AcquireSpec, Backend, Waiting};
use ratekeeper_core::{DEFAULT_LEASE_TTL, LeaseId, LimitSpec, PauseSpec, ThrottleReport};
use serde::Deserialize;
use tokio::sync::watch;

use crate::api::{
    AcquireAnswer, AcquireBody, CreateLimit, ErrorBody, InstancePage, Instances, Lease, Limit,
    LimitDetails, LimitHistory, PauseLimit, RenewBody, Renewed, ThrottledBody, UpdateLimit,
    WaitBody, WhoAmI, seconds,
};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::tickets::Tickets;
use ratekeeper_api::ErrorCode;

/// What every handler shares: one reference-counted value, since the
/// router clones its state for every request (cloning each of its parts
/// once cost about 6 % of the server's CPU under churn).
pub struct AppState<B>(Arc<Shared<B>>);

impl<B> AppState<B> {
    /// The state every handler will share.
    pub fn new(shared: Shared<B>) -> Self {
        AppState(Arc::new(shared))
    }
}

impl<B> Clone for AppState<B> {
    fn clone(&self) -> Self {
        AppState(Arc::clone(&self.0))
    }
}

impl<B> std::ops::Deref for AppState<B> {
    type Target = Shared<B>;

    fn deref(&self) -> &Shared<B> {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared<B> {
    /// Where the state lives.
    pub backend: Arc<B>,
    /// Parked waits.
    pub tickets: Arc<Tickets>,
    /// The server's measurements.
    pub metrics: Arc<Metrics>,
    /// The longest one HTTP request waits before answering with a ticket.
    pub max_wait: Duration,
    /// Becomes true when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// The changes, serialized once for every event-stream subscriber.
    pub feed: Arc<crate::events::Feed>,
    /// Whether the server requires a token.
    pub tokens_required: bool,
    /// Each limit's last minutes, sampled once a second.
    pub history: Arc<crate::history::History>,
}

/// A JSON body whose rejections are answered in the API's error format.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    /// A JSON object only: serde would also read a struct from an array of
    /// its fields in order (`[0]` as `{"slots": 0}`), which no client
    /// means.
    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::from(axum::extract::rejection::JsonRejection::from(e)))?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "the request body must be a JSON object",
            ));
        }
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(Body(value))
    }
}

/// A query string read into `T`; what does not fit is a JSON 422
/// `invalid_field` naming the problem, as for bodies (axum's own answer
/// is a plain-text 400).
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Params<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Params(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let detail = text
                    .split_once("query string: ")
                    .map_or(text.as_str(), |(_, detail)| detail);
                Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!("the query string does not fit: {detail}"),
                ))
            }
        }
    }
}

/// Like [`Body`], but an empty body means the default value.
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let empty = request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|len| len == "0")
            || !request
                .headers()
                .contains_key(axum::http::header::CONTENT_TYPE);
        if empty {
            return Ok(OptionalBody(T::default()));
        }
        let Body(value) = Body::<T>::from_request(request, state).await?;
        Ok(OptionalBody(value))
    }
}

fn lease_id(text: &str) -> Result<LeaseId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidLeaseId,
            format!("{text:?} is not a lease id (32 hexadecimal digits)"),
        )
    })
}

/// Creates a limit.
#[utoipa::path(post, path = "/v1/limits", tag = "limits", request_body = CreateLimit,
    responses((status = 201, body = Limit), (status = 409, body = ErrorBody, description = "limit_exists"),
        (status = 422, body = ErrorBody, description = "invalid_name, invalid_slots, invalid_decay, invalid_description")))]
pub async fn create_limit<B: Backend>(
    State(state): State<AppState<B>>,
    Body(body): Body<CreateLimit>,
) -> Result<(StatusCode, Json<Limit>), ApiError> {
    let view = state.backend.create_limit(LimitSpec::from(body)).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// Lists every limit, ordered by name.
#[utoipa::path(get, path = "/v1/limits", tag = "limits", responses((status = 200, body = Vec<Limit>)))]
pub async fn list_limits<B: Backend>(
    State(state): State<AppState<B>>,
) -> Result<Json<Vec<Limit>>, ApiError> {
    let limits = state.backend.limits().await?;
    Ok(Json(limits.into_iter().map(Into::into).collect()))
}

/// One limit, with its leases and its queue.
#[utoipa::path(get, path = "/v1/limits/{name}", tag = "limits", params(("name" = String, Path)),
    responses((status = 200, body = LimitDetails), (status = 404, body = ErrorBody)))]
pub async fn get_limit<B: Backend>(
    State(state): State<AppState<B>>,
    caller: Option<axum::Extension<Caller>>,
    Path(name): Path<String>,
) -> Result<Json<LimitDetails>, ApiError> {
    let found = state.backend.limit(&name).await?;
    let mut detail = LimitDetails::new(found.limit, found.leases, found.waiters);
    if Caller::scope(&caller) < crate::Scope::Admin {
        // An id releases and renews a lease: a client token sees whole
        // only the ids it was answered.
        detail.leases = detail.leases.into_iter().map(Lease::redacted).collect();
    }
    Ok(Json(detail))
}

/// Changes a limit. Raising slots or deactivating wakes waiters at once.
#[utoipa::path(patch, path = "/v1/limits/{name}", tag = "limits", params(("name" = String, Path)),
    request_body = UpdateLimit, responses((status = 200, body = Limit), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_limit<B: Backend>(
    State(state): State<AppState<B>>,
    Path(name): Path<String>,
    Body(body): Body<UpdateLimit>,
) -> Result<Json<Limit>, ApiError> {
    Ok(Json(
        state.backend.update_limit(&name, body.into()).await?.into(),
    ))
}

/// Deletes a limit; its waiters fail with `limit_deleted`.
#[utoipa::path(delete, path = "/v1/limits/{name}", tag = "limits", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_limit<B: Backend>(
    State(state): State<AppState<B>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.backend.delete_limit(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes every lease on a limit and clears its decaying slots.
#[utoipa::path(post, path = "/v1/limits/{name}/reset", tag = "limits", params(("name" = String, Path)),
    responses((status = 200, body = Limit), (status = 404, body = ErrorBody)))]
pub async fn reset_limit<B: Backend>(
    State(state): State<AppState<B>>,
    Path(name): Path<String>,
) -> Result<Json<Limit>, ApiError> {
    Ok(Json(state.backend.reset_limit(&name).await?.into()))
}

/// A template's instances, a page at a time: by name (from `after`), or
/// the busiest first; `prefix` narrows them to keys starting with it.
#[utoipa::path(get, path = "/v1/limits/{name}/instances", tag = "limits",
    params(("name" = String, Path), InstancePage),
    responses((status = 200, body = Instances), (status = 404, body = ErrorBody)))]
pub async fn list_instances<B: Backend>(
    State(state): State<AppState<B>>,
    Path(name): Path<String>,
    Params(page): Params<InstancePage>,
) -> Result<Json<Instances>, ApiError> {
    page.check()
        .map_err(|message| ApiError::new(ErrorCode::InvalidField, message).in_field("count"))?;
    let found = state.backend.instances(&name, page.query()).await?;
    let found = found.into_iter().map(Limit::from).collect();
    Ok(Json(Instances::new(found, &page)))
}

/// Pauses a limit: it grants nothing until the pause ends, then grants its
/// queue from the head. A pause is extended by a later one that ends
/// later, never shortened. A client token may pause (that is how workers
/// report an upstream's 429 or 503 with `Retry-After`).
#[utoipa::path(post, path = "/v1/limits/{name}/pause", tag = "limits", params(("name" = String, Path)),
    request_body = PauseLimit,
    responses((status = 200, body = Limit), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody, description = "invalid_pause")))]
pub async fn pause_limit<B: Backend>(
    State(state): State<AppState<B>>,
    caller: Option<axum::Extension<Caller>>,
    Path(name): Path<String>,
    Body(body): Body<PauseLimit>,
) -> Result<Json<Limit>, ApiError> {
    let mut pause = PauseSpec::try_from(body).map_err(ratekeeper_backend::Error::from)?;
    if pause.reporter.is_none() {
        pause.reporter = Some(format!("{} token", Caller::scope(&caller).name()));
    }
    Ok(Json(state.backend.pause_limit(&name, pause).await?.into()))
}

/// Reports that the upstream behind a limit said "slow down" (a 429, or a
/// 503 with `Retry-After`): an adaptive limit slows down, and the limit
/// pauses for `retry_after_seconds` (a fixed limit for a second without
/// it). A client token may report.
#[utoipa::path(post, path = "/v1/limits/{name}/throttled", tag = "limits", params(("name" = String, Path)),
    request_body = ThrottledBody,
    responses((status = 200, body = Limit), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody, description = "invalid_pause")))]
pub async fn report_throttled<B: Backend>(
    State(state): State<AppState<B>>,
    caller: Option<axum::Extension<Caller>>,
    Path(name): Path<String>,
    Body(body): Body<ThrottledBody>,
) -> Result<Json<Limit>, ApiError> {
    let mut report = ThrottleReport::from(body);
    if report.reporter.is_none() {
        report.reporter = Some(format!("{} token", Caller::scope(&caller).name()));
    }
    Ok(Json(
        state.backend.report_throttled(&name, report).await?.into(),
    ))
}

/// Ends a limit's pause now; its queue is granted from the head.
#[utoipa::path(post, path = "/v1/limits/{name}/resume", tag = "limits", params(("name" = String, Path)),
    responses((status = 200, body = Limit), (status = 404, body = ErrorBody)))]
pub async fn resume_limit<B: Backend>(
    State(state): State<AppState<B>>,
    Path(name): Path<String>,
) -> Result<Json<Limit>, ApiError> {
    Ok(Json(state.backend.resume_limit(&name).await?.into()))
}

/// What a limit did over the last minutes, one sample a second, oldest
/// first: what a page draws the moment it opens.
#[utoipa::path(get, path = "/v1/limits/{name}/history", tag = "limits", params(("name" = String, Path)),
    responses((status = 200, body = LimitHistory), (status = 404, body = ErrorBody)))]
pub async fn limit_history<B: Backend>(
    State(state): State<AppState<B>>,
    Path(name): Path<String>,
) -> Result<Json<LimitHistory>, ApiError> {
    let history = state.history.of(&name);
    if !history.tracked {
        // Not sampled (yet): say so for a limit, 404 for no limit.
        state.backend.limit(&name).await?;
    }
    Ok(Json(history))
}

/// Asks for slots. Answers 200 once granted; if still queued when this
/// request's wait ends, 202 with a ticket that keeps the place in the queue.
#[utoipa::path(post, path = "/v1/acquire", tag = "acquire", request_body = AcquireBody,
    responses((status = 200, body = AcquireAnswer, description = "granted"),
        (status = 202, body = AcquireAnswer, description = "still waiting: continue on the ticket"),
        (status = 404, body = ErrorBody, description = "limit_not_found"),
        (status = 409, body = ErrorBody, description = "limit_deleted while waiting"),
        (status = 422, body = ErrorBody, description = "the request can never be granted"),
        (status = 429, body = ErrorBody, description = "would_block or timeout"),
        (status = 503, body = ErrorBody, description = "shutting down; retry")))]
pub async fn acquire<B: Backend>(
    State(state): State<AppState<B>>,
    caller: Option<axum::Extension<Caller>>,
    Body(body): Body<AcquireBody>,
) -> Result<Response, ApiError> {
    // Creating a limit is an admin's change, whichever way it is asked
    // for: a client token could otherwise make limits without end and
    // squat names.
    let quota = Caller::quota(&caller);
    if let Some(quota) = &quota {
        quota.check(unix_millis())?;
    }
    if body.create_if_missing && Caller::scope(&caller) < crate::Scope::Admin {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "create_if_missing creates limits, which needs an admin token; \
             a client token may only use limits that exist",
        )
        .in_field("create_if_missing"));
    }
    let spec = AcquireSpec {
        occupy: body.occupy,
        mode: body.mode.into(),
        lease_ttl: body
            .lease_seconds
            .map(|s| seconds("lease_seconds", s))
            .transpose()?
            .unwrap_or(DEFAULT_LEASE_TTL),
        timeout: body
            .timeout_seconds
            .map(|s| seconds("timeout_seconds", s))
            .transpose()?,
        holder: body.holder,
        create_if_missing: body.create_if_missing,
        names: body.names,
    };
    let wait = request_wait(&state, body.wait_seconds)?;
    let waiting = state.backend.acquire(spec);
    let parking = Parking {
        tickets: &state.tickets,
        ticket: None,
        waiting: Some(waiting),
        hold: None,
        quota,
    };
    wait_on(&state, parking, wait).await
}

/// Continues waiting on a ticket; answers as `POST /v1/acquire` does.
#[utoipa::path(post, path = "/v1/tickets/{ticket}/wait", tag = "acquire", params(("ticket" = String, Path)),
    request_body = WaitBody, responses((status = 200, body = AcquireAnswer), (status = 202, body = AcquireAnswer),
        (status = 404, body = ErrorBody, description = "ticket_not_found: lapsed, decided, or being waited on")))]
pub async fn wait_ticket<B: Backend>(
    State(state): State<AppState<B>>,
    Path(ticket): Path<String>,
    OptionalBody(body): OptionalBody<WaitBody>,
) -> Result<Response, ApiError> {
    let wait = request_wait(&state, body.wait_seconds)?;
    let parked = state
        .tickets
        .take(&ticket)
        .ok_or_else(|| ticket_not_found(&ticket))?;
    // A grant counts against the quota of the token that asked for it.
    let quota = parked.hold.as_ref().map(|hold| Arc::clone(hold.quota()));
    let parking = Parking {
        tickets: &state.tickets,
        ticket: Some(ticket),
        waiting: Some(parked.waiting),
        hold: parked.hold,
        quota,
    };
    wait_on(&state, parking, wait).await
}

/// Gives up a ticket's place in the queue.
#[utoipa::path(delete, path = "/v1/tickets/{ticket}", tag = "acquire", params(("ticket" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn cancel_ticket<B: Backend>(
    State(state): State<AppState<B>>,
    Path(ticket): Path<String>,
) -> Result<StatusCode, ApiError> {
    let parked = state
        .tickets
        .take(&ticket)
        .ok_or_else(|| ticket_not_found(&ticket))?;
    drop(parked);
    Ok(StatusCode::NO_CONTENT)
}

fn ticket_not_found(ticket: &str) -> ApiError {
    ApiError::new(
        ErrorCode::TicketNotFound,
        format!(
            "no parked wait has ticket {ticket:?}: it lapsed, was decided, or is being waited on"
        ),
    )
}

fn request_wait<B>(state: &AppState<B>, wait_seconds: Option<f64>) -> Result<Duration, ApiError> {
    Ok(wait_seconds
        .map(|s| seconds("wait_seconds", s))
        .transpose()?
        .map_or(state.max_wait, |wait| wait.min(state.max_wait)))
}

/// Waits at most `wait` for a decision, then parks the wait under its
/// ticket (a new one for a first request). A dropped connection drops this
/// future: a first request's wait is dropped with it and leaves the queue at
/// once, since its client never learnt a ticket; a ticket's wait is parked
/// again, so that a client whose connection failed can come back to its
/// place until the ticket lapses.
async fn wait_on<B: Backend>(
    state: &AppState<B>,
    mut parking: Parking<'_>,
    wait: Duration,
) -> Result<Response, ApiError> {
    let mut shutdown = state.shutdown.clone();
    let waiting = parking.waiting.as_mut().expect("set above");
    let outcome = tokio::select! {
        biased;
        outcome = waiting => outcome,
        _ = shutdown.wait_for(|stopping| *stopping) => {
            parking.waiting = None;
            return Err(ApiError::shutting_down());
        }
        () = tokio::time::sleep(wait) => {
            let answer = AcquireAnswer::Waiting {
                ticket: parking.park()?,
                lapse_seconds: state.tickets.lapse().as_secs_f64(),
            };
            return Ok((StatusCode::ACCEPTED, Json(answer)).into_response());
        }
    };
    parking.waiting = None;
    let quota = parking.quota.take();
    drop(parking);
    state
        .metrics
        .acquired(outcome.as_ref().map(|g| g.waited).map_err(|e| e.code()));
    let granted = still_held(state, outcome?).await?;
    if let (Some(quota), Some(lease)) = (quota, &granted.lease) {
        quota.granted(lease.id, lease.expires_at.as_unix_millis());
    }
    let answer = AcquireAnswer::granted(granted.lease, granted.granted_at, granted.waited);
    Ok(Json(answer).into_response())
}

/// A grant as it may be answered: a lease with less than half its TTL
/// left (the server was paused, or starved, between the grant and the
/// answer; after a pause the engine grants at the instants things fell due,
/// so a lease can be nearly spent when it is answered) would tell the
/// holder it holds what it may lose before it even starts. It is renewed
/// first; if it is gone already, the client is told to retry.
async fn still_held<B: Backend>(
    state: &AppState<B>,
    mut granted: ratekeeper_backend::Granted,
) -> Result<ratekeeper_backend::Granted, ApiError> {
    let Some(lease) = granted.lease else {
        return Ok(granted);
    };
    let expires = lease.expires_at.as_unix_millis();
    let ttl = expires.saturating_sub(granted.granted_at.as_unix_millis());
    let left = expires.saturating_sub(unix_millis());
    if left > 0 && left >= ttl / 2 {
        return Ok(granted);
    }
    match state.backend.renew(lease.id, None).await {
        Ok(renewed) => {
            granted.lease = Some(renewed);
            Ok(granted)
        }
        Err(_) => Err(ApiError::new(
            ErrorCode::GrantExpired,
            "the grant expired before it could be answered (the server was held up); retry",
        )),
    }
}

/// The time now, in Unix milliseconds, on a clock that a wall-clock step
/// while the server runs does not move (the engine's own kind of clock).
fn unix_millis() -> u64 {
    static CLOCK: std::sync::OnceLock<ratekeeper_driver::Clock> = std::sync::OnceLock::new();
    CLOCK
        .get_or_init(ratekeeper_driver::Clock::new)
        .now()
        .as_unix_millis()
}

/// A wait that goes back under its ticket unless it was decided.
struct Parking<'a> {
    tickets: &'a Arc<Tickets>,
    /// `None` for a first request, which has no ticket yet.
    ticket: Option<String>,
    waiting: Option<Waiting>,
    /// The ticket's place in its token's quota, once it has a ticket.
    hold: Option<crate::quota::TicketHold>,
    /// The quota of the token that asked, which a grant counts against.
    quota: Option<Arc<crate::quota::Quota>>,
}

impl Parking<'_> {
    /// Parks the wait now; returns its ticket. A first request's wait is
    /// refused (and withdrawn) if the table or its token's quota is full.
    fn park(&mut self) -> Result<String, ApiError> {
        let waiting = self.waiting.take().expect("parked once");
        match self.ticket.take() {
            Some(ticket) => {
                let hold = self.hold.take();
                self.tickets
                    .park(ticket.clone(), crate::tickets::Parked { waiting, hold });
                Ok(ticket)
            }
            None => self.tickets.park_new(waiting, self.quota.as_ref()),
        }
    }
}

impl Drop for Parking<'_> {
    fn drop(&mut self) {
        if self.waiting.is_some() && self.ticket.is_some() {
            let _ = self.park();
        }
    }
}

/// Which leases to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeaseFilter {
    /// Only leases holding slots on this limit.
    pub limit: Option<String>,
}

/// Live leases: who holds what.
#[utoipa::path(get, path = "/v1/leases", tag = "leases", params(LeaseFilter),
    responses((status = 200, body = Vec<Lease>), (status = 404, body = ErrorBody)))]
pub async fn list_leases<B: Backend>(
    State(state): State<AppState<B>>,
    caller: Option<axum::Extension<Caller>>,
    Params(filter): Params<LeaseFilter>,
) -> Result<Json<Vec<Lease>>, ApiError> {
    let leases = state.backend.leases(filter.limit.as_deref()).await?;
    let whole = Caller::scope(&caller) == crate::Scope::Admin;
    Ok(Json(
        leases
            .into_iter()
            .map(Lease::from)
            .map(|lease| if whole { lease } else { lease.redacted() })
            .collect(),
    ))
}

/// Extends a lease.
#[utoipa::path(post, path = "/v1/leases/{id}/renew", tag = "leases", params(("id" = String, Path)),
    request_body = RenewBody, responses((status = 200, body = Renewed),
        (status = 410, body = ErrorBody, description = "lease_expired or lease_revoked")))]
pub async fn renew_lease<B: Backend>(
    State(state): State<AppState<B>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<RenewBody>,
) -> Result<Json<Renewed>, ApiError> {
    let id = lease_id(&id)?;
    let ttl = body
        .lease_seconds
        .map(|s| seconds("lease_seconds", s))
        .transpose()?;
    let renewed = state.backend.renew(id, ttl).await;
    if let Some(quota) = Caller::quota(&caller) {
        match &renewed {
            Ok(grant) => quota.renewed(id, grant.expires_at.as_unix_millis()),
            Err(_) => quota.ended(id),
        }
    }
    let grant = renewed?;
    Ok(Json(Renewed {
        lease_id: grant.id.to_string(),
        expires_at: grant.expires_at.as_unix_millis(),
    }))
}

/// Releases a lease, freeing its slots for the next waiters.
#[utoipa::path(delete, path = "/v1/leases/{id}", tag = "leases", params(("id" = String, Path)),
    responses((status = 204), (status = 410, body = ErrorBody, description = "lease_expired or lease_revoked")))]
pub async fn release_lease<B: Backend>(
    State(state): State<AppState<B>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = lease_id(&id)?;
    if let Some(quota) = Caller::quota(&caller) {
        quota.ended(id);
    }
    state.backend.release(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the caller's token may do: the web UI shows only the controls it
/// can use.
#[utoipa::path(get, path = "/v1/whoami", tag = "service", responses((status = 200, body = WhoAmI)))]
pub async fn whoami<B: Backend>(
    State(state): State<AppState<B>>,
    caller: Option<axum::Extension<Caller>>,
) -> Json<WhoAmI> {
    Json(WhoAmI {
        scope: Caller::scope(&caller).name().into(),
        tokens_required: state.tokens_required,
    })
}

/// Liveness: the process serves HTTP (`/healthz` is the same).
#[utoipa::path(get, path = "/livez", tag = "service", responses((status = 200, description = "serving")))]
pub async fn livez() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the store answers, checked for real (the embedded store's
/// writer can write; Redis answers a round trip). 503 with the reason
/// otherwise, so that a load balancer sends traffic elsewhere.
#[utoipa::path(get, path = "/readyz", tag = "service", responses((status = 200, description = "ready"),
    (status = 503, body = ErrorBody, description = "not_ready: the store cannot serve")))]
pub async fn readyz<B: Backend>(
    State(state): State<AppState<B>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if *state.shutdown.borrow() {
        return Err(ApiError::shutting_down());
    }
    match state.backend.health().await {
        Ok(()) => Ok(Json(serde_json::json!({ "status": "ready" }))),
        Err(err) => Err(ApiError::new(ErrorCode::NotReady, err.to_string())),
    }
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, description = "OpenMetrics text")))]
pub async fn metrics<B: Backend>(State(state): State<AppState<B>>) -> Result<Response, ApiError> {
    let limits = state.backend.limits().await?;
    let text = state.metrics.render(limits, state.tickets.len());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// A path that exists, with a method it does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that method; see /openapi.json",
    )
}

/// Any path the API does not have.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint; see /openapi.json")
}
