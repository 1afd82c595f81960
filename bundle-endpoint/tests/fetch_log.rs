//! FED-34: every fetch is logged with URL, profile, peer identity and outcome. A test binary of
//! its own, because it installs a log subscriber.

#![expect(clippy::unwrap_used, reason = "test helpers panic when set-up fails")]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_fetch_is_logged_with_url_profile_peer_and_outcome() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

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

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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
