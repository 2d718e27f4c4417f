//! Delivery over TLS to receivers whose certificates a private CA signed (`delivery.ca_file`)
//! and to receivers that require a client certificate (an endpoint's `client_cert`), against
//! real TLS servers on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{FAST_RETRY, Sidecar, classes};

/// A CA: its certificate and what signs with it.
struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (an IP address becomes an IP SAN), and its key.
    fn leaf(&self, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        (params.signed_by(&key, &self.issuer).unwrap(), key)
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An HTTPS server on loopback answering 200 to every request, recording for each whether the
/// client presented a certificate. With `client_ca`, it requires one that CA signed.
struct TlsReceiver {
    addr: SocketAddr,
    /// One entry per request: whether its connection carried a client certificate.
    requests: Arc<Mutex<Vec<bool>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsReceiver {
    async fn start(server: &Ca, client_ca: Option<&Ca>) -> TlsReceiver {
        let (cert, key) = server.leaf(&["127.0.0.1"]);
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.cert.der().clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<bool>>> = Arc::default();
        let log = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let with_cert = tls.get_ref().1.peer_certificates().is_some();
                    // Read the head and a Content-Length body, then answer and close.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    log.lock().unwrap().push(with_cert);
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TlsReceiver {
            addr,
            requests,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<bool> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn send(sidecar: &Sidecar, path: &str) -> String {
    let resp = sidecar
        .http
        .post(sidecar.ingest_url(path))
        .header("content-type", "application/json")
        .body(r#"{"tls":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{path}");
    let json: serde_json::Value = resp.json().await.unwrap();
    json["id"].as_str().unwrap().to_string()
}

/// A receiver whose certificate a private CA signed is reached once `delivery.ca_file` names
/// that CA, and only then; a receiver that requires a client certificate gets the endpoint's,
/// and refuses an endpoint that has none.
#[tokio::test]
async fn private_cas_and_client_certificates_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("hookrelay test server CA");
    let client_ca = Ca::new("hookrelay test client CA");
    let (client_cert, client_key) = client_ca.leaf(&["hookrelay.client"]);
    let ca_file = write(dir.path(), "server-ca.pem", &server_ca.cert.pem());
    let cert_file = write(dir.path(), "client.pem", &client_cert.pem());
    let key_file = write(dir.path(), "client.key", &client_key.serialize_pem());

    let plain = TlsReceiver::start(&server_ca, None).await;
    let mutual = TlsReceiver::start(&server_ca, Some(&client_ca)).await;

    // Without the CA, the private CA's receiver is an unknown issuer; an endpoint that names
    // the CA itself (`ca_file` of its own) reaches it.
    let untrusting = Sidecar::start(&format!(
        "{FAST_RETRY}[endpoints.own_ca]\nurl = \"{}\"\nca_file = \"{}\"\n",
        plain.url("/own"),
        ca_file.display()
    ))
    .await;
    let (_, eps) = untrusting.get_json("/v1/endpoints").await;
    assert_eq!(
        eps["data"][0]["tls"],
        serde_json::json!({"own_ca": true, "client_certificate": false})
    );
    let id = send(&untrusting, &format!("/{}", plain.url("/a"))).await;
    let d = untrusting.wait_status(&id, "failed").await;
    assert_eq!(classes(&d), vec!["TLS_ERROR"; 5], "{d}");
    assert!(plain.requests().is_empty());
    let id = send(&untrusting, "/e/own_ca").await;
    untrusting.wait_status(&id, "delivered").await;
    assert_eq!(plain.requests(), vec![false]);
    drop(untrusting);

    let config = format!(
        "{FAST_RETRY}[delivery]\nca_file = \"{ca}\"\n\
         [endpoints.mutual]\nurl = \"{mutual_url}\"\nclient_cert = \"{cert}\"\nclient_key = \"{key}\"\n\
         [endpoints.nocert]\nurl = \"{nocert_url}\"\n",
        ca = ca_file.display(),
        mutual_url = mutual.url("/m"),
        nocert_url = mutual.url("/n"),
        cert = cert_file.display(),
        key = key_file.display(),
    );
    let sidecar = Sidecar::start(&config).await;
    let (_, eps) = sidecar.get_json("/v1/endpoints").await;
    let tls: Vec<_> = eps["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].clone(), e["tls"].clone()))
        .collect();
    assert_eq!(
        serde_json::json!(tls),
        serde_json::json!([
            ["mutual", {"own_ca": false, "client_certificate": true}],
            ["nocert", {"own_ca": false, "client_certificate": false}]
        ])
    );
    // A target sent by URL is checked against the CA file too.
    let id = send(&sidecar, &format!("/{}", plain.url("/a"))).await;
    sidecar.wait_status(&id, "delivered").await;
    assert_eq!(plain.requests(), vec![false, false]);

    // The endpoint with a client certificate presents it.
    let id = send(&sidecar, "/e/mutual").await;
    sidecar.wait_status(&id, "delivered").await;
    assert_eq!(mutual.requests(), vec![true]);

    // The endpoint without one is refused by the receiver, as a TLS failure, every attempt.
    let id = send(&sidecar, "/e/nocert").await;
    let d = sidecar.wait_status(&id, "failed").await;
    refused_for_no_certificate(&d);
    assert_eq!(mutual.requests(), vec![true]);

    // And the URL-prefix form of the same receiver uses the shared client: no certificate,
    // every attempt refused at the handshake.
    let id = send(&sidecar, &format!("/{}", mutual.url("/u"))).await;
    let d = sidecar.wait_status(&id, "failed").await;
    refused_for_no_certificate(&d);
    assert_eq!(mutual.requests(), vec![true]);
}

/// Five attempts refused by a receiver that requires a client certificate. With TLS 1.3 the
/// client's handshake is complete before the server checks the certificate, so the server's
/// refusal (an alert, then the close) races the request: usually it is read as the alert
/// (`TLS_ERROR`), but when the connection is already closed before hyper could send on it, all
/// that is left is "connection was not ready" (`NETWORK_ERROR`; seen on a loaded machine). Either
/// way nothing reached the receiver (checked by the caller).
fn refused_for_no_certificate(d: &serde_json::Value) {
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 5, "{d}");
    for a in attempts {
        let class = a["classification"].as_str().unwrap();
        let error = a["error"].as_str().unwrap_or_default();
        assert!(
            class == "TLS_ERROR"
                || (class == "NETWORK_ERROR" && error.contains("connection was not ready")),
            "{a}"
        );
    }
    assert!(classes(d).contains(&"TLS_ERROR".to_string()), "{d}");
}

/// Bad TLS files stop start-up, naming the key and the file.
#[tokio::test]
async fn bad_tls_files_stop_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (cert, _) = ca.leaf(&["client"]);
    let cert_file = write(dir.path(), "client.pem", &cert.pem());
    let wrong_key = write(
        dir.path(),
        "wrong.key",
        &rcgen::KeyPair::generate().unwrap().serialize_pem(),
    );
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            format!("[delivery]\nca_file = \"{}\"\n", missing.display()),
            "delivery.ca_file",
            "cannot read",
        ),
        (
            format!(
                "[endpoints.x]\nurl = \"https://127.0.0.1:9/\"\nclient_cert = \"{}\"\n",
                cert_file.display()
            ),
            "endpoints.x.client_key",
            "is needed with client_cert",
        ),
        (
            format!(
                "[endpoints.x]\nurl = \"https://127.0.0.1:9/\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
                cert_file.display(),
                wrong_key.display()
            ),
            "endpoints.x.client_cert",
            "does not belong to the certificate",
        ),
        (
            format!(
                "[endpoints.x]\nurl = \"http://127.0.0.1:9/\"\nca_file = \"{}\"\n",
                cert_file.display()
            ),
            "endpoints.x.ca_file",
            "must be https://",
        ),
    ];
    for (config, key, reason) in cases {
        let file = write(dir.path(), "c.toml", &config);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["config", "check", "--config"])
            .arg(&file)
            .env("HOOKRELAY_EGRESS__ALLOW_CIDRS", "[\"127.0.0.0/8\"]")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{config}: {stderr}");
        assert!(
            stderr.contains(&format!("`{key}`")) && stderr.contains(reason),
            "{config}: {stderr}"
        );
    }
}
