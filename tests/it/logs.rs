//! The log's two formats, as a log shipper or a terminal-less container runtime reads them.

use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn json_lines_carry_each_event_and_text_has_no_color_codes_off_a_terminal() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start("[log]\nformat = \"json\"\n").await;
    let (status, json) = sidecar.send(&receiver.url("/hook"), "{}", None).await;
    assert_eq!(status, 202, "{json}");
    let id = json["id"].as_str().unwrap().to_string();
    sidecar.wait_status(&id, "delivered").await;
    // The harness asks for hookrelay's debug events, among them each finished attempt.
    let event = wait_for("the attempt's event in the JSON log", || async {
        sidecar.log().lines().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            (v["message"] == "attempt finished").then_some(v)
        })
    })
    .await;
    assert_eq!(event["level"], "DEBUG", "{event}");
    assert_eq!(event["class"], "SUCCESS", "{event}");
    assert_eq!(event["target"], "hookrelay::deliver", "{event}");
    // Named as the API names it, so a log line leads to its delivery.
    assert_eq!(event["id"], id.as_str(), "{event}");
    assert_eq!(event["next"], "delivered", "{event}");
    assert!(event["timestamp"].is_string(), "{event}");
    let log = sidecar.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }

    let text = Sidecar::start("").await;
    let log = wait_for("the text log", || async {
        let log = text.log();
        log.contains("INFO").then_some(log)
    })
    .await;
    assert!(!log.contains('\u{1b}'), "color codes in a file: {log}");
    assert!(serde_json::from_str::<Value>(log.lines().next().unwrap()).is_err());
}
