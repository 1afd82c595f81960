//! Selectors: `type:value` pairs that describe a node or a workload.

use std::fmt;
use std::str::FromStr;

/// The longest selector type accepted, in bytes.
pub const MAX_SELECTOR_TYPE_LEN: usize = 64;
/// The longest selector value accepted, in bytes.
pub const MAX_SELECTOR_VALUE_LEN: usize = 1024;

/// Why a string is not a valid selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// There is no `:` between type and value.
    #[error("selector {0:?} must have the form type:value")]
    MissingColon(String),
    /// The type is empty, too long, or holds a byte outside `a-z A-Z 0-9 _ - .`.
    #[error(
        "selector type {0:?} must be 1 to {MAX_SELECTOR_TYPE_LEN} letters, digits, '_', '-' or '.'"
    )]
    BadType(String),
    /// The value is empty, too long, or holds a control character.
    #[error(
        "selector value for type {0:?} must be 1 to {MAX_SELECTOR_VALUE_LEN} bytes without control characters"
    )]
    BadValue(String),
    /// Well formed, but not a selector fedhub's attestors produce (unknown type or key, a
    /// malformed value, or several selectors in one string): no workload or node would ever
    /// match it.
    #[error(
        "selector {selector:?} is not valid: {reason}; valid selectors: {}",
        valid_forms()
    )]
    Unsupported {
        /// The selector as given.
        selector: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What the value of a selector key must look like.
#[derive(Clone, Copy)]
enum ValueRule {
    /// A decimal number (an id).
    Number,
    /// A user or group name: no `:`, `,` or white space.
    Name,
    /// An absolute path.
    AbsolutePath,
    /// 64 lowercase hex digits.
    Sha256,
    /// Any text (a certificate name).
    Text,
}

impl ValueRule {
    fn placeholder(self) -> &'static str {
        match self {
            Self::Number => "<number>",
            Self::Name => "<name>",
            Self::AbsolutePath => "</absolute/path>",
            Self::Sha256 => "<64 lowercase hex digits>",
            Self::Text => "<value>",
        }
    }

    /// Why `value` breaks the rule, if it does.
    fn check(self, value: &str) -> Option<&'static str> {
        let ok = match self {
            Self::Number => !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()),
            Self::Name => {
                !value.is_empty()
                    && !value
                        .chars()
                        .any(|c| c == ':' || c == ',' || c.is_whitespace())
            }
            Self::AbsolutePath => value.starts_with('/'),
            Self::Sha256 => {
                value.len() == 64
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            }
            Self::Text => !value.is_empty(),
        };
        (!ok).then_some(match self {
            Self::Number => "must be a number",
            Self::Name => "must be a name without ':', ',' or spaces",
            Self::AbsolutePath => "must be an absolute path",
            Self::Sha256 => "must be 64 lowercase hex digits",
            Self::Text => "must not be empty",
        })
    }
}

/// The selectors fedhub's attestors produce, as (type, key, value rule): the workload
/// attestor of the agent (`unix`) and the x509pop node attestor of the hub.
const SUPPORTED: [(&str, &str, ValueRule); 11] = [
    ("unix", "uid", ValueRule::Number),
    ("unix", "gid", ValueRule::Number),
    ("unix", "user", ValueRule::Name),
    ("unix", "group", ValueRule::Name),
    ("unix", "supplementary_gid", ValueRule::Number),
    ("unix", "supplementary_group", ValueRule::Name),
    ("unix", "path", ValueRule::AbsolutePath),
    ("unix", "sha256", ValueRule::Sha256),
    ("x509pop", "subject:cn", ValueRule::Text),
    ("x509pop", "ca:fingerprint", ValueRule::Sha256),
    ("x509pop", "san:dns", ValueRule::Text),
];

/// The valid selector forms, e.g. `unix:uid:<number>`, joined with `, `.
fn valid_forms() -> String {
    SUPPORTED
        .iter()
        .map(|(kind, key, rule)| format!("{kind}:{key}:{}", rule.placeholder()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A selector such as `unix:uid:1000`: a type (`unix`) and a value (`uid:1000`), split at the
/// first `:`. Ordered by type, then value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    kind: String,
    value: String,
}

impl Selector {
    /// Builds a selector from its type and value.
    ///
    /// # Errors
    /// [`SelectorError`] when the type or value breaks the rules above.
    pub fn new(kind: &str, value: &str) -> Result<Self, SelectorError> {
        let type_ok = (1..=MAX_SELECTOR_TYPE_LEN).contains(&kind.len())
            && kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !type_ok {
            return Err(SelectorError::BadType(kind.to_owned()));
        }
        let value_ok = (1..=MAX_SELECTOR_VALUE_LEN).contains(&value.len())
            && !value.chars().any(char::is_control);
        if !value_ok {
            return Err(SelectorError::BadValue(kind.to_owned()));
        }
        Ok(Self {
            kind: kind.to_owned(),
            value: value.to_owned(),
        })
    }

    /// Parses `type:value`, splitting at the first `:`.
    ///
    /// # Errors
    /// [`SelectorError`] when there is no `:` or a part breaks the rules.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let (kind, value) = input
            .split_once(':')
            .ok_or_else(|| SelectorError::MissingColon(input.to_owned()))?;
        Self::new(kind, value)
    }

    /// Parses `type:value` ([`Selector::parse`]) and checks that it is a selector fedhub's
    /// attestors produce ([`Selector::check_supported`]). This is the rule for the selectors
    /// of registration entries.
    ///
    /// # Errors
    /// [`SelectorError`]; [`SelectorError::Unsupported`] lists the valid forms.
    pub fn parse_supported(input: &str) -> Result<Self, SelectorError> {
        let selector = Self::parse(input)?;
        selector.check_supported()?;
        Ok(selector)
    }

    /// Checks that this is a selector fedhub's attestors produce: a known type and key, a
    /// value of the right form, and one selector only (not `unix:uid:0,unix:gid:0`).
    ///
    /// # Errors
    /// [`SelectorError::Unsupported`], whose message lists the valid forms.
    pub fn check_supported(&self) -> Result<(), SelectorError> {
        let unsupported = |reason: String| SelectorError::Unsupported {
            selector: self.to_string(),
            reason,
        };
        let several = SUPPORTED.iter().any(|(kind, _, _)| {
            self.value.contains(&format!(",{kind}:")) || self.value.contains(&format!(" {kind}:"))
        });
        if several {
            return Err(unsupported(
                "it holds several selectors; give each one separately (one --selector flag each)"
                    .to_owned(),
            ));
        }
        if !SUPPORTED.iter().any(|(kind, _, _)| *kind == self.kind) {
            return Err(unsupported(format!(
                "fedhub has no attestor for selector type {:?}",
                self.kind
            )));
        }
        let matched = SUPPORTED.iter().find_map(|(kind, key, rule)| {
            let value = self.value.strip_prefix(key)?.strip_prefix(':')?;
            (*kind == self.kind).then_some((*key, *rule, value))
        });
        let Some((key, rule, value)) = matched else {
            let keys: Vec<&str> = SUPPORTED
                .iter()
                .filter(|(kind, _, _)| *kind == self.kind)
                .map(|(_, key, _)| *key)
                .collect();
            return Err(unsupported(format!(
                "type {} has no such key; its keys are {}",
                self.kind,
                keys.join(", ")
            )));
        };
        match rule.check(value) {
            Some(reason) => Err(unsupported(format!("{} {key} {reason}", self.kind))),
            None => Ok(()),
        }
    }

    /// The type, e.g. `unix`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The value, e.g. `uid:1000`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Sorts and deduplicates selectors into a set in canonical order.
pub(crate) fn canonical(selectors: &[Selector]) -> Vec<Selector> {
    let mut set = selectors.to_vec();
    set.sort();
    set.dedup();
    set
}

/// Encodes a canonical selector list as a JSON array of `type:value` strings.
pub(crate) fn to_json(selectors: &[Selector]) -> String {
    let strings: Vec<String> = selectors.iter().map(ToString::to_string).collect();
    serde_json::Value::from(strings).to_string()
}

/// Decodes a JSON array of `type:value` strings, validating each.
pub(crate) fn from_json(json: &str) -> Result<Vec<Selector>, String> {
    let strings: Vec<String> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    strings
        .iter()
        .map(|s| Selector::parse(s).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_first_colon() {
        let s = Selector::parse("unix:uid:1000").unwrap();
        assert_eq!(s.kind(), "unix");
        assert_eq!(s.value(), "uid:1000");
        assert_eq!(s.to_string(), "unix:uid:1000");
    }

    #[test]
    fn rejects_malformed_selectors() {
        let long_type = format!("{}:v", "t".repeat(MAX_SELECTOR_TYPE_LEN + 1));
        let long_value = format!("t:{}", "v".repeat(MAX_SELECTOR_VALUE_LEN + 1));
        for (input, expected) in [
            ("unix", SelectorError::MissingColon("unix".into())),
            (":v", SelectorError::BadType(String::new())),
            ("un ix:v", SelectorError::BadType("un ix".into())),
            ("unix:", SelectorError::BadValue("unix".into())),
            ("unix:a\nb", SelectorError::BadValue("unix".into())),
            (long_value.as_str(), SelectorError::BadValue("t".into())),
        ] {
            assert_eq!(Selector::parse(input), Err(expected), "{input:?}");
        }
        assert!(matches!(
            Selector::parse(&long_type),
            Err(SelectorError::BadType(_))
        ));
        let max_type = "t".repeat(MAX_SELECTOR_TYPE_LEN);
        assert!(Selector::new(&max_type, &"v".repeat(MAX_SELECTOR_VALUE_LEN)).is_ok());
    }

    #[test]
    fn supported_selectors_are_the_attestors_forms() {
        let hash = "0123456789abcdef".repeat(4);
        for ok in [
            "unix:uid:0".to_owned(),
            "unix:gid:1000".to_owned(),
            "unix:user:www-data".to_owned(),
            "unix:group:wheel".to_owned(),
            "unix:supplementary_gid:27".to_owned(),
            "unix:supplementary_group:docker".to_owned(),
            "unix:path:/usr/bin/my app".to_owned(),
            format!("unix:sha256:{hash}"),
            "x509pop:subject:cn:node-1".to_owned(),
            format!("x509pop:ca:fingerprint:{hash}"),
            "x509pop:san:dns:node-1.example.org".to_owned(),
        ] {
            Selector::parse_supported(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, reason) in [
            ("unix:uid:root", "unix uid must be a number"),
            ("unix:gid:-1", "unix gid must be a number"),
            (
                "unix:userid:0",
                "type unix has no such key; its keys are uid, gid, user",
            ),
            ("unix:0", "type unix has no such key"),
            (
                "k8s:ns:default",
                "fedhub has no attestor for selector type \"k8s\"",
            ),
            ("unix:uid:0,unix:gid:0", "it holds several selectors"),
            ("unix:user:a b", "unix user must be a name"),
            ("unix:path:bin/app", "unix path must be an absolute path"),
            (
                "unix:sha256:ABCDEF",
                "unix sha256 must be 64 lowercase hex digits",
            ),
            (
                "x509pop:subject:cn:",
                "x509pop subject:cn must not be empty",
            ),
            ("x509pop:cn:node", "type x509pop has no such key"),
        ] {
            let error = Selector::parse_supported(bad).unwrap_err();
            assert!(
                matches!(&error, SelectorError::Unsupported { selector, .. } if selector == bad),
                "{bad}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.contains(reason), "{bad}: {message}");
            assert!(
                message.contains("valid selectors: unix:uid:<number>, unix:gid:<number>"),
                "{message}"
            );
            assert!(message.contains("x509pop:subject:cn:<value>, x509pop:ca:fingerprint:<64 lowercase hex digits>, x509pop:san:dns:<value>"), "{message}");
        }
        // Malformed selectors fail as before.
        assert!(matches!(
            Selector::parse_supported("unix"),
            Err(SelectorError::MissingColon(_))
        ));
        // `parse` itself stays permissive: stored and node selectors keep loading.
        assert!(Selector::parse("region:eu").is_ok());
    }

    #[test]
    fn canonical_sorts_and_deduplicates() {
        let a = Selector::parse("b:2").unwrap();
        let b = Selector::parse("a:1").unwrap();
        assert_eq!(
            canonical(&[a.clone(), b.clone(), a.clone()]),
            vec![b.clone(), a.clone()]
        );
        let json = to_json(&canonical(&[a, b]));
        assert_eq!(json, r#"["a:1","b:2"]"#);
        assert_eq!(from_json(&json).unwrap().len(), 2);
        assert!(from_json(r#"["nocolon"]"#).is_err());
    }
}
