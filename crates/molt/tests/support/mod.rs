//! Test harness shared by Molt's integration tests (`mod support;` in
//! `crates/molt/tests/*.rs`, and by `#[path]` in the `dashboard` test
//! binary's `tests/dashboard/main.rs`).
//!
//! Everything here is real: a Docker engine, `docker-registry` processes,
//! images built from `fixtures/testapp`, and the `molt` binary itself. The
//! harness only starts things, waits for them (always with a bound) and
//! cleans up after them on `Drop`, so a failing test leaves nothing behind.
//!
//! Most helpers are synchronous, so they can be called from `#[test]` and from
//! `#[tokio::test]` alike; the few that talk HTTP through reqwest are `async`.
//! All traffic goes to 127.0.0.1.
//!
//! - [`Registry`]: a private registry, with or without a password.
//! - [`TestImages`], [`push`], [`push_index_without_amd64`], [`Container`]:
//!   test images, pushed to a registry or run directly.
//! - [`MoltServer`], [`molt`], [`molt_input`], [`molt_with`]: the server under
//!   test and its CLI.
//!   [`create_app`], [`add_registry`], [`newest_deploy`] and [`ok`] wrap the
//!   CLI calls most tests make; [`CliOutput::json`] reads `--json` output and
//!   [`MoltServer::containers`] lists the instance's containers.
//! - [`get`], [`served`], [`http_request`], [`WsClient`], [`sse_events`]:
//!   talking to the proxy (or to a container) with a chosen `Host`.
//! - [`dashboard_session`], [`dashboard_get`], [`form_body`]: the dashboard
//!   over plain HTTP, logged in with the admin token.
//! - [`Load`]: continuous requests through the proxy, each one counted.
//! - [`PeerProxy`]: a second `molt proxy` whose routes the server pushes.
//! - [`SwarmNodes`]: a swarm of three engines in network namespaces, and a
//!   peer proxy in one of them ([`NodePeer`]).
//! - [`wait_until`], [`wait_for`], [`wait_until_sync`]: bounded polling.

// Each test binary uses a different subset of the harness.
#![allow(dead_code, unused_imports)]

mod dashboard;
mod http;
mod images;
mod load;
mod peer;
mod registry;
mod server;
mod swarm_nodes;

pub use dashboard::{dashboard_get, dashboard_session, form_body};
pub use http::{
    basic_auth, get, get_with_timeout, http_get, http_request, proxy_client, served, sse_events,
    HttpResponse, WsClient, WsMessage,
};
pub use images::{
    image_name, manifest_digest, push, push_index_without_amd64, Container, LocalTag, TestImages,
    VARIANTS,
};
pub use load::{Load, LoadReport};
pub use peer::PeerProxy;
pub use registry::Registry;
pub use server::{
    add_registry, create_app, molt, molt_input, molt_with, newest_deploy, ok, CliOutput, MoltServer,
};
pub use swarm_nodes::{NodePeer, SwarmNodes, GPU_NODE};

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the wait helpers check their condition.
const POLL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns true or `timeout` passes; returns whether it
/// became true. Use it as `assert!(wait_until(..).await, "what we waited for")`.
/// Each check is itself cut off at the deadline, so a hung check cannot
/// stretch the bound.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, move || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Like [`wait_until`], but returns the first `Some` value `check` produces.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Ok(Some(value)) = tokio::time::timeout(remaining, check()).await {
            return Some(value);
        }
        if tokio::time::Instant::now() + POLL > deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Synchronous [`wait_until`], for blocking helpers and `#[test]`s.
pub fn wait_until_sync(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() + POLL > deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago. (Another process could
/// take it before we bind it again; on a test machine that is rare enough.)
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports: all listeners are held until every port is chosen,
/// so the kernel cannot hand out the same one twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .expect("binding 127.0.0.1:0 to find a free port failed: is the loopback up?")
        })
        .collect();
    let mut ports = [0u16; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
    }
    ports
}

/// The Cargo workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize()
        .unwrap_or_else(|e| panic!("cannot resolve the workspace root {}: {e}", root.display()))
}

/// Runs a command to completion within `timeout`, feeding it `stdin` (or a
/// closed stdin) and collecting its output. On timeout the command is killed
/// and an `io::ErrorKind::TimedOut` error returned.
pub fn run_bounded(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // On a thread, so a command that does not read cannot block us; a
        // command that exits without reading (EPIPE) is not our error.
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
            // Dropping the pipe closes it: the command sees end of input.
        });
    }
    // Pipes are drained on threads so a chatty command cannot block on a
    // full pipe while we wait for it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                let _ = tx.send(buf);
            });
        }
        rx
    };
    let out_rx = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_rx = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );

    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cmd:?} did not finish within {timeout:?} and was killed"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A grandchild could keep a pipe open; do not wait for it forever.
    let grace = Duration::from_secs(5);
    Ok(Output {
        status,
        stdout: out_rx.recv_timeout(grace).unwrap_or_default(),
        stderr: err_rx.recv_timeout(grace).unwrap_or_default(),
    })
}

/// Runs the `docker` CLI (tests may; Molt itself talks to the engine API).
/// Panics with the command's stderr when it fails.
pub fn docker(args: &[&str]) -> String {
    docker_with(None, args, None)
}

/// `docker` with an optional client config dir (registry credentials) and
/// stdin. Panics with the command's stderr when it fails.
pub fn docker_with(
    config: Option<&std::path::Path>,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> String {
    let out = try_docker(config, args, stdin);
    assert!(
        out.status.success(),
        "`docker {}` failed ({}): {}\n(is the engine running? `docker info` should work)",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker` without the success check, for commands expected to fail.
pub fn try_docker(config: Option<&std::path::Path>, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new("docker");
    if let Some(dir) = config {
        cmd.arg("--config").arg(dir);
    }
    // The classic builder: works on every engine and needs no buildx plugin.
    cmd.args(args).env("DOCKER_BUILDKIT", "0");
    run_bounded(&mut cmd, stdin, Duration::from_secs(300)).unwrap_or_else(|e| {
        panic!(
            "running `docker {}` failed: {e} (is the docker CLI installed?)",
            args.join(" ")
        )
    })
}
