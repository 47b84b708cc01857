//! `ratekeeper run` against a server process: exit codes, timeouts,
//! signals, and slots released however the command ends.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, ServerProcess, cli, stderr, stdout};

fn run(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .args(args)
        .env("RATEKEEPER_URL", url)
        .env_remove("RATEKEEPER_TOKEN")
        .stdin(Stdio::null());
    command
}

fn held(url: &str, name: &str) -> u64 {
    let output = cli(url, &["limit", "inspect", name, "-o", "json"]);
    let limit: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    limit["held"].as_u64().unwrap()
}

fn server_with(limits: &[(&str, &str)]) -> (ServerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    for (name, slots) in limits {
        let created = cli(&server.url, &["limit", "create", name, "--slots", slots]);
        assert!(created.status.success(), "{}", stderr(&created));
    }
    (server, dir)
}

#[test]
fn the_command_runs_holding_its_slots_and_its_status_is_ours() {
    let (server, _dir) = server_with(&[("db", "3")]);
    let url = server.url.clone();
    // The command sees its own slots held while it runs.
    let script =
        format!("{BIN} limit inspect db -o json | grep -q '\"held\": 2' && exit 7; exit 1");
    let output = run(&url, &["--limit", "db:2", "--", "sh", "-c", &script])
        .env("RATEKEEPER_URL", &url)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    assert_eq!(held(&url, "db"), 0);
}

#[test]
fn a_crashing_command_releases_its_slots() {
    let (server, _dir) = server_with(&[("db", "1")]);
    let output = run(
        &server.url,
        &["--limit", "db", "--", "sh", "-c", "kill -KILL $$"],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(128 + 9));
    assert_eq!(held(&server.url, "db"), 0);
    let missing = run(&server.url, &["--limit", "db", "--", "/no/such/program"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(127));
    assert_eq!(held(&server.url, "db"), 0);
}

#[test]
fn a_timeout_exits_75_without_running_the_command() {
    let (server, _dir) = server_with(&[("db", "1")]);
    let mut holder = run(&server.url, &["--limit", "db", "--", "sleep", "30"])
        .spawn()
        .unwrap();
    while held(&server.url, "db") == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let marker = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let output = run(
        &server.url,
        &[
            "--limit",
            "db",
            "--timeout",
            "0.3",
            "--",
            "rm",
            marker.path().to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(75));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        stderr(&output).contains("not granted within 0.3 s"),
        "{}",
        stderr(&output)
    );
    assert!(marker.path().exists(), "the command ran");
    holder.kill().unwrap();
    holder.wait().unwrap();
}

#[test]
fn signals_reach_the_command_and_the_slots_are_released() {
    let (server, _dir) = server_with(&[("db", "1")]);
    let mut child = run(
        &server.url,
        &[
            "--limit",
            "db",
            "--",
            "sh",
            "-c",
            "trap 'exit 42' TERM; while :; do sleep 0.05; done",
        ],
    )
    .spawn()
    .unwrap();
    while held(&server.url, "db") == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Give sh a moment to install its trap: it runs after the lease is held.
    std::thread::sleep(Duration::from_millis(200));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
    assert_eq!(held(&server.url, "db"), 0);
}

#[test]
fn refusals_and_bad_usage_are_explained() {
    let (server, _dir) = server_with(&[("db", "1")]);
    let missing = run(&server.url, &["--limit", "nope", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("nope"), "{}", stderr(&missing));
    let nothing = run(&server.url, &["--", "true"]).output().unwrap();
    assert_eq!(nothing.status.code(), Some(2));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = run(
        &format!("http://127.0.0.1:{port}"),
        &["--limit", "db", "--", "true"],
    )
    .output()
    .unwrap();
    assert_eq!(
        unreachable.status.code(),
        Some(69),
        "{}",
        stderr(&unreachable)
    );
}

#[test]
fn a_holder_killed_with_sigkill_frees_its_slots_within_its_ttl() {
    let (server, _dir) = server_with(&[("db", "1")]);
    let mut holder = run(
        &server.url,
        &["--limit", "db", "--lease-seconds", "1", "--", "sleep", "30"],
    )
    .spawn()
    .unwrap();
    while held(&server.url, "db") == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    holder.kill().unwrap(); // SIGKILL: no release, no more renewals.
    holder.wait().unwrap();
    let killed = Instant::now();
    // The orphaned `sleep` no longer matters; the lease expires on its own.
    let output = run(
        &server.url,
        &["--limit", "db", "--timeout", "5", "--", "true"],
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let freed_after = killed.elapsed();
    assert!(
        freed_after <= Duration::from_millis(1500),
        "freed after {freed_after:?}"
    );
}

#[test]
fn a_command_exiting_with_the_throttled_code_pauses_its_limits_for_the_retry_after_it_wrote() {
    let (server, _dir) = server_with(&[("vendor", "2")]);
    let url = server.url.as_str();
    let output = run(
        url,
        &[
            "--limit",
            "vendor",
            "--throttled-exit-code",
            "42",
            "--",
            "sh",
            "-c",
            "echo 120 > \"$RATEKEEPER_RETRY_AFTER_FILE\"; exit 42",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(42), "{}", stderr(&output));
    let limit: serde_json::Value = serde_json::from_str(&stdout(&cli(
        url,
        &["limit", "inspect", "vendor", "-o", "json"],
    )))
    .unwrap();
    let pause = &limit["paused"];
    let left = pause["until"].as_u64().unwrap() - pause["since"].as_u64().unwrap();
    assert!((119_000..=121_000).contains(&left), "{limit}");
    assert!(
        pause["reason"].as_str().unwrap().contains("exited 42"),
        "{limit}"
    );
    // The next run waits for the pause rather than hitting the upstream.
    let waited = run(url, &["--limit", "vendor", "--timeout", "0", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(waited.status.code(), Some(75), "{}", stderr(&waited));
}

#[test]
fn any_other_exit_reports_nothing() {
    let (server, _dir) = server_with(&[("vendor", "2")]);
    let url = server.url.as_str();
    let output = run(
        url,
        &[
            "--limit",
            "vendor",
            "--throttled-exit-code",
            "42",
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let limit: serde_json::Value = serde_json::from_str(&stdout(&cli(
        url,
        &["limit", "inspect", "vendor", "-o", "json"],
    )))
    .unwrap();
    assert!(limit["paused"].is_null(), "{limit}");
}
