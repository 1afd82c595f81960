//! The demo's web dashboards (`--keep-running`): one per trust domain, in this process, each on
//! its own loopback port in front of its hub's admin socket, as `fedhub dashboard` runs them.

use anyhow::Context as _;
use fedhub_dashboard::Dashboard;
use tokio_util::sync::CancellationToken;

use super::setup::Domain;

/// The running dashboards.
pub struct Dashboards {
    /// Each domain's dashboard URL with its token, in the order of the domains; `None`
    /// without dashboards.
    pub urls: Vec<Option<String>>,
    /// Stops them.
    pub stop: CancellationToken,
}

impl Dashboards {
    /// No dashboards, for `count` domains.
    pub fn none(count: usize) -> Self {
        Self {
            urls: vec![None; count],
            stop: CancellationToken::new(),
        }
    }

    /// Starts one dashboard per domain on a loopback port chosen by binding it.
    ///
    /// # Errors
    /// When a port cannot be bound or the system has no random bytes for a token.
    pub async fn start(domains: &[&Domain]) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let mut urls = Vec::with_capacity(domains.len());
        for domain in domains {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding a loopback port for a dashboard")?;
            let dashboard = Dashboard::new(domain.plan.admin_socket.clone(), false)?;
            urls.push(Some(dashboard.url(listener.local_addr()?)));
            let shutdown = stop.clone().cancelled_owned();
            tokio::spawn(async move {
                if let Err(error) = dashboard.serve(listener, shutdown).await {
                    tracing::error!(%error, "the demo's dashboard stopped");
                }
            });
        }
        Ok(Self { urls, stop })
    }
}
