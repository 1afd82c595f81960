//! fedhub storage: the hub's data model over sqlx, on SQLite (embedded default: one file in the
//! hub's data directory) or PostgreSQL (several hub replicas sharing one database).
//!
//! All SQL of fedhub lives in this crate. The same statements run on both databases through
//! the sqlx `Any` driver; the schema comes in two migration sets (`migrations/sqlite`,
//! `migrations/postgres`), applied by [`Registry::connect`] and [`Registry::open_sqlite`].
//!
//! What is stored:
//! - bundles, own and foreign ([`BundleRecord`]); the own bundle is the union of the
//!   authorities every hub replica publishes ([`Registry::publish_replica_authorities`]);
//! - federation relationships with their refresh status and a refresh lease that hub
//!   replicas claim ([`Relationship`], [`Registry::claim_due_refreshes`]); a refresh stores
//!   its result only while the bundle it started from is still stored
//!   ([`Registry::record_refresh_success`], [`BundleRevision`]);
//! - federation groups: named sets of trust domains ([`FederationGroup`]);
//! - registration entries ([`Entry`]), with node aliases ([`NODE_ALIAS_PARENT_PATH`]); an
//!   entry federates with trust domains it names, with the members of groups it names, and
//!   optionally with every relationship ([`FederationScope`] resolves them);
//! - agents ([`Agent`]) and join tokens (hashed; [`Registry::consume_join_token`]);
//! - an audit log of admin changes and of every bundle change ([`AuditEvent`], read with
//!   [`Registry::audit_events`]; the bundle changes are described by
//!   [`bundle_change_details`]) and a change feed ([`Change`]) that hubs poll to push changes
//!   to their agents.
//!
//! Every write is one transaction that also appends to the change feed; admin calls take an
//! `actor` and write their audit row in the same transaction. Bookkeeping that agents never
//! see (refresh status and schedule, refresh leases, agent heartbeats) writes no change, so a
//! federation refresh that finds the bundle unchanged wakes nobody.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod agents;
mod audit;
mod bundles;
mod entries;
mod error;
mod federation;
mod feed;
mod groups;
mod join_tokens;
mod own_bundle;
mod selector;
mod store;

pub use agents::{
    Agent, AgentAttestation, MAX_ATTESTATION_TYPE_LEN, MAX_NODE_SELECTORS, MAX_SERIAL_LEN,
    TOUCH_BATCH,
};
pub use audit::{
    AuditQuery, BUNDLE_DELETE, BUNDLE_SET, BUNDLE_UPDATE, KeyActivation, MAX_AUDIT_LIMIT,
    OWN_BUNDLE_ACTIVATE, OWN_BUNDLE_PUBLISH, OWN_BUNDLE_RETIRE, bundle_change_details,
};
pub use bundles::{BundleRecord, BundleRevision, StoredBundle};
pub use entries::{
    DetachedEntry, Entry, EntryFilter, EntrySpec, MAX_DNS_NAMES, MAX_ENTRY_SELECTORS, MAX_HINT_LEN,
    NODE_ALIAS_PARENT_PATH,
};
pub use error::RegistryError;
pub use federation::{
    FetchProfile, MAX_ENDPOINT_URL_LEN, MAX_EXTRA_CA_PEM_LEN, MAX_LEASE_OWNER_LEN,
    MAX_REFRESH_ERROR_LEN, RefreshRecorded, RefreshStatus, RefreshSuccess, Relationship,
    RelationshipOptions, RelationshipSpec, SequenceDrop, SequenceSeen,
};
pub use feed::{AuditEvent, Change, ChangeKind, MAX_ACTOR_LEN};
pub use groups::{FederationGroup, FederationScope, MAX_GROUP_NAME_LEN};
pub use join_tokens::{JoinTokenUse, MAX_JOIN_TOKEN_LEN, MIN_JOIN_TOKEN_LEN};
pub use own_bundle::{
    AuthorityKind, BundleReplica, MAX_REPLICA_AUTHORITIES, MAX_REPLICA_ID_LEN,
    OwnBundlePublication, ReplicaAuthorities, ReplicaAuthority,
};
pub use selector::{MAX_SELECTOR_TYPE_LEN, MAX_SELECTOR_VALUE_LEN, Selector, SelectorError};
pub use store::{Backend, POSTGRES_MIGRATOR, Registry, SQLITE_MIGRATOR};
