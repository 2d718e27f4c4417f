//! hookrelay's own events (`notify.endpoint`): a delivery that ends failed and an endpoint a 410
//! disables are delivered as webhooks to the named endpoint.

use std::sync::Arc;

use serde_json::Value;

use crate::harness::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The events the notify endpoint (`/ops`) got so far, parsed.
fn events(receiver: &Receiver) -> Vec<(Received, Value)> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.target == "/ops")
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).expect("an event is JSON");
            (r, v)
        })
        .collect()
}

async fn event_of(receiver: &Receiver, kind: &str, about: impl Fn(&Value) -> bool) -> Received {
    wait_for(&format!("a {kind} event"), || async {
        events(receiver)
            .into_iter()
            .find(|(_, v)| v["type"] == kind && about(&v["data"]))
            .map(|(r, _)| r)
    })
    .await
}

#[tokio::test]
async fn a_failed_delivery_and_a_disabled_endpoint_are_delivered_as_events() {
    let receiver = Receiver::start(Arc::new(|r, _| {
        if r.target.starts_with("/bad") || r.target.starts_with("/ops/bad") {
            Reply::Status(400)
        } else if r.target.starts_with("/gone") {
            Reply::Status(410)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let sidecar = Sidecar::start(&format!(
        "{FAST_RETRY}[notify]\nendpoint = \"ops\"\n\
         [endpoints.ops]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         [endpoints.gone]\nurl = \"{}\"\n",
        receiver.url("/ops"),
        receiver.url("/gone"),
    ))
    .await;

    let (_, endpoints) = sidecar.get_json("/v1/endpoints").await;
    let notify: Vec<(&str, bool)> = endpoints["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["notify"] == true))
        .collect();
    assert_eq!(notify, [("gone", false), ("ops", true)], "{endpoints}");

    // A permanent 4xx ends the delivery failed at once: the app hears of it.
    let (status, json) = sidecar
        .send(&receiver.url("/bad?token=s3cret"), "{\"n\":1}", None)
        .await;
    assert_eq!(status, 202, "{json}");
    let failed = json["id"].as_str().unwrap().to_string();
    sidecar.wait_status(&failed, "failed").await;
    let got = event_of(&receiver, "delivery.failed", |d| {
        d["delivery"]["id"] == failed.as_str()
    })
    .await;
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert!(
        got.header("webhook-signature")
            .is_some_and(|s| s.starts_with("v1,")),
        "signed with the notify endpoint's secret: {:?}",
        got.headers
    );
    let event: Value = serde_json::from_slice(&got.body).unwrap();
    let data = &event["data"];
    assert_eq!(data["delivery"]["status"], "failed", "{event}");
    assert_eq!(data["delivery"]["attempt_count"], 1, "{event}");
    assert_eq!(data["delivery"]["last_status_code"], 400, "{event}");
    assert!(data["delivery"]["finished_at"].is_string(), "{event}");
    assert!(
        !data["delivery"]["target"]
            .as_str()
            .unwrap()
            .contains("s3cret"),
        "the target is shown as the admin API shows it, redacted: {event}"
    );
    assert_eq!(data["last_attempt"]["status_code"], 400, "{event}");
    assert_eq!(data["last_attempt"]["number"], 1, "{event}");
    assert!(event["timestamp"].is_string(), "{event}");

    // The event is a delivery like any other, listed under its endpoint.
    let (_, listed) = sidecar.get_json("/v1/deliveries?endpoint=ops").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");

    // A delivery to the notify endpoint itself that fails makes no event (no loops): the
    // event would have been stored with the failure, in the same write.
    let (status, json) = sidecar.send("e/ops/bad", "{}", None).await;
    assert_eq!(status, 202, "{json}");
    let own = json["id"].as_str().unwrap().to_string();
    sidecar.wait_status(&own, "failed").await;
    let (_, listed) = sidecar.get_json("/v1/deliveries?endpoint=ops").await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        2,
        "the event of the first failure and the failed delivery, nothing more: {listed}"
    );

    // A 410 disables the endpoint: the app hears of that too.
    let (status, json) = sidecar.send("e/gone/x", "{}", None).await;
    assert_eq!(status, 202, "{json}");
    let gone = json["id"].as_str().unwrap().to_string();
    let got = event_of(&receiver, "endpoint.disabled", |d| d["endpoint"] == "gone").await;
    let event: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(event["data"]["delivery_id"], gone.as_str(), "{event}");
    assert_eq!(event["data"]["last_attempt"]["status_code"], 410, "{event}");
    let disabled = events(&receiver)
        .iter()
        .filter(|(_, v)| v["type"] == "endpoint.disabled")
        .count();
    assert_eq!(disabled, 1);
}

#[tokio::test]
async fn a_notify_endpoint_that_names_no_endpoint_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookrelay.toml");
    std::fs::write(&config, "[notify]\nendpoint = \"ops\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("notify.endpoint") && stderr.contains("[endpoints.ops]"),
        "{stderr}"
    );
}
