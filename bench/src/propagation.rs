//! `propagation`: time from a foreign bundle change stored in the hub to the update arriving
//! on an open `FetchX509SVID` stream of a workload that federates with that trust domain.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedhub_core::{Bundle, CaParams, CaSigner, KeyType, PrivateKey, TrustDomain};
use fedhub_hub::run::LaunchOptions;
use fedhub_proto::workload::X509svidRequest;
use fedhub_registry::{BundleRecord, FetchProfile, RelationshipSpec};

use crate::env::{self, ACTOR, BenchHub};
use crate::stats::Summary;

const FOREIGN: &str = "foreign.test";
/// How long one change may take to arrive before the run fails.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// A bundle of `trust_domain` with one new root CA and `sequence`; returns it with the CA's DER.
fn new_bundle(trust_domain: &TrustDomain, sequence: u64) -> anyhow::Result<(Bundle, Vec<u8>)> {
    let key = PrivateKey::generate(KeyType::EcP256)?;
    let ca = CaSigner::self_signed(&CaParams::new(trust_domain.clone()), key)?;
    let authority = ca.root_authority().context("the new CA has no root")?;
    let der = authority.der().to_vec();
    let mut bundle = Bundle::new(trust_domain.clone());
    bundle.add_x509_authority(authority);
    bundle.set_sequence(Some(sequence));
    Ok((bundle, der))
}

fn record(bundle: &Bundle) -> BundleRecord {
    BundleRecord::new(
        bundle.trust_domain().clone(),
        bundle.to_json(),
        bundle.sequence(),
    )
}

/// `fedhub-bench propagation`.
pub async fn run(samples: usize) -> anyhow::Result<()> {
    let bench = BenchHub::start(LaunchOptions::default()).await?;
    let foreign = TrustDomain::new(FOREIGN)?;
    let (bootstrap, first_der) = new_bundle(&foreign, 1)?;
    // The endpoint is never reached: the bench changes the stored bundle directly, as
    // `fedhub bundle set` does. Refreshes fail and leave the stored bundle alone.
    bench
        .hub
        .hub
        .registry()
        .create_relationship(
            ACTOR,
            &RelationshipSpec {
                trust_domain: foreign.clone(),
                bundle_endpoint_url: "https://127.0.0.1:9/".parse()?,
                profile: FetchProfile::HttpsWeb { extra_ca_pem: None },
                accept_empty_bundle: false,
            },
            Some(&record(&bootstrap)),
        )
        .await?;
    let (agent, agent_id) = bench.start_agent().await?;
    let mut entry = bench.own_entry("/bench/federated", &agent_id)?;
    entry.federates_with = vec![foreign.clone()];
    bench.register(&entry).await?;
    let key = foreign.id_string();
    env::wait_for(agent.socket_path(), Duration::from_secs(30), |r| {
        r.federated_bundles.get(&key) == Some(&first_der)
    })
    .await?;

    let mut client = env::workload_client(agent.socket_path()).await?;
    let mut stream = client
        .fetch_x509svid(X509svidRequest {})
        .await?
        .into_inner();
    stream.message().await?.context("the stream ended")?;

    let mut times = Vec::with_capacity(samples);
    for sample in 0..samples {
        let sequence = 2 + u64::try_from(sample)?;
        let (bundle, der) = new_bundle(&foreign, sequence)?;
        let record = record(&bundle);
        let started = Instant::now();
        bench.hub.hub.registry().put_bundle(ACTOR, &record).await?;
        bench.hub.hub.notify_changed().await?;
        let deadline = started + ARRIVAL_TIMEOUT;
        loop {
            let message = tokio::time::timeout_at(deadline.into(), stream.message())
                .await
                .with_context(|| format!("sample {sample}: no update within {ARRIVAL_TIMEOUT:?}"))??
                .context("the stream ended")?;
            if message.federated_bundles.get(&key) == Some(&der) {
                break;
            }
        }
        times.push(started.elapsed());
        // Changes spaced out, so each one is timed on its own.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let summary = Summary::of(&mut times).context("no sample")?;
    if summary.count != samples {
        bail!("only {} of {samples} samples", summary.count);
    }
    println!("# propagation: stored foreign bundle -> open FetchX509SVID stream");
    println!("propagation: {summary}");
    drop(stream);
    agent.shutdown().await?;
    bench.hub.shutdown().await;
    Ok(())
}
