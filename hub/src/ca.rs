//! The hub's certificate authority: X.509 CA keys and JWT signing keys with scheduled rotation,
//! persisted in the data directory so a restart keeps them.
//!
//! Every key goes through three states. A key is **prepared** (published in the bundle but not
//! yet signing) when the active key has used half its lifetime, **activated** (signing) at five
//! sixths, and the previous key is **retired**: it stays published until it expires, which is
//! also the latest expiry of anything it signed (SVIDs are clamped to their signer's expiry).
//! With the default 24 h lifetime a key is published 8 h before it signs anything, far more
//! than the 3–5 refresh hints federated trust domains need to fetch it.
//!
//! Operators can force a rotation: [`CaManager::prepare_next`] publishes a new key now and
//! [`CaManager::activate_prepared`] makes it sign now.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fedhub_core::jwt::{JwtAlgorithm, JwtSigner};
use fedhub_core::pem::certificates_pem;
use fedhub_core::x509::{CaParams, CaSigner, X509Error};
use fedhub_core::{JwtAuthority, KeyType, PrivateKey, SpiffeId, TrustDomain, X509Authority};
use serde::{Deserialize, Serialize};

/// Why the CA could not load, rotate or sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Reading or writing key files failed.
    #[error("CA key storage in {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored key or certificate is unreadable.
    #[error(
        "CA key storage in {path} is corrupt: {reason}; restore it from a backup or move the directory away to start a new CA"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The upstream CA files are unusable.
    #[error("upstream CA: {0}")]
    Upstream(String),
    /// Minting a certificate failed.
    #[error(transparent)]
    X509(#[from] X509Error),
    /// A JWT operation failed.
    #[error(transparent)]
    Jwt(#[from] fedhub_core::JwtError),
    /// Generating or loading a key failed.
    #[error(transparent)]
    Key(#[from] fedhub_core::KeyError),
    /// There is no prepared key to activate.
    #[error("no prepared key to activate: run a rotation first to publish a new key")]
    NothingPrepared,
}

/// The life stage of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Published, not yet signing.
    Prepared,
    /// Signing.
    Active,
    /// No longer signing; published until it expires.
    Retired,
}

/// What operators see of a key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    /// `x509` or `jwt`.
    pub kind: &'static str,
    /// Key id (the JWT `kid`; an opaque id for X.509 CAs).
    pub id: String,
    /// Life stage.
    pub state: KeyState,
    /// When the key was created (unix seconds).
    pub created_at: u64,
    /// When the key expires and leaves the bundle (unix seconds).
    pub not_after: u64,
}

/// The authorities a CA publishes, each with its expiry; see
/// [`CaManager::published_authorities`].
#[derive(Debug, Clone)]
pub struct PublishedAuthorities {
    /// X.509 roots, each until the last CA under it expires.
    pub x509: Vec<(X509Authority, SystemTime)>,
    /// JWT keys, each until it expires.
    pub jwt: Vec<(JwtAuthority, SystemTime)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SlotMeta {
    id: String,
    state: KeyState,
    created_at: u64,
    not_after: u64,
}

impl SlotMeta {
    fn lifetime_fraction_reached(&self, now: u64, numerator: u64, denominator: u64) -> bool {
        let lifetime = self.not_after.saturating_sub(self.created_at);
        now >= self.created_at + lifetime * numerator / denominator
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    x509: Vec<SlotMeta>,
    jwt: Vec<SlotMeta>,
}

struct Slot<S> {
    meta: SlotMeta,
    signer: Arc<S>,
}

type X509Slot = Slot<CaSigner>;
type JwtSlot = Slot<JwtSigner>;

/// What the rotation schedule asks for next, for one kind of key.
enum Step {
    Nothing,
    Create(KeyState),
    Activate { prepared: usize },
}

fn position<S>(slots: &[Slot<S>], state: KeyState) -> Option<usize> {
    slots.iter().position(|s| s.meta.state == state)
}

fn next_step<S>(slots: &[Slot<S>], now: u64) -> Step {
    match (
        position(slots, KeyState::Active),
        position(slots, KeyState::Prepared),
    ) {
        (None, None) => Step::Create(KeyState::Active),
        (None, Some(prepared)) => Step::Activate { prepared },
        (Some(active), Some(prepared))
            if slots[active].meta.lifetime_fraction_reached(now, 5, 6) =>
        {
            Step::Activate { prepared }
        }
        (Some(active), None) if slots[active].meta.lifetime_fraction_reached(now, 1, 2) => {
            Step::Create(KeyState::Prepared)
        }
        _ => Step::Nothing,
    }
}

/// Makes `slots[prepared]` the signing key and retires the previously active one.
fn activate<S>(slots: &mut [Slot<S>], prepared: usize) {
    for slot in slots.iter_mut() {
        if slot.meta.state == KeyState::Active {
            slot.meta.state = KeyState::Retired;
        }
    }
    slots[prepared].meta.state = KeyState::Active;
}

/// Removes expired slots, returning their ids.
fn drop_expired<S>(slots: &mut Vec<Slot<S>>, now: u64) -> Vec<String> {
    let mut removed = Vec::new();
    slots.retain(|s| {
        let keep = s.meta.not_after > now;
        if !keep {
            removed.push(s.meta.id.clone());
        }
        keep
    });
    removed
}

/// The active slot (or, defensively, the newest one).
fn active<S>(slots: &[Slot<S>]) -> &Slot<S> {
    let index = position(slots, KeyState::Active).unwrap_or_else(|| slots.len().saturating_sub(1));
    &slots[index]
}

/// Settings of the CA.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Directory for key files (created 0700).
    pub dir: PathBuf,
    /// Lifetime of each key.
    pub ttl: Duration,
    /// X.509 CA key type.
    pub x509_key_type: KeyType,
    /// JWT signing key type.
    pub jwt_key_type: KeyType,
    /// Upstream CA (chain PEM file, key PEM file) that signs intermediates; `None` for
    /// self-signed roots.
    pub upstream: Option<(PathBuf, PathBuf)>,
    /// `iss` claim of JWT-SVIDs (the OIDC issuer), if any.
    pub jwt_issuer: Option<String>,
}

struct Upstream {
    chain: Vec<Vec<u8>>,
    key: PrivateKey,
}

/// The CA of one hub: loads or creates its keys, rotates them, and signs with the active ones.
pub struct CaManager {
    options: CaOptions,
    upstream: Option<Upstream>,
    x509: Vec<X509Slot>,
    jwt: Vec<JwtSlot>,
}

impl std::fmt::Debug for CaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaManager")
            .field("trust_domain", &self.options.trust_domain)
            .field("keys", &self.status())
            .finish_non_exhaustive()
    }
}

/// The file naming the keys held and their states.
const STATE_FILE: &str = "state.json";

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn random_id() -> String {
    use std::fmt::Write as _;
    let bytes: [u8; 16] = rand::random();
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl CaManager {
    /// Loads the keys stored in `options.dir`, or creates a first active X.509 CA and JWT key
    /// when there are none. Expired keys are dropped and missing active keys replaced.
    ///
    /// # Errors
    /// [`CaError`] when the directory cannot be used or its content is corrupt.
    pub fn open(options: CaOptions, now: SystemTime) -> Result<Self, CaError> {
        fedhub_files::ensure_dir(&options.dir, 0o700).map_err(|source| CaError::Io {
            path: options.dir.clone(),
            source,
        })?;
        let upstream = options
            .upstream
            .as_ref()
            .map(|(cert, key)| load_upstream(cert, key))
            .transpose()?;
        let mut manager = Self {
            options,
            upstream,
            x509: Vec::new(),
            jwt: Vec::new(),
        };
        let state_path = manager.state_path();
        if state_path.exists() {
            let raw = std::fs::read(&state_path).map_err(|source| CaError::Io {
                path: state_path.clone(),
                source,
            })?;
            let state: StateFile = serde_json::from_slice(&raw).map_err(|e| CaError::Corrupt {
                path: state_path.clone(),
                reason: e.to_string(),
            })?;
            // An expired key is dropped unread: its files may already be gone (a crash after
            // the state that still listed it was written, while its files were removed).
            let now_s = unix(now);
            for meta in state.x509.into_iter().filter(|m| m.not_after > now_s) {
                let signer = manager.load_x509(&meta)?;
                manager.x509.push(X509Slot {
                    meta,
                    signer: Arc::new(signer),
                });
            }
            for meta in state.jwt.into_iter().filter(|m| m.not_after > now_s) {
                let signer = manager.load_jwt(&meta)?;
                manager.jwt.push(JwtSlot {
                    meta,
                    signer: Arc::new(signer),
                });
            }
        }
        manager.tick(now)?;
        manager.remove_unlisted_files();
        Ok(manager)
    }

    fn state_path(&self) -> PathBuf {
        self.options.dir.join(STATE_FILE)
    }

    fn key_path(&self, kind: &str, id: &str) -> PathBuf {
        self.options.dir.join(format!("{kind}-{id}.key"))
    }

    fn cert_path(&self, id: &str) -> PathBuf {
        self.options.dir.join(format!("x509-{id}.pem"))
    }

    fn load_x509(&self, meta: &SlotMeta) -> Result<CaSigner, CaError> {
        let key = read_key(&self.key_path("x509", &meta.id))?;
        let cert_path = self.cert_path(&meta.id);
        let text = std::fs::read(&cert_path).map_err(|source| CaError::Io {
            path: cert_path.clone(),
            source,
        })?;
        let chain: Vec<Vec<u8>> = pem::parse_many(&text)
            .map_err(|e| CaError::Corrupt {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?
            .into_iter()
            .map(pem::Pem::into_contents)
            .collect();
        CaSigner::new(chain, key).map_err(|e| CaError::Corrupt {
            path: cert_path,
            reason: e.to_string(),
        })
    }

    fn load_jwt(&self, meta: &SlotMeta) -> Result<JwtSigner, CaError> {
        let key = read_key(&self.key_path("jwt", &meta.id))?;
        self.jwt_signer(&meta.id, &key)
    }

    fn jwt_signer(&self, kid: &str, key: &PrivateKey) -> Result<JwtSigner, CaError> {
        let signer = JwtSigner::new(kid, key, JwtAlgorithm::for_key_type(key.key_type()))?;
        Ok(match &self.options.jwt_issuer {
            Some(issuer) => signer.with_issuer(issuer.clone()),
            None => signer,
        })
    }

    fn persist_state(&self) -> Result<(), CaError> {
        let state = StateFile {
            x509: self.x509.iter().map(|s| s.meta.clone()).collect(),
            jwt: self.jwt.iter().map(|s| s.meta.clone()).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| CaError::Corrupt {
            path: self.state_path(),
            reason: e.to_string(),
        })?;
        write(&self.state_path(), &bytes)
    }

    fn new_x509(&self, state: KeyState, now: SystemTime) -> Result<X509Slot, CaError> {
        let id = random_id();
        let key = PrivateKey::generate(self.options.x509_key_type)?;
        let params = CaParams::new(self.options.trust_domain.clone())
            .with_ttl(self.options.ttl)
            .with_issued_at(now)
            .with_common_name(format!("fedhub CA {}", &id[..8]));
        let signer = match &self.upstream {
            None => CaSigner::self_signed(&params, key)?,
            Some(upstream) => CaSigner::intermediate(&params, key, &upstream.chain, &upstream.key)?,
        };
        write(
            &self.key_path("x509", &id),
            signer.key().to_pkcs8_pem().as_bytes(),
        )?;
        let pem = certificates_pem(signer.chain().iter().map(Vec::as_slice));
        write(&self.cert_path(&id), pem.as_bytes())?;
        Ok(X509Slot {
            meta: SlotMeta {
                id,
                state,
                created_at: unix(now),
                not_after: unix(signer.not_after()),
            },
            signer: Arc::new(signer),
        })
    }

    fn new_jwt(&self, state: KeyState, now: SystemTime) -> Result<JwtSlot, CaError> {
        let id = random_id();
        let key = PrivateKey::generate(self.options.jwt_key_type)?;
        let signer = self.jwt_signer(&id, &key)?;
        write(&self.key_path("jwt", &id), key.to_pkcs8_pem().as_bytes())?;
        Ok(JwtSlot {
            meta: SlotMeta {
                id,
                state,
                created_at: unix(now),
                not_after: unix(now + self.options.ttl),
            },
            signer: Arc::new(signer),
        })
    }

    fn remove_files(&self, kind: &str, id: &str) {
        let _ = std::fs::remove_file(self.key_path(kind, id));
        if kind == "x509" {
            let _ = std::fs::remove_file(self.cert_path(id));
        }
    }

    /// Removes key and certificate files the state does not list: left by a crash between
    /// writing a new key and the state that names it, or before an expired key's files were
    /// removed; and the temporary files of key or state writes a crash interrupted. Only files
    /// named as this manager names them are touched.
    fn remove_unlisted_files(&self) {
        let Ok(entries) = std::fs::read_dir(&self.options.dir) else {
            return;
        };
        let listed = self.published_ids();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            // A key file whose write a crash interrupted holds a key no state names.
            if let Some(target) = fedhub_files::interrupted_write_of(name)
                && (key_file_id(target).is_some() || target == STATE_FILE)
            {
                tracing::info!(file = %entry.path().display(), "removing the temporary file of an interrupted write");
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(id) = key_file_id(name) else {
                continue;
            };
            if !listed.iter().any(|listed| listed == id) {
                tracing::info!(file = %entry.path().display(), "removing a CA key file no key uses");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Applies the rotation schedule at `now`: drops expired keys, prepares a successor at half
    /// of the active key's lifetime, activates it at five sixths, and replaces a missing or
    /// expired active key at once. Returns whether the set of published keys changed.
    ///
    /// # Errors
    /// [`CaError`] when a new key cannot be created or stored.
    pub fn tick(&mut self, now: SystemTime) -> Result<bool, CaError> {
        let before = self.published_ids();
        let now_s = unix(now);

        // Expired keys leave the bundle; their files go once the state without them is stored,
        // so that a crash in between never leaves a state naming missing files.
        let expired_x509 = drop_expired(&mut self.x509, now_s);
        let expired_jwt = drop_expired(&mut self.jwt, now_s);
        match next_step(&self.x509, now_s) {
            Step::Create(state) => {
                let slot = self.new_x509(state, now)?;
                self.x509.push(slot);
            }
            Step::Activate { prepared } => activate(&mut self.x509, prepared),
            Step::Nothing => {}
        }
        match next_step(&self.jwt, now_s) {
            Step::Create(state) => {
                let slot = self.new_jwt(state, now)?;
                self.jwt.push(slot);
            }
            Step::Activate { prepared } => activate(&mut self.jwt, prepared),
            Step::Nothing => {}
        }
        let changed = before != self.published_ids();
        self.persist_state()?;
        for id in expired_x509 {
            self.remove_files("x509", &id);
        }
        for id in expired_jwt {
            self.remove_files("jwt", &id);
        }
        Ok(changed)
    }

    fn published_ids(&self) -> Vec<String> {
        self.x509
            .iter()
            .map(|s| s.meta.id.clone())
            .chain(self.jwt.iter().map(|s| s.meta.id.clone()))
            .collect()
    }

    /// Forces a rotation's first step: publishes a new X.509 CA and JWT key now (unless one is
    /// already prepared). They sign nothing until activated. Returns whether anything changed.
    ///
    /// # Errors
    /// [`CaError`] when a key cannot be created or stored.
    pub fn prepare_next(&mut self, now: SystemTime) -> Result<bool, CaError> {
        let mut changed = false;
        if position(&self.x509, KeyState::Prepared).is_none() {
            let slot = self.new_x509(KeyState::Prepared, now)?;
            self.x509.push(slot);
            changed = true;
        }
        if position(&self.jwt, KeyState::Prepared).is_none() {
            let slot = self.new_jwt(KeyState::Prepared, now)?;
            self.jwt.push(slot);
            changed = true;
        }
        self.persist_state()?;
        Ok(changed)
    }

    /// Forces a rotation's second step: the prepared keys sign from now on and the previous
    /// ones retire (still published until they expire).
    ///
    /// # Errors
    /// [`CaError::NothingPrepared`] when no key was prepared.
    pub fn activate_prepared(&mut self) -> Result<(), CaError> {
        let x509_prepared = position(&self.x509, KeyState::Prepared);
        let jwt_prepared = position(&self.jwt, KeyState::Prepared);
        if x509_prepared.is_none() && jwt_prepared.is_none() {
            return Err(CaError::NothingPrepared);
        }
        if let Some(prepared) = x509_prepared {
            activate(&mut self.x509, prepared);
        }
        if let Some(prepared) = jwt_prepared {
            activate(&mut self.jwt, prepared);
        }
        self.persist_state()
    }

    /// The X.509 CA that signs now.
    pub fn active_x509(&self) -> Arc<CaSigner> {
        Arc::clone(&active(&self.x509).signer)
    }

    /// The JWT key that signs now, and when it expires (no token outlives it).
    pub fn active_jwt(&self) -> (Arc<JwtSigner>, SystemTime) {
        let slot = active(&self.jwt);
        (
            Arc::clone(&slot.signer),
            UNIX_EPOCH + Duration::from_secs(slot.meta.not_after),
        )
    }

    /// The X.509 authorities to publish: the root of every held CA (one per key for
    /// self-signed CAs; the single upstream root otherwise).
    pub fn x509_authorities(&self) -> Vec<X509Authority> {
        let mut authorities: Vec<X509Authority> = Vec::new();
        for slot in &self.x509 {
            if let Some(root) = slot.signer.root_authority()
                && !authorities.contains(&root)
            {
                authorities.push(root);
            }
        }
        authorities
    }

    /// The JWT authorities to publish: every held JWT key.
    pub fn jwt_authorities(&self) -> Vec<JwtAuthority> {
        self.jwt.iter().map(|s| s.signer.jwt_authority()).collect()
    }

    /// What this CA publishes, each authority with the time it may leave the bundle: the root
    /// of every held X.509 CA until the last CA under it expires, and every JWT key until it
    /// expires. Replicas record these in the registry; the own bundle is their union.
    pub fn published_authorities(&self) -> PublishedAuthorities {
        let mut x509: Vec<(X509Authority, SystemTime)> = Vec::new();
        for slot in &self.x509 {
            let Some(root) = slot.signer.root_authority() else {
                continue;
            };
            let not_after = UNIX_EPOCH + Duration::from_secs(slot.meta.not_after);
            match x509.iter_mut().find(|(held, _)| *held == root) {
                Some((_, held_until)) => *held_until = (*held_until).max(not_after),
                None => x509.push((root, not_after)),
            }
        }
        let jwt = self
            .jwt
            .iter()
            .map(|s| {
                (
                    s.signer.jwt_authority(),
                    UNIX_EPOCH + Duration::from_secs(s.meta.not_after),
                )
            })
            .collect();
        PublishedAuthorities { x509, jwt }
    }

    /// The CA that signs the hub's own SVID: the one published longest among those valid for
    /// at least `ttl` more (else the active one). The hub presents its SVID on the bundle
    /// endpoint, where `https_spiffe` peers authenticate it with the bundle they fetched
    /// before; a CA published moments ago (as with `bundle rotate --activate`) is not in it
    /// yet, and a peer that cannot authenticate the endpoint can never fetch the bundle that
    /// would let it. Keys are listed in the order they were created.
    pub fn hub_svid_signer(&self, now: SystemTime, ttl: Duration) -> Arc<CaSigner> {
        let needed = unix(now + ttl);
        self.x509
            .iter()
            .find(|slot| slot.meta.not_after >= needed)
            .map_or_else(|| self.active_x509(), |slot| Arc::clone(&slot.signer))
    }

    /// Mints an X509-SVID with the active CA; see [`CaSigner::mint_x509_svid`].
    ///
    /// # Errors
    /// [`CaError::X509`] when the ID or key is refused.
    pub fn mint_x509_svid(
        &self,
        spiffe_id: &SpiffeId,
        public_key_spki_der: &[u8],
        ttl: Duration,
        dns_names: &[String],
    ) -> Result<Vec<Vec<u8>>, CaError> {
        Ok(self
            .active_x509()
            .mint_x509_svid(spiffe_id, public_key_spki_der, ttl, dns_names)?)
    }

    /// Signs a JWT-SVID with the active JWT key; the lifetime is clamped to the key's expiry.
    /// Returns the token and its expiry.
    ///
    /// # Errors
    /// [`CaError::Jwt`] when the subject or audience is refused.
    pub fn sign_jwt_svid(
        &self,
        subject: &SpiffeId,
        audience: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(String, SystemTime), CaError> {
        let (signer, not_after) = self.active_jwt();
        let remaining = not_after.duration_since(now).unwrap_or_default();
        let ttl = ttl.min(remaining).max(Duration::from_secs(1));
        let token = signer.sign(subject, audience, ttl, now)?;
        Ok((token, now + ttl))
    }

    /// How the audit log names the held key `id` of `kind` (`x509` or `jwt`, as in
    /// [`KeyStatus`]): the SHA-256 fingerprint of its CA certificate (for a self-signed CA the
    /// fingerprint of the authority in the bundle) or the JWT key id. `None` for a key not
    /// held.
    pub fn audit_key_name(&self, kind: &str, id: &str) -> Option<String> {
        match kind {
            "x509" => self.x509.iter().find(|s| s.meta.id == id).map(|s| {
                X509Authority::from_der_unchecked(s.signer.certificate().to_vec())
                    .sha256_fingerprint()
            }),
            "jwt" => self
                .jwt
                .iter()
                .find(|s| s.meta.id == id)
                .map(|s| s.signer.jwt_authority().kid().to_owned()),
            _ => None,
        }
    }

    /// Every held key with its state, for operators.
    pub fn status(&self) -> Vec<KeyStatus> {
        let x509 = self.x509.iter().map(|s| ("x509", &s.meta));
        let jwt = self.jwt.iter().map(|s| ("jwt", &s.meta));
        x509.chain(jwt)
            .map(|(kind, meta)| KeyStatus {
                kind,
                id: meta.id.clone(),
                state: meta.state,
                created_at: meta.created_at,
                not_after: meta.not_after,
            })
            .collect()
    }
}

/// The key id in a file name this manager writes (`x509-<id>.key`, `x509-<id>.pem`,
/// `jwt-<id>.key`).
fn key_file_id(name: &str) -> Option<&str> {
    let stem = name
        .strip_suffix(".key")
        .or_else(|| name.strip_suffix(".pem").filter(|s| s.starts_with("x509-")))?;
    let id = stem
        .strip_prefix("x509-")
        .or_else(|| stem.strip_prefix("jwt-"))?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

fn write(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    fedhub_files::write_private(path, contents).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_key(path: &Path) -> Result<PrivateKey, CaError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })?;
    PrivateKey::from_pkcs8_pem(&text).map_err(|e| CaError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads the upstream CA files as the start does, for `fedhub hub validate`.
///
/// # Errors
/// [`CaError::Upstream`] naming the file that cannot be used.
pub(crate) fn check_upstream(cert_file: &Path, key_file: &Path) -> Result<(), CaError> {
    load_upstream(cert_file, key_file).map(drop)
}

fn load_upstream(cert_file: &Path, key_file: &Path) -> Result<Upstream, CaError> {
    let cert_text = std::fs::read(cert_file)
        .map_err(|e| CaError::Upstream(format!("cannot read {}: {e}", cert_file.display())))?;
    let chain: Vec<Vec<u8>> = pem::parse_many(&cert_text)
        .map_err(|e| CaError::Upstream(format!("{}: {e}", cert_file.display())))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if chain.is_empty() {
        return Err(CaError::Upstream(format!(
            "{} holds no CERTIFICATE block",
            cert_file.display()
        )));
    }
    fedhub_files::check_private(key_file)
        .map_err(|e| CaError::Upstream(format!("{}: {e}", key_file.display())))?;
    let key_text = std::fs::read_to_string(key_file)
        .map_err(|e| CaError::Upstream(format!("cannot read {}: {e}", key_file.display())))?;
    let key = PrivateKey::from_pkcs8_pem(&key_text)
        .map_err(|e| CaError::Upstream(format!("{}: {e}", key_file.display())))?;
    Ok(Upstream { chain, key })
}

#[cfg(test)]
mod tests;
