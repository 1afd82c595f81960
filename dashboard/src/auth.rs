//! Who may use the dashboard: the per-run token, sessions, the CSRF check and the `Host` and
//! `Origin` checks.
//!
//! - The token (32 random bytes, base64url) is made once per run and printed in the URL only;
//!   it is never logged. `GET /?token=…` with the right token opens a session: a cookie
//!   `fedhub_dashboard_<instance>=<session>; HttpOnly; SameSite=Strict; Path=/` (the instance
//!   suffix keeps two dashboards on one host, e.g. the demo's, from overwriting each other's
//!   cookie) and a redirect to `/`, which drops the token from the address bar and history.
//! - Each session has its own CSRF token (32 random bytes), given to the page in a `<meta>`
//!   tag. Every request with a method other than `GET` and `HEAD` must carry it in
//!   [`CSRF_HEADER`] and an `Origin` equal to `http://<Host>`.
//! - Every request's `Host` must be a loopback name (`localhost`, `127.0.0.0/8`, `[::1]`, any
//!   port, so that an SSH forward works), unless the dashboard was started with
//!   `--allow-remote`: a DNS rebinding page cannot talk to it under its own name.
//!
//! Secrets are compared in constant time (`subtle`).

use std::fmt;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

use crate::error::DashboardError;
use crate::handlers::AppState;

/// The header that carries the session's CSRF token on every state change.
pub const CSRF_HEADER: &str = "x-fedhub-csrf";

/// The cookie name's prefix; the full name adds the dashboard's instance id.
pub const COOKIE_PREFIX: &str = "fedhub_dashboard_";

/// At most this many sessions are kept; opening one more ends the oldest.
pub const MAX_SESSIONS: usize = 32;

/// A session ends this long after it was opened.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// 32 random bytes.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// Fresh random bytes from the system.
    ///
    /// # Errors
    /// [`DashboardError::Random`].
    pub fn random() -> Result<Self, DashboardError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| DashboardError::Random)?;
        Ok(Self(bytes))
    }

    /// base64url without padding (43 characters).
    pub fn text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Whether `text` is this secret, compared in constant time.
    pub fn matches(&self, text: &str) -> bool {
        if text.len() != 43 {
            return false;
        }
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(text) else {
            return false;
        };
        bytes.len() == 32 && bool::from(self.0.ct_eq(&bytes[..]))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug)]
struct Session {
    id: Secret,
    csrf: Secret,
    opened: Instant,
}

/// The token, the sessions and the rules of one dashboard.
#[derive(Debug)]
pub struct Auth {
    token: Secret,
    cookie_name: String,
    allow_remote: bool,
    sessions: Mutex<Vec<Session>>,
}

impl Auth {
    /// A fresh token and instance id, no sessions.
    ///
    /// # Errors
    /// [`DashboardError::Random`].
    pub fn new(allow_remote: bool) -> Result<Self, DashboardError> {
        let instance = Secret::random()?;
        let suffix = instance.0[..4].iter().fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        });
        Ok(Self {
            token: Secret::random()?,
            cookie_name: format!("{COOKIE_PREFIX}{suffix}"),
            allow_remote,
            sessions: Mutex::new(Vec::new()),
        })
    }

    /// The token as it goes into the URL.
    pub(crate) fn token_text(&self) -> String {
        self.token.text()
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Opens a session when `token` is this run's token: returns the `Set-Cookie` value.
    ///
    /// # Errors
    /// [`DashboardError::BadToken`], [`DashboardError::Random`].
    pub fn login(&self, token: &str) -> Result<String, DashboardError> {
        if !self.token.matches(token) {
            return Err(DashboardError::BadToken);
        }
        let session = Session {
            id: Secret::random()?,
            csrf: Secret::random()?,
            opened: Instant::now(),
        };
        let cookie = format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie_name,
            session.id.text()
        );
        let mut sessions = self.lock();
        sessions.retain(|s| s.opened.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS {
            sessions.remove(0);
        }
        sessions.push(session);
        tracing::info!("a browser opened a dashboard session");
        Ok(cookie)
    }

    /// The CSRF token of the session the request's cookie names.
    ///
    /// # Errors
    /// [`DashboardError::NoSession`].
    pub fn session(&self, headers: &HeaderMap) -> Result<Secret, DashboardError> {
        let prefix = format!("{}=", self.cookie_name);
        let presented = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix(&prefix))
            .collect::<Vec<_>>();
        let sessions = self.lock();
        // Every live session is compared with every presented value, found or not.
        let mut found = None;
        for session in sessions
            .iter()
            .filter(|s| s.opened.elapsed() < SESSION_LIFETIME)
        {
            for value in &presented {
                if session.id.matches(value) {
                    found = Some(session.csrf.clone());
                }
            }
        }
        found.ok_or(DashboardError::NoSession)
    }

    /// Checks that `headers` name a loopback `Host` (or any, with `--allow-remote`).
    ///
    /// # Errors
    /// [`DashboardError::Forbidden`].
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), DashboardError> {
        let host = host(headers)?;
        if self.allow_remote || is_loopback_host(host) {
            return Ok(());
        }
        Err(DashboardError::Forbidden(format!(
            "the request names host {host:?}, which is not a loopback name; open the dashboard \
             as http://127.0.0.1:<port> or http://localhost:<port> (through an SSH forward from \
             another machine), or start it with --allow-remote"
        )))
    }

    /// Checks a state change: same origin as the page, and the session's CSRF token.
    ///
    /// # Errors
    /// [`DashboardError::Forbidden`].
    pub fn check_write(&self, headers: &HeaderMap, csrf: &Secret) -> Result<(), DashboardError> {
        let host = host(headers)?;
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                DashboardError::Forbidden(
                    "a change needs the Origin header of the dashboard's page; use the page's \
                     buttons"
                        .into(),
                )
            })?;
        if origin != format!("http://{host}") {
            return Err(DashboardError::Forbidden(format!(
                "a change must come from the dashboard's own page (http://{host}), not from \
                 {origin}"
            )));
        }
        if let Some(site) = headers.get("sec-fetch-site")
            && site.as_bytes() != b"same-origin"
        {
            return Err(DashboardError::Forbidden(
                "a change must come from the dashboard's own page, not another site".into(),
            ));
        }
        let presented = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !csrf.matches(presented) {
            return Err(DashboardError::Forbidden(
                "the CSRF check failed: a change needs the X-Fedhub-Csrf header of this \
                 session's page; reload the page"
                    .into(),
            ));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn host(headers: &HeaderMap) -> Result<&str, DashboardError> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| DashboardError::Invalid("the request has no Host header".into()))
}

/// Whether `host` (`name[:port]`, `[v6][:port]`) names this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// The middleware in front of every route: loopback `Host` always; outside the page (`/`,
/// which admits with the token itself) and its static files, a session; for every method but
/// `GET` and `HEAD`, the write checks.
///
/// # Errors
/// The refusal: [`DashboardError::NoSession`], [`DashboardError::Forbidden`],
/// [`DashboardError::Invalid`].
pub async fn guard(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, DashboardError> {
    let auth = &state.auth;
    auth.check_host(request.headers())?;
    let path = request.uri().path();
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    if reading && (path == "/" || path.starts_with("/assets/")) {
        return Ok(next.run(request).await);
    }
    let csrf = auth.session(request.headers())?;
    if !reading {
        auth.check_write(request.headers(), &csrf)?;
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1:8080",
            "localhost:1",
            "LOCALHOST",
            "[::1]:99",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.test:8080",
            "10.0.0.1",
            "[fe80::1]:1",
            "localhost.evil.test",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn only_the_token_opens_a_session_and_only_its_cookie_names_it() {
        let auth = Auth::new(false).unwrap();
        assert!(matches!(auth.login("nope"), Err(DashboardError::BadToken)));
        let wrong = Secret::random().unwrap().text();
        assert!(matches!(auth.login(&wrong), Err(DashboardError::BadToken)));
        let cookie = auth.login(&auth.token_text()).unwrap();
        assert!(
            cookie.contains("HttpOnly; SameSite=Strict; Path=/"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap();
        let csrf = auth
            .session(&headers(&[("cookie", &format!("a=b; {pair}"))]))
            .unwrap();
        assert!(matches!(
            auth.session(&headers(&[("cookie", "fedhub_dashboard_x=y")])),
            Err(DashboardError::NoSession)
        ));
        let good = [
            ("host", "127.0.0.1:9"),
            ("origin", "http://127.0.0.1:9"),
            ("x-fedhub-csrf", &csrf.text()),
        ];
        auth.check_write(&headers(&good), &csrf).unwrap();
        let mut no_csrf = good;
        no_csrf[2].1 = "";
        assert!(auth.check_write(&headers(&no_csrf), &csrf).is_err());
        let mut other_origin = good;
        other_origin[1].1 = "http://evil.test";
        assert!(auth.check_write(&headers(&other_origin), &csrf).is_err());
        assert!(auth.check_write(&headers(&good[..1]), &csrf).is_err());
    }

    #[test]
    fn remote_hosts_need_allow_remote() {
        let remote = headers(&[("host", "dash.example.test")]);
        assert!(Auth::new(false).unwrap().check_host(&remote).is_err());
        assert!(Auth::new(true).unwrap().check_host(&remote).is_ok());
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let auth = Auth::new(false).unwrap();
        assert!(!format!("{auth:?}").contains(&auth.token_text()));
    }
}
