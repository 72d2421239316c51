//! nginx as the comparison proxy: its own prefix dir, config and pid file,
//! `daemon off` so it is our child and dies with the benchmark. Tuned to be a
//! fair opponent: access log off, keep-alive to the upstream, no per-
//! connection request limit on either side.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::util::{free_port, localhost, poll, run, terminate, which};

pub struct Nginx {
    binary: PathBuf,
    dir: TempDir,
    child: Child,
    port: u16,
    workers: u32,
}

impl Nginx {
    /// The nginx binary, when installed.
    pub fn find() -> Option<PathBuf> {
        which("nginx")
    }

    /// Starts nginx with `workers` worker processes on a free port of
    /// 127.0.0.1, proxying everything to `upstream`.
    pub async fn start(binary: &Path, upstream: SocketAddr, workers: u32) -> Result<Nginx> {
        let dir = tempfile::Builder::new()
            .prefix("molt-bench-nginx-")
            .tempdir()
            .context("cannot create a temp dir for nginx")?;
        let port = free_port()?;
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        // Workers run as `nobody` when nginx starts as root: let them in.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        write_config(dir.path(), workers, port, upstream)?;
        let log = std::fs::File::create(dir.path().join("stderr.log"))?;
        let child = Command::new(binary)
            .args(base_args(dir.path()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let nginx = Nginx {
            binary: binary.to_path_buf(),
            dir,
            child,
            port,
            workers,
        };
        let addr = nginx.addr();
        let up = poll(
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async { tokio::net::TcpStream::connect(addr).await.ok() },
        )
        .await;
        if up.is_none() {
            bail!(
                "nginx did not listen on {addr} within 10 s; its log:\n{}",
                nginx.log()
            );
        }
        Ok(nginx)
    }

    /// The master process (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        localhost(self.port)
    }

    /// Points the upstream at `upstream` and runs `nginx -s reload`. Returns
    /// once the old worker processes have exited (bounded to 30 s), i.e. the
    /// new configuration serves every connection: a careful deploy script
    /// waits for that before stopping the old container.
    pub async fn switch_upstream(&mut self, upstream: SocketAddr) -> Result<()> {
        let old_workers = self.worker_pids();
        write_config(self.dir.path(), self.workers, self.port, upstream)?;
        let mut args = base_args(self.dir.path());
        args.extend(["-s".into(), "reload".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(
            &self.binary.to_string_lossy(),
            &args,
            Duration::from_secs(30),
        )
        .await
        .context("nginx -s reload")?;
        let gone = poll(
            Duration::from_secs(30),
            Duration::from_millis(5),
            || async {
                let now = self.worker_pids();
                let fresh = now.iter().any(|p| !old_workers.contains(p));
                (fresh && !now.iter().any(|p| old_workers.contains(p))).then_some(())
            },
        )
        .await;
        if gone.is_none() {
            bail!("nginx's old workers did not exit within 30 s of the reload");
        }
        Ok(())
    }

    /// Pids of the master's children (its workers), from /proc.
    fn worker_pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    // "pid (comm) state ppid ..."
                    stat.rsplit_once(") ")
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                        == Some(master)
                })
            })
            .collect()
    }

    pub fn log(&self) -> String {
        let d = self.dir.path();
        format!(
            "{}{}",
            std::fs::read_to_string(d.join("error.log")).unwrap_or_default(),
            std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown; its workers follow the master.
        terminate(self.child.id(), "nginx", Duration::from_secs(5));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base_args(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        "-p".into(),
        format!("{d}/"),
        "-e".into(),
        format!("{d}/error.log"),
        "-c".into(),
        format!("{d}/nginx.conf"),
    ]
}

/// nginx.conf: one upstream, keep-alive on both sides, no access log.
fn write_config(dir: &Path, workers: u32, port: u16, upstream: SocketAddr) -> Result<()> {
    let d = dir.display();
    let conf = format!(
        r#"worker_processes {workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    upstream app {{
        server {upstream};
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering on;
        }}
    }}
}}
"#,
    );
    std::fs::write(dir.join("nginx.conf"), conf)?;
    Ok(())
}
