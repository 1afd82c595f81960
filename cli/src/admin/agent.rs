//! `fedhub agent list|show|ban|evict` (and `run`, see [`crate::agent_cmd`]).

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
    #[command(flatten)]
    Admin(AdminAction),
}

#[derive(Debug, clap::Subcommand)]
enum AdminAction {
    /// List attested agents.
    List,
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
            AgentAction::Admin(action) => action,
        };
        super::run(admin, |ctx| async move {
            match action {
                AdminAction::List => {
                    let agents: Vec<AgentView> = ctx.client.get("/agents").await?;
                    ctx.print(agents.as_slice(), table)
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
            ]
        },
    )
}
