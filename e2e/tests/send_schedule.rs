//! The delayed sends' schedule in a real Redis: a send is scheduled once however often its
//! decision is replayed, claimed with a lease, taken only by the process still holding the
//! claim (a second process that claimed it after the first one's lease ran out sends it,
//! the first does not), never scheduled again once settled, and a purchase's cancellation
//! takes every send pending for the shopper off the schedule.

use nudge_data_plane_channels::store::{ChannelStore, PendingSend};
use nudge_tenants::TenantId;
use nudge_test_support::{env::TestEnv, unique_suffix};

fn send(tenant: TenantId, id: &str, shopper: &str, due_ms: i64) -> PendingSend {
    PendingSend {
        id: id.to_owned(),
        tenant,
        shopper: shopper.to_owned(),
        subject: "digest".into(),
        channel: "email".into(),
        campaign_id: "cmp_0123".into(),
        version: 1,
        variant: "a".into(),
        transactional: false,
        campaign_cap: None,
        intervention_id: format!("iv-{id}"),
        cause_event_id: format!("ev-{id}"),
        decided_at_ms: due_ms,
        due_ms,
        attempts: 0,
        sealed: vec![1, 2, 3],
    }
}

#[tokio::test]
async fn claims_leases_and_cancellation_keep_every_send_to_one_sender() -> anyhow::Result<()> {
    let client = redis::Client::open(TestEnv::load().redis_url.as_str())?;
    let store =
        ChannelStore::new(client.get_connection_manager().await?, format!("nudge-test:{}:", unique_suffix()), "c1");
    let tenant = TenantId::new();
    let t0 = 1_800_000_000_000;

    let first = send(tenant, "s1", "shp_a", t0);
    assert!(store.schedule_send(&first).await?);
    assert!(!store.schedule_send(&first).await?, "a replayed decision schedules nothing more");
    assert_eq!(store.pending(tenant, "s1").await?, Some(first.clone()));

    // Process A claims it with a lease to t0 + 1 s; nothing is due for anyone else then.
    assert_eq!(store.claim(t0, t0 + 1_000, 10).await?, vec![(tenant, "s1".to_owned())]);
    assert!(store.claim(t0 + 500, t0 + 1_500, 10).await?.is_empty());
    // A is slow; its lease runs out and process B claims the send.
    assert_eq!(store.claim(t0 + 2_000, t0 + 3_000, 10).await?, vec![(tenant, "s1".to_owned())]);
    assert!(!store.renew(tenant, "s1", t0 + 1_000, t0 + 9_000).await?, "A no longer holds it");
    assert!(store.renew(tenant, "s1", t0 + 3_000, t0 + 9_000).await?, "B does");
    store.settle(tenant, "s1", "shp_a").await?;
    assert_eq!(store.pending(tenant, "s1").await?, None);
    assert!(!store.schedule_send(&first).await?, "a settled send is never scheduled again");

    // A purchase cancels everything pending for the shopper, and only theirs.
    for (id, shopper) in [("s2", "shp_b"), ("s3", "shp_b"), ("s4", "shp_c")] {
        assert!(store.schedule_send(&send(tenant, id, shopper, t0)).await?);
    }
    let mut cancelled: Vec<String> = store.cancel_shopper(tenant, "shp_b").await?.into_iter().map(|c| c.id).collect();
    cancelled.sort();
    assert_eq!(cancelled, ["s2", "s3"]);
    assert!(!store.renew(tenant, "s2", t0, t0 + 1).await?, "a cancelled send cannot be taken");
    assert_eq!(store.claim(t0 + 10_000, t0 + 11_000, 10).await?, vec![(tenant, "s4".to_owned())]);
    assert!(!store.schedule_send(&send(tenant, "s2", "shp_b", t0)).await?, "nor scheduled again");
    // Another store's shopper of the same id is untouched.
    let other = TenantId::new();
    assert!(store.schedule_send(&send(other, "s5", "shp_c", t0)).await?);
    assert!(store.cancel_shopper(tenant, "shp_c").await?.iter().all(|c| c.id == "s4"));
    assert!(store.pending(other, "s5").await?.is_some());
    Ok(())
}
