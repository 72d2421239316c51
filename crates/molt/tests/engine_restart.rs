//! The Docker engine restarts while Apps run and while a deploy runs: the
//! Apps come back (restart policy), the server reconnects and resyncs, and
//! the deploy ends truthfully with nothing left over.
//!
//! This test restarts the machine's engine, so it lives in its own test
//! binary (cargo runs test binaries one after another).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

fn engine_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Restarts dockerd the way it runs here: through systemd when it manages
/// it, else by signalling the process and starting it again.
fn restart_engine() {
    let systemd = Command::new("systemctl")
        .args(["is-active", "--quiet", "docker"])
        .status()
        .is_ok_and(|s| s.success());
    if systemd {
        assert!(Command::new("systemctl")
            .args(["restart", "docker"])
            .status()
            .unwrap()
            .success());
    } else {
        // The host's engine by its pid file: other dockerds may run here
        // (the three-engine swarm test's, in namespaces of their own), and
        // the first that `pgrep` lists may be one of those.
        let pid = std::fs::read_to_string("/var/run/docker.pid")
            .ok()
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| {
                String::from_utf8(
                    Command::new("pgrep")
                        .args(["-x", "dockerd"])
                        .output()
                        .unwrap()
                        .stdout,
                )
                .unwrap()
            });
        let pid = pid
            .split_whitespace()
            .next()
            .expect("dockerd runs")
            .to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not stop within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Command::new("sh")
            .args(["-c", "setsid dockerd >>/tmp/dockerd.log 2>&1 </dev/null &"])
            .status()
            .unwrap();
    }
    assert!(
        wait_until_sync(Duration::from_secs(90), engine_answers),
        "the engine did not come back within 90 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_and_deploys_survive_an_engine_restart() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let slow = push(&registry, "testapp", "slowstart", "slowstart");
    let server = MoltServer::start(None);
    create_app(&server, "web", &v1, &["--health-path", "/healthz"]);

    // A deploy is health checking a slow starter when the engine goes away.
    let out = molt(&server, &["deploy", "web", &slow, "--detach"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(30), || async {
            newest_deploy(&server, "web")["status"] == "health_checking"
        })
        .await
    );
    let id = newest_deploy(&server, "web")["id"]
        .as_str()
        .unwrap()
        .to_string();
    restart_engine();
    // The registry is a plain process: still up. The App comes back and serves.
    let serves = wait_until(Duration::from_secs(60), || async {
        served(server.proxy_addr(), "web.localhost").await == "testapp v1"
    })
    .await;
    assert!(
        serves,
        "the App did not serve again after the engine restart"
    );

    // The deploy's record is terminal and true.
    let ended = wait_for(Duration::from_secs(90), || async {
        let d = molt(&server, &["deploys", "show", "web", &id, "--json"]).json();
        let s = d["status"].as_str().unwrap_or_default().to_string();
        ["succeeded", "failed"].contains(&s.as_str()).then_some(d)
    })
    .await
    .expect("the deploy never ended");
    let app = molt(&server, &["apps", "show", "web", "--json"]).json();
    if ended["status"] == "succeeded" {
        assert_eq!(app["current_deploy"], id.as_str());
    } else {
        assert_ne!(app["current_deploy"], id.as_str());
        assert!(
            ended["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{ended}"
        );
    }
    // Nothing left over: one container serves.
    let single = wait_until(Duration::from_secs(30), || async {
        server.containers(None).len() == 1
    })
    .await;
    assert!(single, "containers left over after the engine restart");
    // A new deploy works on the restarted engine.
    let v2 = push(&registry, "testapp", "v2", "v2");
    let out = molt(&server, &["deploy", "web", &v2]);
    assert_eq!(out.status, 0, "{out}");
}
