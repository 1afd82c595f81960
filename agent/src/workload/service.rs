//! The `SpiffeWorkloadAPI` service: attestation, the caller's view, streams that follow the
//! cache.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use fedhub_core::{JwtValidator, SpiffeId};
use fedhub_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use fedhub_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse,
    WitsvidRequest, WitsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse,
};
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::messages;
use crate::attest::{Caller, Selectors};
use crate::cache::{AgentState, CallerView, Snapshot};
use crate::jwt::{JwtSvidCache, JwtSvidIssuer};
use crate::per_uid::UidPermit;
use crate::refusal::{self, Refusal};

/// How many JWT-SVIDs the agent keeps for reuse.
const JWT_CACHE_CAPACITY: usize = 4096;

type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Renders the message a stream sends for one caller view.
type Render<T> = fn(&CallerView<'_>) -> T;

/// The Workload API handlers, shared by all connections.
pub(crate) struct WorkloadApi {
    state: AgentState,
    issuer: Arc<dyn JwtSvidIssuer>,
    jwt_cache: JwtSvidCache,
    validator: JwtValidator,
    streams: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

impl WorkloadApi {
    /// Handlers over `state`; at most `max_streams` streams are open at once, and every stream
    /// ends when `stop` turns true.
    pub(crate) fn new(
        state: AgentState,
        issuer: Arc<dyn JwtSvidIssuer>,
        max_streams: usize,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            state,
            issuer,
            jwt_cache: JwtSvidCache::new(JWT_CACHE_CAPACITY),
            validator: JwtValidator::new(),
            streams: Arc::new(Semaphore::new(max_streams)),
            stop,
        }
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>, ApiError> {
        Ok(self.state.current().ok_or(Refusal::NotSynced)?)
    }

    /// A stream that sends the caller's message now and again whenever it changes.
    async fn watch<Req, T>(
        &self,
        request: Request<Req>,
        render: Render<T>,
    ) -> Result<Response<MessageStream<T>>, Status>
    where
        T: PartialEq + Clone + Send + 'static,
    {
        let caller = Arc::clone(refusal::caller_of(&request).map_err(ApiError::from)?);
        let selectors = refusal::attest_caller(&caller)
            .await
            .map_err(ApiError::from)?;
        let uid_permit = caller
            .stream_permit()
            .ok_or(ApiError::TooManyStreamsForUid)?;
        let permit = Arc::clone(&self.streams)
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyStreams)?;
        let mut snapshots = self.state.subscribe();
        let current = snapshots.borrow_and_update().clone();
        let first = render_for(current.as_deref(), &selectors, render)?;
        let watcher = Watcher {
            snapshots,
            stop: self.stop.clone(),
            caller,
            render,
            pending: Some(first),
            sent_from: (current, selectors),
            done: false,
            _permits: (permit, uid_permit),
        };
        let stream = futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next().await?;
            Some((item, watcher))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The message for a caller, or why there is none: not synced yet (`UNAVAILABLE`), or no
/// identity (`PERMISSION_DENIED`, which also ends an open stream, WAPI-12).
fn render_for<T>(
    snapshot: Option<&Snapshot>,
    selectors: &Selectors,
    render: Render<T>,
) -> Result<T, ApiError> {
    Ok(render(&refusal::caller_view(snapshot, selectors)?))
}

/// The state of one open stream.
struct Watcher<T> {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    stop: watch::Receiver<bool>,
    /// Attested again before each message: a stream speaks for its connection's process only
    /// while that process runs the program it ran when it connected.
    caller: Arc<Caller>,
    render: Render<T>,
    pending: Option<T>,
    /// What the last message sent (or pending) was rendered from. Kept instead of the message
    /// itself: a new stream sends one message and is often closed, so a copy for comparing
    /// would be made on every call for nothing; on a rare update the last message is rendered
    /// again from here to compare.
    sent_from: (Option<Arc<Snapshot>>, Selectors),
    done: bool,
    _permits: (OwnedSemaphorePermit, UidPermit),
}

impl<T: PartialEq + Clone> Watcher<T> {
    /// The next message: the pending one, else the first changed one after a publish (an
    /// identical message is skipped, WAPI-9); an error ends the stream.
    async fn next(&mut self) -> Option<Result<T, Status>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(message) = self.pending.take() {
                return Some(Ok(message));
            }
            let published = tokio::select! {
                changed = self.snapshots.changed() => changed.is_ok(),
                _ = self.stop.wait_for(|stop| *stop) => false,
            };
            let outcome = if published {
                self.next_message().await
            } else {
                Err(Refusal::ShuttingDown.into())
            };
            match outcome {
                Ok((message, from)) => {
                    let (snapshot, selectors) = &self.sent_from;
                    let last = render_for(snapshot.as_deref(), selectors, self.render).ok();
                    if last.as_ref() != Some(&message) {
                        self.pending = Some(message);
                        self.sent_from = from;
                    }
                }
                Err(failure) => {
                    self.done = true;
                    return Some(Err(failure.into()));
                }
            }
        }
    }

    /// The caller's message from the latest snapshot, once the caller is attested again, and
    /// what it was rendered from.
    async fn next_message(&mut self) -> Result<(T, (Option<Arc<Snapshot>>, Selectors)), ApiError> {
        let snapshot = self.snapshots.borrow_and_update().clone();
        let selectors = refusal::attest_caller(&self.caller).await?;
        let message = render_for(snapshot.as_deref(), &selectors, self.render)?;
        Ok((message, (snapshot, selectors)))
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = MessageStream<X509svidResponse>;
    type FetchX509BundlesStream = MessageStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = MessageStream<JwtBundlesResponse>;
    type FetchWITSVIDStream = MessageStream<WitsvidResponse>;
    type FetchWITBundlesStream = MessageStream<WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        self.watch(request, messages::x509_svid_response).await
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.watch(request, messages::x509_bundles_response).await
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.watch(request, messages::jwt_bundles_response).await
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let JwtsvidRequest {
            audience,
            spiffe_id,
        } = request.get_ref();
        if audience.is_empty() {
            return Err(ApiError::MissingAudience.into());
        }
        if audience.iter().any(String::is_empty) {
            return Err(ApiError::EmptyAudienceValue.into());
        }
        let wanted = if spiffe_id.is_empty() {
            None
        } else {
            Some(SpiffeId::parse(spiffe_id).map_err(ApiError::InvalidSpiffeId)?)
        };
        let selectors = refusal::attest(&request).await.map_err(ApiError::from)?;
        let snapshot = self.snapshot()?;
        let view = snapshot.caller_view(&selectors);
        let identities: Vec<_> = view
            .identities()
            .iter()
            .filter(|identity| wanted.as_ref().is_none_or(|id| &identity.spiffe_id == id))
            .collect();
        if identities.is_empty() {
            return Err(wanted
                .map_or(Refusal::NoIdentity.into(), ApiError::NotEntitled)
                .into());
        }
        let now = SystemTime::now();
        let tokens = futures::future::try_join_all(identities.iter().map(|identity| {
            self.jwt_cache
                .fetch(self.issuer.as_ref(), identity, audience, now)
        }))
        .await
        .map_err(ApiError::Issue)?;
        let svids: Vec<Jwtsvid> = identities
            .iter()
            .zip(tokens)
            .map(|(identity, svid)| Jwtsvid {
                spiffe_id: identity.spiffe_id.to_string(),
                svid,
                hint: identity.hint.clone(),
            })
            .collect();
        crate::health::count_served("jwt", svids.len());
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let ValidateJwtsvidRequest { audience, svid } = request.get_ref();
        if audience.is_empty() {
            return Err(ApiError::MissingAudience.into());
        }
        if svid.is_empty() {
            return Err(ApiError::MissingSvid.into());
        }
        let selectors = refusal::attest(&request).await.map_err(ApiError::from)?;
        let snapshot = self.snapshot()?;
        let view = snapshot.caller_view(&selectors);
        let validated = self
            .validator
            .validate(svid, audience, &view, SystemTime::now())
            .map_err(ApiError::InvalidToken)?;
        Ok(Response::new(messages::validate_response(validated)))
    }

    async fn fetch_witsvid(
        &self,
        _request: Request<WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Err(ApiError::WitUnimplemented.into())
    }

    async fn fetch_wit_bundles(
        &self,
        _request: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Err(ApiError::WitUnimplemented.into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use futures::future::BoxFuture;

    use tokio::net::unix::UCred;

    use super::*;
    use crate::jwt::{IssueError, JwtSvidToken};
    use crate::testing::{domain, identity};

    struct NoIssuer;

    impl JwtSvidIssuer for NoIssuer {
        fn issue<'a>(
            &'a self,
            _identity: &'a crate::cache::Identity,
            _audience: &'a [String],
        ) -> BoxFuture<'a, Result<JwtSvidToken, IssueError>> {
            Box::pin(async { Err(IssueError::Unavailable("no issuer in this test".into())) })
        }
    }

    fn with_cred<T>(message: T, cred: tokio::net::unix::UCred) -> Request<T> {
        let mut request = Request::new(message);
        request
            .extensions_mut()
            .insert(Arc::new(crate::attest::Attestor::new().caller(Some(cred))));
        request
    }

    /// The test process's credentials, and handlers with one identity for them (inside a
    /// runtime).
    fn api_for_me(max_streams: usize) -> (UCred, WorkloadApi, watch::Sender<bool>) {
        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        let cred = ours.peer_cred().unwrap();
        let (ca, own) = domain("own.test");
        let state = AgentState::new();
        let me = format!("unix:uid:{}", cred.uid());
        state.publish(Snapshot {
            own_bundle: Arc::new(own),
            federated: BTreeMap::new(),
            identities: vec![identity(&ca, "/web", &[&me], &[])],
        });
        let (stop_tx, stop) = watch::channel(false);
        let api = WorkloadApi::new(state, Arc::new(NoIssuer), max_streams, stop);
        (cred, api, stop_tx)
    }

    #[tokio::test]
    async fn open_streams_are_limited() {
        let (cred, api, _stop) = api_for_me(1);
        let open = api
            .fetch_x509svid(with_cred(X509svidRequest {}, cred))
            .await;
        let refused = api
            .fetch_x509svid(with_cred(X509svidRequest {}, cred))
            .await;
        assert_eq!(refused.err().unwrap().code(), tonic::Code::Unavailable);
        drop(open);
        let request = with_cred(X509svidRequest {}, cred);
        api.fetch_x509svid(request).await.unwrap();
    }

    #[tokio::test]
    async fn issuer_failures_map_to_unavailable() {
        let (cred, api, _stop) = api_for_me(1);
        let request = JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        };
        let status = api
            .fetch_jwtsvid(with_cred(request, cred))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn an_open_stream_ends_when_its_process_executes_another_program() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};

        use futures::StreamExt as _;

        let (cred, api, _stop) = api_for_me(4);
        // A shell of our uid stands for the process that opened the connection; once told, it
        // replaces itself with `sleep`.
        let mut shell = Command::new("sh")
            .args(["-c", "read line; exec sleep 30"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = i32::try_from(shell.id()).unwrap();
        let caller = crate::attest::Attestor::new().capture(Some((pid, cred.uid(), cred.gid())));
        let mut request = Request::new(X509svidRequest {});
        request.extensions_mut().insert(Arc::new(caller));
        let mut stream = api.fetch_x509svid(request).await.unwrap().into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.svids.len(), 1);

        writeln!(shell.stdin.as_mut().unwrap()).unwrap();
        let exe = format!("/proc/{pid}/exe");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_link(&exe).unwrap().ends_with("sleep") {
            assert!(
                std::time::Instant::now() < deadline,
                "sh did not exec sleep"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // A new SVID for the identity: the stream would send it, but its caller changed.
        let (ca, own) = domain("own.test");
        let me = format!("unix:uid:{}", cred.uid());
        api.state.publish(Snapshot {
            own_bundle: Arc::new(own),
            federated: BTreeMap::new(),
            identities: vec![identity(&ca, "/web", &[&me], &[])],
        });
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        shell.kill().unwrap();
        shell.wait().unwrap();
        assert_eq!(ended.code(), tonic::Code::Unavailable);
        assert_eq!(ended.message(), crate::attest::ATTESTATION_PROGRAM_CHANGED);
        assert!(stream.next().await.is_none(), "the stream ended");
    }

    #[tokio::test]
    async fn the_streams_of_one_uid_are_limited() {
        let (cred, api, _stop) = api_for_me(16);
        let attestor = crate::attest::Attestor::with_limits(crate::attest::AttestLimits {
            max_streams_per_uid: 2,
            ..crate::attest::AttestLimits::default()
        });
        let request = || {
            let mut request = Request::new(X509svidRequest {});
            request
                .extensions_mut()
                .insert(Arc::new(attestor.caller(Some(cred))));
            request
        };
        let first = api.fetch_x509svid(request()).await.unwrap();
        let _second = api.fetch_x509svid(request()).await.unwrap();
        let refused = api.fetch_x509svid(request()).await.err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("as many Workload API streams as one user may")
        );
        drop(first);
        api.fetch_x509svid(request()).await.unwrap();
    }
}
