//! `fedhub demo` end to end: the real binary, then independent clients (the `spiffe` crate, a
//! plain HTTP client, the admin CLI) using what `demo.json` lists.
#![expect(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{FEDHUB, KeepRunning, demo_json};

fn check_demo_json(dir: &Path) -> Vec<Value> {
    let doc = demo_json(dir);
    let domains = doc["trust_domains"].as_array().unwrap().clone();
    assert_eq!(domains.len(), 2);
    assert_eq!(domains[0]["trust_domain"], "alpha.test", "alpha first");
    assert_eq!(domains[1]["trust_domain"], "beta.test");
    for domain in &domains {
        for key in [
            "trust_domain",
            "workload_socket",
            "admin_socket",
            "bundle_endpoint_url",
            "bundle_endpoint_spiffe_id",
            "oidc_issuer_url",
            "ca_bundle_pem",
            "workload_spiffe_id",
            "lab_api_url",
            "hub_metrics_url",
            "agent_metrics_url",
        ] {
            assert!(domain[key].is_string(), "{key} missing in {domain}");
        }
        for key in ["workload_socket", "admin_socket", "ca_bundle_pem"] {
            assert!(
                Path::new(domain[key].as_str().unwrap()).is_absolute(),
                "{key} is not absolute"
            );
        }
    }
    assert_eq!(domains[0]["workload_spiffe_id"], "spiffe://alpha.test/web");
    assert_eq!(domains[1]["workload_spiffe_id"], "spiffe://beta.test/echo");
    domains
}

#[test]
fn demo_runs_every_step_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(FEDHUB)
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("All steps passed"), "{stdout}");
    for step in [
        "[4/7] Cross-domain mTLS",
        "[5/7] JWT-SVID",
        "[6/7] Rotation",
        "[7/7] Legacy apps",
        "beta.test plain server: request from spiffe://alpha.test/web",
    ] {
        assert!(stdout.contains(step), "{step} missing:\n{stdout}");
    }
    check_demo_json(dir.path());
}

fn spiffe_client(runtime: &tokio::runtime::Runtime, socket: &str) -> spiffe::WorkloadApiClient {
    runtime
        .block_on(spiffe::WorkloadApiClient::connect_to(format!(
            "unix://{socket}"
        )))
        .unwrap()
}

fn http_get(url: &str) -> (u16, Value) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::builder()
            .use_preconfigured_tls(
                rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

#[test]
fn keep_running_serves_independent_clients_from_demo_json() {
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let domains = check_demo_json(&demo.dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // The spiffe crate sees an SVID and both trust domains' bundles on each socket.
    for domain in &domains {
        let client = spiffe_client(&runtime, domain["workload_socket"].as_str().unwrap());
        let context = runtime.block_on(client.fetch_x509_context()).unwrap();
        let svid = context.default_svid().unwrap();
        assert_eq!(
            svid.spiffe_id().to_string(),
            domain["workload_spiffe_id"].as_str().unwrap()
        );
        for td in ["alpha.test", "beta.test"] {
            let td = spiffe::TrustDomain::new(td).unwrap();
            assert!(
                context.bundle_set().get(&td).is_some(),
                "{td} bundle missing"
            );
        }
    }

    // A JWT-SVID from alpha validates through beta's socket.
    let alpha = spiffe_client(&runtime, domains[0]["workload_socket"].as_str().unwrap());
    let beta = spiffe_client(&runtime, domains[1]["workload_socket"].as_str().unwrap());
    let token = runtime
        .block_on(alpha.fetch_jwt_svid(["spiffe://beta.test/echo"], None))
        .unwrap();
    let validated = runtime
        .block_on(beta.validate_jwt_token("spiffe://beta.test/echo", token.token()))
        .unwrap();
    assert_eq!(validated.spiffe_id().to_string(), "spiffe://alpha.test/web");

    // The lab API answers on every endpoint, and never shows a private key.
    let lab = domains[0]["lab_api_url"].as_str().unwrap();
    for path in [
        "/spiffe/.well-known/spiffe-bundle",
        "/spiffe/svid/x509",
        "/spiffe/svid/x509/chain",
        "/spiffe/svid/jwt?audience=spiffe://beta.test/echo",
        "/spiffe/svid/info",
        "/spiffe/workload",
        "/spiffe/trust-bundle",
        "/spiffe/demo/rotation",
        "/spiffe/status",
    ] {
        let (status, body) = http_get(&format!("{lab}{path}"));
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            !body.to_string().contains("PRIVATE KEY"),
            "{path} leaks a key"
        );
    }

    // The POST endpoints: validation of the peer's credentials, and the demo calls.
    let beta_lab = domains[1]["lab_api_url"].as_str().unwrap();
    let (_, token) = http_get(&format!(
        "{beta_lab}/spiffe/svid/jwt?audience=spiffe://alpha.test/web"
    ));
    let (status, validated) = http_post(
        &format!("{lab}/spiffe/validate/jwt"),
        &serde_json::json!({ "token": token["token"] }),
    );
    assert_eq!(status, 200, "{validated}");
    assert_eq!(validated["spiffe_id"], "spiffe://beta.test/echo");
    let (status, refused) = http_post(
        &format!("{lab}/spiffe/validate/jwt"),
        &serde_json::json!({ "token": token["token"], "audience": "someone-else" }),
    );
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["valid"], false);
    let (_, chain) = http_get(&format!("{beta_lab}/spiffe/svid/x509/chain"));
    let (status, verified) = http_post(
        &format!("{lab}/spiffe/validate/x509"),
        &serde_json::json!({ "chain_pem": chain }),
    );
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["spiffe_id"], "spiffe://beta.test/echo");
    let (status, mtls) = http_post(&format!("{lab}/spiffe/demo/mtls/call"), &Value::Null);
    assert_eq!(status, 200, "{mtls}");
    assert_eq!(mtls["server_spiffe_id"], "spiffe://beta.test/echo");
    let (status, jwt) = http_post(
        &format!("{beta_lab}/spiffe/demo/jwt-auth/call"),
        &Value::Null,
    );
    assert_eq!(status, 200, "{jwt}");
    assert_eq!(jwt["validated_caller"], "spiffe://beta.test/echo");
    let (status, proxied) = http_post(&format!("{lab}/spiffe/demo/proxy/call"), &Value::Null);
    assert_eq!(status, 200, "{proxied}");
    assert_eq!(proxied["caller_spiffe_id"], "spiffe://alpha.test/web");
    assert_eq!(
        proxied["x_forwarded_client_cert"],
        "By=spiffe://beta.test/echo;URI=spiffe://alpha.test/web"
    );

    // The admin CLI works against the demo's admin sockets.
    let output = Command::new(FEDHUB)
        .args(["federation", "list", "--output", "json", "--admin-socket"])
        .arg(domains[0]["admin_socket"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(list[0]["trust_domain"], "beta.test");

    assert!(demo.stop().success(), "the demo exits 0 on SIGTERM");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `fedhub oidc run` standalone, fed from the demo hub's bundle endpoint (https_spiffe, with the
/// bundle exported through the admin CLI as bootstrap) and from the demo agent's socket.
#[test]
fn standalone_oidc_serves_the_hub_keys_from_both_sources() {
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let domains = check_demo_json(&demo.dir);
    let alpha = &domains[0];
    let exported = Command::new(FEDHUB)
        .args(["bundle", "show", "--format", "spiffe", "--admin-socket"])
        .arg(alpha["admin_socket"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let bundle_file = dir.path().join("alpha-bundle.json");
    std::fs::write(&bundle_file, &exported.stdout).unwrap();
    let bundle: Value = serde_json::from_slice(&exported.stdout).unwrap();
    let kid = bundle["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|k| k["kid"].as_str())
        .unwrap()
        .to_owned();

    let sources = [
        format!(
            "bundle_endpoint_url = \"{}\"\nendpoint_spiffe_id = \"{}\"\ntrust_bundle_file = \"{}\"",
            alpha["bundle_endpoint_url"].as_str().unwrap(),
            alpha["bundle_endpoint_spiffe_id"].as_str().unwrap(),
            bundle_file.display()
        ),
        format!(
            "workload_socket = \"unix://{}\"",
            alpha["workload_socket"].as_str().unwrap()
        ),
    ];
    for (i, source) in sources.iter().enumerate() {
        let port = free_port();
        let config = dir.path().join(format!("oidc-{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "issuer = \"http://127.0.0.1:{port}\"\naddress = \"127.0.0.1:{port}\"\n\
                 allow_insecure_http = true\nrefresh_interval = \"1s\"\n\
                 [source]\ntrust_domain = \"alpha.test\"\n{source}\n"
            ),
        )
        .unwrap();
        let mut oidc = Command::new(FEDHUB)
            .args(["oidc", "run", "--config"])
            .arg(&config)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let keys = loop {
            if let (200, keys) = http_get_quiet(&format!("http://127.0.0.1:{port}/keys"))
                && keys.to_string().contains(&kid)
            {
                break keys;
            }
            assert!(
                Instant::now() < deadline,
                "source {i}: keys never published"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(keys["keys"][0]["use"], "sig");
        let (status, discovery) = http_get(&format!(
            "http://127.0.0.1:{port}/.well-known/openid-configuration"
        ));
        assert_eq!(status, 200);
        assert_eq!(discovery["issuer"], format!("http://127.0.0.1:{port}"));
        let _ = oidc.kill();
        let _ = oidc.wait();
    }
    assert!(demo.stop().success());
}

fn http_post(url: &str, body: &Value) -> (u16, Value) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(
                rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
            .build()
            .unwrap();
        let mut request = client.post(url);
        if !body.is_null() {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

fn http_get_quiet(url: &str) -> (u16, Value) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let Ok(response) = reqwest::Client::builder()
            .use_preconfigured_tls(
                rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
        else {
            return (0, Value::Null);
        };
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}
