//! Molt on a real single-node Docker Swarm (`molt server --orchestrator
//! swarm`): each replica is a service, Swarm places its task, and Molt's
//! proxy reaches the task at the port it publishes in host mode. Deploys,
//! scaling and rollbacks lose no request; a failing deploy (a crash, an
//! unhealthy version, a constraint no node meets) leaves the old version
//! serving and says why.
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
    let instance = server.instance_id().expect("the server wrote its id");
    let instance = format!("label=molt.instance={instance}");
    let app = format!("label=molt.app={app}");
    let short = docker(&[
        "service", "ls", "--quiet", "--filter", &instance, "--filter", &app,
    ]);
    let short: Vec<&str> = short.split_whitespace().collect();
    if short.is_empty() {
        return Vec::new();
    }
    // `service ls` shortens ids; `service inspect` gives them whole.
    let mut args = vec!["service", "inspect", "--format", "{{.ID}}"];
    args.extend(short);
    docker(&args)
        .split_whitespace()
        .map(str::to_string)
        .collect()
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
}
