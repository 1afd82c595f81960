//! `fedhub federation create|list|show|update|delete|refresh`, and `fedhub federation group …`
//! ([`super::group`]).

use std::path::PathBuf;

use fedhub_core::endpoint::{FetchSource, ProfileName};
use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_hub::admin::api::{
    CreateRelationship, RefreshStatusView, RelationshipConfig, RelationshipView,
};
use hyper::Method;

use super::group::GroupAction;
use super::{AdminArgs, read_text};
use crate::admin_client::encode;
use crate::output;

/// Federation relationships: the foreign trust domains whose bundles this hub keeps fresh.
#[derive(Debug, clap::Args)]
pub struct FederationCommand {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    action: FederationAction,
}

/// The bundle endpoint profile on the command line: [`ProfileName`] with help texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProfileArg {
    /// Web PKI certificate (system roots, or --extra-ca-file for a private PKI).
    #[value(name = "https_web")]
    HttpsWeb,
    /// The endpoint's X509-SVID (--endpoint-spiffe-id), verified with the stored bundle.
    #[value(name = "https_spiffe")]
    HttpsSpiffe,
}

impl From<ProfileArg> for ProfileName {
    fn from(profile: ProfileArg) -> Self {
        match profile {
            ProfileArg::HttpsWeb => Self::HttpsWeb,
            ProfileArg::HttpsSpiffe => Self::HttpsSpiffe,
        }
    }
}

/// Where the bundle comes from, on the command line: [`FetchSource`] with help texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SourceArg {
    /// The endpoint serves the trust domain's own bundle.
    Direct,
    /// The endpoint is a relay serving a bundle map; only this trust domain's entry is taken,
    /// with the same checks as a direct bundle. The profile authenticates the relay.
    Relay,
}

impl From<SourceArg> for FetchSource {
    fn from(source: SourceArg) -> Self {
        match source {
            SourceArg::Direct => Self::Direct,
            SourceArg::Relay => Self::Relay,
        }
    }
}

#[derive(Debug, clap::Args)]
struct TrustDomainArg {
    /// The foreign trust domain.
    #[arg(long, value_name = "TRUST_DOMAIN")]
    trust_domain: TrustDomain,
}

/// Optional settings of a relationship.
#[derive(Debug, clap::Args)]
struct Settings {
    /// https_spiffe: the SPIFFE ID the endpoint presents.
    #[arg(long, value_name = "ID")]
    endpoint_spiffe_id: Option<SpiffeId>,
    /// https_web: PEM CA certificates of a private PKI, trusted in addition to the system roots.
    #[arg(long, value_name = "FILE")]
    extra_ca_file: Option<PathBuf>,
    /// Apply a bundle without keys (revoking everything) instead of keeping the last good one.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    accept_empty_bundle: Option<bool>,
    /// Refuse a bundle without spiffe_sequence once the stored bundle has one, keeping the
    /// last good one; off, such a bundle is applied and flagged (sequence dropped).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    require_sequence: Option<bool>,
    /// Where the bundle comes from: `direct` (the endpoint serves this trust domain's bundle;
    /// the default) or `relay` (the endpoint is a relay serving a bundle map, authenticated by
    /// the profile as the relay itself). Switching keeps the stored bundle.
    #[arg(long, value_enum, value_name = "SOURCE", conflicts_with = "via_relay")]
    source: Option<SourceArg>,
    /// Short for `--source relay`.
    #[arg(long)]
    via_relay: bool,
}

#[derive(Debug, clap::Subcommand)]
enum FederationAction {
    /// Federate with a foreign trust domain.
    Create {
        #[command(flatten)]
        trust_domain: TrustDomainArg,
        /// The foreign bundle endpoint, an https:// URL.
        #[arg(long, value_name = "URL")]
        bundle_endpoint_url: String,
        /// How the endpoint is authenticated.
        #[arg(long, value_enum, value_name = "PROFILE")]
        bundle_endpoint_profile: ProfileArg,
        #[command(flatten)]
        settings: Settings,
        /// The foreign trust domain's bundle to start from (SPIFFE JSON or PEM); https_spiffe
        /// needs it unless the bundle is already stored.
        #[arg(long, value_name = "FILE")]
        trust_domain_bundle: Option<PathBuf>,
    },
    /// List relationships with their refresh status.
    List,
    /// Show one relationship with its refresh status.
    Show {
        #[command(flatten)]
        trust_domain: TrustDomainArg,
    },
    /// Change a relationship: the given flags replace those settings, the others stay.
    Update {
        #[command(flatten)]
        trust_domain: TrustDomainArg,
        /// A new bundle endpoint URL.
        #[arg(long, value_name = "URL")]
        bundle_endpoint_url: Option<String>,
        /// A new profile; switching drops the settings of the other profile.
        #[arg(long, value_enum, value_name = "PROFILE")]
        bundle_endpoint_profile: Option<ProfileArg>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Stop federating: delete the relationship and its bundle.
    Delete {
        #[command(flatten)]
        trust_domain: TrustDomainArg,
        /// Also while entries federate with it (they drop it from federates_with). It leaves
        /// its federation groups in any case.
        #[arg(long)]
        force: bool,
    },
    /// Fetch the foreign bundle now.
    ///
    /// Fails when the fetch fails (the last good bundle stays), when the relationship does not
    /// exist, or while another hub replica refreshes it.
    Refresh {
        #[command(flatten)]
        trust_domain: TrustDomainArg,
    },
    /// Federation groups: named sets of trust domains that entries federate with as a whole.
    Group {
        #[command(subcommand)]
        action: GroupAction,
    },
}

impl Settings {
    /// Applies the given settings to `config`.
    fn apply(self, config: &mut RelationshipConfig) -> anyhow::Result<()> {
        if let Some(id) = self.endpoint_spiffe_id {
            config.endpoint_spiffe_id = Some(id);
        }
        if let Some(path) = self.extra_ca_file {
            config.extra_ca_pem = Some(read_text(&path, "CA certificates")?);
        }
        if let Some(accept) = self.accept_empty_bundle {
            config.accept_empty_bundle = accept;
        }
        if let Some(require) = self.require_sequence {
            config.require_sequence = require;
        }
        if self.via_relay {
            config.source = FetchSource::Relay;
        } else if let Some(source) = self.source {
            config.source = source.into();
        }
        Ok(())
    }
}

impl FederationCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<std::process::ExitCode> {
        let Self { admin, action } = self;
        super::run(admin, |ctx| async move {
            match action {
                FederationAction::Create {
                    trust_domain: TrustDomainArg { trust_domain },
                    bundle_endpoint_url,
                    bundle_endpoint_profile,
                    settings,
                    trust_domain_bundle,
                } => {
                    let mut config = RelationshipConfig {
                        bundle_endpoint_url,
                        profile: bundle_endpoint_profile.into(),
                        endpoint_spiffe_id: None,
                        extra_ca_pem: None,
                        accept_empty_bundle: false,
                        require_sequence: false,
                        source: FetchSource::Direct,
                    };
                    settings.apply(&mut config)?;
                    let request = CreateRelationship {
                        trust_domain,
                        config,
                        trust_domain_bundle: trust_domain_bundle
                            .map(|path| read_text(&path, "trust domain bundle"))
                            .transpose()?,
                    };
                    let created: RelationshipView = ctx
                        .client
                        .send(Method::POST, "/federation", &request)
                        .await?;
                    ctx.print(&created, fields)
                }
                FederationAction::List => {
                    let relationships: Vec<RelationshipView> =
                        ctx.client.get("/federation").await?;
                    ctx.print(relationships.as_slice(), table)
                }
                FederationAction::Show {
                    trust_domain: TrustDomainArg { trust_domain },
                } => {
                    let relationship: RelationshipView =
                        ctx.client.get(&relationship_path(&trust_domain)).await?;
                    ctx.print(&relationship, fields)
                }
                FederationAction::Update {
                    trust_domain: TrustDomainArg { trust_domain },
                    bundle_endpoint_url,
                    bundle_endpoint_profile,
                    settings,
                } => {
                    let path = relationship_path(&trust_domain);
                    let current: RelationshipView = ctx.client.get(&path).await?;
                    let mut config = current.config;
                    if let Some(url) = bundle_endpoint_url {
                        config.bundle_endpoint_url = url;
                    }
                    if let Some(profile) = bundle_endpoint_profile {
                        config.profile = profile.into();
                        match config.profile {
                            ProfileName::HttpsWeb => config.endpoint_spiffe_id = None,
                            ProfileName::HttpsSpiffe => config.extra_ca_pem = None,
                        }
                    }
                    settings.apply(&mut config)?;
                    let updated: RelationshipView =
                        ctx.client.send(Method::PUT, &path, &config).await?;
                    ctx.print(&updated, fields)
                }
                FederationAction::Delete {
                    trust_domain: TrustDomainArg { trust_domain },
                    force,
                } => {
                    let path = relationship_path(&trust_domain);
                    let what = format!("the federation relationship with {trust_domain}");
                    ctx.unfederate(&path, force, &what).await
                }
                FederationAction::Refresh {
                    trust_domain: TrustDomainArg { trust_domain },
                } => {
                    let path = format!("{}/refresh", relationship_path(&trust_domain));
                    let refreshed: RelationshipView =
                        ctx.client.request(Method::POST, &path).await?;
                    ctx.print(&refreshed, fields)
                }
                FederationAction::Group { action } => action.run(&ctx).await,
            }
        })
    }
}

fn relationship_path(trust_domain: &TrustDomain) -> String {
    format!("/federation/{}", encode(trust_domain.name()))
}

fn fields(view: &RelationshipView) -> String {
    let status = &view.status;
    let bundle = view.bundle.as_ref();
    output::fields(&[
        ("trust domain", view.trust_domain.to_string()),
        (
            "bundle endpoint url",
            view.config.bundle_endpoint_url.clone(),
        ),
        ("source", source(view)),
        ("profile", view.config.profile.to_string()),
        (
            "endpoint spiffe id",
            output::opt(view.config.endpoint_spiffe_id.as_ref()),
        ),
        (
            "extra CA certificates",
            if view.config.extra_ca_pem.is_some() {
                "yes"
            } else {
                "no"
            }
            .into(),
        ),
        (
            "accept empty bundle",
            view.config.accept_empty_bundle.to_string(),
        ),
        ("require sequence", view.config.require_sequence.to_string()),
        ("last attempt", output::time(status.last_attempt_at)),
        ("last success", output::time(status.last_success_at)),
        ("last error", output::opt(status.last_error.as_ref())),
        (
            "consecutive failures",
            status.consecutive_failures.to_string(),
        ),
        ("next refresh", next_refresh(view)),
        (
            "bundle sequence",
            output::opt(bundle.and_then(|b| b.sequence)),
        ),
        ("sequence dropped", sequence_dropped(status)),
        (
            "bundle authorities",
            output::opt(bundle.map(|b| b.authorities)),
        ),
        ("bundle stored", output::time(bundle.map(|b| b.updated_at))),
        ("created", output::time(Some(view.created_at))),
        ("updated", output::time(Some(view.updated_at))),
    ])
}

/// Where the bundle comes from, for people: `direct`, or `via relay <URL>`.
fn source(view: &RelationshipView) -> String {
    match view.config.source {
        FetchSource::Direct => FetchSource::Direct.to_string(),
        FetchSource::Relay => format!("via relay {}", view.config.bundle_endpoint_url),
    }
}

/// The bundle endpoint column: the URL, or `via relay <URL>`.
fn endpoint_cell(view: &RelationshipView) -> String {
    match view.config.source {
        FetchSource::Direct => view.config.bundle_endpoint_url.clone(),
        FetchSource::Relay => source(view),
    }
}

/// Whether the peer stopped sending `spiffe_sequence`, for people.
fn sequence_dropped(status: &RefreshStatusView) -> String {
    if !status.sequence_dropped {
        return "no".into();
    }
    let after = status
        .sequence_dropped_after
        .map(|sequence| format!(" after sequence {sequence}"))
        .unwrap_or_default();
    format!(
        "yes: the peer stopped sending spiffe_sequence{after}, since {}",
        output::time(status.sequence_dropped_at)
    )
}

/// The stored bundle's sequence, marked when the peer stopped sending one.
fn sequence_cell(view: &RelationshipView) -> String {
    let sequence = output::opt(view.bundle.as_ref().and_then(|b| b.sequence));
    if view.status.sequence_dropped {
        format!("{sequence} (dropped)")
    } else {
        sequence
    }
}

fn next_refresh(view: &RelationshipView) -> String {
    view.status
        .next_refresh_at
        .map_or_else(|| "due now".into(), |at| output::time(Some(at)))
}

/// The longest error a table cell shows, in characters; `show` and JSON give the whole text.
const TABLE_ERROR_CHARS: usize = 60;

/// `error` cut to [`TABLE_ERROR_CHARS`] characters, ending in `…` when cut.
fn truncate_error(error: &str) -> String {
    if error.chars().count() <= TABLE_ERROR_CHARS {
        return error.to_owned();
    }
    let kept: String = error.chars().take(TABLE_ERROR_CHARS - 1).collect();
    format!("{}…", kept.trim_end())
}

fn table(relationships: &[RelationshipView]) -> String {
    output::table(
        &[
            "TRUST DOMAIN",
            "PROFILE",
            "BUNDLE ENDPOINT",
            "LAST SUCCESS",
            "LAST ERROR",
            "FAILURES",
            "NEXT REFRESH",
            "SEQUENCE",
            "AUTHORITIES",
        ],
        relationships,
        |r| {
            vec![
                r.trust_domain.to_string(),
                r.config.profile.to_string(),
                endpoint_cell(r),
                output::time(r.status.last_success_at),
                output::opt(r.status.last_error.as_deref().map(truncate_error)),
                r.status.consecutive_failures.to_string(),
                next_refresh(r),
                sequence_cell(r),
                output::opt(r.bundle.as_ref().map(|b| b.authorities)),
            ]
        },
    )
}
