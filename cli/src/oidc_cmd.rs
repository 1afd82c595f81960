//! `fedhub oidc run`: OIDC discovery served on its own, away from the hub. It reads the trust
//! domain's JWT keys from the hub's bundle endpoint (verified like any federation fetch) or
//! from a Workload API socket, and republishes them whenever they change.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use fedhub_bundle_endpoint::{BundleFetcher, FetchAuth, FetchOptions, FetchOutcome};
use fedhub_core::{Bundle, SpiffeId, TrustDomain};
use fedhub_oidc_discovery::OidcPublisher;
use fedhub_serve::{ConnectionLimits, ServeLimits, SwappableCert, serve, server_config};
use serde::Deserialize;

use crate::api::client::WorkloadClient;
use crate::api::endpoint::WorkloadSocket;

/// Commands of `fedhub oidc`.
#[derive(Debug, clap::Subcommand)]
pub enum OidcCommand {
    /// Serve OIDC discovery for a trust domain's JWT-SVID keys, standalone.
    ///
    /// The keys come from the hub's bundle endpoint or from a Workload API socket (see the
    /// [source] section of the configuration); the documents are republished on every change.
    Run {
        /// Path of the TOML configuration; its keys are documented in
        /// docs/configuration.md#fedhub-oidc-run.
        #[arg(long, short, env = "FEDHUB_OIDC_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcSettings {
    issuer: String,
    #[serde(default = "default_address")]
    address: std::net::SocketAddr,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    allow_insecure_http: bool,
    #[serde(default = "default_refresh", with = "humantime_serde")]
    refresh_interval: Duration,
    source: SourceSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSettings {
    trust_domain: String,
    bundle_endpoint_url: Option<String>,
    endpoint_spiffe_id: Option<String>,
    trust_bundle_file: Option<PathBuf>,
    extra_ca_file: Option<PathBuf>,
    workload_socket: Option<String>,
}

fn default_address() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 8444))
}

fn default_refresh() -> Duration {
    Duration::from_secs(30)
}

/// The latest bundle of the endpoint's trust domain: the bootstrap bundle first, then every
/// fetched one, so the endpoint's CA can rotate (a self-serving endpoint).
struct LatestBundle(std::sync::RwLock<Arc<Bundle>>);

impl fedhub_core::BundleSource for LatestBundle {
    fn bundle(&self, trust_domain: &TrustDomain) -> Option<Arc<Bundle>> {
        let current = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        (current.trust_domain() == trust_domain).then_some(current)
    }
}

/// Where the keys come from.
enum KeySource {
    BundleEndpoint(Box<BundleFetcher>, Option<Arc<LatestBundle>>),
    Workload {
        socket: WorkloadSocket,
        trust_domain: TrustDomain,
    },
}

fn pem_certificates(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    fedhub_core::pem::certificates_der(text).with_context(|| path.display().to_string())
}

impl KeySource {
    fn from_settings(source: SourceSettings) -> anyhow::Result<Self> {
        let trust_domain = TrustDomain::new(&source.trust_domain)
            .with_context(|| format!("source.trust_domain {:?}", source.trust_domain))?;
        match (source.bundle_endpoint_url, source.workload_socket) {
            (Some(_), Some(_)) => {
                bail!("source: give bundle_endpoint_url or workload_socket, not both")
            }
            (None, None) => bail!(
                "source: give bundle_endpoint_url (the hub's bundle endpoint) or workload_socket \
                 (a Workload API socket, e.g. unix:///tmp/fedhub/agent.sock)"
            ),
            (None, Some(socket)) => Ok(Self::Workload {
                socket: WorkloadSocket::resolve(Some(&socket), None)
                    .context("source.workload_socket")?,
                trust_domain,
            }),
            (Some(url), None) => {
                let mut latest = None;
                let auth = match (source.endpoint_spiffe_id, source.trust_bundle_file) {
                    (Some(id), Some(bundle_file)) => {
                        let id = SpiffeId::parse(&id)
                            .with_context(|| format!("source.endpoint_spiffe_id {id:?}"))?;
                        let bytes = std::fs::read(&bundle_file).with_context(|| {
                            format!("source.trust_bundle_file {}", bundle_file.display())
                        })?;
                        let bundle = Bundle::from_json_or_pem(id.trust_domain(), &bytes)
                            .context("source.trust_bundle_file")?;
                        let source =
                            Arc::new(LatestBundle(std::sync::RwLock::new(Arc::new(bundle))));
                        latest = Some(Arc::clone(&source));
                        FetchAuth::HttpsSpiffe {
                            endpoint_id: id,
                            bundles: source,
                        }
                    }
                    (Some(_), None) => bail!(
                        "source.endpoint_spiffe_id needs source.trust_bundle_file (the hub's \
                         bundle, from `fedhub bundle show --format spiffe`)"
                    ),
                    (None, _) => FetchAuth::HttpsWeb {
                        extra_roots: source
                            .extra_ca_file
                            .as_deref()
                            .map(pem_certificates)
                            .transpose()?
                            .unwrap_or_default(),
                    },
                };
                let fetcher = BundleFetcher::new(&url, trust_domain, auth, FetchOptions::default())
                    .context("source.bundle_endpoint_url")?;
                Ok(Self::BundleEndpoint(Box::new(fetcher), latest))
            }
        }
    }

    /// The current bundle holding the JWT authorities, or `None` when unchanged.
    async fn fetch(&self, etag: &mut Option<String>) -> anyhow::Result<Option<Bundle>> {
        match self {
            Self::BundleEndpoint(fetcher, latest) => match fetcher.fetch(etag.as_deref()).await? {
                FetchOutcome::NotModified => Ok(None),
                FetchOutcome::Fetched {
                    bundle, etag: tag, ..
                } => {
                    *etag = tag;
                    if let Some(latest) = latest
                        && !bundle.x509_authorities().is_empty()
                    {
                        let mut slot = latest
                            .0
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if slot.trust_domain() == bundle.trust_domain() {
                            *slot = Arc::new(bundle.clone());
                        }
                    }
                    Ok(Some(bundle))
                }
            },
            Self::Workload {
                socket,
                trust_domain,
            } => {
                let mut client = WorkloadClient::connect(socket, Duration::from_secs(5)).await?;
                let response = client.fetch_jwt_bundles().await?;
                let jwks = response
                    .bundles
                    .iter()
                    .find(|(key, _)| TrustDomain::new(key).is_ok_and(|td| td == *trust_domain))
                    .map(|(_, jwks)| jwks)
                    .with_context(|| {
                        format!("the Workload API offers no JWT bundle of {trust_domain}")
                    })?;
                let parsed =
                    Bundle::parse_json(trust_domain.clone(), jwks, fedhub_core::MAX_BUNDLE_BYTES)?;
                Ok(Some(parsed.bundle))
            }
        }
    }
}

/// Runs a `fedhub oidc` command.
pub fn run(command: OidcCommand) -> anyhow::Result<ExitCode> {
    let OidcCommand::Run { config } = command;
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read the OIDC configuration {}", config.display()))?;
    let settings: OidcSettings = toml::from_str(&text)
        .with_context(|| format!("invalid OIDC configuration {}", config.display()))?;
    let tls_files = match (settings.cert_file.clone(), settings.key_file.clone()) {
        (Some(cert_file), Some(key_file)) => Some((cert_file, key_file)),
        (None, None) if settings.allow_insecure_http => None,
        (None, None) => bail!(
            "cert_file and key_file are required, or allow_insecure_http = true behind a \
             TLS-terminating proxy"
        ),
        _ => bail!("cert_file and key_file go together"),
    };
    let publisher = OidcPublisher::new(&settings.issuer, tls_files.is_none()).context("issuer")?;
    let source = KeySource::from_settings(settings.source)?;
    crate::runtime()?.block_on(async move {
        let tls = match &tls_files {
            Some((cert_file, key_file)) => {
                let cert = fedhub_serve::load_certified_key(cert_file, key_file)
                    .map_err(|error| anyhow::anyhow!("cert_file: {error}"))?;
                Some(server_config(SwappableCert::new(cert)))
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(settings.address)
            .await
            .with_context(|| format!("address {}", settings.address))?;
        let refresh = settings.refresh_interval;
        let keys = publisher.clone();
        let refresher = tokio::spawn(async move {
            let mut etag = None;
            loop {
                match source.fetch(&mut etag).await {
                    Ok(Some(bundle)) => {
                        keys.publish_keys(&bundle);
                        tracing::info!(keys = bundle.jwt_authorities().len(), "published JWT keys");
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "cannot read the JWT keys; keeping the published ones");
                    }
                }
                tokio::time::sleep(refresh).await;
            }
        });
        tracing::info!(address = %listener.local_addr()?, issuer = %settings.issuer, "OIDC discovery serving");
        serve(
            listener,
            tls,
            fedhub_oidc_discovery::router(publisher),
            ServeLimits::new("oidc", ConnectionLimits::default()),
            crate::shutdown_signal(),
        )
        .await?;
        refresher.abort();
        Ok(ExitCode::SUCCESS)
    })
}
