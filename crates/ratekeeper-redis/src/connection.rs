//! Where commands and subscriptions go: one Redis, or the nodes of a Redis
//! Cluster that hold the partitions' slots. Either reconnects by itself.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSub};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    Client, Cmd, ErrorKind, FromRedisValue, Msg, ProtocolVersion, PushInfo, PushKind, RedisError,
    RedisResult,
};
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
                let mut subscription = Subscription::Sharded {
                    _conn: conn,
                    pushes,
                    early: VecDeque::new(),
                };
                subscription.until_confirmed(channels.len()).await?;
                Ok(subscription)
            }
        }
    }
}

/// Subscribed channels; unsubscribed when dropped.
pub enum Subscription {
    Single(PubSub),
    Sharded {
        _conn: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        /// Messages that came while the subscriptions were confirmed.
        early: VecDeque<Msg>,
    },
}

/// How long a node has to confirm a sharded subscription.
const CONFIRMATION: Duration = Duration::from_secs(1);

impl Subscription {
    /// Waits until the nodes have confirmed `count` sharded subscriptions.
    /// The cluster client answers `SSUBSCRIBE` for a slot whose node is
    /// gone (during a failover) as if it were done; only the node's
    /// confirmation says it is.
    async fn until_confirmed(&mut self, count: usize) -> RedisResult<()> {
        let Subscription::Sharded { pushes, early, .. } = self else {
            return Ok(());
        };
        let mut confirmed = 0;
        let deadline = tokio::time::Instant::now() + CONFIRMATION;
        while confirmed < count {
            let push = tokio::time::timeout_at(deadline, pushes.recv()).await;
            let Ok(Some(push)) = push else {
                return Err(RedisError::from((
                    ErrorKind::Io,
                    "a node did not confirm a subscription",
                )));
            };
            match push.kind {
                PushKind::SSubscribe => confirmed += 1,
                _ => early.extend(Msg::from_push_info(push)),
            }
        }
        Ok(())
    }

    /// The next message; `None` once the subscription is lost, when it
    /// must be made again.
    pub async fn next(&mut self) -> Option<Msg> {
        match self {
            Subscription::Single(pubsub) => pubsub.on_message().next().await,
            Subscription::Sharded { pushes, early, .. } => loop {
                if let Some(message) = early.pop_front() {
                    return Some(message);
                }
                let push = pushes.recv().await?;
                // A node's connection was lost. The cluster client would
                // subscribe on that node again, but a failover moves the
                // slots to another: a fresh subscription finds them.
                if push.kind == PushKind::Disconnection {
                    return None;
                }
                // Confirmations come this way too.
                if let Some(message) = Msg::from_push_info(push) {
                    return Some(message);
                }
            },
        }
    }
}
