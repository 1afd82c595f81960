use super::*;

const MINIMAL: &str = "trust_domain = \"alpha.test\"\nhub_address = \"127.0.0.1:8081\"\n";

fn error_of(text: &str) -> String {
    AgentConfig::from_toml(text).unwrap_err().to_string()
}

#[test]
fn minimal_config_gets_defaults() {
    let config = AgentConfig::from_toml(MINIMAL).unwrap();
    assert_eq!(config.trust_domain.name(), "alpha.test");
    assert_eq!(config.hub_address.host(), "127.0.0.1");
    assert_eq!(config.hub_address.port(), 8081);
    assert_eq!(
        config.hub_spiffe_id.as_str(),
        "spiffe://alpha.test/fedhub/hub"
    );
    assert_eq!(config.trust_bootstrap, TrustBootstrap::None);
    assert_eq!(config.attestation, None);
    assert_eq!(config.data_dir, Path::new(DEFAULT_DATA_DIR));
    assert_eq!(
        config.socket_path,
        default_socket_path(crate::workload::effective_uid().unwrap())
    );
    assert_eq!(config.attestation_limits, AttestLimits::default());
}

#[test]
fn the_default_socket_is_in_run_for_root_only() {
    assert_eq!(default_socket_path(0), Path::new("/run/fedhub/agent.sock"));
    assert_eq!(
        default_socket_path(1000),
        Path::new("/tmp/fedhub/agent.sock")
    );
}

#[test]
fn full_config_parses() {
    let config = AgentConfig::from_toml(
        r#"
        trust_domain = "alpha.test"
        hub_address = "[::1]:9000"
        hub_spiffe_id = "spiffe://alpha.test/fedhub/hub-a"
        trust_bundle_file = "/etc/fedhub/bundle.json"
        data_dir = "/tmp/agent-data"
        socket_path = "/run/fedhub/agent.sock"
        [x509pop]
        cert_file = "/etc/node.pem"
        key_file = "/etc/node.key"
        "#,
    )
    .unwrap();
    assert_eq!(config.hub_address.host(), "::1");
    assert_eq!(config.hub_address.to_string(), "[::1]:9000");
    assert_eq!(
        config.hub_spiffe_id.as_str(),
        "spiffe://alpha.test/fedhub/hub-a"
    );
    assert_eq!(
        config.trust_bootstrap,
        TrustBootstrap::BundleFile("/etc/fedhub/bundle.json".into())
    );
    assert_eq!(
        config.attestation,
        Some(NodeAttestation::X509Pop {
            cert_file: "/etc/node.pem".into(),
            key_file: "/etc/node.key".into(),
        })
    );
    assert_eq!(config.socket_path, Path::new("/run/fedhub/agent.sock"));
}

#[test]
fn shipped_example_config_is_valid() {
    let config = AgentConfig::from_toml(include_str!("../../agent.example.toml")).unwrap();
    assert_eq!(config.trust_domain.name(), "example.org");
    assert!(matches!(
        config.attestation,
        Some(NodeAttestation::JoinToken(_))
    ));
    assert!(matches!(
        config.trust_bootstrap,
        TrustBootstrap::BundleFile(_)
    ));
    assert_eq!(
        config.socket_path,
        default_socket_path(crate::workload::effective_uid().unwrap())
    );
    assert_eq!(config.attestation_limits, AttestLimits::default());
    // Every commented-out key of the example, uncommented, is accepted with its default.
    let uncommented: String = include_str!("../../agent.example.toml")
        .lines()
        .skip_while(|line| !line.starts_with("[workload_attestation]"))
        .map(|line| {
            line.strip_prefix("# ")
                .filter(|l| l.contains(" = "))
                .unwrap_or(line)
        })
        .fold(String::new(), |mut text, line| {
            text.push_str(line);
            text.push('\n');
            text
        });
    let config = AgentConfig::from_toml(&format!(
        "trust_domain = \"a.test\"\nhub_address = \"h:1\"\njoin_token = \"t\"\n{uncommented}"
    ))
    .unwrap();
    assert_eq!(config.attestation_limits, AttestLimits::default());
}

#[test]
fn workload_attestation_limits_are_read_and_checked() {
    let base = "trust_domain = \"a.test\"\nhub_address = \"h:1\"\njoin_token = \"t\"\n";
    let config = AgentConfig::from_toml(&format!(
        "{base}[workload_attestation]\nmax_executable_mib = 1\ntimeout = \"2s\"\n\
         max_attestations_per_uid = 2\nmax_streams_per_uid = 3\n"
    ))
    .unwrap();
    assert_eq!(
        config.attestation_limits,
        AttestLimits {
            max_executable_bytes: 1 << 20,
            timeout: std::time::Duration::from_secs(2),
            max_attestations_per_uid: 2,
            max_streams_per_uid: 3,
        }
    );
    for (setting, key) in [
        (
            "max_executable_mib = 0",
            "workload_attestation.max_executable_mib",
        ),
        ("timeout = \"0s\"", "workload_attestation.timeout"),
        (
            "max_attestations_per_uid = 0",
            "workload_attestation.max_attestations_per_uid",
        ),
        (
            "max_streams_per_uid = 0",
            "workload_attestation.max_streams_per_uid",
        ),
    ] {
        let error = AgentConfig::from_toml(&format!("{base}[workload_attestation]\n{setting}\n"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with(key), "{setting}: {error}");
        assert!(error.contains("default"), "{setting}: {error}");
    }
}

#[test]
fn workload_api_connection_limits_are_read_and_checked() {
    let base = "trust_domain = \"a.test\"\nhub_address = \"h:1\"\njoin_token = \"t\"\n";
    let defaults = AgentConfig::from_toml(base).unwrap();
    assert_eq!(defaults.connection_limits, ConnectionLimits::default());
    assert!(defaults.connection_limits.idle_timeout <= Duration::from_secs(10));
    let config = AgentConfig::from_toml(&format!(
        "{base}[workload_api]\nidle_timeout = \"3s\"\nkeepalive_interval = \"4s\"\n\
         keepalive_timeout = \"5s\"\nmax_connections = 20\nmax_connections_per_uid = 7\n"
    ))
    .unwrap();
    assert_eq!(
        config.connection_limits,
        ConnectionLimits {
            idle_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(4),
            keepalive_timeout: Duration::from_secs(5),
            max_connections: 20,
            max_connections_per_uid: 7,
        }
    );
    for (setting, key, advice) in [
        (
            "idle_timeout = \"0s\"",
            "workload_api.idle_timeout",
            "longer than zero",
        ),
        (
            "max_connections = 0",
            "workload_api.max_connections",
            "at least 1",
        ),
        (
            "max_connections_per_uid = 0",
            "workload_api.max_connections_per_uid",
            "at least 1",
        ),
        (
            "max_connections = 10\nmax_connections_per_uid = 11",
            "workload_api.max_connections_per_uid",
            "raise max_connections",
        ),
    ] {
        let error = AgentConfig::from_toml(&format!("{base}[workload_api]\n{setting}\n"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with(key), "{setting}: {error}");
        assert!(error.contains(advice), "{setting}: {error}");
    }
    let unknown = AgentConfig::from_toml(&format!("{base}[workload_api]\nidle = \"1s\"\n"))
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("idle"), "{unknown}");
}

#[test]
fn errors_name_the_key_and_the_fix() {
    let cases = [
        ("hub_address = \"h:1\"", "trust_domain: is required"),
        (
            "trust_domain = \"spiffe://a.test\"\nhub_address = \"h:1\"",
            "trust_domain: give the bare name",
        ),
        (
            "trust_domain = \"A.test\"\nhub_address = \"h:1\"",
            "trust_domain: \"A.test\" is not valid",
        ),
        ("trust_domain = \"a.test\"", "hub_address: is required"),
        (
            "trust_domain = \"a.test\"\nhub_address = \"hub.a.test\"",
            "hub_address: \"hub.a.test\" has no port",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"https://hub:1\"",
            "hub_address: \"https://hub:1\" is a URL",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"hub:0\"",
            "no valid port",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"::1:80\"",
            "put IPv6 addresses in brackets",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"h:1\"\nhub_spiffe_id = \"spiffe://b.test/hub\"",
            "hub_spiffe_id: must be an ID of a.test under /fedhub/",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"h:1\"\nhub_spiffe_id = \"spiffe://a.test/web\"",
            "hub_spiffe_id: must be an ID of a.test under /fedhub/",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"h:1\"\ninsecure_bootstrap = true\ntrust_bundle_file = \"/b\"",
            "insecure_bootstrap: cannot be combined with trust_bundle_file",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"h:1\"\njoin_token = \"x\"\n[x509pop]\ncert_file = \"/c\"\nkey_file = \"/k\"",
            "join_token: cannot be combined with [x509pop]",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"h:1\"\njoin_token = \" \"",
            "join_token: is empty",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"h:1\"\n[x509pop]\ncert_file = \"/c\"",
            "x509pop: missing field `key_file`",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"h:1\"\nsocket_path = \"agent.sock\"",
            "socket_path: must be an absolute path",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"h:1\"\nhub_adress = \"x\"",
            "hub_adress",
        ),
        (
            "trust_domain = \"a.test\"\nhub_address = \"h:1\"\ninsecure_bootstrap = \"yes\"",
            "insecure_bootstrap",
        ),
    ];
    for (text, expected) in cases {
        let error = error_of(text);
        assert!(error.contains(expected), "{text:?}: {error}");
    }
}

#[test]
#[expect(
    clippy::result_large_err,
    reason = "figment's Jail API returns its own error"
)]
fn load_applies_env_overrides_and_the_join_token_variable() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("agent.toml", MINIMAL)?;
        jail.set_env("FEDHUB_AGENT__HUB_ADDRESS", "hub.alpha.test:9999");
        jail.set_env(JOIN_TOKEN_ENV, "0123456789012345");
        let config = AgentConfig::load(Path::new("agent.toml")).unwrap();
        assert_eq!(config.hub_address.to_string(), "hub.alpha.test:9999");
        assert_eq!(
            config.attestation,
            Some(NodeAttestation::JoinToken(JoinToken::new(
                "0123456789012345"
            ))),
            "a token of digits stays a string"
        );
        let error = AgentConfig::load(Path::new("missing.toml")).unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
        Ok(())
    });
}

#[test]
fn the_join_token_is_never_printed() {
    let config =
        AgentConfig::from_toml(&format!("{MINIMAL}join_token = \"s3cret-token\"\n")).unwrap();
    assert!(!format!("{config:?}").contains("s3cret"));
    let Some(NodeAttestation::JoinToken(token)) = config.attestation else {
        panic!("join token expected");
    };
    assert_eq!(token.secret(), "s3cret-token");
}

#[test]
#[expect(
    clippy::result_large_err,
    reason = "figment's Jail API returns its own error"
)]
fn problems_name_their_origin_and_check_reads_the_files_the_start_reads() {
    use fedhub_config::Origin;
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "agent.toml",
            &format!(
                "{MINIMAL}trust_bundle_file = \"missing.json\"\n\
                 [x509pop]\ncert_file = \"node.pem\"\nkey_file = \"node.key\"\n"
            ),
        )?;
        let path = Path::new("agent.toml");
        // `load` reads no file; `check` reads them as the start does.
        AgentConfig::load(path).unwrap();
        let problems = AgentConfig::check(path).unwrap_err().problems();
        let keys: Vec<_> = problems.iter().filter_map(|p| p.key.as_deref()).collect();
        assert_eq!(
            keys,
            ["trust_bundle_file", "x509pop.cert_file"],
            "{problems:#?}"
        );
        let file = Some(Origin::File(jail.directory().join("agent.toml")));
        assert_eq!(problems[0].origin, file);
        assert!(
            problems[0].message.starts_with("cannot read missing.json"),
            "{problems:#?}"
        );

        // A file that holds no bundle, from the environment.
        jail.create_file("not-a-bundle.json", "{}")?;
        jail.set_env("FEDHUB_AGENT__TRUST_BUNDLE_FILE", "not-a-bundle.json");
        let problems = AgentConfig::check(path).unwrap_err().problems();
        assert_eq!(problems[0].key.as_deref(), Some("trust_bundle_file"));
        assert_eq!(
            problems[0].origin,
            Some(Origin::Env("FEDHUB_AGENT__TRUST_BUNDLE_FILE".into()))
        );

        jail.set_env("FEDHUB_AGENT__WORKLOAD_API__IDLE_TIMOUT", "5s");
        let error = AgentConfig::load(path).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "workload_api.idle_timout (environment FEDHUB_AGENT__WORKLOAD_API__IDLE_TIMOUT): \
                 unknown key `idle_timout`; did you mean `idle_timeout`?"
            ),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn the_printed_example_is_the_shipped_file() {
    assert_eq!(EXAMPLE, include_str!("../../agent.example.toml"));
    AgentConfig::from_toml(EXAMPLE).unwrap();
}
