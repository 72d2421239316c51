//! Molt on a swarm of three engines, each in a network namespace of the
//! test's own (see `support/swarm_nodes.rs`): an App's replicas spread over
//! the nodes and are reached at each node's address; deploys under load
//! lose no request; a GPU App lands on the node labelled for it; and when a
//! node is cut off under load, its replica leaves the route at once, the
//! history says so, and a replacement joins on another node once healthy.
//! A second `molt proxy` runs in a worker's namespace as the server's peer
//! (`--proxy-peer`), and the same load goes to it, at that node's address,
//! as to the server's proxy: it too loses no request to the deploys, and
//! no more than the server's proxy to the node's loss.
//!
//! Needs root (network namespaces, a bridge, three `dockerd`s). The host's
//! engine is left as it is: it never joins the swarm.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;

/// How many deploys run under load (alternating v2 and v1).
const DEPLOYS: usize = 10;
/// The most requests that may fail between a node's loss and its tasks
/// leaving the route: each of the load's connections can have one request
/// in flight to the lost node when it goes (a new connection to it is sent
/// on to another replica after the proxy's 5 s connect timeout).
const LOAD_CONNECTIONS: usize = 4;
/// The worker whose namespace runs the peer proxy. The node cut off is
/// the other worker: this test is of the tasks lost, not of a lost proxy.
const PEER_NODE: usize = 2;

/// The load on both proxies, the server's and the peer's.
struct BothLoads {
    server: Load,
    peer: Load,
}

impl BothLoads {
    fn start(server: &MoltServer, peer: &NodePeer, bounds: Option<(Duration, Duration)>) -> Self {
        let start = |at| match bounds {
            Some((request, run)) => {
                Load::start_bounded(at, "web.localhost", LOAD_CONNECTIONS, request, run)
            }
            None => Load::start(at, "web.localhost", LOAD_CONNECTIONS),
        };
        BothLoads {
            server: start(server.proxy_addr()),
            peer: start(peer.listen),
        }
    }

    /// Waits until each has had `ok` requests answered.
    async fn reached(&self, ok: u64, within: Duration) -> bool {
        wait_until(within, || async {
            self.server.ok() >= ok && self.peer.ok() >= ok
        })
        .await
    }

    /// (server's proxy, peer)
    async fn finish(self) -> (LoadReport, LoadReport) {
        (self.server.finish().await, self.peer.finish().await)
    }
}

/// The serving replicas of `app`: (replica, address).
fn replicas(server: &MoltServer, app: &str) -> Vec<(u64, String)> {
    let view = molt(server, &["apps", "show", app, "--json"]).json();
    let mut found: Vec<(u64, String)> = view["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("no containers in {view}"))
        .iter()
        .map(|c| {
            (
                c["replica"].as_u64().unwrap(),
                c["address"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

/// The nodes (1-based) that `app`'s serving replicas are reached on.
fn replica_nodes(server: &MoltServer, app: &str) -> Vec<usize> {
    let mut nodes: Vec<usize> = replicas(server, app)
        .iter()
        .filter_map(|(_, addr)| SwarmNodes::node_of(addr))
        .collect();
    nodes.sort();
    nodes
}

/// The peer took every change in time: the server never marked it out of
/// date (which it logs, and after which deploys go on without it).
fn assert_peer_kept_in_date(server: &MoltServer) {
    let log = server.log();
    assert!(
        !log.contains("proxy peer is out of date"),
        "the peer stayed in date; server log:\n{log}"
    );
}

/// The timeline of one deploy of `app`, one message a line.
fn timeline(server: &MoltServer, app: &str, deploy: &str) -> String {
    let view = molt(server, &["deploys", "show", app, deploy, "--json"]).json();
    view["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["message"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn on_three_engines_deploys_placement_and_node_loss() {
    let mut nodes = SwarmNodes::start();
    let peer = nodes.start_peer(PEER_NODE);
    let manager = nodes.manager_host();
    let server = MoltServer::start_with(
        None,
        &[
            "--orchestrator",
            "swarm",
            "--gpus",
            "1",
            "--proxy-peer",
            &peer.admin.to_string(),
            "--proxy-peer-token-file",
            peer.token_file.to_str().expect("a UTF-8 path"),
        ],
        &[("DOCKER_HOST", manager.as_str())],
    );
    let (v1, v2) = (nodes.image("v1"), nodes.image("v2"));
    create_app(
        &server,
        "web",
        &v1,
        &[
            "--replicas",
            "3",
            "--health-path",
            "/healthz",
            "--health-timeout",
            "30",
            "--drain-timeout",
            "2",
            "--memory",
            "32m",
        ],
    );
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );
    let at = peer.listen;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            served(at, "web.localhost").await == "testapp v1"
        })
        .await,
        "the peer in node {PEER_NODE} serves web at {at}: {}; its log:\n{}\nserver log:\n{}",
        served(at, "web.localhost").await,
        nodes.peer_log(),
        server.log()
    );

    // Swarm spreads the replicas; the proxy reaches each at its node's
    // address (not loopback) and published port.
    let spread = replica_nodes(&server, "web");
    eprintln!("replicas of web: {:?}", replicas(&server, "web"));
    assert_eq!(spread.len(), 3, "{:?}", replicas(&server, "web"));
    let mut distinct = spread.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "the replicas run on more than one node: {spread:?}"
    );

    // Deploys under load, on both proxies, lose no request.
    let started = Instant::now();
    let load = BothLoads::start(&server, &peer, None);
    assert!(
        load.reached(20, Duration::from_secs(10)).await,
        "the load did not start"
    );
    for i in 0..DEPLOYS {
        let image = if i % 2 == 0 { &v2 } else { &v1 };
        let out = molt(&server, &["deploy", "web", image]);
        assert_eq!(out.status, 0, "deploy {i} of {image}: {out}");
    }
    let (report, on_peer) = load.finish().await;
    eprintln!(
        "{DEPLOYS} deploys of 3 replicas on 3 nodes in {:.1} s: server's proxy {report}; peer {on_peer}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(report.failed, 0, "failed requests: {:?}", report.errors);
    assert!(report.ok > 100, "the load ran ({})", report.ok);
    assert_eq!(
        on_peer.failed,
        0,
        "failed requests on the peer: {:?}; its log:\n{}",
        on_peer.errors,
        nodes.peer_log()
    );
    assert!(
        on_peer.ok > 100,
        "the load on the peer ran ({})",
        on_peer.ok
    );
    assert_peer_kept_in_date(&server);
    // The proxy sends a request whose connection is refused on to another
    // replica, which would hide a target the peer cannot reach: its log
    // shows each such refusal.
    let peer_log = nodes.peer_log();
    assert!(
        !peer_log.contains("upstream connection failed"),
        "the peer reached every replica it was sent to; its log:\n{peer_log}"
    );
    assert_eq!(replicas(&server, "web").len(), 3);

    // A GPU App lands on the labelled node, the only one with a GPU.
    create_app(
        &server,
        "infer",
        &v1,
        &[
            "--gpus",
            "1",
            "--constraint",
            "node.labels.gpu==true",
            "--memory",
            "32m",
        ],
    );
    assert_eq!(replica_nodes(&server, "infer"), vec![GPU_NODE]);
    assert_eq!(
        served(server.proxy_addr(), "infer.localhost").await,
        "testapp v1"
    );
    assert_eq!(served(peer.listen, "infer.localhost").await, "testapp v1");
    ok(molt(&server, &["apps", "delete", "infer", "--yes"]));

    // The worker without the peer, which runs a replica, is cut off under
    // load.
    let victim = *replica_nodes(&server, "web")
        .iter()
        .find(|n| **n != 1 && **n != PEER_NODE)
        .unwrap_or_else(|| {
            panic!(
                "a replica runs on the worker without the peer: {:?}",
                replicas(&server, "web")
            )
        });
    let lost: Vec<u64> = replicas(&server, "web")
        .into_iter()
        .filter(|(_, addr)| SwarmNodes::node_of(addr) == Some(victim))
        .map(|(r, _)| r)
        .collect();
    let serving_deploy = molt(&server, &["apps", "show", "web", "--json"]).json()["current_deploy"]
        .as_str()
        .unwrap()
        .to_string();
    // Requests may wait for the route change (30 s each at most), so each
    // connection fails at most the one request it had in flight.
    let window = BothLoads::start(&server, &peer, None);
    assert!(
        window.reached(20, Duration::from_secs(10)).await,
        "the load did not start"
    );
    let cut_at = Instant::now();
    nodes.cut(victim);
    let victim_name = SwarmNodes::name(victim);
    let told = format!(
        "node {victim_name} is down: replica {} left the route",
        lost[0]
    );
    assert!(
        wait_until(Duration::from_secs(60), || async {
            timeline(&server, "web", &serving_deploy).contains(&told)
        })
        .await,
        "the history tells `{told}`; timeline:\n{}\nserver log:\n{}",
        timeline(&server, "web", &serving_deploy),
        server.log()
    );
    let detected = cut_at.elapsed();
    // From here on no request goes to the lost node.
    let after = BothLoads::start(
        &server,
        &peer,
        Some((Duration::from_secs(10), Duration::from_secs(120))),
    );
    let (window, peer_window) = window.finish().await;
    eprintln!(
        "node {victim_name} cut: its replica(s) {lost:?} left the route after {:.1} s; during that window: server's proxy {window}; peer {peer_window}",
        detected.as_secs_f64()
    );
    assert!(
        window.failed <= LOAD_CONNECTIONS as u64,
        "at most one request per connection fails while the loss is detected: {window}"
    );
    assert!(
        peer_window.failed <= LOAD_CONNECTIONS as u64,
        "at most one request per connection fails on the peer while the loss is detected: {peer_window}"
    );

    // A replacement is placed on a live node and joins once healthy.
    let replaced = wait_until(Duration::from_secs(90), || async {
        let nodes = replica_nodes(&server, "web");
        nodes.len() == 3 && !nodes.contains(&victim)
    })
    .await;
    assert!(
        replaced,
        "a replacement serves on another node: {:?}; server log:\n{}",
        replicas(&server, "web"),
        server.log()
    );
    let replaced_at = cut_at.elapsed();
    // Some more requests with every replica on a live node.
    assert!(
        after.reached(50, Duration::from_secs(10)).await,
        "the load runs"
    );
    let (after, peer_after) = after.finish().await;
    eprintln!(
        "after the route changed, until the replacement served ({:.1} s after the cut): server's proxy {after}; peer {peer_after}",
        replaced_at.as_secs_f64()
    );
    assert_eq!(
        after.failed, 0,
        "no request fails once the lost replica left the route: {:?}",
        after.errors
    );
    assert_eq!(
        peer_after.failed, 0,
        "no request fails on the peer once the lost replica left the route: {:?}",
        peer_after.errors
    );

    // The replacement deploy ends once the lost replica's target drained.
    let restart = || {
        let deploys = molt(&server, &["deploys", "web", "--json"]).json();
        deploys
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["kind"] == "restart")
            .cloned()
            .unwrap_or_else(|| panic!("a restart deploy replaced the replica: {deploys}"))
    };
    assert!(
        wait_until(Duration::from_secs(30), || async {
            restart()["status"] == "succeeded"
        })
        .await,
        "{}",
        restart()
    );
    let replacement = restart();
    let replacement_timeline = timeline(&server, "web", replacement["id"].as_str().unwrap());
    assert!(
        replacement_timeline.contains(&format!("replacing replica {}", lost[0])),
        "{replacement_timeline}"
    );
    let status: Value = molt(&server, &["apps", "show", "web", "--json"]).json()["status"].clone();
    assert_eq!(status, "running");

    // `molt debug` still tells where the lost replica ran and why it went.
    let debug = molt(&server, &["debug", "web", "--json"]).json();
    let tasks = debug["swarm_tasks"].as_array().expect("swarm_tasks");
    assert!(
        tasks.iter().any(|t| t["node"] == victim_name.as_str()
            && t["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("node {victim_name} is down")))),
        "{debug}"
    );
    assert_peer_kept_in_date(&server);
}
