//! The kill switch against a live sidecar: a global pause holds deliveries across a restart
//! and resume drains them; a host pause holds one destination while another flows.
//!
//! "Held" is proven without sleeping: `GET /v1/hosts` is answered by the scheduler loop, which
//! starts every due attempt before it reads its next message, so a host listed with pending
//! work and nothing in progress was not attempted.

use serde_json::{Value, json};

use crate::harness::*;

async fn host(sidecar: &Sidecar, name: &str) -> Option<Value> {
    let (status, hosts) = sidecar.get_json("/v1/hosts").await;
    assert_eq!(status, 200, "{hosts}");
    hosts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .cloned()
}

/// Waits until the scheduler lists `name` with `pending` queued deliveries.
async fn wait_host_pending(sidecar: &Sidecar, name: &str, pending: u64) -> Value {
    wait_for(&format!("{name} to have {pending} pending"), || async {
        host(sidecar, name)
            .await
            .filter(|h| h["pending"] == pending)
    })
    .await
}

#[tokio::test]
async fn a_pause_holds_deliveries_across_a_restart_and_resume_drains_them() {
    let receiver = Receiver::ok().await;
    let mut sidecar = Sidecar::start(FAST_RETRY).await;
    let (status, p) = sidecar
        .post_json("/v1/pause", json!({"reason": "receiver migration"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&p["paused"], &p["reason"]),
        (&json!(true), &json!("receiver migration"))
    );
    for i in 0..10 {
        let (status, _) = sidecar
            .send(&receiver.url(&format!("/p/{i}")), "{}", None)
            .await;
        assert_eq!(status, 202, "ingest keeps accepting while paused");
    }
    let name = receiver.addr.to_string();
    let h = wait_host_pending(&sidecar, &name, 10).await;
    assert_eq!(h["in_progress"], 0);
    let text = sidecar.metrics().await;
    assert_eq!(metric(&text, "hookrelay_paused"), Some(1.0));
    assert_eq!(
        metric(&text, "hookrelay_queue_depth{status=\"pending\"}"),
        Some(10.0)
    );

    sidecar.kill9();
    sidecar.restart().await;
    let (_, p) = sidecar.get_json("/v1/pause").await;
    assert_eq!(
        (&p["paused"], &p["reason"]),
        (&json!(true), &json!("receiver migration"))
    );
    let h = wait_host_pending(&sidecar, &name, 10).await;
    assert_eq!(h["in_progress"], 0);
    assert_eq!(receiver.count(), 0);
    // Pausing again keeps the pause's time; a new reason replaces the old one, none keeps it.
    let since = p["since"].clone();
    let (_, again) = sidecar
        .post_json("/v1/pause", json!({"reason": "still migrating"}))
        .await;
    assert_eq!(
        (&again["since"], &again["reason"]),
        (&since, &json!("still migrating"))
    );
    for empty in [json!({}), json!({"reason": null}), json!({"reason": ""})] {
        let (_, again) = sidecar.post_json("/v1/pause", empty.clone()).await;
        assert_eq!(again["reason"], "still migrating", "{empty}");
    }
    let (_, p) = sidecar.get_json("/v1/pause").await;
    assert_eq!(
        (&p["since"], &p["reason"]),
        (&since, &json!("still migrating"))
    );
    // Gauges are right straight after the restart.
    let text = sidecar.metrics().await;
    assert_eq!(metric(&text, "hookrelay_paused"), Some(1.0));
    assert_eq!(
        metric(&text, "hookrelay_queue_depth{status=\"pending\"}"),
        Some(10.0)
    );
    assert!(metric(&text, "hookrelay_oldest_pending_age_seconds").is_some());
    assert_eq!(sidecar.stats().await["counts"]["pending"], 10);

    let (status, p) = sidecar.post_json("/v1/resume", json!({})).await;
    assert_eq!((status, &p["paused"]), (200, &json!(false)));
    receiver.wait_count(10).await;
    sidecar.wait_count("delivered", 10).await;
    let text = sidecar.metrics().await;
    assert_eq!(metric(&text, "hookrelay_paused"), Some(0.0));
}

#[tokio::test]
async fn a_host_pause_holds_one_host_while_another_flows() {
    let held = Receiver::ok().await;
    let flowing = Receiver::ok().await;
    let mut sidecar = Sidecar::start(FAST_RETRY).await;
    let held_name = held.addr.to_string();
    let (status, p) = sidecar
        .post_json(
            &format!("/v1/hosts/{held_name}/pause"),
            json!({"reason": "5xx storm"}),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (&p["host"], &p["paused"]),
        (&json!(held_name), &json!(true))
    );
    for i in 0..5 {
        sidecar
            .send(&held.url(&format!("/h/{i}")), "{}", None)
            .await;
        sidecar
            .send(&flowing.url(&format!("/f/{i}")), "{}", None)
            .await;
    }
    flowing.wait_count(5).await;
    let h = wait_host_pending(&sidecar, &held_name, 5).await;
    assert_eq!((&h["paused"], &h["in_progress"]), (&json!(true), &json!(0)));
    assert_eq!(h["pause_reason"], "5xx storm");
    assert_eq!(held.count(), 0);
    assert_eq!(sidecar.stats().await["paused_hosts"], 1);

    // Still held after a restart, while new work for the other host flows.
    sidecar.kill9();
    sidecar.restart().await;
    sidecar.send(&flowing.url("/f/after"), "{}", None).await;
    flowing.wait_count(6).await;
    let h = wait_host_pending(&sidecar, &held_name, 5).await;
    assert_eq!(h["paused"], true);
    assert_eq!(held.count(), 0);

    let (status, p) = sidecar
        .post_json(&format!("/v1/hosts/{held_name}/resume"), json!({}))
        .await;
    assert_eq!((status, &p["paused"]), (200, &json!(false)));
    held.wait_count(5).await;
    sidecar.wait_count("delivered", 11).await;
    assert_eq!(
        host(&sidecar, &held_name).await,
        None,
        "idle, unpaused hosts are not listed"
    );
}

/// Versions before host keys were normalised stored a host pause as typed (lower-cased, so
/// `example.com:0443` stayed as written). Such a pause must still be listed and resumable by that
/// spelling, though the admin API now rewrites it to `example.com:443`.
#[tokio::test]
async fn a_host_pause_stored_by_an_older_version_can_be_resumed_as_typed() {
    use hookrelay::{metrics::Metrics, model::PauseRecord, store::Store, store::writer};

    let legacy = "example.com:0443";
    let mut sidecar = Sidecar::start("").await;
    sidecar.terminate().await;
    {
        // Written the way the older version wrote it: through the writer, key as typed.
        let store = Store::open(&sidecar.data_dir()).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (w, join) = writer::spawn(&store, Metrics::new(), tx).unwrap();
        let record = PauseRecord {
            since: 1,
            reason: Some("old".into()),
        };
        w.set_pause(Some(legacy.into()), Some(record))
            .await
            .unwrap();
        drop(w);
        join.join().unwrap();
    }
    sidecar.restart().await;
    let listed = host(&sidecar, legacy).await;
    assert_eq!(listed.as_ref().map(|h| &h["paused"]), Some(&json!(true)));
    assert_eq!(sidecar.stats().await["paused_hosts"], 1);

    let (status, body) = sidecar
        .post_json("/v1/hosts/Example.COM:0443/resume", json!({}))
        .await;
    assert_eq!((status, &body["paused"]), (200, &json!(false)), "{body}");
    assert_eq!(host(&sidecar, legacy).await, None);
    assert_eq!(sidecar.stats().await["paused_hosts"], 0);
    // Cleared in the store, not only in the running scheduler.
    sidecar.terminate().await;
    sidecar.restart().await;
    assert_eq!(host(&sidecar, legacy).await, None);
    assert_eq!(sidecar.stats().await["paused_hosts"], 0);
}

/// "Retry now": a delivery waiting out a long backoff is attempted at once; a host whose
/// circuit opened is retried at once with its circuit closed. A failed delivery is refused
/// (it is replayed instead).
#[tokio::test]
async fn retry_now_brings_waiting_deliveries_forward() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let back = Arc::new(AtomicBool::new(false));
    let flag = back.clone();
    let receiver = Receiver::start(Arc::new(move |_, _| {
        if flag.load(Ordering::SeqCst) {
            Reply::Status(200)
        } else {
            Reply::Status(503)
        }
    }))
    .await;
    // An hour's backoff, and a circuit that opens on the second failure, probing hourly; one
    // attempt at a time, so exactly two are made before it opens.
    let sidecar = Sidecar::start(
        "[retry]\ninitial_delay = \"1h\"\nmax_delay = \"2h\"\njitter = 0.0\n\
         [health]\nfailure_threshold = 2\nprobe_interval = \"1h\"\n\
         [delivery]\nper_host_concurrency = 1\n",
    )
    .await;
    let host_name = format!("127.0.0.1:{}", receiver.addr.port());
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, j) = sidecar
            .send(&receiver.url(&format!("/r/{i}")), "{}", None)
            .await;
        assert_eq!(status, 202, "{j}");
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    // Two attempts fail and open the circuit; the third delivery is held by it.
    let h = wait_for("the circuit to open", || async {
        host(&sidecar, &host_name)
            .await
            .filter(|h| h["circuit"] == "open" && h["in_progress"] == 0)
    })
    .await;
    assert_eq!(h["pending"], 3, "{h}");
    assert_eq!(receiver.count(), 2);
    let (_, health) = sidecar.get_json("/v1/health/hosts").await;
    assert!(health["hosts"].to_string().contains(&host_name), "{health}");
    back.store(true, Ordering::SeqCst);

    // One delivery: brought forward, but its host's open circuit still holds it.
    let (status, d) = sidecar
        .post_json(&format!("/v1/deliveries/{}/retry", ids[0]), json!({}))
        .await;
    assert_eq!(status, 200, "{d}");
    // (The hosts listing is answered after the scheduler started what was due.)
    let h = host(&sidecar, &host_name).await.unwrap();
    assert_eq!(
        (h["in_progress"].as_u64(), receiver.count()),
        (Some(0), 2),
        "{h}"
    );

    // The host: every delivery goes now, the circuit closed.
    let (status, r) = sidecar
        .post_json(&format!("/v1/hosts/{host_name}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{r}");
    // All three are due now: the second was waiting out its backoff (the first was brought
    // forward by its own retry above, the third held only by the circuit).
    assert_eq!(
        (&r["host"], &r["due_now"], &r["brought_forward"]),
        (&json!(host_name), &json!(3), &json!(1)),
        "{r}"
    );
    // The open circuit is gone from the health view at once (it would hold them for an hour).
    let (_, health) = sidecar.get_json("/v1/health/hosts").await;
    assert!(
        !health["hosts"].to_string().contains(&host_name),
        "{health}"
    );
    for id in &ids {
        sidecar.wait_status(id, "delivered").await;
    }

    // Only a pending delivery can be retried now.
    let (status, e) = sidecar
        .post_json(&format!("/v1/deliveries/{}/retry", ids[0]), json!({}))
        .await;
    assert_eq!(
        (status, &e["error"]["code"]),
        (409, &json!("not_pending")),
        "{e}"
    );
    let (status, e) = sidecar.post_json("/v1/hosts/nohost/retry", json!({})).await;
    assert_eq!(
        (status, &e["error"]["code"]),
        (400, &json!("bad_host")),
        "{e}"
    );
}
