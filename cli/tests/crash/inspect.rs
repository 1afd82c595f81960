//! Looking at what a hub or an agent serves and keeps, after a restart or a kill: the bundle
//! endpoint (document and the SVID presented with it), the hub's CA directory against that
//! bundle, JWT-SVIDs against it, and the agent's data directory.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use fedhub_core::bundle::BundleSet;
use fedhub_core::x509::{SvidUsage, X509Svid, verify_x509_svid};
use fedhub_core::{Bundle, CaSigner, JwtValidator, PrivateKey, PublicKey, TrustDomain};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use serde::Deserialize;

/// What a bundle endpoint served on one connection.
#[derive(Debug, Clone)]
pub struct Served {
    /// The bundle document, parsed.
    pub bundle: Bundle,
    /// The certificate chain the endpoint presented (leaf first).
    pub chain: Vec<Vec<u8>>,
}

/// `GET /` on the `https_spiffe` bundle endpoint at `address`: the bundle of `trust_domain` and
/// the chain presented for it. Bounded by 5 s timeouts on every step.
pub fn fetch_bundle_endpoint(
    address: SocketAddr,
    trust_domain: &TrustDomain,
) -> Result<Served, String> {
    // The presented chain is judged afterwards, against the bundle served over the same
    // connection.
    let config = fedhub_core::tls::insecure_client_config().map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(5);
    let tcp = TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| format!("connecting to the bundle endpoint {address}: {e}"))?;
    tcp.set_read_timeout(Some(timeout)).unwrap();
    tcp.set_write_timeout(Some(timeout)).unwrap();
    let connection =
        ClientConnection::new(Arc::new(config), ServerName::IpAddress(address.ip().into()))
            .map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(connection, tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("bundle endpoint {address}: {e}"))?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // A peer closing without close_notify after a complete response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(format!("bundle endpoint {address}: {e}")),
    }
    let chain: Vec<Vec<u8>> = tls
        .conn
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|cert| cert.to_vec())
        .collect();
    let body = http_body(&response)?;
    let bundle = Bundle::from_json(trust_domain.clone(), &body)
        .map_err(|e| format!("the served bundle does not parse: {e}"))?;
    Ok(Served { bundle, chain })
}

/// The body of a complete HTTP/1.1 `200` response (plain or chunked).
fn http_body(response: &[u8]) -> Result<Vec<u8>, String> {
    let text = String::from_utf8_lossy(response);
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("incomplete HTTP response: {text}"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(format!(
            "the bundle endpoint answered {}",
            text.lines().next().unwrap_or("")
        ));
    }
    let mut body = &response[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return Ok(body.to_vec());
    }
    let mut decoded = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("chunk size {size_text:?}: {e}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(decoded);
        }
        decoded.extend_from_slice(body.get(..size).ok_or("truncated chunk")?);
        body = body.get(size + 2..).ok_or("truncated chunk")?;
    }
}

/// One key of the CA's `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CaKey {
    /// Key id: the JWT `kid`, or the file name part of an X.509 CA.
    pub id: String,
    /// `prepared`, `active` or `retired`.
    pub state: String,
    /// Expiry, unix seconds.
    pub not_after: u64,
}

/// The hub's `<data_dir>/ca/state.json`: which keys it holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CaState {
    /// X.509 CA keys.
    pub x509: Vec<CaKey>,
    /// JWT keys.
    pub jwt: Vec<CaKey>,
}

impl CaState {
    /// Reads `ca_dir/state.json`.
    pub fn read(ca_dir: &Path) -> Result<Self, String> {
        let path = ca_dir.join("state.json");
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn active<'a>(keys: &'a [CaKey], kind: &str) -> Result<&'a CaKey, String> {
        let active: Vec<&CaKey> = keys.iter().filter(|k| k.state == "active").collect();
        match active.as_slice() {
            [one] => Ok(one),
            other => Err(format!("{} active {kind} keys in state.json", other.len())),
        }
    }

    /// The active JWT key.
    pub fn active_jwt(&self) -> Result<&CaKey, String> {
        Self::active(&self.jwt, "JWT")
    }

    /// The state of key `id` (X.509 or JWT), if held.
    pub fn state_of(&self, id: &str) -> Option<&str> {
        self.x509
            .iter()
            .chain(&self.jwt)
            .find(|k| k.id == id)
            .map(|k| k.state.as_str())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Whether `name` is a file the CA writes for a key (`x509-<id>.key|pem`, `jwt-<id>.key`); its
/// id.
fn key_file_id(name: &str) -> Option<&str> {
    let stem = name
        .strip_suffix(".key")
        .or_else(|| name.strip_suffix(".pem").filter(|s| s.starts_with("x509-")))?;
    stem.strip_prefix("x509-")
        .or_else(|| stem.strip_prefix("jwt-"))
}

/// Temporary files (`.<name>.tmp`) in `dir`: left when a write was interrupted.
pub fn temp_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| fedhub_files::interrupted_write_of(name).is_some())
        .collect()
}

/// Checks that the hub's keys in `ca_dir` are what `served` publishes and what it signs with:
///
/// - every unexpired X.509 CA of `state.json` loads (certificate and key match) and its root is
///   an X.509 authority of the bundle; every authority of the bundle is the root of a held CA;
/// - every unexpired JWT key loads and the bundle holds its public key under its id; every JWT
///   authority of the bundle is a held key;
/// - the SVID presented with the bundle chains to the bundle and was issued by a held CA;
/// - no key file is left that no key uses, and no temporary file of an interrupted write.
pub fn check_ca_matches_bundle(
    ca_dir: &Path,
    state: &CaState,
    served: &Served,
    hub_id: &str,
) -> Result<(), String> {
    let now = unix_now();
    let bundle = &served.bundle;
    // Key id and root of every CA held.
    let mut cas: Vec<(&str, Vec<u8>)> = Vec::new();
    for key in &state.x509 {
        let pem_path = ca_dir.join(format!("x509-{}.pem", key.id));
        let key_path = ca_dir.join(format!("x509-{}.key", key.id));
        let Ok(pem_text) = std::fs::read(&pem_path) else {
            if key.not_after <= now {
                continue; // expired: may be gone already
            }
            return Err(format!("{} is missing", pem_path.display()));
        };
        let chain: Vec<Vec<u8>> = pem::parse_many(&pem_text)
            .map_err(|e| format!("{}: {e}", pem_path.display()))?
            .into_iter()
            .map(pem::Pem::into_contents)
            .collect();
        let private = std::fs::read_to_string(&key_path)
            .map_err(|e| format!("{}: {e}", key_path.display()))
            .and_then(|text| {
                PrivateKey::from_pkcs8_pem(&text)
                    .map_err(|e| format!("{}: {e}", key_path.display()))
            })?;
        CaSigner::new(chain.clone(), private)
            .map_err(|e| format!("CA {} does not load: {e}", key.id))?;
        let root = chain.last().cloned().unwrap_or_default();
        if key.not_after > now + 1 && !bundle.x509_authorities().iter().any(|a| a.der() == root) {
            return Err(format!(
                "the {} CA {} is not in the served bundle (sequence {:?})",
                key.state,
                key.id,
                bundle.sequence()
            ));
        }
        cas.push((&key.id, root));
    }
    for authority in bundle.x509_authorities() {
        if !cas.iter().any(|(_, root)| root == authority.der()) {
            return Err(format!(
                "the served bundle (sequence {:?}) holds an X.509 authority no CA of state.json \
                 has",
                bundle.sequence()
            ));
        }
    }
    for key in &state.jwt {
        let key_path = ca_dir.join(format!("jwt-{}.key", key.id));
        let Ok(text) = std::fs::read_to_string(&key_path) else {
            if key.not_after <= now {
                continue;
            }
            return Err(format!("{} is missing", key_path.display()));
        };
        let private = PrivateKey::from_pkcs8_pem(&text)
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        let public = PublicKey::from_spki_der(&private.public_key_der().unwrap())
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        match bundle.jwt_authority(&key.id) {
            Some(authority) if *authority.key() == public => {}
            Some(_) => {
                return Err(format!(
                    "the served bundle holds JWT key {} with another public key",
                    key.id
                ));
            }
            None if key.not_after <= now + 1 => {}
            None => {
                return Err(format!(
                    "the {} JWT key {} is not in the served bundle (sequence {:?})",
                    key.state,
                    key.id,
                    bundle.sequence()
                ));
            }
        }
    }
    for authority in bundle.jwt_authorities() {
        if !state.jwt.iter().any(|k| k.id == authority.kid()) {
            return Err(format!(
                "the served bundle holds JWT key {} that state.json does not",
                authority.kid()
            ));
        }
    }

    // The SVID on the endpoint: valid under the served bundle.
    let served_set: BundleSet = [bundle.clone()].into_iter().collect();
    let verified = verify_x509_svid(
        &served.chain,
        &served_set,
        SystemTime::now(),
        SvidUsage::ServerAuth,
    )
    .map_err(|e| {
        format!("the bundle endpoint's SVID does not verify against the served bundle: {e}")
    })?;
    if verified.spiffe_id().as_str() != hub_id {
        return Err(format!(
            "the bundle endpoint presented {}",
            verified.spiffe_id()
        ));
    }
    // Issued by a CA the hub holds (which one is the hub's choice: the CA published longest
    // that outlives the SVID, so that peers holding an older bundle still authenticate it).
    CaState::active(&state.x509, "X.509")?;
    let issuer = cas.iter().find(|(_, root)| {
        let mut single = Bundle::new(bundle.trust_domain().clone());
        single.add_x509_authority(fedhub_core::X509Authority::from_der_unchecked(root.clone()));
        let single: BundleSet = [single].into_iter().collect();
        verify_x509_svid(
            &served.chain,
            &single,
            SystemTime::now(),
            SvidUsage::ServerAuth,
        )
        .is_ok()
    });
    if issuer.is_none() {
        return Err(format!(
            "the bundle endpoint's SVID (issued by {}) was issued by no CA of state.json: \
             {state:?}",
            issuer_name(&served.chain[0])
        ));
    }

    // Nothing left behind that no key uses, nor a write a kill interrupted (the hub removes
    // both when it starts).
    let temp = temp_files(ca_dir);
    if !temp.is_empty() {
        return Err(format!(
            "temporary files left in the CA directory: {temp:?}"
        ));
    }
    for entry in std::fs::read_dir(ca_dir)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = key_file_id(&name)
            && state.state_of(id).is_none()
        {
            return Err(format!("{name} belongs to no key of state.json"));
        }
    }
    Ok(())
}

/// The issuer name of a certificate, for messages.
pub fn issuer_name(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map_or_else(|e| e.to_string(), |(_, cert)| cert.issuer().to_string())
}

/// The `kid` in a JWT's header.
fn kid(token: &str) -> Result<String, String> {
    let header = token.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| format!("JWT header: {e}"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("JWT header: {e}"))?;
    header["kid"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("JWT header without kid: {header}"))
}

/// Validates `token` for `audience` against `bundle` (what the hub publishes) and returns its
/// `kid`.
pub fn validate_jwt(token: &str, audience: &str, bundle: &Bundle) -> Result<String, String> {
    let set: BundleSet = [bundle.clone()].into_iter().collect();
    JwtValidator::new()
        .validate(token, audience, &set, SystemTime::now())
        .map_err(|e| format!("the JWT-SVID does not validate against the served bundle: {e}"))?;
    kid(token)
}

/// What an agent's data directory held after a kill.
#[derive(Debug)]
pub struct AgentStore {
    /// Serial of the stored agent SVID, lowercase hex as the hub shows it.
    pub serial: String,
    /// Temporary files left by an interrupted write.
    pub temp_files: Vec<String>,
}

/// Checks an agent's data directory: `agent-svid.pem` is private, holds a chain and the key of
/// its leaf for `agent_id`, valid now under `hub_bundle`; `bundle.json` is a bundle of
/// `trust_domain` with X.509 authorities.
pub fn check_agent_store(
    dir: &Path,
    trust_domain: &TrustDomain,
    hub_bundle: &Bundle,
    agent_id: &str,
) -> Result<AgentStore, String> {
    let svid_path = dir.join("agent-svid.pem");
    let mode = std::fs::metadata(&svid_path)
        .map_err(|e| format!("{}: {e}", svid_path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} has mode {:o}",
            svid_path.display(),
            mode & 0o777
        ));
    }
    let text = std::fs::read(&svid_path).map_err(|e| e.to_string())?;
    let mut chain = Vec::new();
    let mut key = None;
    for block in pem::parse_many(&text).map_err(|e| format!("{}: {e}", svid_path.display()))? {
        match block.tag() {
            "CERTIFICATE" => chain.push(block.into_contents()),
            "PRIVATE KEY" => {
                key = Some(
                    PrivateKey::from_pkcs8_der(block.contents())
                        .map_err(|e| format!("{}: {e}", svid_path.display()))?,
                );
            }
            other => return Err(format!("{}: unexpected block {other}", svid_path.display())),
        }
    }
    let key = key.ok_or_else(|| format!("{} holds no key", svid_path.display()))?;
    let svid =
        X509Svid::new_checked(chain, key).map_err(|e| format!("{}: {e}", svid_path.display()))?;
    if svid.spiffe_id().as_str() != agent_id {
        return Err(format!(
            "{} is an SVID of {}",
            svid_path.display(),
            svid.spiffe_id()
        ));
    }
    let set: BundleSet = [hub_bundle.clone()].into_iter().collect();
    verify_x509_svid(svid.chain(), &set, SystemTime::now(), SvidUsage::ClientAuth).map_err(
        |e| format!("the stored agent SVID does not verify against the hub's bundle: {e}"),
    )?;
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf()).map_err(|e| e.to_string())?;
    let serial = leaf.raw_serial().iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });

    let bundle_path = dir.join("bundle.json");
    let bytes =
        std::fs::read(&bundle_path).map_err(|e| format!("{}: {e}", bundle_path.display()))?;
    let stored = Bundle::from_json(trust_domain.clone(), &bytes)
        .map_err(|e| format!("{}: {e}", bundle_path.display()))?;
    if stored.x509_authorities().is_empty() {
        return Err(format!(
            "{} holds no X.509 authority",
            bundle_path.display()
        ));
    }
    Ok(AgentStore {
        serial,
        temp_files: temp_files(dir),
    })
}
