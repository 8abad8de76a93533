//! Readiness checks of a cell.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use nudge_data_plane_directory::Directory;
use nudge_platform_http::ReadinessCheck;
use redis::aio::ConnectionManager;

type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// The process is not draining (SIGTERM received).
pub struct NotDraining(pub Arc<AtomicBool>);

impl ReadinessCheck for NotDraining {
    fn name(&self) -> &'static str {
        "draining"
    }

    fn check(&self) -> CheckFuture<'_> {
        let draining = self.0.load(Ordering::Acquire);
        Box::pin(async move { if draining { Err("shutting down; sockets moved elsewhere".into()) } else { Ok(()) } })
    }
}

/// The tenant directory has read everything published before the cell started.
pub struct DirectoryReady(pub Arc<Directory>);

impl ReadinessCheck for DirectoryReady {
    fn name(&self) -> &'static str {
        "tenant_directory"
    }

    fn check(&self) -> CheckFuture<'_> {
        let ok = self.0.is_caught_up();
        Box::pin(async move { if ok { Ok(()) } else { Err("still reading control.tenants.v1".into()) } })
    }
}

/// The model registry has been read up to where it stood when the cell started.
pub struct ModelsReady(pub Arc<AtomicBool>);

impl ReadinessCheck for ModelsReady {
    fn name(&self) -> &'static str {
        "model_registry"
    }

    fn check(&self) -> CheckFuture<'_> {
        let ok = self.0.load(Ordering::Acquire);
        Box::pin(async move { if ok { Ok(()) } else { Err("still reading control.models.v1".into()) } })
    }
}

/// The stores' campaigns have been read up to where they stood when the cell started.
pub struct CampaignsReady(pub Arc<AtomicBool>);

impl ReadinessCheck for CampaignsReady {
    fn name(&self) -> &'static str {
        "campaigns"
    }

    fn check(&self) -> CheckFuture<'_> {
        let ok = self.0.load(Ordering::Acquire);
        Box::pin(async move { if ok { Ok(()) } else { Err("still reading control.campaigns.v1".into()) } })
    }
}

/// Redis answers.
pub struct RedisReady(pub ConnectionManager);

impl ReadinessCheck for RedisReady {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn check(&self) -> CheckFuture<'_> {
        let mut conn = self.0.clone();
        Box::pin(async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(|e| e.to_string())
        })
    }
}

/// The gateway is subscribed to the cell's intervention channel.
pub struct SubscriptionReady(pub Arc<AtomicBool>);

impl ReadinessCheck for SubscriptionReady {
    fn name(&self) -> &'static str {
        "intervention_subscription"
    }

    fn check(&self) -> CheckFuture<'_> {
        let ok = self.0.load(Ordering::Acquire);
        Box::pin(async move { if ok { Ok(()) } else { Err("not subscribed to the intervention channel".into()) } })
    }
}
