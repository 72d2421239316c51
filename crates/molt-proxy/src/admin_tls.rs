//! TLS for the admin protocol over TCP, with nothing for the operator to
//! set up beyond the admin token: both sides derive the same Ed25519 key
//! from the token (HKDF-SHA256). The proxy serves a self-signed
//! certificate of that key; the server accepts only a certificate of that
//! key, and TLS 1.3 makes the proxy prove it holds it. So the routes and
//! certificates that cross the network are encrypted, and only a holder of
//! the token can pose as the proxy (the token line inside the TLS stream
//! proves the server is one too). The session keys are ephemeral (X25519):
//! a token that leaks later opens no recorded session.

use std::sync::Arc;

use ring::hkdf;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::admin_token::AdminToken;

/// The name the certificate carries and the client asks for (SNI); the
/// key, not the name, is what is checked.
pub(crate) const SERVER_NAME: &str = "molt-proxy-admin";

/// Binds the derived key to this use: another use of the token derives
/// another key.
const SALT: &[u8] = b"molt proxy admin tls";
const INFO: &[&[u8]] = &[b"ed25519 key"];

/// The PKCS#8 (v1) wrapping of an Ed25519 private key: this prefix, then
/// the 32-byte seed (RFC 8410).
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The SubjectPublicKeyInfo of an Ed25519 key: this prefix, then the
/// 32-byte public key (RFC 8410).
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

struct Seed([u8; 32]);

impl hkdf::KeyType for Seed {
    fn len(&self) -> usize {
        32
    }
}

/// The token's key: its PKCS#8 and its SubjectPublicKeyInfo.
struct DerivedKey {
    pkcs8: Vec<u8>,
    rcgen: rcgen::KeyPair,
}

fn derive(token: &AdminToken) -> anyhow::Result<DerivedKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(token.expose().as_bytes());
    let mut seed = Seed([0; 32]);
    prk.expand(INFO, Seed([0; 32]))
        .and_then(|okm| okm.fill(&mut seed.0))
        .map_err(|_| anyhow::anyhow!("deriving the admin TLS key failed"))?;
    let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
    pkcs8.extend_from_slice(&seed.0);
    let rcgen = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
        &rcgen::PKCS_ED25519,
    )
    .map_err(|e| anyhow::anyhow!("the admin TLS key: {e}"))?;
    Ok(DerivedKey { pkcs8, rcgen })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The proxy's side: TLS 1.3 with the certificate of the token's key.
pub(crate) fn acceptor(token: &AdminToken) -> anyhow::Result<TlsAcceptor> {
    let key = derive(token)?;
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
        .and_then(|params| params.self_signed(&key.rcgen))
        .map_err(|e| anyhow::anyhow!("the admin TLS certificate: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| anyhow::anyhow!("admin TLS settings: {e}"))?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8)),
        )
        .map_err(|e| anyhow::anyhow!("admin TLS settings: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The server's side: TLS 1.3, and only a certificate of the token's key.
pub(crate) fn connector(token: &AdminToken) -> anyhow::Result<TlsConnector> {
    let key = derive(token)?;
    let mut spki = SPKI_ED25519_PREFIX.to_vec();
    spki.extend_from_slice(key.rcgen.public_key_raw());
    let provider = provider();
    let verifier = PinnedKey {
        spki,
        provider: Arc::clone(&provider),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| anyhow::anyhow!("admin TLS settings: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// Accepts exactly one public key, whatever the certificate says besides;
/// the handshake's signature is then checked against that key.
#[derive(Debug)]
struct PinnedKey {
    spki: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        if parsed.subject_public_key_info().as_ref() == self.spki.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the proxy's admin key is not the admin token's: the token differs".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "the admin protocol is TLS 1.3 only".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn token(fill: char) -> AdminToken {
        AdminToken::new(&fill.to_string().repeat(40)).expect("token")
    }

    /// A handshake between an acceptor of `server` and a connector of
    /// `client`; the bytes the client got back.
    async fn handshake(server: char, client: char) -> Result<Vec<u8>, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = acceptor(&token(server)).unwrap();
        let serving = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"hello").await;
                let _ = tls.shutdown().await;
            }
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let result = match connector(&token(client))
            .unwrap()
            .connect(server_name(), tcp)
            .await
        {
            Ok(mut tls) => {
                let mut got = Vec::new();
                tls.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
                Ok(got)
            }
            Err(e) => Err(e.to_string()),
        };
        serving.await.unwrap();
        result
    }

    #[tokio::test]
    async fn the_same_token_talks_and_another_is_refused() {
        assert_eq!(handshake('a', 'a').await.expect("same token"), b"hello");
        let err = handshake('a', 'b').await.expect_err("another token");
        assert!(err.contains("token differs"), "{err}");
    }
}
