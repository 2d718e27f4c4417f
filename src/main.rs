//! The `hookrelay` binary: parse arguments and hand over to `cli::run` (which loads and checks
//! the config before any port is bound, or talks to a running sidecar's admin API).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use hookrelay::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for the whole process, chosen before anything builds a client (the
    // sidecar's sender and the CLI's admin client alike).
    let _ = rustls::crypto::ring::default_provider().install_default();
    hookrelay::cli::run(cli)
}
