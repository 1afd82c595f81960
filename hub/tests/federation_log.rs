//! FED-34: every refresh is logged with trust domain, URL, profile, peer identity and outcome.
//! A test binary of its own, because it installs a log subscriber (tracing caches per call
//! site whether anyone listens, which tests on other threads would disturb).

mod common;

use common::*;
use fedhub_hub::federation::RefreshOutcome;

/// FED-34: every fetch outcome is logged with trust domain, URL, profile and peer identity.
/// On a current-thread runtime, so the thread's subscriber sees every event.
#[tokio::test]
async fn every_refresh_is_logged_with_url_profile_peer_and_outcome() {
    let (captured, _guard) = fedhub_tests::logs::capture(tracing::Level::INFO);

    let pair = pair("logged.test", "5m", options("local-1")).await;
    let endpoint = Server::bundle_endpoint(&pair.remote).await;
    pair.federate(&endpoint.url, Some(&pair.remote_bundle()))
        .await;
    let url = endpoint.url.clone();
    assert_eq!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Unchanged
    );
    endpoint.stop().await;
    pair.manager.refresh_now(&pair.td).await.unwrap();

    let logs = captured.text();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("trust_domain=logged.test"))
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    for line in &lines {
        assert!(line.contains(&format!("url={url}")), "{line}");
        assert!(line.contains("profile=\"https_spiffe\""), "{line}");
        assert!(
            line.contains("peer=\"spiffe://logged.test/fedhub/hub\""),
            "{line}"
        );
    }
    assert!(lines[0].contains("INFO") && lines[0].contains("outcome=\"unchanged\""));
    assert!(lines[1].contains("WARN") && lines[1].contains("outcome=\"fetch_error\""));
    assert!(lines[1].contains("cannot reach"), "{}", lines[1]);
}

/// A bundle without `spiffe_sequence` after one with a sequence is applied with a warning that
/// says the peer stopped sending sequences and how to refuse such bundles.
#[tokio::test]
async fn a_dropped_sequence_is_logged_as_a_warning() {
    let (captured, _guard) = fedhub_tests::logs::capture(tracing::Level::INFO);

    let pair = pair("dropped.test", "5m", options("local-1")).await;
    let bootstrap = pair.remote_bundle();
    let mut unsequenced = bootstrap.clone();
    unsequenced.set_sequence(None);
    let stub = stub("/", unsequenced.to_json());
    let server = serve_stub(&stub, pair.remote.server_cert()).await;
    pair.federate(&server.url, Some(&bootstrap)).await;
    assert!(matches!(
        pair.manager.refresh_now(&pair.td).await.unwrap(),
        RefreshOutcome::Updated { sequence: None, .. }
    ));

    let logs = captured.text();
    let warning = logs
        .lines()
        .find(|line| line.contains("trust_domain=dropped.test") && line.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning in {logs}"));
    for part in [
        "stopped sending spiffe_sequence",
        "stored_sequence=1",
        "--require-sequence",
    ] {
        assert!(warning.contains(part), "{warning}");
    }
}
