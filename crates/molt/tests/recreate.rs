//! A host that cannot hold two versions at once: the deploy becomes a
//! recreate in two visible phases, the proxy holds requests meanwhile, and
//! no request fails — not even when the new version fails and the old one
//! comes back.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// Keep-alive GETs from a few tasks until stopped (bounded to 120 s), each
/// response counted: 2xx is ok, anything else (status or error) failed.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(server: &MoltServer, host: &'static str, tasks: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let proxy = server.proxy_addr();
        let handles = (0..tasks)
            .map(|_| {
                let (stop, ok, failed, failures) =
                    (stop.clone(), ok.clone(), failed.clone(), failures.clone());
                tokio::spawn(async move {
                    let client = proxy_client(Duration::from_secs(120));
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let result = client
                            .get(format!("http://{proxy}/"))
                            .header(reqwest::header::HOST, host)
                            .send()
                            .await;
                        match result {
                            Ok(r) if r.status().is_success() => {
                                let _ = r.bytes().await;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let status = r.status();
                                let body = r.text().await.unwrap_or_default();
                                failures.lock().unwrap().push(format!("{status}: {body}"));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                failures.lock().unwrap().push(e.to_string());
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            failures,
            tasks: handles,
        }
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let failures = self.failures.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures,
        )
    }
}

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

    let out = molt(
        &server,
        &[
            "apps",
            "create",
            "gpu",
            "--image",
            &v1,
            "--port",
            "8080",
            "--health-path",
            "/healthz",
            "--memory",
            "200m",
        ],
    );
    assert_eq!(out.status, 0, "{out}");

    let load = Load::start(&server, "gpu.localhost", 4);
    // Let the load reach a steady state before the deploy.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            load.ok.load(Ordering::Relaxed) > 50
        })
        .await
    );

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

    let (ok, failed, failures) = load.finish().await;
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the recreates: {failures:?}",
        ok + failed
    );
}
