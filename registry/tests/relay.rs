//! Relationships through a relay: the source is stored, kept by spec updates, and a move
//! between relay and direct keeps the stored bundle and the refresh status. Every test runs on
//! SQLite and on PostgreSQL (see `common`).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a failed test"
)]

#[macro_use]
#[expect(dead_code, reason = "the fixtures are shared with the registry suite")]
mod common;

use common::{ACTOR, TestDb, bundle, spiffe_relationship, web_relationship};
use fedhub_core::endpoint::FetchSource;
use fedhub_registry::RelationshipOptions;
use sqlx::Row;

both_backends!(
    relationship_source_is_stored_and_defaults_to_direct,
    moving_between_relay_and_direct_keeps_the_bundle,
    the_stored_source_is_direct_or_relay_only,
);

fn relay() -> RelationshipOptions {
    RelationshipOptions {
        source: FetchSource::Relay,
        ..RelationshipOptions::default()
    }
}

async fn relationship_source_is_stored_and_defaults_to_direct(db: TestDb) {
    let reg = &db.registry;
    let direct = reg
        .create_relationship(ACTOR, &web_relationship("direct.example"), None)
        .await
        .unwrap();
    assert_eq!(direct.options.source, FetchSource::Direct);
    let relayed = reg
        .create_relationship_with_options(
            ACTOR,
            &spiffe_relationship("relayed.example"),
            relay(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(relayed.options.source, FetchSource::Relay);
    let listed: Vec<(String, FetchSource)> = reg
        .list_relationships()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.spec.trust_domain.to_string(), r.options.source))
        .collect();
    assert_eq!(
        listed,
        [
            ("direct.example".to_owned(), FetchSource::Direct),
            ("relayed.example".to_owned(), FetchSource::Relay),
        ]
    );
    // Read back from a fresh handle: stored, not cached.
    let reopened = db.reopen().await;
    let read = reopened
        .get_relationship(&relayed.spec.trust_domain)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.options, relay());

    let audit = reg.list_audit(10).await.unwrap();
    let created = audit
        .iter()
        .find(|e| e.target == "relayed.example" && e.action == "federation.create")
        .unwrap();
    assert_eq!(created.details["source"], "relay");
}

async fn moving_between_relay_and_direct_keeps_the_bundle(db: TestDb) {
    let reg = &db.registry;
    let spec = spiffe_relationship("moving.example");
    let bootstrap = bundle("moving.example", 7, "good");
    reg.create_relationship(ACTOR, &spec, Some(&bootstrap))
        .await
        .unwrap();

    // To the relay: a different URL and the source; the bundle and its sequence stay.
    let mut via_relay = spec.clone();
    via_relay.bundle_endpoint_url = "https://relay.example:8443/maps/all".parse().unwrap();
    let moved = reg
        .update_relationship_with_options(ACTOR, &via_relay, relay())
        .await
        .unwrap();
    assert_eq!(moved.options.source, FetchSource::Relay);
    assert_eq!(moved.status.next_refresh_at, None, "due at once");
    let kept = reg.get_bundle(&spec.trust_domain).await.unwrap().unwrap();
    assert_eq!(kept.document, bootstrap.document);
    assert_eq!(kept.sequence, Some(7));

    // A spec-only update keeps the source.
    let again = reg.update_relationship(ACTOR, &via_relay).await.unwrap();
    assert_eq!(again.options.source, FetchSource::Relay);

    // And back to direct: still the same bundle.
    let back = reg
        .update_relationship_with_options(ACTOR, &spec, RelationshipOptions::default())
        .await
        .unwrap();
    assert_eq!(back.options.source, FetchSource::Direct);
    let kept = reg.get_bundle(&spec.trust_domain).await.unwrap().unwrap();
    assert_eq!(kept.document, bootstrap.document);
    assert_eq!(kept.sequence, Some(7));
}

async fn the_stored_source_is_direct_or_relay_only(db: TestDb) {
    let reg = &db.registry;
    let spec = web_relationship("odd.example");
    reg.create_relationship(ACTOR, &spec, None).await.unwrap();
    // The CHECK constraint keeps other values out of the column.
    let pool = db.raw().await;
    let refused = sqlx::query(
        "UPDATE federation_relationships SET source = 'carrier-pigeon' WHERE trust_domain = $1",
    )
    .bind("odd.example")
    .execute(&pool)
    .await;
    assert!(refused.is_err(), "the CHECK constraint refuses it");
    let row = sqlx::query("SELECT source FROM federation_relationships WHERE trust_domain = $1")
        .bind("odd.example")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("source"), "direct");
}
