//! What users pay for: a deploy is invisible to their traffic. A long
//! request finishes on the old version, a WebSocket stays open until the
//! drain timeout, and a load run across deploys (failing ones included)
//! counts zero failures.

mod support;

use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn long_requests_and_websockets_finish_on_the_old_version() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let v3 = push(&registry, "testapp", "v3", "v3");
    let server = MoltServer::start(None);
    create_app(
        &server,
        "web",
        &v1,
        &[
            "--health-path",
            "/healthz",
            "--drain-timeout",
            "4",
            "--env",
            "LOG_REQUESTS=1",
        ],
    );
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
            served(proxy, "web.localhost").await == "testapp v2"
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
            newest_deploy(&server, "web")["status"] == "succeeded"
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
            served(proxy, "web.localhost").await == "testapp v3"
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
    let deploy = newest_deploy(&server, "web");
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
    create_app(
        &server,
        "web",
        &images[0],
        &["--health-path", "/healthz", "--health-timeout", "3"],
    );

    // One keep-alive client per task: connections are reused across swaps,
    // as real clients do.
    let load = Load::start_bounded(
        server.proxy_addr(),
        "web.localhost",
        8,
        Duration::from_secs(30),
        Duration::from_secs(120),
    );

    let mut outcomes = Vec::new();
    for image in &images[1..] {
        let out = molt(&server, &["deploy", "web", image]);
        outcomes.push(out.status);
    }
    let load = load.finish().await;
    assert_eq!(
        outcomes,
        vec![0, 1, 0, 1, 0],
        "two of the five deploys fail"
    );
    eprintln!(
        "{} requests ok, {} failed across 5 deploys",
        load.ok, load.failed
    );
    assert!(load.ok > 500, "the load ran ({})", load.ok);
    assert_eq!(load.failed, 0, "failures: {:?}", load.errors);
}
