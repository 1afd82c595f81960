//! The admin API's checks that every client gets, over a real admin socket: selectors of the
//! forms fedhub's attestors produce, parents that some agent answers to, and deletes in use
//! that name the entries they change.

#![expect(clippy::unwrap_used, reason = "test helpers panic when set-up fails")]

use std::path::{Path, PathBuf};

use fedhub_hub::Hub;
use fedhub_hub::admin::{AdminSocket, AdminState, AllowedPeers, serve_admin};
use fedhub_hub::config::HubConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A hub serving its admin API on a socket in `dir`.
async fn start(dir: &Path) -> PathBuf {
    let config = HubConfig::from_toml(&format!(
        "trust_domain = \"alpha.test\"\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    ))
    .unwrap();
    let socket = dir.join("admin/admin.sock");
    let hub = Hub::open(config).await.unwrap();
    let bound = AdminSocket::bind(&socket, AllowedPeers::this_process(&[]).unwrap()).unwrap();
    tokio::spawn(serve_admin(
        AdminState::new(hub),
        bound,
        std::future::pending(),
    ));
    socket
}

/// Sends one request and returns the status code and the JSON body (null when empty).
async fn call(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} /v1{path} HTTP/1.1\r\nHost: fedhub\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (_, payload) = response.split_once("\r\n\r\n").unwrap();
    // The body may be chunked: take the JSON between the first `{`/`[` and the last `}`/`]`.
    let start = payload.find(['{', '[']);
    let end = payload.rfind(['}', ']']);
    let value = match (start, end) {
        (Some(start), Some(end)) => serde_json::from_str(&payload[start..=end]).unwrap(),
        _ => Value::Null,
    };
    (status, value)
}

fn entry(spiffe_id: &str, parent_id: &str, selectors: &[&str]) -> Value {
    json!({ "spiffe_id": spiffe_id, "parent_id": parent_id, "selectors": selectors })
}

fn message(body: &Value) -> String {
    body.to_string()
}

#[tokio::test]
async fn selectors_are_checked_against_the_attestors_forms() {
    let dir = tempfile::tempdir().unwrap();
    let socket = start(dir.path()).await;
    let alias_parent = "spiffe://alpha.test/fedhub/server";
    for (selector, reason) in [
        ("unix:uid:root", "unix uid must be a number"),
        ("unix:userid:0", "type unix has no such key"),
        ("unix:0", "type unix has no such key"),
        ("k8s:ns:default", "no attestor for selector type"),
        ("unix:uid:0,unix:gid:0", "several selectors"),
        ("unix:sha256:xyz", "64 lowercase hex digits"),
    ] {
        let (status, body) = call(
            &socket,
            "POST",
            "/entries",
            Some(&entry(
                "spiffe://alpha.test/alias",
                alias_parent,
                &[selector],
            )),
        )
        .await;
        assert_eq!(status, 400, "{selector}: {body}");
        let text = message(&body);
        assert!(text.contains(reason), "{selector}: {text}");
        assert!(
            text.contains("valid selectors: unix:uid:<number>"),
            "{text}"
        );
    }
    let (status, body) = call(
        &socket,
        "POST",
        "/entries",
        Some(&entry(
            "spiffe://alpha.test/alias",
            alias_parent,
            &[
                "x509pop:subject:cn:node-1",
                "x509pop:san:dns:node-1.alpha.test",
            ],
        )),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn parents_must_be_known_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = start(dir.path()).await;
    let web = entry(
        "spiffe://alpha.test/web",
        "spiffe://alpha.test/agent/nowhere",
        &["unix:uid:1000"],
    );
    let (status, body) = call(&socket, "POST", "/entries", Some(&web)).await;
    assert_eq!(status, 400, "{body}");
    let text = message(&body);
    assert!(
        text.contains("parent_id spiffe://alpha.test/agent/nowhere is neither an agent"),
        "{text}"
    );
    assert!(text.contains("allow_unknown_parent"), "{text}");

    let (status, created) = call(
        &socket,
        "POST",
        "/entries?allow_unknown_parent=true",
        Some(&web),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();

    // An update that keeps the parent is not checked again; one that moves it is.
    let mut hinted = web.clone();
    hinted["hint"] = json!("internal");
    let (status, body) = call(&socket, "PUT", &format!("/entries/{id}"), Some(&hinted)).await;
    assert_eq!(status, 200, "{body}");
    hinted["parent_id"] = json!("spiffe://alpha.test/agent/elsewhere");
    let (status, body) = call(&socket, "PUT", &format!("/entries/{id}"), Some(&hinted)).await;
    assert_eq!(status, 400, "{body}");

    // A node alias is a known parent.
    let (status, body) = call(
        &socket,
        "POST",
        "/entries",
        Some(&entry(
            "spiffe://alpha.test/alias/eu",
            "spiffe://alpha.test/fedhub/server",
            &["x509pop:subject:cn:eu"],
        )),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        &socket,
        "POST",
        "/entries",
        Some(&entry(
            "spiffe://alpha.test/db",
            "spiffe://alpha.test/alias/eu",
            &["unix:user:postgres"],
        )),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn deleting_in_use_names_the_entries() {
    let dir = tempfile::tempdir().unwrap();
    let socket = start(dir.path()).await;
    let (status, body) = call(
        &socket,
        "POST",
        "/federation",
        Some(&json!({
            "trust_domain": "partner.test",
            "bundle_endpoint_url": "https://partner.test/bundle",
            "profile": "https_web",
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut web = entry(
        "spiffe://alpha.test/web",
        "spiffe://alpha.test/fedhub/server",
        &["x509pop:subject:cn:web"],
    );
    web["federates_with"] = json!(["partner.test"]);
    let (status, created) = call(&socket, "POST", "/entries", Some(&web)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();

    let (status, body) = call(&socket, "DELETE", "/federation/partner.test", None).await;
    assert_eq!(status, 409, "{body}");
    let text = message(&body);
    assert!(
        text.contains(&format!("used by 1 entry: {id} (spiffe://alpha.test/web)")),
        "{text}"
    );
    assert!(text.contains("for good"), "{text}");

    let (status, body) = call(
        &socket,
        "DELETE",
        "/federation/partner.test?force=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries_updated"], 1);
    assert_eq!(
        body["entries"],
        json!([{ "id": id, "spiffe_id": "spiffe://alpha.test/web" }])
    );
    assert!(
        body["note"].as_str().unwrap().contains("for good"),
        "{body}"
    );
}
