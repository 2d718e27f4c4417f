//! Faults: kill -9 under concurrent load, a receiver that misbehaves at random, and SIGTERM
//! with an attempt in flight. Runtimes stay small (a few seconds each) for a 2-core CI box.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const KILL_CYCLES: usize = 5;
const SENDERS: usize = 4;

/// What the load generator learned: the delivery id each key was acked with, and the keys
/// whose request got no 2xx (a client would retry those with the same key).
#[derive(Default)]
struct Ledger {
    acked: HashMap<String, String>,
    unacked: Vec<String>,
    next: usize,
}

/// Sends webhooks with unique idempotency keys until `stop`, retrying un-acked keys first.
async fn load(ingest: String, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let http = client();
    while !stop.load(Ordering::SeqCst) {
        let key = {
            let mut l = ledger.lock().unwrap();
            match l.unacked.pop() {
                Some(k) => k,
                None => {
                    l.next += 1;
                    format!("key-{}", l.next)
                }
            }
        };
        let sent = http
            .post(&ingest)
            .header("idempotency-key", &key)
            .body(format!("{{\"k\":\"{key}\"}}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let id = match sent {
            Ok(r) if r.status().is_success() => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_string)),
            _ => None,
        };
        let mut l = ledger.lock().unwrap();
        match id {
            Some(id) => {
                let first = l.acked.entry(key.clone()).or_insert_with(|| id.clone());
                assert_eq!(*first, id, "key {key} was acked with two different ids");
            }
            None => l.unacked.push(key),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acked_webhook_and_creates_none_twice() {
    let receiver = Receiver::ok().await;
    let mut sidecar = Sidecar::start(&format!(
        "{FAST_RETRY}[health]\nfailure_threshold = 100000\n[endpoints.crash]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        receiver.url("/c")
    ))
    .await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for cycle in 0..KILL_CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..SENDERS)
            .map(|_| {
                tokio::spawn(load(
                    sidecar.ingest_url("/e/crash"),
                    ledger.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        // The kill moment is the random part of the test, not a wait for anything to settle.
        let acked_before = ledger.lock().unwrap().acked.len();
        wait_for("some load to be acked", || async {
            (ledger.lock().unwrap().acked.len() > acked_before + 5).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
        sidecar.kill9();
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        let (acked, unacked) = {
            let l = ledger.lock().unwrap();
            (l.acked.len(), l.unacked.len())
        };
        eprintln!("cycle {cycle}: {acked} acked, {unacked} to retry");
        sidecar.restart().await;
    }
    // The client retries what never got an answer; an already stored one comes back as a
    // duplicate with its original id.
    let http = client();
    let retry: Vec<String> = std::mem::take(&mut ledger.lock().unwrap().unacked);
    for key in retry {
        let r = http
            .post(sidecar.ingest_url("/e/crash"))
            .header("idempotency-key", &key)
            .body(format!("{{\"k\":\"{key}\"}}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let id = r.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut l = ledger.lock().unwrap();
        let first = l.acked.entry(key.clone()).or_insert_with(|| id.clone());
        assert_eq!(*first, id, "key {key} created twice");
    }

    let acked = ledger.lock().unwrap().acked.clone();
    for id in acked.values() {
        sidecar.wait_status(id, "delivered").await;
    }
    // Every acked webhook arrived, and every arrival for a key carries that key's one id.
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    for r in receiver.received() {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        seen.entry(body["k"].as_str().unwrap().to_string())
            .or_default()
            .insert(r.header("webhook-id").unwrap().to_string());
    }
    for (key, id) in &acked {
        let ids = seen
            .get(key)
            .unwrap_or_else(|| panic!("{key} never arrived"));
        assert_eq!(ids, &HashSet::from([id.clone()]), "{key}");
    }
    assert_eq!(
        seen.len(),
        acked.len(),
        "nothing arrived that was not acked"
    );
    assert!(acked.len() > KILL_CYCLES * 5);
}

#[tokio::test]
async fn chaotic_receiver_every_delivery_ends_with_a_recorded_class() {
    let receiver = Receiver::start(Arc::new(|_, _| match fastrand::u8(..5) {
        0 => Reply::Status(200),
        1 => Reply::Status(500),
        2 => Reply::Full(429, vec![("retry-after".into(), "0".into())], String::new()),
        3 => Reply::Reset,
        _ => Reply::Stall(Duration::from_secs(2)),
    }))
    .await;
    let sidecar = Sidecar::start(
        "[retry]\ninitial_delay = \"20ms\"\nmax_delay = \"100ms\"\nmax_attempts = 4\njitter = 0.5\n\
         [delivery]\ntimeout = \"300ms\"\n[health]\nfailure_threshold = 100000\n",
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let (status, json) = sidecar
            .send(&receiver.url(&format!("/x/{i}")), "{}", None)
            .await;
        assert_eq!(status, 202);
        ids.push(json["id"].as_str().unwrap().to_string());
    }
    let mut classes = HashSet::new();
    for id in &ids {
        let d = wait_for(&format!("{id} to finish"), || async {
            let d = sidecar.delivery(id).await;
            matches!(d["status"].as_str(), Some("delivered" | "failed")).then_some(d)
        })
        .await;
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len() as u64, d["attempt_count"].as_u64().unwrap());
        let last = d["last_classification"].as_str().unwrap();
        match d["status"].as_str().unwrap() {
            "delivered" => assert_eq!(last, "SUCCESS"),
            _ => {
                assert_eq!(
                    attempts.len(),
                    4,
                    "failed only when the budget is spent: {d}"
                );
                assert!(
                    [
                        "HTTP_5XX_RETRYABLE",
                        "RATE_LIMITED",
                        "NETWORK_ERROR",
                        "TIMEOUT"
                    ]
                    .contains(&last),
                    "{d}"
                );
            }
        }
        for a in attempts {
            classes.insert(a["classification"].as_str().unwrap().to_string());
        }
    }
    assert!(classes.len() >= 3, "the chaos was varied: {classes:?}");
    let m = sidecar.metrics().await;
    let finished = metric(
        &m,
        "hookrelay_deliveries_finished_total{status=\"delivered\"}",
    )
    .unwrap()
        + metric(&m, "hookrelay_deliveries_finished_total{status=\"failed\"}").unwrap();
    assert_eq!(finished, 40.0, "none lost");
}

#[tokio::test]
async fn sigterm_lets_the_attempt_in_flight_finish_and_refuses_new_ingest() {
    let receiver =
        Receiver::start(Arc::new(|_, _| Reply::Stall(Duration::from_millis(1500)))).await;
    let mut sidecar =
        Sidecar::start("[delivery]\ntimeout = \"10s\"\n[shutdown]\ngrace_period = \"10s\"\n").await;
    let (_, json) = sidecar.send(&receiver.url("/slow"), "{}", None).await;
    let id = json["id"].as_str().unwrap().to_string();
    receiver.wait_count(1).await;
    let signalled = Instant::now();
    sidecar.signal_term();
    wait_for("readiness to turn off", || async {
        let (status, _) = sidecar.get_json("/readyz").await;
        (status == 503).then_some(())
    })
    .await;
    let (status, json) = sidecar.send(&receiver.url("/new"), "{}", None).await;
    assert_eq!(status, 503);
    assert_eq!(json["error"]["code"], "shutting_down");
    let exit = sidecar.wait_exit().await;
    assert!(exit.success(), "exit status {exit}");
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "within the grace period: {took:?}"
    );

    // The attempt finished and was committed before the exit: delivered, not retried.
    sidecar.restart().await;
    let d = sidecar.delivery(&id).await;
    assert_eq!(d["status"], "delivered", "{d}");
    assert_eq!(d["attempt_count"], 1);
    assert_eq!(receiver.count(), 1);
}
