//! JWT-SVIDs: the issuer the sync layer implements, and the agent's token cache.
//!
//! JWT-SVIDs are minted by the hub (the agent holds no JWT signing key). The sync layer
//! implements [`JwtSvidIssuer`]; the Workload API puts a cache in front of it that reuses a
//! token for the same SPIFFE ID and audience set until half its lifetime is gone.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use fedhub_core::SpiffeId;
use futures::future::BoxFuture;

use crate::cache::Identity;

/// A JWT-SVID as issued: the compact token and its `exp`.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSvidToken {
    /// The JWS compact serialization.
    pub token: String,
    /// The token's expiry (`exp`).
    pub expiry: SystemTime,
}

impl fmt::Debug for JwtSvidToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvidToken")
            .field("token", &"<redacted>")
            .field("expiry", &self.expiry)
            .finish()
    }
}

/// Why a JWT-SVID could not be issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The issuer cannot issue right now (e.g. the hub is unreachable); the Workload API
    /// answers `UNAVAILABLE` and the caller may retry.
    #[error("cannot issue a JWT-SVID now: {0}")]
    Unavailable(String),
    /// The hub refused to issue for this identity (e.g. its entry was just deleted); the
    /// Workload API answers `PERMISSION_DENIED`.
    #[error("the hub refused to issue a JWT-SVID: {0}")]
    Denied(String),
}

/// Mints JWT-SVIDs for identities the agent holds. Implemented by the hub sync layer.
pub trait JwtSvidIssuer: Send + Sync {
    /// Issues a JWT-SVID for `identity` with `aud` = `audience` (non-empty, sorted, without
    /// duplicates or empty values).
    ///
    /// # Errors
    /// [`IssueError::Unavailable`] when it cannot issue now, [`IssueError::Denied`] when the
    /// hub refuses.
    fn issue<'a>(
        &'a self,
        identity: &'a Identity,
        audience: &'a [String],
    ) -> BoxFuture<'a, Result<JwtSvidToken, IssueError>>;
}

/// Tokens by SPIFFE ID and audience set, reused until half their lifetime has passed.
/// Holds at most `capacity` tokens.
#[derive(Debug)]
pub(crate) struct JwtSvidCache {
    capacity: usize,
    tokens: Mutex<HashMap<CacheKey, Cached>>,
}

type CacheKey = (SpiffeId, Vec<String>);

#[derive(Debug)]
struct Cached {
    token: String,
    refresh_at: SystemTime,
}

impl JwtSvidCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// A token for `identity` and `audience` at time `now`: the cached one while it is in the
    /// first half of its lifetime, otherwise a fresh one from `issuer`.
    pub(crate) async fn fetch(
        &self,
        issuer: &dyn JwtSvidIssuer,
        identity: &Identity,
        audience: &[String],
        now: SystemTime,
    ) -> Result<String, IssueError> {
        let audience: Vec<String> = audience
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let key = (identity.spiffe_id.clone(), audience);
        if let Some(cached) = self.tokens().get(&key)
            && now < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let fresh = issuer.issue(identity, &key.1).await?;
        self.store(key, &fresh, now);
        Ok(fresh.token)
    }

    fn store(&self, key: CacheKey, issued: &JwtSvidToken, issued_at: SystemTime) {
        let Ok(lifetime) = issued.expiry.duration_since(issued_at) else {
            return;
        };
        let refresh_at = issued_at + lifetime / 2;
        let mut tokens = self.tokens();
        if tokens.len() >= self.capacity && !tokens.contains_key(&key) {
            tokens.retain(|_, cached| issued_at < cached.refresh_at);
            if tokens.len() >= self.capacity {
                let oldest = tokens
                    .iter()
                    .min_by_key(|(_, cached)| cached.refresh_at)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    tokens.remove(&oldest);
                }
            }
        }
        tokens.insert(
            key,
            Cached {
                token: issued.token.clone(),
                refresh_at,
            },
        );
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Cached>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::testing::{self, domain};

    /// Issues `token-<n>` valid for 100 s from the wall clock the test pretends.
    struct Counting {
        calls: AtomicUsize,
        now: SystemTime,
    }

    impl Counting {
        /// An issuer that has issued nothing, and the time it pretends it is.
        fn start() -> (SystemTime, Self) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
            let calls = AtomicUsize::new(0);
            (now, Self { calls, now })
        }
    }

    impl JwtSvidIssuer for Counting {
        fn issue<'a>(
            &'a self,
            identity: &'a Identity,
            audience: &'a [String],
        ) -> BoxFuture<'a, Result<JwtSvidToken, IssueError>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let token = format!("{}|{}|{n}", identity.spiffe_id, audience.join(","));
            let expiry = self.now + Duration::from_secs(100);
            Box::pin(async move { Ok(JwtSvidToken { token, expiry }) })
        }
    }

    fn identity(path: &str) -> Identity {
        testing::identity(&domain("own.test").0, path, &["unix:uid:1"], &[])
    }

    fn aud(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[tokio::test]
    async fn a_token_is_reused_until_half_its_lifetime_is_gone() {
        let (t0, issuer) = Counting::start();
        let cache = JwtSvidCache::new(16);
        let web = identity("/web");

        let first = cache
            .fetch(&issuer, &web, &aud(&["b", "a"]), t0)
            .await
            .unwrap();
        assert_eq!(first, "spiffe://own.test/web|a,b|0", "audience is sorted");
        let same_set = aud(&["a", "b", "a"]);
        let at_49 = t0 + Duration::from_secs(49);
        assert_eq!(
            cache.fetch(&issuer, &web, &same_set, at_49).await.unwrap(),
            first
        );
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);

        let other_aud = cache
            .fetch(&issuer, &web, &aud(&["a"]), at_49)
            .await
            .unwrap();
        assert_ne!(other_aud, first);
        let db = identity("/db");
        let other_id = cache.fetch(&issuer, &db, &aud(&["a", "b"]), at_49).await;
        assert_ne!(other_id.unwrap(), first);

        let at_50 = t0 + Duration::from_secs(50);
        let renewed = cache
            .fetch(&issuer, &web, &aud(&["a", "b"]), at_50)
            .await
            .unwrap();
        assert_ne!(renewed, first, "re-issued at half the lifetime");
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn the_cache_holds_at_most_its_capacity() {
        let (t0, issuer) = Counting::start();
        let cache = JwtSvidCache::new(2);
        let web = identity("/web");
        for audience in ["a", "b", "c", "d"] {
            cache
                .fetch(&issuer, &web, &aud(&[audience]), t0)
                .await
                .unwrap();
        }
        assert_eq!(cache.tokens().len(), 2);
        // The newest stays cached.
        cache.fetch(&issuer, &web, &aud(&["d"]), t0).await.unwrap();
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_already_expired_token_is_not_cached() {
        let (t0, mut issuer) = Counting::start();
        issuer.now = t0 - Duration::from_secs(200);
        let cache = JwtSvidCache::new(2);
        let web = identity("/web");
        cache.fetch(&issuer, &web, &aud(&["a"]), t0).await.unwrap();
        cache.fetch(&issuer, &web, &aud(&["a"]), t0).await.unwrap();
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn debug_hides_the_token() {
        let token = JwtSvidToken {
            token: "secret.token.value".into(),
            expiry: SystemTime::UNIX_EPOCH,
        };
        assert!(!format!("{token:?}").contains("secret"));
    }
}
