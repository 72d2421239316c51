//! The registry process: its configuration (written anew at each start)
//! and its supervision (started again with a backoff when it exits, killed
//! when the server stops).

use anyhow::{anyhow, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::Command;

/// The program: Distribution's registry as Debian packages it.
const PROGRAM: &str = "docker-registry";

pub struct Settings {
    /// Its directory: configuration, the signing certificate, log, storage.
    pub dir: PathBuf,
    pub addr: SocketAddr,
    /// The server's token endpoint.
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub cert_pem: String,
}

/// The registry's configuration (YAML; every value Molt's own, quoted).
pub fn config(s: &Settings) -> String {
    let q = |v: &str| serde_json::to_string(v).unwrap_or_default();
    format!(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\nauth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {bundle}\n",
        storage = q(&s.dir.join("storage").to_string_lossy()),
        addr = q(&s.addr.to_string()),
        realm = q(&s.realm),
        service = q(&s.service),
        issuer = q(&s.issuer),
        bundle = q(&s.dir.join("token-signer.pem").to_string_lossy()),
    )
}

/// The running registry; the supervisor (and with it the process) stops
/// when this is dropped.
pub struct Supervised {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Supervised {
    /// Writes the configuration, starts the registry and waits until it
    /// answers (20 s at most).
    pub async fn start(s: Settings) -> Result<Self> {
        std::fs::create_dir_all(s.dir.join("storage"))
            .with_context(|| format!("cannot create {}", s.dir.display()))?;
        std::fs::write(s.dir.join("token-signer.pem"), &s.cert_pem)?;
        let config_path = s.dir.join("config.yml");
        std::fs::write(&config_path, config(&s))?;
        let log_path = s.dir.join("registry.log");
        let pid_path = s.dir.join("registry.pid");
        stop_leftover(&pid_path).await;
        if holds_images(&s.dir.join("storage")) {
            collect_garbage(&config_path, &log_path).await;
        }
        let mut child = spawn(&config_path, &log_path)?;
        record_pid(&pid_path, &child);
        let ready = wait_ready(s.addr, &mut child).await;
        if let Err(e) = ready {
            let _ = child.kill().await;
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            return Err(anyhow!(
                "Molt's registry did not start on {}: {e}; its last log lines:\n{}",
                s.addr,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        tracing::info!(
            "Molt's registry serves on {} (log: {})",
            s.addr,
            log_path.display()
        );
        let task = tokio::spawn(supervise(child, config_path, log_path, pid_path));
        Ok(Self { task })
    }
}

/// Whether the registry's storage holds any repository yet. Before the
/// first push there is nothing to collect, and the collector fails on the
/// missing directory.
fn holds_images(storage: &std::path::Path) -> bool {
    storage.join("docker/registry/v2/repositories").is_dir()
}

/// Frees the layers that no manifest uses any more (retention deletes
/// manifests while the registry runs; layers can only go while it does
/// not). Bounded; a failure is logged and changes nothing.
async fn collect_garbage(config: &std::path::Path, log: &std::path::Path) {
    let Ok(out) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    else {
        return;
    };
    let Ok(err) = out.try_clone() else {
        return;
    };
    let run = Command::new(PROGRAM)
        .arg("garbage-collect")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(120), run).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => tracing::warn!(
            "the registry's garbage collection failed ({status}); see {}",
            log.display()
        ),
        Ok(Err(e)) => tracing::warn!("cannot run the registry's garbage collection: {e}"),
        Err(_) => {
            tracing::warn!("the registry's garbage collection took over 120 s and was stopped")
        }
    }
}

/// Notes the registry's pid, so that a server that was killed (and could
/// not stop its registry) has it stopped by the next one.
fn record_pid(path: &std::path::Path, child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::fs::write(path, pid.to_string());
    }
}

/// Stops a registry that an earlier server of this data dir left running
/// (it holds the port): only a process that is that registry.
async fn stop_leftover(pid_path: &std::path::Path) {
    let Some(pid) = std::fs::read_to_string(pid_path)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return;
    };
    let config = pid_path.with_file_name("config.yml");
    let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let cmdline = String::from_utf8_lossy(&cmdline);
        cmdline.contains(PROGRAM) && cmdline.contains(&*config.to_string_lossy())
    });
    let Some(pid) = rustix::process::Pid::from_raw(pid).filter(|_| ours) else {
        return;
    };
    tracing::warn!(
        pid = pid.as_raw_nonzero().get(),
        "stopping the registry an earlier server left running"
    );
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    for _ in 0..50 {
        if rustix::process::test_kill_process(pid).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

fn spawn(config: &std::path::Path, log: &std::path::Path) -> Result<tokio::process::Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    Command::new(PROGRAM)
        .arg("serve")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            anyhow!("cannot run `{PROGRAM}` ({e}): install Debian's docker-registry package (`apt-get install docker-registry`), or start the server without --registry")
        })
}

/// Waits until `/v2/` answers (401 without a token is the sign of life).
async fn wait_ready(addr: SocketAddr, child: &mut tokio::process::Child) -> Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://{addr}/v2/");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(anyhow!("it exited ({status})"));
        }
        if let Ok(resp) = client.get(&url).send().await {
            if resp.status().as_u16() == 401 {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!("it did not answer within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the registry again whenever it exits, waiting longer after each
/// exit in a row (1 s doubling to 30 s).
async fn supervise(mut child: tokio::process::Child, config: PathBuf, log: PathBuf, pid: PathBuf) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        let status = child.wait().await;
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tracing::warn!(
            "Molt's registry exited ({}); starting it again in {} s (log: {})",
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string()),
            backoff.as_secs(),
            log.display()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
        match spawn(&config, &log) {
            Ok(c) => {
                record_pid(&pid, &c);
                child = c;
            }
            Err(e) => {
                tracing::error!("{e:#}");
                continue;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_trusts_the_servers_tokens() {
        let c = config(&Settings {
            dir: "/data/registry".into(),
            addr: "127.0.0.1:5500".parse().unwrap(),
            realm: "http://127.0.0.1:8000/api/v1/registry/token".into(),
            service: "molt-registry".into(),
            issuer: "molt".into(),
            cert_pem: String::new(),
        });
        assert!(c.contains("  addr: \"127.0.0.1:5500\"\n"), "{c}");
        assert!(
            c.contains("    realm: \"http://127.0.0.1:8000/api/v1/registry/token\"\n"),
            "{c}"
        );
        assert!(
            c.contains("    rootcertbundle: \"/data/registry/token-signer.pem\"\n"),
            "{c}"
        );
        assert!(
            c.contains("    rootdirectory: \"/data/registry/storage\"\n"),
            "{c}"
        );
    }

    #[test]
    fn garbage_is_collected_only_once_something_was_pushed() {
        let storage = tempfile::tempdir().unwrap();
        assert!(!holds_images(storage.path()));
        std::fs::create_dir_all(storage.path().join("docker/registry/v2/repositories/web"))
            .unwrap();
        assert!(holds_images(storage.path()));
    }
}
