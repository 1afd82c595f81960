//! The hub's shared state: registry, CA, the own bundle as published, the hub's own SVID, and
//! the change signal that wakes agent sync streams.
//!
//! Several replicas may share one registry. Each keeps its own CA and JWT keys and records the
//! authorities it publishes under its replica id; the own bundle every replica serves is the
//! union stored in the registry, reloaded whenever the change feed says another replica
//! changed it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use fedhub_bundle_endpoint::BundlePublisher;
use fedhub_core::x509::X509Svid;
use fedhub_core::{Bundle, PrivateKey, SpiffeId, TrustDomain};
use fedhub_oidc_discovery::OidcPublisher;
use fedhub_registry::{ChangeKind, Registry, RegistryError, ReplicaAuthorities};
use fedhub_serve::SwappableCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::ca::{CaError, CaManager, CaOptions, KeyStatus};
use crate::config::{HUB_ID_PATH, HubConfig, ServingProfile};

/// The actor recorded in the audit log for changes the hub makes by itself, followed by the
/// replica id: `fedhub-hub:<replica id>`.
pub const SYSTEM_ACTOR: &str = "fedhub-hub";

/// How often the change feed is polled for writes made by other replicas.
const CHANGE_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often the CA schedule and the hub SVID are checked.
const CA_TICK_INTERVAL: Duration = Duration::from_secs(15);

/// Why the hub could not start or do its work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The CA failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A stored bundle could not be read.
    #[error("stored bundle of {trust_domain} is unreadable: {reason}")]
    StoredBundle {
        /// Its trust domain.
        trust_domain: TrustDomain,
        /// Why.
        reason: String,
    },
    /// The OIDC issuer is unusable.
    #[error(transparent)]
    Oidc(#[from] fedhub_oidc_discovery::OidcError),
    /// The data directory cannot be created or made private.
    #[error("data_dir {path}: {error}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The underlying error, told in the message (not a `source`, so that a chain printed
        /// with its causes names it once).
        error: std::io::Error,
    },
    /// TLS material could not be prepared.
    #[error("TLS: {0}")]
    Tls(String),
    /// The replica id could not be read or created.
    #[error(transparent)]
    ReplicaId(#[from] crate::replica::ReplicaIdError),
    /// The data directory is in use by another process, or cannot be locked.
    #[error(transparent)]
    DataDirLocked(#[from] fedhub_files::LockError),
}

/// At most this many changes are read to see whether the own bundle is among them; past it,
/// the own bundle is reloaded anyway.
const CHANGES_SCAN_LIMIT: u32 = 1000;

struct Inner {
    /// The exclusive lock on the data directory, held as long as the hub lives.
    _data_dir_lock: fedhub_files::DirLock,
    config: HubConfig,
    replica_id: String,
    registry: Registry,
    ca: RwLock<CaManager>,
    own_bundle: watch::Sender<Arc<Bundle>>,
    /// Held while the own bundle is published or reloaded, so that what is served follows
    /// the order of the registry's writes.
    own_bundle_lock: tokio::sync::Mutex<()>,
    /// Counts changes of the CA's keys; housekeeping publishes again while the published
    /// count is behind (after a failed publication).
    key_generation: AtomicU64,
    /// The key generation last published.
    published_generation: AtomicU64,
    revision: watch::Sender<u64>,
    bundle_endpoint: BundlePublisher,
    oidc: Option<OidcPublisher>,
    hub_svid: RwLock<Arc<X509Svid>>,
    server_cert: Arc<SwappableCert>,
}

/// The hub of one trust domain. Cheap to clone; every clone shares the same state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("trust_domain", &self.inner.config.trust_domain)
            .finish_non_exhaustive()
    }
}

fn certified_key(svid: &X509Svid) -> Result<CertifiedKey, HubError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            svid.key().pkcs8_der().to_vec(),
        )))
        .map_err(|e| HubError::Tls(e.to_string()))?;
    let chain = svid
        .chain()
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    Ok(CertifiedKey::new(chain, key))
}

impl Hub {
    /// Opens the registry (running migrations) and the CA, publishes the own bundle, and mints
    /// the hub's own SVID. Nothing is bound yet.
    ///
    /// # Errors
    /// [`HubError`] when storage, keys or the OIDC issuer are unusable.
    pub async fn open(config: HubConfig) -> Result<Self, HubError> {
        fedhub_files::ensure_dir(&config.data_dir, 0o700).map_err(|error| HubError::DataDir {
            path: config.data_dir.clone(),
            error,
        })?;
        // Before anything in the directory is read or written: two hubs on one data directory
        // would rotate one CA and overwrite each other's keys.
        let data_dir_lock = fedhub_files::DirLock::acquire(&config.data_dir)?;
        let replica_id = crate::replica::load_or_create(&config.data_dir)?;
        let registry = Registry::connect(&config.database_url).await?;
        let now = SystemTime::now();
        let ca = CaManager::open(
            CaOptions {
                trust_domain: config.trust_domain.clone(),
                dir: config.data_dir.join("ca"),
                ttl: config.ca.ttl,
                x509_key_type: config.ca.key_type,
                jwt_key_type: config.jwt_key_type,
                upstream: config
                    .ca
                    .upstream
                    .as_ref()
                    .map(|f| (f.cert_file.clone(), f.key_file.clone())),
                jwt_issuer: config.oidc.as_ref().map(|o| o.issuer.clone()),
            },
            now,
        )?;
        let oidc = config
            .oidc
            .as_ref()
            .map(|o| OidcPublisher::new(&o.issuer, o.tls.is_none()))
            .transpose()?;
        let hub_svid = Arc::new(mint_hub_svid(&ca, &config, now)?);
        let server_cert = SwappableCert::new(certified_key(&hub_svid)?);
        let empty = Arc::new(Bundle::new(config.trust_domain.clone()));
        let revision = registry.latest_revision().await?;
        let hub = Self {
            inner: Arc::new(Inner {
                _data_dir_lock: data_dir_lock,
                replica_id,
                registry,
                ca: RwLock::new(ca),
                own_bundle: watch::channel(empty).0,
                own_bundle_lock: tokio::sync::Mutex::new(()),
                key_generation: AtomicU64::new(0),
                published_generation: AtomicU64::new(0),
                revision: watch::channel(revision).0,
                bundle_endpoint: BundlePublisher::new(Vec::new()),
                oidc,
                hub_svid: RwLock::new(hub_svid),
                server_cert,
                config,
            }),
        };
        hub.publish_own_bundle().await?;
        Ok(hub)
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.inner.config.trust_domain
    }

    /// This replica's id, kept in the data directory (see [`crate::replica`]).
    pub fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The own bundle as currently served: the union of the authorities every replica of
    /// this trust domain publishes.
    pub fn own_bundle(&self) -> Arc<Bundle> {
        self.inner.own_bundle.borrow().clone()
    }

    /// Follows the own bundle.
    pub fn subscribe_own_bundle(&self) -> watch::Receiver<Arc<Bundle>> {
        self.inner.own_bundle.subscribe()
    }

    /// Follows the registry's change feed revision (writes by this or any other replica).
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.inner.revision.subscribe()
    }

    /// The bundle endpoint's document publisher.
    pub fn bundle_endpoint(&self) -> &BundlePublisher {
        &self.inner.bundle_endpoint
    }

    /// The OIDC discovery publisher, when OIDC is enabled.
    pub fn oidc(&self) -> Option<&OidcPublisher> {
        self.inner.oidc.as_ref()
    }

    /// The certificate resolver of the hub's TLS endpoints (its own SVID, rotated).
    pub fn server_cert(&self) -> Arc<SwappableCert> {
        Arc::clone(&self.inner.server_cert)
    }

    /// The hub's own X509-SVID.
    pub fn hub_svid(&self) -> Arc<X509Svid> {
        Arc::clone(&read(&self.inner.hub_svid))
    }

    /// Read access to the CA.
    pub fn ca(&self) -> RwLockReadGuard<'_, CaManager> {
        read(&self.inner.ca)
    }

    fn ca_mut(&self) -> RwLockWriteGuard<'_, CaManager> {
        self.inner
            .ca
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes sync streams after a local write, without waiting for the next poll. When the
    /// own bundle is among the changes (another replica published), it is reloaded first, so
    /// woken sync streams send the new one.
    ///
    /// # Errors
    /// [`HubError::Registry`] when the revision cannot be read.
    pub async fn notify_changed(&self) -> Result<(), HubError> {
        let latest = self.inner.registry.latest_revision().await?;
        let seen = *self.inner.revision.borrow();
        if latest <= seen {
            return Ok(());
        }
        let changes = self
            .inner
            .registry
            .changes_since(seen, CHANGES_SCAN_LIMIT)
            .await?;
        let own = self.trust_domain().name();
        let own_bundle_changed = changes.len() >= CHANGES_SCAN_LIMIT as usize
            || changes.first().is_none_or(|c| c.revision != seen + 1)
            || changes
                .iter()
                .any(|c| c.kind == ChangeKind::Bundle && c.key == own);
        if own_bundle_changed {
            self.reload_own_bundle().await?;
        }
        // Revisions only move forward, also when polls and local writes race.
        self.inner.revision.send_if_modified(|current| {
            let newer = latest > *current;
            if newer {
                *current = latest;
            }
            newer
        });
        Ok(())
    }

    /// Serves the own bundle as stored now, if it differs from the one served.
    ///
    /// # Errors
    /// [`HubError`] when the stored bundle cannot be read.
    async fn reload_own_bundle(&self) -> Result<(), HubError> {
        let _serving = self.inner.own_bundle_lock.lock().await;
        let td = self.trust_domain();
        let Some(record) = self.inner.registry.get_bundle(td).await? else {
            return Ok(());
        };
        let bundle = Bundle::from_json(td.clone(), record.document.as_bytes()).map_err(|e| {
            HubError::StoredBundle {
                trust_domain: td.clone(),
                reason: e.to_string(),
            }
        })?;
        if *self.own_bundle() != bundle {
            tracing::info!(
                sequence = bundle.sequence(),
                x509_authorities = bundle.x509_authorities().len(),
                jwt_authorities = bundle.jwt_authorities().len(),
                "own bundle changed by another replica"
            );
            self.serve_own_bundle(bundle, record.document);
        }
        Ok(())
    }

    /// Serves `bundle` (stored as `document`) on the bundle endpoint, OIDC and to subscribers.
    fn serve_own_bundle(&self, bundle: Bundle, document: String) {
        self.inner.bundle_endpoint.publish(document);
        if let Some(oidc) = &self.inner.oidc {
            oidc.publish_keys(&bundle);
        }
        self.inner.own_bundle.send_replace(Arc::new(bundle));
    }

    /// Publishes this replica's CA keys and serves the own bundle: the union of every
    /// replica's unexpired authorities, stored with the next sequence number when its content
    /// changed (see [`Registry::publish_replica_authorities`]). Returns whether it changed.
    ///
    /// # Errors
    /// [`HubError`] when the write fails.
    pub async fn publish_own_bundle(&self) -> Result<bool, HubError> {
        self.publish_own_bundle_at(&self.system_actor(), SystemTime::now())
            .await
    }

    /// [`Hub::publish_own_bundle`] at `now`, audited as done by `actor`: authorities expired
    /// then leave the bundle.
    async fn publish_own_bundle_at(&self, actor: &str, now: SystemTime) -> Result<bool, HubError> {
        let serving = self.inner.own_bundle_lock.lock().await;
        // Read before the keys, so the keys published are at least this generation.
        let generation = self.inner.key_generation.load(Ordering::Acquire);
        let authorities = self.ca().published_authorities();
        let publication = ReplicaAuthorities {
            replica_id: self.inner.replica_id.clone(),
            trust_domain: self.trust_domain().clone(),
            x509: authorities
                .x509
                .into_iter()
                .map(|(authority, not_after)| (authority, OffsetDateTime::from(not_after)))
                .collect(),
            jwt: authorities
                .jwt
                .into_iter()
                .map(|(authority, not_after)| (authority, OffsetDateTime::from(not_after)))
                .collect(),
            refresh_hint: Some(
                self.inner
                    .config
                    .bundle_endpoint
                    .as_ref()
                    .map_or(Duration::from_secs(300), |b| b.refresh_hint),
            ),
        };
        let published = self
            .inner
            .registry
            .publish_replica_authorities(actor, &publication, OffsetDateTime::from(now))
            .await?;
        self.inner
            .published_generation
            .fetch_max(generation, Ordering::AcqRel);
        if published.changed {
            tracing::info!(
                replica_id = %self.inner.replica_id,
                sequence = published.bundle.sequence(),
                x509_authorities = published.bundle.x509_authorities().len(),
                jwt_authorities = published.bundle.jwt_authorities().len(),
                "own bundle updated"
            );
        }
        self.serve_own_bundle(published.bundle, published.record.document);
        drop(serving);
        if published.changed {
            self.notify_changed().await?;
        }
        Ok(published.changed)
    }

    /// Forces a rotation: publishes new keys now; with `activate`, they also sign from now on.
    /// Returns the keys' states afterwards.
    ///
    /// # Errors
    /// [`HubError`] when keys cannot be created or the bundle not stored.
    pub async fn rotate(&self, activate: bool) -> Result<Vec<KeyStatus>, HubError> {
        self.rotate_as(&self.system_actor(), activate).await
    }

    /// [`Hub::rotate`] on behalf of `actor` (an admin's `uid:<uid>`), whom the audit log
    /// names for the publication (`own_bundle.publish`) and the activation
    /// (`own_bundle.activate`, `own_bundle.retire`).
    ///
    /// # Errors
    /// [`HubError`] when keys cannot be created or the bundle not stored.
    pub async fn rotate_as(&self, actor: &str, activate: bool) -> Result<Vec<KeyStatus>, HubError> {
        let activation = {
            let mut ca = self.ca_mut();
            let before = ca.status();
            ca.prepare_next(SystemTime::now())?;
            if activate {
                ca.activate_prepared()?;
            }
            key_audit::activation(self, &before, &ca)
        };
        self.inner.key_generation.fetch_add(1, Ordering::AcqRel);
        self.publish_own_bundle_at(actor, SystemTime::now()).await?;
        self.audit_activation(actor, &activation).await;
        // The hub's own SVID stays on the CA peers already hold (see `hub_svid_signer`).
        Ok(self.ca().status())
    }

    /// This replica's CA keys (X.509 and JWT) with their states, for operators.
    pub fn key_status(&self) -> Vec<KeyStatus> {
        self.ca().status()
    }

    fn renew_hub_svid(&self, now: SystemTime) -> Result<(), HubError> {
        let svid = Arc::new(mint_hub_svid(&self.ca(), &self.inner.config, now)?);
        self.inner.server_cert.set(certified_key(&svid)?);
        *self
            .inner
            .hub_svid
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = svid;
        Ok(())
    }

    /// One round of housekeeping: applies the CA rotation schedule (publishing the bundle when
    /// the keys changed, when an authority of any replica expired, or when an earlier
    /// publication failed) and renews the hub SVID at half its lifetime or when another CA is to
    /// sign it ([`CaManager::hub_svid_signer`]).
    ///
    /// # Errors
    /// [`HubError`] when keys or storage fail; the previous state stays in force.
    pub async fn tick(&self, now: SystemTime) -> Result<(), HubError> {
        let (changed, activation) = {
            let mut ca = self.ca_mut();
            let before = ca.status();
            let changed = ca.tick(now)?;
            (changed, key_audit::activation(self, &before, &ca))
        };
        let actor = self.system_actor();
        // Recorded first: the CA's state has changed already, whatever fails below.
        self.audit_activation(&actor, &activation).await;
        if changed {
            self.inner.key_generation.fetch_add(1, Ordering::AcqRel);
        }
        // Another replica's authority may have expired, even one of a replica that stopped.
        let expired = self
            .inner
            .registry
            .next_authority_expiry(self.trust_domain())
            .await?
            .is_some_and(|at| at <= OffsetDateTime::from(now));
        let unpublished = self.inner.key_generation.load(Ordering::Acquire)
            > self.inner.published_generation.load(Ordering::Acquire);
        if changed || expired || unpublished {
            self.publish_own_bundle_at(&actor, now).await?;
        }
        let svid = self.hub_svid();
        let lifetime = self.inner.config.x509_svid_ttl;
        let renew_at = svid.not_after() - lifetime / 2;
        let signer = self.ca().hub_svid_signer(now, lifetime);
        if now >= renew_at || !issued_by(svid.leaf(), signer.certificate()) {
            self.renew_hub_svid(now)?;
        }
        Ok(())
    }

    /// Runs the hub's background loops until `shutdown` resolves: the CA schedule and the
    /// change feed poll (so writes of other replicas reach this replica's agents).
    pub async fn run_background(&self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ca_tick = tokio::time::interval(CA_TICK_INTERVAL);
        let mut poll = tokio::time::interval(CHANGE_POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ca_tick.tick() => {
                    if let Err(error) = self.tick(SystemTime::now()).await {
                        tracing::error!(%error, "CA housekeeping failed; retrying");
                    }
                }
                _ = poll.tick() => {
                    if let Err(error) = self.notify_changed().await {
                        tracing::warn!(%error, "change feed poll failed");
                    }
                }
            }
        }
    }

    /// The SPIFFE ID the hub presents on its TLS endpoints.
    pub fn hub_id(&self) -> SpiffeId {
        hub_id(&self.inner.config)
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn hub_id(config: &HubConfig) -> SpiffeId {
    match config.bundle_endpoint.as_ref().map(|b| &b.profile) {
        Some(ServingProfile::HttpsSpiffe { spiffe_id }) => spiffe_id.clone(),
        _ => config
            .trust_domain
            .spiffe_id(HUB_ID_PATH)
            .unwrap_or_else(|_| config.trust_domain.id()),
    }
}

/// Whether `leaf` names `ca` as its issuer (CA names carry a random key id, so they differ
/// between the hub's CAs).
fn issued_by(leaf: &[u8], ca: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    match (
        X509Certificate::from_der(leaf),
        X509Certificate::from_der(ca),
    ) {
        (Ok((_, leaf)), Ok((_, ca))) => leaf.issuer().as_raw() == ca.subject().as_raw(),
        _ => false,
    }
}

/// Mints the hub's own SVID with [`CaManager::hub_svid_signer`].
fn mint_hub_svid(
    ca: &CaManager,
    config: &HubConfig,
    now: SystemTime,
) -> Result<X509Svid, HubError> {
    let key = PrivateKey::generate(fedhub_core::KeyType::EcP256).map_err(CaError::from)?;
    let spki = key.public_key_der().map_err(CaError::from)?;
    let chain = ca
        .hub_svid_signer(now, config.x509_svid_ttl)
        .mint_x509_svid(&hub_id(config), &spki, config.x509_svid_ttl, &[])
        .map_err(CaError::from)?;
    X509Svid::new_checked(chain, key).map_err(|e| HubError::Ca(CaError::X509(e)))
}

mod key_audit;
#[cfg(test)]
mod tests;
