//! `fedhub token generate`.

use std::time::Duration;

use fedhub_core::SpiffeId;
use fedhub_hub::admin::api::{CreateJoinToken, JoinTokenView};
use hyper::Method;

use super::{AdminArgs, Ctx};
use crate::output;

/// Join tokens: single-use secrets an agent attests with.
#[derive(Debug, clap::Args)]
pub struct TokenCommand {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(subcommand)]
    action: TokenAction,
}

#[derive(Debug, clap::Subcommand)]
enum TokenAction {
    /// Generate a join token; it is printed once and stored only as a hash.
    Generate {
        /// The SPIFFE ID the agent gets. Default:
        /// spiffe://<trust domain>/fedhub/agent/join_token/<hash of the token>.
        #[arg(long, value_name = "ID")]
        spiffe_id: Option<SpiffeId>,
        /// How long the token may be used, e.g. `10m`, `1h`.
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

impl TokenCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<std::process::ExitCode> {
        let Self { admin, action } = self;
        super::run(admin, |ctx| async move {
            match action {
                TokenAction::Generate { spiffe_id, ttl } => generate(&ctx, spiffe_id, ttl).await,
            }
        })
    }
}

async fn generate(ctx: &Ctx, spiffe_id: Option<SpiffeId>, ttl: Duration) -> anyhow::Result<()> {
    let request = CreateJoinToken {
        spiffe_id,
        ttl_secs: ttl.as_secs(),
    };
    let token: JoinTokenView = ctx
        .client
        .send(Method::POST, "/join-tokens", &request)
        .await?;
    ctx.print(&token, |token| {
        output::fields(&[
            ("token", token.token.clone()),
            ("spiffe id", token.spiffe_id.to_string()),
            ("expires", output::time(Some(token.expires_at))),
        ])
    })
}
