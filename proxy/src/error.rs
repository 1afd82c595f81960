//! Why the proxy could not start, follow the Workload API, or carry a connection.

use std::io;
use std::net::SocketAddr;

/// Why the Workload API could not be followed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The socket could not be reached.
    #[error("cannot connect to the Workload API: {0}; is the agent running?")]
    Connect(String),
    /// The agent answered with an error status.
    #[error("the Workload API refused FetchX509SVID ({code:?}): {message}")]
    Status {
        /// The gRPC code.
        code: tonic::Code,
        /// The agent's message.
        message: String,
    },
    /// A message broke the Workload API's encoding rules.
    #[error("the agent sent a malformed X509-SVID message: {0}")]
    Malformed(#[from] fedhub_workload_client::x509::DecodeError),
    /// The SVID's private key is not one rustls can sign with.
    #[error("the X509-SVID's private key cannot sign TLS handshakes: {0}")]
    Key(String),
}

impl From<tonic::Status> for SourceError {
    fn from(status: tonic::Status) -> Self {
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// Why a proxy could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A listen address could not be bound.
    #[error("cannot listen on {address}: {source}; is another process using it?")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An outbound listener would accept plain text from other hosts.
    #[error(
        "outbound listener {0} is not a loopback address: outbound proxies accept plain text \
         from the application and must listen on 127.0.0.1 or [::1]"
    )]
    NotLoopback(SocketAddr),
    /// The TLS configuration could not be built.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A listener failed while accepting.
    #[error("listener {address} failed: {source}")]
    Accept {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Why a connection from the outbound proxy to the remote failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No SVID has come from the Workload API yet.
    #[error(
        "no X509-SVID from the Workload API yet; is the agent running and does it grant this process an identity?"
    )]
    NoSvid,
    /// The remote could not be reached.
    #[error("cannot connect to {remote}: {source}")]
    Tcp {
        /// The remote address.
        remote: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed: the remote is not who it must be, or refused us.
    #[error("mutual TLS with {remote} failed: {source}")]
    Handshake {
        /// The remote address.
        remote: String,
        /// The TLS or I/O error.
        #[source]
        source: io::Error,
    },
    /// The connection or handshake took too long.
    #[error("connecting to {remote} timed out after {seconds} s")]
    Timeout {
        /// The remote address.
        remote: String,
        /// How long we waited.
        seconds: u64,
    },
}
