//! The admin CLI and `serve`'s settings, run as the real binary.

mod common;

use std::process::Command;

use common::{BIN, ServerProcess, cli, stderr, stdout};

#[test]
fn limits_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();

    let created = cli(
        url,
        &[
            "limit",
            "create",
            "db",
            "--slots",
            "3",
            "--description",
            "main db",
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(stdout(&created).contains("main db"));
    let rate = cli(
        url,
        &[
            "limit",
            "create",
            "api",
            "--slots",
            "10",
            "--decay",
            "5",
            "--inactive",
        ],
    );
    assert!(rate.status.success(), "{}", stderr(&rate));

    let listed = stdout(&cli(url, &["limit", "ls"]));
    let lines: Vec<&str> = listed.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{listed}");
    assert!(
        lines[1].starts_with("api ") && lines[1].contains("5/s") && lines[1].contains(" no "),
        "{listed}"
    );
    assert!(
        lines[2].starts_with("db ") && lines[2].contains(" yes "),
        "{listed}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&cli(url, &["limit", "ls", "--output", "json"]))).unwrap();
    assert_eq!(json[1]["name"], "db");
    assert_eq!(json[1]["slots"], 3);

    assert!(
        cli(url, &["limit", "update", "db", "--slots", "5"])
            .status
            .success()
    );
    assert!(cli(url, &["limit", "enable", "api"]).status.success());
    assert!(cli(url, &["limit", "disable", "db"]).status.success());
    let db: serde_json::Value = serde_json::from_str(&stdout(&cli(
        url,
        &["limit", "inspect", "db", "-o", "json"],
    )))
    .unwrap();
    assert_eq!(
        (db["slots"].as_u64(), db["active"].as_bool()),
        (Some(5), Some(false))
    );
    let inspected = stdout(&cli(url, &["limit", "inspect", "api"]));
    assert!(
        inspected.contains("leases:") && inspected.contains("waiting:"),
        "{inspected}"
    );

    let leases = stdout(&cli(url, &["leases", "--limit", "db"]));
    assert!(leases.starts_with("LEASE"), "{leases}");

    // Deleting asks first; without a terminal it refuses and changes nothing.
    let refused = cli(url, &["limit", "delete", "db"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert!(cli(url, &["limit", "inspect", "db"]).status.success());
    assert!(
        cli(url, &["limit", "reset", "db", "--yes"])
            .status
            .success()
    );
    assert!(
        cli(url, &["limit", "delete", "db", "--yes"])
            .status
            .success()
    );
    let gone = cli(url, &["limit", "inspect", "db"]);
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(
        stderr(&gone).trim(),
        "error: no limit is named \"db\" (limit_not_found)"
    );
}

#[test]
fn a_limit_is_paused_and_resumed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    assert!(
        cli(url, &["limit", "create", "vendor", "--slots", "2"])
            .status
            .success()
    );
    let paused = cli(
        url,
        &[
            "limit",
            "pause",
            "vendor",
            "--seconds",
            "600",
            "--reason",
            "429 from the vendor",
        ],
    );
    assert!(paused.status.success(), "{}", stderr(&paused));
    let listed = stdout(&cli(url, &["limit", "ls"]));
    assert!(
        listed.lines().next().unwrap().contains("PAUSED"),
        "{listed}"
    );
    assert!(
        listed.contains("for 599.") || listed.contains("for 600.0s"),
        "{listed}"
    );
    let inspected = stdout(&cli(url, &["limit", "inspect", "vendor"]));
    assert!(
        inspected.contains("429 from the vendor") && inspected.contains("(pid "),
        "{inspected}"
    );
    let bad = cli(url, &["limit", "pause", "vendor", "--seconds=-3"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("invalid_pause"), "{}", stderr(&bad));
    let resumed = cli(url, &["limit", "resume", "vendor", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&resumed)).unwrap();
    assert!(json[0]["paused"].is_null(), "{json}");
}

#[test]
fn limit_ls_groups_instances_under_their_template_and_instances_pages_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.as_str();
    let created = cli(
        url,
        &[
            "limit",
            "create",
            "tenant:*",
            "--slots",
            "2",
            "--max-instances",
            "50",
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        cli(url, &["limit", "create", "zeta", "--slots", "1"])
            .status
            .success()
    );
    // Idle keys are dropped: hold some so that they show.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        for tenant in ["acme", "acme", "globex"] {
            let answer = http
                .post(format!("{url}/v1/acquire"))
                .json(&serde_json::json!({"names": [format!("tenant:{tenant}")]}))
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_success());
        }
    });
    let listed = stdout(&cli(url, &["limit", "ls"]));
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    let expected = [
        "tenant:* (2 instances) ",
        "  tenant:acme ",
        "  tenant:globex ",
        "zeta ",
    ];
    assert_eq!(rows.len(), expected.len(), "{listed}");
    for (row, start) in rows.iter().zip(expected) {
        assert!(row.starts_with(start), "{row:?} in\n{listed}");
    }
    let page = stdout(&cli(
        url,
        &["limit", "instances", "tenant:*", "--count", "1"],
    ));
    assert!(
        page.contains("tenant:acme") && page.contains("more: --after tenant:acme"),
        "{page}"
    );
    let rest = stdout(&cli(
        url,
        &[
            "limit",
            "instances",
            "tenant:*",
            "--after",
            "tenant:acme",
            "-o",
            "json",
        ],
    ));
    let rest: serde_json::Value = serde_json::from_str(&rest).unwrap();
    assert_eq!(rest["instances"][0]["name"], "tenant:globex");
    let refused = cli(url, &["limit", "update", "tenant:acme", "--slots", "9"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("limit_is_instance"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn server_errors_print_one_line_and_exit_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let bad = cli(&server.url, &["limit", "create", "a/b", "--slots", "1"]);
    assert_eq!(bad.status.code(), Some(1));
    let message = stderr(&bad);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("'/'") && message.contains("invalid_name"),
        "{message}"
    );
    assert!(stdout(&bad).is_empty());
}

#[test]
fn an_unreachable_server_is_named() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let output = cli(&url, &["limit", "ls"]);
    assert_eq!(output.status.code(), Some(69));
    let message = stderr(&output);
    assert!(
        message.contains("cannot reach the ratekeeper server") && message.contains(&url),
        "{message}"
    );
}

#[test]
fn tokens_from_the_config_file_and_environment_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ratekeeper.toml");
    std::fs::write(
        &config,
        "max_wait_seconds = 5\n[[tokens]]\nsecret = \"from-the-config-file\"\nscope = \"admin\"\n",
    )
    .unwrap();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = server.url.as_str();
    let without = cli(url, &["limit", "ls"]);
    assert_eq!(without.status.code(), Some(1));
    assert!(
        stderr(&without).contains("unauthorized"),
        "{}",
        stderr(&without)
    );
    let with = Command::new(BIN)
        .args(["limit", "create", "db", "--slots", "1"])
        .env("RATEKEEPER_URL", url)
        .env("RATEKEEPER_TOKEN", "from-the-config-file")
        .output()
        .unwrap();
    assert!(with.status.success(), "{}", stderr(&with));
}

#[test]
fn a_public_address_without_tokens_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--addr", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("RATEKEEPER_ADMIN_TOKEN")
        .env_remove("RATEKEEPER_CLIENT_TOKEN")
        .env_remove("RATEKEEPER_INSECURE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("--insecure"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_store_that_is_not_a_usable_redis_url_is_refused() {
    let nowhere = "redis+unix:///nonexistent/redis.sock";
    for (store, option, expected) in [
        ("http://localhost:6379", &[][..], "must be a redis://"),
        ("redis://h:1,http://h:2", &[], "not \"http://h:2\""),
        (nowhere, &[], "cannot use the Redis store"),
        (nowhere, &["--store-prefix", "a{b}"], "without braces"),
        (nowhere, &["--store-partitions", "33"], "1 to 32, not 33"),
    ] {
        let output = Command::new(BIN)
            .args(["serve", "--addr", "127.0.0.1:0", "--store", store])
            .args(option)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{store}");
        assert!(
            stderr(&output).contains(expected),
            "{store}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_bad_config_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "max_wait_secs = 5\n").unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("bad.toml") && message.contains("max_wait_secs"),
        "{message}"
    );
}

#[test]
fn bench_prints_figures_beside_their_targets() {
    let output = Command::new(BIN)
        .args([
            "bench",
            "handoff",
            "churn",
            "--url",
            "memory://",
            "--seconds",
            "0.3",
            "--handoffs",
            "20",
            "--clients",
            "4",
            "park",
            "--parked",
            "200",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let figures: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let metrics: Vec<(&str, &str)> = figures
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["scenario"].as_str().unwrap(),
                f["metric"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        metrics,
        [
            ("handoff", "p50"),
            ("handoff", "p99"),
            ("handoff", "max"),
            ("churn", "cycles/s, 4 clients"),
            ("park", "waiters parked"),
            ("park", "resident memory"),
            ("park", "bytes per parked waiter"),
        ]
    );
    assert_eq!(figures[4]["value"], 200.0);
    assert_eq!(figures[0]["target"], "≤ 1");
    assert!(figures[3]["value"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_parks_waiters_on_a_server_and_reads_its_memory_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--durability", "memory"]);
    let output = Command::new(BIN)
        .args(["bench", "park", "--parked", "100", "-o", "json", "--url"])
        .arg(&server.url)
        .env_remove("RATEKEEPER_TOKEN")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let figures: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let parked = &figures[0];
    assert_eq!(parked["metric"], "waiters parked");
    assert!(parked["value"].as_f64().unwrap() >= 100.0, "{parked}");
    assert!(figures[1]["value"].as_f64().unwrap() > 1.0, "{figures}");
}

#[test]
fn the_server_logs_one_json_line_per_request_with_its_route_and_never_a_token() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::serve_command(dir.path())
        .args(["--durability", "memory", "--log-format", "json"])
        .env("RATEKEEPER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (first, url) = common::url_line(&mut child);
    assert!(first.starts_with("ratekeeper "), "{first}");
    assert!(first.contains("no tokens"), "{first}");
    let missing = cli(&url, &["limit", "inspect", "no-such-limit"]);
    assert_eq!(missing.status.code(), Some(1));
    let _ = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "0.5"])
        .arg(format!("{url}/v1/events?access_token=very-secret-token"))
        .status();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&serde_json::Value| l["target"] == "ratekeeper::access")
        .count()
        < 2
    {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the log ended: {lines:?}"
        );
        assert!(
            !line.contains("very-secret-token"),
            "a token was logged: {line}"
        );
        lines.push(serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}")));
    }
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "ratekeeper::access")
        .collect();
    assert_eq!(access[0]["span"]["route"], "/v1/limits/{name}");
    assert_eq!(access[0]["fields"]["status"], 404);
    assert!(access[0]["span"]["request_id"].as_str().unwrap().len() >= 32);
    assert_eq!(access[1]["span"]["route"], "/v1/events");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_server_listens_on_a_host_name_and_refuses_an_address_without_a_port() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let serve = |addr: &str| {
        Command::new(BIN)
            .args(["serve", "--durability", "memory", "--addr", addr])
            .env_remove("RATEKEEPER_ADMIN_TOKEN")
            .env_remove("RATEKEEPER_CLIENT_TOKEN")
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut named = serve("localhost:0");
    let url = common::url_line(&mut named)
        .1
        .replace("127.0.0.1", "localhost");
    let listed = cli(&url, &["limit", "ls"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let _ = named.kill();
    let _ = named.wait();
    let refused = serve("7171").wait_with_output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("expected host:port"), "{message}");
}

#[test]
fn completions_and_manual_pages_come_from_the_same_flags_as_help() {
    let bash = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(bash.status.success());
    let script = stdout(&bash);
    assert!(
        script.contains("--max-tickets-per-token"),
        "bash completion lacks a serve flag"
    );
    let page = Command::new(BIN).args(["man", "serve"]).output().unwrap();
    assert!(page.status.success());
    let page = stdout(&page);
    assert!(
        page.starts_with(".ie") || page.contains(".TH ratekeeper-serve"),
        "{page}"
    );
    assert!(page.contains("RATEKEEPER_MAX_TICKETS"));
    let unknown = Command::new(BIN).args(["man", "nope"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn sighup_never_stops_a_server_even_without_tls() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--durability", "memory"]);
    for _ in 0..3 {
        kill(Pid::from_raw(server.child.id() as i32), Signal::SIGHUP).unwrap();
    }
    let listed = cli(&server.url, &["limit", "ls"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited on SIGHUP"
    );
}

#[test]
fn a_stopped_server_has_written_every_line_it_logged_and_its_last_word_is_last() {
    use std::io::Read;
    use std::process::Stdio;

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    // Lines are written a batch at a time by a thread of their own: every
    // one must be out when the process ends, whenever it is stopped.
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = common::serve_command(dir.path())
            .args(["--durability", "memory"])
            .env("RATEKEEPER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let url = common::url_line(&mut child).1;
        let asked = 3 + round;
        for _ in 0..asked {
            assert!(cli(&url, &["limit", "ls"]).status.success());
        }
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let mut logged = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut logged)
            .unwrap();
        assert!(child.wait().unwrap().success());
        let answered = logged
            .lines()
            .filter(|l| l.contains("ratekeeper::access"))
            .count();
        assert_eq!(answered, asked, "round {round}: {logged}");
        let last = logged.lines().last().unwrap_or_default();
        assert!(
            last.contains("stopped; every change is stored"),
            "round {round}: the last line is {last:?}"
        );
    }
}
