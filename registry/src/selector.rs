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
