//! A `redis-server` of the test's own, for this crate's tests and those of
//! crates that test against Redis (feature `testing`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` listening on a Unix socket in a temporary directory
/// (no TCP port at all), with every write appended to its log before it
/// answers, so that a restart loses nothing. Killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one; panics if `redis-server` is not installed.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("redis.sock");
        let child = spawn(dir.path(), &socket);
        RedisServer {
            child: Some(child),
            socket,
            dir,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// Kills it (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts it again on the same socket and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(self.dir.path(), &self.socket));
    }
}

fn spawn(dir: &Path, socket: &Path) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--unixsocket")
        .arg(socket)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test installs it)");
    let started = Instant::now();
    // The socket appears once the server accepts connections.
    while !socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
