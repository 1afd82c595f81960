//! Registration entries: which workloads (or node aliases) get which SPIFFE ID.

use std::collections::HashSet;
use std::time::Duration;

use fedhub_core::{SpiffeId, TrustDomain};
use serde_json::json;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::RegistryError;
use crate::feed::ChangeKind;
use crate::groups::{group_exists, validate_group_name};
use crate::selector::{self, Selector};
use crate::store::{
    Fields, Registry, Write, exists, now, relationship_exists, sha256_hex, unix, whole_seconds,
};

/// The path of the parent ID that marks node alias entries: an entry whose parent is
/// `spiffe://<trust domain>/fedhub/server` names a group of agents by node selectors, and
/// entries parented to the alias's SPIFFE ID go to every agent in that group.
pub const NODE_ALIAS_PARENT_PATH: &str = "/fedhub/server";
pub use fedhub_core::id::RESERVED_PATH_PREFIX as RESERVED_PATH;
/// The most selectors one entry may have.
pub const MAX_ENTRY_SELECTORS: usize = 64;
/// The most DNS names one entry may have.
pub const MAX_DNS_NAMES: usize = 64;
/// The longest hint accepted, in bytes.
pub const MAX_HINT_LEN: usize = 1024;

const KIND: &str = "entry";

/// What an admin registers: the identity, who may receive it and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    /// The SPIFFE ID issued; a workload ID, not a trust domain ID.
    pub spiffe_id: SpiffeId,
    /// The agent (or node alias) that may receive it.
    pub parent_id: SpiffeId,
    /// The selectors a workload (or, for node aliases, a node) must all match. A set: order
    /// and repetition do not matter, and it is stored sorted.
    pub selectors: Vec<Selector>,
    /// Foreign trust domains whose bundles the workload receives; each needs a federation
    /// relationship. A set, stored sorted.
    pub federates_with: Vec<TrustDomain>,
    /// Federation groups whose member trust domains the workload federates with, whatever
    /// the members are at the time; each group must exist. A set, stored sorted.
    pub federates_with_groups: Vec<String>,
    /// Whether the workload federates with every trust domain the hub has a federation
    /// relationship with, including those created later.
    pub federates_with_all: bool,
    /// X509-SVID lifetime; `None` means the hub default.
    pub x509_svid_ttl: Option<Duration>,
    /// JWT-SVID lifetime; `None` means the hub default.
    pub jwt_svid_ttl: Option<Duration>,
    /// DNS names put in the X509-SVID.
    pub dns_names: Vec<String>,
    /// A hint for the workload to choose between several SVIDs.
    pub hint: Option<String>,
    /// When the entry stops being served; `None` means never.
    pub expires_at: Option<OffsetDateTime>,
}

impl EntrySpec {
    /// A spec with only the required parts; everything else empty or default.
    pub fn new(spiffe_id: SpiffeId, parent_id: SpiffeId, selectors: Vec<Selector>) -> Self {
        Self {
            spiffe_id,
            parent_id,
            selectors,
            federates_with: Vec::new(),
            federates_with_groups: Vec::new(),
            federates_with_all: false,
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            dns_names: Vec::new(),
            hint: None,
            expires_at: None,
        }
    }

    /// Validates the spec and brings it into stored form.
    fn normalize(&self) -> Result<Stored, RegistryError> {
        if self.spiffe_id.is_trust_domain_id() {
            return Err(RegistryError::invalid(
                "spiffe_id",
                format!(
                    "{} is a trust domain ID; an entry needs a path such as /workload",
                    self.spiffe_id
                ),
            ));
        }
        if self.spiffe_id.is_reserved() {
            return Err(RegistryError::invalid(
                "spiffe_id",
                format!(
                    "{} is in the reserved {RESERVED_PATH} namespace of the hub and its agents; \
                     choose another path",
                    self.spiffe_id
                ),
            ));
        }
        let selectors = selector::canonical(&self.selectors);
        if selectors.is_empty() || selectors.len() > MAX_ENTRY_SELECTORS {
            return Err(RegistryError::invalid(
                "selectors",
                format!("an entry needs 1 to {MAX_ENTRY_SELECTORS} selectors"),
            ));
        }
        if self.dns_names.len() > MAX_DNS_NAMES {
            return Err(RegistryError::invalid(
                "dns_names",
                format!("at most {MAX_DNS_NAMES} are allowed"),
            ));
        }
        if let Some(bad) = self.dns_names.iter().find(|name| !is_dns_name(name)) {
            return Err(RegistryError::invalid(
                "dns_names",
                format!("{bad:?} is not a DNS name"),
            ));
        }
        let hint = self.hint.as_deref().filter(|hint| !hint.is_empty());
        if hint.is_some_and(|hint| hint.len() > MAX_HINT_LEN) {
            return Err(RegistryError::invalid(
                "hint",
                format!("is longer than {MAX_HINT_LEN} bytes"),
            ));
        }
        let mut federates_with = self.federates_with.clone();
        federates_with.sort();
        federates_with.dedup();
        for name in &self.federates_with_groups {
            validate_group_name(name)?;
        }
        let mut federates_with_groups = self.federates_with_groups.clone();
        federates_with_groups.sort();
        federates_with_groups.dedup();
        let identity: Vec<String> = [self.spiffe_id.to_string(), self.parent_id.to_string()]
            .into_iter()
            .chain(selectors.iter().map(ToString::to_string))
            .collect();
        Ok(Stored {
            identity_key: sha256_hex(identity.join("\n").as_bytes()),
            selectors_json: selector::to_json(&selectors),
            dns_names_json: serde_json::Value::from(self.dns_names.clone()).to_string(),
            federates_with,
            federates_with_groups,
            hint: hint.map(str::to_owned),
            x509_svid_ttl: self
                .x509_svid_ttl
                .map(|ttl| whole_seconds("x509_svid_ttl", ttl))
                .transpose()?,
            jwt_svid_ttl: self
                .jwt_svid_ttl
                .map(|ttl| whole_seconds("jwt_svid_ttl", ttl))
                .transpose()?,
            expires_at: self.expires_at.map(unix),
        })
    }
}

/// An [`EntrySpec`] in the form it is stored in.
struct Stored {
    identity_key: String,
    selectors_json: String,
    dns_names_json: String,
    federates_with: Vec<TrustDomain>,
    federates_with_groups: Vec<String>,
    hint: Option<String>,
    x509_svid_ttl: Option<i64>,
    jwt_svid_ttl: Option<i64>,
    expires_at: Option<i64>,
}

/// A stored registration entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry id, a random UUID.
    pub id: Uuid,
    /// What was registered, normalised: selectors, `federates_with` and
    /// `federates_with_groups` sorted and without repeats, an empty hint dropped.
    ///
    /// What the entry federates with in effect also depends on its groups' members and on
    /// the relationships: see [`crate::FederationScope`]. Changes to those do not change the
    /// entry or its revision.
    pub spec: EntrySpec,
    /// Starts at 1 and grows by one on every change to the entry.
    pub revision: u64,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// Which entries [`Registry::list_entries`] returns; every field set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Only entries with this SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// Only entries with this parent ID.
    pub parent_id: Option<SpiffeId>,
    /// Only entries that name this trust domain in `federates_with` (not through a group or
    /// `federates_with_all`).
    pub federates_with: Option<TrustDomain>,
}

/// Selects entries joined with their federated trust domains and federation groups, one row
/// per trust domain or group (or one row with both NULL); `entries_from_rows` folds them back
/// together.
macro_rules! select_entries {
    () => {
        "SELECT e.id, e.spiffe_id, e.parent_id, e.selectors, e.x509_svid_ttl, e.jwt_svid_ttl, \
         e.dns_names, e.hint, e.expires_at, e.federates_with_all, e.revision, e.created_at, \
         e.updated_at, f.trust_domain AS federated_td, f.group_name AS federated_group \
         FROM entries e LEFT JOIN \
         (SELECT entry_id, trust_domain, NULL AS group_name FROM entry_federation \
         UNION ALL SELECT entry_id, NULL, group_name FROM entry_federation_groups) f \
         ON f.entry_id = e.id "
    };
}

/// Keeps the rows of one entry together; `entries_from_rows` sorts each entry's lists.
macro_rules! entry_order {
    () => {
        " ORDER BY e.spiffe_id, e.parent_id, e.id"
    };
}

fn entries_from_rows(rows: &[AnyRow]) -> Result<Vec<Entry>, RegistryError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut current: Option<String> = None;
    for row in rows {
        let f = Fields::new(row, KIND, "id")?;
        let federated = f.opt_trust_domain("federated_td")?;
        let group = f.opt_text("federated_group")?;
        if current.as_deref() != Some(f.key()) {
            entries.push(entry_from_fields(&f)?);
            current = Some(f.key().to_owned());
        }
        if let Some(entry) = entries.last_mut() {
            entry.spec.federates_with.extend(federated);
            entry.spec.federates_with_groups.extend(group);
        }
    }
    for entry in &mut entries {
        entry.spec.federates_with.sort();
        entry.spec.federates_with_groups.sort();
    }
    Ok(entries)
}

fn entry_from_fields(f: &Fields<'_>) -> Result<Entry, RegistryError> {
    let selectors =
        selector::from_json(&f.text("selectors")?).map_err(|e| f.corrupt("selectors", e))?;
    let dns_names: Vec<String> =
        serde_json::from_str(&f.text("dns_names")?).map_err(|e| f.corrupt("dns_names", e))?;
    Ok(Entry {
        id: Uuid::parse_str(f.key()).map_err(|e| f.corrupt("id", e))?,
        spec: EntrySpec {
            spiffe_id: f.spiffe_id("spiffe_id")?,
            parent_id: f.spiffe_id("parent_id")?,
            selectors,
            federates_with: Vec::new(),
            federates_with_groups: Vec::new(),
            federates_with_all: f.flag("federates_with_all")?,
            x509_svid_ttl: f.opt_duration("x509_svid_ttl")?,
            jwt_svid_ttl: f.opt_duration("jwt_svid_ttl")?,
            dns_names,
            hint: f.opt_text("hint")?,
            expires_at: f.opt_time("expires_at")?,
        },
        revision: f.unsigned("revision")?,
        created_at: f.time("created_at")?,
        updated_at: f.time("updated_at")?,
    })
}

/// A DNS name (labels of letters, digits and inner hyphens; a leading `*` label allowed).
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').enumerate().all(|(i, label)| {
            (i == 0 && label == "*")
                || ((1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-'))
        })
}

async fn load_entry(conn: &mut AnyConnection, id: &str) -> Result<Option<Entry>, RegistryError> {
    let rows = sqlx::query(concat!(
        select_entries!(),
        "WHERE e.id = $1",
        entry_order!()
    ))
    .bind(id)
    .fetch_all(conn)
    .await?;
    Ok(entries_from_rows(&rows)?.pop())
}

/// Refuses trust domains without a federation relationship, unknown federation groups and
/// specs that repeat another entry's identity (other than entry `id` itself).
async fn check_conflicts(
    conn: &mut AnyConnection,
    id: &str,
    stored: &Stored,
) -> Result<(), RegistryError> {
    let duplicate: Option<String> =
        sqlx::query_scalar("SELECT id FROM entries WHERE identity_key = $1 AND id <> $2")
            .bind(stored.identity_key.as_str())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(existing) = duplicate {
        return Err(RegistryError::DuplicateEntry { existing });
    }
    for td in &stored.federates_with {
        if !relationship_exists(conn, td).await? {
            return Err(RegistryError::UnknownFederatedTrustDomain {
                trust_domain: td.clone(),
            });
        }
    }
    for name in &stored.federates_with_groups {
        if !group_exists(conn, name).await? {
            return Err(RegistryError::UnknownFederationGroup { name: name.clone() });
        }
    }
    Ok(())
}

/// Stores a new entry; the parameters are those of [`bind_entry`].
const INSERT_ENTRY: &str = "INSERT INTO entries (id, spiffe_id, parent_id, selectors, \
    identity_key, x509_svid_ttl, jwt_svid_ttl, dns_names, hint, expires_at, federates_with_all, \
    revision, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, 1, $11, $11)";

/// Replaces an entry and bumps its revision; the parameters are those of [`bind_entry`].
const UPDATE_ENTRY: &str = "UPDATE entries SET spiffe_id = $2, parent_id = $3, selectors = $4, \
    identity_key = $5, x509_svid_ttl = $6, jwt_svid_ttl = $7, dns_names = $8, hint = $9, \
    expires_at = $10, federates_with_all = $12, revision = revision + 1, updated_at = $11 \
    WHERE id = $1";

/// Binds the columns of entry `id` to `statement`, in this order: id, spiffe_id, parent_id,
/// selectors, identity_key, x509_svid_ttl, jwt_svid_ttl, dns_names, hint, expires_at, the
/// time of the write and federates_with_all.
fn bind_entry(
    statement: &'static str,
    id: &str,
    spec: &EntrySpec,
    stored: &Stored,
    at: i64,
) -> Query<'static, Any, AnyArguments> {
    sqlx::query(statement)
        .bind(id)
        .bind(spec.spiffe_id.as_str())
        .bind(spec.parent_id.as_str())
        .bind(stored.selectors_json.as_str())
        .bind(stored.identity_key.as_str())
        .bind(stored.x509_svid_ttl)
        .bind(stored.jwt_svid_ttl)
        .bind(stored.dns_names_json.as_str())
        .bind(stored.hint.as_deref())
        .bind(stored.expires_at)
        .bind(at)
        .bind(i16::from(spec.federates_with_all))
}

/// The SQL of a table linking entries to what they federate through.
struct LinkTable {
    /// Links entry `$1` to `$2`.
    insert: &'static str,
    /// The ids and SPIFFE IDs of the entries linked to `$1`, sorted by id.
    entries: &'static str,
    /// Unlinks every entry from `$1`.
    unlink: &'static str,
    /// Unlinks entry `$1` from everything.
    clear: &'static str,
    /// The entry field that names what entries federate through.
    field: &'static str,
}

/// Entries' links to trust domains (`federates_with`).
const TRUST_DOMAIN_LINKS: LinkTable = LinkTable {
    insert: "INSERT INTO entry_federation (entry_id, trust_domain) VALUES ($1, $2)",
    entries: "SELECT l.entry_id, e.spiffe_id FROM entry_federation l \
              JOIN entries e ON e.id = l.entry_id WHERE l.trust_domain = $1 ORDER BY l.entry_id",
    unlink: "DELETE FROM entry_federation WHERE trust_domain = $1",
    clear: "DELETE FROM entry_federation WHERE entry_id = $1",
    field: "federates_with",
};

/// Entries' links to federation groups (`federates_with_groups`).
const GROUP_LINKS: LinkTable = LinkTable {
    insert: "INSERT INTO entry_federation_groups (entry_id, group_name) VALUES ($1, $2)",
    entries: "SELECT l.entry_id, e.spiffe_id FROM entry_federation_groups l \
              JOIN entries e ON e.id = l.entry_id WHERE l.group_name = $1 ORDER BY l.entry_id",
    unlink: "DELETE FROM entry_federation_groups WHERE group_name = $1",
    clear: "DELETE FROM entry_federation_groups WHERE entry_id = $1",
    field: "federates_with_groups",
};

/// Something entries federate through.
#[derive(Clone, Copy)]
pub(crate) enum Federation<'a> {
    /// A trust domain, named in `federates_with`.
    TrustDomain(&'a TrustDomain),
    /// A federation group, named in `federates_with_groups`.
    Group(&'a str),
}

impl<'a> Federation<'a> {
    /// The table of its links to entries, what it is called, and its key there.
    fn links(self) -> (&'static LinkTable, &'static str, &'a str) {
        match self {
            Self::TrustDomain(td) => (&TRUST_DOMAIN_LINKS, "trust domain", td.name()),
            Self::Group(name) => (&GROUP_LINKS, "federation group", name),
        }
    }
}

/// Stores the trust domains and federation groups entry `id` federates with.
async fn insert_federation(
    conn: &mut AnyConnection,
    id: &str,
    stored: &Stored,
) -> Result<(), RegistryError> {
    let trust_domains = stored.federates_with.iter().map(Federation::TrustDomain);
    let groups = stored
        .federates_with_groups
        .iter()
        .map(|name| Federation::Group(name));
    for target in trust_domains.chain(groups) {
        let (links, _, key) = target.links();
        sqlx::query(links.insert)
            .bind(id)
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// An entry that lost a trust domain or federation group when it was deleted with force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedEntry {
    /// The entry id.
    pub id: String,
    /// The entry's SPIFFE ID, as stored.
    pub spiffe_id: String,
}

/// How many entries a refusal to delete names; the rest are counted.
const MAX_NAMED_ENTRIES: usize = 10;

/// Drops `target` from the entries that federate through it, each getting a new revision, and
/// returns them; part of the caller's write transaction. Unless `force` is set, refuses while
/// any entry uses it, naming the entries (up to [`MAX_NAMED_ENTRIES`]).
pub(crate) async fn detach_entries(
    tx: &mut Write,
    target: Federation<'_>,
    force: bool,
) -> Result<Vec<DetachedEntry>, RegistryError> {
    let (links, what, key) = target.links();
    let rows: Vec<(String, String)> = sqlx::query_as(links.entries)
        .bind(key)
        .fetch_all(&mut **tx)
        .await?;
    let entries: Vec<DetachedEntry> = rows
        .into_iter()
        .map(|(id, spiffe_id)| DetachedEntry { id, spiffe_id })
        .collect();
    if !entries.is_empty() && !force {
        return Err(RegistryError::Conflict(in_use_message(
            what,
            key,
            links.field,
            &entries,
        )));
    }
    sqlx::query(links.unlink)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    let ids: Vec<String> = entries.iter().map(|entry| entry.id.clone()).collect();
    touch_entries(tx, &ids).await?;
    Ok(entries)
}

/// The refusal to delete `what` `key` while `entries` name it in `field`.
fn in_use_message(what: &str, key: &str, field: &str, entries: &[DetachedEntry]) -> String {
    let count = entries.len();
    let noun = if count == 1 { "entry" } else { "entries" };
    let mut named: Vec<String> = entries
        .iter()
        .take(MAX_NAMED_ENTRIES)
        .map(|entry| format!("{} ({})", entry.id, entry.spiffe_id))
        .collect();
    if count > MAX_NAMED_ENTRIES {
        named.push(format!("and {} more", count - MAX_NAMED_ENTRIES));
    }
    format!(
        "{what} {key} is used by {count} {noun}: {}; remove it from their {field}, or delete with force: \
         the entries then lose {what} {key} for good (creating it again does not give it back to them)",
        named.join(", ")
    )
}

/// Gives entries `ids` a new revision because something they referred to was removed; part of
/// the caller's write transaction.
async fn touch_entries(tx: &mut Write, ids: &[String]) -> Result<(), RegistryError> {
    for id in ids {
        sqlx::query("UPDATE entries SET revision = revision + 1, updated_at = $2 WHERE id = $1")
            .bind(id.as_str())
            .bind(tx.at)
            .execute(&mut **tx)
            .await?;
        tx.change(ChangeKind::Entry, id).await?;
    }
    Ok(())
}

/// Ends the write of entry `id` by `actor`: stores what it federates with, records the change,
/// audits `action` and commits; returns the entry as stored.
async fn finish_entry_write(
    mut tx: Write,
    actor: &str,
    action: &str,
    id: &str,
    spec: &EntrySpec,
    stored: &Stored,
) -> Result<Entry, RegistryError> {
    insert_federation(&mut tx, id, stored).await?;
    tx.change(ChangeKind::Entry, id).await?;
    tx.audit(actor, action, id, &audit_details(spec, stored))
        .await?;
    let entry = load_entry(&mut tx, id)
        .await?
        .ok_or_else(|| RegistryError::not_found(KIND, &id))?;
    tx.commit().await?;
    Ok(entry)
}

fn audit_details(spec: &EntrySpec, stored: &Stored) -> serde_json::Value {
    json!({
        "spiffe_id": spec.spiffe_id.as_str(),
        "parent_id": spec.parent_id.as_str(),
        "selectors": selector::canonical(&spec.selectors).iter().map(ToString::to_string).collect::<Vec<_>>(),
        "federates_with": stored.federates_with.iter().map(TrustDomain::name).collect::<Vec<_>>(),
        "federates_with_groups": stored.federates_with_groups,
        "federates_with_all": spec.federates_with_all,
        "x509_svid_ttl": stored.x509_svid_ttl,
        "jwt_svid_ttl": stored.jwt_svid_ttl,
        "dns_names": spec.dns_names,
        "hint": stored.hint,
        "expires_at": stored.expires_at,
    })
}

impl Registry {
    /// Registers an entry under a new random id.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for a bad spec, [`RegistryError::DuplicateEntry`] when an
    /// entry with the same SPIFFE ID, parent ID and selector set exists,
    /// [`RegistryError::UnknownFederatedTrustDomain`], [`RegistryError::Database`].
    pub async fn create_entry(
        &self,
        actor: &str,
        spec: &EntrySpec,
    ) -> Result<Entry, RegistryError> {
        let stored = spec.normalize()?;
        let id = Uuid::new_v4().to_string();
        let mut tx = self.begin_write().await?;
        check_conflicts(&mut tx, &id, &stored).await?;
        bind_entry(INSERT_ENTRY, &id, spec, &stored, tx.at)
            .execute(&mut *tx)
            .await?;
        finish_entry_write(tx, actor, "entry.create", &id, spec, &stored).await
    }

    /// Replaces everything of entry `id` with `spec` and bumps its revision.
    ///
    /// # Errors
    /// As [`Registry::create_entry`], and [`RegistryError::NotFound`].
    pub async fn update_entry(
        &self,
        actor: &str,
        id: Uuid,
        spec: &EntrySpec,
    ) -> Result<Entry, RegistryError> {
        let stored = spec.normalize()?;
        let id = id.to_string();
        let mut tx = self.begin_write().await?;
        if !exists(&mut tx, "SELECT COUNT(*) FROM entries WHERE id = $1", &id).await? {
            return Err(RegistryError::not_found(KIND, &id));
        }
        check_conflicts(&mut tx, &id, &stored).await?;
        bind_entry(UPDATE_ENTRY, &id, spec, &stored, tx.at)
            .execute(&mut *tx)
            .await?;
        for links in [&TRUST_DOMAIN_LINKS, &GROUP_LINKS] {
            sqlx::query(links.clear)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        finish_entry_write(tx, actor, "entry.update", &id, spec, &stored).await
    }

    /// Deletes entry `id`.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::Database`].
    pub async fn delete_entry(&self, actor: &str, id: Uuid) -> Result<(), RegistryError> {
        let id = id.to_string();
        let mut tx = self.begin_write().await?;
        let spiffe_id: Option<String> =
            sqlx::query_scalar("DELETE FROM entries WHERE id = $1 RETURNING spiffe_id")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(spiffe_id) = spiffe_id else {
            return Err(RegistryError::not_found(KIND, &id));
        };
        tx.change(ChangeKind::Entry, &id).await?;
        tx.audit(
            actor,
            "entry.delete",
            &id,
            &json!({ "spiffe_id": spiffe_id }),
        )
        .await?;
        tx.commit().await
    }

    /// Entry `id`, if it exists.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn get_entry(&self, id: Uuid) -> Result<Option<Entry>, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        load_entry(&mut conn, &id.to_string()).await
    }

    /// Whether `parent_id` can receive entries: the node alias parent
    /// (`spiffe://<trust domain>/fedhub/server`, for alias entries), an attested agent, a
    /// node alias (an entry parented to the alias parent with `parent_id` as its SPIFFE ID),
    /// or the SPIFFE ID a join token grants: unused and unexpired (an agent still to come), or
    /// used (its agent is attesting: the token is spent before the agent is recorded).
    ///
    /// # Errors
    /// [`RegistryError::Database`].
    pub async fn parent_is_known(&self, parent_id: &SpiffeId) -> Result<bool, RegistryError> {
        if parent_id.path() == NODE_ALIAS_PARENT_PATH {
            return Ok(true);
        }
        let alias_parent = parent_id
            .trust_domain()
            .spiffe_id(NODE_ALIAS_PARENT_PATH)
            .map_err(|e| RegistryError::invalid("parent_id", e.to_string()))?;
        let found: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM agents WHERE spiffe_id = $1) \
             + (SELECT COUNT(*) FROM entries WHERE spiffe_id = $1 AND parent_id = $2) \
             + (SELECT COUNT(*) FROM join_tokens \
                WHERE spiffe_id = $1 AND (used_at IS NOT NULL OR expires_at > $3))",
        )
        .bind(parent_id.as_str())
        .bind(alias_parent.as_str())
        .bind(unix(now()))
        .fetch_one(&self.pool)
        .await?;
        Ok(found > 0)
    }

    /// The entries matching `filter`, ordered by SPIFFE ID, parent ID and id.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn list_entries(&self, filter: &EntryFilter) -> Result<Vec<Entry>, RegistryError> {
        let rows = sqlx::query(concat!(
            select_entries!(),
            "WHERE ($1 IS NULL OR e.spiffe_id = $1) AND ($2 IS NULL OR e.parent_id = $2) \
             AND ($3 IS NULL OR e.id IN \
             (SELECT entry_id FROM entry_federation WHERE trust_domain = $3))",
            entry_order!()
        ))
        .bind(filter.spiffe_id.as_ref().map(SpiffeId::as_str))
        .bind(filter.parent_id.as_ref().map(SpiffeId::as_str))
        .bind(filter.federates_with.as_ref().map(TrustDomain::name))
        .fetch_all(&self.pool)
        .await?;
        entries_from_rows(&rows)
    }

    /// The unexpired entries an agent serves: those whose parent is `agent_id`, and those whose
    /// parent is a node alias the agent belongs to. A node alias is an entry parented to
    /// `spiffe://<agent's trust domain>/fedhub/server` whose selectors are all among
    /// `node_selectors`. The alias entries themselves are not returned.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn entries_for_agent(
        &self,
        agent_id: &SpiffeId,
        node_selectors: &[Selector],
    ) -> Result<Vec<Entry>, RegistryError> {
        let now = unix(now());
        let alias_parent = agent_id
            .trust_domain()
            .spiffe_id(NODE_ALIAS_PARENT_PATH)
            .map_err(|e| RegistryError::invalid("agent id", e.to_string()))?;
        let node: HashSet<&Selector> = node_selectors.iter().collect();
        let aliases: Vec<SpiffeId> = self
            .unexpired_children(&alias_parent, now)
            .await?
            .into_iter()
            .filter(|alias| alias.spec.selectors.iter().all(|s| node.contains(s)))
            .map(|alias| alias.spec.spiffe_id)
            .collect();
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        for parent in std::iter::once(agent_id).chain(&aliases) {
            for entry in self.unexpired_children(parent, now).await? {
                if seen.insert(entry.id) {
                    entries.push(entry);
                }
            }
        }
        Ok(entries)
    }

    async fn unexpired_children(
        &self,
        parent_id: &SpiffeId,
        now: i64,
    ) -> Result<Vec<Entry>, RegistryError> {
        let rows = sqlx::query(concat!(
            select_entries!(),
            "WHERE e.parent_id = $1 AND (e.expires_at IS NULL OR e.expires_at > $2)",
            entry_order!()
        ))
        .bind(parent_id.as_str())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        entries_from_rows(&rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn spec() -> EntrySpec {
        EntrySpec::new(
            id("spiffe://example.org/web"),
            id("spiffe://example.org/agent"),
            vec![Selector::parse("unix:uid:1000").unwrap()],
        )
    }

    fn invalid_field(spec: &EntrySpec) -> &'static str {
        match spec.normalize() {
            Err(RegistryError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {:?}", other.err()),
        }
    }

    #[test]
    fn refuses_bad_specs() {
        let mut s = spec();
        s.spiffe_id = id("spiffe://example.org");
        assert_eq!(invalid_field(&s), "spiffe_id");
        let mut s = spec();
        s.selectors.clear();
        assert_eq!(invalid_field(&s), "selectors");
        let mut s = spec();
        s.x509_svid_ttl = Some(Duration::ZERO);
        assert_eq!(invalid_field(&s), "x509_svid_ttl");
        let mut s = spec();
        s.jwt_svid_ttl = Some(Duration::from_millis(10));
        assert_eq!(invalid_field(&s), "jwt_svid_ttl");
        let mut s = spec();
        s.hint = Some("h".repeat(MAX_HINT_LEN + 1));
        assert_eq!(invalid_field(&s), "hint");
        let mut s = spec();
        s.dns_names = vec!["bad name".into()];
        assert_eq!(invalid_field(&s), "dns_names");
        let mut s = spec();
        s.hint = Some("h".repeat(MAX_HINT_LEN));
        s.dns_names = vec!["*.web.example.org".into(), "web".into()];
        assert!(s.normalize().is_ok());
    }

    #[test]
    fn identity_key_ignores_selector_order_and_repeats() {
        let a = Selector::parse("unix:uid:1000").unwrap();
        let b = Selector::parse("unix:gid:50").unwrap();
        let mut one = spec();
        one.selectors = vec![a.clone(), b.clone()];
        let mut two = spec();
        two.selectors = vec![b.clone(), a.clone(), b];
        assert_eq!(
            one.normalize().unwrap().identity_key,
            two.normalize().unwrap().identity_key
        );
        two.parent_id = id("spiffe://example.org/other");
        assert_ne!(
            one.normalize().unwrap().identity_key,
            two.normalize().unwrap().identity_key
        );
    }

    #[test]
    fn dns_names() {
        for good in ["a", "web.example.org", "*.example.org", "x-1.y"] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a-.b",
            "a.*",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }
}
