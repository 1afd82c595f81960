//! Federation groups: named sets of trust domains that entries federate with as a whole, and
//! the [`FederationScope`] that resolves what an entry federates with in effect.

use std::collections::{BTreeMap, BTreeSet};

use fedhub_core::TrustDomain;
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use crate::entries::{DetachedEntry, EntrySpec, Federation, detach_entries};
use crate::error::{OnDuplicate, RegistryError};
use crate::feed::ChangeKind;
use crate::store::{Fields, Registry, Write, exists, relationship_exists};

/// The longest federation group name, in bytes.
pub const MAX_GROUP_NAME_LEN: usize = 64;

const KIND: &str = "federation group";

/// A named set of trust domains, each with a federation relationship. Entries that name the
/// group in [`EntrySpec::federates_with_groups`] federate with its members as they are at the
/// time: a member added later reaches them without the entries being edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationGroup {
    /// The name: 1 to [`MAX_GROUP_NAME_LEN`] of `a-z`, `0-9`, `.`, `_` and `-`.
    pub name: String,
    /// The member trust domains, sorted.
    pub members: Vec<TrustDomain>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it or its membership last changed.
    pub updated_at: OffsetDateTime,
}

/// What entries' federation resolves against, read at one moment: the trust domain of every
/// federation relationship and the members of every federation group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FederationScope {
    relationships: BTreeSet<TrustDomain>,
    groups: BTreeMap<String, BTreeSet<TrustDomain>>,
}

impl FederationScope {
    /// The trust domains `spec` federates with in effect, sorted and without repeats: its
    /// `federates_with`, the members of its `federates_with_groups`, and, with
    /// `federates_with_all`, every trust domain with a relationship.
    pub fn effective_federates_with(&self, spec: &EntrySpec) -> Vec<TrustDomain> {
        let mut effective: BTreeSet<&TrustDomain> = spec.federates_with.iter().collect();
        for name in &spec.federates_with_groups {
            effective.extend(self.groups.get(name).into_iter().flatten());
        }
        if spec.federates_with_all {
            effective.extend(&self.relationships);
        }
        effective.into_iter().cloned().collect()
    }
}

/// Refuses a name that is not 1 to [`MAX_GROUP_NAME_LEN`] of `a-z`, `0-9`, `.`, `_`, `-`.
pub(crate) fn validate_group_name(name: &str) -> Result<(), RegistryError> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b);
    if name.is_empty() || name.len() > MAX_GROUP_NAME_LEN || !name.bytes().all(allowed) {
        return Err(RegistryError::invalid(
            "federation group name",
            format!(
                "{name:?} must be 1 to {MAX_GROUP_NAME_LEN} characters of a-z, 0-9, '.', '_' \
                 and '-'"
            ),
        ));
    }
    Ok(())
}

/// Selects groups joined with their members, one row per member (or one row with a NULL
/// `member`); `groups_from_rows` folds them back together.
macro_rules! select_groups {
    () => {
        "SELECT g.name, g.created_at, g.updated_at, m.trust_domain AS member \
         FROM federation_groups g \
         LEFT JOIN federation_group_members m ON m.group_name = g.name "
    };
}

fn groups_from_rows(rows: &[AnyRow]) -> Result<Vec<FederationGroup>, RegistryError> {
    let mut groups: Vec<FederationGroup> = Vec::new();
    for row in rows {
        let f = Fields::new(row, KIND, "name")?;
        let member = f.opt_trust_domain("member")?;
        if groups.last().is_none_or(|group| group.name != f.key()) {
            groups.push(FederationGroup {
                name: f.key().to_owned(),
                members: Vec::new(),
                created_at: f.time("created_at")?,
                updated_at: f.time("updated_at")?,
            });
        }
        if let Some(group) = groups.last_mut() {
            group.members.extend(member);
        }
    }
    for group in &mut groups {
        group.members.sort();
    }
    Ok(groups)
}

async fn load_group(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<FederationGroup>, RegistryError> {
    let rows = sqlx::query(concat!(select_groups!(), "WHERE g.name = $1"))
        .bind(name)
        .fetch_all(conn)
        .await?;
    Ok(groups_from_rows(&rows)?.pop())
}

/// Whether federation group `name` exists.
pub(crate) async fn group_exists(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<bool, RegistryError> {
    exists(
        conn,
        "SELECT COUNT(*) FROM federation_groups WHERE name = $1",
        name,
    )
    .await
}

/// Group `name` as written so far, then commits the write; [`RegistryError::NotFound`] when
/// there is none.
async fn commit_group(mut tx: Write, name: &str) -> Result<FederationGroup, RegistryError> {
    let group = load_group(&mut tx, name)
        .await?
        .ok_or_else(|| RegistryError::not_found(KIND, &name))?;
    tx.commit().await?;
    Ok(group)
}

/// Ends an admin's `action` on the membership of `trust_domain` in group `name`: audits it and
/// commits; returns the group as written.
async fn finish_membership_change(
    mut tx: Write,
    actor: &str,
    action: &str,
    name: &str,
    trust_domain: &TrustDomain,
) -> Result<FederationGroup, RegistryError> {
    tx.audit(
        actor,
        action,
        name,
        &json!({ "trust_domain": trust_domain.name() }),
    )
    .await?;
    commit_group(tx, name).await
}

/// Marks group `name` as changed; [`RegistryError::NotFound`] when there is none.
async fn touch_group(tx: &mut Write, name: &str) -> Result<(), RegistryError> {
    let updated = sqlx::query("UPDATE federation_groups SET updated_at = $2 WHERE name = $1")
        .bind(name)
        .bind(tx.at)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(RegistryError::not_found(KIND, &name));
    }
    tx.change(ChangeKind::FederationGroup, name).await
}

/// Adds `trust_domain` to group `group`, refusing trust domains without a relationship.
async fn insert_member(
    conn: &mut AnyConnection,
    group: &str,
    trust_domain: &TrustDomain,
) -> Result<(), RegistryError> {
    if !relationship_exists(conn, trust_domain).await? {
        return Err(RegistryError::UnknownGroupMember {
            group: group.to_owned(),
            trust_domain: trust_domain.clone(),
        });
    }
    sqlx::query("INSERT INTO federation_group_members (group_name, trust_domain) VALUES ($1, $2)")
        .bind(group)
        .bind(trust_domain.name())
        .execute(conn)
        .await
        .on_duplicate(|| {
            RegistryError::Conflict(format!(
                "trust domain {trust_domain} is already a member of federation group {group}"
            ))
        })?;
    Ok(())
}

/// Removes `trust_domain` from every group (its relationship is being deleted); part of the
/// caller's write transaction. Returns the groups it was removed from, each recorded as
/// changed.
pub(crate) async fn remove_from_groups(
    tx: &mut Write,
    trust_domain: &TrustDomain,
) -> Result<Vec<String>, RegistryError> {
    let groups: Vec<String> = sqlx::query_scalar(
        "SELECT group_name FROM federation_group_members WHERE trust_domain = $1 \
         ORDER BY group_name",
    )
    .bind(trust_domain.name())
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM federation_group_members WHERE trust_domain = $1")
        .bind(trust_domain.name())
        .execute(&mut **tx)
        .await?;
    for group in &groups {
        touch_group(tx, group).await?;
    }
    Ok(groups)
}

impl Registry {
    /// Creates federation group `name` with `members` (repeats ignored).
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for a bad name, [`RegistryError::AlreadyExists`],
    /// [`RegistryError::UnknownGroupMember`] for a member without a federation relationship,
    /// [`RegistryError::Database`].
    pub async fn create_federation_group(
        &self,
        actor: &str,
        name: &str,
        members: &[TrustDomain],
    ) -> Result<FederationGroup, RegistryError> {
        validate_group_name(name)?;
        let members: BTreeSet<&TrustDomain> = members.iter().collect();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO federation_groups (name, created_at, updated_at) VALUES ($1, $2, $2)",
        )
        .bind(name)
        .bind(tx.at)
        .execute(&mut *tx)
        .await
        .on_duplicate(|| RegistryError::already_exists(KIND, &name))?;
        for member in &members {
            insert_member(&mut tx, name, member).await?;
        }
        tx.change(ChangeKind::FederationGroup, name).await?;
        let names: Vec<&str> = members.iter().map(|td| td.name()).collect();
        tx.audit(
            actor,
            "federation_group.create",
            name,
            &json!({ "members": names }),
        )
        .await?;
        commit_group(tx, name).await
    }

    /// Deletes federation group `name`.
    ///
    /// While entries federate with the group this is refused, unless `force` is set: then
    /// those entries drop it from `federates_with_groups` and get a new revision. Returns the
    /// entries changed that way.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::Conflict`] when entries use it and
    /// `force` is not set, [`RegistryError::Database`].
    pub async fn delete_federation_group(
        &self,
        actor: &str,
        name: &str,
        force: bool,
    ) -> Result<Vec<DetachedEntry>, RegistryError> {
        let mut tx = self.begin_write().await?;
        if !group_exists(&mut tx, name).await? {
            return Err(RegistryError::not_found(KIND, &name));
        }
        let detached = detach_entries(&mut tx, Federation::Group(name), force).await?;
        let entry_ids: Vec<&str> = detached.iter().map(|entry| entry.id.as_str()).collect();
        sqlx::query("DELETE FROM federation_groups WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.change(ChangeKind::FederationGroup, name).await?;
        tx.audit(
            actor,
            "federation_group.delete",
            name,
            &json!({ "force": force, "entries_updated": entry_ids }),
        )
        .await?;
        tx.commit().await?;
        Ok(detached)
    }

    /// Adds `trust_domain` to federation group `name`.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown group, [`RegistryError::UnknownGroupMember`]
    /// for a trust domain without a federation relationship, [`RegistryError::Conflict`] when
    /// it is a member already, [`RegistryError::Database`].
    pub async fn add_federation_group_member(
        &self,
        actor: &str,
        name: &str,
        trust_domain: &TrustDomain,
    ) -> Result<FederationGroup, RegistryError> {
        let mut tx = self.begin_write().await?;
        touch_group(&mut tx, name).await?;
        insert_member(&mut tx, name, trust_domain).await?;
        finish_membership_change(tx, actor, "federation_group.add_member", name, trust_domain).await
    }

    /// Removes `trust_domain` from federation group `name`.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown group or a trust domain that is not a
    /// member, [`RegistryError::Database`].
    pub async fn remove_federation_group_member(
        &self,
        actor: &str,
        name: &str,
        trust_domain: &TrustDomain,
    ) -> Result<FederationGroup, RegistryError> {
        let mut tx = self.begin_write().await?;
        touch_group(&mut tx, name).await?;
        let removed = sqlx::query(
            "DELETE FROM federation_group_members WHERE group_name = $1 AND trust_domain = $2",
        )
        .bind(name)
        .bind(trust_domain.name())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if removed == 0 {
            return Err(RegistryError::NotFound {
                kind: "member",
                key: format!("{trust_domain} of federation group {name}"),
            });
        }
        finish_membership_change(
            tx,
            actor,
            "federation_group.remove_member",
            name,
            trust_domain,
        )
        .await
    }

    /// Federation group `name`, if it exists.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn get_federation_group(
        &self,
        name: &str,
    ) -> Result<Option<FederationGroup>, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        load_group(&mut conn, name).await
    }

    /// All federation groups, ordered by name.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn list_federation_groups(&self) -> Result<Vec<FederationGroup>, RegistryError> {
        let rows = sqlx::query(concat!(select_groups!(), "ORDER BY g.name"))
            .fetch_all(&self.pool)
            .await?;
        groups_from_rows(&rows)
    }

    /// The relationships and group memberships, read in one statement, to resolve what
    /// entries federate with in effect ([`FederationScope::effective_federates_with`]).
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn federation_scope(&self) -> Result<FederationScope, RegistryError> {
        let rows = sqlx::query(
            "SELECT r.trust_domain, m.group_name FROM federation_relationships r \
             LEFT JOIN federation_group_members m ON m.trust_domain = r.trust_domain",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut scope = FederationScope::default();
        for row in &rows {
            let f = Fields::new(row, "federation relationship", "trust_domain")?;
            let trust_domain = f.trust_domain("trust_domain")?;
            if let Some(group) = f.opt_text("group_name")? {
                scope
                    .groups
                    .entry(group)
                    .or_default()
                    .insert(trust_domain.clone());
            }
            scope.relationships.insert(trust_domain);
        }
        Ok(scope)
    }
}

#[cfg(test)]
mod tests {
    use fedhub_core::SpiffeId;

    use fedhub_tests::td;

    use super::*;
    use crate::Selector;

    #[test]
    fn group_names_are_short_lowercase_words() {
        for good in [
            "partners",
            "eu-west.1",
            "a_b",
            &"x".repeat(MAX_GROUP_NAME_LEN),
        ] {
            assert!(validate_group_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Partners",
            "a b",
            "a/b",
            "é",
            &"x".repeat(MAX_GROUP_NAME_LEN + 1),
        ] {
            let err = validate_group_name(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    RegistryError::Invalid {
                        field: "federation group name",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn effective_federation_joins_list_groups_and_all() {
        let scope = FederationScope {
            relationships: [td("a.test"), td("b.test"), td("c.test"), td("d.test")].into(),
            groups: [
                ("one".to_owned(), [td("b.test"), td("c.test")].into()),
                ("two".to_owned(), [td("c.test")].into()),
            ]
            .into(),
        };
        let mut spec = EntrySpec::new(
            SpiffeId::parse("spiffe://example.org/w").unwrap(),
            SpiffeId::parse("spiffe://example.org/agent").unwrap(),
            vec![Selector::parse("unix:uid:1").unwrap()],
        );
        spec.federates_with = vec![td("a.test")];
        assert_eq!(scope.effective_federates_with(&spec), [td("a.test")]);
        spec.federates_with_groups = vec!["one".into(), "two".into(), "gone".into()];
        assert_eq!(
            scope.effective_federates_with(&spec),
            [td("a.test"), td("b.test"), td("c.test")]
        );
        spec.federates_with_all = true;
        assert_eq!(
            scope.effective_federates_with(&spec),
            [td("a.test"), td("b.test"), td("c.test"), td("d.test")]
        );
    }
}
