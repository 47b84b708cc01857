//! A `redis-server` (or a Redis Cluster) of the test's own, for this crate's tests and those of
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
        let port = free_port();
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

/// A Redis Cluster of three primaries (no replicas) on loopback ports, each
/// `redis-server` in its own temporary directory. Killed when dropped.
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts the nodes and joins them with `redis-cli --cluster create`;
    /// returns once every node reports the cluster ready.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // A node needs two ports (clients, cluster bus) and cannot pick
        // them itself: take ones the OS hands out.
        let held: Vec<std::net::TcpListener> = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let free: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().expect("a bound port").port())
            .collect();
        drop(held);
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            ports: free[..3].to_vec(),
            _dir: dir,
        };
        for (i, port) in cluster.ports.clone().into_iter().enumerate() {
            let node_dir = cluster._dir.path().join(format!("node{i}"));
            std::fs::create_dir(&node_dir).expect("a node directory");
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cluster-port", &free[3 + i].to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test installs it)");
            cluster.nodes.push(child);
            cluster.until(port, "PING", "PONG");
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(created.success(), "redis-cli could not create the cluster");
        for port in cluster.ports.clone() {
            cluster.until(port, "CLUSTER INFO", "cluster_state:ok");
        }
        cluster
    }

    /// The seed nodes' URLs, comma-separated, as `--store` takes them.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        urls.join(",")
    }

    /// One node's URL: enough for ratekeeper to find the whole cluster.
    pub fn node_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }

    /// Waits until `command` run on the node at `port` answers with
    /// `expected` in it.
    fn until(&self, port: u16, command: &str, expected: &str) {
        let started = Instant::now();
        loop {
            let answer = Command::new("redis-cli")
                .args(["-p", &port.to_string()])
                .args(command.split(' '))
                .stderr(Stdio::null())
                .output()
                .expect("redis-cli is installed");
            if String::from_utf8_lossy(&answer.stdout).contains(expected) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "node {port} never answered {command:?} with {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}
