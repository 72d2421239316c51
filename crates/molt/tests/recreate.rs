//! A host that cannot hold two versions at once: the deploy becomes a
//! recreate in two visible phases, the proxy holds requests meanwhile, and
//! no request fails — not even when the new version fails and the old one
//! comes back.

mod support;

use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_that_does_not_fit_beside_the_old_one_is_a_held_recreate() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let crash = push(&registry, "testapp", "crash", "crash");
    let server = MoltServer::start_with(None, &["--memory", "256m", "--gpus", "0"], &[]);

    // What never fits is refused before anything is created.
    let out = molt(
        &server,
        &[
            "apps", "create", "big", "--image", &v1, "--port", "8080", "--memory", "1g",
        ],
    );
    assert_eq!(out.status, 2, "{out}");
    assert!(out.stderr.contains("cannot hold"), "{out}");

    create_app(
        &server,
        "gpu",
        &v1,
        &["--health-path", "/healthz", "--memory", "200m"],
    );

    // Requests are held through a recreate: each may take long.
    let load = Load::start_bounded(
        server.proxy_addr(),
        "gpu.localhost",
        4,
        Duration::from_secs(120),
        Duration::from_secs(120),
    );
    // Let the load reach a steady state before the deploy.
    assert!(wait_until(Duration::from_secs(10), || async { load.ok() > 50 }).await);

    let out = molt(&server, &["deploy", "gpu", &v2]);
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
    let (status, body) = get(server.proxy_addr(), "gpu.localhost", "/")
        .await
        .unwrap();
    assert_eq!((status, body.trim()), (200, "testapp v2"));

    // The new version crashes: the old one is started again and serves the
    // held requests; the deploy fails with the crash's reason.
    let out = molt(&server, &["deploy", "gpu", &crash]);
    assert_eq!(out.status, 1, "{out}");
    assert!(out.stderr.contains("exited with code 3"), "{out}");
    assert!(
        out.stdout.contains("again; it serves the held requests"),
        "{out}"
    );
    let (status, body) = get(server.proxy_addr(), "gpu.localhost", "/")
        .await
        .unwrap();
    assert_eq!((status, body.trim()), (200, "testapp v2"));

    let load = load.finish().await;
    assert!(load.ok > 100, "the load ran ({} requests)", load.ok);
    assert_eq!(
        load.failed,
        0,
        "{} of {} requests failed during the recreates: {:?}",
        load.failed,
        load.ok + load.failed,
        load.errors
    );
}
