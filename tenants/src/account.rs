//! Merchant accounts: people who sign in to manage one or more stores, and what they may do
//! in each.

use std::fmt;

use serde::{Deserialize, Serialize};

crate::prefixed_id!(
    /// A person's account, across the stores they belong to.
    AccountId,
    "acc"
);

crate::prefixed_id!(
    /// An API key (publishable or secret) of a store.
    KeyId,
    "key"
);

/// What a member may do in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including closing the account and managing owners.
    Owner,
    /// Configuration, API keys and members other than owners.
    Admin,
    /// Reads everything, changes nothing but their own reports.
    Analyst,
    /// Reads dashboards.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Analyst => "analyst",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "owner" => Self::Owner,
            "admin" => Self::Admin,
            "analyst" => Self::Analyst,
            "viewer" => Self::Viewer,
            _ => return None,
        })
    }

    /// Create and revoke API keys.
    pub fn manages_keys(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }

    /// Add and remove members with role `other`.
    pub fn manages_member(self, other: Role) -> bool {
        match self {
            Self::Owner => true,
            Self::Admin => other != Self::Owner,
            Self::Analyst | Self::Viewer => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an e-mail address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an e-mail address looks like name@example.com (at most 254 characters)")]
pub struct EmailError;

/// An e-mail address, trimmed and lowercased. Only its shape is checked; whether it
/// receives mail is for a confirmation message to prove.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let email = raw.trim().to_lowercase();
        let (local, domain) = email.rsplit_once('@').ok_or(EmailError)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        let local_ok =
            !local.is_empty() && local.len() <= 64 && !local.contains(char::is_whitespace) && !local.contains('@');
        if email.len() > 254 || !domain_ok || !local_ok || email.chars().any(char::is_control) {
            return Err(EmailError);
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = EmailError;
    fn try_from(s: String) -> Result<Self, EmailError> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Why a password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("a password has at least 12 characters")]
    TooShort,
    #[error("a password has at most 256 characters")]
    TooLong,
    #[error("this password is too easy to guess")]
    TooCommon,
}

/// A password that meets the policy: 12-256 characters, not one of the passwords attackers
/// try first, and not a single repeated character. Never logged.
#[derive(Clone)]
pub struct Password(String);

/// Passwords every guessing attack starts with (12 characters or longer).
const COMMON: [&str; 12] = [
    "123456789012",
    "password1234",
    "passwordpassword",
    "qwertyuiop12",
    "qwertyuiopasdf",
    "iloveyou1234",
    "administrator",
    "letmeinletmein",
    "welcome12345",
    "changeme1234",
    "1q2w3e4r5t6y",
    "abcdefghijkl",
];

impl Password {
    pub fn parse(raw: &str) -> Result<Self, PasswordError> {
        let chars = raw.chars().count();
        if chars < 12 {
            return Err(PasswordError::TooShort);
        }
        if chars > 256 {
            return Err(PasswordError::TooLong);
        }
        let lower = raw.to_lowercase();
        let first = lower.chars().next();
        if COMMON.contains(&lower.as_str()) || lower.chars().all(|c| Some(c) == first) {
            return Err(PasswordError::TooCommon);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(…)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse(" Ann@Example.COM ").unwrap().as_str(), "ann@example.com");
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "ann@.example.com",
            "a b@example.com",
            "ann@exa mple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_follow_the_policy() {
        assert!(Password::parse("correct horse battery").is_ok());
        assert_eq!(Password::parse("short").unwrap_err(), PasswordError::TooShort);
        assert_eq!(Password::parse("Password1234").unwrap_err(), PasswordError::TooCommon);
        assert_eq!(Password::parse("aaaaaaaaaaaaaa").unwrap_err(), PasswordError::TooCommon);
        assert_eq!(Password::parse(&"x".repeat(257)).unwrap_err(), PasswordError::TooLong);
        assert!(!format!("{:?}", Password::parse("correct horse battery").unwrap()).contains("horse"));
    }

    #[test]
    fn roles_nest() {
        assert!(Role::Owner.manages_member(Role::Owner));
        assert!(Role::Admin.manages_member(Role::Viewer) && !Role::Admin.manages_member(Role::Owner));
        assert!(!Role::Analyst.manages_keys() && Role::Admin.manages_keys());
        for r in [Role::Owner, Role::Admin, Role::Analyst, Role::Viewer] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
