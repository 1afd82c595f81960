//! Setting up one trust domain of the demo: hub, agent, federation, registration, lab API.
//! Everything an operator would do goes through the same interfaces they use: config files,
//! the hub's admin API on its Unix socket, and the agent's Workload API.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedhub_agent::config::{AgentConfig, JoinToken, NodeAttestation};
use fedhub_agent::run::RunningAgent;
use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_hub::admin::api::{
    BundleView, CreateJoinToken, CreateRelationship, EntrySpecBody, EntryView, JoinTokenView,
    Profile, RelationshipConfig, RelationshipView, RotateRequest, RotateView,
};
use fedhub_hub::config::{HubConfig, TlsFiles};
use fedhub_hub::federation::FederationOptions;
use fedhub_hub::run::{LaunchOptions, RunError, RunningHub};
use hyper::Method;
use tokio_util::sync::CancellationToken;

use super::lab::{self, Lab, Peer};
use super::pki::DemoPki;
use super::workload::Workload;
use crate::admin_client::AdminClient;

/// Ports and paths of one trust domain, chosen before anything starts.
#[derive(Debug, Clone)]
pub struct DomainPlan {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The workload's short name.
    pub workload: &'static str,
    /// `DIR/<trust domain>`.
    pub dir: PathBuf,
    /// The hub's admin socket.
    pub admin_socket: PathBuf,
    /// The agent's Workload API socket.
    pub agent_socket: PathBuf,
    oidc_port: u16,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl DomainPlan {
    /// Plans `trust_domain` with its workload under `base`.
    ///
    /// # Errors
    /// When no free port or directory can be had.
    pub fn new(trust_domain: &str, workload: &'static str, base: &Path) -> anyhow::Result<Self> {
        let dir = base.join(trust_domain);
        super::create_dirs(&dir)?;
        Ok(Self {
            trust_domain: TrustDomain::new(trust_domain)?,
            workload,
            admin_socket: dir.join("hub").join("admin").join("admin.sock"),
            agent_socket: dir.join("agent.sock"),
            dir,
            oidc_port: free_port()?,
        })
    }

    /// The OIDC issuer URL of the hub.
    pub fn oidc_issuer(&self) -> String {
        format!("https://127.0.0.1:{}", self.oidc_port)
    }

    fn workload_id(&self) -> anyhow::Result<SpiffeId> {
        Ok(self
            .trust_domain
            .spiffe_id(&format!("/{}", self.workload))?)
    }
}

enum LaunchError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for LaunchError {
    fn from(error: E) -> Self {
        Self::Other(error.into())
    }
}

/// Writes `hub.toml` and starts the hub; the agent API and bundle endpoint take ephemeral
/// ports, read back from the running hub.
async fn launch_hub(plan: &DomainPlan, oidc: &TlsFiles) -> Result<RunningHub, LaunchError> {
    let config_path = plan.dir.join("hub.toml");
    let text = format!(
        r#"# Written by `fedhub demo`.
trust_domain = "{td}"
data_dir = "{data}"

[agent_api]
address = "127.0.0.1:0"

[bundle_endpoint]
address = "127.0.0.1:0"
refresh_hint = "10s"

[oidc]
enabled = true
address = "127.0.0.1:{oidc_port}"
issuer = "{issuer}"
cert_file = "{cert}"
key_file = "{key}"

[health]
enabled = false
"#,
        td = plan.trust_domain,
        data = plan.dir.join("hub").display(),
        oidc_port = plan.oidc_port,
        issuer = plan.oidc_issuer(),
        cert = oidc.cert_file.display(),
        key = oidc.key_file.display(),
    );
    std::fs::write(&config_path, text)?;
    let config = HubConfig::load(&config_path)
        .with_context(|| format!("demo hub configuration {}", config_path.display()))?;
    let options = LaunchOptions {
        federation: Some(FederationOptions {
            min_refresh: Duration::from_secs(1),
            ..FederationOptions::default()
        }),
        ..LaunchOptions::default()
    };
    match fedhub_hub::run::launch_with(config, options).await {
        Ok(hub) => Ok(hub),
        Err(
            error @ RunError::Bind {
                what: "oidc.address",
                ..
            },
        ) => Err(LaunchError::PortTaken(error.into())),
        Err(error) => Err(LaunchError::Other(
            anyhow::Error::new(error).context(format!("starting the hub of {}", plan.trust_domain)),
        )),
    }
}

/// A running trust domain.
pub struct Domain {
    /// Its plan.
    pub plan: DomainPlan,
    /// Its workload.
    pub workload: Workload,
    hub: RunningHub,
    admin: AdminClient,
    agent: Option<RunningAgent>,
    entry: Option<(String, EntrySpecBody)>,
    mtls_listener: Option<StdListener>,
    lab_listener: Option<StdListener>,
    mtls_address: String,
    lab_url: String,
}

impl Domain {
    /// Writes `hub.toml` and starts the hub.
    ///
    /// # Errors
    /// When the configuration is refused or the hub cannot start.
    pub async fn start(plan: &DomainPlan, pki: &DemoPki) -> anyhow::Result<Self> {
        let oidc = pki.issue(&plan.dir, "oidc")?;
        let mut plan = plan.clone();
        // The OIDC issuer names its port, so that port is chosen before the hub binds it;
        // should another process take it in between, choose again.
        let mut attempts = 0;
        let hub = loop {
            match launch_hub(&plan, &oidc).await {
                Err(LaunchError::PortTaken(error)) if attempts < 5 => {
                    tracing::info!(%error, "OIDC port taken meanwhile; choosing another");
                    attempts += 1;
                    plan.oidc_port = free_port()?;
                }
                Err(LaunchError::PortTaken(error) | LaunchError::Other(error)) => {
                    return Err(error);
                }
                Ok(hub) => break hub,
            }
        };
        let mtls_listener = StdListener::bind("127.0.0.1:0")?;
        let lab_listener = StdListener::bind("127.0.0.1:0")?;
        Ok(Self {
            workload: Workload {
                name: plan.workload,
                spiffe_id: plan.workload_id()?,
                socket: plan.agent_socket.clone(),
            },
            admin: AdminClient::new(plan.admin_socket.clone()),
            mtls_address: mtls_listener.local_addr()?.to_string(),
            lab_url: format!("http://{}", lab_listener.local_addr()?),
            mtls_listener: Some(mtls_listener),
            lab_listener: Some(lab_listener),
            plan,
            hub,
            agent: None,
            entry: None,
        })
    }

    /// The lab API's base URL.
    pub fn lab_url(&self) -> &str {
        &self.lab_url
    }

    /// The hub's bundle endpoint URL.
    pub fn bundle_endpoint_url(&self) -> String {
        self.hub
            .bound
            .bundle_endpoint
            .map_or_else(String::new, |address| format!("https://{address}/"))
    }

    /// The SPIFFE ID the hub's bundle endpoint presents.
    pub fn hub_id(&self) -> SpiffeId {
        self.hub.hub.hub_id()
    }

    /// Creates a relationship with `other` through the admin API, bootstrapped with `other`'s
    /// bundle as exchanged out of band.
    ///
    /// # Errors
    /// When the admin API refuses.
    pub async fn federate_with(&self, other: &Self) -> anyhow::Result<()> {
        let bootstrap = other.hub.hub.own_bundle().to_json();
        std::fs::write(
            self.plan
                .dir
                .join(format!("bootstrap-{}.json", other.plan.trust_domain)),
            &bootstrap,
        )?;
        let _: RelationshipView = self
            .admin
            .send(
                Method::POST,
                "/federation",
                &CreateRelationship {
                    trust_domain: other.plan.trust_domain.clone(),
                    config: RelationshipConfig {
                        bundle_endpoint_url: other.bundle_endpoint_url(),
                        profile: Profile::HttpsSpiffe,
                        endpoint_spiffe_id: Some(other.hub_id()),
                        extra_ca_pem: None,
                        accept_empty_bundle: false,
                    },
                    trust_domain_bundle: Some(bootstrap),
                },
            )
            .await
            .with_context(|| {
                format!(
                    "creating the relationship {} -> {}",
                    self.plan.trust_domain, other.plan.trust_domain
                )
            })?;
        Ok(())
    }

    /// Generates a join token, starts the agent with it, and registers the workload for this
    /// process's uid, federating with `peer`'s trust domain.
    ///
    /// # Errors
    /// When the admin API refuses or the agent cannot start.
    pub async fn with_agent(mut self, peer: &DomainPlan) -> anyhow::Result<Self> {
        let token: JoinTokenView = self
            .admin
            .send(
                Method::POST,
                "/join-tokens",
                &CreateJoinToken {
                    spiffe_id: None,
                    ttl_secs: 600,
                },
            )
            .await?;
        let bundle_file = self.plan.dir.join("hub-bundle.json");
        std::fs::write(&bundle_file, self.hub.hub.own_bundle().to_json())?;
        let config_path = self.plan.dir.join("agent.toml");
        std::fs::write(
            &config_path,
            format!(
                r#"# Written by `fedhub demo`. The join token is single use and already spent.
trust_domain = "{td}"
hub_address = "{hub_address}"
trust_bundle_file = "{bundle}"
data_dir = "{data}"
socket_path = "{socket}"
"#,
                td = self.plan.trust_domain,
                hub_address = self
                    .hub
                    .bound
                    .agent_api
                    .context("the hub has no agent API address")?,
                bundle = bundle_file.display(),
                data = self.plan.dir.join("agent").display(),
                socket = self.plan.agent_socket.display(),
            ),
        )?;
        // The token is handed over in memory, never written to disk.
        let mut config = AgentConfig::load(&config_path)
            .with_context(|| format!("demo agent configuration {}", config_path.display()))?;
        config.attestation = Some(NodeAttestation::JoinToken(JoinToken::new(token.token)));
        let agent = fedhub_agent::run::launch(config)
            .await
            .with_context(|| format!("starting the agent of {}", self.plan.trust_domain))?;
        self.agent = Some(agent);

        let spec = EntrySpecBody {
            spiffe_id: self.workload.spiffe_id.clone(),
            parent_id: token.spiffe_id,
            selectors: vec![format!("unix:uid:{}", rustix::process::getuid().as_raw())],
            federates_with: vec![peer.trust_domain.clone()],
            federates_with_groups: Vec::new(),
            federates_with_all: false,
            x509_svid_ttl_secs: None,
            jwt_svid_ttl_secs: None,
            dns_names: Vec::new(),
            hint: None,
        };
        let entry: EntryView = self.admin.send(Method::POST, "/entries", &spec).await?;
        self.entry = Some((entry.id, spec));
        Ok(self)
    }

    /// The own bundle's sequence as the admin API shows it.
    ///
    /// # Errors
    /// When the admin API fails.
    pub async fn own_sequence(&self) -> anyhow::Result<Option<u64>> {
        let bundle: BundleView = self.admin.get("/bundle").await?;
        Ok(bundle.sequence)
    }

    /// `fedhub bundle rotate [--activate]`.
    ///
    /// # Errors
    /// When the admin API fails.
    pub async fn rotate(&self, activate: bool) -> anyhow::Result<()> {
        let _: RotateView = self
            .admin
            .send(Method::POST, "/bundle/rotate", &RotateRequest { activate })
            .await?;
        Ok(())
    }

    /// `fedhub federation refresh TD`.
    ///
    /// # Errors
    /// When the refresh fails.
    pub async fn refresh(&self, trust_domain: &TrustDomain) -> anyhow::Result<()> {
        self.admin
            .act(Method::POST, &format!("/federation/{trust_domain}/refresh"))
            .await
    }

    /// The sequence and authority count of the stored bundle of `trust_domain`.
    ///
    /// # Errors
    /// When the admin API fails or nothing is stored.
    pub async fn stored_bundle_summary(
        &self,
        trust_domain: &TrustDomain,
    ) -> anyhow::Result<(Option<u64>, usize)> {
        let view: RelationshipView = self
            .admin
            .get(&format!("/federation/{trust_domain}"))
            .await?;
        let bundle = view
            .bundle
            .with_context(|| format!("no bundle of {trust_domain} is stored"))?;
        Ok((bundle.sequence, bundle.authorities))
    }

    /// Changes the workload's entry (its hint), so that its agent has the SVID signed again.
    ///
    /// # Errors
    /// When the admin API refuses.
    pub async fn reissue_workload_svid(&self) -> anyhow::Result<()> {
        let Some((id, spec)) = &self.entry else {
            bail!("the workload is not registered");
        };
        let mut spec = spec.clone();
        spec.hint = Some("rotated".into());
        let _: EntryView = self
            .admin
            .send(Method::PUT, &format!("/entries/{id}"), &spec)
            .await?;
        Ok(())
    }

    /// Stops the agent and the hub.
    pub async fn shutdown(self) {
        if let Some(agent) = self.agent
            && let Err(error) = agent.shutdown().await
        {
            tracing::warn!(%error, "agent stopped with an error");
        }
        self.hub.shutdown().await;
    }
}

/// Waits until `domain`'s workload holds an SVID and `peer`'s bundle.
///
/// # Errors
/// After 30 s without success, with the last reason.
pub async fn wait_until_federated(domain: &Domain, peer: &Domain) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reason = match domain.workload.identity().await {
            Ok(identity) if identity.federated.contains(&peer.plan.trust_domain) => return Ok(()),
            Ok(_) => format!("no bundle of {} yet", peer.plan.trust_domain),
            Err(error) => error.to_string(),
        };
        if Instant::now() > deadline {
            bail!(
                "{} did not get its SVID and {}'s bundle within 30 s: {reason}",
                domain.workload.spiffe_id,
                peer.plan.trust_domain
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A workload's lab API and mTLS server, running.
pub struct RunningLab {
    /// The lab's state.
    pub lab: Lab,
    /// Its base URL.
    pub url: String,
    /// Stops both servers.
    pub stop: CancellationToken,
}

fn start_lab(
    domain: &mut Domain,
    peer: &Domain,
    http: reqwest::Client,
) -> anyhow::Result<RunningLab> {
    let lab = Lab {
        me: domain.workload.clone(),
        mtls_address: domain.mtls_address.clone(),
        peer: Peer {
            spiffe_id: peer.workload.spiffe_id.clone(),
            mtls_address: peer.mtls_address.clone(),
            lab_url: peer.lab_url.clone(),
        },
        http,
    };
    let stop = CancellationToken::new();
    let mtls = tokio_listener(domain.mtls_listener.take())?;
    tokio::spawn(domain.workload.clone().serve_mtls(
        mtls,
        peer.workload.spiffe_id.clone(),
        stop.clone(),
    ));
    let api = tokio_listener(domain.lab_listener.take())?;
    let router = lab::router(lab.clone());
    let stopped = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        if let Err(error) = fedhub_hub::https::serve(
            api,
            None,
            router,
            fedhub_hub::https::ServeLimits::default(),
            stopped,
        )
        .await
        {
            tracing::error!(%error, "lab API stopped");
        }
    });
    Ok(RunningLab {
        lab,
        url: domain.lab_url.clone(),
        stop,
    })
}

fn tokio_listener(listener: Option<StdListener>) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = listener.context("the lab was started twice")?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

/// Starts both workloads' lab APIs and mTLS servers.
///
/// # Errors
/// When a port cannot be bound.
pub fn start_labs(
    alpha: &mut Domain,
    beta: &mut Domain,
    http: reqwest::Client,
) -> anyhow::Result<(RunningLab, RunningLab)> {
    let alpha_lab = start_lab(alpha, beta, http.clone())?;
    let beta_lab = start_lab(beta, alpha, http)?;
    Ok((alpha_lab, beta_lab))
}
