//! Strimzi `KafkaTopic`s: a cell's own topics and the platform-wide ones, from the topic
//! catalogue.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;

use super::Platform;
use crate::crd::Cell;

/// A `KafkaTopic` per cell-scope catalogue topic, under the cell's prefix (or plain names on
/// a cell's own cluster), with the catalogue's partitions, cleanup policy and retention. The
/// platform-wide topics are the platform's ([`platform_topics`]), not any cell's.
pub(super) fn kafka_topics(
    cell: &Cell,
    platform: &Platform,
    kafka_cluster: &str,
    meta: &dyn Fn(String, Option<&str>) -> ObjectMeta,
) -> Vec<DynamicObject> {
    let prefix = cell.spec.kafka.topic_prefix.clone().unwrap_or_default();
    nudge_contracts::topics::catalogue()
        .iter()
        .filter(|topic| topic.scope == nudge_contracts::topics::Scope::Cell)
        .map(|topic| {
            let name = format!("{prefix}{}", topic.name);
            kafka_topic(topic, &name, kafka_cluster, platform.kafka_replicas, meta(name.replace('_', "-"), None))
        })
        .collect()
}

/// The platform-wide topics (scope `platform`: the control plane's announcements, usage) as
/// `KafkaTopic`s on the platform's cluster, for `deploy/k8s/platform-topics.yaml`.
pub fn platform_topics(platform: &Platform) -> Vec<DynamicObject> {
    nudge_contracts::topics::catalogue()
        .iter()
        .filter(|topic| topic.scope == nudge_contracts::topics::Scope::Platform)
        .map(|topic| {
            let name = format!("{}{}", platform.topic_prefix, topic.name);
            let metadata = ObjectMeta {
                name: Some(name.replace('_', "-")),
                namespace: Some(platform.kafka_namespace.clone()),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/part-of".to_owned(), "nudge".to_owned()),
                    ("nudge.dev/topic-scope".to_owned(), "platform".to_owned()),
                ])),
                ..ObjectMeta::default()
            };
            kafka_topic(topic, &name, &platform.kafka_cluster, platform.kafka_replicas, metadata)
        })
        .collect()
}

fn kafka_topic(
    topic: &nudge_contracts::topics::TopicSpec,
    name: &str,
    cluster: &str,
    replicas: i32,
    mut metadata: ObjectMeta,
) -> DynamicObject {
    metadata.labels.get_or_insert_default().insert("strimzi.io/cluster".to_owned(), cluster.to_owned());
    let mut config = serde_json::Map::new();
    config.insert("cleanup.policy".into(), topic.cleanup.as_str().into());
    config.insert("retention.ms".into(), topic.retention_ms().to_string().into());
    if let Some(max) = topic.max_message_bytes {
        config.insert("max.message.bytes".into(), max.to_string().into());
    }
    DynamicObject {
        types: Some(kube::api::TypeMeta { api_version: "kafka.strimzi.io/v1beta2".into(), kind: "KafkaTopic".into() }),
        metadata,
        data: serde_json::json!({
            "spec": {
                "topicName": name,
                "partitions": topic.partitions,
                "replicas": replicas,
                "config": config,
            }
        }),
    }
}
