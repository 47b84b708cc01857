//! Bearer tokens with two scopes: `admin` may do everything, `client` may
//! acquire, renew, release and read.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::quota::{Quota, QuotaLimits};
use ratekeeper_api::ErrorCode;

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
#[serde(deny_unknown_fields)]
pub struct Token {
    /// The secret, sent as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// What it may do.
    pub scope: Scope,
    /// Tickets it may have parked at once (default: 10 000 for a client
    /// token, no bound but the server's for an admin token).
    #[serde(default)]
    pub max_tickets: Option<usize>,
    /// Leases it may hold at once (default: 100 000 for a client token,
    /// no bound for an admin token).
    #[serde(default)]
    pub max_leases: Option<usize>,
}

impl Scope {
    /// As configured and shown: `client` or `admin`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Client => "client",
            Scope::Admin => "admin",
        }
    }
}

impl Token {
    /// A token with its scope's default quotas.
    pub fn new(secret: impl Into<String>, scope: Scope) -> Self {
        Token {
            secret: secret.into(),
            scope,
            max_tickets: None,
            max_leases: None,
        }
    }

    /// What it may hold at once.
    fn quota(&self) -> QuotaLimits {
        let default = match self.scope {
            Scope::Client => QuotaLimits::default(),
            Scope::Admin => QuotaLimits::UNBOUNDED,
        };
        QuotaLimits {
            max_tickets: self.max_tickets.unwrap_or(default.max_tickets),
            max_leases: self.max_leases.unwrap_or(default.max_leases),
        }
    }
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

/// A token that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Too short or with a space: it could be guessed, or was mistyped.
    #[error(
        "a token must be at least {MIN_TOKEN_LEN} characters without spaces ({fault}); \
         make one with `openssl rand -hex 16`"
    )]
    Weak {
        /// What is wrong with it.
        fault: String,
    },
    /// A quota of zero: the token could never be used.
    #[error("a {scope} token's max_tickets and max_leases must be at least 1")]
    ZeroQuota {
        /// Its scope.
        scope: String,
    },
}

/// The tokens a server accepts, each with what it holds against its
/// quota. With none, every request is allowed.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<(Token, Arc<Quota>)>);

impl Tokens {
    /// These tokens. Each secret must be at least [`MIN_TOKEN_LEN`]
    /// characters, none of them blank: a short token can be guessed.
    pub fn new(tokens: Vec<Token>) -> Result<Self, TokenError> {
        for token in &tokens {
            let len = token.secret.chars().count();
            let scope = token.scope.name();
            let fault = if token.secret.chars().any(char::is_whitespace) {
                Some(format!("an {scope} token has a space in it"))
            } else if len < MIN_TOKEN_LEN {
                Some(format!("an {scope} token has {len}"))
            } else {
                None
            };
            if let Some(fault) = fault {
                return Err(TokenError::Weak { fault });
            }
            if token.max_tickets == Some(0) || token.max_leases == Some(0) {
                return Err(TokenError::ZeroQuota {
                    scope: scope.into(),
                });
            }
        }
        Ok(Tokens(
            tokens
                .into_iter()
                .map(|token| {
                    let quota = Quota::new(token.quota());
                    (token, quota)
                })
                .collect(),
        ))
    }

    /// Whether any token is configured.
    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    /// The caller with `secret`, comparing every token in constant time
    /// (of two tokens with one secret, the wider scope wins).
    fn caller(&self, secret: &str) -> Option<Caller> {
        let mut found: Option<Caller> = None;
        for (token, quota) in &self.0 {
            let matches = bool::from(token.secret.as_bytes().ct_eq(secret.as_bytes()));
            if matches && found.as_ref().is_none_or(|f| f.scope < token.scope) {
                found = Some(Caller {
                    scope: token.scope,
                    quota: Some(Arc::clone(quota)),
                });
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
        // Workers report an upstream's "slow down" with their own token.
        _ if path.starts_with("/v1/limits/")
            && (path.ends_with("/pause") || path.ends_with("/throttled"))
            && method == Method::POST =>
        {
            Some(Scope::Client)
        }
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

/// Who calls, for handlers that decide by it: the scope of its token
/// (`Admin` on a server without tokens) and what the token holds against
/// its quota (`None` without tokens).
#[derive(Debug, Clone)]
pub struct Caller {
    /// What the caller may do.
    pub scope: Scope,
    /// What its token holds against its quota.
    pub quota: Option<Arc<Quota>>,
}

impl Caller {
    /// The scope of a handler's caller, as the auth layer set it (`Admin`
    /// on a router without that layer).
    pub fn scope(caller: &Option<axum::Extension<Caller>>) -> Scope {
        caller.as_ref().map_or(Scope::Admin, |caller| caller.scope)
    }

    /// What a handler's caller holds against its token's quota.
    pub fn quota(caller: &Option<axum::Extension<Caller>>) -> Option<Arc<Quota>> {
        caller.as_ref().and_then(|caller| caller.quota.clone())
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
        request.extensions_mut().insert(Caller {
            scope: Scope::Admin,
            quota: None,
        });
        return next.run(request).await;
    }
    let Some(needed) = needed(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let Some(secret) = bearer(&request).or_else(|| query_token(&request)) else {
        return ApiError::new(
            ErrorCode::Unauthorized,
            "this server requires a token: send `Authorization: Bearer <token>`",
        )
        .into_response();
    };
    match tokens.caller(secret) {
        None => ApiError::new(
            ErrorCode::InvalidToken,
            "the token is not one this server accepts",
        )
        .into_response(),
        Some(caller) if caller.scope < needed => ApiError::new(
            ErrorCode::Forbidden,
            "this needs an admin token; a client token may acquire, renew, release and read",
        )
        .into_response(),
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
    }
}
