//! What the hub's and the agent's configurations share (`fedhub_hub::config`,
//! `fedhub_agent::config`): both are TOML files with environment overrides, read with figment
//! and validated into typed values, and both report problems the same way.
//!
//! - [`ConfigError`]: every message names the key and what to do.
//! - [`invalid`]: the error for a value that parsed but is not acceptable; [`positive`] and
//!   [`at_least_one`] for durations and counts where zero would turn a feature off by mistake.
//! - [`connection_caps`]: the caps on a listener's open connections, in total and per peer, as
//!   the hub's `[limits]` and the agent's `[workload_api]` both carry them.
//! - [`require_file`]: the error for a `--config` path that is not a file; [`layers`]: the
//!   file and its environment overrides, in that order.
//! - [`format_figment_error`]: figment's errors (unknown keys, wrong types, TOML syntax) as one
//!   line per problem, each prefixed with its dotted key.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format as _, Toml};

/// Why a configuration cannot be used. Each message names the key and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type.
    #[error("{0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `bundle_endpoint.profile` or `x509pop.cert_file`.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl From<figment::Error> for ConfigError {
    /// A [`ConfigError::Parse`] worded by [`format_figment_error`].
    fn from(error: figment::Error) -> Self {
        Self::Parse(format_figment_error(&error))
    }
}

/// The error for `key`, whose value parsed but is not acceptable: `message` says what is wrong
/// and how to fix it.
pub fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// `value` of `key`, a duration that must be longer than zero.
///
/// # Errors
/// [`ConfigError::Invalid`] for zero.
pub fn positive(key: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    Ok(value)
}

/// `value` of `key`, a count that must be at least 1 `unit` (e.g. `open connection per uid`).
///
/// # Errors
/// [`ConfigError::Invalid`] for zero, naming the unit.
pub fn at_least_one<T: Copy + Default + PartialEq>(
    key: &'static str,
    value: T,
    unit: &str,
) -> Result<T, ConfigError> {
    if value == T::default() {
        return Err(invalid(
            key,
            format!("0 is out of range: give at least 1 {unit}"),
        ));
    }
    Ok(value)
}

/// A cap on open connections as a config section spells it.
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    /// The dotted key, e.g. `limits.max_connections`.
    pub key: &'static str,
    /// The value given.
    pub value: usize,
    /// What one counts, for the message when it is zero, e.g. `open connection per uid`.
    pub unit: &'static str,
}

/// The caps on a listener's open connections, `total` and `per_peer` (a source address, a uid),
/// checked together: each at least 1, and the cap per peer within the total. Returns their
/// values.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the key and the fix.
pub fn connection_caps(total: Cap, per_peer: Cap) -> Result<(usize, usize), ConfigError> {
    let max = at_least_one(total.key, total.value, total.unit)?;
    let max_per_peer = at_least_one(per_peer.key, per_peer.value, per_peer.unit)?;
    if max_per_peer > max {
        let name = total.key.rsplit('.').next().unwrap_or(total.key);
        return Err(invalid(
            per_peer.key,
            format!(
                "{max_per_peer} is more than {} ({max}); lower it or raise {name}",
                total.key
            ),
        ));
    }
    Ok((max, max_per_peer))
}

/// Checks that the configuration file `path` exists and is a file. `expected` completes the
/// advice "pass --config with the path of …", e.g. `a hub.toml (see hub/hub.example.toml)`.
///
/// # Errors
/// [`ConfigError::Parse`] naming the path and the fix.
pub fn require_file(path: &Path, expected: &str) -> Result<(), ConfigError> {
    if path.is_file() {
        return Ok(());
    }
    Err(ConfigError::Parse(format!(
        "config file {} does not exist or is not a file; pass --config with the path of \
         {expected}",
        path.display()
    )))
}

/// The layers of a configuration: the TOML file `path`, then the environment variables
/// `<env_prefix>KEY` (`__` between nested keys, e.g. `FEDHUB_HUB__SVID__JWT_TTL`), which win.
/// `expected` completes the advice when `path` is not a file (see [`require_file`]).
///
/// # Errors
/// [`ConfigError::Parse`] when `path` is not a file.
pub fn layers(path: &Path, expected: &str, env_prefix: &str) -> Result<Figment, ConfigError> {
    require_file(path, expected)?;
    Ok(Figment::new()
        .merge(Toml::file(path))
        .merge(Env::prefixed(env_prefix).split("__")))
}

/// Every problem in `error`, joined with `; `, each as `dotted.key: what` (or just `what` when
/// it concerns no key, e.g. a TOML syntax error).
pub fn format_figment_error(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            if key.is_empty() {
                e.kind.to_string()
            } else {
                format!("{key}: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialized, to provoke figment errors")]
    struct Settings {
        name: Option<String>,
        section: Option<Section>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialized, to provoke figment errors")]
    struct Section {
        port: u16,
    }

    fn parse_error(toml: &str) -> String {
        let error = Figment::new()
            .merge(Toml::string(toml))
            .extract::<Settings>()
            .unwrap_err();
        ConfigError::from(error).to_string()
    }

    #[test]
    fn figment_errors_name_the_dotted_key() {
        // Several problems at once, one line each; without a key, no prefix.
        let several = figment::Error::from("first problem".to_owned())
            .with_path("a.b")
            .chain(figment::Error::from("second problem".to_owned()));
        // (A chain iterates from the error chained last.)
        assert_eq!(
            format_figment_error(&several),
            "second problem; a.b: first problem"
        );
        let syntax = parse_error("name = \n");
        assert!(!syntax.starts_with(':'), "{syntax}");
        assert!(syntax.contains("TOML"), "{syntax}");
        assert_eq!(
            parse_error("[section]\nport = \"x\"\n"),
            "section.port: invalid type: found string \"x\", expected u16"
        );
        assert_eq!(
            parse_error("nmae = \"a\"\n"),
            "nmae: unknown field: found `nmae`, expected ``name` or `section``"
        );
        assert_eq!(parse_error("[section]\n"), "section: missing field `port`");
    }

    #[test]
    fn invalid_values_name_the_key_then_the_fix() {
        let error = invalid(
            "x509pop.cert_file",
            "is empty; give the path of a PEM chain",
        );
        assert_eq!(
            error.to_string(),
            "x509pop.cert_file: is empty; give the path of a PEM chain"
        );
        assert!(matches!(
            error,
            ConfigError::Invalid {
                key: "x509pop.cert_file",
                ..
            }
        ));
    }

    #[test]
    fn connection_caps_are_at_least_one_and_the_cap_per_peer_within_the_total() {
        let cap = |key, value, unit| Cap { key, value, unit };
        let total = |value| cap("s.max_connections", value, "open connection");
        let per_uid = |value| {
            cap(
                "s.max_connections_per_uid",
                value,
                "open connection per uid",
            )
        };
        assert_eq!(connection_caps(total(10), per_uid(10)).unwrap(), (10, 10));
        assert_eq!(
            connection_caps(total(0), per_uid(1))
                .unwrap_err()
                .to_string(),
            "s.max_connections: 0 is out of range: give at least 1 open connection"
        );
        assert_eq!(
            connection_caps(total(1), per_uid(0))
                .unwrap_err()
                .to_string(),
            "s.max_connections_per_uid: 0 is out of range: give at least 1 open connection per uid"
        );
        assert_eq!(
            connection_caps(total(10), per_uid(11))
                .unwrap_err()
                .to_string(),
            "s.max_connections_per_uid: 11 is more than s.max_connections (10); lower it or \
             raise max_connections"
        );
    }

    #[test]
    fn a_missing_config_file_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("hub.toml");
        let error = require_file(&missing, "a hub.toml (see hub/hub.example.toml)").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "config file {} does not exist or is not a file; pass --config with the path \
                 of a hub.toml (see hub/hub.example.toml)",
                missing.display()
            )
        );
        // A directory is not a config file either.
        assert!(require_file(dir.path(), "x").is_err());
        std::fs::write(&missing, "").unwrap();
        require_file(&missing, "x").unwrap();
    }
}
