//! The `hookrelay` binary: parse arguments, load config (exiting before any port is bound if it
//! is wrong), then hand over to `app::serve`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookrelay::config::Config;

#[derive(Parser)]
#[command(name = "hookrelay", version, about = "Webhook delivery sidecar")]
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
    /// Check a configuration and report the first problem.
    ConfigCheck {
        #[arg(long, short = 'c', env = "HOOKRELAY_CONFIG")]
        config: Option<PathBuf>,
    },
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
        Command::ConfigCheck { config } => match Config::load(config.as_deref()) {
            Ok(c) => {
                println!(
                    "configuration is valid ({} endpoint(s); ingest {}, admin {})",
                    c.endpoints.len(),
                    c.ingest.listen,
                    c.admin.listen
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hookrelay: invalid configuration: {e}");
                ExitCode::from(2)
            }
        },
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
