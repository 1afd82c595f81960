use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::config::HubConfig;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn own_uid() -> u32 {
    let (one, _other) = tokio::net::UnixStream::pair().unwrap();
    one.peer_cred().unwrap().uid()
}

async fn test_hub(dir: &Path) -> Hub {
    let config = HubConfig::from_toml(&format!(
        "trust_domain = \"alpha.test\"\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    ))
    .unwrap();
    Hub::open(config).await.unwrap()
}

/// Sends one HTTP request over the socket and returns the raw response ("" when the server
/// closed the connection without answering).
async fn raw_request(socket: &Path, request: &str) -> String {
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    // The write may fail when the server already closed the connection.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

const GET_AGENTS: &str = "GET /v1/agents HTTP/1.1\r\nHost: fedhub\r\nConnection: close\r\n\r\n";

#[test]
fn default_socket_matches_the_config_default() {
    let config = HubConfig::from_toml("trust_domain = \"alpha.test\"").unwrap();
    assert_eq!(config.admin_socket, Path::new(DEFAULT_ADMIN_SOCKET));
}

#[tokio::test]
async fn allowed_peers_are_the_own_uid_and_admin_uids() {
    let me = own_uid();
    let peers = AllowedPeers::this_process(&[4242]).unwrap();
    assert!(peers.allows(me));
    assert!(peers.allows(4242));
    assert!(!peers.allows(4243));
}

#[tokio::test]
async fn private_socket_is_0600_in_a_0700_directory_and_removed_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let hub = test_hub(dir.path()).await;
    let path = dir.path().join("admin/admin.sock");
    let socket = AdminSocket::bind(&path, AllowedPeers::new(own_uid(), &[])).unwrap();
    assert_eq!(mode(&dir.path().join("admin")), 0o700);
    assert_eq!(mode(&path), 0o600);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_admin(AdminState::new(hub), socket, async {
        let _ = stopped.await;
    }));
    let response = raw_request(&path, GET_AGENTS).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!path.exists(), "socket removed on shutdown");
}

#[tokio::test]
async fn shared_socket_opens_modes_for_admin_uids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin/admin.sock");
    let me = own_uid();
    let _socket = AdminSocket::bind(&path, AllowedPeers::new(me, &[me + 1])).unwrap();
    assert_eq!(mode(&dir.path().join("admin")), 0o711);
    assert_eq!(mode(&path), 0o666);
}

#[tokio::test]
async fn peers_that_are_not_allowed_are_closed_at_accept() {
    let dir = tempfile::tempdir().unwrap();
    let hub = test_hub(dir.path()).await;
    let path = dir.path().join("admin/admin.sock");
    let other = own_uid().wrapping_add(1);
    let socket = AdminSocket::bind(&path, AllowedPeers::new(other, &[other])).unwrap();
    tokio::spawn(serve_admin(
        AdminState::new(hub),
        socket,
        std::future::pending(),
    ));
    assert_eq!(raw_request(&path, GET_AGENTS).await, "");
}

#[tokio::test]
async fn stale_sockets_are_replaced_but_live_ones_and_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin/admin.sock");
    let peers = AllowedPeers::new(own_uid(), &[]);
    let live = AdminSocket::bind(&path, peers.clone()).unwrap();
    let err = AdminSocket::bind(&path, peers.clone()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("another hub"), "{err}");

    // A socket whose listener is gone (a crashed hub) is stale.
    let (listener, file) = live.into_parts();
    drop(listener);
    std::mem::forget(file);
    let rebound = AdminSocket::bind(&path, peers.clone()).unwrap();
    drop(rebound);
    assert!(!path.exists());

    std::fs::write(&path, "not a socket").unwrap();
    let err = AdminSocket::bind(&path, peers).unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
}

#[tokio::test]
async fn world_writable_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let err = AdminSocket::bind(
        &shared.join("admin.sock"),
        AllowedPeers::new(own_uid(), &[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("world-writable"), "{err}");
    assert_eq!(mode(&shared), 0o777, "left unchanged");
}
