//! The federation manager: keeps a verified, fresh copy of the bundle of every foreign trust
//! domain the hub federates with.
//!
//! [`FederationManager::run`] asks the registry for due refreshes and takes a lease on each
//! one, so that among hub replicas sharing one database each due refresh is fetched by exactly
//! one of them. Each relationship is fetched with the [`BundleFetcher`] of its profile
//! (`https_web` with the relationship's extra roots, or `https_spiffe` authenticated by the
//! stored bundle of the endpoint SPIFFE ID's trust domain, read from the registry right before
//! each fetch), with the stored entity tag. A fetched bundle replaces the stored one only when
//! [`check_fetched`] accepts it; on any failure or refusal the last good bundle stays and the
//! error is recorded in the relationship's status. A bundle without `spiffe_sequence` after one
//! with a sequence is applied (FED-30) unless the relationship requires sequences, and either
//! way flagged: a warning, [`telemetry::SEQUENCE_DROPPED_TOTAL`] and the relationship's status.
//! A result is stored only while the bundle it was judged against is still stored (a
//! compare-and-swap on the bundle's revision): when an admin stores or deletes the bundle
//! during a fetch, the admin's write stays and the refresh is repeated at once. The next
//! refresh follows [`FederationOptions`]: the bundle's refresh hint at the relationship's own
//! phase of it, so that many relationships spread out, or a jittered backoff after a failure.
//! [`FederationManager::refresh_now`] does the same for one relationship at once, for
//! `fedhub federation refresh`.
//!
//! Every attempt is logged with trust domain, URL, profile, peer identity and outcome (FED-34)
//! and counted in the metrics of [`telemetry`]; the bundle age there counts from the last
//! successful refresh, not from the last replacement.
//!
//! [`BundleFetcher`]: fedhub_bundle_endpoint::BundleFetcher

mod fetchers;
mod options;
mod relay;
pub mod telemetry;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fedhub_bundle_endpoint::{
    Acceptance, AcceptancePolicy, FetchOutcome, Rejection, check_fetched,
};
use fedhub_config::ConfigError;
use fedhub_core::{Bundle, SpiffeId, TrustDomain};
use fedhub_registry::{
    BundleRecord, BundleRevision, FetchProfile, RefreshRecorded, RefreshSuccess, Registry,
    RegistryError, Relationship, RelationshipSpec, SequenceSeen,
};
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::Hub;
use fetchers::Fetchers;
pub use options::{
    FederationOptions, MAX_FEDERATION_BODY_BYTES, MAX_FEDERATION_CONCURRENCY,
    MAX_FEDERATION_FETCH_TIMEOUT, MIN_FEDERATION_BODY_BYTES, phase_key,
};
use telemetry::Outcome;

/// How often the gauges are recomputed from the registry (and fetchers of deleted
/// relationships dropped).
const GAUGE_INTERVAL: Duration = Duration::from_secs(10);

/// What a refresh came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// A new bundle was fetched, verified and stored.
    Updated {
        /// Its `spiffe_sequence`.
        sequence: Option<u64>,
        /// How many authorities it holds (X.509 and JWT).
        authorities: usize,
    },
    /// The endpoint served the stored bundle again (or answered `304 Not Modified`).
    Unchanged,
    /// The stored bundle was replaced or deleted while the fetch ran (e.g. by `fedhub bundle
    /// set`): nothing was stored, the newer bundle stays, and the next refresh is due at once,
    /// to judge the endpoint's bundle against it.
    Superseded,
    /// No bundle was stored: the reason, also recorded as the relationship's last error. The
    /// last good bundle stays in force.
    Failed(String),
}

/// Why the federation manager could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FederationError {
    /// The options are unusable.
    #[error("invalid federation options: {0}")]
    InvalidOptions(ConfigError),
    /// No relationship with this trust domain exists.
    #[error(
        "no federation relationship with trust domain {0}; create one with `fedhub federation create`"
    )]
    NotFound(TrustDomain),
    /// Another refresh of the relationship is running (on this or another hub replica).
    #[error(
        "a refresh of trust domain {trust_domain} is already running on hub replica {holder}; its result will be in `fedhub federation show` shortly"
    )]
    Busy {
        /// The relationship's trust domain.
        trust_domain: TrustDomain,
        /// The replica holding the refresh lease.
        holder: String,
    },
    /// The registry failed; for a refresh this means its result was not recorded, and the
    /// relationship is retried when its lease expires.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Refreshes the bundles of the foreign trust domains in the registry's federation
/// relationships. Cheap to clone; clones share the same state.
#[derive(Clone)]
pub struct FederationManager {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    options: FederationOptions,
    /// [`FederationOptions::replica_id`], or the name made for this manager.
    replica_id: String,
    /// [`FederationOptions::lease`].
    lease: Duration,
    fetchers: Fetchers,
    wake: Notify,
    /// The relationships whose series this manager set, removed once they are gone.
    gauged: telemetry::Gauged,
}

impl std::fmt::Debug for FederationManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationManager")
            .field("hub", &self.inner.hub)
            .field("replica_id", &self.inner.replica_id)
            .finish_non_exhaustive()
    }
}

/// What a fetch attempt came to, before it is recorded.
enum Verdict {
    /// Store this bundle.
    Replace {
        bundle: Bundle,
        sequence: SequenceSeen,
    },
    /// Keep the stored bundle, whose refresh hint is `hint`: it is still current.
    Keep {
        hint: Option<Duration>,
        outcome: Outcome,
        sequence: SequenceSeen,
    },
    /// Keep the stored bundle and record the error.
    Fail {
        outcome: Outcome,
        error: String,
        sequence: SequenceSeen,
    },
}

struct Attempt {
    verdict: Verdict,
    /// The revision of the stored bundle the verdict was reached against (`None`: none was
    /// stored); a success is stored only while it is still the stored one.
    based_on: Option<BundleRevision>,
    /// The entity tag to store with a success.
    etag: Option<String>,
    /// The SPIFFE ID the endpoint authenticated as, when the fetch reports it.
    peer: Option<SpiffeId>,
}

impl Attempt {
    fn failed(outcome: Outcome, error: String) -> Self {
        Self {
            verdict: Verdict::Fail {
                outcome,
                error,
                sequence: SequenceSeen::Unknown,
            },
            based_on: None,
            etag: None,
            peer: None,
        }
    }
}

/// Why an attempt stopped before fetching or deciding.
enum Stop {
    /// The registry failed: nothing can be recorded.
    Registry(RegistryError),
    /// The attempt failed; recorded like a failed fetch.
    Failed(Outcome, String),
}

impl From<RegistryError> for Stop {
    fn from(error: RegistryError) -> Self {
        Self::Registry(error)
    }
}

impl FederationManager {
    /// A manager refreshing the relationships in `hub`'s registry. Without
    /// [`FederationOptions::replica_id`] it names itself `hub-<pid>-<random>`, unique per
    /// manager.
    ///
    /// # Errors
    /// [`FederationError::InvalidOptions`] naming the unusable option.
    pub fn new(hub: Hub, options: FederationOptions) -> Result<Self, FederationError> {
        options
            .validate()
            .map_err(FederationError::InvalidOptions)?;
        telemetry::describe();
        let replica_id = options.replica_id.clone().unwrap_or_else(|| {
            format!("hub-{}-{:016x}", std::process::id(), rand::random::<u64>())
        });
        Ok(Self {
            inner: Arc::new(Inner {
                fetchers: Fetchers::new(options.fetch_options()),
                hub,
                replica_id,
                lease: options.lease(),
                options,
                wake: Notify::new(),
                gauged: telemetry::Gauged::default(),
            }),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &FederationOptions {
        &self.inner.options
    }

    /// This replica's name in refresh leases.
    pub fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    /// Makes [`run`](Self::run) look for due refreshes now rather than at its next poll, e.g.
    /// right after a relationship was created or updated.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Refreshes due relationships until `shutdown` resolves, at most
    /// [`FederationOptions::concurrency`] at once, asking the registry every
    /// [`FederationOptions::poll_interval`] (or on [`wake`](Self::wake)) and when fetches end
    /// (in half batches while a backlog lasts). Gauges are recomputed every 10 s, beside the
    /// fetches. At shutdown fetches in flight are abandoned:
    /// nothing of them is stored, and their leases lapse so that another replica (or the next
    /// start) takes them over.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tracing::info!(replica_id = %self.replica_id(), "federation manager started");
        let options = &self.inner.options;
        let permits = Arc::new(Semaphore::new(options.concurrency));
        let refill_at = refill_threshold(options);
        let mut tasks = JoinSet::new();
        // At most one gauge update at a time, beside the claims rather than in their way.
        let mut gauge_update = JoinSet::new();
        let mut gauges = tokio::time::interval(GAUGE_INTERVAL);
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A steady tick, not a sleep restarted whenever a fetch ends: after a burst of due
        // refreshes the next ones are claimed within one poll interval, not one interval after
        // the burst's last fetch (which left whole seconds without fetches, then a double
        // burst).
        let mut poll = tokio::time::interval(options.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut claim = true;
        loop {
            if claim && self.claim_and_spawn(&permits, &mut tasks).await {
                // A full batch: more may be due.
                continue;
            }
            claim = true;
            tokio::select! {
                () = &mut shutdown => break,
                () = self.inner.wake.notified() => {}
                _ = poll.tick() => {}
                Some(joined) = tasks.join_next() => {
                    if let Err(error) = joined {
                        tracing::error!(%error, "a federation refresh task failed");
                    }
                    // While a backlog is worked off, claim in batches rather than one
                    // relationship per finished fetch: each claim asks the registry for the
                    // due relationships in order, which costs about as much for one as for
                    // a batch.
                    claim = permits.available_permits() >= refill_at;
                }
                _ = gauges.tick() => {
                    claim = false;
                    if gauge_update.is_empty() {
                        let manager = self.clone();
                        gauge_update.spawn(async move { manager.update_gauges().await });
                    }
                }
                Some(_) = gauge_update.join_next() => claim = false,
            }
        }
        gauge_update.shutdown().await;
        tasks.shutdown().await;
        tracing::info!(replica_id = %self.replica_id(), "federation manager stopped");
    }

    /// Fetches the bundle of `trust_domain` now, whatever its schedule, and records the outcome
    /// as a scheduled refresh would (the next one is scheduled from it).
    ///
    /// # Errors
    /// [`FederationError::NotFound`], [`FederationError::Busy`] while a refresh of it is
    /// running, [`FederationError::Registry`] when the registry fails. A failed fetch is not an
    /// error: it is [`RefreshOutcome::Failed`].
    pub async fn refresh_now(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<RefreshOutcome, FederationError> {
        let registry = self.inner.hub.registry();
        let not_found = || FederationError::NotFound(trust_domain.clone());
        let claimed = registry
            .claim_refresh(
                trust_domain,
                &self.inner.replica_id,
                OffsetDateTime::now_utc(),
                self.inner.lease,
            )
            .await
            .map_err(|error| match error {
                RegistryError::NotFound { .. } => not_found(),
                other => other.into(),
            })?;
        let Some(relationship) = claimed else {
            let holder = registry
                .get_relationship(trust_domain)
                .await?
                .ok_or_else(not_found)?
                .status
                .lease_owner
                .unwrap_or_default();
            return Err(FederationError::Busy {
                trust_domain: trust_domain.clone(),
                holder,
            });
        };
        self.refresh(relationship).await
    }

    /// Claims as many due refreshes as there are free permits and starts them. Returns whether
    /// the batch was full.
    async fn claim_and_spawn(&self, permits: &Arc<Semaphore>, tasks: &mut JoinSet<()>) -> bool {
        let options = &self.inner.options;
        let free = u32::try_from(permits.available_permits()).unwrap_or(u32::MAX);
        if free == 0 {
            return false;
        }
        let limit = options.batch.min(free);
        let claimed = match self
            .inner
            .hub
            .registry()
            .claim_due_refreshes(
                &self.inner.replica_id,
                OffsetDateTime::now_utc(),
                self.inner.lease,
                limit,
            )
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "cannot claim due federation refreshes; retrying");
                return false;
            }
        };
        let full = u32::try_from(claimed.len()) == Ok(limit);
        for relationship in claimed {
            // Never waits: only this loop takes permits, and it claimed no more than are free.
            let Ok(permit) = Arc::clone(permits).acquire_owned().await else {
                return false;
            };
            let manager = self.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let trust_domain = relationship.spec.trust_domain.clone();
                match manager.refresh(relationship).await {
                    Ok(_) => {}
                    // Deleted meanwhile: nothing is stored for it, and it is not polled again.
                    Err(FederationError::Registry(RegistryError::NotFound { .. })) => {
                        tracing::info!(
                            %trust_domain,
                            "federation relationship deleted during its refresh; result dropped"
                        );
                    }
                    Err(error) => tracing::error!(
                        %trust_domain,
                        %error,
                        "federation refresh not recorded; retried when its lease expires"
                    ),
                }
            });
        }
        full
    }

    /// Fetches and checks the bundle of a relationship whose lease this replica holds, then
    /// records the outcome and releases the lease.
    async fn refresh(&self, relationship: Relationship) -> Result<RefreshOutcome, FederationError> {
        let attempt = match self.attempt(&relationship).await {
            Ok(attempt) => attempt,
            Err(Stop::Failed(outcome, error)) => Attempt::failed(outcome, error),
            Err(Stop::Registry(error)) => return Err(error.into()),
        };
        let spec = &relationship.spec;
        let td = &spec.trust_domain;
        let options = &self.inner.options;
        let owner = self.inner.replica_id.as_str();
        let registry = self.inner.hub.registry();
        let peer = attempt
            .peer
            .map_or_else(|| expected_peer(spec), |peer| peer.to_string());
        let now = OffsetDateTime::now_utc();
        let since_epoch = (now - OffsetDateTime::UNIX_EPOCH).unsigned_abs();
        let phase = options::phase_key(self.inner.hub.trust_domain(), td);
        let success = |bundle: Option<&Bundle>, sequence, delay| RefreshSuccess {
            based_on: attempt.based_on,
            bundle: bundle
                .map(|bundle| BundleRecord::new(td.clone(), bundle.to_json(), bundle.sequence())),
            etag: attempt.etag.clone(),
            sequence,
            next_refresh_at: now + delay,
        };
        match attempt.verdict {
            Verdict::Replace {
                ref bundle,
                sequence,
            } => {
                let delay = options.success_delay(bundle.refresh_hint(), phase, since_epoch);
                let recorded = registry
                    .record_refresh_success(td, owner, &success(Some(bundle), sequence, delay))
                    .await?;
                if recorded == RefreshRecorded::Superseded {
                    return Ok(superseded(spec, &peer));
                }
                log_success(spec, &peer, Outcome::Updated, bundle.sequence(), delay);
                telemetry::count(td, Outcome::Updated);
                if let SequenceSeen::Dropped { stored } = sequence {
                    log_sequence_dropped(spec, &peer, stored);
                    telemetry::count_sequence_dropped(td);
                }
                telemetry::set_failures(td, 0);
                telemetry::set_bundle_age(td, 0.0);
                if recorded == RefreshRecorded::Replaced
                    && let Err(error) = self.inner.hub.notify_changed().await
                {
                    tracing::warn!(%error, "cannot signal the new bundle; the change poll will");
                }
                Ok(RefreshOutcome::Updated {
                    sequence: bundle.sequence(),
                    authorities: bundle.x509_authorities().len() + bundle.jwt_authorities().len(),
                })
            }
            Verdict::Keep {
                hint,
                outcome,
                sequence,
            } => {
                let delay = options.success_delay(hint, phase, since_epoch);
                let recorded = registry
                    .record_refresh_success(td, owner, &success(None, sequence, delay))
                    .await?;
                if recorded == RefreshRecorded::Superseded {
                    return Ok(superseded(spec, &peer));
                }
                log_success(spec, &peer, outcome, None, delay);
                telemetry::count(td, outcome);
                telemetry::set_failures(td, 0);
                // Verified current just now, though not replaced.
                telemetry::set_bundle_age(td, 0.0);
                Ok(RefreshOutcome::Unchanged)
            }
            Verdict::Fail {
                outcome,
                error,
                sequence,
            } => {
                let failures = relationship.status.consecutive_failures.saturating_add(1);
                let delay = options.failure_delay(failures, rand::random::<f64>());
                log_failure(spec, &peer, outcome, &error, failures, delay);
                telemetry::count(td, outcome);
                if let SequenceSeen::Dropped { .. } = sequence {
                    telemetry::count_sequence_dropped(td);
                }
                registry
                    .record_refresh_failure(td, owner, &error, sequence, now + delay)
                    .await?;
                telemetry::set_failures(td, failures);
                Ok(RefreshOutcome::Failed(error))
            }
        }
    }

    /// Fetches the relationship's bundle and decides what to do with it.
    async fn attempt(&self, relationship: &Relationship) -> Result<Attempt, Stop> {
        let spec = &relationship.spec;
        let td = &spec.trust_domain;
        let registry = self.inner.hub.registry();
        let (current, based_on) = match stored_bundle(registry, td).await? {
            Some((bundle, revision)) => (Some(bundle), Some(revision)),
            None => (None, None),
        };
        let fetcher = self
            .inner
            .fetchers
            .get(spec, relationship.options.source)
            .map_err(|error| Stop::Failed(Outcome::FetchError, error.to_string()))?;
        if let Some(source) = &fetcher.endpoint_bundle {
            let endpoint_td = source.trust_domain();
            let trusted = if endpoint_td == td {
                current.clone()
            } else {
                stored_bundle(registry, endpoint_td)
                    .await?
                    .map(|(bundle, _)| bundle)
            };
            let trusted = trusted.ok_or_else(|| {
                Stop::Failed(
                    Outcome::FetchError,
                    format!(
                        "no bundle of trust domain {endpoint_td} is stored to authenticate the \
                         bundle endpoint; give the relationship a bootstrap bundle or store one \
                         with `fedhub bundle set`"
                    ),
                )
            })?;
            source.set(trusted);
        }
        // Without a stored bundle a `304` would leave nothing to keep: fetch in full.
        let stored_etag = current.as_ref().and(relationship.status.etag.clone());
        let attempt = match self.fetch(&fetcher, td, stored_etag.as_deref()).await {
            Err(error) => Attempt::failed(Outcome::FetchError, error),
            Ok(FetchOutcome::NotModified) => Attempt {
                verdict: Verdict::Keep {
                    hint: current.as_ref().and_then(|bundle| bundle.refresh_hint()),
                    outcome: Outcome::NotModified,
                    sequence: SequenceSeen::Unknown,
                },
                based_on,
                etag: stored_etag,
                peer: None,
            },
            Ok(FetchOutcome::Fetched {
                bundle, etag, peer, ..
            }) => {
                let policy = AcceptancePolicy {
                    accept_empty: spec.accept_empty_bundle,
                    require_sequence: relationship.options.require_sequence,
                };
                // A bundle kept or stored with a sequence clears a recorded drop.
                let present = if bundle.sequence().is_some() {
                    SequenceSeen::Present
                } else {
                    SequenceSeen::Unknown
                };
                let verdict = match check_fetched(td, current.as_deref(), &bundle, policy) {
                    Ok(Acceptance::Replace) => Verdict::Replace {
                        bundle,
                        sequence: present,
                    },
                    Ok(Acceptance::SequenceDropped { stored }) => Verdict::Replace {
                        bundle,
                        sequence: SequenceSeen::Dropped { stored },
                    },
                    Ok(Acceptance::Unchanged) => Verdict::Keep {
                        hint: bundle.refresh_hint(),
                        outcome: Outcome::Unchanged,
                        sequence: present,
                    },
                    Err(rejection @ Rejection::Empty) => Verdict::Fail {
                        outcome: Outcome::EmptyBundle,
                        error: rejection.to_string(),
                        sequence: SequenceSeen::Unknown,
                    },
                    Err(rejection) => Verdict::Fail {
                        outcome: Outcome::Rejected,
                        error: rejection.to_string(),
                        sequence: match rejection {
                            Rejection::SequenceDropped { stored, .. } => {
                                SequenceSeen::Dropped { stored }
                            }
                            _ => SequenceSeen::Unknown,
                        },
                    },
                };
                Attempt {
                    verdict,
                    based_on,
                    etag,
                    peer,
                }
            }
        };
        Ok(attempt)
    }

    /// Fetches the bundle of `td` with `fetcher`: from its endpoint, or through a relay the
    /// entry of `td` in the relay's map, to be judged exactly as a directly fetched bundle.
    async fn fetch(
        &self,
        fetcher: &fetchers::Fetcher,
        td: &TrustDomain,
        etag: Option<&str>,
    ) -> Result<FetchOutcome, String> {
        match fetcher.relay {
            None => fetcher
                .client
                .fetch(etag)
                .await
                .map_err(|error| error.to_string()),
            Some(relay) => self
                .inner
                .fetchers
                .relays()
                .entry(relay, &fetcher.client, td)
                .await
                .map_err(|error| error.to_string()),
        }
    }

    /// Sets the gauges of every relationship from the registry, and drops the fetchers of
    /// relationships that are gone.
    async fn update_gauges(&self) {
        let registry = self.inner.hub.registry();
        // Only the failure counts of the relationships, not whole rows: with thousands of
        // relationships whole rows (each with its extra CA) made tens of MB every 10 s.
        let (failures, bundles) =
            match tokio::try_join!(registry.list_refresh_failures(), registry.list_bundles()) {
                Ok(both) => both,
                Err(error) => {
                    tracing::warn!(%error, "cannot read federation status for metrics");
                    return;
                }
            };
        let stored: HashMap<&TrustDomain, OffsetDateTime> = bundles
            .iter()
            .map(|bundle| (&bundle.trust_domain, bundle.updated_at))
            .collect();
        let now = OffsetDateTime::now_utc();
        for (td, consecutive_failures, last_success_at) in &failures {
            telemetry::set_failures(td, *consecutive_failures);
            if let Some(stored_at) = stored.get(td) {
                let age = telemetry::bundle_age(now, *last_success_at, *stored_at);
                telemetry::set_bundle_age(td, age);
            }
        }
        let live: HashSet<&TrustDomain> = failures.iter().map(|(td, _, _)| td).collect();
        // Deleted by an admin of another replica (or during a fetch that set them again):
        // their series leave /metrics now.
        self.inner
            .gauged
            .update(&live, &bundles, &self.inner.options);
        self.inner.fetchers.retain(&live);
    }
}

/// How many fetch permits must be free before a finished fetch leads to a new claim: half a
/// batch (at least one), so that in-flight fetches stay between half and all of
/// `concurrency` while a backlog lasts.
fn refill_threshold(options: &FederationOptions) -> usize {
    let batch = usize::try_from(options.batch).unwrap_or(usize::MAX);
    (batch.min(options.concurrency) / 2).max(1)
}

/// The stored bundle of `trust_domain`, parsed, with its revision.
async fn stored_bundle(
    registry: &Registry,
    trust_domain: &TrustDomain,
) -> Result<Option<(Arc<Bundle>, BundleRevision)>, Stop> {
    let Some(stored) = registry.get_bundle_with_revision(trust_domain).await? else {
        return Ok(None);
    };
    Bundle::from_json(trust_domain.clone(), stored.record.document.as_bytes())
        .map(|bundle| Some((Arc::new(bundle), stored.revision)))
        .map_err(|error| {
            Stop::Failed(
                Outcome::FetchError,
                format!(
                    "the stored bundle of trust domain {trust_domain} is unreadable ({error}); \
                     replace it with `fedhub bundle set`"
                ),
            )
        })
}

/// Who the endpoint should authenticate as: the endpoint SPIFFE ID, or the URL host.
fn expected_peer(spec: &RelationshipSpec) -> String {
    match &spec.profile {
        FetchProfile::HttpsSpiffe { endpoint_spiffe_id } => endpoint_spiffe_id.to_string(),
        FetchProfile::HttpsWeb { .. } => spec.bundle_endpoint_url.host().to_owned(),
    }
}

fn whole_seconds(delay: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(delay.as_secs()))
}

fn log_success(
    spec: &RelationshipSpec,
    peer: &str,
    outcome: Outcome,
    sequence: Option<u64>,
    delay: Duration,
) {
    tracing::info!(
        trust_domain = %spec.trust_domain,
        url = %spec.bundle_endpoint_url,
        profile = spec.profile.name().as_str(),
        peer,
        outcome = outcome.as_str(),
        sequence,
        next_refresh_in = %whole_seconds(delay),
        "federated bundle refreshed"
    );
}

/// Logs and counts a refresh whose result was not stored because the stored bundle changed
/// while it ran.
fn superseded(spec: &RelationshipSpec, peer: &str) -> RefreshOutcome {
    tracing::info!(
        trust_domain = %spec.trust_domain,
        url = %spec.bundle_endpoint_url,
        profile = spec.profile.name().as_str(),
        peer,
        outcome = Outcome::Superseded.as_str(),
        "the stored bundle was replaced or deleted while the federated bundle was fetched; \
         nothing was stored, the newer bundle stays and the refresh is repeated at once"
    );
    telemetry::count(&spec.trust_domain, Outcome::Superseded);
    RefreshOutcome::Superseded
}

fn log_sequence_dropped(spec: &RelationshipSpec, peer: &str, stored: u64) {
    tracing::warn!(
        trust_domain = %spec.trust_domain,
        url = %spec.bundle_endpoint_url,
        profile = spec.profile.name().as_str(),
        peer,
        stored_sequence = stored,
        "the federated bundle endpoint stopped sending spiffe_sequence (the stored bundle had \
         sequence {stored}); its bundle was applied as the most recent one, but rollbacks can no \
         longer be detected: `fedhub federation update --require-sequence` refuses such bundles"
    );
}

fn log_failure(
    spec: &RelationshipSpec,
    peer: &str,
    outcome: Outcome,
    error: &str,
    failures: u32,
    delay: Duration,
) {
    let message = if outcome == Outcome::EmptyBundle {
        "federated bundle endpoint served a bundle with no keys; the last good bundle is kept"
    } else {
        "federated bundle refresh failed; the last good bundle is kept"
    };
    tracing::warn!(
        trust_domain = %spec.trust_domain,
        url = %spec.bundle_endpoint_url,
        profile = spec.profile.name().as_str(),
        peer,
        outcome = outcome.as_str(),
        error,
        consecutive_failures = failures,
        next_refresh_in = %whole_seconds(delay),
        "{message}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_is_claimed_in_half_batches() {
        let with = |batch, concurrency| {
            refill_threshold(&FederationOptions {
                concurrency,
                batch,
                ..FederationOptions::default()
            })
        };
        assert_eq!(with(32, 32), 16);
        assert_eq!(with(32, 8), 4, "bounded by concurrency");
        assert_eq!(with(4, 100), 2, "bounded by the batch");
        assert_eq!(with(1, 1), 1, "at least one");
        assert_eq!(with(32, 1), 1);
    }
}
