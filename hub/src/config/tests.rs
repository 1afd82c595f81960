use super::*;

#[test]
fn minimal_config_gets_sane_defaults() {
    let config = HubConfig::from_toml("trust_domain = \"alpha.test\"").unwrap();
    assert_eq!(config.trust_domain.name(), "alpha.test");
    assert_eq!(
        config.database_url,
        "sqlite:///var/lib/fedhub/hub/registry.db"
    );
    assert_eq!(
        config.admin_socket,
        Path::new("/var/lib/fedhub/hub/admin/admin.sock")
    );
    let endpoint = config.bundle_endpoint.unwrap();
    assert_eq!(endpoint.refresh_hint, Duration::from_secs(300));
    assert_eq!(
        endpoint.profile,
        ServingProfile::HttpsSpiffe {
            spiffe_id: SpiffeId::parse("spiffe://alpha.test/fedhub/hub").unwrap()
        }
    );
    assert_eq!(config.ca.ttl, Duration::from_secs(86_400));
    assert_eq!(config.x509_svid_ttl, Duration::from_secs(3600));
    assert_eq!(config.jwt_svid_ttl, Duration::from_secs(300));
    assert_eq!(config.ca.key_type, KeyType::EcP256);
    assert_eq!(config.jwt_key_type, KeyType::EcP256);
    assert!(config.oidc.is_none());
    assert!(config.health_address.is_some());
}

#[test]
fn full_config_parses() {
    let config = HubConfig::from_toml(
        r#"
        trust_domain = "alpha.test"
        data_dir = "/tmp/hub"
        database_url = "postgres://postgres@127.0.0.1/test"
        admin_uids = [1000]
        [agent_api]
        address = "127.0.0.1:9081"
        [bundle_endpoint]
        address = "127.0.0.1:9443"
        profile = "https_web"
        cert_file = "/etc/fedhub/web.pem"
        key_file = "/etc/fedhub/web.key"
        refresh_hint = "1m"
        [oidc]
        enabled = true
        issuer = "https://oidc.alpha.test"
        cert_file = "/etc/fedhub/oidc.pem"
        key_file = "/etc/fedhub/oidc.key"
        [ca]
        ttl = "48h"
        key_type = "rsa-2048"
        [svid]
        x509_ttl = "2h"
        jwt_ttl = "10m"
        jwt_key_type = "rsa-2048"
        "#,
    )
    .unwrap();
    assert_eq!(config.admin_uids, [1000]);
    assert_eq!(config.ca.key_type, KeyType::Rsa2048);
    assert_eq!(config.jwt_key_type, KeyType::Rsa2048);
    assert_eq!(config.x509_svid_ttl, Duration::from_secs(7200));
    let endpoint = config.bundle_endpoint.unwrap();
    assert!(matches!(endpoint.profile, ServingProfile::HttpsWeb { .. }));
    assert_eq!(endpoint.refresh_hint, Duration::from_secs(60));
    assert_eq!(config.oidc.unwrap().issuer, "https://oidc.alpha.test");
}

#[test]
fn federation_section_sets_the_schedule_and_fetch_limits() {
    let defaults = HubConfig::from_toml("trust_domain = \"a.test\"")
        .unwrap()
        .federation;
    assert_eq!(defaults, FederationOptions::default());
    assert_eq!(defaults.default_refresh, Duration::from_secs(300));
    assert_eq!(defaults.min_refresh, Duration::from_secs(30));
    assert_eq!(defaults.max_refresh, Duration::from_secs(3600));
    assert!((defaults.jitter - 0.1).abs() < f64::EPSILON);
    assert_eq!(defaults.backoff_base, Duration::from_secs(5));
    assert_eq!(defaults.backoff_cap, Duration::from_secs(300));
    assert_eq!(defaults.concurrency, 32);
    assert_eq!(
        defaults.fetch_options(),
        fedhub_bundle_endpoint::FetchOptions::default()
    );

    let config = HubConfig::from_toml(
        r#"
        trust_domain = "a.test"
        [federation]
        default_refresh = "10m"
        min_refresh = "1m"
        max_refresh = "2h"
        jitter = 0.25
        backoff_base = "2s"
        backoff_cap = "1m"
        concurrency = 128
        connect_timeout = "2s"
        fetch_timeout = "10s"
        max_body_bytes = 65536
        "#,
    )
    .unwrap()
    .federation;
    assert_eq!(
        config,
        FederationOptions {
            default_refresh: Duration::from_secs(600),
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(7200),
            jitter: 0.25,
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(60),
            concurrency: 128,
            connect_timeout: Duration::from_secs(2),
            fetch_timeout: Duration::from_secs(10),
            max_body_bytes: 65536,
            ..FederationOptions::default()
        }
    );
}

#[test]
#[expect(
    clippy::result_large_err,
    reason = "figment's Jail API returns its own error"
)]
fn federation_keys_take_environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    std::fs::write(&path, "trust_domain = \"alpha.test\"\n").unwrap();
    figment::Jail::expect_with(|jail| {
        jail.set_env("FEDHUB_HUB__FEDERATION__CONCURRENCY", "64");
        jail.set_env("FEDHUB_HUB__FEDERATION__MIN_REFRESH", "45s");
        let config = HubConfig::load(&path).unwrap();
        assert_eq!(config.federation.concurrency, 64);
        assert_eq!(config.federation.min_refresh, Duration::from_secs(45));
        jail.set_env("FEDHUB_HUB__FEDERATION__JITTER", "2");
        let error = HubConfig::load(&path).unwrap_err().to_string();
        assert!(
            error.starts_with("federation.jitter (environment FEDHUB_HUB__FEDERATION__JITTER): 2 "),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn x509pop_is_off_unless_configured() {
    let config = HubConfig::from_toml("trust_domain = \"a.test\"").unwrap();
    assert_eq!(config.node_attestation.x509pop, None);
    let config = HubConfig::from_toml(
        "trust_domain = \"a.test\"\n[node_attestation.x509pop]\nca_bundle_file = \"/etc/ca.pem\"",
    )
    .unwrap();
    assert_eq!(
        config.node_attestation.x509pop.unwrap().ca_bundle_file,
        Path::new("/etc/ca.pem")
    );
    let error = error_of("trust_domain = \"a.test\"\n[node_attestation.x509pop]\n");
    assert!(error.contains("ca_bundle_file"), "{error}");
}

#[test]
fn shipped_example_config_is_valid() {
    let text = include_str!("../../hub.example.toml");
    let config = HubConfig::from_toml(text).unwrap();
    assert_eq!(config.trust_domain.name(), "example.org");
    assert_eq!(
        config.federation,
        FederationOptions::default(),
        "the example shows the defaults"
    );
    // ...all of them: every key of the section is in the example.
    let keys = |figment: Figment, section: Option<&str>| {
        let table: std::collections::BTreeMap<String, figment::value::Value> = match section {
            Some(section) => figment.extract_inner(section),
            None => figment.extract(),
        }
        .unwrap();
        table.into_keys().collect::<Vec<_>>()
    };
    let example = keys(Figment::from(Toml::string(text)), Some("federation"));
    let all = keys(
        Figment::from(figment::providers::Serialized::defaults(
            FederationOptions::default(),
        )),
        None,
    );
    assert_eq!(example, all, "[federation] keys of hub.example.toml");
    assert_eq!(
        config.limits,
        ConnectionLimits::default(),
        "the example shows the defaults"
    );
    assert_eq!(
        config.agent_api,
        HubConfig::from_toml("trust_domain = \"a.test\"")
            .unwrap()
            .agent_api,
        "the example shows the defaults"
    );
}

#[test]
fn agent_api_fairness_limits_have_defaults_and_refuse_zero() {
    let defaults = HubConfig::from_toml("trust_domain = \"a.test\"")
        .unwrap()
        .agent_api;
    assert_eq!(defaults.sync_streams_per_agent, 2);
    assert_eq!(defaults.syncs_per_minute, 60);
    assert_eq!(defaults.renewals_per_minute, 60);
    let set = HubConfig::from_toml(
        "trust_domain = \"a.test\"\n[agent_api]\nsync_streams_per_agent = 1\n\
         syncs_per_minute = 5\nrenewals_per_minute = 3",
    )
    .unwrap()
    .agent_api;
    assert_eq!(
        (
            set.sync_streams_per_agent,
            set.syncs_per_minute,
            set.renewals_per_minute
        ),
        (1, 5, 3)
    );
    for key in [
        "sync_streams_per_agent",
        "syncs_per_minute",
        "renewals_per_minute",
    ] {
        let error = error_of(&format!(
            "trust_domain = \"a.test\"\n[agent_api]\n{key} = 0"
        ));
        assert!(error.contains(&format!("agent_api.{key}")), "{error}");
        assert!(error.contains("at least 1"), "{error}");
    }
}

#[test]
fn limits_section_sets_timeouts_and_caps() {
    let defaults = HubConfig::from_toml("trust_domain = \"a.test\"")
        .unwrap()
        .limits;
    assert_eq!(
        defaults,
        ConnectionLimits {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 100,
            max_connections: 10_000,
            max_connections_per_source: 256,
        }
    );
    let config = HubConfig::from_toml(
        r#"
        trust_domain = "a.test"
        [limits]
        handshake_timeout = "5s"
        idle_timeout = "500ms"
        keepalive_interval = "1m"
        keepalive_timeout = "20s"
        max_concurrent_streams = 16
        max_connections = 100
        max_connections_per_source = 100
        "#,
    )
    .unwrap()
    .limits;
    assert_eq!(
        config,
        ConnectionLimits {
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_millis(500),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 16,
            max_connections: 100,
            max_connections_per_source: 100,
        }
    );
}

#[test]
fn limits_errors_name_the_key_and_the_fix() {
    let cases = [
        (
            "[limits]\nidle_timeout = \"0s\"",
            "limits.idle_timeout: must be longer than zero",
        ),
        (
            "[limits]\nhandshake_timeout = \"0s\"",
            "limits.handshake_timeout: must be longer than zero",
        ),
        (
            "[limits]\nkeepalive_interval = \"0s\"",
            "limits.keepalive_interval: must be longer than zero",
        ),
        (
            "[limits]\nkeepalive_timeout = \"0s\"",
            "limits.keepalive_timeout: must be longer than zero",
        ),
        (
            "[limits]\nmax_concurrent_streams = 0",
            "limits.max_concurrent_streams: 0 is out of range: give at least 1",
        ),
        (
            "[limits]\nmax_connections = 0",
            "limits.max_connections: 0 is out of range: give at least 1",
        ),
        (
            "[limits]\nmax_connections_per_source = 0",
            "limits.max_connections_per_source: 0 is out of range",
        ),
        (
            "[limits]\nmax_connections = 10\nmax_connections_per_source = 11",
            "limits.max_connections_per_source: 11 is more than limits.max_connections (10)",
        ),
        ("[limits]\nmax_connections = -1", "limits.max_connections"),
        ("[limits]\nidle = \"1s\"", "idle"),
    ];
    for (section, expected) in cases {
        let error = error_of(&format!("trust_domain = \"a.test\"\n{section}"));
        assert!(error.contains(expected), "{section:?}: got {error:?}");
    }
}

fn error_of(text: &str) -> String {
    HubConfig::from_toml(text).unwrap_err().to_string()
}

#[test]
fn errors_name_the_key_and_the_fix() {
    let cases = [
        ("", "trust_domain: is required"),
        (
            "trust_domain = \"Alpha.test\"",
            "trust_domain: \"Alpha.test\" is not valid",
        ),
        (
            "trust_domain = \"spiffe://alpha.test\"",
            "give the bare name",
        ),
        ("trust_domain = \"a.test\"\nunknown_key = 1", "unknown_key"),
        (
            "trust_domain = \"a.test\"\n[ca]\nkey_type = \"ed25519\"",
            "ca.key_type: unknown key type",
        ),
        ("trust_domain = \"a.test\"\n[ca]\nttl = \"soon\"", "ca.ttl"),
        (
            "trust_domain = \"a.test\"\n[bundle_endpoint]\nprofile = \"https\"",
            "bundle_endpoint.profile: \"https\" is not a profile",
        ),
        (
            "trust_domain = \"a.test\"\n[bundle_endpoint]\nprofile = \"https_web\"",
            "bundle_endpoint.cert_file: profile https_web needs",
        ),
        (
            "trust_domain = \"a.test\"\n[bundle_endpoint]\nspiffe_id = \"spiffe://b.test/x\"",
            "bundle_endpoint.spiffe_id: must be an ID of a.test under /fedhub/",
        ),
        (
            "trust_domain = \"a.test\"\n[bundle_endpoint]\nspiffe_id = \"spiffe://a.test/payments\"",
            "use spiffe://a.test/fedhub/hub, the default",
        ),
        (
            "trust_domain = \"a.test\"\n[oidc]\nenabled = true",
            "oidc.issuer: is required",
        ),
        (
            "trust_domain = \"a.test\"\n[oidc]\nenabled = true\nissuer = \"https://o.a.test\"",
            "oidc.allow_insecure_http",
        ),
        (
            "trust_domain = \"a.test\"\n[svid]\nx509_ttl = \"20h\"",
            "svid.x509_ttl: 20h is more than half of ca.ttl",
        ),
        (
            "trust_domain = \"a.test\"\ndatabase_url = \"mysql://x\"",
            "database_url: must start with",
        ),
        (
            "trust_domain = \"a.test\"\n[agent_api]\naddress = \"nowhere\"",
            "agent_api.address",
        ),
    ];
    for (text, expected) in cases {
        let error = error_of(text);
        assert!(error.contains(expected), "{text:?}: got {error:?}");
    }
}

#[test]
fn federation_errors_name_the_key_and_the_fix() {
    let cases = [
        (
            "trust_domain = \"a.test\"\n[federation]\nmin_refresh = \"2h\"",
            "federation.min_refresh: 2h is longer than federation.max_refresh (1h)",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\nmax_refresh = \"0s\"",
            "federation.max_refresh: must be longer than zero",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\ndefault_refresh = \"0s\"",
            "federation.default_refresh: must be longer than zero",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\njitter = 1.5",
            "federation.jitter: 1.5 is not a fraction in [0, 1)",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\njitter = -0.1",
            "federation.jitter: -0.1 is not a fraction",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\nbackoff_base = \"10m\"",
            "federation.backoff_base: 10m is longer than federation.backoff_cap (5m)",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\nconcurrency = 0",
            "federation.concurrency: 0 is out of range",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\nconcurrency = 100000",
            "federation.concurrency: 100000 is out of range",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\nconnect_timeout = \"1m\"",
            "federation.connect_timeout: 1m is longer than federation.fetch_timeout (30s)",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\nfetch_timeout = \"1h\"",
            "federation.fetch_timeout: 1h is longer than 10m",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\nmax_body_bytes = 10",
            "federation.max_body_bytes: 10 is out of range",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\nmin_refresh = \"often\"",
            "federation.min_refresh",
        ),
        (
            "trust_domain = \"a.test\"\n[federation]\nlease = \"1m\"",
            "lease",
        ),
    ];
    for (text, expected) in cases {
        let error = error_of(text);
        assert!(error.contains(expected), "{text:?}: got {error:?}");
    }
}

#[test]
#[expect(
    clippy::result_large_err,
    reason = "figment's Jail API returns its own error"
)]
fn load_reports_missing_file_and_applies_env_overrides() {
    let missing = HubConfig::load(Path::new("/nonexistent/hub.toml")).unwrap_err();
    assert!(missing.to_string().contains("--config"), "{missing}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    std::fs::write(&path, "trust_domain = \"alpha.test\"\n").unwrap();
    figment::Jail::expect_with(|jail| {
        jail.set_env("FEDHUB_HUB__SVID__JWT_TTL", "2m");
        let config = HubConfig::load(&path).unwrap();
        assert_eq!(config.jwt_svid_ttl, Duration::from_secs(120));
        Ok(())
    });
}

#[test]
#[expect(
    clippy::result_large_err,
    reason = "figment's Jail API returns its own error"
)]
fn problems_say_whether_the_file_or_an_environment_variable_gave_the_value() {
    use fedhub_config::Origin;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    std::fs::write(
        &path,
        "trust_domain = \"alpha.test\"\n[svid]\njwt_ttl = \"0s\"\n",
    )
    .unwrap();
    let problems = HubConfig::load(&path).unwrap_err().problems();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key.as_deref(), Some("svid.jwt_ttl"));
    assert_eq!(problems[0].origin, Some(Origin::File(path.clone())));
    assert!(problems[0].message.contains("e.g. 1h30m"), "{problems:?}");
    figment::Jail::expect_with(|jail| {
        // The environment wins over the file, and is named as the origin.
        jail.set_env("FEDHUB_HUB__SVID__JWT_TTL", "0s");
        std::fs::write(&path, "trust_domain = \"alpha.test\"\n").unwrap();
        let problems = HubConfig::load(&path).unwrap_err().problems();
        assert_eq!(
            problems[0].origin,
            Some(Origin::Env("FEDHUB_HUB__SVID__JWT_TTL".into()))
        );
        jail.set_env("FEDHUB_HUB__SVID__JWT_TTL", "5m");
        jail.set_env("FEDHUB_HUB__BUNDLE_ENDPOINT__REFRESH_HNT", "5m");
        let error = HubConfig::load(&path).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "bundle_endpoint.refresh_hnt (environment \
                 FEDHUB_HUB__BUNDLE_ENDPOINT__REFRESH_HNT): unknown key `refresh_hnt`; did you \
                 mean `refresh_hint`?"
            ),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn unknown_keys_suggest_the_nearest_and_durations_show_the_format() {
    let error = error_of("trust_domain = \"a.test\"\n[svid]\njwt_tll = \"5m\"");
    assert!(
        error.starts_with("svid.jwt_tll: unknown key `jwt_tll`; did you mean `jwt_ttl`?"),
        "{error}"
    );
    let error = error_of("trust_domian = \"a.test\"");
    assert!(error.contains("did you mean `trust_domain`?"), "{error}");
    let error = error_of("trust_domain = \"a.test\"\n[ca]\nttl = \"one day\"");
    assert!(
        error.starts_with(
            "ca.ttl: invalid value string \"one day\", expected a duration, e.g. 1h30m"
        ),
        "{error}"
    );
    let error = error_of("trust_domain = \"a.test\"\n[ca]\nttl = 3600");
    assert!(error.contains("e.g. 1h30m"), "{error}");
}

#[test]
fn check_reads_the_files_the_start_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "trust_domain = \"alpha.test\"\n\
             [bundle_endpoint]\nprofile = \"https_web\"\ncert_file = {missing:?}\n\
             key_file = {missing:?}\n\
             [oidc]\nenabled = true\nissuer = \"https://oidc.test/?q\"\n\
             cert_file = {not_pem:?}\nkey_file = {not_pem:?}\n\
             [ca]\nupstream_cert_file = {missing:?}\nupstream_key_file = {missing:?}\n\
             [node_attestation.x509pop]\nca_bundle_file = {not_pem:?}\n"
        ),
    )
    .unwrap();
    // `load` checks no file: the start reads them later.
    HubConfig::load(&path).unwrap();
    let problems = HubConfig::check(&path).unwrap_err().problems();
    let keys: Vec<_> = problems.iter().filter_map(|p| p.key.as_deref()).collect();
    assert_eq!(
        keys,
        [
            "bundle_endpoint.cert_file",
            "oidc.cert_file",
            "oidc.issuer",
            "ca.upstream_cert_file",
            "node_attestation.x509pop.ca_bundle_file",
        ],
        "{problems:#?}"
    );
    for problem in &problems {
        assert_eq!(
            problem.origin,
            Some(fedhub_config::Origin::File(path.clone())),
            "{problem}"
        );
        // The key is said once.
        let key = problem.key.as_deref().unwrap();
        assert!(!problem.message.starts_with(key), "{problem}");
    }
    assert!(problems[0].message.contains("missing.pem"), "{problems:#?}");

    std::fs::write(&path, "trust_domain = \"alpha.test\"\n").unwrap();
    HubConfig::check(&path).unwrap();
}

#[test]
fn the_printed_example_is_the_shipped_file() {
    assert_eq!(EXAMPLE, include_str!("../../hub.example.toml"));
    HubConfig::from_toml(EXAMPLE).unwrap();
}
