//! `fedhub federation group create|delete|list|show|add|remove`.

use fedhub_core::TrustDomain;
use fedhub_hub::admin::api::{CreateFederationGroup, FederationGroupView};
use hyper::Method;

use super::Ctx;
use crate::admin_client::encode;
use crate::output;

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
                ctx.print(&group, fields)
            }
            Self::Delete {
                name: NameArg { name },
                force,
            } => {
                let what = format!("federation group {name}");
                ctx.unfederate(&group_path(&name), force, &what).await
            }
            Self::List => {
                let groups: Vec<FederationGroupView> = ctx.client.get("/federation-groups").await?;
                ctx.print(groups.as_slice(), table)
            }
            Self::Show {
                name: NameArg { name },
            } => {
                let group: FederationGroupView = ctx.client.get(&group_path(&name)).await?;
                ctx.print(&group, fields)
            }
            Self::Add {
                name: NameArg { name },
                trust_domain,
            } => member(ctx, Method::PUT, &name, &trust_domain).await,
            Self::Remove {
                name: NameArg { name },
                trust_domain,
            } => member(ctx, Method::DELETE, &name, &trust_domain).await,
        }
    }
}

fn group_path(name: &str) -> String {
    format!("/federation-groups/{}", encode(name))
}

/// Adds (`PUT`) or removes (`DELETE`) a member and prints the group.
async fn member(
    ctx: &Ctx,
    method: Method,
    name: &str,
    trust_domain: &TrustDomain,
) -> anyhow::Result<()> {
    let path = format!(
        "{}/members/{}",
        group_path(name),
        encode(trust_domain.name())
    );
    let group: FederationGroupView = ctx.client.request(method, &path).await?;
    ctx.print(&group, fields)
}

fn fields(group: &FederationGroupView) -> String {
    output::fields(&[
        ("name", group.name.clone()),
        ("members", output::list(&group.members)),
        ("created", output::time(Some(group.created_at))),
        ("updated", output::time(Some(group.updated_at))),
    ])
}

fn table(groups: &[FederationGroupView]) -> String {
    output::table(&["NAME", "MEMBERS", "UPDATED"], groups, |group| {
        vec![
            group.name.clone(),
            output::list(&group.members),
            output::time(Some(group.updated_at)),
        ]
    })
}
