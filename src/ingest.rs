//! The ingest listener: pingora glue that turns an HTTP request into an [`IngestWrite`] for the
//! store writer and the writer's answer into a response.
//!
//! Parsing and decisions live in `ingest/` as pure functions. This file must never answer 2xx
//! before the writer has committed the delivery durably: the ack is the promise. It refuses
//! early, storing nothing: while draining, while overloaded (`store.max_pending`,
//! `store.max_bytes`), and targets the egress guard denies.

pub mod envelope;
pub mod request;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use http::Response;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::protocols::http::{HttpTask, ServerSession};
use pingora::server::ShutdownWatch;
use sha2::{Digest, Sha256};

use crate::clock;
use crate::config::{Config, Endpoint};
use crate::egress::{EgressPolicy, Mode};
use crate::metrics::Metrics;
use crate::model::{DeliveryId, DeliveryRecord, EventId, Id, Payload, url_host_key};
use crate::schedule::Backlog;
use crate::store::writer::{IdemClaim, IngestResult, IngestWrite, NewDelivery, WriterHandle};
use crate::store::{Store, encode};
use request::{Reject, Route};

/// Most of a body's declared length reserved before its bytes arrive.
const PREALLOCATE_AT_MOST: usize = 256 << 10;

pub struct Ingest {
    endpoints: Arc<BTreeMap<String, Endpoint>>,
    max_body_bytes: usize,
    idempotency_window_ms: u64,
    writer: WriterHandle,
    /// Read side, only to report the current status of a duplicate's original.
    store: Store,
    metrics: Metrics,
    /// Set on SIGTERM: new webhooks get `503 shutting_down` while attempts in flight finish.
    draining: Arc<AtomicBool>,
    egress: EgressPolicy,
    /// Pending work as the scheduler counts it, against `max_pending`.
    backlog: Backlog,
    max_pending: usize,
    /// 0: no limit. Compared with what the writer last measured.
    max_bytes: u64,
}

impl Ingest {
    pub fn new(
        config: &Config,
        writer: WriterHandle,
        store: Store,
        metrics: Metrics,
        draining: Arc<AtomicBool>,
        backlog: Backlog,
    ) -> Ingest {
        Ingest {
            endpoints: Arc::new(config.endpoints.clone()),
            max_body_bytes: config.ingest.max_body_bytes,
            idempotency_window_ms: clock::duration_ms(config.idempotency.window),
            writer,
            store,
            metrics,
            draining,
            egress: config.egress.clone(),
            backlog,
            max_pending: config.store.max_pending,
            max_bytes: config.store.max_bytes,
        }
    }

    async fn handle(&self, session: &mut ServerSession) -> Result<Response<Vec<u8>>, Reject> {
        let received = Instant::now();
        if self.draining.load(Ordering::Relaxed) {
            return Err(Reject::new(
                503,
                "shutting_down",
                "hookrelay is shutting down; retry against the restarted instance",
            ));
        }
        if let Some(why) = request::overloaded(
            self.backlog.get(),
            self.max_pending,
            self.writer.used_bytes(),
            self.max_bytes,
        ) {
            return Err(Reject::new(503, "overloaded", why));
        }
        let req = session.req_header();
        // A web page in a browser on this machine can reach localhost too: its cross-site POST
        // needs no preflight, and would be signed and delivered as the app's. Browsers mark
        // every such request (Origin, Sec-Fetch-Site); an app's HTTP client marks none.
        if req.headers.contains_key("origin") || req.headers.contains_key("sec-fetch-site") {
            return Err(Reject::new(
                403,
                "browser_request_refused",
                "ingest takes webhooks from the app, not from a web page (the request carries Origin or Sec-Fetch-Site)",
            ));
        }
        let method = req.method.as_str().to_string();
        let path_and_query = req
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let route = request::route(&method, &path_and_query, &self.endpoints)?;
        if req.headers.get_all("idempotency-key").iter().count() > 1 {
            return Err(Reject::new(
                400,
                "invalid_idempotency_key",
                "more than one Idempotency-Key header: send one",
            ));
        }
        let header_key = match req.headers.get("idempotency-key") {
            Some(v) => {
                let key = v.to_str().map_err(|_| {
                    Reject::new(
                        400,
                        "invalid_idempotency_key",
                        "the Idempotency-Key header is not printable ASCII",
                    )
                })?;
                request::validate_idempotency_key(key)?;
                Some(key.to_string())
            }
            None => None,
        };
        let header_pairs: Vec<(&str, &[u8])> = req
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        let headers = request::end_to_end_headers(header_pairs.iter().copied());
        let body = self.read_body(session).await?;
        let now = clock::now_ms();

        let write = match &route {
            Route::UrlPrefix { target } | Route::Endpoint { target, .. } => {
                let endpoint = match &route {
                    Route::Endpoint { name, .. } => Some(name.clone()),
                    _ => None,
                };
                let url = self.check_egress(target)?;
                // Stored as parsed (`HTTP://h:80/a/../b` as `http://h/b`): the URL the
                // request goes to, so listings, filters and replays by target find it as
                // its host is counted and shown.
                let record = DeliveryRecord::pending(
                    method.clone(),
                    url.as_str().to_string(),
                    endpoint,
                    None,
                    header_key.clone(),
                    now,
                    body.len(),
                );
                // Only a request with a key needs its claim.
                let idem = header_key
                    .as_deref()
                    .map(|k| self.target_claim(&route, &url, &method, k, &body, now));
                IngestWrite {
                    idem,
                    event_id: None,
                    deliveries: vec![NewDelivery {
                        host: url_host_key(&url),
                        next_at: now,
                        record: encode(&record),
                        payload: encode(&Payload { headers, body }),
                    }],
                    received,
                }
            }
            Route::Envelope => self.envelope_write(&body, header_key, now, received)?,
        };

        let result = self.writer.ingest(write).await.map_err(|e| {
            // The writer logs why, once per failed batch or when the disk fills: one line per
            // refused request would flood the log (and a full disk) under load.
            tracing::debug!(error = %e, "ingest could not be stored");
            Reject::new(
                503,
                "store_unavailable",
                format!("the webhook could not be stored: {e}"),
            )
        })?;
        Ok(self.answer(&route, result))
    }

    fn envelope_write(
        &self,
        body: &[u8],
        header_key: Option<String>,
        now: u64,
        received: Instant,
    ) -> Result<IngestWrite, Reject> {
        let env = envelope::parse(body)?;
        let key = match (env.idempotency_key.clone(), header_key) {
            (Some(a), Some(b)) if a != b => {
                return Err(Reject::new(
                    400,
                    "invalid_event",
                    "idempotency_key in the body and the Idempotency-Key header differ",
                ));
            }
            (a, b) => a.or(b),
        };
        let targets = envelope::matching(&env.event_type, &self.endpoints);
        if targets.is_empty() {
            return Err(Reject::new(
                422,
                "no_matching_endpoint",
                format!(
                    "no endpoint subscribes to events of type `{}`",
                    env.event_type
                ),
            ));
        }
        let mut hosts = Vec::with_capacity(targets.len());
        for ep in &targets {
            hosts.push(url_host_key(&self.check_egress(ep.url.as_str())?));
        }
        let event_id = Id::random(now);
        let event_body =
            envelope::delivery_body(&EventId(event_id).to_string(), &env, &clock::rfc3339(now));
        let mut headers = vec![("content-type".to_string(), b"application/json".to_vec())];
        if let Some(k) = &key {
            headers.push(("idempotency-key".to_string(), k.as_bytes().to_vec()));
        }
        let payload = encode(&Payload {
            headers,
            body: event_body.clone(),
        });
        let deliveries = targets
            .iter()
            .zip(hosts)
            .map(|(ep, host)| {
                let target = ep.url.to_string();
                let record = DeliveryRecord::pending(
                    "POST".into(),
                    target.clone(),
                    Some(ep.name.clone()),
                    Some(event_id),
                    key.clone(),
                    now,
                    event_body.len(),
                );
                NewDelivery {
                    host,
                    next_at: now,
                    record: encode(&record),
                    payload: payload.clone(),
                }
            })
            .collect();
        Ok(IngestWrite {
            idem: key
                .as_deref()
                .map(|k| self.claim("events", k, &[&envelope::identity(&env)], now)),
            event_id: Some(event_id),
            deliveries,
            received,
        })
    }

    /// The egress guard at ingest: a denied IP literal (or http:// under `https_only`) is
    /// refused before anything is stored. Names are checked when they are resolved. Returns
    /// the parsed target.
    fn check_egress(&self, target: &str) -> Result<url::Url, Reject> {
        let url = request::validate_target(target)?;
        let Err(denied) = self.egress.check_url(&url) else {
            return Ok(url);
        };
        let action = match self.egress.mode {
            Mode::Enforce => "blocked",
            Mode::Report => "reported",
        };
        self.metrics
            .egress_denied
            .with_label_values(&["ingest", action])
            .inc();
        let target = crate::redact::target(target);
        tracing::warn!(%target, reason = %denied, action, "egress guard");
        match self.egress.mode {
            Mode::Report => Ok(url),
            Mode::Enforce => Err(Reject::new(
                403,
                "target_forbidden",
                format!("the target is not allowed by the egress guard: {denied}"),
            )),
        }
    }

    /// The claim of a URL-prefix or named-endpoint request. What must match for a repeat to be
    /// the same request: the body, and for endpoints also the path after the endpoint name; a
    /// URL is compared as parsed (`HTTP://h:80/a/../b` is `http://h/b`), as it is delivered;
    /// and the method (POST, by far the most common, is left out, so the claims stored before
    /// the method counted still match their repeats). Where the version before made the claim
    /// differently (the target as sent, no method), that form goes with it as `legacy`, so a
    /// retry across an upgrade still matches.
    fn target_claim(
        &self,
        route: &Route,
        url: &url::Url,
        method: &str,
        key: &str,
        body: &[u8],
        now: u64,
    ) -> IdemClaim {
        let (scope, legacy_scope, rest) = match route {
            Route::Endpoint { name, rest, .. } => {
                let scope = format!("endpoint\0{name}");
                (scope.clone(), scope, rest.as_str())
            }
            Route::UrlPrefix { target } => (
                format!("url\0{}", url.as_str()),
                format!("url\0{target}"),
                "",
            ),
            // (An envelope's claim is made by `envelope_write`; this is its scope all the same.)
            Route::Envelope => ("events".to_string(), "events".to_string(), ""),
        };
        let identity: Vec<&[u8]> = if method == "POST" {
            vec![rest.as_bytes(), body]
        } else {
            vec![method.as_bytes(), rest.as_bytes(), body]
        };
        let mut claim = self.claim(&scope, key, &identity, now);
        if legacy_scope != scope || method != "POST" {
            let old = self.claim(&legacy_scope, key, &[rest.as_bytes(), body], now);
            claim.legacy = Some((old.key, old.body_hash));
        }
        claim
    }

    fn claim(&self, scope: &str, key: &str, identity: &[&[u8]], now: u64) -> IdemClaim {
        let mut h = Sha256::new();
        h.update(scope.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        IdemClaim {
            key: h.finalize().into(),
            body_hash: identity
                .iter()
                // Length-prefixed, so ("/a", "bc") and ("/ab", "c") differ.
                .fold(Sha256::new(), |h, part| {
                    h.chain_update((part.len() as u64).to_le_bytes())
                        .chain_update(part)
                })
                .finalize()
                .into(),
            expires_at: now.saturating_add(self.idempotency_window_ms),
            legacy: None,
        }
    }

    /// Reads the whole body, refusing more than `max_body_bytes` before and while reading.
    async fn read_body(&self, session: &mut ServerSession) -> Result<Vec<u8>, Reject> {
        let too_large = || {
            Reject::new(
                413,
                "payload_too_large",
                format!(
                    "the body is larger than ingest.max_body_bytes ({} bytes)",
                    self.max_body_bytes
                ),
            )
        };
        let headers = &session.req_header().headers;
        request::check_transfer_encoding(
            headers
                .get_all(http::header::TRANSFER_ENCODING)
                .iter()
                .map(|v| v.as_bytes()),
        )?;
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            return Err(too_large());
        }
        let expects_continue = headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue {
            session
                .write_continue_response()
                .await
                .map_err(|e| Reject::new(400, "bad_request", format!("could not continue: {e}")))?;
        }
        // The declared length sizes the buffer, up to a bound: a client that declares a large
        // body and never sends it must not hold that much memory.
        let mut body = Vec::with_capacity(declared.unwrap_or(0).min(PREALLOCATE_AT_MOST));
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_body_bytes {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    return Err(Reject::new(
                        400,
                        "bad_request",
                        format!("the request body could not be read: {e}"),
                    ));
                }
            }
        }
    }

    fn answer(&self, route: &Route, result: IngestResult) -> Response<Vec<u8>> {
        let (status, duplicate, event_id, ids) = match result {
            IngestResult::Created { event_id, ids } => (202, false, event_id, ids),
            IngestResult::Duplicate { event_id, ids } => (200, true, event_id, ids),
            IngestResult::KeyReused => {
                self.metrics.ingest("rejected");
                let r = Reject::new(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was already used for a different request to this target \
                     (another body or method, another path under a named endpoint, or another \
                     event); use a new key for a new webhook",
                );
                return json_response(r.status, r.body(), &[]);
            }
        };
        self.metrics
            .ingest(if duplicate { "duplicate" } else { "accepted" });
        let id_strings: Vec<String> = ids.iter().map(|id| DeliveryId(*id).to_string()).collect();
        let mut extra = vec![("hookrelay-delivery-id", id_strings.join(", "))];
        // Fields in alphabetical order: the order these bodies have always had.
        #[derive(serde::Serialize)]
        struct EventAck<'a> {
            deliveries: &'a [String],
            duplicate: bool,
            event_id: Option<String>,
        }
        #[derive(serde::Serialize)]
        struct Ack<'a> {
            duplicate: bool,
            id: Option<&'a String>,
            status: &'a str,
        }
        let body = match route {
            Route::Envelope => {
                let event = event_id.map(|e| EventId(e).to_string());
                if let Some(e) = &event {
                    extra.push(("hookrelay-event-id", e.clone()));
                }
                serde_json::to_vec(&EventAck {
                    deliveries: &id_strings,
                    duplicate,
                    event_id: event,
                })
            }
            _ => {
                let current = if duplicate {
                    ids.first()
                        .and_then(|id| self.store.delivery(*id).ok().flatten())
                        .map(|r| r.status.as_str())
                        // The original was pruned (store.retention shorter than the window).
                        .unwrap_or("pruned")
                } else {
                    "pending"
                };
                serde_json::to_vec(&Ack {
                    duplicate,
                    id: id_strings.first(),
                    status: current,
                })
            }
        };
        json_response(status, body.unwrap_or_default(), &extra)
    }
}

fn json_response(status: u16, body: Vec<u8>, extra: &[(&str, String)]) -> Response<Vec<u8>> {
    let mut builder = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len());
    for (name, value) in extra {
        builder = builder.header(*name, value.as_str());
    }
    if status == 503 {
        builder = builder.header(http::header::RETRY_AFTER, "1");
    }
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(Vec::new());
        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

impl Ingest {
    /// The response, and whether the request was refused. A refused request's body may be
    /// unread (a 413 is refused from its Content-Length): its connection is closed after the
    /// answer (see `linger`) rather than reused.
    async fn respond(&self, session: &mut ServerSession) -> (Response<Vec<u8>>, bool) {
        match self.handle(session).await {
            Ok(response) => (response, false),
            Err(reject) => {
                self.metrics.ingest("rejected");
                session.set_keepalive(None);
                let allow: Vec<(&str, String)> = reject
                    .allow
                    .map(|a| vec![("allow", a.to_string())])
                    .unwrap_or_default();
                (json_response(reject.status, reject.body(), &allow), true)
            }
        }
    }

    /// A request whose line or headers are not HTTP/1.1 gets `400 bad_request` naming the
    /// problem, and the connection is closed. The error's text is not logged as pingora's own
    /// server would: its context holds the raw header bytes, credentials included.
    async fn refuse_malformed(&self, session: &mut ServerSession, e: &pingora::Error) {
        self.metrics.ingest("rejected");
        let what = malformed_reason(
            e.cause.as_ref().map(|c| c.to_string()),
            e.context.as_ref().map(|c| c.as_str()),
        );
        tracing::debug!(problem = %what, "ingest: malformed request refused");
        let reject = if what.starts_with("Request header larger than") {
            Reject::new(
                431,
                "request_header_too_large",
                "the request line and headers are larger than 1 MiB",
            )
        } else {
            Reject::new(
                400,
                "bad_request",
                format!("the request line or headers are not valid HTTP/1.1: {what}"),
            )
        };
        let body = reject.body();
        let mut header = ServerSession::generate_error(reject.status);
        header.remove_header(&http::header::SERVER);
        let written = header
            .insert_header(http::header::CONTENT_TYPE, "application/json")
            .and_then(|()| header.set_content_length(body.len()));
        if written.is_ok() {
            let _ = session.write_error_response(header, body.into()).await;
        }
    }
}

/// Closes a connection whose request was refused unread the way RFC 9112 9.6 asks: stop
/// writing, then read and discard what the client is still sending (up to 1 s or
/// `LINGER_AT_MOST` bytes), so closing with unread bytes does not reset the connection before
/// the client reads the answer. (Clients that send the whole body before reading, as Python's
/// `http.client` does, see the 413 for a body of a few MiB instead of a broken pipe.)
async fn linger(session: ServerSession) {
    const LINGER_AT_MOST: usize = 16 << 20;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ServerSession::H1(v1) = session else {
        return;
    };
    let mut stream = v1.into_inner();
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 8192];
        let mut left = LINGER_AT_MOST;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// Pingora's `HttpServer` app, with one change: a malformed request is answered (see
/// `refuse_malformed`) instead of the connection being dropped without a word.
#[async_trait]
impl HttpServerApp for Ingest {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // A client may send its next request before reading this one's answer (RFC 9112
        // 9.3.2): answered in order on the same connection, not dropped with it.
        http.set_pipelining_enabled(true);
        match http.read_request().await {
            Ok(true) => {}
            // Closed before a request arrived: nothing to answer.
            Ok(false) => return None,
            Err(e) => {
                if e.etype == pingora::ErrorType::InvalidHTTPHeader {
                    self.refuse_malformed(&mut http, &e).await;
                    linger(http).await;
                } else {
                    tracing::debug!(error = ?e.etype, "ingest: request not read");
                }
                return None;
            }
        }
        // Kept open for 60 s between requests, unless the client asked to close (HTTP/1.0
        // without `Connection: keep-alive`, or `Connection: close`) or we are shutting down.
        let keep = http.get_keepalive().is_some() && !*shutdown.borrow();
        http.set_keepalive(keep.then_some(60));
        let (response, refused) = self.respond(&mut http).await;
        let (parts, body) = response.into_parts();
        let status = parts.status;
        let header: pingora::http::ResponseHeader = parts.into();
        let tasks = vec![
            HttpTask::Header(Box::new(header), body.is_empty()),
            HttpTask::Body(Some(body.into()), true),
        ];
        if let Err(e) = http.response_duplex_vec(tasks).await {
            // After a commit this is an ack the app never saw: it may send the webhook again
            // (a duplicate delivery unless it carries an idempotency key).
            tracing::warn!(error = ?e.etype, %status, "ingest: response not written");
            return None;
        }
        if refused {
            linger(http).await;
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(e) => {
                tracing::debug!(error = ?e.etype, "ingest: request not finished");
                None
            }
        }
    }
}

/// What was wrong with a request pingora could not parse, from its error's cause and context,
/// without quoting the request: pingora's context for a bad URL holds the whole URL (up to
/// 64 KiB, credentials in its query included).
fn malformed_reason(cause: Option<String>, context: Option<&str>) -> String {
    const MAX: usize = 200;
    if let Some(target) = context.and_then(|c| c.strip_prefix("invalid uri ")) {
        // The http crate's limit: 65,534 bytes.
        return if target.len() >= u16::MAX as usize {
            "the URL is longer than 64 KiB".into()
        } else {
            match cause {
                Some(c) => format!("the URL is not valid ({c})"),
                None => "the URL is not valid".into(),
            }
        };
    }
    let mut what = cause
        .or_else(|| context.map(str::to_string))
        .filter(|w| !w.starts_with("buf:"))
        .unwrap_or_else(|| "unreadable".into());
    if what.len() > MAX {
        let mut end = MAX;
        while !what.is_char_boundary(end) {
            end -= 1;
        }
        what.truncate(end);
        what.push('…');
    }
    what
}
