//! Molt on a real single-node Docker Swarm (`molt server --orchestrator
//! swarm`): each replica is a service, Swarm places its task, and Molt's
//! proxy reaches the task at the port it publishes in host mode. Every
//! deploy path that means something on a swarm runs here under load and
//! loses no request: blue-green and rolling deploys, scaling, rollbacks,
//! `env set --apply`, `restart`, settings changes, the recreate strategy
//! with its held requests, a canceled deploy, and the reconciler (a killed
//! task, autoheal, a restarted server adopting its services). A failing
//! deploy (a crash, an unhealthy version, a constraint no node meets, a
//! port the App does not listen on) leaves the old version serving and
//! says why.
//!
//! The test engine becomes a swarm manager while a test of this file runs
//! (`docker swarm init`, unless it is one already) and leaves the swarm when
//! the last one ends, failed or not (see [`SwarmLease`]). `--orchestrator
//! auto` picks the swarm on a manager.

mod support;

use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;
use support::*;

/// How many tests of this file hold the swarm, and whether this process
/// made it (and so must leave it).
static SWARM: Mutex<(usize, bool)> = Mutex::new((0, false));

/// A test's hold on the single-node swarm. The first one makes the engine a
/// swarm manager unless it already is; when the last one is dropped
/// (panics included) the engine leaves the swarm this process made, along
/// with the bridge Swarm created for it, so the engine ends as it began.
struct SwarmLease;

fn swarm_state() -> String {
    docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .trim()
        .to_string()
}

impl SwarmLease {
    fn take() -> SwarmLease {
        let mut held = SWARM.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 == 0 && swarm_state() != "active" {
            let had_gwbridge = network_exists("docker_gwbridge");
            docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
            held.1 = true;
            GWBRIDGE_BEFORE.store(had_gwbridge, std::sync::atomic::Ordering::SeqCst);
        }
        held.0 += 1;
        SwarmLease
    }
}

static GWBRIDGE_BEFORE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn network_exists(name: &str) -> bool {
    try_docker(None, &["network", "inspect", name], None)
        .status
        .success()
}

impl Drop for SwarmLease {
    fn drop(&mut self) {
        let mut held = SWARM.lock().unwrap_or_else(|e| e.into_inner());
        held.0 -= 1;
        if held.0 == 0 && held.1 {
            let _ = try_docker(None, &["swarm", "leave", "--force"], None);
            if !GWBRIDGE_BEFORE.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = try_docker(None, &["network", "rm", "docker_gwbridge"], None);
            }
            held.1 = false;
        }
    }
}

/// A server whose replicas are swarm services.
fn swarm_server() -> MoltServer {
    MoltServer::start_with(None, &["--orchestrator", "swarm"], &[])
}

/// The full ids of the services of an App of `server`.
fn services(server: &MoltServer, app: &str) -> Vec<String> {
    inspect_services(server, app, "{{.ID}}")
}

/// `docker service inspect --format FORMAT` of an App's services, a line
/// each.
fn inspect_services(server: &MoltServer, app: &str, format: &str) -> Vec<String> {
    let instance = server.instance_id().expect("the server wrote its id");
    let instance = format!("label=molt.instance={instance}");
    let app = format!("label=molt.app={app}");
    // A service removed between the two calls fails the second: ask again.
    for _ in 0..10 {
        let short = docker(&[
            "service", "ls", "--quiet", "--filter", &instance, "--filter", &app,
        ]);
        let short: Vec<&str> = short.split_whitespace().collect();
        if short.is_empty() {
            return Vec::new();
        }
        // `service ls` shortens ids; `service inspect` gives them whole.
        let mut args = vec!["service", "inspect", "--format", format];
        args.extend(short);
        let out = try_docker(None, &args, None);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
        }
    }
    panic!("the services of {app} kept changing while they were listed");
}

/// The serving replicas' ids in `apps show --json`.
fn shown_ids(server: &MoltServer, app: &str) -> Vec<String> {
    let view = molt(server, &["apps", "show", app, "--json"]).json();
    view["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("no containers in {view}"))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// One replica's service of an App: (replica, deploy, full service id),
/// sorted by replica.
fn replica_services(server: &MoltServer, app: &str) -> Vec<(String, String, String)> {
    let format =
        "{{index .Spec.Labels \"molt.replica\"}} {{index .Spec.Labels \"molt.deploy\"}} {{.ID}}";
    let mut found: Vec<(String, String, String)> = inspect_services(server, app, format)
        .iter()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some((
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.to_string(),
            ))
        })
        .collect();
    found.sort();
    found
}

/// The container of a service's running task on this node (empty when it
/// has none).
fn task_container(service: &str) -> String {
    docker(&[
        "ps",
        "--quiet",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.swarm.service.id={service}"),
    ])
    .trim()
    .to_string()
}

/// The serving replicas in `apps show --json`: (replica, id, in rotation).
fn shown_replicas(server: &MoltServer, app: &str) -> Vec<(u64, String, bool)> {
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

/// A deploy's timeline as `molt deploys show` prints it.
fn timeline(server: &MoltServer, app: &str, deploy: &Value) -> String {
    molt(
        server,
        &["deploys", "show", app, deploy["id"].as_str().unwrap()],
    )
    .stdout
}

/// How many deploys an App has recorded.
fn deploy_count(server: &MoltServer, app: &str) -> usize {
    molt(server, &["deploys", app, "--json"])
        .json()
        .as_array()
        .map_or(0, Vec::len)
}

/// Runs `args` under load through the proxy and checks that no request
/// failed; returns the command's output.
async fn under_load(server: &MoltServer, args: &[&str], what: &str) -> CliOutput {
    let load = Load::start(server.proxy_addr(), "web.localhost", 4);
    assert!(
        wait_until(Duration::from_secs(10), || async { load.ok() >= 20 }).await,
        "{what}: the load did not start"
    );
    let out = molt(server, args);
    let report = load.finish().await;
    eprintln!("{what}: {report}");
    assert!(report.ok > 20, "{what}: the load ran ({})", report.ok);
    assert_eq!(
        report.failed, 0,
        "{what}: failed requests: {:?}",
        report.errors
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_swarm_deploys_scale_and_rollbacks_lose_no_request() {
    let _swarm = SwarmLease::take();
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let server = swarm_server();
    create_app(
        &server,
        "web",
        &v1,
        &[
            "--health-path",
            "/healthz",
            "--health-timeout",
            "20",
            "--drain-timeout",
            "3",
            "--memory",
            "64m",
            "--cpus",
            "0.1",
        ],
    );
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );
    let first_deploy = newest_deploy(&server, "web")["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The replica is a service of one task, its port published in host
    // mode, its resources reserved and limited, and no routing mesh.
    let first = services(&server, "web");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(shown_ids(&server, "web"), first);
    let spec: Value = serde_json::from_str(&docker(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec}}",
        &first[0],
    ]))
    .unwrap();
    assert_eq!(spec["EndpointSpec"]["Mode"], "dnsrr", "{spec}");
    assert_eq!(
        spec["EndpointSpec"]["Ports"][0]["PublishMode"], "host",
        "{spec}"
    );
    let resources = &spec["TaskTemplate"]["Resources"];
    assert_eq!(resources["Reservations"]["MemoryBytes"], 64 << 20, "{spec}");
    assert_eq!(resources["Limits"]["MemoryBytes"], 64 << 20, "{spec}");
    assert_eq!(resources["Limits"]["NanoCPUs"], 100_000_000, "{spec}");
    assert_eq!(resources["Reservations"]["NanoCPUs"], 100_000_000, "{spec}");
    assert_eq!(
        spec["TaskTemplate"]["RestartPolicy"]["Condition"], "none",
        "{spec}"
    );

    // A blue-green deploy under load: nothing fails, one service is left.
    let out = under_load(&server, &["deploy", "web", &v2], "deploy v2").await;
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v2"
    );
    let second = services(&server, "web");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first, "the deploy ran a new service");

    // Scaling to three replicas under load: three services, all routed.
    let out = under_load(&server, &["apps", "scale", "web", "3"], "scale to 3").await;
    assert_eq!(out.status, 0, "{out}");
    let three = services(&server, "web");
    assert_eq!(three.len(), 3, "{three:?}");
    let mut shown = shown_ids(&server, "web");
    shown.sort();
    let mut listed = three.clone();
    listed.sort();
    assert_eq!(shown, listed);

    // A rollback to the first deploy (v1) under load.
    let out = under_load(&server, &["rollback", "web", &first_deploy], "rollback").await;
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );
    assert_eq!(services(&server, "web").len(), 3);

    // Logs come from the services' tasks.
    let out = ok(molt(&server, &["logs", "web", "--tail", "20"]));
    assert!(out.stdout.contains("testapp v1 listening on"), "{out}");

    // Deleting the App removes its services.
    ok(molt(&server, &["apps", "delete", "web", "--yes"]));
    assert!(
        wait_until(Duration::from_secs(20), || async {
            services(&server, "web").is_empty()
        })
        .await,
        "the App's services are removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_swarm_failed_deploys_leave_the_old_version_serving_with_the_reason() {
    let _swarm = SwarmLease::take();
    // A private registry: the credential goes with each service.
    let registry = Registry::start(true);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let crash = push(&registry, "testapp", "crash", "crash");
    let unhealthy = push(&registry, "testapp", "unhealthy", "unhealthy");
    let otherport = push(&registry, "testapp", "otherport", "otherport");
    let server = swarm_server();
    ok(add_registry(
        &server,
        &registry,
        format!("{}\n", registry.password()).as_bytes(),
    ));
    create_app(
        &server,
        "web",
        &v1,
        &[
            "--health-path",
            "/healthz",
            "--health-timeout",
            "5",
            "--drain-timeout",
            "2",
        ],
    );
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );

    // A crash, an unhealthy version and one on another port fail with
    // their reasons (the port inside the container, not the published one).
    let cases: [(&str, &[&str]); 3] = [
        (&crash, &["exited with code 3", "simulated crash"]),
        (
            &unhealthy,
            &["did not become healthy", "GET /healthz answered 500"],
        ),
        (
            &otherport,
            &["the container listens on port 9000, not on port 8080"],
        ),
    ];
    for (image, expected) in cases {
        let out = molt(&server, &["deploy", "web", image]);
        assert_eq!(out.status, 1, "{image}: {out}");
        for e in expected {
            // The timeline (stdout) records every check's result.
            let told = format!("{}{}", out.stdout, out.stderr);
            assert!(told.contains(e), "{image}: expected `{e}` in\n{out}");
        }
        assert_eq!(
            served(server.proxy_addr(), "web.localhost").await,
            "testapp v1",
            "after {image}"
        );
        assert_eq!(
            services(&server, "web").len(),
            1,
            "the failed replica's service is removed ({image})"
        );
    }

    // A constraint no node meets: the change fails as "no suitable node",
    // v1 keeps serving and the App keeps its old placement.
    let out = molt(
        &server,
        &[
            "apps",
            "update",
            "web",
            "--constraint",
            "node.labels.molt-test-nowhere==true",
        ],
    );
    assert_eq!(out.status, 1, "{out}");
    assert!(out.stderr.contains("no suitable node"), "{out}");
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );
    let view = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(view["constraints"], serde_json::json!([]), "{view}");
    let failed = newest_deploy(&server, "web");
    assert_eq!(failed["failure"]["kind"], "no_suitable_node", "{failed}");
    let debug = molt(&server, &["debug", "web", "--json"]).json();
    assert!(
        debug.to_string().contains("no_suitable_node"),
        "molt debug names it: {debug}"
    );
    // It lists what Swarm says of the tasks: the serving one runs on the
    // node, the failed deploy's found none, in Swarm's words.
    let tasks = debug["swarm_tasks"].as_array().expect("swarm_tasks");
    assert!(
        tasks.iter().any(|t| t["state"] == "running"
            && t["desired_state"] == "running"
            && t["node"].is_string()),
        "{debug}"
    );
    assert!(
        tasks.iter().any(|t| t["deploy"] == failed["id"]
            && t["error"].as_str().is_some_and(
                |e| e.contains("no suitable node (scheduling constraints not satisfied")
            )),
        "the failed deploy's task and Swarm's error: {debug}"
    );
    let debug = ok(molt(&server, &["debug", "web"]));
    assert!(debug.stdout.contains("docker node ls"), "{debug}");
    assert!(debug.stdout.contains("swarm tasks"), "{debug}");
    assert_eq!(services(&server, "web").len(), 1);

    // A constraint the node meets places the replicas, and is kept.
    let out = molt(
        &server,
        &[
            "apps",
            "update",
            "web",
            "--constraint",
            "node.role==manager",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    let view = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(
        view["constraints"],
        serde_json::json!(["node.role==manager"]),
        "{view}"
    );
    let placed = services(&server, "web");
    assert_eq!(placed.len(), 1, "{placed:?}");
    let constraints = docker(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.Placement.Constraints}}",
        &placed[0],
    ]);
    assert!(constraints.contains("node.role==manager"), "{constraints}");
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );

    // The task's container is confined as on one host.
    let task_container = || {
        docker(&[
            "ps",
            "--quiet",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.swarm.service.id={}", placed[0]),
        ])
        .trim()
        .to_string()
    };
    let container = task_container();
    let confined = docker(&[
        "inspect",
        "--format",
        "{{json .HostConfig.SecurityOpt}} {{json .HostConfig.CapDrop}} {{.HostConfig.PidsLimit}}",
        &container,
    ]);
    eprintln!("task container confinement: {confined}");
    assert!(confined.contains("NET_RAW"), "{confined}");
    assert!(confined.contains("1024"), "{confined}");

    // A task that dies is started again by Molt (Swarm restarts nothing),
    // and the App serves again.
    docker(&["kill", &container]);
    assert!(
        wait_until(Duration::from_secs(60), || async {
            let now = task_container();
            !now.is_empty() && now != container
        })
        .await,
        "a new task replaced the killed one; the server's log:\n{}",
        server.log()
    );
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );
    assert_eq!(services(&server, "web"), placed, "the same service");

    // A constraint that is no constraint is refused before anything runs.
    let out = molt(&server, &["apps", "update", "web", "--constraint", "gpu"]);
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("ATTRIBUTE==VALUE"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn orchestrator_auto_picks_the_swarm_on_a_manager() {
    let _swarm = SwarmLease::take();
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start_with(None, &["--orchestrator", "auto"], &[]);
    assert!(
        server.log().contains("App replicas run as services"),
        "{}",
        server.log()
    );
    create_app(&server, "web", &v1, &[]);
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );
    assert_eq!(services(&server, "web").len(), 1);

    // One-off commands on a swarm: `molt run` starts a plain container on
    // this host, and removes it when the command ends, whatever its exit.
    let out = ok(molt(&server, &["run", "web", "--", "version"]));
    assert_eq!(out.stdout.trim(), "v1", "{out}");
    assert_eq!(molt(&server, &["run", "web", "--", "exit", "7"]).status, 7);
    let out = ok(molt(&server, &["exec", "web", "--", "/testapp", "version"]));
    assert_eq!(out.stdout.trim(), "v1", "{out}");
    // The exit is sent first, then the container goes.
    let instance = server.instance_id().expect("the server wrote its id");
    let instance = format!("label=molt.instance={instance}");
    let left = || {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &instance,
            "--filter",
            "label=molt.role=run",
        ])
    };
    assert!(
        wait_until(Duration::from_secs(10), || async {
            left().trim().is_empty()
        })
        .await,
        "one-off containers left behind: {}",
        left()
    );
}

/// The rolling strategy on a swarm: three replicas replaced one at a time,
/// then a variable applied and a restart, each under load with no failed
/// request; a deploy canceled while its first replica starts leaves no
/// service behind and the serving three untouched.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_swarm_rolling_deploys_env_restart_and_cancel_lose_no_request() {
    let _swarm = SwarmLease::take();
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let slow = push(&registry, "testapp", "slowstart", "slowstart");
    let server = swarm_server();
    create_app(
        &server,
        "web",
        &v1,
        &[
            "--health-path",
            "/healthz",
            "--health-timeout",
            "20",
            "--replicas",
            "3",
            "--strategy",
            "rolling",
            "--drain-timeout",
            "2",
        ],
    );
    let first = replica_services(&server, "web");
    let replicas: Vec<&str> = first.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(replicas, ["0", "1", "2"], "{first:?}");

    // A rolling deploy: each replica moves on its own, nothing fails, and
    // three new services serve.
    let out = under_load(&server, &["deploy", "web", &v2], "rolling deploy").await;
    assert_eq!(out.status, 0, "{out}");
    let rolled = newest_deploy(&server, "web");
    let t = timeline(&server, "web", &rolled);
    assert!(t.contains("rolling 3 replicas one at a time"), "{t}");
    for r in 0..3 {
        assert!(t.contains(&format!("replica {r}: traffic moved")), "{t}");
    }
    let second = replica_services(&server, "web");
    assert_eq!(second.len(), 3, "{second:?}");
    assert!(
        second.iter().all(|s| s.1 == rolled["id"].as_str().unwrap()),
        "only the new deploy's services are left: {second:?}"
    );
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v2"
    );

    // `env set --apply` is a config deploy with new services.
    let out = under_load(
        &server,
        &["env", "set", "web", "SIZE=xl", "--apply"],
        "env set --apply",
    )
    .await;
    assert_eq!(out.status, 0, "{out}");
    let config = newest_deploy(&server, "web");
    assert_eq!(config["kind"], "config", "{config}");
    assert_eq!(
        get(server.proxy_addr(), "web.localhost", "/env/SIZE")
            .await
            .unwrap(),
        (200, "xl".to_string())
    );
    let third = replica_services(&server, "web");
    assert_eq!(third.len(), 3, "{third:?}");
    assert!(third.iter().all(|s| !second.contains(s)), "{third:?}");

    // `molt restart`: fresh services of the same digest.
    let out = under_load(&server, &["restart", "web"], "restart").await;
    assert_eq!(out.status, 0, "{out}");
    let restarted = newest_deploy(&server, "web");
    assert_eq!(restarted["kind"], "restart", "{restarted}");
    assert_eq!(restarted["digest"], config["digest"], "{restarted}");
    let fourth = replica_services(&server, "web");
    assert_eq!(fourth.len(), 3, "{fourth:?}");
    assert!(fourth.iter().all(|s| !third.contains(s)), "{fourth:?}");

    // A deploy canceled while its first replica starts (it waits 8 s
    // before it listens): its service goes, the serving three stay.
    ok(molt(
        &server,
        &["env", "set", "web", "STARTUP_DELAY_MS=8000"],
    ));
    let load = Load::start(server.proxy_addr(), "web.localhost", 4);
    let out = ok(molt(&server, &["deploy", "web", &slow, "--detach"]));
    assert!(out.stdout.contains("Started deploy"), "{out}");
    let canceled = newest_deploy(&server, "web")["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        wait_until(Duration::from_secs(60), || async {
            replica_services(&server, "web")
                .iter()
                .any(|s| s.1 == canceled)
        })
        .await,
        "the deploy started a service"
    );
    ok(molt(&server, &["cancel", "web"]));
    let ended = wait_for(Duration::from_secs(60), || async {
        let d = molt(&server, &["deploys", "show", "web", &canceled, "--json"]).json();
        ["failed", "succeeded", "canceled"]
            .contains(&d["status"].as_str().unwrap_or_default())
            .then_some(d)
    })
    .await
    .expect("the canceled deploy ended");
    assert_eq!(ended["status"], "canceled", "{ended}");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            replica_services(&server, "web") == fourth
        })
        .await,
        "no service of the canceled deploy is left: {:?}",
        replica_services(&server, "web")
    );
    let report = load.finish().await;
    eprintln!("cancel: {report}");
    assert_eq!(report.failed, 0, "cancel: {:?}", report.errors);
    assert_eq!(report.bodies.keys().collect::<Vec<_>>(), ["testapp v2"]);
}

/// Settings changes and the recreate strategy on a swarm, all under one
/// load whose requests may be held: a change that needs new services swaps
/// them in; one whose new services never pass their health check changes
/// nothing and names the setting; a recreate stops the old service before
/// the new one starts while the proxy holds the requests, and brings the
/// old one back when the new version crashes. No request fails.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_swarm_settings_changes_and_held_recreates_lose_no_request() {
    let _swarm = SwarmLease::take();
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let crash = push(&registry, "testapp", "crash", "crash");
    let server = swarm_server();
    create_app(
        &server,
        "web",
        &v1,
        &["--health-path", "/healthz", "--drain-timeout", "2"],
    );
    let load = Load::start_bounded(
        server.proxy_addr(),
        "web.localhost",
        4,
        Duration::from_secs(120),
        Duration::from_secs(150),
    );
    assert!(wait_until(Duration::from_secs(10), || async { load.ok() > 20 }).await);

    // A new health path and port: a config deploy with a new service.
    let before = services(&server, "web");
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
    assert_eq!(show["last_deploy"]["kind"], "config", "{show}");
    let changed = services(&server, "web");
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_ne!(changed, before);

    // The App now listens on 9090 whatever its port: a new port fails its
    // health check, the serving service stays, and the error names it.
    ok(molt(&server, &["env", "set", "web", "LISTEN_PORT=9090"]));
    let out = molt(
        &server,
        &[
            "apps",
            "update",
            "web",
            "--port",
            "9191",
            "--health-timeout",
            "3",
        ],
    );
    assert_eq!(out.status, 1, "{out}");
    assert!(out.stderr.contains("new port 9191"), "{out}");
    // (The engine's DNS resolver may hold a port of its own in the task.)
    assert!(
        out.stderr.contains("listens on port 9090") || out.stderr.contains("listens on ports 9090"),
        "{out}"
    );
    let show = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert_eq!(show["port"], 9090, "{show}");
    assert_eq!(show["health"]["deploy_timeout_secs"], 60, "{show}");
    assert_eq!(services(&server, "web"), changed);
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );
    ok(molt(&server, &["env", "unset", "web", "LISTEN_PORT"]));

    // The recreate strategy: two visible phases, requests held meanwhile.
    ok(molt(
        &server,
        &["apps", "update", "web", "--strategy", "recreate"],
    ));
    assert_eq!(services(&server, "web"), changed, "a route-only change");
    let out = molt(&server, &["deploy", "web", &v2]);
    assert_eq!(out.status, 0, "{out}");
    assert!(
        out.stdout
            .contains("phase 1 of 2: stopping the old deployment"),
        "{out}"
    );
    assert!(
        out.stdout.contains("phase 2 of 2: deploying the new one"),
        "{out}"
    );
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v2"
    );
    let recreated = services(&server, "web");
    assert_eq!(recreated.len(), 1, "{recreated:?}");

    // The new version crashes: the old service runs again and serves the
    // held requests.
    let out = molt(&server, &["deploy", "web", &crash]);
    assert_eq!(out.status, 1, "{out}");
    assert!(out.stderr.contains("exited with code 3"), "{out}");
    assert!(
        out.stdout.contains("again; it serves the held requests"),
        "{out}"
    );
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v2"
    );
    assert_eq!(services(&server, "web"), recreated, "the same service");

    let report = load.finish().await;
    eprintln!("settings and recreates: {report}");
    assert!(report.ok > 50, "the load ran ({})", report.ok);
    assert_eq!(report.failed, 0, "failed requests: {:?}", report.errors);
}

/// The reconciler on a swarm, under load: a replica whose task is killed
/// runs again (a new task of the same service) and rejoins the route; one
/// that fails its health checks for good is replaced by autoheal, the
/// others untouched; a restarted server adopts the services that run and
/// removes one it does not know.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_swarm_lost_and_sick_replicas_come_back_and_a_restarted_server_adopts_them() {
    let _swarm = SwarmLease::take();
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let mut server = MoltServer::start_with(
        None,
        &[
            "--orchestrator",
            "swarm",
            "--autoheal-grace",
            "1s",
            "--autoheal-interval",
            "1s",
            "--autoheal-threshold",
            "8",
        ],
        &[],
    );
    // Each task listens 3 s after it starts: long enough that one routed
    // before it listens would fail requests (the engine's port proxy
    // accepts them and drops them).
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
            "2",
            "--env",
            "STARTUP_DELAY_MS=3000",
        ],
    );
    let first = replica_services(&server, "web");
    assert_eq!(first.len(), 3, "{first:?}");
    let in_rotation = |replica: u64| {
        shown_replicas(&server, "web")
            .into_iter()
            .find(|c| c.0 == replica)
            .map(|c| c.2)
    };

    // Replica 1's task is killed: the same service runs a new task, which
    // rejoins the route once its health check passes; only a request in
    // flight on the killed task may fail (4 connections send).
    let load = Load::start(server.proxy_addr(), "web.localhost", 4);
    assert!(wait_until(Duration::from_secs(10), || async { load.ok() > 20 }).await);
    let service = first[1].2.clone();
    let killed = task_container(&service);
    assert!(!killed.is_empty(), "replica 1 runs a task here");
    docker(&["kill", &killed]);
    let failed_at_kill = load.failed();
    let started_again = wait_until(Duration::from_secs(60), || async {
        let now = task_container(&service);
        !now.is_empty() && now != killed
    })
    .await;
    eprintln!(
        "a killed task: {failed_at_kill} failed at the kill, {} once a new task runs",
        load.failed()
    );
    assert!(
        started_again
            && wait_until(Duration::from_secs(30), || async {
                in_rotation(1) == Some(true)
            })
            .await,
        "a new task of replica 1 rejoined the route; the server's log:\n{}",
        server.log()
    );
    assert_eq!(replica_services(&server, "web"), first, "the same services");
    assert_eq!(deploy_count(&server, "web"), 1, "started again, no deploy");
    let report = load.finish().await;
    eprintln!("a killed task: {report}");
    assert!(
        report.failed <= 4,
        "{} requests failed: {:?}",
        report.failed,
        report.errors
    );

    // Replica 2 turns sick for good: out of rotation, then replaced by
    // autoheal with a new service, the others kept; nothing fails.
    let sick = task_container(&first[2].2);
    let published = docker(&["port", &sick, "8080/tcp"]);
    let port: u16 = published
        .lines()
        .find_map(|l| l.strip_prefix("0.0.0.0:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("replica 2's published port: {published}"));
    let load = Load::start(server.proxy_addr(), "web.localhost", 4);
    let r = http_request(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "GET",
        "web.localhost",
        "/health/set?status=500",
        &[],
        &[],
        Duration::from_secs(5),
    )
    .expect("the task answers at its published port");
    assert_eq!(r.status, 200);
    let healed = wait_for(Duration::from_secs(60), || async {
        let d = newest_deploy(&server, "web");
        (d["triggered_by"] == "autoheal" && d["status"] == "succeeded").then_some(d)
    })
    .await
    .expect("no autoheal replacement within 60 s");
    let report = load.finish().await;
    eprintln!("a sick replica: {report}");
    assert_eq!(report.failed, 0, "failed requests: {:?}", report.errors);
    let t = timeline(&server, "web", &healed);
    assert!(t.contains("replacing replica 2"), "{t}");
    assert!(t.contains("failed 8 consecutive health checks"), "{t}");
    let healed_services = replica_services(&server, "web");
    assert_eq!(healed_services.len(), 3, "{healed_services:?}");
    assert_eq!(healed_services[..2], first[..2], "the others were kept");
    assert_ne!(healed_services[2], first[2], "replica 2 has a new service");
    assert!(
        shown_replicas(&server, "web").iter().all(|c| c.2),
        "all in rotation"
    );

    // The server is killed; meanwhile a service of its instance appears that
    // it never made. Restarted, it adopts what runs and removes the stranger,
    // while the proxy serves throughout.
    let load = Load::start(server.proxy_addr(), "web.localhost", 4);
    assert!(wait_until(Duration::from_secs(10), || async { load.ok() > 20 }).await);
    let deploys = deploy_count(&server, "web");
    server.kill();
    let instance = server.instance_id().expect("the server wrote its id");
    docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        &format!("molt-test-stranger-{instance}"),
        "--label",
        &format!("molt.instance={instance}"),
        "--label",
        "molt.app=web",
        "--label",
        "molt.deploy=d-unknown",
        "--label",
        "molt.replica=0",
        "--restart-condition",
        "none",
        "--container-label",
        "molt-test=1",
        &v1,
    ]);
    assert_eq!(services(&server, "web").len(), 4);
    server.restart();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            replica_services(&server, "web") == healed_services
        })
        .await,
        "the stranger is removed and the known services kept: {:?}",
        replica_services(&server, "web")
    );
    let report = load.finish().await;
    eprintln!("a restarted server: {report}");
    assert_eq!(report.failed, 0, "failed requests: {:?}", report.errors);
    assert_eq!(deploy_count(&server, "web"), deploys, "nothing redeployed");
    let view = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(view["status"], "running", "{view}");
    assert!(shown_replicas(&server, "web").iter().all(|c| c.2), "{view}");
}
