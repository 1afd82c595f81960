//! The dashboard against a real hub: an in-process hub serves its admin API on a Unix socket,
//! the dashboard serves on a loopback port, and the requests are plain HTTP/1.1 over TCP, as a
//! browser sends them. Who is admitted (token, cookie, CSRF, origin, host) and what the API
//! answers with 10 000 relationships. The browser itself drives the page in
//! `cli/tests/dashboard.rs`.
#![expect(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::fmt::Write as _;
use std::time::Duration;

use fedhub_core::TrustDomain;
use fedhub_core::endpoint::FetchSource;
use fedhub_dashboard::Dashboard;
use fedhub_hub::Hub;
use fedhub_hub::admin::{AdminSocket, AdminState, AllowedPeers, serve_admin};
use fedhub_hub::config::HubConfig;
use fedhub_registry::{FetchProfile, RelationshipSpec};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A hub with its admin socket and a dashboard in front of it, stopped on drop.
struct Setup {
    hub: Option<Hub>,
    base: String,
    host: String,
    url: String,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn registry(&self) -> &fedhub_registry::Registry {
        self.hub.as_ref().unwrap().registry()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = HubConfig::from_toml(&format!(
        "trust_domain = \"alpha.test\"\ndata_dir = \"{}\"\n",
        dir.path().join("data").display()
    ))
    .unwrap();
    let hub = Hub::open(config).await.unwrap();
    let socket_path = dir.path().join("admin/admin.sock");
    let socket = AdminSocket::bind(&socket_path, AllowedPeers::this_process(&[]).unwrap()).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve_admin(
        AdminState::new(hub.clone()),
        socket,
        stop.clone().cancelled_owned(),
    ));
    let dashboard = Dashboard::new(socket_path, false).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let url = dashboard.url(local);
    let shutdown = stop.clone().cancelled_owned();
    tokio::spawn(async move { dashboard.serve(listener, shutdown).await });
    Setup {
        hub: Some(hub),
        base: format!("http://{local}"),
        host: local.to_string(),
        url,
        stop,
        _dir: dir,
    }
}

/// A raw answer: status, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request (`Connection: close`) with `headers` and reads the whole answer.
async fn request(
    setup: &Setup,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(&setup.host).await.unwrap();
    let mut text = format!(
        "{method} {target} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        let _ = write!(text, "Host: {}\r\n", setup.host);
    }
    for (name, value) in headers {
        let _ = write!(text, "{name}: {value}\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("the dashboard did not answer within 60 s"))
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// Opens a session with the printed URL; returns the cookie pair and the page's CSRF token.
async fn login(setup: &Setup) -> (String, String) {
    let target = setup.url.strip_prefix(&setup.base).unwrap();
    let answer = request(setup, "GET", target, &[], "").await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(answer.header("location"), Some("/"));
    let cookie = answer.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains("; HttpOnly; SameSite=Strict; Path=/"),
        "{cookie}"
    );
    assert!(cookie.starts_with("fedhub_dashboard_"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = request(setup, "GET", "/", &[("Cookie", &pair)], "").await;
    assert_eq!(page.status, 200);
    let csrf = page
        .body
        .split(r#"<meta name="fedhub-csrf" content=""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 43);
    (pair, csrf)
}

#[tokio::test]
async fn a_request_without_the_token_or_its_cookie_is_refused() {
    let setup = setup().await;
    for target in ["/", "/api/overview", "/api/relationships", "/api/entries"] {
        let answer = request(&setup, "GET", target, &[], "").await;
        assert_eq!(answer.status, 401, "{target}: {}", answer.body);
        assert!(answer.body.contains("URL"), "{target}: {}", answer.body);
    }
    let wrong = request(
        &setup,
        "GET",
        "/?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &[],
        "",
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let forged = request(
        &setup,
        "GET",
        "/api/overview",
        &[(
            "Cookie",
            "fedhub_dashboard_00000000=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
        "",
    )
    .await;
    assert_eq!(forged.status, 401);

    // The printed URL admits; the page is served with the security headers.
    let (cookie, _csrf) = login(&setup).await;
    let page = request(&setup, "GET", "/", &[("Cookie", &cookie)], "").await;
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let overview = request(&setup, "GET", "/api/overview", &[("Cookie", &cookie)], "").await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    let overview = overview.json();
    assert_eq!(overview["bundle"]["ok"]["trust_domain"], "alpha.test");
    let keys = overview["bundle"]["ok"]["keys"]["ok"].as_array().unwrap();
    assert!(keys.iter().any(|k| k["state"] == "active"), "{keys:?}");
    assert_eq!(overview["federation"]["ok"]["total"], 0);

    // The page's files need no session (they hold nothing secret).
    let script = request(&setup, "GET", "/assets/app.js", &[], "").await;
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );

    // A page naming another host (DNS rebinding) is refused even with the cookie.
    let rebound = request(
        &setup,
        "GET",
        "/api/overview",
        &[("Host", "evil.test"), ("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(rebound.status, 403, "{}", rebound.body);
}

#[tokio::test]
async fn a_change_without_the_csrf_check_is_refused() {
    let setup = setup().await;
    let (cookie, csrf) = login(&setup).await;
    let origin = setup.base.clone();
    let body = r#"{"name":"partners","members":[]}"#;
    let json = ("Content-Type", "application/json");
    let refused = [
        vec![
            ("Cookie", cookie.as_str()),
            ("Origin", origin.as_str()),
            json,
        ],
        vec![
            ("Cookie", cookie.as_str()),
            ("Origin", origin.as_str()),
            (
                "X-Fedhub-Csrf",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
            json,
        ],
        vec![
            ("Cookie", cookie.as_str()),
            ("Origin", "http://evil.test"),
            ("X-Fedhub-Csrf", csrf.as_str()),
            json,
        ],
        vec![
            ("Cookie", cookie.as_str()),
            ("X-Fedhub-Csrf", csrf.as_str()),
            json,
        ],
    ];
    for headers in &refused {
        let answer = request(&setup, "POST", "/api/groups", headers, body).await;
        assert_eq!(answer.status, 403, "{headers:?}: {}", answer.body);
        assert!(answer.json()["error"].as_str().is_some());
    }
    let delete = request(
        &setup,
        "DELETE",
        "/api/relationships/beta.test",
        &[("Cookie", &cookie), ("Origin", &origin)],
        "",
    )
    .await;
    assert_eq!(delete.status, 403);
    assert!(
        delete.json()["error"].as_str().unwrap().contains("CSRF"),
        "{}",
        delete.body
    );
    // Nothing was created.
    assert!(
        setup
            .registry()
            .list_federation_groups()
            .await
            .unwrap()
            .is_empty()
    );

    // With the session's token from the page's own origin the change goes through.
    let mut good = vec![
        ("Cookie", cookie.as_str()),
        ("Origin", origin.as_str()),
        json,
    ];
    good.push(("X-Fedhub-Csrf", csrf.as_str()));
    let created = request(&setup, "POST", "/api/groups", &good, body).await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(
        setup
            .registry()
            .list_federation_groups()
            .await
            .unwrap()
            .len(),
        1
    );

    // Through an SSH forward the browser names the forwarded port; the page's origin is that.
    let forwarded = [
        ("Host", "localhost:18780"),
        ("Origin", "http://localhost:18780"),
        ("Cookie", cookie.as_str()),
        ("X-Fedhub-Csrf", csrf.as_str()),
        json,
    ];
    let body = r#"{"name":"forwarded","members":[]}"#;
    let created = request(&setup, "POST", "/api/groups", &forwarded, body).await;
    assert_eq!(created.status, 200, "{}", created.body);
}

#[tokio::test]
async fn ten_thousand_relationships_come_in_small_pages_and_a_grouped_map() {
    const COUNT: usize = 10_000;
    let setup = setup().await;
    let registry = setup.registry();
    for n in 0..COUNT {
        let spec = RelationshipSpec {
            trust_domain: TrustDomain::new(&format!("peer-{n:05}.test")).unwrap(),
            bundle_endpoint_url: format!("https://peer-{n:05}.test/bundle").parse().unwrap(),
            profile: FetchProfile::HttpsWeb { extra_ca_pem: None },
            accept_empty_bundle: false,
        };
        registry
            .create_relationship("test", &spec, None)
            .await
            .unwrap();
    }
    let (cookie, _csrf) = login(&setup).await;
    let cookie = [("Cookie", cookie.as_str())];

    let page = request(
        &setup,
        "GET",
        "/api/relationships?page=3&per_page=50&sort=trust_domain&q=peer",
        &cookie,
        "",
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.len() < 64 * 1024, "{} bytes", page.body.len());
    let page = page.json();
    assert_eq!(page["total"], COUNT);
    assert_eq!(page["matched"], COUNT);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 50);
    assert_eq!(items[0]["trust_domain"], "peer-00100.test");
    assert_eq!(items[0]["health"], "never");

    let filtered = request(
        &setup,
        "GET",
        "/api/relationships?q=peer-0999&per_page=500",
        &cookie,
        "",
    )
    .await
    .json();
    assert_eq!(filtered["matched"], 10);
    assert_eq!(filtered["per_page"], 200, "pages are capped");

    let overview = request(&setup, "GET", "/api/overview", &cookie, "").await;
    assert_eq!(overview.status, 200);
    assert!(
        overview.body.len() < 64 * 1024,
        "{} bytes",
        overview.body.len()
    );
    let federation = &overview.json()["federation"]["ok"];
    assert_eq!(federation["total"], COUNT);
    assert_eq!(federation["counts"]["never"], COUNT);
    assert_eq!(federation["map"]["grouped_by"], "health");
    let nodes = federation["map"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["count"], COUNT);
}

/// A logged-in page: sends changes with the cookie, the origin and the CSRF token.
struct Page<'a> {
    setup: &'a Setup,
    cookie: String,
    csrf: String,
}

impl Page<'_> {
    async fn get(&self, target: &str) -> Answer {
        request(self.setup, "GET", target, &[("Cookie", &self.cookie)], "").await
    }

    async fn change(&self, method: &str, target: &str, body: &str) -> Answer {
        let headers = [
            ("Cookie", self.cookie.as_str()),
            ("Origin", self.setup.base.as_str()),
            ("X-Fedhub-Csrf", self.csrf.as_str()),
            ("Content-Type", "application/json"),
        ];
        request(self.setup, method, target, &headers, body).await
    }
}

async fn page(setup: &Setup) -> Page<'_> {
    let (cookie, csrf) = login(setup).await;
    Page {
        setup,
        cookie,
        csrf,
    }
}

#[tokio::test]
async fn relationship_and_group_actions_reach_the_hub() {
    let setup = setup().await;
    let page = page(&setup).await;
    let registry = setup.registry();
    let partner = TrustDomain::new("partner.test").unwrap();

    // Relationships: create, update (the rest of the configuration stays), group, delete.
    let created = page
        .change(
            "POST",
            "/api/relationships",
            r#"{"trust_domain":"partner.test","bundle_endpoint_url":"https://partner.test/b","profile":"https_web"}"#,
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let updated = page
        .change(
            "PUT",
            "/api/relationships/partner.test",
            r#"{"require_sequence":true}"#,
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    let stored = registry.get_relationship(&partner).await.unwrap().unwrap();
    assert!(stored.options.require_sequence);
    assert_eq!(
        stored.spec.bundle_endpoint_url.as_str(),
        "https://partner.test/b"
    );
    let duplicate = page
        .change(
            "POST",
            "/api/relationships",
            r#"{"trust_domain":"partner.test","bundle_endpoint_url":"https://partner.test/b","profile":"https_web"}"#,
        )
        .await;
    assert_eq!(duplicate.status, 409, "the hub's status is passed on");
    assert!(
        duplicate.json()["error"]
            .as_str()
            .unwrap()
            .contains("partner.test")
    );

    let group = page
        .change("POST", "/api/groups", r#"{"name":"partners","members":[]}"#)
        .await;
    assert_eq!(group.status, 200, "{}", group.body);
    let member = page
        .change("PUT", "/api/groups/partners/members/partner.test", "")
        .await;
    assert_eq!(member.status, 200, "{}", member.body);
    let in_group = page.get("/api/relationships?group=partners").await.json();
    assert_eq!(in_group["matched"], 1);
    assert_eq!(in_group["items"][0]["groups"][0], "partners");
    assert_eq!(in_group["items"][0]["status"]["consecutive_failures"], 0);
    let by_group = page.get("/api/overview?map=group").await.json();
    assert_eq!(
        by_group["federation"]["ok"]["map"]["nodes"][0]["label"],
        "partners (1)"
    );
    let groups = page.get("/api/groups").await.json();
    assert_eq!(groups[0]["members"][0], "partner.test");
    let removed = page
        .change("DELETE", "/api/groups/partners/members/partner.test", "")
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    let dropped = page.change("DELETE", "/api/groups/partners", "").await;
    assert_eq!(dropped.status, 200, "{}", dropped.body);
    // No refresh engine in this hub: the hub's 501 and its message come through.
    let refresh = page
        .change("POST", "/api/relationships/partner.test/refresh", "")
        .await;
    assert_eq!(refresh.status, 501, "{}", refresh.body);
    let deleted = page
        .change("DELETE", "/api/relationships/partner.test?force=false", "")
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert!(registry.get_relationship(&partner).await.unwrap().is_none());
}

#[tokio::test]
async fn entry_and_agent_actions_reach_the_hub_and_bad_input_does_not() {
    let setup = setup().await;
    let page = page(&setup).await;

    // Entries: create (for a parent still to come), search, delete.
    let entry = page
        .change(
            "POST",
            "/api/entries?allow_unknown_parent=true",
            r#"{"spiffe_id":"spiffe://alpha.test/app","parent_id":"spiffe://alpha.test/node","selectors":["unix:uid:1000"]}"#,
        )
        .await;
    assert_eq!(entry.status, 200, "{}", entry.body);
    let id = entry.json()["id"].as_str().unwrap().to_owned();
    let found = page
        .get("/api/entries?selector=uid:1000&parent=node")
        .await
        .json();
    assert_eq!(found["matched"], 1);
    assert_eq!(found["items"][0]["id"], id.as_str());
    let none = page.get("/api/entries?federates_with=beta").await.json();
    assert_eq!(none["matched"], 0);
    let deleted = page
        .change("DELETE", &format!("/api/entries/{id}"), "")
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(page.get("/api/entries").await.json()["total"], 0);

    // Agents: the list, and the hub's answer for an agent it does not know.
    assert_eq!(page.get("/api/agents").await.json()["total"], 0);
    let ban = page
        .change(
            "POST",
            "/api/agents/spiffe%3A%2F%2Falpha.test%2Ffedhub%2Fagent%2Fx/ban",
            "",
        )
        .await;
    assert_eq!(ban.status, 404, "{}", ban.body);
    let evict = page
        .change(
            "DELETE",
            "/api/agents/spiffe%3A%2F%2Falpha.test%2Ffedhub%2Fagent%2Fx",
            "",
        )
        .await;
    assert_eq!(evict.status, 404, "{}", evict.body);

    // Malformed input is refused by the dashboard before the hub sees it.
    let bad = page
        .change(
            "POST",
            "/api/relationships",
            r#"{"trust_domain":"Not Valid"}"#,
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let long = page
        .get(&format!("/api/entries?q={}", "x".repeat(300)))
        .await;
    assert_eq!(long.status, 400, "{}", long.body);
    let big = "x".repeat(fedhub_dashboard::MAX_REQUEST_BYTES + 1);
    let too_big = page.change("POST", "/api/entries", &big).await;
    assert_eq!(too_big.status, 413, "{}", too_big.body);
}

#[tokio::test]
async fn an_unreachable_hub_is_explained_in_every_panel() {
    let dashboard = Dashboard::new("/nonexistent/admin.sock".into(), false).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let url = dashboard.url(local);
    let shutdown = stop.clone().cancelled_owned();
    tokio::spawn(async move { dashboard.serve(listener, shutdown).await });
    let setup = Setup {
        hub: None,
        base: format!("http://{local}"),
        host: local.to_string(),
        url,
        stop,
        _dir: tempfile::tempdir().unwrap(),
    };
    let (cookie, _) = login(&setup).await;
    let cookie = [("Cookie", cookie.as_str())];
    let overview = request(&setup, "GET", "/api/overview", &cookie, "").await;
    assert_eq!(overview.status, 200, "each section carries its own error");
    let overview = overview.json();
    for section in ["bundle", "federation"] {
        let error = overview[section]["error"].as_str().unwrap();
        assert!(
            error.contains("/nonexistent/admin.sock") && error.contains("--admin-socket"),
            "{error}"
        );
    }
    let rows = request(&setup, "GET", "/api/relationships", &cookie, "").await;
    assert_eq!(rows.status, 502);
    assert!(
        rows.json()["error"]
            .as_str()
            .unwrap()
            .contains("fedhub hub run")
    );
}

#[tokio::test]
async fn a_relationship_moves_to_a_relay_and_back_keeping_the_rest() {
    let setup = setup().await;
    let page = page(&setup).await;
    let registry = setup.registry();
    let partner = TrustDomain::new("partner.test").unwrap();
    let created = page
        .change(
            "POST",
            "/api/relationships",
            r#"{"trust_domain":"partner.test","bundle_endpoint_url":"https://partner.test/b","profile":"https_web","require_sequence":true}"#,
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let stored = registry.get_relationship(&partner).await.unwrap().unwrap();
    assert_eq!(
        stored.options.source,
        FetchSource::Direct,
        "direct unless asked"
    );
    // Through a relay and back: the page shows where the bundle comes from.
    let via_relay = page
        .change(
            "PUT",
            "/api/relationships/partner.test",
            r#"{"source":"relay"}"#,
        )
        .await;
    assert_eq!(via_relay.status, 200, "{}", via_relay.body);
    let stored = registry.get_relationship(&partner).await.unwrap().unwrap();
    assert_eq!(stored.options.source, FetchSource::Relay);
    assert!(
        stored.options.require_sequence,
        "the rest of the configuration stays"
    );
    let row = page.get("/api/relationships?q=partner").await.json();
    assert_eq!(row["items"][0]["source"], "relay");
    let direct = page
        .change(
            "PUT",
            "/api/relationships/partner.test",
            r#"{"source":"direct"}"#,
        )
        .await;
    assert_eq!(direct.status, 200, "{}", direct.body);
    let stored = registry.get_relationship(&partner).await.unwrap().unwrap();
    assert_eq!(stored.options.source, FetchSource::Direct);
}
