//! An image's own `HEALTHCHECK` on the real engine: without a health path
//! Molt waits for the engine's `healthy`, fails a version the engine calls
//! `unhealthy` with the check's output while the old version serves, says
//! which check is in force, and autoheal replaces a container whose check
//! turns unhealthy. A health path always wins.

mod support;

use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_images_own_healthcheck_gates_deploys_and_autoheal() {
    let registry = Registry::start(false);
    let checked = push(&registry, "testapp", "imagecheck", "checked");
    let server = MoltServer::start_with(
        None,
        &[
            "--autoheal-grace",
            "1s",
            "--autoheal-interval",
            "1s",
            "--autoheal-threshold",
            "2",
        ],
        &[],
    );

    // No health path: the deploy waits for the engine's verdict.
    create_app(&server, "web", &checked, &["--health-timeout", "30"]);
    let first = newest_deploy(&server, "web");
    let shown = ok(molt(
        &server,
        &["deploys", "show", "web", first["id"].as_str().unwrap()],
    ));
    assert!(
        shown.stdout.contains(
            "the image's HEALTHCHECK (`/testapp check /healthz` every 1 s) reports healthy"
        ),
        "{shown}"
    );
    let out = ok(molt(&server, &["apps", "show", "web"]));
    assert!(
        out.stdout.contains(
            "the image's HEALTHCHECK: `/testapp check /healthz` every 1 s (currently healthy)"
        ),
        "{out}"
    );
    let app = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert!(
        app["health_check"]
            .as_str()
            .is_some_and(|c| c.starts_with("the image's HEALTHCHECK")),
        "{app}"
    );
    assert_eq!(
        get(server.proxy_addr(), "web.localhost", "/healthz")
            .await
            .unwrap()
            .0,
        200
    );

    // A version whose check fails is refused with the check's output, long
    // before the 30 s deploy timeout, and the old one keeps serving.
    ok(molt(&server, &["env", "set", "web", "HEALTH_STATUS=503"]));
    let load = Load::start(server.proxy_addr(), "web.localhost", 2);
    let out = molt(&server, &["redeploy", "web"]);
    assert_ne!(out.status, 0, "{out}");
    let failed = newest_deploy(&server, "web");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["failure"]["kind"], "image_healthcheck_failing",
        "{failed}"
    );
    let message = failed["failure"]["message"].as_str().unwrap();
    assert!(
        message.contains("GET /healthz answered 503"),
        "the check's output is shown: {message}"
    );
    let debug = ok(molt(&server, &["debug", "web"]));
    assert!(debug.stdout.contains("HEALTHCHECK"), "{debug}");
    let report = load.finish().await;
    assert_eq!(report.failed, 0, "requests failed: {report:?}");
    assert_eq!(
        get(server.proxy_addr(), "web.localhost", "/healthz")
            .await
            .unwrap()
            .0,
        200,
        "the old version serves"
    );

    // The serving container's check turns unhealthy: autoheal replaces it.
    ok(molt(&server, &["env", "unset", "web", "HEALTH_STATUS"]));
    let (status, _) = get(
        server.proxy_addr(),
        "web.localhost",
        "/health/set?status=500",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let healed = wait_for(Duration::from_secs(60), || async {
        let newest = newest_deploy(&server, "web");
        (newest["triggered_by"] == "autoheal" && newest["status"] == "succeeded").then_some(newest)
    })
    .await
    .expect("no autoheal replacement within 60 s");
    let shown = ok(molt(
        &server,
        &["deploys", "show", "web", healed["id"].as_str().unwrap()],
    ));
    assert!(shown.stdout.contains("reports unhealthy"), "{shown}");
    assert_eq!(
        get(server.proxy_addr(), "web.localhost", "/healthz")
            .await
            .unwrap()
            .0,
        200,
        "the replacement is healthy"
    );

    // A health path wins over the image's check.
    ok(molt(
        &server,
        &["apps", "update", "web", "--health-path", "/version"],
    ));
    let out = ok(molt(&server, &["apps", "show", "web"]));
    assert!(out.stdout.contains("GET /version answers 2xx"), "{out}");
}
