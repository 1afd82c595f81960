use std::os::unix::fs::PermissionsExt as _;

use fedhub_core::x509::{SvidUsage, verify_x509_svid};
use fedhub_core::{Bundle, BundleSet, JwtValidator};

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn options(dir: &Path) -> CaOptions {
    CaOptions {
        trust_domain: TrustDomain::new("alpha.test").unwrap(),
        dir: dir.to_owned(),
        ttl: 24 * HOUR,
        x509_key_type: KeyType::EcP256,
        jwt_key_type: KeyType::EcP256,
        upstream: None,
        jwt_issuer: None,
    }
}

fn bundle_of(ca: &CaManager) -> Bundle {
    let mut bundle = Bundle::new(TrustDomain::new("alpha.test").unwrap());
    for authority in ca.x509_authorities() {
        bundle.add_x509_authority(authority);
    }
    for authority in ca.jwt_authorities() {
        bundle.add_jwt_authority(authority);
    }
    bundle
}

fn states(ca: &CaManager, kind: &str) -> Vec<KeyState> {
    ca.status()
        .into_iter()
        .filter(|k| k.kind == kind)
        .map(|k| k.state)
        .collect()
}

fn workload_key() -> Vec<u8> {
    PrivateKey::generate(KeyType::EcP256)
        .unwrap()
        .public_key_der()
        .unwrap()
}

#[test]
fn first_start_creates_active_keys_stored_0600_and_restart_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = CaManager::open(options(dir.path()), now).unwrap();
    assert_eq!(states(&ca, "x509"), [KeyState::Active]);
    assert_eq!(states(&ca, "jwt"), [KeyState::Active]);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", entry.path().display());
    }
    let dir_mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let before = bundle_of(&ca);
    drop(ca);
    let reopened = CaManager::open(options(dir.path()), now).unwrap();
    assert_eq!(bundle_of(&reopened), before, "restart keeps the CA");
}

#[test]
fn rotation_publishes_at_half_activates_at_five_sixths_and_retires_at_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = SystemTime::now();
    let mut ca = CaManager::open(options(dir.path()), t0).unwrap();
    let first = ca.active_x509().certificate().to_vec();

    assert!(
        !ca.tick(t0 + 11 * HOUR).unwrap(),
        "nothing to do before half"
    );
    assert!(ca.tick(t0 + 12 * HOUR).unwrap(), "half: successor prepared");
    assert_eq!(states(&ca, "x509"), [KeyState::Active, KeyState::Prepared]);
    assert_eq!(states(&ca, "jwt"), [KeyState::Active, KeyState::Prepared]);
    assert_eq!(ca.x509_authorities().len(), 2, "published before use");
    assert_eq!(ca.active_x509().certificate(), first, "not signing yet");

    assert!(!ca.tick(t0 + 19 * HOUR).unwrap());
    ca.tick(t0 + 20 * HOUR).unwrap();
    assert_eq!(states(&ca, "x509"), [KeyState::Retired, KeyState::Active]);
    assert_ne!(ca.active_x509().certificate(), first, "successor signs");
    assert_eq!(
        ca.x509_authorities().len(),
        2,
        "retired key still published"
    );

    assert!(
        ca.tick(t0 + 24 * HOUR).unwrap(),
        "expired key leaves the bundle"
    );
    // The first key is gone; the active one (made at 12 h) is at half its life, so its own
    // successor is prepared at the same tick.
    assert_eq!(states(&ca, "x509"), [KeyState::Active, KeyState::Prepared]);
    let published: Vec<Vec<u8>> = ca
        .x509_authorities()
        .iter()
        .map(|a| a.der().to_vec())
        .collect();
    assert_eq!(published.len(), 2);
    assert!(
        !published.contains(&first),
        "the expired CA is not published"
    );
}

#[test]
fn published_authorities_carry_each_keys_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let mut ca = CaManager::open(options(dir.path()), now).unwrap();
    ca.prepare_next(now + HOUR).unwrap();
    let published = ca.published_authorities();
    let bundle = bundle_of(&ca);
    assert_eq!(published.x509.len(), 2);
    assert_eq!(published.jwt.len(), 2);
    for (authority, _) in &published.x509 {
        assert!(bundle.x509_authorities().contains(authority));
    }
    let status = ca.status();
    for (authority, not_after) in &published.jwt {
        assert_eq!(bundle.jwt_authority(authority.kid()), Some(authority));
        let key = status.iter().find(|k| k.id == authority.kid()).unwrap();
        assert_eq!(*not_after, UNIX_EPOCH + Duration::from_secs(key.not_after));
    }
    let jwt_expiries: Vec<SystemTime> = published.jwt.iter().map(|(_, at)| *at).collect();
    assert_eq!(
        jwt_expiries[1].duration_since(jwt_expiries[0]).unwrap(),
        HOUR,
        "each key expires on its own schedule"
    );
    let x509_expiries: Vec<u64> = status
        .iter()
        .filter(|k| k.kind == "x509")
        .map(|k| k.not_after)
        .collect();
    for ((_, not_after), expected) in published.x509.iter().zip(x509_expiries) {
        assert_eq!(*not_after, UNIX_EPOCH + Duration::from_secs(expected));
    }
}

#[test]
fn forced_rotation_publishes_then_activates() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let mut ca = CaManager::open(options(dir.path()), now).unwrap();
    assert!(matches!(
        ca.activate_prepared(),
        Err(CaError::NothingPrepared)
    ));
    let old_kid = ca.active_jwt().0.kid().to_owned();
    assert!(ca.prepare_next(now).unwrap());
    assert!(!ca.prepare_next(now).unwrap(), "idempotent while prepared");
    assert_eq!(bundle_of(&ca).jwt_authorities().len(), 2);
    assert_eq!(ca.active_jwt().0.kid(), old_kid);
    ca.activate_prepared().unwrap();
    assert_ne!(ca.active_jwt().0.kid(), old_kid);
    // Survives a restart in the rotated state.
    let reopened = CaManager::open(options(dir.path()), now).unwrap();
    assert_ne!(reopened.active_jwt().0.kid(), old_kid);
    assert_eq!(reopened.x509_authorities().len(), 2);
}

#[test]
fn minted_svids_and_tokens_verify_against_the_published_bundle_across_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let mut ca = CaManager::open(options(dir.path()), now).unwrap();
    let id = SpiffeId::parse("spiffe://alpha.test/web").unwrap();
    let old_chain = ca.mint_x509_svid(&id, &workload_key(), HOUR, &[]).unwrap();
    let (old_token, _) = ca
        .sign_jwt_svid(&id, &["aud".to_owned()], HOUR, now)
        .unwrap();
    ca.prepare_next(now).unwrap();
    ca.activate_prepared().unwrap();
    let new_chain = ca.mint_x509_svid(&id, &workload_key(), HOUR, &[]).unwrap();
    let (new_token, _) = ca
        .sign_jwt_svid(&id, &["aud".to_owned()], HOUR, now)
        .unwrap();
    let bundles: BundleSet = [bundle_of(&ca)].into_iter().collect();
    for chain in [&old_chain, &new_chain] {
        let verified = verify_x509_svid(chain, &bundles, now, SvidUsage::ClientAuth).unwrap();
        assert_eq!(verified.spiffe_id(), &id);
    }
    for token in [&old_token, &new_token] {
        let validated = JwtValidator::new()
            .validate(token, "aud", &bundles, now)
            .unwrap();
        assert_eq!(validated.spiffe_id, id);
    }
}

#[test]
fn jwt_lifetime_is_clamped_to_the_key_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = CaManager::open(options(dir.path()), now).unwrap();
    let id = SpiffeId::parse("spiffe://alpha.test/web").unwrap();
    let (_, expiry) = ca
        .sign_jwt_svid(&id, &["a".to_owned()], 100 * HOUR, now)
        .unwrap();
    assert!(expiry <= now + 24 * HOUR);
}

#[test]
fn upstream_ca_signs_intermediates_and_the_bundle_holds_the_upstream_root() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let upstream = CaSigner::self_signed(
        &CaParams::new(TrustDomain::new("alpha.test").unwrap()).with_ttl(10 * 24 * HOUR),
        upstream_key.clone(),
    )
    .unwrap();
    let cert_file = dir.path().join("upstream.pem");
    let key_file = dir.path().join("upstream.key");
    std::fs::write(
        &cert_file,
        pem::encode(&pem::Pem::new("CERTIFICATE", upstream.certificate())),
    )
    .unwrap();
    fedhub_files::write_private(&key_file, upstream_key.to_pkcs8_pem().as_bytes()).unwrap();
    let mut opts = options(&dir.path().join("ca"));
    opts.upstream = Some((cert_file, key_file.clone()));
    let now = SystemTime::now();
    let mut ca = CaManager::open(opts.clone(), now).unwrap();
    assert_eq!(
        ca.x509_authorities(),
        vec![X509Authority::from_der_unchecked(
            upstream.certificate().to_vec()
        )]
    );
    ca.prepare_next(now).unwrap();
    assert_eq!(ca.x509_authorities().len(), 1, "rotation keeps one root");
    let published = ca.published_authorities();
    assert_eq!(published.x509.len(), 1, "the upstream root, once");
    let latest = ca
        .status()
        .iter()
        .filter(|k| k.kind == "x509")
        .map(|k| k.not_after)
        .max()
        .unwrap();
    assert_eq!(
        published.x509[0].1,
        UNIX_EPOCH + Duration::from_secs(latest),
        "published until the last intermediate under it expires"
    );
    let id = SpiffeId::parse("spiffe://alpha.test/web").unwrap();
    let chain = ca.mint_x509_svid(&id, &workload_key(), HOUR, &[]).unwrap();
    assert_eq!(chain.len(), 2, "leaf and intermediate");
    let bundles: BundleSet = [bundle_of(&ca)].into_iter().collect();
    verify_x509_svid(&chain, &bundles, now, SvidUsage::ServerAuth).unwrap();

    // A world-readable upstream key is refused with the fix in the message.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = CaManager::open(opts, now).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn corrupt_storage_is_reported_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    drop(CaManager::open(options(dir.path()), now).unwrap());
    std::fs::write(dir.path().join("state.json"), b"{not json").unwrap();
    let err = CaManager::open(options(dir.path()), now).unwrap_err();
    assert!(matches!(err, CaError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("backup"), "{err}");
}

/// The ids of the key files in `dir`, sorted.
fn key_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "state.json")
        .collect();
    names.sort();
    names
}

#[test]
fn a_crash_while_an_expired_key_is_removed_leaves_a_ca_that_opens() {
    // The state still lists the first key, but its files are gone: what a crash leaves
    // between removing an expired key's files and storing the state without it.
    let dir = tempfile::tempdir().unwrap();
    let t0 = SystemTime::now();
    let mut ca = CaManager::open(options(dir.path()), t0).unwrap();
    let first = ca.status()[0].id.clone();
    ca.tick(t0 + 12 * HOUR).unwrap();
    ca.tick(t0 + 20 * HOUR).unwrap();
    drop(ca);
    for kind in ["x509", "jwt"] {
        std::fs::remove_file(dir.path().join(format!("{kind}-{first}.key"))).ok();
    }
    std::fs::remove_file(dir.path().join(format!("x509-{first}.pem"))).ok();
    let ca = CaManager::open(options(dir.path()), t0 + 25 * HOUR).unwrap();
    assert!(ca.status().iter().all(|key| key.id != first));
    assert_eq!(ca.x509_authorities().len(), 2);
}

#[test]
fn expired_keys_leave_the_state_before_their_files_go() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = SystemTime::now();
    let mut ca = CaManager::open(options(dir.path()), t0).unwrap();
    let first = ca.status()[0].id.clone();
    ca.tick(t0 + 12 * HOUR).unwrap();
    ca.tick(t0 + 20 * HOUR).unwrap();
    // The state cannot be written (a directory stands in its place): the tick that drops the
    // expired first key fails, and the key's files must still be there for the stored state.
    let state = dir.path().join("state.json");
    let stored = std::fs::read(&state).unwrap();
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("blocker"), b"").unwrap();
    assert!(ca.tick(t0 + 25 * HOUR).is_err());
    let first_key = dir.path().join(format!("x509-{first}.key"));
    assert!(
        first_key.exists(),
        "files removed before the state was stored"
    );
    drop(ca);

    std::fs::remove_dir_all(&state).unwrap();
    std::fs::write(&state, stored).unwrap();
    let ca = CaManager::open(options(dir.path()), t0 + 25 * HOUR).unwrap();
    assert!(ca.status().iter().all(|key| key.id != first));
    assert!(
        !first_key.exists(),
        "removed once the state no longer names it"
    );
}

#[test]
fn key_files_no_key_uses_are_removed_at_open_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    drop(CaManager::open(options(dir.path()), now).unwrap());
    let kept = key_files(dir.path());
    // A key written just before a crash, before the state that would name it.
    for orphan in ["x509-0123abcd.key", "x509-0123abcd.pem", "jwt-0123abcd.key"] {
        std::fs::write(dir.path().join(orphan), b"orphan").unwrap();
    }
    // Writes a crash interrupted before their rename.
    for interrupted in [
        ".x509-4567cdef.key.tmp",
        ".jwt-4567cdef.key.tmp",
        ".state.json.tmp",
    ] {
        std::fs::write(dir.path().join(interrupted), b"partial").unwrap();
    }
    std::fs::write(dir.path().join(".notes.txt.tmp"), b"an operator's file").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"an operator's file").unwrap();
    let ca = CaManager::open(options(dir.path()), now).unwrap();
    let mut expected = kept.clone();
    expected.push("notes.txt".into());
    expected.push(".notes.txt.tmp".into());
    expected.sort();
    assert_eq!(key_files(dir.path()), expected);
    assert_eq!(ca.x509_authorities().len(), 1);
}

#[test]
fn only_names_this_manager_writes_count_as_key_files() {
    assert_eq!(key_file_id("x509-ab12.key"), Some("ab12"));
    assert_eq!(key_file_id("x509-ab12.pem"), Some("ab12"));
    assert_eq!(key_file_id("jwt-ab12.key"), Some("ab12"));
    for other in [
        "jwt-ab12.pem",
        "state.json",
        "x509-.key",
        "x509-zz.key",
        "upstream.key",
    ] {
        assert_eq!(key_file_id(other), None, "{other}");
    }
}

#[test]
fn the_hub_svid_signer_is_the_ca_published_longest() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = SystemTime::now();
    let mut ca = CaManager::open(options(dir.path()), t0).unwrap();
    let first = ca.active_x509();
    assert_eq!(
        ca.hub_svid_signer(t0, HOUR).certificate(),
        first.certificate()
    );

    // A forced rotation with activation: the new CA signs workloads at once, but peers that
    // authenticate the hub with the bundle they hold have not seen it yet.
    ca.prepare_next(t0 + 10 * HOUR).unwrap();
    ca.activate_prepared().unwrap();
    let second = ca.active_x509();
    assert_ne!(second.certificate(), first.certificate());
    assert_eq!(
        ca.hub_svid_signer(t0 + 10 * HOUR, HOUR).certificate(),
        first.certificate(),
        "the CA peers already hold"
    );
    // Less than one SVID lifetime left on the first CA: the second signs.
    assert_eq!(
        ca.hub_svid_signer(t0 + 23 * HOUR + HOUR / 2, HOUR)
            .certificate(),
        second.certificate()
    );
}
