//! Retention: finished deliveries are pruned after `store.retention`, idempotency keys expire
//! after `idempotency.window`.

use crate::harness::*;

#[tokio::test]
async fn finished_deliveries_and_keys_expire() {
    let receiver = Receiver::ok().await;
    let sidecar =
        Sidecar::start("[store]\nretention = \"300ms\"\n[idempotency]\nwindow = \"300ms\"\n").await;
    let target = receiver.url("/short");
    let (status, first) = sidecar.send(&target, "{}", Some("short-lived")).await;
    assert_eq!(status, 202);
    let id = first["id"].as_str().unwrap().to_string();
    sidecar.wait_status(&id, "delivered").await;
    wait_for("the delivered delivery to be pruned", || async {
        let (status, _) = sidecar.get_json(&format!("/v1/deliveries/{id}")).await;
        (status == 404).then_some(())
    })
    .await;
    // The key expired too: the same key and body create a new delivery.
    let (status, again) = sidecar.send(&target, "{}", Some("short-lived")).await;
    assert_eq!(status, 202, "{again}");
    assert_ne!(again["id"], first["id"]);
}

#[tokio::test]
async fn pending_deliveries_are_never_pruned() {
    let sidecar = Sidecar::start(
        "[store]\nretention = \"100ms\"\n[retry]\ninitial_delay = \"1h\"\nmax_delay = \"2h\"\n",
    )
    .await;
    let (_, json) = sidecar
        .send(&format!("http://127.0.0.1:{}/x", free_port()), "{}", None)
        .await;
    let id = json["id"].as_str().unwrap().to_string();
    wait_for("the first attempt", || async {
        (sidecar.delivery(&id).await["attempt_count"] == 1).then_some(())
    })
    .await;
    // A delivery that finishes after the pending one was created; once pruning removed it,
    // the pending one (older) has been past its retention too.
    let receiver = Receiver::ok().await;
    let (_, done) = sidecar.send(&receiver.url("/done"), "{}", None).await;
    let done = done["id"].as_str().unwrap().to_string();
    wait_for("the finished delivery to be pruned", || async {
        let (status, _) = sidecar.get_json(&format!("/v1/deliveries/{done}")).await;
        (status == 404).then_some(())
    })
    .await;
    let d = sidecar.delivery(&id).await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_duplicate_of_a_pruned_delivery_says_so() {
    let receiver = Receiver::ok().await;
    let sidecar =
        Sidecar::start("[store]\nretention = \"100ms\"\n[idempotency]\nwindow = \"1h\"\n").await;
    let target = receiver.url("/kept-key");
    let (status, first) = sidecar.send(&target, "{}", Some("outlives")).await;
    assert_eq!(status, 202);
    let id = first["id"].as_str().unwrap().to_string();
    sidecar.wait_status(&id, "delivered").await;
    wait_for("the delivery to be pruned", || async {
        let (status, _) = sidecar.get_json(&format!("/v1/deliveries/{id}")).await;
        (status == 404).then_some(())
    })
    .await;
    let (status, again) = sidecar.send(&target, "{}", Some("outlives")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["status"], "pruned");
    assert_eq!(again["duplicate"], true);
}
