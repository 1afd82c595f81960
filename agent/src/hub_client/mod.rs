//! The agent's side of the hub's node API (`fedhub.node.v1.Node`), over TLS.
//!
//! The hub is authenticated by its X509-SVID: it must verify against the trust domain's bundle
//! the agent holds ([`TrustAnchors`], read on every handshake, so bundle rotations apply at
//! once) and name the configured hub SPIFFE ID. Attestation runs without a client certificate;
//! every other call presents the agent SVID (mutual TLS). The only exception is the insecure
//! bootstrap for demos: the very first attestation, before any bundle is held, does not
//! authenticate the hub.

mod attest;
pub(crate) mod diagnose;
mod issuer;

use std::io;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use fedhub_core::tls::{client_config, insecure_client_config};
use fedhub_core::x509::{SvidUsage, X509Svid, verify_x509_svid};
use fedhub_core::{Authorizer, Bundle, BundleSource, PrivateKey, SpiffeId, TrustDomain};
use fedhub_proto::node::AgentSvid;
use fedhub_proto::node::node_client;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

pub(crate) use self::attest::{NodeCredentials, attest};
pub(crate) use self::issuer::HubJwtIssuer;
use crate::config::HubAddress;

/// A node API client on one connection.
pub(crate) type NodeClient = node_client::NodeClient<Channel>;

/// Time to set up a connection (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a unary call may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// HTTP/2 pings that notice a dead connection while the sync stream is quiet.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The trust domain's bundle the hub is authenticated with; replaced whenever the hub hands
/// out a new one.
#[derive(Debug)]
pub(crate) struct TrustAnchors(RwLock<Arc<Bundle>>);

impl TrustAnchors {
    pub(crate) fn new(bundle: Bundle) -> Self {
        Self(RwLock::new(Arc::new(bundle)))
    }

    pub(crate) fn get(&self) -> Arc<Bundle> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn set(&self, bundle: Arc<Bundle>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = bundle;
    }

    /// Whether no X.509 authority is held (nothing can authenticate the hub).
    pub(crate) fn is_empty(&self) -> bool {
        self.get().x509_authorities().is_empty()
    }
}

impl BundleSource for TrustAnchors {
    fn bundle(&self, trust_domain: &TrustDomain) -> Option<Arc<Bundle>> {
        let bundle = self.get();
        (bundle.trust_domain() == trust_domain).then_some(bundle)
    }
}

/// The connection the sync loop currently holds, shared with the JWT-SVID issuer.
#[derive(Debug, Default)]
pub(crate) struct HubLink(Mutex<Option<NodeClient>>);

impl HubLink {
    pub(crate) fn set(&self, client: Option<NodeClient>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = client;
    }

    pub(crate) fn get(&self) -> Option<NodeClient> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Where the hub is and who it must be.
#[derive(Debug, Clone)]
pub(crate) struct HubEndpoint {
    pub(crate) address: HubAddress,
    pub(crate) hub_id: SpiffeId,
    pub(crate) anchors: Arc<TrustAnchors>,
}

/// Why a connection to the hub failed: what to check when the failure says it (a wrong
/// bundle, trust domain or hub ID, not a hub), else the whole cause chain.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the hub at {address}: {}", .hint.as_deref().unwrap_or(&self.reason))]
pub(crate) struct ConnectError {
    address: String,
    /// The raw cause chain.
    reason: String,
    /// What to check, from [`diagnose::connect_failure`].
    hint: Option<String>,
}

impl ConnectError {
    /// The raw cause chain, for the debug log when the message is a translation.
    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }
}

impl HubEndpoint {
    /// Connects with mutual TLS, presenting `svid`.
    pub(crate) async fn connect(&self, svid: &X509Svid) -> Result<NodeClient, ConnectError> {
        let config = client_config(
            Some(svid),
            Arc::clone(&self.anchors) as Arc<dyn BundleSource>,
            Authorizer::Exact(self.hub_id.clone()),
        )
        .map_err(|e| self.error(&e))?;
        self.open(config).await
    }

    /// Connects without a client certificate, for attestation. With `verify_hub` false the
    /// hub is not authenticated at all (insecure bootstrap).
    pub(crate) async fn connect_for_attestation(
        &self,
        verify_hub: bool,
    ) -> Result<NodeClient, ConnectError> {
        let config = if verify_hub {
            client_config(
                None,
                Arc::clone(&self.anchors) as Arc<dyn BundleSource>,
                Authorizer::Exact(self.hub_id.clone()),
            )
            .map_err(|e| self.error(&e))?
        } else {
            insecure_client_config().map_err(|e| self.error(&e))?
        };
        self.open(config).await
    }

    async fn open(&self, mut config: ClientConfig) -> Result<NodeClient, ConnectError> {
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = TlsConnector::from(Arc::new(config));
        let server_name =
            ServerName::try_from(self.address.host().to_owned()).map_err(|e| self.error(&e))?;
        let host = self.address.host().to_owned();
        let port = self.address.port();
        let endpoint = Endpoint::from_shared(format!("http://{}", self.address))
            .map_err(|e| self.error(&e))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let connector = connector.clone();
                let server_name = server_name.clone();
                let host = host.clone();
                async move {
                    let tcp = TcpStream::connect((host.as_str(), port)).await?;
                    tcp.set_nodelay(true)?;
                    let tls = connector.connect(server_name, tcp).await?;
                    Ok::<_, io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|e| self.error(&e))?;
        Ok(
            NodeClient::new(channel)
                .max_decoding_message_size(fedhub_proto::MAX_NODE_MESSAGE_BYTES),
        )
    }

    fn error(&self, error: &(dyn std::error::Error + 'static)) -> ConnectError {
        let trust_domain = self.anchors.get().trust_domain().clone();
        ConnectError {
            address: self.address.to_string(),
            reason: error_chain(error),
            hint: diagnose::connect_failure(error, &self.expected(&trust_domain)),
        }
    }

    /// What the hub must be, for [`diagnose`].
    pub(crate) fn expected<'a>(&'a self, trust_domain: &'a TrustDomain) -> diagnose::Expected<'a> {
        diagnose::Expected {
            address: &self.address,
            hub_id: &self.hub_id,
            trust_domain,
        }
    }
}

/// An error with its causes: `a: b: c` (repeated texts once).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Checks an agent SVID the hub issued (attestation or renewal) for `key`: the trust domain's
/// bundle it came with is usable, the SVID passes the own-SVID checks, names an ID of the
/// trust domain, and chains to that bundle.
pub(crate) fn accept_agent_svid(
    message: AgentSvid,
    key: PrivateKey,
    trust_domain: &TrustDomain,
    now: SystemTime,
) -> Result<(X509Svid, Bundle), String> {
    let bundle = Bundle::from_json(trust_domain.clone(), &message.bundle)
        .map_err(|e| format!("its bundle is unusable: {e}"))?;
    if bundle.x509_authorities().is_empty() {
        return Err("its bundle has no X.509 authorities".into());
    }
    let svid = X509Svid::new_checked(message.cert_chain, key)
        .map_err(|e| format!("the agent SVID is unusable: {e}"))?;
    if svid.spiffe_id().as_str() != message.spiffe_id
        || !svid.spiffe_id().is_member_of(trust_domain)
    {
        return Err(format!(
            "the agent SVID names {} (announced {:?}), not an ID of {trust_domain}",
            svid.spiffe_id(),
            message.spiffe_id
        ));
    }
    let anchors = TrustAnchors::new(bundle);
    verify_x509_svid(svid.chain(), &anchors, now, SvidUsage::ClientAuth)
        .map_err(|e| format!("the agent SVID does not verify against the bundle: {e}"))?;
    let bundle = Arc::unwrap_or_clone(anchors.get());
    Ok((svid, bundle))
}

/// A status the hub answered, in words for people: its message, then what its gRPC code
/// means (never the code's Rust name).
pub(crate) fn describe_status(status: &tonic::Status) -> String {
    let meaning = status.code().description();
    let mut chars = meaning.chars();
    let meaning = chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect::<String>()
    });
    format!("the hub answered: {} ({meaning})", status.message())
}

#[cfg(test)]
mod tests {
    use fedhub_core::KeyType;

    use super::*;
    use crate::testing::{self, domain, td};

    /// The hub's answer to an attestation: an agent SVID at `path`, and `bundle`.
    fn issued(ca: &fedhub_core::CaSigner, bundle: &Bundle, path: &str) -> (AgentSvid, PrivateKey) {
        let (chain, key) = testing::issued(ca, path);
        let message = AgentSvid {
            spiffe_id: ca.trust_domain().spiffe_id(path).unwrap().to_string(),
            cert_chain: chain,
            bundle: bundle.to_json().into_bytes(),
        };
        (message, key)
    }

    #[test]
    fn an_agent_svid_is_accepted_only_when_it_fits_its_bundle() {
        let (ca, bundle) = domain("own.test");
        let now = SystemTime::now();
        let (message, key) = issued(&ca, &bundle, "/fedhub/agent/a");
        let (svid, got) = accept_agent_svid(message, key, &td("own.test"), now).unwrap();
        assert_eq!(
            svid.spiffe_id().as_str(),
            "spiffe://own.test/fedhub/agent/a"
        );
        assert!(got.same_authorities(&bundle));

        // Another CA's bundle.
        let (_, other_bundle) = domain("own.test");
        let (mut message, key) = issued(&ca, &bundle, "/fedhub/agent/a");
        message.bundle = other_bundle.to_json().into_bytes();
        let error = accept_agent_svid(message, key, &td("own.test"), now).unwrap_err();
        assert!(error.contains("does not verify"), "{error}");

        // A key that is not the SVID's.
        let (message, _) = issued(&ca, &bundle, "/fedhub/agent/a");
        let stranger = PrivateKey::generate(KeyType::EcP256).unwrap();
        assert!(accept_agent_svid(message, stranger, &td("own.test"), now).is_err());

        // An announced ID that differs from the certificate's.
        let (mut message, key) = issued(&ca, &bundle, "/fedhub/agent/a");
        message.spiffe_id = "spiffe://own.test/fedhub/agent/b".into();
        assert!(accept_agent_svid(message, key, &td("own.test"), now).is_err());

        // A bundle without authorities.
        let (mut message, key) = issued(&ca, &bundle, "/fedhub/agent/a");
        message.bundle = Bundle::new(td("own.test")).to_json().into_bytes();
        assert!(accept_agent_svid(message, key, &td("own.test"), now).is_err());
    }

    #[test]
    fn trust_anchors_answer_for_their_trust_domain_only() {
        let (_, bundle) = domain("own.test");
        let anchors = TrustAnchors::new(Bundle::new(td("own.test")));
        assert!(anchors.is_empty());
        anchors.set(Arc::new(bundle));
        assert!(!anchors.is_empty());
        assert!(anchors.bundle(&td("own.test")).is_some());
        assert!(anchors.bundle(&td("other.test")).is_none());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct Wrapper(#[source] io::Error);

    #[test]
    fn error_chains_name_every_cause_once() {
        let inner = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = io::Error::other(inner);
        assert_eq!(error_chain(&outer), "connection refused");
        let wrapped = Wrapper(io::Error::other("tcp connect error"));
        assert_eq!(error_chain(&wrapped), "transport error: tcp connect error");
    }
}
