//! The SPIFFE Workload API on a Unix domain socket (checklist §4, §5).
//!
//! - Every request must carry the metadata `workload.spiffe.io: true` (exactly one value);
//!   otherwise `INVALID_ARGUMENT` before any other work (WAPI-4, WAPI-5).
//! - Callers are identified by workload attestation of the socket's peer process
//!   ([`crate::attest`]), never by anything they send (WEP-9, WEP-10); so the socket is mode
//!   0777 (WEP-11).
//! - Streams send the complete current view at once and then whenever it changes (WAPI-7..9);
//!   a caller left without identities gets `PERMISSION_DENIED` and the stream ends (WAPI-12).
//! - Limits: requests up to 64 KiB, 64 concurrent streams per connection, 1024 open watch
//!   streams in total (more are refused with `UNAVAILABLE`); connections capped in total and
//!   per uid, closed after `[workload_api] idle_timeout` without a call in progress, and
//!   pinged to find dead peers ([`ConnectionLimits`]).
//! - `FetchWITSVID` and `FetchWITBundles` answer `UNIMPLEMENTED` (WAPI-2).
//! - The same server answers Envoy SDS ([`crate::sds`]), which needs no security header.

mod authority;
mod connection;
mod error;
mod limits;
mod messages;
mod service;
mod socket_dir;

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fedhub_proto::WORKLOAD_SECURITY_HEADER;
use fedhub_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};
use tonic_reflection::server::{v1, v1alpha};

use self::authority::{AuthorityRewrite, H2Limits};
use self::connection::{CallerStream, Serving};
use self::error::ApiError;
use self::limits::ConnectionCaps;
pub use self::limits::{ConnectionLimits, OPEN_METRIC, REFUSED_METRIC};
use self::service::WorkloadApi;
pub(crate) use self::socket_dir::effective_uid;
use crate::attest::{AttestLimits, Attestor};
use crate::cache::AgentState;
use crate::jwt::JwtSvidIssuer;

/// The largest request message accepted.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The largest request header list accepted.
const MAX_HEADER_BYTES: u32 = 16 * 1024;
/// The HTTP/2 settings the server announces and the `:authority` rewriter assumes: frames of at
/// most 16 KiB, an HPACK table of 4 KiB (both the HTTP/2 defaults).
const H2_LIMITS: H2Limits = H2Limits {
    max_frame_size: 16 * 1024,
    header_table_size: 4096,
};
/// Concurrent HTTP/2 streams per connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Open watch streams (`FetchX509SVID`, `FetchX509Bundles`, `FetchJWTBundles`) in total.
const MAX_OPEN_STREAMS: usize = 1024;
/// The pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long calls in progress may take to finish once their connection is closing (idle, or
/// the agent shutting down); streams end at once on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the Workload API endpoint could not be set up or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The socket's directory could not be created.
    #[error("cannot create the socket directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Another user could replace the socket: its directory, a directory above it, or a
    /// symbolic link on the way is not owned by root or the agent's user, or group or others
    /// may write to the directory (without the sticky bit).
    #[error(
        "unsafe workload api socket location: the {what} {path} (owner uid {owner}, mode \
         {mode:04o}) {problem}, so another user could replace the socket; {fix}"
    )]
    UnsafeDirectory {
        /// `directory` or `symbolic link`.
        what: &'static str,
        /// The directory or link.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// The agent's own uid could not be read, to check the socket's directory.
    #[error("cannot read the agent's effective uid from /proc/self/status: {0}")]
    OwnUid(#[source] io::Error),
    /// Something that is not a socket sits at the socket path.
    #[error("{path} exists and is not a socket; remove it or choose another socket path")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Another process serves on the socket.
    #[error("{path} is in use by a running server; stop it or choose another socket path")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The gRPC reflection service could not be built from the Workload API's descriptors.
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A socket operation failed (remove stale, bind, set permissions).
    #[error("cannot {action} the socket {path}: {source}")]
    Socket {
        /// What was attempted.
        action: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// A bound Workload API socket, ready to serve. The socket file is removed when this value
/// (or the server it became) is dropped.
#[derive(Debug)]
pub struct WorkloadEndpoint {
    listener: UnixListener,
    socket: SocketFile,
    attestation: AttestLimits,
    connections: ConnectionLimits,
}

impl WorkloadEndpoint {
    /// Binds the socket at `path`: makes sure its directory is one only root and the agent's
    /// user can change (creating it, mode 0755, when missing; see below), replaces a stale
    /// socket (one nobody serves on; anything else at the path is left alone), and makes it
    /// connectable by every local user (mode 0777; callers are identified by attestation,
    /// WEP-11). Must run inside a Tokio runtime.
    ///
    /// Workloads trust whatever answers at the path, so the socket's directory, every
    /// directory above it and every symbolic link on the way must be owned by root or the
    /// agent's effective uid, and no directory may be writable by group or others unless it
    /// has the sticky bit (as `/tmp`). Otherwise another local user could put their own
    /// socket in its place, e.g. after creating `/tmp/fedhub` before the agent first ran.
    ///
    /// # Errors
    /// [`ServeError::UnsafeDirectory`] naming the directory, its owner and mode, and the fix;
    /// [`ServeError::NotASocket`] or [`ServeError::InUse`] when the path is taken;
    /// [`ServeError::CreateDir`], [`ServeError::OwnUid`] or [`ServeError::Socket`] when a file
    /// operation fails.
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, ServeError> {
        let path = path.as_ref().to_owned();
        let uid = socket_dir::effective_uid().map_err(ServeError::OwnUid)?;
        let absolute = std::path::absolute(&path).map_err(|source| ServeError::Socket {
            action: "resolve",
            path: path.clone(),
            source,
        })?;
        if let Some(dir) = absolute.parent() {
            socket_dir::prepare(dir, uid)?;
        }
        remove_stale_socket(&path)?;
        let socket_error = |action| {
            let path = path.clone();
            move |source| ServeError::Socket {
                action,
                path,
                source,
            }
        };
        let listener = UnixListener::bind(&path).map_err(socket_error("bind"))?;
        let socket = SocketFile(path.clone());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
            .map_err(socket_error("set permissions on"))?;
        tracing::debug!(socket = %path.display(), "workload api socket bound");
        Ok(Self {
            listener,
            socket,
            attestation: AttestLimits::default(),
            connections: ConnectionLimits::default(),
        })
    }

    /// Attests callers within `limits` instead of the defaults.
    #[must_use]
    pub fn with_attestation_limits(mut self, limits: AttestLimits) -> Self {
        self.attestation = limits;
        self
    }

    /// Caps and times connections within `limits` instead of the defaults.
    #[must_use]
    pub fn with_connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.connections = limits;
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.socket.0
    }

    /// Serves the Workload API from `state`, minting JWT-SVIDs through `issuer`, until
    /// `shutdown` completes. On shutdown open streams end with `UNAVAILABLE`, in-flight calls
    /// get [`DRAIN_TIMEOUT`] to finish, and the socket file is removed. Failures of single
    /// connections are logged and skipped.
    ///
    /// # Errors
    /// [`ServeError::Reflection`] when the reflection service cannot be built.
    pub async fn serve(
        self,
        state: AgentState,
        issuer: Arc<dyn JwtSvidIssuer>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let Self {
            listener,
            socket,
            attestation,
            connections,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let attestor = Attestor::with_limits(attestation);
        let sds = crate::sds::server(state.clone(), stop_rx.clone());
        let api = WorkloadApi::new(state, issuer, MAX_OPEN_STREAMS, stop_rx);
        let api = SpiffeWorkloadApiServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
        let api = InterceptedService::new(api, require_security_header);
        let (reflection_v1, reflection_v1alpha) = reflection()?;
        let routes = Routes::new(api)
            .add_service(sds)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .prepare();
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .max_frame_size(H2_LIMITS.max_frame_size)
            .max_header_list_size(MAX_HEADER_BYTES)
            .keep_alive_interval(connections.keepalive_interval)
            .keep_alive_timeout(connections.keepalive_timeout);
        let serving = Arc::new(Serving {
            http2,
            idle_timeout: connections.idle_timeout,
            drain_timeout: DRAIN_TIMEOUT,
            closing: CancellationToken::new(),
            abort: CancellationToken::new(),
        });
        let caps = ConnectionCaps::new(&connections);
        // Each connection task holds a clone of `alive`; `all_ended` says when none is left.
        let (alive, mut all_ended) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // E.g. out of file descriptors: wait a moment instead of spinning.
                        tracing::warn!(%error, "workload api accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let credentials = stream.peer_cred().ok();
            let Ok(permit) = caps.admit(credentials.map(|c| c.uid())) else {
                continue;
            };
            let stream = CallerStream::accept(stream, credentials, &attestor);
            let caller = Arc::clone(stream.caller());
            let io = AuthorityRewrite::new(stream, H2_LIMITS);
            let serving = Arc::clone(&serving);
            let routes = routes.clone();
            let alive = alive.clone();
            tokio::spawn(async move {
                let _alive = alive;
                let _permit = permit;
                serving.drive(io, routes, caller).await;
            });
        }
        tracing::info!("workload api shutting down");
        drop(listener);
        stop_tx.send_replace(true);
        serving.closing.cancel();
        drop(alive);
        if tokio::time::timeout(DRAIN_TIMEOUT, all_ended.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                "workload api connections still open after the drain timeout; closing them"
            );
            serving.abort.cancel();
        }
        drop(socket);
        Ok(())
    }
}

/// gRPC server reflection (both protocol versions clients use) describing the Workload API,
/// so that tools such as `grpcurl` find it without the proto file (WEP-12 SHOULD). The SDS
/// service is not described: Envoy does not need reflection.
fn reflection() -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    ServeError,
> {
    let build = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(fedhub_proto::WORKLOAD_DESCRIPTOR_SET)
    };
    Ok((build().build_v1()?, build().build_v1alpha()?))
}

/// Binds `socket_path` and serves the Workload API until `shutdown` completes; see
/// [`WorkloadEndpoint::bind`] and [`WorkloadEndpoint::serve`].
///
/// # Errors
/// Those of [`WorkloadEndpoint::bind`] and [`WorkloadEndpoint::serve`].
pub async fn serve(
    socket_path: impl AsRef<Path>,
    state: AgentState,
    issuer: Arc<dyn JwtSvidIssuer>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    WorkloadEndpoint::bind(socket_path)?
        .serve(state, issuer, shutdown)
        .await
}

/// Removes a socket left behind by an earlier run; refuses to touch anything else, or a
/// socket someone still serves on.
fn remove_stale_socket(path: &Path) -> Result<(), ServeError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServeError::Socket {
                action: "inspect",
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket {
            path: path.to_owned(),
        });
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServeError::InUse {
            path: path.to_owned(),
        });
    }
    std::fs::remove_file(path).map_err(|source| ServeError::Socket {
        action: "remove the stale",
        path: path.to_owned(),
        source,
    })
}

/// Removes the socket file when dropped.
#[derive(Debug)]
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.0)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %self.0.display(), %error, "cannot remove the workload api socket");
        }
    }
}

/// Admits a request only with exactly one `workload.spiffe.io` value, `true` (WAPI-4, WAPI-5).
fn require_security_header(request: Request<()>) -> Result<Request<()>, Status> {
    let mut values = request.metadata().get_all(WORKLOAD_SECURITY_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if value.as_bytes() == b"true" => Ok(request),
        _ => Err(ApiError::MissingSecurityHeader.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(values: &[&str]) -> Request<()> {
        let mut request = Request::new(());
        for value in values {
            request
                .metadata_mut()
                .append(WORKLOAD_SECURITY_HEADER, value.parse().unwrap());
        }
        request
    }

    #[test]
    fn the_security_header_must_be_exactly_one_true() {
        assert!(require_security_header(request_with(&["true"])).is_ok());
        for bad in [&[][..], &["True"], &["1"], &["true", "true"], &["true "]] {
            let status = require_security_header(request_with(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert_eq!(status.message(), "security header missing from request");
        }
    }

    #[tokio::test]
    async fn binding_refuses_files_and_live_sockets_but_replaces_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(matches!(
            WorkloadEndpoint::bind(&file),
            Err(ServeError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

        let path = dir.path().join("nested/dir/agent.sock");
        let live = WorkloadEndpoint::bind(&path).unwrap();
        assert!(matches!(
            WorkloadEndpoint::bind(&path),
            Err(ServeError::InUse { .. })
        ));
        // A socket nobody listens on any more is replaced.
        let stale = std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap();
        drop(stale);
        WorkloadEndpoint::bind(dir.path().join("stale.sock")).unwrap();
        // A link is not a socket, even one to a socket: neither followed nor removed.
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            WorkloadEndpoint::bind(&link),
            Err(ServeError::NotASocket { .. })
        ));
        assert!(link.symlink_metadata().is_ok());
        drop(live);
        assert!(!path.exists(), "dropping the endpoint removes the socket");
    }

    #[tokio::test]
    async fn binding_refuses_a_directory_another_user_could_change() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let socket = open.join("agent.sock");
        let error = WorkloadEndpoint::bind(&socket).unwrap_err();
        assert!(
            matches!(&error, ServeError::UnsafeDirectory { path, .. } if *path == open),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains(&open.display().to_string()), "{message}");
        assert!(message.contains("mode 0777"), "{message}");
        assert!(message.contains("chmod go-w"), "{message}");
        assert!(!socket.exists(), "nothing is bound there");

        // Fixed as the message says: bound.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        WorkloadEndpoint::bind(&socket).unwrap();
    }
}
