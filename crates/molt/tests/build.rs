//! Building from source on the real engine: `molt build` packs a directory
//! (or a Git tag), the server builds it and records a release that serves
//! only once promoted, under load with no failed request; a failing `RUN`
//! step fails the build with its output and changes nothing; `molt deploy
//! --build` does it in one step; bad input is refused at once.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

/// A source directory holding `Dockerfile` with `dockerfile`.
fn source(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("molt-build-src-")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

/// A Dockerfile of the test app reporting `version`.
fn app_dockerfile(version: &str) -> String {
    format!(
        "FROM {}\nARG GREETING=none\nENV VERSION={version} GREETING=$GREETING\n",
        TestImages::image("v1")
    )
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Molt Test",
            "-c",
            "user.email=test@molt.invalid",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

fn releases(server: &MoltServer, app: &str) -> Vec<serde_json::Value> {
    let v = ok(molt(server, &["releases", app, "--json"])).json();
    v.as_array().expect("a list of releases").clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn build_then_promote_under_load_and_a_failing_build_changes_nothing() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start_with(None, &["--build-context-limit", "64K"], &[]);
    let proxy = server.proxy_addr();
    create_app(&server, "src", &v1, &["--health-path", "/healthz"]);
    // No release yet: said so, with how to make one.
    let out = ok(molt(&server, &["releases", "src"]));
    assert!(out.stdout.contains("no releases yet"), "{out}");

    // A build makes a release that does not serve yet.
    let dir = source(&app_dockerfile("built-1"));
    let src = dir.path().to_str().unwrap();
    let out = molt(
        &server,
        &["build", "src", src, "--build-arg", "GREETING=hello"],
    );
    assert_eq!(out.status, 0, "{out}");
    for phase in ["Packaging source…", "Uploading source…", "Starting build"] {
        assert!(out.stderr.contains(phase), "{out}");
    }
    assert!(out.stdout.contains("Step 1/"), "the build's output: {out}");
    assert!(out.stdout.contains("Built release "), "{out}");
    // The API streams the same output as server-sent events.
    let build_id = out
        .stdout
        .split("(build ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let events = proxy_client(Duration::from_secs(30))
        .get(format!(
            "{}/api/v1/apps/src/builds/{build_id}/events",
            server.api_url()
        ))
        .bearer_auth(server.token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        events.contains("event: log\nid: 1\ndata: Step 1/"),
        "{events}"
    );
    assert!(events.contains("event: end\ndata: {"), "{events}");
    assert!(events.contains("\"status\":\"succeeded\""), "{events}");
    let listed = releases(&server, "src");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["serving"], false);
    assert!(listed[0]["digest"].as_str().unwrap().starts_with("sha256:"));
    let release = listed[0]["id"].as_str().unwrap().to_string();
    assert_eq!(served(proxy, "src.localhost").await, "testapp v1");

    // An environment change between build and promote goes into the
    // promoted release; the swap loses no request.
    ok(molt(&server, &["env", "set", "src", "EXTRA=after-build"]));
    let load = Load::start(proxy, "src.localhost", 4);
    assert!(wait_until(Duration::from_secs(10), || async { load.ok() > 50 }).await);
    let out = molt(&server, &["releases", "promote", "src", &release]);
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(served(proxy, "src.localhost").await, "testapp built-1");
    let env = |key: &'static str| async move {
        let (status, body) = get(proxy, "src.localhost", &format!("/env/{key}"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{key}: {body}");
        body.trim().to_string()
    };
    assert_eq!(env("GREETING").await, "hello");
    assert_eq!(env("EXTRA").await, "after-build");
    assert_eq!(releases(&server, "src")[0]["serving"], true);
    let show = ok(molt(&server, &["apps", "show", "src", "--json"])).json();
    assert!(
        show["digest"].as_str().unwrap().starts_with("sha256:"),
        "{show}"
    );

    // A failing RUN step (the image has no shell): the build fails with the
    // step and its output, and the promoted release keeps serving.
    let bad = source(&format!(
        "FROM {}\nRUN echo building\n",
        TestImages::image("v1")
    ));
    let out = molt(&server, &["build", "src", bad.path().to_str().unwrap()]);
    assert_eq!(out.status, 1, "{out}");
    assert!(out.stderr.contains("RUN echo building"), "{out}");
    assert!(out.stderr.contains("nothing serving changed"), "{out}");
    assert!(out.stderr.contains("/bin/sh"), "the step's output: {out}");
    assert_eq!(releases(&server, "src").len(), 1);
    assert_eq!(served(proxy, "src.localhost").await, "testapp built-1");

    // The dashboard: a Releases card listing the builds, the failed one's
    // page with its step and output, and the CLI lines to build.
    let session = dashboard_session(&server).await;
    let page = dashboard_get(&server, &session, "/apps/src").await;
    assert!(page.contains("id=\"releases\""), "{page}");
    assert!(
        page.contains(&format!("data-build=\"{build_id}\"")),
        "{page}"
    );
    assert!(page.contains("data-status=\"failed\""), "{page}");
    assert!(page.contains("molt deploy src --build ."), "{page}");
    let failed_id = page
        .split("data-status=\"failed\"")
        .next()
        .unwrap()
        .rsplit("data-build=\"")
        .next()
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let build_page =
        dashboard_get(&server, &session, &format!("/apps/src/builds/{failed_id}")).await;
    assert!(
        build_page.contains("The failing step and its output"),
        "{build_page}"
    );
    assert!(build_page.contains("RUN echo building"), "{build_page}");

    // Build and promote in one step.
    let next = source(&app_dockerfile("built-2"));
    let out = molt(
        &server,
        &["deploy", "src", "--build", next.path().to_str().unwrap()],
    );
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(served(proxy, "src.localhost").await, "testapp built-2");
    let listed = releases(&server, "src");
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (&listed[0]["serving"], &listed[1]["serving"]),
        (&true.into(), &false.into())
    );

    // A Git tag builds what was committed, not the working tree.
    let repo = source(&app_dockerfile("git-tag"));
    let r = repo.path();
    git(r, &["init", "--quiet"]);
    git(r, &["add", "Dockerfile"]);
    git(r, &["commit", "--quiet", "-m", "first"]);
    git(r, &["tag", "v1.0"]);
    std::fs::write(r.join("Dockerfile"), app_dockerfile("worktree")).unwrap();
    let out = molt(
        &server,
        &[
            "deploy",
            "src",
            "--build",
            r.to_str().unwrap(),
            "--git-ref",
            "v1.0",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(served(proxy, "src.localhost").await, "testapp git-tag");

    let load = load.finish().await;
    assert!(load.ok > 100, "the load ran ({} requests)", load.ok);
    assert_eq!(
        load.failed,
        0,
        "{} of {} requests failed: {:?}",
        load.failed,
        load.ok + load.failed,
        load.errors
    );

    // Bad input, each refused at once with what to do.
    let refused = |args: &[&str], says: &str| {
        let out = molt(&server, args);
        assert_eq!(out.status, 2, "{args:?}: {out}");
        assert!(
            out.stderr.contains(says),
            "{args:?} should say {says:?}: {out}"
        );
    };
    refused(&["build", "src", "/nonexistent/molt-src"], "does not exist");
    let empty = tempfile::tempdir().unwrap();
    refused(
        &["build", "src", empty.path().to_str().unwrap()],
        "there is no Dockerfile",
    );
    refused(
        &["build", "src", src, "--build-arg", "NOEQUALS"],
        "not KEY=VALUE",
    );
    refused(
        &["build", "src", r.to_str().unwrap(), "--git-ref", "v9.9"],
        "does not exist",
    );
    refused(&["build", "nope", src], "no App named `nope`");
    // ... before its source is packed and sent.
    let out = molt(&server, &["build", "nope", src]);
    assert!(!out.stderr.contains("Uploading source"), "{out}");
    let big = source(&app_dockerfile("big"));
    let blob: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(big.path().join("blob.bin"), blob).unwrap();
    refused(
        &["build", "src", big.path().to_str().unwrap()],
        "limit of 64 KiB",
    );
    // The .dockerignore keeps it under the limit.
    std::fs::write(big.path().join(".dockerignore"), "*.bin\n").unwrap();
    let out = molt(&server, &["build", "src", big.path().to_str().unwrap()]);
    assert_eq!(out.status, 0, "{out}");
}

/// Builds `version` for `app` and returns the new release's id.
fn build_release(server: &MoltServer, app: &str, version: &str) -> String {
    let dir = source(&app_dockerfile(version));
    let out = ok(molt(
        server,
        &["build", app, dir.path().to_str().unwrap(), "--json"],
    ));
    let build = out.json();
    assert_eq!(build["status"], "succeeded", "{build}");
    build["release"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_old_release_images_but_keeps_the_serving_one_and_rollback_targets() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start_with(None, &["--keep-releases", "1"], &[]);
    let proxy = server.proxy_addr();
    create_app(&server, "kept", &v1, &["--health-path", "/healthz"]);

    let a = build_release(&server, "kept", "a");
    ok(molt(&server, &["releases", "promote", "kept", &a]));
    let promoted_a = newest_deploy(&server, "kept")["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Promoted from the dashboard's Releases card this time.
    let b = build_release(&server, "kept", "b");
    let session = dashboard_session(&server).await;
    let page = dashboard_get(&server, &session, "/apps/kept").await;
    let form = page
        .split("action=\"/apps/kept/releases/promote\"")
        .nth(1)
        .expect("a Promote button");
    assert!(form.contains(&format!("value=\"{b}\"")), "{form}");
    let csrf = form
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let r = proxy_client(Duration::from_secs(30))
        .post(format!("{}/apps/kept/releases/promote", server.api_url()))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&release_id={b}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        wait_until(Duration::from_secs(60), || async {
            newest_deploy(&server, "kept")["status"] == "succeeded"
                && served(proxy, "kept.localhost").await == "testapp b"
        })
        .await,
        "the release promoted from the dashboard serves"
    );

    // Beyond the newest one, but serving (b) or a rollback target (a).
    let c = build_release(&server, "kept", "c");
    let ids = |server: &MoltServer| -> Vec<String> {
        releases(server, "kept")
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&server), [c.clone(), b.clone(), a.clone()]);
    let c_image = releases(&server, "kept")[0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(try_docker(None, &["image", "inspect", &c_image], None)
        .status
        .success());

    // A newer build: c was never promoted, so its image goes (logged).
    // (Retention runs right after the build is recorded.)
    let d = build_release(&server, "kept", "d");
    let expected = [d, b, a];
    assert!(
        wait_until(Duration::from_secs(10), || async {
            ids(&server) == expected
        })
        .await,
        "{:?}",
        ids(&server)
    );
    assert!(
        !try_docker(None, &["image", "inspect", &c_image], None)
            .status
            .success(),
        "the image of the pruned release {c} is gone"
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            server.log().contains("pruned a release")
        })
        .await,
        "the pruning is logged"
    );

    // The rollback target kept its image: rolling back to it works.
    ok(molt(&server, &["rollback", "kept", &promoted_a]));
    assert_eq!(served(proxy, "kept.localhost").await, "testapp a");

    // Deleting the App removes its built images.
    let images: Vec<String> = releases(&server, "kept")
        .iter()
        .map(|r| r["image"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(images.len(), 3);
    ok(molt(&server, &["apps", "delete", "kept", "--yes"]));
    for image in &images {
        assert!(
            !try_docker(None, &["image", "inspect", image], None)
                .status
                .success(),
            "{image} is still on the host"
        );
    }
}
