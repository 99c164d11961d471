//! Connections to a single Redis or a Redis Cluster, behind one type.
//!
//! Commands and pub/sub use separate connections (a subscribed connection cannot run
//! commands, and a burst of messages must not delay a command). Both reconnect by themselves:
//! redis-rs' `ConnectionManager` (single) and `ClusterConnection` (cluster, which also follows
//! slot moves). The pub/sub connection speaks RESP3: messages arrive as pushes on a channel,
//! subscriptions are tracked by the client and restored after a reconnect, and a
//! `Disconnection` push tells the engine to resume its channels from the logs.

use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisFuture, Value};

use crate::config::RedisConfig;

/// A command connection (cheap to clone: clones share one multiplexed connection).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Subscribes to channels (sharded on a cluster, so a channel lives on its slot's shard).
    pub async fn subscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(channels).await,
            // One slot per command on a cluster; the commands go out together (a clone of a
            // cluster connection is a handle to the same one).
            Conn::Cluster(c) => try_join_all(channels.iter().map(|ch| {
                let mut c = c.clone();
                async move { c.ssubscribe(ch).await }
            }))
            .await
            .map(drop),
        }
    }

    pub async fn unsubscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Conn::Single(c) => c.unsubscribe(channels).await,
            Conn::Cluster(c) => try_join_all(channels.iter().map(|ch| {
                let mut c = c.clone();
                async move { c.sunsubscribe(ch).await }
            }))
            .await
            .map(drop),
        }
    }

    /// `PUBLISH`, or `SPUBLISH` on a cluster.
    pub fn publish_cmd(&self, channel: &str, payload: &[u8]) -> Cmd {
        let mut c = redis::cmd(if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        });
        c.arg(channel).arg(payload);
        c
    }
}

fn single_info(url: &str, resp3: bool) -> redis::RedisResult<redis::ConnectionInfo> {
    let info = url.into_connection_info()?;
    if resp3 {
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        Ok(info.set_redis_settings(settings))
    } else {
        Ok(info)
    }
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        // A few quick tries per reconnect; the engine's callers retry on their own schedule.
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// Opens the command connection.
pub async fn commands(cfg: &RedisConfig) -> redis::RedisResult<Conn> {
    if cfg.cluster {
        let client = ClusterClientBuilder::new(cfg.urls.clone())
            .connection_timeout(cfg.timeout)
            .response_timeout(cfg.timeout)
            .retries(2)
            .build()?;
        Ok(Conn::Cluster(client.get_async_connection().await?))
    } else {
        let client = redis::Client::open(single_info(&cfg.urls[0], false)?)?;
        Ok(Conn::Single(
            client
                .get_connection_manager_with_config(manager_config(cfg.timeout))
                .await?,
        ))
    }
}

/// Opens the pub/sub connection; its messages (and disconnection notices) go to `pushes`.
pub async fn pubsub(
    cfg: &RedisConfig,
    pushes: impl redis::aio::AsyncPushSender,
) -> redis::RedisResult<Conn> {
    Ok(if cfg.cluster {
        let client = ClusterClientBuilder::new(cfg.urls.clone())
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(cfg.timeout)
            .response_timeout(cfg.timeout)
            .retries(2)
            .push_sender(pushes)
            .build()?;
        Conn::Cluster(client.get_async_connection().await?)
    } else {
        let client = redis::Client::open(single_info(&cfg.urls[0], true)?)?;
        let config = manager_config(cfg.timeout)
            .set_push_sender(pushes)
            .set_automatic_resubscription();
        Conn::Single(client.get_connection_manager_with_config(config).await?)
    })
}
