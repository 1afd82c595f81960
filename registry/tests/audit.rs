//! The audit trail of bundle changes: every change of a stored bundle, foreign (federation
//! refresh, `bundle set`, `bundle delete`) and own (publication, key activation and
//! retirement), is audited with the actor, old and new sequence and the authorities added and
//! removed; nothing is audited when nothing changed. Every test runs on SQLite and PostgreSQL.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed step is a failed test, and scenarios read top to bottom"
)]

#[macro_use]
#[expect(dead_code, reason = "the fixtures are shared with the registry suite")]
mod common;

use std::time::Duration;

use common::{ACTOR, TestDb, td, web_relationship};
use fedhub_core::{Bundle, JwtAuthority, X509Authority};
use fedhub_registry::{
    AuditEvent, AuditQuery, AuthorityKind, BUNDLE_DELETE, BUNDLE_SET, BUNDLE_UPDATE, BundleRecord,
    KeyActivation, OWN_BUNDLE_ACTIVATE, OWN_BUNDLE_PUBLISH, OWN_BUNDLE_RETIRE, RefreshRecorded,
    RefreshSuccess, Registry, ReplicaAuthorities, SequenceSeen,
};
use serde_json::json;
use time::OffsetDateTime;

both_backends!(
    federation_refresh_audits_a_replaced_bundle_and_nothing_else,
    bundle_set_and_delete_audit_the_change,
    relationship_bundles_are_audited_as_set_and_delete,
    own_bundle_publication_activation_and_retirement_are_audited,
    audit_events_filter_by_trust_domain_and_page_back,
);

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().truncate_to_second()
}

/// A fresh self-signed CA of `name` as an X.509 authority.
fn x509(name: &str) -> X509Authority {
    let key = fedhub_core::PrivateKey::generate(fedhub_core::KeyType::EcP256).unwrap();
    fedhub_core::CaSigner::self_signed(&fedhub_core::CaParams::new(td(name)), key)
        .unwrap()
        .root_authority()
        .unwrap()
}

/// A fresh JWT key with id `kid`.
fn jwt(kid: &str) -> JwtAuthority {
    let key = fedhub_core::PrivateKey::generate(fedhub_core::KeyType::EcP256).unwrap();
    let public = fedhub_core::PublicKey::from_spki_der(&key.public_key_der().unwrap()).unwrap();
    JwtAuthority::new(kid, public)
}

/// A bundle record of `name` with these authorities and `sequence`.
fn record(
    name: &str,
    sequence: u64,
    x509: &[&X509Authority],
    jwt: &[&JwtAuthority],
) -> BundleRecord {
    let mut bundle = Bundle::new(td(name));
    for authority in x509 {
        bundle.add_x509_authority((*authority).clone());
    }
    for authority in jwt {
        bundle.add_jwt_authority((*authority).clone());
    }
    bundle.set_sequence(Some(sequence));
    BundleRecord::new(td(name), bundle.to_json(), Some(sequence))
}

fn fp(authority: &X509Authority) -> String {
    authority.sha256_fingerprint()
}

/// The audit events after the one with id `after` (0: all), oldest first.
async fn events_after(reg: &Registry, after: u64) -> Vec<AuditEvent> {
    let mut events = reg.list_audit(1000).await.unwrap();
    events.retain(|e| e.id > after);
    events.reverse();
    events
}

async fn last_id(reg: &Registry) -> u64 {
    reg.list_audit(1).await.unwrap().first().map_or(0, |e| e.id)
}

async fn federation_refresh_audits_a_replaced_bundle_and_nothing_else(db: TestDb) {
    let reg = &db.registry;
    let partner = td("partner.example");
    let (a, b) = (x509("partner.example"), x509("partner.example"));
    let (k1, k2) = (jwt("k1"), jwt("k2"));
    let boot = record("partner.example", 1, &[&a], &[&k1]);
    reg.create_relationship(ACTOR, &web_relationship("partner.example"), Some(&boot))
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let later = now() + time::Duration::hours(1);
    let refresh = async |bundle: Option<BundleRecord>| {
        reg.claim_refresh(&partner, "hub-a", now(), lease)
            .await
            .unwrap()
            .unwrap();
        let based_on = reg
            .get_bundle_with_revision(&partner)
            .await
            .unwrap()
            .map(|stored| stored.revision);
        let success = RefreshSuccess {
            based_on,
            bundle,
            etag: Some("\"e\"".into()),
            sequence: SequenceSeen::Present,
            next_refresh_at: later,
        };
        reg.record_refresh_success(&partner, "hub-a", &success)
            .await
            .unwrap()
    };

    // A new bundle: one X.509 authority added, one JWT key replaced.
    let start = last_id(reg).await;
    let fetched = record("partner.example", 2, &[&a, &b], &[&k2]);
    assert_eq!(
        refresh(Some(fetched.clone())).await,
        RefreshRecorded::Replaced
    );
    let events = events_after(reg, start).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.action, BUNDLE_UPDATE);
    assert_eq!(event.actor, "federation-manager:hub-a");
    assert_eq!(event.target, "partner.example");
    assert_eq!(
        event.details,
        json!({
            "trust_domain": "partner.example",
            "old_sequence": 1,
            "new_sequence": 2,
            "x509_authorities_added": [fp(&b)],
            "x509_authorities_removed": [],
            "jwt_authorities_added": ["k2"],
            "jwt_authorities_removed": ["k1"],
        })
    );

    // The same bundle fetched again, and a 304: no event.
    let start = last_id(reg).await;
    assert_eq!(refresh(Some(fetched)).await, RefreshRecorded::Kept);
    assert_eq!(refresh(None).await, RefreshRecorded::Kept);
    assert!(
        events_after(reg, start).await.is_empty(),
        "unchanged: no event"
    );

    // A removal.
    let shrunk = record("partner.example", 3, &[&b], &[&k2]);
    assert_eq!(refresh(Some(shrunk)).await, RefreshRecorded::Replaced);
    let events = events_after(reg, start).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].details["old_sequence"], 2);
    assert_eq!(events[0].details["new_sequence"], 3);
    assert_eq!(
        events[0].details["x509_authorities_removed"],
        json!([fp(&a)])
    );
    assert_eq!(events[0].details["x509_authorities_added"], json!([]));
    assert_eq!(events[0].details["jwt_authorities_removed"], json!([]));
}

async fn bundle_set_and_delete_audit_the_change(db: TestDb) {
    let reg = &db.registry;
    let (a, b) = (x509("static.example"), x509("static.example"));
    let k1 = jwt("k1");

    let first = record("static.example", 1, &[&a], &[&k1]);
    reg.put_bundle("uid:1000", &first).await.unwrap();
    let events = events_after(reg, 0).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].action, BUNDLE_SET);
    assert_eq!(events[0].actor, "uid:1000");
    assert_eq!(events[0].target, "static.example");
    assert_eq!(
        events[0].details,
        json!({
            "trust_domain": "static.example",
            "old_sequence": null,
            "new_sequence": 1,
            "x509_authorities_added": [fp(&a)],
            "x509_authorities_removed": [],
            "jwt_authorities_added": ["k1"],
            "jwt_authorities_removed": [],
            "changed": true,
        })
    );

    // The same bundle again: an admin write, audited, that changed nothing.
    let start = last_id(reg).await;
    reg.put_bundle("uid:1000", &first).await.unwrap();
    let events = events_after(reg, start).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].details["changed"], false);
    assert_eq!(events[0].details["old_sequence"], 1);
    assert_eq!(events[0].details["new_sequence"], 1);
    assert_eq!(events[0].details["x509_authorities_added"], json!([]));
    assert_eq!(events[0].details["jwt_authorities_added"], json!([]));

    // A rotation by hand.
    let start = last_id(reg).await;
    let second = record("static.example", 2, &[&b], &[&k1]);
    reg.put_bundle("uid:1000", &second).await.unwrap();
    let events = events_after(reg, start).await;
    assert_eq!(events[0].details["x509_authorities_added"], json!([fp(&b)]));
    assert_eq!(
        events[0].details["x509_authorities_removed"],
        json!([fp(&a)])
    );
    assert_eq!(events[0].details["jwt_authorities_removed"], json!([]));
    assert_eq!(events[0].details["changed"], true);

    // A deletion removes everything.
    let start = last_id(reg).await;
    reg.delete_bundle("uid:1001", &td("static.example"))
        .await
        .unwrap();
    let events = events_after(reg, start).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].action, BUNDLE_DELETE);
    assert_eq!(events[0].actor, "uid:1001");
    assert_eq!(events[0].details["old_sequence"], 2);
    assert_eq!(events[0].details["new_sequence"], json!(null));
    assert_eq!(
        events[0].details["x509_authorities_removed"],
        json!([fp(&b)])
    );
    assert_eq!(events[0].details["jwt_authorities_removed"], json!(["k1"]));
    assert!(events[0].details.get("force").is_none());
}

async fn relationship_bundles_are_audited_as_set_and_delete(db: TestDb) {
    let reg = &db.registry;
    let a = x509("partner.example");
    let boot = record("partner.example", 4, &[&a], &[]);
    reg.create_relationship("uid:7", &web_relationship("partner.example"), Some(&boot))
        .await
        .unwrap();
    let events = events_after(reg, 0).await;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, [BUNDLE_SET, "federation.create"]);
    assert_eq!(events[0].actor, "uid:7");
    assert_eq!(events[0].details["new_sequence"], 4);
    assert_eq!(events[0].details["x509_authorities_added"], json!([fp(&a)]));

    let start = last_id(reg).await;
    reg.delete_relationship("uid:7", &td("partner.example"), false)
        .await
        .unwrap();
    let events = events_after(reg, start).await;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, [BUNDLE_DELETE, "federation.delete"]);
    assert_eq!(events[0].details["old_sequence"], 4);
    assert_eq!(
        events[0].details["x509_authorities_removed"],
        json!([fp(&a)])
    );

    // Without a bundle, nothing but the relationship is audited.
    reg.create_relationship("uid:7", &web_relationship("bare.example"), None)
        .await
        .unwrap();
    let start = last_id(reg).await;
    reg.delete_relationship("uid:7", &td("bare.example"), false)
        .await
        .unwrap();
    let events = events_after(reg, start).await;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["federation.delete"]);
}

fn replica(x509: &[&X509Authority], jwt: &[&JwtAuthority]) -> ReplicaAuthorities {
    let expiry = now() + time::Duration::hours(1);
    ReplicaAuthorities {
        replica_id: "replica-a".into(),
        trust_domain: td("example.org"),
        x509: x509.iter().map(|a| ((*a).clone(), expiry)).collect(),
        jwt: jwt.iter().map(|a| ((*a).clone(), expiry)).collect(),
        refresh_hint: Some(Duration::from_secs(300)),
    }
}

async fn own_bundle_publication_activation_and_retirement_are_audited(db: TestDb) {
    let reg = &db.registry;
    let (a, b) = (x509("example.org"), x509("example.org"));
    let (k1, k2) = (jwt("k1"), jwt("k2"));
    let actor = "fedhub-hub:replica-a";

    // The first publication.
    reg.publish_replica_authorities(actor, &replica(&[&a], &[&k1]), now())
        .await
        .unwrap();
    let events = events_after(reg, 0).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].action, OWN_BUNDLE_PUBLISH);
    assert_eq!(events[0].actor, actor);
    assert_eq!(events[0].target, "example.org");
    assert_eq!(
        events[0].details,
        json!({
            "trust_domain": "example.org",
            "replica_id": "replica-a",
            "old_sequence": null,
            "new_sequence": 1,
            "x509_authorities_added": [fp(&a)],
            "x509_authorities_removed": [],
            "jwt_authorities_added": ["k1"],
            "jwt_authorities_removed": [],
        })
    );

    // Published again unchanged: no event.
    let start = last_id(reg).await;
    let published = reg
        .publish_replica_authorities(actor, &replica(&[&a], &[&k1]), now())
        .await
        .unwrap();
    assert!(!published.changed);
    assert!(
        events_after(reg, start).await.is_empty(),
        "unchanged: no event"
    );

    // New keys prepared (published, not signing): an admin's rotation.
    reg.publish_replica_authorities("uid:0", &replica(&[&a, &b], &[&k1, &k2]), now())
        .await
        .unwrap();
    let events = events_after(reg, start).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].actor, "uid:0");
    assert_eq!(events[0].details["old_sequence"], 1);
    assert_eq!(events[0].details["new_sequence"], 2);
    assert_eq!(events[0].details["x509_authorities_added"], json!([fp(&b)]));
    assert_eq!(events[0].details["jwt_authorities_added"], json!(["k2"]));
    assert_eq!(events[0].details["x509_authorities_removed"], json!([]));

    // They begin signing and the old ones retire: two events in one write, no bundle change.
    let start = last_id(reg).await;
    let revision = reg.latest_revision().await.unwrap();
    let activation = KeyActivation {
        replica_id: "replica-a".into(),
        trust_domain: td("example.org"),
        activated: vec![
            (AuthorityKind::X509, fp(&b)),
            (AuthorityKind::Jwt, "k2".into()),
        ],
        retired: vec![
            (AuthorityKind::X509, fp(&a)),
            (AuthorityKind::Jwt, "k1".into()),
        ],
    };
    reg.record_key_activation(actor, &activation).await.unwrap();
    let events = events_after(reg, start).await;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, [OWN_BUNDLE_ACTIVATE, OWN_BUNDLE_RETIRE]);
    assert_eq!(
        events[0].details,
        json!({
            "trust_domain": "example.org",
            "replica_id": "replica-a",
            "old_sequence": 2,
            "new_sequence": 2,
            "x509_authorities_added": [],
            "x509_authorities_removed": [],
            "jwt_authorities_added": [],
            "jwt_authorities_removed": [],
            "x509_keys": [fp(&b)],
            "jwt_keys": ["k2"],
        })
    );
    assert_eq!(events[1].details["x509_keys"], json!([fp(&a)]));
    assert_eq!(events[1].details["jwt_keys"], json!(["k1"]));
    assert_eq!(
        reg.latest_revision().await.unwrap(),
        revision,
        "no change-feed entry: agents see nothing new"
    );

    // Nothing changed state: nothing is written.
    let start = last_id(reg).await;
    let nothing = KeyActivation {
        activated: vec![],
        retired: vec![],
        ..activation
    };
    reg.record_key_activation(actor, &nothing).await.unwrap();
    assert!(events_after(reg, start).await.is_empty());

    // The old keys expire and leave the bundle.
    let start = last_id(reg).await;
    reg.publish_replica_authorities(actor, &replica(&[&b], &[&k2]), now())
        .await
        .unwrap();
    let events = events_after(reg, start).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].action, OWN_BUNDLE_PUBLISH);
    assert_eq!(
        events[0].details["x509_authorities_removed"],
        json!([fp(&a)])
    );
    assert_eq!(events[0].details["jwt_authorities_removed"], json!(["k1"]));
    assert_eq!(events[0].details["new_sequence"], 3);
}

async fn audit_events_filter_by_trust_domain_and_page_back(db: TestDb) {
    let reg = &db.registry;
    for sequence in 1..=3 {
        for name in ["one.example", "two.example"] {
            reg.put_bundle(ACTOR, &record(name, sequence, &[], &[]))
                .await
                .unwrap();
        }
    }
    let query = |trust_domain: Option<&str>, before: Option<u64>, limit: u32| AuditQuery {
        trust_domain: trust_domain.map(td),
        before,
        limit,
    };
    let sequences = |events: &[AuditEvent]| -> Vec<(String, u64)> {
        events
            .iter()
            .map(|e| {
                (
                    e.target.clone(),
                    e.details["new_sequence"].as_u64().unwrap(),
                )
            })
            .collect()
    };

    let all = reg.audit_events(&query(None, None, 100)).await.unwrap();
    assert_eq!(all.len(), 6);
    let one = reg
        .audit_events(&query(Some("one.example"), None, 100))
        .await
        .unwrap();
    assert_eq!(
        sequences(&one),
        [
            ("one.example".to_owned(), 3),
            ("one.example".to_owned(), 2),
            ("one.example".to_owned(), 1)
        ],
        "only its events, newest first"
    );
    let newest = reg
        .audit_events(&query(Some("two.example"), None, 1))
        .await
        .unwrap();
    assert_eq!(sequences(&newest), [("two.example".to_owned(), 3)]);
    let older = reg
        .audit_events(&query(Some("two.example"), Some(newest[0].id), 10))
        .await
        .unwrap();
    assert_eq!(
        sequences(&older),
        [("two.example".to_owned(), 2), ("two.example".to_owned(), 1)],
        "paging back from the last id read"
    );
    let page = reg
        .audit_events(&query(None, Some(all[1].id), 2))
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].id, all[2].id);
    assert!(
        reg.audit_events(&query(Some("three.example"), None, 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        reg.audit_events(&query(None, None, u32::MAX))
            .await
            .unwrap()
            .len(),
        6,
        "a huge limit is capped, not refused"
    );
}
