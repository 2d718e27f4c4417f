//! The dashboard test's steps, one page (or one action) each, in the order the test runs them.

use serde_json::{Value, json};

use super::{api_get, docs_copy, send, unlabelled, wait_status};
use crate::browser::{Browser, ENTER};
use crate::harness::{Receiver, Sidecar, wait_for};

pub(super) async fn overview(b: &Browser, s: &Sidecar) {
    b.wait_text("#count-delivered .n", "3").await;
    let stats = api_get(s, "/v1/stats").await;
    for state in ["delivered", "failed", "pending", "cancelled"] {
        let shown = b.text(&format!("#count-{state} .n")).await;
        assert_eq!(shown, stats["counts"][state].to_string(), "{state} tile");
    }
    // 10 attempts (3 + 2 + 5), 3 succeeded.
    assert_eq!(b.text("#success-rate").await, "30 %");
    b.wait_text(
        "#overview",
        "10 attempts in the last 60 minutes, 30 % succeeded",
    )
    .await;
    assert_eq!(b.count("#overview svg.chart").await, 2);
    // One bar per minute with successes: one, or two when the test ran across a minute's end.
    let series = api_get(s, "/v1/series").await;
    let minutes_with_successes = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["successes"].as_u64() > Some(0))
        .count();
    assert!((1..=2).contains(&minutes_with_successes), "{series}");
    assert_eq!(
        b.count("svg.chart rect.ok").await,
        minutes_with_successes,
        "a bar per minute of successes"
    );
    b.wait_text("#overview", "Attempt latency: median").await;
    b.wait_text("#pause-state", "Delivery is running").await;
    b.wait_text("#pause-pill", "Delivering").await;
    assert_eq!(unlabelled(b).await, json!([]));
    b.shot("overview").await;
}

/// The `later` endpoint's ed25519 secret (RFC 8032's first key) and the public key the hosts
/// page shows for it.
pub(super) const LATER_SECRET: &str = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
const LATER_PUBLIC: &str = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

pub(super) async fn pause_and_hosts(b: &Browser, s: &Sidecar, b_recv: &Receiver) {
    // Keyboard only: Tab to the pause button, Enter, type the reason, Enter.
    b.tab_to("#pause").await;
    b.keys(ENTER).await;
    b.text("dialog[open] #confirm-title").await;
    b.keys(&format!("deploying the receiver{ENTER}")).await;
    b.wait_gone("dialog[open]").await;
    b.wait_text("#pause-state", "Delivery is paused").await;
    b.wait_text("#pause-reason", "deploying the receiver").await;
    b.wait_text("#pause-pill", "Delivery paused").await;
    let p = api_get(s, "/v1/pause").await;
    assert_eq!(p["paused"], true);
    assert_eq!(p["reason"], "deploying the receiver");

    // Held while paused: it shows as pending on the overview and under its host.
    let held = send(s, &b_recv.url("/held"), "{\"held\":true}", &[]).await;
    b.wait_text("#count-pending .n", "1").await;
    let host = format!("127.0.0.1:{}", b_recv.addr.port());
    b.wait_text("#top-hosts + div", &host).await;
    assert_eq!(b_recv.count(), 0);
    // The README's overview: paused, with a reason and a host waiting.
    b.resize(1280, 1000).await;
    let shot = b.shot("overview-paused").await;
    b.resize(1280, 900).await;
    docs_copy(&shot, "dashboard-overview.png");

    b.click("nav a[data-page=hosts]").await;
    let row = format!("tr[data-host=\"{host}\"]");
    b.wait_text(&row, "1").await;
    b.wait_text(&row, "50/s").await;
    // The configured endpoints below the hosts, with the public key of `later`'s ed25519 secret.
    let later = "#endpoints tr[data-endpoint=\"later\"]";
    b.wait_text(later, LATER_PUBLIC).await;
    b.wait_text(later, "enabled").await;
    b.wait_text(later, "v1a").await;
    let slug = host.replace(['.', ':'], "-");
    b.click(&format!("#pause-{slug}")).await;
    b.confirm(Some("receiver B maintenance")).await;
    b.wait_text(&row, "receiver B maintenance").await;
    let hosts = api_get(s, "/v1/hosts").await;
    let listed = hosts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host.as_str())
        .unwrap();
    assert_eq!(listed["paused"], true);
    assert_eq!(unlabelled(b).await, json!([]));
    b.shot("hosts").await;
    b.wait_text("#global-pause-note", "paused globally").await;
    b.click(&format!("#resume-{slug}")).await;
    b.confirm(None).await;
    b.wait_text(&row, "held by the global pause").await;
    // Retry now: its one delivery is already due (the global pause holds it).
    b.click(&format!("#retry-{slug}")).await;
    b.confirm(None).await;
    b.wait_text(
        "#hosts .msg",
        &format!("1 pending deliveries to {host} are due now (0 brought forward)"),
    )
    .await;
    assert_eq!(b_recv.count(), 0);

    // Resume everything from the overview: the held delivery goes out.
    b.click("nav a[data-page=overview]").await;
    b.click("#resume").await;
    b.confirm(None).await;
    b.wait_text("#pause-state", "Delivery is running").await;
    wait_status(s, &held, "delivered").await;
    assert_eq!(b_recv.count(), 1);
}

pub(super) async fn deliveries(b: &Browser, gone: &[String; 2], flaky: &str) {
    b.click("#count-failed").await;
    b.wait_text("#results", "Deliveries, newest first").await;
    assert_eq!(b.count("#results tbody tr").await, 3);
    for id in gone.iter().map(String::as_str).chain([flaky]) {
        assert_eq!(b.count(&format!("#results tr[data-id=\"{id}\"]")).await, 1);
    }
    assert_eq!(unlabelled(b).await, json!([]));
    b.shot("deliveries").await;

    // Cursor paging, two rows a page: newest first, then older, then back.
    let ui = b.client.current_url().await.unwrap();
    let base = ui.as_str().split('#').next().unwrap().to_string();
    b.goto(&format!("{base}#/deliveries?status=failed&limit=2"))
        .await;
    b.wait_text("#results", "2 shown").await;
    let first_page = b.text("#results tbody").await;
    assert!(
        first_page.contains(flaky) && first_page.contains(&gone[1]),
        "{first_page}"
    );
    assert_eq!(b.count("#newer").await, 0);
    b.click("#older").await;
    b.wait_text("#results", "1 shown").await;
    b.wait_text("#results tbody", &gone[0]).await;
    assert_eq!(
        b.count("#older").await,
        0,
        "the last page has no older link"
    );
    b.click("#newer").await;
    b.wait_text("#results tbody", flaky).await;
    b.wait_text("#results", "2 shown").await;

    // A time range keeps them (created in the last 15 minutes).
    b.select("#f-range", "15m").await;
    b.click("#filters button[type=submit]").await;
    b.wait_text("#results", "3 shown").await;

    // Filters: failed with a permanent 4xx are the two 410s.
    b.select("#f-classification", "HTTP_4XX_PERMANENT").await;
    b.click("#filters button[type=submit]").await;
    wait_for("the filtered table", || async {
        (b.count("#results tbody tr").await == 2).then_some(())
    })
    .await;
    // A filter nothing matches says so.
    b.fill("#f-endpoint", "no-such-endpoint").await;
    b.click("#filters button[type=submit]").await;
    b.wait_text("#no-deliveries", "No deliveries match these filters")
        .await;

    // The id search opens the detail.
    b.fill("#search-id", flaky).await;
    b.click("form.search button[type=submit]").await;
    b.wait_text("#delivery-id", flaky).await;
}

pub(super) async fn detail(b: &Browser, s: &Sidecar, ok: &str, flaky: &str) {
    assert_eq!(b.text("#method").await, "POST");
    assert!(b.text("#target").await.ends_with("/flaky"));
    let headers = b.text("#headers").await;
    assert!(headers.contains("x-webhook-secret [redacted]"), "{headers}");
    assert!(headers.contains("x-request-id req-9"), "{headers}");
    let body = b.text("#body-preview").await;
    assert!(
        body.contains("\"items\": [\n    {\n      \"sku\": \"A-1\""),
        "not pretty: {body}"
    );
    assert_eq!(b.text("#idempotency-key").await, "order-42-v1");
    assert_eq!(b.count("#timeline li").await, 5);
    b.wait_text("#timeline li:last-child details[open]", "upstream busy")
        .await;
    let first = b.text("#timeline li:first-child").await;
    assert!(
        first.contains("HTTP 503") && first.contains("HTTP_5XX_RETRYABLE"),
        "{first}"
    );
    let source = b.client.source().await.unwrap();
    assert!(
        !source.contains("shh-42"),
        "a secret header value reached the page"
    );
    assert_eq!(
        b.count("#cancel").await,
        0,
        "a failed delivery cannot be cancelled"
    );
    assert_eq!(unlabelled(b).await, json!([]));
    // Tall enough to show the whole page, timeline included.
    b.resize(1280, 1500).await;
    let shot = b.shot("delivery-detail").await;
    b.resize(1280, 900).await;
    docs_copy(&shot, "dashboard-delivery.png");

    // Replay this one: a new delivery that points back at it.
    b.click("#replay").await;
    b.confirm(Some("receiver fixed")).await;
    b.wait_text("#action-msg", "Replayed as").await;
    b.click("#action-msg a[href^=\"#/deliveries/\"]").await;
    b.wait_text("main", "Replay of").await;
    b.wait_text("main .facts", flaky).await;
    let new_id = b.text("#delivery-id").await;
    assert_ne!(new_id, flaky);
    let d = api_get(s, &format!("/v1/deliveries/{new_id}")).await;
    assert_eq!(d["replay_of"], flaky);
    assert_eq!(b.text("#batch-link").await, d["batch_id"].as_str().unwrap());

    // A delivered one: its idempotency key, and the app's Authorization redacted.
    b.goto(&format!("{}#/deliveries/{ok}", s.admin_url("/ui/")))
        .await;
    b.wait_text("#idempotency-key", "ord-1").await;
    b.wait_text("#headers", "authorization [redacted]").await;
    assert!(!b.client.source().await.unwrap().contains("app-secret-123"));
    b.wait_text("#timeline", "SUCCESS").await;
    assert_eq!(b.count("#replay").await + b.count("#cancel").await, 0);
}

pub(super) async fn replays(b: &Browser, s: &Sidecar, a: &Receiver, gone: &[String; 2]) {
    b.click("nav a[data-page=replays]").await;
    b.wait_text("#history", "Batch history").await;
    for id in gone {
        b.click(&format!("#pick-table input[value=\"{id}\"]")).await;
    }
    b.wait_text("#picked-count", "2 selected").await;
    b.click("#dry-run-selected").await;
    b.wait_text("#review-summary", "2 deliveries would be replayed")
        .await;
    let listed = b.text("#would-replay").await;
    assert!(
        gone.iter().all(|id| listed.contains(id.as_str())),
        "{listed}"
    );
    // The dry run created nothing and is in the audit trail.
    b.wait_text("#history tbody", "dry run").await;
    b.fill("#replay-reason", "410s were a config mistake").await;
    b.shot("replays-review").await;
    b.click("#confirm-replay").await;
    b.wait_text("#done-summary", "created 2 new deliveries")
        .await;
    b.wait_text("#history tbody", "410s were a config mistake")
        .await;
    assert_eq!(unlabelled(b).await, json!([]));
    b.shot("replays").await;

    let batches = api_get(s, "/v1/batches").await;
    let newest = &batches["data"][0];
    assert_eq!(newest["dry_run"], false);
    assert_eq!(newest["reason"], "410s were a config mistake");
    assert_eq!(newest["created"].as_array().unwrap().len(), 2);
    assert_eq!(batches["data"][1]["dry_run"], true);
    // The replays reached the receiver: two first tries, two replays.
    wait_for("the replayed 410s at the receiver", || async {
        let n = a.received().iter().filter(|r| r.target == "/gone").count();
        (n == 4).then_some(())
    })
    .await;

    // By filter: a dry run, reviewed and discarded.
    b.select("#r-class", "HTTP_4XX_PERMANENT").await;
    b.click("#dry-run-filter").await;
    b.wait_text("#review-summary", "would be replayed").await;
    b.click("#discard").await;
    b.wait_gone("#review-form").await;

    // One batch's page.
    let id = newest["id"].as_str().unwrap();
    b.click(&format!("#history a[href=\"#/replays/{id}\"]"))
        .await;
    b.wait_text("#batch-reason", "410s were a config mistake")
        .await;
    b.shot("batch").await;
}

/// A delivery waiting for its next attempt: the countdown ticks, "retry now" attempts it at
/// once, and cancel stops it.
pub(super) async fn cancel(b: &Browser, s: &Sidecar, a: &Receiver) {
    let resp = s
        .http
        .post(s.ingest_url("/e/later/x"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the first attempt to `later`", || async {
        let d = api_get(s, &format!("/v1/deliveries/{id}")).await;
        (d["attempt_count"] == 1).then_some(())
    })
    .await;
    b.goto(&format!("{}#/deliveries/{id}", s.admin_url("/ui/")))
        .await;
    let first = b.wait_text("#countdown", "in 9 min").await;
    wait_for("the countdown to tick", || async {
        (b.text("#countdown").await != first).then_some(())
    })
    .await;
    b.wait_text("main .facts", "later").await;
    b.wait_text("#timeline", "HTTP 503").await;
    assert_eq!(
        b.count("#replay").await,
        0,
        "a pending delivery cannot be replayed"
    );
    b.shot("delivery-pending").await;
    // Retry now: a second attempt at once instead of in ten minutes (503 again here).
    b.click("#retry-now").await;
    b.confirm(None).await;
    wait_for("the attempt retried now", || async {
        let d = api_get(s, &format!("/v1/deliveries/{id}")).await;
        (d["attempt_count"] == 2).then_some(())
    })
    .await;
    b.wait_text("#timeline", "#2").await;
    b.click("#cancel").await;
    b.confirm(None).await;
    b.wait_text(".title-row", "cancelled").await;
    wait_status(s, &id, "cancelled").await;
    assert_eq!(b.count("#countdown").await, 0);
    assert_eq!(
        b.count("#replay").await,
        1,
        "a cancelled delivery can be replayed"
    );
    let later = a
        .received()
        .iter()
        .filter(|r| r.target.starts_with("/later"))
        .count();
    assert_eq!(
        later, 2,
        "cancelled after two attempts, the second retried now"
    );
}

/// Phone width: nothing wider than the screen, on the overview and a detail.
pub(super) async fn phone(b: &Browser, flaky: &str) {
    b.resize(390, 844).await;
    let detail = format!("#/deliveries/{flaky}");
    for (hash, name) in [
        ("#/", "overview-phone"),
        ("#/deliveries?status=failed", "deliveries-phone"),
        (&detail[..], "detail-phone"),
        ("#/replays", "replays-phone"),
        ("#/hosts", "hosts-phone"),
    ] {
        b.client
            .execute("location.hash = arguments[0];", vec![json!(hash)])
            .await
            .unwrap();
        b.text(&format!("main[data-rendered=\"{hash}\"] h1")).await;
        let fits = b
            .js("return document.documentElement.scrollWidth <= window.innerWidth;")
            .await;
        if fits != json!(true) {
            let wide = b
                .js("return [...document.querySelectorAll('main *')]
                     .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                     .slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right));")
                .await;
            panic!("{hash} is wider than a phone: {wide}");
        }
        b.shot(name).await;
    }
    b.resize(1280, 900).await;
}
