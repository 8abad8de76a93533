//! Usage reports from the cells: consumed from `usage.v1` into `usage_reports` (each report
//! once, by its id), and summed for the merchant's usage view.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, TimeZone, Utc};
use nudge_contracts::proto::usage::v1::UsageReport;
use nudge_platform_kafka::stage::{Failure, Handler, HandlerFuture, Record};
use nudge_tenants::TenantId;
use prost::Message;
use sqlx::Row;

use crate::{db::DbError, routing::TenantRouter};

/// Stores usage reports; a stage handler for `usage.v1`.
pub struct UsageSink {
    pub router: Arc<TenantRouter>,
}

fn ms(t: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t).single().unwrap_or_default()
}

impl Handler for UsageSink {
    fn handle<'a>(&'a self, record: &'a Record<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let report = UsageReport::decode(record.payload.unwrap_or_default())
                .map_err(|e| Failure::Failed(format!("undecodable usage report: {e}")))?;
            let tenant: TenantId =
                report.tenant_id.parse().map_err(|_| Failure::Failed("usage report without a valid tenant".into()))?;
            let dropped = serde_json::to_value(&report.dropped).map_err(|e| Failure::Failed(e.to_string()))?;
            let result = async {
                let mut tx = self.router.tenant_tx(tenant).await?;
                sqlx::query(
                    "INSERT INTO usage_reports (tenant_id, report_id, cell_id, start_at, end_at, accepted, dropped)
                     SELECT $1, $2, $3, $4, $5, $6, $7
                     WHERE EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1)
                     ON CONFLICT (tenant_id, report_id) DO NOTHING",
                )
                .bind(tenant.as_uuid())
                .bind(&report.report_id)
                .bind(&report.cell_id)
                .bind(ms(report.start_ms))
                .bind(ms(report.end_ms))
                .bind(i64::try_from(report.accepted).unwrap_or(i64::MAX))
                .bind(dropped)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok::<_, DbError>(())
            };
            match result.await {
                Ok(()) => Ok(()),
                Err(DbError::Unavailable(e)) => Err(Failure::Unavailable(e.to_string())),
                Err(DbError::TenantMoving) => Err(Failure::Unavailable("tenant moving".into())),
                Err(DbError::Query(e)) => Err(Failure::Failed(e.to_string())),
            }
        })
    }
}

/// A store's usage over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub accepted: i64,
    pub dropped: BTreeMap<String, i64>,
}

/// Sums `tenant`'s reports that ended in `[from, to)`.
pub async fn totals(
    router: &TenantRouter,
    tenant: TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<UsageTotals, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let rows = sqlx::query(
        "SELECT accepted, dropped FROM usage_reports WHERE tenant_id = $1 AND end_at >= $2 AND end_at < $3",
    )
    .bind(tenant.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut totals = UsageTotals::default();
    for r in rows {
        totals.accepted += r.try_get::<i64, _>("accepted")?;
        let dropped: serde_json::Value = r.try_get("dropped")?;
        for (why, n) in dropped.as_object().into_iter().flatten() {
            *totals.dropped.entry(why.clone()).or_default() += n.as_i64().unwrap_or(0);
        }
    }
    Ok(totals)
}
