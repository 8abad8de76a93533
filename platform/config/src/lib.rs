//! Layered configuration shared by every Nudge binary.
//!
//! # Layout
//!
//! Everything is in this file: [`load`] merges, in increasing precedence,
//! 1. the type's `Default` (values that run on one machine with no flags),
//! 2. an optional TOML file,
//! 3. environment variables under a prefix, with `__` separating nested keys
//!    (`NUDGE_CELL__KAFKA__BROKERS=…` sets `kafka.brokers` of the cell's config),
//! 4. overrides from CLI flags,
//!
//! then runs the type's [`Validate`] check. Nothing else in the workspace reads the
//! environment.

use std::path::Path;

use figment::{
    Figment, Profile,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Serialize, de::DeserializeOwned};

/// A configuration that is loaded or checked failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration is invalid: {0}")]
    Invalid(String),
}

/// A configuration type that can check itself after loading.
pub trait Validate {
    /// Explains the first problem found, in terms an operator can act on.
    fn validate(&self) -> Result<(), String>;
}

/// Loads `T` from its layers. `env_prefix` is like `NUDGE_CELL__`; `overrides` holds only
/// the keys given on the command line (serialize `None` fields as absent).
pub fn load<T, O>(env_prefix: &str, file: Option<&Path>, overrides: &O) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Validate,
    O: Serialize,
{
    let mut figment = Figment::new();
    if let Some(path) = file {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed(env_prefix).split("__")).merge(Serialized::from(overrides, Profile::Default));
    let config: T = figment.extract().map_err(Box::new)?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

#[cfg(test)]
// figment's Jail API returns its large error type by design.
#[allow(clippy::unwrap_used, clippy::result_large_err)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(default)]
    struct Demo {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(default)]
    struct Inner {
        port: u16,
    }

    impl Default for Demo {
        fn default() -> Self {
            Self { name: "default".into(), inner: Inner::default() }
        }
    }

    impl Default for Inner {
        fn default() -> Self {
            Self { port: 80 }
        }
    }

    impl Validate for Demo {
        fn validate(&self) -> Result<(), String> {
            if self.inner.port == 0 { Err("inner.port must not be 0".into()) } else { Ok(()) }
        }
    }

    #[derive(Serialize, Default)]
    struct NoOverrides {}

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "name = \"file\"\n[inner]\nport = 81\n")?;
            let d: Demo = load("T1__", Some(Path::new("c.toml")), &NoOverrides {}).unwrap();
            assert_eq!((d.name.as_str(), d.inner.port), ("file", 81));

            jail.set_env("T1__INNER__PORT", "82");
            let d: Demo = load("T1__", Some(Path::new("c.toml")), &NoOverrides {}).unwrap();
            assert_eq!((d.name.as_str(), d.inner.port), ("file", 82));

            #[derive(Serialize)]
            struct Flags {
                name: &'static str,
            }
            let d: Demo = load("T1__", None, &Flags { name: "flag" }).unwrap();
            assert_eq!((d.name.as_str(), d.inner.port), ("flag", 82));
            Ok(())
        });
    }

    #[test]
    fn defaults_need_nothing_and_validation_runs() {
        figment::Jail::expect_with(|jail| {
            let d: Demo = load("T2__", None, &NoOverrides {}).unwrap();
            assert_eq!((d.name.as_str(), d.inner.port), ("default", 80));
            jail.set_env("T2__INNER__PORT", "0");
            let err = load::<Demo, _>("T2__", None, &NoOverrides {}).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(m) if m.contains("inner.port")));
            Ok(())
        });
    }
}
