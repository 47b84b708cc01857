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
    /// The TLS port, for a server started with [`RedisServer::start_tls`].
    tls_port: Option<u16>,
}

impl RedisServer {
    /// Starts one; panics if `redis-server` is not installed.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("redis.sock");
        let child = spawn(dir.path(), &socket, &[]);
        RedisServer {
            child: Some(child),
            socket,
            dir,
            tls_port: None,
        }
    }

    /// Starts one that also accepts TLS on a loopback port, with a
    /// self-signed certificate made by `openssl`.
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (cert, key) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed");
        assert!(made.success(), "openssl could not make a certificate");
        // Redis cannot pick a free port for TLS itself: take one the OS
        // hands out and give it back just before Redis binds it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let socket = dir.path().join("redis.sock");
        let tls = [
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            cert.display().to_string(),
            "--tls-key-file".to_owned(),
            key.display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            cert.display().to_string(),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let child = spawn(dir.path(), &socket, &tls);
        RedisServer {
            child: Some(child),
            socket,
            dir,
            tls_port: Some(port),
        }
    }

    /// Its TLS URL (the certificate is self-signed, so not verified), for
    /// a server started with [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}/#insecure")
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
        self.child = Some(spawn(self.dir.path(), &self.socket, &[]));
    }
}

fn spawn(dir: &Path, socket: &Path, extra: &[String]) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", ""])
        .args(extra)
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--unixsocket")
        .arg(socket)
        .arg("--dir")
        .arg(dir)
        // Not the test's own output: a pipe held open by Redis would keep
        // whoever reads the test's output waiting.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
