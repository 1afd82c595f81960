//! FED-34: every fetch is logged with URL, profile, peer identity and outcome. A test binary of
//! its own, because it installs a log subscriber.

mod common;

use common::*;

#[tokio::test]
async fn every_fetch_is_logged_with_url_profile_peer_and_outcome() {
    let (captured, _guard) = fedhub_tests::logs::capture(tracing::Level::DEBUG);

    let endpoint = SpiffeEndpoint::start().await;
    let client = endpoint.fetcher("/");
    assert!(matches!(
        client.fetch(None).await.unwrap(),
        fedhub_bundle_endpoint::FetchOutcome::Fetched { .. }
    ));
    endpoint
        .server
        .set_config(svid_server(&svid(&endpoint.ca, "spiffe://b.test/impostor")));
    client.fetch(None).await.unwrap_err();

    let logs = captured.text();
    let fetches: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("bundle endpoint fetch"))
        .collect();
    assert_eq!(fetches.len(), 2, "{logs}");
    let url = endpoint.server.url("/");
    for line in &fetches {
        assert!(line.contains(&format!("url={url}")), "{line}");
        assert!(line.contains("profile=\"https_spiffe\""), "{line}");
        assert!(line.contains(&format!("peer=\"{ENDPOINT_ID}\"")), "{line}");
    }
    assert!(fetches[0].contains("outcome=\"fetched\""), "{}", fetches[0]);
    assert!(fetches[1].contains("outcome=\"failed\""), "{}", fetches[1]);
    assert!(fetches[1].contains("impostor"), "{}", fetches[1]);
}
