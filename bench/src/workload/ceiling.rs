//! `fedhub-bench workload-ceiling` (internal): the framework's ceiling for the Workload API.
//!
//! A minimal tonic server for the same `SpiffeWorkloadAPI` service on a Unix socket, in a
//! process of its own with the same multi-threaded runtime as `fedhub agent run`. It answers
//! pre-built responses captured from the real agent (prost-encoded files): `FetchX509SVID`
//! sends its response and then keeps the stream open, `FetchJWTSVID` answers its response;
//! no attestation, no header check, the other RPCs are `UNIMPLEMENTED`.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use anyhow::Context as _;
use fedhub_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use fedhub_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse, WitsvidRequest,
    WitsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest, X509svidResponse,
};
use futures::{Stream, StreamExt as _};
use tokio::net::UnixListener;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// Arguments of `fedhub-bench workload-ceiling`.
#[derive(Debug, Clone, clap::Args)]
pub struct CeilingArgs {
    /// The socket to serve on (must not exist).
    #[arg(long)]
    pub socket: PathBuf,
    /// A prost-encoded `X509SVIDResponse`, sent as the first message of every stream.
    #[arg(long)]
    pub x509_response: PathBuf,
    /// A prost-encoded `JWTSVIDResponse`, the answer to every `FetchJWTSVID`.
    #[arg(long)]
    pub jwt_response: PathBuf,
}

type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The ceiling's handlers: the pre-built responses.
struct Ceiling {
    x509: X509svidResponse,
    jwt: JwtsvidResponse,
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "not served by the bench's ceiling server",
    ))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Ceiling {
    type FetchX509SVIDStream = MessageStream<X509svidResponse>;
    type FetchX509BundlesStream = MessageStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = MessageStream<JwtBundlesResponse>;
    type FetchWITSVIDStream = MessageStream<WitsvidResponse>;
    type FetchWITBundlesStream = MessageStream<WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        // The first message, then open until the client goes, as an agent's stream.
        let first = futures::stream::once(std::future::ready(Ok(self.x509.clone())));
        Ok(Response::new(Box::pin(
            first.chain(futures::stream::pending()),
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        _request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        unimplemented()
    }

    async fn fetch_jwt_bundles(
        &self,
        _request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        unimplemented()
    }

    async fn fetch_jwtsvid(
        &self,
        _request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        Ok(Response::new(self.jwt.clone()))
    }

    async fn validate_jwtsvid(
        &self,
        _request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        unimplemented()
    }

    async fn fetch_witsvid(
        &self,
        _request: Request<WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        unimplemented()
    }

    async fn fetch_wit_bundles(
        &self,
        _request: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        unimplemented()
    }
}

fn decode<M: prost::Message + Default>(path: &Path) -> anyhow::Result<M> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    M::decode(bytes.as_slice()).with_context(|| format!("decoding {}", path.display()))
}

/// `fedhub-bench workload-ceiling`: serves until SIGTERM or SIGINT.
pub async fn run(args: &CeilingArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let ceiling = Ceiling {
        x509: decode(&args.x509_response)?,
        jwt: decode(&args.jwt_response)?,
    };
    let listener = UnixListener::bind(&args.socket)
        .with_context(|| format!("binding {}", args.socket.display()))?;
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            () = parent_gone() => {}
        }
    };
    let served = Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(ceiling))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = std::fs::remove_file(&args.socket);
    served.context("serving")
}

/// Resolves once this process's parent (the bench) has exited, should it die without
/// stopping the ceiling server.
async fn parent_gone() {
    let parent = rustix::process::getppid();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if rustix::process::getppid() != parent {
            return;
        }
    }
}

/// Encodes `message` into the file `path`; returns its encoded length.
pub fn write_message(path: &Path, message: &impl prost::Message) -> anyhow::Result<usize> {
    let bytes = message.encode_to_vec();
    std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(bytes.len())
}
