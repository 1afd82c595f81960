//! `fedhub federation group create|delete|list|show|add|remove`.

use fedhub_core::TrustDomain;
use fedhub_hub::admin::api::{CreateFederationGroup, DeletedFederationGroup, FederationGroupView};
use hyper::Method;

use super::Ctx;
use crate::admin_client::{encode, query};
use crate::output::{self, OutputFormat};

#[derive(Debug, clap::Args)]
pub(super) struct NameArg {
    /// The group name: 1 to 64 of a-z, 0-9, '.', '_' and '-'.
    #[arg(long, value_name = "NAME")]
    name: String,
}

/// Federation groups: named sets of trust domains. Entries federate with a group by name
/// (`entry create --federates-with-group`) and so with its members as they are at the time.
#[derive(Debug, clap::Subcommand)]
pub(super) enum GroupAction {
    /// Create a group, optionally with members.
    Create {
        #[command(flatten)]
        name: NameArg,
        /// A member trust domain; repeat for several. Each needs a federation relationship.
        #[arg(long = "trust-domain", value_name = "TRUST_DOMAIN")]
        members: Vec<TrustDomain>,
    },
    /// Delete a group.
    Delete {
        #[command(flatten)]
        name: NameArg,
        /// Also while entries federate with it (they drop it from their groups).
        #[arg(long)]
        force: bool,
    },
    /// List groups with their members.
    List,
    /// Show one group.
    Show {
        #[command(flatten)]
        name: NameArg,
    },
    /// Add a trust domain to a group; entries federating with the group receive its bundle.
    Add {
        #[command(flatten)]
        name: NameArg,
        /// The trust domain; it needs a federation relationship.
        #[arg(long, value_name = "TRUST_DOMAIN")]
        trust_domain: TrustDomain,
    },
    /// Remove a trust domain from a group.
    Remove {
        #[command(flatten)]
        name: NameArg,
        /// The member trust domain.
        #[arg(long, value_name = "TRUST_DOMAIN")]
        trust_domain: TrustDomain,
    },
}

impl GroupAction {
    /// Runs the action.
    pub(super) async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Self::Create {
                name: NameArg { name },
                members,
            } => {
                let request = CreateFederationGroup { name, members };
                let group: FederationGroupView = ctx
                    .client
                    .send(Method::POST, "/federation-groups", &request)
                    .await?;
                show(ctx, &group)
            }
            Self::Delete {
                name: NameArg { name },
                force,
            } => {
                let path = format!(
                    "{}{}",
                    group_path(&name),
                    query(&[("force", force.then_some("true"))])
                );
                let deleted: DeletedFederationGroup =
                    ctx.client.request(Method::DELETE, &path).await?;
                match ctx.output {
                    OutputFormat::Json => output::json(&deleted),
                    OutputFormat::Table => output::print(&format!(
                        "deleted federation group {name} ({} entries no longer federate with it)\n",
                        deleted.entries_updated
                    )),
                }
            }
            Self::List => {
                let groups: Vec<FederationGroupView> = ctx.client.get("/federation-groups").await?;
                list(ctx, &groups)
            }
            Self::Show {
                name: NameArg { name },
            } => {
                let group: FederationGroupView = ctx.client.get(&group_path(&name)).await?;
                show(ctx, &group)
            }
            Self::Add {
                name: NameArg { name },
                trust_domain,
            } => {
                let path = member_path(&name, &trust_domain);
                let group: FederationGroupView = ctx.client.request(Method::PUT, &path).await?;
                show(ctx, &group)
            }
            Self::Remove {
                name: NameArg { name },
                trust_domain,
            } => {
                let path = member_path(&name, &trust_domain);
                let group: FederationGroupView = ctx.client.request(Method::DELETE, &path).await?;
                show(ctx, &group)
            }
        }
    }
}

fn group_path(name: &str) -> String {
    format!("/federation-groups/{}", encode(name))
}

fn member_path(name: &str, trust_domain: &TrustDomain) -> String {
    format!(
        "{}/members/{}",
        group_path(name),
        encode(trust_domain.name())
    )
}

fn show(ctx: &Ctx, group: &FederationGroupView) -> anyhow::Result<()> {
    if ctx.output == OutputFormat::Json {
        return output::json(group);
    }
    output::print(&output::fields(&[
        ("name", group.name.clone()),
        ("members", output::list(&group.members)),
        ("created", output::time(Some(group.created_at))),
        ("updated", output::time(Some(group.updated_at))),
    ]))
}

fn list(ctx: &Ctx, groups: &[FederationGroupView]) -> anyhow::Result<()> {
    if ctx.output == OutputFormat::Json {
        return output::json(&groups);
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|group| {
            vec![
                group.name.clone(),
                output::list(&group.members),
                output::time(Some(group.updated_at)),
            ]
        })
        .collect();
    output::print(&output::table(&["NAME", "MEMBERS", "UPDATED"], &rows))
}
