//! A private registry of the benchmark's own: Debian's `docker-registry` on a
//! free port of 127.0.0.1, storage in a temp dir, no auth (the engine treats
//! 127.0.0.0/8 registries as insecure, so plain HTTP works). Killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::util::{free_port, localhost, poll};

pub struct Registry {
    port: u16,
    child: Child,
    /// Config, data and log; removed on drop.
    dir: TempDir,
}

impl Registry {
    pub async fn start() -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("molt-bench-registry-")
            .tempdir()
            .context("cannot create a temp dir for the registry")?;
        let port = free_port()?;
        let root = dir.path();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            root.join("data").display()
        );
        let config_path = root.join("registry.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(root.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start `docker-registry`: install the Debian package docker-registry (scripts/bench does)")?;
        let mut registry = Registry { port, child, dir };
        let addr = localhost(port);
        let up = poll(
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async {
                crate::http::get(addr, &addr.to_string(), "/v2/", Duration::from_secs(2))
                    .await
                    .ok()
                    .filter(|r| r.status == 200)
            },
        )
        .await;
        if up.is_none() {
            let exited = registry.child.try_wait().ok().flatten();
            bail!(
                "docker-registry did not answer /v2/ on {addr} within 20 s (exit status: {exited:?}); its log:\n{}",
                registry.log()
            );
        }
        Ok(registry)
    }

    /// `127.0.0.1:PORT/molt-bench/testapp:TAG`.
    pub fn reference(&self, tag: &str) -> String {
        format!("127.0.0.1:{}/molt-bench/testapp:{tag}", self.port)
    }

    /// The repository part of references, for cleaning local tags up.
    pub fn repository(&self) -> String {
        format!("127.0.0.1:{}/molt-bench/testapp", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
