//! Keeps the proxy's certificates equal to the store's. The proxy holds
//! them in memory only (a private key never lies in its files), so a proxy
//! that started afresh has none: this notices within a second and pushes
//! them again; it also retries a push that failed.

use crate::deploy::Deployer;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How often the proxy's set is compared with the store's.
const EVERY: Duration = Duration::from_secs(1);

/// Runs `once` every second, for the life of the server.
pub fn spawn(deployer: Arc<Deployer>) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = once(&deployer).await {
                tracing::debug!("certificates not in sync with the proxy yet: {e:#}");
            }
            tokio::time::sleep(EVERY).await;
        }
    });
}

/// One comparison: pushes what the proxy lacks, drops what it should not
/// have. Returns how many it pushed.
pub async fn once(deployer: &Deployer) -> anyhow::Result<usize> {
    let held: BTreeSet<String> = deployer.proxy.cert_domains().await?.into_iter().collect();
    let rows = deployer.store.list_certs()?;
    let mut pushed = 0;
    for row in &rows {
        if held.contains(&row.domain) {
            continue;
        }
        let cert = super::open(deployer, row)?;
        match deployer.proxy.put_cert(cert).await {
            Ok(()) => pushed += 1,
            Err(e) => {
                tracing::warn!(domain = %row.domain, "the proxy refused a stored certificate: {e:#}")
            }
        }
    }
    let kept: BTreeSet<&str> = rows.iter().map(|r| r.domain.as_str()).collect();
    for domain in held.iter().filter(|d| !kept.contains(d.as_str())) {
        deployer.proxy.remove_cert(domain).await?;
    }
    if pushed > 0 {
        tracing::info!(pushed, "certificates pushed to the proxy");
    }
    Ok(pushed)
}
