//! An in-process hub and agent on loopback with a temporary data directory, and a Workload API
//! client for this process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedhub_agent::config::{AgentConfig, JoinToken, NodeAttestation};
use fedhub_agent::run::RunningAgent;
use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_hub::config::HubConfig;
use fedhub_hub::run::{LaunchOptions, RunningHub};
use fedhub_proto::workload::{X509svidRequest, X509svidResponse};
use fedhub_registry::{EntrySpec, Selector};
pub use fedhub_workload_client::WorkloadApiClient as WorkloadClient;
use tempfile::TempDir;
use tonic::Status;

/// Actor name written to the registry audit log.
pub const ACTOR: &str = "fedhub-bench";
/// The benchmark's trust domain.
pub const TRUST_DOMAIN: &str = "bench.test";

/// A hub started in this process.
pub struct BenchHub {
    pub hub: RunningHub,
    pub dir: TempDir,
}

impl BenchHub {
    /// Starts a hub on 127.0.0.1 ephemeral ports (node API and bundle endpoint; no OIDC,
    /// no health listener).
    pub async fn start(options: LaunchOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = HubConfig::from_toml(&format!(
            r#"trust_domain = "{TRUST_DOMAIN}"
data_dir = "{data}"

[agent_api]
address = "127.0.0.1:0"
signings_per_second = 1000000

[bundle_endpoint]
address = "127.0.0.1:0"

[health]
enabled = false
"#,
            data = dir.path().join("hub").display(),
        ))?;
        let hub = fedhub_hub::run::launch_with(config, options)
            .await
            .context("starting the hub")?;
        Ok(Self { hub, dir })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        self.hub.hub.trust_domain()
    }

    /// Creates a join token; returns it with the agent ID it will give.
    pub async fn join_token(&self) -> anyhow::Result<(String, SpiffeId)> {
        let token = format!("bench-{}", uuid_like());
        self.hub
            .hub
            .registry()
            .create_join_token(ACTOR, &token, Duration::from_secs(600), None)
            .await?;
        let agent_id = fedhub_hub::node::join_token_agent_id(self.trust_domain(), &token);
        Ok((token, agent_id))
    }

    /// Writes the agent's configuration (without its token) and the hub bundle it trusts.
    pub fn write_agent_config(&self, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let bundle = dir.join("hub-bundle.json");
        std::fs::write(&bundle, self.hub.hub.own_bundle().to_json())?;
        let socket = dir.join("agent.sock");
        let address = self
            .hub
            .bound
            .agent_api
            .context("the hub has no node API listener")?;
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"{TRUST_DOMAIN}\"\nhub_address = \"{address}\"\n\
                 trust_bundle_file = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n",
                bundle.display(),
                dir.join("data").display(),
                socket.display()
            ),
        )?;
        Ok((config, socket))
    }

    /// Starts an agent in this process, attested with a new join token.
    pub async fn start_agent(&self) -> anyhow::Result<(RunningAgent, SpiffeId)> {
        self.start_agent_named("agent").await
    }

    /// [`BenchHub::start_agent`] with its files (socket included) under `name`, so that
    /// several agents can run side by side.
    pub async fn start_agent_named(&self, name: &str) -> anyhow::Result<(RunningAgent, SpiffeId)> {
        let (token, agent_id) = self.join_token().await?;
        let (config_path, _) = self.write_agent_config(name)?;
        let mut config = AgentConfig::load(&config_path)?;
        config.attestation = Some(NodeAttestation::JoinToken(JoinToken::new(token)));
        let agent = fedhub_agent::run::launch(config)
            .await
            .context("starting the agent")?;
        Ok((agent, agent_id))
    }

    /// Registers `spec` and wakes the sync streams, as the admin API does.
    pub async fn register(&self, spec: &EntrySpec) -> anyhow::Result<()> {
        self.hub.hub.registry().create_entry(ACTOR, spec).await?;
        self.hub.hub.notify_changed().await?;
        Ok(())
    }

    /// An entry for `path` under `parent`, selecting this process's uid.
    pub fn own_entry(&self, path: &str, parent: &SpiffeId) -> anyhow::Result<EntrySpec> {
        Ok(EntrySpec::new(
            self.trust_domain().spiffe_id(path)?,
            parent.clone(),
            vec![own_uid_selector()?],
        ))
    }
}

/// `unix:uid:<this process's uid>`.
pub fn own_uid_selector() -> anyhow::Result<Selector> {
    Ok(Selector::new(
        "unix",
        &format!("uid:{}", rustix::process::getuid().as_raw()),
    )?)
}

/// A random-enough suffix for join tokens.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{nanos:032x}")
}

/// Connects one HTTP/2 connection to the Workload API at `socket`.
pub async fn workload_client(socket: &Path) -> anyhow::Result<WorkloadClient> {
    fedhub_workload_client::connect(socket, None)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))
}

/// The first message of a new `FetchX509SVID` stream.
pub async fn fetch_x509(client: &mut WorkloadClient) -> Result<X509svidResponse, Status> {
    let mut stream = client
        .fetch_x509svid(X509svidRequest {})
        .await?
        .into_inner();
    stream
        .message()
        .await?
        .ok_or_else(|| Status::unavailable("the stream ended without a message"))
}

/// Waits until the Workload API at `socket` grants this process an X509-SVID whose response
/// satisfies `ready`.
pub async fn wait_for(
    socket: &Path,
    timeout: Duration,
    ready: impl Fn(&X509svidResponse) -> bool,
) -> anyhow::Result<X509svidResponse> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        match workload_client(socket).await {
            Ok(mut client) => match fetch_x509(&mut client).await {
                Ok(response) if ready(&response) => return Ok(response),
                Ok(_) => last = "the response is not complete yet".into(),
                Err(status) => last = status.to_string(),
            },
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "no usable X509-SVID from {} within {timeout:?}: {last}",
        socket.display()
    )
}
