//! Command line and environment. `pwnbook --help` is the configuration reference.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "pwnbook",
    version,
    about = "The Pwnbook API server: event-sourced engagements, findings and more."
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Settings shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Where everything is stored: `sqlite://<file>` (created if missing) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://pwnbook.db",
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,

    /// Address and port to listen on.
    #[arg(long, env = "PWNBOOK_BIND", default_value = "127.0.0.1:8080", global = true)]
    pub bind: SocketAddr,

    /// Requests per minute allowed to each API key (and to each client address without one).
    #[arg(long, env = "PWNBOOK_RATE_LIMIT_PER_MINUTE", default_value = "600", global = true)]
    pub rate_limit_per_minute: NonZeroU32,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "PWNBOOK_BODY_LIMIT", default_value = "1048576", global = true)]
    pub body_limit: usize,

    /// The admin key created on first start (`pwbk_live_…` or `pwbk_test_…`, at least 32 base62
    /// characters after the prefix); a random one is generated and printed when unset.
    #[arg(long, env = "PWNBOOK_BOOTSTRAP_API_KEY", global = true, hide_env_values = true)]
    pub bootstrap_api_key: Option<String>,

    /// Seconds between heartbeat comments on `GET /events/stream`.
    #[arg(long, env = "PWNBOOK_SSE_HEARTBEAT_SECONDS", default_value = "15", global = true)]
    pub sse_heartbeat_seconds: NonZeroU32,

    /// Let webhooks reach loopback, private and link-local addresses (refused by default: SSRF).
    /// Takes 1/0 as well as true/false, yes/no, on/off (`--webhook-allow-private=false` turns
    /// the environment's setting off).
    #[arg(
        long,
        env = "PWNBOOK_WEBHOOK_ALLOW_PRIVATE",
        global = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub webhook_allow_private: bool,

    /// Milliseconds before the first retry of a failed webhook delivery; doubled per retry.
    #[arg(long, env = "PWNBOOK_WEBHOOK_RETRY_BASE_MS", default_value = "1000", global = true)]
    pub webhook_retry_base_ms: u64,

    /// Longest wait between two attempts of one webhook delivery, in milliseconds.
    #[arg(long, env = "PWNBOOK_WEBHOOK_RETRY_CAP_MS", default_value = "300000", global = true)]
    pub webhook_retry_cap_ms: u64,

    /// Log format.
    #[arg(long, env = "PWNBOOK_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Manage organizations.
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the OpenAPI 3.1 document.
    Openapi,
    /// Print the GraphQL schema (SDL).
    GraphqlSchema,
    /// Check and export the event log.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Maintain the read tables.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Recompute every organization's hash chain; exits non-zero naming the first broken position.
    Verify,
    /// Write one organization's events to standard output as NDJSON event objects, in log order.
    Export {
        /// The organization whose events to export.
        #[arg(long)]
        org: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Replay the whole log into fresh read tables and swap them in atomically (safe while a
    /// server runs on the same database).
    Rebuild {
        /// Only this projector (e.g. `engagements`); all of them when omitted.
        #[arg(long)]
        projection: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Create an organization; prints its id.
    Create {
        /// The organization's name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; prints only the secret (shown this once).
    Create {
        /// The organization the key belongs to.
        #[arg(long)]
        org: String,
        /// A name for the key.
        #[arg(long)]
        name: String,
        /// A permission to grant (repeat for several; `*` grants all).
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        /// `live` or `test`.
        #[arg(long, default_value = "live")]
        environment: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_address_switch_is_a_flag_or_takes_a_boolean() {
        let parse =
            |arg: &str| Cli::try_parse_from(["pwnbook", arg]).map(|cli| cli.settings.webhook_allow_private);
        for (arg, allowed) in [
            ("--webhook-allow-private", true),
            ("--webhook-allow-private=1", true),
            ("--webhook-allow-private=true", true),
            ("--webhook-allow-private=0", false),
            ("--webhook-allow-private=false", false),
        ] {
            assert_eq!(parse(arg).ok(), Some(allowed), "{arg}");
        }
        assert!(parse("--webhook-allow-private=maybe").is_err());
    }
}
