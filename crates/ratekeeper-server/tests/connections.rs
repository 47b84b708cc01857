//! The connection budget: idle and slow connections are closed, and one
//! connection over the cap is refused at once while the others are served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::TestServer;
use ratekeeper_server::{Budget, ServerConfig};

async fn server_with(budget: Budget) -> TestServer {
    TestServer::with_config(ServerConfig {
        budget,
        ..ServerConfig::default()
    })
    .await
}

fn address(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or 10 s pass); what it
/// sent and how long that took.
fn until_closed(mut socket: TcpStream) -> (String, Duration) {
    let started = Instant::now();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0; 1024];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
    (
        String::from_utf8_lossy(&seen).into_owned(),
        started.elapsed(),
    )
}

fn short_timeouts() -> Budget {
    Budget {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        ..Budget::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_is_closed_after_the_header_timeout() {
    let server = server_with(short_timeouts()).await;
    let address = address(&server);
    let (_, waited) = tokio::task::spawn_blocking(move || {
        let socket = TcpStream::connect(address).unwrap();
        until_closed(socket)
    })
    .await
    .unwrap();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_sent_a_byte_at_a_time_are_cut_off() {
    let server = server_with(short_timeouts()).await;
    let address = address(&server);
    let (_, waited) = tokio::task::spawn_blocking(move || {
        let mut socket = TcpStream::connect(&address).unwrap();
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        until_closed(socket)
    })
    .await
    .unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stops_arriving_is_given_up() {
    let server = server_with(short_timeouts()).await;
    let address = address(&server);
    let (answer, waited) = tokio::task::spawn_blocking(move || {
        let mut socket = TcpStream::connect(&address).unwrap();
        socket
            .write_all(
                b"POST /v1/limits HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{\"na",
            )
            .unwrap();
        until_closed(socket)
    })
    .await
    .unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert_eq!(server.get("/v1/limits").await.1, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_over_the_cap_is_refused_at_once_and_the_rest_are_served() {
    let server = server_with(Budget {
        max_connections: 2,
        ..Budget::default()
    })
    .await;
    let address = address(&server);
    let holders: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    // Each held connection takes its slot once accepted; until both are,
    // a third may still get in.
    let refused = {
        let address = address.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            loop {
                let mut socket = TcpStream::connect(&address).unwrap();
                socket
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    .unwrap();
                let (answer, _) = until_closed(socket);
                if answer.contains("too_many_connections")
                    || started.elapsed() > Duration::from_secs(5)
                {
                    return answer;
                }
            }
        })
        .await
        .unwrap()
    };
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too_many_connections"), "{refused}");
    drop(holders);
    // Their slots come back: requests are served again.
    let started = Instant::now();
    loop {
        if let Ok(response) = server
            .http
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            && response.status().is_success()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never served again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn event_stream_subscribers_are_capped_and_their_places_come_back() {
    let server = TestServer::with_config(ServerConfig {
        max_event_subscribers: 2,
        ..ServerConfig::default()
    })
    .await;
    let subscribe = || server.http.get(format!("{}/v1/events", server.url)).send();
    let first = subscribe().await.unwrap();
    let second = subscribe().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = subscribe().await.unwrap();
    assert_eq!(third.status(), 503);
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_subscribers");
    drop(first);
    // Its place comes back once the server has seen it go (at the next
    // change it would have been sent).
    let started = Instant::now();
    loop {
        server.post("/v1/limits", serde_json::json!({"name": format!("n{}", started.elapsed().as_micros()), "slots": 1})).await;
        let again = subscribe().await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(second);
}
