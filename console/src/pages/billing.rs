//! Billing: the plan, this month's events against what it includes, dunning, and the ways
//! to change it (a free plan at once; a paid plan at once with a payment method on file,
//! else through Stripe Checkout) or to manage payment in Stripe's portal.
//!
//! Stripe's pages are on another origin, and the console's policy lets forms post only to
//! the console: a link to Stripe is shown on a page of its own, to be followed (the script
//! follows it at once).

use askama::Template;
use axum::{
    Form,
    extract::{Query, State},
    http::Method,
    response::{Html, IntoResponse, Redirect, Response},
};
use nudge_contracts::control::{BillingView, PlanChoice};
use serde::Deserialize;
use serde_json::Value;

use super::{Layout, render};
use crate::{Console, error::ConsoleError, session::Member};

#[derive(Template)]
#[template(path = "billing.html")]
struct BillingPage {
    layout: Layout,
    billing: BillingView,
    price: String,
    used_percent: u64,
    is_owner: bool,
    can_open_portal: bool,
    notice: Option<String>,
}

#[derive(Template)]
#[template(path = "stripe_link.html")]
struct StripeLinkPage {
    layout: Layout,
    url: String,
    what: &'static str,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PlanForm {
    csrf: String,
    plan: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Notice {
    plan: String,
    /// Back from Stripe Checkout: `complete` or `cancelled`.
    checkout: String,
}

async fn billing_page(
    console: &Console,
    member: &Member,
    notice: Option<String>,
) -> Result<Html<String>, ConsoleError> {
    let billing: BillingView = console.api.get(&member.store_path("/billing"), member.token()).await?;
    let price = format!(
        "{}.{:02} {}",
        billing.monthly_price_cents / 100,
        billing.monthly_price_cents % 100,
        billing.currency.to_uppercase()
    );
    let used = u64::try_from(billing.monthly_events_used).unwrap_or(0);
    let used_percent = billing.monthly_events_included.filter(|n| *n > 0).map_or(0, |n| (used * 100 / n).min(100));
    let role = member.session.role.as_str();
    render(&BillingPage {
        layout: Layout::new(member, "billing"),
        billing,
        price,
        used_percent,
        is_owner: role == "owner",
        can_open_portal: matches!(role, "owner" | "admin"),
        notice,
    })
}

pub async fn page(
    State(console): State<Console>,
    member: Member,
    Query(notice): Query<Notice>,
) -> Result<Html<String>, ConsoleError> {
    let notice = match (notice.plan.as_str(), notice.checkout.as_str()) {
        (_, "complete") => Some(
            "Stripe has your payment method. The plan changes as soon as Stripe confirms it, in seconds.".to_owned(),
        ),
        (_, "cancelled") => Some("Checkout was cancelled: nothing changed.".to_owned()),
        (plan, _) if !plan.is_empty() && plan.chars().all(|c| c.is_ascii_lowercase()) => {
            Some(format!("The store is on the {plan} plan now. Stripe follows within seconds."))
        }
        _ => None,
    };
    billing_page(&console, &member, notice).await
}

/// A plan change: at once when the API can make it; through Checkout when it needs a
/// payment method first.
pub async fn change_plan(
    State(console): State<Console>,
    member: Member,
    Form(form): Form<PlanForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let choice = PlanChoice { plan: form.plan.clone() };
    let token = Some(member.token());
    match console.api.call::<Value>(Method::POST, &member.store_path("/billing/plan"), token, Some(&choice)).await {
        Ok(changed) => {
            let plan = changed["plan"].as_str().unwrap_or_default().to_owned();
            tracing::info!(tenant_id = %member.session.tenant_id, plan = %plan, "plan changed in the console");
            Ok(Redirect::to(&format!("/console/billing?plan={plan}")).into_response())
        }
        Err(ConsoleError::Refused(r)) if r.code == "payment_method_required" => {
            let session: Value =
                console.api.call(Method::POST, &member.store_path("/billing/checkout"), token, Some(&choice)).await?;
            let url = session["url"].as_str().unwrap_or_default().to_owned();
            stripe_link(&member, url, "Give a payment method in Stripe Checkout to move to the plan.")
        }
        Err(ConsoleError::Refused(r)) if matches!(r.status.as_u16(), 409 | 422) => {
            Ok((r.status, billing_page(&console, &member, Some(r.message.clone())).await?).into_response())
        }
        Err(e) => Err(e),
    }
}

pub async fn portal(
    State(console): State<Console>,
    member: Member,
    Form(form): Form<super::auth::CsrfForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let link: Value = console
        .api
        .call(Method::POST, &member.store_path("/billing/portal"), Some(member.token()), None::<&()>)
        .await?;
    let url = link["url"].as_str().unwrap_or_default().to_owned();
    stripe_link(&member, url, "Manage payment methods and invoices in Stripe's billing portal.")
}

fn stripe_link(member: &Member, url: String, what: &'static str) -> Result<Response, ConsoleError> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(ConsoleError::Internal(format!("Stripe gave no usable link: {url:?}")));
    }
    Ok(render(&StripeLinkPage { layout: Layout::new(member, "billing"), url, what })?.into_response())
}
