//! `molt run` and `molt exec`: a command in a one-off container of an
//! App's version, or in one of its serving containers, attached to the
//! client. Neither is a deploy: no claim is taken (a migration must not
//! block the deploy that needs it), nothing is routed, and a run is
//! recorded in its own table (`store::runs`). A one-off container is
//! removed when its command ends, when the client goes, when `--timeout`
//! is reached, and, if the server died first, by the start-up reconciler
//! (`sweep_runs`), which finds it by its `molt.role=run` label.

use crate::deploy::{DeployError, Deployer};
use crate::runtime::{Attached, ContainerSpec, OneOff, Output};
use crate::store::now;
use futures_util::StreamExt;
use molt_core::attach::{self as wire, ExecRequest, Exit, RunRequest, RunView};
use molt_core::ImageRef;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The longest `--timeout` taken: a day.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// What an attached process is, for its end.
enum Process {
    /// A one-off container and its run record.
    Run {
        container: String,
        run: Box<RunView>,
        timeout: Option<Duration>,
    },
    /// An exec in a serving container.
    Exec { exec_id: String },
}

/// A started process, waiting for its client's stream.
pub struct Started {
    process: Process,
    attached: Attached,
    stdin: bool,
    started: Instant,
    deployer: Arc<Deployer>,
    /// Set once the process has been seen to its end.
    done: bool,
}

fn invalid(code: &'static str, message: impl Into<String>) -> DeployError {
    DeployError::Invalid {
        code,
        message: message.into(),
    }
}

fn check_command(command: &[String], what: &str) -> Result<(), DeployError> {
    if command.is_empty() || command[0].trim().is_empty() {
        return Err(invalid(
            "empty_command",
            format!("no command given: put it after `--`, e.g. `molt {what} NAME -- ./migrate`"),
        ));
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err(invalid(
            "invalid_command",
            "the command contains a NUL byte, which no process can take as an argument",
        ));
    }
    Ok(())
}

/// Starts `molt run`: the image and environment of the App's serving
/// deploy, of the deploy `release`, or `image` with the App's current
/// environment; the App's limits, confinement and network; no route.
pub async fn start_run(
    deployer: &Arc<Deployer>,
    app_name: &str,
    req: RunRequest,
    triggered_by: &str,
) -> Result<Started, DeployError> {
    check_command(&req.command, "run")?;
    let app = deployer.store.get_app(app_name)?.ok_or_else(|| {
        DeployError::NotFound(format!("no App named `{app_name}`: see `molt apps list`"))
    })?;
    if req.release.is_some() && req.image.is_some() {
        return Err(invalid(
            "invalid_request",
            "give --release or --image, not both",
        ));
    }
    let timeout = match req.timeout_secs {
        Some(0) => {
            return Err(invalid(
                "invalid_timeout",
                "--timeout must be at least 1 second",
            ))
        }
        Some(t) if t > MAX_TIMEOUT_SECS => {
            return Err(invalid(
                "invalid_timeout",
                format!("--timeout {t} is over a day ({MAX_TIMEOUT_SECS} s): give less"),
            ))
        }
        t => t.map(Duration::from_secs),
    };
    let mut extra = Vec::new();
    for raw in &req.env {
        let (k, v) = molt_core::env::parse_assignment(raw)
            .map_err(|e| invalid("invalid_env", format!("--env {raw:?}: {e}")))?;
        extra.push((k, v));
    }
    // What runs: a deploy's exact bytes and environment, or an image.
    let (image, release, env) = match &req.image {
        Some(raw) => {
            let image = ImageRef::parse(raw).map_err(|e| {
                invalid(
                    "invalid_image",
                    format!("--image {raw:?} is not an image reference: {e}"),
                )
            })?;
            (image, None, deployer.store.env(&app.name)?)
        }
        None => {
            let id = match &req.release {
                Some(id) => id.clone(),
                None => app.current_deploy.clone().ok_or_else(|| DeployError::Conflict {
                    message: format!(
                        "the App `{}` has no serving version yet: deploy an image first, or give --image REF",
                        app.name
                    ),
                    deploy_id: None,
                })?,
            };
            let deploy = deployer
                .store
                .get_deploy(&id)?
                .filter(|d| d.app == app.name)
                .ok_or_else(|| {
                    DeployError::NotFound(format!(
                        "no deploy `{id}` of the App `{}`: see `molt deploys {}` for the ids",
                        app.name, app.name
                    ))
                })?;
            let image = ImageRef::parse(&deploy.image)
                .map_err(|e| DeployError::Internal(anyhow::anyhow!("{e}")))?;
            let Some(digest) = &deploy.digest else {
                return Err(invalid(
                    "no_image",
                    format!(
                        "the deploy `{id}` never got an image (it ended `{}` before its pull finished), so there is nothing to run: pick another with `molt deploys {}`",
                        deploy.status, app.name
                    ),
                ));
            };
            (image.with_digest(digest), Some(id), deploy.env.clone())
        }
    };
    // An image no longer on the host is pulled again with its registry's
    // credential, as a deploy would.
    let reference = image.to_string();
    if !deployer.runtime.has_image(&reference).await {
        let cred = deployer
            .credential(&image.registry)?
            .map(|c| (c.username, c.password));
        deployer.runtime.pull(&image, cred).await.map_err(|e| {
            invalid(
                "pull_failed",
                format!("{reference} is not on this host and pulling it failed: {e:#}; check the registry and its credential (`molt registries list`)"),
            )
        })?;
    }
    let mut env = deployer.container_env(&app, &env)?;
    for (k, v) in extra {
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
        env.push(format!("{k}={v}"));
    }
    let run = RunView {
        id: crate::datadir::random_hex(5),
        app: app.name.clone(),
        command: req.command.clone(),
        release: release.clone(),
        image: reference.clone(),
        triggered_by: triggered_by.to_string(),
        exit_code: None,
        error: None,
        started_at: now(),
        finished_at: None,
        duration_ms: None,
    };
    deployer.store.start_run(&run)?;
    let started = Instant::now();
    let spec = ContainerSpec {
        name: format!("molt-{}-run-{}", app.name, run.id),
        image: reference,
        app: app.name.clone(),
        deploy: release.unwrap_or_default(),
        replica: 0,
        env,
        memory_bytes: app.memory_bytes,
        cpus: app.cpus,
        gpus: app.gpus,
        port: app.port,
        links: app.links.clone(),
        cap_add: app.cap_add.clone(),
        pids_limit: crate::confine::pids_limit(&app),
        read_only: app.read_only,
        // One-off commands run on the server's own engine.
        constraints: Vec::new(),
    };
    let one_off = OneOff {
        run_id: run.id.clone(),
        cmd: req.command,
        tty: req.tty,
        stdin: req.stdin,
    };
    let (container, attached) = match deployer
        .runtime
        .run_attached(&spec, &one_off, req.size)
        .await
    {
        Ok(x) => x,
        Err(e) => {
            let message = format!("{e:#}");
            let _ = deployer.store.finish_run(
                &run.id,
                None,
                Some(&message),
                started.elapsed().as_millis() as u64,
            );
            return Err(invalid(
                "run_failed",
                format!("the one-off container did not start: {message}"),
            ));
        }
    };
    tracing::info!(app = %app.name, run = %run.id, "one-off container {} started", crate::deploy::short(&container));
    Ok(Started {
        process: Process::Run {
            container,
            run: Box::new(run),
            timeout,
        },
        attached,
        stdin: req.stdin,
        started,
        deployer: Arc::clone(deployer),
        done: false,
    })
}

/// Starts `molt exec`: the command in serving replica `replica` (0 when
/// not given).
pub async fn start_exec(
    deployer: &Arc<Deployer>,
    app_name: &str,
    req: ExecRequest,
) -> Result<Started, DeployError> {
    check_command(&req.command, "exec")?;
    let app = deployer.store.get_app(app_name)?.ok_or_else(|| {
        DeployError::NotFound(format!("no App named `{app_name}`: see `molt apps list`"))
    })?;
    let rows = deployer.serving_rows(&app)?;
    if rows.is_empty() {
        return Err(DeployError::Conflict {
            message: format!(
                "the App `{}` has no serving container yet: deploy it first, or use `molt run`",
                app.name
            ),
            deploy_id: None,
        });
    }
    let replica = req.replica.unwrap_or(0);
    let row = rows.iter().find(|r| r.replica == replica).ok_or_else(|| {
        DeployError::NotFound(format!(
            "the App `{}` has no replica {replica}: it runs replicas 0 to {}",
            app.name,
            rows.len() - 1
        ))
    })?;
    let (exec_id, attached) = deployer
        .runtime
        .exec_attached(
            &row.container_id,
            &req.command,
            req.tty,
            req.stdin,
            req.size,
        )
        .await
        .map_err(|e| invalid("exec_failed", format!("{e:#}")))?;
    tracing::info!(app = %app.name, replica, "exec in container {}", crate::deploy::short(&row.container_id));
    Ok(Started {
        process: Process::Exec { exec_id },
        attached,
        stdin: req.stdin,
        started: Instant::now(),
        deployer: Arc::clone(deployer),
        done: false,
    })
}

/// How the attached stream ended.
enum End {
    /// The process ended on its own.
    Exited,
    /// The client went away.
    ClientGone,
    TimedOut(Duration),
    ServerStopping,
}

/// What the client sent, read apart from the select loop (reading a
/// frame is not cancel-safe).
enum FromClient {
    Stdin(Vec<u8>),
    StdinEof,
    Gone,
}

async fn read_client<R: AsyncRead + Unpin>(mut rd: R, tx: tokio::sync::mpsc::Sender<FromClient>) {
    loop {
        let mut head = [0u8; 5];
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let Ok((kind, len)) = wire::parse_head(head) else {
            break;
        };
        let mut payload = vec![0u8; len];
        if rd.read_exact(&mut payload).await.is_err() {
            break;
        }
        let msg = match kind {
            wire::STDIN => FromClient::Stdin(payload),
            wire::STDIN_EOF => FromClient::StdinEof,
            _ => continue,
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
    let _ = tx.send(FromClient::Gone).await;
}

impl Started {
    /// Pumps the process's output to the client and the client's stdin to
    /// it until it ends; then sends its exit, removes a one-off container
    /// and records the run. `io` is the upgraded connection (`None` when
    /// the client vanished before it was upgraded).
    pub async fn attach<IO>(mut self, io: Option<IO>, stopping: CancellationToken)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let Some(io) = io else {
            self.finish(End::ClientGone).await;
            return;
        };
        let (rd, mut wr) = tokio::io::split(io);
        let (tx, mut from_client) = tokio::sync::mpsc::channel(16);
        let reader = tokio::spawn(read_client(rd, tx));
        let deadline = match &self.process {
            Process::Run {
                timeout: Some(t), ..
            } => Some((tokio::time::Instant::now() + *t, *t)),
            _ => None,
        };
        let mut stdin_open = self.stdin;
        let end = loop {
            tokio::select! {
                item = self.attached.output.next() => match item {
                    Some(Ok(out)) => {
                        let f = match out {
                            Output::Stdout(b) => wire::frame(wire::STDOUT, &b),
                            Output::Stderr(b) => wire::frame(wire::STDERR, &b),
                        };
                        if wr.write_all(&f).await.is_err() || wr.flush().await.is_err() {
                            break End::ClientGone;
                        }
                    }
                    Some(Err(_)) | None => break End::Exited,
                },
                msg = from_client.recv() => match msg {
                    Some(FromClient::Stdin(data)) if stdin_open => {
                        let input = &mut self.attached.input;
                        if input.write_all(&data).await.is_err() || input.flush().await.is_err() {
                            stdin_open = false;
                        }
                    }
                    Some(FromClient::StdinEof) if stdin_open => {
                        stdin_open = false;
                        let _ = self.attached.input.shutdown().await;
                    }
                    Some(FromClient::Stdin(_) | FromClient::StdinEof) => {}
                    Some(FromClient::Gone) | None => break End::ClientGone,
                },
                _ = sleep_until(deadline.map(|d| d.0)) => {
                    break End::TimedOut(deadline.map(|d| d.1).unwrap_or_default());
                }
                _ = stopping.cancelled() => break End::ServerStopping,
            }
        };
        reader.abort();
        let exit = self.finish(end).await;
        if let Some(exit) = exit {
            let payload = serde_json::to_vec(&exit).unwrap_or_default();
            let _ = wr.write_all(&wire::frame(wire::EXIT, &payload)).await;
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
        }
    }

    /// Ends the process as `end` says; its exit for the client (none when
    /// the client is gone).
    async fn finish(&mut self, end: End) -> Option<Exit> {
        self.done = true;
        let runtime = Arc::clone(&self.deployer.runtime);
        let (exit_code, message): (Option<i64>, Option<String>) = match (&self.process, &end) {
            (Process::Run { container, .. }, End::Exited) => {
                match runtime.wait_exit(container).await {
                    Ok(code) => (Some(code), None),
                    Err(e) => (None, Some(format!("{e:#}"))),
                }
            }
            (Process::Exec { exec_id }, End::Exited) => {
                (exec_exit(runtime.as_ref(), exec_id).await, None)
            }
            (_, End::ClientGone) => (
                None,
                Some("the client disconnected; the command was killed".into()),
            ),
            (_, End::TimedOut(t)) => (
                Some(wire::TIMEOUT_EXIT),
                Some(format!(
                    "the command ran past --timeout {} s and was killed (exit {})",
                    t.as_secs(),
                    wire::TIMEOUT_EXIT
                )),
            ),
            (_, End::ServerStopping) => (
                None,
                Some("the Molt server is stopping; the command was killed".into()),
            ),
        };
        if let Process::Run { container, run, .. } = &self.process {
            if let Err(e) = runtime.remove_run(container).await {
                tracing::warn!(app = %run.app, run = %run.id, "cannot remove the one-off container: {e:#}");
            }
            let duration = self.started.elapsed().as_millis() as u64;
            if let Err(e) =
                self.deployer
                    .store
                    .finish_run(&run.id, exit_code, message.as_deref(), duration)
            {
                tracing::warn!(app = %run.app, run = %run.id, "cannot record the end of the run: {e:#}");
            }
            tracing::info!(app = %run.app, run = %run.id, ?exit_code, "one-off command ended");
        }
        match end {
            End::ClientGone => None,
            _ => Some(Exit {
                exit_code: exit_code.unwrap_or(1),
                message,
            }),
        }
    }
}

impl Drop for Started {
    /// A stream dropped before its end (a panic, a runtime shutting down)
    /// still removes its one-off container.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Process::Run { container, run, .. } = &self.process {
            let (runtime, store) = (
                Arc::clone(&self.deployer.runtime),
                Arc::clone(&self.deployer.store),
            );
            let (container, id) = (container.clone(), run.id.clone());
            let duration = self.started.elapsed().as_millis() as u64;
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = runtime.remove_run(&container).await;
                    let _ = store.finish_run(
                        &id,
                        None,
                        Some("the stream ended early; the command was killed"),
                        duration,
                    );
                });
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// An exec's exit code: the engine may report it a moment after its
/// output ended.
async fn exec_exit(runtime: &dyn crate::ports::Containers, exec_id: &str) -> Option<i64> {
    for _ in 0..100 {
        match runtime.exec_exit(exec_id).await {
            Ok(Some(code)) => return Some(code),
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => return None,
        }
    }
    None
}

/// At start-up: removes the one-off containers a stopped server left (no
/// client is attached to them any more) and ends their run records.
pub async fn sweep_runs(deployer: &Deployer) -> anyhow::Result<usize> {
    let left = deployer.runtime.list_runs().await?;
    for id in &left {
        if let Err(e) = deployer.runtime.remove_run(id).await {
            tracing::warn!(
                "cannot remove the one-off container {}: {e:#}",
                crate::deploy::short(id)
            );
        }
    }
    deployer
        .store
        .end_open_runs("the Molt server stopped during the run; its container was removed")?;
    Ok(left.len())
}
