//! `fedhub entry create|list|show|count|update|delete`.

use std::time::Duration;

use anyhow::bail;
use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_hub::admin::api::{EntrySpecBody, EntryView, Selector};
use hyper::Method;
use serde_json::json;

use super::{AdminArgs, Ctx};
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
        /// A selector `type:key:value` the workload must match, e.g. unix:uid:1000; repeat
        /// for several.
        #[arg(
            long = "selector",
            value_name = "TYPE:VALUE",
            required = true,
            value_parser = supported_selector
        )]
        selectors: Vec<String>,
        /// Accept a parent ID that is not (yet) an agent, a node alias or the SPIFFE ID of a
        /// pending join token.
        #[arg(long)]
        allow_unknown_parent: bool,
        #[command(flatten)]
        options: EntryOptions,
    },
    /// List entries, optionally filtered.
    List(EntryFilterArgs),
    /// Show one entry by its id, or every entry the filters match (an error when none does).
    Show {
        /// The entry id.
        #[arg(
            long,
            value_name = "ID",
            required_unless_present_any = FILTERS,
            conflicts_with_all = FILTERS
        )]
        entry_id: Option<String>,
        #[command(flatten)]
        filter: EntryFilterArgs,
    },
    /// Count entries, optionally filtered.
    Count(EntryFilterArgs),
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
        /// Accept a new parent ID that is not (yet) an agent, a node alias or the SPIFFE ID
        /// of a pending join token.
        #[arg(long)]
        allow_unknown_parent: bool,
        /// New selectors (replacing all); repeat for several.
        #[arg(long = "selector", value_name = "TYPE:VALUE", value_parser = supported_selector)]
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

/// The ids of the filter flags, which `show --entry-id` stands instead of.
const FILTERS: [&str; 4] = ["spiffe_id", "parent_id", "selectors", "federates_with"];

/// The filters of `entry list`, `show` and `count`: every given one must match.
#[derive(Debug, clap::Args)]
struct EntryFilterArgs {
    /// Only entries with this SPIFFE ID.
    #[arg(long, value_name = "ID")]
    spiffe_id: Option<SpiffeId>,
    /// Only entries with this parent ID.
    #[arg(long, value_name = "ID")]
    parent_id: Option<SpiffeId>,
    /// Only entries that have this selector (among others); repeat for several, all of
    /// which must be there.
    #[arg(long = "selector", value_name = "TYPE:VALUE")]
    selectors: Vec<String>,
    /// Only entries naming this trust domain in --federates-with.
    #[arg(long, value_name = "TRUST_DOMAIN")]
    federates_with: Option<TrustDomain>,
}

impl EntryFilterArgs {
    /// The matching entries: the hub filters by IDs and trust domain, selectors are checked
    /// here.
    async fn fetch(&self, ctx: &Ctx) -> anyhow::Result<Vec<EntryView>> {
        let path = format!(
            "/entries{}",
            query(&[
                ("spiffe_id", self.spiffe_id.as_ref().map(SpiffeId::as_str)),
                ("parent_id", self.parent_id.as_ref().map(SpiffeId::as_str)),
                (
                    "federates_with",
                    self.federates_with.as_ref().map(TrustDomain::name)
                ),
            ])
        );
        let mut entries: Vec<EntryView> = ctx.client.get(&path).await?;
        entries.retain(|entry| {
            self.selectors
                .iter()
                .all(|wanted| entry.spec.selectors.contains(wanted))
        });
        Ok(entries)
    }

    /// The given filters as flags, e.g. `--spiffe-id spiffe://… --selector unix:uid:0`.
    fn describe(&self) -> String {
        let mut flags = Vec::new();
        if let Some(id) = &self.spiffe_id {
            flags.push(format!("--spiffe-id {id}"));
        }
        if let Some(id) = &self.parent_id {
            flags.push(format!("--parent-id {id}"));
        }
        flags.extend(self.selectors.iter().map(|s| format!("--selector {s}")));
        if let Some(td) = &self.federates_with {
            flags.push(format!("--federates-with {td}"));
        }
        flags.join(" ")
    }
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
                    allow_unknown_parent,
                    options,
                } => {
                    let mut spec = EntrySpecBody::new(spiffe_id, parent_id, selectors);
                    options.apply(&mut spec);
                    let path = format!("/entries{}", write_query(allow_unknown_parent));
                    let entry: EntryView = ctx.client.send(Method::POST, &path, &spec).await?;
                    ctx.print(&entry, fields)
                }
                EntryAction::List(filter) => {
                    let entries = filter.fetch(&ctx).await?;
                    ctx.print(entries.as_slice(), table)
                }
                EntryAction::Show {
                    entry_id: Some(entry_id),
                    ..
                } => {
                    let entry: EntryView = ctx.client.get(&entry_path(&entry_id)).await?;
                    ctx.print(&entry, fields)
                }
                EntryAction::Show {
                    entry_id: None,
                    filter,
                } => {
                    let entries = filter.fetch(&ctx).await?;
                    if entries.is_empty() {
                        bail!(
                            "no entry matches {}; `fedhub entry list` shows them all",
                            filter.describe()
                        );
                    }
                    ctx.print(entries.as_slice(), |entries| {
                        entries.iter().map(fields).collect::<Vec<_>>().join("\n")
                    })
                }
                EntryAction::Count(filter) => {
                    let count = filter.fetch(&ctx).await?.len();
                    ctx.print(&json!({ "count": count }), |_| {
                        format!("{count} {}\n", if count == 1 { "entry" } else { "entries" })
                    })
                }
                EntryAction::Update {
                    entry_id,
                    spiffe_id,
                    parent_id,
                    allow_unknown_parent,
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
                    let path = format!("{path}{}", write_query(allow_unknown_parent));
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

/// A `--selector` of an entry, checked with the hub's rule before anything is sent.
fn supported_selector(text: &str) -> Result<String, String> {
    Selector::parse_supported(text)
        .map(|selector| selector.to_string())
        .map_err(|error| error.to_string())
}

/// The query of an entry write: `?allow_unknown_parent=true` when `allow`.
fn write_query(allow: bool) -> String {
    query(&[("allow_unknown_parent", allow.then_some("true"))])
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
