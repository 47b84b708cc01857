//! What `deploy/` ships works with this build: the systemd unit verifies
//! and its example config refuses to start until edited; every metric the
//! Prometheus rules and the Grafana dashboard use exists on a live server,
//! and the rules pass `promtool check rules` (where installed).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{BIN, stderr};

fn root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_systemd_unit_verifies_and_its_example_config_refuses_to_start_until_edited() {
    let root = root();
    let dir = tempfile::tempdir().unwrap();
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let unit = std::fs::read_to_string(root.join("deploy/systemd/ratekeeper.service")).unwrap();
        let unit_path = dir.path().join("ratekeeper.service");
        std::fs::write(&unit_path, unit.replace("/usr/local/bin/ratekeeper", BIN)).unwrap();
        let verified = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit_path)
            .output()
            .unwrap();
        assert!(verified.status.success(), "{}", stderr(&verified));
    } else {
        eprintln!("systemd-analyze is not installed: the unit is not verified");
    }
    let example = root.join("deploy/systemd/ratekeeper.toml");
    let refused = common::serve_command(&dir.path().join("data"))
        .arg("--config")
        .arg(&example)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("has a space in it"),
        "{}",
        stderr(&refused)
    );
    let edited = std::fs::read_to_string(&example)
        .unwrap()
        .replace("CHANGE ME admin", "0123456789abcdef0123456789abcdef")
        .replace("CHANGE ME client", "fedcba9876543210fedcba9876543210")
        .replace("0.0.0.0:7171", "127.0.0.1:0");
    let config = dir.path().join("ratekeeper.toml");
    std::fs::write(&config, edited).unwrap();
    let server = common::ServerProcess::spawn({
        let mut command = common::serve_command(&dir.path().join("data"));
        command.arg("--config").arg(&config);
        command
    });
    assert!(server.url.starts_with("http://127.0.0.1:"));
}

/// The metric names a PromQL text uses.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("ratekeeper_") || word.starts_with("process_"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_use_exists_on_a_live_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::ServerProcess::start(dir.path(), &["--durability", "memory"]);
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{}{path}", server.url))
            .json(&body)
            .send()
    };
    post("/v1/limits", serde_json::json!({"name": "db", "slots": 1}))
        .await
        .unwrap();
    post("/v1/acquire", serde_json::json!({"names": ["db"]}))
        .await
        .unwrap();
    let exposition = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Vec<&str> = exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let rules =
        std::fs::read_to_string(root().join("deploy/prometheus/ratekeeper-alerts.yml")).unwrap();
    let dashboard =
        std::fs::read_to_string(root().join("deploy/grafana/ratekeeper-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let used = [metric_names(&rules), metric_names(&dashboard)].concat();
    assert!(used.len() > 10, "{used:?}");
    for name in used {
        assert!(
            series.contains(&name.as_str()),
            "{name} is not on /metrics:\n{exposition}"
        );
    }
    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(root().join("deploy/prometheus/ratekeeper-alerts.yml"))
        .output()
    {
        Ok(checked) => assert!(checked.status.success(), "{}", stderr(&checked)),
        Err(_) => eprintln!("promtool is not installed: the rules' syntax is not checked"),
    }
}
