//! Kill -9 of the server at a step of each of many deploys, under continuous
//! requests: the proxy keeps serving, the restarted server makes every
//! record terminal and true, and no orphan container remains.

mod support;

use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn json(out: &CliOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
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
async fn killing_the_server_at_any_step_loses_no_request_and_no_record() {
    let registry = Registry::start(false);
    let versions = [
        push(&registry, "testapp", "v1", "v1"),
        push(&registry, "testapp", "v2", "v2"),
        push(&registry, "testapp", "v3", "v3"),
    ];
    let slow = push(&registry, "testapp", "slowstart", "slowstart");
    let mut server = MoltServer::start(None);
    let out = molt(
        &server,
        &[
            "apps",
            "create",
            "web",
            "--image",
            &versions[0],
            "--port",
            "8080",
            "--health-path",
            "/healthz",
        ],
    );
    assert_eq!(out.status, 0, "{out}");

    // Continuous requests through the proxy for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let proxy = server.proxy_addr();
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let client = proxy_client(Duration::from_secs(30));
                let deadline = Instant::now() + Duration::from_secs(1800);
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match client
                        .get(format!("http://{proxy}/"))
                        .header("host", "web.localhost")
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{}", r.status()));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(e.to_string());
                        }
                    }
                }
                errors
            })
        })
        .collect();

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
        let id = json(&molt(&server, &["deploys", "web", "--json"]))[0]["id"]
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
        let deploy = json(&molt(&server, &["deploys", "show", "web", &id, "--json"]));
        let status = deploy["status"].as_str().unwrap().to_string();
        assert!(
            ["succeeded", "failed"].contains(&status.as_str()),
            "round {round}: {deploy}"
        );
        let app = json(&molt(&server, &["apps", "show", "web", "--json"]));
        assert_eq!(app["status"], "running", "round {round}: {app}");
        assert!(
            wait_until(Duration::from_secs(30), || async {
                containers(&server).len() == 1
            })
            .await,
            "round {round}: orphans remain: {:?}",
            containers(&server)
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

    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for t in load {
        errors.extend(t.await.unwrap());
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "kill points exercised: {} of {rounds} ({exercised:?}); requests: {ok} ok, {failed} failed",
        exercised.len()
    );
    assert!(
        exercised.len() >= rounds * 2 / 5,
        "too few kill points were hit: {exercised:?}"
    );
    assert!(ok > 100);
    assert_eq!(failed, 0, "requests failed: {errors:?}");
}
