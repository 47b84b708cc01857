//! Several `ratekeeper serve` processes on one Redis act as one server:
//! clients spread over them never exceed a limit and are served in arrival
//! order, a killed instance's clients lose only what they held, and a
//! Redis restart is survived.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ServerProcess;
use ratekeeper_redis::testing::RedisServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A `ratekeeper serve` on `redis`.
fn instance(redis: &RedisServer, dir: &tempfile::TempDir) -> ServerProcess {
    ServerProcess::start(dir.path(), &["--store", &redis.url()])
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> (StatusCode, Value) {
    call(http, reqwest::Method::POST, url, Some(body)).await
}

async fn limit(http: &reqwest::Client, server: &ServerProcess, name: &str) -> Value {
    call(
        http,
        reqwest::Method::GET,
        &format!("{}/v1/limits/{name}", server.url),
        None,
    )
    .await
    .1
}

/// Waits until `check` holds for `name`'s state (checked every few ms).
async fn until(
    http: &reqwest::Client,
    server: &ServerProcess,
    name: &str,
    check: impl Fn(&Value) -> bool,
) {
    let started = Instant::now();
    loop {
        let state = limit(http, server, name).await;
        if check(&state) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{name} never got there: {state}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn acquire(
    http: &reqwest::Client,
    server: &ServerProcess,
    body: Value,
) -> (StatusCode, Value) {
    post(http, &format!("{}/v1/acquire", server.url), body).await
}

async fn release(http: &reqwest::Client, server: &ServerProcess, lease: &str) -> StatusCode {
    call(
        http,
        reqwest::Method::DELETE,
        &format!("{}/v1/leases/{lease}", server.url),
        None,
    )
    .await
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_three_servers_never_exceed_the_limit() {
    const SLOTS: i32 = 3;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let servers: Vec<_> = (0..3).map(|_| instance(&redis, &dir)).collect();
    let http = reqwest::Client::new();
    let (status, _) = post(
        &http,
        &format!("{}/v1/limits", servers[0].url),
        json!({"name": "shared", "slots": SLOTS}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Every client logs, on its own clock, when its grant was acknowledged
    // and when it started releasing: those intervals lie inside the
    // servers' holding intervals, so no more than SLOTS may overlap.
    let log: Arc<Mutex<Vec<(Instant, i32)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..12)
        .map(|i| {
            let url = servers[i % 3].url.clone();
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut grants = 0;
                while !stop.load(Ordering::SeqCst) {
                    let body = json!({"names": ["shared"], "holder": format!("client-{i}")});
                    let (status, lease) = post(&http, &format!("{url}/v1/acquire"), body).await;
                    assert_eq!(status, StatusCode::OK, "{lease}");
                    log.lock().unwrap().push((Instant::now(), 1));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    log.lock().unwrap().push((Instant::now(), -1));
                    let id = lease["lease_id"].as_str().unwrap();
                    let (status, _) = call(
                        &http,
                        reqwest::Method::DELETE,
                        &format!("{url}/v1/leases/{id}"),
                        None,
                    )
                    .await;
                    assert_eq!(status, StatusCode::NO_CONTENT);
                    grants += 1;
                }
                grants
            })
        })
        .collect();
    until(&http, &servers[1], "shared", |s| {
        s["counters"]["granted_total"].as_u64().unwrap() >= 600
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut per_client = Vec::new();
    for client in clients {
        per_client.push(client.await.unwrap());
    }
    assert!(
        per_client.iter().all(|&g| g > 0),
        "a client was starved: {per_client:?}"
    );

    let mut events = log.lock().unwrap().clone();
    events.sort();
    let mut holding = 0;
    for (at, delta) in events {
        holding += delta;
        assert!(holding <= SLOTS, "{holding} holders at {at:?}");
    }
    let state = limit(&http, &servers[2], "shared").await;
    assert_eq!(
        (state["held"].as_u64(), state["waiting"].as_u64()),
        (Some(0), Some(0)),
        "{state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_different_servers_are_served_in_arrival_order() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let servers: Arc<Vec<_>> = Arc::new((0..3).map(|_| instance(&redis, &dir)).collect());
    let http = reqwest::Client::new();
    post(
        &http,
        &format!("{}/v1/limits", servers[0].url),
        json!({"name": "line", "slots": 1}),
    )
    .await;
    let (_, first) = acquire(&http, &servers[0], json!({"names": ["line"]})).await;

    let (order, mut served) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..9usize {
        let (all, order) = (Arc::clone(&servers), order.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let server = &all[i % 3];
            let (status, lease) = acquire(
                &http,
                server,
                json!({"names": ["line"], "holder": format!("w{i}")}),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{lease}");
            order.send(i).unwrap();
            assert_eq!(
                release(&http, server, lease["lease_id"].as_str().unwrap()).await,
                StatusCode::NO_CONTENT
            );
        });
        until(&http, &servers[0], "line", |s| s["waiting"] == json!(i + 1)).await;
    }
    assert_eq!(
        release(&http, &servers[1], first["lease_id"].as_str().unwrap()).await,
        StatusCode::NO_CONTENT
    );
    let mut grants = Vec::new();
    for _ in 0..9 {
        grants.push(served.recv().await.unwrap());
    }
    assert_eq!(grants, (0..9).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_only_its_own_clients_leases_and_waits() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let doomed = instance(&redis, &dir);
    let survivor = instance(&redis, &dir);
    let http = reqwest::Client::new();
    post(
        &http,
        &format!("{}/v1/limits", survivor.url),
        json!({"name": "db", "slots": 1}),
    )
    .await;

    // A lease through the doomed server, and a waiter parked on it.
    let (_, held) = acquire(&http, &doomed, json!({"names": ["db"], "lease_seconds": 2})).await;
    assert!(held["lease_id"].is_string(), "{held}");
    let parked = {
        let url = doomed.url.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            http.post(format!("{url}/v1/acquire"))
                .json(&json!({"names": ["db"]}))
                .send()
                .await
        })
    };
    until(&http, &survivor, "db", |s| s["waiting"] == json!(1)).await;
    doomed.kill();
    assert!(
        parked.await.unwrap().is_err(),
        "the killed server cannot have answered"
    );

    // Its parked request is withdrawn once it is taken for dead, and its
    // lease expires by its TTL: the survivor's client gets the slot.
    let started = Instant::now();
    let (status, next) = acquire(
        &http,
        &survivor,
        json!({"names": ["db"], "holder": "survivor"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    // At most the lease's 2 s TTL plus 3 s for an unconfirmed grant.
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );
    let state = limit(&http, &survivor, "db").await;
    assert_eq!(state["held"], 1, "{state}");
    // The doomed server's lease expired; if its parked request was granted
    // before it was taken for dead, that unconfirmed grant expired too.
    let expired = state["counters"]["expired_total"].as_u64().unwrap();
    assert!((1..=2).contains(&expired), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_survived_without_over_admission() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = instance(&redis, &dir);
    let http = reqwest::Client::new();
    post(
        &http,
        &format!("{}/v1/limits", server.url),
        json!({"name": "db", "slots": 2}),
    )
    .await;
    let mut leases = Vec::new();
    for _ in 0..2 {
        let (_, lease) = acquire(
            &http,
            &server,
            json!({"names": ["db"], "lease_seconds": 120}),
        )
        .await;
        leases.push(lease["lease_id"].as_str().unwrap().to_owned());
    }

    redis.kill();
    // Fail closed: with Redis down, nobody is admitted.
    let (status, body) = acquire(
        &http,
        &server,
        json!({"names": ["db"], "timeout_seconds": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");

    redis.restart();
    // Once Redis is back, its state is too: both leases still count.
    let (status, body) = common::try_once_when_back(&http, &server.url, "db").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::TOO_MANY_REQUESTS, &json!("would_block")),
        "{body}"
    );
    assert_eq!(
        release(&http, &server, &leases[0]).await,
        StatusCode::NO_CONTENT
    );
    let (status, body) = acquire(
        &http,
        &server,
        json!({"names": ["db"], "timeout_seconds": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// An instance held up (SIGSTOP) past the few seconds a queued request's
/// grant is claimed for: the grant goes back, and the waiting client is
/// told to ask again (503), not that it lost a lease it never had (410).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_an_instance_was_too_slow_to_claim_is_a_request_to_retry() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (instance(&redis, &dir), instance(&redis, &dir));
    let http = reqwest::Client::new();
    let (status, _) = post(
        &http,
        &format!("{}/v1/limits", a.url),
        json!({"name": "db", "slots": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, held) = acquire(&http, &a, json!({"names": ["db"]})).await;
    let waiter = {
        let (http, url) = (http.clone(), b.url.clone());
        tokio::spawn(async move {
            post(
                &http,
                &format!("{url}/v1/acquire"),
                json!({"names": ["db"]}),
            )
            .await
        })
    };
    until(&http, &a, "db", |state| state["waiting"] == 1).await;
    let paused = Pid::from_raw(b.child.id() as i32);
    kill(paused, Signal::SIGSTOP).unwrap();
    // A stop takes effect when each thread is next scheduled: released
    // before then, the grant could still be claimed.
    until_stopped(b.child.id());
    assert_eq!(
        release(&http, &a, held["lease_id"].as_str().unwrap()).await,
        StatusCode::NO_CONTENT
    );
    // Longer than the claim (3 s): the grant is given back meanwhile.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    until(&http, &a, "db", |state| state["held"] == 0).await;
    kill(paused, Signal::SIGCONT).unwrap();
    let (status, answer) = waiter.await.unwrap();
    assert_ne!(status, StatusCode::GONE, "{answer}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "unavailable");
    // Asked again, it is granted.
    let (status, _) = acquire(&http, &b, json!({"names": ["db"], "timeout_seconds": 5})).await;
    assert_eq!(status, StatusCode::OK);
}

/// Waits until every thread of process `pid` is stopped (state `T` in
/// `/proc`), as SIGSTOP leaves it.
fn until_stopped(pid: u32) {
    let started = Instant::now();
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let all_stopped = tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
                    Some(state == 'T' || state == 't')
                })
                .unwrap_or(true)
        });
        if all_stopped {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "process {pid} never stopped"
        );
        std::thread::yield_now();
    }
}

async fn status_of(http: &reqwest::Client, server: &ServerProcess, path: &str) -> StatusCode {
    http.get(format!("{}{path}", server.url))
        .send()
        .await
        .map_or(StatusCode::BAD_GATEWAY, |r| r.status())
}

async fn until_status(
    http: &reqwest::Client,
    server: &ServerProcess,
    path: &str,
    wanted: StatusCode,
) {
    let started = Instant::now();
    while status_of(http, server, path).await != wanted {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{path} never answered {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/readyz` makes a real round trip to Redis: with Redis down it answers
/// 503 (so a load balancer looks elsewhere) while `/livez` and `/healthz`
/// still answer, and it is ready again once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis_and_liveness_does_not() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = instance(&redis, &dir);
    let http = reqwest::Client::new();
    assert_eq!(status_of(&http, &server, "/readyz").await, StatusCode::OK);
    redis.kill();
    until_status(&http, &server, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;
    let (_, body) = call(
        &http,
        reqwest::Method::GET,
        &format!("{}/readyz", server.url),
        None,
    )
    .await;
    assert_eq!(body["error"]["code"], "not_ready");
    assert_eq!(status_of(&http, &server, "/livez").await, StatusCode::OK);
    assert_eq!(status_of(&http, &server, "/healthz").await, StatusCode::OK);
    redis.restart();
    until_status(&http, &server, "/readyz", StatusCode::OK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_on_redis_serves_its_keys_from_every_server() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (instance(&redis, &dir), instance(&redis, &dir));
    let http = reqwest::Client::new();
    let (status, created) = post(
        &http,
        &format!("{}/v1/limits", a.url),
        json!({"name": "tenant:*", "slots": 1, "max_instances": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // A key's instance is made on demand, on whichever server is asked,
    // and its queue is one queue across servers.
    let (status, acme) = acquire(&http, &a, json!({"names": ["tenant:acme"]})).await;
    assert_eq!(status, StatusCode::OK, "{acme}");
    let second = {
        let (http, url) = (http.clone(), b.url.clone());
        tokio::spawn(async move {
            post(
                &http,
                &format!("{url}/v1/acquire"),
                json!({"names": ["tenant:acme"]}),
            )
            .await
        })
    };
    until(&http, &a, "tenant:acme", |s| s["waiting"] == json!(1)).await;
    let (status, globex) = acquire(&http, &b, json!({"names": ["tenant:globex"]})).await;
    assert_eq!(status, StatusCode::OK, "{globex}");
    let (status, refused) = acquire(&http, &b, json!({"names": ["tenant:initech"]})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_eq!(refused["error"]["code"], "too_many_instances", "{refused}");

    let template = limit(&http, &b, "tenant:*").await;
    assert_eq!(template["template"]["instances"], 2, "{template}");
    assert_eq!(
        (&template["held"], &template["waiting"]),
        (&json!(2), &json!(1))
    );
    let (_, page) = call(
        &http,
        reqwest::Method::GET,
        &format!("{}/v1/limits/tenant:*/instances?order=busiest", a.url),
        None,
    )
    .await;
    let names: Vec<&str> = page["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tenant:acme", "tenant:globex"], "the busiest first");

    // Released everywhere: the queue moves on, then the idle instances go.
    release(&http, &a, acme["lease_id"].as_str().unwrap()).await;
    let (status, handed) = second.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{handed}");
    release(&http, &a, handed["lease_id"].as_str().unwrap()).await;
    release(&http, &b, globex["lease_id"].as_str().unwrap()).await;
    let template = limit(&http, &a, "tenant:*").await;
    assert_eq!(template["template"]["instances"], 0, "{template}");
    let (status, _) = acquire(&http, &b, json!({"names": ["tenant:initech"]})).await;
    assert_eq!(status, StatusCode::OK);
}
