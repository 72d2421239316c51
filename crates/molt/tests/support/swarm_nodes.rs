//! A swarm of three Docker engines on this machine, each in a network
//! namespace of the test's own, for tests of Molt across nodes.
//!
//! ```text
//!   host: bridge moltsn0 10.210.0.254
//!     ├─ veth moltsn1 ── netns molt-sn1: eth0 10.210.0.1, dockerd (manager)
//!     ├─ veth moltsn2 ── netns molt-sn2: eth0 10.210.0.2, dockerd (worker)
//!     └─ veth moltsn3 ── netns molt-sn3: eth0 10.210.0.3, dockerd (worker,
//!                         label gpu=true, generic resource NVIDIA-GPU)
//! ```
//!
//! Each `dockerd` has its own data root, exec root, pid file and unix
//! socket under [`BASE`], and a host name of its own (`molt-node-N`, in a
//! UTS namespace), which is its node's name. It is entered with `nsenter
//! --net` rather than `ip netns exec`, whose fresh mount view hides the
//! cgroups. The Molt server under test runs on the host and drives the
//! manager through its socket (`DOCKER_HOST`); its proxy reaches the tasks
//! at `10.210.0.N:PORT` over the bridge. Images come from a registry at
//! `127.0.0.1:PORT`, the same on the host and in each namespace: four
//! `docker-registry` processes, one per loopback, serve one storage
//! directory (engines and Molt speak plain HTTP to loopback registries).
//!
//! A test may also run a `molt proxy` inside one node's namespace, as a
//! peer of the server ([`SwarmNodes::start_peer`]): it listens on that
//! node's address and is reached from the host over the bridge.
//!
//! Names and addresses are fixed, so one run at a time uses them: whatever
//! a killed earlier run left is removed first, and everything is removed
//! again on drop (a failed test included). The host's own engine is never
//! touched, and the host's firewall gets one rule, for the bridge alone.

use super::{run_bounded, wait_until_sync, TestImages};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the engines keep their state.
pub const BASE: &str = "/tmp/molt-swarm-nodes";
/// The host's bridge joining the namespaces.
const BRIDGE: &str = "moltsn0";
/// The host's address on the bridge (the registry listens there).
const HOST_ADDR: &str = "10.210.0.254";
/// How many engines: the first is the manager.
pub const NODES: usize = 3;
/// The node labelled `gpu=true`, with one `NVIDIA-GPU`.
pub const GPU_NODE: usize = 3;
/// The firewall rule that lets the namespaces talk across the bridge (the
/// host's engine sets the FORWARD policy to DROP, and bridged traffic
/// passes through it).
const FORWARD_RULE: &[&str] = &[
    "FORWARD",
    "-i",
    BRIDGE,
    "-o",
    BRIDGE,
    "-m",
    "comment",
    "--comment",
    "molt-test-swarm-nodes",
    "-j",
    "ACCEPT",
];

/// Where a peer proxy serves HTTP and the admin protocol, on its node's
/// address (the namespace is the test's own, so fixed ports are free, and
/// they stay clear of the range the engines publish tasks on).
const PEER_HTTP_PORT: u16 = 8080;
const PEER_ADMIN_PORT: u16 = 7701;
/// What a peer proxy's command line has, so that a killed run's peer is
/// told from other processes by its pid file.
const PEER_MARK: &str = "--admin-listen";

/// A `molt proxy` running in a node's namespace as a peer of the server;
/// the swarm stops it when dropped.
pub struct NodePeer {
    /// Where it serves the Apps' HTTP traffic (the node's address).
    pub listen: SocketAddr,
    /// Where it serves the admin protocol (for `--proxy-peer`).
    pub admin: SocketAddr,
    /// The token file it and the server share.
    pub token_file: PathBuf,
}

/// The running swarm; dropped, it is taken down.
pub struct SwarmNodes {
    engines: Vec<Child>,
    registries: Vec<Child>,
    peer: Option<Child>,
    /// The registry's port on every loopback.
    registry_port: u16,
}

/// The network namespace of node `n` (1-based).
fn netns(n: usize) -> String {
    format!("molt-sn{n}")
}

/// The host end of node `n`'s veth pair.
fn veth(n: usize) -> String {
    format!("moltsn{n}")
}

fn node_dir(n: usize) -> PathBuf {
    Path::new(BASE).join(format!("n{n}"))
}

/// Runs a command that must succeed (bounded), returning its stdout.
fn must(program: &str, args: &[&str]) -> String {
    let out = run_bounded(
        Command::new(program).args(args),
        None,
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("`{program} {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command whose failure is fine (cleaning up what may not exist).
fn may(program: &str, args: &[&str]) -> bool {
    run_bounded(
        Command::new(program).args(args),
        None,
        Duration::from_secs(60),
    )
    .is_ok_and(|o| o.status.success())
}

impl SwarmNodes {
    /// Removes what an earlier run left, then starts the three engines,
    /// makes the swarm (heartbeats each second, so a lost node is marked
    /// down within about three seconds), labels the GPU node, starts the
    /// registry and pushes the test images `v1`, `v2` and `unhealthy` to it
    /// (see [`image`](Self::image)).
    pub fn start() -> SwarmNodes {
        let started = Instant::now();
        // Built by the host's engine before anything else runs.
        let images = ["v1", "v2", "unhealthy"].map(TestImages::image);
        teardown();
        let taken = must("ip", &["-4", "route", "show", "to", "match", HOST_ADDR]);
        assert!(
            !taken.contains("10.210.0."),
            "10.210.0.0/24 is in use on this machine ({}); the three-engine test needs it for its bridge",
            taken.trim()
        );
        let mut nodes = SwarmNodes {
            engines: Vec::new(),
            registries: Vec::new(),
            peer: None,
            registry_port: super::free_port(),
        };
        must("ip", &["link", "add", BRIDGE, "type", "bridge"]);
        must(
            "ip",
            &["addr", "add", &format!("{HOST_ADDR}/24"), "dev", BRIDGE],
        );
        must("ip", &["link", "set", BRIDGE, "up"]);
        let mut rule = vec!["-I"];
        rule.extend(FORWARD_RULE);
        must("iptables", &rule);
        for n in 1..=NODES {
            nodes.start_engine(n);
        }
        for n in 1..=NODES {
            let up = wait_until_sync(Duration::from_secs(60), || {
                nodes
                    .try_docker(n, &["info", "--format", "{{.ID}}"])
                    .is_some()
            });
            assert!(
                up,
                "the engine of node {n} did not answer within 60 s; its log:\n{}",
                std::fs::read_to_string(node_dir(n).join("dockerd.log")).unwrap_or_default()
            );
        }
        nodes.docker(
            1,
            &[
                "swarm",
                "init",
                "--advertise-addr",
                &Self::addr(1),
                "--listen-addr",
                &format!("{}:2377", Self::addr(1)),
                "--dispatcher-heartbeat",
                "1s",
            ],
        );
        let token = nodes.docker(1, &["swarm", "join-token", "--quiet", "worker"]);
        for n in 2..=NODES {
            nodes.docker(
                n,
                &[
                    "swarm",
                    "join",
                    "--token",
                    token.trim(),
                    "--advertise-addr",
                    &Self::addr(n),
                    "--listen-addr",
                    &format!("{}:2377", Self::addr(n)),
                    &format!("{}:2377", Self::addr(1)),
                ],
            );
        }
        let ready = wait_until_sync(Duration::from_secs(60), || {
            nodes
                .docker(1, &["node", "ls", "--format", "{{.Status}}"])
                .lines()
                .filter(|s| *s == "Ready")
                .count()
                == NODES
        });
        assert!(
            ready,
            "the nodes did not all become ready: {}",
            nodes.docker(1, &["node", "ls"])
        );
        nodes.docker(
            1,
            &[
                "node",
                "update",
                "--label-add",
                "gpu=true",
                &Self::name(GPU_NODE),
            ],
        );
        nodes.start_registry();
        nodes.push_images(&images);
        eprintln!(
            "a swarm of {NODES} engines is up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        nodes
    }

    /// Node `n`'s address on the bridge (its swarm address).
    pub fn addr(n: usize) -> String {
        format!("10.210.0.{n}")
    }

    /// Node `n`'s name in the swarm (its host name).
    pub fn name(n: usize) -> String {
        format!("molt-node-{n}")
    }

    /// Which node has `addr` (`10.210.0.N:PORT` or `10.210.0.N`).
    pub fn node_of(addr: &str) -> Option<usize> {
        let host = addr.split(':').next()?;
        (1..=NODES).find(|n| Self::addr(*n) == host)
    }

    /// `DOCKER_HOST` of the manager, for the Molt server under test.
    pub fn manager_host(&self) -> String {
        format!("unix://{}", node_dir(1).join("docker.sock").display())
    }

    /// The registry reference of a pushed test image (`v1`, `v2`,
    /// `unhealthy`).
    pub fn image(&self, variant: &str) -> String {
        format!("127.0.0.1:{}/testapp:{variant}", self.registry_port)
    }

    /// `docker -H NODE ARGS`, which must succeed; its stdout.
    pub fn docker(&self, n: usize, args: &[&str]) -> String {
        let host = format!("unix://{}", node_dir(n).join("docker.sock").display());
        let mut full = vec!["-H", host.as_str()];
        full.extend(args);
        must("docker", &full)
    }

    /// `docker -H NODE ARGS`; its stdout, or `None` when it failed.
    pub fn try_docker(&self, n: usize, args: &[&str]) -> Option<String> {
        let host = format!("unix://{}", node_dir(n).join("docker.sock").display());
        let out = run_bounded(
            Command::new("docker").arg("-H").arg(&host).args(args),
            None,
            Duration::from_secs(60),
        )
        .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `molt proxy` in node `n`'s namespace, listening on the node's
    /// address, with the admin protocol on for a server's `--proxy-peer`
    /// (its own data dir and token file under [`BASE`]); waits until the
    /// host reaches its admin address over the bridge.
    pub fn start_peer(&mut self, n: usize) -> NodePeer {
        assert!(self.peer.is_none(), "one peer proxy at a time");
        let dir = Path::new(BASE).join("peer");
        std::fs::create_dir_all(&dir).expect("creating the peer's dir failed");
        let token_file = dir.join("peer-token");
        std::fs::write(&token_file, format!("{}\n", "5a".repeat(24)))
            .expect("writing the peer token failed");
        let ip: std::net::IpAddr = Self::addr(n).parse().expect("a node address");
        let peer = NodePeer {
            listen: SocketAddr::new(ip, PEER_HTTP_PORT),
            admin: SocketAddr::new(ip, PEER_ADMIN_PORT),
            token_file,
        };
        let log = std::fs::File::create(dir.join("peer.log")).expect("creating a log failed");
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", netns(n)))
            .arg(env!("CARGO_BIN_EXE_molt"))
            .arg("proxy")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(peer.listen.to_string())
            .arg(PEER_MARK)
            .arg(peer.admin.to_string())
            .arg("--admin-token-file")
            .arg(&peer.token_file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a log handle failed"))
            .stderr(log)
            .spawn()
            .expect("starting molt proxy with nsenter failed");
        // nsenter execs the proxy: the pid is the proxy's.
        std::fs::write(dir.join("peer.pid"), child.id().to_string())
            .expect("writing the peer's pid failed");
        self.peer = Some(child);
        let admin = peer.admin;
        let up = wait_until_sync(Duration::from_secs(30), || {
            std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2)).is_ok()
        });
        assert!(
            up,
            "the peer proxy in node {n} never listened on {admin}; its log:\n{}",
            self.peer_log()
        );
        peer
    }

    /// What the peer proxy logged so far.
    pub fn peer_log(&self) -> String {
        std::fs::read_to_string(Path::new(BASE).join("peer/peer.log")).unwrap_or_default()
    }

    /// Cuts node `n` off the network (its veth goes down), as a host that
    /// lost power or its link looks to the others: nothing it runs answers.
    pub fn cut(&self, n: usize) {
        must("ip", &["link", "set", &veth(n), "down"]);
    }

    /// The node each running task of the services with `label` runs on
    /// (node numbers, one per task).
    pub fn task_nodes(&self, label: &str) -> Vec<usize> {
        let ids = self.docker(
            1,
            &[
                "service",
                "ls",
                "--quiet",
                "--filter",
                &format!("label={label}"),
            ],
        );
        let mut nodes = Vec::new();
        for id in ids.split_whitespace() {
            let tasks = self.docker(
                1,
                &[
                    "service",
                    "ps",
                    "--filter",
                    "desired-state=running",
                    "--format",
                    "{{.Node}}",
                    id,
                ],
            );
            for node in tasks.split_whitespace() {
                if let Some(n) = (1..=NODES).find(|n| Self::name(*n) == node) {
                    nodes.push(n);
                }
            }
        }
        nodes.sort();
        nodes
    }

    fn start_engine(&mut self, n: usize) {
        let ns = netns(n);
        let dir = node_dir(n);
        std::fs::create_dir_all(&dir).expect("creating an engine's dir failed");
        must("ip", &["netns", "add", &ns]);
        must(
            "ip",
            &[
                "link",
                "add",
                &veth(n),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ],
        );
        must("ip", &["link", "set", &veth(n), "master", BRIDGE, "up"]);
        let inside = |args: &[&str]| {
            let mut full = vec!["-n", ns.as_str()];
            full.extend(args);
            must("ip", &full);
        };
        inside(&[
            "addr",
            "add",
            &format!("{}/24", Self::addr(n)),
            "dev",
            "eth0",
        ]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "default", "via", HOST_ADDR]);
        let gpu = if n == GPU_NODE {
            "--node-generic-resource NVIDIA-GPU=GPU-molt-test-0"
        } else {
            ""
        };
        let d = dir.display();
        let script = format!(
            "hostname {name} && exec dockerd --data-root {d}/data --exec-root {d}/x \
             --pidfile {d}/dockerd.pid -H unix://{d}/docker.sock --storage-driver overlay2 {gpu}",
            name = Self::name(n)
        );
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("creating a log failed");
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .args(["unshare", "--uts", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a log handle failed"))
            .stderr(log)
            .spawn()
            .expect("starting dockerd with nsenter failed (needs util-linux and root)");
        self.engines.push(child);
    }

    /// One registry per loopback (the host's, then each node's), all on
    /// one storage directory.
    fn start_registry(&mut self) {
        let dir = Path::new(BASE).join("registry");
        std::fs::create_dir_all(&dir).expect("creating the registry dir failed");
        let config = dir.join("config.yml");
        let port = self.registry_port;
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
                dir.join("data").display()
            ),
        )
        .expect("writing the registry config failed");
        for n in 0..=NODES {
            let log = std::fs::File::create(dir.join(format!("registry-{n}.log")))
                .expect("creating a log failed");
            let mut cmd = if n == 0 {
                Command::new("docker-registry")
            } else {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net=/var/run/netns/{}", netns(n)))
                    .arg("docker-registry");
                cmd
            };
            let child = cmd
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("cloning a log handle failed"))
                .stderr(log)
                .spawn()
                .expect("starting docker-registry failed (the docker-registry package)");
            std::fs::write(
                dir.join(format!("registry-{n}.pid")),
                child.id().to_string(),
            )
            .expect("writing a registry pid failed");
            self.registries.push(child);
        }
        let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
        let up = wait_until_sync(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && (1..=NODES).all(|n| {
                    let ns = format!("--net=/var/run/netns/{}", netns(n));
                    may("nsenter", &[ns.as_str(), "bash", "-c", probe.as_str()])
                })
        });
        assert!(up, "the registry did not listen on 127.0.0.1:{port}");
    }

    /// Loads the host's test images into the manager and pushes them to the
    /// registry from there (the host's engine does not trust it).
    fn push_images(&self, images: &[String]) {
        let tar = Path::new(BASE).join("images.tar");
        let mut save = vec!["save", "--output", tar.to_str().unwrap()];
        save.extend(images.iter().map(String::as_str));
        must("docker", &save);
        self.docker(1, &["load", "--input", tar.to_str().unwrap()]);
        for (image, variant) in images.iter().zip(["v1", "v2", "unhealthy"]) {
            let target = self.image(variant);
            self.docker(1, &["tag", image, &target]);
            self.docker(1, &["push", &target]);
        }
    }
}

impl Drop for SwarmNodes {
    fn drop(&mut self) {
        if let Some(mut peer) = self.peer.take() {
            let _ = peer.kill();
            let _ = peer.wait();
        }
        for mut registry in self.registries.drain(..) {
            let _ = registry.kill();
            let _ = registry.wait();
        }
        teardown();
        for mut engine in self.engines.drain(..) {
            let _ = engine.kill();
            let _ = engine.wait();
        }
    }
}

/// The pid in a pid file, when that process still runs `name`.
fn live_pid(file: &Path, name: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmd).contains(name).then_some(pid)
}

/// Stops a peer proxy, the engines (a clean stop stops their containers
/// and their containerd; a kill after 30 s), the registry, and removes the
/// namespaces, the bridge, the firewall rule, the mounts and the files.
/// Safe to run when nothing is there.
fn teardown() {
    let base = Path::new(BASE);
    // A Molt server (and its proxy) of a killed run, still driving the
    // manager: found by its `DOCKER_HOST`.
    let ours = format!("DOCKER_HOST=unix://{BASE}/");
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains("molt")
            && env
                .split(|b| *b == 0)
                .any(|v| v.starts_with(ours.as_bytes()))
        {
            may("kill", &["-KILL", &pid.to_string()]);
        }
    }
    // A peer proxy of a killed run, in a namespace about to go.
    if let Some(pid) = live_pid(&base.join("peer/peer.pid"), PEER_MARK) {
        may("kill", &["-KILL", &pid.to_string()]);
    }
    for n in 0..=NODES {
        let file = base.join(format!("registry/registry-{n}.pid"));
        if let Some(pid) = live_pid(&file, "docker-registry") {
            may("kill", &["-KILL", &pid.to_string()]);
        }
    }
    let engines: Vec<(usize, u32)> = (1..=NODES)
        .filter_map(|n| Some((n, live_pid(&node_dir(n).join("dockerd.pid"), "dockerd")?)))
        .collect();
    for (_, pid) in &engines {
        may("kill", &["-TERM", &pid.to_string()]);
    }
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let stopped = wait_until_sync(Duration::from_secs(30), || {
        engines.iter().all(|(_, pid)| !alive(*pid))
    });
    if !stopped {
        for (n, pid) in &engines {
            may("kill", &["-KILL", &pid.to_string()]);
            // A killed dockerd leaves its containerd behind.
            let containerd = node_dir(*n).join("x/containerd/containerd.pid");
            if let Some(pid) = live_pid(&containerd, "containerd") {
                may("kill", &["-KILL", &pid.to_string()]);
            }
        }
    }
    // What the engines mounted under their roots, deepest first.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut ours: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(BASE))
        .collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in ours {
        may("umount", &["--lazy", mount]);
    }
    for n in 1..=NODES {
        may("ip", &["netns", "del", &netns(n)]);
        may("ip", &["link", "del", &veth(n)]);
    }
    may("ip", &["link", "del", BRIDGE]);
    let mut rule = vec!["-D"];
    rule.extend(FORWARD_RULE);
    while may("iptables", &rule) {}
    let _ = std::fs::remove_dir_all(base);
}
