//! The `ratekeeper` binary as a child process.

#![allow(dead_code)]

pub mod checker;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_ratekeeper");

/// A `ratekeeper serve` process, killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
}

impl ServerProcess {
    /// Starts the server on port 0 with `data_dir` and waits for the line
    /// that names its address.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let mut command = serve_command(data_dir);
        command.args(extra);
        ServerProcess::spawn(command)
    }

    /// Spawns `command` (a `ratekeeper serve`, see [`serve_command`]) and
    /// waits for the line that names its address.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let url = url_line(&mut child).1;
        ServerProcess { child, url }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// `ratekeeper serve` on 127.0.0.1 port 0 with `data_dir`, without the
/// tokens of the environment; add arguments, then spawn it.
pub fn serve_command(data_dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_remove("RATEKEEPER_ADMIN_TOKEN")
        .env_remove("RATEKEEPER_CLIENT_TOKEN");
    command
}

/// Reads a started server's first line from its piped stdout: the line,
/// and the `http://` or `https://` address it names.
pub fn url_line(child: &mut Child) -> (String, String) {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://") || word.starts_with("https://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (line, url)
}

/// Asks `server` to acquire (try once) on `name` until it stops answering
/// 503, as Redis comes back after an outage (15 s at most); the answer.
pub async fn try_once_when_back(
    http: &reqwest::Client,
    url: &str,
    name: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let started = std::time::Instant::now();
    loop {
        let response = http
            .post(format!("{url}/v1/acquire"))
            .json(&serde_json::json!({"names": [name], "timeout_seconds": 0}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer = response.json().await.unwrap_or(serde_json::Value::Null);
        if status != reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return (status, answer);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "Redis never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How many rounds a fault test runs: `variable` if set (the long runs of
/// `scripts/torture`), else `default`.
pub fn rounds(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI against `url`.
pub fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RATEKEEPER_URL", url)
        .env_remove("RATEKEEPER_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
