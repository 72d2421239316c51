//! The spine of Molt against a real engine and a password-protected
//! registry: credentials, create, blue-green deploys, and failed deploys that
//! change nothing for the App's users.

mod support;

use support::*;

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
    assert!(molt(&server, &["apps", "list", "--json"])
        .json()
        .as_array()
        .unwrap()
        .is_empty());

    // A wrong password is refused with the registry's reason.
    let out = add_registry(&server, &registry, b"not-the-password\n");
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("refused"), "{out}");
    assert!(out.stderr.contains("401"), "{out}");

    let out = add_registry(
        &server,
        &registry,
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
    create_app(
        &server,
        "web",
        &v1,
        &["--health-path", "/healthz", "--health-timeout", "8"],
    );
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );

    // A blue-green deploy: the new version serves and exactly one container runs.
    let out = molt(&server, &["deploy", "web", &v2]);
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v2"
    );
    assert_eq!(
        server.containers(Some("web")).len(),
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
        (
            &missing,
            &[
                "not found",
                "manifest unknown",
                "check the repository and tag",
            ],
        ),
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
            served(server.proxy_addr(), "web.localhost").await,
            "testapp v2",
            "after {image}"
        );
        assert_eq!(
            server.containers(Some("web")).len(),
            1,
            "the failed container is removed ({image})"
        );
    }

    // The record: newest first, with the contract's fields.
    let deploys = molt(&server, &["deploys", "web", "--json"]).json();
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

    let app = molt(&server, &["apps", "show", "web", "--json"]).json();
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
    assert!(server.containers(Some("web")).is_empty());
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
    let out = add_registry(&server, &registry, registry.password().as_bytes());
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
    let apps = molt(&server, &["apps", "list", "--json"]).json();
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
    create_app(
        &server,
        "tcp",
        &v1,
        &["--domain", "tcp.example.test", "--upstream-timeout", "1"],
    );
    let id = newest_deploy(&server, "tcp")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = molt(&server, &["deploys", "show", "tcp", &id]);
    assert!(out.stdout.contains("TCP connect to port 8080"), "{out}");
    assert_eq!(
        served(server.proxy_addr(), "tcp.localhost").await,
        "testapp v1"
    );
    assert_eq!(
        served(server.proxy_addr(), "TCP.example.test:8080").await,
        "testapp v1"
    );
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
    assert_eq!(
        served(server.proxy_addr(), "tcp.localhost").await,
        "testapp v2"
    );
}

/// A script that deploys again the moment the previous deploy ended (seen
/// through the API) is never refused: the server settles the App before it
/// records the end.
#[tokio::test(flavor = "multi_thread")]
async fn back_to_back_deploys_through_the_api_are_never_refused() {
    let registry = Registry::start(false);
    let images = [
        push(&registry, "testapp", "v1", "v1"),
        push(&registry, "testapp", "v2", "v2"),
    ];
    let server = MoltServer::start(None);
    create_app(&server, "web", &images[0], &["--health-path", "/healthz"]);
    let client = proxy_client(std::time::Duration::from_secs(30));
    let base = format!("{}/api/v1/apps/web/deploys", server.api_url());
    for round in 0..8 {
        let resp = client
            .post(&base)
            .bearer_auth(server.token())
            .json(&serde_json::json!({ "image": images[(round + 1) % 2] }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let started: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(status, 202, "round {round}: {started}");
        let id = started["deploy"]["id"].as_str().unwrap().to_string();
        let ended = wait_for(std::time::Duration::from_secs(60), || async {
            let d: serde_json::Value = client
                .get(format!("{base}/{id}"))
                .bearer_auth(server.token())
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (d["status"] == "succeeded" || d["status"] == "failed").then_some(d)
        })
        .await
        .expect("the deploy ended");
        assert_eq!(ended["status"], "succeeded", "round {round}: {ended}");
    }
}
