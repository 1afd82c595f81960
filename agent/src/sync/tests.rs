use std::collections::HashSet;

use fedhub_core::x509::CaSigner;

use super::*;
use crate::testing::{domain, td};

const TTL: Duration = Duration::from_secs(600);

/// Signs like the hub: entry ids map to SPIFFE IDs; some entries are refused; the whole call
/// can be made to fail.
struct FakeHub {
    ca: CaSigner,
    ids: HashMap<String, SpiffeId>,
    refuse: HashSet<String>,
    down: bool,
    calls: Vec<usize>,
    wrong_id: bool,
}

impl FakeHub {
    fn new(ca: CaSigner) -> Self {
        Self {
            ca,
            ids: HashMap::new(),
            refuse: HashSet::new(),
            down: false,
            calls: Vec::new(),
            wrong_id: false,
        }
    }
}

impl SvidSigner for FakeHub {
    fn sign(
        &mut self,
        request: SignX509SvidsRequest,
    ) -> impl Future<Output = Result<SignX509SvidsResponse, Status>> + Send {
        self.calls.push(request.svids.len());
        let result = if self.down {
            Err(Status::unavailable("hub down"))
        } else {
            request
                .svids
                .iter()
                .map(|params| {
                    if self.refuse.contains(&params.entry_id) {
                        return Err(Status::failed_precondition("bad dns name"));
                    }
                    let mut id = self.ids[&params.entry_id].clone();
                    if self.wrong_id {
                        id = td("own.test").spiffe_id("/impostor").unwrap();
                    }
                    let chain = self
                        .ca
                        .mint_x509_svid(&id, &params.public_key, TTL, &[])
                        .unwrap();
                    Ok(SignedX509Svid {
                        entry_id: params.entry_id.clone(),
                        spiffe_id: id.to_string(),
                        cert_chain: chain,
                        expires_at: 0,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|svids| SignX509SvidsResponse { svids })
        };
        async move { result }
    }
}

fn entry(id: &str, path: &str, revision: i64) -> EntryMessage {
    EntryMessage {
        id: id.into(),
        spiffe_id: format!("spiffe://own.test{path}"),
        parent_id: "spiffe://own.test/fedhub/agent/a".into(),
        selectors: vec!["unix:uid:1".into()],
        federates_with: vec!["partner.test".into()],
        x509_svid_ttl_seconds: 600,
        jwt_svid_ttl_seconds: 300,
        dns_names: vec![],
        hint: String::new(),
        revision,
    }
}

struct Fixture {
    hub: FakeHub,
    bundle: Bundle,
    partner: Bundle,
    engine: SyncEngine,
}

fn fixture() -> Fixture {
    let (ca, bundle) = domain("own.test");
    let (_, partner) = domain("partner.test");
    Fixture {
        hub: FakeHub::new(ca),
        bundle,
        partner,
        engine: SyncEngine::new(td("own.test")),
    }
}

impl Fixture {
    fn message(&mut self, revision: i64, entries: Vec<EntryMessage>) -> SyncSnapshot {
        for entry in &entries {
            self.hub
                .ids
                .insert(entry.id.clone(), SpiffeId::parse(&entry.spiffe_id).unwrap());
        }
        SyncSnapshot {
            revision,
            entries,
            bundle: self.bundle.to_json().into_bytes(),
            federated_bundles: [(
                "partner.test".to_owned(),
                self.partner.to_json().into_bytes(),
            )]
            .into(),
        }
    }

    async fn sync(&mut self, revision: i64, entries: Vec<EntryMessage>, now: SystemTime) -> bool {
        let message = self.message(revision, entries);
        self.engine.apply(message).unwrap();
        self.engine.refresh(&mut self.hub, now).await.unwrap()
    }

    fn ids(&self, now: SystemTime) -> Vec<String> {
        self.engine
            .snapshot(now)
            .unwrap()
            .identities
            .iter()
            .map(|identity| identity.spiffe_id.to_string())
            .collect()
    }

    fn serial(&self, now: SystemTime, path: &str) -> Vec<u8> {
        let snapshot = self.engine.snapshot(now).unwrap();
        let identity = snapshot
            .identities
            .iter()
            .find(|i| i.spiffe_id.path() == path)
            .unwrap();
        identity.svid.leaf().to_vec()
    }
}

#[tokio::test]
async fn a_first_sync_gets_every_entry_an_svid_in_a_stable_order() {
    let mut f = fixture();
    let now = SystemTime::now();
    assert!(
        f.engine.snapshot(now).is_none(),
        "nothing before the first sync"
    );
    assert!(
        f.sync(7, vec![entry("e2", "/web", 1), entry("e1", "/db", 1)], now)
            .await
    );
    assert_eq!(f.engine.revision(), Some(7));
    assert_eq!(
        f.ids(now),
        ["spiffe://own.test/db", "spiffe://own.test/web"]
    );
    let snapshot = f.engine.snapshot(now).unwrap();
    assert!(snapshot.own_bundle.same_authorities(&f.bundle));
    assert!(snapshot.federated[&td("partner.test")].same_authorities(&f.partner));
    let web = &snapshot.identities[1];
    assert_eq!(web.entry_id, "e2");
    assert_eq!(web.selectors, ["unix:uid:1"]);
    assert_eq!(web.federates_with, [td("partner.test")]);
    assert_eq!(f.hub.calls, [2], "one batch");
}

#[tokio::test]
async fn svids_are_renewed_at_half_life_or_when_the_entry_changes() {
    let mut f = fixture();
    let now = SystemTime::now();
    f.sync(1, vec![entry("e1", "/web", 1), entry("e2", "/db", 1)], now)
        .await;
    let web = f.serial(now, "/web");
    let db = f.serial(now, "/db");

    // Same entries again: nothing to sign.
    assert!(
        !f.sync(2, vec![entry("e1", "/web", 1), entry("e2", "/db", 1)], now)
            .await
    );
    assert_eq!(f.hub.calls, [2]);

    // A new revision of one entry: only that one is re-signed.
    assert!(
        f.sync(3, vec![entry("e1", "/web", 2), entry("e2", "/db", 1)], now)
            .await
    );
    assert_eq!(f.hub.calls, [2, 1]);
    assert_ne!(f.serial(now, "/web"), web);
    assert_eq!(f.serial(now, "/db"), db);

    // Past half the lifetime, both are renewed without a new snapshot.
    let wake = f.engine.next_wake(now).unwrap();
    assert!(wake > now + TTL / 2 - Duration::from_secs(120) && wake <= now + TTL / 2);
    let later = wake + Duration::from_secs(5);
    assert!(f.engine.refresh(&mut f.hub, later).await.unwrap());
    assert_eq!(f.hub.calls, [2, 1, 2]);
    assert_ne!(f.serial(later, "/db"), db);
}

#[tokio::test]
async fn removed_entries_disappear_at_once() {
    let mut f = fixture();
    let now = SystemTime::now();
    f.sync(1, vec![entry("e1", "/web", 1), entry("e2", "/db", 1)], now)
        .await;
    f.sync(2, vec![entry("e2", "/db", 1)], now).await;
    assert_eq!(f.ids(now), ["spiffe://own.test/db"]);
    // Coming back, it gets a fresh SVID.
    f.sync(3, vec![entry("e1", "/web", 1), entry("e2", "/db", 1)], now)
        .await;
    assert_eq!(f.hub.calls, [2, 1]);
}

#[tokio::test]
async fn expired_svids_are_never_published() {
    let mut f = fixture();
    let now = SystemTime::now();
    f.sync(1, vec![entry("e1", "/web", 1)], now).await;
    let expired = now + TTL + Duration::from_secs(1);
    assert!(f.ids(expired).is_empty());
    assert_eq!(f.engine.next_wake(expired), None);
    assert!(f.engine.prune(expired));
    assert!(!f.engine.prune(expired));
    assert!(f.ids(now).is_empty(), "pruned for good");
}

#[tokio::test]
async fn an_entry_the_hub_refuses_does_not_hold_up_the_others() {
    let mut f = fixture();
    let now = SystemTime::now();
    f.hub.refuse.insert("e2".into());
    let entries = || {
        vec![
            entry("e1", "/a", 1),
            entry("e2", "/b", 1),
            entry("e3", "/c", 1),
        ]
    };
    assert!(f.sync(1, entries(), now).await);
    assert_eq!(f.ids(now), ["spiffe://own.test/a", "spiffe://own.test/c"]);
    assert_eq!(f.hub.calls, [3, 1, 1, 1], "batch, then one by one");

    // Not asked for again until the retry time, unless the entry changes.
    f.hub.refuse.clear();
    assert!(!f.sync(2, entries(), now).await);
    assert_eq!(f.hub.calls.len(), 4);
    assert_eq!(f.engine.next_wake(now), Some(now + REFUSED_RETRY));
    assert!(
        f.engine
            .refresh(&mut f.hub, now + REFUSED_RETRY)
            .await
            .unwrap()
    );
    assert_eq!(f.ids(now).len(), 3);
}

#[tokio::test]
async fn a_changed_entry_is_retried_before_the_retry_time() {
    let mut f = fixture();
    let now = SystemTime::now();
    f.hub.refuse.insert("e1".into());
    f.sync(1, vec![entry("e1", "/a", 1)], now).await;
    assert!(f.ids(now).is_empty());
    f.hub.refuse.clear();
    assert!(f.sync(2, vec![entry("e1", "/a", 2)], now).await);
    assert_eq!(f.ids(now), ["spiffe://own.test/a"]);
}

#[tokio::test]
async fn an_unreachable_hub_fails_the_refresh_and_keeps_what_is_held() {
    let mut f = fixture();
    let now = SystemTime::now();
    f.sync(1, vec![entry("e1", "/a", 1)], now).await;
    f.hub.down = true;
    let message = f.message(2, vec![entry("e1", "/a", 2), entry("e2", "/b", 1)]);
    f.engine.apply(message).unwrap();
    let status = f.engine.refresh(&mut f.hub, now).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(f.ids(now), ["spiffe://own.test/a"], "the old SVID stays");
}

#[tokio::test]
async fn requests_are_batched() {
    let mut f = fixture();
    let now = SystemTime::now();
    let entries = (0..MAX_BATCH + 6)
        .map(|i| entry(&format!("e{i}"), &format!("/w{i}"), 1))
        .collect();
    f.sync(1, entries, now).await;
    assert_eq!(f.hub.calls, [MAX_BATCH, 6]);
    assert_eq!(f.ids(now).len(), MAX_BATCH + 6);
}

#[tokio::test]
async fn an_svid_for_another_id_is_refused() {
    let mut f = fixture();
    let now = SystemTime::now();
    f.hub.wrong_id = true;
    assert!(!f.sync(1, vec![entry("e1", "/a", 1)], now).await);
    assert!(f.ids(now).is_empty());
    assert_eq!(f.engine.next_wake(now), Some(now + REFUSED_RETRY));
}

#[tokio::test]
async fn an_svid_from_another_ca_is_refused() {
    let mut f = fixture();
    let now = SystemTime::now();
    let (other_ca, _) = domain("own.test");
    f.hub.ca = other_ca;
    f.sync(1, vec![entry("e1", "/a", 1)], now).await;
    assert!(f.ids(now).is_empty());
}

#[test]
fn an_unusable_own_bundle_changes_nothing() {
    let mut f = fixture();
    let good = f.message(1, vec![entry("e1", "/a", 1)]);
    assert!(f.engine.apply(good).unwrap().is_some(), "a new bundle");
    let same = f.message(2, vec![]);
    assert!(
        f.engine.apply(same).unwrap().is_none(),
        "the bundle is unchanged"
    );
    let mut bad = f.message(3, vec![]);
    bad.bundle = b"{}".to_vec();
    assert!(matches!(f.engine.apply(bad), Err(SyncError::Bundle { .. })));
    assert_eq!(f.engine.revision(), Some(2));
    let mut empty = f.message(4, vec![]);
    empty.bundle = Bundle::new(td("own.test")).to_json().into_bytes();
    assert!(
        f.engine.apply(empty).is_err(),
        "a bundle without X.509 authorities"
    );
}

#[test]
fn bad_entries_and_foreign_bundles_are_skipped() {
    let mut f = fixture();
    let mut message = f.message(1, vec![entry("e1", "/a", 1), entry("e2", "/b", 1)]);
    message.entries[1].spiffe_id = "spiffe://elsewhere.test/b".into();
    message
        .federated_bundles
        .insert("Bad Name".into(), b"{}".to_vec());
    message
        .federated_bundles
        .insert("own.test".into(), f.bundle.to_json().into_bytes());
    f.engine.apply(message).unwrap();
    assert_eq!(f.engine.entries.len(), 1);
    assert_eq!(
        f.engine.federated.keys().collect::<Vec<_>>(),
        [&td("partner.test")]
    );
}

#[test]
fn the_refresh_time_is_half_the_lifetime() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    assert_eq!(
        refresh_time(start, start + Duration::from_secs(100)),
        start + Duration::from_secs(50)
    );
    assert_eq!(refresh_time(start, start - Duration::from_secs(1)), start);
}

#[test]
fn a_backdated_svid_is_due_half_way_from_when_it_arrived() {
    let (ca, _) = domain("own.test");
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let id = td("own.test").spiffe_id("/short").unwrap();
    // notBefore is backdated by 30 s; the lifetime from now is 10 s.
    let chain = ca
        .mint_x509_svid(
            &id,
            &key.public_key_der().unwrap(),
            Duration::from_secs(10),
            &[],
        )
        .unwrap();
    let svid = X509Svid::new_checked(chain, key).unwrap();
    let now = SystemTime::now();
    let due = svid_refresh_time(&svid, Some(now));
    assert!(due > now, "not due at once");
    assert!(due <= now + Duration::from_secs(6));
    // Without the arrival time (a stored SVID) the certificate's own start counts.
    assert!(svid_refresh_time(&svid, None) < now);
}
