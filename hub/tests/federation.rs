//! The federation manager against real TLS bundle endpoints on loopback: two hubs federating
//! both ways, key rollover, hostile endpoints, scheduling, and replicas sharing one database.

#![expect(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "test code: a failed step is a failed test, and scenarios read top to bottom"
)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use fedhub_core::bundle::X509Authority;
use fedhub_core::endpoint::BundleEndpointUrl;
use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_hub::Hub;
use fedhub_hub::admin::{AdminSocket, AdminState, AllowedPeers, serve_admin};
use fedhub_hub::federation::telemetry::{
    BUNDLE_AGE_SECONDS, CONSECUTIVE_FAILURES, SEQUENCE_DROPPED_TOTAL,
};
use fedhub_hub::federation::{
    FederationError, FederationManager, FederationOptions, RefreshOutcome,
};
use fedhub_registry::{FetchProfile, RelationshipOptions, RelationshipSpec, SequenceSeen};
use fedhub_serve::SwappableCert;

// --- two hubs -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_federate_both_ways_and_follow_key_rollover() {
    recorded();
    let (alpha, _alpha_dir) = open_hub("alpha.test", "1s").await;
    let (beta, _beta_dir) = open_hub("beta.test", "1s").await;
    let alpha_endpoint = Server::bundle_endpoint(&alpha).await;
    let beta_endpoint = Server::bundle_endpoint(&beta).await;
    let alpha_manager = FederationManager::new(alpha.clone(), options("alpha-1")).unwrap();
    let beta_manager = FederationManager::new(beta.clone(), options("beta-1")).unwrap();
    let runs = [run(&alpha_manager), run(&beta_manager)];

    // Created while the managers run: picked up by their next poll. Bootstrapped with each
    // other's bundle (FED-19), one-way each (FED-7).
    let (a, b) = (alpha.trust_domain().clone(), beta.trust_domain().clone());
    beta.registry()
        .create_relationship(
            ACTOR,
            &spiffe_spec(&a, &alpha_endpoint.url, alpha.hub_id()),
            Some(&record(&alpha.own_bundle())),
        )
        .await
        .unwrap();
    alpha
        .registry()
        .create_relationship(
            ACTOR,
            &spiffe_spec(&b, &beta_endpoint.url, beta.hub_id()),
            Some(&record(&beta.own_bundle())),
        )
        .await
        .unwrap();
    eventually(
        "both sides to refresh",
        Duration::from_secs(10),
        async || {
            status(&beta, &a).await.last_success_at.is_some()
                && status(&alpha, &b).await.last_success_at.is_some()
        },
    )
    .await;
    assert_eq!(stored(&beta, &a).await, Some((*alpha.own_bundle()).clone()));
    assert_eq!(stored(&alpha, &b).await, Some((*beta.own_bundle()).clone()));
    assert_eq!(
        stored(&alpha, &a).await,
        Some((*alpha.own_bundle()).clone())
    );
    let refreshed = status(&beta, &a).await;
    assert_eq!(refreshed.last_error, None);
    assert!(
        refreshed.next_refresh_at.unwrap() <= now() + Duration::from_secs(3),
        "the 1 s hint is followed"
    );

    // Alpha publishes a new CA before it signs with it: beta picks up the new sequence with
    // both authorities.
    alpha.rotate(false).await.unwrap();
    let published = (*alpha.own_bundle()).clone();
    assert_eq!(published.sequence(), Some(2));
    assert_eq!(published.x509_authorities().len(), 2);
    eventually(
        "beta to fetch alpha's new bundle",
        Duration::from_secs(10),
        async || stored(&beta, &a).await.as_ref() == Some(&published),
    )
    .await;

    // Alpha now signs with the new CA, and re-mints the endpoint's SVID with it. The bootstrap
    // bundle does not hold that CA: later fetches verify with the latest fetched bundle
    // (FED-20), so they keep working without any manual step.
    alpha.rotate(true).await.unwrap();
    let activated = now();
    eventually(
        "a refresh after the activation",
        Duration::from_secs(10),
        async || {
            status(&beta, &a)
                .await
                .last_success_at
                .is_some_and(|at| at > activated + Duration::from_secs(1))
        },
    )
    .await;
    let after = status(&beta, &a).await;
    assert_eq!(after.last_error, None);
    assert_eq!(after.consecutive_failures, 0);
    assert_eq!(stored(&beta, &a).await, Some((*alpha.own_bundle()).clone()));
    assert_eq!(stored(&alpha, &b).await, Some((*beta.own_bundle()).clone()));
    assert!(refreshes("alpha.test", "updated") >= 1);
    assert!(refreshes("alpha.test", "not_modified") + refreshes("alpha.test", "unchanged") >= 1);
    assert_eq!(gauge(CONSECUTIVE_FAILURES, "alpha.test"), Some(0.0));
    assert!(gauge(BUNDLE_AGE_SECONDS, "alpha.test").is_some());

    for (stop, task) in runs {
        drop(stop);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the manager stops at shutdown")
            .unwrap();
    }
}

// --- refresh_now and scheduling -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_now_reports_outcomes_and_schedules_by_hint_and_backoff() {
    let options = FederationOptions {
        max_refresh: Duration::from_secs(300),
        ..options("local-1")
    };
    let pair = pair("sched.test", "10m", options).await;
    let endpoint = Server::bundle_endpoint(&pair.remote).await;
    pair.federate(&endpoint.url, Some(&pair.remote_bundle()))
        .await;

    pair.remote.rotate(false).await.unwrap();
    let t = now();
    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Updated {
            sequence: Some(2),
            authorities: 4
        }
    );
    let current = pair.remote_bundle();
    assert_eq!(stored(&pair.local, &pair.td).await, Some(current.clone()));
    let after = status(&pair.local, &pair.td).await;
    assert!(after.etag.is_some());
    assert_eq!(after.lease_owner, None);
    // The 10 min hint, clamped to 5 min, at the relationship's phase.
    assert_on_phase(&pair, after.next_refresh_at, t, 300);
    assert_eq!(gauge(BUNDLE_AGE_SECONDS, "sched.test"), Some(0.0));

    // The stored entity tag is sent: 304. Only the status moves: no change for the agents.
    let revision = pair.local.registry().latest_revision().await.unwrap();
    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Unchanged
    );
    assert_eq!(
        pair.local.registry().latest_revision().await.unwrap(),
        revision
    );
    assert_eq!(refreshes("sched.test", "updated"), 1);
    assert_eq!(refreshes("sched.test", "not_modified"), 1);

    // Endpoint down: the bundle stays; the delay backs off 5 s, 10 s, 20 s, then holds at the
    // 20 s cap.
    endpoint.stop().await;
    for (failures, delay) in [(1, 5), (2, 10), (3, 20), (4, 20)] {
        let t = now();
        pair.assert_refused(&current, "cannot reach the bundle endpoint")
            .await;
        let after = status(&pair.local, &pair.td).await;
        assert_eq!(after.consecutive_failures, failures);
        assert_scheduled(after.next_refresh_at, t, delay);
    }
    assert_eq!(refreshes("sched.test", "fetch_error"), 4);
    assert_eq!(gauge(CONSECUTIVE_FAILURES, "sched.test"), Some(4.0));

    // Back (at a new address): a success resets the backoff, the hint rules again.
    let endpoint = Server::bundle_endpoint(&pair.remote).await;
    pair.local
        .registry()
        .update_relationship(
            ACTOR,
            &spiffe_spec(&pair.td, &endpoint.url, pair.remote.hub_id()),
        )
        .await
        .unwrap();
    let t = now();
    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Unchanged
    );
    assert_eq!(refreshes("sched.test", "unchanged"), 1);
    let after = status(&pair.local, &pair.td).await;
    assert_eq!(after.consecutive_failures, 0);
    assert_eq!(after.last_error, None);
    assert_on_phase(&pair, after.next_refresh_at, t, 300);
    assert_eq!(gauge(CONSECUTIVE_FAILURES, "sched.test"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_now_refuses_while_another_replica_holds_the_lease() {
    let pair = pair("busy.test", "5m", options("local-1")).await;
    let endpoint = Server::bundle_endpoint(&pair.remote).await;
    let bootstrap = pair.remote_bundle();
    pair.federate(&endpoint.url, Some(&bootstrap)).await;
    pair.local
        .registry()
        .claim_refresh(&pair.td, "other-replica", now(), Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let error = pair.manager.refresh_now(&pair.td).await.unwrap_err();
    assert!(
        matches!(&error, FederationError::Busy { holder, .. } if holder == "other-replica"),
        "{error}"
    );
    assert!(error.to_string().contains("other-replica"), "{error}");
    assert_eq!(status(&pair.local, &pair.td).await.last_attempt_at, None);

    let unknown = TrustDomain::new("nowhere.test").unwrap();
    assert!(matches!(
        pair.manager.refresh_now(&unknown).await,
        Err(FederationError::NotFound(td)) if td == unknown
    ));
}

/// `POST /v1/federation/{td}/refresh` through the admin socket: each outcome of the manager
/// keeps its meaning up to the HTTP status. 200 with the refreshed relationship; 404 without
/// the relationship; 500 when the database fails (a trigger refuses the lease); 409 while
/// another replica holds the lease; 502 when the foreign endpoint is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refresh_answers_with_the_status_of_each_outcome() {
    recorded();
    let (remote, _remote_dir) = open_hub("statuses.test", "5m").await;
    let (local, local_dir) = open_hub("local.test", "5m").await;
    let manager = FederationManager::new(local.clone(), options("local-1")).unwrap();
    let endpoint = Server::bundle_endpoint(&remote).await;
    let td = remote.trust_domain().clone();
    local
        .registry()
        .create_relationship(
            ACTOR,
            &spiffe_spec(&td, &endpoint.url, remote.hub_id()),
            Some(&record(&remote.own_bundle())),
        )
        .await
        .unwrap();
    let socket = local_dir.path().join("admin-test/admin.sock");
    let bound = AdminSocket::bind(&socket, AllowedPeers::this_process(&[]).unwrap()).unwrap();
    let state = AdminState::new(local.clone()).with_federation(manager);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_admin(state, bound, async {
        let _ = stopped.await;
    }));

    let (status, body) = admin_refresh(&socket, "statuses.test").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"last_success_at\":\""), "{body}");

    let (status, body) = admin_refresh(&socket, "nowhere.test").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no federation relationship with nowhere.test"),
        "{body}"
    );

    let database = format!(
        "sqlite://{}",
        local_dir.path().join("registry.db").display()
    );
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&database)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER no_leases BEFORE UPDATE OF lease_owner ON federation_relationships \
         BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let (status, body) = admin_refresh(&socket, "statuses.test").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("the federation refresh failed inside the hub: internal error"),
        "{body}"
    );
    assert!(
        !body.contains("disk on fire"),
        "the cause stays in the log: {body}"
    );
    sqlx::query("DROP TRIGGER no_leases")
        .execute(&mut conn)
        .await
        .unwrap();

    local
        .registry()
        .claim_refresh(&td, "other-replica", now(), Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let (status, body) = admin_refresh(&socket, "statuses.test").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("already running on hub replica other-replica"),
        "{body}"
    );
    local
        .registry()
        .record_refresh_failure(&td, "other-replica", "test", SequenceSeen::Unknown, now())
        .await
        .unwrap();

    endpoint.stop().await;
    let (status, body) = admin_refresh(&socket, "statuses.test").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(
            "refreshing the bundle of statuses.test failed: cannot reach the bundle endpoint"
        ),
        "{body}"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Sends `POST /v1/federation/{trust_domain}/refresh` to the admin socket; the status and body.
async fn admin_refresh(socket: &std::path::Path, trust_domain: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let request = format!(
        "POST /v1/federation/{trust_domain}/refresh HTTP/1.1\r\nHost: fedhub\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_owned());
    (status, body)
}

/// FED-32: a bundle an admin sets over a federated one is an override that stays until a
/// refresh replaces it. The stored etag goes with it, so the next refresh is not answered
/// `304` about the bundle the override replaced: it fetches in full, and the acceptance rules
/// decide against the override (the sequence rule included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_set_overrides_until_the_next_refresh_replaces_it() {
    let pair = pair("override.test", "5m", options("local-1")).await;
    let endpoint = Server::bundle_endpoint(&pair.remote).await;
    let served = pair.remote_bundle();
    pair.federate(&endpoint.url, Some(&served)).await;
    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Unchanged
    );
    assert!(status(&pair.local, &pair.td).await.etag.is_some());

    // An override under the served sequence (it must keep the endpoint's CA: the endpoint is
    // authenticated with the stored bundle).
    let mut set = served.clone();
    set.add_x509_authority(X509Authority::parse(ca_cert(&[]).2).unwrap());
    pair.local
        .registry()
        .put_bundle(ACTOR, &record(&set))
        .await
        .unwrap();
    let after_set = status(&pair.local, &pair.td).await;
    assert_eq!(after_set.etag, None, "the next refresh fetches in full");
    assert!(after_set.next_refresh_at.is_some(), "the schedule is kept");
    assert_eq!(stored(&pair.local, &pair.td).await, Some(set));
    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Updated {
            sequence: served.sequence(),
            authorities: served.x509_authorities().len() + served.jwt_authorities().len(),
        }
    );
    assert_eq!(stored(&pair.local, &pair.td).await, Some(served.clone()));

    // An override with a higher sequence than the endpoint serves is kept: the endpoint's
    // bundle is a rollback against it.
    let mut ahead = served.clone();
    ahead.set_sequence(Some(5));
    pair.local
        .registry()
        .put_bundle(ACTOR, &record(&ahead))
        .await
        .unwrap();
    pair.assert_refused(&ahead, "lower than the stored 5").await;
}

/// The bundle age counts from the last successful refresh, not from the last replacement: an
/// endpoint that keeps serving the same, old bundle keeps it young, at the refresh and in the
/// gauges recomputed from the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_age_counts_from_the_last_successful_refresh() {
    let hourly = FederationOptions {
        default_refresh: Duration::from_secs(3600),
        min_refresh: Duration::from_secs(3600),
        max_refresh: Duration::from_secs(3600),
        ..options("local-1")
    };
    let pair = pair("age.test", "5m", hourly).await;
    let endpoint = Server::bundle_endpoint(&pair.remote).await;
    // Stored an hour ago, and served unchanged since.
    let mut old = record(&pair.remote_bundle());
    old.updated_at -= Duration::from_secs(3600);
    pair.local
        .registry()
        .create_relationship(
            ACTOR,
            &spiffe_spec(&pair.td, &endpoint.url, pair.remote.hub_id()),
            Some(&old),
        )
        .await
        .unwrap();

    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Unchanged
    );
    assert_eq!(gauge(BUNDLE_AGE_SECONDS, "age.test"), Some(0.0));
    assert_eq!(
        pair.local
            .registry()
            .get_bundle(&pair.td)
            .await
            .unwrap()
            .unwrap()
            .updated_at,
        old.updated_at,
        "not replaced"
    );

    // The periodic recomputation (at once when the manager starts; nothing is due for an
    // hour) agrees. A marker value shows when it has run.
    metrics::gauge!(BUNDLE_AGE_SECONDS, "trust_domain" => "age.test").set(-1.0);
    let (stop, task) = run(&pair.manager);
    eventually(
        "the gauges to be recomputed",
        Duration::from_secs(5),
        async || gauge(BUNDLE_AGE_SECONDS, "age.test") != Some(-1.0),
    )
    .await;
    let age = gauge(BUNDLE_AGE_SECONDS, "age.test").unwrap();
    assert!((0.0..60.0).contains(&age), "age {age} s");
    drop(stop);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationship_deleted_during_a_fetch_gets_no_bundle_back() {
    let pair = pair("deleted.test", "5m", options("local-1")).await;
    let mut newer = pair.remote_bundle();
    newer.set_sequence(Some(2));
    let stub = stub("/", newer.to_json());
    stub.lock().unwrap().delay = Duration::from_millis(500);
    let server = serve_stub(&stub, pair.remote.server_cert()).await;
    pair.federate(&server.url, Some(&pair.remote_bundle()))
        .await;

    let manager = pair.manager.clone();
    let td = pair.td.clone();
    let refresh = tokio::spawn(async move { manager.refresh_now(&td).await });
    eventually("the fetch to start", Duration::from_secs(5), async || {
        !stub.lock().unwrap().requests.is_empty()
    })
    .await;
    pair.local
        .registry()
        .delete_relationship(ACTOR, &pair.td, false)
        .await
        .unwrap();
    let error = refresh.await.unwrap().unwrap_err();
    assert!(matches!(error, FederationError::Registry(_)), "{error}");
    assert_eq!(
        stored(&pair.local, &pair.td).await,
        None,
        "FED-35: stays deleted"
    );
}

// --- hostile endpoints ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_error_keeps_the_last_good_bundle() {
    let pair = pair("status.test", "5m", options("local-1")).await;
    let bootstrap = pair.remote_bundle();
    let stub = stub("/", bootstrap.to_json());
    stub.lock().unwrap().status = StatusCode::INTERNAL_SERVER_ERROR;
    let server = serve_stub(&stub, pair.remote.server_cert()).await;
    pair.federate(&server.url, Some(&bootstrap)).await;
    pair.assert_refused(&bootstrap, "HTTP 500").await;
    assert_eq!(refreshes("status.test", "fetch_error"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_endpoint_spiffe_id_keeps_the_last_good_bundle() {
    let pair = pair("wrongid.test", "5m", options("local-1")).await;
    let endpoint = Server::bundle_endpoint(&pair.remote).await;
    let bootstrap = pair.remote_bundle();
    let expected = SpiffeId::parse("spiffe://wrongid.test/not-the-hub").unwrap();
    pair.federate_as(&endpoint.url, expected, Some(&bootstrap))
        .await;
    pair.assert_refused(
        &bootstrap,
        "server presented spiffe://wrongid.test/fedhub/hub, expected spiffe://wrongid.test/not-the-hub",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_rollback_keeps_the_last_good_bundle() {
    let pair = pair("rollback.test", "5m", options("local-1")).await;
    let endpoint = Server::bundle_endpoint(&pair.remote).await;
    // The stored bundle is newer (sequence 7) than the served one (sequence 1).
    let mut newer = pair.remote_bundle();
    newer.set_sequence(Some(7));
    pair.federate(&endpoint.url, Some(&newer)).await;
    pair.assert_refused(&newer, "lower than the stored 7").await;
    assert_eq!(refreshes("rollback.test", "rejected"), 1);
}

/// How many fetched bundles of `trust_domain` came without a sequence after one with a
/// sequence.
fn sequence_drops(trust_domain: &str) -> u64 {
    recorded()
        .get(SEQUENCE_DROPPED_TOTAL, &[("trust_domain", trust_domain)])
        .unwrap_or(0)
}

/// FED-30: without a sequence the most recently fetched bundle is current, so a bundle without
/// `spiffe_sequence` after one with a sequence is applied. But the peer stopped sending
/// sequences (rollbacks can no longer be told apart), which is flagged in the status and
/// counted, until a bundle with a sequence comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsequenced_bundle_after_a_sequenced_one_is_applied_and_flagged() {
    let pair = pair("unsequenced.test", "5m", options("local-1")).await;
    let bootstrap = pair.remote_bundle();
    assert_eq!(bootstrap.sequence(), Some(1));
    let authorities = bootstrap.x509_authorities().len() + bootstrap.jwt_authorities().len();
    let mut unsequenced = bootstrap.clone();
    unsequenced.set_sequence(None);
    let stub = stub("/", unsequenced.to_json());
    let server = serve_stub(&stub, pair.remote.server_cert()).await;
    pair.federate(&server.url, Some(&bootstrap)).await;
    assert_eq!(status(&pair.local, &pair.td).await.sequence_dropped, None);

    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Updated {
            sequence: None,
            authorities
        }
    );
    assert_eq!(
        stored(&pair.local, &pair.td).await,
        Some(unsequenced.clone())
    );
    let after = status(&pair.local, &pair.td).await;
    assert_eq!(after.last_error, None);
    let dropped = after.sequence_dropped.expect("the drop is flagged");
    assert_eq!(dropped.last_sequence, 1);
    assert_eq!(sequence_drops("unsequenced.test"), 1);
    assert_eq!(refreshes("unsequenced.test", "updated"), 1);

    // Served again: nothing new dropped, the flag stays.
    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Unchanged
    );
    assert_eq!(
        status(&pair.local, &pair.td).await.sequence_dropped,
        Some(dropped)
    );
    assert_eq!(sequence_drops("unsequenced.test"), 1);

    // Sequences are back: applied, and the flag clears.
    let mut back = bootstrap.clone();
    back.set_sequence(Some(2));
    stub.lock()
        .unwrap()
        .bodies
        .insert("/".to_owned(), back.to_json());
    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Updated {
            sequence: Some(2),
            authorities
        }
    );
    assert_eq!(status(&pair.local, &pair.td).await.sequence_dropped, None);
    assert_eq!(sequence_drops("unsequenced.test"), 1);
}

/// A relationship that requires sequences refuses a bundle without one after a bundle with one:
/// the stored bundle stays, the error says why, and the drop is flagged and counted at each
/// refused fetch. Opting out applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_sequence_refuses_an_unsequenced_bundle_after_a_sequenced_one() {
    let pair = pair("strict.test", "5m", options("local-1")).await;
    let bootstrap = pair.remote_bundle();
    let mut unsequenced = bootstrap.clone();
    unsequenced.set_sequence(None);
    let stub = stub("/", unsequenced.to_json());
    let server = serve_stub(&stub, pair.remote.server_cert()).await;
    let spec = spiffe_spec(&pair.td, &server.url, pair.remote.hub_id());
    let strict = RelationshipOptions {
        require_sequence: true,
        ..RelationshipOptions::default()
    };
    pair.local
        .registry()
        .create_relationship_with_options(ACTOR, &spec, strict, Some(&record(&bootstrap)))
        .await
        .unwrap();

    let reason = pair
        .assert_refused(
            &bootstrap,
            "peer strict.test stopped sending spiffe_sequence",
        )
        .await;
    assert!(
        reason.contains("the stored bundle has sequence 1"),
        "{reason}"
    );
    assert!(
        reason.contains("refused because the relationship requires sequences"),
        "{reason}"
    );
    let dropped = status(&pair.local, &pair.td)
        .await
        .sequence_dropped
        .expect("the drop is flagged");
    assert_eq!(dropped.last_sequence, 1);
    assert_eq!(refreshes("strict.test", "rejected"), 1);
    assert_eq!(sequence_drops("strict.test"), 1);
    pair.assert_refused(&bootstrap, "stopped sending spiffe_sequence")
        .await;
    assert_eq!(
        sequence_drops("strict.test"),
        2,
        "each refused fetch counts"
    );

    // Opted out: applied as the most recent fetch, still flagged.
    pair.local
        .registry()
        .update_relationship_with_options(ACTOR, &spec, RelationshipOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Updated { sequence: None, .. }
    ));
    assert_eq!(stored(&pair.local, &pair.td).await, Some(unsequenced));
    let after = status(&pair.local, &pair.td).await;
    assert_eq!(after.last_error, None);
    assert_eq!(
        after.sequence_dropped,
        Some(dropped),
        "the first drop is kept"
    );
}

/// A `bundle set` made while a fetch is in flight wins over the fetch's result, which was
/// judged against the bundle the set replaced: nothing of it is stored (compare-and-swap on the
/// bundle's revision), it is no failure, and the refresh is due again at once, to be judged
/// against the set bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_set_during_a_fetch_wins_over_its_result() {
    let pair = pair("race.test", "5m", options("local-1")).await;
    let bootstrap = pair.remote_bundle();
    let mut newer = bootstrap.clone();
    newer.set_sequence(Some(2));
    let stub = stub("/", newer.to_json());
    stub.lock().unwrap().delay = Duration::from_secs(1);
    let server = serve_stub(&stub, pair.remote.server_cert()).await;
    pair.federate(&server.url, Some(&bootstrap)).await;

    let manager = pair.manager.clone();
    let td = pair.td.clone();
    let refresh = tokio::spawn(async move { manager.refresh_now(&td).await });
    eventually("the fetch to start", Duration::from_secs(5), async || {
        !stub.lock().unwrap().requests.is_empty()
    })
    .await;
    // The override keeps the endpoint's CA: the next fetch is authenticated with it.
    let mut set = bootstrap.clone();
    set.add_x509_authority(X509Authority::parse(ca_cert(&[]).2).unwrap());
    pair.local
        .registry()
        .put_bundle(ACTOR, &record(&set))
        .await
        .unwrap();
    assert_eq!(refresh.await.unwrap().unwrap(), RefreshOutcome::Superseded);
    assert_eq!(
        stored(&pair.local, &pair.td).await,
        Some(set.clone()),
        "the set wins"
    );
    let after = status(&pair.local, &pair.td).await;
    assert_eq!(after.consecutive_failures, 0, "not a failure");
    assert_eq!(after.last_error, None);
    assert_eq!(after.last_success_at, None);
    assert_eq!(after.etag, None);
    assert_eq!(after.lease_owner, None, "lease released");
    assert!(
        after.next_refresh_at.is_some_and(|at| at <= now()),
        "due again at once: {:?}",
        after.next_refresh_at
    );
    assert_eq!(refreshes("race.test", "superseded"), 1);
    assert_eq!(refreshes("race.test", "updated"), 0);
    assert_eq!(refreshes("race.test", "fetch_error"), 0);

    // Repeated, the endpoint's bundle is judged against the set one; a higher sequence
    // replaces it.
    stub.lock().unwrap().delay = Duration::ZERO;
    assert!(matches!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Updated {
            sequence: Some(2),
            ..
        }
    ));
    assert_eq!(stored(&pair.local, &pair.td).await, Some(newer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_bundle_is_refused_unless_the_relationship_accepts_it() {
    let pair = pair("empty.test", "5m", options("local-1")).await;
    let bootstrap = pair.remote_bundle();
    let stub = stub("/", r#"{"keys":[],"spiffe_sequence":9}"#.to_owned());
    let server = serve_stub(&stub, pair.remote.server_cert()).await;
    pair.federate(&server.url, Some(&bootstrap)).await;
    pair.assert_refused(&bootstrap, "no keys").await;
    assert_eq!(refreshes("empty.test", "empty_bundle"), 1);
    assert_eq!(refreshes("empty.test", "rejected"), 0);

    // Opted in: applied as a revocation of every key.
    let mut spec = spiffe_spec(&pair.td, &server.url, pair.remote.hub_id());
    spec.accept_empty_bundle = true;
    pair.local
        .registry()
        .update_relationship(ACTOR, &spec)
        .await
        .unwrap();
    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Updated {
            sequence: Some(9),
            authorities: 0
        }
    );
    let revoked = stored(&pair.local, &pair.td).await.unwrap();
    assert!(revoked.is_empty());
    assert_eq!(revoked.sequence(), Some(9));
    assert_eq!(status(&pair.local, &pair.td).await.last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_of_another_trust_domain_keeps_the_last_good_bundle() {
    let pair = pair("foreign.test", "5m", options("local-1")).await;
    let bootstrap = pair.remote_bundle();
    let mut hostile = bootstrap.clone();
    hostile.add_x509_authority(X509Authority::parse(ca_cert(&["spiffe://other.test"]).2).unwrap());
    hostile.set_sequence(Some(2));
    let stub = stub("/", hostile.to_json());
    let server = serve_stub(&stub, pair.remote.server_cert()).await;
    pair.federate(&server.url, Some(&bootstrap)).await;
    pair.assert_refused(&bootstrap, "spiffe://other.test").await;
    assert_eq!(refreshes("foreign.test", "rejected"), 1);
}

// --- profiles -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_web_trusts_the_relationship_extra_roots() {
    let pair = pair("web.test", "5m", options("local-1")).await;
    let (ca_params, ca_key, ca_der) = ca_cert(&[]);
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let cert = SwappableCert::new(certified_key(
        vec![leaf.der().to_vec()],
        leaf_key.serialize_der(),
    ));
    let served = pair.remote_bundle();
    let endpoint = serve_stub(&stub("/", served.to_json()), cert).await;
    let web = |ca_der: Vec<u8>| RelationshipSpec {
        trust_domain: pair.td.clone(),
        bundle_endpoint_url: BundleEndpointUrl::try_from(endpoint.url.clone()).unwrap(),
        profile: FetchProfile::HttpsWeb {
            extra_ca_pem: Some(pem::encode(&pem::Pem::new("CERTIFICATE", ca_der))),
        },
        accept_empty_bundle: false,
    };
    pair.local
        .registry()
        .create_relationship(ACTOR, &web(ca_der), None)
        .await
        .unwrap();
    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Updated {
            sequence: Some(1),
            authorities: 2
        }
    );
    assert_eq!(stored(&pair.local, &pair.td).await, Some(served.clone()));

    // Another private CA: the endpoint is not trusted, the bundle stays.
    pair.local
        .registry()
        .update_relationship(ACTOR, &web(ca_cert(&[]).2))
        .await
        .unwrap();
    pair.assert_refused(&served, "not signed by").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_self_serving_endpoint_is_verified_with_the_current_bundle_of_its_trust_domain() {
    // The endpoint of gamma.test is served by the issuer.test hub (FED-21).
    let pair = pair("issuer.test", "5m", options("local-1")).await;
    let gamma = TrustDomain::new("gamma.test").unwrap();
    let first = ca_bundle(&gamma, 1);
    let stub = stub("/", first.to_json());
    let server = serve_stub(&stub, pair.remote.server_cert()).await;
    pair.local
        .registry()
        .create_relationship(
            ACTOR,
            &spiffe_spec(&gamma, &server.url, pair.remote.hub_id()),
            None,
        )
        .await
        .unwrap();

    // Nothing stored for issuer.test: nothing to authenticate the endpoint with.
    let outcome = pair.manager.refresh_now(&gamma).await.unwrap();
    assert!(
        matches!(&outcome, RefreshOutcome::Failed(reason) if reason.contains("no bundle of trust domain issuer.test")),
        "{outcome:?}"
    );
    assert!(stub.lock().unwrap().requests.is_empty(), "nothing fetched");

    pair.local
        .registry()
        .put_bundle(ACTOR, &record(&pair.remote_bundle()))
        .await
        .unwrap();
    assert_eq!(
        pair.manager.refresh_now(&gamma).await.unwrap(),
        RefreshOutcome::Updated {
            sequence: Some(1),
            authorities: 1
        }
    );
    assert_eq!(stored(&pair.local, &gamma).await, Some(first.clone()));

    // The stored issuer.test bundle changes to one without the issuer's CA: the very next
    // handshake uses it, nothing cached vouches for the endpoint any more.
    pair.local
        .registry()
        .put_bundle(ACTOR, &record(&ca_bundle(&pair.td, 2)))
        .await
        .unwrap();
    stub.lock()
        .unwrap()
        .bodies
        .insert("/".to_owned(), ca_bundle(&gamma, 2).to_json());
    let outcome = pair.manager.refresh_now(&gamma).await.unwrap();
    assert!(
        matches!(&outcome, RefreshOutcome::Failed(reason) if reason.contains("not signed by")),
        "{outcome:?}"
    );
    assert_eq!(stored(&pair.local, &gamma).await, Some(first));
}

// --- replicas -------------------------------------------------------------------------------

/// Two hub replicas (one data directory, one database, two replica ids) refresh 20
/// relationships; a slow stub endpoint counts the fetches of each. Every due refresh is
/// fetched exactly once, in two rounds.
async fn replicas_fetch_each_due_refresh_exactly_once(database_url: Option<String>) {
    let (issuer, _issuer_dir) = open_hub("replica-issuer.test", "5m").await;
    let dir = tempfile::tempdir().unwrap();
    let config = hub_config("replicas.test", dir.path(), "5m", database_url.as_deref());
    // Replicas share the database, never a data directory (each has its own CA).
    let second_dir = tempfile::tempdir().unwrap();
    let mut second_config = config.clone();
    second_config.data_dir = second_dir.path().to_owned();
    let first = Hub::open(config).await.unwrap();
    let second = Hub::open(second_config).await.unwrap();
    first
        .registry()
        .put_bundle(ACTOR, &record(&issuer.own_bundle()))
        .await
        .unwrap();

    let count = 20;
    let names: Vec<String> = (0..count).map(|i| format!("r{i:02}")).collect();
    let stub = stub("/unused", String::new());
    // Slow answers, so that one replica cannot finish its share before the other one has
    // claimed any, even on a loaded machine: each replica holds at most 4 fetches.
    stub.lock().unwrap().delay = Duration::from_secs(1);
    let server = serve_stub(&stub, issuer.server_cert()).await;
    let mut specs = Vec::new();
    for name in &names {
        let td = TrustDomain::new(&format!("{name}.test")).unwrap();
        stub.lock()
            .unwrap()
            .bodies
            .insert(format!("/{name}"), ca_bundle(&td, 1).to_json());
        let spec = spiffe_spec(&td, &server.url.join(name).unwrap(), issuer.hub_id());
        first
            .registry()
            .create_relationship(ACTOR, &spec, None)
            .await
            .unwrap();
        specs.push(spec);
    }

    let slow = |replica: &str| FederationOptions {
        default_refresh: Duration::from_secs(3600),
        min_refresh: Duration::from_secs(3600),
        max_refresh: Duration::from_secs(3600),
        batch: 2,
        concurrency: 4,
        poll_interval: Duration::from_millis(20),
        ..options(replica)
    };
    let managers = [
        FederationManager::new(first.clone(), slow("replica-1")).unwrap(),
        FederationManager::new(second.clone(), slow("replica-2")).unwrap(),
    ];
    let runs: Vec<_> = managers.iter().map(run).collect();

    for round in 1..=2 {
        let total = round * count;
        // A plain loop: an async closure here would keep the scenario from being `Send`.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let fetched: usize = stub.lock().unwrap().requests.values().sum();
            let relationships = first.registry().list_relationships().await.unwrap();
            if fetched >= total
                && relationships
                    .iter()
                    .all(|r| r.status.lease_owner.is_none() && r.status.last_success_at.is_some())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {fetched} fetches"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Give a double fetch time to show.
        tokio::time::sleep(Duration::from_millis(500)).await;
        {
            let stub = stub.lock().unwrap();
            for name in &names {
                assert_eq!(
                    stub.requests.get(&format!("/{name}")),
                    Some(&round),
                    "{name} in round {round}: {:?}",
                    stub.requests
                );
            }
        }
        for relationship in first.registry().list_relationships().await.unwrap() {
            assert_eq!(relationship.status.last_error, None);
        }
        if round == 1 {
            // Due again at once.
            for spec in &specs {
                first
                    .registry()
                    .update_relationship(ACTOR, spec)
                    .await
                    .unwrap();
            }
        }
    }
    let max_in_flight = stub.lock().unwrap().max_in_flight;
    assert!(
        max_in_flight > 4,
        "both replicas fetched at once (each runs at most 4): {max_in_flight}"
    );

    for (stop, task) in runs {
        drop(stop);
        task.await.unwrap();
    }
    first.registry().close().await;
    second.registry().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_sqlite_fetch_each_due_refresh_exactly_once() {
    replicas_fetch_each_due_refresh_exactly_once(None).await;
}

/// The same on one PostgreSQL database (a fresh schema in `FEDHUB_TEST_DATABASE_URL`), the
/// scale-out setup. Skipped without the variable, except in CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_postgres_fetch_each_due_refresh_exactly_once() {
    fedhub_tests::postgres::with_schema("fedhub_federation", |url| {
        replicas_fetch_each_due_refresh_exactly_once(Some(url))
    })
    .await;
}
