//! `fedhub audit list`: the hub's audit log (admin writes and every bundle change).

use fedhub_core::TrustDomain;
use fedhub_hub::admin::api::{AuditEventView, AuditList, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT};
use serde_json::Value;

use super::AdminArgs;
use crate::admin_client::query;
use crate::output;

/// The audit log: who changed what, newest first.
#[derive(Debug, clap::Args)]
pub struct AuditCommand {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    action: AuditAction,
}

#[derive(Debug, clap::Subcommand)]
enum AuditAction {
    /// List audit events, newest first: admin writes (entries, agents, bundles, federation,
    /// groups, join tokens) and every bundle change, foreign (`bundle.update` by the
    /// federation manager, `bundle.set`, `bundle.delete`) and own (`own_bundle.publish`,
    /// `own_bundle.activate`, `own_bundle.retire` by the CA or `bundle rotate`).
    ///
    /// The table shows each bundle change's sequence (old→new) and how many authorities it
    /// added (+) and removed (−); `--output json` prints every event with its details: the
    /// SHA-256 fingerprints of X.509 authorities and the key ids of JWT authorities added and
    /// removed.
    List {
        /// Only events about this trust domain: its bundle (own or foreign) and its
        /// federation relationship.
        #[arg(long, value_name = "TRUST_DOMAIN")]
        trust_domain: Option<TrustDomain>,
        /// At most this many events (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = DEFAULT_AUDIT_LIMIT,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_AUDIT_LIMIT)))]
        limit: u32,
        /// Only events older than the event with this id (to page back: the last id shown).
        #[arg(long, value_name = "ID")]
        before: Option<u64>,
    },
}

impl AuditCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<std::process::ExitCode> {
        let Self { admin, action } = self;
        super::run(admin, |ctx| async move {
            match action {
                AuditAction::List {
                    trust_domain,
                    limit,
                    before,
                } => {
                    let limit = limit.to_string();
                    let before = before.map(|id| id.to_string());
                    let path = format!(
                        "/audit{}",
                        query(&[
                            ("trust_domain", trust_domain.as_ref().map(TrustDomain::name)),
                            ("limit", Some(&limit)),
                            ("before", before.as_deref()),
                        ])
                    );
                    let list: AuditList = ctx.client.get(&path).await?;
                    ctx.print(&list, table)
                }
            }
        })
    }
}

fn table(list: &AuditList) -> String {
    if list.events.is_empty() {
        return "no audit events\n".into();
    }
    output::table(
        &[
            "ID",
            "TIME",
            "ACTOR",
            "ACTION",
            "TARGET",
            "SEQUENCE",
            "AUTHORITIES",
        ],
        &list.events,
        |event| {
            vec![
                event.id.to_string(),
                output::time(Some(event.at)),
                event.actor.clone(),
                event.action.clone(),
                event.target.clone(),
                sequence(event),
                authorities(event),
            ]
        },
    )
}

/// `old→new` for a bundle change (`-` for no sequence), else `-`.
fn sequence(event: &AuditEventView) -> String {
    let details = &event.details;
    if details.get("old_sequence").is_none() && details.get("new_sequence").is_none() {
        return "-".into();
    }
    let side = |key: &str| {
        details
            .get(key)
            .and_then(Value::as_u64)
            .map_or_else(|| "-".into(), |s| s.to_string())
    };
    format!("{}→{}", side("old_sequence"), side("new_sequence"))
}

/// `+added −removed` authorities (X.509 and JWT together) for a bundle change, else `-`.
fn authorities(event: &AuditEventView) -> String {
    let details = &event.details;
    let count = |keys: [&str; 2]| -> Option<usize> {
        keys.iter()
            .map(|key| details.get(*key).and_then(Value::as_array).map(Vec::len))
            .sum()
    };
    match (
        count(["x509_authorities_added", "jwt_authorities_added"]),
        count(["x509_authorities_removed", "jwt_authorities_removed"]),
    ) {
        (Some(added), Some(removed)) => format!("+{added} −{removed}"),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use fedhub_hub::admin::api::Timestamp;
    use serde_json::json;

    use super::*;

    fn event(action: &str, details: Value) -> AuditEventView {
        AuditEventView {
            id: 7,
            at: Timestamp(SystemTime::UNIX_EPOCH),
            actor: "uid:0".into(),
            action: action.into(),
            target: "beta.test".into(),
            details,
        }
    }

    #[test]
    fn bundle_changes_show_sequences_and_counts() {
        let change = event(
            "bundle.update",
            json!({
                "old_sequence": 3, "new_sequence": 4,
                "x509_authorities_added": ["a", "b"], "x509_authorities_removed": [],
                "jwt_authorities_added": ["k"], "jwt_authorities_removed": ["j"],
            }),
        );
        assert_eq!(sequence(&change), "3→4");
        assert_eq!(authorities(&change), "+3 −1");
        let first = event(
            "bundle.set",
            json!({
                "old_sequence": null, "new_sequence": 1,
                "x509_authorities_added": [], "x509_authorities_removed": [],
                "jwt_authorities_added": [], "jwt_authorities_removed": [],
            }),
        );
        assert_eq!(sequence(&first), "-→1");
        assert_eq!(authorities(&first), "+0 −0");
    }

    #[test]
    fn other_events_show_dashes() {
        let other = event("entry.create", json!({ "spiffe_id": "spiffe://a.test/x" }));
        assert_eq!(sequence(&other), "-");
        assert_eq!(authorities(&other), "-");
        let text = table(&AuditList {
            events: vec![other],
        });
        assert!(text.starts_with("ID"), "{text}");
        assert!(text.contains("entry.create"), "{text}");
        assert_eq!(table(&AuditList { events: vec![] }), "no audit events\n");
    }
}
