//! Bearer tokens with two scopes: `admin` may do everything, `client` may
//! acquire, renew, release and read.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Acquire, renew, release and read.
    Client,
    /// Everything, including changing limits.
    Admin,
}

/// A configured token.
#[derive(Clone, Deserialize)]
pub struct Token {
    /// The secret, sent as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// What it may do.
    pub scope: Scope,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The shortest secret a token may have, in characters.
pub const MIN_TOKEN_LEN: usize = 16;

/// The tokens a server accepts. With none, every request is allowed.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<Token>);

impl Tokens {
    /// These tokens. Each secret must be at least [`MIN_TOKEN_LEN`]
    /// characters, none of them blank: a short token can be guessed.
    pub fn new(tokens: Vec<Token>) -> Result<Self, String> {
        for token in &tokens {
            let len = token.secret.chars().count();
            if len < MIN_TOKEN_LEN || token.secret.chars().any(char::is_whitespace) {
                return Err(format!(
                    "a token must be at least {MIN_TOKEN_LEN} characters without spaces \
                     (a {:?} token has {len}); make one with `openssl rand -hex 16`",
                    token.scope
                ));
            }
        }
        Ok(Tokens(tokens))
    }

    /// Whether any token is configured.
    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    /// The scope of `secret`, comparing every token in constant time.
    fn scope_of(&self, secret: &str) -> Option<Scope> {
        let mut found = None;
        for token in &self.0 {
            if bool::from(token.secret.as_bytes().ct_eq(secret.as_bytes())) {
                found = found.max(Some(token.scope));
            }
        }
        found
    }
}

/// What a request needs: nothing for the open pages (health, the API
/// description, the web UI's static files), `client` to read and
/// to use limits, `admin` to change them.
fn needed(method: &Method, path: &str) -> Option<Scope> {
    match path {
        "/healthz" | "/livez" | "/readyz" | "/openapi.json" => None,
        _ if crate::ui::is_ui_path(path) => None,
        _ if path.starts_with("/v1/limits") && method != Method::GET => Some(Scope::Admin),
        _ => Some(Scope::Client),
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's
/// name is case-insensitive, as HTTP says.
fn bearer(request: &Request) -> Option<&str> {
    let header = request.headers().get(axum::http::header::AUTHORIZATION)?;
    let (scheme, token) = header.to_str().ok()?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// A browser's `EventSource` cannot send headers, so the event stream also
/// takes the token as `?access_token=`.
fn query_token(request: &Request) -> Option<&str> {
    if request.uri().path() != "/v1/events" {
        return None;
    }
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
}

/// What the caller may do, for handlers that decide by it: the scope of
/// its token (`Admin` on a server without tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(pub Scope);

impl Caller {
    /// The scope of a handler's caller, as the auth layer set it (`Admin`
    /// on a router without that layer).
    pub fn scope(caller: Option<axum::Extension<Caller>>) -> Scope {
        caller.map_or(Scope::Admin, |axum::Extension(Caller(scope))| scope)
    }
}

/// Refuses requests whose token is missing (401) or lacks the scope (403),
/// and tells handlers the caller's scope ([`Caller`]).
pub async fn check(
    State(tokens): State<std::sync::Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !tokens.required() {
        request.extensions_mut().insert(Caller(Scope::Admin));
        return next.run(request).await;
    }
    let Some(needed) = needed(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let Some(secret) = bearer(&request).or_else(|| query_token(&request)) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server requires a token: send `Authorization: Bearer <token>`",
        )
        .into_response();
    };
    match tokens.scope_of(secret) {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the token is not one this server accepts",
        )
        .into_response(),
        Some(scope) if scope < needed => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs an admin token; a client token may acquire, renew, release and read",
        )
        .into_response(),
        Some(scope) => {
            request.extensions_mut().insert(Caller(scope));
            next.run(request).await
        }
    }
}
