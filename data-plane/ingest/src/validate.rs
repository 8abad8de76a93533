//! Validation of posted events into their Protobuf form.

use chrono::{DateTime, Duration, Utc};
use nudge_contracts::{
    EventId, ShopperId,
    ingest::RawEvent,
    proto::events::v1::{
        CartChange, CheckoutStart, Consent, Event, ExitIntent, Identify, InterventionFeedback, PageView, ProductView,
        Purchase, event::Payload,
    },
};
use nudge_tenants::TenantId;
use serde::Serialize;
use serde_json::{Map, Value};

/// How far ahead of the cell's clock an event may claim to have happened (clock skew).
pub const MAX_FUTURE: Duration = Duration::minutes(10);
/// How old an event may be when it arrives.
pub const MAX_AGE: Duration = Duration::days(7);
/// The most an event's `properties` may weigh, as JSON text. Every property Nudge reads is
/// far smaller; the bound keeps one event from carrying a payload nobody asked for.
pub const MAX_PROPERTIES_BYTES: usize = 16 * 1024;

/// About how many bytes `value` takes as JSON text (strings unescaped), without writing it.
fn json_weight(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_weight(v) + 1).sum::<usize>(),
        Value::Object(map) => 2 + map.iter().map(|(k, v)| k.len() + 4 + json_weight(v)).sum::<usize>(),
    }
}

/// One invalid event in a batch: where, a stable code, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventError {
    pub index: usize,
    pub code: &'static str,
    pub message: String,
}

fn err(index: usize, code: &'static str, message: impl Into<String>) -> EventError {
    EventError { index, code, message: message.into() }
}

/// Parses event `index` of a batch for `tenant`, received at `now`.
pub fn parse_event(index: usize, raw: &RawEvent, tenant: TenantId, now: DateTime<Utc>) -> Result<Event, EventError> {
    let event_id = EventId::parse(&raw.event_id).map_err(|e| err(index, "invalid_event_id", e.to_string()))?;
    let shopper_id = ShopperId::parse(&raw.shopper_id).map_err(|e| err(index, "invalid_shopper_id", e.to_string()))?;
    let occurred_at = match raw.occurred_at.as_deref() {
        None => now,
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| err(index, "invalid_timestamp", "occurred_at must be an RFC 3339 timestamp"))?,
    };
    if occurred_at > now + MAX_FUTURE {
        return Err(err(index, "timestamp_in_future", "occurred_at is more than 10 minutes ahead of the server clock"));
    }
    if occurred_at < now - MAX_AGE {
        return Err(err(index, "timestamp_too_old", "occurred_at is more than 7 days in the past"));
    }
    if 2 + raw.properties.iter().map(|(k, v)| k.len() + 4 + json_weight(v)).sum::<usize>() > MAX_PROPERTIES_BYTES {
        return Err(err(
            index,
            "event_too_large",
            format!("properties take more than {MAX_PROPERTIES_BYTES} bytes; send only what the event needs"),
        ));
    }
    let props = Props { index, map: &raw.properties };
    let payload = match raw.kind.as_str() {
        "page_view" => Payload::PageView(PageView {
            url: props.opt_text("url", 2048)?.unwrap_or_default(),
            referrer: props.opt_text("referrer", 2048)?.unwrap_or_default(),
        }),
        "product_view" => Payload::ProductView(ProductView {
            product_id: props.text("product_id", 128)?,
            price_minor: props.money("price")?,
            currency: props.currency()?,
        }),
        "add_to_cart" => Payload::AddToCart(props.cart_change()?),
        "remove_from_cart" => Payload::RemoveFromCart(props.cart_change()?),
        "checkout_start" => Payload::CheckoutStart(CheckoutStart {
            cart_value_minor: props.opt_money("cart_value")?.unwrap_or(0),
            currency: props.currency()?,
        }),
        "purchase" => Payload::Purchase(Purchase {
            order_id: props.text("order_id", 128)?,
            value_minor: props.money("value")?,
            currency: props.currency()?,
        }),
        "exit_intent" => Payload::ExitIntent(ExitIntent {}),
        "identify" => props.identify()?,
        "intervention" => Payload::InterventionFeedback(InterventionFeedback {
            intervention_id: props.text("intervention_id", 64)?,
            action: match props.text("action", 16)?.as_str() {
                action @ ("shown" | "clicked" | "dismissed") => action.to_owned(),
                _ => return Err(props.invalid("action", "must be one of shown, clicked, dismissed")),
            },
        }),
        "consent" => Payload::Consent(Consent {
            channel: props.channel()?,
            granted: props.flag("granted")?,
            source: props.opt_text("source", 100)?.unwrap_or_default(),
        }),
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(err(index, "unknown_event_type", format!("unknown event type `{shown}`")));
        }
    };
    let time_zone = match raw.time_zone.as_deref() {
        None | Some("") => String::new(),
        Some(zone) if nudge_campaigns::policy::time_zone(zone).is_some() => zone.to_owned(),
        Some(_) => {
            return Err(err(index, "invalid_time_zone", "time_zone must be an IANA time zone such as Europe/Berlin"));
        }
    };
    Ok(Event {
        time_zone,
        tenant_id: tenant.to_string(),
        event_id: event_id.to_string(),
        shopper_id: shopper_id.to_string(),
        occurred_at_ms: occurred_at.timestamp_millis(),
        received_at_ms: now.timestamp_millis(),
        payload: Some(payload),
    })
}

/// Typed access to an event's `properties`.
struct Props<'a> {
    index: usize,
    map: &'a Map<String, Value>,
}

impl Props<'_> {
    fn invalid(&self, field: &str, what: &str) -> EventError {
        err(self.index, "invalid_property", format!("properties.{field} {what}"))
    }

    fn opt_text(&self, field: &str, max: usize) -> Result<Option<String>, EventError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(self.invalid(field, &format!("is longer than {max} bytes"))),
            Some(_) => Err(self.invalid(field, "must be a string")),
        }
    }

    fn text(&self, field: &str, max: usize) -> Result<String, EventError> {
        match self.opt_text(field, max)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(self.invalid(field, "is required")),
        }
    }

    /// A SHA-256 in hex (either case), as lowercase hex.
    fn opt_sha256(&self, field: &str) -> Result<Option<String>, EventError> {
        match self.opt_text(field, 64)? {
            None => Ok(None),
            Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(Some(s.to_ascii_lowercase())),
            Some(_) => Err(self.invalid(field, "must be a SHA-256 in hex (64 hex digits)")),
        }
    }

    fn flag(&self, field: &str) -> Result<bool, EventError> {
        match self.map.get(field) {
            Some(Value::Bool(b)) => Ok(*b),
            None | Some(Value::Null) => Err(self.invalid(field, "is required")),
            Some(_) => Err(self.invalid(field, "must be true or false")),
        }
    }

    /// A channel a shopper's consent is about.
    fn channel(&self) -> Result<String, EventError> {
        let channel = self.text("channel", 16)?;
        if nudge_campaigns::policy::CHANNELS.contains(&channel.as_str()) {
            Ok(channel)
        } else {
            Err(self.invalid("channel", "must be one of on_site, email, webhook"))
        }
    }

    /// An identify: the customer reference, and the address (for e-mails) or its digest (for
    /// erasure requests). An address given makes its digest, which must then agree with a
    /// digest given beside it.
    fn identify(&self) -> Result<Payload, EventError> {
        let email = match self.opt_text("email", 254)? {
            None => String::new(),
            Some(address) => {
                let address = address.trim().to_lowercase();
                let plausible = address.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
                }) && address.matches('@').count() == 1
                    && !address
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'));
                if !plausible {
                    return Err(self.invalid("email", "must be an e-mail address"));
                }
                address
            }
        };
        let given = self.opt_sha256("email_sha256")?;
        let email_sha256 = if email.is_empty() {
            given.unwrap_or_default()
        } else {
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(email.as_bytes()));
            if given.is_some_and(|g| g != digest) {
                return Err(self.invalid("email_sha256", "is not the SHA-256 of the email given beside it"));
            }
            digest
        };
        Ok(Payload::Identify(Identify { customer_ref: self.text("customer_ref", 128)?, email_sha256, email }))
    }

    /// A non-negative amount in major units (`49.99`) as hundredths (`4999`), whatever the
    /// currency's own minor unit.
    fn opt_money(&self, field: &str) -> Result<Option<i64>, EventError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                let v = n.as_f64().filter(|v| v.is_finite() && *v >= 0.0 && *v <= 1e10);
                v.map(|v| Some((v * 100.0).round() as i64))
                    .ok_or_else(|| self.invalid(field, "must be an amount between 0 and 10^10"))
            }
            Some(_) => Err(self.invalid(field, "must be a number")),
        }
    }

    fn money(&self, field: &str) -> Result<i64, EventError> {
        self.opt_money(field)?.ok_or_else(|| self.invalid(field, "is required"))
    }

    fn currency(&self) -> Result<String, EventError> {
        let c = self.text("currency", 3)?;
        if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(c)
        } else {
            Err(self.invalid("currency", "must be an ISO 4217 code such as EUR"))
        }
    }

    fn cart_change(&self) -> Result<CartChange, EventError> {
        let quantity = match self.map.get("quantity") {
            None | Some(Value::Null) => 1,
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|q| (1..=1000).contains(q))
                .ok_or_else(|| self.invalid("quantity", "must be a whole number from 1 to 1000"))?
                as u32,
            Some(_) => return Err(self.invalid("quantity", "must be a number")),
        };
        Ok(CartChange {
            product_id: self.text("product_id", 128)?,
            price_minor: self.money("price")?,
            currency: self.currency()?,
            quantity,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(v: Value) -> RawEvent {
        serde_json::from_value(v).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_a_cart_add() {
        let t = TenantId::new();
        let e = parse_event(
            0,
            &raw(json!({"event_id": "e1", "type": "add_to_cart", "shopper_id": "s1",
                "occurred_at": "2026-11-27T11:59:00Z",
                "properties": {"product_id": "sku-1", "price": 49.99, "currency": "EUR", "quantity": 2}})),
            t,
            now(),
        )
        .unwrap();
        assert_eq!(e.tenant_id, t.to_string());
        assert_eq!(e.occurred_at_ms, now().timestamp_millis() - 60_000);
        let Some(Payload::AddToCart(c)) = e.payload else { panic!("wrong payload") };
        assert_eq!((c.price_minor, c.quantity, c.currency.as_str()), (4999, 2, "EUR"));
    }

    #[test]
    fn an_identify_keeps_the_email_hash_in_lowercase() {
        let hash = "B4C9A289323B21A01C3E940F150EB9B8C542587F1ABFD8F0E1CC1FFC5E475514";
        let e = parse_event(
            0,
            &raw(json!({"event_id": "e1", "type": "identify", "shopper_id": "s1",
                "properties": {"customer_ref": "c-1", "email_sha256": hash}})),
            TenantId::new(),
            now(),
        )
        .unwrap();
        let Some(Payload::Identify(i)) = e.payload else { panic!("wrong payload") };
        assert_eq!(i.email_sha256, hash.to_ascii_lowercase());
    }

    #[test]
    fn an_identify_with_an_address_carries_its_digest_and_consent_is_per_channel() {
        let e = parse_event(
            0,
            &raw(json!({"event_id": "e1", "type": "identify", "shopper_id": "s1", "time_zone": "Europe/Berlin",
                "properties": {"customer_ref": "c-1", "email": " Ada@Example.com "}})),
            TenantId::new(),
            now(),
        )
        .unwrap();
        assert_eq!(e.time_zone, "Europe/Berlin");
        let Some(Payload::Identify(i)) = e.payload else { panic!("wrong payload") };
        assert_eq!(i.email, "ada@example.com");
        assert_eq!(i.email_sha256, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"ada@example.com")));
        let e = parse_event(
            0,
            &raw(json!({"event_id": "e2", "type": "consent", "shopper_id": "s1",
                "properties": {"channel": "email", "granted": true, "source": "checkout_checkbox"}})),
            TenantId::new(),
            now(),
        )
        .unwrap();
        assert_eq!(
            e.payload,
            Some(Payload::Consent(Consent {
                channel: "email".into(),
                granted: true,
                source: "checkout_checkbox".into()
            }))
        );
    }

    #[test]
    fn codes_for_each_kind_of_mistake() {
        let t = TenantId::new();
        let cases = [
            (json!({"event_id": "e", "type": "teleport", "shopper_id": "s"}), "unknown_event_type"),
            (json!({"event_id": "", "type": "exit_intent", "shopper_id": "s"}), "invalid_event_id"),
            (json!({"event_id": "e", "type": "exit_intent", "shopper_id": "a b"}), "invalid_shopper_id"),
            (
                json!({"event_id": "e", "type": "exit_intent", "shopper_id": "s", "occurred_at": "yesterday"}),
                "invalid_timestamp",
            ),
            (
                json!({"event_id": "e", "type": "exit_intent", "shopper_id": "s", "occurred_at": "2026-11-28T12:00:00Z"}),
                "timestamp_in_future",
            ),
            (
                json!({"event_id": "e", "type": "exit_intent", "shopper_id": "s", "occurred_at": "2026-01-01T12:00:00Z"}),
                "timestamp_too_old",
            ),
            (
                json!({"event_id": "e", "type": "add_to_cart", "shopper_id": "s", "properties": {"price": 1, "currency": "EUR"}}),
                "invalid_property",
            ),
            (
                json!({"event_id": "e", "type": "add_to_cart", "shopper_id": "s", "properties": {"product_id": "p", "price": -1, "currency": "EUR"}}),
                "invalid_property",
            ),
            (
                json!({"event_id": "e", "type": "purchase", "shopper_id": "s", "properties": {"order_id": "o", "value": 1, "currency": "euro"}}),
                "invalid_property",
            ),
            (
                json!({"event_id": "e", "type": "identify", "shopper_id": "s", "properties": {"customer_ref": "c", "email_sha256": "shopper@example.com"}}),
                "invalid_property",
            ),
            (
                json!({"event_id": "e", "type": "exit_intent", "shopper_id": "s", "properties": {"notes": "x".repeat(20_000)}}),
                "event_too_large",
            ),
            (
                json!({"event_id": "e", "type": "exit_intent", "shopper_id": "s", "time_zone": "Mars/Olympus"}),
                "invalid_time_zone",
            ),
            (
                json!({"event_id": "e", "type": "consent", "shopper_id": "s", "properties": {"channel": "sms", "granted": true}}),
                "invalid_property",
            ),
            (
                json!({"event_id": "e", "type": "intervention", "shopper_id": "s", "properties": {"intervention_id": "i", "action": "liked"}}),
                "invalid_property",
            ),
            (
                json!({"event_id": "e", "type": "consent", "shopper_id": "s", "properties": {"channel": "email", "granted": "yes"}}),
                "invalid_property",
            ),
            (
                json!({"event_id": "e", "type": "identify", "shopper_id": "s", "properties": {"customer_ref": "c", "email": "not an address"}}),
                "invalid_property",
            ),
            (
                json!({"event_id": "e", "type": "identify", "shopper_id": "s", "properties": {"customer_ref": "c", "email": "a@example.com", "email_sha256": "0".repeat(64)}}),
                "invalid_property",
            ),
        ];
        for (i, (body, code)) in cases.into_iter().enumerate() {
            let e = parse_event(i, &raw(body.clone()), t, now()).unwrap_err();
            assert_eq!((e.index, e.code), (i, code), "{body}");
        }
    }
}
