//! Following `control.tenants.v1`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::StreamExt;
use nudge_contracts::topics::Topic;
use nudge_platform_kafka::KafkaConfig;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use tokio_util::sync::CancellationToken;

use crate::Directory;

/// Reads the whole topic into `directory`, marks it caught up once every partition reaches
/// the end it had at start, then follows new records until `shutdown`.
pub async fn follow(
    directory: Arc<Directory>,
    kafka: KafkaConfig,
    shutdown: CancellationToken,
) -> Result<(), nudge_platform_kafka::Error> {
    let topic = kafka.topics().name(Topic::ControlTenants);
    let consumer: Arc<StreamConsumer> =
        Arc::new(nudge_platform_kafka::reader_consumer(&kafka, &format!("directory-{}", directory.cell()))?);

    // Where each partition ends now; reaching all of them means the directory is complete.
    let mut pending = loop {
        // Metadata calls block; keep them off the async workers.
        let (c, t) = (consumer.clone(), topic.clone());
        let ends = tokio::task::spawn_blocking(move || end_offsets(&c, &t)).await;
        match ends {
            Ok(Ok(ends)) => break ends,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, %topic, "tenant topic not readable yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            Err(join) => {
                tracing::error!(error = %join, "reading tenant topic offsets panicked; retrying");
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
        directory.mark_caught_up();
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
                tracing::warn!(error = %e, "reading tenant topic");
                continue;
            }
        };
        match directory.apply(message.key().unwrap_or_default(), message.payload()) {
            Ok(applied) => tracing::debug!(?applied, offset = message.offset(), "tenant record applied"),
            // A record this cell cannot use must not stop it from serving the others.
            Err(e) => tracing::error!(error = %e, offset = message.offset(), "tenant record skipped"),
        }
        if !pending.is_empty() {
            let partition = message.partition();
            if pending.get(&partition).is_some_and(|end| message.offset() + 1 >= *end) {
                pending.remove(&partition);
                if pending.is_empty() {
                    tracing::info!(tenants = directory.len(), "tenant directory caught up");
                    directory.mark_caught_up();
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
