//! The audit trail of the CA's own key changes that the own bundle does not show: which keys
//! began signing (`own_bundle.activate`) and which stopped (`own_bundle.retire`). Keys entering
//! and leaving the bundle are audited by the publication itself (`own_bundle.publish`, in the
//! registry's transaction).

use fedhub_registry::{AuthorityKind, KeyActivation};

use super::Hub;
use crate::ca::{CaManager, KeyState, KeyStatus};

/// The keys of `ca` whose signing state changed since `before` (its [`CaManager::status`]
/// then): activated (signing now, not before) and retired (signing before, retired now),
/// named as the audit log names them ([`CaManager::audit_key_name`]).
pub(super) fn activation(hub: &Hub, before: &[KeyStatus], ca: &CaManager) -> KeyActivation {
    let mut activation = KeyActivation {
        replica_id: hub.replica_id().to_owned(),
        trust_domain: hub.trust_domain().clone(),
        activated: Vec::new(),
        retired: Vec::new(),
    };
    for key in ca.status() {
        let was = before
            .iter()
            .find(|old| old.kind == key.kind && old.id == key.id)
            .map(|old| old.state);
        let list = match (was, key.state) {
            (Some(KeyState::Active), KeyState::Retired) => &mut activation.retired,
            (was, KeyState::Active) if was != Some(KeyState::Active) => &mut activation.activated,
            _ => continue,
        };
        let kind = if key.kind == "x509" {
            AuthorityKind::X509
        } else {
            AuthorityKind::Jwt
        };
        if let Some(name) = ca.audit_key_name(key.kind, &key.id) {
            list.push((kind, name));
        }
    }
    activation
}

impl Hub {
    /// The actor of what the hub does by itself: `fedhub-hub:<replica id>`.
    pub(super) fn system_actor(&self) -> String {
        format!("{}:{}", super::SYSTEM_ACTOR, self.replica_id())
    }

    /// Audits `activation` by `actor`. The keys changed already (in the CA's own state), so a
    /// failure is logged and does not undo them.
    pub(super) async fn audit_activation(&self, actor: &str, activation: &KeyActivation) {
        if let Err(error) = self
            .registry()
            .record_key_activation(actor, activation)
            .await
        {
            tracing::warn!(
                %error,
                activated = activation.activated.len(),
                retired = activation.retired.len(),
                "CA keys changed, but the audit log could not record it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use fedhub_registry::{AuditEvent, OWN_BUNDLE_ACTIVATE, OWN_BUNDLE_PUBLISH, OWN_BUNDLE_RETIRE};
    use serde_json::json;

    use crate::Hub;

    /// The audit events after the one with id `after`, oldest first.
    async fn events_after(hub: &Hub, after: u64) -> Vec<AuditEvent> {
        let mut events = hub.registry().list_audit(1000).await.unwrap();
        events.retain(|e| e.id > after);
        events.reverse();
        events
    }

    fn actions(events: &[AuditEvent]) -> Vec<&str> {
        events.iter().map(|e| e.action.as_str()).collect()
    }

    #[tokio::test]
    async fn a_forced_rotation_audits_publication_then_activation_by_the_admin() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open(crate::state::tests::test_config(dir.path()))
            .await
            .unwrap();
        let system = format!("fedhub-hub:{}", hub.replica_id());
        let opened = events_after(&hub, 0).await;
        assert_eq!(actions(&opened), [OWN_BUNDLE_PUBLISH]);
        assert_eq!(opened[0].actor, system);
        assert_eq!(opened[0].details["old_sequence"], json!(null));
        assert_eq!(opened[0].details["new_sequence"], 1);
        assert_eq!(opened[0].details["replica_id"], hub.replica_id());
        let first_x509 = opened[0].details["x509_authorities_added"].clone();
        let first_jwt = opened[0].details["jwt_authorities_added"].clone();

        // Prepared keys: published, not signing.
        let start = opened[0].id;
        hub.rotate_as("uid:42", false).await.unwrap();
        let prepared = events_after(&hub, start).await;
        assert_eq!(
            actions(&prepared),
            [OWN_BUNDLE_PUBLISH],
            "nothing activated"
        );
        assert_eq!(prepared[0].actor, "uid:42");
        assert_eq!(prepared[0].details["old_sequence"], 1);
        assert_eq!(prepared[0].details["new_sequence"], 2);
        let new_x509 = prepared[0].details["x509_authorities_added"].clone();
        let new_jwt = prepared[0].details["jwt_authorities_added"].clone();
        assert_eq!(new_x509.as_array().unwrap().len(), 1);
        assert_eq!(new_jwt.as_array().unwrap().len(), 1);
        assert_eq!(prepared[0].details["x509_authorities_removed"], json!([]));

        // Activated: the bundle stays, the prepared keys sign and the old ones retire.
        let start = prepared[0].id;
        hub.rotate_as("uid:42", true).await.unwrap();
        let activated = events_after(&hub, start).await;
        assert_eq!(
            actions(&activated),
            [OWN_BUNDLE_ACTIVATE, OWN_BUNDLE_RETIRE],
            "no publication: the bundle did not change"
        );
        assert!(activated.iter().all(|e| e.actor == "uid:42"));
        assert_eq!(activated[0].details["x509_keys"], new_x509);
        assert_eq!(activated[0].details["jwt_keys"], new_jwt);
        assert_eq!(activated[0].details["old_sequence"], 2);
        assert_eq!(activated[0].details["new_sequence"], 2);
        assert_eq!(activated[1].details["x509_keys"], first_x509);
        assert_eq!(activated[1].details["jwt_keys"], first_jwt);
    }

    #[tokio::test]
    async fn the_rotation_schedule_audits_as_the_hub() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open(crate::state::tests::test_config(dir.path()))
            .await
            .unwrap();
        let system = format!("fedhub-hub:{}", hub.replica_id());
        let start = events_after(&hub, 0).await[0].id;
        let ttl = hub.config().ca.ttl;
        let now = SystemTime::now();

        // Nothing due: nothing audited.
        hub.tick(now).await.unwrap();
        assert!(events_after(&hub, start).await.is_empty());

        // Half the lifetime: a key is prepared and published.
        hub.tick(now + ttl / 2 + Duration::from_secs(60))
            .await
            .unwrap();
        let prepared = events_after(&hub, start).await;
        assert_eq!(actions(&prepared), [OWN_BUNDLE_PUBLISH]);
        assert_eq!(prepared[0].actor, system);

        // Five sixths: it activates and the old one retires.
        let start = prepared[0].id;
        hub.tick(now + ttl * 5 / 6 + Duration::from_secs(60))
            .await
            .unwrap();
        let activated = events_after(&hub, start).await;
        assert_eq!(
            actions(&activated),
            [OWN_BUNDLE_ACTIVATE, OWN_BUNDLE_RETIRE]
        );
        assert!(activated.iter().all(|e| e.actor == system));
        assert_eq!(
            activated[0].details["x509_keys"],
            prepared[0].details["x509_authorities_added"]
        );
    }
}
