//! Delivery outcomes against a scripted receiver: classification, retries, backoff.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

async fn send_ok(sidecar: &Sidecar, target: &str) -> String {
    let (status, json) = sidecar.send(target, "{\"k\":1}", None).await;
    assert_eq!(status, 202, "{json}");
    json["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn success_is_recorded_with_its_attempt() {
    let receiver =
        Receiver::start(Arc::new(|_, _| Reply::Full(200, vec![], "thanks".into()))).await;
    let sidecar = Sidecar::start(FAST_RETRY).await;
    let id = send_ok(&sidecar, &receiver.url("/ok")).await;
    let d = sidecar.wait_status(&id, "delivered").await;
    assert_eq!(d["attempt_count"], 1);
    assert_eq!(d["method"], "POST");
    assert_eq!(d["target"], receiver.url("/ok"));
    assert!(d["created_at"].is_string());
    assert!(d["next_attempt_at"].is_null());
    let a = &d["attempts"][0];
    assert_eq!(a["number"], 1);
    assert_eq!(a["status_code"], 200);
    assert_eq!(a["classification"], "SUCCESS");
    assert_eq!(a["response_snippet"], "thanks");
    assert!(a["duration_ms"].is_u64());
    assert!(a["started_at"].is_string());
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(&m, "hookrelay_attempts_total{classification=\"SUCCESS\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "hookrelay_deliveries_finished_total{status=\"delivered\"}"
        ),
        Some(1.0)
    );
    // The scheduler's loop did some work to get it there.
    assert!(
        metric(&m, "hookrelay_scheduler_busy_seconds_total").is_some_and(|s| s > 0.0),
        "{m}"
    );
}

#[tokio::test]
async fn two_503s_then_200_takes_three_attempts() {
    let receiver = Receiver::start(Arc::new(|_, n| {
        if n < 2 {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let sidecar = Sidecar::start(FAST_RETRY).await;
    let id = send_ok(&sidecar, &receiver.url("/flaky")).await;
    let d = sidecar.wait_status(&id, "delivered").await;
    assert_eq!(
        classes(&d),
        ["HTTP_5XX_RETRYABLE", "HTTP_5XX_RETRYABLE", "SUCCESS"]
    );
    assert_eq!(d["attempt_count"], 3);
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    // Backoff: 50ms then 100ms (no jitter in FAST_RETRY).
    assert!(got[1].at - got[0].at >= Duration::from_millis(45));
    assert!(got[2].at - got[1].at >= Duration::from_millis(95));
    assert!(got.iter().all(|r| r.body == b"{\"k\":1}"));
}

#[tokio::test]
async fn a_4xx_fails_after_one_attempt() {
    let receiver = Receiver::start(Arc::new(|_, _| {
        Reply::Full(400, vec![], "{\"error\":\"schema\"}".into())
    }))
    .await;
    let sidecar = Sidecar::start(FAST_RETRY).await;
    let id = send_ok(&sidecar, &receiver.url("/strict")).await;
    let d = sidecar.wait_status(&id, "failed").await;
    assert_eq!(classes(&d), ["HTTP_4XX_PERMANENT"]);
    assert_eq!(d["last_classification"], "HTTP_4XX_PERMANENT");
    assert_eq!(
        d["attempts"][0]["response_snippet"],
        "{\"error\":\"schema\"}"
    );
    assert_eq!(receiver.count(), 1);
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(&m, "hookrelay_deliveries_finished_total{status=\"failed\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn attempts_are_bounded_and_the_last_class_is_kept() {
    let receiver = Receiver::start(Arc::new(|_, _| Reply::Status(500))).await;
    let sidecar = Sidecar::start(FAST_RETRY).await;
    let id = send_ok(&sidecar, &receiver.url("/down")).await;
    let d = sidecar.wait_status(&id, "failed").await;
    assert_eq!(d["attempt_count"], 5);
    assert_eq!(classes(&d), vec!["HTTP_5XX_RETRYABLE"; 5]);
    assert_eq!(receiver.count(), 5);
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let receiver = Receiver::start(Arc::new(|_, n| {
        if n == 0 {
            Reply::Full(429, vec![("retry-after".into(), "1".into())], String::new())
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    // Backoff alone would retry after 50 ms; Retry-After asks for a second.
    let sidecar = Sidecar::start(
        "[retry]\ninitial_delay = \"50ms\"\nmax_delay = \"5s\"\nmax_attempts = 5\njitter = 0.0\n",
    )
    .await;
    let id = send_ok(&sidecar, &receiver.url("/limited")).await;
    let d = sidecar.wait_status(&id, "delivered").await;
    assert_eq!(classes(&d), ["RATE_LIMITED", "SUCCESS"]);
    let got = receiver.received();
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
}

#[tokio::test]
async fn connection_refused_is_a_network_error_and_retried() {
    let sidecar = Sidecar::start(FAST_RETRY).await;
    let port = free_port();
    let id = send_ok(&sidecar, &format!("http://127.0.0.1:{port}/nobody")).await;
    let d = sidecar.wait_status(&id, "failed").await;
    assert_eq!(classes(&d), vec!["NETWORK_ERROR"; 5]);
    assert!(d["attempts"][0]["error"].as_str().unwrap().len() > 5);
    assert!(d["attempts"][0]["status_code"].is_null());
}

#[tokio::test]
async fn a_failed_tls_handshake_is_a_tls_error() {
    // An https target on a port that answers in plain HTTP: the handshake gets an HTTP 400.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let plain = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut hello = [0u8; 512];
            let _ = conn.read(&mut hello).await;
            let _ = conn
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let sidecar = Sidecar::start(FAST_RETRY).await;
    let id = send_ok(&sidecar, &format!("https://127.0.0.1:{port}/tls")).await;
    let d = sidecar.wait_status(&id, "failed").await;
    assert_eq!(classes(&d), vec!["TLS_ERROR"; 5], "{d}");
    assert_eq!(d["last_classification"], "TLS_ERROR");
    plain.abort();
}

#[tokio::test]
async fn a_connection_reset_is_a_network_error() {
    let receiver = Receiver::start(Arc::new(|_, n| {
        if n == 0 {
            Reply::Reset
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let sidecar = Sidecar::start(FAST_RETRY).await;
    let id = send_ok(&sidecar, &receiver.url("/reset")).await;
    let d = sidecar.wait_status(&id, "delivered").await;
    assert_eq!(classes(&d), ["NETWORK_ERROR", "SUCCESS"]);
}

#[tokio::test]
async fn a_slow_receiver_times_out() {
    let receiver = Receiver::start(Arc::new(|_, n| {
        if n == 0 {
            Reply::Stall(Duration::from_secs(5))
        } else {
            Reply::Status(200)
        }
    }))
    .await;
    let sidecar = Sidecar::start(&format!("{FAST_RETRY}[delivery]\ntimeout = \"300ms\"\n")).await;
    let id = send_ok(&sidecar, &receiver.url("/slow")).await;
    let d = sidecar.wait_status(&id, "delivered").await;
    assert_eq!(classes(&d), ["TIMEOUT", "SUCCESS"]);
    let took = d["attempts"][0]["duration_ms"].as_u64().unwrap();
    assert!(
        (250..3000).contains(&took),
        "timeout attempt took {took} ms"
    );
}

#[tokio::test]
async fn a_408_is_a_timeout_and_retried() {
    let receiver = Receiver::start(Arc::new(|_, n| {
        if n == 0 {
            Reply::Status(408)
        } else {
            Reply::Status(204)
        }
    }))
    .await;
    let sidecar = Sidecar::start(FAST_RETRY).await;
    let id = send_ok(&sidecar, &receiver.url("/408")).await;
    let d = sidecar.wait_status(&id, "delivered").await;
    assert_eq!(classes(&d), ["TIMEOUT", "SUCCESS"]);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = Receiver::ok().await;
    let location = target.url("/elsewhere");
    let receiver = Receiver::start(Arc::new(move |_, _| {
        Reply::Full(
            302,
            vec![("location".into(), location.clone())],
            String::new(),
        )
    }))
    .await;
    let sidecar = Sidecar::start(FAST_RETRY).await;
    let id = send_ok(&sidecar, &receiver.url("/moved")).await;
    let d = sidecar.wait_status(&id, "failed").await;
    assert_eq!(classes(&d), ["HTTP_3XX_PERMANENT"]);
    assert_eq!(d["attempts"][0]["status_code"], 302);
    assert_eq!(
        target.count(),
        0,
        "the redirect target must not be contacted"
    );
}

#[tokio::test]
async fn endpoint_retry_overrides_apply() {
    let receiver = Receiver::start(Arc::new(|_, _| Reply::Status(503))).await;
    let sidecar = Sidecar::start(&format!(
        "{FAST_RETRY}[endpoints.once]\nurl = \"{}\"\n[endpoints.once.retry]\nmax_attempts = 2\n",
        receiver.url("/once")
    ))
    .await;
    let resp = sidecar
        .http
        .post(sidecar.ingest_url("/e/once"))
        .body("x")
        .send()
        .await
        .unwrap();
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = sidecar.wait_status(&id, "failed").await;
    assert_eq!(d["attempt_count"], 2);
}

#[tokio::test]
async fn unknown_delivery_ids_are_404() {
    let sidecar = Sidecar::start("").await;
    for id in [
        "dlv_01JD0000000000000000000000",
        "nope",
        "evt_01JD0000000000000000000000",
    ] {
        let (status, body) = sidecar.get_json(&format!("/v1/deliveries/{id}")).await;
        assert_eq!(status, 404, "{id}");
        assert_eq!(body["error"]["code"], "not_found");
    }
}

/// An empty POST, PUT or PATCH goes out with `Content-Length: 0` (a server may require a
/// length for a method with a body, RFC 9110 8.6, and answer 411 without one).
#[tokio::test]
async fn an_empty_body_is_sent_with_a_zero_length() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start(FAST_RETRY).await;
    for method in ["POST", "PUT", "PATCH"] {
        let resp = sidecar
            .http
            .request(
                method.parse().unwrap(),
                sidecar.ingest_url(&format!("/{}", receiver.url(&format!("/{method}")))),
            )
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{method}");
    }
    let got = receiver.wait_count(3).await;
    for method in ["POST", "PUT", "PATCH"] {
        let r = got
            .iter()
            .find(|r| r.target == format!("/{method}"))
            .unwrap();
        assert_eq!(r.header("content-length"), Some("0"), "{method}: {r:?}");
        assert!(r.header("transfer-encoding").is_none(), "{method}: {r:?}");
    }
}

/// Once the status has arrived the attempt is decided: a body that never finishes is read for
/// its snippet for about a second, not until the attempt's timeout, so it does not hold the
/// host's slot (or a drain) that long.
#[tokio::test]
async fn a_body_that_never_finishes_does_not_hold_the_attempt() {
    let receiver = Receiver::start(Arc::new(|_, _| Reply::HeadThenStall(200))).await;
    let sidecar = Sidecar::start(&format!("{FAST_RETRY}[delivery]\ntimeout = \"60s\"\n")).await;
    let id = send_ok(&sidecar, &receiver.url("/trickle")).await;
    let d = sidecar.wait_status(&id, "delivered").await;
    let a = &d["attempts"][0];
    assert_eq!(a["classification"], "SUCCESS", "{d}");
    assert_eq!(a["response_snippet"], "partial", "{d}");
    let took = a["duration_ms"].as_u64().unwrap();
    assert!((900..10_000).contains(&took), "the attempt took {took} ms");
}
