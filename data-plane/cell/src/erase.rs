//! Suppress first, then erase: when a shopper is newly on its store's suppression list (the
//! store asked for it, or an erasure request did), ingest drops their events at once (the
//! directory's list), the pipeline and the idle-cart scanner skip them, and this task deletes
//! what the cell keeps about them in Redis — their feature session, their idle-cart timer,
//! their intervention history and acknowledged ids. Failures are retried; nothing about the
//! shopper is logged but counts.

use std::{sync::Arc, time::Duration};

use nudge_contracts::ShopperId;
use nudge_data_plane_directory::Directory;
use nudge_data_plane_features::store::{SessionKey, idle_member};
use nudge_data_plane_gateway::{hub::ShopperAddress, route::Naming};
use nudge_tenants::TenantId;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

/// Shoppers erased per round trip (a restart erases every suppressed shopper again).
const CHUNK: usize = 200;

/// Where the cell keeps shopper data.
pub struct Places {
    pub prefix: String,
    pub naming: Naming,
    /// The cell's idle-cart schedule (a sorted set).
    pub idle_schedule: String,
}

impl Places {
    /// The Redis keys holding what the cell keeps about `shopper` of `tenant` (besides the
    /// idle-cart timer, a member of [`Places::idle_schedule`]).
    pub fn keys_of(&self, tenant: TenantId, shopper: &ShopperId) -> [String; 3] {
        let session = SessionKey { tenant, shopper: shopper.clone() }.redis_key(&self.prefix);
        let address = ShopperAddress { tenant, shopper: shopper.clone() };
        [session, self.naming.history(&address), self.naming.acked(&address)]
    }
}

/// Deletes everything `places` keeps about each shopper of `batch`.
async fn erase(redis: &mut ConnectionManager, places: &Places, batch: &[(TenantId, String)]) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for (tenant, shopper) in batch {
        // A suppressed id that is not a shopper id was never stored.
        let Ok(shopper) = ShopperId::parse(shopper) else { continue };
        pipe.cmd("UNLINK").arg(&places.keys_of(*tenant, &shopper)[..]).ignore();
        pipe.cmd("ZREM").arg(&places.idle_schedule).arg(idle_member(&SessionKey { tenant: *tenant, shopper })).ignore();
    }
    pipe.query_async::<()>(redis).await
}

/// Erases the data of every newly suppressed shopper until `shutdown`.
pub async fn run(
    directory: Arc<Directory>,
    mut redis: ConnectionManager,
    places: Places,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let pending = directory.take_erasures();
        if pending.is_empty() {
            tokio::select! {
                () = directory.erasures_arrived() => continue,
                () = shutdown.cancelled() => return Ok(()),
            }
        }
        let mut erased = 0;
        let mut chunks = pending.chunks(CHUNK);
        while let Some(chunk) = chunks.next() {
            match erase(&mut redis, &places, chunk).await {
                Ok(()) => erased += chunk.len(),
                Err(e) => {
                    let left: Vec<(TenantId, String)> = chunk.iter().chain(chunks.flatten()).cloned().collect();
                    tracing::warn!(shoppers = left.len(), error = %e, "erasing suppressed shoppers' data failed; retrying");
                    directory.retry_erasures(left);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => return Ok(()),
                    }
                    break;
                }
            }
        }
        if erased > 0 {
            tracing::info!(shoppers = erased, "suppressed shoppers' data erased");
        }
    }
}
