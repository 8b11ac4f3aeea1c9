//! The admin side over TLS (`serve --admin-listen ADDR --tls-cert PEM --tls-key PEM`), with
//! certificates made by the test (rcgen): the admin API and `/metrics` over https with the
//! token (401 without), refused on the board port with the https address named, board paths
//! still plain HTTP, plain HTTP to the TLS port told to use https, the CLI's `--remote
//! https://` with `--ca-cert`/`MPFLEET_CA` printing what the local CLI prints, and clear
//! errors for certificates and keys that are missing, not PEM, or do not go together.

use crate::harness::{Fleet, Server};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const MAC: &str = "deadbeef1234";

/// A CA, and a certificate it signed for 127.0.0.1 and localhost with its key, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(f: &Fleet, name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca: f.file(&format!("{name}/ca.pem"), &ca.pem()),
        cert: f.file(&format!("{name}/cert.pem"), &cert.pem()),
        key: f.file(&format!("{name}/key.pem"), &key.serialize_pem()),
    }
}

/// `serve` with the admin side on its own TLS listener; returns the server (its `base` is
/// the board port) and the admin side's `https://ADDR/`.
fn serve_tls(f: &Fleet, p: &Pki) -> (Server, String) {
    let s = Server::start_with(
        &f.data(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--tls-cert",
            p.cert.to_str().unwrap(),
            "--tls-key",
            p.key.to_str().unwrap(),
        ],
        f.env(),
    );
    let line = s.next_line();
    let https = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no https URL on serve's second line: {line}"))
        .to_owned();
    assert!(https.ends_with('/'), "{line}");
    (s, https)
}

/// An HTTP client trusting only the CA in `ca`.
fn agent(ca: &std::path::Path) -> ureq::Agent {
    agent_with(ca, 5)
}

/// [`agent`], following at most `redirects` redirects.
fn agent_with(ca: &std::path::Path, redirects: u32) -> ureq::Agent {
    let mut roots = rustls::RootCertStore::empty();
    for c in mpfleet::http::certificates(ca).unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(mpfleet::http::tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .redirects(redirects)
        .tls_config(Arc::new(config))
        .build()
}

/// Status and body of `GET url`, with the bearer `token` if given.
fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Runs with `env` and expects success; returns stdout.
fn ok_env(f: &Fleet, args: &[&str], env: &[(&str, &str)]) -> String {
    let r = f.run_env(args, env);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    r.stdout
}

fn error_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

#[test]
fn the_admin_side_is_served_over_tls_and_refused_in_clear() {
    let f = Fleet::smartcharger();
    f.ok(&["device", "set", MAC, "--app", "smartcharger"]);
    let p = pki(&f, "tls");
    let (s, https) = serve_tls(&f, &p);
    let token = s.token();
    let tls = agent(&p.ca);

    // Over TLS: the admin API and /metrics with the token; 401 without it.
    let (status, body) = get(&tls, &format!("{https}admin/api/v1/devices"), Some(&token));
    assert_eq!(status, 200, "{body}");
    let devices: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(devices[0]["mac"], MAC, "{body}");
    let (status, body) = get(&tls, &format!("{https}admin/api/v1/devices"), None);
    assert_eq!(status, 401, "{body}");
    assert!(error_of(&body).contains("admin token"), "{body}");
    let (status, body) = get(&tls, &format!("{https}metrics"), Some(&token));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("mpfleet_"), "{body}");
    assert_eq!(get(&tls, &format!("{https}metrics"), None).0, 401);

    // The board port: boards as before...
    let manifest = s.get(&format!("v1/{MAC}.json"));
    assert_eq!(manifest.status, 200, "{}", manifest.text());
    assert!(
        manifest.text().contains("\"generation\":1"),
        "{}",
        manifest.text()
    );
    // ...and no admin side, even with the token: 403 naming the https address.
    for path in ["admin/api/v1/devices", "metrics", "admin/", "admin"] {
        let r = s.admin("GET", path, Some(&token), None);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        let e = error_of(&r.text());
        assert!(e.contains(&https) && e.contains("TLS"), "{path}: {e}");
    }
    // The admin side's root leads to the dashboard.
    let r = agent_with(&p.ca, 0).get(&https).call().unwrap();
    assert_eq!(r.status(), 303, "{}", r.status());
    assert_eq!(r.header("location"), Some("/admin/"));
    // The dashboard is there, and its login cookie is Secure: a browser never sends it to
    // the boards' plain port.
    let (status, body) = get(&tls, &format!("{https}admin/"), None);
    assert_eq!(status, 200, "{body}");
    let r = agent_with(&p.ca, 0)
        .post(&format!("{https}admin/login"))
        .send_form(&[("token", &token)])
        .unwrap();
    let cookie = r.header("set-cookie").unwrap_or_default().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.ends_with("; Secure"),
        "{cookie}"
    );
    // The TLS port serves nothing but the admin side.
    let (status, body) = get(&tls, &format!("{https}v1/{MAC}.json"), None);
    assert_eq!(status, 404, "{body}");
    assert!(error_of(&body).contains(&s.base), "{body}");

    // Plain HTTP to the TLS port: told to use https.
    let plain = https.replacen("https://", "http://", 1);
    let (status, body) = get(
        &ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build(),
        &format!("{plain}admin/api/v1/devices"),
        Some(&token),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains(&https), "{body}");
    // A client that does not trust the certificate gets no answer (and serve goes on).
    let untrusting = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let err = untrusting
        .get(&format!("{https}admin/api/v1/devices"))
        .call()
        .expect_err("a certificate no public CA signed was trusted");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(
        get(&tls, &format!("{https}admin/api/v1/devices"), Some(&token)).0,
        200
    );
    assert_eq!(s.terminate(), 0);
}

#[test]
fn the_remote_cli_over_https_prints_what_the_local_cli_prints() {
    let f = Fleet::smartcharger();
    f.ok(&[
        "device",
        "set",
        MAC,
        "--app",
        "smartcharger",
        "sensorclass=1",
    ]);
    f.ok(&[
        "group",
        "create",
        "greenhouse",
        "--app",
        "smartcharger",
        "sensorclass=1",
    ]);
    f.ok(&["device", "set", "aabbccddeeff", "--group", "greenhouse"]);
    let p = pki(&f, "tls");
    let (s, https) = serve_tls(&f, &p);
    let token = s.token();
    let ca = p.ca.to_str().unwrap();
    for args in [
        vec!["module", "list"],
        vec!["module", "show", "sensorclass"],
        vec!["device", "show", MAC],
        vec!["device", "show", "aabbccddeeff", "--json"],
        vec!["device", "export"],
        vec!["group", "show", "greenhouse"],
        vec!["device", "show", "020000000000"],
    ] {
        let here = f.run(&args);
        // --ca-cert, and MPFLEET_CA.
        let mut flag = vec!["--remote", https.as_str(), "--ca-cert", ca];
        flag.extend_from_slice(&args);
        let mut env_only = vec!["--remote", https.as_str()];
        env_only.extend_from_slice(&args);
        for there in [
            f.run_env(&flag, &[("MPFLEET_TOKEN", &token)]),
            f.run_env(&env_only, &[("MPFLEET_TOKEN", &token), ("MPFLEET_CA", ca)]),
        ] {
            assert_eq!(here.code, there.code, "{args:?}: {}", there.stderr);
            assert_eq!(here.stdout, there.stdout, "{args:?}");
            assert_eq!(here.stderr, there.stderr, "{args:?}");
        }
    }
    // A write over https lands in the store.
    ok_env(
        &f,
        &[
            "--remote",
            &https,
            "--ca-cert",
            ca,
            "device",
            "set",
            MAC,
            "--app",
            "smartcharger",
            "sensorclass=2",
        ],
        &[("MPFLEET_TOKEN", &token)],
    );
    let show = f.json(&["device", "show", MAC, "--json"]);
    assert_eq!(show["desired"]["sensorclass"], "2", "{show}");

    // Without the CA: a clear error that says how to trust it.
    let r = f.run_env(
        &["--remote", &https, "module", "list"],
        &[("MPFLEET_TOKEN", &token)],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("certificate") && r.stderr.contains("--ca-cert"),
        "{}",
        r.stderr
    );
    // Another CA is not this one.
    let other = pki(&f, "other");
    let r = f.run_env(
        &[
            "--remote",
            &https,
            "--ca-cert",
            other.ca.to_str().unwrap(),
            "module",
            "list",
        ],
        &[("MPFLEET_TOKEN", &token)],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("certificate"), "{}", r.stderr);
    // A CA file that is no certificate.
    let r = f.run_env(
        &[
            "--remote",
            &https,
            "--ca-cert",
            p.key.to_str().unwrap(),
            "module",
            "list",
        ],
        &[("MPFLEET_TOKEN", &token)],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("holds no certificate"), "{}", r.stderr);
    // http:// to the TLS port, and the board port for the admin side: refused, named.
    let plain = https.replacen("https://", "http://", 1);
    for (url, said) in [
        (plain.as_str(), "speaks TLS only"),
        (s.base.as_str(), "over TLS only"),
    ] {
        let r = f.run_env(
            &["--remote", url, "module", "list"],
            &[("MPFLEET_TOKEN", &token)],
        );
        assert_eq!(r.code, 1, "{url}: {}", r.stderr);
        assert!(
            r.stderr.contains(said) && r.stderr.contains(&https),
            "{}",
            r.stderr
        );
    }
    assert_eq!(s.terminate(), 0);
}

/// A self-signed certificate (no CA) is trusted by giving the certificate itself; a CA
/// certificate used as the server's is refused with a hint.
#[test]
fn a_self_signed_certificate_is_its_own_ca() {
    let f = Fleet::smartcharger();
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = f.file("self/cert.pem", &made.cert.pem());
    let p = Pki {
        ca: cert.clone(),
        cert,
        key: f.file("self/key.pem", &made.key_pair.serialize_pem()),
    };
    let (s, https) = serve_tls(&f, &p);
    let out = ok_env(
        &f,
        &[
            "--remote",
            &https,
            "--ca-cert",
            p.ca.to_str().unwrap(),
            "module",
            "list",
        ],
        &[("MPFLEET_TOKEN", &s.token())],
    );
    assert_eq!(out, f.ok(&["module", "list"]));
    assert_eq!(s.terminate(), 0);

    // A self-signed CA certificate as the server's (what `openssl req -x509` makes unless
    // told otherwise): refused by the client, which says how to make one it takes.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = f.file(
        "ca-as-server/cert.pem",
        &params.self_signed(&key).unwrap().pem(),
    );
    let p = Pki {
        ca: cert.clone(),
        cert,
        key: f.file("ca-as-server/key.pem", &key.serialize_pem()),
    };
    let (s, https) = serve_tls(&f, &p);
    let r = f.run_env(
        &[
            "--remote",
            &https,
            "--ca-cert",
            p.ca.to_str().unwrap(),
            "module",
            "list",
        ],
        &[("MPFLEET_TOKEN", &s.token())],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("CA:FALSE"), "{}", r.stderr);
    assert_eq!(s.terminate(), 0);
}

#[test]
fn bad_certificates_and_keys_are_clear_errors() {
    let f = Fleet::new();
    let p = pki(&f, "tls");
    let other = pki(&f, "other");
    let garbage = f.file("garbage.pem", "not a PEM file\n");
    let missing = f.dir.path().join("missing.pem");
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    for (cert, key, said) in [
        (
            path(&missing),
            path(&p.key),
            "cannot read the TLS certificate",
        ),
        (path(&p.cert), path(&missing), "cannot read the TLS key"),
        (path(&garbage), path(&p.key), "holds no certificate"),
        (path(&p.key), path(&p.key), "holds no certificate"),
        (path(&p.cert), path(&garbage), "holds no private key"),
        (path(&p.cert), path(&p.cert), "holds no private key"),
        (
            path(&p.cert),
            path(&other.key),
            "does not go with the certificate",
        ),
    ] {
        let r = f.run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ]);
        assert_eq!(r.code, 1, "{cert} {key}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "it listened: {}", r.stdout);
        let first = r.stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error: ") && first.contains(said),
            "{cert} {key}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // Checked before the store is opened: nothing created.
    assert!(!f.data().exists(), "a refused serve created the store");
    // The flags go together: a usage error otherwise.
    let cert = path(&p.cert);
    for args in [
        vec!["serve", "--admin-listen", "127.0.0.1:0"],
        vec!["serve", "--tls-cert", &cert, "--tls-key", &cert],
        vec![
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
        ],
        vec![
            "serve",
            "--admin-listen",
            "nonsense",
            "--tls-cert",
            &cert,
            "--tls-key",
            &cert,
        ],
    ] {
        let r = f.run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    }
    // The admin port already taken: named as --admin-listen.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let r = f.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        &addr,
        "--tls-cert",
        &path(&p.cert),
        "--tls-key",
        &path(&p.key),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("cannot listen on {addr} (--admin-listen)")),
        "{}",
        r.stderr
    );
}
