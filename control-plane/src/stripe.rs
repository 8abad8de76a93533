//! A small client of Stripe's REST API: form-encoded requests, an idempotency key on every
//! creation, JSON answers read for the few fields the billing sync needs.
//!
//! Stripe's typed SDK for Rust (async-stripe) is not used: its generated types reject the
//! answers of localstripe, the fake Stripe the tests and the local run talk to (it omits
//! fields they require), so typing would have to be given up for every call anyway, at the
//! cost of compiling megabytes of generated code. What is sent here is what Stripe's API
//! reference documents.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Why Stripe did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe could not be reached, timed out, or answered 429 or 5xx: try again later.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// Stripe refused the request (4xx), with its error code and message.
    #[error("Stripe refused the request ({status}): {message}")]
    Rejected { status: u16, code: Option<String>, message: String },
    /// Stripe answered something this client cannot read.
    #[error("Stripe answered unexpectedly: {0}")]
    Unexpected(String),
}

/// Stripe's API at `base` (`https://api.stripe.com`, or a localstripe).
#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    base: String,
    key: SecretString,
    /// The subscription item's field naming what it bills: `price` (Stripe's API), or
    /// `plan` (the older name, which localstripe needs).
    item_param: String,
}

/// A subscription as created: its id and its one item's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub item_id: String,
}

/// A subscription Stripe bills, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSubscription {
    pub subscription: Subscription,
    /// The price its item bills.
    pub price: Option<String>,
}

/// A Checkout session: where to send the merchant, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

impl Stripe {
    pub fn new(base: &str, key: SecretString, item_param: &str, timeout: Duration) -> Result<Self, StripeError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| StripeError::Unexpected(e.to_string()))?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), key, item_param: item_param.to_owned() })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, StripeError> {
        let response = request
            .bearer_auth(self.key.expose_secret())
            .send()
            .await
            .map_err(|e| StripeError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"].as_str().unwrap_or("no message").to_owned();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(StripeError::Unavailable(format!("{status}: {message}")));
        }
        Err(StripeError::Rejected {
            status: status.as_u16(),
            code: body["error"]["code"].as_str().map(str::to_owned),
            message,
        })
    }

    /// POSTs `form` to `path` with `idempotency_key`: Stripe answers a repeat of the same key
    /// with the first answer, so a retry after a lost answer creates nothing twice.
    async fn post(&self, path: &str, form: &[(String, String)], idempotency_key: &str) -> Result<Value, StripeError> {
        self.send(self.http.post(format!("{}{path}", self.base)).header("Idempotency-Key", idempotency_key).form(form))
            .await
    }

    /// A customer for the store, named by it; its id.
    pub async fn create_customer(
        &self,
        tenant: &str,
        name: &str,
        idempotency_key: &str,
    ) -> Result<String, StripeError> {
        let form = vec![("name".to_owned(), name.to_owned()), ("metadata[tenant_id]".to_owned(), tenant.to_owned())];
        let customer = self.post("/v1/customers", &form, idempotency_key).await?;
        id_of(&customer, "customer")
    }

    /// A subscription of `customer` to `price`.
    pub async fn create_subscription(
        &self,
        customer: &str,
        price: &str,
        tenant: &str,
        idempotency_key: &str,
    ) -> Result<Subscription, StripeError> {
        let form = vec![
            ("customer".to_owned(), customer.to_owned()),
            (format!("items[0][{}]", self.item_param), price.to_owned()),
            ("metadata[tenant_id]".to_owned(), tenant.to_owned()),
        ];
        let subscription = self.post("/v1/subscriptions", &form, idempotency_key).await?;
        Ok(Subscription {
            id: id_of(&subscription, "subscription")?,
            item_id: id_of(&subscription["items"]["data"][0], "subscription item")?,
        })
    }

    /// Moves the subscription's item to `price` (a plan change).
    pub async fn change_price(
        &self,
        subscription: &Subscription,
        price: &str,
        idempotency_key: &str,
    ) -> Result<(), StripeError> {
        let form = vec![
            ("items[0][id]".to_owned(), subscription.item_id.clone()),
            (format!("items[0][{}]", self.item_param), price.to_owned()),
        ];
        self.post(&format!("/v1/subscriptions/{}", subscription.id), &form, idempotency_key).await.map(|_| ())
    }

    /// The customer's live subscriptions made for `tenant` (its `metadata.tenant_id`), with
    /// the price each bills.
    pub async fn live_subscriptions(&self, customer: &str, tenant: &str) -> Result<Vec<LiveSubscription>, StripeError> {
        let request =
            self.http.get(format!("{}/v1/subscriptions", self.base)).query(&[("customer", customer), ("limit", "100")]);
        let list = self.send(request).await?;
        let mut live = Vec::new();
        for s in list["data"].as_array().into_iter().flatten() {
            let status = s["status"].as_str().unwrap_or_default();
            if matches!(status, "canceled" | "incomplete_expired")
                || s["metadata"]["tenant_id"].as_str() != Some(tenant)
            {
                continue;
            }
            let item = &s["items"]["data"][0];
            let price = item["price"]["id"].as_str().or_else(|| item["plan"]["id"].as_str()).map(str::to_owned);
            live.push(LiveSubscription {
                subscription: Subscription {
                    id: id_of(s, "subscription")?,
                    item_id: id_of(item, "subscription item")?,
                },
                price,
            });
        }
        Ok(live)
    }

    /// Reports `value` of meter `event_name` for `customer` at `timestamp` (unix seconds).
    /// `identifier` names the event: Stripe counts an identifier once, and it is the
    /// idempotency key too, so a resend is the same event.
    pub async fn meter_event(
        &self,
        event_name: &str,
        customer: &str,
        value: i64,
        timestamp: i64,
        identifier: &str,
    ) -> Result<(), StripeError> {
        let form = vec![
            ("event_name".to_owned(), event_name.to_owned()),
            ("payload[stripe_customer_id]".to_owned(), customer.to_owned()),
            ("payload[value]".to_owned(), value.to_string()),
            ("timestamp".to_owned(), timestamp.to_string()),
            ("identifier".to_owned(), identifier.to_owned()),
        ];
        self.post("/v1/billing/meter_events", &form, identifier).await.map(|_| ())
    }

    /// A short-lived link to Stripe's billing portal for `customer` (payment methods,
    /// invoices), coming back to `return_url`.
    pub async fn portal_session(&self, customer: &str, return_url: &str) -> Result<String, StripeError> {
        let form = vec![("customer".to_owned(), customer.to_owned()), ("return_url".to_owned(), return_url.to_owned())];
        // Each session is new: a retry makes another, as harmless as the first.
        let key = format!("nudge-portal-{}", uuid::Uuid::new_v4());
        let session = self.post("/v1/billing_portal/sessions", &form, &key).await?;
        session["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| StripeError::Unexpected("a billing portal session without a url".into()))
    }

    /// A Checkout session in setup mode for `customer`: Stripe's hosted page collects a
    /// payment method and sends the merchant to `success_url` (or back to `cancel_url`).
    /// The session names the store and the plan asked for, for people reading Stripe's
    /// dashboard; what the completion does is decided from the platform's own record.
    pub async fn setup_checkout(
        &self,
        customer: &str,
        tenant: &str,
        plan: &str,
        success_url: &str,
        cancel_url: &str,
    ) -> Result<CheckoutSession, StripeError> {
        let form = vec![
            ("mode".to_owned(), "setup".to_owned()),
            ("customer".to_owned(), customer.to_owned()),
            ("currency".to_owned(), "eur".to_owned()),
            ("client_reference_id".to_owned(), tenant.to_owned()),
            ("metadata[tenant_id]".to_owned(), tenant.to_owned()),
            ("metadata[plan]".to_owned(), plan.to_owned()),
            ("setup_intent_data[metadata][tenant_id]".to_owned(), tenant.to_owned()),
            ("success_url".to_owned(), success_url.to_owned()),
            ("cancel_url".to_owned(), cancel_url.to_owned()),
        ];
        // Each session is new: a retry makes another, and only a completed one does anything.
        let key = format!("nudge-checkout-{}", uuid::Uuid::new_v4());
        let session = self.post("/v1/checkout/sessions", &form, &key).await?;
        Ok(CheckoutSession {
            id: id_of(&session, "checkout session")?,
            url: session["url"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| StripeError::Unexpected("a checkout session without a url".into()))?,
            expires_at: session["expires_at"].as_i64(),
        })
    }

    /// The payment method a setup intent collected, once it has succeeded; `None` before
    /// (or when there is no such intent).
    pub async fn setup_payment_method(&self, setup_intent: &str) -> Result<Option<String>, StripeError> {
        let Some(intent) = self.get(&format!("/v1/setup_intents/{setup_intent}")).await? else { return Ok(None) };
        if intent["status"].as_str() != Some("succeeded") {
            return Ok(None);
        }
        let method = &intent["payment_method"];
        Ok(method.as_str().or_else(|| method["id"].as_str()).map(str::to_owned))
    }

    /// The payment method the customer's invoices are charged to, if any (set through
    /// Checkout or Stripe's billing portal).
    pub async fn default_payment_method(&self, customer: &str) -> Result<Option<String>, StripeError> {
        let Some(customer) = self.get(&format!("/v1/customers/{customer}")).await? else { return Ok(None) };
        if customer["deleted"].as_bool() == Some(true) {
            return Ok(None);
        }
        let method = &customer["invoice_settings"]["default_payment_method"];
        Ok(method.as_str().or_else(|| method["id"].as_str()).map(str::to_owned))
    }

    /// Makes `payment_method` the one the customer's invoices are charged to.
    pub async fn set_default_payment_method(&self, customer: &str, payment_method: &str) -> Result<(), StripeError> {
        let form = vec![("invoice_settings[default_payment_method]".to_owned(), payment_method.to_owned())];
        // Setting the same method again changes nothing: the key may be a fixed one.
        let key = format!("nudge-default-pm-{customer}-{payment_method}");
        self.post(&format!("/v1/customers/{customer}"), &form, &key).await.map(|_| ())
    }

    /// Cancels the subscription at once; one already gone counts as cancelled.
    pub async fn cancel(&self, subscription: &str) -> Result<(), StripeError> {
        match self.send(self.http.delete(format!("{}/v1/subscriptions/{subscription}", self.base))).await {
            Ok(_) | Err(StripeError::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The object at `path` (`/v1/subscriptions/sub_…`); `None` when Stripe has none.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, StripeError> {
        match self.send(self.http.get(format!("{}{path}", self.base))).await {
            Ok(v) => Ok(Some(v)),
            Err(StripeError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes sure a monthly price (a plan) `id` of `amount_cents` euro cents exists, for a
    /// Stripe account set up by the platform itself (the local run and the tests); in
    /// production the prices are made in Stripe and `billing.prices` names them.
    pub async fn ensure_plan(&self, id: &str, amount_cents: u32, product_name: &str) -> Result<(), StripeError> {
        if self.get(&format!("/v1/plans/{id}")).await?.is_some() {
            return Ok(());
        }
        let form = vec![
            ("id".to_owned(), id.to_owned()),
            ("amount".to_owned(), amount_cents.to_string()),
            ("currency".to_owned(), "eur".to_owned()),
            ("interval".to_owned(), "month".to_owned()),
            ("product[name]".to_owned(), product_name.to_owned()),
        ];
        match self.post("/v1/plans", &form, &format!("nudge-plan-{id}")).await {
            Ok(_) => Ok(()),
            // Made meanwhile by another replica.
            Err(e) => match self.get(&format!("/v1/plans/{id}")).await? {
                Some(_) => Ok(()),
                None => Err(e),
            },
        }
    }
}

fn id_of(object: &Value, what: &str) -> Result<String, StripeError> {
    object["id"].as_str().map(str::to_owned).ok_or_else(|| StripeError::Unexpected(format!("a {what} without an id")))
}
