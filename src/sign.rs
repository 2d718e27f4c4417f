//! Standard Webhooks signing (<https://www.standardwebhooks.com>): the `webhook-id`,
//! `webhook-timestamp` and `webhook-signature` headers a receiver checks to know a webhook is
//! genuine and fresh.
//!
//! Pure functions: the caller passes the id, the time and the body. Signatures are computed at
//! send time and never stored; secrets never leave this module in a log or an error.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::SigningKey;

/// Decodes `whsec_<base64>` into the HMAC key.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| "a signing secret starts with `whsec_`".to_string())?;
    let key = STANDARD
        .decode(b64)
        .map_err(|_| "the part after `whsec_` is not base64".to_string())?;
    if key.len() < 16 {
        return Err("the key must be at least 16 bytes (24 base64 characters)".into());
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`, one per key, space-separated.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: u64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| format!("v1,{}", sign(&k.0, id, timestamp, body)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The three headers for one attempt. `id` is stable across retries of one delivery.
pub fn headers(
    keys: &[SigningKey],
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            signature_header(keys, id, timestamp, body),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published example, checked independently with
    /// Python's standard `hmac` module before it was written down here.
    #[test]
    fn matches_the_specification_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let got = signature_header(
            &[SigningKey(key)],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(got, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn one_signature_per_key_current_first() {
        let a = SigningKey(vec![1; 32]);
        let b = SigningKey(vec![2; 32]);
        let both = signature_header(&[a.clone(), b.clone()], "id", 5, b"x");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], signature_header(&[a], "id", 5, b"x"));
        assert_eq!(parts[1], signature_header(&[b], "id", 5, b"x"));
    }

    #[test]
    fn secrets_are_validated() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_not base64!").is_err());
        assert!(decode_secret("whsec_AAAA").is_err());
        assert_eq!(
            decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .len(),
            24
        );
    }
}
