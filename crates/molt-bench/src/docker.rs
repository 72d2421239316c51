//! Containers the benchmark runs itself (the baselines), through the docker
//! CLI as a plain deploy script would, and a minimal Docker Engine API call
//! path for timing a container's own start-up without the CLI's overhead.
//!
//! Every container carries the label `molt-bench.run=RUN_ID`; [`remove_run`]
//! removes all of them, whatever happened before.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http::Method;
use serde::Deserialize;

use crate::http::{request, Endpoint};
use crate::util::{run_stdout, run_sync_quiet};

pub const LABEL: &str = "molt-bench.run";
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// `docker ARGS`, bounded; stdout trimmed.
pub async fn docker(args: &[&str]) -> Result<String> {
    run_stdout("docker", args, CLI_TIMEOUT).await
}

/// A container started with `docker run -d`. Removed (`rm -f`) on drop unless
/// [`Container::stop`] already did.
pub struct Container {
    pub id: String,
    /// Its published 127.0.0.1 port, when it has one.
    pub port: Option<u16>,
    removed: bool,
}

impl Container {
    /// `docker run -d` of `image` labelled for `run_id`. `publish` is
    /// `Some(0)` for a port the engine picks, `Some(p)` for 127.0.0.1:p, None
    /// for no published port. `network` attaches it to a network.
    pub async fn run(
        run_id: &str,
        image: &str,
        publish: Option<u16>,
        network: Option<&str>,
    ) -> Result<Container> {
        let label = format!("{LABEL}={run_id}");
        let mut args = vec!["run", "--detach", "--label", &label];
        let publish_arg = publish.map(|p| match p {
            0 => "127.0.0.1::8080".to_string(),
            p => format!("127.0.0.1:{p}:8080"),
        });
        if let Some(p) = &publish_arg {
            args.extend(["--publish", p]);
        }
        let net_arg;
        if let Some(n) = network {
            net_arg = format!("--network={n}");
            args.push(&net_arg);
        }
        args.push(image);
        let id = docker(&args).await?;
        let mut c = Container {
            id,
            port: None,
            removed: false,
        };
        if publish.is_some() {
            let out = docker(&["port", &c.id, "8080/tcp"]).await?;
            // e.g. "127.0.0.1:49153"
            let port = out
                .lines()
                .find_map(|l| l.rsplit_once(':').and_then(|(_, p)| p.trim().parse().ok()))
                .with_context(|| format!("cannot read the published port of {}: {out:?}", c.id))?;
            c.port = Some(port);
        }
        Ok(c)
    }

    /// `docker stop` (SIGTERM, then SIGKILL after 10 s) and `docker rm`.
    pub async fn stop(mut self) -> Result<()> {
        docker(&["stop", "--time", "10", &self.id]).await?;
        docker(&["rm", "--force", &self.id]).await?;
        self.removed = true;
        Ok(())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.removed {
            run_sync_quiet(
                "docker",
                &["rm", "--force", &self.id],
                Duration::from_secs(30),
            );
        }
    }
}

/// The IP address of container `id` on its first network.
pub async fn container_ip(id: &str) -> Result<IpAddr> {
    let out = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        id,
    ])
    .await?;
    out.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("container {id} has no IP address: {out:?}"))
}

/// The engine's process id (from its pid file), to notice when something
/// else on the machine restarts the engine during a measurement: that stops
/// and restarts every container, and the numbers of that moment say nothing
/// about the systems compared.
pub fn engine_pid() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string("/var/run/docker.pid")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    crate::util::process_matches(pid, "dockerd").then_some(pid)
}

/// Waits (bounded) until the engine answers: other programs on a shared
/// machine may restart it, and cleaning up while it is away would leave
/// containers behind. Synchronous, for the cleanup path.
pub fn wait_for_engine(timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let up = std::process::Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if up {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Removes every container labelled for `run_id` (best effort, synchronous:
/// used on the cleanup path).
pub fn remove_run(run_id: &str) {
    if !wait_for_engine(Duration::from_secs(60)) {
        eprintln!("warning: the Docker engine does not answer; containers labelled {LABEL}={run_id} may be left");
        return;
    }
    let filter = format!("label={LABEL}={run_id}");
    let Ok(out) = std::process::Command::new("docker")
        .args(["ps", "--all", "--quiet", "--filter", &filter])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "--force"];
        args.extend(ids.iter().map(String::as_str));
        run_sync_quiet("docker", &args, Duration::from_secs(60));
    }
}

/// The engine's Unix socket (`DOCKER_HOST=unix://...` or the default).
fn engine_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

async fn engine(method: Method, path: &str, body: Option<serde_json::Value>) -> Result<Vec<u8>> {
    let sock = engine_socket();
    let body = body.map(|b| b.to_string().into_bytes());
    let reply = request(
        Endpoint::Unix(&sock),
        method.clone(),
        "docker",
        path,
        &[],
        body,
        CLI_TIMEOUT,
    )
    .await
    .with_context(|| format!("the Docker engine at {}", sock.display()))?;
    if reply.status >= 300 {
        bail!(
            "Docker engine: {method} {path} answered {}: {}",
            reply.status,
            reply.text().trim()
        );
    }
    Ok(reply.body.to_vec())
}

/// How long a container takes from "create it" to "it answers HTTP", measured
/// through the engine API (as Molt talks to the engine), not the CLI.
pub struct StartTiming {
    /// create + start calls returned.
    pub started: Duration,
    /// First 2xx on `GET /` at the container's address.
    pub serving: Duration,
}

/// Creates and starts `image` on `network` through the engine API, polls its
/// address every millisecond until `GET /` answers 2xx, then removes it.
pub async fn time_container_start(run_id: &str, image: &str, network: &str) -> Result<StartTiming> {
    #[derive(Deserialize)]
    struct Created {
        #[serde(rename = "Id")]
        id: String,
    }
    let t0 = Instant::now();
    let body = serde_json::json!({
        "Image": image,
        "Labels": { LABEL: run_id },
        // What Molt's runtime asks for too (crates/molt-server/src/runtime.rs),
        // so the comparison is like for like.
        "HostConfig": {
            "NetworkMode": network,
            "RestartPolicy": { "Name": "unless-stopped" },
            "SecurityOpt": ["no-new-privileges"],
        },
        "NetworkingConfig": { "EndpointsConfig": { network: {} } },
    });
    let created: Created =
        serde_json::from_slice(&engine(Method::POST, "/containers/create", Some(body)).await?)
            .context("unexpected answer to container create")?;
    // Removed on every path below.
    let guard = Container {
        id: created.id.clone(),
        port: None,
        removed: false,
    };
    engine(
        Method::POST,
        &format!("/containers/{}/start", guard.id),
        None,
    )
    .await?;
    let started = t0.elapsed();
    let info: serde_json::Value = serde_json::from_slice(
        &engine(Method::GET, &format!("/containers/{}/json", guard.id), None).await?,
    )?;
    let ip: IpAddr = info["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("container {} has no address on {network}", guard.id))?;
    let addr = SocketAddr::new(ip, 8080);
    let ok = crate::util::poll(
        Duration::from_secs(30),
        Duration::from_millis(1),
        || async {
            crate::http::get(addr, "bench", "/", Duration::from_millis(500))
                .await
                .ok()
                .filter(|r| (200..300).contains(&r.status))
        },
    )
    .await;
    let serving = t0.elapsed();
    drop(guard);
    if ok.is_none() {
        bail!("{image} did not answer on {addr} within 30 s of its start");
    }
    Ok(StartTiming { started, serving })
}
