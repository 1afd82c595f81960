//! JWT-SVIDs minted by the hub (`SignJwtSvid`) over the agent's current connection.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedhub_proto::node::SignJwtSvidRequest;
use futures::future::BoxFuture;
use tonic::{Code, Status};

use super::{CALL_TIMEOUT, HubLink};
use crate::cache::Identity;
use crate::jwt::{IssueError, JwtSvidIssuer, JwtSvidToken};

/// Issues JWT-SVIDs through the hub the sync loop is connected to.
#[derive(Debug)]
pub(crate) struct HubJwtIssuer {
    link: Arc<HubLink>,
}

impl HubJwtIssuer {
    pub(crate) fn new(link: Arc<HubLink>) -> Self {
        Self { link }
    }
}

/// The hub's refusals become `PERMISSION_DENIED` for the workload; everything else is worth a
/// retry.
fn issue_error(status: &Status) -> IssueError {
    let message = status.message().to_owned();
    match status.code() {
        Code::PermissionDenied
        | Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound => IssueError::Denied(message),
        _ => IssueError::Unavailable(super::describe_status(status)),
    }
}

impl JwtSvidIssuer for HubJwtIssuer {
    fn issue<'a>(
        &'a self,
        identity: &'a Identity,
        audience: &'a [String],
    ) -> BoxFuture<'a, Result<JwtSvidToken, IssueError>> {
        Box::pin(async move {
            let mut client = self.link.get().ok_or_else(|| {
                IssueError::Unavailable("the agent is not connected to its hub".into())
            })?;
            let request = SignJwtSvidRequest {
                entry_id: identity.entry_id.clone(),
                audience: audience.to_vec(),
            };
            let response = tokio::time::timeout(CALL_TIMEOUT, client.sign_jwt_svid(request))
                .await
                .map_err(|_| IssueError::Unavailable("the hub did not answer in time".into()))?
                .map_err(|status| issue_error(&status))?
                .into_inner();
            if response.spiffe_id != identity.spiffe_id.as_str() {
                return Err(IssueError::Unavailable(format!(
                    "the hub issued the token for {}, not {}; the entry changed",
                    response.spiffe_id, identity.spiffe_id
                )));
            }
            let expiry = u64::try_from(response.expires_at)
                .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .map_err(|_| IssueError::Unavailable("the hub sent an invalid expiry".into()))?;
            Ok(JwtSvidToken {
                token: response.token,
                expiry,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{domain, identity};

    #[tokio::test]
    async fn without_a_connection_issuing_is_unavailable() {
        let (ca, _) = domain("own.test");
        let web = identity(&ca, "/web", &["unix:uid:1"], &[]);
        let issuer = HubJwtIssuer::new(Arc::new(HubLink::default()));
        let error = issuer.issue(&web, &["a".into()]).await.unwrap_err();
        assert!(matches!(error, IssueError::Unavailable(_)), "{error}");
    }

    #[test]
    fn refusals_are_denied_and_the_rest_unavailable() {
        for code in [
            Code::PermissionDenied,
            Code::InvalidArgument,
            Code::FailedPrecondition,
        ] {
            assert!(matches!(
                issue_error(&Status::new(code, "no")),
                IssueError::Denied(_)
            ));
        }
        for code in [Code::Unavailable, Code::ResourceExhausted, Code::Internal] {
            assert!(matches!(
                issue_error(&Status::new(code, "later")),
                IssueError::Unavailable(_)
            ));
        }
    }
}
