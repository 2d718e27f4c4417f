//! What the delivery detail shows of the stored request: its headers with secrets redacted,
//! and the start of its body.
//!
//! Pure functions of the stored payload. A header is redacted when `crate::redact` says it
//! may carry a credential.

use serde::Serialize;

use crate::model::Payload;

/// How much of the body the detail shows.
pub const BODY_PREVIEW_BYTES: usize = 16 * 1024;
/// What a redacted header value reads as.
pub const REDACTED: &str = "[redacted]";

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
    let redacted = crate::redact::is_secret(name, &value);
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
