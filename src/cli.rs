//! The binary's subcommands other than `serve`, one module each. They run at the edge, so they
//! report with `anyhow`-style messages and exit codes rather than typed errors.

pub mod completions;
pub mod config_cmd;
pub mod healthcheck;
