//! The scoring stage's counters and histograms, registered once per process.

use nudge_platform_telemetry::Metrics;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

/// Pipeline counters.
#[derive(Clone)]
pub struct PipelineMetrics {
    pub(super) processed: Counter,
    pub(super) duplicates: Counter,
    pub(super) interventions: Counter,
    pub(super) lost: Counter,
    pub(super) idle_carts: Counter,
    pub(super) idle_stale: Counter,
    pub(super) model_fallbacks: Counter,
    pub(super) features_defaulted: Counter,
    pub(super) shadow_scores: Counter,
    pub(super) campaign_control: Counter,
    pub(super) sends_scheduled: Counter,
    pub(super) sends_skipped: Counter,
    pub(super) sends_cancelled: Counter,
    pub(super) cancel_delay: Histogram,
    pub(super) log_failures: Counter,
    pub(super) scores: Histogram,
}

impl PipelineMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self {
            processed: Counter::default(),
            duplicates: Counter::default(),
            interventions: Counter::default(),
            lost: Counter::default(),
            idle_carts: Counter::default(),
            idle_stale: Counter::default(),
            model_fallbacks: Counter::default(),
            features_defaulted: Counter::default(),
            shadow_scores: Counter::default(),
            campaign_control: Counter::default(),
            sends_scheduled: Counter::default(),
            sends_skipped: Counter::default(),
            sends_cancelled: Counter::default(),
            cancel_delay: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            log_failures: Counter::default(),
            scores: Histogram::new([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]),
        };
        let mut r = metrics.registry();
        r.register("pipeline_events_processed", "Events whose effects were applied", m.processed.clone());
        r.register("pipeline_events_duplicate", "Replayed events skipped (already applied)", m.duplicates.clone());
        r.register("pipeline_interventions", "Interventions routed to sockets", m.interventions.clone());
        r.register(
            "pipeline_campaign_control",
            "Moments a campaign would have sent at, held back for its control group",
            m.campaign_control.clone(),
        );
        r.register(
            "pipeline_sends_scheduled",
            "Campaign e-mails scheduled for after their delay",
            m.sends_scheduled.clone(),
        );
        r.register(
            "pipeline_sends_skipped",
            "Campaign sends not made at decision time (holdout, control group, outranked, consent, caps); each is in the store's send log",
            m.sends_skipped.clone(),
        );
        r.register(
            "pipeline_sends_cancelled",
            "Pending sends cancelled by the shopper's purchase",
            m.sends_cancelled.clone(),
        );
        r.register(
            "pipeline_purchase_cancel_seconds",
            "From the cell accepting a purchase to the shopper's pending sends being cancelled",
            m.cancel_delay.clone(),
        );
        r.register("pipeline_send_log_failures", "Send-log entries that could not be written", m.log_failures.clone());
        r.register("pipeline_interventions_lost", "Interventions that could not be routed", m.lost.clone());
        r.register("pipeline_carts_idle", "Carts found idle (server-side abandonment detection)", m.idle_carts.clone());
        r.register(
            "pipeline_carts_idle_stale",
            "Idle-cart events dropped because the shopper was active after the timer fired",
            m.idle_stale.clone(),
        );
        r.register(
            "pipeline_model_fallbacks",
            "Events of tenants assigned a model this cell does not hold, scored with the default",
            m.model_fallbacks.clone(),
        );
        r.register(
            "pipeline_features_defaulted",
            "Features scored at their declared default because the stored session lacked a field they come from",
            m.features_defaulted.clone(),
        );
        r.register(
            "pipeline_shadow_scores",
            "Scores by a shadow model, logged and not acted on",
            m.shadow_scores.clone(),
        );
        r.register("pipeline_scores", "Abandonment probabilities", m.scores.clone());
        m
    }
}
