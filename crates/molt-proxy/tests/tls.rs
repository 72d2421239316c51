//! HTTPS on the proxy: certificates pushed over the admin socket, chosen
//! by SNI, HTTP/2 and HTTP/1.1 by ALPN, a replaced certificate that leaves
//! open connections alone, and no handshake for a name without one.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use molt_proxy::{Proxy, ProxyConfig, TlsCert};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A test CA and what it signs.
struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Molt test CA");
        let cert = params.self_signed(&key).expect("ca");
        Ca {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names`, as the server would push it.
    fn issue(&self, domain: &str, names: &[&str]) -> TlsCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        TlsCert {
            domain: domain.into(),
            chain_pem: format!("{}{}", cert.pem(), self.cert.pem()),
            key_pem: key.serialize_pem(),
        }
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Every connection a full handshake: a resumed one would show the
        // certificate of the session it resumes.
        config.resumption = rustls::client::Resumption::disabled();
        TlsConnector::from(Arc::new(config))
    }
}

async fn connect(
    connector: &TlsConnector,
    at: SocketAddr,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(at).await?;
    let name = ServerName::try_from(name.to_string()).expect("name");
    connector.connect(name, tcp).await
}

/// One HTTP/1.1 request on an open TLS connection; the body of the answer.
async fn get_over(stream: &mut TlsStream<TcpStream>, host: &str, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before a whole answer: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().expect("len"))
                })
                .expect("content-length");
            if body.len() >= len {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return body[..len].to_string();
            }
        }
    }
}

fn leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().expect("certs")[0]
        .clone()
        .into_owned()
}

async fn start_https(dir: &std::path::Path) -> Proxy {
    Proxy::start(ProxyConfig {
        https: Some("127.0.0.1:0".parse().expect("addr")),
        ..config(dir)
    })
    .await
    .expect("start")
}

#[tokio::test]
async fn serves_https_by_sni_and_refuses_names_without_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start("A").await;
    let proxy = start_https(dir.path()).await;
    let admin = molt_proxy::AdminClient::connect(dir.path())
        .await
        .expect("admin");
    admin
        .set_route(route(
            "a",
            &["a.example.com", "b.example.com"],
            vec![up.target()],
        ))
        .await
        .expect("route");
    let ca = Ca::new();
    let tls = ca.connector();
    let at = proxy.https_addr().expect("https");

    // No certificate yet: the handshake fails, nothing else leaks.
    assert!(connect(&tls, at, "a.example.com").await.is_err());

    admin
        .put_cert(ca.issue("a.example.com", &["a.example.com"]))
        .await
        .expect("put");
    admin
        .put_cert(ca.issue("*.wild.example.com", &["*.wild.example.com"]))
        .await
        .expect("put wildcard");
    assert_eq!(
        admin.list_certs().await.expect("list"),
        vec![
            "*.wild.example.com".to_string(),
            "a.example.com".to_string()
        ]
    );

    let mut a = connect(&tls, at, "a.example.com").await.expect("handshake");
    assert_eq!(a.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(a);
    // HTTP/1.1 when the client offers only that; the App hears https.
    let mut only_h1 = (**ca.connector().config()).clone();
    only_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let h1 = TlsConnector::from(Arc::new(only_h1));
    a = connect(&h1, at, "a.example.com").await.expect("handshake");
    assert_eq!(a.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let headers = get_over(&mut a, "a.example.com", "/headers").await;
    assert!(headers.contains("x-forwarded-proto: https"), "{headers}");

    // A wildcard covers one label.
    connect(&tls, at, "x.wild.example.com")
        .await
        .expect("wildcard");
    assert!(connect(&tls, at, "y.x.wild.example.com").await.is_err());
    // b.example.com is routed but has no certificate: refused, and not
    // with a's certificate.
    assert!(connect(&tls, at, "b.example.com").await.is_err());

    // Plain HTTP for a host with a certificate is redirected to HTTPS;
    // without one it is served, and says http.
    let req = http::Request::get(format!("http://{}/p?q=1", proxy.http_addr()))
        .header(http::header::HOST, "a.example.com:8080")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("req");
    let resp = client().request(req).await.expect("http");
    assert_eq!(resp.status(), http::StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        resp.headers()[http::header::LOCATION],
        format!("https://a.example.com:{}/p?q=1", at.port()).as_str()
    );
    let (status, body) = get(&client(), proxy.http_addr(), "b.example.com", "/headers")
        .await
        .expect("http");
    assert_eq!(status, http::StatusCode::OK);
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    // A name the wildcard covers but no App serves: its 404 over plain
    // HTTP, not a redirect to the same 404 over HTTPS.
    let (status, _) = get(&client(), proxy.http_addr(), "x.wild.example.com", "/")
        .await
        .expect("http");
    assert_eq!(status, http::StatusCode::NOT_FOUND);

    admin.remove_cert("a.example.com").await.expect("remove");
    assert!(connect(&tls, at, "a.example.com").await.is_err());
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_replaced_certificate_leaves_open_connections_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start("A").await;
    let proxy = start_https(dir.path()).await;
    let admin = molt_proxy::AdminClient::connect(dir.path())
        .await
        .expect("admin");
    admin
        .set_route(route("a", &["a.example.com"], vec![up.target()]))
        .await
        .expect("route");
    let ca = Ca::new();
    let mut only_h1 = (**ca.connector().config()).clone();
    only_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = TlsConnector::from(Arc::new(only_h1));
    let at = proxy.https_addr().expect("https");
    admin
        .put_cert(ca.issue("a.example.com", &["a.example.com"]))
        .await
        .expect("put");
    let mut open = connect(&tls, at, "a.example.com").await.expect("handshake");
    assert_eq!(get_over(&mut open, "a.example.com", "/").await, "A");
    let first = leaf(&open);

    admin
        .put_cert(ca.issue("a.example.com", &["a.example.com"]))
        .await
        .expect("renewed");
    // The open connection goes on; a new one gets the new certificate.
    assert_eq!(get_over(&mut open, "a.example.com", "/").await, "A");
    let fresh = connect(&tls, at, "a.example.com").await.expect("handshake");
    assert_ne!(leaf(&fresh), first);
    assert_eq!(leaf(&open), first);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_mismatched_or_broken_certificate_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = start_https(dir.path()).await;
    let admin = molt_proxy::AdminClient::connect(dir.path())
        .await
        .expect("admin");
    let ca = Ca::new();
    let mut cert = ca.issue("a.example.com", &["a.example.com"]);
    cert.key_pem = ca.issue("a.example.com", &["a.example.com"]).key_pem;
    let err = admin.put_cert(cert).await.expect_err("mismatch");
    assert!(err.to_string().contains("does not belong"), "{err}");
    let err = admin
        .put_cert(TlsCert {
            domain: "a.example.com".into(),
            chain_pem: "garbage".into(),
            key_pem: "garbage".into(),
        })
        .await
        .expect_err("garbage");
    assert!(err.to_string().contains("PEM"), "{err}");
    assert!(admin.list_certs().await.expect("list").is_empty());
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_takeover_keeps_the_https_socket_and_the_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Upstream::start("A").await;
    let old = start_https(dir.path()).await;
    let admin = molt_proxy::AdminClient::connect(dir.path())
        .await
        .expect("admin");
    admin
        .set_route(route("a", &["a.example.com"], vec![up.target()]))
        .await
        .expect("route");
    let ca = Ca::new();
    admin
        .put_cert(ca.issue("a.example.com", &["a.example.com"]))
        .await
        .expect("put");
    let at = old.https_addr().expect("https");
    let new = Proxy::start(ProxyConfig {
        https: Some(at),
        takeover: true,
        ..config(dir.path())
    })
    .await
    .expect("takeover");
    assert_eq!(new.https_addr(), Some(at));
    old.finished().await.expect("old finished");
    assert_eq!(
        admin.list_certs().await.expect("list"),
        vec!["a.example.com".to_string()]
    );
    let mut s = connect(&ca.connector(), at, "a.example.com")
        .await
        .expect("handshake after the takeover");
    drop(s.flush().await);
    new.shutdown().await.expect("shutdown");
}
