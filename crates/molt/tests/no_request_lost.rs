//! What users pay for: a deploy is invisible to their traffic. A long
//! request finishes on the old version, a WebSocket stays open until the
//! drain timeout, and a load run across deploys (failing ones included)
//! counts zero failures.

mod support;

use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn json(out: &CliOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn long_requests_and_websockets_finish_on_the_old_version() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let v3 = push(&registry, "testapp", "v3", "v3");
    let server = MoltServer::start(None);
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
            "--drain-timeout",
            "4",
            "--env",
            "LOG_REQUESTS=1",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    let proxy = server.proxy_addr();

    // A 3 s request started before the swap completes with 200 from v1,
    // while new requests already reach v2.
    let slow = tokio::spawn(async move {
        get_with_timeout(
            proxy,
            "web.localhost",
            "/slow?ms=3000",
            Duration::from_secs(20),
        )
        .await
    });
    // The request has reached v1 once v1 says it started.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            molt(&server, &["logs", "web"])
                .stdout
                .contains("slow request started")
        })
        .await,
        "the slow request never reached v1"
    );
    let out = molt(&server, &["deploy", "web", &v2, "--detach"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            matches!(get(proxy, "web.localhost", "/").await, Ok((200, b)) if b.trim() == "testapp v2")
        })
        .await,
        "v2 never served"
    );
    let (status, body) = slow.await.unwrap().unwrap();
    assert_eq!(
        (status, body.trim()),
        (200, "slow v1"),
        "the in-flight request finished on v1"
    );

    // Wait for that deploy to end before the next.
    assert!(
        wait_until(Duration::from_secs(30), || async {
            json(&molt(&server, &["deploys", "web", "--json"]))[0]["status"] == "succeeded"
        })
        .await
    );

    // A WebSocket opened on v2 keeps exchanging messages after the swap to
    // v3, until the drain timeout, and is then closed.
    let mut ws = WsClient::connect(proxy, "web.localhost", "/ws", Duration::from_secs(10))
        .expect("websocket through the proxy");
    assert_eq!(ws.echo("before").unwrap(), "before");
    let out = molt(&server, &["deploy", "web", &v3, "--detach"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            matches!(get(proxy, "web.localhost", "/").await, Ok((200, b)) if b.trim() == "testapp v3")
        })
        .await
    );
    let swapped = Instant::now();
    let mut exchanged = 0;
    let closed_after = loop {
        match ws.echo(&format!("message {exchanged}")) {
            Ok(m) if m == format!("message {exchanged}") => exchanged += 1,
            _ => break swapped.elapsed(),
        }
        assert!(
            swapped.elapsed() < Duration::from_secs(20),
            "the WebSocket was never closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        exchanged >= 10,
        "messages flowed after the swap ({exchanged})"
    );
    assert!(
        closed_after >= Duration::from_millis(3000),
        "closed before the drain timeout: {closed_after:?}"
    );
    let deploy = json(&molt(&server, &["deploys", "web", "--json"]))[0].clone();
    let shown = molt(
        &server,
        &["deploys", "show", "web", deploy["id"].as_str().unwrap()],
    );
    assert!(shown.stdout.contains("drain timeout reached"), "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_load_run_across_deploys_counts_zero_failures() {
    let registry = Registry::start(false);
    let images: Vec<String> = ["v1", "v2", "crash", "v3", "unhealthy", "v1"]
        .iter()
        .map(|v| push(&registry, "testapp", v, v))
        .collect();
    let server = MoltServer::start(None);
    let out = molt(
        &server,
        &[
            "apps",
            "create",
            "web",
            "--image",
            &images[0],
            "--port",
            "8080",
            "--health-path",
            "/healthz",
            "--health-timeout",
            "3",
        ],
    );
    assert_eq!(out.status, 0, "{out}");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let proxy = server.proxy_addr();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                // One keep-alive client per task: connections are reused
                // across swaps, as real clients do.
                let client = proxy_client(Duration::from_secs(30));
                let deadline = Instant::now() + Duration::from_secs(120);
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
                            errors.push(r.status().to_string());
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

    let mut outcomes = Vec::new();
    for image in &images[1..] {
        let out = molt(&server, &["deploy", "web", image]);
        outcomes.push(out.status);
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    assert_eq!(
        outcomes,
        vec![0, 1, 0, 1, 0],
        "two of the five deploys fail"
    );
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} requests ok, {failed} failed across 5 deploys");
    assert!(ok > 500, "the load ran ({ok})");
    assert_eq!(failed, 0, "failures: {errors:?}");
}
