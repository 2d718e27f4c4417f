//! The `hookrelay` binary: parse arguments and hand over to `cli::run` (which loads and checks
//! the config before any port is bound, or talks to a running sidecar's admin API).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use hookrelay::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // One TLS provider for the whole process, chosen before anything builds a client (the
    // sidecar's sender and the CLI's admin client alike).
    let _ = rustls::crypto::ring::default_provider().install_default();
    hookrelay::cli::run(cli)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora=warn,pingora_core=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    hookrelay::panics::install_hook();
}
