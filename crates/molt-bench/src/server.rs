//! A real `molt server` (which starts its own `molt proxy`) on free ports of
//! 127.0.0.1 with a temp data dir and a Docker network of its own, driven
//! through its HTTP API. On drop the server and the proxy are stopped and
//! every container and the network of this installation are removed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http::Method;
use serde::Deserialize;
use tempfile::TempDir;

use crate::docker::docker;
use crate::http::{request, Endpoint, Reply};
use crate::util::{free_port, localhost, poll, process_matches, run_sync_quiet, terminate};

const API_TIMEOUT: Duration = Duration::from_secs(30);

/// A deploy as `GET /api/v1/apps/{name}/deploys/{id}` shows it (only what
/// the benchmark reads; unknown fields are ignored so the API can grow).
#[derive(Debug, Clone, Deserialize)]
pub struct Deploy {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// RFC 3339, millisecond precision, UTC.
    pub at: String,
    pub status: String,
    pub message: String,
}

impl Deploy {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "canceled")
    }

    /// The first event whose message starts with `prefix`.
    pub fn event(&self, prefix: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.message.starts_with(prefix))
    }

    /// Whether the timeline shows a recreate (the old container stopped
    /// before the new one started) rather than a blue-green swap.
    pub fn was_recreate(&self) -> bool {
        self.events.iter().any(|e| {
            let m = e.message.to_ascii_lowercase();
            m.contains("recreate") || m.contains("stopping the old")
        })
    }
}

impl Event {
    /// The event time as Unix nanoseconds.
    pub fn unix_nanos(&self) -> Result<i128> {
        let t =
            time::OffsetDateTime::parse(&self.at, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("event time {:?} is not RFC 3339", self.at))?;
        Ok(t.unix_timestamp_nanos())
    }
}

pub struct MoltServer {
    molt: PathBuf,
    data: TempDir,
    api: SocketAddr,
    proxy: SocketAddr,
    network: String,
    token: String,
    child: Option<Child>,
    /// Deploy requests answered 409 while no deploy of ours ran (then
    /// retried), and the first answers.
    refused: AtomicU64,
    refused_messages: Mutex<Vec<String>>,
}

impl MoltServer {
    /// `molt server --data-dir TMP --api 127.0.0.1:P --proxy 127.0.0.1:Q
    /// --network molt-bench-RUN`; waits until the API answers and the proxy
    /// listens.
    pub async fn start(molt: &Path, run_id: &str) -> Result<MoltServer> {
        if !molt.is_file() {
            bail!(
                "no molt binary at {}: build it with `cargo build --release -p molt` or pass --molt PATH",
                molt.display()
            );
        }
        let data = tempfile::Builder::new()
            .prefix("molt-bench-data-")
            .tempdir()
            .context("cannot create a temp data dir")?;
        let (api, proxy) = (localhost(free_port()?), localhost(free_port()?));
        let network = format!("molt-bench-{run_id}");
        let log = std::fs::File::create(data.path().join("server.log"))?;
        let child = Command::new(molt)
            .arg("server")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--api", &api.to_string(), "--proxy", &proxy.to_string()])
            .args(["--network", &network])
            // Per-request logging would slow the proxy; info has none.
            .env("RUST_LOG", "info")
            .env_remove("MOLT_SERVER")
            .env_remove("MOLT_TOKEN")
            .env_remove("MOLT_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} server", molt.display()))?;
        let mut server = MoltServer {
            molt: molt.to_path_buf(),
            data,
            api,
            proxy,
            network,
            token: String::new(),
            child: Some(child),
            refused: AtomicU64::new(0),
            refused_messages: Mutex::new(Vec::new()),
        };
        let token_file = server.data.path().join("admin-token");
        let ready = poll(
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async {
                let healthy =
                    crate::http::get(api, "localhost", "/healthz", Duration::from_secs(2))
                        .await
                        .is_ok_and(|r| r.status == 200);
                let token = std::fs::read_to_string(&token_file).ok()?;
                let proxy_up = tokio::net::TcpStream::connect(proxy).await.is_ok();
                (healthy && proxy_up && !token.trim().is_empty()).then(|| token.trim().to_string())
            },
        )
        .await;
        match ready {
            Some(token) => server.token = token,
            None => {
                let exited = server
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                bail!(
                    "molt server did not get ready (API {api}, proxy {proxy}) within 60 s (exit status: {exited:?}); its log:\n{}",
                    server.log()
                );
            }
        }
        Ok(server)
    }

    /// How many deploy requests were refused with 409 and retried, with the
    /// first few answers.
    pub fn refused_deploys(&self) -> (u64, Vec<String>) {
        let msgs = self.refused_messages.lock().unwrap();
        (
            self.refused.load(Ordering::Relaxed),
            msgs.iter().take(3).cloned().collect(),
        )
    }

    /// The running proxy's pid, from `DATA/proxy.pid`.
    pub fn proxy_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.path().join("proxy.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|p| process_matches(*p, "molt"))
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    pub fn molt_path(&self) -> &Path {
        &self.molt
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    fn instance_id(&self) -> Option<String> {
        let id = std::fs::read_to_string(self.data.path().join("instance-id")).ok()?;
        Some(id.trim().to_string()).filter(|s| !s.is_empty())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Reply> {
        let auth = format!("Bearer {}", self.token);
        request(
            Endpoint::Tcp(self.api),
            method,
            &self.api.to_string(),
            &format!("/api/v1{path}"),
            &[("Authorization", &auth)],
            body.map(|b| b.to_string().into_bytes()),
            API_TIMEOUT,
        )
        .await
    }

    /// `POST /api/v1/apps`; returns the first deploy.
    pub async fn create_app(&self, body: serde_json::Value) -> Result<Deploy> {
        #[derive(Deserialize)]
        struct Started {
            deploy: Deploy,
        }
        let name = body["name"].as_str().unwrap_or("?").to_string();
        let reply = self.call(Method::POST, "/apps", Some(body)).await?;
        if !(200..300).contains(&reply.status) {
            bail!(
                "creating App {name} was refused ({}): {}",
                reply.status,
                reply.text().trim()
            );
        }
        Ok(reply.json::<Started>()?.deploy)
    }

    /// `POST /api/v1/apps/{name}/deploys {image}`; returns the new deploy.
    pub async fn start_deploy(&self, app: &str, image: &str) -> Result<Deploy> {
        #[derive(Deserialize)]
        struct Started {
            deploy: Deploy,
        }
        // A 409 while the server briefly holds the App for itself (e.g. a
        // route resync after a container event) is retried for up to 10 s,
        // and counted: the benchmark measures traffic, the report says how
        // often the API pushed back.
        let mut tries = 0;
        let reply = loop {
            let reply = self
                .call(
                    Method::POST,
                    &format!("/apps/{app}/deploys"),
                    Some(serde_json::json!({ "image": image })),
                )
                .await?;
            // The benchmark never runs two deploys of an App at once, so
            // a 409 is always the server's own work on the App.
            if reply.status == 409 && tries < 100 {
                tries += 1;
                if tries == 1 {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    self.refused_messages
                        .lock()
                        .unwrap()
                        .push(reply.text().trim().chars().take(300).collect());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            break reply;
        };
        if !(200..300).contains(&reply.status) {
            bail!(
                "deploying {image} to {app} was refused ({}): {}",
                reply.status,
                reply.text().trim()
            );
        }
        Ok(reply.json::<Started>()?.deploy)
    }

    pub async fn get_deploy(&self, app: &str, id: &str) -> Result<Deploy> {
        let reply = self
            .call(Method::GET, &format!("/apps/{app}/deploys/{id}"), None)
            .await?;
        if reply.status != 200 {
            bail!(
                "GET deploy {id} of {app}: {} {}",
                reply.status,
                reply.text().trim()
            );
        }
        reply.json()
    }

    /// Polls a deploy every 25 ms until it is terminal, for up to `timeout`.
    pub async fn wait_deploy(&self, app: &str, id: &str, timeout: Duration) -> Result<Deploy> {
        let deadline = Instant::now() + timeout;
        loop {
            let d = self.get_deploy(app, id).await?;
            if d.is_terminal() {
                return Ok(d);
            }
            if Instant::now() >= deadline {
                bail!("deploy {id} of {app} still {} after {timeout:?}", d.status);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `GET /api/v1/apps/{name}` as JSON.
    pub async fn app_json(&self, app: &str) -> Result<serde_json::Value> {
        let reply = self
            .call(Method::GET, &format!("/apps/{app}"), None)
            .await?;
        if reply.status != 200 {
            bail!("GET App {app}: {} {}", reply.status, reply.text().trim());
        }
        reply.json()
    }

    /// Creates an App and waits for its first deploy to succeed.
    pub async fn create_app_ready(&self, body: serde_json::Value) -> Result<Deploy> {
        let name = body["name"].as_str().unwrap_or("?").to_string();
        let d = self.create_app(body).await?;
        let d = self
            .wait_deploy(&name, &d.id, Duration::from_secs(120))
            .await?;
        if d.status != "succeeded" {
            bail!(
                "the first deploy of {name} ended {}: {:?}",
                d.status,
                d.error
            );
        }
        Ok(d)
    }

    /// The id of the container a deploy started (labels `molt.instance`,
    /// `molt.deploy`).
    pub async fn container_of(&self, deploy_id: &str) -> Result<String> {
        let instance = self
            .instance_id()
            .context("the server wrote no instance-id")?;
        let out = docker(&[
            "ps",
            "--quiet",
            "--filter",
            &format!("label=molt.instance={instance}"),
            "--filter",
            &format!("label=molt.deploy={deploy_id}"),
        ])
        .await?;
        out.split_whitespace()
            .next()
            .map(String::from)
            .with_context(|| format!("no running container of deploy {deploy_id}"))
    }
}

impl Drop for MoltServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(child.id(), "molt", Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
        }
        // The proxy runs in its own process group on purpose (it outlives the
        // server); stop it by its pid file, checking it really is molt.
        if let Some(pid) = self.proxy_pid() {
            terminate(pid, "molt", Duration::from_secs(5));
        }
        if !crate::docker::wait_for_engine(Duration::from_secs(60)) {
            eprintln!(
                "warning: the Docker engine does not answer; containers labelled molt.instance={} and network {} may be left",
                self.instance_id().unwrap_or_default(),
                self.network
            );
            return;
        }
        if let Some(id) = self.instance_id() {
            let filter = format!("label=molt.instance={id}");
            if let Ok(out) = Command::new("docker")
                .args(["ps", "--all", "--quiet", "--filter", &filter])
                .output()
            {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "--force", "--volumes"];
                    args.extend(ids.iter().map(String::as_str));
                    run_sync_quiet("docker", &args, Duration::from_secs(60));
                }
            }
        }
        run_sync_quiet(
            "docker",
            &["network", "rm", &self.network],
            Duration::from_secs(30),
        );
    }
}
