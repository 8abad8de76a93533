//! A data-plane cell: every capability of the data plane wired into one process.
//!
//! # Layout
//!
//! - [`run`]: starts the cell on a listener and runs it until shutdown.
//! - [`config`]: the cell's configuration, [`CellConfig`].
//! - [`validator`]: the stage `events.raw` → `events.validated` (poison to `events.dlq`).
//! - [`pipeline`]: the stage `events.validated` → features → model → decision → intervention,
//!   each effect once per (tenant, event id).
//! - [`idle`]: server-side abandonment detection, `cart_idle` events for carts gone quiet.
//! - [`sealing`]: records naming a shopper travel sealed with the shopper's data key.
//! - [`keys`]: rewrapping the data keys after the vault rotates a tenant's key.
//! - [`erase`], [`retention`], [`export`]: GDPR erasure, retention and access.
//! - [`models`]: following the model registry: models loaded, swapped and dropped live.
//! - [`usage`]: per-tenant counts to `usage.v1`.
//! - [`readiness`]: what `/readyz` checks.
//! - [`snippet`]: serves `nudge.js`, the browser snippet.

pub mod campaigns;
pub mod config;
pub mod dry_run;
pub mod erase;
pub mod export;
pub mod idle;
pub mod keys;
pub mod lift_report;
pub mod messages;
pub mod models;
pub mod pipeline;
pub mod readiness;
pub mod recent;
pub mod retention;
pub mod sealing;
pub mod send_log;
pub mod sends;
pub mod snippet;
pub mod unsubscribe;
pub mod usage;
pub mod validator;

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context as _;
use axum::middleware::from_fn_with_state;
use nudge_contracts::Topic;
use nudge_data_plane_directory::Directory;
use nudge_data_plane_directory::session::SessionSigner;
use nudge_data_plane_features::store::SessionStore;
use nudge_data_plane_gateway::{
    GatewayMetrics, GatewayState, Hub,
    hub::heartbeat,
    route::{AckWriter, History, InterventionPublisher, Naming},
    socket::CLOSE_SERVICE_RESTART,
};
use nudge_data_plane_inference::{Model, ModelSet, Scorers, bundled, init_runtime};
use nudge_data_plane_ingest::{
    IngestState, dedup::RedisDedup, routes::IngestMetrics, sink::KafkaSink, usage::UsageCounters,
};
use nudge_data_plane_keyring::Keyring;
use nudge_platform_http::{
    HttpMetrics, Readiness, openapi, ops_router, serve,
    supervise::{Task, serve_supervised},
    trace_layer,
};
use nudge_platform_kafka::{
    SharedProducer,
    stage::{DeadLetters, Handler, StageMetrics, StagePolicy, run_stage},
};
use nudge_platform_telemetry::Metrics;
use rdkafka::consumer::Consumer;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

pub use config::CellConfig;

/// Runs a cell on `listener` until `shutdown` is cancelled, then drains: readiness turns
/// false, every socket is closed with 1012 (reconnect elsewhere) and new ones are refused,
/// requests are still served for `drain.grace_ms`, and then everything stops.
///
/// `roles` decides what this process does: `ingest` (events, session tokens, the feature
/// read API, the snippet), `pipeline` (the stages, idle carts, models), `gateway` (sockets).
/// One process may do all three; the processes of a cell share its topics, Redis prefix
/// and session secrets, so an intervention decided by any pipeline reaches the socket on
/// whichever gateway holds it.
pub async fn run(config: CellConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let roles = config.roles;
    let draining = Arc::new(AtomicBool::new(false));
    let requested = shutdown;
    // What actually stops the server and the tasks, once the drain is over.
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new("cell");
    let sessions = Arc::new(SessionSigner::new(&config.sessions).context("sessions")?);
    let topics = config.kafka.topics();
    nudge_platform_kafka::ensure_topics(&config.kafka, &Topic::ALL).await.context("creating topics")?;
    let mut tasks: Vec<Task> = Vec::new();
    let mut router = OpenApiRouter::new();

    // Tenants, from control.tenants.v1.
    let directory = Arc::new(Directory::new(config.cell_id.clone()));
    directory.accept_member_tokens(
        nudge_tenants::access::AccessVerifier::from_hex(&config.members.token_public_keys)
            .context("members.token_public_keys")?,
    );
    if roles.pipeline {
        // Before the topic is read: a shopper suppressed before this start is erased again.
        directory.enable_erasures();
    }
    tasks.push(("tenant directory", {
        let (directory, kafka, shutdown) = (directory.clone(), config.kafka.clone(), shutdown.clone());
        tokio::spawn(async move { Ok(nudge_data_plane_directory::follow(directory, kafka, shutdown).await?) })
    }));

    // Redis: sessions, histories and the intervention channels.
    let redis_client = redis::Client::open(config.redis.url.expose_secret()).context("redis.url")?;
    let redis_timeout = Duration::from_millis(config.redis.response_timeout_ms);
    let redis = ConnectionManager::new_with_config(
        redis_client.clone(),
        ConnectionManagerConfig::new()
            .set_response_timeout(Some(redis_timeout))
            .set_connection_timeout(Some(redis_timeout))
            .set_number_of_retries(2),
    )
    .await
    .context("connecting to redis")?;
    let naming = Naming::new(&config.redis.prefix, &config.cell_id);
    // Shopper data keys (crypto-shredding), wrapped by their tenant's Transit key.
    let vault = nudge_platform_vault::Vault::new(&config.vault).context("vault")?;
    let keyring = Arc::new(Keyring::new(
        vault,
        directory.clone(),
        redis.clone(),
        config.redis.prefix.clone(),
        config.keys.clone(),
        &metrics,
    ));
    let mut readiness = Readiness::default()
        .with(Arc::new(readiness::NotDraining(draining.clone())))
        .with(Arc::new(readiness::DirectoryReady(directory.clone())))
        .with(Arc::new(readiness::RedisReady(redis.clone())));

    let usage = Arc::new(UsageCounters::default());
    let producer = SharedProducer::new(&config.kafka, &format!("cell-{}-stages", config.cell_id))?;
    if roles.pipeline {
        readiness = pipeline_role(
            &config,
            &metrics,
            &directory,
            &redis,
            &keyring,
            &naming,
            &usage,
            &producer,
            &shutdown,
            &mut tasks,
            &mut router,
        )?
        .into_iter()
        .fold(readiness, |r, check| r.with(check));
    }
    if roles.pipeline {
        // Suppress first (ingest drops the shopper's events), then erase what is kept here.
        tasks.push((
            "erasure",
            tokio::spawn(erase::run(
                directory.clone(),
                redis.clone(),
                keyring.clone(),
                erase::Places {
                    prefix: config.redis.prefix.clone(),
                    naming: Naming::new(&config.redis.prefix, &config.cell_id),
                    idle_schedule: SessionStore::new(redis.clone(), config.redis.prefix.clone())
                        .for_cell(&config.cell_id)
                        .idle_schedule()
                        .to_owned(),
                    channels: nudge_data_plane_channels::store::ChannelStore::new(
                        redis.clone(),
                        config.redis.prefix.clone(),
                        &config.cell_id.to_string(),
                    ),
                },
                erase::Outputs {
                    producer: producer.clone(),
                    features_topic: topics.name(Topic::Features),
                    reports_topic: topics.name(Topic::ErasureReports),
                    cell: config.cell_id.clone(),
                    settle: Duration::from_millis(config.erasure.settle_ms),
                },
                shutdown.clone(),
            )),
        ));
    }
    if roles.pipeline {
        // Nothing derived from a shopper outlives their store's retention.
        let retention = retention::Retention {
            redis: redis.clone(),
            keyring: keyring.clone(),
            prefix: config.redis.prefix.clone(),
            producer: producer.clone(),
            features_topic: topics.name(Topic::Features),
            batch: config.retention.batch.max(1),
        };
        let interval = Duration::from_millis(config.retention.interval_ms.max(1000));
        tasks.push((
            "retention",
            tokio::spawn(retention::run(retention, directory.clone(), interval, shutdown.clone())),
        ));
        // After the vault rotates a tenant's key, stored data keys move to the new version
        // and the old versions are retired.
        tasks.push((
            "data key rewrap",
            tokio::spawn(keys::run(
                keyring.clone(),
                directory.clone(),
                Duration::from_millis(config.keys.rewrap_interval_ms),
                shutdown.clone(),
            )),
        ));
    }
    // Cancelled once the acknowledgement writer has counted its last deliveries, which the
    // usage reporter's last report waits for.
    let acks_counted = roles.gateway.then(CancellationToken::new);
    if roles.ingest || roles.pipeline || roles.gateway {
        tasks.push((
            "usage reporter",
            tokio::spawn(usage::report(
                usage.clone(),
                producer,
                topics.name(Topic::Usage),
                config.cell_id.clone(),
                Duration::from_millis(config.usage.interval_ms),
                shutdown.clone(),
                acks_counted.clone(),
            )),
        ));
    }

    let hub = Arc::new(Hub::default());
    if roles.gateway {
        // This process's sockets, its subscriptions to the channels of the tenants it holds
        // sockets for, and one keepalive task for all of them.
        let subscribed = Arc::new(AtomicBool::new(false));
        let subscribe = nudge_data_plane_gateway::subscriber::subscribe(
            redis_client,
            naming.clone(),
            hub.clone(),
            nudge_data_plane_gateway::subscriber::RouteMetrics::register(&metrics),
            subscribed.clone(),
            shutdown.clone(),
        );
        tasks.push((
            "intervention subscriber",
            tokio::spawn(async move {
                subscribe.await;
                Ok(())
            }),
        ));
        let beat = heartbeat(
            hub.clone(),
            directory.clone(),
            config.gateway.ping_interval(),
            config.gateway.idle_timeout(),
            shutdown.clone(),
        );
        tasks.push((
            "socket keepalive",
            tokio::spawn(async move {
                beat.await;
                Ok(())
            }),
        ));
        // The sockets held per store, sampled for its usage (peak connections).
        tasks.push((
            "connection sampler",
            tokio::spawn(usage::sample_connections(
                hub.clone(),
                usage.clone(),
                Duration::from_millis(config.usage.connection_sample_ms),
                shutdown.clone(),
            )),
        ));
        let gateway_metrics = GatewayMetrics::register(&metrics);
        let history = History::new(redis.clone(), naming.clone(), config.gateway.history.clone());
        // Interventions count as delivered once a browser acknowledges them.
        let delivered: nudge_data_plane_gateway::route::DeliveredSink = {
            let usage = usage.clone();
            Arc::new(move |tenant, n| usage.delivered(tenant, n))
        };
        let (acks, write_acks) =
            AckWriter::new(history.clone(), gateway_metrics.ack_failures(), delivered, shutdown.clone());
        tasks.push((
            "acknowledgement writer",
            tokio::spawn({
                let counted = acks_counted.clone();
                async move {
                    write_acks.await;
                    if let Some(counted) = counted {
                        counted.cancel();
                    }
                    Ok(())
                }
            }),
        ));
        let gateway = GatewayState {
            config: config.gateway.clone(),
            directory: directory.clone(),
            hub: hub.clone(),
            sessions: sessions.clone(),
            history,
            acks,
            metrics: gateway_metrics,
            draining: draining.clone(),
        };
        router = router.merge(nudge_data_plane_gateway::router().with_state(Arc::new(gateway)));
        readiness = readiness.with(Arc::new(readiness::SubscriptionReady(subscribed)));
    }

    if roles.ingest {
        let sink = KafkaSink::new(
            &config.kafka,
            &format!("cell-{}-ingest", config.cell_id),
            topics.name(Topic::EventsRaw),
            config.ingest.ack_timeout(),
            config.ingest.max_queued_records,
        )?;
        let ingest = IngestState {
            directory: directory.clone(),
            limiter: Arc::new(nudge_data_plane_ingest::limits::RateLimiter::default()),
            dedup: Arc::new(RedisDedup::new(redis.clone(), config.redis.prefix.clone())),
            usage,
            sink: Arc::new(sink),
            keyring: keyring.clone(),
            config: config.ingest.clone(),
            metrics: IngestMetrics::register(&metrics),
            sessions,
        };
        let features = nudge_data_plane_features::api::FeaturesState {
            directory: directory.clone(),
            store: SessionStore::new(redis.clone(), config.redis.prefix.clone()).for_cell(&config.cell_id),
        };
        let export = export::ExportState {
            directory: directory.clone(),
            redis: redis.clone(),
            places: Arc::new(erase::Places {
                prefix: config.redis.prefix.clone(),
                naming: Naming::new(&config.redis.prefix, &config.cell_id),
                idle_schedule: SessionStore::new(redis.clone(), config.redis.prefix.clone())
                    .for_cell(&config.cell_id)
                    .idle_schedule()
                    .to_owned(),
                channels: nudge_data_plane_channels::store::ChannelStore::new(
                    redis.clone(),
                    config.redis.prefix.clone(),
                    &config.cell_id.to_string(),
                ),
            }),
        };
        let send_log = send_log::SendLogState {
            directory: directory.clone(),
            store: nudge_data_plane_channels::store::ChannelStore::new(
                redis.clone(),
                config.redis.prefix.clone(),
                &config.cell_id.to_string(),
            ),
        };
        let unsubscribe = unsubscribe::UnsubscribeState {
            links: Arc::new(unsubscribe::UnsubscribeLinks::new(
                config.sessions.secrets.clone(),
                &config.channels.public_url,
            )),
            directory: directory.clone(),
            store: nudge_data_plane_channels::store::ChannelStore::new(
                redis.clone(),
                config.redis.prefix.clone(),
                &config.cell_id.to_string(),
            ),
        };
        let lift = lift_report::LiftState {
            directory: directory.clone(),
            outcomes: nudge_data_plane_channels::outcomes::OutcomeStore::new(
                redis.clone(),
                config.redis.prefix.clone(),
            ),
        };
        router = router
            .merge(nudge_data_plane_ingest::router().with_state(ingest))
            .merge(nudge_data_plane_features::api::router().with_state(features))
            .merge(export::router().with_state(export))
            .merge(send_log::router().with_state(send_log))
            .merge(lift_report::router().with_state(lift))
            .merge(recent::router().with_state(recent::RecentState {
                directory: directory.clone(),
                log: recent::RecentEventLog::new(redis.clone(), config.redis.prefix.clone()),
            }))
            .merge(messages::router().with_state(messages::MessagesState::new(
                directory.clone(),
                InterventionPublisher::new(redis.clone(), naming.clone(), config.gateway.history.clone()),
                redis.clone(),
                &config.redis.prefix,
            )))
            .merge(unsubscribe::router().with_state(unsubscribe))
            .merge(snippet::router());
    }

    let http_metrics = HttpMetrics::register(&metrics);
    let (router, _) = openapi::with_document(
        router.merge(ops_router(readiness, metrics)),
        "Nudge cell",
        "Event intake, shopper sockets, the feature read API and the browser snippet of a Nudge data-plane cell.",
    );
    let router = router.layer(from_fn_with_state(http_metrics, trace_layer));

    tokio::spawn(drain(requested, draining, hub, config.clone(), shutdown.clone()));

    tracing::info!(addr = %listener.local_addr()?, cell_id = %config.cell_id, ?roles, "cell listening");
    serve_supervised(serve(listener, router, shutdown.clone()), tasks, shutdown).await
}

/// The stages (validator, pipeline), the idle-cart scanner and the models they score with;
/// the readiness checks they add.
#[allow(clippy::too_many_arguments)]
fn pipeline_role(
    config: &CellConfig,
    metrics: &Metrics,
    directory: &Arc<Directory>,
    redis: &ConnectionManager,
    keyring: &Arc<Keyring>,
    naming: &Naming,
    usage: &Arc<UsageCounters>,
    producer: &SharedProducer,
    shutdown: &CancellationToken,
    tasks: &mut Vec<Task>,
    router: &mut OpenApiRouter,
) -> anyhow::Result<Vec<Arc<dyn nudge_platform_http::ReadinessCheck>>> {
    let topics = config.kafka.topics();
    let campaigns = Arc::new(crate::campaigns::CampaignBook::default());
    // The model first: a cell that cannot score should fail at start, not per event.
    let runtime = init_runtime(config.inference.onnxruntime_library.as_deref())?;
    let models = Arc::new(ModelSet::with_bundled(runtime, load_model(runtime, config)?)?);
    tracing::info!(default = models.default_model().version(), models = ?models.versions(), "models loaded");
    let scorers = Arc::new(Scorers::spawn(&models, &config.inference.batching));
    // Dry runs score with the same models, so they are served where the pipeline runs.
    let dry_run = dry_run::DryRunState {
        directory: directory.clone(),
        keyring: keyring.clone(),
        models: models.clone(),
        scorers: scorers.clone(),
        kafka: config.kafka.clone(),
        cooldown_ms: config.decide.cooldown_ms,
        running: Arc::new(tokio::sync::Semaphore::new(1)),
    };
    *router = std::mem::replace(router, OpenApiRouter::new()).merge(dry_run::router().with_state(dry_run));
    let models_caught_up = Arc::new(AtomicBool::new(false));
    tasks.push(("model registry", {
        let refused = prometheus_client::metrics::counter::Counter::default();
        metrics.registry().register(
            "models_registry_refused",
            "Model registry records refused (an artifact failing its checks, an undecodable record)",
            refused.clone(),
        );
        let follower = Arc::new(models::Registry {
            models: models.clone(),
            scorers: scorers.clone(),
            caught_up: models_caught_up.clone(),
            refused,
        });
        let (kafka, shutdown, topic) = (config.kafka.clone(), shutdown.clone(), topics.name(Topic::ControlModels));
        let client_id = format!("models-{}", config.cell_id);
        tokio::spawn(async move {
            Ok(nudge_platform_kafka::follow::follow(follower, &kafka, topic, &client_id, shutdown).await?)
        })
    }));

    let dead_letters = DeadLetters::new(producer.clone(), topics.name(Topic::EventsDlq));
    let stage_metrics = StageMetrics::register(metrics);
    let policy = |name| StagePolicy {
        name,
        max_attempts: config.stages.max_attempts,
        retry_backoff: Duration::from_millis(config.stages.retry_backoff_ms),
        max_unavailable_backoff: Duration::from_secs(2),
    };
    let validator: Arc<dyn Handler> = Arc::new(validator::Validator {
        directory: directory.clone(),
        keyring: keyring.clone(),
        usage: usage.clone(),
        producer: producer.clone(),
        validated_topic: topics.name(Topic::EventsValidated),
    });
    let channel_store = nudge_data_plane_channels::store::ChannelStore::new(
        redis.clone(),
        config.redis.prefix.clone(),
        &config.cell_id.to_string(),
    );
    let scorer: Arc<dyn Handler> = Arc::new(pipeline::Pipeline {
        sessions: SessionStore::new(redis.clone(), config.redis.prefix.clone()).for_cell(&config.cell_id),
        models,
        scorers,
        directory: directory.clone(),
        keyring: keyring.clone(),
        rule: config.decide.clone(),
        campaigns: campaigns.clone(),
        channels: channel_store.clone(),
        outcomes: nudge_data_plane_channels::outcomes::OutcomeStore::new(redis.clone(), config.redis.prefix.clone()),
        publisher: InterventionPublisher::new(redis.clone(), naming.clone(), config.gateway.history.clone()),
        recent: recent::RecentEventLog::new(redis.clone(), config.redis.prefix.clone()),
        producer: producer.clone(),
        topics: pipeline::OutputTopics {
            features: topics.name(Topic::Features),
            predictions: topics.name(Topic::Predictions),
            interventions: topics.name(Topic::InterventionCommands),
        },
        usage: usage.clone(),
        metrics: pipeline::PipelineMetrics::register(metrics),
    });
    for (stage, handler, source, count) in [
        ("validator", validator, Topic::EventsRaw, config.stages.validator_consumers),
        ("pipeline", scorer, Topic::EventsValidated, config.stages.pipeline_consumers),
    ] {
        for i in 0..count {
            let instance = config.kafka.group_instance.as_ref().map(|name| format!("{name}-{stage}-{i}"));
            let consumer = nudge_platform_kafka::static_group_consumer(
                &config.kafka,
                &format!("cell-{}-{stage}-{i}", config.cell_id),
                stage,
                instance.as_deref(),
            )?;
            consumer.subscribe(&[topics.name(source).as_str()])?;
            let run = run_stage(
                consumer,
                handler.clone(),
                dead_letters.clone(),
                policy(stage),
                stage_metrics.clone(),
                shutdown.clone(),
            );
            tasks.push((
                stage,
                tokio::spawn(async move {
                    run.await;
                    Ok(())
                }),
            ));
        }
    }
    tasks.push((
        "idle-cart scanner",
        tokio::spawn(idle::scan(
            SessionStore::new(redis.clone(), config.redis.prefix.clone()).for_cell(&config.cell_id),
            directory.clone(),
            keyring.clone(),
            producer.clone(),
            topics.name(Topic::EventsValidated),
            config.idle_carts.clone(),
            shutdown.clone(),
        )),
    ));
    // Campaign e-mails, sent when due unless a purchase cancelled them.
    let email = match &config.channels.smtp {
        Some(smtp) => Some(nudge_data_plane_channels::email::EmailSender::new(smtp).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let dispatcher = sends::Dispatcher {
        store: channel_store,
        sessions: SessionStore::new(redis.clone(), config.redis.prefix.clone()),
        directory: directory.clone(),
        keyring: keyring.clone(),
        email,
        webhooks: nudge_data_plane_channels::webhook::WebhookSender::new(config.channels.webhooks.clone()),
        vault: nudge_platform_vault::Vault::new(&config.vault)?,
        secrets: std::sync::Mutex::default(),
        unsubscribe: Arc::new(unsubscribe::UnsubscribeLinks::new(
            config.sessions.secrets.clone(),
            &config.channels.public_url,
        )),
        config: config.channels.clone(),
        metrics: sends::SendMetrics::register(metrics),
    };
    tasks.push(("delayed sends", tokio::spawn(dispatcher.run(shutdown.clone()))));
    // The stores' active campaigns: decided with once read up to where they stood.
    let campaigns_caught_up = campaigns.caught_up();
    tasks.push(("campaigns", {
        let (kafka, cell, shutdown) = (config.kafka.clone(), config.cell_id.clone(), shutdown.clone());
        tokio::spawn(async move { Ok(crate::campaigns::follow(campaigns, kafka, cell, shutdown).await?) })
    }));
    Ok(vec![
        Arc::new(readiness::ModelsReady(models_caught_up)),
        Arc::new(readiness::CampaignsReady(campaigns_caught_up)),
    ])
}

/// Once `requested` is cancelled: not ready, sockets closed with 1012 and a reconnect hint,
/// new sockets refused; after the grace period, `shutdown`.
async fn drain(
    requested: CancellationToken,
    draining: Arc<AtomicBool>,
    hub: Arc<Hub>,
    config: CellConfig,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = requested.cancelled() => {}
        // Stopped for another reason (a task failed): nothing to drain.
        _ = shutdown.cancelled() => return,
    }
    draining.store(true, std::sync::atomic::Ordering::Release);
    let reason = format!("service_restart reconnect_jitter_ms={}", config.gateway.reconnect_jitter_ms);
    let closed = hub.close_all(CLOSE_SERVICE_RESTART, &reason);
    tracing::info!(closed, grace_ms = config.drain.grace_ms, "draining: not ready, sockets closed with 1012");
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(config.drain.grace_ms)) => {}
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}

fn load_model(runtime: &'static ort::environment::Environment, config: &CellConfig) -> anyhow::Result<Model> {
    let i = &config.inference;
    match (&i.model_path, &i.model_sha256, &i.model_version) {
        (Some(path), Some(sha), Some(version)) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading model {}", path.display()))?;
            Ok(Model::load(runtime, version, &bytes, sha)?)
        }
        _ => Ok(Model::load(runtime, bundled::MODEL_VERSION, bundled::MODEL_ONNX, bundled::MODEL_SHA256)?),
    }
}
