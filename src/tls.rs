//! TLS material for delivery, read from files when the config is loaded: CA certificates
//! trusted besides the system's (`delivery.ca_file`, an endpoint's `ca_file`), and an
//! endpoint's client certificate for receivers that require mutual TLS (`client_cert` and
//! `client_key`).
//!
//! Everything is checked here, so a missing file, a file without a certificate, or a key that
//! does not belong to its certificate stops start-up with a message naming the key, before any
//! webhook is accepted for an endpoint that could never be reached.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// CA certificates (DER), trusted in addition to the system's.
pub type Roots = Vec<CertificateDer<'static>>;

/// A client certificate chain and its private key, as one PEM text (the form reqwest reads).
/// Its Debug output never shows the key.
#[derive(Clone)]
pub struct ClientIdentity {
    pem: Arc<Vec<u8>>,
}

impl ClientIdentity {
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(..)")
    }
}

/// What went wrong with a file, for the config error that names its key.
pub type Problem = String;

/// The certificates of a PEM file (a bundle may hold several), each checked to be usable as a
/// trust anchor.
pub fn read_roots(path: &Path) -> Result<Roots, Problem> {
    let certs = read_certs(path)?;
    for (i, cert) in certs.iter().enumerate() {
        rustls::RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| {
                format!(
                    "{}: certificate {} is not usable as a CA certificate: {e}",
                    path.display(),
                    i + 1
                )
            })?;
    }
    Ok(certs)
}

/// A client certificate chain (leaf first) and its private key, checked to belong together.
pub fn read_identity(cert_path: &Path, key_path: &Path) -> Result<ClientIdentity, Problem> {
    let chain = read_certs(cert_path)?;
    let bytes = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
        format!(
            "{} holds no private key (a PEM block `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)",
            key_path.display()
        )
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        format!(
            "{}: the key cannot sign TLS handshakes: {e}",
            key_path.display()
        )
    })?;
    rustls::sign::CertifiedKey::new(chain.clone(), signer)
        .keys_match()
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
                "the key in {} does not belong to the certificate in {}",
                key_path.display(),
                cert_path.display()
            ),
            rustls::Error::InconsistentKeys(_) => format!(
                "the key in {} cannot be compared with the certificate in {}: {e}",
                key_path.display(),
                cert_path.display()
            ),
            // The certificate itself is refused: webpki (rustls's certificate parser) reads
            // X.509 v3 only, and `openssl x509 -req` without `-extfile` makes a v1 one.
            e => format!(
                "{}: the first certificate cannot be used as a client certificate: {e} \
                 (an X.509 v3 certificate is needed; `openssl x509 -req` makes one with \
                 `-extfile` naming at least one extension, e.g. extendedKeyUsage=clientAuth)",
                cert_path.display()
            ),
        })?;
    let mut pem = Vec::new();
    for cert in &chain {
        pem_block(&mut pem, "CERTIFICATE", cert);
    }
    let label = match &key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pem_block(&mut pem, label, key.secret_der());
    Ok(ClientIdentity { pem: Arc::new(pem) })
}

fn read(path: &Path) -> Result<Vec<u8>, Problem> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_certs(path: &Path) -> Result<Roots, Problem> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (a PEM block `-----BEGIN CERTIFICATE-----`)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Appends one PEM block: the only sections reqwest's reader accepts, whatever else (an
/// `EC PARAMETERS` block from `openssl ecparam`, comments) the operator's file held.
fn pem_block(out: &mut Vec<u8>, label: &str, der: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    out.extend_from_slice(format!("-----BEGIN {label}-----\n").as_bytes());
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn ca() -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert, rcgen::Issuer::new(params, key))
    }

    #[test]
    fn roots_are_read_and_bad_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = ca();
        let (b, _) = ca();
        let bundle = write(
            dir.path(),
            "bundle.pem",
            &format!("# two CAs\n{}\n{}", a.pem(), b.pem()),
        );
        assert_eq!(read_roots(&bundle).unwrap().len(), 2);

        let missing = dir.path().join("missing.pem");
        assert!(read_roots(&missing).unwrap_err().contains("cannot read"));
        let empty = write(dir.path(), "empty.pem", "nothing here\n");
        let e = read_roots(&empty).unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
        let garbage = write(
            dir.path(),
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = read_roots(&garbage).unwrap_err();
        assert!(e.contains("certificate 1 is not usable"), "{e}");
    }

    /// An X.509 v1 certificate (what `openssl x509 -req` makes without `-extfile`) with its own
    /// key: refused for what it is, not as a key that does not belong to it.
    #[test]
    fn a_v1_certificate_is_named_as_such() {
        const V1_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBGjCBwQIUSfqpetnA1R7+dzEV3ufEC/9IchIwCgYIKoZIzj0EAwIwDTELMAkG\nA1UEAwwCY2EwIBcNMjYxMTI5MTIxODAyWhgPMjEyNjExMDUxMjE4MDJaMBExDzAN\nBgNVBAMMBmNsaWVudDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABN9EoEst3Iui\nXScOBVmLxbUyRlwvnyPo7jnBU6mGQ7pjw3dU2fqweVZBrV6rhEww6VKLOE4JEdUB\nklDEOB+m8VEwCgYIKoZIzj0EAwIDSAAwRQIhANtMBzwcv91JDFHKdl4X92jwstcj\nLvEOPTkf5Wy5G/+MAiBA5Tiiq7aOX/OMEYBrXKrIl6BtH0Rr+RgedmZKckKgAg==\n-----END CERTIFICATE-----\n";
        const V1_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghg6iBGF4/hUDTlgD\n1WEGo7tg8uIODHe0GDtBb365I2ShRANCAATfRKBLLdyLol0nDgVZi8W1MkZcL58j\n6O45wVOphkO6Y8N3VNn6sHlWQa1eq4RMMOlSizhOCRHVAZJQxDgfpvFR\n-----END PRIVATE KEY-----\n";
        let dir = tempfile::tempdir().unwrap();
        let cert = write(dir.path(), "v1.pem", V1_CERT);
        let key = write(dir.path(), "v1.key", V1_KEY);
        let Err(e) = read_identity(&cert, &key) else {
            panic!("a v1 certificate was accepted")
        };
        assert!(e.contains("X.509 v3"), "{e}");
        assert!(!e.contains("does not belong"), "{e}");
    }

    #[test]
    fn an_identity_needs_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let (_, issuer) = ca();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client.example".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let cert_path = write(dir.path(), "c.pem", &cert.pem());
        // An `EC PARAMETERS` block before the key, as `openssl ecparam -genkey` writes it.
        let key_path = write(
            dir.path(),
            "k.pem",
            &format!(
                "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
                key.serialize_pem()
            ),
        );
        let id = read_identity(&cert_path, &key_path).unwrap();
        assert!(reqwest::Identity::from_pem(id.pem()).is_ok());
        assert_eq!(format!("{id:?}"), "ClientIdentity(..)");

        let other = write(
            dir.path(),
            "other.pem",
            &rcgen::KeyPair::generate().unwrap().serialize_pem(),
        );
        let e = read_identity(&cert_path, &other).unwrap_err();
        assert!(e.contains("does not belong to the certificate"), "{e}");
        let e = read_identity(&cert_path, &cert_path).unwrap_err();
        assert!(e.contains("holds no private key"), "{e}");
        let e = read_identity(&key_path, &key_path).unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
    }
}
