//! A campaign as a merchant defines it: when it fires (a trigger, and a condition in the
//! [`crate::expr`] language), what it sends on which channel (variants splitting the
//! traffic, each with messages whose text is a [`crate::template`]), how it ranks against
//! the store's other campaigns (one intervention per moment: the highest priority wins),
//! how often a shopper may get it, and the share of shoppers held back to measure it.
//!
//! [`CampaignSpec::validate`] checks everything a merchant can get wrong and names each
//! problem by its field (`variants[1].messages[0].body`) with a stable code and, inside a
//! condition or a template, the character position.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    expr::{Condition, Schema},
    template::Template,
};

/// Most variants a campaign splits its traffic between.
pub const MAX_VARIANTS: usize = 5;
/// Most messages one variant sends (one per channel).
pub const MAX_MESSAGES: usize = 3;
/// Highest priority.
pub const MAX_PRIORITY: u16 = 1_000;
/// Largest per-campaign control group, in per cent.
pub const MAX_CONTROL_PERCENT: u8 = 50;
/// Longest delay of a delayed message: a week.
pub const MAX_DELAY_MINUTES: u32 = 7 * 24 * 60;

/// A campaign's definition: one version of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    /// 1 to 100 characters.
    pub name: String,
    pub trigger: Trigger,
    /// When the trigger fires, whether the campaign applies: a condition on the shopper's
    /// features and predictions, e.g. `cart_value >= 50 and prediction.abandonment > 0.7`.
    /// Absent: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// 0 to 1000; among the campaigns that apply at one moment, the highest sends (ties:
    /// the oldest campaign).
    #[serde(default)]
    pub priority: u16,
    /// 1 to 5, their weights adding up to 100.
    pub variants: Vec<Variant>,
    /// Shoppers held back from this campaign to measure its lift, in per cent (0 to 50;
    /// 10 unless given). Assigned by shopper, so a shopper stays in or out.
    #[serde(default = "default_control_percent")]
    pub control_percent: u8,
    /// How often one shopper may get this campaign; absent: the store's global caps only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_cap: Option<FrequencyCap>,
    /// A message the shopper expects (about their own order or cart, not marketing): it
    /// passes the store's frequency caps and quiet hours, never a shopper's refusal.
    #[serde(default)]
    pub transactional: bool,
}

fn default_control_percent() -> u8 {
    10
}

/// The moment a campaign may fire at. Idle and abandoned carts are found by the cell
/// itself, from the events' times, never from a client's word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// The shopper is about to leave the page with items in the cart.
    ExitIntent,
    /// The cart has had items and no activity for `minutes` (1 to 1440).
    CartIdle { minutes: u32 },
    /// A checkout started and was not completed within `minutes` (1 to 1440).
    CheckoutAbandoned { minutes: u32 },
    /// At a moment (any event) of a shopper with items in the cart whose abandonment
    /// probability is above `threshold` (strictly between 0 and 1); the cooldown keeps it
    /// from repeating.
    HighAbandonment { threshold: f64 },
    /// A page view, optionally only under `path_prefix` (starting with `/`).
    PageView {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path_prefix: Option<String>,
    },
    /// A product view.
    ProductView,
}

/// One arm of the campaign's traffic split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// 1 to 50 characters, unique within the campaign.
    pub name: String,
    /// Share of the treated shoppers, in per cent (1 to 100).
    pub weight: u8,
    /// 1 to 3, at most one per channel.
    pub messages: Vec<Message>,
}

/// What is sent, on which channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "channel", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// Pushed to the shopper's open page over the socket, shown as text.
    OnSite {
        kind: OnSiteKind,
        /// Template, 1 to 120 characters.
        title: String,
        /// Template, 1 to 1000 characters.
        body: String,
        /// Required for `discount_code`, and for `{{ discount.* }}` in the text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        discount: Option<Discount>,
    },
    /// An e-mail to the shopper's known address, `delay_minutes` after the moment (a
    /// purchase before then cancels it).
    Email {
        /// Template, 1 to 200 characters.
        subject: String,
        /// Template of the HTML body (values are HTML-escaped), up to 10,000 characters.
        html: String,
        /// Template of the plain-text body, up to 10,000 characters.
        text: String,
        #[serde(default)]
        delay_minutes: u32,
    },
    /// A signed POST to the merchant's endpoint, `delay_minutes` after the moment.
    Webhook {
        /// `https://…`.
        url: String,
        #[serde(default)]
        delay_minutes: u32,
    },
}

impl Message {
    pub fn channel(&self) -> &'static str {
        match self {
            Self::OnSite { .. } => "on_site",
            Self::Email { .. } => "email",
            Self::Webhook { .. } => "webhook",
        }
    }
}

/// The on-site message's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnSiteKind {
    Message,
    Reminder,
    FreeShippingBanner,
    DiscountCode,
}

/// A discount a message may offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Discount {
    /// 1 to 90.
    pub percent: u8,
    /// 1 to 40 of `A-Z`, `0-9`, `-`, `_`.
    pub code: String,
    /// The store's margin on the cart, in per cent (1 to 100).
    pub margin_percent: u8,
    /// How many points the discount adds to a shopper's chance of buying, as the merchant
    /// expects it (1 to 50; 5 unless given).
    #[serde(default = "default_uplift_percent")]
    pub expected_uplift_percent: u8,
}

fn default_uplift_percent() -> u8 {
    5
}

impl Discount {
    /// Whether the discount is worth offering to a shopper who would abandon the cart with
    /// probability `abandonment`: the margin it is expected to win (uplift × margin) must
    /// exceed what it costs (the discount, given on every order it is used for: those who
    /// would have bought anyway and those it wins). All as shares of the cart's value.
    pub fn worth_offering(&self, abandonment: f64) -> Incentive {
        let uplift = f64::from(self.expected_uplift_percent) / 100.0;
        let margin = f64::from(self.margin_percent) / 100.0;
        let discount = f64::from(self.percent) / 100.0;
        let buys = ((1.0 - abandonment.clamp(0.0, 1.0)) + uplift).min(1.0);
        let gain = uplift * margin;
        let cost = buys * discount;
        Incentive { abandonment, uplift, margin, discount, gain, cost, offered: gain > cost }
    }
}

/// The inputs and outcome of a margin-aware offer, logged with the decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Incentive {
    /// The model's probability that the shopper abandons the cart.
    pub abandonment: f64,
    pub uplift: f64,
    pub margin: f64,
    pub discount: f64,
    /// Expected margin won, as a share of the cart: uplift × margin.
    pub gain: f64,
    /// Expected discount given, as a share of the cart: P(buy with the offer) × discount.
    pub cost: f64,
    pub offered: bool,
}

impl std::fmt::Display for Incentive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "abandonment {:.3}, uplift {:.3} × margin {:.2} = {:.4} against {:.4} = P(buy) × discount {:.2}: {}",
            self.abandonment,
            self.uplift,
            self.margin,
            self.gain,
            self.cost,
            self.discount,
            if self.offered { "offered" } else { "not worth it" }
        )
    }
}

/// At most `max` sends of the campaign to one shopper per `per_hours`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    /// 1 to 100.
    pub max: u32,
    /// 1 to 720.
    pub per_hours: u32,
}

/// One problem with a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Where: `name`, `condition`, `variants[0].messages[1].body`, …
    pub field: String,
    /// `invalid_value`, `syntax_error`, `unknown_name`, `type_mismatch`, `too_long`,
    /// `too_deep`, `template_syntax`, `unknown_variable`.
    pub code: &'static str,
    pub message: String,
    /// Inside a condition or a template: the character it goes wrong at (0-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
}

/// What a campaign may refer to: the names its condition may use, and the variables its
/// messages may.
pub struct Vocabulary<'a> {
    pub schema: &'a dyn Schema,
    pub variables: &'a dyn Fn(&str) -> bool,
    /// Whether webhook URLs may be `http://` to a loopback address (local runs and tests
    /// only: a merchant must never make the platform call its own network).
    pub loopback_webhooks: bool,
}

struct Problems(Vec<FieldError>);

impl Problems {
    fn invalid(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), code: "invalid_value", message: message.into(), position: None });
    }

    fn chars_between(&mut self, field: &str, value: &str, min: usize, max: usize) {
        let n = value.chars().count();
        if n < min || n > max || value.trim().is_empty() && min > 0 {
            self.invalid(field, format!("{min} to {max} characters"));
        }
    }

    fn template(&mut self, field: &str, source: &str, max: usize, vocabulary: &Vocabulary<'_>) {
        if source.chars().count() > max {
            self.invalid(field, format!("at most {max} characters"));
            return;
        }
        if let Err(e) = Template::parse(source, vocabulary.variables) {
            self.0.push(FieldError {
                field: field.to_owned(),
                code: e.code,
                message: e.message,
                position: Some(e.position),
            });
        }
    }
}

impl CampaignSpec {
    /// Every problem with the campaign (empty: it may be saved).
    pub fn validate(&self, vocabulary: &Vocabulary<'_>) -> Vec<FieldError> {
        let mut p = Problems(Vec::new());
        p.chars_between("name", &self.name, 1, 100);
        match &self.trigger {
            Trigger::CartIdle { minutes } | Trigger::CheckoutAbandoned { minutes } => {
                if !(1..=1_440).contains(minutes) {
                    p.invalid("trigger.minutes", "1 to 1440 minutes");
                }
            }
            Trigger::HighAbandonment { threshold } => {
                if !(threshold.is_finite() && *threshold > 0.0 && *threshold < 1.0) {
                    p.invalid("trigger.threshold", "strictly between 0 and 1");
                }
            }
            Trigger::PageView { path_prefix: Some(prefix) } => {
                if !prefix.starts_with('/') || prefix.chars().count() > 200 {
                    p.invalid("trigger.path_prefix", "a path starting with `/`, at most 200 characters");
                }
            }
            Trigger::ExitIntent | Trigger::PageView { path_prefix: None } | Trigger::ProductView => {}
        }
        if let Some(condition) = &self.condition
            && let Err(e) = Condition::parse(condition, vocabulary.schema)
        {
            p.0.push(FieldError {
                field: "condition".into(),
                code: e.code,
                message: e.message,
                position: Some(e.position),
            });
        }
        if self.priority > MAX_PRIORITY {
            p.invalid("priority", format!("0 to {MAX_PRIORITY}"));
        }
        if self.control_percent > MAX_CONTROL_PERCENT {
            p.invalid("control_percent", format!("0 to {MAX_CONTROL_PERCENT}"));
        }
        if let Some(cap) = self.frequency_cap {
            if !(1..=100).contains(&cap.max) {
                p.invalid("frequency_cap.max", "1 to 100");
            }
            if !(1..=720).contains(&cap.per_hours) {
                p.invalid("frequency_cap.per_hours", "1 to 720");
            }
        }
        if self.variants.is_empty() || self.variants.len() > MAX_VARIANTS {
            p.invalid("variants", format!("1 to {MAX_VARIANTS} variants"));
        }
        let total: u32 = self.variants.iter().map(|v| u32::from(v.weight)).sum();
        if !self.variants.is_empty() && total != 100 {
            p.invalid("variants", format!("the weights add up to {total}, not 100"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, variant) in self.variants.iter().enumerate() {
            let at = format!("variants[{i}]");
            p.chars_between(&format!("{at}.name"), &variant.name, 1, 50);
            if !names.insert(variant.name.as_str()) {
                p.invalid(format!("{at}.name"), "another variant has this name");
            }
            if !(1..=100).contains(&variant.weight) {
                p.invalid(format!("{at}.weight"), "1 to 100");
            }
            if variant.messages.is_empty() || variant.messages.len() > MAX_MESSAGES {
                p.invalid(format!("{at}.messages"), format!("1 to {MAX_MESSAGES} messages"));
            }
            let mut channels = std::collections::HashSet::new();
            for (j, message) in variant.messages.iter().enumerate() {
                let at = format!("{at}.messages[{j}]");
                if !channels.insert(message.channel()) {
                    p.invalid(&at, format!("another message of the variant is on {}", message.channel()));
                }
                message_problems(&mut p, &at, message, vocabulary);
            }
        }
        p.0
    }
}

fn message_problems(p: &mut Problems, at: &str, message: &Message, vocabulary: &Vocabulary<'_>) {
    let delay_ok = |d: u32| d <= MAX_DELAY_MINUTES;
    match message {
        Message::OnSite { kind, title, body, discount } => {
            if discount.is_none() {
                for (field, text) in [("title", title), ("body", body)] {
                    if text.contains("discount.")
                        && Template::parse(text, vocabulary.variables)
                            .is_ok_and(|t| t.variables().any(|v| v.starts_with("discount.")))
                    {
                        p.invalid(format!("{at}.{field}"), "names the discount, and the message offers none");
                    }
                }
            }
            p.chars_between(&format!("{at}.title"), title, 1, 120);
            p.template(&format!("{at}.title"), title, 120, vocabulary);
            p.chars_between(&format!("{at}.body"), body, 1, 1_000);
            p.template(&format!("{at}.body"), body, 1_000, vocabulary);
            match discount {
                Some(d) => {
                    if !(1..=90).contains(&d.percent) {
                        p.invalid(format!("{at}.discount.percent"), "1 to 90");
                    }
                    if !(1..=100).contains(&d.margin_percent) {
                        p.invalid(format!("{at}.discount.margin_percent"), "1 to 100");
                    }
                    if !(1..=50).contains(&d.expected_uplift_percent) {
                        p.invalid(format!("{at}.discount.expected_uplift_percent"), "1 to 50");
                    }
                    let code_ok = (1..=40).contains(&d.code.len())
                        && d.code
                            .bytes()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
                    if !code_ok {
                        p.invalid(format!("{at}.discount.code"), "1 to 40 of A-Z, 0-9, `-` and `_`");
                    }
                }
                None if *kind == OnSiteKind::DiscountCode => {
                    p.invalid(format!("{at}.discount"), "a discount_code message needs a discount");
                }
                None => {}
            }
        }
        Message::Email { subject, html, text, delay_minutes } => {
            p.chars_between(&format!("{at}.subject"), subject, 1, 200);
            p.template(&format!("{at}.subject"), subject, 200, vocabulary);
            p.template(&format!("{at}.html"), html, crate::template::MAX_TEMPLATE_LEN, vocabulary);
            p.chars_between(&format!("{at}.text"), text, 1, crate::template::MAX_TEMPLATE_LEN);
            p.template(&format!("{at}.text"), text, crate::template::MAX_TEMPLATE_LEN, vocabulary);
            if !delay_ok(*delay_minutes) {
                p.invalid(format!("{at}.delay_minutes"), format!("0 to {MAX_DELAY_MINUTES}"));
            }
        }
        Message::Webhook { url, delay_minutes } => {
            if !webhook_url_ok(url, vocabulary.loopback_webhooks) {
                p.invalid(format!("{at}.url"), "an https:// URL of at most 500 characters");
            }
            if !delay_ok(*delay_minutes) {
                p.invalid(format!("{at}.delay_minutes"), format!("0 to {MAX_DELAY_MINUTES}"));
            }
        }
    }
}

fn webhook_url_ok(url: &str, loopback: bool) -> bool {
    if url.len() > 500 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    // The authority, without credentials (refused) and port.
    let host_of = |rest: &str| -> Option<String> {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map(|(h, _)| h)?,
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        (!host.is_empty()).then(|| host.to_ascii_lowercase())
    };
    if let Some(rest) = url.strip_prefix("https://") {
        return host_of(rest).is_some_and(|host| public_host(&host));
    }
    if loopback && let Some(rest) = url.strip_prefix("http://") {
        return host_of(rest).is_some_and(|host| matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1"));
    }
    false
}

/// Whether `host` may be the platform's to call: a name under a public-looking domain, or
/// a [`public_address`]. (The sender checks the address a name resolves to again, at every
/// connection.)
fn public_host(host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => public_address(ip),
        Err(_) => {
            let name = host.trim_end_matches('.');
            name.contains('.')
                && !["localhost", "local", "internal", "intranet", "lan", "home", "corp"]
                    .iter()
                    .any(|tld| name == *tld || name.ends_with(&format!(".{tld}")))
        }
    }
}

/// Whether `ip` is outside private, loopback, link-local, shared and reserved ranges.
pub fn public_address(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(a) => {
            let [first, second, ..] = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || first == 0
                || (first == 100 && (64..128).contains(&second))
                || first >= 240)
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped().is_some())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::expr::Type;

    struct Names;

    impl Schema for Names {
        fn type_of(&self, name: &str) -> Option<Type> {
            match name {
                "cart_value" | "prediction.abandonment" => Some(Type::Number),
                "checkout_started" => Some(Type::Bool),
                _ => None,
            }
        }
    }

    fn vocabulary() -> Vocabulary<'static> {
        Vocabulary {
            schema: &Names,
            variables: &|v| matches!(v, "cart_value" | "discount.code"),
            loopback_webhooks: false,
        }
    }

    fn campaign() -> serde_json::Value {
        json!({
            "name": "Exit rescue",
            "trigger": { "type": "exit_intent" },
            "condition": "cart_value >= 50 and prediction.abandonment > 0.6",
            "priority": 10,
            "variants": [
                { "name": "reminder", "weight": 50, "messages": [
                    { "channel": "on_site", "kind": "reminder", "title": "Still there?", "body": "Your cart ({{ cart_value }}) is saved." },
                    { "channel": "email", "subject": "Your cart", "html": "<p>{{cart_value}}</p>", "text": "{{cart_value}}", "delay_minutes": 240 },
                ]},
                { "name": "discount", "weight": 50, "messages": [
                    { "channel": "on_site", "kind": "discount_code", "title": "10 % off", "body": "Use {{discount.code}}",
                      "discount": { "percent": 10, "code": "SAVE10", "margin_percent": 40 } },
                ]},
            ],
            "frequency_cap": { "max": 2, "per_hours": 24 },
        })
    }

    fn problems(spec: serde_json::Value) -> Vec<(String, &'static str, Option<usize>)> {
        let spec: CampaignSpec = serde_json::from_value(spec).unwrap();
        spec.validate(&vocabulary()).into_iter().map(|e| (e.field, e.code, e.position)).collect()
    }

    #[test]
    fn a_good_campaign_passes_and_round_trips() {
        assert_eq!(problems(campaign()), vec![]);
        let spec: CampaignSpec = serde_json::from_value(campaign()).unwrap();
        assert_eq!(spec.control_percent, 10, "a control group unless asked otherwise");
        let again: CampaignSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn each_mistake_is_named_by_its_field() {
        let mut c = campaign();
        c["condition"] = json!("cart_value >= 50 and basket > 1");
        c["variants"][0]["weight"] = json!(60);
        c["variants"][1]["name"] = json!("reminder");
        c["variants"][0]["messages"][0]["body"] = json!("Hi {{ shopper.email }}");
        c["variants"][1]["messages"][0]["discount"]["code"] = json!("save 10");
        c["variants"][0]["messages"][1]["delay_minutes"] = json!(99_999);
        c["trigger"] = json!({ "type": "high_abandonment", "threshold": 1.5 });
        c["control_percent"] = json!(80);
        assert_eq!(
            problems(c),
            vec![
                ("trigger.threshold".to_owned(), "invalid_value", None),
                ("condition".to_owned(), "unknown_name", Some(21)),
                ("control_percent".to_owned(), "invalid_value", None),
                ("variants".to_owned(), "invalid_value", None),
                ("variants[0].messages[0].body".to_owned(), "unknown_variable", Some(6)),
                ("variants[0].messages[1].delay_minutes".to_owned(), "invalid_value", None),
                ("variants[1].name".to_owned(), "invalid_value", None),
                ("variants[1].messages[0].discount.code".to_owned(), "invalid_value", None),
            ]
        );
        let mut c = campaign();
        c["variants"][1]["messages"][0].as_object_mut().unwrap().remove("discount");
        c["variants"][1]["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "channel": "webhook", "url": "http://10.0.0.1/hook" }));
        c["variants"][1]["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "channel": "webhook", "url": "https://shop.example/hook" }));
        assert_eq!(
            problems(c),
            vec![
                ("variants[1].messages[0].body".to_owned(), "invalid_value", None),
                ("variants[1].messages[0].discount".to_owned(), "invalid_value", None),
                ("variants[1].messages[1].url".to_owned(), "invalid_value", None),
                ("variants[1].messages[2]".to_owned(), "invalid_value", None),
            ]
        );
    }

    #[test]
    fn unknown_channels_triggers_and_fields_do_not_parse() {
        let mut c = campaign();
        c["variants"][0]["messages"][0]["channel"] = json!("sms");
        assert!(serde_json::from_value::<CampaignSpec>(c).is_err());
        let mut c = campaign();
        c["trigger"] = json!({ "type": "moon_phase" });
        assert!(serde_json::from_value::<CampaignSpec>(c).is_err());
        let mut c = campaign();
        c["audience"] = json!("everyone");
        assert!(serde_json::from_value::<CampaignSpec>(c).is_err());
    }

    #[test]
    fn webhooks_go_out_over_https_and_to_loopback_only_when_allowed() {
        assert!(webhook_url_ok("https://shop.example/hooks/nudge", false));
        assert!(webhook_url_ok("https://shop.example:8443/hooks", false));
        assert!(webhook_url_ok("https://93.184.216.34/hooks", false));
        assert!(!webhook_url_ok("http://shop.example/hooks", false));
        assert!(!webhook_url_ok("https://user@shop.example/", false));
        assert!(!webhook_url_ok("https:///nohost", false));
        // The platform's own network, by address or by name.
        for inside in [
            "https://10.0.0.1/",
            "https://169.254.169.254/latest",
            "https://127.0.0.1/",
            "https://100.64.0.1/",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://localhost/",
            "https://api.localhost/",
            "https://db.internal/",
            "https://intranet/",
            "https://0.0.0.0/",
        ] {
            assert!(!webhook_url_ok(inside, false), "{inside}");
        }
        assert!(!webhook_url_ok("http://127.0.0.1:9000/hook", false));
        assert!(webhook_url_ok("http://127.0.0.1:9000/hook", true));
        assert!(!webhook_url_ok("http://localhost:1@evil.example/", true));
        assert!(!webhook_url_ok("http://10.0.0.1/hook", true));
    }

    #[test]
    fn a_discount_goes_to_shoppers_likely_to_leave_when_its_margin_pays_for_it() {
        let d = Discount { percent: 10, code: "SAVE10".into(), margin_percent: 40, expected_uplift_percent: 5 };
        // Uplift 0.05 × margin 0.4 = 0.02 won; cost 0.1 × P(buy).
        let likely_to_stay = d.worth_offering(0.5);
        assert!(!likely_to_stay.offered, "{likely_to_stay}");
        assert!((likely_to_stay.cost - 0.055).abs() < 1e-12 && (likely_to_stay.gain - 0.02).abs() < 1e-12);
        let likely_to_leave = d.worth_offering(0.9);
        assert!(likely_to_leave.offered, "{likely_to_leave}");
        // At the edge (abandonment 0.85): P(buy) 0.2 costs 0.02, what it wins; not more.
        assert!(!d.worth_offering(0.85).offered);
        let thin = Discount { margin_percent: 5, ..d.clone() };
        assert!(!thin.worth_offering(0.99).offered, "a thin margin never pays for 10 % off");
    }
}
