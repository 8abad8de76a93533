//! Assignments and outcomes, for lift against holdouts.
//!
//! When a campaign applies at a shopper's moment, the shopper is assigned to one of its
//! arms — `treated`, `control` (its control group) or `holdout` (the store's global
//! holdout) — and, for the store as a whole, to `treated` or `holdout` (under the name
//! [`STORE`]). An assignment holds for the attribution window: a purchase within it counts
//! for every arm the shopper is in, once per shopper as a conversion, its value added to the
//! shopper's revenue. Per arm the cell keeps running sums (shoppers, conversions, revenue
//! and the sum of each shopper's revenue squared), so a report is a read, and the interval
//! needs no per-shopper scan. A shopper assigned again after the window starts a new
//! period and counts again.
//!
//! Amounts are added as they come, in hundredths of their currency; the sums record which
//! currencies went into them, so a report adds no revenue of different currencies together
//! without saying so.
//!
//! Redis: `t:{tenant}:assigned:{shopper}` (campaign → `arm|assigned at|revenue|converted`,
//! for the window), `t:{tenant}:arms:{campaign}` (the sums), and a marker per purchase
//! event applied, so a replayed purchase counts once.

use nudge_campaigns::lift::Arm;
use nudge_tenants::TenantId;
use redis::{Script, aio::ConnectionManager};

use crate::store::ChannelsError;

/// The name the store-wide assignment (all campaigns against the global holdout) goes by.
pub const STORE: &str = "_store";

/// How long a purchase event's marker is kept (a replay comes within minutes).
const PURCHASE_MARKER_SECONDS: i64 = 2 * 24 * 3600;

/// An arm a shopper is assigned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmName {
    Treated,
    Control,
    Holdout,
}

impl ArmName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Treated => "treated",
            Self::Control => "control",
            Self::Holdout => "holdout",
        }
    }
}

// KEYS: the shopper's assignments, the campaign's sums. ARGV: campaign, arm, now, window
// (ms), the assignments' lifetime (s).
const ASSIGN: &str = r#"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local at = tonumber(string.match(current, '^[^|]*|([^|]*)|'))
  if at and tonumber(ARGV[3]) - at <= tonumber(ARGV[4]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|0|0')
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('HINCRBY', KEYS[2], ARGV[2] .. ':shoppers', 1)
return 1
"#;

// KEYS: the shopper's assignments, the purchase's marker. ARGV: now, window (ms), value,
// the sums' key prefix (`…t:{tenant}:arms:`), the marker's lifetime (s), the purchase's
// currency (marked in the sums as `currency:{code}`, so a report knows whether its revenue
// adds up amounts of one currency).
const PURCHASE: &str = r#"
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[5]) == false then
  return 0
end
local all = redis.call('HGETALL', KEYS[1])
local counted = 0
for i = 1, #all, 2 do
  local campaign, value = all[i], all[i + 1]
  local arm, at, revenue, converted = string.match(value, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  if arm and tonumber(ARGV[1]) - tonumber(at) <= tonumber(ARGV[2]) then
    local sums = ARGV[4] .. campaign
    local before = tonumber(revenue)
    local after = before + tonumber(ARGV[3])
    if converted == '0' then
      redis.call('HINCRBY', sums, arm .. ':converted', 1)
    end
    redis.call('HSET', sums, 'currency:' .. ARGV[6], 1)
    redis.call('HINCRBYFLOAT', sums, arm .. ':revenue', ARGV[3])
    redis.call('HINCRBYFLOAT', sums, arm .. ':revenue_squares', after * after - before * before)
    redis.call('HSET', KEYS[1], campaign, arm .. '|' .. at .. '|' .. string.format('%d', after) .. '|1')
    counted = counted + 1
  end
end
return counted
"#;

// KEYS: the intervention's campaign, the (intervention, action) marker. ARGV: the sums'
// key prefix, the action, the marker's lifetime (s), the store-wide name.
const FEEDBACK: &str = r#"
local campaign = redis.call('GET', KEYS[1])
if not campaign then
  return 0
end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) == false then
  return 0
end
redis.call('HINCRBY', ARGV[1] .. campaign, 'treated:' .. ARGV[2], 1)
redis.call('HINCRBY', ARGV[1] .. ARGV[4], 'treated:' .. ARGV[2], 1)
return 1
"#;

/// What treated shoppers did with a campaign's on-site messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Engagement {
    pub shown: u64,
    pub clicked: u64,
    pub dismissed: u64,
}

/// Where assignments and outcomes are kept.
#[derive(Clone)]
pub struct OutcomeStore {
    redis: ConnectionManager,
    prefix: String,
}

/// A shopper's assignments (erased and exported with the shopper).
pub fn assignments_key(prefix: &str, tenant: TenantId, shopper: &str) -> String {
    format!("{prefix}t:{tenant}:assigned:{shopper}")
}

fn arms_prefix(prefix: &str, tenant: TenantId) -> String {
    format!("{prefix}t:{tenant}:arms:")
}

impl OutcomeStore {
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self { redis, prefix: prefix.into() }
    }

    /// Assigns the shopper to `arm` of `campaign` at `now_ms`, unless assigned within the
    /// window already. True when it was a new assignment.
    pub async fn assign(
        &self,
        tenant: TenantId,
        shopper: &str,
        campaign: &str,
        arm: ArmName,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<bool, ChannelsError> {
        let mut conn = self.redis.clone();
        let added: i64 = Script::new(ASSIGN)
            .key(assignments_key(&self.prefix, tenant, shopper))
            .key(format!("{}{campaign}", arms_prefix(&self.prefix, tenant)))
            .arg(campaign)
            .arg(arm.as_str())
            .arg(now_ms)
            .arg(window_ms)
            .arg(window_ms / 1000 + 3600)
            .invoke_async(&mut conn)
            .await?;
        Ok(added == 1)
    }

    /// Counts purchase `event_digest` of `value_minor` (hundredths of `currency`) at `now_ms`
    /// for every arm the shopper is assigned to within the window, once however often it is
    /// applied. How many assignments it counted for.
    #[allow(clippy::too_many_arguments)]
    pub async fn purchase(
        &self,
        tenant: TenantId,
        shopper: &str,
        event_digest: &str,
        value_minor: i64,
        currency: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<u64, ChannelsError> {
        let mut conn = self.redis.clone();
        let counted: i64 = Script::new(PURCHASE)
            .key(assignments_key(&self.prefix, tenant, shopper))
            .key(format!("{}t:{tenant}:purchase-counted:{event_digest}", self.prefix))
            .arg(now_ms)
            .arg(window_ms)
            .arg(value_minor.max(0))
            .arg(arms_prefix(&self.prefix, tenant))
            .arg(PURCHASE_MARKER_SECONDS)
            .arg(currency)
            .invoke_async(&mut conn)
            .await?;
        Ok(u64::try_from(counted).unwrap_or(0))
    }

    /// Notes that on-site intervention `intervention_id` was `campaign`'s, for the shopper's
    /// feedback on it within `window_ms`.
    pub async fn note_intervention(
        &self,
        tenant: TenantId,
        intervention_id: &str,
        campaign: &str,
        window_ms: i64,
    ) -> Result<(), ChannelsError> {
        let mut conn = self.redis.clone();
        redis::cmd("SET")
            .arg(format!("{}t:{tenant}:iv-campaign:{intervention_id}", self.prefix))
            .arg(campaign)
            .arg("PX")
            .arg(window_ms.max(1))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Counts `action` (`shown`, `clicked`, `dismissed`) on intervention `intervention_id`
    /// for its campaign's treated arm and the store's, once per intervention and action.
    /// False when the intervention is not a campaign's (or its window has passed) or the
    /// action was counted already.
    pub async fn feedback(
        &self,
        tenant: TenantId,
        intervention_id: &str,
        action: &str,
        window_ms: i64,
    ) -> Result<bool, ChannelsError> {
        let mut conn = self.redis.clone();
        let counted: i64 = Script::new(FEEDBACK)
            .key(format!("{}t:{tenant}:iv-campaign:{intervention_id}", self.prefix))
            .key(format!("{}t:{tenant}:iv-feedback:{intervention_id}:{action}", self.prefix))
            .arg(arms_prefix(&self.prefix, tenant))
            .arg(action)
            .arg(window_ms / 1000 + 1)
            .arg(STORE)
            .invoke_async(&mut conn)
            .await?;
        Ok(counted == 1)
    }

    /// What `campaign`'s treated shoppers did with its on-site messages.
    pub async fn engagement(&self, tenant: TenantId, campaign: &str) -> Result<Engagement, ChannelsError> {
        let mut conn = self.redis.clone();
        let counts: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(format!("{}{campaign}", arms_prefix(&self.prefix, tenant)))
            .arg("treated:shown")
            .arg("treated:clicked")
            .arg("treated:dismissed")
            .query_async(&mut conn)
            .await?;
        let at = |i: usize| counts.get(i).copied().flatten().unwrap_or(0);
        Ok(Engagement { shown: at(0), clicked: at(1), dismissed: at(2) })
    }

    /// The sums of each arm of `campaign` ([`STORE`] for the store as a whole), and the
    /// currencies of the purchases counted in them (sorted; empty for purchases counted
    /// before currencies were recorded).
    pub async fn arms(
        &self,
        tenant: TenantId,
        campaign: &str,
    ) -> Result<([(ArmName, Arm); 3], Vec<String>), ChannelsError> {
        let mut conn = self.redis.clone();
        let sums: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{}{campaign}", arms_prefix(&self.prefix, tenant)))
            .query_async(&mut conn)
            .await?;
        let number = |arm: ArmName, field: &str| -> f64 {
            sums.get(&format!("{}:{field}", arm.as_str())).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        };
        let arm = |name: ArmName| Arm {
            shoppers: number(name, "shoppers") as u64,
            converted: number(name, "converted") as u64,
            revenue: number(name, "revenue"),
            revenue_squares: number(name, "revenue_squares"),
        };
        let mut currencies: Vec<String> =
            sums.keys().filter_map(|field| field.strip_prefix("currency:")).map(str::to_owned).collect();
        currencies.sort_unstable();
        Ok(([ArmName::Treated, ArmName::Control, ArmName::Holdout].map(|name| (name, arm(name))), currencies))
    }
}
