//! Fairness between agents on the node API: sync streams capped per agent, `Sync` and
//! `RenewAgent` rate limited per agent, pending renewals that wake no sync stream, and
//! refused agent SVIDs refused again without a registry read.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic when set-up fails; scenarios read top to bottom"
)]

mod common;

use fedhub_core::SpiffeId;
use fedhub_hub::node::RETRY_AFTER_MS;
use fedhub_proto::node::{SignX509SvidsRequest, SyncRequest};
use fedhub_registry::{EntrySpec, Selector};
use tonic::Code;

use common::ACTOR;
use common::node::{NodeHub, assert_status, next_snapshot, renew};

/// Registers `path` for `agent` and wakes the sync streams.
async fn entry_for(hub: &NodeHub, agent: &SpiffeId, path: &str) {
    let spec = EntrySpec::new(
        SpiffeId::parse(&format!("spiffe://alpha.test/{path}")).unwrap(),
        agent.clone(),
        vec![Selector::parse("unix:uid:1").unwrap()],
    );
    hub.hub.registry().create_entry(ACTOR, &spec).await.unwrap();
    hub.hub.notify_changed().await.unwrap();
}

/// An empty `SignX509Svids`: checks the caller's SVID and nothing else.
fn no_svids() -> SignX509SvidsRequest {
    SignX509SvidsRequest { svids: Vec::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_stream_beyond_the_cap_ends_the_oldest_of_the_same_agent() {
    let hub = NodeHub::start("[agent_api]\nsync_streams_per_agent = 2\n").await;
    let noisy = hub.join("token-of-a-noisy-agent", None).await;
    let quiet = hub.join("token-of-a-quiet-agent", None).await;
    let mut quiet_stream = hub.sync_stream(&quiet).await;
    next_snapshot(&mut quiet_stream).await.unwrap();

    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = hub.sync_stream(&noisy).await;
        next_snapshot(&mut stream).await.unwrap();
        streams.push(stream);
    }
    let status = assert_status(
        next_snapshot(&mut streams[0]).await,
        Code::Aborted,
        "replaced by a newer one",
    );
    assert!(status.message().contains("at most 2"), "{status:?}");

    // The two newest streams and the other agent's stream go on.
    entry_for(&hub, noisy.spiffe_id(), "noisy-web").await;
    for stream in &mut streams[1..] {
        assert_eq!(next_snapshot(stream).await.unwrap().entries.len(), 1);
    }
    entry_for(&hub, quiet.spiffe_id(), "quiet-web").await;
    assert_eq!(
        next_snapshot(&mut quiet_stream)
            .await
            .unwrap()
            .entries
            .len(),
        1
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_renew_agent_are_rate_limited_per_agent() {
    let hub = NodeHub::start("[agent_api]\nsyncs_per_minute = 2\nrenewals_per_minute = 1\n").await;
    let noisy = hub.join("token-of-a-noisy-agent", None).await;
    let quiet = hub.join("token-of-a-quiet-agent", None).await;
    let mut client = hub.client(Some(&noisy)).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(client.sync(SyncRequest {}).await.unwrap().into_inner());
    }
    let status = assert_status(
        client.sync(SyncRequest {}).await,
        Code::ResourceExhausted,
        "may open 2 sync streams per minute",
    );
    assert!(status.message().contains("retry in"), "{status:?}");
    assert!(status.metadata().get(RETRY_AFTER_MS).is_some());
    let mut quiet_client = hub.client(Some(&quiet)).await;
    quiet_client
        .sync(SyncRequest {})
        .await
        .expect("another agent has its own budget");

    renew(&mut client).await.unwrap();
    let status = assert_status(
        renew(&mut client).await,
        Code::ResourceExhausted,
        "may renew its SVID 1 times per minute",
    );
    assert!(status.message().contains("retry in"), "{status:?}");
    renew(&mut quiet_client)
        .await
        .expect("another agent has its own budget");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_renewal_wakes_no_sync_stream_and_its_first_use_does() {
    let hub = NodeHub::start("").await;
    let renewing = hub.join("token-of-a-renewing-agent", None).await;
    let other = hub.join("token-of-another-agent", None).await;
    let mut old_stream = hub.sync_stream(&renewing).await;
    next_snapshot(&mut old_stream).await.unwrap();
    let mut other_stream = hub.sync_stream(&other).await;
    next_snapshot(&mut other_stream).await.unwrap();

    // Sync streams wake when the change feed revision moves; a pending renewal leaves it.
    let changes = hub.hub.subscribe_changes();
    let before = *changes.borrow();
    let mut client = hub.client(Some(&renewing)).await;
    let replaced = renew(&mut client).await.unwrap();
    // A second renewal replaces the pending one; still nothing moves.
    let renewed = renew(&mut client).await.unwrap();
    assert_ne!(renewed.leaf(), replaced.leaf());
    hub.hub.notify_changed().await.unwrap();
    assert_eq!(
        *changes.borrow(),
        before,
        "no revision for a pending renewal"
    );
    assert_eq!(hub.hub.registry().latest_revision().await.unwrap(), before);

    // Its first use makes it current: a change, which ends the old SVID's stream.
    hub.client(Some(&renewed))
        .await
        .sign_x509_svids(no_svids())
        .await
        .unwrap();
    assert!(*changes.borrow() > before, "the promotion is a change");
    assert_status(
        next_snapshot(&mut old_stream).await,
        Code::PermissionDenied,
        "superseded",
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_agent_svid_is_refused_again_without_a_registry_read() {
    let hub = NodeHub::start("").await;
    let banned = hub.join("token-of-a-banned-agent", None).await;
    let renewing = hub.join("token-of-a-renewing-agent", None).await;
    let evicted = hub.join("token-of-an-evicted-agent", None).await;
    let fine = hub.join("token-of-a-fine-agent", None).await;
    let registry = hub.hub.registry();

    registry.ban_agent(ACTOR, banned.spiffe_id()).await.unwrap();
    let mut banned_client = hub.client(Some(&banned)).await;
    assert_status(
        banned_client.sign_x509_svids(no_svids()).await,
        Code::PermissionDenied,
        "banned",
    );
    let renewed = renew(&mut hub.client(Some(&renewing)).await).await.unwrap();
    let mut renewed_client = hub.client(Some(&renewed)).await;
    renewed_client.sign_x509_svids(no_svids()).await.unwrap();
    let mut superseded_client = hub.client(Some(&renewing)).await;
    assert_status(
        superseded_client.sign_x509_svids(no_svids()).await,
        Code::PermissionDenied,
        "superseded",
    );

    // An evicted agent's SVID is refused, but the agent may attest again, and its new SVID
    // is served: refusals hold per certificate, not per agent.
    registry
        .evict_agent(ACTOR, evicted.spiffe_id())
        .await
        .unwrap();
    assert_status(
        hub.client(Some(&evicted))
            .await
            .sign_x509_svids(no_svids())
            .await,
        Code::PermissionDenied,
        "evicted",
    );
    let back = hub
        .join("token-to-come-back", Some(evicted.spiffe_id()))
        .await;
    hub.client(Some(&back))
        .await
        .sign_x509_svids(no_svids())
        .await
        .expect("the new SVID of an evicted agent that attested again is served");

    // From now on every registry read fails: the refused SVIDs get their answers from memory,
    // on every call, while an accepted agent's calls need the registry and fail.
    registry.close().await;
    let mut fine_client = hub.client(Some(&fine)).await;
    assert_status(
        fine_client.sign_x509_svids(no_svids()).await,
        Code::Unavailable,
        "storage",
    );
    for _ in 0..2 {
        assert_status(
            banned_client.sign_x509_svids(no_svids()).await,
            Code::PermissionDenied,
            "banned",
        );
        assert_status(
            banned_client.sync(SyncRequest {}).await,
            Code::PermissionDenied,
            "banned",
        );
        assert_status(
            renew(&mut banned_client).await,
            Code::PermissionDenied,
            "banned",
        );
        assert_status(
            superseded_client.sync(SyncRequest {}).await,
            Code::PermissionDenied,
            "superseded",
        );
        assert_status(
            hub.client(Some(&evicted))
                .await
                .sign_x509_svids(no_svids())
                .await,
            Code::PermissionDenied,
            "evicted",
        );
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_streams_of_one_agent_share_one_registry_read_per_revision() {
    let hub = NodeHub::start("").await;
    let agent = hub.join("token-of-a-two-stream-agent", None).await;
    entry_for(&hub, agent.spiffe_id(), "web").await;
    let mut first = hub.sync_stream(&agent).await;
    let snapshot = next_snapshot(&mut first).await.unwrap();
    assert_eq!(snapshot.entries.len(), 1);

    // No registry read works from now on; at the same revision, a second stream of the agent
    // is served what the first one read.
    hub.hub.registry().close().await;
    let mut second = hub
        .client(Some(&agent))
        .await
        .sync(SyncRequest {})
        .await
        .expect("the second stream needs no registry read")
        .into_inner();
    assert_eq!(next_snapshot(&mut second).await.unwrap(), snapshot);
    hub.stop().await;
}
