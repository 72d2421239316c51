//! Why a deploy failed, decided where the failure is detected and carried as
//! data to the store, the API (`failure.kind`), `molt debug` and the
//! dashboard. The message users read is rendered once, when the failure is
//! made; nothing downstream parses it back.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of failure ended a deploy: a stable snake_case word in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The registry has no such repository, tag or digest.
    ImageNotFound,
    /// The registry refused the credential (or asked for one).
    RegistryUnauthorized,
    /// The registry could not be reached.
    RegistryUnreachable,
    /// Any other pull failure the engine reported.
    PullFailed,
    /// A restart needs the serving image on the host and it is gone.
    ImageMissing,
    /// The container exited (or kept being restarted) before it was healthy.
    Crash,
    /// The container was killed for exceeding its memory limit.
    OomKilled,
    /// Nothing answered on the App's port; `listening_ports` says where the
    /// container listens when that could be read.
    PortMismatch,
    /// The health check answered, but not with 2xx.
    HealthCheckFailing,
    /// The image's own `HEALTHCHECK` reported the container unhealthy
    /// (the App has no health path); its last output is carried.
    ImageHealthcheckFailing,
    /// No check passed before the deploy timeout.
    DeployTimeout,
    /// The proxy did not take a route.
    ProxyRefused,
    /// The host has no room for the new containers.
    InsufficientResources,
    /// No swarm node meets the App's placement constraints or has the
    /// resources it reserves ("no suitable node").
    NoSuitableNode,
    /// The deploy was stopped under it (the engine restarted, the server
    /// stopped).
    Interrupted,
    /// The user canceled it.
    Canceled,
    /// Molt itself failed (its database, a container that vanished).
    Internal,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImageNotFound => "image_not_found",
            Self::RegistryUnauthorized => "registry_unauthorized",
            Self::RegistryUnreachable => "registry_unreachable",
            Self::PullFailed => "pull_failed",
            Self::ImageMissing => "image_missing",
            Self::Crash => "crash",
            Self::OomKilled => "oom_killed",
            Self::PortMismatch => "port_mismatch",
            Self::HealthCheckFailing => "health_check_failing",
            Self::ImageHealthcheckFailing => "image_healthcheck_failing",
            Self::DeployTimeout => "deploy_timeout",
            Self::ProxyRefused => "proxy_refused",
            Self::InsufficientResources => "insufficient_resources",
            Self::NoSuitableNode => "no_suitable_node",
            Self::Interrupted => "interrupted",
            Self::Canceled => "canceled",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure: its kind, the message users read, and the facts it was made
/// from (each present only for the kinds that have it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// The container's exit code (crash, OOM kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The container's memory limit in bytes (OOM kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// The last health check's result (unhealthy, timeout, wrong port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// The ports the container listens on (wrong port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listening_ports: Vec<u16>,
    /// The container's last output (crash, OOM kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            exit_code: None,
            memory_limit: None,
            last_check: None,
            listening_ports: Vec::new(),
            output: None,
        }
    }

    /// Molt's own failure (its database, an unexpected engine answer).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Internal, message)
    }

    pub fn with_exit_code(mut self, code: Option<i64>) -> Self {
        self.exit_code = code;
        self
    }

    pub fn with_memory_limit(mut self, limit: Option<u64>) -> Self {
        self.memory_limit = limit;
        self
    }

    pub fn with_last_check(mut self, check: impl Into<String>) -> Self {
        self.last_check = Some(check.into());
        self
    }

    pub fn with_listening_ports(mut self, ports: Vec<u16>) -> Self {
        self.listening_ports = ports;
        self
    }

    pub fn with_output(mut self, output: impl Into<String>) -> Self {
        let output = output.into();
        self.output = (!output.is_empty()).then_some(output);
        self
    }

    /// The same failure with `context` before its message ("pulling X
    /// failed: ...").
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_kind_and_message_and_only_the_facts_it_has() {
        let f = Failure::new(FailureKind::Crash, "the new container exited with code 3")
            .with_exit_code(Some(3))
            .with_output("");
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["kind"], "crash");
        assert_eq!(json["message"], "the new container exited with code 3");
        assert_eq!(json["exit_code"], 3);
        assert!(json.get("output").is_none());
        assert!(json.get("listening_ports").is_none());
        let back: Failure = serde_json::from_value(json).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn kinds_are_stable_words() {
        for kind in [
            FailureKind::ImageNotFound,
            FailureKind::PortMismatch,
            FailureKind::Interrupted,
        ] {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
        }
    }

    #[test]
    fn context_goes_before_the_message() {
        let f = Failure::new(FailureKind::ImageNotFound, "manifest unknown")
            .context("pulling a:1 failed");
        assert_eq!(f.to_string(), "pulling a:1 failed: manifest unknown");
        assert_eq!(f.kind, FailureKind::ImageNotFound);
    }
}
