//! Registry access without the engine: verifying a credential before it is
//! saved, and the preflight checks that refuse a bad image before anything
//! is created. Each failure says which check failed and what to do.

use molt_core::ImageRef;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::time::Duration;

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Why a registry check failed; each has a stable code for the API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("the registry {host} did not answer: {reason}; check its address and that this host can reach it")]
    Unreachable { host: String, reason: String },
    #[error("the registry {host} refused the credentials for `{username}`: {reason}; check the username and the password or token (a token needs pull rights), then save it with `molt registries add {host} --username USER --password-stdin`")]
    CredentialRefused {
        host: String,
        username: String,
        reason: String,
    },
    #[error("the registry {host} needs a login to read {repository}: add one with `molt registries add {host} --username USER --password-stdin`")]
    NeedsCredential { host: String, repository: String },
    #[error("{reference} was not found in its registry: {reason}")]
    NotFound { reference: String, reason: String },
    #[error("{reference} has no linux/amd64 image; it is built for {platforms}. Build and push an amd64 image (e.g. `docker buildx build --platform linux/amd64`)")]
    NoAmd64 {
        reference: String,
        platforms: String,
    },
    #[error("the registry {host} asks for logins at the token service {realm} over plain HTTP, where the password could be read on the way; Molt sends credentials only over HTTPS (or plain HTTP to this machine's loopback): ask the registry's operator to serve the token service over HTTPS")]
    InsecureRealm { host: String, realm: String },
    #[error("the registry {host} answered with an error: {reason}")]
    Other { host: String, reason: String },
}

impl RegistryError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "registry_unreachable",
            Self::CredentialRefused { .. } => "registry_credential_refused",
            Self::NeedsCredential { .. } => "registry_credential_needed",
            Self::NotFound { .. } => "image_not_found",
            Self::NoAmd64 { .. } => "image_platform_missing",
            Self::InsecureRealm { .. } => "registry_insecure_realm",
            Self::Other { .. } => "registry_error",
        }
    }
}

/// A username and password for one registry host.
#[derive(Clone)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

fn base_url(host: &str) -> String {
    let scheme = if molt_core::reference::registry_is_local(host) {
        "http"
    } else {
        "https"
    };
    let host = if host == molt_core::reference::DEFAULT_REGISTRY {
        "registry-1.docker.io"
    } else {
        host
    };
    format!("{scheme}://{host}")
}

fn http_client() -> reqwest::Client {
    crate::tls::init();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default()
}

/// Checks a credential against the registry's `/v2/` endpoint, following a
/// token challenge when the registry uses one.
pub async fn verify_credential(host: &str, cred: &Credential) -> Result<(), RegistryError> {
    let client = http_client();
    let url = format!("{}/v2/", base_url(host));
    let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
        host: host.to_string(),
        reason: plain_reqwest_error(&e),
    };
    let refused = |reason: String| RegistryError::CredentialRefused {
        host: host.to_string(),
        username: cred.username.clone(),
        reason,
    };
    let resp = client
        .get(&url)
        .basic_auth(&cred.username, Some(&cred.password))
        .send()
        .await
        .map_err(unreachable)?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    if status != reqwest::StatusCode::UNAUTHORIZED {
        return Err(RegistryError::Other {
            host: host.to_string(),
            reason: format!("GET /v2/ answered {status}"),
        });
    }
    let challenge = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.text().await.unwrap_or_default();
    let Some(params) = challenge.strip_prefix("Bearer ") else {
        return Err(refused(format!("{status}{}", registry_reason(&body))));
    };
    // Token auth: ask the realm for a token with the credential.
    let Some(realm) = challenge_field(params, "realm") else {
        return Err(refused(format!(
            "{status}: no token realm in the challenge"
        )));
    };
    check_realm(host, &realm)?;
    let mut query = vec![("account", cred.username.clone())];
    if let Some(service) = challenge_field(params, "service") {
        query.push(("service", service));
    }
    let resp = client
        .get(&realm)
        .query(&query)
        .basic_auth(&cred.username, Some(&cred.password))
        .send()
        .await
        .map_err(unreachable)?;
    if resp.status().is_success() {
        Ok(())
    } else {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(refused(format!("{status}{}", registry_reason(&body))))
    }
}

/// One `key="value"` parameter of a `WWW-Authenticate: Bearer ...` challenge.
fn challenge_field(params: &str, name: &str) -> Option<String> {
    params.split(',').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"').to_string())
    })
}

/// Refuses a token realm that would carry a Basic credential in the clear:
/// a realm gets the password only over `https://`, or over `http://` to a
/// loopback address (parsed, not matched by prefix).
fn check_realm(host: &str, realm: &str) -> Result<(), RegistryError> {
    let insecure = || RegistryError::InsecureRealm {
        host: host.to_string(),
        realm: realm.to_string(),
    };
    let url = reqwest::Url::parse(realm).map_err(|_| insecure())?;
    match url.scheme() {
        "https" => Ok(()),
        "http"
            if url
                .host_str()
                .is_some_and(molt_core::reference::host_is_loopback) =>
        {
            Ok(())
        }
        _ => Err(insecure()),
    }
}

/// Before a credential goes to a registry's token service through the OCI
/// client (which follows any realm), asks the registry for its challenge
/// without credentials and checks the realm. A registry that does not
/// answer is left to the real request to report.
async fn check_registry_realm(image: &ImageRef) -> Result<(), RegistryError> {
    let url = format!("{}/v2/", base_url(&image.registry));
    let Ok(resp) = http_client().get(&url).send().await else {
        return Ok(());
    };
    let challenge = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match challenge
        .strip_prefix("Bearer ")
        .and_then(|p| challenge_field(p, "realm"))
    {
        Some(realm) => check_realm(&image.registry, &realm),
        None => Ok(()),
    }
}

/// The preflight of a new image: the registry answers, the credential (if
/// any) is accepted, the manifest exists, and a multi-platform image has
/// `linux/amd64`. Returns the manifest's digest.
pub async fn preflight(
    image: &ImageRef,
    cred: Option<&Credential>,
) -> Result<String, RegistryError> {
    let reference: Reference = image
        .to_string()
        .parse()
        .map_err(|e| RegistryError::NotFound {
            reference: image.to_string(),
            reason: format!("{e}"),
        })?;
    let protocol = if image.registry_is_local() {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    crate::tls::init();
    let client = Client::new(ClientConfig {
        protocol,
        connect_timeout: Some(Duration::from_secs(5)),
        read_timeout: Some(Duration::from_secs(15)),
        ..Default::default()
    });
    let auth = match cred {
        Some(c) => {
            check_registry_realm(image).await?;
            RegistryAuth::Basic(c.username.clone(), c.password.clone())
        }
        None => RegistryAuth::Anonymous,
    };
    let (bytes, digest) = client
        .pull_manifest_raw(&reference, &auth, ACCEPT)
        .await
        .map_err(|e| map_oci_error(image, cred, e))?;
    check_platforms(image, &bytes)?;
    Ok(digest)
}

/// Refuses an image index that lists platforms but not linux/amd64.
fn check_platforms(image: &ImageRef, manifest: &[u8]) -> Result<(), RegistryError> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(manifest) else {
        return Ok(());
    };
    let Some(entries) = value.get("manifests").and_then(|m| m.as_array()) else {
        return Ok(()); // a single-platform manifest
    };
    let platforms: Vec<String> = entries
        .iter()
        .filter_map(|e| {
            let p = e.get("platform")?;
            let os = p.get("os")?.as_str()?;
            let arch = p.get("architecture")?.as_str()?;
            // Attestation entries are marked unknown/unknown.
            (os != "unknown").then(|| format!("{os}/{arch}"))
        })
        .collect();
    if platforms.is_empty() || platforms.iter().any(|p| p == "linux/amd64") {
        Ok(())
    } else {
        Err(RegistryError::NoAmd64 {
            reference: image.to_string(),
            platforms: platforms.join(", "),
        })
    }
}

fn map_oci_error(
    image: &ImageRef,
    cred: Option<&Credential>,
    e: OciDistributionError,
) -> RegistryError {
    let host = image.registry.clone();
    let needs_or_refused = |reason: String| match cred {
        Some(c) => RegistryError::CredentialRefused {
            host: host.clone(),
            username: c.username.clone(),
            reason,
        },
        None => RegistryError::NeedsCredential {
            host: host.clone(),
            repository: image.repository.clone(),
        },
    };
    let not_found = |reason: String| RegistryError::NotFound {
        reference: image.to_string(),
        reason,
    };
    match e {
        OciDistributionError::RequestError(e) => RegistryError::Unreachable {
            host,
            reason: plain_reqwest_error(&e),
        },
        OciDistributionError::UnauthorizedError { .. } => {
            needs_or_refused("401 Unauthorized".into())
        }
        OciDistributionError::AuthenticationFailure(reason) => needs_or_refused(reason),
        OciDistributionError::ImageManifestNotFoundError(reason) => not_found(reason),
        OciDistributionError::RegistryError { envelope, .. } => {
            let first = envelope.errors.first();
            let reason = first
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .unwrap_or_default();
            match first.map(|e| &e.code) {
                Some(OciErrorCode::ManifestUnknown) => not_found(format!(
                    "the tag `{}` does not exist in {} ({reason})",
                    image
                        .tag
                        .as_deref()
                        .or(image.digest.as_deref())
                        .unwrap_or("latest"),
                    image.name()
                )),
                Some(OciErrorCode::NameUnknown) => not_found(format!(
                    "the repository {} does not exist ({reason})",
                    image.name()
                )),
                Some(OciErrorCode::Unauthorized) | Some(OciErrorCode::Denied) => {
                    needs_or_refused(reason)
                }
                _ => RegistryError::Other { host, reason },
            }
        }
        OciDistributionError::ServerError {
            code: 404, message, ..
        } => not_found(message),
        OciDistributionError::ServerError {
            code: 401 | 403,
            message,
            ..
        } => needs_or_refused(message),
        other => RegistryError::Other {
            host,
            reason: other.to_string(),
        },
    }
}

/// The first error message in a registry's JSON error body.
fn registry_reason(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            Some(format!(
                " ({}: {})",
                e.get("code")?.as_str()?,
                e.get("message")?.as_str()?
            ))
        })
        .or_else(|| {
            let details = serde_json::from_str::<serde_json::Value>(body).ok()?;
            Some(format!(" ({})", details.get("details")?.as_str()?))
        })
        .unwrap_or_default()
}

/// A reqwest error without the URL noise, keeping the root cause.
fn plain_reqwest_error(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "the connection timed out".to_string()
    } else if e.is_connect() {
        "the connection failed".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    if let Some(root) = last {
        msg.push_str(&format!(" ({root})"));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_check() {
        let image = ImageRef::parse("reg.io/app:v1").unwrap();
        let index = |p: &str| {
            format!(
                r#"{{"manifests":[{{"digest":"sha256:x","platform":{{"os":"linux","architecture":"{p}"}}}}]}}"#
            )
        };
        assert!(check_platforms(&image, index("amd64").as_bytes()).is_ok());
        let e = check_platforms(&image, index("arm64").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("linux/arm64"), "{e}");
        assert!(check_platforms(&image, br#"{"layers":[]}"#).is_ok());
    }

    #[test]
    fn reasons_from_bodies() {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
        assert_eq!(
            registry_reason(body),
            " (UNAUTHORIZED: authentication required)"
        );
        assert_eq!(registry_reason("nope"), "");
    }

    #[test]
    fn a_refused_credential_says_how_to_fix_it() {
        let e = RegistryError::CredentialRefused {
            host: "127.0.0.1:5000".into(),
            username: "ci".into(),
            reason: "401 Unauthorized".into(),
        };
        let e = e.to_string();
        assert!(e.contains("check the username and the password"), "{e}");
        assert!(
            e.contains("`molt registries add 127.0.0.1:5000 --username USER --password-stdin`"),
            "{e}"
        );
    }

    #[test]
    fn local_registries_use_http() {
        assert_eq!(base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(base_url("ghcr.io"), "https://ghcr.io");
        assert_eq!(base_url("docker.io"), "https://registry-1.docker.io");
        // A name that merely starts like a loopback address is remote.
        assert_eq!(base_url("127.example.com"), "https://127.example.com");
        assert_eq!(
            base_url("127.0.0.1.nip.io:5000"),
            "https://127.0.0.1.nip.io:5000"
        );
        assert_eq!(base_url("[::1]:5000"), "http://[::1]:5000");
    }

    #[test]
    fn basic_credentials_never_go_to_a_plain_http_realm() {
        let ok = |realm: &str| check_realm("reg.example", realm).is_ok();
        assert!(ok("https://auth.example/token"));
        assert!(ok("http://127.0.0.1:5001/token"));
        assert!(ok("http://[::1]:5001/token"));
        assert!(ok("http://localhost/token"));
        assert!(!ok("http://auth.example/token"));
        assert!(!ok("http://127.example.com/token"));
        assert!(!ok("http://10.0.0.1/token"));
        assert!(!ok("ftp://auth.example/token"));
        assert!(!ok("not a url"));
        let e = check_realm("reg.example", "http://auth.example/token").unwrap_err();
        assert_eq!(e.code(), "registry_insecure_realm");
        assert!(e.to_string().contains("http://auth.example/token"), "{e}");
    }

    #[test]
    fn challenge_fields() {
        let p = r#"realm="https://auth.example/token",service="reg",scope="repository:a:pull""#;
        assert_eq!(
            challenge_field(p, "realm").as_deref(),
            Some("https://auth.example/token")
        );
        assert_eq!(challenge_field(p, "service").as_deref(), Some("reg"));
        assert_eq!(challenge_field(p, "nope"), None);
    }
}
