//! The spine of Molt against a real engine and a password-protected
//! registry: credentials, create, blue-green deploys, and failed deploys that
//! change nothing for the App's users.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::*;

fn json(out: &CliOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// Containers of an App, by label.
fn app_containers(server: &MoltServer, app: &str) -> Vec<String> {
    let instance = server
        .instance_id()
        .expect("the server wrote its instance id");
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=molt.instance={instance}"),
        "--filter",
        &format!("label=molt.app={app}"),
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

async fn body(server: &MoltServer, host: &str) -> String {
    match get(server.proxy_addr(), host, "/").await {
        Ok((200, body)) => body.trim().to_string(),
        Ok((status, body)) => format!("HTTP {status}: {body}"),
        Err(e) => format!("error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn private_images_deploy_and_failed_deploys_leave_the_old_version_serving() {
    let registry = Registry::start(true);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let crash = push(&registry, "testapp", "crash", "crash");
    let unhealthy = push(&registry, "testapp", "unhealthy", "unhealthy");
    let otherport = push(&registry, "testapp", "otherport", "otherport");
    let server = MoltServer::start(None);
    let host = registry.host();

    // Without a credential the preflight names what is missing, and no App
    // is left behind.
    let out = molt(
        &server,
        &["apps", "create", "web", "--image", &v1, "--port", "8080"],
    );
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("needs a login"), "{out}");
    assert!(json(&molt(&server, &["apps", "list", "--json"]))
        .as_array()
        .unwrap()
        .is_empty());

    // A wrong password is refused with the registry's reason.
    let out = molt_input(
        &server,
        &[
            "registries",
            "add",
            &host,
            "--username",
            registry.username(),
            "--password-stdin",
        ],
        b"not-the-password\n",
    );
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("refused"), "{out}");
    assert!(out.stderr.contains("401"), "{out}");

    let out = molt_input(
        &server,
        &[
            "registries",
            "add",
            &host,
            "--username",
            registry.username(),
            "--password-stdin",
        ],
        format!("{}\n", registry.password()).as_bytes(),
    );
    assert_eq!(out.status, 0, "{out}");
    let listed = molt(&server, &["registries", "list", "--json"]);
    assert!(listed.stdout.contains(&host), "{listed}");
    assert!(
        !listed.stdout.contains(registry.password()),
        "the secret must never be shown"
    );
    let db = std::fs::read(server.data_dir().join("molt.db")).unwrap();
    let wal = std::fs::read(server.data_dir().join("molt.db-wal")).unwrap_or_default();
    let needle = registry.password().as_bytes();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the secret is stored in plain text"
        );
    }

    // Create: the first deploy, health-checked over HTTP.
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
            "--health-timeout",
            "8",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(body(&server, "web.localhost").await, "testapp v1");

    // A blue-green deploy: the new version serves and exactly one container runs.
    let out = molt(&server, &["deploy", "web", &v2]);
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(body(&server, "web.localhost").await, "testapp v2");
    assert_eq!(
        app_containers(&server, "web").len(),
        1,
        "exactly one container after a swap"
    );

    // Each failing image fails its deploy with a specific error while v2 keeps answering.
    let missing = format!("{host}/testapp:missing");
    let cases: [(&str, &[&str]); 4] = [
        (&crash, &["exited with code 3", "simulated crash"]),
        (
            &unhealthy,
            &[
                "did not become healthy within 8 s",
                "GET /healthz answered 500",
            ],
        ),
        (&missing, &["not found", "manifest unknown"]),
        (
            &otherport,
            &["did not become healthy", "connection refused"],
        ),
    ];
    for (image, expected) in cases {
        let out = molt(&server, &["deploy", "web", image]);
        assert_eq!(out.status, 1, "{image}: {out}");
        for e in expected {
            assert!(out.stderr.contains(e), "{image}: expected `{e}` in\n{out}");
        }
        assert_eq!(
            body(&server, "web.localhost").await,
            "testapp v2",
            "after {image}"
        );
        assert_eq!(
            app_containers(&server, "web").len(),
            1,
            "the failed container is removed ({image})"
        );
    }

    // The record: newest first, with the contract's fields.
    let deploys = json(&molt(&server, &["deploys", "web", "--json"]));
    let deploys = deploys.as_array().unwrap();
    assert_eq!(deploys.len(), 6);
    for field in [
        "id",
        "kind",
        "image",
        "digest",
        "status",
        "error",
        "created_at",
        "finished_at",
    ] {
        assert!(deploys[0].get(field).is_some(), "deploys lack `{field}`");
    }
    assert_eq!(deploys[0]["status"], "failed");
    assert_eq!(deploys[4]["status"], "succeeded");
    assert_eq!(deploys[5]["kind"], "create");
    let id = deploys[2]["id"].as_str().unwrap(); // the unhealthy one
    let shown = molt(&server, &["deploys", "show", "web", id]);
    assert!(
        shown.stdout.contains("GET /healthz answered 500"),
        "{shown}"
    );

    let app = json(&molt(&server, &["apps", "show", "web", "--json"]));
    assert_eq!(app["status"], "running");
    assert_eq!(app["image"], v2.as_str());
    assert_eq!(app["digest"], deploys[4]["digest"]);
    assert_eq!(app["port"], 8080);
    assert_eq!(app["health_path"], "/healthz");
    assert_eq!(app["replicas"], 1);
    assert_eq!(app["domains"][0], "web.localhost");

    // Delete leaves no container and no route.
    let out = molt(&server, &["apps", "delete", "web", "--yes"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(app_containers(&server, "web").is_empty());
    let (status, _) = get(server.proxy_addr(), "web.localhost", "/")
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_refuses_bad_input_and_leaves_no_app() {
    let registry = Registry::start(true);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let index = push_index_without_amd64(&registry, "testapp", "armonly");
    let server = MoltServer::start(None);
    let out = molt_input(
        &server,
        &[
            "registries",
            "add",
            &registry.host(),
            "--username",
            registry.username(),
            "--password-stdin",
        ],
        registry.password().as_bytes(),
    );
    assert_eq!(out.status, 0, "{out}");
    let dead_registry = format!("127.0.0.1:{}/testapp:v1", free_port());
    let missing_tag = format!("{}/testapp:nope", registry.host());
    let missing_repo = format!("{}/nothing:v1", registry.host());

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["Web", "--image", &v1, "--port", "8080"],
            "must start with a lowercase letter",
        ),
        (
            vec!["we_b", "--image", &v1, "--port", "8080"],
            "contains `_`",
        ),
        (
            vec!["web", "--image", "Bad Ref", "--port", "8080"],
            "not a valid image reference",
        ),
        (
            vec!["web", "--image", &dead_registry, "--port", "8080"],
            "did not answer",
        ),
        (
            vec!["web", "--image", &missing_tag, "--port", "8080"],
            "not found",
        ),
        (
            vec!["web", "--image", &missing_repo, "--port", "8080"],
            "not found",
        ),
        (
            vec!["web", "--image", &index, "--port", "8080"],
            "linux/arm64",
        ),
        (
            vec![
                "web",
                "--image",
                &v1,
                "--port",
                "8080",
                "--health-path",
                "healthz",
            ],
            "must start with `/`",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["apps", "create"];
        full.extend(args.iter());
        let out = molt(&server, &full);
        assert_eq!(out.status, 2, "{full:?}: {out}");
        assert!(
            out.stderr.contains(expected),
            "{full:?}: expected `{expected}` in\n{out}"
        );
    }
    let apps = json(&molt(&server, &["apps", "list", "--json"]));
    assert!(
        apps.as_array().unwrap().is_empty(),
        "no App may be left behind: {apps}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn public_images_deploy_without_credentials_and_tcp_checks_work() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "public/testapp", "v1", "v1");
    let v2 = push(&registry, "public/testapp", "v2", "v2");
    let server = MoltServer::start(None);
    // No health path: the check is a TCP connect.
    let out = molt(
        &server,
        &[
            "apps",
            "create",
            "tcp",
            "--image",
            &v1,
            "--port",
            "8080",
            "--domain",
            "tcp.example.test",
            "--upstream-timeout",
            "1",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    let out = molt(
        &server,
        &["deploys", "show", "tcp", &deploy_id(&server, "tcp", 0)],
    );
    assert!(out.stdout.contains("TCP connect to port 8080"), "{out}");
    assert_eq!(body(&server, "tcp.localhost").await, "testapp v1");
    assert_eq!(body(&server, "TCP.example.test:8080").await, "testapp v1");
    let (status, _) = get(server.proxy_addr(), "unknown.localhost", "/")
        .await
        .unwrap();
    assert_eq!(status, 404);
    // The App's upstream timeout: a slower answer is a 504 that says so.
    let (status, answer) = get(server.proxy_addr(), "tcp.localhost", "/slow?ms=2500")
        .await
        .unwrap();
    assert_eq!(status, 504, "{answer}");

    let out = molt(&server, &["deploy", "tcp", &v2]);
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(body(&server, "tcp.localhost").await, "testapp v2");
    let _ = Duration::ZERO;
}

/// The id of an App's deploy, `n` from the newest.
fn deploy_id(server: &MoltServer, app: &str, n: usize) -> String {
    let deploys = json(&molt(server, &["deploys", app, "--json"]));
    deploys[n]["id"].as_str().unwrap().to_string()
}
