//! The node API: the gRPC service (`fedhub.node.v1.Node`) agents use to attest, renew their
//! SVID, get workload SVIDs signed and follow their entries and bundles.
//!
//! It is served over TLS with the hub's own SVID ([`Hub::server_cert`]). Client certificates
//! are optional at the TLS layer, because `Attest` runs before an agent has an SVID; when one
//! is presented it must be an agent SVID of the own trust domain (path under
//! [`AGENT_ID_PREFIX`]) that verifies against the own bundle. Every call but `Attest` needs
//! one, and the registry must still hold its serial as the agent's current serial: evicted,
//! banned and superseded (renewed, re-attested) SVIDs are refused with `PERMISSION_DENIED`.
//!
//! Attestation:
//! - join token: single use; the agent gets the token's SPIFFE ID, or
//!   [`join_token_agent_id`] when the token names none.
//! - x509pop (`[node_attestation.x509pop]`): the node's certificate chain must lead to a CA of
//!   `ca_bundle_file`; the node signs, with the leaf's key, a 32-byte challenge bound to the
//!   agent's new public key ([`fedhub_core::x509pop::challenge_message`]). The agent ID is
//!   `spiffe://<td>/fedhub/agent/x509pop/<first 40 hex chars of the leaf's SHA-256>`, and
//!   its node selectors are `x509pop:subject:cn:<CN>`, `x509pop:ca:fingerprint:<SHA-256 of
//!   the issuing CA>` and `x509pop:san:dns:<name>`.
//!
//! The agent sends public keys (DER SubjectPublicKeyInfo), never a CSR.
//!
//! Rate limits: attestation attempts per source address (IPv6: per /64) and minute
//! (`agent_api.attestations_per_minute`), SVIDs signed per agent and second
//! (`agent_api.signings_per_second`, renewals included), and per agent and minute `Sync`
//! streams opened (`agent_api.syncs_per_minute`) and renewals (`agent_api.renewals_per_minute`);
//! `RESOURCE_EXHAUSTED` says when to retry, also as `retry-after-ms` metadata.
//!
//! Fairness between agents, so that one agent cannot slow the others down: at most
//! `agent_api.sync_streams_per_agent` open `Sync` streams per agent (a newer one ends the
//! oldest with `ABORTED`), one registry read set per agent and revision however many streams
//! it holds, a refused agent SVID refused again from memory (no registry read), and pending
//! renewals that wake no sync stream (they are not change-feed events). These hold per
//! replica.
//!
//! Liveness: opening a `Sync` stream records its agent as seen (`last_seen_at`), and so does
//! the heartbeat every `agent_api.heartbeat_interval` while the stream stays open, for every
//! such agent at once in batched writes (`heartbeat.rs`); neither is a change-feed event.
//!
//! Connections (`[limits]`): capped per listener and per source address at accept, closed when
//! the TLS handshake takes longer than `handshake_timeout` or no call starts within
//! `idle_timeout` of it; HTTP/2 keep-alive pings close dead ones; at most
//! `max_concurrent_streams` calls at once per connection.

mod attest;
#[doc(hidden)]
pub mod fuzzing;
mod heartbeat;
mod rate;
mod refusals;
mod service;
mod status;
mod streams;
mod sync;
mod tls;
mod x509pop;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_proto::node::node_server::NodeServer;
use fedhub_serve::LimitedListener;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tonic::service::interceptor::InterceptedService;

pub use service::MAX_SVIDS_PER_REQUEST;
pub use status::RETRY_AFTER_MS;
pub use tls::{NodeConnectInfo, PeerAgent};

use crate::Hub;

/// Every agent SPIFFE ID has a path under this prefix.
pub const AGENT_ID_PREFIX: &str = "/fedhub/agent/";

/// The largest request message accepted, in bytes.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Time open connections get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshaken connections waiting for the server to take them.
const ACCEPT_BACKLOG: usize = 64;
/// Hex characters of the token's SHA-256 in a join token agent ID.
const JOIN_TOKEN_HASH_CHARS: usize = 16;

/// The SPIFFE ID of an agent attested with a join token that names no ID:
/// `spiffe://<td>/fedhub/agent/join_token/<first 16 hex chars of SHA-256(token)>`. Tokens
/// are generated with the same rule, so the ID can be shown when the token is made.
///
/// # Panics
/// Never: the path is a fixed prefix and hex digits, far below the SPIFFE ID length limit.
#[expect(
    clippy::expect_used,
    reason = "a fixed prefix and hex digits always make a valid path"
)]
pub fn join_token_agent_id(trust_domain: &TrustDomain, token: &str) -> SpiffeId {
    let hash = sha256_hex(token.as_bytes());
    let path = format!(
        "{AGENT_ID_PREFIX}join_token/{}",
        &hash[..JOIN_TOKEN_HASH_CHARS]
    );
    trust_domain
        .spiffe_id(&path)
        .expect("join token agent path is valid")
}

/// Whether `id` is an agent ID of `trust_domain`: a member with a path under
/// [`AGENT_ID_PREFIX`].
pub fn is_agent_id(trust_domain: &TrustDomain, id: &SpiffeId) -> bool {
    id.is_member_of(trust_domain)
        && id
            .path()
            .strip_prefix(AGENT_ID_PREFIX)
            .is_some_and(|rest| !rest.is_empty())
}

/// Serves the node API on `listener` until `shutdown` completes; then stops accepting, ends
/// open sync streams with `UNAVAILABLE`, and gives connections a few seconds to finish.
///
/// # Errors
/// When the x509pop CA bundle cannot be read, the TLS configuration cannot be built, or the
/// listener fails for good; failures of single connections are logged and skipped.
pub async fn serve_node_api(
    hub: Hub,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let x509pop = hub
        .config()
        .node_attestation
        .x509pop
        .as_ref()
        .map(|config| x509pop::X509PopVerifier::load(&config.ca_bundle_file))
        .transpose()?;
    let acceptor = TlsAcceptor::from(tls::server_config(&hub).map_err(io::Error::other)?);
    let limits = hub.config().limits;
    let listener = LimitedListener::new(listener, "agent_api", &limits);
    let (stop_sender, stop) = watch::channel(false);
    let api = service::NodeApi::new(hub.clone(), x509pop, stop.clone());
    let heartbeat = tokio::spawn(heartbeat::run(hub, Arc::clone(&api.streams), stop.clone()));
    let service = service::NodeService::new(api);

    let (connection_sender, mut connections) = mpsc::channel(ACCEPT_BACKLOG);
    let (accept_ended, accept_end) = oneshot::channel::<()>();
    let accept = tokio::spawn({
        let stop = stop.clone();
        async move {
            let result =
                tls::accept_loop(listener, acceptor, limits, connection_sender, stop).await;
            let _ = accept_ended.send(());
            result
        }
    });
    let incoming = futures::stream::poll_fn(move |cx| {
        connections
            .poll_recv(cx)
            .map(|connection| connection.map(Ok::<_, io::Error>))
    });
    // Stops everything on shutdown, and also when the accept loop ended by itself (a fatal
    // listener error), so that sync streams do not keep the server from returning.
    let signal = async move {
        tokio::select! {
            () = shutdown => {}
            _ = accept_end => {}
        }
        stop_sender.send_replace(true);
    };
    let node = NodeServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .add_service(InterceptedService::new(node, tls::first_call))
        .serve_with_incoming_shutdown(incoming, signal);
    let drained = async {
        tls::stopped(&mut stop.clone()).await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = server => result.map_err(io::Error::other)?,
        () = drained => tracing::warn!("node API connections still open after the drain timeout; closing them"),
    }
    heartbeat.abort();
    accept.await.map_err(io::Error::other)?
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Lowercase hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

#[cfg(test)]
mod tests {
    use fedhub_tests::td;

    use super::*;

    #[test]
    fn join_token_agent_id_is_the_token_hash_prefix() {
        let id = join_token_agent_id(&td("alpha.test"), "abc");
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(
            id.as_str(),
            "spiffe://alpha.test/fedhub/agent/join_token/ba7816bf8f01cfea"
        );
        assert!(is_agent_id(&td("alpha.test"), &id));
    }

    #[test]
    fn agent_ids_are_members_under_the_agent_prefix() {
        let is = |s: &str| is_agent_id(&td("alpha.test"), &SpiffeId::parse(s).unwrap());
        assert!(is("spiffe://alpha.test/fedhub/agent/x"));
        assert!(!is("spiffe://alpha.test/fedhub/agent"));
        assert!(!is("spiffe://alpha.test/fedhub/agentx/y"));
        assert!(!is("spiffe://alpha.test/fedhub/hub"));
        assert!(!is("spiffe://beta.test/fedhub/agent/x"));
    }
}
