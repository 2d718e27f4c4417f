//! The `hookrelay` binary: parse arguments, load config (exiting before any port is bound if it
//! is wrong), then hand over to `app::serve`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use hookrelay::config::Config;

mod cli;

#[derive(Parser)]
#[command(
    name = "hookrelay",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("HOOKRELAY_GIT_COMMIT"), ")"),
    about = "Webhook delivery sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: ingest listener, delivery, admin API.
    Serve {
        /// A TOML file layered over the embedded defaults.
        #[arg(long, short = 'c', env = "HOOKRELAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check the configuration, or show the effective one.
    Config {
        #[command(subcommand)]
        command: cli::config_cmd::ConfigCommand,
    },
    /// Probe the running sidecar's admin listener (exit 0 if ready); for container health checks.
    Healthcheck(cli::healthcheck::HealthcheckArgs),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // One TLS provider for the whole process, chosen before anything builds a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve { config } => {
            let config = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hookrelay: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            match hookrelay::app::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hookrelay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config { command } => cli::config_cmd::run(command),
        Command::Healthcheck(args) => cli::healthcheck::run(args),
        Command::Completions { shell } => {
            cli::completions::print(shell, Cli::command());
            ExitCode::SUCCESS
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora=warn,pingora_core=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
