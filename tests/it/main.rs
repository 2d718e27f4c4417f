//! One integration-test binary: every test starts the real `hookrelay` binary (see
//! `harness.rs`) against a scripted receiver on loopback.

mod browser;
mod harness;

mod admin;
mod cli;
mod delivery;
mod ingest;
mod pause;
mod replay;
mod restart;
mod retention;
mod ui;
