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
//! - [`Problem`] and [`Origin`]: each problem with its key and where the value came from, the
//!   file or an environment variable ([`figment_problems`] for figment's errors, with the
//!   [`nearest`] valid key for an unknown one and an example for a duration; [`locate`] for
//!   the errors of validation), as `hub run`, `agent run` and `fedhub … validate` report them.

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
    /// Several problems, each with its key and where its value came from.
    #[error("{}", join_problems(.0))]
    Problems(Vec<Problem>),
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// Every problem in this error, one by one (a [`ConfigError::Problems`] holds several).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Self::Parse(message) => vec![Problem {
                key: None,
                origin: None,
                message: message.clone(),
            }],
            Self::Invalid { key, message } => vec![Problem {
                key: Some((*key).to_owned()),
                origin: None,
                message: message.clone(),
            }],
            Self::Problems(problems) => problems.clone(),
        }
    }
}

/// Where a value of a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The configuration file, by its path.
    File(std::path::PathBuf),
    /// An environment variable, by its name, e.g. `FEDHUB_HUB__SVID__JWT_TTL`.
    Env(String),
}

impl std::fmt::Display for Origin {
    /// `file hub.toml` or `environment FEDHUB_HUB__SVID__JWT_TTL`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "environment {name}"),
        }
    }
}

/// One problem of a configuration: the dotted key it concerns (none for, e.g., a TOML syntax
/// error), where that key's value came from (none for a default or a string in a test), and
/// what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `svid.jwt_ttl`.
    pub key: Option<String>,
    /// The file or environment variable that gave the value.
    pub origin: Option<Origin>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Problem {
    /// `key (origin): message`, leaving out what is not known.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.key, &self.origin) {
            (Some(key), Some(origin)) => write!(f, "{key} ({origin}): {}", self.message),
            (Some(key), None) => write!(f, "{key}: {}", self.message),
            (None, Some(origin)) => write!(f, "{origin}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// An example of the duration format, for messages.
pub const DURATION_EXAMPLE: &str = "e.g. 1h30m, 30s or 24h";

/// Of `candidates`, the one nearest to `word` by edit distance, when it is near enough to be
/// a likely typo (at most a third of the longer word's characters differ, and at least one
/// character is shared); the first of equally near ones.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word: Vec<char> = word.to_lowercase().chars().collect();
    candidates
        .iter()
        .map(|candidate| {
            let chars: Vec<char> = candidate.chars().collect();
            (
                edit_distance(&word, &chars),
                word.len().max(chars.len()),
                *candidate,
            )
        })
        .filter(|(distance, longest, _)| *distance * 3 <= *longest && distance < longest)
        .min_by_key(|(distance, _, _)| *distance)
        .map(|(_, _, candidate)| candidate)
}

/// Levenshtein distance between `a` and `b`, with a transposition of two neighbours counting
/// as one edit.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut rows = vec![(0..=b.len()).collect::<Vec<usize>>()];
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = rows[i][j] + usize::from(ca != cb);
            row[j + 1] = substitution.min(rows[i][j + 1] + 1).min(row[j] + 1);
            if i > 0 && j > 0 && *ca == b[j - 1] && a[i - 1] == *cb {
                row[j + 1] = row[j + 1].min(rows[i - 1][j - 1] + 1);
            }
        }
        rows.push(row);
    }
    rows[a.len()][b.len()]
}

/// Where the value of the dotted `key` came from in `figment`: the file, or the environment
/// variable `<env_prefix>SECTION__KEY`. `None` for a default, or a provider that is neither.
pub fn origin(figment: &Figment, env_prefix: &str, key: &str) -> Option<Origin> {
    let metadata = figment.find_metadata(key)?;
    if let Some(figment::Source::File(path)) = &metadata.source {
        return Some(Origin::File(path.clone()));
    }
    metadata
        .name
        .ends_with("environment variable(s)")
        .then(|| Origin::Env(format!("{env_prefix}{}", key.replace('.', "__")).to_uppercase()))
}

/// `error`'s problems, each with where its value came from in `figment` (see [`origin`]).
pub fn locate(figment: &Figment, env_prefix: &str, error: &ConfigError) -> ConfigError {
    ConfigError::Problems(
        error
            .problems()
            .into_iter()
            .map(|mut problem| {
                if problem.origin.is_none() {
                    problem.origin = problem
                        .key
                        .as_deref()
                        .and_then(|key| origin(figment, env_prefix, key));
                }
                problem
            })
            .collect(),
    )
}

/// What the checks of the files a configuration names found (each the key naming the file and
/// the start's message about it), as one error whose problems say where each value came from;
/// `Ok` when nothing was found. The start's messages begin with the key; it is said once.
///
/// # Errors
/// [`ConfigError::Problems`], one problem per file found wrong.
pub fn file_problems(
    figment: &Figment,
    env_prefix: &str,
    found: Vec<(&'static str, String)>,
) -> Result<(), ConfigError> {
    if found.is_empty() {
        return Ok(());
    }
    let problems = found
        .into_iter()
        .flat_map(|(key, message)| {
            let message = message
                .strip_prefix(key)
                .map_or(message.as_str(), |rest| {
                    rest.trim_start_matches(':').trim_start()
                })
                .to_owned();
            locate(figment, env_prefix, &invalid(key, message)).problems()
        })
        .collect();
    Err(ConfigError::Problems(problems))
}

/// The problems of `error`, raised while extracting `figment`: each with its dotted key, where
/// its value came from (see [`origin`]), and a message that suggests the nearest key for an
/// unknown one and shows the format of a duration.
pub fn figment_problems(
    figment: &Figment,
    env_prefix: &str,
    error: &figment::Error,
) -> ConfigError {
    ConfigError::Problems(
        error
            .clone()
            .into_iter()
            .map(|e| {
                let key = e.path.join(".");
                let origin = if key.is_empty() {
                    None
                } else {
                    origin(figment, env_prefix, &key)
                };
                Problem {
                    key: (!key.is_empty()).then_some(key),
                    origin,
                    message: kind_message(&e.kind),
                }
            })
            .collect(),
    )
}

/// figment's wording of `kind`, with the nearest known key for an unknown one and an example
/// for a duration.
fn kind_message(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::UnknownField(field, expected) => {
            let valid = expected
                .iter()
                .map(|key| format!("`{key}`"))
                .collect::<Vec<_>>()
                .join(", ");
            match nearest(field, expected) {
                Some(near) => {
                    format!("unknown key `{field}`; did you mean `{near}`? (valid here: {valid})")
                }
                None => format!("unknown key `{field}` (valid here: {valid})"),
            }
        }
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected)
            if expected == "a duration" =>
        {
            format!("{kind}, {DURATION_EXAMPLE}")
        }
        _ => kind.to_string(),
    }
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
        return Err(invalid(
            key,
            format!("must be longer than zero ({DURATION_EXAMPLE})"),
        ));
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
    fn the_nearest_key_is_suggested_only_when_near() {
        let keys = ["enabled", "address", "path", "refresh_hint", "spiffe_id"];
        assert_eq!(nearest("refresh_hnt", &keys), Some("refresh_hint"));
        assert_eq!(nearest("refersh_hint", &keys), Some("refresh_hint"));
        assert_eq!(nearest("adress", &keys), Some("address"));
        assert_eq!(nearest("Enabled", &keys), Some("enabled"));
        assert_eq!(nearest("port", &keys), None);
        assert_eq!(nearest("database_url", &keys), None);
        assert_eq!(nearest("x", &["y"]), None);
    }

    #[test]
    fn unknown_keys_and_durations_are_explained_and_located_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        std::fs::write(&path, "[section]\nprot = 1\n").unwrap();
        let figment = Figment::new().merge(Toml::file(&path));
        let error = figment.extract::<Settings>().unwrap_err();
        let problems = figment_problems(&figment, "X__", &error).problems();
        assert_eq!(
            problems,
            [Problem {
                key: Some("section.prot".into()),
                origin: Some(Origin::File(path.clone())),
                message: "unknown key `prot`; did you mean `port`? (valid here: `port`)".into(),
            }]
        );
        assert_eq!(
            problems[0].to_string(),
            format!(
                "section.prot (file {}): unknown key `prot`; did you mean `port`? (valid here: \
                 `port`)",
                path.display()
            )
        );
        // A value that parsed but is refused is located too; a default has no origin.
        let refused = locate(&figment, "X__", &invalid("section.prot", "is wrong"));
        assert_eq!(
            refused.problems()[0].origin,
            Some(Origin::File(path.clone()))
        );
        let default = locate(&figment, "X__", &invalid("section.port", "is wrong"));
        assert_eq!(default.problems()[0].origin, None);
        assert_eq!(default.to_string(), "section.port: is wrong");

        let duration = figment::error::Kind::InvalidValue(
            figment::error::Actual::Str("5 minutes".into()),
            "a duration".into(),
        );
        assert_eq!(
            kind_message(&duration),
            "invalid value string \"5 minutes\", expected a duration, e.g. 1h30m, 30s or 24h"
        );
        assert_eq!(
            positive("a.ttl", Duration::ZERO).unwrap_err().to_string(),
            "a.ttl: must be longer than zero (e.g. 1h30m, 30s or 24h)"
        );
        assert_eq!(
            Origin::Env("FEDHUB_HUB__SVID__JWT_TTL".into()).to_string(),
            "environment FEDHUB_HUB__SVID__JWT_TTL"
        );
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
