//! `fedhub agent list|count|show|ban|evict` (and `run`, see [`crate::agent_cmd`]).

use fedhub_core::SpiffeId;
use fedhub_hub::admin::api::AgentView;
use hyper::Method;
use serde_json::json;

use super::{AdminArgs, Ctx};
use crate::admin_client::encode;
use crate::output;

/// The node agent: run it, or manage agents attested to the hub.
#[derive(Debug, clap::Args)]
pub struct AgentCommand {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    action: AgentAction,
}

#[derive(Debug, clap::Args)]
struct AgentIdArg {
    /// The agent's SPIFFE ID.
    #[arg(long, value_name = "ID")]
    spiffe_id: SpiffeId,
}

#[derive(Debug, clap::Subcommand)]
enum AgentAction {
    /// Run the node agent until SIGTERM or SIGINT: attest to the hub (or resume from the data
    /// directory), keep SVIDs fresh, and serve the SPIFFE Workload API.
    ///
    /// Exits non-zero, naming the setting, when the configuration, the data directory or the
    /// socket cannot be used, or when the hub refuses the agent for good. The admin API flags
    /// do not apply.
    Run(crate::agent_cmd::RunArgs),
    /// Check an agent configuration without starting anything; exit 0 when it is valid, 1
    /// when not.
    ///
    /// Reads the file, its FEDHUB_AGENT__… overrides and FEDHUB_AGENT_JOIN_TOKEN, and runs
    /// every check of `agent run` that binds no socket and contacts no hub: keys and types,
    /// values, and the files named (trust bundle, x509pop certificate and key) read as the
    /// start reads them. Each problem names its key and where the value came from: the file
    /// or an environment variable. The admin API flags do not apply.
    Validate(crate::hub_cmd::ValidateArgs),
    /// The agent's configuration file. The admin API flags do not apply.
    #[command(subcommand)]
    Config(crate::hub_cmd::ConfigCommand),
    /// Ask a running agent whether it serves: exit 0 when its Workload API answers a
    /// FetchX509Bundles call (with bundles, or by refusing this caller an identity: it has
    /// synced), 1 otherwise (unreachable, no answer in time, not synced with its hub yet),
    /// with a one-line reason. For systemd and Kubernetes probes. The admin API flags do not
    /// apply.
    Healthcheck(crate::agent_cmd::HealthcheckArgs),
    #[command(flatten)]
    Admin(AdminAction),
}

#[derive(Debug, clap::Subcommand)]
enum AdminAction {
    /// List attested agents.
    List,
    /// Count attested agents.
    Count,
    /// Show one agent.
    Show(AgentIdArg),
    /// Ban an agent: it may neither renew its SVID nor attest again (until evicted).
    Ban(AgentIdArg),
    /// Evict an agent: forget it, so it must attest again (this also lifts a ban).
    Evict(AgentIdArg),
}

impl AgentCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<std::process::ExitCode> {
        let Self { admin, action } = self;
        let action = match action {
            AgentAction::Run(args) => return crate::agent_cmd::run(&args),
            AgentAction::Validate(args) => return crate::agent_cmd::validate(&args),
            AgentAction::Config(command) => return crate::agent_cmd::config(&command),
            AgentAction::Healthcheck(args) => return crate::agent_cmd::healthcheck(&args),
            AgentAction::Admin(action) => action,
        };
        super::run(admin, |ctx| async move {
            match action {
                AdminAction::List => {
                    let agents: Vec<AgentView> = ctx.client.get("/agents").await?;
                    ctx.print(agents.as_slice(), table)
                }
                AdminAction::Count => {
                    let agents: Vec<AgentView> = ctx.client.get("/agents").await?;
                    let count = agents.len();
                    ctx.print(&json!({ "count": count }), |_| {
                        format!("{count} {}\n", if count == 1 { "agent" } else { "agents" })
                    })
                }
                AdminAction::Show(AgentIdArg { spiffe_id }) => {
                    let agent: AgentView = ctx.client.get(&agent_path(&spiffe_id)).await?;
                    ctx.print(&agent, fields)
                }
                AdminAction::Ban(AgentIdArg { spiffe_id }) => {
                    let path = format!("{}/ban", agent_path(&spiffe_id));
                    ctx.client.act(Method::POST, &path).await?;
                    done(&ctx, "banned", &spiffe_id)
                }
                AdminAction::Evict(AgentIdArg { spiffe_id }) => {
                    ctx.client
                        .act(Method::DELETE, &agent_path(&spiffe_id))
                        .await?;
                    done(&ctx, "evicted", &spiffe_id)
                }
            }
        })
    }
}

fn agent_path(id: &SpiffeId) -> String {
    format!("/agents/{}", encode(id.as_str()))
}

fn done(ctx: &Ctx, what: &str, id: &SpiffeId) -> anyhow::Result<()> {
    ctx.print(&json!({ what: id }), |_| format!("{what} agent {id}\n"))
}

fn fields(agent: &AgentView) -> String {
    output::fields(&[
        ("spiffe id", agent.spiffe_id.to_string()),
        ("attestation type", agent.attestation_type.clone()),
        ("serial", output::opt(agent.serial.as_ref())),
        ("svid expires", output::time(agent.svid_expires_at)),
        ("selectors", output::list(&agent.selectors)),
        ("banned", agent.banned.to_string()),
        ("last seen", output::time(agent.last_seen_at)),
        ("state", format!("{} ({})", agent.state, thresholds(agent))),
        ("created", output::time(Some(agent.created_at))),
        ("updated", output::time(Some(agent.updated_at))),
    ])
}

fn table(agents: &[AgentView]) -> String {
    output::table(
        &[
            "SPIFFE ID",
            "ATTESTATION",
            "SERIAL",
            "SVID EXPIRES",
            "BANNED",
            "LAST SEEN",
            "STATE",
        ],
        agents,
        |a| {
            vec![
                a.spiffe_id.to_string(),
                a.attestation_type.clone(),
                output::opt(a.serial.as_ref()),
                output::time(a.svid_expires_at),
                if a.banned { "yes" } else { "no" }.into(),
                output::time(a.last_seen_at),
                a.state.to_string(),
            ]
        },
    ) + &agents
        .first()
        .map_or_else(String::new, |a| format!("{}\n", thresholds(a)))
}

/// The thresholds the hub judged the state by, e.g. `live: seen within 2m; stale: within
/// 1h; gone: beyond`.
fn thresholds(agent: &AgentView) -> String {
    format!(
        "live: seen within {}; stale: within {}; gone: beyond",
        output::short(agent.live_within_secs),
        output::short(agent.stale_within_secs)
    )
}
