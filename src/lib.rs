//! hookrelay: a webhook delivery sidecar. See ARCHITECTURE.md for the map.
//!
//! Modules in the order a webhook meets them: `ingest` -> `store` (writer) -> `schedule` ->
//! `deliver` (via `sender`, `classify`, `retry`, `sign`) -> back to `store`; `egress` guards
//! ingest and the sender, `health` holds failing hosts and gone endpoints; `admin` and `metrics`
//! at the edges; `app` wires them, `config` feeds them, `shutdown` stops them.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod egress;
pub mod health;
pub mod ingest;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod pace;
pub mod panics;
pub mod redact;
pub mod retry;
pub mod schedule;
pub mod sender;
pub mod shutdown;
pub mod sign;
pub mod store;
pub mod tls;
