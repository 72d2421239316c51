//! The deploy state machine: which status may follow which, and what an App's
//! status is. The store asks [`DeployStatus::advance`] before every status it
//! records and refuses a step it does not allow, so no code path can move a
//! deploy backwards or out of a terminal status.
//!
//! ```text
//!  pending ─► pulling ─► starting ─► health_checking ─► swapping ─► draining ─► succeeded
//!     │          │          │              │               │
//!     └──────────┴──────────┴──────────────┴───────────────┴──► failed | canceled
//! ```
//!
//! Steps may skip ahead (a restart has nothing to pull, a scale down starts
//! nothing) but never go back. Traffic has moved once a deploy is
//! `draining`: from there it only finishes forward. A deploy left in
//! `swapping` after a crash is settled by the reconciler from what the proxy
//! holds and the replicas' recorded roles.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a deploy is. The happy path runs top to bottom; `failed` and
/// `canceled` can follow any non-terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployStatus {
    Pending,
    Pulling,
    Starting,
    HealthChecking,
    Swapping,
    Draining,
    Succeeded,
    Failed,
    Canceled,
}

/// Why a deploy exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployKind {
    Create,
    Deploy,
    Redeploy,
    Restart,
    Rollback,
    Config,
    /// A change of the number of replicas: containers of the serving digest
    /// are added or drained and removed; the others keep serving.
    Scale,
}

/// What an App is doing, as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppStatus {
    Creating,
    Running,
    /// None of its containers takes requests (one stopped, the engine
    /// restarts it, or it is being replaced): Molt is bringing one back
    /// while the proxy holds the requests.
    Recovering,
    Deploying,
    Failed,
    Deleting,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a deploy cannot go from `{from}` to `{to}`")]
pub struct TransitionError {
    pub from: DeployStatus,
    pub to: DeployStatus,
}

impl DeployStatus {
    const ORDER: [DeployStatus; 7] = [
        Self::Pending,
        Self::Pulling,
        Self::Starting,
        Self::HealthChecking,
        Self::Swapping,
        Self::Draining,
        Self::Succeeded,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }

    /// Whether traffic has moved to the new version. From `swapping` on, the
    /// engine (or the reconciler after a crash) finishes forward, not back.
    pub fn traffic_moved(self) -> bool {
        matches!(self, Self::Draining | Self::Succeeded)
    }

    fn rank(self) -> Option<usize> {
        Self::ORDER.iter().position(|s| *s == self)
    }

    /// Checks a step of the state machine. Steps may skip ahead (a restart
    /// has nothing to pull) but never go back, and nothing leaves a terminal
    /// status.
    pub fn advance(self, to: DeployStatus) -> Result<DeployStatus, TransitionError> {
        let allowed = !self.is_terminal()
            && match (self.rank(), to.rank()) {
                (_, None) => true, // failed or canceled
                (Some(from), Some(next)) => next > from,
                (None, Some(_)) => false,
            };
        if allowed {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Pulling => "pulling",
            Self::Starting => "starting",
            Self::HealthChecking => "health_checking",
            Self::Swapping => "swapping",
            Self::Draining => "draining",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

impl DeployKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Deploy => "deploy",
            Self::Redeploy => "redeploy",
            Self::Restart => "restart",
            Self::Rollback => "rollback",
            Self::Config => "config",
            Self::Scale => "scale",
        }
    }

    /// Whether a deploy of this kind can be rolled back to by default: a
    /// scale ran nothing new, so returning to it would change nothing.
    pub fn is_version(self) -> bool {
        !matches!(self, Self::Scale)
    }
}

impl AppStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Recovering => "recovering",
            Self::Deploying => "deploying",
            Self::Failed => "failed",
            Self::Deleting => "deleting",
        }
    }

    /// The App's status once a deploy ended: an App that serves something is
    /// running whatever happened to the deploy; one that never served failed.
    pub fn after_deploy(has_serving_version: bool) -> Self {
        if has_serving_version {
            Self::Running
        } else {
            Self::Failed
        }
    }
}

macro_rules! str_enum {
    ($t:ty, [$($v:expr),*]) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                [$($v),*]
                    .into_iter()
                    .find(|v: &$t| v.as_str() == s)
                    .ok_or_else(|| format!("unknown {}: `{s}`", stringify!($t)))
            }
        }
    };
}

str_enum!(
    DeployStatus,
    [
        DeployStatus::Pending,
        DeployStatus::Pulling,
        DeployStatus::Starting,
        DeployStatus::HealthChecking,
        DeployStatus::Swapping,
        DeployStatus::Draining,
        DeployStatus::Succeeded,
        DeployStatus::Failed,
        DeployStatus::Canceled
    ]
);
str_enum!(
    DeployKind,
    [
        DeployKind::Create,
        DeployKind::Deploy,
        DeployKind::Redeploy,
        DeployKind::Restart,
        DeployKind::Rollback,
        DeployKind::Config,
        DeployKind::Scale
    ]
);
str_enum!(
    AppStatus,
    [
        AppStatus::Creating,
        AppStatus::Running,
        AppStatus::Recovering,
        AppStatus::Deploying,
        AppStatus::Failed,
        AppStatus::Deleting
    ]
);

#[cfg(test)]
mod tests {
    use super::DeployStatus::*;
    use super::*;

    #[test]
    fn happy_path_moves_forward() {
        let mut s = Pending;
        for next in [
            Pulling,
            Starting,
            HealthChecking,
            Swapping,
            Draining,
            Succeeded,
        ] {
            s = s.advance(next).unwrap();
        }
        assert!(s.is_terminal());
    }

    #[test]
    fn can_skip_ahead_but_not_back() {
        assert_eq!(Pending.advance(Starting), Ok(Starting));
        assert!(Swapping.advance(Starting).is_err());
        assert!(Starting.advance(Starting).is_err());
    }

    #[test]
    fn any_running_step_can_fail_or_cancel() {
        for s in [
            Pending,
            Pulling,
            Starting,
            HealthChecking,
            Swapping,
            Draining,
        ] {
            assert_eq!(s.advance(Failed), Ok(Failed));
            assert_eq!(s.advance(Canceled), Ok(Canceled));
        }
    }

    #[test]
    fn terminal_is_final() {
        for s in [Succeeded, Failed, Canceled] {
            for to in [Pending, Pulling, Failed, Canceled, Succeeded] {
                assert!(s.advance(to).is_err(), "{s} -> {to}");
            }
        }
    }

    #[test]
    fn round_trips_through_strings() {
        for s in [Pending, HealthChecking, Canceled] {
            assert_eq!(s.as_str().parse::<DeployStatus>(), Ok(s));
        }
        assert_eq!("rollback".parse::<DeployKind>(), Ok(DeployKind::Rollback));
        assert_eq!("scale".parse::<DeployKind>(), Ok(DeployKind::Scale));
        assert_eq!(DeployKind::Scale.as_str(), "scale");
        assert!(!DeployKind::Scale.is_version());
        assert!("nope".parse::<AppStatus>().is_err());
        assert_eq!(
            serde_json::to_string(&HealthChecking).unwrap(),
            "\"health_checking\""
        );
    }

    #[test]
    fn traffic_moves_at_drain() {
        assert!(!Swapping.traffic_moved());
        assert!(Draining.traffic_moved());
    }
}
