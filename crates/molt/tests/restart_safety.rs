//! Traffic survives the control plane: the proxy keeps serving while the
//! server is down, a restarted server reconciles what it finds, and a second
//! server on the same data dir refuses to start.

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

/// A second `molt server` on a data dir in use refuses at once, naming the
/// server that runs there, and touches nothing: the first keeps serving and
/// its token and key stay as they were.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start(None);
    create_app(&server, "web", &v1, &["--health-path", "/healthz"]);
    let dir = server.data_dir();
    let secrets = || ["admin-token", "secret.key"].map(|f| std::fs::read(dir.join(f)).ok());
    let before = secrets();

    // Other ports than the first's: it is the data dir that is in use.
    let [api, proxy] = free_ports::<2>();
    let started = std::time::Instant::now();
    let out = run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_molt"))
            .arg("server")
            .arg("--data-dir")
            .arg(dir)
            .args(["--api", &format!("127.0.0.1:{api}")])
            .args(["--proxy", &format!("127.0.0.1:{proxy}")])
            .env_remove("MOLT_DATA_DIR"),
        None,
        Duration::from_secs(30),
    )
    .expect("the second server exits by itself");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must refuse: {stderr}");
    assert!(
        took < Duration::from_secs(5),
        "it refused only after {took:?}"
    );
    let pid = server.pid().expect("the first server runs");
    assert!(
        stderr.contains(&format!(
            "the data dir {} is in use by a running molt server (pid {pid})",
            dir.display()
        )),
        "{stderr}"
    );

    assert_eq!(secrets(), before, "the token and the key are untouched");
    assert!(serves(&server, "testapp v1").await);
    let app = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(app["status"], "running", "{app}");
}
