//! `/v1/audit`: the audit log, newest first, optionally of one trust domain.

use axum::Json;
use axum::extract::State;
use fedhub_registry::{AuditEvent, AuditQuery};
use serde::Deserialize;

use super::{Params, trust_domain};
use crate::admin::api::{AuditEventView, AuditList, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT, ts};
use crate::admin::{AdminState, ApiError};

/// The query of `GET /v1/audit`; numbers are read here so that a bad one gets a message that
/// says what is allowed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::admin) struct AuditParams {
    trust_domain: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

impl AuditParams {
    fn query(self) -> Result<AuditQuery, ApiError> {
        let limit = match self.limit {
            None => DEFAULT_AUDIT_LIMIT,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|limit| (1..=MAX_AUDIT_LIMIT).contains(limit))
                .ok_or_else(|| {
                    ApiError::Invalid(format!(
                        "limit {text:?}: must be a whole number from 1 to {MAX_AUDIT_LIMIT}"
                    ))
                })?,
        };
        let before = self
            .before
            .map(|text| {
                text.parse::<u64>().map_err(|_| {
                    ApiError::Invalid(format!(
                        "before {text:?}: must be an event id (a whole number)"
                    ))
                })
            })
            .transpose()?;
        let trust_domain = self
            .trust_domain
            .as_deref()
            .map(|name| {
                let td = trust_domain(name)?;
                // A bare name: the registry stores targets that way.
                if td.name() == name {
                    Ok(td)
                } else {
                    Err(ApiError::Invalid(format!(
                        "trust domain {name:?}: give the bare name, e.g. {}",
                        td.name()
                    )))
                }
            })
            .transpose()?;
        Ok(AuditQuery {
            trust_domain,
            before,
            limit,
        })
    }
}

fn view(event: AuditEvent) -> AuditEventView {
    AuditEventView {
        id: event.id,
        at: ts(event.at),
        actor: event.actor,
        action: event.action,
        target: event.target,
        details: event.details,
    }
}

/// `GET /v1/audit?trust_domain=&limit=&before=`.
pub(in crate::admin) async fn list(
    State(state): State<AdminState>,
    Params(params): Params<AuditParams>,
) -> Result<Json<AuditList>, ApiError> {
    let query = params.query()?;
    let events = state.hub.registry().audit_events(&query).await?;
    Ok(Json(AuditList {
        events: events.into_iter().map(view).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use crate::Hub;
    use crate::admin::{AdminState, router};

    async fn test_hub(dir: &std::path::Path) -> Hub {
        let config = crate::config::HubConfig::from_toml(&format!(
            "trust_domain = \"alpha.test\"\ndata_dir = \"{}\"\n",
            dir.display()
        ))
        .unwrap();
        Hub::open(config).await.unwrap()
    }

    async fn get(hub: &Hub, uri: &str) -> (StatusCode, serde_json::Value) {
        let response = router(AdminState::new(hub.clone()))
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn lists_events_newest_first_with_rfc3339_times() {
        let dir = tempfile::tempdir().unwrap();
        let hub = test_hub(dir.path()).await;
        hub.rotate_as("uid:42", false).await.unwrap();
        let (status, body) = get(&hub, "/v1/audit").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), 2, "{body}");
        assert_eq!(events[0]["action"], "own_bundle.publish");
        assert_eq!(events[0]["actor"], "uid:42");
        assert_eq!(events[0]["target"], "alpha.test");
        assert_eq!(events[0]["details"]["old_sequence"], 1);
        assert_eq!(events[0]["details"]["new_sequence"], 2);
        assert!(events[0]["id"].as_u64().unwrap() > events[1]["id"].as_u64().unwrap());
        let at = events[0]["at"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(at).is_ok(), "{at}");

        let (_, body) = get(&hub, "/v1/audit?trust_domain=alpha.test&limit=1").await;
        assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
        let (_, body) = get(&hub, "/v1/audit?trust_domain=beta.test").await;
        assert_eq!(body, serde_json::json!({ "events": [] }));
        let id = events[0]["id"].as_u64().unwrap();
        let (_, body) = get(&hub, &format!("/v1/audit?before={id}")).await;
        assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
    }

    #[tokio::test]
    async fn bad_queries_are_refused_saying_what_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let hub = test_hub(dir.path()).await;
        for (query, expected) in [
            ("limit=0", "from 1 to 1000"),
            ("limit=1001", "from 1 to 1000"),
            ("limit=ten", "from 1 to 1000"),
            ("before=-1", "event id"),
            ("trust_domain=Bad.Example", "trust domain"),
            ("trust_domain=spiffe://alpha.test", "bare name"),
            ("trustdomain=alpha.test", "unknown field"),
        ] {
            let (status, body) = get(&hub, &format!("/v1/audit?{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            let message = body["error"].as_str().unwrap_or_default();
            assert!(message.contains(expected), "{query}: {body}");
        }
    }
}
