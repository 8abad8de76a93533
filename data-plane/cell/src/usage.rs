//! Reports each tenant's counts (accepted, dropped by reason) to `usage.v1` at an interval,
//! for the control plane to show merchants and to bill. A report the broker does not
//! acknowledge is sent again as it was, with the next ones; each carries an id, so a report
//! stored twice is counted once downstream.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use nudge_contracts::{
    headers::USAGE_V1,
    proto::usage::v1::{ConnectionSample, UsageReport},
};
use nudge_data_plane_gateway::hub::Hub;
use nudge_data_plane_ingest::usage::UsageCounters;
use nudge_platform_kafka::headers::record_headers;
use nudge_platform_kafka::{SharedProducer, stage::OUTPUT_ACK_TIMEOUT};
use nudge_tenants::CellId;
use prost::Message;
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long the last report waits, at shutdown, for the counts still being recorded.
const FINAL_COUNTS_WAIT: Duration = Duration::from_secs(8);

/// Sends the counts every `interval` until `shutdown`, then once more: after `counted_last`
/// is cancelled (what still counts at shutdown, the acknowledgement writer's last batch, is
/// done), at most [`FINAL_COUNTS_WAIT`] later.
pub async fn report(
    counters: Arc<UsageCounters>,
    producer: SharedProducer,
    topic: String,
    cell: CellId,
    interval: Duration,
    shutdown: CancellationToken,
    counted_last: Option<CancellationToken>,
) -> anyhow::Result<()> {
    let mut since = Utc::now().timestamp_millis();
    // Reports the broker did not acknowledge: sent again as they were (the same id and
    // interval), since an unacknowledged record may still have been stored, and the
    // control plane counts an id once.
    let mut unsent: Vec<UsageReport> = Vec::new();
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        if stopping && let Some(counted) = &counted_last {
            let _ = tokio::time::timeout(FINAL_COUNTS_WAIT, counted.cancelled()).await;
        }
        let now = Utc::now().timestamp_millis();
        let mut reports = std::mem::take(&mut unsent);
        for (tenant, c) in counters.drain() {
            reports.push(UsageReport {
                tenant_id: tenant.to_string(),
                cell_id: cell.to_string(),
                start_ms: since,
                end_ms: now,
                accepted: c.accepted,
                dropped: c.dropped.iter().map(|(why, n)| (why.as_str().to_owned(), *n)).collect(),
                report_id: Uuid::now_v7().simple().to_string(),
                predictions: c.predictions,
                interventions: c.interventions,
                peak_connections: c.connection_samples.iter().map(|(_, n)| *n).max().unwrap_or(0),
                connection_samples: c
                    .connection_samples
                    .iter()
                    .map(|(at_ms, connections)| ConnectionSample { at_ms: *at_ms, connections: *connections })
                    .collect(),
            });
        }
        for report in reports {
            let value = report.encode_to_vec();
            let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic)
                .key(report.tenant_id.as_str())
                .payload(value.as_slice())
                .headers(record_headers(USAGE_V1, None));
            if let Err(e) = producer.send_all([record], OUTPUT_ACK_TIMEOUT).await {
                tracing::debug!(tenant_id = %report.tenant_id, error = %e, "usage report not sent");
                unsent.push(report);
            }
        }
        if !unsent.is_empty() {
            tracing::warn!(reports = unsent.len(), "usage reports not sent; they are sent again with the next ones");
        }
        since = now;
        if stopping {
            return Ok(());
        }
    }
}

/// Samples the sockets `hub` holds per tenant at every multiple of `every` of the wall
/// clock (the same instants on every gateway) into `counters`, until `shutdown`.
pub async fn sample_connections(
    hub: Arc<Hub>,
    counters: Arc<UsageCounters>,
    every: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1_000);
    loop {
        let now = Utc::now().timestamp_millis();
        let next = (now / every_ms + 1) * every_ms;
        let wait = Duration::from_millis(u64::try_from(next - now).unwrap_or(0));
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        counters.connections(next, hub.sockets_by_tenant().into_iter().map(|(tenant, n)| (tenant, u64::from(n))));
    }
}
