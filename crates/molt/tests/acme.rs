//! Certificates from ACME, against Pebble (a test ACME server) started on
//! 127.0.0.1 with its own CA, and pebble-challtestsrv as its DNS server so
//! the test's domains resolve to 127.0.0.1. Pebble's challenge ports are the
//! proxy's listeners (HTTP-01 on the HTTP one, TLS-ALPN-01 on the HTTPS
//! one), or a closed port to make a challenge fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// Pebble and its DNS server, killed on drop.
struct Pebble {
    children: Vec<Child>,
    dir: tempfile::TempDir,
    directory: String,
    management: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CA-signed certificate for Pebble's own HTTPS (127.0.0.1); returns the
/// CA's PEM file (what `--acme-ca` trusts).
fn pebble_tls(dir: &Path) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Pebble listener CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
    std::fs::write(dir.join("listener.pem"), leaf.pem()).expect("write");
    std::fs::write(dir.join("listener.key"), key.serialize_pem()).expect("write");
    let ca_file = dir.join("listener-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("write");
    ca_file
}

/// Where Pebble will listen, chosen before the server starts (its
/// directory URL is a server flag), and the CA its HTTPS is signed by.
struct PebbleSite {
    dir: tempfile::TempDir,
    ca: PathBuf,
    ports: [u16; 4],
}

impl PebbleSite {
    fn new() -> PebbleSite {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = pebble_tls(dir.path());
        PebbleSite {
            dir,
            ca,
            ports: free_ports::<4>(),
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.ports[0])
    }

    fn ca(&self) -> String {
        self.ca.to_string_lossy().into_owned()
    }
}

impl Pebble {
    /// Starts Pebble at `site`, validating HTTP-01 on `http_port` and
    /// TLS-ALPN-01 on `tls_port` of 127.0.0.1.
    fn start(site: PebbleSite, http_port: u16, tls_port: u16) -> Pebble {
        let PebbleSite { dir, ca, ports } = site;
        let [acme, management, dns, dns_mgmt] = ports;
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.path().join("listener.pem"),
                "privateKey": dir.path().join("listener.key"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_file = dir.path().join("pebble.json");
        std::fs::write(&config_file, config.to_string()).expect("config");
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::from(log("challtestsrv.log")))
            .stderr(Stdio::from(log("challtestsrv.err")))
            .spawn()
            .expect("starting pebble-challtestsrv (scripts/test-deps installs pebble)");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::from(log("pebble.log")))
            .stderr(Stdio::from(log("pebble.err")))
            .spawn()
            .expect("starting pebble (scripts/test-deps installs it)");
        let pebble = Pebble {
            children: vec![dns_server, pebble],
            directory: format!("https://127.0.0.1:{acme}/dir"),
            management,
            dir,
        };
        let up = wait_until_sync(Duration::from_secs(20), || {
            Command::new("curl")
                .args(["-sf", "--cacert"])
                .arg(&ca)
                .arg(&pebble.directory)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(up, "pebble did not come up; its log:\n{}", pebble.log());
        pebble
    }

    fn log(&self) -> String {
        ["pebble.log", "pebble.err", "challtestsrv.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Pebble's issuing root, written to a file (what curl trusts).
    fn root(&self) -> String {
        let path = self.dir.path().join("issuing-root.pem");
        let out = Command::new("curl")
            .args(["-sfk", "-o"])
            .arg(&path)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management))
            .status()
            .expect("curl");
        assert!(out.success(), "cannot fetch Pebble's root");
        path.to_string_lossy().into_owned()
    }
}

/// curl over HTTPS to `host` at the proxy's HTTPS port, verified against
/// `ca`; (exit code, output).
fn curl(https: u16, host: &str, ca: &str) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", ca, "--resolve"])
        .arg(format!("{host}:{https}:127.0.0.1"))
        .arg(format!("https://{host}:{https}/"))
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn https_state(server: &MoltServer, app: &str, domain: &str) -> serde_json::Value {
    let view = molt(server, &["apps", "show", app, "--json"]).json();
    view["https"]
        .as_array()
        .and_then(|l| l.iter().find(|h| h["domain"] == domain).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// `molt server --https ... --acme-*` for Pebble at `site`.
fn start_server(site: &PebbleSite, https: u16, retry: &str, extra: &[&str]) -> MoltServer {
    let https_arg = format!("127.0.0.1:{https}");
    let directory = site.directory();
    let ca = site.ca();
    let mut args = vec![
        "--https",
        &https_arg,
        "--acme-directory",
        &directory,
        "--acme-ca",
        &ca,
        "--acme-email",
        "ops@example.test",
        "--acme-retry",
        retry,
    ];
    args.extend(extra);
    MoltServer::start_with(None, &args, &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_domain_gets_a_certificate_over_http01_that_curl_verifies() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let https = free_port();
    let site = PebbleSite::new();
    let server = start_server(&site, https, "1s", &[]);
    let pebble = Pebble::start(site, server.proxy_addr().port(), https);
    create_app(&server, "web", &v1, &["--domain", "web.example.test"]);
    let root = pebble.root();

    let issued = wait_until(Duration::from_secs(60), || async {
        curl(https, "web.example.test", &root).0 == 0
    })
    .await;
    assert!(
        issued,
        "no verified HTTPS for web.example.test; App: {}\nserver log:\n{}\npebble log:\n{}",
        https_state(&server, "web", "web.example.test"),
        server.log(),
        pebble.log()
    );
    let (_, body) = curl(https, "web.example.test", &root);
    assert!(body.contains("testapp v1"), "{body}");
    let state = https_state(&server, "web", "web.example.test");
    assert_eq!(state["state"], "valid", "{state}");
    assert_eq!(state["source"], "acme", "{state}");
    let listed = molt(&server, &["certs", "list", "--json"]).json();
    assert_eq!(listed[0]["domain"], "web.example.test", "{listed}");
    assert_eq!(listed[0]["source"], "acme", "{listed}");
    assert!(
        server.log().contains("HTTP-01"),
        "the first order uses HTTP-01"
    );
    // The App's own `web.localhost` gets nothing.
    assert!(https_state(&server, "web", "web.localhost").is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_challenge_is_reported_on_the_app_while_http_serves_then_tls_alpn01_succeeds() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let https = free_port();
    let site = PebbleSite::new();
    // A retry after 6 s: time to look at the failure first.
    let server = start_server(&site, https, "6s", &[]);
    // HTTP-01 goes to a port nothing listens on: it fails.
    let pebble = Pebble::start(site, free_port(), https);
    create_app(&server, "shop", &v1, &["--domain", "shop.example.test"]);
    let root = pebble.root();

    let failed = wait_for(Duration::from_secs(60), || async {
        let state = https_state(&server, "shop", "shop.example.test");
        (state["problem"].is_string()).then_some(state)
    })
    .await;
    let failed = failed.unwrap_or_else(|| {
        panic!(
            "no failure reported on the App; server log:\n{}\npebble log:\n{}",
            server.log(),
            pebble.log()
        )
    });
    let problem = failed["problem"].as_str().expect("problem");
    assert!(problem.starts_with("HTTP-01:"), "{failed}");
    // Pebble's own words: its problem type and detail.
    assert!(problem.contains("urn:ietf:params:acme:error:"), "{failed}");
    // HTTP keeps serving meanwhile.
    assert_eq!(
        served(server.proxy_addr(), "shop.example.test").await,
        "testapp v1"
    );
    // `molt debug` says it too.
    let report = molt(&server, &["debug", "shop", "--json"]).json();
    let findings = report["findings"].as_array().expect("findings");
    assert!(
        findings.iter().any(|f| f["kind"] == "certificate_failing"),
        "{report}"
    );
    let out = molt(&server, &["apps", "show", "shop"]);
    assert!(out.stdout.contains("shop.example.test failed"), "{out}");

    // The retry (after the backoff) uses TLS-ALPN-01, which reaches the
    // proxy: a verified certificate.
    let issued = wait_until(Duration::from_secs(60), || async {
        curl(https, "shop.example.test", &root).0 == 0
    })
    .await;
    assert!(
        issued,
        "no verified HTTPS after the retry; App: {}\nserver log:\n{}",
        https_state(&server, "shop", "shop.example.test"),
        server.log()
    );
    let state = https_state(&server, "shop", "shop.example.test");
    assert_eq!(state["state"], "valid", "{state}");
    assert!(state["problem"].is_null(), "{state}");
    assert!(
        server.log().contains("TLS-ALPN-01"),
        "the retry uses TLS-ALPN-01"
    );

    // Metrics: the orders by outcome, the certificate by its expiry.
    let auth = format!("Bearer {}", server.token());
    let metrics = http_request(
        server.api_addr(),
        "GET",
        "localhost",
        "/metrics",
        &[("Authorization", &auth)],
        b"",
        Duration::from_secs(10),
    )
    .expect("metrics")
    .text();
    for line in [
        "molt_acme_orders_total{outcome=\"failed\"} ",
        "molt_acme_orders_total{outcome=\"issued\"} 1",
        "molt_certificate_expiry_seconds{domain=\"shop.example.test\",source=\"acme\"} ",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
}

/// A TLS connection to the proxy that trusts only `root`, speaks HTTP/1.1
/// and never resumes a session (so each shows the certificate in force).
async fn tls_connect(
    https: u16,
    host: &str,
    root: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_file(root).expect("root pem");
    roots.add(der).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", https)).await?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("name");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The leaf certificate a TLS connection was shown.
fn leaf(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
}

/// One keep-alive `GET /` on an open connection; the answer's head and body.
async fn get_over(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    host: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "the connection closed: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .and_then(|v| v.trim().parse::<usize>().ok())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    return text;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_certificate_is_swapped_in_while_a_connection_stays_open() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let https = free_port();
    let site = PebbleSite::new();
    // Renew at every look (Pebble's certificates live for years).
    let server = start_server(&site, https, "1s", &["--acme-renew-at", "0"]);
    let pebble = Pebble::start(site, server.proxy_addr().port(), https);
    create_app(&server, "web", &v1, &["--domain", "web.example.test"]);
    let root = pebble.root();
    let first = wait_for(Duration::from_secs(60), || async {
        tls_connect(https, "web.example.test", &root).await.ok()
    })
    .await;
    let mut open = first.unwrap_or_else(|| panic!("no certificate; server log:\n{}", server.log()));
    let answer = get_over(&mut open, "web.example.test").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let before = leaf(&open);

    // A renewal puts a new certificate in force for new connections...
    let renewed = wait_until(Duration::from_secs(60), || async {
        match tls_connect(https, "web.example.test", &root).await {
            Ok(fresh) => leaf(&fresh) != before,
            Err(_) => false,
        }
    })
    .await;
    assert!(renewed, "no renewal seen; server log:\n{}", server.log());
    // ...while the connection opened before it goes on.
    let answer = get_over(&mut open, "web.example.test").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("testapp v1"), "{answer}");
    assert_eq!(leaf(&open), before);
}

/// With the domain's challenges sent to a proxy on another node (Pebble
/// validates at the peer's listeners only), the peer answers them and then
/// serves the certificate.
#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_peer_answers_the_challenge_and_serves_the_certificate() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = PeerProxy::start(dir.path());
    let https = free_port();
    let site = PebbleSite::new();
    let peer_admin = peer.admin.to_string();
    let token_file = peer.token_file.to_string_lossy().into_owned();
    let server = start_server(
        &site,
        https,
        "1s",
        &[
            "--proxy-peer",
            &peer_admin,
            "--proxy-peer-token-file",
            &token_file,
        ],
    );
    let pebble = Pebble::start(site, peer.listen.port(), peer.https.port());
    create_app(&server, "web", &v1, &["--domain", "web.example.test"]);
    let root = pebble.root();

    let served = wait_until(Duration::from_secs(60), || async {
        curl(peer.https.port(), "web.example.test", &root).0 == 0
    })
    .await;
    assert!(
        served,
        "no verified HTTPS at the peer; App: {}\nserver log:\n{}\npebble log:\n{}\npeer log:\n{}",
        https_state(&server, "web", "web.example.test"),
        server.log(),
        pebble.log(),
        peer.log()
    );
    let (_, body) = curl(peer.https.port(), "web.example.test", &root);
    assert!(body.contains("testapp v1"), "{body}");
    assert_eq!(
        https_state(&server, "web", "web.example.test")["state"],
        "valid"
    );
}
