use std::os::unix::fs::PermissionsExt as _;

use fedhub_bundle_endpoint::{BundleFetcher, FetchAuth, FetchOptions, FetchOutcome};
use fedhub_core::{BundleSet, SpiffeId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

fn config(dir: &Path, extra: &str) -> HubConfig {
    HubConfig::from_toml(&format!(
        r#"
        trust_domain = "alpha.test"
        data_dir = "{}"
        [agent_api]
        address = "127.0.0.1:0"
        [bundle_endpoint]
        address = "127.0.0.1:0"
        [health]
        address = "127.0.0.1:0"
        {extra}
        "#,
        dir.display()
    ))
    .unwrap()
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

struct WebCa {
    ca: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn web_ca() -> WebCa {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    WebCa {
        ca,
        issuer: rcgen::Issuer::new(params, key),
    }
}

fn write_web_cert(ca: &WebCa, dir: &Path, name: &str) -> TlsFiles {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca.issuer)
        .unwrap();
    let files = TlsFiles {
        cert_file: dir.join(format!("{name}.pem")),
        key_file: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    fedhub_files::write_private(&files.key_file, key.serialize_pem().as_bytes()).unwrap();
    files
}

#[tokio::test]
async fn serves_bundle_endpoint_over_https_spiffe_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let running = launch(config(dir.path(), "")).await.unwrap();
    let own = (*running.hub.own_bundle()).clone();
    let bundles: BundleSet = [own.clone()].into_iter().collect();
    let url = format!("https://{}/", running.bound.bundle_endpoint.unwrap());
    let fetcher = BundleFetcher::new(
        &url,
        own.trust_domain().clone(),
        FetchAuth::HttpsSpiffe {
            endpoint_id: SpiffeId::parse("spiffe://alpha.test/fedhub/hub").unwrap(),
            bundles: Arc::new(bundles),
        },
        FetchOptions::default(),
    )
    .unwrap();
    match fetcher.fetch(None).await.unwrap() {
        FetchOutcome::Fetched { bundle, peer, .. } => {
            assert_eq!(bundle, own);
            assert_eq!(peer.unwrap().as_str(), "spiffe://alpha.test/fedhub/hub");
        }
        FetchOutcome::NotModified => panic!("fetched without an ETag"),
    }

    let health = running.bound.health.unwrap();
    assert!(http_get(health, "/live").await.starts_with("HTTP/1.1 200"));
    assert!(http_get(health, "/ready").await.starts_with("HTTP/1.1 200"));
    let metrics = http_get(health, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    running.shutdown().await;
}

#[tokio::test]
async fn https_web_profile_serves_operator_certificate_and_reloads_it() {
    let dir = tempfile::tempdir().unwrap();
    let first_ca = web_ca();
    let files = write_web_cert(&first_ca, dir.path(), "web");
    let extra = format!(
        "profile = \"https_web\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
        files.cert_file.display(),
        files.key_file.display()
    );
    let cfg = config(dir.path(), "");
    let cfg = HubConfig::from_toml(&format!(
        r#"
        trust_domain = "alpha.test"
        data_dir = "{}"
        [agent_api]
        address = "127.0.0.1:0"
        [bundle_endpoint]
        address = "127.0.0.1:0"
        {extra}
        [health]
        enabled = false
        "#,
        cfg.data_dir.display()
    ))
    .unwrap();
    let running = launch_with(
        cfg,
        LaunchOptions {
            cert_reload_interval: Duration::from_millis(100),
            ..LaunchOptions::default()
        },
    )
    .await
    .unwrap();
    let url = format!("https://{}/", running.bound.bundle_endpoint.unwrap());
    let fetcher_for = |ca: &WebCa| {
        BundleFetcher::new(
            &url,
            running.hub.trust_domain().clone(),
            FetchAuth::HttpsWeb {
                extra_roots: vec![ca.ca.der().to_vec()],
            },
            FetchOptions::default(),
        )
        .unwrap()
    };
    assert!(fetcher_for(&first_ca).fetch(None).await.is_ok());

    // The operator replaces the files with a certificate from another CA.
    let second_ca = web_ca();
    write_web_cert(&second_ca, dir.path(), "web");
    let second = fetcher_for(&second_ca);
    let mut reloaded = false;
    for _ in 0..100 {
        if second.fetch(None).await.is_ok() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "new certificate files were not picked up");
    assert!(fetcher_for(&first_ca).fetch(None).await.is_err());
    running.shutdown().await;
}

#[tokio::test]
async fn oidc_discovery_is_served_over_https_with_operator_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = web_ca();
    let files = write_web_cert(&ca, dir.path(), "oidc");
    let extra = format!(
        "[oidc]\nenabled = true\naddress = \"127.0.0.1:0\"\nissuer = \"https://127.0.0.1\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
        files.cert_file.display(),
        files.key_file.display()
    );
    let running = launch(config(dir.path(), &extra)).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(running.bound.oidc.unwrap())
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(b"GET /keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let kid = running.hub.own_bundle().jwt_authorities()[0]
        .kid()
        .to_owned();
    assert!(response.contains(&kid), "{response}");
    running.shutdown().await;
}

#[tokio::test]
async fn startup_failures_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra = format!(
        "[oidc]\nenabled = true\naddress = \"{}\"\nissuer = \"http://x\"\nallow_insecure_http = true",
        taken.local_addr().unwrap()
    );
    let error = launch(config(dir.path(), &extra)).await.unwrap_err();
    assert!(error.to_string().starts_with("oidc.address"), "{error}");

    let ca = web_ca();
    let files = write_web_cert(&ca, dir.path(), "web");
    std::fs::set_permissions(&files.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let extra = format!(
        "profile = \"https_web\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
        files.cert_file.display(),
        files.key_file.display()
    );
    let cfg = HubConfig::from_toml(&format!(
        "trust_domain = \"alpha.test\"\ndata_dir = \"{}\"\n[agent_api]\naddress = \"127.0.0.1:0\"\n[bundle_endpoint]\naddress = \"127.0.0.1:0\"\n{extra}\n[health]\nenabled = false",
        dir.path().display()
    ))
    .unwrap();
    let error = launch(cfg).await.unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("bundle_endpoint.cert_file"), "{text}");
    assert!(text.contains("chmod 600"), "{text}");
}

/// Binds a listener on an ephemeral loopback port; returns it with a second handle on the same
/// socket, which the test keeps so that the port stays taken however the hub treats its handle.
fn held_listener() -> (std::net::TcpListener, std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = listener.try_clone().unwrap();
    let address = listener.local_addr().unwrap();
    (listener, held, address)
}

#[tokio::test]
async fn handed_over_listeners_are_served_without_binding_their_addresses_again() {
    let dir = tempfile::tempdir().unwrap();
    let (agent_api, _held_agent_api, agent_api_address) = held_listener();
    let (endpoint, _held_endpoint, endpoint_address) = held_listener();
    let (oidc, _held_oidc, oidc_address) = held_listener();
    let (health, _held_health, health_address) = held_listener();
    let cfg = HubConfig::from_toml(&format!(
        r#"
        trust_domain = "alpha.test"
        data_dir = "{}"
        [agent_api]
        address = "{agent_api_address}"
        [bundle_endpoint]
        address = "{endpoint_address}"
        [oidc]
        enabled = true
        address = "{oidc_address}"
        issuer = "http://{oidc_address}"
        allow_insecure_http = true
        [health]
        address = "{health_address}"
        "#,
        dir.path().display()
    ))
    .unwrap();
    // Every address is still taken by the test's handles, so binding any of them would fail
    // the start with "address in use": the hub can only serve the sockets handed over.
    let running = launch_with(
        cfg,
        LaunchOptions {
            listeners: PreBound {
                agent_api: Some(agent_api),
                bundle_endpoint: Some(endpoint),
                oidc: Some(oidc),
                health: Some(health),
            },
            ..LaunchOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(running.bound.agent_api, Some(agent_api_address));
    assert_eq!(running.bound.bundle_endpoint, Some(endpoint_address));
    assert_eq!(running.bound.oidc, Some(oidc_address));
    assert_eq!(running.bound.health, Some(health_address));

    assert!(
        http_get(health_address, "/live")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let keys = http_get(oidc_address, "/keys").await;
    assert!(keys.starts_with("HTTP/1.1 200"), "{keys}");
    let own = (*running.hub.own_bundle()).clone();
    let fetcher = BundleFetcher::new(
        &format!("https://{endpoint_address}/"),
        own.trust_domain().clone(),
        FetchAuth::HttpsSpiffe {
            endpoint_id: SpiffeId::parse("spiffe://alpha.test/fedhub/hub").unwrap(),
            bundles: Arc::new([own.clone()].into_iter().collect::<BundleSet>()),
        },
        FetchOptions::default(),
    )
    .unwrap();
    assert!(matches!(
        fetcher.fetch(None).await.unwrap(),
        FetchOutcome::Fetched { .. }
    ));
    tokio::net::TcpStream::connect(agent_api_address)
        .await
        .unwrap();
    running.shutdown().await;
}

#[tokio::test]
async fn a_handed_over_listener_must_be_where_the_configuration_says() {
    let dir = tempfile::tempdir().unwrap();
    let (agent_api, _held, address) = held_listener();
    let error = launch_with(
        config(dir.path(), ""),
        LaunchOptions {
            listeners: PreBound {
                agent_api: Some(agent_api),
                ..PreBound::default()
            },
            ..LaunchOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            RunError::ListenerMismatch { what: "agent_api.address", bound, .. } if bound == address
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("agent_api.address is 127.0.0.1:0, but the listener handed over"),
        "{error}"
    );

    let (oidc, _held, _) = held_listener();
    let error = launch_with(
        config(dir.path(), ""),
        LaunchOptions {
            listeners: PreBound {
                oidc: Some(oidc),
                ..PreBound::default()
            },
            ..LaunchOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            RunError::ListenerUnused {
                what: "oidc.address"
            }
        ),
        "{error:?}"
    );
}
