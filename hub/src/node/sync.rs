//! `Sync`: an agent's entries and bundles, pushed whenever they change.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedhub_core::TrustDomain;
use fedhub_proto::node::{Entry as EntryMessage, SyncSnapshot};
use fedhub_registry::{Agent, Entry};
use tokio::sync::mpsc;
use tonic::Status;

use super::service::NodeApi;
use super::status;
use super::tls::{PeerAgent, stopped};

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Whether two snapshots carry the same entries and bundles (their revisions aside).
fn same_content(a: &SyncSnapshot, b: &SyncSnapshot) -> bool {
    a.entries == b.entries && a.bundle == b.bundle && a.federated_bundles == b.federated_bundles
}

impl NodeApi {
    /// The entry as sent to agents, with the trust domains it federates with in effect
    /// (`federates_with`: its own list, its groups' members and, with `federates_with_all`,
    /// every relationship).
    fn entry_message(&self, entry: &Entry, federates_with: &[TrustDomain]) -> EntryMessage {
        let config = self.hub.config();
        let spec = &entry.spec;
        EntryMessage {
            id: entry.id.to_string(),
            spiffe_id: spec.spiffe_id.to_string(),
            parent_id: spec.parent_id.to_string(),
            selectors: spec.selectors.iter().map(ToString::to_string).collect(),
            federates_with: federates_with
                .iter()
                .map(|td| td.name().to_owned())
                .collect(),
            x509_svid_ttl_seconds: seconds(spec.x509_svid_ttl.unwrap_or(config.x509_svid_ttl)),
            jwt_svid_ttl_seconds: seconds(spec.jwt_svid_ttl.unwrap_or(config.jwt_svid_ttl)),
            dns_names: spec.dns_names.clone(),
            hint: spec.hint.clone().unwrap_or_default(),
            revision: i64::try_from(entry.revision).unwrap_or(i64::MAX),
        }
    }

    /// The agent's entries, the own bundle, and the stored bundles of every trust domain its
    /// entries federate with in effect (those without a stored bundle are left out). Groups
    /// and `federates_with_all` are resolved here, so a new group member or relationship
    /// reaches agents without the entries being edited.
    async fn snapshot(&self, agent: &Agent, revision: u64) -> Result<SyncSnapshot, Status> {
        let registry = self.hub.registry();
        let entries = registry
            .entries_for_agent(&agent.spiffe_id, &agent.selectors)
            .await
            .map_err(status::registry)?;
        let scope = registry
            .federation_scope()
            .await
            .map_err(status::registry)?;
        let resolved: Vec<(&Entry, Vec<TrustDomain>)> = entries
            .iter()
            .map(|entry| (entry, scope.effective_federates_with(&entry.spec)))
            .collect();
        let own = self.hub.trust_domain();
        let federated: BTreeSet<&TrustDomain> = resolved
            .iter()
            .flat_map(|(_, federates_with)| federates_with)
            .filter(|td| *td != own)
            .collect();
        let mut federated_bundles = HashMap::new();
        for trust_domain in federated {
            if let Some(record) = registry
                .get_bundle(trust_domain)
                .await
                .map_err(status::registry)?
            {
                federated_bundles
                    .insert(trust_domain.name().to_owned(), record.document.into_bytes());
            }
        }
        Ok(SyncSnapshot {
            revision: i64::try_from(revision).unwrap_or(i64::MAX),
            entries: resolved
                .iter()
                .map(|(entry, federates_with)| self.entry_message(entry, federates_with))
                .collect(),
            bundle: self.hub.own_bundle().to_json().into_bytes(),
            federated_bundles,
        })
    }

    /// Feeds one agent's sync stream: a snapshot now, then one after every registry change or
    /// own bundle publication that changed what the agent sees. Ends with an error when the
    /// agent's SVID is no longer its current one (banned, evicted, renewed), when it expires,
    /// and when the server shuts down; quietly when the agent leaves.
    pub(super) async fn run_sync(
        self: Arc<Self>,
        peer: PeerAgent,
        sender: mpsc::Sender<Result<SyncSnapshot, Status>>,
    ) {
        let mut changes = self.hub.subscribe_changes();
        let mut bundle = self.hub.subscribe_own_bundle();
        let mut stop = self.stop.clone();
        let until_expiry = peer
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let expiry = tokio::time::sleep(until_expiry);
        tokio::pin!(expiry);
        let mut last: Option<SyncSnapshot> = None;
        loop {
            let revision = *changes.borrow_and_update();
            bundle.borrow_and_update();
            let snapshot = match self.current_agent(&peer).await {
                Ok(agent) => self.snapshot(&agent, revision).await,
                Err(status) => Err(status),
            };
            match snapshot {
                Ok(snapshot) => {
                    if last.as_ref().is_none_or(|l| !same_content(l, &snapshot)) {
                        if sender.send(Ok(snapshot.clone())).await.is_err() {
                            return;
                        }
                        last = Some(snapshot);
                    }
                }
                Err(status) => {
                    tracing::info!(
                        agent.spiffe_id = %peer.spiffe_id,
                        code = ?status.code(),
                        message = status.message(),
                        "sync stream ended"
                    );
                    let _ = sender.send(Err(status)).await;
                    return;
                }
            }
            let ended = tokio::select! {
                result = changes.changed() => result.err().map(|_| Status::unavailable("the hub is stopping")),
                result = bundle.changed() => result.err().map(|_| Status::unavailable("the hub is stopping")),
                () = stopped(&mut stop) => {
                    Some(Status::unavailable("the hub is shutting down; reconnect"))
                }
                () = sender.closed() => return,
                () = &mut expiry => Some(Status::unauthenticated(
                    "the agent SVID of this connection expired; renew it and reconnect",
                )),
            };
            if let Some(status) = ended {
                let _ = sender.send(Err(status)).await;
                return;
            }
        }
    }
}
