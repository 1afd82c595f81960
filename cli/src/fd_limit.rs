//! The file descriptor limit of a long-running `hub run` or `agent run`: every connection a
//! listener admits holds at least one descriptor, so a limit below the connection caps lets an
//! attacker with idle connections exhaust the process (every listener, outgoing fetches and
//! database connections fail together) before any cap refuses them.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit, and warns when what the process may
/// open is still below `needed` (what its connection caps can use). Returns the limit now in
/// force (`None`: unlimited).
pub fn raise(needed: u64, setting: &str) -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current;
    if soft != limit.maximum {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        ) {
            Ok(()) => tracing::info!(
                from = ?soft,
                to = ?limit.maximum,
                "raised the open file limit to its hard limit"
            ),
            Err(error) => tracing::info!(
                %error,
                limit = ?soft,
                "cannot raise the open file limit; keeping it"
            ),
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    if let Some(limit) = now
        && limit < needed
    {
        tracing::warn!(
            limit,
            needed,
            "the open file limit is below what the connection caps allow ({setting}): idle \
             connections could exhaust it before a cap refuses them; raise it (LimitNOFILE= in \
             the systemd unit, ulimit -n) or lower the caps"
        );
    }
    now
}
