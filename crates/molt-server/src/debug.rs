//! The deploy debugger: reads an App's latest failed deploy and its
//! containers and says what is wrong, each finding with what to do about it.
//! A finding is made from the deploy's typed failure (decided where it was
//! detected); the classification is pure so it is tested without an engine.

use molt_core::api::Finding;
use molt_core::{Failure, FailureKind};

/// What a finding is about: the App, and the failed deploy when there is
/// one, so that each hint can name the command to run with its arguments.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub app: &'a str,
    /// The failed deploy's id.
    pub deploy: Option<&'a str>,
    /// The image the failed deploy ran (its registry is the one to fix).
    pub image: Option<&'a str>,
    /// The App's memory limit, when the failure did not record one.
    pub memory_limit: Option<u64>,
}

/// What a failed deploy's failure means for the user, with a hint. `error`
/// is the deploy's message, for deploys recorded before failures were
/// typed.
pub fn classify(failure: Option<&Failure>, error: &str, subject: Subject) -> Finding {
    let app = subject.app;
    let timeline = format!(
        "see the deploy's timeline: `molt deploys show {app} {}`",
        subject.deploy.unwrap_or("ID")
    );
    let Some(failure) = failure else {
        let first_line = error.lines().next().unwrap_or_default().to_string();
        return Finding {
            kind: "other".into(),
            summary: first_line,
            detail: error.split_once('\n').map(|(_, rest)| rest.to_string()),
            hint: timeline,
        };
    };
    let first_line = failure
        .message
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let output = failure.output.as_deref().map(crate::deploy::indent);
    let finding = |kind: &str, summary: String, detail: Option<String>, hint: String| Finding {
        kind: kind.into(),
        summary,
        detail: detail.or_else(|| Some(first_line.clone())),
        hint,
    };
    match failure.kind {
        FailureKind::ImageNotFound => finding(
            "image_not_found",
            "the image does not exist in its registry".into(),
            None,
            "check the repository and tag (a typo, or the build was never pushed): `docker pull` it from this host to confirm".into(),
        ),
        FailureKind::RegistryUnauthorized => {
            let host = subject
                .image
                .and_then(|i| molt_core::ImageRef::parse(i).ok())
                .map(|r| r.registry)
                .unwrap_or_else(|| "HOST".into());
            finding(
                "registry_unauthorized",
                "the registry refused to hand out the image".into(),
                None,
                format!("add or update the credential: `molt registries add {host} --username USER --password-stdin` (a token needs pull rights on the repository)"),
            )
        }
        FailureKind::RegistryUnreachable => finding(
            "registry_unreachable",
            "the registry could not be reached".into(),
            None,
            "check the registry's address and that this host can reach it (DNS, firewall, TLS)".into(),
        ),
        FailureKind::OomKilled => {
            let limit = failure
                .memory_limit
                .or(subject.memory_limit)
                .map(|m| format!(" (its limit is {})", crate::capacity::human_bytes(m)))
                .unwrap_or_default();
            finding(
                "oom_killed",
                format!("the container was killed for running out of memory{limit}"),
                output,
                format!("raise the App's memory limit (`molt apps update {app} --memory SIZE`) or find what allocates in `molt logs {app}`"),
            )
        }
        FailureKind::Crash => finding(
            "crash",
            match failure.exit_code {
                Some(code) => format!("the container exited with code {code} before it became healthy"),
                None => "the container crashed during start-up and the engine kept restarting it".into(),
            },
            output,
            format!("its last output usually says why; reproduce with `docker run` of the image, and see `molt logs {app}`"),
        ),
        FailureKind::PortMismatch if !failure.listening_ports.is_empty() => {
            // The lowest port first: the server's own, usually; the others
            // (a debug or metrics listener) follow.
            let mut ports = failure.listening_ports.clone();
            ports.sort_unstable();
            let others = ports[1..]
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let also = if others.is_empty() {
                String::new()
            } else {
                format!(" (and {others})")
            };
            finding(
                "port_mismatch",
                format!(
                    "nothing listens on the configured port; the container listens on port {}{also}",
                    ports[0]
                ),
                None,
                format!("give the App the port its server listens on (`molt apps update {app} --port {}`), or make the server listen on $PORT", ports[0]),
            )
        }
        FailureKind::PortMismatch => finding(
            "port_mismatch",
            "nothing answered on the configured port".into(),
            None,
            format!("check that the server listens on the App's port on all interfaces (0.0.0.0), not 127.0.0.1, or reads $PORT; if it was still starting, give it longer with `molt apps update {app} --start-period SECS` (or --health-timeout)"),
        ),
        FailureKind::HealthCheckFailing => finding(
            "health_check_failing",
            "the health check kept failing".into(),
            None,
            format!("the health path must answer 2xx once the App is ready; check what it answers, or change it with `molt apps update {app} --health-path PATH`"),
        ),
        FailureKind::ImageHealthcheckFailing => finding(
            "image_healthcheck_failing",
            "the image's own HEALTHCHECK reported the container unhealthy".into(),
            output,
            "its last output says why; fix what the check tests, or give the App a --health-path to check over HTTP instead (a health path always wins over the image's check)".into(),
        ),
        FailureKind::DeployTimeout => finding(
            "deploy_timeout",
            "the container did not become healthy in time".into(),
            None,
            format!("if it starts slowly, give it longer with `molt apps update {app} --health-timeout SECS`; otherwise see its output with `molt logs {app}`"),
        ),
        FailureKind::NoSuitableNode => finding(
            "no_suitable_node",
            "no swarm node can run the App: none meets its placement constraints or has the resources it reserves".into(),
            None,
            format!("compare the App's constraints and resources (`molt apps show {app}`) with the nodes (`docker node ls`, `docker node inspect NODE`); change them with `molt apps update {app} --constraint EXPR` or `--no-constraints`, or label a node (`docker node update --label-add KEY=VALUE NODE`)"),
        ),
        _ => finding("other", first_line.clone(), None, timeline),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Subject<'static> {
        Subject {
            app: "web",
            ..Subject::default()
        }
    }

    fn of(kind: FailureKind, message: &str) -> Failure {
        Failure::new(kind, message)
    }

    #[test]
    fn pull_errors() {
        let f = classify(
            Some(&of(
                FailureKind::ImageNotFound,
                "pulling r/x:1 failed: manifest unknown",
            )),
            "",
            web(),
        );
        assert_eq!(f.kind, "image_not_found");
        let f = classify(
            Some(&of(
                FailureKind::RegistryUnauthorized,
                "pulling r/x:1 failed: unauthorized",
            )),
            "",
            web(),
        );
        assert_eq!(f.kind, "registry_unauthorized");
        let f = classify(
            Some(&of(
                FailureKind::RegistryUnreachable,
                "pulling r/x:1 failed: connection refused",
            )),
            "",
            web(),
        );
        assert_eq!(f.kind, "registry_unreachable");
    }

    #[test]
    fn crashes_and_oom() {
        let crash = of(
            FailureKind::Crash,
            "the new container exited with code 3 before becoming healthy; last output:\n  boom",
        )
        .with_exit_code(Some(3))
        .with_output("boom");
        let f = classify(Some(&crash), "", web());
        assert_eq!(f.kind, "crash");
        assert!(f.summary.contains("code 3"));
        assert_eq!(f.detail.as_deref(), Some("  boom"));
        let oom = of(FailureKind::OomKilled, "the new container was killed for using more memory than its limit (exit code 137); raise --memory");
        let f = classify(
            Some(&oom),
            "",
            Subject {
                memory_limit: Some(64 << 20),
                ..web()
            },
        );
        assert_eq!(f.kind, "oom_killed");
        assert!(f.summary.contains("64 MiB"), "{}", f.summary);
    }

    #[test]
    fn no_suitable_node_points_at_constraints_and_nodes() {
        let f = classify(
            Some(&of(
                FailureKind::NoSuitableNode,
                "the swarm found no node for the replica: no suitable node (scheduling constraints not satisfied on 1 node)",
            )),
            "",
            web(),
        );
        assert_eq!(f.kind, "no_suitable_node");
        assert!(f.detail.unwrap().contains("scheduling constraints"));
        assert!(f.hint.contains("--constraint"), "{}", f.hint);
        assert!(f.hint.contains("docker node ls"), "{}", f.hint);
    }

    #[test]
    fn health_failures() {
        let f = classify(
            Some(&of(FailureKind::HealthCheckFailing, "answered 500")),
            "",
            web(),
        );
        assert_eq!(f.kind, "health_check_failing");
        let f = classify(
            Some(&of(FailureKind::PortMismatch, "connection refused")),
            "",
            web(),
        );
        assert_eq!(f.kind, "port_mismatch");
        let wrong = of(
            FailureKind::PortMismatch,
            "refused; the container listens on port 9000, not 8080",
        )
        .with_listening_ports(vec![9000]);
        let f = classify(Some(&wrong), "", web());
        assert_eq!(f.kind, "port_mismatch");
        assert!(f.summary.contains("9000"), "{}", f.summary);
        let f = classify(
            Some(&of(FailureKind::DeployTimeout, "did not answer")),
            "",
            web(),
        );
        assert_eq!(f.kind, "deploy_timeout");
    }

    /// Each hint names the command to run, with the App, the deploy, the
    /// registry or the port it is about, never a placeholder it knows.
    #[test]
    fn hints_name_the_command_that_fixes_it() {
        let subject = Subject {
            app: "web",
            deploy: Some("3f9c2a1b7e"),
            image: Some("registry.example.com:5000/team/web:1.1"),
            memory_limit: Some(64 << 20),
        };
        let hint = |f: Failure| classify(Some(&f), "", subject).hint;
        let h = hint(of(FailureKind::RegistryUnauthorized, "unauthorized"));
        assert!(
            h.contains(
                "`molt registries add registry.example.com:5000 --username USER --password-stdin`"
            ),
            "{h}"
        );
        let h = hint(of(FailureKind::OomKilled, "killed"));
        assert!(h.contains("`molt apps update web --memory SIZE`"), "{h}");
        assert!(!h.contains("create it again"), "{h}");
        let h = hint(of(FailureKind::Crash, "exited").with_exit_code(Some(3)));
        assert!(
            !h.contains("below"),
            "the output is shown above the hint: {h}"
        );
        let h = hint(of(FailureKind::PortMismatch, "refused").with_listening_ports(vec![9000]));
        assert!(h.contains("`molt apps update web --port 9000`"), "{h}");
        let h = hint(of(FailureKind::PortMismatch, "refused"));
        assert!(
            h.contains("`molt apps update web --start-period SECS`"),
            "{h}"
        );
        let h = hint(of(FailureKind::HealthCheckFailing, "answered 500"));
        assert!(
            h.contains("`molt apps update web --health-path PATH`"),
            "{h}"
        );
        let h = hint(of(FailureKind::DeployTimeout, "did not answer"));
        assert!(
            h.contains("`molt apps update web --health-timeout SECS`"),
            "{h}"
        );
        assert!(h.contains("`molt logs web`"), "{h}");
        let h = hint(of(FailureKind::Internal, "something"));
        assert!(h.contains("`molt deploys show web 3f9c2a1b7e`"), "{h}");
    }

    #[test]
    fn deploys_recorded_before_typed_failures_are_shown_as_they_are() {
        let f = classify(None, "something broke\ndetails", web());
        assert_eq!(f.kind, "other");
        assert_eq!(f.summary, "something broke");
        assert_eq!(f.detail.as_deref(), Some("details"));
    }
}
