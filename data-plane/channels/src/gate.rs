//! Whether one send may go now: the shopper's consent for the channel, then (unless the
//! campaign is transactional) the store's quiet hours in the shopper's time zone, its
//! global frequency cap for the channel and the campaign's own cap. The first rule that
//! stops a send names the reason it is logged with.

use nudge_campaigns::{
    model::FrequencyCap,
    policy::{ChannelPolicy, QuietAction},
};
use serde::{Deserialize, Serialize};

/// A shopper's recorded answer for a channel: the evidence a send is checked against and
/// logged with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentRecord {
    pub granted: bool,
    /// When the shopper answered (the event's time, Unix milliseconds).
    pub at_ms: i64,
    /// The event that carried the answer.
    pub event_id: String,
    /// Where it was given, as the store named it.
    #[serde(default)]
    pub source: String,
}

/// An earlier send to the shopper, as the caps count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRecord {
    pub channel: String,
    pub campaign_id: String,
    pub at_ms: i64,
}

/// The send being gated.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub channel: &'a str,
    pub campaign_id: &'a str,
    pub transactional: bool,
    /// The campaign's own cap, counted on this channel.
    pub campaign_cap: Option<FrequencyCap>,
}

/// What the gate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// Not sent; the reason it is logged with.
    Skip(&'static str),
    /// Quiet hours: due again at this instant.
    Defer {
        until_ms: i64,
    },
}

/// Gates `send` at `now_ms` for a shopper in time zone `zone` (IANA; UTC when unknown).
pub fn gate(
    policy: &ChannelPolicy,
    send: Candidate<'_>,
    consent: Option<&ConsentRecord>,
    sent: &[SentRecord],
    now_ms: i64,
    zone: &str,
) -> Verdict {
    match consent {
        Some(c) if !c.granted => return Verdict::Skip("consent_refused"),
        None if policy.requires_consent => return Verdict::Skip("no_consent"),
        _ => {}
    }
    if send.transactional {
        return Verdict::Go;
    }
    if let Some(quiet) = &policy.quiet_hours
        && let Some(until_ms) = quiet.ends_after(now_ms, zone)
    {
        return match quiet.then {
            QuietAction::Defer => Verdict::Defer { until_ms },
            QuietAction::Skip => Verdict::Skip("quiet_hours"),
        };
    }
    let on_channel = || sent.iter().filter(|s| s.channel == send.channel);
    if let Some(cap) = policy.frequency_cap
        && !cap.allows(now_ms, on_channel().map(|s| s.at_ms))
    {
        return Verdict::Skip("frequency_cap");
    }
    if let Some(cap) = send.campaign_cap
        && !cap.allows(now_ms, on_channel().filter(|s| s.campaign_id == send.campaign_id).map(|s| s.at_ms))
    {
        return Verdict::Skip("campaign_frequency_cap");
    }
    Verdict::Go
}

#[cfg(test)]
mod tests {
    use nudge_campaigns::policy::{MessagingPolicy, QuietHours};

    use super::*;

    const NOON_UTC: i64 = 1_795_867_200_000; // 2026-11-28T12:00:00Z

    fn email(campaign_id: &str) -> Candidate<'_> {
        Candidate { channel: "email", campaign_id, transactional: false, campaign_cap: None }
    }

    fn granted() -> ConsentRecord {
        ConsentRecord { granted: true, at_ms: NOON_UTC - 1, event_id: "e1".into(), source: "checkbox".into() }
    }

    fn sent(campaign: &str, hours_ago: i64) -> SentRecord {
        SentRecord { channel: "email".into(), campaign_id: campaign.into(), at_ms: NOON_UTC - hours_ago * 3_600_000 }
    }

    #[test]
    fn consent_comes_first_and_a_refusal_holds_even_for_transactional_sends() {
        let policy = MessagingPolicy::default().email;
        assert_eq!(gate(&policy, email("c"), None, &[], NOON_UTC, ""), Verdict::Skip("no_consent"));
        let refused = ConsentRecord { granted: false, ..granted() };
        let transactional = Candidate { transactional: true, ..email("c") };
        assert_eq!(gate(&policy, transactional, Some(&refused), &[], NOON_UTC, ""), Verdict::Skip("consent_refused"));
        assert_eq!(gate(&policy, email("c"), Some(&granted()), &[], NOON_UTC, ""), Verdict::Go);
        // On site asks for no consent by default, and a refusal still counts there.
        let on_site = MessagingPolicy::default().on_site;
        let candidate = Candidate { channel: "on_site", ..email("c") };
        assert_eq!(gate(&on_site, candidate, None, &[], NOON_UTC, ""), Verdict::Go);
        assert_eq!(gate(&on_site, candidate, Some(&refused), &[], NOON_UTC, ""), Verdict::Skip("consent_refused"));
    }

    #[test]
    fn quiet_hours_defer_or_skip_in_the_shoppers_zone_and_transactional_sends_pass() {
        let mut policy = MessagingPolicy::default().email;
        // Noon UTC is 21:00 in Tokyo: quiet until 08:00 there (23:00 UTC).
        let verdict = gate(&policy, email("c"), Some(&granted()), &[], NOON_UTC, "Asia/Tokyo");
        assert_eq!(verdict, Verdict::Defer { until_ms: NOON_UTC + 11 * 3_600_000 });
        assert_eq!(gate(&policy, email("c"), Some(&granted()), &[], NOON_UTC, "Europe/Berlin"), Verdict::Go);
        policy.quiet_hours = Some(QuietHours { start: "21:00".into(), end: "08:00".into(), then: QuietAction::Skip });
        let verdict = gate(&policy, email("c"), Some(&granted()), &[], NOON_UTC, "Asia/Tokyo");
        assert_eq!(verdict, Verdict::Skip("quiet_hours"));
        let transactional = Candidate { transactional: true, ..email("c") };
        assert_eq!(gate(&policy, transactional, Some(&granted()), &[], NOON_UTC, "Asia/Tokyo"), Verdict::Go);
    }

    #[test]
    fn the_global_cap_counts_every_campaign_and_the_campaign_cap_its_own() {
        let policy = MessagingPolicy::default().email; // 2 a day
        let consent = Some(granted());
        let history = [sent("a", 1), sent("b", 3)];
        assert_eq!(gate(&policy, email("c"), consent.as_ref(), &history, NOON_UTC, ""), Verdict::Skip("frequency_cap"));
        let older = [sent("a", 1), sent("b", 30)];
        assert_eq!(gate(&policy, email("c"), consent.as_ref(), &older, NOON_UTC, ""), Verdict::Go);
        let capped = Candidate { campaign_cap: Some(FrequencyCap { max: 1, per_hours: 48 }), ..email("b") };
        assert_eq!(
            gate(&policy, capped, consent.as_ref(), &older, NOON_UTC, ""),
            Verdict::Skip("campaign_frequency_cap")
        );
        // Sends on another channel count for neither.
        let elsewhere = [SentRecord { channel: "on_site".into(), ..sent("b", 1) }, sent("a", 30)];
        assert_eq!(gate(&policy, capped, consent.as_ref(), &elsewhere, NOON_UTC, ""), Verdict::Go);
        let transactional = Candidate { transactional: true, ..capped };
        assert_eq!(gate(&policy, transactional, consent.as_ref(), &history, NOON_UTC, ""), Verdict::Go);
    }
}
