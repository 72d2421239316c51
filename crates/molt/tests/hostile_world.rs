//! A hostile world, part two, against a real engine: containers confined
//! (own networks, links, capabilities, limits), log followers that end, and
//! a registry that stops sending in the middle of a layer.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// The sha256 of `bytes`, as `sha256:HEX`, through `sha256sum`.
fn sha256(bytes: &[u8]) -> String {
    let out = run_bounded(
        std::process::Command::new("sha256sum").arg("-"),
        Some(bytes),
        Duration::from_secs(30),
    )
    .expect("running sha256sum failed (coreutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

/// A registry stand-in on 127.0.0.1 that serves one image's manifest and
/// config, then sends the first 64 KiB of its 1 MiB layer and stops sending
/// (holding the connection open) until dropped.
struct StallingRegistry {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    layer: String,
}

impl StallingRegistry {
    fn start() -> StallingRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let layer_bytes: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + 3) as u8).collect();
        let layer = sha256(&layer_bytes);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#
        );
        let config_digest = sha256(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":{},"digest":"{layer}"}}]}}"#,
            config.len(),
            layer_bytes.len()
        );
        let manifest_digest = sha256(manifest.as_bytes());
        let stop = Arc::new(AtomicBool::new(false));
        let stop_accept = Arc::clone(&stop);
        let layer_path = format!("/blobs/{layer}");
        let config_path = format!("/blobs/{config_digest}");
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop_accept.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let (manifest, config, manifest_digest) =
                    (manifest.clone(), config.clone(), manifest_digest.clone());
                let (layer_path, config_path) = (layer_path.clone(), config_path.clone());
                let layer_len = layer_bytes.len();
                let first = layer_bytes[..64 * 1024].to_vec();
                let stop = Arc::clone(&stop_accept);
                std::thread::spawn(move || {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    let mut request = String::new();
                    if reader.read_line(&mut request).is_err() {
                        return;
                    }
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line.trim().is_empty() => break,
                            Ok(_) => {}
                        }
                    }
                    let mut parts = request.split_whitespace();
                    let method = parts.next().unwrap_or("");
                    let path = parts.next().unwrap_or("");
                    let head = method == "HEAD";
                    let reply = |conn: &mut TcpStream,
                                 status: &str,
                                 ctype: &str,
                                 body: &[u8],
                                 extra: &str| {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nDocker-Distribution-API-Version: registry/2.0\r\n{extra}Connection: close\r\n\r\n",
                            body.len()
                        );
                        if !head {
                            let _ = conn.write_all(body);
                        }
                    };
                    if path == "/v2/" {
                        reply(&mut conn, "200 OK", "application/json", b"{}", "");
                    } else if path.contains("/manifests/") {
                        reply(
                            &mut conn,
                            "200 OK",
                            "application/vnd.docker.distribution.manifest.v2+json",
                            manifest.as_bytes(),
                            &format!("Docker-Content-Digest: {manifest_digest}\r\n"),
                        );
                    } else if path.ends_with(&config_path) {
                        reply(
                            &mut conn,
                            "200 OK",
                            "application/octet-stream",
                            config.as_bytes(),
                            "",
                        );
                    } else if path.ends_with(&layer_path) {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {layer_len}\r\nConnection: close\r\n\r\n"
                        );
                        let _ = conn.write_all(&first);
                        let _ = conn.flush();
                        // The registry stops sending, but keeps the connection.
                        let until = Instant::now() + Duration::from_secs(120);
                        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    } else {
                        reply(
                            &mut conn,
                            "404 Not Found",
                            "application/json",
                            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}"#,
                            "",
                        );
                    }
                });
            }
        });
        StallingRegistry { addr, stop, layer }
    }
}

impl Drop for StallingRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_that_stalls_fails_the_deploy_and_names_the_layer() {
    let registry = StallingRegistry::start();
    let server = MoltServer::start_with(None, &["--pull-stall-timeout", "3"], &[]);
    let image = format!("127.0.0.1:{}/stall/app:v1", registry.addr.port());
    let out = molt(
        &server,
        &[
            "apps", "create", "stall", "--image", &image, "--port", "8080", "--detach",
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    let started = Instant::now();
    let deploy = wait_for(Duration::from_secs(60), || async {
        let d = newest_deploy(&server, "stall");
        (d["status"] == "failed").then_some(d)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the deploy still holds the App a minute after the registry stopped sending: {}\n{}",
            newest_deploy(&server, "stall"),
            server.log()
        )
    });
    let error = deploy["error"].as_str().unwrap_or_default();
    assert!(error.contains("the registry stopped sending"), "{deploy}");
    // The engine names a layer by the first 12 hex digits of its digest.
    let short_layer = &registry.layer["sha256:".len().."sha256:".len() + 12];
    assert!(error.contains(short_layer), "the layer is named: {deploy}");
    assert!(error.contains("--pull-stall-timeout"), "{deploy}");
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the stall was noticed late"
    );
    // The App is not held: it can be deleted at once.
    ok(molt(&server, &["apps", "delete", "stall", "--yes"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_server_does_not_wait_for_an_open_log_follower() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let mut server = MoltServer::start(None);
    create_app(&server, "quiet", &v1, &[]);

    // A follower of a container that prints nothing more.
    let mut follower = TcpStream::connect(server.api_addr()).unwrap();
    follower
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        follower,
        "GET /api/v1/apps/quiet/logs?follow=true HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
        server.token()
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(follower.try_clone().unwrap())
        .read_line(&mut status)
        .unwrap();
    assert!(status.contains(" 200 "), "{status}");

    let started = Instant::now();
    server.stop();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the server took {:?} to stop with a follower open",
        started.elapsed()
    );
    drop(follower);
}
