//! The one reconciler on the real engine: a serving container stopped by
//! hand is started again at once while the proxy holds its requests; a
//! restarted server listens before any health check and removes orphans
//! only under the App's claim, so a deploy finished meanwhile keeps its
//! containers.

mod support;

use std::time::{Duration, Instant};
use support::*;

fn status(server: &MoltServer, app: &str) -> String {
    molt(server, &["apps", "show", app, "--json"]).json()["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Whether `container` itself answers (a stopped container's address may
/// go to another test's container meanwhile).
async fn answers(server: &MoltServer, container: &str) -> bool {
    match get(server.proxy_addr(), "web.localhost", "/env/HOSTNAME").await {
        Ok((200, body)) => container.starts_with(body.trim()),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serving_container_stopped_by_hand_is_started_again_at_once() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    // Autoheal's defaults: a 60 s grace, so only converge can bring it back
    // within the seconds asserted here.
    let server = MoltServer::start(None);
    create_app(&server, "web", &v1, &["--health-path", "/healthz"]);
    let serving = server.containers(Some("web"));
    assert_eq!(serving.len(), 1, "{serving:?}");
    let id = serving[0].clone();

    let load = Load::start_bounded(
        server.proxy_addr(),
        "web.localhost",
        2,
        Duration::from_secs(10),
        Duration::from_secs(60),
    );
    assert!(wait_until(Duration::from_secs(10), || async { load.ok() > 50 }).await);

    // `docker stop` and `docker kill` are manual stops: `unless-stopped`
    // never restarts them.
    for how in [&["stop", "-t", "2"][..], &["kill"][..]] {
        let (before, failed_before) = (load.ok(), load.failed());
        let mut args = how.to_vec();
        args.push(&id);
        docker(&args);
        let stopped = Instant::now();
        let back = wait_until(Duration::from_secs(10), || async {
            load.ok() > before + 20 && answers(&server, &id).await
        })
        .await;
        let took = stopped.elapsed();
        eprintln!(
            "docker {}: serving again after {took:?}; {} requests failed",
            how[0],
            load.failed() - failed_before
        );
        assert!(
            back,
            "the App did not serve within 10 s of `docker {}`",
            how[0]
        );
        // The same container, started again: no replacement was needed.
        assert_eq!(server.containers(Some("web")), vec![id.clone()]);
        let running = wait_until(Duration::from_secs(10), || async {
            status(&server, "web") == "running"
        })
        .await;
        assert!(running, "apps show: {}", status(&server, "web"));
    }

    let report = load.finish().await;
    eprintln!(
        "requests: {} ok, {} failed: {:?}",
        report.ok, report.failed, report.errors
    );
    // Held, not failed: only a request in flight on the container when it
    // died may fail (2 load tasks: at most 2 per stop). One refused before
    // the hold began waits for it (the proxy's grace after a refusal).
    assert!(
        report.failed <= 6,
        "{} requests failed: {:?}",
        report.failed,
        report.errors
    );
    // Nothing was recorded as a deploy: the container was only started again.
    let deploys = molt(&server, &["deploys", "web", "--json"]).json();
    assert_eq!(deploys.as_array().map(Vec::len), Some(1), "{deploys}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_listens_at_once_and_a_deploy_during_the_orphan_drain_keeps_its_containers(
) {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let v3 = push(&registry, "testapp", "v3", "v3");
    let mut server = MoltServer::start(None);
    create_app(
        &server,
        "web",
        &v1,
        &["--health-path", "/healthz", "--drain-timeout", "60"],
    );

    // A long request keeps v1 draining; the server dies during the drain.
    let proxy = server.proxy_addr();
    let slow = tokio::spawn(async move {
        support::get_with_timeout(
            proxy,
            "web.localhost",
            "/slow?ms=15000",
            Duration::from_secs(30),
        )
        .await
    });
    let out = molt(&server, &["deploy", "web", &v2, "--detach"]);
    assert_eq!(out.status, 0, "{out}");
    let draining = wait_until(Duration::from_secs(30), || async {
        newest_deploy(&server, "web")["status"] == "draining"
    })
    .await;
    assert!(draining, "the deploy never reached draining");
    server.kill();

    // The restarted server finishes the deploy forward and answers before
    // the old container drained (the harness waits for the API).
    let started = Instant::now();
    server.restart();
    let took = started.elapsed();
    eprintln!("the restarted server answered after {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "the API waited for the drain: {took:?}"
    );
    assert!(!slow.is_finished(), "the slow request ended already");

    // While the orphan drains, a deploy comes and goes.
    let out = molt(&server, &["deploy", "web", &v3]);
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v3"
    );

    // The slow request finishes on v1; then v1 goes, and v3 stays.
    let (code, _) = slow.await.unwrap().expect("the slow request");
    assert_eq!(code, 200);
    let single = wait_until(Duration::from_secs(30), || async {
        server.containers(Some("web")).len() == 1
    })
    .await;
    assert!(single, "{:?}", server.containers(Some("web")));
    let app = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(app["status"], "running", "{app}");
    for _ in 0..5 {
        assert_eq!(
            served(server.proxy_addr(), "web.localhost").await,
            "testapp v3"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_app_that_cannot_start_again_stops_neither_start_up_nor_the_others() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let mut server = MoltServer::start(None);
    create_app(&server, "web", &v1, &["--health-path", "/healthz"]);
    create_app(&server, "other", &v1, &["--health-path", "/healthz"]);
    server.kill();

    // While the server is down, `other`'s container is stopped and moved to
    // a network that then goes away: it can never start again.
    let broken = server.containers(Some("other"));
    assert_eq!(broken.len(), 1, "{broken:?}");
    let network = format!("molt-test-gone-{}", free_port());
    docker(&["stop", "-t", "1", &broken[0]]);
    docker(&["network", "create", &network]);
    let joined = docker(&[
        "inspect",
        "--format",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        &broken[0],
    ]);
    for old in joined.split_whitespace() {
        docker(&["network", "disconnect", old, &broken[0]]);
    }
    docker(&["network", "connect", &network, &broken[0]]);
    docker(&["network", "rm", &network]);

    // The server starts, `web` serves at once, `other` is replaced.
    server.restart();
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );
    let healed = wait_until(Duration::from_secs(60), || async {
        served(server.proxy_addr(), "other.localhost").await == "testapp v1"
            && status(&server, "other") == "running"
            && !server.containers(Some("other")).contains(&broken[0])
    })
    .await;
    assert!(
        healed,
        "other: {} {:?}",
        status(&server, "other"),
        server.containers(Some("other"))
    );
    assert_eq!(status(&server, "web"), "running");
    let deploy = newest_deploy(&server, "other");
    assert_eq!(deploy["kind"], "restart", "{deploy}");
    assert_eq!(deploy["status"], "succeeded", "{deploy}");
}
