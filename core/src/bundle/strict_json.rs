//! Reading untrusted bundle JSON, rejecting duplicate object keys (decoding, step 1).
//!
//! `serde_json::Value` keeps the last of two equal keys without a word, so documents are read
//! through the seeds below, which refuse a repeated key wherever it appears. Sequence and refresh
//! hint are captured as raw JSON text and checked by hand, so `1e400` or `1.0` give a typed error
//! rather than a float.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::error::{BundleError, shorten};

/// A JSON value from an untrusted document. Numbers and booleans are never needed inside
/// `keys`, so only their presence is kept.
pub(super) enum Json {
    Null,
    Bool,
    Number,
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool => "a boolean",
            Self::Number => "a number",
            Self::String(_) => "a string",
            Self::Array(_) => "an array",
            Self::Object(_) => "an object",
        }
    }

    /// The value for a message: a quoted (shortened) string, or its JSON type.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::String(s) => format!("{:?}", shorten(s)),
            other => other.kind().to_owned(),
        }
    }
}

/// Shared state of one document read: the duplicate key that stopped it, if any.
#[derive(Default)]
pub(super) struct Ctx {
    duplicate: RefCell<Option<String>>,
}

impl Ctx {
    fn duplicate<E: de::Error>(&self, key: &str) -> E {
        let key = shorten(key);
        let error = E::custom(format_args!("duplicate object key {key:?}"));
        *self.duplicate.borrow_mut() = Some(key);
        error
    }

    pub(super) fn read<'de, S: DeserializeSeed<'de>>(
        &self,
        bytes: &'de [u8],
        seed: S,
    ) -> Result<S::Value, BundleError> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        seed.deserialize(&mut deserializer)
            .and_then(|value| deserializer.end().map(|()| value))
            .map_err(|e| self.error(&e))
    }

    fn error(&self, error: &serde_json::Error) -> BundleError {
        if let Some(key) = self.duplicate.borrow_mut().take() {
            return BundleError::DuplicateKey {
                key,
                line: error.line(),
                column: error.column(),
            };
        }
        match error.classify() {
            serde_json::error::Category::Data => BundleError::WrongType(error.to_string()),
            _ => BundleError::Json(error.to_string()),
        }
    }
}

#[derive(Clone, Copy)]
struct JsonSeed<'c>(&'c Ctx);

impl<'de> DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = Json;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonSeed<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Bool)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(self.0.duplicate(&key));
            }
            let value = map.next_value_seed(self)?;
            members.insert(key, value);
        }
        Ok(Json::Object(members))
    }
}

/// A bundle document as read: the members that matter, still uninterpreted.
pub(super) struct RawBundle {
    pub(super) keys: Option<Json>,
    pub(super) sequence: Option<Box<RawValue>>,
    /// `spiffe_refresh_hint`.
    pub(super) refresh_hint: Option<Box<RawValue>>,
    /// `refresh_hint`, the name TDB §5.1.1 uses inside bundle maps (AMB-8).
    pub(super) map_refresh_hint: Option<Box<RawValue>>,
}

/// Reads one bundle document, or one bundle inside a bundle map.
#[derive(Clone, Copy)]
pub(super) struct BundleSeed<'c> {
    pub(super) ctx: &'c Ctx,
    /// Whether the bundle is inside a bundle map, where `refresh_hint` is also read.
    pub(super) in_map: bool,
}

impl<'de> DeserializeSeed<'de> for BundleSeed<'_> {
    type Value = RawBundle;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<RawBundle, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BundleSeed<'_> {
    type Value = RawBundle;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SPIFFE bundle (a JSON object with a \"keys\" array)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawBundle, A::Error> {
        let mut raw = RawBundle {
            keys: None,
            sequence: None,
            refresh_hint: None,
            map_refresh_hint: None,
        };
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(self.ctx.duplicate(&key));
            }
            match key.as_str() {
                "keys" => raw.keys = Some(map.next_value_seed(JsonSeed(self.ctx))?),
                "spiffe_sequence" => raw.sequence = Some(map.next_value()?),
                "spiffe_refresh_hint" => raw.refresh_hint = Some(map.next_value()?),
                "refresh_hint" if self.in_map => raw.map_refresh_hint = Some(map.next_value()?),
                // Unknown members are allowed (BUN-7) but still read for duplicate keys.
                _ => {
                    map.next_value_seed(JsonSeed(self.ctx))?;
                }
            }
            seen.insert(key);
        }
        Ok(raw)
    }
}

/// Reads `{"trust_domains": {…}}`; `None` when `trust_domains` is missing.
pub(super) struct MapSeed<'c> {
    pub(super) ctx: &'c Ctx,
}

pub(super) type RawMapEntries = Vec<(String, RawBundle)>;

impl<'de> DeserializeSeed<'de> for MapSeed<'_> {
    type Value = Option<RawMapEntries>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MapSeed<'_> {
    type Value = Option<RawMapEntries>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SPIFFE bundle map (a JSON object with a \"trust_domains\" object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut trust_domains = None;
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(self.ctx.duplicate(&key));
            }
            if key == "trust_domains" {
                trust_domains = Some(map.next_value_seed(TrustDomainsSeed { ctx: self.ctx })?);
            } else {
                map.next_value_seed(JsonSeed(self.ctx))?;
            }
            seen.insert(key);
        }
        Ok(trust_domains)
    }
}

struct TrustDomainsSeed<'c> {
    ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for TrustDomainsSeed<'_> {
    type Value = RawMapEntries;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TrustDomainsSeed<'_> {
    type Value = RawMapEntries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"trust_domains\" as an object of trust domain names to bundles")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: RawMapEntries = Vec::new();
        let mut seen = BTreeSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if seen.contains(&name) {
                return Err(self.ctx.duplicate(&name));
            }
            let bundle = map.next_value_seed(BundleSeed {
                ctx: self.ctx,
                in_map: true,
            })?;
            seen.insert(name.clone());
            entries.push((name, bundle));
        }
        Ok(entries)
    }
}
