//! The web dashboard end to end: the dashboards of a `fedhub demo --keep-running`, and a
//! `fedhub dashboard` process in front of a hub with 10 000 relationships. The page is driven
//! in a real headless browser (Debian's chromium through Playwright,
//! `tests/interop/dashboard.py`) from the virtualenv `.ci/run` installs, named by
//! `FEDHUB_INTEROP_PYTHON`, with the browser named by `FEDHUB_CHROMIUM`. Without them the
//! browser tests are skipped with a note, except in CI where they fail. The refusals (no token,
//! no CSRF header) are also checked without a browser. See docs/dashboard.md.
#![expect(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fedhub_core::TrustDomain;
use fedhub_hub::Hub;
use fedhub_hub::admin::{AdminSocket, AdminState, AllowedPeers, serve_admin};
use fedhub_hub::config::HubConfig;
use fedhub_registry::{FetchProfile, RelationshipSpec};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use common::{FEDHUB, KeepRunning, demo_json};
use fedhub_tests::process::run_bounded;

/// The Python interpreter of the virtualenv holding Playwright.
const PYTHON_VAR: &str = "FEDHUB_INTEROP_PYTHON";
/// Debian's chromium.
const CHROMIUM_VAR: &str = "FEDHUB_CHROMIUM";
/// Where to copy the screenshot the browser test takes (docs/dashboard.png is made this way).
const SCREENSHOT_VAR: &str = "FEDHUB_DASHBOARD_SCREENSHOT";
/// Longest a browser script may run; each of its waits is bounded by 15 s on its own.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// The Python interpreter and chromium, or `None` with a note when either is not set; in CI
/// (`CI` set) a missing one fails the test instead.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let (Some(python), Some(chromium)) =
        (std::env::var_os(PYTHON_VAR), std::env::var_os(CHROMIUM_VAR))
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{PYTHON_VAR} and {CHROMIUM_VAR} must be set in CI to run the browser tests: run \
             `bash .ci/run`, which installs Playwright and chromium and sets them"
        );
        eprintln!(
            "note: {PYTHON_VAR} or {CHROMIUM_VAR} is not set; skipping this browser test \
             (`bash .ci/run` sets them; see docs/dashboard.md)"
        );
        return None;
    };
    let (python, chromium) = (PathBuf::from(python), PathBuf::from(chromium));
    for (var, path) in [(PYTHON_VAR, &python), (CHROMIUM_VAR, &chromium)] {
        assert!(
            path.is_file(),
            "{var} is set to {}, which is not a file",
            path.display()
        );
    }
    Some((python, chromium))
}

/// Runs `tests/interop/dashboard.py` and returns the JSON it printed.
fn run_browser(python: &Path, chromium: &Path, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/dashboard.py");
    let output = run_bounded(
        Command::new(python)
            .arg("-B")
            .arg(script)
            .args(args)
            .arg("--chromium")
            .arg(chromium),
        SCRIPT_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dashboard.py failed ({}):\n{stderr}\nstdout:\n{stdout}",
        output.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("dashboard.py printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// The demo's dashboard URLs, alpha.test's first.
fn dashboard_urls(demo: &KeepRunning) -> Vec<String> {
    let doc = demo_json(&demo.dir);
    let urls: Vec<String> = doc["trust_domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["dashboard_url"]
                .as_str()
                .unwrap_or_else(|| panic!("dashboard_url missing in {d}"))
                .to_owned()
        })
        .collect();
    assert_eq!(urls.len(), 2);
    for url in &urls {
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        assert!(url.contains("/?token="), "{url}");
    }
    assert_ne!(urls[0], urls[1]);
    urls
}

/// One raw HTTP/1.1 exchange; returns the status line's code, the head and the body.
fn http(
    url_base: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let host = url_base.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (
        head[9..12].parse().unwrap(),
        head.to_owned(),
        body.to_owned(),
    )
}

#[test]
fn demo_dashboards_refuse_a_request_without_the_token_and_a_change_without_csrf() {
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let url = dashboard_urls(&demo).remove(0);
    let (base, target) = url.split_at(url.find("/?token=").unwrap());

    let (status, _, body) = http(base, "GET", "/api/overview", &[]);
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = http(base, "GET", "/", &[]);
    assert_eq!(status, 401);

    let (status, head, _) = http(base, "GET", target, &[]);
    assert_eq!(status, 303);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (status, _, body) = http(base, "GET", "/api/relationships", &[("Cookie", &cookie)]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"trust_domain\":\"beta.test\""), "{body}");
    let (status, _, body) = http(
        base,
        "POST",
        "/api/relationships/beta.test/refresh",
        &[("Cookie", &cookie), ("Origin", base)],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    demo.stop();
}

#[test]
fn the_browser_sees_the_peer_refreshes_it_and_is_refused_without_token_or_csrf() {
    let Some((python, chromium)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let url = dashboard_urls(&demo).remove(0);
    let screenshot = dir.path().join("dashboard.png");
    let seen = run_browser(
        &python,
        &chromium,
        &[
            "demo",
            &url,
            "--peer",
            "beta.test",
            "--screenshot",
            screenshot.to_str().unwrap(),
        ],
    );
    // No token: refused, no cookie; the token admits and leaves the address bar.
    assert_eq!(seen["without_token_status"], 401, "{seen:#}");
    assert_eq!(seen["api_without_cookie_status"], 401, "{seen:#}");
    assert_eq!(seen["cookies_without_token"], 0);
    assert!(!seen["url_after_login"].as_str().unwrap().contains("token"));
    assert_eq!(seen["cookie"]["http_only"], true);
    assert_eq!(seen["cookie"]["same_site"], "Strict");
    // The map and the table show the peer with its status; the own bundle its keys.
    assert_eq!(seen["own_trust_domain"], "alpha.test");
    assert_eq!(seen["map_health"], "fresh", "{seen:#}");
    assert_eq!(seen["table_health"], "fresh", "{seen:#}");
    assert!(
        seen["key_roles"]
            .as_array()
            .unwrap()
            .contains(&"active".into())
    );
    // A refresh asks first, then changes the shown last success.
    assert!(
        seen["confirmation_text"]
            .as_str()
            .unwrap()
            .contains("beta.test")
    );
    assert_eq!(seen["toast_after_cancel"], false, "{seen:#}");
    assert_eq!(seen["toast"], "refreshed beta.test");
    assert!(seen["last_success_before"].is_string(), "{seen:#}");
    assert_ne!(seen["last_success_after"], seen["last_success_before"]);
    // A change without the CSRF header is refused; with it, it goes through.
    assert_eq!(seen["post_without_csrf_status"], 403, "{seen:#}");
    assert_eq!(seen["post_with_csrf_status"], 200, "{seen:#}");
    assert_eq!(seen["page_errors"], Value::Array(Vec::new()), "{seen:#}");
    let bytes = seen["screenshot_bytes"].as_u64().unwrap();
    assert!(bytes < 300 * 1024, "screenshot of {bytes} bytes");
    if let Some(keep) = std::env::var_os(SCREENSHOT_VAR) {
        std::fs::copy(&screenshot, keep).unwrap();
    }
    demo.stop();
}

/// A `fedhub dashboard` process, killed on drop.
struct DashboardProcess {
    child: Child,
    url: String,
}

impl DashboardProcess {
    fn start(admin_socket: &Path) -> Self {
        let mut child = Command::new(FEDHUB)
            .args(["dashboard", "--listen", "127.0.0.1:0", "--admin-socket"])
            .arg(admin_socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = lines
            .find_map(|line| {
                let line = line.ok()?;
                line.trim()
                    .starts_with("http://")
                    .then(|| line.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("fedhub dashboard printed no URL"));
        // Keep reading stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url }
    }
}

impl Drop for DashboardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_relationships_show_as_a_grouped_map_and_pages_in_the_browser() {
    const COUNT: usize = 10_000;
    let Some((python, chromium)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = HubConfig::from_toml(&format!(
        "trust_domain = \"hub.scale.test\"\ndata_dir = \"{}\"\n",
        dir.path().join("data").display()
    ))
    .unwrap();
    let hub = Hub::open(config).await.unwrap();
    for n in 0..COUNT {
        let spec = RelationshipSpec {
            trust_domain: TrustDomain::new(&format!("peer-{n:05}.test")).unwrap(),
            bundle_endpoint_url: format!("https://peer-{n:05}.test/bundle").parse().unwrap(),
            profile: FetchProfile::HttpsWeb { extra_ca_pem: None },
            accept_empty_bundle: false,
        };
        hub.registry()
            .create_relationship("test", &spec, None)
            .await
            .unwrap();
    }
    let socket_path = dir.path().join("admin/admin.sock");
    let socket = AdminSocket::bind(&socket_path, AllowedPeers::this_process(&[]).unwrap()).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve_admin(
        AdminState::new(hub),
        socket,
        stop.clone().cancelled_owned(),
    ));
    let dashboard = DashboardProcess::start(&socket_path);
    let url = dashboard.url.clone();
    let seen =
        tokio::task::spawn_blocking(move || run_browser(&python, &chromium, &["scale", &url]))
            .await
            .unwrap();
    stop.cancel();
    // Grouped: a handful of nodes, not one per trust domain.
    assert_eq!(seen["map_grouped_by"], "health", "{seen:#}");
    assert_eq!(seen["map_nodes"], 1, "{seen:#}");
    assert_eq!(seen["map_labels"][0], "never fetched (10000)", "{seen:#}");
    assert!(seen["svg_elements"].as_u64().unwrap() < 100, "{seen:#}");
    // Paged: 50 rows, paging and sorting answered by the server.
    assert_eq!(seen["table_rows"], 50, "{seen:#}");
    assert!(
        seen["pager"].as_str().unwrap().contains("of 10000"),
        "{seen:#}"
    );
    assert_eq!(seen["second_page_first"], "peer-00050.test", "{seen:#}");
    // Responsive: each step well within the poll interval's order of magnitude.
    for key in ["first_paint_secs", "next_page_secs", "sort_secs"] {
        assert!(seen[key].as_f64().unwrap() < 10.0, "{key}: {seen:#}");
    }
    assert!(
        seen["main_thread_delay_ms"].as_u64().unwrap() < 500,
        "{seen:#}"
    );
    assert_eq!(seen["page_errors"], Value::Array(Vec::new()), "{seen:#}");
}

#[test]
fn every_panel_explains_a_hub_it_cannot_reach() {
    let Some((python, chromium)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-hub/admin.sock");
    let dashboard = DashboardProcess::start(&socket);
    let seen = run_browser(&python, &chromium, &["unreachable", &dashboard.url]);
    assert!(
        seen["live"].as_str().unwrap().contains("retrying"),
        "{seen:#}"
    );
    let socket = socket.display().to_string();
    for (panel, text) in seen["panels"].as_object().unwrap() {
        let text = text.as_str().unwrap();
        assert!(
            text.contains(&socket) && text.contains("Retrying every 2 s"),
            "{panel}: {text}"
        );
    }
}

#[test]
fn a_listen_address_other_machines_reach_needs_allow_remote() {
    let output = Command::new(FEDHUB)
        .args([
            "dashboard",
            "--listen",
            "0.0.0.0:0",
            "--admin-socket",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
}
