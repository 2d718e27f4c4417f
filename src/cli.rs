//! The command line: `serve` runs the sidecar; `config`, `healthcheck` and `completions` are
//! local conveniences (`cli/config_cmd.rs`, `cli/healthcheck.rs`, `cli/completions.rs`); every
//! other command is a client of a running sidecar's admin API (`cli/client.rs`), printing tables (`cli/render.rs`)
//! or, with `--json`, the API's JSON as is.
//!
//! Operator commands never open the store or read the config file: they only speak HTTP, so they
//! behave the same against a local or a remote sidecar. Any failure is one line on stderr and a
//! non-zero exit (2 for usage and configuration errors, 1 otherwise).

pub mod client;
pub mod completions;
pub mod config_cmd;
pub mod healthcheck;
pub mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::{Value, json};

use crate::config::Config;
use client::{AdminClient, CliError};

#[derive(Parser)]
#[command(
    name = "hookrelay",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("HOOKRELAY_GIT_COMMIT"), ")"),
    about = "Webhook delivery sidecar"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the sidecar: ingest listener, delivery, admin API.
    Serve {
        /// A TOML file layered over the embedded defaults.
        #[arg(long, short = 'c', env = "HOOKRELAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check the configuration, or show the effective one.
    Config {
        #[command(subcommand)]
        command: config_cmd::ConfigCommand,
    },
    /// Probe the running sidecar's admin listener (exit 0 if ready); for container health checks.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// List, show, retry now or cancel deliveries.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Replay failed or cancelled deliveries as new deliveries (recorded as a batch).
    Replay(ReplayArgs),
    /// The replay audit trail.
    #[command(subcommand)]
    Batches(BatchesCommand),
    /// Stop new delivery attempts (all, or one host); ingest keeps accepting.
    Pause {
        /// Pause only this destination, as `host:port`.
        #[arg(long)]
        host: Option<String>,
        /// Why: shown by `status` (a host's cut to 40 characters) and the API.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Undo `pause` (all, or one host).
    Resume {
        /// Resume only this destination, as `host:port`.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Named endpoints: re-enable one that a `410 Gone` disabled.
    #[command(subcommand)]
    Endpoints(EndpointsCommand),
    /// Destination hosts: retry one's pending deliveries now.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Counts by state, pause state, hosts with pending work.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the admin API is and how to talk to it.
#[derive(Args, Clone)]
pub struct AdminArgs {
    #[arg(
        long,
        env = "HOOKRELAY_ADMIN_URL",
        default_value = "http://127.0.0.1:7701"
    )]
    pub admin_url: String,
    /// Bearer token (admin.token of the sidecar); without it, the sidecar's own
    /// HOOKRELAY_ADMIN__TOKEN is used when set.
    #[arg(long, env = "HOOKRELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Filters shared by `deliveries list` and `replay`.
#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// pending, in_progress, delivered, failed, cancelled (`replay`: failed or cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// Target URL prefix.
    #[arg(long)]
    pub target: Option<String>,
    /// Named endpoint.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Classification of the last attempt, e.g. HTTP_5XX_RETRYABLE.
    #[arg(long)]
    pub classification: Option<String>,
    /// Created at or after: RFC 3339, or a duration ago such as `1h`.
    #[arg(long)]
    pub since: Option<String>,
    /// Created before: RFC 3339, or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Subcommand)]
pub enum DeliveriesCommand {
    /// Newest first, one page.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// One delivery with its attempts.
    Show {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Cancel a pending delivery.
    Cancel {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Attempt a pending delivery now instead of after its backoff (its host's holds apply).
    Retry {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum HostsCommand {
    /// The receiver is back: attempt the host's pending deliveries now, and clear its open
    /// circuit and Retry-After hold (a pause and a rate limit still hold).
    Retry {
        /// The destination, as `host:port`.
        host: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Replay these deliveries (repeatable). Excludes the filter flags.
    #[arg(long = "id")]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Record what would be replayed, create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why: kept in the batch's audit record.
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Subcommand)]
pub enum EndpointsCommand {
    /// The configured endpoints: state, target, event patterns and signing (with the `whpk_`
    /// public key of an ed25519 secret).
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Re-enable an endpoint disabled by a 410; its held deliveries resume.
    Enable {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum BatchesCommand {
    /// Newest first, one page.
    List {
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// One batch: its filter or ids, what it created and what it skipped.
    Show {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Runs one command to completion.
pub fn run(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Serve { .. }) {
        crate::logs::init(&crate::logs::LogConfig::default());
    }
    match cli.command {
        Command::Serve { config } => match Config::load(config.as_deref()) {
            Ok(c) => {
                crate::logs::init(&c.log);
                match crate::app::serve(c) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("hookrelay: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("hookrelay: invalid configuration: {e}");
                ExitCode::from(2)
            }
        },
        Command::Config { command } => config_cmd::run(command),
        Command::Healthcheck(args) => healthcheck::run(args),
        Command::Completions { shell } => {
            completions::print(shell, Cli::command());
            ExitCode::SUCCESS
        }
        operator => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("hookrelay: cannot start a runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(operate(operator)) {
                Ok(text) => {
                    out(&render::terminal_safe(&text));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hookrelay: {e}");
                    match e {
                        CliError::Usage(_) => ExitCode::from(2),
                        _ => ExitCode::FAILURE,
                    }
                }
            }
        }
    }
}

fn connect(a: &AdminArgs) -> Result<AdminClient, CliError> {
    // Beside the sidecar (`kubectl exec`, `docker exec`) its own variable is there: use it, but
    // only for a sidecar on this machine, so its token is never sent anywhere else.
    let own = || {
        std::env::var("HOOKRELAY_ADMIN__TOKEN")
            .ok()
            .filter(|t| !t.is_empty() && is_loopback_url(&a.admin_url))
    };
    let token = match (&a.token, own()) {
        (Some(t), _) => Some((t.clone(), "--token or HOOKRELAY_ADMIN_TOKEN")),
        (None, Some(t)) => Some((t, "HOOKRELAY_ADMIN__TOKEN")),
        (None, None) => None,
    };
    AdminClient::new(&a.admin_url, token)
}

/// Whether `url` names this machine (127.0.0.0/8, ::1 or localhost).
fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The answer printed as the API gave it (`--json`) or rendered by `human`, once it has the
/// fields the command reads: a 2xx JSON answer of another shape (a wrong `--admin-url`) is an error, not a pause or
/// a cancel that seemed to happen.
fn output(
    a: &AdminArgs,
    v: &Value,
    fields: &[&str],
    human: impl Fn(&Value) -> String,
) -> Result<String, CliError> {
    shaped(a, v, fields)?;
    Ok(if a.json {
        format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
    } else {
        human(v)
    })
}

/// An error unless `v` is an object with every one of `fields`.
fn shaped(a: &AdminArgs, v: &Value, fields: &[&str]) -> Result<(), CliError> {
    let missing: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| v.get(f).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(CliError::Decode {
        url: a.admin_url.clone(),
        reason: format!(
            "the answer has no `{}` (is it hookrelay's admin API?)",
            missing.join("`, `")
        ),
    })
}

fn filter_query(f: &FilterArgs) -> Vec<(&'static str, String)> {
    [
        ("status", &f.status),
        ("target", &f.target),
        ("endpoint", &f.endpoint),
        ("classification", &f.classification),
        ("since", &f.since),
        ("until", &f.until),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
    .collect()
}

async fn operate(command: Command) -> Result<String, CliError> {
    match command {
        Command::Deliveries(DeliveriesCommand::List {
            filter,
            limit,
            cursor,
            admin,
        }) => {
            let mut q = filter_query(&filter);
            q.extend(limit.map(|l| ("limit", l.to_string())));
            q.extend(cursor.map(|c| ("cursor", c)));
            let page = connect(&admin)?.get("/v1/deliveries", &q).await?;
            output(&admin, &page, &["data"], render::deliveries)
        }
        Command::Deliveries(DeliveriesCommand::Show { id, admin }) => {
            let d = connect(&admin)?
                .get(&format!("/v1/deliveries/{}", path_segment(&id)), &[])
                .await?;
            output(&admin, &d, &["id", "status"], render::delivery)
        }
        Command::Deliveries(DeliveriesCommand::Cancel { id, admin }) => {
            let d = connect(&admin)?
                .post(
                    &format!("/v1/deliveries/{}/cancel", path_segment(&id)),
                    json!({}),
                )
                .await?;
            output(&admin, &d, &["id", "status"], render::delivery)
        }
        Command::Deliveries(DeliveriesCommand::Retry { id, admin }) => {
            let d = connect(&admin)?
                .post(
                    &format!("/v1/deliveries/{}/retry", path_segment(&id)),
                    json!({}),
                )
                .await?;
            output(&admin, &d, &["id", "status"], render::delivery)
        }
        Command::Hosts(HostsCommand::Retry { host, admin }) => {
            let r = connect(&admin)?
                .post(
                    &format!("/v1/hosts/{}/retry", path_segment(&host)),
                    json!({}),
                )
                .await?;
            output(&admin, &r, &["host", "due_now"], |r| {
                let due = r["due_now"].as_u64().unwrap_or(0);
                format!(
                    "host {}: {due} pending {} due now ({} brought forward); any open circuit or Retry-After hold is cleared\n",
                    r["host"].as_str().unwrap_or("?"),
                    if due == 1 { "delivery" } else { "deliveries" },
                    r["brought_forward"]
                )
            })
        }
        Command::Replay(r) => {
            let filter = filter_query(&r.filter);
            let mut body = match (r.ids.is_empty(), filter.is_empty()) {
                (false, true) => json!({ "delivery_ids": r.ids }),
                (true, false) => {
                    let mut f = serde_json::Map::new();
                    for (k, v) in filter {
                        let k = if k == "target" { "target_prefix" } else { k };
                        f.insert(k.into(), Value::String(v));
                    }
                    json!({ "filter": f })
                }
                (true, true) => {
                    return Err(CliError::Usage(
                        "replay needs --id ... or filter flags (--status, --since, ...) to say what to replay"
                            .into(),
                    ));
                }
                (false, false) => {
                    return Err(CliError::Usage(
                        "replay takes either --id ... or filter flags (--status, --since, ...), not both"
                            .into(),
                    ));
                }
            };
            body["dry_run"] = Value::Bool(r.dry_run);
            if let Some(reason) = r.reason {
                body["reason"] = Value::String(reason);
            }
            let b = connect(&r.admin)?.post("/v1/batches", body).await?;
            output(&r.admin, &b, &["id", "created"], render::batch)
        }
        Command::Batches(BatchesCommand::List {
            limit,
            cursor,
            admin,
        }) => {
            let mut q: Vec<_> = limit
                .map(|l| ("limit", l.to_string()))
                .into_iter()
                .collect();
            q.extend(cursor.map(|c| ("cursor", c)));
            let page = connect(&admin)?.get("/v1/batches", &q).await?;
            output(&admin, &page, &["data"], render::batches)
        }
        Command::Batches(BatchesCommand::Show { id, admin }) => {
            let b = connect(&admin)?
                .get(&format!("/v1/batches/{}", path_segment(&id)), &[])
                .await?;
            output(&admin, &b, &["id", "created"], render::batch)
        }
        Command::Pause {
            host,
            reason,
            admin,
        } => {
            let path = match &host {
                Some(h) => format!("/v1/hosts/{}/pause", path_segment(h)),
                None => "/v1/pause".into(),
            };
            let body = reason.map_or(json!({}), |r| json!({ "reason": r }));
            let p = connect(&admin)?.post(&path, body).await?;
            output(&admin, &p, &["paused"], render::pause)
        }
        Command::Resume { host, admin } => {
            let path = match &host {
                Some(h) => format!("/v1/hosts/{}/resume", path_segment(h)),
                None => "/v1/resume".into(),
            };
            let p = connect(&admin)?.post(&path, json!({})).await?;
            output(&admin, &p, &["paused"], render::pause)
        }
        Command::Endpoints(EndpointsCommand::List { admin }) => {
            let e = connect(&admin)?.get("/v1/endpoints", &[]).await?;
            output(&admin, &e, &["data"], render::endpoints)
        }
        Command::Endpoints(EndpointsCommand::Enable { name, admin }) => {
            let e = connect(&admin)?
                .post(
                    &format!("/v1/endpoints/{}/enable", path_segment(&name)),
                    json!({}),
                )
                .await?;
            output(&admin, &e, &["endpoint", "was_disabled"], enabled)
        }
        Command::Status { admin } => {
            let client = connect(&admin)?;
            let stats = client.get("/v1/stats", &[]).await?;
            let hosts = client.get("/v1/hosts", &[]).await?;
            let health = client.get("/v1/health/hosts", &[]).await?;
            let pause = client.get("/v1/pause", &[]).await?;
            shaped(&admin, &stats, &["paused", "counts"])?;
            shaped(&admin, &hosts, &["data"])?;
            shaped(&admin, &health, &["disabled_endpoints"])?;
            shaped(&admin, &pause, &["paused"])?;
            if admin.json {
                let all = json!({
                    "stats": stats,
                    "pause": pause,
                    "hosts": hosts["data"],
                    "disabled_endpoints": health["disabled_endpoints"],
                });
                return Ok(format!(
                    "{}\n",
                    serde_json::to_string_pretty(&all).unwrap_or_default()
                ));
            }
            Ok(render::status(&stats, &hosts, &health, Some(&pause)))
        }
        Command::Serve { .. }
        | Command::Config { .. }
        | Command::Healthcheck(_)
        | Command::Completions { .. } => Err(CliError::Usage("not an operator command".into())),
    }
}

fn enabled(v: &Value) -> String {
    let name = v["endpoint"].as_str().unwrap_or_default();
    if v["was_disabled"] == Value::Bool(true) {
        format!("endpoint {name} enabled; its held deliveries resume\n")
    } else {
        format!("endpoint {name} was not disabled\n")
    }
}

/// Escapes what would change the meaning of a path segment; ids and `host:port` pass as is.
fn path_segment(s: &str) -> String {
    // Form encoding writes a space as `+` (a `+` itself as `%2B`); in a path it is `%20`.
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace("%3A", ":")
        .replace('+', "%20")
}

/// Writes to stdout. A reader that stopped reading (`hookrelay deliveries list | head`) is
/// not an error: what was asked was done (a replay batch, say, is created), so the rest of the
/// output is dropped and the command still succeeds, instead of `print!`'s panic. Any other
/// failure to write (a full disk: `hookrelay config new-secret > secret.txt`) ends the command
/// with exit code 1, so a script does not go on without what it asked for.
pub(crate) fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("hookrelay: cannot write the output: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sidecars_own_token_is_only_for_a_sidecar_on_this_machine() {
        for url in [
            "http://127.0.0.1:7701",
            "http://[::1]:7701/",
            "http://localhost:7701",
            "http://127.9.9.9",
        ] {
            assert!(super::is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:7701",
            "https://admin.example.com",
            "http://127.0.0.1.example.com",
            "nonsense",
        ] {
            assert!(!super::is_loopback_url(url), "{url}");
        }
    }

    use super::*;

    #[test]
    fn arguments_parse_as_documented() {
        let cli = Cli::try_parse_from([
            "hookrelay",
            "replay",
            "--status",
            "failed",
            "--since",
            "1h",
            "--dry-run",
            "--reason",
            "r",
            "--admin-url",
            "http://x:1",
        ])
        .unwrap();
        let Command::Replay(r) = cli.command else {
            panic!("not replay")
        };
        assert!(r.dry_run && r.ids.is_empty());
        assert_eq!(filter_query(&r.filter).len(), 2);
        assert_eq!(r.admin.admin_url, "http://x:1");
        assert!(Cli::try_parse_from(["hookrelay", "deliveries", "show"]).is_err());
        assert!(Cli::try_parse_from(["hookrelay", "pause", "--host", "a:1", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["hookrelay", "endpoints", "enable", "orders"]).is_ok());
        assert_eq!(path_segment("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(path_segment("a/b"), "a%2Fb");
        assert_eq!(path_segment("bad host+1"), "bad%20host%2B1");
    }
}
