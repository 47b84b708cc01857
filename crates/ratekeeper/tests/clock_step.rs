//! Wall-clock steps (NTP, an operator setting the date) under a running
//! durable server, made for real with libfaketime: the server's wall clock
//! jumps while its monotonic clock does not, as with a real step.
//!
//! A step forward must not end live leases nor refill a rate limit; a step
//! back must not make a dead holder's lease last longer. Across a restart
//! on a stepped clock, the same: a live lease survives a step forward, and
//! a step back lengthens no lease past its TTL.
//!
//! Needs libfaketime (Debian's `faketime`; `scripts/test` installs it);
//! without it the test says so and passes.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

fn libfaketime() -> Option<PathBuf> {
    let dirs = [
        "/usr/lib/x86_64-linux-gnu/faketime",
        "/usr/lib/aarch64-linux-gnu/faketime",
        "/usr/lib/faketime",
    ];
    dirs.iter()
        .map(|dir| Path::new(dir).join("libfaketime.so.1"))
        .find(|lib| lib.exists())
}

/// A durable server whose wall clock is the real one moved by the offset
/// in `offset_file` (read at every call, so it can be changed under it).
struct SteppedServer(common::ServerProcess);

impl SteppedServer {
    fn start(lib: &Path, offset_file: &Path, data: &Path) -> Self {
        let mut command = common::serve_command(data);
        command
            .env("LD_PRELOAD", lib)
            .env("FAKETIME_TIMESTAMP_FILE", offset_file)
            .env("FAKETIME_NO_CACHE", "1")
            // A real step moves the wall clock only.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        let server = common::ServerProcess::spawn(command);
        SteppedServer(server)
    }
}

/// Sets the server's wall clock to the real one plus `seconds`. The file
/// is replaced whole (written aside, then renamed): libfaketime reads it at
/// every clock call, and could otherwise read it empty, between the
/// truncation and the write, and see no step at all.
fn step(offset_file: &Path, seconds: i64) {
    let aside = offset_file.with_extension("next");
    std::fs::write(&aside, format!("{seconds:+}\n")).unwrap();
    std::fs::rename(&aside, offset_file).unwrap();
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> (StatusCode, Value) {
    let response = http.post(url).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// How far the server's wall clock is from the real one, read off the
/// `Date` header of its answers: proof the step is in effect.
async fn wall_offset(http: &reqwest::Client, url: &str) -> i64 {
    let response = http.get(format!("{url}/livez")).send().await.unwrap();
    let date = response.headers()["date"].to_str().unwrap().to_owned();
    let theirs = httpdate::parse_http_date(&date).unwrap();
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    };
    secs(theirs) - secs(std::time::SystemTime::now())
}

/// Asks for one slot of `name` without waiting: the status says whether
/// it was free.
async fn try_take(http: &reqwest::Client, url: &str, name: &str, mode: &str) -> StatusCode {
    let mut body = json!({"names": [name], "mode": mode, "timeout_seconds": 0});
    if mode == "concurrency" {
        body["lease_seconds"] = json!(1);
    }
    post(http, &format!("{url}/v1/acquire"), body).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_steps_neither_end_live_leases_nor_lengthen_dead_ones() {
    let Some(lib) = libfaketime() else {
        eprintln!("libfaketime is not installed (Debian: faketime): test skipped");
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let offset = scratch.path().join("offset");
    step(&offset, 0);
    let data = scratch.path().join("data");
    let http = reqwest::Client::new();
    let server = SteppedServer::start(&lib, &offset, &data);
    let url = server.0.url.clone();
    for (name, slots, decay) in [("held", 1, 0.0), ("paced", 2, 0.01), ("short", 1, 0.0)] {
        let body = json!({"name": name, "slots": slots, "slot_decay_per_second": decay});
        assert_eq!(
            post(&http, &format!("{url}/v1/limits"), body).await.0,
            StatusCode::CREATED
        );
    }
    // A live 10-minute lease, and a rate limit whose two slots are spent
    // (they come back at 0.01 a second: not for minutes).
    let body = json!({"names": ["held"], "lease_seconds": 600});
    assert_eq!(
        post(&http, &format!("{url}/v1/acquire"), body).await.0,
        StatusCode::OK
    );
    for _ in 0..2 {
        assert_eq!(
            try_take(&http, &url, "paced", "rate_limit").await,
            StatusCode::OK
        );
    }

    // Two hours forward while it runs: the lease is still live, the
    // budget still spent.
    step(&offset, 7200);
    let off = wall_offset(&http, &url).await;
    assert!(
        (7190..=7210).contains(&off),
        "the step is not in effect: {off}"
    );
    assert_eq!(
        try_take(&http, &url, "held", "concurrency").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        try_take(&http, &url, "paced", "rate_limit").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Grants are answered as usual (not taken for expired on arrival).
    assert_eq!(
        try_take(&http, &url, "short", "concurrency").await,
        StatusCode::OK
    );

    // An hour back while it runs: the 1 s lease of a holder that went
    // away still ends after about a second, not an hour.
    step(&offset, -3600);
    let asked = Instant::now();
    let body = json!({"names": ["short"], "timeout_seconds": 10, "lease_seconds": 1});
    let (status, answer) = post(&http, &format!("{url}/v1/acquire"), body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        asked.elapsed()
    );

    // Restarted two hours ahead: the 10-minute lease still holds (a
    // restored lease keeps up to one TTL, whatever the clock says).
    drop(server);
    step(&offset, 7200);
    let server = SteppedServer::start(&lib, &offset, &data);
    let url = server.0.url.clone();
    assert_eq!(
        try_take(&http, &url, "held", "concurrency").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Restarted an hour behind: the 1 s lease taken above ends within a
    // TTL or so, not an hour and more later.
    drop(server);
    step(&offset, -3600);
    let server = SteppedServer::start(&lib, &offset, &data);
    let asked = Instant::now();
    let body = json!({"names": ["short"], "timeout_seconds": 10, "lease_seconds": 1});
    let (status, answer) = post(&http, &format!("{}/v1/acquire", server.0.url), body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        asked.elapsed()
    );
}
