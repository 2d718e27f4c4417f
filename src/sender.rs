//! The HTTP sender behind a trait: reqwest in production; a test can script its own.
//!
//! This is where transport errors become [`SendError`] variants, by walking the error's source
//! chain for typed causes (our resolver's error, `std::io::Error` kinds, rustls errors). It
//! follows no redirects and keeps connections alive for reuse.
//!
//! The egress guard is applied here, where the address is chosen: IP-literal targets are checked
//! before sending, and names go through [`GuardedResolver`], which hands reqwest only the
//! addresses the policy allows, so the connection goes to a checked address.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use rustls::pki_types::CertificateDer;

use crate::classify::SendError;
use crate::config::{Endpoint, EndpointTls};
use crate::egress::{EgressDenied, EgressPolicy, Mode};
use crate::metrics::Metrics;

/// How long the response body is read for its snippet once the status has arrived.
pub const SNIPPET_WAIT: Duration = Duration::from_secs(1);

/// One attempt's request, fully built.
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    pub method: Method,
    pub url: url::Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub timeout: Duration,
    /// The named endpoint whose own TLS settings (CA, client certificate) apply, and so whose
    /// client sends it; `None` for the shared client.
    pub tls_endpoint: Option<String>,
}

/// What came back, as much as an attempt record keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct SentResponse {
    pub status: u16,
    pub retry_after: Option<String>,
    /// The first `snippet_bytes` of the body, lossily decoded.
    pub snippet: String,
}

#[async_trait]
pub trait Sender: Send + Sync {
    async fn send(&self, req: OutgoingRequest) -> Result<SentResponse, SendError>;
}

pub struct ReqwestSender {
    client: reqwest::Client,
    /// Clients of the named endpoints with TLS settings of their own, by endpoint name.
    endpoint_clients: HashMap<String, reqwest::Client>,
    snippet_bytes: usize,
    egress: Arc<EgressPolicy>,
    metrics: Metrics,
}

/// What every client of a sender shares.
pub struct ClientSettings<'a> {
    pub connect_timeout: Duration,
    pub user_agent: &'a str,
    pub max_idle_per_host: usize,
    /// `delivery.ca_file`'s certificates, trusted besides the system's.
    pub ca_roots: &'a [CertificateDer<'static>],
}

impl ReqwestSender {
    pub fn new(
        settings: &ClientSettings<'_>,
        endpoints: &BTreeMap<String, Endpoint>,
        snippet_bytes: usize,
        egress: Arc<EgressPolicy>,
        metrics: Metrics,
    ) -> Result<ReqwestSender, reqwest::Error> {
        let build = |tls: &EndpointTls| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(settings.connect_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .user_agent(settings.user_agent)
                .pool_max_idle_per_host(settings.max_idle_per_host)
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .dns_resolver(Arc::new(GuardedResolver {
                    egress: egress.clone(),
                    metrics: metrics.clone(),
                }));
            let roots = settings
                .ca_roots
                .iter()
                .chain(&tls.roots)
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<Result<Vec<_>, _>>()?;
            if !roots.is_empty() {
                builder = builder.tls_certs_merge(roots);
            }
            if let Some(identity) = &tls.identity {
                builder = builder.identity(reqwest::Identity::from_pem(identity.pem())?);
            }
            builder.build()
        };
        let client = build(&EndpointTls::default())?;
        let mut endpoint_clients = HashMap::new();
        for ep in endpoints.values().filter(|ep| ep.tls.is_set()) {
            endpoint_clients.insert(ep.name.clone(), build(&ep.tls)?);
        }
        Ok(ReqwestSender {
            client,
            endpoint_clients,
            snippet_bytes,
            egress,
            metrics,
        })
    }
}

#[async_trait]
impl Sender for ReqwestSender {
    async fn send(&self, req: OutgoingRequest) -> Result<SentResponse, SendError> {
        // IP literals never reach the resolver: check them here. Ingest checked them too, but
        // the policy may have changed since the webhook was stored.
        if let Err(denied) = self.egress.check_url(&req.url)
            && !allow_anyway(
                &self.egress,
                &self.metrics,
                req.url.host_str().unwrap_or_default(),
                &denied,
            )
        {
            return Err(SendError::EgressBlocked(denied.to_string()));
        }
        let mut url = req.url;
        if (!url.username().is_empty() || url.password().is_some())
            && req
                .headers
                .iter()
                .any(|(n, _)| n == http::header::AUTHORIZATION)
        {
            // The request's own Authorization wins; reqwest would add the target's credentials
            // as a second one (two Authorization headers: an invalid request).
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        // hyper frames an empty body by sending no length at all; a server that requires one
        // for a method with a body (RFC 9110 8.6) answers 411, a permanent failure.
        let empty_with_body_method =
            req.body.is_empty() && matches!(req.method, Method::POST | Method::PUT | Method::PATCH);
        let client = req
            .tls_endpoint
            .as_ref()
            .and_then(|name| self.endpoint_clients.get(name))
            .unwrap_or(&self.client);
        let mut builder = client
            .request(req.method, url)
            .timeout(req.timeout)
            .body(req.body);
        for (name, value) in req.headers {
            builder = builder.header(name, value);
        }
        if empty_with_body_method {
            builder = builder.header(http::header::CONTENT_LENGTH, "0");
        }
        let mut response = builder.send().await.map_err(to_send_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut snippet = Vec::new();
        // Read at most the snippet, for at most `SNIPPET_WAIT`: the status has arrived and
        // decides the outcome, so a body that trickles (or never ends) must not keep the
        // attempt, its host's slot, or a drain waiting until the timeout. An error or a timeout
        // while reading it does not change the outcome.
        let snippet_deadline = tokio::time::Instant::now() + SNIPPET_WAIT;
        while snippet.len() < self.snippet_bytes {
            match tokio::time::timeout_at(snippet_deadline, response.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    let take = (self.snippet_bytes - snippet.len()).min(chunk.len());
                    snippet.extend_from_slice(&chunk[..take]);
                }
                Ok(Ok(None) | Err(_)) | Err(_) => break,
            }
        }
        Ok(SentResponse {
            status,
            retry_after,
            snippet: String::from_utf8_lossy(&snippet).into_owned(),
        })
    }
}

/// A resolver error of our own type, so classification can find it in the source chain.
#[derive(Debug, thiserror::Error)]
#[error("could not resolve {host}: {reason}")]
pub struct ResolveError {
    pub host: String,
    pub reason: String,
}

/// In report mode a denial is logged and counted, then let through. True: send anyway.
fn allow_anyway(
    egress: &EgressPolicy,
    metrics: &Metrics,
    host: &str,
    denied: &EgressDenied,
) -> bool {
    let action = match egress.mode {
        Mode::Enforce => "blocked",
        Mode::Report => "reported",
    };
    metrics
        .egress_denied
        .with_label_values(&["delivery", action])
        .inc();
    tracing::warn!(host, reason = %denied, action, "egress guard");
    egress.mode == Mode::Report
}

/// The system resolver (getaddrinfo through tokio), reporting failures as [`ResolveError`] and
/// keeping only the addresses the egress policy allows.
struct GuardedResolver {
    egress: Arc<EgressPolicy>,
    metrics: Metrics,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let egress = self.egress.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| ResolveError {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(ResolveError {
                    host,
                    reason: "no addresses".into(),
                }) as Box<dyn StdError + Send + Sync>);
            }
            let addrs = match egress.filter_addrs(&host, addrs.clone()) {
                Ok(kept) => kept,
                Err(denied) if allow_anyway(&egress, &metrics, &host, &denied) => addrs,
                Err(denied) => return Err(Box::new(denied) as Box<dyn StdError + Send + Sync>),
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Maps a reqwest error to the stage that failed, by the types in its source chain. The text
/// leaves out the URL: the attempt's delivery has its target, and a token in its query must
/// not be copied into the attempt's error (shown in listings and logs).
fn to_send_error(e: reqwest::Error) -> SendError {
    let e = e.without_url();
    let text = error_chain_text(&e);
    if e.is_builder() {
        return SendError::InvalidRequest(text);
    }
    let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(err) = source {
        if err.downcast_ref::<EgressDenied>().is_some() {
            return SendError::EgressBlocked(text);
        }
        if err.downcast_ref::<ResolveError>().is_some() {
            return SendError::Dns(text);
        }
        if err.downcast_ref::<rustls::Error>().is_some() {
            return SendError::Tls(text);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return SendError::Timeout(text);
            }
            // rustls reports handshake failures as io::Error(InvalidData) wrapping rustls::Error,
            // and the connector wraps that in another io::Error; `source()` skips what an
            // io::Error wraps, so look inside each layer.
            let mut inner = io.get_ref();
            while let Some(wrapped) = inner {
                if wrapped.downcast_ref::<rustls::Error>().is_some() {
                    return SendError::Tls(text);
                }
                inner = wrapped
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref());
            }
        }
        source = err.source();
    }
    if e.is_timeout() {
        return SendError::Timeout(text);
    }
    SendError::Network(text)
}

/// "error sending request: connection refused" rather than only the outermost layer.
fn error_chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(err) = source {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        source = err.source();
    }
    parts.join(": ")
}
