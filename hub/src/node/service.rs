//! The `fedhub.node.v1.Node` service: attestation, and the mutual TLS calls of attested agents.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedhub_core::SpiffeId;
use fedhub_proto::node::attest_response::Step as ResponseStep;
use fedhub_proto::node::node_server::Node;
use fedhub_proto::node::{
    AgentSvid, AttestRequest, AttestResponse, RenewAgentRequest, SignJwtSvidRequest,
    SignJwtSvidResponse, SignX509SvidsRequest, SignX509SvidsResponse, SignedX509Svid, SyncRequest,
    SyncSnapshot,
};
use fedhub_registry::{Agent, Entry, RegistryError};
use futures::Stream;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use super::attest::check_public_key;
use super::rate::{self, RateLimiter};
use super::refusals::{MAX_REFUSALS, Refusals};
use super::status;
use super::sync::Streams;
use super::tls::{NodeConnectInfo, PeerAgent, leaf_facts};
use super::x509pop::X509PopVerifier;
use crate::Hub;

/// The most X509-SVIDs one `SignX509Svids` call may ask for.
pub const MAX_SVIDS_PER_REQUEST: usize = 64;
/// The most audience values of one JWT-SVID.
const MAX_AUDIENCE: usize = 16;
/// The longest audience value, in bytes.
const MAX_AUDIENCE_LEN: usize = 1024;
/// Time an agent has to finish an attestation (including the x509pop challenge).
const ATTEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A stream fed by a task through a channel.
pub(super) fn channel_stream<T: Send + 'static>(
    mut receiver: mpsc::Receiver<Result<T, Status>>,
) -> BoxStream<T> {
    Box::pin(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)))
}

/// A freshly minted SVID: the chain and what the registry records about its leaf.
pub(super) struct Minted {
    pub(super) chain: Vec<Vec<u8>>,
    pub(super) serial: String,
    pub(super) expires_at: SystemTime,
}

/// Everything the RPCs share.
pub(super) struct NodeApi {
    pub(super) hub: Hub,
    pub(super) x509pop: Option<X509PopVerifier>,
    attest_limit: RateLimiter<IpAddr>,
    sign_limit: RateLimiter<SpiffeId>,
    sync_limit: RateLimiter<SpiffeId>,
    renew_limit: RateLimiter<SpiffeId>,
    /// Agent SVIDs refused for good, answered again without a registry read.
    pub(super) refusals: Refusals,
    /// Each agent's open sync streams and the view they share.
    pub(super) streams: Arc<Streams>,
    /// Turns true when the server shuts down; ends sync streams.
    pub(super) stop: watch::Receiver<bool>,
}

impl NodeApi {
    pub(super) fn new(
        hub: Hub,
        x509pop: Option<X509PopVerifier>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let limits = &hub.config().agent_api;
        let (second, minute) = (Duration::from_secs(1), Duration::from_secs(60));
        let attest_limit = RateLimiter::new(limits.attestations_per_minute, minute);
        let sign_limit = RateLimiter::new(limits.signings_per_second, second);
        let sync_limit = RateLimiter::new(limits.syncs_per_minute, minute);
        let renew_limit = RateLimiter::new(limits.renewals_per_minute, minute);
        let streams = Arc::new(Streams::new(limits.sync_streams_per_agent));
        Self {
            hub,
            x509pop,
            attest_limit,
            sign_limit,
            sync_limit,
            renew_limit,
            refusals: Refusals::new(MAX_REFUSALS),
            streams,
            stop,
        }
    }

    /// Mints an agent SVID (default X509-SVID lifetime).
    pub(super) fn mint_agent_svid(
        &self,
        spiffe_id: &SpiffeId,
        public_key: &[u8],
    ) -> Result<Minted, Status> {
        let minted = self.mint(spiffe_id, public_key, self.hub.config().x509_svid_ttl, &[])?;
        crate::metrics::count_signed("agent", 1);
        Ok(minted)
    }

    fn mint(
        &self,
        spiffe_id: &SpiffeId,
        public_key: &[u8],
        ttl: Duration,
        dns_names: &[String],
    ) -> Result<Minted, Status> {
        let chain = self
            .hub
            .ca()
            .mint_x509_svid(spiffe_id, public_key, ttl, dns_names)
            .map_err(status::ca)?;
        let (serial, expires_at) = chain
            .first()
            .and_then(|leaf| leaf_facts(leaf))
            .ok_or_else(|| Status::internal("the minted SVID is unreadable"))?;
        Ok(Minted {
            chain,
            serial,
            expires_at,
        })
    }

    pub(super) fn agent_svid_message(
        &self,
        spiffe_id: &SpiffeId,
        chain: Vec<Vec<u8>>,
    ) -> AgentSvid {
        AgentSvid {
            spiffe_id: spiffe_id.to_string(),
            cert_chain: chain,
            bundle: self.hub.own_bundle().to_json().into_bytes(),
        }
    }

    /// The agent authenticated by the connection of `request`, unless its SVID was refused
    /// for good before (answered as then, without a registry read).
    pub(super) fn authenticated<T>(&self, request: &Request<T>) -> Result<PeerAgent, Status> {
        let peer = peer(request)?;
        self.refusals.check(&peer)?;
        Ok(peer)
    }

    /// The agent record behind `peer`, if the presented SVID is still its current one: the
    /// agent exists (not evicted), is not banned, and `peer.serial` is the stored serial (not
    /// superseded by a renewal or a new attestation). The SVID of a pending renewal becomes
    /// current the first time it is presented, and the previous one is refused from then on.
    /// A refused SVID is refused again from memory, without reading the registry.
    pub(super) async fn current_agent(&self, peer: &PeerAgent) -> Result<Agent, Status> {
        self.refusals.check(peer)?;
        let result = match self.agent_record(peer).await {
            Ok(agent) => self.accept_serial(peer, agent).await,
            Err(status) => Err(status),
        };
        self.refusals.note(peer, result)
    }

    /// `agent` (as read from the registry) if `peer.serial` is its current serial, promoting
    /// a pending one first.
    pub(super) async fn accept_serial(
        &self,
        peer: &PeerAgent,
        mut agent: Agent,
    ) -> Result<Agent, Status> {
        if agent.pending_serial.as_deref() == Some(peer.serial.as_str()) {
            let registry = self.hub.registry();
            if registry
                .promote_agent_serial(&peer.spiffe_id, &peer.serial)
                .await
                .map_err(status::registry)?
            {
                tracing::info!(agent.spiffe_id = %peer.spiffe_id, "renewed agent SVID in use");
                // Ends the sync streams of the previous SVID.
                self.notify_changed().await;
            }
            // Promoted by us or by a concurrent call (or replaced meanwhile): read it again.
            agent = self.agent_record(peer).await?;
        }
        if agent.serial.as_deref() != Some(peer.serial.as_str()) {
            return Err(Status::permission_denied(format!(
                "this SVID of agent {} was superseded by a renewal or a new attestation; \
                 connect with the current agent SVID",
                peer.spiffe_id
            )));
        }
        Ok(agent)
    }

    /// The stored record of `peer`'s agent; refused when evicted or banned.
    pub(super) async fn agent_record(&self, peer: &PeerAgent) -> Result<Agent, Status> {
        let agent = self
            .hub
            .registry()
            .get_agent(&peer.spiffe_id)
            .await
            .map_err(status::registry)?
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "agent {} is not registered (it was evicted); attest again",
                    peer.spiffe_id
                ))
            })?;
        if agent.banned {
            return Err(status::registry(RegistryError::AgentBanned {
                spiffe_id: peer.spiffe_id.clone(),
            }));
        }
        Ok(agent)
    }

    /// Wakes sync streams after a write of ours (the old SVID's stream ends at once).
    pub(super) async fn notify_changed(&self) {
        if let Err(error) = self.hub.notify_changed().await {
            tracing::warn!(%error, "could not signal the change to sync streams");
        }
    }

    /// Counts a `Sync` call of `peer`'s agent against `agent_api.syncs_per_minute`.
    pub(super) fn limit_syncs(&self, peer: &PeerAgent) -> Result<(), Status> {
        self.sync_limit
            .check(&peer.spiffe_id, 1, Instant::now())
            .map_err(|wait| {
                status::rate_limited(
                    &format!(
                        "agent {} may open {} sync streams per minute",
                        peer.spiffe_id,
                        self.hub.config().agent_api.syncs_per_minute
                    ),
                    wait,
                )
            })
    }

    fn limit_renewals(&self, peer: &PeerAgent) -> Result<(), Status> {
        self.renew_limit
            .check(&peer.spiffe_id, 1, Instant::now())
            .map_err(|wait| {
                status::rate_limited(
                    &format!(
                        "agent {} may renew its SVID {} times per minute",
                        peer.spiffe_id,
                        self.hub.config().agent_api.renewals_per_minute
                    ),
                    wait,
                )
            })
    }

    fn limit_signings(&self, peer: &PeerAgent, count: usize) -> Result<(), Status> {
        let cost = u32::try_from(count).unwrap_or(u32::MAX);
        self.sign_limit
            .check(&peer.spiffe_id, cost, Instant::now())
            .map_err(|wait| {
                status::rate_limited(
                    &format!(
                        "agent {} may sign {} SVIDs per second",
                        peer.spiffe_id,
                        self.hub.config().agent_api.signings_per_second
                    ),
                    wait,
                )
            })
    }

    /// The entries `agent` may have signed, by id.
    async fn entries_of(&self, agent: &Agent) -> Result<HashMap<Uuid, Entry>, Status> {
        Ok(self
            .hub
            .registry()
            .entries_for_agent(&agent.spiffe_id, &agent.selectors)
            .await
            .map_err(status::registry)?
            .into_iter()
            .map(|entry| (entry.id, entry))
            .collect())
    }
}

fn authorized<'a>(
    entries: &'a HashMap<Uuid, Entry>,
    entry_id: &str,
    agent: &SpiffeId,
) -> Result<&'a Entry, Status> {
    let id = Uuid::parse_str(entry_id).map_err(|_| {
        Status::invalid_argument(format!("entry_id {entry_id:?} is not an entry id (a UUID)"))
    })?;
    // NOT_FOUND, not PERMISSION_DENIED: an entry deleted while the agent signs it is the
    // common case, and agents read PERMISSION_DENIED as "your own SVID is refused" and attest
    // again.
    entries.get(&id).ok_or_else(|| {
        Status::not_found(format!(
            "entry {id} is not authorized for agent {agent}: it does not exist, expired, or is \
             parented to another agent or node alias"
        ))
    })
}

fn connect_info<T>(request: &Request<T>) -> Result<&NodeConnectInfo, Status> {
    request
        .extensions()
        .get::<NodeConnectInfo>()
        .ok_or_else(|| Status::internal("connection information is missing"))
}

/// The agent authenticated by the connection's TLS client certificate.
fn peer<T>(request: &Request<T>) -> Result<PeerAgent, Status> {
    connect_info(request)?.agent.clone().ok_or_else(|| {
        Status::unauthenticated(
            "this call needs mutual TLS: present the agent SVID that Attest issued",
        )
    })
}

fn unix_seconds(at: SystemTime) -> i64 {
    OffsetDateTime::from(at).unix_timestamp()
}

/// The node service; cheap to clone.
#[derive(Clone)]
pub(super) struct NodeService(Arc<NodeApi>);

impl NodeService {
    pub(super) fn new(api: NodeApi) -> Self {
        Self(Arc::new(api))
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    type AttestStream = BoxStream<AttestResponse>;
    type SyncStream = BoxStream<SyncSnapshot>;

    async fn attest(
        &self,
        request: Request<Streaming<AttestRequest>>,
    ) -> Result<Response<Self::AttestStream>, Status> {
        let source = connect_info(&request)?.remote_addr.ip();
        self.0
            .attest_limit
            .check(&rate::source_key(source), 1, Instant::now())
            .map_err(|wait| {
                status::rate_limited(
                    &format!(
                        "too many attestation attempts from {source} (at most {} per minute)",
                        self.0.hub.config().agent_api.attestations_per_minute
                    ),
                    wait,
                )
            })?;
        let mut inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(2);
        let api = Arc::clone(&self.0);
        tokio::spawn(async move {
            let mut method = "none";
            let outcome = tokio::time::timeout(
                ATTEST_TIMEOUT,
                api.attest(&mut inbound, &sender, &mut method),
            )
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "attestation did not finish within {} s; start again",
                    ATTEST_TIMEOUT.as_secs()
                )))
            });
            crate::metrics::count_attestation(
                method,
                outcome
                    .as_ref()
                    .map_or_else(Status::code, |_| tonic::Code::Ok),
            );
            if let Err(status) = &outcome {
                tracing::info!(peer = %source, code = ?status.code(), message = status.message(), "attestation refused");
            }
            let message = outcome.map(|svid| AttestResponse {
                step: Some(ResponseStep::Result(svid)),
            });
            // The agent may have gone; nothing to do then.
            let _ = sender.send(message).await;
        });
        Ok(Response::new(channel_stream(receiver)))
    }

    async fn renew_agent(
        &self,
        request: Request<RenewAgentRequest>,
    ) -> Result<Response<AgentSvid>, Status> {
        let peer = self.0.authenticated(&request)?;
        self.0.limit_renewals(&peer)?;
        self.0.limit_signings(&peer, 1)?;
        let agent = self.0.current_agent(&peer).await?;
        let public_key = request.into_inner().agent_public_key;
        check_public_key("agent_public_key", &public_key)?;
        let svid = self.0.mint_agent_svid(&agent.spiffe_id, &public_key)?;
        self.0
            .hub
            .registry()
            .set_pending_agent_serial(
                &agent.spiffe_id,
                &svid.serial,
                OffsetDateTime::from(svid.expires_at),
            )
            .await
            .map_err(|error| match error {
                RegistryError::NotFound { .. } => Status::permission_denied(format!(
                    "agent {} was evicted; attest again",
                    agent.spiffe_id
                )),
                other => status::registry(other),
            })?;
        tracing::info!(agent.spiffe_id = %agent.spiffe_id, "agent SVID renewed");
        Ok(Response::new(
            self.0.agent_svid_message(&agent.spiffe_id, svid.chain),
        ))
    }

    async fn sign_x509_svids(
        &self,
        request: Request<SignX509SvidsRequest>,
    ) -> Result<Response<SignX509SvidsResponse>, Status> {
        let peer = self.0.authenticated(&request)?;
        let params = request.into_inner().svids;
        if params.len() > MAX_SVIDS_PER_REQUEST {
            return Err(Status::invalid_argument(format!(
                "{} SVIDs asked for in one call; at most {MAX_SVIDS_PER_REQUEST} are allowed",
                params.len()
            )));
        }
        self.0.limit_signings(&peer, params.len())?;
        let agent = self.0.current_agent(&peer).await?;
        let entries = self.0.entries_of(&agent).await?;
        let default_ttl = self.0.hub.config().x509_svid_ttl;
        let mut svids = Vec::with_capacity(params.len());
        for param in &params {
            let entry = authorized(&entries, &param.entry_id, &agent.spiffe_id)?;
            check_public_key("public_key", &param.public_key)?;
            let minted = self.0.mint(
                &entry.spec.spiffe_id,
                &param.public_key,
                entry.spec.x509_svid_ttl.unwrap_or(default_ttl),
                &entry.spec.dns_names,
            )?;
            svids.push(SignedX509Svid {
                entry_id: entry.id.to_string(),
                spiffe_id: entry.spec.spiffe_id.to_string(),
                cert_chain: minted.chain,
                expires_at: unix_seconds(minted.expires_at),
            });
        }
        crate::metrics::count_signed("x509", svids.len());
        tracing::debug!(agent.spiffe_id = %agent.spiffe_id, count = svids.len(), "X509-SVIDs signed");
        Ok(Response::new(SignX509SvidsResponse { svids }))
    }

    async fn sign_jwt_svid(
        &self,
        request: Request<SignJwtSvidRequest>,
    ) -> Result<Response<SignJwtSvidResponse>, Status> {
        let peer = self.0.authenticated(&request)?;
        let SignJwtSvidRequest { entry_id, audience } = request.into_inner();
        if audience.is_empty() {
            return Err(Status::invalid_argument(
                "audience is empty: a JWT-SVID needs at least one audience",
            ));
        }
        if audience.len() > MAX_AUDIENCE
            || audience
                .iter()
                .any(|aud| aud.is_empty() || aud.len() > MAX_AUDIENCE_LEN)
        {
            return Err(Status::invalid_argument(format!(
                "audience must be 1 to {MAX_AUDIENCE} values of 1 to {MAX_AUDIENCE_LEN} bytes"
            )));
        }
        self.0.limit_signings(&peer, 1)?;
        let agent = self.0.current_agent(&peer).await?;
        let entries = self.0.entries_of(&agent).await?;
        let entry = authorized(&entries, &entry_id, &agent.spiffe_id)?;
        let ttl = entry
            .spec
            .jwt_svid_ttl
            .unwrap_or(self.0.hub.config().jwt_svid_ttl);
        let (token, expires_at) = self
            .0
            .hub
            .ca()
            .sign_jwt_svid(&entry.spec.spiffe_id, &audience, ttl, SystemTime::now())
            .map_err(status::ca)?;
        crate::metrics::count_signed("jwt", 1);
        Ok(Response::new(SignJwtSvidResponse {
            spiffe_id: entry.spec.spiffe_id.to_string(),
            token,
            expires_at: unix_seconds(expires_at),
        }))
    }

    async fn sync(
        &self,
        request: Request<SyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let peer = self.0.authenticated(&request)?;
        self.0.limit_syncs(&peer)?;
        Ok(Response::new(Arc::clone(&self.0).open_sync(peer).await?))
    }
}
