//! `GET /v1/lift`: a store's lift against its holdouts, for its servers (a secret key with
//! `reports:read`): per campaign, the shoppers it treated against its control group; for
//! the store, every shopper any campaign applied to against the global holdout. Each arm's
//! shoppers, conversions and revenue within the attribution window, and the difference in
//! conversion rate and in revenue per shopper with a 95 % confidence interval. Revenue adds
//! amounts as they came; `currencies` names the currencies of the purchases in it, and the
//! revenue lift is left out when there is more than one (their amounts do not add up).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query, State},
    http::HeaderMap,
};
use nudge_campaigns::lift::{Arm, Estimate, Lift};
use nudge_data_plane_channels::outcomes::{ArmName, OutcomeStore, STORE};
use nudge_data_plane_directory::{Directory, auth::authorize_server_request};
use nudge_platform_http::{ApiError, ErrorBody};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

/// The scope a secret key needs.
pub const SCOPE: &str = "reports:read";

#[derive(Clone)]
pub struct LiftState {
    pub directory: Arc<Directory>,
    pub outcomes: OutcomeStore,
}

pub fn router() -> OpenApiRouter<LiftState> {
    OpenApiRouter::new().routes(routes!(lift))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiftQuery {
    /// A campaign (`cmp_…`): its treated shoppers against its control group. Absent: the
    /// store, every campaign's shoppers against the global holdout.
    pub campaign_id: Option<String>,
}

/// One arm's outcomes.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArmView {
    pub shoppers: u64,
    /// Shoppers who bought within the attribution window.
    pub converted: u64,
    pub conversion_rate: f64,
    /// Their purchases' value, in hundredths of the currency: of `currencies`' one, and not a
    /// meaningful sum when it names several.
    pub revenue_minor: f64,
    pub revenue_per_shopper_minor: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EngagementView {
    pub shown: u64,
    pub clicked: u64,
    pub dismissed: u64,
}

/// An estimate and its 95 % confidence interval.
#[derive(Debug, Serialize, ToSchema)]
pub struct EstimateView {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Treated minus the comparison arm.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiftView {
    /// `control` (a campaign's control group) or `holdout` (the store's global holdout).
    pub against: String,
    /// Conversion rate, absolute (0.02 is two points).
    pub conversion: EstimateView,
    /// In hundredths of the report's one currency; absent when its purchases were in several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue_per_shopper_minor: Option<EstimateView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LiftReport {
    /// The campaign, or `_store`.
    pub campaign_id: String,
    pub attribution_days: u16,
    /// ISO 4217 codes of the purchases counted in the revenue figures, sorted: one for a store
    /// selling in one currency; none before any purchase (or for purchases counted before
    /// currencies were recorded); several when the store sells in more than one, and then
    /// the revenue sums mix them and no revenue lift is given.
    pub currencies: Vec<String>,
    pub treated: ArmView,
    /// The campaign's control group (absent for the store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<ArmView>,
    /// Shoppers in the global holdout when the campaign (or any, for the store) applied.
    pub holdout: ArmView,
    /// What the treated shoppers did with the on-site messages: shown, clicked, dismissed
    /// (each counted once per intervention, as the snippet reports it).
    pub engagement: EngagementView,
    /// Absent while either arm compared has no shoppers.
    pub lift: Option<LiftView>,
}

fn arm_view(arm: &Arm) -> ArmView {
    ArmView {
        shoppers: arm.shoppers,
        converted: arm.converted,
        conversion_rate: arm.conversion_rate(),
        revenue_minor: arm.revenue,
        revenue_per_shopper_minor: arm.revenue_per_shopper(),
    }
}

fn estimate(e: Estimate) -> EstimateView {
    EstimateView { value: e.value, low: e.low, high: e.high }
}

/// Lift against a holdout.
#[utoipa::path(get, path = "/v1/lift", tag = "reports", params(LiftQuery),
    security(("secret_key" = [])),
    responses(
        (status = 200, description = "the arms and the lift, with 95 % intervals", body = LiftReport),
        (status = 401, description = "`missing_key`, `invalid_key`", body = ErrorBody),
        (status = 403, description = "`missing_scope` (needs `reports:read`), `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 422, description = "`invalid_campaign_id`", body = ErrorBody),
        (status = 503, description = "`reports_unavailable`, `cell_starting`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn lift(
    State(state): State<LiftState>,
    headers: HeaderMap,
    Query(query): Query<LiftQuery>,
) -> Result<Json<LiftReport>, ApiError> {
    let entry = authorize_server_request(&state.directory, &headers, SCOPE)?;
    let tenant = entry.tenant_id;
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
    let campaign = match &query.campaign_id {
        None => STORE.to_owned(),
        Some(id)
            if id
                .strip_prefix("cmp_")
                .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())) =>
        {
            id.to_ascii_lowercase()
        }
        Some(_) => return Err(ApiError::unprocessable("invalid_campaign_id", "campaign_id is a campaign's id, cmp_…")),
    };
    let unavailable = |e: nudge_data_plane_channels::store::ChannelsError| {
        tracing::warn!(error = %e, "lift report unavailable");
        ApiError::unavailable("reports_unavailable", "the report cannot be read now", 1)
    };
    let (arms, currencies) = state.outcomes.arms(tenant, &campaign).await.map_err(unavailable)?;
    let one_currency = currencies.len() <= 1;
    let engagement = state.outcomes.engagement(tenant, &campaign).await.map_err(unavailable)?;
    let of = |name: ArmName| arms.iter().find(|(n, _)| *n == name).map(|(_, a)| *a).unwrap_or_default();
    let (treated, control, holdout) = (of(ArmName::Treated), of(ArmName::Control), of(ArmName::Holdout));
    let store = campaign == STORE;
    let (against, baseline) = if store { ("holdout", holdout) } else { ("control", control) };
    let attribution_days = state.directory.by_tenant(tenant).map_or(7, |t| t.messaging.attribution_days);
    Ok(Json(LiftReport {
        campaign_id: campaign,
        attribution_days,
        currencies,
        treated: arm_view(&treated),
        control: (!store).then(|| arm_view(&control)),
        holdout: arm_view(&holdout),
        engagement: EngagementView {
            shown: engagement.shown,
            clicked: engagement.clicked,
            dismissed: engagement.dismissed,
        },
        lift: Lift::of(treated, baseline).map(|l| LiftView {
            against: against.to_owned(),
            conversion: estimate(l.conversion),
            revenue_per_shopper_minor: one_currency.then(|| estimate(l.revenue_per_shopper)),
        }),
    }))
}
