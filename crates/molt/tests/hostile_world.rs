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

/// `docker inspect` of the one container of `app`, as JSON.
fn inspect_app_container(server: &MoltServer, app: &str) -> serde_json::Value {
    let ids = server.containers(Some(app));
    assert_eq!(ids.len(), 1, "one container of {app}: {ids:?}");
    let out = docker(&["inspect", &ids[0]]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_are_confined_by_default_and_as_asked() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start(None);
    create_app(&server, "plain", &v1, &["--health-path", "/healthz"]);
    create_app(
        &server,
        "hardened",
        &v1,
        &[
            "--health-path",
            "/healthz",
            "--read-only",
            "--pids-limit",
            "200",
            "--cap-add",
            "net_raw",
            "--memory",
            "256m",
        ],
    );

    // By default: no NET_RAW, 1024 processes, a writable root, and a memory
    // limit of three quarters of the host's memory.
    let plain = inspect_app_container(&server, "plain");
    let host = &plain["HostConfig"];
    assert_eq!(host["CapDrop"], serde_json::json!(["NET_RAW"]), "{host}");
    assert!(host["CapAdd"].is_null(), "{host}");
    assert_eq!(host["PidsLimit"], 1024, "{host}");
    assert_eq!(host["ReadonlyRootfs"], false, "{host}");
    let mem_total: u64 = docker(&["info", "--format", "{{.MemTotal}}"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(host["Memory"], mem_total / 4 * 3, "{host}");
    assert_eq!(host["MemorySwap"], host["Memory"], "{host}");
    assert!(host["SecurityOpt"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("no-new-privileges")));

    // As asked: NET_RAW back, 200 processes, read-only with a /tmp tmpfs.
    let hardened = inspect_app_container(&server, "hardened");
    let host = &hardened["HostConfig"];
    assert!(
        host["CapDrop"].is_null() || host["CapDrop"] == serde_json::json!([]),
        "{host}"
    );
    assert_eq!(host["CapAdd"], serde_json::json!(["NET_RAW"]), "{host}");
    assert_eq!(host["PidsLimit"], 200, "{host}");
    assert_eq!(host["ReadonlyRootfs"], true, "{host}");
    assert!(host["Tmpfs"]["/tmp"].is_string(), "{host}");
    assert_eq!(host["Memory"], 256u64 << 20, "{host}");
    assert!(served(server.proxy_addr(), "hardened.localhost")
        .await
        .contains("testapp v1"));

    let shown = molt(&server, &["apps", "show", "hardened", "--json"]).json();
    assert_eq!(shown["cap_add"], serde_json::json!(["NET_RAW"]), "{shown}");
    assert_eq!(shown["pids_limit"], 200, "{shown}");
    assert_eq!(shown["read_only"], true, "{shown}");
    let text = ok(molt(&server, &["apps", "show", "plain"])).stdout;
    assert!(text.contains("without NET_RAW"), "{text}");
    assert!(text.contains("1024"), "{text}");

    // Bad values are refused before anything starts.
    for (flags, says) in [
        (&["--cap-add", "ALL"][..], "name each capability"),
        (&["--cap-add", "FLY"][..], "unknown capability"),
        (&["--pids-limit", "1"][..], "--pids-limit"),
        (&["--link", "nosuch"][..], "no App has that name"),
    ] {
        let mut args = vec!["apps", "create", "bad", "--image", &v1, "--port", "8080"];
        args.extend(flags);
        let out = molt(&server, &args);
        assert_eq!(out.status, 2, "{out}");
        assert!(out.stderr.contains(says), "{out}");
    }
    assert!(server.containers(Some("bad")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_reach_each_other_only_when_linked() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let server = MoltServer::start(None);
    let proxy = server.proxy_addr();
    create_app(&server, "db", &v1, &["--health-path", "/healthz"]);
    create_app(&server, "other", &v2, &["--health-path", "/healthz"]);
    create_app(
        &server,
        "front",
        &v2,
        &["--health-path", "/healthz", "--link", "db"],
    );

    // The proxy reaches every App.
    for (host, version) in [
        ("db.localhost", "v1"),
        ("other.localhost", "v2"),
        ("front.localhost", "v2"),
    ] {
        assert!(served(proxy, host).await.contains(version), "{host} serves");
    }
    let db = molt(&server, &["apps", "show", "db", "--json"]).json();
    let db_addr = db["containers"][0]["address"].as_str().unwrap().to_string();

    // An App that is not linked reaches the other neither by name nor by
    // address.
    let (status, body) = get(proxy, "other.localhost", "/connect?to=db:8080")
        .await
        .unwrap();
    assert_eq!(status, 502, "reached db by name: {body}");
    assert!(
        body.contains("cannot"),
        "the App answered, not the proxy: {body}"
    );
    let (status, body) = get(proxy, "other.localhost", &format!("/connect?to={db_addr}"))
        .await
        .unwrap();
    assert_eq!(status, 502, "reached db at {db_addr}: {body}");
    assert!(body.contains("cannot connect"), "{body}");

    // The linked one reaches it by its name.
    let (status, body) = get(proxy, "front.localhost", "/connect?to=db:8080")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("200"), "{body}");

    // Recorded and shown.
    let front = molt(&server, &["apps", "show", "front", "--json"]).json();
    assert_eq!(front["links"], serde_json::json!(["db"]), "{front}");
    let text = ok(molt(&server, &["apps", "show", "front"])).stdout;
    assert!(text.contains("links") && text.contains("db"), "{text}");

    // A new deploy of the linked App stays reachable by name.
    ok(molt(&server, &["deploy", "db", &v2]));
    let (status, body) = get(proxy, "front.localhost", "/connect?to=db:8080")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
}
