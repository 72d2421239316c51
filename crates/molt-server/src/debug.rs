//! The deploy debugger: reads an App's latest failed deploy and its
//! containers and says what is wrong, each finding with what to do about it.
//! The classification is pure so it is tested without an engine.

use molt_core::api::Finding;

/// What a deploy's error message says went wrong.
pub fn classify(error: &str, app: &str, memory_limit: Option<u64>) -> Finding {
    let lower = error.to_ascii_lowercase();
    let (first_line, rest) = match error.split_once('\n') {
        Some((a, b)) => (a.to_string(), Some(b.to_string())),
        None => (error.to_string(), None),
    };
    let finding = |kind: &str, summary: String, hint: String| Finding {
        kind: kind.into(),
        summary,
        detail: rest.clone().or_else(|| Some(first_line.clone())),
        hint,
    };
    if lower.starts_with("pulling") || lower.contains("registry") {
        if lower.contains("not found")
            || lower.contains("manifest unknown")
            || lower.contains("name unknown")
        {
            return finding(
                "image_not_found",
                "the image does not exist in its registry".into(),
                "check the repository and tag (a typo, or the build was never pushed): `docker pull` it from this host to confirm".into(),
            );
        }
        if lower.contains("unauthorized")
            || lower.contains("authentication required")
            || lower.contains("denied")
            || lower.contains("needs a login")
            || lower.contains("refused the credentials")
        {
            return finding(
                "registry_unauthorized",
                "the registry refused to hand out the image".into(),
                "add or update the credential: `molt registries add HOST --username USER --password-stdin` (a token needs pull rights on the repository)".into(),
            );
        }
        if lower.contains("did not answer")
            || lower.contains("connection refused")
            || lower.contains("no such host")
            || lower.contains("timeout")
            || lower.contains("timed out")
            || lower.contains("dial tcp")
        {
            return finding(
                "registry_unreachable",
                "the registry could not be reached".into(),
                "check the registry's address and that this host can reach it (DNS, firewall, TLS)"
                    .into(),
            );
        }
    }
    if lower.contains("more memory than its limit") || lower.contains("out of memory") {
        let limit = memory_limit
            .map(|m| format!(" (its limit is {})", crate::capacity::human_bytes(m)))
            .unwrap_or_default();
        return finding(
            "oom_killed",
            format!("the container was killed for running out of memory{limit}"),
            format!("raise the App's memory limit (create it again with a larger --memory) or find what allocates in `molt logs {app}`"),
        );
    }
    if let Some(code) = exit_code(&lower) {
        return finding(
            "crash",
            format!("the container exited with code {code} before it became healthy"),
            format!("its last output (below) usually says why; reproduce with `docker run` of the image, and see `molt logs {app}`"),
        );
    }
    if lower.contains("crashed before becoming healthy") {
        return finding(
            "crash",
            "the container crashed during start-up and the engine kept restarting it".into(),
            format!("its last output (below) usually says why; see `molt logs {app}`"),
        );
    }
    if let Some(ports) = listening_ports(&lower) {
        return finding(
            "port_mismatch",
            format!("nothing listens on the configured port; the container listens on {ports}"),
            "give the App the port its server listens on (--port), or make the server listen on $PORT".into(),
        );
    }
    if lower.contains("did not become healthy") {
        if lower.contains("connection refused") {
            return finding(
                "port_mismatch",
                "nothing answered on the configured port".into(),
                "check that the server listens on the App's --port on all interfaces (0.0.0.0), not 127.0.0.1, or reads $PORT".into(),
            );
        }
        if lower.contains("answered") {
            return finding(
                "health_check_failing",
                "the health check kept failing".into(),
                "the health path must answer 2xx once the App is ready; check the path (--health-path) and what it answers".into(),
            );
        }
        return finding(
            "deploy_timeout",
            "the container did not become healthy in time".into(),
            "if it starts slowly, raise --health-timeout; otherwise see its output with `molt logs`".into(),
        );
    }
    finding(
        "other",
        first_line.clone(),
        format!("see the deploy's timeline: `molt deploys show {app} ID`"),
    )
}

/// `exited with code N` in a message.
fn exit_code(lower: &str) -> Option<i64> {
    let after = lower.split("exited with code ").nth(1)?;
    after
        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .next()?
        .parse()
        .ok()
}

/// `listens on port(s) X` in a message.
fn listening_ports(lower: &str) -> Option<String> {
    let after = lower.split("listens on port").nth(1)?;
    let after = after.trim_start_matches('s').trim_start();
    Some(format!(
        "port {}",
        after
            .split([',', ';', '\n'])
            .next()?
            .trim()
            .trim_end_matches(" not")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_errors() {
        let f = classify(
            "pulling r/x:1 failed: manifest for r/x:1 not found: manifest unknown",
            "web",
            None,
        );
        assert_eq!(f.kind, "image_not_found");
        let f = classify(
            "pulling r/x:1 failed: unauthorized: authentication required",
            "web",
            None,
        );
        assert_eq!(f.kind, "registry_unauthorized");
        let f = classify("pulling r/x:1 failed: Get \"http://r/v2/\": dial tcp 127.0.0.1:1: connect: connection refused", "web", None);
        assert_eq!(f.kind, "registry_unreachable");
    }

    #[test]
    fn crashes_and_oom() {
        let f = classify(
            "the new container exited with code 3 before becoming healthy; last output:\n  boom",
            "web",
            None,
        );
        assert_eq!(f.kind, "crash");
        assert!(f.summary.contains("code 3"));
        assert_eq!(f.detail.as_deref(), Some("  boom"));
        let f = classify("the new container was killed for using more memory than its limit (exit code 137); raise --memory", "web", Some(64 << 20));
        assert_eq!(f.kind, "oom_killed");
        assert!(f.summary.contains("64 MiB"), "{}", f.summary);
    }

    #[test]
    fn health_failures() {
        let f = classify("the new container did not become healthy within 5 s; last check: GET /healthz answered 500: health unhealthy", "web", None);
        assert_eq!(f.kind, "health_check_failing");
        let f = classify("the new container did not become healthy within 5 s; last check: GET /healthz failed: connection refused (x)", "web", None);
        assert_eq!(f.kind, "port_mismatch");
        let f = classify("the new container did not become healthy within 5 s; last check: TCP connect to port 8080 failed: connection refused; the container listens on port 9000, not 8080", "web", None);
        assert_eq!(f.kind, "port_mismatch");
        assert!(f.summary.contains("9000"), "{}", f.summary);
        let f = classify("the new container did not become healthy within 5 s; last check: GET / did not answer within 2000 ms", "web", None);
        assert_eq!(f.kind, "deploy_timeout");
    }
}
