//! The agent scenario: `fedhub agent run` killed with SIGKILL while it syncs, signs and renews,
//! restarted each time and checked.
//!
//! One hub (`node.test`, never killed) with short lifetimes: agent SVIDs live 20 s (renewed
//! every 10 s, and at once after each restart, since a backdated `notBefore` puts their half
//! life in the past; shorter would outrun the hub's own SVID, see
//! `hub_svid_outlives_the_housekeeping_tick` in `crash.rs`), workload SVIDs 4 s (signed again
//! every 2 s). The agent attests once with a join token and is restarted with the same, spent
//! token, so a restart that did not resume from its data directory would be refused and exit.
//! Load generators, only while a window is open: updates of four workload entries under the
//! agent, each a sync snapshot and a new SVID to sign; and rotations of the hub's CA (publish,
//! wait until the agent serves the new bundle, activate), each a new `bundle.json` to store.
//!
//! A kill comes soon after the agent serves again, anywhere in the window, or just after an
//! entry update or an activation was sent; now and then the restart is killed too while it
//! starts. After every kill, before the restart: `agent-svid.pem` is private and holds a chain
//! and the key of its leaf, for the agent's ID, valid now under the hub's bundle; `bundle.json`
//! parses. After every (re)start: the agent runs, serves the workload's X509-SVID on the
//! Workload API (valid under the hub's bundle), did not attest (its log says so only for the
//! first run), and the hub still knows exactly this one agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use fedhub_core::bundle::BundleSet;
use fedhub_core::x509::{SvidUsage, verify_x509_svid};
use fedhub_core::{Bundle, TrustDomain};
use serde_json::Value;

use crate::hub::HubFiles;
use crate::inspect::check_agent_store;
use crate::support::{
    FEDHUB, Gate, Proc, Rng, START_TIMEOUT, Scratch, Settings, StopOnDrop, admin, admin_ok, fedhub,
    lock, log_tail, nap, percentile_ms, retry,
};

const TD: &str = "node.test";
const WORKLOAD_ID: &str = "spiffe://node.test/workload";
/// Longest the pause between a restart's checks and the next kill.
const MAX_WINDOW: Duration = Duration::from_secs(4);
/// A quarter of the kills come this soon after the agent serves again, as do kills while
/// starting.
const EARLY_WINDOW: Duration = Duration::from_millis(300);
/// Shortest time between two forced rotations: each adds a CA and a JWT key that stay until they
/// expire, and a hub publishes at most 64 (see `forced_rotations_never_sign_with_unpublished_keys`
/// in `crash.rs`): at most 20 rotations per 60 s `ca.ttl` here.
const MIN_ROTATION_INTERVAL: Duration = Duration::from_secs(3);
/// The load's last window, without a kill.
const FINAL_WINDOW: Duration = Duration::from_secs(1);
/// Longest a kill waits once the command it targets is in flight.
const TARGET_DELAY: Duration = Duration::from_millis(60);
/// A kill this soon after a logged event counts as landing on it.
const NEAR: Duration = Duration::from_millis(250);

/// The agent's files.
struct AgentFiles {
    config: PathBuf,
    data_dir: PathBuf,
    socket: PathBuf,
    token: String,
}

impl AgentFiles {
    /// Starts `fedhub agent run` with the join token in its environment and JSON logs (the
    /// agent's own events at debug level) in `log`.
    fn start(&self, log: &Path) -> Proc {
        let mut command = Command::new(FEDHUB);
        command
            .args(["agent", "run", "--config"])
            .arg(&self.config)
            .env("FEDHUB_AGENT_JOIN_TOKEN", &self.token)
            .env("FEDHUB_LOG", "info,fedhub_agent=debug")
            .env("FEDHUB_LOG_FORMAT", "json");
        Proc::spawn("the agent", command, log)
    }
}

/// What one run of the agent logged.
#[derive(Debug, Default)]
struct LogFacts {
    attested: usize,
    renewals: Vec<SystemTime>,
    signings: Vec<SystemTime>,
}

fn read_log(path: &Path) -> LogFacts {
    let mut facts = LogFacts::default();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let at = event["timestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        match (event["fields"]["message"].as_str(), at) {
            (Some("attested to the hub"), _) => facts.attested += 1,
            (Some("agent SVID renewed"), Some(at)) => facts.renewals.push(at),
            (Some("X509-SVID signed"), Some(at)) => facts.signings.push(at),
            _ => {}
        }
    }
    facts
}

/// Counts for the summary.
#[derive(Debug, Default)]
struct Tally {
    kills: usize,
    /// Further kills while the agent was starting (not counted in `kills`).
    startup_kills: usize,
    restarts: usize,
    checks: usize,
    interrupted: BTreeMap<&'static str, usize>,
    idle_kills: usize,
    serve_times: Vec<Duration>,
    renewals: usize,
    signings: usize,
    near_renewal: usize,
    near_signing: usize,
    /// Kills after which the stored agent SVID was a renewal the hub had not seen in use.
    pending_at_kill: usize,
    temp_files: usize,
    churn: usize,
    rotations: usize,
}

struct Shared {
    gate: Gate,
    churn: Mutex<usize>,
    rotations: Mutex<usize>,
    errors: Mutex<Vec<String>>,
}

/// A hub (never killed) and the configuration of an agent attested to it with a join token,
/// with the workload entry for this uid.
pub struct Setup {
    pub hub_files: HubFiles,
    pub hub: Proc,
    files: AgentFiles,
    pub agent_id: String,
}

impl Setup {
    /// Starts the hub in `dir` and writes the agent's configuration.
    pub fn new(dir: &Path) -> Self {
        let uid = rustix::process::getuid().as_raw();
        let hub_files = HubFiles::write(
            &dir.join("hub"),
            TD,
            "[ca]\nttl = \"60s\"\n\n[svid]\nx509_ttl = \"20s\"\njwt_ttl = \"30s\"\n",
        );
        let hub = hub_files.start(&dir.join("hub.log"));
        hub_files.wait_ready(&hub);
        let socket = &hub_files.socket;
        let token = admin_ok(socket, &["token", "generate", "--ttl", "10m"]);
        let agent_id = token["spiffe_id"].as_str().unwrap().to_owned();
        admin_ok(
            socket,
            &[
                "entry",
                "create",
                "--spiffe-id",
                WORKLOAD_ID,
                "--parent-id",
                &agent_id,
                "--selector",
                &format!("unix:uid:{uid}"),
                "--x509-svid-ttl",
                "4s",
            ],
        );
        let (_, document) = hub_files.own_bundle();
        let trust_bundle = dir.join("bundle.json");
        std::fs::write(&trust_bundle, document).unwrap();
        let files = AgentFiles {
            config: dir.join("agent.toml"),
            data_dir: dir.join("agent"),
            socket: dir.join("agent-socket").join("agent.sock"),
            token: token["token"].as_str().unwrap().to_owned(),
        };
        std::fs::write(
            &files.config,
            format!(
                "trust_domain = \"{TD}\"\nhub_address = \"{}\"\ntrust_bundle_file = \"{}\"\n\
                 data_dir = \"{}\"\nsocket_path = \"{}\"\n",
                hub_files.agent_api,
                trust_bundle.display(),
                files.data_dir.display(),
                files.socket.display()
            ),
        )
        .unwrap();
        Self {
            hub_files,
            hub,
            files,
            agent_id,
        }
    }

    /// Starts the agent, logging to `log`.
    pub fn start_agent(&self, log: &Path) -> Proc {
        self.files.start(log)
    }

    /// Waits until the agent serves the workload's X509-SVID.
    pub fn wait_serving(&self, agent: &mut Proc) {
        wait_serving(0, agent, &self.files.socket, &mut Tally::default());
    }
}

/// Runs the scenario.
pub fn run(settings: Settings) {
    let started = Instant::now();
    eprintln!(
        "crash test (agent): {} kills, seed {:#x}",
        settings.iterations, settings.seed
    );
    let dir = Scratch::new();
    let uid = rustix::process::getuid().as_raw();

    let Setup {
        hub_files,
        mut hub,
        files,
        agent_id,
    } = Setup::new(dir.path());
    let socket = hub_files.socket.clone();
    let log = |run: usize, suffix: &str| dir.path().join(format!("agent-{run}{suffix}.log"));
    let mut agent = files.start(&log(0, ""));

    let shared = Shared {
        gate: Gate::default(),
        churn: Mutex::new(0),
        rotations: Mutex::new(0),
        errors: Mutex::new(Vec::new()),
    };
    let mut tally = Tally::default();
    let mut rng = Rng::new(settings.seed, 10);

    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&shared.gate);
        let shared = &shared;
        let socket = socket.as_path();
        let agent_socket = files.socket.as_path();
        let agent_id = agent_id.as_str();
        scope.spawn(move || churn(shared, socket, agent_id, uid, Rng::new(settings.seed, 11)));
        scope.spawn(move || {
            rotator(shared, socket, agent_socket, Rng::new(settings.seed, 12));
        });

        for run in 0..=settings.iterations {
            let served = wait_serving(run, &mut agent, &files.socket, &mut tally);
            let mut killed_at = None;
            if run < settings.iterations {
                shared.gate.open();
                // A quarter of the kills soon after serving began, when the agent still renews
                // its SVID and signs after the restart; a quarter anywhere in the window; the
                // others just after an entry update or a CA activation was sent.
                match rng.below(4) {
                    0 => std::thread::sleep(rng.between(Duration::ZERO, EARLY_WINDOW)),
                    1 => std::thread::sleep(rng.between(Duration::ZERO, MAX_WINDOW)),
                    target => {
                        let operation = if target == 2 {
                            "entry update"
                        } else {
                            "bundle rotate --activate"
                        };
                        if shared.gate.wait_for(operation, 2 * MAX_WINDOW) {
                            std::thread::sleep(rng.between(Duration::ZERO, TARGET_DELAY));
                        }
                    }
                }
                agent.assert_running();
                let in_flight = shared.gate.in_flight();
                killed_at = Some(SystemTime::now());
                agent.kill9();
                shared.gate.close();
                tally.kills += 1;
                if in_flight.is_empty() {
                    tally.idle_kills += 1;
                }
                for operation in in_flight {
                    *tally.interrupted.entry(operation).or_default() += 1;
                }
            } else {
                // A last window without a kill: the load runs against the last restarted agent.
                shared.gate.open();
                std::thread::sleep(FINAL_WINDOW);
                shared.gate.close();
            }
            check_run(
                run,
                &served,
                agent.log(),
                &hub_files,
                agent_id,
                killed_at,
                &mut tally,
            );
            hub.assert_running();
            let Some(_) = killed_at else {
                agent.assert_running();
                break;
            };
            check_store(run, &files, &hub_files, agent_id, &mut tally);

            // Now and then, a kill while the agent starts (loading its store, connecting,
            // renewing): the restart after it is the one checked.
            if rng.below(4) == 0 {
                agent = files.start(&log(run + 1, "-startup"));
                std::thread::sleep(rng.between(Duration::ZERO, EARLY_WINDOW));
                agent.kill9();
                let attested = read_log(agent.log()).attested;
                assert_eq!(
                    attested, 0,
                    "run {run}: the agent attested again while starting"
                );
                check_store(run, &files, &hub_files, agent_id, &mut tally);
                tally.startup_kills += 1;
            }
            agent = files.start(&log(run + 1, ""));
        }
        shared.gate.stop();
    });
    let errors = lock(&shared.errors);
    assert!(errors.is_empty(), "load generators failed: {errors:#?}");
    tally.churn = *lock(&shared.churn);
    assert!(tally.churn > 0, "no entry update succeeded");
    tally.rotations = *lock(&shared.rotations);
    eprintln!(
        "crash test (agent) summary: seed {:#x}; {} kills under load and {} while starting, {} \
         restarts checked, {} checks passed, in {:.1} s\n\
         \x20 restart to the workload's SVID served: p50 {} ms, max {} ms\n\
         \x20 operations in flight at the kills: {:?}; kills with none in flight: {}\n\
         \x20 agent SVID renewals logged {}, X509-SVIDs signed {}; kills within {} ms after a \
         renewal: {}, after a signing: {}\n\
         \x20 kills leaving a renewed agent SVID the hub had not seen in use: {}; temporary files \
         found after kills: {}\n\
         \x20 entry changes {}, CA rotations {}",
        settings.seed,
        tally.kills,
        tally.startup_kills,
        tally.restarts,
        tally.checks,
        started.elapsed().as_secs_f64(),
        percentile_ms(&tally.serve_times, 50),
        percentile_ms(&tally.serve_times, 100),
        tally.interrupted,
        tally.idle_kills,
        tally.renewals,
        tally.signings,
        NEAR.as_millis(),
        tally.near_renewal,
        tally.near_signing,
        tally.pending_at_kill,
        tally.temp_files,
        tally.churn,
        tally.rotations,
    );
    hub.assert_running();
}

/// Waits until the (re)started agent serves the workload's X509-SVID; returns it and when.
fn wait_serving(
    run: usize,
    agent: &mut Proc,
    socket: &Path,
    tally: &mut Tally,
) -> (Value, SystemTime) {
    let socket = socket.to_str().unwrap();
    let svid = retry(START_TIMEOUT, || {
        let report = fedhub(&[
            "api",
            "fetch",
            "x509",
            "--socket",
            socket,
            "--output",
            "json",
            "--timeout",
            "5s",
        ])
        .json()?;
        report["svids"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|svid| svid["spiffe_id"] == WORKLOAD_ID)
            .cloned()
            .ok_or_else(|| format!("{WORKLOAD_ID} not served yet: {report}"))
    })
    .unwrap_or_else(|e| panic!("run {run}: {e}\nagent log:\n{}", agent.log_tail()));
    if run > 0 {
        tally.restarts += 1;
        tally.serve_times.push(agent.started().elapsed());
    }
    agent.assert_running();
    tally.checks += 2;
    (svid, SystemTime::now())
}

/// The checks of one run of the agent, after it was killed (or, for the last, while it
/// runs): the SVID it served verifies, it did not attest (but for the first run), the hub
/// knows exactly this agent. Also tallies what the kill at `killed_at` landed on.
fn check_run(
    run: usize,
    (svid, served_at): &(Value, SystemTime),
    log: &Path,
    hub_files: &HubFiles,
    agent_id: &str,
    killed_at: Option<SystemTime>,
    tally: &mut Tally,
) {
    let context = |what: &str| format!("run {run}: {what}\nagent log:\n{}", log_tail(log));
    let (hub_bundle, _): (Bundle, _) = hub_files.own_bundle();
    let chain: Vec<Vec<u8>> = pem::parse_many(svid["chain_pem"].as_str().unwrap())
        .unwrap()
        .into_iter()
        .map(pem::Pem::into_contents)
        .collect();
    let set: BundleSet = [hub_bundle].into_iter().collect();
    // Verified as of when it was served: it lives only 4 s.
    verify_x509_svid(&chain, &set, *served_at, SvidUsage::ClientAuth).unwrap_or_else(|e| {
        panic!(
            "{}",
            context(&format!("the served SVID does not verify: {e}"))
        )
    });
    tally.checks += 1;

    let facts = read_log(log);
    let expected = usize::from(run == 0);
    assert_eq!(
        facts.attested,
        expected,
        "{}",
        context(&format!(
            "the agent attested {} times in this run, {expected} expected",
            facts.attested
        ))
    );
    let agents = admin_ok(&hub_files.socket, &["agent", "list"]);
    let ids: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|agent| agent["spiffe_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [agent_id], "{}", context("the hub's agents"));
    assert!(
        agents[0]["banned"] == false,
        "{}",
        context("the agent is banned")
    );
    tally.checks += 2;

    tally.renewals += facts.renewals.len();
    tally.signings += facts.signings.len();
    if let Some(killed_at) = killed_at {
        let near = |events: &[SystemTime]| {
            events.iter().any(|at| {
                killed_at
                    .duration_since(*at)
                    .is_ok_and(|since| since <= NEAR)
            })
        };
        tally.near_renewal += usize::from(near(&facts.renewals));
        tally.near_signing += usize::from(near(&facts.signings));
    }
}

/// Checks the agent's data directory as a kill left it.
fn check_store(
    run: usize,
    files: &AgentFiles,
    hub_files: &HubFiles,
    agent_id: &str,
    tally: &mut Tally,
) {
    let (hub_bundle, _) = hub_files.own_bundle();
    let trust_domain = TrustDomain::new(TD).unwrap();
    let stored = check_agent_store(&files.data_dir, &trust_domain, &hub_bundle, agent_id)
        .unwrap_or_else(|e| panic!("run {run}: the agent's data directory after the kill: {e}"));
    let shown = admin_ok(
        &hub_files.socket,
        &["agent", "show", "--spiffe-id", agent_id],
    );
    if shown["serial"].as_str() != Some(stored.serial.as_str()) {
        tally.pending_at_kill += 1;
    }
    tally.temp_files += stored.temp_files.len();
    tally.checks += 1;
}

/// Keeps four workload entries under the agent changing: each update is a new revision, a
/// sync snapshot and a new SVID to sign. (Deleting entries instead trips a bug of its own,
/// see `agent_survives_an_entry_deleted_while_it_signs` in `crash.rs`.)
fn churn(shared: &Shared, socket: &Path, agent_id: &str, uid: u32, mut rng: Rng) {
    const WORKER: usize = 1;
    let mut ids: Vec<String> = Vec::new();
    for n in 0..4 {
        let created = admin(
            socket,
            &[
                "entry",
                "create",
                "--spiffe-id",
                &format!("spiffe://{TD}/churn/{n}"),
                "--parent-id",
                agent_id,
                "--selector",
                &format!("unix:uid:{uid}"),
                "--x509-svid-ttl",
                "4s",
            ],
        );
        match created {
            Ok(view) => ids.push(view["id"].as_str().unwrap().to_owned()),
            Err(e) => return lock(&shared.errors).push(format!("entry create: {e}")),
        }
    }
    let mut hint = 0;
    loop {
        hint += 1;
        let id = &ids[usize::try_from(rng.below(4)).unwrap()];
        if shared.gate.enter(WORKER, "entry update").is_none() {
            return;
        }
        let outcome = admin(
            socket,
            &[
                "entry",
                "update",
                "--entry-id",
                id,
                "--hint",
                &format!("h{hint}"),
            ],
        );
        shared.gate.leave(WORKER);
        match outcome {
            Ok(_) => *lock(&shared.churn) += 1,
            Err(e) => return lock(&shared.errors).push(format!("entry update: {e}")),
        }
        nap(
            &shared.gate,
            rng.between(Duration::from_millis(50), Duration::from_millis(300)),
        );
    }
}

/// Whether the agent serves every X.509 authority of `bundle` (its own trust domain's).
fn agent_holds(agent_socket: &Path, bundle: &Bundle) -> Result<bool, String> {
    let report = fedhub(&[
        "api",
        "fetch",
        "bundles",
        "--socket",
        agent_socket.to_str().unwrap(),
        "--output",
        "json",
        "--timeout",
        "5s",
    ])
    .json()?;
    let served = Bundle::from_json(
        bundle.trust_domain().clone(),
        report[TD].to_string().as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    Ok(bundle
        .x509_authorities()
        .iter()
        .all(|authority| served.x509_authorities().contains(authority)))
}

/// Publishes a new CA, waits until the agent serves it (so that it has stored it), then
/// activates it.
fn rotator(shared: &Shared, socket: &Path, agent_socket: &Path, mut rng: Rng) {
    const WORKER: usize = 2;
    let trust_domain = TrustDomain::new(TD).unwrap();
    let mut last: Option<Instant> = None;
    loop {
        if let Some(last) = last {
            let jitter = rng.between(Duration::ZERO, Duration::from_millis(500));
            nap(
                &shared.gate,
                (MIN_ROTATION_INTERVAL + jitter).saturating_sub(last.elapsed()),
            );
        }
        last = Some(Instant::now());
        let Some(window) = shared.gate.enter(WORKER, "bundle rotate") else {
            return;
        };
        let outcome = admin(socket, &["bundle", "rotate"]);
        shared.gate.leave(WORKER);
        if let Err(e) = outcome {
            return lock(&shared.errors).push(format!("bundle rotate: {e}"));
        }
        let bundle = match admin(socket, &["bundle", "show"]) {
            Ok(view) => Bundle::from_json(
                trust_domain.clone(),
                view["document"].as_str().unwrap().as_bytes(),
            )
            .unwrap(),
            Err(e) => return lock(&shared.errors).push(format!("bundle show: {e}")),
        };
        let mut held = false;
        while shared.gate.is_open(window) {
            if agent_holds(agent_socket, &bundle).unwrap_or(false) {
                held = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !held {
            continue;
        }
        match shared
            .gate
            .enter_within(WORKER, "bundle rotate --activate", window)
        {
            None => return,
            Some(false) => continue,
            Some(true) => {}
        }
        let outcome = admin(socket, &["bundle", "rotate", "--activate"]);
        shared.gate.leave(WORKER);
        if let Err(e) = outcome {
            return lock(&shared.errors).push(format!("bundle rotate --activate: {e}"));
        }
        *lock(&shared.rotations) += 1;
    }
}
