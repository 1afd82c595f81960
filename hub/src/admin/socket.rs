//! The admin socket: created with restrictive modes, and a listener that admits only allowed
//! peers by their credentials.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::{UnixListener, UnixStream};

use fedhub_files::ensure_dir;

/// Who may use the admin socket: the hub's own user and `admin_uids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedPeers {
    own_uid: u32,
    admin_uids: Vec<u32>,
}

impl AllowedPeers {
    /// `own_uid` (normally the hub process's effective uid, see [`AllowedPeers::this_process`])
    /// and `admin_uids`.
    pub fn new(own_uid: u32, admin_uids: &[u32]) -> Self {
        Self {
            own_uid,
            admin_uids: admin_uids.to_vec(),
        }
    }

    /// This process's effective uid and `admin_uids`. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// When the process's credentials cannot be read.
    pub fn this_process(admin_uids: &[u32]) -> io::Result<Self> {
        // The peer of one end of a socket pair is this very process.
        let (one, _other) = UnixStream::pair()?;
        Ok(Self::new(one.peer_cred()?.uid(), admin_uids))
    }

    /// Whether a peer with `uid` may connect.
    pub fn allows(&self, uid: u32) -> bool {
        uid == self.own_uid || self.admin_uids.contains(&uid)
    }

    /// Whether users other than the hub's own are allowed, so the socket must be reachable by
    /// them.
    fn shared(&self) -> bool {
        self.admin_uids.iter().any(|&uid| uid != self.own_uid)
    }
}

/// The credentials of an admitted admin client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its user id.
    pub uid: u32,
}

impl Connected<IncomingStream<'_, PeerCheckedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PeerCheckedListener>) -> Self {
        *stream.remote_addr()
    }
}

/// A bound admin socket, ready to serve with [`super::serve_admin`]. The socket file is
/// removed when it is dropped.
#[derive(Debug)]
pub struct AdminSocket {
    listener: PeerCheckedListener,
    file: SocketFile,
}

impl AdminSocket {
    /// Binds the admin socket at `path` for `peers`.
    ///
    /// The socket's directory is created if missing and set to `0700` (`0711` when `peers`
    /// includes other users, who need to traverse it); the socket is `0600` (`0666` then, the
    /// peer-credential check being the guard). A stale socket left by a previous run is
    /// replaced; a socket a running hub still answers on is not. Must run inside a Tokio
    /// runtime.
    ///
    /// # Errors
    /// When the directory is shared with other users (world-writable) or cannot be created,
    /// when the path is taken by another file or a live hub, or when binding fails. The
    /// message names the path and the fix.
    pub fn bind(path: &Path, peers: AllowedPeers) -> io::Result<Self> {
        let shared = peers.shared();
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .ok_or_else(|| {
                context(
                    io::ErrorKind::InvalidInput,
                    path,
                    "needs a directory of its own, e.g. <data_dir>/admin/admin.sock",
                )
            })?;
        if let Ok(meta) = fs::metadata(dir)
            && meta.permissions().mode() & 0o002 != 0
        {
            return Err(context(
                io::ErrorKind::PermissionDenied,
                path,
                &format!(
                    "is in the world-writable directory {}; give the admin socket a directory \
                     of its own, e.g. <data_dir>/admin/admin.sock",
                    dir.display()
                ),
            ));
        }
        ensure_dir(dir, if shared { 0o711 } else { 0o700 }).map_err(|e| {
            context(
                e.kind(),
                path,
                &format!("cannot prepare its directory {}: {e}", dir.display()),
            )
        })?;
        remove_stale(path)?;
        let listener = UnixListener::bind(path)
            .map_err(|e| context(e.kind(), path, &format!("cannot bind: {e}")))?;
        let file = SocketFile(path.to_owned());
        fs::set_permissions(
            path,
            fs::Permissions::from_mode(if shared { 0o666 } else { 0o600 }),
        )
        .map_err(|e| context(e.kind(), path, &format!("cannot set its mode: {e}")))?;
        Ok(Self {
            listener: PeerCheckedListener {
                inner: listener,
                peers,
            },
            file,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub(super) fn into_parts(self) -> (PeerCheckedListener, SocketFile) {
        (self.listener, self.file)
    }
}

fn context(kind: io::ErrorKind, path: &Path, message: &str) -> io::Error {
    io::Error::new(kind, format!("admin socket {}: {message}", path.display()))
}

/// Removes a socket file left behind by a hub that is gone; refuses other files and sockets a
/// hub still listens on.
fn remove_stale(path: &Path) -> io::Result<()> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(context(
            io::ErrorKind::AlreadyExists,
            path,
            "exists and is not a socket; remove it or choose another admin_socket",
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(context(
            io::ErrorKind::AddrInUse,
            path,
            "another hub is serving on it; stop that hub or choose another admin_socket",
        ));
    }
    tracing::info!(socket = %path.display(), owner = meta.uid(), "removing stale admin socket");
    fs::remove_file(path).map_err(|e| {
        context(
            e.kind(),
            path,
            &format!("cannot remove the stale socket: {e}"),
        )
    })
}

/// The socket file, removed on drop.
#[derive(Debug)]
pub(super) struct SocketFile(PathBuf);

impl SocketFile {
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_file(&self.0)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %self.0.display(), %error, "cannot remove the admin socket");
        }
    }
}

/// A Unix listener that closes connections from peers whose uid is not allowed.
#[derive(Debug)]
pub struct PeerCheckedListener {
    inner: UnixListener,
    peers: AllowedPeers,
}

impl PeerCheckedListener {
    /// The peer of `stream` if it may use the admin API; logs and refuses anyone else.
    fn admit(&self, stream: &UnixStream) -> Option<Peer> {
        match stream.peer_cred() {
            Ok(cred) if self.peers.allows(cred.uid()) => Some(Peer { uid: cred.uid() }),
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    pid = cred.pid(),
                    "refused an admin connection: uid is neither the hub's own nor in admin_uids"
                );
                None
            }
            Err(error) => {
                tracing::warn!(%error, "refused an admin connection: no peer credentials");
                None
            }
        }
    }
}

impl axum::serve::Listener for PeerCheckedListener {
    type Io = UnixStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (UnixStream, Peer) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _)) => {
                    if let Some(peer) = self.admit(&stream) {
                        return (stream, peer);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "admin socket accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the admin socket has no peer address of its own",
        ))
    }
}
