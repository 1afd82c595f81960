//! `fedhub demo`: two federated trust domains end to end, on loopback, with embedded defaults.
//!
//! Everything runs in this process but talks over real sockets: two hubs (SQLite), one agent
//! each (attested with a join token), both federations over `https_spiffe` with bootstrap
//! bundles, and one workload per side whose identity comes from its agent's Workload API.

mod dashboard;
mod lab;
mod pki;
mod proxied;
mod setup;
mod workload;

use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use setup::{Domain, DomainPlan};

/// Arguments of `fedhub demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Directory for the demo's state (hubs, agents, sockets, certificates, demo.json).
    /// Default: a new directory under the system's temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// After the steps, keep everything running until interrupted (Ctrl-C), so that the lab
    /// APIs, the Workload API sockets and the admin sockets can be explored.
    #[arg(long)]
    keep_running: bool,
}

/// Prints one line of the demo's narration to stdout.
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
    }};
}

/// Runs the demo.
///
/// # Errors
/// Set-up failures; a failed step is reported and turned into a non-zero exit code.
pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(run_async(args))
}

async fn run_async(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let dir = match &args.dir {
        Some(dir) => {
            create_dirs(dir).with_context(|| format!("cannot create --dir {}", dir.display()))?;
            std::path::absolute(dir)?
        }
        None => tempdir()?,
    };
    say!(
        "fedhub demo: two federated trust domains on loopback, state in {}",
        dir.display()
    );
    let web_pki = pki::DemoPki::create(&dir)?;

    say!("\n[1/7] Starting trust domains alpha.test and beta.test (hub + agent each)");
    let (alpha_plan, alpha_listeners) = DomainPlan::new("alpha.test", "web", &dir)?;
    let (beta_plan, beta_listeners) = DomainPlan::new("beta.test", "echo", &dir)?;
    let (alpha, beta) = tokio::try_join!(
        Domain::start(alpha_plan, alpha_listeners, &web_pki),
        Domain::start(beta_plan, beta_listeners, &web_pki)
    )?;
    for domain in [&alpha, &beta] {
        say!(
            "      {}: hub bundle endpoint {} , admin socket {}",
            domain.plan.trust_domain,
            domain.bundle_endpoint_url(),
            domain.plan.admin_socket.display()
        );
    }

    say!("\n[2/7] Federating both ways over https_spiffe with exchanged bootstrap bundles");
    alpha.federate_with(&beta).await?;
    beta.federate_with(&alpha).await?;
    say!(
        "      alpha.test trusts beta.test's bundle endpoint as spiffe://beta.test/fedhub/hub, and vice versa"
    );

    say!(
        "\n[3/7] Attesting agents with join tokens and registering workloads for uid {}",
        rustix::process::getuid().as_raw()
    );
    let (alpha_plan, beta_plan) = (alpha.plan.clone(), beta.plan.clone());
    let (mut alpha, mut beta) =
        tokio::try_join!(alpha.with_agent(&beta_plan), beta.with_agent(&alpha_plan))?;
    setup::wait_until_federated(&alpha, &beta).await?;
    setup::wait_until_federated(&beta, &alpha).await?;
    say!(
        "      {} and {} have SVIDs and each other's bundles",
        alpha.workload.spiffe_id,
        beta.workload.spiffe_id
    );

    let http = pki::http_client(&web_pki)?;
    let (alpha_lab, beta_lab) = setup::start_labs(&mut alpha, &mut beta, http.clone())?;
    let dashboards = if args.keep_running {
        dashboard::Dashboards::start(&[&alpha, &beta]).await?
    } else {
        dashboard::Dashboards::none(2)
    };
    write_demo_json(&dir, &[&alpha, &beta], &web_pki, &dashboards.urls)?;
    say!("      wrote {}", dir.join("demo.json").display());

    let failed = run_steps(&alpha, &beta, &alpha_lab, &http).await;
    let elapsed = started.elapsed();
    match &failed {
        None => say!("\nAll steps passed in {:.1} s.", elapsed.as_secs_f64()),
        Some(step) => say!("\nThe demo failed at {step}."),
    }

    if args.keep_running && failed.is_none() {
        say!("\nEverything keeps running; explore it (Ctrl-C stops):");
        for lab in [&alpha_lab, &beta_lab] {
            say!("  curl {}/spiffe/svid/info", lab.url);
        }
        say!(
            "  curl -X POST {}/spiffe/demo/proxy/call   (plain HTTP through fedhub proxy)",
            alpha_lab.url
        );
        for (domain, url) in [&alpha, &beta].iter().zip(dashboards.urls.iter().flatten()) {
            say!("  dashboard of {}: {url}", domain.plan.trust_domain);
        }
        say!(
            "  fedhub federation list --admin-socket {}",
            alpha.plan.admin_socket.display()
        );
        say!(
            "  SPIFFE_ENDPOINT_SOCKET=unix://{} fedhub api fetch x509",
            alpha.plan.agent_socket.display()
        );
        crate::shutdown_signal().await;
        say!("stopping");
    }
    dashboards.stop.cancel();
    // The proxies first: they follow the agents' Workload API.
    proxied::shutdown().await;
    tokio::join!(alpha.shutdown(), beta.shutdown());
    alpha_lab.stop.cancel();
    beta_lab.stop.cancel();
    Ok(if failed.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn seq(sequence: Option<u64>) -> String {
    sequence.map_or_else(|| "none".to_owned(), |s| s.to_string())
}

/// Creates `dir` and missing parents with mode 0755 (less what the umask takes away), so never
/// writable by group or others: under a umask of 002 plain `create_dir_all` would make them
/// group-writable, and the agent refuses such a socket directory. Existing directories keep
/// their mode.
pub(crate) fn create_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("fedhub-demo-{}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).context("cannot create a temporary directory"),
        }
    }
    bail!(
        "cannot create a temporary directory under {}",
        base.display()
    )
}

fn write_demo_json(
    dir: &std::path::Path,
    domains: &[&Domain],
    pki: &pki::DemoPki,
    dashboard_urls: &[Option<String>],
) -> anyhow::Result<()> {
    let trust_domains: Vec<_> = domains
        .iter()
        .zip(dashboard_urls)
        .map(|(d, dashboard_url)| {
            json!({
                "trust_domain": d.plan.trust_domain.to_string(),
                "workload_socket": d.plan.agent_socket.display().to_string(),
                "admin_socket": d.plan.admin_socket.display().to_string(),
                "bundle_endpoint_url": d.bundle_endpoint_url(),
                "bundle_endpoint_spiffe_id": d.hub_id().to_string(),
                "oidc_issuer_url": d.plan.oidc_issuer(),
                "ca_bundle_pem": pki.ca_file.display().to_string(),
                "workload_spiffe_id": d.workload.spiffe_id.to_string(),
                "lab_api_url": d.lab_url(),
                "dashboard_url": dashboard_url,
                "hub_metrics_url": d.plan.hub_metrics_url(),
                "agent_metrics_url": d.agent_metrics_url(),
            })
        })
        .collect();
    let document = json!({ "trust_domains": trust_domains });
    std::fs::write(dir.join("demo.json"), serde_json::to_vec_pretty(&document)?)
        .context("writing demo.json")
}

/// Runs the steps in order; returns the first failed one, if any.
async fn run_steps(
    alpha: &Domain,
    beta: &Domain,
    alpha_lab: &setup::RunningLab,
    http: &reqwest::Client,
) -> Option<String> {
    let mut failed = None;
    for (number, name, result) in [
        (4, "cross-domain mTLS", step_mtls(alpha_lab).await),
        (
            5,
            "JWT-SVID across domains and OIDC discovery",
            step_jwt_oidc(alpha, alpha_lab, http).await,
        ),
        (
            6,
            "CA rotation",
            step_rotation(alpha, beta, alpha_lab).await,
        ),
        (
            7,
            "plain HTTP through fedhub proxy",
            step_proxy(alpha, beta).await,
        ),
    ] {
        if let Err(error) = result {
            say!("      FAILED: {error:#}");
            failed.get_or_insert(format!("step {number} ({name})"));
        }
    }
    failed
}

async fn step_mtls(alpha_lab: &setup::RunningLab) -> anyhow::Result<()> {
    say!("\n[4/7] Cross-domain mTLS: spiffe://alpha.test/web calls spiffe://beta.test/echo");
    let call = alpha_lab
        .lab
        .me
        .call_mtls(
            &alpha_lab.lab.peer.mtls_address,
            &alpha_lab.lab.peer.spiffe_id,
        )
        .await?;
    if call.server_spiffe_id != alpha_lab.lab.peer.spiffe_id.as_str() {
        bail!("the server presented {}", call.server_spiffe_id);
    }
    if call.tls_version != "TLSv1_3" {
        bail!("negotiated {} instead of TLS 1.3", call.tls_version);
    }
    say!(
        "      {} with server {}",
        call.tls_version,
        call.server_spiffe_id
    );
    say!("      echo answered: {}", call.reply);
    say!("      each side verified the other with the federated bundle of the peer's trust domain");
    Ok(())
}

async fn step_jwt_oidc(
    alpha: &Domain,
    alpha_lab: &setup::RunningLab,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    say!("\n[5/7] JWT-SVID: web (alpha.test) presents a token to echo (beta.test) over plain HTTP");
    let call = lab::call_peer_with_jwt(&alpha_lab.lab).await?;
    if call.validated_caller != alpha.workload.spiffe_id.as_str() {
        bail!("echo validated the caller as {:?}", call.validated_caller);
    }
    say!(
        "      token for audience {} validated by beta.test's agent: caller is {}",
        call.audience,
        call.validated_caller
    );

    let issuer = alpha.plan.oidc_issuer();
    say!("      OIDC discovery of alpha.test at {issuer}");
    let discovery: serde_json::Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if discovery["issuer"] != issuer.as_str() {
        bail!("discovery document names issuer {}", discovery["issuer"]);
    }
    let jwks_uri = discovery["jwks_uri"]
        .as_str()
        .context("the discovery document has no jwks_uri")?;
    let keys: jsonwebtoken::jwk::JwkSet = http
        .get(jwks_uri)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = alpha.workload.jwt_svid("demo-relying-party").await?;
    let header = jsonwebtoken::decode_header(&token)?;
    let kid = header.kid.clone().context("the JWT-SVID has no kid")?;
    let jwk = keys
        .find(&kid)
        .with_context(|| format!("key {kid} is not in {jwks_uri}"))?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&["demo-relying-party"]);
    validation.set_issuer(&[issuer.as_str()]);
    let verified = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk)?,
        &validation,
    )?;
    say!(
        "      JWKS with {} key(s); a JWT-SVID verified against it: sub = {}",
        keys.keys.len(),
        verified.claims["sub"]
    );
    Ok(())
}

async fn step_proxy(alpha: &Domain, beta: &Domain) -> anyhow::Result<()> {
    say!(
        "\n[7/7] Legacy apps: a plain HTTP client in alpha.test calls a plain HTTP server in \
         beta.test through fedhub proxy outbound and inbound"
    );
    let path = proxied::start(alpha, beta).await?;
    let result = proxied::call().await;
    let call = match result {
        Ok(call) => call,
        Err(error) => {
            path.shutdown().await;
            return Err(error);
        }
    };
    // The proxies keep running for the lab API (`/spiffe/demo/proxy/call`) until the demo
    // ends.
    path.keep();
    proxied::expect_caller(&call, &alpha.workload.spiffe_id)?;
    say!(
        "      {} answered {} to a plain GET; the server read X-Forwarded-Client-Cert: {}",
        call.client_called,
        call.status,
        call.x_forwarded_client_cert
    );
    say!(
        "      mutual TLS between the proxies, with the SVIDs of both workloads; neither app has TLS"
    );
    Ok(())
}

async fn step_rotation(
    alpha: &Domain,
    beta: &Domain,
    alpha_lab: &setup::RunningLab,
) -> anyhow::Result<()> {
    say!("\n[6/7] Rotation: alpha.test rotates its CA; beta.test picks up the new bundle");
    let before = alpha.own_sequence().await?;
    alpha.rotate(false).await?;
    let published = alpha.own_sequence().await?;
    say!(
        "      alpha.test published a new CA (bundle sequence {} -> {}); it does not sign yet",
        seq(before),
        seq(published)
    );
    beta.refresh(&alpha.plan.trust_domain).await?;
    let seen = beta.stored_bundle_summary(&alpha.plan.trust_domain).await?;
    if seen.0 != published {
        bail!(
            "beta.test holds alpha.test's bundle sequence {}, expected {}",
            seq(seen.0),
            seq(published)
        );
    }
    say!(
        "      beta.test refreshed: it now holds alpha.test's sequence {} with {} authorities (old and new CA, old and new JWT key)",
        seq(seen.0),
        seen.1
    );
    alpha.rotate(true).await?;
    say!("      alpha.test activated the new CA; web's SVID is re-issued by it");
    let old = alpha_lab.lab.me.identity().await?;
    let old_serial = workload::serial_hex(old.svid.leaf());
    let old_issuer = workload::issuer_of(old.svid.leaf());
    alpha.reissue_workload_svid().await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = alpha_lab.lab.me.identity().await?;
        if workload::serial_hex(current.svid.leaf()) != old_serial {
            if workload::issuer_of(current.svid.leaf()) == old_issuer {
                bail!("web's new SVID was signed by the old CA");
            }
            break;
        }
        if Instant::now() > deadline {
            bail!("web's SVID was not re-issued within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let call = alpha_lab
        .lab
        .me
        .call_mtls(
            &alpha_lab.lab.peer.mtls_address,
            &alpha_lab.lab.peer.spiffe_id,
        )
        .await?;
    say!(
        "      new mTLS call with the new SVID (serial {}): {}",
        call.client_svid_serial,
        call.reply
    );
    Ok(())
}
