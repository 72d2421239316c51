//! An App's settings as a request gives them: the one set of rules that
//! `apps create` and `apps update` both check, what a change moves, and
//! which changed setting most likely broke a `config` deploy that failed.

use super::*;
use crate::store::AppSettings;

/// The longest start period and deploy timeout, in seconds.
const MAX_WAIT_SECS: u64 = 3600;
/// The bounds of `--max-body`: 1 KiB (a form post) to 100 GiB.
const MIN_MAX_BODY: u64 = 1 << 10;
const MAX_MAX_BODY: u64 = 100 << 30;
/// The longest `--tunnel-idle-timeout`: a day, the proxy's own bound.
const MAX_TUNNEL_IDLE_SECS: u64 = 24 * 3600;
/// The longest HSTS max-age: two years, what browsers' preload lists ask.
const MAX_HSTS_SECS: u64 = 2 * 365 * 24 * 3600;

/// Settings given by a request; `None` keeps the value it is applied to.
#[derive(Default)]
pub(super) struct SettingsChange<'a> {
    pub(super) port: Option<u16>,
    /// `Some(None)`: check with a TCP connect.
    pub(super) health_path: Option<Option<&'a str>>,
    pub(super) health_timeout: Option<u64>,
    pub(super) health_interval_ms: Option<u64>,
    /// Seconds.
    pub(super) start_period: Option<u64>,
    pub(super) memory: Option<&'a str>,
    pub(super) cpus: Option<f64>,
    pub(super) gpus: Option<u32>,
    pub(super) replicas: Option<u32>,
    pub(super) strategy: Option<&'a str>,
    pub(super) drain_timeout_secs: Option<u64>,
    pub(super) upstream_timeout_secs: Option<u64>,
    pub(super) https_redirect: Option<bool>,
    /// `Some(0)`: no HSTS header.
    pub(super) hsts_max_age_secs: Option<u64>,
    pub(super) max_body: Option<&'a str>,
    pub(super) tunnel_idle_timeout_secs: Option<u64>,
    /// Replaces the placement constraints; `Some(&[])` clears them.
    pub(super) constraints: Option<&'a [String]>,
}

impl<'a> SettingsChange<'a> {
    pub(super) fn of_create(req: &'a CreateAppRequest) -> Self {
        Self {
            port: (req.port != 0).then_some(req.port),
            health_path: req.health_path.as_deref().map(Some),
            health_timeout: req.health_timeout,
            health_interval_ms: req.health_interval_ms,
            start_period: req.start_period,
            memory: req.memory.as_deref(),
            cpus: req.cpus,
            gpus: req.gpus,
            replicas: req.replicas,
            strategy: req.strategy.as_deref(),
            drain_timeout_secs: req.drain_timeout_secs,
            upstream_timeout_secs: req.upstream_timeout_secs,
            https_redirect: req.no_redirect.then_some(false),
            hsts_max_age_secs: req.hsts_max_age_secs,
            max_body: req.max_body.as_deref(),
            tunnel_idle_timeout_secs: req.tunnel_idle_timeout_secs,
            constraints: (!req.constraints.is_empty()).then_some(req.constraints.as_slice()),
        }
    }

    pub(super) fn of_update(req: &'a UpdateAppRequest) -> Result<Self, DeployError> {
        if req.no_health_path && req.health_path.is_some() {
            return Err(DeployError::invalid(
                "invalid_health_path",
                "give either --health-path PATH or --no-health-path, not both",
            ));
        }
        Ok(Self {
            port: req.port,
            health_path: if req.no_health_path {
                Some(None)
            } else {
                req.health_path.as_deref().map(Some)
            },
            health_timeout: req.health_timeout,
            health_interval_ms: req.health_interval_ms,
            start_period: req.start_period,
            memory: req.memory.as_deref(),
            cpus: req.cpus,
            gpus: req.gpus,
            replicas: req.replicas,
            strategy: req.strategy.as_deref(),
            drain_timeout_secs: req.drain_timeout_secs,
            upstream_timeout_secs: req.upstream_timeout_secs,
            https_redirect: req.https_redirect,
            hsts_max_age_secs: req.hsts_max_age_secs,
            max_body: req.max_body.as_deref(),
            tunnel_idle_timeout_secs: req.tunnel_idle_timeout_secs,
            constraints: if req.no_constraints {
                Some(&[])
            } else {
                (!req.constraints.is_empty()).then_some(req.constraints.as_slice())
            },
        })
    }

    /// Checks every given value and writes it into `s`.
    pub(super) fn apply(&self, s: &mut AppSettings) -> Result<(), DeployError> {
        if let Some(port) = self.port {
            if port == 0 {
                return Err(DeployError::invalid(
                    "invalid_port",
                    "--port must be between 1 and 65535: the port the App listens on inside its container",
                ));
            }
            s.port = port;
        }
        if let Some(path) = self.health_path {
            if let Some(path) = path {
                molt_core::health::validate_path(path)
                    .map_err(|e| DeployError::invalid("invalid_health_path", e))?;
            }
            s.health.path = path.map(str::to_string);
        }
        if let Some(t) = self.health_timeout {
            if t == 0 || t > MAX_WAIT_SECS {
                return Err(DeployError::invalid(
                    "invalid_health_timeout",
                    "--health-timeout must be between 1 and 3600 seconds",
                ));
            }
            s.health.deploy_timeout_secs = t;
        }
        if let Some(ms) = self.health_interval_ms {
            s.health.interval_ms = ms.clamp(10, 60_000);
        }
        if let Some(secs) = self.start_period {
            if secs > MAX_WAIT_SECS {
                return Err(DeployError::invalid(
                    "invalid_start_period",
                    "--start-period must be between 0 and 3600 seconds",
                ));
            }
            s.health.start_period_ms = secs * 1000;
        }
        if let Some(m) = self.memory {
            s.memory_bytes = Some(
                molt_core::size::parse_size(m)
                    .map_err(|e| DeployError::invalid("invalid_memory", e))?,
            );
        }
        if let Some(c) = self.cpus {
            if !(c > 0.0 && c <= 1024.0) {
                return Err(DeployError::invalid(
                    "invalid_cpus",
                    "--cpus must be a positive number such as 0.5 or 2",
                ));
            }
            s.cpus = Some(c);
        }
        if let Some(g) = self.gpus {
            s.gpus = g;
        }
        if let Some(r) = self.replicas {
            if !(1..=100).contains(&r) {
                return Err(DeployError::invalid(
                    "invalid_replicas",
                    "--replicas must be between 1 and 100",
                ));
            }
            s.replicas = r;
        }
        if let Some(strategy) = self.strategy {
            if !["auto", "bluegreen", "recreate", "rolling"].contains(&strategy) {
                return Err(DeployError::invalid(
                    "invalid_strategy",
                    format!(
                        "unknown strategy `{strategy}`: use auto, bluegreen, recreate or rolling"
                    ),
                ));
            }
            s.strategy = strategy.to_string();
        }
        if let Some(d) = self.drain_timeout_secs {
            s.drain_timeout_secs = d.min(MAX_WAIT_SECS);
        }
        if let Some(u) = self.upstream_timeout_secs {
            s.upstream_timeout_secs = u.clamp(1, MAX_WAIT_SECS);
        }
        if let Some(on) = self.https_redirect {
            s.https_redirect = on;
        }
        if let Some(age) = self.hsts_max_age_secs {
            if age > MAX_HSTS_SECS {
                return Err(DeployError::invalid(
                    "invalid_hsts",
                    "--hsts must be between 0 (off) and 63072000 seconds (two years)",
                ));
            }
            s.hsts_max_age_secs = (age > 0).then_some(age);
        }
        if let Some(raw) = self.max_body {
            let bytes = molt_core::size::parse_size(raw)
                .ok()
                .filter(|b| (MIN_MAX_BODY..=MAX_MAX_BODY).contains(b))
                .ok_or_else(|| {
                    DeployError::invalid(
                        "invalid_max_body",
                        format!("--max-body `{raw}` is not a size between 1k and 100g, e.g. 10m"),
                    )
                })?;
            s.max_body_bytes = Some(bytes);
        }
        if let Some(secs) = self.tunnel_idle_timeout_secs {
            if !(1..=MAX_TUNNEL_IDLE_SECS).contains(&secs) {
                return Err(DeployError::invalid(
                    "invalid_tunnel_idle_timeout",
                    "--tunnel-idle-timeout must be between 1 and 86400 seconds (a day)",
                ));
            }
            s.tunnel_idle_timeout_secs = Some(secs);
        }
        if let Some(constraints) = self.constraints {
            s.constraints = check_constraints(constraints)?;
        }
        Ok(())
    }
}

impl Deployer {
    /// A domain for the App `app`, normalized; `None` when it is the App's
    /// own `NAME.localhost` (always routed). Refused when another App
    /// serves it, naming that App.
    pub(super) fn domain_for(&self, app: &str, raw: &str) -> Result<Option<String>, DeployError> {
        let d = molt_core::name::parse_domain(raw)
            .map_err(|e| DeployError::invalid("invalid_domain", e))?;
        if d == format!("{app}.localhost") {
            return Ok(None);
        }
        if self.console_domain() == Some(d.as_str()) {
            return Err(DeployError::invalid(
                "domain_taken",
                format!("the domain {d} serves Molt's dashboard and API (the server's --console-domain): choose another domain for the App"),
            ));
        }
        if let Some(owner) = self.domain_owner(&d)?.filter(|o| o != app) {
            return Err(domain_taken(&d, &owner));
        }
        Ok(Some(d))
    }
}

/// The most placement constraints an App may have.
const MAX_CONSTRAINTS: usize = 16;

/// Placement constraints as Swarm reads them: `ATTRIBUTE==VALUE` or
/// `ATTRIBUTE!=VALUE`, e.g. `node.labels.gpu==true`, `node.role==worker`.
fn check_constraints(raw: &[String]) -> Result<Vec<String>, DeployError> {
    let invalid = |c: &str| {
        DeployError::invalid(
            "invalid_constraint",
            format!("--constraint {c:?} is not a placement constraint: write ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, e.g. node.labels.gpu==true or node.hostname!=db1"),
        )
    };
    let mut out: Vec<String> = Vec::new();
    for c in raw {
        let c = c.trim();
        let (attr, value) = c
            .split_once("==")
            .or_else(|| c.split_once("!="))
            .ok_or_else(|| invalid(c))?;
        let plain = |s: &str| {
            !s.trim().is_empty()
                && s.chars().all(|ch| ch.is_ascii_graphic() || ch == ' ')
                && !s.contains("==")
                && !s.contains("!=")
        };
        if !plain(attr)
            || !plain(value)
            || !attr.trim().starts_with("node.") && !attr.trim().starts_with("engine.")
        {
            return Err(invalid(c));
        }
        if !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
    }
    if out.len() > MAX_CONSTRAINTS {
        return Err(DeployError::invalid(
            "invalid_constraint",
            format!("an App may have at most {MAX_CONSTRAINTS} placement constraints"),
        ));
    }
    Ok(out)
}

/// The refusal of a domain that the App `owner` serves (or is adding).
pub(super) fn domain_taken(d: &str, owner: &str) -> DeployError {
    let message = if d == format!("{owner}.localhost") {
        // Every App answers on its own NAME.localhost; it cannot be removed.
        format!("{d} is the host name of the App `{owner}` (every App answers on NAME.localhost): pick another domain")
    } else {
        format!("the domain {d} is already routed to the App `{owner}`: remove it there first with `molt apps update {owner} --remove-domain {d}`")
    };
    DeployError::invalid("domain_taken", message)
}

/// What differs between two settings, one phrase per setting, e.g.
/// `port 8080 → 9090`: compared by `release::setting_changes` and phrased
/// as every release diff is.
pub(super) fn describe_changes(old: &AppSettings, new: &AppSettings) -> Vec<String> {
    molt_core::release::ReleaseDiff {
        settings: crate::release::setting_changes(old, new),
        ..Default::default()
    }
    .lines()
}

/// Whether running containers must be replaced for `new` to hold: what
/// they run with (port, health check, resources). Domains, timeouts and
/// the strategy live in the route or apply to later deploys.
pub(super) fn needs_new_containers(old: &AppSettings, new: &AppSettings) -> bool {
    old.port != new.port
        || old.health != new.health
        || old.memory_bytes != new.memory_bytes
        || old.cpus != new.cpus
        || old.gpus != new.gpus
        || old.constraints != new.constraints
}

/// The setting a failed deploy points at, for the dashboard to highlight
/// and for the sentence that says what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blamed {
    Port,
    HealthPath,
    /// The start period and health timeout: how long the deploy waited.
    Wait,
    Memory,
}

/// The changed setting that most likely made a `config` deploy from `old`
/// to `new` fail, by the failure's kind; with no settings change (an image
/// deploy, `old == new`), the setting the kind of failure is about.
pub fn blamed_setting(old: &AppSettings, new: &AppSettings, failure: &Failure) -> Option<Blamed> {
    let changed = old != new;
    match failure.kind {
        FailureKind::PortMismatch if !changed || old.port != new.port => Some(Blamed::Port),
        FailureKind::HealthCheckFailing
        | FailureKind::ImageHealthcheckFailing
        | FailureKind::DeployTimeout
            if changed && old.health.path != new.health.path =>
        {
            Some(Blamed::HealthPath)
        }
        FailureKind::PortMismatch
        | FailureKind::HealthCheckFailing
        | FailureKind::ImageHealthcheckFailing
        | FailureKind::DeployTimeout
            if changed
                && (new.health.deploy_timeout_secs < old.health.deploy_timeout_secs
                    || new.health.start_period_ms < old.health.start_period_ms) =>
        {
            Some(Blamed::Wait)
        }
        FailureKind::HealthCheckFailing if !changed => Some(Blamed::HealthPath),
        FailureKind::DeployTimeout if !changed => Some(Blamed::Wait),
        FailureKind::OomKilled | FailureKind::Crash
            if changed && new.memory_bytes != old.memory_bytes =>
        {
            Some(Blamed::Memory)
        }
        FailureKind::OomKilled if !changed => Some(Blamed::Memory),
        _ => None,
    }
}

/// The changed setting that most likely made a `config` deploy fail, as a
/// sentence with what to do, by the failure's kind.
pub(super) fn likely_cause(
    app: &str,
    old: &AppSettings,
    new: &AppSettings,
    failure: &Failure,
) -> Option<String> {
    if old == new {
        return None;
    }
    // Several listening ports are already listed in the failure's message.
    let port_hint = |listening: &[u16]| match listening {
        [p] => format!(" (the container listens on port {p}: `molt apps update {app} --port {p}`)"),
        _ => String::new(),
    };
    Some(match blamed_setting(old, new, failure)? {
        Blamed::Port => format!(
            "The likely cause is the new port {}{}",
            new.port,
            port_hint(&failure.listening_ports)
        ),
        Blamed::HealthPath => format!(
            "The likely cause is the new health path {}",
            new.health.path.as_deref().unwrap_or("(none: a TCP connect)")
        ),
        Blamed::Wait => format!(
            "The likely cause is the shorter wait: a start period of {} s and a health timeout of {} s (raise --start-period or --health-timeout)",
            new.health.start_period_ms / 1000,
            new.health.deploy_timeout_secs
        ),
        Blamed::Memory => format!(
            "The likely cause is the new memory limit of {}",
            new.memory_bytes
                .map(capacity::human_bytes)
                .unwrap_or_else(|| "the default".into())
        ),
    })
}

#[cfg(test)]
mod constraint_tests {
    use super::check_constraints;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn constraints_are_node_or_engine_comparisons() {
        let ok = check_constraints(&strings(&[
            "node.labels.gpu==true",
            " node.role != manager ",
            "engine.labels.zone==a",
            "node.labels.gpu==true",
        ]))
        .unwrap();
        assert_eq!(
            ok,
            strings(&[
                "node.labels.gpu==true",
                "node.role != manager",
                "engine.labels.zone==a"
            ])
        );
        for bad in [
            "gpu",
            "node.labels.gpu=true",
            "labels.gpu==true",
            "node.x==",
            "==x",
            "node.a==b==c",
        ] {
            let err = check_constraints(&strings(&[bad])).unwrap_err();
            assert!(err.to_string().contains("ATTRIBUTE==VALUE"), "{bad}: {err}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("node.labels.k{i}==v")).collect();
        assert!(check_constraints(&many).is_err());
    }
}
