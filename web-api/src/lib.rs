//! The control plane's HTTP face and the function that runs the whole control plane.
//!
//! # Layout
//!
//! - [`run`]: serves the API on a listener and runs the outbox relay until shutdown.
//! - [`state`]: [`AppState`], what every handler can reach.
//! - [`routes`]: one module per resource, each exporting `router()`.

pub mod routes;
pub mod state;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use axum::middleware::from_fn_with_state;
use nudge_control_plane::{
    ControlPlaneConfig, Database,
    config::ProvisionerKind,
    outbox::Relay,
    placement::{Cell, register_shared_cell},
    provision::{KubernetesProvisioner, LocalProvisioner, Provisioner},
};
use nudge_control_plane::{
    auth::{refresh::RefreshStore, tokens::TokenKeys},
    erasure::{ReceiptSigner, ReportSink},
    routing::TenantRouter,
    usage::UsageSink,
};
use nudge_platform_http::{
    HttpMetrics, Readiness, ReadinessCheck, openapi, ops_router, serve, supervise::serve_supervised, trace_layer,
};
use nudge_platform_kafka::stage::{DeadLetters, StageMetrics, StagePolicy, run_stage};
use nudge_platform_telemetry::Metrics;
use rdkafka::consumer::Consumer;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use state::AdminTokens;
pub use state::AppState;

/// Runs the control plane (API + outbox relay) on `listener` until `shutdown` is cancelled.
/// The database must be migrated (see `nudge migrate`). The API starts at once even when
/// PostgreSQL or the broker is down: it reports not-ready and answers 503 until its start-up
/// work (registering the shared cell, creating the tenant topic) has succeeded.
pub async fn run(config: ControlPlaneConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let db = Database::connect_lazy(
        config.database.runtime_options().map_err(anyhow::Error::msg)?,
        config.database.max_connections,
        Duration::from_millis(config.database.acquire_timeout_ms),
    );
    let router = Arc::new(TenantRouter::new(db.clone(), config.database.clone()));
    let relay = Relay::new(
        db.clone(),
        &config.kafka,
        config.outbox.batch_size,
        Duration::from_millis(config.outbox.poll_interval_ms),
    )?
    .keeping_published(Duration::from_secs(config.outbox.keep_published_hours * 3600));
    let outbox_wake = relay.waker();

    let tokens = Arc::new(TokenKeys::new(
        config.auth.signing_key.as_ref().map(|k| k.expose_secret()),
        Duration::from_secs(config.auth.access_ttl_seconds),
    )?);
    if config.auth.signing_key.is_none() {
        tracing::warn!("auth.signing_key is unset: access tokens are signed with a key that dies with this process");
    }
    let sessions = Arc::new(OnceCell::new());
    let console_redis = Arc::new(OnceCell::new());
    let started = Arc::new(AtomicBool::new(false));
    let bootstrap = tokio::spawn(bootstrap(
        db.clone(),
        config.clone(),
        started.clone(),
        (sessions.clone(), console_redis.clone()),
        shutdown.clone(),
    ));

    let metrics = Metrics::new("control_plane");
    let http_metrics = HttpMetrics::register(&metrics);
    let stage_metrics = StageMetrics::register(&metrics);
    let usage_metrics = nudge_control_plane::usage::UsageMetrics::register(&metrics);
    let readiness =
        Readiness::default().with(Arc::new(DatabaseReady(db.clone()))).with(Arc::new(StartedReady(started.clone())));
    let admin_tokens = AdminTokens(Arc::new(
        config
            .admin
            .tokens
            .iter()
            .map(|(name, token)| (name.clone(), Sha256::digest(token.expose_secret().as_bytes()).into()))
            .collect(),
    ));
    let receipts = ReceiptSigner::new(
        nudge_platform_vault::Vault::new(&config.vault).context("vault")?,
        config.erasure.receipt_key.clone(),
    );
    let (provisioner, kubernetes) = provisioner(&config, &tokens.public_hex()).await?;
    tracing::info!(provisioner = provisioner.kind(), "cells come from this provisioner");
    let purges_started = started.clone();
    let purger = nudge_control_plane::offboarding::Purger {
        router: router.clone(),
        topics: config.kafka.topics(),
        signer: receipts.clone(),
        vault: nudge_platform_vault::Vault::new(&config.vault).context("vault")?,
        tenant_key_prefix: config.offboarding.tenant_key_prefix.clone(),
        provisioner: provisioner.clone(),
    };
    // Billing through Stripe, when a key is configured.
    let billing = match &config.billing.stripe_secret_key {
        Some(key) => Some(nudge_control_plane::billing::BillingSync {
            router: router.clone(),
            stripe: nudge_control_plane::stripe::Stripe::new(
                &config.billing.stripe_api_url,
                key.clone(),
                &config.billing.item_param,
                Duration::from_millis(config.billing.request_timeout_ms),
            )
            .context("Stripe client")?,
            prices: config.billing.prices.clone(),
        }),
        None => {
            tracing::info!("billing is off: no billing.stripe_secret_key");
            None
        }
    };
    let state = AppState {
        db,
        router: router.clone(),
        topics: config.kafka.topics(),
        provisioner,
        outbox_wake: outbox_wake.clone(),
        admin_tokens,
        started,
        tokens,
        sessions,
        receipts: receipts.clone(),
        offboarding_grace: chrono::Duration::days(i64::from(config.offboarding.grace_days)),
        onnxruntime_library: config.models.onnxruntime_library.clone().map(Arc::new),
        billing_enabled: billing.is_some(),
        stripe: billing.as_ref().map(|b| b.stripe.clone()),
        portal_return_url: Arc::from(config.billing.portal_return_url.as_str()),
        webhooks: (!config.billing.webhook_secrets.is_empty()).then(|| nudge_control_plane::webhooks::Webhooks {
            router: router.clone(),
            topics: config.kafka.topics(),
            dunning: config.billing.dunning,
            stripe: billing.as_ref().map(|b| b.stripe.clone()),
        }),
        webhook_secrets: config.billing.webhook_secrets.clone().into(),
        webhook_tolerance_secs: config.billing.webhook_tolerance_secs,
        loopback_webhooks: config.campaigns.allow_loopback_webhooks,
        vault: nudge_platform_vault::Vault::new(&config.vault).context("vault")?,
    };

    let (http, _) = openapi::with_document(
        OpenApiRouter::new().merge(routes::router()).with_state(state).merge(ops_router(readiness, metrics)),
        "Nudge control plane",
        "Self-service signup and the management API of Nudge.",
    );
    // The console renders pages from this same API, called in-process with the member's token.
    let console = nudge_console::router(
        http.clone(),
        console_redis,
        nudge_console::ConsoleConfig {
            redis_prefix: config.redis.prefix.clone(),
            idle_timeout: Duration::from_secs(
                (config.console.session_idle_minutes * 60).min(config.auth.refresh_ttl_seconds),
            ),
            public_origin: (!config.console.public_origin.is_empty())
                .then(|| config.console.public_origin.trim_end_matches('/').to_owned()),
        },
    );
    let http = http.merge(console).layer(from_fn_with_state(http_metrics, trace_layer));

    tracing::info!(addr = %listener.local_addr()?, "control plane listening");
    let run_relay = relay.run(shutdown.clone());
    let relay = tokio::spawn(async move {
        run_relay.await;
        Ok(())
    });
    // Usage reports from the cells, each stored once.
    let usage = consume(
        &config,
        "usage",
        nudge_contracts::Topic::Usage,
        Arc::new(UsageSink { router: router.clone(), topics: config.kafka.topics(), metrics: usage_metrics }),
        stage_metrics.clone(),
        shutdown.clone(),
    )?;
    // The cells' erasure reports, which finish erasure requests.
    let erasures = consume(
        &config,
        "erasures",
        nudge_contracts::Topic::ErasureReports,
        Arc::new(ReportSink {
            router: router.clone(),
            topics: config.kafka.topics(),
            signer: receipts,
            outbox_wake: outbox_wake.clone(),
        }),
        stage_metrics,
        shutdown.clone(),
    )?;
    // With the operator placing tenants, routes follow its placements (a Tenant moved by
    // `cellRef`, a cell's new URL).
    let routes = match kubernetes {
        Some(kubernetes) => {
            // The announcements it enqueues go out with the relay's next poll.
            let (router, topics, stop) = (router.clone(), config.kafka.topics(), shutdown.clone());
            Some(tokio::spawn(async move {
                kubernetes.follow_routes(&router, &topics, Duration::from_secs(15), stop).await;
                anyhow::Ok(())
            }))
        }
        None => None,
    };
    // Stores whose offboarding's grace period has ended are purged.
    let purges = tokio::spawn(sweep_offboardings(
        purger,
        purges_started,
        Duration::from_millis(config.offboarding.sweep_interval_ms),
        outbox_wake.clone(),
        shutdown.clone(),
    ));
    // Stripe follows the stores: customers, subscriptions, plan changes, cancellations, and
    // the ledger's usage.
    let meters = match (&billing, config.billing.report_usage) {
        (Some(sync), true) => Some(nudge_control_plane::meters::MeterReporter {
            router: sync.router.clone(),
            stripe: match &config.billing.meter_events_url {
                Some(url) => nudge_control_plane::stripe::Stripe::new(
                    url,
                    config.billing.stripe_secret_key.clone().unwrap_or_else(|| secrecy::SecretString::from("")),
                    &config.billing.item_param,
                    Duration::from_millis(config.billing.request_timeout_ms),
                )
                .context("Stripe client for meter events")?,
                None => sync.stripe.clone(),
            },
            delay: chrono::Duration::seconds(i64::try_from(config.billing.meter_delay_secs).unwrap_or(600)),
        }),
        _ => None,
    };
    let billing = billing.map(|sync| {
        tokio::spawn(sync_billing(
            sync,
            meters,
            config.billing.create_prices,
            Duration::from_millis(config.billing.sync_interval_ms),
            shutdown.clone(),
        ))
    });
    let dedicated_relays = tokio::spawn(relay_dedicated(router, config.clone(), outbox_wake, shutdown.clone()));
    let mut tasks = vec![
        ("outbox relay", relay),
        ("start-up", bootstrap),
        ("dedicated outbox relays", dedicated_relays),
        ("usage consumer", usage),
        ("erasure report consumer", erasures),
        ("offboarding sweep", purges),
    ];
    if let Some(routes) = routes {
        tasks.push(("route follower", routes));
    }
    if let Some(billing) = billing {
        tasks.push(("billing sync", billing));
    }
    serve_supervised(serve(listener, http, shutdown.clone()), tasks, shutdown).await
}

/// Runs the offboarding purge every `interval` once start-up is done, until `shutdown`; a
/// sweep that fails is logged and tried again at the next interval.
async fn sweep_offboardings(
    purger: nudge_control_plane::offboarding::Purger,
    started: Arc<AtomicBool>,
    interval: Duration,
    outbox_wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        if !started.load(std::sync::atomic::Ordering::Acquire) {
            continue;
        }
        match purger.sweep(chrono::Utc::now()).await {
            Ok(swept) => {
                if !(swept.started.is_empty() && swept.deleted.is_empty()) {
                    outbox_wake.notify_waiters();
                    outbox_wake.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = %e, "the offboarding sweep failed; trying again at the next interval"),
        }
    }
}

/// Keeps Stripe in step with the stores every `interval` (making the plans' prices first when
/// `create_prices`), until `shutdown`; a sweep that fails is logged and tried again.
async fn sync_billing(
    sync: nudge_control_plane::billing::BillingSync,
    meters: Option<nudge_control_plane::meters::MeterReporter>,
    create_prices: bool,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut prices_made = !create_prices;
    loop {
        if !prices_made {
            match sync.create_prices().await {
                Ok(()) => prices_made = true,
                Err(e) => tracing::warn!(error = %e, "the plans' prices could not be made in Stripe; trying again"),
            }
        }
        if prices_made {
            let swept = tokio::select! {
                swept = sync.sweep() => swept,
                () = shutdown.cancelled() => return Ok(()),
            };
            if let Err(e) = swept {
                tracing::warn!(error = %e, "the billing sync failed; trying again at the next interval");
            }
            if let Some(meters) = &meters {
                let sent = tokio::select! {
                    sent = meters.sweep(chrono::Utc::now()) => sent,
                    () = shutdown.cancelled() => return Ok(()),
                };
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "usage could not be sent to Stripe; trying again at the next interval");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Runs a stage that consumes `topic` as consumer group `group` with `handler`; records that
/// keep failing go to the dead-letter topic.
fn consume(
    config: &ControlPlaneConfig,
    group: &'static str,
    topic: nudge_contracts::Topic,
    handler: Arc<dyn nudge_platform_kafka::stage::Handler>,
    metrics: StageMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let consumer = nudge_platform_kafka::group_consumer(&config.kafka, &format!("control-plane-{group}"), group)?;
    consumer.subscribe(&[config.kafka.topics().name(topic).as_str()])?;
    let stage = run_stage(
        consumer,
        handler,
        DeadLetters::new(
            nudge_platform_kafka::SharedProducer::new(&config.kafka, &format!("control-plane-{group}-dlq"))?,
            config.kafka.topics().name(nudge_contracts::Topic::EventsDlq),
        ),
        StagePolicy {
            name: group,
            max_attempts: 5,
            retry_backoff: Duration::from_millis(200),
            max_unavailable_backoff: Duration::from_secs(2),
        },
        metrics,
        shutdown,
    );
    Ok(tokio::spawn(async move {
        stage.await;
        Ok(())
    }))
}

/// Registers the shared cell and the bundled models, creates the control topics and
/// connects the session store, retrying until all succeed.
async fn bootstrap(
    db: Database,
    config: ControlPlaneConfig,
    started: Arc<AtomicBool>,
    (sessions, console_redis): (Arc<OnceCell<RefreshStore>>, Arc<OnceCell<ConnectionManager>>),
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            if config.placement.provisioner == ProvisionerKind::Local {
                register_shared_cell(&db, &config.placement).await?;
            }
            // Topics first: a record published to a topic that does not exist yet would
            // create it with the broker's defaults (not compacted, small records).
            nudge_platform_kafka::ensure_topics(
                &config.kafka,
                &[
                    nudge_contracts::Topic::ControlTenants,
                    nudge_contracts::Topic::ControlModels,
                    nudge_contracts::Topic::ControlCampaigns,
                    nudge_contracts::Topic::Usage,
                    nudge_contracts::Topic::ErasureReports,
                    nudge_contracts::Topic::EventsDlq,
                ],
            )
            .await?;
            nudge_control_plane::registry::register_bundled(&db, &config.kafka.topics()).await?;
            if sessions.get().is_none() {
                let timeout = Duration::from_millis(config.redis.response_timeout_ms);
                let client = redis::Client::open(config.redis.url.expose_secret())?;
                let redis = ConnectionManager::new_with_config(
                    client,
                    ConnectionManagerConfig::new()
                        .set_response_timeout(Some(timeout))
                        .set_connection_timeout(Some(timeout))
                        .set_number_of_retries(1),
                )
                .await?;
                let _ = console_redis.set(redis.clone());
                let store = RefreshStore::new(
                    redis,
                    config.redis.prefix.clone(),
                    Duration::from_secs(config.auth.refresh_ttl_seconds),
                    config.auth.sign_in_limit(),
                );
                // Only this task sets it; a second set cannot happen.
                let _ = sessions.set(store);
            }
            anyhow::Ok(())
        };
        match attempt.await {
            Ok(()) => {
                started.store(true, Ordering::Release);
                tracing::info!("control plane start-up complete");
                // Stay alive until shutdown: the supervisor treats an early end as a failure.
                shutdown.cancelled().await;
                return Ok(());
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                retry_in_ms = backoff.as_millis() as u64,
                "start-up step failed"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Runs an outbox relay for every dedicated database, starting one for each database the
/// registry gains.
async fn relay_dedicated(
    router: Arc<TenantRouter>,
    config: ControlPlaneConfig,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Each database's relay, stopped when the database leaves the registry (dropped with
    // its offboarded store).
    let mut running: std::collections::HashMap<String, tokio::task::AbortHandle> = std::collections::HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        match router.dedicated_databases().await {
            Ok(names) => {
                running.retain(|name, relay| {
                    let keep = names.contains(name);
                    if !keep {
                        relay.abort();
                        tracing::info!(database = %name, "outbox relay stopped: the database is gone");
                    }
                    keep
                });
                for name in names {
                    if running.contains_key(&name) {
                        continue;
                    }
                    let db = router.pool_for(&name)?;
                    let relay = Relay::new(
                        db,
                        &config.kafka,
                        config.outbox.batch_size,
                        Duration::from_millis(config.outbox.poll_interval_ms),
                    )?
                    .keeping_published(Duration::from_secs(config.outbox.keep_published_hours * 3600))
                    .woken_by(wake.clone());
                    tracing::info!(database = %name, "outbox relay started for a dedicated database");
                    running.insert(name, tasks.spawn(relay.run(shutdown.clone())));
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing dedicated databases"),
        }
        // Reap relays that ended (aborted ones among them).
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Start-up work is done.
struct StartedReady(Arc<AtomicBool>);

impl ReadinessCheck for StartedReady {
    fn name(&self) -> &'static str {
        "start_up"
    }

    fn check(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        let done = self.0.load(Ordering::Acquire);
        Box::pin(async move {
            if done { Ok(()) } else { Err("registering the shared cell, creating topics, reaching Redis".into()) }
        })
    }
}

struct DatabaseReady(Database);

impl ReadinessCheck for DatabaseReady {
    fn name(&self) -> &'static str {
        "database"
    }

    fn check(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
}

/// The provisioner `placement.provisioner` names (and, when it is Kubernetes, the same
/// provisioner typed, for the route follower). Cells a local provisioner starts use the
/// control plane's broker and Redis, under prefixes of their own, and verify members' access
/// tokens with `token_public_key`.
async fn provisioner(
    config: &ControlPlaneConfig,
    token_public_key: &str,
) -> anyhow::Result<(Arc<dyn Provisioner>, Option<Arc<KubernetesProvisioner>>)> {
    let placement = &config.placement;
    Ok(match placement.provisioner {
        ProvisionerKind::Local => {
            let shared = Cell { id: placement.shared_cell_id.clone(), public_url: placement.shared_cell_url.clone() };
            let mut env = vec![
                ("NUDGE_CELL__KAFKA__BROKERS".to_owned(), config.kafka.brokers.clone()),
                ("NUDGE_CELL__REDIS__URL".to_owned(), config.redis.url.expose_secret().to_owned()),
                ("NUDGE_CELL__REDIS__PREFIX".to_owned(), format!("{}cells:", config.redis.prefix)),
                // The platform's vault wraps the dedicated cell's shopper data keys too.
                ("NUDGE_CELL__VAULT__ADDRESS".to_owned(), config.vault.address.clone()),
                ("NUDGE_CELL__VAULT__TOKEN".to_owned(), config.vault.token.expose_secret().to_owned()),
                ("NUDGE_CELL__VAULT__TRANSIT_MOUNT".to_owned(), config.vault.transit_mount.clone()),
                ("NUDGE_CELL__MEMBERS__TOKEN_PUBLIC_KEYS".to_owned(), format!("[\"{token_public_key}\"]")),
            ];
            if config.kafka.partitions_override > 0 {
                env.push((
                    "NUDGE_CELL__KAFKA__PARTITIONS_OVERRIDE".to_owned(),
                    config.kafka.partitions_override.to_string(),
                ));
            }
            (Arc::new(LocalProvisioner::new(shared, placement.local.clone(), config.kafka.prefix.clone(), env)), None)
        }
        ProvisionerKind::Kubernetes => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| anyhow::anyhow!("placement.provisioner is kubernetes but no cluster is reachable: {e}"))?;
            let kubernetes = Arc::new(KubernetesProvisioner::new(
                client,
                placement.kubernetes.clone(),
                config.database.dedicated_url_template.clone(),
            ));
            (kubernetes.clone(), Some(kubernetes))
        }
    })
}
