//! The outbox relay deletes published rows once they are older than it keeps them, and
//! never a row still waiting to be published.

use std::{str::FromStr, time::Duration};

use nudge_control_plane::{Database, outbox::Relay};
use nudge_test_support::Platform;
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

async fn counts(platform: &Platform) -> anyhow::Result<(i64, i64)> {
    let mut conn = PgConnection::connect(&platform.db.owner_url).await?;
    let published: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL").fetch_one(&mut conn).await?;
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(&mut conn).await?;
    Ok((published, waiting))
}

#[tokio::test]
async fn published_rows_are_pruned_and_waiting_ones_kept() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    platform.sign_up_ready("Pruned", "https://shop.example.com").await?;
    let (published, _) = counts(&platform).await?;
    assert!(published > 0, "the signup's announcement was published");

    // A row that waits (as if the broker were down): never pruned.
    let mut conn = PgConnection::connect(&platform.db.owner_url).await?;
    sqlx::query(
        "INSERT INTO outbox (topic, record_key, payload, schema_name, schema_version, parked_at)
         VALUES ('nowhere', 'k', 'v', 'x', 1, now())",
    )
    .execute(&mut conn)
    .await?;

    let db = Database::connect_lazy(PgConnectOptions::from_str(&platform.db.app_url)?, 2, Duration::from_secs(5));
    let relay = |keep| -> anyhow::Result<Relay> {
        Ok(Relay::new(db.clone(), &platform.cell_config.kafka, 10, Duration::from_secs(1))?.keeping_published(keep))
    };
    assert_eq!(relay(Duration::from_secs(3600))?.prune_published().await?, 0, "nothing is an hour old yet");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let pruned = relay(Duration::from_secs(1))?.prune_published().await?;
    let (_, waiting) = counts(&platform).await?;
    assert!(pruned as i64 >= published, "{pruned} pruned of {published} published");
    assert_eq!(waiting, 1, "the waiting row is kept");
    let old: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at < now() - interval '2 seconds'")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(old, 0, "no row published before the cut-off is left");

    platform.shutdown().await
}
