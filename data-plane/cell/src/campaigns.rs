//! The stores' active campaigns, followed from `control.campaigns.v1`: each record is one
//! campaign's version in force (checked again here before use) or its stop, under a
//! revision; a record older than one applied for the campaign is ignored, so a late
//! delivery never brings a stopped campaign back. A record that cannot be used stops the
//! campaign here (never the old version going on). The pipeline decides with a store's
//! set; a store with none gets the default rule.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use nudge_campaigns::model::CampaignSpec;
use nudge_contracts::{proto::control::v1::CampaignRecord, topics::Topic};
use nudge_data_plane_decide::campaigns::ActiveCampaign;
use nudge_platform_kafka::{KafkaConfig, follow::Follower};
use nudge_tenants::{CellId, TenantId};
use prost::Message;
use tokio_util::sync::CancellationToken;

/// Every store's active campaigns.
#[derive(Default)]
pub struct CampaignBook {
    by_tenant: RwLock<HashMap<TenantId, Arc<[Arc<ActiveCampaign>]>>>,
    /// The highest revision applied per campaign key, stops included.
    revisions: std::sync::Mutex<HashMap<String, i64>>,
    caught_up: Arc<AtomicBool>,
}

impl CampaignBook {
    /// The store's active campaigns (empty: none).
    pub fn of(&self, tenant: TenantId) -> Arc<[Arc<ActiveCampaign>]> {
        self.by_tenant
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&tenant)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// Set once the topic has been read up to where it stood at start.
    pub fn caught_up(&self) -> Arc<AtomicBool> {
        self.caught_up.clone()
    }

    fn change(&self, tenant: TenantId, campaign: &str, now: Option<Arc<ActiveCampaign>>) {
        let mut all = self.by_tenant.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut list: Vec<Arc<ActiveCampaign>> =
            all.get(&tenant).map(|l| l.iter().filter(|c| c.id != campaign).cloned().collect()).unwrap_or_default();
        list.extend(now);
        if list.is_empty() {
            all.remove(&tenant);
        } else {
            all.insert(tenant, Arc::from(list));
        }
    }

    /// Applies one record of the topic.
    pub fn apply(&self, key: &[u8], payload: Option<&[u8]>) -> Result<String, String> {
        let key = std::str::from_utf8(key).map_err(|_| "a key that is not text".to_owned())?;
        let (tenant, campaign) = key.split_once(':').ok_or_else(|| format!("key {key} is not <tenant>:<campaign>"))?;
        let tenant: TenantId = tenant.parse().map_err(|_| format!("key {key} names no tenant"))?;
        let Some(payload) = payload else {
            self.change(tenant, campaign, None);
            return Ok("removed".into());
        };
        // Whatever goes wrong below, the campaign stops here: an old version must not go on
        // sending because a newer one could not be read.
        let unusable = |why: String| {
            self.change(tenant, campaign, None);
            Err(why)
        };
        let record = match CampaignRecord::decode(payload) {
            Ok(r) => r,
            Err(e) => return unusable(format!("undecodable campaign {campaign}: {e}")),
        };
        if record.campaign_id != campaign || record.tenant_id != tenant.to_string() {
            return unusable(format!("record of {}:{} under key {key}", record.tenant_id, record.campaign_id));
        }
        {
            let mut revisions = self.revisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let seen = revisions.entry(key.to_owned()).or_insert(i64::MIN);
            if record.revision <= *seen {
                return Ok(format!("revision {} older than {}: ignored", record.revision, seen));
            }
            *seen = record.revision;
        }
        if !record.active {
            self.change(tenant, campaign, None);
            return Ok(format!("stopped at revision {}", record.revision));
        }
        let spec: CampaignSpec = match serde_json::from_str(&record.spec_json) {
            Ok(spec) => spec,
            Err(e) => return unusable(format!("campaign {campaign}: {e}")),
        };
        match ActiveCampaign::new(campaign, record.version, record.created_at_ms, &spec) {
            Ok(active) => {
                self.change(tenant, campaign, Some(Arc::new(active)));
                Ok(format!("version {}", record.version))
            }
            // Not evaluable here: the store's other campaigns go on; this one is off until a
            // version this cell understands arrives.
            Err(e) => unusable(format!("campaign {campaign} version {} cannot be evaluated here: {e}", record.version)),
        }
    }
}

struct Campaigns(Arc<CampaignBook>);

impl Follower for Campaigns {
    fn what(&self) -> &'static str {
        "campaign"
    }

    fn apply(&self, key: &[u8], payload: Option<&[u8]>) -> Result<String, String> {
        self.0.apply(key, payload)
    }

    fn caught_up(&self) {
        tracing::info!("campaigns caught up");
        self.0.caught_up.store(true, Ordering::Release);
    }
}

/// Reads `control.campaigns.v1` into `book`, then follows it until `shutdown`.
pub async fn follow(
    book: Arc<CampaignBook>,
    kafka: KafkaConfig,
    cell: CellId,
    shutdown: CancellationToken,
) -> Result<(), nudge_platform_kafka::Error> {
    let topic = kafka.topics().name(Topic::ControlCampaigns);
    let client_id = format!("campaigns-{cell}");
    nudge_platform_kafka::follow::follow(Arc::new(Campaigns(book)), &kafka, topic, &client_id, shutdown).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(tenant: TenantId, revision: i64, active: bool, title: &str) -> Vec<u8> {
        let spec = serde_json::json!({
            "name": "c", "trigger": { "type": "exit_intent" }, "control_percent": 0,
            "variants": [{ "name": "a", "weight": 100, "messages": [
                { "channel": "on_site", "kind": "message", "title": title, "body": "b" }] }],
        });
        CampaignRecord {
            tenant_id: tenant.to_string(),
            campaign_id: "cmp_1".into(),
            version: 1,
            spec_json: if active { spec.to_string() } else { String::new() },
            created_at_ms: 1,
            revision,
            active,
        }
        .encode_to_vec()
    }

    #[test]
    fn a_late_older_record_never_undoes_a_newer_one_and_an_unreadable_one_stops_the_campaign() {
        let book = CampaignBook::default();
        let t = TenantId::new();
        let key = format!("{t}:cmp_1");
        book.apply(key.as_bytes(), Some(&record(t, 1, true, "one"))).unwrap();
        assert_eq!(book.of(t).len(), 1);
        book.apply(key.as_bytes(), Some(&record(t, 3, false, ""))).unwrap();
        assert!(book.of(t).is_empty(), "stopped");
        // Revision 2 (active) arrives late: ignored.
        book.apply(key.as_bytes(), Some(&record(t, 2, true, "two"))).unwrap();
        assert!(book.of(t).is_empty(), "a late record does not bring it back");
        book.apply(key.as_bytes(), Some(&record(t, 4, true, "four"))).unwrap();
        assert_eq!(book.of(t).len(), 1);
        // A record this cell cannot read: the campaign stops rather than going on.
        assert!(book.apply(key.as_bytes(), Some(b"\xff\xff not protobuf")).is_err());
        assert!(book.of(t).is_empty());
        // Another store's record under this store's key is refused and stops nothing else.
        let other = TenantId::new();
        assert!(book.apply(key.as_bytes(), Some(&record(other, 9, true, "x"))).is_err());
    }
}
