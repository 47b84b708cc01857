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
    /// Whether it keeps an append-only file (and so its data across a
    /// kill).
    persistent: bool,
}

impl RedisServer {
    /// Starts one; panics if `redis-server` is not installed.
    pub fn start() -> Self {
        RedisServer::start_keeping(true)
    }

    /// Starts one without any persistence: a kill loses every key, as a
    /// Redis run as a pure cache would.
    pub fn start_without_persistence() -> Self {
        RedisServer::start_keeping(false)
    }

    fn start_keeping(persistent: bool) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("redis.sock");
        let child = spawn(dir.path(), &socket, persistent, &[]);
        RedisServer {
            child: Some(child),
            socket,
            dir,
            tls_port: None,
            persistent,
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
        let child = spawn(dir.path(), &socket, true, &tls);
        RedisServer {
            child: Some(child),
            socket,
            dir,
            tls_port: Some(port),
            persistent: true,
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
        self.child = Some(spawn(self.dir.path(), &self.socket, self.persistent, &[]));
    }
}

fn spawn(dir: &Path, socket: &Path, persistent: bool, extra: &[String]) -> Child {
    let persistence: &[&str] = if persistent {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &["--appendonly", "no"]
    };
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", ""])
        .args(extra)
        .args(persistence)
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
    // The socket file appears when Redis binds it, a moment before it
    // listens: wait until a connection is taken.
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
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

/// A Redis Cluster of three primaries (with or without a replica each) on
/// loopback ports, each `redis-server` in its own temporary directory.
/// Killed when dropped.
pub struct RedisCluster {
    /// The nodes by client port; `None` once killed.
    nodes: Vec<(u16, Option<Child>)>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Three primaries, no replicas; returns once every node reports the
    /// cluster ready.
    pub fn start() -> Self {
        Self::start_nodes(3, 0)
    }

    /// Three primaries, each with a replica that takes over within seconds
    /// of its primary's death.
    pub fn start_with_replicas() -> Self {
        Self::start_nodes(6, 1)
    }

    fn start_nodes(count: usize, replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // A node needs two ports (clients, cluster bus) and cannot pick
        // them itself: take ones the OS hands out.
        let held: Vec<std::net::TcpListener> = (0..2 * count)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let free: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().expect("a bound port").port())
            .collect();
        drop(held);
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            _dir: dir,
        };
        for (i, &port) in free[..count].iter().enumerate() {
            let node_dir = cluster._dir.path().join(format!("node{i}"));
            std::fs::create_dir(&node_dir).expect("a node directory");
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cluster-port", &free[count + i].to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test installs it)");
            cluster.nodes.push((port, Some(child)));
            until(port, "PING", |answer| answer.contains("PONG"));
        }
        let addresses: Vec<String> = free[..count]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(created.success(), "redis-cli could not create the cluster");
        for port in cluster.live_ports() {
            until(port, "CLUSTER INFO", |answer| {
                answer.contains("cluster_state:ok")
            });
        }
        cluster
    }

    fn live_ports(&self) -> Vec<u16> {
        let live = self.nodes.iter().filter(|(_, child)| child.is_some());
        live.map(|(port, _)| *port).collect()
    }

    /// The seed nodes' URLs, comma-separated, as `--store` takes them.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self
            .live_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        urls.join(",")
    }

    /// One node's URL: enough for ratekeeper to find the whole cluster.
    pub fn node_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.live_ports()[0])
    }

    /// Kills (SIGKILL) the primary that serves `key`, once its replicas
    /// have everything it wrote; returns its port.
    pub fn kill_primary_of(&mut self, key: &str) -> u16 {
        let primary = self.primary_of(key).expect("a primary serves every slot");
        let replicas: Vec<u16> = self
            .cluster_nodes()
            .into_iter()
            .filter(|node| node.primary_id.as_deref() == Some(primary.id.as_str()))
            .map(|node| node.port)
            .collect();
        for replica in replicas {
            let written = info_field(primary.port, "replication", "master_repl_offset");
            until(replica, "INFO replication", |answer| {
                field(answer, "slave_repl_offset").is_some_and(|got| got >= written)
            });
        }
        let (_, child) = self
            .nodes
            .iter_mut()
            .find(|(port, _)| *port == primary.port)
            .expect("the primary is one of the nodes");
        if let Some(mut child) = child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        primary.port
    }

    /// Waits until a live node serves `key` and the cluster is whole.
    pub fn until_served(&self, key: &str) {
        let started = Instant::now();
        let live = self.live_ports();
        while !self
            .primary_of(key)
            .is_some_and(|primary| live.contains(&primary.port))
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no replica took over {key}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for port in live {
            until(port, "CLUSTER INFO", |answer| {
                answer.contains("cluster_state:ok")
            });
        }
    }

    /// The primary serving `key`, as a live node sees the cluster; none
    /// while a failover is under way.
    fn primary_of(&self, key: &str) -> Option<ClusterNode> {
        let port = self.live_ports()[0];
        let slot: u16 = run(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        self.cluster_nodes()
            .into_iter()
            .find(|node| node.primary_id.is_none() && node.serves(slot))
    }

    fn cluster_nodes(&self) -> Vec<ClusterNode> {
        let answer = run(self.live_ports()[0], &["CLUSTER", "NODES"]);
        answer.lines().filter_map(ClusterNode::parse).collect()
    }
}

/// One line of `CLUSTER NODES`.
struct ClusterNode {
    id: String,
    port: u16,
    /// The primary it replicates; `None` for a live primary.
    primary_id: Option<String>,
    /// The slot ranges it serves.
    slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    fn parse(line: &str) -> Option<ClusterNode> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let address = fields.get(1)?.split('@').next()?;
        let port = address.rsplit(':').next()?.parse().ok()?;
        let flags = fields.get(2)?;
        if flags.contains("fail") && !flags.contains("fail?") {
            return None;
        }
        let primary_id = (!flags.contains("master")).then(|| fields[3].to_owned());
        let slots = fields[8..]
            .iter()
            .filter(|range| !range.starts_with('['))
            .filter_map(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                Some((low.parse().ok()?, high.parse().ok()?))
            })
            .collect();
        Some(ClusterNode {
            id: fields[0].to_owned(),
            port,
            primary_id,
            slots,
        })
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(low, high)| (low..=high).contains(&slot))
    }
}

/// What `redis-cli` run on the node at `port` answers.
fn run(port: u16, args: &[&str]) -> String {
    let answer = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli is installed");
    String::from_utf8_lossy(&answer.stdout).into_owned()
}

/// A number from an `INFO` answer.
fn field(answer: &str, name: &str) -> Option<u64> {
    let prefix = format!("{name}:");
    let line = answer.lines().find(|line| line.starts_with(&prefix))?;
    line[prefix.len()..].trim().parse().ok()
}

fn info_field(port: u16, section: &str, name: &str) -> u64 {
    field(&run(port, &["INFO", section]), name).expect("INFO has the field")
}

/// Waits until `command` run on the node at `port` gives an answer that
/// `done` accepts.
fn until(port: u16, command: &str, done: impl Fn(&str) -> bool) {
    let started = Instant::now();
    let args: Vec<&str> = command.split(' ').collect();
    while !done(&run(port, &args)) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node {port} never gave the answer wanted to {command:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
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
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
