//! The client side of the admin API: an [`Operation`] sent to a running `serve` as an HTTP
//! request, its answer read back as the operation's output, its error as the server's message.

use super::Operation;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The prefix of every admin API path.
pub const API: &str = "admin/api/v1";

/// A server's admin API, and the token it is asked with.
pub struct Remote {
    /// `http://host:port/`, with the trailing slash.
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Remote {
    /// `url` is the server's base URL (`http://192.168.1.10:8080`); `token` its admin token;
    /// `ca_cert`, for an https URL, the only CA (or self-signed certificate) to trust.
    pub fn new(url: &str, token: &str, ca_cert: Option<&Path>) -> Result<Self> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--remote {url:?} is not an http:// or https:// URL");
        }
        let token = token.trim();
        if token.is_empty() {
            bail!(
                "--remote needs the server's admin token in MPFLEET_TOKEN (on the server: \
                 `mpfleet token show`)"
            );
        }
        let mut base = url.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let mut agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(300));
        if let (true, Some(ca)) = (url.starts_with("https://"), ca_cert) {
            agent = agent.tls_config(trusting(ca)?);
        }
        let agent = agent.build();
        Ok(Self {
            base,
            token: token.to_owned(),
            agent,
        })
    }

    /// Sends `op` and returns what the server answered.
    pub fn call<O: Operation>(&self, op: O) -> Result<O::Output> {
        let mut fields = match serde_json::to_value(&op)? {
            Value::Object(map) => map,
            other => bail!("operation {} is not a JSON object: {other}", O::PATH),
        };
        let mut path = String::new();
        for (i, part) in O::PATH.split('{').enumerate() {
            if i == 0 {
                path.push_str(part);
                continue;
            }
            let (field, rest) = part.split_once('}').expect("PATH braces are balanced");
            let value = fields
                .remove(field)
                .and_then(|v| v.as_str().map(str::to_owned))
                .with_context(|| format!("{} names {field}, which is not a string", O::PATH))?;
            path.push_str(&encode(&value));
            path.push_str(rest);
        }
        let url = format!("{}{API}{path}", self.base);
        let request = self
            .agent
            .request(O::VERB.as_str(), &url)
            .set("Authorization", &format!("Bearer {}", self.token));
        let result = if O::VERB.has_body() {
            request
                .set("Content-Type", "application/json")
                .send_string(&Value::Object(fields).to_string())
        } else {
            debug_assert!(fields.is_empty(), "{} has fields outside its path", O::PATH);
            request.call()
        };
        match result {
            Ok(response) => {
                let text = response
                    .into_string()
                    .with_context(|| format!("reading the answer of {url}"))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("{url} answered something unexpected: {text:.200}"))
            }
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{url} answered {status}: {text:.200}"));
                if status == 401 {
                    bail!(
                        "{message}: the server refused the admin token; set MPFLEET_TOKEN to \
                         what `mpfleet token show` prints on the server"
                    );
                }
                bail!("{message}")
            }
            Err(e) => {
                let said = e.to_string();
                let hint = if said.contains("CaUsedAsEndEntity") {
                    " (the server's certificate is a CA certificate, which TLS clients refuse \
                     as a server's: make it with basicConstraints CA:FALSE, see \
                     docs/admin-api.md)"
                } else if self.base.starts_with("https://") && said.contains("certificate") {
                    " (a self-signed certificate or a private CA? trust it with --ca-cert \
                     PEM or MPFLEET_CA)"
                } else {
                    ""
                };
                bail!("cannot reach mpfleet serve at {}: {e}{hint}", self.base)
            }
        }
    }
}

/// A TLS client configuration trusting only the certificates in the PEM file `ca`.
fn trusting(ca: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::http::certificates(ca).context("--ca-cert")? {
        roots
            .add(cert)
            .with_context(|| format!("--ca-cert {}: not a usable certificate", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::http::tls_provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `s` as one path segment: everything but letters, digits, `-`, `_` and `~` percent-encoded
/// (dots too, so that no segment is `.` or `..`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_a_path_segment() {
        assert_eq!(super::encode("deadbeef1234"), "deadbeef1234");
        assert_eq!(super::encode("DE:AD/../x y"), "DE%3AAD%2F%2E%2E%2Fx%20y");
        assert_eq!(super::encode("é"), "%C3%A9");
    }
}
