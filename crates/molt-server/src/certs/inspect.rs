//! Reading a certificate before it is kept: does the key belong to it, is
//! it valid now, does it name the domain. A refusal says which and why.

use molt_proxy::tls::{self, TlsCert};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// What Molt keeps about a certificate besides the PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The issuer's common name (its organization when it has none).
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The DNS names it covers (its SANs).
    pub names: Vec<String>,
}

/// Why a certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Load(#[from] tls::CertError),
    #[error("the certificate cannot be read: {0}")]
    Unreadable(String),
    #[error("the certificate expired on {0}: get a current one")]
    Expired(String),
    #[error("the certificate is not valid before {0}: try again then, or check the clock")]
    NotYetValid(String),
    #[error("the certificate does not cover {domain}: it names {names} (the first certificate in the file must be the one for the domain)")]
    Uncovered { domain: String, names: String },
}

/// Reads the leaf (the first certificate of the chain).
pub fn facts(chain_pem: &str) -> Result<Facts, Refused> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or(Refused::Load(tls::CertError::NoCertificate))?
        .map_err(|_| Refused::Load(tls::CertError::NoCertificate))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| Refused::Unreadable(e.to_string()))?;
    let issuer = cert
        .issuer()
        .iter_common_name()
        .chain(cert.issuer().iter_organization())
        .find_map(|a| a.as_str().ok())
        .unwrap_or("unknown")
        .to_string();
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(Refused::Unreadable(e.to_string())),
    };
    Ok(Facts {
        issuer,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        names,
    })
}

/// Whether a certificate naming `names` serves `domain` (itself a name or a
/// `*.` wildcard): the same name, or for a plain domain a wildcard one
/// label up. Clients ignore the subject's common name, so Molt does too.
pub fn covers(names: &[String], domain: &str) -> bool {
    names.iter().any(|name| {
        name == domain
            || (!domain.starts_with("*.")
                && name
                    .strip_prefix("*.")
                    .is_some_and(|parent| domain.split_once('.').map(|(_, p)| p) == Some(parent)))
    })
}

/// Checks a certificate for `cert.domain` at `now` (unix seconds): the key
/// belongs to it, it is valid now, it covers the domain.
pub fn check(cert: &TlsCert, now: i64) -> Result<Facts, Refused> {
    tls::load(cert)?;
    let facts = facts(&cert.chain_pem)?;
    if facts.not_after < now {
        return Err(Refused::Expired(rfc3339(facts.not_after)));
    }
    if facts.not_before > now {
        return Err(Refused::NotYetValid(rfc3339(facts.not_before)));
    }
    if !covers(&facts.names, &cert.domain) {
        let names = if facts.names.is_empty() {
            "no DNS name".to_string()
        } else {
            facts.names.join(", ")
        };
        return Err(Refused::Uncovered {
            domain: cert.domain.clone(),
            names,
        });
    }
    Ok(facts)
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn coverage_follows_the_one_label_wildcard_rule() {
        assert!(covers(&names(&["a.example.com"]), "a.example.com"));
        assert!(covers(&names(&["*.example.com"]), "a.example.com"));
        assert!(!covers(&names(&["*.example.com"]), "b.a.example.com"));
        assert!(!covers(&names(&["*.example.com"]), "example.com"));
        assert!(covers(&names(&["*.example.com"]), "*.example.com"));
        assert!(!covers(&names(&["a.example.com"]), "*.example.com"));
        assert!(!covers(&names(&[]), "a.example.com"));
    }
}
