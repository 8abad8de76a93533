//! Following a compacted topic from its beginning: the way a cell learns what the control
//! plane says (tenants, models).

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::StreamExt;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use tokio_util::sync::CancellationToken;

use crate::KafkaConfig;

/// What a follower does with each record.
pub trait Follower: Send + Sync + 'static {
    /// What the logs call the topic's contents ("tenant", "model").
    fn what(&self) -> &'static str;
    /// Applies one record (`payload` `None`: a tombstone), on a blocking thread (records are
    /// applied one at a time, in order). An error is logged and the record skipped: one
    /// record a cell cannot use must not stop it from using the others.
    fn apply(&self, key: &[u8], payload: Option<&[u8]>) -> Result<String, String>;
    /// Every record that was in the topic when following began has been applied.
    fn caught_up(&self);
}

/// Reads `topic` (full name) from the beginning into `follower`, calls
/// [`Follower::caught_up`] once every partition reaches the end it had at start, then
/// follows new records until `shutdown`. No consumer group: every reader sees everything.
pub async fn follow(
    follower: Arc<dyn Follower>,
    kafka: &KafkaConfig,
    topic: String,
    client_id: &str,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let what = follower.what();
    let consumer: Arc<StreamConsumer> = Arc::new(crate::reader_consumer(kafka, client_id)?);

    // Where each partition ends now; reaching all of them means the follower is complete.
    let mut pending = loop {
        // Metadata calls block; keep them off the async workers.
        let (c, t) = (consumer.clone(), topic.clone());
        let ends = tokio::task::spawn_blocking(move || end_offsets(&c, &t)).await;
        match ends {
            Ok(Ok(ends)) => break ends,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, %topic, "{what} topic not readable yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            Err(join) => {
                tracing::error!(error = %join, "reading {what} topic offsets panicked; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let mut assignment = TopicPartitionList::new();
    for &partition in pending.keys() {
        assignment.add_partition_offset(&topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    pending.retain(|_, end| *end > 0);
    if pending.is_empty() {
        follower.caught_up();
    }

    let mut stream = consumer.stream();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = stream.next() => m,
        };
        let Some(message) = message else { return Ok(()) };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading {what} topic");
                continue;
            }
        };
        // Applying may be slow (a model is loaded): off the async workers, one at a time.
        let (f, key, payload) =
            (follower.clone(), message.key().unwrap_or_default().to_vec(), message.payload().map(<[u8]>::to_vec));
        let applied = tokio::task::spawn_blocking(move || f.apply(&key, payload.as_deref())).await;
        match applied {
            Ok(Ok(applied)) => tracing::debug!(applied, offset = message.offset(), "{what} record applied"),
            Ok(Err(e)) => tracing::error!(error = %e, offset = message.offset(), "{what} record skipped"),
            Err(join) => tracing::error!(error = %join, offset = message.offset(), "{what} record panicked; skipped"),
        }
        if !pending.is_empty() {
            let partition = message.partition();
            if pending.get(&partition).is_some_and(|end| message.offset() + 1 >= *end) {
                pending.remove(&partition);
                if pending.is_empty() {
                    tracing::info!("{what} topic caught up");
                    follower.caught_up();
                }
            }
        }
    }
}

/// High watermark per partition of `topic`.
fn end_offsets(consumer: &StreamConsumer, topic: &str) -> Result<HashMap<i32, i64>, rdkafka::error::KafkaError> {
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(rdkafka::error::KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownTopic));
    }
    let mut ends = HashMap::new();
    for partition in partitions {
        let (_, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        ends.insert(partition, high);
    }
    Ok(ends)
}
