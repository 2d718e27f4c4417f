//! The CLI's HTTP client of the admin API: one request, one JSON answer or one typed error.
//!
//! It never reads the store or the config file; everything goes through the admin API, so the
//! CLI works against a remote sidecar exactly as against a local one.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
    #[error("{0}")]
    Usage(String),
}

pub struct AdminClient {
    base: String,
    /// The bearer token and where it came from (for the message of a 401).
    token: Option<(String, &'static str)>,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: &str, token: Option<(String, &'static str)>) -> Result<AdminClient, CliError> {
        if let Some((t, from)) = &token
            && http::HeaderValue::from_str(&format!("Bearer {t}")).is_err()
        {
            return Err(CliError::Usage(format!(
                "the token from {from} cannot be sent in an HTTP header: it holds a line break \
                 or another control character"
            )));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        self.call(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let mut parsed = url::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| CliError::Usage(format!("--admin-url {}: {e}", self.base)))?;
        if !query.is_empty() {
            parsed.query_pairs_mut().extend_pairs(query);
        }
        let url = parsed.to_string();
        let mut req = self.http.request(method, &url);
        if let Some((t, _)) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|e| CliError::Decode {
            url: url.clone(),
            reason: format!("HTTP {status}, not JSON: {e}"),
        })?;
        if status >= 400 {
            let mut message: String = json["error"]["message"].as_str().unwrap_or("").into();
            if status == 401 {
                message.push_str(&match &self.token {
                    None => " (give it with --token or HOOKRELAY_ADMIN_TOKEN)".to_string(),
                    Some((_, from)) => format!(" (the token from {from} was refused)"),
                });
            }
            return Err(CliError::Api {
                status,
                code: json["error"]["code"].as_str().unwrap_or("error").into(),
                message,
            });
        }
        Ok(json)
    }
}

/// The innermost cause ("Connection refused"), which is what an operator needs to see.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}
