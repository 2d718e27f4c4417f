//! Configuration: figment layering (embedded `config/default.toml`, then an optional file, then
//! `HOOKRELAY_SECTION__KEY` env vars), typed sections, and validation.
//!
//! Everything is checked here, when the config is loaded, so a bad value stops start-up with a
//! message naming the key before any port is bound. Nothing downstream re-validates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Deserializer};

use crate::retry::RetryPolicy;

/// The defaults file, embedded so that documentation and behaviour cannot disagree.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("config file {0}: not found")]
    MissingFile(PathBuf),
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The raw shape of the file, as serde reads it. `Config::load` turns it into [`Config`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ingest: IngestConfig,
    admin: AdminConfig,
    store: StoreConfig,
    delivery: DeliveryConfig,
    retry: RawRetry,
    idempotency: IdempotencyConfig,
    shutdown: ShutdownConfig,
    #[serde(default)]
    endpoints: BTreeMap<String, RawEndpoint>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub threads: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// When set, every admin route but the health checks needs `Authorization: Bearer TOKEN`.
    #[serde(default)]
    pub token: Option<String>,
    /// Serve `/metrics` without the token.
    pub metrics_public: bool,
    /// Most deliveries one replay batch may name or match.
    pub max_batch: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub path: PathBuf,
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    pub concurrency: usize,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    pub response_snippet_bytes: usize,
    pub user_agent: String,
    pub threads: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default, deserialize_with = "opt_duration")]
    initial_delay: Option<Duration>,
    multiplier: Option<f64>,
    #[serde(default, deserialize_with = "opt_duration")]
    max_delay: Option<Duration>,
    max_attempts: Option<u32>,
    jitter: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    #[serde(deserialize_with = "duration")]
    pub grace_period: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "opt_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    events: Vec<String>,
}

/// A named endpoint, validated.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: url::Url,
    /// Extra headers added to every delivery to this endpoint, at send time (never stored).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub events: Vec<String>,
}

/// The validated configuration the rest of the program reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub ingest: IngestConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    pub retry: RetryPolicy,
    pub idempotency: IdempotencyConfig,
    pub shutdown: ShutdownConfig,
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl Config {
    /// Embedded defaults, then `file` if given, then `HOOKRELAY_*__*` env vars.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only double-underscore names are config keys: HOOKRELAY_ADMIN_URL and friends belong to
        // the CLI and must not be read as unknown keys.
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("HOOKRELAY_") && k.contains("__"))
            .collect();
        let mut toml_env = String::new();
        for (k, v) in &env {
            let path = k["HOOKRELAY_".len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            toml_env.push_str(&format!("{path} = {}\n", env_value_to_toml(v)));
        }
        figment = figment.merge(Toml::string(&toml_env));
        let raw: RawConfig = figment.extract().map_err(Box::new)?;
        raw.validate()
    }
}

/// Env values are typed the way figment's `Env` provider would: numbers and booleans stay
/// themselves, everything else is a string.
fn env_value_to_toml(v: &str) -> String {
    let typed = v.parse::<i64>().is_ok()
        || v.parse::<f64>().is_ok()
        || v == "true"
        || v == "false"
        || v.starts_with('[')
        || v.starts_with('{');
    if typed { v.to_string() } else { toml_string(v) }
}

fn toml_string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        if self.ingest.max_body_bytes == 0 {
            return Err(invalid("ingest.max_body_bytes", "must be at least 1"));
        }
        if self.ingest.threads == 0 {
            return Err(invalid("ingest.threads", "must be at least 1"));
        }
        if self.ingest.listen == self.admin.listen {
            return Err(invalid("admin.listen", "must differ from ingest.listen"));
        }
        let weak_token = |t: &String| t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic());
        if self.admin.token.as_ref().is_some_and(weak_token) {
            return Err(invalid(
                "admin.token",
                "must be at least 16 printable ASCII characters without spaces",
            ));
        }
        if self.admin.max_batch == 0 || self.admin.max_batch > 100_000 {
            return Err(invalid("admin.max_batch", "must be between 1 and 100000"));
        }
        if self.delivery.concurrency == 0 {
            return Err(invalid("delivery.concurrency", "must be at least 1"));
        }
        if self.delivery.threads == 0 {
            return Err(invalid("delivery.threads", "must be at least 1"));
        }
        if self.delivery.timeout.is_zero() {
            return Err(invalid("delivery.timeout", "must be more than 0"));
        }
        if self.delivery.connect_timeout.is_zero() {
            return Err(invalid("delivery.connect_timeout", "must be more than 0"));
        }
        if http::HeaderValue::from_str(&self.delivery.user_agent).is_err() {
            return Err(invalid(
                "delivery.user_agent",
                "is not a valid header value",
            ));
        }
        if self.idempotency.window.is_zero() {
            return Err(invalid("idempotency.window", "must be more than 0"));
        }
        let retry = build_retry("retry", &self.retry, None)?;
        let mut endpoints = BTreeMap::new();
        for (name, raw) in self.endpoints {
            let key = format!("endpoints.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    key,
                    "endpoint names use only letters, digits, '-' and '_'",
                ));
            }
            let url = url::Url::parse(&raw.url)
                .map_err(|e| invalid(format!("{key}.url"), format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(invalid(
                    format!("{key}.url"),
                    "must be an absolute http:// or https:// URL",
                ));
            }
            let mut headers = Vec::new();
            for (h, v) in &raw.headers {
                let hn = http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    invalid(
                        format!("{key}.headers"),
                        format!("`{h}` is not a header name"),
                    )
                })?;
                let hv = http::HeaderValue::from_str(v).map_err(|_| {
                    invalid(format!("{key}.headers.{h}"), "is not a valid header value")
                })?;
                headers.push((hn, hv));
            }
            for pattern in &raw.events {
                if pattern.is_empty() {
                    return Err(invalid(format!("{key}.events"), "an empty pattern"));
                }
            }
            let timeout = raw.timeout.unwrap_or(self.delivery.timeout);
            if timeout.is_zero() {
                return Err(invalid(format!("{key}.timeout"), "must be more than 0"));
            }
            let retry = build_retry(&format!("{key}.retry"), &raw.retry, Some(&retry))?;
            endpoints.insert(
                name.clone(),
                Endpoint {
                    name,
                    url,
                    headers,
                    timeout,
                    retry,
                    events: raw.events,
                },
            );
        }
        Ok(Config {
            ingest: self.ingest,
            admin: self.admin,
            store: self.store,
            delivery: self.delivery,
            retry,
            idempotency: self.idempotency,
            shutdown: self.shutdown,
            endpoints,
        })
    }
}

/// Builds a retry policy from `raw`, filling gaps from `base` (the global policy) when given.
fn build_retry(
    key: &str,
    raw: &RawRetry,
    base: Option<&RetryPolicy>,
) -> Result<RetryPolicy, ConfigError> {
    let missing = |k: &str| invalid(format!("{key}.{k}"), "is required");
    let initial = raw
        .initial_delay
        .or(base.map(|b| b.initial_delay))
        .ok_or_else(|| missing("initial_delay"))?;
    let multiplier = raw
        .multiplier
        .or(base.map(|b| b.multiplier))
        .ok_or_else(|| missing("multiplier"))?;
    let max_delay = raw
        .max_delay
        .or(base.map(|b| b.max_delay))
        .ok_or_else(|| missing("max_delay"))?;
    let max_attempts = raw
        .max_attempts
        .or(base.map(|b| b.max_attempts))
        .ok_or_else(|| missing("max_attempts"))?;
    let jitter = raw
        .jitter
        .or(base.map(|b| b.jitter))
        .ok_or_else(|| missing("jitter"))?;
    RetryPolicy::try_new(initial, multiplier, max_delay, max_attempts, jitter)
        .map_err(|e| invalid(format!("{key}.{}", e.key), e.reason))
}

/// Parses "200ms", "5s", "72h", "7d" (humantime's grammar).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}` is not a duration: {e}"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load_with_env(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_load_and_match_the_documented_values() {
        let c = Config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!(c.ingest.listen.to_string(), "127.0.0.1:7700");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:7701");
        assert_eq!(c.ingest.max_body_bytes, 1 << 20);
        assert_eq!(c.retry.initial_delay, Duration::from_secs(5));
        assert_eq!(c.retry.max_delay, Duration::from_secs(24 * 3600));
        assert_eq!(c.retry.max_attempts, 12);
        assert_eq!(c.idempotency.window, Duration::from_secs(72 * 3600));
        assert_eq!(c.store.retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(c.admin.token, None);
        assert!(!c.admin.metrics_public);
        assert_eq!(c.admin.max_batch, 1000);
    }

    #[test]
    fn file_then_env_layering() {
        let c = load(
            "[delivery]\nconcurrency = 7\n[endpoints.orders]\nurl = \"http://127.0.0.1:9/x\"\nevents = [\"order.*\"]\n[endpoints.orders.retry]\nmax_attempts = 3\n",
            &[
                ("HOOKRELAY_DELIVERY__CONCURRENCY", "9"),
                ("HOOKRELAY_RETRY__INITIAL_DELAY", "50ms"),
                ("HOOKRELAY_ADMIN_URL", "http://ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.delivery.concurrency, 9);
        assert_eq!(c.retry.initial_delay, Duration::from_millis(50));
        let ep = &c.endpoints["orders"];
        assert_eq!(ep.retry.max_attempts, 3);
        assert_eq!(ep.retry.initial_delay, Duration::from_millis(50));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&str, &str)] = &[
            ("[delivery]\nconcurrency = 0\n", "delivery.concurrency"),
            ("[retry]\nmultiplier = 0.5\n", "retry.multiplier"),
            ("[retry]\ninitial_delay = \"soon\"\n", "initial_delay"),
            ("[ingest]\nnope = 1\n", "nope"),
            ("[bogus]\nx = 1\n", "bogus"),
            ("[endpoints.a]\nurl = \"ftp://x\"\n", "endpoints.a.url"),
            ("[endpoints.\"a b\"]\nurl = \"http://x\"\n", "endpoints.a b"),
            ("[retry]\njitter = 2.0\n", "retry.jitter"),
            ("[admin]\ntoken = \"short\"\n", "admin.token"),
            ("[admin]\nmax_batch = 0\n", "admin.max_batch"),
        ];
        for (toml, key) in cases {
            let err = load(toml, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{toml:?}: {err} should name {key}");
        }
    }
}
