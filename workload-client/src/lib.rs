//! A SPIFFE Workload API client over a Unix socket: one HTTP/2 connection, and the security
//! header every request must carry (`workload.spiffe.io: true`, WAPI-4) added to each call.
//!
//! The client is the generated one ([`WorkloadApiClient`]), so callers see tonic's statuses
//! and decide themselves about timeouts and error wording (the CLI wraps it in errors that say
//! what to do; the benchmarks use it as is).
//!
//! [`x509`] decodes and checks the X.509 messages (SVIDs, keys, bundles) for every fedhub
//! program that reads them: the CLI and `fedhub proxy`.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod x509;

use std::path::Path;
use std::time::Duration;

use fedhub_proto::WORKLOAD_SECURITY_HEADER;
use fedhub_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::codegen::InterceptedService;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

/// The interceptor adding the security header: [`security_header`].
pub type Interceptor = fn(Request<()>) -> Result<Request<()>, Status>;

/// A Workload API client whose calls carry `workload.spiffe.io: true`.
pub type WorkloadApiClient = SpiffeWorkloadApiClient<InterceptedService<Channel, Interceptor>>;

/// Adds the security header every Workload API request must carry (WAPI-4).
///
/// # Errors
/// Never: the signature is the one tonic requires of an interceptor.
pub fn security_header(mut request: Request<()>) -> Result<Request<()>, Status> {
    request
        .metadata_mut()
        .insert(WORKLOAD_SECURITY_HEADER, MetadataValue::from_static("true"));
    Ok(request)
}

/// Connects one HTTP/2 connection to the Workload API at `socket`, giving the connection
/// `connect_timeout` when given.
///
/// # Errors
/// The transport error when the socket cannot be reached.
pub async fn connect(
    socket: &Path,
    connect_timeout: Option<Duration>,
) -> Result<WorkloadApiClient, tonic::transport::Error> {
    let path = socket.to_owned();
    let connector = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { UnixStream::connect(path).await.map(TokioIo::new) }
    });
    // The URI only names the HTTP/2 authority; the connector decides where to go.
    let mut endpoint = Endpoint::from_static("http://localhost");
    if let Some(timeout) = connect_timeout {
        endpoint = endpoint.connect_timeout(timeout);
    }
    let channel = endpoint.connect_with_connector(connector).await?;
    Ok(SpiffeWorkloadApiClient::with_interceptor(
        channel,
        security_header as Interceptor,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_gets_exactly_one_security_header() {
        let request = security_header(Request::new(())).unwrap();
        let values: Vec<_> = request
            .metadata()
            .get_all(WORKLOAD_SECURITY_HEADER)
            .iter()
            .collect();
        assert_eq!(values, ["true"]);
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let dir = std::env::temp_dir().join(format!("fedhub-wc-{}", std::process::id()));
        let error = connect(&dir.join("none.sock"), Some(Duration::from_secs(1)))
            .await
            .unwrap_err();
        let mut cause: &dyn std::error::Error = &error;
        while let Some(next) = cause.source() {
            cause = next;
        }
        assert!(cause.to_string().contains("No such file"), "{cause}");
    }
}
