//! Molt's own registry (`molt server --registry ADDR`) on the real engine:
//! Debian's docker-registry run and supervised by the server, trusting only
//! tokens the server signs. A push target's credential pushes to its App's
//! repository and nowhere else, stops working when it expires, and the
//! server deploys what was pushed with a credential of its own.

mod support;

use std::time::Duration;
use support::*;

/// `POST /api/v1/apps/NAME/push-target` with the admin token.
async fn push_target(server: &MoltServer, app: &str, ttl_secs: u64) -> serde_json::Value {
    let resp = proxy_client(Duration::from_secs(10))
        .post(format!(
            "{}/api/v1/apps/{app}/push-target",
            server.api_url()
        ))
        .bearer_auth(server.token())
        .json(&serde_json::json!({ "ttl_secs": ttl_secs }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// `docker login` in a client config dir of its own; the command's output.
fn login(config: &std::path::Path, target: &serde_json::Value) -> std::process::Output {
    try_docker(
        Some(config),
        &[
            "login",
            target["registry"].as_str().unwrap(),
            "--username",
            target["username"].as_str().unwrap(),
            "--password-stdin",
        ],
        Some(target["password"].as_str().unwrap().as_bytes()),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn external_pushes_reach_only_their_app_and_expire() {
    let source = Registry::start(false);
    let v1 = push(&source, "testapp", "v1", "v1");
    let registry_port = free_port();
    let registry_addr = format!("127.0.0.1:{registry_port}");
    let mut server = MoltServer::start_with(None, &["--registry", &registry_addr], &[]);
    create_app(&server, "web", &v1, &["--health-path", "/healthz"]);
    create_app(&server, "other", &v1, &[]);

    // Without a credential the registry refuses, and sends clients to Molt.
    let status = proxy_client(Duration::from_secs(10))
        .get(format!("http://{registry_addr}/v2/"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    // A registry with nothing in it yet has no garbage, and no warning.
    assert!(
        !server.log().contains("garbage collection failed"),
        "{}",
        server.log()
    );

    // A push target: login, tag, push.
    let target = push_target(&server, "web", 900).await;
    assert_eq!(target["registry"], registry_addr.as_str());
    assert_eq!(target["repository"], format!("{registry_addr}/web"));
    let config = tempfile::tempdir().unwrap();
    let out = login(config.path(), &target);
    assert!(
        out.status.success(),
        "login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = format!("{registry_addr}/web:build-1");
    docker(&["tag", &TestImages::image("v2"), &built]);
    let out = try_docker(Some(config.path()), &["push", &built], None);
    assert!(
        out.status.success(),
        "push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = try_docker(None, &["rmi", &built], None);

    // The same credential cannot push to another App's repository.
    let elsewhere = format!("{registry_addr}/other:build-1");
    docker(&["tag", &TestImages::image("v2"), &elsewhere]);
    let out = try_docker(Some(config.path()), &["push", &elsewhere], None);
    let _ = try_docker(None, &["rmi", &elsewhere], None);
    assert!(!out.status.success(), "pushed to another App's repository");

    // The server deploys it, pulling with a credential of its own.
    let load = Load::start(server.proxy_addr(), "web.localhost", 2);
    ok(molt(&server, &["deploy", "web", &built]));
    let report = load.finish().await;
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(
        get(server.proxy_addr(), "web.localhost", "/version")
            .await
            .unwrap(),
        (200, "v2".to_string())
    );

    // A credential stops working when it expires. Asked for as the docs
    // show it, `curl -d '{"ttl_secs": 1}'`: a body that no content type
    // says is JSON.
    let resp = proxy_client(Duration::from_secs(10))
        .post(format!("{}/api/v1/apps/web/push-target", server.api_url()))
        .bearer_auth(server.token())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"ttl_secs": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let short: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(short["expires_in_secs"], 1, "{short}");
    let expired = wait_until(Duration::from_secs(20), || async {
        let dir = tempfile::tempdir().unwrap();
        let out = login(dir.path(), &short);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("expired")
    })
    .await;
    assert!(expired, "the 1 s credential still logs in");

    // A registry that dies is started again; one the server leaves stops.
    let pid = std::fs::read_to_string(server.data_dir().join("registry/registry.pid"))
        .unwrap()
        .trim()
        .to_string();
    std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    let back = wait_until(Duration::from_secs(20), || async {
        let now = std::fs::read_to_string(server.data_dir().join("registry/registry.pid"))
            .unwrap_or_default();
        now.trim() != pid && std::net::TcpStream::connect(registry_addr.as_str()).is_ok()
    })
    .await;
    assert!(back, "the registry was not started again");
    server.stop();
    let gone = wait_until(Duration::from_secs(20), || async {
        std::net::TcpStream::connect(registry_addr.as_str()).is_err()
    })
    .await;
    assert!(gone, "the registry outlived the server");
}

/// `molt build --external`: built here, pushed to Molt's registry with a
/// credential issued for the build (or `--to` a registry of one's own),
/// registered as a release by digest, and promoted under load.
#[tokio::test(flavor = "multi_thread")]
async fn external_builds_push_register_and_promote() {
    let source = Registry::start(false);
    let v1 = push(&source, "testapp", "v1", "v1");
    let registry_addr = format!("127.0.0.1:{}", free_port());
    let server = MoltServer::start_with(
        None,
        &["--registry", &registry_addr, "--keep-releases", "1"],
        &[],
    );
    create_app(&server, "web", &v1, &["--health-path", "/healthz"]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}\nARG FLAVOUR\nENV VERSION=external-$FLAVOUR\n",
            TestImages::image("v1")
        ),
    )
    .unwrap();
    let dir_arg = dir.path().to_string_lossy().to_string();
    let out = ok(molt(
        &server,
        &[
            "build",
            "web",
            &dir_arg,
            "--external",
            "--build-arg",
            "FLAVOUR=one",
        ],
    ));
    assert!(out.stderr.contains("Pushing"), "{out}");
    assert!(out.stdout.contains("Registered release"), "{out}");
    let releases = ok(molt(&server, &["releases", "web", "--json"])).json();
    let release = &releases[0];
    assert!(
        release["image"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{registry_addr}/web:build-")),
        "{releases}"
    );
    assert!(
        release["build"].is_null(),
        "no build of the server's: {release}"
    );
    assert_eq!(release["serving"], false);

    let load = Load::start(server.proxy_addr(), "web.localhost", 2);
    let id = release["id"].as_str().unwrap();
    ok(molt(&server, &["releases", "promote", "web", id]));
    let report = load.finish().await;
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(
        get(server.proxy_addr(), "web.localhost", "/version")
            .await
            .unwrap(),
        (200, "external-one".to_string())
    );
    let releases = ok(molt(&server, &["releases", "web", "--json"])).json();
    assert_eq!(releases[0]["serving"], true, "{releases}");

    // --to a registry of one's own (this one needs no credential).
    let own = format!("127.0.0.1:{}/ext", source.addr().port());
    let out = ok(molt(
        &server,
        &[
            "build",
            "web",
            &dir_arg,
            "--external",
            "--to",
            &own,
            "--build-arg",
            "FLAVOUR=two",
        ],
    ));
    assert!(out.stdout.contains("Registered release"), "{out}");
    let releases = ok(molt(&server, &["releases", "web", "--json"])).json();
    let id = releases[0]["id"].as_str().unwrap().to_string();
    assert!(releases[0]["image"].as_str().unwrap().starts_with(&own));
    ok(molt(&server, &["releases", "promote", "web", &id]));
    assert_eq!(
        get(server.proxy_addr(), "web.localhost", "/version")
            .await
            .unwrap(),
        (200, "external-two".to_string())
    );

    // Retention (--keep-releases 1) counts external releases: a release
    // beyond it that never served goes, from the host and from Molt's
    // registry; the ones that served are rollback targets and stay.
    let external = |flavour: &str| {
        let out = ok(molt(
            &server,
            &[
                "build",
                "web",
                &dir_arg,
                "--external",
                "--build-arg",
                &format!("FLAVOUR={flavour}"),
            ],
        ));
        assert!(out.stdout.contains("Registered release"), "{out}");
        ok(molt(&server, &["releases", "web", "--json"])).json()[0].clone()
    };
    let unserved = external("three");
    external("four");
    let left = ok(molt(&server, &["releases", "web", "--json"])).json();
    let ids: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&unserved["id"].as_str().unwrap()), "{left}");
    assert_eq!(ids.len(), 3, "the newest and the two that served: {left}");
    let target = push_target(&server, "web", 60).await;
    let config = tempfile::tempdir().unwrap();
    assert!(login(config.path(), &target).status.success());
    let gone = format!(
        "{registry_addr}/web@{}",
        unserved["digest"].as_str().unwrap()
    );
    let out = try_docker(Some(config.path()), &["pull", &gone], None);
    assert!(!out.status.success(), "still in Molt's registry: {gone}");

    // Bad input is refused before anything runs.
    let out = molt(
        &server,
        &["build", "web", &dir_arg, "--external", "--to", "web"],
    );
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("HOST/REPO"), "{out}");
    let out = molt(&server, &["build", "web", "/nonexistent-dir", "--external"]);
    assert_eq!(out.status, 2, "{out}");

    // A push that fails says what to check and leaves no local tag.
    let nowhere = format!("127.0.0.1:{}/gone", free_port());
    let out = molt(
        &server,
        &["build", "web", &dir_arg, "--external", "--to", &nowhere],
    );
    assert_eq!(out.status, 1, "{out}");
    assert!(out.stderr.contains("docker login"), "{out}");
    let left = docker(&["images", "--quiet", &nowhere]);
    assert!(left.trim().is_empty(), "left behind: {left}");
}
