//! The admin API's wire types: JSON request and response bodies shared by the hub (server) and
//! the `fedhub` CLI (client).
//!
//! Conventions: times are RFC 3339 strings in UTC with whole seconds ([`Timestamp`]); durations
//! are whole seconds in fields ending in `_secs`; selectors are `type:value` strings; optional
//! values are `null` or absent. Errors come as [`ErrorBody`] with a 4xx or 5xx status.

use std::fmt;
use std::time::{Duration, SystemTime};

use fedhub_core::endpoint::{FetchSource, ProfileName};
use fedhub_core::{SpiffeId, TrustDomain};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ca::KeyState;

/// Percent-encodes one path segment or query value of an admin API request: everything but
/// `A-Z a-z 0-9 - . _ ~` (SPIFFE IDs, entry ids and names go into paths this way).
pub fn encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The selector rule the entry handlers apply ([`Selector::parse_supported`]), for clients
/// that check before they send.
pub use fedhub_registry::{Selector, SelectorError};

/// The prefix of every admin route.
pub const PREFIX: &str = "/v1";

/// The largest request or response body, in bytes (both sides enforce it).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// A point in time, on the wire as RFC 3339 in UTC with whole seconds
/// (`2025-01-31T12:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_seconds(self.0).fmt(f)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        Self(time)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339_weak(&text)
            .map(Self)
            .map_err(|e| serde::de::Error::custom(format!("time {text:?}: {e}")))
    }
}

/// Converts a registry time.
pub(crate) fn ts(time: time::OffsetDateTime) -> Timestamp {
    Timestamp(SystemTime::from(time))
}

/// Converts seconds since the Unix epoch.
pub(crate) fn unix_ts(secs: u64) -> Timestamp {
    Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do, for a human.
    pub error: String,
}

/// `POST /v1/join-tokens`: generate a join token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateJoinToken {
    /// The SPIFFE ID the agent gets; absent: derived from the token (see
    /// [`crate::admin::join_token_agent_id`]).
    pub spiffe_id: Option<SpiffeId>,
    /// How long the token may be used.
    pub ttl_secs: u64,
}

/// A generated join token. The token is shown only in this response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinTokenView {
    /// The secret token (32 random bytes, base64url without padding).
    pub token: String,
    /// The SPIFFE ID the agent gets when it attests with the token.
    pub spiffe_id: SpiffeId,
    /// When the token stops being accepted.
    pub expires_at: Timestamp,
}

/// A registration entry as an admin writes it (`POST /v1/entries`, `PUT /v1/entries/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySpecBody {
    /// The SPIFFE ID issued.
    pub spiffe_id: SpiffeId,
    /// The agent or node alias that may receive it.
    pub parent_id: SpiffeId,
    /// `type:value` selectors; all must match.
    pub selectors: Vec<String>,
    /// Foreign trust domains whose bundles the workload receives.
    #[serde(default)]
    pub federates_with: Vec<TrustDomain>,
    /// Federation groups whose members the workload federates with, whatever the members are
    /// at the time.
    #[serde(default)]
    pub federates_with_groups: Vec<String>,
    /// Federate with every trust domain the hub has a relationship with, also later ones.
    #[serde(default)]
    pub federates_with_all: bool,
    /// X509-SVID lifetime in seconds; absent: the hub default.
    #[serde(default)]
    pub x509_svid_ttl_secs: Option<u64>,
    /// JWT-SVID lifetime in seconds; absent: the hub default.
    #[serde(default)]
    pub jwt_svid_ttl_secs: Option<u64>,
    /// DNS names put in the X509-SVID.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// A hint for workloads choosing between SVIDs.
    #[serde(default)]
    pub hint: Option<String>,
}

impl EntrySpecBody {
    /// An entry of `spiffe_id` for `parent_id` with `selectors`, everything else at its
    /// default: no federation, the hub's SVID lifetimes, no DNS names, no hint.
    pub fn new(spiffe_id: SpiffeId, parent_id: SpiffeId, selectors: Vec<String>) -> Self {
        Self {
            spiffe_id,
            parent_id,
            selectors,
            federates_with: Vec::new(),
            federates_with_groups: Vec::new(),
            federates_with_all: false,
            x509_svid_ttl_secs: None,
            jwt_svid_ttl_secs: None,
            dns_names: Vec::new(),
            hint: None,
        }
    }
}

/// Query of `POST /v1/entries` and `PUT /v1/entries/{id}`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct EntryWriteQuery {
    /// Accept a parent ID that is neither an agent, a node alias nor the SPIFFE ID of a
    /// pending join token (an agent still to come by other means).
    #[serde(default)]
    pub allow_unknown_parent: bool,
}

/// A stored registration entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryView {
    /// The entry id.
    pub id: String,
    /// What is registered.
    #[serde(flatten)]
    pub spec: EntrySpecBody,
    /// The trust domains it federates with in effect now: `federates_with`, the members of
    /// its groups and, with `federates_with_all`, every relationship.
    pub effective_federates_with: Vec<TrustDomain>,
    /// Grows by one on every change.
    pub revision: u64,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// Query of `GET /v1/entries`; every given field must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EntryQuery {
    /// Only entries with this SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// Only entries with this parent ID.
    pub parent_id: Option<SpiffeId>,
    /// Only entries naming this trust domain in `federates_with`.
    pub federates_with: Option<TrustDomain>,
}

/// A stored bundle (`GET /v1/bundle`, `GET /v1/bundles`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleView {
    /// Its trust domain.
    pub trust_domain: TrustDomain,
    /// `own` (this hub's), `federated` (kept fresh by a federation relationship) or `static`
    /// (set by an admin).
    pub kind: BundleKind,
    /// `spiffe_sequence`.
    pub sequence: Option<u64>,
    /// Number of X.509 authorities.
    pub x509_authorities: usize,
    /// Number of JWT authorities.
    pub jwt_authorities: usize,
    /// `spiffe_refresh_hint` in seconds.
    pub refresh_hint_secs: Option<u64>,
    /// When this version was stored.
    pub updated_at: Timestamp,
    /// The SPIFFE bundle JSON document.
    pub document: String,
}

/// Where a stored bundle comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleKind {
    /// The hub's own trust domain.
    Own,
    /// A foreign trust domain with a federation relationship.
    Federated,
    /// A foreign trust domain set by an admin, without a relationship.
    Static,
}

impl fmt::Display for BundleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Own => "own",
            Self::Federated => "federated",
            Self::Static => "static",
        })
    }
}

/// `PUT /v1/bundles/{trust_domain}`: store a foreign bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetBundle {
    /// A SPIFFE bundle JSON document or PEM CA certificates.
    pub document: String,
}

/// Query of `DELETE /v1/bundles/{trust_domain}`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ForceQuery {
    /// Also when a federation relationship (or, for relationships, entries) use it.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/bundle/rotate`: prepare (and optionally activate) new CA keys.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RotateRequest {
    /// Sign with the new keys at once instead of only publishing them.
    pub activate: bool,
}

/// The CA keys and the own bundle's sequence: after a rotation, or as they are
/// (`GET /v1/bundle/keys`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotateView {
    /// The own bundle's `spiffe_sequence` now.
    pub sequence: Option<u64>,
    /// Every published key.
    pub keys: Vec<KeyView>,
}

/// One CA key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyView {
    /// `x509` or `jwt`.
    pub kind: String,
    /// The key id.
    pub id: String,
    /// `prepared`, `active` or `retired`.
    pub state: KeyState,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it expires and leaves the bundle.
    pub not_after: Timestamp,
}

/// How a federation relationship reaches and authenticates the foreign bundle endpoint
/// (`PUT /v1/federation/{trust_domain}`; part of the create request): the registry's
/// `RelationshipSpec` and `RelationshipOptions` in a flat wire shape, checked by the hub
/// (the URL as a [`BundleEndpointUrl`](fedhub_core::endpoint::BundleEndpointUrl), the fields
/// against the profile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationshipConfig {
    /// The endpoint, an `https://` URL.
    pub bundle_endpoint_url: String,
    /// The endpoint profile: `https_web` (a Web PKI certificate, system roots or
    /// `extra_ca_pem`) or `https_spiffe` (the endpoint's X509-SVID, verified with the stored
    /// bundle).
    pub profile: ProfileName,
    /// `https_spiffe`: the SPIFFE ID the endpoint must present.
    #[serde(default)]
    pub endpoint_spiffe_id: Option<SpiffeId>,
    /// `https_web`: PEM CA certificates of a private PKI, trusted in addition to the system roots.
    #[serde(default)]
    pub extra_ca_pem: Option<String>,
    /// Apply a bundle without keys (a revocation of everything) instead of refusing it.
    #[serde(default)]
    pub accept_empty_bundle: bool,
    /// Refuse a bundle without `spiffe_sequence` while the stored bundle has one, keeping the
    /// stored bundle. Off, such a bundle is applied (without a sequence the most recent fetch
    /// is current) and `status.sequence_dropped` is set.
    #[serde(default)]
    pub require_sequence: bool,
    /// Where the bundle comes from: `direct` (the default: the endpoint serves the trust
    /// domain's bundle) or `relay` (the endpoint is a relay serving a bundle map; the entry of
    /// this trust domain is taken and checked as a direct bundle would be; the profile
    /// authenticates the relay).
    #[serde(default)]
    pub source: FetchSource,
}

/// `POST /v1/federation`: create a relationship.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRelationship {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// How to reach it.
    #[serde(flatten)]
    pub config: RelationshipConfig,
    /// Its bundle to start from (SPIFFE JSON or PEM), stored with the relationship; needed by
    /// `https_spiffe` unless a bundle of the endpoint's trust domain is already stored.
    #[serde(default)]
    pub trust_domain_bundle: Option<String>,
}

/// A relationship with its refresh status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelationshipView {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// How it is reached.
    #[serde(flatten)]
    pub config: RelationshipConfig,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its configuration last changed.
    pub updated_at: Timestamp,
    /// How refreshing went.
    pub status: RefreshStatusView,
    /// The stored bundle of the trust domain, if any.
    pub bundle: Option<StoredBundleSummary>,
}

/// The refresh status of a relationship.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshStatusView {
    /// When a fetch was last attempted.
    pub last_attempt_at: Option<Timestamp>,
    /// When a fetch last succeeded.
    pub last_success_at: Option<Timestamp>,
    /// The error of the last attempt, cleared by a success.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// When the next fetch is due; `null`: now.
    pub next_refresh_at: Option<Timestamp>,
    /// The peer stopped sending `spiffe_sequence`: a fetched bundle had none while the stored
    /// one had a sequence, so rollbacks can no longer be detected. Cleared once a bundle with a
    /// sequence is fetched again.
    #[serde(default)]
    pub sequence_dropped: bool,
    /// When the peer was first seen without a sequence.
    #[serde(default)]
    pub sequence_dropped_at: Option<Timestamp>,
    /// The stored bundle's sequence at that time: the last one the peer sent.
    #[serde(default)]
    pub sequence_dropped_after: Option<u64>,
}

/// What is stored of a relationship's bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredBundleSummary {
    /// `spiffe_sequence`.
    pub sequence: Option<u64>,
    /// Number of X.509 and JWT authorities together.
    pub authorities: usize,
    /// When it was stored.
    pub updated_at: Timestamp,
}

/// The answer to deleting what entries federate with: `DELETE /v1/federation/{trust_domain}`
/// and `DELETE /v1/federation-groups/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unfederated {
    /// How many entries dropped the trust domain from `federates_with`, or the group from
    /// `federates_with_groups` (with `force`).
    pub entries_updated: u64,
    /// Those entries, sorted by id.
    #[serde(default)]
    pub entries: Vec<UnfederatedEntry>,
    /// What the change means for those entries, when there are any: they lose the trust
    /// domain or group for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An entry that lost a trust domain or federation group with a forced delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfederatedEntry {
    /// The entry id.
    pub id: String,
    /// The entry's SPIFFE ID.
    pub spiffe_id: String,
}

impl Unfederated {
    /// The answer for deleting `what` (e.g. `trust domain partner.test`), which `entries` lost.
    pub fn new(what: &str, entries: Vec<fedhub_registry::DetachedEntry>) -> Self {
        let note = (!entries.is_empty()).then(|| {
            format!(
                "these entries no longer federate with {what}, for good: creating it again does not give it back to them; update them to federate again"
            )
        });
        Self {
            entries_updated: entries.len() as u64,
            entries: entries
                .into_iter()
                .map(|entry| UnfederatedEntry {
                    id: entry.id,
                    spiffe_id: entry.spiffe_id,
                })
                .collect(),
            note,
        }
    }
}

/// `POST /v1/federation-groups`: create a federation group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateFederationGroup {
    /// The name: 1 to 64 of `a-z`, `0-9`, `.`, `_` and `-`.
    pub name: String,
    /// Its first members; each needs a federation relationship.
    #[serde(default)]
    pub members: Vec<TrustDomain>,
}

/// A federation group: a named set of trust domains that entries federate with as a whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederationGroupView {
    /// Its name.
    pub name: String,
    /// The member trust domains, sorted.
    pub members: Vec<TrustDomain>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it or its membership last changed.
    pub updated_at: Timestamp,
}

/// An attested agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentView {
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// How it attested.
    pub attestation_type: String,
    /// The serial of its current SVID; `null` once banned.
    pub serial: Option<String>,
    /// When its current SVID expires.
    pub svid_expires_at: Option<Timestamp>,
    /// Its node selectors.
    pub selectors: Vec<String>,
    /// Whether it is banned.
    pub banned: bool,
    /// When it first attested.
    pub created_at: Timestamp,
    /// When its record last changed.
    pub updated_at: Timestamp,
    /// When it was last heard from: when a sync stream opened, then every
    /// `agent_api.heartbeat_interval` while one stays open.
    pub last_seen_at: Option<Timestamp>,
    /// Whether it is alive, judged from `last_seen_at` against the two thresholds below.
    pub state: AgentState,
    /// Seen within this many seconds: `live` (two heartbeat intervals).
    pub live_within_secs: u64,
    /// Seen within this many seconds, but not within `live_within_secs`: `stale` (the agent
    /// SVID's lifetime, `svid.x509_ttl`); beyond, or never seen: `gone`.
    pub stale_within_secs: u64,
}

/// An agent's liveness, from when the hub last heard from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Seen within two heartbeat intervals: it holds a sync stream.
    Live,
    /// Seen within the agent SVID's lifetime, not lately: lost its stream, perhaps reconnecting.
    Stale,
    /// Not seen for longer than an agent SVID lives, or never: its SVID cannot be current.
    Gone,
}

impl AgentState {
    /// The state of an agent last seen at `last_seen` (`None`: never), at `now`.
    #[must_use]
    pub fn at(
        last_seen: Option<SystemTime>,
        now: SystemTime,
        live_within: Duration,
        stale_within: Duration,
    ) -> Self {
        match last_seen.map(|seen| now.duration_since(seen).unwrap_or_default()) {
            Some(ago) if ago <= live_within => Self::Live,
            Some(ago) if ago <= stale_within => Self::Stale,
            _ => Self::Gone,
        }
    }

    /// Its name: `live`, `stale` or `gone`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Stale => "stale",
            Self::Gone => "gone",
        }
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many audit events `GET /v1/audit` returns when the request names no `limit`.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;
/// The most audit events `GET /v1/audit` returns at once.
pub use fedhub_registry::MAX_AUDIT_LIMIT;

/// `GET /v1/audit`: audit events, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditList {
    /// The events, newest first.
    pub events: Vec<AuditEventView>,
}

/// One audit event: an admin write, or a bundle change by the federation manager or the CA.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEventView {
    /// The event's id, increasing; pass it as `before` to read older events.
    pub id: u64,
    /// When it happened.
    pub at: Timestamp,
    /// Who did it: `uid:<uid>` (an admin), `federation-manager:<replica id>`,
    /// `fedhub-hub:<replica id>` (the CA).
    pub actor: String,
    /// What was done, e.g. `bundle.update`, `bundle.set`, `own_bundle.publish`,
    /// `entry.create`.
    pub action: String,
    /// What it was done to: a trust domain, an entry id, an agent's SPIFFE ID, a group name.
    pub target: String,
    /// A JSON object. For bundle changes: `trust_domain`, `old_sequence`, `new_sequence`,
    /// `x509_authorities_added`/`_removed` (SHA-256 fingerprints) and
    /// `jwt_authorities_added`/`_removed` (key ids).
    pub details: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_state_is_live_then_stale_then_gone() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (live_within, stale_within) = (Duration::from_secs(120), Duration::from_secs(3600));
        let state = |ago: Option<u64>| {
            AgentState::at(
                ago.map(|s| now - Duration::from_secs(s)),
                now,
                live_within,
                stale_within,
            )
        };
        assert_eq!(state(Some(0)), AgentState::Live);
        assert_eq!(state(Some(120)), AgentState::Live);
        assert_eq!(state(Some(121)), AgentState::Stale);
        assert_eq!(state(Some(3600)), AgentState::Stale);
        assert_eq!(state(Some(3601)), AgentState::Gone);
        assert_eq!(state(None), AgentState::Gone);
        // A clock a little behind the writer's: seen "in the future" is live.
        let ahead = AgentState::at(
            Some(now + Duration::from_secs(5)),
            now,
            live_within,
            stale_within,
        );
        assert_eq!(ahead, AgentState::Live);
        assert_eq!(serde_json::to_value(AgentState::Stale).unwrap(), "stale");
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = unix_ts(1_700_000_000);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }

    #[test]
    fn relationship_bodies_are_flat() {
        let body = CreateRelationship {
            trust_domain: TrustDomain::new("beta.test").unwrap(),
            config: RelationshipConfig {
                bundle_endpoint_url: "https://beta.test/".into(),
                profile: ProfileName::HttpsWeb,
                endpoint_spiffe_id: None,
                extra_ca_pem: None,
                accept_empty_bundle: false,
                require_sequence: true,
                source: FetchSource::Relay,
            },
            trust_domain_bundle: None,
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["profile"], "https_web");
        assert_eq!(json["trust_domain"], "beta.test");
        assert_eq!(json["require_sequence"], true);
        assert_eq!(json["source"], "relay");
        let back: CreateRelationship = serde_json::from_value(json).unwrap();
        assert_eq!(back.config, body.config);
        // Options left out are off.
        let minimal: RelationshipConfig = serde_json::from_value(serde_json::json!({
            "bundle_endpoint_url": "https://beta.test/",
            "profile": "https_web",
        }))
        .unwrap();
        assert!(!minimal.accept_empty_bundle && !minimal.require_sequence);
        assert_eq!(minimal.source, FetchSource::Direct, "direct by default");
    }
}
