//! The dashboard end to end: the real sidecar (with an admin token) and a scripted receiver,
//! driven through headless Chromium. Every page is opened and checked against what the API
//! says; pause and resume (global and per host), cancel, a single replay and a dry-run-then-
//! confirm batch replay are done by clicking. Screenshots land in `target/ui-screenshots/`;
//! with `HOOKRELAY_UPDATE_DOCS_SCREENSHOTS=1` the overview and delivery detail are also
//! copied to `docs/` for the README.

use std::sync::Arc;

use serde_json::{Value, json};

mod pages;

use crate::browser::Browser;
use crate::harness::{FAST_RETRY, Receiver, Reply, Sidecar, wait_for};

const TOKEN: &str = "ui-test-token-0123456789";

/// The receiver: `/ok...` succeeds, `/gone` is a permanent 410, `/flaky` and `/later` are
/// always 503.
async fn receiver() -> Receiver {
    Receiver::start(Arc::new(|r, _| {
        if r.target.starts_with("/gone") {
            Reply::Full(410, vec![], "gone for good".into())
        } else if r.target.starts_with("/flaky") || r.target.starts_with("/later") {
            Reply::Full(503, vec![], "{\"error\":\"upstream busy\"}".into())
        } else {
            Reply::Full(200, vec![], "{\"received\":true}".into())
        }
    }))
    .await
}

async fn api(s: &Sidecar, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = s
        .http
        .request(method.parse().unwrap(), s.admin_url(path))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn api_get(s: &Sidecar, path: &str) -> Value {
    let (status, body) = api(s, "GET", path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn wait_status(s: &Sidecar, id: &str, status: &str) -> Value {
    wait_for(&format!("{id} to be {status}"), || async {
        let d = api_get(s, &format!("/v1/deliveries/{id}")).await;
        (d["status"] == status).then_some(d)
    })
    .await
}

/// Ingests one webhook with extra headers and returns its id.
async fn send(s: &Sidecar, target: &str, body: &str, headers: &[(&str, &str)]) -> String {
    let mut req = s
        .http
        .post(s.ingest_url(&format!("/{target}")))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let v: Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Controls without a label, on the page as it is now (must be none).
async fn unlabelled(b: &Browser) -> Value {
    b.js(
        "return [...document.querySelectorAll('input, select, button')]
            .filter(e => !e.closest('dialog:not([open])'))
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !(e.tagName === 'BUTTON' && e.textContent.trim()))
            .map(e => e.outerHTML);",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_end_to_end() {
    let a = receiver().await;
    let b_recv = Receiver::ok().await;
    // The `later` endpoint retries after ten minutes, so a delivery to it waits with a countdown.
    // Receiver B's host has a rate limit, which its row on the hosts page shows.
    let mut s = Sidecar::start(&format!(
        "{FAST_RETRY}[admin]\ntoken = \"{TOKEN}\"\n\
         [delivery]\nhost_rates = {{ \"127.0.0.1:{}\" = \"50/s\" }}\n\
         [endpoints.later]\nurl = \"{}\"\nsecret = \"{}\"\n\
         [endpoints.later.retry]\ninitial_delay = \"10m\"\nmax_delay = \"1h\"\n",
        b_recv.addr.port(),
        a.url("/later"),
        pages::LATER_SECRET,
    ))
    .await;
    let b = Browser::start().await;
    let ui = s.admin_url("/ui/");

    // Three delivered, two failed at once (410), one failed after five 503s.
    let mut ok = Vec::new();
    for n in 1..=3 {
        let auth = "Bearer app-secret-123";
        let key = format!("ord-{n}");
        let headers: &[(&str, &str)] = if n == 1 {
            &[("authorization", auth), ("idempotency-key", &key)]
        } else {
            &[("idempotency-key", &key)]
        };
        ok.push(
            send(
                &s,
                &a.url(&format!("/ok/{n}")),
                &format!("{{\"order\":{n}}}"),
                headers,
            )
            .await,
        );
    }
    let gone = [
        send(&s, &a.url("/gone"), "{\"n\":1}", &[]).await,
        send(&s, &a.url("/gone"), "{\"n\":2}", &[]).await,
    ];
    let flaky = send(
        &s,
        &a.url("/flaky"),
        "{\"order\":42,\"items\":[{\"sku\":\"A-1\",\"qty\":2}],\"note\":\"pretty me\"}",
        &[
            ("x-webhook-secret", "shh-42"),
            ("x-request-id", "req-9"),
            ("idempotency-key", "order-42-v1"),
        ],
    )
    .await;
    for id in &ok {
        wait_status(&s, id, "delivered").await;
    }
    for id in gone.iter().chain([&flaky]) {
        wait_status(&s, id, "failed").await;
    }

    // The token is asked for once; a wrong one is refused.
    b.goto(&ui).await;
    b.text("#token-form").await;
    assert_eq!(
        b.count("#overview").await,
        0,
        "nothing shows without the token"
    );
    b.fill("#token-input", "wrong").await;
    b.click("#token-form button[type=submit]").await;
    b.wait_text("#token-form", "That token was refused").await;
    b.shot("token").await;
    b.fill("#token-input", TOKEN).await;
    b.click("#token-form button[type=submit]").await;
    pages::overview(&b, &s).await;

    // Kept for this tab only.
    let kept = b
        .js("return [sessionStorage.getItem('hookrelay.token'), localStorage.length, document.cookie];")
        .await;
    assert_eq!(kept, json!([TOKEN, 0, ""]));

    pages::pause_and_hosts(&b, &s, &b_recv).await;
    pages::deliveries(&b, &gone, &flaky).await;
    pages::detail(&b, &s, &ok[0], &flaky).await;
    pages::replays(&b, &s, &a, &gone).await;
    pages::cancel(&b, &s, &a).await;
    pages::phone(&b, &flaky).await;

    // "Forget token" locks the dashboard again.
    b.click("#forget-token").await;
    b.text("#token-form").await;
    assert_eq!(unlabelled(&b).await, json!([]));
    assert_eq!(
        b.js("return sessionStorage.getItem('hookrelay.token');")
            .await,
        Value::Null
    );
    b.fill("#token-input", TOKEN).await;
    b.click("#token-form button[type=submit]").await;
    b.text("main[data-rendered] h1").await;

    assert_eq!(b.console_errors().await, Vec::<String>::new());

    // Nothing was loaded from anywhere but the sidecar.
    let foreign = b
        .js(
            "return performance.getEntriesByType('resource').map(e => e.name)
                 .filter(n => !n.startsWith(location.origin));",
        )
        .await;
    assert_eq!(
        foreign,
        json!([]),
        "the dashboard loaded something from elsewhere"
    );

    // Server unreachable: the open overview says so on its next refresh.
    b.goto(&format!("{ui}#/")).await;
    b.text("#count-delivered").await;
    s.kill9();
    b.wait_text("#overview", "Server unreachable").await;
    b.shot("unreachable").await;
    b.close().await;
}

/// With HOOKRELAY_UPDATE_DOCS_SCREENSHOTS=1, refreshes the README's screenshot in `docs/`.
fn docs_copy(shot: &std::path::Path, name: &str) {
    if std::env::var_os("HOOKRELAY_UPDATE_DOCS_SCREENSHOTS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(shot, docs.join(name)).unwrap();
    }
}

/// A fresh sidecar without a token: no token form, and every page says there is nothing yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_empty_states() {
    let s = Sidecar::start(FAST_RETRY).await;
    let b = Browser::start().await;
    let ui = s.admin_url("/ui/");
    b.goto(&ui).await;
    b.wait_text("#overview", "No deliveries yet").await;
    assert_eq!(b.count("#token-form").await, 0);
    assert_eq!(b.count("#forget-token:not([hidden])").await, 0);
    b.wait_text("#overview", "No attempts in the last 60 minutes")
        .await;
    b.wait_text("#overview", "No host has pending work").await;
    b.shot("empty-overview").await;
    b.goto(&format!("{ui}#/deliveries")).await;
    b.wait_text("#no-deliveries", "No deliveries yet").await;
    b.goto(&format!("{ui}#/replays")).await;
    b.wait_text("#nothing-to-replay", "Nothing failed yet")
        .await;
    b.wait_text("#no-batches", "No replay batches yet").await;
    b.goto(&format!("{ui}#/hosts")).await;
    b.wait_text("#no-hosts", "No host has pending work").await;
    b.goto(&format!("{ui}#/deliveries/dlv_01KB0000000000000000000000"))
        .await;
    b.wait_text("main", "Delivery not found").await;
    b.goto(&format!("{ui}#/nowhere")).await;
    b.wait_text("main", "No such page").await;
    assert_eq!(b.console_errors().await, Vec::<String>::new());
    b.close().await;
}
