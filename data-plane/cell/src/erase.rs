//! Suppress first, then erase: when a shopper is newly on its store's suppression list (the
//! store asked for it, or an erasure request did), ingest drops their events at once (the
//! directory's list), and this task deletes what the cell keeps about them in Redis — their
//! feature session, their intervention history and acknowledged ids. Failures are retried;
//! nothing about the shopper is logged but counts.

use std::{sync::Arc, time::Duration};

use nudge_contracts::ShopperId;
use nudge_data_plane_directory::Directory;
use nudge_data_plane_features::store::SessionKey;
use nudge_data_plane_gateway::{hub::ShopperAddress, route::Naming};
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

/// The Redis keys holding what the cell keeps about `shopper` of `tenant`.
pub fn keys_of(prefix: &str, naming: &Naming, tenant: nudge_tenants::TenantId, shopper: ShopperId) -> [String; 3] {
    let session = SessionKey { tenant, shopper: shopper.clone() }.redis_key(prefix);
    let address = ShopperAddress { tenant, shopper };
    [session, naming.history(&address), naming.acked(&address)]
}

/// Erases the data of every newly suppressed shopper until `shutdown`.
pub async fn run(
    directory: Arc<Directory>,
    mut redis: ConnectionManager,
    prefix: String,
    naming: Naming,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let batch = directory.take_erasures();
        if batch.is_empty() {
            tokio::select! {
                () = directory.erasures_arrived() => continue,
                () = shutdown.cancelled() => return Ok(()),
            }
        }
        let keys: Vec<String> = batch
            .iter()
            // A suppressed id that is not a shopper id was never stored.
            .filter_map(|(tenant, shopper)| {
                ShopperId::parse(shopper).ok().map(|s| keys_of(&prefix, &naming, *tenant, s))
            })
            .flatten()
            .collect();
        if keys.is_empty() {
            continue;
        }
        let deleted: redis::RedisResult<u64> = redis::cmd("DEL").arg(&keys).query_async(&mut redis).await;
        match deleted {
            Ok(deleted) => {
                tracing::info!(shoppers = batch.len(), keys_deleted = deleted, "suppressed shoppers' data erased")
            }
            Err(e) => {
                tracing::warn!(shoppers = batch.len(), error = %e, "erasing suppressed shoppers' data failed; retrying");
                directory.retry_erasures(batch);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
}
