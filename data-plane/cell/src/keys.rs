//! Keeping the shoppers' data keys on the current version of their tenant's Transit key.
//!
//! The vault rotates each tenant's key on a schedule (`keys.rotate_every_hours`), or when an
//! operator asks (`bao write -f transit/keys/<name>/rotate`). Stored data keys wrapped with
//! an older version keep working; this task rewraps them with the latest one, inside the
//! vault, and then retires the older versions so that an old wrapped copy found anywhere
//! (a Redis backup, say) no longer unwraps. Sealing and opening go on meanwhile: a rewrapped
//! key holds the same data key (see `nudge_data_plane_keyring::Keyring::rewrap`).

use std::{sync::Arc, time::Duration};

use nudge_data_plane_directory::Directory;
use nudge_data_plane_keyring::Keyring;
use tokio_util::sync::CancellationToken;

/// Rewraps every `interval` until `shutdown`, every tenant served here in one pass over
/// Redis; a failure is logged and tried again at the next round.
pub async fn run(
    keyring: Arc<Keyring>,
    directory: Arc<Directory>,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        if !directory.is_caught_up() {
            continue;
        }
        let tenants: Vec<_> = directory.retention().into_iter().map(|(tenant, _)| tenant).collect();
        match keyring.rewrap(&tenants, chrono::Utc::now().timestamp_millis()).await {
            Ok(done) => {
                for (tenant, done) in done {
                    if done.rewrapped > 0 || done.retired_below.is_some() {
                        tracing::info!(
                            tenant_id = %tenant,
                            keys = done.keys,
                            rewrapped = done.rewrapped,
                            retired_below = ?done.retired_below,
                            "data keys rewrapped"
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "rewrapping data keys failed; retrying next round"),
        }
    }
}
