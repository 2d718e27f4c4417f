//! The container image and the deployment examples agree with the code: the Dockerfile builds
//! with CI's command and exposes the configured ports, every `HOOKRELAY_SECTION__KEY` variable
//! and example config file is a valid configuration, the Kubernetes grace period outlasts the
//! drain, and every metric the alerts and dashboard use exists (or is listed as pending).
//! Nothing here needs Docker, Kubernetes or Prometheus; `.ci/run` runs promtool on the files.

use std::collections::BTreeSet;
use std::path::Path;

use hookrelay::config::{Config, DEFAULT_TOML};

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn dockerfile_builds_with_the_ci_command_and_matches_the_defaults() {
    let dockerfile = read("Dockerfile");
    let ci = read(".ci/run");
    let build = "cargo build --release --locked";
    assert!(
        dockerfile.contains(build),
        "the Dockerfile should run `{build}`"
    );
    assert!(
        ci.lines().any(|l| l.trim() == build),
        ".ci/run should run `{build}`, the Dockerfile's build step"
    );

    let defaults = Config::load_with_env(None, Vec::new()).unwrap();
    let expose = format!(
        "EXPOSE {} {}",
        defaults.ingest.listen.port(),
        defaults.admin.listen.port()
    );
    for line in [
        expose.as_str(),
        "VOLUME /data",
        "USER 10001:10001",
        "ENTRYPOINT [\"hookrelay\"]",
        "CMD [\"serve\"]",
        "    CMD [\"hookrelay\", \"healthcheck\"]",
    ] {
        assert!(
            dockerfile.lines().any(|l| l == line),
            "the Dockerfile should have the line {line:?}"
        );
    }
    let ignore = read(".dockerignore");
    for needed in ["src", "config", "Cargo.toml", "Cargo.lock", "build.rs"] {
        assert!(
            !ignore.lines().any(|l| l.trim_end_matches('/') == needed),
            ".dockerignore excludes {needed}, which the build needs"
        );
    }
}

/// `HOOKRELAY_A__B` -> `a.b`, for every such variable named in `text`.
fn config_vars(text: &str) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("HOOKRELAY_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        if name.contains("__") {
            vars.insert(name.to_string());
        }
        rest = &tail[end..];
    }
    vars
}

#[test]
fn every_config_variable_in_the_image_and_examples_names_a_key() {
    let defaults: toml::Table = DEFAULT_TOML.parse().unwrap();
    // Keys shown only as commented examples (such as admin.token) count too.
    let documented = crate::config_reference::default_keys(DEFAULT_TOML);
    let files = [
        "Dockerfile",
        "examples/compose/docker-compose.yml",
        "examples/kubernetes/hookrelay-sidecar.yaml",
        "README.md",
    ];
    let mut problems = Vec::new();
    for file in files {
        for var in config_vars(&read(file)) {
            let key = var["HOOKRELAY_".len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            let found = key
                .split('.')
                .try_fold(&toml::Value::Table(defaults.clone()), |v, k| {
                    v.as_table()?.get(k)
                })
                .is_some()
                || documented.contains_key(&key);
            // SECTION__KEY is the documented pattern, not a key.
            if !found && var != "HOOKRELAY_SECTION__KEY" {
                problems.push(format!("{file}: {var} names no key of config/default.toml"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn example_configuration_files_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let compose = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/compose/hookrelay.toml");
    Config::load_with_env(Some(&compose), Vec::new())
        .unwrap_or_else(|e| panic!("examples/compose/hookrelay.toml: {e}"));

    // The ConfigMap's `hookrelay.toml: |` block.
    let manifest = read("examples/kubernetes/hookrelay-sidecar.yaml");
    let mut lines = manifest
        .lines()
        .skip_while(|l| !l.trim().starts_with("hookrelay.toml: |"));
    let head = lines
        .next()
        .expect("the ConfigMap has a hookrelay.toml block");
    let indent = head.len() - head.trim_start().len();
    let block: String = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let file = dir.path().join("configmap.toml");
    std::fs::write(&file, &block).unwrap();
    let c = Config::load_with_env(Some(&file), Vec::new())
        .unwrap_or_else(|e| panic!("the ConfigMap's hookrelay.toml: {e}\n{block}"));
    assert!(!c.endpoints.is_empty());
}

#[test]
fn kubernetes_grace_period_outlasts_the_drain_and_probes_use_the_admin_port() {
    let manifest = read("examples/kubernetes/hookrelay-sidecar.yaml");
    let grace: u64 = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .expect("terminationGracePeriodSeconds is set")
        .trim()
        .parse()
        .unwrap();
    let drain = Config::load_with_env(None, Vec::new())
        .unwrap()
        .shutdown
        .grace_period;
    assert!(
        grace > drain.as_secs(),
        "terminationGracePeriodSeconds ({grace}) must exceed shutdown.grace_period ({drain:?})"
    );
    for needed in [
        "path: /readyz",
        "path: /healthz",
        "port: admin",
        "containerPort: 7701",
        "claimName: orders-hookrelay-data",
    ] {
        assert!(
            manifest.contains(needed),
            "the manifest should have `{needed}`"
        );
    }
    assert!(
        !manifest
            .lines()
            .any(|l| l.trim_start().starts_with("emptyDir:")),
        "the store must be on a persistent volume, not an emptyDir"
    );
}

/// Every `hookrelay_*` metric name in `text`, with histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("hookrelay_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let mut name = &tail[..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            name = name.strip_suffix(suffix).unwrap_or(name);
        }
        names.insert(name.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn alerts_and_dashboard_use_existing_metrics() {
    let metrics = hookrelay::metrics::Metrics::new();
    // Per-host series exist only once a host has one; give the family a sample to list it.
    metrics
        .host_circuit_open
        .with_label_values(&["example:443"])
        .set(0);
    let exposed = metric_names(&metrics.render());
    let dashboard = read("examples/grafana/hookrelay-dashboard.json");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let ids: Vec<u64> = parsed["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        ids.iter().collect::<BTreeSet<_>>().len(),
        "panel ids are unique"
    );
    let mut problems = Vec::new();
    for file in [
        "examples/prometheus/alerts.yml",
        "examples/prometheus/alerts_test.yml",
        "examples/grafana/hookrelay-dashboard.json",
    ] {
        for name in metric_names(&read(file)) {
            if !exposed.contains(&name) {
                problems.push(format!(
                    "{file}: `{name}` is not a metric of src/metrics.rs"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
