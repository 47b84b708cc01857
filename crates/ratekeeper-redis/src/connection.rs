//! Where commands and subscriptions go: one Redis, or the nodes of a Redis
//! Cluster that hold the partitions' slots. Either reconnects by itself.

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSub};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, FromRedisValue, Msg, ProtocolVersion, PushInfo, PushKind, RedisResult};
use tokio::sync::mpsc;

/// The connection for commands, cheap to clone.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Connects to `urls`: several (comma-separated) are the seed nodes of
    /// a cluster; a single one is a cluster node if it says it is one.
    pub async fn open(urls: &str) -> RedisResult<(Connection, Subscriber)> {
        let urls: Vec<String> = urls.split(',').map(|url| url.trim().to_owned()).collect();
        let first = Client::open(urls[0].as_str())?;
        if urls.len() == 1 && !cluster_enabled(&first).await? {
            let connection = Connection::Single(ConnectionManager::new(first.clone()).await?);
            return Ok((connection, Subscriber::Single(Box::new(first))));
        }
        let connection = ClusterClient::new(urls.clone())?
            .get_async_connection()
            .await?;
        Ok((Connection::Cluster(connection), Subscriber::Sharded(urls)))
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

/// Makes subscriptions: ordinary pub/sub on a single Redis; sharded
/// pub/sub on a cluster, where a message goes only to the node that owns
/// its channel's slot (the partition's) instead of to every node.
pub enum Subscriber {
    Single(Box<Client>),
    /// The cluster's seed nodes.
    Sharded(Vec<String>),
}

impl Subscriber {
    /// Whether the functions must publish with `SPUBLISH`.
    pub fn sharded(&self) -> bool {
        matches!(self, Subscriber::Sharded(_))
    }

    /// A subscription to `channels`, returned once Redis has confirmed
    /// them.
    pub async fn subscribe(&self, channels: &[String]) -> RedisResult<Subscription> {
        match self {
            Subscriber::Single(client) => {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channels).await?;
                Ok(Subscription::Single(pubsub))
            }
            Subscriber::Sharded(urls) => {
                let (sender, pushes) = mpsc::unbounded_channel();
                let mut conn = ClusterClientBuilder::new(urls.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(sender)
                    .build()?
                    .get_async_connection()
                    .await?;
                // One command per channel: the channels of different
                // partitions are in different slots, maybe on other nodes.
                for channel in channels {
                    conn.ssubscribe(channel).await?;
                }
                Ok(Subscription::Sharded {
                    _conn: conn,
                    pushes,
                    interrupted: false,
                })
            }
        }
    }
}

/// Subscribed channels; unsubscribed when dropped.
pub enum Subscription {
    Single(PubSub),
    /// The cluster client subscribes again by itself after a lost
    /// connection or a moved slot.
    Sharded {
        _conn: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        /// A connection was lost and its channels are not subscribed again
        /// yet.
        interrupted: bool,
    },
}

/// What a subscription delivers.
pub enum Delivery {
    /// A message.
    Message(Msg),
    /// The subscription was interrupted and is back: what was published
    /// meanwhile is missed.
    Resumed,
}

impl Subscription {
    /// The next delivery; `None` once the subscription is lost for good
    /// (it must be made again).
    pub async fn next(&mut self) -> Option<Delivery> {
        match self {
            Subscription::Single(pubsub) => pubsub.on_message().next().await.map(Delivery::Message),
            Subscription::Sharded {
                pushes,
                interrupted,
                ..
            } => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    PushKind::Disconnection => *interrupted = true,
                    PushKind::SSubscribe if *interrupted => {
                        *interrupted = false;
                        return Some(Delivery::Resumed);
                    }
                    _ => {
                        if let Some(message) = Msg::from_push_info(push) {
                            return Some(Delivery::Message(message));
                        }
                    }
                }
            },
        }
    }
}
