//! Molt's own registry (`molt server --registry ADDR`): a real OCI
//! registry (Distribution, Debian's `docker-registry`) that the server runs
//! and supervises like the proxy, so that an external build can push an
//! image straight to the host without the source passing through the
//! server. Access is by bearer tokens that the server signs (the Docker
//! token-auth scheme): the registry trusts only the server's signing
//! certificate, and the server hands out credentials that reach one App's
//! repository and expire. The signing key lives in memory only and is new
//! at each start; nothing secret is written to disk.

pub mod credentials;
mod process;
pub mod token;

use crate::registry::Credential;
use anyhow::{Context, Result};
use credentials::{Credentials, Issued, Refusal};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use token::{Access, Claims, Grant};

/// The `service` the registry and its tokens name.
const SERVICE: &str = "molt-registry";
/// The tokens' issuer.
const ISSUER: &str = "molt";
/// How long a token lasts; clients ask for a new one as needed.
const TOKEN_TTL: Duration = Duration::from_secs(300);
/// How long the server's own pull credentials last.
const PULL_TTL: Duration = Duration::from_secs(600);

pub struct HostedRegistry {
    /// `HOST:PORT` as clients and the engine reach it.
    host: String,
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    credentials: Credentials,
    _process: process::Supervised,
}

/// Where an external build pushes, and with what.
#[derive(Debug, Clone)]
pub struct PushTarget {
    pub registry: String,
    /// `HOST:PORT/APP`, to tag the image with.
    pub repository: String,
    pub credential: Issued,
}

/// A token answer, as Docker clients expect it.
#[derive(Debug, serde::Serialize)]
pub struct TokenAnswer {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

impl HostedRegistry {
    /// Starts the registry on `addr`, storing under `dir`, trusting tokens
    /// from `realm` (the server's token endpoint); returns once it answers.
    pub async fn start(dir: &Path, addr: SocketAddr, realm: &str) -> Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("generating the registry's signing key failed"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("loading the registry's signing key failed"))?;
        let cert = signing_certificate(pkcs8.as_ref())?;
        let settings = process::Settings {
            dir: dir.to_path_buf(),
            addr,
            realm: realm.to_string(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            cert_pem: cert.pem(),
        };
        let supervised = process::Supervised::start(settings).await?;
        Ok(Self {
            host: reachable_host(addr),
            key,
            cert_der: cert.der().to_vec(),
            credentials: Credentials::default(),
            _process: supervised,
        })
    }

    /// `HOST:PORT`, as images in this registry are named.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A push target for an App's external build: its repository and a
    /// credential for it alone that stops working after `ttl`.
    pub fn push_target(&self, app: &str, ttl: Duration) -> PushTarget {
        let credential = self.credentials.issue(
            "build",
            Grant::PushPull {
                repository: app.to_string(),
            },
            ttl,
        );
        PushTarget {
            registry: self.host.clone(),
            repository: format!("{}/{app}", self.host),
            credential,
        }
    }

    /// A short-lived credential the server pulls with.
    pub fn pull_credential(&self) -> Credential {
        let issued = self
            .credentials
            .issue("molt-pull", Grant::PullAll, PULL_TTL);
        Credential {
            username: issued.username,
            password: issued.password,
        }
    }

    /// Deletes a manifest from the registry (retention); its layers go at
    /// the garbage collection of the next start. Gone already is fine.
    pub async fn delete_manifest(&self, repository: &str, digest: &str) -> Result<()> {
        let now = time::OffsetDateTime::now_utc();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: "molt-retention".into(),
            aud: SERVICE.into(),
            exp: now.unix_timestamp() + 60,
            nbf: now.unix_timestamp() - 5,
            iat: now.unix_timestamp(),
            jti: crate::datadir::random_hex(12),
            access: vec![Access {
                kind: "repository".into(),
                name: repository.into(),
                actions: vec!["delete".into()],
            }],
        };
        let token = token::sign(&self.key, &self.cert_der, &claims)?;
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .delete(format!(
                "http://{}/v2/{repository}/manifests/{digest}",
                self.host
            ))
            .bearer_auth(token)
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            status => Err(anyhow::anyhow!(
                "Molt's registry answered {status} to deleting {repository}@{digest}"
            )),
        }
    }

    /// The repository of `image` when it lives in this registry.
    pub fn repository_of<'a>(&self, image: &'a molt_core::ImageRef) -> Option<&'a str> {
        (image.registry == self.host).then_some(image.repository.as_str())
    }

    /// Answers a token request: the requested scopes that the credential
    /// allows, signed. A token without access (what `docker login` asks
    /// for) proves the credential works.
    pub fn token(
        &self,
        username: &str,
        password: &str,
        scopes: &[&str],
    ) -> Result<TokenAnswer, Refusal> {
        let (grant, left) = self.credentials.check(username, password)?;
        let access: Vec<Access> =
            token::allowed(&token::parse_scopes(scopes.iter().copied()), &grant);
        let now = time::OffsetDateTime::now_utc();
        let ttl = TOKEN_TTL.min(left).max(Duration::from_secs(1));
        let claims = Claims {
            iss: ISSUER.into(),
            sub: username.into(),
            aud: SERVICE.into(),
            exp: now.unix_timestamp() + ttl.as_secs() as i64,
            nbf: now.unix_timestamp() - 5,
            iat: now.unix_timestamp(),
            jti: crate::datadir::random_hex(12),
            access,
        };
        let token = token::sign(&self.key, &self.cert_der, &claims).map_err(|e| {
            tracing::error!("{e:#}");
            Refusal::Unknown
        })?;
        Ok(TokenAnswer {
            access_token: token.clone(),
            token,
            expires_in: ttl.as_secs(),
            issued_at: now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        })
    }
}

/// A self-signed certificate of the signing key: what the registry's
/// `rootcertbundle` holds, and what each token carries in `x5c`.
fn signing_certificate(pkcs8: &[u8]) -> Result<rcgen::Certificate> {
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.to_vec());
    let key =
        rcgen::KeyPair::try_from(&der).context("reading the signing key for its certificate")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Molt registry token signer");
    Ok(params.self_signed(&key)?)
}

/// The address clients use for a listen address: the unspecified address
/// (listening everywhere) is reached on loopback from this host.
pub fn reachable_host(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_reachable_names() {
        assert_eq!(
            reachable_host("0.0.0.0:5500".parse().unwrap()),
            "127.0.0.1:5500"
        );
        assert_eq!(reachable_host("[::]:5500".parse().unwrap()), "[::1]:5500");
        assert_eq!(
            reachable_host("10.0.0.2:5500".parse().unwrap()),
            "10.0.0.2:5500"
        );
    }
}
