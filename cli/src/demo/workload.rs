//! A demo workload: it gets its identity from its agent's Workload API, serves mutual TLS with
//! its X509-SVID, and calls its peer in the other trust domain with mTLS and with JWT-SVIDs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use fedhub_core::tls::{Authorizer, client_config, server_config};
use fedhub_core::x509::spiffe_id_of;
use fedhub_core::{Bundle, BundleSet, SpiffeId, TrustDomain, X509Svid};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::api::client::{ApiError, WorkloadClient};
use crate::api::endpoint::WorkloadSocket;
use crate::api::x509::X509Context;

/// How long one Workload API call may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// A workload of the demo, as seen from its own trust domain.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Short name (`web`, `echo`).
    pub name: &'static str,
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Its agent's Workload API socket.
    pub socket: PathBuf,
}

/// What a workload holds right now: its SVID and every bundle it may use.
pub struct Identity {
    /// The default X509-SVID.
    pub svid: X509Svid,
    /// Own and federated bundles, by trust domain.
    pub bundles: BundleSet,
    /// The trust domains of the federated bundles.
    pub federated: Vec<TrustDomain>,
    /// The SVID's hint.
    pub hint: String,
    /// The SVID's entry's `federates_with`.
    pub federates_with: Vec<String>,
}

/// The outcome of an mTLS call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MtlsCall {
    /// The SPIFFE ID the server presented (and we authorized).
    pub server_spiffe_id: String,
    /// The negotiated TLS version.
    pub tls_version: String,
    /// What the server answered.
    pub reply: String,
    /// The serial number of the client SVID used (hex).
    pub client_svid_serial: String,
}

/// The outcome of a JWT call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JwtCall {
    /// The audience of the token sent.
    pub audience: String,
    /// The caller's SPIFFE ID as the receiver validated it.
    pub validated_caller: String,
}

impl Workload {
    async fn client(&self) -> Result<WorkloadClient, ApiError> {
        let socket = WorkloadSocket::resolve(Some(&self.socket.display().to_string()), None)
            .map_err(|e| ApiError::Malformed(e.to_string()))?;
        WorkloadClient::connect(&socket, API_TIMEOUT).await
    }

    /// The workload's current identity from its agent.
    ///
    /// # Errors
    /// When the agent is unreachable or grants this process nothing.
    pub async fn identity(&self) -> Result<Identity, ApiError> {
        let mut client = self.client().await?;
        let context = X509Context::parse(client.fetch_x509().await?)?;
        let mut svids = context.svids.into_iter();
        let first = svids
            .next()
            .ok_or_else(|| ApiError::Malformed("no SVID".into()))?;
        let mut bundles = BundleSet::new();
        bundles.insert(first.bundle);
        let federated: Vec<TrustDomain> = context.federated.keys().cloned().collect();
        for bundle in context.federated.into_values() {
            bundles.insert(bundle);
        }
        Ok(Identity {
            svid: first.svid,
            bundles,
            federated,
            hint: first.hint,
            federates_with: first.federates_with,
        })
    }

    /// The JWT bundles the workload may use, as full bundles (JWT authorities only).
    ///
    /// # Errors
    /// When the agent is unreachable or sends something malformed.
    pub async fn jwt_bundles(&self) -> Result<Vec<Bundle>, ApiError> {
        let mut client = self.client().await?;
        let response = client.fetch_jwt_bundles().await?;
        response
            .bundles
            .into_iter()
            .map(|(key, jwks)| {
                let trust_domain = TrustDomain::new(&key)
                    .map_err(|e| ApiError::Malformed(format!("bundle key {key:?}: {e}")))?;
                let mut bundle = Bundle::new(trust_domain.clone());
                let parsed = Bundle::parse_json(trust_domain, &jwks, fedhub_core::MAX_BUNDLE_BYTES)
                    .map_err(|e| ApiError::Malformed(e.to_string()))?;
                for authority in parsed.bundle.jwt_authorities() {
                    bundle.add_jwt_authority(authority.clone());
                }
                Ok(bundle)
            })
            .collect()
    }

    /// A JWT-SVID for `audience`.
    ///
    /// # Errors
    /// When the agent refuses or is unreachable.
    pub async fn jwt_svid(&self, audience: &str) -> Result<String, ApiError> {
        let mut client = self.client().await?;
        let response = client
            .fetch_jwt(vec![audience.to_owned()], self.spiffe_id.to_string())
            .await?;
        response
            .svids
            .into_iter()
            .next()
            .map(|s| s.svid)
            .ok_or_else(|| ApiError::Malformed("no JWT-SVID in the response".into()))
    }

    /// Validates `token` for `audience` through the workload's own agent.
    ///
    /// # Errors
    /// [`ApiError::InvalidArgument`] with the reason when the token is not valid.
    pub async fn validate_jwt(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<(String, prost_types::Struct), ApiError> {
        let mut client = self.client().await?;
        let response = client
            .validate_jwt(audience.to_owned(), token.to_owned())
            .await?;
        Ok((response.spiffe_id, response.claims.unwrap_or_default()))
    }

    /// Serves mutual TLS on `listener` until `stop`: every connection must present an X509-SVID
    /// for exactly `peer`; the server answers one line, `hello <peer>` . The SVID and bundles
    /// are fetched from the agent for each connection, so rotations are picked up.
    pub async fn serve_mtls(self, listener: TcpListener, peer: SpiffeId, stop: CancellationToken) {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "demo mTLS accept failed");
                        continue;
                    }
                },
            };
            let workload = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                if let Err(error) = workload.answer_mtls(stream, peer).await {
                    tracing::info!(workload = workload.name, error = %format!("{error:#}"), "mTLS connection refused");
                }
            });
        }
    }

    async fn answer_mtls(&self, stream: TcpStream, peer: SpiffeId) -> anyhow::Result<()> {
        let identity = self.identity().await?;
        let config = server_config(
            &identity.svid,
            Some(Arc::new(identity.bundles)),
            Authorizer::Exact(peer),
        )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let tls = tokio::time::timeout(API_TIMEOUT, acceptor.accept(stream))
            .await
            .context("TLS handshake timed out")??;
        let client_id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| spiffe_id_of(cert.as_ref()))
            .transpose()?
            .ok_or_else(|| anyhow!("the client presented no certificate"))?;
        let mut tls = BufReader::new(tls);
        let mut line = String::new();
        tls.read_line(&mut line).await?;
        let reply = format!("hello {client_id}, this is {}\n", self.spiffe_id);
        tls.get_mut().write_all(reply.as_bytes()).await?;
        tls.get_mut().shutdown().await?;
        Ok(())
    }

    /// Calls `peer`'s mTLS server at `address`, presenting this workload's SVID and accepting
    /// only a server SVID for exactly `peer`, verified with the peer trust domain's bundle.
    ///
    /// # Errors
    /// When the identity is unavailable or the handshake or authorization fails.
    pub async fn call_mtls(&self, address: &str, peer: &SpiffeId) -> anyhow::Result<MtlsCall> {
        let identity = self.identity().await?;
        if !identity.federated.iter().any(|td| peer.is_member_of(td)) {
            bail!(
                "{} holds no bundle of {}: the federation is not in place",
                self.spiffe_id,
                peer.trust_domain()
            );
        }
        let serial = serial_hex(identity.svid.leaf());
        let config = client_config(
            Some(&identity.svid),
            Arc::new(identity.bundles),
            Authorizer::Exact(peer.clone()),
        )?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        let server_name = ServerName::try_from("demo.invalid")?.to_owned();
        let mut tls = tokio::time::timeout(API_TIMEOUT, connector.connect(server_name, tcp))
            .await
            .context("TLS handshake timed out")??;
        let (tls_version, server_id) = {
            let connection = tls.get_ref().1;
            let version = connection
                .protocol_version()
                .map_or_else(|| "unknown".to_owned(), |v| format!("{v:?}"));
            let server = connection
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|cert| spiffe_id_of(cert.as_ref()))
                .transpose()?
                .ok_or_else(|| anyhow!("the server presented no certificate"))?;
            (version, server)
        };
        tls.write_all(b"hi\n").await?;
        let mut reply = String::new();
        tls.read_to_string(&mut reply).await?;
        Ok(MtlsCall {
            server_spiffe_id: server_id.to_string(),
            tls_version,
            reply: reply.trim().to_owned(),
            client_svid_serial: serial,
        })
    }
}

/// The serial number of a certificate, hex.
pub fn serial_hex(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert.tbs_certificate.raw_serial_as_string())
        .unwrap_or_default()
}

/// The issuer name of a certificate.
pub fn issuer_of(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert.issuer().to_string())
        .unwrap_or_default()
}
