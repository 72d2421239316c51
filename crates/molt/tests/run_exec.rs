//! `molt run` and `molt exec` against a real engine and a registry with a
//! password: the App's environment and secrets inside a one-off container,
//! exit codes, stdin, an earlier deploy's version while a newer one serves,
//! a command in the serving container, bad input, and no one-off container
//! left after a normal end, a timeout, a client that leaves, or a server
//! killed mid-run, while the App keeps answering.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// The one-off containers of this installation (label `molt.role=run`).
fn run_containers(server: &MoltServer) -> Vec<String> {
    let instance = server.instance_id().expect("instance id");
    docker(&[
        "ps",
        "--all",
        "--quiet",
        "--no-trunc",
        "--filter",
        &format!("label=molt.instance={instance}"),
        "--filter",
        "label=molt.role=run",
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// `molt ARGS` as a child that the test ends itself.
fn spawn_molt(server: &MoltServer, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_molt"))
        .args(args)
        .env_remove("MOLT_DATA_DIR")
        .env("MOLT_SERVER", server.api_url())
        .env("MOLT_TOKEN", server.token())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn molt")
}

async fn runs(server: &MoltServer, app: &str) -> serde_json::Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
        .get(format!("{}/api/v1/apps/{app}/runs", server.api_url()))
        .bearer_auth(server.token())
        .send()
        .await
        .expect("GET runs")
        .json()
        .await
        .expect("runs JSON")
}

/// Waits until a one-off container runs, then until none is left after
/// `end` (which ends the run some way).
async fn gone_after(server: &MoltServer, what: &str, end: impl FnOnce()) {
    assert!(
        wait_until(Duration::from_secs(30), || async {
            run_containers(server).len() == 1
        })
        .await,
        "{what}: no one-off container started"
    );
    end();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            run_containers(server).is_empty()
        })
        .await,
        "{what}: a one-off container was left: {:?}\n{}",
        run_containers(server),
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_and_exec_against_the_real_engine() {
    let registry = Registry::start(true);
    let v1 = push(&registry, "runapp", "v1", "v1");
    let v2 = push(&registry, "runapp", "v2", "v2");
    let mut server = MoltServer::start(None);
    ok(add_registry(
        &server,
        &registry,
        registry.password().as_bytes(),
    ));
    create_app(&server, "web", &v1, &["--env", "GREETING=hello"]);
    let secret = "s3cr3t-run-4b9d";
    ok(molt(
        &server,
        &[
            "env",
            "set",
            "web",
            &format!("API_TOKEN={secret}"),
            "--secret",
            "--apply",
        ],
    ));
    let first = newest_deploy(&server, "web")["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The serving App is asked all along; every answer must be a 200.
    let stop = Arc::new(AtomicBool::new(false));
    let (asked, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let watcher = {
        let (stop, asked, failed) = (stop.clone(), asked.clone(), failed.clone());
        let proxy = server.proxy_addr();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(proxy, "web.localhost", "/").await {
                    Ok((200, _)) => {}
                    other => {
                        eprintln!("the App did not answer: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                asked.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // The App's variables and its secret, opened only inside the container.
    let out = ok(molt(
        &server,
        &["run", "web", "--", "env", "GREETING", "API_TOKEN", "PORT"],
    ));
    assert!(out.stdout.contains("GREETING=hello\n"), "{out}");
    assert!(
        out.stdout.contains(&format!("API_TOKEN={secret}\n")),
        "{out}"
    );
    assert!(out.stdout.contains("PORT=8080\n"), "{out}");
    let out = ok(molt(
        &server,
        &[
            "run",
            "web",
            "--env",
            "EXTRA=1",
            "--env",
            "GREETING=hi",
            "--",
            "env",
            "EXTRA",
            "GREETING",
        ],
    ));
    assert_eq!(out.stdout, "EXTRA=1\nGREETING=hi\n", "{out}");
    assert!(
        run_containers(&server).is_empty(),
        "removed after a normal end"
    );

    // Exit codes pass through; stdin is piped with -i.
    assert_eq!(molt(&server, &["run", "web", "--", "exit", "7"]).status, 7);
    let out = molt_input(
        &server,
        &["run", "web", "-i", "--", "cat"],
        b"piped in\nline 2\n",
    );
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "piped in\nline 2\n"),
        "{out}"
    );

    // A newer version serves; a run of the first deploy sees its version.
    ok(molt(&server, &["deploy", "web", &v2]));
    assert_eq!(
        get(server.proxy_addr(), "web.localhost", "/")
            .await
            .unwrap()
            .1,
        "testapp v2\n"
    );
    let out = ok(molt(
        &server,
        &["run", "web", "--release", &first, "--", "version"],
    ));
    assert_eq!(out.stdout, "v1\n", "{out}");
    let out = ok(molt(&server, &["run", "web", "--", "version"]));
    assert_eq!(out.stdout, "v2\n", "{out}");
    let out = ok(molt(
        &server,
        &["run", "web", "--image", &v1, "--", "version"],
    ));
    assert_eq!(out.stdout, "v1\n", "{out}");

    // An image no longer on the host is pulled again with the credential.
    let pinned = format!(
        "{}@{}",
        v1.rsplit_once(':').unwrap().0,
        molt(&server, &["deploys", "web", "--json"])
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == first.as_str())
            .unwrap()["digest"]
            .as_str()
            .unwrap()
    );
    for r in [&pinned, &v1] {
        try_docker(None, &["rmi", r], None);
    }
    assert!(!try_docker(None, &["image", "inspect", &pinned], None)
        .status
        .success());
    let out = ok(molt(
        &server,
        &["run", "web", "--release", &first, "--", "version"],
    ));
    assert_eq!(out.stdout, "v1\n", "{out}");
    // It is back on the host: the run pulled it, with the App's credential
    // (the registry wants one).
    assert!(try_docker(None, &["image", "inspect", &pinned], None)
        .status
        .success());

    // exec reaches the serving container (the command is not the
    // entrypoint's arguments there: it is run as given).
    let out = ok(molt(&server, &["exec", "web", "--", "/testapp", "version"]));
    assert_eq!(out.stdout, "v2\n", "{out}");
    let out = ok(molt(
        &server,
        &["exec", "web", "--", "/testapp", "env", "GREETING"],
    ));
    assert_eq!(out.stdout, "GREETING=hello\n", "{out}");
    assert_eq!(
        molt(&server, &["exec", "web", "--", "/testapp", "exit", "3"]).status,
        3
    );
    let out = molt_input(
        &server,
        &["exec", "web", "-i", "--", "/testapp", "cat"],
        b"to exec\n",
    );
    assert_eq!((out.status, out.stdout.as_str()), (0, "to exec\n"), "{out}");

    // Bad input is refused, each with what to do.
    let out = molt(&server, &["run", "nope", "--", "version"]);
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("no App named `nope`"), "{out}");
    let out = molt(
        &server,
        &["run", "web", "--release", "nope", "--", "version"],
    );
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("no deploy `nope`"), "{out}");
    let out = molt(&server, &["run", "web"]);
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("no command given"), "{out}");
    let out = molt(&server, &["exec", "web", "--replica", "4", "--", "version"]);
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("no replica 4"), "{out}");

    // --timeout kills the command: exit 124, said plainly.
    let out = molt(
        &server,
        &["run", "web", "--timeout", "1", "--", "sleep", "60000"],
    );
    assert_eq!(out.status, 124, "{out}");
    assert!(
        out.stderr.contains("ran past --timeout 1 s and was killed"),
        "{out}"
    );
    assert!(
        run_containers(&server).is_empty(),
        "removed after a timeout"
    );

    // A client that leaves takes its container with it.
    let mut child = spawn_molt(&server, &["run", "web", "--", "sleep", "60000"]);
    gone_after(&server, "client gone", || {
        let _ = child.kill();
        let _ = child.wait();
    })
    .await;

    // A server killed mid-run: the restarted one removes the container and
    // ends the record.
    let mut child = spawn_molt(&server, &["run", "web", "--", "sleep", "60000"]);
    assert!(
        wait_until(Duration::from_secs(30), || async {
            run_containers(&server).len() == 1
        })
        .await,
        "no one-off container started"
    );
    server.kill();
    let _ = child.kill();
    let _ = child.wait();
    server.restart();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            run_containers(&server).is_empty()
        })
        .await,
        "the restarted server left a one-off container: {:?}",
        run_containers(&server)
    );
    // The App's replica is no one-off container and still serves.
    assert_eq!(server.containers(Some("web")).len(), 1);
    assert_eq!(
        get(server.proxy_addr(), "web.localhost", "/")
            .await
            .unwrap()
            .1,
        "testapp v2\n"
    );

    // Each run is recorded: who, what, exit code, duration; not its output.
    let runs = runs(&server, "web").await;
    let runs = runs.as_array().expect("an array of runs");
    let seven = runs
        .iter()
        .find(|r| r["command"] == serde_json::json!(["exit", "7"]))
        .expect("the exit 7 run");
    assert_eq!(seven["exit_code"], 7);
    assert_eq!(seven["triggered_by"], "cli");
    assert!(seven["duration_ms"].is_u64());
    let timed_out = runs
        .iter()
        .find(|r| r["command"] == serde_json::json!(["sleep", "60000"]))
        .expect("a sleep run");
    assert!(timed_out["finished_at"].is_string());
    assert!(
        runs.iter().all(|r| r["finished_at"].is_string()),
        "{runs:?}"
    );
    assert!(
        runs.iter().any(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.contains("server stopped"))),
        "{runs:?}"
    );
    assert!(!serde_json::to_string(runs).unwrap().contains(secret));
    // `molt runs` shows the same records.
    let listed = ok(molt(&server, &["runs", "web"]));
    assert!(listed.stdout.contains("exit 7"), "{listed}");
    let listed = molt(&server, &["runs", "web", "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), runs.len(), "{listed}");
    // Runs are not deploys: the history holds only the deploys.
    let deploys = molt(&server, &["deploys", "web", "--json"]).json();
    assert_eq!(deploys.as_array().unwrap().len(), 3, "{deploys}");

    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    assert!(asked.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "the App stopped answering"
    );
}
