//! Crash safety proven by `kill -9`: a real `fedhub hub run` and a real `fedhub agent run` are
//! killed with SIGKILL at random moments under load, restarted each time, and checked after
//! every restart: nothing committed is lost, the hub's keys match what it publishes, and the
//! agent resumes from its data directory without attesting again. See `crash/hub.rs` and
//! `crash/agent.rs` for what runs and what is checked.
//!
//! Each test kills its process `FEDHUB_CRASH_ITERATIONS` times (3 by default, a few seconds for
//! CI; docs/benchmarks.md reports a run with many more). The kill schedule comes from a seeded
//! generator: the seed is printed, and `FEDHUB_CRASH_SEED=<seed>` replays the same delays (the
//! processes' own timing still varies). Each test prints a summary line with its counts
//! (`--nocapture` shows it). Everything runs on loopback in a temporary directory; every process
//! is killed when its test ends, also when it fails.
#![expect(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "test code: a failed step is a failed test, and scenarios read top to bottom"
)]

#[path = "crash/agent.rs"]
mod agent;
#[path = "crash/hub.rs"]
mod hub;
#[path = "crash/inspect.rs"]
mod inspect;
#[path = "crash/support.rs"]
mod support;

#[test]
fn hub_survives_sigkill_under_load() {
    hub::run(support::Settings::from_env());
}

#[test]
fn agent_survives_sigkill_and_resumes_without_attesting() {
    agent::run(support::Settings::from_env());
}

/// Known bug, kept out of the default run until it is fixed: the hub renews its own SVID only on
/// its housekeeping tick (every 15 s, `CA_TICK_INTERVAL` in `hub/src/state.rs`), so with an
/// `svid.x509_ttl` shorter than that (which the configuration accepts) the bundle endpoint and
/// the agent API present an expired SVID for part of every tick. Agents then cannot connect,
/// and an agent whose own SVID expires meanwhile must attest again. Takes about 20 s.
#[test]
#[ignore = "known bug: the hub's own SVID expires between housekeeping ticks (x509_ttl < 15 s)"]
fn hub_svid_outlives_the_housekeeping_tick() {
    use std::time::{Duration, Instant};

    let dir = support::Scratch::new();
    let files = hub::HubFiles::write(dir.path(), "short.test", "[svid]\nx509_ttl = \"4s\"\n");
    let hub_process = files.start(&dir.path().join("hub.log"));
    files.wait_ready(&hub_process);
    let trust_domain = fedhub_core::TrustDomain::new("short.test").unwrap();
    let set = |bundle: &fedhub_core::Bundle| -> fedhub_core::BundleSet {
        [bundle.clone()].into_iter().collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let served = inspect::fetch_bundle_endpoint(files.bundle_endpoint, &trust_domain).unwrap();
        let verified = fedhub_core::x509::verify_x509_svid(
            &served.chain,
            &set(&served.bundle),
            std::time::SystemTime::now(),
            fedhub_core::x509::SvidUsage::ServerAuth,
        );
        assert!(
            verified.is_ok(),
            "the hub presents an SVID that does not verify: {verified:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Known bug, kept out of the default run until it is fixed: when an entry is deleted while the
/// agent asks the hub to sign its SVID, the hub refuses that entry with `PERMISSION_DENIED`
/// (`authorized` in `hub/src/node/service.rs`), the code it also uses to refuse the agent
/// itself. The agent does not count it as a refusal of one entry (`is_entry_refusal` in
/// `agent/src/sync.rs`), takes it for a refusal of its own SVID (`Daemon::hub_refused` in
/// `agent/src/run/daemon.rs`), throws that SVID away and attests again: with a join token, which
/// was spent, it stops for good. Found by the agent crash scenario, whose entry churn created
/// and deleted entries. Creates and deletes entries until the agent falls over (usually
/// within seconds), for at most 60 s.
#[test]
#[ignore = "known bug: with this test's second-scale lifetimes the hub renewed the agent SVID with under a second left (its CA expires between housekeeping ticks), and the agent attests again; the hub now answers NOT_FOUND for a deleted entry, which the agent treats as a refusal of that entry only"]
fn agent_survives_an_entry_deleted_while_it_signs() {
    use std::time::{Duration, Instant};

    let dir = support::Scratch::new();
    let setup = agent::Setup::new(dir.path());
    let socket = &setup.hub_files.socket;
    let mut agent = setup.start_agent(&dir.path().join("agent.log"));
    setup.wait_serving(&mut agent);
    let uid = rustix::process::getuid().as_raw();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    while Instant::now() < deadline {
        rounds += 1;
        let created = support::admin_ok(
            socket,
            &[
                "entry",
                "create",
                "--spiffe-id",
                &format!("spiffe://node.test/short-lived/{rounds}"),
                "--parent-id",
                &setup.agent_id,
                "--selector",
                &format!("unix:uid:{uid}"),
            ],
        );
        support::admin_ok(
            socket,
            &[
                "entry",
                "delete",
                "--entry-id",
                created["id"].as_str().unwrap(),
            ],
        );
        agent.assert_running();
        let log = std::fs::read_to_string(agent.log()).unwrap();
        assert!(
            !log.contains("no longer accepts this agent's SVID"),
            "after {rounds} entries created and deleted, the agent took the refusal of one \
             entry for a refusal of itself:\n{}",
            agent.log_tail()
        );
    }
    eprintln!("{rounds} entries created and deleted; the agent kept its SVID");
}

/// Known bug, kept out of the default run until it is fixed: a hub killed while it refreshes a
/// federation relationship leaves the refresh lease held by its dead process (lease owners are
/// per process, `FederationOptions::replica_id` in `hub/src/federation/options.rs`; leases last
/// 120 s). The restarted hub neither refreshes that relationship nor lets an operator force it
/// (`federation refresh` is refused, naming the dead process as the one refreshing) until the
/// lease lapses. Here the foreign endpoint accepts connections and never answers, so the
/// refresh is surely in flight at the kill. Takes about 5 s.
#[test]
#[ignore = "known bug: a refresh lease held by a killed hub blocks the relationship for 120 s"]
fn federation_refresh_is_not_blocked_by_a_killed_hub() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Stops the silent endpoint also when the test fails (the scope waits for it).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    let dir = support::Scratch::new();
    let files = hub::HubFiles::write(
        dir.path(),
        "crash.test",
        "[federation]\nmin_refresh = \"1s\"\n",
    );
    // A bundle endpoint that accepts and never answers, until told to stop (then: refused).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    silent.set_nonblocking(true).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let stopper = Stop(&stop);
        scope.spawn(|| {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok((connection, _)) = silent.accept() {
                    held.push(connection);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let log = dir.path().join("hub.log");
        let mut hub_process = files.start(&log);
        files.wait_ready(&hub_process);
        support::admin_ok(
            &files.socket,
            &[
                "federation",
                "create",
                "--trust-domain",
                "foreign.test",
                "--bundle-endpoint-url",
                &format!("https://{address}/"),
                "--bundle-endpoint-profile",
                "https_web",
            ],
        );
        // The hub refreshes at once and waits for the silent endpoint.
        std::thread::sleep(Duration::from_secs(2));
        hub_process.kill9();
        drop(stopper);
        let hub_process = files.start(&log);
        files.wait_ready(&hub_process);
        let refresh = support::admin(
            &files.socket,
            &["federation", "refresh", "--trust-domain", "foreign.test"],
        );
        let error = refresh.err().unwrap_or_default();
        assert!(
            !error.contains("already running"),
            "after the restart, the refresh is still leased to the killed process: {error}"
        );
        drop(hub_process);
    });
}

/// Known bug, kept out of the default run until it is fixed: the registry stores at most 64
/// authorities per replica (`MAX_REPLICA_AUTHORITIES`, `registry/src/own_bundle.rs`), but the
/// CA adds an X.509 CA and a JWT key at every forced rotation and keeps each until it expires
/// (`CaManager::prepare_next`, `hub/src/ca.rs`). From the 33rd rotation within one `ca.ttl`,
/// `Hub::rotate` (`hub/src/state.rs`) stores and activates the new keys, then fails to publish
/// them: the hub signs with keys its bundle does not hold. Every housekeeping tick fails the
/// same way from then on and returns before it renews the hub's own SVID, which expires.
/// Found by the agent crash scenario, whose rotations were too frequent for its `ca.ttl`.
/// Takes a few seconds.
#[test]
#[ignore = "known bug: forced rotations past 64 authorities sign with keys the bundle lacks"]
fn forced_rotations_never_sign_with_unpublished_keys() {
    let dir = support::Scratch::new();
    let files = hub::HubFiles::write(dir.path(), "crash.test", "");
    let hub_process = files.start(&dir.path().join("hub.log"));
    files.wait_ready(&hub_process);
    let trust_domain = fedhub_core::TrustDomain::new("crash.test").unwrap();
    let ca_dir = files.data_dir.join("ca");
    for rotation in 1..=40 {
        let outcome = support::admin(&files.socket, &["bundle", "rotate", "--activate"]);
        let state = inspect::CaState::read(&ca_dir).unwrap();
        let served = inspect::fetch_bundle_endpoint(files.bundle_endpoint, &trust_domain).unwrap();
        let active = state.active_jwt().unwrap();
        assert!(
            served.bundle.jwt_authority(&active.id).is_some(),
            "after rotation {rotation} ({}), the active JWT key {} is not in the served bundle \
             ({} JWT keys)",
            outcome.map_or_else(|e| e, |_| "succeeded".to_owned()),
            active.id,
            served.bundle.jwt_authorities().len()
        );
    }
}
