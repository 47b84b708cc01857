//! The web UI's files: served at `/`, open even when the API needs a
//! token (the page must load to ask for one), and locked down by headers.

mod common;

use common::TestServer;
use ratekeeper_server::{Scope, ServerConfig, Token, Tokens};
use reqwest::StatusCode;

async fn fetch(
    server: &TestServer,
    path: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let response = server
        .http
        .get(format!("{}{path}", server.url))
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

fn guarded() -> ServerConfig {
    ServerConfig {
        tokens: Tokens::new(vec![Token::new("admin-secret-for-tests", Scope::Admin)]).unwrap(),
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn the_page_its_script_and_its_style_are_served_with_their_types() {
    let server = TestServer::start().await;
    let (status, headers, page) = fetch(&server, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    // The page names exactly the assets the server serves, relative to
    // itself (so that it works under a proxy's path prefix too).
    assert!(page.contains(r#"src="ui/app.js""#), "{page}");
    assert!(page.contains(r#"href="ui/style.css""#), "{page}");

    for (path, kind, marker) in [
        (
            "/ui/app.js",
            "text/javascript; charset=utf-8",
            "EventSource",
        ),
        ("/ui/style.css", "text/css; charset=utf-8", ":root"),
    ] {
        let (status, headers, body) = fetch(&server, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["content-type"], kind, "{path}");
        assert!(body.contains(marker), "{path}");
    }
}

#[tokio::test]
async fn the_ui_forbids_inline_script_and_other_origins() {
    let server = TestServer::start().await;
    let (_, headers, _) = fetch(&server, "/").await;
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-cache");
}

#[tokio::test]
async fn the_ui_loads_without_a_token_while_the_api_needs_one() {
    let mut server = TestServer::with_config(guarded()).await;
    for path in ["/", "/ui/app.js", "/ui/style.css"] {
        assert_eq!(fetch(&server, path).await.0, StatusCode::OK, "{path}");
    }
    assert_eq!(server.get("/v1/limits").await.0, StatusCode::UNAUTHORIZED);
    // Only the UI's own files are open: a made-up path under /ui/ is not.
    assert_eq!(
        fetch(&server, "/ui/secret").await.0,
        StatusCode::UNAUTHORIZED
    );
    server.token = Some("admin-secret-for-tests".into());
    assert_eq!(server.get("/ui/secret").await.0, StatusCode::NOT_FOUND);
}
