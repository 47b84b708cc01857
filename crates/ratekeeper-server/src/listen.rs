//! Accepting connections within a budget, so that nobody can exhaust the
//! server's memory or file descriptors without a token:
//!
//! - at most [`Budget::max_connections`] at once: one more is answered
//!   `503` with a JSON error and closed at once, rather than queued;
//! - a connection must send a request's headers within
//!   [`Budget::header_timeout`] of starting to wait for them, which also
//!   closes a keep-alive connection left idle that long;
//! - a request body must keep arriving: a gap of
//!   [`Budget::body_timeout`] between its pieces ends it with `408`;
//! - running out of file descriptors pauses accepting briefly instead of
//!   spinning, and is logged at most once a second.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What one server spends on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers, or sit
    /// idle between requests.
    pub header_timeout: Duration,
    /// The longest gap between the pieces of a request body.
    pub body_timeout: Duration,
    /// How long open requests get to finish when the server stops.
    pub drain_timeout: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The answer to a connection over the budget.
fn over_budget() -> String {
    let body = r#"{"error":{"code":"too_many_connections","message":"the server has too many connections open; try again shortly","field":null}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Serves `router` on `listener` until `stopping` resolves, then lets open
/// connections finish their requests (for at most the drain timeout).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    budget: Budget,
    tls: Option<crate::tls::ServerTls>,
    stopping: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(budget.max_connections));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only, as every client speaks it on plain connections: an
    // HTTP/2 sniffing step would wait for a first byte with no timeout.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(budget.header_timeout);
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        budget.body_timeout,
    ));
    let mut last_complaint: Option<Instant> = None;
    tokio::pin!(stopping);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    if last_complaint.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(%err, "cannot accept a connection; pausing");
                        last_complaint = Some(Instant::now());
                    }
                    // Out of descriptors, most likely: give connections
                    // closing meanwhile a chance instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopping => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        match &tls {
            None => {
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(slot);
                });
            }
            Some(tls) => {
                // The handshake runs in the connection's own task, within
                // the header timeout, so a slow one holds up nobody else.
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let deadline = budget.header_timeout;
                    let Ok(Some(stream)) =
                        tokio::time::timeout(deadline, handshake(&acceptor, stream)).await
                    else {
                        return;
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(budget.drain_timeout, graceful.shutdown()).await;
}

/// The TLS handshake of a connection; plain HTTP instead is answered with
/// a `400` saying to use `https://`, and `None`.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    mut stream: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if !crate::tls::starts_tls(first[0]) => {
            let answer = crate::tls::plain_http_on_tls();
            let _ = stream.write_all(answer.as_bytes()).await;
            return None;
        }
        Ok(1) => {}
        _ => return None,
    }
    match acceptor.accept(stream).await {
        Ok(stream) => Some(stream),
        Err(err) => {
            tracing::debug!(%err, "TLS handshake failed");
            None
        }
    }
}

/// Answers a connection over the budget and closes it, spending at most a
/// second on it.
async fn refuse(mut stream: TcpStream) {
    let answer = over_budget();
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
}
