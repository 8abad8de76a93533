//! Replaying the dead-letter queue after a fix: each DLQ record goes back, as it was, to the
//! topic it came from (named in its headers), to be handled again by the stage that set it
//! aside. Progress is committed in the consumer group `dlq-replay`, so a record is replayed
//! once however often the command runs; the stages' deduplication by (tenant, event id)
//! keeps a record that did have effects from having them twice.

use std::{collections::HashMap, sync::Arc, time::Duration};

use nudge_contracts::{Topic, headers::dlq};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::{Error, KafkaConfig, Result, headers::header_str};

/// Marks a record as replayed from the DLQ (its original offset there).
pub const REPLAYED_FROM: &str = "nudge-replayed-from-dlq-offset";

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records sent back, by original topic.
    pub replayed: HashMap<String, u64>,
    /// Records skipped (no original topic, or one this platform does not have).
    pub skipped: u64,
}

/// Replays every DLQ record not replayed before, up to the end the DLQ had when the replay
/// started; then commits and returns.
pub async fn replay(config: &KafkaConfig) -> Result<ReplayReport> {
    let topics = config.topics();
    let dlq_topic = topics.name(Topic::EventsDlq);
    let consumer: Arc<StreamConsumer> =
        Arc::new(crate::client::group_consumer(config, "nudge-dlq-replay", "dlq-replay")?);
    let producer: FutureProducer = crate::client::producer(config, "nudge-dlq-replay")?;

    // Where the DLQ ends now; the replay stops there.
    let (c, t) = (consumer.clone(), dlq_topic.clone());
    let ends = tokio::task::spawn_blocking(move || -> Result<HashMap<i32, i64>> {
        let metadata = c.fetch_metadata(Some(&t), Duration::from_secs(10))?;
        let mut ends = HashMap::new();
        for topic in metadata.topics().iter().filter(|m| m.name() == t) {
            for p in topic.partitions() {
                let (_, high) = c.fetch_watermarks(&t, p.id(), Duration::from_secs(10))?;
                ends.insert(p.id(), high);
            }
        }
        Ok(ends)
    })
    .await
    .map_err(|e| Error::Replay(e.to_string()))??;

    // Resume from the group's committed offsets (the beginning, the first time).
    let committed = {
        let mut wanted = TopicPartitionList::new();
        for &p in ends.keys() {
            wanted.add_partition(&dlq_topic, p);
        }
        let c = consumer.clone();
        tokio::task::spawn_blocking(move || c.committed_offsets(wanted, Duration::from_secs(10)))
            .await
            .map_err(|e| Error::Replay(e.to_string()))??
    };
    let mut assignment = TopicPartitionList::new();
    let mut remaining = HashMap::new();
    for (&p, &end) in &ends {
        let start = match committed.find_partition(&dlq_topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => 0,
        };
        assignment.add_partition_offset(&dlq_topic, p, Offset::Offset(start))?;
        if start < end {
            remaining.insert(p, end);
        }
    }
    consumer.assign(&assignment)?;

    let mut report = ReplayReport::default();
    while !remaining.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .map_err(|_| Error::Replay("the DLQ stopped delivering".into()))??;
        let partition = message.partition();
        let original = header_str(message.headers(), dlq::ORIGINAL_TOPIC).map(str::to_owned);
        let known = original.as_deref().and_then(|t| Topic::from_name(&topics, t)).is_some();
        match original {
            Some(target) if known => {
                let mut headers = OwnedHeaders::new();
                if let Some(h) = message.headers() {
                    for header in h.iter().filter(|h| !h.key.starts_with("nudge-dlq-")) {
                        headers = headers.insert(Header { key: header.key, value: header.value });
                    }
                }
                let offset = message.offset().to_string();
                headers = headers.insert(Header { key: REPLAYED_FROM, value: Some(offset.as_str()) });
                let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&target).headers(headers);
                if let Some(k) = message.key() {
                    record = record.key(k);
                }
                if let Some(p) = message.payload() {
                    record = record.payload(p);
                }
                producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| Error::Kafka(e))?;
                *report.replayed.entry(target).or_default() += 1;
            }
            other => {
                tracing::warn!(offset = message.offset(), original = ?other, "DLQ record without a known original topic; skipped");
                report.skipped += 1;
            }
        }
        consumer.store_offset_from_message(&message)?;
        if remaining.get(&partition).is_some_and(|end| message.offset() + 1 >= *end) {
            remaining.remove(&partition);
        }
    }
    let c = consumer.clone();
    tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync))
        .await
        .map_err(|e| Error::Replay(e.to_string()))?
        .or_else(|e| match e.rdkafka_error_code() {
            // Nothing stored (nothing to replay) is not a failure.
            Some(rdkafka::types::RDKafkaErrorCode::NoOffset) => Ok(()),
            _ => Err(e),
        })?;
    Ok(report)
}
