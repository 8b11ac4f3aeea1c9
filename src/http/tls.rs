//! TLS for the admin side (`serve --admin-listen ADDR --tls-cert PEM --tls-key PEM`): the
//! certificate and key are loaded (and checked against each other) before `serve` listens,
//! and each connection to the admin listener is a rustls handshake before it is HTTP.
//! Boards keep plain HTTP on the board port (an ESP8266 cannot afford TLS). A client that
//! speaks plain HTTP to the TLS port gets a plain `400` saying to use https, rather than a
//! connection closed on it without a word.

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The certificate chain in the PEM file `path` (the server's certificate first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS certificate {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{} is not a PEM certificate file: {e:?}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{} holds no certificate (a PEM file with -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

/// The private key in the PEM file `path` (PKCS#8, PKCS#1 or SEC1).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS key {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        anyhow::anyhow!(
            "{} holds no private key (a PEM file with -----BEGIN PRIVATE KEY-----, \
             RSA PRIVATE KEY or EC PRIVATE KEY): {e:?}",
            path.display()
        )
    })
}

/// The crypto provider: ring (aws-lc-rs would need cmake and nasm to build).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The acceptor for `cert` and `key`: refused with a clear error when a file is missing or
/// unreadable, holds no certificate or key, or the key is not the certificate's.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let certs = certificates(cert)?;
    let key_der = private_key(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            anyhow::anyhow!(
                "the TLS key {} does not go with the certificate {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
    // The admin side is served with HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS stream of a new connection to the admin listener (bound to `admin`), or `None`
/// when it did not finish a handshake `within` (logged). A client speaking plain HTTP (its
/// first byte is a letter, where a TLS handshake starts with 0x16) is answered `400` naming
/// the admin side's https URL, and the connection closed.
pub async fn accept(
    acceptor: &TlsAcceptor,
    mut stream: TcpStream,
    within: Duration,
    admin: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(within, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    if first[0] != 0x16 {
        if first[0].is_ascii_alphabetic() {
            plain_http_refused(&mut stream, admin).await;
        }
        return None;
    }
    match tokio::time::timeout(within, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::info!("admin side: TLS handshake failed: {e}");
            None
        }
        Err(_) => None,
    }
}

/// Answers a plain HTTP request on the TLS port with a `400` and closes.
async fn plain_http_refused(stream: &mut TcpStream, admin: SocketAddr) {
    // Read what the client sent first (closing with unread bytes would reset the connection
    // and could lose the answer); a request is short.
    let mut request = [0u8; 8192];
    let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut request))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&request[..read]);
    let host = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("host").then_some(value)
    });
    let https = super::sides::url_with_host("https", admin, host);
    let body = serde_json::json!({
        "error": format!(
            "this port speaks TLS only: use {https} (https, not http)"
        )
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
