//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane, as OWASP
//! recommends). Hashing is deliberately slow, so it runs on the blocking pool.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use nudge_tenants::Password;

#[derive(Debug, thiserror::Error)]
pub enum PasswordHashError {
    #[error("hashing a password: {0}")]
    Hash(String),
    #[error("the hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The PHC string to store for `password`.
pub async fn hash(password: &Password) -> Result<String, PasswordHashError> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordHashError::Hash(e.to_string()))
    })
    .await?
}

/// A valid hash of a password nobody knows, verified against when the account does not
/// exist, so a login takes as long for an unknown e-mail as for a wrong password.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5Qzp6MnWCr8R6EjMhQxuXxf7cO7LLYF1u3pJ0DrOTqs";

/// Whether `candidate` matches `stored` (or, with no account, the decoy: always false).
pub async fn verify(candidate: &str, stored: Option<String>) -> Result<bool, PasswordHashError> {
    let candidate = candidate.to_owned();
    let known = stored.is_some();
    tokio::task::spawn_blocking(move || {
        let stored = stored.unwrap_or_else(|| DECOY.to_owned());
        let parsed = PasswordHash::new(&stored).map_err(|e| PasswordHashError::Hash(e.to_string()))?;
        let matches = Argon2::default().verify_password(candidate.as_bytes(), &parsed).is_ok();
        Ok(known && matches)
    })
    .await?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_the_decoy_never_matches() {
        let p = Password::parse("correct horse battery staple").unwrap();
        let h = hash(&p).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery staple", Some(h.clone())).await.unwrap());
        assert!(!verify("wrong horse battery staple", Some(h)).await.unwrap());
        assert!(!verify("anything at all", None).await.unwrap());
        assert!(PasswordHash::new(DECOY).is_ok());
    }
}
