//! A network partition between one server and Redis, made for real: Redis
//! and two `ratekeeper serve` instances each in a network namespace of the
//! test's own, joined by veth pairs, and one link cut under them.
//!
//! The cut-off server must answer, and answer 503 (not hang, not admit);
//! `/readyz` must say so; its peer must go on serving, and must not admit
//! anyone to the slot a cut-off holder was granted before that holder's
//! lease has expired. Once the link is back, the cut-off server serves
//! again by itself.
//!
//! Needs root and `ip` (iproute2; CI runs as root and `scripts/test`
//! installs it); elsewhere the test says it cannot run and passes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};

/// Network namespaces and veth pairs, removed when dropped.
struct Net {
    /// Distinguishes this run's names and addresses from another's.
    id: u32,
    namespaces: Vec<String>,
}

impl Net {
    fn ip(args: &[&str]) -> bool {
        Command::new("ip")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn namespace(&self, role: &str) -> String {
        format!("rk{role}{}", self.id)
    }

    /// Makes namespaces `r` (Redis), `a` and `b` (servers) and links: r–a,
    /// r–b, and the test's own namespace to a and to b.
    fn make() -> Option<Net> {
        let id = std::process::id() % 200 + 20;
        let mut net = Net {
            id,
            namespaces: Vec::new(),
        };
        for role in ["r", "a", "b"] {
            let ns = net.namespace(role);
            if !Net::ip(&["netns", "add", &ns]) {
                return None;
            }
            net.namespaces.push(ns.clone());
            Net::ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let links = [
            (Some("r"), "a", 1),
            (Some("r"), "b", 2),
            (None, "a", 3),
            (None, "b", 4),
        ];
        for (left, right, subnet) in links {
            let left_name = format!("v{}{}{}", left.unwrap_or("t"), right, id);
            let right_name = format!("v{}{}{}", right, left.unwrap_or("t"), id);
            let made = Net::ip(&[
                "link",
                "add",
                &left_name,
                "type",
                "veth",
                "peer",
                "name",
                &right_name,
            ]);
            assert!(made, "cannot make a veth pair");
            let sides = [(left, &left_name, 1), (Some(right), &right_name, 2)];
            for (side, name, host) in sides {
                let address = format!("10.{id}.{subnet}.{host}/24");
                match side {
                    Some(role) => {
                        let ns = net.namespace(role);
                        assert!(Net::ip(&["link", "set", name, "netns", &ns]));
                        assert!(Net::ip(&["-n", &ns, "addr", "add", &address, "dev", name]));
                        assert!(Net::ip(&["-n", &ns, "link", "set", name, "up"]));
                    }
                    None => {
                        assert!(Net::ip(&["addr", "add", &address, "dev", name]));
                        assert!(Net::ip(&["link", "set", name, "up"]));
                    }
                }
            }
        }
        Some(net)
    }

    /// Cuts (or mends) the link between Redis and server `role`, on the
    /// server's side: its packets to Redis go nowhere.
    fn link(&self, role: &str, up: bool) {
        let name = format!("v{role}r{}", self.id);
        let state = if up { "up" } else { "down" };
        assert!(Net::ip(&[
            "-n",
            &self.namespace(role),
            "link",
            "set",
            &name,
            state
        ]));
        if up {
            let address = format!("10.{}.{}.2/24", self.id, if role == "a" { 1 } else { 2 });
            // Bringing a link up keeps its address; add it in case.
            Net::ip(&[
                "-n",
                &self.namespace(role),
                "addr",
                "add",
                &address,
                "dev",
                &name,
            ]);
        }
    }

    /// Runs `program` in namespace `role`.
    fn spawn(&self, role: &str, program: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.namespace(role), program])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and so their
        // peers in the test's own namespace.
        for ns in &self.namespaces {
            Net::ip(&["netns", "del", ns]);
        }
    }
}

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ratekeeper serve` in namespace `role`, reached from the test at
/// `10.ID.SUBNET.2`; returns the process and its URL.
fn server(net: &Net, role: &str, data: &Path) -> (Killed, String) {
    let subnet = if role == "a" { 1 } else { 2 };
    let store = format!("redis://10.{}.{subnet}.1:6379", net.id);
    let data = data.join(role);
    let mut child = net.spawn(
        role,
        common::BIN,
        &[
            "serve",
            "--addr",
            "0.0.0.0:0",
            "--insecure",
            "--store",
            &store,
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http://0.0.0.0:"))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let reached_at = if role == "a" { 3 } else { 4 };
    (
        Killed(child),
        format!("http://10.{}.{reached_at}.2:{port}", net.id),
    )
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> (StatusCode, Value) {
    let response = http
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("the server answers within the client's timeout");
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn status(http: &reqwest::Client, url: &str) -> StatusCode {
    http.get(url)
        .send()
        .await
        .expect("the server answers within the client's timeout")
        .status()
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_cut_off_from_redis_refuses_and_its_peer_never_over_admits() {
    let Some(net) = Net::make() else {
        eprintln!("cannot make network namespaces here (not root, or no `ip`): test skipped");
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let mut redis = net.spawn(
        "r",
        "redis-server",
        &[
            "--port",
            "6379",
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--dir",
            scratch.path().to_str().unwrap(),
        ],
    );
    // Redis is up once it answers a PING from inside its namespace.
    let started = Instant::now();
    while !Command::new("ip")
        .args(["netns", "exec", &net.namespace("r"), "redis-cli", "ping"])
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no Redis");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = redis.stdout.take();
    let _redis = Killed(redis);
    let (_a, a) = server(&net, "a", scratch.path());
    let (_b, b) = server(&net, "b", scratch.path());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();

    let (created, _) = post(
        &http,
        &format!("{a}/v1/limits"),
        json!({"name": "shared", "slots": 1}),
    )
    .await;
    assert_eq!(created, StatusCode::CREATED);
    // A holder through `a`, with a short lease.
    let (granted, lease) = post(
        &http,
        &format!("{a}/v1/acquire"),
        json!({"names": ["shared"], "lease_seconds": 2}),
    )
    .await;
    assert_eq!(granted, StatusCode::OK, "{lease}");
    let expires_at = lease["expires_at"].as_u64().unwrap();
    let lease_id = lease["lease_id"].as_str().unwrap().to_owned();

    net.link("a", false);
    // The cut-off server answers, and refuses: it cannot know the state.
    let asked = Instant::now();
    let (refused, body) = post(
        &http,
        &format!("{a}/v1/acquire"),
        json!({"names": ["shared"], "timeout_seconds": 0}),
    )
    .await;
    assert_eq!(refused, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    eprintln!("cut-off server refused in {:?}", asked.elapsed());
    assert_eq!(
        status(&http, &format!("{a}/readyz")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(status(&http, &format!("{a}/livez")).await, StatusCode::OK);
    assert_eq!(status(&http, &format!("{b}/readyz")).await, StatusCode::OK);

    // Its peer goes on, and admits the next holder only once the cut-off
    // holder's lease has run out (its holder cannot renew it now).
    let (granted, next) = post(
        &http,
        &format!("{b}/v1/acquire"),
        json!({"names": ["shared"], "timeout_seconds": 10, "lease_seconds": 60}),
    )
    .await;
    let granted_at = now_millis();
    assert_eq!(granted, StatusCode::OK, "{next}");
    assert!(
        granted_at >= expires_at,
        "admitted at {granted_at}, before the cut-off holder's lease ran out at {expires_at}"
    );

    // Mended: the cut-off server serves again by itself, and its holder
    // is told its lease is gone.
    net.link("a", true);
    let mended = Instant::now();
    while status(&http, &format!("{a}/readyz")).await != StatusCode::OK {
        assert!(
            mended.elapsed() < Duration::from_secs(20),
            "never ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = http
        .delete(format!("{a}/v1/leases/{lease_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::GONE);
    let (busy, body) = post(
        &http,
        &format!("{a}/v1/acquire"),
        json!({"names": ["shared"], "timeout_seconds": 0}),
    )
    .await;
    assert_eq!(busy, StatusCode::TOO_MANY_REQUESTS, "{body}");
}
