//! Federation through a relay on a real topology: four `fedhub hub run` processes on loopback
//! (a.test, b.test, c.test and the relay relay.test) and an agent of a.test.
//!
//! The relay federates directly with b.test and c.test and serves their bundles as a bundle
//! map (`[[bundle_endpoint.bundle_maps]]`). a.test federates with the relay directly (to
//! authenticate it over `https_spiffe`) and with b.test and c.test only through it
//! (`--via-relay`). Checked: a.test's workload that federates with c.test gets c.test's bundle
//! over the Workload API; c.test's CA rotation reaches it through the relay; and a relay that
//! misbehaves (a test server serving crafted maps over `https_web` with a test CA, put in
//! place of the relay for c.test) is refused for c.test alone when it substitutes a key, drops
//! c.test, serves a lower sequence, while a trust domain it adds is ignored; b.test and the
//! workload's bundles stay as they were throughout.
#![expect(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "test code: a failed step is a failed test, and scenarios read top to bottom"
)]

#[path = "crash/support.rs"]
#[allow(
    dead_code,
    reason = "shared with the crash scenarios, which use all of it"
)]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use fedhub_core::bundle::BundleMap;
use fedhub_core::{Bundle, TrustDomain};
use serde_json::Value;

use support::{FEDHUB, Proc, Scratch, admin, admin_ok, fedhub, free_port, retry};

/// Longest any propagation may take here: refreshes run every second.
const PATIENCE: Duration = Duration::from_secs(60);
const MAP_PATH: &str = "/maps/partners";
const WORKLOAD_ID: &str = "spiffe://a.test/workload";

/// One `fedhub hub run` with its files.
struct HubProc {
    trust_domain: &'static str,
    socket: PathBuf,
    bundle_endpoint: SocketAddr,
    agent_api: SocketAddr,
    process: Proc,
}

impl HubProc {
    /// Starts the hub of `trust_domain` in `base/<trust_domain>`, refreshing every second,
    /// with `extra` appended to its configuration; waits until its admin socket answers.
    fn start(base: &Path, trust_domain: &'static str, extra: &str) -> Self {
        let dir = base.join(trust_domain);
        std::fs::create_dir_all(&dir).unwrap();
        let data_dir = dir.join("data");
        let agent_api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let bundle_endpoint: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.join("hub.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"{trust_domain}\"\ndata_dir = \"{}\"\n\n\
                 [agent_api]\naddress = \"{agent_api}\"\n\n\
                 [bundle_endpoint]\naddress = \"{bundle_endpoint}\"\nrefresh_hint = \"1s\"\n\n\
                 [health]\nenabled = false\n\n\
                 [federation]\ndefault_refresh = \"1s\"\nmin_refresh = \"1s\"\n\
                 max_refresh = \"2s\"\nbackoff_base = \"1s\"\nbackoff_cap = \"2s\"\n\n{extra}",
                data_dir.display()
            ),
        )
        .unwrap();
        let mut command = Command::new(FEDHUB);
        command
            .args(["hub", "run", "--config"])
            .arg(&config)
            .env("FEDHUB_LOG", "info")
            .env_remove("FEDHUB_LOG_FORMAT");
        let process = Proc::spawn(
            &format!("the hub of {trust_domain}"),
            command,
            &dir.join("hub.log"),
        );
        let hub = Self {
            trust_domain,
            socket: data_dir.join("admin").join("admin.sock"),
            bundle_endpoint,
            agent_api,
            process,
        };
        retry(PATIENCE, || admin(&hub.socket, &["bundle", "show"])).unwrap_or_else(|e| {
            panic!(
                "the hub of {trust_domain} did not start: {e}\n{}",
                hub.process.log_tail()
            )
        });
        hub
    }

    fn td(&self) -> TrustDomain {
        TrustDomain::new(self.trust_domain).unwrap()
    }

    fn hub_id(&self) -> String {
        format!("spiffe://{}/fedhub/hub", self.trust_domain)
    }

    fn ok(&self, args: &[&str]) -> Value {
        admin_ok(&self.socket, args)
    }

    /// Its own bundle, parsed, and written to `dir` as a bootstrap file.
    fn own_bundle(&self, dir: &Path) -> (Bundle, String) {
        let document = self.ok(&["bundle", "show"])["document"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = dir.join(format!("{}.json", self.trust_domain));
        std::fs::write(&path, &document).unwrap();
        (
            Bundle::from_json(self.td(), document.as_bytes()).unwrap(),
            path.display().to_string(),
        )
    }

    /// Federates directly with `peer` over `https_spiffe`, bootstrapped with its bundle.
    fn federate_directly(&self, peer: &Self, dir: &Path) {
        let (_, bootstrap) = peer.own_bundle(dir);
        self.ok(&[
            "federation",
            "create",
            "--trust-domain",
            peer.trust_domain,
            "--bundle-endpoint-url",
            &format!("https://{}/", peer.bundle_endpoint),
            "--bundle-endpoint-profile",
            "https_spiffe",
            "--endpoint-spiffe-id",
            &peer.hub_id(),
            "--trust-domain-bundle",
            &bootstrap,
        ]);
    }

    /// The relationship with `trust_domain` as `federation show` has it.
    fn relationship(&self, trust_domain: &str) -> Value {
        self.ok(&["federation", "show", "--trust-domain", trust_domain])
    }

    /// The stored bundle of `trust_domain`, if any.
    fn stored(&self, trust_domain: &str) -> Option<Bundle> {
        let listed = self.ok(&["bundle", "list"]);
        listed.as_array().unwrap().iter().find_map(|view| {
            (view["trust_domain"] == trust_domain).then(|| {
                Bundle::from_json(
                    TrustDomain::new(trust_domain).unwrap(),
                    view["document"].as_str().unwrap().as_bytes(),
                )
                .unwrap()
            })
        })
    }
}

/// The bundles a.test's workload gets over the Workload API.
fn workload_bundles(agent_socket: &Path) -> Result<Value, String> {
    fedhub(&[
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
    .json()
}

/// The bundle of `trust_domain` in a Workload API answer.
fn served(report: &Value, trust_domain: &TrustDomain) -> Option<Bundle> {
    let document = report.get(trust_domain.name())?;
    Bundle::from_json(trust_domain.clone(), document.to_string().as_bytes()).ok()
}

/// Whether `bundle` holds exactly the X.509 authorities of `expected`.
fn same_cas(bundle: &Bundle, expected: &Bundle) -> bool {
    bundle.x509_authorities() == expected.x509_authorities()
}

/// The misbehaving relay: an `https_web` server on loopback with a test CA, serving whatever
/// map the test sets at [`MAP_PATH`].
struct RogueRelay {
    url: String,
    ca_file: String,
    map: Arc<Mutex<String>>,
    _runtime: tokio::runtime::Runtime,
}

impl RogueRelay {
    fn start(dir: &Path) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rogue relay test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let ca_file = dir.join("rogue-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
        let cert = params.signed_by(&key, &issuer).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let map = Arc::new(Mutex::new(BundleMap::new().to_json()));
        let served = Arc::clone(&map);
        let router = Router::new().route(
            MAP_PATH,
            axum::routing::get(move || {
                let body = served.lock().unwrap().clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        runtime.spawn(fedhub_serve::serve(
            listener,
            Some(Arc::new(tls)),
            router,
            fedhub_serve::ServeLimits::default(),
            std::future::pending(),
        ));
        Self {
            url: format!("https://{address}{MAP_PATH}"),
            ca_file: ca_file.display().to_string(),
            map,
            _runtime: runtime,
        }
    }

    fn serve(&self, bundles: &[&Bundle]) {
        let map: BundleMap = bundles.iter().map(|bundle| (*bundle).clone()).collect();
        *self.map.lock().unwrap() = map.to_json();
    }
}

#[test]
fn a_hub_federates_through_a_relay_and_refuses_a_misbehaving_one_per_trust_domain() {
    let scratch = Scratch::new();
    let dir = scratch.path();
    let b = HubProc::start(dir, "b.test", "");
    let c = HubProc::start(dir, "c.test", "");
    let relay = HubProc::start(
        dir,
        "relay.test",
        &format!(
            "[[bundle_endpoint.bundle_maps]]\npath = \"{MAP_PATH}\"\n\
             trust_domains = [\"b.test\", \"c.test\"]\n"
        ),
    );
    let a = HubProc::start(dir, "a.test", "");

    // The relay federates directly with b.test and c.test; a.test with the relay, and with
    // b.test and c.test only through it.
    relay.federate_directly(&b, dir);
    relay.federate_directly(&c, dir);
    a.federate_directly(&relay, dir);
    let relay_url = format!("https://{}{MAP_PATH}", relay.bundle_endpoint);
    for peer in [&b, &c] {
        let created = a.ok(&[
            "federation",
            "create",
            "--trust-domain",
            peer.trust_domain,
            "--bundle-endpoint-url",
            &relay_url,
            "--bundle-endpoint-profile",
            "https_spiffe",
            "--endpoint-spiffe-id",
            &relay.hub_id(),
            "--via-relay",
        ]);
        assert_eq!(created["source"], "relay");
    }
    let (c_bundle, _) = c.own_bundle(dir);
    let (b_bundle, _) = b.own_bundle(dir);
    retry(PATIENCE, || {
        for (peer, expected) in [(&b, &b_bundle), (&c, &c_bundle)] {
            let shown = a.relationship(peer.trust_domain);
            let stored = a.stored(peer.trust_domain);
            if !shown["status"]["last_error"].is_null()
                || !stored.as_ref().is_some_and(|s| same_cas(s, expected))
            {
                return Err(format!("{}: {shown}", peer.trust_domain));
            }
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("a.test never got b.test and c.test through the relay: {e}"));
    let shown = fedhub(&[
        "federation",
        "show",
        "--trust-domain",
        "c.test",
        "--admin-socket",
        a.socket.to_str().unwrap(),
    ]);
    assert!(
        shown.stdout.contains(&format!("via relay {relay_url}")),
        "{}",
        shown.stdout
    );

    // a.test's agent and a workload that federates with c.test.
    let uid = rustix::process::getuid().as_raw();
    let token = a.ok(&["token", "generate", "--ttl", "10m"]);
    let agent_id = token["spiffe_id"].as_str().unwrap();
    a.ok(&[
        "entry",
        "create",
        "--spiffe-id",
        WORKLOAD_ID,
        "--parent-id",
        agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
        "--federates-with",
        "c.test",
    ]);
    let (_, a_bundle_file) = a.own_bundle(dir);
    let agent_socket = dir.join("agent-socket").join("agent.sock");
    let agent_config = dir.join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "trust_domain = \"a.test\"\nhub_address = \"{}\"\ntrust_bundle_file = \"{a_bundle_file}\"\n\
             data_dir = \"{}\"\nsocket_path = \"{}\"\n",
            a.agent_api,
            dir.join("agent").display(),
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
    let agent = Proc::spawn("the agent of a.test", command, &dir.join("agent.log"));
    let c_td = c.td();
    retry(PATIENCE, || {
        let report = workload_bundles(&agent_socket)?;
        served(&report, &c_td)
            .filter(|served| same_cas(served, &c_bundle))
            .map(|_| ())
            .ok_or_else(|| format!("c.test not served yet: {report}"))
    })
    .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent.log_tail()));

    // c.test rotates its CA: the new authority reaches a.test's workload through the relay.
    c.ok(&["bundle", "rotate"]);
    let (rotated, _) = c.own_bundle(dir);
    assert_eq!(
        rotated.x509_authorities().len(),
        2,
        "old and new CA published"
    );
    retry(PATIENCE, || {
        let report = workload_bundles(&agent_socket)?;
        served(&report, &c_td)
            .filter(|served| same_cas(served, &rotated))
            .map(|_| ())
            .ok_or_else(|| format!("c.test's rotation not served yet: {report}"))
    })
    .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent.log_tail()));
    let good_c = a.stored("c.test").unwrap();
    let good_b = a.stored("b.test").unwrap();
    assert!(same_cas(&good_c, &rotated));

    // A misbehaving relay for c.test: a.test's c.test relationship now points at it; b.test
    // stays with the real relay.
    let rogue = RogueRelay::start(dir);
    a.ok(&[
        "federation",
        "update",
        "--trust-domain",
        "c.test",
        "--bundle-endpoint-url",
        &rogue.url,
        "--bundle-endpoint-profile",
        "https_web",
        "--extra-ca-file",
        &rogue.ca_file,
        "--via-relay",
    ]);
    let good_sequence = good_c.sequence().unwrap();
    let relay_bundle = relay.own_bundle(dir).0;
    // 1. A key of another trust domain (the relay's own CA) substituted into c.test's entry.
    let mut substituted = Bundle::new(c_td.clone());
    for authority in relay_bundle.x509_authorities() {
        substituted.add_x509_authority(authority.clone());
    }
    substituted.set_sequence(Some(good_sequence + 10));
    // 2. c.test dropped. 3. A lower sequence. 4. A trust domain a.test did not list, beside a
    // good c.test.
    let mut older = good_c.clone();
    older.set_sequence(Some(good_sequence - 1));
    let mut unlisted = Bundle::new(TrustDomain::new("d.test").unwrap());
    for authority in relay_bundle.x509_authorities() {
        unlisted.add_x509_authority(authority.clone());
    }
    let lower = format!("lower than the stored {good_sequence}");
    let cases: [(&str, Vec<&Bundle>, Option<&str>); 4] = [
        (
            "substituted key",
            vec![&good_b, &substituted],
            Some("which is not in the relationship's trust domain c.test"),
        ),
        (
            "c.test dropped",
            vec![&good_b],
            Some("serves no bundle for trust domain c.test"),
        ),
        (
            "lower sequence",
            vec![&good_b, &older],
            Some(lower.as_str()),
        ),
        ("trust domain added", vec![&good_c, &unlisted], None),
    ];
    for (case, bundles, refused) in cases {
        rogue.serve(&bundles);
        // Until the refresh sees this map: the hub reuses a relay's map for a few seconds, and
        // a scheduled refresh may hold the lease at the moment.
        retry(PATIENCE, || {
            let refresh = fedhub(&[
                "federation",
                "refresh",
                "--trust-domain",
                "c.test",
                "--admin-socket",
                a.socket.to_str().unwrap(),
            ]);
            match refused {
                Some(reason) if !refresh.ok() && refresh.stderr.contains(reason) => Ok(()),
                None if refresh.ok() => Ok(()),
                _ => Err(refresh.describe()),
            }
        })
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        let shown = a.relationship("c.test");
        match refused {
            Some(reason) => {
                let error = shown["status"]["last_error"].as_str().unwrap_or_default();
                assert!(error.contains(reason), "{case}: {shown}");
            }
            None => assert!(shown["status"]["last_error"].is_null(), "{case}: {shown}"),
        }
        let stored_c = a.stored("c.test").unwrap();
        assert!(
            same_cas(&stored_c, &good_c),
            "{case}: c.test's last good bundle is kept"
        );
        assert_eq!(stored_c.sequence(), Some(good_sequence), "{case}");
        assert!(
            a.stored("d.test").is_none(),
            "{case}: nothing stored for d.test"
        );
        let b_shown = a.relationship("b.test");
        assert!(
            b_shown["status"]["last_error"].is_null(),
            "{case}: {b_shown}"
        );
        assert!(same_cas(&a.stored("b.test").unwrap(), &good_b), "{case}");
        let report = workload_bundles(&agent_socket).unwrap();
        assert!(
            served(&report, &c_td).is_some_and(|served| same_cas(&served, &good_c)),
            "{case}: the workload keeps c.test's good bundle: {report}"
        );
    }
    assert_eq!(
        a.relationship("c.test")["status"]["consecutive_failures"],
        0,
        "the last case succeeded"
    );
    drop(agent);
    for hub in [a, relay, c, b] {
        let HubProc { mut process, .. } = hub;
        process.assert_running();
    }
}
