//! The ratekeeper HTTP API over any [`Backend`].
//!
//! [`serve`] takes an already-bound listener (so tests bind port 0), a
//! backend and a [`ServerConfig`], and serves until the shutdown future
//! resolves. The server is thin: every handler is one backend operation.
//! Waiting happens here, on the server: an acquire waits up to
//! `max_wait` inside its HTTP request, then answers with a ticket that keeps
//! its place in the queue (see [`tickets`]). Grants are pushed by the
//! backend the moment capacity frees; nothing polls.

pub mod api;
pub mod auth;
pub mod error;
pub mod events;
pub mod history;
pub mod listen;
pub mod metrics;
pub mod origin;
pub mod quota;
pub mod routes;
pub mod tickets;
pub mod tls;
pub mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use ratekeeper_backend::Backend;
use tokio::net::TcpListener;
use tokio::sync::watch;
use utoipa::OpenApi;

pub use auth::{Scope, Token, TokenError, Tokens};
pub use history::HistoryConfig;
pub use listen::Budget;
pub use origin::HostPolicy;
pub use quota::QuotaLimits;
pub use tls::{ServerTls, TlsError, TlsFiles};

use crate::routes::AppState;

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Accepted tokens; none means every request is allowed.
    pub tokens: Tokens,
    /// The longest one HTTP request waits before answering with a ticket.
    pub max_wait: Duration,
    /// How long a ticket lives without anyone waiting on it.
    pub ticket_lapse: Duration,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// The host names answered to, and the sites whose pages may call.
    pub hosts: HostPolicy,
    /// What connections may cost: how many, and how long they may dawdle.
    pub budget: Budget,
    /// How many may watch `/v1/events` at once.
    pub max_event_subscribers: usize,
    /// How many tickets may be parked at once, whoever asked; each token
    /// is also bounded by its own quota.
    pub max_tickets: usize,
    /// Serve HTTPS with this configuration (see [`TlsFiles::load`]),
    /// replaceable while the server runs; `None`: plain HTTP.
    pub tls: Option<ServerTls>,
    /// How much of each limit's past is kept for `/v1/limits/{name}/history`.
    pub history: HistoryConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tokens: Tokens::default(),
            max_wait: Duration::from_secs(20),
            ticket_lapse: Duration::from_secs(10),
            body_limit: 64 * 1024,
            hosts: HostPolicy::default(),
            budget: Budget::default(),
            max_event_subscribers: 256,
            max_tickets: 100_000,
            tls: None,
            history: HistoryConfig::default(),
        }
    }
}

/// Lists every operation of the API once. Each handler's
/// `#[utoipa::path]` says its method and path; from this one list come both
/// [`ApiDoc`], the OpenAPI document, and `operations`, the router that
/// serves them, so a route cannot be served undocumented or documented
/// unserved.
macro_rules! operations {
    ($($module:ident :: $handler:ident $(::<$backend:ident>)?),* $(,)?) => {
        /// The OpenAPI document, generated from the handlers and types.
        #[derive(OpenApi)]
        #[openapi(
            info(title = "ratekeeper", description = "Global concurrency limits and rate limits"),
            paths($($module::$handler),*),
            modifiers(&BearerAuth, &CommonAnswers),
        )]
        pub struct ApiDoc;

        /// Every operation of [`ApiDoc`], routed to its handler.
        fn operations<B: Backend>() -> Router<AppState<B>> {
            let router = Router::new();
            $(
                let router = paste::paste! {
                    route(
                        router,
                        <$module::[<__path_ $handler>] as utoipa::Path>::path(),
                        <$module::[<__path_ $handler>] as utoipa::Path>::methods(),
                        $module::$handler $(::<$backend>)?,
                    )
                };
            )*
            router
        }
    };
}

operations![
    routes::create_limit::<B>,
    routes::list_limits::<B>,
    routes::get_limit::<B>,
    routes::update_limit::<B>,
    routes::delete_limit::<B>,
    routes::reset_limit::<B>,
    routes::list_instances::<B>,
    routes::pause_limit::<B>,
    routes::report_throttled::<B>,
    routes::resume_limit::<B>,
    routes::limit_history::<B>,
    routes::acquire::<B>,
    routes::wait_ticket::<B>,
    routes::cancel_ticket::<B>,
    routes::list_leases::<B>,
    routes::renew_lease::<B>,
    routes::release_lease::<B>,
    events::events::<B>,
    routes::whoami::<B>,
    routes::livez,
    routes::readyz::<B>,
    routes::metrics::<B>,
];

/// Adds `handler` at `path` (as the OpenAPI document writes it, which is
/// also axum's syntax: `/v1/limits/{name}`) for `methods`.
fn route<S, H, T>(
    router: Router<S>,
    path: String,
    methods: Vec<utoipa::openapi::HttpMethod>,
    handler: H,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    H: axum::handler::Handler<T, S>,
    T: 'static,
{
    use axum::routing::{MethodFilter, MethodRouter};
    use utoipa::openapi::HttpMethod;
    let methods = methods
        .into_iter()
        .fold(MethodRouter::new(), |served, method| {
            let filter = match method {
                HttpMethod::Get => MethodFilter::GET,
                HttpMethod::Post => MethodFilter::POST,
                HttpMethod::Put => MethodFilter::PUT,
                HttpMethod::Patch => MethodFilter::PATCH,
                HttpMethod::Delete => MethodFilter::DELETE,
                HttpMethod::Head => MethodFilter::HEAD,
                HttpMethod::Options => MethodFilter::OPTIONS,
                HttpMethod::Trace => MethodFilter::TRACE,
            };
            served.on(filter, handler.clone())
        });
    router.route(&path, methods)
}

/// What every operation may answer besides its own statuses, and the
/// shape of a limit name in paths: one place rather than on each route.
struct CommonAnswers;

impl utoipa::Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::SecurityRequirement;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        let open = ["/healthz", "/livez", "/readyz", "/openapi.json"];
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let answers = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    answers
                        .entry(status.into())
                        .or_insert_with(|| error(description));
                };
                if !open.contains(&path.as_str()) {
                    add("401", "unauthorized or invalid_token: a token is needed");
                    add(
                        "403",
                        "forbidden (the token's scope), host_not_allowed, origin_not_allowed",
                    );
                }
                add("405", "method_not_allowed");
                add("408", "the request body stopped arriving");
                add("503", "too_many_connections, shutting_down, unavailable");
                let has_body = operation.request_body.is_some()
                    || path.ends_with("/reset")
                    || path.ends_with("/wait");
                if has_body {
                    add("400", "invalid_json: the body is not JSON");
                    add("413", "body_too_large");
                    add(
                        "415",
                        "unsupported_media_type: a body must be application/json",
                    );
                }
                let mut parameters = operation.parameters.iter_mut().flatten().peekable();
                if has_body || parameters.peek().is_some() {
                    add(
                        "422",
                        "invalid_body, invalid_field, a malformed name or id, and the refusals \
                         of the operation",
                    );
                }
                for parameter in parameters {
                    use utoipa::PartialSchema;
                    parameter.schema = match parameter.name.as_str() {
                        "name" | "limit" => Some(api::LimitName::schema()),
                        "id" | "ticket" => Some(api::LeaseIdText::schema()),
                        _ => continue,
                    };
                }
                // Renewing and waiting on a ticket take an optional body.
                if (path.ends_with("/renew") || path.ends_with("/wait"))
                    && let Some(body) = operation.request_body.as_mut()
                {
                    body.required = Some(utoipa::openapi::Required::False);
                }
                if open.contains(&path.as_str()) {
                    // No token needed: an empty requirement says so.
                    operation.security = Some(vec![SecurityRequirement::default()]);
                }
            }
        }
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The whole API as a router, with `shutdown` turning true when the server
/// starts stopping (waiting requests then answer 503).
pub fn router<B: Backend>(
    backend: Arc<B>,
    config: &ServerConfig,
    shutdown: watch::Receiver<bool>,
) -> (Router, Arc<tickets::Tickets>, Arc<history::History>) {
    let tickets = tickets::Tickets::new(config.ticket_lapse, config.max_tickets);
    let metrics = metrics::Metrics::new();
    let state = AppState::new(routes::Shared {
        backend,
        tickets: Arc::clone(&tickets),
        metrics: Arc::clone(&metrics),
        max_wait: config.max_wait,
        shutdown,
        feed: Arc::new(events::Feed::new(config.max_event_subscribers)),
        tokens_required: config.tokens.required(),
        history: history::History::new(config.history),
    });
    let history = Arc::clone(&state.history);
    // Serialised once and shared: the router is cloned per connection.
    let openapi = axum::body::Bytes::from(
        serde_json::to_vec(&ApiDoc::openapi()).expect("the API description serialises"),
    );
    let router = operations::<B>()
        // Not operations of the API: an alias, the page and the document.
        .route("/healthz", get(routes::livez))
        .route("/", get(ui::index))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/style.css", get(ui::style))
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi,
                )
            }),
        )
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
        // One layer of the whole stack, outermost first: axum boxes each
        // `Router::layer` around every route and clones each box per
        // request, so seven of them cost seven allocations per request.
        .layer(
            tower::ServiceBuilder::new()
                .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                    RequestIds::new(),
                ))
                .layer(
                    tower_http::trace::TraceLayer::new_for_http()
                        .make_span_with(access_span)
                        .on_request(())
                        .on_response(access_line)
                        .on_body_chunk(())
                        .on_eos(())
                        .on_failure(()),
                )
                .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
                .layer(axum::middleware::from_fn_with_state(
                    metrics,
                    metrics::time_requests,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    Arc::new(origin::Screen {
                        hosts: config.hosts.clone(),
                        body_limit: config.body_limit,
                    }),
                    origin::check,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    Arc::new(config.tokens.clone()),
                    auth::check,
                ))
                .layer(DefaultBodyLimit::max(config.body_limit)),
        );
    (router, tickets, history)
}

/// The ids the server gives requests that come without one: this
/// process's random prefix and a counter, 32 hexadecimal digits as a UUID
/// has, unique without asking the OS for random bytes per request (as a
/// UUID v4 did).
#[derive(Clone)]
struct RequestIds {
    prefix: u64,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let mut bytes = [0; 8];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        RequestIds {
            prefix: u64::from_le_bytes(bytes),
            next: Arc::default(),
        }
    }
}

impl tower_http::request_id::MakeRequestId for RequestIds {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{:016x}{n:016x}", self.prefix);
        Some(tower_http::request_id::RequestId::new(
            axum::http::HeaderValue::from_str(&id).expect("hexadecimal digits"),
        ))
    }
}

/// The span of one request for the access log: the method, the route as
/// declared (`/v1/limits/{name}`, never the raw path or its query, which
/// may carry an `access_token`) and the request id (`x-request-id`, made
/// by the server unless the client sent one, and answered back).
fn access_span(request: &axum::extract::Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("-", |path| path.as_str());
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|id| id.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), route, request_id = id)
}

/// The access log's line: one per request at `info` of the target
/// `ratekeeper::access`, with the status and the latency.
fn access_line(response: &axum::response::Response, latency: Duration, _: &tracing::Span) {
    tracing::info!(
        target: "ratekeeper::access",
        status = response.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1e3,
        "answered"
    );
}

/// Serves the API on `listener` until `shutdown` resolves. Then waiting
/// requests answer 503 with a retry hint, parked tickets are dropped, open
/// requests finish, and every change is flushed to the backend's store.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: Arc<B>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopping) = watch::channel(false);
    let (router, tickets, history) = router(Arc::clone(&backend), &config, stopping.clone());
    tokio::spawn(history::sample(
        Arc::clone(&backend),
        history,
        stopping.clone(),
    ));
    let mut stopped = stopping;
    tokio::spawn(async move {
        shutdown.await;
        tickets.clear();
        stop.send_replace(true);
    });
    listen::serve(listener, router, config.budget, config.tls, async move {
        let _ = stopped.wait_for(|stopping| *stopping).await;
    })
    .await;
    backend
        .flush()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod request_id_tests {
    use tower_http::request_id::MakeRequestId;

    use super::RequestIds;

    #[test]
    fn made_request_ids_are_32_hex_digits_and_never_repeat() {
        let mut ids = RequestIds::new();
        let request = axum::http::Request::new(());
        let made: std::collections::HashSet<String> = (0..1000)
            .map(|_| {
                let id = ids.make_request_id(&request).unwrap();
                id.header_value().to_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(made.len(), 1000);
        assert!(
            made.iter()
                .all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()))
        );
        // Another server process starts from another prefix.
        let other = RequestIds::new().make_request_id(&request).unwrap();
        assert!(!made.contains(other.header_value().to_str().unwrap()));
    }
}
