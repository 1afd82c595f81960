//! `fedhub api fetch jwt` and `fedhub api validate jwt`.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fedhub_proto::workload::{JwtsvidResponse, ValidateJwtsvidResponse};
use prost_types::value::Kind;
use serde::Serialize;
use serde_json::{Map, Value};

use super::client::ApiError;
use super::output::{expiry, or_dash, timestamp};

/// What `fetch jwt` prints: per JWT-SVID the token and its claims.
#[derive(Debug, Serialize)]
pub struct JwtReport {
    svids: Vec<JwtSvidReport>,
}

#[derive(Debug, Serialize)]
struct JwtSvidReport {
    spiffe_id: String,
    hint: String,
    token: String,
    claims: Map<String, Value>,
    #[serde(skip)]
    now: SystemTime,
}

impl JwtReport {
    /// Decodes the response; the claims are read from the token without verifying it (it
    /// comes from the agent itself).
    ///
    /// # Errors
    /// [`ApiError::Malformed`] when the response holds no SVID, an empty field, or a token
    /// that is not a JWS compact serialization with a JSON payload.
    pub fn new(response: JwtsvidResponse, now: SystemTime) -> Result<Self, ApiError> {
        if response.svids.is_empty() {
            return Err(ApiError::Malformed("the response holds no JWT-SVID".into()));
        }
        let svids = response
            .svids
            .into_iter()
            .enumerate()
            .map(|(index, svid)| {
                let malformed =
                    |problem: String| ApiError::Malformed(format!("JWT-SVID {index}: {problem}"));
                if svid.spiffe_id.is_empty() || svid.svid.is_empty() {
                    return Err(malformed("spiffe_id or svid is empty".into()));
                }
                let claims = unverified_claims(&svid.svid).map_err(malformed)?;
                Ok(JwtSvidReport {
                    spiffe_id: svid.spiffe_id,
                    hint: svid.hint,
                    token: svid.svid,
                    claims,
                    now,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { svids })
    }

    /// Writes the report as text.
    ///
    /// # Errors
    /// When `out` fails.
    pub fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        for (index, svid) in self.svids.iter().enumerate() {
            if index > 0 {
                writeln!(out)?;
            }
            writeln!(out, "SPIFFE ID:  {}", svid.spiffe_id)?;
            writeln!(out, "Hint:       {}", or_dash(&svid.hint))?;
            writeln!(out, "Audience:   {}", audience(&svid.claims))?;
            if let Some(issued) = time_claim(&svid.claims, "iat") {
                writeln!(out, "Issued:     {}", timestamp(issued))?;
            }
            if let Some(expires) = time_claim(&svid.claims, "exp") {
                writeln!(out, "Expires:    {}", expiry(expires, svid.now))?;
            }
            writeln!(out, "Token:      {}", svid.token)?;
        }
        Ok(())
    }
}

/// What `validate jwt` prints.
#[derive(Debug, Serialize)]
pub struct ValidationReport {
    spiffe_id: String,
    claims: Map<String, Value>,
}

impl ValidationReport {
    /// Decodes the response.
    ///
    /// # Errors
    /// [`ApiError::Malformed`] when `spiffe_id` is empty.
    pub fn new(response: ValidateJwtsvidResponse) -> Result<Self, ApiError> {
        if response.spiffe_id.is_empty() {
            return Err(ApiError::Malformed("spiffe_id is empty".into()));
        }
        Ok(Self {
            spiffe_id: response.spiffe_id,
            claims: response.claims.map(struct_to_json).unwrap_or_default(),
        })
    }

    /// Writes the report as text.
    ///
    /// # Errors
    /// When `out` fails.
    pub fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "Valid JWT-SVID")?;
        writeln!(out, "SPIFFE ID:  {}", self.spiffe_id)?;
        writeln!(out, "Claims:")?;
        let width = self.claims.keys().map(String::len).max().unwrap_or(0);
        for (name, value) in &self.claims {
            let shown = match (name.as_str(), value.as_f64()) {
                ("exp" | "iat" | "nbf", Some(_)) => time_claim(&self.claims, name).map_or_else(
                    || value.to_string(),
                    |t| format!("{value} ({})", timestamp(t)),
                ),
                _ => value.to_string(),
            };
            writeln!(out, "  {name:width$}  {shown}")?;
        }
        Ok(())
    }
}

/// The payload of a JWS compact serialization, not verified.
fn unverified_claims(token: &str) -> Result<Map<String, Value>, String> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWS compact serialization".into());
    };
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| format!("the token payload is not base64url: {e}"))?;
    serde_json::from_slice(&json)
        .map_err(|e| format!("the token payload is not a JSON object: {e}"))
}

/// `aud` as a comma-separated list (it may be a string or a list).
fn audience(claims: &Map<String, Value>) -> String {
    match claims.get("aud") {
        Some(Value::String(one)) => one.clone(),
        Some(Value::Array(many)) => many
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".into(),
    }
}

/// A NumericDate claim as a time.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Option<SystemTime> {
    let seconds = claims.get(name)?.as_f64()?;
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds))
}

/// A protobuf `Struct` (the claims of `ValidateJWTSVID`) as JSON.
pub fn struct_to_json(s: prost_types::Struct) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(name, value)| (name, value_to_json(value)))
        .collect()
}

fn value_to_json(value: prost_types::Value) -> Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => number(n),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.into_iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

/// A protobuf number (a double) as JSON, whole numbers without a fraction (`exp` stays
/// `1700000000`, not `1700000000.0`).
fn number(n: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact
    if n.fract() == 0.0 && n.abs() < EXACT {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a whole number below 2^53 converts exactly"
        )]
        return Value::from(n as i64);
    }
    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use fedhub_proto::workload::Jwtsvid;
    use serde_json::json;

    use super::*;

    fn token(payload: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
        format!("{header}.{payload}.c2ln")
    }

    #[test]
    fn fetched_tokens_are_summarised_from_their_claims() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let response = JwtsvidResponse {
            svids: vec![Jwtsvid {
                spiffe_id: "spiffe://own.test/web".into(),
                svid: token(&json!({
                    "sub": "spiffe://own.test/web",
                    "aud": ["a", "b"],
                    "iat": 1_800_000_000,
                    "exp": 1_800_000_300,
                })),
                hint: String::new(),
            }],
        };
        let report = JwtReport::new(response, now).unwrap();
        let mut out = Vec::new();
        report.table(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("SPIFFE ID:  spiffe://own.test/web\n"),
            "{text}"
        );
        assert!(text.contains("Audience:   a, b\n"), "{text}");
        assert!(
            text.contains("Issued:     2027-01-15T08:00:00Z\n"),
            "{text}"
        );
        assert!(
            text.contains("Expires:    2027-01-15T08:05:00Z (in 5m)\n"),
            "{text}"
        );
        assert!(text.contains("Token:      ey"), "{text}");
    }

    #[test]
    fn tokens_that_are_not_jws_are_malformed() {
        for bad in ["abc", "a.b", "a.b.c.d", "a.!!!.c", "a.bm90IGpzb24.c"] {
            assert!(unverified_claims(bad).is_err(), "{bad}");
        }
        let response = JwtsvidResponse {
            svids: vec![Jwtsvid {
                spiffe_id: "spiffe://own.test/web".into(),
                svid: "not-a-token".into(),
                hint: String::new(),
            }],
        };
        let error = JwtReport::new(response, SystemTime::now()).unwrap_err();
        assert!(error.to_string().contains("JWT-SVID 0"), "{error}");
        assert!(JwtReport::new(JwtsvidResponse { svids: vec![] }, SystemTime::now()).is_err());
    }

    #[test]
    fn claims_structs_become_json_with_whole_numbers_kept_whole() {
        let claims = prost_types::Struct {
            fields: [
                ("exp".to_owned(), Kind::NumberValue(1_700_000_000.0)),
                ("ratio".to_owned(), Kind::NumberValue(0.5)),
                ("sub".to_owned(), Kind::StringValue("spiffe://a/b".into())),
                (
                    "aud".to_owned(),
                    Kind::ListValue(prost_types::ListValue {
                        values: vec![prost_types::Value {
                            kind: Some(Kind::StringValue("x".into())),
                        }],
                    }),
                ),
                ("none".to_owned(), Kind::NullValue(0)),
            ]
            .into_iter()
            .map(|(k, kind)| (k, prost_types::Value { kind: Some(kind) }))
            .collect(),
        };
        let json = Value::Object(struct_to_json(claims));
        assert_eq!(
            json,
            json!({"exp": 1_700_000_000, "ratio": 0.5, "sub": "spiffe://a/b", "aud": ["x"], "none": null})
        );
        assert_eq!(json.to_string().matches("1700000000").count(), 1);
        assert!(!json.to_string().contains("1700000000.0"));
    }
}
