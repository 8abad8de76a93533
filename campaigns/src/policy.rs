//! A store's messaging policy: the rules every campaign's sends obey, per channel — how
//! often one shopper may be messaged (the global frequency cap), the quiet hours in the
//! shopper's own time zone, whether the shopper's consent is required — and the store's
//! global holdout, the share of shoppers no campaign ever messages, so the lift of all of
//! them together can be measured.
//!
//! A campaign marked transactional passes the caps and the quiet hours (never consent: a
//! shopper's recorded refusal always holds).

use jiff::{Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{FieldError, FrequencyCap};

/// The channels a campaign sends on.
pub const CHANNELS: [&str; 3] = ["on_site", "email", "webhook"];

/// Largest global holdout, in per cent.
pub const MAX_HOLDOUT_PERCENT: u8 = 30;

/// The store's rules for every send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingPolicy {
    pub on_site: ChannelPolicy,
    pub email: ChannelPolicy,
    pub webhook: ChannelPolicy,
    /// Shoppers no campaign messages, in per cent (0 to 30): the store's global holdout,
    /// assigned by shopper, so a shopper stays in it (raising the share adds shoppers,
    /// lowering it releases some; none moves the other way).
    pub holdout_percent: u8,
    /// How long after a shopper is assigned to a campaign's arm their purchases count for
    /// it, in days (1 to 30; 7 unless given).
    pub attribution_days: u16,
}

impl Default for MessagingPolicy {
    /// On site: no cap beyond the cell's cooldown, no quiet hours (the shopper is on the
    /// page), no consent asked. E-mail: at most 2 a day, quiet from 21:00 to 08:00 (sends
    /// wait for the morning), only to shoppers who agreed. Webhooks: no limits (the
    /// merchant's own systems apply theirs). No global holdout; purchases count for a
    /// week after an assignment.
    fn default() -> Self {
        Self {
            on_site: ChannelPolicy::default(),
            email: ChannelPolicy {
                frequency_cap: Some(FrequencyCap { max: 2, per_hours: 24 }),
                quiet_hours: Some(QuietHours { start: "21:00".into(), end: "08:00".into(), then: QuietAction::Defer }),
                requires_consent: true,
            },
            webhook: ChannelPolicy::default(),
            holdout_percent: 0,
            attribution_days: 7,
        }
    }
}

/// One channel's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelPolicy {
    /// At most `max` sends on this channel to one shopper per `per_hours`, all campaigns
    /// together; absent: no global cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_cap: Option<FrequencyCap>,
    /// Hours in the shopper's time zone when nothing is sent; absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// Whether a send needs the shopper's recorded consent for the channel. Without it a
    /// send goes to anyone who has not refused.
    pub requires_consent: bool,
}

/// A daily window, in the shopper's local time, when the channel is quiet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// `HH:MM`, 24-hour clock.
    pub start: String,
    /// `HH:MM`; before `start` for a window over midnight (`21:00` to `08:00`).
    pub end: String,
    /// What a send due in the window does.
    #[serde(default)]
    pub then: QuietAction,
}

/// What a send due in quiet hours does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuietAction {
    /// Waits for the end of the window.
    #[default]
    Defer,
    /// Is dropped (logged as skipped for `quiet_hours`).
    Skip,
}

/// Minutes since midnight of an `HH:MM`.
fn minute_of_day(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// The zone of an IANA name (`Europe/Berlin`), if this build knows it.
pub fn time_zone(name: &str) -> Option<TimeZone> {
    if name.is_empty() || name.len() > 64 {
        return None;
    }
    TimeZone::get(name).ok()
}

impl QuietHours {
    fn window(&self) -> Option<(u16, u16)> {
        let (start, end) = (minute_of_day(&self.start)?, minute_of_day(&self.end)?);
        (start != end).then_some((start, end))
    }

    /// If `at_ms` falls in the window, in the shopper's time zone `zone` (an IANA name;
    /// UTC when unknown or absent): when the window ends (Unix milliseconds).
    pub fn ends_after(&self, at_ms: i64, zone: &str) -> Option<i64> {
        let (start, end) = self.window()?;
        let tz = time_zone(zone).unwrap_or(TimeZone::UTC);
        let local = Timestamp::from_millisecond(at_ms).ok()?.to_zoned(tz.clone());
        let minute = u16::try_from(local.hour()).ok()? * 60 + u16::try_from(local.minute()).ok()?;
        let quiet = if start < end { (start..end).contains(&minute) } else { minute >= start || minute < end };
        if !quiet {
            return None;
        }
        // Today's end, or tomorrow's when the window runs over midnight and it is evening.
        let day = if start > end && minute >= start { local.date().tomorrow().ok()? } else { local.date() };
        let hour = i8::try_from(end / 60).ok()?;
        let min = i8::try_from(end % 60).ok()?;
        // A local time a clock change skips is taken as late as the gap is long (02:30 on a
        // night that jumps from 02:00 to 03:00 is 03:30), as calendars do.
        let local_end = day.at(hour, min, 0, 0);
        let ends = local_end.to_zoned(tz.clone()).ok()?.timestamp().as_millisecond();
        if ends > at_ms {
            return Some(ends);
        }
        // A local time that occurs twice (the clocks went back) and whose first occurrence
        // has passed: its second.
        let later = tz.to_ambiguous_zoned(local_end).later().ok()?.timestamp().as_millisecond();
        (later > at_ms).then_some(later)
    }
}

impl MessagingPolicy {
    /// The attribution window, in milliseconds.
    pub fn attribution_window_ms(&self) -> i64 {
        i64::from(self.attribution_days) * 86_400_000
    }

    /// The rules of `channel` (one of [`CHANNELS`]).
    pub fn channel(&self, channel: &str) -> Option<&ChannelPolicy> {
        match channel {
            "on_site" => Some(&self.on_site),
            "email" => Some(&self.email),
            "webhook" => Some(&self.webhook),
            _ => None,
        }
    }

    /// Every problem with the policy (empty: it may be saved).
    pub fn validate(&self) -> Vec<FieldError> {
        let mut problems = Vec::new();
        let mut invalid = |field: String, message: &str| {
            problems.push(FieldError { field, code: "invalid_value", message: message.into(), position: None });
        };
        if self.holdout_percent > MAX_HOLDOUT_PERCENT {
            invalid("holdout_percent".into(), "0 to 30");
        }
        if !(1..=30).contains(&self.attribution_days) {
            invalid("attribution_days".into(), "1 to 30");
        }
        for name in CHANNELS {
            let Some(channel) = self.channel(name) else { continue };
            if let Some(cap) = channel.frequency_cap {
                if !(1..=100).contains(&cap.max) {
                    invalid(format!("{name}.frequency_cap.max"), "1 to 100");
                }
                if !(1..=720).contains(&cap.per_hours) {
                    invalid(format!("{name}.frequency_cap.per_hours"), "1 to 720");
                }
            }
            if let Some(quiet) = &channel.quiet_hours {
                for (field, value) in [("start", &quiet.start), ("end", &quiet.end)] {
                    if minute_of_day(value).is_none() {
                        invalid(format!("{name}.quiet_hours.{field}"), "a time of day as HH:MM (00:00 to 23:59)");
                    }
                }
                if minute_of_day(&quiet.start).is_some() && quiet.start == quiet.end {
                    invalid(format!("{name}.quiet_hours.end"), "differs from the start");
                }
            }
        }
        problems
    }
}

impl FrequencyCap {
    /// Whether another send is allowed at `now_ms`, given the times of the earlier sends it
    /// counts.
    pub fn allows(&self, now_ms: i64, sent_at_ms: impl IntoIterator<Item = i64>) -> bool {
        let since = now_ms.saturating_sub(i64::from(self.per_hours) * 3_600_000);
        let recent = sent_at_ms.into_iter().filter(|at| *at > since).count();
        recent < usize::try_from(self.max).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn quiet(start: &str, end: &str) -> QuietHours {
        QuietHours { start: start.into(), end: end.into(), then: QuietAction::Defer }
    }

    #[test]
    fn a_window_over_midnight_ends_next_morning_in_the_shoppers_zone() {
        let night = quiet("21:00", "08:00");
        // 22:30 in Berlin (UTC+1 in November) is quiet until 08:00 Berlin, 07:00 UTC.
        assert_eq!(night.ends_after(ms("2026-11-28T21:30:00Z"), "Europe/Berlin"), Some(ms("2026-11-29T07:00:00Z")));
        // 06:00 in Berlin: until 08:00 the same morning.
        assert_eq!(night.ends_after(ms("2026-11-28T05:00:00Z"), "Europe/Berlin"), Some(ms("2026-11-28T07:00:00Z")));
        // Noon in Berlin is not quiet; the same instant is 07:00 in New York, which is.
        assert_eq!(night.ends_after(ms("2026-11-28T11:00:00Z"), "Europe/Berlin"), None);
        assert_eq!(night.ends_after(ms("2026-11-28T11:00:00Z"), "America/New_York"), Some(ms("2026-11-28T13:00:00Z")));
        // An unknown zone counts as UTC.
        assert_eq!(night.ends_after(ms("2026-11-28T23:00:00Z"), "Mars/Olympus"), Some(ms("2026-11-29T08:00:00Z")));
    }

    #[test]
    fn a_window_within_a_day_and_its_edges() {
        let lunch = quiet("12:00", "13:30");
        assert_eq!(lunch.ends_after(ms("2026-11-28T11:59:59Z"), ""), None);
        assert_eq!(lunch.ends_after(ms("2026-11-28T12:00:00Z"), ""), Some(ms("2026-11-28T13:30:00Z")));
        assert_eq!(lunch.ends_after(ms("2026-11-28T13:29:00Z"), ""), Some(ms("2026-11-28T13:30:00Z")));
        assert_eq!(lunch.ends_after(ms("2026-11-28T13:30:00Z"), ""), None);
    }

    #[test]
    fn a_window_ending_in_a_skipped_hour_ends_as_late_as_the_gap_is_long() {
        // Berlin skips 02:00–03:00 on 2026-03-29: a window ending at 02:30 ends at 03:30
        // local, 01:30 UTC.
        let early = quiet("01:00", "02:30");
        assert_eq!(early.ends_after(ms("2026-03-29T00:15:00Z"), "Europe/Berlin"), Some(ms("2026-03-29T01:30:00Z")));
    }

    #[test]
    fn a_window_ending_in_a_repeated_hour_ends_in_the_future() {
        // Berlin repeats 02:00–03:00 on 2026-10-25 (03:00 CEST becomes 02:00 CET). At 02:15
        // CET, the second pass, a window ending at 02:30 ends at 02:30 CET, 01:30 UTC — not
        // at the first 02:30, which has passed.
        let early = quiet("01:00", "02:30");
        assert_eq!(early.ends_after(ms("2026-10-25T01:15:00Z"), "Europe/Berlin"), Some(ms("2026-10-25T01:30:00Z")));
        // At 02:15 CEST, the first pass, the first 02:30 (00:30 UTC).
        assert_eq!(early.ends_after(ms("2026-10-25T00:15:00Z"), "Europe/Berlin"), Some(ms("2026-10-25T00:30:00Z")));
    }

    #[test]
    fn caps_count_only_sends_inside_their_window() {
        let cap = FrequencyCap { max: 2, per_hours: 24 };
        let now = ms("2026-11-28T12:00:00Z");
        let hour = 3_600_000;
        assert!(cap.allows(now, []));
        assert!(cap.allows(now, [now - hour]));
        assert!(!cap.allows(now, [now - hour, now - 2 * hour]));
        assert!(cap.allows(now, [now - hour, now - 24 * hour]), "a send a full window ago no longer counts");
    }

    #[test]
    fn problems_are_named_by_field() {
        let mut policy = MessagingPolicy { holdout_percent: 31, ..MessagingPolicy::default() };
        policy.email.quiet_hours = Some(quiet("25:00", "25:00"));
        policy.webhook.frequency_cap = Some(FrequencyCap { max: 0, per_hours: 721 });
        policy.on_site.quiet_hours = Some(quiet("09:00", "09:00"));
        let fields: Vec<String> = policy.validate().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "holdout_percent",
                "on_site.quiet_hours.end",
                "email.quiet_hours.start",
                "email.quiet_hours.end",
                "webhook.frequency_cap.max",
                "webhook.frequency_cap.per_hours",
            ]
        );
        assert!(MessagingPolicy::default().validate().is_empty());
    }

    #[test]
    fn a_policy_reads_from_partial_json_with_defaults_for_the_rest() {
        let policy: MessagingPolicy = serde_json::from_str(r#"{"holdout_percent": 5}"#).unwrap();
        assert_eq!(policy.email, MessagingPolicy::default().email);
        assert_eq!(policy.holdout_percent, 5);
        assert!(serde_json::from_str::<MessagingPolicy>(r#"{"sms": {}}"#).is_err());
    }
}
