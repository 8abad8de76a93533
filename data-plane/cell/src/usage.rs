//! Reports each tenant's counts (accepted, dropped by reason) to `usage.v1` at an interval,
//! for the control plane to show merchants and to bill. A report that cannot be sent is put
//! back and goes with the next one; each carries an id, so a redelivered report is counted
//! once downstream.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use nudge_contracts::{headers::USAGE_V1, proto::usage::v1::UsageReport};
use nudge_data_plane_ingest::usage::UsageCounters;
use nudge_platform_kafka::headers::record_headers;
use nudge_platform_kafka::{SharedProducer, stage::OUTPUT_ACK_TIMEOUT};
use nudge_tenants::CellId;
use prost::Message;
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Sends the counts every `interval` until `shutdown`, then once more.
pub async fn report(
    counters: Arc<UsageCounters>,
    producer: SharedProducer,
    topic: String,
    cell: CellId,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut since = Utc::now().timestamp_millis();
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        let now = Utc::now().timestamp_millis();
        let counts = counters.drain();
        let mut unsent = std::collections::HashMap::new();
        for (tenant, c) in counts {
            let report = UsageReport {
                tenant_id: tenant.to_string(),
                cell_id: cell.to_string(),
                start_ms: since,
                end_ms: now,
                accepted: c.accepted,
                dropped: c.dropped.iter().map(|(why, n)| (why.as_str().to_owned(), *n)).collect(),
                report_id: Uuid::now_v7().simple().to_string(),
                predictions: c.predictions,
                interventions: c.interventions,
                // Sockets are counted by the gateway's own limits; not reported yet.
                peak_connections: 0,
            };
            let key = tenant.to_string();
            let value = report.encode_to_vec();
            let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic)
                .key(key.as_str())
                .payload(value.as_slice())
                .headers(record_headers(USAGE_V1, None));
            if let Err(e) = producer.send_all([record], OUTPUT_ACK_TIMEOUT).await {
                tracing::debug!(%tenant, error = %e, "usage report not sent");
                unsent.insert(tenant, c);
            }
        }
        if !unsent.is_empty() {
            tracing::warn!(tenants = unsent.len(), "usage reports not sent; they go with the next ones");
            counters.restore(unsent);
        }
        since = now;
        if stopping {
            return Ok(());
        }
    }
}
