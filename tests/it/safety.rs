//! The safety features against the real binary: egress guard, signing (HMAC and ed25519), per-host Retry-After,
//! circuit breaker, 410 disabling an endpoint, and backpressure. Every packet stays on loopback;
//! the guard's non-loopback ranges are covered by the unit tests of `egress.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::harness::*;

/// Closes the harness's default loopback exception: the guard as shipped.
const NO_EXCEPTIONS: (&str, &str) = ("HOOKRELAY_EGRESS__ALLOW_CIDRS", "[]");

#[tokio::test]
async fn egress_guard_refuses_loopback_literals_at_ingest() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start_with_env(FAST_RETRY, &[NO_EXCEPTIONS]).await;
    let port = receiver.addr.port();
    for target in [
        format!("http://127.0.0.1:{port}/x"),
        format!("http://2130706433:{port}/x"),
        format!("http://0x7f.1:{port}/x"),
        format!("http://127.1:{port}/x"),
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
        format!("http://[::1]:{port}/x"),
    ] {
        let (status, json) = sidecar.send(&target, "{}", None).await;
        assert_eq!(status, 403, "{target}: {json}");
        assert_eq!(json["error"]["code"], "target_forbidden", "{target}");
    }
    assert_eq!(receiver.count(), 0);
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(
            &m,
            "hookrelay_egress_denied_total{action=\"blocked\",stage=\"ingest\"}"
        ),
        Some(6.0)
    );
}

#[tokio::test]
async fn a_name_resolving_only_to_denied_addresses_fails_as_egress_blocked() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start_with_env(FAST_RETRY, &[NO_EXCEPTIONS]).await;
    // `localhost` is a name: accepted at ingest, refused when it resolves to 127.0.0.1 / ::1.
    let target = format!("http://localhost:{}/x", receiver.addr.port());
    let (status, json) = sidecar.send(&target, "{}", None).await;
    assert_eq!(status, 202, "{json}");
    let id = json["id"].as_str().unwrap();
    let d = sidecar.wait_status(id, "failed").await;
    assert_eq!(d["attempt_count"], 1, "permanent: no retry");
    assert_eq!(d["last_classification"], "EGRESS_BLOCKED");
    assert!(
        d["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("denied"),
        "{d}"
    );
    assert_eq!(receiver.count(), 0, "no packet reached the receiver");
}

#[tokio::test]
async fn report_mode_counts_but_lets_through_and_allow_hosts_opens_a_name() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start_with_env("[egress]\nmode = \"report\"\n", &[NO_EXCEPTIONS]).await;
    let (status, json) = sidecar.send(&receiver.url("/r"), "{}", None).await;
    assert_eq!(status, 202, "{json}");
    sidecar
        .wait_status(json["id"].as_str().unwrap(), "delivered")
        .await;
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(
            &m,
            "hookrelay_egress_denied_total{action=\"reported\",stage=\"ingest\"}"
        ),
        Some(1.0)
    );

    let sidecar = Sidecar::start_with_env(
        "[egress]\nallow_hosts = [\"localhost\"]\n",
        &[NO_EXCEPTIONS],
    )
    .await;
    let target = format!("http://localhost:{}/named", receiver.addr.port());
    let (status, json) = sidecar.send(&target, "{}", None).await;
    assert_eq!(status, 202, "{json}");
    sidecar
        .wait_status(json["id"].as_str().unwrap(), "delivered")
        .await;
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_c2VjcmV0LWZyb20tbGFzdC15ZWFyLXJvdGF0ZWQ=";

/// An independent check, as a receiver would write it from the specification.
fn verifies(secret: &str, id: &str, ts: &str, body: &[u8], signature: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let want = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    signature.split(' ').any(|s| s == want)
}

/// The receiver example in `examples/receivers/` (Python's own hmac and base64) as a second,
/// independent verifier.
fn python_verifies(secret: &str, id: &str, ts: &str, sig: &str, body: &[u8]) -> bool {
    use std::io::Write;
    let script = "import sys; sys.path.insert(0, sys.argv[1]); \
        from verify_standard_webhooks import verify; \
        import os; h = {k: os.environ[k.upper().replace('-', '_')] for k in ('webhook-id', 'webhook-timestamp', 'webhook-signature')}; \
        verify(os.environ['SECRET'], h, sys.stdin.buffer.read())";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/receivers"))
        .env("SECRET", secret)
        .env("WEBHOOK_ID", id)
        .env("WEBHOOK_TIMESTAMP", ts)
        .env("WEBHOOK_SIGNATURE", sig)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs the receiver example (.ci/run installs it)");
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait().unwrap().success()
}

#[tokio::test]
async fn named_endpoints_are_signed_with_a_stable_id_and_every_active_secret() {
    let receiver = Receiver::start(Arc::new(|_, n| {
        if n == 0 {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let sidecar = Sidecar::start(&format!(
        "{FAST_RETRY}[endpoints.signed]\nurl = \"{}\"\nsecret = \"{SECRET}\"\nsecrets = [\"{OLD_SECRET}\"]\n[endpoints.plain]\nurl = \"{}\"\n",
        receiver.url("/signed"),
        receiver.url("/plain")
    ))
    .await;
    let post = |path: &str| {
        sidecar
            .http
            .post(sidecar.ingest_url(path))
            .header("webhook-signature", "v1,forged")
            .body("{\"order\":1}")
            .send()
    };
    let resp = post("/e/signed").await.unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    sidecar.wait_status(&id, "delivered").await;
    let got = receiver.received();
    let signed: Vec<_> = got.iter().filter(|r| r.target == "/signed").collect();
    assert_eq!(signed.len(), 2, "503 then 200");
    for r in &signed {
        let wid = r.header("webhook-id").unwrap();
        let ts = r.header("webhook-timestamp").unwrap();
        let sig = r.header("webhook-signature").unwrap();
        assert_eq!(wid, id, "the id is the delivery id, stable across retries");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            now.abs_diff(ts.parse().unwrap()) < 60,
            "fresh timestamp {ts}"
        );
        assert_eq!(sig.split(' ').count(), 2, "one signature per secret: {sig}");
        assert!(verifies(SECRET, wid, ts, &r.body, sig), "current secret");
        assert!(verifies(OLD_SECRET, wid, ts, &r.body, sig), "older secret");
        assert!(!sig.contains("forged"), "the app's own header is replaced");
        assert!(python_verifies(SECRET, wid, ts, sig, &r.body));
        assert!(python_verifies(OLD_SECRET, wid, ts, sig, &r.body));
        assert!(!python_verifies(SECRET, wid, ts, sig, b"{\"order\":2}"));
    }

    let resp = post("/e/plain").await.unwrap();
    assert_eq!(resp.status(), 202);
    let r = receiver.wait_count(3).await;
    let plain = r.iter().find(|r| r.target == "/plain").unwrap();
    assert!(plain.header("webhook-id").is_none());
    // Without a secret, the app's headers pass through untouched.
    assert_eq!(plain.header("webhook-signature"), Some("v1,forged"));
}

/// RFC 8032's first test key: its seed as hookrelay's `whsk_`, its public key as `whpk_`.
const ED_SECRET: &str = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
const ED_PUBLIC: &str = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

/// A receiver's check of a `v1a` entry with nothing but the public key.
fn ed25519_verifies(public: &str, id: &str, ts: &str, body: &[u8], signature: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(public.strip_prefix("whpk_").unwrap()).unwrap();
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
    let msg = [format!("{id}.{ts}.").as_bytes(), body].concat();
    signature.split(' ').any(|s| {
        s.strip_prefix("v1a,")
            .and_then(|sig| b64.decode(sig).ok())
            .is_some_and(|sig| key.verify(&msg, &sig).is_ok())
    })
}

/// Moving an endpoint from HMAC to ed25519: the new `whsk_` key signs `v1a`, the old `whsec_`
/// secret still signs `v1` beside it, and a receiver verifies with the public key alone (checked
/// with ring and, independently, with the Python receiver example on OpenSSL's ed25519).
#[tokio::test]
async fn ed25519_keys_sign_v1a_beside_an_older_hmac_secret() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start(&format!(
        "[endpoints.signed]\nurl = \"{}\"\nsecret = \"{ED_SECRET}\"\nsecrets = [\"{SECRET}\"]\n",
        receiver.url("/signed"),
    ))
    .await;
    let resp = sidecar
        .http
        .post(sidecar.ingest_url("/e/signed"))
        .body("{\"order\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let got = receiver.wait_count(1).await;
    let r = &got[0];
    let (wid, ts) = (
        r.header("webhook-id").unwrap(),
        r.header("webhook-timestamp").unwrap(),
    );
    let sig = r.header("webhook-signature").unwrap();
    let entries: Vec<&str> = sig.split(' ').collect();
    assert_eq!(entries.len(), 2, "{sig}");
    assert!(
        entries[0].starts_with("v1a,"),
        "the current key first: {sig}"
    );
    assert!(ed25519_verifies(ED_PUBLIC, wid, ts, &r.body, sig), "{sig}");
    assert!(!ed25519_verifies(ED_PUBLIC, wid, ts, b"{\"order\":2}", sig));
    assert!(
        verifies(SECRET, wid, ts, &r.body, sig),
        "the older HMAC secret"
    );
    assert!(python_verifies(ED_PUBLIC, wid, ts, sig, &r.body));
    assert!(!python_verifies(ED_PUBLIC, wid, ts, sig, b"{\"order\":2}"));
    assert!(python_verifies(SECRET, wid, ts, sig, &r.body));

    // The admin API and the CLI show the public key, never a secret.
    let (status, eps) = sidecar.get_json("/v1/endpoints").await;
    assert_eq!(status, 200, "{eps}");
    let signed = &eps["data"][0];
    assert_eq!(signed["name"], "signed", "{eps}");
    assert_eq!(
        signed["signing"],
        serde_json::json!([
            {"scheme": "v1a", "public_key": ED_PUBLIC},
            {"scheme": "v1", "public_key": null}
        ])
    );
    let text = eps.to_string();
    assert!(
        !text.contains(&ED_SECRET[5..]) && !text.contains(&SECRET[6..]),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["endpoints", "list", "--admin-url"])
        .arg(sidecar.admin_url(""))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    assert!(
        listing.contains(&format!("signed: public key {ED_PUBLIC}"))
            && listing
                .lines()
                .any(|l| l.starts_with("signed") && l.contains("v1a,v1")),
        "{listing}"
    );
}

/// A host whose one path fails: once its circuit has opened, the probe is the newest
/// delivery due (here a healthy one) rather than the failing retries due first, and once it
/// closes, new webhooks take turns with those thirty retries instead of queueing behind them
/// (queued behind, five of them would fail back to back and reopen the circuit, and only one
/// new webhook would go per probe interval). Found by a soak test, where the probes kept
/// choosing such retries and the host's healthy traffic waited for good.
#[tokio::test]
async fn failing_retries_do_not_starve_a_hosts_new_webhooks() {
    let receiver = Receiver::start(Arc::new(|r, _| {
        if r.target.starts_with("/bad") {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    // One attempt at a time to the host: the order of its starts is the order of its queue.
    let sidecar = Sidecar::start(
        "[retry]\ninitial_delay = \"100ms\"\nmultiplier = 1.0\nmax_delay = \"100ms\"\n\
         max_attempts = 1000\njitter = 0.0\n\
         [delivery]\nper_host_concurrency = 1\n\
         [health]\nfailure_threshold = 5\nprobe_interval = \"2s\"\n",
    )
    .await;
    let send = |path: String| {
        let sidecar = &sidecar;
        let url = receiver.url(&path);
        async move {
            let (status, v) = sidecar.send(&url, "{}", None).await;
            assert_eq!(status, 202, "{v}");
            v["id"].as_str().unwrap().to_string()
        }
    };
    // Thirty deliveries to the failing path, each sent with one to the healthy path: taking
    // turns with successes, every one of them is attempted (and becomes a retry) without five
    // failing back to back.
    let mut bad = Vec::new();
    for i in 0..30 {
        bad.push(send(format!("/bad/{i}")).await);
        send(format!("/ok/first/{i}")).await;
    }
    // Then only the failing retries are left: back to back, they open the circuit.
    wait_for("the circuit to open", || async {
        let (_, h) = sidecar.get_json("/v1/health/hosts").await;
        (h["hosts"][0]["circuit"] == "open").then_some(())
    })
    .await;
    // The failing retries are all due (held by the circuit) before any new webhook arrives, so
    // a probe that took the delivery due first would always send one of them.
    wait_for("every failing retry to be due", || async {
        let now = std::time::SystemTime::now();
        let mut due = true;
        for id in &bad {
            let d = sidecar.delivery(id).await;
            let at = d["next_attempt_at"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let at =
                time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339);
            due &= at.is_ok_and(|t| std::time::SystemTime::from(t) < now);
        }
        due.then_some(())
    })
    .await;
    let mut good = Vec::new();
    for i in 0..5 {
        good.push(send(format!("/ok/{i}")).await);
    }
    // Within two probe intervals: the first probe (the newest webhook) closes the circuit.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for id in &good {
        sidecar.wait_status(id, "delivered").await;
    }
    assert!(
        std::time::Instant::now() < deadline,
        "the host's new webhooks waited behind its failing retries"
    );
    // Still retrying: pending, or in flight again now that the circuit has closed (a retry
    // that was due may be on its way to the host at this moment).
    for id in &bad {
        let d = sidecar.delivery(id).await;
        assert!(
            d["status"] == "pending" || d["status"] == "in_progress",
            "{d}"
        );
    }
}

#[tokio::test]
async fn retry_after_holds_every_delivery_to_the_host() {
    let first = Arc::new(AtomicBool::new(true));
    let receiver = Receiver::start(Arc::new(move |_, _| {
        if first.swap(false, Ordering::SeqCst) {
            Reply::Full(429, vec![("retry-after".into(), "2".into())], String::new())
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    // One attempt at a time to the host, so the second webhook waits behind the first.
    let sidecar = Sidecar::start(
        "[delivery]\nper_host_concurrency = 1\n[retry]\ninitial_delay = \"50ms\"\nmax_delay = \"5s\"\n",
    )
    .await;
    let (_, a) = sidecar.send(&receiver.url("/a"), "{}", None).await;
    let (_, b) = sidecar.send(&receiver.url("/b"), "{}", None).await;
    sidecar
        .wait_status(a["id"].as_str().unwrap(), "delivered")
        .await;
    sidecar
        .wait_status(b["id"].as_str().unwrap(), "delivered")
        .await;
    let got = receiver.received();
    let limited = got[0].at;
    for r in &got[1..] {
        assert!(
            r.at - limited >= Duration::from_millis(1900),
            "{} came {:?} after the 429",
            r.target,
            r.at - limited
        );
    }
}

#[tokio::test]
async fn circuit_breaker_holds_a_failing_host_and_probes_it() {
    let healthy = Arc::new(AtomicBool::new(false));
    let gate = healthy.clone();
    let receiver = Receiver::start(Arc::new(move |_, _| {
        if gate.load(Ordering::SeqCst) {
            Reply::Status(200)
        } else {
            Reply::Status(500)
        }
    }))
    .await;
    let sidecar = Sidecar::start(
        "[retry]\ninitial_delay = \"20ms\"\nmax_delay = \"50ms\"\nmax_attempts = 1000\njitter = 0.0\n\
         [delivery]\nper_host_concurrency = 1\n[health]\nfailure_threshold = 3\nprobe_interval = \"700ms\"\n",
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let (status, json) = sidecar
            .send(&receiver.url(&format!("/h/{i}")), "{}", None)
            .await;
        assert_eq!(status, 202);
        ids.push(json["id"].as_str().unwrap().to_string());
    }
    let series = format!("hookrelay_host_circuit_open{{host=\"{}\"}}", receiver.addr);
    wait_for("the circuit to open", || async {
        (metric(&sidecar.metrics().await, &series) == Some(1.0)).then_some(())
    })
    .await;
    let (_, listed) = sidecar.get_json("/v1/hosts").await;
    let me = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == receiver.addr.to_string())
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        ["open", "half_open"].contains(&me["circuit"].as_str().unwrap()),
        "{me}"
    );
    // The count goes on while open: it says how long the host has been failing.
    let failures_when_opened = me["consecutive_failures"].as_u64().unwrap();
    assert!(failures_when_opened >= 3, "{me}");
    let (_, hosts) = sidecar.get_json("/v1/health/hosts").await;
    assert_eq!(
        hosts["hosts"][0]["host"],
        receiver.addr.to_string(),
        "{hosts}"
    );
    assert!(
        ["open", "half_open"].contains(&hosts["hosts"][0]["circuit"].as_str().unwrap()),
        "{hosts}"
    );
    // While open, attempts come one probe per interval, not every 20 ms.
    let opened_at = receiver.count();
    receiver.wait_count(opened_at + 2).await;
    let got = receiver.received();
    let gap = got[opened_at + 1].at - got[opened_at].at;
    assert!(gap >= Duration::from_millis(600), "probes {gap:?} apart");
    assert!(got.len() <= opened_at + 3, "{} attempts", got.len());
    wait_for("the failed probes to be counted", || async {
        let (_, listed) = sidecar.get_json("/v1/hosts").await;
        let failures = listed["data"][0]["consecutive_failures"].as_u64().unwrap();
        (failures > failures_when_opened).then_some(())
    })
    .await;

    healthy.store(true, Ordering::SeqCst);
    for id in &ids {
        sidecar.wait_status(id, "delivered").await;
    }
    let m = sidecar.metrics().await;
    assert_ne!(metric(&m, &series), Some(1.0), "closed again");
}

#[tokio::test]
async fn gone_disables_a_named_endpoint_until_it_is_enabled_even_across_restarts() {
    let back = Arc::new(AtomicBool::new(false));
    let flag = back.clone();
    let receiver = Receiver::start(Arc::new(move |r, _| {
        if r.target.starts_with("/gone") && !flag.load(Ordering::SeqCst) {
            Reply::Status(410)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let mut sidecar = Sidecar::start(&format!(
        "{FAST_RETRY}[endpoints.gone]\nurl = \"{}\"\n[endpoints.fine]\nurl = \"{}\"\n",
        receiver.url("/gone"),
        receiver.url("/fine")
    ))
    .await;
    let send = |sidecar: &Sidecar, path: &str| {
        let req = sidecar
            .http
            .post(sidecar.ingest_url(path))
            .body("{}")
            .send();
        async move {
            let resp = req.await.unwrap();
            assert_eq!(resp.status(), 202);
            let v: serde_json::Value = resp.json().await.unwrap();
            v["id"].as_str().unwrap().to_string()
        }
    };
    let first = send(&sidecar, "/e/gone/1").await;
    // Disabled at once (the scheduler holds the endpoint while the change is stored), then
    // stored with the 410's attempt.
    wait_for(
        "the endpoint to be disabled and its 410 recorded",
        || async {
            let (_, h) = sidecar.get_json("/v1/health/hosts").await;
            let d = sidecar.delivery(&first).await;
            (h["disabled_endpoints"] == serde_json::json!(["gone"])
                && d["attempts"][0]["status_code"] == 410)
                .then_some(())
        },
    )
    .await;
    let (_, eps) = sidecar.get_json("/v1/endpoints").await;
    let states: Vec<(&str, bool)> = eps["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["disabled"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, vec![("fine", false), ("gone", true)], "{eps}");
    let second = send(&sidecar, "/e/gone/2").await;
    let d = sidecar.delivery(&first).await;
    assert_eq!(d["status"], "pending", "held, not failed: {d}");
    assert_eq!(d["attempts"][0]["status_code"], 410);
    let m = sidecar.metrics().await;
    assert_eq!(metric(&m, "hookrelay_endpoints_disabled_total"), Some(1.0));

    // The disabling survives a crash; other endpoints keep flowing meanwhile.
    sidecar.kill9();
    sidecar.restart().await;
    let (_, h) = sidecar.get_json("/v1/health/hosts").await;
    assert_eq!(h["disabled_endpoints"], serde_json::json!(["gone"]));
    let fine = send(&sidecar, "/e/fine").await;
    sidecar.wait_status(&fine, "delivered").await;
    let gone_requests = || {
        receiver
            .received()
            .iter()
            .filter(|r| r.target.starts_with("/gone"))
            .count()
    };
    let before = gone_requests();
    assert_eq!(sidecar.delivery(&second).await["attempt_count"], 0);
    // Held deliveries are pending work: listed under their host and counted by the gauge; a
    // cancelled one stops counting.
    let receiver_host = receiver.url("").split('/').nth(2).unwrap().to_string();
    let host_row = || async {
        let (_, hosts) = sidecar.get_json("/v1/hosts").await;
        hosts["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == receiver_host.as_str())
            .cloned()
    };
    let pending_gauge = || async {
        let m = sidecar.metrics().await;
        metric(&m, "hookrelay_queue_depth{status=\"pending\"}")
    };
    let third = send(&sidecar, "/e/gone/3").await;
    wait_for("three deliveries to be held", || async {
        host_row()
            .await
            .filter(|h| h["held_for_disabled_endpoint"] == 3 && h["pending"] == 3)
    })
    .await;
    assert_eq!(pending_gauge().await, Some(3.0));
    let (status, body) = sidecar
        .post_raw(&format!("/v1/deliveries/{third}/cancel"), "")
        .await;
    assert_eq!(status, 200, "{body}");
    let held = host_row().await.expect("still listed");
    assert_eq!(
        (&held["pending"], &held["held_for_disabled_endpoint"]),
        (&serde_json::json!(2), &serde_json::json!(2)),
        "{held}"
    );
    assert_eq!(pending_gauge().await, Some(2.0));

    back.store(true, Ordering::SeqCst);
    // The operator's CLI, over the admin API.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["endpoints", "enable", "gone", "--admin-url"])
        .arg(sidecar.admin_url(""))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("endpoint gone enabled"), "{stdout}");
    sidecar.wait_status(&first, "delivered").await;
    sidecar.wait_status(&second, "delivered").await;
    assert_eq!(gone_requests(), before + 2);
    assert_eq!(sidecar.delivery(&third).await["status"], "cancelled");
    // Released: nothing is left counted as held.
    wait_for("the backlog to empty", || async {
        (pending_gauge().await == Some(0.0) && host_row().await.is_none()).then_some(())
    })
    .await;

    // A name that is neither configured nor disabled (a typo) is not silently "enabled".
    let (status, body) = sidecar.post_raw("/v1/endpoints/gonne/enable", "").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    // Enabling one that is configured and not disabled is fine: nothing to do.
    let (status, body) = sidecar.post_raw("/v1/endpoints/gone/enable", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["was_disabled"], false, "{body}");
}

#[tokio::test]
async fn over_max_pending_ingest_answers_503_overloaded_until_the_backlog_drains() {
    let receiver = Receiver::start(Arc::new(|_, _| Reply::Status(500))).await;
    let sidecar = Sidecar::start(
        "[store]\nmax_pending = 3\n[retry]\ninitial_delay = \"300ms\"\nmax_delay = \"1s\"\nmax_attempts = 2\njitter = 0.0\n",
    )
    .await;
    // Each of the three fails twice, 300 ms apart, before there is room again: at least that
    // long from their first attempts, which come after this.
    let started = Instant::now();
    for i in 0..3 {
        let (status, _) = sidecar
            .send(&receiver.url(&format!("/{i}")), "{}", None)
            .await;
        assert_eq!(status, 202);
    }
    // The scheduler counts the backlog once the commits reach it.
    wait_for("the scheduler to count three", || async {
        let m = sidecar.metrics().await;
        let depth = metric(&m, "hookrelay_queue_depth{status=\"pending\"}").unwrap_or(0.0)
            + metric(&m, "hookrelay_queue_depth{status=\"in_progress\"}").unwrap_or(0.0);
        (depth >= 3.0).then_some(())
    })
    .await;
    let resp = sidecar
        .http
        .post(sidecar.ingest_url(&format!("/{}", receiver.url("/3"))))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["error"]["code"], "overloaded");
    // The three fail after two attempts each; then there is room again.
    wait_for("ingest to accept again", || async {
        let (status, _) = sidecar.send(&receiver.url("/later"), "{}", None).await;
        (status == 202).then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn over_max_bytes_ingest_answers_503_overloaded() {
    let sidecar = Sidecar::start("[store]\nmax_bytes = 1\n").await;
    let (status, json) = sidecar.send("http://127.0.0.1:9/x", "{}", None).await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["error"]["code"], "overloaded");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("store.max_bytes")
    );
}

#[tokio::test]
async fn per_host_concurrency_bounds_attempts_in_flight_to_one_host() {
    let receiver = Receiver::start(Arc::new(|_, _| Reply::Stall(Duration::from_millis(300)))).await;
    let other = Receiver::ok().await;
    let sidecar = Sidecar::start("[delivery]\nper_host_concurrency = 2\nconcurrency = 16\n").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let (_, j) = sidecar
            .send(&receiver.url(&format!("/s/{i}")), "{}", None)
            .await;
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    // A different host is not held up by the slow one.
    let (_, j) = sidecar.send(&other.url("/fast"), "{}", None).await;
    sidecar
        .wait_status(j["id"].as_str().unwrap(), "delivered")
        .await;
    for id in &ids {
        sidecar.wait_status(id, "delivered").await;
    }
    // Arrivals come in pairs, one stall apart: never more than 2 at once.
    let got = receiver.received();
    for w in got.windows(3) {
        assert!(
            w[2].at - w[0].at >= Duration::from_millis(250),
            "three requests within one stall"
        );
    }
}

/// A host with a rate limit gets its attempts spaced at the rate; another host on the same
/// address (a different port) is not held by it.
#[tokio::test]
async fn a_host_rate_limit_spaces_attempts_to_that_host_only() {
    let paced = Receiver::ok().await;
    let other = Receiver::ok().await;
    let port = paced
        .url("/")
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let sidecar = Sidecar::start(&format!(
        "[delivery]\nhost_rates = {{ \"127.0.0.1:{port}\" = \"5/s\" }}\n"
    ))
    .await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let (status, j) = sidecar
            .send(&paced.url(&format!("/p/{i}")), "{}", None)
            .await;
        assert_eq!(status, 202, "{j}");
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    let (_, j) = sidecar.send(&other.url("/free"), "{}", None).await;
    let free = j["id"].as_str().unwrap().to_string();
    let (_, hosts) = sidecar.get_json("/v1/hosts").await;
    let row = hosts["data"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["host"] == format!("127.0.0.1:{port}")))
        .cloned();
    sidecar.wait_status(&free, "delivered").await;
    assert!(
        paced.count() < 12,
        "the other host did not wait for the paced one"
    );
    for id in &ids {
        sidecar.wait_status(id, "delivered").await;
    }
    // One every 200 ms, no burst.
    let got = paced.received();
    assert_eq!(got.len(), 12);
    for (i, r) in got.iter().enumerate().skip(1) {
        let since_first = r.at - got[0].at;
        let due = Duration::from_millis(200 * i as u64);
        assert!(
            since_first + Duration::from_millis(50) >= due,
            "request {i} came {since_first:?} after the first, due no earlier than {due:?}"
        );
    }
    if let Some(row) = row {
        assert_eq!(row["rate_limit"], "5/s", "{row}");
    } else {
        panic!("the paced host was not listed while it had work: {hosts}");
    }
}

/// Credentials in a target's userinfo or in a credential-looking query parameter are kept for
/// delivery but never shown: not by the admin API, not in an attempt's error, not in the log;
/// and a listing's target filter sees only the shown form, so it cannot be used to guess them.
#[tokio::test]
async fn credentials_in_a_target_are_delivered_but_never_shown() {
    let receiver = Receiver::ok().await;
    // The guard reports instead of refusing, so its log line (which names the target) is written.
    let sidecar = Sidecar::start_with_env(
        FAST_RETRY,
        &[
            ("HOOKRELAY_EGRESS__ALLOW_CIDRS", "[]"),
            ("HOOKRELAY_EGRESS__MODE", "report"),
        ],
    )
    .await;
    let port = receiver.addr.port();
    let (status, json) = sidecar
        .send(
            &format!("http://hook:s3cret@127.0.0.1:{port}/in"),
            "{}",
            None,
        )
        .await;
    assert_eq!(status, 202, "{json}");
    let delivered = json["id"].as_str().unwrap().to_string();
    // Delivered with the credentials (as HTTP Basic auth).
    let got = receiver.wait_count(1).await;
    let auth = got[0]
        .header("authorization")
        .unwrap_or_default()
        .to_string();
    assert_eq!(auth, "Basic aG9vazpzM2NyZXQ=", "{auth}");
    // A request that carries its own Authorization keeps it, and only it.
    let resp = sidecar
        .http
        .post(sidecar.ingest_url(&format!("/http://hook:s3cret@127.0.0.1:{port}/own")))
        .header("authorization", "Bearer zzz")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let got = receiver.wait_count(2).await;
    let own = got.iter().find(|r| r.target == "/own").unwrap();
    let auths: Vec<_> = own
        .headers
        .iter()
        .filter(|(n, _)| n == "authorization")
        .collect();
    assert_eq!(auths.len(), 1, "{auths:?}");
    assert_eq!(auths[0].1, "Bearer zzz");
    let d = sidecar.wait_status(&delivered, "delivered").await;
    let shown = format!("http://***@127.0.0.1:{port}/in");
    assert_eq!(d["target"], shown.as_str());

    // The target filter matches the shown form, and not a guess at the password.
    let count = |body: &serde_json::Value| body["data"].as_array().unwrap().len();
    let (_, found) = sidecar
        .get_json(&format!("/v1/deliveries?target={shown}"))
        .await;
    assert_eq!(count(&found), 1, "{found}");
    let (_, guess) = sidecar
        .get_json("/v1/deliveries?target=http://hook:s")
        .await;
    assert_eq!(count(&guess), 0, "{guess}");

    // A query token (Azure's `code`, an `access_token`) is delivered as sent and shown as `***`.
    let (status, json) = sidecar
        .send(
            &format!("http://127.0.0.1:{port}/q?code=az5ecret&page=2&access_token=at0ken"),
            "{}",
            None,
        )
        .await;
    assert_eq!(status, 202, "{json}");
    let queried = json["id"].as_str().unwrap().to_string();
    let got = receiver.wait_count(3).await;
    assert!(
        got.iter()
            .any(|r| r.target == "/q?code=az5ecret&page=2&access_token=at0ken"),
        "{got:?}"
    );
    let d = sidecar.wait_status(&queried, "delivered").await;
    let shown_query = format!("http://127.0.0.1:{port}/q?code=***&page=2&access_token=***");
    assert_eq!(d["target"], shown_query.as_str());

    // A failed attempt's error does not repeat them either (port 1: nothing listens).
    let (_, json) = sidecar
        .send("https://tok3n@127.0.0.1:1/x?api_key=k3yq", "{}", None)
        .await;
    let failed = json["id"].as_str().unwrap().to_string();
    let d = sidecar.wait_status(&failed, "failed").await;
    assert!(d["attempts"][0]["error"].as_str().unwrap().len() > 5, "{d}");
    let (_, list) = sidecar.get_json("/v1/deliveries").await;
    wait_for("the egress guard's report in the log", || async {
        sidecar.log().contains("egress guard").then_some(())
    })
    .await;
    let log = sidecar.log();
    assert!(log.contains("***@127.0.0.1"), "{log}");
    let everything = format!("{d}{list}{log}");
    for secret in ["s3cret", "tok3n", "az5ecret", "at0ken", "k3yq"] {
        assert!(!everything.contains(secret), "{secret} shown: {everything}");
    }
}

/// A web page open in a browser on the same machine can reach localhost. It must not be able
/// to send webhooks through ingest, change anything through the admin API from its own origin,
/// or (without a token) read the admin API through a name of its own re-pointed at 127.0.0.1.
#[tokio::test]
async fn web_pages_cannot_use_ingest_or_the_admin_api() {
    let receiver = Receiver::ok().await;
    let mut sidecar = Sidecar::start("").await;
    let http = &sidecar.http;
    let code = |v: &serde_json::Value| v["error"]["code"].as_str().unwrap_or_default().to_string();

    // Ingest: anything a browser marks is refused, nothing stored.
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let resp = http
            .post(sidecar.ingest_url(&format!("/{}", receiver.url("/forged"))))
            .header(name, value)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{name}");
        assert_eq!(
            code(&resp.json::<serde_json::Value>().await.unwrap()),
            "browser_request_refused"
        );
    }
    assert_eq!(sidecar.stats().await["counts"]["pending"], 0);

    // Admin, no token: a change from another origin is refused...
    let pause = |headers: &[(&str, &str)]| {
        let mut req = http
            .post(sidecar.admin_url("/v1/pause"))
            .header("content-type", "text/plain")
            .body("{}");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.send()
    };
    for headers in [
        &[("origin", "http://evil.example")][..],
        &[("sec-fetch-site", "cross-site")][..],
        &[("origin", "null")][..],
    ] {
        let resp = pause(headers).await.unwrap();
        assert_eq!(resp.status(), 403, "{headers:?}");
        assert_eq!(
            code(&resp.json::<serde_json::Value>().await.unwrap()),
            "cross_origin_refused"
        );
    }
    assert_eq!(sidecar.get_json("/v1/pause").await.1["paused"], false);
    // ...one from the dashboard's own origin is not, even behind a proxy that rewrote Host
    // (the browser's Sec-Fetch-Site says same-origin).
    let own = format!("http://{}", sidecar.admin);
    let resp = pause(&[("origin", &own), ("sec-fetch-site", "same-origin")])
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = pause(&[
        ("origin", "https://ops.example.com"),
        ("sec-fetch-site", "same-origin"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);

    // Without a token, a name that is not an address, localhost or allowed is refused (DNS
    // rebinding), but the probes and /metrics still answer to any name.
    let get = |path: &str, host: &str| {
        http.get(sidecar.admin_url(path))
            .header("host", host.to_string())
            .send()
    };
    let port = sidecar.admin.port();
    let rebound = format!("rebind.attacker.test:{port}");
    let resp = get("/v1/deliveries", &rebound).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        code(&resp.json::<serde_json::Value>().await.unwrap()),
        "host_not_allowed"
    );
    assert_eq!(get("/readyz", &rebound).await.unwrap().status(), 200);
    assert_eq!(get("/metrics", &rebound).await.unwrap().status(), 200);
    for host in [
        format!("localhost:{port}"),
        format!("localhost.:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(
            get("/v1/stats", &host).await.unwrap().status(),
            200,
            "{host}"
        );
    }
    // A name the operator allows is answered.
    sidecar.kill9();
    sidecar.set_extra_config("[admin]\nallowed_hosts = [\"hookrelay\"]\n");
    sidecar.restart().await;
    let http = &sidecar.http;
    let resp = http
        .get(sidecar.admin_url("/v1/stats"))
        .header("host", format!("HookRelay:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
