//! `node-fairness`: does one misbehaving agent slow the others down? A `fedhub hub run` child
//! process (SQLite in its data directory) serves the node API on loopback. In every round, `K`
//! well-behaved agents attest (join token) and sign one X509-SVID at a steady pace, first
//! against the idle hub, then while one attested "noisy" agent holds open (or keeps trying to
//! open) 1 000 `Sync` streams on 10 connections and calls `RenewAgent` in a loop.
//!
//! Reported per phase: p50/p99 of `Attest` and `SignX509Svids` for the well-behaved agents,
//! their failures, the noisy agent's outcomes by status code, the hub's CPU time, and the
//! lines of the hub's log that say `database is locked`. The summary compares the medians
//! over rounds of the p99s under noise with those of the idle hub.
//!
//! Join tokens and entries are written straight into the registry by this process, before
//! each phase, while nothing else runs. Runs `--rounds` rounds of two `--seconds` phases and
//! stops by itself; loopback only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use fedhub_core::tls::client_config;
use fedhub_core::{
    Authorizer, Bundle, BundleSet, KeyType, PrivateKey, SpiffeId, TrustDomain, X509Svid,
};
use fedhub_proto::node::attest_request::Step as RequestStep;
use fedhub_proto::node::attest_response::Step as ResponseStep;
use fedhub_proto::node::attest_start::Method;
use fedhub_proto::node::node_client::NodeClient;
use fedhub_proto::node::{
    AttestRequest, AttestStart, RenewAgentRequest, SignX509SvidsRequest, SyncRequest,
    X509SvidParams,
};
use fedhub_registry::{EntrySpec, Registry, Selector};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::env::ACTOR;
use crate::process::{ChildProcess, free_port};
use crate::procfs::cpu_time;
use crate::stats::{Summary, median, ms};

/// The trust domain of the hub under test.
const TRUST_DOMAIN: &str = "fairness.bench.test";
/// Entries of the noisy agent, so that its snapshots are not empty.
const NOISY_ENTRIES: usize = 10;
/// Time the noisy agent gets to open its streams before the other agents start.
const NOISE_WARMUP: Duration = Duration::from_secs(2);
/// Join tokens made per agent and phase beyond what the pace needs.
const SPARE_TOKENS: usize = 10;

/// Settings of one `fedhub-bench node-fairness` run.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Well-behaved agents, each attesting and signing in a loop.
    #[arg(long, default_value_t = 8)]
    pub agents: usize,
    /// Pause between two iterations (attest, then sign) of one well-behaved agent.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Seconds measured per phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Rounds; each measures the idle hub, then the hub with the noisy agent.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// `Sync` streams the noisy agent keeps open or tries to.
    #[arg(long, default_value_t = 1000)]
    pub noisy_streams: usize,
    /// Connections the noisy agent spreads its streams over.
    #[arg(long, default_value_t = 10)]
    pub noisy_connections: usize,
    /// Pause of each noisy stream before it tries again after it ended or was refused.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub noisy_retry: Duration,
    /// Pause between two `RenewAgent` calls of the noisy agent.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub renew_pause: Duration,
    /// The `fedhub` binary (default: next to this one).
    #[arg(long)]
    pub fedhub: Option<PathBuf>,
}

/// `fedhub-bench node-fairness`.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    ensure!(options.agents > 0, "--agents must be at least 1");
    ensure!(options.seconds > 0, "--seconds must be at least 1");
    ensure!(options.rounds > 0, "--rounds must be at least 1");
    ensure!(
        options.noisy_connections > 0,
        "--noisy-connections must be at least 1"
    );
    let fedhub = crate::fedhub_binary(options.fedhub.clone())?;
    fedhub_core::tls::install_default_crypto_provider();
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("hub");
    fedhub_files::ensure_dir(&data_dir, 0o700)?;
    let database_url = format!("sqlite://{}", data_dir.join("registry.db").display());
    let trust_domain = TrustDomain::new(TRUST_DOMAIN)?;
    let registry = Registry::connect(&database_url).await?;
    let agents = Agents::register(&registry, &trust_domain, options.agents).await?;

    let address = free_port()?;
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, hub_config(&data_dir, &database_url, address))?;
    let log = dir.path().join("hub.log");
    let mut hub = ChildProcess::spawn(
        "the hub",
        Command::new(&fedhub)
            .args(["hub", "run", "--config"])
            .arg(&config)
            .env("FEDHUB_LOG", "warn"),
        log.clone(),
    )?;
    let target = Target::wait_ready(&mut hub, &registry, &trust_domain, address).await?;
    print_header(options, &fedhub);

    let noisy_token = token_name("noisy", 0);
    create_token(&registry, &noisy_token, &agents.noisy).await?;
    let noisy = attest(&mut target.client(None).await?, &noisy_token)
        .await
        .map_err(|status| anyhow::anyhow!("the noisy agent cannot attest: {status}"))?;

    let mut results: Vec<[Phase; 2]> = Vec::new();
    for round in 1..=options.rounds {
        let idle = run_phase(options, &target, &registry, &agents, &mut hub, None, round).await?;
        println!("round {round} idle : {idle}");
        let noisy_phase = run_phase(
            options,
            &target,
            &registry,
            &agents,
            &mut hub,
            Some(&noisy),
            round,
        )
        .await?;
        println!("round {round} noisy: {noisy_phase}");
        results.push([idle, noisy_phase]);
    }
    drop(hub);
    registry.close().await;
    let locked = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("database is locked"))
        .count();
    report(&results, locked)
}

fn hub_config(data_dir: &Path, database_url: &str, address: SocketAddr) -> String {
    // Every agent of the bench connects from 127.0.0.1: attestations are not limited per
    // source here. Every per-agent limit keeps its default.
    format!(
        r#"trust_domain = "{TRUST_DOMAIN}"
data_dir = "{data}"
database_url = "{database_url}"

[agent_api]
address = "{address}"
attestations_per_minute = 1000000

[bundle_endpoint]
enabled = false

[health]
enabled = false
"#,
        data = data_dir.display(),
    )
}

fn print_header(options: &Options, fedhub: &Path) {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "# node-fairness: `{} hub run` (SQLite), {cores} cores; {} agents attesting and \
         signing one X509-SVID every {}, {} s per phase, {} rounds",
        fedhub.display(),
        options.agents,
        humantime::format_duration(options.interval),
        options.seconds,
        options.rounds
    );
    println!(
        "# noisy agent: {} Sync streams on {} connections (each tried again {} after it ended \
         or was refused), RenewAgent every {}; it starts {} s before the measured phase",
        options.noisy_streams,
        options.noisy_connections,
        humantime::format_duration(options.noisy_retry),
        humantime::format_duration(options.renew_pause),
        NOISE_WARMUP.as_secs()
    );
}

// --- agents and the hub ---------------------------------------------------------------------

/// The agent IDs of the run (join tokens name them), each well-behaved agent with an entry.
struct Agents {
    noisy: SpiffeId,
    others: Vec<(SpiffeId, String)>,
}

impl Agents {
    /// Creates the entries: one per well-behaved agent (the one it signs), a few for the
    /// noisy agent.
    async fn register(
        registry: &Registry,
        trust_domain: &TrustDomain,
        count: usize,
    ) -> anyhow::Result<Self> {
        let selector = Selector::new("unix", "uid:1")?;
        let noisy = trust_domain.spiffe_id("/fedhub/agent/bench/noisy")?;
        for n in 0..NOISY_ENTRIES {
            let spec = EntrySpec::new(
                trust_domain.spiffe_id(&format!("/noisy/w{n}"))?,
                noisy.clone(),
                vec![selector.clone()],
            );
            registry.create_entry(ACTOR, &spec).await?;
        }
        let mut others = Vec::with_capacity(count);
        for k in 0..count {
            let agent = trust_domain.spiffe_id(&format!("/fedhub/agent/bench/other-{k}"))?;
            let spec = EntrySpec::new(
                trust_domain.spiffe_id(&format!("/other-{k}/web"))?,
                agent.clone(),
                vec![selector.clone()],
            );
            let entry = registry.create_entry(ACTOR, &spec).await?;
            others.push((agent, entry.id.to_string()));
        }
        Ok(Self { noisy, others })
    }
}

fn token_name(what: &str, n: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("bench-{what}-{n}-{nanos:x}")
}

async fn create_token(registry: &Registry, token: &str, agent: &SpiffeId) -> anyhow::Result<()> {
    registry
        .create_join_token(ACTOR, token, Duration::from_secs(3600), Some(agent))
        .await?;
    Ok(())
}

/// The hub under test: where to reach it and how to authenticate it.
#[derive(Clone)]
struct Target {
    address: SocketAddr,
    hub_id: SpiffeId,
    bundles: Arc<dyn fedhub_core::BundleSource>,
}

impl Target {
    /// Waits (at most 60 s) until the hub has stored its bundle and accepts connections.
    async fn wait_ready(
        hub: &mut ChildProcess,
        registry: &Registry,
        trust_domain: &TrustDomain,
        address: SocketAddr,
    ) -> anyhow::Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::from("not tried");
        while Instant::now() < deadline {
            if !hub.is_running()? {
                bail!("the hub exited; its stderr:\n{}", hub.log_tail());
            }
            if let Some(record) = registry.get_bundle(trust_domain).await? {
                let bundle = Bundle::from_json(trust_domain.clone(), record.document.as_bytes())?;
                let target = Self {
                    address,
                    hub_id: trust_domain.spiffe_id("/fedhub/hub")?,
                    bundles: Arc::new([bundle].into_iter().collect::<BundleSet>()),
                };
                match target.client(None).await {
                    Ok(_) => return Ok(target),
                    Err(error) => last = format!("{error:#}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "the hub's node API did not answer on {address} within 60 s ({last}); its stderr:\n{}",
            hub.log_tail()
        )
    }

    /// A node API client on a connection of its own, presenting `svid` if given.
    async fn client(&self, svid: Option<&X509Svid>) -> anyhow::Result<NodeClient<Channel>> {
        let config = client_config(
            svid,
            Arc::clone(&self.bundles),
            Authorizer::Exact(self.hub_id.clone()),
        )?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let address = self.address;
        let channel = crate::node_api::channel(address, connector, "node-api.invalid").await?;
        Ok(NodeClient::new(channel))
    }
}

/// Attests with the join token `token`; returns the agent SVID.
async fn attest(client: &mut NodeClient<Channel>, token: &str) -> Result<X509Svid, tonic::Status> {
    let key = PrivateKey::generate(KeyType::EcP256)
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let start = AttestStart {
        agent_public_key: key
            .public_key_der()
            .map_err(|e| tonic::Status::internal(e.to_string()))?,
        method: Some(Method::JoinToken(token.to_owned())),
    };
    let request = AttestRequest {
        step: Some(RequestStep::Start(start)),
    };
    let mut answers = client
        .attest(futures::stream::iter([request]))
        .await?
        .into_inner();
    match answers.message().await?.and_then(|m| m.step) {
        Some(ResponseStep::Result(svid)) => X509Svid::new_checked(svid.cert_chain, key)
            .map_err(|e| tonic::Status::internal(format!("unusable agent SVID: {e}"))),
        other => Err(tonic::Status::internal(format!(
            "unexpected attestation answer: {other:?}"
        ))),
    }
}

// --- one phase ------------------------------------------------------------------------------

/// Outcomes counted by a short name (a status code, or what failed).
#[derive(Debug, Default, Clone)]
struct Tally(BTreeMap<String, u64>);

impl Tally {
    fn add(&mut self, what: impl Into<String>) {
        *self.0.entry(what.into()).or_default() += 1;
    }

    fn merge(&mut self, other: &Self) {
        for (what, count) in &other.0 {
            *self.0.entry(what.clone()).or_default() += count;
        }
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k} {v}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// A failed call, by status code, with the storage failures named.
fn outcome(status: &tonic::Status) -> String {
    if status.message().contains("database is locked") {
        return "database is locked".into();
    }
    if status.message().contains("storage failed") {
        return format!("{:?} (storage)", status.code());
    }
    format!("{:?}", status.code())
}

/// What one phase measured.
#[derive(Debug)]
struct Phase {
    attest: Option<Summary>,
    sign: Option<Summary>,
    /// Failures of the well-behaved agents.
    failures: Tally,
    /// The noisy agent's `Sync` outcomes (`opened`, and each end or refusal by code).
    syncs: Tally,
    /// The noisy agent's `RenewAgent` outcomes.
    renewals: Tally,
    /// Hub CPU time over the phase (noise warm-up included).
    hub_cpu: Duration,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let summary =
            |s: &Option<Summary>| s.map_or_else(|| "no samples".to_owned(), |s| s.to_string());
        write!(
            f,
            "Attest {} | SignX509Svids {} | failures: {} | hub CPU {:.2} s",
            summary(&self.attest),
            summary(&self.sign),
            self.failures,
            self.hub_cpu.as_secs_f64()
        )?;
        if self.syncs.total() > 0 || self.renewals.total() > 0 {
            write!(
                f,
                " | noisy Sync: {} | noisy RenewAgent: {}",
                self.syncs, self.renewals
            )?;
        }
        Ok(())
    }
}

/// Latencies and failures of the well-behaved agents.
#[derive(Debug, Default)]
struct Samples {
    attest: Vec<Duration>,
    sign: Vec<Duration>,
    failures: Tally,
}

async fn run_phase(
    options: &Options,
    target: &Target,
    registry: &Registry,
    agents: &Agents,
    hub: &mut ChildProcess,
    noisy: Option<&X509Svid>,
    round: usize,
) -> anyhow::Result<Phase> {
    // Tokens first, while nothing runs.
    let per_agent = usize::try_from(
        Duration::from_secs(options.seconds).as_millis() / options.interval.as_millis().max(1),
    )
    .unwrap_or(usize::MAX)
    .saturating_add(SPARE_TOKENS);
    let mut tokens = Vec::with_capacity(agents.others.len());
    for (k, (agent, _)) in agents.others.iter().enumerate() {
        let mut own = Vec::with_capacity(per_agent);
        for n in 0..per_agent {
            let token = token_name(&format!("r{round}-a{k}"), n);
            create_token(registry, &token, agent).await?;
            own.push(token);
        }
        tokens.push(own);
    }

    let pid = hub.pid().to_string();
    let cpu_before = cpu_time(&pid)?;
    let (stop_noise, noise_stopped) = watch::channel(false);
    let load = match noisy {
        Some(svid) => {
            let started = Noise::start(options, target, svid, &noise_stopped).await?;
            tokio::time::sleep(NOISE_WARMUP).await;
            Some(started)
        }
        None => None,
    };

    let end = tokio::time::Instant::now() + Duration::from_secs(options.seconds);
    let mut workers = Vec::with_capacity(agents.others.len());
    for ((_, entry_id), tokens) in agents.others.iter().zip(tokens) {
        let anonymous = target.client(None).await?;
        let request = SignX509SvidsRequest {
            svids: vec![X509SvidParams {
                entry_id: entry_id.clone(),
                public_key: PrivateKey::generate(KeyType::EcP256)?.public_key_der()?,
            }],
        };
        workers.push(tokio::spawn(well_behaved(
            target.clone(),
            anonymous,
            request,
            tokens,
            options.interval,
            end,
        )));
    }
    let mut samples = Samples::default();
    for worker in workers {
        let done = worker.await??;
        samples.attest.extend(done.attest);
        samples.sign.extend(done.sign);
        samples.failures.merge(&done.failures);
    }
    stop_noise.send_replace(true);
    let (syncs, renewals) = match load {
        Some(load) => load.finish().await?,
        None => (Tally::default(), Tally::default()),
    };
    let hub_cpu = cpu_time(&pid)?.saturating_sub(cpu_before);
    ensure!(
        hub.is_running()?,
        "the hub exited during round {round}; its stderr:\n{}",
        hub.log_tail()
    );
    // Let the hub close what the noisy agent left.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Phase {
        attest: Summary::of(&mut samples.attest),
        sign: Summary::of(&mut samples.sign),
        failures: samples.failures,
        syncs,
        renewals,
        hub_cpu,
    })
}

/// One well-behaved agent: every `interval` until `end`, attests with its next token (timed),
/// connects with the new SVID and signs one X509-SVID (timed).
async fn well_behaved(
    target: Target,
    mut anonymous: NodeClient<Channel>,
    request: SignX509SvidsRequest,
    tokens: Vec<String>,
    interval: Duration,
    end: tokio::time::Instant,
) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for token in tokens {
        tick.tick().await;
        if tokio::time::Instant::now() >= end {
            break;
        }
        let started = Instant::now();
        let svid = match attest(&mut anonymous, &token).await {
            Ok(svid) => svid,
            Err(status) => {
                samples.failures.add(format!("Attest {}", outcome(&status)));
                continue;
            }
        };
        samples.attest.push(started.elapsed());
        let mut client = match target.client(Some(&svid)).await {
            Ok(client) => client,
            Err(error) => {
                samples.failures.add(format!("connect: {error:#}"));
                continue;
            }
        };
        let started = Instant::now();
        match client.sign_x509_svids(request.clone()).await {
            Ok(_) => samples.sign.push(started.elapsed()),
            Err(status) => samples
                .failures
                .add(format!("SignX509Svids {}", outcome(&status))),
        }
    }
    Ok(samples)
}

// --- the noisy agent ------------------------------------------------------------------------

/// The noisy agent's tasks and what they counted.
struct Noise {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    syncs: Arc<Mutex<Tally>>,
    renewals: Arc<Mutex<Tally>>,
}

fn count(tally: &Mutex<Tally>, what: impl Into<String>) {
    tally
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .add(what);
}

impl Noise {
    /// Connects, then starts every stream task and the renewal loop; they run until `stop`.
    async fn start(
        options: &Options,
        target: &Target,
        svid: &X509Svid,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let mut connections = Vec::with_capacity(options.noisy_connections);
        for _ in 0..options.noisy_connections {
            connections.push(target.client(Some(svid)).await?);
        }
        let syncs = Arc::new(Mutex::new(Tally::default()));
        let renewals = Arc::new(Mutex::new(Tally::default()));
        let mut tasks = Vec::with_capacity(options.noisy_streams + 1);
        for n in 0..options.noisy_streams {
            let client = connections[n % connections.len()].clone();
            tasks.push(tokio::spawn(noisy_stream(
                client,
                options.noisy_retry,
                Arc::clone(&syncs),
                stop.clone(),
            )));
        }
        let public_key = PrivateKey::generate(KeyType::EcP256)?.public_key_der()?;
        tasks.push(tokio::spawn(noisy_renewals(
            target.client(Some(svid)).await?,
            public_key,
            options.renew_pause,
            Arc::clone(&renewals),
            stop.clone(),
        )));
        Ok(Self {
            tasks,
            syncs,
            renewals,
        })
    }

    /// Waits for the tasks (stopped by the caller) and returns what they counted.
    async fn finish(self) -> anyhow::Result<(Tally, Tally)> {
        for task in self.tasks {
            task.await?;
        }
        let take = |tally: &Mutex<Tally>| {
            std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner))
        };
        Ok((take(&self.syncs), take(&self.renewals)))
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// One of the noisy agent's streams: opens it, reads it until it ends, and tries again
/// `retry` after it ended or was refused, until `stop`.
async fn noisy_stream(
    mut client: NodeClient<Channel>,
    retry: Duration,
    syncs: Arc<Mutex<Tally>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let attempt = async {
            match client.sync(SyncRequest {}).await {
                Ok(response) => {
                    count(&syncs, "opened");
                    let mut stream = response.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(_)) => {}
                            Ok(None) => {
                                count(&syncs, "ended");
                                break;
                            }
                            Err(status) => {
                                count(&syncs, format!("ended {}", outcome(&status)));
                                break;
                            }
                        }
                    }
                }
                Err(status) => count(&syncs, format!("refused {}", outcome(&status))),
            }
            tokio::time::sleep(retry).await;
        };
        tokio::select! {
            () = attempt => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// The noisy agent's renewal loop: `RenewAgent` with the same key, `pause` apart, until
/// `stop`. It keeps presenting its first SVID, so each renewal stays pending.
async fn noisy_renewals(
    mut client: NodeClient<Channel>,
    public_key: Vec<u8>,
    pause: Duration,
    renewals: Arc<Mutex<Tally>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let attempt = async {
            let request = RenewAgentRequest {
                agent_public_key: public_key.clone(),
            };
            match client.renew_agent(request).await {
                Ok(_) => count(&renewals, "renewed"),
                Err(status) => count(&renewals, format!("refused {}", outcome(&status))),
            }
            tokio::time::sleep(pause).await;
        };
        tokio::select! {
            () = attempt => {}
            () = stopped(&mut stop) => return,
        }
    }
}

// --- report ---------------------------------------------------------------------------------

fn report(results: &[[Phase; 2]], locked: usize) -> anyhow::Result<()> {
    let p99s = |phase: usize, pick: fn(&Phase) -> Option<Summary>| -> Vec<f64> {
        results
            .iter()
            .filter_map(|round| pick(&round[phase]))
            .map(|s| s.p99.as_secs_f64() * 1000.0)
            .collect()
    };
    let mut text = String::new();
    for (name, pick) in [
        (
            "Attest",
            (|p: &Phase| p.attest) as fn(&Phase) -> Option<Summary>,
        ),
        ("SignX509Svids", |p: &Phase| p.sign),
    ] {
        let idle = p99s(0, pick);
        let noisy = p99s(1, pick);
        let (Some(idle_median), Some(noisy_median)) = (median(&idle), median(&noisy)) else {
            bail!("{name}: no samples in some phase");
        };
        let list = |values: &[f64]| {
            values
                .iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            text,
            "median p99 {name:<13}: idle {}, with the noisy agent {}: ratio {:.2} (rounds: \
             idle {} ms; noisy {} ms)",
            ms(Duration::from_secs_f64(idle_median / 1000.0)),
            ms(Duration::from_secs_f64(noisy_median / 1000.0)),
            noisy_median / idle_median,
            list(&idle),
            list(&noisy)
        )?;
    }
    let mut failures = Tally::default();
    for round in results {
        for phase in round {
            failures.merge(&phase.failures);
        }
    }
    writeln!(
        text,
        "failures of the well-behaved agents, all phases: {failures}; hub log lines with \
         \"database is locked\": {locked}"
    )?;
    print!("{text}");
    Ok(())
}
