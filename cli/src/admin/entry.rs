//! `fedhub entry create|list|show|update|delete`.

use std::time::Duration;

use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_hub::admin::api::{EntrySpecBody, EntryView};
use hyper::Method;
use serde_json::json;

use super::AdminArgs;
use crate::admin_client::{encode, query};
use crate::output;

/// Registration entries: which workloads get which SPIFFE ID.
#[derive(Debug, clap::Args)]
pub struct EntryCommand {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    action: EntryAction,
}

#[derive(Debug, clap::Subcommand)]
enum EntryAction {
    /// Register a workload (or a node alias).
    Create {
        /// The SPIFFE ID issued to matching workloads.
        #[arg(long, value_name = "ID")]
        spiffe_id: SpiffeId,
        /// The agent (or node alias) that may receive it.
        #[arg(long, value_name = "ID")]
        parent_id: SpiffeId,
        /// A selector `type:value` the workload must match; repeat for several.
        #[arg(long = "selector", value_name = "TYPE:VALUE", required = true)]
        selectors: Vec<String>,
        #[command(flatten)]
        options: EntryOptions,
    },
    /// List entries, optionally filtered.
    List {
        /// Only entries with this SPIFFE ID.
        #[arg(long, value_name = "ID")]
        spiffe_id: Option<SpiffeId>,
        /// Only entries with this parent ID.
        #[arg(long, value_name = "ID")]
        parent_id: Option<SpiffeId>,
        /// Only entries naming this trust domain in --federates-with.
        #[arg(long, value_name = "TRUST_DOMAIN")]
        federates_with: Option<TrustDomain>,
    },
    /// Show one entry.
    Show {
        /// The entry id.
        #[arg(long, value_name = "ID")]
        entry_id: String,
    },
    /// Change an entry: the given flags replace those fields, the others stay.
    Update {
        /// The entry id.
        #[arg(long, value_name = "ID")]
        entry_id: String,
        /// A new SPIFFE ID.
        #[arg(long, value_name = "ID")]
        spiffe_id: Option<SpiffeId>,
        /// A new parent ID.
        #[arg(long, value_name = "ID")]
        parent_id: Option<SpiffeId>,
        /// New selectors (replacing all); repeat for several.
        #[arg(long = "selector", value_name = "TYPE:VALUE")]
        selectors: Vec<String>,
        #[command(flatten)]
        options: EntryOptions,
        /// Clear a field before applying the other flags; repeat for several.
        #[arg(long, value_enum, value_name = "FIELD")]
        clear: Vec<ClearField>,
    },
    /// Delete an entry.
    Delete {
        /// The entry id.
        #[arg(long, value_name = "ID")]
        entry_id: String,
    },
}

/// The optional parts of an entry.
#[derive(Debug, clap::Args)]
struct EntryOptions {
    /// A foreign trust domain whose bundle the workload receives; repeat for several. It
    /// needs a federation relationship.
    #[arg(long = "federates-with", value_name = "TRUST_DOMAIN")]
    federates_with: Vec<TrustDomain>,
    /// A federation group whose members the workload federates with, also members added
    /// later; repeat for several.
    #[arg(long = "federates-with-group", value_name = "NAME")]
    federates_with_groups: Vec<String>,
    /// Federate with every trust domain the hub has a relationship with, also ones created
    /// later (`--federates-with-all=false` turns it off).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    federates_with_all: Option<bool>,
    /// X509-SVID lifetime, e.g. `1h` (default: the hub's).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    x509_svid_ttl: Option<Duration>,
    /// JWT-SVID lifetime, e.g. `5m` (default: the hub's).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    jwt_svid_ttl: Option<Duration>,
    /// A DNS name for the X509-SVID; repeat for several.
    #[arg(long = "dns-name", value_name = "NAME")]
    dns_names: Vec<String>,
    /// A hint for workloads that receive several SVIDs.
    #[arg(long)]
    hint: Option<String>,
}

/// Entry fields `update --clear` can empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClearField {
    FederatesWith,
    FederatesWithGroups,
    DnsNames,
    Hint,
    X509SvidTtl,
    JwtSvidTtl,
}

impl EntryOptions {
    /// Applies the given options to `spec`.
    fn apply(self, spec: &mut EntrySpecBody) {
        if !self.federates_with.is_empty() {
            spec.federates_with = self.federates_with;
        }
        if !self.federates_with_groups.is_empty() {
            spec.federates_with_groups = self.federates_with_groups;
        }
        if let Some(all) = self.federates_with_all {
            spec.federates_with_all = all;
        }
        if let Some(ttl) = self.x509_svid_ttl {
            spec.x509_svid_ttl_secs = Some(ttl.as_secs());
        }
        if let Some(ttl) = self.jwt_svid_ttl {
            spec.jwt_svid_ttl_secs = Some(ttl.as_secs());
        }
        if !self.dns_names.is_empty() {
            spec.dns_names = self.dns_names;
        }
        if self.hint.is_some() {
            spec.hint = self.hint;
        }
    }
}

impl EntryCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<std::process::ExitCode> {
        let Self { admin, action } = self;
        super::run(admin, |ctx| async move {
            match action {
                EntryAction::Create {
                    spiffe_id,
                    parent_id,
                    selectors,
                    options,
                } => {
                    let mut spec = EntrySpecBody::new(spiffe_id, parent_id, selectors);
                    options.apply(&mut spec);
                    let entry: EntryView = ctx.client.send(Method::POST, "/entries", &spec).await?;
                    ctx.print(&entry, fields)
                }
                EntryAction::List {
                    spiffe_id,
                    parent_id,
                    federates_with,
                } => {
                    let spiffe_id = spiffe_id.as_ref().map(SpiffeId::as_str);
                    let parent_id = parent_id.as_ref().map(SpiffeId::as_str);
                    let federates_with = federates_with.as_ref().map(TrustDomain::name);
                    let path = format!(
                        "/entries{}",
                        query(&[
                            ("spiffe_id", spiffe_id),
                            ("parent_id", parent_id),
                            ("federates_with", federates_with),
                        ])
                    );
                    let entries: Vec<EntryView> = ctx.client.get(&path).await?;
                    ctx.print(entries.as_slice(), table)
                }
                EntryAction::Show { entry_id } => {
                    let entry: EntryView = ctx.client.get(&entry_path(&entry_id)).await?;
                    ctx.print(&entry, fields)
                }
                EntryAction::Update {
                    entry_id,
                    spiffe_id,
                    parent_id,
                    selectors,
                    options,
                    clear,
                } => {
                    let path = entry_path(&entry_id);
                    let current: EntryView = ctx.client.get(&path).await?;
                    let mut spec = current.spec;
                    for field in clear {
                        match field {
                            ClearField::FederatesWith => spec.federates_with.clear(),
                            ClearField::FederatesWithGroups => spec.federates_with_groups.clear(),
                            ClearField::DnsNames => spec.dns_names.clear(),
                            ClearField::Hint => spec.hint = None,
                            ClearField::X509SvidTtl => spec.x509_svid_ttl_secs = None,
                            ClearField::JwtSvidTtl => spec.jwt_svid_ttl_secs = None,
                        }
                    }
                    if let Some(id) = spiffe_id {
                        spec.spiffe_id = id;
                    }
                    if let Some(id) = parent_id {
                        spec.parent_id = id;
                    }
                    if !selectors.is_empty() {
                        spec.selectors = selectors;
                    }
                    options.apply(&mut spec);
                    let entry: EntryView = ctx.client.send(Method::PUT, &path, &spec).await?;
                    ctx.print(&entry, fields)
                }
                EntryAction::Delete { entry_id } => {
                    ctx.client
                        .act(Method::DELETE, &entry_path(&entry_id))
                        .await?;
                    ctx.print(&json!({ "deleted": entry_id }), |_| {
                        format!("deleted entry {entry_id}\n")
                    })
                }
            }
        })
    }
}

fn entry_path(id: &str) -> String {
    format!("/entries/{}", encode(id))
}

fn ttl(secs: Option<u64>) -> String {
    secs.map_or_else(|| "hub default".into(), output::short)
}

fn fields(entry: &EntryView) -> String {
    let spec = &entry.spec;
    output::fields(&[
        ("entry id", entry.id.clone()),
        ("spiffe id", spec.spiffe_id.to_string()),
        ("parent id", spec.parent_id.to_string()),
        ("selectors", output::list(&spec.selectors)),
        ("federates with", output::list(&spec.federates_with)),
        (
            "federates with groups",
            output::list(&spec.federates_with_groups),
        ),
        ("federates with all", spec.federates_with_all.to_string()),
        (
            "effective federation",
            output::list(&entry.effective_federates_with),
        ),
        ("x509-svid ttl", ttl(spec.x509_svid_ttl_secs)),
        ("jwt-svid ttl", ttl(spec.jwt_svid_ttl_secs)),
        ("dns names", output::list(&spec.dns_names)),
        ("hint", output::opt(spec.hint.as_ref())),
        ("revision", entry.revision.to_string()),
        ("created", output::time(Some(entry.created_at))),
        ("updated", output::time(Some(entry.updated_at))),
    ])
}

/// What an entry federates with, in one cell: its trust domains, `group:NAME` for each group
/// and `all` for every relationship.
fn federation(spec: &EntrySpecBody) -> String {
    let parts: Vec<String> = spec
        .federates_with
        .iter()
        .map(ToString::to_string)
        .chain(
            spec.federates_with_groups
                .iter()
                .map(|g| format!("group:{g}")),
        )
        .chain(spec.federates_with_all.then(|| "all".to_owned()))
        .collect();
    output::list(&parts)
}

fn table(entries: &[EntryView]) -> String {
    output::table(
        &[
            "ENTRY ID",
            "SPIFFE ID",
            "PARENT ID",
            "SELECTORS",
            "FEDERATES WITH",
            "REVISION",
        ],
        entries,
        |entry| {
            vec![
                entry.id.clone(),
                entry.spec.spiffe_id.to_string(),
                entry.spec.parent_id.to_string(),
                output::list(&entry.spec.selectors),
                federation(&entry.spec),
                entry.revision.to_string(),
            ]
        },
    )
}
