//! Merchant accounts and their memberships in stores.

use nudge_tenants::{AccountId, Email, Role, TenantId};
use sqlx::{Postgres, Row, Transaction};

use crate::{
    auth::passwords::{self, PasswordHashError},
    db::{Database, DbError},
    routing::TenantRouter,
};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("an account with this e-mail address exists")]
    EmailTaken,
    #[error("e-mail address or password is wrong")]
    InvalidCredentials,
    #[error("the account is not a member of this store")]
    NotAMember,
    #[error("the account belongs to several stores; say which")]
    TenantRequired { tenants: Vec<(TenantId, Role)> },
    #[error("no account with this e-mail address")]
    UnknownAccount,
    #[error("already a member of this store")]
    AlreadyMember,
    #[error("the store's plan allows {seats} members")]
    SeatLimit { seats: u32 },
    #[error("the {role} role cannot do this")]
    Forbidden { role: Role },
    #[error("a store keeps at least one owner")]
    LastOwner,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Hash(#[from] PasswordHashError),
}

impl From<sqlx::Error> for AccountError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.constraint() == Some("accounts_email_key") => Self::EmailTaken,
            sqlx::Error::Database(d) if d.constraint() == Some("memberships_pkey") => Self::AlreadyMember,
            _ => Self::Db(DbError::Query(e)),
        }
    }
}

/// Creates an account inside the caller's transaction.
pub async fn create(
    tx: &mut Transaction<'static, Postgres>,
    email: &Email,
    password_hash: &str,
) -> Result<AccountId, AccountError> {
    let account = AccountId::new();
    sqlx::query("INSERT INTO accounts (account_id, email, password_hash) VALUES ($1, $2, $3)")
        .bind(account.as_uuid())
        .bind(email.as_str())
        .bind(password_hash)
        .execute(&mut **tx)
        .await?;
    Ok(account)
}

/// Makes `account` a member of the tenant the transaction acts for.
pub async fn add_membership(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    account: AccountId,
    role: Role,
) -> Result<(), AccountError> {
    sqlx::query("INSERT INTO memberships (tenant_id, account_id, role) VALUES ($1, $2, $3)")
        .bind(tenant.as_uuid())
        .bind(account.as_uuid())
        .bind(role.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A store-less account (a person invited to stores later).
pub async fn register(db: &Database, email: &Email, password_hash: &str) -> Result<AccountId, AccountError> {
    let mut tx = db.platform_tx().await?;
    let account = create(&mut tx, email, password_hash).await?;
    tx.commit().await.map_err(DbError::Query)?;
    Ok(account)
}

/// Who logged in, and as what in which store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    pub account: AccountId,
    pub tenant: TenantId,
    pub role: Role,
}

/// Checks e-mail and password, then picks the store: `tenant` when given (it must be one of
/// the account's), else the account's only one.
pub async fn authenticate(
    db: &Database,
    email: &str,
    password: &str,
    tenant: Option<TenantId>,
) -> Result<LoggedIn, AccountError> {
    let email = Email::parse(email).map(|e| e.as_str().to_owned()).unwrap_or_default();
    let mut tx = db.platform_tx().await?;
    let row = sqlx::query("SELECT account_id, password_hash FROM accounts WHERE email = $1")
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await.map_err(DbError::Query)?;
    let (account, stored) = match row {
        Some(r) => {
            (Some(AccountId::from_uuid(r.try_get("account_id")?)), Some(r.try_get::<String, _>("password_hash")?))
        }
        None => (None, None),
    };
    // Verified even for an unknown e-mail (against a decoy), so timing says nothing.
    if !passwords::verify(password, stored).await? {
        return Err(AccountError::InvalidCredentials);
    }
    let account = account.ok_or(AccountError::InvalidCredentials)?;

    let mut tx = db.account_tx(account).await?;
    let rows = sqlx::query("SELECT tenant_id, role FROM memberships WHERE account_id = $1 ORDER BY created_at")
        .bind(account.as_uuid())
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await.map_err(DbError::Query)?;
    let memberships: Vec<(TenantId, Role)> = rows
        .iter()
        .filter_map(|r| {
            let tenant = TenantId::from_uuid(r.try_get("tenant_id").ok()?);
            let role = Role::parse(&r.try_get::<String, _>("role").ok()?)?;
            Some((tenant, role))
        })
        .collect();
    let chosen = match tenant {
        Some(t) => memberships.iter().find(|(m, _)| *m == t).copied().ok_or(AccountError::NotAMember)?,
        None => match memberships.as_slice() {
            [one] => *one,
            [] => return Err(AccountError::NotAMember),
            many => return Err(AccountError::TenantRequired { tenants: many.to_vec() }),
        },
    };
    Ok(LoggedIn { account, tenant: chosen.0, role: chosen.1 })
}

/// The account's role in `tenant` now (for a token refresh); `None` when no longer a member.
pub async fn role_in(db: &Database, tenant: TenantId, account: AccountId) -> Result<Option<Role>, DbError> {
    let mut tx = db.tenant_tx(tenant).await?;
    let role: Option<String> = sqlx::query_scalar("SELECT role FROM memberships WHERE account_id = $1")
        .bind(account.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(role.and_then(|r| Role::parse(&r)))
}

/// A member as a store's own members see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub account: AccountId,
    pub email: String,
    pub role: Role,
}

/// The members of `tenant`.
pub async fn members(db: &Database, tenant: TenantId) -> Result<Vec<Member>, DbError> {
    let mut tx = db.tenant_tx(tenant).await?;
    let rows = sqlx::query(
        "SELECT m.account_id, a.email, m.role FROM memberships m JOIN accounts a USING (account_id)
         WHERE m.tenant_id = $1 ORDER BY m.created_at",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(Member {
                account: AccountId::from_uuid(r.try_get("account_id")?),
                email: r.try_get("email")?,
                role: Role::parse(&r.try_get::<String, _>("role")?)
                    .ok_or_else(|| sqlx::Error::Decode("unknown role".into()))?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(DbError::Query)
}

/// The first key of the two-key advisory locks that serialise seat counting per tenant.
const SEAT_LOCK_SPACE: i32 = 7_001;

/// Adds the existing account with `email` to `tenant` as `role`, within the plan's seats.
pub async fn add_member(
    router: &TenantRouter,
    tenant: TenantId,
    email: &Email,
    role: Role,
) -> Result<Member, AccountError> {
    // The plan lives with the tenant's rows; memberships live in the registry.
    let seats = {
        let mut tx = router.tenant_tx(tenant).await?;
        let limits = crate::plans::limits_of(&mut tx, tenant).await?;
        tx.commit().await.map_err(DbError::Query)?;
        limits.seats
    };
    let mut tx = router.registry().tenant_tx(tenant).await?;
    // Serialise concurrent additions, so two cannot both take the last seat.
    // (A lock of its own: the two-key space never meets the tenant's one-key lock, which this
    // transaction already holds shared.)
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(SEAT_LOCK_SPACE)
        .bind(crate::routing::lock_key(tenant) as i32)
        .execute(&mut *tx)
        .await?;
    let account: Option<uuid::Uuid> = sqlx::query_scalar("SELECT account_id FROM accounts WHERE email = $1")
        .bind(email.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let account = AccountId::from_uuid(account.ok_or(AccountError::UnknownAccount)?);
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM memberships WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
    if members >= i64::from(seats) {
        return Err(AccountError::SeatLimit { seats });
    }
    add_membership(&mut tx, tenant, account, role).await?;
    tx.commit().await.map_err(DbError::Query)?;
    Ok(Member { account, email: email.as_str().to_owned(), role })
}

/// Who changes a membership: a signed-in member of the same store.
#[derive(Debug, Clone, Copy)]
pub struct Actor {
    pub account: AccountId,
    pub role: Role,
}

/// Takes the store's membership lock (the one seat counting takes) and reads `account`'s
/// membership, so concurrent changes cannot, say, both remove one of the last two owners.
async fn locked_member(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    account: AccountId,
) -> Result<Member, AccountError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(SEAT_LOCK_SPACE)
        .bind(crate::routing::lock_key(tenant) as i32)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query(
        "SELECT a.email, m.role FROM memberships m JOIN accounts a USING (account_id)
         WHERE m.tenant_id = $1 AND m.account_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(account.as_uuid())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(AccountError::NotAMember)?;
    let role = Role::parse(&row.try_get::<String, _>("role")?).ok_or(AccountError::NotAMember)?;
    Ok(Member { account, email: row.try_get("email")?, role })
}

/// Fails when `member` is the store's only owner.
async fn not_last_owner(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    member: &Member,
) -> Result<(), AccountError> {
    if member.role != Role::Owner {
        return Ok(());
    }
    let owners: i64 = sqlx::query_scalar("SELECT count(*) FROM memberships WHERE tenant_id = $1 AND role = 'owner'")
        .bind(tenant.as_uuid())
        .fetch_one(&mut **tx)
        .await?;
    if owners <= 1 { Err(AccountError::LastOwner) } else { Ok(()) }
}

/// Records a change of membership in the store's audit trail, inside its transaction.
async fn audit(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    actor: Actor,
    member: &Member,
    to_role: Option<Role>,
) -> Result<(), AccountError> {
    sqlx::query(
        "INSERT INTO membership_audit (tenant_id, actor, account_id, from_role, to_role)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.as_uuid())
    .bind(actor.account.as_uuid())
    .bind(member.account.as_uuid())
    .bind(member.role.as_str())
    .bind(to_role.map(Role::as_str))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Gives `account` the role `role` in `tenant`. The actor must be able to manage both the
/// member's present role and the new one (an admin neither makes nor unmakes owners); the
/// last owner cannot step down. Unchanged when it already has that role.
pub async fn change_role(
    router: &TenantRouter,
    tenant: TenantId,
    actor: Actor,
    account: AccountId,
    role: Role,
) -> Result<Member, AccountError> {
    let mut tx = router.registry().tenant_tx(tenant).await?;
    let member = locked_member(&mut tx, tenant, account).await?;
    if !(actor.role.manages_member(member.role) && actor.role.manages_member(role)) {
        return Err(AccountError::Forbidden { role: actor.role });
    }
    if member.role == role {
        return Ok(member);
    }
    if role != Role::Owner {
        not_last_owner(&mut tx, tenant, &member).await?;
    }
    sqlx::query("UPDATE memberships SET role = $3 WHERE tenant_id = $1 AND account_id = $2")
        .bind(tenant.as_uuid())
        .bind(account.as_uuid())
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
    audit(&mut tx, tenant, actor, &member, Some(role)).await?;
    tx.commit().await.map_err(DbError::Query)?;
    Ok(Member { role, ..member })
}

/// Ends `account`'s membership of `tenant`: the actor manages the member's role, or is the
/// member leaving. The last owner cannot leave. The account itself stays (it may belong to
/// other stores); its refresh tokens for this store stop working at once.
pub async fn remove_member(
    router: &TenantRouter,
    tenant: TenantId,
    actor: Actor,
    account: AccountId,
) -> Result<Member, AccountError> {
    let mut tx = router.registry().tenant_tx(tenant).await?;
    let member = locked_member(&mut tx, tenant, account).await?;
    if actor.account != account && !actor.role.manages_member(member.role) {
        return Err(AccountError::Forbidden { role: actor.role });
    }
    not_last_owner(&mut tx, tenant, &member).await?;
    sqlx::query("DELETE FROM memberships WHERE tenant_id = $1 AND account_id = $2")
        .bind(tenant.as_uuid())
        .bind(account.as_uuid())
        .execute(&mut *tx)
        .await?;
    audit(&mut tx, tenant, actor, &member, None).await?;
    tx.commit().await.map_err(DbError::Query)?;
    Ok(member)
}

/// One change to a store's memberships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub actor: AccountId,
    pub account: AccountId,
    pub from_role: Role,
    /// `None`: the membership ended.
    pub to_role: Option<Role>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The store's latest membership changes, newest first, at most `limit`.
pub async fn membership_changes(db: &Database, tenant: TenantId, limit: i64) -> Result<Vec<MembershipChange>, DbError> {
    let mut tx = db.tenant_tx(tenant).await?;
    let rows = sqlx::query(
        "SELECT actor, account_id, from_role, to_role, at FROM membership_audit
         WHERE tenant_id = $1 ORDER BY seq DESC LIMIT $2",
    )
    .bind(tenant.as_uuid())
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let role = |text: String| Role::parse(&text).ok_or_else(|| sqlx::Error::Decode("unknown role".into()));
    rows.into_iter()
        .map(|r| {
            Ok(MembershipChange {
                actor: AccountId::from_uuid(r.try_get("actor")?),
                account: AccountId::from_uuid(r.try_get("account_id")?),
                from_role: role(r.try_get("from_role")?)?,
                to_role: r.try_get::<Option<String>, _>("to_role")?.map(role).transpose()?,
                at: r.try_get("at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(DbError::Query)
}
