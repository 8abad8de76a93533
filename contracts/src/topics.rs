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
    ControlCampaigns,
    Usage,
    ErasureReports,
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

/// Whether each cell has its own copy of a topic or the platform has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Under the cell's prefix: events, features, predictions, commands, a cell's DLQ.
    #[default]
    Cell,
    /// One for the platform, under the platform's prefix: the control plane's announcements
    /// to every cell and the usage every cell reports.
    Platform,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cell => "cell",
            Self::Platform => "platform",
        }
    }
}

/// One topic as the catalogue describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    #[serde(default)]
    pub scope: Scope,
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
    pub const ALL: [Topic; 11] = [
        Topic::EventsRaw,
        Topic::EventsValidated,
        Topic::EventsDlq,
        Topic::Features,
        Topic::Predictions,
        Topic::InterventionCommands,
        Topic::ControlTenants,
        Topic::ControlModels,
        Topic::ControlCampaigns,
        Topic::Usage,
        Topic::ErasureReports,
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
            Self::ControlCampaigns => "control.campaigns.v1",
            Self::Usage => "usage.v1",
            Self::ErasureReports => "erasure.reports.v1",
        }
    }

    /// The catalogue entry.
    pub fn spec(self) -> Option<&'static TopicSpec> {
        catalogue().iter().find(|t| t.name == self.base_name())
    }

    /// Whether the platform has one of this topic rather than each cell its own.
    pub fn is_platform(self) -> bool {
        self.spec().is_some_and(|s| s.scope == Scope::Platform)
    }

    /// The topic a (prefixed) name refers to.
    pub fn from_name(topics: &Topics, name: &str) -> Option<Topic> {
        Self::ALL.into_iter().find(|&t| topics.name(t) == name)
    }
}

/// Topic names for one environment (or one cell of it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    /// Prepended to every topic name; empty in a normal deployment, the cell's own prefix
    /// on a cell with topics of its own.
    pub prefix: String,
    /// Prepended to the platform-wide topics instead, where it differs from `prefix`.
    #[serde(default)]
    pub platform_prefix: Option<String>,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into(), platform_prefix: None }
    }

    /// Names the platform-wide topics under `platform_prefix` (when given).
    pub fn with_platform_prefix(mut self, platform_prefix: Option<String>) -> Self {
        self.platform_prefix = platform_prefix;
        self
    }

    pub fn name(&self, topic: Topic) -> String {
        let prefix = match &self.platform_prefix {
            Some(platform) if topic.is_platform() => platform,
            _ => &self.prefix,
        };
        format!("{prefix}{}", topic.base_name())
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
         Scope `cell`: each cell has its own, under its prefix (a cell on the platform's cluster gets\n\
         one from its `Cell` resource, such as `shared-1.`). Scope `platform`: one for the whole\n\
         platform, under the platform's prefix (a cell's `kafka.platform_prefix`).\n\n\
         | topic | scope | key | value | partitions | cleanup | retention | producers | consumers |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for t in catalogue() {
        let retention = if t.retention_hours % 24 == 0 {
            format!("{} days", t.retention_hours / 24)
        } else {
            format!("{} hours", t.retention_hours)
        };
        let list = |v: &[String]| if v.is_empty() { "—".to_owned() } else { v.join("; ") };
        out.push_str(&format!(
            "| `{}` | {} | `{}` | `{}` | {} | {} | {} | {} | {} |\n",
            t.name,
            t.scope.as_str(),
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
         cluster to compact away.\n\n\
         Sealed values (`nudge.sealed.v1.Sealed (…)`) are the named message encrypted with the\n\
         shopper's own data key (AES-256-GCM; the key is wrapped by the tenant's OpenBao Transit key).\n\
         Erasing a shopper deletes their data key, so every record of theirs still retained, in the\n\
         DLQ too, can no longer be read (crypto-shredding); see GDPR.md.\n",
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
    fn a_cell_with_its_own_prefix_shares_the_platform_topics() {
        let topics = Topics::new("shared-1.").with_platform_prefix(Some(String::new()));
        assert_eq!(topics.name(Topic::EventsRaw), "shared-1.events.raw");
        assert_eq!(topics.name(Topic::ControlTenants), "control.tenants.v1");
        assert_eq!(topics.name(Topic::Usage), "usage.v1");
        assert_eq!(Topic::from_name(&topics, "control.models.v1"), Some(Topic::ControlModels));
        assert_eq!(Topic::from_name(&topics, "shared-1.control.models.v1"), None);
        let platform: Vec<Topic> = Topic::ALL.into_iter().filter(|t| t.is_platform()).collect();
        assert_eq!(
            platform,
            [Topic::ControlTenants, Topic::ControlModels, Topic::ControlCampaigns, Topic::Usage, Topic::ErasureReports]
        );
    }

    #[test]
    fn docs_topics_md_is_rendered_from_the_catalogue() {
        let committed = include_str!("../../docs/topics.md");
        assert!(committed == render_markdown(), "docs/topics.md is stale: run `nudge topics render > docs/topics.md`");
    }
}
