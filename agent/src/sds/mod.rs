//! Envoy SDS v3 (`envoy.service.secret.v3.SecretDiscoveryService`), served on the Workload
//! API socket so that Envoy sidecars get their certificates and trust bundles from fedhub.
//!
//! Callers are identified exactly like Workload API callers, by attestation of the socket's
//! peer process ([`crate::attest`]) and the cache's caller view; Envoy sends no
//! `workload.spiffe.io` header and none is required here.
//!
//! # Resource names (those SPIRE uses)
//! - The SPIFFE ID of each of the caller's identities: a `tls_certificate` secret with the
//!   X509-SVID chain (leaf first) and its PKCS#8 private key, both inline PEM.
//! - [`DEFAULT_SVID`] (`default`): the same for the caller's default identity.
//! - [`ROOT_CA`] (`ROOTCA`): a `validation_context` whose `trusted_ca` holds the own trust
//!   domain's X.509 authorities (PEM).
//! - [`ALL_BUNDLES`] (`ALL`): a `validation_context` whose `custom_validator_config` is Envoy's
//!   SPIFFE validator ([`SPIFFE_VALIDATOR`], `SPIFFECertValidatorConfig`, Envoy 1.18 or later)
//!   with one trust domain entry per bundle: the own one first, then the caller's federated
//!   ones by name. Each bundle anchors only SVIDs of its own trust domain.
//! - `spiffe://<td>` for the own trust domain and each of the caller's federated ones: a
//!   `validation_context` with that bundle as `trusted_ca`.
//!
//! A bundle without X.509 authorities yields no validation context (Envoy would reject it).
//! An empty `resource_names` list asks for everything (the xDS wildcard, as SPIRE does it):
//! every SVID of the caller by its SPIFFE ID and every bundle it receives by `spiffe://<td>`;
//! the aliases `default`, `ROOTCA` and `ALL` come only when named. A name the caller has no
//! secret for (unknown, or another workload's) is left out of the response, as the xDS
//! state-of-the-world protocol has it for SDS: Envoy keeps waiting for it. (SPIRE answers
//! `INVALID_ARGUMENT` instead.)
//!
//! # Protocol
//! - `StreamSecrets` (state of the world): the first request gets a response at once. Every
//!   response carries the stream's response count as both `version_info` and `nonce`. A
//!   request answering the last response (its nonce) is an ACK, or a NACK when it carries
//!   `error_detail` (logged); either gets a new response only if it changes the resource
//!   names, so a NACK does not loop. A request answering an older response is stale and
//!   ignored. Whenever the agent's state changes, the stream sends a new response if the
//!   requested secrets changed.
//! - `FetchSecrets` answers once, with neither version nor nonce.
//! - `DeltaSecrets` answers `UNIMPLEMENTED`.
//! - Before the first sync calls answer `UNAVAILABLE`; a caller without identity gets
//!   `PERMISSION_DENIED`, which also ends an open stream; a `type_url` other than the
//!   `Secret` one is `INVALID_ARGUMENT`. At most 1024 streams are open at once.

mod error;
mod resources;
mod stream;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use futures::Stream;
use tokio::sync::{Semaphore, watch};
use tonic::{Request, Response, Status, Streaming};

use self::error::SdsError;
use self::stream::Session;
use crate::attest::Selectors;
use crate::cache::{AgentState, Snapshot};
use crate::refusal;

/// The resource name of the caller's default X509-SVID.
pub const DEFAULT_SVID: &str = "default";
/// The resource name of the own trust domain's bundle as a `trusted_ca` validation context.
pub const ROOT_CA: &str = "ROOTCA";
/// The resource name of the SPIFFE validator over the own and the federated bundles.
pub const ALL_BUNDLES: &str = "ALL";
/// The name of Envoy's SPIFFE certificate validator extension.
pub const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";
/// The type URL of every SDS resource (`envoy.extensions.transport_sockets.tls.v3.Secret`).
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The largest request accepted (Envoy's requests carry its node metadata).
const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Open `StreamSecrets` streams in total (more are refused with `UNAVAILABLE`).
const MAX_OPEN_STREAMS: usize = 1024;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The SDS service for the Workload API server: secrets from `state`; every stream ends when
/// `stop` turns true.
pub(crate) fn server(
    state: AgentState,
    stop: watch::Receiver<bool>,
) -> SecretDiscoveryServiceServer<SecretDiscovery> {
    SecretDiscoveryServiceServer::new(SecretDiscovery::new(state, MAX_OPEN_STREAMS, stop))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
}

/// The SDS handlers, shared by all connections.
pub(crate) struct SecretDiscovery {
    state: AgentState,
    streams: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

impl SecretDiscovery {
    fn new(state: AgentState, max_streams: usize, stop: watch::Receiver<bool>) -> Self {
        Self {
            state,
            streams: Arc::new(Semaphore::new(max_streams)),
            stop,
        }
    }
}

/// The packed secrets named `names` for a caller, or why there are none: not synced
/// (`UNAVAILABLE`) or no identity (`PERMISSION_DENIED`).
fn render(
    snapshot: Option<&Snapshot>,
    selectors: &Selectors,
    names: &BTreeSet<String>,
) -> Result<Vec<Any>, SdsError> {
    let view = refusal::caller_view(snapshot, selectors)?;
    Ok(resources::secrets(&view, names)
        .into_iter()
        .map(pack_any)
        .collect())
}

/// The requested names, without empty ones.
fn requested_names(request: &DiscoveryRequest) -> BTreeSet<String> {
    request
        .resource_names
        .iter()
        .filter(|name| !name.is_empty())
        .cloned()
        .collect()
}

/// Admits the `Secret` type URL, or none.
fn check_type_url(request: &DiscoveryRequest) -> Result<(), SdsError> {
    let url = &request.type_url;
    if url.is_empty() || url == SECRET_TYPE_URL {
        Ok(())
    } else {
        Err(SdsError::WrongTypeUrl(url.clone()))
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SecretDiscovery {
    type DeltaSecretsStream = ResponseStream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = ResponseStream<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(SdsError::DeltaUnimplemented.into())
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let caller = Arc::clone(refusal::caller_of(&request).map_err(SdsError::from)?);
        let selectors = refusal::attest_caller(&caller)
            .await
            .map_err(SdsError::from)?;
        let uid_permit = caller
            .stream_permit()
            .ok_or(SdsError::TooManyStreamsForUid)?;
        let permit = Arc::clone(&self.streams)
            .try_acquire_owned()
            .map_err(|_| SdsError::TooManyStreams)?;
        let snapshots = self.state.subscribe();
        // Refuse at once what the first request would be refused for.
        render(snapshots.borrow().as_deref(), &selectors, &BTreeSet::new())?;
        let session = Session::new(
            request.into_inner(),
            snapshots,
            self.stop.clone(),
            caller,
            (permit, uid_permit),
        );
        Ok(Response::new(session.into_stream()))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let selectors = refusal::attest(&request).await.map_err(SdsError::from)?;
        let request = request.into_inner();
        check_type_url(&request)?;
        let snapshot = self.state.current();
        let resources = render(snapshot.as_deref(), &selectors, &requested_names(&request))?;
        Ok(Response::new(DiscoveryResponse {
            resources,
            type_url: SECRET_TYPE_URL.to_owned(),
            ..DiscoveryResponse::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    use prost::Name;

    use super::*;

    #[test]
    fn the_secret_type_url_is_the_envoy_one() {
        assert_eq!(SECRET_TYPE_URL, Secret::type_url());
    }

    #[test]
    fn only_the_secret_type_url_or_none_is_admitted() {
        let request = |url: &str| DiscoveryRequest {
            type_url: url.to_owned(),
            ..DiscoveryRequest::default()
        };
        assert!(check_type_url(&request("")).is_ok());
        assert!(check_type_url(&request(SECRET_TYPE_URL)).is_ok());
        let cluster = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
        assert!(matches!(
            check_type_url(&request(cluster)),
            Err(SdsError::WrongTypeUrl(url)) if url == cluster
        ));
    }

    #[test]
    fn empty_names_are_dropped() {
        let request = DiscoveryRequest {
            resource_names: vec![String::new(), "ROOTCA".into(), "ROOTCA".into()],
            ..DiscoveryRequest::default()
        };
        assert_eq!(
            requested_names(&request),
            BTreeSet::from(["ROOTCA".to_owned()])
        );
    }
}
