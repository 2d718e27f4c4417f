//! The binary's non-serving subcommands: `config check`, `config show`, `config new-secret`,
//! `config public-keys`, `healthcheck`, `completions` and `--version`, run as a user would run
//! them.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::*;

/// Runs the binary with a clean `HOOKRELAY_*` environment plus `env`.
fn hookrelay(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("HOOKRELAY_")) {
        cmd.env_remove(k);
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn config_check_accepts_the_defaults_and_a_valid_file() {
    let out = hookrelay(&["config", "check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("configuration is valid (0 endpoint(s)"));

    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "ok.toml",
        "[endpoints.orders]\nurl = \"https://receiver.example.com/hooks\"\n",
    );
    let out = hookrelay(&["config", "check", "--config", &file], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 endpoint(s)"));
}

#[test]
fn config_check_names_the_key_and_the_layer_that_set_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.toml", "[delivery]\nconcurrency = 0\n");
    let out = hookrelay(&["config", "check", "-c", &file], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("delivery.concurrency"), "{err}");
    assert!(err.contains("delivery.concurrency = 0 (from file"), "{err}");

    // The same bad value from the environment is blamed on the variable.
    let out = hookrelay(
        &["config", "check"],
        &[("HOOKRELAY_DELIVERY__CONCURRENCY", "0")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("(from env HOOKRELAY_DELIVERY__CONCURRENCY)"),
        "{}",
        stderr(&out)
    );

    // Type errors and unknown keys name the key and where it was read.
    let out = hookrelay(
        &["config", "check"],
        &[("HOOKRELAY_INGEST__NOPE", "1"), ("HOOKRELAY_CONFIG", &file)],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("nope") && err.contains("HOOKRELAY_INGEST__NOPE"),
        "{err}"
    );
    // The key as the operator writes it, without figment's profile name in front.
    let out = hookrelay(
        &["config", "check"],
        &[("HOOKRELAY_RETRY__MAX_DELAY", "soon")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("for key `retry.max_delay`"), "{err}");
    assert!(!err.contains("default.retry"), "{err}");

    let out = hookrelay(
        &["config", "check", "-c", "/nonexistent/hookrelay.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not found"));

    // A directory where the file was meant to be (a ConfigMap mounted whole) is refused too,
    // for `serve` as for `config check`, instead of running on the defaults.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    for args in [
        vec!["config", "check", "-c", path],
        vec!["serve", "-c", path],
    ] {
        let out = hookrelay(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("is a directory, not a file"), "{err}");
    }
}

#[test]
fn config_show_prints_origins_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "c.toml",
        "[store]\npath = \"/data\"\n[endpoints.orders]\nurl = \"https://receiver.example.com/hooks\"\n\
         headers = { Authorization = \"Bearer very-secret\" }\n",
    );
    let out = hookrelay(
        &["config", "show"],
        &[
            ("HOOKRELAY_CONFIG", &file),
            ("HOOKRELAY_ADMIN__LISTEN", "0.0.0.0:7701"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "listen = \"127.0.0.1:7700\"  # default",
        "listen = \"0.0.0.0:7701\"  # env HOOKRELAY_ADMIN__LISTEN",
        &format!("path = \"/data\"  # file {file}"),
        &format!("Authorization = \"<redacted>\"  # file {file}"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    assert!(!text.contains("very-secret"), "{text}");

    // Invalid: still printed (to see where the bad value came from), then exit 2.
    let out = hookrelay(&["config", "show"], &[("HOOKRELAY_RETRY__JITTER", "5.0")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("jitter = 5.0  # env HOOKRELAY_RETRY__JITTER"));
    assert!(stderr(&out).contains("retry.jitter"));

    // An endpoint URL that is not a URL at all still has its credentials hidden, by
    // `config show` and by `config check`'s report of the bad value.
    for url in [
        "//u:PASSWORD5@host/?access_token=QUERYSECRET5",
        "ftp://u:PASSWORD5@host/?access_token=QUERYSECRET5",
    ] {
        let env = [("HOOKRELAY_ENDPOINTS__A__URL", url)];
        for command in ["show", "check"] {
            let out = hookrelay(&["config", command], &env);
            assert_eq!(out.status.code(), Some(2), "{command} {url}");
            let printed = format!("{}{}", stdout(&out), stderr(&out));
            assert!(
                printed.contains("endpoints.a") || printed.contains("url ="),
                "{printed}"
            );
            assert!(
                !printed.contains("PASSWORD5") && !printed.contains("QUERYSECRET5"),
                "{command} {url}: {printed}"
            );
        }
    }
}

/// `config new-secret` makes keys the configuration accepts, and `config public-keys` prints the
/// public half of each ed25519 key (and only of those) that `config show` redacts.
#[test]
fn new_secrets_and_their_public_keys() {
    let line = |text: &str, label: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in {text:?}"))
            .to_string()
    };
    let out = hookrelay(&["config", "new-secret"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hmac = line(&stdout(&out), "secret: ");
    assert!(hmac.starts_with("whsec_"), "{hmac}");
    assert!(!stdout(&out).contains("public:"));
    let out = hookrelay(&["config", "new-secret", "--ed25519"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (current, current_public) = (
        line(&stdout(&out), "secret: "),
        line(&stdout(&out), "public: "),
    );
    assert!(current.starts_with("whsk_") && current_public.starts_with("whpk_"));
    let out = hookrelay(&["config", "new-secret", "--ed25519"], &[]);
    let (older, older_public) = (
        line(&stdout(&out), "secret: "),
        line(&stdout(&out), "public: "),
    );
    assert_ne!(older, current, "each key is new");

    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "keys.toml",
        &format!(
            "[endpoints.orders]\nurl = \"https://receiver.example.com/hooks\"\n\
             secret = \"{current}\"\nsecrets = [\"{hmac}\", \"{older}\"]\n\
             [endpoints.audit]\nurl = \"https://audit.example.com/hooks\"\nsecret = \"{hmac}\"\n"
        ),
    );
    let out = hookrelay(&["config", "public-keys", "--config", &file], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("orders\tsecret\t{current_public}\norders\tsecrets\t{older_public}\n")
    );
    let out = hookrelay(&["config", "show", "--config", &file], &[]);
    for secret in [&current, &older, &hmac] {
        assert!(!stdout(&out).contains(secret.as_str()), "{}", stdout(&out));
    }

    // No ed25519 key: said so, exit 1; a public key where the secret key belongs: exit 2,
    // naming the key and what to put there.
    let hmac_only = write(
        dir.path(),
        "hmac.toml",
        &format!("[endpoints.audit]\nurl = \"https://a.example.com/\"\nsecret = \"{hmac}\"\n"),
    );
    let out = hookrelay(&["config", "public-keys", "--config", &hmac_only], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no endpoint has an ed25519 secret"));
    let swapped = write(
        dir.path(),
        "swapped.toml",
        &format!(
            "[endpoints.orders]\nurl = \"https://a.example.com/\"\nsecret = \"{current_public}\"\n"
        ),
    );
    let out = hookrelay(&["config", "check", "--config", &swapped], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("endpoints.orders.secret") && err.contains("(`whsk_`)"),
        "{err}"
    );
    assert!(
        !err.contains(&current_public),
        "the key itself is not repeated: {err}"
    );

    // A secret in the wrong shape (one string where a list belongs, in a file or the
    // environment) is named by its key, and its value is not printed.
    let shape = write(
        dir.path(),
        "shape.toml",
        &format!(
            "[endpoints.orders]\nurl = \"https://a.example/\"\nsecret = \"{hmac}\"\nsecrets = \"{older}\"\n"
        ),
    );
    for out in [
        hookrelay(&["config", "check", "--config", &shape], &[]),
        hookrelay(
            &["serve"],
            &[
                ("HOOKRELAY_ENDPOINTS__ORDERS__URL", "https://a.example/"),
                ("HOOKRELAY_ENDPOINTS__ORDERS__SECRETS", &older),
            ],
        ),
    ] {
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains("endpoints.orders.secrets"), "{err}");
        assert!(!err.contains(&older[5..]), "the secret is printed: {err}");
    }
}

#[test]
fn completions_and_version() {
    for shell in ["bash", "zsh", "fish"] {
        let out = hookrelay(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(
            script.contains("hookrelay") && script.contains("healthcheck"),
            "{shell}"
        );
    }

    // A reader that stops at once (`| head -1`) is not an error, nor a panic.
    let out = run_with_stdout_closed(
        Command::new(env!("CARGO_BIN_EXE_hookrelay")).args(["completions", "zsh"]),
    );
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    // Output that cannot be written (a full disk) is an error: exit code 1, and why.
    for args in [&["completions", "zsh"][..], &["config", "new-secret"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot write the output"),
            "{}",
            stderr(&out)
        );
    }

    let out = hookrelay(&["--version"], &[]);
    let version = stdout(&out);
    let expected_commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    assert_eq!(
        version.trim(),
        format!(
            "hookrelay {} (commit {expected_commit})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[tokio::test]
async fn healthcheck_probes_the_admin_listener() {
    let sidecar = Sidecar::start("").await;
    let admin_url = sidecar.admin_url("");
    let admin_listen = sidecar.admin.to_string();
    let (ready, live, from_config, nothing_there) = tokio::task::spawn_blocking(move || {
        let free = format!("http://127.0.0.1:{}", free_port());
        (
            hookrelay(&["healthcheck", "--admin-url", &admin_url], &[]),
            hookrelay(
                &["healthcheck", "--live"],
                &[("HOOKRELAY_ADMIN_URL", &admin_url)],
            ),
            // No URL: taken from the configuration, as in the container image.
            hookrelay(
                &["healthcheck"],
                &[("HOOKRELAY_ADMIN__LISTEN", &admin_listen)],
            ),
            hookrelay(
                &["healthcheck", "--admin-url", &free, "--timeout", "2s"],
                &[],
            ),
        )
    })
    .await
    .unwrap();
    assert!(ready.status.success(), "{}", stderr(&ready));
    assert!(
        stdout(&ready).contains("/readyz: 200"),
        "{}",
        stdout(&ready)
    );
    assert!(live.status.success(), "{}", stderr(&live));
    assert!(stdout(&live).contains("/healthz: 200"));
    assert!(from_config.status.success(), "{}", stderr(&from_config));
    assert_eq!(nothing_there.status.code(), Some(1));
}

/// An error that names a whole table (a bad endpoint name, a bad header name) shows the table
/// with every secret in it redacted, as `config show` would.
#[test]
fn config_check_redacts_the_secrets_of_a_table_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "c.toml",
        "[endpoints.\"my orders\"]\nurl = \"https://r.example/hooks?token=URL-SECRET\"\n\
         secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         headers = { Authorization = \"Bearer HEADER-SECRET\", X-Plain = \"shown\" }\n",
    );
    let out = hookrelay(&["config", "check", "-c", &file], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("endpoints.my orders"), "{err}");
    assert!(err.contains("X-Plain = \"shown\""), "{err}");
    for secret in ["URL-SECRET", "MfKQ9r8", "HEADER-SECRET"] {
        assert!(!err.contains(secret), "{secret} in {err}");
    }
    // The same through the environment, naming the headers table.
    let out = hookrelay(
        &["config", "check"],
        &[
            ("HOOKRELAY_ENDPOINTS__T__URL", "https://r.example/t"),
            (
                "HOOKRELAY_ENDPOINTS__T__HEADERS",
                "{ Authorization = \"Bearer ENV-SECRET\", \"X Bad\" = \"1\" }",
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("endpoints.t.headers"), "{err}");
    assert!(!err.contains("ENV-SECRET"), "{err}");
}
