//! Traffic survives the control plane: the proxy keeps serving while the
//! server is down, and a restarted server reconciles what it finds.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::*;

fn json(out: &CliOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

async fn serves(server: &MoltServer, expected: &str) -> bool {
    matches!(get(server.proxy_addr(), "web.localhost", "/").await, Ok((200, b)) if b.trim() == expected)
}

fn containers(server: &MoltServer) -> Vec<String> {
    let instance = server.instance_id().unwrap();
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=molt.instance={instance}"),
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_serves_while_the_server_is_down_and_a_restart_reconciles() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let slow = push(&registry, "testapp", "slowstart", "slowstart");
    let mut server = MoltServer::start(None);
    let out = molt(
        &server,
        &[
            "apps",
            "create",
            "web",
            "--image",
            &v1,
            "--port",
            "8080",
            "--health-path",
            "/healthz",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    assert!(serves(&server, "testapp v1").await);

    // kill -9 of the server: the proxy keeps answering.
    server.kill();
    for _ in 0..20 {
        assert!(
            serves(&server, "testapp v1").await,
            "the proxy must serve while the server is down"
        );
    }
    server.restart();
    let app = json(&molt(&server, &["apps", "show", "web", "--json"]));
    assert_eq!(app["status"], "running", "{app}");
    assert!(serves(&server, "testapp v1").await);

    // Killed in the middle of a deploy (health checking a slow starter): the
    // restarted server fails it truthfully, removes its container, and v1
    // serves throughout.
    let out = molt(&server, &["deploy", "web", &slow, "--detach"]);
    assert_eq!(out.status, 0, "{out}");
    let reached = wait_until(Duration::from_secs(30), || async {
        let deploys = json(&molt(&server, &["deploys", "web", "--json"]));
        deploys[0]["status"] == "health_checking"
    })
    .await;
    assert!(reached, "the deploy never reached health checking");
    server.kill();
    assert!(serves(&server, "testapp v1").await);
    server.restart();
    let deploys = json(&molt(&server, &["deploys", "web", "--json"]));
    assert_eq!(deploys[0]["status"], "failed", "{deploys}");
    let error = deploys[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("server stopped during `health_checking`"),
        "{error}"
    );
    assert_eq!(
        containers(&server).len(),
        1,
        "the interrupted deploy's container is removed"
    );
    assert!(serves(&server, "testapp v1").await);
    let app = json(&molt(&server, &["apps", "show", "web", "--json"]));
    assert_eq!(app["status"], "running", "{app}");

    // kill -9 of the proxy: the server starts it again and it serves its
    // persisted routes at once.
    let proxy_pid = server.proxy_pid().expect("the proxy wrote its pid");
    std::process::Command::new("kill")
        .args(["-9", &proxy_pid.to_string()])
        .status()
        .unwrap();
    let back = wait_until(Duration::from_secs(5), || serves(&server, "testapp v1")).await;
    assert!(back, "the proxy did not come back within 5 s");
    assert_ne!(server.proxy_pid(), Some(proxy_pid));
}
