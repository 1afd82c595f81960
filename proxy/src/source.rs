//! The X509-SVID and bundles the proxy works with, kept current from the Workload API's
//! `FetchX509SVID` stream.
//!
//! [`X509Source::start`] spawns a task that follows the stream: every message replaces the
//! [`Material`] at once, so the next handshake presents the newest SVID and checks peers
//! against the newest bundles, while connections already open keep what they negotiated. A
//! broken stream is reopened with growing pauses (up to [`MAX_BACKOFF`]); until the first
//! message the source holds nothing and the proxy serves nothing.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fedhub_core::bundle::BundleSource;
use fedhub_core::{Bundle, SpiffeId, TrustDomain, X509Svid};
use fedhub_proto::workload::{X509svidRequest, X509svidResponse};
use fedhub_workload_client::x509::{DecodeError, X509Context};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::error::SourceError;

/// The first pause before reconnecting after a failed attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Time to connect to the Workload API socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One X.509 context from the Workload API, ready for handshakes.
pub struct Material {
    svid: X509Svid,
    certified_key: Arc<CertifiedKey>,
    bundles: BTreeMap<TrustDomain, Arc<Bundle>>,
}

impl Material {
    /// The SVID this proxy presents (the first, default one of the message).
    pub fn svid(&self) -> &X509Svid {
        &self.svid
    }

    /// The own SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        self.svid.spiffe_id()
    }

    /// The chain and signing key for rustls.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified_key)
    }

    /// The bundle held for `trust_domain` (own or federated).
    pub fn bundle(&self, trust_domain: &TrustDomain) -> Option<Arc<Bundle>> {
        self.bundles.get(trust_domain).cloned()
    }

    /// The trust domains whose bundles are held: the own one and the federated ones.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.bundles.keys()
    }

    /// Decodes a `FetchX509SVID` message (checked by `fedhub-workload-client`, as for the
    /// CLI): its first SVID with its key and the own trust domain's bundle, and the federated
    /// bundles.
    ///
    /// # Errors
    /// [`SourceError::Malformed`] naming the field at fault.
    pub fn from_response(response: X509svidResponse) -> Result<Self, SourceError> {
        let context = X509Context::parse(response)?;
        let first = context
            .svids
            .into_iter()
            .next()
            .ok_or(SourceError::Malformed(DecodeError::NoSvid))?;
        let certified_key = certified_key(&first.svid)?;
        let mut bundles: BTreeMap<TrustDomain, Arc<Bundle>> = context
            .federated
            .into_iter()
            .map(|(td, bundle)| (td, Arc::new(bundle)))
            .collect();
        bundles.insert(
            first.svid.spiffe_id().trust_domain(),
            Arc::new(first.bundle),
        );
        Ok(Self {
            svid: first.svid,
            certified_key,
            bundles,
        })
    }
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("spiffe_id", self.svid.spiffe_id())
            .field("trust_domains", &self.bundles.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The rustls form of an SVID: its chain and a signing key from the aws-lc-rs provider.
fn certified_key(svid: &X509Svid) -> Result<Arc<CertifiedKey>, SourceError> {
    let chain: Vec<CertificateDer<'static>> = svid
        .chain()
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.key().pkcs8_der().to_vec()));
    let signing_key = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| SourceError::Key(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
}

/// The latest [`Material`] the Workload API sent, shared by every listener of a proxy. Cheap
/// to clone; the task following the stream ends when the last clone is dropped.
#[derive(Clone)]
pub struct X509Source {
    current: watch::Receiver<Option<Arc<Material>>>,
}

impl std::fmt::Debug for X509Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Source")
            .field("current", &self.current())
            .finish()
    }
}

impl X509Source {
    /// Starts following the Workload API at `socket` in a spawned task. Returns at once; the
    /// source holds nothing until the agent's first message ([`X509Source::ready`]).
    pub fn start(socket: &Path) -> Self {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(follow(socket.to_owned(), tx));
        Self { current: rx }
    }

    /// The latest material, `None` before the agent's first message.
    pub fn current(&self) -> Option<Arc<Material>> {
        self.current.borrow().clone()
    }

    /// Waits for the first material.
    pub async fn ready(&self) -> Arc<Material> {
        let mut rx = self.current.clone();
        loop {
            if let Some(material) = rx.borrow_and_update().clone() {
                return material;
            }
            if rx.changed().await.is_err() {
                // The follower is gone without ever delivering: nothing will come.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl X509Source {
    /// Follows the material as it changes (for callers that watch it themselves, such as
    /// benchmarks).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Material>>> {
        self.current.clone()
    }

    /// Completes once the source holds material without a bundle for `trust_domain`: the
    /// agent stopped federating with it. Never completes while no material has arrived.
    pub fn withdrawn(
        &self,
        trust_domain: TrustDomain,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.current.clone();
        async move {
            loop {
                let gone = rx
                    .borrow_and_update()
                    .as_ref()
                    .is_some_and(|m| !m.bundles.contains_key(&trust_domain));
                if gone {
                    return;
                }
                if rx.changed().await.is_err() {
                    // The follower is gone: the material can no longer change.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

impl BundleSource for X509Source {
    fn bundle(&self, trust_domain: &TrustDomain) -> Option<Arc<Bundle>> {
        self.current
            .borrow()
            .as_ref()
            .and_then(|m| m.bundles.get(trust_domain).cloned())
    }
}

/// Follows the stream until every [`X509Source`] is dropped.
async fn follow(socket: PathBuf, tx: watch::Sender<Option<Arc<Material>>>) {
    let mut failures: u32 = 0;
    loop {
        let outcome = tokio::select! {
            () = tx.closed() => return,
            outcome = stream(&socket, &tx, &mut failures) => outcome,
        };
        let delay = match failures {
            0 => Duration::ZERO,
            n => FIRST_BACKOFF
                .saturating_mul(1 << (n - 1).min(16))
                .min(MAX_BACKOFF),
        };
        failures = failures.saturating_add(1);
        let serving = if tx.borrow().is_some() {
            "new handshakes keep the last SVID and bundles received"
        } else {
            "nothing is served until the agent answers"
        };
        match outcome {
            Ok(()) => tracing::info!(
                socket = %socket.display(),
                "the agent closed the X509-SVID stream; reconnecting"
            ),
            // The agent is restarting or shutting down: expected, and retried at once.
            Err(
                error @ SourceError::Status {
                    code: tonic::Code::Unavailable,
                    ..
                },
            ) if delay.is_zero() => tracing::info!(
                socket = %socket.display(),
                %error,
                "the agent is unavailable; reconnecting; {serving}"
            ),
            Err(error) => tracing::warn!(
                socket = %socket.display(),
                %error,
                retry_in = ?delay,
                "cannot follow the Workload API; {serving}"
            ),
        }
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One stream: connects, applies every message, returns when it ends.
async fn stream(
    socket: &Path,
    tx: &watch::Sender<Option<Arc<Material>>>,
    failures: &mut u32,
) -> Result<(), SourceError> {
    let mut client = fedhub_workload_client::connect(socket, Some(CONNECT_TIMEOUT))
        .await
        .map_err(|e| SourceError::Connect(crate::common::innermost(&e)))?;
    let mut stream = client
        .fetch_x509svid(X509svidRequest {})
        .await
        .map_err(SourceError::from)?
        .into_inner();
    while let Some(message) = stream.message().await.map_err(SourceError::from)? {
        *failures = 0;
        match Material::from_response(message) {
            Ok(material) => {
                tracing::info!(
                    spiffe_id = %material.spiffe_id(),
                    trust_domains = %material
                        .trust_domains()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    "X509-SVID and bundles received; new handshakes use them"
                );
                tx.send_replace(Some(Arc::new(material)));
            }
            Err(error) => {
                tracing::error!(%error, "skipping an unusable X509-SVID message");
            }
        }
    }
    Ok(())
}
