//! Replicas: several containers per App, balanced by the proxy. A rolling
//! deploy replaces one replica at a time under continuous requests and
//! counts zero failures; a failed one (at its first replica or halfway)
//! leaves the old replicas serving; scaling up and down drains first; a sick
//! replica leaves the rotation at once and is replaced by autoheal.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::*;

/// One container of the App as the engine sees it, from its labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Labeled {
    id: String,
    replica: String,
    deploy: String,
    running: bool,
}

/// Every container of an App (running or not), by its labels.
fn containers(server: &MoltServer, app: &str) -> Vec<Labeled> {
    server
        .docker_ps(
            Some(app),
            &[
                "--format",
                "{{.ID}} {{.Label \"molt.replica\"}} {{.Label \"molt.deploy\"}} {{.State}}",
            ],
        )
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some(Labeled {
                id: f.next()?.to_string(),
                replica: f.next()?.to_string(),
                deploy: f.next()?.to_string(),
                running: f.next()? == "running",
            })
        })
        .collect()
}

fn ids(list: &[Labeled]) -> BTreeSet<String> {
    list.iter().map(|c| c.id.clone()).collect()
}

/// The serving containers in `apps show --json`: (replica, id, in rotation).
fn shown(server: &MoltServer, app: &str) -> Vec<(u64, String, bool)> {
    let view = molt(server, &["apps", "show", app, "--json"]).json();
    view["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("no containers in {view}"))
        .iter()
        .map(|c| {
            (
                c["replica"].as_u64().unwrap(),
                c["id"].as_str().unwrap().to_string(),
                c["in_rotation"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Which container answers each of `n` requests (one connection each), by
/// the short id Docker gives a container as its hostname.
async fn answering(server: &MoltServer, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let (status, body) = get(server.proxy_addr(), "web.localhost", "/env/HOSTNAME")
            .await
            .expect("a request through the proxy");
        assert_eq!(status, 200, "{body}");
        *seen.entry(body.trim().to_string()).or_insert(0) += 1;
    }
    seen
}

fn short(id: &str) -> String {
    id[..12].to_string()
}

/// Runs `args` under load and checks that no request failed; returns the
/// command's output and what the load saw.
async fn under_load(server: &MoltServer, args: &[&str], what: &str) -> (CliOutput, LoadReport) {
    let load = Load::start(server.proxy_addr(), "web.localhost", 4);
    // Let the load get going before the operation starts.
    assert!(
        wait_until(Duration::from_secs(10), || async { load.ok() >= 20 }).await,
        "the load did not start"
    );
    let out = molt(server, args);
    let result = load.finish().await;
    eprintln!("{what}: {result}");
    assert!(result.ok > 50, "{what}: the load ran ({})", result.ok);
    assert_eq!(
        result.failed, 0,
        "{what}: failed requests: {:?}",
        result.errors
    );
    (out, result)
}

fn timeline(server: &MoltServer, deploy: &Value) -> String {
    molt(
        server,
        &["deploys", "show", "web", deploy["id"].as_str().unwrap()],
    )
    .stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_the_traffic_and_a_rolling_deploy_loses_nothing() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let crash = push(&registry, "testapp", "crash", "crash");
    let slow = push(&registry, "testapp", "slowstart", "slowstart");
    let server = MoltServer::start(None);
    create_app(
        &server,
        "web",
        &v1,
        &[
            "--health-path",
            "/healthz",
            "--health-timeout",
            "10",
            "--replicas",
            "3",
            "--strategy",
            "rolling",
            "--drain-timeout",
            "5",
        ],
    );

    // Three containers, labelled 0, 1 and 2, all in the App's view.
    let first = containers(&server, "web");
    assert_eq!(first.len(), 3, "{first:?}");
    let replicas: BTreeSet<&str> = first.iter().map(|c| c.replica.as_str()).collect();
    assert_eq!(replicas, BTreeSet::from(["0", "1", "2"]));
    let view = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(view["replicas"], 3, "{view}");
    let listed: BTreeSet<String> = shown(&server, "web").into_iter().map(|c| c.1).collect();
    assert_eq!(listed, ids(&first));

    // The proxy spreads requests over the three.
    let seen = answering(&server, 30).await;
    let expected: BTreeSet<String> = first.iter().map(|c| short(&c.id)).collect();
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "every replica answers: {seen:?}"
    );
    assert!(
        seen.values().all(|n| *n >= 5),
        "requests are spread: {seen:?}"
    );

    // A rolling deploy under continuous requests: zero failures, and three
    // new containers at the end.
    let (out, load) = under_load(&server, &["deploy", "web", &v2], "rolling deploy v1 -> v2").await;
    assert_eq!(out.status, 0, "{out}");
    assert!(load.bodies.contains_key("testapp v2"), "{:?}", load.bodies);
    let second = containers(&server, "web");
    assert_eq!(
        second.len(),
        3,
        "the old containers are removed: {second:?}"
    );
    assert!(second.iter().all(|c| c.running));
    assert!(
        ids(&first).is_disjoint(&ids(&second)),
        "all three were replaced"
    );
    let deploy = newest_deploy(&server, "web");
    assert_eq!(deploy["status"], "succeeded", "{deploy}");
    let shown_timeline = timeline(&server, &deploy);
    assert!(
        shown_timeline.contains("rolling 3 replicas one at a time"),
        "{shown_timeline}"
    );
    for r in 0..3 {
        assert!(
            shown_timeline.contains(&format!("replica {r}: traffic moved")),
            "{shown_timeline}"
        );
    }
    let seen = answering(&server, 15).await;
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        second.iter().map(|c| short(&c.id)).collect()
    );

    // A crashing image fails at its first replica: the old three serve on,
    // no request fails, and its container is gone.
    let (out, load) = under_load(
        &server,
        &["deploy", "web", &crash],
        "failed rolling deploy (crash)",
    )
    .await;
    assert_eq!(out.status, 1, "{out}");
    assert!(out.stderr.contains("exited with code 3"), "{out}");
    assert_eq!(
        load.bodies.keys().collect::<Vec<_>>(),
        vec!["testapp v2"],
        "only the old version answered"
    );
    assert_eq!(ids(&containers(&server, "web")), ids(&second));

    // Failing halfway: replica 2's new container is stopped while it starts,
    // after replicas 0 and 1 moved. The replaced old containers come back,
    // the new ones go, and no request fails.
    // Each new replica takes 6 s to listen, so stopping replica 2 lands
    // while it starts even on a loaded machine (the variable reaches only
    // the containers this deploy starts).
    ok(molt(
        &server,
        &["env", "set", "web", "STARTUP_DELAY_MS=6000"],
    ));
    let load = Load::start(server.proxy_addr(), "web.localhost", 4);
    let out = ok(molt(&server, &["deploy", "web", &slow, "--detach"]));
    assert!(out.stdout.contains("Started deploy"), "{out}");
    let deploy_id = newest_deploy(&server, "web")["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Running, so the engine has started it (and it is still starting up:
    // it waits 6 s before it listens).
    let third = wait_for(Duration::from_secs(60), || async {
        containers(&server, "web")
            .into_iter()
            .find(|c| c.deploy == deploy_id && c.replica == "2" && c.running)
    })
    .await
    .expect("the rolling deploy reached replica 2");
    docker(&["stop", "--time", "1", &third.id]);
    // It ends once the roll-back is done.
    let ended = wait_for(Duration::from_secs(90), || async {
        let d = newest_deploy(&server, "web");
        ["failed", "succeeded", "canceled"]
            .contains(&d["status"].as_str().unwrap_or_default())
            .then_some(d)
    })
    .await
    .expect("the deploy ended");
    let result = load.finish().await;
    eprintln!("failed halfway: {result}");
    assert_eq!(ended["status"], "failed", "{ended}");
    assert!(
        ended["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 0"),
        "{ended}"
    );
    assert_eq!(result.failed, 0, "failed requests: {:?}", result.errors);
    let restored_timeline = timeline(&server, &ended);
    assert!(
        restored_timeline.contains("replica 2 failed; rolling back: the 2 replaced replica(s)"),
        "{restored_timeline}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || async {
            ids(&containers(&server, "web")) == ids(&second)
        })
        .await,
        "the three v2 containers serve again and nothing else is left: {:?}",
        containers(&server, "web")
    );
    assert!(containers(&server, "web").iter().all(|c| c.running));
    for _ in 0..10 {
        assert_eq!(
            get(server.proxy_addr(), "web.localhost", "/")
                .await
                .unwrap(),
            (200, "testapp v2\n".to_string())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_up_and_down_and_blue_green_with_replicas_lose_nothing() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let server = MoltServer::start(None);
    create_app(
        &server,
        "web",
        &v1,
        &[
            "--health-path",
            "/healthz",
            "--replicas",
            "3",
            "--drain-timeout",
            "5",
        ],
    );
    let three = containers(&server, "web");
    assert_eq!(three.len(), 3);

    // 3 -> 1: two replicas leave the route, drain, and go.
    let (out, _) = under_load(&server, &["apps", "scale", "web", "1"], "scale 3 -> 1").await;
    assert_eq!(out.status, 0, "{out}");
    let one = containers(&server, "web");
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0].replica, "0");
    assert!(ids(&three).contains(&one[0].id), "replica 0 kept serving");
    let scale = newest_deploy(&server, "web");
    assert_eq!(
        (scale["kind"].as_str(), scale["status"].as_str()),
        (Some("scale"), Some("succeeded"))
    );
    let t = timeline(&server, &scale);
    assert!(t.contains("scaling from 3 to 1 replica(s)"), "{t}");
    assert!(t.contains("taking replicas 1, 2 out of the route"), "{t}");
    assert!(t.contains("drained"), "{t}");
    assert_eq!(
        molt(&server, &["apps", "show", "web", "--json"]).json()["replicas"],
        1
    );

    // 1 -> 2: a new container of the serving digest is health-checked and
    // joins the one that serves.
    let (out, _) = under_load(&server, &["apps", "scale", "web", "2"], "scale 1 -> 2").await;
    assert_eq!(out.status, 0, "{out}");
    let two = containers(&server, "web");
    assert_eq!(two.len(), 2, "{two:?}");
    assert!(ids(&two).contains(&one[0].id));
    let view = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(view["replicas"], 2, "{view}");
    assert_eq!(view["digest"], scale["digest"], "the same digest serves");
    let seen = answering(&server, 12).await;
    assert_eq!(seen.len(), 2, "both replicas answer: {seen:?}");

    // The same count again is refused; so is a deploy while a scale runs.
    let out = molt(&server, &["apps", "scale", "web", "2"]);
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("already runs 2"), "{out}");
    ok(molt(&server, &["apps", "scale", "web", "3", "--detach"]));
    let out = molt(&server, &["deploy", "web", &v2, "--detach"]);
    assert_eq!(out.status, 2, "a second operation is refused: {out}");
    assert!(out.stderr.contains("busy with deploy"), "{out}");
    assert!(
        wait_until(Duration::from_secs(60), || async {
            newest_deploy(&server, "web")["status"] == "succeeded"
        })
        .await
    );
    assert_eq!(containers(&server, "web").len(), 3);

    // A rollback skips scales (they ran no version of their own): it goes
    // back to the deploy that created the App, on three replicas.
    let history = molt(&server, &["deploys", "web", "--json"]).json();
    let created = history.as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ok(molt(&server, &["rollback", "web"]));
    assert!(
        out.stdout
            .contains(&format!("rolling back to deploy {created}")),
        "{out}"
    );
    assert_eq!(containers(&server, "web").len(), 3);

    // Blue-green with three replicas (the host holds six): all three new
    // start, are checked, and take the traffic at once.
    let before = containers(&server, "web");
    let (out, load) = under_load(&server, &["deploy", "web", &v2], "blue-green deploy of 3").await;
    assert_eq!(out.status, 0, "{out}");
    assert!(load.bodies.contains_key("testapp v2"));
    let after = containers(&server, "web");
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(ids(&before).is_disjoint(&ids(&after)));
    let t = timeline(&server, &newest_deploy(&server, "web"));
    assert!(
        t.contains("switching traffic to the 3 new containers"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sick_replica_leaves_the_rotation_and_is_replaced() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start_with(
        None,
        &[
            "--autoheal-grace",
            "1s",
            "--autoheal-interval",
            "1s",
            "--autoheal-threshold",
            "8",
        ],
        &[],
    );
    create_app(
        &server,
        "web",
        &v1,
        &[
            "--health-path",
            "/healthz",
            "--replicas",
            "3",
            "--drain-timeout",
            "5",
        ],
    );
    let before = containers(&server, "web");
    let sick = before.iter().find(|c| c.replica == "1").unwrap().clone();
    let ip = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &sick.id,
    ])
    .trim()
    .to_string();
    let addr: std::net::SocketAddr = format!("{ip}:8080").parse().unwrap();
    let set_health = |status: u16| {
        let r = http_request(
            addr,
            "GET",
            "web.localhost",
            &format!("/health/set?status={status}"),
            &[],
            &[],
            Duration::from_secs(5),
        )
        .expect("the container answers on its own address");
        assert_eq!(r.status, 200);
    };
    let in_rotation = |server: &MoltServer| {
        shown(server, "web")
            .into_iter()
            .find(|c| c.1 == sick.id)
            .map(|c| c.2)
    };

    // Its health turns bad: out of rotation at once, the others serve.
    set_health(500);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            in_rotation(&server) == Some(false)
        })
        .await,
        "the sick replica left the rotation"
    );
    let seen = answering(&server, 20).await;
    assert!(
        !seen.contains_key(&short(&sick.id)),
        "no request reaches the sick replica: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    let debug = molt(&server, &["debug", "web", "--json"]).json();
    assert!(
        debug["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["summary"].as_str().unwrap().contains("replica 1")),
        "{debug}"
    );

    // It recovers: back in rotation.
    set_health(200);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            in_rotation(&server) == Some(true)
        })
        .await,
        "the recovered replica is back in rotation"
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            answering(&server, 6).await.contains_key(&short(&sick.id))
        })
        .await
    );

    // Bad for good: replaced after the threshold, the others untouched.
    let load = Load::start(server.proxy_addr(), "web.localhost", 3);
    set_health(500);
    let healed = wait_for(Duration::from_secs(60), || async {
        let d = newest_deploy(&server, "web");
        (d["triggered_by"] == "autoheal" && d["status"] == "succeeded").then_some(d)
    })
    .await
    .expect("no autoheal replacement within 60 s");
    let result = load.finish().await;
    assert_eq!(result.failed, 0, "failed requests: {:?}", result.errors);
    let t = timeline(&server, &healed);
    assert!(t.contains("replacing replica 1"), "{t}");
    assert!(t.contains("failed 8 consecutive health checks"), "{t}");
    let after = containers(&server, "web");
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(!ids(&after).contains(&sick.id), "the sick one is gone");
    let kept: BTreeSet<String> = before
        .iter()
        .filter(|c| c.id != sick.id)
        .map(|c| c.id.clone())
        .collect();
    assert!(kept.is_subset(&ids(&after)), "the healthy ones were kept");
    let replaced = after.iter().find(|c| !kept.contains(&c.id)).unwrap();
    assert_eq!(replaced.replica, "1");
    assert!(shown(&server, "web").iter().all(|c| c.2), "all in rotation");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_halfway_through_a_rolling_deploy_restores_the_old_replicas() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let slow = push(&registry, "testapp", "slowstart", "slowstart");
    let mut server = MoltServer::start(None);
    create_app(
        &server,
        "web",
        &v1,
        &[
            "--health-path",
            "/healthz",
            "--replicas",
            "3",
            "--strategy",
            "rolling",
            "--drain-timeout",
            "5",
        ],
    );
    let before = containers(&server, "web");
    assert_eq!(before.len(), 3);

    // Killed while replica 1 starts, after replica 0 moved: the proxy keeps
    // serving (one new, two old), and the restarted server rolls back.
    let load = Load::start(server.proxy_addr(), "web.localhost", 3);
    ok(molt(&server, &["deploy", "web", &slow, "--detach"]));
    let deploy = newest_deploy(&server, "web");
    let id = deploy["id"].as_str().unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(60), || async {
            containers(&server, "web")
                .iter()
                .any(|c| c.deploy == id && c.replica == "1" && c.running)
        })
        .await,
        "the rolling deploy reached replica 1"
    );
    server.kill();
    server.restart();
    let result = load.finish().await;
    eprintln!("killed halfway: {result}");
    assert_eq!(result.failed, 0, "failed requests: {:?}", result.errors);
    assert!(result.ok > 50, "the load ran ({})", result.ok);

    let ended = newest_deploy(&server, "web");
    assert_eq!(ended["status"], "failed", "{ended}");
    let error = ended["error"].as_str().unwrap();
    assert!(error.contains("replicas moved"), "{error}");
    assert!(
        error.contains("the previous version was restored"),
        "{error}"
    );
    assert_eq!(
        molt(&server, &["apps", "show", "web", "--json"]).json()["status"],
        "running"
    );
    // The three v1 containers serve (the stopped one started again) and the
    // new ones are gone.
    assert!(
        wait_until(Duration::from_secs(30), || async {
            let now = containers(&server, "web");
            ids(&now) == ids(&before) && now.iter().all(|c| c.running)
        })
        .await,
        "{:?}",
        containers(&server, "web")
    );
    let seen = answering(&server, 15).await;
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        before.iter().map(|c| short(&c.id)).collect(),
        "all three old replicas serve again"
    );
    for _ in 0..5 {
        assert_eq!(
            get(server.proxy_addr(), "web.localhost", "/")
                .await
                .unwrap(),
            (200, "testapp v1\n".to_string())
        );
    }
}
