//! The README's configuration table and `config/default.toml` describe the same keys with the
//! same defaults, so neither can drift from the other (or from what the binary embeds).
//!
//! Keys come from the defaults file: every `key = value` line, plus commented example lines
//! (`# key = value` under a commented `# [table]`), which are documented with no default (`—`).
//! Tables whose child names the user picks (`[endpoints.orders]`) appear in the README as
//! `endpoints.NAME.key`; a README row ending in `.*` stands for every key under that prefix.

use std::collections::BTreeMap;

use hookrelay::config::DEFAULT_TOML;

/// Tables whose direct children are names chosen by the user.
const NAMED_TABLES: &[&str] = &["endpoints"];

const NO_DEFAULT: &str = "—";

#[test]
fn readme_configuration_table_matches_default_toml() {
    let documented = readme_rows(include_str!("../../README.md"));
    let defaults = default_keys(DEFAULT_TOML);
    let mut problems = Vec::new();

    for (key, default) in &defaults {
        match covering_row(&documented, key) {
            None => problems.push(format!(
                "config/default.toml has `{key}` but the README table has no row for it: add \
                 | `{key}` | `{default}` | ... |"
            )),
            // A wildcard row documents a group; defaults are checked on exact rows only.
            Some(row) if row.ends_with(".*") => {}
            Some(row) => {
                let readme_default = &documented[row];
                let expected = if default == NO_DEFAULT {
                    NO_DEFAULT.to_string()
                } else {
                    format!("`{default}`")
                };
                if *readme_default != expected {
                    problems.push(format!(
                        "README says `{key}` defaults to {readme_default}, config/default.toml \
                         says {expected}"
                    ));
                }
            }
        }
    }
    for row in documented.keys() {
        let covers_some = defaults.keys().any(|k| covers(row, k));
        if !covers_some {
            problems.push(format!(
                "the README table documents `{row}`, which config/default.toml does not have \
                 (add it there, commented if it is an example)"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// `key` -> default cell of the table under `## Configuration` (`| key | default | meaning |`).
fn readme_rows(readme: &str) -> BTreeMap<String, String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Configuration"))
        .expect("README has a `## Configuration` section");
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in section.lines() {
        if line.starts_with("| key | default |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`').to_string();
        rows.insert(key, cells[2].to_string());
    }
    assert!(
        !rows.is_empty(),
        "no configuration table found in the README"
    );
    rows
}

/// Every key of the defaults file with its default as the README writes it (strings bare,
/// everything else as TOML), or `—` for commented examples.
pub(crate) fn default_keys(toml_text: &str) -> BTreeMap<String, String> {
    let parsed: toml::Table = toml_text.parse().expect("config/default.toml is TOML");
    let mut keys = BTreeMap::new();
    let mut table = String::new();
    for line in toml_text.lines() {
        let (commented, body) = match line.strip_prefix("# ") {
            Some(rest) => (true, rest.trim()),
            None => (false, line.trim()),
        };
        if let Some(header) = body.strip_prefix('[') {
            let Some(end) = header.find(']') else {
                continue;
            };
            table = normalize(&header[..end]);
            continue;
        }
        let Some((key, _)) = body.split_once(" = ") else {
            continue;
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            continue; // prose in a comment, not a key
        }
        let full = if table.is_empty() {
            key.to_string()
        } else {
            format!("{table}.{key}")
        };
        let default = if commented {
            NO_DEFAULT.to_string()
        } else {
            let value = table
                .split('.')
                .filter(|s| !s.is_empty())
                .try_fold(&parsed, |t, s| t.get(s)?.as_table())
                .and_then(|t| t.get(key))
                .unwrap_or_else(|| panic!("`{full}` not found in the parsed defaults"));
            match value {
                toml::Value::String(s) if !s.is_empty() => s.clone(),
                other => other.to_string(),
            }
        };
        keys.insert(full, default);
    }
    keys
}

/// `endpoints.orders.retry` -> `endpoints.NAME.retry`.
fn normalize(table: &str) -> String {
    let parts: Vec<&str> = table.split('.').collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 && NAMED_TABLES.contains(&parts[i - 1]) {
            out.push("NAME");
        } else {
            out.push(p);
        }
    }
    out.join(".")
}

fn covers(row: &str, key: &str) -> bool {
    match row.strip_suffix(".*") {
        Some(prefix) => key.starts_with(&format!("{prefix}.")),
        None => row == key,
    }
}

fn covering_row<'a>(rows: &'a BTreeMap<String, String>, key: &str) -> Option<&'a String> {
    rows.keys()
        .find(|r| *r == key)
        .or_else(|| rows.keys().find(|r| covers(r, key)))
}

#[test]
fn default_keys_reads_real_and_commented_keys() {
    let keys = default_keys(
        "# A comment: with = sign in prose\n[a]\n# why\nx = \"s\"\ny = 2.0\nz = \"\"\n\
         # w = 5\n# [endpoints.orders]\n# url = \"u\"\n# [endpoints.orders.retry]\n# max_attempts = 5\n",
    );
    let expected: BTreeMap<String, String> = [
        ("a.x", "s"),
        ("a.y", "2.0"),
        ("a.z", "\"\""),
        ("a.w", NO_DEFAULT),
        ("endpoints.NAME.url", NO_DEFAULT),
        ("endpoints.NAME.retry.max_attempts", NO_DEFAULT),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(keys, expected);
}
