//! A full disk under a running durable server: changes the store cannot
//! write are refused with 503 before they are made, and `/readyz` says why; once there is room
//! again the server takes changes again by itself, without a restart.
//!
//! Needs a small tmpfs, which takes root (CI runs as root); elsewhere the
//! test says it cannot run and passes.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::ServerProcess;
use reqwest::StatusCode;
use serde_json::json;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn small_disk(at: &Path, megabytes: u32) -> Option<Mount> {
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    mounted.then(|| Mount(at.to_owned()))
}

/// Fills the disk under `dir` with one file; returns it.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![7u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_changes_and_the_server_recovers_when_there_is_room() {
    let scratch = tempfile::tempdir().unwrap();
    let Some(_mount) = small_disk(scratch.path(), 12) else {
        eprintln!("cannot mount a tmpfs here (not root?): the full-disk test does not run");
        return;
    };
    let data = scratch.path().join("data");
    let server = ServerProcess::start(&data, &[]);
    let http = reqwest::Client::new();
    let filler = fill(scratch.path());
    // Changes fill the change log (its space was taken up front) until its
    // checkpoint, which needs room the disk no longer has.
    let description = "x".repeat(1000);
    let mut refused = None;
    let started = Instant::now();
    for i in 0.. {
        let response = http
            .post(format!("{}/v1/limits", server.url))
            .json(&json!({"name": format!("l{i}"), "slots": 1, "description": description}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(i);
            break;
        }
        assert_eq!(response.status(), StatusCode::CREATED);
        let _ = http
            .delete(format!("{}/v1/limits/l{i}", server.url))
            .send()
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the disk never filled"
        );
    }
    assert!(refused.is_some());
    // While the store cannot write, a change is refused before it is made:
    // the 503 means nothing changed, now and after the disk has room.
    let refused = http
        .post(format!("{}/v1/limits", server.url))
        .json(&json!({"name": "while-full", "slots": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let message = refused.text().await.unwrap();
    assert!(message.contains("nothing was changed"), "{message}");
    let unseen = http
        .get(format!("{}/v1/limits/while-full", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unseen.status(), StatusCode::NOT_FOUND);
    let ready = http
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let reason = ready.text().await.unwrap();
    assert!(reason.contains("No space left"), "{reason}");
    // Room again: the server takes changes by itself.
    std::fs::remove_file(filler).unwrap();
    let started = Instant::now();
    loop {
        let response = http
            .post(format!("{}/v1/limits", server.url))
            .json(&json!({"name": "after", "slots": 1}))
            .send()
            .await
            .unwrap();
        if matches!(
            response.status(),
            StatusCode::CREATED | StatusCode::CONFLICT
        ) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    while http
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never ready again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still_unseen = http
        .get(format!("{}/v1/limits/while-full", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(still_unseen.status(), StatusCode::NOT_FOUND);
    drop(server);
}
