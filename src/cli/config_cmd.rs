//! `hookrelay config check` and `hookrelay config show`: validate a configuration without
//! starting, and print the effective one with each value's origin and every secret redacted;
//! `config new-secret` and `config public-keys` for endpoint signing.
//!
//! Both read the same layers as `serve` (`config::layered`), so what they report is what the
//! sidecar would run with. Nothing here binds a port or opens the store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{self, Config, ConfigError, DEFAULT_TOML, Origin};
use clap::Subcommand;
use figment::Figment;
use figment::value::{Dict, Value};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and explain the first problem (exit 2 if invalid).
    Check {
        /// A TOML file layered over the embedded defaults.
        #[arg(long, short = 'c', env = "HOOKRELAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the effective configuration as TOML, each value followed by its origin (default,
    /// file or env), secrets redacted. Exits 2 after printing if the configuration is invalid.
    Show {
        /// A TOML file layered over the embedded defaults.
        #[arg(long, short = 'c', env = "HOOKRELAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a new random signing secret for an endpoint's `secret`: HMAC (`whsec_`), or with
    /// --ed25519 an ed25519 secret key (`whsk_`) and the public key (`whpk_`) its receiver
    /// verifies with.
    NewSecret {
        /// An ed25519 key pair (signatures `v1a`) instead of an HMAC secret (`v1`).
        #[arg(long)]
        ed25519: bool,
    },
    /// Print the public key (`whpk_`) of each endpoint's ed25519 secret, for its receiver.
    PublicKeys {
        /// A TOML file layered over the embedded defaults.
        #[arg(long, short = 'c', env = "HOOKRELAY_CONFIG")]
        config: Option<PathBuf>,
    },
}

pub fn run(command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Check { config } => check(config.as_deref()),
        ConfigCommand::Show { config } => show(config.as_deref()),
        ConfigCommand::NewSecret { ed25519 } => new_secret(ed25519),
        ConfigCommand::PublicKeys { config } => public_keys(config.as_deref()),
    }
}

fn new_secret(ed25519: bool) -> ExitCode {
    match crate::sign::generate(ed25519) {
        Ok((secret, public)) => {
            let mut text = format!("secret: {secret}\n");
            if let Some(public) = public {
                text.push_str(&format!("public: {public}\n"));
            }
            crate::cli::out(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hookrelay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn public_keys(file: Option<&Path>) -> ExitCode {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hookrelay: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let mut lines = Vec::new();
    for ep in config.endpoints.values() {
        for (i, key) in ep.signing_keys.iter().enumerate() {
            if let Some(public) = key.public_key() {
                let which = if i == 0 { "secret" } else { "secrets" };
                lines.push(format!("{}\t{which}\t{public}", ep.name));
            }
        }
    }
    if lines.is_empty() {
        eprintln!("hookrelay: no endpoint has an ed25519 secret (`whsk_`)");
        return ExitCode::FAILURE;
    }
    crate::cli::out(&(lines.join("\n") + "\n"));
    ExitCode::SUCCESS
}

fn check(file: Option<&Path>) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            crate::cli::out(&format!(
                "configuration is valid ({} endpoint(s); ingest {}, admin {})\n",
                c.endpoints.len(),
                c.ingest.listen,
                c.admin.listen
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hookrelay: invalid configuration: {e}");
            // A semantic error names a key; say which layer set it, since the culprit is often an
            // env var nobody remembers exporting.
            if let ConfigError::Invalid { key, .. } = &e
                && let Some(line) = explain(file, key)
            {
                eprintln!("  {line}");
            }
            ExitCode::from(2)
        }
    }
}

/// `key = value (from ORIGIN)` for a key of the layered configuration, if it has a value.
fn explain(file: Option<&Path>, key: &str) -> Option<String> {
    let figment = config::layered(file, std::env::vars()).ok()?;
    let value = figment.find_value(key).ok()?;
    let origin = origin(&figment, &value);
    let path: Vec<String> = key.split('.').map(str::to_string).collect();
    Some(format!("{key} = {} (from {origin})", shown(&path, &value)))
}

fn show(file: Option<&Path>) -> ExitCode {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let rendered = config::layered(file, env.clone()).and_then(|f| render(&f));
    match rendered {
        Ok(text) => {
            crate::cli::out(&text);
            if let Some(filter) = env
                .iter()
                .find(|(k, v)| k == "RUST_LOG" && !v.trim().is_empty())
                .map(|(_, v)| v)
            {
                crate::cli::out(&format!(
                    "# RUST_LOG is set ({filter:?}): the log uses it in the place of log.level.\n"
                ));
            }
        }
        Err(e) => {
            eprintln!("hookrelay: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    }
    match Config::load_with_env(file, env) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookrelay: invalid configuration: {e}");
            ExitCode::from(2)
        }
    }
}

const HEADER: &str = "\
# hookrelay effective configuration: the embedded defaults, then the config file, then
# HOOKRELAY_SECTION__KEY environment variables. Each value is followed by its origin.
# Secrets (tokens, secrets, credential headers, URL passwords) are shown as \"<redacted>\".
# Endpoint keys not listed here inherit the global delivery.timeout and retry.* values.
";

const REDACTED: &str = "<redacted>";

/// The merged layers as TOML, one `key = value  # origin` line per value.
pub fn render(figment: &Figment) -> Result<String, ConfigError> {
    // An empty path finds the whole merged value, tags (and so origins) included.
    let merged = figment
        .find_value("")
        .map_err(|e| ConfigError::Parse(Box::new(e)))?;
    let mut out = HEADER.to_string();
    if let Some(dict) = merged.as_dict() {
        write_table(&mut out, figment, &mut Vec::new(), dict);
    }
    Ok(out)
}

/// Writes the plain values of `dict` under a `[path]` header, then each sub-table in turn.
fn write_table(out: &mut String, figment: &Figment, path: &mut Vec<String>, dict: &Dict) {
    let mut keys: Vec<&String> = dict.keys().collect();
    keys.sort_by_key(|k| (order_hint(path, k), k.to_string()));
    let (tables, values): (Vec<&String>, Vec<&String>) =
        keys.into_iter().partition(|k| dict[*k].as_dict().is_some());
    if !values.is_empty() && !path.is_empty() {
        let header: Vec<String> = path.iter().map(|k| toml_key(k)).collect();
        out.push_str(&format!("\n[{}]\n", header.join(".")));
    }
    for k in values {
        let value = &dict[k];
        path.push(k.clone());
        out.push_str(&format!(
            "{} = {}  # {}\n",
            toml_key(k),
            shown(path, value),
            origin(figment, value)
        ));
        path.pop();
    }
    for k in tables {
        path.push(k.clone());
        if let Some(sub) = dict[k].as_dict() {
            write_table(out, figment, path, sub);
        }
        path.pop();
    }
}

fn origin(figment: &Figment, value: &Value) -> Origin {
    figment
        .get_metadata(value.tag())
        .map(Origin::of)
        .unwrap_or(Origin::Default)
}

/// Sections and their keys in the order of `config/default.toml`; anything else after them,
/// alphabetically.
fn order_hint(path: &[String], key: &str) -> usize {
    match path {
        [] => DEFAULT_TOML
            .find(&format!("\n[{key}]"))
            .unwrap_or(usize::MAX),
        [section] => DEFAULT_TOML
            .find(&format!("\n[{section}]"))
            .and_then(|start| {
                let rest = &DEFAULT_TOML[start + 1..];
                let end = rest.find("\n[").unwrap_or(rest.len());
                rest[..end].find(&format!("\n{key} ="))
            })
            .unwrap_or(usize::MAX),
        _ => usize::MAX,
    }
}

/// The TOML text of `value` as `config show` prints it: redacted if `path` names a secret.
fn shown(path: &[String], value: &Value) -> String {
    let secret_header = match (path.len().checked_sub(2).map(|i| &path[i]), value) {
        (Some(table), Value::String(_, v)) if table == "headers" => {
            crate::redact::is_secret(&path[path.len() - 1], v)
        }
        _ => false,
    };
    if secret_header || crate::redact::is_secret_key(path) {
        return match value {
            Value::Array(_, items) => {
                format!("[{}]", vec![toml_str(REDACTED); items.len()].join(", "))
            }
            _ => toml_str(REDACTED),
        };
    }
    // A table or a list (named whole by an error: a bad endpoint name, a bad header name) is
    // shown item by item, each redacted by its own path.
    match value {
        Value::Dict(_, map) if map.is_empty() => return "{}".into(),
        Value::Dict(_, map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    let mut p = path.to_vec();
                    p.push(k.clone());
                    format!("{} = {}", toml_key(k), shown(&p, v))
                })
                .collect();
            return format!("{{ {} }}", items.join(", "));
        }
        Value::Array(_, items) => {
            let items: Vec<String> = items.iter().map(|v| shown(path, v)).collect();
            return format!("[{}]", items.join(", "));
        }
        _ => {}
    }
    if let Value::String(_, s) = value {
        // A URL's credentials hidden as listings show them (userinfo as `***@`, credential-
        // looking query values as `***`); anything with nothing to hide printed as written,
        // so the output loads back as the same configuration. A value under a `url` key is
        // hidden even when it is not a URL (the error names it, and it was meant to be one).
        if path.last().is_some_and(|k| k == "url") {
            return toml_str(&crate::redact::url_value(s));
        }
        return toml_str(&crate::redact::target(s));
    }
    toml::Value::try_from(value)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| format!("{value:?}"))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare { k.to_string() } else { toml_str(k) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    #[test]
    fn secrets_are_recognised_by_name() {
        let cases = [
            ("admin.token", true),
            ("endpoints.orders.secret", true),
            ("endpoints.orders.secrets", true),
            ("endpoints.orders.headers.Authorization", true),
            ("endpoints.orders.headers.X-Endpoint-Token", true),
            ("endpoints.orders.headers.X-Api-Key", true),
            ("endpoints.orders.headers.X-Trace", false),
            ("endpoints.token.url", true),
            ("delivery.user_agent", false),
            ("admin.listen", false),
            ("store.path", false),
        ];
        for (p, secret) in cases {
            assert_eq!(crate::redact::is_secret_key(&path(p)), secret, "{p}");
        }
    }

    #[test]
    fn show_names_each_origin_and_redacts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[delivery]\nconcurrency = 7\n[endpoints.orders]\nurl = \"https://u:pw@example.com/h?api_key=k3y9s3cret&v=2\"\n\
             [endpoints.az]\nurl = \"https://f.example.net/api/x?code=AzK3y\"\n\
             [endpoints.plain]\nurl = \"https://Plain.example.com\"\n\
             headers = { Authorization = \"Bearer abc\", X-Trace = \"t\", X-Auth-Key = \"cf\", X-Custom = \"Bearer\\tzz-custom-s3cret\" }\n\
             [endpoints.gh]\nurl = \"https://ghp_t0k@example.com/g\"\n",
        )
        .unwrap();
        let env = [
            ("HOOKRELAY_RETRY__MAX_ATTEMPTS", "3"),
            ("HOOKRELAY_ADMIN_URL", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let text = render(&config::layered(Some(&file), env).unwrap()).unwrap();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{text}"))
                .to_string()
        };
        assert_eq!(line("listen ="), "listen = \"127.0.0.1:7700\"  # default");
        assert!(line("concurrency =").ends_with(&format!("# file {}", file.display())));
        assert_eq!(
            line("max_attempts ="),
            "max_attempts = 3  # env HOOKRELAY_RETRY__MAX_ATTEMPTS"
        );
        assert!(line("Authorization =").starts_with("Authorization = \"<redacted>\""));
        assert!(line("X-Trace =").starts_with("X-Trace = \"t\""));
        assert!(line("X-Auth-Key =").starts_with("X-Auth-Key = \"<redacted>\""));
        assert!(line("X-Custom =").starts_with("X-Custom = \"<redacted>\""));
        let urls: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("url ="))
            .map(String::from)
            .collect();
        for want in [
            "url = \"https://***@example.com/g\"",
            "url = \"https://***@example.com/h?api_key=***&v=2\"",
            "url = \"https://f.example.net/api/x?code=***\"",
        ] {
            assert!(
                urls.iter().any(|u| u.starts_with(want)),
                "{want} in {urls:?}"
            );
        }
        // A URL with nothing to hide is printed as written (not normalised).
        assert!(
            text.contains("url = \"https://Plain.example.com\""),
            "{text}"
        );
        for secret in [
            "Bearer abc",
            ":pw@",
            "k3y9s3cret",
            "ghp_t0k",
            "\"cf\"",
            "zz-custom-s3cret",
            "AzK3y",
        ] {
            assert!(!text.contains(secret), "{secret} shown:\n{text}");
        }
        // Sections follow config/default.toml: ingest first.
        let first = text.lines().find(|l| l.starts_with('[')).unwrap();
        assert_eq!(first, "[ingest]");
        // The output is TOML that loads to the same configuration.
        let shown = dir.path().join("shown.toml");
        std::fs::write(&shown, &text).unwrap();
        let c = Config::load_with_env(Some(&shown), Vec::new()).unwrap();
        assert_eq!(c.delivery.concurrency, 7);
        assert_eq!(c.retry.max_attempts, 3);
    }
}
