//! The web UI: one page, a script and a stylesheet, embedded in the binary
//! so that serving it needs no build step and no files beside the server.
//!
//! The page is static; everything it shows comes from the API (`/v1/...`)
//! and the event stream, with the user's token if the server wants one.
//! That is why these routes are open: the page must load in order to ask
//! for a token.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/style.css");

/// Only this origin's own script, style and connections: the page shows
/// names and descriptions other people typed, so nothing may run inline.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Always revalidated, so that a new server version's UI is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /`: the page.
pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /ui/app.js`: the page's script.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /ui/style.css`: the page's stylesheet.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// Whether `path` is one of the UI's own (open) paths.
pub fn is_ui_path(path: &str) -> bool {
    matches!(path, "/" | "/ui/app.js" | "/ui/style.css")
}
