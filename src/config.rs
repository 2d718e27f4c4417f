//! Configuration: figment layering (embedded `config/default.toml`, then an optional file, then
//! `HOOKRELAY_SECTION__KEY` env vars), typed sections, and validation.
//!
//! Everything is checked here, when the config is loaded, so a bad value stops start-up with a
//! message naming the key before any port is bound. Nothing downstream re-validates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::{Deserialize, Deserializer};

use crate::egress::{EgressPolicy, Mode};
pub use crate::logs::LogConfig;
use crate::pace::{Rate, RateLimits};
use crate::retry::RetryPolicy;

/// The defaults file, embedded so that documentation and behaviour cannot disagree.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}", describe(.0))]
    Parse(#[from] Box<figment::Error>),
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("config file {0}: not found")]
    MissingFile(PathBuf),
    #[error("config file {0}: {1}")]
    UnreadableFile(PathBuf, String),
}

/// A TOML parse error quotes the offending line of the file, which may hold a secret (an
/// unclosed `token = "...`): only its position and reason are kept.
fn without_source_lines(message: &str) -> String {
    if !message.starts_with("TOML parse error") {
        return message.to_string();
    }
    message
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with('|')
                || t.split_once(" |")
                    .is_some_and(|(n, _)| n.trim().parse::<u32>().is_ok()))
        })
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// What went wrong, without the value when the key holds a secret: a token or a signing key
/// given in the wrong shape (`secrets = "whsk_..."` for a list) must not be printed to a log.
fn kind_text(e: &figment::Error) -> String {
    use figment::error::Kind;
    if !crate::redact::is_secret_key(&e.path) {
        return e.kind.to_string();
    }
    match &e.kind {
        Kind::InvalidType(_, expected) => {
            format!("invalid type: expected {expected} (the value is not shown: it is a secret)")
        }
        Kind::InvalidValue(_, expected) => {
            format!("invalid value: expected {expected} (the value is not shown: it is a secret)")
        }
        Kind::InvalidLength(n, expected) => format!("invalid length {n}, expected {expected}"),
        Kind::MissingField(_) | Kind::UnknownField(..) | Kind::DuplicateField(_) => {
            e.kind.to_string()
        }
        _ => "invalid value (not shown: it is a secret)".into(),
    }
}

/// figment's errors, one per line, naming the key as the operator writes it (`retry.max_delay`;
/// figment's own text puts its profile name in front, `default.retry.max_delay`).
fn describe(e: &figment::Error) -> String {
    e.clone()
        .into_iter()
        .map(|e| {
            // figment quotes serde's own quoted list again: ``text` or `json`` reads better as
            // `text` or `json`.
            let mut line = without_source_lines(&kind_text(&e)).replace("``", "`");
            if !e.path.is_empty() {
                line.push_str(&format!(" for key `{}`", e.path.join(".")));
            }
            if let Some(md) = &e.metadata {
                match &md.source {
                    Some(source) => line.push_str(&format!(" in {source} {}", md.name)),
                    None => line.push_str(&format!(" in {}", md.name)),
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
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
    egress: RawEgress,
    health: HealthConfig,
    log: LogConfig,
    notify: NotifyConfig,
    #[serde(default)]
    endpoints: BTreeMap<String, RawEndpoint>,
}

/// hookrelay's own events (a delivery that ended failed, an endpoint a 410 disabled).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyConfig {
    /// The named endpoint they are delivered to; empty: none are made.
    endpoint: String,
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
    /// Without a token, the host names (besides IP addresses and localhost) the admin API
    /// answers to in the Host header: a defence against DNS rebinding.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub path: PathBuf,
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    /// Ingest answers `503 overloaded` while this many deliveries are pending or in flight.
    pub max_pending: usize,
    /// Ingest answers `503 overloaded` while the store uses more than this (0: no limit).
    pub max_bytes: u64,
    /// redb's page cache; bodies stay on disk beyond it, so memory does not grow with the backlog.
    pub cache_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Requests in flight at once across all hosts; an attempt frees its place when its host
    /// has answered (see `schedule::Attempts`).
    pub concurrency: usize,
    /// Requests in flight at once to one destination host.
    pub per_host_concurrency: usize,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    pub response_snippet_bytes: usize,
    pub user_agent: String,
    pub threads: usize,
    /// Rate limit of every host (`pace::Rate` text); checked into `Config::rate_limits`.
    #[serde(default)]
    pub per_host_rate: Option<String>,
    /// Rate limits by host name or `host:port`; checked into `Config::rate_limits`.
    pub host_rates: BTreeMap<String, String>,
    /// CA certificates (PEM) trusted besides the system's; read into `Config::ca_roots`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
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
struct RawEgress {
    mode: String,
    https_only: bool,
    allow_cidrs: Vec<String>,
    allow_hosts: Vec<String>,
    deny_cidrs: Vec<String>,
}

/// Per-host circuit breaker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Consecutive failed attempts to one host that open its circuit.
    pub failure_threshold: u32,
    /// While open, one probe attempt is let through this often.
    #[serde(deserialize_with = "duration")]
    pub probe_interval: Duration,
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
    /// Standard Webhooks signing secret, `whsec_` + base64.
    secret: Option<String>,
    /// Older secrets still signed with during a rotation.
    #[serde(default)]
    secrets: Vec<String>,
    /// CA certificates (PEM) trusted for this endpoint, besides `delivery.ca_file`'s.
    ca_file: Option<PathBuf>,
    /// Mutual TLS: the certificate chain (PEM) presented to the receiver, and its key.
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
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
    /// Signing keys, the current one first; empty means unsigned.
    pub signing_keys: Vec<crate::sign::SigningKey>,
    /// Its own TLS settings; when set, its deliveries go through a client of their own.
    pub tls: EndpointTls,
}

/// An endpoint's TLS settings, read and checked at load.
#[derive(Debug, Clone, Default)]
pub struct EndpointTls {
    /// Trusted besides the system's and `delivery.ca_file`'s.
    pub roots: crate::tls::Roots,
    /// The client certificate presented to a receiver that asks for one.
    pub identity: Option<crate::tls::ClientIdentity>,
}

impl EndpointTls {
    pub fn is_set(&self) -> bool {
        !self.roots.is_empty() || self.identity.is_some()
    }
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
    pub egress: EgressPolicy,
    pub health: HealthConfig,
    pub log: LogConfig,
    pub endpoints: BTreeMap<String, Endpoint>,
    /// `notify.endpoint`: the endpoint that gets hookrelay's own events, if any.
    pub notify: Option<String>,
    /// `delivery.per_host_rate` and `delivery.host_rates`, parsed.
    pub rate_limits: RateLimits,
    /// `delivery.ca_file`'s certificates: trusted for every delivery besides the system's.
    pub ca_roots: crate::tls::Roots,
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
        let raw: RawConfig = layered(file, env)?.extract().map_err(Box::new)?;
        raw.validate()
    }
}

/// The layers of a configuration before validation: the embedded defaults, then `file`, then one
/// layer per `HOOKRELAY_SECTION__KEY` variable (sorted by name). Every value keeps the metadata of
/// the layer that set it, which is how `hookrelay config show` tells where it came from:
/// [`Origin::of`].
pub fn layered(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Figment, ConfigError> {
    if let Some(path) = file {
        // figment reads a file it cannot open as empty: a directory (a ConfigMap mounted where
        // the file was meant to be) or an unreadable file would run on the defaults.
        let unreadable = |why: String| Err(ConfigError::UnreadableFile(path.to_path_buf(), why));
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            Err(e) => return unreadable(e.to_string()),
            Ok(m) if m.is_dir() => return unreadable("is a directory, not a file".into()),
            Ok(_) => {
                if let Err(e) = std::fs::File::open(path) {
                    return unreadable(e.to_string());
                }
            }
        }
    }
    // Only double-underscore names are config keys: HOOKRELAY_ADMIN_URL and friends belong to
    // the CLI and must not be read as unknown keys.
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("HOOKRELAY_") && k.contains("__"))
        .collect();
    env.sort();
    let keys: Vec<String> = env
        .iter()
        .map(|(k, _)| {
            k["HOOKRELAY_".len()..]
                .to_ascii_lowercase()
                .replace("__", ".")
        })
        .collect();
    // An env value has no type of its own: it is read as a number, boolean, array or table
    // when it is written as one, and as a string otherwise. Where that guess meets a key that
    // wants a string (a numeric token, `HOOKRELAY_DELIVERY__USER_AGENT=1.0`), the variable is
    // read again as a string.
    let build = |as_string: &[bool]| {
        let mut figment = Figment::from(Layer {
            metadata: Metadata::named(DEFAULTS_LAYER),
            data: Toml::string(DEFAULT_TOML),
        });
        if let Some(path) = file {
            figment = figment.merge(Toml::file(path));
        }
        for (((k, v), key), string) in env.iter().zip(&keys).zip(as_string) {
            let value = if *string {
                toml_string(v)
            } else {
                env_value_to_toml(v)
            };
            figment = figment.merge(Layer {
                data: Toml::string(&format!("{key} = {value}\n")),
                metadata: Metadata::from(ENV_LAYER, Source::Custom(k.clone())),
            });
        }
        figment
    };
    let mut as_string = vec![false; env.len()];
    loop {
        let figment = build(&as_string);
        let Err(errors) = figment.extract::<RawConfig>() else {
            return Ok(figment);
        };
        let retyped = errors.into_iter().find_map(|e| {
            let figment::error::Kind::InvalidType(..) = e.kind else {
                return None;
            };
            let path = e.path.join(".");
            keys.iter()
                .enumerate()
                .rposition(|(i, k)| *k == path && !as_string[i])
        });
        match retyped {
            Some(i) => as_string[i] = true,
            // Whatever is left is the caller's to report.
            None => return Ok(figment),
        }
    }
}

const DEFAULTS_LAYER: &str = "embedded defaults (config/default.toml)";
/// Largest `ingest.max_body_bytes`: a body is one value in the store, and redb refuses a value
/// much past 3 GiB, which would fail the commit of every webhook batched with it.
const MAX_BODY_LIMIT: usize = 256 << 20;
const ENV_LAYER: &str = "environment variable";

/// A TOML layer under a name of our choosing, so errors and `config show` name the real origin
/// (an env var, the embedded defaults) rather than "TOML source string".
struct Layer {
    metadata: Metadata,
    data: figment::providers::Data<Toml>,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.data.data()
    }
}

/// Where one configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    /// The name of the environment variable.
    Env(String),
}

impl Origin {
    /// The origin recorded in a layer's metadata (see [`layered`]).
    pub fn of(metadata: &Metadata) -> Origin {
        match &metadata.source {
            Some(Source::File(path)) => Origin::File(path.clone()),
            Some(Source::Custom(var)) if metadata.name == ENV_LAYER => Origin::Env(var.clone()),
            _ => Origin::Default,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(var) => write!(f, "env {var}"),
        }
    }
}

/// An env value as TOML: numbers, booleans, arrays and tables (when TOML reads them as such)
/// stay themselves, everything else is a string (see `layered` for a key that wants a string).
fn env_value_to_toml(v: &str) -> String {
    let typed = v.parse::<i64>().is_ok()
        || v.parse::<f64>().is_ok_and(f64::is_finite)
        || v == "true"
        || v == "false"
        || v.starts_with('[')
        || v.starts_with('{');
    // Only what TOML reads as a value of its own: `[::1]:7700` is an address, not an array.
    let valid = || toml::from_str::<toml::Table>(&format!("v = {v}")).is_ok();
    if typed && valid() {
        v.to_string()
    } else {
        toml_string(v)
    }
}

fn toml_string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() && c != '\t' => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `delivery.host_rates` key as the queue names hosts (`model::url_host_key`): the host as a
/// URL's parser writes it (lower case, IDN as punycode, IPv6 in brackets), then `:port` if one
/// was given. None if it is not a host (or `host:port`) a URL could name.
fn host_rate_key(text: &str) -> Option<String> {
    let text = text.trim();
    if text.contains('*') {
        return None;
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.starts_with('[')) =>
        {
            (h, Some(p.parse::<u16>().ok()?))
        }
        _ => (text, None),
    };
    if host.is_empty() {
        return None;
    }
    let host = url::Host::parse(host).ok()?;
    Some(match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

impl RawConfig {
    fn rate_limits(&self) -> Result<RateLimits, ConfigError> {
        let default = match &self.delivery.per_host_rate {
            Some(text) => {
                Some(Rate::parse(text).map_err(|e| invalid("delivery.per_host_rate", e))?)
            }
            None => None,
        };
        let mut hosts = std::collections::HashMap::new();
        for (host, text) in &self.delivery.host_rates {
            let key = format!("delivery.host_rates.{host}");
            let Some(name) = host_rate_key(host) else {
                return Err(invalid(
                    key,
                    "must be a host name (any port) or host:port as a delivery's URL names it, as in \"api.example.com\", \"api.example.com:8443\" or \"[::1]:8443\" (no wildcards)",
                ));
            };
            let rate = Rate::parse(text).map_err(|e| invalid(&key, e))?;
            if hosts.insert(name, rate).is_some() {
                return Err(invalid(
                    key,
                    "names a host twice (names are case-insensitive)",
                ));
            }
        }
        Ok(RateLimits { default, hosts })
    }

    fn validate(self) -> Result<Config, ConfigError> {
        if self.ingest.max_body_bytes == 0 {
            return Err(invalid("ingest.max_body_bytes", "must be at least 1"));
        }
        if self.ingest.max_body_bytes > MAX_BODY_LIMIT {
            return Err(invalid(
                "ingest.max_body_bytes",
                "must be at most 268435456 (256 MiB): every body is one value in the store",
            ));
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
        if self.delivery.per_host_concurrency == 0 {
            return Err(invalid(
                "delivery.per_host_concurrency",
                "must be at least 1",
            ));
        }
        if self.store.max_pending == 0 {
            return Err(invalid("store.max_pending", "must be at least 1"));
        }
        if self.store.cache_bytes < 1 << 20 {
            return Err(invalid(
                "store.cache_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if self.health.failure_threshold == 0 {
            return Err(invalid("health.failure_threshold", "must be at least 1"));
        }
        if self.health.probe_interval.is_zero() {
            return Err(invalid("health.probe_interval", "must be more than 0"));
        }
        let rate_limits = self.rate_limits()?;
        if let Err(e) = crate::logs::filter(&self.log.level) {
            return Err(invalid("log.level", e));
        }
        let egress = build_egress(&self.egress)?;
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
        if self.store.retention.is_zero() {
            return Err(invalid("store.retention", "must be more than 0"));
        }
        if self.idempotency.window.is_zero() {
            return Err(invalid("idempotency.window", "must be more than 0"));
        }
        let retry = build_retry("retry", &self.retry, None)?;
        let ca_roots = match &self.delivery.ca_file {
            Some(path) => {
                crate::tls::read_roots(path).map_err(|e| invalid("delivery.ca_file", e))?
            }
            None => Vec::new(),
        };
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
            if url.port() == Some(0) {
                return Err(invalid(
                    format!("{key}.url"),
                    "port 0 cannot be connected to",
                ));
            }
            // Every delivery to it would be refused (and every event it matches, whole).
            if egress.mode == Mode::Enforce
                && let Err(denied) = egress.check_url(&url)
            {
                let fix = match denied {
                    crate::egress::EgressDenied::NotHttps => "use an https:// URL",
                    _ => "open it with egress.allow_cidrs or egress.allow_hosts",
                };
                return Err(invalid(
                    format!("{key}.url"),
                    format!("the egress guard denies it ({denied}); {fix}"),
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
            let mut signing_keys = Vec::new();
            if raw.secret.is_none() && !raw.secrets.is_empty() {
                return Err(invalid(
                    format!("{key}.secrets"),
                    "older secrets need a current `secret`",
                ));
            }
            for (i, s) in raw.secret.iter().chain(&raw.secrets).enumerate() {
                let k = if i == 0 {
                    format!("{key}.secret")
                } else {
                    format!("{key}.secrets")
                };
                signing_keys
                    .push(crate::sign::decode_secret(s).map_err(|reason| invalid(k, reason))?);
            }
            let mut tls = EndpointTls::default();
            if let Some(path) = &raw.ca_file {
                tls.roots = crate::tls::read_roots(path)
                    .map_err(|e| invalid(format!("{key}.ca_file"), e))?;
            }
            match (&raw.client_cert, &raw.client_key) {
                (Some(cert), Some(k)) => {
                    tls.identity = Some(
                        crate::tls::read_identity(cert, k)
                            .map_err(|e| invalid(format!("{key}.client_cert"), e))?,
                    );
                }
                (Some(_), None) => {
                    return Err(invalid(
                        format!("{key}.client_key"),
                        "is needed with client_cert (the certificate's private key, PEM)",
                    ));
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        format!("{key}.client_cert"),
                        "is needed with client_key (the certificate chain, PEM)",
                    ));
                }
                (None, None) => {}
            }
            if url.scheme() != "https" {
                let set = [
                    ("ca_file", raw.ca_file.is_some()),
                    ("client_cert", tls.identity.is_some()),
                ];
                if let Some((field, _)) = set.iter().find(|(_, on)| *on) {
                    return Err(invalid(
                        format!("{key}.{field}"),
                        "is used only over TLS: the endpoint's url must be https://",
                    ));
                }
            }
            endpoints.insert(
                name.clone(),
                Endpoint {
                    name,
                    url,
                    headers,
                    timeout,
                    retry,
                    events: raw.events,
                    signing_keys,
                    tls,
                },
            );
        }
        let notify = match self.notify.endpoint.as_str() {
            "" => None,
            name if endpoints.contains_key(name) => Some(name.to_string()),
            name => {
                return Err(invalid(
                    "notify.endpoint",
                    format!("names no endpoint: there is no [endpoints.{name}]"),
                ));
            }
        };
        Ok(Config {
            ingest: self.ingest,
            admin: self.admin,
            store: self.store,
            delivery: self.delivery,
            retry,
            idempotency: self.idempotency,
            shutdown: self.shutdown,
            egress,
            health: self.health,
            log: self.log,
            rate_limits,
            endpoints,
            notify,
            ca_roots,
        })
    }
}

fn build_egress(raw: &RawEgress) -> Result<EgressPolicy, ConfigError> {
    let mode = match raw.mode.as_str() {
        "enforce" => Mode::Enforce,
        "report" => Mode::Report,
        other => {
            return Err(invalid(
                "egress.mode",
                format!("`{other}` is not \"enforce\" or \"report\""),
            ));
        }
    };
    let cidrs = |key: &str, list: &[String]| {
        list.iter()
            .map(|c| {
                c.parse::<ipnet::IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| invalid(key, format!("`{c}` is not a CIDR like 10.0.0.0/8")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    for h in &raw.allow_hosts {
        if h.is_empty() || h.contains(['/', ':', ' ']) {
            return Err(invalid(
                "egress.allow_hosts",
                format!("`{h}` is not a host name"),
            ));
        }
    }
    Ok(EgressPolicy {
        mode,
        https_only: raw.https_only,
        allow_cidrs: cidrs("egress.allow_cidrs", &raw.allow_cidrs)?,
        allow_hosts: raw
            .allow_hosts
            .iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect(),
        deny_cidrs: cidrs("egress.deny_cidrs", &raw.deny_cidrs)?,
    })
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

/// A duration as written in the config: a string such as `"5s"`. A bare number is refused
/// with the unit it lacks named.
struct DurationText(String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"5s\", \"200ms\" or \"72h\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "`{v}` needs a unit, as in \"{v}s\" (or ms, m, h, d)"
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "`{v}` needs a unit, as in \"{v}s\" (or ms, m, h, d)"
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "`{v}` needs a unit, as in \"{v}s\" (or ms, m, h, d)"
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let DurationText(s) = DurationText::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<DurationText>::deserialize(d)?;
    s.map(|DurationText(s)| parse_duration(&s).map_err(serde::de::Error::custom))
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
        assert_eq!(c.store.max_pending, 1_000_000);
        assert_eq!(c.store.max_bytes, 0);
        assert_eq!(c.delivery.per_host_concurrency, 8);
        assert_eq!(c.health.failure_threshold, 10);
        assert_eq!(c.health.probe_interval, Duration::from_secs(30));
        assert_eq!(c.egress.mode, Mode::Enforce);
        assert!(!c.egress.https_only);
        assert!(c.egress.allow_cidrs.is_empty());
        assert_eq!(c.admin.token, None);
        assert!(!c.admin.metrics_public);
        assert_eq!(c.admin.max_batch, 1000);
        assert_eq!(c.log, crate::logs::LogConfig::default());
    }

    /// An endpoint the egress guard would refuse is a configuration error whose advice fits
    /// the refusal.
    #[test]
    fn an_endpoint_the_egress_guard_refuses_says_how_to_open_it() {
        let file = "[endpoints.local]\nurl = \"http://127.0.0.1:9/x\"\n";
        let err = load(file, &[]).unwrap_err().to_string();
        assert!(
            err.contains("open it with egress.allow_cidrs or egress.allow_hosts"),
            "{err}"
        );
        let open = ("HOOKRELAY_EGRESS__ALLOW_CIDRS", "[\"127.0.0.0/8\"]");
        assert!(load(file, &[open]).is_ok());
        let err = load(file, &[open, ("HOOKRELAY_EGRESS__HTTPS_ONLY", "true")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("use an https:// URL"), "{err}");
        assert!(!err.contains("allow_cidrs"), "{err}");
    }

    #[test]
    fn file_then_env_layering() {
        let c = load(
            "[delivery]\nconcurrency = 7\n[endpoints.orders]\nurl = \"https://hooks.example.com/x\"\nevents = [\"order.*\"]\n[endpoints.orders.retry]\nmax_attempts = 3\n",
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
    fn env_values_are_strings_where_a_string_is_wanted() {
        let c = Config::load_with_env(
            None,
            [
                ("HOOKRELAY_INGEST__LISTEN", "[::1]:7799"),
                ("HOOKRELAY_ADMIN__LISTEN", "[::1]:7798"),
                ("HOOKRELAY_ADMIN__TOKEN", "1234567890123456"),
                ("HOOKRELAY_DELIVERY__USER_AGENT", "1.0"),
                ("HOOKRELAY_STORE__PATH", "2024"),
                ("HOOKRELAY_DELIVERY__CONCURRENCY", "9"),
                ("HOOKRELAY_EGRESS__ALLOW_CIDRS", "[\"127.0.0.0/8\"]"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        assert_eq!(c.ingest.listen.to_string(), "[::1]:7799");
        assert_eq!(c.admin.listen.to_string(), "[::1]:7798");
        assert_eq!(c.admin.token.as_deref(), Some("1234567890123456"));
        assert_eq!(c.delivery.user_agent, "1.0");
        assert_eq!(c.store.path, PathBuf::from("2024"));
        assert_eq!(c.delivery.concurrency, 9);
        assert_eq!(c.egress.allow_cidrs.len(), 1);
        // A secret that is not a valid value is refused without being shown.
        for token in ["[supersecrettoken1234]", "1e1000", "abc\u{1}defghijklmnopq"] {
            let env = [("HOOKRELAY_ADMIN__TOKEN".to_string(), token.to_string())];
            match Config::load_with_env(None, env) {
                Ok(c) => assert_eq!(c.admin.token.as_deref(), Some(token)),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains("admin.token"), "{e}");
                    assert!(!e.contains(token.trim_matches(['[', ']'])), "{e}");
                }
            }
        }
    }

    #[test]
    fn host_rate_keys_are_written_as_the_queue_names_hosts() {
        for (key, want) in [
            ("API.Example.com", "api.example.com"),
            (" api.example.com:8443 ", "api.example.com:8443"),
            ("[::1]:9000", "[::1]:9000"),
            ("[::1]", "[::1]"),
            ("127.0.0.1:80", "127.0.0.1:80"),
            ("bücher.example", "xn--bcher-kva.example"),
        ] {
            assert_eq!(host_rate_key(key).as_deref(), Some(want), "{key}");
        }
        for bad in ["", "::1", "*.example.com", "h:99999", "a b", "h/x", ":80"] {
            assert_eq!(host_rate_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_parse_error_does_not_quote_the_line_that_may_hold_a_secret() {
        let e = load("[admin]\ntoken = \"SECRET12345678901234\n", &[])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SECRET"), "{e}");
        assert!(e.contains("line 2, column"), "{e}");
        assert!(e.contains("invalid basic string"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&str, &str)] = &[
            ("[delivery]\nconcurrency = 0\n", "delivery.concurrency"),
            ("[retry]\nmultiplier = 0.5\n", "retry.multiplier"),
            ("[retry]\ninitial_delay = \"soon\"\n", "initial_delay"),
            ("[retry]\ninitial_delay = 5\n", "needs a unit, as in \"5s\""),
            (
                "[delivery]\nhost_rates = { \"::1\" = \"1/s\" }\n",
                "delivery.host_rates.::1",
            ),
            (
                "[delivery]\nhost_rates = { \"*.example.com\" = \"1/s\" }\n",
                "delivery.host_rates.*.example.com",
            ),
            (
                "[delivery]\nhost_rates = { \"h:99999\" = \"1/s\" }\n",
                "delivery.host_rates.h:99999",
            ),
            (
                "[delivery]\nhost_rates = { \"h\" = \"1/day\" }\n",
                "delivery.host_rates.h",
            ),
            (
                "[delivery]\nper_host_rate = \"fast\"\n",
                "delivery.per_host_rate",
            ),
            ("[ingest]\nnope = 1\n", "nope"),
            ("[bogus]\nx = 1\n", "bogus"),
            ("[endpoints.a]\nurl = \"ftp://x\"\n", "endpoints.a.url"),
            ("[endpoints.a]\nurl = \"http://x:0/\"\n", "endpoints.a.url"),
            (
                "[endpoints.a]\nurl = \"http://10.0.0.1/x\"\n",
                "endpoints.a.url",
            ),
            ("[endpoints.\"a b\"]\nurl = \"http://x\"\n", "endpoints.a b"),
            ("[retry]\njitter = 2.0\n", "retry.jitter"),
            ("[egress]\nmode = \"maybe\"\n", "egress.mode"),
            (
                "[egress]\nallow_cidrs = [\"10.0.0/8\"]\n",
                "egress.allow_cidrs",
            ),
            ("[egress]\ndeny_cidrs = [\"nope\"]\n", "egress.deny_cidrs"),
            (
                "[delivery]\nper_host_concurrency = 0\n",
                "delivery.per_host_concurrency",
            ),
            (
                "[health]\nfailure_threshold = 0\n",
                "health.failure_threshold",
            ),
            ("[store]\nmax_pending = 0\n", "store.max_pending"),
            (
                "[ingest]\nmax_body_bytes = 268435457\n",
                "ingest.max_body_bytes",
            ),
            ("[store]\ncache_bytes = 10\n", "store.cache_bytes"),
            ("[log]\nlevel = \"info,hookrelay=loud\"\n", "log.level"),
            ("[log]\nlevel = \"\"\n", "log.level"),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[store]\nretention = \"0s\"\n", "store.retention"),
            ("[retry]\nmax_delay = \"400d\"\n", "retry.max_delay"),
            (
                "[endpoints.a]\nurl = \"http://x\"\nsecret = \"abc\"\n",
                "endpoints.a.secret",
            ),
            (
                "[endpoints.a]\nurl = \"http://x\"\nsecret = \"whsec_!!\"\n",
                "endpoints.a.secret",
            ),
            (
                "[endpoints.a]\nurl = \"http://x\"\nsecrets = [\"whsec_AAAA\"]\n",
                "endpoints.a.secrets",
            ),
            ("[admin]\ntoken = \"short\"\n", "admin.token"),
            ("[admin]\nmax_batch = 0\n", "admin.max_batch"),
        ];
        for (toml, key) in cases {
            let err = load(toml, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{toml:?}: {err} should name {key}");
        }
    }
}
