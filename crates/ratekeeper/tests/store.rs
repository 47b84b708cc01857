//! A damaged store, as a user meets it: the server refuses to start and
//! says which file, where and what to do; `ratekeeper store check` says the
//! same; `ratekeeper store recover --accept-loss` keeps what can be read.

mod common;

use std::process::Command;

use common::{BIN, ServerProcess, stderr, stdout};

fn store(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("store")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_damaged_log_is_refused_at_start_checked_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let http = reqwest::Client::new();
    for name in ["a", "b", "c"] {
        let response = http
            .post(format!("{}/v1/limits", server.url))
            .json(&serde_json::json!({"name": name, "slots": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    server.kill();
    let log = dir.path().join("ratekeeper.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[20] ^= 0x10; // inside the first frame, with two acknowledged after it
    std::fs::write(&log, &bytes).unwrap();

    let refused = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("ratekeeper.log") && message.contains("offset 0"),
        "{message}"
    );
    assert!(message.contains("store recover --accept-loss"), "{message}");

    let checked = store(dir.path(), &["check"]);
    assert!(!checked.status.success());
    assert!(
        stderr(&checked).contains("offset 0"),
        "{}",
        stderr(&checked)
    );
    assert_eq!(std::fs::read(&log).unwrap(), bytes, "check changed the log");

    let unconfirmed = store(dir.path(), &["recover"]);
    assert!(!unconfirmed.status.success());
    assert!(stderr(&unconfirmed).contains("--accept-loss"));

    let recovered = store(dir.path(), &["recover", "--accept-loss"]);
    assert!(recovered.status.success(), "{}", stderr(&recovered));
    assert!(
        stdout(&recovered).contains("offset 0"),
        "{}",
        stdout(&recovered)
    );
    let checked = store(dir.path(), &["check"]);
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert!(stdout(&checked).contains("sound"));
    ServerProcess::start(dir.path(), &[]);
}
