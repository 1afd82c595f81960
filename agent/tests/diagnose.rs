//! Agents that say what is wrong: a trust bundle of another trust domain fails the start, and
//! each way a hub can fail the TLS handshake (a wrong bundle, trust domain or hub ID, a port
//! that is not the node API) is logged as what to check, on every retry at a rate limit.
//! Real hubs and real handshakes on loopback; log lines captured from this thread.
#![expect(clippy::unwrap_used, reason = "test helpers panic when set-up fails")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fedhub_agent::{AgentConfig, AgentError, RunningAgent};
use fedhub_hub::Hub;
use fedhub_hub::config::HubConfig;
use fedhub_hub::node::serve_node_api;
use fedhub_tests::logs::{Captured, capture};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(20);

/// A hub of `trust_domain` in `dir` (not serving).
async fn hub(dir: &Path, trust_domain: &str, name: &str) -> Hub {
    let config = HubConfig::from_toml(&format!(
        "trust_domain = \"{trust_domain}\"\ndata_dir = \"{}\"\n",
        dir.join(name).display()
    ))
    .unwrap();
    Hub::open(config).await.unwrap()
}

/// Serves `hub`'s node API on a loopback port until the test ends.
async fn serve(hub: &Hub) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_node_api(
        hub.clone(),
        listener,
        std::future::pending(),
    ));
    addr
}

/// A plain-HTTP server that answers anything with `400 Bad Request`, like a health port.
async fn plain_http() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0_u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    addr
}

/// `hub`'s bundle written to `dir/name`.
fn bundle_file(dir: &Path, hub: &Hub, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, hub.own_bundle().to_json()).unwrap();
    path
}

/// An agent configuration in `dir` for `trust_domain`, attesting with a join token.
fn agent_config(
    dir: &Path,
    trust_domain: &str,
    address: SocketAddr,
    bundle: &Path,
    extra: &str,
) -> AgentConfig {
    AgentConfig::from_toml(&format!(
        "trust_domain = \"{trust_domain}\"\nhub_address = \"{address}\"\ndata_dir = \"{}\"\n\
         socket_path = \"{}\"\ntrust_bundle_file = \"{}\"\n\
         join_token = \"join-token-0123456789abcdef\"\n{extra}",
        dir.join("agent").display(),
        dir.join("run/agent.sock").display(),
        bundle.display()
    ))
    .unwrap()
}

/// Waits until a WARN line containing `text` is logged.
async fn warned(logs: &Captured, text: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(line) = logs
            .text()
            .lines()
            .find(|line| line.contains(" WARN ") && line.contains(text))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no warning with {text:?}; logged:\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts an agent with `config` and waits for its warning containing `text`.
async fn diagnosed(config: AgentConfig, logs: &Captured, text: &str) -> (RunningAgent, String) {
    let agent = fedhub_agent::launch(config).await.unwrap();
    let line = warned(logs, text).await;
    assert!(
        line.contains("nothing to serve yet"),
        "an agent that never synced says it has nothing to serve: {line}"
    );
    assert!(!line.contains("serving cached"), "{line}");
    assert!(
        !line.contains("OtherError") && !line.contains("Some("),
        "no Rust Debug syntax: {line}"
    );
    (agent, line)
}

#[tokio::test]
async fn a_trust_bundle_of_another_trust_domain_fails_the_start() {
    let dir = TempDir::new().unwrap();
    let alpha = hub(dir.path(), "alpha.test", "alpha").await;
    let alpha_bundle = bundle_file(dir.path(), &alpha, "alpha.json");
    let config = agent_config(
        dir.path(),
        "beta.test",
        "127.0.0.1:1".parse().unwrap(),
        &alpha_bundle,
        "",
    );
    let error = fedhub_agent::launch(config).await.unwrap_err();
    assert!(
        matches!(
            error,
            AgentError::Config {
                key: "trust_bundle_file",
                ..
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("is the bundle of trust domain alpha.test, but trust_domain is beta.test"),
        "{message}"
    );
    assert!(
        !dir.path().join("run/agent.sock").exists(),
        "nothing was served"
    );
}

#[tokio::test]
async fn a_hub_of_another_trust_domain_is_named() {
    let (logs, _guard) = capture(tracing::Level::INFO);
    let dir = TempDir::new().unwrap();
    let alpha = hub(dir.path(), "alpha.test", "alpha").await;
    let beta = hub(dir.path(), "beta.test", "beta").await;
    let address = serve(&alpha).await;
    let beta_bundle = bundle_file(dir.path(), &beta, "beta.json");
    let config = agent_config(dir.path(), "beta.test", address, &beta_bundle, "");
    let (agent, line) = diagnosed(
        config,
        &logs,
        "presented an SVID of trust domain alpha.test, but this agent is configured for \
         trust_domain beta.test",
    )
    .await;
    assert!(!line.contains("NoBundle"), "{line}");
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_trust_bundle_is_named() {
    let (logs, _guard) = capture(tracing::Level::INFO);
    let dir = TempDir::new().unwrap();
    let alpha = hub(dir.path(), "alpha.test", "alpha").await;
    // Another hub of the same trust domain: another CA.
    let impostor = hub(dir.path(), "alpha.test", "impostor").await;
    let address = serve(&alpha).await;
    let wrong = bundle_file(dir.path(), &impostor, "wrong.json");
    let config = agent_config(dir.path(), "alpha.test", address, &wrong, "");
    let (agent, _) = diagnosed(
        config,
        &logs,
        "the hub's certificate does not chain to the trust bundle this agent holds",
    )
    .await;
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_hub_id_is_named() {
    let (logs, _guard) = capture(tracing::Level::INFO);
    let dir = TempDir::new().unwrap();
    let alpha = hub(dir.path(), "alpha.test", "alpha").await;
    let address = serve(&alpha).await;
    let bundle = bundle_file(dir.path(), &alpha, "alpha.json");
    let config = agent_config(
        dir.path(),
        "alpha.test",
        address,
        &bundle,
        "hub_spiffe_id = \"spiffe://alpha.test/fedhub/other-hub\"\n",
    );
    let (agent, _) = diagnosed(
        config,
        &logs,
        "presented the SPIFFE ID spiffe://alpha.test/fedhub/hub, not hub_spiffe_id \
         spiffe://alpha.test/fedhub/other-hub",
    )
    .await;
    agent.shutdown().await.unwrap();
}

/// A plain-HTTP port is named as not the node API; the same cause is warned about once, not
/// on each of the retries that follow within the minute (those are debug lines).
#[tokio::test]
async fn a_port_that_is_not_the_node_api_is_named_once_a_minute() {
    let (logs, _guard) = capture(tracing::Level::DEBUG);
    let dir = TempDir::new().unwrap();
    let alpha = hub(dir.path(), "alpha.test", "alpha").await;
    let bundle = bundle_file(dir.path(), &alpha, "alpha.json");
    let address = plain_http().await;
    let config = agent_config(dir.path(), "alpha.test", address, &bundle, "");
    let (agent, _) = diagnosed(
        config,
        &logs,
        "does not answer with TLS: it is not the node API of a fedhub hub",
    )
    .await;
    // Backoff starts at half a second: several retries in four seconds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let text = logs.text();
    let warnings = text
        .lines()
        .filter(|line| line.contains(" WARN ") && line.contains("does not answer with TLS"))
        .count();
    assert_eq!(warnings, 1, "{text}");
    assert!(text.contains("the hub is still unusable"), "{text}");
    agent.shutdown().await.unwrap();
}

/// An agent that synced says how many SVIDs it keeps serving while the hub is gone.
#[tokio::test]
async fn an_outage_after_a_sync_names_the_cached_svids() {
    use std::os::unix::fs::MetadataExt as _;

    use fedhub_registry::{EntrySpec, Selector};
    use fedhub_tests::id;

    let (logs, _guard) = capture(tracing::Level::INFO);
    let dir = TempDir::new().unwrap();
    let alpha = hub(dir.path(), "alpha.test", "alpha").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_node_api(alpha.clone(), listener, async {
        let _ = stopped.await;
    }));
    let agent_id = id("spiffe://alpha.test/fedhub/agent/node-1");
    alpha
        .registry()
        .create_join_token(
            "test",
            "join-token-0123456789abcdef",
            Duration::from_secs(600),
            Some(&agent_id),
        )
        .await
        .unwrap();
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let spec = EntrySpec::new(
        id("spiffe://alpha.test/web"),
        agent_id,
        vec![Selector::new("unix", &format!("uid:{uid}")).unwrap()],
    );
    alpha.registry().create_entry("test", &spec).await.unwrap();
    alpha.notify_changed().await.unwrap();

    let bundle = bundle_file(dir.path(), &alpha, "alpha.json");
    let config = agent_config(dir.path(), "alpha.test", address, &bundle, "");
    let agent = fedhub_agent::launch(config).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while agent
        .state()
        .current()
        .is_none_or(|snapshot| snapshot.identities.is_empty())
    {
        assert!(Instant::now() < deadline, "the agent never got its SVID");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _ = stop.send(());
    let _ = tokio::time::timeout(PATIENCE, server).await;
    let line = warned(
        &logs,
        "serving the 1 cached SVID and the bundles until they expire",
    )
    .await;
    assert!(!line.contains("nothing to serve"), "{line}");
    agent.shutdown().await.unwrap();
}

/// `hub_address` set to the hub's bundle endpoint (which presents the same hub SVID): named
/// as not the node API.
#[tokio::test]
async fn the_bundle_endpoint_port_is_named_as_not_the_node_api() {
    let (logs, _guard) = capture(tracing::Level::INFO);
    let dir = TempDir::new().unwrap();
    let config = HubConfig::from_toml(&format!(
        "trust_domain = \"alpha.test\"\ndata_dir = \"{data}\"\n\
         admin_socket = \"{data}/admin.sock\"\n\
         [agent_api]\naddress = \"127.0.0.1:0\"\n\
         [bundle_endpoint]\naddress = \"127.0.0.1:0\"\n[health]\nenabled = false\n",
        data = dir.path().join("hub").display()
    ))
    .unwrap();
    let running = fedhub_hub::run::launch(config).await.unwrap();
    let bundle = bundle_file(dir.path(), &running.hub, "alpha.json");
    let address = running.bound.bundle_endpoint.unwrap();
    let config = agent_config(dir.path(), "alpha.test", address, &bundle, "");
    let (agent, _) = diagnosed(
        config,
        &logs,
        &format!(
            "{address} does not serve the node API: check that hub_address is the hub's \
             agent_api.address"
        ),
    )
    .await;
    agent.shutdown().await.unwrap();
    running.shutdown().await;
}

/// A data directory that keeps another trust domain's bundle (it belonged to an agent of that
/// trust domain) fails the start, naming that trust domain.
#[tokio::test]
async fn a_data_dir_of_another_trust_domain_fails_the_start() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = TempDir::new().unwrap();
    let alpha = hub(dir.path(), "alpha.test", "alpha").await;
    let data = dir.path().join("agent");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let stored = data.join(fedhub_agent::store::BUNDLE_FILE);
    std::fs::write(&stored, alpha.own_bundle().to_json()).unwrap();
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = AgentConfig::from_toml(&format!(
        "trust_domain = \"beta.test\"\nhub_address = \"127.0.0.1:1\"\ndata_dir = \"{}\"\n\
         socket_path = \"{}\"\ninsecure_bootstrap = true\n\
         join_token = \"join-token-0123456789abcdef\"\n",
        data.display(),
        dir.path().join("run/agent.sock").display(),
    ))
    .unwrap();
    let error = fedhub_agent::launch(config).await.unwrap_err();
    assert!(
        matches!(
            error,
            AgentError::Config {
                key: "data_dir",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("keeps the bundle of trust domain alpha.test, but trust_domain is beta.test"),
        "{error}"
    );
}
