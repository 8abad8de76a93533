//! Producer and consumer construction.

use rdkafka::{
    ClientConfig, ClientContext, client::DefaultClientContext, consumer::StreamConsumer, producer::FutureProducer,
};

use crate::{KafkaConfig, Result};

fn base(config: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("client.id", client_id)
        .set("socket.timeout.ms", config.request_timeout_ms.to_string())
        // Reconnect quickly after a broker restart; the defaults back off for up to 10 s.
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000");
    for (key, value) in &config.librdkafka {
        c.set(key, value);
    }
    c
}

/// A producer whose acknowledged records are on every in-sync replica and never duplicated
/// by its own retries (`acks=all`, `enable.idempotence=true`).
///
/// Long-lived services use [`crate::SharedProducer`], which also survives a broker that lost
/// the producer's state.
pub fn producer(config: &KafkaConfig, client_id: &str) -> Result<FutureProducer> {
    producer_with(config, client_id, DefaultClientContext)
}

/// [`producer`] with a client context of the caller's.
pub fn producer_with<C: ClientContext + 'static>(
    config: &KafkaConfig,
    client_id: &str,
    context: C,
) -> Result<FutureProducer<C>> {
    let producer = base(config, client_id)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", config.linger_ms.to_string())
        .set("message.timeout.ms", config.message_timeout_ms.to_string())
        .set("request.timeout.ms", config.request_timeout_ms.to_string())
        // Model artifacts travel in `control.models.v1` records (the topic takes 9 MiB).
        .set("message.max.bytes", "10485760")
        .create_with_context(context)?;
    Ok(producer)
}

/// How long a dynamic group member may go without a heartbeat before the group gives its
/// partitions to the others.
pub const SESSION_TIMEOUT_MS: u32 = 10_000;

/// The same for a static member (see [`static_group_consumer`]).
pub const STATIC_SESSION_TIMEOUT_MS: u32 = 30_000;

/// A consumer in `group` for at-least-once processing: the caller stores an offset only
/// after the record's effect is done (`store_offset_from_message`), and stored offsets are
/// committed in the background. A crash replays at most what was not yet stored.
pub fn group_consumer(config: &KafkaConfig, client_id: &str, group: &str) -> Result<StreamConsumer> {
    static_group_consumer(config, client_id, group, None)
}

/// A [`group_consumer`] with a static membership: `instance` names this member across
/// restarts (a pod name, say). A member that crashes and comes back under the same name takes
/// its partitions back from the committed offsets without a rebalance of the whole group,
/// which is faster and does not stall the other members.
///
/// A static member's session outlasts a restart: [`STATIC_SESSION_TIMEOUT_MS`] rather than
/// the dynamic [`SESSION_TIMEOUT_MS`]. The broker counts only heartbeats as signs of life,
/// and a static member's join and sync take seconds each (tansu holds them ~3 s apiece), so a
/// member restarting again and again, or one rejoining beside it, could otherwise be
/// expired mid-handover, and the group left with partitions no one holds.
pub fn static_group_consumer(
    config: &KafkaConfig,
    client_id: &str,
    group: &str,
    instance: Option<&str>,
) -> Result<StreamConsumer> {
    let mut c = base(config, client_id);
    let mut session_timeout_ms = SESSION_TIMEOUT_MS;
    if let Some(instance) = instance {
        c.set("group.instance.id", format!("{}{instance}", config.prefix));
        session_timeout_ms = STATIC_SESSION_TIMEOUT_MS;
    }
    let consumer = c
        .set("group.id", config.group(group))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", "1000")
        .set("enable.partition.eof", "false")
        .create()?;
    Ok(consumer)
}

/// A consumer that reads whole topics through manual assignment and commits nothing: for
/// state every process rebuilds from a compacted topic (tenant configuration).
pub fn reader_consumer(config: &KafkaConfig, client_id: &str) -> Result<StreamConsumer> {
    let consumer = base(config, client_id)
        // librdkafka wants a group id even for assignment; it is never joined or committed.
        .set("group.id", config.group(&format!("reader-{client_id}")))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()?;
    Ok(consumer)
}
