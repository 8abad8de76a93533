//! Creating topics at start.

use std::time::Duration;

use nudge_contracts::topics::Topic;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

use crate::{Error, KafkaConfig, Result};

/// Creates each topic that does not exist yet, as the catalogue describes it (partitions,
/// cleanup policy, retention). Existing topics are left as they are, so this runs at every
/// start.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[Topic]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("socket.timeout.ms", config.request_timeout_ms.to_string())
        .create()?;
    let names = config.topics();
    let mut specs = Vec::with_capacity(topics.len());
    for &t in topics {
        let spec = t.spec().ok_or_else(|| Error::CreateTopic {
            topic: t.base_name().to_owned(),
            reason: "not in the topic catalogue (deploy/kafka/topics.toml)".into(),
        })?;
        let partitions = if config.partitions_override > 0 { config.partitions_override } else { spec.partitions };
        let mut settings = vec![
            ("cleanup.policy", spec.cleanup.as_str().to_owned()),
            ("retention.ms", spec.retention_ms().to_string()),
        ];
        if let Some(max) = spec.max_message_bytes {
            settings.push(("max.message.bytes", max.to_string()));
        }
        specs.push((names.name(t), partitions, settings));
    }
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|(name, partitions, settings)| {
            settings
                .iter()
                .fold(NewTopic::new(name, *partitions, TopicReplication::Fixed(1)), |nt, (k, v)| nt.set(k, v))
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&new_topics, &options).await?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::CreateTopic { topic, reason: code.to_string() }),
        }
    }
    Ok(())
}
