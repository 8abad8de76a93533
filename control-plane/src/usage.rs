//! Usage reports from the cells, and the usage ledger billing reads.
//!
//! Each report of `usage.v1` is counted exactly once: it is kept by its id in
//! `usage_reports` (a redelivered or resent report is a duplicate and changes nothing) and,
//! in the same transaction, added to the store's ledger (`usage_ledger`) in the hour it began
//! in — however late it arrives, so usage that comes after its hour is billed, not lost.
//! `events`, `predictions` and `interventions` add up per hour. `peak_connections` is the
//! most sockets the store held at once in the hour: each gateway samples its sockets per
//! store at the same wall-clock instants, a new report's samples are added into
//! `connection_samples` by instant (so several gateways' sockets add up), and the hour keeps
//! its highest sum. A report for a store that does not exist, or is deleted, or with impossible times
//! or counts (a cell's clock or counter gone wrong), is billed to no one: it is kept apart
//! (`usage_quarantine`) and counted (`usage_reports_quarantined`).

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, DurationRound, TimeZone, Utc};
use nudge_contracts::{Topics, proto::usage::v1::UsageReport};
use nudge_platform_kafka::stage::{Failure, Handler, HandlerFuture, Record};
use nudge_platform_telemetry::Metrics;
use nudge_tenants::TenantId;
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use sqlx::Row;

use crate::{db::DbError, routing::TenantRouter};

/// The ledger's meters.
pub const METERS: [&str; 4] = ["events", "predictions", "interventions", "peak_connections"];

/// Counters of the usage consumer.
#[derive(Clone, Default)]
pub struct UsageMetrics {
    quarantined: Counter,
    duplicates: Counter,
}

impl UsageMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        let mut r = metrics.registry();
        r.register(
            "usage_reports_quarantined",
            "Usage reports for a store that does not exist or is deleted, billed to no one",
            m.quarantined.clone(),
        );
        r.register("usage_reports_duplicate", "Usage reports received again, counted once", m.duplicates.clone());
        m
    }
}

/// Stores usage reports; a stage handler for `usage.v1`.
pub struct UsageSink {
    pub router: Arc<TenantRouter>,
    pub topics: Topics,
    pub metrics: UsageMetrics,
}

fn ms(t: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t).single().unwrap_or_default()
}

impl Handler for UsageSink {
    fn handle<'a>(&'a self, record: &'a Record<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let report = UsageReport::decode(record.payload.unwrap_or_default())
                .map_err(|e| Failure::Failed(format!("undecodable usage report: {e}")))?;
            match record_reports(&self.router, &self.topics, &self.metrics, std::slice::from_ref(&report)).await {
                Ok(_) => Ok(()),
                Err(DbError::Unavailable(e)) => Err(Failure::Unavailable(e.to_string())),
                Err(DbError::TenantMoving) => Err(Failure::Unavailable("tenant moving".into())),
                Err(DbError::Query(e)) => Err(Failure::Failed(e.to_string())),
            }
        })
    }
}

/// What [`record_reports`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Counted into the ledger (each for the first time).
    pub counted: u64,
    /// Received before: changed nothing.
    pub duplicates: u64,
    /// For no store, or a deleted one: kept apart.
    pub quarantined: u64,
}

/// Counts `reports` into their stores' ledgers, each report once, in one transaction per
/// store; a malformed report (no valid id or store) is an error for the caller to handle.
pub async fn record_reports(
    router: &TenantRouter,
    topics: &Topics,
    metrics: &UsageMetrics,
    reports: &[UsageReport],
) -> Result<Recorded, DbError> {
    let mut by_tenant: BTreeMap<Option<TenantId>, Vec<&UsageReport>> = BTreeMap::new();
    let mut impossible = Vec::new();
    let now_ms = Utc::now().timestamp_millis();
    for report in reports {
        if report.report_id.is_empty() || report.report_id.len() > 200 {
            return Err(DbError::Query(sqlx::Error::Protocol("a usage report without a valid id".into())));
        }
        if is_possible(report, now_ms) {
            by_tenant.entry(report.tenant_id.parse().ok()).or_default().push(report);
        } else {
            impossible.push(report);
        }
    }
    let mut recorded = Recorded::default();
    if !impossible.is_empty() {
        // A cell's clock or counter gone wrong: kept for a look, billed to no one.
        let quarantined = quarantine(router, &impossible, "invalid_report").await?;
        recorded.quarantined += quarantined;
        metrics.quarantined.inc_by(quarantined);
        tracing::warn!(reports = impossible.len(), "usage reports with impossible times or counts quarantined");
    }
    for (tenant, reports) in by_tenant {
        let state: Option<String> = match tenant {
            Some(tenant) => {
                let mut tx = router.tenant_tx(tenant).await?;
                let state = sqlx::query_scalar("SELECT state FROM tenants WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                state
            }
            None => None,
        };
        match (tenant, state.as_deref()) {
            (Some(tenant), Some(state)) if state != "deleted" => {
                let (counted, duplicates) = count(router, topics, tenant, &reports).await?;
                recorded.counted += counted;
                recorded.duplicates += duplicates;
                metrics.duplicates.inc_by(duplicates);
            }
            (_, state) => {
                let reason = if state.is_some() { "deleted_tenant" } else { "unknown_tenant" };
                let quarantined = quarantine(router, &reports, reason).await?;
                recorded.quarantined += quarantined;
                metrics.quarantined.inc_by(quarantined);
                tracing::warn!(reports = reports.len(), reason, "usage reports for no live store quarantined");
            }
        }
    }
    Ok(recorded)
}

/// The most a report may count of anything: far beyond any cell's interval, far below
/// where sums could overflow.
const MAX_COUNT: u64 = 1_000_000_000_000;

/// Whether a report's interval and counts could be true: it begins after 2020, ends no
/// earlier than it begins and at most a day from now, and counts less than [`MAX_COUNT`].
fn is_possible(report: &UsageReport, now_ms: i64) -> bool {
    const EPOCH_2020_MS: i64 = 1_577_836_800_000;
    let counts = [report.accepted, report.predictions, report.interventions, report.peak_connections];
    let samples = report.connection_samples.iter();
    report.start_ms >= EPOCH_2020_MS
        && report.end_ms >= report.start_ms
        && report.end_ms <= now_ms + 86_400_000
        && counts.iter().chain(report.dropped.values()).all(|n| *n < MAX_COUNT)
        && samples.clone().all(|s| s.at_ms >= EPOCH_2020_MS && s.at_ms <= now_ms + 86_400_000)
        && samples.clone().all(|s| s.connections < MAX_COUNT)
}

/// Counts `tenant`'s reports: keeps the new ones by id and adds them to the ledger, in one
/// transaction; (counted, duplicates).
async fn count(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    reports: &[&UsageReport],
) -> Result<(u64, u64), DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let column = |f: fn(&UsageReport) -> u64| {
        reports.iter().map(|r| i64::try_from(f(r)).unwrap_or(i64::MAX)).collect::<Vec<i64>>()
    };
    let ids: Vec<&str> = reports.iter().map(|r| r.report_id.as_str()).collect();
    let cells: Vec<&str> = reports.iter().map(|r| r.cell_id.as_str()).collect();
    let starts: Vec<DateTime<Utc>> = reports.iter().map(|r| ms(r.start_ms)).collect();
    let ends: Vec<DateTime<Utc>> = reports.iter().map(|r| ms(r.end_ms)).collect();
    let dropped: Vec<serde_json::Value> =
        reports.iter().map(|r| serde_json::to_value(&r.dropped).unwrap_or_default()).collect();
    // The new reports only (a report id seen before inserts nothing), then their sums per
    // hour into the ledger.
    let new = sqlx::query(
        "INSERT INTO usage_reports
            (tenant_id, report_id, cell_id, start_at, end_at, accepted, dropped, predictions, interventions, peak_connections)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::bigint[],
                                  $7::jsonb[], $8::bigint[], $9::bigint[], $10::bigint[])
         ON CONFLICT (tenant_id, report_id) DO NOTHING
         RETURNING report_id, start_at, accepted, predictions, interventions, peak_connections",
    )
    .bind(tenant.as_uuid())
    .bind(&ids)
    .bind(&cells)
    .bind(&starts)
    .bind(&ends)
    .bind(column(|r| r.accepted))
    .bind(&dropped)
    .bind(column(|r| r.predictions))
    .bind(column(|r| r.interventions))
    .bind(column(|r| r.peak_connections))
    .fetch_all(&mut *tx)
    .await?;
    // Each id's first occurrence in the batch: the one inserted (a report sent twice in one
    // batch counts once).
    let mut first: std::collections::HashMap<&str, &UsageReport> = std::collections::HashMap::new();
    for report in reports {
        first.entry(report.report_id.as_str()).or_insert(report);
    }
    let mut hours: BTreeMap<DateTime<Utc>, [i64; 4]> = BTreeMap::new();
    let mut samples: BTreeMap<i64, i64> = BTreeMap::new();
    for row in &new {
        let start: DateTime<Utc> = row.try_get("start_at")?;
        let hour = start.duration_trunc(chrono::Duration::hours(1)).unwrap_or(start);
        let q = hours.entry(hour).or_default();
        q[0] = q[0].saturating_add(row.try_get("accepted")?);
        q[1] = q[1].saturating_add(row.try_get("predictions")?);
        q[2] = q[2].saturating_add(row.try_get("interventions")?);
        let id: String = row.try_get("report_id")?;
        let Some(report) = first.get(id.as_str()) else { continue };
        if report.connection_samples.is_empty() {
            // A report without samples (a cell from before sampling): its own peak, in
            // the hour it began.
            q[3] = q[3].max(row.try_get("peak_connections")?);
        }
        // The samples are added by instant to what other gateways sent, each in its own
        // hour.
        for s in &report.connection_samples {
            let n = samples.entry(s.at_ms).or_default();
            *n = n.saturating_add(i64::try_from(s.connections).unwrap_or(i64::MAX));
        }
    }
    if !samples.is_empty() {
        let (at, connections): (Vec<DateTime<Utc>>, Vec<i64>) = samples.iter().map(|(t, n)| (ms(*t), *n)).unzip();
        let sums = sqlx::query(
            "INSERT INTO connection_samples (tenant_id, at, connections)
             SELECT $1, * FROM unnest($2::timestamptz[], $3::bigint[])
             ON CONFLICT (tenant_id, at) DO UPDATE SET connections = connection_samples.connections + EXCLUDED.connections
             RETURNING at, connections",
        )
        .bind(tenant.as_uuid())
        .bind(&at)
        .bind(&connections)
        .fetch_all(&mut *tx)
        .await?;
        for row in &sums {
            let at: DateTime<Utc> = row.try_get("at")?;
            let hour = at.duration_trunc(chrono::Duration::hours(1)).unwrap_or(at);
            let q = hours.entry(hour).or_default();
            q[3] = q[3].max(row.try_get("connections")?);
        }
        sqlx::query("DELETE FROM connection_samples WHERE tenant_id = $1 AND at < now() - interval '35 days'")
            .bind(tenant.as_uuid())
            .execute(&mut *tx)
            .await?;
    }
    let mut rows = (Vec::new(), Vec::new(), Vec::new());
    for (hour, quantities) in &hours {
        for (meter, quantity) in METERS.iter().zip(quantities) {
            rows.0.push(*hour);
            rows.1.push(*meter);
            rows.2.push(*quantity);
        }
    }
    sqlx::query(
        "INSERT INTO usage_ledger (tenant_id, hour, meter, quantity)
         SELECT $1, * FROM unnest($2::timestamptz[], $3::text[], $4::bigint[])
         ON CONFLICT (tenant_id, hour, meter) DO UPDATE
            SET quantity = CASE WHEN usage_ledger.meter = 'peak_connections'
                                THEN greatest(usage_ledger.quantity, EXCLUDED.quantity)
                                ELSE usage_ledger.quantity + EXCLUDED.quantity END,
                updated_at = now()",
    )
    .bind(tenant.as_uuid())
    .bind(&rows.0)
    .bind(&rows.1)
    .bind(&rows.2)
    .execute(&mut *tx)
    .await?;
    // The store's standing against its plan's monthly events; a change reaches its cell.
    let state = quota(&mut tx, tenant).await?.state();
    let changed = sqlx::query("UPDATE tenants SET quota_state = $2 WHERE tenant_id = $1 AND quota_state <> $2")
        .bind(tenant.as_uuid())
        .bind(state)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if changed > 0 {
        tracing::info!(tenant_id = %tenant, quota = state, "a store's standing against its monthly events changed");
        crate::announce::announce(&mut tx, topics, tenant, None).await?;
    }
    tx.commit().await?;
    let counted = new.len() as u64;
    Ok((counted, reports.len() as u64 - counted))
}

/// Keeps reports for no live store apart; how many were new there.
async fn quarantine(router: &TenantRouter, reports: &[&UsageReport], reason: &str) -> Result<u64, DbError> {
    let mut tx = router.registry().platform_tx().await?;
    let mut new = 0;
    for report in reports {
        new += sqlx::query(
            "INSERT INTO usage_quarantine (report_id, claimed_tenant, cell_id, reason, report)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (report_id) DO NOTHING",
        )
        .bind(&report.report_id)
        .bind(report.tenant_id.chars().take(200).collect::<String>())
        .bind(report.cell_id.chars().take(200).collect::<String>())
        .bind(reason)
        .bind(report.encode_to_vec())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(new)
}

/// Where a store stands against its plan's monthly events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Events counted this month (UTC).
    pub used: i64,
    /// Events the plan includes a month; `None`: no cap.
    pub included: Option<u64>,
}

impl Quota {
    /// `ok`, `soft_limit` (at [`nudge_tenants::SOFT_LIMIT_PERCENT`]) or `hard_limit`
    /// (past what is included).
    pub fn state(&self) -> &'static str {
        let used = u64::try_from(self.used).unwrap_or(0);
        match self.included {
            Some(included) if used > included => "hard_limit",
            Some(included)
                if used.saturating_mul(100) >= included.saturating_mul(nudge_tenants::SOFT_LIMIT_PERCENT) =>
            {
                "soft_limit"
            }
            _ => "ok",
        }
    }
}

/// `tenant`'s events this month against its plan, in `tx`.
pub async fn quota(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: TenantId,
) -> Result<Quota, sqlx::Error> {
    let row = sqlx::query(
        "SELECT t.plan, COALESCE((SELECT sum(l.quantity) FROM usage_ledger l
                                  WHERE l.tenant_id = t.tenant_id AND l.meter = 'events'
                                    AND l.hour >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0)::bigint AS used
         FROM tenants t WHERE t.tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_one(&mut **tx)
    .await?;
    let plan = nudge_tenants::Plan::parse(&row.try_get::<String, _>("plan")?).unwrap_or_default();
    Ok(Quota { used: row.try_get("used")?, included: plan.monthly_events() })
}

/// [`quota`] in a transaction of its own.
pub async fn quota_of(router: &TenantRouter, tenant: TenantId) -> Result<Quota, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let quota = quota(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(quota)
}

/// One hour of a store's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerHour {
    pub hour: DateTime<Utc>,
    /// Meter → quantity.
    pub quantities: BTreeMap<String, i64>,
}

/// The store's ledger for the hours in `[from, to)`, oldest first.
pub async fn ledger(
    router: &TenantRouter,
    tenant: TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<LedgerHour>, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let rows = sqlx::query(
        "SELECT hour, meter, quantity FROM usage_ledger WHERE tenant_id = $1 AND hour >= $2 AND hour < $3
         ORDER BY hour, meter",
    )
    .bind(tenant.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut hours: Vec<LedgerHour> = Vec::new();
    for row in rows {
        let hour: DateTime<Utc> = row.try_get("hour")?;
        if hours.last().is_none_or(|h| h.hour != hour) {
            hours.push(LedgerHour { hour, quantities: BTreeMap::new() });
        }
        if let Some(last) = hours.last_mut() {
            last.quantities.insert(row.try_get("meter")?, row.try_get("quantity")?);
        }
    }
    Ok(hours)
}

/// A store's usage over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub accepted: i64,
    pub dropped: BTreeMap<String, i64>,
    pub predictions: i64,
    /// Interventions delivered (acknowledged by a shopper's browser).
    pub interventions: i64,
    /// The most sockets open at once in an hour of the period (hours are whole: the hour
    /// `from` falls in counts).
    pub peak_connections: i64,
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
        "SELECT accepted, dropped, predictions, interventions FROM usage_reports
         WHERE tenant_id = $1 AND end_at >= $2 AND end_at < $3",
    )
    .bind(tenant.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    let first_hour = from.duration_trunc(chrono::Duration::hours(1)).unwrap_or(from);
    let peak: Option<i64> = sqlx::query_scalar(
        "SELECT max(quantity) FROM usage_ledger
         WHERE tenant_id = $1 AND meter = 'peak_connections' AND hour >= $2 AND hour < $3",
    )
    .bind(tenant.as_uuid())
    .bind(first_hour)
    .bind(to)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut totals = UsageTotals { peak_connections: peak.unwrap_or(0), ..UsageTotals::default() };
    for r in rows {
        totals.accepted += r.try_get::<i64, _>("accepted")?;
        totals.predictions += r.try_get::<i64, _>("predictions")?;
        totals.interventions += r.try_get::<i64, _>("interventions")?;
        let dropped: serde_json::Value = r.try_get("dropped")?;
        for (why, n) in dropped.as_object().into_iter().flatten() {
            *totals.dropped.entry(why.clone()).or_default() += n.as_i64().unwrap_or(0);
        }
    }
    Ok(totals)
}
