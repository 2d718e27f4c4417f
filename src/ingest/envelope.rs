//! The event envelope (`POST /v1/events`): parsing, fan-out to matching endpoints, and the JSON
//! body each endpoint receives. Pure functions; no I/O.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::request::{Reject, validate_idempotency_key};
use crate::config::Endpoint;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub event_type: String,
    pub payload: serde_json::Value,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<Envelope, Reject> {
    let invalid = |m: String| Reject::new(400, "invalid_event", m);
    let env: Envelope = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not a valid event envelope: {e}")))?;
    if env.event_type.is_empty() || env.event_type.len() > 255 {
        return Err(invalid("`type` must be 1 to 255 characters".into()));
    }
    if let Some(key) = &env.idempotency_key {
        validate_idempotency_key(key)?;
    }
    Ok(env)
}

/// The endpoints whose `events` patterns match `event_type`, in name order.
pub fn matching<'a>(
    event_type: &str,
    endpoints: &'a BTreeMap<String, Endpoint>,
) -> Vec<&'a Endpoint> {
    endpoints
        .values()
        .filter(|ep| ep.events.iter().any(|p| glob_match(p, event_type)))
        .collect()
}

/// `*` matches any run of characters (including dots and nothing); everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The body every matching endpoint receives.
pub fn delivery_body(event_id: &str, env: &Envelope, created_at: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": event_id,
        "type": env.event_type,
        "created_at": created_at,
        "payload": env.payload,
    }))
    .unwrap_or_default()
}

/// What must match for a repeated envelope to be the same event: type and payload, with object
/// keys in a canonical order (serde_json's map is sorted), so whitespace does not matter.
pub fn identity(env: &Envelope) -> Vec<u8> {
    serde_json::to_vec(&(&env.event_type, &env.payload)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let cases = [
            ("*", "order.created", true),
            ("*", "", true),
            ("order.*", "order.created", true),
            ("order.*", "order.", true),
            ("order.*", "orders.created", false),
            ("order.created", "order.created", true),
            ("order.created", "order.updated", false),
            ("*.created", "order.created", true),
            ("*.created", "order.updated", false),
            ("a*b*c", "a-x-b-y-c", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn envelopes() {
        assert!(parse(br#"{"type":"a.b","payload":{"x":1},"idempotency_key":"k"}"#).is_ok());
        assert!(parse(br#"{"type":"a.b","payload":null}"#).is_ok());
        for bad in [
            &b"not json"[..],
            br#"{"payload":{}}"#,
            br#"{"type":"a"}"#,
            br#"{"type":"","payload":1}"#,
            br#"{"type":5,"payload":1}"#,
            br#"{"type":"a","payload":1,"extra":true}"#,
            br#"[]"#,
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(
                (err.status, err.code),
                (400, "invalid_event"),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let a = parse(br#"{"type":"t","payload":{"a":1,"b":2}}"#).unwrap();
        let b = parse(br#"{ "payload": {"b":2, "a":1}, "type":"t" }"#).unwrap();
        assert_eq!(identity(&a), identity(&b));
    }
}
