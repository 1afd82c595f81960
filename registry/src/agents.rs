//! Node agents: attested nodes, their current SVID serial, node selectors and ban state.

use fedhub_core::SpiffeId;
use serde_json::json;
use time::OffsetDateTime;

use crate::error::RegistryError;
use crate::feed::ChangeKind;
use crate::selector::{self, Selector};
use crate::store::{Fields, Record, Registry, Table, Write, check_len, exists, unix};

/// The longest attestation type accepted, in bytes.
pub const MAX_ATTESTATION_TYPE_LEN: usize = 64;
/// The most node selectors one agent may have.
pub const MAX_NODE_SELECTORS: usize = 256;
/// The longest SVID serial accepted, in bytes.
pub const MAX_SERIAL_LEN: usize = 128;

const KIND: &str = "agent";

/// The columns an [`Agent`] is read from.
macro_rules! agent_columns {
    () => {
        "spiffe_id, attestation_type, serial, svid_expires_at, pending_serial, \
         pending_svid_expires_at, selectors, banned, created_at, updated_at, last_seen_at"
    };
}

/// What the hub learned when an agent attested and was issued an SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAttestation {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// How it attested, e.g. `join_token`.
    pub attestation_type: String,
    /// The serial number of the SVID issued to it (e.g. hex).
    pub serial: String,
    /// When that SVID expires.
    pub svid_expires_at: OffsetDateTime,
    /// The node's selectors, used to match node alias entries.
    pub selectors: Vec<Selector>,
}

/// A stored agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// How it attested.
    pub attestation_type: String,
    /// The serial of its current SVID; `None` once banned.
    pub serial: Option<String>,
    /// When its current SVID expires; `None` once banned.
    pub svid_expires_at: Option<OffsetDateTime>,
    /// The serial of the SVID of a renewal the agent has not used yet. The current SVID stays
    /// accepted until the agent first presents this one ([`Registry::promote_agent_serial`]),
    /// so a lost renewal answer costs nothing.
    pub pending_serial: Option<String>,
    /// When the pending SVID expires.
    pub pending_svid_expires_at: Option<OffsetDateTime>,
    /// Its node selectors, sorted.
    pub selectors: Vec<Selector>,
    /// Whether it is banned: it may neither attest again nor renew.
    pub banned: bool,
    /// When it first attested.
    pub created_at: OffsetDateTime,
    /// When its record last changed.
    pub updated_at: OffsetDateTime,
    /// When it was last heard from.
    pub last_seen_at: Option<OffsetDateTime>,
}

impl Record for Agent {
    const TABLE: Table = Table {
        kind: KIND,
        name: "agents",
        key: "spiffe_id",
        columns: agent_columns!(),
    };

    fn from_fields(f: &Fields<'_>) -> Result<Self, RegistryError> {
        Ok(Self {
            spiffe_id: f.spiffe_id("spiffe_id")?,
            attestation_type: f.text("attestation_type")?,
            serial: f.opt_text("serial")?,
            svid_expires_at: f.opt_time("svid_expires_at")?,
            pending_serial: f.opt_text("pending_serial")?,
            pending_svid_expires_at: f.opt_time("pending_svid_expires_at")?,
            selectors: selector::from_json(&f.text("selectors")?)
                .map_err(|e| f.corrupt("selectors", e))?,
            banned: f.flag("banned")?,
            created_at: f.time("created_at")?,
            updated_at: f.time("updated_at")?,
            last_seen_at: f.opt_time("last_seen_at")?,
        })
    }
}

fn validate_serial(serial: &str) -> Result<(), RegistryError> {
    check_len("serial", serial, 1..=MAX_SERIAL_LEN)
}

impl AgentAttestation {
    /// Validates and returns the selectors in stored form.
    fn validate(&self) -> Result<String, RegistryError> {
        if self.spiffe_id.is_trust_domain_id() {
            return Err(RegistryError::invalid(
                "agent spiffe_id",
                "must have a path, not be a trust domain ID",
            ));
        }
        let type_ok = (1..=MAX_ATTESTATION_TYPE_LEN).contains(&self.attestation_type.len())
            && self
                .attestation_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !type_ok {
            return Err(RegistryError::invalid(
                "attestation_type",
                format!("must be 1 to {MAX_ATTESTATION_TYPE_LEN} letters, digits, '_', '-' or '.'"),
            ));
        }
        validate_serial(&self.serial)?;
        let selectors = selector::canonical(&self.selectors);
        if selectors.len() > MAX_NODE_SELECTORS {
            return Err(RegistryError::invalid(
                "node selectors",
                format!("at most {MAX_NODE_SELECTORS} are allowed"),
            ));
        }
        Ok(selector::to_json(&selectors))
    }
}

impl Registry {
    /// Records an agent's (re-)attestation: inserts it, or updates its attestation data,
    /// serial and selectors. A banned agent is refused and left unchanged.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`], [`RegistryError::AgentBanned`], [`RegistryError::Database`].
    pub async fn upsert_agent(
        &self,
        attestation: &AgentAttestation,
    ) -> Result<Agent, RegistryError> {
        let selectors = attestation.validate()?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "INSERT INTO agents (spiffe_id, attestation_type, serial, svid_expires_at, \
             selectors, banned, created_at, updated_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, $6, $6) \
             ON CONFLICT (spiffe_id) DO UPDATE SET attestation_type = excluded.attestation_type, \
             serial = excluded.serial, svid_expires_at = excluded.svid_expires_at, \
             pending_serial = NULL, pending_svid_expires_at = NULL, \
             selectors = excluded.selectors, updated_at = excluded.updated_at, \
             last_seen_at = excluded.last_seen_at \
             WHERE agents.banned = 0 RETURNING ",
            agent_columns!()
        ))
        .bind(attestation.spiffe_id.as_str())
        .bind(attestation.attestation_type.as_str())
        .bind(attestation.serial.as_str())
        .bind(unix(attestation.svid_expires_at))
        .bind(selectors)
        .bind(tx.at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(RegistryError::AgentBanned {
                spiffe_id: attestation.spiffe_id.clone(),
            });
        };
        let agent = Agent::from_row(&row)?;
        tx.change(ChangeKind::Agent, attestation.spiffe_id.as_str())
            .await?;
        tx.commit().await?;
        Ok(agent)
    }

    /// The agent with `spiffe_id`, if known.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn get_agent(&self, spiffe_id: &SpiffeId) -> Result<Option<Agent>, RegistryError> {
        self.get_record(spiffe_id.as_str()).await
    }

    /// All agents, ordered by SPIFFE ID.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn list_agents(&self) -> Result<Vec<Agent>, RegistryError> {
        self.list_records().await
    }

    /// Records the SVID an agent was issued on renewal as pending: the current SVID stays
    /// accepted until the agent presents the new one ([`Registry::promote_agent_serial`]). A
    /// second renewal replaces the pending SVID.
    ///
    /// Not a change-feed event: a pending SVID changes nothing any agent is sent, nor which
    /// SVID is accepted, so it wakes no sync stream on any replica. Its promotion is one.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`], [`RegistryError::NotFound`], [`RegistryError::AgentBanned`],
    /// [`RegistryError::Database`].
    pub async fn set_pending_agent_serial(
        &self,
        spiffe_id: &SpiffeId,
        serial: &str,
        svid_expires_at: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        validate_serial(serial)?;
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE agents SET pending_serial = $2, pending_svid_expires_at = $3, updated_at = $4 \
             WHERE spiffe_id = $1 AND banned = 0",
        )
        .bind(spiffe_id.as_str())
        .bind(serial)
        .bind(unix(svid_expires_at))
        .bind(tx.at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            let known = exists(
                &mut tx,
                "SELECT COUNT(*) FROM agents WHERE spiffe_id = $1",
                spiffe_id.as_str(),
            )
            .await?;
            return Err(if known {
                RegistryError::AgentBanned {
                    spiffe_id: spiffe_id.clone(),
                }
            } else {
                RegistryError::not_found(KIND, spiffe_id)
            });
        }
        tx.commit().await?;
        Ok(())
    }

    /// Makes the pending SVID `serial` the agent's current one, once the agent presented it;
    /// the previous SVID is refused from then on. Returns `false`, changing nothing, when
    /// `serial` is not the pending serial (already promoted, replaced, banned or evicted).
    ///
    /// # Errors
    /// [`RegistryError::Database`].
    pub async fn promote_agent_serial(
        &self,
        spiffe_id: &SpiffeId,
        serial: &str,
    ) -> Result<bool, RegistryError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE agents SET serial = pending_serial, svid_expires_at = pending_svid_expires_at, \
             pending_serial = NULL, pending_svid_expires_at = NULL, updated_at = $3 \
             WHERE spiffe_id = $1 AND pending_serial = $2 AND banned = 0",
        )
        .bind(spiffe_id.as_str())
        .bind(serial)
        .bind(tx.at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        tx.change(ChangeKind::Agent, spiffe_id.as_str()).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Bans an agent: it may no longer renew or attest again, and its serial is cleared.
    /// [`Registry::evict_agent`] lifts the ban by forgetting the agent.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::Database`].
    pub async fn ban_agent(&self, actor: &str, spiffe_id: &SpiffeId) -> Result<(), RegistryError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE agents SET banned = 1, serial = NULL, svid_expires_at = NULL, \
             pending_serial = NULL, pending_svid_expires_at = NULL, updated_at = $2 \
             WHERE spiffe_id = $1",
        )
        .bind(spiffe_id.as_str())
        .bind(tx.at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        finish_admin_action(tx, actor, "agent.ban", spiffe_id, updated).await
    }

    /// Evicts (deletes) an agent. It must attest again, which it may, even if it was banned.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::Database`].
    pub async fn evict_agent(
        &self,
        actor: &str,
        spiffe_id: &SpiffeId,
    ) -> Result<(), RegistryError> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM agents WHERE spiffe_id = $1")
            .bind(spiffe_id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        finish_admin_action(tx, actor, "agent.evict", spiffe_id, deleted).await
    }

    /// Notes that the agent was heard from at `at`. A heartbeat: not a change-feed event.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::Database`].
    pub async fn touch_agent(
        &self,
        spiffe_id: &SpiffeId,
        at: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        let updated = sqlx::query("UPDATE agents SET last_seen_at = $2 WHERE spiffe_id = $1")
            .bind(spiffe_id.as_str())
            .bind(unix(at))
            .execute(&self.pool)
            .await?
            .rows_affected();
        if updated == 0 {
            return Err(RegistryError::not_found(KIND, spiffe_id));
        }
        Ok(())
    }

    /// Notes that every agent of `spiffe_ids` was heard from at `at`, in one statement per
    /// [`TOUCH_BATCH`] agents: the hub's heartbeat of the agents holding a sync stream.
    /// Bookkeeping, not a change-feed event. Unknown agents (evicted meanwhile) are skipped.
    /// Returns how many agents were updated.
    ///
    /// # Errors
    /// [`RegistryError::Database`].
    pub async fn touch_agents(
        &self,
        spiffe_ids: &[SpiffeId],
        at: OffsetDateTime,
    ) -> Result<u64, RegistryError> {
        let at = unix(at);
        let mut updated = 0;
        for batch in spiffe_ids.chunks(TOUCH_BATCH) {
            let placeholders = (2..batch.len() + 2)
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql =
                format!("UPDATE agents SET last_seen_at = $1 WHERE spiffe_id IN ({placeholders})");
            // Only numbered placeholders are formatted in; the IDs are bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at);
            for id in batch {
                query = query.bind(id.as_str());
            }
            updated += query.execute(&self.pool).await?.rows_affected();
        }
        Ok(updated)
    }
}

/// The most agents one heartbeat statement of [`Registry::touch_agents`] updates (well below
/// SQLite's and PostgreSQL's limits on bound parameters).
pub const TOUCH_BATCH: usize = 500;

/// Ends an admin's `action` on agent `spiffe_id` that changed `rows` rows: none means the
/// agent is unknown (and nothing is written); otherwise the change is recorded, audited and
/// committed.
async fn finish_admin_action(
    mut tx: Write,
    actor: &str,
    action: &str,
    spiffe_id: &SpiffeId,
    rows: u64,
) -> Result<(), RegistryError> {
    if rows == 0 {
        return Err(RegistryError::not_found(KIND, spiffe_id));
    }
    tx.change(ChangeKind::Agent, spiffe_id.as_str()).await?;
    tx.audit(actor, action, spiffe_id.as_str(), &json!({}))
        .await?;
    tx.commit().await
}
