//! Running Apps: the debugger explains failures, logs show what containers
//! print, a killed container comes back, a container whose health turns bad
//! is replaced, the metrics endpoint answers, and the deploy history stays
//! bounded.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn debug_explains_crashes_out_of_memory_and_port_mismatches() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let crash = push(&registry, "testapp", "crash", "crash");
    let otherport = push(&registry, "testapp", "otherport", "otherport");
    let server = MoltServer::start(None);

    create_app(&server, "web", &v1, &["--health-timeout", "4"]);
    let out = molt(&server, &["debug", "web"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(out.stdout.contains("Nothing looks wrong"), "{out}");

    // A crash: exit code and last output.
    assert_eq!(molt(&server, &["deploy", "web", &crash]).status, 1);
    let out = molt(&server, &["debug", "web"]);
    assert!(out.stdout.contains("exited with code 3"), "{out}");
    assert!(out.stdout.contains("simulated crash"), "{out}");
    assert!(out.stdout.contains("hint:"), "{out}");
    let report = molt(&server, &["debug", "web", "--json"]).json();
    assert_eq!(report["findings"][0]["kind"], "crash", "{report}");

    // Nothing listens on the configured port: say where it does listen.
    assert_eq!(molt(&server, &["deploy", "web", &otherport]).status, 1);
    let out = molt(&server, &["debug", "web"]);
    assert!(out.stdout.contains("listens on port 9000"), "{out}");
    assert!(
        out.stdout.contains("`molt apps update web --port 9000`"),
        "the hint is the command that fixes it: {out}"
    );
    let report = molt(&server, &["debug", "web", "--json"]).json();
    assert_eq!(report["findings"][0]["kind"], "port_mismatch", "{report}");

    // Out of memory: a container that allocates past its limit.
    let out = molt(
        &server,
        &[
            "apps",
            "create",
            "hungry",
            "--image",
            &v1,
            "--port",
            "8080",
            "--memory",
            "32m",
            "--env",
            "ALLOC_MB_AT_START=256",
        ],
    );
    assert_eq!(out.status, 1, "{out}");
    let report = molt(&server, &["debug", "hungry", "--json"]).json();
    assert_eq!(report["findings"][0]["kind"], "oom_killed", "{report}");
    let out = molt(&server, &["debug", "hungry"]);
    assert!(out.stdout.contains("32 MiB"), "the limit is named: {out}");
    assert!(
        out.stdout
            .contains("`molt apps update hungry --memory SIZE`"),
        "{out}"
    );
    // Its logs are empty, and say why and where the output went.
    let out = molt(&server, &["logs", "hungry"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(out.stderr.contains("no running container"), "{out}");
    assert!(out.stderr.contains("`molt debug hungry`"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_autoheal_killed_containers_and_metrics() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let metrics_port = free_port().to_string();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = MoltServer::start_with(
        None,
        &[
            "--autoheal-grace",
            "1s",
            "--autoheal-interval",
            "1s",
            "--autoheal-threshold",
            "2",
            "--proxy-metrics",
            &metrics_addr,
        ],
        &[],
    );
    create_app(
        &server,
        "web",
        &v1,
        &["--health-path", "/healthz", "--env", "LOG_REQUESTS=1"],
    );
    assert_eq!(
        get(server.proxy_addr(), "web.localhost", "/version")
            .await
            .unwrap()
            .0,
        200
    );

    // Logs: the App's output, prefixed with its deploy.
    let deploy = newest_deploy(&server, "web")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = molt(&server, &["logs", "web", "--tail", "50"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(out.stdout.contains("testapp v1 listening on"), "{out}");
    assert!(out.stdout.contains(&format!("[{deploy} #0]")), "{out}");
    assert!(out.stdout.contains("/version"), "{out}");
    let out = molt(&server, &["logs", "web", "--since", "1h"]);
    assert!(out.stdout.contains("listening on"), "{out}");

    // A container that dies is restarted by the engine and serves again.
    let instance = server.instance_id().unwrap();
    let id = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=molt.instance={instance}"),
    ])
    .trim()
    .to_string();
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", &id])
        .trim()
        .to_string();
    std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    let back = wait_until(Duration::from_secs(30), || async {
        matches!(
            get(server.proxy_addr(), "web.localhost", "/").await,
            Ok((200, _))
        ) && docker(&["inspect", "--format", "{{.RestartCount}}", &id]).trim() != "0"
    })
    .await;
    assert!(back, "the killed container did not come back");

    // Health turns bad: replaced within grace + threshold x interval (plus a deploy).
    let (status, _) = get(
        server.proxy_addr(),
        "web.localhost",
        "/health/set?status=500",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let healed = wait_for(Duration::from_secs(40), || async {
        let newest = newest_deploy(&server, "web");
        (newest["triggered_by"] == "autoheal" && newest["status"] == "succeeded").then_some(newest)
    })
    .await
    .expect("no autoheal replacement within 40 s");
    let shown = molt(
        &server,
        &["deploys", "show", "web", healed["id"].as_str().unwrap()],
    );
    assert!(
        shown.stdout.contains("failed 2 consecutive health checks"),
        "{shown}"
    );
    assert!(
        shown.stdout.contains("GET /healthz answered 500"),
        "{shown}"
    );
    let (status, _) = get(server.proxy_addr(), "web.localhost", "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200, "the replacement is healthy");

    // Metrics.
    let text = proxy_client(Duration::from_secs(10))
        .get(format!("{}/metrics", server.api_url()))
        .bearer_auth(server.token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("molt_deploys_total{app=\"web\",kind=\"create\",outcome=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("molt_deploy_duration_seconds_count"),
        "{text}"
    );
    assert!(
        text.contains("molt_autoheal_replacements_total{app=\"web\"} 1"),
        "{text}"
    );

    // The proxy's own metrics: requests by App and status class, latency,
    // in-flight, upstream errors, held requests.
    let text = proxy_client(Duration::from_secs(10))
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "molt_proxy_requests_total{app=\"web\",code_class=\"2xx\"}",
        "molt_proxy_request_duration_seconds_count{app=\"web\"}",
        "molt_proxy_in_flight",
        "molt_proxy_upstream_errors_total{app=\"web\",kind=\"refused\"}",
        "molt_proxy_held_requests",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
}

/// `--upstream published` (for an engine the host cannot reach on its
/// bridge): each container publishes its port on 127.0.0.1 only, the proxy
/// reaches it there, and deploys swap as they do on the bridge.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_reaches_containers_at_ports_published_on_loopback() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let server = MoltServer::start_with(None, &["--upstream", "published"], &[]);
    create_app(&server, "web", &v1, &["--health-path", "/healthz"]);
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );

    let address = |server: &MoltServer| {
        let shown = ok(molt(server, &["apps", "show", "web", "--json"])).json();
        shown["containers"][0]["address"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let first = address(&server);
    assert!(first.starts_with("127.0.0.1:"), "{first}");
    let id = server.containers(Some("web")).pop().expect("a container");
    let ports = docker(&["port", &id, "8080/tcp"]);
    assert_eq!(ports.trim(), first, "published on loopback only");

    ok(molt(&server, &["deploy", "web", &v2]));
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v2"
    );
    let second = address(&server);
    assert!(
        second.starts_with("127.0.0.1:") && second != first,
        "{second}"
    );

    // A TCP-checked App whose image listens on another port: the engine's
    // port proxy accepts the connection, but closes it at once, and the
    // deploy fails as it does on the bridge instead of swapping.
    let otherport = push(&registry, "testapp", "otherport", "otherport");
    create_app(&server, "tcp", &v1, &["--health-timeout", "3"]);
    let out = molt(&server, &["deploy", "tcp", &otherport]);
    assert_eq!(out.status, 1, "{out}");
    assert!(out.stderr.contains("closed at once"), "{out}");
    assert_eq!(
        served(server.proxy_addr(), "tcp.localhost").await,
        "testapp v1"
    );
}

/// `--keep-deploys` bounds an App's history: failed deploys beyond it go,
/// while the serving deploy and the ones to roll back to stay.
#[tokio::test(flavor = "multi_thread")]
async fn the_history_keeps_the_last_deploys_and_the_rollback_targets() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let missing = format!("{}/testapp:missing", registry.host());
    let server = MoltServer::start_with(None, &["--keep-deploys", "2"], &[]);
    create_app(&server, "web", &v1, &[]);
    ok(molt(&server, &["deploy", "web", &v2]));
    for _ in 0..3 {
        assert_eq!(molt(&server, &["deploy", "web", &missing]).status, 1);
    }
    let deploys = molt(&server, &["deploys", "web", "--json"]).json();
    let seen: Vec<(String, String)> = deploys
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["kind"].to_string(), d["status"].to_string()))
        .collect();
    let want = [
        ("deploy", "failed"),
        ("deploy", "failed"),
        ("deploy", "succeeded"),
        ("create", "succeeded"),
    ]
    .map(|(k, s)| (format!("{k:?}"), format!("{s:?}")));
    assert_eq!(seen, want, "{deploys}");
    ok(molt(&server, &["rollback", "web"]));
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );
}

/// `--proxy-threads` reaches the proxy the server starts: its runtime runs
/// that many workers (the proxy logs the count its runtime reports).
#[test]
fn the_proxy_runs_the_worker_threads_it_is_given() {
    let server = MoltServer::start_with(None, &["--proxy-threads", "3"], &[]);
    let log = server.data_dir().join("proxy.log");
    let started = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("proxy started"))
            .map(str::to_owned)
    };
    assert!(
        wait_until_sync(Duration::from_secs(10), || started().is_some()),
        "the proxy logged no start in {}",
        log.display()
    );
    let line = started().unwrap_or_default();
    assert!(line.contains("threads=3"), "{line}");
}

#[test]
fn the_server_logs_json_when_asked() {
    let server = MoltServer::start_with(None, &["--log-format", "json"], &[]);
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!lines.is_empty(), "no JSON log lines in\n{log}");
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}
