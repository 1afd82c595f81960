use fedhub_core::x509::{SvidUsage, verify_x509_svid};
use fedhub_core::{Bundle, BundleSet};

use super::*;

pub(crate) fn test_config(dir: &std::path::Path) -> HubConfig {
    HubConfig::from_toml(&format!(
        "trust_domain = \"alpha.test\"\ndata_dir = \"{}\"\n",
        dir.display()
    ))
    .unwrap()
}

#[tokio::test]
async fn open_publishes_the_own_bundle_once_and_restart_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(test_config(dir.path())).await.unwrap();
    let bundle = hub.own_bundle();
    assert_eq!(bundle.sequence(), Some(1));
    assert_eq!(bundle.x509_authorities().len(), 1);
    assert_eq!(bundle.jwt_authorities().len(), 1);
    assert_eq!(bundle.refresh_hint(), Some(Duration::from_secs(300)));
    let served = hub.bundle_endpoint().current();
    assert_eq!(
        Bundle::from_json(hub.trust_domain().clone(), served.body()).unwrap(),
        *bundle
    );
    let stored = hub
        .registry()
        .get_bundle(hub.trust_domain())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.sequence, Some(1));
    hub.registry().close().await;
    drop(hub);

    let reopened = Hub::open(test_config(dir.path())).await.unwrap();
    assert_eq!(
        *reopened.own_bundle(),
        *bundle,
        "no new sequence on restart"
    );
}

#[tokio::test]
async fn rotation_bumps_the_sequence_and_keeps_old_authorities() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(test_config(dir.path())).await.unwrap();
    let mut changes = hub.subscribe_changes();
    changes.borrow_and_update();
    let old_svid = hub.hub_svid();
    hub.rotate(false).await.unwrap();
    let published = hub.own_bundle();
    assert_eq!(published.sequence(), Some(2));
    assert_eq!(published.x509_authorities().len(), 2);
    assert_eq!(published.jwt_authorities().len(), 2);
    assert!(changes.has_changed().unwrap(), "sync streams are woken");
    assert_eq!(
        hub.hub_svid().leaf(),
        old_svid.leaf(),
        "prepared keys do not sign yet"
    );

    hub.rotate(true).await.unwrap();
    assert_eq!(
        hub.own_bundle().sequence(),
        Some(2),
        "activation publishes nothing new"
    );
    // Peers that federate over https_spiffe hold only the bundle they fetched before: the
    // hub keeps presenting an SVID of the CA they know, not one of a CA published just now.
    assert_eq!(
        hub.hub_svid().leaf(),
        old_svid.leaf(),
        "kept after activation"
    );
    let active = hub.ca().active_x509();
    assert!(!issued_by(old_svid.leaf(), active.certificate()));
    // When the hub SVID is renewed, the previous CA still signs it (see
    // `ca::tests::the_hub_svid_signer_is_the_ca_published_longest`).
    hub.tick(SystemTime::now() + Duration::from_secs(31 * 60))
        .await
        .unwrap();
    let new_svid = hub.hub_svid();
    assert_ne!(new_svid.leaf(), old_svid.leaf(), "renewed at half life");
    assert!(
        !issued_by(new_svid.leaf(), active.certificate()),
        "still the previous CA"
    );
    let bundles: BundleSet = [(*hub.own_bundle()).clone()].into_iter().collect();
    for svid in [&old_svid, &new_svid] {
        let verified = verify_x509_svid(
            svid.chain(),
            &bundles,
            SystemTime::now(),
            SvidUsage::ServerAuth,
        )
        .unwrap();
        assert_eq!(verified.spiffe_id(), &hub.hub_id());
    }
    assert_eq!(hub.hub_id().as_str(), "spiffe://alpha.test/fedhub/hub");
}

#[tokio::test]
async fn tick_renews_the_hub_svid_at_half_life() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(test_config(dir.path())).await.unwrap();
    let first = hub.hub_svid();
    hub.tick(SystemTime::now()).await.unwrap();
    assert_eq!(hub.hub_svid().leaf(), first.leaf(), "fresh SVID kept");
    hub.tick(SystemTime::now() + Duration::from_secs(31 * 60))
        .await
        .unwrap();
    assert_ne!(
        hub.hub_svid().leaf(),
        first.leaf(),
        "renewed past half life"
    );
}

#[tokio::test]
async fn data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = test_config(dir.path());
    config.data_dir = data.clone();
    config.database_url = format!("sqlite://{}", data.join("registry.db").display());
    let _hub = Hub::open(config).await.unwrap();
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[tokio::test]
async fn a_second_hub_on_the_same_data_directory_is_refused_with_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(test_config(dir.path())).await.unwrap();
    let Err(error) = Hub::open(test_config(dir.path())).await else {
        panic!("two hubs opened one data directory");
    };
    assert!(matches!(error, HubError::DataDirLocked(_)), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("in use by process {}", std::process::id())),
        "{message}"
    );
    hub.registry().close().await;
    drop(hub);
    Hub::open(test_config(dir.path())).await.unwrap();
}
