//! The admin API against a live sidecar: listings with filters and cursors, cancel, stats,
//! JSON errors, token auth, and the OpenAPI document matching the routes.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::harness::*;

/// `/ok/*` answers 200, `/bad/*` 400 (failed after one attempt).
async fn ok_and_bad_receiver() -> Receiver {
    Receiver::start(Arc::new(|r, _| {
        if r.target.starts_with("/bad/") {
            Reply::Status(400)
        } else {
            Reply::Status(200)
        }
    }))
    .await
}

async fn send_ok(sidecar: &Sidecar, target: &str) -> String {
    let (status, json) = sidecar.send(target, "{}", None).await;
    assert_eq!(status, 202, "{json}");
    json["id"].as_str().unwrap().to_string()
}

/// Sends one webhook per target at once (the writer commits them in groups) and returns the
/// ids in creation order.
async fn send_all(sidecar: &Sidecar, targets: Vec<String>) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for target in targets {
        let (http, url) = (
            sidecar.http.clone(),
            sidecar.ingest_url(&format!("/{target}")),
        );
        tasks.spawn(async move {
            let resp = http.post(url).body("{}").send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 202);
            let json: Value = resp.json().await.unwrap();
            json["id"].as_str().unwrap().to_string()
        });
    }
    let mut ids = tasks.join_all().await;
    // Ids are time-ordered ULIDs, so their text sorts in creation order.
    ids.sort();
    ids
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

async fn list(sidecar: &Sidecar, query: &str) -> Value {
    let (status, body) = sidecar.get_json(&format!("/v1/deliveries?{query}")).await;
    assert_eq!(status, 200, "?{query}: {body}");
    body
}

#[tokio::test]
async fn listing_filters_and_pages_over_hundreds_of_deliveries() {
    let receiver = ok_and_bad_receiver().await;
    let sidecar = Sidecar::start(FAST_RETRY).await;
    let targets = (0..100)
        .flat_map(|i| {
            [
                receiver.url(&format!("/ok/{i}")),
                receiver.url(&format!("/bad/{i}")),
            ]
        })
        .collect();
    send_all(&sidecar, targets).await;
    sidecar.wait_count("delivered", 100).await;
    sidecar.wait_count("failed", 100).await;
    // Paused, so the next ones stay pending.
    let (status, _) = sidecar.post_json("/v1/pause", json!({})).await;
    assert_eq!(status, 200);
    let held = send_all(
        &sidecar,
        (0..60)
            .map(|i| receiver.url(&format!("/held/{i}")))
            .collect(),
    )
    .await;

    // Everything, newest first, in one page and in pages of 70 via the cursor.
    let all = list(&sidecar, "limit=500").await;
    let all_ids = ids(&all);
    assert_eq!(all_ids.len(), 260);
    assert_eq!(all["next_cursor"], Value::Null);
    assert_eq!(all_ids[0], *held.last().unwrap(), "newest first");
    let mut sorted = all_ids.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(sorted, all_ids, "ids descend");
    let mut paged = Vec::new();
    let mut query = "limit=70".to_string();
    let mut pages = 0;
    loop {
        let page = list(&sidecar, &query).await;
        pages += 1;
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("limit=70&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, all_ids);
    assert_eq!(pages, 4);

    // Filters.
    let failed = list(&sidecar, "status=failed&limit=500").await;
    assert_eq!(ids(&failed).len(), 100);
    assert!(
        failed["data"].as_array().unwrap().iter().all(|d| {
            d["status"] == "failed" && d["last_classification"] == "HTTP_4XX_PERMANENT"
        })
    );
    assert_eq!(ids(&list(&sidecar, "status=pending&limit=500").await), {
        let mut h = held.clone();
        h.reverse();
        h
    });
    let success = list(&sidecar, "classification=SUCCESS&limit=500").await;
    assert_eq!(ids(&success).len(), 100);
    // /bad/1, /bad/10../bad/19: prefix match on the target URL.
    let prefix = receiver.url("/bad/1");
    let by_target = list(&sidecar, &format!("target={prefix}&limit=500")).await;
    assert_eq!(ids(&by_target).len(), 11);
    let first_held = sidecar.delivery(&held[0]).await;
    let since = first_held["created_at"].as_str().unwrap();
    let newer = list(&sidecar, &format!("since={since}&limit=500")).await;
    assert_eq!(ids(&newer).len(), 60);
    let older = list(&sidecar, &format!("until={since}&limit=500")).await;
    assert_eq!(ids(&older).len(), 200);
    let both = list(
        &sidecar,
        &format!("status=delivered&until={since}&limit=10"),
    )
    .await;
    assert_eq!(ids(&both).len(), 10);
    assert!(both["next_cursor"].is_string());

    // Stats come from counters, not a scan, and match.
    let stats = sidecar.stats().await;
    assert_eq!(stats["counts"]["pending"], 60);
    assert_eq!(stats["counts"]["delivered"], 100);
    assert_eq!(stats["counts"]["failed"], 100);
    assert_eq!(stats["paused"], true);
    assert!(stats["oldest_pending_age_seconds"].is_u64());

    // Cancel: pending only.
    let (status, cancelled) = sidecar
        .post_json(&format!("/v1/deliveries/{}/cancel", held[0]), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["finished_at"].is_string());
    let (status, again) = sidecar
        .post_json(&format!("/v1/deliveries/{}/cancel", held[0]), json!({}))
        .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("not_pending"))
    );
    let delivered = ids(&success)[0].clone();
    let (status, _) = sidecar
        .post_json(&format!("/v1/deliveries/{delivered}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409);
    let text = sidecar.metrics().await;
    assert_eq!(
        metric(
            &text,
            "hookrelay_deliveries_finished_total{status=\"cancelled\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "hookrelay_deliveries_finished_total{status=\"delivered\"}"
        ),
        Some(100.0)
    );
    assert_eq!(
        metric(
            &text,
            "hookrelay_ingest_requests_total{outcome=\"accepted\"}"
        ),
        Some(260.0)
    );
    assert_eq!(metric(&text, "hookrelay_paused"), Some(1.0));
    assert_eq!(
        metric(&text, "hookrelay_queue_depth{status=\"pending\"}"),
        Some(59.0)
    );
    assert!(metric(&text, "hookrelay_oldest_pending_age_seconds").is_some());

    // Resume drains the rest; the cancelled one never goes out.
    let (status, _) = sidecar.post_json("/v1/resume", json!({})).await;
    assert_eq!(status, 200);
    sidecar.wait_count("delivered", 159).await;
    let stats = sidecar.wait_count("pending", 0).await;
    assert_eq!(stats["counts"]["cancelled"], 1);
    let got: HashSet<String> = receiver
        .received()
        .iter()
        .map(|r| receiver.url(&r.target))
        .collect();
    let cancelled_target = cancelled["target"].as_str().unwrap();
    assert!(
        !got.contains(cancelled_target),
        "a cancelled delivery was sent"
    );
    assert_eq!(got.len(), 259);
}

#[tokio::test]
async fn every_bad_request_is_a_json_error_with_a_code() {
    let sidecar = Sidecar::start("").await;
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("GET", "/v1/deliveries?status=done", None, 400, "bad_filter"),
        (
            "GET",
            "/v1/deliveries?since=yesterday",
            None,
            400,
            "bad_filter",
        ),
        ("GET", "/v1/deliveries?limit=501", None, 400, "bad_filter"),
        (
            "GET",
            "/v1/deliveries?since=1960-01-01T00:00:00Z",
            None,
            400,
            "bad_filter",
        ),
        (
            "GET",
            "/v1/series?minutes=1&minutes=2",
            None,
            400,
            "bad_filter",
        ),
        ("GET", "/v1/series?minute=5", None, 400, "bad_filter"),
        ("GET", "/v1/deliveries?colour=red", None, 400, "bad_filter"),
        ("GET", "/v1/deliveries?cursor=zzz", None, 400, "bad_cursor"),
        ("GET", "/v1/batches?cursor=zzz", None, 400, "bad_cursor"),
        ("GET", "/v1/deliveries/dlv_nope", None, 404, "not_found"),
        (
            "GET",
            "/v1/deliveries/dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            "/v1/deliveries/dlv_nope/cancel",
            Some(""),
            404,
            "not_found",
        ),
        ("GET", "/v1/batches/bat_nope", None, 404, "not_found"),
        ("POST", "/v1/batches", Some("{"), 400, "bad_json"),
        (
            "POST",
            "/v1/batches",
            Some("{\"dry_run\": \"yes\"}"),
            400,
            "bad_json",
        ),
        (
            "POST",
            "/v1/batches",
            Some("{\"dry_run\": true}"),
            400,
            "bad_batch",
        ),
        (
            "POST",
            "/v1/batches",
            Some("{\"delivery_ids\": []}"),
            400,
            "bad_batch",
        ),
        (
            "POST",
            "/v1/batches",
            Some(
                "{\"delivery_ids\": [\"dlv_0123456789012345678901234567890123456789012345678901234567890123456789\"]}",
            ),
            400,
            "bad_batch",
        ),
        (
            "POST",
            "/v1/batches",
            Some("{\"filter\": {\"status\": \"x\"}}"),
            400,
            "bad_filter",
        ),
        ("POST", "/v1/pause", Some("[1]"), 400, "bad_json"),
        (
            "POST",
            "/v1/batches",
            Some("{\"filter\": {\"status\": \"delivered\"}}"),
            400,
            "bad_filter",
        ),
        (
            "POST",
            "/v1/batches",
            Some("{\"filter\": {\"status\": \"in_progress\"}}"),
            400,
            "bad_filter",
        ),
        ("POST", "/v1/hosts/nohost/pause", Some(""), 400, "bad_host"),
        ("GET", "/v1/nothing", None, 404, "no_route"),
        ("DELETE", "/v1/stats", None, 405, "method_not_allowed"),
        // The dashboard's routes answer like the API's.
        ("GET", "/ui/nope.js", None, 404, "not_found"),
        ("POST", "/ui/", Some(""), 405, "method_not_allowed"),
        ("DELETE", "/ui/app.js", None, 405, "method_not_allowed"),
    ];
    for (method, path, body, want_status, want_code) in cases {
        let mut req = sidecar
            .http
            .request(method.parse().unwrap(), sidecar.admin_url(path));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let json: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, *want_status, "{method} {path}: {json}");
        assert_eq!(json["error"]["code"], *want_code, "{method} {path}: {json}");
        assert!(
            json["error"]["message"].is_string(),
            "{method} {path}: {json}"
        );
        if path.contains("1960") {
            let message = json["error"]["message"].as_str().unwrap();
            assert!(message.contains("before 1970"), "{message}");
        }
    }
    // A reason over 1,000 characters, for a pause and a batch.
    let long = "r".repeat(1001);
    for (path, body) in [
        ("/v1/pause", json!({"reason": long})),
        ("/v1/hosts/h.example:443/pause", json!({"reason": long})),
        (
            "/v1/batches",
            json!({"reason": long, "delivery_ids": ["dlv_x"]}),
        ),
    ] {
        let (status, json) = sidecar.post_json(path, body).await;
        assert_eq!(
            (status, &json["error"]["code"]),
            (400, &json!("bad_reason")),
            "{path}: {json}"
        );
    }
    assert_eq!(sidecar.stats().await["paused"], false);
    // A body over the admin API's 2 MB limit.
    let big = format!("{{\"reason\": \"{}\"}}", "r".repeat(3 << 20));
    let resp = sidecar
        .http
        .post(sidecar.admin_url("/v1/batches"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["error"]["code"], "payload_too_large", "{json}");
    let (status, ready) = sidecar.get_json("/readyz").await;
    assert_eq!((status, &ready["status"]), (200, &json!("ready")));
}

#[tokio::test]
async fn the_token_guards_everything_but_health_checks() {
    const TOKEN: &str = "s3cret-token-for-tests";
    let mut sidecar = Sidecar::start(&format!("[admin]\ntoken = \"{TOKEN}\"\n")).await;
    for path in ["/v1/stats", "/v1/deliveries", "/metrics", "/openapi.json"] {
        let (status, body) = sidecar.get_json(path).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let resp = sidecar
        .http
        .get(sidecar.admin_url("/v1/stats"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // The scheme's case does not matter; another scheme is refused.
    for (auth, want) in [
        (format!("bearer {TOKEN}"), 200),
        (format!("BEARER {TOKEN}"), 200),
        (format!("Basic {TOKEN}"), 401),
        (TOKEN.to_string(), 401),
    ] {
        let resp = sidecar
            .http
            .get(sidecar.admin_url("/v1/stats"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "{auth}");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(sidecar.get_json(path).await.0, 200, "{path}");
    }
    sidecar.token = Some(TOKEN.into());
    assert_eq!(sidecar.get_json("/v1/stats").await.0, 200);
    assert!(sidecar.metrics().await.contains("hookrelay_paused"));

    // metrics_public opens /metrics only.
    sidecar.kill9();
    sidecar.set_extra_config(&format!(
        "[admin]\ntoken = \"{TOKEN}\"\nmetrics_public = true\n"
    ));
    sidecar.restart().await;
    sidecar.token = None;
    let resp = sidecar
        .http
        .get(sidecar.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(sidecar.get_json("/v1/stats").await.0, 401);
}

#[tokio::test]
async fn every_documented_route_answers() {
    let receiver = ok_and_bad_receiver().await;
    let sidecar = Sidecar::start("").await;
    let delivery = send_ok(&sidecar, &receiver.url("/bad/x")).await;
    sidecar.wait_status(&delivery, "failed").await;
    let (status, batch) = sidecar
        .post_json(
            "/v1/batches",
            json!({"delivery_ids": [delivery], "dry_run": true}),
        )
        .await;
    assert_eq!(status, 201);
    let host = receiver.addr.to_string();

    let (status, doc) = sidecar.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "only {} paths documented", paths.len());
    let mut checked = 0;
    for (path, ops) in paths {
        let concrete = path
            .replace(
                "{id}",
                if path.contains("batches") {
                    batch["id"].as_str().unwrap()
                } else {
                    &delivery
                },
            )
            .replace("{host}", &host);
        for method in ops.as_object().unwrap().keys() {
            let mut req = sidecar.http.request(
                method.to_uppercase().parse().unwrap(),
                sidecar.admin_url(&concrete),
            );
            if method == "post" {
                req = req.header("content-type", "application/json").body("{}");
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path}");
            assert_ne!(body["error"]["code"], "no_route", "{method} {path}");
            assert!(
                status < 500 || path == "/readyz",
                "{method} {path}: {status} {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 17, "only {checked} operations checked");
}

#[tokio::test]
async fn cancelling_an_attempt_in_flight_is_a_conflict() {
    let receiver = Receiver::start(Arc::new(|_, _| {
        Reply::Stall(std::time::Duration::from_secs(60))
    }))
    .await;
    let sidecar = Sidecar::start("[delivery]\ntimeout = \"60s\"\n").await;
    let id = send_ok(&sidecar, &receiver.url("/slow")).await;
    receiver.wait_count(1).await;
    sidecar.wait_status(&id, "in_progress").await;
    let (status, body) = sidecar
        .post_json(&format!("/v1/deliveries/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("not_pending"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in_progress")
    );
    let (_, page) = sidecar.get_json("/v1/deliveries?status=in_progress").await;
    assert_eq!(ids(&page), vec![id.clone()]);
    let (_, page) = sidecar.get_json("/v1/deliveries?status=pending").await;
    assert!(ids(&page).is_empty());
    assert_eq!(sidecar.stats().await["counts"]["in_progress"], 1);
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_gets_a_json_error() {
    let sidecar = Sidecar::start("").await;
    for path in [
        "/v1/deliveries/%FF",
        "/v1/batches/%FF",
        "/v1/hosts/%FF/pause",
        "/ui/%FF",
    ] {
        let resp = if path.ends_with("pause") {
            sidecar
                .http
                .post(sidecar.admin_url(path))
                .send()
                .await
                .unwrap()
        } else {
            sidecar
                .http
                .get(sidecar.admin_url(path))
                .send()
                .await
                .unwrap()
        };
        assert_eq!(resp.status(), 400, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_path", "{path}");
    }
}

/// A target is stored as parsed, the URL the request goes to (`HTTP://h:80/x/../y` as
/// `http://h/y`), so a listing shows it that way and a filter for its host or path finds it,
/// however the app spelled it; a filter spelled another way finds it too.
#[tokio::test]
async fn targets_are_listed_and_filtered_as_parsed() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start("").await;
    let port = receiver.addr.port();
    let spelled = [
        format!("HTTP://127.0.0.1:{port}/upper"),
        format!("http://127.0.0.1:{port}/x/../dots"),
        format!("http://0x7f.1:{port}/hex"),
    ];
    let mut ids = Vec::new();
    for target in &spelled {
        ids.push(send_ok(&sidecar, target).await);
    }
    for id in &ids {
        sidecar.wait_status(id, "delivered").await;
    }
    let shown: Vec<String> = list(&sidecar, "").await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["target"].as_str().unwrap().to_string())
        .collect();
    for path in ["/upper", "/dots", "/hex"] {
        assert!(
            shown.contains(&receiver.url(path)),
            "{path} is listed as parsed: {shown:?}"
        );
    }
    let found = |query: String| {
        let sidecar = &sidecar;
        async move {
            list(sidecar, &query).await["data"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(found(format!("target={}", receiver.url("/"))).await, 3);
    // A host alone, spelled otherwise, without the port: every port of that host.
    for host in ["HTTP://127.0.0.1", "http://0x7f.1", "http://2130706433"] {
        assert_eq!(found(format!("target={host}")).await, 3, "{host}");
    }
    assert_eq!(
        found(format!("target=HTTP://127.0.0.1:{port}/x/../do")).await,
        1,
        "a filter spelled otherwise is read as parsed too"
    );
}
