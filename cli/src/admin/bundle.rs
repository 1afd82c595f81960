//! `fedhub bundle show|list|set|delete|rotate`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use fedhub_core::{Bundle, BundleMap, TrustDomain};
use fedhub_hub::admin::api::{BundleView, RotateRequest, RotateView, SetBundle};
use fedhub_hub::ca::KeyState;
use hyper::Method;
use serde_json::json;

use super::{AdminArgs, delete_path, read_text};
use crate::admin_client::encode;
use crate::output;

/// Bundles: the own trust domain's and the foreign ones.
#[derive(Debug, clap::Args)]
pub struct BundleCommand {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    action: BundleAction,
}

/// How bundle documents are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DocumentFormat {
    /// SPIFFE bundle JSON (a bundle map for `list`).
    Spiffe,
    /// PEM CA certificates (X.509 authorities only).
    Pem,
}

#[derive(Debug, clap::Subcommand)]
enum BundleAction {
    /// Print this hub's own bundle (with --output json: its summary and document).
    Show {
        /// The document format.
        #[arg(long, value_enum, default_value_t = DocumentFormat::Spiffe)]
        format: DocumentFormat,
    },
    /// List every stored bundle, own and foreign; with --format, print their documents.
    List {
        /// Print the documents in this format instead of a summary.
        #[arg(long, value_enum)]
        format: Option<DocumentFormat>,
    },
    /// Store a foreign trust domain's bundle from a file (SPIFFE JSON or PEM).
    Set {
        /// The foreign trust domain.
        #[arg(long, value_name = "TRUST_DOMAIN")]
        trust_domain: TrustDomain,
        /// The bundle file.
        #[arg(long, value_name = "FILE")]
        path: PathBuf,
    },
    /// Delete a foreign trust domain's bundle.
    Delete {
        /// The foreign trust domain.
        #[arg(long, value_name = "TRUST_DOMAIN")]
        trust_domain: TrustDomain,
        /// Also when a federation relationship keeps it (it is fetched again at once).
        #[arg(long)]
        force: bool,
    },
    /// Publish new CA keys now; with --activate, also sign with them at once.
    Rotate {
        /// Sign with the new keys at once instead of only publishing them.
        #[arg(long)]
        activate: bool,
    },
}

impl BundleCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<std::process::ExitCode> {
        let Self { admin, action } = self;
        super::run(admin, |ctx| async move {
            match action {
                BundleAction::Show { format } => {
                    let bundle: BundleView = ctx.client.get("/bundle").await?;
                    ctx.try_print(&bundle, |bundle| document(bundle, format))
                }
                BundleAction::List { format } => {
                    let bundles: Vec<BundleView> = ctx.client.get("/bundles").await?;
                    ctx.try_print(bundles.as_slice(), |bundles| list(bundles, format))
                }
                BundleAction::Set { trust_domain, path } => {
                    let body = SetBundle {
                        document: read_text(&path, "bundle")?,
                    };
                    let bundle: BundleView = ctx
                        .client
                        .send(Method::PUT, &bundle_path(&trust_domain), &body)
                        .await?;
                    ctx.print(&bundle, summary)
                }
                BundleAction::Delete {
                    trust_domain,
                    force,
                } => {
                    let path = delete_path(&bundle_path(&trust_domain), force);
                    ctx.client.act(Method::DELETE, &path).await?;
                    ctx.print(&json!({ "deleted": trust_domain }), |_| {
                        format!("deleted the bundle of {trust_domain}\n")
                    })
                }
                BundleAction::Rotate { activate } => {
                    let rotated: RotateView = ctx
                        .client
                        .send(Method::POST, "/bundle/rotate", &RotateRequest { activate })
                        .await?;
                    ctx.print(&rotated, rotation)
                }
            }
        })
    }
}

fn bundle_path(trust_domain: &TrustDomain) -> String {
    format!("/bundles/{}", encode(trust_domain.name()))
}

fn decode(view: &BundleView) -> anyhow::Result<Bundle> {
    Bundle::from_json(view.trust_domain.clone(), view.document.as_bytes())
        .with_context(|| format!("the hub sent an unreadable bundle of {}", view.trust_domain))
}

/// One bundle's document in `format`.
fn document(view: &BundleView, format: DocumentFormat) -> anyhow::Result<String> {
    Ok(match format {
        DocumentFormat::Spiffe => format!("{}\n", view.document.trim_end()),
        DocumentFormat::Pem => decode(view)?.x509_authorities_pem(),
    })
}

/// The bundles' documents in `format`, or without one a summary table.
fn list(bundles: &[BundleView], format: Option<DocumentFormat>) -> anyhow::Result<String> {
    Ok(match format {
        Some(DocumentFormat::Spiffe) => {
            let mut map = BundleMap::new();
            for view in bundles {
                map.insert(decode(view)?);
            }
            format!("{}\n", map.to_json().trim_end())
        }
        Some(DocumentFormat::Pem) => {
            let mut text = String::new();
            for view in bundles {
                let _ = writeln!(text, "# trust domain {}", view.trust_domain);
                text.push_str(&decode(view)?.x509_authorities_pem());
            }
            text
        }
        None => output::table(
            &[
                "TRUST DOMAIN",
                "KIND",
                "SEQUENCE",
                "X509 AUTHORITIES",
                "JWT AUTHORITIES",
                "UPDATED",
            ],
            bundles,
            |b| {
                vec![
                    b.trust_domain.to_string(),
                    b.kind.to_string(),
                    output::opt(b.sequence),
                    b.x509_authorities.to_string(),
                    b.jwt_authorities.to_string(),
                    output::time(Some(b.updated_at)),
                ]
            },
        ),
    })
}

fn summary(bundle: &BundleView) -> String {
    output::fields(&[
        ("trust domain", bundle.trust_domain.to_string()),
        ("kind", bundle.kind.to_string()),
        ("sequence", output::opt(bundle.sequence)),
        ("x509 authorities", bundle.x509_authorities.to_string()),
        ("jwt authorities", bundle.jwt_authorities.to_string()),
        ("updated", output::time(Some(bundle.updated_at))),
    ])
}

fn rotation(rotated: &RotateView) -> String {
    let mut text = output::table(
        &["KIND", "KEY ID", "STATE", "CREATED", "EXPIRES"],
        &rotated.keys,
        |key| {
            vec![
                key.kind.clone(),
                key.id.clone(),
                state_name(key.state).to_owned(),
                output::time(Some(key.created_at)),
                output::time(Some(key.not_after)),
            ]
        },
    );
    let _ = write!(
        text,
        "\nbundle sequence: {}\n",
        output::opt(rotated.sequence)
    );
    text
}

fn state_name(state: KeyState) -> &'static str {
    match state {
        KeyState::Prepared => "prepared",
        KeyState::Active => "active",
        KeyState::Retired => "retired",
    }
}
