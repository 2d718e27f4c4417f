//! The operator CLI (`hookrelay deliveries|replay|batches|pause|resume|status`) run as a
//! process against a live sidecar with a token.

use std::sync::Arc;

use serde_json::Value;

use crate::harness::*;

const TOKEN: &str = "cli-test-token-0123456789";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// Runs the binary with `args` plus `--admin-url` and `--token` for `sidecar`.
async fn cli(sidecar: &Sidecar, args: &[&str]) -> Run {
    let url = format!("http://{}", sidecar.admin);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--admin-url", &url, "--token", TOKEN]);
    run(&all, &[]).await
}

async fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(args)
        .env_remove("HOOKRELAY_ADMIN_URL")
        .env_remove("HOOKRELAY_ADMIN_TOKEN")
        .env_remove("HOOKRELAY_ADMIN__TOKEN")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(r: Run) -> Run {
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    r
}

#[tokio::test]
async fn operator_commands_work_against_a_live_sidecar() {
    let receiver = Receiver::start(Arc::new(|_, _| Reply::Status(410))).await;
    let mut sidecar = Sidecar::start(&format!("[admin]\ntoken = \"{TOKEN}\"\n")).await;
    sidecar.token = Some(TOKEN.into());
    let (_, a) = sidecar.send(&receiver.url("/gone/a"), "{}", None).await;
    let (_, b) = sidecar.send(&receiver.url("/gone/b"), "{}", None).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    sidecar.wait_count("failed", 2).await;

    let status = ok(cli(&sidecar, &["status"]).await).stdout;
    assert!(status.contains("delivery: running"), "{status}");
    assert!(status.contains("FAILED"), "{status}");

    let list = ok(cli(
        &sidecar,
        &["deliveries", "list", "--status", "failed", "--json"],
    )
    .await);
    let ids: Vec<String> = list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![b.to_string(), a.to_string()]);
    let table = ok(cli(&sidecar, &["deliveries", "list", "--since", "1h"]).await).stdout;
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(a) && table.contains("HTTP_4XX_PERMANENT"),
        "{table}"
    );

    let show = ok(cli(&sidecar, &["deliveries", "show", a]).await).stdout;
    assert!(
        show.contains("410") && show.contains("CLASSIFICATION"),
        "{show}"
    );

    let dry = ok(cli(
        &sidecar,
        &[
            "replay",
            "--status",
            "failed",
            "--since",
            "1h",
            "--dry-run",
            "--reason",
            "try",
            "--json",
        ],
    )
    .await)
    .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["created"].as_array().unwrap().len(), 2);
    let real = ok(cli(&sidecar, &["replay", "--id", a]).await).stdout;
    assert!(real.contains("created 1, skipped 0"), "{real}");

    let batches = ok(cli(&sidecar, &["batches", "list", "--json"]).await).json();
    let data = batches["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let dry_id = dry["id"].as_str().unwrap();
    let shown = ok(cli(&sidecar, &["batches", "show", dry_id]).await).stdout;
    assert!(
        shown.contains(dry_id) && shown.contains("would create 2"),
        "{shown}"
    );

    let paused = ok(cli(&sidecar, &["pause", "--reason", "maintenance"]).await).stdout;
    assert!(paused.contains("delivery paused since") && paused.contains("maintenance"));
    let host = receiver.addr.to_string();
    let hp = ok(cli(&sidecar, &["pause", "--host", &host, "--json"]).await).json();
    assert_eq!(
        (&hp["host"], &hp["paused"]),
        (&Value::from(host.clone()), &Value::Bool(true))
    );
    let status = ok(cli(&sidecar, &["status", "--json"]).await).json();
    assert_eq!(status["stats"]["paused"], true);
    assert_eq!(status["stats"]["paused_hosts"], 1);
    // The pause's reason, for scripts too.
    assert_eq!(status["pause"]["reason"], "maintenance", "{status}");
    let text = ok(cli(&sidecar, &["status"]).await).stdout;
    assert!(
        text.contains("PAUSED since") && text.contains(": maintenance"),
        "{text}"
    );
    ok(cli(&sidecar, &["resume", "--host", &host]).await);
    let resumed = ok(cli(&sidecar, &["resume"]).await).stdout;
    assert_eq!(resumed, "delivery running\n");

    // Environment variables instead of flags.
    let url = format!("http://{}", sidecar.admin);
    let env = ok(run(
        &["status", "--json"],
        &[
            ("HOOKRELAY_ADMIN_URL", &url),
            ("HOOKRELAY_ADMIN_TOKEN", TOKEN),
        ],
    )
    .await)
    .json();
    assert_eq!(env["stats"]["paused"], false);
    // Beside the sidecar, its own variable serves as well.
    ok(run(
        &["status", "--admin-url", &url],
        &[("HOOKRELAY_ADMIN__TOKEN", TOKEN)],
    )
    .await);

    // Errors: one line, non-zero, saying how to give a token.
    let no_token = run(&["status", "--admin-url", &url], &[]).await;
    assert_eq!(no_token.code, 1);
    assert!(
        no_token.stderr.contains("401 unauthorized") && no_token.stderr.contains("--token"),
        "{}",
        no_token.stderr
    );
    // A token that cannot go in a header is a usage error naming the token, not "cannot reach".
    let bad_token = run(
        &["status", "--admin-url", &url, "--token", "bad\ntoken"],
        &[],
    )
    .await;
    assert_eq!(bad_token.code, 2, "{}", bad_token.stderr);
    assert!(
        bad_token
            .stderr
            .contains("the token from --token or HOOKRELAY_ADMIN_TOKEN cannot be sent"),
        "{}",
        bad_token.stderr
    );
    let unknown = cli(&sidecar, &["deliveries", "show", "dlv_nope"]).await;
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("404 not_found"),
        "{}",
        unknown.stderr
    );
    let both = cli(&sidecar, &["replay", "--id", a, "--status", "failed"]).await;
    assert_eq!(both.code, 2, "{}", both.stderr);
    assert!(both.stderr.contains("not both"), "{}", both.stderr);
    let neither = cli(&sidecar, &["replay"]).await;
    assert_eq!(neither.code, 2, "{}", neither.stderr);
    assert!(
        neither.stderr.contains("to say what to replay"),
        "{}",
        neither.stderr
    );

    sidecar.kill9();
    let down = cli(&sidecar, &["status"]).await;
    assert_eq!(down.code, 1);
    assert_eq!(down.stderr.lines().count(), 1, "{}", down.stderr);
    assert!(
        down.stderr.contains("cannot reach the admin API"),
        "{}",
        down.stderr
    );
    assert!(!down.stderr.contains("panicked"));
}

/// A reader that stops reading (`hookrelay deliveries list | head`) does not make the CLI
/// panic: what it was asked to do is done, and it exits 0.
#[tokio::test]
async fn a_closed_output_pipe_is_not_a_crash() {
    let mut sidecar = Sidecar::start(&format!("[admin]\ntoken = \"{TOKEN}\"\n")).await;
    sidecar.token = Some(TOKEN.into());
    let receiver = Receiver::ok().await;
    sidecar.send(&receiver.url("/a"), "{}", None).await;
    let url = format!("http://{}", sidecar.admin);
    let out = run_with_stdout_closed(
        std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args([
                "deliveries",
                "list",
                "--json",
                "--admin-url",
                &url,
                "--token",
                TOKEN,
            ])
            .env_remove("HOOKRELAY_ADMIN__TOKEN"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A server that is not hookrelay's admin API (a wrong `--admin-url`) answering `200
/// {"ok": true}` to everything: each command fails saying so, instead of reporting a pause,
/// a cancel or a replay that did not happen.
#[tokio::test]
async fn a_2xx_answer_of_another_shape_is_an_error() {
    let impostor = Receiver::start(Arc::new(|_, _| {
        Reply::Full(
            200,
            vec![("content-type".into(), "application/json".into())],
            r#"{"ok":true}"#.into(),
        )
    }))
    .await;
    let url = format!("http://{}", impostor.addr);
    let commands: [&[&str]; 6] = [
        &["pause", "--reason", "x"],
        &["resume"],
        &["deliveries", "cancel", "dlv_01M8M08P3RGQNBDME27ZG52M7S"],
        &["replay", "--status", "failed"],
        &["status"],
        &["deliveries", "list", "--json"],
    ];
    for args in commands {
        let mut all = args.to_vec();
        all.extend(["--admin-url", &url]);
        let r = run(&all, &[]).await;
        assert_eq!(r.code, 1, "{args:?}: {} {}", r.stdout, r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
        assert!(
            r.stderr.contains("is it hookrelay's admin API?"),
            "{args:?}: {}",
            r.stderr
        );
    }
}
