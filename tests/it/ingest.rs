//! The three ingest modes, idempotency, and every refusal.

use std::sync::Arc;

use serde_json::Value;

use crate::harness::*;

fn endpoints(receiver: &Receiver) -> String {
    format!(
        "[endpoints.orders]\nurl = \"{}\"\nevents = [\"order.*\"]\nheaders = {{ X-Endpoint-Token = \"tok\" }}\n\
         [endpoints.audit]\nurl = \"{}\"\nevents = [\"*\"]\n\
         [endpoints.quiet]\nurl = \"{}\"\n",
        receiver.url("/base"),
        receiver.url("/audit"),
        receiver.url("/quiet"),
    )
}

#[tokio::test]
async fn url_prefix_forwards_method_query_headers_and_body_exactly() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start("").await;
    let body = "{\"order\":1,\"bytes\":\"\\u00e9\"}\r\n  trailing";
    for method in ["POST", "PUT", "PATCH"] {
        let resp = sidecar
            .http
            .request(
                method.parse().unwrap(),
                sidecar.ingest_url(&format!("/{}", receiver.url("/hooks/a%20b?x=1&y=two"))),
            )
            .header("content-type", "application/json")
            .header("x-custom", "v1")
            .header("x-hop", "gone")
            .header("connection", "x-hop")
            .header("idempotency-key", format!("k-{method}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let header_id = resp.headers()["hookrelay-delivery-id"]
            .to_str()
            .unwrap()
            .to_string();
        let json: Value = resp.json().await.unwrap();
        assert_eq!(json["status"], "pending");
        assert_eq!(json["duplicate"], false);
        assert_eq!(json["id"], header_id.as_str());
        assert!(header_id.starts_with("dlv_"));
    }
    let got = receiver.wait_count(3).await;
    let mut methods: Vec<&str> = got.iter().map(|r| r.method.as_str()).collect();
    methods.sort();
    assert_eq!(methods, ["PATCH", "POST", "PUT"]);
    for r in &got {
        assert_eq!(r.target, "/hooks/a%20b?x=1&y=two");
        assert_eq!(r.body, body.as_bytes());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-custom"), Some("v1"));
        assert_eq!(r.header("host"), Some(receiver.addr.to_string().as_str()));
        assert_eq!(
            r.header("x-hop"),
            None,
            "headers named in Connection are hop-by-hop"
        );
        assert!(r.header("idempotency-key").unwrap().starts_with("k-"));
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
}

#[tokio::test]
async fn named_endpoint_joins_path_and_query_and_adds_its_headers() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start(&endpoints(&receiver)).await;
    let resp = sidecar
        .http
        .post(sidecar.ingest_url("/e/orders/some/path?q=1"))
        .header("x-app", "a")
        .body("payload-bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = receiver.wait_count(1).await;
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].target, "/base/some/path?q=1");
    assert_eq!(got[0].body, b"payload-bytes");
    assert_eq!(got[0].header("x-app"), Some("a"));
    assert_eq!(got[0].header("x-endpoint-token"), Some("tok"));
    let d = sidecar.wait_status(&id, "delivered").await;
    assert_eq!(d["endpoint"], "orders");
    assert_eq!(d["target"], receiver.url("/base/some/path?q=1"));
}

#[tokio::test]
async fn event_envelope_fans_out_to_matching_endpoints() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start(&endpoints(&receiver)).await;
    let envelope = serde_json::json!({
        "type": "order.created",
        "payload": {"order_id": "ord_1", "n": [1, 2]},
        "idempotency_key": "evt-key-1"
    });
    let resp = sidecar
        .http
        .post(sidecar.ingest_url("/v1/events"))
        .json(&envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let json: Value = resp.json().await.unwrap();
    let event_id = json["event_id"].as_str().unwrap().to_string();
    assert!(event_id.starts_with("evt_"));
    assert_eq!(
        json["deliveries"].as_array().unwrap().len(),
        2,
        "orders and audit match, quiet does not"
    );
    assert_eq!(json["duplicate"], false);

    let got = receiver.wait_count(2).await;
    let mut targets: Vec<&str> = got.iter().map(|r| r.target.as_str()).collect();
    targets.sort();
    assert_eq!(targets, ["/audit", "/base"]);
    for r in &got {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["id"], event_id.as_str());
        assert_eq!(body["type"], "order.created");
        assert_eq!(body["payload"], envelope["payload"]);
        assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("idempotency-key"), Some("evt-key-1"));
    }

    // The same envelope again: the original event and deliveries, nothing new.
    let again = sidecar
        .http
        .post(sidecar.ingest_url("/v1/events"))
        .json(&envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["event_id"], event_id.as_str());
    assert_eq!(again["deliveries"], json["deliveries"]);
    assert_eq!(again["duplicate"], true);

    // Only audit subscribes to everything.
    let resp = sidecar
        .http
        .post(sidecar.ingest_url("/v1/events"))
        .json(&serde_json::json!({"type": "user.deleted", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap()["deliveries"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// An envelope's payload reaches the receiver as the app wrote it, numbers beyond what an
/// `f64` holds included, and two payloads that differ only in such a number are two events:
/// the second under the same key is refused, not taken for a duplicate.
#[tokio::test]
async fn an_envelope_payload_is_delivered_as_written_and_big_numbers_stay_apart() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start(&endpoints(&receiver)).await;
    let post = |body: &'static str| {
        sidecar
            .http
            .post(sidecar.ingest_url("/v1/events"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let first = post(
        r#"{"type":"order.created","payload":{"id":18446744073709551617,"amount":10.50,"e":1e2},"idempotency_key":"big-1"}"#,
    )
    .await
    .unwrap();
    assert_eq!(first.status(), 202);
    let got = receiver.wait_count(2).await;
    for r in &got {
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert!(
            body.contains(r#""payload":{"id":18446744073709551617,"amount":10.50,"e":1e2}"#),
            "{body}"
        );
    }
    let other = post(
        r#"{"type":"order.created","payload":{"id":18446744073709551618,"amount":10.50,"e":1e2},"idempotency_key":"big-1"}"#,
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 422, "a different event under the same key");
    let json: Value = other.json().await.unwrap();
    assert_eq!(json["error"]["code"], "idempotency_key_reused", "{json}");
    // The same value spelled otherwise is the same event.
    let same = post(
        r#"{"idempotency_key":"big-1","payload":{ "e":1E+2, "amount":10.5, "id":18446744073709551617 },"type":"order.created"}"#,
    )
    .await
    .unwrap();
    assert_eq!(same.status(), 200);
}

#[tokio::test]
async fn duplicates_answer_the_original_and_create_nothing() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start("").await;
    let target = receiver.url("/dup");
    let (status, first) = sidecar.send(&target, "{\"a\":1}", Some("same-key")).await;
    assert_eq!(status, 202);
    for _ in 0..3 {
        let (status, again) = sidecar.send(&target, "{\"a\":1}", Some("same-key")).await;
        assert_eq!(status, 200);
        assert_eq!(again["id"], first["id"]);
        assert_eq!(again["duplicate"], true);
    }
    // Same key, different body: refused.
    let (status, err) = sidecar.send(&target, "{\"a\":2}", Some("same-key")).await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["code"], "idempotency_key_reused");
    // Same key, another target: a different scope, so a new delivery.
    let (status, other) = sidecar
        .send(&receiver.url("/other"), "{\"a\":1}", Some("same-key"))
        .await;
    assert_eq!(status, 202);
    assert_ne!(other["id"], first["id"]);
    // The same target spelled another way is the same target.
    let (status, again) = sidecar
        .send(
            &target.replacen("http://", "HTTP://", 1),
            "{\"a\":1}",
            Some("same-key"),
        )
        .await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    // Same key, target and body, another method: refused.
    let put = |keys: &[&str]| {
        let mut req = sidecar
            .http
            .put(sidecar.ingest_url(&format!("/{target}")))
            .body("{\"a\":1}");
        for k in keys {
            req = req.header("idempotency-key", *k);
        }
        req.send()
    };
    let resp = put(&["same-key"]).await.unwrap();
    assert_eq!(resp.status(), 422);
    // Two keys: which one is meant is unknown.
    let resp = put(&["k1", "k2"]).await.unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_idempotency_key", "{err}");

    receiver.wait_count(2).await;
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(&m, "hookrelay_ingest_requests_total{outcome=\"accepted\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "hookrelay_ingest_requests_total{outcome=\"duplicate\"}"),
        Some(4.0)
    );
    assert_eq!(
        metric(&m, "hookrelay_ingest_requests_total{outcome=\"rejected\"}"),
        Some(3.0)
    );
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.target == "/dup")
            .count(),
        1
    );
}

#[tokio::test]
async fn fifty_concurrent_requests_with_one_key_create_one_delivery() {
    let receiver = Receiver::ok().await;
    let sidecar = Arc::new(Sidecar::start("").await);
    let target = receiver.url("/race");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (sidecar, target) = (sidecar.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            sidecar
                .send(&target, "{\"race\":true}", Some("race-key"))
                .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let (mut created, mut duplicates) = (0, 0);
    for t in tasks {
        let (status, json) = t.await.unwrap();
        match status {
            202 => created += 1,
            200 => duplicates += 1,
            s => panic!("unexpected status {s}: {json}"),
        }
        ids.insert(json["id"].as_str().unwrap().to_string());
    }
    assert_eq!((created, duplicates), (1, 49));
    assert_eq!(ids.len(), 1);
    receiver.wait_count(1).await;
    // Give any wrongly created twin the chance to arrive before counting.
    let id = ids.into_iter().next().unwrap();
    sidecar.wait_status(&id, "delivered").await;
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_stores_nothing() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start(&format!(
        "[ingest]\nmax_body_bytes = 1000\n{}",
        endpoints(&receiver)
    ))
    .await;
    let http = &sidecar.http;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(sidecar.ingest_url("/not-a-url")),
            400,
            "invalid_target",
        ),
        (
            http.post(sidecar.ingest_url("/ftp://example.com/x")),
            400,
            "invalid_target",
        ),
        (http.post(sidecar.ingest_url("/")), 400, "invalid_target"),
        (
            http.post(sidecar.ingest_url("/e/missing/x")),
            404,
            "unknown_endpoint",
        ),
        (
            http.post(sidecar.ingest_url(&format!("/{}", receiver.url("/big"))))
                .body("x".repeat(1001)),
            413,
            "payload_too_large",
        ),
        (
            http.get(sidecar.ingest_url(&format!("/{}", receiver.url("/x")))),
            405,
            "method_not_allowed",
        ),
        (
            http.delete(sidecar.ingest_url("/e/orders/x")),
            405,
            "method_not_allowed",
        ),
        (
            http.put(sidecar.ingest_url("/v1/events")).body("{}"),
            405,
            "method_not_allowed",
        ),
        // A browser or probe asking for the root or an icon: the method is wrong before the
        // path is.
        (http.get(sidecar.ingest_url("/")), 405, "method_not_allowed"),
        (
            http.get(sidecar.ingest_url("/favicon.ico")),
            405,
            "method_not_allowed",
        ),
        (
            http.post(sidecar.ingest_url("/v1/events")).body("not json"),
            400,
            "invalid_event",
        ),
        (
            http.post(sidecar.ingest_url("/v1/events"))
                .body("{\"type\":\"x\"}"),
            400,
            "invalid_event",
        ),
        (
            http.post(sidecar.ingest_url("/v1/events"))
                .body("{\"type\":\"\",\"payload\":1}"),
            400,
            "invalid_event",
        ),
        (
            http.post(sidecar.ingest_url(&format!("/{}", receiver.url("/x"))))
                .header("idempotency-key", "k".repeat(300)),
            400,
            "invalid_idempotency_key",
        ),
    ];
    for (req, status, code) in cases {
        let resp = req.send().await.unwrap();
        let got_status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        assert_eq!(got_status, status, "{code}: {text}");
        assert_eq!(ct.as_deref(), Some("application/json"));
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["error"]["code"], code, "{text}");
        assert!(json["error"]["message"].as_str().unwrap().len() > 5);
    }
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(&m, "hookrelay_ingest_requests_total{outcome=\"accepted\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "hookrelay_ingest_requests_total{outcome=\"rejected\"}"),
        Some(14.0)
    );
    assert_eq!(receiver.count(), 0);

    // A 405 says what the route accepts.
    let resp = http
        .put(sidecar.ingest_url("/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = http
        .get(sidecar.ingest_url(&format!("/{}", receiver.url("/x"))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "POST, PUT, PATCH");
    for req in [
        http.get(sidecar.ingest_url("/")),
        http.head(sidecar.ingest_url("/")),
        http.delete(sidecar.ingest_url("/")),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "POST, PUT, PATCH");
    }

    // No endpoint subscribes to the type: 422.
    let narrow = Sidecar::start(&format!(
        "[endpoints.orders]\nurl = \"{}\"\nevents = [\"order.*\"]\n",
        receiver.url("/o")
    ))
    .await;
    let resp = narrow
        .http
        .post(narrow.ingest_url("/v1/events"))
        .body("{\"type\":\"user.created\",\"payload\":{}}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "no_matching_endpoint"
    );
}

/// Sends `raw` on a fresh connection and reads until the sidecar closes it. The client's send
/// buffer is small, so what the sidecar does not read stays unsent (however large the host's
/// default buffers are).
async fn raw_exchange(sidecar: &Sidecar, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(64 << 10).unwrap();
    let mut stream = socket.connect(sidecar.ingest).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the sidecar answers and closes the connection")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request that is not HTTP/1.1 (a raw byte that is not a token in the request line, a
/// header line without a colon, a Content-Length that is not a number, garbage) gets a JSON
/// 400, and headers over pingora's 1 MiB a 431, each with a closed connection rather than a
/// silent hang-up; and the raw header bytes, credentials included, stay out of the log.
#[tokio::test]
async fn malformed_http_gets_a_json_400_and_no_header_reaches_the_log() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start("").await;
    let target = receiver.url("/m");
    let huge = format!(
        "POST /{target} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(1_100_000)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            [
                format!("POST /{target}").as_bytes(),
                b"\xff HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\n",
                b"Content-Length: 2\r\n\r\n{}",
            ]
            .concat(),
            "invalid token",
        ),
        (
            format!("POST /{target} HTTP/1.1\r\nHost: x\r\nX-Key: s3cret-token\r\nNoColon\r\n\r\n")
                .into_bytes(),
            "invalid header name",
        ),
        (
            format!("POST /{target} HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{{}}")
                .into_bytes(),
            "Content-Length",
        ),
        (b"GARBAGE\r\n\r\n".to_vec(), "invalid token"),
        (huge.into_bytes(), "larger than 1 MiB"),
        // A URL past the HTTP library's 64 KiB: said so, without quoting the URL back.
        (
            format!(
                "POST /{target}?token=s3cret-token&pad={} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(70_000)
            )
            .into_bytes(),
            "the URL is longer than 64 KiB",
        ),
    ];
    for (raw, problem) in &cases {
        let answer = raw_exchange(&sidecar, raw).await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("a whole response");
        let (status, code) = match *problem {
            "larger than 1 MiB" => ("431", "request_header_too_large"),
            _ => ("400", "bad_request"),
        };
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{}",
            &answer[..answer.len().min(300)]
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let json: Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], code, "{body}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(problem), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.len() < 300, "{message}");
    }
    // Still serving, nothing was stored, and each refusal was counted.
    let (status, _) = sidecar.send(&target, "{}", None).await;
    assert_eq!(status, 202);
    receiver.wait_count(1).await;
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(&m, "hookrelay_ingest_requests_total{outcome=\"rejected\"}"),
        Some(cases.len() as f64)
    );
    assert!(!sidecar.log().contains("s3cret"), "{}", sidecar.log());
}

/// An HTTP/1.0 request without `Connection: keep-alive` asks for the connection to close after
/// the answer: it is closed at once, not kept for the keep-alive timeout.
#[tokio::test]
async fn an_http_1_0_request_gets_its_answer_and_a_closed_connection() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start("").await;
    let target = receiver.url("/old");
    let raw = format!("POST /{target} HTTP/1.0\r\nContent-Length: 2\r\n\r\n{{}}");
    let answer = raw_exchange(&sidecar, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 202 "), "{answer}");
    receiver.wait_count(1).await;
}

/// Requests pipelined on one connection (sent before the previous answer was read) are each
/// answered, in order.
#[tokio::test]
async fn pipelined_requests_are_each_answered_in_order() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start("").await;
    let target = receiver.url("/p");
    let one = |key: &str, extra: &str| {
        format!(
            "POST /{target} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {key}\r\n{extra}Content-Length: 2\r\n\r\n{{}}"
        )
    };
    let raw = [
        one("p1", ""),
        one("p2", ""),
        one("p3", "Connection: close\r\n"),
    ]
    .concat();
    let answer = raw_exchange(&sidecar, raw.as_bytes()).await;
    assert_eq!(answer.matches("HTTP/1.1 202 ").count(), 3, "{answer}");
    receiver.wait_count(3).await;
}

/// A body in a transfer coding other than chunked (here gzip) would be stored and delivered
/// still coded: it is refused with a JSON 501, and nothing is stored.
#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_refused() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start("").await;
    let target = receiver.url("/coded");
    let raw = format!(
        "POST /{target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    let answer = raw_exchange(&sidecar, raw.as_bytes()).await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole response");
    assert!(head.starts_with("HTTP/1.1 501 "), "{answer}");
    let json: Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["error"]["code"], "unsupported_transfer_encoding");
    let stats = sidecar.stats().await;
    assert_eq!(stats["counts"]["pending"], 0, "{stats}");
    assert_eq!(stats["counts"]["delivered"], 0, "{stats}");
    assert_eq!(receiver.count(), 0);
}

/// A client that sends the whole of a too-large body before reading (as Python's http.client
/// does) still reads the 413: the refused body is read and discarded before the close, so the
/// connection is not reset under it.
#[tokio::test]
async fn a_client_that_sends_a_large_body_before_reading_gets_the_413() {
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start("").await;
    let target = receiver.url("/big");
    // More than the socket buffers hold, so the sidecar must read it for the write to end.
    let size = 12 << 20;
    let mut raw = format!("POST /{target} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n")
        .into_bytes();
    raw.resize(raw.len() + size, b'x');
    let answer = raw_exchange(&sidecar, &raw).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

/// Ingest keeps a connection open for the next request (as pingora's own server did), and
/// closes it when the client asks.
#[tokio::test]
async fn ingest_reuses_a_connection_and_closes_it_on_request() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let receiver = Receiver::ok().await;
    let sidecar = Sidecar::start("").await;
    let target = receiver.url("/k");
    let request = |extra: &str| {
        format!("POST /{target} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 2\r\n\r\n{{}}")
    };
    let stream = tokio::net::TcpStream::connect(sidecar.ingest)
        .await
        .unwrap();
    let mut conn = BufReader::new(stream);
    // Reads one response: its status line and its body (by Content-Length).
    async fn response(conn: &mut BufReader<tokio::net::TcpStream>) -> (String, String) {
        let mut status = String::new();
        conn.read_line(&mut status).await.unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            let n = conn.read_line(&mut line).await.unwrap();
            assert!(
                n > 0,
                "the connection closed mid-response (status line {status:?})"
            );
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await.unwrap();
        (status, String::from_utf8(body).unwrap())
    }
    for _ in 0..2 {
        conn.get_mut()
            .write_all(request("").as_bytes())
            .await
            .unwrap();
        let (status, body) = response(&mut conn).await;
        assert!(status.starts_with("HTTP/1.1 202 "), "{status} {body}");
    }
    conn.get_mut()
        .write_all(request("Connection: close\r\n").as_bytes())
        .await
        .unwrap();
    let (status, _) = response(&mut conn).await;
    assert!(status.starts_with("HTTP/1.1 202 "), "{status}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut rest),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(0))), "the connection is closed");
    receiver.wait_count(3).await;
}
