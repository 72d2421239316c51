//! Living with an App: redeploy a moved tag, restart without a pull, roll
//! back by digest, environment and secrets, one operation at a time, cancel,
//! template and delete — against a real engine and a password-protected
//! registry.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::*;

async fn fetch(server: &MoltServer, host: &str, path: &str) -> (u16, String) {
    get(server.proxy_addr(), host, path)
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
}

fn manifest_requests(registry: &Registry) -> usize {
    registry.count_requests("GET", "/v2/testapp/manifests")
        + registry.count_requests("HEAD", "/v2/testapp/manifests")
}

#[tokio::test(flavor = "multi_thread")]
async fn redeploy_restart_and_rollback_run_exact_digests() {
    let registry = Registry::start(true);
    let stable = push(&registry, "testapp", "v1", "stable");
    let server = MoltServer::start(None);
    ok(add_registry(
        &server,
        &registry,
        registry.password().as_bytes(),
    ));
    create_app(&server, "web", &stable, &["--health-path", "/healthz"]);
    assert_eq!(
        fetch(&server, "web.localhost", "/").await,
        (200, "testapp v1\n".into())
    );
    let first = newest_deploy(&server, "web");

    // The tag moves: redeploy picks up the new build and says the digest changed.
    push(&registry, "testapp", "v2", "stable");
    let out = ok(molt(&server, &["redeploy", "web"]));
    assert!(out.stdout.contains("changed: a new digest"), "{out}");
    assert_eq!(fetch(&server, "web.localhost", "/").await.1, "testapp v2\n");
    let second = newest_deploy(&server, "web");
    assert_eq!(second["kind"], "redeploy");
    assert_ne!(second["digest"], first["digest"]);

    // Redeploying an unchanged tag says so.
    let out = ok(molt(&server, &["redeploy", "web"]));
    assert!(out.stdout.contains("unchanged"), "{out}");

    // A restart pulls nothing: the registry sees no manifest request, and a
    // fresh container of the same digest serves.
    let before = server.containers(Some("web"));
    let requests = manifest_requests(&registry);
    ok(molt(&server, &["restart", "web"]));
    assert_eq!(
        manifest_requests(&registry),
        requests,
        "a restart must not pull"
    );
    let after = server.containers(Some("web"));
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a restart swaps to a fresh container");
    assert_eq!(fetch(&server, "web.localhost", "/").await.1, "testapp v2\n");
    let restarted = newest_deploy(&server, "web");
    assert_eq!(restarted["kind"], "restart");
    assert_eq!(restarted["digest"], second["digest"]);

    // --hard restarts the same container in place, and the App keeps
    // showing the digest it serves.
    ok(molt(&server, &["restart", "web", "--hard"]));
    assert_eq!(server.containers(Some("web")), after);
    let hard = newest_deploy(&server, "web");
    assert_eq!(hard["strategy"], "in_place");
    assert_eq!(hard["digest"], second["digest"], "{hard}");
    let shown = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert_eq!(shown["digest"], second["digest"], "{shown}");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            fetch(&server, "web.localhost", "/").await.1 == "testapp v2\n"
        })
        .await
    );

    // The tag moves again; a rollback to the first deploy serves its exact
    // bytes though the tag moved twice.
    push(&registry, "testapp", "v3", "stable");
    ok(molt(&server, &["redeploy", "web"]));
    assert_eq!(fetch(&server, "web.localhost", "/").await.1, "testapp v3\n");
    let out = ok(molt(
        &server,
        &["rollback", "web", first["id"].as_str().unwrap()],
    ));
    assert!(out.stdout.contains("rolling back to deploy"), "{out}");
    assert_eq!(fetch(&server, "web.localhost", "/").await.1, "testapp v1\n");
    let rollback = newest_deploy(&server, "web");
    assert_eq!(rollback["kind"], "rollback");
    assert_eq!(rollback["digest"], first["digest"]);
    let pinned = rollback["image"].as_str().unwrap();
    assert!(
        pinned.contains("@sha256:"),
        "a rollback runs repo@digest: {pinned}"
    );
    // The App still follows its reference, and says what serves instead.
    let shown = molt(&server, &["apps", "show", "web", "--json"]).json();
    assert_eq!(shown["image"], stable.as_str());
    assert_eq!(shown["serving_image"], pinned);
    let text = ok(molt(&server, &["apps", "show", "web"])).stdout;
    assert!(
        text.contains(&format!("serving:          {pinned} (a rollback: `molt redeploy web` would deploy {stable} again)")),
        "{text}"
    );

    // Without an id: the one before the serving one (the v3 redeploy).
    ok(molt(&server, &["rollback", "web"]));
    assert_eq!(fetch(&server, "web.localhost", "/").await.1, "testapp v3\n");

    // A failed or unknown deploy is refused clearly.
    let out = molt(
        &server,
        &[
            "deploy",
            "web",
            &format!("{}/testapp:missing", registry.host()),
        ],
    );
    assert_eq!(out.status, 1, "{out}");
    let failed = newest_deploy(&server, "web")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = molt(&server, &["rollback", "web", &failed]);
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("only a succeeded deploy"), "{out}");
    let out = molt(&server, &["rollback", "web", "nope"]);
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("no deploy `nope`"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_secrets_cancel_template_and_delete() {
    let registry = Registry::start(true);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let slow = push(&registry, "testapp", "slowstart", "slowstart");
    let server = MoltServer::start(None);
    ok(add_registry(
        &server,
        &registry,
        registry.password().as_bytes(),
    ));
    create_app(&server, "web", &v1, &["--env", "GREETING=hello"]);
    assert_eq!(
        fetch(&server, "web.localhost", "/env/GREETING").await,
        (200, "hello".into())
    );
    assert_eq!(
        fetch(&server, "web.localhost", "/env/PORT").await,
        (200, "8080".into())
    );

    // A variable reaches the container only with a deploy ...
    ok(molt(&server, &["env", "set", "web", "COLOR=blue"]));
    assert_eq!(fetch(&server, "web.localhost", "/env/COLOR").await.0, 404);
    ok(molt(&server, &["redeploy", "web"]));
    assert_eq!(
        fetch(&server, "web.localhost", "/env/COLOR").await,
        (200, "blue".into())
    );
    // ... or at once with --apply.
    ok(molt(&server, &["env", "set", "web", "SIZE=xl", "--apply"]));
    assert_eq!(
        fetch(&server, "web.localhost", "/env/SIZE").await,
        (200, "xl".into())
    );
    let config = newest_deploy(&server, "web");
    assert_eq!(config["kind"], "config");

    // A secret is visible to the container and nowhere else.
    let secret = "s3cr3t-value-7f1e9a";
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
    assert_eq!(
        fetch(&server, "web.localhost", "/env/API_TOKEN").await,
        (200, secret.into())
    );
    let mut outputs = vec![
        molt(&server, &["env", "list", "web", "--json"]),
        molt(&server, &["env", "list", "web"]),
        molt(&server, &["apps", "show", "web", "--json"]),
        molt(&server, &["deploys", "web", "--json"]),
    ];
    let id = outputs[3].json()[0]["id"].as_str().unwrap().to_string();
    outputs.push(molt(&server, &["deploys", "show", "web", &id, "--json"]));
    for out in &outputs {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "secret leaked:\n{out}"
        );
    }
    assert!(outputs[1].stdout.contains("API_TOKEN"), "{}", outputs[1]);
    let env = outputs[0].json();
    let entry = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "API_TOKEN")
        .unwrap();
    assert_eq!(entry["secret"], true);
    assert!(entry.get("value").is_none());
    assert_no_file_contains(server.data_dir(), secret);
    assert!(
        !server.log().contains(secret),
        "the server log holds the secret"
    );

    // Bad keys and values are refused clearly.
    let out = molt(&server, &["env", "set", "web", "1BAD=x"]);
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("not a valid variable name"), "{out}");
    let out = molt(&server, &["env", "set", "web", "MULTI=a\nb"]);
    assert_eq!(out.status, 2, "{out}");
    ok(molt(&server, &["env", "unset", "web", "COLOR", "--apply"]));
    assert_eq!(fetch(&server, "web.localhost", "/env/COLOR").await.0, 404);

    // One operation at a time: a second deploy is refused naming the first;
    // a canceled deploy leaves the old version serving.
    let out = ok(molt(&server, &["deploy", "web", &slow, "--detach"]));
    let running = newest_deploy(&server, "web")["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(out.stdout.contains(&running), "{out}");
    let out = molt(&server, &["deploy", "web", &v1]);
    assert_eq!(out.status, 2, "{out}");
    assert!(
        out.stderr.contains(&running),
        "the refusal names the deploy in progress: {out}"
    );
    ok(molt(&server, &["cancel", "web"]));
    let canceled = molt(&server, &["deploys", "show", "web", &running, "--json"]).json();
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert_eq!(
        server.containers(Some("web")).len(),
        1,
        "the canceled deploy's container is gone"
    );
    assert_eq!(fetch(&server, "web.localhost", "/").await.1, "testapp v1\n");
    let out = molt(&server, &["cancel", "web"]);
    assert_eq!(out.status, 2, "nothing left to cancel: {out}");

    // A template serves the same build with the same plain environment,
    // secrets only when asked, and no domains.
    ok(molt(&server, &["apps", "create", "copy", "--from", "web"]));
    let original = molt(&server, &["apps", "show", "web", "--json"]).json();
    let copy = molt(&server, &["apps", "show", "copy", "--json"]).json();
    assert_eq!(copy["digest"], original["digest"]);
    assert_eq!(copy["port"], 8080);
    assert_eq!(
        fetch(&server, "copy.localhost", "/").await.1,
        "testapp v1\n"
    );
    assert_eq!(
        fetch(&server, "copy.localhost", "/env/SIZE").await,
        (200, "xl".into())
    );
    assert_eq!(
        fetch(&server, "copy.localhost", "/env/API_TOKEN").await.0,
        404
    );
    ok(molt(
        &server,
        &["apps", "create", "copy2", "--from", "web", "--with-secrets"],
    ));
    assert_eq!(
        fetch(&server, "copy2.localhost", "/env/API_TOKEN").await,
        (200, secret.into())
    );

    // Delete leaves no container, route or environment behind.
    ok(molt(&server, &["apps", "delete", "web", "--yes"]));
    assert!(server.containers(Some("web")).is_empty());
    assert_eq!(fetch(&server, "web.localhost", "/").await.0, 404);
    let out = molt(&server, &["env", "list", "web"]);
    assert_eq!(out.status, 2, "{out}");
    // The copies are independent.
    assert_eq!(
        fetch(&server, "copy.localhost", "/").await.1,
        "testapp v1\n"
    );
    let out = molt(&server, &["apps", "delete", "copy"]);
    assert_eq!(
        out.status, 2,
        "without --yes and no terminal it refuses: {out}"
    );
}

/// Every file under `dir` (the data dir: database, WAL, logs, keys).
fn assert_no_file_contains(dir: &std::path::Path, needle: &str) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{} holds the secret in plain text",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_complete_and_consistent() {
    let server = MoltServer::start(None);
    let client = proxy_client(Duration::from_secs(10));
    let doc: Value = client
        .get(format!("{}/api/v1/openapi.json", server.api_url()))
        .bearer_auth(server.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert!(doc["info"]["title"].is_string());
    for (path, method) in [
        ("/api/v1/apps", "get"),
        ("/api/v1/apps", "post"),
        ("/api/v1/apps/{name}", "delete"),
        ("/api/v1/apps/{name}/deploys", "post"),
        ("/api/v1/apps/{name}/deploys/{id}/events", "get"),
        ("/api/v1/apps/{name}/redeploy", "post"),
        ("/api/v1/apps/{name}/restart", "post"),
        ("/api/v1/apps/{name}/rollback", "post"),
        ("/api/v1/apps/{name}/cancel", "post"),
        ("/api/v1/apps/{name}/env", "patch"),
        ("/api/v1/registries", "post"),
        ("/api/v1/registries/{host}", "delete"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(
            op.is_object(),
            "{method} {path} is missing from the document"
        );
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} has no responses"
        );
    }
    // Every reference resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "$ref {r} does not resolve"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.push(v.as_str().unwrap_or_default().to_string());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
