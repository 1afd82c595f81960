//! The hub's `/metrics` as a Prometheus server scrapes it, from a hub started with `launch`:
//! the families of its listeners, CA and federation, accepted by `promtool check metrics`, and
//! the series of a deleted relationship gone at once.

#![expect(clippy::unwrap_used, reason = "test helpers panic when set-up fails")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use fedhub_core::Bundle;
use fedhub_core::bundle::X509Authority;
use fedhub_hub::config::HubConfig;
use fedhub_hub::run::{RunningHub, launch};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn start(dir: &Path) -> RunningHub {
    let config = HubConfig::from_toml(&format!(
        r#"
        trust_domain = "alpha.test"
        data_dir = "{}"
        [agent_api]
        address = "127.0.0.1:0"
        [bundle_endpoint]
        address = "127.0.0.1:0"
        [health]
        address = "127.0.0.1:0"
        "#,
        dir.join("data").display()
    ))
    .unwrap();
    launch(config).await.unwrap()
}

/// One HTTP/1.1 request over `stream`; the status code and the body.
async fn exchange(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    request: String,
) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    (status, body.to_owned())
}

async fn scrape(health: SocketAddr) -> String {
    let stream = tokio::net::TcpStream::connect(health).await.unwrap();
    let (status, body) = exchange(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: hub\r\n\r\n".to_owned(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn admin(hub: &RunningHub, method: &str, path: &str, body: Option<&Value>) -> u16 {
    let socket = &hub.hub.config().admin_socket;
    let body = body.map(Value::to_string).unwrap_or_default();
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (status, _) = exchange(
        stream,
        format!(
            "{method} /v1{path} HTTP/1.0\r\nHost: fedhub\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    status
}

/// The sample lines of `family` in `metrics` that have every label of `labels`.
fn samples<'a>(metrics: &'a str, family: &str, labels: &[&str]) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .collect()
}

fn value(line: &str) -> f64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_series_of_a_deleted_relationship_leave_metrics_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start(dir.path()).await;
    let health = hub.bound.health.unwrap();
    let mut bootstrap = Bundle::new(fedhub_tests::td("beta.test"));
    bootstrap.add_x509_authority(
        X509Authority::parse(common::ca_cert(&["spiffe://beta.test"]).2).unwrap(),
    );
    // An endpoint nobody listens on: every refresh fails.
    let created = admin(
        &hub,
        "POST",
        "/federation",
        Some(&json!({
            "trust_domain": "beta.test",
            "bundle_endpoint_url": "https://127.0.0.1:1/",
            "profile": "https_web",
            "trust_domain_bundle": bootstrap.to_json(),
        })),
    )
    .await;
    assert_eq!(created, 201);
    // 502 (the fetch failed), or 409 while the manager's own first refresh holds the lease.
    let refreshed = admin(&hub, "POST", "/federation/beta.test/refresh", None).await;
    assert!(refreshed == 502 || refreshed == 409, "{refreshed}");

    // The failure at once; the authority expiry with the manager's next gauge update (10 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = scrape(health).await;
        let expiry = samples(
            &metrics,
            "fedhub_federation_authority_expiry_timestamp_seconds",
            &["trust_domain=\"beta.test\""],
        );
        let failed = samples(
            &metrics,
            "fedhub_federation_consecutive_failures",
            &["trust_domain=\"beta.test\""],
        )
        .first()
        .is_some_and(|line| value(line) >= 1.0);
        if (!expiry.is_empty() && failed) || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let failures = samples(
        &metrics,
        "fedhub_federation_consecutive_failures",
        &["trust_domain=\"beta.test\""],
    );
    assert_eq!(failures.len(), 1, "{metrics}");
    assert!(value(failures[0]) >= 1.0, "{metrics}");
    let expiry = samples(
        &metrics,
        "fedhub_federation_authority_expiry_timestamp_seconds",
        &["trust_domain=\"beta.test\""],
    );
    assert_eq!(expiry.len(), 1, "{metrics}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(value(expiry[0]) > now, "{metrics}");
    // No hint in the bootstrap bundle: the default interval (300 s).
    let interval = samples(
        &metrics,
        "fedhub_federation_refresh_interval_seconds",
        &["trust_domain=\"beta.test\""],
    );
    assert_eq!(interval.len(), 1, "{metrics}");
    assert!((value(interval[0]) - 300.0).abs() < 1e-9, "{metrics}");
    assert!(
        !samples(
            &metrics,
            "fedhub_federation_refresh_total",
            &["trust_domain=\"beta.test\"", "outcome=\"fetch_error\""]
        )
        .is_empty(),
        "{metrics}"
    );
    fedhub_tests::prometheus::check_metrics(&metrics);

    assert_eq!(
        admin(&hub, "DELETE", "/federation/beta.test", None).await,
        200
    );
    let metrics = scrape(health).await;
    assert!(
        !metrics.contains("beta.test"),
        "series of the deleted relationship remain:\n{metrics}"
    );
    fedhub_tests::prometheus::check_metrics(&metrics);
    hub.shutdown().await;
}

#[tokio::test]
async fn requests_and_own_authorities_are_measured() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start(dir.path()).await;
    let health = hub.bound.health.unwrap();
    assert_eq!(admin(&hub, "GET", "/entries", None).await, 200);
    assert_eq!(admin(&hub, "GET", "/no/such/route", None).await, 404);
    let endpoint = hub.bound.bundle_endpoint.unwrap();
    // Plain HTTP to the TLS listener: no request is answered, nothing is counted.
    drop(tokio::net::TcpStream::connect(endpoint).await.unwrap());
    let _ = scrape(health).await;
    let metrics = scrape(health).await;

    let admin_ok = samples(
        &metrics,
        "fedhub_hub_http_requests_total",
        &[
            "server=\"admin\"",
            "route=\"/v1/entries\"",
            "status=\"200\"",
        ],
    );
    assert_eq!(admin_ok.len(), 1, "{metrics}");
    assert!(value(admin_ok[0]) >= 1.0);
    // An unknown path is counted under `fallback`, never under the path itself.
    assert_eq!(
        samples(
            &metrics,
            "fedhub_hub_http_requests_total",
            &["server=\"admin\"", "route=\"fallback\"", "status=\"404\""],
        )
        .len(),
        1,
        "{metrics}"
    );
    assert!(!metrics.contains("/no/such/route"), "{metrics}");
    assert_eq!(
        samples(
            &metrics,
            "fedhub_hub_http_requests_total",
            &["server=\"health\"", "route=\"/metrics\"", "status=\"200\""],
        )
        .len(),
        1,
        "{metrics}"
    );
    // One active X.509 CA and one active JWT key, each with its remaining lifetime (24 h).
    for kind in ["x509", "jwt"] {
        let keys = samples(
            &metrics,
            "fedhub_hub_authority_remaining_seconds",
            &[&format!("type=\"{kind}\""), "state=\"active\""],
        );
        assert_eq!(keys.len(), 1, "{metrics}");
        let left = value(keys[0]);
        assert!(left > 23.0 * 3600.0 && left <= 24.0 * 3600.0, "{metrics}");
    }
    fedhub_tests::prometheus::check_metrics(&metrics);
    hub.shutdown().await;
}

#[tokio::test]
async fn node_attestations_are_counted_by_method_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start(dir.path()).await;
    let health = hub.bound.health.unwrap();
    let agent_api = hub.bound.agent_api.unwrap();
    let key = fedhub_core::PrivateKey::generate(fedhub_core::KeyType::EcP256).unwrap();
    let client = || async {
        common::node::node_client(agent_api, hub.hub.hub_id(), &hub.hub.own_bundle(), None)
            .await
            .unwrap()
    };
    let refused =
        common::node::attest_with_token(&mut client().await, &key, "no-such-token-0123456789")
            .await
            .unwrap_err();
    let token = "metrics-join-token-0123456789";
    hub.hub
        .registry()
        .create_join_token(common::ACTOR, token, Duration::from_secs(600), None)
        .await
        .unwrap();
    common::node::attest_with_token(&mut client().await, &key, token)
        .await
        .unwrap();

    let metrics = scrape(health).await;
    let code = fedhub_telemetry_code(refused.code());
    for (code, count) in [("OK", 1.0), (code, 1.0)] {
        let attested = samples(
            &metrics,
            "fedhub_hub_node_attestations_total",
            &["method=\"join_token\"", &format!("code=\"{code}\"")],
        );
        assert_eq!(attested.len(), 1, "{metrics}");
        assert!((value(attested[0]) - count).abs() < 1e-9, "{metrics}");
    }
    let signed = samples(
        &metrics,
        "fedhub_hub_svids_signed_total",
        &["type=\"agent\""],
    );
    assert_eq!(signed.len(), 1, "{metrics}");
    assert!((value(signed[0]) - 1.0).abs() < 1e-9, "{metrics}");
    fedhub_tests::prometheus::check_metrics(&metrics);
    hub.shutdown().await;
}

/// The label value of a gRPC code, as the hub writes it.
fn fedhub_telemetry_code(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        other => panic!("unexpected refusal {other:?}"),
    }
}
