//! Traffic on every node: a second `molt proxy`, started here as a peer
//! with its own data dir (`--admin-listen`, `--admin-token-file`), gets its
//! routes from the server (`--proxy-peer`). Deploys under load sent to both
//! proxies fail no request on either; a request in flight on the peer
//! finishes on the old version (the old container waits for the peer's
//! drain too); a wrong token is refused; a peer that is down does not hold
//! deploys up (killed, or frozen), shows in `molt debug` and `/metrics`,
//! and serves the current version once it is back; a peer whose table
//! drifted is corrected; certificates reach the peer, again after it
//! restarts.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// Bound of every wait for a condition.
const PATIENCE: Duration = Duration::from_secs(30);

struct Rig {
    _dir: tempfile::TempDir,
    peer: PeerProxy,
    server: MoltServer,
    images: Vec<String>,
    _registry: Registry,
}

/// A registry with v1, v2, v3; a peer; a server that pushes to it; the App
/// `web` (also at `web.example.test`) on v1, served by both proxies.
async fn rig() -> Rig {
    let registry = Registry::start(false);
    let images: Vec<String> = ["v1", "v2", "v3"]
        .iter()
        .map(|v| push(&registry, "testapp", v, v))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = PeerProxy::start(dir.path());
    let token_file = peer.token_file.clone();
    let server = MoltServer::start_with(
        None,
        &[
            "--proxy-peer",
            &peer.admin.to_string(),
            "--proxy-peer-token-file",
            token_file.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    create_app(
        &server,
        "web",
        &images[0],
        &[
            "--health-path",
            "/healthz",
            "--drain-timeout",
            "10",
            "--env",
            "LOG_REQUESTS=1",
            "--domain",
            "web.example.test",
        ],
    );
    let at = peer.listen;
    assert!(
        wait_until(PATIENCE, || async {
            served(at, "web.localhost").await == "testapp v1"
        })
        .await,
        "the peer never served v1; its log:\n{}",
        peer.log()
    );
    Rig {
        _dir: dir,
        peer,
        server,
        images,
        _registry: registry,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deploys_under_load_on_both_proxies_lose_nothing() {
    let rig = rig().await;
    let (server, peer) = (&rig.server, &rig.peer);

    // A request in flight on the peer when the swap happens finishes on
    // the old version: the old container is stopped only once the peer
    // drained it too (the local proxy has nothing in flight on it).
    let at = peer.listen;
    let slow = tokio::spawn(async move {
        get_with_timeout(
            at,
            "web.localhost",
            "/slow?ms=3000",
            Duration::from_secs(20),
        )
        .await
    });
    assert!(
        wait_until(PATIENCE, || async {
            molt(server, &["logs", "web"])
                .stdout
                .contains("slow request started")
        })
        .await,
        "the slow request never reached v1"
    );
    ok(molt(server, &["deploy", "web", &rig.images[1]]));
    let (status, body) = slow.await.expect("join").expect("the slow request");
    assert_eq!((status, body.trim()), (200, "slow v1"), "finished on v1");
    assert_eq!(served(peer.listen, "web.localhost").await, "testapp v2");

    let local = Load::start_bounded(
        server.proxy_addr(),
        "web.localhost",
        4,
        Duration::from_secs(30),
        Duration::from_secs(150),
    );
    let remote = Load::start_bounded(
        peer.listen,
        "web.localhost",
        4,
        Duration::from_secs(30),
        Duration::from_secs(150),
    );
    let order = [2, 0, 1, 2];
    for i in order {
        ok(molt(server, &["deploy", "web", &rig.images[i]]));
    }
    let local = local.finish().await;
    let remote = remote.finish().await;
    eprintln!(
        "{} deploys: server's proxy {} ok, {} failed; peer {} ok, {} failed; peer saw {:?}",
        order.len(),
        local.ok,
        local.failed,
        remote.ok,
        remote.failed,
        remote.bodies
    );
    assert_eq!(local.failed, 0, "server's proxy: {:?}", local.errors);
    assert_eq!(remote.failed, 0, "peer: {:?}", remote.errors);
    assert!(local.ok > 100 && remote.ok > 100, "the loads ran");
    assert!(
        remote.bodies.contains_key("testapp v1") && remote.bodies.contains_key("testapp v3"),
        "the peer followed the deploys: {:?}",
        remote.bodies
    );
    assert_eq!(served(peer.listen, "web.localhost").await, "testapp v3");
    assert!(!server.log().contains("out of date"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_is_refused_and_a_peer_that_was_down_catches_up() {
    let mut rig = rig().await;

    // A wrong token gets a refusal and nothing else; the peer logs it,
    // without the token.
    let wrong = molt_proxy::AdminToken::new(&"0".repeat(48)).expect("token");
    let err = molt_proxy::AdminClient::tcp(&rig.peer.admin.to_string(), wrong)
        .expect("client")
        .list_routes()
        .await
        .expect_err("a wrong token");
    assert!(err.to_string().contains("admin token"), "{err}");
    let log = rig.peer.log();
    assert!(log.contains("admin connection refused"), "{log}");
    let token = std::fs::read_to_string(&rig.peer.token_file).expect("token");
    assert!(!log.contains(token.trim()), "the token is not logged");
    assert!(!rig.server.log().contains(token.trim()));

    // The peer goes down: a deploy still succeeds, and promptly.
    rig.peer.kill();
    let started = Instant::now();
    ok(molt(&rig.server, &["deploy", "web", &rig.images[1]]));
    let took = started.elapsed();
    eprintln!("deploy with the peer down took {took:?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_eq!(
        served(rig.server.proxy_addr(), "web.localhost").await,
        "testapp v2"
    );
    let server = &rig.server;
    assert!(
        wait_until(PATIENCE, || async {
            molt(server, &["debug", "web", "--json"])
                .stdout
                .contains("proxy_peer_out_of_date")
        })
        .await,
        "molt debug names the peer that is out of date"
    );
    let metrics = http_request(
        server.api_addr(),
        "GET",
        "127.0.0.1",
        "/metrics",
        &[("Authorization", &format!("Bearer {}", server.token()))],
        b"",
        Duration::from_secs(10),
    )
    .expect("metrics");
    let metrics = metrics.text();
    let gauge = format!("molt_proxy_peer_in_date{{peer=\"{}\"}} 0", rig.peer.admin);
    assert!(metrics.contains(&gauge), "{metrics}");
    assert!(server.log().contains("proxy peer is out of date"));

    // Back with its persisted routes (v1's container, gone since): it is
    // brought in date at once and serves v2.
    rig.peer.spawn();
    let at = rig.peer.listen;
    assert!(
        wait_until(PATIENCE, || async {
            served(at, "web.localhost").await == "testapp v2"
        })
        .await,
        "the peer never caught up; server log:\n{}",
        rig.server.log()
    );
    let server = &rig.server;
    assert!(
        wait_until(PATIENCE, || async {
            !molt(server, &["debug", "web", "--json"])
                .stdout
                .contains("proxy_peer_out_of_date")
        })
        .await,
        "the peer counts as in date again"
    );
    ok(molt(server, &["deploy", "web", &rig.images[2]]));
    assert_eq!(served(at, "web.localhost").await, "testapp v3");

    // A peer whose table drifted (here: a route removed behind the
    // server's back) is corrected by the periodic comparison.
    let token = std::fs::read_to_string(&rig.peer.token_file).expect("token");
    let right = molt_proxy::AdminToken::new(token.trim()).expect("token");
    molt_proxy::AdminClient::tcp(&rig.peer.admin.to_string(), right)
        .expect("client")
        .remove_route("web")
        .await
        .expect("remove on the peer");
    assert_ne!(served(at, "web.localhost").await, "testapp v3");
    let drifted = Instant::now();
    assert!(
        wait_until(PATIENCE, || async {
            served(at, "web.localhost").await == "testapp v3"
        })
        .await,
        "the drift was never corrected"
    );
    eprintln!("a drifted peer was corrected in {:?}", drifted.elapsed());
}

/// `curl` over HTTPS to `host` at `https` (on 127.0.0.1), trusting `ca`:
/// the body, or why not.
fn curl(https: SocketAddr, host: &str, ca: &Path) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", https.port()))
        .arg(format!("https://{host}:{}/", https.port()))
        .output()
        .expect("running curl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_reach_the_peer_and_come_back_after_it_restarts() {
    let mut rig = rig().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["web.example.test".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (crt, pem_key) = (dir.path().join("web.crt"), dir.path().join("web.key"));
    std::fs::write(&crt, cert.pem()).expect("write");
    std::fs::write(&pem_key, key.serialize_pem()).expect("write");
    ok(molt(
        &rig.server,
        &[
            "certs",
            "add",
            "web.example.test",
            "--cert",
            crt.to_str().expect("utf-8"),
            "--key",
            pem_key.to_str().expect("utf-8"),
        ],
    ));
    let https = rig.peer.https;
    assert!(
        wait_until_sync(PATIENCE, || curl(https, "web.example.test", &crt)
            == "testapp v1"),
        "the peer never served HTTPS: {}",
        curl(https, "web.example.test", &crt)
    );

    // Kept in memory only: a restarted peer has none, and gets it again.
    rig.peer.kill();
    rig.peer.spawn();
    assert!(
        wait_until_sync(PATIENCE, || curl(https, "web.example.test", &crt)
            == "testapp v1"),
        "the restarted peer never served HTTPS again: {}",
        curl(https, "web.example.test", &crt)
    );
    let peer_files = std::fs::read_dir(&rig.peer.dir)
        .expect("peer dir")
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap_or_default())
        .collect::<Vec<_>>();
    let secret = key.serialize_pem();
    let secret_line = secret.lines().nth(1).expect("a key line");
    assert!(
        peer_files
            .iter()
            .all(|f| !String::from_utf8_lossy(f).contains(secret_line)),
        "no private key in the peer's files"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_hangs_holds_a_deploy_up_for_seconds_only() {
    let rig = rig().await;
    rig.peer.signal(libc::SIGSTOP);
    let started = Instant::now();
    ok(molt(&rig.server, &["deploy", "web", &rig.images[1]]));
    let took = started.elapsed();
    eprintln!("deploy with the peer frozen took {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(
        served(rig.server.proxy_addr(), "web.localhost").await,
        "testapp v2"
    );
    let started = Instant::now();
    ok(molt(&rig.server, &["deploy", "web", &rig.images[2]]));
    eprintln!(
        "the next deploy, the peer known out of date, took {:?}",
        started.elapsed()
    );

    rig.peer.signal(libc::SIGCONT);
    let at = rig.peer.listen;
    assert!(
        wait_until(PATIENCE, || async {
            served(at, "web.localhost").await == "testapp v3"
        })
        .await,
        "the thawed peer never caught up; server log:\n{}",
        rig.server.log()
    );
}
