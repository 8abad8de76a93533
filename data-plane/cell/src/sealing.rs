//! Records that name a shopper travel sealed with the shopper's data key
//! (`nudge_data_plane_keyring`): `events.raw`, `events.validated`, `features.v1`,
//! `predictions.v1` and `interventions.commands`. Their key is the shopper's `SubjectKey`
//! (tenant and subject digest), which keeps one shopper's records on one partition and in
//! order, and names nobody.

use nudge_contracts::{
    headers::SchemaRef,
    proto::{features::v1::SubjectKey, sealed::v1::Sealed},
};
use nudge_data_plane_keyring::{KeyError, Keyring};
use nudge_platform_kafka::stage::Failure;
use nudge_tenants::TenantId;
use prost::Message;

/// The record key of a subject's records.
pub fn record_key(tenant: TenantId, subject_digest: &str) -> Vec<u8> {
    SubjectKey { tenant_id: tenant.to_string(), subject_digest: subject_digest.to_owned() }.encode_to_vec()
}

/// A stage's failure for a keyring error: retried while the vault or Redis is away; a
/// record that does not open goes to the DLQ after the stage's attempts.
pub fn failure(e: KeyError) -> Failure {
    match e {
        KeyError::Unavailable(why) => Failure::Unavailable(why),
        other => Failure::Failed(other.to_string()),
    }
}

/// A sealed record value, opened.
pub struct Opened<M> {
    pub subject_digest: String,
    pub message: M,
}

/// Decodes a record value's envelope without opening it: its tenant and subject.
pub fn envelope(payload: &[u8]) -> Result<(TenantId, Sealed), Failure> {
    let sealed = Sealed::decode(payload).map_err(|e| Failure::Failed(format!("not a sealed record: {e}")))?;
    let tenant = sealed.tenant_id.parse().map_err(|_| Failure::Failed("the sealed record names no tenant".into()))?;
    Ok((tenant, sealed))
}

/// Opens a sealed `schema` message. `Ok(None)`: the subject's data key is gone (erased, or
/// expired with the rest of their data), so the record is unreadable by design.
pub async fn open<M: Message + Default>(
    keyring: &Keyring,
    sealed: &Sealed,
    schema: SchemaRef,
) -> Result<Option<Opened<M>>, Failure> {
    match keyring.open_message::<M>(sealed, schema.name).await {
        Ok(message) => Ok(Some(Opened { subject_digest: sealed.subject_digest.clone(), message })),
        Err(KeyError::Shredded) => Ok(None),
        Err(e) => Err(failure(e)),
    }
}
