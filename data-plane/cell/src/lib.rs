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
//! - [`models`]: following the model registry: models loaded, swapped and dropped live.
//! - [`usage`]: per-tenant counts to `usage.v1`.
//! - [`readiness`]: what `/readyz` checks.
//! - [`snippet`]: serves `nudge.js`, the browser snippet.

pub mod config;
pub mod idle;
pub mod models;
pub mod pipeline;
pub mod readiness;
pub mod snippet;
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
use nudge_data_plane_features::store::SessionStore;
use nudge_data_plane_gateway::{
    GatewayState, Hub,
    route::{InterventionPublisher, channel},
};
use nudge_data_plane_inference::{Model, ModelSet, Scorers, bundled, init_runtime};
use nudge_data_plane_ingest::{
    IngestState, dedup::RedisDedup, routes::IngestMetrics, sink::KafkaSink, usage::UsageCounters,
};
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

/// Runs a cell on `listener` until `shutdown` is cancelled.
pub async fn run(config: CellConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::new("cell");
    let topics = config.kafka.topics();
    nudge_platform_kafka::ensure_topics(&config.kafka, &Topic::ALL).await.context("creating topics")?;

    // The model first: a cell that cannot score should fail at start, not per event.
    let runtime = init_runtime(config.inference.onnxruntime_library.as_deref())?;
    let models = Arc::new(ModelSet::with_bundled(runtime, load_model(runtime, &config)?)?);
    tracing::info!(default = models.default_model().version(), models = ?models.versions(), "models loaded");
    let scorers = Arc::new(Scorers::spawn(&models, &config.inference.batching));
    let models_caught_up = Arc::new(AtomicBool::new(false));
    let registry = {
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
    };

    // Tenants, from control.tenants.v1.
    let directory = Arc::new(Directory::new(config.cell_id.clone()));
    let follow = {
        let (directory, kafka, shutdown) = (directory.clone(), config.kafka.clone(), shutdown.clone());
        tokio::spawn(async move { Ok(nudge_data_plane_directory::follow(directory, kafka, shutdown).await?) })
    };

    // Redis: sessions and the intervention channel.
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
    let channel = channel(&config.redis.prefix, &config.cell_id);

    // The gateway: this process's sockets and its subscription to the cell's channel.
    let hub = Arc::new(Hub::default());
    let subscribed = Arc::new(AtomicBool::new(false));
    let subscribe = nudge_data_plane_gateway::route::subscribe(
        redis_client,
        channel.clone(),
        hub.clone(),
        subscribed.clone(),
        shutdown.clone(),
    );
    let subscriber = tokio::spawn(async move {
        subscribe.await;
        Ok(())
    });

    // The stages: validator (events.raw → events.validated) and pipeline (→ effects).
    let usage = Arc::new(UsageCounters::default());
    let stage_producer = SharedProducer::new(&config.kafka, &format!("cell-{}-stages", config.cell_id))?;
    let dead_letters = DeadLetters::new(stage_producer.clone(), topics.name(Topic::EventsDlq));
    let stage_metrics = StageMetrics::register(&metrics);
    let policy = |name| StagePolicy {
        name,
        max_attempts: config.stages.max_attempts,
        retry_backoff: Duration::from_millis(config.stages.retry_backoff_ms),
        max_unavailable_backoff: Duration::from_secs(2),
    };
    let validator: Arc<dyn Handler> = Arc::new(validator::Validator {
        directory: directory.clone(),
        producer: stage_producer.clone(),
        validated_topic: topics.name(Topic::EventsValidated),
    });
    let scorer: Arc<dyn Handler> = Arc::new(pipeline::Pipeline {
        sessions: SessionStore::new(redis.clone(), config.redis.prefix.clone()).for_cell(&config.cell_id),
        models,
        scorers,
        directory: directory.clone(),
        rule: config.decide.clone(),
        publisher: InterventionPublisher::new(redis.clone(), channel),
        producer: stage_producer.clone(),
        topics: pipeline::OutputTopics {
            features: topics.name(Topic::Features),
            predictions: topics.name(Topic::Predictions),
            interventions: topics.name(Topic::InterventionCommands),
        },
        usage: usage.clone(),
        metrics: pipeline::PipelineMetrics::register(&metrics),
    });
    let mut tasks: Vec<Task> = Vec::new();
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
            stage_producer.clone(),
            topics.name(Topic::EventsValidated),
            config.idle_carts.clone(),
            shutdown.clone(),
        )),
    ));
    tasks.push((
        "usage reporter",
        tokio::spawn(usage::report(
            usage.clone(),
            stage_producer,
            topics.name(Topic::Usage),
            config.cell_id.clone(),
            Duration::from_millis(config.usage.interval_ms),
            shutdown.clone(),
        )),
    ));

    // Ingest.
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
        config: config.ingest.clone(),
        metrics: IngestMetrics::register(&metrics),
    };
    let gateway =
        GatewayState { config: config.gateway.clone(), directory: directory.clone(), hub, shutdown: shutdown.clone() };
    let features = nudge_data_plane_features::api::FeaturesState {
        directory: directory.clone(),
        store: SessionStore::new(redis.clone(), config.redis.prefix.clone()).for_cell(&config.cell_id),
    };

    let readiness = Readiness::default()
        .with(Arc::new(readiness::DirectoryReady(directory)))
        .with(Arc::new(readiness::ModelsReady(models_caught_up)))
        .with(Arc::new(readiness::RedisReady(redis)))
        .with(Arc::new(readiness::SubscriptionReady(subscribed)));
    let http_metrics = HttpMetrics::register(&metrics);
    let (router, _) = openapi::with_document(
        OpenApiRouter::new()
            .merge(nudge_data_plane_ingest::router().with_state(ingest))
            .merge(nudge_data_plane_gateway::router().with_state(gateway))
            .merge(nudge_data_plane_features::api::router().with_state(features))
            .merge(snippet::router())
            .merge(ops_router(readiness, metrics)),
        "Nudge cell",
        "Event intake, shopper sockets, the feature read API and the browser snippet of a Nudge data-plane cell.",
    );
    let router = router.layer(from_fn_with_state(http_metrics, trace_layer));

    tracing::info!(addr = %listener.local_addr()?, cell_id = %config.cell_id, "cell listening");
    serve_supervised(
        serve(listener, router, shutdown.clone()),
        {
            tasks.push(("tenant directory", follow));
            tasks.push(("model registry", registry));
            tasks.push(("intervention subscriber", subscriber));
            tasks
        },
        shutdown,
    )
    .await
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
