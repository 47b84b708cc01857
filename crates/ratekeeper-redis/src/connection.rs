//! Where commands go: one Redis, or the node of a Redis Cluster that holds
//! the state's slot. Either reconnects by itself.

use redis::aio::{ConnectionManager, PubSub};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, FromRedisValue, RedisResult};

/// The connection for commands, cheap to clone.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Connects to `urls`: several (comma-separated) are the seed nodes of
    /// a cluster; a single one is a cluster node if it says it is one.
    pub async fn open(urls: &str) -> RedisResult<(Connection, Vec<Client>)> {
        let urls: Vec<&str> = urls.split(',').map(str::trim).collect();
        let clients = urls
            .iter()
            .map(|url| Client::open(*url))
            .collect::<RedisResult<Vec<_>>>()?;
        let cluster = clients.len() > 1 || cluster_enabled(&clients[0]).await?;
        let connection = if cluster {
            let client = ClusterClient::new(urls)?;
            Connection::Cluster(client.get_async_connection().await?)
        } else {
            Connection::Single(ConnectionManager::new(clients[0].clone()).await?)
        };
        Ok((connection, clients))
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// Sends one command; on a cluster, to the node its key (or, for
    /// `FUNCTION LOAD`, every primary) calls for.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Connection::Single(conn) => cmd.query_async(&mut conn.clone()).await,
            Connection::Cluster(conn) => cmd.query_async(&mut conn.clone()).await,
        }
    }
}

async fn cluster_enabled(client: &Client) -> RedisResult<bool> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut conn)
        .await?;
    Ok(info.lines().any(|line| line.trim() == "cluster_enabled:1"))
}

/// A connection subscribed to `channels` on the first of `clients` that
/// answers, starting at `first`; it returns once Redis has confirmed
/// them. On a cluster, any node carries every published message.
pub async fn subscribe(
    clients: &[Client],
    first: usize,
    channels: &[String],
) -> RedisResult<PubSub> {
    let mut last_error = None;
    for i in 0..clients.len() {
        let client = &clients[(first + i) % clients.len()];
        match subscribe_on(client, channels).await {
            Ok(pubsub) => return Ok(pubsub),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.expect("at least one client"))
}

async fn subscribe_on(client: &Client, channels: &[String]) -> RedisResult<PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    for channel in channels {
        pubsub.subscribe(channel).await?;
    }
    Ok(pubsub)
}
