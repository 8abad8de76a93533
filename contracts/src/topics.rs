//! Kafka topics. The catalogue (`deploy/kafka/topics.toml`, compiled in) says what each
//! topic is; [`Topic`] names them in code. Names carry an optional environment prefix so
//! several environments (or parallel tests) can share one broker.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The catalogue file, as committed.
pub const CATALOGUE_TOML: &str = include_str!("../../deploy/kafka/topics.toml");

/// A topic of the platform, independent of environment prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    EventsRaw,
    EventsValidated,
    EventsDlq,
    Features,
    Predictions,
    InterventionCommands,
    ControlTenants,
    ControlModels,
    Usage,
}

/// How a topic is cleaned up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cleanup {
    /// Old segments are deleted after the retention period.
    Delete,
    /// Only the latest record per key is kept.
    Compact,
}

impl Cleanup {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Compact => "compact",
        }
    }
}

/// One topic as the catalogue describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    pub description: String,
    pub key: String,
    pub value: String,
    pub partitions: i32,
    pub cleanup: Cleanup,
    pub retention_hours: i64,
    pub producers: Vec<String>,
    pub consumers: Vec<String>,
    /// The largest record the topic takes (`max.message.bytes`), where the broker's
    /// default (1 MB) is too small.
    #[serde(default)]
    pub max_message_bytes: Option<i64>,
}

impl TopicSpec {
    pub fn retention_ms(&self) -> i64 {
        self.retention_hours * 3600 * 1000
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    topic: Vec<TopicSpec>,
}

/// The parsed catalogue. The file is part of the build, and a unit test parses it, so a
/// broken catalogue never reaches a running service.
pub fn catalogue() -> &'static [TopicSpec] {
    static PARSED: OnceLock<Vec<TopicSpec>> = OnceLock::new();
    PARSED.get_or_init(|| toml::from_str::<CatalogueFile>(CATALOGUE_TOML).map(|f| f.topic).unwrap_or_default())
}

impl Topic {
    pub const ALL: [Topic; 9] = [
        Topic::EventsRaw,
        Topic::EventsValidated,
        Topic::EventsDlq,
        Topic::Features,
        Topic::Predictions,
        Topic::InterventionCommands,
        Topic::ControlTenants,
        Topic::ControlModels,
        Topic::Usage,
    ];

    /// The name without any environment prefix.
    pub fn base_name(self) -> &'static str {
        match self {
            Self::EventsRaw => "events.raw",
            Self::EventsValidated => "events.validated",
            Self::EventsDlq => "events.dlq",
            Self::Features => "features.v1",
            Self::Predictions => "predictions.v1",
            Self::InterventionCommands => "interventions.commands",
            Self::ControlTenants => "control.tenants.v1",
            Self::ControlModels => "control.models.v1",
            Self::Usage => "usage.v1",
        }
    }

    /// The catalogue entry.
    pub fn spec(self) -> Option<&'static TopicSpec> {
        catalogue().iter().find(|t| t.name == self.base_name())
    }

    /// The topic a (prefixed) name refers to.
    pub fn from_name(topics: &Topics, name: &str) -> Option<Topic> {
        let base = name.strip_prefix(&topics.prefix)?;
        Self::ALL.into_iter().find(|t| t.base_name() == base)
    }
}

/// Topic names for one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    /// Prepended to every topic name; empty in a normal deployment.
    pub prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn name(&self, topic: Topic) -> String {
        format!("{}{}", self.prefix, topic.base_name())
    }
}

/// `docs/topics.md`, rendered from the catalogue.
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# Kafka topics\n\n\
         Rendered from `deploy/kafka/topics.toml` by `nudge topics render`; do not edit by hand (a test\n\
         fails when this file and the catalogue differ). Services create the topics they use from the\n\
         catalogue at start, idempotently. Names take `kafka.prefix` in front. Every record carries the\n\
         headers `nudge-schema` (the Protobuf message of the value) and `nudge-schema-version`, and,\n\
         when produced on behalf of a request, `traceparent`.\n\n\
         | topic | key | value | partitions | cleanup | retention | producers | consumers |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for t in catalogue() {
        let retention = if t.retention_hours % 24 == 0 {
            format!("{} days", t.retention_hours / 24)
        } else {
            format!("{} hours", t.retention_hours)
        };
        let list = |v: &[String]| if v.is_empty() { "—".to_owned() } else { v.join("; ") };
        out.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} | {} | {} | {} | {} |\n",
            t.name,
            t.key,
            t.value,
            t.partitions,
            t.cleanup.as_str(),
            retention,
            list(&t.producers),
            list(&t.consumers)
        ));
    }
    out.push_str("\n## What each topic is for\n\n");
    for t in catalogue() {
        out.push_str(&format!("- `{}`: {}\n", t.name, t.description));
    }
    out.push_str(
        "\nThe local broker (tansu) accepts `cleanup.policy=compact` but its compaction is not relied on:\n\
         consumers of compacted topics keep the highest revision per key, which is correct with or\n\
         without compaction, and deletions are written as tombstones (a null value) for a real Kafka\n\
         cluster to compact away.\n",
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_catalogue_parses_and_names_every_topic_once() {
        let parsed: CatalogueFile = toml::from_str(CATALOGUE_TOML).unwrap();
        assert_eq!(parsed.topic.len(), Topic::ALL.len());
        let names: HashSet<&str> = parsed.topic.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), parsed.topic.len(), "names are unique");
        for topic in Topic::ALL {
            let spec = topic.spec().unwrap_or_else(|| panic!("{topic:?} is in the catalogue"));
            assert!(spec.partitions >= 1 && spec.retention_hours >= 1);
        }
        assert_eq!(Topic::ControlTenants.spec().unwrap().cleanup, Cleanup::Compact);
        assert_eq!(Topic::Features.spec().unwrap().cleanup, Cleanup::Compact);
        assert_eq!(Topic::EventsRaw.spec().unwrap().cleanup, Cleanup::Delete);
    }

    #[test]
    fn prefixed_names_map_back() {
        let topics = Topics::new("t1.");
        assert_eq!(Topic::from_name(&topics, "t1.events.dlq"), Some(Topic::EventsDlq));
        assert_eq!(Topic::from_name(&topics, "events.dlq"), None);
    }

    #[test]
    fn docs_topics_md_is_rendered_from_the_catalogue() {
        let committed = include_str!("../../docs/topics.md");
        assert!(committed == render_markdown(), "docs/topics.md is stale: run `nudge topics render > docs/topics.md`");
    }
}
