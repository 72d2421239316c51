//! `molt apps update`: an App's settings change through the health-checked
//! swap with no failed request; a change that fails changes nothing and
//! says why; routing changes move no container; a change that cannot fit
//! beside the serving version asks for `--yes` and then recreates with
//! requests held; a start period lets a slow boot deploy; two Apps racing
//! for one domain never both get it; a change stopped midway never routes
//! the domain it adds; placement constraints are kept and, on one host,
//! ignored with a warning; the body limit and WebSocket idle timeout are
//! per App.

mod support;

use std::time::Duration;
use support::*;

/// The serving container ids of `app`, sorted.
fn serving_containers(server: &MoltServer, app: &str) -> Vec<String> {
    let show = ok(molt(server, &["apps", "show", app, "--json"])).json();
    let mut ids: Vec<String> = show["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c["id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_change_under_load_and_a_bad_one_changes_nothing() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start(None);
    let proxy = server.proxy_addr();
    create_app(&server, "web", &v1, &["--health-path", "/healthz"]);
    let load = Load::start(proxy, "web.localhost", 4);
    assert!(wait_until(Duration::from_secs(10), || async { load.ok() > 50 }).await);

    // A new health path and port: new containers through the swap.
    let out = molt(
        &server,
        &[
            "apps",
            "update",
            "web",
            "--health-path",
            "/version",
            "--port",
            "9090",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    let show = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert_eq!(show["port"], 9090, "{show}");
    assert_eq!(show["health_path"], "/version", "{show}");
    assert_eq!(show["last_deploy"]["kind"], "config", "{show}");

    // Domains and timeouts move the route, not the containers.
    let before = serving_containers(&server, "web");
    let out = molt(
        &server,
        &[
            "apps",
            "update",
            "web",
            "--add-domain",
            "www.update.test",
            "--drain-timeout",
            "5",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    // The outcome names the domains the App has now, the new one included.
    assert!(
        out.stdout
            .contains("✓ web is live at web.localhost, www.update.test:"),
        "{out}"
    );
    assert_eq!(served(proxy, "www.update.test").await, "testapp v1");
    assert_eq!(serving_containers(&server, "web"), before);
    let out = molt(
        &server,
        &[
            "apps",
            "update",
            "web",
            "--remove-domain",
            "www.update.test",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    assert!(
        out.stdout.contains("✓ web is live at web.localhost:"),
        "{out}"
    );
    let (status, _) = get(proxy, "www.update.test", "/").await.unwrap();
    assert_ne!(status, 200, "the removed domain is no longer routed");
    assert_eq!(served(proxy, "web.localhost").await, "testapp v1");
    assert_eq!(serving_containers(&server, "web"), before);

    // Nothing to change is bad usage.
    let out = molt(&server, &["apps", "update", "web"]);
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("nothing to change"), "{out}");

    let load = load.finish().await;
    assert!(load.ok > 100, "the load ran ({} requests)", load.ok);
    assert_eq!(
        load.failed,
        0,
        "{} of {} requests failed during the changes: {:?}",
        load.failed,
        load.ok + load.failed,
        load.errors
    );

    // An image that listens on 8080 whatever its port: a new port fails,
    // the old container keeps serving with the old settings, and the error
    // names the port it listens on.
    create_app(
        &server,
        "fixed",
        &v1,
        &["--health-path", "/healthz", "--env", "LISTEN_PORT=8080"],
    );
    let before = serving_containers(&server, "fixed");
    let load = Load::start(proxy, "fixed.localhost", 2);
    assert!(wait_until(Duration::from_secs(10), || async { load.ok() > 20 }).await);
    let out = molt(
        &server,
        &[
            "apps",
            "update",
            "fixed",
            "--port",
            "9191",
            "--health-timeout",
            "3",
        ],
    );
    assert_eq!(out.status, 1, "{out}");
    // (The engine's helpers may hold a port of their own in the container.)
    assert!(
        out.stderr.contains("listens on port 8080") || out.stderr.contains("listens on ports 8080"),
        "{out}"
    );
    assert!(out.stderr.contains("new port 9191"), "{out}");
    let show = ok(molt(&server, &["apps", "show", "fixed", "--json"])).json();
    assert_eq!(show["port"], 8080, "{show}");
    assert_eq!(show["health"]["deploy_timeout_secs"], 60, "{show}");
    assert_eq!(serving_containers(&server, "fixed"), before);
    let load = load.finish().await;
    assert_eq!(load.failed, 0, "{:?}", load.errors);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_beyond_capacity_asks_for_yes_then_recreates_with_requests_held() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start_with(None, &["--memory", "256m", "--gpus", "0"], &[]);
    create_app(
        &server,
        "big",
        &v1,
        &["--health-path", "/healthz", "--memory", "100m"],
    );
    let before = serving_containers(&server, "big");

    let out = molt(&server, &["apps", "update", "big", "--memory", "200m"]);
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("recreate"), "{out}");
    assert!(out.stderr.contains("--yes"), "{out}");
    assert_eq!(
        serving_containers(&server, "big"),
        before,
        "nothing stopped"
    );

    let load = Load::start_bounded(
        server.proxy_addr(),
        "big.localhost",
        4,
        Duration::from_secs(120),
        Duration::from_secs(120),
    );
    assert!(wait_until(Duration::from_secs(10), || async { load.ok() > 50 }).await);
    let out = molt(
        &server,
        &["apps", "update", "big", "--memory", "200m", "--yes"],
    );
    assert_eq!(out.status, 0, "{out}");
    assert!(
        out.stdout
            .contains("phase 1 of 2: stopping the old deployment"),
        "{out}"
    );
    let show = ok(molt(&server, &["apps", "show", "big", "--json"])).json();
    assert_eq!(show["memory_bytes"], 200u64 << 20, "{show}");
    assert_ne!(serving_containers(&server, "big"), before);
    let load = load.finish().await;
    assert!(load.ok > 100, "the load ran ({} requests)", load.ok);
    assert_eq!(load.failed, 0, "{:?}", load.errors);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_period_lets_a_slow_boot_deploy() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start(None);
    let out = molt(
        &server,
        &[
            "apps",
            "create",
            "slow",
            "--image",
            &v1,
            "--port",
            "8080",
            "--health-path",
            "/healthz",
            "--health-timeout",
            "2",
            "--start-period",
            "8",
            "--env",
            "STARTUP_DELAY_MS=5000",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(
        served(server.proxy_addr(), "slow.localhost").await,
        "testapp v1"
    );
    let show = ok(molt(&server, &["apps", "show", "slow", "--json"])).json();
    assert_eq!(show["health"]["start_period_ms"], 8000, "{show}");

    // Without the start period the same boot fails its 2 s timeout, and
    // the error says which setting to raise.
    let out = molt(&server, &["apps", "update", "slow", "--start-period", "0"]);
    assert_eq!(out.status, 1, "{out}");
    assert!(out.stderr.contains("--start-period"), "{out}");
    assert_eq!(
        served(server.proxy_addr(), "slow.localhost").await,
        "testapp v1"
    );
}

/// Two Apps asking for one domain at once: one gets it, the other is
/// refused with the owner's name, and the domain serves one App only. A
/// domain a deploy in progress is adding is already taken: the deploy of
/// `slow` adds it and, until that swap is recorded, another App's request
/// for it is refused naming `slow`.
#[tokio::test(flavor = "multi_thread")]
async fn two_apps_racing_for_one_domain_never_both_get_it() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let slow = push(&registry, "testapp", "slowstart", "slowstart");
    let server = MoltServer::start(None);
    let proxy = server.proxy_addr();
    create_app(&server, "one", &v1, &["--health-path", "/healthz"]);
    create_app(&server, "two", &v2, &["--health-path", "/healthz"]);
    create_app(&server, "slow", &slow, &["--health-path", "/healthz"]);

    // At once, each with new containers (a new health path), so that both
    // deploys run side by side.
    let shared = "shared.example.com";
    let (a, b) = std::thread::scope(|s| {
        let update = |app: &'static str| {
            let server = &server;
            s.spawn(move || {
                molt(
                    server,
                    &[
                        "apps",
                        "update",
                        app,
                        "--add-domain",
                        shared,
                        "--health-path",
                        "/version",
                    ],
                )
            })
        };
        let (a, b) = (update("one"), update("two"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (winner, loser, refused) = match (a.status, b.status) {
        (0, 2) => ("one", "two", b),
        (2, 0) => ("two", "one", a),
        _ => panic!("exactly one update must get the domain:\n{a}\n{b}"),
    };
    assert!(
        refused
            .stderr
            .contains(&format!("already routed to the App `{winner}`")),
        "{refused}"
    );
    let show = |app| ok(molt(&server, &["apps", "show", app, "--json"])).json();
    let has = |app, domain: &str| {
        show(app)["domains"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d == domain))
    };
    assert!(has(winner, shared) && !has(loser, shared));
    let version = if winner == "one" { "v1" } else { "v2" };
    for _ in 0..20 {
        assert_eq!(served(proxy, shared).await, format!("testapp {version}"));
    }

    // A domain a deploy in progress adds is taken from its start.
    let out = molt(
        &server,
        &[
            "apps",
            "update",
            "slow",
            "--add-domain",
            "later.example.com",
            "--health-path",
            "/version",
            "--detach",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    let running = newest_deploy(&server, "slow");
    assert_eq!(running["kind"], "config", "{running}");
    let out = molt(
        &server,
        &["apps", "update", "one", "--add-domain", "later.example.com"],
    );
    assert_eq!(out.status, 2, "{out}");
    assert!(
        out.stderr.contains("already routed to the App `slow`"),
        "{out}"
    );
    let ended = wait_for(Duration::from_secs(60), || async {
        let d = newest_deploy(&server, "slow");
        matches!(
            d["status"].as_str(),
            Some("succeeded" | "failed" | "canceled")
        )
        .then_some(d)
    })
    .await
    .expect("the deploy of `slow` did not end within 60 s");
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert!(has("slow", "later.example.com"), "{}", show("slow"));
    assert!(!has("one", "later.example.com"), "{}", show("one"));
    assert_eq!(
        served(proxy, "later.example.com").await,
        "testapp slowstart"
    );
}

/// A rolling settings change stopped after its first replica moved (here
/// canceled, as any failure midway rolls back) never routes the domain it
/// adds: requests for it are never answered by the App, during the roll or
/// after, while the App's own host serves throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a_settings_change_stopped_midway_never_routes_its_new_domain() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start(None);
    let proxy = server.proxy_addr();
    // Each container takes 3 s to listen: room to stop the roll between
    // its first and its second replica.
    create_app(
        &server,
        "roll",
        &v1,
        &[
            "--health-path",
            "/healthz",
            "--replicas",
            "2",
            "--strategy",
            "rolling",
            "--env",
            "STARTUP_DELAY_MS=3000",
        ],
    );
    let new_host = "new.example.com";

    // Asks for the new domain until told to stop (bounded in time).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut asked, mut answered) = (0u32, Vec::new());
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                if let Ok((status, body)) =
                    get_with_timeout(proxy, new_host, "/", Duration::from_secs(5)).await
                {
                    if body.contains("testapp") {
                        answered.push(format!("HTTP {status}: {}", body.trim()));
                    }
                }
                asked += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (asked, answered)
        })
    };

    let out = molt(
        &server,
        &[
            "apps",
            "update",
            "roll",
            "--add-domain",
            new_host,
            "--health-path",
            "/version",
            "--detach",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    let id = newest_deploy(&server, "roll")["id"]
        .as_str()
        .expect("deploy id")
        .to_string();
    let moved = wait_for(Duration::from_secs(60), || async {
        let show = molt(&server, &["deploys", "show", "roll", &id, "--json"]);
        show.stdout
            .contains("traffic moved to the new container")
            .then_some(())
    })
    .await;
    assert!(
        moved.is_some(),
        "the first replica did not move within 60 s"
    );
    let out = molt(&server, &["cancel", "roll"]);
    assert_eq!(out.status, 0, "{out}");
    let ended = wait_for(Duration::from_secs(60), || async {
        let d = newest_deploy(&server, "roll");
        matches!(
            d["status"].as_str(),
            Some("succeeded" | "failed" | "canceled")
        )
        .then_some(d)
    })
    .await
    .expect("the canceled deploy did not end within 60 s");
    assert_eq!(ended["status"], "canceled", "{ended}");
    // A little longer after the end, then the verdict.
    let after = wait_for(Duration::from_secs(5), || async {
        let (status, _) = get(proxy, new_host, "/").await.ok()?;
        Some(status)
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (asked, answered) = watcher.await.unwrap();
    assert!(asked > 20, "the new domain was asked only {asked} times");
    assert!(
        answered.is_empty(),
        "the App answered {} of {asked} requests on the domain of a change that did not happen, first: {:?}",
        answered.len(),
        &answered[..answered.len().min(3)]
    );
    assert_ne!(after, Some(200));
    let show = ok(molt(&server, &["apps", "show", "roll", "--json"])).json();
    assert_eq!(
        show["domains"],
        serde_json::json!(["roll.localhost"]),
        "{show}"
    );
    assert_eq!(served(proxy, "roll.localhost").await, "testapp v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_limit_and_websocket_idle_timeout_per_app() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start(None);
    create_app(
        &server,
        "web",
        &v1,
        &["--max-body", "2k", "--tunnel-idle-timeout", "2"],
    );
    let shown = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(shown["max_body_bytes"], 2048, "{shown}");
    assert_eq!(shown["tunnel_idle_timeout_secs"], 2, "{shown}");
    let post = |len: usize| {
        http_request(
            server.proxy_addr(),
            "POST",
            "web.localhost",
            "/",
            &[("Content-Type", "application/octet-stream")],
            &vec![b'x'; len],
            Duration::from_secs(10),
        )
        .expect("POST through the proxy")
    };
    assert_eq!(post(1024).status, 200);
    let refused = post(4096);
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert!(refused.text().contains("2048"), "{}", refused.text());

    // A silent WebSocket is closed after the App's idle timeout.
    let mut ws = WsClient::connect(
        server.proxy_addr(),
        "web.localhost",
        "/ws",
        Duration::from_secs(20),
    )
    .expect("WebSocket through the proxy");
    assert_eq!(ws.echo("hi").expect("echo"), "hi");
    let started = std::time::Instant::now();
    let end = ws.recv();
    assert!(
        end.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::UnexpectedEof),
        "expected the proxy to close the idle tunnel, got {:?}",
        end.map(|m| m.opcode)
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // Both move only the route: no new container; back to the defaults'
    // neighbourhood with an update.
    let before = serving_containers(&server, "web");
    ok(molt(
        &server,
        &[
            "apps",
            "update",
            "web",
            "--max-body",
            "1m",
            "--tunnel-idle-timeout",
            "600",
        ],
    ));
    assert_eq!(serving_containers(&server, "web"), before);
    assert_eq!(post(4096).status, 200);
    let text = ok(molt(&server, &["apps", "show", "web"]));
    assert!(
        text.stdout
            .contains("request bodies up to 1 MiB; an idle WebSocket closes after 600 s"),
        "{text}"
    );
    let bad = molt(&server, &["apps", "update", "web", "--max-body", "lots"]);
    assert_eq!(bad.status, 2, "{bad}");
    assert!(bad.stderr.contains("--max-body"), "{bad}");
    let bad = molt(
        &server,
        &["apps", "update", "web", "--tunnel-idle-timeout", "0"],
    );
    assert_eq!(bad.status, 2, "{bad}");
}

#[tokio::test(flavor = "multi_thread")]
async fn placement_constraints_are_kept_and_ignored_on_one_host() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start(None);
    create_app(
        &server,
        "web",
        &v1,
        &["--constraint", "node.labels.gpu==true"],
    );
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );
    let show = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert_eq!(
        show["constraints"],
        serde_json::json!(["node.labels.gpu==true"]),
        "{show}"
    );
    assert!(
        server
            .log()
            .contains("placement constraints apply on a swarm only"),
        "the server warns that it ignores them"
    );
    let shown = ok(molt(&server, &["apps", "show", "web"]));
    assert!(shown.stdout.contains("node.labels.gpu==true"), "{shown}");

    // Replaced, then removed, through config deploys.
    ok(molt(
        &server,
        &["apps", "update", "web", "--constraint", "node.role==worker"],
    ));
    let show = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert_eq!(
        show["constraints"],
        serde_json::json!(["node.role==worker"])
    );
    ok(molt(
        &server,
        &["apps", "update", "web", "--no-constraints"],
    ));
    let show = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert_eq!(show["constraints"], serde_json::json!([]));
    let out = molt(
        &server,
        &["apps", "update", "web", "--constraint", "gpu=true"],
    );
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("ATTRIBUTE==VALUE"), "{out}");
}
