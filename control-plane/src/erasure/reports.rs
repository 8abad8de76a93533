//! The cells' side: the orders a tenant's record carries to its cell, and the reports
//! that come back on `erasure.reports.v1`.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{TimeZone, Utc};
use nudge_contracts::{
    Topics,
    proto::control::v1::{ErasureOrder, ErasureReport},
};
use nudge_platform_kafka::stage::{Failure, Handler, HandlerFuture, Record};
use nudge_tenants::TenantId;
use prost::Message;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{ErasureError, ReceiptSigner, audit, complete, is_digest, suppress_erased};
use crate::{announce::announce, db::DbError, routing::TenantRouter};

/// Records the cells' reports and completes the requests they finish; a stage handler for
/// `erasure.reports.v1`.
pub struct ReportSink {
    pub router: Arc<TenantRouter>,
    pub topics: Topics,
    pub signer: ReceiptSigner,
    /// Woken after a completion enqueued the tenant's record.
    pub outbox_wake: Arc<tokio::sync::Notify>,
}

impl Handler for ReportSink {
    fn handle<'a>(&'a self, record: &'a Record<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let report = ErasureReport::decode(record.payload.unwrap_or_default())
                .map_err(|e| Failure::Failed(format!("undecodable erasure report: {e}")))?;
            let tenant: TenantId = report
                .tenant_id
                .parse()
                .map_err(|_| Failure::Failed("erasure report without a valid tenant".into()))?;
            let request_id: Uuid = report
                .request_id
                .parse()
                .map_err(|_| Failure::Failed("erasure report without a valid request id".into()))?;
            match self.record(tenant, request_id, &report, Some(record.trace.to_header())).await {
                Ok(completed) => {
                    if completed {
                        self.outbox_wake.notify_waiters();
                        self.outbox_wake.notify_one();
                    }
                    Ok(())
                }
                Err(ErasureError::Db(DbError::Unavailable(e))) => Err(Failure::Unavailable(e.to_string())),
                Err(ErasureError::Db(DbError::TenantMoving)) => Err(Failure::Unavailable("tenant moving".into())),
                // A vault that refuses (an expired token, a missing policy) needs an operator;
                // the report waits for it rather than going to the dead letters.
                Err(ErasureError::Vault(e)) => Err(Failure::Unavailable(e.to_string())),
                Err(e) => Err(Failure::Failed(e.to_string())),
            }
        })
    }
}

impl ReportSink {
    /// Marks the reporting cell's step finished (once; a repeated report changes nothing)
    /// and completes the request when it was the last; whether it completed it.
    async fn record(
        &self,
        tenant: TenantId,
        request_id: Uuid,
        report: &ErasureReport,
        traceparent: Option<String>,
    ) -> Result<bool, ErasureError> {
        let removed: BTreeMap<String, u64> = report.places.iter().map(|p| (p.place.clone(), p.removed)).collect();
        if let Some(bad) = report.subject_digests.iter().chain(&report.held_subject_digests).find(|d| !is_digest(d)) {
            return Err(ErasureError::BadReport(format!("`{}` is not a subject digest", bad.escape_debug())));
        }
        // A tombstone is written for every subject; what was found is what the rest removed.
        let found = removed.iter().any(|(place, n)| *n > 0 && !place.ends_with(".tombstones"));
        let finished_at = Utc.timestamp_millis_opt(report.completed_at_ms).single().unwrap_or_else(Utc::now);
        let store = format!("cell:{}", report.cell_id);
        let mut tx = self.router.tenant_tx(tenant).await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM erasure_requests WHERE tenant_id = $1 AND request_id = $2)",
        )
        .bind(tenant.as_uuid())
        .bind(request_id)
        .fetch_one(&mut *tx)
        .await?;
        if !exists {
            // A report for a request this database does not hold (a tenant deleted since):
            // nothing to record.
            tracing::warn!(tenant_id = %tenant, %request_id, "erasure report for an unknown request; ignored");
            return Ok(false);
        }
        // A cell the request did not wait for (the store moved meanwhile) is recorded too.
        let updated = sqlx::query(
            "INSERT INTO erasure_steps (tenant_id, request_id, store, status, removed, finished_at, subjects, held_subjects)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant_id, request_id, store) DO UPDATE
                SET status = EXCLUDED.status, removed = EXCLUDED.removed, finished_at = EXCLUDED.finished_at,
                    subjects = EXCLUDED.subjects, held_subjects = EXCLUDED.held_subjects
                WHERE erasure_steps.status = 'pending'",
        )
        .bind(tenant.as_uuid())
        .bind(request_id)
        .bind(&store)
        .bind(if found { "erased" } else { "nothing_found" })
        .bind(serde_json::to_value(&removed).unwrap_or_default())
        .bind(finished_at)
        .bind(&report.subject_digests)
        .bind(&report.held_subject_digests)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            // Reported before (a redelivery, or a cell that carried the order out again):
            // the request may still lack its receipt.
            tx.commit().await.map_err(DbError::from)?;
            return complete(&self.router, &self.topics, &self.signer, tenant, request_id, traceparent).await;
        }
        audit(
            &mut tx,
            tenant,
            Some(request_id),
            &store,
            "store_finished",
            serde_json::json!({
                "store": store,
                "found": found,
                "subjects": report.subject_digests.len(),
                "held_subjects": report.held_subject_digests.len(),
            }),
        )
        .await?;
        self.suppress_found(&mut tx, tenant, request_id, &report.subject_digests).await?;
        // The step is recorded whatever the vault does; completing needs it.
        tx.commit().await.map_err(DbError::from)?;
        complete(&self.router, &self.topics, &self.signer, tenant, request_id, traceparent).await
    }
}

impl ReportSink {
    /// For an erasure by e-mail: the shoppers the cell found go on the suppression list (so
    /// their events are dropped, and any cell erases what it keeps of them), and this
    /// database's step — what it held of them — finishes.
    async fn suppress_found(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        tenant: TenantId,
        request_id: Uuid,
        subjects: &[String],
    ) -> Result<(), ErasureError> {
        let row = sqlx::query("SELECT scope, status FROM erasure_requests WHERE tenant_id = $1 AND request_id = $2")
            .bind(tenant.as_uuid())
            .bind(request_id)
            .fetch_one(&mut **tx)
            .await?;
        let (scope, status): (String, String) = (row.try_get("scope")?, row.try_get("status")?);
        if scope != "email" {
            return Ok(());
        }
        if status != "in_progress" {
            // A cell reporting after the receipt was signed (one the request did not wait
            // for): its shoppers are not on the receipt, so nothing is done in its name.
            audit(
                tx,
                tenant,
                Some(request_id),
                "system",
                "late_report_ignored",
                serde_json::json!({ "subjects": subjects.len() }),
            )
            .await?;
            return Ok(());
        }
        let ids_removed = if subjects.is_empty() { 0 } else { suppress_erased(tx, tenant, subjects).await? };
        // Counts add up over the cells that report (a store that moved has two).
        sqlx::query(
            "UPDATE erasure_steps
                SET removed = jsonb_build_object('suppressions.shopper_id',
                        COALESCE((removed->>'suppressions.shopper_id')::bigint, 0) + $3),
                    status = CASE WHEN COALESCE((removed->>'suppressions.shopper_id')::bigint, 0) + $3 > 0
                                  THEN 'erased' ELSE 'nothing_found' END,
                    finished_at = now()
              WHERE tenant_id = $1 AND request_id = $2 AND store = 'postgres'",
        )
        .bind(tenant.as_uuid())
        .bind(request_id)
        .bind(i64::try_from(ids_removed).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await?;
        if !subjects.is_empty() {
            // The cell learns of the new suppressions with the tenant's next record.
            announce(tx, &self.topics, tenant, None).await?;
        }
        Ok(())
    }
}

/// The erasure orders a tenant's record carries: in-progress requests whose cell has not
/// reported yet. An order by e-mail lists the shoppers under a legal hold, whom the cell
/// leaves alone.
pub async fn pending_orders(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
) -> Result<Vec<ErasureOrder>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.request_id, r.scope, r.subject_digest FROM erasure_requests r
         WHERE r.tenant_id = $1 AND r.status = 'in_progress'
           AND EXISTS (SELECT 1 FROM erasure_steps s
                       WHERE s.tenant_id = r.tenant_id AND s.request_id = r.request_id
                         AND s.store LIKE 'cell:%' AND s.status = 'pending')
         ORDER BY r.requested_at",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut **tx)
    .await?;
    let mut held: Option<Vec<String>> = None;
    let mut orders = Vec::with_capacity(rows.len());
    for r in &rows {
        let scope: String = r.try_get("scope")?;
        let by_email = scope == "email";
        let held_subjects = if by_email {
            if held.is_none() {
                held = Some(
                    sqlx::query_scalar(
                        "SELECT DISTINCT subject_digest FROM legal_holds
                         WHERE tenant_id = $1 AND released_at IS NULL AND subject_digest IS NOT NULL
                         ORDER BY subject_digest",
                    )
                    .bind(tenant.as_uuid())
                    .fetch_all(&mut **tx)
                    .await?,
                );
            }
            held.clone().unwrap_or_default()
        } else {
            Vec::new()
        };
        orders.push(ErasureOrder {
            request_id: r.try_get::<Uuid, _>("request_id")?.to_string(),
            subject_digest: r.try_get::<Option<String>, _>("subject_digest")?.unwrap_or_default(),
            whole_tenant: scope == "tenant",
            by_email,
            held_subjects,
        });
    }
    Ok(orders)
}
