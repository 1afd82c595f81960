//! `defederation`: time from `fedhub federation delete --force TD` (what the admin API does:
//! the relationship deleted with its bundle, the entries that named TD detached, the agents'
//! sync streams woken) until every open `FetchX509Bundles` stream of every agent has dropped
//! TD's bundle. Each sample federates again first (relationship with a bootstrap bundle, the
//! entry's `federates_with` restored) and waits until every stream holds TD's bundle.
//!
//! Timed beside the streams: the same agents' `FetchX509SVID` streams as `fedhub proxy`
//! follows them ([`fedhub_proxy::X509Source`], one per agent): once TD's bundle is gone there,
//! the proxy refuses TD's peers on new handshakes and cuts its open connections with them.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedhub_core::{Bundle, CaParams, CaSigner, KeyType, PrivateKey, TrustDomain};
use fedhub_hub::run::LaunchOptions;
use fedhub_proto::workload::X509BundlesRequest;
use fedhub_registry::{BundleRecord, FetchProfile, RelationshipSpec};
use tokio::sync::watch;

use crate::env::{self, ACTOR, BenchHub};
use crate::stats::Summary;

const FOREIGN: &str = "gone.test";
/// How long one change may take to reach every stream before the run fails.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// `fedhub-bench defederation` settings.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// De-federations timed.
    #[arg(long, default_value_t = 30)]
    samples: usize,
    /// Agents, each with its own sync stream to the hub.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Open FetchX509Bundles streams per agent.
    #[arg(long, default_value_t = 4)]
    streams: usize,
}

/// A bootstrap bundle of `trust_domain` with one new root CA.
fn bootstrap(trust_domain: &TrustDomain) -> anyhow::Result<BundleRecord> {
    let key = PrivateKey::generate(KeyType::EcP256)?;
    let ca = CaSigner::self_signed(&CaParams::new(trust_domain.clone()), key)?;
    let mut bundle = Bundle::new(trust_domain.clone());
    bundle.add_x509_authority(ca.root_authority().context("the new CA has no root")?);
    bundle.set_sequence(Some(1));
    Ok(BundleRecord::new(
        trust_domain.clone(),
        bundle.to_json(),
        bundle.sequence(),
    ))
}

/// Follows one `FetchX509Bundles` stream at `socket`; the receiver tells whether its latest
/// message holds `key`'s bundle.
async fn follow(socket: &std::path::Path, key: String) -> anyhow::Result<watch::Receiver<bool>> {
    let mut client = env::workload_client(socket).await?;
    let mut stream = client
        .fetch_x509_bundles(X509BundlesRequest {})
        .await?
        .into_inner();
    let first = stream.message().await?.context("the stream ended")?;
    let (tx, rx) = watch::channel(first.bundles.contains_key(&key));
    tokio::spawn(async move {
        // Ends with the stream, or once the bench no longer listens.
        while let Ok(Some(message)) = stream.message().await {
            if tx.send(message.bundles.contains_key(&key)).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// What `fedhub proxy` would follow at `socket`; the receiver tells whether its material
/// holds `trust_domain`'s bundle.
fn follow_as_proxy(socket: &std::path::Path, trust_domain: TrustDomain) -> watch::Receiver<bool> {
    let source = fedhub_proxy::X509Source::start(socket);
    let mut material = source.subscribe();
    let holds = move |m: &Option<std::sync::Arc<fedhub_proxy::Material>>| {
        m.as_ref()
            .is_some_and(|m| m.trust_domains().any(|td| *td == trust_domain))
    };
    let (tx, rx) = watch::channel(holds(&material.borrow()));
    tokio::spawn(async move {
        // The source lives as long as this task, which ends once the bench no longer listens.
        let _source = source;
        while material.changed().await.is_ok() {
            if tx.send(holds(&material.borrow_and_update())).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits until every stream says `present`.
async fn all(streams: &mut [watch::Receiver<bool>], present: bool) -> anyhow::Result<()> {
    tokio::time::timeout(ARRIVAL_TIMEOUT, async {
        for stream in streams.iter_mut() {
            stream.wait_for(|holds| *holds == present).await?;
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("not every stream changed within {ARRIVAL_TIMEOUT:?}"))?
    .context("a stream ended")
}

/// `fedhub-bench defederation`.
pub async fn run(options: Options) -> anyhow::Result<()> {
    if options.samples == 0 || options.agents == 0 || options.streams == 0 {
        bail!("--samples, --agents and --streams must be at least 1");
    }
    let bench = BenchHub::start(LaunchOptions::default()).await?;
    let hub = &bench.hub.hub;
    let registry = hub.registry();
    let foreign = TrustDomain::new(FOREIGN)?;
    // The endpoint is never reached: the bootstrap bundle is what the agents receive.
    let spec = RelationshipSpec {
        trust_domain: foreign.clone(),
        bundle_endpoint_url: "https://127.0.0.1:9/".parse()?,
        profile: FetchProfile::HttpsWeb { extra_ca_pem: None },
        accept_empty_bundle: false,
    };
    registry
        .create_relationship(ACTOR, &spec, Some(&bootstrap(&foreign)?))
        .await?;

    let mut agents = Vec::with_capacity(options.agents);
    let mut entries = Vec::with_capacity(options.agents);
    for n in 0..options.agents {
        let (agent, agent_id) = bench.start_agent_named(&format!("agent{n}")).await?;
        let mut entry = bench.own_entry("/bench/federated", &agent_id)?;
        entry.federates_with = vec![foreign.clone()];
        entries.push((registry.create_entry(ACTOR, &entry).await?.id, entry));
        agents.push(agent);
    }
    hub.notify_changed().await?;
    let key = foreign.id_string();
    let mut streams = Vec::with_capacity(options.agents * options.streams);
    let mut proxies = Vec::with_capacity(options.agents);
    for agent in &agents {
        env::wait_for(agent.socket_path(), ARRIVAL_TIMEOUT, |r| {
            r.federated_bundles.contains_key(&key)
        })
        .await?;
        for _ in 0..options.streams {
            streams.push(follow(agent.socket_path(), key.clone()).await?);
        }
        proxies.push(follow_as_proxy(agent.socket_path(), foreign.clone()));
    }

    let mut times = Vec::with_capacity(options.samples);
    let mut proxy_times = Vec::with_capacity(options.samples);
    for sample in 0..options.samples {
        if sample > 0 {
            registry
                .create_relationship(ACTOR, &spec, Some(&bootstrap(&foreign)?))
                .await?;
            for (id, entry) in &entries {
                registry.update_entry(ACTOR, *id, entry).await?;
            }
            hub.notify_changed().await?;
        }
        all(&mut streams, true)
            .await
            .with_context(|| format!("sample {sample}: federating again"))?;
        all(&mut proxies, true)
            .await
            .with_context(|| format!("sample {sample}: federating again (proxy sources)"))?;
        // What `fedhub federation delete --force` has the admin API do.
        let started = Instant::now();
        registry.delete_relationship(ACTOR, &foreign, true).await?;
        hub.notify_changed().await?;
        let gone_after = async |receivers: &mut [watch::Receiver<bool>]| {
            all(receivers, false).await.map(|()| started.elapsed())
        };
        let (streams_gone, proxies_gone) =
            tokio::join!(gone_after(&mut streams), gone_after(&mut proxies));
        times.push(streams_gone.with_context(|| format!("sample {sample}: de-federating"))?);
        proxy_times.push(
            proxies_gone
                .with_context(|| format!("sample {sample}: de-federating (proxy sources)"))?,
        );
    }
    let summary = Summary::of(&mut times).context("no sample")?;
    println!(
        "# defederation: federation delete --force -> TD's bundle gone from all {} open \
         FetchX509Bundles streams ({} agents x {})",
        streams.len(),
        options.agents,
        options.streams
    );
    println!("defederation: {summary}");
    let proxy_summary = Summary::of(&mut proxy_times).context("no sample")?;
    println!(
        "# the same deletes -> TD's bundle gone from the X509-SVID stream `fedhub proxy` follows \
         ({} agents, one proxy source each): its peers refused, open connections cut",
        options.agents
    );
    println!("defederation (proxy): {proxy_summary}");
    drop(streams);
    drop(proxies);
    for agent in agents {
        agent.shutdown().await?;
    }
    bench.hub.shutdown().await;
    Ok(())
}
