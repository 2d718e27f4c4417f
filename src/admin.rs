//! The admin listener: routes, token auth, and the JSON error shape every handler shares.
//!
//! Handlers read store snapshots and ask the writer for changes; they never open a write
//! transaction or touch the scheduler's queue directly (they send it a [`Control`] after the
//! change is stored). Handlers live by topic in `admin/`: `deliveries.rs`, `batches.rs`,
//! `control.rs` (pause, hosts, stats); JSON shapes in `json.rs`, request parsing in `params.rs`.
//! Every refusal, including axum's own (bad JSON, bad query, unknown route, wrong method), is
//! `{"error": {"code", "message"}}`.

pub mod batches;
pub mod control;
pub mod deliveries;
pub mod json;
pub mod listen;
pub mod params;
pub mod preview;
pub mod series;
pub mod ui;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::config::AdminConfig;
use crate::health::{EndpointGate, HostHealth};
use crate::metrics::Metrics;
use crate::schedule::{Control, InFlight};
use crate::store::Store;
use crate::store::writer::WriterHandle;

/// The OpenAPI description served at `/openapi.json`, written by hand next to the routes.
pub const OPENAPI: &str = include_str!("admin/openapi.json");

/// What every handler may use.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub writer: WriterHandle,
    pub in_flight: InFlight,
    pub metrics: Metrics,
    pub draining: Arc<AtomicBool>,
    /// Endpoints disabled by a 410; `POST /v1/endpoints/{name}/enable` clears one.
    pub gate: EndpointGate,
    /// Per-host breaker and Retry-After state, published by the scheduler.
    pub host_health: HostHealth,
    /// Operator instructions to the scheduler, sent after the change is stored.
    pub control_tx: mpsc::UnboundedSender<Control>,
    pub config: Arc<AdminConfig>,
    /// The configured endpoints: enabling any other name is a 404 (unless it is still disabled
    /// from an earlier config); `GET /v1/endpoints` shows them.
    pub endpoints: Arc<std::collections::BTreeMap<String, crate::config::Endpoint>>,
    /// `notify.endpoint`: the endpoint that gets hookrelay's own events.
    pub notify: Option<String>,
    /// Held by a pause or resume from reading the stored state until the scheduler is told, so
    /// concurrent ones reach the scheduler in the order they were stored.
    pub pauses: Arc<tokio::sync::Mutex<()>>,
}

/// One path segment (an id, a host, an endpoint name). axum's own rejection of a segment that is
/// not UTF-8 is plain text; this turns it into our JSON error like every other bad request.
pub struct Segment(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Segment(v))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text()))
    }
}

/// An API error: status, code and message, rendered as `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// Sends the scheduler a `Control` that answers on a oneshot (`make` builds it around the
/// sender) and waits for the answer; `503 shutting_down` once the scheduler has stopped.
pub(crate) async fn ask_scheduler<T>(
    s: &AdminState,
    make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> crate::schedule::Control,
) -> Result<T, ApiError> {
    let gone = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the scheduler has stopped",
        )
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.control_tx.send(make(tx)).map_err(|_| gone())?;
    rx.await.map_err(|_| gone())
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} with id `{id}`"),
        )
    }

    pub fn store(e: crate::store::StoreError) -> ApiError {
        tracing::error!(error = %e, "admin request failed in the store");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON request body; an empty body is `T::default()`. Rejections are our JSON errors.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let code = match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                _ => "bad_request",
            };
            ApiError::new(e.status(), code, e.body_text())
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad("bad_json", format!("invalid JSON body: {e}")))
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/deliveries", get(deliveries::list))
        .route("/v1/deliveries/{id}", get(deliveries::show))
        .route("/v1/deliveries/{id}/cancel", post(deliveries::cancel))
        .route("/v1/deliveries/{id}/retry", post(deliveries::retry))
        .route("/v1/batches", get(batches::list).post(batches::create))
        .route("/v1/batches/{id}", get(batches::show))
        .route("/v1/pause", get(control::pause_state).post(control::pause))
        .route("/v1/resume", post(control::resume))
        .route("/v1/hosts", get(control::hosts))
        .route("/v1/hosts/{host}/pause", post(control::host_pause))
        .route("/v1/hosts/{host}/resume", post(control::host_resume))
        .route("/v1/hosts/{host}/retry", post(control::host_retry))
        .route("/v1/stats", get(control::stats))
        .route("/v1/endpoints", get(list_endpoints))
        .route("/v1/endpoints/{name}/enable", post(enable_endpoint))
        .route("/v1/health/hosts", get(host_health))
        .route("/v1/series", get(series::series))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(run_to_completion))
        .layer(middleware::from_fn_with_state(state.clone(), browser_guard))
        // After the auth layer: the dashboard's files hold no data, and the page must load to
        // ask for the token. Its API calls go through the layer like any client's.
        .merge(ui::router())
        .with_state(state)
}

/// Runs every change an operator asks for to its end, even if the client goes away meanwhile.
/// hyper drops a handler whose connection closed; a cancel, pause or endpoint enable dropped
/// between its store write and its word to the scheduler would leave the two disagreeing (a
/// withdrawn delivery never requeued, a pause stored but not applied). Reads are left as they
/// are: dropping one harms nothing.
async fn run_to_completion(req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD {
        return next.run(req).await;
    }
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the request's task ended abnormally: {e}"),
        )
        .into_response(),
    }
}

/// What a web page in the operator's browser must not do, whatever else it loads: change
/// anything from another origin (a cross-site form or `fetch` needs no token when none is set,
/// and no CORS preflight for a "simple" request), or, without a token, read or change anything
/// through a name of its own that it re-pointed at this machine (DNS rebinding: the Host is
/// then the attacker's name). Clients that are not browsers send neither `Origin` nor
/// `Sec-Fetch-Site`, and name the listener by address.
async fn browser_guard(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    if let Err(e) = browser_check(&s.config, &req) {
        return e.into_response();
    }
    next.run(req).await
}

fn browser_check(config: &AdminConfig, req: &Request) -> Result<(), ApiError> {
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let host = header(header::HOST)
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let changes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if changes {
        // A browser that sends Sec-Fetch-Site says itself where the request comes from (a
        // reverse proxy may rewrite Host, so Origin is compared with it only without one).
        let site = header(header::HeaderName::from_static("sec-fetch-site"));
        let cross_site = site.is_some_and(|s| s != "same-origin" && s != "none");
        let other_origin = site.is_none()
            && header(header::ORIGIN).is_some_and(|origin| {
                let authority = origin
                    .split_once("://")
                    .map(|(_, rest)| rest.trim_end_matches('/'));
                match (authority, host.as_deref()) {
                    (Some(a), Some(h)) => !a.eq_ignore_ascii_case(h),
                    _ => true,
                }
            });
        if cross_site || other_origin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin_refused",
                "a web page from another origin may not change anything here (its Origin or Sec-Fetch-Site says so)",
            ));
        }
    }
    let probes = matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics");
    if config.token.is_none() && !probes {
        // `localhost.` is `localhost`: one trailing dot is dropped, here and in the list.
        let name = host
            .as_deref()
            .map(host_name)
            .unwrap_or_default()
            .trim_end_matches('.');
        let allowed = host.is_none()
            || name.eq_ignore_ascii_case("localhost")
            || name.parse::<std::net::IpAddr>().is_ok()
            || config
                .allowed_hosts
                .iter()
                .any(|h| h.trim_end_matches('.').eq_ignore_ascii_case(name));
        if !allowed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "without admin.token the admin API answers only requests that name it by IP address, localhost or a name in admin.allowed_hosts (`{name}` is none of these): a defence against DNS rebinding. Add the name to admin.allowed_hosts, or set admin.token"
                ),
            ));
        }
    }
    Ok(())
}

/// The name part of a Host value: `[::1]:7701` -> `::1`, `localhost:7701` -> `localhost`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Whether `path` needs the token under this config.
pub fn needs_token(config: &AdminConfig, path: &str) -> bool {
    let protected = match path {
        "/healthz" | "/readyz" => false,
        "/metrics" => !config.metrics_public,
        _ => true,
    };
    protected && config.token.is_some()
}

async fn auth(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    if !needs_token(&s.config, req.uri().path()) {
        return next.run(req).await;
    }
    let expected = s.config.token.as_deref().unwrap_or_default();
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 11.1): `bearer` and `BEARER` are `Bearer`.
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => next.run(req).await,
        _ => {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route needs `Authorization: Bearer <admin.token>`",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

/// Compares without an early exit, so response time does not leak how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Alive unless the store can take no write again before a restart (see
/// `WriterHandle::latched`): then a liveness probe's restart is the way back.
async fn healthz(State(s): State<AdminState>) -> Response {
    if s.writer.latched() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_latched",
            "the store refuses every write since one failed; restart hookrelay to reopen it",
        )
        .into_response();
    }
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Ready while the store takes writes and no drain has begun.
async fn readyz(State(s): State<AdminState>) -> Response {
    if s.draining.load(Ordering::Relaxed) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "draining")
            .into_response();
    }
    if !s.writer.healthy() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the last store commit failed",
        )
        .into_response();
    }
    axum::Json(serde_json::json!({"status": "ready"})).into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let age = json::oldest_pending_age_secs(&s.store).ok().flatten();
    s.metrics.oldest_pending_age.set(age.unwrap_or(0) as i64);
    s.metrics.store_bytes.set(s.store.file_bytes() as i64);
    s.metrics.store_used_bytes.set(s.writer.used_bytes() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Re-enables an endpoint a 410 disabled: persisted first, then its held deliveries resume.
async fn enable_endpoint(
    State(s): State<AdminState>,
    Segment(name): Segment,
) -> Result<Response, ApiError> {
    let was_disabled = s.gate.is_disabled(&name);
    if !was_disabled && !s.endpoints.contains_key(&name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint named `{name}` is configured or disabled"),
        ));
    }
    let store = s.writer.set_endpoint_disabled(&name, false, None);
    s.gate
        .store_and_set(&name, false, store)
        .await
        .map_err(ApiError::store)?;
    if was_disabled {
        tracing::info!(endpoint = %name, "endpoint enabled by an operator");
    }
    Ok(axum::Json(serde_json::json!({
        "endpoint": name,
        "disabled": false,
        "was_disabled": was_disabled,
    }))
    .into_response())
}

/// The configured endpoints as delivery uses them (secrets left out: a signing key shows its
/// scheme and, for ed25519, its public key), each with whether a 410 has disabled it, and the
/// names disabled by a 410 that the configuration no longer has.
async fn list_endpoints(State(s): State<AdminState>) -> Response {
    let disabled = s.gate.disabled();
    let endpoints: Vec<serde_json::Value> = s
        .endpoints
        .values()
        .map(|ep| {
            let notify = s.notify.as_deref() == Some(ep.name.as_str());
            json::endpoint(ep, disabled.contains(&ep.name), notify)
        })
        .collect();
    let gone: Vec<&String> = disabled
        .iter()
        .filter(|name| !s.endpoints.contains_key(*name))
        .collect();
    axum::Json(serde_json::json!({
        "data": endpoints,
        "disabled_not_configured": gone,
    }))
    .into_response()
}

/// Hosts whose circuit is open or half-open, or held by a Retry-After, and disabled endpoints.
async fn host_health(State(s): State<AdminState>) -> Response {
    axum::Json(json::health(&s.host_health, &s.gate)).into_response()
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_read_from_host_values() {
        for (host, name) in [
            ("[::1]:7701", "::1"),
            ("[::1]", "::1"),
            ("localhost:7701", "localhost"),
            ("127.0.0.1", "127.0.0.1"),
            ("hookrelay", "hookrelay"),
        ] {
            assert_eq!(host_name(host), name, "{host}");
        }
    }

    #[test]
    fn token_applies_to_everything_but_health_and_optionally_metrics() {
        let mut c = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
            metrics_public: false,
            max_batch: 10,
            allowed_hosts: Vec::new(),
        };
        assert!(!needs_token(&c, "/v1/stats"));
        c.token = Some("0123456789abcdef".into());
        let cases = [
            ("/healthz", false),
            ("/readyz", false),
            ("/metrics", true),
            ("/v1/stats", true),
            ("/openapi.json", true),
            ("/nope", true),
        ];
        for (path, want) in cases {
            assert_eq!(needs_token(&c, path), want, "{path}");
        }
        c.metrics_public = true;
        assert!(!needs_token(&c, "/metrics"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    /// The document's lists of states and classifications are the model's.
    #[test]
    fn the_openapi_enums_list_every_status_and_classification() {
        use crate::model::{Classification, Status};
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let param = |name: &str| {
            doc["paths"]["/v1/deliveries"]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["schema"]["enum"]
                .clone()
        };
        let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        let classes: Vec<&str> = Classification::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(param("status"), serde_json::json!(statuses));
        assert_eq!(param("classification"), serde_json::json!(classes));
        let filter = &doc["components"]["schemas"]["Filter"]["properties"];
        assert_eq!(filter["classification"]["enum"], serde_json::json!(classes));
    }

    #[tokio::test]
    async fn a_change_runs_to_its_end_when_the_client_goes_away() {
        use std::time::Duration;
        use tokio::sync::Notify;
        use tower::ServiceExt;

        let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let done = Arc::new(AtomicBool::new(false));
        let handler = {
            let (started, release, done) = (started.clone(), release.clone(), done.clone());
            move || async move {
                started.notify_one();
                release.notified().await;
                done.store(true, Ordering::SeqCst);
                "changed"
            }
        };
        let app = Router::new()
            .route("/change", post(handler))
            .layer(middleware::from_fn(run_to_completion));
        let request = Request::post("/change")
            .body(axum::body::Body::empty())
            .unwrap();
        let call = tokio::spawn(app.oneshot(request));
        started.notified().await;
        // The client goes away: its request future is dropped mid-handler.
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        release.notify_one();
        let finished = tokio::time::timeout(Duration::from_secs(10), async {
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(finished.is_ok(), "the handler was dropped halfway");
    }
}
