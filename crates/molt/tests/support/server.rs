//! The `molt` binary under test: a server process per test, and the CLI.

use super::{docker, free_ports, http_get, run_bounded, try_docker, wait_until_sync, Registry};
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tempfile::TempDir;

const MOLT: &str = env!("CARGO_BIN_EXE_molt");
/// Name of the server's combined stdout/stderr log in the data dir.
const LOG_FILE: &str = "test-server.log";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound for one CLI command (a deploy waits for health checks).
const CLI_TIMEOUT: Duration = Duration::from_secs(180);

/// `molt server` running on two free ports of 127.0.0.1. On drop it kills the
/// server and its proxy and removes every service, container (and network)
/// labelled with this instance's id, so a test leaves nothing behind.
pub struct MoltServer {
    data_dir: PathBuf,
    /// Holds the data dir when the harness created it.
    _temp: Option<TempDir>,
    api: SocketAddr,
    proxy: SocketAddr,
    child: Option<Child>,
    token: String,
    /// Extra `molt server` arguments and environment, kept for restarts.
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
}

impl MoltServer {
    /// Starts `molt server --data-dir DIR --api 127.0.0.1:P1 --proxy
    /// 127.0.0.1:P2` (DIR a new temp dir unless given) and waits until
    /// `GET /healthz` on the API answers 200 and `DIR/admin-token` exists.
    pub fn start(data_dir: Option<PathBuf>) -> MoltServer {
        Self::start_with(data_dir, &[], &[])
    }

    /// [`start`](Self::start) with extra `molt server` arguments and
    /// environment variables (kept for [`restart`](Self::restart)).
    pub fn start_with(
        data_dir: Option<PathBuf>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> MoltServer {
        let (temp, data_dir) = match data_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("molt-test-data-")
                    .tempdir()
                    .expect("creating a temp data dir for molt failed");
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        let [api, proxy] = free_ports::<2>();
        let mut server = MoltServer {
            data_dir,
            _temp: temp,
            api: SocketAddr::from(([127, 0, 0, 1], api)),
            proxy: SocketAddr::from(([127, 0, 0, 1], proxy)),
            child: None,
            token: String::new(),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the molt server is already running");
        std::fs::create_dir_all(&self.data_dir).unwrap_or_else(|e| {
            panic!(
                "cannot create the data dir {}: {e}",
                self.data_dir.display()
            )
        });
        // Appending keeps the log of earlier runs across restarts.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join(LOG_FILE))
            .expect("opening the molt server log file failed");
        let mut cmd = Command::new(MOLT);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--api")
            .arg(self.api.to_string())
            .arg("--proxy")
            .arg(self.proxy.to_string())
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            // Settings of the person running the tests must not leak in.
            .env_remove("MOLT_SERVER")
            .env_remove("MOLT_TOKEN")
            .env_remove("MOLT_DATA_DIR")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log file handle failed"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {MOLT} server failed: {e}"));
        self.child = Some(child);

        let token_file = self.data_dir.join("admin-token");
        let mut exited = None;
        let ready = wait_until_sync(START_TIMEOUT, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                exited = Some(status);
                return true;
            }
            http_get(self.api, "/healthz").is_ok_and(|r| r.status == 200)
                && std::fs::read_to_string(&token_file).is_ok_and(|t| !t.trim().is_empty())
        });
        if let Some(status) = exited {
            self.child = None;
            panic!(
                "molt server exited during start-up ({status}); its log:\n{}",
                self.log()
            );
        }
        assert!(
            ready,
            "molt server did not answer 200 on http://{}/healthz (with {} written) within {START_TIMEOUT:?}; its log:\n{}",
            self.api,
            token_file.display(),
            self.log()
        );
        self.token = std::fs::read_to_string(&token_file)
            .expect("the admin token file vanished after start-up")
            .trim()
            .to_string();
    }

    /// `http://127.0.0.1:P1`, the API's base URL (what `MOLT_SERVER` holds).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    /// Where the proxy listens; send app traffic here with [`super::get`].
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }

    /// The admin token read from `DIR/admin-token`.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's stdout and stderr so far (all runs of this data dir).
    pub fn log(&self) -> String {
        std::fs::read(self.data_dir.join(LOG_FILE))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The server process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The proxy's pid from `DIR/proxy.pid`, if the file exists.
    pub fn proxy_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir.join("proxy.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// This instance's id from `DIR/instance-id` (the `molt.instance` label).
    pub fn instance_id(&self) -> Option<String> {
        let id = std::fs::read_to_string(self.data_dir.join("instance-id")).ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| id.to_string())
    }

    /// `docker ps --all --no-trunc` over this instance's containers (only
    /// `app`'s if given), with `extra` arguments (`--quiet`, `--format …`);
    /// its stdout.
    pub fn docker_ps(&self, app: Option<&str>, extra: &[&str]) -> String {
        let instance = self
            .instance_id()
            .expect("the server wrote its instance id");
        let mut filters = vec![format!("label=molt.instance={instance}")];
        filters.extend(app.map(|app| format!("label=molt.app={app}")));
        let mut args = vec!["ps", "--all", "--no-trunc"];
        for filter in &filters {
            args.extend(["--filter", filter.as_str()]);
        }
        args.extend(extra);
        docker(&args)
    }

    /// The full ids of this instance's containers, running or not (only
    /// `app`'s if given).
    pub fn containers(&self, app: Option<&str>) -> Vec<String> {
        self.docker_ps(app, &["--quiet"])
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Graceful stop: SIGTERM, then wait up to 30 s. Panics (after a SIGKILL)
    /// if the server does not exit in time. Returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("stop(): the molt server is not running");
        signal(child.id(), "TERM");
        let mut status = None;
        wait_until_sync(STOP_TIMEOUT, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        match status {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "molt server did not exit within {STOP_TIMEOUT:?} of SIGTERM; its log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Abrupt stop: SIGKILL, as in a crash or power loss of the server
    /// process. The proxy (a separate process) is left running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again with the same data dir and ports (stopping it
    /// gracefully first if it still runs), and waits until it is healthy.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// [`restart`](Self::restart) with other extra `molt server` arguments
    /// (kept for later restarts).
    pub fn restart_with(&mut self, args: &[&str]) {
        if self.child.is_some() {
            self.stop();
        }
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
        self.spawn();
    }
}

/// Sends `SIGsig` to `pid` with kill(1) (the harness has no libc binding).
fn signal(pid: u32, sig: &str) {
    let _ = run_bounded(
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string()),
        None,
        Duration::from_secs(10),
    );
}

/// Whether `pid` is alive and is a molt process: the pid file could be stale
/// and the number reused by an unrelated process.
fn is_molt_process(pid: u32) -> bool {
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    });
    alive
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("molt"))
}

impl Drop for MoltServer {
    fn drop(&mut self) {
        self.kill();
        // A killed server cannot stop the registry it ran (`--registry`);
        // the next server on the data dir would, but a test's goes away.
        let registry = std::fs::read_to_string(self.data_dir().join("registry/registry.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(pid) = registry.filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("docker-registry"))
        }) {
            signal(pid, "KILL");
        }
        if let Some(pid) = self.proxy_pid().filter(|p| is_molt_process(*p)) {
            signal(pid, "KILL");
            wait_until_sync(Duration::from_secs(5), || !is_molt_process(pid));
        }
        if let Some(id) = self.instance_id() {
            let filter = format!("label=molt.instance={id}");
            // Replicas on a swarm (`--orchestrator swarm`) are services;
            // removing one stops its task. Without a swarm this lists none.
            let services = try_docker(
                None,
                &["service", "ls", "--quiet", "--filter", &filter],
                None,
            );
            let services: Vec<String> = String::from_utf8_lossy(&services.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !services.is_empty() {
                let mut args = vec!["service", "rm"];
                args.extend(services.iter().map(String::as_str));
                let _ = try_docker(None, &args, None);
            }
            let ids = try_docker(None, &["ps", "--all", "--quiet", "--filter", &filter], None);
            let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "--force", "--volumes"];
                args.extend(ids.iter().map(String::as_str));
                let _ = try_docker(None, &args, None);
            }
            let nets = try_docker(
                None,
                &["network", "ls", "--quiet", "--filter", &filter],
                None,
            );
            for net in String::from_utf8_lossy(&nets.stdout).split_whitespace() {
                let _ = try_docker(None, &["network", "rm", net], None);
            }
            // Images this instance built (`molt build`).
            let images = try_docker(None, &["image", "ls", "--quiet", "--filter", &filter], None);
            let images: Vec<String> = String::from_utf8_lossy(&images.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !images.is_empty() {
                let mut args = vec!["rmi", "--force"];
                args.extend(images.iter().map(String::as_str));
                let _ = try_docker(None, &args, None);
            }
        }
    }
}

/// What a `molt` CLI command did.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The exit code; 128 + signal number if it was killed by a signal.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Stdout parsed as JSON (for `--json` commands); panics with the whole
    /// output if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{self}"))
    }
}

/// Asserts that a command exited 0; returns its output.
pub fn ok(out: CliOutput) -> CliOutput {
    assert_eq!(out.status, 0, "{out}");
    out
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `molt ARGS` against `server` (`MOLT_SERVER`, `MOLT_TOKEN` set, stdin
/// closed), bounded to 180 s; panics if it takes longer.
pub fn molt(server: &MoltServer, args: &[&str]) -> CliOutput {
    run_molt(server, args, &[], None, CLI_TIMEOUT)
}

/// [`molt`] with `input` fed to its stdin (then closed), e.g. for
/// `--password-stdin`.
pub fn molt_input(server: &MoltServer, args: &[&str], input: &[u8]) -> CliOutput {
    run_molt(server, args, &[], Some(input), CLI_TIMEOUT)
}

/// [`molt`] with extra environment variables and a chosen bound.
pub fn molt_with(
    server: &MoltServer,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> CliOutput {
    run_molt(server, args, env, None, timeout)
}

/// `molt apps create NAME --image IMAGE --port 8080 EXTRA…` (the test app
/// listens on 8080), which must succeed.
pub fn create_app(server: &MoltServer, name: &str, image: &str, extra: &[&str]) -> CliOutput {
    let mut args = vec!["apps", "create", name, "--image", image, "--port", "8080"];
    args.extend(extra);
    ok(molt(server, &args))
}

/// `molt registries add HOST --username USER --password-stdin` for
/// `registry`, with `password` on stdin.
pub fn add_registry(server: &MoltServer, registry: &Registry, password: &[u8]) -> CliOutput {
    molt_input(
        server,
        &[
            "registries",
            "add",
            &registry.host(),
            "--username",
            registry.username(),
            "--password-stdin",
        ],
        password,
    )
}

/// The newest deploy of `app` (`deploys APP --json`, first entry; null if
/// there is none).
pub fn newest_deploy(server: &MoltServer, app: &str) -> serde_json::Value {
    molt(server, &["deploys", app, "--json"]).json()[0].clone()
}

fn run_molt(
    server: &MoltServer,
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&[u8]>,
    timeout: Duration,
) -> CliOutput {
    let mut cmd = Command::new(MOLT);
    cmd.args(args)
        .env_remove("MOLT_DATA_DIR")
        .env("MOLT_SERVER", server.api_url())
        .env("MOLT_TOKEN", server.token())
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_bounded(&mut cmd, input, timeout)
        .unwrap_or_else(|e| panic!("molt {}: {e}", args.join(" ")));
    CliOutput {
        status: out
            .status
            .code()
            .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0)),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
