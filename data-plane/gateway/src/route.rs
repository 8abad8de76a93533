//! Routing interventions to whichever process holds the shopper's socket, and the bounded
//! per-shopper history a reconnecting socket resumes from.
//!
//! Each tenant of a cell has a Redis pub/sub channel. A gateway process subscribes to the
//! channels of the tenants it holds sockets for — once per tenant, not per shopper — and
//! unsubscribes when their last socket closes ([`crate::subscriber`]). Publishing appends the rendered message to
//! the shopper's history (a capped list with a TTL), then publishes on the tenant's
//! channel, in one pipeline on one connection, so the two never disagree on order: a
//! message is in the history a socket reads, or arrives on the channel after it, or both
//! (then the socket drops the repeat by id). Interventions published at the same time go
//! out together: one pipeline, and one `InterventionBatch` Protobuf record per tenant on
//! the channel, so every subscribed process reads one message per batch rather than one
//! per intervention.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::{TimeZone, Utc};
use nudge_contracts::{
    proto::interventions::v1::{Intervention, InterventionBatch},
    push::{AnnouncementMessage, InterventionMessage, PushMessage},
};
use nudge_platform_telemetry::TraceContext;
use nudge_tenants::{CellId, TenantId};
use prost::Message;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::hub::{Pushed, ShopperAddress};

/// The id prefix of test messages (`POST /v1/test-interventions`), which are delivered like
/// interventions but counted in no usage meter.
pub const TEST_INTERVENTION_PREFIX: &str = "test_";

/// The id prefix of announcements (`POST /v1/announcements`): messages for every open page
/// of a store, kept in no history and never acknowledged.
pub const ANNOUNCEMENT_PREFIX: &str = "ann_";

/// Names of a cell's intervention channels and history keys.
#[derive(Debug, Clone)]
pub struct Naming {
    prefix: String,
    cell: CellId,
}

impl Naming {
    pub fn new(prefix: &str, cell: &CellId) -> Self {
        Self { prefix: prefix.to_owned(), cell: cell.clone() }
    }

    /// The pub/sub channel of a tenant's interventions.
    pub fn channel(&self, tenant: &TenantId) -> String {
        format!("{}cell:{}:t:{tenant}:interventions", self.prefix, self.cell)
    }

    /// The tenant a channel name is for.
    pub(crate) fn tenant_of(&self, channel: &str) -> Option<TenantId> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix("cell:")?;
        let rest = rest.strip_prefix(self.cell.as_str())?.strip_prefix(":t:")?;
        rest.strip_suffix(":interventions")?.parse().ok()
    }

    /// A shopper's intervention history (for resume).
    pub fn history(&self, a: &ShopperAddress) -> String {
        format!("{}cell:{}:t:{}:s:{}:history", self.prefix, self.cell, a.tenant, a.shopper)
    }

    /// A shopper's acknowledged intervention ids.
    pub fn acked(&self, a: &ShopperAddress) -> String {
        format!("{}cell:{}:t:{}:s:{}:acked", self.prefix, self.cell, a.tenant, a.shopper)
    }

    /// Marks that an intervention was delivered (acknowledged by a browser), so it is
    /// counted once however many tabs or gateways acknowledge it. Names no shopper.
    pub fn delivered(&self, tenant: &TenantId, intervention_id: &str) -> String {
        format!("{}cell:{}:t:{}:delivered:{}", self.prefix, self.cell, tenant, intervention_id)
    }
}

/// How much of each shopper's interventions is kept for resuming.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryConfig {
    /// Most recent interventions kept per shopper.
    pub max_per_shopper: u32,
    /// How long a shopper's history (and last acknowledgement) outlives its last message.
    pub ttl_ms: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self { max_per_shopper: 20, ttl_ms: 600_000 }
    }
}

/// Most interventions published in one round trip.
const PUBLISH_BATCH: usize = 512;
/// Longest wait for one batch's round trip; its publishers then get an error (and retry).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends interventions to the gateways holding the shopper's tenant, keeping them in the
/// shopper's history.
///
/// Publishing is coalesced: while one batch is on its way to Redis, the interventions
/// published meanwhile queue, and go out together in the next round trip (up to
/// [`PUBLISH_BATCH`]). Alone, an intervention goes at once; under load each costs Redis
/// three list commands and a share of one `PUBLISH` per tenant and batch, where one at a
/// time each cost a script call and a `PUBLISH` that every subscribed process had to read.
/// Each publisher waits for its answer, so the queue holds at most one intervention per
/// publisher waiting.
#[derive(Clone)]
pub struct InterventionPublisher {
    inner: Arc<Publishing>,
}

struct Publishing {
    redis: ConnectionManager,
    naming: Naming,
    history: HistoryConfig,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// A task is sending batches; it stops when it finds the queue empty.
    sending: bool,
}

struct Pending {
    to: ShopperAddress,
    /// The history entry: `{id}|{frame}`.
    entry: String,
    intervention: Intervention,
    done: tokio::sync::oneshot::Sender<Result<usize, String>>,
}

impl InterventionPublisher {
    pub fn new(redis: ConnectionManager, naming: Naming, history: HistoryConfig) -> Self {
        Self { inner: Arc::new(Publishing { redis, naming, history, queue: Mutex::default() }) }
    }

    /// Publishes `iv` for `to`; the number of gateway processes that received it live.
    pub async fn publish(&self, to: &ShopperAddress, iv: &Intervention) -> Result<usize, redis::RedisError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let entry = format!("{}|{}", iv.intervention_id, push_frame(iv));
        let start = {
            let mut queue = self.inner.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.pending.push(Pending { to: to.clone(), entry, intervention: iv.clone(), done });
            !std::mem::replace(&mut queue.sending, true)
        };
        if start {
            // A task of its own, so a publisher that gives up waiting never cuts a batch
            // that carries others' interventions.
            tokio::spawn(send_batches(self.inner.clone()));
        }
        match answer.await {
            Ok(Ok(receivers)) => Ok(receivers),
            Ok(Err(e)) => Err(std::io::Error::other(e).into()),
            Err(_) => Err(std::io::Error::other("the publishing task ended").into()),
        }
    }

    /// Publishes `announcement` (an `ann_` id, no shopper) to every open page of
    /// `tenant`: one record on the tenant's channel, and no history, so only pages open now
    /// see it. The number of gateway processes that received it.
    pub async fn announce(&self, tenant: &TenantId, announcement: &Intervention) -> Result<usize, redis::RedisError> {
        let batch = InterventionBatch { interventions: Vec::new(), announcements: vec![announcement.clone()] };
        let mut conn = self.inner.redis.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.inner.naming.channel(tenant)).arg(batch.encode_to_vec());
        let publish = publish.query_async::<usize>(&mut conn);
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(outcome) => outcome,
            Err(_) => Err(std::io::Error::other("publishing timed out").into()),
        }
    }
}

/// Sends what is queued, a batch per round trip, until the queue is empty.
async fn send_batches(p: Arc<Publishing>) {
    let mut sending = Sending { publishing: &p, done: false };
    loop {
        let batch: Vec<Pending> = {
            let mut queue = p.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.pending.is_empty() {
                queue.sending = false;
                sending.done = true;
                return;
            }
            let n = queue.pending.len().min(PUBLISH_BATCH);
            queue.pending.drain(..n).collect()
        };
        send_batch(&p, batch).await;
    }
}

/// If the sending task ends before the queue is empty (its runtime shutting down, a
/// panic), the next publish starts another, and those waiting now are told at once rather
/// than never.
struct Sending<'a> {
    publishing: &'a Publishing,
    done: bool,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut queue = self.publishing.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.sending = false;
            // Their senders dropped: each publisher gets "the publishing task ended".
            queue.pending.clear();
        }
    }
}

async fn send_batch(p: &Publishing, batch: Vec<Pending>) {
    let cap = i64::from(p.history.max_per_shopper.max(1));
    let ttl = p.history.ttl_ms.max(1);
    let mut pipe = redis::pipe();
    // Histories first: a socket that reads its history before the batch arrives on the
    // channel finds the messages there.
    for m in &batch {
        let key = p.naming.history(&m.to);
        pipe.cmd("RPUSH").arg(&key).arg(&m.entry).ignore();
        pipe.cmd("LTRIM").arg(&key).arg(-cap).arg(-1).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
    }
    // Then one record per tenant, its interventions in the order they were published.
    let mut tenants: Vec<TenantId> = Vec::new();
    let mut by_tenant: HashMap<TenantId, InterventionBatch> = HashMap::new();
    for m in &batch {
        by_tenant
            .entry(m.to.tenant)
            .or_insert_with(|| {
                tenants.push(m.to.tenant);
                InterventionBatch::default()
            })
            .interventions
            .push(m.intervention.clone());
    }
    for tenant in &tenants {
        pipe.cmd("PUBLISH").arg(p.naming.channel(tenant)).arg(by_tenant[tenant].encode_to_vec());
    }
    let mut conn = p.redis.clone();
    let outcome = tokio::time::timeout(PUBLISH_TIMEOUT, pipe.query_async::<Vec<usize>>(&mut conn)).await;
    let receivers: Result<HashMap<TenantId, usize>, String> = match outcome {
        Ok(Ok(counts)) if counts.len() == tenants.len() => Ok(tenants.into_iter().zip(counts).collect()),
        Ok(Ok(counts)) => Err(format!("Redis answered {} counts for {} channels", counts.len(), tenants.len())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("publishing timed out".to_owned()),
    };
    for m in batch {
        // A publisher that stopped waiting is not told.
        let _ = m.done.send(match &receivers {
            Ok(counts) => Ok(counts.get(&m.to.tenant).copied().unwrap_or(0)),
            Err(e) => Err(e.clone()),
        });
    }
}

/// Milliseconds since the epoch as RFC 3339 (empty when out of range), as frames carry
/// times.
fn rfc3339_millis(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The frame a browser receives for an announcement.
pub fn announcement_frame(announcement: &Intervention) -> String {
    let sent_at = rfc3339_millis(announcement.decided_at_ms);
    let message = PushMessage::Announcement(AnnouncementMessage {
        announcement_id: announcement.intervention_id.clone(),
        title: announcement.title.clone(),
        body: announcement.body.clone(),
        sent_at,
    });
    // Serialising a struct of strings cannot fail.
    serde_json::to_string(&message).unwrap_or_default()
}

/// A shopper's history as a socket reads it.
#[derive(Clone)]
pub struct History {
    redis: ConnectionManager,
    naming: Naming,
    config: HistoryConfig,
    /// Reads at once: after a lost subscription every socket re-reads its history, and
    /// thousands of simultaneous reads would time out together.
    reads: Arc<tokio::sync::Semaphore>,
}

/// History reads in flight at once, per process.
const CONCURRENT_READS: usize = 64;
/// Longest a history read may take once its turn has come.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// What a shopper's history holds.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Oldest first.
    pub entries: Vec<Arc<Pushed>>,
    /// The last intervention a socket of this shopper acknowledged.
    pub acked: Option<String>,
}

impl Snapshot {
    /// The entries after `cursor`: all of them when `cursor` is not among them (never
    /// acknowledged, or trimmed away), since at least once beats not at all.
    pub fn after(&self, cursor: Option<&str>) -> &[Arc<Pushed>] {
        let start =
            cursor.and_then(|c| self.entries.iter().rposition(|e| &*e.intervention_id == c)).map_or(0, |i| i + 1);
        &self.entries[start..]
    }
}

impl History {
    pub fn new(redis: ConnectionManager, naming: Naming, config: HistoryConfig) -> Self {
        Self { redis, naming, config, reads: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_READS)) }
    }

    /// The shopper's history, read when one of the process's read slots is free and given
    /// two seconds from then.
    pub async fn read(&self, of: &ShopperAddress) -> Result<Snapshot, redis::RedisError> {
        let _turn = self.reads.acquire().await.map_err(|_| std::io::Error::other("history reads closed"))?;
        let mut conn = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.lrange(self.naming.history(of), 0, -1).get(self.naming.acked(of));
        let read = pipe.query_async(&mut conn);
        let (raw, acked): (Vec<String>, Option<String>) = tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "reading the history timed out"))??;
        let entries = raw
            .into_iter()
            .filter_map(|e| {
                let (id, text) = e.split_once('|')?;
                Some(Arc::new(Pushed { intervention_id: id.into(), text: text.into() }))
            })
            .collect();
        Ok(Snapshot { entries, acked })
    }
}

/// Acknowledgements waiting to be written, at most; beyond it they are dropped (counted):
/// a later reconnect then replays more, never less.
const ACK_BACKLOG: usize = 65_536;
/// Acknowledgements written per Redis round trip, at most.
const ACK_BATCH: usize = 1_024;
/// Longest wait for one batch's round trip.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Told how many interventions were delivered to a tenant's shoppers (the usage counters).
pub type DeliveredSink = Arc<dyn Fn(TenantId, u64) + Send + Sync>;

/// An acknowledgement handed to the writer.
struct Ack {
    address: ShopperAddress,
    intervention_id: Box<str>,
    /// The socket sent this intervention: its first acknowledgement anywhere counts it as
    /// delivered. An id the socket never sent moves the cursor only, so a client cannot
    /// make a store's usage grow by acknowledging made-up ids.
    sent_here: bool,
}

/// Records acknowledgements off the sockets' tasks: a socket hands its acknowledgement over
/// and goes on; one task writes the latest per shopper, up to [`ACK_BATCH`] per round trip,
/// and counts each intervention acknowledged for the first time as delivered.
#[derive(Clone)]
pub struct AckWriter {
    tx: tokio::sync::mpsc::Sender<Ack>,
}

impl AckWriter {
    /// The writer, and the task that writes until `shutdown` (then flushes what is queued).
    /// Batches that cannot be written are logged and counted in `failures` (their
    /// deliveries go uncounted: a store is never billed for what was not recorded).
    pub fn new(
        history: History,
        failures: prometheus_client::metrics::counter::Counter,
        delivered: DeliveredSink,
        shutdown: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()> + Send) {
        let (tx, rx) = tokio::sync::mpsc::channel(ACK_BACKLOG);
        (Self { tx }, write_acks(history, rx, failures, delivered, shutdown))
    }

    /// Hands over that a socket of `of` acknowledged `intervention_id`, which it sent
    /// (`sent_here`) or not; false when the backlog is full and it was dropped.
    pub fn record(&self, of: &ShopperAddress, intervention_id: &str, sent_here: bool) -> bool {
        self.tx.try_send(Ack { address: of.clone(), intervention_id: intervention_id.into(), sent_here }).is_ok()
    }
}

async fn write_acks(
    history: History,
    mut rx: tokio::sync::mpsc::Receiver<Ack>,
    failures: prometheus_client::metrics::counter::Counter,
    delivered: DeliveredSink,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, ACK_BATCH) => n,
            _ = shutdown.cancelled() => {
                while let Ok(ack) = rx.try_recv() {
                    batch.push(ack);
                }
                write_batch(&history, &batch, &failures, &delivered).await;
                return;
            }
        };
        if received == 0 {
            return;
        }
        write_batch(&history, &batch, &failures, &delivered).await;
        batch.clear();
    }
}

async fn write_batch(
    history: &History,
    batch: &[Ack],
    failures: &prometheus_client::metrics::counter::Counter,
    delivered: &DeliveredSink,
) {
    if batch.is_empty() {
        return;
    }
    // In arrival order, so the latest acknowledgement of a shopper is the one kept.
    let mut latest: std::collections::HashMap<&ShopperAddress, &str> = std::collections::HashMap::new();
    for ack in batch {
        latest.insert(&ack.address, &ack.intervention_id);
    }
    let ttl = history.config.ttl_ms.max(1);
    let mut pipe = redis::pipe();
    for (address, id) in &latest {
        pipe.cmd("SET").arg(history.naming.acked(address)).arg(*id).arg("PX").arg(ttl).ignore();
    }
    // One marker per intervention: only the first acknowledgement sets it. It lasts as long
    // as the intervention can still be replayed from the history (whose TTL each new message
    // renews: at most `max_per_shopper` messages of `ttl_ms` each), so a replay acknowledged
    // again never counts twice.
    let marker_ttl = ttl.saturating_mul(u64::from(history.config.max_per_shopper) + 1);
    let mut marked = Vec::new();
    // A test message (a store checking its installation) is no intervention: not metered.
    for ack in batch.iter().filter(|a| a.sent_here && !a.intervention_id.starts_with(TEST_INTERVENTION_PREFIX)) {
        pipe.cmd("SET")
            .arg(history.naming.delivered(&ack.address.tenant, &ack.intervention_id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(marker_ttl);
        marked.push(ack.address.tenant);
    }
    let mut conn = history.redis.clone();
    let outcome = tokio::time::timeout(ACK_TIMEOUT, pipe.query_async::<Vec<Option<String>>>(&mut conn)).await;
    let error = match outcome {
        Ok(Ok(replies)) => {
            let mut first: std::collections::HashMap<TenantId, u64> = std::collections::HashMap::new();
            for (tenant, reply) in marked.iter().zip(replies) {
                if reply.is_some() {
                    *first.entry(*tenant).or_default() += 1;
                }
            }
            for (tenant, n) in first {
                delivered(tenant, n);
            }
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    failures.inc_by(batch.len() as u64);
    tracing::warn!(error = %error, acknowledgements = batch.len(), "recording acknowledgements failed");
}

/// The JSON frame a shopper's socket receives for `iv`.
pub fn push_frame(iv: &Intervention) -> String {
    let trace_id = TraceContext::parse(&iv.traceparent).map(|t| t.trace_id()).unwrap_or_default();
    let decided_at = rfc3339_millis(iv.decided_at_ms);
    let message = PushMessage::Intervention(InterventionMessage {
        intervention_id: iv.intervention_id.clone(),
        kind: iv.kind.clone(),
        title: iv.title.clone(),
        body: iv.body.clone(),
        score: iv.score,
        model_version: iv.model_version.clone(),
        cause_event_id: iv.cause_event_id.clone(),
        decided_at,
        trace_id,
    });
    // Serialising a struct of strings and numbers cannot fail.
    serde_json::to_string(&message).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures_util::StreamExt;
    use nudge_contracts::ShopperId;

    use super::*;

    #[test]
    fn channels_name_their_tenant() {
        let naming = Naming::new("p:", &"shared-1".parse::<CellId>().unwrap());
        let t = TenantId::new();
        assert_eq!(naming.tenant_of(&naming.channel(&t)), Some(t));
        assert_eq!(naming.tenant_of(&Naming::new("q:", &"shared-1".parse::<CellId>().unwrap()).channel(&t)), None);
        assert_eq!(naming.tenant_of("p:cell:shared-1:t:nonsense:interventions"), None);
    }

    /// Against the real Redis the tests run with, under a key prefix of their own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interventions_published_at_once_go_in_batches_to_their_tenants_and_histories() {
        let url = std::env::var("NUDGE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
        let client = redis::Client::open(url).unwrap();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let naming =
            Naming::new(&format!("nudge-test:route:{}:{nanos}:", std::process::id()), &CellId::default_shared());
        let (a, b) = (TenantId::new(), TenantId::new());
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe(naming.channel(&a)).await.unwrap();
        let redis = ConnectionManager::new(client.clone()).await.unwrap();
        let publisher = InterventionPublisher::new(redis.clone(), naming.clone(), HistoryConfig::default());

        // 300 at once: 10 shoppers of each tenant, 15 interventions each, every shopper's
        // published in order by one task.
        let tasks: Vec<_> = [a, b]
            .into_iter()
            .flat_map(|tenant| (0..10).map(move |s| (tenant, s)))
            .map(|(tenant, s)| {
                let publisher = publisher.clone();
                tokio::spawn(async move {
                    let to = ShopperAddress { tenant, shopper: ShopperId::parse(&format!("shp_{s}")).unwrap() };
                    for i in 0..15 {
                        let iv = Intervention {
                            intervention_id: format!("itv_{tenant}_{s}_{i}"),
                            tenant_id: tenant.to_string(),
                            shopper_id: to.shopper.to_string(),
                            ..Default::default()
                        };
                        assert_eq!(publisher.publish(&to, &iv).await.unwrap(), usize::from(tenant == a));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }

        // Tenant a's channel carried all of a's interventions and none of b's, in fewer
        // records than interventions.
        let mut stream = pubsub.on_message();
        let (mut received, mut records) = (Vec::new(), 0);
        while received.len() < 150 {
            let msg = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap();
            records += 1;
            received.extend(
                crate::subscriber::encoded_records(msg.get_payload_bytes())
                    .unwrap()
                    .interventions
                    .into_iter()
                    .map(|encoded| Intervention::decode(encoded).unwrap()),
            );
        }
        assert!(received.iter().all(|iv| iv.tenant_id == a.to_string()));
        assert!(records < 150, "{records} records for 150 interventions");
        let history = History::new(redis.clone(), naming.clone(), HistoryConfig::default());
        for tenant in [a, b] {
            for s in 0..10 {
                let to = ShopperAddress { tenant, shopper: ShopperId::parse(&format!("shp_{s}")).unwrap() };
                let ids: Vec<String> =
                    history.read(&to).await.unwrap().entries.iter().map(|e| e.intervention_id.to_string()).collect();
                let expected: Vec<String> = (0..15).map(|i| format!("itv_{tenant}_{s}_{i}")).collect();
                assert_eq!(ids, expected, "each shopper's history holds its own, in order");
                // Live order on the channel is the publishing order too.
                if tenant == a {
                    let live: Vec<String> = received
                        .iter()
                        .filter(|iv| iv.shopper_id == to.shopper.to_string())
                        .map(|iv| iv.intervention_id.clone())
                        .collect();
                    assert_eq!(live, expected);
                }
            }
        }
        let mut conn = redis.clone();
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}*", naming.prefix)).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_sending_task_that_ends_early_tells_its_waiters_and_lets_the_next_start() {
        let url = std::env::var("NUDGE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
        let redis = ConnectionManager::new(redis::Client::open(url).unwrap()).await.unwrap();
        let publishing = Publishing {
            redis,
            naming: Naming::new("nudge-test:route-drop:", &CellId::default_shared()),
            history: HistoryConfig::default(),
            queue: Mutex::default(),
        };
        let (done, answer) = tokio::sync::oneshot::channel();
        {
            let mut queue = publishing.queue.lock().unwrap();
            let to = ShopperAddress { tenant: TenantId::new(), shopper: ShopperId::parse("shp_1").unwrap() };
            queue.pending.push(Pending { to, entry: String::new(), intervention: Intervention::default(), done });
            queue.sending = true;
        }
        drop(Sending { publishing: &publishing, done: false });
        assert!(answer.await.is_err(), "the waiter is told");
        let queue = publishing.queue.lock().unwrap();
        assert!(!queue.sending && queue.pending.is_empty(), "the next publish starts a task");
    }

    #[test]
    fn resumes_after_the_cursor_or_from_the_start() {
        let entry = |id: &str| Arc::new(Pushed { intervention_id: id.into(), text: id.into() });
        let s = Snapshot { entries: vec![entry("a"), entry("b"), entry("c")], acked: None };
        let ids = |v: &[Arc<Pushed>]| v.iter().map(|p| p.intervention_id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(s.after(Some("b"))), ["c"]);
        assert_eq!(ids(s.after(Some("c"))), Vec::<String>::new());
        assert_eq!(ids(s.after(Some("gone"))), ["a", "b", "c"]);
        assert_eq!(ids(s.after(None)), ["a", "b", "c"]);
    }
}
