//! Standard Webhooks signing (<https://www.standardwebhooks.com>): the `webhook-id`,
//! `webhook-timestamp` and `webhook-signature` headers a receiver checks to know a webhook is
//! genuine and fresh.
//!
//! Pure functions (apart from `generate`, which draws a new key): the caller passes the id, the
//! time and the body. Signatures are computed at send time and never stored; secrets never leave
//! this module in a log or an error. ed25519 is ring's (already linked for TLS).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::Sha256;

/// A decoded signing key. Which scheme it signs with follows from its prefix, as Standard
/// Webhooks has it: `whsec_` is a symmetric HMAC-SHA256 secret (signatures `v1,`), `whsk_` an
/// ed25519 secret key (signatures `v1a,`, verified by the receiver with the `whpk_` public key).
/// Its Debug output never shows the key.
#[derive(Clone)]
pub enum SigningKey {
    Hmac(Vec<u8>),
    Ed25519(Arc<Ed25519KeyPair>),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningKey::Hmac(_) => f.write_str("SigningKey::Hmac(..)"),
            SigningKey::Ed25519(_) => f.write_str("SigningKey::Ed25519(..)"),
        }
    }
}

impl SigningKey {
    /// The `whpk_` public key a receiver verifies `v1a` signatures with; `None` for an HMAC
    /// secret, which has no public half.
    pub fn public_key(&self) -> Option<String> {
        match self {
            SigningKey::Hmac(_) => None,
            SigningKey::Ed25519(pair) => Some(format!(
                "whpk_{}",
                STANDARD.encode(pair.public_key().as_ref())
            )),
        }
    }
}

/// Decodes a configured signing key: `whsec_<base64 key>` (HMAC) or `whsk_<base64 seed>`
/// (ed25519: the 32-byte seed, or the 64 bytes of seed and public key that some tools write,
/// whose public half must then belong to the seed).
pub fn decode_secret(secret: &str) -> Result<SigningKey, String> {
    if let Some(b64) = secret.strip_prefix("whsec_") {
        let key = STANDARD
            .decode(b64)
            .map_err(|_| "the part after `whsec_` is not base64".to_string())?;
        if key.len() < 16 {
            return Err("the key must be at least 16 bytes (24 base64 characters)".into());
        }
        return Ok(SigningKey::Hmac(key));
    }
    if let Some(b64) = secret.strip_prefix("whsk_") {
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| "the part after `whsk_` is not base64".to_string())?;
        let pair = match bytes.len() {
            32 => Ed25519KeyPair::from_seed_unchecked(&bytes),
            64 => Ed25519KeyPair::from_seed_and_public_key(&bytes[..32], &bytes[32..]),
            n => {
                return Err(format!(
                    "an ed25519 secret key is 32 bytes (its seed) or 64 (seed and public key), \
                     not {n}"
                ));
            }
        }
        .map_err(|_| {
            "the public half of the `whsk_` key does not belong to its seed".to_string()
        })?;
        return Ok(SigningKey::Ed25519(Arc::new(pair)));
    }
    if secret.starts_with("whpk_") {
        return Err(
            "this is a public key (`whpk_`): hookrelay signs with the secret key (`whsk_`), \
             the receiver verifies with the public one"
                .into(),
        );
    }
    Err("a signing secret starts with `whsec_` (HMAC) or `whsk_` (ed25519)".into())
}

/// A new random signing key in its configured form: an HMAC secret (`whsec_`, 32 bytes), or an
/// ed25519 secret key (`whsk_`, the 32-byte seed) with its public key (`whpk_`).
pub fn generate(ed25519: bool) -> Result<(String, Option<String>), String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the operating system's random number generator failed".to_string())?;
    if !ed25519 {
        return Ok((format!("whsec_{}", STANDARD.encode(bytes)), None));
    }
    let secret = format!("whsk_{}", STANDARD.encode(bytes));
    let public = decode_secret(&secret)?.public_key();
    Ok((secret, public))
}

/// One signature per key, space-separated, in the keys' order: `v1,<base64 HMAC-SHA256(key,
/// "id.timestamp.body")>` for an HMAC secret, `v1a,<base64 ed25519 signature of the same>` for
/// an ed25519 key.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut signed: Option<Vec<u8>> = None;
    let mut out = String::new();
    for key in keys {
        if !out.is_empty() {
            out.push(' ');
        }
        match key {
            SigningKey::Hmac(k) => {
                out.push_str("v1,");
                out.push_str(&hmac(k, id, timestamp, body));
            }
            SigningKey::Ed25519(pair) => {
                // ed25519 signs the whole message at once: assemble it once per attempt.
                let msg = signed.get_or_insert_with(|| {
                    let ts = timestamp.to_string();
                    let mut m = Vec::with_capacity(id.len() + ts.len() + 2 + body.len());
                    m.extend_from_slice(id.as_bytes());
                    m.push(b'.');
                    m.extend_from_slice(ts.as_bytes());
                    m.push(b'.');
                    m.extend_from_slice(body);
                    m
                });
                out.push_str("v1a,");
                out.push_str(&STANDARD.encode(pair.sign(msg).as_ref()));
            }
        }
    }
    out
}

fn hmac(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
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

    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    /// RFC 8032's first test key (section 7.1): its seed as `whsk_`, its public key as `whpk_`.
    const RFC8032_SECRET: &str = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
    const RFC8032_PUBLIC: &str = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    /// The Standard Webhooks specification's published example, checked independently with
    /// Python's standard `hmac` module before it was written down here.
    #[test]
    fn matches_the_specification_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let got = signature_header(&[key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, BODY);
        assert_eq!(got, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// The same message signed with RFC 8032's first key; the expected value computed
    /// independently with Python's `cryptography` (OpenSSL), whose public key for that seed is
    /// the RFC's.
    #[test]
    fn ed25519_matches_an_independent_vector() {
        let key = decode_secret(RFC8032_SECRET).unwrap();
        assert_eq!(key.public_key().as_deref(), Some(RFC8032_PUBLIC));
        let got = signature_header(&[key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, BODY);
        assert_eq!(
            got,
            "v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADpkJK7zgPePmPsle0zV9jSeGlHFG2NVAw=="
        );
    }

    #[test]
    fn one_signature_per_key_current_first() {
        let a = SigningKey::Hmac(vec![1; 32]);
        let b = SigningKey::Hmac(vec![2; 32]);
        let c = decode_secret(RFC8032_SECRET).unwrap();
        let all = signature_header(&[a.clone(), c.clone(), b.clone()], "id", 5, b"x");
        let parts: Vec<&str> = all.split(' ').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], signature_header(&[a], "id", 5, b"x"));
        assert_eq!(parts[1], signature_header(&[c], "id", 5, b"x"));
        assert!(parts[1].starts_with("v1a,"), "{all}");
        assert_eq!(parts[2], signature_header(&[b], "id", 5, b"x"));
    }

    #[test]
    fn secrets_are_validated() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_not base64!").is_err());
        assert!(decode_secret("whsec_AAAA").is_err());
        match decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap() {
            SigningKey::Hmac(k) => assert_eq!(k.len(), 24),
            other => panic!("{other:?}"),
        }
        assert!(decode_secret("whsk_not base64!").is_err());
        let short = decode_secret("whsk_AAAA").unwrap_err();
        assert!(short.contains("not 3"), "{short}");
        let public = decode_secret(RFC8032_PUBLIC).unwrap_err();
        assert!(public.contains("public key"), "{public}");
    }

    /// The 64-byte form (seed then public key) is accepted when the halves belong together.
    #[test]
    fn ed25519_keypair_form_is_checked() {
        let seed = STANDARD.decode(&RFC8032_SECRET[5..]).unwrap();
        let public = STANDARD.decode(&RFC8032_PUBLIC[5..]).unwrap();
        let pair = format!("whsk_{}", STANDARD.encode([seed.clone(), public].concat()));
        let key = decode_secret(&pair).unwrap();
        assert_eq!(key.public_key().as_deref(), Some(RFC8032_PUBLIC));
        let mut wrong = [seed, vec![7; 32]].concat();
        wrong[40] ^= 1;
        let err = decode_secret(&format!("whsk_{}", STANDARD.encode(wrong))).unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
    }

    #[test]
    fn generated_keys_decode_and_differ() {
        let (a, none) = generate(false).unwrap();
        assert!(none.is_none());
        assert!(matches!(decode_secret(&a).unwrap(), SigningKey::Hmac(k) if k.len() == 32));
        let (b, public) = generate(true).unwrap();
        let key = decode_secret(&b).unwrap();
        assert_eq!(key.public_key(), public);
        assert!(public.unwrap().starts_with("whpk_"));
        assert_ne!(generate(true).unwrap().0, b);
        assert_ne!(generate(false).unwrap().0, a);
    }

    /// A receiver's check: the `v1a` signature verifies with the public key alone.
    #[test]
    fn ed25519_signature_verifies_with_the_public_key() {
        let (secret, public) = generate(true).unwrap();
        let key = decode_secret(&secret).unwrap();
        let header = signature_header(&[key], "dlv_1", 1_700_000_000, b"{}");
        let sig = STANDARD
            .decode(header.strip_prefix("v1a,").unwrap())
            .unwrap();
        let public = STANDARD.decode(&public.unwrap()[5..]).unwrap();
        let verifier = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public);
        verifier.verify(b"dlv_1.1700000000.{}", &sig).unwrap();
        assert!(verifier.verify(b"dlv_1.1700000001.{}", &sig).is_err());
    }

    #[test]
    fn debug_never_shows_a_key() {
        let hmac = format!(
            "{:?}",
            decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
        );
        let ed = format!("{:?}", decode_secret(RFC8032_SECRET).unwrap());
        assert_eq!(hmac, "SigningKey::Hmac(..)");
        assert_eq!(ed, "SigningKey::Ed25519(..)");
    }
}
