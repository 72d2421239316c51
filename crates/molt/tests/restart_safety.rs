//! Traffic survives the control plane: the proxy keeps serving while the
//! server is down, and a restarted server reconciles what it finds.

mod support;

use std::time::Duration;
use support::*;

async fn serves(server: &MoltServer, expected: &str) -> bool {
    served(server.proxy_addr(), "web.localhost").await == expected
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_serves_while_the_server_is_down_and_a_restart_reconciles() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let slow = push(&registry, "testapp", "slowstart", "slowstart");
    let mut server = MoltServer::start(None);
    create_app(&server, "web", &v1, &["--health-path", "/healthz"]);
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
    let app = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(app["status"], "running", "{app}");
    assert!(serves(&server, "testapp v1").await);

    // Killed in the middle of a deploy (health checking a slow starter): the
    // restarted server fails it truthfully, removes its container, and v1
    // serves throughout.
    let out = molt(&server, &["deploy", "web", &slow, "--detach"]);
    assert_eq!(out.status, 0, "{out}");
    let reached = wait_until(Duration::from_secs(30), || async {
        newest_deploy(&server, "web")["status"] == "health_checking"
    })
    .await;
    assert!(reached, "the deploy never reached health checking");
    server.kill();
    assert!(serves(&server, "testapp v1").await);
    server.restart();
    let deploy = newest_deploy(&server, "web");
    assert_eq!(deploy["status"], "failed", "{deploy}");
    let error = deploy["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("server stopped during `health_checking`"),
        "{error}"
    );
    assert_eq!(
        server.containers(None).len(),
        1,
        "the interrupted deploy's container is removed"
    );
    assert!(serves(&server, "testapp v1").await);
    let app = molt(&server, &["apps", "show", "web", "--json"]).json();
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
