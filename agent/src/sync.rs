//! From the hub's sync snapshots to a published [`Snapshot`]: the entries this agent serves,
//! the bundles, and an X509-SVID per entry, minted by the hub for a key generated here.
//!
//! An entry gets a new SVID when it has none, when its SVID is past half its lifetime, or when
//! the entry's revision changed. Removed entries lose their SVID at once. SVIDs past their
//! expiry are never published, also while the hub is unreachable.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedhub_core::x509::{SvidUsage, X509Svid, verify_x509_svid};
use fedhub_core::{Bundle, BundleSource, KeyType, PrivateKey, SpiffeId, TrustDomain};
use fedhub_proto::node::{
    Entry as EntryMessage, SignX509SvidsRequest, SignX509SvidsResponse, SignedX509Svid,
    SyncSnapshot, X509SvidParams,
};
use tonic::{Code, Status};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::cache::{Identity, Snapshot};

/// The most SVIDs asked for in one `SignX509Svids` call (the hub's limit).
pub(crate) const MAX_BATCH: usize = 64;

/// How long an entry the hub refused to sign waits before the next attempt (unless the entry
/// changes first).
pub(crate) const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// Signs X509-SVIDs: the hub's `SignX509Svids`.
pub(crate) trait SvidSigner {
    /// Asks for one batch of SVIDs.
    fn sign(
        &mut self,
        request: SignX509SvidsRequest,
    ) -> impl Future<Output = Result<SignX509SvidsResponse, Status>> + Send;
}

/// When an SVID valid from `not_before` to `not_after` should be replaced: half its lifetime.
pub(crate) fn refresh_time(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_before + lifetime / 2
}

/// The validity period of a DER certificate.
fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let at = |t: i64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).ok()?));
    Some((
        at(cert.validity().not_before.timestamp())?,
        at(cert.validity().not_after.timestamp())?,
    ))
}

/// When `svid` should be replaced: half way between its start and its expiry. Its start is when
/// it was `received` if known, since issuers backdate `notBefore` (otherwise a short-lived SVID
/// would be due at once, again and again); else its `notBefore`.
pub(crate) fn svid_refresh_time(svid: &X509Svid, received: Option<SystemTime>) -> SystemTime {
    let not_after = svid.not_after();
    let Some((not_before, _)) = validity(svid.leaf()) else {
        return received.map_or(not_after, |at| refresh_time(at, not_after));
    };
    refresh_time(
        received.map_or(not_before, |at| at.max(not_before)),
        not_after,
    )
}

/// Whether the hub refused something about one entry (rather than the call or the agent):
/// then the other entries of a batch are asked for one by one.
fn is_entry_refusal(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound | Code::OutOfRange
    )
}

/// An entry as the hub sent it, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntryView {
    id: String,
    spiffe_id: SpiffeId,
    selectors: Vec<String>,
    federates_with: Vec<TrustDomain>,
    hint: String,
    revision: i64,
}

impl EntryView {
    fn parse(message: EntryMessage, own: &TrustDomain) -> Result<Self, String> {
        let spiffe_id = SpiffeId::parse(&message.spiffe_id)
            .map_err(|e| format!("SPIFFE ID {:?}: {e}", message.spiffe_id))?;
        if !spiffe_id.is_member_of(own) {
            return Err(format!("{spiffe_id} is not in trust domain {own}"));
        }
        let federates_with = message
            .federates_with
            .iter()
            .map(|name| TrustDomain::new(name).map_err(|e| format!("federates_with {name:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id: message.id,
            spiffe_id,
            selectors: message.selectors,
            federates_with,
            hint: message.hint,
            revision: message.revision,
        })
    }
}

/// An SVID held for an entry.
#[derive(Debug, Clone)]
struct Held {
    revision: i64,
    svid: Arc<X509Svid>,
    refresh_at: SystemTime,
}

/// An entry the hub refused to sign, not asked for again before `until` at this revision.
#[derive(Debug, Clone, Copy)]
struct Refused {
    revision: i64,
    until: SystemTime,
}

/// One trust domain's bundle as a [`BundleSource`].
struct Single(Arc<Bundle>);

impl BundleSource for Single {
    fn bundle(&self, trust_domain: &TrustDomain) -> Option<Arc<Bundle>> {
        (trust_domain == self.0.trust_domain()).then(|| Arc::clone(&self.0))
    }
}

/// Why a sync snapshot could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// The own trust domain's bundle is unusable.
    #[error("the hub sent an unusable bundle for {trust_domain}: {reason}")]
    Bundle {
        trust_domain: TrustDomain,
        reason: String,
    },
}

/// What the agent learned from the hub and the SVIDs it holds.
#[derive(Debug)]
pub(crate) struct SyncEngine {
    trust_domain: TrustDomain,
    own_bundle: Option<Arc<Bundle>>,
    own_bundle_json: Vec<u8>,
    federated: BTreeMap<TrustDomain, Arc<Bundle>>,
    entries: Vec<EntryView>,
    held: HashMap<String, Held>,
    refused: HashMap<String, Refused>,
    revision: Option<i64>,
}

impl SyncEngine {
    pub(crate) fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            own_bundle: None,
            own_bundle_json: Vec::new(),
            federated: BTreeMap::new(),
            entries: Vec::new(),
            held: HashMap::new(),
            refused: HashMap::new(),
            revision: None,
        }
    }

    /// The registry revision of the last applied snapshot.
    pub(crate) fn revision(&self) -> Option<i64> {
        self.revision
    }

    /// Takes in a sync snapshot: bundles and entries. SVIDs of removed entries are dropped.
    /// Returns the own bundle when it changed (to be stored and trusted for the hub).
    ///
    /// # Errors
    /// [`SyncError::Bundle`] when the own bundle is unusable; nothing is changed then.
    pub(crate) fn apply(
        &mut self,
        message: SyncSnapshot,
    ) -> Result<Option<Arc<Bundle>>, SyncError> {
        let changed_bundle = if message.bundle == self.own_bundle_json {
            None
        } else {
            let bundle = Bundle::from_json(self.trust_domain.clone(), &message.bundle)
                .map_err(|e| e.to_string())
                .and_then(|bundle| {
                    if bundle.x509_authorities().is_empty() {
                        Err("it has no X.509 authorities".to_owned())
                    } else {
                        Ok(bundle)
                    }
                })
                .map_err(|reason| SyncError::Bundle {
                    trust_domain: self.trust_domain.clone(),
                    reason,
                })?;
            Some(Arc::new(bundle))
        };

        let mut federated = BTreeMap::new();
        for (name, json) in message.federated_bundles {
            let parsed = TrustDomain::new(&name)
                .map_err(|e| e.to_string())
                .and_then(|td| Bundle::from_json(td, &json).map_err(|e| e.to_string()));
            match parsed {
                Ok(bundle) if bundle.trust_domain() != &self.trust_domain => {
                    federated.insert(bundle.trust_domain().clone(), Arc::new(bundle));
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(trust_domain = %name, %error, "skipping an unusable federated bundle from the hub");
                }
            }
        }

        let mut entries = Vec::with_capacity(message.entries.len());
        for entry in message.entries {
            let id = entry.id.clone();
            match EntryView::parse(entry, &self.trust_domain) {
                Ok(entry) => entries.push(entry),
                Err(error) => {
                    tracing::warn!(entry.id = %id, %error, "skipping an unusable entry from the hub");
                }
            }
        }

        if let Some(bundle) = &changed_bundle {
            self.own_bundle = Some(Arc::clone(bundle));
            self.own_bundle_json = message.bundle;
        }
        self.federated = federated;
        self.held
            .retain(|id, _| entries.iter().any(|entry| &entry.id == id));
        self.refused.retain(|id, refused| {
            entries
                .iter()
                .any(|e| &e.id == id && e.revision == refused.revision)
        });
        self.entries = entries;
        self.revision = Some(message.revision);
        Ok(changed_bundle)
    }

    /// Whether `entry` needs a new SVID at `now`.
    fn needs_svid(&self, entry: &EntryView, now: SystemTime) -> bool {
        if self
            .refused
            .get(&entry.id)
            .is_some_and(|refused| refused.revision == entry.revision && now < refused.until)
        {
            return false;
        }
        self.held
            .get(&entry.id)
            .is_none_or(|held| held.revision != entry.revision || now >= held.refresh_at)
    }

    /// Gets SVIDs signed for every entry that needs one at `now`, in batches. Returns whether
    /// any SVID changed.
    ///
    /// # Errors
    /// The hub's status when a call failed for another reason than one entry (unreachable,
    /// rate limited, the agent refused): SVIDs signed before stay.
    pub(crate) async fn refresh(
        &mut self,
        signer: &mut impl SvidSigner,
        now: SystemTime,
    ) -> Result<bool, Status> {
        let Some(bundle) = self.own_bundle.clone() else {
            return Ok(false);
        };
        let due: Vec<EntryView> = self
            .entries
            .iter()
            .filter(|entry| self.needs_svid(entry, now))
            .cloned()
            .collect();
        let mut changed = false;
        for batch in due.chunks(MAX_BATCH) {
            changed |= match self.sign_batch(signer, batch, &bundle, now).await {
                Ok(changed) => changed,
                Err(status) if is_entry_refusal(status.code()) && batch.len() > 1 => {
                    let mut changed = false;
                    for entry in batch {
                        changed |= self
                            .sign_batch(signer, std::slice::from_ref(entry), &bundle, now)
                            .await
                            .or_else(|status| self.refusal(entry, &status, now))?;
                    }
                    changed
                }
                Err(status) => self.refusal(&batch[0], &status, now)?,
            };
        }
        Ok(changed)
    }

    /// Records the hub's refusal of `entry` when the status is about the entry; passes any
    /// other status on.
    fn refusal(
        &mut self,
        entry: &EntryView,
        status: &Status,
        now: SystemTime,
    ) -> Result<bool, Status> {
        if !is_entry_refusal(status.code()) {
            return Err(status.clone());
        }
        tracing::warn!(
            entry.id = %entry.id,
            spiffe_id = %entry.spiffe_id,
            code = ?status.code(),
            message = status.message(),
            "the hub refused to sign an X509-SVID for this entry; retrying later"
        );
        self.refuse(entry, now);
        Ok(false)
    }

    fn refuse(&mut self, entry: &EntryView, now: SystemTime) {
        self.refused.insert(
            entry.id.clone(),
            Refused {
                revision: entry.revision,
                until: now + REFUSED_RETRY,
            },
        );
    }

    async fn sign_batch(
        &mut self,
        signer: &mut impl SvidSigner,
        batch: &[EntryView],
        bundle: &Arc<Bundle>,
        now: SystemTime,
    ) -> Result<bool, Status> {
        let mut keys = HashMap::with_capacity(batch.len());
        let mut svids = Vec::with_capacity(batch.len());
        for entry in batch {
            let key = PrivateKey::generate(KeyType::EcP256)
                .map_err(|e| Status::internal(format!("cannot generate a workload key: {e}")))?;
            let public_key = key
                .public_key_der()
                .map_err(|e| Status::internal(format!("cannot encode a workload key: {e}")))?;
            svids.push(X509SvidParams {
                entry_id: entry.id.clone(),
                public_key,
            });
            keys.insert(entry.id.clone(), key);
        }
        let response = signer.sign(SignX509SvidsRequest { svids }).await?;
        let mut changed = false;
        for signed in response.svids {
            let Some(entry) = batch.iter().find(|entry| entry.id == signed.entry_id) else {
                tracing::warn!(entry.id = %signed.entry_id, "the hub signed an SVID for an entry not asked for; ignored");
                continue;
            };
            let Some(key) = keys.remove(&entry.id) else {
                continue;
            };
            match accept(entry, signed, key, bundle, now) {
                Ok(held) => {
                    tracing::debug!(entry.id = %entry.id, spiffe_id = %entry.spiffe_id, "X509-SVID signed");
                    self.refused.remove(&entry.id);
                    self.held.insert(entry.id.clone(), held);
                    changed = true;
                }
                Err(error) => {
                    tracing::warn!(entry.id = %entry.id, %error, "refusing an X509-SVID from the hub; retrying later");
                    self.refuse(entry, now);
                }
            }
        }
        for id in keys.keys() {
            if let Some(entry) = batch.iter().find(|entry| &entry.id == id) {
                tracing::warn!(entry.id = %id, "the hub returned no SVID for this entry; retrying later");
                self.refuse(entry, now);
            }
        }
        Ok(changed)
    }

    /// Drops SVIDs that expired by `now`. Returns whether any was dropped.
    pub(crate) fn prune(&mut self, now: SystemTime) -> bool {
        let before = self.held.len();
        self.held.retain(|_, held| held.svid.not_after() > now);
        self.held.len() != before
    }

    /// The next time something is due after `now`: an SVID's refresh or expiry, or the retry
    /// of a refused entry.
    pub(crate) fn next_wake(&self, now: SystemTime) -> Option<SystemTime> {
        self.held
            .values()
            .flat_map(|held| [held.refresh_at, held.svid.not_after()])
            .chain(self.refused.values().map(|refused| refused.until))
            .filter(|at| *at > now)
            .min()
    }

    /// The state to publish at `now`: `None` before the first sync. Identities of unexpired
    /// SVIDs only, ordered by SPIFFE ID and entry id.
    pub(crate) fn snapshot(&self, now: SystemTime) -> Option<Snapshot> {
        let own_bundle = Arc::clone(self.own_bundle.as_ref()?);
        let mut identities: Vec<Identity> = self
            .entries
            .iter()
            .filter_map(|entry| {
                let held = self.held.get(&entry.id)?;
                (held.svid.not_after() > now).then(|| Identity {
                    entry_id: entry.id.clone(),
                    spiffe_id: entry.spiffe_id.clone(),
                    selectors: entry.selectors.clone(),
                    federates_with: entry.federates_with.clone(),
                    hint: entry.hint.clone(),
                    svid: Arc::clone(&held.svid),
                })
            })
            .collect();
        identities.sort_by(|a, b| {
            (a.spiffe_id.as_str(), a.entry_id.as_str())
                .cmp(&(b.spiffe_id.as_str(), b.entry_id.as_str()))
        });
        Some(Snapshot {
            own_bundle,
            federated: self.federated.clone(),
            identities,
        })
    }
}

/// Checks a signed SVID before serving it: the sanity checks of an own SVID (X509-21), the
/// entry's SPIFFE ID, and a chain to the own bundle.
fn accept(
    entry: &EntryView,
    signed: SignedX509Svid,
    key: PrivateKey,
    bundle: &Arc<Bundle>,
    now: SystemTime,
) -> Result<Held, String> {
    let svid = X509Svid::new_checked(signed.cert_chain, key).map_err(|e| e.to_string())?;
    if svid.spiffe_id() != &entry.spiffe_id {
        return Err(format!(
            "it names {} instead of {}",
            svid.spiffe_id(),
            entry.spiffe_id
        ));
    }
    verify_x509_svid(
        svid.chain(),
        &Single(Arc::clone(bundle)),
        now,
        SvidUsage::ClientAuth,
    )
    .map_err(|e| e.to_string())?;
    Ok(Held {
        revision: entry.revision,
        refresh_at: svid_refresh_time(&svid, Some(now)),
        svid: Arc::new(svid),
    })
}

#[cfg(test)]
mod tests;
