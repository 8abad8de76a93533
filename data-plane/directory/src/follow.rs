//! Following `control.tenants.v1`.

use std::sync::Arc;

use nudge_contracts::topics::Topic;
use nudge_platform_kafka::{KafkaConfig, follow::Follower};
use tokio_util::sync::CancellationToken;

use crate::Directory;

struct Tenants(Arc<Directory>);

impl Follower for Tenants {
    fn what(&self) -> &'static str {
        "tenant"
    }

    fn apply(&self, key: &[u8], payload: Option<&[u8]>) -> Result<String, String> {
        self.0.apply(key, payload).map(|applied| format!("{applied:?}")).map_err(|e| e.to_string())
    }

    fn caught_up(&self) {
        tracing::info!(tenants = self.0.len(), "tenant directory caught up");
        self.0.mark_caught_up();
    }
}

/// Reads the whole topic into `directory`, marks it caught up once every partition reaches
/// the end it had at start, then follows new records until `shutdown`.
pub async fn follow(
    directory: Arc<Directory>,
    kafka: KafkaConfig,
    shutdown: CancellationToken,
) -> Result<(), nudge_platform_kafka::Error> {
    let topic = kafka.topics().name(Topic::ControlTenants);
    let client_id = format!("directory-{}", directory.cell());
    nudge_platform_kafka::follow::follow(Arc::new(Tenants(directory)), &kafka, topic, &client_id, shutdown).await
}
