//! HTTPS on the proxy: the certificates by domain (pushed by the server
//! over the admin socket, kept in memory only, so a private key never
//! touches the proxy's disk), chosen per connection by SNI, and the TLS
//! handshake in front of the same HTTP serving as plain connections.
//!
//! The set of certificates is swapped whole behind an atomic pointer: a
//! handshake reads one snapshot, and replacing a certificate (a renewal)
//! never touches an open connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A certificate for one domain as the server pushes it: PEM chain (leaf
/// first) and PEM private key. `domain` may be a wildcard (`*.example.com`,
/// one label).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsCert {
    pub domain: String,
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsCert {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCert")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Why a pushed certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("`{0}` is not a domain name (give one like `app.example.com` or `*.example.com`)")]
    Domain(String),
    #[error("the certificate is not PEM with at least one CERTIFICATE block")]
    NoCertificate,
    #[error("the private key is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {0}")]
    Key(String),
    #[error(
        "the private key's type is not supported (use RSA, ECDSA P-256/P-384 or Ed25519): {0}"
    )]
    KeyType(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
}

/// One loaded certificate: what handshakes use, and what it was made from
/// (passed to a successor proxy at a handover).
struct Loaded {
    key: Arc<CertifiedKey>,
    source: TlsCert,
}

/// The certificates by domain, and the answers to TLS-ALPN-01 challenges.
#[derive(Default)]
pub struct Certs {
    by_domain: ArcSwap<HashMap<String, Arc<Loaded>>>,
    /// Writers take it, so two changes never race on the copy they swap in.
    write: Mutex<()>,
    /// ACME HTTP-01: key authorizations by token, answered on the HTTP
    /// listener at `/.well-known/acme-challenge/TOKEN` (rarely read).
    http01: Mutex<HashMap<String, String>>,
    /// ACME TLS-ALPN-01: the challenge certificate by domain, shown only
    /// to a client that offers `acme-tls/1` and nothing else.
    alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// The HTTPS listener's port (0: no HTTPS), where plain HTTP requests
    /// for a host with a certificate are redirected.
    https_port: std::sync::atomic::AtomicU16,
}

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Where HTTP-01 tokens are asked for.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs")
            .field("domains", &self.domains())
            .finish()
    }
}

/// A domain as certificates name it: lowercase ASCII labels, one leading
/// `*.` allowed, at least two labels.
pub fn normalize_domain(raw: &str) -> Result<String, CertError> {
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = domain.strip_prefix("*.").unwrap_or(&domain);
    let labels: Vec<&str> = bare.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if domain.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(CertError::Domain(raw.chars().take(100).collect()));
    }
    Ok(domain)
}

/// Parses and checks a pushed certificate into what handshakes use.
pub fn load(cert: &TlsCert) -> Result<Arc<CertifiedKey>, CertError> {
    let key = parse(cert)?;
    key.keys_match().map_err(|_| CertError::KeyMismatch)?;
    Ok(Arc::new(key))
}

/// A certificate and key as rustls takes them, unchecked.
fn parse(cert: &TlsCert) -> Result<CertifiedKey, CertError> {
    normalize_domain(&cert.domain)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| CertError::NoCertificate)?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| CertError::Key(e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| CertError::KeyType(e.to_string()))?;
    Ok(CertifiedKey::new(chain, signer))
}

impl Certs {
    /// Adds or replaces the certificate of `cert.domain`; connections that
    /// started with the old one keep it.
    pub fn put(&self, cert: TlsCert) -> Result<(), CertError> {
        let key = load(&cert)?;
        let domain = normalize_domain(&cert.domain)?;
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::clone(&self.by_domain.load());
        next.insert(domain, Arc::new(Loaded { key, source: cert }));
        self.by_domain.store(Arc::new(next));
        Ok(())
    }

    /// Forgets a domain's certificate; false when there was none.
    pub fn remove(&self, domain: &str) -> bool {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::clone(&self.by_domain.load());
        let removed = next.remove(&domain).is_some();
        self.by_domain.store(Arc::new(next));
        removed
    }

    /// The domains that have a certificate, sorted.
    pub fn domains(&self) -> Vec<String> {
        let mut domains: Vec<String> = self.by_domain.load().keys().cloned().collect();
        domains.sort();
        domains
    }

    /// Everything loaded, as it was pushed (for a handover).
    pub fn sources(&self) -> Vec<TlsCert> {
        self.by_domain
            .load()
            .values()
            .map(|l| l.source.clone())
            .collect()
    }

    /// The certificate for a server name: its own, else a wildcard one
    /// label up. None: no certificate, and the handshake is refused (no
    /// default certificate shows another App's names).
    pub fn find(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        let all = self.by_domain.load();
        if let Some(found) = all.get(&name) {
            return Some(Arc::clone(&found.key));
        }
        let (_, parent) = name.split_once('.')?;
        all.get(&format!("*.{parent}"))
            .map(|found| Arc::clone(&found.key))
    }
}

impl Certs {
    /// The certificates a predecessor handed over; one that does not load
    /// any more is left out, with a warning.
    pub fn inherit(certs: Vec<TlsCert>) -> Certs {
        let loaded = Certs::default();
        for cert in certs {
            let domain = cert.domain.clone();
            if let Err(e) = loaded.put(cert) {
                tracing::warn!(%domain, error = %e, "a handed-over certificate does not load; left out");
            }
        }
        loaded
    }
}

/// Binds the HTTPS listener.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {addr} for HTTPS: {e}"))
}

/// The HTTPS listener at a takeover: the predecessor's when it had one at
/// the address wanted, else a new one.
pub async fn inherit(
    want: Option<SocketAddr>,
    got: Option<std::net::TcpListener>,
) -> anyhow::Result<Option<TcpListener>> {
    let Some(want) = want else {
        return Ok(None);
    };
    if let Some(got) = got {
        got.set_nonblocking(true)?;
        let got = TcpListener::from_std(got)?;
        if want.port() == 0 || got.local_addr()? == want {
            return Ok(Some(got));
        }
    }
    bind(want).await.map(Some)
}

/// Accepts on the HTTPS listener; never resolves without one.
pub async fn accept(
    https: Option<&(TcpListener, TlsAcceptor)>,
) -> std::io::Result<(TcpStream, SocketAddr, TlsAcceptor)> {
    match https {
        Some((listener, acceptor)) => {
            let (stream, peer) = listener.accept().await?;
            Ok((stream, peer, acceptor.clone()))
        }
        None => std::future::pending().await,
    }
}

impl Certs {
    /// Answers an HTTP-01 token with `key_authorization` until removed.
    pub fn set_http01(&self, token: String, key_authorization: String) {
        self.http01
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token, key_authorization);
    }

    pub fn remove_http01(&self, token: &str) {
        self.http01
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
    }

    /// The key authorization for a request path, if it asks for a token
    /// that is being validated.
    pub fn http01(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        self.http01
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    /// Shows `cert` to TLS-ALPN-01 validation of its domain until removed.
    pub fn set_alpn01(&self, cert: &TlsCert) -> Result<(), CertError> {
        // Not `load`: the key check parses the certificate with webpki,
        // which refuses its critical acmeIdentifier extension; the ACME
        // server is the one to judge this certificate.
        let key = Arc::new(parse(cert)?);
        let domain = normalize_domain(&cert.domain)?;
        self.alpn01
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(domain, key);
        Ok(())
    }

    pub fn remove_alpn01(&self, domain: &str) {
        self.alpn01
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&domain.to_ascii_lowercase());
    }

    fn alpn01(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn01
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&server_name.to_ascii_lowercase())
            .cloned()
    }
}

/// The answer to an ACME HTTP-01 validation request, if `req` is one (a GET
/// on the plain HTTP listener for a token being validated). Anything else
/// goes on to the App as usual: one string comparison per request.
pub fn answer_http01<B>(
    certs: &Certs,
    req: &http::Request<B>,
    over_tls: bool,
) -> Option<http::Response<crate::body::ProxyBody>> {
    if over_tls || req.method() != http::Method::GET {
        return None;
    }
    let key_authorization = certs.http01(req.uri().path())?;
    let mut resp = http::Response::new(crate::body::ProxyBody::fixed(key_authorization));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Some(resp)
}

impl Certs {
    /// Plain HTTP for hosts with a certificate is redirected to this port.
    pub fn serve_https_on(&self, port: u16) {
        self.https_port
            .store(port, std::sync::atomic::Ordering::Relaxed);
    }

    /// The HTTPS listener's port, if the proxy serves HTTPS.
    pub fn https_port(&self) -> Option<u16> {
        match self.https_port.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            port => Some(port),
        }
    }
}

/// The redirect of a plain HTTP request to HTTPS, when the host has a
/// certificate in force (and the proxy serves HTTPS) and is routed to an
/// App that has not turned redirects off: 301 for GET and HEAD, 308 (which
/// keeps the method and body) otherwise. A host without a route gets its
/// 404 where it asked, not a hop to HTTPS for the same 404 (a wildcard
/// certificate covers names no App serves). Without any certificate this
/// is one atomic load per request.
pub fn redirect_to_https<B>(
    certs: &Certs,
    routes: &crate::routes::Routes,
    req: &http::Request<B>,
    over_tls: bool,
) -> Option<http::Response<crate::body::ProxyBody>> {
    if over_tls {
        return None;
    }
    let port = certs.https_port.load(std::sync::atomic::Ordering::Relaxed);
    if port == 0 || certs.by_domain.load().is_empty() {
        return None;
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())?;
    let name = match host.rsplit_once(':') {
        Some((name, p)) if p.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    certs.find(name)?;
    let key = crate::host::normalize(name)?;
    if !routes
        .lookup(&key)
        .is_some_and(|route| route.redirects_to_https())
    {
        return None;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    };
    let location = http::HeaderValue::from_str(&location).ok()?;
    let status = if req.method() == http::Method::GET || req.method() == http::Method::HEAD {
        http::StatusCode::MOVED_PERMANENTLY
    } else {
        http::StatusCode::PERMANENT_REDIRECT
    };
    let mut resp = http::Response::new(crate::body::ProxyBody::empty());
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::LOCATION, location);
    Some(resp)
}

/// The resolver rustls asks on every handshake.
#[derive(Debug)]
struct BySni(Arc<Certs>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        let acme = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return self.0.alpn01(name);
        }
        self.0.find(name)
    }
}

/// The TLS side of the HTTPS listener: TLS 1.2 and 1.3, HTTP/2 and
/// HTTP/1.1 offered by ALPN, the certificate by SNI.
pub fn acceptor(certs: Arc<Certs>) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(certs)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How an accepted TCP connection becomes an HTTPS one: the handshake,
/// within the first-bytes deadline. `Ok(None)`: refused (no certificate
/// for the name, or not TLS); the caller just drops it.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, bool)> {
    match acceptor.accept(stream).await {
        Ok(tls) => {
            let alpn = tls.get_ref().1.alpn_protocol();
            if alpn == Some(ACME_TLS_ALPN) {
                // A TLS-ALPN-01 validation: the handshake was the answer.
                tracing::debug!(%peer, "answered a TLS-ALPN-01 validation");
                return None;
            }
            let h2 = alpn == Some(b"h2");
            Some((tls, h2))
        }
        Err(e) => {
            tracing::debug!(error = %e, %peer, "TLS handshake failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalized_and_checked() {
        assert_eq!(
            normalize_domain("App.Example.COM.").unwrap(),
            "app.example.com"
        );
        assert_eq!(normalize_domain("*.example.com").unwrap(), "*.example.com");
        assert!(normalize_domain("localhost").is_err());
        assert!(normalize_domain("a..b").is_err());
        assert!(normalize_domain("*.*.b.c").is_err());
        assert!(normalize_domain("-a.b").is_err());
        assert!(normalize_domain("a b.c").is_err());
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        let cert = TlsCert {
            domain: "a.example.com".into(),
            chain_pem: "not pem".into(),
            key_pem: String::new(),
        };
        assert!(matches!(load(&cert), Err(CertError::NoCertificate)));
    }
}
