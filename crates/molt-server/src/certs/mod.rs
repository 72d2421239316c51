//! HTTPS certificates: kept by domain in the store (the private key
//! sealed), pushed to the proxy, which holds them in memory only. The API
//! and the dashboard call these, so both apply the same checks.
//!
//! - `inspect`: what a certificate says, and whether it may be used.
//! - `sync`: keeps the proxy's certificates equal to the store's, also
//!   after the proxy restarted (it forgets them on purpose).

pub mod acme;
pub mod inspect;
pub mod sync;

use crate::deploy::{DeployError, Deployer};
use crate::store::CertRow;
use molt_core::api::{AddCertRequest, CertView, DomainHttpsView, Finding};
use molt_proxy::tls::{normalize_domain, TlsCert};

/// Where a certificate came from: a person's own, or ordered by Molt.
pub const SOURCE_CUSTOM: &str = "custom";
pub const SOURCE_ACME: &str = "acme";
/// Below this many days left, `molt certs list` warns.
pub const WARN_DAYS: i64 = 14;

/// The seal's purpose for a domain's key: a sealed key moved to another
/// domain's row does not open.
fn seal_purpose(domain: &str) -> String {
    format!("cert-key:{domain}")
}

/// Now, unix seconds.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A domain as the certificate commands take it.
pub fn domain(raw: &str) -> Result<String, DeployError> {
    normalize_domain(raw).map_err(|e| DeployError::Invalid {
        code: "invalid_domain",
        message: e.to_string(),
    })
}

/// Checks a person's own certificate for a domain, keeps it (key sealed)
/// and puts it in force in the proxy.
pub async fn add_custom(deployer: &Deployer, req: &AddCertRequest) -> Result<CertRow, DeployError> {
    let domain = domain(&req.domain)?;
    let cert = TlsCert {
        domain: domain.clone(),
        chain_pem: req.cert_pem.clone(),
        key_pem: req.key_pem.clone(),
    };
    let facts = inspect::check(&cert, unix_now()).map_err(|e| DeployError::Invalid {
        code: "invalid_certificate",
        message: e.to_string(),
    })?;
    save(deployer, cert, SOURCE_CUSTOM, &facts).await
}

/// Keeps a checked certificate and pushes it to the proxy.
pub async fn save(
    deployer: &Deployer,
    cert: TlsCert,
    source: &str,
    facts: &inspect::Facts,
) -> Result<CertRow, DeployError> {
    let key_sealed = deployer
        .sealer
        .seal(&seal_purpose(&cert.domain), cert.key_pem.as_bytes())?;
    let row = CertRow {
        domain: cert.domain.clone(),
        source: source.to_string(),
        chain_pem: cert.chain_pem.clone(),
        key_sealed,
        issuer: facts.issuer.clone(),
        not_before: inspect::rfc3339(facts.not_before),
        not_after: inspect::rfc3339(facts.not_after),
        created_at: String::new(),
        updated_at: String::new(),
    };
    deployer.store.upsert_cert(&row)?;
    // Saved is what counts: should the proxy not take it now, `sync` pushes
    // it again.
    let domain = cert.domain.clone();
    if let Err(e) = deployer.proxy.put_cert(cert).await {
        tracing::warn!(%domain, "the proxy did not take the certificate yet: {e:#}");
    }
    Ok(deployer
        .store
        .get_cert(&row.domain)?
        .ok_or_else(|| anyhow::anyhow!("the certificate vanished right after it was saved"))?)
}

/// Forgets a domain's certificate, here and in the proxy; false when there
/// was none.
pub async fn remove(deployer: &Deployer, raw: &str) -> Result<bool, DeployError> {
    let domain = domain(raw)?;
    if !deployer.store.remove_cert(&domain)? {
        return Ok(false);
    }
    if let Err(e) = deployer.proxy.remove_cert(&domain).await {
        tracing::warn!(%domain, "the proxy did not drop the certificate yet: {e:#}");
    }
    Ok(true)
}

/// A stored certificate, opened for the proxy.
pub fn open(deployer: &Deployer, row: &CertRow) -> anyhow::Result<TlsCert> {
    let key = deployer
        .sealer
        .open(&seal_purpose(&row.domain), &row.key_sealed)?;
    Ok(TlsCert {
        domain: row.domain.clone(),
        chain_pem: row.chain_pem.clone(),
        key_pem: String::from_utf8(key)
            .map_err(|_| anyhow::anyhow!("the sealed key of {} is not text", row.domain))?,
    })
}

/// How a certificate is shown: never its key.
pub fn view(row: &CertRow, now: i64) -> CertView {
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp())
            .unwrap_or(0)
    };
    let days_left = (parse(&row.not_after) - now).div_euclid(86_400);
    CertView {
        domain: row.domain.clone(),
        source: row.source.clone(),
        issuer: row.issuer.clone(),
        not_before: row.not_before.clone(),
        not_after: row.not_after.clone(),
        days_left,
        expires_soon: days_left < WARN_DAYS,
        updated_at: row.updated_at.clone(),
    }
}

/// Prometheus gauges: each certificate's expiry (unix seconds), so an alert
/// can fire on `molt_certificate_expiry_seconds - time() < 14 * 86400`.
pub fn expiry_metrics(store: &crate::store::Store) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    out.push_str("# HELP molt_certificate_expiry_seconds When each HTTPS certificate expires (unix seconds), by domain and source.\n");
    out.push_str("# TYPE molt_certificate_expiry_seconds gauge\n");
    for row in store.list_certs().unwrap_or_default() {
        let expiry = time::OffsetDateTime::parse(
            &row.not_after,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp())
        .unwrap_or(0);
        let _ = writeln!(
            out,
            "molt_certificate_expiry_seconds{{domain=\"{}\",source=\"{}\"}} {expiry}",
            row.domain.replace('"', ""),
            row.source
        );
    }
    out
}

/// HTTPS per App domain: the certificate in force (its own or a wildcard
/// over it), else how ordering one goes. Domains that neither have nor
/// want one (`*.localhost`) are left out.
pub fn https_views(
    store: &crate::store::Store,
    domains: &[String],
) -> anyhow::Result<Vec<DomainHttpsView>> {
    let certs = store.list_certs()?;
    let mut views = Vec::new();
    for domain in domains {
        let cert = certs.iter().find(|c| &c.domain == domain).or_else(|| {
            certs
                .iter()
                .find(|c| inspect::covers(std::slice::from_ref(&c.domain), domain))
        });
        let order = store.acme_order(domain)?;
        if cert.is_none() && order.is_none() && !acme::wants_certificate(domain) {
            continue;
        }
        let (state, problem, next) = match (&order, cert) {
            // A failure while a certificate is in force (a renewal) shows
            // too: the certificate still serves.
            (Some(o), _) if o.state == acme::FAILED => (
                if cert.is_some() {
                    "valid"
                } else {
                    acme::FAILED
                },
                o.problem.clone(),
                Some(inspect::rfc3339(o.next_attempt)),
            ),
            (_, Some(_)) => ("valid", None, None),
            (Some(o), None) => (o.state.as_str(), o.problem.clone(), None),
            (None, None) => ("none", None, None),
        };
        views.push(DomainHttpsView {
            domain: domain.clone(),
            state: state.to_string(),
            certificate: cert.map(|c| c.domain.clone()),
            source: cert.map(|c| c.source.clone()),
            not_after: cert.map(|c| c.not_after.clone()),
            problem,
            next_attempt_at: next,
        });
    }
    Ok(views)
}

/// `molt debug` findings: a domain whose certificate could not be ordered.
pub fn https_findings(
    store: &crate::store::Store,
    domains: &[String],
) -> anyhow::Result<Vec<Finding>> {
    Ok(https_views(store, domains)?
        .into_iter()
        .filter_map(|v| {
            let problem = v.problem?;
            Some(Finding {
                kind: "certificate_failing".into(),
                summary: format!("ordering the HTTPS certificate for {} failed", v.domain),
                detail: Some(problem),
                hint: format!(
                    "the domain must resolve to this host and reach the proxy on ports 80 (HTTP-01) or 443 (TLS-ALPN-01); Molt tries again at {} and HTTP keeps serving meanwhile",
                    v.next_attempt_at.unwrap_or_default()
                ),
            })
        })
        .collect())
}
