//! Creating topics at start.

use std::time::Duration;

use nudge_contracts::topics::{Cleanup, Topic};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

use crate::{Error, KafkaConfig, Result};

/// Creates each topic that does not exist yet, with its catalogue partitions and cleanup
/// policy. Existing topics are left as they are, so this runs at every start.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[Topic]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("socket.timeout.ms", config.request_timeout_ms.to_string())
        .create()?;
    let names = config.topics();
    let specs: Vec<(String, Topic)> = topics.iter().map(|&t| (names.name(t), t)).collect();
    let configs: Vec<Vec<(&str, String)>> = specs
        .iter()
        .map(|(_, t)| match t.cleanup() {
            Cleanup::Compact => vec![("cleanup.policy", "compact".to_owned())],
            Cleanup::Delete { retention_ms } => {
                vec![("cleanup.policy", "delete".to_owned()), ("retention.ms", retention_ms.to_string())]
            }
        })
        .collect();
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&configs)
        .map(|((name, t), cfg)| {
            let partitions = if config.partitions_override > 0 { config.partitions_override } else { t.partitions() };
            cfg.iter().fold(NewTopic::new(name, partitions, TopicReplication::Fixed(1)), |nt, (k, v)| nt.set(k, v))
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
