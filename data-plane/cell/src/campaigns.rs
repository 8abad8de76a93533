//! The stores' active campaigns, followed from `control.campaigns.v1`: each record is one
//! campaign's version in force (checked again here before use), a tombstone one that
//! stopped being active. The pipeline decides with a store's set; a store with none gets
//! the default rule.

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
            return Ok("stopped".into());
        };
        let record = CampaignRecord::decode(payload).map_err(|e| format!("undecodable campaign: {e}"))?;
        if record.campaign_id != campaign || record.tenant_id != tenant.to_string() {
            return Err(format!("record of {}:{} under key {key}", record.tenant_id, record.campaign_id));
        }
        let spec: CampaignSpec =
            serde_json::from_str(&record.spec_json).map_err(|e| format!("campaign {campaign}: {e}"))?;
        match ActiveCampaign::new(campaign, record.version, record.created_at_ms, &spec) {
            Ok(active) => {
                self.change(tenant, campaign, Some(Arc::new(active)));
                Ok(format!("version {}", record.version))
            }
            Err(e) => {
                // Not evaluable here: the store's other campaigns go on; this one is off
                // until a version this cell understands arrives.
                self.change(tenant, campaign, None);
                Err(format!("campaign {campaign} version {} cannot be evaluated here: {e}", record.version))
            }
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
