//! `workload-api`: Workload API latency under concurrent clients, and the memory of an agent
//! process holding many entries.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedhub_hub::run::LaunchOptions;
use fedhub_proto::workload::JwtsvidRequest;
use fedhub_registry::{EntrySpec, Selector};
use futures::future::try_join_all;

use crate::env::{self, BenchHub, WorkloadClient};
use crate::stats::{Summary, memory_kib};

/// Which call the clients make.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// A new `FetchX509SVID` stream, timed to its first message.
    X509,
    /// `FetchJWTSVID` for one audience (cached by the agent after the first call).
    Jwt,
}

async fn call(client: &mut WorkloadClient, call: Call) -> anyhow::Result<()> {
    match call {
        Call::X509 => {
            let response = env::fetch_x509(client).await?;
            if response.svids.is_empty() {
                bail!("FetchX509SVID answered without an SVID");
            }
        }
        Call::Jwt => {
            let response = client
                .fetch_jwtsvid(JwtsvidRequest {
                    audience: vec!["bench-audience".into()],
                    spiffe_id: String::new(),
                })
                .await?
                .into_inner();
            if response.svids.is_empty() {
                bail!("FetchJWTSVID answered without an SVID");
            }
        }
    }
    Ok(())
}

/// Runs `clients` closed-loop clients, each on its own connection, for `seconds`.
async fn load(
    socket: &Path,
    clients: usize,
    seconds: u64,
    kind: Call,
) -> anyhow::Result<(Summary, f64)> {
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut client = env::workload_client(socket).await?;
        call(&mut client, kind).await?; // warm-up: JWT-SVID cached, connection established
        connected.push(client);
    }
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let tasks = connected.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < end {
                let at = Instant::now();
                call(&mut client, kind).await?;
                samples.push(at.elapsed());
            }
            anyhow::Ok(samples)
        })
    });
    let mut samples: Vec<Duration> = Vec::new();
    for result in try_join_all(tasks).await? {
        samples.extend(result?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = samples.len() as f64 / elapsed;
    let summary = Summary::of(&mut samples).context("no call completed")?;
    Ok((summary, rate))
}

/// `fedhub-bench workload-api`.
pub async fn run(
    clients: usize,
    seconds: u64,
    entries: usize,
    fedhub: Option<PathBuf>,
) -> anyhow::Result<()> {
    let bench = BenchHub::start(LaunchOptions::default()).await?;
    let (agent, agent_id) = bench.start_agent().await?;
    bench
        .register(&bench.own_entry("/bench/workload", &agent_id)?)
        .await?;
    env::wait_for(agent.socket_path(), Duration::from_secs(30), |r| {
        !r.svids.is_empty()
    })
    .await?;
    println!("# workload-api: {clients} clients, {seconds} s per call, in-process hub + agent");
    for kind in [Call::X509, Call::Jwt] {
        let (summary, rate) = load(agent.socket_path(), clients, seconds, kind).await?;
        println!("{kind:?}: {summary} throughput={rate:.0}/s");
    }
    agent.shutdown().await?;
    bench.hub.shutdown().await;
    agent_memory(entries, fedhub).await
}

/// Starts `fedhub agent run` as a child of this process, registers `entries` entries for it,
/// and reads its memory once it serves them.
async fn agent_memory(entries: usize, fedhub: Option<PathBuf>) -> anyhow::Result<()> {
    let fedhub = crate::fedhub_binary(fedhub)?;
    let bench = BenchHub::start(LaunchOptions::default()).await?;
    let (token, agent_id) = bench.join_token().await?;
    let (config, socket) = bench.write_agent_config("child-agent")?;
    let mut child = std::process::Command::new(&fedhub)
        .args(["agent", "run", "--config"])
        .arg(&config)
        .env("FEDHUB_AGENT_JOIN_TOKEN", token)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", fedhub.display()))?;
    let pid = child.id().to_string();
    let result = async {
        bench
            .register(&bench.own_entry("/bench/mine", &agent_id)?)
            .await?;
        env::wait_for(&socket, Duration::from_secs(30), |r| !r.svids.is_empty()).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (base_rss, _) = memory_kib(&pid)?;
        let started = Instant::now();
        let td = bench.trust_domain().clone();
        for n in 0..entries.saturating_sub(2) {
            let spec = EntrySpec::new(
                td.spiffe_id(&format!("/bench/other/{n}"))?,
                agent_id.clone(),
                vec![Selector::new("unix", &format!("uid:{}", 100_000 + n))?],
            );
            bench
                .hub
                .hub
                .registry()
                .create_entry(env::ACTOR, &spec)
                .await?;
        }
        bench.hub.hub.notify_changed().await?;
        // A final entry for us: when it is served, the snapshot with all others was applied.
        let mut last = bench.own_entry("/bench/last", &agent_id)?;
        last.hint = Some("last".into());
        bench.register(&last).await?;
        env::wait_for(&socket, Duration::from_secs(120), |r| {
            r.svids.iter().any(|s| s.hint == "last")
        })
        .await?;
        let synced = started.elapsed();
        // Let the agent finish signing and settle, then sample.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (rss, hwm) = memory_kib(&pid)?;
        println!(
            "agent process ({}): 1 entry RSS={} MiB; {} entries: RSS={} MiB, peak (VmHWM)={} \
             MiB, all served after {:.2} s",
            fedhub.display(),
            mib(base_rss),
            entries,
            mib(rss),
            mib(hwm),
            synced.as_secs_f64()
        );
        anyhow::Ok(())
    }
    .await;
    child.kill()?;
    child.wait()?;
    bench.hub.shutdown().await;
    result
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}
