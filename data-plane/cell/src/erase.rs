//! Suppress first, then erase: when a shopper is newly on its store's suppression list (the
//! store asked for it, or an erasure request did), ingest drops their events at once (the
//! directory's list), the pipeline and the idle-cart scanner skip them, and this task deletes
//! what the cell keeps about them — their feature session, their idle-cart timer, their
//! intervention history and acknowledged ids in Redis, their entries in the subject and
//! e-mail indexes, and their latest feature snapshot on the compacted `features.v1` (a
//! tombstone) — and their data key, so every record the cell's topics still hold of them
//! (sealed with it, see `crate::sealing`) can no longer be read. An erasure request's order is then reported on
//! `erasure.reports.v1` with what was removed where.
//!
//! An erasure by e-mail names an address by its email digest: the e-mail index (written
//! with each identify that carries the store's `email_sha256`) leads to every shopper the
//! store identified with it; each is erased as above, but those under a legal hold (which the
//! order lists), and the report names them all by subject digest, so the control plane
//! suppresses them too. The address itself is suppressed from the start, so no identify links
//! a new shopper to it meanwhile.
//!
//! Shoppers are named by subject digest only; the subject index (written with each session)
//! leads from the digest to the shopper's keys, and `features.v1` is keyed by digest. Redis
//! is erased twice, `settle` apart, so an event the pipeline was applying when the
//! suppression arrived cannot leave anything behind; the tombstone follows the second pass.
//! Failures are retried with what was already erased kept for the report; nothing about a
//! shopper is logged but counts.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use nudge_contracts::{
    ShopperId,
    headers::{ERASURE_REPORT_V1, FEATURES_V1},
    proto::{
        control::v1::{ErasedPlace, ErasureReport},
        features::v1::SubjectKey,
    },
};
use nudge_data_plane_channels::{
    outcomes::assignments_key,
    store::{ChannelStore, reach_key, sent_key},
};
use nudge_data_plane_directory::{Directory, Erasure, ErasureScope};
use nudge_data_plane_features::store::{SessionKey, email_key, emails_key, idle_member, last_seen_key, subject_key};
use nudge_data_plane_gateway::{hub::ShopperAddress, route::Naming};
use nudge_data_plane_keyring::Keyring;
use nudge_platform_kafka::{SharedProducer, headers::record_headers};
use nudge_tenants::{CellId, TenantId};
use prost::Message;
use rdkafka::producer::FutureRecord;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

/// Shoppers erased per round trip (a restart erases every suppressed shopper again).
const CHUNK: usize = 200;

/// How long the broker has to acknowledge tombstones and reports.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the cell keeps shopper data.
pub struct Places {
    pub prefix: String,
    pub naming: Naming,
    /// The cell's idle-cart schedule (a sorted set).
    pub idle_schedule: String,
    /// The delayed channels' keys: a shopper's pending sends are cancelled through it.
    pub channels: ChannelStore,
}

impl Places {
    /// The Redis keys holding what the cell keeps about `shopper` of `tenant` (besides the
    /// idle-cart timer, a member of [`Places::idle_schedule`], and the subject index entry,
    /// [`subject_key`]).
    pub fn keys_of(&self, tenant: TenantId, shopper: &ShopperId) -> [String; 6] {
        let session = SessionKey { tenant, shopper: shopper.clone() }.redis_key(&self.prefix);
        let address = ShopperAddress { tenant, shopper: shopper.clone() };
        [
            session,
            self.naming.history(&address),
            self.naming.acked(&address),
            reach_key(&self.prefix, tenant, shopper.as_str()),
            sent_key(&self.prefix, tenant, shopper.as_str()),
            assignments_key(&self.prefix, tenant, shopper.as_str()),
        ]
    }
}

/// The places of a report, in the order [`erase`] counts them; the last is the tombstone
/// written for every subject (its count says nothing about what was found). Deleting the
/// data key (`redis.data_key`) is what shreds the sealed records on the event streams.
pub const PLACES: [&str; 12] = [
    "redis.session",
    "redis.history",
    "redis.acked",
    "redis.reach",
    "redis.recent_sends",
    "redis.assignments",
    "redis.idle_cart",
    "redis.subject_index",
    "redis.email_index",
    "redis.pending_sends",
    "redis.data_key",
    "kafka.features.v1.tombstones",
];

/// How many of [`PLACES`] one pipeline of deletions counts, in order.
const DELETED_TOGETHER: usize = 8;
/// Where in [`PLACES`] the e-mail links, the pending sends, the data key and the tombstone
/// are.
const EMAIL_INDEX: usize = 8;
const PENDING_SENDS: usize = 9;
const DATA_KEY: usize = 10;
const TOMBSTONE: usize = 11;

/// Where the erase task writes tombstones and reports, and how it paces itself.
pub struct Outputs {
    pub producer: SharedProducer,
    pub features_topic: String,
    pub reports_topic: String,
    pub cell: CellId,
    /// The pause between the two passes over Redis.
    pub settle: Duration,
}

/// The places of a whole-tenant report (an offboarding), in the order
/// [`erase_tenant`] counts them: every Redis key of the tenant (of which its shoppers' data
/// keys), its idle-cart timers, and a `features.v1` tombstone for every shopper it found.
pub const TENANT_PLACES: [&str; 4] =
    ["redis.keys", "redis.data_key", "redis.idle_cart", "kafka.features.v1.tombstones"];

/// Keys deleted, and members scanned, per round trip of a whole-tenant erasure.
const SCAN_COUNT: usize = 500;

/// A whole tenant being erased, with what has been removed so far.
struct TenantJob {
    erasure: Erasure,
    removed: [u64; 4],
    /// The subject digests found, which get a tombstone each.
    subjects: std::collections::BTreeSet<String>,
    passes: u8,
}

/// `text` with Redis's glob characters escaped, to match it literally in a pattern.
fn glob_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One pass over Redis for a whole tenant: every key named for it (`{prefix}t:{tenant}:…`,
/// the dedup sets' `{prefix}t:{{tenant}}:…`, and the intervention histories of every cell,
/// `{prefix}cell:*:t:{tenant}:…`) is deleted, its idle-cart timers leave the schedule, and
/// every shopper it knew (its last-seen set, data keys and subject index) is noted for a
/// tombstone.
async fn erase_tenant(
    redis: &mut ConnectionManager,
    keyring: &Keyring,
    places: &Places,
    job: &mut TenantJob,
) -> anyhow::Result<()> {
    let tenant = job.erasure.tenant;
    let prefix = glob_literal(&places.prefix);
    let last_seen = last_seen_key(&places.prefix, tenant);
    let mut cursor = 0u64;
    loop {
        let (next, members): (u64, Vec<String>) =
            redis::cmd("ZSCAN").arg(&last_seen).arg(cursor).arg("COUNT").arg(SCAN_COUNT).query_async(redis).await?;
        // Member, score, member, score…
        job.subjects.extend(members.into_iter().step_by(2));
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let dek = format!("{}t:{tenant}:dek:", places.prefix);
    let tenant_part = format!("t:{tenant}:");
    let subject = format!("{}t:{tenant}:subject:", places.prefix);
    for pattern in
        [format!("{prefix}t:{tenant}:*"), format!("{prefix}t:{{{tenant}}}:*"), format!("{prefix}cell:*:t:{tenant}:*")]
    {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(redis)
                .await?;
            // `cell:*` could match across a colon inside another tenant's shopper id: only a
            // key whose cell segment has no colon is this tenant's.
            let keys: Vec<String> =
                keys.into_iter().filter(|k| names_tenant(k, &places.prefix, &tenant_part)).collect();
            if !keys.is_empty() {
                for key in &keys {
                    if let Some(digest) = key.strip_prefix(&dek) {
                        job.subjects.insert(digest.to_owned());
                        job.removed[1] += 1;
                    } else if let Some(digest) = key.strip_prefix(&subject) {
                        job.subjects.insert(digest.to_owned());
                    }
                }
                let unlinked: u64 = redis::cmd("UNLINK").arg(&keys).query_async(redis).await?;
                job.removed[0] += unlinked;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    let member_prefix = format!("{tenant}/");
    let mut cursor = 0u64;
    loop {
        let (next, members): (u64, Vec<String>) = redis::cmd("ZSCAN")
            .arg(&places.idle_schedule)
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", glob_literal(&member_prefix)))
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(redis)
            .await?;
        let mine: Vec<&String> = members.iter().step_by(2).filter(|m| m.starts_with(&member_prefix)).collect();
        if !mine.is_empty() {
            let removed: u64 = redis::cmd("ZREM").arg(&places.idle_schedule).arg(&mine).query_async(redis).await?;
            job.removed[2] += removed;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keyring.forget_tenant(tenant);
    job.passes += 1;
    Ok(())
}

/// Whether `key` (matched by one of [`erase_tenant`]'s patterns) is the tenant's own:
/// `{prefix}t:{tenant}:…`, `{prefix}t:{{tenant}}:…`, or `{prefix}cell:<cell>:t:{tenant}:…`
/// with a cell name (which has no colon) — not another tenant's key whose shopper id happens
/// to contain `:t:{tenant}:`.
fn names_tenant(key: &str, prefix: &str, tenant_part: &str) -> bool {
    let Some(rest) = key.strip_prefix(prefix) else { return false };
    match rest.strip_prefix("cell:") {
        Some(cell_rest) => cell_rest.split_once(':').is_some_and(|(_, after)| after.starts_with(tenant_part)),
        None => true,
    }
}

/// Writes a `features.v1` tombstone for every shopper a whole-tenant job found, then its
/// report, and waits for the broker to acknowledge them.
async fn publish_tenant(outputs: &Outputs, job: &mut TenantJob) -> anyhow::Result<()> {
    let tenant = job.erasure.tenant.to_string();
    let keys: Vec<Vec<u8>> = job
        .subjects
        .iter()
        .map(|digest| SubjectKey { tenant_id: tenant.clone(), subject_digest: digest.clone() }.encode_to_vec())
        .collect();
    for chunk in keys.chunks(CHUNK) {
        let tombstones = chunk.iter().map(|key| {
            FutureRecord::<[u8], [u8]>::to(&outputs.features_topic)
                .key(key.as_slice())
                .headers(record_headers(FEATURES_V1, None))
        });
        outputs.producer.send_all(tombstones, ACK_TIMEOUT).await?;
    }
    job.removed[3] = keys.len() as u64;
    let Some(request_id) = job.erasure.request_id.clone() else { return Ok(()) };
    let report = ErasureReport {
        tenant_id: tenant,
        request_id: request_id.clone(),
        cell_id: outputs.cell.to_string(),
        places: TENANT_PLACES
            .iter()
            .zip(job.removed)
            .map(|(place, n)| ErasedPlace { place: (*place).to_owned(), removed: n })
            .collect(),
        completed_at_ms: Utc::now().timestamp_millis(),
        ..ErasureReport::default()
    };
    let value = report.encode_to_vec();
    let record = FutureRecord::<str, [u8]>::to(&outputs.reports_topic)
        .key(request_id.as_str())
        .payload(value.as_slice())
        .headers(record_headers(ERASURE_REPORT_V1, None));
    outputs.producer.send_all(std::iter::once(record), ACK_TIMEOUT).await?;
    Ok(())
}

/// One subject being erased, with what has been removed so far.
struct Job {
    erasure: Erasure,
    removed: [u64; PLACES.len()],
    /// Passes over Redis done (two before the tombstone and report).
    passes: u8,
}

impl Job {
    fn new(erasure: Erasure) -> Self {
        Self { erasure, removed: [0; PLACES.len()], passes: 0 }
    }
}

/// Every shopper identified with one e-mail address being erased: the subjects found in
/// the address's index so far (each a [`Job`] without a report of its own), those left under
/// a legal hold, and the index entries removed.
struct EmailJob {
    erasure: Erasure,
    held: Vec<String>,
    subjects: Vec<Job>,
    held_found: std::collections::BTreeSet<String>,
    index_removed: u64,
}

impl EmailJob {
    fn new(erasure: Erasure) -> Self {
        let held = match &erasure.scope {
            ErasureScope::Email { held } => held.clone(),
            _ => Vec::new(),
        };
        Self { erasure, held, subjects: Vec::new(), held_found: Default::default(), index_removed: 0 }
    }
}

/// Where the cell keeps the shoppers an erasure by e-mail has found, until its report is
/// out: erasing a shopper unlinks them from the address, so after a restart this is what
/// still leads to them.
fn found_key(prefix: &str, job: &EmailJob) -> String {
    format!("{prefix}t:{}:erasure:{}:found", job.erasure.tenant, job.erasure.request_id.as_deref().unwrap_or_default())
}

/// How long a found set outlives a cell that never finishes its order: the legal deadline.
const FOUND_TTL_SECONDS: i64 = 31 * 24 * 3600;

/// Looks the address of each job up in its tenant's e-mail index (and what an earlier run of
/// the order found) and adds every shopper not yet found as a subject to erase — but those
/// under a legal hold, by the latest list the store's record carries. Noted as found before
/// anything of them is erased. Run before each pass: the address is suppressed by then, so
/// no new shopper is linked to it after the first.
async fn resolve_emails(
    redis: &mut ConnectionManager,
    directory: &Directory,
    places: &Places,
    jobs: &mut [EmailJob],
) -> anyhow::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut lookup = redis::pipe();
    for job in jobs.iter() {
        lookup.smembers(email_key(&places.prefix, job.erasure.tenant, &job.erasure.subject_digest));
        lookup.smembers(found_key(&places.prefix, job));
    }
    let found: Vec<Vec<String>> = lookup.query_async(redis).await?;
    let mut found = found.into_iter();
    let mut note = redis::pipe();
    for job in jobs.iter_mut() {
        // A hold placed since the order went out counts too.
        let order = directory.by_tenant(job.erasure.tenant).and_then(|t| {
            t.erasure_orders.iter().find(|o| o.request_id == job.erasure.request_id).map(|o| o.scope.clone())
        });
        if let Some(ErasureScope::Email { held }) = order {
            job.held = held;
        }
        let (linked, noted) = (found.next().unwrap_or_default(), found.next().unwrap_or_default());
        let mut new = Vec::new();
        for subject in linked.into_iter().chain(noted) {
            if job.subjects.iter().any(|s| s.erasure.subject_digest == subject) {
                continue;
            }
            if job.held.contains(&subject) {
                job.held_found.insert(subject);
                continue;
            }
            job.held_found.remove(&subject);
            new.push(subject.clone());
            job.subjects.push(Job::new(Erasure {
                tenant: job.erasure.tenant,
                subject_digest: subject,
                request_id: None,
                scope: ErasureScope::Subject,
            }));
        }
        if !new.is_empty() {
            let key = found_key(&places.prefix, job);
            note.sadd(&key, &new).ignore().expire(&key, FOUND_TTL_SECONDS).ignore();
        }
    }
    if !note.is_empty() {
        note.query_async::<()>(redis).await?;
    }
    Ok(())
}

/// Unlinks each job's erased subjects from its address (erasing them did already, through
/// their own links; a link written meanwhile goes here). Its held subjects keep theirs.
async fn unlink_emails(redis: &mut ConnectionManager, places: &Places, jobs: &mut [EmailJob]) -> anyhow::Result<()> {
    for job in jobs.iter_mut() {
        let gone: Vec<&String> = job.subjects.iter().map(|s| &s.erasure.subject_digest).collect();
        if gone.is_empty() {
            continue;
        }
        let key = email_key(&places.prefix, job.erasure.tenant, &job.erasure.subject_digest);
        let removed: u64 = redis::cmd("SREM").arg(&key).arg(&gone).query_async(redis).await?;
        job.index_removed += removed;
    }
    Ok(())
}

/// Forgets what each job found once its report is out.
async fn forget_found(redis: &mut ConnectionManager, places: &Places, jobs: &[EmailJob]) -> anyhow::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for job in jobs {
        pipe.del(found_key(&places.prefix, job)).ignore();
    }
    pipe.query_async::<()>(redis).await?;
    Ok(())
}

/// One pass over Redis for each job of `batch`: deletes what the cell keeps about the
/// subject and adds what it removed to the job.
async fn erase(
    redis: &mut ConnectionManager,
    keyring: &Keyring,
    places: &Places,
    batch: &mut [Job],
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut lookup = redis::pipe();
    for job in batch.iter() {
        lookup.get(subject_key(&places.prefix, job.erasure.tenant, &job.erasure.subject_digest));
    }
    let found: Vec<Option<String>> = lookup.query_async(redis).await?;
    let shoppers: Vec<Option<ShopperId>> =
        found.into_iter().map(|s| s.and_then(|s| ShopperId::parse(&s).ok())).collect();
    let mut pipe = redis::pipe();
    for (job, shopper) in batch.iter().zip(&shoppers) {
        let tenant = job.erasure.tenant;
        // Retention has nothing left to expire for them (the tombstone follows).
        pipe.cmd("ZREM").arg(last_seen_key(&places.prefix, tenant)).arg(&job.erasure.subject_digest).ignore();
        if let Some(shopper) = shopper {
            for key in places.keys_of(tenant, shopper) {
                pipe.cmd("UNLINK").arg(key);
            }
            pipe.cmd("ZREM")
                .arg(&places.idle_schedule)
                .arg(idle_member(&SessionKey { tenant, shopper: shopper.clone() }));
            pipe.cmd("UNLINK").arg(subject_key(&places.prefix, tenant, &job.erasure.subject_digest));
        }
    }
    let counts: Vec<u64> = pipe.query_async(redis).await?;
    let mut counts = counts.into_iter();
    for (job, shopper) in batch.iter_mut().zip(&shoppers) {
        if shopper.is_some() {
            for slot in job.removed.iter_mut().take(DELETED_TOGETHER) {
                *slot += counts.next().unwrap_or(0);
            }
        }
    }
    // Nothing pending goes to them: their sends leave the schedule with their content.
    for (job, shopper) in batch.iter_mut().zip(&shoppers) {
        if let Some(shopper) = shopper {
            let cancelled = places.channels.cancel_shopper(job.erasure.tenant, shopper.as_str()).await?;
            job.removed[PENDING_SENDS] += cancelled.len() as u64;
        }
    }
    // The addresses the store identified them with no longer lead to them.
    let mut lookup = redis::pipe();
    for job in batch.iter() {
        lookup.smembers(emails_key(&places.prefix, job.erasure.tenant, &job.erasure.subject_digest));
    }
    let emails: Vec<Vec<String>> = lookup.query_async(redis).await?;
    let mut unlink = redis::pipe();
    for (job, emails) in batch.iter().zip(&emails) {
        let (tenant, subject) = (job.erasure.tenant, &job.erasure.subject_digest);
        for email in emails {
            unlink.cmd("SREM").arg(email_key(&places.prefix, tenant, email)).arg(subject);
        }
        unlink.cmd("UNLINK").arg(emails_key(&places.prefix, tenant, subject));
    }
    let unlinked: Vec<u64> = unlink.query_async(redis).await?;
    let mut unlinked = unlinked.into_iter();
    for (job, emails) in batch.iter_mut().zip(&emails) {
        // The links removed from addresses (the shopper's own list of them goes too).
        job.removed[EMAIL_INDEX] += unlinked.by_ref().take(emails.len()).sum::<u64>();
        unlinked.next();
    }
    for job in batch.iter_mut() {
        // The data key needs no shopper id: sealed records of a shopper whose session has
        // long expired are shredded too. It is replaced by a marker, so no process can make
        // the subject a new one.
        let found = keyring.erase(job.erasure.tenant, std::slice::from_ref(&job.erasure.subject_digest)).await?;
        job.removed[DATA_KEY] += found.iter().filter(|f| **f).count() as u64;
        job.passes += 1;
    }
    Ok(())
}

/// Writes the `features.v1` tombstone of every job, then the report of every request, and
/// waits for the broker to acknowledge them all.
async fn publish(outputs: &Outputs, batch: &mut [Job]) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let keys: Vec<Vec<u8>> = batch
        .iter()
        .map(|job| {
            SubjectKey { tenant_id: job.erasure.tenant.to_string(), subject_digest: job.erasure.subject_digest.clone() }
                .encode_to_vec()
        })
        .collect();
    let tombstones = keys.iter().map(|key| {
        FutureRecord::<[u8], [u8]>::to(&outputs.features_topic)
            .key(key.as_slice())
            .headers(record_headers(FEATURES_V1, None))
    });
    outputs.producer.send_all(tombstones, ACK_TIMEOUT).await?;
    for job in batch.iter_mut() {
        job.removed[TOMBSTONE] = 1;
    }
    let now = Utc::now().timestamp_millis();
    let reports: Vec<(String, Vec<u8>)> = batch
        .iter()
        .filter_map(|job| {
            let request_id = job.erasure.request_id.clone()?;
            let report = ErasureReport {
                tenant_id: job.erasure.tenant.to_string(),
                request_id: request_id.clone(),
                cell_id: outputs.cell.to_string(),
                places: PLACES
                    .iter()
                    .zip(job.removed)
                    .map(|(place, n)| ErasedPlace { place: (*place).to_owned(), removed: n })
                    .collect(),
                completed_at_ms: now,
                ..ErasureReport::default()
            };
            Some((request_id, report.encode_to_vec()))
        })
        .collect();
    let records = reports.iter().map(|(key, value)| {
        FutureRecord::<str, [u8]>::to(&outputs.reports_topic)
            .key(key.as_str())
            .payload(value.as_slice())
            .headers(record_headers(ERASURE_REPORT_V1, None))
    });
    outputs.producer.send_all(records, ACK_TIMEOUT).await?;
    Ok(())
}

/// Writes the tombstones of an e-mail job's subjects, then its report: what was removed of
/// all of them together, which they were, and which were left under a legal hold.
async fn publish_email(outputs: &Outputs, job: &mut EmailJob) -> anyhow::Result<()> {
    for chunk in job.subjects.chunks_mut(CHUNK) {
        publish(outputs, chunk).await?;
    }
    let Some(request_id) = job.erasure.request_id.clone() else { return Ok(()) };
    let mut removed = [0u64; PLACES.len()];
    for subject in &job.subjects {
        for (total, n) in removed.iter_mut().zip(subject.removed) {
            *total += n;
        }
    }
    removed[EMAIL_INDEX] += job.index_removed;
    let report = ErasureReport {
        tenant_id: job.erasure.tenant.to_string(),
        request_id: request_id.clone(),
        cell_id: outputs.cell.to_string(),
        places: PLACES
            .iter()
            .zip(removed)
            .map(|(place, n)| ErasedPlace { place: (*place).to_owned(), removed: n })
            .collect(),
        completed_at_ms: Utc::now().timestamp_millis(),
        subject_digests: job.subjects.iter().map(|s| s.erasure.subject_digest.clone()).collect(),
        held_subject_digests: job.held_found.iter().cloned().collect(),
    };
    let value = report.encode_to_vec();
    let record = FutureRecord::<str, [u8]>::to(&outputs.reports_topic)
        .key(request_id.as_str())
        .payload(value.as_slice())
        .headers(record_headers(ERASURE_REPORT_V1, None));
    outputs.producer.send_all(std::iter::once(record), ACK_TIMEOUT).await?;
    Ok(())
}

/// Erases the data of every newly suppressed shopper, carries out every erasure order, and
/// erases every offboarded tenant, until `shutdown`.
pub async fn run(
    directory: Arc<Directory>,
    mut redis: ConnectionManager,
    keyring: Arc<Keyring>,
    places: Places,
    outputs: Outputs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Jobs a failure left unfinished, kept with what they erased so far.
    let mut carried: Vec<Job> = Vec::new();
    let mut carried_emails: Vec<EmailJob> = Vec::new();
    let mut carried_tenants: Vec<TenantJob> = Vec::new();
    loop {
        let mut jobs = std::mem::take(&mut carried);
        let mut emails = std::mem::take(&mut carried_emails);
        let mut tenants = std::mem::take(&mut carried_tenants);
        for erasure in directory.take_erasures() {
            match erasure.scope {
                ErasureScope::Tenant => {
                    tenants.push(TenantJob { erasure, removed: [0; 4], subjects: Default::default(), passes: 0 });
                }
                ErasureScope::Email { .. } => emails.push(EmailJob::new(erasure)),
                ErasureScope::Subject => jobs.push(Job::new(erasure)),
            }
        }
        if jobs.is_empty() && emails.is_empty() && tenants.is_empty() {
            tokio::select! {
                () = directory.erasures_arrived() => continue,
                () = shutdown.cancelled() => return Ok(()),
            }
        }
        let outcome = async {
            for chunk in jobs.chunks_mut(CHUNK).filter(|c| c.iter().any(|j| j.passes == 0)) {
                erase(&mut redis, &keyring, &places, chunk).await?;
            }
            resolve_emails(&mut redis, &directory, &places, &mut emails).await?;
            for job in &mut emails {
                for chunk in job.subjects.chunks_mut(CHUNK).filter(|c| c.iter().any(|j| j.passes == 0)) {
                    erase(&mut redis, &keyring, &places, chunk).await?;
                }
            }
            for job in tenants.iter_mut().filter(|j| j.passes == 0) {
                erase_tenant(&mut redis, &keyring, &places, job).await?;
            }
            // Events the pipeline was applying when the suppression arrived are done by now.
            tokio::select! {
                () = tokio::time::sleep(outputs.settle) => {}
                () = shutdown.cancelled() => return Ok(false),
            }
            for chunk in jobs.chunks_mut(CHUNK) {
                if chunk.iter().any(|j| j.passes < 2) {
                    erase(&mut redis, &keyring, &places, chunk).await?;
                }
                publish(&outputs, chunk).await?;
            }
            // A shopper found only now gets one pass here; the suppression the report brings
            // erases them again, twice, like any newly suppressed shopper.
            resolve_emails(&mut redis, &directory, &places, &mut emails).await?;
            for job in &mut emails {
                for chunk in job.subjects.chunks_mut(CHUNK) {
                    if chunk.iter().any(|j| j.passes < 2) {
                        erase(&mut redis, &keyring, &places, chunk).await?;
                    }
                }
            }
            unlink_emails(&mut redis, &places, &mut emails).await?;
            for job in &mut emails {
                publish_email(&outputs, job).await?;
            }
            forget_found(&mut redis, &places, &emails).await?;
            for job in &mut tenants {
                if job.passes < 2 {
                    erase_tenant(&mut redis, &keyring, &places, job).await?;
                }
                publish_tenant(&outputs, job).await?;
            }
            anyhow::Ok(true)
        };
        match outcome.await {
            Ok(false) => return Ok(()),
            Ok(true) => {
                if !jobs.is_empty() {
                    let found = jobs.iter().filter(|j| j.removed[..TOMBSTONE].iter().any(|n| *n > 0)).count();
                    tracing::info!(subjects = jobs.len(), found, "suppressed shoppers' data erased");
                }
                for job in &emails {
                    tracing::info!(
                        tenant_id = %job.erasure.tenant,
                        subjects = job.subjects.len(),
                        held = job.held_found.len(),
                        "the shoppers of an erased e-mail address erased"
                    );
                }
                for job in &tenants {
                    tracing::info!(
                        tenant_id = %job.erasure.tenant,
                        keys = job.removed[0],
                        shoppers = job.subjects.len(),
                        "an offboarded tenant's data erased"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(
                    subjects = jobs.len(),
                    emails = emails.len(),
                    tenants = tenants.len(),
                    error = %e,
                    "erasing suppressed shoppers' data failed; retrying"
                );
                carried = jobs;
                carried_emails = emails;
                carried_tenants = tenants;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names_tenant;

    #[test]
    fn a_whole_tenant_erasure_takes_only_the_tenants_own_keys() {
        let (prefix, part) = ("nudge:", "t:tnt_a:");
        assert!(names_tenant("nudge:t:tnt_a:session:shp_1", prefix, part));
        assert!(names_tenant("nudge:cell:shared-1:t:tnt_a:s:shp_1:history", prefix, part));
        // Another tenant's history, whose shopper id holds the tenant's name.
        assert!(!names_tenant("nudge:cell:shared-1:t:tnt_b:s:x:t:tnt_a:y:history", prefix, part));
        assert!(!names_tenant("other:t:tnt_a:session:shp_1", prefix, part));
    }
}
