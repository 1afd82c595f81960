//! `signing`: X509-SVID signings per second through the hub's node API (`SignX509Svids` in
//! batches, as an attested agent), against `openssl speed ecdsap256` sign/s on this machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedhub_core::tls::client_config;
use fedhub_core::{Authorizer, BundleSet, KeyType, PrivateKey, X509Svid};
use fedhub_hub::run::LaunchOptions;
use fedhub_proto::node::attest_request::Step as RequestStep;
use fedhub_proto::node::attest_response::Step as ResponseStep;
use fedhub_proto::node::attest_start::Method;
use fedhub_proto::node::node_client::NodeClient;
use fedhub_proto::node::{AttestRequest, AttestStart, SignX509SvidsRequest, X509SvidParams};
use fedhub_registry::{EntrySpec, Selector};
use tonic::transport::Channel;

use crate::env::{ACTOR, BenchHub};
use crate::procfs::cpu_time;

/// The most SVIDs one request may ask for.
const MAX_BATCH: usize = 64;

/// A node API client authenticating the hub by its SPIFFE ID, presenting `svid` if given.
async fn node_client(
    bench: &BenchHub,
    address: SocketAddr,
    svid: Option<&X509Svid>,
) -> anyhow::Result<NodeClient<Channel>> {
    let bundles: BundleSet = [(*bench.hub.hub.own_bundle()).clone()]
        .into_iter()
        .collect();
    let config = client_config(
        svid,
        Arc::new(bundles),
        Authorizer::Exact(bench.hub.hub.hub_id()),
    )?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let channel = crate::node_api::channel(address, connector, "node-api.invalid").await?;
    Ok(NodeClient::new(channel))
}

/// Attests with a new join token; returns the agent SVID.
async fn attest(bench: &BenchHub, address: SocketAddr) -> anyhow::Result<X509Svid> {
    let (token, _) = bench.join_token().await?;
    let key = PrivateKey::generate(KeyType::EcP256)?;
    let start = AttestStart {
        agent_public_key: key.public_key_der()?,
        method: Some(Method::JoinToken(token)),
    };
    let request = AttestRequest {
        step: Some(RequestStep::Start(start)),
    };
    let mut client = node_client(bench, address, None).await?;
    let mut answers = client
        .attest(futures::stream::iter([request]))
        .await?
        .into_inner();
    match answers.message().await?.and_then(|m| m.step) {
        Some(ResponseStep::Result(svid)) => Ok(X509Svid::new_checked(svid.cert_chain, key)?),
        other => bail!("unexpected attestation answer: {other:?}"),
    }
}

/// `openssl speed -seconds 5 ecdsap256`: ECDSA P-256 signs per second on one core.
fn openssl_signs_per_second() -> anyhow::Result<f64> {
    let output = std::process::Command::new("openssl")
        .args(["speed", "-seconds", "5", "ecdsap256"])
        .output()
        .context("running `openssl speed` (is openssl installed?)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    // " 256 bits ecdsa (nistp256)   0.0000s   0.0001s  38000.0  12000.0"
    let line = text
        .lines()
        .find(|l| l.contains("(nistp256)"))
        .with_context(|| format!("no nistp256 line in `openssl speed` output: {text}"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let sign = fields
        .len()
        .checked_sub(2)
        .and_then(|i| fields[i].parse::<f64>().ok())
        .with_context(|| format!("cannot read sign/s from {line:?}"))?;
    Ok(sign)
}

/// `fedhub-bench signing`.
pub async fn run(seconds: u64, batch: usize, concurrency: usize) -> anyhow::Result<()> {
    if !(1..=MAX_BATCH).contains(&batch) {
        bail!("--batch must be 1 to {MAX_BATCH}");
    }
    let bench = BenchHub::start(LaunchOptions::default()).await?;
    let address = bench.hub.bound.agent_api.context("no node API listener")?;
    let svid = attest(&bench, address).await?;
    let agent_id = svid.spiffe_id().clone();
    let td = bench.trust_domain().clone();
    let mut entry_ids = Vec::with_capacity(batch);
    for n in 0..batch {
        let spec = EntrySpec::new(
            td.spiffe_id(&format!("/bench/sign/{n}"))?,
            agent_id.clone(),
            vec![Selector::new("unix", &format!("uid:{}", 200_000 + n))?],
        );
        let entry = bench.hub.hub.registry().create_entry(ACTOR, &spec).await?;
        entry_ids.push(entry.id.to_string());
    }
    bench.hub.hub.notify_changed().await?;
    // Workload keys are made once: only the hub's work is timed.
    let mut requests = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut svids = Vec::with_capacity(batch);
        for entry_id in &entry_ids {
            svids.push(X509SvidParams {
                entry_id: entry_id.clone(),
                public_key: PrivateKey::generate(KeyType::EcP256)?.public_key_der()?,
            });
        }
        requests.push(SignX509SvidsRequest { svids });
    }
    let mut clients = Vec::with_capacity(concurrency);
    for request in &requests {
        let mut client = node_client(&bench, address, Some(&svid)).await?;
        client.sign_x509_svids(request.clone()).await?; // warm-up
        clients.push(client);
    }
    let cpu_before = cpu_time("self")?;
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let tasks = clients
        .into_iter()
        .zip(requests)
        .map(|(mut client, request)| {
            tokio::spawn(async move {
                let mut signed = 0_usize;
                while Instant::now() < end {
                    signed += client
                        .sign_x509_svids(request.clone())
                        .await?
                        .into_inner()
                        .svids
                        .len();
                }
                anyhow::Ok(signed)
            })
        });
    let mut signed = 0;
    for task in futures::future::try_join_all(tasks).await? {
        signed += task?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_time("self")?.saturating_sub(cpu_before).as_secs_f64();
    bench.hub.shutdown().await;
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = signed as f64 / elapsed;
    let openssl = openssl_signs_per_second()?;
    println!(
        "# signing: SignX509Svids, batch {batch}, {concurrency} concurrent requests, {seconds} s"
    );
    println!(
        "hub: {signed} X509-SVIDs in {elapsed:.2} s = {rate:.0}/s; openssl speed ecdsap256 \
         (1 core): {openssl:.0} sign/s; ratio {:.0}%",
        100.0 * rate / openssl
    );
    // `openssl speed` counts CPU time; so does this line. It charges the in-process client's
    // work (TLS, decoding) to the hub, so it overstates the hub's cost.
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let cpu_per_svid = 1e6 * cpu / signed as f64;
    println!(
        "CPU time (hub + client, this process): {cpu:.2} s = {cpu_per_svid:.1} µs per X509-SVID; \
         openssl: {:.1} µs per signature; ratio {:.0}%",
        1e6 / openssl,
        100.0 * (1e6 / openssl) / cpu_per_svid
    );
    Ok(())
}
