//! Health-check settings and what a single check found.

use serde::{Deserialize, Serialize};

/// How a new container is judged healthy. With a `path`, an HTTP `GET` must
/// answer 2xx; without one, a TCP connect to the port must succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthCheck {
    pub path: Option<String>,
    /// Time between checks, in milliseconds.
    pub interval_ms: u64,
    /// How long one check may take, in milliseconds.
    pub check_timeout_ms: u64,
    /// Failed checks during this many milliseconds after start are not the
    /// last word; the deploy still waits for `deploy_timeout_secs`.
    pub start_period_ms: u64,
    /// How long a deploy waits for the container to become healthy.
    pub deploy_timeout_secs: u64,
    /// Consecutive passing checks needed.
    pub healthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: None,
            interval_ms: 100,
            check_timeout_ms: 2_000,
            start_period_ms: 0,
            deploy_timeout_secs: 60,
            healthy_threshold: 1,
        }
    }
}

/// Validates a health path: it must start with `/` and be a plain path.
pub fn validate_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the health path `{path}` must start with `/` and contain no spaces, e.g. `/healthz`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(validate_path("/healthz").is_ok());
        assert!(validate_path("healthz").is_err());
        assert!(validate_path("/a b").is_err());
    }
}
