//! Releases on the real engine: every deploy records its release (digest,
//! settings, environment by version); `molt deploys show` says what changed
//! against the deploy before, secrets by version only; `molt rollback
//! --with-config` brings back the settings (port, health path) an `apps
//! update` changed, under load with no failed request.

mod support;

use std::time::Duration;
use support::*;

/// The `changes` of one deploy, as `molt deploys show --json` gives them.
fn changes(server: &MoltServer, app: &str, id: &str) -> serde_json::Value {
    let show = ok(molt(server, &["deploys", "show", app, id, "--json"])).json();
    show["changes"].clone()
}

/// The setting changes of `changes` as `(setting, from, to)`.
fn settings_of(changes: &serde_json::Value) -> Vec<(String, String, String)> {
    changes["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("setting"), s("from"), s("to"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn deploys_show_what_changed_and_rollback_with_config_restores_settings() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let server = MoltServer::start(None);
    let proxy = server.proxy_addr();
    create_app(
        &server,
        "web",
        &v1,
        &["--health-path", "/healthz", "--env", "MODE=one"],
    );
    let created = newest_deploy(&server, "web");
    assert!(
        changes(&server, "web", created["id"].as_str().unwrap()).is_null(),
        "the first deploy has nothing before it"
    );
    ok(molt(
        &server,
        &["env", "set", "web", "API_TOKEN=first-s3cret", "--secret"],
    ));
    ok(molt(&server, &["env", "set", "web", "MODE=two"]));

    // A new image with the new environment.
    ok(molt(&server, &["deploy", "web", &v2]));
    let deployed = newest_deploy(&server, "web");
    let deployed_id = deployed["id"].as_str().unwrap().to_string();
    let c = changes(&server, "web", &deployed_id);
    assert_eq!(c["against"], created["id"], "{c}");
    assert_eq!(c["image"]["from"], v1.as_str(), "{c}");
    assert_eq!(c["image"]["to"], v2.as_str(), "{c}");
    assert_ne!(c["digest"]["from"], c["digest"]["to"], "{c}");
    assert!(settings_of(&c).is_empty(), "{c}");
    let env = c["env"].as_array().unwrap();
    assert_eq!(env.len(), 2, "{c}");
    assert_eq!(env[0]["key"], "API_TOKEN");
    assert_eq!(env[0]["change"], "added");
    assert_eq!(env[0]["secret"], true);
    assert!(env[0]["to"].as_str().unwrap().starts_with("sealed:"), "{c}");
    assert_eq!(env[1]["key"], "MODE");
    assert_eq!(
        (&env[1]["from"], &env[1]["to"]),
        (&"one".into(), &"two".into())
    );

    // A new secret value shows as a new version, never as the value.
    let out = ok(molt(
        &server,
        &[
            "env",
            "set",
            "web",
            "API_TOKEN=second-s3cret",
            "--secret",
            "--apply",
        ],
    ));
    assert!(!out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"));
    let applied = newest_deploy(&server, "web");
    let applied_id = applied["id"].as_str().unwrap().to_string();
    let c = changes(&server, "web", &applied_id);
    let env = c["env"].as_array().unwrap();
    assert_eq!(env.len(), 1, "{c}");
    assert_eq!(env[0]["key"], "API_TOKEN");
    assert_eq!(env[0]["change"], "changed");
    assert_ne!(env[0]["from"], env[0]["to"], "{c}");
    let shown = ok(molt(&server, &["deploys", "show", "web", &applied_id]));
    assert!(
        shown
            .stdout
            .contains("env API_TOKEN changed (secret, sealed:"),
        "{shown}"
    );
    assert!(!shown.stdout.contains("s3cret"), "{shown}");
    let json = ok(molt(
        &server,
        &["deploys", "show", "web", &applied_id, "--json"],
    ));
    assert!(!json.stdout.contains("s3cret"), "{json}");

    // A settings change, then a rollback to the deploy before it, under
    // load: first the image only, then with its settings.
    let load = Load::start(proxy, "web.localhost", 4);
    assert!(wait_until(Duration::from_secs(10), || async { load.ok() > 50 }).await);
    ok(molt(
        &server,
        &[
            "apps",
            "update",
            "web",
            "--port",
            "9090",
            "--health-path",
            "/version",
        ],
    ));
    let updated = newest_deploy(&server, "web");
    let c = changes(&server, "web", updated["id"].as_str().unwrap());
    assert_eq!(
        settings_of(&c),
        [
            ("port".to_string(), "8080".to_string(), "9090".to_string()),
            ("health path".into(), "/healthz".into(), "/version".into()),
        ],
        "{c}"
    );
    let shown = ok(molt(
        &server,
        &["deploys", "show", "web", updated["id"].as_str().unwrap()],
    ));
    assert!(shown.stdout.contains("  port 8080 → 9090\n"), "{shown}");
    // The dashboard's deploy page shows the same lines.
    let page = dashboard_page(
        &server,
        &format!("/apps/web/deploys/{}", updated["id"].as_str().unwrap()),
    )
    .await;
    assert!(page.contains("Changes against deploy"), "{page}");
    assert!(page.contains("<li>port 8080 → 9090</li>"), "{page}");
    assert!(
        page.contains("<li>health path /healthz → /version</li>"),
        "{page}"
    );
    let page = dashboard_page(&server, &format!("/apps/web/deploys/{applied_id}")).await;
    assert!(
        page.contains("env API_TOKEN changed (secret, sealed:"),
        "{page}"
    );
    assert!(!page.contains("s3cret"), "{page}");

    ok(molt(&server, &["rollback", "web", &deployed_id]));
    let show = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert_eq!(
        show["port"], 9090,
        "without --with-config settings stay: {show}"
    );
    assert_eq!(show["health_path"], "/version", "{show}");
    assert_eq!(served(proxy, "web.localhost").await, "testapp v2");

    ok(molt(
        &server,
        &["rollback", "web", &deployed_id, "--with-config"],
    ));
    let show = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert_eq!(show["port"], 8080, "{show}");
    assert_eq!(show["health_path"], "/healthz", "{show}");
    let address = show["containers"][0]["address"]
        .as_str()
        .unwrap_or_default();
    assert!(address.ends_with(":8080"), "{show}");
    assert_eq!(served(proxy, "web.localhost").await, "testapp v2");
    let rolled = newest_deploy(&server, "web");
    let c = changes(&server, "web", rolled["id"].as_str().unwrap());
    assert_eq!(
        settings_of(&c),
        [
            ("port".to_string(), "9090".to_string(), "8080".to_string()),
            ("health path".into(), "/version".into(), "/healthz".into()),
        ],
        "{c}"
    );
    // The environment of that deploy came back too: the first secret.
    let env = c["env"].as_array().unwrap();
    assert_eq!(env.len(), 1, "{c}");
    assert_eq!(env[0]["key"], "API_TOKEN");
    let (status, body) = get(proxy, "web.localhost", "/env/API_TOKEN").await.unwrap();
    assert_eq!((status, body.trim()), (200, "first-s3cret"));

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
}

/// The dashboard's page at `path`, fetched with a session logged in with
/// the admin token.
async fn dashboard_page(server: &MoltServer, path: &str) -> String {
    let session = dashboard_session(server).await;
    dashboard_get(server, &session, path).await
}
