//! One integration-test binary: every test starts the real `hookrelay` binary (see
//! `harness.rs`) against a scripted receiver on loopback.

mod browser;
mod harness;

mod admin;
mod chaos;
mod cli;
mod cli_config;
mod clock;
mod config_reference;
mod delivery;
mod ingest;
mod logs;
mod notify;
mod packaging;
mod pause;
mod replay;
mod restart;
mod retention;
mod safety;
mod tls;
mod ui;
