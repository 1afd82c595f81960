//! The lab API: each demo workload serves HTTP on loopback so the whole system can be explored
//! with curl. It shows certificates, bundles and tokens, never a private key, and answers `503`
//! with a clear body when the workload's agent cannot be reached.

use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fedhub_core::x509::{SvidUsage, verify_x509_svid};
use fedhub_core::{Bundle, SpiffeId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::workload::{JwtCall, Workload, serial_hex};
use crate::api::client::ApiError;

/// Where a workload finds its peer in the other trust domain.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The peer's mTLS server, `host:port`.
    pub mtls_address: String,
    /// The peer's lab API base URL.
    pub lab_url: String,
}

/// State of one workload's lab API.
#[derive(Debug, Clone)]
pub struct Lab {
    /// This workload.
    pub me: Workload,
    /// Its mTLS server address.
    pub mtls_address: String,
    /// Its peer.
    pub peer: Peer,
    /// HTTP client for calls to the peer's lab API.
    pub http: reqwest::Client,
}

/// The lab API router.
pub fn router(lab: Lab) -> Router {
    Router::new()
        .route("/spiffe/.well-known/spiffe-bundle", get(spiffe_bundle))
        .route("/spiffe/svid/x509", get(svid_x509))
        .route("/spiffe/svid/x509/chain", get(svid_x509_chain))
        .route("/spiffe/svid/jwt", get(svid_jwt))
        .route("/spiffe/svid/info", get(svid_info))
        .route("/spiffe/validate/jwt", post(validate_jwt))
        .route("/spiffe/validate/x509", post(validate_x509))
        .route("/spiffe/workload", get(workload))
        .route("/spiffe/trust-bundle", get(trust_bundle))
        .route("/spiffe/demo/mtls/call", post(mtls_call))
        .route("/spiffe/demo/proxy/call", post(proxy_call))
        .route("/spiffe/demo/jwt-auth/call", post(jwt_call))
        .route("/spiffe/demo/jwt-auth/whoami", get(jwt_whoami))
        .route("/spiffe/demo/rotation", get(rotation))
        .route("/spiffe/status", get(status))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(256 * 1024))
        .layer(fedhub_idle::trace::layer("lab"))
        .with_state(lab)
}

/// An error answer: `503` when the agent is unreachable, otherwise as given.
struct LabError(StatusCode, String);

impl From<ApiError> for LabError {
    fn from(error: ApiError) -> Self {
        let status = match error {
            ApiError::Connect { .. }
            | ApiError::Timeout { .. }
            | ApiError::Unavailable(_)
            | ApiError::StreamEnded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Denied { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_GATEWAY,
        };
        Self(status, error.to_string())
    }
}

impl From<anyhow::Error> for LabError {
    fn from(error: anyhow::Error) -> Self {
        if let Some(api) = error.downcast_ref::<ApiError>()
            && matches!(
                api,
                ApiError::Connect { .. } | ApiError::Timeout { .. } | ApiError::Unavailable(_)
            )
        {
            return Self(StatusCode::SERVICE_UNAVAILABLE, format!("{error:#}"));
        }
        Self(StatusCode::BAD_GATEWAY, format!("{error:#}"))
    }
}

impl IntoResponse for LabError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type LabResult = Result<Response, LabError>;

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn x509_details(der: &[u8]) -> Value {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return json!({ "error": "unparseable certificate" });
    };
    let validity = cert.validity();
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default();
    json!({
        "subject": cert.subject().to_string(),
        "issuer": cert.issuer().to_string(),
        "serial": cert.tbs_certificate.raw_serial_as_string(),
        "not_before": validity.not_before.to_rfc2822().unwrap_or_default(),
        "not_after": validity.not_after.to_rfc2822().unwrap_or_default(),
        "subject_alternative_names": sans,
        "is_ca": cert.is_ca(),
        "public_key_algorithm": cert.public_key().algorithm.algorithm.to_id_string(),
    })
}

async fn spiffe_bundle(State(lab): State<Lab>) -> LabResult {
    let identity = lab.me.identity().await?;
    let own_td = lab.me.spiffe_id.trust_domain();
    let mut own = identity
        .bundles
        .iter()
        .find(|b| *b.trust_domain() == own_td)
        .cloned()
        .unwrap_or_else(|| Bundle::new(own_td.clone()));
    for bundle in lab.me.jwt_bundles().await? {
        if *bundle.trust_domain() == own_td {
            for authority in bundle.jwt_authorities() {
                own.add_jwt_authority(authority.clone());
            }
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], own.to_json()).into_response())
}

async fn svid_x509(State(lab): State<Lab>) -> LabResult {
    let identity = lab.me.identity().await?;
    let chain: Vec<Value> = identity
        .svid
        .chain()
        .iter()
        .map(|c| x509_details(c))
        .collect();
    Ok(Json(json!({
        "spiffe_id": identity.svid.spiffe_id().to_string(),
        "hint": identity.hint,
        "federates_with": identity.federates_with,
        "expires_at": rfc3339(identity.svid.not_after()),
        "chain": chain,
    }))
    .into_response())
}

async fn svid_x509_chain(State(lab): State<Lab>) -> LabResult {
    let identity = lab.me.identity().await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        identity.svid.chain_pem(),
    )
        .into_response())
}

#[derive(Deserialize)]
struct AudienceQuery {
    audience: Option<String>,
}

fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

async fn svid_jwt(State(lab): State<Lab>, Query(query): Query<AudienceQuery>) -> LabResult {
    let Some(audience) = query.audience.filter(|a| !a.is_empty()) else {
        return Err(LabError(
            StatusCode::BAD_REQUEST,
            "pass ?audience=<who the token is for>, e.g. ?audience=spiffe://beta.test/echo".into(),
        ));
    };
    let token = lab.me.jwt_svid(&audience).await?;
    Ok(Json(json!({
        "spiffe_id": lab.me.spiffe_id.to_string(),
        "audience": audience,
        "token": token,
        "claims": claims_of(&token),
    }))
    .into_response())
}

async fn svid_info(State(lab): State<Lab>) -> LabResult {
    let identity = lab.me.identity().await?;
    let remaining = identity
        .svid
        .not_after()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Ok(Json(json!({
        "spiffe_id": identity.svid.spiffe_id().to_string(),
        "trust_domain": lab.me.spiffe_id.trust_domain_name(),
        "serial": serial_hex(identity.svid.leaf()),
        "expires_at": rfc3339(identity.svid.not_after()),
        "expires_in_secs": remaining.as_secs(),
        "federated_trust_domains": identity.federated.iter().map(ToString::to_string).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[derive(Deserialize)]
struct ValidateJwtBody {
    token: String,
    audience: Option<String>,
}

async fn validate_jwt(State(lab): State<Lab>, Json(body): Json<ValidateJwtBody>) -> LabResult {
    let audience = body
        .audience
        .unwrap_or_else(|| lab.me.spiffe_id.to_string());
    match lab.me.validate_jwt(&body.token, &audience).await {
        Ok((spiffe_id, claims)) => Ok(Json(json!({
            "valid": true,
            "spiffe_id": spiffe_id,
            "audience": audience,
            "claims": crate::api::jwt::struct_to_json(claims),
        }))
        .into_response()),
        Err(ApiError::InvalidArgument(reason)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "valid": false, "audience": audience, "error": reason })),
        )
            .into_response()),
        Err(error) => Err(error.into()),
    }
}

#[derive(Deserialize)]
struct ValidateX509Body {
    chain_pem: String,
}

async fn validate_x509(State(lab): State<Lab>, Json(body): Json<ValidateX509Body>) -> LabResult {
    let identity = lab.me.identity().await?;
    let chain: Vec<Vec<u8>> = match pem::parse_many(body.chain_pem.as_bytes()) {
        Ok(blocks) if !blocks.is_empty() => {
            blocks.into_iter().map(pem::Pem::into_contents).collect()
        }
        _ => {
            return Err(LabError(
                StatusCode::BAD_REQUEST,
                "chain_pem must hold PEM CERTIFICATE blocks, leaf first".into(),
            ));
        }
    };
    Ok(
        match verify_x509_svid(
            &chain,
            &identity.bundles,
            SystemTime::now(),
            SvidUsage::ClientAuth,
        ) {
            Ok(verified) => Json(json!({
                "valid": true,
                "spiffe_id": verified.spiffe_id().to_string(),
                "expires_at": rfc3339(verified.not_after()),
            }))
            .into_response(),
            Err(error) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "valid": false, "error": error.to_string() })),
            )
                .into_response(),
        },
    )
}

async fn workload(State(lab): State<Lab>) -> Json<Value> {
    Json(json!({
        "name": lab.me.name,
        "spiffe_id": lab.me.spiffe_id.to_string(),
        "trust_domain": lab.me.spiffe_id.trust_domain_name(),
        "workload_socket": lab.me.socket.display().to_string(),
        "mtls_address": lab.mtls_address,
        "peer": {
            "spiffe_id": lab.peer.spiffe_id.to_string(),
            "mtls_address": lab.peer.mtls_address,
            "lab_api_url": lab.peer.lab_url,
        },
    }))
}

async fn trust_bundle(State(lab): State<Lab>) -> LabResult {
    let identity = lab.me.identity().await?;
    let bundles: serde_json::Map<String, Value> = identity
        .bundles
        .iter()
        .map(|b| {
            (
                b.trust_domain().to_string(),
                json!({
                    "x509_authorities": b.x509_authorities().len(),
                    "pem": b.x509_authorities_pem(),
                }),
            )
        })
        .collect();
    Ok(Json(Value::Object(bundles)).into_response())
}

async fn mtls_call(State(lab): State<Lab>) -> LabResult {
    let call = lab
        .me
        .call_mtls(&lab.peer.mtls_address, &lab.peer.spiffe_id)
        .await?;
    Ok(Json(json!(call)).into_response())
}

/// A plain HTTP client calls a plain HTTP server in `beta.test` through the demo's outbound
/// and inbound proxies (step 7); the answer names the caller the server saw.
async fn proxy_call() -> LabResult {
    Ok(Json(json!(super::proxied::call().await?)).into_response())
}

/// Fetches a JWT-SVID for the peer and presents it to the peer's `whoami` over plain HTTP.
///
/// # Errors
/// When the token cannot be fetched, or the peer refuses it.
pub async fn call_peer_with_jwt(lab: &Lab) -> anyhow::Result<JwtCall> {
    let audience = lab.peer.spiffe_id.to_string();
    let token = lab.me.jwt_svid(&audience).await?;
    let response = lab
        .http
        .get(format!("{}/spiffe/demo/jwt-auth/whoami", lab.peer.lab_url))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        anyhow::bail!(
            "{} refused the token ({status}): {}",
            lab.peer.spiffe_id,
            body["error"]
        );
    }
    Ok(JwtCall {
        audience,
        validated_caller: body["caller"].as_str().unwrap_or_default().to_owned(),
    })
}

async fn jwt_call(State(lab): State<Lab>) -> LabResult {
    Ok(Json(json!(call_peer_with_jwt(&lab).await?)).into_response())
}

async fn jwt_whoami(State(lab): State<Lab>, headers: HeaderMap) -> LabResult {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(LabError(
            StatusCode::UNAUTHORIZED,
            "send a JWT-SVID as Authorization: Bearer <token>".into(),
        ));
    };
    let audience = lab.me.spiffe_id.to_string();
    match lab.me.validate_jwt(token, &audience).await {
        Ok((caller, _)) => Ok(Json(json!({
            "caller": caller,
            "validated_by": lab.me.spiffe_id.to_string(),
        }))
        .into_response()),
        Err(ApiError::InvalidArgument(reason)) => Err(LabError(StatusCode::UNAUTHORIZED, reason)),
        Err(error) => Err(error.into()),
    }
}

async fn rotation(State(lab): State<Lab>) -> LabResult {
    let identity = lab.me.identity().await?;
    let issuer = super::workload::issuer_of(identity.svid.leaf());
    let bundles: serde_json::Map<String, Value> = identity
        .bundles
        .iter()
        .map(|b| {
            let authorities: Vec<Value> = b
                .x509_authorities()
                .iter()
                .map(|a| {
                    let details = x509_details(a.der());
                    json!({ "subject": details["subject"], "not_after": details["not_after"] })
                })
                .collect();
            (b.trust_domain().to_string(), json!(authorities))
        })
        .collect();
    Ok(Json(json!({
        "svid_serial": serial_hex(identity.svid.leaf()),
        "svid_issuer": issuer,
        "svid_expires_at": rfc3339(identity.svid.not_after()),
        "x509_authorities": bundles,
    }))
    .into_response())
}

async fn status(State(lab): State<Lab>) -> LabResult {
    let identity = lab.me.identity().await?;
    Ok(Json(json!({
        "agent_reachable": true,
        "spiffe_id": identity.svid.spiffe_id().to_string(),
        "svid_expires_at": rfc3339(identity.svid.not_after()),
        "federated_trust_domains": identity.federated.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "peer": lab.peer.spiffe_id.to_string(),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn answers_503_with_a_clear_body_when_the_agent_is_unreachable() {
        let lab = Lab {
            me: Workload {
                name: "web",
                spiffe_id: SpiffeId::parse("spiffe://alpha.test/web").unwrap(),
                socket: "/nonexistent/agent.sock".into(),
            },
            mtls_address: "127.0.0.1:1".into(),
            peer: Peer {
                spiffe_id: SpiffeId::parse("spiffe://beta.test/echo").unwrap(),
                mtls_address: "127.0.0.1:1".into(),
                lab_url: "http://127.0.0.1:1".into(),
            },
            http: reqwest::Client::builder()
                .use_preconfigured_tls(
                    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                        rustls::crypto::aws_lc_rs::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                )
                .build()
                .unwrap(),
        };
        for path in [
            "/spiffe/status",
            "/spiffe/svid/info",
            "/spiffe/trust-bundle",
        ] {
            let response = router(lab.clone())
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("is the agent running"), "{path}: {text}");
        }
        // The workload description needs no agent.
        let response = router(lab)
            .oneshot(
                Request::get("/spiffe/workload")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
