//! Kill -9 of the server at a step of each of many deploys, under continuous
//! requests: the proxy keeps serving, the restarted server makes every
//! record terminal and true, and no orphan container remains.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_server_at_any_step_loses_no_request_and_no_record() {
    let registry = Registry::start(false);
    let versions = [
        push(&registry, "testapp", "v1", "v1"),
        push(&registry, "testapp", "v2", "v2"),
        push(&registry, "testapp", "v3", "v3"),
    ];
    let slow = push(&registry, "testapp", "slowstart", "slowstart");
    let mut server = MoltServer::start(None);
    create_app(&server, "web", &versions[0], &["--health-path", "/healthz"]);

    // Continuous requests through the proxy for the whole test (a long soak
    // included).
    let load = Load::start_bounded(
        server.proxy_addr(),
        "web.localhost",
        3,
        Duration::from_secs(30),
        Duration::from_secs(1800),
    );

    // Each round deploys and kills the server when the deploy reaches the
    // round's step (or does not, if it finished first).
    let steps = [
        "pulling",
        "starting",
        "health_checking",
        "swapping",
        "draining",
    ];
    let mut exercised = Vec::new();
    // CI runs 10 rounds; MOLT_CHAOS_ROUNDS runs a longer soak (docs/reliability.md).
    let rounds: usize = std::env::var("MOLT_CHAOS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    for (round, step) in steps.iter().cycle().take(rounds).enumerate() {
        // slowstart gives health checking a wide window; others are quick.
        let image = if *step == "health_checking" {
            &slow
        } else {
            &versions[round % 3]
        };
        let out = molt(&server, &["deploy", "web", image, "--detach"]);
        assert_eq!(out.status, 0, "{out}");
        let id = newest_deploy(&server, "web")["id"]
            .as_str()
            .unwrap()
            .to_string();
        let api = format!("{}/api/v1/apps/web/deploys/{id}", server.api_url());
        let client = proxy_client(Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut hit = None;
        while Instant::now() < deadline {
            let Ok(resp) = client.get(&api).bearer_auth(server.token()).send().await else {
                break;
            };
            let Ok(d) = resp.json::<Value>().await else {
                break;
            };
            let status = d["status"].as_str().unwrap_or_default().to_string();
            if status == *step {
                hit = Some(status);
                break;
            }
            if ["succeeded", "failed", "canceled"].contains(&status.as_str()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill();
        if let Some(s) = hit {
            exercised.push(s);
        }
        server.restart();

        // The record is terminal and true; nothing is left over.
        let deploy = molt(&server, &["deploys", "show", "web", &id, "--json"]).json();
        let status = deploy["status"].as_str().unwrap().to_string();
        assert!(
            ["succeeded", "failed"].contains(&status.as_str()),
            "round {round}: {deploy}"
        );
        let app = molt(&server, &["apps", "show", "web", "--json"]).json();
        assert_eq!(app["status"], "running", "round {round}: {app}");
        assert!(
            wait_until(Duration::from_secs(30), || async {
                server.containers(None).len() == 1
            })
            .await,
            "round {round}: orphans remain: {:?}",
            server.containers(None)
        );
        // What the record says runs is what runs.
        let serving = if status == "succeeded" {
            app["current_deploy"] == id.as_str()
        } else {
            app["current_deploy"] != id.as_str()
        };
        assert!(
            serving,
            "round {round}: the App's serving deploy disagrees with the record: {app}"
        );
        let expected = app["image"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        let (code, body) = get(server.proxy_addr(), "web.localhost", "/")
            .await
            .unwrap();
        assert_eq!(
            (code, body.trim().to_string()),
            (200, format!("testapp {expected}")),
            "round {round}"
        );
    }

    let load = load.finish().await;
    eprintln!(
        "kill points exercised: {} of {rounds} ({exercised:?}); requests: {} ok, {} failed",
        exercised.len(),
        load.ok,
        load.failed
    );
    assert!(
        exercised.len() >= rounds * 2 / 5,
        "too few kill points were hit: {exercised:?}"
    );
    assert!(load.ok > 100);
    assert_eq!(load.failed, 0, "requests failed: {:?}", load.errors);
}
