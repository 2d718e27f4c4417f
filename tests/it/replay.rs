//! Replay batches against a live sidecar: by ids and by filter, dry run and real, skipped
//! reasons, the size limit, the audit trail, and replayed webhooks arriving.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::harness::*;

fn created(batch: &Value) -> Vec<(String, Value)> {
    batch["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["source"].as_str().unwrap().to_string(),
                c["delivery"].clone(),
            )
        })
        .collect()
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[tokio::test]
async fn replays_by_ids_and_by_filter_with_dry_runs_and_an_audit_trail() {
    // /flaky/* refuses the first request (a permanent 400, so the delivery fails) and takes
    // every later one; /fine answers 200.
    let receiver = Receiver::start(Arc::new(|r, nth| {
        if r.target.starts_with("/flaky/") && nth == 0 {
            Reply::Status(400)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let sidecar = Sidecar::start(&format!("{FAST_RETRY}[admin]\nmax_batch = 4\n")).await;
    let mut failed = Vec::new();
    for i in 0..5 {
        let (status, j) = sidecar
            .send(
                &receiver.url(&format!("/flaky/{i}")),
                &format!("{{\"i\":{i}}}"),
                None,
            )
            .await;
        assert_eq!(status, 202);
        failed.push(j["id"].as_str().unwrap().to_string());
        // `since` below has millisecond precision: give each delivery its own millisecond.
        let acked = now_ms();
        while now_ms() == acked {
            tokio::task::yield_now().await;
        }
    }
    let (_, fine) = sidecar.send(&receiver.url("/fine"), "{}", None).await;
    let fine = fine["id"].as_str().unwrap().to_string();
    sidecar.wait_count("failed", 5).await;
    sidecar.wait_status(&fine, "delivered").await;
    let before = receiver.count();

    // Dry run by ids: what would happen, recorded, nothing created.
    let unknown = "dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let (status, dry) = sidecar
        .post_json(
            "/v1/batches",
            json!({"delivery_ids": [failed[0], fine, "dlv_bogus", unknown], "dry_run": true, "reason": "check"}),
        )
        .await;
    assert_eq!(status, 201, "{dry}");
    assert!(dry["id"].as_str().unwrap().starts_with("bat_"));
    assert_eq!(
        (
            &dry["dry_run"],
            &dry["status"],
            &dry["requested"],
            &dry["reason"]
        ),
        (&json!(true), &json!("dry_run"), &json!(4), &json!("check"))
    );
    assert_eq!(created(&dry), vec![(failed[0].clone(), Value::Null)]);
    assert_eq!(
        dry["skipped"],
        json!([
            {"id": fine, "reason": "not_replayable"},
            {"id": "dlv_bogus", "reason": "not_found"},
            {"id": unknown, "reason": "not_found"},
        ])
    );
    assert_eq!(sidecar.stats().await["counts"]["pending"], 0);
    // An unknown id named twice is skipped once, as a known one is replayed once.
    let (status, twice) = sidecar
        .post_json(
            "/v1/batches",
            json!({"delivery_ids": ["dlv_bogus", "dlv_bogus"], "dry_run": true}),
        )
        .await;
    assert_eq!(status, 201, "{twice}");
    assert_eq!(
        twice["skipped"],
        json!([{"id": "dlv_bogus", "reason": "not_found"}])
    );
    // Counted once too, so created and skipped add up to what was requested.
    assert_eq!(twice["requested"], 1, "{twice}");

    // Over admin.max_batch: refused whole, and not recorded.
    let (status, err) = sidecar
        .post_json(
            "/v1/batches",
            json!({"filter": {"status": "failed", "target_prefix": receiver.url("/flaky/")}}),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (400, &json!("batch_too_large"))
    );
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("matches more than 4 deliveries") && message.contains("since"),
        "{message}"
    );
    let (status, _) = sidecar
        .post_json(
            "/v1/batches",
            json!({"delivery_ids": [failed[0], failed[1], failed[2], failed[3], failed[4]]}),
        )
        .await;
    assert_eq!(status, 400);

    // Real, by ids.
    let (status, real) = sidecar
        .post_json(
            "/v1/batches",
            json!({"delivery_ids": [failed[0], failed[1], failed[0]], "reason": "receiver fixed"}),
        )
        .await;
    assert_eq!(status, 201, "{real}");
    // Two deliveries requested (one named twice): created and skipped add up to it.
    assert_eq!(
        (&real["status"], &real["requested"]),
        (&json!("completed"), &json!(2))
    );
    let pairs = created(&real);
    assert_eq!(pairs.len(), 2, "a repeated id is replayed once");
    for (source, new) in &pairs {
        let new = new.as_str().unwrap();
        let d = sidecar.wait_status(new, "delivered").await;
        assert_eq!(d["replay_of"], json!(source));
        assert_eq!(d["batch_id"], real["id"]);
        assert_eq!(d["attempt_count"], 1);
        // The source stays as it was.
        let s = sidecar.delivery(source).await;
        assert_eq!(
            (&s["status"], &s["attempt_count"]),
            (&json!("failed"), &json!(1))
        );
    }

    // Real, by filter: failed or cancelled (no status given), created since the third.
    let since = sidecar.delivery(&failed[2]).await["created_at"].clone();
    let (status, by_filter) = sidecar
        .post_json(
            "/v1/batches",
            json!({"filter": {"target_prefix": receiver.url("/flaky/"), "since": since}}),
        )
        .await;
    assert_eq!(status, 201, "{by_filter}");
    let sources: Vec<String> = created(&by_filter).into_iter().map(|(s, _)| s).collect();
    assert_eq!(sources, failed[2..].to_vec());
    assert_eq!(
        by_filter["filter"],
        json!({"target_prefix": receiver.url("/flaky/"), "since": since}),
        "the filter as given, without the fields not given"
    );
    sidecar.wait_count("delivered", 6).await;

    // The replayed webhooks arrived, each with its original body.
    let got = receiver.wait_count(before + 5).await;
    for i in 0..5 {
        let path = format!("/flaky/{i}");
        let hits: Vec<_> = got.iter().filter(|r| r.target == path).collect();
        assert_eq!(hits.len(), 2, "{path}");
        assert_eq!(hits[1].body, format!("{{\"i\":{i}}}").into_bytes());
    }

    // The audit trail, newest first; the refused batches are not in it.
    let (status, list) = sidecar.get_json("/v1/batches").await;
    assert_eq!(status, 200);
    let listed: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["id"])
        .collect();
    assert_eq!(
        listed,
        vec![&by_filter["id"], &real["id"], &twice["id"], &dry["id"]]
    );
    let (status, one) = sidecar
        .get_json(&format!("/v1/batches/{}", real["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one, real);
    let (_, page) = sidecar.get_json("/v1/batches?limit=2").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = sidecar
        .get_json(&format!("/v1/batches?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["data"][0]["id"], twice["id"]);
    assert_eq!(rest["data"][1]["id"], dry["id"]);

    let text = sidecar.metrics().await;
    assert_eq!(metric(&text, "hookrelay_replayed_total"), Some(5.0));
    assert_eq!(
        metric(
            &text,
            "hookrelay_deliveries_finished_total{status=\"failed\"}"
        ),
        Some(5.0)
    );
}

/// A replay is the same message sent again: a signed replay (and a replay of that replay)
/// carries the original delivery's `webhook-id`, so receivers that deduplicate by it can.
#[tokio::test]
async fn a_signed_replay_keeps_the_original_webhook_id() {
    // Refused (permanently) twice, then taken.
    let receiver = Receiver::start(Arc::new(|_, nth| {
        if nth < 2 {
            Reply::Status(400)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let sidecar = Sidecar::start(&format!(
        "{FAST_RETRY}[endpoints.signed]\nurl = \"{}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        receiver.url("/signed")
    ))
    .await;
    let resp = sidecar
        .http
        .post(sidecar.ingest_url("/e/signed"))
        .body(r#"{"order":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let original = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    sidecar.wait_status(&original, "failed").await;

    // Replay it, and replay the replay once it failed too.
    let mut source = original.clone();
    for round in 0..2 {
        let (status, batch) = sidecar
            .post_json("/v1/batches", json!({"delivery_ids": [source]}))
            .await;
        assert_eq!(status, 201, "{batch}");
        let copy = created(&batch)[0].1.as_str().unwrap().to_string();
        let d = sidecar
            .wait_status(&copy, if round == 0 { "failed" } else { "delivered" })
            .await;
        assert_eq!(d["replay_of"], original.as_str(), "{d}");
        source = copy;
    }
    let ids: Vec<String> = receiver
        .wait_count(3)
        .await
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![original; 3]);
}
