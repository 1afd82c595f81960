//! The demo's legacy applications: a plain HTTP client in `alpha.test` reaches a plain HTTP
//! server in `beta.test` through `fedhub proxy outbound` (alpha's identity) and `fedhub proxy
//! inbound` (beta's identity, admitting only alpha's workload), and the server names its caller
//! from `X-Forwarded-Client-Cert`. Neither application knows anything of SPIFFE or TLS.

use std::net::SocketAddr;
use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use fedhub_core::SpiffeId;
use fedhub_proxy::{
    AllowList, Inbound, InboundSpec, Limits, Mode, Outbound, OutboundSpec, X509Source,
};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::setup::Domain;

/// Where the plain client sends its requests: the outbound proxy, once started (read by the
/// lab API's `/spiffe/demo/proxy/call`).
static OUTBOUND: OnceLock<SocketAddr> = OnceLock::new();

/// How long the proxies may wait for their first SVID.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The outcome of one call through the proxies.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProxiedCall {
    /// The outbound proxy the plain client called (`http://…`).
    pub client_called: String,
    /// The HTTP status.
    pub status: u16,
    /// The caller's SPIFFE ID as the plain server read it from `X-Forwarded-Client-Cert`.
    pub caller_spiffe_id: String,
    /// The header as the server received it.
    pub x_forwarded_client_cert: String,
}

/// The running proxies and server; [`ProxyPath::shutdown`] stops them.
pub struct ProxyPath {
    stop: CancellationToken,
    proxies: Vec<tokio::task::JoinHandle<()>>,
}

/// The proxies kept running for the lab API until the demo ends ([`shutdown`]).
static RUNNING: std::sync::Mutex<Option<ProxyPath>> = std::sync::Mutex::new(None);

/// How long the proxies may take to stop.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl ProxyPath {
    /// Keeps the proxies running until [`shutdown`].
    pub fn keep(self) {
        if let Ok(mut running) = RUNNING.lock() {
            *running = Some(self);
        }
    }

    /// Stops the proxies and the server, and waits (briefly) until the proxies have let go of
    /// their Workload API streams.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for proxy in self.proxies {
            let _ = tokio::time::timeout(STOP_TIMEOUT, proxy).await;
        }
    }
}

/// Stops the proxies kept for the lab API, before the agents they follow go away (which the
/// proxies would otherwise log as a lost Workload API).
pub async fn shutdown() {
    let running = RUNNING.lock().ok().and_then(|mut running| running.take());
    if let Some(path) = running {
        path.shutdown().await;
    }
}

/// Starts the plain server (beta), the inbound proxy in front of it, and the outbound proxy
/// for alpha's plain client.
///
/// # Errors
/// When a listener cannot be bound.
pub async fn start(alpha: &Domain, beta: &Domain) -> anyhow::Result<ProxyPath> {
    let stop = CancellationToken::new();
    let server = plain_server(stop.clone()).await?;
    let limits = Limits::default();
    let beta_source = X509Source::start(&beta.plan.agent_socket);
    let inbound = Inbound::bind(
        InboundSpec {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            forward: server.to_string(),
            allow: AllowList::Ids(vec![alpha.workload.spiffe_id.clone()]),
            mode: Mode::Http,
        },
        beta_source.clone(),
        limits,
    )
    .await?;
    let inbound_address = inbound.local_addr();
    let alpha_source = X509Source::start(&alpha.plan.agent_socket);
    let outbound = Outbound::bind(
        OutboundSpec {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            connect: inbound_address.to_string(),
            server_id: beta.workload.spiffe_id.clone(),
            mode: Mode::Http,
        },
        alpha_source.clone(),
        limits,
    )
    .await?;
    // The first SVIDs and bundles, before the first call.
    for (name, source) in [("beta.test", &beta_source), ("alpha.test", &alpha_source)] {
        tokio::time::timeout(READY_TIMEOUT, source.ready())
            .await
            .with_context(|| format!("the {name} proxy got no SVID from its agent within 10 s"))?;
    }
    let _ = OUTBOUND.set(outbound.local_addr());
    let proxies = vec![
        tokio::spawn(serve_until(inbound.serve(stop.clone()))),
        tokio::spawn(serve_until(outbound.serve(stop.clone()))),
    ];
    Ok(ProxyPath { stop, proxies })
}

/// Runs one proxy listener; a listener that fails for good says so.
async fn serve_until(
    serve: impl std::future::Future<Output = Result<(), fedhub_proxy::ProxyError>>,
) {
    if let Err(error) = serve.await {
        tracing::error!(%error, "the demo's proxy stopped");
    }
}

/// A plain HTTP/1.1 server that answers `hello <caller>` and says who called.
async fn plain_server(stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot bind the demo's plain HTTP server")?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let xfcc = request
                            .headers()
                            .get(fedhub_proxy::XFCC)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let caller = caller_of(&xfcc).unwrap_or_else(|| "nobody".into());
                        {
                            use std::io::Write as _;
                            let _ = writeln!(
                                std::io::stdout().lock(),
                                "      beta.test plain server: request from {caller}"
                            );
                        }
                        let mut response = hyper::Response::new(Full::new(Bytes::from(format!(
                            "hello {caller}\n"
                        ))));
                        if let Ok(value) = hyper::header::HeaderValue::from_str(&xfcc) {
                            response.headers_mut().insert("x-seen-xfcc", value);
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

/// The `URI=` element of an `X-Forwarded-Client-Cert` value.
fn caller_of(xfcc: &str) -> Option<String> {
    xfcc.split(';')
        .find_map(|part| part.strip_prefix("URI="))
        .map(str::to_owned)
}

/// The plain client: one GET through the outbound proxy.
///
/// # Errors
/// When the proxies were not started, or the call fails.
pub async fn call() -> anyhow::Result<ProxiedCall> {
    let address = *OUTBOUND
        .get()
        .context("the proxies of the demo are not running")?;
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot connect to the outbound proxy at {address}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/")
        .header(hyper::header::HOST, "server.beta.test")
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let seen = response
        .headers()
        .get("x-seen-xfcc")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.into_body().collect().await?.to_bytes();
    if status != 200 {
        bail!(
            "the proxies answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(ProxiedCall {
        client_called: format!("http://{address}/"),
        status,
        caller_spiffe_id: caller_of(&seen).unwrap_or_default(),
        x_forwarded_client_cert: seen,
    })
}

/// Checks that the server saw `expected` as its caller.
///
/// # Errors
/// When it saw another caller.
pub fn expect_caller(call: &ProxiedCall, expected: &SpiffeId) -> anyhow::Result<()> {
    if call.caller_spiffe_id != expected.as_str() {
        bail!(
            "the server saw caller {:?}, expected {expected}",
            call.caller_spiffe_id
        );
    }
    Ok(())
}
