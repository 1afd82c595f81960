//! Envoy SDS v3 on the agent's Workload API socket, driven by the `envoy-types` client as Envoy
//! would: no security header, resource names as SPIRE serves them.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

#[allow(
    dead_code,
    reason = "the fixtures are shared with the Workload API tests"
)]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use common::{Agent, Domain, my_selectors, other_uid_selector, snapshot};
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use fedhub_agent::sds::SECRET_TYPE_URL;
use fedhub_core::x509::{SvidUsage, X509Svid, verify_x509_svid};
use fedhub_core::{Bundle, BundleSet, PrivateKey};
use futures::channel::mpsc;
use prost::{Message, Name};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// How long a test waits to be sure that no stream message comes.
const QUIET: Duration = Duration::from_millis(400);
/// How long a test waits for an expected stream message.
const PROMPT: Duration = Duration::from_secs(5);

/// An SDS client on the agent's socket.
async fn sds(agent: &Agent) -> SecretDiscoveryServiceClient<Channel> {
    let endpoint = spiffe::transport::Endpoint::parse(&agent.uri()).unwrap();
    SecretDiscoveryServiceClient::new(spiffe::transport::connect(&endpoint).await.unwrap())
}

fn request(names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: names.iter().map(|name| (*name).to_owned()).collect(),
        type_url: SECRET_TYPE_URL.to_owned(),
        ..DiscoveryRequest::default()
    }
}

/// The request acknowledging `response`, subscribing to `names`.
fn ack(response: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: response.version_info.clone(),
        response_nonce: response.nonce.clone(),
        ..request(names)
    }
}

/// The secrets of a response by name; every resource must be a `Secret`.
fn secrets_of(response: &DiscoveryResponse) -> BTreeMap<String, secret::Type> {
    assert_eq!(response.type_url, SECRET_TYPE_URL);
    response
        .resources
        .iter()
        .map(|any| {
            assert_eq!(any.type_url, Secret::type_url());
            let secret = Secret::decode(any.value.as_slice()).unwrap();
            (secret.name, secret.r#type.unwrap())
        })
        .collect()
}

fn names(secrets: &BTreeMap<String, secret::Type>) -> Vec<&str> {
    secrets.keys().map(String::as_str).collect()
}

fn certificate(kind: &secret::Type) -> &TlsCertificate {
    match kind {
        secret::Type::TlsCertificate(certificate) => certificate,
        other => panic!("not a tls_certificate: {other:?}"),
    }
}

fn validation(kind: &secret::Type) -> &CertificateValidationContext {
    match kind {
        secret::Type::ValidationContext(context) => context,
        other => panic!("not a validation_context: {other:?}"),
    }
}

fn inline(source: Option<&DataSource>) -> &str {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::InlineBytes(bytes)) => std::str::from_utf8(bytes).unwrap(),
        other => panic!("not inline bytes: {other:?}"),
    }
}

/// The DER of every PEM `CERTIFICATE` block.
fn certificates(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .map(|block| {
            assert_eq!(block.tag(), "CERTIFICATE");
            block.into_contents()
        })
        .collect()
}

/// The certificate chain PEM of the `tls_certificate` called `name`.
fn chain_of(secrets: &BTreeMap<String, secret::Type>, name: &str) -> Vec<Vec<u8>> {
    certificates(inline(
        certificate(&secrets[name]).certificate_chain.as_ref(),
    ))
}

async fn next(stream: &mut Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    tokio::time::timeout(PROMPT, stream.message())
        .await
        .expect("a response in time")
        .unwrap()
        .expect("the stream is open")
}

async fn assert_quiet(stream: &mut Streaming<DiscoveryResponse>) {
    let next = tokio::time::timeout(QUIET, stream.message()).await;
    assert!(next.is_err(), "unexpected message: {next:?}");
}

#[tokio::test]
async fn fetch_serves_the_svid_rootca_all_and_federated_bundles() {
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let stranger = Domain::new("stranger.test");
    let agent = Agent::start(&own);
    let web = own.identity("/web", &my_selectors().await, &[&partner]);
    let svid = web.svid.clone();
    agent.state.publish(snapshot(
        &own,
        &[partner.bundle(), stranger.bundle()],
        vec![web],
    ));

    // Envoy sends no `workload.spiffe.io` header; none is needed.
    let response = sds(&agent)
        .await
        .fetch_secrets(request(&[
            "spiffe://own.test/web",
            "ROOTCA",
            "ALL",
            "spiffe://partner.test",
            "spiffe://stranger.test",
            "spiffe://own.test/other",
            "unknown",
        ]))
        .await
        .unwrap()
        .into_inner();
    assert!(response.version_info.is_empty() && response.nonce.is_empty());
    let secrets = secrets_of(&response);
    // Names the caller has nothing for (not federated, not its SVID, unknown) are left out.
    assert_eq!(
        names(&secrets),
        [
            "ALL",
            "ROOTCA",
            "spiffe://own.test/web",
            "spiffe://partner.test"
        ]
    );

    // The SVID: chain and key parse, belong together, and match the cached SVID.
    let served = certificate(&secrets["spiffe://own.test/web"]);
    let chain = chain_of(&secrets, "spiffe://own.test/web");
    assert_eq!(chain, svid.chain());
    let key = PrivateKey::from_pkcs8_pem(inline(served.private_key.as_ref())).unwrap();
    assert_eq!(key.pkcs8_der(), svid.key().pkcs8_der());
    let rebuilt = X509Svid::new_checked(chain.clone(), key).unwrap();
    assert_eq!(rebuilt.spiffe_id().to_string(), "spiffe://own.test/web");

    // ROOTCA: the own CA as trusted_ca, and the served SVID verifies against it.
    let root_ca = inline(validation(&secrets["ROOTCA"]).trusted_ca.as_ref());
    assert_eq!(certificates(root_ca), [own.root_der()]);
    let mut trusted = BundleSet::new();
    trusted.insert(Bundle::from_x509_pem(own.td.clone(), root_ca).unwrap());
    verify_x509_svid(&chain, &trusted, SystemTime::now(), SvidUsage::ClientAuth).unwrap();

    // spiffe://partner.test: the federated bundle as trusted_ca.
    let partner_ca = validation(&secrets["spiffe://partner.test"]);
    assert_eq!(
        certificates(inline(partner_ca.trusted_ca.as_ref())),
        [partner.root_der()]
    );

    // ALL: the SPIFFE validator with one entry per trust domain, own first.
    let all = validation(&secrets["ALL"]);
    assert!(all.trusted_ca.is_none());
    let custom = all.custom_validator_config.as_ref().unwrap();
    assert_eq!(custom.name, "envoy.tls.cert_validator.spiffe");
    let typed = custom.typed_config.as_ref().unwrap();
    assert_eq!(typed.type_url, SpiffeCertValidatorConfig::type_url());
    let config = SpiffeCertValidatorConfig::decode(typed.value.as_slice()).unwrap();
    let domains: Vec<(&str, Vec<Vec<u8>>)> = config
        .trust_domains
        .iter()
        .map(|td| {
            (
                td.name.as_str(),
                certificates(inline(td.trust_bundle.as_ref())),
            )
        })
        .collect();
    assert_eq!(
        domains,
        [
            ("own.test", vec![own.root_der()]),
            ("partner.test", vec![partner.root_der()])
        ]
    );
}

#[tokio::test]
async fn no_names_mean_every_svid_and_bundle_and_default_is_the_first_svid() {
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let me = my_selectors().await;
    let agent = Agent::start(&own);
    let web = own.identity("/web", &me, &[&partner]);
    let web_chain = web.svid.chain().to_vec();
    agent.state.publish(snapshot(
        &own,
        &[partner.bundle()],
        vec![web, own.identity("/db", &me[..1], &[])],
    ));
    let mut client = sds(&agent).await;

    let everything = client.fetch_secrets(request(&[])).await.unwrap();
    let secrets = secrets_of(everything.get_ref());
    assert_eq!(
        names(&secrets),
        [
            "spiffe://own.test",
            "spiffe://own.test/db",
            "spiffe://own.test/web",
            "spiffe://partner.test"
        ]
    );
    assert_eq!(
        certificates(inline(
            validation(&secrets["spiffe://own.test"])
                .trusted_ca
                .as_ref()
        )),
        [own.root_der()]
    );

    let default = client.fetch_secrets(request(&["default"])).await.unwrap();
    let secrets = secrets_of(default.get_ref());
    assert_eq!(names(&secrets), ["default"]);
    assert_eq!(chain_of(&secrets, "default"), web_chain);
}

#[tokio::test]
async fn the_stream_follows_the_cache_and_respects_acks_and_nacks() {
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let me = my_selectors().await;
    let agent = Agent::start(&own);
    let web = own.identity("/web", &me, &[&partner]);
    let first_chain = web.svid.chain().to_vec();
    agent
        .state
        .publish(snapshot(&own, &[partner.bundle()], vec![web.clone()]));

    let (requests, incoming) = mpsc::unbounded();
    let mut stream = sds(&agent)
        .await
        .stream_secrets(incoming)
        .await
        .unwrap()
        .into_inner();
    let subscribed = ["spiffe://own.test/web", "ROOTCA"];
    requests.unbounded_send(request(&subscribed)).unwrap();
    let first = next(&mut stream).await;
    assert!(!first.version_info.is_empty() && !first.nonce.is_empty());
    let secrets = secrets_of(&first);
    assert_eq!(names(&secrets), ["ROOTCA", "spiffe://own.test/web"]);
    assert_eq!(chain_of(&secrets, "spiffe://own.test/web"), first_chain);

    // ACK: nothing new. A change the caller did not subscribe to (the partner rotates its
    // CA): nothing new either.
    requests.unbounded_send(ack(&first, &subscribed)).unwrap();
    assert_quiet(&mut stream).await;
    let rotated_partner = Domain::new("partner.test");
    agent.state.publish(snapshot(
        &own,
        &[rotated_partner.bundle()],
        vec![web.clone()],
    ));
    assert_quiet(&mut stream).await;

    // The SVID rotates: a new response with a new version.
    let rotated = own.identity("/web", &me, &[&partner]);
    let second_chain = rotated.svid.chain().to_vec();
    agent
        .state
        .publish(snapshot(&own, &[partner.bundle()], vec![rotated]));
    let second = next(&mut stream).await;
    assert_ne!(second.version_info, first.version_info);
    assert_ne!(second.nonce, first.nonce);
    let secrets = secrets_of(&second);
    assert_eq!(chain_of(&secrets, "spiffe://own.test/web"), second_chain);
    assert_ne!(second_chain, first_chain);

    // NACK (Envoy keeps the previous version and reports an error): no resend loop.
    let nack = DiscoveryRequest {
        version_info: first.version_info.clone(),
        error_detail: Some(RpcStatus {
            code: Code::InvalidArgument as i32,
            message: "cannot load the certificate".into(),
            details: Vec::new(),
        }),
        ..ack(&second, &subscribed)
    };
    requests.unbounded_send(nack).unwrap();
    assert_quiet(&mut stream).await;

    // A request answering an older response is stale and ignored, even with new names.
    requests.unbounded_send(ack(&first, &["ALL"])).unwrap();
    assert_quiet(&mut stream).await;

    // An up-to-date request with new names is answered at once.
    let more = ["spiffe://own.test/web", "ROOTCA", "ALL"];
    requests.unbounded_send(ack(&second, &more)).unwrap();
    let third = next(&mut stream).await;
    assert_eq!(
        names(&secrets_of(&third)),
        ["ALL", "ROOTCA", "spiffe://own.test/web"]
    );
    assert_ne!(third.version_info, second.version_info);

    // The caller loses its entry: PERMISSION_DENIED ends the stream.
    agent
        .state
        .publish(snapshot(&own, &[partner.bundle()], Vec::new()));
    let end = tokio::time::timeout(PROMPT, stream.message())
        .await
        .unwrap();
    assert_eq!(end.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test]
async fn callers_without_an_entry_are_denied() {
    let own = Domain::new("own.test");
    let agent = Agent::start(&own);
    let other = other_uid_selector();
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![own.identity("/web", &[other], &[])],
    ));
    let mut client = sds(&agent).await;

    let fetch = client.fetch_secrets(request(&["ROOTCA"])).await;
    assert_eq!(fetch.unwrap_err().code(), Code::PermissionDenied);

    let (requests, incoming) = mpsc::unbounded();
    requests.unbounded_send(request(&["ROOTCA"])).unwrap();
    let stream = client.stream_secrets(incoming).await;
    assert_eq!(stream.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test]
async fn unsynced_delta_and_foreign_types_are_refused() {
    let own = Domain::new("own.test");
    let agent = Agent::start(&own);
    let mut client = sds(&agent).await;

    let unsynced = client.fetch_secrets(request(&["ROOTCA"])).await;
    assert_eq!(unsynced.unwrap_err().code(), Code::Unavailable);

    agent.state.publish(snapshot(
        &own,
        &[],
        vec![own.identity("/web", &my_selectors().await, &[])],
    ));
    let cluster = DiscoveryRequest {
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..request(&["ROOTCA"])
    };
    let foreign = client.fetch_secrets(cluster.clone()).await;
    assert_eq!(foreign.unwrap_err().code(), Code::InvalidArgument);

    // On a stream, a foreign type ends the stream.
    let (requests, incoming) = mpsc::unbounded();
    let mut stream = client.stream_secrets(incoming).await.unwrap().into_inner();
    requests.unbounded_send(cluster).unwrap();
    let end = tokio::time::timeout(PROMPT, stream.message())
        .await
        .unwrap();
    assert_eq!(end.unwrap_err().code(), Code::InvalidArgument);

    let (_delta_requests, incoming) = mpsc::unbounded::<DeltaDiscoveryRequest>();
    let delta = client.delta_secrets(incoming).await;
    assert_eq!(delta.unwrap_err().code(), Code::Unimplemented);
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable() {
    let own = Domain::new("own.test");
    let mut agent = Agent::start(&own);
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![own.identity("/web", &my_selectors().await, &[])],
    ));
    let (requests, incoming) = mpsc::unbounded();
    let mut stream = sds(&agent)
        .await
        .stream_secrets(incoming)
        .await
        .unwrap()
        .into_inner();
    requests.unbounded_send(request(&["ROOTCA"])).unwrap();
    next(&mut stream).await;

    agent.stop().await;
    let end = tokio::time::timeout(PROMPT, stream.message())
        .await
        .unwrap();
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
}
