//! Durability across stops: kill -9 mid-delivery, graceful SIGTERM, and refusing bad config.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn kill_9_mid_delivery_loses_nothing() {
    // The receiver stalls every request until `open` is set, so deliveries are in flight (or
    // pending) when the sidecar dies.
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let receiver = Receiver::start(Arc::new(move |_, _| {
        if gate.load(Ordering::SeqCst) {
            Reply::Status(200)
        } else {
            Reply::Stall(Duration::from_secs(60))
        }
    }))
    .await;
    let mut sidecar = Sidecar::start(&format!(
        "{FAST_RETRY}[delivery]\ntimeout = \"60s\"\nconcurrency = 4\n"
    ))
    .await;
    let mut acked = HashSet::new();
    for i in 0..40 {
        let (status, json) = sidecar
            .send(
                &receiver.url(&format!("/k/{i}")),
                &format!("{{\"i\":{i}}}"),
                None,
            )
            .await;
        assert_eq!(status, 202);
        acked.insert(json["id"].as_str().unwrap().to_string());
    }
    // Some attempts are in flight, stalled at the receiver.
    receiver.wait_count(1).await;
    sidecar.kill9();

    open.store(true, Ordering::SeqCst);
    sidecar.restart().await;
    for id in &acked {
        sidecar.wait_status(id, "delivered").await;
    }
    let bodies: HashSet<String> = receiver
        .received()
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    for i in 0..40 {
        assert!(
            bodies.contains(&format!("{{\"i\":{i}}}")),
            "webhook {i} never arrived"
        );
    }
}

#[tokio::test]
async fn idempotency_survives_a_restart() {
    let receiver = Receiver::ok().await;
    let mut sidecar = Sidecar::start("").await;
    let (status, first) = sidecar
        .send(&receiver.url("/r"), "{}", Some("restart-key"))
        .await;
    assert_eq!(status, 202);
    sidecar.kill9();
    sidecar.restart().await;
    let (status, again) = sidecar
        .send(&receiver.url("/r"), "{}", Some("restart-key"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first["id"]);
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero_and_pending_work_resumes() {
    let receiver = Receiver::start(Arc::new(|_, _| Reply::Status(503))).await;
    let mut sidecar = Sidecar::start(
        "[retry]\ninitial_delay = \"1h\"\nmax_delay = \"2h\"\n[shutdown]\ngrace_period = \"5s\"\n",
    )
    .await;
    let (_, json) = sidecar.send(&receiver.url("/later"), "{}", None).await;
    let id = json["id"].as_str().unwrap().to_string();
    // First attempt fails; the retry is an hour away.
    wait_for("first attempt recorded", || async {
        let d = sidecar.delivery(&id).await;
        (d["attempt_count"] == 1).then_some(())
    })
    .await;
    let status = sidecar.terminate().await;
    assert!(status.success(), "exit status {status}");
    assert!(sidecar.log().contains("drained"), "{}", sidecar.log());

    // The delivery is still pending after the restart, its schedule intact.
    sidecar.restart().await;
    let d = sidecar.delivery(&id).await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["attempt_count"], 1);
    assert!(d["next_attempt_at"].is_string());
}

#[tokio::test]
async fn invalid_config_exits_before_binding_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cases = [
        ("[delivery]\nconcurrency = 0\n", "delivery.concurrency"),
        ("[retry]\ninitial_delay = \"often\"\n", "initial_delay"),
        ("[surprise]\nkey = 1\n", "surprise"),
    ];
    for (toml, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("HOOKRELAY_INGEST__LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKRELAY_STORE__PATH", dir.path().join("data"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{toml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{toml}: {stderr}");
        assert!(
            !dir.path().join("data").exists(),
            "nothing may be created on bad config"
        );
    }
}

/// A retry scheduled under a longer `retry.max_delay` than the one configured after a restart
/// is brought forward to the new limit: "no delay exceeds max_delay" holds for retries already
/// waiting too.
#[tokio::test]
async fn a_shortened_max_delay_applies_to_retries_already_scheduled() {
    let receiver = Receiver::start(Arc::new(|_, nth| {
        if nth == 0 {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let slow = "[retry]\ninitial_delay = \"1h\"\nmax_delay = \"2h\"\njitter = 0.0\n";
    let mut sidecar = Sidecar::start(slow).await;
    let (_, j) = sidecar.send(&receiver.url("/later"), "{}", None).await;
    let id = j["id"].as_str().unwrap().to_string();
    // Recorded, and out of the in-flight set (the detail says `in_progress` until the
    // scheduler has heard of the record, a moment after it is committed).
    let d = wait_for("the first attempt to be recorded", || async {
        let d = sidecar.delivery(&id).await;
        (d["attempt_count"] == 1 && d["status"] != "in_progress").then_some(d)
    })
    .await;
    assert_eq!(d["status"], "pending", "{d}");

    sidecar.terminate().await;
    sidecar.set_extra_config("[retry]\ninitial_delay = \"100ms\"\nmax_delay = \"1s\"\n");
    sidecar.restart().await;
    let d = sidecar.wait_status(&id, "delivered").await;
    assert_eq!(d["attempt_count"], 2, "{d}");
    assert!(
        sidecar.log().contains("brought forward"),
        "{}",
        sidecar.log()
    );
}
