//! Who may talk to the server from a browser: the `Host` and `Origin`
//! checks that stop DNS rebinding and cross-site requests.
//!
//! A server without tokens on a loopback address trusts whoever can reach
//! it, and a web page the user visits can reach it too: by rebinding its
//! own name to 127.0.0.1 (the request then carries that name as `Host`),
//! or by a cross-site form post (it carries the page's `Origin`). So:
//!
//! - on a loopback address ([`HostPolicy::loopback`]), a request whose
//!   `Host` is not `localhost`, `127.0.0.1`, `::1` or one of the operator's
//!   `--allowed-hosts` is refused;
//! - a request that carries an `Origin` (browsers send it on every
//!   cross-origin request and on same-origin writes) is refused unless the
//!   origin is this server itself (the same host and port as `Host`) or
//!   one of the `--allowed-hosts` (the name of a reverse proxy in front).
//!
//! Programs (curl, the clients) send no `Origin` and are not affected.
//!
//! And a request body must be JSON (`Content-Type: application/json`): a
//! page can send `text/plain` or a form to any site without asking, but not
//! JSON, so this also keeps such requests from doing anything.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use ratekeeper_api::ErrorCode;

/// Which host names the server answers to, and which other sites' pages
/// may use it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    /// The names the server answers to (lowercase, without port or
    /// brackets); `None`: any (a server that needs tokens, on a public
    /// address).
    pub only: Option<Vec<String>>,
    /// Names given by the operator (`--allowed-hosts`): always answered
    /// to, and their pages may use the server (a reverse proxy's name).
    pub trusted: Vec<String>,
}

impl HostPolicy {
    /// Any host name, and pages of `trusted` hosts.
    pub fn any(trusted: &[String]) -> Self {
        HostPolicy {
            only: None,
            trusted: lowercase(trusted),
        }
    }

    /// The loopback names and `trusted` only.
    pub fn loopback(trusted: &[String]) -> Self {
        let mut names = lowercase(&["localhost".into(), "127.0.0.1".into(), "::1".into()]);
        names.extend(lowercase(trusted));
        HostPolicy {
            only: Some(names),
            trusted: lowercase(trusted),
        }
    }

    fn allows(&self, host: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n.eq_ignore_ascii_case(host)))
    }

    fn trusts(&self, host: &str) -> bool {
        self.trusted.iter().any(|n| n.eq_ignore_ascii_case(host))
    }

    fn names(&self) -> String {
        match &self.only {
            None => "any".into(),
            Some(names) => names.join(", "),
        }
    }
}

fn lowercase(names: &[String]) -> Vec<String> {
    names.iter().map(|n| n.to_ascii_lowercase()).collect()
}

/// The host name of an authority (`host`, `host:port`, `[v6]:port`),
/// without port or brackets.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What every request is screened for before it is routed.
#[derive(Debug, Clone)]
pub struct Screen {
    /// The host names answered to, and the sites whose pages may call.
    pub hosts: HostPolicy,
    /// The largest body accepted: a longer declared `Content-Length` is
    /// refused at once, without waiting for the body.
    pub body_limit: usize,
}

/// Refuses requests for another host name, cross-site browser requests,
/// bodies that are not JSON and bodies declared too large.
pub async fn check(
    State(screen): State<std::sync::Arc<Screen>>,
    request: Request,
    next: Next,
) -> Response {
    let policy = &screen.hosts;
    let headers = request.headers();
    let host = header_str(headers, header::HOST)
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .map(str::to_owned);
    if let Some(host) = &host
        && !policy.allows(host_name(host))
    {
        return ApiError::new(
            ErrorCode::HostNotAllowed,
            format!(
                "this server answers to the host names {} only, not {host:?}; \
                 add the name with --allowed-hosts if it is yours",
                policy.names()
            ),
        )
        .into_response();
    }
    if let Some(origin) = header_str(headers, header::ORIGIN) {
        let authority = origin.split_once("://").map(|(_, rest)| rest);
        // This server's own pages (the same host and port), or a trusted
        // host's; another port on the same machine is another site.
        let same_site = authority.is_some_and(|authority| {
            host.as_deref()
                .is_some_and(|host| host.eq_ignore_ascii_case(authority))
                || policy.trusts(host_name(authority))
        });
        if !same_site {
            return ApiError::new(
                ErrorCode::OriginNotAllowed,
                format!(
                    "a request from the web page at {origin:?} is refused: pages of other sites \
                     may not use this server (add the host with --allowed-hosts if it is yours)"
                ),
            )
            .into_response();
        }
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || header_str(headers, header::CONTENT_LENGTH).is_some_and(|len| len.trim() != "0");
    let json = header_str(headers, header::CONTENT_TYPE).is_some_and(|kind| {
        let essence = kind.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
    });
    let declared =
        header_str(headers, header::CONTENT_LENGTH).and_then(|len| len.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > screen.body_limit as u64) {
        return ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("a request body may be at most {} bytes", screen.body_limit),
        )
        .into_response();
    }
    if has_body && !json {
        return ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "a request body must be JSON, sent with `Content-Type: application/json`",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_and_brackets() {
        assert_eq!(host_name("localhost:7171"), "localhost");
        assert_eq!(host_name("[::1]:7171"), "::1");
        assert_eq!(host_name("example.com"), "example.com");
    }

    #[test]
    fn the_loopback_policy_allows_loopback_names_and_the_extra_ones_only() {
        let policy = HostPolicy::loopback(&["Rk.Example.com".into()]);
        for name in [
            "localhost",
            "127.0.0.1",
            "::1",
            "rk.example.com",
            "LOCALHOST",
        ] {
            assert!(policy.allows(name), "{name}");
        }
        assert!(!policy.allows("rebind.evil.example"));
        assert!(policy.trusts("rk.example.com") && !policy.trusts("localhost"));
        assert!(HostPolicy::any(&[]).allows("anything"));
    }
}
