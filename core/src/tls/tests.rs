use std::sync::RwLock;
use std::time::SystemTime;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::bundle::{Bundle, BundleSet};
use crate::keys::{KeyType, PrivateKey};
use crate::x509::{CaParams, CaSigner, spiffe_id_of};

const HOUR: Duration = Duration::from_secs(3600);

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn root_ca(trust_domain: &str) -> CaSigner {
    CaSigner::self_signed(
        &CaParams::new(TrustDomain::new(trust_domain).unwrap()),
        PrivateKey::generate(KeyType::EcP256).unwrap(),
    )
    .unwrap()
}

fn bundle_of(ca: &CaSigner) -> Bundle {
    let mut bundle = Bundle::new(ca.trust_domain().clone());
    bundle.add_x509_authority(ca.root_authority().unwrap());
    bundle
}

fn bundles(cas: &[&CaSigner]) -> Arc<dyn BundleSource> {
    Arc::new(cas.iter().map(|ca| bundle_of(ca)).collect::<BundleSet>())
}

fn svid(ca: &CaSigner, spiffe_id: &str) -> X509Svid {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let chain = ca
        .mint_x509_svid(&id(spiffe_id), &key.public_key_der().unwrap(), HOUR, &[])
        .unwrap();
    X509Svid::new_checked(chain, key).unwrap()
}

/// What each side saw: the peer's SPIFFE ID (if it sent a certificate) or the error text.
struct Outcome {
    client: Result<Option<SpiffeId>, String>,
    server: Result<Option<SpiffeId>, String>,
    version: Option<rustls::ProtocolVersion>,
}

fn peer_id(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    certs.map(|certs| spiffe_id_of(&certs[0]).unwrap())
}

/// Runs one TLS connection over loopback: the client sends "ping", the server answers "pong".
/// The client dials a name that appears in no certificate, so no host name check may pass.
async fn handshake(client: ClientConfig, server: ServerConfig) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        Ok::<_, std::io::Error>(peer_id(tls.get_ref().1.peer_certificates()))
    });

    let connector = TlsConnector::from(Arc::new(client));
    let mut version = None;
    let client = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("unrelated.invalid").unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        version = tls.get_ref().1.protocol_version();
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        Ok::<_, std::io::Error>(peer_id(tls.get_ref().1.peer_certificates()))
    }
    .await
    .map_err(|e| e.to_string());
    let server = server_task.await.unwrap().map_err(|e| e.to_string());
    Outcome {
        client,
        server,
        version,
    }
}

/// Two workloads of example.org, each with its SVID and the trust domain's bundle.
struct Pair {
    ca: CaSigner,
    client: X509Svid,
    server: X509Svid,
}

impl Pair {
    fn new() -> Self {
        let ca = root_ca("example.org");
        Self {
            client: svid(&ca, "spiffe://example.org/client"),
            server: svid(&ca, "spiffe://example.org/server"),
            ca,
        }
    }

    fn client_config(&self, authorizer: Authorizer) -> ClientConfig {
        client_config(Some(&self.client), bundles(&[&self.ca]), authorizer).unwrap()
    }

    fn server_config(&self, authorizer: Authorizer) -> ServerConfig {
        server_config(&self.server, Some(bundles(&[&self.ca])), authorizer).unwrap()
    }
}

#[test]
fn authorizers_accept_and_refuse() {
    let web = id("spiffe://example.org/web");
    let db = id("spiffe://example.org/db");
    let foreign = id("spiffe://partner.example/web");
    let cases: [(Authorizer, [bool; 3]); 5] = [
        (Authorizer::Any, [true, true, true]),
        (Authorizer::Exact(web.clone()), [true, false, false]),
        (
            Authorizer::OneOf(vec![web.clone(), foreign.clone()]),
            [true, false, true],
        ),
        (
            Authorizer::MemberOf(TrustDomain::new("example.org").unwrap()),
            [true, true, false],
        ),
        (
            Authorizer::predicate(|id| id.path().starts_with("/d")),
            [false, true, false],
        ),
    ];
    for (authorizer, expected) in cases {
        for (peer, allowed) in [&web, &db, &foreign].into_iter().zip(expected) {
            let result = authorizer.authorize(peer);
            assert_eq!(result.is_ok(), allowed, "{authorizer:?} on {peer}");
            if let Err(e) = result {
                assert!(matches!(e, TlsError::Unauthorized { .. }));
            }
        }
    }
    let err = Authorizer::Exact(web.clone()).authorize(&db).unwrap_err();
    assert_eq!(
        err.to_string(),
        "peer SPIFFE ID spiffe://example.org/db is not authorized: expected spiffe://example.org/web"
    );
    assert_eq!(
        format!("{:?}", Authorizer::OneOf(vec![web, db])),
        "Authorizer(expected one of spiffe://example.org/web, spiffe://example.org/db)"
    );
}

#[tokio::test]
async fn mutual_tls_with_exact_ids_on_both_sides() {
    let pair = Pair::new();
    let outcome = handshake(
        pair.client_config(Authorizer::Exact(id("spiffe://example.org/server"))),
        pair.server_config(Authorizer::Exact(id("spiffe://example.org/client"))),
    )
    .await;
    assert_eq!(
        outcome.client.unwrap(),
        Some(id("spiffe://example.org/server"))
    );
    assert_eq!(
        outcome.server.unwrap(),
        Some(id("spiffe://example.org/client"))
    );
    assert_eq!(outcome.version, Some(rustls::ProtocolVersion::TLSv1_3));
}

/// Checklist §11.6 item 11 / FED-23: a valid SVID with the wrong ID is refused by the client.
#[tokio::test]
async fn client_refuses_a_server_with_another_id() {
    let ca = root_ca("example.com");
    let server = svid(&ca, "spiffe://example.com/other");
    let client = client_config(
        None,
        bundles(&[&ca]),
        Authorizer::Exact(id("spiffe://example.com/spiffe-bundle-server")),
    )
    .unwrap();
    let outcome = handshake(
        client,
        server_config(&server, None, Authorizer::Any).unwrap(),
    )
    .await;
    let err = outcome.client.unwrap_err();
    assert!(
        err.contains("Unauthorized") && err.contains("spiffe://example.com/other"),
        "{err}"
    );
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn server_refuses_a_client_with_another_id() {
    let pair = Pair::new();
    let outcome = handshake(
        pair.client_config(Authorizer::Exact(id("spiffe://example.org/server"))),
        pair.server_config(Authorizer::Exact(id("spiffe://example.org/admin"))),
    )
    .await;
    let err = outcome.server.unwrap_err();
    assert!(
        err.contains("Unauthorized") && err.contains("spiffe://example.org/client"),
        "{err}"
    );
    assert!(outcome.client.is_err(), "the client learns of the refusal");
}

#[tokio::test]
async fn server_requires_a_client_svid_when_it_has_bundles() {
    let pair = Pair::new();
    let client = client_config(None, bundles(&[&pair.ca]), Authorizer::Any).unwrap();
    let outcome = handshake(client, pair.server_config(Authorizer::Any)).await;
    assert!(outcome.server.is_err());
    assert!(outcome.client.is_err());
}

#[tokio::test]
async fn server_without_bundles_asks_for_no_client_certificate() {
    let pair = Pair::new();
    let client = client_config(None, bundles(&[&pair.ca]), Authorizer::Any).unwrap();
    let server = server_config(&pair.server, None, Authorizer::Any).unwrap();
    let outcome = handshake(client, server).await;
    assert_eq!(outcome.server.unwrap(), None);
    assert_eq!(
        outcome.client.unwrap(),
        Some(id("spiffe://example.org/server"))
    );
}

#[tokio::test]
async fn client_refuses_a_server_of_an_untrusted_trust_domain() {
    let ours = root_ca("example.org");
    let partner = root_ca("partner.example");
    let server = svid(&partner, "spiffe://partner.example/server");
    let client = client_config(None, bundles(&[&ours]), Authorizer::Any).unwrap();
    let outcome = handshake(
        client,
        server_config(&server, None, Authorizer::Any).unwrap(),
    )
    .await;
    let err = outcome.client.unwrap_err();
    assert!(err.contains("NoBundle"), "{err}");
}

/// The insecure bootstrap configuration connects to a server no bundle vouches for.
#[tokio::test]
async fn the_insecure_client_accepts_any_server() {
    let partner = root_ca("partner.example");
    let server = svid(&partner, "spiffe://partner.example/server");
    let outcome = handshake(
        insecure_client_config().unwrap(),
        server_config(&server, None, Authorizer::Any).unwrap(),
    )
    .await;
    assert_eq!(
        outcome.client.unwrap(),
        Some(id("spiffe://partner.example/server"))
    );
    assert_eq!(outcome.server.unwrap(), None);
}

#[tokio::test]
async fn tls12_mutual_handshake() {
    let pair = Pair::new();
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerCertVerifier::new(
            bundles(&[&pair.ca]),
            Authorizer::Exact(id("spiffe://example.org/server")),
        )))
        .with_client_auth_cert(cert_chain(&pair.client), private_key(&pair.client))
        .unwrap();
    let outcome = handshake(
        client,
        pair.server_config(Authorizer::Exact(id("spiffe://example.org/client"))),
    )
    .await;
    assert_eq!(outcome.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(
        outcome.server.unwrap(),
        Some(id("spiffe://example.org/client"))
    );
    assert!(outcome.client.is_ok());
}

/// A bundle source whose content can change, as a rotated or refreshed bundle does.
#[derive(Default)]
struct Rotating(RwLock<BundleSet>);

impl BundleSource for Rotating {
    fn bundle(&self, trust_domain: &TrustDomain) -> Option<Arc<Bundle>> {
        self.0.read().unwrap().bundle(trust_domain)
    }
}

fn verify_server(
    verifier: &SpiffeServerCertVerifier,
    svid: &X509Svid,
    at: SystemTime,
) -> Result<ServerCertVerified, rustls::Error> {
    let chain = cert_chain(svid);
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap();
    verifier.verify_server_cert(
        &chain[0],
        &chain[1..],
        &ServerName::try_from("ignored.invalid").unwrap(),
        &[],
        UnixTime::since_unix_epoch(since_epoch),
    )
}

#[test]
fn an_existing_verifier_sees_rotated_bundles() {
    let old_ca = root_ca("example.org");
    let new_ca = root_ca("example.org");
    let source = Arc::new(Rotating::default());
    source.0.write().unwrap().insert(bundle_of(&old_ca));
    let verifier = SpiffeServerCertVerifier::new(source.clone(), Authorizer::Any);
    let now = SystemTime::now();

    let new_svid = svid(&new_ca, "spiffe://example.org/server");
    assert!(matches!(
        verify_server(&verifier, &new_svid, now),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
    ));

    // The trust domain publishes both CAs during the rotation, then drops the old one.
    let mut both = bundle_of(&old_ca);
    both.add_x509_authority(new_ca.root_authority().unwrap());
    source.0.write().unwrap().insert(both);
    verify_server(&verifier, &new_svid, now).unwrap();
    let old_svid = svid(&old_ca, "spiffe://example.org/server");
    verify_server(&verifier, &old_svid, now).unwrap();

    source.0.write().unwrap().insert(bundle_of(&new_ca));
    assert!(verify_server(&verifier, &old_svid, now).is_err());
    verify_server(&verifier, &new_svid, now).unwrap();

    // Removing the trust domain's bundle makes its peers untrusted (WAPI-30).
    source
        .0
        .write()
        .unwrap()
        .remove(&TrustDomain::new("example.org").unwrap());
    assert!(verify_server(&verifier, &new_svid, now).is_err());
}

#[test]
fn verifier_errors_map_to_rustls_certificate_errors() {
    let ca = root_ca("example.org");
    let server = svid(&ca, "spiffe://example.org/server");
    let verifier = SpiffeServerCertVerifier::new(bundles(&[&ca]), Authorizer::Any);
    assert!(matches!(
        verify_server(&verifier, &server, SystemTime::now() + 2 * HOUR),
        Err(rustls::Error::InvalidCertificate(CertificateError::Expired))
    ));
    assert!(matches!(
        verify_server(&verifier, &server, SystemTime::now() - HOUR),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet
        ))
    ));
    let strict = SpiffeServerCertVerifier::new(
        bundles(&[&ca]),
        Authorizer::Exact(id("spiffe://example.org/other")),
    );
    let Err(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
        verify_server(&strict, &server, SystemTime::now())
    else {
        panic!("expected an authorization failure");
    };
    assert!(
        other.0.to_string().contains("is not authorized"),
        "{other:?}"
    );
}

#[test]
fn client_verifier_demands_a_certificate_and_hints_no_names() {
    let ca = root_ca("example.org");
    let verifier = SpiffeClientCertVerifier::new(bundles(&[&ca]), Authorizer::Any);
    assert!(verifier.offer_client_auth());
    assert!(verifier.client_auth_mandatory());
    assert!(verifier.root_hint_subjects().is_empty());
    assert!(!verifier.supported_verify_schemes().is_empty());
}

#[test]
fn installing_the_default_provider_is_idempotent() {
    install_default_crypto_provider();
    install_default_crypto_provider();
    assert!(CryptoProvider::get_default().is_some());
    // A default-provider builder works now without naming a provider.
    let _ = ClientConfig::builder();
}

#[test]
fn client_certificates_are_mandatory_unless_asked_otherwise() {
    use rustls::server::danger::ClientCertVerifier as _;
    let bundles: Arc<dyn BundleSource> = Arc::new(crate::BundleSet::new());
    assert!(
        SpiffeClientCertVerifier::new(Arc::clone(&bundles), Authorizer::Any)
            .client_auth_mandatory()
    );
    assert!(!SpiffeClientCertVerifier::optional(bundles, Authorizer::Any).client_auth_mandatory());
}
