//! The service layer: operations and read models that the API, the
//! dashboard and autoheal share, so each rule and each view is written once
//! and no HTTP module imports another. The deploy operations themselves
//! live in `deploy/intake.rs`; this module holds what is not a deploy.

pub mod diagnose;
pub mod login_links;
pub mod oneoff;
pub mod registries;
pub mod views;

use crate::deploy::{DeployError, Deployer};
use axum::http::HeaderMap;
use std::sync::Arc;

/// What every HTTP surface (the API, its event and log streams, the
/// dashboard) is given: the deploy executor, with the store and the ports,
/// and the API token.
#[derive(Clone)]
pub struct Shared {
    pub deployer: Arc<Deployer>,
    pub token: Arc<String>,
    /// Builds from source and the releases they make.
    pub builds: Arc<crate::build::Builds>,
    /// Cancelled when the server stops: long-held requests (event streams,
    /// live regions) end early instead of holding the graceful stop up.
    pub stopping: tokio_util::sync::CancellationToken,
}

/// What a client is told of an internal error: that it happened, and where
/// the details are.
pub fn internal_message(id: &str) -> String {
    format!("the server failed to carry this out (error {id}); nothing more is shown here: the server's log has the cause under `error_id={id}`. Try again, and report it if it persists")
}

/// Refuses a domain that is the name this server's API and dashboard are
/// reached at (the request's `Host`): an App must not take over the name
/// people use to manage Molt. (`--api` itself is an address, which no
/// domain may be.)
pub fn refuse_own_host(domains: &[String], headers: &HeaderMap) -> Result<(), DeployError> {
    let Some(host) = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
    else {
        return Ok(());
    };
    for d in domains {
        if molt_core::name::parse_domain(d).is_ok_and(|d| d == host) {
            return Err(DeployError::Invalid {
                code: "invalid_domain",
                message: format!("{host} is the name of this Molt server's API and dashboard, so no App can answer on it: use another host name"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name the API was reached at cannot become an App's domain.
    #[test]
    fn the_api_host_is_not_a_domain() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::HOST,
            axum::http::HeaderValue::from_static("molt.example.com:7700"),
        );
        let refused = refuse_own_host(&["Molt.Example.com.".into()], &h).unwrap_err();
        assert!(
            matches!(&refused, DeployError::Invalid { code, .. } if *code == "invalid_domain"),
            "{refused:?}"
        );
        assert!(refuse_own_host(&["app.example.com".into()], &h).is_ok());
        assert!(refuse_own_host(&["molt.example.com".into()], &HeaderMap::new()).is_ok());
    }
}
