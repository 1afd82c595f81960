//! Connections to the hub's node API, as agents make them.

use std::net::SocketAddr;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// One TLS connection to the node API at `address` through `connector`, sending `server_name`
/// in SNI, with `TCP_NODELAY` set as agents set it.
///
/// # Errors
/// When the connection or the TLS handshake fails.
pub async fn channel(
    address: SocketAddr,
    connector: TlsConnector,
    server_name: &'static str,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://node-api.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(address).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from(server_name)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}
