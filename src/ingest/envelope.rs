//! The event envelope (`POST /v1/events`): parsing, fan-out to matching endpoints, and the JSON
//! body each endpoint receives. Pure functions; no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::request::{Reject, validate_idempotency_key};
use crate::config::Endpoint;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub event_type: String,
    /// Kept as the app wrote it and delivered as is: parsed into a `serde_json::Value`, a
    /// number beyond what `u64`/`i64`/`f64` hold would be changed on the way.
    pub payload: Box<RawValue>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<Envelope, Reject> {
    let invalid = |m: String| Reject::new(400, "invalid_event", m);
    let env: Envelope = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not a valid event envelope: {e}")))?;
    if env.event_type.is_empty() || env.event_type.len() > 255 {
        return Err(invalid(
            "`type` must be 1 to 255 bytes long (in UTF-8)".into(),
        ));
    }
    // Kept raw, but checked as a `Value` is: at most 128 levels deep, strings that decode
    // (no lone surrogate), numbers within what an `f64` reaches. So what was refused before
    // the payload was kept raw still is, and `identity` walks only such text.
    serde_json::from_str::<serde_json::Value>(env.payload.get())
        .map_err(|e| invalid(format!("`payload` is not valid JSON: {e}")))?;
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

/// The body every matching endpoint receives; the payload exactly as the app wrote it.
pub fn delivery_body(event_id: &str, env: &Envelope, created_at: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        event_type: &'a str,
        created_at: &'a str,
        payload: &'a RawValue,
    }
    serde_json::to_vec(&Body {
        id: event_id,
        event_type: &env.event_type,
        created_at,
        payload: &env.payload,
    })
    .unwrap_or_default()
}

/// What must match for a repeated envelope to be the same event: type and payload as JSON
/// values, so key order, spacing and string escapes do not matter, and no two numbers of
/// different value are taken for one (`18446744073709551617` and `18446744073709551618` are
/// two, though an `f64` cannot tell them apart).
///
/// The form is the one the versions before wrote (`serde_json`'s sorted keys and its printing
/// of each number: `10.50` as `10.5`, `1e2` as `100.0`, an integer apart from a float), so a
/// claim stored by them still matches, for every number whose value that printing keeps; any
/// other number (one `u64`, `i64` and `f64` cannot hold, or written out past the digits an
/// `f64` prints, such as 2^64 in full) is written as its exact value.
pub fn identity(env: &Envelope) -> Vec<u8> {
    let raw = env.payload.get();
    let mut out = Vec::with_capacity(raw.len() + env.event_type.len() + 8);
    out.push(b'[');
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &env.event_type);
    out.push(b',');
    let mut payload = Vec::with_capacity(raw.len());
    let mut cursor = Cursor {
        text: raw.as_bytes(),
        at: 0,
    };
    match cursor.value(&mut payload) {
        Ok(()) => out.extend_from_slice(&payload),
        // Not reached for a payload `parse` accepted (it checked it as a `Value`); the raw
        // text still identifies it.
        Err(()) => out.extend_from_slice(raw.as_bytes()),
    }
    out.push(b']');
    out
}

/// One pass over a JSON text that `parse` has checked (valid, at most 128 levels deep),
/// writing each value in its canonical form.
struct Cursor<'a> {
    text: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn skip_space(&mut self) {
        while self
            .text
            .get(self.at)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.at += 1;
        }
    }

    fn next_is(&mut self, byte: u8) -> bool {
        self.skip_space();
        let found = self.text.get(self.at) == Some(&byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn value(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
        self.skip_space();
        match *self.text.get(self.at).ok_or(())? {
            b'{' => {
                self.at += 1;
                // Sorted by key; a repeated key keeps its last value, as a `Value` does.
                let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                if !self.next_is(b'}') {
                    loop {
                        self.skip_space();
                        let key = self.string()?;
                        if !self.next_is(b':') {
                            return Err(());
                        }
                        let mut value = Vec::new();
                        self.value(&mut value)?;
                        members.insert(key, value);
                        if self.next_is(b'}') {
                            break;
                        }
                        if !self.next_is(b',') {
                            return Err(());
                        }
                    }
                }
                out.push(b'{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key).map_err(drop)?;
                    out.push(b':');
                    out.extend_from_slice(value);
                }
                out.push(b'}');
            }
            b'[' => {
                self.at += 1;
                out.push(b'[');
                if !self.next_is(b']') {
                    loop {
                        self.value(out)?;
                        if self.next_is(b']') {
                            break;
                        }
                        if !self.next_is(b',') {
                            return Err(());
                        }
                        out.push(b',');
                    }
                }
                out.push(b']');
            }
            b'"' => {
                let s = self.string()?;
                serde_json::to_writer(&mut *out, &s).map_err(drop)?;
            }
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                while self
                    .text
                    .get(self.at)
                    .is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    self.at += 1;
                }
                let raw = std::str::from_utf8(&self.text[start..self.at]).map_err(drop)?;
                number(raw, out);
            }
            _ => {
                // true, false, null
                let start = self.at;
                while self.text.get(self.at).is_some_and(u8::is_ascii_alphabetic) {
                    self.at += 1;
                }
                out.extend_from_slice(&self.text[start..self.at]);
            }
        }
        Ok(())
    }

    /// The string at the cursor (its opening quote), decoded.
    fn string(&mut self) -> Result<String, ()> {
        let start = self.at;
        if self.text.get(start) != Some(&b'"') {
            return Err(());
        }
        let mut i = start + 1;
        loop {
            match *self.text.get(i).ok_or(())? {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        self.at = i + 1;
        serde_json::from_slice(&self.text[start..self.at]).map_err(drop)
    }
}

/// Appends a number's canonical form: serde_json's printing of it where that keeps its value
/// (the earlier form), its exact value otherwise.
fn number(raw: &str, out: &mut Vec<u8>) {
    let exact = exact_number(raw);
    match serde_json::from_str::<serde_json::Number>(raw) {
        Ok(n) if exact_number(&n.to_string()) == exact => {
            out.extend_from_slice(n.to_string().as_bytes())
        }
        _ => out.extend_from_slice(exact.as_bytes()),
    }
}

/// A JSON number's exact value as `[-]DIGITSeEXP` with no leading or trailing zeros in
/// DIGITS (`0` for zero, of either sign), so two spellings of one value give one string.
/// (The raw text, for an exponent too large to work with: no value but its own spellings
/// can meet it.)
fn exact_number(raw: &str) -> String {
    let (negative, rest) = match raw.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, raw),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, "0"),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return "0".into();
    }
    let trimmed = digits.trim_end_matches('0');
    let exp = exp
        .trim_start_matches('+')
        .parse::<i64>()
        .ok()
        .and_then(|e| e.checked_sub(i64::try_from(frac.len()).ok()?))
        .and_then(|e| e.checked_add(i64::try_from(digits.len() - trimmed.len()).ok()?));
    match exp {
        Some(exp) => format!("{}{trimmed}e{exp}", if negative { "-" } else { "" }),
        None => raw.to_string(),
    }
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
        let long = format!(r#"{{"type":"order.{}","payload":1}}"#, "é".repeat(125));
        let err = parse(long.as_bytes()).unwrap_err();
        assert!(err.message.contains("255 bytes"), "{}", err.message);
    }

    fn id_of(payload: &str) -> Vec<u8> {
        identity(&parse(format!(r#"{{"type":"t","payload":{payload}}}"#).as_bytes()).unwrap())
    }

    /// One JSON value, one identity; two values, two, numbers beyond `f64` included.
    #[test]
    fn identity_compares_json_values_exactly() {
        let same = [
            (r#"{"a":1,"b":[1,2]}"#, r#"{ "b" : [ 1 , 2 ], "a" : 1 }"#),
            (r#""caf\u00e9""#, r#""café""#),
            ("10.5", "10.50"),
            ("1e2", "1E+2"),
            ("100.0", "1e2"),
            ("18446744073709551617", "1.8446744073709551617e19"),
            (r#"{"a":1,"a":2}"#, r#"{"a":2}"#),
        ];
        for (a, b) in same {
            assert_eq!(id_of(a), id_of(b), "{a} and {b}");
        }
        let different = [
            ("18446744073709551617", "18446744073709551618"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567891",
            ),
            ("1.23456789012345678901234", "1.23456789012345678901235"),
            ("1", "2"),
            (r#"{"a":1}"#, r#"{"a":"1"}"#),
            ("[1,2]", "[2,1]"),
            // As before: an integer and a float are told apart, and so are 0 and -0.
            ("1", "1.0"),
            ("0", "-0"),
        ];
        for (a, b) in different {
            assert_ne!(id_of(a), id_of(b), "{a} and {b}");
        }
    }

    /// A claim stored by the versions before (which wrote `serde_json::to_vec(&(type, Value))`)
    /// still matches every payload that a `Value` held exactly.
    #[test]
    fn identity_is_the_earlier_form_for_what_a_value_held_exactly() {
        for payload in [
            r#"{"order":{"id":"ord_1","total":10.5,"items":[1,-2,3.25e-3]},"ok":true,"n":null}"#,
            r##""caf\u00e9 \"q\"""##,
            "18446744073709551615",
            "-9223372036854775808",
            "1e2",
            "[]",
        ] {
            let value: serde_json::Value = serde_json::from_str(payload).unwrap();
            let earlier = serde_json::to_vec(&("t", &value)).unwrap();
            assert_eq!(id_of(payload), earlier, "{payload}");
        }
    }

    /// Kept raw, the payload is still checked as a `Value` is: too deep, a lone surrogate, a
    /// number beyond an `f64` are refused, and what passes is walked without recursion limits
    /// of its own to worry about.
    #[test]
    fn a_payload_a_value_would_refuse_is_refused() {
        let nested = |depth: usize| {
            format!(
                r#"{{"type":"t","payload":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        let deep = parse(nested(127).as_bytes()).unwrap();
        assert!(identity(&deep).ends_with(&"]".repeat(128).into_bytes()));
        for bad in [
            nested(200),
            nested(50_000),
            r#"{"type":"t","payload":{"a":"\ud800"}}"#.to_string(),
            r#"{"type":"t","payload":1e400}"#.to_string(),
        ] {
            let err = parse(bad.as_bytes()).unwrap_err();
            assert_eq!((err.status, err.code), (400, "invalid_event"), "{bad:.60}");
        }
    }

    /// Exponents at the ends of what the arithmetic holds do not wrap into another value.
    #[test]
    fn exact_numbers_do_not_overflow() {
        let max = format!("10e{}", i64::MAX);
        let min = format!("1e{}", i64::MIN);
        assert_ne!(exact_number(&max), exact_number(&min));
        assert_eq!(exact_number(&max), max, "kept as written");
        assert_ne!(
            exact_number(&format!("0.5e{}", i64::MIN)),
            exact_number(&format!("5e{}", i64::MAX))
        );
        assert_eq!(exact_number("-0.000"), "0");
        assert_eq!(exact_number("12.3400e+2"), "1234e0");
    }

    /// The payload reaches the receiver as the app wrote it, numbers and all.
    #[test]
    fn the_payload_is_delivered_as_written() {
        let env = parse(
            br#"{"type":"t","payload":{"id":18446744073709551617,"x":1e2,"z":-0,"f":1.23456789012345678901234}}"#,
        )
        .unwrap();
        let body = delivery_body("evt_1", &env, "2026-11-29T00:00:00Z");
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.ends_with(
                r#""payload":{"id":18446744073709551617,"x":1e2,"z":-0,"f":1.23456789012345678901234}}"#
            ),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], "evt_1");
        assert_eq!(v["type"], "t");
    }
}
