//! The usage ledger: 100,000 usage reports from several cells, with duplicates (a cell
//! resending what it sent, the broker redelivering) and late arrivals (hours reported long
//! after they ended), count into each store's hourly ledger exactly: sums per hour for events,
//! predictions and interventions; for peak connections, the highest of the hour's instants,
//! each the sum of every gateway's sample of it (counted once per report). Reports for a store that
//! does not exist, or was deleted, are quarantined and counted, never billed to anyone.

use std::{collections::BTreeMap, str::FromStr, time::Duration};

use chrono::{DateTime, DurationRound, TimeZone, Utc};
use nudge_contracts::{
    Topics,
    proto::usage::v1::{ConnectionSample, UsageReport},
};
use nudge_control_plane::{
    Database,
    config::PlacementConfig,
    placement::register_shared_cell,
    routing::TenantRouter,
    signup::{NewTenant, sign_up},
    usage::{Recorded, UsageMetrics, ledger, record_reports},
};
use nudge_tenants::{AllowedOrigin, Email, Password, TenantId, TenantName};
use nudge_test_support::{TestDatabase, unique_suffix};
use sqlx::postgres::PgConnectOptions;

const REPORTS: usize = 100_000;
const HOURS: i64 = 48;

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_reports_with_duplicates_and_late_arrivals_add_up_exactly() -> anyhow::Result<()> {
    let test_db = TestDatabase::create().await?;
    let db = Database::connect_lazy(PgConnectOptions::from_str(&test_db.app_url)?, 4, Duration::from_secs(30));
    let cell = register_shared_cell(&db, &PlacementConfig::default()).await?;
    let mut stores = Vec::new();
    for i in 0..3 {
        let new = NewTenant {
            name: TenantName::parse(&format!("Metered {i}"))?,
            allowed_origins: vec![AllowedOrigin::parse(&format!("https://metered{i}.example.com"))?],
            owner_email: Email::parse(&format!("owner{i}-{}@example.com", unique_suffix()))?,
            owner_password: Password::parse(nudge_test_support::PASSWORD)?,
        };
        stores.push(sign_up(&db, &Topics::default(), TenantId::new(), &cell, new, None).await?.tenant_id);
    }
    // A fourth store, deleted: what still arrives for it is billed to no one.
    let deleted = stores.pop().expect("three stores");
    let mut tx = db.tenant_tx(deleted).await?;
    sqlx::query("UPDATE tenants SET state = 'deleted' WHERE tenant_id = $1")
        .bind(deleted.as_uuid())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let unknown = TenantId::new();
    let router = TenantRouter::new(db.clone(), Default::default());

    // Two days ending a day ago: recent enough to be kept (connection samples are kept 35
    // days), long enough ago for every hour to be over.
    let start = (Utc::now() - chrono::Duration::hours(HOURS + 24)).duration_trunc(chrono::Duration::hours(1))?;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut reports = Vec::with_capacity(REPORTS + REPORTS / 10);
    // What the ledger must say: (store, hour) → [events, predictions, interventions, peak].
    let mut expected: BTreeMap<(TenantId, DateTime<Utc>), [i64; 4]> = BTreeMap::new();
    let (mut for_deleted, mut for_unknown) = (0u64, 0u64);
    for n in 0..REPORTS {
        let pick = rng.below(100);
        let tenant = match pick {
            0 => deleted,
            1 => unknown,
            p => stores[(p % 2) as usize],
        };
        let hour = start + chrono::Duration::hours(rng.below(HOURS as u64) as i64);
        let begin = hour + chrono::Duration::seconds(rng.below(3_600) as i64);
        // The gateway's sample at the minute the report began in (every gateway samples
        // the same instants), and its peak the same.
        let sockets = rng.below(50);
        let sampled_at = begin.timestamp_millis() / 60_000 * 60_000;
        let report = UsageReport {
            tenant_id: tenant.to_string(),
            cell_id: format!("cell-{}", n % 3),
            start_ms: begin.timestamp_millis(),
            end_ms: begin.timestamp_millis() + 10_000,
            accepted: rng.below(500),
            dropped: Default::default(),
            report_id: format!("rpt-{n:06}"),
            predictions: rng.below(400),
            interventions: rng.below(20),
            peak_connections: sockets,
            connection_samples: vec![ConnectionSample { at_ms: sampled_at, connections: sockets }],
        };
        if tenant == deleted {
            for_deleted += 1;
        } else if tenant == unknown {
            for_unknown += 1;
        }
        reports.push(report);
    }
    // One in ten is sent again, half of those with other values (a buggy resend: whichever
    // arrives first is counted, the other changes nothing).
    for n in 0..REPORTS / 10 {
        let mut again = reports[(rng.below(REPORTS as u64)) as usize].clone();
        if n % 2 == 0 {
            again.accepted += 1_000;
        }
        reports.push(again);
    }
    // Late arrivals: the reports of the first day come last, after the second day's.
    let first_day_ends = (start + chrono::Duration::hours(24)).timestamp_millis();
    let mut keyed: Vec<(bool, u64, UsageReport)> =
        reports.into_iter().map(|r| (r.start_ms < first_day_ends, rng.next(), r)).collect();
    keyed.sort_by_key(|(late, order, _)| (*late, *order));
    let reports: Vec<UsageReport> = keyed.into_iter().map(|(_, _, r)| r).collect();
    // A report is counted as first received; a resend of its id, whatever it says, is not.
    let mut seen = std::collections::HashSet::new();
    let mut instants: BTreeMap<(TenantId, i64), i64> = BTreeMap::new();
    for report in &reports {
        let tenant: TenantId = report.tenant_id.parse()?;
        if tenant == deleted || tenant == unknown || !seen.insert(report.report_id.clone()) {
            continue;
        }
        let begin = Utc.timestamp_millis_opt(report.start_ms).single().expect("a time");
        let e = expected.entry((tenant, begin.duration_trunc(chrono::Duration::hours(1))?)).or_default();
        e[0] += report.accepted as i64;
        e[1] += report.predictions as i64;
        e[2] += report.interventions as i64;
        for s in &report.connection_samples {
            *instants.entry((tenant, s.at_ms)).or_default() += s.connections as i64;
        }
    }
    for ((tenant, at_ms), sum) in instants {
        let at = Utc.timestamp_millis_opt(at_ms).single().expect("a time");
        let e = expected.entry((tenant, at.duration_trunc(chrono::Duration::hours(1))?)).or_default();
        e[3] = e[3].max(sum);
    }

    let metrics = UsageMetrics::default();
    let mut total = Recorded::default();
    for batch in reports.chunks(2_000) {
        let recorded = record_reports(&router, &Topics::default(), &metrics, batch).await?;
        total.counted += recorded.counted;
        total.duplicates += recorded.duplicates;
        total.quarantined += recorded.quarantined;
    }
    assert_eq!(total.quarantined, for_deleted + for_unknown, "every report for no live store, once");
    assert_eq!(total.counted, REPORTS as u64 - total.quarantined, "every other report, once");

    // Every store's ledger, hour by hour, exactly.
    for &store in &stores {
        let rows = ledger(&router, store, start, start + chrono::Duration::hours(HOURS)).await?;
        let got: BTreeMap<DateTime<Utc>, [i64; 4]> = rows
            .iter()
            .map(|h| {
                let q = |m: &str| h.quantities.get(m).copied().unwrap_or(0);
                (h.hour, [q("events"), q("predictions"), q("interventions"), q("peak_connections")])
            })
            .collect();
        let want: BTreeMap<DateTime<Utc>, [i64; 4]> =
            expected.iter().filter(|((t, _), _)| *t == store).map(|((_, h), q)| (*h, *q)).collect();
        assert_eq!(got.len(), HOURS as usize, "every hour has usage");
        assert_eq!(got, want, "the ledger of {store}");
    }
    // The deleted store's ledger got nothing after its deletion; the quarantine holds them.
    let rows = ledger(&router, deleted, start, start + chrono::Duration::hours(HOURS)).await?;
    assert!(rows.is_empty(), "nothing billed to a deleted store: {rows:?}");
    let quarantined: i64 =
        sqlx::query_scalar("SELECT count(*) FROM usage_quarantine").fetch_one(&mut *db.platform_tx().await?).await?;
    assert_eq!(quarantined as u64, for_deleted + for_unknown);

    // Impossible reports (a cell's clock at 1970, a counter gone wild) are quarantined too.
    let mut at_1970 = reports[0].clone();
    at_1970.report_id = "rpt-1970".into();
    at_1970.start_ms = 0;
    let mut wild = reports[1].clone();
    wild.report_id = "rpt-wild".into();
    wild.accepted = u64::MAX;
    let recorded = record_reports(&router, &Topics::default(), &metrics, &[at_1970, wild]).await?;
    assert_eq!((recorded.counted, recorded.quarantined), (0, 2));

    // Everything again: nothing changes.
    for batch in reports.chunks(5_000) {
        let recorded = record_reports(&router, &Topics::default(), &metrics, batch).await?;
        assert_eq!((recorded.counted, recorded.quarantined), (0, 0), "a second delivery counts nothing");
    }
    for &store in &stores {
        let rows = ledger(&router, store, start, start + chrono::Duration::hours(HOURS)).await?;
        let events: i64 = rows.iter().map(|h| h.quantities.get("events").copied().unwrap_or(0)).sum();
        let want: i64 = expected.iter().filter(|((t, _), _)| *t == store).map(|(_, q)| q[0]).sum();
        assert_eq!(events, want);
    }
    drop(test_db);
    Ok(())
}
