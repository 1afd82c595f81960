//! Where the Workload API is: `--socket` or `SPIFFE_ENDPOINT_SOCKET` (checklist WEP-5..7).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

/// The environment variable a workload finds its Workload API address in (WEP-5).
pub const SOCKET_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Where an address came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The `--socket` flag.
    Flag,
    /// The `SPIFFE_ENDPOINT_SOCKET` variable.
    Env,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "--socket",
            Self::Env => SOCKET_ENV,
        })
    }
}

/// Why no usable Workload API address was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Neither `--socket` nor `SPIFFE_ENDPOINT_SOCKET` is set.
    #[error(
        "no Workload API address: pass --socket /path/to/agent.sock or set \
         {SOCKET_ENV}=unix:///path/to/agent.sock"
    )]
    NotSet,
    /// `SPIFFE_ENDPOINT_SOCKET` is not valid Unicode.
    #[error("{SOCKET_ENV} is not valid UTF-8; set it to unix:///path/to/agent.sock")]
    NotUnicode,
    /// The address breaks a rule of the Workload Endpoint spec.
    #[error("{origin} {value:?} is not a valid Workload API address: {problem}")]
    Invalid {
        /// Where the address came from.
        origin: Origin,
        /// The address as given.
        value: String,
        /// What is wrong and how to write it instead.
        problem: String,
    },
}

/// The Unix socket of a Workload API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSocket {
    path: PathBuf,
}

impl WorkloadSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves the address from `--socket` (a `unix:` URI or an absolute path) or, without
    /// it, from the value of `SPIFFE_ENDPOINT_SOCKET` (a `unix:` URI only, WEP-6).
    ///
    /// # Errors
    /// [`EndpointError`] naming the source and the rule broken.
    pub fn resolve(flag: Option<&str>, env: Option<OsString>) -> Result<Self, EndpointError> {
        if let Some(value) = flag {
            return Self::from_flag(value);
        }
        let value = env.ok_or(EndpointError::NotSet)?;
        let value = value.into_string().map_err(|_| EndpointError::NotUnicode)?;
        if value.is_empty() {
            return Err(EndpointError::NotSet);
        }
        Self::from_uri(&value, Origin::Env)
    }

    /// `--socket`: an absolute path as it is, or a `unix:` URI.
    fn from_flag(value: &str) -> Result<Self, EndpointError> {
        if value.starts_with('/') {
            return Ok(Self {
                path: PathBuf::from(value),
            });
        }
        if value.contains(':') {
            return Self::from_uri(value, Origin::Flag);
        }
        Err(invalid(
            Origin::Flag,
            value,
            "a relative path; give an absolute path or unix:///absolute/path",
        ))
    }

    /// A `unix:` URI whose authority is empty and whose path is the absolute socket path,
    /// with nothing else (WEP-7).
    fn from_uri(value: &str, origin: Origin) -> Result<Self, EndpointError> {
        let fail = |problem: &str| invalid(origin, value, problem);
        let url = Url::parse(value)
            .map_err(|e| fail(&format!("not a URI ({e}); write unix:///absolute/path")))?;
        match url.scheme() {
            "unix" => {}
            "tcp" => {
                return Err(fail(
                    "tcp endpoints are not supported: fedhub agents serve the Workload API on a \
                     Unix socket; write unix:///absolute/path",
                ));
            }
            other => {
                return Err(fail(&format!(
                    "the scheme must be unix, not {other:?}; write unix:///absolute/path"
                )));
            }
        }
        if url.cannot_be_a_base() {
            return Err(fail(
                "the path must be absolute; write unix:///absolute/path (three slashes)",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(fail(
                "it has user information; the authority must be empty, as in unix:///path",
            ));
        }
        if let Some(host) = url.host_str().filter(|host| !host.is_empty()) {
            return Err(fail(&format!(
                "it has the host {host:?}; the authority must be empty and the path absolute, \
                 as in unix:///run/agent.sock (three slashes)"
            )));
        }
        if url.query().is_some() {
            return Err(fail("it has a query (?…); nothing may follow the path"));
        }
        if url.fragment().is_some() {
            return Err(fail("it has a fragment (#…); nothing may follow the path"));
        }
        if matches!(url.path(), "" | "/") {
            return Err(fail(
                "it names no socket; write unix:///absolute/path/to/agent.sock",
            ));
        }
        let path = url
            .to_file_path()
            .map_err(|()| fail("the path is not a file path"))?;
        Ok(Self { path })
    }
}

impl fmt::Display for WorkloadSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unix://{}", self.path.display())
    }
}

fn invalid(origin: Origin, value: &str, problem: &str) -> EndpointError {
    EndpointError::Invalid {
        origin,
        value: value.to_owned(),
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(value: &str) -> Result<WorkloadSocket, EndpointError> {
        WorkloadSocket::resolve(None, Some(value.into()))
    }

    fn problem(result: Result<WorkloadSocket, EndpointError>) -> String {
        match result.unwrap_err() {
            EndpointError::Invalid { problem, .. } => problem,
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn unix_uris_with_empty_authority_and_absolute_path_are_accepted() {
        let socket = env("unix:///run/fedhub/agent.sock").unwrap();
        assert_eq!(socket.path(), Path::new("/run/fedhub/agent.sock"));
        assert_eq!(socket.to_string(), "unix:///run/fedhub/agent.sock");
        // Percent-encoding is decoded.
        let socket = env("unix:///tmp/my%20dir/a.sock").unwrap();
        assert_eq!(socket.path(), Path::new("/tmp/my dir/a.sock"));
        // An absent authority is as empty as an empty one.
        assert_eq!(env("unix:/a.sock").unwrap().path(), Path::new("/a.sock"));
    }

    #[test]
    fn the_checklist_examples_of_invalid_unix_uris_are_rejected() {
        assert!(problem(env("unix://run/agent.sock")).contains("host \"run\""));
        assert!(problem(env("unix:agent.sock")).contains("must be absolute"));
        assert!(problem(env("unix://")).contains("names no socket"));
        assert!(problem(env("unix:///")).contains("names no socket"));
        assert!(problem(env("unix:///a.sock?x=1")).contains("query"));
        assert!(problem(env("unix:///a.sock#f")).contains("fragment"));
        assert!(problem(env("unix://user@h/a.sock")).contains("user information"));
        // The URI parser already refuses an empty host with user information or a port.
        assert!(problem(env("unix://user@/a.sock")).contains("empty host"));
        assert!(problem(env("unix://:80/a.sock")).contains("empty host"));
    }

    #[test]
    fn other_schemes_and_plain_paths_in_the_environment_are_rejected() {
        assert!(problem(env("tcp://127.0.0.1:8000")).contains("not supported"));
        assert!(problem(env("http:///a.sock")).contains("scheme must be unix"));
        // The variable holds a URI, never a bare path (WEP-6).
        assert!(problem(env("/run/agent.sock")).contains("not a URI"));
        assert!(problem(env("agent.sock")).contains("not a URI"));
    }

    #[test]
    fn the_flag_also_takes_an_absolute_path_and_wins_over_the_environment() {
        let from_flag =
            WorkloadSocket::resolve(Some("/tmp/x.sock"), Some("unix:///other.sock".into()))
                .unwrap();
        assert_eq!(from_flag.path(), Path::new("/tmp/x.sock"));
        let uri = WorkloadSocket::resolve(Some("unix:///tmp/y.sock"), None).unwrap();
        assert_eq!(uri.path(), Path::new("/tmp/y.sock"));
        let error = WorkloadSocket::resolve(Some("x.sock"), None).unwrap_err();
        assert!(error.to_string().starts_with("--socket \"x.sock\""));
        assert!(error.to_string().contains("relative path"));
        let error = WorkloadSocket::resolve(Some("unix://h/x"), None).unwrap_err();
        assert!(error.to_string().starts_with("--socket"));
    }

    #[test]
    fn nothing_set_says_how_to_set_it() {
        for unset in [None, Some(OsString::new())] {
            let error = WorkloadSocket::resolve(None, unset).unwrap_err();
            assert!(matches!(error, EndpointError::NotSet));
            assert!(
                error
                    .to_string()
                    .contains("SPIFFE_ENDPOINT_SOCKET=unix:///")
            );
        }
    }
}
