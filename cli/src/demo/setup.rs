//! Setting up one trust domain of the demo: hub, agent, federation, registration, lab API.
//! Everything an operator would do goes through the same interfaces they use: config files,
//! the hub's admin API on its Unix socket, and the agent's Workload API.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedhub_agent::config::{AgentConfig, JoinToken, NodeAttestation};
use fedhub_agent::run::RunningAgent;
use fedhub_core::endpoint::ProfileName;
use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_hub::admin::api::{
    BundleView, CreateJoinToken, CreateRelationship, EntrySpecBody, EntryView, JoinTokenView,
    RelationshipConfig, RelationshipView, RotateRequest, RotateView,
};
use fedhub_hub::config::{HubConfig, TlsFiles};
use fedhub_hub::federation::FederationOptions;
use fedhub_hub::run::{LaunchOptions, PreBound, RunningHub};
use hyper::Method;
use tokio_util::sync::CancellationToken;

use super::lab::{self, Lab, Peer};
use super::pki::DemoPki;
use super::workload::Workload;
use crate::admin_client::AdminClient;

/// Addresses and paths of one trust domain, chosen before anything starts.
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
    agent_api: SocketAddr,
    bundle_endpoint: SocketAddr,
    oidc: SocketAddr,
    health: SocketAddr,
    mtls: SocketAddr,
    lab: SocketAddr,
}

/// The TCP listeners of one trust domain. Each port is chosen by binding it, once, and the
/// listener is handed to the server that uses it (the hub through its launch options), so no
/// other process can take a port between its choice and its use.
#[derive(Debug)]
pub struct DomainListeners {
    agent_api: StdListener,
    bundle_endpoint: StdListener,
    oidc: StdListener,
    health: StdListener,
    mtls: StdListener,
    lab: StdListener,
}

impl DomainListeners {
    fn bind() -> anyhow::Result<Self> {
        let listen = || StdListener::bind("127.0.0.1:0").context("binding a loopback port");
        Ok(Self {
            agent_api: listen()?,
            bundle_endpoint: listen()?,
            oidc: listen()?,
            health: listen()?,
            mtls: listen()?,
            lab: listen()?,
        })
    }
}

impl DomainPlan {
    /// Plans `trust_domain` with its workload under `base`, binding its listeners.
    ///
    /// # Errors
    /// When no port can be bound or no directory created.
    pub fn new(
        trust_domain: &str,
        workload: &'static str,
        base: &Path,
    ) -> anyhow::Result<(Self, DomainListeners)> {
        let dir = base.join(trust_domain);
        super::create_dirs(&dir)?;
        let listeners = DomainListeners::bind()?;
        let plan = Self {
            trust_domain: TrustDomain::new(trust_domain)?,
            workload,
            admin_socket: dir.join("hub").join("admin").join("admin.sock"),
            agent_socket: dir.join("agent.sock"),
            dir,
            agent_api: listeners.agent_api.local_addr()?,
            bundle_endpoint: listeners.bundle_endpoint.local_addr()?,
            oidc: listeners.oidc.local_addr()?,
            health: listeners.health.local_addr()?,
            mtls: listeners.mtls.local_addr()?,
            lab: listeners.lab.local_addr()?,
        };
        Ok((plan, listeners))
    }

    /// The OIDC issuer URL of the hub.
    pub fn oidc_issuer(&self) -> String {
        format!("https://{}", self.oidc)
    }

    /// The lab API's base URL.
    pub fn lab_url(&self) -> String {
        format!("http://{}", self.lab)
    }

    /// The hub's Prometheus metrics URL.
    pub fn hub_metrics_url(&self) -> String {
        format!("http://{}/metrics", self.health)
    }

    /// The workload's mTLS server, `host:port`.
    fn mtls_address(&self) -> String {
        self.mtls.to_string()
    }

    fn workload_id(&self) -> anyhow::Result<SpiffeId> {
        Ok(self
            .trust_domain
            .spiffe_id(&format!("/{}", self.workload))?)
    }
}

/// Writes `hub.toml` with the planned addresses and starts the hub on the listeners bound for
/// them.
async fn launch_hub(
    plan: &DomainPlan,
    listeners: PreBound,
    oidc: &TlsFiles,
) -> anyhow::Result<RunningHub> {
    let config_path = plan.dir.join("hub.toml");
    let text = format!(
        r#"# Written by `fedhub demo`, which binds these addresses itself and hands the listeners
# to the hub it runs in-process.
trust_domain = "{td}"
data_dir = "{data}"

[agent_api]
address = "{agent_api}"

[bundle_endpoint]
address = "{bundle_endpoint}"
refresh_hint = "10s"

[oidc]
enabled = true
address = "{oidc_address}"
issuer = "{issuer}"
cert_file = "{cert}"
key_file = "{key}"

[health]
enabled = true
address = "{health}"
"#,
        td = plan.trust_domain,
        data = plan.dir.join("hub").display(),
        agent_api = plan.agent_api,
        bundle_endpoint = plan.bundle_endpoint,
        oidc_address = plan.oidc,
        health = plan.health,
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
        listeners,
        ..LaunchOptions::default()
    };
    fedhub_hub::run::launch_with(config, options)
        .await
        .with_context(|| format!("starting the hub of {}", plan.trust_domain))
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
}

impl Domain {
    /// Writes `hub.toml` and starts the hub on `listeners`.
    ///
    /// # Errors
    /// When the configuration is refused or the hub cannot start.
    pub async fn start(
        plan: DomainPlan,
        listeners: DomainListeners,
        pki: &DemoPki,
    ) -> anyhow::Result<Self> {
        let oidc = pki.issue(&plan.dir, "oidc")?;
        let DomainListeners {
            agent_api,
            bundle_endpoint,
            oidc: oidc_listener,
            health,
            mtls,
            lab,
        } = listeners;
        let hub_listeners = PreBound {
            agent_api: Some(agent_api),
            bundle_endpoint: Some(bundle_endpoint),
            oidc: Some(oidc_listener),
            health: Some(health),
        };
        let hub = launch_hub(&plan, hub_listeners, &oidc).await?;
        Ok(Self {
            workload: Workload {
                name: plan.workload,
                spiffe_id: plan.workload_id()?,
                socket: plan.agent_socket.clone(),
            },
            admin: AdminClient::new(plan.admin_socket.clone()),
            mtls_listener: Some(mtls),
            lab_listener: Some(lab),
            plan,
            hub,
            agent: None,
            entry: None,
        })
    }

    /// The lab API's base URL.
    pub fn lab_url(&self) -> String {
        self.plan.lab_url()
    }

    /// The agent's Prometheus metrics URL (empty before the agent started).
    pub fn agent_metrics_url(&self) -> String {
        self.agent
            .as_ref()
            .and_then(RunningAgent::health_address)
            .map_or_else(String::new, |address| format!("http://{address}/metrics"))
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
                        profile: ProfileName::HttpsSpiffe,
                        endpoint_spiffe_id: Some(other.hub_id()),
                        extra_ca_pem: None,
                        accept_empty_bundle: false,
                        require_sequence: false,
                        source: fedhub_core::endpoint::FetchSource::Direct,
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

[health]
enabled = true
address = "127.0.0.1:0"
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
            federates_with: vec![peer.trust_domain.clone()],
            ..EntrySpecBody::new(
                self.workload.spiffe_id.clone(),
                token.spiffe_id,
                vec![format!("unix:uid:{}", rustix::process::getuid().as_raw())],
            )
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
        mtls_address: domain.plan.mtls_address(),
        peer: Peer {
            spiffe_id: peer.workload.spiffe_id.clone(),
            mtls_address: peer.plan.mtls_address(),
            lab_url: peer.plan.lab_url(),
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
        if let Err(error) = fedhub_serve::serve(
            api,
            None,
            router,
            fedhub_serve::ServeLimits::new("lab", fedhub_serve::ConnectionLimits::default()),
            stopped,
        )
        .await
        {
            tracing::error!(%error, "lab API stopped");
        }
    });
    Ok(RunningLab {
        lab,
        url: domain.plan.lab_url(),
        stop,
    })
}

fn tokio_listener(listener: Option<StdListener>) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = listener.context("the lab was started twice")?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

/// Starts both workloads' lab APIs and mTLS servers on their listeners.
///
/// # Errors
/// When a listener cannot be handed to the runtime, or a lab is started twice.
pub fn start_labs(
    alpha: &mut Domain,
    beta: &mut Domain,
    http: reqwest::Client,
) -> anyhow::Result<(RunningLab, RunningLab)> {
    let alpha_lab = start_lab(alpha, beta, http.clone())?;
    let beta_lab = start_lab(beta, alpha, http)?;
    Ok((alpha_lab, beta_lab))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether another process could take `address` right now.
    fn can_be_taken(address: SocketAddr) -> bool {
        match StdListener::bind(address) {
            Ok(_) => true,
            Err(error) => {
                assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{address}");
                false
            }
        }
    }

    #[tokio::test]
    async fn every_port_stays_bound_from_its_choice_to_its_server() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DemoPki::create(dir.path()).unwrap();
        let (plan, listeners) = DomainPlan::new("alpha.test", "web", dir.path()).unwrap();
        let addresses = [
            plan.agent_api,
            plan.bundle_endpoint,
            plan.oidc,
            plan.mtls,
            plan.lab,
        ];
        for address in addresses {
            assert!(
                !can_be_taken(address),
                "{address} was released after planning"
            );
        }

        let domain = Domain::start(plan.clone(), listeners, &pki).await.unwrap();
        // The hub serves the very listeners planned (it would have failed to bind their
        // addresses, which were never free), and its configuration file says where.
        let bound = &domain.hub.bound;
        assert_eq!(bound.agent_api, Some(plan.agent_api));
        assert_eq!(bound.bundle_endpoint, Some(plan.bundle_endpoint));
        assert_eq!(bound.oidc, Some(plan.oidc));
        let hub_toml = std::fs::read_to_string(plan.dir.join("hub.toml")).unwrap();
        for address in [plan.agent_api, plan.bundle_endpoint, plan.oidc] {
            assert!(
                hub_toml.contains(&format!("address = \"{address}\"")),
                "{address} missing in:\n{hub_toml}"
            );
        }
        for address in addresses {
            assert!(!can_be_taken(address), "{address} was released at start");
        }
        domain.shutdown().await;
    }
}
