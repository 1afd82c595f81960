//! The registry suite. Every test runs on SQLite and on PostgreSQL (see `common`).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed step is a failed test, and scenarios read top to bottom"
)]

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{ACTOR, TestDb, bundle, entry, id, sel, spiffe_relationship, td, web_relationship};
use fedhub_registry::DetachedEntry;
use fedhub_registry::{
    AgentAttestation, Backend, BundleRecord, BundleRevision, ChangeKind, EntryFilter, FetchProfile,
    NODE_ALIAS_PARENT_PATH, POSTGRES_MIGRATOR, RefreshRecorded, RefreshStatus, RefreshSuccess,
    Registry, RegistryError, RelationshipOptions, SQLITE_MIGRATOR, SequenceDrop, SequenceSeen,
};
use fedhub_registry::{AuthorityKind, MAX_REPLICA_ID_LEN, ReplicaAuthorities};
use fedhub_registry::{FederationGroup, MAX_GROUP_NAME_LEN};
use sha2::{Digest, Sha256};
use sqlx::Row;
use time::OffsetDateTime;

both_backends!(
    migrations_apply_once_and_reopen_keeps_data,
    bundles_put_get_list_delete,
    bundle_of_a_relationship_cannot_be_deleted_alone,
    forced_bundle_delete_keeps_the_relationship_due_now,
    bundle_set_over_a_relationship_drops_its_etag,
    relationships_create_get_list_update_delete,
    bootstrap_bundle_and_relationship_are_atomic,
    entry_federating_with_unknown_trust_domain_is_refused,
    entries_may_not_issue_reserved_fedhub_ids,
    deleting_a_used_relationship_needs_force,
    known_parents_are_agents_aliases_and_pending_tokens,
    duplicate_entries_are_refused_whatever_the_selector_order,
    entries_create_get_list_filter_update_delete,
    entries_for_agent_follow_parent_and_node_aliases,
    join_tokens_are_hashed_single_use_and_expire,
    agents_attest_renew_ban_evict,
    heartbeats_touch_agents_in_batches_without_a_change,
    claims_are_exclusive_across_replicas,
    claim_refresh_takes_one_relationship_whatever_its_schedule,
    refresh_success_and_failure_update_status,
    refresh_bookkeeping_writes_no_change,
    bundle_revisions_change_with_every_write_and_are_never_reused,
    refresh_result_is_not_stored_over_a_bundle_changed_meanwhile,
    sequence_drops_are_recorded_until_sequences_come_back,
    relationship_options_are_stored_and_kept_by_spec_updates,
    change_feed_records_every_write_in_order,
    audit_log_records_admin_changes,
    invalid_stored_values_are_reported_as_corrupt,
    federation_groups_create_list_add_remove_delete,
    entries_federate_with_groups_and_with_all,
    deleting_a_used_group_needs_force,
    deleting_a_relationship_removes_it_from_its_groups,
    own_bundle_is_the_union_of_every_replicas_authorities,
    expired_authorities_and_replicas_leave_the_own_bundle,
    concurrent_publications_lose_no_replicas_keys,
    replica_publications_are_validated,
);

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().truncate_to_second()
}

async fn migrations_apply_once_and_reopen_keeps_data(db: TestDb) {
    let created = db
        .registry
        .create_entry(
            ACTOR,
            &entry(
                "spiffe://example.org/web",
                "spiffe://example.org/agent",
                &["unix:uid:1"],
            ),
        )
        .await
        .unwrap();
    let revision = db.registry.latest_revision().await.unwrap();
    assert_eq!(revision, 1);
    db.registry.close().await;

    // Opening again runs the migrator again: nothing is re-applied, nothing is lost.
    let mut reopened = vec![db.reopen().await];
    if let Some(path) = &db.sqlite_path {
        reopened.push(Registry::open_sqlite(path).await.unwrap());
    }
    for registry in &reopened {
        assert_eq!(
            registry.get_entry(created.id).await.unwrap(),
            Some(created.clone())
        );
        assert_eq!(registry.latest_revision().await.unwrap(), revision);
    }
    let expected = match reopened[0].backend() {
        Backend::Sqlite => SQLITE_MIGRATOR.iter().count(),
        _ => POSTGRES_MIGRATOR.iter().count(),
    };
    let raw = db.raw().await;
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(applied, i64::try_from(expected).unwrap());
    let heads: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM change_head")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(heads, 1);
}

async fn bundles_put_get_list_delete(db: TestDb) {
    let reg = &db.registry;
    let own = bundle("example.org", 1, "own");
    reg.put_bundle(ACTOR, &own).await.unwrap();
    assert_eq!(reg.get_bundle(&td("example.org")).await.unwrap(), Some(own));

    let newer = bundle("example.org", 2, "rotated");
    reg.put_bundle(ACTOR, &newer).await.unwrap();
    reg.put_bundle(ACTOR, &bundle("a.example", 7, "a"))
        .await
        .unwrap();
    let listed = reg.list_bundles().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|b| b.trust_domain.name()).collect();
    assert_eq!(names, ["a.example", "example.org"]);
    assert_eq!(listed[1], newer);

    let mut not_json = bundle("b.example", 1, "b");
    not_json.document = "not json".into();
    let mut not_object = bundle("b.example", 1, "b");
    not_object.document = "[1]".into();
    let mut huge_sequence = bundle("b.example", 1, "b");
    huge_sequence.sequence = Some(u64::MAX);
    for bad in [not_json, not_object, huge_sequence] {
        let err = reg.put_bundle(ACTOR, &bad).await.unwrap_err();
        assert!(matches!(err, RegistryError::Invalid { .. }), "{err}");
    }
    assert_eq!(reg.get_bundle(&td("b.example")).await.unwrap(), None);

    reg.delete_bundle(ACTOR, &td("a.example")).await.unwrap();
    assert_eq!(reg.get_bundle(&td("a.example")).await.unwrap(), None);
    let err = reg
        .delete_bundle(ACTOR, &td("a.example"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::NotFound { kind: "bundle", .. }),
        "{err}"
    );
}

async fn bundle_of_a_relationship_cannot_be_deleted_alone(db: TestDb) {
    let reg = &db.registry;
    let spec = spiffe_relationship("partner.example");
    let boot = bundle("partner.example", 1, "boot");
    reg.create_relationship(ACTOR, &spec, Some(&boot))
        .await
        .unwrap();
    let err = reg
        .delete_bundle(ACTOR, &td("partner.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("delete the relationship"), "{err}");
    assert_eq!(
        reg.get_bundle(&spec.trust_domain).await.unwrap(),
        Some(boot)
    );
}

async fn relationships_create_get_list_update_delete(db: TestDb) {
    let reg = &db.registry;
    let web = web_relationship("web.example");
    let created = reg.create_relationship(ACTOR, &web, None).await.unwrap();
    assert_eq!(created.spec, web);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(
        created.status,
        RefreshStatus::default(),
        "first refresh is due at once"
    );
    assert_eq!(
        reg.get_relationship(&web.trust_domain).await.unwrap(),
        Some(created)
    );

    let err = reg
        .create_relationship(ACTOR, &web, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::AlreadyExists {
                kind: "federation relationship",
                ..
            }
        ),
        "{err}"
    );

    let spiffe = spiffe_relationship("a-partner.example");
    reg.create_relationship(ACTOR, &spiffe, Some(&bundle("a-partner.example", 1, "b")))
        .await
        .unwrap();
    let names: Vec<String> = reg
        .list_relationships()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.spec.trust_domain.to_string())
        .collect();
    assert_eq!(names, ["a-partner.example", "web.example"]);

    // After a refresh the etag and schedule are set; an update resets both.
    let t0 = now();
    reg.claim_due_refreshes("hub-a", t0, Duration::from_secs(30), 10)
        .await
        .unwrap();
    let result = success(
        reg,
        "web.example",
        None,
        Some("\"v1\""),
        t0 + time::Duration::hours(1),
    );
    reg.record_refresh_success(&web.trust_domain, "hub-a", &result.await)
        .await
        .unwrap();
    let mut changed = web.clone();
    changed.profile = FetchProfile::HttpsWeb {
        extra_ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
    };
    changed.accept_empty_bundle = true;
    let updated = reg.update_relationship(ACTOR, &changed).await.unwrap();
    assert_eq!(updated.spec, changed);
    assert_eq!(updated.status.etag, None);
    assert_eq!(updated.status.next_refresh_at, None);
    assert!(updated.status.last_success_at.is_some(), "status is kept");

    let err = reg
        .update_relationship(ACTOR, &web_relationship("nowhere.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");

    assert_eq!(
        reg.delete_relationship(ACTOR, &spiffe.trust_domain, false)
            .await
            .unwrap(),
        Vec::<DetachedEntry>::new()
    );
    assert_eq!(
        reg.get_relationship(&spiffe.trust_domain).await.unwrap(),
        None
    );
    assert_eq!(
        reg.get_bundle(&spiffe.trust_domain).await.unwrap(),
        None,
        "its bundle goes too"
    );
    let err = reg
        .delete_relationship(ACTOR, &spiffe.trust_domain, false)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

async fn bootstrap_bundle_and_relationship_are_atomic(db: TestDb) {
    let reg = &db.registry;
    let spec = spiffe_relationship("partner.example");
    let first = bundle("partner.example", 1, "first");
    reg.create_relationship(ACTOR, &spec, Some(&first))
        .await
        .unwrap();
    let revision = reg.latest_revision().await.unwrap();
    let audited = reg.list_audit(100).await.unwrap().len();

    // The bundle is written before the relationship insert fails: both must roll back,
    // change-feed rows and audit row included.
    let err = reg
        .create_relationship(ACTOR, &spec, Some(&bundle("partner.example", 2, "second")))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        reg.get_bundle(&spec.trust_domain).await.unwrap(),
        Some(first)
    );
    assert_eq!(reg.latest_revision().await.unwrap(), revision);
    assert_eq!(reg.list_audit(100).await.unwrap().len(), audited);

    // A bootstrap bundle of another trust domain is refused before anything is written.
    let err = reg
        .create_relationship(
            ACTOR,
            &web_relationship("third.example"),
            Some(&bundle("fourth.example", 1, "x")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Invalid {
                field: "bundle",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        reg.get_relationship(&td("third.example")).await.unwrap(),
        None
    );
    assert_eq!(reg.get_bundle(&td("fourth.example")).await.unwrap(), None);
}

async fn entries_may_not_issue_reserved_fedhub_ids(db: TestDb) {
    let reg = &db.registry;
    for id in [
        "spiffe://example.org/fedhub/hub",
        "spiffe://example.org/fedhub/agent/join_token/abc",
        "spiffe://example.org/fedhub/server",
        "spiffe://example.org/fedhub",
    ] {
        let spec = entry(id, "spiffe://example.org/agent", &["unix:uid:1"]);
        let err = reg.create_entry(ACTOR, &spec).await.unwrap_err();
        assert!(err.to_string().contains("reserved"), "{id}: {err}");
    }
    // Parents in that namespace (agents, the node alias parent) stay allowed.
    let spec = entry(
        "spiffe://example.org/web",
        "spiffe://example.org/fedhub/agent/join_token/abc",
        &["unix:uid:1"],
    );
    reg.create_entry(ACTOR, &spec).await.unwrap();
}

async fn entry_federating_with_unknown_trust_domain_is_refused(db: TestDb) {
    let reg = &db.registry;
    reg.create_relationship(ACTOR, &web_relationship("known.example"), None)
        .await
        .unwrap();
    let revision = reg.latest_revision().await.unwrap();
    let mut spec = entry(
        "spiffe://example.org/web",
        "spiffe://example.org/agent",
        &["unix:uid:1"],
    );
    spec.federates_with = vec![td("known.example"), td("nowhere.example")];
    let err = reg.create_entry(ACTOR, &spec).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::UnknownFederatedTrustDomain { trust_domain } if trust_domain.name() == "nowhere.example"),
        "{err}"
    );
    assert!(err.to_string().contains("nowhere.example"), "{err}");
    assert!(
        reg.list_entries(&EntryFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(reg.latest_revision().await.unwrap(), revision);

    // The same rule holds on update.
    spec.federates_with = vec![td("known.example")];
    let created = reg.create_entry(ACTOR, &spec).await.unwrap();
    spec.federates_with.push(td("nowhere.example"));
    let err = reg
        .update_entry(ACTOR, created.id, &spec)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::UnknownFederatedTrustDomain { .. }),
        "{err}"
    );
    assert_eq!(reg.get_entry(created.id).await.unwrap(), Some(created));
}

async fn deleting_a_used_relationship_needs_force(db: TestDb) {
    let reg = &db.registry;
    let partner = td("partner.example");
    reg.create_relationship(
        ACTOR,
        &spiffe_relationship("partner.example"),
        Some(&bundle("partner.example", 1, "p")),
    )
    .await
    .unwrap();
    reg.create_relationship(ACTOR, &web_relationship("other.example"), None)
        .await
        .unwrap();
    let mut both = entry(
        "spiffe://example.org/both",
        "spiffe://example.org/agent",
        &["unix:uid:1"],
    );
    both.federates_with = vec![partner.clone(), td("other.example")];
    let both = reg.create_entry(ACTOR, &both).await.unwrap();
    let mut only = entry(
        "spiffe://example.org/only",
        "spiffe://example.org/agent",
        &["unix:uid:2"],
    );
    only.federates_with = vec![partner.clone()];
    let only = reg.create_entry(ACTOR, &only).await.unwrap();
    let unrelated = reg
        .create_entry(
            ACTOR,
            &entry(
                "spiffe://example.org/none",
                "spiffe://example.org/agent",
                &["unix:uid:3"],
            ),
        )
        .await
        .unwrap();

    let err = reg
        .delete_relationship(ACTOR, &partner, false)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err}");
    let message = err.to_string();
    let (first, second) = if both.id.to_string() < only.id.to_string() {
        (&both, &only)
    } else {
        (&only, &both)
    };
    assert_eq!(
        message,
        format!(
            "trust domain partner.example is used by 2 entries: {} ({}), {} ({}); remove it from \
             their federates_with, or delete with force: the entries then lose trust domain \
             partner.example for good (creating it again does not give it back to them)",
            first.id, first.spec.spiffe_id, second.id, second.spec.spiffe_id
        )
    );
    assert!(reg.get_relationship(&partner).await.unwrap().is_some());
    assert!(reg.get_bundle(&partner).await.unwrap().is_some());
    assert_eq!(reg.get_entry(both.id).await.unwrap(), Some(both.clone()));

    let before = reg.latest_revision().await.unwrap();
    let detached = reg
        .delete_relationship(ACTOR, &partner, true)
        .await
        .unwrap();
    assert_eq!(
        detached,
        [first, second].map(|e| DetachedEntry {
            id: e.id.to_string(),
            spiffe_id: e.spec.spiffe_id.to_string(),
        })
    );
    assert_eq!(reg.get_relationship(&partner).await.unwrap(), None);
    assert_eq!(reg.get_bundle(&partner).await.unwrap(), None);
    let both_after = reg.get_entry(both.id).await.unwrap().unwrap();
    assert_eq!(both_after.spec.federates_with, [td("other.example")]);
    assert_eq!(both_after.revision, 2);
    let only_after = reg.get_entry(only.id).await.unwrap().unwrap();
    assert!(only_after.spec.federates_with.is_empty());
    assert_eq!(only_after.revision, 2);
    assert_eq!(reg.get_entry(unrelated.id).await.unwrap(), Some(unrelated));

    let changes: BTreeSet<(ChangeKind, String)> = reg
        .changes_since(before, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.kind, c.key))
        .collect();
    let expected: BTreeSet<(ChangeKind, String)> = [
        (ChangeKind::Entry, both.id.to_string()),
        (ChangeKind::Entry, only.id.to_string()),
        (ChangeKind::Federation, "partner.example".to_owned()),
        (ChangeKind::Bundle, "partner.example".to_owned()),
    ]
    .into_iter()
    .collect();
    assert_eq!(changes, expected);
    let audit = &reg.list_audit(1).await.unwrap()[0];
    assert_eq!(audit.action, "federation.delete");
    assert_eq!(audit.details["force"], true);
}

async fn known_parents_are_agents_aliases_and_pending_tokens(db: TestDb) {
    let reg = &db.registry;
    let known = |spiffe_id: &str| {
        let spiffe_id = id(spiffe_id);
        async move { reg.parent_is_known(&spiffe_id).await.unwrap() }
    };
    assert!(
        known("spiffe://example.org/fedhub/server").await,
        "alias parent"
    );
    assert!(!known("spiffe://example.org/agent/node1").await);
    assert!(!known("spiffe://example.org/alias/eu").await);
    assert!(!known("spiffe://example.org/agent/pending").await);

    reg.upsert_agent(&AgentAttestation {
        spiffe_id: id("spiffe://example.org/agent/node1"),
        attestation_type: "join_token".into(),
        serial: "01".into(),
        svid_expires_at: now() + time::Duration::hours(1),
        selectors: Vec::new(),
    })
    .await
    .unwrap();
    assert!(known("spiffe://example.org/agent/node1").await, "an agent");

    reg.create_entry(
        ACTOR,
        &entry(
            "spiffe://example.org/alias/eu",
            "spiffe://example.org/fedhub/server",
            &["x509pop:subject:cn:eu"],
        ),
    )
    .await
    .unwrap();
    assert!(known("spiffe://example.org/alias/eu").await, "a node alias");
    // A workload entry's SPIFFE ID is no parent.
    reg.create_entry(
        ACTOR,
        &entry(
            "spiffe://example.org/web",
            "spiffe://example.org/agent/node1",
            &["unix:uid:1"],
        ),
    )
    .await
    .unwrap();
    assert!(!known("spiffe://example.org/web").await);

    let pending = id("spiffe://example.org/agent/pending");
    reg.create_join_token(
        ACTOR,
        "pending-token-0123456789",
        Duration::from_secs(600),
        Some(&pending),
    )
    .await
    .unwrap();
    assert!(known(pending.as_str()).await, "an agent still to attest");
    // Between the token's use and the agent's record (two writes of the attestation), the
    // agent is still known: an entry created in that instant is not refused.
    reg.consume_join_token("pending-token-0123456789", OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(
        known(pending.as_str()).await,
        "an agent attesting right now"
    );
}

async fn duplicate_entries_are_refused_whatever_the_selector_order(db: TestDb) {
    let reg = &db.registry;
    let parent = "spiffe://example.org/agent";
    let first = reg
        .create_entry(
            ACTOR,
            &entry(
                "spiffe://example.org/web",
                parent,
                &["unix:uid:1000", "unix:gid:50"],
            ),
        )
        .await
        .unwrap();
    let err = reg
        .create_entry(
            ACTOR,
            &entry(
                "spiffe://example.org/web",
                parent,
                &["unix:gid:50", "unix:uid:1000"],
            ),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::DuplicateEntry { existing } if *existing == first.id.to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");

    // A different selector set or parent is another entry; updating one into a duplicate
    // is refused too.
    let subset = reg
        .create_entry(
            ACTOR,
            &entry("spiffe://example.org/web", parent, &["unix:uid:1000"]),
        )
        .await
        .unwrap();
    reg.create_entry(
        ACTOR,
        &entry(
            "spiffe://example.org/web",
            "spiffe://example.org/agent2",
            &["unix:gid:50", "unix:uid:1000"],
        ),
    )
    .await
    .unwrap();
    let err = reg
        .update_entry(
            ACTOR,
            subset.id,
            &entry(
                "spiffe://example.org/web",
                parent,
                &["unix:gid:50", "unix:uid:1000"],
            ),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DuplicateEntry { .. }), "{err}");
    assert_eq!(
        reg.list_entries(&EntryFilter::default())
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn entries_create_get_list_filter_update_delete(db: TestDb) {
    let reg = &db.registry;
    reg.create_relationship(ACTOR, &web_relationship("partner.example"), None)
        .await
        .unwrap();
    let mut spec = entry(
        "spiffe://example.org/web",
        "spiffe://example.org/agent/a",
        &["unix:uid:1000", "unix:gid:10"],
    );
    spec.federates_with = vec![td("partner.example")];
    spec.x509_svid_ttl = Some(Duration::from_secs(3600));
    spec.jwt_svid_ttl = Some(Duration::from_secs(300));
    spec.dns_names = vec!["web.example.org".into()];
    spec.hint = Some("external".into());
    spec.expires_at = Some(now() + time::Duration::days(30));
    let web = reg.create_entry(ACTOR, &spec).await.unwrap();
    assert_eq!(web.revision, 1);
    assert_eq!(
        web.spec.selectors,
        [sel("unix:gid:10"), sel("unix:uid:1000")],
        "stored sorted"
    );
    let mut expected = spec.clone();
    expected.selectors.sort();
    assert_eq!(web.spec, expected);
    assert_eq!(reg.get_entry(web.id).await.unwrap(), Some(web.clone()));

    let db_entry = reg
        .create_entry(
            ACTOR,
            &entry(
                "spiffe://example.org/db",
                "spiffe://example.org/agent/b",
                &["unix:uid:5"],
            ),
        )
        .await
        .unwrap();
    let all = reg.list_entries(&EntryFilter::default()).await.unwrap();
    assert_eq!(all, [db_entry.clone(), web.clone()], "ordered by SPIFFE ID");

    let by = |filter: EntryFilter| async move { reg.list_entries(&filter).await.unwrap() };
    assert_eq!(
        by(EntryFilter {
            spiffe_id: Some(id("spiffe://example.org/web")),
            ..Default::default()
        })
        .await,
        std::slice::from_ref(&web)
    );
    assert_eq!(
        by(EntryFilter {
            parent_id: Some(id("spiffe://example.org/agent/b")),
            ..Default::default()
        })
        .await,
        std::slice::from_ref(&db_entry)
    );
    assert_eq!(
        by(EntryFilter {
            federates_with: Some(td("partner.example")),
            ..Default::default()
        })
        .await,
        std::slice::from_ref(&web)
    );
    assert!(
        by(EntryFilter {
            parent_id: Some(id("spiffe://example.org/agent/b")),
            federates_with: Some(td("partner.example")),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    let mut changed = spec.clone();
    changed.federates_with.clear();
    changed.hint = None;
    changed.x509_svid_ttl = None;
    let updated = reg.update_entry(ACTOR, web.id, &changed).await.unwrap();
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.created_at, web.created_at);
    assert!(updated.spec.federates_with.is_empty());
    assert_eq!(updated.spec.hint, None);
    assert_eq!(updated.spec.x509_svid_ttl, None);
    assert!(
        by(EntryFilter {
            federates_with: Some(td("partner.example")),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    reg.delete_entry(ACTOR, db_entry.id).await.unwrap();
    assert_eq!(reg.get_entry(db_entry.id).await.unwrap(), None);
    let err = reg.delete_entry(ACTOR, db_entry.id).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::NotFound { kind: "entry", .. }),
        "{err}"
    );
    let err = reg
        .update_entry(ACTOR, db_entry.id, &changed)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::NotFound { kind: "entry", .. }),
        "{err}"
    );

    let mut td_id = spec.clone();
    td_id.spiffe_id = id("spiffe://example.org");
    let err = reg.create_entry(ACTOR, &td_id).await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Invalid {
                field: "spiffe_id",
                ..
            }
        ),
        "{err}"
    );
}

async fn entries_for_agent_follow_parent_and_node_aliases(db: TestDb) {
    let reg = &db.registry;
    let agent = "spiffe://example.org/agent/node1";
    let server = format!("spiffe://example.org{NODE_ALIAS_PARENT_PATH}");
    let past = now() - time::Duration::minutes(1);
    let create = |spiffe_id: &str, parent: &str, selectors: &[&str], expired: bool| {
        let mut spec = entry(spiffe_id, parent, selectors);
        if expired {
            spec.expires_at = Some(past);
        }
        async move { reg.create_entry(ACTOR, &spec).await.unwrap() }
    };
    // Node aliases: only `eu` matches all its selectors among the node's.
    create(
        "spiffe://example.org/alias/eu",
        &server,
        &["region:eu"],
        false,
    )
    .await;
    create(
        "spiffe://example.org/alias/eu-gpu",
        &server,
        &["region:eu", "gpu:yes"],
        false,
    )
    .await;
    create(
        "spiffe://example.org/alias/us",
        &server,
        &["region:us"],
        false,
    )
    .await;
    create(
        "spiffe://example.org/alias/eu-old",
        &server,
        &["region:eu"],
        true,
    )
    .await;
    create(
        "spiffe://other.org/alias/eu",
        "spiffe://other.org/fedhub/server",
        &["region:eu"],
        false,
    )
    .await;
    // Workloads.
    let direct = create("spiffe://example.org/web", agent, &["unix:uid:1000"], false).await;
    create(
        "spiffe://example.org/expired",
        agent,
        &["unix:uid:1001"],
        true,
    )
    .await;
    let via_eu = create(
        "spiffe://example.org/eu-svc",
        "spiffe://example.org/alias/eu",
        &["unix:uid:2"],
        false,
    )
    .await;
    create(
        "spiffe://example.org/gpu-svc",
        "spiffe://example.org/alias/eu-gpu",
        &["unix:uid:3"],
        false,
    )
    .await;
    create(
        "spiffe://example.org/us-svc",
        "spiffe://example.org/alias/us",
        &["unix:uid:4"],
        false,
    )
    .await;
    create(
        "spiffe://example.org/old-svc",
        "spiffe://example.org/alias/eu-old",
        &["unix:uid:5"],
        false,
    )
    .await;
    create(
        "spiffe://other.org/eu-svc",
        "spiffe://other.org/alias/eu",
        &["unix:uid:6"],
        false,
    )
    .await;
    create(
        "spiffe://example.org/node2-svc",
        "spiffe://example.org/agent/node2",
        &["unix:uid:7"],
        false,
    )
    .await;

    let node_selectors = [sel("region:eu"), sel("host:node1")];
    let got = reg
        .entries_for_agent(&id(agent), &node_selectors)
        .await
        .unwrap();
    let ids: BTreeSet<_> = got.iter().map(|e| e.id).collect();
    assert_eq!(ids, BTreeSet::from([direct.id, via_eu.id]));

    let got = reg.entries_for_agent(&id(agent), &[]).await.unwrap();
    assert_eq!(got, [direct]);
}

async fn join_tokens_are_hashed_single_use_and_expire(db: TestDb) {
    let reg = &db.registry;
    let token = "c0rrect-horse-battery-staple-4f9a";
    let agent = id("spiffe://example.org/agent/joined");
    let expires = reg
        .create_join_token(ACTOR, token, Duration::from_secs(600), Some(&agent))
        .await
        .unwrap();
    assert!(expires > now());

    // Only the SHA-256 is stored; the token appears nowhere, audit log included.
    let raw = db.raw().await;
    let rows = sqlx::query("SELECT token_hash, spiffe_id FROM join_tokens")
        .fetch_all(&raw)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let hash: String = rows[0].get("token_hash");
    let expected = format!("{:x}", Sha256::digest(token.as_bytes()));
    assert_eq!(hash, expected);
    let dump = format!("{:?}", reg.list_audit(10).await.unwrap());
    assert!(!dump.contains(token), "token leaked into the audit log");
    assert!(!hash.contains(token));

    let err = reg
        .create_join_token(ACTOR, token, Duration::from_secs(600), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::AlreadyExists { .. }), "{err}");
    assert!(!err.to_string().contains(token));

    // Exactly one of many concurrent uses wins, across two registry handles.
    let other = db.reopen().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let reg = if i % 2 == 0 {
            reg.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            reg.consume_join_token(token, now()).await
        }));
    }
    let mut wins = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(used) => wins.push(used),
            Err(RegistryError::JoinTokenUsed) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins.len(), 1);
    assert_eq!(wins[0].spiffe_id, Some(agent));
    assert_eq!(wins[0].expires_at, expires);
    let err = reg.consume_join_token(token, now()).await.unwrap_err();
    assert!(matches!(err, RegistryError::JoinTokenUsed), "{err}");

    let err = reg
        .consume_join_token("never-issued-token-0000", now())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::JoinTokenUnknown), "{err}");

    let short_lived = "short-lived-token-1234";
    reg.create_join_token(ACTOR, short_lived, Duration::from_secs(60), None)
        .await
        .unwrap();
    let later = now() + time::Duration::minutes(2);
    for _ in 0..2 {
        let err = reg
            .consume_join_token(short_lived, later)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::JoinTokenExpired), "{err}");
    }
    let err = reg
        .create_join_token(ACTOR, "too-short", Duration::from_secs(60), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Invalid { .. }), "{err}");
}

async fn heartbeats_touch_agents_in_batches_without_a_change(db: TestDb) {
    let reg = &db.registry;
    let count = fedhub_registry::TOUCH_BATCH + 3;
    let mut ids = Vec::new();
    for n in 0..count {
        let agent_id = id(&format!("spiffe://example.org/agent/n{n}"));
        reg.upsert_agent(&AgentAttestation {
            spiffe_id: agent_id.clone(),
            attestation_type: "join_token".into(),
            serial: format!("{n:04x}"),
            svid_expires_at: now() + time::Duration::hours(1),
            selectors: vec![],
        })
        .await
        .unwrap();
        ids.push(agent_id);
    }
    // One agent not in the registry (evicted meanwhile) is skipped.
    ids.push(id("spiffe://example.org/agent/gone"));
    let head = reg.latest_revision().await.unwrap();
    let seen = now() + time::Duration::minutes(1);
    let updated = reg.touch_agents(&ids, seen).await.unwrap();
    assert_eq!(updated, u64::try_from(count).unwrap());
    assert_eq!(
        reg.latest_revision().await.unwrap(),
        head,
        "a heartbeat is bookkeeping, not a change"
    );
    for agent in reg.list_agents().await.unwrap() {
        assert_eq!(agent.last_seen_at, Some(seen), "{}", agent.spiffe_id);
    }
    assert_eq!(reg.touch_agents(&[], seen).await.unwrap(), 0);
}

async fn agents_attest_renew_ban_evict(db: TestDb) {
    let reg = &db.registry;
    let agent_id = id("spiffe://example.org/agent/node1");
    let expires = now() + time::Duration::hours(1);
    let attestation = AgentAttestation {
        spiffe_id: agent_id.clone(),
        attestation_type: "join_token".into(),
        serial: "0a1b".into(),
        svid_expires_at: expires,
        selectors: vec![sel("region:eu"), sel("host:node1")],
    };
    let agent = reg.upsert_agent(&attestation).await.unwrap();
    assert_eq!(agent.serial.as_deref(), Some("0a1b"));
    assert_eq!(agent.svid_expires_at, Some(expires));
    assert_eq!(agent.selectors, [sel("host:node1"), sel("region:eu")]);
    assert!(!agent.banned);
    assert_eq!(reg.get_agent(&agent_id).await.unwrap(), Some(agent.clone()));

    // Re-attestation updates the record.
    let mut again = attestation.clone();
    again.serial = "0c0d".into();
    let agent = reg.upsert_agent(&again).await.unwrap();
    assert_eq!(agent.serial.as_deref(), Some("0c0d"));
    assert_eq!(
        reg.list_agents().await.unwrap(),
        std::slice::from_ref(&agent)
    );

    // A renewal is pending until the agent presents the new SVID: both serials are known.
    let renewed_expiry = expires + time::Duration::hours(1);
    let head = reg.latest_revision().await.unwrap();
    reg.set_pending_agent_serial(&agent_id, "0e0f", renewed_expiry)
        .await
        .unwrap();
    assert_eq!(
        reg.latest_revision().await.unwrap(),
        head,
        "a pending renewal is not a change: it wakes no sync stream"
    );
    let seen = now() + time::Duration::minutes(5);
    reg.touch_agent(&agent_id, seen).await.unwrap();
    let agent = reg.get_agent(&agent_id).await.unwrap().unwrap();
    assert_eq!(agent.serial.as_deref(), Some("0c0d"));
    assert_eq!(agent.pending_serial.as_deref(), Some("0e0f"));
    assert_eq!(agent.pending_svid_expires_at, Some(renewed_expiry));
    assert_eq!(agent.last_seen_at, Some(seen));
    // Only the pending serial is promoted, once.
    assert!(!reg.promote_agent_serial(&agent_id, "0c0d").await.unwrap());
    let head = reg.latest_revision().await.unwrap();
    assert!(reg.promote_agent_serial(&agent_id, "0e0f").await.unwrap());
    assert!(
        reg.latest_revision().await.unwrap() > head,
        "promotion is a change"
    );
    assert!(!reg.promote_agent_serial(&agent_id, "0e0f").await.unwrap());
    let agent = reg.get_agent(&agent_id).await.unwrap().unwrap();
    assert_eq!(agent.serial.as_deref(), Some("0e0f"));
    assert_eq!(agent.svid_expires_at, Some(renewed_expiry));
    assert_eq!(
        (agent.pending_serial, agent.pending_svid_expires_at),
        (None, None)
    );
    // A new attestation drops a pending renewal.
    reg.set_pending_agent_serial(&agent_id, "1e1f", renewed_expiry)
        .await
        .unwrap();
    let agent = reg.upsert_agent(&again).await.unwrap();
    assert_eq!(agent.serial.as_deref(), Some("0c0d"));
    assert_eq!(agent.pending_serial, None);
    assert!(!reg.promote_agent_serial(&agent_id, "1e1f").await.unwrap());

    reg.ban_agent(ACTOR, &agent_id).await.unwrap();
    let banned = reg.get_agent(&agent_id).await.unwrap().unwrap();
    assert!(banned.banned);
    assert_eq!(banned.serial, None);
    let err = reg.upsert_agent(&attestation).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::AgentBanned { spiffe_id } if *spiffe_id == agent_id),
        "{err}"
    );
    let err = reg
        .set_pending_agent_serial(&agent_id, "1111", expires)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::AgentBanned { .. }), "{err}");
    assert_eq!(reg.get_agent(&agent_id).await.unwrap(), Some(banned));

    reg.evict_agent(ACTOR, &agent_id).await.unwrap();
    assert_eq!(reg.get_agent(&agent_id).await.unwrap(), None);
    assert!(
        !reg.upsert_agent(&attestation).await.unwrap().banned,
        "evicted agents may attest again"
    );

    let unknown = id("spiffe://example.org/agent/unknown");
    for err in [
        reg.ban_agent(ACTOR, &unknown).await.unwrap_err(),
        reg.evict_agent(ACTOR, &unknown).await.unwrap_err(),
        reg.touch_agent(&unknown, now()).await.unwrap_err(),
        reg.set_pending_agent_serial(&unknown, "01", expires)
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(err, RegistryError::NotFound { kind: "agent", .. }),
            "{err}"
        );
    }
}

async fn claims_are_exclusive_across_replicas(db: TestDb) {
    let count = 24;
    for i in 0..count {
        db.registry
            .create_relationship(ACTOR, &web_relationship(&format!("td{i:02}.example")), None)
            .await
            .unwrap();
    }
    let t0 = now();
    let lease = Duration::from_secs(60);
    let claim_all = |registry: Registry, owner: &'static str| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = registry
                    .claim_due_refreshes(owner, t0, lease, 3)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                for r in batch {
                    assert_eq!(r.status.lease_owner.as_deref(), Some(owner));
                    assert_eq!(r.status.lease_until, Some(t0 + lease));
                    mine.push(r.spec.trust_domain);
                }
            }
        })
    };
    let a = claim_all(db.registry.clone(), "replica-a");
    let b = claim_all(db.reopen().await, "replica-b");
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let a_set: BTreeSet<_> = a.iter().cloned().collect();
    let b_set: BTreeSet<_> = b.iter().cloned().collect();
    assert_eq!(a_set.len(), a.len(), "replica-a claimed one twice");
    assert_eq!(b_set.len(), b.len(), "replica-b claimed one twice");
    assert!(
        a_set.is_disjoint(&b_set),
        "claimed by both: {:?}",
        a_set.intersection(&b_set).collect::<Vec<_>>()
    );
    assert_eq!(a_set.len() + b_set.len(), count);

    // Held leases are not handed out again until they expire.
    let none = db
        .registry
        .claim_due_refreshes("replica-c", t0 + time::Duration::seconds(60), lease, 100)
        .await
        .unwrap();
    assert!(none.is_empty());
    let expired = db
        .registry
        .claim_due_refreshes("replica-c", t0 + time::Duration::seconds(61), lease, 100)
        .await
        .unwrap();
    assert_eq!(expired.len(), count);
}

async fn claim_refresh_takes_one_relationship_whatever_its_schedule(db: TestDb) {
    let reg = &db.registry;
    let partner = td("partner.example");
    let other = td("other.example");
    for name in ["partner.example", "other.example"] {
        reg.create_relationship(ACTOR, &web_relationship(name), None)
            .await
            .unwrap();
    }
    let t0 = now();
    let lease = Duration::from_secs(30);
    // Refreshed a moment ago: the next refresh is an hour away.
    reg.claim_due_refreshes("hub-a", t0, lease, 10)
        .await
        .unwrap();
    for name in [&partner, &other] {
        let result = success(reg, name.name(), None, None, t0 + time::Duration::hours(1));
        reg.record_refresh_success(name, "hub-a", &result.await)
            .await
            .unwrap();
    }
    assert!(
        reg.claim_due_refreshes("hub-a", t0, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let claimed = reg
        .claim_refresh(&partner, "hub-a", t0, lease)
        .await
        .unwrap()
        .expect("a free lease is claimed whatever the schedule");
    assert_eq!(claimed.spec.trust_domain, partner);
    assert_eq!(claimed.status.lease_owner.as_deref(), Some("hub-a"));
    assert_eq!(claimed.status.lease_until, Some(t0 + lease));
    let other_status = reg.get_relationship(&other).await.unwrap().unwrap().status;
    assert_eq!(
        other_status.lease_owner, None,
        "only the named one is claimed"
    );

    // A running lease is not taken, by another replica or the same one.
    for owner in ["hub-b", "hub-a"] {
        assert_eq!(
            reg.claim_refresh(&partner, owner, t0 + time::Duration::seconds(30), lease)
                .await
                .unwrap(),
            None
        );
    }
    // An expired one is.
    let retaken = reg
        .claim_refresh(&partner, "hub-b", t0 + time::Duration::seconds(31), lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retaken.status.lease_owner.as_deref(), Some("hub-b"));
    reg.record_refresh_failure(
        &partner,
        "hub-b",
        "boom",
        SequenceSeen::Unknown,
        t0 + time::Duration::hours(1),
    )
    .await
    .unwrap();

    let failures: Vec<(fedhub_core::TrustDomain, u32)> = reg
        .list_refresh_failures()
        .await
        .unwrap()
        .into_iter()
        .map(|(td, failures, _)| (td, failures))
        .collect();
    assert_eq!(
        failures,
        [(other.clone(), 0), (partner.clone(), 1)],
        "ordered by trust domain, with the failure just recorded"
    );

    let err = reg
        .claim_refresh(&td("nowhere.example"), "hub-a", t0, lease)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    let err = reg
        .claim_refresh(&partner, "", t0, lease)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Invalid { .. }), "{err}");
}

async fn refresh_success_and_failure_update_status(db: TestDb) {
    let reg = &db.registry;
    let partner = td("partner.example");
    reg.create_relationship(
        ACTOR,
        &spiffe_relationship("partner.example"),
        Some(&bundle("partner.example", 1, "boot")),
    )
    .await
    .unwrap();
    let t0 = now();
    let lease = Duration::from_secs(30);
    let claimed = reg
        .claim_due_refreshes("hub-a", t0, lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        reg.claim_due_refreshes("hub-b", t0, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Only the lease holder may record a result.
    let err = reg
        .record_refresh_failure(&partner, "hub-b", "boom", SequenceSeen::Unknown, t0)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::LeaseNotHeld { .. }), "{err}");
    let evil = success(
        reg,
        "partner.example",
        Some(bundle("partner.example", 9, "evil")),
        None,
        t0,
    );
    let err = reg
        .record_refresh_success(&partner, "hub-b", &evil.await)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::LeaseNotHeld { .. }), "{err}");
    assert!(
        reg.get_bundle(&partner)
            .await
            .unwrap()
            .unwrap()
            .document
            .contains("boot")
    );

    let other = success(
        reg,
        "partner.example",
        Some(bundle("other.example", 2, "x")),
        None,
        t0,
    );
    let err = reg
        .record_refresh_success(&partner, "hub-a", &other.await)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Invalid { .. }), "{err}");

    let next = t0 + time::Duration::minutes(5);
    let fresh = bundle("partner.example", 2, "fresh");
    let result = success(
        reg,
        "partner.example",
        Some(fresh.clone()),
        Some("\"etag-2\""),
        next,
    );
    assert_eq!(
        reg.record_refresh_success(&partner, "hub-a", &result.await)
            .await
            .unwrap(),
        RefreshRecorded::Replaced
    );
    assert_eq!(reg.get_bundle(&partner).await.unwrap(), Some(fresh.clone()));
    let status = reg
        .get_relationship(&partner)
        .await
        .unwrap()
        .unwrap()
        .status;
    assert!(status.last_success_at.is_some());
    assert_eq!(status.last_attempt_at, status.last_success_at);
    assert_eq!(status.last_error, None);
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(status.etag.as_deref(), Some("\"etag-2\""));
    assert_eq!(status.next_refresh_at, Some(next));
    assert_eq!(
        (status.lease_owner, status.lease_until),
        (None, None),
        "lease released"
    );
    let last_success = status.last_success_at;

    // Not due before `next`.
    assert!(
        reg.claim_due_refreshes("hub-b", next - time::Duration::seconds(1), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Failures keep the bundle and count up.
    for failures in 1..=2 {
        let at = next + time::Duration::minutes(failures);
        assert_eq!(
            reg.claim_due_refreshes("hub-b", at, lease, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        reg.record_refresh_failure(
            &partner,
            "hub-b",
            "connection refused",
            SequenceSeen::Unknown,
            at,
        )
        .await
        .unwrap();
        let status = reg
            .get_relationship(&partner)
            .await
            .unwrap()
            .unwrap()
            .status;
        assert_eq!(
            status.consecutive_failures,
            u32::try_from(failures).unwrap()
        );
        assert_eq!(status.last_error.as_deref(), Some("connection refused"));
        assert_eq!(status.last_success_at, last_success);
        assert_eq!(status.etag.as_deref(), Some("\"etag-2\""));
        assert_eq!(status.next_refresh_at, Some(at));
        assert_eq!(status.lease_owner, None);
        assert_eq!(reg.get_bundle(&partner).await.unwrap(), Some(fresh.clone()));
    }

    // An unchanged bundle (`None`) keeps the stored one and clears the failure state.
    let at = next + time::Duration::minutes(3);
    assert_eq!(
        reg.claim_due_refreshes("hub-a", at, lease, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let unchanged = success(
        reg,
        "partner.example",
        None,
        Some("\"etag-2\""),
        at + time::Duration::minutes(5),
    );
    assert_eq!(
        reg.record_refresh_success(&partner, "hub-a", &unchanged.await)
            .await
            .unwrap(),
        RefreshRecorded::Kept
    );
    let status = reg
        .get_relationship(&partner)
        .await
        .unwrap()
        .unwrap()
        .status;
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(status.last_error, None);
    assert_eq!(reg.get_bundle(&partner).await.unwrap(), Some(fresh));

    // A released lease cannot be used again, and unknown relationships are reported.
    let again = success(reg, "partner.example", None, None, at);
    let err = reg
        .record_refresh_success(&partner, "hub-a", &again.await)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::LeaseNotHeld { .. }), "{err}");
    let err = reg
        .record_refresh_failure(
            &td("nowhere.example"),
            "hub-a",
            "x",
            SequenceSeen::Unknown,
            at,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

/// A refresh that finds the bundle unchanged, or fails, updates the status but writes no
/// change: otherwise every poll would wake every agent's sync stream. Only a bundle that
/// really differs is written, with one bundle change.
async fn refresh_bookkeeping_writes_no_change(db: TestDb) {
    let reg = &db.registry;
    let partner = td("partner.example");
    let boot = bundle("partner.example", 1, "boot");
    reg.create_relationship(ACTOR, &web_relationship("partner.example"), Some(&boot))
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let mut at = now();
    let claim = async |at: OffsetDateTime| {
        let claimed = reg
            .claim_due_refreshes("hub-a", at, lease, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
    };
    let before = reg.latest_revision().await.unwrap();

    // 304 (no bundle) and the same bundle fetched again: status only.
    claim(at).await;
    let not_modified = success(reg, "partner.example", None, Some("\"e1\""), at);
    let recorded = reg
        .record_refresh_success(&partner, "hub-a", &not_modified.await)
        .await
        .unwrap();
    assert_eq!(recorded, RefreshRecorded::Kept);
    let mut same = boot.clone();
    same.updated_at = boot.updated_at + time::Duration::hours(1);
    at += time::Duration::minutes(1);
    claim(at).await;
    let fetched_again = success(reg, "partner.example", Some(same), Some("\"e1\""), at);
    let recorded = reg
        .record_refresh_success(&partner, "hub-a", &fetched_again.await)
        .await
        .unwrap();
    assert_eq!(recorded, RefreshRecorded::Kept);
    assert_eq!(
        reg.get_bundle(&partner).await.unwrap(),
        Some(boot.clone()),
        "the stored bundle is not rewritten"
    );
    // A failure: status only.
    at += time::Duration::minutes(1);
    claim(at).await;
    reg.record_refresh_failure(
        &partner,
        "hub-a",
        "connection refused",
        SequenceSeen::Unknown,
        at,
    )
    .await
    .unwrap();
    assert_eq!(reg.latest_revision().await.unwrap(), before);
    assert!(changes_after(reg, before).await.is_empty());
    let status = status_of(reg, "partner.example").await;
    assert_eq!(status.consecutive_failures, 1);
    assert!(status.last_success_at.is_some());
    assert_eq!(status.etag.as_deref(), Some("\"e1\""));

    // A new sequence, or new content under the same sequence: one bundle change each.
    for (sequence, marker) in [(2, "rotated"), (2, "rotated again")] {
        at += time::Duration::minutes(1);
        claim(at).await;
        let revision = reg.latest_revision().await.unwrap();
        let fresh = bundle("partner.example", sequence, marker);
        let result = success(reg, "partner.example", Some(fresh.clone()), None, at);
        let recorded = reg
            .record_refresh_success(&partner, "hub-a", &result.await)
            .await
            .unwrap();
        assert_eq!(recorded, RefreshRecorded::Replaced, "{marker}");
        assert_eq!(reg.get_bundle(&partner).await.unwrap(), Some(fresh));
        assert_eq!(
            changes_after(reg, revision).await,
            [(ChangeKind::Bundle, "partner.example".to_owned())].into()
        );
        assert_eq!(reg.latest_revision().await.unwrap(), revision + 1);
    }
}

async fn bundle_revisions_change_with_every_write_and_are_never_reused(db: TestDb) {
    let reg = &db.registry;
    let partner = td("partner.example");
    assert_eq!(reg.get_bundle_with_revision(&partner).await.unwrap(), None);
    let first = bundle("partner.example", 1, "first");
    reg.put_bundle(ACTOR, &first).await.unwrap();
    let stored = reg
        .get_bundle_with_revision(&partner)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.record, first);
    assert_eq!(
        stored.revision.get(),
        reg.latest_revision().await.unwrap(),
        "the change feed revision of the write"
    );

    // The same document again is still a new write.
    reg.put_bundle(ACTOR, &first).await.unwrap();
    let again = revision_of(reg, "partner.example").await.unwrap();
    assert!(again > stored.revision);

    // Deleted and stored again: a revision never seen before.
    reg.delete_bundle(ACTOR, &partner).await.unwrap();
    assert_eq!(revision_of(reg, "partner.example").await, None);
    reg.put_bundle(ACTOR, &first).await.unwrap();
    assert!(revision_of(reg, "partner.example").await.unwrap() > again);
}

/// The compare-and-swap of a refresh result: a fetch judged against one stored bundle stores
/// nothing (bundle, entity tag, sequence status) once an admin stored or deleted another one
/// meanwhile; the admin's write wins, and the next refresh is due at once to judge the
/// endpoint's bundle against it.
async fn refresh_result_is_not_stored_over_a_bundle_changed_meanwhile(db: TestDb) {
    let reg = &db.registry;
    let partner = td("partner.example");
    let boot = bundle("partner.example", 1, "boot");
    reg.create_relationship(ACTOR, &web_relationship("partner.example"), Some(&boot))
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let later = now() + time::Duration::hours(1);
    let claim = async || {
        let claimed = reg
            .claim_refresh(&partner, "hub-a", now(), lease)
            .await
            .unwrap();
        assert!(claimed.is_some(), "claimed");
    };

    // The refresh starts from the bootstrap bundle; an admin sets another one while it runs.
    claim().await;
    let started_from = revision_of(reg, "partner.example").await;
    assert!(started_from.is_some());
    let set = bundle("partner.example", 1, "set by an admin");
    reg.put_bundle(ACTOR, &set).await.unwrap();
    let before = reg.latest_revision().await.unwrap();
    let fetched = RefreshSuccess {
        based_on: started_from,
        bundle: Some(bundle("partner.example", 2, "fetched")),
        etag: Some("\"fetched\"".into()),
        sequence: SequenceSeen::Dropped { stored: 1 },
        next_refresh_at: later,
    };
    assert_eq!(
        reg.record_refresh_success(&partner, "hub-a", &fetched)
            .await
            .unwrap(),
        RefreshRecorded::Superseded
    );
    assert_eq!(
        reg.get_bundle(&partner).await.unwrap(),
        Some(set.clone()),
        "the set wins"
    );
    assert!(
        changes_after(reg, before).await.is_empty(),
        "nothing written"
    );
    let status = status_of(reg, "partner.example").await;
    assert_eq!(status.etag, None, "the fetched entity tag is not stored");
    assert_eq!(status.sequence_dropped, None);
    assert_eq!(status.last_success_at, None);
    assert!(status.last_attempt_at.is_some());
    assert_eq!(status.consecutive_failures, 0, "not a failure");
    assert_eq!(
        (status.lease_owner.as_deref(), status.lease_until),
        (None, None),
        "lease released"
    );
    assert!(
        status.next_refresh_at.is_some_and(|at| at <= now()),
        "due again at once: {:?}",
        status.next_refresh_at
    );

    // A `304` (no bundle) is checked the same way, or its entity tag would be stored for the
    // replaced bundle.
    claim().await;
    let stale = revision_of(reg, "partner.example").await;
    reg.put_bundle(ACTOR, &boot).await.unwrap();
    let not_modified = RefreshSuccess {
        based_on: stale,
        bundle: None,
        etag: Some("\"old\"".into()),
        sequence: SequenceSeen::Unknown,
        next_refresh_at: later,
    };
    assert_eq!(
        reg.record_refresh_success(&partner, "hub-a", &not_modified)
            .await
            .unwrap(),
        RefreshRecorded::Superseded
    );
    assert_eq!(status_of(reg, "partner.example").await.etag, None);

    // A forced delete while the fetch runs: the bundle stays deleted.
    claim().await;
    let stale = revision_of(reg, "partner.example").await;
    reg.force_delete_bundle(ACTOR, &partner).await.unwrap();
    let resurrect = RefreshSuccess {
        based_on: stale,
        bundle: Some(bundle("partner.example", 2, "fetched")),
        etag: None,
        sequence: SequenceSeen::Present,
        next_refresh_at: later,
    };
    assert_eq!(
        reg.record_refresh_success(&partner, "hub-a", &resurrect)
            .await
            .unwrap(),
        RefreshRecorded::Superseded
    );
    assert_eq!(reg.get_bundle(&partner).await.unwrap(), None);

    // And the reverse: started without a bundle, one was set meanwhile.
    claim().await;
    reg.put_bundle(ACTOR, &set).await.unwrap();
    let first = RefreshSuccess {
        based_on: None,
        ..resurrect.clone()
    };
    assert_eq!(
        reg.record_refresh_success(&partner, "hub-a", &first)
            .await
            .unwrap(),
        RefreshRecorded::Superseded
    );
    assert_eq!(reg.get_bundle(&partner).await.unwrap(), Some(set));

    // A lost lease is reported as such, superseded or not.
    let lost = RefreshSuccess {
        based_on: None,
        ..resurrect.clone()
    };
    let err = reg
        .record_refresh_success(&partner, "hub-a", &lost)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::LeaseNotHeld { .. }), "{err}");

    // Based on the bundle stored now, the result is stored.
    claim().await;
    let current = RefreshSuccess {
        based_on: revision_of(reg, "partner.example").await,
        ..resurrect
    };
    assert_eq!(
        reg.record_refresh_success(&partner, "hub-a", &current)
            .await
            .unwrap(),
        RefreshRecorded::Replaced
    );
    assert!(
        reg.get_bundle(&partner)
            .await
            .unwrap()
            .unwrap()
            .document
            .contains("fetched")
    );
    let status = status_of(reg, "partner.example").await;
    assert!(status.last_success_at.is_some());
    assert_eq!(status.next_refresh_at, Some(later));
}

/// A fetched bundle without a sequence after a stored one with a sequence is recorded in the
/// status, applied or refused, with the first drop's time and sequence, until a bundle with a
/// sequence is kept again.
async fn sequence_drops_are_recorded_until_sequences_come_back(db: TestDb) {
    let reg = &db.registry;
    let partner = td("partner.example");
    reg.create_relationship(
        ACTOR,
        &web_relationship("partner.example"),
        Some(&bundle("partner.example", 7, "boot")),
    )
    .await
    .unwrap();
    let lease = Duration::from_secs(30);
    let later = now() + time::Duration::hours(1);
    let claim = async || {
        assert!(
            reg.claim_refresh(&partner, "hub-a", now(), lease)
                .await
                .unwrap()
                .is_some()
        );
    };
    let unsequenced = BundleRecord::new(partner.clone(), r#"{"keys":[]}"#.into(), None);
    let refresh = async |bundle: Option<BundleRecord>, sequence| {
        claim().await;
        let result = RefreshSuccess {
            sequence,
            ..success(reg, "partner.example", bundle, None, later).await
        };
        reg.record_refresh_success(&partner, "hub-a", &result)
            .await
            .unwrap()
    };
    assert_eq!(
        status_of(reg, "partner.example").await.sequence_dropped,
        None
    );

    // Applied: recorded with the stored sequence.
    let before = now();
    let recorded = refresh(
        Some(unsequenced.clone()),
        SequenceSeen::Dropped { stored: 7 },
    )
    .await;
    assert_eq!(recorded, RefreshRecorded::Replaced);
    let dropped = status_of(reg, "partner.example")
        .await
        .sequence_dropped
        .expect("the drop is recorded");
    assert_eq!(dropped.last_sequence, 7);
    assert!(
        dropped.since >= before && dropped.since <= now(),
        "{dropped:?}"
    );

    // Still without sequences (nothing to compare against now), a 304, a refused bundle, a
    // later drop: the first drop is kept.
    refresh(Some(unsequenced.clone()), SequenceSeen::Unknown).await;
    refresh(None, SequenceSeen::Unknown).await;
    claim().await;
    reg.record_refresh_failure(
        &partner,
        "hub-a",
        "refused",
        SequenceSeen::Dropped { stored: 9 },
        later,
    )
    .await
    .unwrap();
    refresh(Some(unsequenced), SequenceSeen::Dropped { stored: 9 }).await;
    assert_eq!(
        status_of(reg, "partner.example").await.sequence_dropped,
        Some(dropped)
    );

    // Sequences are back: cleared.
    refresh(
        Some(bundle("partner.example", 8, "back")),
        SequenceSeen::Present,
    )
    .await;
    assert_eq!(
        status_of(reg, "partner.example").await.sequence_dropped,
        None
    );

    // A refused bundle without a sequence is recorded too.
    claim().await;
    reg.record_refresh_failure(
        &partner,
        "hub-a",
        "refused",
        SequenceSeen::Dropped { stored: 8 },
        later,
    )
    .await
    .unwrap();
    let status = status_of(reg, "partner.example").await;
    assert!(
        matches!(
            status.sequence_dropped,
            Some(SequenceDrop {
                last_sequence: 8,
                ..
            })
        ),
        "{status:?}"
    );
    assert_eq!(status.last_error.as_deref(), Some("refused"));
}

async fn relationship_options_are_stored_and_kept_by_spec_updates(db: TestDb) {
    let reg = &db.registry;
    let strict = RelationshipOptions {
        require_sequence: true,
        ..RelationshipOptions::default()
    };
    let spec = web_relationship("strict.example");
    let created = reg
        .create_relationship_with_options(ACTOR, &spec, strict, None)
        .await
        .unwrap();
    assert_eq!(created.options, strict);
    let plain = reg
        .create_relationship(ACTOR, &web_relationship("plain.example"), None)
        .await
        .unwrap();
    assert_eq!(plain.options, RelationshipOptions::default());
    assert!(!plain.options.require_sequence, "off by default");

    // A spec update keeps the options; an update with options replaces them.
    let mut moved = spec.clone();
    moved.bundle_endpoint_url = "https://strict.example/v2".parse().unwrap();
    let updated = reg.update_relationship(ACTOR, &moved).await.unwrap();
    assert_eq!(updated.options, strict);
    let relaxed = reg
        .update_relationship_with_options(ACTOR, &moved, RelationshipOptions::default())
        .await
        .unwrap();
    assert_eq!(relaxed.options, RelationshipOptions::default());
    assert_eq!(
        reg.get_relationship(&spec.trust_domain)
            .await
            .unwrap()
            .unwrap()
            .options,
        RelationshipOptions::default()
    );

    let audit = reg.list_audit(10).await.unwrap();
    let details: Vec<(&str, &serde_json::Value)> = audit
        .iter()
        .filter(|e| e.target == "strict.example")
        .map(|e| (e.action.as_str(), &e.details["require_sequence"]))
        .collect();
    assert_eq!(
        details,
        [
            ("federation.update", &serde_json::Value::Bool(false)),
            ("federation.update", &serde_json::Value::Null),
            ("federation.create", &serde_json::Value::Bool(true)),
        ]
    );
}

async fn change_feed_records_every_write_in_order(db: TestDb) {
    let reg = &db.registry;
    assert_eq!(reg.latest_revision().await.unwrap(), 0);
    reg.put_bundle(ACTOR, &bundle("example.org", 1, "own"))
        .await
        .unwrap();
    reg.create_relationship(ACTOR, &web_relationship("partner.example"), None)
        .await
        .unwrap();
    let spec = entry(
        "spiffe://example.org/web",
        "spiffe://example.org/agent",
        &["unix:uid:1"],
    );
    let created = reg.create_entry(ACTOR, &spec).await.unwrap();
    let agent_id = id("spiffe://example.org/agent");
    reg.upsert_agent(&AgentAttestation {
        spiffe_id: agent_id.clone(),
        attestation_type: "join_token".into(),
        serial: "01".into(),
        svid_expires_at: now(),
        selectors: vec![],
    })
    .await
    .unwrap();
    // A refused write leaves no change behind.
    reg.create_entry(ACTOR, &spec).await.unwrap_err();
    // A heartbeat is not a change.
    reg.touch_agent(&agent_id, now()).await.unwrap();

    assert_eq!(reg.latest_revision().await.unwrap(), 4);
    let changes = reg.changes_since(0, 100).await.unwrap();
    let summary: Vec<(u64, ChangeKind, &str)> = changes
        .iter()
        .map(|c| (c.revision, c.kind, c.key.as_str()))
        .collect();
    let entry_key = created.id.to_string();
    assert_eq!(
        summary,
        [
            (1, ChangeKind::Bundle, "example.org"),
            (2, ChangeKind::Federation, "partner.example"),
            (3, ChangeKind::Entry, entry_key.as_str()),
            (4, ChangeKind::Agent, agent_id.as_str()),
        ]
    );
    let page: Vec<u64> = reg
        .changes_since(1, 2)
        .await
        .unwrap()
        .iter()
        .map(|c| c.revision)
        .collect();
    assert_eq!(page, [2, 3]);

    // Concurrent writers from two handles still get gap-free, distinct revisions.
    let other = db.reopen().await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let reg = if i % 2 == 0 {
            reg.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            reg.put_bundle(ACTOR, &bundle(&format!("b{i}.example"), 1, "x"))
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let revisions: Vec<u64> = reg
        .changes_since(4, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.revision)
        .collect();
    assert_eq!(revisions, (5..=14).collect::<Vec<_>>());

    // Pruning removes rows but never resets the revision.
    assert_eq!(
        reg.prune_changes(now() + time::Duration::hours(1))
            .await
            .unwrap(),
        14
    );
    assert!(reg.changes_since(0, 100).await.unwrap().is_empty());
    assert_eq!(reg.latest_revision().await.unwrap(), 14);
    reg.delete_entry(ACTOR, created.id).await.unwrap();
    let after: Vec<u64> = reg
        .changes_since(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.revision)
        .collect();
    assert_eq!(after, [15]);
}

async fn audit_log_records_admin_changes(db: TestDb) {
    let reg = &db.registry;
    let created = reg
        .create_entry(
            "alice",
            &entry(
                "spiffe://example.org/web",
                "spiffe://example.org/agent",
                &["unix:uid:1"],
            ),
        )
        .await
        .unwrap();
    reg.create_relationship("bob", &web_relationship("partner.example"), None)
        .await
        .unwrap();
    reg.upsert_agent(&AgentAttestation {
        spiffe_id: id("spiffe://example.org/agent"),
        attestation_type: "join_token".into(),
        serial: "01".into(),
        svid_expires_at: now(),
        selectors: vec![],
    })
    .await
    .unwrap();
    reg.ban_agent("carol", &id("spiffe://example.org/agent"))
        .await
        .unwrap();

    let events = reg.list_audit(10).await.unwrap();
    let summary: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    let entry_key = created.id.to_string();
    assert_eq!(
        summary,
        [
            ("carol", "agent.ban", "spiffe://example.org/agent"),
            ("bob", "federation.create", "partner.example"),
            ("alice", "entry.create", entry_key.as_str()),
        ],
        "newest first; agent attestation is not an admin change"
    );
    assert_eq!(events[2].details["spiffe_id"], "spiffe://example.org/web");
    assert_eq!(events[2].details["selectors"][0], "unix:uid:1");
    assert!(events[0].id > events[1].id);
    assert_eq!(reg.list_audit(1).await.unwrap().len(), 1);

    // An admin change without an actor is refused as a whole.
    let err = reg
        .create_entry(
            "",
            &entry(
                "spiffe://example.org/db",
                "spiffe://example.org/agent",
                &["unix:uid:2"],
            ),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Invalid { field: "actor", .. }),
        "{err}"
    );
    assert_eq!(
        reg.list_entries(&EntryFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(reg.list_audit(10).await.unwrap().len(), 3);
}

async fn invalid_stored_values_are_reported_as_corrupt(db: TestDb) {
    let raw = db.raw().await;
    sqlx::query(
        "INSERT INTO bundles (trust_domain, document, sequence, updated_at) \
         VALUES ('Upper.Example', '{}', NULL, 0)",
    )
    .execute(&raw)
    .await
    .unwrap();
    let err = db.registry.list_bundles().await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Corrupt {
                kind: "bundle",
                column: "trust_domain",
                ..
            }
        ),
        "{err}"
    );
    sqlx::query(
        "INSERT INTO agents (spiffe_id, attestation_type, selectors, banned, created_at, \
         updated_at) VALUES ('spiffe://example.org/agent', 'join_token', '[\"nocolon\"]', 0, 0, 0)",
    )
    .execute(&raw)
    .await
    .unwrap();
    let err = db
        .registry
        .get_agent(&id("spiffe://example.org/agent"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Corrupt {
                kind: "agent",
                column: "selectors",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("spiffe://example.org/agent"),
        "{err}"
    );
}

/// The revision of the stored bundle of `name`, if one is stored.
async fn revision_of(reg: &Registry, name: &str) -> Option<BundleRevision> {
    reg.get_bundle_with_revision(&td(name))
        .await
        .unwrap()
        .map(|stored| stored.revision)
}

/// A successful refresh of the relationship with `name`, based on the bundle stored now, that
/// saw nothing of the peer's sequence.
async fn success(
    reg: &Registry,
    name: &str,
    bundle: Option<BundleRecord>,
    etag: Option<&str>,
    next_refresh_at: OffsetDateTime,
) -> RefreshSuccess {
    RefreshSuccess {
        based_on: revision_of(reg, name).await,
        bundle,
        etag: etag.map(str::to_owned),
        sequence: SequenceSeen::Unknown,
        next_refresh_at,
    }
}

/// The refresh status of the relationship with `name`.
async fn status_of(reg: &Registry, name: &str) -> RefreshStatus {
    reg.get_relationship(&td(name))
        .await
        .unwrap()
        .expect("the relationship exists")
        .status
}

/// Creates a web relationship with a bootstrap bundle for each of `names`, and records a
/// successful refresh of each with the etag `"v1"`, next due at `next`.
async fn refreshed_relationships(reg: &Registry, names: &[&str], next: OffsetDateTime) {
    for name in names {
        reg.create_relationship(
            ACTOR,
            &web_relationship(name),
            Some(&bundle(name, 1, "boot")),
        )
        .await
        .unwrap();
    }
    let claimed = reg
        .claim_due_refreshes("replica-1", now(), Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), names.len());
    for name in names {
        let result = success(reg, name, None, Some("\"v1\""), next);
        reg.record_refresh_success(&td(name), "replica-1", &result.await)
            .await
            .unwrap();
    }
}

async fn forced_bundle_delete_keeps_the_relationship_due_now(db: TestDb) {
    let reg = &db.registry;
    let spec = web_relationship("partner.example");
    refreshed_relationships(reg, &["partner.example"], now() + Duration::from_secs(3600)).await;

    reg.force_delete_bundle(ACTOR, &spec.trust_domain)
        .await
        .unwrap();
    assert_eq!(reg.get_bundle(&spec.trust_domain).await.unwrap(), None);
    let kept = reg
        .get_relationship(&spec.trust_domain)
        .await
        .unwrap()
        .expect("the relationship stays");
    assert_eq!(kept.status.next_refresh_at, None, "due at once");
    assert_eq!(kept.status.etag, None, "a full fetch follows");
    let err = reg
        .force_delete_bundle(ACTOR, &spec.trust_domain)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::NotFound { kind: "bundle", .. }),
        "{err}"
    );
}

/// A bundle set over a federated one (FED-32 override) drops the relationship's etag, so its
/// next refresh fetches in full rather than hearing `304` about the replaced bundle; the
/// schedule stays. Other relationships keep theirs.
async fn bundle_set_over_a_relationship_drops_its_etag(db: TestDb) {
    let reg = &db.registry;
    let later = now() + Duration::from_secs(3600);
    refreshed_relationships(reg, &["partner.example", "other.example"], later).await;

    let before = reg.latest_revision().await.unwrap();
    let set = bundle("partner.example", 1, "set by an admin");
    reg.put_bundle(ACTOR, &set).await.unwrap();
    assert_eq!(reg.get_bundle(&set.trust_domain).await.unwrap(), Some(set));
    let status = status_of(reg, "partner.example").await;
    assert_eq!(status.etag, None, "a full fetch follows");
    assert_eq!(status.next_refresh_at, Some(later), "the schedule stays");
    let other = status_of(reg, "other.example").await;
    assert_eq!(other.etag.as_deref(), Some("\"v1\""));
    assert_eq!(
        changes_after(reg, before).await,
        [(ChangeKind::Bundle, "partner.example".to_owned())].into()
    );
}

/// The changes after `revision`, as a set of (kind, key).
async fn changes_after(reg: &Registry, revision: u64) -> BTreeSet<(ChangeKind, String)> {
    reg.changes_since(revision, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.kind, c.key))
        .collect()
}

fn members(group: &FederationGroup) -> Vec<&str> {
    group
        .members
        .iter()
        .map(fedhub_core::TrustDomain::name)
        .collect()
}

async fn federation_groups_create_list_add_remove_delete(db: TestDb) {
    let reg = &db.registry;
    for name in ["a.example", "b.example", "c.example"] {
        reg.create_relationship(ACTOR, &web_relationship(name), None)
            .await
            .unwrap();
    }

    // Names are lowercase words of at most 64 bytes.
    for bad in ["Partners", "", "a b", &"x".repeat(MAX_GROUP_NAME_LEN + 1)] {
        let err = reg
            .create_federation_group(ACTOR, bad, &[])
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Invalid { .. }), "{bad}: {err}");
    }
    // Members need a relationship; nothing is stored then.
    let before = reg.latest_revision().await.unwrap();
    let err = reg
        .create_federation_group(ACTOR, "partners", &[td("a.example"), td("nowhere.example")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::UnknownGroupMember { group, trust_domain }
            if group == "partners" && trust_domain.name() == "nowhere.example"),
        "{err}"
    );
    assert!(err.to_string().contains("create the relationship"), "{err}");
    assert_eq!(reg.get_federation_group("partners").await.unwrap(), None);
    assert_eq!(reg.latest_revision().await.unwrap(), before);

    let created = reg
        .create_federation_group(
            ACTOR,
            "partners",
            &[td("b.example"), td("a.example"), td("b.example")],
        )
        .await
        .unwrap();
    assert_eq!(created.name, "partners");
    assert_eq!(members(&created), ["a.example", "b.example"]);
    assert_eq!(
        reg.get_federation_group("partners").await.unwrap(),
        Some(created.clone())
    );
    let err = reg
        .create_federation_group(ACTOR, "partners", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::AlreadyExists {
                kind: "federation group",
                ..
            }
        ),
        "{err}"
    );
    let empty = reg
        .create_federation_group(ACTOR, "empty", &[])
        .await
        .unwrap();
    assert!(empty.members.is_empty());
    let listed = reg.list_federation_groups().await.unwrap();
    assert_eq!(listed, [empty, created]);

    // Adding and removing members.
    let before = reg.latest_revision().await.unwrap();
    let grown = reg
        .add_federation_group_member(ACTOR, "partners", &td("c.example"))
        .await
        .unwrap();
    assert_eq!(members(&grown), ["a.example", "b.example", "c.example"]);
    assert_eq!(
        changes_after(reg, before).await,
        [(ChangeKind::FederationGroup, "partners".to_owned())].into()
    );
    let err = reg
        .add_federation_group_member(ACTOR, "partners", &td("c.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("already a member"), "{err}");
    let err = reg
        .add_federation_group_member(ACTOR, "partners", &td("nowhere.example"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::UnknownGroupMember { .. }),
        "{err}"
    );
    let err = reg
        .add_federation_group_member(ACTOR, "nope", &td("a.example"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::NotFound {
                kind: "federation group",
                ..
            }
        ),
        "{err}"
    );
    let shrunk = reg
        .remove_federation_group_member(ACTOR, "partners", &td("a.example"))
        .await
        .unwrap();
    assert_eq!(members(&shrunk), ["b.example", "c.example"]);
    let err = reg
        .remove_federation_group_member(ACTOR, "partners", &td("a.example"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("member a.example of federation group partners not found"),
        "{err}"
    );
    // Refused calls left no change behind: one for the add, one for the remove.
    assert_eq!(reg.latest_revision().await.unwrap(), before + 2);

    let audit: Vec<(String, String)> = reg
        .list_audit(3)
        .await
        .unwrap()
        .into_iter()
        .map(|event| (event.action, event.target))
        .collect();
    assert_eq!(
        audit,
        [
            ("federation_group.remove_member".into(), "partners".into()),
            ("federation_group.add_member".into(), "partners".into()),
            ("federation_group.create".into(), "empty".into()),
        ]
    );

    // An unused group goes without force.
    let before = reg.latest_revision().await.unwrap();
    assert_eq!(
        reg.delete_federation_group(ACTOR, "partners", false)
            .await
            .unwrap(),
        Vec::<DetachedEntry>::new()
    );
    assert_eq!(reg.get_federation_group("partners").await.unwrap(), None);
    assert_eq!(
        changes_after(reg, before).await,
        [(ChangeKind::FederationGroup, "partners".to_owned())].into()
    );
    let err = reg
        .delete_federation_group(ACTOR, "partners", true)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    // The relationships stay.
    assert_eq!(reg.list_relationships().await.unwrap().len(), 3);
}

async fn entries_federate_with_groups_and_with_all(db: TestDb) {
    let reg = &db.registry;
    for name in ["a.example", "b.example"] {
        reg.create_relationship(ACTOR, &web_relationship(name), None)
            .await
            .unwrap();
    }
    reg.create_federation_group(ACTOR, "partners", &[td("b.example")])
        .await
        .unwrap();
    reg.create_federation_group(ACTOR, "later", &[])
        .await
        .unwrap();
    let agent = "spiffe://example.org/agent";

    // Unknown and malformed group names are refused.
    let mut spec = entry("spiffe://example.org/grouped", agent, &["unix:uid:1"]);
    spec.federates_with_groups = vec!["partners".into(), "nope".into()];
    let err = reg.create_entry(ACTOR, &spec).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::UnknownFederationGroup { name } if name == "nope"),
        "{err}"
    );
    assert!(
        err.to_string().contains("fedhub federation group create"),
        "{err}"
    );
    spec.federates_with_groups = vec!["Bad Name".into()];
    let err = reg.create_entry(ACTOR, &spec).await.unwrap_err();
    assert!(matches!(err, RegistryError::Invalid { .. }), "{err}");

    // Stored sorted and without repeats, next to the explicit list.
    spec.federates_with = vec![td("a.example")];
    spec.federates_with_groups = vec!["partners".into(), "later".into(), "partners".into()];
    let grouped = reg.create_entry(ACTOR, &spec).await.unwrap();
    assert_eq!(grouped.spec.federates_with, [td("a.example")]);
    assert_eq!(grouped.spec.federates_with_groups, ["later", "partners"]);
    assert!(!grouped.spec.federates_with_all);
    let mut all = entry("spiffe://example.org/all", agent, &["unix:uid:2"]);
    all.federates_with_all = true;
    let all = reg.create_entry(ACTOR, &all).await.unwrap();
    assert!(all.spec.federates_with_all);
    let plain = reg
        .create_entry(
            ACTOR,
            &entry("spiffe://example.org/plain", agent, &["unix:uid:3"]),
        )
        .await
        .unwrap();
    for read in [
        reg.list_entries(&EntryFilter::default()).await.unwrap(),
        reg.entries_for_agent(&id(agent), &[]).await.unwrap(),
    ] {
        assert_eq!(read, [all.clone(), grouped.clone(), plain.clone()]);
    }
    let audit = &reg.list_audit(1).await.unwrap()[0];
    assert_eq!(
        audit.details["federates_with_groups"],
        serde_json::json!([])
    );

    let scope = reg.federation_scope().await.unwrap();
    let effective = |scope: &fedhub_registry::FederationScope, e: &fedhub_registry::Entry| {
        scope
            .effective_federates_with(&e.spec)
            .iter()
            .map(|td| td.name().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(effective(&scope, &grouped), ["a.example", "b.example"]);
    assert_eq!(effective(&scope, &all), ["a.example", "b.example"]);
    assert!(effective(&scope, &plain).is_empty());

    // New members and new relationships reach entries without touching them.
    reg.create_relationship(ACTOR, &web_relationship("c.example"), None)
        .await
        .unwrap();
    reg.add_federation_group_member(ACTOR, "later", &td("c.example"))
        .await
        .unwrap();
    let scope = reg.federation_scope().await.unwrap();
    assert_eq!(
        effective(&scope, &grouped),
        ["a.example", "b.example", "c.example"]
    );
    assert_eq!(
        effective(&scope, &all),
        ["a.example", "b.example", "c.example"]
    );
    assert_eq!(
        reg.get_entry(grouped.id).await.unwrap(),
        Some(grouped.clone())
    );
    assert_eq!(reg.get_entry(all.id).await.unwrap(), Some(all.clone()));

    // An update replaces the groups and the flag.
    let mut spec = grouped.spec.clone();
    spec.federates_with_groups = vec!["later".into()];
    spec.federates_with_all = true;
    let updated = reg.update_entry(ACTOR, grouped.id, &spec).await.unwrap();
    assert_eq!(updated.spec.federates_with_groups, ["later"]);
    assert!(updated.spec.federates_with_all);
    assert_eq!(updated.revision, 2);
    spec.federates_with_groups = vec!["nope".into()];
    let err = reg
        .update_entry(ACTOR, grouped.id, &spec)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::UnknownFederationGroup { .. }),
        "{err}"
    );
    spec.federates_with_groups.clear();
    spec.federates_with_all = false;
    let cleared = reg.update_entry(ACTOR, grouped.id, &spec).await.unwrap();
    assert!(cleared.spec.federates_with_groups.is_empty());
    assert!(!cleared.spec.federates_with_all);

    // Deleting an entry frees its groups.
    reg.delete_entry(ACTOR, all.id).await.unwrap();
    reg.delete_entry(ACTOR, cleared.id).await.unwrap();
    assert_eq!(
        reg.delete_federation_group(ACTOR, "later", false)
            .await
            .unwrap(),
        Vec::<DetachedEntry>::new()
    );
}

async fn deleting_a_used_group_needs_force(db: TestDb) {
    let reg = &db.registry;
    reg.create_relationship(ACTOR, &web_relationship("a.example"), None)
        .await
        .unwrap();
    reg.create_federation_group(ACTOR, "partners", &[td("a.example")])
        .await
        .unwrap();
    reg.create_federation_group(ACTOR, "others", &[])
        .await
        .unwrap();
    let agent = "spiffe://example.org/agent";
    let mut both = entry("spiffe://example.org/both", agent, &["unix:uid:1"]);
    both.federates_with_groups = vec!["partners".into(), "others".into()];
    let both = reg.create_entry(ACTOR, &both).await.unwrap();
    let mut only = entry("spiffe://example.org/only", agent, &["unix:uid:2"]);
    only.federates_with_groups = vec!["partners".into()];
    let only = reg.create_entry(ACTOR, &only).await.unwrap();

    let before = reg.latest_revision().await.unwrap();
    let err = reg
        .delete_federation_group(ACTOR, "partners", false)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err}");
    assert!(
        err.to_string()
            .contains("federation group partners is used by 2 entries: "),
        "{err}"
    );
    assert!(
        reg.get_federation_group("partners")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(reg.latest_revision().await.unwrap(), before);

    assert_eq!(
        reg.delete_federation_group(ACTOR, "partners", true)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(reg.get_federation_group("partners").await.unwrap(), None);
    let both_after = reg.get_entry(both.id).await.unwrap().unwrap();
    assert_eq!(both_after.spec.federates_with_groups, ["others"]);
    assert_eq!(both_after.revision, 2);
    let only_after = reg.get_entry(only.id).await.unwrap().unwrap();
    assert!(only_after.spec.federates_with_groups.is_empty());
    assert_eq!(only_after.revision, 2);
    assert_eq!(
        changes_after(reg, before).await,
        [
            (ChangeKind::Entry, both.id.to_string()),
            (ChangeKind::Entry, only.id.to_string()),
            (ChangeKind::FederationGroup, "partners".to_owned()),
        ]
        .into()
    );
    // The member's relationship stays.
    assert!(
        reg.get_relationship(&td("a.example"))
            .await
            .unwrap()
            .is_some()
    );
    let audit = &reg.list_audit(1).await.unwrap()[0];
    assert_eq!(audit.action, "federation_group.delete");
    assert_eq!(audit.details["force"], true);
}

async fn deleting_a_relationship_removes_it_from_its_groups(db: TestDb) {
    let reg = &db.registry;
    for name in ["a.example", "b.example"] {
        reg.create_relationship(ACTOR, &web_relationship(name), None)
            .await
            .unwrap();
    }
    reg.create_federation_group(ACTOR, "one", &[td("a.example"), td("b.example")])
        .await
        .unwrap();
    reg.create_federation_group(ACTOR, "two", &[td("a.example")])
        .await
        .unwrap();
    reg.create_federation_group(ACTOR, "three", &[td("b.example")])
        .await
        .unwrap();
    let mut spec = entry(
        "spiffe://example.org/w",
        "spiffe://example.org/agent",
        &["unix:uid:1"],
    );
    spec.federates_with_groups = vec!["two".into()];
    spec.federates_with_all = true;
    let grouped = reg.create_entry(ACTOR, &spec).await.unwrap();

    // Entries reaching the trust domain only through a group or `all` do not block the delete.
    let before = reg.latest_revision().await.unwrap();
    assert_eq!(
        reg.delete_relationship(ACTOR, &td("a.example"), false)
            .await
            .unwrap(),
        Vec::<DetachedEntry>::new()
    );
    let groups = reg.list_federation_groups().await.unwrap();
    let groups: Vec<(&str, Vec<&str>)> = groups
        .iter()
        .map(|g| (g.name.as_str(), members(g)))
        .collect();
    assert_eq!(
        groups,
        [
            ("one", vec!["b.example"]),
            ("three", vec!["b.example"]),
            ("two", vec![]),
        ]
    );
    assert_eq!(
        changes_after(reg, before).await,
        [
            (ChangeKind::Federation, "a.example".to_owned()),
            (ChangeKind::FederationGroup, "one".to_owned()),
            (ChangeKind::FederationGroup, "two".to_owned()),
        ]
        .into()
    );
    let scope = reg.federation_scope().await.unwrap();
    assert_eq!(
        scope.effective_federates_with(&grouped.spec),
        [td("b.example")]
    );
    assert_eq!(reg.get_entry(grouped.id).await.unwrap(), Some(grouped));
    let audit = &reg.list_audit(1).await.unwrap()[0];
    assert_eq!(audit.action, "federation.delete");
    assert_eq!(
        audit.details["groups_updated"],
        serde_json::json!(["one", "two"])
    );
}

/// Upgrading a SQLite database of the first schema (the change feed table is rebuilt) keeps
/// its change feed and entries; old entries federate with no groups and not with all.
#[tokio::test]
async fn sqlite_upgrade_to_federation_groups_keeps_data() {
    let db = fedhub_tests::sqlite::TempSqlite::new("old.db");
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{}?mode=rwc", db.url()))
        .await
        .unwrap();
    SQLITE_MIGRATOR.run_to(1, &pool).await.unwrap();
    let entry_id = uuid::Uuid::new_v4();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "UPDATE change_head SET revision = 2; \
         INSERT INTO changes (revision, at, kind, key) VALUES \
         (1, 100, 'bundle', 'example.org'), (2, 200, 'entry', '{entry_id}'); \
         INSERT INTO entries (id, spiffe_id, parent_id, selectors, identity_key, dns_names, \
         revision, created_at, updated_at) VALUES ('{entry_id}', 'spiffe://example.org/w', \
         'spiffe://example.org/agent', '[\"unix:uid:1\"]', 'key', '[]', 1, 200, 200);"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let reg = Registry::open_sqlite(db.path()).await.unwrap();
    let summary: Vec<(u64, ChangeKind, String)> = reg
        .changes_since(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.revision, c.kind, c.key))
        .collect();
    assert_eq!(
        summary,
        [
            (1, ChangeKind::Bundle, "example.org".to_owned()),
            (2, ChangeKind::Entry, entry_id.to_string()),
        ]
    );
    let old = reg.get_entry(entry_id).await.unwrap().unwrap();
    assert!(old.spec.federates_with_groups.is_empty());
    assert!(!old.spec.federates_with_all);
    reg.create_federation_group(ACTOR, "partners", &[])
        .await
        .unwrap();
    let last = reg.changes_since(2, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(
        (last[0].revision, last[0].kind),
        (3, ChangeKind::FederationGroup)
    );
}

// --- the own bundle of several replicas -----------------------------------------------------

/// A fresh self-signed CA root of `example.org`.
fn x509_authority() -> fedhub_core::X509Authority {
    let key = fedhub_core::PrivateKey::generate(fedhub_core::KeyType::EcP256).unwrap();
    fedhub_core::CaSigner::self_signed(&fedhub_core::CaParams::new(td("example.org")), key)
        .unwrap()
        .root_authority()
        .unwrap()
}

/// A fresh JWT key with id `kid`.
fn jwt_authority(kid: &str) -> fedhub_core::JwtAuthority {
    let key = fedhub_core::PrivateKey::generate(fedhub_core::KeyType::EcP256).unwrap();
    let public = fedhub_core::PublicKey::from_spki_der(&key.public_key_der().unwrap()).unwrap();
    fedhub_core::JwtAuthority::new(kid, public)
}

/// What replica `id` publishes: one X.509 root and one JWT key per expiry given.
fn replica(id: &str, expiries: &[OffsetDateTime]) -> ReplicaAuthorities {
    ReplicaAuthorities {
        replica_id: id.to_owned(),
        trust_domain: td("example.org"),
        x509: expiries.iter().map(|at| (x509_authority(), *at)).collect(),
        jwt: expiries
            .iter()
            .enumerate()
            .map(|(i, at)| (jwt_authority(&format!("{id}-{i}")), *at))
            .collect(),
        refresh_hint: Some(Duration::from_secs(300)),
    }
}

/// Whether `bundle` holds every authority `replica` publishes.
fn holds_all(bundle: &fedhub_core::Bundle, replica: &ReplicaAuthorities) -> bool {
    replica
        .x509
        .iter()
        .all(|(a, _)| bundle.x509_authorities().contains(a))
        && replica
            .jwt
            .iter()
            .all(|(a, _)| bundle.jwt_authority(a.kid()) == Some(a))
}

/// Whether `bundle` holds any authority `replica` publishes.
fn holds_any(bundle: &fedhub_core::Bundle, replica: &ReplicaAuthorities) -> bool {
    replica
        .x509
        .iter()
        .any(|(a, _)| bundle.x509_authorities().contains(a))
        || replica
            .jwt
            .iter()
            .any(|(a, _)| bundle.jwt_authority(a.kid()).is_some())
}

async fn stored_own(reg: &Registry) -> fedhub_core::Bundle {
    let record = reg.get_bundle(&td("example.org")).await.unwrap().unwrap();
    let bundle =
        fedhub_core::Bundle::from_json(td("example.org"), record.document.as_bytes()).unwrap();
    assert_eq!(bundle.sequence(), record.sequence);
    bundle
}

async fn own_bundle_is_the_union_of_every_replicas_authorities(db: TestDb) {
    let reg = &db.registry;
    let day = now() + time::Duration::days(1);
    let a = replica("replica-a", &[day]);
    let mut b = replica("replica-b", &[day]);
    b.refresh_hint = Some(Duration::from_secs(60));

    let first = reg
        .publish_replica_authorities(ACTOR, &a, now())
        .await
        .unwrap();
    assert!(first.changed);
    assert_eq!(first.record.sequence, Some(1));
    assert!(holds_all(&first.bundle, &a));

    let other = db.reopen().await;
    let second = other
        .publish_replica_authorities(ACTOR, &b, now())
        .await
        .unwrap();
    assert!(second.changed);
    assert_eq!(second.record.sequence, Some(2));
    assert!(holds_all(&second.bundle, &a), "replica a's keys kept");
    assert!(holds_all(&second.bundle, &b));
    assert_eq!(second.bundle.x509_authorities().len(), 2);
    assert_eq!(second.bundle.jwt_authorities().len(), 2);
    assert_eq!(
        second.bundle.refresh_hint(),
        Some(Duration::from_secs(60)),
        "the shortest hint of the replicas"
    );
    assert_eq!(second.next_expiry, Some(day));
    assert_eq!(stored_own(reg).await, second.bundle);

    // The change reaches the other replicas through the feed.
    let changes = reg.changes_since(0, 100).await.unwrap();
    let bundle_changes: Vec<u64> = changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Bundle && c.key == "example.org")
        .map(|c| c.revision)
        .collect();
    assert_eq!(bundle_changes.len(), 2);

    // Publishing the same keys again changes nothing and writes no change.
    let revision = reg.latest_revision().await.unwrap();
    let again = reg
        .publish_replica_authorities(ACTOR, &a, now())
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(
        again.record, second.record,
        "the stored document stays as is"
    );
    assert_eq!(reg.latest_revision().await.unwrap(), revision);

    // A rotation on replica a keeps replica b's keys.
    let mut rotated = a.clone();
    rotated.x509.push((x509_authority(), day));
    rotated.jwt.push((jwt_authority("replica-a-next"), day));
    let third = reg
        .publish_replica_authorities(ACTOR, &rotated, now())
        .await
        .unwrap();
    assert!(third.changed);
    assert_eq!(third.record.sequence, Some(3));
    assert!(holds_all(&third.bundle, &rotated));
    assert!(holds_all(&third.bundle, &b));
    assert_eq!(third.bundle.x509_authorities().len(), 3);

    let replicas = reg.list_bundle_replicas(&td("example.org")).await.unwrap();
    let ids: Vec<&str> = replicas.iter().map(|r| r.replica_id.as_str()).collect();
    assert_eq!(ids, ["replica-a", "replica-b"]);
    assert_eq!(replicas[0].authorities.len(), 4);
    assert_eq!(replicas[1].authorities.len(), 2);
    assert_eq!(replicas[1].refresh_hint, Some(Duration::from_secs(60)));
    assert!(
        replicas[1]
            .authorities
            .iter()
            .any(|x| x.kind == AuthorityKind::Jwt && x.key_id == "replica-b-0")
    );

    let audit = reg.list_audit(10).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == fedhub_registry::OWN_BUNDLE_PUBLISH)
            .count(),
        3,
        "each change is audited, the no-op is not"
    );
}

async fn expired_authorities_and_replicas_leave_the_own_bundle(db: TestDb) {
    let reg = &db.registry;
    let start = now();
    let soon = start + time::Duration::minutes(10);
    let day = start + time::Duration::days(1);
    // Replica a holds a retiring key (expiring soon) and a current one.
    let a = replica("replica-a", &[soon, day]);
    // Replica b stopped: its only keys expire soon.
    let b = replica("replica-b", &[soon]);
    reg.publish_replica_authorities(ACTOR, &b, start)
        .await
        .unwrap();
    let published = reg
        .publish_replica_authorities(ACTOR, &a, start)
        .await
        .unwrap();
    assert_eq!(published.bundle.x509_authorities().len(), 3);
    assert_eq!(published.next_expiry, Some(soon));
    assert_eq!(
        reg.next_authority_expiry(&td("example.org")).await.unwrap(),
        Some(soon)
    );

    // Replica a publishes again once they expired (as the hub's housekeeping does).
    let later = soon + time::Duration::seconds(1);
    let after = reg
        .publish_replica_authorities(ACTOR, &a, later)
        .await
        .unwrap();
    assert!(after.changed);
    assert_eq!(
        after.record.sequence,
        Some(published.record.sequence.unwrap() + 1)
    );
    assert!(
        !holds_any(&after.bundle, &b),
        "the stopped replica's keys left"
    );
    assert!(after.bundle.x509_authorities().contains(&a.x509[1].0));
    assert!(
        !after.bundle.x509_authorities().contains(&a.x509[0].0),
        "a's own expired key left"
    );
    assert_eq!(after.bundle.x509_authorities().len(), 1);
    assert_eq!(after.bundle.jwt_authorities().len(), 1);
    assert_eq!(after.next_expiry, Some(day));
    assert_eq!(stored_own(reg).await, after.bundle);

    let replicas = reg.list_bundle_replicas(&td("example.org")).await.unwrap();
    assert_eq!(replicas.len(), 1, "the replica without keys was collected");
    assert_eq!(replicas[0].replica_id, "replica-a");
    assert_eq!(replicas[0].authorities.len(), 2);

    // Keys already expired are never recorded.
    let late = replica("replica-c", &[start]);
    let published = reg
        .publish_replica_authorities(ACTOR, &late, later)
        .await
        .unwrap();
    assert!(!published.changed);
    assert!(!holds_any(&published.bundle, &late));
    assert_eq!(
        reg.list_bundle_replicas(&td("example.org"))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn concurrent_publications_lose_no_replicas_keys(db: TestDb) {
    const REPLICAS: usize = 6;
    const ROUNDS: usize = 4;
    let day = now() + time::Duration::days(1);
    let mut handles = vec![db.registry.clone()];
    for _ in 1..3 {
        handles.push(db.reopen().await);
    }
    // Every replica rotates ROUNDS times, all at once, each through a registry handle of its
    // own pool (as replicas in other processes would).
    let mut tasks = Vec::new();
    for r in 0..REPLICAS {
        let reg = handles[r % handles.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut publication = replica(&format!("replica-{r}"), &[day]);
            for _ in 0..ROUNDS {
                publication.x509.push((x509_authority(), day));
                reg.publish_replica_authorities(ACTOR, &publication, now())
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
            publication
        }));
    }
    let mut publications = Vec::new();
    for task in tasks {
        publications.push(task.await.unwrap());
    }
    let bundle = stored_own(&db.registry).await;
    for publication in &publications {
        assert!(
            holds_all(&bundle, publication),
            "{} lost keys",
            publication.replica_id
        );
    }
    assert_eq!(bundle.x509_authorities().len(), REPLICAS * (ROUNDS + 1));
    assert_eq!(bundle.jwt_authorities().len(), REPLICAS);
    // Every publication changed the union: one sequence number each.
    assert_eq!(bundle.sequence(), Some((REPLICAS * ROUNDS) as u64));
}

async fn replica_publications_are_validated(db: TestDb) {
    let reg = &db.registry;
    let day = now() + time::Duration::days(1);
    for bad in [
        "",
        "has space",
        "slash/y",
        &"x".repeat(MAX_REPLICA_ID_LEN + 1),
    ] {
        let error = reg
            .publish_replica_authorities(ACTOR, &replica(bad, &[day]), now())
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                RegistryError::Invalid {
                    field: "replica id",
                    ..
                }
            ),
            "{bad:?}: {error}"
        );
    }
    let mut none = replica("replica-a", &[]);
    none.x509.clear();
    assert!(matches!(
        reg.publish_replica_authorities(ACTOR, &none, now())
            .await
            .unwrap_err(),
        RegistryError::Invalid { .. }
    ));
    assert_eq!(reg.get_bundle(&td("example.org")).await.unwrap(), None);
    assert_eq!(reg.latest_revision().await.unwrap(), 0);
}
