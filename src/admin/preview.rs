//! What the delivery detail shows of the stored request: its headers with secrets redacted,
//! and the start of its body.
//!
//! Pure functions of the stored payload. Redaction errs on the side of hiding: a header is
//! redacted when its name looks like it carries a credential or its value looks like one.

use serde::Serialize;

use crate::model::Payload;

/// How much of the body the detail shows.
pub const BODY_PREVIEW_BYTES: usize = 16 * 1024;
/// What a redacted header value reads as.
pub const REDACTED: &str = "[redacted]";

/// Header names redacted whatever their value.
const SECRET_NAMES: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];
/// Parts of header names that mark a credential (`x-api-key`, `x-webhook-secret`,
/// `x-hub-signature-256`, `x-auth-token`...).
const SECRET_PARTS: &[&str] = &[
    "auth",
    "secret",
    "token",
    "key",
    "signature",
    "password",
    "passwd",
    "credential",
    "session",
    "cookie",
];
/// Names that contain a secret-looking part but are not secrets.
const PUBLIC_NAMES: &[&str] = &["idempotency-key"];
/// Value prefixes of credentials, compared case-insensitively.
const SECRET_VALUE_SCHEMES: &[&str] = &["bearer", "basic", "digest", "token"];

#[derive(Debug, Serialize, PartialEq)]
pub struct HeaderJson {
    pub name: String,
    pub value: String,
    pub redacted: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct RequestPreview {
    /// The stored end-to-end headers, in arrival order.
    pub headers: Vec<HeaderJson>,
    /// The first `BODY_PREVIEW_BYTES` of the body as text; `None` when the body is not UTF-8.
    pub body_preview: Option<String>,
    /// Whether the body is longer than the preview.
    pub body_truncated: bool,
}

pub fn request_preview(payload: &Payload) -> RequestPreview {
    RequestPreview {
        headers: payload
            .headers
            .iter()
            .map(|(name, value)| header(name, value))
            .collect(),
        body_preview: text_prefix(&payload.body, BODY_PREVIEW_BYTES),
        body_truncated: payload.body.len() > BODY_PREVIEW_BYTES,
    }
}

fn header(name: &str, value: &[u8]) -> HeaderJson {
    let value = String::from_utf8_lossy(value);
    let redacted = is_secret(name, &value);
    HeaderJson {
        name: name.to_string(),
        value: if redacted {
            REDACTED.to_string()
        } else {
            value.into_owned()
        },
        redacted,
    }
}

/// Whether a header (name lower case, as stored) may carry a credential.
pub fn is_secret(name: &str, value: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if PUBLIC_NAMES.contains(&name.as_str()) {
        return false;
    }
    // The scheme word of `Bearer abc`, `Basic\tabc`: any whitespace ends it.
    let scheme = value
        .trim_start()
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let has_credentials = value.trim_start().len() > scheme.len();
    SECRET_NAMES.contains(&name.as_str())
        || SECRET_PARTS.iter().any(|part| name.contains(part))
        || (has_credentials && SECRET_VALUE_SCHEMES.contains(&scheme.as_str()))
}

/// Up to `max` bytes of `body` as UTF-8, cut at a character boundary; `None` if it is not text.
fn text_prefix(body: &[u8], max: usize) -> Option<String> {
    let prefix = &body[..body.len().min(max)];
    match std::str::from_utf8(prefix) {
        Ok(s) => Some(s.to_string()),
        // A character cut in half by the limit is fine; anything else is binary.
        Err(e) if e.error_len().is_none() && body.len() > max => {
            Some(String::from_utf8_lossy(&prefix[..e.valid_up_to()]).into_owned())
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised() {
        let cases = [
            ("authorization", "Bearer abc", true),
            ("proxy-authorization", "x", true),
            ("cookie", "a=b", true),
            ("x-api-key", "k", true),
            ("x-webhook-secret", "s", true),
            ("x-hub-signature-256", "sha256=00", true),
            ("x-auth-token", "t", true),
            ("x-custom", "Bearer abc", true),
            ("x-custom", "  basic Zm9vOmJhcg==", true),
            ("x-custom", "Bearer\tabc", true),
            ("x-custom", "token", false),
            ("idempotency-key", "ord-1", false),
            ("content-type", "application/json", false),
            ("user-agent", "app/1.0", false),
            ("x-request-id", "r-1", false),
        ];
        for (name, value, secret) in cases {
            assert_eq!(is_secret(name, value), secret, "{name}: {value}");
        }
    }

    #[test]
    fn preview_redacts_and_keeps_order() {
        let payload = Payload {
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("authorization".into(), b"Bearer s3cret".to_vec()),
                ("idempotency-key".into(), b"ord-1".to_vec()),
            ],
            body: br#"{"a":1}"#.to_vec(),
        };
        let p = request_preview(&payload);
        let shown: Vec<_> = p
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str(), h.redacted))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("content-type", "application/json", false),
                ("authorization", REDACTED, true),
                ("idempotency-key", "ord-1", false),
            ]
        );
        assert_eq!(p.body_preview.as_deref(), Some(r#"{"a":1}"#));
        assert!(!p.body_truncated);
        assert!(!serde_json::to_string(&p).unwrap().contains("s3cret"));
    }

    #[test]
    fn body_prefix_is_text_or_nothing() {
        assert_eq!(text_prefix(b"hello", 3).as_deref(), Some("hel"));
        // "é" is two bytes; a limit inside it drops the half character.
        assert_eq!(text_prefix("aé".as_bytes(), 2).as_deref(), Some("a"));
        assert_eq!(text_prefix(&[0xff, 0xfe, 0x00], 16), None);
        assert_eq!(text_prefix(b"", 16).as_deref(), Some(""));
    }
}
