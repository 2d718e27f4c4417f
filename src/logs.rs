//! The log: tracing events on stderr, as text lines or JSON objects (`log.format`), filtered by
//! `log.level` or `RUST_LOG`. The panic hook (`panics.rs`) writes through it too.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// What the log leaves out unless a directive names it: pingora's own lines (one per
/// connection error a client causes), and rustls-platform-verifier's ERROR for each receiver
/// certificate it rejects (that attempt already records it as `TLS_ERROR`, with the reason).
const QUIET: &str = "pingora=warn,pingora_core=warn,rustls_platform_verifier=off";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One human-readable line per event (colored only on a terminal).
    Text,
    /// One JSON object per line, its fields at the top level, for log shippers.
    Json,
}

/// `[log]` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: Format,
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or `tracing` directives such as
    /// `info,hookrelay::deliver=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: Format::Text,
            level: "info".into(),
        }
    }
}

/// The filter for `level`: the quiet defaults first, so `level` (later) can override them for
/// a target it names. An error names what is wrong with `level`.
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    // tracing reads " info" as a target named " info": spaces around a directive are dropped.
    let level = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    let level = level.as_str();
    if level.is_empty() {
        return Err("must not be empty (a level such as \"info\", or directives)".into());
    }
    // A bare word is a level; tracing would take any other one for a target name, so a typo
    // ("debgu") would quietly log at the default level.
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[']);
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}` is not a level (off, error, warn, info, debug, trace); name a target as target=level, as in \"hookrelay=debug\""
            ));
        }
    }
    EnvFilter::builder()
        .parse(format!("info,{QUIET},{level}"))
        .map_err(|e| {
            format!(
                "{e} (a level such as \"info\", or directives such as \"info,hookrelay=debug\")"
            )
        })
}

/// Installs the log for this process: `RUST_LOG`, when set and valid, takes the place of
/// `config.level`. Then the panic hook, so a panic is logged in the same format.
pub fn init(config: &LogConfig) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (filter, env_error) = match from_env.as_deref().map(filter) {
        Some(Ok(f)) => (f, None),
        Some(Err(e)) => (default_filter(config), Some(e)),
        None => (default_filter(config), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.format {
        Format::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    if let Some(e) = env_error {
        tracing::warn!("RUST_LOG ignored, log.level used instead: {e}");
    }
    crate::panics::install_hook();
}

fn default_filter(config: &LogConfig) -> EnvFilter {
    // `log.level` was checked when the config was loaded; the fallback is for the commands
    // that run without one.
    filter(&config.level).unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    /// Whether an event of `target` at `level` passes the filter built from `directives`.
    fn passes(directives: &str, target_debug: bool) -> (bool, bool, bool, bool) {
        let subscriber = tracing_subscriber::registry().with(filter(directives).unwrap());
        tracing::subscriber::with_default(subscriber, || {
            (
                tracing::enabled!(target: "hookrelay::deliver", Level::INFO),
                if target_debug {
                    tracing::enabled!(target: "pingora_core::server", Level::DEBUG)
                } else {
                    tracing::enabled!(target: "pingora_core::server", Level::INFO)
                },
                tracing::enabled!(target: "rustls_platform_verifier::verification", Level::ERROR),
                tracing::enabled!(target: "hookrelay::deliver", Level::DEBUG),
            )
        })
    }

    #[test]
    fn the_quiet_defaults_hold_unless_a_directive_names_their_target() {
        // info for everything, pingora from warn, the verifier's per-attempt error off.
        assert_eq!(passes("info", false), (true, false, false, false));
        assert_eq!(passes("warn", false), (false, false, false, false));
        // A bare level does not reopen them...
        assert_eq!(passes("debug", false), (true, false, false, true));
        // ...a directive naming the target does.
        assert_eq!(
            passes("info,pingora_core=debug", true),
            (true, true, false, false)
        );
        assert_eq!(
            passes("warn,hookrelay::deliver=debug", false),
            (true, false, false, true)
        );
    }

    #[test]
    fn a_bad_level_is_refused_with_a_reason() {
        assert!(filter("").is_err());
        assert!(filter("   ").is_err());
        let e = filter("info,hookrelay=loud").unwrap_err();
        assert!(e.contains("directives"), "{e}");
        assert!(filter("warn").is_ok());
        assert!(filter("DEBUG,hookrelay::deliver=trace").is_ok());
        let e = filter("debgu").unwrap_err();
        assert!(e.contains("`debgu` is not a level"), "{e}");
        assert!(filter("info,verbose").is_err());
        // Spaces after the commas are the writer's, not part of a target.
        assert_eq!(
            passes("warn, hookrelay::deliver=debug", false),
            (true, false, false, true)
        );
        assert_eq!(
            passes("hookrelay::deliver=debug, warn", false),
            (true, false, false, true)
        );
    }
}
