//! `StreamSecrets`: the xDS state-of-the-world protocol on one stream.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_lc_rs::digest;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tonic::Streaming;

use super::error::SdsError;
use super::{ResponseStream, SECRET_TYPE_URL, check_type_url, render, requested_names};
use crate::attest::Caller;
use crate::cache::Snapshot;
use crate::per_uid::UidPermit;
use crate::refusal::{self, Refusal};

/// What a stream has agreed with its client so far.
#[derive(Debug, Default)]
pub(super) struct Subscription {
    /// The names of the last accepted request; `None` before the first one.
    names: Option<BTreeSet<String>>,
    /// The nonce of the last response.
    nonce: Option<String>,
    /// A digest of the last response's resources (not the resources: they hold private keys).
    digest: Option<digest::Digest>,
    /// Responses sent so far.
    sent: u64,
}

impl Subscription {
    /// Takes a request from the client; true when it must be answered now: it is the first
    /// request, or it answers the last response and changes the names. A request answering an
    /// older response is stale and ignored; an ACK or NACK that keeps the names needs no
    /// answer.
    pub(super) fn accept(&mut self, request: &DiscoveryRequest) -> bool {
        if let Some(nonce) = &self.nonce {
            if request.response_nonce != *nonce {
                tracing::debug!(
                    nonce = %request.response_nonce,
                    expected = %nonce,
                    "sds: ignoring a stale request"
                );
                return false;
            }
            if let Some(error) = &request.error_detail {
                tracing::warn!(
                    version = %request.version_info,
                    names = ?request.resource_names,
                    error = %error.message,
                    "sds: envoy rejected the secrets (NACK)"
                );
            } else {
                tracing::debug!(version = %request.version_info, "sds: ACK");
            }
        }
        let names = requested_names(request);
        if self.names.as_ref() == Some(&names) {
            return false;
        }
        self.names = Some(names);
        true
    }

    /// The names to answer for; `None` before the first request.
    pub(super) fn names(&self) -> Option<&BTreeSet<String>> {
        self.names.as_ref()
    }

    /// Whether `resources` differ from the last response's.
    pub(super) fn differs(&self, resources: &[Any]) -> bool {
        self.digest
            .is_none_or(|last| last.as_ref() != digest_of(resources).as_ref())
    }

    /// The next response, carrying `resources`; its number is its version and nonce.
    pub(super) fn respond(&mut self, resources: Vec<Any>) -> DiscoveryResponse {
        self.sent += 1;
        let version = self.sent.to_string();
        self.nonce = Some(version.clone());
        self.digest = Some(digest_of(&resources));
        tracing::debug!(version, resources = resources.len(), "sds: sending secrets");
        DiscoveryResponse {
            nonce: version.clone(),
            version_info: version,
            resources,
            type_url: SECRET_TYPE_URL.to_owned(),
            ..DiscoveryResponse::default()
        }
    }
}

/// SHA-256 over the length-prefixed encoded resources.
fn digest_of(resources: &[Any]) -> digest::Digest {
    let mut context = digest::Context::new(&digest::SHA256);
    for resource in resources {
        context.update(&resource.value.len().to_be_bytes());
        context.update(&resource.value);
    }
    context.finish()
}

/// What woke a session up.
enum Event {
    Request(Box<DiscoveryRequest>),
    Closed,
    Published,
    Stopped,
}

/// One open `StreamSecrets` call.
pub(super) struct Session {
    requests: Streaming<DiscoveryRequest>,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    stop: watch::Receiver<bool>,
    /// Attested again before each response: see the Workload API's streams.
    caller: Arc<Caller>,
    subscription: Subscription,
    done: bool,
    _permits: (OwnedSemaphorePermit, UidPermit),
}

impl Session {
    /// A session answering `requests` for `caller` from `snapshots`.
    pub(super) fn new(
        requests: Streaming<DiscoveryRequest>,
        snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
        stop: watch::Receiver<bool>,
        caller: Arc<Caller>,
        permits: (OwnedSemaphorePermit, UidPermit),
    ) -> Self {
        Self {
            requests,
            snapshots,
            stop,
            caller,
            subscription: Subscription::default(),
            done: false,
            _permits: permits,
        }
    }

    /// The responses; the stream ends when the client closes its side, or with an error.
    pub(super) fn into_stream(self) -> ResponseStream<DiscoveryResponse> {
        Box::pin(futures::stream::unfold(self, |mut session| async move {
            let item = session.next().await?;
            Some((item, session))
        }))
    }

    async fn next(&mut self) -> Option<Result<DiscoveryResponse, tonic::Status>> {
        if self.done {
            return None;
        }
        let outcome = self.step().await.transpose();
        self.done = !matches!(outcome, Some(Ok(_)));
        outcome.map(|result| result.map_err(tonic::Status::from))
    }

    /// Waits for the next response to send: `Ok(None)` when the client is gone.
    async fn step(&mut self) -> Result<Option<DiscoveryResponse>, SdsError> {
        loop {
            let event = tokio::select! {
                request = self.requests.message() => match request {
                    Ok(Some(request)) => Event::Request(Box::new(request)),
                    Ok(None) => Event::Closed,
                    Err(status) => {
                        tracing::debug!(%status, "sds: the client broke off the stream");
                        Event::Closed
                    }
                },
                changed = self.snapshots.changed() => match changed {
                    Ok(()) => Event::Published,
                    Err(_) => Event::Stopped,
                },
                _ = self.stop.wait_for(|stop| *stop) => Event::Stopped,
            };
            match event {
                Event::Request(request) => {
                    check_type_url(&request)?;
                    if self.subscription.accept(&request) {
                        let resources = self.render().await?;
                        return Ok(Some(self.subscription.respond(resources)));
                    }
                }
                Event::Closed => return Ok(None),
                Event::Published if self.subscription.names().is_some() => {
                    let resources = self.render().await?;
                    if self.subscription.differs(&resources) {
                        return Ok(Some(self.subscription.respond(resources)));
                    }
                }
                Event::Published => {}
                Event::Stopped => return Err(Refusal::ShuttingDown.into()),
            }
        }
    }

    /// The caller's secrets for the subscribed names from the latest snapshot, once the
    /// caller is attested again.
    async fn render(&self) -> Result<Vec<Any>, SdsError> {
        let selectors = refusal::attest_caller(&self.caller).await?;
        let everything = BTreeSet::new();
        let names = self.subscription.names().unwrap_or(&everything);
        let snapshot = self.snapshots.borrow().clone();
        render(snapshot.as_deref(), &selectors, names)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    use super::*;

    fn request(names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|name| (*name).to_owned()).collect(),
            response_nonce: nonce.to_owned(),
            type_url: SECRET_TYPE_URL.to_owned(),
            ..DiscoveryRequest::default()
        }
    }

    fn nack(names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            error_detail: Some(RpcStatus {
                code: 3,
                message: "bad secret".into(),
                details: Vec::new(),
            }),
            ..request(names, nonce)
        }
    }

    fn resource(value: &[u8]) -> Any {
        Any {
            type_url: SECRET_TYPE_URL.to_owned(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn the_first_request_is_answered_with_version_and_nonce() {
        let mut sub = Subscription::default();
        assert!(sub.names().is_none());
        assert!(sub.accept(&request(&["ROOTCA"], "")));
        let response = sub.respond(vec![resource(b"a")]);
        assert_eq!(response.version_info, "1");
        assert_eq!(response.nonce, "1");
        assert_eq!(response.type_url, SECRET_TYPE_URL);
        assert_eq!(sub.names(), Some(&BTreeSet::from(["ROOTCA".to_owned()])));
    }

    #[test]
    fn acks_and_nacks_with_the_same_names_are_not_answered() {
        let mut sub = Subscription::default();
        assert!(sub.accept(&request(&["ROOTCA"], "")));
        sub.respond(vec![resource(b"a")]);
        assert!(!sub.accept(&request(&["ROOTCA"], "1")), "ACK");
        assert!(!sub.accept(&nack(&["ROOTCA"], "1")), "NACK does not loop");
        assert!(sub.accept(&request(&["ROOTCA", "ALL"], "1")), "new names");
        assert_eq!(sub.respond(vec![resource(b"a")]).version_info, "2");
        assert!(sub.accept(&nack(&["ALL"], "2")), "a NACK may change names");
    }

    #[test]
    fn stale_requests_are_ignored() {
        let mut sub = Subscription::default();
        assert!(sub.accept(&request(&["ROOTCA"], "")));
        sub.respond(vec![resource(b"a")]);
        sub.respond(vec![resource(b"b")]);
        assert!(!sub.accept(&request(&["ALL"], "1")), "answers response 1");
        assert!(!sub.accept(&request(&["ALL"], "")), "no nonce");
        assert_eq!(sub.names(), Some(&BTreeSet::from(["ROOTCA".to_owned()])));
        assert!(sub.accept(&request(&["ALL"], "2")));
    }

    #[test]
    fn only_changed_resources_differ() {
        let mut sub = Subscription::default();
        assert!(sub.differs(&[]), "nothing sent yet");
        sub.respond(vec![resource(b"ab"), resource(b"c")]);
        assert!(!sub.differs(&[resource(b"ab"), resource(b"c")]));
        assert!(sub.differs(&[resource(b"a"), resource(b"bc")]));
        assert!(sub.differs(&[resource(b"ab")]));
        assert!(sub.differs(&[]));
    }
}
