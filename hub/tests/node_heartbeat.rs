//! Liveness on the node API: an agent's `last_seen_at` keeps advancing while its sync stream
//! stays open (the heartbeat, `agent_api.heartbeat_interval`), without a change-feed event,
//! and stops once the stream is gone.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic when set-up fails; scenarios read top to bottom"
)]

mod common;

use std::time::Duration;

use fedhub_core::SpiffeId;
use time::OffsetDateTime;

use common::node::{NodeHub, next_snapshot};

async fn last_seen(hub: &NodeHub, agent: &SpiffeId) -> Option<OffsetDateTime> {
    hub.hub
        .registry()
        .get_agent(agent)
        .await
        .unwrap()
        .unwrap()
        .last_seen_at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seen_advances_while_a_sync_stream_stays_open() {
    let hub = NodeHub::start("[agent_api]\nheartbeat_interval = \"1s\"\n").await;
    let agent = hub.join("token-of-a-live-agent", None).await;
    let idle = hub.join("token-of-an-agent-without-stream", None).await;
    let id = agent.spiffe_id().clone();
    // Attesting counts as being seen.
    let idle_seen = last_seen(&hub, idle.spiffe_id()).await;
    let mut stream = hub.sync_stream(&agent).await;
    next_snapshot(&mut stream).await.unwrap();
    let opened = last_seen(&hub, &id)
        .await
        .expect("seen when the stream opened");
    let revision = hub.hub.registry().latest_revision().await.unwrap();

    // The stream stays open and says nothing: the heartbeat alone moves last_seen_at.
    let mut seen = opened;
    for _ in 0..2 {
        let before = seen;
        common::eventually(
            "last_seen_at advances",
            Duration::from_secs(5),
            async || {
                seen = last_seen(&hub, &id).await.unwrap();
                seen > before
            },
        )
        .await;
    }
    assert!(
        seen >= opened + time::Duration::seconds(2),
        "{opened} then {seen}"
    );
    assert_eq!(
        hub.hub.registry().latest_revision().await.unwrap(),
        revision,
        "a heartbeat is bookkeeping: no change-feed event"
    );
    assert_eq!(
        last_seen(&hub, idle.spiffe_id()).await,
        idle_seen,
        "an agent without a sync stream is not touched"
    );

    // Once the stream is closed, the heartbeat leaves the agent alone.
    drop(stream);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_close = last_seen(&hub, &id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(last_seen(&hub, &id).await.unwrap(), after_close);
    hub.stop().await;
}
