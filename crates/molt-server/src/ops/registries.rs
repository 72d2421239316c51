//! Registry credentials: verified with the registry, sealed, saved. The
//! API and the dashboard both call these, so both apply the same checks.

use crate::deploy::{DeployError, Deployer};
use crate::registry::{self, Credential};
use crate::store::RegistryRow;
use molt_core::api::AddRegistryRequest;

/// Verifies a registry credential with the registry, then seals and saves
/// it. Shared by the API and the dashboard, so both apply the same checks.
pub async fn save_registry(
    deployer: &Deployer,
    req: &AddRegistryRequest,
) -> Result<RegistryRow, DeployError> {
    let host = normalize_host(&req.host)?;
    if req.username.is_empty() || req.password.is_empty() {
        return Err(DeployError::Invalid {
            code: "invalid_credential",
            message: "both a username and a password (or token) are needed".into(),
        });
    }
    let cred = Credential {
        username: req.username.clone(),
        password: req.password.clone(),
    };
    registry::verify_credential(&host, &cred).await?;
    let sealed = deployer
        .sealer
        .seal(&format!("registry:{host}"), req.password.as_bytes())?;
    deployer
        .store
        .upsert_registry(&host, &req.username, &sealed)?;
    let row = deployer
        .store
        .get_registry(&host)?
        .ok_or_else(|| anyhow::anyhow!("the credential vanished right after it was saved"))?;
    Ok(row)
}

/// A registry host as images name it (`ghcr.io`, `127.0.0.1:5000`).
pub fn normalize_host(raw: &str) -> Result<String, DeployError> {
    let host = raw
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    };
    // Reuse the reference parser's host rules on `HOST/x`.
    match molt_core::ImageRef::parse(&format!("{host}/x")) {
        Ok(r) if r.registry == host => Ok(host),
        _ => Err(DeployError::Invalid {
            code: "invalid_registry",
            message: format!(
                "`{}` is not a registry host: give one like `ghcr.io` or `127.0.0.1:5000`",
                raw.chars().take(100).collect::<String>()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts() {
        assert_eq!(normalize_host("https://GHCR.io/").ok().unwrap(), "ghcr.io");
        assert_eq!(
            normalize_host("127.0.0.1:5000").ok().unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(normalize_host("index.docker.io").ok().unwrap(), "docker.io");
        assert!(normalize_host("bad host").is_err());
        assert!(normalize_host("a/b").is_err());
    }
}
