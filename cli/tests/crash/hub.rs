//! The hub scenario: `fedhub hub run` killed with SIGKILL during admin writes, federation
//! refreshes and forced CA rotations, restarted each time and checked.
//!
//! Around the hub under test (`crash.test`, SQLite, CA lifetime 40 s so that keys also expire
//! and are removed) run, never killed: a second hub (`foreign.test`) whose bundle endpoint the
//! hub federates with, and an agent attested to the hub with a join token, through which the
//! hub mints JWT-SVIDs. Load generators, each in a thread of its own and only while a window
//! is open:
//!
//! - admin writes: `entry create` (three in four) and `entry delete` of an entry created before;
//!   every command that succeeded is a committed row (or a committed deletion);
//! - `federation refresh` of foreign.test; every sequence a refresh reported must stay stored
//!   (the hub also refreshes by itself every second: foreign.test publishes a 1 s hint);
//! - a forced rotation: `bundle rotate`, a pause, then `bundle rotate --activate`, again and
//!   again; every key a successful command reported must stay held, at least in the state it
//!   reported (prepared, then active, then retired) until it expires.
//!
//! All along, foreign.test rotates too (publish, wait until the hub has stored the new bundle,
//! activate), so that the hub's refreshes keep storing new bundles.
//!
//! A kill comes at a random moment of the window, or just after a command chosen at random was
//! started; now and then the restart is killed too while it starts. After every (re)start,
//! with the load paused: the admin socket answers; the hub and the agent still run; the bundle
//! endpoint serves a bundle whose X.509 authorities are exactly the roots of the CAs in
//! `<data_dir>/ca/state.json` and whose JWT keys are exactly its JWT keys (the key files on
//! disk match them); the SVID the endpoint presents chains to that bundle and was issued by a
//! CA the hub holds; a JWT-SVID the hub mints now (through the agent, for a new audience)
//! validates against the served bundle and carries the active JWT key's id; no key file is
//! left that no key uses, nor the temporary file of an interrupted write; the bundle's
//! sequence has not gone back; every committed entry exists and no committed deletion came
//! back; the stored foreign bundle is at least as new as every sequence reported.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fedhub_core::{Bundle, TrustDomain};
use serde_json::Value;

use crate::inspect::{CaState, check_ca_matches_bundle, fetch_bundle_endpoint, validate_jwt};
use crate::support::{
    FEDHUB, Gate, Proc, Rng, START_TIMEOUT, Scratch, Settings, StopOnDrop, admin, admin_ok, fedhub,
    free_port, lock, log_tail, nap, percentile_ms, retry,
};

const TD: &str = "crash.test";
const FOREIGN_TD: &str = "foreign.test";
const WORKLOAD_ID: &str = "spiffe://crash.test/workload";
/// Parent of the entries the admin writer creates: no agent has it, so nothing gets signed.
const LOAD_PARENT: &str = "spiffe://crash.test/fedhub/agent/load";
/// Longest the pause between two kills (the window in which the load runs).
const MAX_WINDOW: Duration = Duration::from_millis(2500);
/// Shortest time between two forced rotations of a hub. Every rotation adds a CA and a JWT key
/// that stay until they expire, and a hub publishes at most 64 (see
/// `forced_rotations_never_sign_with_unpublished_keys` in `crash.rs`): at most 16 rotations
/// per 40 s `ca.ttl` here, 24 per 60 s for foreign.test.
const MIN_ROTATION_INTERVAL: Duration = Duration::from_millis(2500);
/// The load's last window, without a kill.
const FINAL_WINDOW: Duration = Duration::from_secs(1);
/// Longest a kill waits once the command it targets is in flight (a `fedhub` command takes
/// 20 to 50 ms here, starting the process included).
const TARGET_DELAY: Duration = Duration::from_millis(40);
/// Longest foreign.test's rotator waits for the hub to store its new bundle: more than a
/// refresh lease (120 s), which a hub killed mid-refresh leaves behind (see
/// `federation_refresh_is_not_blocked_by_a_killed_hub` in `crash.rs`).
const FOREIGN_WAIT: Duration = Duration::from_secs(150);
/// Longest a hub runs before a kill while it starts.
pub const STARTUP_KILL_WINDOW: Duration = Duration::from_millis(300);
/// Longest the hub's keys and its served bundle may disagree while a scheduled rotation is
/// being published (the check is repeated until they agree).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A hub's files and addresses.
pub struct HubFiles {
    pub trust_domain: &'static str,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub agent_api: SocketAddr,
    pub bundle_endpoint: SocketAddr,
}

impl HubFiles {
    /// Writes `base/hub.toml` for `trust_domain` on fresh loopback ports, with the `extra`
    /// sections appended.
    pub fn write(base: &Path, trust_domain: &'static str, extra: &str) -> Self {
        std::fs::create_dir_all(base).unwrap();
        let data_dir = base.join("data");
        let agent_api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let bundle_endpoint: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = base.join("hub.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"{trust_domain}\"\ndata_dir = \"{}\"\n\n[agent_api]\n\
                 address = \"{agent_api}\"\n\n[bundle_endpoint]\naddress = \"{bundle_endpoint}\"\n\
                 refresh_hint = \"1s\"\n\n[health]\nenabled = false\n\n{extra}",
                data_dir.display()
            ),
        )
        .unwrap();
        Self {
            trust_domain,
            socket: data_dir.join("admin").join("admin.sock"),
            config,
            data_dir,
            agent_api,
            bundle_endpoint,
        }
    }

    /// Starts `fedhub hub run` on this configuration, logging to `log`.
    pub fn start(&self, log: &Path) -> Proc {
        let mut command = Command::new(FEDHUB);
        command
            .args(["hub", "run", "--config"])
            .arg(&self.config)
            .env("FEDHUB_LOG", "info")
            .env_remove("FEDHUB_LOG_FORMAT");
        Proc::spawn(&format!("the hub of {}", self.trust_domain), command, log)
    }

    /// Waits until the admin socket answers; how long after the start that was.
    pub fn wait_ready(&self, hub: &Proc) -> Duration {
        retry(START_TIMEOUT, || admin(&self.socket, &["bundle", "show"])).unwrap_or_else(|e| {
            panic!(
                "the hub of {} did not answer on its admin socket: {e}\n{}",
                self.trust_domain,
                hub.log_tail()
            )
        });
        hub.started().elapsed()
    }

    /// The hub's own bundle as the admin API shows it.
    pub fn own_bundle(&self) -> (Bundle, String) {
        let view = admin_ok(&self.socket, &["bundle", "show"]);
        let document = view["document"].as_str().unwrap().to_owned();
        let bundle = Bundle::from_json(
            TrustDomain::new(self.trust_domain).unwrap(),
            document.as_bytes(),
        )
        .unwrap();
        (bundle, document)
    }
}

/// What the admin writer did.
#[derive(Debug, Default)]
struct Entries {
    /// Created (the command succeeded) and not deleted since: id → SPIFFE ID.
    live: BTreeMap<String, String>,
    /// Deleted (the command succeeded).
    deleted: BTreeSet<String>,
    /// SPIFFE IDs of entries whose creation or deletion failed: committed or not, both are
    /// fine, so they are not checked.
    uncertain: Vec<String>,
    creates: usize,
    deletes: usize,
    failed: usize,
}

/// Keys reported by successful rotations, and the counts.
#[derive(Debug, Default)]
struct Rotations {
    /// Key id → (the furthest state reported, its expiry in unix seconds).
    keys: BTreeMap<String, (u8, u64)>,
    /// The highest bundle sequence a rotation reported.
    sequence: u64,
    prepared: usize,
    activated: usize,
    failed: usize,
}

fn state_rank(state: &str) -> u8 {
    match state {
        "prepared" => 0,
        "active" => 1,
        _ => 2,
    }
}

impl Rotations {
    fn record(&mut self, view: &Value) {
        if let Some(sequence) = view["sequence"].as_u64() {
            self.sequence = self.sequence.max(sequence);
        }
        for key in view["keys"].as_array().into_iter().flatten() {
            let id = key["id"].as_str().unwrap().to_owned();
            let rank = state_rank(key["state"].as_str().unwrap());
            let not_after = humantime::parse_rfc3339_weak(key["not_after"].as_str().unwrap())
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let held = self.keys.entry(id).or_insert((rank, not_after));
            held.0 = held.0.max(rank);
        }
    }
}

/// Federation refreshes and foreign rotations.
#[derive(Debug, Default)]
struct Federation {
    /// The highest foreign sequence the hub reported holding (refresh or show).
    sequence: u64,
    refreshes: usize,
    failed: usize,
    /// Failures because a refresh of foreign.test held its lease (the hub's own, or one left
    /// by a killed process).
    busy: usize,
    foreign_rotations: usize,
    /// The longest foreign.test's rotator waited for the hub to store its new bundle.
    longest_wait: Duration,
    /// How long it had been waiting when the scenario ended.
    waiting_at_end: Duration,
}

/// Counts for the summary.
#[derive(Debug, Default)]
struct Tally {
    kills: usize,
    /// Further kills while the hub was starting (not counted in `kills`).
    startup_kills: usize,
    restarts: usize,
    checks: usize,
    /// Operations in flight at the kills, by name.
    interrupted: BTreeMap<&'static str, usize>,
    /// Kills with no operation of the load generators in flight.
    idle_kills: usize,
    restart_times: Vec<Duration>,
}

/// Everything the threads share.
struct Shared {
    gate: Gate,
    entries: Mutex<Entries>,
    rotations: Mutex<Rotations>,
    federation: Mutex<Federation>,
    /// Failures found by the load generators.
    errors: Mutex<Vec<String>>,
}

/// Runs the scenario.
pub fn run(settings: Settings) {
    let started = Instant::now();
    eprintln!(
        "crash test (hub): {} kills, seed {:#x}",
        settings.iterations, settings.seed
    );
    let dir = Scratch::new();
    let uid = rustix::process::getuid().as_raw();

    let foreign = HubFiles::write(
        &dir.path().join("foreign"),
        FOREIGN_TD,
        "[ca]\nttl = \"60s\"\n\n[svid]\nx509_ttl = \"20s\"\njwt_ttl = \"20s\"\n",
    );
    let foreign_hub = foreign.start(&dir.path().join("foreign.log"));
    foreign.wait_ready(&foreign_hub);

    let hub_files = HubFiles::write(
        &dir.path().join("crash"),
        TD,
        "[ca]\nttl = \"40s\"\n\n[svid]\nx509_ttl = \"20s\"\njwt_ttl = \"20s\"\n\n\
         [federation]\nmin_refresh = \"1s\"\nbackoff_base = \"1s\"\nbackoff_cap = \"5s\"\n",
    );
    let hub_log = dir.path().join("crash-hub.log");
    let mut hub = hub_files.start(&hub_log);
    hub_files.wait_ready(&hub);
    let socket = hub_files.socket.clone();

    // The relationship, bootstrapped with foreign.test's bundle.
    let (_, foreign_document) = foreign.own_bundle();
    let bootstrap = dir.path().join("foreign-bundle.json");
    std::fs::write(&bootstrap, foreign_document).unwrap();
    admin_ok(
        &socket,
        &[
            "federation",
            "create",
            "--trust-domain",
            FOREIGN_TD,
            "--bundle-endpoint-url",
            &format!("https://{}/", foreign.bundle_endpoint),
            "--bundle-endpoint-profile",
            "https_spiffe",
            "--endpoint-spiffe-id",
            "spiffe://foreign.test/fedhub/hub",
            "--trust-domain-bundle",
            bootstrap.to_str().unwrap(),
        ],
    );

    // The agent that asks the hub for JWT-SVIDs.
    let token = admin_ok(&socket, &["token", "generate", "--ttl", "10m"]);
    let agent_id = token["spiffe_id"].as_str().unwrap().to_owned();
    admin_ok(
        &socket,
        &[
            "entry",
            "create",
            "--spiffe-id",
            WORKLOAD_ID,
            "--parent-id",
            &agent_id,
            "--selector",
            &format!("unix:uid:{uid}"),
        ],
    );
    let (_, own_document) = hub_files.own_bundle();
    let trust_bundle = dir.path().join("crash-bundle.json");
    std::fs::write(&trust_bundle, own_document).unwrap();
    let agent_socket = dir.path().join("agent-socket").join("agent.sock");
    let agent_config = dir.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "trust_domain = \"{TD}\"\nhub_address = \"{}\"\ntrust_bundle_file = \"{}\"\n\
             data_dir = \"{}\"\nsocket_path = \"{}\"\n",
            hub_files.agent_api,
            trust_bundle.display(),
            dir.path().join("agent").display(),
            agent_socket.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(FEDHUB);
    command
        .args(["agent", "run", "--config"])
        .arg(&agent_config)
        .env("FEDHUB_AGENT_JOIN_TOKEN", token["token"].as_str().unwrap())
        .env("FEDHUB_LOG", "info")
        .env_remove("FEDHUB_LOG_FORMAT");
    let mut agent = Proc::spawn("the agent", command, &dir.path().join("agent.log"));

    let shared = Shared {
        gate: Gate::default(),
        entries: Mutex::new(Entries::default()),
        rotations: Mutex::new(Rotations::default()),
        federation: Mutex::new(Federation::default()),
        errors: Mutex::new(Vec::new()),
    };
    let mut tally = Tally::default();
    let mut rng = Rng::new(settings.seed, 0);
    let mut served_sequence = 0;

    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&shared.gate);
        let shared = &shared;
        let socket = socket.as_path();
        scope.spawn(move || admin_writer(shared, socket, Rng::new(settings.seed, 1)));
        scope.spawn(move || refresher(shared, socket, Rng::new(settings.seed, 2)));
        scope.spawn(move || rotator(shared, socket, Rng::new(settings.seed, 3)));
        let foreign_socket = foreign.socket.as_path();
        scope.spawn(move || {
            foreign_rotator(shared, foreign_socket, socket, Rng::new(settings.seed, 4));
        });

        for round in 0..=settings.iterations + 1 {
            if round > settings.iterations {
                // A last window without a kill: the load runs against the last restarted hub,
                // then everything is checked once more.
                shared.gate.open();
                std::thread::sleep(FINAL_WINDOW);
                shared.gate.close();
            } else {
                let ready = hub_files.wait_ready(&hub);
                if round > 0 {
                    tally.restarts += 1;
                    tally.restart_times.push(ready);
                }
            }
            check_round(
                round,
                &hub_files,
                &mut hub,
                &mut agent,
                &agent_socket,
                shared,
                &mut served_sequence,
                &mut tally,
            );
            if round >= settings.iterations {
                continue;
            }
            shared.gate.open();
            wait_for_kill(&shared.gate, &mut rng);
            let in_flight = shared.gate.in_flight();
            hub.kill9();
            shared.gate.close();
            tally.kills += 1;
            if in_flight.is_empty() {
                tally.idle_kills += 1;
            }
            for operation in in_flight {
                *tally.interrupted.entry(operation).or_default() += 1;
            }
            hub = hub_files.start(&hub_log);
            // Now and then, a kill while the hub starts (opening its CA, publishing): the
            // restart after it is the one checked.
            if rng.below(4) == 0 {
                std::thread::sleep(rng.between(Duration::ZERO, STARTUP_KILL_WINDOW));
                hub.kill9();
                tally.startup_kills += 1;
                hub = hub_files.start(&hub_log);
            }
        }
        shared.gate.stop();
    });
    let errors = lock(&shared.errors);
    assert!(errors.is_empty(), "load generators failed: {errors:#?}");

    let entries = lock(&shared.entries);
    let rotations = lock(&shared.rotations);
    let federation = lock(&shared.federation);
    assert!(entries.creates > 0, "no admin write succeeded: {entries:?}");
    eprintln!(
        "crash test (hub) summary: seed {:#x}; {} kills under load and {} while starting, {} \
         restarts checked, {} checks passed, in {:.1} s\n\
         \x20 restart to admin socket answering: p50 {} ms, max {} ms\n\
         \x20 operations in flight at the kills: {:?}; kills with none in flight: {}\n\
         \x20 admin writes committed: {} creates, {} deletes ({} entries live, {} deleted), \
         {} failed ({} entries left unchecked)\n\
         \x20 rotations committed: {} publish, {} activate ({} failed); own bundle sequence {}\n\
         \x20 federation refreshes committed: {} ({} failed, {} of them as already running); \
         foreign rotations {}; foreign sequence held {}\n\
         \x20 longest wait for a new foreign bundle to be stored: {:.1} s (still waiting at the \
         end: {:.1} s)",
        settings.seed,
        tally.kills,
        tally.startup_kills,
        tally.restarts,
        tally.checks,
        started.elapsed().as_secs_f64(),
        percentile_ms(&tally.restart_times, 50),
        percentile_ms(&tally.restart_times, 100),
        tally.interrupted,
        tally.idle_kills,
        entries.creates,
        entries.deletes,
        entries.live.len(),
        entries.deleted.len(),
        entries.failed,
        entries.uncertain.len(),
        rotations.prepared,
        rotations.activated,
        rotations.failed,
        served_sequence,
        federation.refreshes,
        federation.failed,
        federation.busy,
        federation.foreign_rotations,
        federation.sequence,
        federation.longest_wait.as_secs_f64(),
        federation.waiting_at_end.as_secs_f64(),
    );
    drop(agent);
    drop(foreign_hub);
}

/// What a kill waits for: any moment of the window (`None`), or a command of the load in
/// flight, chosen at random.
const KILL_TARGETS: [Option<&str>; 7] = [
    None,
    None,
    Some("entry create"),
    Some("entry delete"),
    Some("federation refresh"),
    Some("bundle rotate"),
    Some("bundle rotate --activate"),
];

/// Waits for the moment of the next kill: a random delay in the window, or a random delay up to
/// [`TARGET_DELAY`] once the chosen command is in flight (or the window's end without it).
fn wait_for_kill(gate: &Gate, rng: &mut Rng) {
    let target = KILL_TARGETS[usize::try_from(rng.below(KILL_TARGETS.len() as u64)).unwrap()];
    match target {
        Some(operation) if gate.wait_for(operation, 2 * MAX_WINDOW) => {
            std::thread::sleep(rng.between(Duration::ZERO, TARGET_DELAY));
        }
        Some(_) => {}
        None => std::thread::sleep(rng.between(Duration::ZERO, MAX_WINDOW)),
    }
}

/// The checks after a (re)start; see the module documentation.
#[expect(
    clippy::too_many_arguments,
    reason = "the round's whole context, passed once"
)]
fn check_round(
    round: usize,
    files: &HubFiles,
    hub: &mut Proc,
    agent: &mut Proc,
    agent_socket: &Path,
    shared: &Shared,
    served_sequence: &mut u64,
    tally: &mut Tally,
) {
    let log = hub.log().to_owned();
    let context = |what: &str| format!("round {round}: {what}\nhub log:\n{}", log_tail(&log));
    hub.assert_running();
    agent.assert_running();
    tally.checks += 2;

    // Keys, served bundle, endpoint SVID and a fresh JWT-SVID agree.
    let ca_dir = files.data_dir.join("ca");
    let hub_id = format!("spiffe://{TD}/fedhub/hub");
    let trust_domain = TrustDomain::new(TD).unwrap();
    let mut attempt = 0;
    let (state, served) = retry(SETTLE_TIMEOUT + START_TIMEOUT, || {
        attempt += 1;
        let audience = format!("spiffe://{TD}/check/{round}/{attempt}");
        let before = CaState::read(&ca_dir)?;
        let served = fetch_bundle_endpoint(files.bundle_endpoint, &trust_domain)?;
        check_ca_matches_bundle(&ca_dir, &before, &served, &hub_id)?;
        let token = jwt_svid(agent_socket, &audience)?;
        let kid = validate_jwt(&token, &audience, &served.bundle)?;
        let active = before.active_jwt()?;
        if kid != active.id {
            return Err(format!(
                "the JWT-SVID was signed with {kid}, the active key is {}",
                active.id
            ));
        }
        let shown = admin(&files.socket, &["bundle", "show"])?;
        if shown["sequence"].as_u64() != served.bundle.sequence() {
            return Err(format!(
                "the admin API shows sequence {}, the endpoint serves {:?}",
                shown["sequence"],
                served.bundle.sequence()
            ));
        }
        let after = CaState::read(&ca_dir)?;
        if after != before {
            return Err("the CA's keys changed during the check".to_owned());
        }
        Ok((before, served))
    })
    .unwrap_or_else(|e| panic!("{}", context(&e)));
    tally.checks += 4;

    // The sequence never goes back, and no reported rotation was lost.
    let sequence = served.bundle.sequence().unwrap_or_default();
    let rotations = lock(&shared.rotations);
    let floor = rotations.sequence.max(*served_sequence);
    assert!(
        sequence >= floor,
        "{}",
        context(&format!(
            "the served bundle has sequence {sequence}, below {floor} served or reported before"
        ))
    );
    *served_sequence = sequence;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (id, (rank, not_after)) in &rotations.keys {
        if *not_after <= now + 1 {
            continue;
        }
        let held = state.state_of(id).map(state_rank);
        assert!(
            held.is_some_and(|held| held >= *rank),
            "{}",
            context(&format!(
                "key {id}, reported in state rank {rank} by a rotation that succeeded, is now \
                 {:?} in state.json",
                state.state_of(id)
            ))
        );
    }
    drop(rotations);
    tally.checks += 2;

    // Every committed entry is there, no committed deletion came back.
    let listed =
        admin(&files.socket, &["entry", "list"]).unwrap_or_else(|e| panic!("{}", context(&e)));
    let ids: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["id"].as_str().unwrap())
        .collect();
    let entries = lock(&shared.entries);
    let lost: Vec<&String> = entries
        .live
        .keys()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{}",
        context(&format!("committed entries lost: {lost:?}"))
    );
    let back: Vec<&String> = entries
        .deleted
        .iter()
        .filter(|id| ids.contains(id.as_str()))
        .collect();
    assert!(
        back.is_empty(),
        "{}",
        context(&format!("deleted entries came back: {back:?}"))
    );
    drop(entries);
    tally.checks += 2;

    // The stored foreign bundle is at least as new as every sequence reported (read first:
    // foreign.test's rotator keeps reporting while this runs).
    let reported = lock(&shared.federation).sequence;
    let relationship = admin(
        &files.socket,
        &["federation", "show", "--trust-domain", FOREIGN_TD],
    )
    .unwrap_or_else(|e| panic!("{}", context(&e)));
    let held = relationship["bundle"]["sequence"]
        .as_u64()
        .unwrap_or_default();
    assert!(
        held >= reported,
        "{}",
        context(&format!(
            "the stored bundle of {FOREIGN_TD} has sequence {held}, {reported} was reported"
        ))
    );
    tally.checks += 1;

    hub.assert_running();
    agent.assert_running();
}

/// A JWT-SVID for `audience` from the agent's Workload API.
fn jwt_svid(socket: &Path, audience: &str) -> Result<String, String> {
    let report = fedhub(&[
        "api",
        "fetch",
        "jwt",
        "-a",
        audience,
        "--socket",
        socket.to_str().unwrap(),
        "--output",
        "json",
        "--timeout",
        "5s",
    ])
    .json()?;
    report["svids"][0]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no JWT-SVID in {report}"))
}

/// Creates entries (three in four) and deletes them, recording what succeeded.
fn admin_writer(shared: &Shared, socket: &Path, mut rng: Rng) {
    const WORKER: usize = 1;
    let mut next = 0_u64;
    loop {
        let victim = {
            let entries = lock(&shared.entries);
            (rng.below(4) == 0 && !entries.live.is_empty()).then(|| {
                let index = usize::try_from(rng.below(entries.live.len() as u64)).unwrap();
                entries.live.keys().nth(index).unwrap().clone()
            })
        };
        if let Some(id) = victim {
            if shared.gate.enter(WORKER, "entry delete").is_none() {
                return;
            }
            let outcome = admin(socket, &["entry", "delete", "--entry-id", &id]);
            shared.gate.leave(WORKER);
            let mut entries = lock(&shared.entries);
            let spiffe_id = entries.live.remove(&id).unwrap();
            if outcome.is_ok() {
                entries.deletes += 1;
                entries.deleted.insert(id);
            } else {
                // Deleted or not: no longer checked either way.
                entries.failed += 1;
                entries.uncertain.push(spiffe_id);
            }
        } else {
            next += 1;
            let spiffe_id = format!("spiffe://{TD}/load/{next}");
            if shared.gate.enter(WORKER, "entry create").is_none() {
                return;
            }
            let outcome = admin(
                socket,
                &[
                    "entry",
                    "create",
                    "--spiffe-id",
                    &spiffe_id,
                    "--parent-id",
                    LOAD_PARENT,
                    "--allow-unknown-parent",
                    "--selector",
                    "unix:uid:4242",
                ],
            );
            shared.gate.leave(WORKER);
            let mut entries = lock(&shared.entries);
            if let Ok(view) = outcome {
                entries.creates += 1;
                entries
                    .live
                    .insert(view["id"].as_str().unwrap().to_owned(), spiffe_id);
            } else {
                entries.failed += 1;
                entries.uncertain.push(spiffe_id);
            }
        }
    }
}

/// `federation refresh` in a loop, recording the sequences reported.
fn refresher(shared: &Shared, socket: &Path, mut rng: Rng) {
    const WORKER: usize = 2;
    while shared.gate.enter(WORKER, "federation refresh").is_some() {
        let outcome = admin(
            socket,
            &["federation", "refresh", "--trust-domain", FOREIGN_TD],
        );
        shared.gate.leave(WORKER);
        let mut federation = lock(&shared.federation);
        match outcome {
            Ok(view) => {
                federation.refreshes += 1;
                if let Some(sequence) = view["bundle"]["sequence"].as_u64() {
                    federation.sequence = federation.sequence.max(sequence);
                }
            }
            Err(error) => {
                federation.failed += 1;
                if error.contains("already running") {
                    federation.busy += 1;
                }
            }
        }
        drop(federation);
        nap(
            &shared.gate,
            rng.between(Duration::from_millis(20), Duration::from_millis(200)),
        );
    }
}

/// `bundle rotate`, a pause (the agent receives the new bundle), `bundle rotate --activate`,
/// and again, no more often than [`MIN_ROTATION_INTERVAL`].
fn rotator(shared: &Shared, socket: &Path, mut rng: Rng) {
    const WORKER: usize = 3;
    // Only a publication with no key waiting for activation adds keys; those are spaced by
    // MIN_ROTATION_INTERVAL. A command that failed may have taken effect: counted as if it did.
    let mut waiting = false;
    let mut last_activation: Option<Instant> = None;
    loop {
        if let (false, Some(last)) = (waiting, last_activation) {
            let jitter = rng.between(Duration::ZERO, Duration::from_millis(500));
            nap(
                &shared.gate,
                (MIN_ROTATION_INTERVAL + jitter).saturating_sub(last.elapsed()),
            );
        }
        let Some(window) = shared.gate.enter(WORKER, "bundle rotate") else {
            return;
        };
        let outcome = admin(socket, &["bundle", "rotate"]);
        shared.gate.leave(WORKER);
        waiting = true;
        {
            let mut rotations = lock(&shared.rotations);
            match &outcome {
                Ok(view) => {
                    rotations.prepared += 1;
                    rotations.record(view);
                }
                Err(_) => rotations.failed += 1,
            }
        }
        // The agent receives the new bundle meanwhile.
        nap(
            &shared.gate,
            rng.between(Duration::from_millis(50), Duration::from_millis(250)),
        );
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
        waiting = false;
        last_activation = Some(Instant::now());
        let mut rotations = lock(&shared.rotations);
        match &outcome {
            Ok(view) => {
                rotations.activated += 1;
                rotations.record(view);
            }
            Err(_) => rotations.failed += 1,
        }
    }
}

/// Rotates foreign.test's keys: publish a new key, wait until the hub under test stored the
/// bundle holding it, then activate it (activating first would leave the hub unable to
/// authenticate foreign.test's endpoint).
fn foreign_rotator(shared: &Shared, foreign: &Path, hub: &Path, mut rng: Rng) {
    let fail = |error: String| lock(&shared.errors).push(error);
    while !shared.gate.stopped() {
        let published = match admin(foreign, &["bundle", "rotate"]) {
            Ok(view) => view["sequence"].as_u64().unwrap_or_default(),
            Err(e) => return fail(format!("foreign.test refused a rotation: {e}")),
        };
        let waiting = Instant::now();
        let deadline = waiting + FOREIGN_WAIT;
        loop {
            if shared.gate.stopped() {
                let mut federation = lock(&shared.federation);
                federation.waiting_at_end = waiting.elapsed();
                return;
            }
            if let Ok(view) = admin(hub, &["federation", "show", "--trust-domain", FOREIGN_TD]) {
                let held = view["bundle"]["sequence"].as_u64().unwrap_or_default();
                let mut federation = lock(&shared.federation);
                federation.sequence = federation.sequence.max(held);
                if held >= published {
                    federation.longest_wait = federation.longest_wait.max(waiting.elapsed());
                    break;
                }
            }
            if Instant::now() >= deadline {
                return fail(format!(
                    "the hub did not store {FOREIGN_TD}'s bundle sequence {published} within \
                     {FOREIGN_WAIT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Err(e) = admin(foreign, &["bundle", "rotate", "--activate"]) {
            return fail(format!("foreign.test refused an activation: {e}"));
        }
        lock(&shared.federation).foreign_rotations += 1;
        nap(
            &shared.gate,
            rng.between(MIN_ROTATION_INTERVAL, 2 * MIN_ROTATION_INTERVAL),
        );
    }
}
